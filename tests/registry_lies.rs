//! A registry that lies: berth must refuse what does not match its digest or its declared
//! size, store nothing of it, and say what was wrong. It also serves the OCI 1.1 referrers
//! API, which the test registry (Distribution 2.8) lacks. The fake speaks just enough HTTP on
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

use common::sigstore::{BUNDLE_MEDIA_TYPE, Key, bundle, cosign_statement};
use common::{gzip, sha256, tar_of};
use serde_json::json;

/// What the fake serves: path → (status, content type, body, digest header).
type Routes = HashMap<String, (u16, String, Vec<u8>, Option<String>)>;

/// A request as the fake saw it: method, path (with query), headers (names lower-case).
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a reply's body goes out.
enum Body {
    Bytes(Vec<u8>),
    /// Declares all of `data` and sends only the first `after` bytes, then hangs up.
    Cut {
        data: Vec<u8>,
        after: usize,
    },
    /// `len` bytes of JSON-ish filler, made as they are sent; with a Content-Length or
    /// without one (the end of the connection ends the body).
    Endless {
        len: u64,
        declared: bool,
    },
    /// Declares all of `data`, then sends it a byte at a time, one every `every`.
    Trickle {
        data: Vec<u8>,
        every: std::time::Duration,
    },
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Reply {
    fn new(status: u16, headers: &[(&str, &str)], body: Body) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body,
        }
    }
}

/// Answers a request before the routes do; `None` leaves it to them.
type Handler = Box<dyn FnMut(&Request) -> Option<Reply> + Send>;

struct FakeRegistry {
    addr: String,
    routes: Arc<Mutex<Routes>>,
    hits: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    handler: Arc<Mutex<Option<Handler>>>,
    /// Body bytes the fake managed to send for `Body::Endless` replies.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_lowercase(), v.trim().to_owned()));
        }
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

fn route_reply(routes: &Mutex<Routes>, path: &str) -> Reply {
    let route = routes.lock().unwrap().get(path).cloned();
    let (status, ctype, body, digest) = match (path, route) {
        ("/v2/", _) => (200, "application/json".to_owned(), b"{}".to_vec(), None),
        (_, Some(route)) => route,
        _ => (
            404,
            "application/json".to_owned(),
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#.to_vec(),
            None,
        ),
    };
    let mut headers = vec![("Content-Type".to_owned(), ctype)];
    if let Some(d) = digest {
        headers.push(("Docker-Content-Digest".to_owned(), d));
    }
    Reply {
        status,
        headers,
        body: Body::Bytes(body),
    }
}

fn send_reply(
    stream: &mut std::net::TcpStream,
    method: &str,
    reply: Reply,
    sent: &std::sync::atomic::AtomicU64,
) {
    let length = match &reply.body {
        Body::Bytes(b) => Some(b.len() as u64),
        Body::Cut { data, .. } => Some(data.len() as u64),
        Body::Endless { len, declared } => declared.then_some(*len),
        Body::Trickle { data, .. } => Some(data.len() as u64),
    };
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if let Some(l) = length {
        head.push_str(&format!("Content-Length: {l}\r\n"));
    }
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if method == "HEAD" {
        return;
    }
    match reply.body {
        Body::Bytes(b) => {
            let _ = stream.write_all(&b);
        }
        Body::Cut { data, after } => {
            let _ = stream.write_all(&data[..after]);
            let _ = stream.flush();
        }
        Body::Trickle { data, every } => {
            for b in data {
                if stream.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
        }
        Body::Endless { len, .. } => {
            let chunk = vec![b' '; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64);
                #[expect(clippy::cast_possible_truncation, reason = "at most 64 KiB")]
                if stream.write_all(&chunk[..n as usize]).is_err() {
                    break;
                }
                sent.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                left -= n;
            }
        }
    }
}

impl FakeRegistry {
    fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let reg = FakeRegistry {
            addr,
            routes: Arc::default(),
            hits: Arc::default(),
            requests: Arc::default(),
            handler: Arc::default(),
            sent: Arc::default(),
        };
        let (routes, hits, requests, handler, sent) = (
            reg.routes.clone(),
            reg.hits.clone(),
            reg.requests.clone(),
            reg.handler.clone(),
            reg.sent.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some(request) = read_request(&mut reader) else {
                    continue;
                };
                hits.lock()
                    .unwrap()
                    .push(format!("{} {}", request.method, request.path));
                requests.lock().unwrap().push(request.clone());
                let custom = handler.lock().unwrap().as_mut().and_then(|h| h(&request));
                let reply = custom.unwrap_or_else(|| route_reply(&routes, &request.path));
                send_reply(&mut stream, &request.method, reply, &sent);
            }
        });
        reg
    }

    fn handle(&self, handler: impl FnMut(&Request) -> Option<Reply> + Send + 'static) {
        *self.handler.lock().unwrap() = Some(Box::new(handler));
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
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
    pull_with(reg, reference, &["--retries", "0"])
}

/// `berth pull` with `args` before the command, and no credentials of the host's.
fn pull_with(
    reg: &FakeRegistry,
    reference: &str,
    args: &[&str],
) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = pull_in(&dir, reg, reference, args);
    (status, stderr, dir)
}

/// [`pull_with`], with its home and cache in `dir`.
fn pull_in(
    dir: &tempfile::TempDir,
    reg: &FakeRegistry,
    reference: &str,
    args: &[&str],
) -> (i32, String) {
    berth_pull(dir, reg, reference, &[args, &["-q"]].concat())
}

/// `berth ARGS pull REGISTRY/REFERENCE` with its home and cache in `dir`, no credentials of
/// the host's and berth's own log filter: status and stderr.
fn berth_pull(
    dir: &tempfile::TempDir,
    reg: &FakeRegistry,
    reference: &str,
    args: &[&str],
) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--home"])
        .arg(dir.path().join("home"))
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .args(args)
        .args(["pull", &format!("{}/{reference}", reg.addr)])
        .env("HOME", dir.path())
        .env_remove("RUST_LOG")
        .env("BERTH_SYSTEM_SIGNATURE_POLICY", common::NO_SYSTEM_POLICY)
        // podman's places, kept inside the test's directory: without XDG_RUNTIME_DIR berth
        // would read /run/containers/<uid>/auth.json.
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
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
    assert_eq!(stored(&dir, "stacks"), 1);
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
    assert_eq!(stored(&dir, "stacks"), 0);
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
    assert_eq!(stored(&dir, "stacks"), 0);
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
fn a_tag_whose_stated_digest_is_not_its_documents_is_refused() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    reg.image("acme/stated", &layer, &diff, None);
    // The tag's manifest comes with a Docker-Content-Digest of something else.
    let served = reg.routes.lock().unwrap()["/v2/acme/stated/manifests/1.0"].clone();
    let other = format!("sha256:{}", "1".repeat(64));
    reg.serve(
        "/v2/acme/stated/manifests/1.0",
        200,
        &served.1,
        served.2,
        Some(other.clone()),
    );
    let (status, stderr, dir) = pull(&reg, "acme/stated:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(
        stderr.contains("digest") && stderr.contains(&other),
        "{stderr}"
    );
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
        stored(&dir, "stacks"),
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
        .env("BERTH_SYSTEM_SIGNATURE_POLICY", common::NO_SYSTEM_POLICY)
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

fn b64(s: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s)
}

#[test]
fn bearer_tokens_are_fetched_with_the_credentials_and_renewed_when_they_expire() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    reg.image("acme/tok", &layer, &diff, None);
    let realm = format!("http://{}/token", reg.addr);
    let basic = format!("Basic {}", b64("alice:wonderland"));
    let issued = Arc::new(Mutex::new(0u32));
    let uses = Arc::new(Mutex::new(0u32));
    let (issued2, uses2) = (issued.clone(), uses.clone());
    reg.handle(move |r| {
        if r.path.starts_with("/token") {
            if r.header("authorization") != Some(basic.as_str()) {
                return Some(Reply::new(401, &[], Body::Bytes(Vec::new())));
            }
            assert!(
                r.path.contains("scope=repository%3Aacme%2Ftok%3Apull"),
                "{}",
                r.path
            );
            let mut n = issued2.lock().unwrap();
            *n += 1;
            let token = format!(r#"{{"token": "tok{n}", "expires_in": 300}}"#);
            return Some(Reply::new(200, &[], Body::Bytes(token.into_bytes())));
        }
        let challenge = format!(r#"Bearer realm="{realm}",service="fake""#);
        let deny = Some(Reply::new(
            401,
            &[("WWW-Authenticate", challenge.as_str())],
            Body::Bytes(br#"{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}"#.to_vec()),
        ));
        match r.header("authorization") {
            // The first token expires after two requests; the second one lasts.
            Some("Bearer tok1") => {
                let mut u = uses2.lock().unwrap();
                *u += 1;
                if *u > 2 { deny } else { None }
            }
            Some("Bearer tok2") => None,
            _ => deny,
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    std::fs::write(
        &authfile,
        json!({"auths": {reg.addr.clone(): {"auth": b64("alice:wonderland")}}}).to_string(),
    )
    .unwrap();
    let (status, stderr, _dir) = pull_with(
        &reg,
        "acme/tok:1.0",
        &["--retries", "0", "--authfile", authfile.to_str().unwrap()],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("wonderland"), "{stderr}");
    assert_eq!(*issued.lock().unwrap(), 2, "one token, then one renewal");
    let requests = reg.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.contains("/blobs/") && r.header("authorization") == Some("Bearer tok2")),
        "the blobs after the renewal went with the new token: {requests:?}"
    );
    for r in &requests {
        if !r.path.starts_with("/token") {
            let auth = r.header("authorization").unwrap_or("");
            assert!(!auth.starts_with("Basic"), "credentials went to {}", r.path);
        }
    }
}

#[test]
fn a_token_server_that_refuses_the_credentials_is_a_user_error() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    reg.image("acme/deny", &layer, &diff, None);
    let realm = format!("http://{}/token", reg.addr);
    reg.handle(move |r| {
        if r.path.starts_with("/token") {
            return Some(Reply::new(401, &[], Body::Bytes(Vec::new())));
        }
        let challenge = format!(r#"Bearer realm="{realm}",service="fake""#);
        (r.header("authorization").is_none()).then(|| {
            Reply::new(
                401,
                &[("WWW-Authenticate", &challenge)],
                Body::Bytes(Vec::new()),
            )
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    std::fs::write(
        &authfile,
        json!({"auths": {reg.addr.clone(): {"username": "alice", "password": "not-it"}}})
            .to_string(),
    )
    .unwrap();
    let (status, stderr, _dir) = pull_with(
        &reg,
        "acme/deny:1.0",
        &["--retries", "0", "--authfile", authfile.to_str().unwrap()],
    );
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "registry {} refused the credentials of \"alice\"",
            reg.addr
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("not-it"), "{stderr}");
}

#[test]
fn a_layer_of_a_media_type_berth_cannot_unpack_is_refused_before_download() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    let digest = reg.image("acme/bz", &layer, &diff, None);
    let odd = "application/vnd.oci.image.layer.v1.tar+bzip2";
    let served = reg.routes.lock().unwrap()["/v2/acme/bz/manifests/1.0"].clone();
    let manifest = String::from_utf8(served.2)
        .unwrap()
        .replace("application/vnd.oci.image.layer.v1.tar+gzip", odd);
    let manifest_digest = format!("sha256:{}", sha256(manifest.as_bytes()));
    for reference in ["1.0", manifest_digest.as_str()] {
        reg.serve(
            &format!("/v2/acme/bz/manifests/{reference}"),
            200,
            &served.1,
            manifest.clone().into_bytes(),
            Some(manifest_digest.clone()),
        );
    }
    let (status, stderr, dir) = pull(&reg, "acme/bz:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(
        stderr.contains(odd) && stderr.contains("acme/bz:1.0") && stderr.contains(&digest),
        "{stderr}"
    );
    let hits = reg.hits.lock().unwrap().clone();
    assert!(
        !hits.iter().any(|h| h.contains(&digest)),
        "the layer was fetched: {hits:?}"
    );
    assert_eq!(stored(&dir, "stacks"), 0);
    assert_eq!(stored(&dir, "layers"), 0);
}

/// A layer big enough to be cut in the middle.
fn big_layer() -> (Vec<u8>, String) {
    let mut data = vec![0u8; 300_000];
    let mut x = 7u32;
    for b in &mut data {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let tar = tar_of(&[common::file("noise", &data)]);
    let diff = format!("sha256:{}", sha256(&tar));
    (gzip(&tar), diff)
}

/// Serves the blob at `path`: cut half-way the first time, then `second` for a request
/// with a Range header.
fn cut_then(reg: &FakeRegistry, path: String, layer: Vec<u8>, second: Vec<u8>) -> usize {
    let half = layer.len() / 2;
    let mut first = true;
    reg.handle(move |r| {
        if r.path != path {
            return None;
        }
        if first {
            first = false;
            let data = layer.clone();
            return Some(Reply::new(200, &[], Body::Cut { data, after: half }));
        }
        let range = r.header("range")?;
        let from: usize = range
            .strip_prefix("bytes=")?
            .trim_end_matches('-')
            .parse()
            .ok()?;
        let total = second.len();
        let content_range = format!("bytes {from}-{}/{total}", total - 1);
        Some(Reply::new(
            206,
            &[("Content-Range", &content_range)],
            Body::Bytes(second[from..].to_vec()),
        ))
    });
    half
}

#[test]
fn a_broken_blob_download_resumes_with_a_range_request() {
    let reg = FakeRegistry::start();
    let (layer, diff) = big_layer();
    let digest = reg.image("acme/resume", &layer, &diff, None);
    let path = format!("/v2/acme/resume/blobs/{digest}");
    let half = cut_then(&reg, path.clone(), layer.clone(), layer);
    let (status, stderr, dir) = pull_with(&reg, "acme/resume:1.0", &["--retries", "1"]);
    assert_eq!(status, 0, "{stderr}");
    let ranges: Vec<String> = reg
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .filter_map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(ranges, vec![format!("bytes={half}-")]);
    assert_eq!(stored(&dir, "stacks"), 1);
}

#[test]
fn a_resumed_blob_is_verified_from_its_first_byte() {
    let reg = FakeRegistry::start();
    let (layer, diff) = big_layer();
    let digest = reg.image("acme/resume-evil", &layer, &diff, None);
    let path = format!("/v2/acme/resume-evil/blobs/{digest}");
    // The rest of the blob, as resumed, is not the rest of this blob.
    let mut evil = layer.clone();
    let last = evil.len() - 10;
    evil[last] ^= 0xff;
    cut_then(&reg, path.clone(), layer, evil);
    let (status, stderr, dir) = pull_with(&reg, "acme/resume-evil:1.0", &["--retries", "1"]);
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("does not match its digest"), "{stderr}");
    assert!(reg.requests().iter().any(|r| r.header("range").is_some()));
    assert_eq!(stored(&dir, "stacks"), 0);
    assert_eq!(stored(&dir, "layers"), 0);
    assert_eq!(
        stored(&dir, "tmp"),
        0,
        "a half-written blob was left behind"
    );
}

/// Asserts berth hung up long before the end of a 100 MB `Body::Endless` (its length
/// `declared` or not): what the fake sent fits in socket buffers plus a cap.
fn assert_hung_up_early(reg: &FakeRegistry, declared: bool) {
    std::thread::sleep(std::time::Duration::from_millis(200));
    let sent = reg.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < 24 << 20,
        "the fake sent {sent} bytes (declared: {declared})"
    );
}

/// Serves a manifest of 100 MB, made as it is sent, for `acme/huge@…`.
fn huge_manifest(reg: &FakeRegistry, declared: bool) -> String {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let path = format!("/v2/acme/huge/manifests/{digest}");
    reg.handle(move |r| {
        (r.path == path).then(|| {
            let body = Body::Endless {
                len: 100 << 20,
                declared,
            };
            let mt = "application/vnd.oci.image.manifest.v1+json";
            Reply::new(200, &[("Content-Type", mt)], body)
        })
    });
    format!("acme/huge@{digest}")
}

#[test]
fn a_huge_manifest_is_refused_without_reading_it() {
    for declared in [true, false] {
        let reg = FakeRegistry::start();
        let reference = huge_manifest(&reg, declared);
        let (status, stderr, dir) = pull(&reg, &reference);
        assert_eq!(status, 3, "{stderr}");
        assert!(
            stderr.contains(&format!("image {}/{reference} is refused", reg.addr))
                && stderr.contains("more than the cap"),
            "{stderr}"
        );
        assert_hung_up_early(&reg, declared);
        assert_eq!(stored(&dir, "blobs/sha256"), 0);
    }
}

#[test]
fn redirects_are_followed_a_few_times_and_no_more() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    let digest = reg.image("acme/moved", &layer, &diff, None);
    let blob = format!("/v2/acme/moved/blobs/{digest}");
    // The blob lives in "storage", one redirect away (plain HTTP to plain HTTP: loopback).
    let storage = format!("/storage/{digest}");
    let (b, s) = (blob.clone(), storage.clone());
    reg.handle(move |r| {
        if r.path.starts_with(&s) {
            return Some(Reply::new(200, &[], Body::Bytes(layer.clone())));
        }
        (r.path == b).then(|| {
            let loc = format!("{s}?X-Signature=very-secret");
            Reply::new(307, &[("Location", &loc)], Body::Bytes(Vec::new()))
        })
    });
    let (status, stderr, _dir) = pull(&reg, "acme/moved:1.0");
    assert_eq!(status, 0, "{stderr}");
    assert!(
        reg.hits
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with(&format!("GET {storage}")))
    );

    // A redirect loop ends.
    let loop_reg = FakeRegistry::start();
    let (layer, diff) = self::layer();
    let digest = loop_reg.image("acme/loop", &layer, &diff, None);
    let blob = format!("/v2/acme/loop/blobs/{digest}");
    let b = blob.clone();
    loop_reg.handle(move |r| {
        r.path.starts_with(&b).then(|| {
            let loc = format!("{b}?hop={}", r.path.len());
            Reply::new(302, &[("Location", &loc)], Body::Bytes(Vec::new()))
        })
    });
    let (status, stderr, _dir) = pull(&loop_reg, "acme/loop:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("too many redirects"), "{stderr}");
    let hops = loop_reg
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.contains(&blob))
        .count();
    assert_eq!(hops, 6, "the first request and five redirects");
}

#[test]
fn a_registry_that_ignores_the_range_sends_the_blob_again_from_the_start() {
    let reg = FakeRegistry::start();
    let (layer, diff) = big_layer();
    let digest = reg.image("acme/norange", &layer, &diff, None);
    let path = format!("/v2/acme/norange/blobs/{digest}");
    let (p, half) = (path.clone(), layer.len() / 2);
    let mut first = true;
    reg.handle(move |r| {
        // Cut the first time; then the routes answer 200 with the whole blob.
        (r.path == p && std::mem::take(&mut first)).then(|| {
            let data = layer.clone();
            Reply::new(200, &[], Body::Cut { data, after: half })
        })
    });
    let (status, stderr, dir) = pull_with(&reg, "acme/norange:1.0", &["--retries", "1"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        reg.requests()
            .iter()
            .any(|r| r.path == path && r.header("range").is_some())
    );
    assert_eq!(stored(&dir, "stacks"), 1);
}

#[test]
fn a_challenge_from_where_a_redirect_led_gets_no_credentials() {
    // The registry sends the blob to "storage" on another port; storage answers 401 with a
    // challenge whose realm is its own. Answering it would hand the registry's credentials
    // (or a token asked for with them) to storage.
    for scheme in ["Bearer", "Basic"] {
        let reg = FakeRegistry::start();
        let storage = FakeRegistry::start();
        let (layer, diff) = layer();
        let digest = reg.image("acme/elsewhere", &layer, &diff, None);
        let blob = format!("/v2/acme/elsewhere/blobs/{digest}");
        let target = format!("http://{}/storage/{digest}", storage.addr);
        reg.handle(move |r| {
            (r.path == blob).then(|| {
                Reply::new(
                    307,
                    &[("Location", target.as_str())],
                    Body::Bytes(Vec::new()),
                )
            })
        });
        let realm = format!("http://{}/token", storage.addr);
        storage.handle(move |r| {
            if r.path.starts_with("/token") {
                let token = br#"{"token": "stolen"}"#.to_vec();
                return Some(Reply::new(200, &[], Body::Bytes(token)));
            }
            let challenge = match scheme {
                "Bearer" => format!(r#"Bearer realm="{realm}",service="storage""#),
                _ => r#"Basic realm="storage""#.to_owned(),
            };
            Some(Reply::new(
                401,
                &[("WWW-Authenticate", challenge.as_str())],
                Body::Bytes(Vec::new()),
            ))
        });
        let dir = tempfile::tempdir().unwrap();
        let authfile = dir.path().join("auth.json");
        std::fs::write(
            &authfile,
            json!({"auths": {reg.addr.clone(): {"auth": b64("alice:wonderland")}}}).to_string(),
        )
        .unwrap();
        let (status, stderr, dir) = pull_with(
            &reg,
            "acme/elsewhere:1.0",
            &["--retries", "0", "--authfile", authfile.to_str().unwrap()],
        );
        assert_eq!(status, 3, "{scheme}: {stderr}");
        assert!(
            stderr.contains(&format!("http://{}/storage/{digest}", storage.addr))
                && stderr.contains("asks for credentials"),
            "{scheme}: {stderr}"
        );
        let at_storage = storage.requests();
        assert!(
            !at_storage.is_empty(),
            "{scheme}: the redirect was not followed"
        );
        for r in &at_storage {
            assert!(
                !r.path.starts_with("/token"),
                "{scheme}: berth asked storage's realm for a token: {at_storage:?}"
            );
            assert_eq!(
                r.header("authorization"),
                None,
                "{scheme}: credentials went to storage: {}",
                r.path
            );
        }
        assert!(!stderr.contains("wonderland"), "{stderr}");
        assert_eq!(stored(&dir, "stacks"), 0);
    }
}

#[test]
fn layers_declared_beyond_the_image_cap_are_refused_before_download() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    // The manifest declares a terabyte for a layer of a few hundred bytes.
    let digest = reg.image("acme/terabyte", &layer, &diff, Some(1 << 40));
    let (status, stderr, dir) = pull(&reg, "acme/terabyte:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(
        stderr.contains("its layers declare 1099511627776 bytes, more than the 34359738368"),
        "{stderr}"
    );
    let hits = reg.hits.lock().unwrap().clone();
    assert!(
        !hits.iter().any(|h| h.contains(&digest)),
        "the layer was fetched: {hits:?}"
    );
    assert_eq!(stored(&dir, "blobs/sha256"), 1, "only the manifest is kept");

    // Under --max-image-bytes, an honest layer larger than the cap is refused the same way.
    let (status, stderr, _dir) = pull_with(
        &reg,
        "acme/terabyte:1.0",
        &["--retries", "0", "--max-image-bytes", "100"],
    );
    assert_eq!(status, 3, "{stderr}");
    assert!(
        stderr.contains("more than the 100 it may unpack to"),
        "{stderr}"
    );
}

#[test]
fn a_blob_longer_than_declared_is_cut_off_as_it_streams() {
    for declared in [false, true] {
        let reg = FakeRegistry::start();
        let (layer, diff) = layer();
        let digest = reg.image("acme/long", &layer, &diff, None);
        let path = format!("/v2/acme/long/blobs/{digest}");
        reg.handle(move |r| {
            (r.path == path).then(|| {
                let body = Body::Endless {
                    len: 100 << 20,
                    declared,
                };
                Reply::new(200, &[], body)
            })
        });
        let (status, stderr, dir) = pull(&reg, "acme/long:1.0");
        assert_eq!(status, 3, "{stderr}");
        assert!(
            stderr.contains(&format!("blob {digest} has the wrong size")),
            "{stderr}"
        );
        if declared {
            assert!(
                stderr.contains("got 104857600 (its Content-Length)"),
                "{stderr}"
            );
        }
        assert_hung_up_early(&reg, declared);
        assert_eq!(stored(&dir, "tmp"), 0);
    }
}

#[test]
fn a_registry_that_trickles_fails_at_the_pull_deadline() {
    let reg = FakeRegistry::start();
    let (layer, diff) = big_layer();
    let digest = reg.image("acme/slow", &layer, &diff, None);
    let path = format!("/v2/acme/slow/blobs/{digest}");
    reg.handle(move |r| {
        (r.path == path).then(|| {
            let body = Body::Trickle {
                data: layer.clone(),
                every: std::time::Duration::from_millis(100),
            };
            Reply::new(200, &[], body)
        })
    });
    let (status, stderr, dir) = pull_with(
        &reg,
        "acme/slow:1.0",
        &["--retries", "0", "--pull-timeout", "2s"],
    );
    assert_eq!(status, 3, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the pull of {}/acme/slow:1.0 did not finish within 2s (--pull-timeout)",
            reg.addr
        )),
        "{stderr}"
    );
    assert_eq!(stored(&dir, "stacks"), 0);
    assert_eq!(stored(&dir, "tmp"), 0, "a partial blob was left behind");
}

/// Holds the flock of `<dir>/cache/locks/NAME.lock`, as another berth would.
fn hold_lock(dir: &tempfile::TempDir, name: &str) -> nix::fcntl::Flock<std::fs::File> {
    let locks = dir.path().join("cache/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let file = std::fs::File::create(locks.join(format!("{name}.lock"))).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap()
}

#[test]
fn a_berth_waiting_on_another_berths_lock_gives_up_naming_it() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    let digest = reg.image("acme/locked", &layer, &diff, None);
    let hex = digest.trim_start_matches("sha256:").to_owned();
    let timeout = ["--retries", "0", "--pull-timeout", "2s"];

    // Another berth is fetching the layer's blob, and never finishes.
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(format!("cache/locks/blob-{hex}.lock"));
    let held = hold_lock(&dir, &format!("blob-{hex}"));
    let (status, stderr) = pull_in(&dir, &reg, "acme/locked:1.0", &timeout);
    assert_eq!(status, 3, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "gave up waiting 2s for another berth fetching or unpacking blob {digest}: it holds \
             the lock {}",
            lock.display()
        )),
        "{stderr}"
    );
    drop(held);

    // Another berth is unpacking the layer: its lock is named after the diff id (and the
    // id range), as an honest pull shows.
    let (status, stderr) = pull_in(&dir, &reg, "acme/locked:1.0", &timeout);
    assert_eq!(status, 0, "{stderr}");
    let diff_hex = diff.trim_start_matches("sha256:").to_owned();
    let name = std::fs::read_dir(dir.path().join("cache/locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&diff_hex))
        .unwrap()
        .trim_end_matches(".lock")
        .to_owned();
    let fresh = tempfile::tempdir().unwrap();
    let held = hold_lock(&fresh, &name);
    let (status, stderr) = pull_in(&fresh, &reg, "acme/locked:1.0", &timeout);
    assert_eq!(status, 3, "{stderr}");
    let lock = fresh.path().join(format!("cache/locks/{name}.lock"));
    assert!(
        stderr.contains(&format!(
            "another berth fetching or unpacking layer {diff}: it holds the lock {}",
            lock.display()
        )),
        "{stderr}"
    );
    assert_eq!(stored(&fresh, "stacks"), 0);
    drop(held);
}

/// `berth pull` of `reference` from `reg` with its home and cache in `dir`, not quiet (the
/// warnings are what is looked at): status and stderr.
fn pull_loud(dir: &tempfile::TempDir, reg: &FakeRegistry, reference: &str) -> (i32, String) {
    berth_pull(dir, reg, reference, &["--retries", "0"])
}

#[test]
fn a_busy_or_failing_registry_leaves_a_stored_tag_to_run_with_a_warning() {
    for (code, status) in [
        (429, "429 Too Many Requests"),
        (503, "503 Service Unavailable"),
    ] {
        let reg = FakeRegistry::start();
        let (layer, diff) = layer();
        reg.image("acme/busy", &layer, &diff, None);
        let dir = tempfile::tempdir().unwrap();
        let (first, stderr) = pull_loud(&dir, &reg, "acme/busy:1.0");
        assert_eq!(first, 0, "{stderr}");
        let digest = reg.routes.lock().unwrap()["/v2/acme/busy/manifests/1.0"]
            .3
            .clone()
            .unwrap();
        reg.handle(move |r| {
            r.path
                .contains("/manifests/")
                .then(|| Reply::new(code, &[], Body::Bytes(b"busy".to_vec())))
        });
        let (again, stderr) = pull_loud(&dir, &reg, "acme/busy:1.0");
        assert_eq!(again, 0, "{stderr}");
        let warning = format!(
            "registry {} answered {status}; running the stored {}/acme/busy:1.0 ({digest})",
            reg.addr, reg.addr
        );
        assert!(
            stderr.contains(&warning),
            "expected {warning:?} in: {stderr}"
        );
        let line = stderr.lines().find(|l| l.contains(&warning)).unwrap();
        assert!(line.contains("WARN"), "a warning: {line}");
        let asked: Vec<String> = reg.hits.lock().unwrap().clone();
        let last = asked.last().unwrap();
        assert!(
            last.starts_with("HEAD "),
            "a tag is checked with a HEAD: {asked:?}"
        );
    }
}

#[test]
fn a_busy_registry_without_a_stored_image_is_an_error_naming_its_answer() {
    let reg = FakeRegistry::start();
    reg.handle(|_| Some(Reply::new(429, &[], Body::Bytes(Vec::new()))));
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = pull_loud(&dir, &reg, "acme/none:1.0");
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("429 Too Many Requests"), "{stderr}");
    assert!(stderr.contains("acme/none:1.0"), "{stderr}");
}

#[test]
fn always_fails_when_the_registry_is_busy_even_with_a_stored_tag() {
    let reg = FakeRegistry::start();
    let (layer, diff) = layer();
    reg.image("acme/strict", &layer, &diff, None);
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = pull_in(&dir, &reg, "acme/strict:1.0", &["--retries", "0"]);
    assert_eq!(status, 0, "{stderr}");
    reg.handle(|_| Some(Reply::new(503, &[], Body::Bytes(Vec::new()))));
    let args = ["--retries", "0", "--pull", "always"];
    let (status, stderr) = pull_in(&dir, &reg, "acme/strict:1.0", &args);
    assert_eq!(status, 3, "{stderr}");
    assert!(stderr.contains("503 Service Unavailable"), "{stderr}");
}

/// The digest of the manifest `reg.image` serves for `repo`.
fn manifest_digest(reg: &FakeRegistry, repo: &str) -> String {
    reg.routes.lock().unwrap()[&format!("/v2/{repo}/manifests/1.0")]
        .3
        .clone()
        .unwrap()
}

/// Serves `bundle` as cosign attaches it to `subject` in `repo`: the bundle blob and a
/// referrer manifest; returns the referrers index entry listing it.
fn serve_bundle(
    reg: &FakeRegistry,
    repo: &str,
    subject: &str,
    bundle: &serde_json::Value,
) -> serde_json::Value {
    let bundle = serde_json::to_vec(bundle).unwrap();
    let blob = format!("sha256:{}", sha256(&bundle));
    let octets = "application/octet-stream";
    reg.serve(
        &format!("/v2/{repo}/blobs/{blob}"),
        200,
        octets,
        bundle.clone(),
        None,
    );
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": oci, "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": format!("sha256:{}", sha256(b"{}")), "size": 2},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": blob, "size": bundle.len()}],
        "subject": {"mediaType": oci, "digest": subject, "size": 1},
    }))
    .unwrap();
    let digest = format!("sha256:{}", sha256(&manifest));
    let path = format!("/v2/{repo}/manifests/{digest}");
    reg.serve(&path, 200, oci, manifest.clone(), Some(digest.clone()));
    json!({"mediaType": oci, "digest": digest, "size": manifest.len(),
           "artifactType": BUNDLE_MEDIA_TYPE})
}

/// Answers the referrers API for `subject` in `repo` with an index of `entries`.
fn serve_referrers(reg: &FakeRegistry, repo: &str, subject: &str, entries: &[serde_json::Value]) {
    let index = "application/vnd.oci.image.index.v1+json";
    let body = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": index,
                                          "manifests": entries}))
    .unwrap();
    reg.serve(
        &format!("/v2/{repo}/referrers/{subject}"),
        200,
        index,
        body,
        None,
    );
}

/// An image of `repo` with a cosign 3 bundle by `signer` served through the referrers
/// API; the policy (trusting `trusted`) is written into `keys`. Returns the policy's path,
/// the image's digest and the bundle's index entry.
fn signed_image(
    reg: &FakeRegistry,
    repo: &str,
    keys: &tempfile::TempDir,
    signer: &Key,
    trusted: &Key,
) -> (std::path::PathBuf, String, serde_json::Value) {
    let (layer, diff) = layer();
    reg.image(repo, &layer, &diff, None);
    let digest = manifest_digest(reg, repo);
    let entry = serve_bundle(
        reg,
        repo,
        &digest,
        &bundle(signer, &cosign_statement(&digest)),
    );
    serve_referrers(reg, repo, &digest, std::slice::from_ref(&entry));
    let policy = keys.path().join("policy.json");
    let json = json!({"default": [{"type": "sigstoreSigned", "keyPath": trusted.public,
                                   "signedIdentity": {"type": "matchRepository"}}]});
    std::fs::write(&policy, json.to_string()).unwrap();
    (policy, digest, entry)
}

fn pull_signed(reg: &FakeRegistry, reference: &str, policy: &std::path::Path) -> (i32, String) {
    let policy = policy.to_str().unwrap();
    let args = ["--retries", "0", "--signature-policy", policy];
    let (status, stderr, _dir) = pull_with(reg, reference, &args);
    (status, stderr)
}

#[test]
fn cosign_bundles_are_found_through_the_referrers_api() {
    let reg = FakeRegistry::start();
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "ops");
    let (policy, digest, _) = signed_image(&reg, "acme/signed", &keys, &key, &key);
    let (status, stderr) = pull_signed(&reg, "acme/signed:1.0", &policy);
    assert_eq!(status, 0, "{stderr}");
    let asked = reg.hits.lock().unwrap().clone();
    assert!(
        asked.contains(&format!("GET /v2/acme/signed/referrers/{digest}")),
        "{asked:?}"
    );
    // The API answered: the referrers tag schema's tag is not asked.
    let tag = format!("/v2/acme/signed/manifests/{}", digest.replacen(':', "-", 1));
    assert!(!asked.iter().any(|a| a.ends_with(&tag)), "{asked:?}");

    // Signed by another key: refused.
    let reg = FakeRegistry::start();
    let stranger = Key::new(keys.path(), "stranger");
    let (policy, _, _) = signed_image(&reg, "acme/other", &keys, &stranger, &key);
    let (status, stderr) = pull_signed(&reg, "acme/other:1.0", &policy);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("none of its signatures verifies with"),
        "{stderr}"
    );
    assert!(stderr.contains("acme/other:1.0"), "{stderr}");
}

#[test]
fn a_referrers_api_that_lies_about_a_bundle_is_not_believed() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "ops");
    let oci = "application/vnd.oci.image.manifest.v1+json";

    // The manifest it lists is not the one served under that digest.
    let reg = FakeRegistry::start();
    let (policy, digest, entry) = signed_image(&reg, "acme/swapped", &keys, &key, &key);
    let listed = entry["digest"].as_str().unwrap();
    let elsewhere = serve_bundle(&reg, "acme/swapped", &digest, &json!({"forged": true}));
    let other = reg.routes.lock().unwrap()[&format!(
        "/v2/acme/swapped/manifests/{}",
        elsewhere["digest"].as_str().unwrap()
    )]
        .2
        .clone();
    let path = format!("/v2/acme/swapped/manifests/{listed}");
    reg.serve(&path, 200, oci, other, None);
    let (status, stderr) = pull_signed(&reg, "acme/swapped:1.0", &policy);
    assert_ne!(status, 0, "{stderr}");
    assert!(stderr.contains("does not match its digest"), "{stderr}");

    // The bundle blob is not what the manifest's digest says.
    let reg = FakeRegistry::start();
    let (policy, _, entry) = signed_image(&reg, "acme/blob", &keys, &key, &key);
    let manifest = format!(
        "/v2/acme/blob/manifests/{}",
        entry["digest"].as_str().unwrap()
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&reg.routes.lock().unwrap()[&manifest].2).unwrap();
    let blob = format!(
        "/v2/acme/blob/blobs/{}",
        manifest["layers"][0]["digest"].as_str().unwrap()
    );
    let forged = b"{\"forged\": true}".to_vec();
    reg.serve(&blob, 200, "application/octet-stream", forged, None);
    let (status, stderr) = pull_signed(&reg, "acme/blob:1.0", &policy);
    assert_ne!(status, 0, "{stderr}");
    assert!(stderr.contains("does not match its digest"), "{stderr}");
}
