//! The schema berth keeps in `project.sqlite`: the registry of tables, columns and
//! metadata, files, states and job records, and the version that says which schema a
//! database has. Opening creates it in an empty database and refuses a newer one.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::Res;
use crate::storage::StorageError;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('last_commit_ms', 0);

CREATE TABLE tables (
    tid INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    bucket TEXT NOT NULL,
    name TEXT NOT NULL,
    primary_key TEXT NOT NULL,          -- JSON array of column names
    row_count INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_change_ms INTEGER NOT NULL,
    last_import_ms INTEGER NOT NULL,
    description TEXT,
    created_component TEXT NOT NULL,
    created_config TEXT,
    created_row TEXT,
    updated_component TEXT NOT NULL,
    updated_config TEXT,
    updated_row TEXT,
    UNIQUE (stage, bucket, name)
);

-- Column `pos` of table `tid` is `c<pos>` in `t<tid>`.
CREATE TABLE columns (
    tid INTEGER NOT NULL REFERENCES tables (tid),
    pos INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (tid, pos),
    UNIQUE (tid, name)
) WITHOUT ROWID;

-- `col` is '' for the table's own metadata (no column has an empty name).
CREATE TABLE metadata (
    id INTEGER PRIMARY KEY,
    tid INTEGER NOT NULL REFERENCES tables (tid),
    col TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    provider TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    UNIQUE (tid, col, key)
);

-- AUTOINCREMENT: ids never come back, so `since_id` means 'uploaded later'.
CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    content TEXT NOT NULL UNIQUE,       -- the name under files/
    size_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    is_permanent INTEGER NOT NULL,
    is_public INTEGER NOT NULL,
    is_encrypted INTEGER NOT NULL
);

CREATE TABLE file_tags (
    file_id INTEGER NOT NULL REFERENCES files (id),
    tag TEXT NOT NULL,
    UNIQUE (file_id, tag)
);
CREATE INDEX file_tags_by_tag ON file_tags (tag, file_id);

-- `row_id` is '' for a configuration's own state.
CREATE TABLE states (
    component TEXT NOT NULL,
    config TEXT NOT NULL,
    row_id TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (component, config, row_id)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    config TEXT,
    status TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    result TEXT NOT NULL
);
";

/// Creates the schema in an empty database; refuses a database of another version.
pub(super) fn ensure(conn: &mut Connection, db_path: &Path) -> Res<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another berth may have created the schema while this one waited for the lock.
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        v if v == SCHEMA_VERSION => {}
        found => {
            return Err(StorageError::Schema {
                path: db_path.to_owned(),
                found,
                known: SCHEMA_VERSION,
            }
            .into());
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStorage;
    use super::super::test_fixture::{Fixture, T};
    use crate::storage::Storage;

    #[test]
    fn reopening_keeps_everything_and_newer_schemas_are_refused() {
        let f = Fixture::new();
        f.full(T, "id\n1\n");
        let root = f.dir.path().join("storage");
        drop(f.store);
        let store = SqliteStorage::open(&root).unwrap();
        assert_eq!(store.tables().unwrap().len(), 1);
        store
            .lock()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(store);
        let e = SqliteStorage::open(&root).unwrap_err();
        assert!(!e.is_user_error());
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }
}
