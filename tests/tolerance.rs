//! The original runner's tolerance and defaults (issue 18), item by item, with real
//! containers: what a configuration written for Keboola means here.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use common::*;
use serde_json::json;

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

#[test]
fn memory_256m_is_256_mib_as_docker_reads_it() {
    require_env!();
    // The container reads its own limit (its cgroup namespace shows its own cgroup).
    let img = script_image(
        "mem",
        "echo \"LIMIT $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
         || cat /sys/fs/cgroup/memory.max)\"",
    );
    let b = Berth::new();
    for (memory, bytes) in [("256m", 268_435_456u64), ("1.5g", 1_610_612_736)] {
        let r = b.run_job(&job(&img.reference, json!({"memory": memory}), json!({})));
        assert_eq!(r.status, 0, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("LIMIT {bytes}\n")),
            "{memory}: {}",
            r.stderr
        );
    }
    b.assert_clean(&[]);
}
