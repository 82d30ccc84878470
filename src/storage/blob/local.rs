//! Blobs in a local directory: `<dir>/<sha256>`, 0600 in a 0700 directory, written under
//! a temporary name, fsynced, and renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{Blob, BlobStore, RENEW_AGE, Verified, bad_key, hex_of, open_source, valid_key};
use crate::storage::StorageError;

/// Temporary names start with this; a crash leaves them for the sweep.
const PARTIAL: &str = ".put-";

/// A directory of blobs.
#[derive(Debug)]
pub struct LocalBlobs {
    dir: PathBuf,
}

impl LocalBlobs {
    /// The blobs in `dir`, which is created (0700) when missing.
    pub fn open(dir: &Path) -> Result<LocalBlobs, StorageError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StorageError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(LocalBlobs {
            dir: dir.to_owned(),
        })
    }

    fn io_err(&self, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.to_owned();
        move |source| StorageError::Io { path, source }
    }

    /// Copies `src` to a new temporary file, fsynced; returns its path, digest and size.
    fn copy_in(&self, src: &mut File) -> Result<(PathBuf, String, u64), StorageError> {
        let tmp = self
            .dir
            .join(format!("{PARTIAL}{}", crate::util::random_hex(8)));
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(self.io_err(&tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; crate::util::IO_BUFFER];
        let copied = (|| -> io::Result<u64> {
            let mut size = 0u64;
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
            out.sync_all()?;
            Ok(size)
        })();
        match copied {
            Ok(size) => Ok((tmp, hex_of(&hasher.finalize()), size)),
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                Err(StorageError::Io { path: tmp, source })
            }
        }
    }
}

impl BlobStore for LocalBlobs {
    fn put(&self, path: &Path) -> Result<Blob, StorageError> {
        let mut src = open_source(path)?;
        let (tmp, key, size) = self.copy_in(&mut src)?;
        let dest = self.dir.join(&key);
        let kept = fs::metadata(&dest)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < RENEW_AGE);
        let placed = if kept {
            // The same content is there, and young enough for the sweep to leave it.
            fs::remove_file(&tmp)
        } else {
            // New, or old enough to be swept soon: the rename gives it a new age. Two
            // berths renaming the same content over each other leave the same bytes.
            fs::rename(&tmp, &dest)
        };
        let synced = placed.and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(source) = synced {
            let _ = fs::remove_file(&tmp);
            return Err(StorageError::Io { path: dest, source });
        }
        Ok(Blob { key, size })
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        if !valid_key(key) {
            return Err(bad_key(key));
        }
        let path = self.dir.join(key);
        let file = File::open(&path).map_err(self.io_err(&path))?;
        Ok(Box::new(Verified::new(
            io::BufReader::with_capacity(crate::util::IO_BUFFER, file),
            key,
        )))
    }

    fn list(&self) -> Result<Vec<(String, Duration)>, StorageError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(self.io_err(&self.dir))? {
            let entry = entry.map_err(self.io_err(&self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_key(&name) && !name.starts_with(PARTIAL) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            found.push((name, age));
        }
        Ok(found)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        if !valid_key(key) && !key.starts_with(PARTIAL) || key.contains('/') {
            return Err(bad_key(key));
        }
        let path = self.dir.join(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StorageError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    use super::super::sweep;
    use super::*;

    #[test]
    fn contents_are_stored_once_under_their_digest_and_checked_when_read() {
        let d = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(&d.path().join("files")).unwrap();
        let src = d.path().join("a.txt");
        fs::write(&src, b"hello").unwrap();
        let a = blobs.put(&src).unwrap();
        assert_eq!(a.key, hex_of(&Sha256::digest(b"hello")));
        assert_eq!(a.size, 5);
        assert_eq!(blobs.put(&src).unwrap(), a);
        let listed = blobs.list().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let stored = d.path().join("files").join(&a.key);
        let mode = fs::metadata(&stored).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut content = String::new();
        blobs
            .open(&a.key)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert_eq!(content, "hello");

        // Altered on disk: reading it fails.
        fs::write(&stored, b"HELLO").unwrap();
        let mut out = Vec::new();
        let e = blobs
            .open(&a.key)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        assert!(blobs.open("../a.txt").is_err());
        let e = blobs.put(&d.path().join("missing")).unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().ends_with("missing: no such file"), "{e}");
    }

    #[test]
    fn the_sweep_takes_only_old_unreferenced_blobs() {
        let d = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::open(d.path()).unwrap();
        let put = |content: &[u8]| {
            let src = tempfile::NamedTempFile::new().unwrap();
            fs::write(src.path(), content).unwrap();
            blobs.put(src.path()).unwrap().key
        };
        let kept = put(b"kept");
        let orphan = put(b"orphan");
        fs::write(d.path().join(".put-0123"), b"partial").unwrap();
        let referenced = HashSet::from([kept.clone()]);
        assert_eq!(
            sweep(&blobs, &referenced, Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(sweep(&blobs, &referenced, Duration::ZERO).unwrap(), 2);
        let left: Vec<String> = blobs.list().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(left, vec![kept]);
        assert!(blobs.open(&orphan).is_err());
    }
}
