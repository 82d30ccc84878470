//! `configuration.storage` and the manifests beside the data (contract §4–§6): what a
//! component gets from storage and what of its output goes back.
//!
//! These are data only; `crate::mapping` does the work. Unknown keys are errors naming their
//! path, like everywhere in the job file — and in manifests, which components write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::php;

/// `configuration.storage`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default, deserialize_with = "php::object")]
    pub input: InputMapping,
    #[serde(default, deserialize_with = "php::object")]
    pub output: OutputMapping,
}

impl StorageConfig {
    /// Calls `note(is_set, name)` for every mapping key without effect here.
    pub fn inert_keys(&self, note: &mut dyn FnMut(bool, &str)) {
        let input = &self.input;
        note(
            input.read_only_storage_access.is_some(),
            "storage.input.read_only_storage_access",
        );
        for t in &input.tables {
            let key = |k: &str| format!("storage.input.tables[].{k}");
            note(t.column_types.is_some(), &key("column_types"));
            note(t.overwrite.is_some(), &key("overwrite"));
            note(t.load_type.is_some(), &key("load_type"));
            note(t.use_view.is_some(), &key("use_view"));
            note(
                t.keep_internal_timestamp_column.is_some(),
                &key("keep_internal_timestamp_column"),
            );
            note(t.file_type.is_some(), &key("file_type"));
            note(t.source_branch_id.is_some(), &key("source_branch_id"));
        }
        for f in &input.files {
            note(f.overwrite.is_some(), "storage.input.files[].overwrite");
            note(f.query.is_some(), "storage.input.files[].query");
        }
        let output = &self.output;
        let key = |k: &str| format!("storage.output.{k}");
        note(
            output.table_modifications.is_some(),
            &key("table_modifications"),
        );
        note(
            output.treat_values_as_null.is_some(),
            &key("treat_values_as_null"),
        );
        note(output.table_files.is_some(), &key("table_files"));
        for t in &output.tables {
            let key = |k: &str| format!("storage.output.tables[].{k}");
            note(t.settings.tags.is_some(), &key("tags"));
            note(
                t.settings.distribution_key.is_some(),
                &key("distribution_key"),
            );
            note(
                t.settings.unload_strategy.is_some(),
                &key("unload_strategy"),
            );
            note(
                t.settings.deduplication_strategy.is_some(),
                &key("deduplication_strategy"),
            );
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputMapping {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<InputTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_storage_access: Option<bool>,
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
    /// Workspace loads only (the original runner's Snowflake/BigQuery staging): accepted,
    /// without effect on a CSV in the data folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_types: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_view: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_internal_timestamp_column: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_branch_id: Option<Value>,
}

/// How a filter compares a column with its values: is one of them (`eq`), or none (`ne`).
/// An empty string is `eq`, as the original normalises it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    #[default]
    Eq,
    Ne,
}

impl<'de> Deserialize<'de> for Operator {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "eq" | "" => Ok(Operator::Eq),
            "ne" => Ok(Operator::Ne),
            other => Err(serde::de::Error::unknown_variant(other, &["eq", "ne"])),
        }
    }
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
    /// An Elasticsearch query over Keboola's file index: nothing answers it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Tags added to the files this mapping brought once the job succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processed_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
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
    /// How the component treats native types; the library chooses its manifest format
    /// by it, and berth hands it on as `KBC_DATA_TYPE_SUPPORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type_support: Option<DataTypeSupport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_modifications: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treat_values_as_null: Option<Value>,
    /// Tags of the files a "use file storage only" run uploads instead of tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_files: Option<Value>,
}

/// `storage.output.data_type_support` (and `KBC_DATA_TYPE_SUPPORT`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataTypeSupport {
    Authoritative,
    Hints,
    None,
}

impl DataTypeSupport {
    pub fn as_str(self) -> &'static str {
        match self {
            DataTypeSupport::Authoritative => "authoritative",
            DataTypeSupport::Hints => "hints",
            DataTypeSupport::None => "none",
        }
    }
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "php::optional_object"
    )]
    pub column_metadata: Option<BTreeMap<String, Vec<KeyValue>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_always: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    // The current manifest format (output-mapping's full key set).
    /// `out` (what a component writes) or `in`; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_type: Option<String>,
    /// With `schema`: whether the CSV starts with a header (without one, the schema's
    /// column names are its columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    /// Columns with native types, key and metadata: the current format's `columns`,
    /// `primary_key` and `column_metadata` in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<SchemaColumn>>,
    /// The table's metadata as `{key: value}` (the current format's `metadata`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar_map"
    )]
    pub table_metadata: Option<BTreeMap<String, String>>,
    /// Tags of the staging files of a load: nothing is staged through files here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_key: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_where: Option<Vec<DeleteWhere>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unload_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication_strategy: Option<String>,
}

/// One column of a manifest's `schema`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaColumn {
    pub name: String,
    /// Per backend (`base`, `snowflake`, `bigquery`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<BTreeMap<String, DataType>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_key: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "scalar_map"
    )]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A column's type on one backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataType {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_scalar"
    )]
    pub length: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_scalar"
    )]
    pub default: Option<String>,
}

/// One rule of `delete_where` (the list form): rows matching all its filters are deleted.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeleteWhere {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_until: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub where_filters: Vec<DeleteWhereFilter>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeleteWhereFilter {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_from_set: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_from_workspace: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_from_storage: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    /// Any JSON scalar; kept as Keboola's Storage keeps it, as text (see [`scalar_text`]).
    #[serde(deserialize_with = "scalar")]
    pub value: String,
}

/// A metadata value as storage keeps it: text. Components write any JSON scalar (the
/// libraries write `KBC.datatype.nullable: false`); like Keboola's Storage, berth keeps
/// strings as they are, numbers in their JSON form, booleans as `1`/`0` and null as empty.
pub fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "1" } else { "0" }.to_owned()),
        Value::Null => Ok(String::new()),
        Value::Array(_) | Value::Object(_) => {
            Err("a metadata value must be a string, number, boolean or null".to_owned())
        }
    }
}

fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar_text(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn optional_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => scalar_text(&v).map(Some).map_err(serde::de::Error::custom),
    }
}

fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let Some(map) = php::optional_object::<_, BTreeMap<String, Value>>(d)? else {
        return Ok(None);
    };
    map.into_iter()
        .map(|(k, v)| {
            scalar_text(&v)
                .map(|t| (k.clone(), t))
                .map_err(|e| serde::de::Error::custom(format!("{k}: {e}")))
        })
        .collect::<Result<_, _>>()
        .map(Some)
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
    #[serde(default, deserialize_with = "php::object")]
    pub configuration: serde_json::Map<String, Value>,
}

/// Merges `over` into `base` as the original merges a row over its configuration (PHP's
/// `array_replace_recursive`, where objects and lists are both arrays): objects key by
/// key and lists item by item (a row's one table replaces the first of two, and a
/// second stays), recursively; an empty object or list changes nothing; anything else
/// replaces what was there.
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
        (Value::Array(b), Value::Array(o)) => {
            for (i, v) in o.iter().enumerate() {
                match b.get_mut(i) {
                    Some(existing) => merge(existing, v),
                    None => b.push(v.clone()),
                }
            }
        }
        // PHP's empty array, whichever way it was written, replaces nothing.
        (Value::Object(_) | Value::Array(_), o) if is_empty_array(o) => {}
        (b, o) => *b = o.clone(),
    }
}

fn is_empty_array(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The input table manifest berth writes (contract §4).
#[derive(Debug, Clone, Serialize)]
pub struct InputTableManifest {
    pub id: String,
    /// Where the original's Storage API serves the table; berth's own scheme here.
    pub uri: String,
    pub name: String,
    /// The table's description, else its `KBC.description` metadata; omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub primary_key: Vec<String>,
    pub columns: Vec<String>,
    pub created: String,
    pub last_change_date: String,
    pub last_import_date: String,
    pub metadata: Vec<Value>,
    /// Every selected column, with an empty list when it has no metadata.
    pub column_metadata: BTreeMap<String, Vec<Value>>,
    /// The current format's columns with types, when native types are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<Value>>,
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
    fn merge_is_phps_array_replace_recursive() {
        let mut base = json!({
            "parameters": {"a": 1, "b": {"c": 2}, "list": [1, 2, 3], "s": "x"},
            "storage": {"input": {"tables": [
                {"source": "in.c-a.one", "columns": ["x"]}, {"source": "in.c-a.two"}
            ]}},
            "processors": {"before": [{"definition": {"component": "p"}}]}
        });
        merge(
            &mut base,
            &json!({
                "parameters": {"b": {"d": 3}, "list": [9], "s": {"now": "object"}},
                "storage": {"input": {"tables": [{"source": "in.c-a.row"}]}},
                "processors": {"before": []}
            }),
        );
        assert_eq!(
            base,
            json!({
                "parameters": {"a": 1, "b": {"c": 2, "d": 3}, "list": [9, 2, 3],
                               "s": {"now": "object"}},
                "storage": {"input": {"tables": [
                    {"source": "in.c-a.row", "columns": ["x"]}, {"source": "in.c-a.two"}
                ]}},
                "processors": {"before": [{"definition": {"component": "p"}}]}
            })
        );
        // PHP's `[]` for an empty object replaces nothing either; a scalar replaces.
        let mut base = json!({"parameters": {"a": 1}, "x": [1]});
        merge(&mut base, &json!({"parameters": [], "x": 2}));
        assert_eq!(base, json!({"parameters": {"a": 1}, "x": 2}));
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
