//! berth's schema in PostgreSQL: the registry of tables, columns and metadata, files,
//! states and job records, in the schema `berth`, with the version in `schema_version`.
//! The first berth to connect creates it; several starting at once wait for each other on
//! an advisory lock, and the others find it made. An older one is migrated; a newer one is
//! refused.
//!
//! Version 2 (issue 18): stored configurations and OAuth credentials.

use std::path::PathBuf;

use postgres::Client;

use super::locks::{LOCK_SPACE, SCHEMA_LOCK};
use crate::storage::StorageError;
use crate::storage::sql::PgRes as Res;

const SCHEMA_VERSION: i32 = 2;

/// Table ids sort as bytes (COLLATE "C"), as in the embedded store, whatever the
/// database's locale.
const SCHEMA: &str = r#"
CREATE TABLE schema_version (version integer NOT NULL);

CREATE TABLE tables (
    tid bigserial PRIMARY KEY,
    stage text COLLATE "C" NOT NULL,
    bucket text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    primary_key text NOT NULL,
    row_count bigint NOT NULL,
    created_ms bigint NOT NULL,
    last_change_ms bigint NOT NULL,
    last_import_ms bigint NOT NULL,
    description text,
    created_component text NOT NULL,
    created_config text,
    created_row text,
    updated_component text NOT NULL,
    updated_config text,
    updated_row text,
    UNIQUE (stage, bucket, name)
);

CREATE TABLE columns (
    tid bigint NOT NULL REFERENCES tables (tid),
    pos integer NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (tid, pos),
    UNIQUE (tid, name)
);

CREATE TABLE metadata (
    id bigserial PRIMARY KEY,
    tid bigint NOT NULL REFERENCES tables (tid),
    col text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    provider text NOT NULL,
    timestamp_ms bigint NOT NULL,
    UNIQUE (tid, col, key)
);

CREATE TABLE files (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    content text NOT NULL,
    size_bytes bigint NOT NULL,
    created_ms bigint NOT NULL,
    is_permanent boolean NOT NULL,
    is_public boolean NOT NULL,
    is_encrypted boolean NOT NULL
);

CREATE TABLE file_tags (
    seq bigserial PRIMARY KEY,
    file_id bigint NOT NULL REFERENCES files (id),
    tag text NOT NULL,
    UNIQUE (file_id, tag)
);
CREATE INDEX file_tags_by_tag ON file_tags (tag, file_id);

CREATE TABLE states (
    component text NOT NULL,
    config text NOT NULL,
    row_id text NOT NULL,
    value text,
    version bigint NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (component, config, row_id)
);

CREATE TABLE jobs (
    id text COLLATE "C" PRIMARY KEY,
    component text NOT NULL,
    config text,
    status text NOT NULL,
    host text NOT NULL,
    started_ms bigint NOT NULL,
    finished_ms bigint NOT NULL,
    result text NOT NULL
);
CREATE INDEX jobs_by_start ON jobs (started_ms);
"#;

/// Version 2's additions, in a new schema and in a migrated one alike.
const CONFIGURATIONS: &str = r#"
CREATE TABLE configurations (
    component text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    configuration text NOT NULL,
    rows text NOT NULL,
    version bigint NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (component, id)
);

CREATE TABLE oauth_credentials (
    component text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    credentials text NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (component, id)
);
"#;

/// Creates the schema in a database without it; refuses one of a newer version. Leaves
/// the connection's `search_path` at `berth`.
pub(super) fn ensure(client: &mut Client, shown: &str) -> Res<()> {
    // Quoted identifiers and standard strings: what the SQL berth writes assumes.
    client.batch_execute(
        "SET search_path TO berth; SET standard_conforming_strings TO on; \
         SET client_encoding TO 'UTF8'; SET client_min_messages TO warning",
    )?;
    if version(client)? == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_SPACE, &SCHEMA_LOCK],
    )?;
    tx.batch_execute("CREATE SCHEMA IF NOT EXISTS berth")?;
    // Another berth may have created it while this one waited.
    match version(&mut tx)? {
        None => {
            tx.batch_execute(SCHEMA)?;
            tx.batch_execute(CONFIGURATIONS)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )?;
            tracing::info!("created berth's schema in {shown}");
        }
        Some(1) => {
            tx.batch_execute(CONFIGURATIONS)?;
            tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])?;
            tracing::info!("migrated berth's schema in {shown} to version {SCHEMA_VERSION}");
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(found) => {
            return Err(StorageError::Schema {
                path: PathBuf::from(shown),
                found: i64::from(found),
                known: i64::from(SCHEMA_VERSION),
            }
            .into());
        }
    }
    tx.commit()?;
    Ok(())
}

/// The schema's version, if it has one.
fn version(c: &mut impl postgres::GenericClient) -> Res<Option<i32>> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('berth.schema_version') IS NOT NULL",
            &[],
        )?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = c.query_opt("SELECT max(version) FROM berth.schema_version", &[])?;
    Ok(row.and_then(|r| r.get(0)))
}
