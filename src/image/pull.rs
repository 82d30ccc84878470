//! Pulling: a reference resolved to a manifest for this host's platform, every blob it
//! needs fetched into the content store (or loaded from a layout or an archive), verified,
//! and the image's record written. The signature policy decides for every reference and
//! digest, stored or not: a digest-pinned image stored under its repository and accepted by
//! the policy in force makes no network request at all. A tag is asked for as the pull
//! policy says ([`PullPolicy`]): by default it costs one HEAD and nothing more while its
//! digest is unchanged; `always` GETs its manifest; `missing` and `never` ask no registry
//! about a stored tag, and never run stored bytes the policy has not accepted.

use std::path::Path;

use super::content::Store;
use super::distribution::transport::{self, Transport};
use super::distribution::{PullPolicy, RegistryClient, RegistrySettings};
use super::layers::{Stack, UnpackCaps, Unpacking, stack_path};
use super::spec::digest::chain_id;
use super::spec::manifest::{
    Descriptor, ImageConfig, ImageIndex, ImageManifest, MAX_METADATA_BYTES, Manifest,
    host_architecture,
};
use super::spec::record::{Accepted, ImageRecord};
use super::spec::reference::parse_reference;
use super::spec::{Digest, ImageError, ImageRef};
use super::verify::{Gate, LocalImage, Rules, SignaturePolicy, SignatureSource, check_local};

/// Where manifests and indexes are read from: the store, or the registry through it.
/// `None`: not there.
type DocumentSource<'a> = dyn FnMut(&Digest) -> Result<Option<Vec<u8>>, ImageError> + 'a;

/// An image whose manifest, config and layers (or unpacked rootfs) are all stored.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as the job named it, normalised.
    pub reference: String,
    /// The digest of the platform manifest that runs.
    pub digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// Blobs and bytes this pull fetched from the registry (0 when all were stored).
    pub fetched_blobs: usize,
    pub fetched_bytes: u64,
}

/// Fills the store from registries, layouts and archives (see [`super::Images::puller`]).
#[derive(Debug)]
pub struct Puller<'a> {
    pub(super) store: &'a Store,
    pub(super) registry: &'a RegistrySettings,
    pub(super) policy: &'a SignaturePolicy,
    pub(super) caps: UnpackCaps,
    /// How the caller unpacks: layer blobs of an image unpacked so already are not fetched.
    pub(super) unpacking: Option<Unpacking>,
}

/// The registry client as the signature check reads it. The check names the image by its
/// own name (the policy's scope); its signatures are fetched where its bytes come from,
/// `at` (a mirror or another location), in the same place below the repository.
struct RegistrySignatures<'a> {
    client: &'a RegistryClient,
    at: &'a ImageRef,
}

impl RegistrySignatures<'_> {
    fn located(&self, reference: &ImageRef) -> ImageRef {
        ImageRef {
            registry: self.at.registry.clone(),
            repository: self.at.repository.clone(),
            ..reference.clone()
        }
    }
}

impl SignatureSource for RegistrySignatures<'_> {
    fn small_manifest(
        &self,
        reference: &ImageRef,
        accept: &[&str],
        cap: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let at = self.located(reference);
        self.client.fetch_small_manifest(&at, accept, cap)
    }

    fn small_blob(
        &self,
        reference: &ImageRef,
        blob: &Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>, ImageError> {
        self.client
            .fetch_small_blob(&self.located(reference), blob, cap)
    }

    fn referrers(
        &self,
        reference: &ImageRef,
        subject: &Digest,
        cap: u64,
    ) -> Result<Option<Vec<u8>>, ImageError> {
        self.client
            .fetch_referrers(&self.located(reference), subject, cap)
    }
}

/// A layout or archive as the signature policy names it.
fn local_image(from: &Transport) -> LocalImage<'_> {
    let (transport, reference) = match from {
        Transport::OciLayout { reference, .. } => ("oci", reference),
        Transport::DockerArchive { reference, .. } => ("docker-archive", reference),
    };
    LocalImage {
        transport,
        path: from.path(),
        reference: reference.as_deref(),
        name: from.name(),
    }
}

impl Puller<'_> {
    /// Skips fetching the layer blobs of an image already unpacked as `unpacking` says (the
    /// caller unpacks next, and needs only the stack).
    #[must_use]
    pub fn with_unpacked(mut self, unpacking: Unpacking) -> Self {
        self.unpacking = Some(unpacking);
        self
    }

    pub fn pull(&self, reference: &str) -> Result<PulledImage, ImageError> {
        let image = self.pull_untouched(reference)?;
        self.store.touch(&image.reference)?;
        Ok(image)
    }

    fn pull_untouched(&self, reference: &str) -> Result<PulledImage, ImageError> {
        if let Some(transport) = Transport::parse(reference) {
            return self.load(&transport?);
        }
        // A short name is resolved once, here, as registries.conf says: everything after
        // (the record, the pull policy, the signature policy's scope) sees its full name.
        let parsed = parse_reference(&self.registry.registries.qualify(reference)?)?;
        let gate = Gate::load(self.policy.path.as_deref(), &self.policy.looked)?;
        // The policy decides for every reference and digest a pull uses, stored or not: a
        // digest another reference stored is not accepted under this one until its own
        // rules say so.
        let rules = gate.rules(&parsed);
        let accepted = rules.acceptance();
        let name = parsed.to_string();
        if let Some(image) = self.settled(&parsed, &name, &rules, &accepted)? {
            return Ok(image);
        }
        self.refuse_unsettled(&parsed, &name, &rules)?;
        // `at` is where the bytes come from; the image keeps its own name (`parsed`, `name`)
        // for the record and the signature policy.
        let (client, at) = self.open(&parsed)?;
        let top = match &parsed.digest {
            Some(d) => d.clone(),
            None => self.resolve(&client, &at, &name, None)?,
        };
        if !self.known(&parsed, &top, &rules) {
            let source = RegistrySignatures {
                client: &client,
                at: &at,
            };
            rules.check(&source, &parsed, &top)?;
            if parsed.digest.is_some() {
                // A digest the store never saw in this repository (perhaps another's
                // bytes): the registry must have it there.
                self.resolve(&client, &at, &name, Some(&top))?;
            }
        }
        if let Some(image) = self.load_local(&name, &top, Some(&accepted))? {
            tracing::debug!(image = %name, digest = %top, "image unchanged since it was stored");
            return Ok(image);
        }
        self.fetch(&client, &at, &name, &top, &accepted)
    }

    /// A client for where `image` is pulled from (registries.conf): the first of its
    /// mirrors that has it, else its location. A mirror is asked once, with a `HEAD` and
    /// no retries: one that is down or lacks the image passes to the next at once.
    fn open(&self, image: &ImageRef) -> Result<(RegistryClient, ImageRef), ImageError> {
        let sources = self.registry.registries.sources(image)?;
        // Said here rather than where the files are read: here the line names its job.
        tracing::debug!(files = ?self.registry.registries.files, "registries.conf files read");
        for source in sources.iter().filter(|s| s.mirror) {
            match self.probe(&source.image) {
                Ok(()) => {
                    tracing::debug!(image = %image, mirror = %source.image, "pulling from a mirror");
                    let client = RegistryClient::new(&source.image, self.registry)?;
                    return Ok((client, source.image.clone()));
                }
                Err(e) => {
                    tracing::debug!(image = %image, mirror = %source.image, "mirror passed over: {e}")
                }
            }
        }
        // The location is the last source: `sources` always ends with it.
        let at = sources
            .last()
            .map_or_else(|| image.clone(), |s| s.image.clone());
        if at != *image {
            tracing::debug!(image = %image, location = %at, "pulling from its registries.conf location");
        }
        Ok((RegistryClient::new(&at, self.registry)?, at))
    }

    /// Whether the mirror has `at`: one `HEAD`, without retries.
    fn probe(&self, at: &ImageRef) -> Result<(), ImageError> {
        let once = RegistrySettings {
            retries: 0,
            ..self.registry.clone()
        };
        RegistryClient::new(at, &once)?.head(at).map(drop)
    }

    /// The image as the store alone can give it, accepted by `rules`, when the pull policy
    /// lets it stand without asking a registry: a pinned digest known in its repository
    /// (its bytes cannot change), or, under `missing` and `never`, a stored tag.
    fn settled(
        &self,
        image: &ImageRef,
        name: &str,
        rules: &Rules<'_>,
        accepted: &Accepted,
    ) -> Result<Option<PulledImage>, ImageError> {
        let top = match &image.digest {
            Some(d) => d.clone(),
            None if matches!(self.registry.pull, PullPolicy::Missing | PullPolicy::Never) => {
                match self.store.find_record(name) {
                    Some(rec) => rec.digest,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        if !self.known(image, &top, rules) {
            return Ok(None);
        }
        let found = self.load_local(name, &top, Some(accepted))?;
        if found.is_some() {
            tracing::debug!(image = %name, digest = %top, "stored and accepted: no registry asked");
        }
        Ok(found)
    }

    /// Refuses, under `never` and `missing`, an image the store cannot settle by itself
    /// (see [`Puller::settled`]): under `never` any such image; under `missing` one whose
    /// bytes are stored but whose acceptance only its registry can confirm (a digest never
    /// seen in this repository, a tag stored under other rules) — the stored bytes are
    /// never run unconfirmed.
    fn refuse_unsettled(
        &self,
        image: &ImageRef,
        name: &str,
        rules: &Rules<'_>,
    ) -> Result<(), ImageError> {
        let policy = self.registry.pull;
        if !matches!(policy, PullPolicy::Missing | PullPolicy::Never) {
            return Ok(());
        }
        let unconfirmed = match &image.digest {
            Some(d) => (self.store.has_blob(d) && !self.known(image, d, rules))
                .then(|| format!("its digest {d} was never accepted in {}", image.repository)),
            None => self
                .store
                .find_record(name)
                .filter(|rec| !rules.accepted(rec, &rec.digest))
                .map(|rec| {
                    format!(
                        "the signature policy in force has not accepted its {} yet",
                        rec.digest
                    )
                }),
        };
        match (unconfirmed, policy) {
            (Some(why), _) => Err(ImageError::Unconfirmed {
                reference: name.to_owned(),
                why,
                policy: policy.as_str(),
            }),
            (None, PullPolicy::Never) => Err(ImageError::NotStored {
                reference: name.to_owned(),
                hint: ", and under --pull never no registry is asked: `berth pull` it \
                       first, or use --pull missing"
                    .to_owned(),
            }),
            (None, _) => Ok(()),
        }
    }

    /// Whether the store knows `top` in `image`'s repository as accepted by `rules`: from
    /// the record of this very reference, or, for a pinned one, of any reference of the
    /// same repository (the registry confirmed the digest there when it was recorded).
    fn known(&self, image: &ImageRef, top: &Digest, rules: &Rules<'_>) -> bool {
        let name = image.to_string();
        if let Some(rec) = self.store.find_record(&name) {
            return rules.accepted(&rec, top);
        }
        image.digest.is_some()
            && self.store.records().iter().any(|rec| {
                let same_repository = parse_reference(&rec.reference).is_ok_and(|other| {
                    other.registry == image.registry && other.repository == image.repository
                });
                same_repository && rules.accepted(rec, top)
            })
    }

    /// What a tag points at now, or that the registry has a pinned digest in this
    /// repository; under `newer`, for a tag, the stored image when the registry cannot be
    /// reached or cannot answer now (429, 5xx).
    fn resolve(
        &self,
        client: &RegistryClient,
        r: &ImageRef,
        name: &str,
        pinned: Option<&Digest>,
    ) -> Result<Digest, ImageError> {
        let newer = self.registry.pull == PullPolicy::Newer;
        // A HEAD pays only when there is a stored digest to compare with: a tag pulled for
        // the first time needs its document anyway.
        let stored = self.store.find_record(name).is_some();
        let answer = if newer && pinned.is_none() && stored {
            self.check_tag(client, r)
        } else {
            self.fetch_named(client, r, name, pinned)
        };
        match answer {
            Err(e) if newer && pinned.is_none() => {
                match (stale_reason(&e), self.store.find_record(name)) {
                    (Some(reason), Some(rec)) => {
                        tracing::warn!("{reason}; running the stored {name} ({})", rec.digest);
                        Ok(rec.digest)
                    }
                    _ => Err(e),
                }
            }
            answer => answer,
        }
    }

    /// What a tag points at now, asked with a `HEAD`; the manifest is fetched (by its
    /// digest, so verified) only when the store lacks it: an unchanged tag costs one HEAD.
    fn check_tag(&self, client: &RegistryClient, r: &ImageRef) -> Result<Digest, ImageError> {
        let Some(digest) = client.head(r)? else {
            return self.fetch_named(client, r, &r.to_string(), None);
        };
        if !self.store.has_blob(&digest) {
            let bytes = client.manifest(r, &digest)?;
            self.store.put_blob(&digest, &bytes)?;
        }
        Ok(digest)
    }

    /// The document `r` names, fetched (one GET), and checked against `pinned`.
    fn fetch_named(
        &self,
        client: &RegistryClient,
        r: &ImageRef,
        name: &str,
        pinned: Option<&Digest>,
    ) -> Result<Digest, ImageError> {
        match client.resolve(r) {
            Ok((digest, bytes)) => {
                if let Some(pinned) = pinned.filter(|p| **p != digest) {
                    return Err(ImageError::DigestMismatch {
                        what: format!("manifest of {name}"),
                        expected: pinned.clone(),
                        actual: digest,
                    });
                }
                // The document is what a pull reads next; it is kept, verified by its digest.
                if !self.store.has_blob(&digest) {
                    self.store.put_blob(&digest, &bytes)?;
                }
                Ok(digest)
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches what is missing of the image behind `top` and records it.
    fn fetch(
        &self,
        client: &RegistryClient,
        r: &ImageRef,
        name: &str,
        top: &Digest,
        accepted: &Accepted,
    ) -> Result<PulledImage, ImageError> {
        let mut from_registry = |d: &Digest| self.manifest_bytes(client, r, d).map(Some);
        let (digest, manifest) = self
            .platform_manifest(name, top, &mut from_registry)?
            .ok_or_else(|| ImageError::NotFound {
                reference: name.to_owned(),
            })?;
        let mut fetched = (0, 0);
        check_config_size(name, &manifest.config)?;
        check_layer_sizes(name, &manifest.layers, self.caps.bytes)?;
        let new_config = !self.store.has_blob(&manifest.config.digest);
        if new_config {
            // A config berth has not seen is a new image: the layer blobs it lacks come
            // beside the config, a round trip sooner than after reading it.
            let wanted: Vec<Descriptor> = std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .cloned()
                .collect();
            let (_locks, missing) = self.store.lock_missing(&wanted)?;
            fetched.1 += client.fetch_blobs(r, &missing, self.store, true)?;
            fetched.0 += missing.len();
        }
        let config = self.read_config(&manifest.config.digest, manifest.layers.len())?;
        let needed: &[Descriptor] = if new_config || self.have_rootfs(&config) {
            &[]
        } else {
            &manifest.layers
        };
        let (_locks, missing) = self.store.lock_missing(needed)?;
        fetched.1 += client.fetch_blobs(r, &missing, self.store, true)?;
        fetched.0 += missing.len();
        let accepted = Some(accepted.clone());
        self.store
            .save_record(&record(name, top, &digest, &manifest, accepted))?;
        Ok(PulledImage {
            reference: name.to_owned(),
            digest,
            config,
            layers: manifest.layers,
            fetched_blobs: fetched.0,
            fetched_bytes: fetched.1,
        })
    }

    /// Loads an image from an OCI layout or a `docker save` archive into the store.
    fn load(&self, from: &Transport) -> Result<PulledImage, ImageError> {
        check_local(self.policy.path.as_deref(), &local_image(from))?;
        let name = from.name();
        let top = match from {
            Transport::OciLayout { dir, reference } => {
                self.load_layout(dir, reference.as_deref(), &name)?
            }
            Transport::DockerArchive { file, reference } => {
                transport::docker_archive::load(self.store, file, reference.as_deref(), &name)?
            }
        };
        tracing::debug!(image = %name, digest = %top, "loaded");
        self.load_local(&name, &top, None)?
            .ok_or(ImageError::NotFound { reference: name })
    }

    /// Copies what the store lacks of the image `reference` names in the layout at `dir`.
    fn load_layout(
        &self,
        dir: &Path,
        reference: Option<&str>,
        name: &str,
    ) -> Result<Digest, ImageError> {
        let layout = transport::oci_layout::Layout::open(dir, name)?;
        let top = layout.top(self.store, reference)?;
        let mut from_layout = |d: &Digest| match self.store.read_blob(d)? {
            Some(bytes) => Ok(Some(bytes)),
            None => layout.document(self.store, d, None).map(Some),
        };
        let (_, manifest) = self
            .platform_manifest(name, &top, &mut from_layout)?
            .ok_or_else(|| ImageError::NotFound {
                reference: name.to_owned(),
            })?;
        check_config_size(name, &manifest.config)?;
        check_layer_sizes(name, &manifest.layers, self.caps.bytes)?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            layout.copy_blob(self.store, blob)?;
        }
        Ok(top)
    }

    /// Writes `image` (pulled first if it is not stored) as an OCI layout where `target`
    /// (`oci:PATH[:REF]`) says, named REF or else the image's tag or `latest`. Returns the
    /// digest of the manifest written.
    pub fn save(&self, image: &str, target: &str) -> Result<Digest, ImageError> {
        let (dir, reference) = match Transport::parse(target) {
            Some(Ok(Transport::OciLayout { dir, reference })) => (dir, reference),
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(ImageError::Reference {
                    reference: target.to_owned(),
                    message: "berth save writes only an OCI layout: oci:PATH[:REF]".to_owned(),
                });
            }
        };
        let pulled = self.pull(image)?;
        let reference = reference
            .or_else(|| parse_reference(image).ok().and_then(|r| r.tag))
            .unwrap_or_else(|| "latest".to_owned());
        transport::oci_layout::save(self.store, &pulled.digest, &dir, &reference)
    }

    /// The manifest for this platform behind `top` (itself, or its pick from an index),
    /// reading documents through `get`; `None` when `get` has not got one of them.
    fn platform_manifest(
        &self,
        name: &str,
        top: &Digest,
        get: &mut DocumentSource<'_>,
    ) -> Result<Option<(Digest, ImageManifest)>, ImageError> {
        let parse = |digest: &Digest, bytes: &[u8]| {
            Manifest::parse(bytes).map_err(|message| ImageError::BadManifest {
                digest: digest.clone(),
                message,
            })
        };
        let Some(bytes) = get(top)? else {
            return Ok(None);
        };
        let index = match parse(top, &bytes)? {
            Manifest::Image(m) => return Ok(Some((top.clone(), m))),
            Manifest::Index(index) => index,
        };
        let entry = self.pick_platform(name, &index)?;
        let declared = declared_metadata_size(name, "manifest", entry)?;
        let Some(bytes) = get(&entry.digest)? else {
            return Ok(None);
        };
        if bytes.len() as u64 != declared {
            return Err(ImageError::SizeMismatch {
                digest: entry.digest.clone(),
                expected: declared,
                actual: bytes.len().to_string(),
            });
        }
        match parse(&entry.digest, &bytes)? {
            Manifest::Image(m) => Ok(Some((entry.digest.clone(), m))),
            Manifest::Index(_) => Err(ImageError::BadManifest {
                digest: entry.digest.clone(),
                message: "an index inside an index".to_owned(),
            }),
        }
    }

    /// Whether the layers of the image with `config` are unpacked already for the unpacker
    /// given (see [`Puller::with_unpacked`]): then its layer blobs need not be fetched.
    fn have_rootfs(&self, config: &ImageConfig) -> bool {
        let Some(unpacking) = &self.unpacking else {
            return false;
        };
        chain_id(&config.rootfs.diff_ids)
            .is_some_and(|c| Stack::open(&stack_path(self.store, &c, unpacking)).is_ok())
    }

    fn pick_platform<'a>(
        &self,
        name: &str,
        index: &'a ImageIndex,
    ) -> Result<&'a Descriptor, ImageError> {
        index
            .pick_host_platform()
            .ok_or_else(|| ImageError::NoPlatform {
                reference: name.to_owned(),
                arch: host_architecture().to_owned(),
                available: index.platforms().join(", "),
            })
    }

    fn manifest_bytes(
        &self,
        client: &RegistryClient,
        r: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<u8>, ImageError> {
        if let Some(bytes) = self.store.read_blob(digest)? {
            return Ok(bytes);
        }
        let bytes = client.manifest(r, digest)?;
        self.store.put_blob(digest, &bytes)?;
        Ok(bytes)
    }

    fn read_config(&self, digest: &Digest, layers: usize) -> Result<ImageConfig, ImageError> {
        let bytes = self
            .store
            .read_blob(digest)?
            .ok_or_else(|| ImageError::BadConfig {
                message: format!("config {digest} is missing from the store"),
            })?;
        let config =
            ImageConfig::parse(&bytes).map_err(|message| ImageError::BadConfig { message })?;
        if config.rootfs.diff_ids.len() != layers {
            return Err(ImageError::BadConfig {
                message: format!(
                    "config {digest} lists {} layers but the manifest has {layers}",
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        Ok(config)
    }

    /// The image behind `top` if everything needed to run it is stored; `None` if anything
    /// is missing (and must be fetched). Its record says `accepted` from now on.
    fn load_local(
        &self,
        name: &str,
        top: &Digest,
        accepted: Option<&Accepted>,
    ) -> Result<Option<PulledImage>, ImageError> {
        let mut from_store = |d: &Digest| self.store.read_blob(d);
        let Some((digest, manifest)) = self.platform_manifest(name, top, &mut from_store)? else {
            return Ok(None);
        };
        if !self.store.has_blob(&manifest.config.digest) {
            return Ok(None);
        }
        let config = self.read_config(&manifest.config.digest, manifest.layers.len())?;
        let layers_stored = manifest
            .layers
            .iter()
            .all(|l| self.store.has_blob(&l.digest));
        if !self.have_rootfs(&config) && !layers_stored {
            return Ok(None);
        }
        if self
            .store
            .find_record(name)
            .is_none_or(|rec| rec.digest != *top || rec.accepted.as_ref() != accepted)
        {
            let accepted = accepted.cloned();
            self.store
                .save_record(&record(name, top, &digest, &manifest, accepted))?;
        }
        Ok(Some(PulledImage {
            reference: name.to_owned(),
            digest,
            config,
            layers: manifest.layers,
            fetched_blobs: 0,
            fetched_bytes: 0,
        }))
    }
}

/// Why a registry could not say what a tag points at now, when another time may do (it is
/// unreachable, busy or failing): then the stored image may run.
fn stale_reason(e: &ImageError) -> Option<String> {
    match e {
        ImageError::Unreachable { .. } => Some(crate::util::chain(e)),
        ImageError::Unavailable {
            registry, status, ..
        } => Some(format!("registry {registry} answered {status}")),
        _ => None,
    }
}

/// Refuses a config declared larger than any config is, before a byte of it is read.
fn check_config_size(name: &str, config: &Descriptor) -> Result<(), ImageError> {
    declared_metadata_size(name, "config", config).map(drop)
}

/// The size `what` (a manifest, a config) declares, refused when it is not a size or
/// larger than any such document is, before a byte of it is read.
fn declared_metadata_size(
    name: &str,
    what: &str,
    descriptor: &Descriptor,
) -> Result<u64, ImageError> {
    let size = descriptor
        .size()
        .map_err(|message| ImageError::BadManifest {
            digest: descriptor.digest.clone(),
            message,
        })?;
    if size > MAX_METADATA_BYTES {
        return Err(ImageError::TooLarge {
            image: name.to_owned(),
            what: format!(
                "its {what} {} declares {size} bytes, more than the cap of {}",
                descriptor.digest, MAX_METADATA_BYTES
            ),
        });
    }
    Ok(size)
}

/// Refuses an image whose layers declare more bytes than the image may unpack to, before
/// a byte of them is fetched: gzip and zstd add at most a few bytes per 64 KiB to what they
/// cannot compress, so such layers would be refused once unpacked, after filling the disk.
fn check_layer_sizes(name: &str, layers: &[Descriptor], cap: u64) -> Result<(), ImageError> {
    let mut total = 0u64;
    for layer in layers {
        let size = layer.size().map_err(|message| ImageError::BadManifest {
            digest: layer.digest.clone(),
            message,
        })?;
        total = total.saturating_add(size);
    }
    if total > cap.saturating_add(cap / 1024) {
        return Err(ImageError::TooLarge {
            image: name.to_owned(),
            what: format!(
                "its layers declare {total} bytes, more than the {cap} it may unpack to \
                 (--max-image-bytes raises it)"
            ),
        });
    }
    Ok(())
}

/// What `name` resolved to: `top` in the registry, `digest` for this platform.
fn record(
    name: &str,
    top: &Digest,
    digest: &Digest,
    manifest: &ImageManifest,
    accepted: Option<Accepted>,
) -> ImageRecord {
    ImageRecord {
        reference: name.to_owned(),
        digest: top.clone(),
        manifest: digest.clone(),
        config: manifest.config.digest.clone(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        size: manifest.layers.iter().filter_map(|l| l.size().ok()).sum(),
        pulled_at: crate::util::unix_now(),
        last_used: crate::util::unix_now(),
        accepted,
    }
}
