//! The data contract end to end: tables and files staged from the embedded storage into
//! real containers, what the components write loaded back, state and adaptive inputs across
//! runs, and all-or-nothing commits — also when berth is killed in the middle of one.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

impl Berth {
    fn storage(&self, args: &[&str]) -> Run {
        let mut all = vec!["storage"];
        all.extend_from_slice(args);
        self.run_cmd(&all)
    }

    fn import(&self, table: &str, csv: &str, extra: &[&str]) {
        let path = self.dir.path().join(format!("import-{}.csv", table));
        std::fs::write(&path, csv).unwrap();
        let mut args = vec!["import", table, path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = self.storage(&args);
        assert_eq!(r.status, 0, "import failed: {}", r.stderr);
    }

    fn export(&self, table: &str) -> String {
        let r = self.storage(&["export", table]);
        assert_eq!(r.status, 0, "export of {table} failed: {}", r.stderr);
        r.stdout
    }

    fn tables(&self) -> BTreeMap<String, Value> {
        let r = self.storage(&["tables", "--json"]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        let list: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
        list.into_iter()
            .map(|t| (t["id"].as_str().unwrap().to_owned(), t))
            .collect()
    }

    fn files(&self) -> Vec<Value> {
        let r = self.storage(&["files", "--json"]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }

    fn upload(&self, name: &str, content: &str, tags: &[&str]) -> u64 {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let mut args = vec!["upload", path.to_str().unwrap()];
        for t in tags {
            args.push("--tag");
            args.push(t);
        }
        let r = self.storage(&args);
        assert_eq!(r.status, 0, "{}", r.stderr);
        r.stdout.trim().parse().unwrap()
    }

    /// The whole stored state, berth's bookkeeping included.
    fn state(&self, component: &str, config: &str) -> Option<Value> {
        let r = self.run_cmd(&["state", "show", "--all", component, config]);
        (r.status == 0).then(|| serde_json::from_str(&r.stdout).unwrap())
    }

    /// What the component finds in /data/in/state.json.
    fn component_state(&self, component: &str, config: &str) -> Option<Value> {
        let r = self.run_cmd(&["state", "show", component, config]);
        (r.status == 0).then(|| serde_json::from_str(&r.stdout).unwrap())
    }
}

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

fn job_with(image: &str, storage: Value) -> Value {
    let mut j = job(image, json!({}), json!({}));
    j["configuration"]["storage"] = storage;
    j
}

/// The sections a script prints as `== name` followed by the file's content.
fn sections(output: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            current = Some(name.to_owned());
            out.insert(name.to_owned(), String::new());
        } else if let Some(c) = &current {
            let s = out.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    out
}

const DUMP: &str = "for f in /data/in/tables/* /data/in/files/*; do [ -e \"$f\" ] || continue; echo \"== ${f#/data/in/}\"; cat \"$f\"; echo; done";

const ORDERS: &str =
    "id,customer,amount,status\n1,ann,10,paid\n2,bob,20,open\n3,cid,30,paid\n4,dan,40,void\n";

#[test]
fn input_tables_with_every_option() {
    require_env!();
    let b = Berth::new();
    b.import("in.c-main.orders", ORDERS, &["--primary-key", "id"]);
    let img = script_image("in-tables", DUMP);
    let t = |extra: Value| {
        let mut m = json!({"source": "in.c-main.orders"});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    let r = b.run_job(&job_with(
        &img.reference,
        json!({"input": {"tables": [
            t(json!({})),
            t(json!({"destination": "paid.csv", "columns": ["id", "amount"], "where_column": "status", "where_values": ["paid"]})),
            t(json!({"destination": "unpaid.csv", "where_column": "status", "where_values": ["paid"], "where_operator": "ne"})),
            t(json!({"destination": "limited.csv", "limit": 2})),
            t(json!({"destination": "recent.csv", "changed_since": "-1 days"})),
            t(json!({"destination": "future.csv", "changed_since": "2999-01-01T00:00:00Z"})),
            t(json!({"destination": "days.csv", "days": 3})),
        ]}}),
    ));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let s = sections(&r.stderr);
    assert_eq!(s["tables/in.c-main.orders"], format!("{ORDERS}\n"));
    assert_eq!(s["tables/paid.csv"], "id,amount\n1,10\n3,30\n\n");
    assert_eq!(
        s["tables/unpaid.csv"],
        "id,customer,amount,status\n2,bob,20,open\n4,dan,40,void\n\n"
    );
    assert_eq!(
        s["tables/limited.csv"].trim_end().lines().count(),
        3,
        "{}",
        s["tables/limited.csv"]
    );
    assert_eq!(s["tables/recent.csv"], format!("{ORDERS}\n"));
    assert_eq!(s["tables/future.csv"], "id,customer,amount,status\n\n");
    assert_eq!(s["tables/days.csv"], format!("{ORDERS}\n"));
    let manifest: Value = serde_json::from_str(s["tables/paid.csv.manifest"].trim()).unwrap();
    assert_eq!(manifest["id"], "in.c-main.orders");
    assert_eq!(manifest["name"], "orders");
    assert_eq!(manifest["columns"], json!(["id", "amount"]));
    assert_eq!(manifest["primary_key"], json!(["id"]));
    for k in ["created", "last_change_date", "last_import_date"] {
        assert!(
            manifest[k].as_str().unwrap().ends_with("+0000"),
            "{k}: {manifest}"
        );
    }

    // A table that does not exist, and contradictory options, are the user's errors.
    let r = b.run_job(&job_with(
        &img.reference,
        json!({"input": {"tables": [{"source": "in.c-main.nope"}]}}),
    ));
    assert_eq!(r.status, 1);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("table in.c-main.nope does not exist"),
        "{}",
        r.stdout
    );
    let r = b.run_job(&job_with(
        &img.reference,
        json!({"input": {"tables": [t(json!({"days": 2, "changed_since": "-1 days"}))]}}),
    ));
    assert_eq!(r.status, 1);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("either days or changed_since")
    );
    let r = b.run_job(&job_with(
        &img.reference,
        json!({"input": {"tables": [t(json!({"columns": ["id", "ghost"]}))]}}),
    ));
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert!(
        r.json()["message"].as_str().unwrap().contains("ghost"),
        "{}",
        r.stdout
    );
    b.assert_clean(&[]);
}

#[test]
fn input_files_by_tags_ids_and_adaptively() {
    require_env!();
    let b = Berth::new();
    let a = b.upload("a.txt", "A", &["report"]);
    let ab = b.upload("ab.txt", "AB", &["report", "draft"]);
    let other = b.upload("other.txt", "O", &["misc"]);
    let img = script_image("in-files", &format!("{DUMP}\nls /data/in/files"));
    let mut j = job_with(
        &img.reference,
        json!({"input": {"files": [
            {"tags": ["report"]},
            {"source": {"tags": [{"name": "report"}, {"name": "draft", "match": "exclude"}]}},
            {"file_ids": [other]},
        ]}}),
    );
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let s = sections(&r.stderr);
    assert_eq!(s[&format!("files/{a}_a.txt")], "A\n");
    assert_eq!(s[&format!("files/{ab}_ab.txt")], "AB\n");
    assert_eq!(s[&format!("files/{other}_other.txt")], "O\n");
    let manifest: Value =
        serde_json::from_str(s[&format!("files/{ab}_ab.txt.manifest")].trim()).unwrap();
    assert_eq!(manifest["id"], ab);
    assert_eq!(manifest["name"], "ab.txt");
    assert_eq!(manifest["tags"], json!(["report", "draft"]));
    assert_eq!(manifest["size_bytes"], 2);
    assert_eq!(manifest["is_sliced"], false);

    // limit, and adaptive: the second run only gets what was uploaded since the first.
    j["configuration"]["storage"] =
        json!({"input": {"files": [{"tags": ["report"], "changed_since": "adaptive"}]}});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        sections(&r.stderr)
            .keys()
            .filter(|k| !k.ends_with(".manifest"))
            .count(),
        2
    );
    let newer = b.upload("new.txt", "N", &["report"]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let got: Vec<String> = sections(&r.stderr)
        .into_keys()
        .filter(|k| !k.ends_with(".manifest"))
        .collect();
    assert_eq!(got, vec![format!("files/{newer}_new.txt")]);
    let state = b.state("acme.test", "42").unwrap();
    assert_eq!(state["storage"]["input"]["files"][0]["lastImportId"], newer);

    j["configuration"]["storage"] = json!({"input": {"files": [{"tags": ["report"], "limit": 1}]}});
    let r = b.run_job(&j);
    assert_eq!(
        sections(&r.stderr)
            .keys()
            .filter(|k| !k.ends_with(".manifest"))
            .count(),
        1
    );
    j["configuration"]["storage"] = json!({"input": {"files": [{"limit": 1}]}});
    let r = b.run_job(&j);
    assert_eq!(r.status, 1);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("give tags, source.tags or file_ids")
    );
}

#[test]
fn outputs_land_in_storage_with_every_option() {
    require_env!();
    let b = Berth::new();
    let img = script_image(
        "outputs",
        r#"cd /data/out/tables
printf 'id,name\n1,ann\n2,bob\n' > full.csv
printf 'id,v\n1,one\n2,two\n' > inc.csv
echo '{"destination": "out.c-main.inc", "incremental": true, "primary_key": ["id"],
       "metadata": [{"key": "KBC.description", "value": "from the manifest"}]}' > inc.csv.manifest
printf "1;'a;b'\n2;'c'\n" > headless.csv
mkdir sliced
printf '1,x\n' > sliced/part1.csv
printf '2,y\n' | gzip > sliced/part2.csv.gz
echo '{"columns": ["n", "letter"]}' > sliced.manifest
printf 'k\nv\n' > plain.csv
cd /data/out/files
echo report > report.txt
echo '{"tags": ["monthly"], "is_permanent": true}' > report.txt.manifest
"#,
    );
    let storage = json!({"output": {
        "default_bucket": "out.c-def",
        "tables": [
            {"source": "full.csv", "destination": "out.c-main.full"},
            {"source": "headless.csv", "destination": "out.c-main.headless", "columns": ["id", "text"],
             "delimiter": ";", "enclosure": "'"},
        ]
    }});
    let r = b.run_job(&job_with(&img.reference, storage.clone()));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let result = r.json();
    let tables = b.tables();
    assert_eq!(
        tables.keys().cloned().collect::<Vec<_>>(),
        vec![
            "out.c-def.plain",
            "out.c-def.sliced",
            "out.c-main.full",
            "out.c-main.headless",
            "out.c-main.inc"
        ]
    );
    assert_eq!(result["outputs"]["tables"].as_array().unwrap().len(), 5);
    assert_eq!(b.export("out.c-main.full"), "id,name\n1,ann\n2,bob\n");
    assert_eq!(b.export("out.c-main.headless"), "id,text\n1,a;b\n2,c\n");
    assert_eq!(b.export("out.c-def.sliced"), "n,letter\n1,x\n2,y\n");
    assert_eq!(b.export("out.c-def.plain"), "k\nv\n");
    let inc = &tables["out.c-main.inc"];
    assert_eq!(inc["primary_key"], json!(["id"]));
    assert_eq!(inc["metadata"][0]["key"], "KBC.description");
    assert_eq!(inc["created_by"]["component"], "acme.test");
    assert_eq!(inc["created_by"]["config"], "42");

    let files = b.files();
    assert_eq!(files.len(), 1);
    let tags: Vec<&str> = files[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let run_tag = format!("runId: {}", result["job_id"].as_str().unwrap());
    for t in [
        "monthly",
        "componentId: acme.test",
        "configurationId: 42",
        run_tag.as_str(),
    ] {
        assert!(tags.contains(&t), "missing tag {t:?} in {tags:?}");
    }
    assert_eq!(files[0]["is_permanent"], true);
    let id = files[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(b.storage(&["download", &id]).stdout, "report\n");

    // Second run: incremental upsert (last row wins), delete_where, full load replacing.
    let img2 = script_image(
        "outputs2",
        r#"cd /data/out/tables
printf 'id,name\n9,zed\n' > full.csv
printf 'id,v\n2,TWO\n3,three\n2,deux\n' > inc.csv
echo '{"destination": "out.c-main.inc", "incremental": true, "primary_key": ["id"]}' > inc.csv.manifest
printf 'k\nw\n' > plain.csv
echo '{"incremental": true, "delete_where_column": "k", "delete_where_values": ["v"]}' > plain.csv.manifest
"#,
    );
    let r = b.run_job(&job_with(
        &img2.reference,
        json!({"output": {"default_bucket": "out.c-def", "tables": [{"source": "full.csv", "destination": "out.c-main.full"}]}}),
    ));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(b.export("out.c-main.full"), "id,name\n9,zed\n");
    let mut inc: Vec<String> = b
        .export("out.c-main.inc")
        .lines()
        .map(str::to_owned)
        .collect();
    inc.sort();
    assert_eq!(inc, vec!["1,one", "2,deux", "3,three", "id,v"]);
    assert_eq!(b.export("out.c-def.plain"), "k\nw\n");
    b.assert_clean(&[]);
}

#[test]
fn bad_outputs_are_user_errors_naming_the_file_and_change_nothing() {
    require_env!();
    let b = Berth::new();
    b.import("in.c-main.keep", "a\n1\n", &[]);
    let before = b.tables();
    let cases = [
        (
            "echo '{}' > /data/out/tables/lonely.csv.manifest",
            "orphaned manifest out/tables/lonely.csv.manifest",
        ),
        (
            "printf 'a\\n1\\n' > /data/out/tables/t.csv; echo '{\"incremental\": 1}' > /data/out/tables/t.csv.manifest",
            "invalid manifest out/tables/t.csv.manifest",
        ),
        (
            "ln -s /etc/passwd /data/out/tables/passwd.csv",
            "out/tables/passwd.csv is a symlink",
        ),
        (
            "ln -s /etc /data/out/files/etc",
            "out/files/etc is a symlink",
        ),
        (
            "printf 'a,b\\n1,2\\n3\\n' > /data/out/tables/ragged.csv",
            "ragged.csv: line 3",
        ),
        (
            "printf 'a,b\\n1,\"2\\n' > /data/out/tables/quote.csv",
            "quote.csv: line 2",
        ),
        (
            "printf 'a,a\\n1,2\\n' > /data/out/tables/dup.csv",
            "dup.csv",
        ),
        (
            "printf 'a\\n\\377\\n' > /data/out/tables/utf.csv",
            "utf.csv: line 2",
        ),
        (
            "printf 'a\\n1\\n' > /data/out/tables/ok.csv",
            "out.c-x.missing",
        ),
    ];
    for (script, fragment) in cases {
        // Every case also writes a good table first: it must not land either.
        let img = script_image(
            "bad-out",
            &format!("printf 'x\\n1\\n' > /data/out/tables/good.csv\n{script}"),
        );
        let mut storage = json!({"output": {"default_bucket": "out.c-x"}});
        if fragment == "out.c-x.missing" {
            storage["output"]["tables"] =
                json!([{"source": "missing.csv", "destination": "out.c-x.missing"}]);
        }
        let r = b.run_job(&job_with(&img.reference, storage));
        assert_eq!(r.status, 1, "{script}: {}", r.stderr);
        let result = r.json();
        assert_eq!(result["error_class"], "user", "{script}");
        let message = result["message"].as_str().unwrap();
        let expected = if fragment == "out.c-x.missing" {
            "missing.csv"
        } else {
            fragment
        };
        assert!(message.contains(expected), "{script}: {message}");
        assert_eq!(
            b.tables().keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{script}: storage changed"
        );
        assert!(b.files().is_empty(), "{script}: a file was uploaded");
        b.assert_clean(&[&job_id(&result)]);
    }
}

#[test]
fn state_travels_between_runs_and_is_kept_only_on_success() {
    require_env!();
    let b = Berth::new();
    let img = script_image(
        "state",
        r##"echo "IN $(cat /data/in/state.json | tr -d ' \n')"
n=$(sed -n 's/.*"count": *\([0-9]*\).*/\1/p' /data/in/state.json)
n=${n:-0}
echo "{\"count\": $((n + 1)), \"#token\": \"t\"}" > /data/out/state.json
[ "$(sed -n 's/.*"fail": *\(true\).*/\1/p' /data/config.json)" = true ] && exit 1
exit 0"##,
    );
    let j = job(&img.reference, json!({}), json!({}));
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("IN {}"), "{}", r.stderr);
    let r = b.run_job(&j);
    assert!(r.stderr.contains("\"count\":1}"), "{}", r.stderr);
    assert_eq!(b.state("acme.test", "42").unwrap()["component"]["count"], 2);
    // `state show` prints the stored state: its `#` values encrypted (the next run finds
    // them decrypted in in/state.json).
    let shown = b.component_state("acme.test", "42").unwrap();
    assert_eq!(shown["count"], 2);
    let token = shown["#token"].as_str().unwrap();
    assert!(token.starts_with("KBC::ProjectSecure::"), "{shown}");

    // A failed run leaves the state as it was.
    let failing = job(&img.reference, json!({}), json!({"fail": true}));
    let r = b.run_job(&failing);
    assert_eq!(r.status, 1);
    assert_eq!(b.state("acme.test", "42").unwrap()["component"]["count"], 2);

    // No out/state.json clears it.
    let clear = script_image(
        "state-clear",
        "echo \"IN $(cat /data/in/state.json | tr -d ' \\n')\"",
    );
    let r = b.run_job(&job(&clear.reference, json!({}), json!({})));
    assert!(r.stderr.contains("\"count\":2}"), "{}", r.stderr);
    assert_eq!(b.state("acme.test", "42").unwrap()["component"], json!({}));

    // An inline configuration (no config_id) keeps no state at all.
    let mut inline = j.clone();
    inline.as_object_mut().unwrap().remove("config_id");
    let r = b.run_job(&inline);
    assert!(r.stderr.contains("IN {}"), "{}", r.stderr);

    // A state that is not JSON is the component's error.
    let bad = script_image("state-bad", "echo 'not json' > /data/out/state.json");
    let r = b.run_job(&job(&bad.reference, json!({}), json!({})));
    assert_eq!(r.status, 1);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid out/state.json")
    );
}

#[test]
fn adaptive_tables_bring_only_rows_changed_since_the_last_run() {
    require_env!();
    let b = Berth::new();
    b.import(
        "in.c-main.events",
        "id,what\n1,a\n2,b\n",
        &["--primary-key", "id"],
    );
    let img = script_image("adaptive", DUMP);
    let j = job_with(
        &img.reference,
        json!({"input": {"tables": [
            {"source": "in.c-main.events", "destination": "events.csv", "changed_since": "adaptive"}
        ]}}),
    );
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        sections(&r.stderr)["tables/events.csv"],
        "id,what\n1,a\n2,b\n\n"
    );
    let r = b.run_job(&j);
    assert_eq!(
        sections(&r.stderr)["tables/events.csv"],
        "id,what\n\n",
        "nothing changed since"
    );
    b.import(
        "in.c-main.events",
        "id,what\n2,B\n3,c\n",
        &["--primary-key", "id", "--incremental"],
    );
    let r = b.run_job(&j);
    assert_eq!(
        sections(&r.stderr)["tables/events.csv"],
        "id,what\n2,B\n3,c\n\n"
    );
    let state = b.state("acme.test", "42").unwrap();
    assert_eq!(
        state["storage"]["input"]["tables"][0]["source"],
        "in.c-main.events"
    );
}

#[test]
fn rows_run_in_order_and_a_failed_row_leaves_storage_untouched() {
    require_env!();
    let b = Berth::new();
    b.import("out.c-main.counts", "row\nbefore\n", &[]);
    let img = script_image(
        "rows",
        r#"row=$(sed -n 's/.*"row": *"\([a-z0-9]*\)".*/\1/p' /data/config.json)
echo "ROW $row $KBC_CONFIGROWID"
printf "row\n$row\n" > /data/out/tables/counts.csv
echo '{"destination": "out.c-main.counts", "incremental": true}' > /data/out/tables/counts.csv.manifest
printf "row\n$row\n" > /data/out/tables/log.csv
echo '{"destination": "out.c-main.log", "incremental": true, "write_always": true}' > /data/out/tables/log.csv.manifest
[ "$row" = bad ] && { echo "row $row failed" >&2; exit 1; }
exit 0"#,
    );
    let rows = |second: &str| {
        let mut j = job(&img.reference, json!({}), json!({"shared": 1}));
        j["rows"] = json!([
            {"id": "r1", "configuration": {"parameters": {"row": "one"}}},
            {"id": "r2", "is_disabled": true, "configuration": {"parameters": {"row": "skipped"}}},
            {"id": "r3", "configuration": {"parameters": {"row": second}}},
        ]);
        j
    };
    let r = b.run_job(&rows("three"));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let order: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("ROW ")).collect();
    assert_eq!(order, vec!["ROW one r1", "ROW three r3"]);
    assert_eq!(b.export("out.c-main.counts"), "row\nbefore\none\nthree\n");

    // The second row fails: the first row's output is not applied — but write_always is.
    let r = b.run_job(&rows("bad"));
    assert_eq!(r.status, 1);
    assert_eq!(r.json()["message"], "row bad failed");
    assert_eq!(
        b.export("out.c-main.counts"),
        "row\nbefore\none\nthree\n",
        "a failed job changed storage"
    );
    assert_eq!(b.export("out.c-main.log"), "row\none\nthree\none\nbad\n");
    b.assert_clean(&[]);
}

#[test]
fn berth_killed_mid_commit_leaves_storage_before_or_after() {
    require_env!();
    // Two tables of 200,000 rows each, committed together: after a kill -9 at any moment,
    // either both are there in full or neither is.
    let img = script_image(
        "kill",
        "seq 1 200000 | awk '{print $1\",row\"$1}' > /tmp/body\n\
         { echo 'id,name'; cat /tmp/body; } > /data/out/tables/a.csv\n\
         cp /data/out/tables/a.csv /data/out/tables/b.csv",
    );
    let mut outcomes = BTreeMap::new();
    for delay_ms in [0u64, 200, 800, 2500, 8000] {
        let b = Berth::new();
        let path = b.write_job(&job_with(
            &img.reference,
            json!({"output": {"default_bucket": "out.c-k"}}),
        ));
        let (mut child, lines) =
            spawn_until_committing(b.cmd().args(["-v", "run", path.to_str().unwrap()]));
        // Kill at a different point of the commit each time (the last ones may come after
        // it finished: then the kill finds berth gone or cleaning up).
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // A rootless berth's killed process is the outer one: the berth inside its user
        // namespace gets SIGTERM and stops on its own. Its stderr closes when it is gone.
        for _ in lines {}
        let tables = b.tables();
        let state = match (tables.get("out.c-k.a"), tables.get("out.c-k.b")) {
            (None, None) => "before",
            (Some(a), Some(bt)) if a["rows"] == 200_000 && bt["rows"] == 200_000 => "after",
            other => panic!("storage is in between after kill -9: {other:?}"),
        };
        *outcomes.entry(state).or_insert(0) += 1;
        // The next berth cleans up after the killed one.
        let r = b.run_cmd(&["gc"]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        b.assert_clean(&[]);
    }
    eprintln!("kill -9 outcomes: {outcomes:?}");
    assert!(
        outcomes.contains_key("before"),
        "never killed during the commit: {outcomes:?}"
    );
}

#[test]
fn processed_input_files_are_tagged_once_the_job_succeeds() {
    require_env!();
    let b = Berth::new();
    let id = b.upload("a.txt", "A", &["in"]);
    let tags_of = |b: &Berth| -> Value {
        let files = b.files();
        let file = files.iter().find(|f| f["id"] == id).unwrap();
        file["tags"].clone()
    };
    let mapping = json!({"input": {"files": [{"tags": ["in"], "processed_tags": ["done"]}]}});
    // A failed job tags nothing.
    let failing = script_image("processed-fail", "ls /data/in/files >&2\nexit 1");
    let r = b.run_job(&job_with(&failing.reference, mapping.clone()));
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(tags_of(&b), json!(["in"]));
    let ok = script_image("processed-ok", "ls /data/in/files >&2");
    let r = b.run_job(&job_with(&ok.reference, mapping));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{id}_a.txt")), "{}", r.stderr);
    assert_eq!(tags_of(&b), json!(["in", "done"]));
}

#[test]
fn runtime_image_tag_runs_another_tag_of_the_component() {
    require_env!();
    let repo = unique_repo("image-tag");
    let one = push(&ImageSpec::script("echo version one >&2"), &repo, "1.0");
    push(&ImageSpec::script("echo version two >&2"), &repo, "2.0");
    let b = Berth::new();
    let mut j = job_with(&one.reference, json!({}));
    j["configuration"]["runtime"] = json!({"image_tag": "2.0"});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("version two"), "{}", r.stderr);
    assert!(
        r.json()["image"]["reference"]
            .as_str()
            .unwrap()
            .ends_with(":2.0")
    );
}
