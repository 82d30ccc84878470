//! Component states: one JSON value per configuration or configuration row, set and
//! cleared inside `apply`'s transaction, and read back (with its version) before a job
//! runs. A state's version counts its writes; a cleared state keeps its row, without a
//! value, so that a version never comes back.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use crate::storage::sql::{SqliteRes as Res, to_u64};
use crate::storage::{StateKey, StorageError};

/// The stored text of a state (`None`: none) and its version.
pub(super) fn read_state(conn: &Connection, key: &StateKey) -> Res<(Option<String>, u64)> {
    let found: Option<(Option<String>, i64)> = conn
        .query_row(
            "SELECT value, version FROM states WHERE component = ?1 AND config = ?2
             AND row_id = ?3",
            params![key.component, key.config, key.row.as_deref().unwrap_or("")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(found.map_or((None, 0), |(value, version)| (value, to_u64(version))))
}

/// Refuses the commit when a state is no longer at the version the job started from.
pub(super) fn check_versions(tx: &Transaction<'_>, versions: &[(StateKey, u64)]) -> Res<()> {
    for (key, expected) in versions {
        let (_, found) = read_state(tx, key)?;
        if found != *expected {
            return Err(StorageError::StateConflict {
                key: key.to_string(),
                expected: *expected,
                found,
            }
            .into());
        }
    }
    Ok(())
}

/// Sets or (for `None`) clears each state, in order.
pub(super) fn write_states(
    tx: &Transaction<'_>,
    states: &[(StateKey, Option<Value>)],
    now: i64,
) -> Res<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO states (component, config, row_id, value, version, updated_ms)
         VALUES (?1, ?2, ?3, ?4, 1, ?5)
         ON CONFLICT (component, config, row_id)
         DO UPDATE SET value = excluded.value, version = version + 1,
            updated_ms = excluded.updated_ms",
    )?;
    for (key, value) in states {
        let row = key.row.as_deref().unwrap_or("");
        let text = value.as_ref().map(Value::to_string);
        stmt.execute(params![key.component, key.config, row, text, now])?;
    }
    Ok(())
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
            ..config.clone()
        };
        assert!(f.store.state(&bad).unwrap_err().is_user_error());

        // Every write counts, clearing included: a version never comes back.
        let read = f.store.read_state(&config).unwrap();
        assert_eq!((read.value, read.version), (None, 3));
        assert_eq!(f.store.read_state(&row).unwrap().version, 1);
        let never = StateKey {
            config: "never".into(),
            ..config
        };
        assert_eq!(f.store.read_state(&never).unwrap().version, 0);
    }
}
