#![no_main]
//! The manifests a component writes beside its outputs (`out/tables/*.manifest`,
//! `out/files/*.manifest`): the first line of the input names the table, the rest is the
//! manifest, turned into the loads and tags a job would commit.

use berth::mapping::output::fuzz_manifest;
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

const HEAP_LIMIT: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let (name, manifest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("data.csv".to_owned(), data),
    };
    within_heap(HEAP_LIMIT, "output manifest", || {
        fuzz_manifest(&name, manifest)
    });
});
