//! The container's cage, seen from inside and from the host: capabilities, the seccomp
//! filter, the devices cgroup, and who else on the host can read what berth keeps.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

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

#[test]
fn seccomp_filter_blocks_what_the_profile_blocks_and_nothing_a_job_needs() {
    require_env!();
    // personality(ADDR_NO_RANDOMIZE) needs no privilege: only the filter refuses it (the
    // profile allows five personality values and answers everything unlisted with ENOSYS).
    let host = Command::new("/bin/busybox")
        .args(["linux64", "-R", "true"])
        .output()
        .unwrap();
    assert!(host.status.success(), "the host itself refuses personality");
    let img = script_image(
        "seccomp",
        "grep '^Seccomp:' /proc/self/status\n\
         if linux64 -R true 2>/tmp/err; then echo PERSONALITY-ALLOWED; \
         else echo \"PERSONALITY-REFUSED $(cat /tmp/err)\"; fi\n\
         ls / > /tmp/listing && grep -q '^bin$' /tmp/listing && cat /data/config.json > /dev/null \
         && echo '{\"ran\": true}' > /data/out/state.json && echo NORMAL-WORK-DONE",
    );
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.lines().any(|l| l == "Seccomp:\t2"), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "PERSONALITY-REFUSED linux64: personality(0x40000): Function not implemented"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("NORMAL-WORK-DONE"), "{}", r.stderr);
    let state = b.run_cmd(&["state", "show", "acme.test", "42"]);
    assert_eq!(state.status, 0, "{}", state.stderr);
    let state: serde_json::Value = serde_json::from_str(&state.stdout).unwrap();
    assert_eq!(state["component"], json!({"ran": true}));
    b.assert_clean(&[&job_id(&r.json())]);
}
