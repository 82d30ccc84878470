//! The container's cage, seen from inside and from the host: capabilities, the seccomp
//! filter, the devices cgroup, and who else on the host can read what berth keeps.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

/// podman's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE SYS_CHROOT SETFCAP (bits 0 1 3 4 5 6 7 8 10 18 31).
const PODMAN_CAPS: &str = "00000000800405fb";

/// The `Cap*:` lines of `/proc/self/status` printed by a component.
fn capability_sets(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("Cap"))
        .filter_map(|l| l.split_once(":\t"))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn container_gets_podmans_capabilities_and_cannot_make_devices() {
    require_env!();
    let img = script_image(
        "caps",
        "grep '^Cap' /proc/self/status\n\
         if mknod /tmp/disk b 8 0 2>/dev/null; then echo MKNOD-DONE; else echo MKNOD-REFUSED; fi",
    );
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let sets = capability_sets(&r.stderr);
    let expected: BTreeMap<String, String> = [
        ("Inh", "0000000000000000"),
        ("Prm", PODMAN_CAPS),
        ("Eff", PODMAN_CAPS),
        ("Bnd", PODMAN_CAPS),
        ("Amb", "0000000000000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(sets, expected, "{}", r.stderr);
    assert!(r.stderr.contains("MKNOD-REFUSED"), "{}", r.stderr);
    assert!(!r.stderr.contains("MKNOD-DONE"), "{}", r.stderr);
    b.assert_clean(&[&job_id(&r.json())]);
}
