//! Exports: the SQL that selects a table's rows for an [`ExportQuery`], and the CSV
//! they are streamed out as.

use std::io::Write;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Rows};

use super::tables::{TableRow, filter_sql, find_table};
use crate::storage::check::{no_such_column, positions, select_columns};
use crate::storage::csv_out::CsvOut;
use crate::storage::sql::{SqliteRes as Res, json_list, to_i64};
use crate::storage::{ExportQuery, StorageError, TableId, WhereFilter};

/// Writes the selected rows of table `id` to `out` as CSV; returns how many.
pub(super) fn export_table(
    conn: &Connection,
    id: &TableId,
    query: &ExportQuery,
    out: &mut dyn Write,
) -> Res<u64> {
    let table = find_table(conn, id)?.ok_or_else(|| StorageError::NoSuchTable(id.clone()))?;
    let (names, selected) = select_columns(id, &table.columns, query)?;
    let (sql, args) = select_sql(id, &table, query, &selected)?;
    let mut csv = CsvOut::new(id, out, &names)?;
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query(rusqlite::params_from_iter(args))?;
    write_rows(rows, selected.len(), &mut csv)?;
    Ok(csv.finish()?)
}

/// The SELECT of the columns at `selected` in the rows `query` asks for, in the order
/// they were first loaded, and the values bound to its parameters.
fn select_sql(
    id: &TableId,
    table: &TableRow,
    query: &ExportQuery,
    selected: &[usize],
) -> Result<(String, Vec<Value>), StorageError> {
    let cols: Vec<String> = selected.iter().map(|p| format!("c{p}")).collect();
    let mut sql = format!("SELECT {} FROM t{} WHERE 1", cols.join(", "), table.tid);
    let mut args: Vec<Value> = Vec::new();
    if let Some(WhereFilter {
        column,
        values,
        operator,
    }) = &query.filter
    {
        let pos = positions(&table.columns, std::slice::from_ref(column))
            .map_err(|c| no_such_column(id, c))?[0];
        args.push(json_list(values).into());
        sql.push_str(&format!(" AND {}", filter_sql(pos, *operator, args.len())));
    }
    if let Some(since) = query.changed_since_ms {
        args.push(since.into());
        sql.push_str(&format!(" AND _changed >= ?{}", args.len()));
    }
    sql.push_str(" ORDER BY rowid");
    if let Some(limit) = query.limit {
        args.push(to_i64(limit).into());
        sql.push_str(&format!(" LIMIT ?{}", args.len()));
    }
    Ok((sql, args))
}

/// Writes each row's first `width` values as one CSV record.
fn write_rows(mut rows: Rows<'_>, width: usize, csv: &mut CsvOut<'_>) -> Res<()> {
    while let Some(row) = rows.next()? {
        for i in 0..width {
            let field = match row.get_ref(i)? {
                ValueRef::Text(t) | ValueRef::Blob(t) => t,
                _ => b"",
            };
            csv.field(field)?;
        }
        csv.end_row()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_fixture::{Fixture, T, id, strings};
    use crate::storage::{ExportQuery, FilterOperator, Storage, WhereFilter};

    /// A table loaded twice, and the two commit times: rows 1-4 at the first, rows 2
    /// (replaced) and 5 at the second.
    fn orders() -> (Fixture, i64, i64) {
        let f = Fixture::new();
        f.full(
            T,
            "id,city,v\n1,Prague,a\n2,Brno,b\n3,Prague,c\n4,Ostrava,d\n",
        );
        let t1 = f.info(T).last_import_ms;
        let mut load = f.load(T, "id,city,v\n2,Brno,b2\n5,Plzen,e\n");
        load.incremental = true;
        load.primary_key = strings(&["id"]);
        let t2 = f.apply(vec![load]).unwrap().committed_ms;
        assert!(t2 > t1);
        (f, t1, t2)
    }

    fn q(columns: Option<&[&str]>, filter: Option<(&str, &[&str], FilterOperator)>) -> ExportQuery {
        ExportQuery {
            columns: columns.map(strings),
            filter: filter.map(|(column, values, operator)| WhereFilter {
                column: column.into(),
                values: strings(values),
                operator,
            }),
            ..ExportQuery::default()
        }
    }

    #[test]
    fn export_selects_columns_and_filters_rows() {
        let (f, _, _) = orders();
        assert_eq!(
            f.export(T, &q(Some(&["v", "id"]), None)),
            "v,id\na,1\nb2,2\nc,3\nd,4\ne,5\n"
        );
        assert_eq!(
            f.export(
                T,
                &q(
                    Some(&["id"]),
                    Some(("city", &["Prague", "Plzen"], FilterOperator::Eq))
                )
            ),
            "id\n1\n3\n5\n"
        );
        assert_eq!(
            f.export(
                T,
                &q(
                    Some(&["id"]),
                    Some(("city", &["Prague"], FilterOperator::Ne))
                )
            ),
            "id\n2\n4\n5\n"
        );
        assert_eq!(
            f.export(T, &q(None, Some(("city", &[], FilterOperator::Eq)))),
            "id,city,v\n"
        );
    }

    #[test]
    fn export_of_rows_changed_since_with_a_limit() {
        let (f, t1, t2) = orders();
        let since = ExportQuery {
            changed_since_ms: Some(t2),
            ..ExportQuery::default()
        };
        assert_eq!(f.export(T, &since), "id,city,v\n2,Brno,b2\n5,Plzen,e\n");
        let since = ExportQuery {
            changed_since_ms: Some(t1),
            limit: Some(2),
            columns: Some(strings(&["id"])),
            ..ExportQuery::default()
        };
        let mut out = Vec::new();
        assert_eq!(f.store.export(&id(T), &since, &mut out).unwrap(), 2);
        assert_eq!(out, b"id\n1\n2\n");
    }

    #[test]
    fn export_refuses_unknown_tables_and_columns() {
        let (f, _, _) = orders();
        for bad in [
            q(Some(&["id", "nope"]), None),
            q(None, Some(("nope", &["x"], FilterOperator::Eq))),
        ] {
            let e = f.store.export(&id(T), &bad, &mut Vec::new()).unwrap_err();
            assert!(e.is_user_error());
            assert_eq!(e.to_string(), "table in.c-main.t has no column \"nope\"");
        }
        let e = f
            .store
            .export(&id(T), &q(Some(&["id", "v", "id"]), None), &mut Vec::new())
            .unwrap_err();
        assert!(e.is_user_error());
        assert_eq!(
            e.to_string(),
            "invalid export of in.c-main.t: column \"id\" is selected twice"
        );
        let e = f
            .store
            .export(
                &id("in.c-main.none"),
                &ExportQuery::default(),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(e.is_user_error());
        assert_eq!(e.to_string(), "table in.c-main.none does not exist");
    }
}
