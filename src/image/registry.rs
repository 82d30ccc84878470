//! Talking to an OCI / Docker v2 registry, through oci-client.
//!
//! Only the streaming calls are used: blobs go straight from the socket into the content
//! store through a [`BlobWriter`](super::store::BlobWriter), which checks size and digest
//! as the bytes arrive (oci-client checks the digest too). The async client runs on a
//! current-thread tokio runtime that lives only as long as this struct: berth creates no
//! threads that could still exist when libcontainer later clones the container.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Once;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::ImageError;
use super::digest::Digest;
use super::manifest::{self, Descriptor};
use super::store::Store;

const ACCEPTED_MANIFESTS: &[&str] = &[
    manifest::OCI_MANIFEST,
    manifest::DOCKER_MANIFEST,
    manifest::OCI_INDEX,
    manifest::DOCKER_LIST,
];

/// A self-signed certificate generated for berth, whose private key was discarded: see
/// [`RegistryClient::new`].
const NO_TRUST_ANCHORS: &str = include_str!("data/no-trust-anchors.pem");

/// Blobs fetched at once: enough to fill a link, few enough to stay polite.
const PARALLEL_BLOBS: usize = 3;

/// How berth reaches registries.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Registries (`host[:port]`) that may be spoken to over plain HTTP. Loopback
    /// registries always may.
    pub insecure: Vec<String>,
    /// Retries of a failed request that may succeed later (connection refused, 5xx, 429).
    pub retries: u32,
    /// First back-off; it doubles after each retry, up to a minute.
    pub backoff: Duration,
    /// Show a progress bar while fetching (when stderr is a terminal).
    pub progress: bool,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            insecure: Vec::new(),
            retries: 4,
            backoff: Duration::from_millis(500),
            progress: true,
        }
    }
}

impl RegistrySettings {
    /// Whether plain HTTP is allowed for `registry` (`host[:port]`).
    pub fn allows_http(&self, registry: &str) -> bool {
        self.insecure.iter().any(|r| r == registry) || is_loopback(registry)
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A connection to one registry for one pull.
pub struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
    settings: RegistrySettings,
    registry: String,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(reference: &Reference, settings: &RegistrySettings) -> Result<Self, ImageError> {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            // Another provider being installed already is fine: any one works.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let registry = reference.resolve_registry().to_owned();
        let protocol = if settings.allows_http(&registry) {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        // A loopback registry is spoken to over plain HTTP, yet building the HTTP client
        // would load and parse the system's ~150 TLS roots (twice): most of a tag lookup's
        // 20 ms. A single trust anchor whose private key no longer exists stands in for
        // them, so a redirect from such a registry to some HTTPS host cannot be trusted.
        let tls_certs_only = if is_loopback(&registry) {
            vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: NO_TRUST_ANCHORS.as_bytes().to_vec(),
            }]
        } else {
            Vec::new()
        };
        let client = Client::new(ClientConfig {
            protocol,
            tls_certs_only,
            // berth picks the platform itself from the raw index.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ImageError::Store {
                path: "tokio runtime".into(),
                source,
            })?;
        // Credentials come with the production-grade registry work; anonymous until then.
        let auth = RegistryAuth::Anonymous;
        Ok(RegistryClient {
            client,
            auth,
            runtime,
            settings: settings.clone(),
            registry,
        })
    }

    /// What a tag currently points at (a HEAD request).
    pub fn resolve(&self, reference: &Reference) -> Result<Digest, ImageError> {
        let digest = self.with_retries(reference, "resolve", || {
            self.client.fetch_manifest_digest(reference, &self.auth)
        })?;
        digest.parse().map_err(|e| ImageError::Registry {
            reference: reference.whole(),
            message: format!("registry returned a bad digest: {e}"),
        })
    }

    /// The manifest or index with `digest`, verified.
    pub fn manifest(&self, reference: &Reference, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let by_digest = reference.clone_with_digest(digest.to_string());
        let (bytes, _) = self.with_retries(reference, "fetch manifest", || {
            self.client
                .pull_manifest_raw(&by_digest, &self.auth, ACCEPTED_MANIFESTS)
        })?;
        if bytes.len() as u64 > manifest::MAX_METADATA_BYTES {
            return Err(ImageError::BadManifest {
                digest: digest.clone(),
                message: format!("{} bytes is too large for a manifest", bytes.len()),
            });
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {}", reference.whole()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes.to_vec())
    }

    /// Fetches `blobs` into the store, a few at a time; returns the bytes transferred.
    /// `announce` shows progress (layers) or not (a config of a few hundred bytes).
    pub fn fetch_blobs(
        &self,
        reference: &Reference,
        blobs: &[Descriptor],
        store: &Store,
        announce: bool,
    ) -> Result<u64, ImageError> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let mut total = 0u64;
        for b in blobs {
            total += b.size().map_err(|message| ImageError::BadManifest {
                digest: b.digest.clone(),
                message,
            })?;
        }
        let bar = if announce {
            self.progress_bar(reference, blobs.len(), total)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let started = std::time::Instant::now();
        let result: Result<Vec<u64>, ImageError> = self.runtime.block_on(async {
            futures_util::stream::iter(
                blobs
                    .iter()
                    .map(|b| self.fetch_one(reference, b, store, &bar)),
            )
            .buffer_unordered(PARALLEL_BLOBS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
        });
        bar.finish_and_clear();
        let fetched: u64 = result?.iter().sum();
        if !announce {
            return Ok(fetched);
        }
        tracing::info!(
            image = %reference.whole(),
            blobs = blobs.len(),
            bytes = fetched,
            "fetched {} in {:.1} s",
            crate::util::human_bytes(fetched),
            started.elapsed().as_secs_f64()
        );
        Ok(fetched)
    }

    fn progress_bar(
        &self,
        reference: &Reference,
        count: usize,
        total: u64,
    ) -> indicatif::ProgressBar {
        use std::io::IsTerminal;
        if !self.settings.progress || !std::io::stderr().is_terminal() {
            tracing::info!(image = %reference.whole(), "fetching {count} blobs, {}", crate::util::human_bytes(total));
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("pulling {} ({count} blobs)", reference.whole()));
        bar
    }

    async fn fetch_one(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        store: &Store,
        bar: &indicatif::ProgressBar,
    ) -> Result<u64, ImageError> {
        let size = blob.size().map_err(|message| ImageError::BadManifest {
            digest: blob.digest.clone(),
            message,
        })?;
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: blob.size,
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            crate::interrupt::check()?;
            let mut writer = store.blob_writer(&blob.digest, size)?;
            let outcome: Result<(), Failure> = async {
                let mut stream = self
                    .client
                    .pull_blob_stream(reference, &descriptor)
                    .await
                    .map_err(Failure::Oci)?;
                while let Some(chunk) = stream.next().await {
                    crate::interrupt::check().map_err(|i| Failure::Final(i.into()))?;
                    let chunk = chunk.map_err(Failure::Io)?;
                    writer.write(&chunk).map_err(Failure::Final)?;
                    bar.inc(chunk.len() as u64);
                }
                Ok(())
            }
            .await;
            let err = match outcome {
                Ok(()) => {
                    writer.commit()?;
                    tracing::debug!(digest = %blob.digest, size, "blob stored");
                    return Ok(size);
                }
                Err(f) => f,
            };
            bar.dec(writer.written());
            drop(writer);
            let (error, retryable) = err.classify(reference, &self.registry);
            if !retryable || attempt >= self.settings.retries {
                return Err(error);
            }
            let delay = backoff(self.settings.backoff, attempt);
            tracing::warn!(digest = %blob.digest, "fetch failed ({error}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn with_retries<T, F, Fut>(
        &self,
        reference: &Reference,
        what: &str,
        mut op: F,
    ) -> Result<T, ImageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        self.runtime.block_on(async {
            let mut attempt = 0;
            loop {
                crate::interrupt::check()?;
                let (error, retryable) = match op().await {
                    Ok(v) => return Ok(v),
                    Err(e) => Failure::Oci(e).classify(reference, &self.registry),
                };
                if !retryable || attempt >= self.settings.retries {
                    return Err(error);
                }
                let delay = backoff(self.settings.backoff, attempt);
                tracing::warn!(image = %reference.whole(), "{what} failed ({error}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        })
    }
}

fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(Duration::from_secs(60))
}

enum Failure {
    Oci(OciDistributionError),
    Io(std::io::Error),
    Final(ImageError),
}

impl Failure {
    /// Turns a failure into berth's error, and says whether trying again could help.
    fn classify(self, reference: &Reference, registry: &str) -> (ImageError, bool) {
        let whole = reference.whole();
        let registry_err = |message: String| ImageError::Registry {
            reference: whole.clone(),
            message,
        };
        match self {
            Failure::Final(e) => (e, false),
            Failure::Io(e) => (
                registry_err(format!("transfer broke: {}", crate::util::chain(&e))),
                true,
            ),
            Failure::Oci(e) => match e {
                OciDistributionError::RequestError(re) => {
                    if re.is_connect() || re.is_timeout() {
                        (
                            ImageError::Unreachable {
                                registry: registry.to_owned(),
                                message: crate::util::chain(&re),
                            },
                            true,
                        )
                    } else {
                        (
                            registry_err(crate::util::chain(&re)),
                            re.is_body() || re.is_request(),
                        )
                    }
                }
                OciDistributionError::ServerError { code, message, .. } => match code {
                    404 => (ImageError::NotFound { reference: whole }, false),
                    401 | 403 => (
                        ImageError::Unauthorized {
                            reference: whole,
                            message: format!("HTTP {code} {message}"),
                        },
                        false,
                    ),
                    429 | 500..=599 => (registry_err(format!("HTTP {code} {message}")), true),
                    _ => (registry_err(format!("HTTP {code} {message}")), false),
                },
                OciDistributionError::RegistryError { envelope, .. } => {
                    let unknown = envelope.errors.iter().any(|e| {
                        matches!(
                            e.code,
                            OciErrorCode::ManifestUnknown
                                | OciErrorCode::NameUnknown
                                | OciErrorCode::BlobUnknown
                        )
                    });
                    let denied = envelope.errors.iter().any(|e| {
                        matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                    });
                    if unknown {
                        (ImageError::NotFound { reference: whole }, false)
                    } else if denied {
                        (
                            ImageError::Unauthorized {
                                reference: whole,
                                message: envelope.to_string(),
                            },
                            false,
                        )
                    } else {
                        (registry_err(envelope.to_string()), false)
                    }
                }
                OciDistributionError::UnauthorizedError { url } => (
                    ImageError::Unauthorized {
                        reference: whole,
                        message: format!("not authorized at {url}"),
                    },
                    false,
                ),
                OciDistributionError::AuthenticationFailure(m) => (
                    ImageError::Unauthorized {
                        reference: whole,
                        message: m,
                    },
                    false,
                ),
                OciDistributionError::ImageManifestNotFoundError(_) => {
                    (ImageError::NotFound { reference: whole }, false)
                }
                OciDistributionError::IoError(e) => (
                    registry_err(format!("transfer broke: {}", crate::util::chain(&e))),
                    true,
                ),
                other => (registry_err(crate::util::chain(&other)), false),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_may_use_http() {
        let s = RegistrySettings::default();
        assert!(s.allows_http("127.0.0.1:5000"));
        assert!(s.allows_http("localhost:5000"));
        assert!(s.allows_http("[::1]:5000"));
        assert!(!s.allows_http("registry.example.com"));
        assert!(!s.allows_http("10.0.0.1:5000"));
        let s = RegistrySettings {
            insecure: vec!["10.0.0.1:5000".to_owned()],
            ..Default::default()
        };
        assert!(s.allows_http("10.0.0.1:5000"));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let b = Duration::from_millis(500);
        assert_eq!(backoff(b, 0), Duration::from_millis(500));
        assert_eq!(backoff(b, 3), Duration::from_secs(4));
        assert_eq!(backoff(b, 20), Duration::from_secs(60));
    }
}
