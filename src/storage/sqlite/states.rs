//! Component states: one JSON value per configuration or configuration row, set and
//! cleared inside `apply`'s transaction, and read back before a job runs.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{Res, SqliteStorage, database};
use crate::storage::{StateKey, StorageError};

pub(super) fn check_state_key(key: &StateKey) -> Result<(), StorageError> {
    let reason = if key.component.is_empty() {
        "the component id is empty"
    } else if key.config.is_empty() {
        "the configuration id is empty"
    } else if key.row.as_deref() == Some("") {
        "the row id is empty"
    } else {
        return Ok(());
    };
    Err(StorageError::Invalid {
        what: format!("state key {key}"),
        reason: reason.into(),
    })
}

/// Sets or (for `None`) clears each state, in order.
pub(super) fn write_states(
    tx: &Transaction<'_>,
    states: &[(StateKey, Option<Value>)],
    now: i64,
) -> Res<()> {
    for (key, value) in states {
        let row = key.row.as_deref().unwrap_or("");
        match value {
            Some(v) => {
                tx.execute(
                    "INSERT INTO states (component, config, row_id, value, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (component, config, row_id)
                     DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                    params![key.component, key.config, row, v.to_string(), now],
                )?;
            }
            None => {
                tx.execute(
                    "DELETE FROM states WHERE component = ?1 AND config = ?2 AND row_id = ?3",
                    params![key.component, key.config, row],
                )?;
            }
        }
    }
    Ok(())
}

impl SqliteStorage {
    pub(super) fn read_state(&self, key: &StateKey) -> Result<Option<Value>, StorageError> {
        check_state_key(key)?;
        let text: Option<String> = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM states WHERE component = ?1 AND config = ?2
                     AND row_id = ?3",
                    params![key.component, key.config, key.row.as_deref().unwrap_or("")],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| database(&self.db_path, e)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::test_fixture::Fixture;
    use crate::storage::{Changes, StateKey, Storage};

    #[test]
    fn states_are_set_replaced_and_cleared() {
        let f = Fixture::new();
        let config = StateKey {
            component: "keboola.ex-test".into(),
            config: "123".into(),
            row: None,
        };
        let row = StateKey {
            row: Some("r1".into()),
            ..config.clone()
        };
        let set = |states: Vec<(StateKey, Option<Value>)>| {
            f.store
                .apply(&Changes {
                    states,
                    ..Changes::default()
                })
                .unwrap();
        };
        assert_eq!(f.store.state(&config).unwrap(), None);
        set(vec![
            (config.clone(), Some(json!({"a": 1}))),
            (row.clone(), Some(json!({"r": [1, 2]}))),
        ]);
        assert_eq!(f.store.state(&config).unwrap(), Some(json!({"a": 1})));
        assert_eq!(f.store.state(&row).unwrap(), Some(json!({"r": [1, 2]})));
        set(vec![(config.clone(), Some(json!({"a": 2})))]);
        assert_eq!(f.store.state(&config).unwrap(), Some(json!({"a": 2})));
        set(vec![(config.clone(), None)]);
        assert_eq!(f.store.state(&config).unwrap(), None);
        assert_eq!(f.store.state(&row).unwrap(), Some(json!({"r": [1, 2]})));

        let bad = StateKey {
            row: Some(String::new()),
            ..config
        };
        assert!(f.store.state(&bad).unwrap_err().is_user_error());
    }
}
