//! A registry that lies: berth must refuse what does not match its digest or its declared
//! size, store nothing of it, and say what was wrong. The fake speaks just enough HTTP on
//! loopback for oci-client; it needs neither root nor a real registry, so it always runs.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{gzip, sha256, tar_of};
use serde_json::json;

/// What the fake serves: path → (status, content type, body, digest header).
type Routes = HashMap<String, (u16, String, Vec<u8>, Option<String>)>;

struct FakeRegistry {
    addr: String,
    routes: Arc<Mutex<Routes>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut parts = request.split_whitespace();
                let method = parts.next().unwrap_or("").to_owned();
                let path = parts.next().unwrap_or("").to_owned();
                h.lock().unwrap().push(format!("{method} {path}"));
                let route = r.lock().unwrap().get(&path).cloned();
                let (status, ctype, body, digest) = match (path.as_str(), route) {
                    ("/v2/", _) => (200, "application/json".to_owned(), b"{}".to_vec(), None),
                    (_, Some(route)) => route,
                    _ => (
                        404,
                        "application/json".to_owned(),
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#.to_vec(),
                        None,
                    ),
                };
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                if let Some(d) = digest {
                    head.push_str(&format!("Docker-Content-Digest: {d}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = stream.write_all(&body);
                }
            }
        });
        FakeRegistry { addr, routes, hits }
    }

    fn serve(&self, path: &str, status: u16, ctype: &str, body: Vec<u8>, digest: Option<String>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), (status, ctype.to_owned(), body, digest));
    }

    /// Serves an image with one layer (optionally declaring a false size for it); returns
    /// the layer's digest. Tests then replace routes to make the registry lie.
    fn image(
        &self,
        repo: &str,
        layer: &[u8],
        diff_id: &str,
        declared_size: Option<usize>,
    ) -> String {
        let layer_digest = format!("sha256:{}", sha256(layer));
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_digest = format!("sha256:{}", sha256(&config));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": declared_size.unwrap_or(layer.len())}],
        }))
        .unwrap();
        let manifest_digest = format!("sha256:{}", sha256(&manifest));
        let mt = "application/vnd.oci.image.manifest.v1+json";
        for reference in ["1.0", manifest_digest.as_str()] {
            self.serve(
                &format!("/v2/{repo}/manifests/{reference}"),
                200,
                mt,
                manifest.clone(),
                Some(manifest_digest.clone()),
            );
        }
        self.serve(
            &format!("/v2/{repo}/blobs/{config_digest}"),
            200,
            "application/octet-stream",
            config,
            None,
        );
        self.serve(
            &format!("/v2/{repo}/blobs/{layer_digest}"),
            200,
            "application/octet-stream",
            layer.to_vec(),
            None,
        );
        layer_digest
    }
}

fn layer() -> (Vec<u8>, String) {
    let tar = tar_of(&[common::file("hello", b"world")]);
    let diff = format!("sha256:{}", sha256(&tar));
    (gzip(&tar), diff)
}

fn pull(reg: &FakeRegistry, reference: &str) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--home"])
        .arg(dir.path().join("home"))
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .args([
            "--retries",
            "0",
            "-q",
            "pull",
            &format!("{}/{reference}", reg.addr),
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

fn stored(dir: &tempfile::TempDir, sub: &str) -> usize {
    std::fs::read_dir(dir.path().join("cache").join(sub))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn an_honest_image_pulls() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    reg.image("acme/ok", &layer, &diff, None);
    let (status, stderr, dir) = pull(&reg, "acme/ok:1.0");
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stored(&dir, "rootfs"), 1);
}

#[test]
fn a_tampered_layer_is_refused_and_not_stored() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    let digest = reg.image("acme/tampered", &layer, &diff, None);
    let mut evil = layer.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    reg.serve(
        &format!("/v2/acme/tampered/blobs/{digest}"),
        200,
        "application/octet-stream",
        evil,
        None,
    );
    let (status, stderr, dir) = pull(&reg, "acme/tampered:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("digest"), "{stderr}");
    assert!(
        !dir.path()
            .join("cache/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    );
    assert_eq!(stored(&dir, "rootfs"), 0);
    assert_eq!(
        stored(&dir, "tmp"),
        0,
        "a half-written blob was left behind"
    );
}

#[test]
fn a_blob_larger_than_declared_is_cut_off() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    // The manifest promises 10 bytes; the registry sends the whole layer.
    reg.image("acme/big", &layer, &diff, Some(10));
    let (status, stderr, dir) = pull(&reg, "acme/big:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("wrong size"), "{stderr}");
    assert_eq!(stored(&dir, "rootfs"), 0);
    assert_eq!(stored(&dir, "tmp"), 0);
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    reg.image("acme/manifest", &layer, &diff, None);
    let pinned = format!("sha256:{}", "0".repeat(64));
    // Asked for by a digest it does not have, the registry answers with another manifest.
    let served = reg.routes.lock().unwrap()["/v2/acme/manifest/manifests/1.0"].clone();
    reg.serve(
        &format!("/v2/acme/manifest/manifests/{pinned}"),
        200,
        &served.1,
        served.2,
        served.3,
    );
    let (status, stderr, dir) = pull(&reg, &format!("acme/manifest@{pinned}"));
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.to_lowercase().contains("digest"), "{stderr}");
    assert_eq!(stored(&dir, "blobs/sha256"), 0);
}

#[test]
fn a_layer_whose_content_differs_from_the_config_is_refused() {
    let reg = FakeRegistry::start();
    let (layer, _) = layer();
    let wrong_diff = format!("sha256:{}", sha256(b"something else"));
    reg.image("acme/diff", &layer, &wrong_diff, None);
    let (status, stderr, dir) = pull(&reg, "acme/diff:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("uncompressed layer"), "{stderr}");
    assert_eq!(
        stored(&dir, "rootfs"),
        0,
        "a rootfs from a mismatching layer was kept"
    );
}

#[test]
fn server_errors_are_retried_then_reported() {
    let reg = FakeRegistry::start();
    reg.serve(
        "/v2/acme/down/manifests/1.0",
        503,
        "text/plain",
        b"down".to_vec(),
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--home")
        .arg(dir.path().join("home"))
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .args([
            "--retries",
            "2",
            "-q",
            "pull",
            &format!("{}/acme/down:1.0", reg.addr),
        ])
        .env("RUST_LOG", "berth=warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let asked = reg
        .hits
        .lock()
        .unwrap()
        .iter()
        // berth asks a tag with HEAD (oci-client, before, with HEAD and then GET).
        .filter(|h| {
            (h.starts_with("GET ") || h.starts_with("HEAD "))
                && h.contains("/acme/down/manifests/1.0")
        })
        .count();
    assert_eq!(asked, 3, "one try and two retries");
}
