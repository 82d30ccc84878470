//! Exports: the SQL that selects a table's rows for an [`ExportQuery`], and the CSV
//! they are streamed out as.

use std::collections::HashSet;
use std::io::Write;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::tables::{filter_sql, find_table, positions};
use super::{Res, check_interrupt, json_list, to_i64};
use crate::storage::{ExportQuery, StorageError, TableId, WhereFilter};

/// Writes the selected rows of table `id` to `out` as CSV; returns how many.
pub(super) fn export_table(
    conn: &Connection,
    id: &TableId,
    query: &ExportQuery,
    out: &mut dyn Write,
) -> Res<u64> {
    let table = find_table(conn, id)?.ok_or_else(|| StorageError::NoSuchTable(id.clone()))?;
    let no_column = |column: String| StorageError::NoSuchColumn {
        table: id.clone(),
        column,
    };
    let names = match &query.columns {
        Some(c) if !c.is_empty() => c.clone(),
        _ => table.columns.clone(),
    };
    let selected = positions(&table.columns, &names).map_err(no_column)?;
    let mut seen = HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(StorageError::Invalid {
            what: format!("export of {id}"),
            reason: format!("column {dup:?} is selected twice"),
        }
        .into());
    }
    let cols: Vec<String> = selected.iter().map(|p| format!("c{p}")).collect();
    let mut sql = format!("SELECT {} FROM t{} WHERE 1", cols.join(", "), table.tid);
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(WhereFilter {
        column,
        values,
        operator,
    }) = &query.filter
    {
        let pos = positions(&table.columns, std::slice::from_ref(column)).map_err(no_column)?[0];
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

    let output = |e: csv::Error| StorageError::Output {
        table: id.clone(),
        source: e.into(),
    };
    let mut w = csv::WriterBuilder::new()
        .buffer_capacity(256 << 10)
        .from_writer(out);
    w.write_record(&names).map_err(output)?;
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        for i in 0..selected.len() {
            let field = match row.get_ref(i)? {
                ValueRef::Text(t) | ValueRef::Blob(t) => t,
                _ => b"",
            };
            w.write_field(field).map_err(output)?;
        }
        w.write_record(None::<&[u8]>).map_err(output)?;
        n += 1;
        check_interrupt(n)?;
    }
    w.flush().map_err(|source| StorageError::Output {
        table: id.clone(),
        source,
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::test_fixture::{Fixture, T, id, strings};
    use crate::storage::{ExportQuery, FilterOperator, Storage, WhereFilter};

    #[test]
    fn export_queries() {
        let f = Fixture::new();
        let first = f.full(
            T,
            "id,city,v\n1,Prague,a\n2,Brno,b\n3,Prague,c\n4,Ostrava,d\n",
        );
        let _ = first;
        let t1 = f.info(T).last_import_ms;
        let mut load = f.load(T, "id,city,v\n2,Brno,b2\n5,Plzen,e\n");
        load.incremental = true;
        load.primary_key = strings(&["id"]);
        let t2 = f.apply(vec![load]).unwrap().committed_ms;
        assert!(t2 > t1);

        let q = |columns: Option<&[&str]>, filter: Option<(&str, &[&str], FilterOperator)>| {
            ExportQuery {
                columns: columns.map(strings),
                filter: filter.map(|(column, values, operator)| WhereFilter {
                    column: column.into(),
                    values: strings(values),
                    operator,
                }),
                ..ExportQuery::default()
            }
        };
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
