//! berth's image errors, below every part of `image`: each part returns [`ImageError`],
//! which wraps what the registry client, the credentials, TLS, the signature policy and the
//! id shift can say. They live here so that no part reaches up for them.
//!
//! Owners in a container's id range ([`ShiftError`]): a file the image gives to uid N belongs
//! to host uid start+N, so inside the container's user namespace it is N again, and on the
//! host it is nobody's. The layer extractor writes owners so as it unpacks; this is its error
//! when an image names an id the range lacks.

use std::io;
use std::path::PathBuf;

use super::digest::Digest;
use crate::contract::ErrorClass;
use crate::interrupt::Interrupted;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("image {reference} not found in the registry")]
    NotFound { reference: String },
    #[error("not authorized to pull {reference}: {message}")]
    Unauthorized { reference: String, message: String },
    #[error("image {reference} is not stored{hint}")]
    NotStored { reference: String, hint: String },
    #[error(
        "image {reference} is stored, but {why}: only its registry can confirm it, and \
         under --pull {policy} no registry is asked (use --pull newer)"
    )]
    Unconfirmed {
        reference: String,
        why: String,
        policy: &'static str,
    },
    #[error("{reference}: registry {prefix} is blocked by {}", file.display())]
    Blocked {
        reference: String,
        prefix: String,
        file: PathBuf,
    },
    /// A short name (no registry host) that registries.conf cannot resolve to one image.
    #[error("{message}")]
    ShortName { reference: String, message: String },
    #[error("registry error for {reference}: {message}")]
    Registry { reference: String, message: String },
    /// The registry is busy (429) or failing (5xx): another time may do.
    #[error("registry {registry} answered {status} for {reference} ({message})")]
    Unavailable {
        registry: String,
        reference: String,
        status: String,
        message: String,
    },
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: String,
    },
    #[error("invalid manifest {digest}: {message}")]
    BadManifest { digest: Digest, message: String },
    #[error("image {reference} has no manifest for linux/{arch} (it has: {available})")]
    NoPlatform {
        reference: String,
        arch: String,
        available: String,
    },
    #[error("invalid image config: {message}")]
    BadConfig { message: String },
    #[error("layer {layer} is refused: entry {path} {why}")]
    LayerEscape {
        layer: Digest,
        path: PathBuf,
        why: String,
    },
    #[error("image cannot be moved into the container id range")]
    Shift(#[from] ShiftError),
    #[error("layer {layer} cannot be unpacked: {message}")]
    BadLayer { layer: Digest, message: String },
    #[error("image store {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {image}: {message}")]
    Transport { image: String, message: String },
    #[error("image {image}: cannot read the layout")]
    Layout {
        image: String,
        #[source]
        source: crate::confined::ConfinedError,
    },
    #[error("image {image} is refused: {what}")]
    TooLarge { image: String, what: String },
    #[error("the pull of {image} did not finish within {timeout:?} (--pull-timeout)")]
    PullTimeout {
        image: String,
        timeout: std::time::Duration,
    },
    #[error(
        "gave up waiting {waited:?} for another berth fetching or unpacking {what}: it holds \
         the lock {lock} (--pull-timeout)"
    )]
    LockTimeout {
        what: String,
        lock: PathBuf,
        waited: std::time::Duration,
    },
    #[error(transparent)]
    Access(RegistryError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl ImageError {
    /// Whose fault it is: a malformed reference is the user's; an unreachable registry, a
    /// missing, broken or hostile image, and the host are berth's side (contract §7). Every
    /// variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            // A layout or archive the user named that is missing or not one.
            ImageError::Reference { .. }
            | ImageError::Transport { .. }
            | ImageError::Layout { .. }
            // Not stored, or not confirmable, under the pull policy the user chose.
            | ImageError::NotStored { .. }
            | ImageError::Unconfirmed { .. }
            // The operator's registries.conf blocks the image's registry.
            | ImageError::Blocked { .. }
            // A short name registries.conf resolves to no one image.
            | ImageError::ShortName { .. }
            // The operator's policy refuses the image, or cannot be read.
            | ImageError::Signature(_) => ErrorClass::User,
            ImageError::Access(e) => e.class(),
            ImageError::Unreachable { .. }
            | ImageError::NotFound { .. }
            | ImageError::Unauthorized { .. }
            | ImageError::Registry { .. }
            | ImageError::Unavailable { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::BadManifest { .. }
            | ImageError::NoPlatform { .. }
            | ImageError::BadConfig { .. }
            | ImageError::LayerEscape { .. }
            | ImageError::TooLarge { .. }
            | ImageError::PullTimeout { .. }
            | ImageError::LockTimeout { .. }
            | ImageError::BadLayer { .. }
            | ImageError::Shift(_)
            | ImageError::Store { .. }
            | ImageError::Host(_)
            | ImageError::Interrupted(_) => ErrorClass::Internal,
        }
    }
}

/// What went wrong reaching a registry, beyond what [`ImageError`] says by itself.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("registry {registry}: its certs.d files cannot be used")]
    Tls {
        registry: String,
        #[source]
        source: TlsError,
    },
    #[error("registry {registry}: cannot set up the HTTP client")]
    Client {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot pull {image}: {hint} ({message})")]
    Untrusted {
        image: String,
        hint: String,
        message: String,
    },
    #[error(
        "cannot pull {image}: layer {layer} has media type {media_type:?}, which berth cannot \
         unpack (it takes tar, tar+gzip and tar+zstd layers)"
    )]
    LayerMediaType {
        image: String,
        layer: Digest,
        media_type: String,
    },
    #[error(
        "cannot pull {image}: {url}, where registry {registry} redirected berth, asks for \
         credentials; berth answers only the registry's own challenges"
    )]
    ForeignChallenge {
        image: String,
        registry: String,
        url: String,
    },
}

impl RegistryError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RegistryError::Auth(e) => e.class(),
            RegistryError::Tls { .. } | RegistryError::Untrusted { .. } => ErrorClass::User,
            RegistryError::Client { .. }
            | RegistryError::LayerMediaType { .. }
            | RegistryError::ForeignChallenge { .. } => ErrorClass::Internal,
        }
    }
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> ImageError {
        ImageError::Access(e)
    }
}

impl From<AuthError> for ImageError {
    fn from(e: AuthError) -> ImageError {
        ImageError::Access(RegistryError::Auth(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    // Only the position: serde's own message may quote the file's content.
    #[error("the credentials file {path} is not valid JSON (line {line}, column {column})")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("the credentials for {registry} in {path} are not valid: {why}")]
    BadEntry {
        registry: String,
        path: PathBuf,
        why: &'static str,
    },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
    #[error("registry {registry} refused the credentials of {username:?} (from {origin})")]
    Rejected {
        registry: String,
        username: String,
        origin: String,
    },
    #[error("the credentials for {registry} hold characters an HTTP header cannot carry")]
    Unsendable { registry: String },
    #[error(
        "registry {registry} requires authentication and berth has no credentials for it \
         (berth login {registry}, or --authfile FILE)"
    )]
    Required { registry: String },
    #[error("cannot get a token for {registry} from {realm}: {message}")]
    Token {
        registry: String,
        realm: String,
        message: String,
    },
    #[error("cannot write the credentials file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the password")]
    Prompt(#[source] io::Error),
    #[error("no password given (an empty line)")]
    EmptyPassword,
}

impl AuthError {
    /// Credentials are the operator's to fix; a helper that breaks or a token server that
    /// misbehaves is the environment's.
    pub fn class(&self) -> ErrorClass {
        match self {
            AuthError::Token { .. } | AuthError::Write { .. } => ErrorClass::Internal,
            _ => ErrorClass::User,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificates directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the certificate file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a PEM certificate berth can use")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("client certificate {cert} has no key beside it ({key} is missing)")]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("{path} is not a PEM private key berth can use")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("client certificate {cert} with key {key} cannot be used")]
    BadIdentity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("cannot set up TLS verification with the system's certificates")]
    Verifier {
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("a redirect from {from} to {to} is refused: {why}")]
    Redirect {
        from: String,
        to: String,
        why: &'static str,
    },
}

impl TlsError {
    pub fn class(&self) -> ErrorClass {
        match self {
            TlsError::Redirect { .. } | TlsError::Verifier { .. } => ErrorClass::Internal,
            _ => ErrorClass::User,
        }
    }
}

/// No policy file is near this: it is read whole before it is parsed.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the signature policy {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the signature policy {path} is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("invalid signature policy {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
    #[error("signature policy {path}, {scope}: {message}")]
    Invalid {
        path: PathBuf,
        scope: String,
        message: String,
    },
    #[error("signature policy {path}, {scope}: cannot read the key {key}")]
    KeyRead {
        path: PathBuf,
        scope: String,
        key: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "signature policy {path}, {scope}: the key {key} is not a PEM ECDSA P-256 or P-384 public key"
    )]
    Key {
        path: PathBuf,
        scope: String,
        key: String,
        /// Boxed: it would make every image error larger.
        #[source]
        source: Box<p256::pkcs8::spki::Error>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("image {image} is refused by the signature policy {policy} ({scope}): {why}")]
    Refused {
        image: String,
        policy: PathBuf,
        scope: String,
        why: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error(
        "{path} is owned by {what} {id}, outside the {size} ids a container has{}",
        fix_for(*size)
    )]
    OutOfRange {
        path: PathBuf,
        what: &'static str,
        id: u32,
        size: u32,
    },
    #[error("cannot change the owner of {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to do when a container has a single id: a rootless operator without subordinate ids.
fn fix_for(size: u32) -> &'static str {
    if size == 1 {
        " (you have no subordinate ids: as root, give yourself a range with `usermod \
         --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, one no other user has)"
    } else {
        ""
    }
}
