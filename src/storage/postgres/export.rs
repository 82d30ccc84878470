//! Exports from PostgreSQL: `COPY (SELECT …) TO STDOUT`, giving the same CSV bytes the
//! embedded store writes. PostgreSQL's CSV quotes exactly what berth's writer quotes (a
//! delimiter, a quote, a line end) but for two cases: an empty string (quoted, to tell it
//! from NULL — unless the NULL marker is another string: here a random one, which no value
//! equals) and the only field of a record (berth's writer quotes an empty one, PostgreSQL a
//! lone `\.`). So exports of two or more columns stream PostgreSQL's CSV as it comes, and
//! exports of one column decode COPY's text format and write it through berth's writer.
//! COPY takes no parameters, so the values of a filter are written into the query as
//! string literals (standard strings, quotes doubled: nothing in them is special).

use std::io::{BufRead, Write};

use postgres::Transaction;

use super::tables::find_table;
use crate::storage::check::{no_such_column, positions, select_columns};
use crate::storage::csv_out::{CsvOut, header, output};
use crate::storage::sql::{PgRes as Res, to_i64};
use crate::storage::{ExportQuery, FilterOperator, StorageError, TableId};

/// Writes the selected rows of table `id` to `out` as CSV; returns how many.
pub(super) fn export_table(
    tx: &mut Transaction<'_>,
    id: &TableId,
    query: &ExportQuery,
    out: &mut dyn Write,
) -> Res<u64> {
    let table = find_table(tx, id)?.ok_or_else(|| StorageError::NoSuchTable(id.clone()))?;
    let (names, selected) = select_columns(id, &table.columns, query)?;
    let sql = select_sql(id, table.tid, &table.columns, query, &selected)?;
    // Rows in the order they were first loaded: a sort by `_row`, in memory where it fits
    // (an index on it would cost loads a third more time than the sort costs exports).
    tx.batch_execute(&format!("SET LOCAL work_mem TO '{SORT_MEMORY}'"))?;
    if names.len() > 1 {
        return stream_csv(tx, id, &sql, &names, out);
    }
    let mut csv = CsvOut::new(id, out, &names)?;
    let mut reader = tx.copy_out(&format!("COPY ({sql}) TO STDOUT"))?;
    let mut line = Vec::new();
    let mut field = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| StorageError::Io {
                path: format!("export of {id} from PostgreSQL").into(),
                source: e,
            })?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        for raw in line.split(|&b| b == b'\t') {
            unescape(raw, &mut field);
            csv.field(&field)?;
        }
        csv.end_row()?;
    }
    Ok(csv.finish()?)
}

/// The memory an export's sort may take before it spills to disk.
const SORT_MEMORY: &str = "256MB";

/// Streams PostgreSQL's own CSV of `sql` to `out` after berth's header; returns the rows.
fn stream_csv(
    tx: &mut Transaction<'_>,
    id: &TableId,
    sql: &str,
    names: &[String],
    out: &mut dyn Write,
) -> Res<u64> {
    let null = crate::util::random_hex(16);
    let mut reader = tx.copy_out(&format!(
        "COPY ({sql}) TO STDOUT WITH (FORMAT csv, NULL '{null}')"
    ))?;
    out.write_all(&header(names)).map_err(|e| output(id, e))?;
    let mut rows = RowCounter::default();
    loop {
        let chunk = reader.fill_buf().map_err(|e| StorageError::Io {
            path: format!("export of {id} from PostgreSQL").into(),
            source: e,
        })?;
        if chunk.is_empty() {
            break;
        }
        rows.count(chunk);
        out.write_all(chunk).map_err(|e| output(id, e))?;
        let n = chunk.len();
        reader.consume(n);
        crate::interrupt::check().map_err(StorageError::from)?;
    }
    out.flush().map_err(|e| output(id, e))?;
    Ok(rows.rows)
}

/// Counts the records of CSV as it streams by: line ends outside quotes.
#[derive(Debug, Default)]
struct RowCounter {
    rows: u64,
    quoted: bool,
}

impl RowCounter {
    fn count(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.rows += 1,
                _ => {}
            }
        }
    }
}

/// The SELECT of the columns at `selected` in the rows `query` asks for.
fn select_sql(
    id: &TableId,
    tid: i64,
    columns: &[String],
    query: &ExportQuery,
    selected: &[usize],
) -> Result<String, StorageError> {
    let cols: Vec<String> = selected.iter().map(|p| format!("c{p}")).collect();
    let mut sql = format!("SELECT {} FROM t{tid} WHERE true", cols.join(", "));
    if let Some(filter) = &query.filter {
        let pos = positions(columns, std::slice::from_ref(&filter.column))
            .map_err(|c| no_such_column(id, c))?[0];
        let values: Vec<String> = filter.values.iter().map(|v| literal(v)).collect();
        let list = format!("ARRAY[{}]::text[]", values.join(", "));
        match filter.operator {
            FilterOperator::Eq => sql.push_str(&format!(" AND c{pos} = ANY({list})")),
            FilterOperator::Ne => sql.push_str(&format!(" AND c{pos} <> ALL({list})")),
        }
    }
    if let Some(since) = query.changed_since_ms {
        sql.push_str(&format!(" AND _changed >= {since}"));
    }
    sql.push_str(" ORDER BY _row");
    if let Some(limit) = query.limit {
        sql.push_str(&format!(" LIMIT {}", to_i64(limit)));
    }
    Ok(sql)
}

/// `value` as a standard SQL string literal. Text from storage holds no NUL (loads refuse
/// it), and with `standard_conforming_strings` a backslash is itself.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Decodes one field of COPY's text format into `out`: the escapes PostgreSQL writes
/// (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`, octal `\NNN`); `\N` (NULL) is empty.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if raw == b"\\N" {
        return;
    }
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 == raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = raw[i + 1];
        i += 2;
        match next {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(next - b'0');
                let mut k = 0;
                while k < 2 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_decode() {
        let mut out = Vec::new();
        for (raw, want) in [
            (&b"plain"[..], &b"plain"[..]),
            (b"a\\tb\\nc\\rd\\\\e", b"a\tb\nc\rd\\e"),
            (b"\\N", b""),
            (b"\\101\\102", b"AB"),
            (b"trailing\\", b"trailing\\"),
        ] {
            unescape(raw, &mut out);
            assert_eq!(out, want, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn rows_are_counted_across_quoted_line_ends_and_chunks() {
        let mut c = RowCounter::default();
        for chunk in [&b"a,\"x\n"[..], b"y\"\nb,", b"\"\"\"\"\n", b"c,d\n"] {
            c.count(chunk);
        }
        assert_eq!(c.rows, 3);
    }

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "'a\\b'");
    }
}
