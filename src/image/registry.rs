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
use super::store::{BlobWriter, Store};

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
    /// What one image may unpack to, against decompression bombs.
    pub unpack_caps: super::unpack::UnpackCaps,
    /// The signature policy images from registries must satisfy (see [`super::policy`]);
    /// `None`: every image is accepted.
    pub signature_policy: Option<std::path::PathBuf>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            insecure: Vec::new(),
            retries: 4,
            backoff: Duration::from_millis(500),
            progress: true,
            unpack_caps: super::unpack::UnpackCaps::default(),
            signature_policy: None,
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
            return Err(ImageError::TooLarge {
                image: reference.whole(),
                what: format!(
                    "its manifest {digest} is {} bytes, more than the cap of {}",
                    bytes.len(),
                    manifest::MAX_METADATA_BYTES
                ),
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
        let what = format!("fetch of blob {}", blob.digest);
        self.retrying(reference, &what, || async {
            let mut writer = store
                .blob_writer(&blob.digest, size)
                .map_err(Failure::Final)?;
            let streamed = self
                .stream_blob(reference, &descriptor, &mut writer, bar)
                .await;
            if let Err(e) = streamed {
                bar.dec(writer.written());
                return Err(e);
            }
            writer.commit().map_err(Failure::Final)?;
            tracing::debug!(digest = %blob.digest, size, "blob stored");
            Ok(size)
        })
        .await
    }

    /// One attempt at streaming a blob into `writer`, which checks size and digest.
    async fn stream_blob(
        &self,
        reference: &Reference,
        descriptor: &OciDescriptor,
        writer: &mut BlobWriter,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), Failure> {
        let mut stream = self
            .client
            .pull_blob_stream(reference, descriptor)
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

    /// Runs a registry request on this client's runtime, retrying what may succeed later.
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
        self.runtime.block_on(self.retrying(reference, what, || {
            let attempt = op();
            async { attempt.await.map_err(Failure::Oci) }
        }))
    }

    /// Tries `op` until it succeeds, fails for good, or the retries are used up, backing off
    /// (0.5 s, doubling, at most a minute) between attempts; stops when interrupted.
    async fn retrying<T, F, Fut>(
        &self,
        reference: &Reference,
        what: &str,
        mut op: F,
    ) -> Result<T, ImageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            crate::interrupt::check()?;
            let (error, retryable) = match op().await {
                Ok(v) => return Ok(v),
                Err(f) => f.classify(reference, &self.registry),
            };
            if !retryable || attempt >= self.settings.retries {
                return Err(error);
            }
            let delay = backoff(self.settings.backoff, attempt);
            let error = crate::util::chain(&error);
            tracing::warn!(image = %reference.whole(), "{what} failed ({error}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
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
        match self {
            Failure::Final(e) => (e, false),
            Failure::Io(e) => (transfer_broke(whole, &e), true),
            Failure::Oci(e) => classify_oci(e, whole, registry),
        }
    }
}

fn transfer_broke(reference: String, e: &dyn std::error::Error) -> ImageError {
    ImageError::Registry {
        reference,
        message: format!("transfer broke: {}", crate::util::chain(e)),
    }
}

fn classify_oci(e: OciDistributionError, whole: String, registry: &str) -> (ImageError, bool) {
    let registry_err =
        |reference: String, message: String| ImageError::Registry { reference, message };
    let unauthorized =
        |reference: String, message: String| ImageError::Unauthorized { reference, message };
    match e {
        OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
            let message = crate::util::chain(&re);
            let registry = registry.to_owned();
            (ImageError::Unreachable { registry, message }, true)
        }
        OciDistributionError::RequestError(re) => {
            let retry = re.is_body() || re.is_request();
            (registry_err(whole, crate::util::chain(&re)), retry)
        }
        OciDistributionError::ServerError { code, message, .. } => {
            classify_status(code, &message, whole)
        }
        OciDistributionError::RegistryError { envelope, .. } => classify_envelope(&envelope, whole),
        OciDistributionError::UnauthorizedError { url } => (
            unauthorized(whole, format!("not authorized at {url}")),
            false,
        ),
        OciDistributionError::AuthenticationFailure(m) => (unauthorized(whole, m), false),
        OciDistributionError::ImageManifestNotFoundError(_) => {
            (ImageError::NotFound { reference: whole }, false)
        }
        OciDistributionError::IoError(e) => (transfer_broke(whole, &e), true),
        other => (registry_err(whole, crate::util::chain(&other)), false),
    }
}

/// An HTTP status without an OCI error body: 5xx and 429 may pass.
fn classify_status(code: u16, message: &str, reference: String) -> (ImageError, bool) {
    let message = format!("HTTP {code} {message}");
    match code {
        404 => (ImageError::NotFound { reference }, false),
        401 | 403 => (ImageError::Unauthorized { reference, message }, false),
        429 | 500..=599 => (ImageError::Registry { reference, message }, true),
        _ => (ImageError::Registry { reference, message }, false),
    }
}

/// An OCI error body: unknown names and digests are "not found", denials "unauthorized".
fn classify_envelope(
    envelope: &oci_client::errors::OciEnvelope,
    reference: String,
) -> (ImageError, bool) {
    let any = |codes: &[OciErrorCode]| envelope.errors.iter().any(|e| codes.contains(&e.code));
    let message = envelope.to_string();
    if any(&[
        OciErrorCode::ManifestUnknown,
        OciErrorCode::NameUnknown,
        OciErrorCode::BlobUnknown,
    ]) {
        (ImageError::NotFound { reference }, false)
    } else if any(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
        (ImageError::Unauthorized { reference, message }, false)
    } else {
        (ImageError::Registry { reference, message }, false)
    }
}

// Small documents of a known kind (signatures): read whole, but never past a cap.
impl RegistryClient {
    /// The manifest `reference` names (a tag), asking for `accept`; refused past `cap`
    /// bytes.
    ///
    /// oci-client reads a manifest body whole before it can be measured: the cap bounds
    /// what is kept and parsed, the client's read timeout what is read.
    pub fn fetch_small_manifest(
        &self,
        reference: &Reference,
        accept: &[&str],
        cap: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let (bytes, _) = self.with_retries(reference, "fetch manifest", || {
            self.client.pull_manifest_raw(reference, &self.auth, accept)
        })?;
        if bytes.len() as u64 > cap {
            return Err(ImageError::TooLarge {
                image: reference.whole(),
                what: format!("its manifest is {} bytes, more than {cap}", bytes.len()),
            });
        }
        Ok(bytes.to_vec())
    }

    /// The blob `blob` of `reference`'s repository, streamed and refused as soon as it
    /// passes `cap` bytes (whatever it declares), then checked against its digest.
    pub fn fetch_small_blob(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let too_large = |n: u64| ImageError::TooLarge {
            image: reference.whole(),
            what: format!(
                "its blob {} is {n} bytes or more, more than {cap}",
                blob.digest
            ),
        };
        let declared = blob.size().map_err(|message| ImageError::BadManifest {
            digest: blob.digest.clone(),
            message,
        })?;
        if declared > cap {
            return Err(too_large(declared));
        }
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: blob.size,
            ..Default::default()
        };
        let what = format!("fetch of blob {}", blob.digest);
        let bytes = self
            .runtime
            .block_on(self.retrying(reference, &what, || async {
                let mut stream = self
                    .client
                    .pull_blob_stream(reference, &descriptor)
                    .await
                    .map_err(Failure::Oci)?;
                let mut bytes = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(Failure::Io)?;
                    if (bytes.len() + chunk.len()) as u64 > cap {
                        return Err(Failure::Final(too_large(
                            (bytes.len() + chunk.len()) as u64,
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            }))?;
        let actual = Digest::of(&bytes);
        if actual != blob.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob of {}", reference.whole()),
                expected: blob.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
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
