//! Table loads (contract §6): a load's checks, the table it creates or widens, its
//! primary key and `delete_where`, the rows it streams in from CSV, and the metadata it
//! merges into the registry. Everything runs inside `apply`'s transaction.

use std::collections::HashSet;

use rusqlite::{ErrorCode, Transaction, params};

use super::tables::{TableRow, filter_sql, find_table, positions};
use super::{Res, check_interrupt, json_list, to_i64, to_u64};
use crate::storage::csv_reader::{CsvFile, check_column_names};
use crate::storage::{CsvProblem, LoadReport, MAX_COLUMNS, MetadataEntry, StorageError, TableLoad};

/// Checks what can be checked about a load before any file is opened.
pub(super) fn check_load(load: &TableLoad) -> Result<(), StorageError> {
    let invalid = |reason: String| StorageError::InvalidLoad {
        table: load.destination.clone(),
        reason,
    };
    let src = &load.source;
    if src.paths.is_empty() {
        return Err(invalid("no source files".into()));
    }
    for (what, b) in [("delimiter", src.delimiter), ("enclosure", src.enclosure)] {
        if !b.is_ascii() || b == b'\n' || b == b'\r' {
            return Err(invalid(format!(
                "the {what} must be one ASCII character other than a line end, not {:?}",
                char::from(b)
            )));
        }
    }
    if src.delimiter == src.enclosure {
        return Err(invalid(
            "the delimiter and the enclosure are the same".into(),
        ));
    }
    if let Some(columns) = &src.columns {
        if columns.is_empty() {
            return Err(invalid(
                "the list of columns for headless CSV is empty".into(),
            ));
        }
        check_column_names(columns)
            .map_err(|p| invalid(format!("columns given for headless CSV: {p}")))?;
    }
    let mut seen = HashSet::new();
    for c in &load.primary_key {
        if !seen.insert(c) {
            return Err(invalid(format!("primary key column {c:?} is listed twice")));
        }
    }
    if load.provenance.component.is_empty() {
        return Err(invalid("the load names no component".into()));
    }
    Ok(())
}

fn pk_index_sql(tid: i64, positions: &[usize]) -> String {
    let cols: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
    format!(
        "CREATE UNIQUE INDEX t{tid}_pk ON t{tid} ({})",
        cols.join(", ")
    )
}

/// Loads one table (contract §6), inside the caller's transaction.
pub(super) fn load_table(tx: &Transaction<'_>, load: &TableLoad, now: i64) -> Res<LoadReport> {
    let id = &load.destination;
    let invalid = |reason: String| StorageError::InvalidLoad {
        table: id.clone(),
        reason,
    };
    let src = &load.source;
    let mut first = CsvFile::open(&src.paths[0], src.delimiter, src.enclosure)?;
    let csv_columns = match &src.columns {
        Some(columns) => {
            first.set_width(columns.len());
            columns.clone()
        }
        None => first.read_header()?,
    };

    let prov = &load.provenance;
    let (table, created, columns_added) = match find_table(tx, id)? {
        None => {
            tx.execute(
                "INSERT INTO tables (stage, bucket, name, primary_key, row_count, created_ms,
                    last_change_ms, last_import_ms, created_component, created_config,
                    created_row, updated_component, updated_config, updated_row)
                 VALUES (?1, ?2, ?3, '[]', 0, ?4, ?4, ?4, ?5, ?6, ?7, ?5, ?6, ?7)",
                params![
                    id.stage().as_str(),
                    id.bucket(),
                    id.table(),
                    now,
                    prov.component,
                    prov.config,
                    prov.row
                ],
            )?;
            let tid = tx.last_insert_rowid();
            let defs: Vec<String> = (1..=csv_columns.len())
                .map(|p| format!(", c{p} TEXT NOT NULL DEFAULT ''"))
                .collect();
            tx.execute_batch(&format!(
                "CREATE TABLE t{tid} (_changed INTEGER NOT NULL{})",
                defs.concat()
            ))?;
            let table = TableRow {
                tid,
                columns: Vec::new(),
                primary_key: Vec::new(),
                rows: 0,
            };
            (table, true, csv_columns.clone())
        }
        Some(table) => {
            let present: HashSet<&str> = csv_columns.iter().map(String::as_str).collect();
            let missing: Vec<String> = table
                .columns
                .iter()
                .filter(|c| !present.contains(c.as_str()))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(StorageError::MissingColumns {
                    table: id.clone(),
                    path: src.paths[0].clone(),
                    missing,
                }
                .into());
            }
            let known: HashSet<&str> = table.columns.iter().map(String::as_str).collect();
            let added: Vec<String> = csv_columns
                .iter()
                .filter(|c| !known.contains(c.as_str()))
                .cloned()
                .collect();
            if table.columns.len() + added.len() > MAX_COLUMNS {
                return Err(invalid(format!(
                    "adding {} columns would give it more than {MAX_COLUMNS}",
                    added.len()
                ))
                .into());
            }
            for p in table.columns.len() + 1..=table.columns.len() + added.len() {
                tx.execute_batch(&format!(
                    "ALTER TABLE t{} ADD COLUMN c{p} TEXT NOT NULL DEFAULT ''",
                    table.tid
                ))?;
            }
            (table, false, added)
        }
    };
    let tid = table.tid;
    {
        let mut stmt = tx.prepare("INSERT INTO columns (tid, pos, name) VALUES (?1, ?2, ?3)")?;
        for (i, name) in columns_added.iter().enumerate() {
            let pos = table.columns.len() + i + 1;
            stmt.execute(params![tid, to_i64(pos as u64), name])?;
        }
    }
    let mut columns = table.columns.clone();
    columns.extend(columns_added.iter().cloned());

    // Everything the load names must be a column by now.
    let primary_key = if load.primary_key.is_empty() {
        table.primary_key.clone()
    } else {
        load.primary_key.clone()
    };
    let pk_positions = positions(&columns, &primary_key).map_err(|c| {
        invalid(format!(
            "primary key column {c:?} is not a column of the table or of {}",
            src.paths[0].display()
        ))
    })?;
    let delete_where = match &load.delete_where {
        Some(filter) if load.incremental => {
            let pos = positions(&columns, std::slice::from_ref(&filter.column))
                .map_err(|c| invalid(format!("delete_where column {c:?} is not a column")))?;
            Some((pos[0], filter))
        }
        _ => None,
    };
    for column in load.column_metadata.keys() {
        if !columns.contains(column) {
            return Err(invalid(format!(
                "column_metadata names {column:?}, which is not a column"
            ))
            .into());
        }
    }

    let mut rows = table.rows;
    let mut rows_deleted = 0;
    if !load.incremental && !created {
        tx.execute_batch(&format!("DELETE FROM t{tid}"))?;
        rows_deleted = rows;
        rows = 0;
    }
    if primary_key != table.primary_key {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS t{tid}_pk"))?;
        if !pk_positions.is_empty() {
            match tx.execute_batch(&pk_index_sql(tid, &pk_positions)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    return Err(invalid(format!(
                        "its rows are not unique on the new primary key ({})",
                        primary_key.join(", ")
                    ))
                    .into());
                }
                other => other?,
            }
        }
        tx.execute(
            "UPDATE tables SET primary_key = ?1 WHERE tid = ?2",
            params![json_list(&primary_key), tid],
        )?;
    }
    if let Some((pos, filter)) = delete_where {
        let n = tx.execute(
            &format!(
                "DELETE FROM t{tid} WHERE {}",
                filter_sql(pos, filter.operator, 1)
            ),
            [json_list(&filter.values)],
        )?;
        rows_deleted = n as u64;
        rows = rows.saturating_sub(n as u64);
    }

    // Every CSV column has a position now; the statement binds them in CSV order.
    let csv_positions = positions(&columns, &csv_columns).map_err(invalid)?;
    let targets: Vec<String> = csv_positions.iter().map(|p| format!(", c{p}")).collect();
    let params: Vec<String> = (1..=csv_positions.len())
        .map(|i| format!(", ?{i}"))
        .collect();
    let mut sql = format!(
        "INSERT INTO t{tid} (_changed{}) VALUES ({now}{})",
        targets.concat(),
        params.concat()
    );
    if !pk_positions.is_empty() {
        let conflict: Vec<String> = pk_positions.iter().map(|p| format!("c{p}")).collect();
        let updates: Vec<String> = csv_positions
            .iter()
            .filter(|p| !pk_positions.contains(p))
            .map(|p| format!(", c{p} = excluded.c{p}"))
            .collect();
        sql.push_str(&format!(
            " ON CONFLICT ({}) DO UPDATE SET _changed = excluded._changed{}",
            conflict.join(", "),
            updates.concat()
        ));
    }
    let mut insert = tx.prepare(&sql)?;
    let mut loaded = insert_rows(&mut insert, &mut first)?;
    drop(first);
    for path in &src.paths[1..] {
        let mut file = CsvFile::open(path, src.delimiter, src.enclosure)?;
        match &src.columns {
            Some(c) => file.set_width(c.len()),
            None => {
                if file.read_header()? != csv_columns {
                    return Err(StorageError::Csv {
                        path: path.clone(),
                        line: 1,
                        problem: CsvProblem::HeaderDiffers {
                            first: src.paths[0].clone(),
                        },
                    }
                    .into());
                }
            }
        }
        loaded += insert_rows(&mut insert, &mut file)?;
    }
    drop(insert);

    rows = if pk_positions.is_empty() {
        rows + loaded
    } else {
        // An upsert does not say whether it inserted or replaced.
        to_u64(tx.query_row(&format!("SELECT count(*) FROM t{tid}"), [], |r| r.get(0))?)
    };
    tx.execute(
        "UPDATE tables SET row_count = ?1, last_change_ms = ?2, last_import_ms = ?2,
            updated_component = ?3, updated_config = ?4, updated_row = ?5,
            description = coalesce(?6, description)
         WHERE tid = ?7",
        params![
            to_i64(rows),
            now,
            prov.component,
            prov.config,
            prov.row,
            load.description,
            tid
        ],
    )?;
    merge_metadata(tx, tid, "", &load.metadata, &prov.component, now)?;
    for (column, entries) in &load.column_metadata {
        merge_metadata(tx, tid, column, entries, &prov.component, now)?;
    }
    Ok(LoadReport {
        table: id.clone(),
        created,
        columns_added: if created { Vec::new() } else { columns_added },
        rows_loaded: loaded,
        rows_deleted,
        rows,
    })
}

/// Streams every record of `file` through the prepared insert.
fn insert_rows(insert: &mut rusqlite::Statement<'_>, file: &mut CsvFile) -> Res<u64> {
    let mut n = 0;
    while let Some(record) = file.next()? {
        for (i, field) in record.fields().enumerate() {
            insert.raw_bind_parameter(i + 1, field)?;
        }
        insert.raw_execute()?;
        n += 1;
        check_interrupt(n)?;
    }
    Ok(n)
}

fn merge_metadata(
    tx: &Transaction<'_>,
    tid: i64,
    column: &str,
    entries: &[MetadataEntry],
    provider: &str,
    now: i64,
) -> Res<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO metadata (tid, col, key, value, provider, timestamp_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tid, col, key) DO UPDATE SET value = excluded.value,
            provider = excluded.provider, timestamp_ms = excluded.timestamp_ms",
    )?;
    for e in entries {
        stmt.execute(params![tid, column, e.key, e.value, provider, now])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_fixture::{Fixture, T, id, prov, strings};
    use crate::storage::{
        CsvProblem, CsvSource, FilterOperator, MetadataEntry, Storage, StorageError, TableLoad,
        WhereFilter,
    };

    #[test]
    fn round_trip_keeps_quotes_newlines_and_utf8() {
        let f = Fixture::new();
        let csv = "id,text,note\n\
                   1,\"say \"\"hi\"\"\",\"a,b\"\n\
                   2,\"two\nlines\",\"crlf\r\ninside\"\n\
                   3,žluťoučký kůň 🐎,\n\
                   4,\"\",\" leading space\"\n";
        let report = f.full(T, csv);
        assert!(report.created);
        assert_eq!(report.rows_loaded, 4);
        assert_eq!(report.rows, 4);
        // Quotes only where needed, so this is also the canonical form of the input.
        assert_eq!(
            f.csv(T),
            "id,text,note\n\
             1,\"say \"\"hi\"\"\",\"a,b\"\n\
             2,\"two\nlines\",\"crlf\r\ninside\"\n\
             3,žluťoučký kůň 🐎,\n\
             4,, leading space\n"
        );
        let info = f.info(T);
        assert_eq!(info.columns, strings(&["id", "text", "note"]));
        assert_eq!(info.rows, 4);
        assert_eq!(info.created_by, prov());
        assert_eq!(info.last_updated_by, prov());
        assert_eq!(info.created_ms, info.last_import_ms);
    }

    #[test]
    fn a_single_empty_column_survives_the_round_trip() {
        let f = Fixture::new();
        f.full(T, "only\n\"\"\nx\n");
        assert_eq!(f.csv(T), "only\n\"\"\nx\n");
        assert_eq!(f.info(T).rows, 2);
    }

    #[test]
    fn full_load_replaces_incremental_appends() {
        let f = Fixture::new();
        f.full(T, "id,v\n1,a\n2,b\n3,c\n");
        let created = f.info(T);

        let mut other = prov();
        other.component = "keboola.other".into();
        other.row = Some("r1".into());
        let mut load = f.load(T, "id,v\n4,d\n5,e\n");
        load.provenance = other.clone();
        let report = f.apply(vec![load]).unwrap().tables.remove(0);
        assert!(!report.created);
        assert_eq!(
            (report.rows_deleted, report.rows_loaded, report.rows),
            (3, 2, 2)
        );
        assert_eq!(f.csv(T), "id,v\n4,d\n5,e\n");
        let info = f.info(T);
        assert_eq!(info.created_by, prov());
        assert_eq!(info.last_updated_by, other);
        assert_eq!(info.created_ms, created.created_ms);
        assert!(info.last_import_ms > created.last_import_ms);

        let report = f.incremental(T, "id,v\n6,f\n4,d\n");
        assert_eq!(
            (report.rows_deleted, report.rows_loaded, report.rows),
            (0, 2, 4)
        );
        assert_eq!(f.csv(T), "id,v\n4,d\n5,e\n6,f\n4,d\n");
    }

    #[test]
    fn upsert_with_a_primary_key_keeps_the_last_row() {
        let f = Fixture::new();
        let mut load = f.load(T, "id,v\n1,a\n2,b\n1,a2\n");
        load.primary_key = strings(&["id"]);
        let report = f.apply(vec![load]).unwrap().tables.remove(0);
        assert_eq!((report.rows_loaded, report.rows), (3, 2));
        assert_eq!(f.csv(T), "id,v\n1,a2\n2,b\n");
        assert_eq!(f.info(T).primary_key, strings(&["id"]));

        // The table's key applies to later loads that name none.
        let report = f.incremental(T, "id,v\n3,c\n2,b2\n3,c2\n2,b3\n");
        assert_eq!((report.rows_loaded, report.rows), (4, 3));
        assert_eq!(f.csv(T), "id,v\n1,a2\n2,b3\n3,c2\n");
        assert_eq!(f.info(T).rows, 3);
    }

    #[test]
    fn composite_primary_keys_and_columns_in_another_order() {
        let f = Fixture::new();
        let mut load = f.load(T, "a,b,v\n1,x,first\n1,y,second\n");
        load.primary_key = strings(&["a", "b"]);
        f.apply(vec![load]).unwrap();
        // Columns are matched by name, not position.
        f.incremental(T, "v,b,a\nthird,x,1\nfourth,z,1\n");
        assert_eq!(f.csv(T), "a,b,v\n1,x,third\n1,y,second\n1,z,fourth\n");
    }

    #[test]
    fn primary_key_changes() {
        let f = Fixture::new();
        let mut load = f.load(T, "id,k,v\n1,a,x\n2,a,y\n");
        load.primary_key = strings(&["id"]);
        f.apply(vec![load]).unwrap();

        // The rows are not unique on k: refused, and nothing changes.
        let before = f.snapshot();
        let mut load = f.load(T, "id,k,v\n3,b,z\n");
        load.incremental = true;
        load.primary_key = strings(&["k"]);
        let e = f.apply(vec![load]).unwrap_err();
        assert!(e.is_user_error());
        assert!(
            e.to_string()
                .contains("not unique on the new primary key (k)"),
            "{e}"
        );
        assert_eq!(f.snapshot(), before);

        // A full load replaces the rows first, so any key goes.
        let mut load = f.load(T, "id,k,v\n1,a,x\n2,a,y\n");
        load.primary_key = strings(&["k"]);
        f.apply(vec![load]).unwrap();
        assert_eq!(f.info(T).primary_key, strings(&["k"]));
        assert_eq!(f.csv(T), "id,k,v\n2,a,y\n");

        // A key column the table does not have.
        let mut load = f.load(T, "id,k,v\n1,a,x\n");
        load.primary_key = strings(&["nope"]);
        let e = f.apply(vec![load]).unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("in.c-main.t"), "{e}");
        assert!(e.to_string().contains("primary key column \"nope\""), "{e}");
    }

    #[test]
    fn delete_where_eq_and_ne() {
        let f = Fixture::new();
        let data = "id,city\n1,Prague\n2,Brno\n3,Ostrava\n4,Prague\n";
        f.full(T, data);
        let mut load = f.load(T, "id,city\n5,Plzen\n");
        load.incremental = true;
        load.delete_where = Some(WhereFilter {
            column: "city".into(),
            values: strings(&["Prague", "Brno"]),
            operator: FilterOperator::Eq,
        });
        let report = f.apply(vec![load]).unwrap().tables.remove(0);
        assert_eq!((report.rows_deleted, report.rows), (3, 2));
        assert_eq!(f.csv(T), "id,city\n3,Ostrava\n5,Plzen\n");

        f.full(T, data);
        let mut load = f.load(T, "id,city\n5,Plzen\n");
        load.incremental = true;
        load.delete_where = Some(WhereFilter {
            column: "city".into(),
            values: strings(&["Prague"]),
            operator: FilterOperator::Ne,
        });
        let report = f.apply(vec![load]).unwrap().tables.remove(0);
        assert_eq!((report.rows_deleted, report.rows), (2, 3));
        assert_eq!(f.csv(T), "id,city\n1,Prague\n4,Prague\n5,Plzen\n");

        let mut load = f.load(T, "id,city\n6,Brno\n");
        load.incremental = true;
        load.delete_where = Some(WhereFilter {
            column: "town".into(),
            values: strings(&["Prague"]),
            operator: FilterOperator::Eq,
        });
        let e = f.apply(vec![load]).unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("\"town\""), "{e}");
    }

    #[test]
    fn loads_add_columns_but_never_drop_them() {
        let f = Fixture::new();
        f.full(T, "id,v\n1,a\n");
        let report = f.incremental(T, "w,id,v\nnew,2,b\n");
        assert_eq!(report.columns_added, strings(&["w"]));
        assert_eq!(f.info(T).columns, strings(&["id", "v", "w"]));
        assert_eq!(f.csv(T), "id,v,w\n1,a,\n2,b,new\n");
        // A full load may add columns too.
        let report = f.full(T, "id,v,w,x\n3,c,d,e\n");
        assert_eq!(report.columns_added, strings(&["x"]));

        let before = f.snapshot();
        for incremental in [true, false] {
            let mut load = f.load(T, "id,x\n4,f\n");
            load.incremental = incremental;
            let path = load.source.paths[0].clone();
            let e = f.apply(vec![load]).unwrap_err();
            assert!(e.is_user_error());
            assert_eq!(
                e.to_string(),
                format!(
                    "{} lacks columns \"v\", \"w\" of table in.c-main.t: a load may add \
                     columns but never drops any",
                    path.display()
                )
            );
            assert_eq!(f.snapshot(), before);
        }
    }

    #[test]
    fn sliced_gzipped_and_headless_sources() {
        let f = Fixture::new();
        let slices = vec![
            f.file("part0", b"1,a\n2,b\n"),
            f.gz("part1.csv.gz", b"3,\"c\nc\"\n4,d\n"),
            f.file("part2", b""),
            f.gz("part3.gz", b"5,e"),
        ];
        let mut load = TableLoad::new(
            id(T),
            CsvSource {
                paths: slices,
                columns: Some(strings(&["id", "v"])),
                delimiter: b',',
                enclosure: b'"',
            },
            prov(),
        );
        load.primary_key = strings(&["id"]);
        let report = f.apply(vec![load]).unwrap().tables.remove(0);
        assert_eq!(report.rows, 5);
        assert_eq!(f.csv(T), "id,v\n1,a\n2,b\n3,\"c\nc\"\n4,d\n5,e\n");

        // Slices with headers must agree on them.
        let mut source = CsvSource::file(&f.gz("a.csv.gz", b"id,v\n6,f\n"));
        source.paths.push(f.file("b.csv", b"id,v\n7,g\n"));
        let load = TableLoad::new(id(T), source.clone(), prov());
        f.apply(vec![load]).unwrap();
        assert_eq!(f.csv(T), "id,v\n6,f\n7,g\n");

        let bad = f.file("c.csv", b"v,id\n8,h\n");
        source.paths.push(bad.clone());
        let before = f.snapshot();
        match f.apply(vec![TableLoad::new(id(T), source, prov())]) {
            Err(StorageError::Csv {
                path,
                line: 1,
                problem: CsvProblem::HeaderDiffers { .. },
            }) => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.snapshot(), before);
    }

    #[test]
    fn corrupt_gzip_and_missing_sources_are_user_errors() {
        let f = Fixture::new();
        let corrupt = f.file("x.csv.gz", b"this is not gzip");
        let e = f
            .apply(vec![TableLoad::new(
                id(T),
                CsvSource::file(&corrupt),
                prov(),
            )])
            .unwrap_err();
        assert!(e.is_user_error());
        assert!(
            e.to_string().starts_with(&corrupt.display().to_string()),
            "{e}"
        );

        let missing = f.dir.path().join("missing.csv");
        let e = f
            .apply(vec![TableLoad::new(
                id(T),
                CsvSource::file(&missing),
                prov(),
            )])
            .unwrap_err();
        assert!(e.is_user_error());
        assert_eq!(
            e.to_string(),
            format!("{}: no such file", missing.display())
        );
        assert!(f.store.tables().unwrap().is_empty());
    }

    #[test]
    fn custom_delimiter_and_enclosure() {
        let f = Fixture::new();
        let path = f.file("semi.csv", b"id;text\n1;'a;b'\n2;'it''s'\n3;\"plain\"\n");
        let mut source = CsvSource::file(&path);
        source.delimiter = b';';
        source.enclosure = b'\'';
        f.apply(vec![TableLoad::new(id(T), source, prov())])
            .unwrap();
        // Exports are always `,` and `"`.
        assert_eq!(f.csv(T), "id,text\n1,a;b\n2,it's\n3,\"\"\"plain\"\"\"\n");

        let path = f.file("tab.csv", b"id\ttext\n1\t\"a\tb\"\n");
        let mut source = CsvSource::file(&path);
        source.delimiter = b'\t';
        f.apply(vec![TableLoad::new(id(T), source, prov())])
            .unwrap();
        assert_eq!(f.csv(T), "id,text\n1,a\tb\n");

        let mut source = CsvSource::file(&path);
        source.enclosure = b',';
        let e = f
            .apply(vec![TableLoad::new(id(T), source, prov())])
            .unwrap_err();
        assert!(e.is_user_error());
        assert!(
            e.to_string()
                .contains("the delimiter and the enclosure are the same"),
            "{e}"
        );
    }

    #[test]
    fn metadata_is_merged_by_key() {
        let f = Fixture::new();
        let entry = |k: &str, v: &str| MetadataEntry {
            key: k.into(),
            value: v.into(),
        };
        let mut load = f.load(T, "id,v\n1,a\n");
        load.metadata = vec![entry("KBC.name", "orders"), entry("a", "1")];
        load.column_metadata
            .insert("v".into(), vec![entry("KBC.datatype.type", "INT")]);
        load.description = Some("all orders".into());
        f.apply(vec![load]).unwrap();

        let mut load = f.load(T, "id,v\n1,a\n");
        load.metadata = vec![entry("a", "2"), entry("b", "3")];
        load.column_metadata
            .insert("id".into(), vec![entry("k", "v")]);
        load.provenance.component = "keboola.other".into();
        f.apply(vec![load]).unwrap();

        let info = f.info(T);
        let kv: Vec<(&str, &str, &str)> = info
            .metadata
            .iter()
            .map(|m| (m.key.as_str(), m.value.as_str(), m.provider.as_str()))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("KBC.name", "orders", "keboola.ex-test"),
                ("a", "2", "keboola.other"),
                ("b", "3", "keboola.other"),
            ]
        );
        assert_eq!(info.column_metadata["v"][0].value, "INT");
        assert_eq!(info.column_metadata["id"][0].key, "k");
        assert_eq!(info.description.as_deref(), Some("all orders"));

        let mut load = f.load(T, "id,v\n1,a\n");
        load.column_metadata
            .insert("w".into(), vec![entry("k", "v")]);
        let e = f.apply(vec![load]).unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("\"w\""), "{e}");
    }

    #[test]
    fn every_malformed_csv_is_refused_with_file_and_line() {
        let cases: &[(&[u8], u64, CsvProblem)] = &[
            (
                b"id,v\n1,a\n2,b,extra\n",
                3,
                CsvProblem::FieldCount {
                    found: 3,
                    expected: 2,
                },
            ),
            (
                b"id,v\n1,a\n2\n",
                3,
                CsvProblem::FieldCount {
                    found: 1,
                    expected: 2,
                },
            ),
            (b"id,v\n1,a\n2,\"open\n3,c\n", 3, CsvProblem::UnclosedQuote),
            (b"id,v\n1,a\n2,b\"c\n", 3, CsvProblem::QuoteInUnquotedField),
            (
                b"id,v\n1,\"a\nb\"\n2,\"b\"c\n",
                4,
                CsvProblem::CharactersAfterClosingQuote,
            ),
            (
                b"id,v\n1,a\n2,\xe9t\xe9\n",
                3,
                CsvProblem::InvalidUtf8 { field: 2 },
            ),
            (
                b"id,id\n1,a\n",
                1,
                CsvProblem::DuplicateColumnName { name: "id".into() },
            ),
            (b"id,\n1,a\n", 1, CsvProblem::EmptyColumnName { column: 2 }),
            (b"", 1, CsvProblem::MissingHeader),
        ];
        let f = Fixture::new();
        f.full(T, "id,v\n0,zero\n");
        let before = f.snapshot();
        for (n, (data, line, problem)) in cases.iter().enumerate() {
            let path = f.file(&format!("bad{n}.csv"), data);
            for incremental in [false, true] {
                let mut load = TableLoad::new(id(T), CsvSource::file(&path), prov());
                load.incremental = incremental;
                match f.apply(vec![load]) {
                    Err(e @ StorageError::Csv { .. }) => {
                        assert!(e.is_user_error());
                        assert_eq!(
                            e.to_string(),
                            format!("{}: line {line}: {problem}", path.display())
                        );
                        let StorageError::Csv {
                            path: p,
                            line: l,
                            problem: pr,
                        } = e
                        else {
                            unreachable!()
                        };
                        assert_eq!((&p, l, &pr), (&path, *line, problem));
                    }
                    other => panic!("case {n}: expected a CSV error, got {other:?}"),
                }
                assert_eq!(f.snapshot(), before, "case {n}");
            }
            // Into a new table: it must not appear.
            let load = TableLoad::new(id("in.c-main.new"), CsvSource::file(&path), prov());
            assert!(f.apply(vec![load]).is_err());
            assert_eq!(f.snapshot(), before, "case {n}");
        }
    }

    #[test]
    fn many_rows_stream_through_small_buffers() {
        let f = Fixture::new();
        let mut csv = String::from("id,text\n");
        for i in 0..20_000 {
            csv.push_str(&format!("{i},\"row {i} says \"\"hi\"\"\nand more\"\n"));
        }
        let path = f.gz("big.csv.gz", csv.as_bytes());
        f.apply(vec![TableLoad::new(id(T), CsvSource::file(&path), prov())])
            .unwrap();
        assert_eq!(f.info(T).rows, 20_000);
        assert_eq!(f.csv(T), csv);
    }
}
