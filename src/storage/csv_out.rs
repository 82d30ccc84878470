//! Exports as CSV: the one writer every backend streams a table's rows through, so that
//! the same rows make the same bytes whichever store holds them (header row, `,`, `"`
//! quoting only where needed, `\n` line ends).

use std::io::{self, Write};

use super::{StorageError, TableId};

/// One export in progress.
pub(crate) struct CsvOut<'a> {
    table: &'a TableId,
    w: csv::Writer<&'a mut dyn Write>,
    rows: u64,
}

impl<'a> CsvOut<'a> {
    /// Starts the export of `table` to `out` with its header row.
    pub fn new(
        table: &'a TableId,
        out: &'a mut dyn Write,
        header: &[String],
    ) -> Result<CsvOut<'a>, StorageError> {
        let mut w = csv::WriterBuilder::new()
            .buffer_capacity(crate::util::IO_BUFFER)
            .from_writer(out);
        w.write_record(header).map_err(|e| output(table, e))?;
        Ok(CsvOut { table, w, rows: 0 })
    }

    pub fn field(&mut self, field: &[u8]) -> Result<(), StorageError> {
        self.w.write_field(field).map_err(|e| output(self.table, e))
    }

    /// Ends the current row; looks at whether the operator asked berth to stop.
    pub fn end_row(&mut self) -> Result<(), StorageError> {
        self.w
            .write_record(None::<&[u8]>)
            .map_err(|e| output(self.table, e))?;
        self.rows += 1;
        super::check_interrupt(self.rows)
    }

    /// Flushes what is left; returns the number of rows written.
    pub fn finish(mut self) -> Result<u64, StorageError> {
        self.w.flush().map_err(|e| output(self.table, e))?;
        Ok(self.rows)
    }
}

/// The header row of `names` as [`CsvOut`] writes it, for an export whose rows come
/// already encoded.
pub(crate) fn header(names: &[String]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing into memory cannot fail.
    let _ = w.write_record(names);
    w.into_inner().unwrap_or_default()
}

/// Writing the export failed: the reader went away, or the disk is full.
pub(crate) fn output(id: &TableId, e: impl Into<io::Error>) -> StorageError {
    StorageError::Output {
        table: id.clone(),
        source: e.into(),
    }
}
