//! Shared code and variables (the original's `configuration-variables-resolver`): the
//! placeholders of a configuration replaced before it runs, each row's on its own.
//!
//! In the original's order:
//! 1. **Shared code**: with `shared_code_id` and `shared_code_row_ids` set, the rows of that
//!    `keboola.shared-code` configuration are loaded and their `code_content` (a string or
//!    a list) replaces `{{ rowId }}` items of lists ([`shared_code`]).
//! 2. **Vault**: `{{ vault.NAME }}` names a project's vault variable. berth has no vault,
//!    so every such placeholder is missing, as in a project without vault variables.
//! 3. **Variables**: with `variables_id` set, the `keboola.variables` configuration of that
//!    id declares the variables (`{"variables": [{"name", "type"}]}`) and its rows hold
//!    sets of values (`{"values": [{"name", "value"}]}`). The values come from the job's
//!    inline `variable_values_data`, else the row the job's `variable_values_id` names,
//!    else the row the configuration's `variables_values_id` names (its default). Every
//!    declared variable needs a value. The whole configuration's JSON text is then rendered
//!    with Mustache ([`mustache`]), values escaped for JSON strings.
//!
//! Any placeholder left without a value (of the vault or of Mustache) fails the job, naming
//! them all. Without `variables_id`, `{{ name }}` placeholders stay as they are.
//!
//! Stored configurations are read through [`Lookup`], so this module stays a leaf.

mod mustache;
mod php_json;
mod shared_code;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use mustache::SyntaxError;

/// The component whose configurations declare variables and hold their values.
pub const VARIABLES_COMPONENT: &str = "keboola.variables";
/// The component whose configuration rows hold shared code.
pub const SHARED_CODE_COMPONENT: &str = "keboola.shared-code";

/// A stored configuration, as far as resolving needs it.
#[derive(Debug, Clone, Default)]
pub struct StoredConfig {
    pub configuration: Value,
    /// Its rows: id and configuration.
    pub rows: Vec<(String, Value)>,
}

/// Where stored configurations come from.
pub trait Lookup {
    type Error;
    /// The configuration `id` of `component`, if there is one.
    fn configuration(
        &mut self,
        component: &str,
        id: &str,
    ) -> Result<Option<StoredConfig>, Self::Error>;
}

/// A job's inline variable values (`variableValuesData` of Keboola's job API).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VariableValuesData {
    #[serde(default)]
    pub values: Vec<VariableValue>,
}

/// One value of a variable.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VariableValue {
    #[serde(deserialize_with = "scalar_text")]
    pub name: String,
    #[serde(deserialize_with = "scalar_text")]
    pub value: String,
}

/// A string, number or boolean, as text (PHP's string conversion: `true` is `1`, `false`
/// empty).
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    php_scalar(&v).ok_or_else(|| serde::de::Error::custom("expected a string or a number"))
}

fn php_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".to_owned()),
        Value::Bool(false) => Some(String::new()),
        _ => None,
    }
}

/// What the job gives for its variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobValues<'a> {
    /// The row of the variables configuration to take the values from.
    pub id: Option<&'a str>,
    pub data: Option<&'a VariableValuesData>,
}

/// A configuration with its placeholders replaced, and the variables used, with their
/// values, in the order first used.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub configuration: Value,
    pub replaced: Vec<(String, String)>,
}

/// A configuration whose placeholders cannot be replaced: always the user's error.
#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    #[error(
        "only one of variable_values_id (variableValuesId) and variable_values_data \
         (variableValuesData) can be given"
    )]
    BothValues,
    #[error("configuration key {key} {reason}")]
    Key { key: &'static str, reason: String },
    #[error("variable configuration cannot be read: {0}")]
    VariablesUnreadable(String),
    #[error("variable configuration {id:?} is invalid: {reason}")]
    VariablesInvalid { id: String, reason: String },
    #[error("cannot read variable values {values_id:?} of variables configuration {id:?}")]
    ValuesUnreadable { id: String, values_id: String },
    #[error(
        "variable values {values_id:?} of variables configuration {id:?} are invalid: {reason}"
    )]
    ValuesInvalid {
        id: String,
        values_id: String,
        reason: String,
    },
    #[error("no variable values provided for variables configuration {0:?}")]
    NoValues(String),
    #[error("variable name cannot be empty")]
    EmptyName,
    #[error("no value provided for variable {0:?}")]
    NoValueFor(String),
    #[error("shared code configuration cannot be read: {0}")]
    SharedCodeUnreadable(String),
    #[error("shared code row {row:?} of configuration {id:?} is invalid: {reason}")]
    SharedCodeInvalid {
        id: String,
        row: String,
        reason: String,
    },
    #[error("the configuration is not a valid mustache template")]
    Syntax(#[source] SyntaxError),
    #[error("variable replacement resulted in invalid configuration")]
    InvalidResult(#[source] serde_json::Error),
    #[error("missing values for placeholders: {}", .0.join(", "))]
    Missing(Vec<String>),
}

/// Why resolving failed: the configuration, or reading stored configurations.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError<E> {
    #[error(transparent)]
    Placeholder(#[from] PlaceholderError),
    #[error("cannot read stored configurations")]
    Lookup(#[source] E),
}

/// Replaces the shared code and variables of `configuration` (one row's, merged).
pub fn resolve<L: Lookup>(
    configuration: Value,
    job: JobValues<'_>,
    lookup: &mut L,
) -> Result<Resolved, ResolveError<L::Error>> {
    let mut configuration = configuration;
    resolve_shared_code(&mut configuration, lookup)?;
    let mut missing = vault_placeholders(&php_json::encode(&configuration));
    let (configuration, replaced, more) = resolve_variables(configuration, job, lookup)?;
    missing.extend(more);
    if !missing.is_empty() {
        return Err(PlaceholderError::Missing(missing).into());
    }
    Ok(Resolved {
        configuration,
        replaced,
    })
}

/// PHP's `empty`: null, `""`, `"0"`, 0, false and empty lists or objects.
fn php_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::String(s)) => s.is_empty() || s == "0",
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Bool(true)) => false,
    }
}

/// The id a configuration key holds, unless it is unset (or empty, as PHP tells).
fn id_key(config: &Value, key: &'static str) -> Result<Option<String>, PlaceholderError> {
    let v = config.get(key);
    if php_empty(v) {
        return Ok(None);
    }
    match v.and_then(php_scalar) {
        Some(id) => Ok(Some(id)),
        None => Err(PlaceholderError::Key {
            key,
            reason: "must be a string".to_owned(),
        }),
    }
}

fn read<L: Lookup>(
    lookup: &mut L,
    component: &str,
    id: &str,
) -> Result<Option<StoredConfig>, ResolveError<L::Error>> {
    lookup
        .configuration(component, id)
        .map_err(ResolveError::Lookup)
}

fn not_stored(component: &str, id: &str) -> String {
    format!("configuration {id:?} of {component} is not stored (store it with `berth config put`)")
}

fn row<'c>(config: &'c StoredConfig, id: &str) -> Option<&'c Value> {
    (config.rows.iter()).find_map(|(r, v)| (r == id).then_some(v))
}

fn resolve_shared_code<L: Lookup>(
    configuration: &mut Value,
    lookup: &mut L,
) -> Result<(), ResolveError<L::Error>> {
    let Some(id) = id_key(configuration, "shared_code_id")? else {
        return Ok(());
    };
    let row_ids = configuration.get("shared_code_row_ids");
    if php_empty(row_ids) {
        return Ok(());
    }
    let row_ids: Vec<String> = match row_ids.and_then(Value::as_array) {
        Some(ids) => ids.iter().filter_map(php_scalar).collect(),
        None => {
            return Err(PlaceholderError::Key {
                key: "shared_code_row_ids",
                reason: "must be a list of row ids".to_owned(),
            }
            .into());
        }
    };
    let stored = read(lookup, SHARED_CODE_COMPONENT, &id)?.ok_or_else(|| {
        PlaceholderError::SharedCodeUnreadable(not_stored(SHARED_CODE_COMPONENT, &id))
    })?;
    let mut snippets: shared_code::Snippets = Vec::new();
    for row_id in row_ids {
        let value = row(&stored, &row_id).ok_or_else(|| {
            PlaceholderError::SharedCodeUnreadable(format!(
                "configuration {id:?} of {SHARED_CODE_COMPONENT} has no row {row_id:?}"
            ))
        })?;
        let code = code_content(value).map_err(|reason| PlaceholderError::SharedCodeInvalid {
            id: id.clone(),
            row: row_id.clone(),
            reason,
        })?;
        // A row named twice keeps its first place, as a PHP array key does.
        match snippets.iter_mut().find(|(r, _)| *r == row_id) {
            Some(slot) => slot.1 = code,
            None => snippets.push((row_id, code)),
        }
    }
    let ids: Vec<&str> = snippets.iter().map(|(r, _)| r.as_str()).collect();
    tracing::info!("loaded shared code snippets with ids: {:?}", ids.join(", "));
    shared_code::replace(configuration, &snippets);
    Ok(())
}

/// A shared code row's `code_content` as a list (a string is a list of one), as the
/// original's `SharedCodeRow` definition takes it.
fn code_content(row: &Value) -> Result<Vec<Value>, String> {
    let map = row.as_object().ok_or("it must be an object")?;
    if let Some(key) = map
        .keys()
        .find(|k| !["code_content", "variables_id"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key {key:?} (allowed: code_content, variables_id)"
        ));
    }
    match map.get("code_content") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Value::String(s.clone())]),
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            Ok(items.clone())
        }
        Some(_) => Err("code_content must be a string or a list of strings".to_owned()),
    }
}

/// The `{{ vault.NAME }}` placeholders of the JSON text (not those of `{{{`), each once:
/// all missing, as berth has no vault.
fn vault_placeholders(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let name_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
    let mut found: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("{{").map(|i| at + i) {
        at = i + 1;
        if i > 0 && bytes[i - 1] == b'{' {
            continue;
        }
        let mut j = i + 2;
        j += bytes[j..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let Some(rest) = bytes[j..].strip_prefix(b"vault.") else {
            continue;
        };
        let len = rest.iter().take_while(|b| name_byte(b)).count();
        let after = &rest[len..];
        let pad = after.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if len > 0 && after[pad..].starts_with(b"}}") {
            let name = format!("vault.{}", String::from_utf8_lossy(&rest[..len]));
            if !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

type Variables = (Value, Vec<(String, String)>, Vec<String>);

/// Renders the variables; returns the configuration, the variables used and those missing.
fn resolve_variables<L: Lookup>(
    configuration: Value,
    job: JobValues<'_>,
    lookup: &mut L,
) -> Result<Variables, ResolveError<L::Error>> {
    let job_id = job.id.filter(|id| !id.is_empty());
    let data = job.data.filter(|d| !d.values.is_empty());
    if job_id.is_some() && data.is_some() {
        return Err(PlaceholderError::BothValues.into());
    }
    let Some(id) = id_key(&configuration, "variables_id")? else {
        return Ok((configuration, Vec::new(), Vec::new()));
    };
    let stored = read(lookup, VARIABLES_COMPONENT, &id)?.ok_or_else(|| {
        PlaceholderError::VariablesUnreadable(not_stored(VARIABLES_COMPONENT, &id))
    })?;
    let declared = declared_variables(&stored.configuration).map_err(|reason| {
        PlaceholderError::VariablesInvalid {
            id: id.clone(),
            reason,
        }
    })?;
    let default_id = id_key(&configuration, "variables_values_id")?;
    let values = match (data, job_id, default_id) {
        (Some(data), _, _) => data.values.clone(),
        (None, Some(values_id), _) => {
            tracing::info!("replacing variables using values with id {values_id:?}");
            stored_values(&stored, &id, values_id)?
        }
        (None, None, Some(values_id)) => {
            tracing::info!("replacing variables using default values with id {values_id:?}");
            stored_values(&stored, &id, &values_id)?
        }
        (None, None, None) => return Err(PlaceholderError::NoValues(id).into()),
    };
    let mut by_name = BTreeMap::new();
    for v in values {
        if v.name.is_empty() {
            return Err(PlaceholderError::EmptyName.into());
        }
        by_name.insert(v.name, v.value);
    }
    if let Some(name) = declared.into_iter().find(|n| !by_name.contains_key(n)) {
        return Err(PlaceholderError::NoValueFor(name).into());
    }
    let template = php_json::encode(&configuration);
    let rendered = mustache::render(&template, &by_name, php_json::escape)
        .map_err(PlaceholderError::Syntax)?;
    let configuration =
        serde_json::from_str(&rendered.text).map_err(PlaceholderError::InvalidResult)?;
    Ok((configuration, rendered.replaced, rendered.missing))
}

/// The names a `keboola.variables` configuration declares, checked as the original's
/// `Variables` definition checks them.
fn declared_variables(config: &Value) -> Result<Vec<String>, String> {
    let items = list_of(config, "variables")?;
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("variables[{i}]");
        let fields = fields_of(item, &at, &["name", "type"])?;
        names.push(fields[0].clone());
    }
    Ok(names)
}

/// The values of row `values_id` of the variables configuration `id`.
fn stored_values(
    stored: &StoredConfig,
    id: &str,
    values_id: &str,
) -> Result<Vec<VariableValue>, PlaceholderError> {
    let row = row(stored, values_id).ok_or_else(|| PlaceholderError::ValuesUnreadable {
        id: id.to_owned(),
        values_id: values_id.to_owned(),
    })?;
    let invalid = |reason| PlaceholderError::ValuesInvalid {
        id: id.to_owned(),
        values_id: values_id.to_owned(),
        reason,
    };
    let items = list_of(row, "values").map_err(invalid)?;
    let mut values = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let fields =
            fields_of(item, &format!("values[{i}]"), &["name", "value"]).map_err(invalid)?;
        let [name, value] = <[String; 2]>::try_from(fields).unwrap_or_default();
        values.push(VariableValue { name, value });
    }
    Ok(values)
}

/// The list under `key` of the object `config` (none: empty); no other key is allowed.
fn list_of<'c>(config: &'c Value, key: &str) -> Result<&'c [Value], String> {
    let map = match config {
        Value::Object(m) => m,
        // An empty PHP array: what `{}` becomes there.
        Value::Array(a) if a.is_empty() => return Ok(&[]),
        _ => return Err("it must be an object".to_owned()),
    };
    if let Some(other) = map.keys().find(|k| *k != key) {
        return Err(format!("unknown key {other:?} (allowed: {key})"));
    }
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{key} must be a list")),
    }
}

/// The values of `fields` of the object `item`, each a non-empty scalar; no other key is
/// allowed.
fn fields_of(item: &Value, at: &str, fields: &[&str]) -> Result<Vec<String>, String> {
    let map = item
        .as_object()
        .ok_or_else(|| format!("{at} must be an object"))?;
    if let Some(other) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(format!("{at}: unknown key {other:?}"));
    }
    let mut out = Vec::new();
    for field in fields {
        let value = map
            .get(*field)
            .ok_or_else(|| format!("{at}.{field} is missing"))?;
        let text = php_scalar(value).ok_or_else(|| format!("{at}.{field} must be a string"))?;
        if text.is_empty() {
            return Err(format!("{at}.{field} cannot be empty"));
        }
        out.push(text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
