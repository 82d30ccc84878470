//! TLS for registries, the way containers-certs.d(5) lays it out: in
//! `HOST[:PORT]/` of a rootless user's `~/.config/containers/certs.d`,
//! `/etc/containers/certs.d`, `/etc/docker/certs.d` and berth's own `<home>/certs.d`,
//! every `*.crt` is a CA trusted for that registry (besides the system's roots), and every
//! `*.cert` with the `*.key` of the same name is a client certificate presented to it.
//! Also the redirect policy: registries send blob downloads elsewhere, never to plain
//! HTTP from HTTPS, and only a few hops.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::pinned::PinnedVerifier;
use crate::image::spec::TlsError;

/// Where the system keeps per-registry certificates.
pub const SYSTEM_CERTS_D: &str = "/etc/containers/certs.d";

/// Where Docker keeps them; podman reads it too, after [`SYSTEM_CERTS_D`].
pub const DOCKER_CERTS_D: &str = "/etc/docker/certs.d";

/// The certs.d directories podman reads, in its order — `user_certs_d` (a rootless user's,
/// see [`user_certs_d`]), then the system's and Docker's — and berth's own under `home`.
pub fn standard_certs_d(user_certs_d: Option<PathBuf>, home: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = user_certs_d.into_iter().collect();
    dirs.push(PathBuf::from(SYSTEM_CERTS_D));
    dirs.push(PathBuf::from(DOCKER_CERTS_D));
    dirs.push(home.join("certs.d"));
    dirs
}

/// A rootless user's `$XDG_CONFIG_HOME/containers/certs.d` (`~/.config/…`), from this
/// process's environment; none for root, whose podman reads only the system's.
pub fn user_certs_d() -> Option<PathBuf> {
    Some(user_containers_dir()?.join("certs.d"))
}

/// A rootless user's `$XDG_CONFIG_HOME/containers` (`~/.config/…`), from this process's
/// environment; none for root, whose podman reads only the system's files.
pub fn user_containers_dir() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let config =
        env_path("XDG_CONFIG_HOME").or_else(|| env_path("HOME").map(|h| h.join(".config")))?;
    Some(config.join("containers"))
}

/// The path environment variable `name` holds, unless it is unset or empty.
pub(super) fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Redirects followed for one request: Distribution sends one, to its storage.
pub const MAX_REDIRECTS: usize = 5;

/// The certificate directories for `registry` (`host[:port]`) that exist, in the order of
/// `certs_d` (the system's first).
pub fn certs_dirs(registry: &str, certs_d: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = certs_d.iter().map(|d| d.join(registry)).collect();
    dirs.retain(|d| d.is_dir());
    dirs
}

/// What certs.d directories add to a client: CAs (or a registry's own certificate) and at
/// most one client identity.
#[derive(Default)]
pub struct TlsFiles {
    pub roots: Vec<CertificateDer<'static>>,
    pub identity: Option<Identity>,
}

/// A client certificate chain and its key, with the files they came from.
pub struct Identity {
    cert: PathBuf,
    key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.as_ref().map(|i| &i.cert))
            .finish()
    }
}

/// Loads every `*.crt` and the first `*.cert`/`*.key` pair of `dirs` (sorted by name).
pub fn load(dirs: &[PathBuf]) -> Result<TlsFiles, TlsError> {
    let mut files = TlsFiles::default();
    for dir in dirs {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| TlsError::ReadDir {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => files.roots.extend(read_certs(&path)?),
                Some("cert") if files.identity.is_none() => {
                    files.identity = Some(read_identity(&path)?);
                }
                _ => {}
            }
        }
    }
    Ok(files)
}

/// The TLS configuration for a registry with certs.d files: the system's roots and the
/// `*.crt` files, through the same platform verifier reqwest uses, then the `*.crt` files
/// again as pinned certificates ([`PinnedVerifier`]); HTTP/1.1 only (see `build_http`).
pub fn client_config(files: TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let ordinary = rustls_platform_verifier::Verifier::new_with_extra_roots(
        files.roots.clone(),
        provider.clone(),
    )
    .map_err(|source| TlsError::Verifier {
        source: Box::new(source),
    })?;
    let verifier = PinnedVerifier::new(Arc::new(ordinary), files.roots);
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Verifier {
            source: Box::new(source),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match files.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|source| TlsError::BadIdentity {
                cert: id.cert,
                key: id.key_path,
                source: Box::new(source),
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: path.to_owned(),
            source,
        })
}

fn read_identity(cert: &Path) -> Result<Identity, TlsError> {
    let key_path = cert.with_extension("key");
    if !key_path.is_file() {
        return Err(TlsError::MissingKey {
            cert: cert.to_owned(),
            key: key_path,
        });
    }
    let chain = read_certs(cert)?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|source| TlsError::BadKey {
            path: key_path.clone(),
            source,
        })?;
    Ok(Identity {
        cert: cert.to_owned(),
        key_path,
        chain,
        key,
    })
}

/// Follows at most [`MAX_REDIRECTS`] redirects, to HTTPS only; from a registry berth may
/// speak plain HTTP to (`allow_http`), also from HTTP to HTTP.
pub fn redirect_policy(allow_http: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let from = attempt
            .previous()
            .last()
            .map_or_else(String::new, shown_url);
        let to = shown_url(attempt.url());
        if attempt.previous().len() > MAX_REDIRECTS {
            let why = "too many redirects";
            return attempt.error(TlsError::Redirect { from, to, why });
        }
        let came_over_http = attempt
            .previous()
            .last()
            .is_some_and(|u| u.scheme() == "http");
        match attempt.url().scheme() {
            "https" => attempt.follow(),
            "http" if allow_http && came_over_http => attempt.follow(),
            _ => {
                let why = "berth follows redirects only to HTTPS";
                attempt.error(TlsError::Redirect { from, to, why })
            }
        }
    })
}

/// A URL without its query: storage backends sign theirs, and a signature is a secret.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// What to tell an operator whose registry's certificate berth does not trust.
pub fn untrusted_hint(registry: &str, certs_d: &[PathBuf]) -> String {
    format!(
        "the TLS certificate of {registry} is not trusted: put the CA that signed it (or a \
         self-signed certificate itself), as a *.crt file, in {}",
        places(registry, certs_d)
    )
}

/// What to tell an operator whose registry ended the TLS handshake.
pub fn handshake_hint(registry: &str, certs_d: &[PathBuf]) -> String {
    format!(
        "{registry} refused the TLS handshake: if it wants a client certificate, put it and \
         its key as NAME.cert and NAME.key in {}",
        places(registry, certs_d)
    )
}

fn places(registry: &str, certs_d: &[PathBuf]) -> String {
    let places: Vec<String> = certs_d
        .iter()
        .map(|d| format!("{}/", d.join(registry).display()))
        .collect();
    places.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cert_without_its_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("certs.d/reg:5000");
        std::fs::create_dir_all(&reg).unwrap();
        std::fs::write(reg.join("client.cert"), "x").unwrap();
        let certs_d = [PathBuf::from("/nonexistent"), dir.path().join("certs.d")];
        let dirs = certs_dirs("reg:5000", &certs_d);
        assert_eq!(dirs, vec![reg.clone()]);
        let e = load(&dirs).unwrap_err();
        assert!(matches!(e, TlsError::MissingKey { .. }), "{e}");
        assert!(e.to_string().contains("client.key"), "{e}");
    }

    #[test]
    fn certs_d_directories_come_in_podmans_order_then_berths() {
        let home = Path::new("/b");
        let user = Some(PathBuf::from("/u/.config/containers/certs.d"));
        let dirs = standard_certs_d(user, home);
        let want = [
            "/u/.config/containers/certs.d",
            "/etc/containers/certs.d",
            "/etc/docker/certs.d",
            "/b/certs.d",
        ];
        assert_eq!(dirs, want.map(PathBuf::from));
        assert_eq!(standard_certs_d(None, home).len(), 3);
    }

    #[test]
    fn a_broken_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nnope\n",
        )
        .unwrap();
        let e = load(&[dir.path().to_owned()]).unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
    }

    #[test]
    fn shown_urls_lose_their_signatures() {
        let u: reqwest::Url = "https://u:p@s3.example/b/k?X-Amz-Signature=abc"
            .parse()
            .unwrap();
        assert_eq!(shown_url(&u), "https://s3.example/b/k");
    }
}
