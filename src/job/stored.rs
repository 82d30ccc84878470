//! What a job finds in the project store besides data: the stored configuration (and its
//! rows) a job names by `config_id` instead of carrying it, read before anything runs; and
//! the OAuth credentials a configuration's `authorization.oauth_api.id` names, put in
//! `authorization.oauth_api.credentials` as the original's OAuth broker puts them (its
//! `#` values are decrypted with the rest of the configuration, and masked).

use serde_json::{Map, Value};

use super::lazy_storage::LazyStorage;
use super::{JobError, Settings};
use crate::contract::mapping::Row;
use crate::contract::{Configuration, JobFile};
use crate::storage::{Storage, StoredConfiguration};

/// When `job` names a stored configuration and carries none of its own: puts the stored
/// one, with its rows and version, in its place. A configuration that is not stored is the
/// user's error, naming component and id.
pub fn load_stored_configuration(settings: &Settings, job: &mut JobFile) -> Result<(), JobError> {
    if !job.runs_stored_configuration() {
        return Ok(());
    }
    let mut storage = LazyStorage::new(settings.store.clone());
    use_configuration(storage.get()?, job)
}

fn use_configuration(store: &dyn Storage, job: &mut JobFile) -> Result<(), JobError> {
    let component = job.component.id.clone();
    let id = job.config_id.clone().unwrap_or_default();
    let Some(stored) = store.configuration(&component, &id)? else {
        return Err(JobError::NoStoredConfiguration { component, id });
    };
    let invalid = |message: String| JobError::StoredConfiguration {
        component: component.clone(),
        id: id.clone(),
        message,
    };
    let (configuration, rows) = contract_of(&stored).map_err(invalid)?;
    job.use_stored(configuration, rows, stored.version)
        .map_err(invalid)
}

/// A stored configuration as a job file's `configuration` and `rows`.
fn contract_of(stored: &StoredConfiguration) -> Result<(Configuration, Vec<Row>), String> {
    let configuration = serde_path_to_error::deserialize(&stored.configuration)
        .map_err(|e| format!("configuration.{}: {}", e.path(), e.inner()))?;
    let rows = (stored.rows.iter())
        .map(|r| Row {
            id: r.id.clone(),
            is_disabled: r.is_disabled,
            configuration: r.configuration.as_object().cloned().unwrap_or_default(),
        })
        .collect();
    Ok((configuration, rows))
}

/// Fills `authorization.oauth_api.credentials` of each configuration to run (rows merged
/// already, so a row's `oauth_api.id` is its own) as the original does: credentials given
/// inline pass through; with only an `id`, the stored credentials of `component` go in,
/// as stored (`#` values encrypted); an `id` nothing is stored under is the user's error.
pub(super) fn fill_oauth_credentials(
    storage: &mut LazyStorage,
    component: &str,
    configurations: &mut [(Option<String>, Configuration)],
) -> Result<(), JobError> {
    for (row, config) in configurations {
        let Some(Value::Object(api)) =
            (config.authorization.as_mut()).and_then(|a| a.get_mut("oauth_api"))
        else {
            continue;
        };
        let at = match row {
            Some(r) => format!("row {r}: configuration.authorization.oauth_api"),
            None => "configuration.authorization.oauth_api".to_owned(),
        };
        let Some(id) = wanted_credentials(api, &at)? else {
            continue;
        };
        let Some(stored) = storage.get()?.oauth_credentials(component, &id)? else {
            return Err(JobError::NoOAuthCredentials {
                at,
                component: component.to_owned(),
                id,
            });
        };
        api.insert("credentials".to_owned(), stored.credentials);
    }
    Ok(())
}

/// The id of the credentials `oauth_api` wants from the store: none when it has
/// credentials (not empty) or no id.
fn wanted_credentials(api: &Map<String, Value>, at: &str) -> Result<Option<String>, JobError> {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    };
    if api.get("credentials").is_some_and(|c| !empty(c)) {
        return Ok(None);
    }
    match api.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(JobError::Contract(format!(
            "{at}.id: the id of OAuth credentials is a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inline_credentials_pass_through_and_an_id_alone_asks_the_store() {
        let api = |v: Value| v.as_object().cloned().unwrap();
        let w = |v: Value| wanted_credentials(&api(v), "x").unwrap();
        assert_eq!(w(json!({"id": "a", "credentials": {"k": 1}})), None);
        assert_eq!(w(json!({"id": "a", "credentials": {}})), Some("a".into()));
        assert_eq!(w(json!({"id": 7, "version": 3})), Some("7".into()));
        assert_eq!(w(json!({"version": 3})), None);
        assert_eq!(w(json!({"id": ""})), None);
        let e = wanted_credentials(&api(json!({"id": [1]})), "x").unwrap_err();
        assert!(
            e.to_string().contains("x.id: the id of OAuth credentials"),
            "{e}"
        );
    }
}
