//! The registry of storage tables: how a table's id, columns, key and metadata are found,
//! and how its columns are named in SQL (`c<pos>` of `t<tid>`). Loads, exports and the
//! table listings all read a table through here.

use std::collections::BTreeMap;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::storage::sql::{SqliteRes as Res, parse_list, to_u64};
use crate::storage::{FilterOperator, Metadata, Provenance, StorageError, TableId, TableInfo};

/// A table's registry entry, as loads and exports need it.
#[derive(Debug)]
pub(super) struct TableRow {
    pub(super) tid: i64,
    /// Position `i` is column `c<i+1>`.
    pub(super) columns: Vec<String>,
    pub(super) primary_key: Vec<String>,
    pub(super) rows: u64,
}

pub(super) fn find_table(conn: &Connection, id: &TableId) -> Res<Option<TableRow>> {
    let found = conn
        .query_row(
            "SELECT tid, primary_key, row_count FROM tables
             WHERE stage = ?1 AND bucket = ?2 AND name = ?3",
            params![id.stage().as_str(), id.bucket(), id.table()],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((tid, pk, rows)) = found else {
        return Ok(None);
    };
    Ok(Some(TableRow {
        tid,
        columns: table_columns(conn, tid)?,
        primary_key: parse_list(&pk),
        rows: to_u64(rows),
    }))
}

fn table_columns(conn: &Connection, tid: i64) -> Res<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM columns WHERE tid = ?1 ORDER BY pos")?;
    let names = stmt
        .query_map([tid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

/// Every table, sorted by id.
pub(super) fn list_tables(conn: &Connection) -> Res<Vec<TableInfo>> {
    let tids: Vec<i64> = conn
        .prepare("SELECT tid FROM tables ORDER BY stage, bucket, name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tids.into_iter()
        .map(|tid| read_table_info(conn, tid))
        .collect()
}

pub(super) fn describe_table(conn: &Connection, id: &TableId) -> Res<Option<TableInfo>> {
    match find_table(conn, id)? {
        Some(t) => Ok(Some(read_table_info(conn, t.tid)?)),
        None => Ok(None),
    }
}

fn read_table_info(conn: &Connection, tid: i64) -> Res<TableInfo> {
    let mut info = conn.query_row(
        "SELECT stage, bucket, name, primary_key, row_count, created_ms, last_change_ms,
                last_import_ms, description, created_component, created_config, created_row,
                updated_component, updated_config, updated_row
         FROM tables WHERE tid = ?1",
        [tid],
        table_info_of_row,
    )?;
    info.columns = table_columns(conn, tid)?;
    read_metadata(conn, tid, &mut info)?;
    Ok(info)
}

/// A registry row as a [`TableInfo`], still without columns and metadata.
fn table_info_of_row(r: &Row<'_>) -> rusqlite::Result<TableInfo> {
    let id = format!(
        "{}.{}.{}",
        r.get_ref(0)?.as_str()?,
        r.get_ref(1)?.as_str()?,
        r.get_ref(2)?.as_str()?
    );
    let id: TableId = id.parse().map_err(|e: StorageError| {
        rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e))
    })?;
    Ok(TableInfo {
        id,
        columns: Vec::new(),
        primary_key: parse_list(r.get_ref(3)?.as_str()?),
        created_ms: r.get(5)?,
        last_change_ms: r.get(6)?,
        last_import_ms: r.get(7)?,
        rows: to_u64(r.get(4)?),
        metadata: Vec::new(),
        column_metadata: BTreeMap::new(),
        description: r.get(8)?,
        created_by: Provenance {
            component: r.get(9)?,
            config: r.get(10)?,
            row: r.get(11)?,
        },
        last_updated_by: Provenance {
            component: r.get(12)?,
            config: r.get(13)?,
            row: r.get(14)?,
        },
    })
}

/// Adds the table's own metadata and its columns' to `info`, each in the order set.
fn read_metadata(conn: &Connection, tid: i64, info: &mut TableInfo) -> Res<()> {
    let mut stmt = conn.prepare(
        "SELECT id, col, key, value, provider, timestamp_ms FROM metadata
         WHERE tid = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([tid])?;
    while let Some(r) = rows.next()? {
        let col: String = r.get(1)?;
        let m = Metadata {
            id: to_u64(r.get(0)?),
            key: r.get(2)?,
            value: r.get(3)?,
            provider: r.get(4)?,
            timestamp_ms: r.get(5)?,
        };
        if col.is_empty() {
            info.metadata.push(m);
        } else {
            info.column_metadata.entry(col).or_default().push(m);
        }
    }
    Ok(())
}

/// The condition of a [`WhereFilter`](crate::storage::WhereFilter) on column `c<pos>`:
/// its values are bound, as one JSON list, to parameter `?<param>`.
pub(super) fn filter_sql(pos: usize, operator: FilterOperator, param: usize) -> String {
    let op = match operator {
        FilterOperator::Eq => "IN",
        FilterOperator::Ne => "NOT IN",
    };
    format!("c{pos} {op} (SELECT value FROM json_each(?{param}))")
}

#[cfg(test)]
mod tests {
    use super::super::test_fixture::{Fixture, strings};
    use super::*;
    use crate::storage::Storage;

    #[test]
    fn tables_are_listed_by_id() {
        let f = Fixture::new();
        for t in ["out.c-b.x", "in.c-b.y", "in.c-a.z"] {
            f.full(t, "a\n1\n");
        }
        let ids: Vec<String> = f
            .store
            .tables()
            .unwrap()
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(ids, strings(&["in.c-a.z", "in.c-b.y", "out.c-b.x"]));
    }

    #[test]
    fn filters_compare_one_column_with_a_bound_list() {
        assert_eq!(
            filter_sql(3, FilterOperator::Eq, 1),
            "c3 IN (SELECT value FROM json_each(?1))"
        );
        assert_eq!(
            filter_sql(1, FilterOperator::Ne, 4),
            "c1 NOT IN (SELECT value FROM json_each(?4))"
        );
    }
}
