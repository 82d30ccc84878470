//! The schema berth keeps in `project.sqlite`: the registry of tables, columns and
//! metadata, files, states and job records, and the version that says which schema a
//! database has. Opening creates it in an empty database, migrates an older one, and
//! refuses a newer one.
//!
//! Version 2 (issue 15): file contents are named by their digest, so one content may back
//! several files (no longer unique); states have a version and a cleared state is kept as
//! a row without value (so that a version never comes back); job records name their host.
//!
//! Version 3 (issue 18): stored configurations and OAuth credentials.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::storage::StorageError;
use crate::storage::sql::SqliteRes as Res;

const SCHEMA_VERSION: i64 = 3;

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
    content TEXT NOT NULL,              -- the blob's key (its sha256)
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

-- `row_id` is '' for a configuration's own state; `value` NULL: cleared.
CREATE TABLE states (
    component TEXT NOT NULL,
    config TEXT NOT NULL,
    row_id TEXT NOT NULL,
    value TEXT,
    version INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (component, config, row_id)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    config TEXT,
    status TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX jobs_by_start ON jobs (started_ms);
";

/// Version 3's additions, in a new store and in a migrated one alike.
const CONFIGURATIONS: &str = "
-- `configuration` and `rows` are JSON texts; `#` values in them are ciphertexts.
CREATE TABLE configurations (
    component TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    configuration TEXT NOT NULL,
    rows TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (component, id)
) WITHOUT ROWID;

CREATE TABLE oauth_credentials (
    component TEXT NOT NULL,
    id TEXT NOT NULL,
    credentials TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (component, id)
) WITHOUT ROWID;
";

/// From version 1: `files.content` loses its UNIQUE (a table rebuild, SQLite cannot drop
/// a constraint), states gain a version (1: each was written once at least) and may be
/// cleared to no value, jobs gain a host.
const MIGRATE_1_TO_2: &str = "
CREATE TABLE files_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    is_permanent INTEGER NOT NULL,
    is_public INTEGER NOT NULL,
    is_encrypted INTEGER NOT NULL
);
INSERT INTO files_v2 SELECT id, name, content, size_bytes, created_ms, is_permanent,
    is_public, is_encrypted FROM files;
DROP TABLE files;
ALTER TABLE files_v2 RENAME TO files;

CREATE TABLE states_v2 (
    component TEXT NOT NULL,
    config TEXT NOT NULL,
    row_id TEXT NOT NULL,
    value TEXT,
    version INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (component, config, row_id)
) WITHOUT ROWID;
INSERT INTO states_v2 SELECT component, config, row_id, value, 1, updated_ms FROM states;
DROP TABLE states;
ALTER TABLE states_v2 RENAME TO states;

ALTER TABLE jobs ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_by_start ON jobs (started_ms);
";

/// Creates the schema in an empty database, migrates an older one; refuses a database of
/// a newer version.
pub(super) fn ensure(conn: &mut Connection, db_path: &Path) -> Res<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // A migration rebuilds tables that others reference: SQLite checks foreign keys only
    // outside a transaction's DROP when this is off (its documented way to alter a table).
    conn.pragma_update(None, "foreign_keys", false)?;
    let migrated = migrate(conn, db_path);
    conn.pragma_update(None, "foreign_keys", true)?;
    migrated
}

fn migrate(conn: &mut Connection, db_path: &Path) -> Res<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another berth may have created or migrated the schema while this one waited.
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(CONFIGURATIONS)?;
        }
        1 | 2 => {
            if version == 1 {
                tx.execute_batch(MIGRATE_1_TO_2)?;
            }
            tx.execute_batch(CONFIGURATIONS)?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(StorageError::Database {
                    path: db_path.to_owned(),
                    source: format!("migration broke a reference from {table}").into(),
                }
                .into());
            }
            tracing::info!(
                "migrated {} to schema version {SCHEMA_VERSION}",
                db_path.display()
            );
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
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
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

    /// What version 1 had where version 2 differs (the rest is the same).
    const VERSION_1: &str = "
        CREATE TABLE files (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
            content TEXT NOT NULL UNIQUE, size_bytes INTEGER NOT NULL,
            created_ms INTEGER NOT NULL, is_permanent INTEGER NOT NULL,
            is_public INTEGER NOT NULL, is_encrypted INTEGER NOT NULL);
        CREATE TABLE file_tags (file_id INTEGER NOT NULL REFERENCES files (id),
            tag TEXT NOT NULL, UNIQUE (file_id, tag));
        CREATE TABLE states (component TEXT NOT NULL, config TEXT NOT NULL,
            row_id TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
            PRIMARY KEY (component, config, row_id)) WITHOUT ROWID;
        CREATE TABLE jobs (id TEXT PRIMARY KEY, component TEXT NOT NULL, config TEXT,
            status TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL,
            result TEXT NOT NULL);
        INSERT INTO files VALUES (7, 'old.txt', '0123456789abcdef0123456789abcdef', 3, 1, 1, 0, 0);
        INSERT INTO file_tags VALUES (7, 'kept');
        INSERT INTO states VALUES ('c', '1', '', '{\"n\":1}', 1);
        INSERT INTO jobs VALUES ('j', 'c', '1', 'success', 1, 2, '{}');
        PRAGMA user_version = 1;
    ";

    #[test]
    fn a_version_1_store_is_migrated_and_keeps_its_files_states_and_jobs() {
        use crate::storage::{FileQuery, StateKey};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("storage");
        std::fs::create_dir_all(root.join("files")).unwrap();
        std::fs::write(root.join("files/0123456789abcdef0123456789abcdef"), b"old").unwrap();
        let conn = rusqlite::Connection::open(root.join("project.sqlite")).unwrap();
        let rest: String = super::SCHEMA
            .split("-- AUTOINCREMENT")
            .next()
            .unwrap()
            .to_owned();
        conn.execute_batch(&rest).unwrap();
        conn.execute_batch(VERSION_1).unwrap();
        drop(conn);

        let store = SqliteStorage::open(&root).unwrap();
        let version: i64 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, super::SCHEMA_VERSION);
        let files = store.files(&FileQuery::default()).unwrap();
        assert_eq!(
            (files[0].id, files[0].tags.clone()),
            (7, vec!["kept".to_owned()])
        );
        let mut content = String::new();
        std::io::Read::read_to_string(&mut store.open_file(7).unwrap(), &mut content).unwrap();
        assert_eq!(content, "old");
        let key = StateKey {
            component: "c".into(),
            config: "1".into(),
            row: None,
        };
        let state = store.read_state(&key).unwrap();
        assert_eq!(
            (state.value, state.version),
            (Some(serde_json::json!({"n": 1})), 1)
        );
        assert_eq!(store.job("j").unwrap().unwrap().host, "");
    }
}
