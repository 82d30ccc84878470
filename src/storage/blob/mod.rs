//! File contents, apart from the rows that describe them: a blob store both backends use,
//! a local directory ([`LocalBlobs`]) or an S3-compatible object store ([`S3Blobs`]).
//!
//! A blob's key is the sha256 of its content (64 hex digits), so the same content is
//! stored once, two uploads of it never disagree, and whoever reads it checks what it got.
//! Uploads happen before the transaction that names them; the transaction only
//! references keys. What a failed or killed commit uploaded stays unreferenced until
//! [`sweep`] removes it: only once it is older than [`ORPHAN_AGE`], because a younger one
//! may belong to a commit still on its way. A put that finds its key there already renews
//! an old one ([`RENEW_AGE`]), so the sweep never takes content a commit is about to name.
//!
//! The embedded store of older berths named its contents with 32 random hex digits; those
//! keys still open (unchecked: their name is no digest).

mod local;
mod s3;

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use local::LocalBlobs;
pub use s3::S3Blobs;

use super::StorageError;

/// Blobs no row names are removed once they are this old.
pub const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);

/// A put finding its content stored already and older than this stores it again, so that
/// its age starts anew: a commit has [`ORPHAN_AGE`] minus this to name it.
pub const RENEW_AGE: Duration = Duration::from_secs(12 * 3600);

/// Content stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The sha256 of the content, lower-case hex.
    pub key: String,
    pub size: u64,
}

/// Where file contents live. Every method may be called from several threads.
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Stores the content of the file at `path` (a source of the job's: a missing or odd
    /// file is the user's error) under its sha256. A key stored already is kept.
    fn put(&self, path: &Path) -> Result<Blob, StorageError>;

    /// The content under `key`, checked against the key as it is read: a reader that gets
    /// other bytes fails at the end instead of returning success.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError>;

    /// Every key stored, with its age.
    fn list(&self) -> Result<Vec<(String, Duration)>, StorageError>;

    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Where the blobs are, for the operator (no credentials).
    fn location(&self) -> String;
}

/// Stores the contents of `uploads`, in order, before the transaction that names them. A
/// failed apply leaves them to the sweep: the same content may be what another commit is
/// naming at that moment.
pub(crate) fn put_all(
    blobs: &dyn BlobStore,
    uploads: &[super::FileUpload],
) -> Result<Vec<Blob>, StorageError> {
    uploads.iter().map(|f| blobs.put(&f.path)).collect()
}

/// Removes the blobs no row names (`referenced`) that are older than `min_age`; returns
/// how many went.
pub fn sweep(
    blobs: &dyn BlobStore,
    referenced: &HashSet<String>,
    min_age: Duration,
) -> Result<usize, StorageError> {
    let mut removed = 0;
    for (key, age) in blobs.list()? {
        if age >= min_age && !referenced.contains(&key) {
            match blobs.delete(&key) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove unreferenced blob {key}: {e}"),
            }
        }
    }
    if removed > 0 {
        tracing::debug!(
            "removed {removed} unreferenced file contents from {}",
            blobs.location()
        );
    }
    Ok(removed)
}

/// Whether `key` can name a blob: a sha256, or an older store's random name. Keys come
/// from the database, but are checked before they become a path or an object name.
pub(crate) fn valid_key(key: &str) -> bool {
    matches!(key.len(), 32 | 64) && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn bad_key(key: &str) -> StorageError {
    StorageError::Invalid {
        what: format!("file content key {key:?}"),
        reason: "not a sha256 in lower-case hex".into(),
    }
}

/// Opens a file a job (or the operator) uploads: it must be there and be a regular file.
pub(crate) fn open_source(path: &Path) -> Result<File, StorageError> {
    let source_err = |message: String| StorageError::Source {
        path: path.to_owned(),
        message,
    };
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => source_err("no such file".into()),
        _ => source_err(e.to_string()),
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(source_err("not a regular file".into()));
    }
    Ok(file)
}

/// The lower-case hex of a digest.
fn hex_of(digest: &[u8]) -> String {
    hex::encode(digest)
}

/// A reader that hashes what passes through it and, at the end, fails unless the content
/// has the digest its key names.
struct Verified<R> {
    inner: R,
    key: String,
    hasher: Option<Sha256>,
}

impl<R: Read> Verified<R> {
    fn new(inner: R, key: &str) -> Verified<R> {
        Verified {
            inner,
            key: key.to_owned(),
            // Older stores' keys are random names, not digests: nothing to check.
            hasher: (key.len() == 64).then(Sha256::new),
        }
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(h) = &mut self.hasher {
                h.update(&buf[..n]);
            }
        } else if !buf.is_empty()
            && let Some(h) = self.hasher.take()
            && hex_of(&h.finalize()) != self.key
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the stored content {} does not have the sha256 it is stored under",
                    self.key
                ),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_digests_or_older_random_names() {
        assert!(valid_key(&"a".repeat(64)));
        assert!(valid_key(&"0123456789abcdef".repeat(2)));
        for bad in ["", "../etc/passwd", &"A".repeat(64), &"a".repeat(63), "a/b"] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn a_reader_of_other_content_fails_at_the_end() {
        let key = hex_of(&Sha256::digest(b"right"));
        let mut ok = String::new();
        Verified::new(&b"right"[..], &key)
            .read_to_string(&mut ok)
            .unwrap();
        assert_eq!(ok, "right");
        let mut out = Vec::new();
        let e = Verified::new(&b"wrong"[..], &key)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&key), "{e}");
        // An older store's random name is not a digest.
        let mut out = Vec::new();
        Verified::new(&b"any"[..], &"0".repeat(32))
            .read_to_end(&mut out)
            .unwrap();
    }
}
