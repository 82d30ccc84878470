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
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use berth::storage::{ExportQuery, FileQuery, JobQuery, JobStatus, StateKey};
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

/// The node-kill test kills a node: while it runs, no other test may have a job there.
static NODES: RwLock<()> = RwLock::new(());

/// Every test but the node-kill one shares the nodes.
fn sharing_nodes() -> RwLockReadGuard<'static, ()> {
    NODES.read().unwrap_or_else(PoisonError::into_inner)
}

/// The shared store (PostgreSQL and S3 from scripts/services.sh) of one test, or `None`
/// (the test skips; under CI it fails) when its servers are not there.
fn shared_store() -> Option<SharedStore> {
    match SharedStore::new() {
        Ok(store) => Some(store),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must run every test, but: {why}")
        }
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
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
    /// behind a shell gets no chance to remove its container (docs/cluster.md, "Slurm").
    fn submit(op: &Op, job: &Value, sbatch_args: &[&str]) -> Batch {
        let job_file = op.berth.write_job(job);
        op.give(&job_file);
        Batch::submit_run(op, &job_file.display().to_string(), "", sbatch_args)
    }

    /// Submits `exec berth … run --json JOB_FILE` (which may name `$SLURM_ARRAY_TASK_ID`);
    /// its stdout and stderr go to `slurm{suffix}.out` and `.err` in the test's directory.
    fn submit_run(op: &Op, job_file: &str, suffix: &str, sbatch_args: &[&str]) -> Batch {
        let dir = op.berth.dir.path();
        let script = dir.join(format!("batch-{:x}.sh", rand_u64()));
        let mut argv = vec![op.program.display().to_string()];
        argv.extend(op.args.iter().cloned());
        argv.extend(["run".into(), "--json".into(), job_file.to_owned()]);
        // The test cluster's KillWait is 10 s: berth's own grace for its container must end
        // well before Slurm kills berth (docs/cluster.md).
        let script_text = format!(
            "#!/bin/sh\nexport BERTH_STOP_GRACE=3\nexec {}\n",
            argv.join(" ")
        );
        fs::write(&script, script_text).unwrap();
        op.give(&script);
        let out = dir.join(format!("slurm{suffix}.out"));
        let err = dir.join(format!("slurm{suffix}.err"));
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
        self.wait_gone_within(Duration::from_secs(120));
    }

    fn wait_gone_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
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
    /// Makes a file the test wrote the operator's.
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

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
    let _nodes = sharing_nodes();
    runs_inside_the_job_and_scancel_leaves_nothing(&Op::root());
}

#[test]
fn rootless_a_berth_job_runs_inside_its_slurm_job_and_scancel_leaves_nothing() {
    require_slurm!();
    let _nodes = sharing_nodes();
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
    let expected = "component acme.test ran out of memory (limit 100m, lowered from the \
                    component's 512m by cgroup /slurm_";
    assert!(message.starts_with(expected), "{message}");
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
    let _nodes = sharing_nodes();
    mem_below_the_components_need_is_its_oom(&Op::root());
}

#[test]
fn rootless_mem_below_the_components_need_is_its_oom_as_a_user_error() {
    require_slurm!();
    let _nodes = sharing_nodes();
    mem_below_the_components_need_is_its_oom(&Op::rootless("berth-slurm"));
}

// ---------------------------------------------------------------------------------------
// Many hosts, one project: arrays and requeues over the shared store (PostgreSQL + S3).

/// Reads its row of `in.c-src.squares`, upserts it (and the key `last`, whoever is last)
/// into `out.c-s.t`, writes a file tagged `array` and its state.
const ARRAY_TASK: &str = r#"n=$(sed -n 's/.*"n": *\([0-9]*\).*/\1/p' /data/config.json)
sq=$(grep "^$n," /data/in/tables/squares.csv | cut -d, -f2)
{ echo 'id,square,task'; echo "$n,$sq,$n"; echo "last,,$n"; } > /data/out/tables/t.csv
echo '{"destination": "out.c-s.t", "incremental": true, "primary_key": ["id"]}' > /data/out/tables/t.csv.manifest
echo "task $n" > /data/out/files/task-$n.txt
echo '{"tags": ["array"]}' > /data/out/files/task-$n.txt.manifest
echo "{\"n\": $n}" > /data/out/state.json"#;

const TASKS: u32 = 30;

/// Loads `csv` into `table` of the shared store, as root with a home of its own.
fn import(store: &SharedStore, table: &str, csv: &str) {
    let b = Berth::new();
    let path = b.dir.path().join("import.csv");
    fs::write(&path, csv).unwrap();
    check(
        b.cmd()
            .args(store.args())
            .args(["storage", "import", table])
            .arg(&path),
    );
}

/// Table `table` of the store, as CSV.
fn export(store: &dyn berth::storage::Storage, table: &str) -> String {
    let mut out = Vec::new();
    store
        .export(&table.parse().unwrap(), &ExportQuery::default(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// The job of array task `n`: configuration `c<n>`, its input table mapped.
fn task_job(image: &str, n: u32) -> Value {
    let mut j = job(image, json!({}), json!({"n": n}));
    j["config_id"] = json!(format!("c{n}"));
    j["configuration"]["storage"] = json!({"input": {"tables": [
        {"source": "in.c-src.squares", "destination": "squares.csv"}
    ]}});
    j
}

fn an_array_lands_every_task_exactly_once(op: &mut Op) {
    let Some(store) = shared_store() else { return };
    op.args.extend(store.args());
    let squares: String = (1..=TASKS).map(|n| format!("{n},{}\n", n * n)).collect();
    import(&store, "in.c-src.squares", &format!("id,square\n{squares}"));
    let img = push(
        &ImageSpec::script(ARRAY_TASK),
        &unique_repo("slurm-array"),
        "1.0",
    );
    let dir = op.berth.dir.path().to_owned();
    for n in 1..=TASKS {
        let path = dir.join(format!("task-{n}.json"));
        fs::write(
            &path,
            serde_json::to_vec(&task_job(&img.reference, n)).unwrap(),
        )
        .unwrap();
        op.give(&path);
    }
    let jobs = format!("{}/task-${{SLURM_ARRAY_TASK_ID}}.json", dir.display());
    let array = Batch::submit_run(op, &jobs, "-%a", &[&format!("--array=1-{TASKS}")]);
    array.wait_gone_within(Duration::from_secs(900));

    // Every task succeeded once, under the job id Slurm gave it.
    let mut ids = std::collections::BTreeSet::new();
    for n in 1..=TASKS {
        let out = fs::read_to_string(dir.join(format!("slurm-{n}.out"))).unwrap_or_default();
        let err = fs::read_to_string(dir.join(format!("slurm-{n}.err"))).unwrap_or_default();
        let result: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("task {n}: {e}: {out}\n{err}"));
        assert_eq!(result["status"], "success", "task {n}: {result}\n{err}");
        let id = job_id(&result);
        assert!(id.ends_with(&format!("_{n}")), "task {n} ran as job {id}");
        assert!(ids.insert(id.clone()), "job id {id} twice");
    }
    let s = store.open();
    let records = s.jobs(&JobQuery::default()).unwrap();
    let recorded: std::collections::BTreeSet<String> =
        records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(records.len(), TASKS as usize, "{recorded:?}");
    assert_eq!(recorded, ids);
    assert!(records.iter().all(|r| r.status == JobStatus::Success));

    // One row per task with its input's value, and the key every task wrote once.
    let exported = export(s.as_ref(), "out.c-s.t");
    let (last, mut rows): (Vec<String>, Vec<String>) = exported
        .lines()
        .skip(1)
        .map(|l| l.replace('"', ""))
        .partition(|l| l.starts_with("last,"));
    assert_eq!(last.len(), 1, "{exported}");
    rows.sort_unstable();
    let mut want: Vec<String> = (1..=TASKS).map(|n| format!("{n},{},{n}", n * n)).collect();
    want.sort_unstable();
    assert_eq!(rows, want, "{exported}");

    // A file and a state each.
    let files = s
        .files(&FileQuery {
            tags_all: vec!["array".into()],
            ..FileQuery::default()
        })
        .unwrap();
    let mut names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    names.sort_unstable();
    let mut want: Vec<String> = (1..=TASKS).map(|n| format!("task-{n}.txt")).collect();
    want.sort_unstable();
    assert_eq!(names, want);
    for n in 1..=TASKS {
        let key = StateKey {
            component: "acme.test".into(),
            config: format!("c{n}"),
            row: None,
        };
        let state = s.state(&key).unwrap().unwrap_or_default();
        assert_eq!(state["component"], json!({"n": n}), "task {n}: {state}");
    }
    op.berth.assert_clean(&[]);
}

#[test]
fn an_array_of_thirty_jobs_lands_completely_and_exactly_once_in_the_shared_store() {
    require_slurm!();
    let _nodes = sharing_nodes();
    an_array_lands_every_task_exactly_once(&mut Op::root());
}

#[test]
fn rootless_an_array_of_thirty_jobs_lands_completely_and_exactly_once_in_the_shared_store() {
    require_slurm!();
    let _nodes = sharing_nodes();
    an_array_lands_every_task_exactly_once(&mut Op::rootless("berth-slurm"));
}

/// Writes the row `once` and its state after `sleep 8`: long enough to be killed mid-run.
const SLOW_ONCE: &str = r#"echo started
sleep 8
{ echo 'id,v'; echo 'once,1'; } > /data/out/tables/t.csv
echo '{"destination": "out.c-s.t", "incremental": true}' > /data/out/tables/t.csv.manifest
echo '{"ran": true}' > /data/out/state.json"#;

/// SIGKILLs node `node`'s slurmd, then every process of Slurm job `id` (slurmstepd, berth,
/// the container) until none is left: the node died with the job on it.
fn kill_node(node: &str, id: &str) {
    let conf = slurm_conf().unwrap();
    let dir = conf.parent().and_then(Path::parent).unwrap();
    let slurmd: i32 = fs::read_to_string(dir.join(format!("slurmd-{node}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let kill = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    kill(slurmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut pids: Vec<i32> = job_cgroup_procs(node, id);
        let stepd = Command::new("pgrep")
            .args(["-f", &format!(r"^slurmstepd: \[{id}\.")])
            .output()
            .unwrap();
        pids.extend(
            String::from_utf8_lossy(&stepd.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok()),
        );
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} outlived SIGKILL: {pids:?}"
        );
        pids.into_iter().for_each(kill);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every process in Slurm job `id`'s cgroups on `node` (the freezer hierarchy's tree).
fn job_cgroup_procs(node: &str, id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let top = Path::new("/sys/fs/cgroup/freezer").join(format!("slurm_{node}"));
    let mut stack: Vec<PathBuf> = fs::read_dir(&top)
        .into_iter()
        .flatten()
        .flatten()
        .map(|uid| uid.path().join(format!("job_{id}")))
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.parse::<i32>().ok()));
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    pids
}

/// A field of `scontrol show job`.
fn job_field(id: &str, field: &str) -> String {
    let shown = check(slurm(None, "scontrol").args(["show", "job", id]));
    let prefix = format!("{field}=");
    shown
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_default()
        .to_owned()
}

fn killed_with_its_node_is_requeued_and_commits_once(op: &mut Op) {
    let Some(store) = shared_store() else { return };
    op.args.extend(store.args());
    let img = push(
        &ImageSpec::script(SLOW_ONCE),
        &unique_repo("slurm-requeue"),
        "1.0",
    );
    let batch = Batch::submit(
        op,
        &job(&img.reference, json!({}), json!({})),
        &["--requeue", "--open-mode=append"],
    );
    batch.wait_for_line("started");
    let dead = op.berth.running_job_id();
    let node = check(slurm(None, "squeue").args(["-h", "-o", "%N", "-j", &batch.id]))
        .trim()
        .to_owned();
    kill_node(&node, &batch.id);
    // Slurm finds the node dead and puts the job back in the queue.
    let deadline = Instant::now() + Duration::from_secs(120);
    while job_field(&batch.id, "Restarts") != "1" {
        assert!(
            Instant::now() < deadline,
            "job {} was not requeued: {}",
            batch.id,
            check(slurm(None, "scontrol").args(["show", "job", &batch.id]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The node comes back; the job runs again, with the same Slurm job id.
    let restart = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm.sh"))
        .arg("start")
        .output()
        .unwrap();
    assert!(restart.status.success(), "{restart:?}");
    batch.wait_gone_within(Duration::from_secs(300));
    assert_eq!(batch.exit_code(), "0:0", "{}", batch.stderr());
    let result: Value = serde_json::from_str(&batch.stdout())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", batch.stdout(), batch.stderr()));
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(job_id(&result), batch.id);
    // Committed once: one record, one row, the state.
    let s = store.open();
    let records = s.jobs(&JobQuery::default()).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].id, batch.id);
    assert_eq!(records[0].status, JobStatus::Success);
    assert_eq!(
        export(s.as_ref(), "out.c-s.t").replace('"', ""),
        "id,v\nonce,1\n"
    );
    let key = StateKey {
        component: "acme.test".into(),
        config: "42".into(),
        row: None,
    };
    let state = s.state(&key).unwrap().unwrap_or_default();
    assert_eq!(state["component"], json!({"ran": true}), "{state}");
    // The second run swept what the killed berth left: its job folder, container and
    // cgroups.
    op.berth.assert_clean(&[&dead]);
}

#[test]
fn a_job_killed_with_its_node_is_requeued_and_commits_once() {
    require_slurm!();
    let _nodes = NODES.write().unwrap_or_else(PoisonError::into_inner);
    killed_with_its_node_is_requeued_and_commits_once(&mut Op::root());
}

#[test]
fn rootless_a_job_killed_with_its_node_is_requeued_and_commits_once() {
    require_slurm!();
    let _nodes = NODES.write().unwrap_or_else(PoisonError::into_inner);
    killed_with_its_node_is_requeued_and_commits_once(&mut Op::rootless("berth-slurm"));
}
