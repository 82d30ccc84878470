//! Rootless operators: berth run by an unprivileged user, as that user, against the real
//! registry, with real containers. The test (root) creates the users it needs, delegates
//! cgroups with `berth setup-rootless` as an operator would, and runs berth through
//! `setpriv` with nothing of root's left: ids, groups, environment.
//!
//! What each user is for:
//! - `berth-rl`: subordinate ids and a delegated cgroup, the setup `docs/security.md` describes;
//! - `berth-rl-bare`: subordinate ids, no delegation (the error must say how to fix it);
//! - `berth-rl-alone`: delegation but no subordinate ids (one id, with a warning).

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::*;
use serde_json::{Value, json};

/// Creating users and delegating cgroups must not race between tests.
static SETUP: Mutex<()> = Mutex::new(());

/// Why this host cannot run these tests, if it cannot.
fn rootless_prerequisite() -> Option<String> {
    if let Some(reason) = missing_prerequisite() {
        return Some(reason);
    }
    for tool in ["newuidmap", "newgidmap", "setpriv", "useradd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{tool} is missing (apt-get install uidmap util-linux passwd)"
            ));
        }
    }
    None
}

macro_rules! require_rootless {
    () => {
        if let Some(reason) = rootless_prerequisite() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI must run every test, but: {reason}");
            }
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// An unprivileged operator with a berth home of its own.
struct Operator {
    name: &'static str,
    uid: u32,
    gid: u32,
    dir: tempfile::TempDir,
}

impl Operator {
    /// The user `name` (created if missing, with or without subordinate ids), delegated a
    /// cgroup with `berth setup-rootless` when `delegate`.
    fn new(name: &'static str, subordinate: bool, delegate: bool) -> Operator {
        let _guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
        let (uid, gid) = ensure_user(name, subordinate);
        if delegate {
            let out = Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["setup-rootless", name])
                .output()
                .unwrap();
            assert!(out.status.success(), "setup-rootless {name}: {out:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        Operator {
            name,
            uid,
            gid,
            dir,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// berth as this operator, with none of root's environment either.
    fn command(&self) -> Command {
        let mut c = berth_as(self.uid, self.gid);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("BERTH_SYSTEM_SIGNATURE_POLICY", NO_SYSTEM_POLICY);
        c
    }

    /// berth as this operator: its ids, no supplementary groups, a clean environment.
    fn berth(&self, args: &[&str]) -> Run {
        let out = self
            .command()
            .arg("--home")
            .arg(self.home())
            .args(["--retries", "0"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        Run::from(out)
    }

    /// Runs a job with `--json` (plus `extra` flags) as this operator.
    fn run_job(&self, job: &Value, extra: &[&str]) -> Run {
        let path = self.dir.path().join("job.json");
        fs::write(&path, serde_json::to_vec(job).unwrap()).unwrap();
        let mut args = vec!["run", "--json"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        self.berth(&args)
    }

    /// The operator's first subordinate uid.
    fn subuid_start(&self) -> u32 {
        let text = fs::read_to_string("/etc/subuid").unwrap();
        text.lines()
            .find_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(self.name)).then(|| f.next().unwrap().parse().unwrap())
            })
            .unwrap()
    }

    /// No job directory, container state or cgroup of this operator is left.
    fn assert_clean(&self) {
        let left = |p: &Path| fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left(&self.home().join("jobs")), 0, "job directories left");
        assert_eq!(
            left(&self.home().join("run/state")),
            0,
            "container state left"
        );
        use std::os::unix::ffi::OsStrExt;
        let mine = format!(
            "berth-{}-",
            &sha256(self.home().as_os_str().as_bytes())[..8]
        );
        for ctrl in ["memory", "pids", "cpu", "devices", "freezer"] {
            let parent = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(format!("berth-u{}", self.uid));
            let cgroups: Vec<_> = fs::read_dir(&parent)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // Other tests run as the same operator at the same time.
                .filter(|n| n.starts_with(&mine))
                .collect();
            assert!(
                cgroups.is_empty(),
                "cgroups left in {}: {cgroups:?}",
                parent.display()
            );
        }
    }
}

/// A component that writes a table and prints who it is.
const WRITER: &str = "echo \"uid $(id -u)\"\n\
     printf '\"id\",\"name\"\\n\"1\",\"one\"\\n\"2\",\"two\"\\n' > /data/out/tables/t.csv";

fn writer_job(image: &str, component: Value) -> Value {
    let mut j = job(image, component, json!({}));
    j["configuration"]["storage"] = json!({"output": {"tables": [
        {"source": "t.csv", "destination": "out.c-rootless.t", "primary_key": ["id"]}
    ]}});
    j
}

#[test]
fn a_rootless_job_runs_commits_and_leaves_nothing() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let img = push(&ImageSpec::script(WRITER), &unique_repo("rootless"), "1.0");
    let run = op.run_job(&writer_job(&img.reference, json!({"memory": "64m"})), &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let result = run.json();
    assert!(run.stderr.contains("uid 0"), "{}", run.stderr);
    assert_eq!(result["status"], "success");
    assert_eq!(result["cage"]["rootless"], true);
    assert_eq!(
        result["cage"]["id_range"],
        format!("0:{}:1,1:{}:65535", op.uid, op.subuid_start())
    );
    assert_eq!(result["cage"]["unenforced"], json!([]), "{result}");
    let export = op.berth(&["storage", "export", "out.c-rootless.t"]);
    assert_eq!(
        export.stdout, "id,name\n1,one\n2,two\n",
        "{}",
        export.stderr
    );
    // The image's root-owned files are the operator's on the host, in its own home, 0700.
    let cache = op.home().join("cache");
    assert_eq!(fs::metadata(&cache).unwrap().uid(), op.uid);
    assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o077, 0);
    op.assert_clean();
}

#[test]
fn a_rootless_image_keeps_its_owners_in_the_subordinate_range() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let mut spec = ImageSpec::script("stat -c 'owner %u:%g' /app/owned");
    spec.layers.push(gzip(&tar_of(&[
        dir("app"),
        Entry::File {
            path: "app/owned".into(),
            data: b"x".to_vec(),
            mode: 0o600,
            uid: 1000,
            gid: 1000,
        },
    ])));
    let img = push(&spec, &unique_repo("rootless-owners"), "1.0");
    let run = op.run_job(&job(&img.reference, json!({}), json!({})), &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // Inside, the image's own ids; on the host, the operator's range.
    assert!(run.stderr.contains("owner 1000:1000"), "{}", run.stderr);
    let owned: Vec<u32> = walk_tree(&op.home().join("cache"))
        .into_iter()
        .filter(|p| p.ends_with("app/owned"))
        .map(|p| fs::symlink_metadata(p).unwrap().uid())
        .collect();
    assert_eq!(owned, vec![op.subuid_start() + 999]);
    op.assert_clean();
}

/// An image whose layer has set-id files (root's, and another owner's) and a sticky
/// directory; its command prints their modes as the container sees them.
fn set_id_image() -> BuiltImage {
    let mut spec =
        ImageSpec::script("stat -c 'mode %n %a' /app/suid /app/sgid /app/theirs /app/tmp");
    let file = |path: &str, mode: u32, id: u64| Entry::File {
        path: path.into(),
        data: b"#!/bin/sh\n".to_vec(),
        mode,
        uid: id,
        gid: id,
    };
    spec.layers.push(gzip(&tar_of(&[
        dir("app"),
        file("app/suid", 0o4755, 0),
        file("app/sgid", 0o2755, 0),
        file("app/theirs", 0o6755, 1000),
        Entry::Dir {
            path: "app/tmp".into(),
            mode: 0o1777,
        },
    ])));
    push(&spec, &unique_repo("set-id"), "1.0")
}

/// The `mode PATH OCTAL` lines of a run, sorted.
fn modes(stderr: &str) -> Vec<String> {
    let mut lines: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.split_once("mode /app/").map(|(_, m)| m.to_owned()))
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_rootless_image_keeps_its_set_id_bits_and_sticky_directories() {
    require_rootless!();
    let img = set_id_image();
    let expected = ["sgid 2755", "suid 4755", "theirs 6755", "tmp 1777"];
    let op = Operator::new("berth-rl", true, true);
    let rootless = op.run_job(&job(&img.reference, json!({}), json!({})), &[]);
    assert_eq!(rootless.status, 0, "{}", rootless.stderr);
    assert_eq!(modes(&rootless.stderr), expected, "{}", rootless.stderr);
    // As the layer store keeps them, too.
    let stored: Vec<u32> = walk_tree(&op.home().join("cache/layers"))
        .into_iter()
        .filter(|p| p.ends_with("app/suid") || p.ends_with("app/theirs"))
        .map(|p| fs::symlink_metadata(p).unwrap().mode() & 0o7777)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().all(|m| m & 0o4000 != 0), "{stored:?}");
    op.assert_clean();

    // The same as root's (or the suite's operator's) berth.
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(modes(&r.stderr), modes(&rootless.stderr));
}

#[test]
fn a_rootless_memory_limit_is_enforced() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let img = push(
        &ImageSpec::script(
            "dd if=/dev/zero of=/dev/shm/fill bs=4M count=25 2>/dev/null; echo \"dd: $?\"\nexit 3",
        ),
        &unique_repo("rootless-oom"),
        "1.0",
    );
    let run = op.run_job(
        &job(&img.reference, json!({"memory": "64m"}), json!({})),
        &[],
    );
    assert!(run.stderr.contains("dd: 137"), "{}", run.stderr);
    let result = run.json();
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        "component acme.test ran out of memory (limit 64m)"
    );
    op.assert_clean();
}

#[test]
fn rootless_devices_are_denied_by_the_delegated_cgroup() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let list = fs::read_to_string(format!(
        "/sys/fs/cgroup/devices/berth-u{}/devices.list",
        op.uid
    ));
    let Ok(list) = list else {
        skip!("this host has no cgroup v1 devices hierarchy");
    };
    assert!(!list.contains("a *:* rwm"), "{list}");
    assert!(list.contains("c 1:3 rwm"), "{list}");
}

#[test]
fn without_delegation_the_error_says_how_to_fix_it() {
    require_rootless!();
    let op = Operator::new("berth-rl-bare", true, false);
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        skip!("cgroup v2 hosts run rootless without delegation");
    }
    let img = push(
        &ImageSpec::script("true"),
        &unique_repo("rootless-bare"),
        "1.0",
    );
    let run = op.run_job(&job(&img.reference, json!({}), json!({})), &[]);
    assert_eq!(run.status, 3, "{}", run.stderr);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("berth-u{}", op.uid))
            && message.contains("berth setup-rootless <user>"),
        "{message}"
    );
    op.assert_clean();
}

#[test]
fn without_subordinate_ids_the_operator_runs_alone() {
    require_rootless!();
    let op = Operator::new("berth-rl-alone", false, true);
    let img = push(
        &ImageSpec::script(WRITER),
        &unique_repo("rootless-alone"),
        "1.0",
    );
    let run = op.run_job(&writer_job(&img.reference, json!({})), &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("no subordinate ids") && run.stderr.contains("usermod"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["cage"]["id_range"], format!("0:{}:1", op.uid));
    // An image with a file of another owner cannot be given to one id.
    let mut spec = ImageSpec::script("true");
    spec.layers.push(gzip(&tar_of(&[Entry::File {
        path: "owned".into(),
        data: b"x".to_vec(),
        mode: 0o644,
        uid: 1000,
        gid: 0,
    }])));
    let img = push(&spec, &unique_repo("rootless-alone-owned"), "1.0");
    let run = op.run_job(&job(&img.reference, json!({}), json!({})), &[]);
    assert_eq!(run.status, 3, "{}", run.stderr);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("owned by uid 1000"), "{message}");
    op.assert_clean();
}

#[test]
fn strict_limits_run_where_every_limit_holds() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let img = push(
        &ImageSpec::script("true"),
        &unique_repo("rootless-strict"),
        "1.0",
    );
    let run = op.run_job(
        &job(&img.reference, json!({}), json!({})),
        &["--strict-limits"],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
}

#[test]
fn setup_rootless_refuses_what_it_cannot_do() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let as_user = op.berth(&["setup-rootless", "berth-rl"]);
    assert_eq!(as_user.status, 1);
    assert!(
        as_user.stderr.contains("must run as root"),
        "{}",
        as_user.stderr
    );
    let unknown = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["setup-rootless", "no-such-user-here"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no such user \"no-such-user-here\"")
    );
}

#[test]
fn a_rootless_bridge_gets_an_interface_and_a_default_route() {
    require_rootless!();
    let tun = fs::metadata("/dev/net/tun").map(|m| m.mode() & 0o006 == 0o006);
    if tun.ok() != Some(true) {
        let reason = "/dev/net/tun is not usable by other users (chmod 0666, Debian's default)";
        skip!("{reason}");
    }
    let op = Operator::new("berth-rl", true, true);
    let img = push(
        &ImageSpec::script(
            "echo \"routes: $(ip route | grep -c '^default')\"\n\
             echo \"links: $(ls /sys/class/net | grep -vc '^lo$')\"",
        ),
        &unique_repo("rootless-bridge"),
        "1.0",
    );
    let run = op.run_job(
        &job(&img.reference, json!({"network": "bridge"}), json!({})),
        &[],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("routes: 1"), "{}", run.stderr);
    assert!(run.stderr.contains("links: 1"), "{}", run.stderr);
    op.assert_clean();
}

#[test]
fn a_killed_rootless_berth_leaves_nothing_running() {
    require_rootless!();
    let op = Operator::new("berth-rl", true, true);
    let img = push(
        &ImageSpec::script("echo READY\nwhile true; do sleep 1 & wait; done"),
        &unique_repo("rootless-killed"),
        "1.0",
    );
    let path = op.dir.path().join("job.json");
    let job = job(&img.reference, json!({}), json!({}));
    fs::write(&path, serde_json::to_vec(&job).unwrap()).unwrap();
    let mut child = op
        .command()
        .arg("--home")
        .arg(op.home())
        .args(["run", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    // setpriv execs berth: this is the outer berth, the operator's own process.
    child.kill().unwrap();
    child.wait().unwrap();
    // The berth inside its namespace gets SIGTERM and stops its container; gc finds the rest.
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in lines.by_ref() {}
        let _ = done.send(());
    });
    let waited = ended.recv_timeout(std::time::Duration::from_secs(60));
    assert!(
        waited.is_ok(),
        "the inner berth still runs a minute after the outer died"
    );
    let gc = op.berth(&["gc"]);
    assert_eq!(gc.status, 0, "{}", gc.stderr);
    let sleepers = Command::new("pgrep")
        .args(["-u", &op.uid.to_string(), "-f", "sleep 1"])
        .output()
        .unwrap();
    assert!(sleepers.stdout.is_empty(), "left running: {sleepers:?}");
    op.assert_clean();
}
