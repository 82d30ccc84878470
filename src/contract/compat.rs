//! What berth does with the parts of a configuration that come from Keboola and have no
//! counterpart here (issue 7): it accepts every key the original runner accepts, names once
//! those without effect, and applies `runtime.image_tag`.
//!
//! `configuration.runtime` lives here, where most of its keys are the original runner's.
//! The file reads nothing of `job.rs`: the job file calls down to these rules, so that its
//! types keep their methods in one place.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `configuration.runtime`: settings for the runner, never shown to the component.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Overrides the component's timeout for the main image; at most a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    // Extras the original runner accepts (it takes any key here); named, so a typo such as
    // `timeout` is still an error.
    /// The older spelling of `image_tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_file_storage_only: Option<bool>,
}

impl Runtime {
    /// Calls `note(is_set, name)` for every runtime key without effect here.
    pub(super) fn inert_keys(&self, note: &mut dyn FnMut(bool, &str)) {
        note(self.backend.is_some(), "runtime.backend");
        note(self.parallelism.is_some(), "runtime.parallelism");
        note(
            self.use_file_storage_only.is_some(),
            "runtime.use_file_storage_only",
        );
        note(self.safe.is_some(), "runtime.safe");
    }
}

/// The image to run: `image`, with the tag `runtime.image_tag` (or the older
/// `runtime.tag`) names instead of its own; a `sha256:…` value pins a digest.
pub(super) fn image_reference(image: &str, runtime: Option<&Runtime>) -> String {
    let Some(tag) = runtime.and_then(|r| r.image_tag.as_ref().or(r.tag.as_ref())) else {
        return image.to_owned();
    };
    let name = image.split_once('@').map_or(image, |(n, _)| n);
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

#[cfg(test)]
mod tests {
    fn job(text: &str) -> Result<crate::contract::JobFile, String> {
        crate::contract::JobFile::parse(text.as_bytes())
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
