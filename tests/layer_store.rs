//! The layer store on real pulls: layers shared between images and unpacked once, many
//! berths pulling at once, and berths killed while they pull or unpack.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The names in `dir` (empty when it is not there).
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The layer directory holding `rel`.
fn layer_with(cache: &Path, rel: &str) -> std::path::PathBuf {
    let layers = cache.join("layers");
    let found: Vec<_> = names(&layers)
        .into_iter()
        .map(|n| layers.join(n))
        .filter(|l| l.join(rel).exists())
        .collect();
    assert_eq!(found.len(), 1, "{rel} in {found:?}");
    found[0].clone()
}

fn unpacked_layers(stderr: &str) -> usize {
    stderr.matches("layer unpacked").count()
}

#[test]
fn two_images_on_one_base_share_its_layer_and_unpack_it_once() {
    require_env!();
    let a = push(&ImageSpec::script("echo a"), &unique_repo("share-a"), "1.0");
    let b_img = push(&ImageSpec::script("echo b"), &unique_repo("share-b"), "1.0");
    let b = Berth::new();
    let first = b.run_cmd(&["pull", &a.reference]);
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(unpacked_layers(&first.stderr), 2, "{}", first.stderr);
    let base = layer_with(&b.cache(), "bin/busybox");
    let inode = fs::metadata(&base).unwrap().ino();
    let second = b.run_cmd(&["pull", &b_img.reference]);
    assert_eq!(second.status, 0, "{}", second.stderr);
    // Only b's own layer: the base is there already.
    assert_eq!(unpacked_layers(&second.stderr), 1, "{}", second.stderr);
    assert_eq!(layer_with(&b.cache(), "bin/busybox"), base);
    assert_eq!(fs::metadata(&base).unwrap().ino(), inode);
    assert_eq!(names(&b.cache().join("layers")).len(), 3);
    assert_eq!(names(&b.cache().join("stacks")).len(), 2);
    for (img, word) in [(&a, "a"), (&b_img, "b")] {
        let r = b.run_job(&job(&img.reference, json!({}), json!({})));
        assert_eq!(r.status, 0, "{}", r.stderr);
        assert!(r.stderr.lines().any(|l| l == word), "{}", r.stderr);
    }
}

/// How many times the registry logged a GET of each blob of `repo`.
fn blob_gets(repo: &str) -> Option<std::collections::BTreeMap<String, usize>> {
    let log = std::env::var("BERTH_TEST_REGISTRY_LOG").ok()?;
    let text = fs::read_to_string(log).ok()?;
    let needle = format!("\"GET /v2/{repo}/blobs/");
    let mut gets = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.split_once(&needle).map(|(_, r)| r) {
            let digest = rest.split_whitespace().next().unwrap().to_owned();
            *gets.entry(digest).or_default() += 1;
        }
    }
    Some(gets)
}

#[test]
fn eight_berths_pulling_one_image_fetch_each_blob_once_and_unpack_each_layer_once() {
    require_env!();
    let mut spec = ImageSpec::script("echo together");
    spec.layers
        .push(gzip(&tar_of(&[file("etc/extra", b"third")])));
    let repo = unique_repo("eight");
    let img = push(&spec, &repo, "1.0");
    let b = Berth::new();
    let children: Vec<Child> = (0..8)
        .map(|_| {
            b.cmd()
                .args(["pull", &img.reference])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut unpacked = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        unpacked += unpacked_layers(&stderr);
    }
    assert_eq!(unpacked, 3, "each layer unpacked once among the eight");
    assert_eq!(names(&b.cache().join("layers")).len(), 3);
    if let Some(gets) = blob_gets(&repo) {
        // Three layers and the config, each fetched once.
        assert_eq!(gets.len(), 4, "{gets:?}");
        assert!(gets.values().all(|n| *n == 1), "{gets:?}");
    } else {
        eprintln!("BERTH_TEST_REGISTRY_LOG unset: GETs not counted");
    }
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("together"), "{}", r.stderr);
}

/// A layer of `n` small files: long enough to unpack that a berth can be killed meanwhile.
fn many_files(n: usize) -> Vec<u8> {
    let entries: Vec<Entry> = (0..n)
        .map(|i| file(&format!("many/{:03}/f{i}", i % 100), b"x"))
        .collect();
    gzip(&tar_of(&entries))
}

/// Starts `berth pull` and kills it (SIGKILL) as soon as `ready` says so of its cache.
fn kill_when(b: &Berth, reference: &str, ready: impl Fn(&Path) -> bool) {
    let mut child = b
        .cmd()
        .args(["pull", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(&b.cache()) {
        assert!(Instant::now() < deadline, "the moment to kill never came");
        assert!(child.try_wait().unwrap().is_none(), "berth finished first");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn tmp_has(cache: &Path, prefix: &str) -> bool {
    names(&cache.join("tmp"))
        .iter()
        .any(|n| n.starts_with(prefix))
}

/// After a killed pull: a rerun succeeds, every layer directory is whole, the job runs, and
/// the killed berth's leftovers go with the sweep once old.
fn rerun_repairs(b: &Berth, img: &BuiltImage, files: usize) {
    let r = b.run_cmd(&["pull", &img.reference]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let many = layer_with(&b.cache(), "many");
    let count = walkdir_files(&many.join("many"));
    assert_eq!(count, files, "a partial layer in the store");
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("survived"), "{}", r.stderr);
    let tmp = b.cache().join("tmp");
    for n in names(&tmp) {
        let aged = std::process::Command::new("touch")
            .args(["-h", "-d", "2 hours ago"])
            .arg(tmp.join(n))
            .status()
            .unwrap();
        assert!(aged.success());
    }
    let images = b.run_cmd(&["images"]);
    assert_eq!(images.status, 0, "{}", images.stderr);
    assert!(names(&tmp).is_empty(), "{:?}", names(&tmp));
}

fn walkdir_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walkdir_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn a_berth_killed_while_unpacking_leaves_no_partial_layer() {
    require_env!();
    let files = 20_000;
    let mut spec = ImageSpec::script("echo survived");
    spec.layers.push(many_files(files));
    let img = push(&spec, &unique_repo("killed-unpack"), "1.0");
    let b = Berth::new();
    kill_when(&b, &img.reference, |cache| tmp_has(cache, "layer."));
    assert!(
        !names(&b.cache().join("layers")).iter().any(|n| b
            .cache()
            .join("layers")
            .join(n)
            .join("many")
            .exists()),
        "the layer being unpacked landed"
    );
    rerun_repairs(&b, &img, files);
}

#[test]
fn a_berth_killed_while_downloading_leaves_no_partial_blob() {
    require_env!();
    let files = 2_000;
    let mut spec = ImageSpec::script("echo survived");
    spec.layers.push(many_files(files));
    // Incompressible bytes, so the download takes a while.
    let mut noise = vec![0u8; 48 << 20];
    getrandom::fill(&mut noise).unwrap();
    spec.layers.push(tar_of(&[file("noise", &noise)]));
    let img = push(&spec, &unique_repo("killed-pull"), "1.0");
    let b = Berth::new();
    // A blob being written is `tmp/<its hex>.<pid>.<random>`.
    kill_when(&b, &img.reference, |cache| {
        names(&cache.join("tmp"))
            .iter()
            .any(|n| n.split('.').next().is_some_and(|h| h.len() == 64))
    });
    rerun_repairs(&b, &img, files);
}
