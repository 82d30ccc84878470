//! Sigstore bundles: the signatures cosign 3 makes by default.
//!
//! `cosign sign` signs an in-toto statement (`https://in-toto.io/Statement/v1`) whose
//! predicate type is `https://sigstore.dev/cosign/sign/v1` and whose one subject carries the
//! image's digest; the signature is a DSSE envelope (payload type
//! `application/vnd.in-toto+json`), signed over DSSE's pre-authentication encoding, inside a
//! sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`). The bundle is the one
//! layer of an OCI 1.1 artifact manifest of that `artifactType` whose `subject` is the
//! image's manifest, found through the registry's referrers API
//! (`GET /v2/<name>/referrers/<digest>`) or, where the registry has none, the referrers tag
//! schema: an image index tagged `sha256-<hex>` listing them.
//!
//! Nothing the registry says is taken on its word: each listed manifest is checked against
//! its digest and must name the image as its subject, the bundle blob is checked against
//! its digest, and only what the key signed decides — the statement's subject digest and
//! predicate type. The index, the manifests, how many bundles are tried and each bundle
//! are capped. berth reads the key's signature only: no transparency log, no certificates.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::policy::{self, SigstoreKey};
use super::source::{SignatureSource, Why, digest_tag};
use crate::image::spec::ImageError;
use crate::image::spec::digest::Digest;
use crate::image::spec::manifest::{self, Descriptor};
use crate::image::spec::reference::ImageRef;

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The referrers index and each referrer's manifest: a descriptor per artifact.
const MAX_REFERRERS_DOCUMENT: u64 = 256 << 10;
/// Bundles tried at most: each costs two requests.
const MAX_BUNDLES: usize = 16;
/// A bundle is a few KiB (more with a certificate chain and a log entry's proof).
const MAX_BUNDLE: u64 = 256 << 10;
/// Signatures of one envelope tried at most (cosign makes one).
const MAX_ENVELOPE_SIGNATURES: usize = 4;

#[derive(Debug, Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Vec<Referrer>,
}

/// One entry of a referrers index. Its size is not used: the manifest is capped anyway.
#[derive(Debug, Deserialize)]
struct Referrer {
    /// A string, not a [`Digest`]: an entry of another algorithm is skipped, not an error.
    digest: String,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReferrerManifest {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<MediaTyped>,
    subject: Option<Subject>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct MediaTyped {
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

#[derive(Debug, Deserialize)]
struct Subject {
    digest: String,
}

/// A sigstore bundle, as much of it as berth reads (protobuf's JSON form).
#[derive(Debug, Deserialize)]
struct Bundle {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: Option<Envelope>,
    #[serde(rename = "messageSignature")]
    message_signature: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Debug, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    subject: Vec<StatementSubject>,
}

#[derive(Debug, Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// The sigstore bundles attached to `top` in `image`'s repository, found through the
/// referrers API or the referrers tag (none when neither lists one).
pub fn fetch_bundles(
    source: &dyn SignatureSource,
    image: &ImageRef,
    top: &Digest,
) -> Result<Vec<Vec<u8>>, ImageError> {
    let repository = ImageRef {
        tag: None,
        digest: None,
        ..image.clone()
    };
    let listed = referrers(source, &repository, top)?;
    let mut bundles = Vec::new();
    let candidates = listed
        .iter()
        .filter(|r| r.artifact_type.as_deref() == Some(BUNDLE_MEDIA_TYPE))
        .filter_map(|r| r.digest.parse::<Digest>().ok());
    for digest in candidates.take(MAX_BUNDLES) {
        if let Some(bundle) = bundle_of(source, &repository, top, &digest)? {
            bundles.push(bundle);
        }
    }
    tracing::debug!(image = %image, "{} sigstore bundles attached to {top}", bundles.len());
    Ok(bundles)
}

/// What refers to `top`: the referrers API's answer, else the referrers tag's index.
fn referrers(
    source: &dyn SignatureSource,
    repository: &ImageRef,
    top: &Digest,
) -> Result<Vec<Referrer>, ImageError> {
    let (bytes, from) = match source.referrers(repository, top, MAX_REFERRERS_DOCUMENT)? {
        Some(bytes) => (bytes, format!("the referrers of {top}")),
        None => {
            let tagged = ImageRef {
                tag: Some(digest_tag(top)),
                ..repository.clone()
            };
            let accept = [manifest::OCI_INDEX];
            match source.small_manifest(&tagged, &accept, MAX_REFERRERS_DOCUMENT) {
                Ok(bytes) => (bytes, format!("referrers index {tagged}")),
                Err(ImageError::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
    };
    let index: ReferrersIndex =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest {
            digest: Digest::of(&bytes),
            message: format!("{from}: {e}"),
        })?;
    Ok(index.manifests)
}

/// The bundle of the referrer manifest `digest`, if it is a sigstore bundle attached to
/// `top` (a listing the registry keeps, or a stale tag, may name anything).
fn bundle_of(
    source: &dyn SignatureSource,
    repository: &ImageRef,
    top: &Digest,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, ImageError> {
    let pinned = ImageRef {
        digest: Some(digest.clone()),
        ..repository.clone()
    };
    let bytes =
        match source.small_manifest(&pinned, &[manifest::OCI_MANIFEST], MAX_REFERRERS_DOCUMENT) {
            Ok(b) => b,
            // Listed, but gone since: it attaches nothing.
            Err(ImageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(ImageError::DigestMismatch {
            what: format!("referrer manifest of {pinned}"),
            expected: digest.clone(),
            actual,
        });
    }
    let referrer: ReferrerManifest =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::BadManifest {
            digest: digest.clone(),
            message: format!("referrer manifest {pinned}: {e}"),
        })?;
    let artifact_type = referrer
        .artifact_type
        .or_else(|| referrer.config.map(|c| c.media_type));
    let attached = referrer
        .subject
        .is_some_and(|s| s.digest == top.to_string());
    if artifact_type.as_deref() != Some(BUNDLE_MEDIA_TYPE) || !attached {
        tracing::debug!("{pinned} is not a sigstore bundle attached to {top}: skipped");
        return Ok(None);
    }
    let Some(layer) = referrer
        .layers
        .into_iter()
        .find(|l| l.media_type == BUNDLE_MEDIA_TYPE)
    else {
        return Ok(None);
    };
    match source.small_blob(repository, &layer, MAX_BUNDLE) {
        Ok(bundle) => Ok(Some(bundle)),
        Err(ImageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `bytes`, a sigstore bundle attached to `top`, satisfies `key` for `image`.
pub fn verify_bundle(
    key: &SigstoreKey,
    image: &ImageRef,
    top: &Digest,
    bytes: &[u8],
) -> Result<(), Why> {
    let bundle: Bundle = serde_json::from_slice(bytes)
        .map_err(|e| Why::NotABundle(format!("not a sigstore bundle ({e})")))?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(Why::NotABundle(format!(
            "its media type is {:?}, not {BUNDLE_MEDIA_TYPE}",
            bundle.media_type
        )));
    }
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(match bundle.message_signature {
            Some(_) => Why::MessageSignature,
            None => Why::NotABundle("it holds no signature".into()),
        });
    };
    let payload = verified_payload(key, &envelope)?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(Why::NotAStatement(format!(
            "a payload of type {}",
            envelope.payload_type
        )));
    }
    check_statement(key, image, top, &payload)
}

/// The envelope's payload, once one of its signatures verifies with `key`.
fn verified_payload(key: &SigstoreKey, envelope: &Envelope) -> Result<Vec<u8>, Why> {
    let payload = decode_base64(&envelope.payload).ok_or(Why::BadSignature)?;
    let signed = pae(&envelope.payload_type, &payload);
    let verified = envelope
        .signatures
        .iter()
        .take(MAX_ENVELOPE_SIGNATURES)
        .filter_map(|s| decode_base64(&s.sig))
        .any(|der| key.verifies(&signed, &der));
    if verified {
        Ok(payload)
    } else {
        Err(Why::BadSignature)
    }
}

/// What the signed statement says: a cosign signature of `top`, for a name `key` accepts.
fn check_statement(
    key: &SigstoreKey,
    image: &ImageRef,
    top: &Digest,
    payload: &[u8],
) -> Result<(), Why> {
    let statement: Statement = serde_json::from_slice(payload)
        .map_err(|_| Why::NotAStatement("something other than an in-toto statement".into()))?;
    if statement.kind != STATEMENT_TYPE {
        return Err(Why::NotAStatement(format!(
            "an in-toto statement of type {}",
            statement.kind
        )));
    }
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        return Err(Why::NotAStatement(format!(
            "a statement of predicate type {}",
            statement.predicate_type
        )));
    }
    let signed: Vec<&String> = statement
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256"))
        .collect();
    if !signed.iter().any(|hex| hex.eq_ignore_ascii_case(top.hex())) {
        let named = signed.first().map_or_else(
            || "no sha256 digest".to_owned(),
            |hex| format!("sha256:{hex}"),
        );
        return Err(Why::WrongDigest(named));
    }
    // The statement names no repository: the bundle stands for the one it is attached in.
    let repository = format!("{}/{}", image.registry, image.repository);
    if !policy::identity_matches(&key.identity, image, &repository) {
        return Err(Why::UnnamedBundle(repository));
    }
    Ok(())
}

/// The fuzz target's entry (`fuzz/fuzz_targets/sigstore_bundle.rs`): `bytes` as a bundle a
/// registry served, checked with `key` (no fuzzed signature verifies, so this reaches the
/// parsing of bundle, envelope, base64 and DER), and as the statement of an envelope that
/// verified, checked for `image` at `top`.
#[cfg(feature = "fuzzing")]
pub fn fuzz_bundle(key: &SigstoreKey, image: &ImageRef, top: &Digest, bytes: &[u8]) {
    for outcome in [
        verify_bundle(key, image, top, bytes),
        check_statement(key, image, top, bytes),
    ] {
        if let Err(why) = outcome {
            drop(why.explain(key, top));
        }
    }
}

/// DSSE's pre-authentication encoding: what an envelope's signatures sign.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// DSSE allows standard and URL-safe base64, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text.trim()).ok())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;
    use crate::image::verify::key::PublicKey;
    use crate::image::verify::policy::{NamedKey, SignedIdentity};
    use p256::ecdsa::signature::Signer as _;
    use serde_json::json;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn signer(seed: u8) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn requirement(seeds: &[u8], identity: SignedIdentity) -> SigstoreKey {
        let keys = seeds
            .iter()
            .map(|seed| NamedKey {
                key: PublicKey::P256(*signer(*seed).verifying_key()),
                name: format!("key {seed}"),
            })
            .collect();
        SigstoreKey { keys, identity }
    }

    fn statement(digest: &Digest, predicate: &str) -> serde_json::Value {
        json!({"_type": STATEMENT_TYPE, "predicateType": predicate, "predicate": {},
               "subject": [{"digest": {"sha256": digest.hex()}}]})
    }

    /// A bundle as cosign 3 makes it: `payload` in a DSSE envelope signed by `seed`.
    fn bundle(seed: u8, payload_type: &str, payload: &[u8]) -> serde_json::Value {
        let sig: p256::ecdsa::Signature = signer(seed).sign(&pae(payload_type, payload));
        json!({"mediaType": BUNDLE_MEDIA_TYPE,
               "verificationMaterial": {"publicKey": {"hint": "aGludA=="}, "tlogEntries": []},
               "dsseEnvelope": {"payload": B64.encode(payload), "payloadType": payload_type,
                                "signatures": [{"sig": B64.encode(sig.to_der().as_bytes()),
                                                "keyid": ""}]}})
    }

    fn cosign_bundle(seed: u8, digest: &Digest) -> serde_json::Value {
        let payload = serde_json::to_vec(&statement(digest, COSIGN_SIGN_PREDICATE)).unwrap();
        bundle(seed, IN_TOTO_PAYLOAD_TYPE, &payload)
    }

    fn check(
        key: &SigstoreKey,
        image: &str,
        top: &Digest,
        b: &serde_json::Value,
    ) -> Result<(), Why> {
        let image = ImageRef::parse(image).unwrap();
        verify_bundle(key, &image, top, &serde_json::to_vec(b).unwrap())
    }

    #[test]
    fn the_pre_authentication_encoding_is_dsses() {
        assert_eq!(
            pae("application/vnd.in-toto+json", b"{}"),
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
        );
    }

    #[test]
    fn a_cosign_bundle_of_the_digest_verifies_with_any_of_the_keys() {
        let top = Digest::of(b"manifest");
        let by_repository = requirement(&[1, 7], SignedIdentity::MatchRepository);
        let b = cosign_bundle(7, &top);
        assert_eq!(
            check(&by_repository, "r.example/acme/app:1", &top, &b),
            Ok(())
        );
        // A bundle names no repository: it stands for the one it is attached in, which a
        // tag's default identity (matchRepoDigestOrExact) does not accept, a digest's does.
        let default = requirement(&[7], SignedIdentity::MatchRepoDigestOrExact);
        assert_eq!(
            check(&default, "r.example/acme/app:1", &top, &b),
            Err(Why::UnnamedBundle("r.example/acme/app".into()))
        );
        let pinned = format!("r.example/acme/app@{top}");
        assert_eq!(check(&default, &pinned, &top, &b), Ok(()));
        let elsewhere = SignedIdentity::ExactRepository {
            docker_repository: "upstream.example/acme/app".into(),
        };
        assert!(matches!(
            check(
                &requirement(&[7], elsewhere),
                "r.example/acme/app:1",
                &top,
                &b
            ),
            Err(Why::UnnamedBundle(_))
        ));
    }

    #[test]
    fn forged_or_foreign_bundles_are_refused() {
        let top = Digest::of(b"manifest");
        let key = requirement(&[7], SignedIdentity::MatchRepository);
        let check = |b: &serde_json::Value| check(&key, "r.example/acme/app:1", &top, b);
        assert_eq!(check(&cosign_bundle(8, &top)), Err(Why::BadSignature));
        let other = Digest::of(b"another manifest");
        assert_eq!(
            check(&cosign_bundle(7, &other)),
            Err(Why::WrongDigest(other.to_string()))
        );
        // The payload changed after signing: the signature no longer covers it.
        let mut tampered = cosign_bundle(7, &other);
        let forged = serde_json::to_vec(&statement(&top, COSIGN_SIGN_PREDICATE)).unwrap();
        tampered["dsseEnvelope"]["payload"] = B64.encode(&forged).into();
        assert_eq!(check(&tampered), Err(Why::BadSignature));
        // So did the payload type, which the signature covers too.
        let mut retyped = cosign_bundle(7, &top);
        retyped["dsseEnvelope"]["payloadType"] = "application/json".into();
        assert_eq!(check(&retyped), Err(Why::BadSignature));
        let mut garbled = cosign_bundle(7, &top);
        garbled["dsseEnvelope"]["signatures"][0]["sig"] = B64.encode(b"not a signature").into();
        assert_eq!(check(&garbled), Err(Why::BadSignature));
        // Signed by the key, but not a cosign signature: an attestation says something else.
        let provenance = statement(&top, "https://slsa.dev/provenance/v1");
        let attestation = bundle(
            7,
            IN_TOTO_PAYLOAD_TYPE,
            &serde_json::to_vec(&provenance).unwrap(),
        );
        assert!(matches!(check(&attestation), Err(Why::NotAStatement(p)) if p.contains("slsa")));
        let plain = bundle(
            7,
            "application/json",
            &serde_json::to_vec(&provenance).unwrap(),
        );
        assert!(matches!(check(&plain), Err(Why::NotAStatement(_))));
        let message = json!({"mediaType": BUNDLE_MEDIA_TYPE, "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": "AAAA"}, "signature": "AAAA"}});
        assert_eq!(check(&message), Err(Why::MessageSignature));
        let mut old = cosign_bundle(7, &top);
        old["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
        assert!(matches!(check(&old), Err(Why::NotABundle(_))));
        let image = ImageRef::parse("r.example/acme/app:1").unwrap();
        assert!(matches!(
            verify_bundle(&key, &image, &top, b"not json"),
            Err(Why::NotABundle(_))
        ));
    }

    /// A registry as the signature check reads it: documents by tag or digest, blobs, and
    /// the referrers API's answer (`None`: it has none). Remembers what was asked.
    #[derive(Default)]
    struct FakeSource {
        manifests: HashMap<String, Vec<u8>>,
        blobs: HashMap<Digest, Vec<u8>>,
        api: Option<Vec<u8>>,
        asked: RefCell<Vec<String>>,
    }

    impl FakeSource {
        fn not_found(what: String) -> ImageError {
            ImageError::NotFound { reference: what }
        }
    }

    impl SignatureSource for FakeSource {
        fn small_manifest(&self, r: &ImageRef, _: &[&str], _: u64) -> Result<Vec<u8>, ImageError> {
            let key = match (&r.digest, &r.tag) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.clone(),
                (None, None) => "latest".into(),
            };
            self.asked.borrow_mut().push(key.clone());
            self.manifests
                .get(&key)
                .cloned()
                .ok_or_else(|| Self::not_found(key))
        }

        fn small_blob(
            &self,
            _: &ImageRef,
            blob: &Descriptor,
            _: u64,
        ) -> Result<Vec<u8>, ImageError> {
            self.asked
                .borrow_mut()
                .push(format!("blob {}", blob.digest));
            let bytes = self.blobs.get(&blob.digest).cloned();
            bytes.ok_or_else(|| Self::not_found(blob.digest.to_string()))
        }

        fn referrers(
            &self,
            _: &ImageRef,
            s: &Digest,
            _: u64,
        ) -> Result<Option<Vec<u8>>, ImageError> {
            self.asked.borrow_mut().push(format!("referrers {s}"));
            Ok(self.api.clone())
        }
    }

    impl FakeSource {
        /// Adds `bundle` as a referrer manifest attached to `subject`; returns the index
        /// entry listing it.
        fn attach(&mut self, subject: &Digest, bundle: &serde_json::Value) -> serde_json::Value {
            let bytes = serde_json::to_vec(bundle).unwrap();
            let blob = Digest::of(&bytes);
            self.blobs.insert(blob.clone(), bytes.clone());
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
                "artifactType": BUNDLE_MEDIA_TYPE,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                           "digest": Digest::of(b"{}"), "size": 2},
                "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": blob, "size": bytes.len()}],
                "subject": {"mediaType": manifest::OCI_MANIFEST, "digest": subject, "size": 1},
            }))
            .unwrap();
            let digest = Digest::of(&manifest);
            self.manifests.insert(digest.to_string(), manifest.clone());
            json!({"mediaType": manifest::OCI_MANIFEST, "digest": digest,
                   "size": manifest.len(), "artifactType": BUNDLE_MEDIA_TYPE})
        }
    }

    fn index(entries: &[serde_json::Value]) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX,
                                   "manifests": entries}),
        )
        .unwrap()
    }

    fn image() -> ImageRef {
        ImageRef::parse("r.example/acme/app:1").unwrap()
    }

    #[test]
    fn the_referrers_api_is_asked_first_and_its_answer_is_all_there_is() {
        let top = Digest::of(b"manifest");
        let mut source = FakeSource::default();
        let entry = source.attach(&top, &cosign_bundle(7, &top));
        source.api = Some(index(&[entry]));
        // A tag schema index the API's answer makes irrelevant.
        source
            .manifests
            .insert(digest_tag(&top), b"garbage".to_vec());
        let bundles = fetch_bundles(&source, &image(), &top).unwrap();
        assert_eq!(bundles.len(), 1);
        let key = requirement(&[7], SignedIdentity::MatchRepository);
        assert_eq!(verify_bundle(&key, &image(), &top, &bundles[0]), Ok(()));
        assert!(!source.asked.borrow().contains(&digest_tag(&top)));
    }

    #[test]
    fn without_a_referrers_api_the_tag_schema_lists_them() {
        let top = Digest::of(b"manifest");
        let mut source = FakeSource::default();
        assert!(fetch_bundles(&source, &image(), &top).unwrap().is_empty());
        let entry = source.attach(&top, &cosign_bundle(7, &top));
        source.manifests.insert(digest_tag(&top), index(&[entry]));
        assert_eq!(fetch_bundles(&source, &image(), &top).unwrap().len(), 1);
        assert_eq!(
            source.asked.borrow()[..3],
            [
                format!("referrers {top}"),
                digest_tag(&top),
                format!("referrers {top}")
            ]
        );
    }

    #[test]
    fn what_the_listing_claims_is_checked() {
        let top = Digest::of(b"manifest");
        let other = Digest::of(b"another manifest");
        let mut source = FakeSource::default();
        // Attached to another manifest: skipped, its bundle never fetched.
        let elsewhere = source.attach(&other, &cosign_bundle(7, &top));
        // Not a bundle: not even its manifest is fetched.
        let mut sbom = source.attach(&top, &cosign_bundle(7, &top));
        sbom["artifactType"] = "application/spdx+json".into();
        // Listed, but gone.
        let mut gone = source.attach(&top, &cosign_bundle(7, &top));
        gone["digest"] = Digest::of(b"gone").to_string().into();
        let sha512 = json!({"digest": "sha512:abcd", "artifactType": BUNDLE_MEDIA_TYPE});
        source.api = Some(index(&[elsewhere.clone(), sbom.clone(), gone, sha512]));
        assert!(fetch_bundles(&source, &image(), &top).unwrap().is_empty());
        let asked = source.asked.borrow().clone();
        assert!(asked.contains(&elsewhere["digest"].as_str().unwrap().to_owned()));
        assert!(!asked.contains(&sbom["digest"].as_str().unwrap().to_owned()));
        assert!(!asked.iter().any(|a| a.starts_with("blob")), "{asked:?}");

        // A manifest that is not what its digest says is the registry lying: an error.
        let mut source = FakeSource::default();
        let entry = source.attach(&top, &cosign_bundle(7, &top));
        let listed = entry["digest"].as_str().unwrap().to_owned();
        source
            .manifests
            .insert(listed, b"{\"layers\": []}".to_vec());
        source.api = Some(index(&[entry]));
        let e = fetch_bundles(&source, &image(), &top).unwrap_err();
        assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn bundles_tried_are_capped() {
        let top = Digest::of(b"manifest");
        let mut source = FakeSource::default();
        let entries: Vec<_> = (0..MAX_BUNDLES + 5)
            .map(|i| {
                let mut b = cosign_bundle(7, &top);
                b["verificationMaterial"]["n"] = i.into();
                source.attach(&top, &b)
            })
            .collect();
        source.api = Some(index(&entries));
        assert_eq!(
            fetch_bundles(&source, &image(), &top).unwrap().len(),
            MAX_BUNDLES
        );
    }
}
