//! What an operator reaches for around running jobs, end to end with real containers: the
//! usage numbers of the result and the job record.

mod common;

use common::*;
use serde_json::{Value, json};

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
