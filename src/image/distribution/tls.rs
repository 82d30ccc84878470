//! TLS for registries, the way containers-certs.d(5) lays it out: in
//! `/etc/containers/certs.d/HOST[:PORT]/` and berth's own `<home>/certs.d/HOST[:PORT]/`,
//! every `*.crt` is a CA trusted for that registry (besides the system's roots), and every
//! `*.cert` with the `*.key` of the same name is a client certificate presented to it.
//! Also the redirect policy: registries send blob downloads elsewhere, never to plain
//! HTTP from HTTPS, and only a few hops.

use std::path::{Path, PathBuf};

use crate::image::spec::TlsError;

/// Where the system keeps per-registry certificates.
pub const SYSTEM_CERTS_D: &str = "/etc/containers/certs.d";

/// Redirects followed for one request: Distribution sends one, to its storage.
pub const MAX_REDIRECTS: usize = 5;

/// The certificate directories for `registry` (`host[:port]`) that exist, in the order of
/// `certs_d` (the system's first).
pub fn certs_dirs(registry: &str, certs_d: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = certs_d.iter().map(|d| d.join(registry)).collect();
    dirs.retain(|d| d.is_dir());
    dirs
}

/// What certs.d directories add to a client: CAs and at most one client identity.
#[derive(Default)]
pub struct TlsFiles {
    pub roots: Vec<reqwest::Certificate>,
    pub identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
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
                Some("crt") => files.roots.extend(read_cas(&path)?),
                Some("cert") if files.identity.is_none() => {
                    files.identity = Some(read_identity(&path)?);
                }
                _ => {}
            }
        }
    }
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_cas(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    reqwest::Certificate::from_pem_bundle(&read(path)?).map_err(|source| TlsError::BadCertificate {
        path: path.to_owned(),
        source,
    })
}

fn read_identity(cert: &Path) -> Result<reqwest::Identity, TlsError> {
    let key = cert.with_extension("key");
    if !key.is_file() {
        return Err(TlsError::MissingKey {
            cert: cert.to_owned(),
            key,
        });
    }
    let mut pem = read(cert)?;
    pem.push(b'\n');
    pem.extend(read(&key)?);
    reqwest::Identity::from_pem(&pem).map_err(|source| TlsError::BadIdentity {
        cert: cert.to_owned(),
        key,
        source,
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
        "the TLS certificate of {registry} is not trusted: put the CA that signed it, as a \
         *.crt file, in {}",
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
