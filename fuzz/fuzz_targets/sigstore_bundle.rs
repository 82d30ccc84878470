#![no_main]
//! A sigstore bundle as a registry serves it among an image's referrers (cosign 3's
//! signatures): parsed and checked against a fixed key, and, as the statement of an
//! envelope that verified, checked for the image's digest and name.

use berth::image::fuzz::{
    Digest, ImageRef, NamedKey, PublicKey, SignedIdentity, SigstoreKey, fuzz_bundle,
};
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

const HEAP_LIMIT: usize = 16 << 20;

/// A P-256 public key made for this target (its private half was thrown away).
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEg0IJCH6aBZdXqrU2rgTi5a77m/ou
sDFrI+mXk/8o4P+Amx/K9eUrGDvuGHWzxzIcf5rOx9jQDbw8ILIsGBYlPw==
-----END PUBLIC KEY-----
";

const TOP: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fuzz_target!(|data: &[u8]| {
    let key = SigstoreKey {
        keys: vec![NamedKey {
            key: PublicKey::from_pem(KEY).expect("a valid key"),
            name: "fuzz.pub".to_owned(),
        }],
        identity: SignedIdentity::MatchRepository,
    };
    let image = ImageRef::parse("127.0.0.1:5000/acme/app:1").expect("a valid reference");
    let top: Digest = TOP.parse().expect("a valid digest");
    within_heap(HEAP_LIMIT, "sigstore_bundle", || {
        fuzz_bundle(&key, &image, &top, data);
    });
});
