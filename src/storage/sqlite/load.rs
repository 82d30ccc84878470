//! Table loads (contract §6): a load's checks, the table it creates or widens, its
//! primary key and `delete_where`, the rows it streams in from CSV, and the metadata it
//! merges into the registry. Everything runs inside `apply`'s transaction.

use rusqlite::{ErrorCode, Transaction, params};

use super::tables::{TableRow, filter_sql, find_table};
use crate::storage::check::{Plan, columns_to_add, open_slice, open_source, plan, positions};
use crate::storage::csv_reader::CsvFile;
use crate::storage::sql::{SqliteRes as Res, json_list, to_i64, to_u64};
use crate::storage::{
    LoadReport, MetadataEntry, StorageError, TableLoad, WhereFilter, check_interrupt,
};

/// Loads one table (contract §6), inside the caller's transaction.
pub(super) fn load_table(tx: &Transaction<'_>, load: &TableLoad, now: i64) -> Res<LoadReport> {
    let loader = Loader { tx, load, now };
    let src = &load.source;
    let (first, csv_columns) = open_source(src, &src.paths[0])?;
    let target = loader.prepare_table(&csv_columns)?;
    let mut plan = plan(
        load,
        &target.columns,
        &target.before.primary_key,
        !target.created,
    )?;
    let tid = target.before.tid;

    let mut counts = loader.clear_for_full_load(&target)?;
    if plan.changes_key() {
        if loader.unique_on(tid, &plan.pk_positions)? {
            loader.replace_primary_key(tid, &plan)?;
        } else {
            plan.keep_key(&load.destination);
        }
    }
    if let Some((pos, filter)) = plan.delete_where {
        let n = loader.delete_matching(tid, pos, filter)?;
        counts = Counts {
            rows: counts.rows.saturating_sub(n),
            deleted: n,
        };
    }

    let loaded = loader.insert_sources(first, &csv_columns, &target, &plan)?;
    let rows = if plan.pk_positions.is_empty() {
        counts.rows + loaded
    } else {
        // An upsert does not say whether it inserted or replaced.
        loader.count_rows(tid)?
    };
    loader.update_registry(tid, rows)?;
    loader.merge_all_metadata(tid)?;
    Ok(LoadReport {
        table: load.destination.clone(),
        created: target.created,
        columns_added: if target.created {
            Vec::new()
        } else {
            target.added
        },
        rows_loaded: loaded,
        rows_deleted: counts.deleted,
        rows,
    })
}

/// One load in progress: the transaction it writes in, what it loads, and the commit time
/// its rows carry.
struct Loader<'a, 'conn> {
    tx: &'a Transaction<'conn>,
    load: &'a TableLoad,
    now: i64,
}

/// The table a load writes into, once it has every column of the CSV.
struct Target {
    /// The registry entry as it was before the load (empty for a new table).
    before: TableRow,
    created: bool,
    /// The columns the load gave the table, in CSV order: all of them for a new table.
    added: Vec<String>,
    /// Every column, in table order.
    columns: Vec<String>,
}

/// Rows in the table, and rows removed by the load so far.
struct Counts {
    rows: u64,
    deleted: u64,
}

impl<'a> Loader<'a, '_> {
    fn invalid(&self, reason: String) -> StorageError {
        StorageError::InvalidLoad {
            table: self.load.destination.clone(),
            reason,
        }
    }

    /// The table to load into, created, or widened to have every column of the CSV.
    fn prepare_table(&self, csv_columns: &[String]) -> Res<Target> {
        let (before, created, added) = match find_table(self.tx, &self.load.destination)? {
            None => (
                self.create_table(csv_columns.len())?,
                true,
                csv_columns.to_vec(),
            ),
            Some(table) => {
                let added = self.widen_table(&table, csv_columns)?;
                (table, false, added)
            }
        };
        self.register_columns(&before, &added)?;
        let mut columns = before.columns.clone();
        columns.extend(added.iter().cloned());
        Ok(Target {
            before,
            created,
            added,
            columns,
        })
    }

    /// Registers a new table and creates its SQLite table with `width` columns, whose
    /// names [`register_columns`](Self::register_columns) records.
    fn create_table(&self, width: usize) -> Res<TableRow> {
        let id = &self.load.destination;
        let prov = &self.load.provenance;
        self.tx.execute(
            "INSERT INTO tables (stage, bucket, name, primary_key, row_count, created_ms,
                last_change_ms, last_import_ms, created_component, created_config,
                created_row, updated_component, updated_config, updated_row)
             VALUES (?1, ?2, ?3, '[]', 0, ?4, ?4, ?4, ?5, ?6, ?7, ?5, ?6, ?7)",
            params![
                id.stage().as_str(),
                id.bucket(),
                id.table(),
                self.now,
                prov.component,
                prov.config,
                prov.row
            ],
        )?;
        let tid = self.tx.last_insert_rowid();
        let defs: Vec<String> = (1..=width)
            .map(|p| format!(", c{p} TEXT NOT NULL DEFAULT ''"))
            .collect();
        self.tx.execute_batch(&format!(
            "CREATE TABLE t{tid} (_changed INTEGER NOT NULL{})",
            defs.concat()
        ))?;
        Ok(TableRow {
            tid,
            columns: Vec::new(),
            primary_key: Vec::new(),
            rows: 0,
        })
    }

    /// Adds the columns of the CSV that `table` lacks; returns them.
    fn widen_table(&self, table: &TableRow, csv_columns: &[String]) -> Res<Vec<String>> {
        let added = columns_to_add(self.load, &table.columns, csv_columns)?;
        for p in table.columns.len() + 1..=table.columns.len() + added.len() {
            self.tx.execute_batch(&format!(
                "ALTER TABLE t{} ADD COLUMN c{p} TEXT NOT NULL DEFAULT ''",
                table.tid
            ))?;
        }
        Ok(added)
    }

    /// Records the names of the columns `added` after those `table` had.
    fn register_columns(&self, table: &TableRow, added: &[String]) -> Res<()> {
        let mut stmt = self
            .tx
            .prepare("INSERT INTO columns (tid, pos, name) VALUES (?1, ?2, ?3)")?;
        for (i, name) in added.iter().enumerate() {
            let pos = table.columns.len() + i + 1;
            stmt.execute(params![table.tid, to_i64(pos as u64), name])?;
        }
        Ok(())
    }

    /// A full load replaces every row an existing table has.
    fn clear_for_full_load(&self, target: &Target) -> Res<Counts> {
        let rows = target.before.rows;
        if self.load.incremental || target.created {
            return Ok(Counts { rows, deleted: 0 });
        }
        self.tx
            .execute_batch(&format!("DELETE FROM t{}", target.before.tid))?;
        Ok(Counts {
            rows: 0,
            deleted: rows,
        })
    }

    /// Whether the table's rows are unique on the columns at `positions` (a missing value
    /// counts as one value, so a key is never made where SQL's unique index would allow
    /// two rows without one).
    fn unique_on(&self, tid: i64, positions: &[usize]) -> Res<bool> {
        if positions.is_empty() {
            return Ok(true);
        }
        let cols: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM t{tid} GROUP BY {} HAVING count(*) > 1)",
            cols.join(", ")
        );
        let duplicated: bool = self.tx.query_row(&sql, [], |r| r.get(0))?;
        Ok(!duplicated)
    }

    /// Replaces the table's unique index by one on the new key, which the rows it keeps
    /// must be unique on.
    fn replace_primary_key(&self, tid: i64, plan: &Plan<'_>) -> Res<()> {
        self.tx
            .execute_batch(&format!("DROP INDEX IF EXISTS t{tid}_pk"))?;
        if !plan.pk_positions.is_empty() {
            match self
                .tx
                .execute_batch(&pk_index_sql(tid, &plan.pk_positions))
            {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    return Err(self
                        .invalid(format!(
                            "its rows are not unique on the new primary key ({})",
                            plan.primary_key.join(", ")
                        ))
                        .into());
                }
                other => other?,
            }
        }
        self.tx.execute(
            "UPDATE tables SET primary_key = ?1 WHERE tid = ?2",
            params![json_list(&plan.primary_key), tid],
        )?;
        Ok(())
    }

    /// Deletes the rows `filter` matches on column `c<pos>`; returns how many.
    fn delete_matching(&self, tid: i64, pos: usize, filter: &WhereFilter) -> Res<u64> {
        let n = self.tx.execute(
            &format!(
                "DELETE FROM t{tid} WHERE {}",
                filter_sql(pos, filter.operator, 1)
            ),
            [json_list(&filter.values)],
        )?;
        Ok(n as u64)
    }

    /// Streams the rows of every source file, `first` (already open) and then the other
    /// slices, through one prepared insert; returns how many.
    fn insert_sources(
        &self,
        mut first: CsvFile,
        csv_columns: &[String],
        target: &Target,
        plan: &Plan<'_>,
    ) -> Res<u64> {
        // Every CSV column has a position now; the statement binds them in CSV order.
        let csv_positions = positions(&target.columns, csv_columns).map_err(|c| self.invalid(c))?;
        let sql = insert_sql(
            target.before.tid,
            self.now,
            &csv_positions,
            &plan.pk_positions,
        );
        let mut insert = self.tx.prepare(&sql)?;
        let mut loaded = insert_rows(&mut insert, &mut first)?;
        drop(first);
        let src = &self.load.source;
        for path in &src.paths[1..] {
            let mut file = open_slice(src, path, csv_columns)?;
            loaded += insert_rows(&mut insert, &mut file)?;
        }
        Ok(loaded)
    }

    fn count_rows(&self, tid: i64) -> Res<u64> {
        let n: i64 = self
            .tx
            .query_row(&format!("SELECT count(*) FROM t{tid}"), [], |r| r.get(0))?;
        Ok(to_u64(n))
    }

    /// Records the load in the table's registry entry: its rows, times and provenance.
    fn update_registry(&self, tid: i64, rows: u64) -> Res<()> {
        let prov = &self.load.provenance;
        self.tx.execute(
            "UPDATE tables SET row_count = ?1, last_change_ms = ?2, last_import_ms = ?2,
                updated_component = ?3, updated_config = ?4, updated_row = ?5,
                description = coalesce(?6, description)
             WHERE tid = ?7",
            params![
                to_i64(rows),
                self.now,
                prov.component,
                prov.config,
                prov.row,
                self.load.description,
                tid
            ],
        )?;
        Ok(())
    }

    /// Merges the table's and its columns' metadata into what the table has.
    fn merge_all_metadata(&self, tid: i64) -> Res<()> {
        self.merge_metadata(tid, "", &self.load.metadata)?;
        for (column, entries) in &self.load.column_metadata {
            self.merge_metadata(tid, column, entries)?;
        }
        Ok(())
    }

    /// Sets each entry on `column` (`""`: the table itself) by key, naming the load's
    /// component as its provider.
    fn merge_metadata(&self, tid: i64, column: &str, entries: &[MetadataEntry]) -> Res<()> {
        let mut stmt = self.tx.prepare(
            "INSERT INTO metadata (tid, col, key, value, provider, timestamp_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tid, col, key) DO UPDATE SET value = excluded.value,
                provider = excluded.provider, timestamp_ms = excluded.timestamp_ms",
        )?;
        let provider = &self.load.provenance.component;
        for e in entries {
            stmt.execute(params![tid, column, e.key, e.value, provider, self.now])?;
        }
        Ok(())
    }
}

fn pk_index_sql(tid: i64, positions: &[usize]) -> String {
    let cols: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
    format!(
        "CREATE UNIQUE INDEX t{tid}_pk ON t{tid} ({})",
        cols.join(", ")
    )
}

/// The insert of one CSV row into `t<tid>`: its fields are bound in CSV order to the
/// columns at `csv_positions`. With a primary key, a row whose key is there replaces it.
fn insert_sql(tid: i64, now: i64, csv_positions: &[usize], pk_positions: &[usize]) -> String {
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
    sql
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

        // The rows are not unique on k: the table keeps its key (a warning, as the
        // original), and the load goes on with it.
        let mut load = f.load(T, "id,k,v\n3,b,z\n1,c,w\n");
        load.incremental = true;
        load.primary_key = strings(&["k"]);
        f.apply(vec![load]).unwrap();
        assert_eq!(f.info(T).primary_key, strings(&["id"]));
        assert_eq!(f.csv(T), "id,k,v\n1,c,w\n2,a,y\n3,b,z\n");

        // A full load replaces the rows first, so any key goes.
        let mut load = f.load(T, "id,k,v\n1,a,x\n2,a,y\n");
        load.primary_key = strings(&["k"]);
        f.apply(vec![load]).unwrap();
        assert_eq!(f.info(T).primary_key, strings(&["k"]));
        assert_eq!(f.csv(T), "id,k,v\n2,a,y\n");

        // A key column the table does not have: it keeps its key too.
        let mut load = f.load(T, "id,k,v\n1,a,x\n");
        load.primary_key = strings(&["nope"]);
        f.apply(vec![load]).unwrap();
        assert_eq!(f.info(T).primary_key, strings(&["k"]));

        // An exact empty key removes it; an empty one otherwise keeps it.
        let load = f.load(T, "id,k,v\n1,a,x\n");
        f.apply(vec![load]).unwrap();
        assert_eq!(f.info(T).primary_key, strings(&["k"]));
        let mut load = f.load(T, "id,k,v\n1,a,x\n2,a,y\n");
        load.exact_primary_key = true;
        f.apply(vec![load]).unwrap();
        assert!(f.info(T).primary_key.is_empty());
        assert_eq!(f.csv(T), "id,k,v\n1,a,x\n2,a,y\n");

        // A new table cannot be keyed on a column it does not have.
        let mut load = f.load("in.c-main.new", "id\n1\n");
        load.primary_key = strings(&["nope"]);
        let e = f.apply(vec![load]).unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("in.c-main.new"), "{e}");
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
