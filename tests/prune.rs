//! `berth images`, `berth rmi` and `berth prune` on real pulls: what stays on disk, what
//! goes, and that an image a running job uses survives both.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

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

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_owned()
}

fn images_json(b: &Berth) -> Vec<Value> {
    let out = b.run_cmd(&["images", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// Sets `path`'s modification time two hours back.
fn two_hours_old(path: &Path) {
    let touched = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .unwrap();
    assert!(touched.success());
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story on one store: pull, rmi, sweep, prune"
)]
fn rmi_removes_only_what_no_other_image_uses_and_prune_the_rest() {
    require_env!();
    let spec_a = ImageSpec::script("echo a");
    let spec_b = ImageSpec::script("echo b");
    let a = push(&spec_a, &unique_repo("prune-a"), "1.0");
    let b_img = push(&spec_b, &unique_repo("prune-b"), "1.0");
    let b = Berth::new();
    for img in [&a, &b_img] {
        let out = b.run_cmd(&["pull", &img.reference]);
        assert_eq!(out.status, 0, "{}", out.stderr);
    }
    let listed = images_json(&b);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|r| r["last_used"].as_u64().unwrap() > 0),
        "{listed:?}"
    );
    let table = b.run_cmd(&["images"]);
    assert!(table.stdout.contains("LAST USED"), "{}", table.stdout);
    assert!(table.stdout.contains("s ago"), "{}", table.stdout);

    let blobs = b.cache().join("blobs/sha256");
    let trees = b.cache().join("layers");
    let base = sha256(busybox_layer());
    let only_a = sha256(&spec_a.layers[1]);
    let only_b = sha256(&spec_b.layers[1]);
    // The base layer once, and each image's own.
    assert_eq!(names(&trees).len(), 3, "{:?}", names(&trees));
    assert_eq!(names(&b.cache().join("stacks")).len(), 2);
    let trees_before = names(&trees);

    let out = b.run_cmd(&["rmi", &a.reference]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("removed {}", a.reference)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 unpacked layer(s)"), "{}", out.stdout);
    let left = names(&blobs);
    assert!(left.contains(&base), "the shared layer went");
    assert!(left.contains(&only_b) && left.contains(&hex(&b_img.digest)));
    assert!(!left.contains(&only_a) && !left.contains(&hex(&a.digest)));
    // Its own layer went; the base, which b uses, stays.
    assert_eq!(names(&trees).len(), 2);
    assert!(names(&trees).is_subset(&trees_before));
    let holds = |rel: &str, text: &str| {
        names(&trees).iter().any(|n| {
            fs::read(trees.join(n).join(rel))
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(text))
        })
    };
    assert!(holds("bin/busybox", ""), "the shared base layer went");
    assert!(!holds("run.sh", "echo a") && holds("run.sh", "echo b"));
    assert_eq!(images_json(&b).len(), 1);

    let out = b.run_cmd(&["rmi", &a.reference]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("image {} is not in the store", a.reference)),
        "{}",
        out.stderr
    );

    // Any command that opens the store sweeps old leftovers of dead berths, `images` too.
    let tmp = b.cache().join("tmp");
    let leftover = tmp.join("ref.999999997.abcdef");
    fs::write(&leftover, b"{}").unwrap();
    two_hours_old(&leftover);
    assert_eq!(images_json(&b).len(), 1);
    assert!(!leftover.exists(), "berth images did not sweep");
    // A crashed pull's leftover, two hours old, of a berth that is gone; and a fresh one.
    let old = tmp.join("layer.999999999.abcdef");
    let young = tmp.join("layer.999999998.abcdef");
    fs::write(&old, vec![0u8; 4096]).unwrap();
    fs::write(&young, b"partial").unwrap();
    two_hours_old(&old);
    let out = b.run_cmd(&["prune", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["temporary"], 1, "{report}");
    assert_eq!(report["images"], serde_json::json!([]), "{report}");
    assert!(report["bytes"].as_u64().unwrap() >= 4096, "{report}");
    assert!(!old.exists() && young.exists());
    assert_eq!(
        images_json(&b).len(),
        1,
        "prune without flags removed an image"
    );

    let out = b.run_cmd(&["prune", "--max-size", "0"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("removed {}", b_img.reference)),
        "{}",
        out.stdout
    );
    assert!(names(&blobs).is_empty(), "{:?}", names(&blobs));
    assert!(names(&trees).is_empty(), "{:?}", names(&trees));
    assert!(images_json(&b).is_empty());

    let out = b.run_cmd(&["prune", "--older-than", "soon"]);
    assert_ne!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("is not a duration"), "{}", out.stderr);
}

#[test]
fn an_image_a_running_job_uses_survives_rmi_and_prune() {
    require_env!();
    let img = push(
        &ImageSpec::script(
            "echo READY\n\
             i=0; while [ ! -e /data/in/user/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
             echo DONE",
        ),
        &unique_repo("prune-live"),
        "1.0",
    );
    let b = Berth::new();
    let job_file = b.write_job(&job(
        &img.reference,
        serde_json::json!({}),
        serde_json::json!({}),
    ));
    let (mut child, mut lines) = b.spawn_run(&job_file);
    let ready = lines.by_ref().map(Result::unwrap).any(|l| l == "READY");
    assert!(ready, "the component never started");
    let trees = b.cache().join("layers");
    let before = names(&trees);
    assert_eq!(before.len(), 2);

    let out = b.run_cmd(&["rmi", &img.reference]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("in use by a running job"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("component acme.test"), "{}", out.stderr);
    let out = b.run_cmd(&["prune", "--max-size", "0", "--older-than", "1s"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("removed 127"), "{}", out.stdout);
    assert_eq!(names(&trees), before);
    assert_eq!(images_json(&b).len(), 1);

    fs::write(Berth::data_dir(&b.job_dir(), 0).join("in/user/go"), b"").unwrap();
    assert!(lines.map(Result::unwrap).any(|l| l == "DONE"));
    assert!(child.wait().unwrap().success());

    // Once the job is over, the image may go.
    let out = b.run_cmd(&["rmi", &img.reference]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(names(&trees).is_empty(), "{:?}", names(&trees));
    assert!(names(&b.cache().join("blobs/sha256")).is_empty());
    assert!(names(&b.cache().join("leases")).is_empty());
}

#[test]
fn a_run_records_when_it_used_its_image() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo ran"),
        &unique_repo("prune-used"),
        "1.0",
    );
    let b = Berth::new();
    let out = b.run_cmd(&["pull", &img.reference]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    // Put the last use back in time, as if the image had not been used since.
    let refs = b.cache().join("refs");
    let record = fs::read_dir(&refs).unwrap().next().unwrap().unwrap().path();
    let mut stored: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    stored["last_used"] = 1.into();
    stored["pulled_at"] = 1.into();
    fs::write(&record, serde_json::to_vec(&stored).unwrap()).unwrap();
    assert_eq!(images_json(&b)[0]["last_used"], 1);
    let out = b.run_job(&job(
        &img.reference,
        serde_json::json!({}),
        serde_json::json!({}),
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let used = images_json(&b)[0]["last_used"].as_u64().unwrap();
    assert!(used + 60 > now, "last_used {used}, now {now}");
    // `--older-than` keeps what was just used.
    let out = b.run_cmd(&["prune", "--older-than", "1h"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(images_json(&b).len(), 1, "{}", out.stdout);
}
