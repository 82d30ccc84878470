//! Images: registries and transports → the content store → the layer store.
//!
//! Cut the way containerd cuts it, every edge one way (the architecture test holds it):
//!
//! ```text
//! spec           what an image is: digests, references, manifests, records, errors (a leaf)
//! content        blobs by digest and image records                     → spec
//! distribution   registries (auth, TLS) and transports, into content   → content, spec
//! verify         the signature policy: yes or no for a reference       → spec
//! layers         unpack, layer stacks, views, leases, prune            → content, spec
//! façade         Images, Puller, Unpacker, inspect (this file, images.rs, pull.rs,
//!                inspect.rs)                                          → every part
//! ```
//!
//! [`Images::puller`] resolves a reference to a manifest for this host's platform and makes
//! sure every blob it needs is stored, verified, under the signature policy; an OCI layout
//! or a `docker save` archive fills the same store, as strictly checked, without any
//! registry. [`Images::unpacker`] then unpacks each layer once into the shared, read-only
//! layer store. Opening the store runs no collection: the commands sweep and prune.

mod content;
mod distribution;
mod images;
mod inspect;
mod layers;
mod pull;
mod spec;
mod verify;

#[cfg(test)]
mod loading_tests;

#[cfg(any(test, feature = "test-utils"))]
pub use content::Store;
pub use distribution::auth::{self, Credentials};
pub use distribution::{
    PullPolicy, PullPolicyError, RegistriesConf, RegistriesConfError, RegistryClient,
    RegistrySettings, SYSTEM_CERTS_D, registries_conf_files, short_name_alias_cache,
    standard_certs_d, user_certs_d,
};
pub use images::{Images, Unpacker};
pub use inspect::{Inspection, LayerInfo, Origin, PlatformInfo, RunInfo};
pub use layers::prune::{PruneError, PruneLimits, Removed};
pub use layers::{
    Ownership, RootfsView, Stack, UnpackCaps, Unpacking, ViewDirs, is_opaque, merge_layers,
};
pub use pull::{PulledImage, Puller};
pub use spec::manifest::{Descriptor, ImageConfig, RunConfig, host_architecture};
pub use spec::record::ImageRecord;
pub use spec::{AuthError, Digest, ImageError, ImageRef, PolicyError, ShiftError};
pub use verify::{Gate, SYSTEM_POLICY, SignaturePolicy, locate as locate_policy};

/// Entry points for the fuzz targets (`fuzz/`): the parsers of untrusted input, named here
/// so that the targets survive moves inside `image`.
#[cfg(feature = "fuzzing")]
pub mod fuzz {
    pub use super::distribution::RegistriesConf;
    pub use super::distribution::auth::{Challenge, TokenAnswer, fuzz_auth_file};
    pub use super::layers::unpack::{Budget, Extraction, Ownership, UnpackCaps, unpack_layer};
    pub use super::spec::digest::chain_id;
    pub use super::spec::manifest::ImageConfig;
    pub use super::spec::manifest::{Manifest, is_fetchable, unsupported_layer};
    pub use super::spec::{Digest, ImageRef};
    pub use super::verify::fuzz_bundle;
    pub use super::verify::key::PublicKey;
    pub use super::verify::policy::{
        NamedKey, Policy, Requirement, SignedIdentity, SigstoreKey, identity_matches,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ErrorClass;
    use spec::reference::parse_reference;

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
        let images = Images::open(dir.path()).unwrap();
        let registry = RegistrySettings {
            retries: 0,
            progress: false,
            ..Default::default()
        };
        let policy = SignaturePolicy::default();
        let puller = images.puller(&registry, &policy, UnpackCaps::default());
        // Port 9 (discard) on loopback: nothing listens there.
        let e = puller
            .pull("127.0.0.1:9/acme/none@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .unwrap_err();
        assert!(matches!(e, ImageError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    }
}
