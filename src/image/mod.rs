//! Images: registry → content store → rootfs cache.
//!
//! [`Images::pull`] resolves a reference to a manifest for this host's platform and makes
//! sure every blob it needs is in the [`store`](store::Store), verified. The signature
//! policy decides for every reference and digest, stored or not; a digest-pinned image
//! stored under its repository and accepted by the policy in force makes no network request
//! at all, and a tag costs one GET and nothing more while its digest is unchanged. [`Images::rootfs`] then unpacks each layer
//! once into the shared, read-only layer store. An OCI layout or a `docker save` archive
//! ([`transport`]) fills the same store, as strictly checked, without any registry.

pub mod auth;
pub mod digest;
pub mod layers;
pub mod manifest;
pub mod members;
pub mod policy;
pub mod prune;
pub mod reference;
pub mod registry;
pub mod rootfs;
mod shift;
pub mod signature;
pub mod store;
pub mod tls;
pub mod transport;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use digest::Digest;
pub use manifest::{Descriptor, ImageConfig, Manifest};
pub use reference::ImageRef;
pub use registry::RegistrySettings;
pub use rootfs::{RootfsView, ViewDirs};
pub use shift::ShiftError;
pub use store::{ImageRecord, Store};
pub use unpack::Ownership;

use crate::contract::ErrorClass;
use crate::host::IdMap;
use crate::interrupt::Interrupted;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("image {reference} not found in the registry")]
    NotFound { reference: String },
    #[error("not authorized to pull {reference}: {message}")]
    Unauthorized { reference: String, message: String },
    #[error("registry error for {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: String,
    },
    #[error("invalid manifest {digest}: {message}")]
    BadManifest { digest: Digest, message: String },
    #[error("image {reference} has no manifest for linux/{arch} (it has: {available})")]
    NoPlatform {
        reference: String,
        arch: String,
        available: String,
    },
    #[error("invalid image config: {message}")]
    BadConfig { message: String },
    #[error("layer {layer} is refused: entry {path} {why}")]
    LayerEscape {
        layer: Digest,
        path: PathBuf,
        why: String,
    },
    #[error("image cannot be moved into the container id range")]
    Shift(#[from] ShiftError),
    #[error("layer {layer} cannot be unpacked: {message}")]
    BadLayer { layer: Digest, message: String },
    #[error("image store {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: {message}")]
    Transport { image: String, message: String },
    #[error("image {image}: cannot read the layout")]
    Layout {
        image: String,
        #[source]
        source: crate::confined::ConfinedError,
    },
    #[error("image {image} is refused: {what}")]
    TooLarge { image: String, what: String },
    #[error("the pull of {image} did not finish within {timeout:?} (--pull-timeout)")]
    PullTimeout {
        image: String,
        timeout: std::time::Duration,
    },
    #[error(
        "gave up waiting {waited:?} for another berth fetching or unpacking {what}: it holds \
         the lock {lock} (--pull-timeout)"
    )]
    LockTimeout {
        what: String,
        lock: PathBuf,
        waited: std::time::Duration,
    },
    #[error(transparent)]
    Access(registry::RegistryError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Signature(#[from] signature::SignatureError),
}

impl ImageError {
    /// Whose fault it is: a malformed reference is the user's; an unreachable registry, a
    /// missing, broken or hostile image, and the host are berth's side (contract §7). Every
    /// variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            // A layout or archive the user named that is missing or not one.
            ImageError::Reference { .. }
            | ImageError::Transport { .. }
            | ImageError::Layout { .. }
            // The operator's policy refuses the image, or cannot be read.
            | ImageError::Signature(_) => ErrorClass::User,
            ImageError::Access(e) => e.class(),
            ImageError::Unreachable { .. }
            | ImageError::NotFound { .. }
            | ImageError::Unauthorized { .. }
            | ImageError::Registry { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::BadManifest { .. }
            | ImageError::NoPlatform { .. }
            | ImageError::BadConfig { .. }
            | ImageError::LayerEscape { .. }
            | ImageError::TooLarge { .. }
            | ImageError::PullTimeout { .. }
            | ImageError::LockTimeout { .. }
            | ImageError::BadLayer { .. }
            | ImageError::Shift(_)
            | ImageError::Store { .. }
            | ImageError::Host(_)
            | ImageError::Interrupted(_) => ErrorClass::Internal,
        }
    }
}

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

/// The local image store and the way to fill it.
#[derive(Debug)]
pub struct Images {
    store: Store,
    settings: RegistrySettings,
    unpacking: Unpacking,
    /// Who uses the trees this process leases (see [`prune`]): a job, or this berth.
    holder: String,
}

/// Who owns the files of an unpacked image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacking {
    pub ownership: Ownership,
    /// With the image's own owners, moved into this container id range (a tree is unpacked
    /// once per range).
    pub ids: Option<IdMap>,
}

impl Unpacking {
    /// The image's own owners (shifted into `ids`) where berth may set owners, else the
    /// unpacker's.
    pub fn new(privileged: bool, ids: Option<IdMap>) -> Unpacking {
        let ownership = if privileged {
            Ownership::Preserve
        } else {
            Ownership::Ignore
        };
        Unpacking { ownership, ids }
    }
}

/// Parses `host/repo:tag`, `host/repo@sha256:…` or `host/repo:tag@sha256:…`.
pub fn parse_reference(reference: &str) -> Result<ImageRef, ImageError> {
    ImageRef::parse(reference).map_err(|message| ImageError::Reference {
        reference: reference.to_owned(),
        message,
    })
}

impl Images {
    pub fn open(
        cache: &Path,
        settings: RegistrySettings,
        unpacking: Unpacking,
    ) -> Result<Images, ImageError> {
        Ok(Images {
            store: Store::open(cache)?.with_lock_wait(settings.pull_timeout),
            settings,
            unpacking,
            holder: format!("berth pid {}", std::process::id()),
        })
    }

    /// Names who uses what this process leases (a job), for `berth rmi` to say who.
    #[must_use]
    pub fn with_holder(mut self, holder: &str) -> Images {
        self.holder = format!("{holder}, berth pid {}", std::process::id());
        self
    }

    /// Every image stored, sorted by reference.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.store.records()
    }

    /// `berth rmi`: see [`prune::rmi`].
    pub fn remove(&self, image: &str) -> Result<prune::Removed, prune::PruneError> {
        prune::rmi(&self.store, image)
    }

    /// `berth prune`: see [`prune::prune`].
    pub fn prune(&self, limits: prune::PruneLimits) -> Result<prune::Removed, prune::PruneError> {
        prune::prune(&self.store, limits)
    }

    /// Makes sure the image is stored, asking the registry only what it must.
    pub fn pull(&self, reference: &str) -> Result<PulledImage, ImageError> {
        let image = self.pull_untouched(reference)?;
        self.store.touch(&image.reference)?;
        Ok(image)
    }

    fn pull_untouched(&self, reference: &str) -> Result<PulledImage, ImageError> {
        if let Some(transport) = transport::Transport::parse(reference) {
            return self.load(&transport?);
        }
        let parsed = parse_reference(reference)?;
        let settings = &self.settings;
        let gate = signature::Gate::load(
            settings.signature_policy.as_deref(),
            &settings.signature_policy_looked,
        )?;
        // The policy decides for every reference and digest a pull uses, stored or not: a
        // digest another reference stored is not accepted under this one until its own
        // rules say so.
        let rules = gate.rules(&parsed);
        let accepted = rules.acceptance();
        let name = parsed.to_string();
        if let Some(d) = &parsed.digest
            && self.known(&parsed, d, &rules)
            && let Some(image) = self.load_local(&name, d, Some(&accepted))?
        {
            tracing::debug!(image = %name, "pinned image already stored and accepted");
            return Ok(image);
        }
        let r = parsed.to_oci();
        let client = registry::RegistryClient::new(&r, &self.settings)?;
        let top = match &parsed.digest {
            Some(d) => d.clone(),
            None => self.resolve(&client, &r, &name, None)?,
        };
        if !self.known(&parsed, &top, &rules) {
            rules.check(&client, &parsed, &top)?;
            if parsed.digest.is_some() {
                // A digest the store never saw in this repository (perhaps another's
                // bytes): the registry must have it there.
                self.resolve(&client, &r, &name, Some(&top))?;
            }
        }
        if let Some(image) = self.load_local(&name, &top, Some(&accepted))? {
            tracing::debug!(image = %name, digest = %top, "image unchanged since it was stored");
            return Ok(image);
        }
        self.fetch(&client, &r, &name, &top, &accepted)
    }

    /// Whether the store knows `top` in `image`'s repository as accepted by `rules`: from
    /// the record of this very reference, or, for a pinned one, of any reference of the
    /// same repository (the registry confirmed the digest there when it was recorded).
    fn known(&self, image: &ImageRef, top: &Digest, rules: &signature::Rules<'_>) -> bool {
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
    /// repository; for a tag, the stored image when the registry cannot be reached.
    fn resolve(
        &self,
        client: &registry::RegistryClient,
        r: &oci_client::Reference,
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
            Err(e @ ImageError::Unreachable { .. }) if pinned.is_none() => {
                match self.store.find_record(name) {
                    Some(rec) => {
                        let e = crate::util::chain(&e);
                        tracing::warn!("{e}; running the stored {name} ({})", rec.digest);
                        Ok(rec.digest)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Fetches what is missing of the image behind `top` and records it.
    fn fetch(
        &self,
        client: &registry::RegistryClient,
        r: &oci_client::Reference,
        name: &str,
        top: &Digest,
        accepted: &store::Accepted,
    ) -> Result<PulledImage, ImageError> {
        let mut from_registry = |d: &Digest| self.manifest_bytes(client, r, d).map(Some);
        let (digest, manifest) = self
            .platform_manifest(name, top, &mut from_registry)?
            .ok_or_else(|| ImageError::NotFound {
                reference: name.to_owned(),
            })?;
        let mut fetched = (0, 0);
        check_config_size(name, &manifest.config)?;
        check_layer_sizes(name, &manifest.layers, self.settings.unpack_caps.bytes)?;
        let new_config = !self.store.has_blob(&manifest.config.digest);
        if new_config {
            // A config berth has not seen is a new image: the layer blobs it lacks come
            // beside the config, a round trip sooner than after reading it.
            let wanted: Vec<Descriptor> = std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .cloned()
                .collect();
            let (_locks, missing) = self.store.lock_missing(&wanted)?;
            fetched.1 += client.fetch_blobs(r, &missing, &self.store, true)?;
            fetched.0 += missing.len();
        }
        let config = self.read_config(&manifest.config.digest, manifest.layers.len())?;
        let needed: &[Descriptor] = if new_config || self.have_rootfs(&config) {
            &[]
        } else {
            &manifest.layers
        };
        let (_locks, missing) = self.store.lock_missing(needed)?;
        fetched.1 += client.fetch_blobs(r, &missing, &self.store, true)?;
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
    fn load(&self, from: &transport::Transport) -> Result<PulledImage, ImageError> {
        signature::check_local(self.settings.signature_policy.as_deref(), from)?;
        let name = from.name();
        let top = match from {
            transport::Transport::OciLayout { dir, reference } => {
                self.load_layout(dir, reference.as_deref(), &name)?
            }
            transport::Transport::DockerArchive { file, reference } => {
                transport::docker_archive::load(&self.store, file, reference.as_deref(), &name)?
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
        let top = layout.top(&self.store, reference)?;
        let mut from_layout = |d: &Digest| match self.store.read_blob(d)? {
            Some(bytes) => Ok(Some(bytes)),
            None => layout.document(&self.store, d, None).map(Some),
        };
        let (_, manifest) = self
            .platform_manifest(name, &top, &mut from_layout)?
            .ok_or_else(|| ImageError::NotFound {
                reference: name.to_owned(),
            })?;
        check_config_size(name, &manifest.config)?;
        check_layer_sizes(name, &manifest.layers, self.settings.unpack_caps.bytes)?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            layout.copy_blob(&self.store, blob)?;
        }
        Ok(top)
    }

    /// Writes `image` (pulled first if it is not stored) as an OCI layout where `target`
    /// (`oci:PATH[:REF]`) says, named REF or else the image's tag or `latest`. Returns the
    /// digest of the manifest written.
    pub fn save(&self, image: &str, target: &str) -> Result<Digest, ImageError> {
        let (dir, reference) = match transport::Transport::parse(target) {
            Some(Ok(transport::Transport::OciLayout { dir, reference })) => (dir, reference),
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
        transport::oci_layout::save(&self.store, &pulled.digest, &dir, &reference)
    }

    /// The stack of a pulled image's layer directories (see [`layers`]), for
    /// [`RootfsView::create`]; unpacks the layers the store lacks first. The stack and its
    /// layers are leased to this process until it exits: `rmi` and `prune` leave them alone.
    pub fn rootfs(&self, image: &PulledImage) -> Result<(PathBuf, bool), ImageError> {
        let diff_ids = &image.config.rootfs.diff_ids;
        let holder = format!("{} ({})", self.holder, image.reference);
        // One lease, on the stack: prune keeps every layer a leased stack lists. (A lease
        // per layer cost a file each, on every run.) Layers this call is about to unpack
        // are not listed yet, but they are as new as prune's grace period.
        if let Some(chain) = digest::chain_id(diff_ids) {
            prune::lease(&self.store, &chain, &holder)?;
        }
        let budget = unpack::Budget::new(&image.reference, self.settings.unpack_caps);
        layers::ensure_stack(
            &self.store,
            &image.layers,
            diff_ids,
            &self.unpacking,
            &budget,
        )
    }

    /// The manifest for this platform behind `top` (itself, or its pick from an index),
    /// reading documents through `get`; `None` when `get` has not got one of them.
    fn platform_manifest(
        &self,
        name: &str,
        top: &Digest,
        get: &mut DocumentSource<'_>,
    ) -> Result<Option<(Digest, manifest::ImageManifest)>, ImageError> {
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
        let declared = entry.size().map_err(|message| ImageError::BadManifest {
            digest: entry.digest.clone(),
            message,
        })?;
        if declared > manifest::MAX_METADATA_BYTES {
            return Err(ImageError::TooLarge {
                image: name.to_owned(),
                what: format!(
                    "its manifest {} declares {declared} bytes, more than the cap of {}",
                    entry.digest,
                    manifest::MAX_METADATA_BYTES
                ),
            });
        }
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

    fn have_rootfs(&self, config: &ImageConfig) -> bool {
        digest::chain_id(&config.rootfs.diff_ids).is_some_and(|c| {
            layers::Stack::open(&layers::stack_path(&self.store, &c, &self.unpacking)).is_ok()
        })
    }

    fn pick_platform<'a>(
        &self,
        name: &str,
        index: &'a manifest::ImageIndex,
    ) -> Result<&'a Descriptor, ImageError> {
        index
            .pick_host_platform()
            .ok_or_else(|| ImageError::NoPlatform {
                reference: name.to_owned(),
                arch: manifest::host_architecture().to_owned(),
                available: index.platforms().join(", "),
            })
    }

    fn manifest_bytes(
        &self,
        client: &registry::RegistryClient,
        r: &oci_client::Reference,
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
        accepted: Option<&store::Accepted>,
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

/// Refuses a config declared larger than any config is, before a byte of it is read.
fn check_config_size(name: &str, config: &Descriptor) -> Result<(), ImageError> {
    let size = config.size().map_err(|message| ImageError::BadManifest {
        digest: config.digest.clone(),
        message,
    })?;
    if size > manifest::MAX_METADATA_BYTES {
        return Err(ImageError::TooLarge {
            image: name.to_owned(),
            what: format!(
                "its config {} declares {size} bytes, more than the cap of {}",
                config.digest,
                manifest::MAX_METADATA_BYTES
            ),
        });
    }
    Ok(())
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
    manifest: &manifest::ImageManifest,
    accepted: Option<store::Accepted>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_all_three_forms() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = parse_reference("127.0.0.1:5000/acme/hello:1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "acme/hello");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        let r = parse_reference(&format!("127.0.0.1:5000/acme/hello@{d}")).unwrap();
        assert_eq!(r.digest.unwrap().to_string(), d);
        let r = parse_reference(&format!("127.0.0.1:5000/acme/hello:1.0@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest.unwrap().to_string(), d);
    }

    #[test]
    fn bad_references_are_user_errors() {
        for bad in ["", "a b", "host/repo@sha256:abc", "host/repo@md5:abcd"] {
            let e = parse_reference(bad).unwrap_err();
            assert_eq!(e.class(), ErrorClass::User, "{bad}: {e}");
        }
    }

    #[test]
    fn pinned_image_missing_locally_with_no_registry_fails_as_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(
            dir.path(),
            RegistrySettings {
                retries: 0,
                progress: false,
                ..Default::default()
            },
            Unpacking {
                ownership: Ownership::Ignore,
                ids: None,
            },
        )
        .unwrap();
        // Port 9 (discard) on loopback: nothing listens there.
        let e = images
            .pull("127.0.0.1:9/acme/none@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .unwrap_err();
        assert!(matches!(e, ImageError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    }
}
