//! berth under a real Slurm (scripts/slurm.sh: slurmctld and three slurmd on this host, the
//! cgroup v1 proctrack and task plugins): a batch job's container runs inside the Slurm
//! job's cgroups, `scancel` leaves no container, cgroup, mount or job folder (and Slurm can
//! remove its own cgroups), and `--mem` below the component's limit is its OOM. As root and
//! as a rootless operator.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The cluster's slurm.conf, once `scripts/slurm.sh start` brought it up (idempotent).
fn slurm_conf() -> Result<PathBuf, String> {
    static CONF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CONF.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm.sh");
        let out = Command::new(script)
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run scripts/slurm.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "no Slurm cluster (scripts/slurm.sh start: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
}

macro_rules! require_slurm {
    () => {
        require_env!();
        if let Err(reason) = slurm_conf() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI must run every test, but: {reason}");
            }
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// A Slurm command, as `user` if given (through runuser, with the cluster's configuration).
fn slurm(user: Option<&str>, program: &str) -> Command {
    let conf = slurm_conf().unwrap();
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "env"])
                .arg(format!("SLURM_CONF={}", conf.display()))
                .arg(program);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.env("SLURM_CONF", &conf);
            c
        }
    };
    c.current_dir("/");
    c
}

fn check(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A batch job: its id and where its stdout and stderr go.
struct Batch {
    id: String,
    out: PathBuf,
    err: PathBuf,
}

impl Batch {
    /// Submits `exec berth … run --json JOB` as a batch script, with `sbatch_args`. The
    /// `exec` matters: Slurm sends SIGTERM only to the processes its step started (the
    /// script's shell), then SIGKILL to everything else once that has exited — a berth
    /// behind a shell gets no chance to remove its container (see the README).
    fn submit(op: &Op, job: &Value, sbatch_args: &[&str]) -> Batch {
        let job_file = op.berth.write_job(job);
        let dir = op.berth.dir.path();
        let script = dir.join(format!("batch-{:x}.sh", rand_u64()));
        let mut argv = vec![op.program.display().to_string()];
        argv.extend(op.args.iter().cloned());
        argv.extend([
            "run".into(),
            "--json".into(),
            job_file.display().to_string(),
        ]);
        fs::write(&script, format!("#!/bin/sh\nexec {}\n", argv.join(" "))).unwrap();
        if let Some((uid, gid)) = op.owner {
            for p in [&script, &job_file] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let out = dir.join("slurm.out");
        let err = dir.join("slurm.err");
        let id = check(
            slurm(op.user.as_deref(), "sbatch")
                .arg("--parsable")
                .arg(format!("--output={}", out.display()))
                .arg(format!("--error={}", err.display()))
                .args(sbatch_args)
                .arg(&script),
        )
        .trim()
        .to_owned();
        Batch { id, out, err }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until a line of the job's stderr (the component's output under --json) is
    /// `line`.
    fn wait_for_line(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.stderr().lines().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "job {} never printed {line:?}: {}",
                self.id,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until Slurm no longer lists the job as pending, running or completing.
    fn wait_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listed = check(slurm(None, "squeue").args(["-h", "-j", &self.id]));
            if listed.trim().is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {} still listed: {listed}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ExitCode=` of the finished job, as scontrol shows it (`1:0`).
    fn exit_code(&self) -> String {
        let shown = check(slurm(None, "scontrol").args(["show", "job", &self.id]));
        shown
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ExitCode="))
            .unwrap_or_default()
            .to_owned()
    }

    /// Slurm's own cgroups of this job, in any hierarchy.
    fn slurm_cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for h in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for node in fs::read_dir(h.path()).into_iter().flatten().flatten() {
                if !node.file_name().to_string_lossy().starts_with("slurm") {
                    continue;
                }
                for uid in fs::read_dir(node.path()).into_iter().flatten().flatten() {
                    let job = uid.path().join(format!("job_{}", self.id));
                    if job.exists() {
                        found.push(job);
                    }
                }
            }
        }
        found
    }
}

/// Who runs berth: root, or an unprivileged operator (a home it owns, berth through
/// `setpriv`, sbatch through `runuser`).
struct Op {
    berth: Berth,
    user: Option<String>,
    owner: Option<(u32, u32)>,
    program: PathBuf,
    args: Vec<String>,
}

impl Op {
    fn root() -> Op {
        let berth = Berth::new();
        let args = vec![
            "--home".into(),
            berth.home().display().to_string(),
            "--cache".into(),
            berth.cache().display().to_string(),
            "--retries".into(),
            "0".into(),
        ];
        Op {
            berth,
            user: None,
            owner: None,
            program: PathBuf::from(env!("CARGO_BIN_EXE_berth")),
            args,
        }
    }

    /// The operator `name` (made if missing), delegated a cgroup with `berth setup-rootless`.
    fn rootless(name: &str) -> Op {
        static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
        let (uid, gid) = ensure_user(name, true);
        check(Command::new(env!("CARGO_BIN_EXE_berth")).args(["setup-rootless", name]));
        drop(guard);
        let mut op = Op::root();
        std::os::unix::fs::chown(op.berth.dir.path(), Some(uid), Some(gid)).unwrap();
        op.user = Some(name.to_owned());
        op.owner = Some((uid, gid));
        op.program = berth_for_anyone();
        op
    }
}

/// A component that says it started and sleeps; scancel'd, then checked for leftovers.
fn runs_inside_the_job_and_scancel_leaves_nothing(op: &Op) {
    let marker = format!("sleep 36{:04}", rand_u64() % 10_000);
    let img = push(
        &ImageSpec::script(&format!("echo started\n{marker}")),
        &unique_repo("slurm"),
        "1.0",
    );
    let batch = Batch::submit(
        op,
        &job(&img.reference, json!({}), json!({})),
        &["--mem=500M"],
    );
    batch.wait_for_line("started");
    let job = op.berth.running_job_id();
    let cgroups = cgroups_of(&[&job]);
    let job_cgroup = format!("/job_{}/step_batch/", batch.id);
    let memory: Vec<&String> = cgroups
        .iter()
        .filter(|c| c.starts_with("/sys/fs/cgroup/memory/"))
        .collect();
    assert_eq!(memory.len(), 1, "{cgroups:?}");
    assert!(
        memory[0].contains(&format!("{job_cgroup}task_0/berth-")),
        "the container's memory cgroup is outside the Slurm job's: {}",
        memory[0]
    );
    let freezer: Vec<&String> = cgroups
        .iter()
        .filter(|c| c.starts_with("/sys/fs/cgroup/freezer/"))
        .collect();
    assert_eq!(freezer.len(), 1, "{cgroups:?}");
    assert!(freezer[0].contains(&job_cgroup), "{}", freezer[0]);
    check(slurm(op.user.as_deref(), "scancel").arg(&batch.id));
    batch.wait_gone();
    assert!(!running(&marker), "the component survived scancel");
    assert!(
        batch.stdout().contains("interrupted by the operator"),
        "{}\n{}",
        batch.stdout(),
        batch.stderr()
    );
    let left = cgroups_of(&[&job]);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    let slurms = batch.slurm_cgroups();
    assert!(
        slurms.is_empty(),
        "Slurm could not remove its cgroups: {slurms:?}"
    );
    op.berth.assert_clean(&[&job]);
}

#[test]
fn a_berth_job_runs_inside_its_slurm_job_and_scancel_leaves_nothing() {
    require_slurm!();
    runs_inside_the_job_and_scancel_leaves_nothing(&Op::root());
}

#[test]
fn rootless_a_berth_job_runs_inside_its_slurm_job_and_scancel_leaves_nothing() {
    require_slurm!();
    runs_inside_the_job_and_scancel_leaves_nothing(&Op::rootless("berth-slurm"));
}

/// `--mem=100M` and a component allowed 512m that allocates 160 MiB at once.
fn mem_below_the_components_need_is_its_oom(op: &Op) {
    let img = push(
        &ImageSpec::script("dd if=/dev/zero of=/dev/null bs=160M count=1"),
        &unique_repo("slurm-oom"),
        "1.0",
    );
    let batch = Batch::submit(
        op,
        &job(&img.reference, json!({"memory": "512m"}), json!({})),
        &["--mem=100M"],
    );
    batch.wait_gone();
    let result: Value = serde_json::from_str(&batch.stdout())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", batch.stdout(), batch.stderr()));
    assert_eq!(result["error_class"], "user", "{result}");
    let message = result["message"].as_str().unwrap();
    let expected = format!(
        "component acme.test ran out of memory (limit {}, lowered from the component's 512m \
         by cgroup /slurm_",
        100 * 1024 * 1024
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains(&format!("/job_{}", batch.id)), "{message}");
    assert_eq!(batch.exit_code(), "1:0");
    let slurms = batch.slurm_cgroups();
    assert!(
        slurms.is_empty(),
        "Slurm could not remove its cgroups: {slurms:?}"
    );
    op.berth.assert_clean(&[&job_id(&result)]);
}

#[test]
fn mem_below_the_components_need_is_its_oom_as_a_user_error() {
    require_slurm!();
    mem_below_the_components_need_is_its_oom(&Op::root());
}

#[test]
fn rootless_mem_below_the_components_need_is_its_oom_as_a_user_error() {
    require_slurm!();
    mem_below_the_components_need_is_its_oom(&Op::rootless("berth-slurm"));
}
