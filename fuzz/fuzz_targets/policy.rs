#![no_main]
//! `policy.json`, the signature policy: parsed, then asked for the requirements of a few
//! images, and each `sigstoreSigned` identity matched against the references a signature
//! may claim.

use std::path::Path;

use berth::image::ImageRef;
use berth::image::policy::{Policy, Requirement, identity_matches};
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

const HEAP_LIMIT: usize = 16 << 20;

const IMAGES: &[&str] = &[
    "127.0.0.1:5000/acme/app:1",
    "registry.example.com/acme/team/app@sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "docker.io/library/busybox",
];

fuzz_target!(|data: &[u8]| {
    within_heap(HEAP_LIMIT, "policy", || {
        let Ok(policy) = Policy::parse(Path::new("policy.json"), data) else {
            return;
        };
        let _ = policy.for_local("oci", Path::new("/var/lib/images/app"), Some("1"));
        for image in IMAGES {
            let image = ImageRef::parse(image).expect("a valid reference");
            let (requirements, _scope) = policy.for_docker(&image);
            for r in requirements {
                if let Requirement::Sigstore(key) = r {
                    for signed in IMAGES {
                        let _ = identity_matches(&key.identity, &image, signed);
                    }
                }
            }
        }
    });
});
