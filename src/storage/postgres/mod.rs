//! The shared backend: PostgreSQL for tables, states and job records; file contents in a
//! blob store (an S3 bucket, so that every host reads them).
//!
//! Everything lives in the schema `berth` of the database the URL names, created and
//! migrated by berth at first use ([`schema`]). The layout follows the embedded store's:
//! a registry (`tables`, `columns`, `metadata`), and one table `t<tid>` per storage table
//! with the columns `_row, _changed, c1, c2, …` (`_row` keeps the order rows were first
//! loaded in, `_changed` their commit time), so that no name a component chose reaches SQL
//! text. Loads stream CSV through `COPY … FROM STDIN`; exports through `COPY … TO STDOUT`,
//! re-written as the same CSV the embedded store makes.
//!
//! An [`apply`](Storage::apply) is one transaction (READ COMMITTED). Many hosts commit at
//! once, so it first takes a transaction-scoped advisory lock per table it writes, in the
//! order of their ids (never a cycle, never a deadlock): two jobs writing one table commit
//! one after the other, and an incremental upsert never loses another's rows. The commit
//! time its rows carry is taken under those locks, later than the tables' last change, so
//! for each table change times follow commit order and `changed_since: adaptive` (which
//! reads the change time in one snapshot) never misses a row committed concurrently. File
//! ids are drawn under one more lock, taken after the tables', for the same reason
//! (adaptive file inputs read "ids above the last seen"). A state the job read must still
//! have its version, and a job id commits once: its success record is written in the same
//! transaction, under the job id's primary key.
//!
//! Stored configurations and OAuth credentials are one row each, put in a transaction of
//! their own (the last put wins).
//!
//! Reads run in a REPEATABLE READ, READ ONLY transaction: one snapshot.
//!
//! TLS: the connection is plain (`NoTls`), which is fine to loopback or inside a private
//! network; a production setup across untrusted networks needs `postgres-rustls` (or a
//! TLS tunnel such as stunnel or a service mesh) — not wired yet.

mod configs;
mod export;
mod files;
mod jobs;
mod load;
mod locks;
mod schema;
mod states;
mod tables;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use postgres::{Client, IsolationLevel, NoTls, Transaction};

use super::blob::{Blob, BlobStore};
use super::check::{check_changes, tables_in_lock_order};
use super::configs::{check_component, check_configuration, check_credentials, check_id};
use super::sql::{Fail, PgRes as Res};
use super::{
    ApplyReport, Changes, ExportQuery, FileInfo, FileQuery, JobQuery, JobRecord, OAuthCredentials,
    StateKey, Storage, StorageError, StoredConfiguration, StoredState, TableId, TableInfo,
};
use locks::{FILES_LOCK, lock, table_lock};

/// The shared store. See the module documentation.
pub struct PgStorage {
    /// The URL without its password, for messages.
    shown: String,
    blobs: Box<dyn BlobStore>,
    client: Mutex<Client>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("url", &self.shown)
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

impl PgStorage {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// creating or migrating berth's schema in it, with file contents in `blobs`.
    pub fn open(url: &str, blobs: Box<dyn BlobStore>) -> Result<PgStorage, StorageError> {
        let shown = redact(url);
        let remote = |e: postgres::Error| StorageError::Remote {
            what: format!("PostgreSQL {shown}"),
            source: Box::new(e),
        };
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StorageError::Settings(format!("{shown}: {e}")))?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        config.application_name("berth");
        let client = config.connect(NoTls).map_err(remote)?;
        let storage = PgStorage {
            shown,
            blobs,
            client: Mutex::new(client),
        };
        let mut client = storage.lock();
        storage.finish(schema::ensure(&mut client, &storage.shown))?;
        drop(client);
        Ok(storage)
    }

    fn lock(&self) -> MutexGuard<'_, Client> {
        // A panic while the lock was held dropped its transaction, which rolled back.
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish<T>(&self, r: Res<T>) -> Result<T, StorageError> {
        r.map_err(|f| match f {
            Fail::Storage(e) => e,
            Fail::Db(e) => StorageError::Remote {
                what: format!("PostgreSQL {}", self.shown),
                source: Box::new(e),
            },
        })
    }

    /// Runs `read` in one snapshot.
    fn read<T>(
        &self,
        read: impl FnOnce(&mut Transaction<'_>) -> Res<T>,
    ) -> Result<T, StorageError> {
        let mut client = self.lock();
        self.finish((|| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let done = read(&mut tx)?;
            tx.commit()?;
            Ok(done)
        })())
    }

    /// Runs `write` in one transaction and commits it.
    fn write<T>(
        &self,
        write: impl FnOnce(&mut Transaction<'_>) -> Res<T>,
    ) -> Result<T, StorageError> {
        let mut client = self.lock();
        self.finish((|| {
            let mut tx = client.transaction()?;
            let done = write(&mut tx)?;
            tx.commit()?;
            Ok(done)
        })())
    }
}

/// Everything `apply` writes, inside its transaction.
fn apply_changes(tx: &mut Transaction<'_>, changes: &Changes, stored: &[Blob]) -> Res<ApplyReport> {
    let ids = tables_in_lock_order(changes);
    let mut keys: Vec<i32> = ids.iter().map(|id| table_lock(id)).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        lock(tx, key)?;
    }
    // The job's record first: a second commit of one job id stops here (after waiting for
    // the first), whatever else it would find changed.
    if let Some(job) = &changes.job {
        jobs::commit_job(tx, job)?;
    }
    let now = tables::commit_ms(tx, &ids)?;
    let mut tables = Vec::with_capacity(changes.tables.len());
    for (n, load) in changes.tables.iter().enumerate() {
        tables.push(load::load_table(tx, load, now, n)?);
    }
    if !changes.files.is_empty() {
        lock(tx, FILES_LOCK)?;
    }
    let mut files = Vec::with_capacity(changes.files.len());
    for (upload, blob) in changes.files.iter().zip(stored) {
        files.push(files::insert_file(tx, upload, blob, now)?);
    }
    states::check_versions(tx, &changes.state_versions)?;
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

/// A PostgreSQL URL without its password, for messages and logs.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_owned(),
    }
    .split("password=")
    .next()
    .unwrap_or_default()
    .to_owned()
}

impl Storage for PgStorage {
    fn tables(&self) -> Result<Vec<TableInfo>, StorageError> {
        self.read(|tx| tables::list_tables(tx))
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>, StorageError> {
        self.read(|tx| tables::describe_table(tx, id))
    }

    fn export(
        &self,
        id: &TableId,
        query: &ExportQuery,
        out: &mut dyn Write,
    ) -> Result<u64, StorageError> {
        self.read(|tx| export::export_table(tx, id, query, out))
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>, StorageError> {
        self.read(|tx| files::find_files(tx, query))
    }

    fn open_file(&self, id: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let key = self.read(|tx| files::content_key(tx, id))?;
        self.blobs.open(&key)
    }

    fn read_state(&self, key: &StateKey) -> Result<StoredState, StorageError> {
        super::check::check_state_key(key)?;
        let (text, version) = self.read(|tx| states::read_state(tx, key))?;
        let value = text
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| StorageError::Remote {
                    what: format!("state {key} in {}", self.shown),
                    source: Box::new(e),
                })
            })
            .transpose()?;
        Ok(StoredState { value, version })
    }

    fn apply(&self, changes: &Changes) -> Result<ApplyReport, StorageError> {
        check_changes(changes)?;
        // Contents first, outside the transaction: it only names them.
        let stored = super::blob::put_all(self.blobs.as_ref(), &changes.files)?;
        self.write(|tx| apply_changes(tx, changes, &stored))
    }

    fn record_job(&self, job: &JobRecord) -> Result<(), StorageError> {
        self.write(|tx| jobs::record_job(tx, job))
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StorageError> {
        self.read(|tx| jobs::find_job(tx, id))
    }

    fn jobs(&self, query: &JobQuery) -> Result<Vec<JobRecord>, StorageError> {
        self.read(|tx| jobs::find_jobs(tx, query))
    }

    fn configuration(
        &self,
        component: &str,
        id: &str,
    ) -> Result<Option<StoredConfiguration>, StorageError> {
        self.read(|tx| configs::find_configuration(tx, component, id))
    }

    fn configurations(
        &self,
        component: Option<&str>,
    ) -> Result<Vec<StoredConfiguration>, StorageError> {
        self.read(|tx| configs::list_configurations(tx, component))
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
        self.read(|tx| configs::find_credentials(tx, component, id))
    }

    fn list_oauth_credentials(
        &self,
        component: Option<&str>,
    ) -> Result<Vec<OAuthCredentials>, StorageError> {
        self.read(|tx| configs::list_credentials(tx, component))
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
        let referenced: HashSet<String> = self.read(|tx| files::content_keys(tx))?;
        super::blob::sweep(self.blobs.as_ref(), &referenced, min_age)
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL {}, files in {}",
            self.shown,
            self.blobs.location()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact("postgres://berth:s3cret@127.0.0.1:5432/db?sslmode=disable"),
            "postgres://berth@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://h/db?password=x"), "postgres://h/db?");
    }
}
