#![no_main]
//! Credentials and what registries send about them: the input as a credentials file
//! (`auth.json`, docker's `config.json`), as the `WWW-Authenticate` header of a 401, and
//! as a token server's answer.

use berth::image::auth::{Challenge, TokenAnswer, fuzz_auth_file};
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

const HEAP_LIMIT: usize = 16 << 20;

const REGISTRIES: &[(&str, &str)] = &[
    ("127.0.0.1:5000", "acme/app"),
    ("docker.io", "library/busybox"),
    ("registry.example.com", "a/b/c"),
];

fuzz_target!(|data: &[u8]| {
    within_heap(HEAP_LIMIT, "auth", || {
        for (registry, repository) in REGISTRIES {
            match fuzz_auth_file(data, registry, repository) {
                Ok((_helper, Some(credentials))) => drop(credentials.basic_header()),
                Ok(_) => {}
                Err(e) => drop(e.to_string()),
            }
        }
        let _ = Challenge::parse(&String::from_utf8_lossy(data));
        if let Ok(answer) = serde_json::from_slice::<TokenAnswer>(data) {
            let _ = answer.into_token();
        }
    });
});
