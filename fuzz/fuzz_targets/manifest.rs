#![no_main]
//! Image manifests, indexes and configs as a registry, an OCI layout or a `docker save`
//! archive hands them over: every input is read as each of the three, as berth reads them
//! before it trusts any of their values.

use berth::image::ImageConfig;
use berth::image::digest::chain_id;
use berth::image::manifest::{Manifest, unsupported_layer};
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

/// Far above what parsing a document of a few kilobytes needs.
const HEAP_LIMIT: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    within_heap(HEAP_LIMIT, "manifest", || {
        match Manifest::parse(data) {
            Ok(Manifest::Image(m)) => {
                let _ = unsupported_layer(data);
                for d in m.layers.iter().chain([&m.config]) {
                    let _ = d.size();
                    let _ = berth::image::manifest::is_fetchable(&d.media_type);
                }
            }
            Ok(Manifest::Index(index)) => {
                let _ = index.pick_host_platform().map(|d| d.size());
                let _ = index.platforms();
            }
            Err(e) => drop(e),
        }
        if let Ok(config) = ImageConfig::parse(data) {
            let _ = chain_id(&config.rootfs.diff_ids);
            // What the image store keeps of it.
            let _ = serde_json::to_vec(&config);
        }
    });
});
