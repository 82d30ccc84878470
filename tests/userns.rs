//! Container root is not host root: every container runs in a user namespace whose ids are
//! an unprivileged range of the host's, also for a root operator; a component opts out only
//! by saying so, and the result shows it.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use serde_json::json;

/// The range these tests give berth, so they know what to expect on the host.
const START: u32 = 400_000;

fn range() -> String {
    format!("{START}:65536")
}

/// Host uid and gid of the first process whose command line contains `marker`.
fn host_ids_of(marker: &str) -> Option<(u32, u32)> {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline: Vec<u8> = cmdline
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect();
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let field = |key: &str| -> Option<u32> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        return Some((field("Uid:")?, field("Gid:")?));
    }
    None
}

/// Runs `script` (which must end in a `sleep <marker>`) in the background, reads the host
/// ids of that sleep while it runs, then lets berth finish.
fn ids_while_running(b: &Berth, job_json: &serde_json::Value, marker: &str) -> (u32, u32) {
    let path = b.write_job(job_json);
    let mut cmd = b.cmd();
    cmd.args(["--id-range", &range(), "run", path.to_str().unwrap()]);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ids = loop {
        if let Some(ids) = host_ids_of(marker) {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "{marker} never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    ids
}

#[test]
fn container_root_is_nobody_on_the_host() {
    require_env!();
    let img = push(
        &ImageSpec::script("id -u; sleep 2.71"),
        &unique_repo("userns"),
        "1.0",
    );
    let b = Berth::new();
    let ids = ids_while_running(&b, &job(&img.reference, json!({}), json!({})), "sleep 2.71");
    assert_eq!(ids, (START, START), "container root as the host sees it");
}

#[test]
fn the_image_user_maps_into_the_range_and_its_outputs_are_loaded() {
    require_env!();
    let mut spec = ImageSpec::script(
        "printf 'a\\n1\\n' > /data/out/tables/t.csv; chmod 600 /data/out/tables/t.csv; sleep 2.72",
    );
    spec.user = Some("app".to_owned());
    let img = push(&spec, &unique_repo("userns-app"), "1.0");
    let b = Berth::new();
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"default_bucket": "out.c-userns"}});
    let ids = ids_while_running(&b, &j, "sleep 2.72");
    assert_eq!(ids, (START + 1000, START + 1000));
    // berth read the component's 0600 file, whoever the component was.
    let exported = b.run_cmd(&["storage", "export", "out.c-userns.t"]);
    assert_eq!(exported.status, 0, "{}", exported.stderr);
    assert_eq!(exported.stdout, "a\n1\n");
}

#[test]
fn the_cached_rootfs_belongs_to_the_range() {
    require_env!();
    let img = push(
        &ImageSpec::script("true"),
        &unique_repo("userns-owners"),
        "1.0",
    );
    let b = Berth::new();
    let r = b.run_cmd(&["--id-range", &range(), "pull", &img.reference]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let root = std::fs::read_dir(b.cache().join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|l| l.join("bin/busybox").is_file())
        .unwrap();
    let busybox = std::fs::metadata(root.join("bin/busybox")).unwrap();
    assert_eq!((busybox.uid(), busybox.gid()), (START, START));
}

#[test]
fn a_component_that_opts_out_runs_as_host_root_and_the_result_says_so() {
    require_env!();
    let img = push(
        &ImageSpec::script("sleep 2.73"),
        &unique_repo("userns-host"),
        "1.0",
    );
    let b = Berth::new();
    let opted_out = job(&img.reference, json!({"user_namespace": "host"}), json!({}));
    let ids = ids_while_running(&b, &opted_out, "sleep 2.73");
    assert_eq!(ids, (0, 0));
    let r = b.run_job(&opted_out);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.json()["cage"],
        json!({"user_namespace": "host", "id_range": null, "unenforced": [], "disk_limit": "10g"})
    );
    assert!(
        r.stderr.contains("root in it is root on the host"),
        "{}",
        r.stderr
    );

    let private = job(&img.reference, json!({}), json!({}));
    let path = b.write_job(&private);
    let r = b.run_cmd(&[
        "--id-range",
        &range(),
        "run",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.json()["cage"],
        json!({"user_namespace": "private", "id_range": range(), "unenforced": [], "disk_limit": "10g"})
    );
}

#[test]
fn a_container_can_read_its_own_limits() {
    require_env!();
    // Runtimes (the JVM, Python's os.process_cpu_count) size themselves from the cgroup.
    let img = push(
        &ImageSpec::script(
            "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes",
        ),
        &unique_repo("userns-limits"),
        "1.0",
    );
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({"memory": "64m"}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.contains(&"1024"), "{}", r.stderr);
    assert!(lines.contains(&"67108864"), "64 MiB: {}", r.stderr);
}
