//! What an operator reaches for around running jobs, end to end with real containers:
//! `berth ps` and `berth kill` from a second berth, the usage numbers of the result and the
//! job record, and `--log-format json`.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A component that leaves a table in `out/`, says it is ready, and sleeps.
fn sleeper(b: &Berth) -> (BuiltImage, std::path::PathBuf) {
    let img = push(
        &ImageSpec::script(
            "printf 'id\\n1\\n' > /data/out/tables/left.csv; echo ready; exec sleep 600",
        ),
        &unique_repo("sleeper"),
        "1.0",
    );
    let path = b.write_job(&job(&img.reference, json!({"network": "none"}), json!({})));
    (img, path)
}

/// Starts the sleeper under `b` and waits for it to be ready.
fn start_sleeper(b: &Berth, path: &std::path::Path) -> std::process::Child {
    let (child, mut lines) = b.spawn_run(path);
    let ready = lines.find(|l| l.as_deref().is_ok_and(|l| l == "ready"));
    assert!(ready.is_some(), "the sleeper never said it was ready");
    // Its stdout stays open until berth ends: drained, so berth never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn ps(b: &Berth) -> Vec<Value> {
    let r = b.run_cmd(&["ps", "--json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    serde_json::from_str::<Value>(&r.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits for `child` to end, at most a minute.
fn wait_end(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "berth run did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts storage holds no table: nothing the killed job wrote was committed.
fn assert_nothing_committed(b: &Berth) {
    let tables = b.run_cmd(&["storage", "tables"]);
    assert!(
        !tables.stdout.contains("left"),
        "the killed job's table reached storage: {}",
        tables.stdout
    );
}

#[test]
fn a_running_job_is_listed_and_killed_from_a_second_berth() {
    require_env!();
    let b = Berth::new();
    let (img, path) = sleeper(&b);
    let mut child = start_sleeper(&b, &path);
    let job = b.running_job_id();

    let listed = ps(&b);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["job_id"], job.as_str());
    assert_eq!(entry["component"], "acme.test");
    assert_eq!(entry["config"], "42");
    assert_eq!(entry["row"], Value::Null);
    assert_eq!(entry["image"], img.reference.as_str());
    assert_eq!(entry["container"], b.container_id(&job, 0).as_str());
    let started: jiff::Timestamp = entry["started"].as_str().unwrap().parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(started);
    assert!(
        age >= jiff::SignedDuration::ZERO && age < jiff::SignedDuration::from_secs(300),
        "started {started}"
    );
    // The memory its container holds now: sleep and the shell's pages, at least.
    let memory = entry["memory_bytes"].as_u64().unwrap();
    assert!((4096..256_000_000).contains(&memory), "{memory}");
    if test_user().is_none() {
        // The berth that holds the job's lock is the one this test started.
        assert_eq!(entry["pid"], child.id());
        assert_eq!(entry["user"], "root");
        assert_eq!(entry["uid"], 0);
        assert_eq!(entry["rootless"], false);
    } else {
        assert_eq!(entry["rootless"], true);
    }
    let text = b.run_cmd(&["ps"]);
    let header = text.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("JOB") && header.contains("MEMORY") && header.ends_with("USER"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&job), "{}", text.stdout);

    // Killed by a prefix of its id, from another berth.
    let killed = b.run_cmd(&["kill", &job[..6]]);
    assert_eq!(killed.status, 0, "{}", killed.stderr);
    assert!(
        killed.stdout.contains(&format!("stopped job {job}")),
        "{}",
        killed.stdout
    );
    let status = wait_end(&mut child);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(ps(&b).is_empty());
    b.assert_clean(&[&job]);
    assert_nothing_committed(&b);

    // Nothing runs: a second kill says so, as a user error.
    let again = b.run_cmd(&["kill", &job]);
    assert_eq!(again.status, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains(&format!("no job {job} is running")),
        "{}",
        again.stderr
    );
}

#[test]
fn a_job_whose_berth_is_sigkilled_is_cleaned_up_by_kill() {
    require_env!();
    let b = Berth::new();
    let (_img, path) = sleeper(&b);
    let mut child = start_sleeper(&b, &path);
    let job = b.running_job_id();
    let killed = b.run_cmd(&["kill", "--signal", "KILL", &job]);
    assert_eq!(killed.status, 0, "{}", killed.stderr);
    let status = wait_end(&mut child);
    // A rootless berth's outer process reports its inner one's SIGKILL as 137.
    assert!(
        status.signal() == Some(9) || status.code() == Some(137),
        "{status:?}"
    );
    // What the dead berth left — its container, cgroups and job folder — is gone too.
    b.assert_clean(&[&job]);
    assert_nothing_committed(&b);
}

#[test]
fn the_result_and_the_job_record_carry_what_the_cgroup_measured() {
    require_env!();
    let img = push(
        &ImageSpec::script(
            "dd if=/dev/zero of=/dev/null bs=50M count=1 2>/dev/null
i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done
head -c 12345 /dev/zero > /data/out/files/blob.bin",
        ),
        &unique_repo("usage"),
        "1.0",
    );
    let b = Berth::new();
    let r = b.run_job(&job(
        &img.reference,
        json!({"memory": "256m", "network": "none"}),
        json!({}),
    ));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let result = r.json();
    let usage = &result["usage"];
    // dd's one 50 MiB buffer, filled from /dev/zero.
    let peak = usage["peak_memory_bytes"].as_u64().unwrap();
    assert!(peak >= 50 << 20, "peak memory {peak}");
    assert!(peak < 256_000_000, "peak memory {peak}");
    let user = usage["cpu_user_seconds"].as_f64().unwrap();
    assert!(user > 0.0, "{usage}");
    assert!(
        usage["cpu_system_seconds"].as_f64().unwrap() >= 0.0,
        "{usage}"
    );
    // The shell and dd (or head) at once, at least.
    let pids = usage["peak_pids"].as_u64().unwrap();
    assert!((2..=100).contains(&pids), "peak pids {pids}");
    assert_eq!(usage["out_bytes"], 12345);
    let stage = &result["image"]["stages"][0]["usage"];
    assert_eq!(stage, usage, "one image: the stage's usage is the job's");

    // The job record in storage keeps the same numbers.
    let db = rusqlite::Connection::open(b.home().join("storage/project.sqlite")).unwrap();
    let stored: String = db
        .query_row(
            "SELECT result FROM jobs WHERE id = ?1",
            [job_id(&result)],
            |row| row.get(0),
        )
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(&stored["usage"], usage);
}

#[test]
fn json_log_lines_parse_and_name_the_job() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo to-stdout; echo to-stderr >&2"),
        &unique_repo("logs"),
        "1.0",
    );
    let b = Berth::new();
    let path = b.write_job(&job(&img.reference, json!({"network": "none"}), json!({})));
    let out = b
        .cmd()
        .args(["--log-format", "json", "-v", "run", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let id = job_id(&r.json());
    let mut lines = Vec::new();
    for line in r.stderr.lines() {
        let line: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{}", r.stderr));
        assert_eq!(line["job_id"], id.as_str(), "{line}");
        assert!(
            line["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert!(
            line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
        lines.push(line);
    }
    // From the first line (the sweep before the job) to the last, and the component's own
    // output: its stdout (on stderr with --json) and its stderr (a warning).
    assert!(lines.len() > 3, "{}", r.stderr);
    let said = |text: &str| lines.iter().any(|l| l["message"].as_str() == Some(text));
    assert!(said("to-stdout"), "{}", r.stderr);
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("to-stderr"))),
        "{}",
        r.stderr
    );
    let stdout_line = lines.iter().find(|l| l["message"] == "to-stdout").unwrap();
    assert_eq!(stdout_line["stream"], "stdout");

    // A run that fails before anything is pulled names its job as well.
    let bad =
        b.write_job(&json!({"component": {"id": "acme.x", "image": "127.0.0.1:1/no/such:1"}}));
    let out = b
        .cmd()
        .args(["--log-format", "json", "run"])
        .arg(&bad)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.status, 3, "{}", r.stderr);
    let ids: Vec<Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["job_id"].clone())
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|i| i == &ids[0] && i.is_string()), "{ids:?}");
    // berth's own report of the failure is such a line too.
    let last: Value = serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    let message = last["message"].as_str().unwrap();
    assert!(message.starts_with("berth: berth error: "), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
}

#[test]
fn completions_load_in_bash_and_man_pages_render() {
    let berth = env!("CARGO_BIN_EXE_berth");
    let script = format!("source <({berth} completions bash) && complete -p berth");
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("complete") && said.trim_end().ends_with(" berth"),
        "{said}"
    );
    // The generated function completes subcommands.
    let script = format!(
        "source <({berth} completions bash); COMP_WORDS=(berth ki); COMP_CWORD=1; \
         _berth berth ki berth; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kill");
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(berth)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth)
        .arg("man")
        .arg(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "berth.1",
        "berth-run.1",
        "berth-kill.1",
        "berth-storage-import.1",
    ] {
        assert!(dir.path().join(page).is_file(), "no {page}");
    }
    // `man -l` renders them: the kill page names its option and says what it does.
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.path().join("berth-kill.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (apt-get install man-db)");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        page.contains("berth-kill") && page.contains("--signal"),
        "{page}"
    );
    assert!(page.contains("Stop a running job"), "{page}");
    let berth_1 = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.path().join("berth.1"))
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&berth_1.stdout);
    assert!(
        page.contains("berth-ps(1)") || page.contains("ps"),
        "{page}"
    );
    // Generating them made no home.
    assert!(!dir.path().join(".local").exists());
}

#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--version")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let expected = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = if expected.is_empty() {
        "unknown".to_owned()
    } else {
        expected
    };
    assert_eq!(
        said.trim(),
        format!("berth {} ({commit})", env!("CARGO_PKG_VERSION"))
    );
}
