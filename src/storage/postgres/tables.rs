//! The registry of storage tables in PostgreSQL: how a table's id, columns, key and
//! metadata are found, and the commit time of a change to some tables.

use std::collections::BTreeMap;

use postgres::{GenericClient, Row};

use crate::storage::sql::{PgRes as Res, parse_list, to_u64};
use crate::storage::{Metadata, Provenance, StorageError, TableId, TableInfo};

/// A table's registry entry, as loads and exports need it.
#[derive(Debug)]
pub(super) struct TableRow {
    pub(super) tid: i64,
    /// Position `i` is column `c<i+1>`.
    pub(super) columns: Vec<String>,
    pub(super) primary_key: Vec<String>,
    pub(super) rows: u64,
}

pub(super) fn find_table(c: &mut impl GenericClient, id: &TableId) -> Res<Option<TableRow>> {
    let found = c.query_opt(
        "SELECT tid, primary_key, row_count FROM tables
         WHERE stage = $1 AND bucket = $2 AND name = $3",
        &[&id.stage().as_str(), &id.bucket(), &id.table()],
    )?;
    let Some(row) = found else {
        return Ok(None);
    };
    let tid: i64 = row.get(0);
    Ok(Some(TableRow {
        tid,
        columns: table_columns(c, tid)?,
        primary_key: parse_list(row.get(1)),
        rows: to_u64(row.get(2)),
    }))
}

fn table_columns(c: &mut impl GenericClient, tid: i64) -> Res<Vec<String>> {
    let rows = c.query(
        "SELECT name FROM columns WHERE tid = $1 ORDER BY pos",
        &[&tid],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The commit time of changes to the tables `ids`, whose locks the transaction holds:
/// now, but later than the last change of each, so that for every table change times
/// follow commit order whatever the clocks of the hosts do.
pub(super) fn commit_ms(c: &mut impl GenericClient, ids: &[&TableId]) -> Res<i64> {
    let mut last = 0i64;
    for id in ids {
        let row = c.query_opt(
            "SELECT last_change_ms FROM tables WHERE stage = $1 AND bucket = $2 AND name = $3",
            &[&id.stage().as_str(), &id.bucket(), &id.table()],
        )?;
        if let Some(row) = row {
            last = last.max(row.get(0));
        }
    }
    Ok(crate::util::unix_ms().max(last.saturating_add(1)))
}

/// Every table, sorted by id.
pub(super) fn list_tables(c: &mut impl GenericClient) -> Res<Vec<TableInfo>> {
    let tids: Vec<i64> = c
        .query("SELECT tid FROM tables ORDER BY stage, bucket, name", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tids.into_iter()
        .map(|tid| read_table_info(c, tid))
        .collect()
}

pub(super) fn describe_table(c: &mut impl GenericClient, id: &TableId) -> Res<Option<TableInfo>> {
    match find_table(c, id)? {
        Some(t) => Ok(Some(read_table_info(c, t.tid)?)),
        None => Ok(None),
    }
}

fn read_table_info(c: &mut impl GenericClient, tid: i64) -> Res<TableInfo> {
    let row = c.query_one(
        "SELECT stage, bucket, name, primary_key, row_count, created_ms, last_change_ms,
                last_import_ms, description, created_component, created_config, created_row,
                updated_component, updated_config, updated_row
         FROM tables WHERE tid = $1",
        &[&tid],
    )?;
    let mut info = table_info_of_row(&row)?;
    info.columns = table_columns(c, tid)?;
    read_metadata(c, tid, &mut info)?;
    Ok(info)
}

/// A registry row as a [`TableInfo`], still without columns and metadata.
fn table_info_of_row(r: &Row) -> Result<TableInfo, StorageError> {
    let id = format!(
        "{}.{}.{}",
        r.get::<_, &str>(0),
        r.get::<_, &str>(1),
        r.get::<_, &str>(2)
    );
    Ok(TableInfo {
        id: id.parse()?,
        columns: Vec::new(),
        primary_key: parse_list(r.get(3)),
        created_ms: r.get(5),
        last_change_ms: r.get(6),
        last_import_ms: r.get(7),
        rows: to_u64(r.get(4)),
        metadata: Vec::new(),
        column_metadata: BTreeMap::new(),
        description: r.get(8),
        created_by: Provenance {
            component: r.get(9),
            config: r.get(10),
            row: r.get(11),
        },
        last_updated_by: Provenance {
            component: r.get(12),
            config: r.get(13),
            row: r.get(14),
        },
    })
}

/// Adds the table's own metadata and its columns' to `info`, each in the order set.
fn read_metadata(c: &mut impl GenericClient, tid: i64, info: &mut TableInfo) -> Res<()> {
    let rows = c.query(
        "SELECT id, col, key, value, provider, timestamp_ms FROM metadata
         WHERE tid = $1 ORDER BY id",
        &[&tid],
    )?;
    for r in rows {
        let col: String = r.get(1);
        let m = Metadata {
            id: to_u64(r.get(0)),
            key: r.get(2),
            value: r.get(3),
            provider: r.get(4),
            timestamp_ms: r.get(5),
        };
        if col.is_empty() {
            info.metadata.push(m);
        } else {
            info.column_metadata.entry(col).or_default().push(m);
        }
    }
    Ok(())
}
