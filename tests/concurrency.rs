//! Many berths on one home at once: each sweeps what dead berths left when it starts, and
//! none may take another's job — its container, cgroups, bundle or directory — for a dead
//! one's. A load test: rounds of jobs started together, every one must succeed and the
//! table they all append to must hold every row.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;

/// Jobs running at once (the issue's `xargs -P 16`).
const JOBS: usize = 16;
/// Jobs each worker runs, one after another.
const ROUNDS: usize = 6;

#[test]
fn sixteen_concurrent_jobs_on_one_home_all_succeed() {
    require_env!();
    let b = Berth::new();
    // Each job appends its own row, named by its parameters, to one table.
    let img = push(
        &ImageSpec::script(
            r#"n=$(sed -n 's/.*"n": *"\([a-z0-9-]*\)".*/\1/p' /data/config.json)
printf "n\n$n\n" > /data/out/tables/t.csv
echo '{"destination": "out.c-load.t", "incremental": true}' > /data/out/tables/t.csv.manifest
echo "done $n""#,
        ),
        &unique_repo("load"),
        "1.0",
    );
    let pulled = b.run_cmd(&["pull", &img.reference]);
    assert_eq!(pulled.status, 0, "{}", pulled.stderr);

    // Sixteen workers, each running its jobs one after another (as `xargs -P 16 berth run`
    // over a list of jobs): berths start, and sweep, while others create their containers.
    let outcomes: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..JOBS)
            .map(|worker| {
                let (b, img) = (&b, &img);
                s.spawn(move || {
                    (0..ROUNDS)
                        .map(|round| run_one(b, &img.reference, &format!("w{worker}-r{round}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let expected: BTreeSet<String> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n.clone())
        .collect();
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} jobs failed:\n{}",
        failures.len(),
        JOBS * ROUNDS,
        failures.join("\n")
    );
    let export = b.run_cmd(&["storage", "export", "out.c-load.t"]);
    assert_eq!(export.status, 0, "{}", export.stderr);
    let rows: BTreeSet<String> = export.stdout.lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows, expected, "the table lacks rows of successful jobs");
    assert_eq!(export.stdout.lines().count(), JOBS * ROUNDS + 1);
    b.assert_clean(&[]);
}

/// Runs one job appending the row `n`; its failure is the exit status and message.
fn run_one(b: &Berth, image: &str, n: &str) -> (String, Result<(), String>) {
    // A configuration of its own: overlapping runs of one configuration that change its
    // state are a conflict by design (tests/store_conformance.rs), not what this tests.
    let mut j = job(image, json!({}), json!({"n": n}));
    j["config_id"] = json!(n);
    let path = b.write_job(&j);
    let r = b.run_cmd(&["run", "--json", path.to_str().unwrap()]);
    // No berth died: a sweep that removed anything took a live job for a dead one.
    if let Some(swept) = r
        .stderr
        .lines()
        .find(|l| l.contains("leftovers") || l.contains("gc:"))
    {
        let status = r.status;
        return (
            n.to_owned(),
            Err(format!("exit {status}, its sweep: {swept}")),
        );
    }
    if r.status == 0 {
        return (n.to_owned(), Ok(()));
    }
    let message = serde_json::from_str::<serde_json::Value>(&r.stdout)
        .map(|j| j["message"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|_| r.stdout.clone());
    (n.to_owned(), Err(format!("exit {}: {message}", r.status)))
}
