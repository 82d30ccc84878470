//! A configuration as an operator stores it in the project (`berth config put`), for jobs
//! that name it by `config_id` instead of carrying it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::job::JobFile;

/// Components whose configurations hold data other configurations use (variables and
/// shared code), never run: their configurations are stored as they are, without being
/// checked as a component's configuration.
pub const DATA_COMPONENTS: [&str; 2] = ["keboola.variables", "keboola.shared-code"];

/// What `berth config put` reads and `berth config show` prints: a name, the configuration
/// (a job file's `configuration`) and its rows.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationFile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub configuration: Map<String, Value>,
    #[serde(default)]
    pub rows: Vec<RowFile>,
}

/// A row of a [`ConfigurationFile`]: a job file's row, with a name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowFile {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub is_disabled: bool,
    #[serde(default)]
    pub configuration: Map<String, Value>,
}

impl ConfigurationFile {
    /// Parses the configuration `id` of `component` and checks it as a job that runs it
    /// would be checked (except that every row may be disabled: a job may name them). The
    /// error names the path of the bad key.
    pub fn parse(text: &[u8], component: &str, id: &str) -> Result<ConfigurationFile, String> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let file: ConfigurationFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            match path.as_str() {
                "." | "" => e.into_inner().to_string(),
                _ => format!("{path}: {}", e.into_inner()),
            }
        })?;
        file.check(component, id)?;
        Ok(file)
    }

    fn check(&self, component: &str, id: &str) -> Result<(), String> {
        if DATA_COMPONENTS.contains(&component) {
            return Ok(());
        }
        let rows: Vec<Value> = (self.rows.iter())
            .map(|r| json!({"id": r.id, "is_disabled": r.is_disabled, "configuration": r.configuration}))
            .collect();
        let mut row_ids: Vec<&str> = self.rows.iter().map(|r| r.id.as_str()).collect();
        row_ids.sort_unstable();
        row_ids.dedup();
        let job = json!({
            "component": component,
            "config_id": id,
            "configuration": self.configuration,
            "rows": rows,
            "row_ids": row_ids,
        });
        let text = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        JobFile::parse(&text).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(component: &str, text: &str) -> Result<ConfigurationFile, String> {
        ConfigurationFile::parse(text.as_bytes(), component, "42")
    }

    #[test]
    fn a_configuration_is_checked_as_a_job_would_check_it() {
        let f = parse(
            "acme.ex",
            r#"{"name": "orders", "configuration": {"parameters": {"a": 1}},
                "rows": [{"id": "r1", "name": "first", "is_disabled": true}]}"#,
        )
        .unwrap();
        assert_eq!(
            (f.name.as_str(), f.rows[0].name.as_str()),
            ("orders", "first")
        );
        let e = parse("acme.ex", r#"{"configuration": {"parameter": {}}}"#).unwrap_err();
        assert!(
            e.starts_with("configuration.parameter: unknown field"),
            "{e}"
        );
        let e = parse(
            "acme.ex",
            r#"{"rows": [{"id": "r", "configuration": {"storage": {"x": 1}}}]}"#,
        )
        .unwrap_err();
        assert!(e.starts_with("rows[0].configuration.storage.x"), "{e}");
        let e = parse("acme.ex", r#"{"rows": [{"id": "r"}, {"id": "r"}]}"#).unwrap_err();
        assert!(e.starts_with("rows[1].id: \"r\" appears twice"), "{e}");
        let e = parse("acme.ex", r#"{"id": "42"}"#).unwrap_err();
        assert!(e.starts_with("id: unknown field"), "{e}");
        let e = parse("../x", "{}").unwrap_err();
        assert!(e.starts_with("component.id:"), "{e}");
    }

    #[test]
    fn variables_and_shared_code_are_stored_as_they_are() {
        let f = parse(
            "keboola.variables",
            r#"{"configuration": {"variables": [{"name": "x", "type": "string"}]},
                "rows": [{"id": "v1", "configuration": {"values": [{"name": "x", "value": "1"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(f.configuration["variables"][0]["name"], "x");
        assert!(parse("acme.ex", r#"{"configuration": {"variables": []}}"#).is_err());
    }
}
