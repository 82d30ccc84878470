//! Validation of a configuration before anything runs (contract §2, step 1).
//!
//! Two checks, both the user's errors that name the failing path:
//! - **Root keys**: done while the job file is parsed. [`Configuration`] denies unknown
//!   fields, as the original runner's configuration tree does (its `ConfigurationDefinition`
//!   rejects unknown root keys: an error, not a warning), so a typo such as `parameter`
//!   fails with `configuration: unknown field ...`; the keys the original accepts without a
//!   meaning here (`artifacts`, `runtime.backend`, …) draw a warning by name
//!   ([`JobFile::inert_keys`](super::JobFile::inert_keys)). Rows are merged and checked the
//!   same way by [`JobFile::row_configurations`](super::JobFile::row_configurations).
//! - **The component's schema** (here): a component may carry a JSON schema
//!   (`configuration_schema`, or `configurationSchema` as in Keboola's Developer Portal)
//!   that `parameters` must match. Errors name the JSON pointer of the failing value from
//!   the configuration's root (`/parameters/port`) and the reason, never the value itself:
//!   a `#` value is a secret, encrypted or not.
//!
//! The schema is compiled without network or file access: a `$ref` to anything outside the
//! schema (other than the drafts' own meta-schemas) is an error of the schema.

use serde_json::{Map, Value};

use super::job::{Component, Configuration};

/// How many violations one error lists; the rest are counted.
const MAX_LISTED: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The component's schema is not a schema.
    #[error("the configuration schema of component {component} is invalid: {reason}")]
    Schema { component: String, reason: String },
    /// `parameters` break the schema; each violation is `pointer: reason`.
    #[error(
        "the configuration{} does not match the schema of component {component}: {}",
        row.as_ref().map(|r| format!(" of row {r}")).unwrap_or_default(),
        violations.join("; ")
    )]
    Parameters {
        component: String,
        row: Option<String>,
        violations: Vec<String>,
    },
}

/// Checks the `parameters` of every configuration a job runs (`(row id, configuration)`,
/// as [`JobFile::row_configurations`](super::JobFile::row_configurations) gives them)
/// against the component's schema, if it has one.
pub fn check_configurations(
    component: &Component,
    configs: &[(Option<String>, Configuration)],
) -> Result<(), ValidateError> {
    let Some(schema) = &component.configuration_schema else {
        return Ok(());
    };
    let validator = compile(&component.id, schema)?;
    for (row, config) in configs {
        check_with(&validator, &config.parameters).map_err(|violations| {
            ValidateError::Parameters {
                component: component.id.clone(),
                row: row.clone(),
                violations,
            }
        })?;
    }
    Ok(())
}

/// Checks `parameters` against `schema`, the schema of component `component_id` (for a
/// processor, whose parameters are its own).
pub fn check_parameters(
    component_id: &str,
    schema: &Value,
    parameters: &Map<String, Value>,
) -> Result<(), ValidateError> {
    let validator = compile(component_id, schema)?;
    check_with(&validator, parameters).map_err(|violations| ValidateError::Parameters {
        component: component_id.to_owned(),
        row: None,
        violations,
    })
}

fn compile(component_id: &str, schema: &Value) -> Result<jsonschema::Validator, ValidateError> {
    jsonschema::validator_for(schema).map_err(|e| ValidateError::Schema {
        component: component_id.to_owned(),
        // The schema is the component's, not the user's: nothing secret in it, but the
        // instance of a schema error is a piece of the schema, so it is masked the same way.
        reason: format!("{}: {}", pointer(e.instance_path().as_str()), e.masked()),
    })
}

/// The violations, each `/parameters/…: reason`, or nothing when the parameters match.
fn check_with(
    validator: &jsonschema::Validator,
    parameters: &Map<String, Value>,
) -> Result<(), Vec<String>> {
    let instance = Value::Object(parameters.clone());
    let mut violations = Vec::new();
    let mut count = 0usize;
    for e in validator.iter_errors(&instance) {
        count += 1;
        if violations.len() < MAX_LISTED {
            let at = format!("/parameters{}", e.instance_path().as_str());
            // `masked` leaves the value out of the reason: it may be a secret.
            violations.push(format!("{at}: {}", e.masked_with("the value")));
        }
    }
    if count > violations.len() {
        violations.push(format!("and {} more", count - violations.len()));
    }
    match violations.is_empty() {
        true => Ok(()),
        false => Err(violations),
    }
}

/// A JSON pointer as shown: the root is `/`.
fn pointer(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::JobFile;

    fn job(component: Value, configuration: Value) -> JobFile {
        let mut c = json!({"id": "acme.schema", "image": "x/y"});
        if let (Value::Object(c), Value::Object(extra)) = (&mut c, component) {
            c.extend(extra);
        }
        serde_json::from_value(json!({"component": c, "configuration": configuration})).unwrap()
    }

    fn check(j: &JobFile) -> Result<(), ValidateError> {
        check_configurations(&j.component, &j.row_configurations().unwrap())
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["host", "#password"],
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer", "minimum": 1},
                "#password": {"type": "string", "minLength": 30},
                "tables": {"type": "array", "items": {"type": "string"}}
            }
        })
    }

    #[test]
    fn valid_parameters_pass_and_a_component_without_schema_checks_nothing() {
        let params = json!({"parameters": {"host": "db", "port": 5432,
            "#password": "KBC::ProjectSecure::aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}});
        check(&job(
            json!({"configuration_schema": schema()}),
            params.clone(),
        ))
        .unwrap();
        check(&job(json!({}), json!({"parameters": {"port": "any"}}))).unwrap();
        // An empty schema (as Keboola's components without one carry) takes anything.
        check(&job(json!({"configurationSchema": {}}), params)).unwrap();
    }

    #[test]
    fn a_violation_names_its_pointer_and_reason_but_not_a_secret() {
        let j = job(
            json!({"configurationSchema": schema()}),
            json!({"parameters": {"host": "db", "port": "5432",
                "#password": "short-secret-value", "tables": ["a", 7]}}),
        );
        let e = check(&j).unwrap_err().to_string();
        assert!(
            e.starts_with("the configuration does not match the schema of component acme.schema"),
            "{e}"
        );
        assert!(e.contains("/parameters/port: "), "{e}");
        assert!(e.contains("\"integer\""), "{e}");
        assert!(e.contains("/parameters/#password: "), "{e}");
        assert!(e.contains("/parameters/tables/1: "), "{e}");
        assert!(!e.contains("short-secret-value"), "{e}");
        assert!(!e.contains("5432"), "{e}");
    }

    #[test]
    fn a_missing_required_key_names_the_object_that_lacks_it() {
        let j = job(
            json!({"configuration_schema": schema()}),
            json!({"parameters": {"host": "db"}}),
        );
        let e = check(&j).unwrap_err().to_string();
        assert!(e.contains("/parameters: "), "{e}");
        assert!(e.contains("#password"), "{e}");
    }

    #[test]
    fn each_row_is_checked_merged_over_the_configuration() {
        let mut j = job(
            json!({"configuration_schema": schema()}),
            json!({"parameters": {"host": "db", "#password": "x".repeat(30)}}),
        );
        j.rows = serde_json::from_value(json!([
            {"id": "good", "configuration": {"parameters": {"port": 1}}},
            {"id": "bad", "configuration": {"parameters": {"port": 0}}}
        ]))
        .unwrap();
        let e = check(&j).unwrap_err().to_string();
        assert!(e.contains("of row bad"), "{e}");
        assert!(e.contains("/parameters/port: "), "{e}");
    }

    #[test]
    fn many_violations_are_counted_past_the_first_ten() {
        let params: Map<String, Value> = (0..15).map(|i| (format!("k{i}"), json!(i))).collect();
        let schema = json!({"additionalProperties": {"type": "string"}});
        let e = check_parameters("acme.p", &schema, &params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("and 5 more"), "{e}");
    }

    #[test]
    fn an_invalid_schema_is_named_as_the_components() {
        let e = check_parameters("acme.p", &json!({"type": 5}), &Map::new()).unwrap_err();
        assert!(matches!(e, ValidateError::Schema { .. }), "{e}");
        assert!(e.to_string().contains("component acme.p"), "{e}");
        // Nothing outside the schema is fetched.
        let remote = json!({"$ref": "http://127.0.0.1:9/schema.json"});
        let e = check_parameters("acme.p", &remote, &Map::new()).unwrap_err();
        assert!(matches!(e, ValidateError::Schema { .. }), "{e}");
    }
}
