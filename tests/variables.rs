//! Shared code and variables end to end: stored `keboola.shared-code` and
//! `keboola.variables` configurations, the job's own values, and a component that prints
//! the `config.json` it got.

// Helpers of the tests panic on what the tests would.
#![allow(clippy::unwrap_used)]

mod common;

use berth::storage::{StoreSettings, StoredConfiguration};
use common::*;
use serde_json::{Value, json};

/// Prints the config.json it got on one line.
const PRINT: &str = r#"echo "CONFIG $(tr -d '\n' < /data/config.json)""#;

/// The config.json the component printed (the last, for a job with rows: `nth`).
fn printed(stderr: &str, nth: usize) -> Value {
    let line = (stderr.lines())
        .filter_map(|l| l.strip_prefix("CONFIG "))
        .nth(nth)
        .unwrap_or_else(|| panic!("no config.json #{nth} printed in:\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

/// Stores a configuration (with rows: `[{"id", "configuration"}]`) in `b`'s store.
fn put(b: &Berth, component: &str, id: &str, configuration: Value, rows: Value) {
    let store = berth::storage::open(&StoreSettings::embedded(&b.home())).unwrap();
    let config: StoredConfiguration = serde_json::from_value(json!({
        "component": component, "id": id, "configuration": configuration, "rows": rows
    }))
    .unwrap();
    store.put_configuration(&config).unwrap();
    drop(store);
    // The operator of the tests' berths must own what was stored as root here.
    if let Some((uid, gid)) = test_user() {
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(b.home())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Variables `vars` (`name`, `quote`: values `default` and `other`) and shared code `sc`
/// (row `greet`, two statements naming a variable).
fn store_variables_and_shared_code(b: &Berth) {
    put(
        b,
        "keboola.variables",
        "vars",
        json!({"variables": [{"name": "name", "type": "string"},
                             {"name": "quote", "type": "string"}]}),
        json!([
            {"id": "default", "configuration": {"values": [
                {"name": "name", "value": "world"},
                {"name": "quote", "value": "say \"hi\" \\ / é"}]}},
            {"id": "other", "configuration": {"values": [
                {"name": "name", "value": "other"}, {"name": "quote", "value": "'"}]}}
        ]),
    );
    put(
        b,
        "keboola.shared-code",
        "sc",
        json!({}),
        json!([{"id": "greet", "configuration": {
            "code_content": ["SELECT '{{ name }}';", "SELECT 2;"]}}]),
    );
}

/// An image that is nowhere: a job that got as far as pulling it would fail as berth's
/// error (exit 3), so a user error shows the check came first.
fn missing_image() -> String {
    format!("{}/{}:1", registry(), unique_repo("never-pushed"))
}

#[test]
fn placeholders_are_replaced_with_the_default_the_jobs_row_or_inline_values() {
    require_env!();
    let b = Berth::new();
    store_variables_and_shared_code(&b);
    let img = push(&ImageSpec::script(PRINT), &unique_repo("variables"), "1");
    let mut j = job(
        &img.reference,
        json!({}),
        json!({"greeting": "hello {{ name }}", "quote": "{{ quote }}",
               "raw": "{{{ name }}}", "script": ["BEGIN;", "{{ greet }}"]}),
    );
    let c = &mut j["configuration"];
    c["variables_id"] = json!("vars");
    c["variables_values_id"] = json!("default");
    c["shared_code_id"] = json!("sc");
    c["shared_code_row_ids"] = json!(["greet"]);

    // The configuration's default values.
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let config = printed(&r.stderr, 0);
    assert_eq!(
        config["parameters"],
        json!({"greeting": "hello world", "quote": "say \"hi\" \\ / é", "raw": "world",
               "script": ["BEGIN;", "SELECT 'world';", "SELECT 2;"]})
    );
    assert_eq!(config["variables_id"], "vars");
    assert!(
        r.stderr
            .contains("loaded shared code snippets with ids: \"greet\""),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("replacing variables using default values with id \"default\""),
        "{}",
        r.stderr
    );
    let result = r.json();
    assert_eq!(
        result["variables"],
        json!([{"name": "name", "value": "world"},
               {"name": "quote", "value": "say \"hi\" \\ / é"}])
    );

    // The row the job names instead.
    j["variable_values_id"] = json!("other");
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let params = &printed(&r.stderr, 0)["parameters"];
    assert_eq!(params["greeting"], "hello other");
    assert_eq!(params["quote"], "'");

    // Inline values, by the name of Keboola's job API.
    let j = {
        let mut j = j;
        j.as_object_mut().unwrap().remove("variable_values_id");
        j["variableValuesData"] =
            json!({"values": [{"name": "name", "value": "inline"}, {"name": "quote", "value": 7}]});
        j
    };
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let params = &printed(&r.stderr, 0)["parameters"];
    assert_eq!(params["greeting"], "hello inline");
    assert_eq!(params["quote"], "7");
    assert_eq!(params["script"][1], "SELECT 'inline';");
}

#[test]
fn each_row_is_resolved_merged_and_a_sandbox_gets_the_same() {
    require_env!();
    let b = Berth::new();
    store_variables_and_shared_code(&b);
    let img = push(
        &ImageSpec::script(PRINT),
        &unique_repo("variables-rows"),
        "1",
    );
    let mut j = job(&img.reference, json!({}), json!({"who": "{{ name }}"}));
    j["configuration"]["variables_id"] = json!("vars");
    j["configuration"]["variables_values_id"] = json!("default");
    j["rows"] = json!([
        {"id": "r1"},
        {"id": "r2", "configuration": {"variables_values_id": "other"}}
    ]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(printed(&r.stderr, 0)["parameters"]["who"], "world");
    assert_eq!(printed(&r.stderr, 1)["parameters"]["who"], "other");
    // A name both rows used shows the last row's value.
    assert_eq!(
        r.json()["variables"],
        json!([{"name": "name", "value": "other"}])
    );

    let path = b.write_job(&j);
    let out = b.dir.path().join("sandbox");
    let r = b.run_cmd(&[
        "sandbox",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let read = |row: &str| -> Value {
        serde_json::from_slice(&std::fs::read(out.join(row).join("config.json")).unwrap()).unwrap()
    };
    assert_eq!(read("r1")["parameters"]["who"], "world");
    assert_eq!(read("r2")["parameters"]["who"], "other");
}

#[test]
fn placeholders_without_values_fail_as_the_users_error_before_anything_is_pulled() {
    require_env!();
    let b = Berth::new();
    store_variables_and_shared_code(&b);
    let user_error = |j: &Value| -> String {
        let r = b.run_job(j);
        assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
        let result = r.json();
        assert_eq!(result["error_class"], "user");
        assert_eq!(result["image"], Value::Null, "nothing was pulled");
        result["message"].as_str().unwrap().to_owned()
    };
    let mut j = job(
        &missing_image(),
        json!({}),
        json!({"a": "{{ nope }} {{ vault.token }} {{ name }} {{ other }}"}),
    );
    j["configuration"]["variables_id"] = json!("vars");
    j["configuration"]["variables_values_id"] = json!("default");
    // As the original: the vault's placeholder is missing, and Mustache then looks up
    // `vault` of `vault.token`, which is missing too.
    assert_eq!(
        user_error(&j),
        "the configuration: missing values for placeholders: vault.token, nope, vault, other"
    );

    // A job giving values twice.
    let mut twice = j.clone();
    twice["variable_values_id"] = json!("other");
    twice["variable_values_data"] = json!({"values": [{"name": "name", "value": "x"}]});
    let m = user_error(&twice);
    assert!(m.contains("only one of variable_values_id"), "{m}");

    // Values that leave a declared variable out.
    let mut short = j.clone();
    short["variable_values_data"] = json!({"values": [{"name": "name", "value": "x"}]});
    assert_eq!(
        user_error(&short),
        "the configuration: no value provided for variable \"quote\""
    );

    // A variables configuration that is not stored, in a row.
    let mut j = job(&missing_image(), json!({}), json!({}));
    j["rows"] = json!([{"id": "r1", "configuration": {"variables_id": "gone"}}]);
    let m = user_error(&j);
    assert!(
        m.starts_with(
            "the configuration of row r1: variable configuration cannot be read: configuration \
             \"gone\" of keboola.variables is not stored"
        ),
        "{m}"
    );

    // Without variables, a `{{ name }}` stays as it is, but a vault placeholder is missing:
    // berth has no vault.
    let j = job(&missing_image(), json!({}), json!({"x": "{{ vault.key }}"}));
    assert_eq!(
        user_error(&j),
        "the configuration: missing values for placeholders: vault.key"
    );
}
