//! Debug mode (contract §13): the data folder archived before each image runs
//! (`stage_<n>.zip`) and once more at the end (`stage_output.zip`), stored right away as
//! storage files tagged `debug`, the component id, `jobId:<job>` (and `rowId:<row>`), so the
//! stages before a failure are kept too. A debug job maps no outputs and saves no state.
//!
//! What goes into an archive is the container's: the data folder is walked from directory
//! handles ([`confined`]) without following any link, and what is not a regular file or a
//! directory (a symlink to the host's `/etc/shadow`, a FIFO, a device) is left out, as is
//! what exceeds the archive's budget ([`MAX_ARCHIVED_BYTES`], [`MAX_ARCHIVED_ENTRIES`]).
//! What was left out is named in the log and in the archive's comment (`unzip -z`).
//!
//! Secrets never reach an archive: every file's contents and every name pass through the
//! job's masker, and in `config.json` and the state files every `#` value is replaced by
//! `[hidden]` whatever its length (the masker leaves secrets of fewer than three characters).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use super::lazy_storage::LazyStorage;
use crate::confined::{self, ConfinedError, Kind};
use crate::mapping::state::MAX_STATE_BYTES;
use crate::secrets::{HIDDEN, Masker};
use crate::storage::{Changes, FileUpload, StorageError};

/// The most file content one archive takes (before compression); files past it are left
/// out.
pub const MAX_ARCHIVED_BYTES: u64 = 1 << 30;
/// What is read of a file at once: files stream through the masker into the archive.
const CHUNK: usize = 64 << 10;
/// The most files and directories one archive takes.
pub const MAX_ARCHIVED_ENTRIES: usize = 100_000;
/// Directories nested deeper than this are left out.
const MAX_DEPTH: usize = 64;
/// The files whose `#` values are hidden as JSON, as the original redacts them.
const JSON_FILES: [&str; 3] = ["config.json", "in/state.json", "out/state.json"];

#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("cannot read the data folder for {archive}")]
    Read {
        archive: String,
        #[source]
        source: ConfinedError,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the zip archive {}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("cannot store {archive}")]
    Store {
        archive: String,
        #[source]
        source: Box<StorageError>,
    },
}

/// Whose archives these are and where they are written before storage takes them.
#[derive(Debug, Clone)]
pub struct DebugTarget<'a> {
    pub component_id: &'a str,
    pub job_id: &'a str,
    pub row_id: Option<&'a str>,
    /// berth's own directory (in the job directory) for the archives being written.
    pub scratch: PathBuf,
}

/// Archives the data folder `data` as it is before image `n` of the row runs
/// (`stage_<n>.zip`: 0 is the first image of the chain) and stores it; returns its file id.
pub(super) fn archive_stage(
    target: &DebugTarget<'_>,
    storage: &mut LazyStorage,
    masker: &Masker,
    n: usize,
    data: &Path,
) -> Result<u64, DebugError> {
    archive(target, storage, masker, &format!("stage_{n}.zip"), data)
}

/// Archives the data folder `data` after the last image ran (`stage_output.zip`) and stores
/// it; returns its file id. The `#` values of the state the component wrote are secrets
/// too, and masked everywhere in it.
pub(super) fn archive_output(
    target: &DebugTarget<'_>,
    storage: &mut LazyStorage,
    masker: &Masker,
    data: &Path,
) -> Result<u64, DebugError> {
    let mut masker = masker.clone();
    // A state that cannot be read is archived as it is, masked as text.
    if let Ok(Some(state)) = crate::mapping::state::read_out_state(data) {
        masker.extend(
            crate::secrets::plain_secrets(&state)
                .iter()
                .map(String::as_str),
        );
    }
    archive(target, storage, &masker, "stage_output.zip", data)
}

fn archive(
    target: &DebugTarget<'_>,
    storage: &mut LazyStorage,
    masker: &Masker,
    name: &str,
    data: &Path,
) -> Result<u64, DebugError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DebugError::Write { path, source }
    };
    fs::create_dir_all(&target.scratch).map_err(write_err(&target.scratch))?;
    // Unique: every row of a job has its own stage_0.zip.
    let path = target
        .scratch
        .join(format!("{}-{name}", crate::util::random_hex(4)));
    let file = File::create_new(&path).map_err(write_err(&path))?;
    let stored = write_zip(file, &path, masker, data, name, MAX_ARCHIVED_BYTES).and_then(|()| {
        let id = store(target, storage, &path, name)?;
        tracing::info!("debug: stored {name} as file {id}");
        Ok(id)
    });
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
    stored
}

fn write_zip(
    file: File,
    path: &Path,
    masker: &Masker,
    data: &Path,
    name: &str,
    budget: u64,
) -> Result<(), DebugError> {
    let read_err = |source| DebugError::Read {
        archive: name.to_owned(),
        source,
    };
    let root = confined::Dir::open(data).map_err(read_err)?;
    let mut zipper = Zipper {
        zip: ZipWriter::new(file),
        path,
        masker,
        budget,
        entries: 0,
        left_out: Vec::new(),
    };
    zipper.add_dir(&root, "", 0).map_err(|e| match e {
        Failure::Read(source) => read_err(source),
        Failure::Write(e) => e,
    })?;
    if !zipper.left_out.is_empty() {
        tracing::warn!("debug: {name} leaves out {}", zipper.left_out.join(", "));
        let comment = format!("left out by berth:\n{}\n", zipper.left_out.join("\n"));
        zipper.zip.set_comment(comment);
    }
    let zip_err = |source| DebugError::Zip {
        path: path.to_owned(),
        source,
    };
    let file = zipper.zip.finish().map_err(zip_err)?;
    file.sync_all().map_err(|source| DebugError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Stores the archive at `path` as file `name`, with the debug tags.
fn store(
    target: &DebugTarget<'_>,
    storage: &mut LazyStorage,
    path: &Path,
    name: &str,
) -> Result<u64, DebugError> {
    let mut tags = vec![
        "debug".to_owned(),
        target.component_id.to_owned(),
        format!("jobId:{}", target.job_id),
    ];
    if let Some(row) = target.row_id {
        tags.push(format!("rowId:{row}"));
    }
    let changes = Changes {
        files: vec![FileUpload {
            path: path.to_owned(),
            name: name.to_owned(),
            tags,
            is_permanent: false,
            is_public: false,
            is_encrypted: true,
        }],
        ..Default::default()
    };
    let store_err = |source| DebugError::Store {
        archive: name.to_owned(),
        source: Box::new(source),
    };
    let report = storage
        .get()
        .and_then(|s| s.apply(&changes))
        .map_err(store_err)?;
    report.files.first().map(|f| f.id).ok_or_else(|| {
        store_err(StorageError::Invalid {
            what: name.to_owned(),
            reason: "storage stored no file".to_owned(),
        })
    })
}

/// Why a walk stopped: the data folder could not be read, or the archive written.
enum Failure {
    Read(ConfinedError),
    Write(DebugError),
}

impl From<ConfinedError> for Failure {
    fn from(e: ConfinedError) -> Failure {
        Failure::Read(e)
    }
}

/// An archive being written from a data folder.
struct Zipper<'a> {
    zip: ZipWriter<File>,
    path: &'a Path,
    masker: &'a Masker,
    /// Bytes of content the archive may still take.
    budget: u64,
    entries: usize,
    /// What was left out, and why.
    left_out: Vec<String>,
}

impl Zipper<'_> {
    /// Adds what is in `dir` (shown in the archive as `prefix`), directories first-class.
    fn add_dir(&mut self, dir: &confined::Dir, prefix: &str, depth: usize) -> Result<(), Failure> {
        for entry in dir.entries()? {
            let shown = self.masker.mask(&entry.name.to_string_lossy()).into_owned();
            let rel = format!("{prefix}{shown}");
            if self.entries >= MAX_ARCHIVED_ENTRIES {
                self.leave_out(&rel, &format!("past {MAX_ARCHIVED_ENTRIES} entries"));
                continue;
            }
            match entry.kind {
                Kind::Dir if depth >= MAX_DEPTH => {
                    self.leave_out(&rel, &format!("nested deeper than {MAX_DEPTH}"));
                }
                Kind::Dir => {
                    let sub = match dir.open_dir(&entry.name) {
                        Ok(sub) => sub,
                        Err(e) if e.is_user_error() || e.is_not_found() => {
                            self.leave_out(&rel, &e.to_string());
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    self.entries += 1;
                    // A directory's own mode and time are not worth a stat by path.
                    let options = SimpleFileOptions::default().unix_permissions(0o755);
                    let added = self.zip.add_directory(format!("{rel}/"), options);
                    added.map_err(|e| self.zip_err(e))?;
                    self.add_dir(&sub, &format!("{rel}/"), depth + 1)?;
                }
                Kind::File => self.add_file(dir, &entry.name, &rel)?,
                kind => self.leave_out(&rel, &format!("{kind}")),
            }
        }
        Ok(())
    }

    fn add_file(
        &mut self,
        dir: &confined::Dir,
        name: &std::ffi::OsStr,
        rel: &str,
    ) -> Result<(), Failure> {
        let file = match dir.open_file(name) {
            Ok(f) => f,
            // Changed since it was listed: what it is now is not archived.
            Err(e) if e.is_user_error() || e.is_not_found() => {
                self.leave_out(rel, &e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let read_err = |source| {
            Failure::Read(ConfinedError::Io {
                path: dir.path().join(name),
                source,
            })
        };
        let meta = file.metadata().map_err(read_err)?;
        if meta.len() > self.budget {
            let why = "past what the archive takes of file content".to_owned();
            self.leave_out(rel, &why);
            return Ok(());
        }
        self.entries += 1;
        let started = self.zip.start_file(rel, options_for(&meta));
        started.map_err(|e| self.zip_err(e))?;
        // The file as it was looked at: its container is gone, and one that grew since is
        // cut there, within the budget.
        let file = file.take(meta.len());
        let read = match JSON_FILES.contains(&rel) && meta.len() <= MAX_STATE_BYTES {
            true => self.add_json(file),
            false => self.add_masked(file),
        };
        self.budget = self.budget.saturating_sub(read.map_err(read_err)??);
        Ok(())
    }

    /// Writes a JSON file of [`JSON_FILES`] (read whole: it is small) into the entry
    /// begun, every `#` value hidden, and masked; returns the bytes read.
    fn add_json(&mut self, mut file: impl Read) -> io::Result<Result<u64, Failure>> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let hidden = hide_json(&bytes);
        let content = self.masker.mask_bytes(hidden.as_deref().unwrap_or(&bytes));
        Ok(self.write(&content).map(|()| bytes.len() as u64))
    }

    /// Copies `file` into the entry begun, masked as it streams: memory stays within a
    /// chunk and the longest secret. Returns the bytes read.
    fn add_masked(&mut self, mut file: impl Read) -> io::Result<Result<u64, Failure>> {
        let masker = self.masker;
        let mut stream = masker.stream();
        let mut buf = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK);
        let mut read = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            read += n as u64;
            stream.push(&buf[..n], &mut out);
            if let Err(e) = self.write(&out) {
                return Ok(Err(e));
            }
            out.clear();
        }
        stream.finish(&mut out);
        Ok(self.write(&out).map(|()| read))
    }

    /// Appends `bytes` to the entry begun.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.zip.write_all(bytes).map_err(|source| {
            Failure::Write(DebugError::Write {
                path: self.path.to_owned(),
                source,
            })
        })
    }

    fn leave_out(&mut self, rel: &str, why: &str) {
        self.left_out.push(format!("{rel} ({why})"));
    }

    fn zip_err(&self, source: zip::result::ZipError) -> Failure {
        Failure::Write(DebugError::Zip {
            path: self.path.to_owned(),
            source,
        })
    }
}

/// Deflated, with the entry's permission bits and modification time.
fn options_for(meta: &fs::Metadata) -> SimpleFileOptions {
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(meta.permissions().mode() & 0o7777);
    match zip_time(meta.mtime()) {
        Some(t) => options.last_modified_time(t),
        None => options,
    }
}

/// A unix time as a zip timestamp (UTC; zip has none before 1980).
fn zip_time(secs: i64) -> Option<zip::DateTime> {
    let t = jiff::Timestamp::from_second(secs).ok()?;
    let dt = t.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let byte = |v: i8| u8::try_from(v).ok();
    zip::DateTime::from_date_and_time(
        u16::try_from(dt.year()).ok()?,
        byte(dt.month())?,
        byte(dt.day())?,
        byte(dt.hour())?,
        byte(dt.minute())?,
        byte(dt.second())?,
    )
    .ok()
}

/// `bytes` as JSON with every `#` value `[hidden]`, or `None` when it is not JSON or has
/// no `#` value.
fn hide_json(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    if !hide_hash_values(&mut value) {
        return None;
    }
    serde_json::to_vec_pretty(&value).ok()
}

/// Replaces the string value of every `#` key in `value`; says whether there was one.
fn hide_hash_values(value: &mut Value) -> bool {
    let mut any = false;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if k.starts_with('#') => {
                        HIDDEN.clone_into(s);
                        any = true;
                    }
                    _ => any |= hide_hash_values(v),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                any |= hide_hash_values(v);
            }
        }
        _ => {}
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        let mut m = Masker::default();
        m.add("s3cret-value");
        m
    }

    /// The zip `write_zip` makes of `data`, with `budget`: its entries and comment.
    fn zip_of(data: &Path, masker: &Masker, budget: u64) -> (zip::ZipArchive<File>, String) {
        let scratch = tempfile::tempdir().unwrap();
        let zip_path = scratch.path().join("a.zip");
        let file = File::create_new(&zip_path).unwrap();
        write_zip(file, &zip_path, masker, data, "a.zip", budget).unwrap();
        let zip = zip::ZipArchive::new(File::open(&zip_path).unwrap()).unwrap();
        let comment = String::from_utf8_lossy(zip.comment()).into_owned();
        (zip, comment)
    }

    fn entry(zip: &mut zip::ZipArchive<File>, name: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_multi_line_secret_across_read_chunks_is_hidden_in_text_and_binary_files() {
        let key = "-----BEGIN KEY-----\nAAAAbbbbCCCCddddEEEE\nFFFFggggHHHHiiii\n-----END KEY-----";
        let mut m = masker();
        m.add(key);
        let data = tempfile::tempdir().unwrap();
        let p = data.path();
        // The key starts 10 bytes before the end of the first chunk read.
        let mut text = "x".repeat(CHUNK - 10).into_bytes();
        text.extend_from_slice(format!("{key}\nand s3cret-value\n").as_bytes());
        fs::write(p.join("big.txt"), &text).unwrap();
        let mut binary = b"\xff\x00".to_vec();
        binary.extend_from_slice(key.as_bytes());
        binary.extend_from_slice(b"\xfe\xe2\x82");
        fs::write(p.join("blob.bin"), &binary).unwrap();
        let (mut zip, _) = zip_of(p, &m, 1 << 20);
        let mut want = "x".repeat(CHUNK - 10).into_bytes();
        want.extend_from_slice(b"[hidden]\nand [hidden]\n");
        assert_eq!(entry(&mut zip, "big.txt"), want);
        assert_eq!(entry(&mut zip, "blob.bin"), b"\xff\x00[hidden]\xfe\xe2\x82");
    }

    #[test]
    fn every_hash_value_of_a_json_file_is_hidden_however_short() {
        let hidden = hide_json(br##"{"a": {"#pw": "x"}, "l": [{"#t": "yz"}], "#n": 5}"##);
        let value: Value = serde_json::from_slice(&hidden.unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": {"#pw": "[hidden]"}, "l": [{"#t": "[hidden]"}], "#n": 5})
        );
        assert_eq!(hide_json(br#"{"a": 1}"#), None);
        assert_eq!(hide_json(b"not json"), None);
    }

    #[test]
    fn what_is_not_a_plain_file_or_past_the_budget_is_left_out_and_named() {
        let data = tempfile::tempdir().unwrap();
        let p = data.path();
        fs::create_dir_all(p.join("out/files")).unwrap();
        fs::write(p.join("config.json"), r##"{"#pw": "s3cret-value"}"##).unwrap();
        fs::write(p.join("out/files/big.bin"), vec![b'x'; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("out/files/link")).unwrap();
        let (mut zip, comment) = zip_of(p, &masker(), 50);
        assert!(
            comment.contains("out/files/big.bin (past what"),
            "{comment}"
        );
        assert!(comment.contains("out/files/link (a symlink)"), "{comment}");
        let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("big.bin") || n.contains("link"))
        );
        let config = String::from_utf8(entry(&mut zip, "config.json")).unwrap();
        assert!(config.contains("\"#pw\": \"[hidden]\""), "{config}");
    }

    #[test]
    fn zip_times_are_utc_and_none_before_1980() {
        let t = zip_time(1_700_000_000).unwrap();
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute()),
            (2023, 11, 14, 22, 13)
        );
        assert!(zip_time(0).is_none());
    }
}
