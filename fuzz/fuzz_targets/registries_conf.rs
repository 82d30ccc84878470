#![no_main]
//! registries.conf as an operator (or whoever can write one of its drop-ins) writes it:
//! parsed, then asked what it makes of a few names — short, aliased, mirrored, blocked.

use berth::image::fuzz::{ImageRef, RegistriesConf};
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

const HEAP_LIMIT: usize = 16 << 20;

const NAMES: &[&str] = &[
    "app",
    "acme/app:1",
    "127.0.0.1:5000/acme/app:1.0",
    "example.com/foo/bar@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "docker.io/library/busybox",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    within_heap(
        HEAP_LIMIT,
        "registries_conf",
        || match RegistriesConf::from_text(text) {
            Ok(conf) => {
                for name in NAMES {
                    if let Ok(qualified) = conf.qualify(name)
                        && let Ok(image) = ImageRef::parse(&qualified)
                    {
                        let _ = conf.sources(&image);
                        let _ = conf.insecure(&image.registry);
                    }
                }
            }
            Err(e) => drop(e.to_string()),
        },
    );
});
