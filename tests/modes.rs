//! The modes of issue 9 end to end: another tag of the image (`run --tag`), a prepared data
//! folder without a container (`sandbox`), and synchronous actions (`action`).

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]

mod common;

use common::*;
use serde_json::json;

#[test]
fn tag_option_runs_another_tag_and_the_result_names_it() {
    require_env!();
    let repo = unique_repo("tag-option");
    let one = push(&ImageSpec::script("echo version one >&2"), &repo, "1.0");
    let two = push(&ImageSpec::script("echo version two >&2"), &repo, "2.0");
    push(&ImageSpec::script("echo version three >&2"), &repo, "3.0");
    let b = Berth::new();
    // The option wins over the configuration's own runtime.image_tag.
    let mut j = job(&one.reference, json!({}), json!({}));
    j["configuration"]["runtime"] = json!({"image_tag": "3.0"});
    let path = b.write_job(&j);
    let r = b.run_cmd(&["run", "--json", "--tag", "2.0", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("version two"), "{}", r.stderr);
    assert!(!r.stderr.contains("version three"), "{}", r.stderr);
    let result = r.json();
    let reference = result["image"]["reference"].as_str().unwrap();
    assert!(reference.ends_with(&format!("{repo}:2.0")), "{reference}");
    assert_eq!(result["image"]["digest"], json!(two.digest));

    // A digest pins the image.
    let path = b.write_job(&job(&two.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "run",
        "--json",
        "--tag",
        &one.digest,
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("version one"), "{}", r.stderr);
    assert_eq!(r.json()["image"]["digest"], json!(one.digest));
}

/// Prints, one line each, what the component finds in its data folder, and leaves a state.
const DUMP: &str = r#"
echo "CONFIG $(tr -d '\n' < /data/config.json)"
echo "STATE $(tr -d '\n' < /data/in/state.json)"
echo "CSV $(tr '\n' '|' < /data/in/tables/orders.csv)"
echo "MANIFEST $(tr -d '\n' < /data/in/tables/orders.csv.manifest)"
echo '{"cursor": 7}' > /data/out/state.json
"#;

/// The value of the line `KEY …` the DUMP script printed.
fn dumped<'a>(stderr: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} ");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} line in:\n{stderr}"))
}

#[test]
fn sandbox_holds_what_the_component_would_see_and_changes_nothing() {
    require_env!();
    let b = Berth::new();
    let csv = b.dir.path().join("orders.csv");
    std::fs::write(&csv, "id,name\n1,ann\n2,bob\n").unwrap();
    let r = b.run_cmd(&[
        "storage",
        "import",
        "in.c-main.orders",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let img = push(&ImageSpec::script(DUMP), &unique_repo("sandbox"), "1");
    let mut j = job(&img.reference, json!({}), json!({"greeting": "hello"}));
    j["configuration"]["storage"] =
        json!({"input": {"tables": [{"source": "in.c-main.orders", "destination": "orders.csv"}]}});
    let path = b.write_job(&j);
    // A first run leaves the state the sandbox then starts from.
    let first = b.run_cmd(&["run", "--json", path.to_str().unwrap()]);
    assert_eq!(first.status, 0, "{}", first.stderr);
    let tables_before = b.run_cmd(&["storage", "tables", "--json"]).stdout;
    let state_before = b.run_cmd(&["state", "show", "acme.test", "42"]).stdout;
    assert!(state_before.contains("\"cursor\": 7"), "{state_before}");

    let out = b.dir.path().join("sandbox");
    let r = b.run_cmd(&[
        "sandbox",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    // The sandbox changed neither storage nor state.
    assert_eq!(
        b.run_cmd(&["storage", "tables", "--json"]).stdout,
        tables_before
    );
    assert_eq!(
        b.run_cmd(&["state", "show", "acme.test", "42"]).stdout,
        state_before
    );
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    let config: serde_json::Value = serde_json::from_str(&read("config.json")).unwrap();
    assert_eq!(config["parameters"], json!({"greeting": "hello"}));
    assert_eq!(config["action"], json!("run"));
    assert_eq!(read("in/tables/orders.csv"), "id,name\n1,ann\n2,bob\n");
    let manifest: serde_json::Value =
        serde_json::from_str(&read("in/tables/orders.csv.manifest")).unwrap();
    assert_eq!(manifest["id"], json!("in.c-main.orders"));
    let state: serde_json::Value = serde_json::from_str(&read("in/state.json")).unwrap();
    assert_eq!(state, json!({"cursor": 7}));
    for d in ["in/files", "in/user", "out/tables", "out/files"] {
        assert!(out.join(d).is_dir(), "{d} missing");
    }

    // Exactly what a run's component sees.
    let second = b.run_cmd(&["run", "--json", path.to_str().unwrap()]);
    assert_eq!(second.status, 0, "{}", second.stderr);
    let seen: serde_json::Value = serde_json::from_str(dumped(&second.stderr, "CONFIG")).unwrap();
    assert_eq!(seen, config);
    let seen_state: serde_json::Value =
        serde_json::from_str(dumped(&second.stderr, "STATE")).unwrap();
    assert_eq!(seen_state, state);
    assert_eq!(
        dumped(&second.stderr, "CSV"),
        read("in/tables/orders.csv").replace('\n', "|")
    );
    let seen_manifest: serde_json::Value =
        serde_json::from_str(dumped(&second.stderr, "MANIFEST")).unwrap();
    assert_eq!(seen_manifest["columns"], manifest["columns"]);

    // Nor does it store a state where there was none.
    let b2 = Berth::new();
    let r = b2.run_cmd(&[
        "storage",
        "import",
        "in.c-main.orders",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let tables = b2.run_cmd(&["storage", "tables", "--json"]).stdout;
    let out2 = b2.dir.path().join("sandbox");
    let r = b2.run_cmd(&[
        "sandbox",
        path.to_str().unwrap(),
        "--output",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(b2.run_cmd(&["storage", "tables", "--json"]).stdout, tables);
    let no_state = b2.run_cmd(&["state", "show", "acme.test", "42"]);
    assert!(
        no_state.stderr.contains("no state is stored"),
        "{}",
        no_state.stderr
    );

    // A directory with something in it is refused, and left as it was.
    let r = b.run_cmd(&[
        "sandbox",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
    assert_eq!(read("in/tables/orders.csv"), "id,name\n1,ann\n2,bob\n");
}

/// Answers action `echo` with what it found, `silent` with nothing, `words` with text,
/// `fail` with exit 1, `slow` after 5 s.
const ACTIONS: &str = r#"
action=$(sed -n 's/.*"action": "\([^"]*\)".*/\1/p' /data/config.json)
case "$action" in
echo) echo '{"kept": 1}' > /data/out/state.json; printf '{"config": '; cat /data/config.json; printf ', "state": '; cat /data/in/state.json; printf ', "tables": "%s"}\n' "$(ls /data/in/tables)";;
silent) ;;
words) echo 'all is well';;
fail) echo 'cannot reach the database' >&2; exit 1;;
slow) sleep 5; echo '{}';;
esac
"#;

fn action_job(b: &Berth, timeout: Option<u64>) -> std::path::PathBuf {
    let img = push(&ImageSpec::script(ACTIONS), &unique_repo("actions"), "1");
    let mut component = json!({"synchronous_actions": ["echo", "silent", "words", "fail", "slow"]});
    if let Some(t) = timeout {
        component["process_timeout"] = json!(t);
    }
    let mut j = job(&img.reference, component, json!({"host": "db"}));
    // An action maps nothing: a run would fail on this missing table.
    j["configuration"]["storage"] =
        json!({"input": {"tables": [{"source": "in.c-main.missing", "destination": "m.csv"}]}});
    b.write_job(&j)
}

#[test]
fn action_prints_the_json_the_component_answers() {
    require_env!();
    let b = Berth::new();
    let path = action_job(&b, None);
    let r = b.run_cmd(&["action", "echo", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let answer: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(answer["config"]["action"], json!("echo"));
    assert_eq!(answer["config"]["parameters"], json!({"host": "db"}));
    assert_eq!(answer["state"], json!({}));
    assert_eq!(answer["tables"], json!(""));
    // The state it wrote was not kept.
    let state = b.run_cmd(&["state", "show", "acme.test", "42"]);
    assert!(
        state.stderr.contains("no state is stored"),
        "{}",
        state.stderr
    );
    assert_eq!(state.stdout, "");
}

#[test]
fn action_answers_that_are_not_json_are_user_errors() {
    require_env!();
    let b = Berth::new();
    let path = action_job(&b, Some(2));
    let p = path.to_str().unwrap();
    let r = b.run_cmd(&["action", "words", p]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Decoding JSON response from component failed: "),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");

    let r = b.run_cmd(&["action", "silent", p]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("No response from component."),
        "{}",
        r.stderr
    );

    let r = b.run_cmd(&["action", "fail", p]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot reach the database"),
        "{}",
        r.stderr
    );

    // The job's own timeout, lower than 30 s, bounds the action.
    let r = b.run_cmd(&["action", "slow", p]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("action \"slow\" of component acme.test exceeded the timeout of 2 seconds"),
        "{}",
        r.stderr
    );

    let r = b.run_cmd(&["action", "dropTables", p]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no synchronous action \"dropTables\""),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");

    // `run` is what `berth run` does, never an action, even when listed.
    let img = push(
        &ImageSpec::script("echo '{}'"),
        &unique_repo("run-action"),
        "1",
    );
    let listed = json!({"synchronous_actions": ["run"]});
    let path = b.write_job(&job(&img.reference, listed, json!({})));
    let r = b.run_cmd(&["action", "run", path.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("\"run\" is not a synchronous action"),
        "{}",
        r.stderr
    );
}

#[test]
fn sandbox_of_rows_prepares_one_folder_per_row_without_an_image() {
    let b = Berth::new();
    // The image is never pulled: it need not exist.
    let mut j = job("127.0.0.1:9/nowhere:1", json!({}), json!({"base": 1}));
    j["rows"] = json!([
        {"id": "r1", "configuration": {"parameters": {"row": 1}}},
        {"id": "r2", "configuration": {"parameters": {"row": 2}}},
    ]);
    let path = b.write_job(&j);
    let out = b.dir.path().join("rows");
    let r = b.run_cmd(&[
        "sandbox",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    for (row, n) in [("r1", 1), ("r2", 2)] {
        let text = std::fs::read_to_string(out.join(row).join("config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(config["parameters"], json!({"base": 1, "row": n}));
        let state = std::fs::read_to_string(out.join(row).join("in/state.json")).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&state).unwrap(),
            json!({})
        );
    }
    assert_eq!(
        r.stdout,
        format!(
            "{}\n{}\n",
            out.join("r1").display(),
            out.join("r2").display()
        )
    );
}

#[test]
fn a_sandbox_is_never_written_through_a_link() {
    let b = Berth::new();
    let secret = "sandbox-secret-42";
    let j = job(
        "127.0.0.1:9/nowhere:1",
        json!({}),
        json!({"#password": secret}),
    );
    let path = b.write_job(&j);
    // The output directory is a link to an empty directory elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = b.dir.path().join("sandbox");
    std::os::unix::fs::symlink(elsewhere.path(), &out).unwrap();
    let sandbox = |out: &std::path::Path| {
        b.run_cmd(&[
            "sandbox",
            path.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
    };
    let r = sandbox(&out);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{} is a symlink", out.display())),
        "{}",
        r.stderr
    );
    let written: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
    assert!(written.is_empty(), "written through the link: {written:?}");
    // A directory of its own: prepared, private, and berth's scratch copy is gone.
    let real = b.dir.path().join("real");
    let r = sandbox(&real);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(real.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["parameters"]["#password"], secret);
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&real.join("config.json")), 0o600);
    assert_eq!(mode(&real.join("in/tables")), 0o700);
    let jobs: Vec<_> = std::fs::read_dir(b.home().join("jobs")).unwrap().collect();
    assert!(jobs.is_empty(), "left in the home: {jobs:?}");
}
