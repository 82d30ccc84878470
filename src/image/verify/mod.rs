//! Says yes or no for a reference and a digest: the signature policy (containers'
//! `policy.json`) and cosign signatures (`.sig` tags and sigstore bundles). It reads signatures through a
//! [`SignatureSource`] the caller adapts, so it never sees the registry client.

mod bundle;
pub(crate) mod key;
pub mod policy;
mod signature;
mod source;

#[cfg(feature = "fuzzing")]
pub use bundle::fuzz_bundle;
pub use policy::{SYSTEM_POLICY, SignaturePolicy, locate};
pub use signature::{Gate, LocalImage, Rules, check_local};
pub use source::SignatureSource;
