//! Stored configurations and OAuth credentials (see [`crate::storage::StoredConfiguration`]):
//! one row each, their JSON as text, put and removed in a transaction of their own.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::storage::configs::rows_json;
use crate::storage::sql::{Fail, SqliteRes as Res, to_u64};
use crate::storage::{OAuthCredentials, StoredConfiguration};

const CONFIG_COLUMNS: &str = "component, id, name, configuration, rows, version, updated_ms";

/// A stored JSON text that does not parse: the database was written by something else.
fn corrupt(e: serde_json::Error) -> Fail<rusqlite::Error> {
    Fail::Db(rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(e),
    ))
}

/// The raw columns of a configuration row; its JSON is parsed by [`config_of`].
type ConfigRow = (String, String, String, String, String, i64, i64);

fn config_row(r: &Row<'_>) -> rusqlite::Result<ConfigRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn config_of(row: ConfigRow) -> Res<StoredConfiguration> {
    let (component, id, name, configuration, rows, version, updated_ms) = row;
    Ok(StoredConfiguration {
        component,
        id,
        name,
        configuration: serde_json::from_str(&configuration).map_err(corrupt)?,
        rows: serde_json::from_str(&rows).map_err(corrupt)?,
        version: to_u64(version),
        updated_ms,
    })
}

pub(super) fn find_configuration(
    conn: &Connection,
    component: &str,
    id: &str,
) -> Res<Option<StoredConfiguration>> {
    let row = conn
        .query_row(
            &format!(
                "SELECT {CONFIG_COLUMNS} FROM configurations WHERE component = ?1 AND id = ?2"
            ),
            params![component, id],
            config_row,
        )
        .optional()?;
    row.map(config_of).transpose()
}

pub(super) fn list_configurations(
    conn: &Connection,
    component: Option<&str>,
) -> Res<Vec<StoredConfiguration>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {CONFIG_COLUMNS} FROM configurations WHERE ?1 IS NULL OR component = ?1
         ORDER BY component, id"
    ))?;
    let rows = stmt
        .query_map(params![component], config_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(config_of).collect()
}

/// Inserts or replaces a configuration, one version up; returns it as stored.
pub(super) fn put_configuration(
    tx: &Transaction<'_>,
    config: &StoredConfiguration,
) -> Res<StoredConfiguration> {
    let now = crate::util::unix_ms();
    let version: i64 = tx.query_row(
        "INSERT INTO configurations (component, id, name, configuration, rows, version,
            updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
         ON CONFLICT (component, id) DO UPDATE SET name = excluded.name,
            configuration = excluded.configuration, rows = excluded.rows,
            version = version + 1, updated_ms = excluded.updated_ms
         RETURNING version",
        params![
            config.component,
            config.id,
            config.name,
            config.configuration.to_string(),
            rows_json(&config.rows),
            now
        ],
        |r| r.get(0),
    )?;
    Ok(StoredConfiguration {
        version: to_u64(version),
        updated_ms: now,
        ..config.clone()
    })
}

pub(super) fn remove(tx: &Transaction<'_>, table: Table, component: &str, id: &str) -> Res<bool> {
    let sql = match table {
        Table::Configurations => "DELETE FROM configurations WHERE component = ?1 AND id = ?2",
        Table::OAuth => "DELETE FROM oauth_credentials WHERE component = ?1 AND id = ?2",
    };
    Ok(tx.execute(sql, params![component, id])? > 0)
}

/// Which of the two tables a removal is from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Configurations,
    OAuth,
}

fn creds_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn creds_of(row: (String, String, String, i64)) -> Res<OAuthCredentials> {
    let (component, id, credentials, updated_ms) = row;
    Ok(OAuthCredentials {
        component,
        id,
        credentials: serde_json::from_str(&credentials).map_err(corrupt)?,
        updated_ms,
    })
}

pub(super) fn find_credentials(
    conn: &Connection,
    component: &str,
    id: &str,
) -> Res<Option<OAuthCredentials>> {
    let row = conn
        .query_row(
            "SELECT component, id, credentials, updated_ms FROM oauth_credentials
             WHERE component = ?1 AND id = ?2",
            params![component, id],
            creds_row,
        )
        .optional()?;
    row.map(creds_of).transpose()
}

pub(super) fn list_credentials(
    conn: &Connection,
    component: Option<&str>,
) -> Res<Vec<OAuthCredentials>> {
    let mut stmt = conn.prepare(
        "SELECT component, id, credentials, updated_ms FROM oauth_credentials
         WHERE ?1 IS NULL OR component = ?1 ORDER BY component, id",
    )?;
    let rows = stmt
        .query_map(params![component], creds_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(creds_of).collect()
}

pub(super) fn put_credentials(
    tx: &Transaction<'_>,
    creds: &OAuthCredentials,
) -> Res<OAuthCredentials> {
    let now = crate::util::unix_ms();
    tx.execute(
        "INSERT INTO oauth_credentials (component, id, credentials, updated_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (component, id) DO UPDATE SET credentials = excluded.credentials,
            updated_ms = excluded.updated_ms",
        params![
            creds.component,
            creds.id,
            creds.credentials.to_string(),
            now
        ],
    )?;
    Ok(OAuthCredentials {
        updated_ms: now,
        ..creds.clone()
    })
}
