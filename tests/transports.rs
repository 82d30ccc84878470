//! Images without a registry: OCI layouts and `docker save` archives written by skopeo load
//! into berth's store (and run from a job), and the layouts `berth save` writes are read by
//! skopeo and umoci.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// Runs skopeo with `args` (plain HTTP to the test registry), asserting it succeeds.
fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy(from: &str, to: &str) {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        from,
        to,
    ]);
}

fn inspect(what: &str) -> Value {
    serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", what])).unwrap()
}

fn stored(b: &Berth) -> Value {
    let r = b.run_cmd(&["images", "--json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn an_oci_layout_skopeo_wrote_is_pulled_and_runs_from_a_job() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo FROM-A-LAYOUT"),
        &unique_repo("layout"),
        "1.0",
    );
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    copy(
        &format!("docker://{}", img.reference),
        &format!("oci:{}:v1", layout.display()),
    );
    let name = format!("oci:{}:v1", layout.display());
    let b = Berth::new();
    let r = b.run_cmd(&["pull", &name]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let digest = img.digest.as_str();
    assert_eq!(r.stdout.trim(), format!("{name} {digest}"));
    let records = stored(&b);
    assert_eq!(records[0]["reference"], name.as_str());
    assert_eq!(records[0]["manifest"], digest);

    let r = b.run_job(&job(&name, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.json()["status"], "success");
    assert!(r.stderr.contains("FROM-A-LAYOUT"), "{}", r.stderr);

    // A name the layout does not hold is the user's mistake, named.
    let other = format!("oci:{}:v2", layout.display());
    let r = b.run_cmd(&["pull", &other]);
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains("no image is named \"v2\""),
        "{}",
        r.stderr
    );
}

#[test]
fn a_docker_archive_skopeo_wrote_is_pulled_with_layers_by_diff_id() {
    require_env!();
    let repo = unique_repo("archive");
    let img = push(&ImageSpec::script("echo FROM-AN-ARCHIVE"), &repo, "1.0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.tar");
    copy(
        &format!("docker://{}", img.reference),
        &format!("docker-archive:{}:acme/archived:1", file.display()),
    );
    let name = format!("docker-archive:{}:acme/archived:1", file.display());
    let b = Berth::new();
    let r = b.run_cmd(&["pull", &name]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let config = inspect(&format!("docker://{}", img.reference));
    let diff_ids: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{}", img.reference),
    ]))
    .unwrap();
    assert_eq!(config["Layers"].as_array().unwrap().len(), 2);
    let records = stored(&b);
    assert_eq!(records[0]["reference"], name.as_str());
    // Archived layers are uncompressed: stored under their diff ids.
    assert_eq!(records[0]["layers"], diff_ids["rootfs"]["diff_ids"]);

    let r = b.run_job(&job(&name, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("FROM-AN-ARCHIVE"), "{}", r.stderr);
}

/// Unpacks `layout:reference` with umoci; returns the bundle's directory.
fn umoci_unpack(layout: &Path, reference: &str, bundle: &Path) {
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{reference}", layout.display()))
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn berth_save_writes_a_layout_skopeo_and_umoci_read() {
    require_env!();
    let repo = unique_repo("save");
    let img = push(&ImageSpec::script("echo SAVED"), &repo, "1.0");
    // The same image as a Docker schema 2 manifest, which umoci cannot read as it is.
    let docker = format!("{}/{repo}:v2s2", registry());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("docker://{}", img.reference),
        &format!("docker://{docker}"),
    ]);
    let b = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (image, reference) in [(img.reference.as_str(), "oci"), (docker.as_str(), "docker")] {
        let target = format!("oci:{}:{reference}", out.display());
        let r = b.run_cmd(&["save", image, &target]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        let inspected = inspect(&target);
        let source = inspect(&format!("docker://{image}"));
        assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
        assert_eq!(inspected["Layers"], source["Layers"]);
        assert!(r.stdout.contains(inspected["Digest"].as_str().unwrap()));
        let bundle = dir.path().join(format!("bundle-{reference}"));
        umoci_unpack(&out, reference, &bundle);
        let script = std::fs::read_to_string(bundle.join("rootfs/run.sh")).unwrap();
        assert_eq!(script, "#!/bin/sh\necho SAVED\n");
        assert!(bundle.join("rootfs/bin/busybox").is_file());
    }
    // An OCI manifest is written byte for byte: the layout serves the registry's digest.
    let target = format!("oci:{}:oci", out.display());
    assert_eq!(inspect(&target)["Digest"], img.digest.as_str());
    // Both images share their layers in the one layout; it loads back into another store.
    let other = Berth::new();
    let r = other.run_cmd(&["pull", &format!("oci:{}:docker", out.display())]);
    assert_eq!(r.status, 0, "{}", r.stderr);
}

#[test]
fn the_unpack_caps_refuse_an_image_naming_it() {
    require_env!();
    let img = push(&ImageSpec::script("true"), &unique_repo("caps"), "1.0");
    let b = Berth::new();
    let r = b.run_cmd(&["--max-image-entries", "3", "pull", &img.reference]);
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains(&format!(
            "image {} is refused: it unpacks to more than 3 entries",
            img.reference
        )),
        "{}",
        r.stderr
    );
    let r = b.run_cmd(&["--max-image-bytes", "4096", "pull", &img.reference]);
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains("it unpacks to more than 4096 bytes"),
        "{}",
        r.stderr
    );
    // With the defaults it unpacks.
    let r = b.run_cmd(&["pull", &img.reference]);
    assert_eq!(r.status, 0, "{}", r.stderr);
}

/// A registry on loopback that serves fixed documents by path (HEAD and GET) and records
/// what was asked: just enough HTTP for oci-client. Returns its address and the requests.
fn lying_registry(
    routes: std::collections::HashMap<String, Vec<u8>>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            log.lock().unwrap().push(format!("{method} {path}"));
            let (status, body) = match routes.get(path) {
                Some(body) => (200, body.clone()),
                None if path == "/v2/" => (200, b"{}".to_vec()),
                None => (404, b"{}".to_vec()),
            };
            let digest = format!("sha256:{}", sha256(&body));
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                 Docker-Content-Digest: {digest}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = stream.write_all(&body);
            }
        }
    });
    (addr, asked)
}

#[test]
fn a_registry_config_or_manifest_over_the_cap_is_refused_naming_the_image() {
    // No root, no real registry: always runs.
    let config_digest = format!("sha256:{}", sha256(b"never served"));
    let layer_digest = format!("sha256:{}", sha256(b"layer"));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": 1u64 << 40},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": 5}],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", sha256(&manifest));
    // 9 MiB of whitespace before a valid manifest: over the 8 MiB cap.
    let mut huge = vec![b' '; 9 << 20];
    huge.extend_from_slice(&manifest);
    let huge_digest = format!("sha256:{}", sha256(&huge));
    let routes = [
        (
            "/v2/acme/big-config/manifests/1".to_owned(),
            manifest.clone(),
        ),
        (
            format!("/v2/acme/big-config/manifests/{manifest_digest}"),
            manifest,
        ),
        ("/v2/acme/big-manifest/manifests/1".to_owned(), huge.clone()),
        (
            format!("/v2/acme/big-manifest/manifests/{huge_digest}"),
            huge,
        ),
    ];
    let (addr, asked) = lying_registry(routes.into_iter().collect());
    let b = Berth::new();
    let image = format!("{addr}/acme/big-config:1");
    let r = b.run_cmd(&["-q", "pull", &image]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "image {image} is refused: its config {config_digest} declares 1099511627776 bytes, \
             more than the cap of 8388608"
        )),
        "{}",
        r.stderr
    );
    let asked = asked.lock().unwrap().clone();
    assert!(
        !asked.iter().any(|a| a.contains("/blobs/")),
        "no blob may be fetched: {asked:?}"
    );
    let image = format!("{addr}/acme/big-manifest:1");
    let r = b.run_cmd(&["-q", "pull", &image]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("image {image} is refused: its manifest")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("more than the cap of 8388608"),
        "{}",
        r.stderr
    );
}
