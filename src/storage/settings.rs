//! Which project store berth uses: the tables, states and records (`--storage URL`, SQLite
//! by default, or PostgreSQL) and the file contents (`--files URL`, a local directory by
//! default, or an S3 bucket), given on the command line, in the environment, or in
//! `/etc/berth/berth.toml` and `<home>/berth.toml` (later wins; flags and variables win
//! over files). [`open`] is the one place that turns them into a store.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::blob::{BlobStore, LocalBlobs, S3Blobs};
use super::postgres::redact;
use super::{PgStorage, SqliteStorage, Storage, StorageError};

/// The system-wide configuration file; `<home>/berth.toml` is read after it.
pub const SYSTEM_CONFIG: &str = "/etc/berth/berth.toml";

/// Where the tables, states and job records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// The embedded store in this directory (`project.sqlite` in it).
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://user:password@host:port/db`.
    Postgres(String),
}

/// Where file contents are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesUrl {
    Local(PathBuf),
    /// `s3://bucket/prefix`; endpoint and credentials from the `AWS_*` variables.
    S3 {
        bucket: String,
        prefix: String,
    },
}

/// The project store berth opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub storage: StorageUrl,
    pub files: FilesUrl,
}

/// The store settings a configuration file may hold. Unknown keys are left to whoever
/// reads them (the file is berth's, other settings may live there).
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    storage: Option<String>,
    files: Option<String>,
}

impl StoreSettings {
    /// The embedded default: SQLite and files under `<home>/storage`.
    pub fn embedded(home: &Path) -> StoreSettings {
        let root = home.join("storage");
        StoreSettings {
            files: FilesUrl::Local(root.join("files")),
            storage: StorageUrl::Sqlite(root),
        }
    }

    /// The settings from `storage` and `files` URLs as given (`None`: not given), over
    /// those of the configuration files `configs` (later wins), over the defaults.
    pub fn resolve(
        storage: Option<&str>,
        files: Option<&str>,
        configs: &[PathBuf],
        home: &Path,
    ) -> Result<StoreSettings, StorageError> {
        let mut from_files = ConfigFile::default();
        for path in configs {
            let Some(file) = read_config::<ConfigFile>(path)? else {
                continue;
            };
            from_files.storage = file.storage.or(from_files.storage);
            from_files.files = file.files.or(from_files.files);
        }
        let storage = storage.map(str::to_owned).or(from_files.storage);
        let files = files.map(str::to_owned).or(from_files.files);
        let defaults = StoreSettings::embedded(home);
        let storage = match storage.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => parse_storage(url, home)?,
            None => defaults.storage,
        };
        let files = match files.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => parse_files(url)?,
            None => defaults.files,
        };
        Ok(StoreSettings { storage, files })
    }

    /// Whether the store is shared by several hosts (PostgreSQL): then every host needs the
    /// same master key, and none may make its own.
    pub fn is_shared(&self) -> bool {
        matches!(self.storage, StorageUrl::Postgres(_))
    }
}

/// The keys of type `T` in the configuration file at `path` (`None`: there is no such
/// file): each setting kept there is read by whoever owns it, from the same files.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StorageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StorageError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| StorageError::Settings(format!("{}: {e}", path.display())))
}

fn parse_storage(url: &str, home: &Path) -> Result<StorageUrl, StorageError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let dir = rest.strip_prefix("//").unwrap_or(rest);
        return Ok(StorageUrl::Sqlite(if dir.is_empty() {
            home.join("storage")
        } else {
            absolute(Path::new(dir))
        }));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url.parse::<postgres::Config>()
            .map_err(|e| StorageError::Settings(format!("--storage {}: {e}", redact(url))))?;
        return Ok(StorageUrl::Postgres(url.to_owned()));
    }
    Err(StorageError::Settings(format!(
        "--storage {:?}: expected sqlite: (the default), sqlite:DIR or \
         postgres://user:password@host:port/database",
        redact(url)
    )))
}

fn parse_files(url: &str) -> Result<FilesUrl, StorageError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Settings(format!(
                "--files {url:?}: no bucket (s3://bucket/prefix)"
            )));
        }
        return Ok(FilesUrl::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    if dir.starts_with('/') {
        return Ok(FilesUrl::Local(PathBuf::from(dir)));
    }
    Err(StorageError::Settings(format!(
        "--files {url:?}: expected an absolute directory, file:///DIR or s3://bucket/prefix"
    )))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Opens the store `settings` name: the one place that picks a backend.
pub fn open(settings: &StoreSettings) -> Result<Box<dyn Storage>, StorageError> {
    let store: Box<dyn Storage> = match (&settings.storage, &settings.files) {
        // The embedded default, as ever: contents beside the database, swept at open.
        (StorageUrl::Sqlite(root), FilesUrl::Local(dir)) if *dir == root.join("files") => {
            Box::new(SqliteStorage::open(root)?)
        }
        (StorageUrl::Sqlite(root), files) => {
            Box::new(SqliteStorage::open_with(root, open_blobs(files)?)?)
        }
        (StorageUrl::Postgres(url), files) => {
            if let FilesUrl::Local(dir) = files {
                tracing::warn!(
                    "the store is shared (PostgreSQL) but file contents are local ({}): other \
                     hosts cannot read them; use --files s3://bucket/prefix",
                    dir.display()
                );
            }
            Box::new(PgStorage::open(url, open_blobs(files)?)?)
        }
    };
    tracing::debug!("project store: {}", store.describe());
    Ok(store)
}

fn open_blobs(files: &FilesUrl) -> Result<Box<dyn BlobStore>, StorageError> {
    Ok(match files {
        FilesUrl::Local(dir) => Box::new(LocalBlobs::open(dir)?),
        FilesUrl::S3 { bucket, prefix } => Box::new(S3Blobs::open(bucket, prefix)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_default_to_the_embedded_store() {
        let home = Path::new("/var/lib/berth");
        let s = StoreSettings::resolve(None, None, &[], home).unwrap();
        assert_eq!(s, StoreSettings::embedded(home));
        assert!(!s.is_shared());
        let s = StoreSettings::resolve(
            Some("postgres://berth:pw@10.0.0.1:5432/project"),
            Some("s3://bucket/some/prefix/"),
            &[],
            home,
        )
        .unwrap();
        assert!(s.is_shared());
        assert_eq!(
            s.files,
            FilesUrl::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        let s = StoreSettings::resolve(Some("sqlite:/srv/store"), Some("/srv/files"), &[], home)
            .unwrap();
        assert_eq!(s.storage, StorageUrl::Sqlite("/srv/store".into()));
        assert_eq!(s.files, FilesUrl::Local("/srv/files".into()));
        for (storage, files) in [
            (Some("mysql://x"), None),
            (None, Some("relative/dir")),
            (None, Some("s3:///prefix")),
        ] {
            let e = StoreSettings::resolve(storage, files, &[], home).unwrap_err();
            assert!(e.is_user_error(), "{e}");
        }
        let e = StoreSettings::resolve(Some("mysql://u:secret@h/db"), None, &[], home).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn config_files_are_layered_and_flags_win() {
        let d = tempfile::tempdir().unwrap();
        let system = d.path().join("system.toml");
        let user = d.path().join("user.toml");
        std::fs::write(
            &system,
            "storage = \"postgres://a@h/db\"\nfiles = \"s3://sys\"\nother = 1\n",
        )
        .unwrap();
        std::fs::write(&user, "files = \"s3://mine/p\"\n").unwrap();
        let configs = [system, user, d.path().join("missing.toml")];
        let s = StoreSettings::resolve(None, None, &configs, d.path()).unwrap();
        assert_eq!(s.storage, StorageUrl::Postgres("postgres://a@h/db".into()));
        assert_eq!(
            s.files,
            FilesUrl::S3 {
                bucket: "mine".into(),
                prefix: "p".into()
            }
        );
        let s = StoreSettings::resolve(Some("sqlite:"), None, &configs, d.path()).unwrap();
        assert_eq!(s.storage, StorageUrl::Sqlite(d.path().join("storage")));
        std::fs::write(&configs[1], "files = [").unwrap();
        let e = StoreSettings::resolve(None, None, &configs, d.path()).unwrap_err();
        assert!(e.to_string().contains("user.toml"), "{e}");
    }
}
