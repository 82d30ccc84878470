//! What a project keeps besides data: its stored configurations (with their rows), which a
//! job names by component and id instead of carrying them, and the OAuth credentials a
//! configuration's `authorization.oauth_api.id` names. Both are kept as the operator put
//! them, `#` values already encrypted: storage never sees a secret in the clear.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StorageError;

/// The longest component, configuration, row or credentials id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A stored configuration of a component: what `berth config put` stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConfiguration {
    pub component: String,
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The configuration, as a job file's `configuration` (an object; for
    /// `keboola.variables` and `keboola.shared-code`, what those hold).
    #[serde(default = "empty_object")]
    pub configuration: Value,
    /// Its rows, in order.
    #[serde(default)]
    pub rows: Vec<StoredRow>,
    /// How many times it was put: the first put makes version 1. Set by storage; what a
    /// put is given is ignored.
    #[serde(default)]
    pub version: u64,
    /// When it was last put (unix ms). Set by storage.
    #[serde(default)]
    pub updated_ms: i64,
}

/// A row of a stored configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub is_disabled: bool,
    /// Merged over the configuration's when the row runs (an object).
    #[serde(default = "empty_object")]
    pub configuration: Value,
}

/// OAuth credentials of a component, as `berth oauth put` stored them: what the original's
/// OAuth broker returns (`id`, `authorizedFor`, `creator`, `created`, `#data`,
/// `oauthVersion`, `appKey`, `#appSecret`, …), `#` values encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthCredentials {
    pub component: String,
    pub id: String,
    /// The credentials (an object).
    pub credentials: Value,
    /// When they were last put (unix ms). Set by storage.
    #[serde(default)]
    pub updated_ms: i64,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Refuses a component id that is not 1-128 of `A-Z a-z 0-9 . - _`.
pub(crate) fn check_component(what: &str, component: &str) -> Result<(), StorageError> {
    let plain = component
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if component.is_empty() || component.len() > MAX_ID_BYTES || !plain {
        return Err(StorageError::Invalid {
            what: format!("{what} {component:?}"),
            reason: format!(
                "a component id has 1 to {MAX_ID_BYTES} of A-Z a-z 0-9 . - _ (e.g. keboola.ex-db)"
            ),
        });
    }
    Ok(())
}

/// Refuses an id (of a configuration, row or credentials) that is empty, longer than
/// [`MAX_ID_BYTES`], or holds `/` or NUL: what a job file's `config_id` may not be either.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), StorageError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.contains(['/', '\0']) {
        return Err(StorageError::Invalid {
            what: format!("{what} {id:?}"),
            reason: format!("an id has 1 to {MAX_ID_BYTES} bytes and no '/'"),
        });
    }
    Ok(())
}

fn check_object(what: &str, value: &Value) -> Result<(), StorageError> {
    if !value.is_object() {
        return Err(StorageError::Invalid {
            what: what.to_owned(),
            reason: "it must be a JSON object".into(),
        });
    }
    Ok(())
}

/// What every backend refuses before it stores a configuration.
pub(crate) fn check_configuration(config: &StoredConfiguration) -> Result<(), StorageError> {
    check_component("component", &config.component)?;
    check_id("configuration id", &config.id)?;
    let at = format!("configuration {}/{}", config.component, config.id);
    check_object(&at, &config.configuration)?;
    let mut seen = std::collections::HashSet::new();
    for row in &config.rows {
        check_id(&format!("row id of {at}"), &row.id)?;
        if !seen.insert(&row.id) {
            return Err(StorageError::Invalid {
                what: format!("row {:?} of {at}", row.id),
                reason: "it appears twice".into(),
            });
        }
        check_object(&format!("row {} of {at}", row.id), &row.configuration)?;
    }
    Ok(())
}

/// What every backend refuses before it stores OAuth credentials.
pub(crate) fn check_credentials(creds: &OAuthCredentials) -> Result<(), StorageError> {
    check_component("component", &creds.component)?;
    check_id("credentials id", &creds.id)?;
    check_object(
        &format!("credentials {}/{}", creds.component, creds.id),
        &creds.credentials,
    )
}

/// The text a backend stores for `rows`.
pub(crate) fn rows_json(rows: &[StoredRow]) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())
}
