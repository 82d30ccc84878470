//! The master keys: a JSON file only its owner may read, `{"current": id, "keys": [{"id",
//! "key"}]}`. Rotation adds a key and makes it current; the old ones stay so that the
//! ciphertexts made with them still decrypt (each ciphertext names its key's id).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::error::SecretsError;

/// Bytes of one key (XChaCha20-Poly1305 takes 256 bits).
pub const KEY_LEN: usize = 32;

/// The master keys, by id; one is current and encrypts.
#[derive(Clone, Default)]
pub struct Keyring {
    current: u32,
    keys: Vec<(u32, [u8; KEY_LEN])>,
}

impl std::fmt::Debug for Keyring {
    // Never the keys themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("ids", &ids)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    current: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: u32,
    key: String,
}

impl Keyring {
    /// The keys in `path`; none when the file does not exist (nothing was ever encrypted).
    pub fn load(path: &Path) -> Result<Keyring, SecretsError> {
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keyring::default()),
            Err(source) => return Err(key_io(path, source)),
        };
        let mode = fs::metadata(path)
            .map_err(|source| key_io(path, source))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(SecretsError::KeyFileOpen {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let file: KeyFile =
            serde_json::from_slice(&text).map_err(|source| SecretsError::KeyFileInvalid {
                path: path.to_owned(),
                source,
            })?;
        Keyring::from_file(file).ok_or_else(|| SecretsError::KeyFileBroken {
            path: path.to_owned(),
        })
    }

    /// The keys in `path`, with a first one made and saved when there are none.
    pub fn load_or_create(path: &Path) -> Result<Keyring, SecretsError> {
        let mut ring = Keyring::load(path)?;
        if ring.keys.is_empty() {
            ring.add_key()?;
            ring.save(path)?;
            tracing::info!("created the master key {}", path.display());
        }
        Ok(ring)
    }

    /// The keys in `path`, which must exist: with a shared store, a key made here would
    /// encrypt what no other host can decrypt.
    pub fn load_existing(path: &Path) -> Result<Keyring, SecretsError> {
        let ring = Keyring::load(path)?;
        if ring.keys.is_empty() {
            return Err(SecretsError::KeyFileMissing {
                path: path.to_owned(),
            });
        }
        Ok(ring)
    }

    /// Adds a new key to `path` and makes it current; returns its id.
    pub fn rotate(path: &Path) -> Result<u32, SecretsError> {
        let mut ring = Keyring::load(path)?;
        let id = ring.add_key()?;
        ring.save(path)?;
        Ok(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that encrypts, with its id.
    pub fn current(&self) -> Option<(u32, &[u8; KEY_LEN])> {
        self.key(self.current).map(|k| (self.current, k))
    }

    pub fn key(&self, id: u32) -> Option<&[u8; KEY_LEN]> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    fn add_key(&mut self) -> Result<u32, SecretsError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(SecretsError::Random)?;
        let id = self.keys.iter().map(|(i, _)| *i).max().unwrap_or(0) + 1;
        self.keys.push((id, key));
        self.current = id;
        Ok(id)
    }

    fn from_file(file: KeyFile) -> Option<Keyring> {
        let mut keys = Vec::with_capacity(file.keys.len());
        for k in file.keys {
            let bytes = STANDARD.decode(k.key.as_bytes()).ok()?;
            keys.push((k.id, <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok()?));
        }
        let ring = Keyring {
            current: file.current,
            keys,
        };
        ring.current().is_some().then_some(ring)
    }

    /// Writes the keys atomically: a new file (0600, in a 0700 directory) renamed over the
    /// old, so a crash leaves the old keys or the new ones, never half a file.
    fn save(&self, path: &Path) -> Result<(), SecretsError> {
        let file = KeyFile {
            current: self.current,
            keys: self
                .keys
                .iter()
                .map(|(id, k)| StoredKey {
                    id: *id,
                    key: STANDARD.encode(k),
                })
                .collect(),
        };
        let text =
            serde_json::to_vec_pretty(&file).map_err(|source| SecretsError::KeyFileInvalid {
                path: path.to_owned(),
                source,
            })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| key_io(dir, source))?;
        }
        let tmp = temp_path(path);
        let _ = fs::remove_file(&tmp);
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .and_then(|()| fs::rename(&tmp, path));
        written.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            key_io(path, source)
        })
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    path.with_file_name(name)
}

fn key_io(path: &Path, source: std::io::Error) -> SecretsError {
    SecretsError::KeyFile {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_once_private_and_rotation_keeps_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/keys.json");
        assert!(Keyring::load(&path).unwrap().is_empty());
        assert!(!path.exists(), "loading creates nothing");
        let first = Keyring::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let (id1, k1) = first.current().unwrap();
        let again = Keyring::load_or_create(&path).unwrap();
        assert_eq!(again.current().unwrap(), (id1, k1));
        let id2 = Keyring::rotate(&path).unwrap();
        assert_ne!(id1, id2);
        let rotated = Keyring::load(&path).unwrap();
        assert_eq!(rotated.current().unwrap().0, id2);
        assert_eq!(rotated.key(id1), Some(k1));
    }

    #[test]
    fn a_shared_store_needs_the_key_file_installed_and_never_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/keys.json");
        let e = Keyring::load_existing(&path).unwrap_err();
        assert!(matches!(e, SecretsError::KeyFileMissing { .. }));
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("Copy the key file from a host of the store"),
            "{msg}"
        );
        assert!(!path.exists(), "a key was made");
        let made = Keyring::load_or_create(&path).unwrap();
        let loaded = Keyring::load_existing(&path).unwrap();
        assert_eq!(loaded.current(), made.current());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        Keyring::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load(&path).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
        assert!(e.to_string().contains("keys.json"), "{e}");
    }

    #[test]
    fn a_broken_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let write = |text: &str| {
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(r#"{"current": 2, "keys": [{"id": 1, "key": "AAAA"}]}"#);
        assert!(matches!(
            Keyring::load(&path),
            Err(SecretsError::KeyFileBroken { .. })
        ));
        write("not json");
        assert!(matches!(
            Keyring::load(&path),
            Err(SecretsError::KeyFileInvalid { .. })
        ));
    }
}
