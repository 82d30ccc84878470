//! Where an image's signatures are read from, and why none of them satisfied a
//! requirement: what both kinds of cosign signature (the `.sig` tag's simple-signing
//! payloads and the referrers' sigstore bundles) share.

use super::policy::SigstoreKey;
use crate::image::spec::ImageError;
use crate::image::spec::digest::Digest;
use crate::image::spec::manifest::Descriptor;
use crate::image::spec::reference::ImageRef;

/// Where the signatures of an image in a registry are read from: the registry client,
/// adapted by the caller (verify never sees it).
pub trait SignatureSource {
    /// The manifest `reference` names (a tag or digest), asking for `accept`; refused as
    /// soon as it passes `cap` bytes.
    fn small_manifest(
        &self,
        reference: &ImageRef,
        accept: &[&str],
        cap: u64,
    ) -> Result<Vec<u8>, ImageError>;
    /// The blob `blob` of `reference`'s repository, refused past `cap` bytes, checked
    /// against its digest.
    fn small_blob(
        &self,
        reference: &ImageRef,
        blob: &Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>, ImageError>;
    /// The image index the registry's OCI 1.1 referrers API lists for `subject` in
    /// `reference`'s repository, refused past `cap` bytes; `None` when the registry has no
    /// referrers API (then the referrers tag schema's tag stands in for it).
    fn referrers(
        &self,
        reference: &ImageRef,
        subject: &Digest,
        cap: u64,
    ) -> Result<Option<Vec<u8>>, ImageError>;
}

/// Why no signature satisfied a requirement; a later variant says more (it got further).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    NoSignature,
    /// A sigstore bundle berth does not read: the detail says what it is.
    NotABundle(String),
    /// Only sigstore bundles holding a message signature, which names no image.
    MessageSignature,
    BadSignature,
    NotAPayload,
    /// A verified bundle that signs something else than a cosign image signature.
    NotAStatement(String),
    WrongDigest(String),
    WrongIdentity(String),
    /// A verified bundle for the digest, taken as naming the repository it is attached in
    /// (a bundle names none), which the signed identity does not accept.
    UnnamedBundle(String),
}

/// `sha256-<hex>`: the tag cosign's signatures of `top` are found under (`.sig` added) and
/// the referrers tag schema's tag listing what refers to it.
pub fn digest_tag(top: &Digest) -> String {
    top.to_string().replacen(':', "-", 1)
}

impl Why {
    /// The reason as a refusal tells it.
    pub fn explain(&self, key: &SigstoreKey, top: &Digest) -> String {
        match self {
            Why::NoSignature => format!(
                "it has no signature (no {}.sig tag, and no sigstore bundle among its referrers)",
                digest_tag(top)
            ),
            Why::NotABundle(what) => format!("its sigstore bundle is not one berth reads: {what}"),
            Why::MessageSignature => "its sigstore bundles hold message signatures, which name no \
                 image (cosign sign makes DSSE envelopes)"
                .into(),
            Why::BadSignature => format!("none of its signatures verifies with {}", key.names()),
            Why::NotAPayload => "its signed payload is not a cosign simple-signing payload".into(),
            Why::NotAStatement(what) => {
                format!("its sigstore bundle signs {what}, not a cosign image signature")
            }
            Why::WrongDigest(d) => format!("its signature is for another image, {d}, not {top}"),
            Why::WrongIdentity(name) => format!(
                "its signature names {name}, which the policy's signedIdentity ({}) does not accept",
                key.identity
            ),
            Why::UnnamedBundle(repository) => format!(
                "its sigstore bundle names no repository, so it stands for {repository}, where \
                 it is attached, which the policy's signedIdentity ({}) does not accept",
                key.identity
            ),
        }
    }
}
