//! Stored configurations and OAuth credentials in PostgreSQL (see the embedded store's
//! `configs`): one row each, their JSON as text.

use postgres::{GenericClient, Row, Transaction};

use crate::storage::configs::rows_json;
use crate::storage::sql::{Fail, PgRes as Res, to_u64};
use crate::storage::{OAuthCredentials, StorageError, StoredConfiguration};

const CONFIG_COLUMNS: &str = "component, id, name, configuration, rows, version, updated_ms";

/// A stored JSON text that does not parse: the database was written by something else.
fn corrupt(what: String, e: serde_json::Error) -> Fail<postgres::Error> {
    Fail::Storage(StorageError::Remote {
        what,
        source: Box::new(e),
    })
}

fn config_of(r: &Row) -> Res<StoredConfiguration> {
    let component: String = r.get(0);
    let id: String = r.get(1);
    let what = || format!("stored configuration {component}/{id}");
    let configuration: &str = r.get(3);
    let rows: &str = r.get(4);
    Ok(StoredConfiguration {
        name: r.get(2),
        configuration: serde_json::from_str(configuration).map_err(|e| corrupt(what(), e))?,
        rows: serde_json::from_str(rows).map_err(|e| corrupt(what(), e))?,
        version: to_u64(r.get(5)),
        updated_ms: r.get(6),
        component,
        id,
    })
}

pub(super) fn find_configuration(
    c: &mut impl GenericClient,
    component: &str,
    id: &str,
) -> Res<Option<StoredConfiguration>> {
    let row = c.query_opt(
        &format!("SELECT {CONFIG_COLUMNS} FROM configurations WHERE component = $1 AND id = $2"),
        &[&component, &id],
    )?;
    row.as_ref().map(config_of).transpose()
}

pub(super) fn list_configurations(
    c: &mut impl GenericClient,
    component: Option<&str>,
) -> Res<Vec<StoredConfiguration>> {
    let rows = c.query(
        &format!(
            "SELECT {CONFIG_COLUMNS} FROM configurations
             WHERE $1::text IS NULL OR component = $1 ORDER BY component, id"
        ),
        &[&component],
    )?;
    rows.iter().map(config_of).collect()
}

/// Inserts or replaces a configuration, one version up; returns it as stored.
pub(super) fn put_configuration(
    tx: &mut Transaction<'_>,
    config: &StoredConfiguration,
) -> Res<StoredConfiguration> {
    let now = crate::util::unix_ms();
    let version: i64 = tx
        .query_one(
            "INSERT INTO configurations (component, id, name, configuration, rows, version,
                updated_ms)
             VALUES ($1, $2, $3, $4, $5, 1, $6)
             ON CONFLICT (component, id) DO UPDATE SET name = excluded.name,
                configuration = excluded.configuration, rows = excluded.rows,
                version = configurations.version + 1, updated_ms = excluded.updated_ms
             RETURNING version",
            &[
                &config.component,
                &config.id,
                &config.name,
                &config.configuration.to_string(),
                &rows_json(&config.rows),
                &now,
            ],
        )?
        .get(0);
    Ok(StoredConfiguration {
        version: to_u64(version),
        updated_ms: now,
        ..config.clone()
    })
}

/// Which of the two tables a removal is from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Configurations,
    OAuth,
}

pub(super) fn remove(
    tx: &mut Transaction<'_>,
    table: Table,
    component: &str,
    id: &str,
) -> Res<bool> {
    let sql = match table {
        Table::Configurations => "DELETE FROM configurations WHERE component = $1 AND id = $2",
        Table::OAuth => "DELETE FROM oauth_credentials WHERE component = $1 AND id = $2",
    };
    Ok(tx.execute(sql, &[&component, &id])? > 0)
}

fn creds_of(r: &Row) -> Res<OAuthCredentials> {
    let component: String = r.get(0);
    let id: String = r.get(1);
    let text: &str = r.get(2);
    let credentials = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("stored OAuth credentials {component}/{id}"), e))?;
    Ok(OAuthCredentials {
        component,
        id,
        credentials,
        updated_ms: r.get(3),
    })
}

pub(super) fn find_credentials(
    c: &mut impl GenericClient,
    component: &str,
    id: &str,
) -> Res<Option<OAuthCredentials>> {
    let row = c.query_opt(
        "SELECT component, id, credentials, updated_ms FROM oauth_credentials
         WHERE component = $1 AND id = $2",
        &[&component, &id],
    )?;
    row.as_ref().map(creds_of).transpose()
}

pub(super) fn list_credentials(
    c: &mut impl GenericClient,
    component: Option<&str>,
) -> Res<Vec<OAuthCredentials>> {
    let rows = c.query(
        "SELECT component, id, credentials, updated_ms FROM oauth_credentials
         WHERE $1::text IS NULL OR component = $1 ORDER BY component, id",
        &[&component],
    )?;
    rows.iter().map(creds_of).collect()
}

pub(super) fn put_credentials(
    tx: &mut Transaction<'_>,
    creds: &OAuthCredentials,
) -> Res<OAuthCredentials> {
    let now = crate::util::unix_ms();
    tx.execute(
        "INSERT INTO oauth_credentials (component, id, credentials, updated_ms)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (component, id) DO UPDATE SET credentials = excluded.credentials,
            updated_ms = excluded.updated_ms",
        &[
            &creds.component,
            &creds.id,
            &creds.credentials.to_string(),
            &now,
        ],
    )?;
    Ok(OAuthCredentials {
        updated_ms: now,
        ..creds.clone()
    })
}
