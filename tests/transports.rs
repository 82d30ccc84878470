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
