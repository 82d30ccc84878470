//! Configuration validation end to end (contract §2): root keys as the original runner
//! takes them (an unknown one is an error, one without meaning here a warning), and the
//! component's JSON schema over `parameters`, checked before anything is pulled.

mod common;

use common::*;
use serde_json::{Value, json};

const SECRET: &str = "not-long-enough-secret";

fn schema() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "required": ["host"],
        "properties": {
            "host": {"type": "string"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "#password": {"type": "string", "minLength": 40}
        }
    })
}

/// An image that is nowhere: a job that got as far as pulling it would fail as berth's
/// error (exit 3), so a user error shows the check came first.
fn missing_image() -> String {
    format!("{}/{}:1", registry(), unique_repo("never-pushed"))
}

#[test]
fn a_schema_violation_names_the_path_and_no_secret_and_nothing_is_pulled() {
    require_env!();
    let b = Berth::new();
    let j = job(
        &missing_image(),
        json!({"configurationSchema": schema()}),
        json!({"host": "db", "port": 70000, "#password": SECRET}),
    );
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert_eq!(result["image"], Value::Null, "nothing was pulled");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("does not match the schema of component acme.test"),
        "{message}"
    );
    assert!(message.contains("/parameters/port: "), "{message}");
    assert!(message.contains("/parameters/#password: "), "{message}");
    for shown in [&r.stdout, &r.stderr] {
        assert!(!shown.contains(SECRET), "{shown}");
    }

    // The same through the text report, and for a row.
    let mut j = job(
        &missing_image(),
        json!({"configuration_schema": schema()}),
        json!({"host": "db"}),
    );
    j["rows"] = json!([{"id": "r1", "configuration": {"parameters": {"port": "80"}}}]);
    let path = b.write_job(&j);
    let r = b.run_cmd(&["run", path.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("berth: user error: the configuration of row r1 does not match"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("/parameters/port: "), "{}", r.stderr);
}

#[test]
fn an_unknown_root_key_is_an_error_and_a_key_without_meaning_a_warning() {
    require_env!();
    let b = Berth::new();
    // As the original runner's configuration tree: an unknown root key is refused.
    let mut j = job(&missing_image(), json!({}), json!({}));
    j["configuration"]["parameter"] = json!({"typo": true});
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("configuration"), "{message}");
    assert!(message.contains("unknown field `parameter`"), "{message}");

    // In a row, the same.
    let mut j = job(&missing_image(), json!({}), json!({}));
    j["rows"] = json!([{"id": "r1", "configuration": {"storrage": {}}}]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("rows[0].configuration"), "{message}");
    assert!(message.contains("unknown field `storrage`"), "{message}");

    // A key the original accepts that means nothing here runs, with a warning naming it.
    let img = push(
        &ImageSpec::script("echo ran >&2"),
        &unique_repo("inert"),
        "1",
    );
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"]["artifacts"] = json!({"options": {"zip": true}});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("ran"), "{}", r.stderr);
    assert!(
        r.stderr.contains("configuration key artifacts is accepted"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_valid_configuration_passes_the_schema_and_runs() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo \"PARAMS $(tr -d '\\n ' < /data/config.json)\" >&2"),
        &unique_repo("schema-ok"),
        "1",
    );
    let b = Berth::new();
    let password = "a".repeat(40);
    let j = job(
        &img.reference,
        json!({"configurationSchema": schema()}),
        json!({"host": "db", "port": 5432, "#password": password}),
    );
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.json()["status"], "success");
    assert!(
        r.stderr.contains("\"host\":\"db\"") && r.stderr.contains("\"port\":5432"),
        "{}",
        r.stderr
    );
    // The schema is the runner's: the component never sees it.
    assert!(!r.stderr.contains("configurationSchema"), "{}", r.stderr);
    assert!(!r.stderr.contains("minLength"), "{}", r.stderr);
}

#[test]
fn a_sandbox_checks_the_schema_and_prepares_nothing_on_a_violation() {
    require_env!();
    let b = Berth::new();
    let j = job(
        &missing_image(),
        json!({"configuration_schema": schema()}),
        json!({"port": 22}),
    );
    let path = b.write_job(&j);
    let out = b.dir.path().join("sandbox");
    let r = b.run_cmd(&[
        "sandbox",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("does not match the schema of component acme.test"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("/parameters"), "{}", r.stderr);
    assert!(!out.exists(), "a sandbox was prepared at {}", out.display());
}
