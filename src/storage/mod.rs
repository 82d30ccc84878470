//! Project storage: the tables, files and states that jobs read before they run and write,
//! all at once, after.
//!
//! [`Storage`] is what the runner sees. Every backend implements it: the embedded default,
//! [`SqliteStorage`] (one SQLite file, no server), and the shared one, [`PgStorage`]
//! (PostgreSQL, for many hosts). Both keep file contents in a [`blob::BlobStore`]: a local
//! directory or an S3-compatible bucket. [`open`] picks them as [`StoreSettings`] say.
//! Reads are plain calls; everything a job writes is gathered into one [`Changes`] and
//! handed to [`Storage::apply`], which commits it as one transaction (contract §6): a
//! failed or killed job leaves storage exactly as it was.
//!
//! Tables travel as CSV both ways. A load names CSV files on disk, which the backend
//! streams in; an export streams CSV out. Neither ever holds a table in memory.

pub mod blob;
mod check;
mod configs;
mod csv_out;
mod csv_reader;
#[cfg(feature = "fuzzing")]
pub use csv_reader::fuzz_read as fuzz_csv;
pub mod postgres;
mod settings;
mod sql;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use postgres::PgStorage;
pub use settings::{FilesUrl, SYSTEM_CONFIG, StorageUrl, StoreSettings, open, read_config};
pub use sqlite::SqliteStorage;

/// The longest bucket or table name, in bytes (Keboola's limit).
pub const MAX_NAME_BYTES: usize = 96;

/// The most columns a table may have. SQLite allows 2000 per table; this leaves room and
/// is far beyond what a CSV-based component produces.
pub const MAX_COLUMNS: usize = 1000;

/// How many rows pass between two looks at whether the operator asked berth to stop.
const INTERRUPT_CHECK_ROWS: u64 = 1 << 14;

/// Ctrl-C only sets a flag: a long load or export looks at it every
/// [`INTERRUPT_CHECK_ROWS`] rows, and stops there (a load rolls back).
pub(crate) fn check_interrupt(rows: u64) -> Result<(), StorageError> {
    if rows % INTERRUPT_CHECK_ROWS == 0 {
        crate::interrupt::check()?;
    }
    Ok(())
}

/// The largest CSV record (one row) a load accepts, in bytes. Without a bound, one
/// unclosed quote near the top of a large file would read the whole file into memory as
/// a single field. Keboola's own limit is 16 MB per cell.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Which stage a table lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    In,
    Out,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::In => "in",
            Stage::Out => "out",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table's id, `stage.bucket.table`, e.g. `in.c-main.orders`.
///
/// Ids are compared exactly, case included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableId {
    stage: Stage,
    bucket: String,
    table: String,
}

impl TableId {
    pub fn new(stage: Stage, bucket: &str, table: &str) -> Result<TableId, StorageError> {
        let invalid = |reason: String| StorageError::InvalidTableId {
            id: format!("{stage}.{bucket}.{table}"),
            reason,
        };
        for (what, name) in [("bucket", bucket), ("table", table)] {
            if name.is_empty() {
                return Err(invalid(format!("the {what} name is empty")));
            }
            if name.len() > MAX_NAME_BYTES {
                return Err(invalid(format!(
                    "the {what} name is longer than {MAX_NAME_BYTES} characters"
                )));
            }
            if let Some(c) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
            {
                return Err(invalid(format!(
                    "the {what} name has {c:?}; only letters, digits, '_' and '-' are allowed"
                )));
            }
        }
        Ok(TableId {
            stage,
            bucket: bucket.to_owned(),
            table: table.to_owned(),
        })
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

impl FromStr for TableId {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<TableId, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidTableId {
            id: s.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split('.').collect();
        let [stage, bucket, table] = parts[..] else {
            return Err(invalid(
                "a table id has three parts, stage.bucket.table (e.g. in.c-main.orders)",
            ));
        };
        let stage = match stage {
            "in" => Stage::In,
            "out" => Stage::Out,
            _ => return Err(invalid("the stage must be \"in\" or \"out\"")),
        };
        TableId::new(stage, bucket, table).map_err(|e| match e {
            StorageError::InvalidTableId { reason, .. } => StorageError::InvalidTableId {
                id: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.stage, self.bucket, self.table)
    }
}

impl TryFrom<String> for TableId {
    type Error = StorageError;
    fn try_from(s: String) -> Result<TableId, StorageError> {
        s.parse()
    }
}

impl From<TableId> for String {
    fn from(id: TableId) -> String {
        id.to_string()
    }
}

/// Who wrote something: the component, and the configuration and row it ran.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Provenance {
    pub component: String,
    pub config: Option<String>,
    pub row: Option<String>,
}

/// A metadata entry as a load gives it (manifest `metadata` / `column_metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataEntry {
    pub key: String,
    pub value: String,
}

/// A stored metadata entry: who set it last, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub id: u64,
    pub key: String,
    pub value: String,
    /// The component whose load set it.
    pub provider: String,
    pub timestamp_ms: i64,
}

/// A table as storage describes it. Times are unix milliseconds, UTC.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableInfo {
    pub id: TableId,
    /// In table order: the order of the CSV that created it, then added columns.
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    pub created_ms: i64,
    pub last_change_ms: i64,
    pub last_import_ms: i64,
    pub rows: u64,
    pub metadata: Vec<Metadata>,
    pub column_metadata: BTreeMap<String, Vec<Metadata>>,
    pub description: Option<String>,
    pub created_by: Provenance,
    pub last_updated_by: Provenance,
}

/// `eq` or `ne`: the contract's operator of `where_*` and `delete_where_*` (§4, §5).
pub use crate::contract::mapping::Operator as FilterOperator;

/// Rows whose `column` is (`Eq`) or is not (`Ne`) one of `values`. Values compare as
/// exact strings. `Eq` with no values matches nothing, `Ne` with no values everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhereFilter {
    pub column: String,
    pub values: Vec<String>,
    pub operator: FilterOperator,
}

/// What to export of a table. The default exports everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    /// These columns in this order; `None` (or empty) for all, in table order.
    pub columns: Option<Vec<String>>,
    pub filter: Option<WhereFilter>,
    /// Only rows inserted or updated at or after this time (unix ms). Every row carries
    /// the commit time of the load that last wrote it.
    pub changed_since_ms: Option<i64>,
    pub limit: Option<u64>,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Increases with every upload, never reused.
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub size_bytes: u64,
    pub created_ms: i64,
    pub is_permanent: bool,
    pub is_public: bool,
    /// Recorded as the component asked; the embedded backend stores every file as it is.
    pub is_encrypted: bool,
}

/// Which files to list: every condition given must hold. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileQuery {
    /// The file has every one of these tags.
    pub tags_all: Vec<String>,
    /// The file has at least one of these tags (when not empty).
    pub include_any: Vec<String>,
    /// The file has none of these tags.
    pub exclude: Vec<String>,
    /// The file is one of these (when not empty).
    pub ids: Vec<u64>,
    /// Only files with a larger id: those uploaded after this one.
    pub since_id: Option<u64>,
    /// Only files created at this time or later (unix milliseconds).
    pub created_since_ms: Option<i64>,
    pub limit: Option<u64>,
}

/// Whose state: a configuration's, or one of its rows'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateKey {
    pub component: String,
    pub config: String,
    pub row: Option<String>,
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.component, self.config)?;
        if let Some(row) = &self.row {
            write!(f, "/{row}")?;
        }
        Ok(())
    }
}

/// CSV files that together make one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvSource {
    /// One file, or the slices of a sliced table, loaded in this order. A path ending in
    /// `.gz` is gunzipped while it streams.
    pub paths: Vec<PathBuf>,
    /// `None`: every file starts with a header row naming the columns (all the same).
    /// `Some`: the files are headless and these are the columns, as the contract's
    /// `columns` in a manifest means.
    pub columns: Option<Vec<String>>,
    pub delimiter: u8,
    pub enclosure: u8,
}

impl CsvSource {
    /// One file with a header, `,` and `"`: what a component writes by default.
    pub fn file(path: &Path) -> CsvSource {
        CsvSource {
            paths: vec![path.to_owned()],
            columns: None,
            delimiter: b',',
            enclosure: b'"',
        }
    }
}

/// One table a job writes (contract §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLoad {
    pub destination: TableId,
    pub source: CsvSource,
    /// `false` replaces all rows; `true` appends, or upserts when the table has a
    /// primary key (the last row with a key wins, also within one load).
    pub incremental: bool,
    /// The table's primary key. A different one replaces the table's (with a warning, as
    /// the original's output mapping changes it); one its rows are not unique on, or
    /// naming a column it lacks, is warned about and the table keeps its key. Empty keeps
    /// the table's key, unless [`exact_primary_key`](Self::exact_primary_key).
    pub primary_key: Vec<String>,
    /// `primary_key` is the key the table gets even when empty, which removes its key
    /// (the output mapping: the original always hands one on); otherwise an empty one
    /// keeps it (an import).
    pub exact_primary_key: bool,
    /// Rows to delete before an incremental load adds its rows.
    pub delete_where: Option<WhereFilter>,
    /// Merged by key into what the table has.
    pub metadata: Vec<MetadataEntry>,
    pub column_metadata: BTreeMap<String, Vec<MetadataEntry>>,
    /// Replaces the table's description when given.
    pub description: Option<String>,
    pub provenance: Provenance,
}

impl TableLoad {
    /// A full load of `source` into `destination` with nothing else set.
    pub fn new(destination: TableId, source: CsvSource, provenance: Provenance) -> TableLoad {
        TableLoad {
            destination,
            source,
            incremental: false,
            primary_key: Vec::new(),
            exact_primary_key: false,
            delete_where: None,
            metadata: Vec::new(),
            column_metadata: BTreeMap::new(),
            description: None,
            provenance,
        }
    }
}

/// One file a job uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUpload {
    pub path: PathBuf,
    /// The stored name: no `/`, not `.` or `..`, so `<id>_<name>` is always a plain file
    /// name when the file is given to a component.
    pub name: String,
    pub tags: Vec<String>,
    pub is_permanent: bool,
    pub is_public: bool,
    pub is_encrypted: bool,
}

/// Everything one job writes, applied all or nothing by [`Storage::apply`], in order:
/// tables (in the order given; the same table may appear twice), files, states, tags of
/// stored files, and the job's record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub tables: Vec<TableLoad>,
    pub files: Vec<FileUpload>,
    /// `None` clears the state.
    pub states: Vec<(StateKey, Option<Value>)>,
    /// The versions states had when the job read them ([`Storage::read_state`]): each must
    /// still be current at the commit, or the apply fails with
    /// [`StorageError::StateConflict`] — another job wrote it meanwhile.
    pub state_versions: Vec<(StateKey, u64)>,
    /// Tags added to files already stored (a file mapping's `processed_tags`, once the job
    /// that read the files succeeded). A tag a file has already is left as it is.
    pub file_tags: Vec<(u64, Vec<String>)>,
    /// The record of the successful job these changes are the outputs of, committed with
    /// them: a job id commits once. When a success of this id is recorded already, the
    /// apply fails with [`StorageError::AlreadyCommitted`] and nothing of it is visible.
    pub job: Option<JobRecord>,
}

/// A stored state and its version: how many times it was written (0: never).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredState {
    /// `None` when there is none (never set, or cleared).
    pub value: Option<Value>,
    pub version: u64,
}

/// What one table load did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    pub table: TableId,
    pub created: bool,
    /// Columns an existing table gained.
    pub columns_added: Vec<String>,
    /// Rows read from the CSV (with a primary key, some may have replaced others).
    pub rows_loaded: u64,
    /// Rows removed first: all of them by a full load, the matching ones by `delete_where`.
    pub rows_deleted: u64,
    /// Rows in the table afterwards.
    pub rows: u64,
}

/// What [`Storage::apply`] committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The commit time: every row written carries it. Strictly increases from one apply
    /// to the next of the tables it writes, in the order they commit, so `changed_since`
    /// never misses a commit made in the same millisecond or by another host.
    pub committed_ms: i64,
    pub tables: Vec<LoadReport>,
    pub files: Vec<FileInfo>,
}

/// The longest component, configuration, row or credentials id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A stored configuration of a component: what `berth config put` stored, for jobs that
/// name it by component and id instead of carrying it. Kept as the operator put it, `#`
/// values already encrypted: storage never sees a secret in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConfiguration {
    pub component: String,
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The configuration, as a job file's `configuration` (an object; for
    /// `keboola.variables` and `keboola.shared-code`, what those hold).
    #[serde(default = "empty_object")]
    pub configuration: Value,
    /// Its rows, in order.
    #[serde(default)]
    pub rows: Vec<StoredRow>,
    /// How many times it was put: the first put makes version 1. Set by storage; what a
    /// put is given is ignored.
    #[serde(default)]
    pub version: u64,
    /// When it was last put (unix ms). Set by storage.
    #[serde(default)]
    pub updated_ms: i64,
}

/// A row of a stored configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub is_disabled: bool,
    /// Merged over the configuration's when the row runs (an object).
    #[serde(default = "empty_object")]
    pub configuration: Value,
}

/// OAuth credentials of a component, as `berth oauth put` stored them: what the original's
/// OAuth broker returns (`id`, `authorizedFor`, `creator`, `created`, `#data`,
/// `oauthVersion`, `appKey`, `#appSecret`, …), `#` values encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthCredentials {
    pub component: String,
    pub id: String,
    /// The credentials (an object).
    pub credentials: Value,
    /// When they were last put (unix ms). Set by storage.
    #[serde(default)]
    pub updated_ms: i64,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// How a recorded job ended. Storage's own word for it, so that storage depends on no
/// other part of berth; the runner maps its result's status to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Success,
    Error,
}

impl JobStatus {
    /// The text stored for it, the same as its JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Error => "error",
        }
    }

    fn parse(text: &str) -> Option<JobStatus> {
        match text {
            "success" => Some(JobStatus::Success),
            "error" => Some(JobStatus::Error),
            _ => None,
        }
    }
}

impl FromStr for JobStatus {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<JobStatus, StorageError> {
        JobStatus::parse(s).ok_or_else(|| StorageError::Invalid {
            what: format!("job status {s:?}"),
            reason: "a job's status is \"success\" or \"error\"".into(),
        })
    }
}

/// What is kept of a job: a success is written in the transaction that commits its
/// outputs (then completed with its result), a failure once it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub component: String,
    pub config: Option<String>,
    pub status: JobStatus,
    /// The host the job ran on.
    pub host: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// The result document, as `berth run --json` prints it.
    pub result: Value,
}

/// Which job records to list: every condition given must hold. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub component: Option<String>,
    /// Jobs that started at or after this time (unix ms).
    pub since_ms: Option<i64>,
    pub limit: Option<u64>,
}

/// A project store. All methods may be called from several threads; backends serialise
/// what must be serialised.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Every table, sorted by id.
    fn tables(&self) -> Result<Vec<TableInfo>, StorageError>;

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>, StorageError>;

    /// Writes the selected rows to `out` as CSV (header row, `,`, `"` quoting where
    /// needed, `\n` line ends, UTF-8) in the order they were first loaded. Returns the
    /// number of rows written, header not counted.
    fn export(
        &self,
        id: &TableId,
        query: &ExportQuery,
        out: &mut dyn io::Write,
    ) -> Result<u64, StorageError>;

    /// Files matching `query`, newest first.
    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>, StorageError>;

    /// The content of file `id`, open for reading. The reader fails (at the end) if the
    /// content is not what was stored.
    fn open_file(&self, id: u64) -> Result<Box<dyn io::Read + Send>, StorageError>;

    /// A state and its version, read together.
    fn read_state(&self, key: &StateKey) -> Result<StoredState, StorageError>;

    fn state(&self, key: &StateKey) -> Result<Option<Value>, StorageError> {
        Ok(self.read_state(key)?.value)
    }

    /// Commits `changes` as one transaction: on any error nothing of it is visible, and a
    /// crash at any moment leaves storage as before or as after.
    fn apply(&self, changes: &Changes) -> Result<ApplyReport, StorageError>;

    /// Keeps a record of a job (replacing one with the same id), but never replaces the
    /// record of a success with that of a failure: a job id that committed stays committed.
    fn record_job(&self, job: &JobRecord) -> Result<(), StorageError>;

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StorageError>;

    /// Job records matching `query`, newest first.
    fn jobs(&self, query: &JobQuery) -> Result<Vec<JobRecord>, StorageError>;

    /// The stored configuration `id` of `component`, if there is one.
    fn configuration(
        &self,
        component: &str,
        id: &str,
    ) -> Result<Option<StoredConfiguration>, StorageError>;

    /// Every stored configuration, or those of `component`, sorted by component and id.
    fn configurations(
        &self,
        component: Option<&str>,
    ) -> Result<Vec<StoredConfiguration>, StorageError>;

    /// Stores `config` (its `#` values encrypted already), replacing the one of its
    /// component and id. Returns it as stored: one version more than before (1 when new).
    fn put_configuration(
        &self,
        config: &StoredConfiguration,
    ) -> Result<StoredConfiguration, StorageError>;

    /// Removes a stored configuration; `false` when there was none. Its states stay.
    fn remove_configuration(&self, component: &str, id: &str) -> Result<bool, StorageError>;

    /// The OAuth credentials `id` of `component`, if there are.
    fn oauth_credentials(
        &self,
        component: &str,
        id: &str,
    ) -> Result<Option<OAuthCredentials>, StorageError>;

    /// Every OAuth credentials, or those of `component`, sorted by component and id.
    fn list_oauth_credentials(
        &self,
        component: Option<&str>,
    ) -> Result<Vec<OAuthCredentials>, StorageError>;

    /// Stores `creds` (their `#` values encrypted already), replacing those of their
    /// component and id; returns them as stored.
    fn put_oauth_credentials(
        &self,
        creds: &OAuthCredentials,
    ) -> Result<OAuthCredentials, StorageError>;

    /// Removes OAuth credentials; `false` when there were none.
    fn remove_oauth_credentials(&self, component: &str, id: &str) -> Result<bool, StorageError>;

    /// Removes file contents that no file names and that are older than `min_age`: what
    /// failed or killed commits left. Returns how many went.
    fn sweep(&self, min_age: std::time::Duration) -> Result<usize, StorageError>;

    /// Which store this is, for the operator: never a password.
    fn describe(&self) -> String;
}

/// Why a CSV file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvProblem {
    /// A record has another number of fields than the header (or the columns given).
    FieldCount {
        found: usize,
        expected: usize,
    },
    /// A quoted field runs to the end of the file.
    UnclosedQuote,
    QuoteInUnquotedField,
    CharactersAfterClosingQuote,
    /// Field `field` (1-based) is not UTF-8.
    InvalidUtf8 {
        field: usize,
    },
    /// Field `field` (1-based) holds a NUL character.
    NulCharacter {
        field: usize,
    },
    /// The file has no header row at all.
    MissingHeader,
    EmptyColumnName {
        column: usize,
    },
    DuplicateColumnName {
        name: String,
    },
    TooManyColumns {
        found: usize,
    },
    /// A slice's header differs from the first file's.
    HeaderDiffers {
        first: PathBuf,
    },
    RecordTooLarge,
}

impl fmt::Display for CsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsvProblem::FieldCount { found, expected } => {
                write!(f, "{found} fields instead of {expected}")
            }
            CsvProblem::UnclosedQuote => {
                f.write_str("a quoted field that starts here is never closed")
            }
            CsvProblem::QuoteInUnquotedField => f.write_str(
                "a quote inside a field that is not enclosed in quotes (enclose the field and \
                 double the quote)",
            ),
            CsvProblem::CharactersAfterClosingQuote => f.write_str(
                "characters after the closing quote of a field (a quote inside a quoted field \
                 must be doubled)",
            ),
            CsvProblem::InvalidUtf8 { field } => write!(f, "field {field} is not valid UTF-8"),
            CsvProblem::NulCharacter { field } => {
                write!(
                    f,
                    "field {field} holds a NUL character, which no table may hold"
                )
            }
            CsvProblem::MissingHeader => f.write_str("the file is empty; expected a header row"),
            CsvProblem::EmptyColumnName { column } => {
                write!(f, "column {column} of the header has no name")
            }
            CsvProblem::DuplicateColumnName { name } => {
                write!(f, "column {name:?} appears twice in the header")
            }
            CsvProblem::TooManyColumns { found } => {
                write!(f, "{found} columns; a table has at most {MAX_COLUMNS}")
            }
            CsvProblem::HeaderDiffers { first } => {
                write!(f, "the header differs from that of {}", first.display())
            }
            CsvProblem::RecordTooLarge => write!(
                f,
                "a row longer than {} MiB (is a quote left open?)",
                MAX_RECORD_BYTES >> 20
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid table id {id:?}: {reason}")]
    InvalidTableId { id: String, reason: String },
    #[error("table {0} does not exist")]
    NoSuchTable(TableId),
    #[error("table {table} has no column {column:?}")]
    NoSuchColumn { table: TableId, column: String },
    #[error("file {0} does not exist")]
    NoSuchFile(u64),
    #[error("{}: line {line}: {problem}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        problem: CsvProblem,
    },
    /// A source file that is missing, unreadable as gzip, or not a file.
    #[error("{}: {message}", path.display())]
    Source { path: PathBuf, message: String },
    #[error(
        "{} lacks column{} {} of table {table}: a load may add columns but never drops any",
        path.display(),
        if missing.len() == 1 { "" } else { "s" },
        missing.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")
    )]
    MissingColumns {
        table: TableId,
        path: PathBuf,
        missing: Vec<String>,
    },
    #[error("cannot load into table {table}: {reason}")]
    InvalidLoad { table: TableId, reason: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("cannot write table {table}: {source}")]
    Output { table: TableId, source: io::Error },
    #[error("storage {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
    #[error("storage database {}: {source}", path.display())]
    Database {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storage database {} has schema version {found}; this berth knows {known} (upgrade berth)", path.display())]
    Schema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A server of the shared store (PostgreSQL, S3) failed or refused.
    #[error("{what}: {source}")]
    Remote {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invalid storage settings: {0}")]
    Settings(String),
    #[error(
        "state {key} changed while the job ran (version {expected} when it started, {found} \
         now): another run of the same configuration committed first; nothing of this job was \
         applied, run it again"
    )]
    StateConflict {
        key: String,
        expected: u64,
        found: u64,
    },
    #[error("job {job} committed already; nothing was applied again")]
    AlreadyCommitted { job: String },
}

impl StorageError {
    /// True when the data or the request is wrong (a malformed CSV, an unknown table or
    /// column, a bad id, a load that would drop columns): the job's fault, not berth's.
    /// Every variant is listed, so a new one must be classified where it is added.
    pub fn is_user_error(&self) -> bool {
        match self {
            StorageError::InvalidTableId { .. }
            | StorageError::NoSuchTable(_)
            | StorageError::NoSuchColumn { .. }
            | StorageError::NoSuchFile(_)
            | StorageError::Csv { .. }
            | StorageError::Source { .. }
            | StorageError::MissingColumns { .. }
            | StorageError::InvalidLoad { .. }
            | StorageError::Invalid { .. }
            | StorageError::Settings(_)
            // Nobody's bug: two runs of one configuration overlapped, and the one that
            // committed first wins. The operator's to avoid (or to rerun), so the user's.
            | StorageError::StateConflict { .. } => true,
            StorageError::Output { .. }
            | StorageError::Io { .. }
            | StorageError::Interrupted(_)
            | StorageError::Database { .. }
            | StorageError::Schema { .. }
            | StorageError::Remote { .. }
            // Not a failure: the job runner reports it as a success that applied nothing.
            | StorageError::AlreadyCommitted { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_parse_and_print() {
        let id: TableId = "in.c-main.orders".parse().expect("valid");
        assert_eq!(id.stage(), Stage::In);
        assert_eq!(id.bucket(), "c-main");
        assert_eq!(id.table(), "orders");
        assert_eq!(id.to_string(), "in.c-main.orders");
        let out: TableId = "out.c-x_1.T-2".parse().expect("valid");
        assert_eq!(out.to_string(), "out.c-x_1.T-2");
        assert!(id < out);
    }

    #[test]
    fn bad_table_ids_are_user_errors_naming_the_id() {
        for (bad, why) in [
            ("in.c-main", "three parts"),
            ("in.c-main.orders.x", "three parts"),
            ("sys.c-main.orders", "stage"),
            ("in..orders", "bucket name is empty"),
            ("in.c-main.", "table name is empty"),
            ("in.c main.orders", "' '"),
            ("in.c-main.ord/ers", "'/'"),
            ("in.c-main.tablé", "'é'"),
        ] {
            let e = bad.parse::<TableId>().expect_err(bad);
            assert!(e.is_user_error());
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
        let long = format!("in.c-main.{}", "x".repeat(MAX_NAME_BYTES + 1));
        assert!(long.parse::<TableId>().is_err());
        let longest = format!("in.c-main.{}", "x".repeat(MAX_NAME_BYTES));
        assert!(longest.parse::<TableId>().is_ok());
    }

    #[test]
    fn table_ids_serialise_as_strings() {
        let id: TableId = "in.c-main.orders".parse().expect("valid");
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(json, "\"in.c-main.orders\"");
        let back: TableId = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<TableId>("\"in.x\"").is_err());
    }

    #[test]
    fn bad_input_and_data_are_user_errors() {
        let id: TableId = "in.c-main.orders".parse().expect("valid");
        let path = PathBuf::from("/data/out/tables/orders.csv");
        let user = [
            StorageError::InvalidTableId {
                id: "x".into(),
                reason: "bad".into(),
            },
            StorageError::NoSuchTable(id.clone()),
            StorageError::NoSuchColumn {
                table: id.clone(),
                column: "c".into(),
            },
            StorageError::NoSuchFile(7),
            StorageError::Csv {
                path: path.clone(),
                line: 2,
                problem: CsvProblem::UnclosedQuote,
            },
            StorageError::Source {
                path: path.clone(),
                message: "no such file".into(),
            },
            StorageError::MissingColumns {
                table: id.clone(),
                path: path.clone(),
                missing: vec!["a".into()],
            },
            StorageError::InvalidLoad {
                table: id.clone(),
                reason: "bad".into(),
            },
            StorageError::Invalid {
                what: "state key".into(),
                reason: "bad".into(),
            },
            StorageError::Settings("--storage x".into()),
            StorageError::StateConflict {
                key: "c/1".into(),
                expected: 1,
                found: 2,
            },
        ];
        for e in user {
            assert!(e.is_user_error(), "{e:?}");
        }
    }

    #[test]
    fn berth_failures_are_internal_errors() {
        let id: TableId = "in.c-main.orders".parse().expect("valid");
        let path = PathBuf::from("/x");
        let internal = [
            StorageError::Output {
                table: id,
                source: io::Error::other("pipe"),
            },
            StorageError::Io {
                path: path.clone(),
                source: io::Error::other("disk"),
            },
            StorageError::Interrupted(crate::interrupt::Interrupted),
            StorageError::Database {
                path: path.clone(),
                source: Box::new(io::Error::other("corrupt")),
            },
            StorageError::Schema {
                path,
                found: 99,
                known: 1,
            },
            StorageError::Remote {
                what: "PostgreSQL postgres://berth@h/db".into(),
                source: Box::new(io::Error::other("connection refused")),
            },
            StorageError::AlreadyCommitted { job: "j".into() },
        ];
        for e in internal {
            assert!(!e.is_user_error(), "{e:?}");
        }
    }

    #[test]
    fn missing_columns_are_named_in_the_message() {
        let id: TableId = "in.c-main.orders".parse().expect("valid");
        let e = StorageError::MissingColumns {
            table: id,
            path: PathBuf::from("/data/out/tables/orders.csv"),
            missing: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "/data/out/tables/orders.csv lacks columns \"a\", \"b\" of table in.c-main.orders: \
             a load may add columns but never drops any"
        );
    }

    #[test]
    fn job_statuses_are_stored_as_their_json_text() {
        for status in [JobStatus::Success, JobStatus::Error] {
            let json = serde_json::to_value(status).expect("serialises");
            assert_eq!(json.as_str(), Some(status.as_str()));
        }
        assert_eq!(JobStatus::Success.as_str(), "success");
        assert_eq!(JobStatus::Error.as_str(), "error");
    }
}
