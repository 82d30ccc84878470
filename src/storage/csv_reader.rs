//! Strict, streaming CSV reading for table loads.
//!
//! csv-core does the parsing. It never fails: it repairs what does not follow RFC 4180
//! (`"ab"c` reads as `abc`, `a"b` as `a"b`, an unclosed quote swallows the rest of the
//! file as one field). A store must refuse such files instead of loading what a repair
//! guessed, so every record is checked against the bytes it was parsed from: it is
//! accepted only if those bytes are the canonical encoding of the fields csv-core found,
//! each field either as it is (and then without a quote in it) or enclosed in quotes with
//! every quote inside doubled. That is exactly what a strict parser accepts, without a
//! second parser: where the bytes and the canonical encoding first differ is where the
//! file is wrong, and what is there says how.
//!
//! Records are read into a buffer that holds at least the current record, so memory
//! follows the longest record, not the file; [`MAX_RECORD_BYTES`] bounds even that.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use csv_core::{ReadRecordResult, ReaderBuilder};

use super::{CsvProblem, MAX_COLUMNS, MAX_RECORD_BYTES, StorageError};

/// The first size of the buffer a record's fields are decoded into (it grows as needed).
const FIELD_BUFFER: usize = 64 << 10;

const READ_CHUNK: usize = 256 << 10;
const BOM: &[u8] = b"\xef\xbb\xbf";

/// One CSV file (or gzipped CSV file), read record by record.
pub(crate) struct CsvFile {
    path: PathBuf,
    src: Box<dyn Read>,
    core: csv_core::Reader,
    delimiter: u8,
    quote: u8,
    /// Raw input; `buf[start..end]` is not yet returned as records, `buf[pos..end]` not
    /// yet given to csv-core.
    buf: Vec<u8>,
    start: usize,
    pos: usize,
    end: usize,
    eof: bool,
    /// The line `buf[start]` is on.
    line: u64,
    first: bool,
    /// The number of fields every record must have, once known.
    width: Option<usize>,
    out: Vec<u8>,
    ends: Vec<usize>,
}

/// One record: its fields, already checked to be UTF-8.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    text: &'a str,
    ends: &'a [usize],
    /// The line the record starts on.
    pub line: u64,
}

impl<'a> Record<'a> {
    pub fn fields(&self) -> impl Iterator<Item = &'a str> + 'a {
        let text = self.text;
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            // Every end was checked to be a char boundary in `check_record`.
            let field = text.get(start..end).unwrap_or_default();
            start = end;
            field
        })
    }
}

impl std::fmt::Debug for CsvFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvFile")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl CsvFile {
    /// Opens `path`, gunzipping it if its name ends in `.gz`.
    pub fn open(path: &Path, delimiter: u8, quote: u8) -> Result<CsvFile, StorageError> {
        let file = File::open(path).map_err(|e| source_error(path, e))?;
        let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        if !is_file {
            return Err(StorageError::Source {
                path: path.to_owned(),
                message: "not a regular file".into(),
            });
        }
        let src: Box<dyn Read> = if path.as_os_str().as_encoded_bytes().ends_with(b".gz") {
            Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(READ_CHUNK, file),
            ))
        } else {
            Box::new(file)
        };
        Ok(CsvFile::from_reader(path, src, delimiter, quote))
    }

    fn from_reader(path: &Path, src: Box<dyn Read>, delimiter: u8, quote: u8) -> CsvFile {
        let core = ReaderBuilder::new()
            .delimiter(delimiter)
            .quote(quote)
            .double_quote(true)
            .escape(None)
            .comment(None)
            .build();
        CsvFile {
            path: path.to_owned(),
            src,
            core,
            delimiter,
            quote,
            buf: vec![0; 2 * READ_CHUNK],
            start: 0,
            pos: 0,
            end: 0,
            eof: false,
            line: 1,
            first: true,
            width: None,
            out: vec![0; FIELD_BUFFER],
            ends: vec![0; 64],
        }
    }

    /// Every record must have `width` fields.
    pub fn set_width(&mut self, width: usize) {
        self.width = Some(width);
    }

    /// Reads the header row: the column names, which must be non-empty and distinct.
    pub fn read_header(&mut self) -> Result<Vec<String>, StorageError> {
        let (names, line): (Vec<String>, u64) = match self.next()? {
            Some(r) => (r.fields().map(str::to_owned).collect(), r.line),
            None => return Err(self.problem(self.line, CsvProblem::MissingHeader)),
        };
        check_column_names(&names).map_err(|p| self.problem(line, p))?;
        self.width = Some(names.len());
        Ok(names)
    }

    fn problem(&self, line: u64, problem: CsvProblem) -> StorageError {
        StorageError::Csv {
            path: self.path.clone(),
            line,
            problem,
        }
    }

    /// The next record, or `None` at the end of the file.
    pub fn next(&mut self) -> Result<Option<Record<'_>>, StorageError> {
        let Some((nout, nend)) = self.parse_record()? else {
            return Ok(None);
        };
        let (raw, line) = self.take_raw();
        let text = self.check_record(raw, nout, nend, line)?;
        Ok(Some(Record {
            text,
            ends: &self.ends[..nend],
            line,
        }))
    }

    /// Runs csv-core until `out` and `ends` hold a whole record; returns how much of each
    /// it filled, or `None` at the end of the file.
    fn parse_record(&mut self) -> Result<Option<(usize, usize)>, StorageError> {
        let (mut nout, mut nend) = (0, 0);
        loop {
            if self.pos == self.end && !self.eof {
                self.fill()?;
                continue;
            }
            let (res, nin, o, e) = self.core.read_record(
                &self.buf[self.pos..self.end],
                &mut self.out[nout..],
                &mut self.ends[nend..],
            );
            self.pos += nin;
            nout += o;
            nend += e;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.grow_out()?,
                ReadRecordResult::OutputEndsFull => self.grow_ends()?,
                ReadRecordResult::Record => return Ok(Some((nout, nend))),
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// Makes room for a longer record, up to [`MAX_RECORD_BYTES`].
    fn grow_out(&mut self) -> Result<(), StorageError> {
        if self.out.len() >= MAX_RECORD_BYTES {
            return Err(self.problem(self.line, CsvProblem::RecordTooLarge));
        }
        self.out.resize(self.out.len() * 2, 0);
        Ok(())
    }

    /// Makes room for more fields, up to [`MAX_COLUMNS`].
    fn grow_ends(&mut self) -> Result<(), StorageError> {
        if self.ends.len() > MAX_COLUMNS {
            let found = self.ends.len();
            let problem = match self.width {
                Some(expected) => CsvProblem::FieldCount { found, expected },
                None => CsvProblem::TooManyColumns { found },
            };
            return Err(self.problem(self.line, problem));
        }
        self.ends.resize(self.ends.len() * 2, 0);
        Ok(())
    }

    /// Marks the record just parsed as returned. Returns where its bytes are in `buf`, as
    /// they were in the file less the blank lines csv-core skips before a record (and the
    /// BOM it skips before the first), and the line it starts on.
    fn take_raw(&mut self) -> (Range<usize>, u64) {
        let mut from = self.start;
        if self.first {
            if self.buf[from..self.pos].starts_with(BOM) {
                from += BOM.len();
            }
            self.first = false;
        }
        let blank = self.buf[from..self.pos]
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let line = self.line + count_lines(&self.buf[from..from + blank]);
        self.start = self.pos;
        self.line = self.core.line();
        (from + blank..self.pos, line)
    }

    /// Checks the record parsed into `out[..nout]` and `ends[..nend]` from `buf[raw]`,
    /// which starts on `line`: its quoting, its width and its UTF-8. Returns its text.
    fn check_record(
        &self,
        raw: Range<usize>,
        nout: usize,
        nend: usize,
        line: u64,
    ) -> Result<&str, StorageError> {
        let raw = &self.buf[raw];
        let out = &self.out[..nout];
        let ends = &self.ends[..nend];
        if let Err((at, problem)) = check_quoting(raw, out, ends, self.delimiter, self.quote) {
            let line = line + count_lines(&raw[..at.min(raw.len())]);
            return Err(self.problem(line, problem));
        }
        if let Some(expected) = self.width
            && nend != expected
        {
            let problem = CsvProblem::FieldCount {
                found: nend,
                expected,
            };
            return Err(self.problem(line, problem));
        }
        let text = std::str::from_utf8(out).map_err(|e| {
            let at = e.valid_up_to();
            let field = ends.partition_point(|&end| end <= at) + 1;
            self.problem(
                line + count_lines(&out[..at]),
                CsvProblem::InvalidUtf8 { field },
            )
        })?;
        // A character split across two fields is valid in the joined text but in neither
        // field.
        if let Some(n) = ends.iter().position(|&end| !text.is_char_boundary(end)) {
            return Err(self.problem(line, CsvProblem::InvalidUtf8 { field: n + 1 }));
        }
        // No store's text holds a NUL (PostgreSQL's cannot): refused alike by every backend.
        if let Some(at) = out.iter().position(|&b| b == 0) {
            let field = ends.partition_point(|&end| end <= at) + 1;
            let line = line + count_lines(&out[..at]);
            return Err(self.problem(line, CsvProblem::NulCharacter { field }));
        }
        Ok(text)
    }

    /// Reads more input, first making room for it by dropping returned records, or by
    /// growing the buffer when the current record fills it.
    fn fill(&mut self) -> Result<(), StorageError> {
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.pos -= self.start;
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_CHUNK / 2 {
                if self.end > MAX_RECORD_BYTES {
                    return Err(self.problem(self.line, CsvProblem::RecordTooLarge));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(source_error(&self.path, e)),
            }
        }
    }
}

/// The fuzz target `csv` (fuzz/): reads `src` as a table's CSV, as a load reads it — its
/// header, or without one every record `width` fields wide — to the end or the first
/// problem; the number of fields read.
#[cfg(feature = "fuzzing")]
pub fn fuzz_read(
    src: Box<dyn Read>,
    delimiter: u8,
    quote: u8,
    width: Option<usize>,
) -> Result<usize, StorageError> {
    let mut csv = CsvFile::from_reader(Path::new("fuzz.csv"), src, delimiter, quote);
    match width {
        Some(w) => csv.set_width(w),
        None => {
            csv.read_header()?;
        }
    }
    let mut fields = 0;
    while let Some(record) = csv.next()? {
        fields += record.fields().count();
    }
    Ok(fields)
}

/// Checks column names given or read from a header.
pub(crate) fn check_column_names(names: &[String]) -> Result<(), CsvProblem> {
    if names.len() > MAX_COLUMNS {
        return Err(CsvProblem::TooManyColumns { found: names.len() });
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(CsvProblem::EmptyColumnName { column: i + 1 });
        }
        if !seen.insert(name.as_str()) {
            return Err(CsvProblem::DuplicateColumnName { name: name.clone() });
        }
    }
    Ok(())
}

/// A missing or unreadable source is the job's problem (it names files it did not write,
/// or wrote broken gzip); anything else reading it is berth's.
fn source_error(path: &Path, e: io::Error) -> StorageError {
    let message = match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
            format!("not a valid gzip file ({e})")
        }
        _ => {
            return StorageError::Io {
                path: path.to_owned(),
                source: e,
            };
        }
    };
    StorageError::Source {
        path: path.to_owned(),
        message,
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Checks that `raw` is the canonical encoding of the fields csv-core parsed from it
/// (`out` split at `ends`); on failure, says where in `raw` and what is wrong.
fn check_quoting(
    raw: &[u8],
    out: &[u8],
    ends: &[usize],
    delimiter: u8,
    quote: u8,
) -> Result<(), (usize, CsvProblem)> {
    // Without a quote every field is its raw bytes: nothing to repair, nothing to check.
    if !raw.contains(&quote) {
        return Ok(());
    }
    let mut p = 0;
    let mut start = 0;
    for (n, &end) in ends.iter().enumerate() {
        let value = &out[start..end];
        start = end;
        if n > 0 {
            if raw.get(p) != Some(&delimiter) {
                return Err((p, CsvProblem::CharactersAfterClosingQuote));
            }
            p += 1;
        }
        if raw.get(p) == Some(&quote) {
            p = check_quoted_field(raw, p, value, quote)?;
        } else {
            if let Some(k) = value.iter().position(|&b| b == quote) {
                return Err((p + k, CsvProblem::QuoteInUnquotedField));
            }
            p += value.len();
        }
    }
    match raw.get(p) {
        None | Some(b'\n' | b'\r') => Ok(()),
        Some(_) => Err((p, CsvProblem::CharactersAfterClosingQuote)),
    }
}

/// Checks that the field whose opening quote is `raw[open]` encloses `value` with every
/// quote in it doubled; returns where the raw bytes after its closing quote start.
fn check_quoted_field(
    raw: &[u8],
    open: usize,
    value: &[u8],
    quote: u8,
) -> Result<usize, (usize, CsvProblem)> {
    // Where the bytes differ from the canonical encoding: the end of the record means the
    // quote was never closed, anything else comes after a closing quote.
    let differs = |at: usize| {
        if at >= raw.len() {
            (open, CsvProblem::UnclosedQuote)
        } else {
            (at, CsvProblem::CharactersAfterClosingQuote)
        }
    };
    let mut p = open + 1;
    let mut rest = value;
    loop {
        // Up to and including the next quote in the value, which the raw bytes must have
        // doubled.
        let (chunk, escaped) = match rest.iter().position(|&b| b == quote) {
            Some(k) => (&rest[..=k], true),
            None => (rest, false),
        };
        let have = raw.get(p..).unwrap_or_default();
        let same = have.iter().zip(chunk).take_while(|(a, b)| a == b).count();
        if same < chunk.len() {
            return Err(differs(p + same));
        }
        p += chunk.len();
        rest = &rest[chunk.len()..];
        if !escaped {
            break;
        }
        if raw.get(p) != Some(&quote) {
            return Err(differs(p));
        }
        p += 1;
    }
    if raw.get(p) != Some(&quote) {
        return Err(differs(p));
    }
    Ok(p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(data: &[u8]) -> CsvFile {
        CsvFile::from_reader(
            Path::new("t.csv"),
            Box::new(io::Cursor::new(data.to_vec())),
            b',',
            b'"',
        )
    }

    fn read_all(data: &[u8]) -> Result<Vec<Vec<String>>, StorageError> {
        let mut r = reader(data);
        let mut rows = Vec::new();
        while let Some(rec) = r.next()? {
            rows.push(rec.fields().map(str::to_owned).collect());
        }
        Ok(rows)
    }

    fn problem(data: &[u8]) -> (u64, CsvProblem) {
        match read_all(data) {
            Err(StorageError::Csv { line, problem, .. }) => (line, problem),
            other => panic!("expected a CSV error, got {other:?}"),
        }
    }

    #[test]
    fn reads_rfc4180() {
        let rows = read_all(b"a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\n\"multi\nline\",\r\n\"\",z")
            .expect("valid");
        assert_eq!(
            rows,
            vec![
                vec!["a", "b"],
                vec!["x,1", "say \"hi\""],
                vec!["multi\nline", ""],
                vec!["", "z"],
            ]
        );
    }

    #[test]
    fn skips_a_bom_and_blank_lines() {
        let rows = read_all(b"\xef\xbb\xbfa,b\n\n1,2\n\r\n3,4\n\n").expect("valid");
        assert_eq!(rows, vec![vec!["a", "b"], vec!["1", "2"], vec!["3", "4"]]);
    }

    #[test]
    fn refuses_repairs_naming_the_line() {
        assert_eq!(
            problem(b"a,b\n1,2\n\"x\"y,3\n"),
            (3, CsvProblem::CharactersAfterClosingQuote)
        );
        assert_eq!(
            problem(b"a,b\n1,2\n3,x\"y\n"),
            (3, CsvProblem::QuoteInUnquotedField)
        );
        assert_eq!(
            problem(b"a,b\n1,2\n3,\"x\n4,5\n6,7\n"),
            (3, CsvProblem::UnclosedQuote)
        );
        assert_eq!(problem(b"a,b\n1,\"x\"\"\n"), (2, CsvProblem::UnclosedQuote));
        assert_eq!(
            problem(b"a,b\n\"multi\nline\",2\n3,\"a\" \n"),
            (4, CsvProblem::CharactersAfterClosingQuote)
        );
        // The problem's own line, not the record's first, when a field spans lines.
        assert_eq!(
            problem(b"a,b\n\"x\ny\nz\"!,2\n"),
            (4, CsvProblem::CharactersAfterClosingQuote)
        );
    }

    #[test]
    fn refuses_invalid_utf8_naming_line_and_field() {
        assert_eq!(
            problem(b"a,b\n1,2\n3,\xff\n"),
            (3, CsvProblem::InvalidUtf8 { field: 2 })
        );
        // Half a character in each field: the joined text would be valid.
        assert_eq!(
            problem(b"a,b\n\xc3,\xa9\n"),
            (2, CsvProblem::InvalidUtf8 { field: 1 })
        );
    }

    #[test]
    fn headers_and_widths() {
        let mut r = reader(b"a,b\n1,2\n3\n");
        assert_eq!(r.read_header().expect("header"), vec!["a", "b"]);
        assert!(r.next().expect("row").is_some());
        match r.next() {
            Err(StorageError::Csv { line, problem, .. }) => {
                assert_eq!(line, 3);
                assert_eq!(
                    problem,
                    CsvProblem::FieldCount {
                        found: 1,
                        expected: 2
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        for (data, want) in [
            (&b""[..], CsvProblem::MissingHeader),
            (b"a,,c\n", CsvProblem::EmptyColumnName { column: 2 }),
            (
                b"a,b,a\n",
                CsvProblem::DuplicateColumnName { name: "a".into() },
            ),
        ] {
            match reader(data).read_header() {
                Err(StorageError::Csv { problem, line, .. }) => {
                    assert_eq!(problem, want);
                    assert_eq!(line, 1);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn records_larger_than_the_buffer() {
        let big = "x".repeat(3 * READ_CHUNK);
        let data = format!("a,b\n\"{big}\",1\n2,3\n");
        let rows = read_all(data.as_bytes()).expect("valid");
        assert_eq!(rows[1][0].len(), big.len());
        assert_eq!(rows[2], vec!["2", "3"]);
        // An unclosed quote far from the end is still found at its line.
        let data = format!("a,b\n1,2\n\"{big}\n");
        assert_eq!(problem(data.as_bytes()), (3, CsvProblem::UnclosedQuote));
    }

    #[test]
    fn reads_in_small_pieces() {
        // A reader that returns one byte at a time exercises every refill path.
        struct Trickle(io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(1);
                self.0.read(&mut buf[..n])
            }
        }
        let data = b"a,b\r\n\"1\r\n\",\"x\"\"y\"\r\n3,4".to_vec();
        let mut r = CsvFile::from_reader(
            Path::new("t.csv"),
            Box::new(Trickle(io::Cursor::new(data))),
            b',',
            b'"',
        );
        let mut rows = Vec::new();
        while let Some(rec) = r.next().expect("valid") {
            rows.push(rec.fields().map(str::to_owned).collect::<Vec<_>>());
        }
        assert_eq!(
            rows,
            vec![vec!["a", "b"], vec!["1\r\n", "x\"y"], vec!["3", "4"]]
        );
    }
}
