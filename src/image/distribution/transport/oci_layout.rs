//! OCI image layouts (image-spec `image-layout.md`): `oci-layout`, `index.json` whose entries
//! carry `org.opencontainers.image.ref.name`, and `blobs/sha256/<hex>`.
//!
//! Reading, every file is opened beneath the layout's directory handle without following
//! any link (the [`confined`](crate::confined) walk): a layout is someone else's directory,
//! and a blob that is a symlink could hand berth any file on the host. Sizes come from the
//! descriptors and are checked against the files, never the other way round.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::confined::{ConfinedError, Dir};
use crate::image::content::Store;
use crate::image::spec::ImageError;
use crate::image::spec::digest::Digest;
use crate::image::spec::manifest::{self, Descriptor, MAX_METADATA_BYTES};

/// The annotation that names an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYOUT_VERSION: &str = "1.0.0";

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: Digest,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// An OCI layout opened for reading.
#[derive(Debug)]
pub struct Layout {
    dir: Dir,
    /// The image as the user named it, for errors.
    name: String,
}

impl Layout {
    /// Opens the layout at `path`, checking its `oci-layout` file.
    pub fn open(path: &Path, name: &str) -> Result<Layout, ImageError> {
        let layout = Layout {
            dir: Dir::open(path).map_err(|e| confined_error(name, e))?,
            name: name.to_owned(),
        };
        let marker = layout.read_capped("oci-layout", 4096)?;
        let version = serde_json::from_slice::<Value>(&marker)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
        if version.as_deref() != Some(LAYOUT_VERSION) {
            return Err(layout.bad(format!(
                "oci-layout does not state imageLayoutVersion {LAYOUT_VERSION:?}"
            )));
        }
        Ok(layout)
    }

    /// The digest of the manifest or index `reference` names in `index.json` (the only
    /// entry when no reference is given), its blob copied into `store`.
    pub fn top(&self, store: &Store, reference: Option<&str>) -> Result<Digest, ImageError> {
        let bytes = self.read_capped("index.json", MAX_METADATA_BYTES)?;
        let index: LayoutIndex = serde_json::from_slice(&bytes)
            .map_err(|e| self.bad(format!("index.json is not an image index: {e}")))?;
        fn named(e: &IndexEntry) -> Option<&str> {
            e.annotations.get(REF_NAME).map(String::as_str)
        }
        let mut found = index
            .manifests
            .iter()
            .filter(|e| reference.is_none() || named(e) == reference);
        let entry = match (found.next(), found.next()) {
            (Some(e), None) => e,
            (first, _) => {
                let names: Vec<&str> = index.manifests.iter().filter_map(named).collect();
                let what = match (reference, first) {
                    (Some(r), _) => format!("no image is named {r:?}"),
                    (None, None) => "the layout holds no image".to_owned(),
                    (None, Some(_)) => "it holds several images: name one as oci:PATH:REF".into(),
                };
                return Err(self.bad(format!("{what} (names: {})", names.join(", "))));
            }
        };
        let size = u64::try_from(entry.size).map_err(|_| {
            self.bad(format!(
                "index.json gives {} a size of {}",
                entry.digest, entry.size
            ))
        })?;
        self.document(store, &entry.digest, Some(size))?;
        Ok(entry.digest.clone())
    }

    /// A manifest or index of the layout, capped, verified and copied into `store`.
    pub fn document(
        &self,
        store: &Store,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Vec<u8>, ImageError> {
        if let Some(size) = size
            && size > MAX_METADATA_BYTES
        {
            return Err(ImageError::TooLarge {
                image: self.name.clone(),
                what: format!(
                    "its manifest {digest} declares {size} bytes, more than the cap of {MAX_METADATA_BYTES}"
                ),
            });
        }
        let bytes = self.read_capped(&blob_path(digest), MAX_METADATA_BYTES)?;
        if let Some(size) = size.filter(|s| *s != bytes.len() as u64) {
            return Err(ImageError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                actual: bytes.len().to_string(),
            });
        }
        store.put_blob(digest, &bytes)?;
        Ok(bytes)
    }

    /// Copies a config or layer blob into `store`, refusing one whose file has another size
    /// than its descriptor states (before reading it) or another digest.
    pub fn copy_blob(&self, store: &Store, blob: &Descriptor) -> Result<u64, ImageError> {
        if store.has_blob(&blob.digest) {
            return Ok(0);
        }
        let size = blob.size().map_err(|message| ImageError::BadManifest {
            digest: blob.digest.clone(),
            message,
        })?;
        let path = blob_path(&blob.digest);
        let file = self
            .dir
            .open_file(&path)
            .map_err(|e| confined_error(&self.name, e))?;
        let on_disk = file.metadata().map_err(|e| self.io(&path, e))?.len();
        if on_disk != size {
            return Err(ImageError::SizeMismatch {
                digest: blob.digest.clone(),
                expected: size,
                actual: on_disk.to_string(),
            });
        }
        super::copy_into(
            store,
            &blob.digest,
            size,
            file,
            &self.dir.path().join(&path),
        )?;
        Ok(size)
    }

    fn read_capped(&self, rel: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        self.dir.read_to_end(rel, limit).map_err(|e| match e {
            ConfinedError::TooLarge { path, limit } => ImageError::TooLarge {
                image: self.name.clone(),
                what: format!("{} is larger than the cap of {limit} bytes", path.display()),
            },
            other => confined_error(&self.name, other),
        })
    }

    fn bad(&self, message: String) -> ImageError {
        ImageError::Transport {
            image: self.name.clone(),
            message,
        }
    }

    fn io(&self, rel: &str, source: io::Error) -> ImageError {
        ImageError::Store {
            path: self.dir.path().join(rel),
            source,
        }
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn confined_error(name: &str, source: ConfinedError) -> ImageError {
    ImageError::Layout {
        image: name.to_owned(),
        source,
    }
}

/// Writes the stored image (`manifest` and what it names) into the layout at `dir`, named
/// `reference` in its `index.json` (replacing an entry of that name). A Docker manifest is
/// rewritten with OCI media types, as umoci reads only those. Returns the manifest written.
pub fn save(
    store: &Store,
    manifest: &Digest,
    dir: &Path,
    reference: &str,
) -> Result<Digest, ImageError> {
    let stored = store
        .read_blob(manifest)?
        .ok_or_else(|| missing(manifest, "manifest"))?;
    let parsed = match manifest::Manifest::parse(&stored) {
        Ok(manifest::Manifest::Image(m)) => m,
        Ok(manifest::Manifest::Index(_)) => {
            return Err(bad_manifest(manifest, "an index, not an image manifest"));
        }
        Err(message) => return Err(bad_manifest(manifest, &message)),
    };
    let bytes = oci_manifest(&stored, &parsed)?;
    let digest = Digest::of(&bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|source| store_err(&blobs, source))?;
    for blob in std::iter::once(&parsed.config).chain(&parsed.layers) {
        let from = store.blob_path(&blob.digest);
        if !from.is_file() {
            return Err(missing(&blob.digest, "blob"));
        }
        write_new(&blobs.join(blob.digest.hex()), |to| {
            fs::copy(&from, to).map(drop)
        })?;
    }
    write_new(&blobs.join(digest.hex()), |to| fs::write(to, &bytes))?;
    let marker = json!({ "imageLayoutVersion": LAYOUT_VERSION }).to_string();
    write_new(&dir.join("oci-layout"), |to| fs::write(to, &marker))?;
    let index = updated_index(dir, &digest, bytes.len(), reference)?;
    write_new(&dir.join("index.json"), |to| fs::write(to, &index))?;
    Ok(digest)
}

/// The manifest as an OCI one: the stored bytes when they are, else rewritten.
fn oci_manifest(stored: &[u8], m: &manifest::ImageManifest) -> Result<Vec<u8>, ImageError> {
    let media_type = serde_json::from_slice::<Value>(stored)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned));
    if media_type.as_deref() == Some(manifest::OCI_MANIFEST) {
        return Ok(stored.to_vec());
    }
    let layers: Vec<Value> = m
        .layers
        .iter()
        .map(|l| json!({ "mediaType": oci_layer_type(&l.media_type), "digest": l.digest, "size": l.size }))
        .collect();
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": m.config.digest, "size": m.config.size },
        "layers": layers,
    });
    serde_json::to_vec(&doc).map_err(|e| ImageError::BadManifest {
        digest: m.config.digest.clone(),
        message: format!("cannot be written as OCI: {e}"),
    })
}

fn oci_layer_type(docker: &str) -> &str {
    match docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        }
        "application/vnd.docker.image.rootfs.diff.tar" | "" => {
            "application/vnd.oci.image.layer.v1.tar"
        }
        other => other,
    }
}

/// `index.json` with `reference` pointing at `digest`, other entries kept.
fn updated_index(
    dir: &Path,
    digest: &Digest,
    size: usize,
    reference: &str,
) -> Result<Vec<u8>, ImageError> {
    let path = dir.join("index.json");
    let mut index = match File::open(&path) {
        Ok(f) => {
            let mut bytes = Vec::new();
            f.take(MAX_METADATA_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|source| store_err(&path, source))?;
            serde_json::from_slice::<Value>(&bytes).map_err(|e| ImageError::Transport {
                image: dir.display().to_string(),
                message: format!("its index.json cannot be updated: {e}"),
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => json!({ "schemaVersion": 2 }),
        Err(source) => return Err(store_err(&path, source)),
    };
    let mut entries: Vec<Value> = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| {
        e.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
            != Some(&json!(reference))
    });
    entries.push(json!({
        "mediaType": manifest::OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "annotations": { REF_NAME: reference },
    }));
    index["manifests"] = Value::Array(entries);
    index["mediaType"] = json!(manifest::OCI_INDEX);
    Ok(serde_json::to_vec(&index).unwrap_or_default())
}

/// Writes `to` through a temporary file renamed over it: a rename replaces a symlink planted
/// at `to` instead of writing through it.
fn write_new(to: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> Result<(), ImageError> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp: PathBuf = to.with_file_name(format!(".{name}.{}", crate::util::random_hex(6)));
    let result = write(&tmp).and_then(|()| fs::rename(&tmp, to));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| store_err(to, source))
}

fn store_err(path: &Path, source: io::Error) -> ImageError {
    ImageError::Store {
        path: path.to_owned(),
        source,
    }
}

fn missing(digest: &Digest, what: &str) -> ImageError {
    bad_manifest(
        digest,
        &format!("its {what} is no longer stored: pull the image again"),
    )
}

fn bad_manifest(digest: &Digest, message: &str) -> ImageError {
    ImageError::BadManifest {
        digest: digest.clone(),
        message: message.to_owned(),
    }
}
