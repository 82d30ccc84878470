//! A closed stdout or stderr is not berth's failure: `berth run job.json 2>&1 | head -1`
//! must finish the job, commit its outputs and exit with the job's status; a listing piped
//! into `head` just stops. (A `println!` to a closed pipe panics: exit 101.)

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

/// Runs berth with stdout and stderr on one pipe, reads its first line, closes the pipe,
/// and returns berth's exit status.
fn first_line_then_close(b: &Berth, args: &[&str]) -> (String, i32) {
    let mut inner = b.cmd();
    inner.args(args);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" \"$@\" 2>&1")
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdout(Stdio::piped());
    // The environment the test's berth gets (its own registries.conf, alias cache, …).
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    drop(lines);
    let status = child.wait().unwrap();
    (first, status.code().unwrap_or(-1))
}

#[test]
fn a_listing_into_a_closed_pipe_just_stops() {
    let b = Berth::new();
    // Enough tables that the JSON listing cannot fit in the pipe's buffer.
    let columns: Vec<String> = (0..40).map(|i| format!("column_number_{i}")).collect();
    let csv = format!("{}\n", columns.join(","));
    let path = b.dir.path().join("wide.csv");
    std::fs::write(&path, csv).unwrap();
    for n in 0..60 {
        let table = format!("in.c-wide.t{n}");
        let r = b.run_cmd(&["storage", "import", &table, path.to_str().unwrap()]);
        assert_eq!(r.status, 0, "{}", r.stderr);
    }
    let full = b.run_cmd(&["storage", "tables", "--json"]);
    assert!(full.stdout.len() > 80 << 10, "{} bytes", full.stdout.len());
    let (first, status) = first_line_then_close(&b, &["storage", "tables", "--json"]);
    assert_eq!(first, "[");
    assert_eq!(status, 0);
}

#[test]
fn a_job_whose_output_pipe_closes_finishes_and_commits() {
    require_env!();
    let script = r#"i=0
while [ $i -lt 3000 ]; do echo "line $i of a component that talks a lot"; i=$((i+1)); done
printf 'a\n1\n' > /data/out/tables/talk.csv
echo "done" >&2"#;
    let image = push(&ImageSpec::script(script), &unique_repo("talk"), "1");
    let b = Berth::new();
    let mut j = job(&image.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"default_bucket": "out.c-talk"}});
    let path = b.write_job(&j);
    let (first, status) = first_line_then_close(&b, &["run", path.to_str().unwrap()]);
    assert!(!first.is_empty());
    assert_eq!(status, 0, "berth must exit with the job's status");
    let exported = b.run_cmd(&["storage", "export", "out.c-talk.talk"]);
    assert_eq!(exported.status, 0, "{}", exported.stderr);
    assert_eq!(exported.stdout, "a\n1\n");
}
