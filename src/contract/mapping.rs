//! `configuration.storage` and the manifests beside the data (contract §4–§6): what a
//! component gets from storage and what of its output goes back.
//!
//! These are data only; `crate::mapping` does the work. Unknown keys are errors naming their
//! path, like everywhere in the job file — and in manifests, which components write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `configuration.storage`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub input: InputMapping,
    #[serde(default)]
    pub output: OutputMapping,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputMapping {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<InputTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
}

/// `storage.input.tables[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputTable {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub where_column: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub where_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub where_operator: Option<Operator>,
    /// An absolute time, a relative one (`-2 days`), or `adaptive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// How a filter compares a column with its values: is one of them (`eq`), or none (`ne`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    #[default]
    Eq,
    Ne,
}

/// `storage.input.files[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    /// Every tag must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FileSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only `adaptive`: files newer than the last one this mapping imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    #[serde(default)]
    pub tags: Vec<TagFilter>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct TagFilter {
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: TagMatch,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TagMatch {
    #[default]
    Include,
    Exclude,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputMapping {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<OutputTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<OutputFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_bucket: Option<String>,
}

/// The settings of an output table, shared by the mapping (which adds `source`) and the
/// manifest a component may write beside the data.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    /// Given: the CSV has no header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclosure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where_values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where_operator: Option<Operator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<KeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_metadata: Option<BTreeMap<String, Vec<KeyValue>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_always: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `storage.output.tables[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputTable {
    pub source: String,
    #[serde(flatten)]
    pub settings: TableSettings,
}

/// The settings of an output file, shared by mapping and manifest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_permanent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
}

/// `storage.output.files[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    pub source: String,
    #[serde(flatten)]
    pub settings: FileSettings,
}

/// One configuration row (contract: a configuration split into rows, run in order).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub id: String,
    #[serde(default)]
    pub is_disabled: bool,
    /// Merged over the configuration: objects key by key, everything else replaced.
    #[serde(default)]
    pub configuration: serde_json::Map<String, Value>,
}

/// Merges `over` into `base`: objects recursively, arrays and scalars replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The input table manifest berth writes (contract §4).
#[derive(Debug, Clone, Serialize)]
pub struct InputTableManifest {
    pub id: String,
    pub name: String,
    pub primary_key: Vec<String>,
    pub columns: Vec<String>,
    pub created: String,
    pub last_change_date: String,
    pub last_import_date: String,
    pub metadata: Vec<Value>,
    pub column_metadata: BTreeMap<String, Vec<Value>>,
}

/// The input file manifest berth writes (contract §4).
#[derive(Debug, Clone, Serialize)]
pub struct InputFileManifest {
    pub id: u64,
    pub name: String,
    pub created: String,
    pub is_public: bool,
    pub is_encrypted: bool,
    pub is_sliced: bool,
    pub tags: Vec<String>,
    pub max_age_days: Option<u64>,
    pub size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_recurses_into_objects_and_replaces_the_rest() {
        let mut base = json!({"parameters": {"a": 1, "b": {"c": 2}}, "storage": {"input": {"tables": [1, 2]}}});
        merge(
            &mut base,
            &json!({"parameters": {"b": {"d": 3}}, "storage": {"input": {"tables": [3]}}}),
        );
        assert_eq!(
            base,
            json!({"parameters": {"a": 1, "b": {"c": 2, "d": 3}}, "storage": {"input": {"tables": [3]}}})
        );
    }

    #[test]
    fn output_table_settings_flatten_and_refuse_unknown_keys() {
        let t: OutputTable = serde_json::from_value(
            json!({"source": "a.csv", "destination": "out.c-x.a", "incremental": true}),
        )
        .unwrap();
        assert_eq!(t.settings.destination.as_deref(), Some("out.c-x.a"));
        assert!(serde_json::from_value::<TableSettings>(json!({"destinaton": "x"})).is_err());
    }

    #[test]
    fn tag_filters_default_to_include() {
        let f: FileSource = serde_json::from_value(
            json!({"tags": [{"name": "a"}, {"name": "b", "match": "exclude"}]}),
        )
        .unwrap();
        assert_eq!(f.tags[0].match_, TagMatch::Include);
        assert_eq!(f.tags[1].match_, TagMatch::Exclude);
    }
}
