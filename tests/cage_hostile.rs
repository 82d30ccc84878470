//! Hostile components: code nobody on the host has read, trying to hurt the host or to get
//! out of its cage. Each one is a real container from a busybox image; each test asserts
//! what the component saw inside, what berth reported, and what is left on the host.
//!
//! A few need a program busybox does not have (threads, raw `clone3`, `ptrace`, a set-user-id
//! helper): a small static C program, compiled once with the host's `cc` (see [`probe`]).

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Lines, Read};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

/// busybox, the script, and the C probe at `/probe`.
fn probe_image(name: &str, script: &str, probe: &[u8]) -> BuiltImage {
    let mut spec = ImageSpec::script(script);
    spec.layers.push(gzip(&tar_of(&[exe("probe", probe)])));
    push(&spec, &unique_repo(name), "1.0")
}

/// Waits (at most a minute) for the test to create `/data/in/user/go`.
const WAIT_FOR_GO: &str =
    "i=0; while [ ! -e /data/in/user/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";

/// Lets a component that waits with [`WAIT_FOR_GO`] go on.
fn go(b: &Berth) {
    fs::write(Berth::data_dir(&b.job_dir(), 0).join("in/user/go"), b"").unwrap();
}

/// A random hexadecimal token, to mark a test's processes and files.
fn token() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The command lines of the host's processes matching `pattern` (`pgrep -af`).
fn pgrep(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The lines of the component's output (berth's stderr under `--json`) that start with
/// `prefix`, without it.
fn reported<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

/// The one line the component printed after `prefix`.
fn said<'a>(output: &'a str, prefix: &str) -> &'a str {
    match reported(output, prefix)[..] {
        [line] => line,
        ref other => panic!("expected one {prefix:?} line, got {other:?}:\n{output}"),
    }
}

/// Asserts the component printed exactly this line.
fn assert_said(output: &str, line: &str) {
    assert!(
        output.lines().any(|l| l == line),
        "the component did not print {line:?}:\n{output}"
    );
}

/// Runs `script` with `sh -c` as nobody on the host; returns whether it succeeded, and its
/// stdout and stderr. Through a shell: setpriv itself still holds root's capabilities when
/// it executes its command.
fn as_nobody(script: &str) -> (bool, String, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `berth run --json` in the background, its stderr (the component's output and
/// berth's log) read line by line.
struct Live {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    seen: String,
    started: Instant,
}

/// How a background run ended.
struct Ended {
    status: i32,
    result: Value,
    output: String,
    took: Duration,
}

impl Live {
    fn start(b: &Berth, job: &Value) -> Live {
        let path = b.write_job(job);
        let mut child = b
            .cmd()
            .args(["run", "--json", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Live {
            child,
            lines,
            seen: String::new(),
            started: Instant::now(),
        }
    }

    /// Reads until the component prints `line`.
    fn wait_for(&mut self, line: &str) {
        for l in self.lines.by_ref() {
            let l = l.unwrap();
            self.seen.push_str(&l);
            self.seen.push('\n');
            if l == line {
                return;
            }
        }
        panic!("the run ended before {line:?}:\n{}", self.seen);
    }

    fn finish(mut self) -> Ended {
        for l in self.lines.by_ref() {
            self.seen.push_str(&l.unwrap());
            self.seen.push('\n');
        }
        let status = self.child.wait().unwrap().code().unwrap_or(-1);
        let took = self.started.elapsed();
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let result = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not the result JSON ({e}): {stdout}\n{}", self.seen));
        Ended {
            status,
            result,
            output: std::mem::take(&mut self.seen),
            took,
        }
    }
}

impl Drop for Live {
    /// A test that fails midway stops its berth as an operator would (Ctrl-C: berth kills
    /// the container and cleans up) before the berth's home is removed under it.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a job to its end.
fn run(b: &Berth, job: &Value) -> Ended {
    Live::start(b, job).finish()
}

/// Asserts a job ended successfully.
fn assert_success(end: &Ended) {
    assert_eq!(end.status, 0, "{}", end.output);
    assert_eq!(end.result["status"], "success", "{}", end.result);
    assert_eq!(end.result["error_class"], Value::Null);
}

/// The cgroup directory, in `controller` (v1) or the unified hierarchy (v2), of the one
/// container of the job that is running, wherever berth nests it; waits for it to appear.
fn cgroup_dir(b: &Berth, controller: &str) -> PathBuf {
    let job = b.running_job_id();
    let v1 = Path::new("/sys/fs/cgroup").join(controller);
    let hierarchy = if v1.is_dir() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match container_cgroup(&hierarchy, &job) {
            Some(dir) => return dir,
            None if Instant::now() > deadline => {
                panic!("no cgroup of job {job} in {}", hierarchy.display())
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn read_number(path: &Path) -> u64 {
    let text = read_trimmed(path);
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// The value of `key` in a flat-keyed cgroup file (`pids.events`, `memory.oom_control`).
fn keyed(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map_or(0, |n| n.trim().parse().unwrap())
}

// ---------------------------------------------------------------------------------------
// The C probe

const PROBE_SOURCE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void said(const char *what, long r) {
    if (r == -1) printf("%s: %s\n", what, strerror(errno));
    else printf("%s: ok\n", what);
}

static void *echo(void *arg) { return arg; }

/* A child of fork-like calls leaves at once; the parent reaps it. */
static long reaped(long r) {
    if (r == 0) _exit(0);
    if (r > 0) waitpid((pid_t) r, NULL, 0);
    return r;
}

static void namespaces(void) {
    pthread_t t;
    void *back = NULL;
    int e = pthread_create(&t, NULL, echo, (void *) 42);
    if (e == 0) e = pthread_join(t, &back);
    printf("thread: %s\n", e ? strerror(e) : back == (void *) 42 ? "ok" : "wrong");
    said("fork", reaped(fork()));
    struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack,
             stack_size, tls; } args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    said("clone3", reaped(syscall(SYS_clone3, &args, sizeof args)));
    said("clone newuser", reaped(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)));
    said("clone newnet", reaped(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)));
    said("unshare newuser", unshare(CLONE_NEWUSER));
    said("unshare newtime", unshare(0x80));
    said("unshare files", unshare(CLONE_FILES | CLONE_FS));
}

/* The kernel's keyrings and its log: shared with the host, not namespaced. */
static void keys(void) {
    said("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 1));
    said("add_key", syscall(SYS_add_key, "user", "berth-probe", "secret", 6, -2 /* process */));
    said("request_key", syscall(SYS_request_key, "user", "berth-probe", NULL, 0));
    char log[64];
    said("syslog size", syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0));
    said("syslog read", syscall(SYS_syslog, 3 /* READ_ALL */, log, sizeof log));
}

/* getpid through another architecture's entry point, in a child: how it ended. */
static void entry(const char *what, int x32) {
    pid_t p = fork();
    if (p == 0) {
        long r;
        if (x32) r = syscall(39 | 0x40000000);
        else __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20) : "memory");
        printf("%s: returned %ld\n", what, r);
        _exit(0);
    }
    int st;
    waitpid(p, &st, 0);
    if (WIFSIGNALED(st)) printf("%s: killed by signal %d\n", what, WTERMSIG(st));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "euid") == 0) {
        printf("euid: %d\n", (int) geteuid());
    } else if (argc == 3 && strcmp(argv[1], "ptrace") == 0) {
        said("ptrace", ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
    } else if (argc == 2 && strcmp(argv[1], "namespaces") == 0) {
        namespaces();
    } else if (argc == 2 && strcmp(argv[1], "keys") == 0) {
        keys();
    } else if (argc == 2 && strcmp(argv[1], "entries") == 0) {
        entry("int80", 0);
        entry("x32", 1);
    } else {
        fprintf(stderr, "usage: probe euid | ptrace PID | namespaces\n");
        return 2;
    }
    return 0;
}
"#;

/// The C probe, statically linked, or `None` (the test says so) where the host has no C
/// compiler with a static C library; under CI that is a failure.
fn probe() -> Option<&'static [u8]> {
    static PROBE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    let built = PROBE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("probe.c");
        let binary = dir.path().join("probe");
        fs::write(&source, PROBE_SOURCE).unwrap();
        let out = Command::new("cc")
            .args(["-static", "-pthread", "-O1", "-o"])
            .arg(&binary)
            .arg(&source)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(fs::read(&binary).unwrap()),
            Ok(o) => {
                eprintln!("cc failed: {}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                eprintln!("no cc: {e}");
                None
            }
        }
    });
    if built.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run every test, but the C probe cannot be built (install gcc and libc6-dev)"
        );
        eprintln!("skipping the C probe's part: no static C toolchain");
    }
    built.as_deref()
}

// ---------------------------------------------------------------------------------------
// 1. Processes

#[test]
fn a_fork_bomb_is_capped_by_the_pids_limit_and_killed_at_the_timeout() {
    require_env!();
    let mark = format!("bomb-{}", token());
    // First the bomb tries to lift its limit. Then it runs in its own `sh -c` named by the
    // marker: every process it forks carries the marker in its command line. The
    // container's init stays (a bomb that ends its init ends the container at once) and
    // reaps the orphans, so the bomb lives on.
    let img = script_image(
        "forkbomb",
        &format!(
            "for f in /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; do \
             [ -e $f ] && {{ (echo max > $f) 2>/dev/null; echo \"lift pids.max: $?\"; }}; done\n\
             echo started\nsh -c 'b() {{ b | b & }}; while :; do b; done' {mark} &\n\
             while :; do wait; done"
        ),
    );
    let b = Berth::new();
    // Memory enough for 1,024 shells and their kernel stacks and page tables: under the
    // default 256m a loaded host sometimes saw the OOM killer end the bomb before the
    // timeout, and this test is about the pids limit and the timeout.
    let mut live = Live::start(
        &b,
        &job(
            &img.reference,
            json!({"process_timeout": 8, "memory": "1g"}),
            json!({}),
        ),
    );
    live.wait_for("started");
    let cgroup = cgroup_dir(&b, "pids");
    assert_eq!(read_trimmed(&cgroup.join("pids.max")), "1024");
    // Wait until the limit refused forks, watching the container's process count.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut highest = 0;
    while keyed(&cgroup.join("pids.events"), "max") == 0 && Instant::now() < deadline {
        highest = highest.max(read_number(&cgroup.join("pids.current")));
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = keyed(&cgroup.join("pids.events"), "max");
    assert!(
        refused > 0,
        "no fork refused; the most processes: {highest}"
    );
    highest = highest.max(read_number(&cgroup.join("pids.current")));
    // The host, meanwhile, still forks and runs a command at once.
    let asked = Instant::now();
    let host = Command::new("sh")
        .args(["-c", "echo usable"])
        .output()
        .unwrap();
    let answered = asked.elapsed();
    assert_eq!(String::from_utf8_lossy(&host.stdout), "usable\n");
    assert!(
        answered < Duration::from_secs(5),
        "the host took {answered:?}"
    );
    // The cgroup's own member list says which processes the limit holds. pgrep cannot: a
    // bomb's shell that has exited but is not yet reaped has no command line, and on a
    // loaded host nearly all of them can be in that state at once.
    let members = read_trimmed(&cgroup.join("cgroup.procs")).lines().count();
    let on_host = pgrep(&mark).len();
    assert!(
        members > 0 && members <= 1024 && on_host <= 1024 && highest <= 1024,
        "{members} processes in the cgroup, {on_host} bomb processes on the host, {highest} at most"
    );
    assert_eq!(read_trimmed(&cgroup.join("pids.max")), "1024");
    eprintln!(
        "bomb: {highest} pids at most, {refused} forks refused, {members} members, {on_host} seen on the host"
    );

    let end = live.finish();
    assert_eq!(said(&end.output, "lift pids.max: "), "1");
    assert_eq!(end.status, 1, "{}", end.output);
    assert_eq!(end.result["error_class"], "user");
    assert_eq!(
        end.result["message"],
        "component acme.test exceeded the timeout of 8 seconds"
    );
    assert_eq!(end.result["exit_code"], 137);
    assert!(end.took < Duration::from_secs(90), "{:?}", end.took);
    let left = pgrep(&mark);
    assert!(left.is_empty(), "bomb processes survived: {left:?}");
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn a_component_cannot_lift_its_limits_or_make_cgroups() {
    require_env!();
    // libcontainer mounted the cgroup v1 hierarchies writable: a component raised its own
    // pids.max and cpu quota, and a child cgroup it made kept berth from removing its own.
    let img = script_image(
        "cgroupwrite",
        &format!(
            "cd /sys/fs/cgroup\n\
             for f in pids/pids.max cpu/cpu.cfs_quota_us memory/memory.memsw.limit_in_bytes \
             memory/memory.limit_in_bytes pids.max cpu.max memory.max; do \
             [ -e $f ] && {{ (echo -1 > $f) 2>/dev/null; echo \"write $f: $?\"; }}; done\n\
             mkdir pids/escape escape 2>/dev/null; echo \"mkdir: $?\"\n\
             touch planted 2>&1; echo \"touch: $?\"\n\
             echo READY\n{WAIT_FOR_GO}"
        ),
    );
    let b = Berth::new();
    let mut live = Live::start(&b, &job(&img.reference, json!({}), json!({})));
    live.wait_for("READY");
    let pids = cgroup_dir(&b, "pids");
    assert_eq!(read_trimmed(&pids.join("pids.max")), "1024");
    let children: Vec<_> = fs::read_dir(&pids)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(children.is_empty(), "child cgroups: {children:?}");
    let cpu = cgroup_dir(&b, "cpu");
    if cpu.join("cpu.cfs_quota_us").is_file() {
        assert_eq!(read_trimmed(&cpu.join("cpu.cfs_quota_us")), "200000");
        let memory = cgroup_dir(&b, "memory");
        assert_eq!(
            read_number(&memory.join("memory.limit_in_bytes")),
            256 << 20
        );
        assert_eq!(
            read_number(&memory.join("memory.memsw.limit_in_bytes")),
            256 << 20
        );
    }
    go(&b);
    let end = live.finish();
    assert_success(&end);
    let writes = reported(&end.output, "write ");
    assert!(!writes.is_empty(), "{}", end.output);
    for w in writes {
        assert!(w.ends_with(": 1"), "{w}\n{}", end.output);
    }
    assert_eq!(said(&end.output, "mkdir: "), "1");
    assert_said(&end.output, "touch: planted: Read-only file system");
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn children_that_ignore_sigterm_are_killed_at_the_timeout() {
    require_env!();
    let t = token();
    // Every shell here ignores TERM (an ignored signal stays ignored in children), one in a
    // session of its own, one an orphan of a shell that left.
    let img = script_image(
        "termignore",
        &format!(
            "trap '' TERM\n\
             sh -c 'while :; do sleep 1; done' child-{t} &\n\
             setsid sh -c 'while :; do sleep 1; done' session-{t} &\n\
             sh -c \"sh -c 'while :; do sleep 1; done' orphan-{t} &\"\n\
             sleep 0.5\nkill -TERM -1; echo \"kill -TERM -1: $?\"\nsleep 0.5\n\
             echo \"alive after TERM: $(ps -o args | grep -o '[a-z][a-z]*-{t}' | sort -u | wc -l)\"\n\
             while :; do sleep 1; done"
        ),
    );
    let b = Berth::new();
    let end = run(
        &b,
        &job(&img.reference, json!({"process_timeout": 4}), json!({})),
    );
    assert_eq!(said(&end.output, "kill -TERM -1: "), "0");
    assert_eq!(said(&end.output, "alive after TERM: "), "3");
    assert_eq!(end.status, 1, "{}", end.output);
    assert_eq!(end.result["error_class"], "user");
    assert_eq!(
        end.result["message"],
        "component acme.test exceeded the timeout of 4 seconds"
    );
    assert_eq!(end.result["exit_code"], 137);
    assert!(end.took < Duration::from_secs(90), "{:?}", end.took);
    let left = pgrep(&t);
    assert!(left.is_empty(), "survived the timeout: {left:?}");
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn host_processes_are_invisible_and_kill_1_hits_only_the_containers_init() {
    require_env!();
    let Some(probe) = probe() else { return };
    // A process of the host, which the component knows the pid of.
    let mut host = Command::new("sleep").arg("3600").spawn().unwrap();
    let pid = host.id();
    let img = probe_image(
        "hostpids",
        &format!(
            "echo \"pids: $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ')\"\n\
             echo \"init: $(tr '\\0' ' ' < /proc/1/cmdline)\"\n\
             ls -d /proc/{pid} 2>&1\n\
             kill -0 {pid} 2>&1; echo \"signal host pid: $?\"\n\
             /probe ptrace {pid}\n\
             kill -9 1; echo \"kill -9 1: $?\"; sleep 0.3; echo \"still running as $$\""
        ),
        probe,
    );
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    let pids: Vec<u32> = said(&end.output, "pids: ")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.contains(&1), "{pids:?}");
    assert!(!pids.contains(&pid), "the host's pid {pid} is visible");
    assert!(
        pids.iter().all(|p| *p < 100),
        "not the container's own: {pids:?}"
    );
    assert_eq!(said(&end.output, "init: "), "/bin/sh /run.sh ");
    assert_said(
        &end.output,
        &format!("ls: /proc/{pid}: No such file or directory"),
    );
    assert_said(
        &end.output,
        &format!("sh: can't kill pid {pid}: No such process"),
    );
    assert_eq!(said(&end.output, "signal host pid: "), "1");
    assert_eq!(said(&end.output, "ptrace: "), "No such process");
    // The container's init ignores a SIGKILL from inside its own namespace.
    assert_eq!(said(&end.output, "kill -9 1: "), "0");
    assert_eq!(said(&end.output, "still running as "), "1");
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host's process died"
    );
    host.kill().unwrap();
    host.wait().unwrap();
    b.assert_clean(&[&job_id(&end.result)]);
}

// ---------------------------------------------------------------------------------------
// 2. Memory

#[test]
fn filling_a_tmpfs_past_the_memory_limit_is_out_of_memory() {
    require_env!();
    // /dev/shm is a 64 MiB tmpfs: with dd's buffer, more than the 64 MiB limit. Its pages
    // are charged to the container and cannot be reclaimed without swap, so the OOM killer
    // ends the writer (dd, the largest process with its 4 MiB buffer). The component frees
    // the tmpfs, lets the test look at its cgroup, and exits 3 — an OOM kill all the same.
    let img = script_image(
        "tmpfshog",
        &format!(
            "dd if=/dev/zero of=/dev/shm/fill bs=4M count=25 2>/dev/null; echo \"dd: $?\"\n\
             rm -f /dev/shm/fill\necho READY\n{WAIT_FOR_GO}\nexit 3"
        ),
    );
    let b = Berth::new();
    let mut live = Live::start(
        &b,
        &job(&img.reference, json!({"memory": "64m"}), json!({})),
    );
    live.wait_for("READY");
    let cgroup = cgroup_dir(&b, "memory");
    let v1 = cgroup.join("memory.limit_in_bytes").is_file();
    let (limit, peak, events) = if v1 {
        (
            "memory.limit_in_bytes",
            "memory.max_usage_in_bytes",
            "memory.oom_control",
        )
    } else {
        ("memory.max", "memory.peak", "memory.events")
    };
    assert_eq!(read_number(&cgroup.join(limit)), 64 << 20);
    let peak = read_number(&cgroup.join(peak));
    // The container used all it may, and not a page more; with swap counted too.
    assert!((60 << 20..=64 << 20).contains(&peak), "peak memory {peak}");
    if v1 {
        let with_swap = read_number(&cgroup.join("memory.memsw.max_usage_in_bytes"));
        assert!(with_swap <= 64 << 20, "memory and swap {with_swap}");
    }
    assert!(keyed(&cgroup.join(events), "oom_kill") >= 1);
    go(&b);
    let end = live.finish();
    assert_eq!(said(&end.output, "dd: "), "137");
    assert_eq!(end.status, 1, "{}", end.output);
    assert_eq!(end.result["error_class"], "user");
    assert_eq!(
        end.result["message"],
        "component acme.test ran out of memory (limit 64m)"
    );
    assert_eq!(end.result["exit_code"], 3);
    b.assert_clean(&[&job_id(&end.result)]);
}

// ---------------------------------------------------------------------------------------
// 2b. Disk

/// A component that writes a table and a state (which must not reach storage), then runs
/// `writes`, prints `wrote`, and waits far longer than berth measures.
fn disk_writer(name: &str, writes: &str) -> BuiltImage {
    script_image(
        &format!("disk-{name}"),
        &format!(
            "mkdir -p /var\nprintf 'a\\n1\\n' > /data/out/tables/t.csv\n\
             echo '{{\"seen\": true}}' > /data/out/state.json\n\
             {writes}\necho wrote\nsleep 100; echo STILL-RUNNING"
        ),
    )
}

#[test]
fn writing_past_the_disk_limit_in_out_the_rootfs_or_tmp_stops_the_component() {
    require_env!();
    // 40 MB against a limit of 20m: four files of 10 MB where it may write — /data/out,
    // its root filesystem (the overlay's upper directory), /tmp — or one file of 40 MB,
    // which the kernel cuts at 20 MB (RLIMIT_FSIZE: dd dies of SIGXFSZ, 128+25).
    let four = |target: &str| {
        format!(
            "for i in 1 2 3 4; do dd if=/dev/zero of={target}.$i bs=1M count=10 2>/dev/null; \
             echo \"dd: $?\"; done"
        )
    };
    let b = Berth::new();
    let mut ended = Vec::new();
    for (name, writes, dd) in [
        ("out", four("/data/out/files/fill"), "0"),
        ("rootfs", four("/var/fill"), "0"),
        ("tmp", four("/tmp/fill"), "0"),
        (
            "one",
            "dd if=/dev/zero of=/tmp/one bs=1M count=40 2>/dev/null; echo \"dd: $?\"".to_owned(),
            "153",
        ),
    ] {
        let img = disk_writer(name, &writes);
        let limits = json!({"disk": "20m", "process_timeout": 60});
        let end = run(&b, &job(&img.reference, limits, json!({})));
        assert!(
            reported(&end.output, "dd: ").iter().all(|d| *d == dd),
            "{name}: {}",
            end.output
        );
        assert_said(&end.output, "wrote");
        assert!(
            !end.output.contains("STILL-RUNNING"),
            "{name}: {}",
            end.output
        );
        assert_eq!(end.status, 1, "{name}: {}", end.output);
        assert_eq!(end.result["error_class"], "user", "{name}");
        assert_eq!(end.result["exit_code"], 137, "{name}: killed");
        let message = end.result["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "component acme.test wrote more than its disk limit of 20m (/data, /tmp and \
                 its root filesystem together): "
            ),
            "{name}: {message}"
        );
        assert_eq!(end.result["cage"]["disk_limit"], "20m");
        ended.push(job_id(&end.result));
    }
    // Nothing reached storage: no table, no state.
    let tables = b.run_cmd(&["storage", "tables"]);
    assert_eq!(tables.status, 0, "{}", tables.stderr);
    assert!(!tables.stdout.contains(".t"), "{}", tables.stdout);
    let state = b.run_cmd(&["state", "show", "acme.test", "42"]);
    assert!(
        state.stderr.contains("no state is stored for acme.test/42"),
        "{}{}",
        state.stdout,
        state.stderr
    );
    let ids: Vec<&str> = ended.iter().map(String::as_str).collect();
    b.assert_clean(&ids);
}

#[test]
fn no_single_allocation_passes_the_disk_limit_and_less_is_the_components() {
    require_env!();
    // One fallocate of 1 GB would take the disk at once, between two measurements: the
    // kernel refuses it (RLIMIT_FSIZE), and nothing is written. Under its limit, the
    // component writes what it likes.
    let img = script_image(
        "disk-under",
        "fallocate -l 1G /tmp/big 2>/dev/null; echo \"fallocate: $?\"\n\
         echo \"big: $(ls /tmp/big 2>/dev/null | wc -l)\"\n\
         dd if=/dev/zero of=/tmp/fill bs=1M count=10 2>/dev/null && \
         dd if=/dev/zero of=/data/out/files/fill bs=1M count=5 2>/dev/null && echo WROTE",
    );
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({"disk": "20m"}), json!({})));
    assert_success(&end);
    assert_eq!(said(&end.output, "fallocate: "), "153", "{}", end.output);
    assert_said(&end.output, "WROTE");
    b.assert_clean(&[&job_id(&end.result)]);
}

// ---------------------------------------------------------------------------------------
// 3. Network

/// The host's IPv4 addresses besides loopback.
fn host_addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|a| a.split('/').next())
        .filter(|a| !a.starts_with("127."))
        .map(str::to_owned)
        .collect()
}

#[test]
fn network_none_reaches_no_server_of_the_host() {
    require_env!();
    // A server of the test's on every address of the host.
    let server = TcpListener::bind("0.0.0.0:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let port = server.local_addr().unwrap().port();
    let mut addresses = vec!["127.0.0.1".to_owned()];
    addresses.extend(host_addresses());
    let img = script_image(
        "netnone",
        &format!(
            "echo \"interfaces: $(ls /sys/class/net | tr '\\n' ' ')\"\n\
             echo \"routes: $(tail -n +2 /proc/net/route | wc -l)\"\n\
             for ip in {}; do echo hostile | nc -w 2 $ip {port} 2>&1; echo \"nc $ip: $?\"; done",
            addresses.join(" ")
        ),
    );
    let b = Berth::new();
    let end = run(
        &b,
        &job(&img.reference, json!({"network": "none"}), json!({})),
    );
    assert_success(&end);
    assert_eq!(said(&end.output, "interfaces: "), "lo ");
    assert_eq!(said(&end.output, "routes: "), "0");
    assert_said(
        &end.output,
        "nc: can't connect to remote host (127.0.0.1): Connection refused",
    );
    for ip in &addresses[1..] {
        assert_said(
            &end.output,
            &format!("nc: can't connect to remote host ({ip}): Network is unreachable"),
        );
    }
    for ip in &addresses {
        assert_eq!(said(&end.output, &format!("nc {ip}: ")), "1");
    }
    match server.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the server was reached: {other:?}"),
    }

    // The same component on the host's network does reach it: the test can tell. (nc
    // leaves when the server closes the connection.)
    let live = Live::start(
        &b,
        &job(&img.reference, json!({"network": "host"}), json!({})),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match server.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no connection with the host's network: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    let mut got = String::new();
    BufReader::new(&mut conn).read_line(&mut got).unwrap();
    assert_eq!(got, "hostile\n");
    drop(conn);
    server.set_nonblocking(false).unwrap();
    // The rest of the host's addresses: accept and close each.
    for _ in 1..addresses.len() {
        drop(server.accept().unwrap());
    }
    let end = live.finish();
    assert_success(&end);
    assert_eq!(said(&end.output, "nc 127.0.0.1: "), "0");
    b.assert_clean(&[]);
}

// ---------------------------------------------------------------------------------------
// 4. Files and mounts

#[test]
fn no_path_inside_leads_to_the_hosts_files() {
    require_env!();
    let b = Berth::new();
    let canary_dir = tempfile::tempdir().unwrap();
    let t = token();
    fs::write(
        canary_dir.path().join(format!("canary-{t}")),
        format!("secret-{t}"),
    )
    .unwrap();
    let (home, cache, canary) = (
        b.home().display().to_string(),
        b.cache().display().to_string(),
        canary_dir.path().display().to_string(),
    );
    // The secret is spelled in two halves, so the script does not contain it.
    let img = script_image(
        "hostfiles",
        &format!(
            "t1=secret-; t2={t}\n\
             echo \"hostname: $(hostname)\"\ncat /etc/hostname 2>&1\n\
             for p in {home} {cache} {canary} /proc/1/root{canary} /proc/self/root{home}; do \
             ls -d $p 2>&1; done\n\
             [ \"$(ls /proc/1/root)\" = \"$(ls /)\" ] && echo '/proc/1/root: the container root'\n\
             for d in /*; do case $d in /proc|/sys|/dev) ;; *) \
             grep -rsl \"$t1$t2\" $d | sed 's/^/content found in /';; esac; done\n\
             find / \\( -path /proc -o -path /sys \\) -prune -o -name \"canary-$t2\" -print \
             | sed 's/^/name found at /'\n\
             grep -c \"$t2\" /proc/self/mountinfo | sed 's/^/token in mountinfo: /'\n\
             sed 's/^/mountinfo: /' /proc/self/mountinfo\necho searched"
        ),
    );
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    let out = &end.output;
    assert_said(out, "searched");
    assert_eq!(said(out, "hostname: "), "acme-test");
    assert_said(
        out,
        "cat: can't open '/etc/hostname': No such file or directory",
    );
    for p in [
        home.clone(),
        cache.clone(),
        canary.clone(),
        format!("/proc/1/root{canary}"),
        format!("/proc/self/root{home}"),
    ] {
        assert_said(out, &format!("ls: {p}: No such file or directory"));
    }
    assert_said(out, "/proc/1/root: the container root");
    assert!(reported(out, "content found in ").is_empty(), "{out}");
    assert!(reported(out, "name found at ").is_empty(), "{out}");
    assert_eq!(said(out, "token in mountinfo: "), "0");
    // The kernel names the sources of the container's mounts (as under Docker): they are
    // berth's own folders, none of them reachable (above), and nothing else of the host's.
    let mounts = reported(out, "mountinfo: ");
    assert!(mounts.len() > 5, "{out}");
    for m in mounts {
        for path in m.split([' ', ',', '=']).filter(|w| w.starts_with("/tmp/")) {
            assert!(
                path.starts_with(&home) || path.starts_with(&cache),
                "a host path outside berth's folders: {m}"
            );
        }
    }
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn mounting_and_unmounting_are_refused_and_the_job_goes_on() {
    require_env!();
    let img = script_image(
        "mounts",
        "mkdir -p /mnt/a /mnt/b\n\
         mount -t tmpfs none /mnt/a 2>&1; echo \"mount tmpfs: $?\"\n\
         mount --bind /data /mnt/b 2>&1; echo \"mount --bind: $?\"\n\
         mount -t proc proc /mnt/b 2>&1; echo \"mount proc: $?\"\n\
         mount -o remount,rw /proc/sys 2>&1; echo \"remount: $?\"\n\
         umount /data 2>&1; echo \"umount /data: $?\"\n\
         umount -l /tmp 2>&1; echo \"umount -l /tmp: $?\"\n\
         grep -c ' /mnt/' /proc/self/mountinfo | sed 's/^/mounts under mnt: /'\n\
         cat /data/config.json > /dev/null && echo 'data: still there'",
    );
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    let out = &end.output;
    for what in ["mount tmpfs", "mount --bind", "mount proc", "remount"] {
        assert_eq!(said(out, &format!("{what}: ")), "1");
    }
    assert_eq!(
        reported(out, "mount: permission denied (are you root?)").len(),
        4,
        "{out}"
    );
    assert_said(out, "umount: can't unmount /data: Operation not permitted");
    assert_said(out, "umount: can't unmount /tmp: Operation not permitted");
    assert_eq!(said(out, "umount /data: "), "1");
    assert_eq!(said(out, "umount -l /tmp: "), "1");
    assert_eq!(said(out, "mounts under mnt: "), "0");
    assert_said(out, "data: still there");
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn loading_or_removing_a_kernel_module_is_refused() {
    require_env!();
    // Any file will do: the call is refused before the kernel reads it ("Operation not
    // permitted", not "Exec format error" nor, on a kernel without modules, ENOSYS).
    let img = script_image(
        "modules",
        "printf 'not a module' > /tmp/evil.ko\n\
         insmod /tmp/evil.ko 2>&1; echo \"insmod exit: $?\"\n\
         k=$(uname -r); mkdir -p /lib/modules/$k && cp /tmp/evil.ko /lib/modules/$k/ && \
         echo 'evil.ko:' > /lib/modules/$k/modules.dep\n\
         modprobe evil 2>&1; echo \"modprobe exit: $?\"\n\
         rmmod evil 2>&1; echo \"rmmod exit: $?\"",
    );
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    let out = &end.output;
    assert_said(
        out,
        "insmod: can't insert '/tmp/evil.ko': Operation not permitted",
    );
    assert_said(
        out,
        "modprobe: can't load module evil (evil.ko): Operation not permitted",
    );
    assert_said(
        out,
        "rmmod: can't unload module 'evil': Operation not permitted",
    );
    for tool in ["insmod", "modprobe", "rmmod"] {
        assert_eq!(said(out, &format!("{tool} exit: ")), "1");
    }
    let modules = fs::read_to_string("/proc/modules").unwrap_or_default();
    assert!(!modules.lines().any(|l| l.starts_with("evil ")));
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn system_calls_through_32_bit_entry_points_kill_the_caller() {
    require_env!();
    let Some(probe) = probe() else { return };
    let img = probe_image("entries", "/probe entries", probe);
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    // SIGSYS: the filter knows x86_64 alone, and kills whatever comes in another way.
    assert_eq!(
        said(&end.output, "int80: "),
        "killed by signal 31",
        "{}",
        end.output
    );
    assert_eq!(
        said(&end.output, "x32: "),
        "killed by signal 31",
        "{}",
        end.output
    );
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn keyrings_and_the_kernel_log_are_refused() {
    require_env!();
    let Some(probe) = probe() else { return };
    // The kernel's keyrings are not namespaced (a key a component adds lives in the host's
    // kernel), nor is its log. podman's profile allows keyctl and syslog; berth refuses
    // them, as Docker's profile does, with EPERM.
    let img = probe_image("keys", "/probe keys", probe);
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    for call in [
        "keyctl",
        "add_key",
        "request_key",
        "syslog size",
        "syslog read",
    ] {
        assert_eq!(
            said(&end.output, &format!("{call}: ")),
            "Operation not permitted",
            "{}",
            end.output
        );
    }
    b.assert_clean(&[&job_id(&end.result)]);
}

// ---------------------------------------------------------------------------------------
// 5. Namespaces

#[test]
fn a_component_that_opts_out_of_seccomp_is_unconfined_and_the_result_says_so() {
    require_env!();
    let img = script_image(
        "unconfined",
        "unshare -U true 2>&1; echo \"unshare -U: $?\"",
    );
    let b = Berth::new();
    let confined = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&confined);
    assert_eq!(said(&confined.output, "unshare -U: "), "1");
    assert!(
        confined.result["cage"].get("seccomp").is_none(),
        "{}",
        confined.result
    );
    let open = run(
        &b,
        &job(&img.reference, json!({"seccomp": "unconfined"}), json!({})),
    );
    assert_success(&open);
    assert_eq!(said(&open.output, "unshare -U: "), "0", "{}", open.output);
    assert_eq!(open.result["cage"]["seccomp"], "unconfined");
    b.assert_clean(&[&job_id(&confined.result), &job_id(&open.result)]);
}

#[test]
fn no_namespace_can_be_created_and_processes_and_threads_still_work() {
    require_env!();
    let Some(probe) = probe() else { return };
    let img = probe_image(
        "unshare",
        "for a in '-U' '-r' '-U -m' '-U -n' '-m' '-n' '-p -f' '-i' '-u'; do \
         unshare $a true 2>&1; echo \"unshare $a: $?\"; done\n\
         unshare -r sh -c 'id -u; mkdir -p /mnt/x; mount -t tmpfs none /mnt/x && echo MOUNTED' 2>&1\n\
         echo \"pipeline: $(echo a b c | tr ' ' '\\n' | grep -c .)\"\n\
         (sleep 0.1; echo 'background: done') & wait\n\
         /probe namespaces",
        probe,
    );
    let b = Berth::new();
    let end = run(&b, &job(&img.reference, json!({}), json!({})));
    assert_success(&end);
    let out = &end.output;
    for (args, flags) in [
        ("-U", "0x10000000"),
        ("-r", "0x10000000"),
        ("-U -m", "0x10020000"),
        ("-U -n", "0x50000000"),
        ("-m", "0x20000"),
        ("-n", "0x40000000"),
        ("-p -f", "0x20000000"),
        ("-i", "0x8000000"),
        ("-u", "0x4000000"),
    ] {
        assert_eq!(said(out, &format!("unshare {args}: ")), "1", "{out}");
        assert_said(
            out,
            &format!("unshare: unshare({flags}): Operation not permitted"),
        );
    }
    assert!(!out.contains("MOUNTED"), "{out}");
    // Ordinary processes and threads: forks, pipelines, background jobs, and the C
    // library's threads (clone3 first, then clone when clone3 answers ENOSYS).
    assert_eq!(said(out, "pipeline: "), "3");
    assert_said(out, "background: done");
    for (what, answer) in [
        ("thread", "ok"),
        ("fork", "ok"),
        ("clone3", "Function not implemented"),
        ("clone newuser", "Operation not permitted"),
        ("clone newnet", "Operation not permitted"),
        ("unshare newuser", "Operation not permitted"),
        ("unshare newtime", "Operation not permitted"),
        ("unshare files", "ok"),
    ] {
        assert_eq!(said(out, &format!("{what}: ")), answer, "{out}");
    }
    b.assert_clean(&[&job_id(&end.result)]);
}

// ---------------------------------------------------------------------------------------
// 6. The cached root filesystem

#[test]
fn a_component_that_rewrites_its_root_leaves_the_next_job_the_original() {
    require_env!();
    // One image, two jobs: the first attacks (a trojan busybox, which the next job's
    // /bin/sh would run were the cache changed), the second looks.
    let img = script_image(
        "trojan",
        "if grep -q attack /data/config.json; then\n\
         rm /etc/passwd; echo \"rm passwd: $?\"\n\
         echo planted > /new; echo \"write /new: $?\"\n\
         cp /bin/busybox /tmp/busybox && /tmp/busybox rm /bin/busybox && \
         printf '#!/tmp/busybox sh\\necho TROJAN\\n' > /bin/busybox; echo \"rewrite busybox: $?\"\n\
         read first < /bin/busybox; echo \"busybox now: $first\"\n\
         else\n\
         echo \"busybox: $(sha256sum /bin/busybox | cut -d ' ' -f 1)\"\n\
         echo \"passwd: $(head -n 1 /etc/passwd)\"\n\
         [ -e /new ] && echo 'new: there' || echo 'new: absent'\n\
         fi",
    );
    let b = Berth::new();
    let pull = b.cmd().args(["pull", &img.reference]).output().unwrap();
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    // Every layer directory of the store, which jobs must never change.
    let layers = b.cache().join("layers");
    let root = &layers;
    assert!(
        fs::read_dir(root).unwrap().count() >= 2,
        "expected the image's layers"
    );
    let before = describe_tree(root);

    let attack = run(
        &b,
        &job(&img.reference, json!({}), json!({"mode": "attack"})),
    );
    assert_success(&attack);
    for step in ["rm passwd", "write /new", "rewrite busybox"] {
        assert_eq!(
            said(&attack.output, &format!("{step}: ")),
            "0",
            "{}",
            attack.output
        );
    }
    assert_eq!(said(&attack.output, "busybox now: "), "#!/tmp/busybox sh");
    assert_eq!(describe_tree(root), before, "the cached rootfs changed");

    let look = run(&b, &job(&img.reference, json!({}), json!({"mode": "look"})));
    assert_success(&look);
    let busybox = sha256(&fs::read("/bin/busybox").unwrap());
    assert_eq!(said(&look.output, "busybox: "), busybox);
    assert_eq!(
        said(&look.output, "passwd: "),
        "root:x:0:0:root:/root:/bin/sh"
    );
    assert_eq!(said(&look.output, "new: "), "absent");
    assert!(!look.output.contains("TROJAN"));
    assert_eq!(describe_tree(root), before, "the cached rootfs changed");
    b.assert_clean(&[&job_id(&attack.result), &job_id(&look.result)]);
}

// ---------------------------------------------------------------------------------------
// 7. Set-user-id files

#[test]
fn a_setuid_root_file_planted_in_tmp_or_data_gives_nothing() {
    require_env!();
    let Some(probe) = probe() else { return };
    // The component plants a set-user-id root copy of a program that prints its effective
    // uid, opens the way to it, and tries it as an ordinary user inside.
    let img = probe_image(
        "setuid",
        &format!(
            "chmod 755 /data /data/out /data/out/files && chmod 1777 /tmp\n\
             for f in /tmp/suid /data/out/files/suid; do cp /probe $f && chmod 4755 $f; done\n\
             ls -ln /tmp/suid /data/out/files/suid | cut -c 1-10 | sed 's/^/mode: /'\n\
             su app -c '/tmp/suid euid' | sed 's/^/tmp as app: /'\n\
             su app -c '/data/out/files/suid euid' | sed 's/^/data as app: /'\n\
             echo READY\n{WAIT_FOR_GO}"
        ),
        probe,
    );
    let b = Berth::new();
    // The temporary directory is private already; open it so only berth's own modes count.
    fs::set_permissions(
        b.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut live = Live::start(&b, &job(&img.reference, json!({}), json!({})));
    live.wait_for("READY");
    let job_dir = b.job_dir();
    let planted = [
        job_dir.join("0/box/tmp/suid"),
        Berth::data_dir(&job_dir, 0).join("out/files/suid"),
    ];
    for p in &planted {
        let m = fs::metadata(p).unwrap();
        // Set-user-id, and owned by the container's root — who is nobody on the host.
        assert_eq!(m.mode() & 0o7777, 0o4755, "{}", p.display());
        assert_ne!(m.uid(), 0, "{} is host root's", p.display());
        for script in [
            format!("{} euid", p.display()),
            format!("ls {}", p.parent().unwrap().display()),
            format!("cat {} > /dev/null", p.display()),
        ] {
            let (ok, stdout, stderr) = as_nobody(&script);
            assert!(!ok, "nobody could {script}: {stdout}");
            assert!(stderr.contains("Permission denied"), "{script}: {stderr}");
        }
    }
    go(&b);
    let end = live.finish();
    assert_success(&end);
    assert_eq!(reported(&end.output, "mode: "), ["-rwsr-xr-x"; 2]);
    // nosuid mounts and no_new_privileges: the set-user-id bit is ignored.
    assert_eq!(said(&end.output, "tmp as app: "), "euid: 1000");
    assert_eq!(said(&end.output, "data as app: "), "euid: 1000");
    b.assert_clean(&[&job_id(&end.result)]);
}

#[test]
fn kept_outputs_lose_set_id_bits() {
    require_env!();
    let Some(probe) = probe() else { return };
    let img = probe_image(
        "keepsuid",
        "cp /probe /data/out/files/helper && chmod 6755 /data/out/files/helper && echo planted",
        probe,
    );
    let b = Berth::new();
    // The operator's outputs folder, readable by everyone as such folders often are.
    let shared = tempfile::tempdir().unwrap();
    let kept = shared.path().join("kept");
    fs::create_dir_all(kept.join("files")).unwrap();
    for d in [shared.path(), &kept, &kept.join("files")] {
        fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "run",
        "--json",
        "--keep-outputs",
        kept.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let helper = kept.join("files/helper");
    assert_eq!(fs::read(&helper).unwrap(), probe, "the output was not kept");
    let mode = fs::metadata(&helper).unwrap().mode() & 0o7777;
    assert_eq!(mode & 0o6000, 0, "kept with mode {mode:o}");
    // What that would give: an ordinary user of the host running as root.
    let (ok, stdout, stderr) = as_nobody(&format!("{} euid", helper.display()));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "euid: 65534\n");
    b.assert_clean(&[&job_id(&r.json())]);
}
