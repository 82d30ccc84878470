//! Processors and known components end to end (issue 9, contract §12): real images pushed
//! to a real registry, each image of the chain in its own container, and what lands in
//! storage.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

/// Copies every table of `in/` to `out/` in upper case (manifests as they are), says what
/// it saw, and leaves a state of its own that nobody may keep.
const UPPERCASE: &str = r#"
echo "PROC $KBC_COMPONENTID $KBC_CONFIGID $(tr -d '\n' < /data/config.json)"
[ -e /data/in/state.json ] && echo "PROC SAW STATE $(cat /data/in/state.json)"
cd /data/in/tables
for f in *; do
  case "$f" in
    '*') ;;
    *.manifest) cp "$f" /data/out/tables/ ;;
    *) tr a-z A-Z < "$f" > "/data/out/tables/$f" ;;
  esac
done
echo '{"processor": "state"}' > /data/out/state.json
"#;

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

/// Adds a known component (`berth component add`) and returns what berth printed.
fn add_component(b: &Berth, definition: &Value) -> Run {
    let bytes = serde_json::to_vec(definition).unwrap();
    let path = b
        .dir
        .path()
        .join(format!("component-{}.json", sha256(&bytes)));
    std::fs::write(&path, bytes).unwrap();
    b.run_cmd(&["component", "add", path.to_str().unwrap()])
}

fn import(b: &Berth, table: &str, csv: &str) {
    let path = b.dir.path().join(format!("{table}.csv"));
    std::fs::write(&path, csv).unwrap();
    let r = b.run_cmd(&["storage", "import", table, path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
}

fn export(b: &Berth, table: &str) -> Run {
    b.run_cmd(&["storage", "export", table])
}

/// The value of the first line `KEY …` a script printed.
fn line<'a>(stderr: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} ");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} line in:\n{stderr}"))
}

fn processor(id: &str, parameters: Value) -> Value {
    json!({"definition": {"component": id}, "parameters": parameters})
}

#[test]
fn a_before_processor_transforms_the_input_the_component_reads() {
    require_env!();
    let b = Berth::new();
    import(&b, "in.c-main.orders", "id,name\n1,ann\n2,bob\n");
    let upper = script_image("proc-upper", UPPERCASE);
    let r = add_component(
        &b,
        &json!({"id": "acme.upper", "image": upper.reference, "memory": "64m",
                "image_parameters": {"mode": "upper"}}),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let main = script_image(
        "proc-main",
        r#"echo "MAIN $KBC_COMPONENTID $(tr '\n' '|' < /data/in/tables/orders.csv)"
echo "MANIFEST $(tr -d '\n' < /data/in/tables/orders.csv.manifest)"
echo "STATE $(tr -d '\n' < /data/in/state.json)"
echo '{"cursor": 7}' > /data/out/state.json"#,
    );
    let mut j = job(&main.reference, json!({}), json!({"main": true}));
    j["configuration"]["storage"] = json!({"input": {"tables": [
        {"source": "in.c-main.orders", "destination": "orders.csv"}]}});
    j["configuration"]["processors"] =
        json!({"before": [processor("acme.upper", json!({"greeting": "hi"}))]});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);

    // The component read what the processor wrote, manifest and all.
    assert_eq!(
        line(&r.stderr, "MAIN"),
        "acme.test ID,NAME|1,ANN|2,BOB|",
        "{}",
        r.stderr
    );
    let manifest: Value = serde_json::from_str(line(&r.stderr, "MANIFEST")).unwrap();
    assert_eq!(manifest["id"], "in.c-main.orders", "{manifest}");
    assert_eq!(line(&r.stderr, "STATE"), "{}");
    // The processor: its own id, the job's configuration id, only its own parameters
    // and image parameters, and no state.
    let proc_line = line(&r.stderr, "PROC");
    let (ids, config) = proc_line.split_at(proc_line.find('{').unwrap());
    assert_eq!(ids, "acme.upper 42 ");
    assert_eq!(
        serde_json::from_str::<Value>(config).unwrap(),
        json!({"parameters": {"greeting": "hi"}, "storage": {}, "authorization": {},
               "image_parameters": {"mode": "upper"}, "action": "run"})
    );
    assert!(!r.stderr.contains("PROC SAW STATE"), "{}", r.stderr);

    // Both images are in the result, in order, with their digests.
    let result = r.json();
    let stages = result["image"]["stages"].as_array().unwrap();
    let got: Vec<(&str, &str, &str)> = stages
        .iter()
        .map(|s| {
            (
                s["component"].as_str().unwrap(),
                s["position"].as_str().unwrap(),
                s["digest"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("acme.upper", "before", upper.digest.as_str()),
            ("acme.test", "main", main.digest.as_str())
        ]
    );
    assert_eq!(result["image"]["digest"], json!(main.digest));
    // The component's state is kept; the processor's is not.
    let state = b.run_cmd(&["state", "show", "acme.test", "42"]);
    assert_eq!(state.status, 0, "{}", state.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&state.stdout).unwrap(),
        json!({"cursor": 7})
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn an_after_processor_transforms_the_output_before_it_lands_in_storage() {
    require_env!();
    let b = Berth::new();
    let upper = script_image("proc-after", UPPERCASE);
    assert_eq!(
        add_component(&b, &json!({"id": "acme.upper", "image": upper.reference})).status,
        0
    );
    let main = script_image(
        "proc-writer",
        r#"printf 'id,name\n1,ann\n' > /data/out/tables/result.csv
echo '{"cursor": 3}' > /data/out/state.json"#,
    );
    let mut j = job(&main.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"tables": [
        {"source": "result.csv", "destination": "out.c-main.result"}]}});
    j["configuration"]["processors"] = json!({"after": [
        processor("acme.upper", json!({"#token": "processor-secret-1"}))]});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    // The processor never sees the component's state; its secrets are masked.
    assert!(!r.stderr.contains("PROC SAW STATE"), "{}", r.stderr);
    let proc_line = line(&r.stderr, "PROC");
    assert!(
        proc_line.contains(r##""#token": "[hidden]""##),
        "{proc_line}"
    );
    assert!(!r.stdout.contains("processor-secret-1"));
    assert!(!r.stderr.contains("processor-secret-1"));
    assert_eq!(export(&b, "out.c-main.result").stdout, "ID,NAME\n1,ANN\n");
    let state = b.run_cmd(&["state", "show", "acme.test", "42"]);
    assert_eq!(
        serde_json::from_str::<Value>(&state.stdout).unwrap(),
        json!({"cursor": 3}),
        "the component's state, not the processor's"
    );
    let result = r.json();
    let positions: Vec<&str> = result["image"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["position"].as_str().unwrap())
        .collect();
    assert_eq!(positions, ["main", "after"]);
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_failing_processor_fails_the_job_naming_it_and_storage_is_unchanged() {
    require_env!();
    let b = Berth::new();
    let failing = script_image("proc-fail", "echo 'cannot decompress' >&2; exit 1");
    assert_eq!(
        add_component(
            &b,
            &json!({"id": "acme.broken", "image": failing.reference})
        )
        .status,
        0
    );
    let main = script_image(
        "proc-fail-main",
        r#"echo MAIN-RAN; printf 'a\n1\n' > /data/out/tables/t.csv
echo '{"cursor": 1}' > /data/out/state.json"#,
    );
    let mut j = job(&main.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"tables": [
        {"source": "t.csv", "destination": "out.c-main.t"}]}});
    j["configuration"]["processors"] = json!({"after": [processor("acme.broken", json!({}))]});
    let r = b.run_job(&j);
    assert_eq!(
        r.status, 1,
        "a processor's exit 1 is the user's error: {}",
        r.stderr
    );
    let result = r.json();
    assert_eq!(result["status"], "error");
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"], "processor acme.broken: cannot decompress",
        "{result}"
    );
    assert!(r.stderr.contains("MAIN-RAN"), "{}", r.stderr);
    assert_eq!(result["exit_code"], 1);
    assert_eq!(result["image"]["stages"][1]["component"], "acme.broken");
    // Nothing of the component's work was kept.
    assert_ne!(
        export(&b, "out.c-main.t").status,
        0,
        "the table was written"
    );
    let state = b.run_cmd(&["state", "show", "acme.test", "42"]);
    assert!(
        state.status != 0 || serde_json::from_str::<Value>(&state.stdout).unwrap() == json!({}),
        "a state was saved: {}",
        state.stdout
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn an_unknown_processor_is_a_user_error_before_any_image_is_pulled() {
    require_env!();
    let b = Berth::new();
    // Never pushed: pulling it would be berth's failure (exit 3), not the user's.
    let missing = format!("{}/{}:1.0", registry(), unique_repo("never-pushed"));
    let mut j = job(&missing, json!({}), json!({}));
    j["configuration"]["processors"] = json!({"before": [processor("acme.nope", json!({}))]});
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("configuration.processors.before[0].definition.component")
            && message.contains("\"acme.nope\" is not a known component")
            && message.contains(&b.home().join("components").display().to_string()),
        "{message}"
    );
    assert!(result["image"].is_null(), "{result}");
    let blobs = b.cache().join("blobs");
    let pulled = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert_eq!(pulled, 0, "something was pulled into {}", blobs.display());
}

#[test]
fn known_components_are_added_listed_replaced_and_removed() {
    require_env!();
    let b = Berth::new();
    let definition = json!({"id": "acme.known", "image": "127.0.0.1:5000/acme/known:1",
                            "memory": "64m", "image_parameters": {"#token": "secret"}});
    let r = add_component(&b, &definition);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "added component acme.known (127.0.0.1:5000/acme/known:1)"
    );
    let dir = b.home().join("components");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("acme.known.json")), 0o600);

    let list = b.run_cmd(&["component", "list"]);
    assert_eq!(list.status, 0, "{}", list.stderr);
    let rows: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    assert!(rows[0].starts_with("ID"), "{}", list.stdout);
    assert!(
        rows[1].starts_with("acme.known")
            && rows[1].contains("64m")
            && rows[1].ends_with("127.0.0.1:5000/acme/known:1"),
        "{}",
        list.stdout
    );

    // The same id again replaces it, and says so.
    let mut newer = definition.clone();
    newer["image"] = json!("127.0.0.1:5000/acme/known:2");
    let r = add_component(&b, &newer);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("replaced the known component acme.known"),
        "{}",
        r.stderr
    );
    let list = b.run_cmd(&["component", "list", "--json"]);
    let listed: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["image"], "127.0.0.1:5000/acme/known:2");
    assert_eq!(listed[0]["memory"], "64m");

    // Not a plain name, or not a definition: refused, nothing written.
    for bad in [
        json!({"id": "../escape", "image": "x/y"}),
        json!({"id": ".hidden", "image": "x/y"}),
        json!({"id": "acme.typo", "image": "x/y", "memroy": "1g"}),
    ] {
        let r = add_component(&b, &bad);
        assert_eq!(r.status, 1, "{bad}: {}", r.stderr);
    }
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["acme.known.json"]);

    let r = b.run_cmd(&["component", "remove", "acme.known"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!dir.join("acme.known.json").exists());
    let r = b.run_cmd(&["component", "remove", "acme.known"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("\"acme.known\" is not a known component"),
        "{}",
        r.stderr
    );
    let list = b.run_cmd(&["component", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&list.stdout).unwrap(),
        json!([])
    );
}

#[test]
fn a_job_may_name_its_component_by_id() {
    require_env!();
    let b = Berth::new();
    let img = script_image(
        "by-id",
        r#"echo "RAN $KBC_COMPONENTID $(tr -d '\n ' < /data/config.json)""#,
    );
    let r = add_component(
        &b,
        &json!({"id": "acme.named", "image": img.reference, "image_parameters": {"k": 1}}),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = json!({"component": "acme.named", "config_id": "7",
                   "configuration": {"parameters": {"p": 2}}});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let ran = line(&r.stderr, "RAN");
    assert!(ran.starts_with("acme.named {"), "{ran}");
    let config: Value = serde_json::from_str(&ran["acme.named ".len()..]).unwrap();
    assert_eq!(config["parameters"], json!({"p": 2}));
    assert_eq!(config["image_parameters"], json!({"k": 1}));
    assert_eq!(r.json()["image"]["digest"], json!(img.digest));

    // An unknown id is the user's error, naming it and where berth looked.
    let r = b.run_job(&json!({"component": "acme.other"}));
    assert_eq!(r.status, 1, "{}", r.stderr);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("component: \"acme.other\" is not a known component")
            && message.contains(&b.home().join("components").display().to_string()),
        "{message}"
    );
}

#[test]
fn processors_run_for_each_row() {
    require_env!();
    let b = Berth::new();
    let upper = script_image("proc-rows", UPPERCASE);
    assert_eq!(
        add_component(&b, &json!({"id": "acme.upper", "image": upper.reference})).status,
        0
    );
    let main = script_image(
        "proc-rows-main",
        r#"printf 'row\n%s\n' "$KBC_CONFIGROWID" > /data/out/tables/rows.csv"#,
    );
    let mut j = job(&main.reference, json!({}), json!({}));
    j["configuration"]["processors"] = json!({"after": [processor("acme.upper", json!({}))]});
    j["configuration"]["storage"] = json!({"output": {"tables": [
        {"source": "rows.csv", "destination": "out.c-main.rows", "incremental": true}]}});
    j["rows"] = json!([{"id": "first"}, {"id": "second"}]);
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(export(&b, "out.c-main.rows").stdout, "ROW\nFIRST\nSECOND\n");
    let result = r.json();
    let got: Vec<(&str, &str)> = result["image"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["row"].as_str().unwrap(), s["component"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("first", "acme.test"),
            ("first", "acme.upper"),
            ("second", "acme.test"),
            ("second", "acme.upper")
        ]
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_processor_runs_its_definitions_tag_under_its_own_limits() {
    require_env!();
    let b = Berth::new();
    let repo = unique_repo("proc-slow");
    push(&ImageSpec::script("echo PROC-V1"), &repo, "1.0");
    let two = push(&ImageSpec::script("echo PROC-V2; sleep 30"), &repo, "2.0");
    let r = add_component(
        &b,
        &json!({"id": "acme.slow", "image": format!("{}/{repo}:1.0", registry()),
                "process_timeout": 2}),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let main = script_image("proc-slow-main", "echo MAIN-RAN");
    let mut j = job(&main.reference, json!({}), json!({}));
    // The configuration's timeout is the component's, never a processor's.
    j["configuration"]["runtime"] = json!({"process_timeout": 600});
    j["configuration"]["processors"] =
        json!({"before": [{"definition": {"component": "acme.slow", "tag": "2.0"}}]});
    let started = std::time::Instant::now();
    let r = b.run_job(&j);
    assert!(
        started.elapsed().as_secs() < 25,
        "the processor was not stopped at 2 s"
    );
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(
        result["message"],
        "processor acme.slow: component acme.slow exceeded the timeout of 2 seconds"
    );
    assert!(r.stderr.contains("PROC-V2"), "{}", r.stderr);
    assert!(!r.stderr.contains("PROC-V1"), "{}", r.stderr);
    assert!(!r.stderr.contains("MAIN-RAN"), "{}", r.stderr);
    let stages = result["image"]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 1, "{result}");
    assert_eq!(stages[0]["digest"], json!(two.digest));
    assert!(
        stages[0]["reference"].as_str().unwrap().ends_with(":2.0"),
        "{result}"
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_processors_parameters_answer_to_its_own_schema_before_anything_is_pulled() {
    require_env!();
    let b = Berth::new();
    let missing = format!("{}/{}:1.0", registry(), unique_repo("never-pushed"));
    let r = add_component(
        &b,
        &json!({"id": "acme.strict", "image": missing,
                "configuration_schema": {"type": "object", "required": ["format"],
                                         "properties": {"format": {"enum": ["gzip", "zip"]}}}}),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let mut j = job(&missing, json!({}), json!({}));
    j["configuration"]["processors"] =
        json!({"before": [processor("acme.strict", json!({"format": "rar"}))]});
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user", "{result}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("does not match the schema of component acme.strict")
            && message.contains("/parameters/format: "),
        "{message}"
    );
    assert!(result["image"].is_null(), "nothing was pulled: {result}");
}

/// Prints the sha256 of its `#own` image parameter, and its whole `config.json`: an image
/// that shows whatever a configuration hands it.
const LEAK: &str = r##"own=$(sed -n 's/.*"#own": *"\([^"]*\)".*/\1/p' /data/config.json)
echo "OWN $(printf %s "$own" | sha256sum | cut -d' ' -f1)"
echo "LEAK $KBC_COMPONENTID $(tr -d '\n' < /data/config.json)""##;

#[test]
fn no_configuration_hands_an_image_parameter_secret_to_another_image() {
    require_env!();
    let b = Berth::new();
    // The processor's own secret is project-wide, so it also decrypts for the component.
    let proc_secret = "processor-own-secret-77";
    let proc_params = encrypted(
        &b,
        &["--component", "acme.leak", "--scope", "project-wide"],
        json!({"#own": proc_secret}),
    );
    let leak = script_image("proc-leak", LEAK);
    let r = add_component(
        &b,
        &json!({"id": "acme.leak", "image": leak.reference, "image_parameters": proc_params}),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let component_secret = "component-key-123";
    let component_params = encrypted(
        &b,
        &["--component", "acme.test", "--scope", "component"],
        json!({"#api_key": component_secret}),
    );
    let main = script_image("proc-leak-main", LEAK);
    let cases = [
        // The component's secret, copied into a processor's parameters.
        (
            json!({"before": [processor("acme.leak", json!({"#stolen": component_params["#api_key"]}))]}),
            json!({}),
            "processors.before[0].parameters.#stolen",
        ),
        // The processor's own secret, copied into its parameters.
        (
            json!({"after": [processor("acme.leak", json!({})),
                             processor("acme.leak", json!({"x": {"#copy": proc_params["#own"]}}))]}),
            json!({}),
            "processors.after[1].parameters.x.#copy",
        ),
        // The processor's secret, copied into the component's parameters.
        (
            json!({"after": [processor("acme.leak", json!({}))]}),
            json!({"#mine": proc_params["#own"]}),
            "parameters.#mine",
        ),
    ];
    for (processors, parameters, path) in cases {
        let mut j = job(
            &main.reference,
            json!({"image_parameters": component_params}),
            parameters,
        );
        j["configuration"]["processors"] = processors;
        let r = b.run_job(&j);
        assert_eq!(r.status, 1, "{path}: {}", r.stderr);
        let result = r.json();
        assert_eq!(result["error_class"], "user", "{path}: {result}");
        assert_eq!(
            result["message"],
            format!("component secrets cannot be used in configurations (used in \"{path}\")")
        );
        assert_eq!(result["exit_code"], Value::Null, "{path}: an image ran");
        assert!(!r.stderr.contains("LEAK"), "{path}: {}", r.stderr);
        for secret in [component_secret, proc_secret] {
            assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
        }
        b.assert_clean(&[&job_id(&result)]);
    }

    // Each image gets its own image parameters, decrypted, and nobody else's.
    let mut j = job(
        &main.reference,
        json!({"image_parameters": component_params}),
        json!({}),
    );
    j["configuration"]["processors"] = json!({"after": [processor("acme.leak", json!({"a": 1}))]});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let own: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("OWN "))
        .collect();
    let none = sha256(b"");
    assert_eq!(own, [none.as_str(), &sha256(proc_secret.as_bytes())]);
    let configs: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("LEAK "))
        .collect();
    assert_eq!(configs.len(), 2, "{}", r.stderr);
    let config_of =
        |line: &str| -> Value { serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap() };
    assert!(configs[0].starts_with("acme.test "), "{}", configs[0]);
    assert_eq!(
        config_of(configs[0])["image_parameters"],
        json!({"#api_key": "[hidden]"})
    );
    assert!(configs[1].starts_with("acme.leak "), "{}", configs[1]);
    assert_eq!(
        config_of(configs[1])["image_parameters"],
        json!({"#own": "[hidden]"})
    );
    assert_eq!(config_of(configs[1])["parameters"], json!({"a": 1}));
    for secret in [component_secret, proc_secret] {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    }
}

#[test]
fn links_and_fifos_one_image_leaves_in_out_never_reach_the_next() {
    require_env!();
    let b = Berth::new();
    // A hostile processor: the component's config.json (its decrypted image parameters)
    // as a table the component would copy to storage, and a FIFO that blocks a reader.
    let planter = script_image(
        "proc-planter",
        r#"ln -s /data/config.json /data/out/tables/config.csv
[ "$(sed -n 's/.*"fifo": *\(true\).*/\1/p' /data/config.json)" = true ] && mkfifo /data/out/files/pipe
echo PLANTED"#,
    );
    let r = add_component(
        &b,
        &json!({"id": "acme.planter", "image": planter.reference}),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let main = script_image(
        "proc-planter-main",
        r#"echo "MAIN $(tr -d '\n' < /data/in/tables/config.csv)"
[ -p /data/in/files/pipe ] && cat /data/in/files/pipe
exit 0"#,
    );
    for (parameters, planted, kind) in [
        (json!({}), "out/tables/config.csv", "a symlink"),
        (json!({"fifo": true}), "out/files/pipe", "a FIFO"),
    ] {
        let mut j = job(
            &main.reference,
            json!({"image_parameters": {"#api_key": "component-key-456"}}),
            json!({}),
        );
        j["configuration"]["processors"] =
            json!({"before": [processor("acme.planter", parameters)]});
        let r = b.run_job(&j);
        assert_eq!(r.status, 1, "{planted}: {}", r.stderr);
        assert!(r.stderr.contains("PLANTED"), "{}", r.stderr);
        let result = r.json();
        assert_eq!(result["error_class"], "user", "{result}");
        assert_eq!(
            result["message"],
            format!(
                "acme.planter left {planted}, {kind}: only regular files and directories \
                 pass to the next image"
            )
        );
        assert!(
            !r.stderr.contains("MAIN"),
            "the component ran: {}",
            r.stderr
        );
        let stages = result["image"]["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 1, "{result}");
        b.assert_clean(&[&job_id(&result)]);
    }
}
