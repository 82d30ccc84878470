//! Component states in PostgreSQL, with their versions (see the embedded store's
//! `states`). A version check locks the state's row until the commit — made first, as a
//! placeholder without value, for a state that was never written — so that two jobs that
//! started from the same version cannot both commit.

use postgres::{GenericClient, Transaction};
use serde_json::Value;

use crate::storage::sql::{PgRes as Res, to_u64};
use crate::storage::{StateKey, StorageError};

fn row_id(key: &StateKey) -> &str {
    key.row.as_deref().unwrap_or("")
}

/// The stored text of a state (`None`: none) and its version.
pub(super) fn read_state(c: &mut impl GenericClient, key: &StateKey) -> Res<(Option<String>, u64)> {
    let row = c.query_opt(
        "SELECT value, version FROM states WHERE component = $1 AND config = $2
         AND row_id = $3",
        &[&key.component, &key.config, &row_id(key)],
    )?;
    Ok(row.map_or((None, 0), |r| (r.get(0), to_u64(r.get(1)))))
}

/// Locks each state (in a fixed order) and refuses the commit when one is no longer at
/// the version the job started from.
pub(super) fn check_versions(tx: &mut Transaction<'_>, versions: &[(StateKey, u64)]) -> Res<()> {
    let mut sorted: Vec<&(StateKey, u64)> = versions.iter().collect();
    sorted.sort_by(|(a, _), (b, _)| {
        (&a.component, &a.config, row_id(a)).cmp(&(&b.component, &b.config, row_id(b)))
    });
    for (key, expected) in sorted {
        tx.execute(
            "INSERT INTO states (component, config, row_id, value, version, updated_ms)
             VALUES ($1, $2, $3, NULL, 0, 0) ON CONFLICT DO NOTHING",
            &[&key.component, &key.config, &row_id(key)],
        )?;
        let found: i64 = tx
            .query_one(
                "SELECT version FROM states WHERE component = $1 AND config = $2
                 AND row_id = $3 FOR UPDATE",
                &[&key.component, &key.config, &row_id(key)],
            )?
            .get(0);
        if to_u64(found) != *expected {
            return Err(StorageError::StateConflict {
                key: key.to_string(),
                expected: *expected,
                found: to_u64(found),
            }
            .into());
        }
    }
    Ok(())
}

/// Sets or (for `None`) clears each state, in order.
pub(super) fn write_states(
    tx: &mut Transaction<'_>,
    states: &[(StateKey, Option<Value>)],
    now: i64,
) -> Res<()> {
    for (key, value) in states {
        let text = value.as_ref().map(Value::to_string);
        tx.execute(
            "INSERT INTO states (component, config, row_id, value, version, updated_ms)
             VALUES ($1, $2, $3, $4, 1, $5)
             ON CONFLICT (component, config, row_id)
             DO UPDATE SET value = excluded.value, version = states.version + 1,
                updated_ms = excluded.updated_ms",
            &[&key.component, &key.config, &row_id(key), &text, &now],
        )?;
    }
    Ok(())
}
