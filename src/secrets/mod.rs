//! Secrets (contract §10): the values of keys starting with `#`, encrypted at rest and
//! decrypted right before a run.
//!
//! A ciphertext is `<prefix><base64(key id ‖ nonce ‖ XChaCha20-Poly1305 ciphertext)>`. The
//! prefix names its scope, and the scope's ids (component, project, configuration, as the
//! scope binds them) are the AEAD's associated data: moved to another component, project or
//! configuration, a ciphertext no longer authenticates. The key id (4 bytes, big-endian)
//! names the master key of [`Keyring`] that made it, so rotating keys keeps old
//! ciphertexts readable. No error of this module carries a secret's value: they name the
//! key's path in the JSON tree instead.
//!
//! A leaf: it knows JSON trees and ids, not jobs.

mod error;
mod keyring;
mod mask;

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value;

pub use error::SecretsError;
pub use keyring::Keyring;
pub use mask::{HIDDEN, MIN_MASKED_CHARS, Masker};

/// Bytes of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;
const KEY_ID_LEN: usize = 4;
/// Bumped if the associated data ever changes shape.
const AD_VERSION: &str = "berth-secret-v1";

/// The scopes of the original's ciphertexts (keboola/object-encryptor's wrappers). On an
/// AWS stack a scope's prefix is the bare name, on Azure it ends in `KV`, on Google Cloud
/// in `GKMS`; berth makes the bare form of the first four only.
const FOREIGN_SCOPES: [&str; 8] = [
    "Secure",
    "ComponentSecure",
    "ProjectSecure",
    "ConfigSecure",
    "ProjectWideSecure",
    "BranchTypeSecure",
    "BranchTypeConfigSecure",
    "ProjectWideBranchTypeSecure",
];

/// The original's pre-2018 ciphertexts (symmetric, with a stack key): no longer decrypted
/// there either, but still in the world.
const LEGACY_PREFIXES: [&str; 3] = [
    "KBC::Encrypted==",
    "KBC::ComponentEncrypted==",
    "KBC::ComponentProjectEncrypted==",
];

/// A ciphertext of the original's that berth does not make, and the key service that made
/// it: never encrypted again, and a user error naming its key when a job asks berth to
/// decrypt it.
fn foreign(value: &str) -> Option<&'static str> {
    if LEGACY_PREFIXES.iter().any(|p| value.starts_with(p)) {
        return Some("legacy stack key");
    }
    let rest = value.strip_prefix("KBC::")?;
    let (name, _) = rest.split_once("::")?;
    let (scope, service) = if let Some(s) = name.strip_suffix("GKMS") {
        (s, "Google Cloud KMS")
    } else if let Some(s) = name.strip_suffix("KV") {
        (s, "Azure Key Vault")
    } else {
        // The bare forms berth makes itself are berth's (see `Scope::of`).
        (name, "AWS KMS")
    };
    FOREIGN_SCOPES.contains(&scope).then_some(service)
}

/// What a ciphertext is bound to (contract §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The component.
    Component,
    /// The component in one project (the default).
    #[default]
    Project,
    /// The component in one project, for one configuration.
    Config,
    /// Every component of one project.
    ProjectWide,
}

impl Scope {
    const ALL: [Scope; 4] = [
        Scope::Component,
        Scope::Project,
        Scope::Config,
        Scope::ProjectWide,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Component => "KBC::ComponentSecure::",
            Scope::Project => "KBC::ProjectSecure::",
            Scope::Config => "KBC::ConfigSecure::",
            Scope::ProjectWide => "KBC::ProjectWideSecure::",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Component => "component",
            Scope::Project => "project",
            Scope::Config => "config",
            Scope::ProjectWide => "project-wide",
        }
    }

    /// The scope of a ciphertext of berth's, by its prefix.
    fn of(value: &str) -> Option<(Scope, &str)> {
        Scope::ALL
            .into_iter()
            .find_map(|s| value.strip_prefix(s.prefix()).map(|body| (s, body)))
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| format!("unknown scope {s} (component, project, config, project-wide)"))
    }
}

/// The ids a job runs under: what a scope binds a ciphertext to.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a> {
    pub component: &'a str,
    pub project: &'a str,
    pub config: Option<&'a str>,
}

/// Whether `value` is a ciphertext (berth's or the original's, of any stack): encrypting
/// leaves it alone.
pub fn is_encrypted(value: &str) -> bool {
    Scope::of(value).is_some() || foreign(value).is_some()
}

/// A zlib stream's first two bytes (deflate, a window of up to 32 KiB, a valid check): how
/// the body of the original's ciphertexts starts (PHP's `gzcompress`). berth's start with
/// a key id, which never gets that large.
fn is_zlib_header(body: &[u8]) -> bool {
    matches!(body, [0x78, flags, ..] if (0x7800 | u16::from(*flags)) % 31 == 0)
}

/// The associated data of a scope: its name and the ids it binds, each length-prefixed so
/// no two different id sets read the same.
fn associated_data(scope: Scope, ids: &Ids<'_>, path: &str) -> Result<Vec<u8>, SecretsError> {
    let config = || {
        ids.config.ok_or_else(|| SecretsError::NoConfig {
            path: path.to_owned(),
        })
    };
    let bound: Vec<(&str, &str)> = match scope {
        Scope::Component => vec![("component", ids.component)],
        Scope::Project => vec![("component", ids.component), ("project", ids.project)],
        Scope::Config => vec![
            ("component", ids.component),
            ("project", ids.project),
            ("config", config()?),
        ],
        Scope::ProjectWide => vec![("project", ids.project)],
    };
    let mut ad = Vec::new();
    for part in [AD_VERSION, scope.name()]
        .into_iter()
        .chain(bound.iter().flat_map(|(k, v)| [*k, *v]))
    {
        ad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        ad.extend_from_slice(part.as_bytes());
    }
    Ok(ad)
}

/// Encrypts one value with the keyring's current key; `path` only names it in errors.
pub fn encrypt(
    plain: &str,
    scope: Scope,
    ids: &Ids<'_>,
    ring: &Keyring,
    path: &str,
) -> Result<String, SecretsError> {
    let failed = || SecretsError::Encrypt {
        path: path.to_owned(),
    };
    let (key_id, key) = ring.current().ok_or_else(failed)?;
    let ad = associated_data(scope, ids, path)?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(SecretsError::Random)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key));
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain.as_bytes(),
                aad: &ad,
            },
        )
        .map_err(|_| failed())?;
    let mut body = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + sealed.len());
    body.extend_from_slice(&key_id.to_be_bytes());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    Ok(format!("{}{}", scope.prefix(), STANDARD.encode(body)))
}

/// Decrypts one ciphertext made for `ids`; `path` names it in errors.
pub fn decrypt(
    value: &str,
    ids: &Ids<'_>,
    ring: &Keyring,
    path: &str,
) -> Result<String, SecretsError> {
    let err_path = || path.to_owned();
    let Some((scope, body)) = Scope::of(value) else {
        return Err(match foreign(value) {
            Some(service) => SecretsError::Foreign {
                path: err_path(),
                service,
            },
            None => SecretsError::Malformed { path: err_path() },
        });
    };
    let malformed = || SecretsError::Malformed { path: err_path() };
    let body = STANDARD.decode(body.as_bytes()).map_err(|_| malformed())?;
    if body.len() < KEY_ID_LEN + NONCE_LEN {
        return Err(malformed());
    }
    let (id, rest) = body.split_at(KEY_ID_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let key_id = u32::from_be_bytes(<[u8; KEY_ID_LEN]>::try_from(id).map_err(|_| malformed())?);
    let key = ring.key(key_id).ok_or_else(|| {
        // Same prefix as berth's: an AWS stack's ciphertext, made by KMS.
        if is_zlib_header(&body) {
            SecretsError::Foreign {
                path: err_path(),
                service: "AWS KMS",
            }
        } else {
            SecretsError::UnknownKey {
                path: err_path(),
                key_id,
            }
        }
    })?;
    let ad = associated_data(scope, ids, path)?;
    let plain = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key))
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &ad,
            },
        )
        .map_err(|_| SecretsError::Undecryptable { path: err_path() })?;
    String::from_utf8(plain).map_err(|_| SecretsError::Undecryptable { path: err_path() })
}

/// Calls `f` on the string value of every `#` key in `value`, with its path
/// (`parameters.#password`, `rows[0].#token`), in document order.
fn visit(
    value: &mut Value,
    path: &str,
    f: &mut dyn FnMut(&str, &mut String) -> Result<(), SecretsError>,
) -> Result<(), SecretsError> {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match v {
                    Value::String(s) if k.starts_with('#') => f(&p, s)?,
                    _ => visit(v, &p, f)?,
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                visit(v, &format!("{path}[{i}]"), f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Encrypts every plain `#` value of `value` (ciphertexts are left as they are); returns
/// how many it encrypted.
pub fn encrypt_tree(
    value: &mut Value,
    scope: Scope,
    ids: &Ids<'_>,
    ring: &Keyring,
) -> Result<usize, SecretsError> {
    let mut n = 0;
    visit(value, "", &mut |path, s| {
        if !s.is_empty() && !is_encrypted(s) {
            *s = encrypt(s, scope, ids, ring, path)?;
            n += 1;
        }
        Ok(())
    })?;
    Ok(n)
}

/// What decrypting a tree found.
#[derive(Default)]
pub struct Decrypted {
    /// Every `#` value, now plain: what must be masked.
    pub secrets: Vec<String>,
    /// Paths of the `#` values that were not encrypted.
    pub plain: Vec<String>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("secrets", &self.secrets.len())
            .field("plain", &self.plain)
            .finish()
    }
}

/// Decrypts every `#` ciphertext of `value` in place; `root` prefixes the paths errors
/// name. A plain `#` value is left as it is and listed in [`Decrypted::plain`].
pub fn decrypt_tree(
    value: &mut Value,
    root: &str,
    ids: &Ids<'_>,
    ring: &Keyring,
) -> Result<Decrypted, SecretsError> {
    let mut found = Decrypted::default();
    visit(value, root, &mut |path, s| {
        if s.is_empty() {
            return Ok(());
        }
        if is_encrypted(s) {
            *s = decrypt(s, ids, ring, path)?;
        } else {
            found.plain.push(path.to_owned());
        }
        found.secrets.push(s.clone());
        Ok(())
    })?;
    Ok(found)
}

/// Whether `value` has a `#` value that is a ciphertext (decrypting it needs the keys).
pub fn has_ciphertexts(value: &Value) -> bool {
    let mut any = false;
    let mut copy = value.clone();
    let _ = visit(&mut copy, "", &mut |_, s| {
        any |= is_encrypted(s);
        Ok(())
    });
    any
}

/// The `#` values of `value` that are not encrypted yet.
pub fn plain_secrets(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut copy = value.clone();
    let _ = visit(&mut copy, "", &mut |_, s| {
        if !s.is_empty() && !is_encrypted(s) {
            found.push(s.clone());
        }
        Ok(())
    });
    found
}

/// Refuses a (decrypted) configuration that holds one of the (decrypted) image-parameter
/// secrets of a component in a `#` key: a user could otherwise read it back. `at` prefixes
/// the path the error names (where the configuration sits in the job's).
pub fn refuse_copied(
    config: &Value,
    component_secrets: &[String],
    at: &str,
) -> Result<(), SecretsError> {
    let mut copy = config.clone();
    visit(&mut copy, "", &mut |path, s| {
        if !s.is_empty() && component_secrets.iter().any(|c| c == s) {
            return Err(SecretsError::CopiedComponentSecret {
                path: format!("{at}{path}"),
            });
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
