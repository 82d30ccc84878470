//! Debug mode end to end (contract §13): `berth run --mode debug` stores the data folder
//! before the image (`stage_0.zip`) and at the end (`stage_output.zip`) as storage files
//! tagged `debug`, the component id and the job id, secrets shown as `[hidden]` inside; it
//! maps no outputs and saves no state; and nothing a hostile container links to gets in.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "debug-password-4711";
const STATE_SECRET: &str = "state-token-0815";
const CSV: &str = "id,name\n1,ann\n2,bob\n";

/// Reads the password, says which mode it runs in, and writes a table, files (one of them
/// binary, both holding the password) and a state with a secret.
const SCRIPT: &str = r##"pw=$(sed -n 's/.*"#password": *"\([^"]*\)".*/\1/p' /data/config.json)
echo "MODE $KBC_COMPONENT_RUN_MODE" >&2
echo "HASH $(printf %s "$pw" | sha256sum | cut -d' ' -f1)" >&2
printf 'id,total\n1,10\n' > /data/out/tables/result.csv
echo "password is $pw" > /data/out/files/report.txt
printf '\377\376%s\377\000' "$pw" > /data/out/files/blob.bin
mkdir -p /data/in/user/nested/empty
printf '{"#token": "%s", "n": 1}' state-token-0815 > /data/out/state.json"##;

fn text(entries: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    let bytes = entries
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", entries.keys()));
    String::from_utf8_lossy(bytes).into_owned()
}

fn stored_files(b: &Berth, tag: &str) -> Vec<Value> {
    let r = b.run_cmd(&["storage", "files", "--json", "--tag", tag]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    serde_json::from_str::<Vec<Value>>(&r.stdout).unwrap()
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for s in [PASSWORD, STATE_SECRET] {
        assert!(!text.contains(s), "{what} shows {s}:\n{text}");
    }
}

#[test]
fn a_debug_run_stores_masked_archives_of_its_data_folder_and_changes_nothing() {
    require_env!();
    let b = Berth::new();
    let csv = b.dir.path().join("orders.csv");
    std::fs::write(&csv, CSV).unwrap();
    let r = b.run_cmd(&[
        "storage",
        "import",
        "in.c-main.orders",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let img = push(&ImageSpec::script(SCRIPT), &unique_repo("debug"), "1");
    let params = encrypted(
        &b,
        &["--component", "acme.test"],
        json!({"#password": PASSWORD, "user": "me"}),
    );
    let mut j = job(&img.reference, json!({}), params);
    j["configuration"]["storage"] = json!({
        "input": {"tables": [{"source": "in.c-main.orders", "destination": "orders.csv"}]},
        "output": {"default_bucket": "out.c-debug"}
    });
    let path = b.write_job(&j);
    let tables_before = b.run_cmd(&["storage", "tables", "--json"]).stdout;
    let state_before = b.run_cmd(&["state", "show", "acme.test", "42", "--all"]);

    let r = b.run_cmd(&["run", "--json", "--mode", "debug", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("MODE debug"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("HASH {}", sha256(PASSWORD.as_bytes()))),
        "the component sees the plain password: {}",
        r.stderr
    );
    let result = r.json();
    assert_eq!(result["status"], "success");
    assert_eq!(result["outputs"]["tables"], json!([]));
    assert_eq!(result["outputs"]["files"], json!([]));
    let debug_files: Vec<u64> = result["outputs"]["debug_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(debug_files.len(), 2, "{result}");
    assert_no_secret("the output", format!("{}{}", r.stdout, r.stderr).as_bytes());

    // No table, file or state changed: only the two archives were stored.
    assert_eq!(
        b.run_cmd(&["storage", "tables", "--json"]).stdout,
        tables_before
    );
    let state_after = b.run_cmd(&["state", "show", "acme.test", "42", "--all"]);
    assert_eq!(
        (state_after.status, state_after.stdout),
        (state_before.status, state_before.stdout)
    );
    let all = stored_files(&b, "debug");
    assert_eq!(all.len(), 2, "{all:?}");
    let job_tag = format!("jobId:{}", job_id(&result));
    for f in &all {
        let tags: Vec<&str> = f["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for want in ["debug", "acme.test", job_tag.as_str()] {
            assert!(tags.contains(&want), "{f}");
        }
        assert!(debug_files.contains(&f["id"].as_u64().unwrap()), "{f}");
    }
    let name_of = |id: u64| {
        all.iter()
            .find(|f| f["id"].as_u64() == Some(id))
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(name_of(debug_files[0]), "stage_0.zip");
    assert_eq!(name_of(debug_files[1]), "stage_output.zip");

    // Before the image: what the component was given, its secrets hidden.
    let (stage0, _) = b.unzip(debug_files[0]);
    for (name, content) in &stage0 {
        assert_no_secret(name, content);
    }
    let config: Value = serde_json::from_str(&text(&stage0, "config.json")).unwrap();
    assert_eq!(config["parameters"]["#password"], "[hidden]");
    assert_eq!(config["parameters"]["user"], "me");
    assert_eq!(config["action"], "run");
    assert_eq!(text(&stage0, "in/tables/orders.csv"), CSV);
    let manifest: Value =
        serde_json::from_str(&text(&stage0, "in/tables/orders.csv.manifest")).unwrap();
    assert_eq!(manifest["id"], "in.c-main.orders");
    assert_eq!(text(&stage0, "in/state.json").trim(), "{}");
    for d in ["in/files/", "in/user/", "out/tables/", "out/files/"] {
        assert!(stage0.contains_key(d), "{d} missing: {:?}", stage0.keys());
    }
    assert!(
        !stage0
            .keys()
            .any(|k| k.starts_with("out/") && !k.ends_with('/')),
        "{:?}",
        stage0.keys()
    );

    // At the end: what it wrote, its secrets (also the new state's) hidden.
    let (output, _) = b.unzip(debug_files[1]);
    for (name, content) in &output {
        assert_no_secret(name, content);
    }
    assert_eq!(text(&output, "out/tables/result.csv"), "id,total\n1,10\n");
    assert_eq!(
        text(&output, "out/files/report.txt"),
        "password is [hidden]\n"
    );
    let mut blob = b"\xff\xfe".to_vec();
    blob.extend_from_slice(b"[hidden]\xff\0");
    assert_eq!(output["out/files/blob.bin"], blob);
    assert!(output.contains_key("in/user/nested/empty/"));
    let state: Value = serde_json::from_str(&text(&output, "out/state.json")).unwrap();
    assert_eq!(state, json!({"#token": "[hidden]", "n": 1}));
    assert_eq!(text(&output, "in/tables/orders.csv"), CSV);

    // The text report names the archives.
    let r = b.run_cmd(&["run", "--mode", "debug", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("debug archives stored as files "),
        "{}",
        r.stderr
    );
    assert_eq!(stored_files(&b, "debug").len(), 4);
    // A run in run mode stores no archive, and maps what it wrote.
    let r = b.run_cmd(&["run", "--json", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("MODE run"), "{}", r.stderr);
    assert_eq!(r.json()["outputs"].get("debug_files"), None);
    assert_eq!(stored_files(&b, "debug").len(), 4);
    assert_ne!(
        b.run_cmd(&["storage", "tables", "--json"]).stdout,
        tables_before
    );
}

#[test]
fn links_a_hostile_component_leaves_are_not_archived() {
    require_env!();
    let b = Berth::new();
    let script = r#"ln -s /etc/shadow /data/out/files/shadow
ln -s /etc /data/out/tables/etc
ln -s /etc/hostname /data/out/state.json
mkfifo /data/out/files/fifo
echo fine > /data/out/files/ok.txt
echo done >&2"#;
    let img = push(&ImageSpec::script(script), &unique_repo("debug-links"), "1");
    let r = b.run_cmd(&[
        "run",
        "--json",
        "--mode",
        "debug",
        b.write_job(&job(&img.reference, json!({}), json!({})))
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("done"), "{}", r.stderr);
    let result = r.json();
    let ids = result["outputs"]["debug_files"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{result}");
    let (output, comment) = b.unzip(ids[1].as_u64().unwrap());
    assert_eq!(text(&output, "out/files/ok.txt"), "fine\n");
    for left_out in [
        "out/files/shadow",
        "out/tables/etc",
        "out/state.json",
        "out/files/fifo",
    ] {
        assert!(
            !output.keys().any(|k| k.starts_with(left_out)),
            "{left_out} archived: {:?}",
            output.keys()
        );
        assert!(comment.contains(left_out), "{comment}");
    }
    assert!(comment.contains("a symlink"), "{comment}");
    let shadow = std::fs::read("/etc/shadow").unwrap();
    let hostname = std::fs::read("/etc/hostname").unwrap();
    for (name, content) in &output {
        assert!(
            shadow.is_empty() || !content.windows(shadow.len()).any(|w| w == shadow),
            "{name} holds /etc/shadow"
        );
        assert!(
            hostname.is_empty() || content != &hostname,
            "{name} holds /etc/hostname"
        );
    }
    assert!(
        r.stderr.contains("leaves out out/files/fifo"),
        "the log names what was left out: {}",
        r.stderr
    );
}

#[test]
fn a_failed_debug_run_keeps_both_archives_and_lists_them() {
    require_env!();
    let b = Berth::new();
    let script = "echo half-done > /data/out/files/partial.txt\necho broken >&2\nexit 1";
    let img = push(&ImageSpec::script(script), &unique_repo("debug-fail"), "1");
    let r = b.run_cmd(&[
        "run",
        "--json",
        "--mode",
        "debug",
        b.write_job(&job(&img.reference, json!({}), json!({})))
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert!(
        result["message"].as_str().unwrap().contains("broken"),
        "{result}"
    );
    let ids = result["outputs"]["debug_files"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{result}");
    // What it left before it failed is there to look at.
    let (output, _) = b.unzip(ids[1].as_u64().unwrap());
    assert_eq!(text(&output, "out/files/partial.txt"), "half-done\n");
    assert_eq!(stored_files(&b, "debug").len(), 2);
}
