//! The content store: blobs by digest, and a record per image reference.
//!
//! Where each thing lies under the cache is [`crate::layout::Cache`]'s to say: blobs under
//! `blobs/sha256/`, records under `refs/`, locks under `locks/`, work in progress in `tmp/`.
//!
//! Everything lands by `rename` from `tmp/`, so a crash or a concurrent berth never leaves
//! a half-written blob under its final name; a berth fetching a blob holds its lock
//! (`locks/blob-<hex>.lock`), so concurrent berths fetch each blob once.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::layout::Cache;

use crate::image::spec::ImageError;
use crate::image::spec::digest::{Digest, Hasher};
use crate::image::spec::manifest::Descriptor;
use crate::image::spec::record::ImageRecord;

/// How long a berth waits for another's lock by default: as long as a pull may take by
/// default (`--pull-timeout`), since the holder's fetch is bounded by it.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub struct Store {
    cache: Cache,
    /// How long [`Store::lock`] waits for another berth.
    lock_wait: Duration,
}

impl Store {
    /// Opens the store, creating it if needed. Its root is made private (0700) also when it
    /// exists with looser bits: images carry setuid-root binaries and whatever their
    /// layers hold, and other local users must not run or read them. What is below keeps
    /// its modes: the root alone closes the tree.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        let cache = Cache::new(root);
        cache
            .ensure()
            .map_err(|(path, source)| ImageError::Store { path, source })?;
        Ok(Store {
            cache,
            lock_wait: DEFAULT_LOCK_WAIT,
        })
    }

    /// Waits at most `wait` for another berth's lock (see [`Store::lock`]).
    #[must_use]
    pub fn with_lock_wait(mut self, wait: Duration) -> Store {
        self.lock_wait = wait;
        self
    }

    pub fn root(&self) -> &Path {
        self.cache.root()
    }

    /// The cache's layout (see [`crate::layout`]).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.cache.blob(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A fresh, unique path under `tmp/` for work that lands by rename.
    pub fn temp_path(&self, label: &str) -> PathBuf {
        self.cache.temp(label)
    }

    /// Reads a small blob (manifest or config), checking its digest: a corrupted file is
    /// deleted and reported missing, so the caller fetches it again.
    pub fn read_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, ImageError> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ImageError::Store { path, source }),
        };
        let mut bytes = Vec::new();
        file.take(crate::image::spec::manifest::MAX_METADATA_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Store {
                path: path.clone(),
                source,
            })?;
        if Digest::of(&bytes) != *digest {
            tracing::warn!(%digest, "stored blob is corrupt; it will be fetched again");
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores a blob whose bytes are already in memory, after checking its digest.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        let mut w = self.blob_writer(digest, bytes.len() as u64)?;
        w.write(bytes)?;
        w.commit()
    }

    /// A writer that lands the blob only if exactly `size` bytes with `digest` arrive.
    pub fn blob_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, ImageError> {
        let tmp = self.temp_path(digest.hex());
        let file = File::create(&tmp).map_err(|source| ImageError::Store {
            path: tmp.clone(),
            source,
        })?;
        Ok(BlobWriter {
            file: std::io::BufWriter::with_capacity(crate::util::IO_BUFFER, file),
            tmp,
            dest: self.blob_path(digest),
            hasher: Hasher::new(),
            written: 0,
            size,
            digest: digest.clone(),
            committed: false,
        })
    }

    /// Takes the lock of `name` (a layer or a blob, `what` for messages) under `locks/`,
    /// waiting for the berth that holds it — at most the store's lock wait: the holder's own
    /// fetch is bounded by its pull timeout, so a lock held longer is held by a berth that
    /// is stuck. Lock files stay: removing one could let two berths lock two files of the
    /// same name.
    pub fn lock(&self, name: &str, what: &str) -> Result<Flock<File>, ImageError> {
        let path = self.cache.lock(name);
        let store_err = |source| ImageError::Store {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(store_err)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut announced = false;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((held, nix::errno::Errno::EWOULDBLOCK)) => file = held,
                Err((_, e)) => return Err(store_err(e.into())),
            }
            let waited = started.elapsed();
            if waited >= self.lock_wait {
                return Err(ImageError::LockTimeout {
                    what: what.to_owned(),
                    lock: path,
                    waited: self.lock_wait,
                });
            }
            if !std::mem::replace(&mut announced, true) {
                tracing::info!("waiting for another berth fetching or unpacking {what}");
            }
            crate::interrupt::check()?;
            std::thread::sleep(pause.min(self.lock_wait - waited));
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Locks those of `blobs` the store lacks, in digest order (so berths locking several
    /// never wait on each other in a circle), and returns the locks and the blobs still
    /// missing once they are held: a berth that waited finds what the other fetched.
    pub fn lock_missing(
        &self,
        blobs: &[Descriptor],
    ) -> Result<(Vec<Flock<File>>, Vec<Descriptor>), ImageError> {
        let mut wanted: Vec<&Descriptor> =
            blobs.iter().filter(|b| !self.has_blob(&b.digest)).collect();
        wanted.sort_by(|a, b| a.digest.hex().cmp(b.digest.hex()));
        wanted.dedup_by(|a, b| a.digest == b.digest);
        let locks = wanted
            .iter()
            .map(|b| {
                let what = format!("blob {}", b.digest);
                self.lock(&format!("blob-{}", b.digest.hex()), &what)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let missing = wanted
            .into_iter()
            .filter(|b| !self.has_blob(&b.digest))
            .cloned()
            .collect();
        Ok((locks, missing))
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        self.cache.record(Digest::of(reference.as_bytes()).hex())
    }

    pub fn save_record(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let path = self.record_path(&record.reference);
        let tmp = self.temp_path("ref");
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| ImageError::Store { path, source })
    }

    /// Records that `reference` was used now (rewritten atomically, like every record).
    pub fn touch(&self, reference: &str) -> Result<(), ImageError> {
        match self.find_record(reference) {
            Some(mut rec) => {
                rec.last_used = crate::util::unix_now();
                self.save_record(&rec)
            }
            None => Ok(()),
        }
    }

    /// Removes the record of `reference`; `false` when there was none.
    pub fn remove_record(&self, reference: &str) -> Result<bool, ImageError> {
        let path = self.record_path(reference);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ImageError::Store { path, source }),
        }
    }

    pub fn find_record(&self, reference: &str) -> Option<ImageRecord> {
        let bytes = fs::read(self.record_path(reference)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every stored image, sorted by reference.
    pub fn records(&self) -> Vec<ImageRecord> {
        let mut out: Vec<ImageRecord> = fs::read_dir(self.cache.refs())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a: &ImageRecord, b| a.reference.cmp(&b.reference));
        out
    }
}

/// Streams one blob into the store, verifying size and digest as it goes.
#[derive(Debug)]
pub struct BlobWriter {
    file: std::io::BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    hasher: Hasher,
    written: u64,
    size: u64,
    digest: Digest,
    committed: bool,
}

impl BlobWriter {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(ImageError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: format!("more than {}", self.size),
            });
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .map_err(|source| ImageError::Store {
                path: self.tmp.clone(),
                source,
            })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Lands the blob under its digest, or fails (and removes it) if it is not what the
    /// manifest promised.
    pub fn commit(mut self) -> Result<(), ImageError> {
        if self.written != self.size {
            return Err(ImageError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.written.to_string(),
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                what: "blob".to_owned(),
                expected: self.digest.clone(),
                actual,
            });
        }
        self.file.flush().map_err(|source| ImageError::Store {
            path: self.tmp.clone(),
            source,
        })?;
        fs::rename(&self.tmp, &self.dest).map_err(|source| ImageError::Store {
            path: self.dest.clone(),
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn blobs_land_only_when_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        store.put_blob(&d, b"hello").unwrap();
        assert_eq!(store.read_blob(&d).unwrap().unwrap(), b"hello");

        let wrong = Digest::of(b"other");
        let e = store.put_blob(&wrong, b"hello").unwrap_err();
        assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
        assert!(!store.has_blob(&wrong));

        let mut w = store.blob_writer(&wrong, 3).unwrap();
        let e = w.write(b"toolong").unwrap_err();
        assert!(matches!(e, ImageError::SizeMismatch { .. }), "{e}");
        drop(w);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "temp files left"
        );
    }

    #[test]
    fn the_root_is_made_private_even_if_it_existed_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        Store::open(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(root.join("refs"), fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        // Only the root: what is below keeps its modes.
        assert_eq!(mode(&root.join("refs")), 0o755);
    }

    #[test]
    fn corrupt_blobs_read_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        store.put_blob(&d, b"hello").unwrap();
        fs::write(store.blob_path(&d), b"jello").unwrap();
        assert!(store.read_blob(&d).unwrap().is_none());
        assert!(!store.has_blob(&d));
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = ImageRecord {
            reference: "127.0.0.1:5000/a/b:1".to_owned(),
            digest: Digest::of(b"i"),
            manifest: Digest::of(b"m"),
            config: Digest::of(b"c"),
            layers: vec![Digest::of(b"l")],
            size: 5,
            pulled_at: 1,
            last_used: 0,
            accepted: None,
        };
        store.save_record(&rec).unwrap();
        assert_eq!(store.find_record(&rec.reference), Some(rec.clone()));
        assert_eq!(store.records(), vec![rec.clone()]);
        assert_eq!(store.find_record("other"), None);
        store.touch(&rec.reference).unwrap();
        let touched = store.find_record(&rec.reference).unwrap();
        assert!(
            touched.last_used >= crate::util::unix_now() - 5,
            "{touched:?}"
        );
        assert!(store.remove_record(&rec.reference).unwrap());
        assert!(!store.remove_record(&rec.reference).unwrap());
        assert_eq!(store.records(), vec![]);
    }
}
