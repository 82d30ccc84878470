//! `berth test IMAGE CASES_DIR`: datadir cases (keboola.datadirtest, keboola/datadir-tests)
//! run through real images from the test registry, in real containers.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// A component in a shell script: what it does is the configuration's `mode`; it counts its
/// runs in its state and says who it is on stdout.
const COMPONENT: &str = r#"
cfg=$(cat /data/config.json)
case "$cfg" in
  *'"copy"'*) mode=copy ;;
  *'"fail"'*) mode=fail ;;
  *'"crash"'*) mode=crash ;;
  *'"quiet"'*) mode=quiet ;;
  *) mode=count ;;
esac
echo "mode $mode"
echo "component $KBC_COMPONENTID"
runs=$(sed -n 's/.*"runs": *\([0-9]*\).*/\1/p' /data/in/state.json)
runs=$((${runs:-0} + 1))
echo "{\"runs\": $runs}" > /data/out/state.json
case $mode in
  copy)
    cp /data/in/tables/input.csv /data/out/tables/output.csv
    printf '{"primary_key": ["id"], "incremental": true}' > /data/out/tables/output.csv.manifest
    ;;
  fail) echo "bad parameter mode" >&2; exit 1 ;;
  crash) echo "boom" >&2; exit 2 ;;
  count) printf 'runs\n%s\n' $runs > /data/out/tables/runs.csv ;;
esac
"#;

fn image() -> BuiltImage {
    push(
        &ImageSpec::script(COMPONENT),
        &unique_repo("datadir"),
        "1.0",
    )
}

/// Writes `files` (path → content) below `root`.
fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

const INPUT: &str = "id,amount\n1,10\n2,20\n";

fn config(mode: &str) -> String {
    format!(r#"{{"parameters": {{"mode": "{mode}"}}}}"#)
}

/// Cases that all pass: PHP's layout (expected-code, expected-stdout and -stderr with
/// formats), Python's (no expected folder at all, a chain), `.gitkeep`s, a manifest
/// written with other key order and whitespace, and a folder `_` marks as no case.
fn passing_cases(root: &Path) {
    // keboola/datadir-tests' placeholder, from berth's environment (see the test).
    let copy = config("%env(string:DATADIR_TEST_COPY)%");
    write(
        &root.join("01-copy"),
        &[
            ("source/data/config.json", copy.as_str()),
            ("source/data/in/tables/input.csv", INPUT),
            ("expected/data/out/tables/output.csv", INPUT),
            (
                "expected/data/out/tables/output.csv.manifest",
                "{\n    \"incremental\": true,\n    \"primary_key\": [\"id\"]\n}\n",
            ),
            ("expected/data/out/files/.gitkeep", ""),
            ("expected-code", "0\n"),
            ("expected-stdout", "mode copy\ncomponent %s\n"),
        ],
    );
    let fail = config("fail");
    write(
        &root.join("02-user-error"),
        &[
            ("source/data/config.json", fail.as_str()),
            ("source/data/in/tables/.gitkeep", ""),
            ("expected-code", "1"),
            ("expected-stderr", "bad parameter %s"),
        ],
    );
    // Python's layout: no expected-code; the state the component writes is not compared;
    // keboola.datadirtest's placeholder.
    let count = config("{{env.DATADIR_TEST_COUNT}}");
    write(
        &root.join("03-python-layout"),
        &[
            ("source/data/config.json", count.as_str()),
            ("source/data/in/state.json", r#"{"runs": 4}"#),
            ("expected/data/out/tables/runs.csv", "runs\n5\n"),
        ],
    );
    // A chain: the second step starts from the state the first left.
    write(
        &root.join("04-chain"),
        &[
            ("01-first/source/data/config.json", count.as_str()),
            ("01-first/expected/data/out/tables/runs.csv", "runs\n1\n"),
            ("02-second/source/data/config.json", count.as_str()),
            ("02-second/expected/data/out/tables/runs.csv", "runs\n2\n"),
        ],
    );
    // Nothing expected (Python, where the folder is missing): no table and no file.
    let quiet = config("quiet");
    write(
        &root.join("05-nothing-expected"),
        &[("source/data/config.json", quiet.as_str())],
    );
    write(root, &[("_shared/notes.txt", "not a case")]);
}

#[test]
fn passing_cases_pass_and_their_folders_are_left_as_they_were() {
    require_env!();
    let img = image();
    let b = Berth::new();
    let cases = b.dir.path().join("functional");
    passing_cases(&cases);
    let before = describe_tree(&cases);

    let test = |args: &[&str]| -> Run {
        let mut c = b.cmd();
        c.env("DATADIR_TEST_COPY", "copy")
            .env("DATADIR_TEST_COUNT", "count")
            .arg("test")
            .args(args)
            .args([&img.reference, cases.to_str().unwrap()]);
        Run::from(c.output().unwrap())
    };
    let r = test(&[]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "ok   01-copy",
            "ok   02-user-error",
            "ok   03-python-layout",
            "ok   04-chain",
            "ok   05-nothing-expected",
            "5 passed, 0 failed",
        ],
        "{}",
        r.stderr
    );
    assert_eq!(describe_tree(&cases), before, "a case folder was changed");

    let r = test(&["--json"]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["passed"], 5);
    assert_eq!(report["failed"], 0);
    let cases_json = report["cases"].as_array().unwrap();
    let names: Vec<&str> = cases_json
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "01-copy",
            "02-user-error",
            "03-python-layout",
            "04-chain",
            "05-nothing-expected"
        ]
    );
    for c in cases_json {
        assert_eq!(c.as_object().unwrap().len(), 3, "{c}");
        assert_eq!(c["passed"], true, "{c}");
        assert_eq!(c["message"], "", "{c}");
    }
    assert_eq!(describe_tree(&cases), before, "a case folder was changed");
    // Nothing of the runs is left in berth's home, and no store was ever opened.
    let jobs: Vec<_> = fs::read_dir(b.home().join("jobs")).unwrap().collect();
    assert!(jobs.is_empty(), "{jobs:?}");
    assert!(!b.home().join("storage").exists(), "a store was made");

    // Without the variables its configurations name, a case fails saying which.
    let r = b.run_cmd(&["test", &img.reference, cases.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("FAIL 01-copy\n     Env variable \"DATADIR_TEST_COPY\" not found.\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "FAIL 03-python-layout\n     environment variable DATADIR_TEST_COUNT that \
             config.json names ({{env.DATADIR_TEST_COUNT}}) is not set\n"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn failing_cases_say_what_differs() {
    require_env!();
    let img = image();
    let b = Berth::new();
    let cases = b.dir.path().join("functional");
    let copy = config("copy");
    let fail = config("fail");
    write(
        &cases.join("good"),
        &[
            ("source/data/config.json", copy.as_str()),
            ("source/data/in/tables/input.csv", INPUT),
            ("expected/data/out/tables/output.csv", INPUT),
            (
                "expected/data/out/tables/output.csv.manifest",
                r#"{"incremental": true, "primary_key": ["id"]}"#,
            ),
        ],
    );
    write(
        &cases.join("wrong-table"),
        &[
            ("source/data/config.json", copy.as_str()),
            ("source/data/in/tables/input.csv", INPUT),
            (
                "expected/data/out/tables/output.csv",
                "id,amount\n1,10\n2,21\n",
            ),
            (
                "expected/data/out/tables/output.csv.manifest",
                r#"{"incremental": false, "primary_key": ["id"]}"#,
            ),
            ("expected/data/out/files/report.txt", "x"),
        ],
    );
    write(
        &cases.join("wrong-code"),
        &[
            ("source/data/config.json", fail.as_str()),
            ("expected/data/out/tables/.gitkeep", ""),
        ],
    );
    write(
        &cases.join("wrong-stdout"),
        &[
            ("source/data/config.json", copy.as_str()),
            ("source/data/in/tables/input.csv", INPUT),
            ("expected-code", "0"),
            ("expected-stdout", "mode paste\ncomponent %s"),
        ],
    );
    write(
        &cases.join("bad-expected-code"),
        &[
            ("source/data/config.json", copy.as_str()),
            ("expected-code", "7"),
        ],
    );
    let before = describe_tree(&cases);

    let r = b.run_cmd(&["test", &img.reference, cases.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(out.ends_with("1 passed, 4 failed\n"), "{out}");
    assert!(out.contains("ok   good\n"), "{out}");
    for name in [
        "wrong-table",
        "wrong-code",
        "wrong-stdout",
        "bad-expected-code",
    ] {
        assert!(out.contains(&format!("FAIL {name}\n")), "{out}");
    }
    // The table's diff, the manifest's as JSON, and the file the component did not write.
    let expected_diff = "     out/tables/output.csv differs:\n\
                         \x20    --- expected/data/out/tables/output.csv\n\
                         \x20    +++ out/tables/output.csv\n\
                         \x20    @@ -1,3 +1,3 @@\n\
                         \x20     id,amount\n\
                         \x20     1,10\n\
                         \x20    -2,21\n\
                         \x20    +2,20\n";
    assert!(out.contains(expected_diff), "{out}");
    assert!(
        out.contains("out/tables/output.csv.manifest differs (as JSON):"),
        "{out}"
    );
    assert!(
        out.contains("-  \"incremental\": false,\n     +  \"incremental\": true,"),
        "{out}"
    );
    assert!(
        out.contains("     only in the expectation: out/files/report.txt\n"),
        "{out}"
    );
    assert!(out.contains("     exit code 1, expected 0: "), "{out}");
    assert!(out.contains("bad parameter mode"), "{out}");
    assert!(
        out.contains("     stdout does not match expected-stdout:\n"),
        "{out}"
    );
    assert!(
        out.contains("     -mode paste\n") && out.contains("     +mode copy\n"),
        "{out}"
    );
    assert!(
        out.contains("     expected-code holds \"7\": the possible codes are 0, 1 and 2\n"),
        "{out}"
    );

    let r = b.run_cmd(&["test", "--json", &img.reference, cases.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(4))
    );
    let wrong_table = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wrong-table")
        .unwrap();
    assert_eq!(wrong_table["passed"], false);
    let message = wrong_table["message"].as_str().unwrap();
    assert!(message.contains("-2,21\n+2,20"), "{message}");
    assert_eq!(describe_tree(&cases), before, "a case folder was changed");

    // One case, by name.
    let r = b.run_cmd(&[
        "test",
        "--case",
        "good",
        &img.reference,
        cases.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "ok   good\n1 passed, 0 failed\n");
}

#[test]
fn a_wrong_cases_folder_is_the_users_error() {
    require_env!();
    let b = Berth::new();
    let image = format!("{}/nothing/here:1", registry());
    let missing = b.dir.path().join("missing");
    let r = b.run_cmd(&["test", &image, missing.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "berth: cannot read the cases folder {}: ",
            missing.display()
        )),
        "{}",
        r.stderr
    );
    let empty = b.dir.path().join("empty");
    fs::create_dir_all(empty.join("_ignored")).unwrap();
    let r = b.run_cmd(&["test", &image, empty.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("berth: {} holds no case", empty.display())),
        "{}",
        r.stderr
    );
    write(&empty, &[("one/source/data/config.json", "{}")]);
    let r = b.run_cmd(&["test", "--case", "two", &image, empty.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("berth: {} has no case two", empty.display())),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn an_image_berth_cannot_pull_stops_the_test() {
    require_env!();
    let b = Berth::new();
    let image = format!("{}/{}:1", registry(), unique_repo("absent"));
    let cases = b.dir.path().join("functional");
    write(&cases, &[("one/source/data/config.json", "{}")]);
    let r = b.run_cmd(&["test", &image, cases.to_str().unwrap()]);
    assert_eq!(r.status, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "no case ran: {}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("berth: image {image} not found in the registry")),
        "{}",
        r.stderr
    );
}
