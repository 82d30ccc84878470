//! The embedded backend: one SQLite database, and file contents in a blob store (by
//! default a directory beside it).
//!
//! ```text
//! <root>/project.sqlite     the registry and one SQLite table per storage table (WAL mode)
//! <root>/files/<sha256>     file contents (see [`blob`](crate::storage::blob))
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
//! file contents: those are stored (fsynced, under their digest) first, and only the
//! commit makes a row name them. A crash leaves at most unreferenced contents, which
//! [`SqliteStorage::open`] sweeps once they are old enough not to belong to a commit in
//! progress.
//!
//! This file opens the store and implements [`Storage`] by handing each call to the
//! module of its concern: [`schema`] (the tables berth keeps and their version),
//! [`tables`] (the registry of storage tables), [`load`] (table loads), [`export`],
//! [`files`], [`states`] and [`jobs`].

mod configs;
mod export;
mod files;
mod jobs;
mod load;
mod schema;
mod states;
mod tables;
#[cfg(test)]
mod test_fixture;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::blob::{Blob, BlobStore, LocalBlobs, ORPHAN_AGE};
use super::check::check_changes;
use super::configs::{check_component, check_configuration, check_credentials, check_id};
use super::sql::{Fail, SqliteRes as Res};
use super::{
    ApplyReport, Changes, ExportQuery, FileInfo, FileQuery, JobQuery, JobRecord, OAuthCredentials,
    StateKey, Storage, StorageError, StoredConfiguration, StoredState, TableId, TableInfo,
};

/// How long a writer waits for another berth's transaction before giving up. Loads of
/// large tables hold the write lock for as long as they stream.
const BUSY_TIMEOUT: Duration = Duration::from_secs(600);

const PAGE_SIZE: i64 = 16 << 10;

/// Page cache per connection. Enough for the B-tree's upper levels and the pages being
/// filled; more buys nothing for streaming.
const CACHE_KIB: i64 = 16 << 10;

/// What a checkpoint leaves of the write-ahead log (a large load makes it as large as itself).
const WAL_KEEP_BYTES: i64 = 64 << 20;

/// The embedded store. See the module documentation for its layout.
#[derive(Debug)]
pub struct SqliteStorage {
    db_path: PathBuf,
    blobs: Box<dyn BlobStore>,
    conn: Mutex<Connection>,
}

impl SqliteStorage {
    /// Opens the store under `root` (e.g. `<home>/storage`), creating it if needed, with
    /// its file contents in `<root>/files`; sweeps the contents failed commits left.
    pub fn open(root: &Path) -> Result<SqliteStorage, StorageError> {
        let blobs = LocalBlobs::open(&root.join("files"))?;
        let storage = SqliteStorage::open_with(root, Box::new(blobs))?;
        if let Err(e) = storage.sweep(ORPHAN_AGE) {
            tracing::warn!("cannot sweep orphaned file contents: {e}");
        }
        Ok(storage)
    }

    /// Opens the database under `root` (creating it if needed) with file contents in
    /// `blobs`.
    pub fn open_with(
        root: &Path,
        blobs: Box<dyn BlobStore>,
    ) -> Result<SqliteStorage, StorageError> {
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
            .create(root)
            .map_err(io_err(root))?;
        let db_path = root.join("project.sqlite");
        let conn = Connection::open(&db_path).map_err(|e| database(&db_path, e))?;
        let storage = SqliteStorage {
            db_path,
            blobs,
            conn: Mutex::new(conn),
        };
        storage.finish(storage.init())?;
        Ok(storage)
    }

    /// Configures the connection and ensures the schema. Two berths opening a new store at
    /// once can find it locked while the other switches it to WAL or creates the schema,
    /// where SQLite gives up without its busy handler: wait and try again, as long as a
    /// writer would wait.
    fn init(&self) -> Res<()> {
        let started = std::time::Instant::now();
        loop {
            let mut conn = self.lock();
            let done = self
                .configure(&conn)
                .and_then(|()| schema::ensure(&mut conn, &self.db_path));
            match done {
                Err(Fail::Db(e)) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    drop(conn);
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// The connection's settings, which SQLite does not keep in the database file.
    fn configure(&self, conn: &Connection) -> Res<()> {
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
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        conn.pragma_update(None, "foreign_keys", true)?;
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
            Fail::Db(e) => database(&self.db_path, e),
        })
    }

    /// Runs `read` in one read transaction, so that everything it reads is from the same
    /// commit.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Res<T>) -> Result<T, StorageError> {
        let mut conn = self.lock();
        self.finish((|| {
            let tx = conn.transaction()?;
            read(&tx)
        })())
    }

    /// Runs `write` in one write transaction and commits it.
    fn write<T>(&self, write: impl FnOnce(&Transaction<'_>) -> Res<T>) -> Result<T, StorageError> {
        let mut conn = self.lock();
        self.finish((|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let done = write(&tx)?;
            tx.commit()?;
            Ok(done)
        })())
    }
}

/// Everything `apply` writes, inside its transaction.
fn apply_changes(tx: &Transaction<'_>, changes: &Changes, stored: &[Blob]) -> Res<ApplyReport> {
    // The job's record first: a second commit of one job id stops here (after waiting for
    // the first), whatever else it would find changed.
    if let Some(job) = &changes.job {
        jobs::commit_job(tx, job)?;
    }
    states::check_versions(tx, &changes.state_versions)?;
    let now = next_commit_ms(tx)?;
    let mut tables = Vec::with_capacity(changes.tables.len());
    for load in &changes.tables {
        tables.push(load::load_table(tx, load, now)?);
    }
    let mut files = Vec::with_capacity(changes.files.len());
    for (upload, blob) in changes.files.iter().zip(stored) {
        files.push(files::insert_file(tx, upload, blob, now)?);
    }
    states::write_states(tx, &changes.states, now)?;
    for (id, tags) in &changes.file_tags {
        files::add_tags(tx, *id, tags)?;
    }
    Ok(ApplyReport {
        committed_ms: now,
        tables,
        files,
    })
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
    let now = crate::util::unix_ms().max(last.saturating_add(1));
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'last_commit_ms'",
        [now],
    )?;
    Ok(now)
}

/// What went wrong in the database at `path`: SQLite's error, or a value berth stored and
/// cannot read back.
/// Whether SQLite refused for another connection's lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn database(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::Database {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

impl Storage for SqliteStorage {
    fn tables(&self) -> Result<Vec<TableInfo>, StorageError> {
        self.read(tables::list_tables)
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>, StorageError> {
        self.read(|conn| tables::describe_table(conn, id))
    }

    fn export(
        &self,
        id: &TableId,
        query: &ExportQuery,
        out: &mut dyn Write,
    ) -> Result<u64, StorageError> {
        self.read(|conn| export::export_table(conn, id, query, out))
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>, StorageError> {
        self.read(|conn| files::find_files(conn, query))
    }

    fn open_file(&self, id: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let key = self.read(|conn| files::content_key(conn, id))?;
        self.blobs.open(&key)
    }

    fn read_state(&self, key: &StateKey) -> Result<StoredState, StorageError> {
        super::check::check_state_key(key)?;
        let (text, version) = self.read(|conn| states::read_state(conn, key))?;
        let value = text
            .map(|t| serde_json::from_str(&t).map_err(|e| database(&self.db_path, e)))
            .transpose()?;
        Ok(StoredState { value, version })
    }

    fn apply(&self, changes: &Changes) -> Result<ApplyReport, StorageError> {
        check_changes(changes)?;
        // File contents are stored before the write lock is taken: another job's apply
        // need not wait for them.
        let stored = super::blob::put_all(self.blobs.as_ref(), &changes.files)?;
        self.write(|tx| apply_changes(tx, changes, &stored))
    }

    fn record_job(&self, job: &JobRecord) -> Result<(), StorageError> {
        self.finish(jobs::record_job(&self.lock(), job))
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StorageError> {
        self.read(|conn| jobs::find_job(conn, id))
    }

    fn jobs(&self, query: &JobQuery) -> Result<Vec<JobRecord>, StorageError> {
        self.read(|conn| jobs::find_jobs(conn, query))
    }

    fn configuration(
        &self,
        component: &str,
        id: &str,
    ) -> Result<Option<StoredConfiguration>, StorageError> {
        self.read(|conn| configs::find_configuration(conn, component, id))
    }

    fn configurations(
        &self,
        component: Option<&str>,
    ) -> Result<Vec<StoredConfiguration>, StorageError> {
        self.read(|conn| configs::list_configurations(conn, component))
    }

    fn put_configuration(
        &self,
        config: &StoredConfiguration,
    ) -> Result<StoredConfiguration, StorageError> {
        check_configuration(config)?;
        self.write(|tx| configs::put_configuration(tx, config))
    }

    fn remove_configuration(&self, component: &str, id: &str) -> Result<bool, StorageError> {
        check_component("component", component)?;
        check_id("configuration id", id)?;
        self.write(|tx| configs::remove(tx, configs::Table::Configurations, component, id))
    }

    fn oauth_credentials(
        &self,
        component: &str,
        id: &str,
    ) -> Result<Option<OAuthCredentials>, StorageError> {
        self.read(|conn| configs::find_credentials(conn, component, id))
    }

    fn list_oauth_credentials(
        &self,
        component: Option<&str>,
    ) -> Result<Vec<OAuthCredentials>, StorageError> {
        self.read(|conn| configs::list_credentials(conn, component))
    }

    fn put_oauth_credentials(
        &self,
        creds: &OAuthCredentials,
    ) -> Result<OAuthCredentials, StorageError> {
        check_credentials(creds)?;
        self.write(|tx| configs::put_credentials(tx, creds))
    }

    fn remove_oauth_credentials(&self, component: &str, id: &str) -> Result<bool, StorageError> {
        check_component("component", component)?;
        check_id("credentials id", id)?;
        self.write(|tx| configs::remove(tx, configs::Table::OAuth, component, id))
    }

    fn sweep(&self, min_age: Duration) -> Result<usize, StorageError> {
        let referenced = self.read(files::content_keys)?;
        super::blob::sweep(self.blobs.as_ref(), &referenced, min_age)
    }

    fn describe(&self) -> String {
        format!(
            "SQLite {}, files in {}",
            self.db_path.display(),
            self.blobs.location()
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{CsvProblem, StorageError};
    use super::test_fixture::{Fixture, T, id, strings, upload};
    use super::*;

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
            ..Changes::default()
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
}
