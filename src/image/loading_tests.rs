//! Layouts and archives that lie: each must be refused with an error that says why, and
//! nothing false may land in the store.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::image::spec::manifest::OCI_MANIFEST;
use crate::image::{
    Digest, ImageError, ImageRecord, Images, Ownership, PulledImage, RegistrySettings,
    SignaturePolicy, UnpackCaps, Unpacking,
};

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn config_of(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// The store with what a command would pull and unpack it with.
struct Loader {
    images: Images,
    registry: RegistrySettings,
    policy: SignaturePolicy,
    caps: UnpackCaps,
}

impl Loader {
    fn pull(&self, reference: &str) -> Result<PulledImage, ImageError> {
        let puller = self.images.puller(&self.registry, &self.policy, self.caps);
        puller.with_unpacked(Self::UNPACKING).pull(reference)
    }

    fn rootfs(&self, image: &PulledImage) -> Result<(PathBuf, bool), ImageError> {
        let unpacker = self.images.unpacker(Self::UNPACKING, self.caps, "");
        unpacker.rootfs(image)
    }

    fn save(&self, image: &str, target: &str) -> Result<Digest, ImageError> {
        let puller = self.images.puller(&self.registry, &self.policy, self.caps);
        puller.save(image, target)
    }

    fn list(&self) -> Vec<ImageRecord> {
        self.images.list()
    }

    const UNPACKING: Unpacking = Unpacking {
        ownership: Ownership::Ignore,
        ids: None,
    };
}

fn images(cache: &Path, caps: UnpackCaps) -> Loader {
    let registry = RegistrySettings {
        retries: 0,
        progress: false,
        ..Default::default()
    };
    Loader {
        images: Images::open(cache).unwrap(),
        registry,
        policy: SignaturePolicy::default(),
        caps,
    }
}

/// A layout written as skopeo writes one: one image named `v1`, one uncompressed layer.
struct Layout {
    dir: PathBuf,
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl Layout {
    fn write(dir: &Path) -> Layout {
        let layer = layer_tar(&[("hello.txt", b"hello from a layout\n")]);
        let config = config_of(&[&layer]);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::of(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": Digest::of(&layer), "size": layer.len()}],
        }))
        .unwrap();
        let l = Layout {
            dir: dir.to_owned(),
            layer,
            config,
            manifest,
        };
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
        for blob in [&l.layer, &l.config, &l.manifest] {
            fs::write(l.blob(blob), blob).unwrap();
        }
        l.index(l.manifest.len());
        l
    }

    fn blob(&self, bytes: &[u8]) -> PathBuf {
        self.dir.join("blobs/sha256").join(Digest::of(bytes).hex())
    }

    fn index(&self, size: usize) {
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": Digest::of(&self.manifest), "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// Replaces the manifest with one whose layer descriptor says `size` and `digest`.
    fn lie_about_layer(&mut self, size: usize, digest: &Digest) {
        let mut m: Value = serde_json::from_slice(&self.manifest).unwrap();
        m["layers"][0]["size"] = json!(size);
        m["layers"][0]["digest"] = json!(digest);
        self.manifest = serde_json::to_vec(&m).unwrap();
        fs::write(self.blob(&self.manifest), &self.manifest).unwrap();
        self.index(self.manifest.len());
    }

    fn name(&self) -> String {
        format!("oci:{}:v1", self.dir.display())
    }
}

#[test]
fn an_oci_layout_loads_into_the_store_and_unpacks() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    let images = images(&d.path().join("cache"), UnpackCaps::default());
    let pulled = images.pull(&l.name()).unwrap();
    assert_eq!(pulled.reference, l.name());
    assert_eq!(pulled.digest, Digest::of(&l.manifest));
    assert_eq!(pulled.config.config.cmd, Some(vec!["/bin/true".to_owned()]));
    let records = images.list();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].reference, l.name());
    assert_eq!(records[0].layers, vec![Digest::of(&l.layer)]);
    let (root, unpacked) = images.rootfs(&pulled).unwrap();
    assert!(unpacked);
    assert_eq!(
        fs::read(
            crate::image::Stack::open(&root)
                .unwrap()
                .find(Path::new("hello.txt"))
                .unwrap()
        )
        .unwrap(),
        b"hello from a layout\n"
    );
    // The only image of a layout is found without naming it; an unknown name is not.
    let bare = format!("oci:{}", l.dir.display());
    assert_eq!(images.pull(&bare).unwrap().digest, pulled.digest);
    let e = images
        .pull(&format!("oci:{}:v2", l.dir.display()))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no image is named \"v2\" (names: v1)"),
        "{e}"
    );
}

#[test]
fn a_symlinked_blob_is_refused_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    // The right bytes, but outside the layout, reached through a link.
    let outside = d.path().join("outside");
    fs::write(&outside, &l.layer).unwrap();
    fs::remove_file(l.blob(&l.layer)).unwrap();
    std::os::unix::fs::symlink(&outside, l.blob(&l.layer)).unwrap();
    let cache = d.path().join("cache");
    let e = images(&cache, UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    let text = crate::util::chain(&e);
    assert!(matches!(e, ImageError::Layout { .. }), "{text}");
    assert!(text.contains("is a symlink"), "{text}");
    assert!(
        !cache
            .join("blobs/sha256")
            .join(Digest::of(&l.layer).hex())
            .exists()
    );
}

#[test]
fn a_symlinked_blobs_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    let elsewhere = d.path().join("elsewhere");
    fs::rename(l.dir.join("blobs"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, l.dir.join("blobs")).unwrap();
    let e = images(&d.path().join("cache"), UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    assert!(
        crate::util::chain(&e).contains("blobs is a symlink"),
        "{}",
        crate::util::chain(&e)
    );
}

#[test]
fn a_blob_of_another_size_than_its_descriptor_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut l = Layout::write(&d.path().join("layout"));
    let digest = Digest::of(&l.layer);
    l.lie_about_layer(l.layer.len() - 512, &digest);
    let cache = d.path().join("cache");
    let e = images(&cache, UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    assert!(matches!(e, ImageError::SizeMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&digest.to_string()), "{e}");
    assert!(!cache.join("blobs/sha256").join(digest.hex()).exists());
}

#[test]
fn a_blob_with_other_bytes_than_its_digest_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    // Same size, one byte changed.
    let mut forged = l.layer.clone();
    forged[600] ^= 1;
    fs::write(l.blob(&l.layer), &forged).unwrap();
    let cache = d.path().join("cache");
    let e = images(&cache, UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert_eq!(fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
    assert!(
        !cache
            .join("blobs/sha256")
            .join(Digest::of(&l.layer).hex())
            .exists()
    );
}

#[test]
fn a_huge_index_or_config_is_refused_before_it_is_read() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    let cache = d.path().join("cache");
    // 9 MiB of whitespace and then the real index: valid JSON, over the cap.
    let real = fs::read(l.dir.join("index.json")).unwrap();
    let mut huge = vec![b' '; 9 << 20];
    huge.extend_from_slice(&real);
    fs::write(l.dir.join("index.json"), huge).unwrap();
    let e = images(&cache, UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("is refused: index.json is larger than the cap of 8388608 bytes"),
        "{e}"
    );
    // A config that claims 1 TiB is refused on its descriptor alone.
    fs::write(l.dir.join("index.json"), real).unwrap();
    let mut m: Value = serde_json::from_slice(&l.manifest).unwrap();
    m["config"]["size"] = json!(1u64 << 40);
    let manifest = serde_json::to_vec(&m).unwrap();
    fs::write(l.blob(&manifest), &manifest).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": Digest::of(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    fs::write(l.dir.join("index.json"), index.to_string()).unwrap();
    let e = images(&cache, UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    assert!(
        e.to_string().contains("declares 1099511627776 bytes"),
        "{e}"
    );
}

#[test]
fn a_manifest_of_another_size_than_the_index_says_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    l.index(l.manifest.len() + 1);
    let e = images(&d.path().join("cache"), UnpackCaps::default())
        .pull(&l.name())
        .unwrap_err();
    assert!(matches!(e, ImageError::SizeMismatch { .. }), "{e}");
}

#[test]
fn not_a_layout_is_a_user_error_naming_the_image() {
    let d = tempfile::tempdir().unwrap();
    let images = images(&d.path().join("cache"), UnpackCaps::default());
    let name = format!("oci:{}:v1", d.path().join("none").display());
    let e = images.pull(&name).unwrap_err();
    assert_eq!(e.class(), crate::contract::ErrorClass::User, "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    fs::create_dir(d.path().join("empty")).unwrap();
    let e = images
        .pull(&format!("oci:{}", d.path().join("empty").display()))
        .unwrap_err();
    assert!(
        crate::util::chain(&e).contains("oci-layout"),
        "{}",
        crate::util::chain(&e)
    );
}

#[test]
fn unpack_caps_apply_to_a_loaded_image() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    let caps = UnpackCaps {
        bytes: 1 << 30,
        entries: 0,
    };
    let images = images(&d.path().join("cache"), caps);
    let pulled = images.pull(&l.name()).unwrap();
    let e = images.rootfs(&pulled).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "image {} is refused: it unpacks to more than 0 entries, the cap per image \
             (--max-image-entries raises it)",
            l.name()
        )
    );
}

#[test]
fn a_saved_layout_loads_back_with_the_same_manifest() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    let images = images(&d.path().join("cache"), UnpackCaps::default());
    let out = d.path().join("out");
    let digest = images
        .save(&l.name(), &format!("oci:{}:copy", out.display()))
        .unwrap();
    // An OCI manifest is written as it is stored.
    assert_eq!(digest, Digest::of(&l.manifest));
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "copy"
    );
    // Saving again under the same name replaces the entry; another name adds one.
    images
        .save(&l.name(), &format!("oci:{}:copy", out.display()))
        .unwrap();
    images
        .save(&l.name(), &format!("oci:{}:again", out.display()))
        .unwrap();
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let other = self::images(&d.path().join("cache2"), UnpackCaps::default());
    let back = other.pull(&format!("oci:{}:copy", out.display())).unwrap();
    assert_eq!(back.digest, digest);
    let e = images
        .save(&l.name(), "docker-archive:/tmp/x.tar")
        .unwrap_err();
    assert!(e.to_string().contains("writes only an OCI layout"), "{e}");
}

/// A `docker save` archive: `manifest.json`, `<hex>.json` config, `<id>/layer.tar`.
fn docker_archive(path: &Path, config: &[u8], layer: &[u8], config_name: Option<&str>) {
    let config_name = config_name.map_or_else(
        || format!("{}.json", Digest::of(config).hex()),
        str::to_owned,
    );
    let manifest = json!([{ "Config": config_name, "RepoTags": ["acme/hello:1"],
                            "Layers": ["0123/layer.tar"] }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, config);
    add("0123/layer.tar", layer);
    // Docker writes manifest.json last.
    add("manifest.json", manifest.to_string().as_bytes());
    fs::write(path, b.into_inner().unwrap()).unwrap();
}

#[test]
fn a_docker_archive_loads_with_its_layers_stored_by_diff_id() {
    let d = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("hello.txt", b"hello from an archive\n")]);
    let config = config_of(&[&layer]);
    let file = d.path().join("image.tar");
    docker_archive(&file, &config, &layer, None);
    let cache = d.path().join("cache");
    let images = images(&cache, UnpackCaps::default());
    let name = format!("docker-archive:{}:acme/hello:1", file.display());
    // The REF is everything after the path's first colon, tag colon included.
    let pulled = images.pull(&name).unwrap();
    assert_eq!(pulled.reference, name);
    assert!(
        cache
            .join("blobs/sha256")
            .join(Digest::of(&layer).hex())
            .is_file()
    );
    assert!(
        cache
            .join("blobs/sha256")
            .join(Digest::of(&config).hex())
            .is_file()
    );
    let (root, _) = images.rootfs(&pulled).unwrap();
    assert_eq!(
        fs::read(
            crate::image::Stack::open(&root)
                .unwrap()
                .find(Path::new("hello.txt"))
                .unwrap()
        )
        .unwrap(),
        b"hello from an archive\n"
    );
    let bare = format!("docker-archive:{}", file.display());
    assert_eq!(images.pull(&bare).unwrap().digest, pulled.digest);
    let e = images.pull(&format!("{bare}:acme/other:1")).unwrap_err();
    assert!(e.to_string().contains("tags: acme/hello:1"), "{e}");
}

#[test]
fn a_docker_archive_that_lies_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("a", b"a")]);
    let other = layer_tar(&[("b", b"b")]);
    let cache = d.path().join("cache");
    let images = images(&cache, UnpackCaps::default());
    // A layer that is not the one its config's diff_id names.
    let file = d.path().join("wrong-layer.tar");
    docker_archive(&file, &config_of(&[&other]), &layer, None);
    let e = images
        .pull(&format!("docker-archive:{}", file.display()))
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("layer 0123/layer.tar"), "{e}");
    assert!(
        !cache
            .join("blobs/sha256")
            .join(Digest::of(&layer).hex())
            .exists()
    );
    // A config whose name states another digest.
    let file = d.path().join("wrong-config.tar");
    let name = format!("{}.json", Digest::of(b"else").hex());
    docker_archive(&file, &config_of(&[&layer]), &layer, Some(&name));
    let e = images
        .pull(&format!("docker-archive:{}", file.display()))
        .unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    // Not an archive at all.
    let file = d.path().join("junk.tar");
    fs::write(&file, b"junk").unwrap();
    let e = images
        .pull(&format!("docker-archive:{}", file.display()))
        .unwrap_err();
    assert_eq!(e.class(), crate::contract::ErrorClass::User, "{e}");
}

/// An archive whose `0123/layer.tar` is a link to `target`, as Docker writes a layer twice.
fn archive_with_linked_layer(path: &Path, config: &[u8], layer: &[u8], target: &str) {
    let config_name = format!("{}.json", Digest::of(config).hex());
    let manifest = json!([{ "Config": config_name, "RepoTags": ["acme/hello:1"],
                            "Layers": ["0123/layer.tar"] }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, config);
    add("abc.tar", layer);
    add("manifest.json", manifest.to_string().as_bytes());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "0123/layer.tar", target).unwrap();
    fs::write(path, b.into_inner().unwrap()).unwrap();
}

#[test]
fn a_linked_layer_resolves_inside_the_archive_only() {
    let d = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("a", b"a")]);
    let config = config_of(&[&layer]);
    let images = images(&d.path().join("cache"), UnpackCaps::default());
    let file = d.path().join("linked.tar");
    archive_with_linked_layer(&file, &config, &layer, "../abc.tar");
    images
        .pull(&format!("docker-archive:{}", file.display()))
        .unwrap();
    // A link out of the archive names a host file: it is not read.
    let host = d.path().join("host.tar");
    fs::write(&host, &layer).unwrap();
    let file = d.path().join("escaping.tar");
    archive_with_linked_layer(&file, &config, &layer, host.to_str().unwrap());
    let e = images
        .pull(&format!("docker-archive:{}", file.display()))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("0123/layer.tar is not a regular file in the archive"),
        "{e}"
    );
}

/// Points the layout's `v1` at an image index listing its manifest for `arch`, declared
/// `size` bytes long.
fn wrap_in_index(l: &Layout, arch: &str, size: usize) -> Vec<u8> {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": crate::image::spec::manifest::OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": Digest::of(&l.manifest),
                       "size": size, "platform": {"os": "linux", "architecture": arch}}],
    }))
    .unwrap();
    fs::write(l.blob(&index), &index).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": crate::image::spec::manifest::OCI_INDEX, "digest": Digest::of(&index),
        "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    fs::write(l.dir.join("index.json"), top.to_string()).unwrap();
    index
}

#[test]
fn a_layout_naming_an_index_gives_this_platform_checked_against_its_size() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::write(&d.path().join("layout"));
    let arch = crate::image::spec::manifest::host_architecture();
    let index = wrap_in_index(&l, arch, l.manifest.len());
    let images = images(&d.path().join("cache"), UnpackCaps::default());
    let pulled = images.pull(&l.name()).unwrap();
    assert_eq!(pulled.digest, Digest::of(&l.manifest));
    assert_eq!(images.list()[0].digest, Digest::of(&index));

    let other = self::images(&d.path().join("cache2"), UnpackCaps::default());
    wrap_in_index(&l, arch, l.manifest.len() - 1);
    let e = other.pull(&l.name()).unwrap_err();
    assert!(matches!(e, ImageError::SizeMismatch { .. }), "{e}");
    wrap_in_index(&l, "s390x-none", l.manifest.len());
    let e = other.pull(&l.name()).unwrap_err();
    assert!(matches!(e, ImageError::NoPlatform { .. }), "{e}");
    assert!(e.to_string().contains(&l.name()), "{e}");
}
