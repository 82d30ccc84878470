//! The embedded backend: one SQLite database and a directory of file contents.
//!
//! ```text
//! <root>/project.sqlite     the registry and one SQLite table per storage table (WAL mode)
//! <root>/files/<hex>        file contents under random names
//! ```
//!
//! A storage table is the SQLite table `t<N>` (N from the registry) with the columns
//! `_changed, c1, c2, …`: its real column names live in the registry, because they are
//! untrusted and SQLite identifiers ignore case, so neither names nor ids ever reach SQL
//! text. `_changed` is the commit time of the load that last wrote the row, for
//! `changed_since`. A primary key is a unique index, which is what makes an upsert one
//! `INSERT … ON CONFLICT DO UPDATE` per row.
//!
//! Everything [`apply`](Storage::apply) writes is inside one SQLite transaction, except
//! file contents: those are written and fsynced under fresh names first, and only the
//! commit makes a row name them. A crash leaves at most unreferenced content files, which
//! [`SqliteStorage::open`] sweeps once they are old enough not to belong to a commit in
//! progress.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{Type, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde_json::Value;

use super::csv_reader::{CsvFile, check_column_names};
use super::{
    ApplyReport, Changes, ExportQuery, FileInfo, FileQuery, FileUpload, FilterOperator, JobRecord,
    LoadReport, MAX_COLUMNS, Metadata, MetadataEntry, Provenance, StateKey, Storage, StorageError,
    TableId, TableInfo, TableLoad, WhereFilter,
};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('last_commit_ms', 0);

CREATE TABLE tables (
    tid INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    bucket TEXT NOT NULL,
    name TEXT NOT NULL,
    primary_key TEXT NOT NULL,          -- JSON array of column names
    row_count INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_change_ms INTEGER NOT NULL,
    last_import_ms INTEGER NOT NULL,
    description TEXT,
    created_component TEXT NOT NULL,
    created_config TEXT,
    created_row TEXT,
    updated_component TEXT NOT NULL,
    updated_config TEXT,
    updated_row TEXT,
    UNIQUE (stage, bucket, name)
);

-- Column `pos` of table `tid` is `c<pos>` in `t<tid>`.
CREATE TABLE columns (
    tid INTEGER NOT NULL REFERENCES tables (tid),
    pos INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (tid, pos),
    UNIQUE (tid, name)
) WITHOUT ROWID;

-- `col` is '' for the table's own metadata (no column has an empty name).
CREATE TABLE metadata (
    id INTEGER PRIMARY KEY,
    tid INTEGER NOT NULL REFERENCES tables (tid),
    col TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    provider TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    UNIQUE (tid, col, key)
);

-- AUTOINCREMENT: ids never come back, so `since_id` means 'uploaded later'.
CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    content TEXT NOT NULL UNIQUE,       -- the name under files/
    size_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    is_permanent INTEGER NOT NULL,
    is_public INTEGER NOT NULL,
    is_encrypted INTEGER NOT NULL
);

CREATE TABLE file_tags (
    file_id INTEGER NOT NULL REFERENCES files (id),
    tag TEXT NOT NULL,
    UNIQUE (file_id, tag)
);
CREATE INDEX file_tags_by_tag ON file_tags (tag, file_id);

-- `row_id` is '' for a configuration's own state.
CREATE TABLE states (
    component TEXT NOT NULL,
    config TEXT NOT NULL,
    row_id TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (component, config, row_id)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    config TEXT,
    status TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    result TEXT NOT NULL
);
";

/// How long a writer waits for another berth's transaction before giving up. Loads of
/// large tables hold the write lock for as long as they stream.
const BUSY_TIMEOUT: Duration = Duration::from_secs(600);

const PAGE_SIZE: i64 = 16 << 10;

/// Page cache per connection. Enough for the B-tree's upper levels and the pages being
/// filled; more buys nothing for streaming.
const CACHE_KIB: i64 = 16 << 10;

/// Content files no row names are removed once they are this old: younger ones may
/// belong to an `apply` that has not committed yet.
const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);

/// The embedded store. See the module documentation for its layout.
#[derive(Debug)]
pub struct SqliteStorage {
    db_path: PathBuf,
    files_dir: PathBuf,
    conn: Mutex<Connection>,
}

/// An error inside this module: SQLite's get the database path at the boundary.
#[derive(Debug)]
enum Fail {
    Storage(StorageError),
    Sql(rusqlite::Error),
}

impl From<StorageError> for Fail {
    fn from(e: StorageError) -> Fail {
        Fail::Storage(e)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

type Res<T> = Result<T, Fail>;

impl SqliteStorage {
    /// Opens the store under `root` (e.g. `<home>/storage`), creating it if needed.
    pub fn open(root: &Path) -> Result<SqliteStorage, StorageError> {
        let files_dir = root.join("files");
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StorageError::Io { path, source }
        };
        // The store holds the project's data: only its owner may read it. Directories
        // above it (berth's home) keep the usual permissions.
        if let Some(parent) = root.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&files_dir)
            .map_err(io_err(&files_dir))?;
        let db_path = root.join("project.sqlite");
        let conn = Connection::open(&db_path).map_err(|e| database(&db_path, e))?;
        let storage = SqliteStorage {
            db_path,
            files_dir,
            conn: Mutex::new(conn),
        };
        storage.finish(storage.init())?;
        if let Err(e) = storage.sweep_orphans(ORPHAN_AGE) {
            tracing::warn!("cannot sweep orphaned file contents: {e}");
        }
        Ok(storage)
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    fn init(&self) -> Res<()> {
        let mut conn = self.lock();
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Only takes effect while the database is empty. Tables are loaded and exported
        // whole: larger pages mean a quarter of the page writes (twice each in WAL mode:
        // log, then checkpoint) and reads, which made a 1M-row import 15-20% faster.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        // WAL: readers (exports for one job) never wait for a writer (another job's apply).
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                "{} cannot use WAL mode (got {mode}); readers will wait for writers",
                self.db_path.display()
            );
        }
        // FULL: once `apply` returns, the job's output survives a power loss, not only a
        // crash. It costs one fsync per commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // A large load leaves a WAL as large as itself; keep at most this much after it.
        conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
        conn.pragma_update(None, "foreign_keys", true)?;

        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another berth may have created the schema while this one waited for the lock.
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            v if v == SCHEMA_VERSION => {}
            found => {
                return Err(StorageError::Schema {
                    path: self.db_path.clone(),
                    found,
                    known: SCHEMA_VERSION,
                }
                .into());
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped its transaction, which rolled back: the
        // connection is as good as before.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish<T>(&self, r: Res<T>) -> Result<T, StorageError> {
        r.map_err(|f| match f {
            Fail::Storage(e) => e,
            Fail::Sql(e) => database(&self.db_path, e),
        })
    }

    /// Removes content files that no file row names and that are older than `min_age`:
    /// what a crash between writing a file and committing its row leaves behind.
    pub fn sweep_orphans(&self, min_age: Duration) -> Result<usize, StorageError> {
        let known: HashSet<String> = self.finish((|| {
            let conn = self.lock();
            let mut stmt = conn.prepare("SELECT content FROM files")?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            Ok(names)
        })())?;
        let io_err = |source| StorageError::Io {
            path: self.files_dir.clone(),
            source,
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.files_dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| known.contains(n)) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!("removed {removed} orphaned file contents");
        }
        Ok(removed)
    }

    /// Copies the uploads' contents into `files/` under fresh names, fsynced, before the
    /// transaction that makes them visible.
    fn stage_files(&self, uploads: &[FileUpload]) -> Result<Vec<Staged>, StorageError> {
        let mut staged = Vec::with_capacity(uploads.len());
        for upload in uploads {
            match self.stage_file(upload) {
                Ok(s) => staged.push(s),
                Err(e) => {
                    self.unstage(&staged);
                    return Err(e);
                }
            }
        }
        if !staged.is_empty() {
            // The names must be durable before a committed row points at them.
            let dir = File::open(&self.files_dir).and_then(|d| d.sync_all());
            if let Err(source) = dir {
                self.unstage(&staged);
                return Err(StorageError::Io {
                    path: self.files_dir.clone(),
                    source,
                });
            }
        }
        Ok(staged)
    }

    fn stage_file(&self, upload: &FileUpload) -> Result<Staged, StorageError> {
        let source_err = |message: String| StorageError::Source {
            path: upload.path.clone(),
            message,
        };
        let mut src = File::open(&upload.path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => source_err("no such file".into()),
            _ => source_err(e.to_string()),
        })?;
        if !src.metadata().is_ok_and(|m| m.is_file()) {
            return Err(source_err("not a regular file".into()));
        }
        let content = crate::util::random_hex(16);
        let dest = self.files_dir.join(&content);
        let io_err = |source| StorageError::Io {
            path: dest.clone(),
            source,
        };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io_err)?;
        let copied = io::copy(&mut src, &mut out).and_then(|n| out.sync_all().map(|()| n));
        match copied {
            Ok(size) => Ok(Staged { content, size }),
            Err(source) => {
                let _ = fs::remove_file(&dest);
                Err(io_err(source))
            }
        }
    }

    fn unstage(&self, staged: &[Staged]) {
        for s in staged {
            let _ = fs::remove_file(self.files_dir.join(&s.content));
        }
    }
}

/// Everything `apply` writes, inside its transaction.
fn apply_changes(tx: &Transaction<'_>, changes: &Changes, staged: &[Staged]) -> Res<ApplyReport> {
    let now = next_commit_ms(tx)?;
    let mut tables = Vec::with_capacity(changes.tables.len());
    for load in &changes.tables {
        tables.push(load_table(tx, load, now)?);
    }
    let mut files = Vec::with_capacity(changes.files.len());
    for (upload, staged) in changes.files.iter().zip(staged) {
        files.push(insert_file(tx, upload, staged, now)?);
    }
    for (key, value) in &changes.states {
        let row = key.row.as_deref().unwrap_or("");
        match value {
            Some(v) => {
                tx.execute(
                    "INSERT INTO states (component, config, row_id, value, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (component, config, row_id)
                     DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                    params![key.component, key.config, row, v.to_string(), now],
                )?;
            }
            None => {
                tx.execute(
                    "DELETE FROM states WHERE component = ?1 AND config = ?2 AND row_id = ?3",
                    params![key.component, key.config, row],
                )?;
            }
        }
    }
    Ok(ApplyReport {
        committed_ms: now,
        tables,
        files,
    })
}

/// A content file written for an upload that is not committed yet.
#[derive(Debug)]
struct Staged {
    content: String,
    size: u64,
}

fn database(path: &Path, e: rusqlite::Error) -> StorageError {
    StorageError::Database {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time this transaction commits at: now, but always later than the last commit, so
/// rows of a later commit never look older than rows of an earlier one, whatever the
/// clock does.
fn next_commit_ms(tx: &Transaction<'_>) -> Res<i64> {
    let last: i64 = tx.query_row(
        "SELECT value FROM meta WHERE key = 'last_commit_ms'",
        [],
        |r| r.get(0),
    )?;
    let now = unix_ms().max(last.saturating_add(1));
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'last_commit_ms'",
        [now],
    )?;
    Ok(now)
}

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn parse_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// A table's registry entry, as loads need it.
#[derive(Debug)]
struct TableRow {
    tid: i64,
    /// Position `i` is column `c<i+1>`.
    columns: Vec<String>,
    primary_key: Vec<String>,
    rows: u64,
}

fn find_table(conn: &Connection, id: &TableId) -> Res<Option<TableRow>> {
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

fn read_table_info(conn: &Connection, tid: i64) -> Res<TableInfo> {
    let mut info = conn.query_row(
        "SELECT stage, bucket, name, primary_key, row_count, created_ms, last_change_ms,
                last_import_ms, description, created_component, created_config, created_row,
                updated_component, updated_config, updated_row
         FROM tables WHERE tid = ?1",
        [tid],
        |r| {
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
        },
    )?;
    info.columns = table_columns(conn, tid)?;
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
    Ok(info)
}

/// Checks what can be checked about a load before any file is opened.
fn check_load(load: &TableLoad) -> Result<(), StorageError> {
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

fn check_upload(upload: &FileUpload) -> Result<(), StorageError> {
    let invalid = |reason: &str| StorageError::Invalid {
        what: format!("file name {:?} for {}", upload.name, upload.path.display()),
        reason: reason.to_owned(),
    };
    let name = upload.name.as_str();
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("a file needs a name"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(invalid("a file name cannot contain '/' or NUL"));
    }
    if name.len() > 255 {
        return Err(invalid("a file name is at most 255 bytes"));
    }
    if upload.tags.iter().any(String::is_empty) {
        return Err(StorageError::Invalid {
            what: format!("tags of {}", upload.path.display()),
            reason: "a tag cannot be empty".into(),
        });
    }
    Ok(())
}

fn check_state_key(key: &StateKey) -> Result<(), StorageError> {
    let reason = if key.component.is_empty() {
        "the component id is empty"
    } else if key.config.is_empty() {
        "the configuration id is empty"
    } else if key.row.as_deref() == Some("") {
        "the row id is empty"
    } else {
        return Ok(());
    };
    Err(StorageError::Invalid {
        what: format!("state key {key}"),
        reason: reason.into(),
    })
}

fn pk_index_sql(tid: i64, positions: &[usize]) -> String {
    let cols: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
    format!(
        "CREATE UNIQUE INDEX t{tid}_pk ON t{tid} ({})",
        cols.join(", ")
    )
}

/// Positions (1-based, `c<pos>`) of `names` among `columns`; `None` for the first missing.
fn positions(columns: &[String], names: &[String]) -> Result<Vec<usize>, String> {
    let index: HashMap<&str, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i + 1))
        .collect();
    names
        .iter()
        .map(|n| index.get(n.as_str()).copied().ok_or_else(|| n.clone()))
        .collect()
}

/// Loads one table (contract §6), inside the caller's transaction.
fn load_table(tx: &Transaction<'_>, load: &TableLoad, now: i64) -> Res<LoadReport> {
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
        let op = match filter.operator {
            FilterOperator::Eq => "IN",
            FilterOperator::Ne => "NOT IN",
        };
        let n = tx.execute(
            &format!("DELETE FROM t{tid} WHERE c{pos} {op} (SELECT value FROM json_each(?1))"),
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
                        problem: super::CsvProblem::HeaderDiffers {
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

/// How many rows pass between two looks at whether the operator asked berth to stop.
const INTERRUPT_CHECK_ROWS: u64 = 1 << 14;

/// Streams every record of `file` through the prepared insert.
fn insert_rows(insert: &mut rusqlite::Statement<'_>, file: &mut CsvFile) -> Res<u64> {
    let mut n = 0;
    while let Some(record) = file.next()? {
        for (i, field) in record.fields().enumerate() {
            insert.raw_bind_parameter(i + 1, field)?;
        }
        insert.raw_execute()?;
        n += 1;
        if n % INTERRUPT_CHECK_ROWS == 0 {
            // Ctrl-C only sets a flag: a long load stops here and rolls back.
            crate::interrupt::check().map_err(StorageError::from)?;
        }
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

fn insert_file(
    tx: &Transaction<'_>,
    upload: &FileUpload,
    staged: &Staged,
    now: i64,
) -> Res<FileInfo> {
    tx.execute(
        "INSERT INTO files (name, content, size_bytes, created_ms, is_permanent, is_public,
            is_encrypted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            upload.name,
            staged.content,
            to_i64(staged.size),
            now,
            upload.is_permanent,
            upload.is_public,
            upload.is_encrypted
        ],
    )?;
    let id = tx.last_insert_rowid();
    let mut tags = Vec::with_capacity(upload.tags.len());
    let mut stmt = tx.prepare("INSERT INTO file_tags (file_id, tag) VALUES (?1, ?2)")?;
    for tag in &upload.tags {
        if !tags.contains(tag) {
            stmt.execute(params![id, tag])?;
            tags.push(tag.clone());
        }
    }
    Ok(FileInfo {
        id: to_u64(id),
        name: upload.name.clone(),
        tags,
        size_bytes: staged.size,
        created_ms: now,
        is_permanent: upload.is_permanent,
        is_public: upload.is_public,
        is_encrypted: upload.is_encrypted,
    })
}

impl Storage for SqliteStorage {
    fn tables(&self) -> Result<Vec<TableInfo>, StorageError> {
        let mut conn = self.lock();
        self.finish((|| {
            let tx = conn.transaction()?;
            let tids: Vec<i64> = tx
                .prepare("SELECT tid FROM tables ORDER BY stage, bucket, name")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            tids.into_iter()
                .map(|tid| read_table_info(&tx, tid))
                .collect()
        })())
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>, StorageError> {
        let mut conn = self.lock();
        self.finish((|| {
            let tx = conn.transaction()?;
            match find_table(&tx, id)? {
                Some(t) => Ok(Some(read_table_info(&tx, t.tid)?)),
                None => Ok(None),
            }
        })())
    }

    fn export(
        &self,
        id: &TableId,
        query: &ExportQuery,
        out: &mut dyn Write,
    ) -> Result<u64, StorageError> {
        let mut conn = self.lock();
        self.finish((|| {
            // One read transaction: the column list and the rows are from the same commit.
            let tx = conn.transaction()?;
            let table =
                find_table(&tx, id)?.ok_or_else(|| StorageError::NoSuchTable(id.clone()))?;
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
                let pos =
                    positions(&table.columns, std::slice::from_ref(column)).map_err(no_column)?[0];
                let op = match operator {
                    FilterOperator::Eq => "IN",
                    FilterOperator::Ne => "NOT IN",
                };
                args.push(json_list(values).into());
                sql.push_str(&format!(
                    " AND c{pos} {op} (SELECT value FROM json_each(?{}))",
                    args.len()
                ));
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
            let mut stmt = tx.prepare(&sql)?;
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
                if n % INTERRUPT_CHECK_ROWS == 0 {
                    crate::interrupt::check().map_err(StorageError::from)?;
                }
            }
            w.flush().map_err(|source| StorageError::Output {
                table: id.clone(),
                source,
            })?;
            Ok(n)
        })())
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>, StorageError> {
        let mut all: Vec<&String> = query.tags_all.iter().collect();
        all.sort();
        all.dedup();
        let conn = self.lock();
        self.finish((|| {
            let mut stmt = conn.prepare(
                "SELECT id, name, size_bytes, created_ms, is_permanent, is_public, is_encrypted,
                    (SELECT json_group_array(tag) FROM
                        (SELECT tag FROM file_tags WHERE file_id = files.id ORDER BY rowid))
                 FROM files
                 WHERE (SELECT count(*) FROM file_tags WHERE file_id = files.id
                        AND tag IN (SELECT value FROM json_each(?1))) = ?2
                   AND (?3 = '[]' OR EXISTS (SELECT 1 FROM file_tags WHERE file_id = files.id
                        AND tag IN (SELECT value FROM json_each(?3))))
                   AND NOT EXISTS (SELECT 1 FROM file_tags WHERE file_id = files.id
                        AND tag IN (SELECT value FROM json_each(?4)))
                   AND (?5 = '[]' OR id IN (SELECT value FROM json_each(?5)))
                   AND id > ?6
                 ORDER BY id DESC
                 LIMIT ?7",
            )?;
            let rows = stmt.query_map(
                params![
                    json_list(&all),
                    to_i64(all.len() as u64),
                    json_list(&query.include_any),
                    json_list(&query.exclude),
                    json_list(&query.ids),
                    query.since_id.map_or(0, to_i64),
                    query.limit.map_or(-1, to_i64),
                ],
                |r| {
                    Ok(FileInfo {
                        id: to_u64(r.get(0)?),
                        name: r.get(1)?,
                        size_bytes: to_u64(r.get(2)?),
                        created_ms: r.get(3)?,
                        is_permanent: r.get(4)?,
                        is_public: r.get(5)?,
                        is_encrypted: r.get(6)?,
                        tags: parse_list(&r.get::<_, String>(7)?),
                    })
                },
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })())
    }

    fn open_file(&self, id: u64) -> Result<File, StorageError> {
        let content: Option<String> = self.finish((|| {
            let conn = self.lock();
            Ok(conn
                .query_row(
                    "SELECT content FROM files WHERE id = ?1",
                    [to_i64(id)],
                    |r| r.get(0),
                )
                .optional()?)
        })())?;
        let content = content.ok_or(StorageError::NoSuchFile(id))?;
        let path = self.files_dir.join(content);
        File::open(&path).map_err(|source| StorageError::Io { path, source })
    }

    fn state(&self, key: &StateKey) -> Result<Option<Value>, StorageError> {
        check_state_key(key)?;
        let text: Option<String> = self.finish((|| {
            let conn = self.lock();
            Ok(conn
                .query_row(
                    "SELECT value FROM states WHERE component = ?1 AND config = ?2
                     AND row_id = ?3",
                    params![key.component, key.config, key.row.as_deref().unwrap_or("")],
                    |r| r.get(0),
                )
                .optional()?)
        })())?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StorageError::Database {
                path: self.db_path.clone(),
                source: Box::new(e),
            })
        })
        .transpose()
    }

    fn apply(&self, changes: &Changes) -> Result<ApplyReport, StorageError> {
        // Refuse what is wrong on its face before copying a byte.
        for load in &changes.tables {
            check_load(load)?;
        }
        for upload in &changes.files {
            check_upload(upload)?;
        }
        for (key, _) in &changes.states {
            check_state_key(key)?;
        }
        // File contents are copied before the write lock is taken: another job's apply
        // need not wait for them.
        let staged = self.stage_files(&changes.files)?;
        let mut conn = self.lock();
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let report = apply_changes(&tx, changes, &staged)?;
            tx.commit()?;
            Ok(report)
        })();
        drop(conn);
        let result = self.finish(result);
        if result.is_err() {
            self.unstage(&staged);
        }
        result
    }

    fn record_job(&self, job: &JobRecord) -> Result<(), StorageError> {
        let status = job.status.as_str();
        let conn = self.lock();
        self.finish((|| {
            // A job record is an audit trail, not data: losing the last one to a power cut
            // is acceptable, an fsync on every job's critical path is not. In WAL mode the
            // next FULL commit makes it durable anyway.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let inserted = conn.execute(
                "INSERT OR REPLACE INTO jobs (id, component, config, status, started_ms,
                    finished_ms, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.id,
                    job.component,
                    job.config,
                    status,
                    job.started_ms,
                    job.finished_ms,
                    job.result.to_string()
                ],
            );
            conn.pragma_update(None, "synchronous", "FULL")?;
            inserted?;
            Ok(())
        })())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use serde_json::json;

    use super::super::{CsvProblem, CsvSource, StateKey};
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        store: SqliteStorage,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStorage::open(&dir.path().join("storage")).unwrap();
            Fixture { dir, store }
        }

        /// Writes a source file into the fixture's directory.
        fn file(&self, name: &str, content: &[u8]) -> PathBuf {
            let path = self.dir.path().join(name);
            fs::write(&path, content).unwrap();
            path
        }

        fn gz(&self, name: &str, content: &[u8]) -> PathBuf {
            let path = self.dir.path().join(name);
            let mut enc = flate2::write::GzEncoder::new(
                File::create(&path).unwrap(),
                flate2::Compression::fast(),
            );
            enc.write_all(content).unwrap();
            enc.finish().unwrap();
            path
        }

        fn load(&self, table: &str, csv: &str) -> TableLoad {
            let path = self.file(
                &format!("{table}.{}.csv", crate::util::random_hex(4)),
                csv.as_bytes(),
            );
            TableLoad::new(id(table), CsvSource::file(&path), prov())
        }

        fn apply(&self, loads: Vec<TableLoad>) -> Result<ApplyReport, StorageError> {
            self.store.apply(&Changes {
                tables: loads,
                ..Changes::default()
            })
        }

        fn full(&self, table: &str, csv: &str) -> LoadReport {
            self.apply(vec![self.load(table, csv)])
                .unwrap()
                .tables
                .remove(0)
        }

        fn incremental(&self, table: &str, csv: &str) -> LoadReport {
            let mut load = self.load(table, csv);
            load.incremental = true;
            self.apply(vec![load]).unwrap().tables.remove(0)
        }

        fn export(&self, table: &str, query: &ExportQuery) -> String {
            let mut out = Vec::new();
            self.store.export(&id(table), query, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        }

        fn csv(&self, table: &str) -> String {
            self.export(table, &ExportQuery::default())
        }

        fn info(&self, table: &str) -> TableInfo {
            self.store.table(&id(table)).unwrap().unwrap()
        }

        /// Everything visible in the store, to compare before and after a failed apply.
        fn snapshot(&self) -> (Vec<TableInfo>, Vec<String>, Vec<FileInfo>, usize) {
            let tables = self.store.tables().unwrap();
            let data = tables.iter().map(|t| self.csv(&t.id.to_string())).collect();
            let files = self.store.files(&FileQuery::default()).unwrap();
            let contents = fs::read_dir(&self.store.files_dir).unwrap().count();
            (tables, data, files, contents)
        }

        fn upload(&self, name: &str, tags: &[&str]) -> FileInfo {
            let path = self.file(name, name.as_bytes());
            let report = self
                .store
                .apply(&Changes {
                    files: vec![upload(&path, name, tags)],
                    ..Changes::default()
                })
                .unwrap();
            report.files[0].clone()
        }
    }

    fn id(s: &str) -> TableId {
        s.parse().unwrap()
    }

    fn prov() -> Provenance {
        Provenance {
            component: "keboola.ex-test".into(),
            config: Some("123".into()),
            row: None,
        }
    }

    fn upload(path: &Path, name: &str, tags: &[&str]) -> FileUpload {
        FileUpload {
            path: path.to_owned(),
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            is_permanent: false,
            is_public: false,
            is_encrypted: true,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const T: &str = "in.c-main.t";

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
    fn a_failed_apply_changes_nothing() {
        let f = Fixture::new();
        f.full("in.c-main.a", "id,v\n1,a\n");
        let key = StateKey {
            component: "keboola.ex-test".into(),
            config: "123".into(),
            row: None,
        };
        f.store
            .apply(&Changes {
                states: vec![(key.clone(), Some(json!({"cursor": 1})))],
                ..Changes::default()
            })
            .unwrap();
        let before = f.snapshot();

        let mut first = f.load("in.c-main.a", "id,v,w\n2,b,c\n");
        first.incremental = true;
        let created = f.load("in.c-main.b", "x\n1\n");
        let broken = f.load("in.c-main.c", "id,v\n1,\"a\n");
        let file = f.file("out.txt", b"content");
        let changes = Changes {
            tables: vec![first, created, broken],
            files: vec![upload(&file, "out.txt", &["tag"])],
            states: vec![(key.clone(), Some(json!({"cursor": 2})))],
        };
        let e = f.store.apply(&changes).unwrap_err();
        assert!(matches!(
            e,
            StorageError::Csv {
                problem: CsvProblem::UnclosedQuote,
                ..
            }
        ));
        assert_eq!(f.snapshot(), before);
        assert_eq!(f.store.state(&key).unwrap(), Some(json!({"cursor": 1})));
        assert!(f.store.table(&id("in.c-main.b")).unwrap().is_none());
    }

    #[test]
    fn one_apply_may_load_a_table_twice() {
        let f = Fixture::new();
        let a = f.load(T, "id,v\n1,a\n");
        let mut b = f.load(T, "id,v,w\n2,b,c\n");
        b.incremental = true;
        let report = f.apply(vec![a, b]).unwrap();
        assert!(report.tables[0].created);
        assert_eq!(report.tables[1].columns_added, strings(&["w"]));
        assert_eq!(f.csv(T), "id,v,w\n1,a,\n2,b,c\n");
    }

    #[test]
    fn commit_times_increase_and_rows_carry_them() {
        let f = Fixture::new();
        let mut last = 0;
        for _ in 0..5 {
            let t = f.apply(vec![f.load(T, "id\n1\n")]).unwrap().committed_ms;
            assert!(t > last);
            last = t;
        }
        let info = f.info(T);
        assert_eq!(info.last_change_ms, last);
        assert_eq!(info.last_import_ms, last);
        let since = ExportQuery {
            changed_since_ms: Some(last + 1),
            ..ExportQuery::default()
        };
        assert_eq!(f.export(T, &since), "id\n");
    }

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
    fn files_and_tag_queries() {
        let f = Fixture::new();
        let a = f.upload("a.txt", &["x", "y"]);
        let b = f.upload("b.txt", &["x"]);
        let c = f.upload("c.txt", &["y", "z", "y"]);
        let d = f.upload("d.txt", &[]);
        assert!(a.id < b.id && b.id < c.id && c.id < d.id);
        assert_eq!(c.tags, strings(&["y", "z"]));
        assert_eq!(a.size_bytes, 5);

        let ids = |q: FileQuery| -> Vec<u64> {
            f.store.files(&q).unwrap().iter().map(|f| f.id).collect()
        };
        assert_eq!(ids(FileQuery::default()), vec![d.id, c.id, b.id, a.id]);
        let tags = |t: &[&str]| strings(t);
        assert_eq!(
            ids(FileQuery {
                tags_all: tags(&["x", "y"]),
                ..FileQuery::default()
            }),
            vec![a.id]
        );
        assert_eq!(
            ids(FileQuery {
                tags_all: tags(&["x", "x"]),
                ..FileQuery::default()
            }),
            vec![b.id, a.id]
        );
        assert_eq!(
            ids(FileQuery {
                include_any: tags(&["z", "x"]),
                ..FileQuery::default()
            }),
            vec![c.id, b.id, a.id]
        );
        assert_eq!(
            ids(FileQuery {
                include_any: tags(&["y"]),
                exclude: tags(&["z"]),
                ..FileQuery::default()
            }),
            vec![a.id]
        );
        assert_eq!(
            ids(FileQuery {
                ids: vec![a.id, d.id, 999],
                ..FileQuery::default()
            }),
            vec![d.id, a.id]
        );
        assert_eq!(
            ids(FileQuery {
                since_id: Some(b.id),
                ..FileQuery::default()
            }),
            vec![d.id, c.id]
        );
        assert_eq!(
            ids(FileQuery {
                limit: Some(2),
                ..FileQuery::default()
            }),
            vec![d.id, c.id]
        );
        let listed = &f
            .store
            .files(&FileQuery {
                ids: vec![a.id],
                ..FileQuery::default()
            })
            .unwrap()[0];
        assert_eq!(listed, &a);
        assert!(listed.is_encrypted && !listed.is_public);

        let mut content = String::new();
        io::Read::read_to_string(&mut f.store.open_file(c.id).unwrap(), &mut content).unwrap();
        assert_eq!(content, "c.txt");
        let e = f.store.open_file(999).unwrap_err();
        assert!(e.is_user_error());
        assert_eq!(e.to_string(), "file 999 does not exist");
    }

    #[test]
    fn unsafe_file_names_and_missing_sources_are_refused() {
        let f = Fixture::new();
        let path = f.file("x", b"x");
        for name in ["", ".", "..", "a/b", "../x"] {
            let e = f
                .store
                .apply(&Changes {
                    files: vec![upload(&path, name, &[])],
                    ..Changes::default()
                })
                .unwrap_err();
            assert!(e.is_user_error(), "{name}");
        }
        let missing = f.dir.path().join("nope");
        let e = f
            .store
            .apply(&Changes {
                files: vec![upload(&path, "ok", &[]), upload(&missing, "nope", &[])],
                ..Changes::default()
            })
            .unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("nope: no such file"), "{e}");
        // The first file's content was staged, then removed again.
        assert_eq!(fs::read_dir(&f.store.files_dir).unwrap().count(), 0);
        assert!(f.store.files(&FileQuery::default()).unwrap().is_empty());
    }

    #[test]
    fn states_are_set_replaced_and_cleared() {
        let f = Fixture::new();
        let config = StateKey {
            component: "keboola.ex-test".into(),
            config: "123".into(),
            row: None,
        };
        let row = StateKey {
            row: Some("r1".into()),
            ..config.clone()
        };
        let set = |states: Vec<(StateKey, Option<Value>)>| {
            f.store
                .apply(&Changes {
                    states,
                    ..Changes::default()
                })
                .unwrap();
        };
        assert_eq!(f.store.state(&config).unwrap(), None);
        set(vec![
            (config.clone(), Some(json!({"a": 1}))),
            (row.clone(), Some(json!({"r": [1, 2]}))),
        ]);
        assert_eq!(f.store.state(&config).unwrap(), Some(json!({"a": 1})));
        assert_eq!(f.store.state(&row).unwrap(), Some(json!({"r": [1, 2]})));
        set(vec![(config.clone(), Some(json!({"a": 2})))]);
        assert_eq!(f.store.state(&config).unwrap(), Some(json!({"a": 2})));
        set(vec![(config.clone(), None)]);
        assert_eq!(f.store.state(&config).unwrap(), None);
        assert_eq!(f.store.state(&row).unwrap(), Some(json!({"r": [1, 2]})));

        let bad = StateKey {
            row: Some(String::new()),
            ..config
        };
        assert!(f.store.state(&bad).unwrap_err().is_user_error());
    }

    #[test]
    fn job_records_are_kept() {
        let f = Fixture::new();
        let mut job = JobRecord {
            id: "j1".into(),
            component: "keboola.ex-test".into(),
            config: Some("123".into()),
            status: super::super::JobStatus::Error,
            started_ms: 1,
            finished_ms: 2,
            result: json!({"status": "error"}),
        };
        f.store.record_job(&job).unwrap();
        job.status = super::super::JobStatus::Success;
        f.store.record_job(&job).unwrap();
        let conn = f.store.lock();
        let (n, status, result): (i64, String, String) = conn
            .query_row(
                "SELECT count(*), max(status), max(result) FROM jobs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (n, status.as_str(), result.as_str()),
            (1, "success", "{\"status\":\"error\"}")
        );
    }

    #[test]
    fn reopening_keeps_everything_and_newer_schemas_are_refused() {
        let f = Fixture::new();
        f.full(T, "id\n1\n");
        let root = f.dir.path().join("storage");
        drop(f.store);
        let store = SqliteStorage::open(&root).unwrap();
        assert_eq!(store.tables().unwrap().len(), 1);
        store
            .lock()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(store);
        let e = SqliteStorage::open(&root).unwrap_err();
        assert!(!e.is_user_error());
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    #[test]
    fn orphaned_contents_are_swept() {
        let f = Fixture::new();
        let kept = f.upload("kept.txt", &[]);
        let orphan = f.store.files_dir.join("0123456789abcdef");
        fs::write(&orphan, b"left by a crash").unwrap();
        assert_eq!(f.store.sweep_orphans(Duration::from_secs(3600)).unwrap(), 0);
        assert!(orphan.exists());
        assert_eq!(f.store.sweep_orphans(Duration::ZERO).unwrap(), 1);
        assert!(!orphan.exists());
        assert!(f.store.open_file(kept.id).is_ok());
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
