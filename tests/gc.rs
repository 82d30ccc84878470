//! Crash safety: a berth killed with SIGKILL leaves its container running (libcontainer sets
//! no parent-death signal); the next berth, or `berth gc`, removes it with its cgroups and
//! working directory.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use common::*;
use serde_json::json;

fn kill_berth_mid_run(b: &Berth, sleep: &str) -> String {
    kill_berth_running(b, sleep, sleep)
}

/// Runs `script` under a berth, SIGKILLs the berth once the script started and `marker`
/// (a command line) runs; returns the job id.
fn kill_berth_running(b: &Berth, script: &str, marker: &str) -> String {
    let img = push(
        &ImageSpec::script(&format!("echo started\n{script}")),
        &unique_repo("crash"),
        "1.0",
    );
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    while !running(marker) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let job = b.running_job_id();
    assert!(
        running(marker),
        "the container should outlive a SIGKILLed berth"
    );
    assert!(!cgroups_of(&[&job]).is_empty(), "its cgroup should exist");
    job
}

#[test]
fn berth_gc_removes_what_a_killed_berth_left() {
    require_env!();
    let b = Berth::new();
    let job = kill_berth_mid_run(&b, "sleep 3301");
    let r = b.run_cmd(&["gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("removed 1 job directories and 1 containers"),
        "{}",
        r.stdout
    );
    assert!(!running("sleep 3301"), "orphan container still running");
    b.assert_clean(&[&job]);
}

#[test]
fn the_next_run_sweeps_orphans_first() {
    require_env!();
    let b = Berth::new();
    let job = kill_berth_mid_run(&b, "sleep 3302");
    let img = push(
        &ImageSpec::script("echo fine"),
        &unique_repo("after"),
        "1.0",
    );
    let r = b.run_job(&common::job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!running("sleep 3302"), "orphan container still running");
    b.assert_clean(&[&job, &job_id(&r.json())]);
}

#[test]
fn a_forking_component_of_a_killed_berth_is_gone_after_gc() {
    require_env!();
    let b = Berth::new();
    // Every process forks again as fast as it can: one pass of "read the pids, kill them"
    // leaves its children behind.
    let job = kill_berth_running(
        &b,
        "while :; do sh -c 'sleep 3303 & sleep 3303' & sleep 0.01; done",
        "sleep 3303",
    );
    let r = b.run_cmd(&["gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!running("sleep 3303"), "a forked process survived gc");
    b.assert_clean(&[&job]);
}

#[test]
fn a_container_whose_job_directory_is_gone_is_still_removed() {
    require_env!();
    let b = Berth::new();
    let job = kill_berth_mid_run(&b, "sleep 3304");
    // What an earlier sweep that killed too little used to leave: the container, without
    // the job directory that told later sweeps it was there.
    std::fs::remove_dir_all(b.job_dir()).unwrap();
    let r = b.run_cmd(&["gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stdout.contains("1 containers"), "{}", r.stdout);
    assert!(!running("sleep 3304"), "orphan container still running");
    b.assert_clean(&[&job]);
}

#[test]
fn gc_leaves_the_containers_of_other_homes_alone() {
    require_env!();
    let b = Berth::new();
    let job = kill_berth_mid_run(&b, "sleep 3305");
    let other = Berth::new();
    let r = other.run_cmd(&["gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        running("sleep 3305"),
        "another home's gc removed this home's container"
    );
    let r = b.run_cmd(&["gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!running("sleep 3305"));
    b.assert_clean(&[&job]);
}
