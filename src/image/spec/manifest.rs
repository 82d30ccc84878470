//! The parts of image manifests, indexes and configs berth reads. Own types rather than
//! the full specification structs: they accept both OCI and Docker schema 2 documents and
//! ignore fields berth has no use for, and every value is validated before use.

use serde::Deserialize;

use super::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs are small; anything larger is a registry that lies.
pub const MAX_METADATA_BYTES: u64 = 8 << 20;

/// Layer media types berth unpacks: tar, plain or compressed with gzip or zstd (the
/// decompressor is picked from the stream's magic bytes). Docker's and OCI's names, and
/// their non-distributable ("foreign") forms, which differ only in who may host them.
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Config media types: the other blobs berth fetches.
pub const CONFIG_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Whether berth may fetch a blob of this media type: a layer it can unpack or a config.
pub fn is_fetchable(media_type: &str) -> bool {
    LAYER_MEDIA_TYPES.contains(&media_type) || CONFIG_MEDIA_TYPES.contains(&media_type)
}

/// The first layer of an image manifest whose media type berth cannot unpack, with that
/// type; `None` for an index, a manifest berth cannot parse (refused elsewhere, with the
/// reason), or one whose layers are all fine.
pub fn unsupported_layer(bytes: &[u8]) -> Option<(Digest, String)> {
    match Manifest::parse(bytes).ok()? {
        Manifest::Image(m) => m
            .layers
            .into_iter()
            .find(|l| !LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()))
            .map(|l| (l.digest, l.media_type)),
        Manifest::Index(_) => None,
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The declared size, refused when negative (a lying registry).
    pub fn size(&self) -> Result<u64, String> {
        u64::try_from(self.size)
            .map_err(|_| format!("descriptor {} has size {}", self.digest, self.size))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// Either kind of document a manifest endpoint may return.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
        let is_index = match probe.media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(format!("unsupported manifest media type {other:?}")),
            None => probe.manifests.is_some(),
        };
        if is_index {
            let index: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| format!("invalid image index: {e}"))?;
            if index.schema_version != 2 {
                return Err(format!(
                    "unsupported schema version {}",
                    index.schema_version
                ));
            }
            Ok(Manifest::Index(index))
        } else {
            let m: ImageManifest = serde_json::from_slice(bytes)
                .map_err(|e| format!("invalid image manifest: {e}"))?;
            if m.schema_version != 2 {
                return Err(format!("unsupported schema version {}", m.schema_version));
            }
            if m.layers.is_empty() {
                return Err("image manifest has no layers".to_owned());
            }
            Ok(Manifest::Image(m))
        }
    }
}

/// The architecture name registries use for the machine berth runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl ImageIndex {
    /// The manifest for linux on this machine's architecture.
    pub fn pick_host_platform(&self) -> Option<&Descriptor> {
        let arch = host_architecture();
        let candidates = || {
            self.manifests.iter().filter(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
        };
        // arm64 images are commonly tagged variant v8; prefer it, accept any.
        candidates()
            .find(|d| {
                d.platform.as_ref().and_then(|p| p.variant.as_deref()) == Some("v8")
                    || arch != "arm64"
            })
            .or_else(|| candidates().next())
    }

    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect()
    }
}

/// The image configuration: how to start the image, and the uncompressed layer digests.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// The `config` object of an image configuration (null fields are common: all optional).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct RunConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            os: String,
            #[serde(default)]
            config: Option<RunConfig>,
            rootfs: RootFs,
        }
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid image config: {e}"))?;
        if !raw.os.is_empty() && raw.os != "linux" {
            return Err(format!("image is for {:?}, not linux", raw.os));
        }
        Ok(ImageConfig {
            architecture: raw.architecture,
            os: raw.os,
            config: raw.config.unwrap_or_default(),
            rootfs: raw.rootfs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn layers_berth_cannot_unpack_are_named() {
        let manifest = |mt: &str| {
            format!(
                r#"{{"schemaVersion": 2, "mediaType": "{OCI_MANIFEST}",
                "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "{D1}", "size": 10}},
                "layers": [{{"mediaType": "{mt}", "digest": "{D2}", "size": 20}}]}}"#
            )
        };
        for ok in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            assert_eq!(unsupported_layer(manifest(ok).as_bytes()), None, "{ok}");
            assert!(is_fetchable(ok));
        }
        let odd = "application/vnd.oci.image.layer.v1.tar+bzip2";
        let (digest, mt) = unsupported_layer(manifest(odd).as_bytes()).unwrap();
        assert_eq!((digest.to_string().as_str(), mt.as_str()), (D2, odd));
        assert!(!is_fetchable(odd));
        assert!(is_fetchable("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn docker_and_oci_manifests_parse() {
        let docker = format!(
            r#"{{"schemaVersion": 2, "mediaType": "{DOCKER_MANIFEST}",
                "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "{D1}", "size": 10}},
                "layers": [{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "{D2}", "size": 20}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(docker.as_bytes()).unwrap() else {
            panic!("expected an image manifest")
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.config.digest.to_string(), D1);
    }

    #[test]
    fn index_without_media_type_is_recognised_and_host_platform_picked() {
        let arch = host_architecture();
        let text = format!(
            r#"{{"schemaVersion": 2, "manifests": [
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{D1}", "size": 1, "platform": {{"os": "linux", "architecture": "s390x"}}}},
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{D2}", "size": 1, "platform": {{"os": "linux", "architecture": "{arch}"}}}}]}}"#
        );
        let Manifest::Index(i) = Manifest::parse(text.as_bytes()).unwrap() else {
            panic!("expected an index")
        };
        assert_eq!(i.pick_host_platform().unwrap().digest.to_string(), D2);
        assert_eq!(i.platforms().len(), 2);
    }

    #[test]
    fn bad_manifests_are_refused() {
        assert!(Manifest::parse(b"[]").is_err());
        assert!(Manifest::parse(br#"{"schemaVersion": 1, "config": {}, "layers": []}"#).is_err());
        let no_layers = format!(
            r#"{{"schemaVersion": 2, "config": {{"digest": "{D1}", "size": 1}}, "layers": []}}"#
        );
        assert!(
            Manifest::parse(no_layers.as_bytes())
                .unwrap_err()
                .contains("no layers")
        );
        let neg = format!(
            r#"{{"schemaVersion": 2, "config": {{"digest": "{D1}", "size": -1}}, "layers": [{{"digest": "{D2}", "size": 1}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(neg.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(m.config.size().is_err());
    }

    #[test]
    fn image_config_tolerates_null_config() {
        let text = format!(
            r#"{{"os": "linux", "config": null, "rootfs": {{"type": "layers", "diff_ids": ["{D1}"]}}}}"#
        );
        let c = ImageConfig::parse(text.as_bytes()).unwrap();
        assert!(c.config.cmd.is_none());
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        let win =
            format!(r#"{{"os": "windows", "rootfs": {{"type": "layers", "diff_ids": ["{D1}"]}}}}"#);
        assert!(ImageConfig::parse(win.as_bytes()).is_err());
    }
}
