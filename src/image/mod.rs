//! Images: registry → content store → rootfs cache.
//!
//! [`Images::pull`] resolves a reference to a manifest for this host's platform and makes
//! sure every blob it needs is in the [`store`](store::Store), verified. A digest-pinned
//! image already stored makes no network request at all; a tag costs one HEAD request and
//! nothing more while its digest is unchanged. [`Images::rootfs`] then unpacks the layers
//! into the shared, read-only rootfs cache.

pub mod digest;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use digest::Digest;
pub use manifest::{Descriptor, ImageConfig, Manifest};
pub use reference::ImageRef;
pub use registry::RegistrySettings;
pub use rootfs::RootfsView;
pub use store::{ImageRecord, Store};
pub use unpack::Ownership;

use crate::contract::ErrorClass;
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
    #[error("layer {layer} cannot be unpacked: {message}")]
    BadLayer { layer: Digest, message: String },
    #[error("image store {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

impl ImageError {
    /// Whose fault it is: a malformed reference is the user's; an unreachable registry, a
    /// missing, broken or hostile image, and the host are berth's side (contract §7). Every
    /// variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            ImageError::Reference { .. } => ErrorClass::User,
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
            | ImageError::BadLayer { .. }
            | ImageError::Store { .. }
            | ImageError::Host(_)
            | ImageError::Interrupted(_) => ErrorClass::Internal,
        }
    }
}

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
}

/// Parses `host/repo:tag`, `host/repo@sha256:…` or `host/repo:tag@sha256:…`.
pub fn parse_reference(reference: &str) -> Result<ImageRef, ImageError> {
    ImageRef::parse(reference).map_err(|message| ImageError::Reference {
        reference: reference.to_owned(),
        message,
    })
}

impl Images {
    pub fn open(cache: &Path, settings: RegistrySettings) -> Result<Images, ImageError> {
        Ok(Images {
            store: Store::open(cache)?,
            settings,
        })
    }

    /// Every image stored, sorted by reference.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.store.records()
    }

    /// Makes sure the image is stored, asking the registry only what it must.
    pub fn pull(&self, reference: &str) -> Result<PulledImage, ImageError> {
        let parsed = parse_reference(reference)?;
        let name = parsed.to_string();
        let pinned = parsed.digest.clone();
        if let Some(d) = &pinned
            && let Some(image) = self.load_local(&name, d)?
        {
            tracing::debug!(image = %name, "pinned image already stored");
            return Ok(image);
        }

        let r = parsed.to_oci();
        let client = registry::RegistryClient::new(&r, &self.settings)?;
        let top = match pinned {
            Some(d) => d,
            None => match client.resolve(&r) {
                Ok(d) => d,
                Err(e @ ImageError::Unreachable { .. }) => match self.store.find_record(&name) {
                    Some(rec) => {
                        tracing::warn!("{e}; running the stored {name} ({})", rec.digest);
                        rec.digest
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            },
        };
        if let Some(image) = self.load_local(&name, &top)? {
            tracing::debug!(image = %name, digest = %top, "image unchanged since it was stored");
            return Ok(image);
        }

        let top_bytes = self.manifest_bytes(&client, &r, &top)?;
        let (digest, manifest) =
            match Manifest::parse(&top_bytes).map_err(|message| ImageError::BadManifest {
                digest: top.clone(),
                message,
            })? {
                Manifest::Image(m) => (top.clone(), m),
                Manifest::Index(index) => {
                    let entry = self.pick_platform(&name, &index)?;
                    let bytes = self.manifest_bytes(&client, &r, &entry.digest)?;
                    match Manifest::parse(&bytes).map_err(|message| ImageError::BadManifest {
                        digest: entry.digest.clone(),
                        message,
                    })? {
                        Manifest::Image(m) => (entry.digest.clone(), m),
                        Manifest::Index(_) => {
                            return Err(ImageError::BadManifest {
                                digest: entry.digest.clone(),
                                message: "an index inside an index".to_owned(),
                            });
                        }
                    }
                }
            };

        let mut fetched_blobs = 0;
        let mut fetched_bytes = 0;
        if !self.store.has_blob(&manifest.config.digest) {
            fetched_bytes += client.fetch_blobs(
                &r,
                std::slice::from_ref(&manifest.config),
                &self.store,
                false,
            )?;
            fetched_blobs += 1;
        }
        let config = self.read_config(&manifest.config.digest, manifest.layers.len())?;
        let have_rootfs = digest::chain_id(&config.rootfs.diff_ids)
            .is_some_and(|c| rootfs::rootfs_path(&self.store, &c).is_dir());
        let missing: Vec<Descriptor> = if have_rootfs {
            Vec::new()
        } else {
            manifest
                .layers
                .iter()
                .filter(|l| !self.store.has_blob(&l.digest))
                .cloned()
                .collect()
        };
        fetched_bytes += client.fetch_blobs(&r, &missing, &self.store, true)?;
        fetched_blobs += missing.len();

        let size = manifest.layers.iter().filter_map(|l| l.size().ok()).sum();
        self.store.save_record(&ImageRecord {
            reference: name.clone(),
            digest: top,
            manifest: digest.clone(),
            config: manifest.config.digest.clone(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            size,
            pulled_at: crate::util::unix_now(),
        })?;
        Ok(PulledImage {
            reference: name,
            digest,
            config,
            layers: manifest.layers,
            fetched_blobs,
            fetched_bytes,
        })
    }

    /// The unpacked rootfs of a pulled image; unpacks it on first use.
    pub fn rootfs(
        &self,
        image: &PulledImage,
        ownership: Ownership,
    ) -> Result<(PathBuf, bool), ImageError> {
        rootfs::ensure_rootfs(
            &self.store,
            &image.layers,
            &image.config.rootfs.diff_ids,
            ownership,
        )
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
    /// is missing (and must be fetched).
    fn load_local(&self, name: &str, top: &Digest) -> Result<Option<PulledImage>, ImageError> {
        let Some(bytes) = self.store.read_blob(top)? else {
            return Ok(None);
        };
        let parsed = Manifest::parse(&bytes).map_err(|message| ImageError::BadManifest {
            digest: top.clone(),
            message,
        })?;
        let (digest, manifest) = match parsed {
            Manifest::Image(m) => (top.clone(), m),
            Manifest::Index(index) => {
                let entry = self.pick_platform(name, &index)?;
                let Some(bytes) = self.store.read_blob(&entry.digest)? else {
                    return Ok(None);
                };
                match Manifest::parse(&bytes) {
                    Ok(Manifest::Image(m)) => (entry.digest.clone(), m),
                    _ => return Ok(None),
                }
            }
        };
        if !self.store.has_blob(&manifest.config.digest) {
            return Ok(None);
        }
        let config = self.read_config(&manifest.config.digest, manifest.layers.len())?;
        let have_rootfs = digest::chain_id(&config.rootfs.diff_ids)
            .is_some_and(|c| rootfs::rootfs_path(&self.store, &c).is_dir());
        if !have_rootfs
            && !manifest
                .layers
                .iter()
                .all(|l| self.store.has_blob(&l.digest))
        {
            return Ok(None);
        }
        if self
            .store
            .find_record(name)
            .is_none_or(|rec| rec.digest != *top)
        {
            self.store.save_record(&ImageRecord {
                reference: name.to_owned(),
                digest: top.clone(),
                manifest: digest.clone(),
                config: manifest.config.digest.clone(),
                layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
                size: manifest.layers.iter().filter_map(|l| l.size().ok()).sum(),
                pulled_at: crate::util::unix_now(),
            })?;
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
