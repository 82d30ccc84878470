//! What every backend checks before it stores a configuration or OAuth credentials (see
//! [`StoredConfiguration`]), and how it stores rows.

use serde_json::Value;

use super::{MAX_ID_BYTES, OAuthCredentials, StorageError, StoredConfiguration, StoredRow};

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
