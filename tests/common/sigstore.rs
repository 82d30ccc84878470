//! Cosign signatures made independently of berth: keys and signatures by openssl, sigstore
//! bundles built from the published formats (the sigstore bundle v0.3 JSON, DSSE's
//! pre-authentication encoding, an in-toto statement v1), and pushed to the test registry
//! with curl as cosign lays them out: a `.sig` tag, or a referrer manifest listed under the
//! referrers tag schema's `sha256-<hex>` index (Distribution 2 has no referrers API).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::{registry, sha256};

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An ECDSA key pair made by openssl, in `dir`.
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
    /// The hash cosign signs with on this curve: `-sha256` (P-256) or `-sha384` (P-384).
    pub hash: &'static str,
}

pub fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Key {
    /// A P-256 key, as `cosign generate-key-pair` makes.
    pub fn new(dir: &Path, name: &str) -> Key {
        Key::on_curve(dir, name, "prime256v1", "-sha256")
    }

    /// A P-384 key (cosign signs with SHA-384 there).
    pub fn p384(dir: &Path, name: &str) -> Key {
        Key::on_curve(dir, name, "secp384r1", "-sha384")
    }

    fn on_curve(dir: &Path, name: &str, curve: &str, hash: &'static str) -> Key {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let p = private.to_str().unwrap();
        openssl(&["ecparam", "-name", curve, "-genkey", "-noout", "-out", p]);
        openssl(&[
            "pkey",
            "-in",
            p,
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ]);
        Key {
            private,
            public,
            hash,
        }
    }

    /// The DER ECDSA signature of `payload` with the curve's hash.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.sign_with(self.hash, payload)
    }

    /// The DER ECDSA signature of `payload` over `hash` (`-sha256`, `-sha384`), checked
    /// with openssl before use.
    pub fn sign_with(&self, hash: &str, payload: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (data, sig) = (dir.path().join("payload"), dir.path().join("sig"));
        fs::write(&data, payload).unwrap();
        let (d, s) = (data.to_str().unwrap(), sig.to_str().unwrap());
        let private = self.private.to_str().unwrap();
        openssl(&["dgst", hash, "-sign", private, "-out", s, d]);
        let public = self.public.to_str().unwrap();
        let out = openssl(&["dgst", hash, "-verify", public, "-signature", s, d]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");
        fs::read(&sig).unwrap()
    }
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The in-toto statement `cosign sign` signs: its one subject is the image's digest.
pub fn cosign_statement(digest: &str) -> Value {
    statement(digest, COSIGN_SIGN_PREDICATE)
}

/// An in-toto statement v1 of `predicate_type` about `digest` (`sha256:<hex>`).
pub fn statement(digest: &str, predicate_type: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": {},
    })
}

/// DSSE's pre-authentication encoding of `payload`: what the envelope's signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A sigstore bundle v0.3 holding `statement` in a DSSE envelope signed with `key`, with
/// the verification material cosign writes for a key (its hint; a log entry berth does not
/// read is left out).
pub fn bundle(key: &Key, statement: &Value) -> Value {
    let payload = serde_json::to_vec(statement).unwrap();
    let signature = key.sign(&pae(IN_TOTO, &payload));
    let public = key.public.to_str().unwrap();
    let der = openssl(&["pkey", "-pubin", "-in", public, "-outform", "DER"]).stdout;
    let hint = hex::decode(sha256(&der)).unwrap();
    json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": base64_encode(&hint)}},
        "dsseEnvelope": {
            "payload": base64_encode(&payload),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": base64_encode(&signature), "keyid": ""}],
        },
    })
}

pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-fsS")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Uploads `bytes` as a blob of `repo` (plain HTTP: start an upload, then PUT it whole).
pub fn put_blob(repo: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256(bytes));
    let url = format!("http://{}/v2/{repo}/blobs/uploads/", registry());
    let headers = curl(&["-X", "POST", "-D", "-", "-o", "/dev/null", &url]);
    let location = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .expect("an upload location");
    let location = if location.starts_with('/') {
        format!("http://{}{location}", registry())
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), bytes).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        "-o",
        "/dev/null",
        &format!("{location}{sep}digest={digest}"),
    ]);
    digest
}

/// PUTs `bytes` of `media_type` as the manifest `reference` (a tag or digest) of `repo`.
pub fn put_manifest(repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), bytes).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.path().display()),
        "-o",
        "/dev/null",
        &format!("http://{}/v2/{repo}/manifests/{reference}", registry()),
    ]);
}

/// The manifest `reference` of `repo` as the registry serves it to an OCI client.
pub fn get_manifest(repo: &str, reference: &str, media_type: &str) -> Option<Vec<u8>> {
    let url = format!("http://{}/v2/{repo}/manifests/{reference}", registry());
    let out = Command::new("curl")
        .args(["-fsS", "-H", &format!("Accept: {media_type}"), &url])
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Attaches `bundle` to the manifest `subject` of `repo` as cosign 3 does on a registry
/// without the referrers API: the bundle blob, an empty config, an OCI 1.1 artifact
/// manifest of the bundle's `artifactType` whose `subject` is the image, pushed by digest,
/// then listed in the image index tagged `sha256-<hex>` of the subject (created or
/// extended). Returns the referrer manifest's digest.
pub fn attach_bundle(repo: &str, subject: &str, bundle: &Value) -> String {
    let image = get_manifest(repo, subject, OCI_MANIFEST).expect("the subject manifest");
    assert_eq!(format!("sha256:{}", sha256(&image)), subject);
    let bundle = serde_json::to_vec(bundle).unwrap();
    let bundle_digest = put_blob(repo, &bundle);
    let empty = put_blob(repo, b"{}");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": bundle_digest,
                    "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": image.len()},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                        "dev.sigstore.bundle.predicateType": COSIGN_SIGN_PREDICATE},
    }))
    .unwrap();
    let digest = format!("sha256:{}", sha256(&manifest));
    put_manifest(repo, &digest, OCI_MANIFEST, &manifest);
    list_referrer(repo, subject, &digest, manifest.len());
    digest
}

/// Adds the referrer manifest `digest` to the referrers tag schema's index of `subject`.
pub fn list_referrer(repo: &str, subject: &str, digest: &str, size: usize) {
    let tag = subject.replacen(':', "-", 1);
    let mut index = match get_manifest(repo, &tag, OCI_INDEX) {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap(),
        None => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    };
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_MANIFEST, "digest": digest, "size": size,
        "artifactType": BUNDLE_MEDIA_TYPE,
    }));
    put_manifest(repo, &tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap());
}
