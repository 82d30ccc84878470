//! Says yes or no for a reference and a digest: the signature policy (containers'
//! `policy.json`) and cosign signatures. It reads signatures through a
//! [`SignatureSource`] the caller adapts, so it never sees the registry client.

pub mod policy;
mod signature;

pub use policy::{SYSTEM_POLICY, SignaturePolicy, locate};
pub use signature::{Gate, LocalImage, Rules, SignatureSource, check_local};
