//! The defaults the original writes into `config.json`'s `storage`: it passes the
//! configuration through its mapping definitions (input-mapping's and output-mapping's
//! configuration trees) before writing it, so a component finds `columns`,
//! `where_operator`, `incremental`, `primary_key`, `delimiter`, … on every mapping, set or
//! not, and code that reads them without a fallback works. What is given is kept; only
//! missing keys are added, with the original's values (`[]` where it writes an empty PHP
//! array, `column_metadata` included).

use serde_json::{Map, Value, json};

/// Adds the original's defaults to a `storage` tree, in place.
pub fn fill(storage: &mut Value) {
    let Some(storage) = storage.as_object_mut() else {
        return;
    };
    if let Some(input) = storage.get_mut("input").and_then(Value::as_object_mut) {
        fill_list(input, "tables", input_table);
        fill_list(input, "files", input_file);
    }
    if let Some(output) = storage.get_mut("output").and_then(Value::as_object_mut) {
        fill_list(output, "tables", output_table);
        fill_list(output, "files", output_file);
        if let Some(Value::Object(table_files)) = output.get_mut("table_files") {
            defaults(table_files, &json!({"tags": [], "is_permanent": true}));
        }
    }
}

/// A list of mappings: there (`[]` when missing), each filled by `each`.
fn fill_list(parent: &mut Map<String, Value>, key: &str, each: fn(&mut Map<String, Value>)) {
    let list = parent
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()));
    for item in list.as_array_mut().into_iter().flatten() {
        if let Value::Object(m) = item {
            each(m);
        }
    }
}

/// Adds every key of `defaults` that `m` lacks.
fn defaults(m: &mut Map<String, Value>, defaults: &Value) {
    for (k, v) in defaults.as_object().into_iter().flatten() {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// input-mapping's `Table` definition.
fn input_table(m: &mut Map<String, Value>) {
    defaults(
        m,
        &json!({
            "columns": [], "column_types": [], "where_values": [], "where_operator": "eq",
            "overwrite": false, "keep_internal_timestamp_column": true
        }),
    );
    // Normalised as there: "" is `eq`; `null` reads as 0 and "".
    if m.get("where_operator")
        .is_some_and(|o| o == "" || o.is_null())
    {
        m.insert("where_operator".to_owned(), json!("eq"));
    }
    if m.get("days").is_some_and(Value::is_null) {
        m.insert("days".to_owned(), json!(0));
    }
    if m.get("changed_since").is_some_and(Value::is_null) {
        m.insert("changed_since".to_owned(), json!(""));
    }
}

/// input-mapping's `File` definition: `overwrite`, and empty filters dropped.
fn input_file(m: &mut Map<String, Value>) {
    defaults(m, &json!({"overwrite": true}));
    for key in ["tags", "query", "processed_tags", "file_ids"] {
        let empty = match m.get(key) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            m.remove(key);
        }
    }
}

/// output-mapping's table definition (`BaseConfiguration`).
fn output_table(m: &mut Map<String, Value>) {
    defaults(
        m,
        &json!({
            "incremental": false, "primary_key": [], "columns": [], "distribution_key": [],
            "delete_where_values": [], "delete_where_operator": "eq", "delimiter": ",",
            "enclosure": "\"", "metadata": [], "column_metadata": [], "write_always": false,
            "tags": [], "schema": []
        }),
    );
    if m.get("delete_where_operator")
        .is_some_and(|o| o == "" || o.is_null())
    {
        m.insert("delete_where_operator".to_owned(), json!("eq"));
    }
}

/// output-mapping's file definition.
fn output_file(m: &mut Map<String, Value>) {
    defaults(
        m,
        &json!({
            "tags": [], "is_public": false, "is_permanent": false, "is_encrypted": true,
            "notify": false
        }),
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn mappings_get_the_originals_defaults_and_keep_what_is_given() {
        let mut storage = json!({
            "input": {"tables": [{"source": "in.c-a.t", "where_operator": "", "days": null}],
                      "files": [{"tags": ["x"], "query": "", "processed_tags": []}]},
            "output": {"tables": [{"source": "t.csv", "incremental": true}],
                       "files": [{"source": "f.txt", "is_public": true}],
                       "table_files": {"tags": ["a"]}}
        });
        super::fill(&mut storage);
        assert_eq!(
            storage,
            json!({
                "input": {
                    "tables": [{"source": "in.c-a.t", "columns": [], "column_types": [],
                                "where_values": [], "where_operator": "eq", "days": 0,
                                "overwrite": false, "keep_internal_timestamp_column": true}],
                    "files": [{"tags": ["x"], "overwrite": true}]
                },
                "output": {
                    "tables": [{"source": "t.csv", "incremental": true, "primary_key": [],
                                "columns": [], "distribution_key": [],
                                "delete_where_values": [], "delete_where_operator": "eq",
                                "delimiter": ",", "enclosure": "\"", "metadata": [],
                                "column_metadata": [], "write_always": false, "tags": [],
                                "schema": []}],
                    "files": [{"source": "f.txt", "tags": [], "is_public": true,
                               "is_permanent": false, "is_encrypted": true, "notify": false}],
                    "table_files": {"tags": ["a"], "is_permanent": true}
                }
            })
        );
        // Only the parts that are there get lists: no `input` is invented.
        let mut storage = json!({"output": {"default_bucket": "in.c-x"}});
        super::fill(&mut storage);
        assert_eq!(
            storage,
            json!({"output": {"default_bucket": "in.c-x", "tables": [], "files": []}})
        );
    }
}
