//! Table loads (contract §6) in PostgreSQL: the same checks and registry changes as the
//! embedded store's, with the rows streamed through `COPY … FROM STDIN` (text format):
//! straight into the table when it has no primary key, else into a staging table that
//! one `INSERT … ON CONFLICT` merges (the last row of a key wins, and new keys keep the
//! order they first appeared in).

use std::io::{BufWriter, Write};

use postgres::Transaction;
use postgres::error::SqlState;

use super::tables::{TableRow, find_table};
use crate::storage::check::{Plan, columns_to_add, open_slice, open_source, plan, positions};
use crate::storage::csv_reader::CsvFile;
use crate::storage::sql::{Fail, PgRes as Res, json_list, to_i64, to_u64};
use crate::storage::{
    FilterOperator, LoadReport, MetadataEntry, StorageError, TableLoad, check_interrupt,
};

/// The write buffer in front of a COPY: the client sends what it buffers in one message.
const COPY_BUFFER: usize = 256 << 10;

/// Loads one table (contract §6), inside the caller's transaction; `n` numbers the load
/// within it (its staging table's name).
pub(super) fn load_table(
    tx: &mut Transaction<'_>,
    load: &TableLoad,
    now: i64,
    n: usize,
) -> Res<LoadReport> {
    let src = &load.source;
    let (first, csv_columns) = open_source(src, &src.paths[0])?;
    let target = prepare_table(tx, load, now, &csv_columns)?;
    let mut plan = plan(
        load,
        &target.columns,
        &target.before.primary_key,
        !target.created,
    )?;
    let tid = target.before.tid;
    let mut rows = target.before.rows;
    let mut deleted = 0;
    if !load.incremental && !target.created {
        tx.batch_execute(&format!("DELETE FROM t{tid}"))?;
        (rows, deleted) = (0, target.before.rows);
    }
    if plan.changes_key() {
        if unique_on(tx, tid, &plan.pk_positions)? {
            replace_primary_key(tx, load, tid, &plan)?;
        } else {
            plan.keep_key(&load.destination);
        }
    }
    if let Some((pos, filter)) = plan.delete_where {
        let op = match filter.operator {
            FilterOperator::Eq => "= ANY($1)",
            FilterOperator::Ne => "<> ALL($1)",
        };
        let n = tx.execute(
            &format!("DELETE FROM t{tid} WHERE c{pos} {op}"),
            &[&filter.values],
        )?;
        rows = rows.saturating_sub(n);
        deleted = n;
    }
    let csv_positions =
        positions(&target.columns, &csv_columns).map_err(|c| invalid(load, c.to_string()))?;
    let copy = Copy {
        load,
        tid,
        now,
        csv_positions: &csv_positions,
        csv_columns: &csv_columns,
    };
    let loaded = if plan.pk_positions.is_empty() {
        copy.straight(tx, first)?
    } else {
        copy.merge(tx, first, &plan.pk_positions, n)?
    };
    let rows = if plan.pk_positions.is_empty() {
        rows + loaded
    } else {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM t{tid}"), &[])?
            .get(0);
        to_u64(n)
    };
    update_registry(tx, load, tid, rows, now)?;
    merge_metadata(tx, load, tid, "", &load.metadata, now)?;
    for (column, entries) in &load.column_metadata {
        merge_metadata(tx, load, tid, column, entries, now)?;
    }
    Ok(LoadReport {
        table: load.destination.clone(),
        created: target.created,
        columns_added: if target.created {
            Vec::new()
        } else {
            target.added
        },
        rows_loaded: loaded,
        rows_deleted: deleted,
        rows,
    })
}

fn invalid(load: &TableLoad, reason: String) -> Fail<postgres::Error> {
    StorageError::InvalidLoad {
        table: load.destination.clone(),
        reason,
    }
    .into()
}

/// The table a load writes into, once it has every column of the CSV.
struct Target {
    before: TableRow,
    created: bool,
    added: Vec<String>,
    columns: Vec<String>,
}

/// The table to load into: created, or widened to have every column of the CSV.
fn prepare_table(
    tx: &mut Transaction<'_>,
    load: &TableLoad,
    now: i64,
    csv_columns: &[String],
) -> Res<Target> {
    let (before, created, added) = match find_table(tx, &load.destination)? {
        None => (
            create_table(tx, load, now, csv_columns.len())?,
            true,
            csv_columns.to_vec(),
        ),
        Some(table) => {
            let added = columns_to_add(load, &table.columns, csv_columns)?;
            let width = table.columns.len();
            if !added.is_empty() {
                let defs: Vec<String> = (width + 1..=width + added.len())
                    .map(|p| format!("ADD COLUMN c{p} text NOT NULL DEFAULT ''"))
                    .collect();
                tx.batch_execute(&format!("ALTER TABLE t{} {}", table.tid, defs.join(", ")))?;
            }
            (table, false, added)
        }
    };
    let statement = tx.prepare("INSERT INTO columns (tid, pos, name) VALUES ($1, $2, $3)")?;
    for (i, name) in added.iter().enumerate() {
        let pos = i32::try_from(before.columns.len() + i + 1).unwrap_or(i32::MAX);
        tx.execute(&statement, &[&before.tid, &pos, name])?;
    }
    let mut columns = before.columns.clone();
    columns.extend(added.iter().cloned());
    Ok(Target {
        before,
        created,
        added,
        columns,
    })
}

/// Registers a new table and creates its data table with `width` columns.
fn create_table(
    tx: &mut Transaction<'_>,
    load: &TableLoad,
    now: i64,
    width: usize,
) -> Res<TableRow> {
    let id = &load.destination;
    let prov = &load.provenance;
    let tid: i64 = tx
        .query_one(
            "INSERT INTO tables (stage, bucket, name, primary_key, row_count, created_ms,
                last_change_ms, last_import_ms, created_component, created_config,
                created_row, updated_component, updated_config, updated_row)
             VALUES ($1, $2, $3, '[]', 0, $4, $4, $4, $5, $6, $7, $5, $6, $7)
             RETURNING tid",
            &[
                &id.stage().as_str(),
                &id.bucket(),
                &id.table(),
                &now,
                &prov.component,
                &prov.config,
                &prov.row,
            ],
        )?
        .get(0);
    let defs: Vec<String> = (1..=width)
        .map(|p| format!(", c{p} text NOT NULL DEFAULT ''"))
        .collect();
    tx.batch_execute(&format!(
        "CREATE TABLE t{tid} (_row bigint GENERATED BY DEFAULT AS IDENTITY, \
         _changed bigint NOT NULL{})",
        defs.concat()
    ))?;
    Ok(TableRow {
        tid,
        columns: Vec::new(),
        primary_key: Vec::new(),
        rows: 0,
    })
}

/// Whether the table's rows are unique on the columns at `positions` (a missing value
/// counts as one value, so a key is never made where SQL's unique index would allow two
/// rows without one).
fn unique_on(tx: &mut Transaction<'_>, tid: i64, positions: &[usize]) -> Res<bool> {
    if positions.is_empty() {
        return Ok(true);
    }
    let cols: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM t{tid} GROUP BY {} HAVING count(*) > 1)",
        cols.join(", ")
    );
    let duplicated: bool = tx.query_one(&sql, &[])?.get(0);
    Ok(!duplicated)
}

/// Replaces the table's unique index by one on the new key, which its rows must be
/// unique on.
fn replace_primary_key(
    tx: &mut Transaction<'_>,
    load: &TableLoad,
    tid: i64,
    plan: &Plan<'_>,
) -> Res<()> {
    tx.batch_execute(&format!("DROP INDEX IF EXISTS t{tid}_pk"))?;
    if !plan.pk_positions.is_empty() {
        let cols: Vec<String> = plan.pk_positions.iter().map(|p| format!("c{p}")).collect();
        let created = tx.batch_execute(&format!(
            "CREATE UNIQUE INDEX t{tid}_pk ON t{tid} ({})",
            cols.join(", ")
        ));
        if let Err(e) = created {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(invalid(
                    load,
                    format!(
                        "its rows are not unique on the new primary key ({})",
                        plan.primary_key.join(", ")
                    ),
                ));
            }
            return Err(e.into());
        }
    }
    tx.execute(
        "UPDATE tables SET primary_key = $1 WHERE tid = $2",
        &[&json_list(&plan.primary_key), &tid],
    )?;
    Ok(())
}

/// The rows of one load on their way in.
struct Copy<'a> {
    load: &'a TableLoad,
    tid: i64,
    now: i64,
    /// The position of each CSV column in the table.
    csv_positions: &'a [usize],
    csv_columns: &'a [String],
}

impl Copy<'_> {
    fn targets(&self) -> String {
        let cols: Vec<String> = self.csv_positions.iter().map(|p| format!("c{p}")).collect();
        cols.join(", ")
    }

    /// Copies every row straight into the table, each with the commit time.
    fn straight(&self, tx: &mut Transaction<'_>, first: CsvFile) -> Res<u64> {
        let sql = format!(
            "COPY t{} (_changed, {}) FROM STDIN",
            self.tid,
            self.targets()
        );
        let prefix = format!("{}\t", self.now);
        self.stream(tx, &sql, first, |_, out| out.write_all(prefix.as_bytes()))
    }

    /// Copies every row into a staging table, then merges it into the table by key.
    fn merge(
        &self,
        tx: &mut Transaction<'_>,
        first: CsvFile,
        pk_positions: &[usize],
        n: usize,
    ) -> Res<u64> {
        let stage = format!("berth_stage_{n}");
        let defs: Vec<String> = self
            .csv_positions
            .iter()
            .map(|p| format!(", c{p} text"))
            .collect();
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {stage} (line bigint{}) ON COMMIT DROP",
            defs.concat()
        ))?;
        let sql = format!("COPY {stage} (line, {}) FROM STDIN", self.targets());
        let loaded = self.stream(tx, &sql, first, |line, out| write!(out, "{line}\t"))?;
        let key: Vec<String> = pk_positions.iter().map(|p| format!("c{p}")).collect();
        let key = key.join(", ");
        let updates: Vec<String> = self
            .csv_positions
            .iter()
            .filter(|p| !pk_positions.contains(p))
            .map(|p| format!(", c{p} = excluded.c{p}"))
            .collect();
        let targets = self.targets();
        tx.batch_execute(&format!(
            "INSERT INTO t{tid} (_changed, {targets})
             SELECT {now}, {targets} FROM (
                SELECT DISTINCT ON ({key}) {targets},
                    min(line) OVER (PARTITION BY {key}) AS first
                FROM {stage} ORDER BY {key}, line DESC) AS last
             ORDER BY first
             ON CONFLICT ({key}) DO UPDATE SET _changed = excluded._changed{updates}",
            tid = self.tid,
            now = self.now,
            updates = updates.concat()
        ))?;
        Ok(loaded)
    }

    /// Streams the rows of every source file into the COPY `sql`, each row started by
    /// `lead` (given the row's number); returns how many rows.
    fn stream(
        &self,
        tx: &mut Transaction<'_>,
        sql: &str,
        mut first: CsvFile,
        mut lead: impl FnMut(u64, &mut dyn Write) -> std::io::Result<()>,
    ) -> Res<u64> {
        let writer = tx.copy_in(sql)?;
        let mut out = BufWriter::with_capacity(COPY_BUFFER, writer);
        let mut n = 0u64;
        let src = &self.load.source;
        let io = |e: std::io::Error| -> Fail<postgres::Error> { copy_failed(e) };
        n = copy_rows(&mut first, &mut out, n, &mut lead).map_err(|e| e.map(io))?;
        drop(first);
        for path in &src.paths[1..] {
            let mut file = open_slice(src, path, self.csv_columns)?;
            n = copy_rows(&mut file, &mut out, n, &mut lead).map_err(|e| e.map(io))?;
        }
        let writer = out.into_inner().map_err(|e| copy_failed(e.into_error()))?;
        writer.finish()?;
        Ok(n)
    }
}

/// What went wrong while rows were written into a COPY: the connection's error.
fn copy_failed(e: std::io::Error) -> Fail<postgres::Error> {
    StorageError::Io {
        path: "COPY to PostgreSQL".into(),
        source: e,
    }
    .into()
}

/// A failure while copying rows: the CSV's (or an interrupt), or the connection's.
enum CopyError {
    Storage(StorageError),
    Io(std::io::Error),
}

impl CopyError {
    fn map(
        self,
        io: impl FnOnce(std::io::Error) -> Fail<postgres::Error>,
    ) -> Fail<postgres::Error> {
        match self {
            CopyError::Storage(e) => e.into(),
            CopyError::Io(e) => io(e),
        }
    }
}

/// Writes each record of `file` as one line of COPY text: fields escaped, tab-separated.
fn copy_rows(
    file: &mut CsvFile,
    out: &mut dyn Write,
    mut n: u64,
    lead: &mut impl FnMut(u64, &mut dyn Write) -> std::io::Result<()>,
) -> Result<u64, CopyError> {
    while let Some(record) = file.next().map_err(CopyError::Storage)? {
        n += 1;
        lead(n, out).map_err(CopyError::Io)?;
        for (i, field) in record.fields().enumerate() {
            if i > 0 {
                out.write_all(b"\t").map_err(CopyError::Io)?;
            }
            write_escaped(out, field.as_bytes()).map_err(CopyError::Io)?;
        }
        out.write_all(b"\n").map_err(CopyError::Io)?;
        check_interrupt(n).map_err(CopyError::Storage)?;
    }
    Ok(n)
}

/// One field in COPY's text format: a backslash, tab, newline or carriage return is
/// escaped; everything else is itself.
fn write_escaped(out: &mut dyn Write, field: &[u8]) -> std::io::Result<()> {
    let mut start = 0;
    for (i, &b) in field.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.write_all(&field[start..i])?;
        out.write_all(escaped)?;
        start = i + 1;
    }
    out.write_all(&field[start..])
}

/// Records the load in the table's registry entry: its rows, times and provenance.
fn update_registry(
    tx: &mut Transaction<'_>,
    load: &TableLoad,
    tid: i64,
    rows: u64,
    now: i64,
) -> Res<()> {
    let prov = &load.provenance;
    tx.execute(
        "UPDATE tables SET row_count = $1, last_change_ms = $2, last_import_ms = $2,
            updated_component = $3, updated_config = $4, updated_row = $5,
            description = coalesce($6, description)
         WHERE tid = $7",
        &[
            &to_i64(rows),
            &now,
            &prov.component,
            &prov.config,
            &prov.row,
            &load.description,
            &tid,
        ],
    )?;
    Ok(())
}

/// Sets each entry on `column` (`""`: the table itself) by key, naming the load's
/// component as its provider. An update first and an insert only for a new key: an
/// entry's id stays, and no id is spent on an update (ids show in `tables --json`).
fn merge_metadata(
    tx: &mut Transaction<'_>,
    load: &TableLoad,
    tid: i64,
    column: &str,
    entries: &[MetadataEntry],
    now: i64,
) -> Res<()> {
    let provider = &load.provenance.component;
    for e in entries {
        let updated = tx.execute(
            "UPDATE metadata SET value = $4, provider = $5, timestamp_ms = $6
             WHERE tid = $1 AND col = $2 AND key = $3",
            &[&tid, &column, &e.key, &e.value, provider, &now],
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO metadata (tid, col, key, value, provider, timestamp_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&tid, &column, &e.key, &e.value, provider, &now],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_would_end_a_field_or_a_row() {
        let mut out = Vec::new();
        write_escaped(&mut out, b"a\\b\tc\nd\re, \"f\"").unwrap();
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re, \"f\"");
    }
}
