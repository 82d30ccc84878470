//! Talking to an OCI / Docker v2 registry: berth's own small Distribution client on reqwest.
//!
//! oci-client 0.18 (which berth used before) cannot present a client certificate, cannot
//! be given a redirect policy, reads a whole manifest into memory before any size check,
//! swallows token-server failures, and never renews a token the registry stops accepting.
//! So berth speaks the few requests a pull needs itself:
//!
//! - Authentication on demand: a 401 with a `WWW-Authenticate` challenge makes berth look
//!   up credentials ([`auth`]) and answer it, `Basic` or `Bearer` (a token from
//!   the realm, asked with the credentials or anonymously). A request that gets a 401 again
//!   after that is refused with the registry's name, never the password. A token that
//!   expires mid-pull gets the same treatment: one new token, one retry.
//! - TLS: the system's roots plus the registry's certs.d CAs, and its client certificate
//!   ([`tls`]). A registry with a certs.d directory is spoken to over HTTPS even
//!   on loopback; without one, plain HTTP only for loopback and `--insecure-registry` hosts.
//!   Redirects only to HTTPS (or HTTP to HTTP for those), at most five.
//! - Manifests are capped before they are buffered: a `Content-Length` over the cap, or a
//!   body that grows past it, ends the transfer.
//! - Blobs go straight from the socket into the content store through a
//!   [`BlobWriter`], which checks size and digest as the bytes
//!   arrive. A transfer that breaks resumes with `Range: bytes=N-` on the same writer, so
//!   the digest is still computed over the whole blob from its first byte.
//!
//! The async client runs on a current-thread tokio runtime that lives only as long as this
//! struct: berth creates no threads that could still exist when libcontainer later clones
//! the container.

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};

use super::auth::{self, Challenge, Credentials, Secret};
use super::settings::{RegistrySettings, is_loopback};
use super::tls;
use crate::image::content::{BlobWriter, Ingest};
use crate::image::spec::ImageError;
use crate::image::spec::digest::Digest;
use crate::image::spec::manifest::{self, Descriptor};
use crate::image::spec::reference::ImageRef;
use crate::image::spec::{AuthError, RegistryError};

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

/// What berth reads of an error body or a token answer.
const SMALL_BODY: u64 = 64 << 10;

/// A connection to one registry for one pull.
pub struct RegistryClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    settings: RegistrySettings,
    registry: String,
    /// `https://host[:port]` or `http://host[:port]`.
    base: String,
    /// Given credentials (`berth login`), else looked up when a registry asks.
    given: Option<Credentials>,
    /// The `Authorization` header that last worked, and whose credentials made it.
    authorization: Mutex<Option<Secret>>,
    used: Mutex<Option<Credentials>>,
    /// When the pull this client serves must be done (see [`RegistrySettings::pull_timeout`]).
    deadline: std::time::Instant,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(reference: &ImageRef, settings: &RegistrySettings) -> Result<Self, ImageError> {
        Self::for_registry(reference.registry_host(), settings, None)
    }

    /// A client for `registry`, with `given` credentials instead of looked-up ones.
    fn for_registry(
        registry: &str,
        settings: &RegistrySettings,
        given: Option<Credentials>,
    ) -> Result<Self, ImageError> {
        crate::util::install_crypto_provider();
        let dirs = tls::certs_dirs(registry, &settings.certs_d);
        let https = !dirs.is_empty() || !settings.allows_http(registry);
        let http = build_http(registry, https, settings.allows_http(registry), &dirs)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ImageError::Store {
                path: "tokio runtime".into(),
                source,
            })?;
        Ok(RegistryClient {
            http,
            runtime,
            settings: settings.clone(),
            registry: registry.to_owned(),
            base: format!("{}://{registry}", if https { "https" } else { "http" }),
            given,
            authorization: Mutex::new(None),
            used: Mutex::new(None),
            deadline: std::time::Instant::now() + settings.pull_timeout,
        })
    }

    /// Checks `credentials` against `registry` (`berth login`): its `/v2/` must answer
    /// 200 with them.
    pub fn check_login(
        registry: &str,
        settings: &RegistrySettings,
        credentials: Credentials,
    ) -> Result<(), ImageError> {
        let client = Self::for_registry(registry, settings, Some(credentials))?;
        let url = format!("{}/v2/", client.base);
        let target = Target {
            image: registry.to_owned(),
            repository: None,
        };
        client.block_on(
            &target,
            client.retrying(&target, "login", || async {
                let response = client.send(&target, &|c| c.get(&url)).await?;
                check(response).await.map(drop)
            }),
        )
    }

    /// What a tag currently points at, and the document itself: one GET (as containers'
    /// own tools do) rather than a HEAD and then a GET, since a pull needs the document
    /// anyway. Its digest is that of the bytes; a `Docker-Content-Digest` must agree.
    pub fn resolve(&self, reference: &ImageRef) -> Result<(Digest, Vec<u8>), ImageError> {
        let target = Target::of(reference);
        let url = self.named_manifest_url(reference);
        let accept = accept();
        let (bytes, header) = self.block_on(
            &target,
            self.retrying(&target, "resolve", || {
                self.fetch_capped(
                    &target,
                    &url,
                    &accept,
                    manifest::MAX_METADATA_BYTES,
                    "manifest",
                )
            }),
        )?;
        let digest = Digest::of(&bytes);
        if let Some(stated) = header {
            let stated: Digest = stated.parse().map_err(|e| ImageError::Registry {
                reference: reference.to_string(),
                message: format!("registry returned a bad digest: {e}"),
            })?;
            if stated != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {reference}"),
                    expected: stated,
                    actual: digest,
                });
            }
        }
        refuse_unsupported_layers(reference, &bytes)?;
        Ok((digest, bytes))
    }

    /// What a tag points at now, asked with a `HEAD` (which public registries do not count
    /// as a pull); `None` when the registry states no `Docker-Content-Digest`, which only a
    /// GET of the document can then tell.
    pub fn head(&self, reference: &ImageRef) -> Result<Option<Digest>, ImageError> {
        let target = Target::of(reference);
        let url = self.named_manifest_url(reference);
        let accept = accept();
        let stated = self.block_on(
            &target,
            self.retrying(&target, "check", || async {
                let response = self
                    .send(&target, &|c| c.head(&url).header(header::ACCEPT, &accept))
                    .await?;
                Ok(digest_header(&check(response).await?))
            }),
        )?;
        stated
            .map(|d| {
                d.parse().map_err(|e| ImageError::Registry {
                    reference: reference.to_string(),
                    message: format!("registry returned a bad digest: {e}"),
                })
            })
            .transpose()
    }

    /// The manifest or index with `digest`, verified, refused when larger than the cap
    /// before it is all read, or when it has a layer berth cannot unpack.
    pub fn manifest(&self, reference: &ImageRef, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let target = Target::of(reference);
        let url = self.manifest_url(reference, &digest.to_string());
        let bytes = self.block_on(
            &target,
            self.retrying(&target, "fetch manifest", || {
                self.fetch_manifest(&target, &url)
            }),
        )?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {reference}"),
                expected: digest.clone(),
                actual,
            });
        }
        refuse_unsupported_layers(reference, &bytes)?;
        Ok(bytes)
    }

    /// The manifest `reference` names: by its digest when it has one, else by its tag.
    fn named_manifest_url(&self, reference: &ImageRef) -> String {
        let what = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        };
        self.manifest_url(reference, &what)
    }

    fn manifest_url(&self, reference: &ImageRef, what: &str) -> String {
        format!("{}/v2/{}/manifests/{what}", self.base, reference.repository)
    }

    async fn fetch_manifest(&self, target: &Target, url: &str) -> Result<Vec<u8>, Failure> {
        let cap = manifest::MAX_METADATA_BYTES;
        let (bytes, _) = self
            .fetch_capped(target, url, &accept(), cap, "manifest")
            .await?;
        Ok(bytes)
    }

    /// The document at `url`, refused before it is all read when it declares or grows past
    /// `cap` bytes: `what` names it in that error.
    async fn fetch_capped(
        &self,
        target: &Target,
        url: &str,
        accept: &str,
        cap: u64,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), Failure> {
        let response = self
            .send(target, &|c| c.get(url).header(header::ACCEPT, accept))
            .await?;
        let response = check(response).await?;
        let stated = digest_header(&response);
        let bytes = capped_body(target, response, cap, what).await?;
        Ok((bytes, stated))
    }

    /// Fetches `blobs` into the store, a few at a time; returns the bytes transferred.
    /// `announce` shows progress (layers) or not (a config of a few hundred bytes).
    pub fn fetch_blobs(
        &self,
        reference: &ImageRef,
        blobs: &[Descriptor],
        store: &dyn Ingest,
        announce: bool,
    ) -> Result<u64, ImageError> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let mut total = 0u64;
        for b in blobs {
            if !manifest::is_fetchable(&b.media_type) {
                return Err(RegistryError::LayerMediaType {
                    image: reference.to_string(),
                    layer: b.digest.clone(),
                    media_type: b.media_type.clone(),
                }
                .into());
            }
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
        let target = Target::of(reference);
        let result: Result<Vec<u64>, ImageError> = self.block_on(&target, async {
            futures_util::stream::iter(
                blobs
                    .iter()
                    .map(|b| self.fetch_one(&target, b, store, &bar)),
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
            image = %reference.to_string(),
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
        reference: &ImageRef,
        count: usize,
        total: u64,
    ) -> indicatif::ProgressBar {
        use std::io::IsTerminal;
        if !self.settings.progress || !std::io::stderr().is_terminal() {
            tracing::info!(image = %reference.to_string(), "fetching {count} blobs, {}", crate::util::human_bytes(total));
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("pulling {reference} ({count} blobs)"));
        bar
    }

    /// One blob, retried and resumed: a writer that got part of the blob is kept for the
    /// next attempt, which asks only for the rest.
    async fn fetch_one(
        &self,
        target: &Target,
        blob: &Descriptor,
        store: &dyn Ingest,
        bar: &indicatif::ProgressBar,
    ) -> Result<u64, ImageError> {
        let size = blob.size().map_err(|message| ImageError::BadManifest {
            digest: blob.digest.clone(),
            message,
        })?;
        let what = format!("fetch of blob {}", blob.digest);
        let kept: RefCell<Option<BlobWriter>> = RefCell::new(None);
        self.retrying(target, &what, || async {
            let taken = kept.borrow_mut().take();
            let mut writer = match taken {
                Some(w) => w,
                None => store
                    .blob_writer(&blob.digest, size)
                    .map_err(Failure::Final)?,
            };
            match self
                .stream_blob(target, blob, store, &mut writer, bar)
                .await
            {
                Ok(()) => {}
                Err(e @ Failure::Final(_)) => {
                    bar.dec(writer.written());
                    return Err(e);
                }
                Err(e) => {
                    kept.replace(Some(writer));
                    return Err(e);
                }
            }
            writer.commit().map_err(Failure::Final)?;
            tracing::debug!(digest = %blob.digest, size, "blob stored");
            Ok(size)
        })
        .await
    }

    /// One attempt at streaming a blob into `writer` from where it stands.
    async fn stream_blob(
        &self,
        target: &Target,
        blob: &Descriptor,
        store: &dyn Ingest,
        writer: &mut BlobWriter,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), Failure> {
        let offset = writer.written();
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.base,
            target.repository.as_deref().unwrap_or(""),
            blob.digest
        );
        if offset > 0 {
            tracing::info!(digest = %blob.digest, offset, "resuming the download");
        }
        let response = self
            .send(target, &|c| match offset {
                0 => c.get(&url),
                n => c.get(&url).header(header::RANGE, format!("bytes={n}-")),
            })
            .await?;
        let response = check(response).await?;
        let size = writer_size(blob)?;
        let mut rest = size;
        if offset > 0 {
            resume_point(target, &response, offset)?;
            if response.status() == StatusCode::OK {
                // The registry ignored the range: start over, on a fresh writer.
                bar.dec(offset);
                *writer = store
                    .blob_writer(&blob.digest, size)
                    .map_err(Failure::Final)?;
            } else {
                rest = size.saturating_sub(offset);
            }
        }
        // A blob declared larger than its descriptor says is refused before a byte of it
        // is read; one that only grows so is refused as it streams (by the writer).
        if let Some(declared) = response.content_length().filter(|l| *l > rest) {
            return Err(Failure::Final(ImageError::SizeMismatch {
                digest: blob.digest.clone(),
                expected: size,
                actual: format!("{} (its Content-Length)", declared + (size - rest)),
            }));
        }
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            crate::interrupt::check().map_err(|i| Failure::Final(i.into()))?;
            let chunk = chunk.map_err(Failure::Http)?;
            writer.write(&chunk).map_err(Failure::Final)?;
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    }

    /// Sends a request, answering one authentication challenge: a first 401 (no
    /// credentials sent yet, or a token that expired) gets fresh authorization and one
    /// retry; a second one means the credentials are refused.
    async fn send(
        &self,
        target: &Target,
        make: &dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let mut renewed = false;
        loop {
            let mut request = make(&self.http);
            if let Some(value) = self.current_authorization() {
                request = request.header(header::AUTHORIZATION, sensitive(&self.registry, &value)?);
            }
            let response = request.send().await.map_err(Failure::Http)?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            // A 401 from where a redirect led (blob storage elsewhere) is not the registry
            // asking: answering it would send the registry's credentials, or a token asked
            // for with them, to a host the registry merely named.
            if !self.is_registry(response.url()) {
                return Err(Failure::Final(
                    RegistryError::ForeignChallenge {
                        image: target.image.clone(),
                        registry: self.registry.clone(),
                        url: tls::shown_url(response.url()),
                    }
                    .into(),
                ));
            }
            if renewed {
                return Err(Failure::Final(self.refused().into()));
            }
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(Challenge::parse);
            tracing::debug!(registry = %self.registry, ?challenge, "authenticating");
            self.authenticate(target, challenge).await?;
            renewed = true;
        }
    }

    /// Runs `work` to its end, or until the pull's deadline (`--pull-timeout`) passes: a
    /// registry that trickles bytes (each read within the read timeout) cannot hold berth
    /// forever.
    fn block_on<T>(
        &self,
        target: &Target,
        work: impl Future<Output = Result<T, ImageError>>,
    ) -> Result<T, ImageError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        self.runtime.block_on(async {
            tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or_else(|_| {
                    Err(ImageError::PullTimeout {
                        image: target.image.clone(),
                        timeout: self.settings.pull_timeout,
                    })
                })
        })
    }

    /// Whether `url` is the registry's own (scheme, host and port), not a redirect's target.
    fn is_registry(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&self.base).is_ok_and(|base| base.origin() == url.origin())
    }

    fn current_authorization(&self) -> Option<Secret> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    /// The error for credentials the registry did not accept, or for none at all.
    fn refused(&self) -> AuthError {
        let used = self.used.lock().ok().and_then(|u| u.clone());
        match used {
            Some(c) => AuthError::Rejected {
                registry: self.registry.clone(),
                username: c.username,
                origin: c.source,
            },
            None => AuthError::Required {
                registry: self.registry.clone(),
            },
        }
    }

    fn credentials(&self, target: &Target) -> Result<Option<Credentials>, AuthError> {
        if let Some(c) = &self.given {
            return Ok(Some(c.clone()));
        }
        let repository = target.repository.as_deref().unwrap_or("");
        self.settings
            .credential_sources()
            .lookup(&self.registry, repository)
    }

    /// Answers a challenge: basic credentials, or a bearer token from the realm.
    async fn authenticate(
        &self,
        target: &Target,
        challenge: Option<Challenge>,
    ) -> Result<(), Failure> {
        let credentials = self
            .credentials(target)
            .map_err(|e| Failure::Final(e.into()))?;
        if let Ok(mut used) = self.used.lock() {
            used.clone_from(&credentials);
        }
        let value = match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.or_else(|| {
                    let repo = target.repository.as_deref()?;
                    Some(format!("repository:{repo}:pull"))
                });
                let ask = TokenRequest {
                    realm: &realm,
                    service: service.as_deref(),
                    scope: scope.as_deref(),
                };
                let token = self.token(&ask, credentials.as_ref()).await?;
                Secret::new(format!("Bearer {}", token.expose()))
            }
            Some(Challenge::Basic) | None => match &credentials {
                Some(c) => c.basic_header(),
                None => return Err(Failure::Final(self.refused().into())),
            },
        };
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(value);
        }
        Ok(())
    }

    /// A token from the realm, asked with the credentials (basic) or anonymously.
    async fn token(
        &self,
        ask: &TokenRequest<'_>,
        credentials: Option<&Credentials>,
    ) -> Result<Secret, Failure> {
        let failed = |message: String| {
            Failure::Final(
                AuthError::Token {
                    registry: self.registry.clone(),
                    realm: ask.realm.to_owned(),
                    message,
                }
                .into(),
            )
        };
        let mut url = reqwest::Url::parse(ask.realm).map_err(|e| failed(e.to_string()))?;
        let realm_host = url.host_str().unwrap_or("").to_owned();
        let realm_host = match url.port() {
            Some(p) => format!("{realm_host}:{p}"),
            None => realm_host,
        };
        if url.scheme() != "https" && !self.settings.allows_http(&realm_host) {
            return Err(failed("berth sends credentials only over HTTPS".to_owned()));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(s) = ask.service {
                query.append_pair("service", s);
            }
            if let Some(s) = ask.scope {
                query.append_pair("scope", s);
            }
        }
        let mut request = self.http.get(url);
        if let Some(c) = credentials {
            request = request.header(
                header::AUTHORIZATION,
                sensitive(&self.registry, &c.basic_header())?,
            );
        }
        let response = request.send().await.map_err(Failure::Http)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Failure::Final(self.refused().into()));
            }
            other => return Err(failed(format!("HTTP {other}"))),
        }
        let body = read_capped(response, SMALL_BODY)
            .await?
            .ok_or_else(|| failed("its answer is too large".to_owned()))?;
        let answer: auth::TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("its answer is not JSON (line {})", e.line())))?;
        answer
            .into_token()
            .ok_or_else(|| failed("its answer has no token".to_owned()))
    }

    /// Tries `op` until it succeeds, fails for good, or the retries are used up, backing off
    /// (0.5 s, doubling, at most a minute) between attempts; stops when interrupted.
    async fn retrying<T, F, Fut>(
        &self,
        target: &Target,
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
                Err(f) => self.classify(f, target),
            };
            if !retryable || attempt >= self.settings.retries {
                return Err(error);
            }
            let delay = backoff(self.settings.backoff, attempt);
            let error = crate::util::chain(&error);
            tracing::warn!(image = %target.image, "{what} failed ({error}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Turns a failure into berth's error, and says whether trying again could help.
    fn classify(&self, failure: Failure, target: &Target) -> (ImageError, bool) {
        let image = target.image.clone();
        match failure {
            Failure::Final(e) => (e, false),
            Failure::Status { code, body } => classify_status(code, &body, image, &self.registry),
            Failure::Http(e) => self.classify_http(&e, image),
        }
    }

    fn classify_http(&self, e: &reqwest::Error, image: String) -> (ImageError, bool) {
        let message = crate::util::chain(e);
        if e.is_redirect() {
            return (
                ImageError::Registry {
                    reference: image,
                    message,
                },
                false,
            );
        }
        let tls_refused = message.contains("received fatal alert");
        if self.base.starts_with("https:") && (tls_refused || message.contains("certificate")) {
            let certs_d = &self.settings.certs_d;
            let hint = if tls_refused {
                tls::handshake_hint(&self.registry, certs_d)
            } else {
                tls::untrusted_hint(&self.registry, certs_d)
            };
            let untrusted = RegistryError::Untrusted {
                image,
                hint,
                message,
            };
            return (untrusted.into(), false);
        }
        if e.is_connect() || e.is_timeout() {
            let registry = self.registry.clone();
            return (ImageError::Unreachable { registry, message }, true);
        }
        let retry = e.is_body() || e.is_request() || e.is_decode();
        let message = if retry {
            format!("transfer broke: {message}")
        } else {
            message
        };
        (
            ImageError::Registry {
                reference: image,
                message,
            },
            retry,
        )
    }
}

/// The image a request is for (for errors), and its repository (for scopes and URLs).
struct Target {
    image: String,
    repository: Option<String>,
}

impl Target {
    fn of(reference: &ImageRef) -> Target {
        Target {
            image: reference.to_string(),
            repository: Some(reference.repository.clone()),
        }
    }
}

struct TokenRequest<'a> {
    realm: &'a str,
    service: Option<&'a str>,
    scope: Option<&'a str>,
}

/// Refuses a manifest with a layer berth cannot unpack, before any layer is fetched.
fn refuse_unsupported_layers(reference: &ImageRef, bytes: &[u8]) -> Result<(), ImageError> {
    match manifest::unsupported_layer(bytes) {
        Some((layer, media_type)) => Err(RegistryError::LayerMediaType {
            image: reference.to_string(),
            layer,
            media_type,
        }
        .into()),
        None => Ok(()),
    }
}

fn accept() -> String {
    ACCEPTED_MANIFESTS.join(", ")
}

fn writer_size(blob: &Descriptor) -> Result<u64, Failure> {
    blob.size().map_err(|message| {
        Failure::Final(ImageError::BadManifest {
            digest: blob.digest.clone(),
            message,
        })
    })
}

/// A 206 must continue exactly at `offset`; a 200 is the whole blob again.
fn resume_point(target: &Target, response: &reqwest::Response, offset: u64) -> Result<(), Failure> {
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return Ok(());
    }
    let range = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if range.starts_with(&format!("bytes {offset}-")) {
        return Ok(());
    }
    Err(Failure::Final(ImageError::Registry {
        reference: target.image.clone(),
        message: format!("asked for bytes from {offset}, the registry sent {range:?}"),
    }))
}

/// An `Authorization` value, marked so that hyper never logs it.
fn sensitive(registry: &str, value: &Secret) -> Result<HeaderValue, Failure> {
    let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
        let registry = registry.to_owned();
        Failure::Final(AuthError::Unsendable { registry }.into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Whether the response is an OCI image index, as its `Content-Type` says.
fn is_index(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(manifest::OCI_INDEX))
}

/// The digest a registry states for the document it answers with, if it does.
fn digest_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|d| d.to_str().ok())
        .map(str::to_owned)
}

/// Success, or the status and (the start of) the body for [`classify_status`].
async fn check(response: reqwest::Response) -> Result<reqwest::Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = read_capped(response, SMALL_BODY)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    Err(Failure::Status {
        code: status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The body of a document, refused before it is all read when it declares or grows past
/// `cap` bytes: `what` names it in that error.
async fn capped_body(
    target: &Target,
    response: reqwest::Response,
    cap: u64,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    let too_large = |size: String| {
        Failure::Final(ImageError::TooLarge {
            image: target.image.clone(),
            what: format!("its {what} is {size} bytes, more than the cap of {cap}"),
        })
    };
    if let Some(len) = response.content_length().filter(|l| *l > cap) {
        return Err(too_large(len.to_string()));
    }
    read_capped(response, cap)
        .await?
        .ok_or_else(|| too_large(format!("more than {cap}")))
}

/// The body, or `None` as soon as it grows past `cap` (the rest is never read: dropping
/// the response closes the connection).
async fn read_capped(response: reqwest::Response, cap: u64) -> Result<Option<Vec<u8>>, Failure> {
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Failure::Http)?;
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

fn build_http(
    registry: &str,
    https: bool,
    allow_http: bool,
    dirs: &[PathBuf],
) -> Result<reqwest::Client, RegistryError> {
    let files = tls::load(dirs).map_err(|source| RegistryError::Tls {
        registry: registry.to_owned(),
        source,
    })?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .redirect(tls::redirect_policy(allow_http))
        // HTTP/1.1 only, as before object_store's reqwest features brought HTTP/2 in: over
        // an h2 connection a registry that refuses the client certificate shows only as
        // "connection closed", and the hint to give certs.d a client pair is lost.
        .http1_only();
    if is_loopback(registry) {
        // reqwest reads https_proxy, http_proxy, all_proxy and no_proxy by itself; a registry
        // on this host is never reached through a proxy, whatever no_proxy lists (curl and
        // Go's proxy rules, too, never send loopback to one).
        builder = builder.no_proxy();
    }
    if !https && is_loopback(registry) {
        // A loopback registry is spoken to over plain HTTP, yet building the HTTP client
        // would load and parse the system's ~150 TLS roots: most of a tag lookup's 20 ms.
        // A single trust anchor whose private key no longer exists stands in for them, so
        // a redirect from such a registry to some HTTPS host cannot be trusted.
        let none =
            reqwest::Certificate::from_pem(NO_TRUST_ANCHORS.as_bytes()).map_err(|source| {
                RegistryError::Client {
                    registry: registry.to_owned(),
                    source,
                }
            })?;
        builder = builder.tls_certs_only([none]);
    } else if !dirs.is_empty() {
        // certs.d files need berth's own verifier (a registry's self-signed certificate,
        // pinned), so the whole TLS configuration is built here rather than by reqwest.
        let config = tls::client_config(files).map_err(|source| RegistryError::Tls {
            registry: registry.to_owned(),
            source,
        })?;
        builder = builder.tls_backend_preconfigured(config);
    }
    builder.build().map_err(|source| RegistryError::Client {
        registry: registry.to_owned(),
        source,
    })
}

fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(Duration::from_secs(60))
}

enum Failure {
    Http(reqwest::Error),
    Status { code: u16, body: String },
    Final(ImageError),
}

/// An HTTP error status: 5xx and 429 may pass; an OCI error body says more.
fn classify_status(code: u16, body: &str, reference: String, registry: &str) -> (ImageError, bool) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<OciError>,
    }
    #[derive(serde::Deserialize)]
    struct OciError {
        code: String,
        #[serde(default)]
        message: String,
    }
    let envelope = serde_json::from_str::<Envelope>(body).ok();
    let codes: Vec<&str> = envelope
        .iter()
        .flat_map(|e| e.errors.iter().map(|e| e.code.as_str()))
        .collect();
    let mut message = match &envelope {
        Some(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            format!("HTTP {code}: {}", parts.join("; "))
        }
        _ => format!("HTTP {code}"),
    };
    if body.contains("HTTP request to an HTTPS server") {
        message.push_str(
            " (it speaks HTTPS: give berth its CA in a certs.d directory named after it)",
        );
    }
    let any = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(c));
    if code == 404 || any(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"]) {
        return (ImageError::NotFound { reference }, false);
    }
    if matches!(code, 401 | 403) || any(&["UNAUTHORIZED", "DENIED"]) {
        return (ImageError::Unauthorized { reference, message }, false);
    }
    if matches!(code, 429 | 500..=599) {
        // A registry that is busy or down: worth retrying, and (for a stored tag) worth
        // running the stored image over.
        let status = StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map_or_else(|| code.to_string(), |reason| format!("{code} {reason}"));
        let unavailable = ImageError::Unavailable {
            registry: registry.to_owned(),
            reference,
            status,
            message,
        };
        return (unavailable, true);
    }
    (ImageError::Registry { reference, message }, false)
}

// Small documents of a known kind (signatures): read whole, but never past a cap.
impl RegistryClient {
    /// The manifest `reference` names (a tag or digest), asking for `accept`; refused as
    /// soon as it passes `cap` bytes, whatever it declares.
    pub fn fetch_small_manifest(
        &self,
        reference: &ImageRef,
        accept: &[&str],
        cap: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let target = Target::of(reference);
        let url = self.named_manifest_url(reference);
        let accept = accept.join(", ");
        let (bytes, _) = self.block_on(
            &target,
            self.retrying(&target, "fetch manifest", || {
                self.fetch_capped(&target, &url, &accept, cap, "manifest")
            }),
        )?;
        Ok(bytes)
    }

    /// What the registry's OCI 1.1 referrers API lists for `subject` in `reference`'s
    /// repository: an image index, refused as soon as it passes `cap` bytes. `None` when
    /// the registry has no referrers API: it answers 404 (as Distribution 2 does), 400 or
    /// 406, or with something other than an image index. Only the first page is read.
    pub fn fetch_referrers(
        &self,
        reference: &ImageRef,
        subject: &Digest,
        cap: u64,
    ) -> Result<Option<Vec<u8>>, ImageError> {
        let target = Target::of(reference);
        let url = format!(
            "{}/v2/{}/referrers/{subject}",
            self.base, reference.repository
        );
        let what = format!("referrers index of {subject}");
        self.block_on(
            &target,
            self.retrying(&target, "list referrers", || async {
                let response = self
                    .send(&target, &|c| {
                        c.get(&url).header(header::ACCEPT, manifest::OCI_INDEX)
                    })
                    .await?;
                if matches!(response.status().as_u16(), 400 | 404 | 406) {
                    return Ok(None);
                }
                let response = check(response).await?;
                if !is_index(&response) {
                    return Ok(None);
                }
                capped_body(&target, response, cap, &what).await.map(Some)
            }),
        )
    }

    /// The blob `blob` of `reference`'s repository, refused as soon as it passes `cap`
    /// bytes (whatever it declares), then checked against its digest.
    pub fn fetch_small_blob(
        &self,
        reference: &ImageRef,
        blob: &Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let target = Target::of(reference);
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.base, reference.repository, blob.digest
        );
        let what = format!("blob {}", blob.digest);
        let (bytes, _) = self.block_on(
            &target,
            self.retrying(&target, "fetch blob", || {
                self.fetch_capped(&target, &url, "*/*", cap, &what)
            }),
        )?;
        let actual = Digest::of(&bytes);
        if actual != blob.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob of {reference}"),
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

    #[test]
    fn statuses_are_classified_by_their_oci_error_codes() {
        let r = || "reg/x:1".to_owned();
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#;
        assert!(matches!(
            classify_status(404, body, r(), "reg").0,
            ImageError::NotFound { .. }
        ));
        let (e, retry) = classify_status(503, "down", r(), "reg");
        assert!(retry && e.to_string().contains("HTTP 503"), "{e}");
        assert!(e.to_string().contains("503 Service Unavailable"), "{e}");
        let (e, retry) = classify_status(429, "", r(), "reg");
        assert!(retry && matches!(e, ImageError::Unavailable { .. }), "{e}");
        let body = r#"{"errors":[{"code":"DENIED","message":"nope"}]}"#;
        let (e, retry) = classify_status(403, body, r(), "reg");
        assert!(
            !retry && matches!(e, ImageError::Unauthorized { .. }),
            "{e}"
        );
        let (e, _) = classify_status(
            400,
            "Client sent an HTTP request to an HTTPS server.",
            r(),
            "reg",
        );
        assert!(e.to_string().contains("certs.d"), "{e}");
    }

    #[test]
    fn a_registry_with_a_certs_dir_is_spoken_to_over_https() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("certs.d/127.0.0.1:5999")).unwrap();
        let settings = RegistrySettings {
            certs_d: vec![dir.path().join("none"), dir.path().join("certs.d")],
            ..Default::default()
        };
        let r = ImageRef::parse("127.0.0.1:5999/a/b:1").unwrap();
        let c = RegistryClient::new(&r, &settings).unwrap();
        assert_eq!(c.base, "https://127.0.0.1:5999");
        let r = ImageRef::parse("127.0.0.1:5998/a/b:1").unwrap();
        let c = RegistryClient::new(&r, &settings).unwrap();
        assert_eq!(c.base, "http://127.0.0.1:5998");
    }
}
