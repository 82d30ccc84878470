//! The signature policy: containers' own `policy.json` (containers-policy.json(5)).
//!
//! Parsed as strictly as containers/image parses it: an unknown field or requirement type
//! rejects the whole file, so an operator who wrote `signedBy` (GPG, which berth cannot
//! check) is told so instead of having the requirement silently ignored. The requirements
//! for an image are those of its most specific scope under its transport, else the
//! transport's `""` scope, else `default`; every one of them must be satisfied.
//!
//! Scopes (most specific first):
//! - `docker`: `host[:port]/repo:tag` (or `@digest`), `host[:port]/repo`, each namespace
//!   above the repository, `host[:port]`, then `*.domain` wildcards of the host name;
//! - `oci` and `docker-archive`: `path:ref`, `path`, then each parent directory but `/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::key::PublicKey;

use crate::image::spec::reference::ImageRef;
use crate::image::spec::{MAX_POLICY_BYTES, PolicyError};

/// A PEM public key is a few hundred bytes.
const MAX_KEY_BYTES: u64 = 64 << 10;

/// One requirement as written in the file.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawRequirement {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything,
    #[serde(rename = "reject")]
    Reject,
    #[serde(rename = "sigstoreSigned", rename_all = "camelCase")]
    SigstoreSigned {
        key_path: Option<PathBuf>,
        key_paths: Option<Vec<PathBuf>>,
        key_data: Option<String>,
        key_datas: Option<Vec<String>>,
        signed_identity: Option<SignedIdentity>,
    },
    /// Parsed only to refuse it by name: berth checks no GPG signatures.
    #[serde(rename = "signedBy", rename_all = "camelCase")]
    SignedBy {
        #[serde(rename = "keyType")]
        _key_type: Option<serde_json::Value>,
        #[serde(rename = "keyPath")]
        _key_path: Option<serde_json::Value>,
        #[serde(rename = "keyPaths")]
        _key_paths: Option<serde_json::Value>,
        #[serde(rename = "keyData")]
        _key_data: Option<serde_json::Value>,
        #[serde(rename = "signedIdentity")]
        _signed_identity: Option<serde_json::Value>,
    },
}

type RawScopes = BTreeMap<String, Vec<RawRequirement>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<RawRequirement>,
    #[serde(default)]
    transports: BTreeMap<String, RawScopes>,
}

/// What the signature must claim about the image's name (`signedIdentity`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SignedIdentity {
    #[serde(rename = "matchExact")]
    MatchExact,
    #[serde(rename = "matchRepoDigestOrExact")]
    MatchRepoDigestOrExact,
    #[serde(rename = "matchRepository")]
    MatchRepository,
    #[serde(rename = "exactReference", rename_all = "camelCase")]
    ExactReference { docker_reference: String },
    #[serde(rename = "exactRepository", rename_all = "camelCase")]
    ExactRepository { docker_repository: String },
}

impl std::fmt::Display for SignedIdentity {
    /// As written in the policy file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedIdentity::MatchExact => f.write_str("matchExact"),
            SignedIdentity::MatchRepoDigestOrExact => f.write_str("matchRepoDigestOrExact"),
            SignedIdentity::MatchRepository => f.write_str("matchRepository"),
            SignedIdentity::ExactReference { docker_reference } => {
                write!(f, "exactReference {docker_reference}")
            }
            SignedIdentity::ExactRepository { docker_repository } => {
                write!(f, "exactRepository {docker_repository}")
            }
        }
    }
}

/// A requirement ready to check.
#[derive(Debug, Clone)]
pub enum Requirement {
    AcceptAnything,
    Reject,
    Sigstore(SigstoreKey),
}

/// A `sigstoreSigned` requirement: the keys a signature must verify with (any one of
/// them), and the name it must claim.
#[derive(Debug, Clone)]
pub struct SigstoreKey {
    pub keys: Vec<NamedKey>,
    pub identity: SignedIdentity,
}

/// One trusted key, and where it came from.
#[derive(Debug, Clone)]
pub struct NamedKey {
    pub key: PublicKey,
    /// The key file, or `keyData`, for messages.
    pub name: String,
}

impl SigstoreKey {
    /// The keys' names, for messages: `a.pub`, or `a.pub or b.pub`.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        names.join(" or ")
    }

    /// Whether `der` signs `message` with one of the keys.
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        self.keys.iter().any(|k| k.key.verifies(message, der))
    }
}

/// A loaded policy file.
#[derive(Debug)]
pub struct Policy {
    path: PathBuf,
    default: Vec<Requirement>,
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// Where podman and the other containers tools read the system's policy.
pub const SYSTEM_POLICY: &str = "/etc/containers/policy.json";

/// The policy in force: `flag` if given, else the first of `<home>/policy.json` and
/// `system` (the system's, [`SYSTEM_POLICY`], as podman reads it) that exists; and the
/// files looked for, for messages.
pub fn locate(flag: Option<&Path>, home: &Path, system: &Path) -> SignaturePolicy {
    if let Some(f) = flag {
        let f = std::path::absolute(f).unwrap_or_else(|_| f.to_owned());
        return SignaturePolicy {
            path: Some(f.clone()),
            looked: vec![f],
        };
    }
    let looked = vec![home.join("policy.json"), system.to_owned()];
    let path = looked.iter().find(|p| p.exists()).cloned();
    SignaturePolicy { path, looked }
}

/// The signature policy in force, as [`locate`] found it.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    /// The policy file images must satisfy; `None`: every image is accepted.
    pub path: Option<PathBuf>,
    /// Where berth looked for one (for messages when it found none).
    pub looked: Vec<PathBuf>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        use std::io::Read as _;
        let read_err = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                path: path.to_owned(),
            });
        }
        Policy::parse(path, &bytes)
    }

    /// Parses the file's `bytes`; `path` names it in errors and resolves nothing.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawPolicy =
            serde_path_to_error::deserialize(de).map_err(|source| PolicyError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let default = requirements(path, "default", raw.default)?;
        let mut transports = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            let mut checked = BTreeMap::new();
            for (scope, reqs) in scopes {
                let name = format!("transports.{transport}.{scope:?}");
                checked.insert(scope, requirements(path, &name, reqs)?);
            }
            transports.insert(transport, checked);
        }
        Ok(Policy {
            path: path.to_owned(),
            default,
            transports,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The requirements for an image in a registry, with the scope they come from.
    pub fn for_docker(&self, image: &ImageRef) -> (&[Requirement], String) {
        self.lookup("docker", &docker_scopes(image))
    }

    /// The requirements for an image in an OCI layout (`transport` `oci`) or a
    /// `docker save` archive (`docker-archive`) at `path`, named `reference` in it.
    pub fn for_local(
        &self,
        transport: &str,
        path: &Path,
        reference: Option<&str>,
    ) -> (&[Requirement], String) {
        self.lookup(transport, &local_scopes(path, reference))
    }

    fn lookup(&self, transport: &str, scopes: &[String]) -> (&[Requirement], String) {
        if let Some(by_scope) = self.transports.get(transport) {
            for scope in scopes.iter().map(String::as_str).chain([""]) {
                if let Some(reqs) = by_scope.get(scope) {
                    return (reqs, format!("transports.{transport}.{scope:?}"));
                }
            }
        }
        (&self.default, "default".to_owned())
    }
}

fn requirements(
    path: &Path,
    scope: &str,
    raw: Vec<RawRequirement>,
) -> Result<Vec<Requirement>, PolicyError> {
    let invalid = |message: &str| PolicyError::Invalid {
        path: path.to_owned(),
        scope: scope.to_owned(),
        message: message.to_owned(),
    };
    if raw.is_empty() {
        return Err(invalid(
            "no requirements (write [{\"type\": \"insecureAcceptAnything\"}] to accept anything)",
        ));
    }
    raw.into_iter()
        .map(|r| match r {
            RawRequirement::InsecureAcceptAnything => Ok(Requirement::AcceptAnything),
            RawRequirement::Reject => Ok(Requirement::Reject),
            RawRequirement::SignedBy { .. } => Err(invalid(
                "berth cannot check \"signedBy\" (GPG simple signing) requirements; \
                 use \"sigstoreSigned\" with a cosign key",
            )),
            RawRequirement::SigstoreSigned {
                key_path,
                key_paths,
                key_data,
                key_datas,
                signed_identity,
            } => {
                let sources = KeySources {
                    key_path,
                    key_paths,
                    key_data,
                    key_datas,
                };
                Ok(Requirement::Sigstore(SigstoreKey {
                    keys: read_keys(path, scope, sources)?,
                    identity: signed_identity.unwrap_or(SignedIdentity::MatchRepoDigestOrExact),
                }))
            }
        })
        .collect()
}

/// Where a `sigstoreSigned` requirement's keys are: exactly one of these is given.
struct KeySources {
    key_path: Option<PathBuf>,
    key_paths: Option<Vec<PathBuf>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
}

/// A key as given: a file, or the base64 of its PEM.
enum KeySource {
    Path(PathBuf),
    Data(String),
}

/// The public keys of a `sigstoreSigned` requirement: `keyPath`, `keyPaths`, `keyData` or
/// `keyDatas` (exactly one, a list not empty), as containers-policy.json(5) has them.
fn read_keys(path: &Path, scope: &str, given: KeySources) -> Result<Vec<NamedKey>, PolicyError> {
    let invalid = |message: &str| PolicyError::Invalid {
        path: path.to_owned(),
        scope: scope.to_owned(),
        message: message.to_owned(),
    };
    let sources: Vec<KeySource> = match given {
        KeySources {
            key_path: Some(file),
            key_paths: None,
            key_data: None,
            key_datas: None,
        } => vec![KeySource::Path(file)],
        KeySources {
            key_path: None,
            key_paths: Some(files),
            key_data: None,
            key_datas: None,
        } => files.into_iter().map(KeySource::Path).collect(),
        KeySources {
            key_path: None,
            key_paths: None,
            key_data: Some(data),
            key_datas: None,
        } => vec![KeySource::Data(data)],
        KeySources {
            key_path: None,
            key_paths: None,
            key_data: None,
            key_datas: Some(datas),
        } => datas.into_iter().map(KeySource::Data).collect(),
        _ => {
            return Err(invalid(
                "sigstoreSigned needs exactly one of keyPath, keyPaths, keyData and keyDatas",
            ));
        }
    };
    if sources.is_empty() {
        return Err(invalid("sigstoreSigned lists no keys"));
    }
    sources
        .into_iter()
        .map(|source| read_key(path, scope, source))
        .collect()
}

/// One public key, from its file or from the base64 of its PEM.
fn read_key(path: &Path, scope: &str, source: KeySource) -> Result<NamedKey, PolicyError> {
    let invalid = |message: &str| PolicyError::Invalid {
        path: path.to_owned(),
        scope: scope.to_owned(),
        message: message.to_owned(),
    };
    let (pem, name) = match source {
        KeySource::Path(file) => {
            let pem = read_key_file(&file).map_err(|source| PolicyError::KeyRead {
                path: path.to_owned(),
                scope: scope.to_owned(),
                key: file.clone(),
                source,
            })?;
            (pem, file.display().to_string())
        }
        KeySource::Data(data) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| invalid("keyData is not base64"))?;
            (pem, "keyData".to_owned())
        }
    };
    let pem =
        String::from_utf8(pem).map_err(|_| invalid(&format!("the key {name} is not PEM text")))?;
    let key = PublicKey::from_pem(pem.trim()).map_err(|source| PolicyError::Key {
        path: path.to_owned(),
        scope: scope.to_owned(),
        key: name.clone(),
        source: Box::new(source),
    })?;
    Ok(NamedKey { key, name })
}

fn read_key_file(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_KEY_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `docker` scopes of `image`, most specific first (without `""`).
fn docker_scopes(image: &ImageRef) -> Vec<String> {
    let repo = format!("{}/{}", image.registry, image.repository);
    let mut scopes = Vec::new();
    if let Some(t) = &image.tag {
        scopes.push(format!("{repo}:{t}"));
    }
    if let Some(d) = &image.digest {
        scopes.push(format!("{repo}@{d}"));
    }
    let mut prefix = repo.as_str();
    scopes.push(prefix.to_owned());
    while let Some((up, _)) = prefix.rsplit_once('/') {
        scopes.push(up.to_owned());
        prefix = up;
    }
    // `*.example.com` matches every subdomain of example.com: a host name, not an address.
    let host = &image.registry;
    if !host.contains(':') && host.parse::<std::net::IpAddr>().is_err() {
        let mut rest = host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            scopes.push(format!("*.{parent}"));
            rest = parent;
        }
    }
    scopes
}

/// `oci` / `docker-archive` scopes of the image at `path`, most specific first.
fn local_scopes(path: &Path, reference: Option<&str>) -> Vec<String> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut scopes = Vec::new();
    if let Some(r) = reference {
        scopes.push(format!("{}:{r}", path.display()));
    }
    let mut dir = Some(path.as_path());
    while let Some(d) = dir.filter(|d| d.parent().is_some()) {
        scopes.push(d.display().to_string());
        dir = d.parent();
    }
    scopes
}

/// Whether `signed` (the signature's `docker-reference`) satisfies `identity` for `image`.
pub fn identity_matches(identity: &SignedIdentity, image: &ImageRef, signed: &str) -> bool {
    let Ok(parsed) = ImageRef::parse(signed) else {
        return false;
    };
    let same_repo =
        |a: &ImageRef, b: &ImageRef| a.registry == b.registry && a.repository == b.repository;
    // ImageRef fills in `latest` where a reference names no tag: exact matches need one.
    let explicit = signed
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') || last.contains('@'));
    let exact = |a: &ImageRef| explicit && a.tag == image.tag && a.digest == image.digest;
    match identity {
        SignedIdentity::MatchExact => same_repo(&parsed, image) && exact(&parsed),
        SignedIdentity::MatchRepoDigestOrExact => {
            same_repo(&parsed, image) && (image.tag.is_none() || exact(&parsed))
        }
        SignedIdentity::MatchRepository => same_repo(&parsed, image),
        SignedIdentity::ExactReference { docker_reference } => ImageRef::parse(docker_reference)
            .is_ok_and(|want| {
                explicit
                    && same_repo(&parsed, &want)
                    && parsed.tag == want.tag
                    && parsed.digest == want.digest
            }),
        SignedIdentity::ExactRepository { docker_repository } => {
            ImageRef::parse(docker_repository).is_ok_and(|want| same_repo(&parsed, &want))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::verify::key::PublicKey;

    impl SignaturePolicy {
        fn pair(self) -> (Option<PathBuf>, Vec<PathBuf>) {
            (self.path, self.looked)
        }
    }

    const KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEWXtGCj+8MiGWPi9Sg++I2BJg3OSw\n\
        AI6R5lw6sBd2KsBbgpWeCskeMi/62bY3NXQAkObMpD2PNz71+Z2Uke9dnQ==\n\
        -----END PUBLIC KEY-----\n";

    /// A P-384 key (openssl ecparam -name secp384r1).
    const P384_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEAGsodcWmYYKK+gKAuZxa7nADfqZ+02U0\n\
        Dw+OFNixizdca831xMidzhbK6UzBvy1pCSYpS51x82IpaewAaU5782Nscba1cbpH\n\
        +NPfncVXMcBQXeej/AVpHKj5XrY/XREy\n\
        -----END PUBLIC KEY-----\n";

    fn policy(json: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/berth/policy.json"), json.as_bytes())
    }

    fn key_data() -> String {
        base64::engine::general_purpose::STANDARD.encode(KEY)
    }

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn kind(reqs: &[Requirement]) -> &'static str {
        match reqs.first() {
            Some(Requirement::AcceptAnything) => "accept",
            Some(Requirement::Reject) => "reject",
            Some(Requirement::Sigstore(_)) => "sigstore",
            None => "none",
        }
    }

    #[test]
    fn the_most_specific_docker_scope_wins() {
        let json = format!(
            r#"{{"default": [{{"type": "reject"}}],
              "transports": {{"docker": {{
                "reg.example:5000": [{{"type": "insecureAcceptAnything"}}],
                "reg.example:5000/acme": [{{"type": "sigstoreSigned", "keyData": "{k}",
                    "signedIdentity": {{"type": "matchRepository"}}}}],
                "reg.example:5000/acme/open": [{{"type": "insecureAcceptAnything"}}],
                "reg.example:5000/acme/open:bad": [{{"type": "reject"}}],
                "*.example.com": [{{"type": "insecureAcceptAnything"}}]
              }}}}}}"#,
            k = key_data()
        );
        let p = policy(&json).unwrap();
        let of = |s: &str| {
            let (reqs, scope) = p.for_docker(&image(s));
            (kind(reqs), scope)
        };
        assert_eq!(of("reg.example:5000/acme/app:1").0, "sigstore");
        assert_eq!(
            of("reg.example:5000/acme/app:1").1,
            "transports.docker.\"reg.example:5000/acme\""
        );
        assert_eq!(of("reg.example:5000/acme/deep/app:1").0, "sigstore");
        assert_eq!(of("reg.example:5000/acme/open:1").0, "accept");
        assert_eq!(of("reg.example:5000/acme/open:bad").0, "reject");
        assert_eq!(of("reg.example:5000/other/app:1").0, "accept");
        assert_eq!(of("a.b.example.com/x:1").0, "accept");
        assert_eq!(of("elsewhere.org/x:1"), ("reject", "default".to_owned()));
        let (reqs, _) = p.for_local("oci", Path::new("/srv/layout"), Some("1"));
        assert_eq!(kind(reqs), "reject");
    }

    #[test]
    fn oci_scopes_are_paths_and_their_parents() {
        let p = policy(
            r#"{"default": [{"type": "reject"}],
              "transports": {"oci": {"/srv/images": [{"type": "insecureAcceptAnything"}],
                                     "/srv/images/a:bad": [{"type": "reject"}]},
                             "docker-archive": {"": [{"type": "insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        let of = |t: &str, path: &str, r: Option<&str>| kind(p.for_local(t, Path::new(path), r).0);
        assert_eq!(of("oci", "/srv/images/a", Some("1")), "accept");
        assert_eq!(of("oci", "/srv/images/a", Some("bad")), "reject");
        assert_eq!(of("oci", "/srv/other", None), "reject");
        assert_eq!(of("docker-archive", "/tmp/x.tar", None), "accept");
    }

    #[test]
    fn signed_by_and_unknown_types_are_refused_naming_the_file() {
        let e = policy(
            r#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]}"#,
        )
        .unwrap_err();
        let text = crate::util::chain(&e);
        assert!(text.contains("/etc/berth/policy.json"), "{text}");
        assert!(text.contains("signedBy"), "{text}");
        let e = policy(r#"{"default": [{"type": "somethingNew"}]}"#).unwrap_err();
        let text = crate::util::chain(&e);
        assert!(text.contains("/etc/berth/policy.json"), "{text}");
        assert!(text.contains("somethingNew"), "{text}");
        let e = policy(r#"{"default": [{"type": "reject"}], "defualt": []}"#).unwrap_err();
        assert!(crate::util::chain(&e).contains("defualt"), "{e}");
        let e = policy(r#"{"default": []}"#).unwrap_err();
        assert!(crate::util::chain(&e).contains("no requirements"), "{e}");
        let e = policy(r#"{"transports": {}}"#).unwrap_err();
        assert!(crate::util::chain(&e).contains("default"), "{e}");
    }

    #[test]
    fn sigstore_keys_are_read_and_checked() {
        let ok = format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{}"}}]}}"#,
            key_data()
        );
        let p = policy(&ok).unwrap();
        let (reqs, _) = p.for_docker(&image("r.example/a:1"));
        let Requirement::Sigstore(k) = &reqs[0] else {
            panic!("{reqs:?}")
        };
        assert_eq!(k.identity, SignedIdentity::MatchRepoDigestOrExact);
        let both = format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{}", "keyPath": "/k"}}]}}"#,
            key_data()
        );
        assert!(crate::util::chain(&policy(&both).unwrap_err()).contains("exactly one"));
        let garbage = base64::engine::general_purpose::STANDARD.encode("not a key");
        let bad =
            format!(r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{garbage}"}}]}}"#);
        assert!(crate::util::chain(&policy(&bad).unwrap_err()).contains("P-256"));
        let missing = r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/nonexistent.pub"}]}"#;
        let text = crate::util::chain(&policy(missing).unwrap_err());
        assert!(text.contains("/nonexistent.pub"), "{text}");
    }

    #[test]
    fn several_keys_are_read_from_key_paths_or_key_datas() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.pub"), d.path().join("b.pub"));
        std::fs::write(&a, KEY).unwrap();
        std::fs::write(&b, P384_KEY).unwrap();
        let json = serde_json::json!({"default": [{"type": "sigstoreSigned",
            "keyPaths": [a, b], "signedIdentity": {"type": "matchRepository"}}]});
        let p = policy(&json.to_string()).unwrap();
        let (reqs, _) = p.for_docker(&image("r.example/a:1"));
        let Requirement::Sigstore(k) = &reqs[0] else {
            panic!("{reqs:?}")
        };
        assert_eq!(k.keys.len(), 2);
        assert!(matches!(k.keys[1].key, PublicKey::P384(_)));
        assert_eq!(k.names(), format!("{} or {}", a.display(), b.display()));

        let datas = serde_json::json!({"default": [{"type": "sigstoreSigned",
            "keyDatas": [key_data(), base64::engine::general_purpose::STANDARD.encode(P384_KEY)]}]});
        let p = policy(&datas.to_string()).unwrap();
        let Requirement::Sigstore(k) = &p.for_docker(&image("r.example/a:1")).0[0] else {
            panic!()
        };
        assert_eq!(k.keys.len(), 2);

        let invalid = |extra: serde_json::Value| {
            let mut req = serde_json::json!({"type": "sigstoreSigned"});
            req.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let json = serde_json::json!({"default": [req]});
            crate::util::chain(&policy(&json.to_string()).unwrap_err())
        };
        let text = invalid(serde_json::json!({"keyPath": a, "keyPaths": [b]}));
        assert!(text.contains("exactly one of keyPath, keyPaths"), "{text}");
        let text = invalid(serde_json::json!({"keyPaths": []}));
        assert!(text.contains("lists no keys"), "{text}");
        let missing = d.path().join("missing.pub");
        let text = invalid(serde_json::json!({"keyPaths": [a, missing]}));
        assert!(text.contains(missing.to_str().unwrap()), "{text}");
        let garbage = d.path().join("garbage.pub");
        std::fs::write(&garbage, "not a key").unwrap();
        let text = invalid(serde_json::json!({"keyPaths": [garbage]}));
        assert!(
            text.contains("garbage.pub is not a PEM ECDSA P-256 or P-384"),
            "{text}"
        );
    }

    #[test]
    fn identities_as_the_man_page_says() {
        let tagged = image("r.example/acme/app:1");
        let pinned = image(
            "r.example/acme/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        use SignedIdentity as I;
        // A cosign payload names only the repository.
        let cosign = "r.example/acme/app";
        assert!(identity_matches(&I::MatchRepository, &tagged, cosign));
        assert!(!identity_matches(
            &I::MatchRepository,
            &tagged,
            "r.example/acme/other"
        ));
        assert!(!identity_matches(&I::MatchExact, &tagged, cosign));
        assert!(identity_matches(
            &I::MatchExact,
            &tagged,
            "r.example/acme/app:1"
        ));
        assert!(!identity_matches(
            &I::MatchExact,
            &tagged,
            "r.example/acme/app:2"
        ));
        assert!(!identity_matches(
            &I::MatchRepoDigestOrExact,
            &tagged,
            cosign
        ));
        assert!(identity_matches(
            &I::MatchRepoDigestOrExact,
            &pinned,
            cosign
        ));
        let mirror = I::ExactRepository {
            docker_repository: "upstream.example/acme/app".to_owned(),
        };
        assert!(identity_matches(
            &mirror,
            &tagged,
            "upstream.example/acme/app"
        ));
        assert!(!identity_matches(&mirror, &tagged, cosign));
        let exact = I::ExactReference {
            docker_reference: "upstream.example/acme/app:1".to_owned(),
        };
        assert!(identity_matches(
            &exact,
            &tagged,
            "upstream.example/acme/app:1"
        ));
        assert!(!identity_matches(
            &exact,
            &tagged,
            "upstream.example/acme/app"
        ));
    }

    #[test]
    fn the_flag_then_home_then_the_systems_policy() {
        let d = tempfile::tempdir().unwrap();
        let (home, system) = (d.path().join("home"), d.path().join("policy.json"));
        std::fs::create_dir(&home).unwrap();
        let looked = vec![home.join("policy.json"), system.clone()];
        assert_eq!(locate(None, &home, &system).pair(), (None, looked.clone()));
        std::fs::write(&system, "{}").unwrap();
        assert_eq!(
            locate(None, &home, &system).pair(),
            (Some(system.clone()), looked.clone())
        );
        std::fs::write(home.join("policy.json"), "{}").unwrap();
        assert_eq!(
            locate(None, &home, &system).pair(),
            (Some(home.join("policy.json")), looked)
        );
        let given = PathBuf::from("/x/p.json");
        assert_eq!(
            locate(Some(&given), &home, &system).pair(),
            (Some(given.clone()), vec![given])
        );
    }
}
