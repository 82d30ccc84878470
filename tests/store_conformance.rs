//! One storage conformance suite, run against every backend: the embedded SQLite store
//! (files in a local directory) and the shared one, PostgreSQL with files in S3 — real
//! servers, started by `scripts/services.sh start`, which prints the variables this suite
//! reads (`BERTH_TEST_PG_URL`, `BERTH_TEST_S3_URL`, `AWS_*`). Each test is written once
//! and instantiated per backend by `conformance!`; each run gets a database (or directory)
//! and an S3 prefix of its own. Without the servers the PostgreSQL variants skip — and
//! fail under `CI=true`.
//!
//! The same operations must give the same answers, byte for byte: exports, listings,
//! errors, and what storage holds after a refused load, a state conflict, a second commit
//! of a job id, or a berth killed in the middle of a commit.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth::storage::{
    Changes, CsvProblem, CsvSource, ExportQuery, FileInfo, FileQuery, FileUpload, FilesUrl,
    FilterOperator, JobQuery, JobRecord, JobStatus, MetadataEntry, OAuthCredentials, Provenance,
    StateKey, Storage, StorageError, StorageUrl, StoreSettings, StoredConfiguration, StoredRow,
    TableId, TableInfo, TableLoad, WhereFilter,
};
use common::*;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A store of its own for one test: a directory, and for PostgreSQL a database and an S3
/// prefix (the database is dropped at the end).
struct Env {
    dir: tempfile::TempDir,
    settings: StoreSettings,
    /// The database to drop, and the URL of the one to drop it from.
    database: Option<(String, String)>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((name, admin)) = &self.database
            && let Ok(mut c) = ::postgres::Client::connect(admin, ::postgres::NoTls)
        {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
        // The test's prefix of the bucket goes too.
        if let FilesUrl::S3 { bucket, prefix } = &self.settings.files
            && let Ok(blobs) = berth::storage::blob::S3Blobs::open(bucket, prefix)
        {
            use berth::storage::blob::BlobStore;
            for (key, _) in blobs.list().unwrap_or_default() {
                let _ = blobs.delete(&key);
            }
        }
    }
}

/// The servers' URLs, or why the PostgreSQL variants cannot run.
fn servers() -> Result<(String, String), String> {
    let pg = std::env::var("BERTH_TEST_PG_URL").map_err(|_| "BERTH_TEST_PG_URL is not set")?;
    let s3 = std::env::var("BERTH_TEST_S3_URL").map_err(|_| "BERTH_TEST_S3_URL is not set")?;
    Ok((pg, s3))
}

/// The store of one test, or `None` (the test skips) when its servers are missing.
fn env(backend: Backend) -> Option<Env> {
    let dir = tempfile::tempdir().unwrap();
    if let Some((uid, gid)) = test_user() {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    }
    match backend {
        Backend::Sqlite => {
            let settings = StoreSettings::embedded(&dir.path().join("home"));
            Some(Env {
                dir,
                settings,
                database: None,
            })
        }
        Backend::Postgres => {
            let (pg, s3) = match servers() {
                Ok(urls) => urls,
                Err(why) => {
                    let why = format!("{why} (eval \"$(scripts/services.sh start)\")");
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("CI must run every test, but: {why}");
                    }
                    eprintln!("skipping: {why}");
                    return None;
                }
            };
            let tag = format!("{:016x}", rand_u64());
            let name = format!("berth_t_{tag}");
            let mut admin = ::postgres::Client::connect(&pg, ::postgres::NoTls).unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let (base, _) = pg.rsplit_once('/').unwrap();
            let bucket = s3.trim_start_matches("s3://").trim_end_matches('/');
            let settings = StoreSettings {
                storage: StorageUrl::Postgres(format!("{base}/{name}")),
                files: FilesUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: format!("t-{tag}"),
                },
            };
            Some(Env {
                dir,
                settings,
                database: Some((name, pg)),
            })
        }
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

impl Env {
    fn open(&self) -> Box<dyn Storage> {
        berth::storage::open(&self.settings).unwrap()
    }

    /// The URLs berth is given for this store.
    fn urls(&self) -> (String, String) {
        let storage = match &self.settings.storage {
            StorageUrl::Sqlite(dir) => format!("sqlite:{}", dir.display()),
            StorageUrl::Postgres(url) => url.clone(),
        };
        let files = match &self.settings.files {
            FilesUrl::Local(dir) => dir.display().to_string(),
            FilesUrl::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        };
        (storage, files)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn gz(&self, name: &str, content: &[u8]) -> PathBuf {
        self.file(name, &gzip(content))
    }

    fn load(&self, table: &str, csv: &str) -> TableLoad {
        let path = self.file(&format!("{table}.{:x}.csv", rand_u64()), csv.as_bytes());
        TableLoad::new(id(table), CsvSource::file(&path), prov())
    }
}

/// A store under test with the shortcuts the tests share.
struct S {
    env: Env,
    store: Box<dyn Storage>,
}

impl S {
    fn new(backend: Backend) -> Option<S> {
        let env = env(backend)?;
        let store = env.open();
        Some(S { env, store })
    }

    fn apply(&self, loads: Vec<TableLoad>) -> Result<berth::storage::ApplyReport, StorageError> {
        self.store.apply(&Changes {
            tables: loads,
            ..Changes::default()
        })
    }

    fn full(&self, table: &str, csv: &str) {
        self.apply(vec![self.env.load(table, csv)]).unwrap();
    }

    fn incremental(&self, table: &str, csv: &str) -> berth::storage::LoadReport {
        let mut load = self.env.load(table, csv);
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

    /// Everything visible, to compare before and after a refused change.
    fn snapshot(&self) -> (Vec<TableInfo>, Vec<String>, Vec<FileInfo>) {
        let tables = self.store.tables().unwrap();
        let data = tables.iter().map(|t| self.csv(&t.id.to_string())).collect();
        (
            tables,
            data,
            self.store.files(&FileQuery::default()).unwrap(),
        )
    }

    fn upload(&self, name: &str, content: &str, tags: &[&str]) -> FileInfo {
        let path = self.env.file(name, content.as_bytes());
        let report = self
            .store
            .apply(&Changes {
                files: vec![upload(&path, name, tags)],
                ..Changes::default()
            })
            .unwrap();
        report.files[0].clone()
    }

    fn content(&self, file: u64) -> String {
        let mut s = String::new();
        self.store
            .open_file(file)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
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

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn upload(path: &Path, name: &str, tags: &[&str]) -> FileUpload {
    FileUpload {
        path: path.to_owned(),
        name: name.into(),
        tags: strings(tags),
        is_permanent: false,
        is_public: false,
        is_encrypted: true,
    }
}

const T: &str = "in.c-main.t";

/// Instantiates each test once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Postgres)
            })*
        }
    };
}

conformance!(
    tables_are_created_replaced_appended_widened_and_described,
    upserts_keep_the_last_row_of_a_key_in_first_loaded_order,
    primary_keys_change_when_the_rows_allow_and_else_stay,
    delete_where_filters_and_column_selection,
    changed_since_follows_commit_order,
    sliced_gzipped_headless_and_delimited_sources,
    bad_csv_is_refused_naming_file_and_line_and_nothing_is_written,
    files_are_found_by_tags_ids_and_age,
    states_have_versions_and_a_stale_one_conflicts,
    a_job_id_commits_once_and_records_are_listed,
    cli_output_is_the_same_on_every_backend,
    adaptive_inputs_bring_only_what_changed_since_the_last_run,
    berth_killed_mid_commit_leaves_storage_before_or_after,
    concurrent_upserts_lose_no_row,
    adaptive_reads_miss_no_row_committed_concurrently,
    a_state_changed_by_another_run_is_a_conflict,
    a_job_id_commits_once_even_when_two_berths_run_it,
    jobs_are_listed_and_shown,
    configurations_are_put_versioned_listed_and_removed,
    oauth_credentials_are_put_listed_and_removed,
    a_store_of_the_previous_schema_gains_configurations,
    a_job_runs_a_stored_configuration_and_the_rows_it_names,
    oauth_credentials_reach_config_json_where_the_broker_puts_them,
);

fn stored_config(component: &str, id: &str, parameters: Value) -> StoredConfiguration {
    StoredConfiguration {
        component: component.into(),
        id: id.into(),
        name: format!("config {id}"),
        configuration: json!({"parameters": parameters}),
        rows: vec![
            StoredRow {
                id: "r1".into(),
                name: "first".into(),
                is_disabled: false,
                configuration: json!({"parameters": {"#row": "KBC::ProjectSecure::x"}}),
            },
            StoredRow {
                id: "r2".into(),
                name: String::new(),
                is_disabled: true,
                configuration: json!({}),
            },
        ],
        version: 0,
        updated_ms: 0,
    }
}

fn configurations_are_put_versioned_listed_and_removed(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let store = &s.store;
    assert_eq!(store.configuration("acme.ex", "42").unwrap(), None);
    let first = stored_config("acme.ex", "42", json!({"a": 1}));
    let put = store.put_configuration(&first).unwrap();
    assert_eq!(put.version, 1);
    assert!(put.updated_ms > 0);
    let got = store.configuration("acme.ex", "42").unwrap().unwrap();
    assert_eq!(got, put);
    assert_eq!(
        got.rows[0].configuration["parameters"]["#row"],
        "KBC::ProjectSecure::x"
    );
    assert!(got.rows[1].is_disabled);

    // A second put replaces it, one version up.
    let second = stored_config("acme.ex", "42", json!({"a": 2}));
    let put = store.put_configuration(&second).unwrap();
    assert_eq!(put.version, 2);
    let got = store.configuration("acme.ex", "42").unwrap().unwrap();
    assert_eq!(got.configuration, json!({"parameters": {"a": 2}}));
    assert_eq!(got.version, 2);

    for (component, id) in [
        ("acme.ex", "7"),
        ("acme.ex", "10"),
        ("Acme.ex", "1"),
        ("b.c", "x"),
    ] {
        store
            .put_configuration(&stored_config(component, id, json!({})))
            .unwrap();
    }
    let keys = |list: Vec<StoredConfiguration>| -> Vec<String> {
        list.iter()
            .map(|c| format!("{}/{}", c.component, c.id))
            .collect()
    };
    // Sorted as bytes, whatever the database's locale.
    assert_eq!(
        keys(store.configurations(None).unwrap()),
        [
            "Acme.ex/1",
            "acme.ex/10",
            "acme.ex/42",
            "acme.ex/7",
            "b.c/x"
        ]
    );
    assert_eq!(
        keys(store.configurations(Some("acme.ex")).unwrap()),
        ["acme.ex/10", "acme.ex/42", "acme.ex/7"]
    );
    assert!(store.configurations(Some("none")).unwrap().is_empty());

    assert!(store.remove_configuration("acme.ex", "42").unwrap());
    assert!(!store.remove_configuration("acme.ex", "42").unwrap());
    assert_eq!(store.configuration("acme.ex", "42").unwrap(), None);
    // Put again after a removal, it starts anew.
    assert_eq!(store.put_configuration(&first).unwrap().version, 1);

    // Bad ids and shapes are the user's, named, and nothing is stored.
    let before = store.configurations(None).unwrap();
    let mut bad = Vec::new();
    bad.push(stored_config("../x", "1", json!({})));
    bad.push(stored_config("acme.ex", "a/b", json!({})));
    bad.push(stored_config("acme.ex", "", json!({})));
    let mut twice = stored_config("acme.ex", "9", json!({}));
    twice.rows[1].id = "r1".into();
    bad.push(twice);
    let mut not_object = stored_config("acme.ex", "9", json!({}));
    not_object.configuration = json!([1]);
    bad.push(not_object);
    let mut bad_row = stored_config("acme.ex", "9", json!({}));
    bad_row.rows[0].id = String::new();
    bad.push(bad_row);
    let mut messages = Vec::new();
    for config in &bad {
        let e = store.put_configuration(config).unwrap_err();
        assert!(e.is_user_error(), "{e}");
        messages.push(e.to_string());
    }
    assert_eq!(
        messages,
        [
            "invalid component \"../x\": a component id has 1 to 128 of A-Z a-z 0-9 . - _ \
             (e.g. keboola.ex-db)",
            "invalid configuration id \"a/b\": an id has 1 to 128 bytes and no '/'",
            "invalid configuration id \"\": an id has 1 to 128 bytes and no '/'",
            "invalid row \"r1\" of configuration acme.ex/9: it appears twice",
            "invalid configuration acme.ex/9: it must be a JSON object",
            "invalid row id of configuration acme.ex/9 \"\": an id has 1 to 128 bytes and no '/'",
        ]
    );
    assert!(
        store
            .remove_configuration("acme.ex", "a/b")
            .unwrap_err()
            .is_user_error()
    );
    assert_eq!(store.configurations(None).unwrap(), before);
}

fn oauth_credentials_are_put_listed_and_removed(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let store = &s.store;
    assert_eq!(store.oauth_credentials("acme.ex", "main").unwrap(), None);
    let creds = |data: &str| OAuthCredentials {
        component: "acme.ex".into(),
        id: "main".into(),
        credentials: json!({
            "id": "main", "authorizedFor": "ops", "appKey": "key",
            "#appSecret": "KBC::ProjectSecure::s", "#data": data
        }),
        updated_ms: 0,
    };
    let put = store
        .put_oauth_credentials(&creds("KBC::ProjectSecure::d1"))
        .unwrap();
    assert!(put.updated_ms > 0);
    assert_eq!(
        store.oauth_credentials("acme.ex", "main").unwrap().unwrap(),
        put
    );
    store
        .put_oauth_credentials(&creds("KBC::ProjectSecure::d2"))
        .unwrap();
    let got = store.oauth_credentials("acme.ex", "main").unwrap().unwrap();
    assert_eq!(got.credentials["#data"], "KBC::ProjectSecure::d2");
    // Credentials and configurations are apart: the same ids name different things.
    assert_eq!(store.configuration("acme.ex", "main").unwrap(), None);
    let mut other = creds("x");
    other.component = "acme.b".into();
    store.put_oauth_credentials(&other).unwrap();
    let all: Vec<String> = store
        .list_oauth_credentials(None)
        .unwrap()
        .iter()
        .map(|c| format!("{}/{}", c.component, c.id))
        .collect();
    assert_eq!(all, ["acme.b/main", "acme.ex/main"]);
    assert_eq!(
        store.list_oauth_credentials(Some("acme.b")).unwrap().len(),
        1
    );
    assert!(store.remove_oauth_credentials("acme.b", "main").unwrap());
    assert!(!store.remove_oauth_credentials("acme.b", "main").unwrap());
    let mut bad = creds("x");
    bad.credentials = json!("plain");
    let e = store.put_oauth_credentials(&bad).unwrap_err();
    assert!(e.is_user_error());
    assert_eq!(
        e.to_string(),
        "invalid credentials acme.ex/main: it must be a JSON object"
    );
    bad = creds("x");
    bad.id = "a/b".into();
    assert!(
        store
            .put_oauth_credentials(&bad)
            .unwrap_err()
            .is_user_error()
    );
    assert_eq!(store.list_oauth_credentials(None).unwrap().len(), 1);
}

/// A store made by the berth before configurations were stored: the schema version before,
/// without their tables. Opening it migrates it and keeps what it held.
fn a_store_of_the_previous_schema_gains_configurations(b: Backend) {
    let Some(s) = S::new(b) else { return };
    s.full(T, "id\n1\n");
    let older = "DROP TABLE configurations; DROP TABLE oauth_credentials;";
    match &s.env.settings.storage {
        StorageUrl::Sqlite(dir) => {
            let db = rusqlite::Connection::open(dir.join("project.sqlite")).unwrap();
            db.execute_batch(older).unwrap();
            db.pragma_update(None, "user_version", 2).unwrap();
        }
        StorageUrl::Postgres(url) => {
            let mut db = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
            db.batch_execute(&format!(
                "SET search_path TO berth; {older} UPDATE schema_version SET version = 1"
            ))
            .unwrap();
        }
    }
    drop(s.store);
    let store = s.env.open();
    assert_eq!(store.tables().unwrap().len(), 1);
    assert!(store.configurations(None).unwrap().is_empty());
    let put = store
        .put_configuration(&stored_config("acme.ex", "1", json!({})))
        .unwrap();
    assert_eq!(put.version, 1);
    assert!(store.list_oauth_credentials(None).unwrap().is_empty());
}

fn tables_are_created_replaced_appended_widened_and_described(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let mut load = s.env.load(T, "id,name\n1,ann\n2,bob\n");
    load.metadata = vec![MetadataEntry {
        key: "KBC.name".into(),
        value: "orders".into(),
    }];
    load.column_metadata.insert(
        "name".into(),
        vec![MetadataEntry {
            key: "KBC.datatype.type".into(),
            value: "STRING".into(),
        }],
    );
    load.description = Some("all".into());
    let report = s.apply(vec![load]).unwrap().tables.remove(0);
    assert!(report.created);
    assert_eq!((report.rows_loaded, report.rows), (2, 2));
    let created = s.info(T);
    assert_eq!(created.columns, strings(&["id", "name"]));
    assert_eq!(created.created_by, prov());
    assert_eq!(created.metadata[0].key, "KBC.name");
    assert_eq!(created.column_metadata["name"][0].value, "STRING");
    assert_eq!(created.description.as_deref(), Some("all"));

    // Incremental without a key appends; a new column widens the table.
    let report = s.incremental(T, "name,id,extra\ncid,3,x\n");
    assert_eq!(report.columns_added, strings(&["extra"]));
    assert_eq!((report.rows_loaded, report.rows), (1, 3));
    assert_eq!(s.csv(T), "id,name,extra\n1,ann,\n2,bob,\n3,cid,x\n");
    // A full load replaces every row, and may not drop a column.
    s.full(T, "id,name,extra\n9,zed,z\n");
    assert_eq!(s.csv(T), "id,name,extra\n9,zed,z\n");
    let e = s.apply(vec![s.env.load(T, "id\n1\n")]).unwrap_err();
    assert!(e.is_user_error());
    assert!(
        e.to_string().contains("lacks columns \"name\", \"extra\""),
        "{e}"
    );
    // Metadata merges by key; the first entry keeps its id.
    let mut load = s.env.load(T, "id,name,extra\n9,zed,z\n");
    load.metadata = vec![
        MetadataEntry {
            key: "KBC.name".into(),
            value: "renamed".into(),
        },
        MetadataEntry {
            key: "b".into(),
            value: "2".into(),
        },
    ];
    load.provenance.component = "keboola.other".into();
    s.apply(vec![load]).unwrap();
    let info = s.info(T);
    assert_eq!(info.metadata.len(), 2);
    assert_eq!(info.metadata[0].id, created.metadata[0].id);
    assert_eq!(
        (
            info.metadata[0].value.as_str(),
            info.metadata[0].provider.as_str()
        ),
        ("renamed", "keboola.other")
    );
    assert_eq!(info.last_updated_by.component, "keboola.other");
    assert_eq!(info.created_ms, created.created_ms);

    for t in ["out.c-b.x", "in.c-b.y", "in.c-a.z", "in.C-a.z", "in.c_a.z"] {
        s.full(t, "a\n1\n");
    }
    let ids: Vec<String> = s
        .store
        .tables()
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    // Sorted as bytes, whatever the database's locale.
    assert_eq!(
        ids,
        strings(&[
            "in.C-a.z",
            "in.c-a.z",
            "in.c-b.y",
            "in.c-main.t",
            "in.c_a.z",
            "out.c-b.x"
        ])
    );
    assert!(s.store.table(&id("in.c-main.none")).unwrap().is_none());
}

fn upserts_keep_the_last_row_of_a_key_in_first_loaded_order(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let mut load = s.env.load(T, "id,v\n1,a\n2,b\n1,a2\n");
    load.primary_key = strings(&["id"]);
    let report = s.apply(vec![load]).unwrap().tables.remove(0);
    assert_eq!((report.rows_loaded, report.rows), (3, 2));
    assert_eq!(s.csv(T), "id,v\n1,a2\n2,b\n");
    let report = s.incremental(T, "id,v\n5,e\n3,c\n2,b2\n3,c2\n2,b3\n4,d\n");
    assert_eq!((report.rows_loaded, report.rows), (6, 5));
    assert_eq!(s.csv(T), "id,v\n1,a2\n2,b3\n5,e\n3,c2\n4,d\n");
    assert_eq!(s.info(T).rows, 5);

    // Composite keys; columns matched by name, not position.
    let mut load = s.env.load("in.c-main.c", "a,b,v\n1,x,first\n1,y,second\n");
    load.primary_key = strings(&["a", "b"]);
    s.apply(vec![load]).unwrap();
    s.incremental("in.c-main.c", "v,b,a\nthird,x,1\nfourth,z,1\n");
    assert_eq!(
        s.csv("in.c-main.c"),
        "a,b,v\n1,x,third\n1,y,second\n1,z,fourth\n"
    );
}

fn primary_keys_change_when_the_rows_allow_and_else_stay(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let mut load = s.env.load(T, "id,k,v\n1,a,x\n2,a,y\n");
    load.primary_key = strings(&["id"]);
    s.apply(vec![load]).unwrap();
    // Not unique on k: the table keeps its key (a warning, as the original's output
    // mapping), and the load goes on with it.
    let mut load = s.env.load(T, "id,k,v\n3,b,z\n1,c,w\n");
    load.incremental = true;
    load.primary_key = strings(&["k"]);
    s.apply(vec![load]).unwrap();
    assert_eq!(s.info(T).primary_key, strings(&["id"]));
    assert_eq!(s.csv(T), "id,k,v\n1,c,w\n2,a,y\n3,b,z\n");
    // A full load replaces the rows first, so any key goes.
    let mut load = s.env.load(T, "id,k,v\n1,a,x\n2,a,y\n");
    load.primary_key = strings(&["k"]);
    s.apply(vec![load]).unwrap();
    assert_eq!(s.info(T).primary_key, strings(&["k"]));
    assert_eq!(s.csv(T), "id,k,v\n2,a,y\n");
    // A column the table lacks: it keeps its key.
    let mut load = s.env.load(T, "id,k,v\n1,a,x\n");
    load.primary_key = strings(&["nope"]);
    s.apply(vec![load]).unwrap();
    assert_eq!(s.info(T).primary_key, strings(&["k"]));
    // An exact empty key removes it.
    let mut load = s.env.load(T, "id,k,v\n1,a,x\n2,a,y\n");
    load.exact_primary_key = true;
    s.apply(vec![load]).unwrap();
    assert!(s.info(T).primary_key.is_empty());
    // A new table cannot be keyed on a column it lacks.
    let mut load = s.env.load("in.c-main.new", "id\n1\n");
    load.primary_key = strings(&["nope"]);
    let e = s.apply(vec![load]).unwrap_err();
    assert!(e.to_string().contains("primary key column \"nope\""), "{e}");
}

fn delete_where_filters_and_column_selection(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let data = "id,city\n1,Prague\n2,Brno\n3,Ostrava\n4,Prague\n5,O'Hare\n6,a\\b\n";
    s.full(T, data);
    let q =
        |columns: Option<&[&str]>, filter: Option<(&str, &[&str], FilterOperator)>| ExportQuery {
            columns: columns.map(strings),
            filter: filter.map(|(column, values, operator)| WhereFilter {
                column: column.into(),
                values: strings(values),
                operator,
            }),
            ..ExportQuery::default()
        };
    assert_eq!(
        s.export(T, &q(Some(&["city", "id"]), None)),
        "city,id\nPrague,1\nBrno,2\nOstrava,3\nPrague,4\nO'Hare,5\na\\b,6\n"
    );
    let eq = |v: &[&str]| q(Some(&["id"]), Some(("city", v, FilterOperator::Eq)));
    assert_eq!(s.export(T, &eq(&["Prague", "O'Hare"])), "id\n1\n4\n5\n");
    assert_eq!(s.export(T, &eq(&["a\\b"])), "id\n6\n");
    assert_eq!(s.export(T, &eq(&[])), "id\n");
    let ne = q(
        Some(&["id"]),
        Some(("city", &["Prague", "Brno"], FilterOperator::Ne)),
    );
    assert_eq!(s.export(T, &ne), "id\n3\n5\n6\n");
    let limited = ExportQuery {
        limit: Some(2),
        ..q(Some(&["id"]), None)
    };
    let mut out = Vec::new();
    assert_eq!(s.store.export(&id(T), &limited, &mut out).unwrap(), 2);
    assert_eq!(out, b"id\n1\n2\n");
    for (bad, message) in [
        (
            q(Some(&["id", "nope"]), None),
            "table in.c-main.t has no column \"nope\"",
        ),
        (
            q(None, Some(("nope", &["x"], FilterOperator::Eq))),
            "table in.c-main.t has no column \"nope\"",
        ),
        (
            q(Some(&["id", "id"]), None),
            "invalid export of in.c-main.t: column \"id\" is selected twice",
        ),
    ] {
        let e = s.store.export(&id(T), &bad, &mut Vec::new()).unwrap_err();
        assert!(e.is_user_error());
        assert_eq!(e.to_string(), message);
    }
    let e = s
        .store
        .export(
            &id("in.c-main.none"),
            &ExportQuery::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "table in.c-main.none does not exist");

    let mut load = s.env.load(T, "id,city\n7,Plzen\n");
    load.incremental = true;
    load.delete_where = Some(WhereFilter {
        column: "city".into(),
        values: strings(&["Prague", "Brno"]),
        operator: FilterOperator::Eq,
    });
    let report = s.apply(vec![load]).unwrap().tables.remove(0);
    assert_eq!((report.rows_deleted, report.rows), (3, 4));
    let mut load = s.env.load(T, "id,city\n8,Kladno\n");
    load.incremental = true;
    load.delete_where = Some(WhereFilter {
        column: "city".into(),
        values: strings(&["Plzen"]),
        operator: FilterOperator::Ne,
    });
    let report = s.apply(vec![load]).unwrap().tables.remove(0);
    assert_eq!((report.rows_deleted, report.rows), (3, 2));
    assert_eq!(s.csv(T), "id,city\n7,Plzen\n8,Kladno\n");
}

fn changed_since_follows_commit_order(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let mut last = 0;
    for _ in 0..5 {
        let t = s
            .apply(vec![s.env.load(T, "id\n1\n")])
            .unwrap()
            .committed_ms;
        assert!(t > last, "{t} after {last}");
        last = t;
    }
    let info = s.info(T);
    assert_eq!((info.last_change_ms, info.last_import_ms), (last, last));
    let since = |ms| ExportQuery {
        changed_since_ms: Some(ms),
        ..ExportQuery::default()
    };
    assert_eq!(s.export(T, &since(last + 1)), "id\n");
    let mut load = s.env.load(T, "id,v\n1,a\n2,b\n3,c\n");
    load.primary_key = strings(&["id"]);
    let t1 = s.apply(vec![load]).unwrap().committed_ms;
    let report = s.incremental(T, "id,v\n2,b2\n4,d\n");
    let t2 = s.info(T).last_change_ms;
    assert!(t2 > t1);
    assert_eq!(report.rows, 4);
    assert_eq!(s.export(T, &since(t2)), "id,v\n2,b2\n4,d\n");
    assert_eq!(s.export(T, &since(t1)), "id,v\n1,a\n2,b2\n3,c\n4,d\n");
}

fn sliced_gzipped_headless_and_delimited_sources(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let slices = vec![
        s.env.file("part0", b"1,a\n2,b\n"),
        s.env.gz("part1.csv.gz", b"3,\"c\nc\"\n4,d\n"),
        s.env.file("part2", b""),
        s.env.gz("part3.gz", b"5,\"tab\there, back\\slash\r\n\""),
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
    assert_eq!(s.apply(vec![load]).unwrap().tables[0].rows, 5);
    assert_eq!(
        s.csv(T),
        "id,v\n1,a\n2,b\n3,\"c\nc\"\n4,d\n5,\"tab\there, back\\slash\r\n\"\n"
    );
    let path = s.env.file(
        "semi.csv",
        "id;text\n1;'a;b'\n2;'it''s'\n3;\"plain\"\n4;žluťoučký\n".as_bytes(),
    );
    let mut source = CsvSource::file(&path);
    source.delimiter = b';';
    source.enclosure = b'\'';
    let semi = "in.c-main.semi";
    s.apply(vec![TableLoad::new(id(semi), source, prov())])
        .unwrap();
    assert_eq!(
        s.csv(semi),
        "id,text\n1,a;b\n2,it's\n3,\"\"\"plain\"\"\"\n4,žluťoučký\n"
    );
}

fn bad_csv_is_refused_naming_file_and_line_and_nothing_is_written(b: Backend) {
    let Some(s) = S::new(b) else { return };
    s.full(T, "id,v\n0,zero\n");
    let file = s.env.file("keep.txt", b"kept");
    let key = StateKey {
        component: "keboola.ex-test".into(),
        config: "1".into(),
        row: None,
    };
    let before = s.snapshot();
    let cases: &[(&[u8], u64, CsvProblem)] = &[
        (
            b"id,v\n1,a\n2,b,extra\n",
            3,
            CsvProblem::FieldCount {
                found: 3,
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
            b"id,v\n1,a\n2,b\x00c\n",
            3,
            CsvProblem::NulCharacter { field: 2 },
        ),
        (
            b"id,id\n1,a\n",
            1,
            CsvProblem::DuplicateColumnName { name: "id".into() },
        ),
        (b"id,\n1,a\n", 1, CsvProblem::EmptyColumnName { column: 2 }),
        (b"", 1, CsvProblem::MissingHeader),
    ];
    for (n, (data, line, problem)) in cases.iter().enumerate() {
        let path = s.env.file(&format!("bad{n}.csv"), data);
        for incremental in [false, true] {
            // A good load, a file and a state go with it: none of them may land.
            let mut good = s.env.load("in.c-main.new", "x\n1\n");
            good.incremental = incremental;
            let mut bad = TableLoad::new(id(T), CsvSource::file(&path), prov());
            bad.incremental = incremental;
            let e = s
                .store
                .apply(&Changes {
                    tables: vec![good, bad],
                    files: vec![upload(&file, "keep.txt", &["t"])],
                    states: vec![(key.clone(), Some(json!({"n": n})))],
                    ..Changes::default()
                })
                .unwrap_err();
            assert!(e.is_user_error());
            assert_eq!(
                e.to_string(),
                format!("{}: line {line}: {problem}", path.display()),
                "case {n}"
            );
            assert_eq!(s.snapshot(), before, "case {n}");
            assert_eq!(s.store.read_state(&key).unwrap().version, 0);
        }
    }
}

fn files_are_found_by_tags_ids_and_age(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let a = s.upload("a.txt", "a.txt", &["x", "y"]);
    let bf = s.upload("b.txt", "b.txt", &["x"]);
    let c = s.upload("c.txt", "c.txt", &["y", "z", "y"]);
    let d = s.upload("d.txt", "d.txt", &[]);
    assert!(a.id < bf.id && bf.id < c.id && c.id < d.id);
    assert_eq!(c.tags, strings(&["y", "z"]));
    let ids =
        |q: FileQuery| -> Vec<u64> { s.store.files(&q).unwrap().iter().map(|f| f.id).collect() };
    assert_eq!(ids(FileQuery::default()), vec![d.id, c.id, bf.id, a.id]);
    let tags = |t: &[&str]| strings(t);
    assert_eq!(
        ids(FileQuery {
            tags_all: tags(&["x", "y", "x"]),
            ..FileQuery::default()
        }),
        vec![a.id]
    );
    assert_eq!(
        ids(FileQuery {
            include_any: tags(&["z", "x"]),
            exclude: tags(&["y"]),
            ..FileQuery::default()
        }),
        vec![bf.id]
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
            since_id: Some(bf.id),
            limit: Some(1),
            ..FileQuery::default()
        }),
        vec![d.id]
    );
    let listed = s
        .store
        .files(&FileQuery {
            ids: vec![a.id],
            ..FileQuery::default()
        })
        .unwrap();
    assert_eq!(listed, vec![a.clone()]);
    assert_eq!(s.content(c.id), "c.txt");
    let e = s.store.open_file(999).err().unwrap();
    assert!(e.is_user_error());
    assert_eq!(e.to_string(), "file 999 does not exist");

    // Tags added once, all or nothing.
    s.store
        .apply(&Changes {
            file_tags: vec![(a.id, strings(&["done", "x", "done"]))],
            ..Changes::default()
        })
        .unwrap();
    let e = s
        .store
        .apply(&Changes {
            file_tags: vec![(a.id, strings(&["more"])), (999, strings(&["y"]))],
            ..Changes::default()
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "file 999 does not exist");
    let now = &s
        .store
        .files(&FileQuery {
            ids: vec![a.id],
            ..FileQuery::default()
        })
        .unwrap()[0];
    assert_eq!(now.tags, strings(&["x", "y", "done"]));

    // The same content twice is two files, one content; a 20 MiB one goes in parts.
    let again = s.upload("again.txt", "a.txt", &[]);
    assert_eq!(s.content(again.id), "a.txt");
    let big: String = (0..20 << 20)
        .map(|i: u32| char::from(b'a' + u8::try_from(i % 26).unwrap()))
        .collect();
    let large = s.upload("large.bin", &big, &["big"]);
    assert_eq!(large.size_bytes, 20 << 20);
    assert!(
        s.content(large.id) == big,
        "the large file came back changed"
    );
    // A missing source refuses the whole apply.
    let e = s
        .store
        .apply(&Changes {
            files: vec![upload(&s.env.dir.path().join("nope"), "nope", &[])],
            ..Changes::default()
        })
        .unwrap_err();
    assert!(e.is_user_error());
    assert!(e.to_string().ends_with("nope: no such file"), "{e}");
    // Nothing referenced is swept; what a failed apply stored goes once old enough.
    let stray = s.env.file("stray.txt", b"stray content");
    s.store
        .apply(&Changes {
            files: vec![upload(&stray, "stray.txt", &[])],
            file_tags: vec![(999, strings(&["x"]))],
            ..Changes::default()
        })
        .unwrap_err();
    assert_eq!(
        s.store.sweep(std::time::Duration::from_secs(3600)).unwrap(),
        0
    );
    assert_eq!(s.store.sweep(std::time::Duration::ZERO).unwrap(), 1);
    for f in [&a, &bf, &c, &d, &large] {
        let mut out = Vec::new();
        s.store
            .open_file(f.id)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    }
}

fn states_have_versions_and_a_stale_one_conflicts(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let config = StateKey {
        component: "keboola.ex-test".into(),
        config: "123".into(),
        row: None,
    };
    let row = StateKey {
        row: Some("r1".into()),
        ..config.clone()
    };
    let set = |states: Vec<(StateKey, Option<Value>)>, versions: Vec<(StateKey, u64)>| {
        let mut load = s.env.load(T, "id\n1\n");
        load.incremental = true;
        s.store.apply(&Changes {
            tables: vec![load],
            states,
            state_versions: versions,
            ..Changes::default()
        })
    };
    assert_eq!(s.store.read_state(&config).unwrap().version, 0);
    set(
        vec![
            (config.clone(), Some(json!({"a": 1}))),
            (row.clone(), Some(json!({"r": [1, 2]}))),
        ],
        vec![(config.clone(), 0)],
    )
    .unwrap();
    assert_eq!(s.store.state(&config).unwrap(), Some(json!({"a": 1})));
    assert_eq!(s.store.state(&row).unwrap(), Some(json!({"r": [1, 2]})));
    // Two jobs start from version 1; the first commits, the second conflicts.
    set(
        vec![(config.clone(), Some(json!({"a": 2})))],
        vec![(config.clone(), 1)],
    )
    .unwrap();
    let e = set(
        vec![(config.clone(), Some(json!({"a": 3})))],
        vec![(config.clone(), 1)],
    )
    .unwrap_err();
    assert!(e.is_user_error());
    assert_eq!(
        e.to_string(),
        "state keboola.ex-test/123 changed while the job ran (version 1 when it started, 2 \
         now): another run of the same configuration committed first; nothing of this job \
         was applied, run it again"
    );
    assert_eq!(s.store.state(&config).unwrap(), Some(json!({"a": 2})));
    assert_eq!(s.info(T).rows, 2, "the conflicting job's rows landed");
    // Clearing is a write too: the version goes on.
    set(vec![(config.clone(), None)], vec![(config.clone(), 2)]).unwrap();
    let read = s.store.read_state(&config).unwrap();
    assert_eq!((read.value, read.version), (None, 3));
    assert_eq!(s.store.state(&row).unwrap(), Some(json!({"r": [1, 2]})));
    let bad = StateKey {
        row: Some(String::new()),
        ..config
    };
    assert!(s.store.state(&bad).unwrap_err().is_user_error());
}

fn a_job_id_commits_once_and_records_are_listed(b: Backend) {
    let Some(s) = S::new(b) else { return };
    let job = |id: &str, status: JobStatus, started_ms: i64| JobRecord {
        id: id.into(),
        component: "keboola.ex-test".into(),
        config: Some("123".into()),
        status,
        host: "n1".into(),
        started_ms,
        finished_ms: started_ms + 1,
        result: json!({"status": status.as_str(), "n": started_ms}),
    };
    s.store.record_job(&job("j1", JobStatus::Error, 1)).unwrap();
    let file = s.env.file("out.txt", b"out");
    let commit = |id: &str| {
        let mut load = s.env.load(T, "id\n1\n");
        load.incremental = true;
        s.store.apply(&Changes {
            tables: vec![load],
            files: vec![upload(&file, "out.txt", &[])],
            job: Some(job(id, JobStatus::Success, 2)),
            ..Changes::default()
        })
    };
    commit("j1").unwrap();
    let before = s.snapshot();
    match commit("j1") {
        Err(e @ StorageError::AlreadyCommitted { .. }) => {
            assert_eq!(
                e.to_string(),
                "job j1 committed already; nothing was applied again"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.snapshot(),
        before,
        "a second commit of j1 changed storage"
    );
    s.store.record_job(&job("j1", JobStatus::Error, 3)).unwrap();
    assert_eq!(
        s.store.job("j1").unwrap().unwrap().status,
        JobStatus::Success
    );
    let mut done = job("j1", JobStatus::Success, 2);
    done.result = json!({"final": true});
    s.store.record_job(&done).unwrap();
    assert_eq!(s.store.job("j1").unwrap().unwrap(), done);

    s.store
        .record_job(&job("j2", JobStatus::Error, 20))
        .unwrap();
    let mut other = job("j3", JobStatus::Success, 30);
    other.component = "keboola.other".into();
    s.store.record_job(&other).unwrap();
    let ids = |q: JobQuery| -> Vec<String> {
        s.store
            .jobs(&q)
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect()
    };
    assert_eq!(ids(JobQuery::default()), ["j3", "j2", "j1"]);
    assert_eq!(
        ids(JobQuery {
            status: Some(JobStatus::Success),
            ..JobQuery::default()
        }),
        ["j3", "j1"]
    );
    assert_eq!(
        ids(JobQuery {
            component: Some("keboola.ex-test".into()),
            since_ms: Some(10),
            ..JobQuery::default()
        }),
        ["j2"]
    );
    assert_eq!(s.store.job("nope").unwrap(), None);
}

/// `berth` with this store, as the operator runs it.
fn berth(b: &Berth, e: &Env) -> Command {
    let (storage, files) = e.urls();
    let mut c = b.cmd();
    c.env("BERTH_STORAGE", storage).env("BERTH_FILES", files);
    c
}

fn run(b: &Berth, e: &Env, args: &[&str]) -> Run {
    let out = berth(b, e).args(args).output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Times (and the dates printed from them) differ from run to run: blanked.
fn timeless(text: &str) -> String {
    let mut v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            return text
                .lines()
                .map(|l| {
                    let mut l = l.to_owned();
                    if let Some(i) = l.find("20") {
                        if l[i..].len() >= 19 && l.as_bytes().get(i + 4) == Some(&b'-') {
                            l.replace_range(i..i + 19, "<time>");
                        }
                    }
                    l
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
    };
    fn blank(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k.ends_with("_ms") {
                        *x = json!(0);
                    } else {
                        blank(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(blank),
            _ => {}
        }
    }
    blank(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

fn cli_output_is_the_same_on_every_backend(b: Backend) {
    let Some(e) = env(b) else { return };
    let berth_ = Berth::new();
    let csv = e.file(
        "orders.csv",
        b"id,name\n1,\"a \"\"q\"\" b\"\n2,\n3,\"multi\nline\"\n",
    );
    let more = e.file("more.csv", b"id,name\n3,x\n4,y\n3,z\n");
    let report = e.file("report.txt", b"report\n");
    let steps: Vec<Vec<String>> = vec![
        vec![
            "storage",
            "import",
            "in.c-main.orders",
            &csv.display().to_string(),
            "--primary-key",
            "id",
        ],
        vec![
            "storage",
            "import",
            "in.c-main.orders",
            &more.display().to_string(),
            "--incremental",
        ],
        vec!["storage", "export", "in.c-main.orders"],
        vec!["storage", "tables"],
        vec!["storage", "tables", "--json"],
        vec![
            "storage",
            "upload",
            &report.display().to_string(),
            "--tag",
            "monthly",
        ],
        vec!["storage", "files", "--json"],
        vec!["storage", "files", "--tag", "monthly"],
        vec!["storage", "download", "1"],
        vec!["storage", "export", "in.c-main.nope"],
        vec!["storage", "import", "in.c-main.orders", "/nonexistent.csv"],
        vec!["state", "show", "acme.test", "42"],
    ]
    .into_iter()
    .map(|s| s.into_iter().map(String::from).collect())
    .collect();
    let mut got = Vec::new();
    for step in &steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let r = run(&berth_, &e, &args);
        let dir = e.dir.path().display().to_string();
        got.push(format!(
            "$ {}\n[{}]\n{}{}",
            args.join(" ").replace(&dir, "<dir>"),
            r.status,
            timeless(&r.stdout),
            r.stderr
                .lines()
                .filter(|l| l.starts_with("berth:"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let got = got.join("\n");
    if let Ok(path) = std::env::var("BERTH_WRITE_TRANSCRIPT") {
        std::fs::write(path, format!("{got}\n")).unwrap();
    }
    // The same transcript, byte for byte, whichever store answers.
    let expected = include_str!("store_conformance/cli.txt");
    assert_eq!(got, expected.trim_end_matches('\n'), "{got}");
}

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

fn adaptive_inputs_bring_only_what_changed_since_the_last_run(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let bb = Berth::new();
    let events = e.file("events.csv", b"id,what\n1,a\n2,b\n");
    let r = run(
        &bb,
        &e,
        &[
            "storage",
            "import",
            "in.c-main.events",
            events.to_str().unwrap(),
            "--primary-key",
            "id",
        ],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let report = e.file("r.txt", b"R1");
    let r = run(
        &bb,
        &e,
        &[
            "storage",
            "upload",
            report.to_str().unwrap(),
            "--tag",
            "report",
        ],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let img = script_image(
        "adaptive",
        "cat /data/in/tables/events.csv >&2; ls /data/in/files | grep -v manifest >&2; exit 0",
    );
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"input": {
        "tables": [{"source": "in.c-main.events", "destination": "events.csv", "changed_since": "adaptive"}],
        "files": [{"tags": ["report"], "changed_since": "adaptive"}]
    }});
    let path = bb.write_job(&j);
    let go = || run(&bb, &e, &["run", "--json", path.to_str().unwrap()]);
    let r = go();
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("id,what\n1,a\n2,b\n"), "{}", r.stderr);
    assert!(r.stderr.contains("_r.txt"), "{}", r.stderr);
    let r = go();
    assert!(
        r.stderr.contains("id,what\n") && !r.stderr.contains("1,a"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("_r.txt"), "{}", r.stderr);
    let events = e.file("events2.csv", b"id,what\n2,B\n3,c\n");
    run(
        &bb,
        &e,
        &[
            "storage",
            "import",
            "in.c-main.events",
            events.to_str().unwrap(),
            "--incremental",
        ],
    );
    let r = go();
    assert!(r.stderr.contains("id,what\n2,B\n3,c\n"), "{}", r.stderr);
    // What the job reads and writes is in this store, not in the embedded one.
    if b == Backend::Postgres {
        assert!(!bb.home().join("storage/project.sqlite").exists());
    }
    bb.assert_clean(&[]);
}

fn berth_killed_mid_commit_leaves_storage_before_or_after(b: Backend) {
    require_env!();
    // Two tables of 200,000 rows each, committed together: after a kill -9 at any moment,
    // either both are there in full or neither is.
    let img = script_image(
        "kill",
        "seq 1 200000 | awk '{print $1\",row\"$1}' > /tmp/body\n\
         { echo 'id,name'; cat /tmp/body; } > /data/out/tables/a.csv\n\
         cp /data/out/tables/a.csv /data/out/tables/b.csv\n\
         echo content > /data/out/files/f.txt",
    );
    let mut outcomes = BTreeMap::new();
    for delay_ms in [0u64, 150, 600, 2000, 6000] {
        let Some(e) = env(b) else { return };
        let bb = Berth::new();
        let mut j = job(&img.reference, json!({}), json!({}));
        j["configuration"]["storage"] = json!({"output": {"default_bucket": "out.c-k"}});
        let path = bb.write_job(&j);
        let (mut child, lines) =
            spawn_until_committing(berth(&bb, &e).args(["-v", "run", path.to_str().unwrap()]));
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        for _ in lines {}
        let store = e.open();
        let rows = |t: &str| store.table(&id(t)).unwrap().map(|i| i.rows);
        let files = store.files(&FileQuery::default()).unwrap().len();
        let state = match (rows("out.c-k.a"), rows("out.c-k.b"), files) {
            (None, None, 0) => "before",
            (Some(200_000), Some(200_000), 1) => "after",
            other => panic!("storage is in between after kill -9: {other:?}"),
        };
        *outcomes.entry(state).or_insert(0) += 1;
        let r = run(&bb, &e, &["gc"]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        bb.assert_clean(&[]);
    }
    eprintln!("kill -9 outcomes: {outcomes:?}");
    assert!(
        outcomes.contains_key("before"),
        "never killed during the commit: {outcomes:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Many berths at once on one store: serialised tables, adaptive inputs, state conflicts
// and job ids that commit once.

/// A job of configuration `config` whose component runs `script` with `parameters`.
fn config_job(image: &str, config: &str, parameters: Value) -> Value {
    let mut j = job(image, json!({}), parameters);
    j["config_id"] = json!(config);
    j
}

/// Runs every job at once, each in a berth of its own over the same store; returns their
/// results in order.
fn run_together(e: &Env, jobs: &[(Value, Vec<&str>)]) -> Vec<Run> {
    let berths: Vec<Berth> = jobs.iter().map(|_| Berth::new()).collect();
    let children: Vec<_> = jobs
        .iter()
        .zip(&berths)
        .map(|((j, extra), b)| {
            let path = b.write_job(j);
            let mut args = vec!["run", "--json"];
            args.extend(extra.iter().copied());
            args.push(path.to_str().unwrap());
            berth(b, e)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            Run {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect();
    for b in &berths {
        b.assert_clean(&[]);
    }
    runs
}

/// A component that writes rows `n*10 .. n*10+9` (and key `shared`, last writer wins)
/// into `out.c-s.t`, incrementally with a primary key.
const UPSERT: &str = r#"n=$(sed -n 's/.*"n": *\([0-9]*\).*/\1/p' /data/config.json)
{ echo 'id,v'; i=0; while [ $i -lt 10 ]; do echo "$((n * 10 + i)),$n"; i=$((i + 1)); done
  echo "shared,$n"; } > /data/out/tables/t.csv
echo '{"destination": "out.c-s.t", "incremental": true, "primary_key": ["id"]}' > /data/out/tables/t.csv.manifest"#;

fn concurrent_upserts_lose_no_row(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let img = script_image("upsert", UPSERT);
    // Every job finds the table missing and creates it: one does, the others then load.
    let jobs: Vec<(Value, Vec<&str>)> = (1..=6)
        .map(|n| {
            (
                config_job(&img.reference, &format!("c{n}"), json!({"n": n})),
                vec![],
            )
        })
        .collect();
    for r in run_together(&e, &jobs) {
        assert_eq!(r.status, 0, "{}", r.stderr);
    }
    let store = e.open();
    let mut out = Vec::new();
    store
        .export(&id("out.c-s.t"), &ExportQuery::default(), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want: Vec<String> = (1..=6)
        .flat_map(|n| (0..10).map(move |i| (n * 10 + i).to_string()))
        .collect();
    want.push("shared".into());
    want.sort_unstable();
    assert_eq!(ids, want, "{text}");
    assert_eq!(store.table(&id("out.c-s.t")).unwrap().unwrap().rows, 61);
    // Six jobs, six success records.
    let records = store.jobs(&JobQuery::default()).unwrap();
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r.status == JobStatus::Success));
}

fn adaptive_reads_miss_no_row_committed_concurrently(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let seed = e.file("events.csv", b"id\nseed\n");
    let bb = Berth::new();
    let r = run(
        &bb,
        &e,
        &[
            "storage",
            "import",
            "out.c-s.events",
            seed.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let writer = script_image(
        "append",
        r#"n=$(sed -n 's/.*"n": *\([0-9]*\).*/\1/p' /data/config.json)
{ echo id; echo "w$n"; } > /data/out/tables/events.csv
echo '{"destination": "out.c-s.events", "incremental": true}' > /data/out/tables/events.csv.manifest"#,
    );
    let reader = script_image(
        "read",
        "sed 1d /data/in/tables/events.csv | sed 's/^/SEEN /'",
    );
    let mut read = config_job(&reader.reference, "reader", json!({}));
    read["configuration"]["storage"] = json!({"input": {"tables": [
        {"source": "out.c-s.events", "destination": "events.csv", "changed_since": "adaptive"}
    ]}});
    let read_path = bb.write_job(&read);
    // Writers in two waves of four while the reader runs again and again.
    let writers = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let mut results = Vec::new();
            for wave in 0..2 {
                let jobs: Vec<(Value, Vec<&str>)> = (0..4)
                    .map(|k| {
                        let n = wave * 4 + k;
                        (
                            config_job(&writer.reference, &format!("w{n}"), json!({"n": n})),
                            vec![],
                        )
                    })
                    .collect();
                results.extend(run_together(&e, &jobs));
            }
            results
        });
        let mut seen = Vec::new();
        let mut runs = 0;
        while !handle.is_finished() || runs == 0 {
            let r = run(&bb, &e, &["run", read_path.to_str().unwrap()]);
            assert_eq!(r.status, 0, "{}", r.stderr);
            seen.extend(
                r.stdout
                    .lines()
                    .filter_map(|l| l.strip_prefix("SEEN "))
                    .map(str::to_owned),
            );
            runs += 1;
        }
        (handle.join().unwrap(), seen, runs)
    });
    let (results, mut seen, runs) = writers;
    for r in &results {
        assert_eq!(r.status, 0, "{}", r.stderr);
    }
    // One more read after every writer committed: together the reads saw every row.
    let r = run(&bb, &e, &["run", read_path.to_str().unwrap()]);
    seen.extend(
        r.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("SEEN "))
            .map(str::to_owned),
    );
    seen.sort();
    seen.dedup();
    let mut want: Vec<String> = (0..8).map(|n| format!("w{n}")).collect();
    want.push("seed".into());
    want.sort();
    assert_eq!(seen, want, "after {runs} reads during the writes");
}

fn a_state_changed_by_another_run_is_a_conflict(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    // Both runs read the state, then take their time: the second to commit finds it
    // changed.
    let img = script_image(
        "state-race",
        r#"n=$(sed -n 's/.*"count": *\([0-9]*\).*/\1/p' /data/in/state.json)
sleep 3
echo "{\"count\": $(( ${n:-0} + 1 ))}" > /data/out/state.json
printf 'id\n%s\n' "$(cat /proc/sys/kernel/random/uuid)" > /data/out/tables/log.csv
echo '{"destination": "out.c-s.log", "incremental": true}' > /data/out/tables/log.csv.manifest"#,
    );
    let j = config_job(&img.reference, "same", json!({}));
    let runs = run_together(&e, &[(j.clone(), vec![]), (j, vec![])]);
    let mut statuses: Vec<i32> = runs.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        vec![0, 1],
        "{}\n{}",
        runs[0].stdout,
        runs[1].stdout
    );
    let lost = runs.iter().find(|r| r.status == 1).unwrap().json();
    assert_eq!(lost["error_class"], "user");
    let message = lost["message"].as_str().unwrap();
    assert!(
        message.contains(
            "state acme.test/same changed while the job ran (version 0 when it \
                          started, 1 now)"
        ),
        "{message}"
    );
    let store = e.open();
    let key = StateKey {
        component: "acme.test".into(),
        config: "same".into(),
        row: None,
    };
    let state = store.read_state(&key).unwrap();
    assert_eq!(state.version, 1);
    assert_eq!(state.value.unwrap()["component"]["count"], 1);
    // Only the winner's row landed.
    assert_eq!(store.table(&id("out.c-s.log")).unwrap().unwrap().rows, 1);
}

fn a_job_id_commits_once_even_when_two_berths_run_it(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let img = script_image(
        "once",
        &format!("sleep 2\n{UPSERT}\necho out > /data/out/files/f.txt"),
    );
    let j = config_job(&img.reference, "c1", json!({"n": 1}));
    // A node presumed dead commits late: both berths run, one commit applies.
    let runs = run_together(
        &e,
        &[
            (j.clone(), vec!["--job-id", "1234_7"]),
            (j.clone(), vec!["--job-id", "1234_7"]),
        ],
    );
    for r in &runs {
        assert_eq!(r.status, 0, "{}", r.stdout);
        assert_eq!(r.json()["job_id"], "1234_7");
    }
    let late: Vec<&Run> = runs
        .iter()
        .filter(|r| r.json()["already_committed"] == true)
        .collect();
    assert_eq!(late.len(), 1, "{}\n{}", runs[0].stdout, runs[1].stdout);
    assert_eq!(
        late[0].json()["message"],
        "job 1234_7 committed already; nothing was applied again"
    );
    let store = e.open();
    let rows = || store.table(&id("out.c-s.t")).unwrap().unwrap();
    let files = || store.files(&FileQuery::default()).unwrap().len();
    let before = rows();
    assert_eq!((before.rows, files()), (11, 1));
    let record = store.job("1234_7").unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Success);
    assert_eq!(record.result["outputs"]["tables"][0]["rows_loaded"], 11);
    // A requeue of the committed job (SLURM_JOB_ID and the array task): nothing runs.
    let bb = Berth::new();
    let path = bb.write_job(&j);
    let out = berth(&bb, &e)
        .args(["run", "--json", path.to_str().unwrap()])
        .env("SLURM_JOB_ID", "1234")
        .env("SLURM_ARRAY_TASK_ID", "7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["already_committed"], true);
    assert_eq!(result["job_id"], "1234_7");
    assert!(result["image"].is_null(), "the image was pulled: {result}");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .starts_with("job 1234_7 committed already on "),
        "{result}"
    );
    let after = rows();
    assert_eq!(
        (after.rows, after.last_change_ms, files()),
        (11, before.last_change_ms, 1)
    );
    assert_eq!(store.job("1234_7").unwrap().unwrap(), record);
    // A bad job id is refused before anything runs.
    let r = run(&bb, &e, &["run", "--job-id", "a b", path.to_str().unwrap()]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(r.stderr.contains("a job id has"), "{}", r.stderr);
}

fn jobs_are_listed_and_shown(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let bb = Berth::new();
    let img = script_image(
        "jobs",
        r#"[ "$(sed -n 's/.*"fail": *\(true\).*/\1/p' /data/config.json)" = true ] && { echo broken >&2; exit 1; }
printf 'id\n1\n2\n' > /data/out/tables/t.csv
echo '{"destination": "out.c-j.t"}' > /data/out/tables/t.csv.manifest"#,
    );
    let ok = bb.write_job(&config_job(&img.reference, "7", json!({})));
    let r = run(
        &bb,
        &e,
        &["run", "--json", "--job-id", "ok-1", ok.to_str().unwrap()],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let mut failing = config_job(&img.reference, "8", json!({"fail": true}));
    failing["component"]["id"] = json!("acme.other");
    let failing = bb.write_job(&failing);
    let r = run(
        &bb,
        &e,
        &[
            "run",
            "--json",
            "--job-id",
            "bad-2",
            failing.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status, 1, "{}", r.stderr);

    let r = run(&bb, &e, &["jobs"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("JOB ID  STATUS   CLASS        COMPONENT"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].starts_with("bad-2   error    user         acme.other"),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("ok-1    success  -            acme.test "),
        "{}",
        r.stdout
    );
    assert_eq!(lines.len(), 3);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["jobs", "--json"];
        all.extend_from_slice(args);
        let r = run(&bb, &e, &all);
        assert_eq!(r.status, 0, "{}", r.stderr);
        let list: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
        list.iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&["--status", "error"]), ["bad-2"]);
    assert_eq!(ids(&["--component", "acme.test"]), ["ok-1"]);
    assert_eq!(ids(&["--since", "-1 days"]), ["bad-2", "ok-1"]);
    assert!(ids(&["--since", "2999-01-01T00:00:00Z"]).is_empty());

    let r = run(&bb, &e, &["job", "show", "ok-1"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    for line in [
        "job:        ok-1",
        "status:     success",
        "component:  acme.test",
        "config:     7",
        &format!("host:       {}", hostname()),
        &format!("image:      {} ({})", img.reference, img.digest),
        "table:      out.c-j.t: 2 rows loaded, 2 rows now",
    ] {
        assert!(
            r.stdout.lines().any(|l| l == line),
            "{line:?} in\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("timings:    pull "), "{}", r.stdout);
    let r = run(&bb, &e, &["job", "show", "bad-2"]);
    assert!(
        r.stdout.contains("status:     error (user)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("message:    broken"), "{}", r.stdout);
    let r = run(&bb, &e, &["job", "show", "--json", "ok-1"]);
    let record: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(record["status"], "success");
    assert_eq!(record["result"]["outputs"]["tables"][0]["rows_loaded"], 2);
    assert_eq!(record["result"]["image"]["digest"], img.digest.as_str());
    let r = run(&bb, &e, &["job", "show", "nope"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr
            .contains("invalid job nope: no such job is recorded"),
        "{}",
        r.stderr
    );
    let r = run(&bb, &e, &["jobs", "--status", "maybe"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------------------
// Stored configurations and OAuth credentials, end to end: `berth config put`, `berth
// oauth put`, and what the component finds in its config.json.

const SECRET: &str = "correct-horse-battery";

/// Keeps its config.json and environment in `out/files` (for --keep-outputs), and prints
/// its config.json (where berth masks the secrets).
const SHOW_CONFIG: &str = r#"cp /data/config.json /data/out/files/config.json
env | grep '^KBC_CONFIG' | sort > /data/out/files/env.txt
echo "CONFIG $(tr -d '\n' < /data/config.json)""#;

/// Runs `job` keeping its outputs; returns the run and the kept directory.
fn run_kept(bb: &Berth, e: &Env, job: &Value) -> (Run, PathBuf) {
    let kept = e.dir.path().join(format!("kept-{:x}", rand_u64()));
    let path = bb.write_job(job);
    let args = [
        "run",
        "--json",
        "--keep-outputs",
        kept.to_str().unwrap(),
        path.to_str().unwrap(),
    ];
    (run(bb, e, &args), kept)
}

fn kept_config(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("files/config.json")).unwrap()).unwrap()
}

fn kept_env(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("files/env.txt")).unwrap()
}

/// `berth ARGS` with `input` as a file: its status, stdout and stderr.
fn put(bb: &Berth, e: &Env, args: &[&str], input: &Value) -> Run {
    let file = e.file(
        &format!("put-{:x}.json", rand_u64()),
        input.to_string().as_bytes(),
    );
    let mut all = args.to_vec();
    all.push(file.to_str().unwrap());
    run(bb, e, &all)
}

fn a_job_runs_a_stored_configuration_and_the_rows_it_names(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let bb = Berth::new();
    let img = script_image("stored-config", SHOW_CONFIG);
    // A shared store never makes a master key: one is installed first.
    let r = run(&bb, &e, &["encrypt", "--rotate-key"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let config = json!({
        "name": "orders",
        "configuration": {"parameters": {"#password": SECRET, "user": "me"}},
        "rows": [
            {"id": "r1", "name": "first", "configuration": {"parameters": {"row": 1}}},
            {"id": "r2", "is_disabled": true, "configuration": {"parameters": {"row": 2}}},
            {"id": "r3", "configuration": {"parameters": {"row": 3, "user": "three"}}}
        ]
    });
    let r = put(&bb, &e, &["config", "put", "acme.test", "42"], &config);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "stored configuration 42 of component acme.test (version 1, 3 rows, 1 values encrypted)\n"
    );
    // Stored and shown as ciphertexts.
    let r = run(&bb, &e, &["config", "show", "acme.test", "42"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(SECRET), "{}", r.stdout);
    let shown: Value = serde_json::from_str(&r.stdout).unwrap();
    let cipher = shown["configuration"]["parameters"]["#password"]
        .as_str()
        .unwrap();
    assert!(cipher.starts_with("KBC::ProjectSecure::"), "{cipher}");
    assert_eq!(shown["rows"][0]["name"], "first");
    assert_eq!(shown["rows"][1]["is_disabled"], true);
    let r = run(&bb, &e, &["config", "list"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("COMPONENT  ID  VERSION  ROWS  UPDATED"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].starts_with("acme.test  42        1     3  "),
        "{}",
        r.stdout
    );
    assert!(lines[1].ends_with("  orders"), "{}", r.stdout);

    // The job names it: the enabled rows run, each merged over the configuration, the
    // secret decrypted for the component, the version its KBC_CONFIGVERSION.
    let component = json!({"id": "acme.test", "image": img.reference});
    let named = json!({"component": component, "config_id": "42"});
    let (r, kept) = run_kept(&bb, &e, &named);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!r.stderr.contains(SECRET), "{}", r.stderr);
    assert!(
        r.stderr.contains("\"#password\": \"[hidden]\""),
        "{}",
        r.stderr
    );
    for (row, n, user) in [("r1", 1, "me"), ("r3", 3, "three")] {
        let got = kept_config(&kept.join(row));
        assert_eq!(
            got["parameters"],
            json!({"#password": SECRET, "user": user, "row": n}),
            "{row}"
        );
        assert_eq!(
            kept_env(&kept.join(row)),
            format!("KBC_CONFIGID=42\nKBC_CONFIGROWID={row}\nKBC_CONFIGVERSION=1\n")
        );
    }
    assert!(!kept.join("r2").exists(), "a disabled row ran");

    // `row_ids`: only those, a disabled one too; a new put is a new version.
    let r = put(&bb, &e, &["config", "put", "acme.test", "42"], &config);
    assert!(r.stdout.contains("(version 2, 3 rows"), "{}", r.stdout);
    let mut some = named.clone();
    some["row_ids"] = json!(["r2"]);
    let (r, kept) = run_kept(&bb, &e, &some);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(kept_config(&kept)["parameters"]["row"], 2);
    assert_eq!(
        kept_env(&kept),
        "KBC_CONFIGID=42\nKBC_CONFIGROWID=r2\nKBC_CONFIGVERSION=2\n"
    );

    // An inline configuration wins (a one-off run of the configuration's id).
    let mut inline = named.clone();
    inline["configuration"] = json!({"parameters": {"inline": true}});
    let (r, kept) = run_kept(&bb, &e, &inline);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(kept_config(&kept)["parameters"], json!({"inline": true}));
    assert_eq!(kept_env(&kept), "KBC_CONFIGID=42\nKBC_CONFIGVERSION=\n");

    // What is not stored, or not a row of it, is the user's error, before anything runs.
    let mut missing = named.clone();
    missing["config_id"] = json!("43");
    let r = bb_run(&bb, &e, &missing);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert!(
        result["message"].as_str().unwrap().contains(
            "configuration 43 of component acme.test is not stored (store it with `berth \
             config put acme.test 43 FILE`"
        ),
        "{result}"
    );
    let mut unknown = named.clone();
    unknown["row_ids"] = json!(["r1", "nope"]);
    let r = bb_run(&bb, &e, &unknown);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.json()["message"].as_str().unwrap().contains(
            "stored configuration 42 of component acme.test: row_ids[1]: \"nope\" is not a \
             row of the configuration (its rows: r1, r2, r3)"
        ),
        "{}",
        r.stdout
    );

    // A configuration a job could not run is refused at the put, naming the key.
    let r = put(
        &bb,
        &e,
        &["config", "put", "acme.test", "44"],
        &json!({"configuration": {"parameter": {}}}),
    );
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(": configuration.parameter: unknown field `parameter`"),
        "{}",
        r.stderr
    );
    let r = run(&bb, &e, &["config", "rm", "acme.test", "42"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "removed configuration 42 of component acme.test\n"
    );
    let r = run(&bb, &e, &["config", "rm", "acme.test", "42"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "berth: configuration 42 of component acme.test is not stored\n"
    );
    let r = run(&bb, &e, &["config", "show", "acme.test", "42"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    bb.assert_clean(&[]);
}

fn bb_run(bb: &Berth, e: &Env, job: &Value) -> Run {
    let path = bb.write_job(job);
    run(bb, e, &["run", "--json", path.to_str().unwrap()])
}

fn oauth_credentials_reach_config_json_where_the_broker_puts_them(b: Backend) {
    require_env!();
    let Some(e) = env(b) else { return };
    let bb = Berth::new();
    let img = script_image("oauth", SHOW_CONFIG);
    let r = run(&bb, &e, &["encrypt", "--rotate-key"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    // What the original's broker answers with.
    let creds = |app_secret: &str| {
        json!({
            "id": "main",
            "authorizedFor": "ops@example.com",
            "creator": {"id": "7", "description": "ops"},
            "created": "2024-01-02T03:04:05+0000",
            "oauthVersion": "2.0",
            "appKey": "app-key",
            "#appSecret": app_secret,
            "#data": "{\"access_token\":\"tok-123\",\"refresh_token\":\"ref-456\"}"
        })
    };
    let r = put(
        &bb,
        &e,
        &["oauth", "put", "acme.test", "main"],
        &creds(SECRET),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "stored OAuth credentials main of component acme.test (2 values encrypted)\n"
    );
    let mut second = creds("second-app-secret");
    second["id"] = json!("second");
    let r = put(&bb, &e, &["oauth", "put", "acme.test", "second"], &second);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = run(&bb, &e, &["oauth", "show", "acme.test", "main"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let shown: Value = serde_json::from_str(&r.stdout).unwrap();
    for key in ["#appSecret", "#data"] {
        assert!(
            shown[key]
                .as_str()
                .unwrap()
                .starts_with("KBC::ProjectSecure::"),
            "{shown}"
        );
    }
    assert_eq!(shown["appKey"], "app-key");
    let r = run(&bb, &e, &["oauth", "list"]);
    assert_eq!(
        r.stdout.lines().nth(1).map(|l| (
            l.starts_with("acme.test  main  "),
            l.ends_with("  ops@example.com")
        )),
        Some((true, true)),
        "{}",
        r.stdout
    );

    // An id alone: the stored credentials, as stored, decrypted, beside id and version.
    let component = json!({"id": "acme.test", "image": img.reference});
    let with = |authorization: Value| {
        json!({"component": component, "config_id": "7",
               "configuration": {"authorization": authorization, "parameters": {}}})
    };
    let (r, kept) = run_kept(
        &bb,
        &e,
        &with(json!({"oauth_api": {"id": "main", "version": 3}})),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let got = kept_config(&kept);
    assert_eq!(
        got["authorization"],
        json!({"oauth_api": {"id": "main", "version": 3, "credentials": creds(SECRET)}})
    );
    assert!(!r.stderr.contains(SECRET), "{}", r.stderr);
    assert!(!r.stderr.contains("ref-456"), "{}", r.stderr);
    assert!(
        r.stderr.contains("\"#appSecret\": \"[hidden]\""),
        "{}",
        r.stderr
    );

    // Inline credentials pass through untouched.
    let inline = json!({"oauth_api": {"id": "main", "credentials": {"appKey": "inline"}}});
    let (r, kept) = run_kept(&bb, &e, &with(inline.clone()));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(kept_config(&kept)["authorization"], inline);

    // An id nothing is stored under is the user's error, never a pass-through.
    let r = bb_run(&bb, &e, &with(json!({"oauth_api": {"id": "gone"}})));
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        "configuration.authorization.oauth_api.id: OAuth credentials gone of component \
         acme.test are not stored (store them with `berth oauth put acme.test gone FILE`, or \
         give them in configuration.authorization.oauth_api.credentials)"
    );
    assert!(result["image"].is_null(), "the image was pulled: {result}");

    // A stored configuration whose row names other credentials: each row gets its own.
    let config = json!({
        "configuration": {"authorization": {"oauth_api": {"id": "main"}}},
        "rows": [{"id": "a"}, {"id": "b", "configuration": {"authorization": {"oauth_api": {"id": "second"}}}}]
    });
    let r = put(&bb, &e, &["config", "put", "acme.test", "8"], &config);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let (r, kept) = run_kept(&bb, &e, &json!({"component": component, "config_id": "8"}));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        kept_config(&kept.join("a"))["authorization"]["oauth_api"]["credentials"],
        creds(SECRET)
    );
    assert_eq!(
        kept_config(&kept.join("b"))["authorization"]["oauth_api"],
        json!({"id": "second", "credentials": second})
    );

    let r = run(&bb, &e, &["oauth", "rm", "acme.test", "second"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = run(&bb, &e, &["oauth", "show", "acme.test", "second"]);
    assert_eq!(r.status, 1);
    assert_eq!(
        r.stderr,
        "berth: OAuth credentials second of component acme.test are not stored\n"
    );
    // Credentials serve every configuration: none may be bound to one.
    let r = put(
        &bb,
        &e,
        &["oauth", "put", "--scope", "config", "acme.test", "x"],
        &creds("s"),
    );
    assert_eq!(r.status, 2, "{}", r.stderr);
    bb.assert_clean(&[]);
}
