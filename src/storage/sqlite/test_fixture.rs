//! What the tests of every concern share: a store in a temporary directory, and short
//! ways to load a table, export it, upload a file and take a snapshot of everything
//! visible, to show that a failed apply changed nothing.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::SqliteStorage;
use crate::storage::{
    ApplyReport, Changes, CsvSource, ExportQuery, FileInfo, FileQuery, FileUpload, LoadReport,
    Provenance, Storage, StorageError, TableId, TableInfo, TableLoad,
};

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) store: SqliteStorage,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStorage::open(&dir.path().join("storage")).unwrap();
        Fixture { dir, store }
    }

    /// Writes a source file into the fixture's directory.
    pub(super) fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, content).unwrap();
        path
    }

    pub(super) fn gz(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(content).unwrap();
        enc.finish().unwrap();
        path
    }

    pub(super) fn load(&self, table: &str, csv: &str) -> TableLoad {
        let path = self.file(
            &format!("{table}.{}.csv", crate::util::random_hex(4)),
            csv.as_bytes(),
        );
        TableLoad::new(id(table), CsvSource::file(&path), prov())
    }

    pub(super) fn apply(&self, loads: Vec<TableLoad>) -> Result<ApplyReport, StorageError> {
        self.store.apply(&Changes {
            tables: loads,
            ..Changes::default()
        })
    }

    pub(super) fn full(&self, table: &str, csv: &str) -> LoadReport {
        self.apply(vec![self.load(table, csv)])
            .unwrap()
            .tables
            .remove(0)
    }

    pub(super) fn incremental(&self, table: &str, csv: &str) -> LoadReport {
        let mut load = self.load(table, csv);
        load.incremental = true;
        self.apply(vec![load]).unwrap().tables.remove(0)
    }

    pub(super) fn export(&self, table: &str, query: &ExportQuery) -> String {
        let mut out = Vec::new();
        self.store.export(&id(table), query, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    pub(super) fn csv(&self, table: &str) -> String {
        self.export(table, &ExportQuery::default())
    }

    pub(super) fn info(&self, table: &str) -> TableInfo {
        self.store.table(&id(table)).unwrap().unwrap()
    }

    /// Everything visible in the store, to compare before and after a failed apply.
    /// (File contents a failed apply stored are not visible: no file names them.)
    pub(super) fn snapshot(&self) -> (Vec<TableInfo>, Vec<String>, Vec<FileInfo>) {
        let tables = self.store.tables().unwrap();
        let data = tables.iter().map(|t| self.csv(&t.id.to_string())).collect();
        let files = self.store.files(&FileQuery::default()).unwrap();
        (tables, data, files)
    }

    /// Where the store keeps file contents.
    pub(super) fn blobs_dir(&self) -> PathBuf {
        self.dir.path().join("storage/files")
    }

    pub(super) fn upload(&self, name: &str, tags: &[&str]) -> FileInfo {
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

pub(super) fn id(s: &str) -> TableId {
    s.parse().unwrap()
}

pub(super) fn prov() -> Provenance {
    Provenance {
        component: "keboola.ex-test".into(),
        config: Some("123".into()),
        row: None,
    }
}

pub(super) fn upload(path: &Path, name: &str, tags: &[&str]) -> FileUpload {
    FileUpload {
        path: path.to_owned(),
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        is_permanent: false,
        is_public: false,
        is_encrypted: true,
    }
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(super) const T: &str = "in.c-main.t";
