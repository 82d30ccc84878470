//! The errors of the secrets module, in a leaf of their own: the keyring and the cipher
//! both return them, and neither needs the other for that.

use crate::contract::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read or write the master key file {path}")]
    KeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the master key file {path} is readable by others (mode {mode:o}): chmod 600 it")]
    KeyFileOpen { path: std::path::PathBuf, mode: u32 },
    #[error("the master key file {path} is not valid")]
    KeyFileInvalid {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the master key file {path} has no usable current key")]
    KeyFileBroken { path: std::path::PathBuf },
    #[error(
        "the master key file {path} is missing, and this host uses a shared store: every host \
         of it needs the same key, so berth makes none here. Copy the key file from a host of \
         the store to {path} (owner only, mode 0600; as with Slurm's munge key), or create \
         the store's first key once with `berth encrypt --rotate-key` and copy it to the others"
    )]
    KeyFileMissing { path: std::path::PathBuf },
    #[error("cannot get random bytes for a key or nonce")]
    Random(#[source] getrandom::Error),
    #[error(
        "the value of {path} does not decrypt: it was encrypted for another component, project \
         or configuration, or it was altered"
    )]
    Undecryptable { path: String },
    #[error(
        "the value of {path} was encrypted with master key {key_id}, which berth's key file \
         does not have"
    )]
    UnknownKey { path: String, key_id: u32 },
    #[error("the value of {path} is not a valid ciphertext")]
    Malformed { path: String },
    #[error(
        "the value of {path} was encrypted on a Keboola stack (with its {service}) and cannot \
         be decrypted here: put the plain value there and encrypt it with `berth encrypt`"
    )]
    Foreign {
        path: String,
        /// The key service of the stack that made it.
        service: &'static str,
    },
    #[error("the value of {path} is bound to a configuration, and the job has no config_id")]
    NoConfig { path: String },
    #[error("component secrets cannot be used in configurations (used in \"{path}\")")]
    CopiedComponentSecret { path: String },
    #[error("cannot encrypt the value of {path}")]
    Encrypt { path: String },
}

impl SecretsError {
    /// Whose fault it is: a value in the job is the user's; the key file is the operator's.
    pub fn class(&self) -> ErrorClass {
        match self {
            SecretsError::Undecryptable { .. }
            | SecretsError::UnknownKey { .. }
            | SecretsError::Malformed { .. }
            | SecretsError::Foreign { .. }
            | SecretsError::NoConfig { .. }
            | SecretsError::CopiedComponentSecret { .. } => ErrorClass::User,
            SecretsError::KeyFile { .. }
            | SecretsError::KeyFileOpen { .. }
            | SecretsError::KeyFileInvalid { .. }
            | SecretsError::KeyFileBroken { .. }
            // The operator's to install, as any missing host configuration.
            | SecretsError::KeyFileMissing { .. }
            | SecretsError::Random(_)
            | SecretsError::Encrypt { .. } => ErrorClass::Internal,
        }
    }
}
