//! What an image is, with no I/O: digests, references, manifests and configs, the record a
//! pull leaves, and the errors every other part of `image` returns. A leaf: it uses no other
//! part.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod record;
pub mod reference;

pub use digest::Digest;
pub use error::{
    AuthError, ImageError, MAX_POLICY_BYTES, PolicyError, RegistryError, ShiftError,
    SignatureError, TlsError,
};
pub use reference::ImageRef;
