//! berth inside a cgroup it may write to — what a Slurm job, a systemd unit with
//! `Delegate=yes` or a delegation gives it: the test makes `test-nest-<n>` in every cgroup
//! hierarchy, moves a shell into it, and runs berth from there. The container's cgroups are
//! created below it, so its limits and kill reach the component; SIGTERM (what `scancel` and
//! `systemctl stop` send) leaves it with no child behind; a memory limit on it that is lower
//! than the component's is the component's OOM. The same for a rootless operator.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

/// A cgroup made in every hierarchy (the v1 ones with a controller, or the v2 root),
/// removed with everything in it when dropped.
struct Delegated {
    /// Its path in each hierarchy, e.g. `/test-nest-1a2b`.
    name: String,
    dirs: Vec<PathBuf>,
}

/// The hierarchies a container joins: every v1 mount with a controller, or the v2 root.
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").is_file() {
        return vec![root.to_owned()];
    }
    let mut found: Vec<PathBuf> = fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").is_file() && !p.join("cgroup.controllers").is_file())
        // Named hierarchies (systemd's) have no controller: libcontainer leaves them alone.
        .filter(|p| p.file_name().is_some_and(|n| n != "systemd"))
        .collect();
    found.sort();
    found
}

impl Delegated {
    /// Makes the cgroup; `memory` limits it; `owner` is given it (every file, as
    /// `berth setup-rootless` does on v1).
    fn new(memory: Option<u64>, owner: Option<(u32, u32)>) -> Delegated {
        let name = format!("/test-nest-{:x}", rand_u64());
        let mut dirs = Vec::new();
        for h in hierarchies() {
            let dir = h.join(&name[1..]);
            fs::create_dir(&dir).unwrap();
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if h.join(file).is_file() {
                    fs::write(
                        dir.join(file),
                        fs::read_to_string(h.join(file)).unwrap().trim(),
                    )
                    .unwrap();
                }
            }
            if let Some(bytes) = memory.filter(|_| dir.join("memory.limit_in_bytes").is_file()) {
                fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string()).unwrap();
            }
            if let Some(bytes) = memory.filter(|_| dir.join("memory.max").is_file()) {
                fs::write(dir.join("memory.max"), bytes.to_string()).unwrap();
            }
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
                for e in fs::read_dir(&dir).unwrap().flatten() {
                    std::os::unix::fs::chown(e.path(), Some(uid), Some(gid)).unwrap();
                }
            }
            dirs.push(dir);
        }
        Delegated { name, dirs }
    }

    /// `argv` started by a shell that moved itself into the cgroup in every hierarchy.
    fn spawn(&self, argv: &[String]) -> std::process::Child {
        let procs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect();
        Command::new("sh")
            .arg("-c")
            .arg("for p in $PROCS; do echo $$ > \"$p\" || exit 99; done; exec \"$@\"")
            .arg("sh")
            .args(argv)
            .env("PROCS", procs.join(" "))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The cgroups below it, in any hierarchy.
    fn children(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .flat_map(|d| fs::read_dir(d).unwrap().flatten())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for Delegated {
    /// Kills what a failed test left running in it, then removes it.
    fn drop(&mut self) {
        for _ in 0..50 {
            let mut pids = Vec::new();
            for d in &self.dirs {
                pids.extend(pids_of(d));
                for child in fs::read_dir(d).into_iter().flatten().flatten() {
                    pids.extend(pids_of(&child.path()));
                }
            }
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if let Ok(pid) = pid.parse() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for d in &self.dirs {
            for child in fs::read_dir(d).into_iter().flatten().flatten() {
                let _ = fs::remove_dir(child.path());
            }
            let _ = fs::remove_dir(d);
        }
    }
}

/// A berth that gets SIGTERM if a failed assertion leaves it running.
struct Stopped(std::process::Child);

impl Stopped {
    fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.0.try_wait().is_ok_and(|s| s.is_none()) {
            self.sigterm();
            let _ = self.0.wait();
        }
    }
}

/// `berth run --json JOB` as `b.cmd()` runs it, as an argument vector.
fn run_argv(cmd: &Command, job: &Path) -> Vec<String> {
    let mut argv = vec![cmd.get_program().to_string_lossy().into_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    argv.extend(["run".to_owned(), "--json".to_owned()]);
    argv.push(job.display().to_string());
    argv
}

fn pids_of(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `cmd`'s berth on a component that says it started and sleeps, from inside
/// `cgroup`; returns berth, the component's command line and the job id, once it started.
fn start_sleeper(b: &Berth, cmd: &Command, cgroup: &Delegated) -> (Stopped, String, String) {
    let marker = format!("sleep 34{:04}", rand_u64() % 10_000);
    let img = push(
        &ImageSpec::script(&format!("echo started\n{marker}")),
        &unique_repo("nest"),
        "1.0",
    );
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let mut child = Stopped(cgroup.spawn(&run_argv(cmd, &path)));
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let started = lines.find(|l| l.as_ref().is_ok_and(|l| l == "started"));
    assert!(started.is_some(), "the component did not start");
    (child, marker, b.running_job_id())
}

/// Runs a sleeping component from inside `cgroup` with `cmd`'s berth, checks that its
/// container's cgroups are below `cgroup` in every hierarchy and hold its processes, sends
/// berth SIGTERM, and checks that berth exits 130 and leaves `cgroup` without a child.
fn nests_and_leaves_nothing_on_sigterm(b: &Berth, cmd: &Command, cgroup: &Delegated) {
    let (mut child, marker, job) = start_sleeper(b, cmd, cgroup);
    let mut found = cgroups_of(&[&job]);
    found.sort();
    let mut expected: Vec<String> = cgroup
        .dirs
        .iter()
        .map(|d| d.join(b.container_id(&job, 0)).display().to_string())
        .collect();
    expected.sort();
    assert_eq!(found, expected, "the container's cgroups");
    for dir in &cgroup.dirs {
        let container = dir.join(b.container_id(&job, 0));
        assert!(
            !pids_of(&container).is_empty(),
            "no process in {}",
            container.display()
        );
    }
    child.sigterm();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!running(&marker), "the component survived SIGTERM");
    let left = cgroup.children();
    assert!(left.is_empty(), "cgroups left in {}: {left:?}", cgroup.name);
    b.assert_clean(&[&job]);
}

#[test]
fn a_container_nests_in_berths_cgroup_and_sigterm_leaves_it_empty() {
    require_env!();
    if test_user().is_some() {
        // The rootless variant below makes its own operator.
        return;
    }
    let b = Berth::new();
    let cgroup = Delegated::new(None, None);
    nests_and_leaves_nothing_on_sigterm(&b, &b.cmd(), &cgroup);
}

/// The OOM message when the cgroup berth runs in allows 64 MiB and the component 256 MiB.
fn oom_below_the_parent(b: &Berth, cmd: &Command, cgroup: &Delegated) {
    // dd with a 64 MiB block allocates it at once: with dd itself, over 64 MiB (a multiple
    // of the page size, so the kernel keeps the limit as written).
    let img = push(
        &ImageSpec::script("dd if=/dev/zero of=/dev/null bs=64M count=1"),
        &unique_repo("nest-oom"),
        "1.0",
    );
    let path = b.write_job(&job(&img.reference, json!({"memory": "256m"}), json!({})));
    let out = cgroup
        .spawn(&run_argv(cmd, &path))
        .wait_with_output()
        .unwrap();
    let r = Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let result = r.json();
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        format!(
            "component acme.test ran out of memory (limit 64m, lowered from the component's \
             256m by cgroup {})",
            cgroup.name
        )
    );
    let left = cgroup.children();
    assert!(left.is_empty(), "cgroups left in {}: {left:?}", cgroup.name);
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_lower_memory_limit_of_berths_cgroup_is_the_components_oom() {
    require_env!();
    if test_user().is_some() {
        return;
    }
    let b = Berth::new();
    let cgroup = Delegated::new(Some(64 << 20), None);
    oom_below_the_parent(&b, &b.cmd(), &cgroup);
}

#[test]
fn an_explicit_cgroup_parent_is_used_in_every_hierarchy() {
    require_env!();
    if test_user().is_some() {
        return;
    }
    let b = Berth::new();
    // Made empty: berth makes it, and its cpuset gets cpus and memory nodes.
    let name = format!("/test-parent-{:x}", rand_u64());
    let img = push(
        &ImageSpec::script("cat /proc/self/cgroup"),
        &unique_repo("nest-parent"),
        "1.0",
    );
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "--cgroup-parent",
        &format!("{name}/jobs"),
        "run",
        "--json",
        path.to_str().unwrap(),
    ]);
    let dirs: Vec<PathBuf> = hierarchies().iter().map(|h| h.join(&name[1..])).collect();
    let made: Vec<bool> = dirs.iter().map(|d| d.join("jobs").is_dir()).collect();
    for d in &dirs {
        let _ = fs::remove_dir(d.join("jobs"));
        let _ = fs::remove_dir(d);
    }
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(made.iter().all(|m| *m), "{made:?}");
    b.assert_clean(&[&job_id(&r.json())]);
    let bad = b.run_cmd(&["--cgroup-parent", "/", "gc"]);
    assert_eq!(bad.status, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("must be an absolute cgroup path"),
        "{}",
        bad.stderr
    );
}

/// berth as `uid`, with a home in a directory it owns.
fn rootless_berth(uid: u32, gid: u32) -> (Berth, Command) {
    let b = Berth::new();
    std::os::unix::fs::chown(b.dir.path(), Some(uid), Some(gid)).unwrap();
    let mut cmd = berth_as(uid, gid);
    cmd.arg("--home")
        .arg(b.home())
        .arg("--cache")
        .arg(b.cache())
        .args(["--retries", "0"]);
    (b, cmd)
}

#[test]
fn rootless_a_container_nests_in_a_delegated_cgroup_and_sigterm_leaves_it_empty() {
    require_env!();
    let (uid, gid) = ensure_user("berth-nest", true);
    let (b, cmd) = rootless_berth(uid, gid);
    let cgroup = Delegated::new(None, Some((uid, gid)));
    nests_and_leaves_nothing_on_sigterm(&b, &cmd, &cgroup);
}

#[test]
fn rootless_a_lower_memory_limit_of_the_delegated_cgroup_is_the_components_oom() {
    require_env!();
    let (uid, gid) = ensure_user("berth-nest", true);
    let (b, cmd) = rootless_berth(uid, gid);
    let cgroup = Delegated::new(Some(64 << 20), Some((uid, gid)));
    oom_below_the_parent(&b, &cmd, &cgroup);
}

#[test]
fn gc_from_elsewhere_finds_a_killed_berths_container_below_its_cgroup() {
    require_env!();
    if test_user().is_some() {
        return;
    }
    let b = Berth::new();
    let cgroup = Delegated::new(None, None);
    let (mut child, marker, job) = start_sleeper(&b, &b.cmd(), &cgroup);
    // What Slurm does after KillWait: SIGKILL, which berth cannot answer.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(
        running(&marker),
        "the container should outlive a SIGKILLed berth"
    );
    assert_eq!(cgroups_of(&[&job]).len(), cgroup.dirs.len());
    // berth gc from the test's own cgroups: nothing of the container is where it would put
    // its own; the dead job's note says where to look.
    let r = b.run_cmd(&["gc"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("removed 1 job directories and 1 containers"),
        "{}",
        r.stdout
    );
    assert!(!running(&marker), "the orphan container still runs");
    let left = cgroup.children();
    assert!(left.is_empty(), "cgroups left in {}: {left:?}", cgroup.name);
    b.assert_clean(&[&job]);
}
