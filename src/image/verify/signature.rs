//! Cosign signatures, checked against the signature [`policy`] before any
//! layer of an image is fetched.
//!
//! Two kinds are read: the sigstore bundles cosign 3 attaches through the referrers API
//! (`bundle.rs`), and the `.sig` tag older cosign (and cosign 3 with
//! `--new-bundle-format=false`) writes, described here. The `.sig` tag is read first; the
//! referrers only when its signatures do not satisfy a requirement.
//!
//! Cosign stores the signatures of the image whose manifest (or index) has digest
//! `sha256:<hex>` as an OCI manifest tagged `sha256-<hex>.sig` in the image's repository.
//! Each of its layers is a simple-signing payload — JSON naming the image's digest and
//! repository — and carries in its `dev.cosignproject.cosign/signature` annotation the
//! base64 of an ECDSA signature (DER) of the payload. An image satisfies a `sigstoreSigned`
//! requirement when one of its signatures verifies with one of the requirement's keys and
//! its payload names the digest the reference resolved to and a name the requirement's
//! `signedIdentity` accepts.
//!
//! Everything read from the registry here is capped: the signature manifest, how many
//! signatures are tried, each payload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::bundle::{fetch_bundles, verify_bundle};
use super::policy::{self, Policy, Requirement, SigstoreKey};
use super::source::{SignatureSource, Why, digest_tag};
use crate::image::spec::ImageError;
use crate::image::spec::SignatureError;
use crate::image::spec::digest::Digest;
use crate::image::spec::manifest::{self, Descriptor};
use crate::image::spec::record::{Accepted, ImageRecord};
use crate::image::spec::reference::ImageRef;

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// A signature manifest holds one small layer per signature.
const MAX_SIGNATURE_MANIFEST: u64 = 256 << 10;
/// Signatures tried at most: each costs a request.
const MAX_SIGNATURES: usize = 16;
/// A payload is a few hundred bytes (more with cosign's optional annotations).
const MAX_PAYLOAD: u64 = 64 << 10;

/// One signature as fetched: the payload and the (still base64) signature of it.
#[derive(Debug)]
struct Signature {
    payload: Vec<u8>,
    signature: String,
}

#[derive(Debug, Deserialize)]
struct SignatureManifest {
    #[serde(default)]
    layers: Vec<SignatureLayer>,
}

#[derive(Debug, Deserialize)]
struct SignatureLayer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Debug, Deserialize)]
struct Critical {
    identity: PayloadIdentity,
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct PayloadIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The signature policy in force for one pull, read once.
#[derive(Debug)]
pub struct Gate {
    policy: Option<Policy>,
}

impl Gate {
    /// Reads the policy at `path` (none: every image is accepted, as before policies;
    /// `looked` says where berth looked for one). A policy that cannot be read or is
    /// invalid stops every pull, even of an image already stored.
    pub fn load(path: Option<&Path>, looked: &[PathBuf]) -> Result<Gate, ImageError> {
        let Some(path) = path else {
            let places: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
            let places = if places.is_empty() {
                String::new()
            } else {
                format!(" (none at {})", places.join(" or "))
            };
            tracing::debug!("no signature policy{places}: images are accepted unchecked");
            return Ok(Gate { policy: None });
        };
        let policy = Policy::load(path).map_err(SignatureError::from)?;
        tracing::debug!("signature policy {}", path.display());
        Ok(Gate {
            policy: Some(policy),
        })
    }

    /// What the policy requires of `image` (as its reference names it).
    pub fn rules(&self, image: &ImageRef) -> Rules<'_> {
        match &self.policy {
            None => Rules {
                policy: None,
                requirements: &[],
                scope: "no policy".to_owned(),
            },
            Some(p) => {
                let (requirements, scope) = p.for_docker(image);
                Rules {
                    policy: Some(p),
                    requirements,
                    scope,
                }
            }
        }
    }
}

/// The requirements the policy puts on one image reference, and where they come from.
#[derive(Debug)]
pub struct Rules<'a> {
    policy: Option<&'a Policy>,
    requirements: &'a [Requirement],
    scope: String,
}

impl Rules<'_> {
    /// What an image record keeps of these rules once they accepted its image: the policy
    /// file, the scope, and a digest of the requirements themselves (keys and identities,
    /// not their file names), so that a change to them, or another scope's rules for
    /// another reference, has the image checked again.
    pub fn acceptance(&self) -> Accepted {
        let mut text = String::new();
        for r in self.requirements {
            match r {
                Requirement::AcceptAnything => text.push_str("insecureAcceptAnything\n"),
                Requirement::Reject => text.push_str("reject\n"),
                Requirement::Sigstore(key) => {
                    let points: Vec<String> = key
                        .keys
                        .iter()
                        .map(|k| hex::encode(k.key.point()))
                        .collect();
                    let keys = points.join(",");
                    text.push_str(&format!("sigstoreSigned {keys} {}\n", key.identity));
                }
            }
        }
        Accepted {
            policy: self.policy.map(|p| p.path().to_owned()),
            scope: self.scope.clone(),
            requirements: Digest::of(text.as_bytes()),
        }
    }

    /// Whether `record` shows that these very rules accepted the image behind `top`.
    pub fn accepted(&self, record: &ImageRecord, top: &Digest) -> bool {
        (record.digest == *top || record.manifest == *top)
            && record.accepted.as_ref() == Some(&self.acceptance())
    }

    /// Checks `image`, whose reference the registry confirmed names `top`, against these
    /// rules: only the signature manifest and its payloads are fetched, and only when a
    /// requirement asks for signatures.
    pub fn check(
        &self,
        source: &dyn SignatureSource,
        image: &ImageRef,
        top: &Digest,
    ) -> Result<(), ImageError> {
        let Some(policy) = self.policy else {
            return Ok(());
        };
        let refused = |why: String| SignatureError::Refused {
            image: image.to_string(),
            policy: policy.path().to_owned(),
            scope: self.scope.clone(),
            why,
        };
        let mut found = Found {
            source,
            image,
            top,
            simple: None,
            bundles: None,
        };
        for requirement in self.requirements {
            match requirement {
                Requirement::AcceptAnything => {}
                Requirement::Reject => return Err(refused("the policy rejects it".into()).into()),
                Requirement::Sigstore(key) => {
                    found
                        .satisfy(key)?
                        .map_err(|why| refused(why.explain(key, top)))?;
                }
            }
        }
        tracing::debug!(image = %image, digest = %top, "accepted by the signature policy {} ({})", policy.path().display(), self.scope);
        Ok(())
    }
}

/// An image's signatures, fetched as requirements need them: the `.sig` tag's first, the
/// referrers' bundles only when those satisfy none (each at most once).
struct Found<'a> {
    source: &'a dyn SignatureSource,
    image: &'a ImageRef,
    top: &'a Digest,
    simple: Option<Vec<Signature>>,
    bundles: Option<Vec<Vec<u8>>>,
}

impl Found<'_> {
    /// Whether one of the signatures satisfies `key`; if not, the most telling reason.
    fn satisfy(&mut self, key: &SigstoreKey) -> Result<Result<(), Why>, ImageError> {
        if self.simple.is_none() {
            self.simple = Some(fetch_signatures(self.source, self.image, self.top)?);
        }
        let simple = self.simple.as_deref().unwrap_or_default();
        let why = match verify(key, self.image, self.top, simple) {
            Ok(()) => return Ok(Ok(())),
            Err(why) => why,
        };
        if self.bundles.is_none() {
            self.bundles = Some(fetch_bundles(self.source, self.image, self.top)?);
        }
        let bundles = self.bundles.as_deref().unwrap_or_default();
        let mut why = why;
        for b in bundles {
            match verify_bundle(key, self.image, self.top, b) {
                Ok(()) => return Ok(Ok(())),
                Err(w) => why = why.max(w),
            }
        }
        Ok(Err(why))
    }
}

/// An image in an OCI layout (`transport` `oci`) or a `docker save` archive
/// (`docker-archive`) at `path`, named `reference` in it; `name` as messages show it.
#[derive(Debug)]
pub struct LocalImage<'a> {
    pub transport: &'static str,
    pub path: &'a Path,
    pub reference: Option<&'a str>,
    pub name: String,
}

/// Checks an image read from an OCI layout or a `docker save` archive: berth finds no
/// signatures there, so only `insecureAcceptAnything` lets one in.
pub fn check_local(policy: Option<&Path>, from: &LocalImage<'_>) -> Result<(), ImageError> {
    let Some(path) = policy else {
        tracing::debug!(image = %from.name, "no signature policy: accepting the image unchecked");
        return Ok(());
    };
    let policy = Policy::load(path).map_err(SignatureError::from)?;
    let (requirements, scope) = policy.for_local(from.transport, from.path, from.reference);
    let why = requirements.iter().find_map(|r| match r {
        Requirement::AcceptAnything => None,
        Requirement::Reject => Some("the policy rejects it"),
        Requirement::Sigstore(_) => {
            Some("berth cannot check signatures of oci: and docker-archive: images")
        }
    });
    match why {
        None => Ok(()),
        Some(why) => Err(SignatureError::Refused {
            image: from.name.clone(),
            policy: policy.path().to_owned(),
            scope,
            why: why.to_owned(),
        }
        .into()),
    }
}

/// `sha256-<hex>.sig`: where cosign keeps the signatures of the image with digest `top`.
fn signature_tag(top: &Digest) -> String {
    format!("{}.sig", digest_tag(top))
}

/// The signatures stored for `top` (none when its signature tag does not exist).
fn fetch_signatures(
    source: &dyn SignatureSource,
    image: &ImageRef,
    top: &Digest,
) -> Result<Vec<Signature>, ImageError> {
    let r = ImageRef {
        tag: Some(signature_tag(top)),
        digest: None,
        ..image.clone()
    };
    // Distribution answers a tag of an OCI manifest only to a client that accepts that type;
    // the Docker type is there for signatures pushed by older tools.
    let accept = [manifest::OCI_MANIFEST, manifest::DOCKER_MANIFEST];
    let bytes = match source.small_manifest(&r, &accept, MAX_SIGNATURE_MANIFEST) {
        Ok(b) => b,
        Err(ImageError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let listed: SignatureManifest =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest {
            digest: Digest::of(&bytes),
            message: format!("signature manifest {r}: {e}"),
        })?;
    let mut signatures = Vec::new();
    let layers = listed
        .layers
        .into_iter()
        .filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE);
    for layer in layers.take(MAX_SIGNATURES) {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION).cloned() else {
            continue;
        };
        let blob = Descriptor {
            media_type: layer.media_type,
            digest: layer.digest,
            size: layer.size,
            platform: None,
        };
        match source.small_blob(&r, &blob, MAX_PAYLOAD) {
            Ok(payload) => signatures.push(Signature { payload, signature }),
            // A signature whose payload is gone signs nothing.
            Err(ImageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::debug!(image = %image, "{} signatures found under {r}", signatures.len());
    Ok(signatures)
}

/// Whether one of `signatures` satisfies `key`; if not, the most telling reason.
fn verify(
    key: &SigstoreKey,
    image: &ImageRef,
    top: &Digest,
    signatures: &[Signature],
) -> Result<(), Why> {
    let mut why = Why::NoSignature;
    for s in signatures {
        match verify_one(key, image, top, s) {
            Ok(()) => return Ok(()),
            Err(w) => why = why.max(w),
        }
    }
    Err(why)
}

fn verify_one(key: &SigstoreKey, image: &ImageRef, top: &Digest, s: &Signature) -> Result<(), Why> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(s.signature.trim())
        .map_err(|_| Why::BadSignature)?;
    if !key.verifies(&s.payload, &der) {
        return Err(Why::BadSignature);
    }
    let payload: Payload = serde_json::from_slice(&s.payload).map_err(|_| Why::NotAPayload)?;
    let critical = payload.critical;
    if critical.kind != PAYLOAD_TYPE {
        return Err(Why::NotAPayload);
    }
    if critical.image.docker_manifest_digest != top.to_string() {
        return Err(Why::WrongDigest(critical.image.docker_manifest_digest));
    }
    let signed = critical.identity.docker_reference;
    if !policy::identity_matches(&key.identity, image, &signed) {
        return Err(Why::WrongIdentity(signed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::verify::key::PublicKey;
    use crate::image::verify::policy::{NamedKey, SignedIdentity};
    use p256::ecdsa::signature::Signer as _;

    fn signer(seed: u8) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn requirement(seed: u8, identity: SignedIdentity) -> SigstoreKey {
        SigstoreKey {
            keys: vec![NamedKey {
                key: PublicKey::P256(*signer(seed).verifying_key()),
                name: format!("key {seed}"),
            }],
            identity,
        }
    }

    fn signed(seed: u8, payload: &serde_json::Value) -> Signature {
        let payload = serde_json::to_vec(payload).unwrap();
        let signature: p256::ecdsa::Signature = signer(seed).sign(&payload);
        Signature {
            signature: base64::engine::general_purpose::STANDARD
                .encode(signature.to_der().as_bytes()),
            payload,
        }
    }

    fn cosign(identity: &str, digest: &Digest) -> serde_json::Value {
        serde_json::json!({"critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE}, "optional": null})
    }

    #[test]
    fn one_good_signature_among_others_is_enough() {
        let image = ImageRef::parse("r.example/acme/app:1").unwrap();
        let top = Digest::of(b"manifest");
        let key = requirement(7, SignedIdentity::MatchRepository);
        let good = signed(7, &cosign("r.example/acme/app", &top));
        let stranger = signed(8, &cosign("r.example/acme/app", &top));
        assert_eq!(verify(&key, &image, &top, &[]), Err(Why::NoSignature));
        assert_eq!(
            verify(&key, &image, &top, std::slice::from_ref(&stranger)),
            Err(Why::BadSignature)
        );
        assert_eq!(verify(&key, &image, &top, &[stranger, good]), Ok(()));
    }

    #[test]
    fn the_payload_must_name_the_digest_and_an_accepted_identity() {
        let image = ImageRef::parse("r.example/acme/app:1").unwrap();
        let top = Digest::of(b"manifest");
        let other = Digest::of(b"another manifest");
        let key = requirement(7, SignedIdentity::MatchRepository);
        let wrong_digest = signed(7, &cosign("r.example/acme/app", &other));
        let wrong_name = signed(7, &cosign("r.example/acme/other", &top));
        assert_eq!(
            verify(&key, &image, &top, std::slice::from_ref(&wrong_digest)),
            Err(Why::WrongDigest(other.to_string()))
        );
        // The reason that got furthest is the one told.
        assert_eq!(
            verify(&key, &image, &top, &[wrong_name, wrong_digest]),
            Err(Why::WrongIdentity("r.example/acme/other".into()))
        );
        let mut not_cosign = cosign("r.example/acme/app", &top);
        not_cosign["critical"]["type"] = "atomic container signature".into();
        assert_eq!(
            verify(&key, &image, &top, &[signed(7, &not_cosign)]),
            Err(Why::NotAPayload)
        );
    }

    #[test]
    fn a_tampered_payload_or_garbled_signature_does_not_verify() {
        let image = ImageRef::parse("r.example/acme/app:1").unwrap();
        let top = Digest::of(b"manifest");
        let key = requirement(7, SignedIdentity::MatchRepository);
        let mut tampered = signed(7, &cosign("r.example/acme/app", &top));
        tampered.payload.push(b' ');
        let mut garbled = signed(7, &cosign("r.example/acme/app", &top));
        garbled.signature = "not base64!".into();
        assert_eq!(
            verify(&key, &image, &top, &[tampered, garbled]),
            Err(Why::BadSignature)
        );
    }

    #[test]
    fn signature_tags_are_cosigns() {
        let top: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(
            signature_tag(&top),
            "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.sig"
        );
    }
}
