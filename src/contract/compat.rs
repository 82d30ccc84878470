//! What berth does with the parts of a configuration that come from Keboola and have no
//! counterpart here (issue 7): it accepts every key the original runner accepts, names once
//! those without effect, and applies `runtime.image_tag`.

use std::collections::BTreeSet;

use super::job::{Configuration, JobFile};

impl JobFile {
    /// The image to run: the component's, with the tag the configuration's
    /// `runtime.image_tag` (or the older `runtime.tag`) names instead of its own; a
    /// `sha256:…` value pins a digest.
    pub fn image_reference(&self) -> String {
        let image = &self.component.image;
        let runtime = self.configuration.runtime.as_ref();
        let Some(tag) = runtime.and_then(|r| r.image_tag.as_ref().or(r.tag.as_ref())) else {
            return image.clone();
        };
        let name = image.split_once('@').map_or(image.as_str(), |(n, _)| n);
        let after_slash = name.rfind('/').map_or(0, |i| i + 1);
        let repo = match name[after_slash..].find(':') {
            Some(i) => &name[..after_slash + i],
            None => name,
        };
        if tag.starts_with("sha256:") {
            format!("{repo}@{tag}")
        } else {
            format!("{repo}:{tag}")
        }
    }

    /// Keys of the configuration (and its rows) that the original runner accepts but that
    /// have no effect here, each named once, as `storage.input.tables[].column_types`.
    pub fn inert_keys(&self) -> Vec<String> {
        let mut keys = BTreeSet::new();
        self.configuration.inert_keys(&mut keys);
        for (_, config) in self.row_configurations().unwrap_or_default() {
            config.inert_keys(&mut keys);
        }
        keys.into_iter().collect()
    }
}

impl Configuration {
    /// Adds the keys that are set but have no effect here to `keys` (see
    /// [`JobFile::inert_keys`]).
    pub(super) fn inert_keys(&self, keys: &mut BTreeSet<String>) {
        let mut note = |set: bool, key: &str| {
            if set {
                keys.insert(key.to_owned());
            }
        };
        note(self.variables_id.is_some(), "variables_id");
        note(self.variables_values_id.is_some(), "variables_values_id");
        note(self.shared_code_id.is_some(), "shared_code_id");
        note(self.shared_code_row_ids.is_some(), "shared_code_row_ids");
        note(self.artifacts.is_some(), "artifacts");
        if let Some(r) = &self.runtime {
            note(r.backend.is_some(), "runtime.backend");
            note(r.parallelism.is_some(), "runtime.parallelism");
            note(
                r.use_file_storage_only.is_some(),
                "runtime.use_file_storage_only",
            );
            note(r.safe.is_some(), "runtime.safe");
        }
        if let Some(storage) = &self.storage {
            storage.inert_keys(&mut note);
        }
    }
}

#[cfg(test)]
mod tests {
    fn job(text: &str) -> Result<super::JobFile, String> {
        super::JobFile::parse(text.as_bytes())
    }

    #[test]
    fn keys_of_real_exported_configurations_are_accepted_and_named_when_inert() {
        let j = job(r#"{"component": {"id": "a", "image": "x/y"},
            "branch_id": "123", "project_features": ["new-native-types"],
            "configuration": {
              "parameters": {}, "variables_id": "1", "variables_values_id": "2",
              "shared_code_id": "3", "shared_code_row_ids": ["4"],
              "artifacts": {"options": {"zip": true}},
              "runtime": {"backend": {"type": "small"}, "image_tag": "2.0", "safe": true,
                          "parallelism": 2, "use_file_storage_only": false},
              "storage": {
                "input": {"read_only_storage_access": true,
                  "tables": [{"source": "in.c-a.t", "column_types": [{"source": "a"}],
                              "overwrite": false, "load_type": "COPY", "use_view": false,
                              "keep_internal_timestamp_column": true, "file_type": "csv",
                              "source_branch_id": 1}],
                  "files": [{"tags": ["x"], "query": "name:x", "processed_tags": ["done"],
                             "overwrite": true}]},
                "output": {"data_type_support": "hints", "table_modifications": "none",
                  "treat_values_as_null": ["NA"], "table_files": {"tags": ["t"]},
                  "tables": [{"source": "t.csv", "destination": "out.c-a.t",
                              "schema": [{"name": "id", "data_type": {"base": {"type": "INTEGER"}}}],
                              "table_metadata": {"k": true}, "tags": ["s"],
                              "distribution_key": ["id"]}]}}}}"#)
        .unwrap();
        assert_eq!(j.branch_id.as_deref(), Some("123"));
        assert_eq!(
            j.inert_keys(),
            vec![
                "artifacts",
                "runtime.backend",
                "runtime.parallelism",
                "runtime.safe",
                "runtime.use_file_storage_only",
                "shared_code_id",
                "shared_code_row_ids",
                "storage.input.files[].overwrite",
                "storage.input.files[].query",
                "storage.input.read_only_storage_access",
                "storage.input.tables[].column_types",
                "storage.input.tables[].file_type",
                "storage.input.tables[].keep_internal_timestamp_column",
                "storage.input.tables[].load_type",
                "storage.input.tables[].overwrite",
                "storage.input.tables[].source_branch_id",
                "storage.input.tables[].use_view",
                "storage.output.table_files",
                "storage.output.table_modifications",
                "storage.output.tables[].distribution_key",
                "storage.output.tables[].tags",
                "storage.output.treat_values_as_null",
                "variables_id",
                "variables_values_id",
            ]
        );
        // berth's own job file stays strict, and so do misspelt mapping keys.
        let e = job(r#"{"component": {"id": "a", "image": "x/y"}, "branch": "1"}"#).unwrap_err();
        assert!(e.starts_with("branch: unknown field"), "{e}");
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
            "configuration": {"storage": {"output": {"data_type_suport": "hints"}}}}"#)
        .unwrap_err();
        assert!(
            e.starts_with("configuration.storage.output.data_type_suport"),
            "{e}"
        );
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
            "configuration": {"storage": {"output": {"data_type_support": "all"}}}}"#)
        .unwrap_err();
        assert!(
            e.starts_with("configuration.storage.output.data_type_support"),
            "{e}"
        );
    }

    #[test]
    fn runtime_image_tag_overrides_the_components_tag() {
        let with = |image: &str, runtime: &str| {
            job(&format!(
                r#"{{"component": {{"id": "a", "image": "{image}"}},
                    "configuration": {{"runtime": {runtime}}}}}"#
            ))
            .unwrap()
            .image_reference()
        };
        assert_eq!(
            with("127.0.0.1:5000/a/b:1.0", "{}"),
            "127.0.0.1:5000/a/b:1.0"
        );
        assert_eq!(
            with("127.0.0.1:5000/a/b:1.0", r#"{"image_tag": "2.0"}"#),
            "127.0.0.1:5000/a/b:2.0"
        );
        assert_eq!(
            with("127.0.0.1:5000/a/b", r#"{"tag": "2.0"}"#),
            "127.0.0.1:5000/a/b:2.0"
        );
        assert_eq!(
            with("h/a/b:1.0@sha256:00", r#"{"image_tag": "3"}"#),
            "h/a/b:3"
        );
        assert_eq!(
            with("h:5000/a/b:1.0", r#"{"image_tag": "sha256:ab"}"#),
            "h:5000/a/b@sha256:ab"
        );
    }
}
