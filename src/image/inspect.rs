//! `berth inspect`: what the store holds of one image, read from the store alone (no
//! registry is asked): its digests, platform, run configuration, layers, the references it
//! was pulled as and which signature-policy rules accepted it under each.

use std::collections::BTreeMap;

use serde::Serialize;

use super::content::Store;
use super::layers::prune::matching;
use super::spec::manifest::{Descriptor, Manifest};
use super::spec::record::{Accepted, ImageRecord};
use super::spec::reference::parse_reference;
use super::spec::{Digest, ImageError};

/// One stored image, as `berth inspect` shows it (its JSON keys are stable).
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The reference asked about (or the first one pulled with this digest).
    pub reference: String,
    /// What the reference names in the registry: an index or a manifest.
    pub digest: Digest,
    /// The manifest for this host's platform (the digest itself for a single manifest).
    pub manifest: Digest,
    pub platform: PlatformInfo,
    /// The config blob's digest.
    pub config_digest: Digest,
    pub config: RunInfo,
    pub layers: Vec<LayerInfo>,
    /// Compressed size of all layers, in bytes.
    pub size: u64,
    /// Every reference the store recorded for this digest: where it came from, and which
    /// rules accepted it there.
    pub pulled_as: Vec<Origin>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformInfo {
    pub os: String,
    pub architecture: String,
}

/// What the image runs, as its config says (`null`: not set).
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub digest: Digest,
    /// Compressed, as the manifest declares it.
    pub size: u64,
    pub media_type: String,
}

/// A reference the image was pulled (or loaded) as.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    pub reference: String,
    /// The registry (`host[:port]`); `None` for an OCI layout or an archive.
    pub registry: Option<String>,
    /// Seconds since the epoch.
    pub pulled_at: u64,
    pub last_used: u64,
    /// The signature policy's rules that accepted it; `None`: loaded from a layout or an
    /// archive (checked at every load), or recorded before berth kept this.
    pub accepted: Option<Accepted>,
}

/// The image `image` names in the store: a reference as pulled, or a digest (in full or
/// its first 12 digits); an image not stored is the user's to pull.
pub fn inspect(store: &Store, image: &str) -> Result<Inspection, ImageError> {
    let not_stored = || ImageError::NotStored {
        reference: image.to_owned(),
        hint: format!(": `berth pull {image}` first"),
    };
    let record = matching(store, image)
        .into_iter()
        .next()
        .ok_or_else(not_stored)?;
    let manifest = read_manifest(store, &record)?;
    let config = store
        .read_blob(&record.config)?
        .ok_or_else(|| missing(&record, &record.config))?;
    let (platform, run) = read_config(&record.config, &config)?;
    let pulled_as = store
        .records()
        .into_iter()
        .filter(|r| r.manifest == record.manifest)
        .map(origin)
        .collect();
    let layers = manifest.iter().map(layer).collect::<Result<Vec<_>, _>>()?;
    Ok(Inspection {
        reference: record.reference,
        digest: record.digest,
        manifest: record.manifest,
        platform,
        config_digest: record.config,
        config: run,
        size: layers.iter().map(|l| l.size).sum(),
        layers,
        pulled_as,
    })
}

/// The layers the platform manifest of `record` lists.
fn read_manifest(store: &Store, record: &ImageRecord) -> Result<Vec<Descriptor>, ImageError> {
    let bytes = store
        .read_blob(&record.manifest)?
        .ok_or_else(|| missing(record, &record.manifest))?;
    let bad = |message: String| ImageError::BadManifest {
        digest: record.manifest.clone(),
        message,
    };
    match Manifest::parse(&bytes).map_err(bad)? {
        Manifest::Image(m) => Ok(m.layers),
        Manifest::Index(_) => Err(bad("an index where the platform's manifest was".to_owned())),
    }
}

/// The platform and run configuration of the config blob `digest`; read as plain JSON, so
/// that keys berth itself does not use (labels) are shown too.
fn read_config(digest: &Digest, bytes: &[u8]) -> Result<(PlatformInfo, RunInfo), ImageError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        config: Option<RawRun>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct RawRun {
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        user: Option<String>,
        env: Option<Vec<String>>,
        working_dir: Option<String>,
        labels: Option<BTreeMap<String, String>>,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ImageError::BadConfig {
        message: format!("config {digest}: {e}"),
    })?;
    let run = raw.config.unwrap_or_default();
    let platform = PlatformInfo {
        os: raw.os,
        architecture: raw.architecture,
    };
    let run = RunInfo {
        entrypoint: run.entrypoint,
        cmd: run.cmd,
        user: run.user.filter(|u| !u.is_empty()),
        env: run.env.unwrap_or_default(),
        workdir: run.working_dir.filter(|w| !w.is_empty()),
        labels: run.labels.unwrap_or_default(),
    };
    Ok((platform, run))
}

fn layer(d: &Descriptor) -> Result<LayerInfo, ImageError> {
    let size = d.size().map_err(|message| ImageError::BadManifest {
        digest: d.digest.clone(),
        message,
    })?;
    Ok(LayerInfo {
        digest: d.digest.clone(),
        size,
        media_type: d.media_type.clone(),
    })
}

fn origin(r: ImageRecord) -> Origin {
    Origin {
        registry: parse_reference(&r.reference).ok().map(|p| p.registry),
        reference: r.reference,
        pulled_at: r.pulled_at,
        last_used: r.last_used,
        accepted: r.accepted,
    }
}

/// A record whose blob is gone from the store (removed by hand, or a crash mid-prune).
fn missing(record: &ImageRecord, digest: &Digest) -> ImageError {
    ImageError::BadConfig {
        message: format!(
            "{digest} of {} is missing from the store: `berth pull` it again",
            record.reference
        ),
    }
}
