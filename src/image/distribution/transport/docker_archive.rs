//! `docker save` / `podman save` archives: a tar holding `manifest.json` (a list of
//! `{"Config", "RepoTags", "Layers"}`), the config, and each layer as an uncompressed tar.
//!
//! The archive is read twice: once to find where each member lies (and `manifest.json`,
//! which Docker writes last), then to copy the config and layers. The config must match the
//! digest its name states, each layer the `diff_id` the config lists for it: an uncompressed
//! layer's digest is its diff id, so layers are stored as blobs under it, and the manifest
//! berth records is written here (OCI, layers `tar`). Members are looked up by name; a
//! member that is a link is refused rather than followed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use super::oci_layout::OCI_CONFIG;
use crate::image::content::Store;
use crate::image::spec::ImageError;
use crate::image::spec::digest::Digest;
use crate::image::spec::manifest::{self, ImageConfig, MAX_METADATA_BYTES};

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Members of one archive: images have dozens; more is not an image archive.
const MAX_MEMBERS: usize = 100_000;

#[derive(Deserialize)]
struct ArchiveImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Where a member's bytes lie in the archive, the member a link inside the archive names,
/// or that it is neither.
#[derive(Clone)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// `<id>/layer.tar -> ../<hex>.tar`, as Docker and podman write a layer twice: resolved
    /// among the archive's members, never on the host.
    Link(PathBuf),
    NotFile,
}

struct Archive {
    path: PathBuf,
    name: String,
    members: HashMap<PathBuf, Member>,
}

/// Loads the image `reference` names (one of its `RepoTags`; the only image when `None`)
/// from the archive at `path` into `store`; returns the digest of the manifest recorded.
pub fn load(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
    name: &str,
) -> Result<Digest, ImageError> {
    let (archive, manifest_json) = Archive::scan(path, name)?;
    let images: Vec<ArchiveImage> = serde_json::from_slice(&manifest_json).map_err(|e| {
        archive.bad(format!(
            "manifest.json is not a docker-archive manifest: {e}"
        ))
    })?;
    let image = archive.pick(&images, reference)?;
    let config_bytes = archive.read_small(&image.config)?;
    let config_digest = Digest::of(&config_bytes);
    archive.check_named_digest(&image.config, &config_digest)?;
    let config = ImageConfig::parse(&config_bytes).map_err(|message| ImageError::BadConfig {
        message: format!("config {} of {name}: {message}", image.config),
    })?;
    if config.rootfs.diff_ids.len() != image.layers.len() {
        return Err(archive.bad(format!(
            "its config lists {} layers, manifest.json {}",
            config.rootfs.diff_ids.len(),
            image.layers.len()
        )));
    }
    store.put_blob(&config_digest, &config_bytes)?;
    let mut layers = Vec::new();
    for (member, diff_id) in image.layers.iter().zip(&config.rootfs.diff_ids) {
        let size = archive.copy_layer(store, member, diff_id)?;
        layers.push(json!({ "mediaType": OCI_LAYER_TAR, "digest": diff_id, "size": size }));
    }
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len() },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let digest = Digest::of(&bytes);
    store.put_blob(&digest, &bytes)?;
    Ok(digest)
}

impl Archive {
    /// Indexes the archive's members and reads its `manifest.json` (capped).
    fn scan(path: &Path, name: &str) -> Result<(Archive, Vec<u8>), ImageError> {
        let mut archive = Archive {
            path: path.to_owned(),
            name: name.to_owned(),
            members: HashMap::new(),
        };
        let file = archive.open()?;
        let mut tar = tar::Archive::new(BufReader::with_capacity(crate::util::IO_BUFFER, file));
        let mut manifest_json = None;
        let entries = tar.entries_with_seek().map_err(|e| archive.corrupt(&e))?;
        for entry in entries {
            crate::interrupt::check()?;
            let mut entry = entry.map_err(|e| archive.corrupt(&e))?;
            let Some(rel) = entry.path().ok().and_then(|p| normal(&p)) else {
                continue;
            };
            let kind = entry.header().entry_type();
            let target = entry.link_name().ok().flatten();
            let member = if kind.is_file() {
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if let Some(target) = target.filter(|_| kind.is_symlink()) {
                let parent = rel.parent().unwrap_or_else(|| Path::new(""));
                normal(&parent.join(target)).map_or(Member::NotFile, Member::Link)
            } else {
                Member::NotFile
            };
            if rel == Path::new("manifest.json") && matches!(member, Member::File { .. }) {
                manifest_json = Some(archive.read_capped(&mut entry, "manifest.json")?);
            }
            if archive.members.len() >= MAX_MEMBERS {
                return Err(archive.bad(format!("it has more than {MAX_MEMBERS} members")));
            }
            archive.members.insert(rel, member);
        }
        let manifest_json = manifest_json
            .ok_or_else(|| archive.bad("it has no manifest.json: not a docker-archive".into()))?;
        Ok((archive, manifest_json))
    }

    fn pick<'a>(
        &self,
        images: &'a [ArchiveImage],
        reference: Option<&str>,
    ) -> Result<&'a ArchiveImage, ImageError> {
        let tags = |i: &ArchiveImage| i.repo_tags.clone().unwrap_or_default();
        let mut found = images
            .iter()
            .filter(|i| reference.is_none_or(|r| tags(i).iter().any(|t| same_name(t, r))));
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(i),
            (first, _) => {
                let all: Vec<String> = images.iter().flat_map(tags).collect();
                let what = match (reference, first) {
                    (Some(r), _) => format!("no image is tagged {r:?}"),
                    (None, None) => "it holds no image".to_owned(),
                    (None, Some(_)) => {
                        "it holds several images: name one as docker-archive:FILE:REF".to_owned()
                    }
                };
                Err(self.bad(format!("{what} (tags: {})", all.join(", "))))
            }
        }
    }

    /// A member where a file must be: its offset and size.
    fn member(&self, rel: &str) -> Result<(u64, u64), ImageError> {
        let mut key = normal(Path::new(rel));
        // A link to a link is followed once more; a loop ends here.
        for _ in 0..4 {
            match key.as_ref().and_then(|k| self.members.get(k)) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => key = Some(target.clone()),
                Some(Member::NotFile) => break,
                None => {
                    return Err(
                        self.bad(format!("manifest.json names {rel}, which it does not hold"))
                    );
                }
            }
        }
        Err(self.bad(format!("{rel} is not a regular file in the archive")))
    }

    fn reader(&self, rel: &str) -> Result<(std::io::Take<File>, u64), ImageError> {
        let (offset, size) = self.member(rel)?;
        let mut file = self.open()?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|source| self.io(source))?;
        Ok((file.take(size), size))
    }

    fn read_small(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let (mut reader, _) = self.reader(rel)?;
        self.read_capped(&mut reader, rel)
    }

    fn read_capped(&self, from: &mut impl Read, rel: &str) -> Result<Vec<u8>, ImageError> {
        let mut bytes = Vec::new();
        from.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| self.io(source))?;
        if bytes.len() as u64 > MAX_METADATA_BYTES {
            return Err(ImageError::TooLarge {
                image: self.name.clone(),
                what: format!("{rel} is larger than the cap of {MAX_METADATA_BYTES} bytes"),
            });
        }
        Ok(bytes)
    }

    /// A config named `<hex>.json` or `blobs/sha256/<hex>` must have that digest.
    fn check_named_digest(&self, rel: &str, actual: &Digest) -> Result<(), ImageError> {
        let file_name = Path::new(rel)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let stem = file_name.strip_suffix(".json").unwrap_or(file_name);
        match format!("sha256:{stem}").parse::<Digest>() {
            Ok(expected) if expected != *actual => Err(ImageError::DigestMismatch {
                what: format!("config {rel} of {}", self.name),
                expected,
                actual: actual.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn copy_layer(&self, store: &Store, rel: &str, diff_id: &Digest) -> Result<u64, ImageError> {
        let (reader, size) = self.reader(rel)?;
        if store.has_blob(diff_id) {
            return Ok(size);
        }
        super::copy_into(store, diff_id, size, reader, &self.path).map_err(|e| match e {
            ImageError::DigestMismatch {
                expected, actual, ..
            } => ImageError::DigestMismatch {
                what: format!("layer {rel} of {} (against its diff_id)", self.name),
                expected,
                actual,
            },
            other => other,
        })?;
        Ok(size)
    }

    fn open(&self) -> Result<File, ImageError> {
        File::open(&self.path).map_err(|source| ImageError::Transport {
            image: self.name.clone(),
            message: format!("cannot open the archive: {source}"),
        })
    }

    fn corrupt(&self, e: &std::io::Error) -> ImageError {
        self.bad(format!("not a readable tar archive: {e}"))
    }

    fn bad(&self, message: String) -> ImageError {
        ImageError::Transport {
            image: self.name.clone(),
            message,
        }
    }

    fn io(&self, source: std::io::Error) -> ImageError {
        ImageError::Store {
            path: self.path.clone(),
            source,
        }
    }
}

/// Whether two image names are one as Docker reads them: `acme/x:1` is
/// `docker.io/acme/x:1`, `busybox` is `docker.io/library/busybox:latest` (`docker save`
/// writes short names, skopeo and podman full ones).
fn same_name(a: &str, b: &str) -> bool {
    fn full(name: &str) -> String {
        let named = match name.split_once('/') {
            None => format!("docker.io/library/{name}"),
            Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => name.to_owned(),
            Some(_) => format!("docker.io/{name}"),
        };
        let last = named.rsplit('/').next().unwrap_or_default();
        if last.contains([':', '@']) {
            named
        } else {
            format!("{named}:latest")
        }
    }
    a == b || full(a) == full(b)
}

/// A member name without `./`, `..` and empty parts (names only: nothing here touches the
/// host); `None` for one that climbs above the archive's top or is absolute.
fn normal(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir if out.pop() => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_resolve_within_the_archive() {
        assert_eq!(
            normal(Path::new("./a/../b.tar")),
            Some(PathBuf::from("b.tar"))
        );
        assert_eq!(normal(Path::new("a/../../b")), None);
        assert_eq!(normal(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn short_and_full_docker_names_match() {
        assert!(same_name("docker.io/acme/x:1", "acme/x:1"));
        assert!(same_name("docker.io/library/busybox:latest", "busybox"));
        assert!(same_name("localhost/x:latest", "localhost/x"));
        assert!(same_name("127.0.0.1:5000/a/b:1", "127.0.0.1:5000/a/b:1"));
        assert!(!same_name("docker.io/acme/x:1", "acme/x:2"));
        assert!(!same_name("quay.io/acme/x:1", "acme/x:1"));
    }
}
