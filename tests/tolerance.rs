//! The original runner's tolerance and defaults (issue 18), item by item, with real
//! containers: what a configuration written for Keboola means here.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use common::*;
use serde_json::{Value, json};

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

const ORDERS: &str =
    "id,customer,amount,status\n1,ann,10,paid\n2,bob,20,open\n3,cid,30,paid\n4,dan,40,void\n";

fn import(b: &Berth, table: &str, csv: &str, extra: &[&str]) {
    let path = b
        .dir
        .path()
        .join(format!("import-{table}-{:x}.csv", rand_u64()));
    std::fs::write(&path, csv).unwrap();
    let mut args = vec!["storage", "import", table, path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = b.run_cmd(&args);
    assert_eq!(r.status, 0, "import failed: {}", r.stderr);
}

fn export(b: &Berth, table: &str) -> String {
    let r = b.run_cmd(&["storage", "export", table]);
    assert_eq!(r.status, 0, "export of {table} failed: {}", r.stderr);
    r.stdout
}

/// The stored tables by id, as `berth storage tables --json` lists them.
fn tables(b: &Berth) -> std::collections::BTreeMap<String, Value> {
    let r = b.run_cmd(&["storage", "tables", "--json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let list: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    list.into_iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t))
        .collect()
}

/// What a component printed between `BEGIN name` and `END name` lines.
fn printed<'a>(output: &'a str, name: &str) -> &'a str {
    let begin = format!("BEGIN {name}\n");
    let start = output
        .find(&begin)
        .unwrap_or_else(|| panic!("no {name} in {output}"))
        + begin.len();
    let end = output[start..].find(&format!("END {name}")).unwrap() + start;
    &output[start..end]
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

#[test]
fn a_process_timeout_above_a_day_is_capped_with_a_warning() {
    require_env!();
    let img = script_image("captime", "echo ran");
    let b = Berth::new();
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"]["runtime"] = json!({"process_timeout": 100_000});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "configuration.runtime.process_timeout 100000 is above the maximum of 86400 \
             seconds: capped there"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("ran"), "{}", r.stderr);
    // 0 is refused, as the original refuses it.
    j["configuration"]["runtime"] = json!({"process_timeout": 0});
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    r.assert_message_has("configuration.runtime.process_timeout: must be greater than 0");
    b.assert_clean(&[]);
}

#[test]
fn at_the_timeout_the_component_gets_sigterm_then_sigkill_after_a_grace_period() {
    require_env!();
    // One that cleans up and leaves on SIGTERM: its exit is its own, the job still failed.
    let polite = script_image(
        "polite",
        "trap 'echo got TERM; sleep 1; echo cleaned up; exit 0' TERM\n\
         echo started\nwhile :; do sleep 0.2; done",
    );
    let b = Berth::new();
    // A run of `image` with a 2 s timeout, which it exceeds: its result and stderr.
    let timed_out = |image: &BuiltImage| {
        let r = b.run_job(&job(
            &image.reference,
            json!({"process_timeout": 2}),
            json!({}),
        ));
        let result = r.json();
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert_eq!(
            result["message"],
            "component acme.test exceeded the timeout of 2 seconds"
        );
        (result, r)
    };
    let (result, r) = timed_out(&polite);
    assert_eq!(result["exit_code"], 0, "{result}");
    assert!(r.stderr.contains("got TERM\n"), "{}", r.stderr);
    assert!(r.stderr.contains("cleaned up\n"), "{}", r.stderr);

    // One that hears SIGTERM and stays: SIGKILL once the grace period is over.
    let marker = format!("sleep 31{:04}", rand_u64() % 10_000);
    let deaf = script_image(
        "deaf",
        &format!(
            "trap 'echo got TERM' TERM\necho started\n{marker} &\nwhile :; do sleep 0.2; done"
        ),
    );
    let (result, r) = timed_out(&deaf);
    assert_eq!(result["exit_code"], 137, "{result}");
    assert!(r.stderr.contains("got TERM\n"), "{}", r.stderr);
    assert!(!running(&marker), "a process of the container survived");
    b.assert_clean(&[]);
}

#[test]
fn an_interrupted_berth_gives_the_component_sigterm_first() {
    require_env!();
    let img = script_image(
        "intterm",
        "trap 'echo got TERM; exit 0' TERM\necho started\nwhile :; do sleep 0.2; done",
    );
    let b = Berth::new();
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    b.assert_clean(&[]);
}

#[test]
fn ciphertexts_of_keboolas_stacks_are_user_errors_naming_the_key_and_never_rewrapped() {
    require_env!();
    let img = script_image("foreign", "echo ran");
    let b = Berth::new();
    let azure = "KBC::ProjectSecureKV::eJwBXQGi/mE6Mjp7aTowO3M6MTg0OiJkZWY1MDIwMDY=";
    // `berth encrypt` leaves it as it is, and encrypts its plain neighbour.
    let config = encrypted(
        &b,
        &["--component", "acme.test"],
        json!({"parameters": {"db": {"#password": azure}, "#plain": "x"}}),
    );
    assert_eq!(config["parameters"]["db"]["#password"], azure);
    assert!(
        config["parameters"]["#plain"]
            .as_str()
            .unwrap()
            .starts_with("KBC::ProjectSecure::")
    );
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"] = config;
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        "the value of configuration.parameters.db.#password was encrypted on a Keboola stack \
         (with its Azure Key Vault) and cannot be decrypted here: put the plain value there \
         and encrypt it with `berth encrypt`"
    );
    assert!(!r.stderr.contains("\nran\n"), "{}", r.stderr);
    b.assert_clean(&[]);
}

#[test]
fn keboolas_unset_values_mean_what_they_mean_there_and_config_json_has_the_defaults() {
    require_env!();
    let b = Berth::new();
    import(&b, "in.c-main.orders", ORDERS, &["--primary-key", "id"]);
    let img = script_image(
        "defaults",
        "echo BEGIN config; cat /data/config.json; echo; echo END config\n\
         for t in a.csv b.csv; do echo BEGIN $t; cat /data/in/tables/$t; echo END $t; done\n\
         printf 'id\\n1\\n' > /data/out/tables/out.csv",
    );
    let mut j = job(&img.reference, json!({}), json!({}));
    // As Keboola's API exports an empty configuration: PHP's empty objects are `[]`.
    j["configuration"] = json!({
        "parameters": [], "authorization": [], "runtime": [],
        "storage": {
            "input": {"tables": [
                {"source": "in.c-main.orders", "destination": "a.csv", "days": 0,
                 "changed_since": "", "columns": []},
                {"source": "in.c-main.orders", "destination": "b.csv", "where_column": "status",
                 "where_values": ["paid"], "where_operator": "", "days": null}
            ]},
            "output": {"tables": [{"source": "out.csv", "destination": "out.c-x.out",
                                   "column_metadata": []}]}
        }
    });
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(printed(&r.stderr, "a.csv"), ORDERS);
    assert_eq!(
        printed(&r.stderr, "b.csv"),
        "id,customer,amount,status\n1,ann,10,paid\n3,cid,30,paid\n"
    );
    let config: Value = serde_json::from_str(printed(&r.stderr, "config")).unwrap();
    assert_eq!(config["parameters"], json!({}));
    assert_eq!(config["authorization"], json!({}));
    assert_eq!(
        config["storage"]["input"],
        json!({
            "tables": [
                {"source": "in.c-main.orders", "destination": "a.csv", "days": 0,
                 "changed_since": "", "columns": [], "column_types": [], "where_values": [],
                 "where_operator": "eq", "overwrite": false,
                 "keep_internal_timestamp_column": true},
                {"source": "in.c-main.orders", "destination": "b.csv", "where_column": "status",
                 "where_values": ["paid"], "where_operator": "eq", "columns": [],
                 "column_types": [], "overwrite": false, "keep_internal_timestamp_column": true}
            ],
            "files": []
        })
    );
    assert_eq!(
        config["storage"]["output"],
        json!({
            "tables": [{"source": "out.csv", "destination": "out.c-x.out", "incremental": false,
                        "primary_key": [], "columns": [], "distribution_key": [],
                        "delete_where_values": [], "delete_where_operator": "eq",
                        "delimiter": ",", "enclosure": "\"", "metadata": [],
                        "column_metadata": [], "write_always": false, "tags": [],
                        "schema": []}],
            "files": []
        })
    );
    assert_eq!(export(&b, "out.c-x.out"), "id\n1\n");
    b.assert_clean(&[]);
}

#[test]
fn output_tables_follow_the_originals_table_structure_rules() {
    require_env!();
    let b = Berth::new();
    import(
        &b,
        "out.c-x.t",
        "id,k\n1,a\n2,a\n",
        &["--primary-key", "id"],
    );
    let img = script_image(
        "structure",
        r#"cd /data/out/tables
m() { echo "$1" > t.csv.manifest; }
case "$(cat /data/config.json)" in
*mode-keep*) printf 'id,k\n3,b\n' > t.csv
  m '{"destination": "out.c-x.t", "incremental": true, "primary_key": ["k"]}' ;;
*mode-change*) printf 'id,k\n1,a\n2,a\n' > t.csv
  m '{"destination": "out.c-x.t", "primary_key": ["id", "k"]}' ;;
*mode-remove*) printf 'id,k\n1,a\n' > t.csv
  m '{"destination": "out.c-x.t", "incremental": true, "primary_key": ["id"]}' ;;
*mode-hidden*) printf 'id,k\n4,d\n' > t.csv; m '{"destination": "out.c-x.t", "incremental": true}'
  touch .gitkeep .t.csv.swp; mkdir .cache /data/out/files/folder
  echo x > /data/out/files/folder/inner.txt; echo x > /data/out/files/.hidden ;;
*mode-delete*) printf 'id,k\n5,e\n' > t.csv ;;
esac"#,
    );
    let run = |mode: &str, output: Value| {
        let mut j = job(&img.reference, json!({}), json!({"mode": mode}));
        j["configuration"]["storage"] = json!({ "output": output });
        b.run_job(&j)
    };
    let key = || tables(&b)["out.c-x.t"]["primary_key"].clone();

    // Rows not unique on the new key: a warning, the table keeps its key, the load goes on.
    let r = run("mode-keep", json!({}));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "cannot change the primary key of table out.c-x.t to (k): its rows are not \
             unique on it; it keeps (id)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(key(), json!(["id"]));
    assert_eq!(export(&b, "out.c-x.t"), "id,k\n1,a\n2,a\n3,b\n");

    // A changed key: a warning, and the table gets it.
    let r = run("mode-change", json!({}));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("modifying the primary key of table out.c-x.t from (id) to (id, k)"),
        "{}",
        r.stderr
    );
    assert_eq!(key(), json!(["id", "k"]));

    // The mapping's `primary_key: []` beats the manifest's: the key is removed.
    let mapping = json!({"tables": [{"source": "t.csv", "destination": "out.c-x.t",
                                     "primary_key": []}]});
    let r = run("mode-remove", mapping);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("modifying the primary key of table out.c-x.t from (id, k) to ()"),
        "{}",
        r.stderr
    );
    assert_eq!(key(), json!([]));

    // Hidden entries of out/tables and folders of out/files are left alone.
    let r = run("mode-hidden", json!({}));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(export(&b, "out.c-x.t"), "id,k\n1,a\n2,a\n1,a\n4,d\n");
    let files = b.run_cmd(&["storage", "files", "--json"]);
    assert_eq!(files.stdout.trim(), "[]", "{}", files.stderr);

    // A delete_where_column without values is refused, as there; nothing changes.
    let mapping = json!({"tables": [{"source": "t.csv", "destination": "out.c-x.t",
                                     "incremental": true, "delete_where_column": "k"}]});
    let r = run("mode-delete", mapping);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        r.json()["message"],
        "out/tables/t.csv: when delete_where_column is set, delete_where_values is required"
    );
    assert_eq!(export(&b, "out.c-x.t"), "id,k\n1,a\n2,a\n1,a\n4,d\n");
    b.assert_clean(&[]);
}

#[test]
fn input_files_changed_since_a_relative_time() {
    require_env!();
    let b = Berth::new();
    let path = b.dir.path().join("report.txt");
    std::fs::write(&path, "fresh").unwrap();
    let r = b.run_cmd(&["storage", "upload", path.to_str().unwrap(), "--tag", "in"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let id = r.stdout.trim().to_owned();
    let img = script_image("filesince", "ls /data/in/files | sed 's/^/FILE /'");
    let run = |since: &str| {
        let mut j = job(&img.reference, json!({}), json!({}));
        j["configuration"]["storage"] =
            json!({"input": {"files": [{"tags": ["in"], "changed_since": since}]}});
        b.run_job(&j)
    };
    // Uploaded just now: within the last week, not after a date to come.
    let r = run("-7 days");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("FILE {id}_report.txt\n")),
        "{}",
        r.stderr
    );
    let r = run("2999-01-01");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("FILE "), "{}", r.stderr);
    let r = run("last tuesday-ish");
    assert_eq!(r.status, 1, "{}", r.stderr);
    r.assert_message_has(
        "storage.input.files[0]: changed_since: \"last tuesday-ish\" is not a time",
    );
    b.assert_clean(&[]);
}

#[test]
fn rows_merge_lists_item_by_item_and_run_with_their_own_runtime() {
    require_env!();
    let b = Berth::new();
    import(&b, "in.c-main.a", "v\na\n", &[]);
    import(&b, "in.c-main.b", "v\nb\n", &[]);
    import(&b, "in.c-main.x", "v\nx\n", &[]);
    let script = |tag: &str| {
        format!(
            "echo \"ROW $KBC_CONFIGROWID TAG {tag} TABLES $(ls /data/in/tables | grep -v manifest | tr '\\n' ' ')\"\n\
             case \"$(cat /data/config.json)\" in *slow*) sleep 30 ;; esac"
        )
    };
    let repo = unique_repo("rows");
    let one = push(&ImageSpec::script(&script("1")), &repo, "1.0");
    push(&ImageSpec::script(&script("2")), &repo, "2.0");
    let mut j = job(&one.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"input": {"tables": [
        {"source": "in.c-main.a", "destination": "a.csv"},
        {"source": "in.c-main.b", "destination": "b.csv"}
    ]}});
    j["rows"] = json!([
        // A row's one table replaces the configuration's first, and the second stays.
        {"id": "r1", "configuration": {"storage": {"input": {"tables": [
            {"source": "in.c-main.x", "destination": "x.csv"}]}}}},
        // Its own image tag.
        {"id": "r2", "configuration": {"runtime": {"image_tag": "2.0"}}},
        {"id": "r3", "is_disabled": true}
    ]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("ROW r1 TAG 1 TABLES b.csv x.csv \n"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("ROW r2 TAG 2 TABLES a.csv b.csv \n"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("ROW r3"), "{}", r.stderr);

    // Its own timeout: the row's, not the component's.
    j["rows"] = json!([{"id": "slow", "configuration": {
        "parameters": {"mode": "slow"}, "runtime": {"process_timeout": 2}}}]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        r.json()["message"],
        "component acme.test exceeded the timeout of 2 seconds"
    );

    // Every row disabled: nothing runs (not even a pull), and the job succeeds.
    let mut j = job(
        &format!("{}/{}:none", registry(), unique_repo("never")),
        json!({}),
        json!({}),
    );
    j["rows"] = json!([{"id": "r1", "is_disabled": true}, {"id": "r2", "is_disabled": true}]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.json()["status"], "success");
    assert!(
        r.stderr.contains("every row is disabled: nothing to run"),
        "{}",
        r.stderr
    );
    b.assert_clean(&[]);
}

#[test]
fn a_row_with_empty_processors_beside_the_configurations_runs_them() {
    require_env!();
    let b = Berth::new();
    let marker = script_image(
        "rowproc-p",
        "echo PROCESSOR RAN; cp -r /data/in/. /data/out/",
    );
    let definition = json!({"id": "acme.marker", "image": marker.reference});
    let path = b.dir.path().join("marker.json");
    std::fs::write(&path, definition.to_string()).unwrap();
    let r = b.run_cmd(&["component", "add", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let main = script_image("rowproc-main", "echo \"MAIN $KBC_CONFIGROWID\"");
    let mut j = job(&main.reference, json!({}), json!({}));
    j["configuration"]["processors"] =
        json!({"before": [{"definition": {"component": "acme.marker"}}]});
    j["rows"] = json!([
        {"id": "r1", "configuration": {"processors": {"before": [], "after": []}}},
        {"id": "r2", "configuration": {"processors": []}}
    ]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stderr.matches("PROCESSOR RAN").count(), 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("MAIN r1\n") && r.stderr.contains("MAIN r2\n"),
        "{}",
        r.stderr
    );
    // Processors in a row and in the configuration: refused, as there.
    j["rows"] = json!([{"id": "r1", "configuration": {"processors": {
        "after": [{"definition": {"component": "acme.marker"}}]}}}]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    r.assert_message_has("set them in one place");
    b.assert_clean(&[]);
}

#[test]
fn per_row_commit_keeps_earlier_rows_and_a_rerun_skips_them() {
    require_env!();
    let b = Berth::new();
    import(&b, "out.c-main.counts", "row\nbefore\n", &[]);
    let img = script_image(
        "percommit",
        r#"row=$(sed -n 's/.*"row": *"\([a-z0-9]*\)".*/\1/p' /data/config.json)
echo "ROW $row $KBC_CONFIGROWID"
printf "row\n$row\n" > /data/out/tables/counts.csv
echo '{"destination": "out.c-main.counts", "incremental": true}' > /data/out/tables/counts.csv.manifest
echo "{\"last\": \"$row\"}" > /data/out/state.json
[ "$row" = bad ] && { echo "row $row failed" >&2; exit 1; }
exit 0"#,
    );
    let rows = |second: &str| {
        let mut j = job(&img.reference, json!({}), json!({}));
        j["rows"] = json!([
            {"id": "r1", "configuration": {"parameters": {"row": "one"}}},
            {"id": "r2", "configuration": {"parameters": {"row": second}}},
        ]);
        b.write_job(&j)
    };
    let state = |row: &str| {
        let r = b.run_cmd(&["state", "show", "acme.test", "42", row]);
        if r.stderr.contains("no state is stored") {
            return None;
        }
        assert_eq!(r.status, 0, "{}", r.stderr);
        Some(serde_json::from_str::<Value>(&r.stdout).unwrap())
    };
    let run = |job: &std::path::Path, id: &str, extra: &[&str]| {
        let mut args = vec!["run", "--json", "--job-id", id];
        args.extend_from_slice(extra);
        args.push(job.to_str().unwrap());
        b.run_cmd(&args)
    };

    // The default is all or nothing: the second row's failure leaves storage as it was.
    let failing = rows("bad");
    let r = run(&failing, "pr-0", &[]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(export(&b, "out.c-main.counts"), "row\nbefore\n");
    assert_eq!(state("r1"), None);

    // Per row: the first row's outputs and state are committed before the second fails.
    let r = run(&failing, "pr-1", &["--commit", "row"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(r.json()["message"], "row bad failed");
    assert!(r.stderr.contains("ROW one r1"), "{}", r.stderr);
    assert_eq!(export(&b, "out.c-main.counts"), "row\nbefore\none\n");
    assert_eq!(state("r1"), Some(json!({"last": "one"})));
    assert_eq!(state("r2"), None);
    assert!(
        r.stderr
            .contains("rows committed before the failure stay in storage: r1"),
        "{}",
        r.stderr
    );

    // The rerun of the job id (fixed) skips the row that committed and runs the other;
    // BERTH_COMMIT_MODE chooses the mode as the flag does.
    let fixed = rows("two");
    let mut cmd = b.cmd();
    cmd.env("BERTH_COMMIT_MODE", "row");
    let out = cmd
        .args(["run", "--json", "--job-id", "pr-1", fixed.to_str().unwrap()])
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("ROW one"), "{}", r.stderr);
    assert!(r.stderr.contains("ROW two r2"), "{}", r.stderr);
    assert_eq!(export(&b, "out.c-main.counts"), "row\nbefore\none\ntwo\n");
    assert_eq!(state("r2"), Some(json!({"last": "two"})));

    // The job committed whole: a third run applies nothing.
    let r = run(&fixed, "pr-1", &["--commit", "row"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.json()["already_committed"], true, "{}", r.stdout);
    assert_eq!(export(&b, "out.c-main.counts"), "row\nbefore\none\ntwo\n");

    // A bad mode is named.
    let r = run(&fixed, "pr-1", &["--commit", "rows"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(r.stderr.contains("'rows'"), "{}", r.stderr);

    // A rerun in the default mode skips the rows committed one by one too.
    let r = run(&failing, "pr-2", &["--commit", "row"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let r = run(&fixed, "pr-2", &[]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("ROW one"), "{}", r.stderr);
    assert!(r.stderr.contains("ROW two r2"), "{}", r.stderr);
    assert_eq!(
        export(&b, "out.c-main.counts"),
        "row\nbefore\none\ntwo\none\ntwo\n"
    );
    b.assert_clean(&[]);
}
