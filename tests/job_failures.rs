//! The job loop's failure paths, without root: the kernel and the container runtime are the
//! recording fakes (`test-utils`), everything else — image store, unpack, data folder,
//! mappings, storage — is real. A failure at any step of a job must leave nothing behind
//! (no job directory, bundle, mount or container) and storage as it was.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::path::PathBuf;

use berth::contract::{ErrorClass, JobFile, JobResult};
use berth::host::fake::FakeHost;
use berth::image::Digest;
use berth::job::{RunOptions, Services, Settings};
use berth::runtime::fake::{FakeRuntime, RuntimeCall, Step, outcome};
use berth::storage::{Changes, CsvSource, Provenance, Storage, TableLoad};
use serde_json::{Value, json};

/// A home, a cache holding one small image (no registry needed: it is pinned), and a
/// project store holding one table that no failed job may change.
struct Fixture {
    _dir: tempfile::TempDir,
    settings: Settings,
    image: String,
}

const KEPT_CSV: &str = "id,name\n1,kept\n";

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (settings, image) = common::offline_settings(dir.path());
    let csv = dir.path().join("kept.csv");
    fs::write(&csv, KEPT_CSV).unwrap();
    let load = TableLoad::new(
        "in.c-main.kept".parse().unwrap(),
        CsvSource::file(&csv),
        Provenance {
            component: "seed".into(),
            ..Default::default()
        },
    );
    let changes = Changes {
        tables: vec![load],
        ..Default::default()
    };
    storage(&settings).apply(&changes).unwrap();
    Fixture {
        _dir: dir,
        settings,
        image,
    }
}

fn storage(settings: &Settings) -> Box<dyn Storage> {
    berth::storage::open(&settings.store).unwrap()
}

fn job(f: &Fixture, extra: Value) -> JobFile {
    let mut job = json!({
        "component": {"id": "acme.fake", "image": f.image, "network": "none"},
        "config_id": "7",
        "configuration": {"parameters": {}}
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut job, extra) {
        base.extend(more);
    }
    JobFile::parse(&serde_json::to_vec(&job).unwrap()).unwrap()
}

fn run(f: &Fixture, host: &FakeHost, runtime: &FakeRuntime, job: &JobFile) -> JobResult {
    let svc = Services { host, runtime };
    berth::job::run(svc, &f.settings, job, &RunOptions::default(), &mut |_| {})
}

/// Tables and their CSV, as storage has them.
fn snapshot(f: &Fixture) -> Vec<(String, String)> {
    let s = storage(&f.settings);
    s.tables()
        .unwrap()
        .into_iter()
        .map(|t| {
            let mut csv = Vec::new();
            s.export(&t.id, &Default::default(), &mut csv).unwrap();
            (t.id.to_string(), String::from_utf8(csv).unwrap())
        })
        .collect()
}

fn untouched() -> Vec<(String, String)> {
    vec![("in.c-main.kept".to_owned(), KEPT_CSV.to_owned())]
}

fn entries(dir: PathBuf) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_nothing_left(f: &Fixture, host: &FakeHost, runtime: &FakeRuntime) {
    let home = &f.settings.home;
    assert_eq!(
        entries(home.join("jobs")),
        Vec::<String>::new(),
        "job directories"
    );
    assert_eq!(
        entries(home.join("run/bundles")),
        Vec::<String>::new(),
        "bundles"
    );
    assert_eq!(host.mounted(), Vec::<PathBuf>::new(), "mounts");
    assert_eq!(runtime.live(), Vec::<String>::new(), "containers");
}

/// A component that writes `out/tables/<name>` with `csv` (and a manifest if given).
fn writes(
    tables: &'static [(&'static str, &'static str, Option<&'static str>)],
    code: i32,
) -> FakeRuntime {
    FakeRuntime::new(move |data| {
        for (name, csv, manifest) in tables {
            fs::write(data.join("out/tables").join(name), csv).unwrap();
            if let Some(m) = manifest {
                fs::write(data.join(format!("out/tables/{name}.manifest")), m).unwrap();
            }
        }
        outcome(code)
    })
}

#[test]
fn a_successful_job_lands_its_table_and_leaves_nothing() {
    let f = fixture();
    let host = FakeHost::default();
    let runtime = writes(&[("new.csv", "a\n1\n", None)], 0);
    let mapping = json!({"storage": {"output": {"default_bucket": "out.c-x"}}});
    let r = run(
        &f,
        &host,
        &runtime,
        &job(&f, json!({"configuration": mapping})),
    );
    assert_eq!(r.error_class, None, "{}", r.message);
    let mut want = untouched();
    want.push(("out.c-x.new".to_owned(), "a\n1\n".to_owned()));
    want.sort();
    assert_eq!(snapshot(&f), want);
    assert_nothing_left(&f, &host, &runtime);
    let deleted = runtime
        .calls()
        .iter()
        .filter(|c| matches!(c, RuntimeCall::Delete { .. }))
        .count();
    assert_eq!(deleted, 1);
}

#[test]
fn a_missing_image_fails_before_anything_exists() {
    let f = fixture();
    let host = FakeHost::default();
    let runtime = FakeRuntime::exiting(0);
    let mut j = job(&f, json!({}));
    j.component.image = format!("127.0.0.1:9/test/none@{}", Digest::of(b"not stored"));
    let r = run(&f, &host, &runtime, &j);
    assert_eq!(r.error_class, Some(ErrorClass::Internal), "{}", r.message);
    assert!(r.message.contains("127.0.0.1:9"), "{}", r.message);
    assert!(runtime.calls().is_empty());
    assert_nothing_left(&f, &host, &runtime);
    assert_eq!(snapshot(&f), untouched());
}

#[test]
fn a_missing_input_table_fails_before_the_container() {
    let f = fixture();
    let host = FakeHost::default();
    let runtime = FakeRuntime::exiting(0);
    let storage = json!({"storage": {"input": {"tables": [{"source": "in.c-main.nope"}]}}});
    let r = run(
        &f,
        &host,
        &runtime,
        &job(&f, json!({"configuration": storage})),
    );
    assert_eq!(r.error_class, Some(ErrorClass::User), "{}", r.message);
    assert!(r.message.contains("in.c-main.nope"), "{}", r.message);
    assert!(runtime.calls().is_empty());
    assert_nothing_left(&f, &host, &runtime);
    assert_eq!(snapshot(&f), untouched());
}

#[test]
fn runtime_failures_at_each_step_leave_nothing_and_change_nothing() {
    for step in [Step::Create, Step::Start, Step::Wait] {
        let f = fixture();
        let host = FakeHost::default();
        let runtime = writes(&[("new.csv", "a\n1\n", None)], 0).failing_at(step);
        let r = run(&f, &host, &runtime, &job(&f, json!({})));
        assert_eq!(
            r.error_class,
            Some(ErrorClass::Internal),
            "{step:?}: {}",
            r.message
        );
        assert!(r.message.contains("injected"), "{step:?}: {}", r.message);
        assert_nothing_left(&f, &host, &runtime);
        assert_eq!(snapshot(&f), untouched(), "{step:?}");
    }
}

#[test]
fn a_container_that_cannot_be_removed_fails_the_job_and_commits_nothing() {
    let f = fixture();
    let host = FakeHost::default();
    let runtime = writes(&[("new.csv", "a\n1\n", None)], 0).failing_at(Step::Delete);
    let r = run(&f, &host, &runtime, &job(&f, json!({})));
    assert_eq!(r.error_class, Some(ErrorClass::Internal), "{}", r.message);
    assert!(
        r.message.contains("cannot remove container"),
        "{}",
        r.message
    );
    assert_eq!(snapshot(&f), untouched());
    // The container itself is what could not be removed; the rest is gone.
    let home = &f.settings.home;
    assert_eq!(entries(home.join("jobs")), Vec::<String>::new());
    assert_eq!(host.mounted(), Vec::<PathBuf>::new());
}

#[test]
fn a_failed_component_commits_only_write_always_tables() {
    let f = fixture();
    let host = FakeHost::default();
    let runtime = writes(
        &[
            ("lost.csv", "a\n1\n", None),
            ("always.csv", "a\n2\n", Some(r#"{"write_always": true}"#)),
        ],
        1,
    );
    let mapping = json!({"storage": {"output": {"default_bucket": "out.c-x"}}});
    let r = run(
        &f,
        &host,
        &runtime,
        &job(&f, json!({"configuration": mapping})),
    );
    assert_eq!(r.error_class, Some(ErrorClass::User), "{}", r.message);
    let mut want = untouched();
    want.push(("out.c-x.always".to_owned(), "a\n2\n".to_owned()));
    want.sort();
    assert_eq!(snapshot(&f), want);
    assert_nothing_left(&f, &host, &runtime);
}

#[test]
fn invalid_outputs_and_a_refused_commit_change_nothing() {
    let cases: [&'static [(&str, &str, Option<&str>)]; 2] = [
        // A manifest that is not JSON: the output mapping refuses it.
        &[("t.csv", "a\n1\n", Some("{not json"))],
        // A ragged CSV: storage refuses it at the commit.
        &[("t.csv", "a,b\n1\n", None)],
    ];
    for tables in cases {
        let f = fixture();
        let host = FakeHost::default();
        let runtime = writes(tables, 0);
        let mapping = json!({"storage": {"output": {"default_bucket": "out.c-x"}}});
        let r = run(
            &f,
            &host,
            &runtime,
            &job(&f, json!({"configuration": mapping})),
        );
        assert_eq!(r.error_class, Some(ErrorClass::User), "{}", r.message);
        assert!(r.message.contains("t.csv"), "{}", r.message);
        assert_eq!(snapshot(&f), untouched());
        assert_nothing_left(&f, &host, &runtime);
    }
}

#[test]
fn a_failed_second_row_discards_the_first_rows_outputs_and_state() {
    let f = fixture();
    let host = FakeHost::default();
    let runtime = FakeRuntime::new(|data| {
        let config: Value =
            serde_json::from_slice(&fs::read(data.join("config.json")).unwrap()).unwrap();
        let row = config["parameters"]["row"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        fs::write(data.join("out/tables/t.csv"), format!("a\n{row}\n")).unwrap();
        fs::write(data.join("out/state.json"), r#"{"seen": true}"#).unwrap();
        outcome(if row == "2" { 2 } else { 0 })
    });
    let rows = json!({
        "configuration": {"storage": {"output": {"default_bucket": "out.c-x"}}},
        "rows": [
            {"id": "r1", "configuration": {"parameters": {"row": "1"}}},
            {"id": "r2", "configuration": {"parameters": {"row": "2"}}}
        ]
    });
    let r = run(&f, &host, &runtime, &job(&f, rows));
    assert_eq!(
        r.error_class,
        Some(ErrorClass::Application),
        "{}",
        r.message
    );
    assert_eq!(snapshot(&f), untouched());
    let state = storage(&f.settings).state(&berth::storage::StateKey {
        component: "acme.fake".into(),
        config: "7".into(),
        row: Some("r1".into()),
    });
    assert_eq!(state.unwrap(), None);
    assert_nothing_left(&f, &host, &runtime);
}

#[test]
fn a_component_that_leaves_more_than_its_disk_limit_fails_and_changes_nothing() {
    let f = fixture();
    let host = FakeHost::default();
    // It writes a table and a state, and 12 MiB in out/files, then exits 0: the runtime's
    // last measurement finds it past its 5m.
    let runtime = FakeRuntime::new(|data: &std::path::Path| {
        fs::write(data.join("out/tables/t.csv"), "a\n1\n").unwrap();
        fs::write(data.join("out/state.json"), r#"{"seen": true}"#).unwrap();
        fs::write(data.join("out/files/big"), vec![1u8; 12 << 20]).unwrap();
        outcome(0)
    });
    let component = json!({"component": {
        "id": "acme.fake", "image": f.image, "network": "none", "disk": "5m"
    }});
    let r = run(&f, &host, &runtime, &job(&f, component));
    assert_eq!(r.error_class, Some(ErrorClass::User), "{}", r.message);
    assert!(
        r.message.starts_with(
            "component acme.fake wrote more than its disk limit of 5m (/data, /tmp and its \
             root filesystem together): 12.0m"
        ),
        "{}",
        r.message
    );
    assert_eq!(serde_json::to_value(&r.cage).unwrap()["disk_limit"], "5m");
    assert_eq!(snapshot(&f), untouched());
    let state = storage(&f.settings).state(&berth::storage::StateKey {
        component: "acme.fake".into(),
        config: "7".into(),
        row: None,
    });
    assert_eq!(state.unwrap(), None);
    assert_nothing_left(&f, &host, &runtime);
}

#[test]
fn limits_the_host_cannot_enforce_are_named_in_the_result() {
    let f = fixture();
    let host = FakeHost {
        no_cgroups: true,
        ..Default::default()
    };
    let runtime = FakeRuntime::exiting(0);
    let r = run(&f, &host, &runtime, &job(&f, json!({})));
    assert_eq!(r.error_class, None, "{}", r.message);
    let cage = serde_json::to_value(r.cage).unwrap();
    let unenforced: Vec<&str> = cage["unenforced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(unenforced.len(), 3, "{unenforced:?}");
    assert!(unenforced[0].starts_with("memory limit"), "{unenforced:?}");
    assert_nothing_left(&f, &host, &runtime);
}

#[test]
fn cgroup_v2_device_rules_are_named_unenforced_and_strict_limits_refuse() {
    let f = fixture();
    let host = FakeHost {
        cgroup_v2: true,
        ..Default::default()
    };
    let runtime = FakeRuntime::exiting(0);
    let r = run(&f, &host, &runtime, &job(&f, json!({})));
    assert_eq!(r.error_class, None, "{}", r.message);
    let cage = serde_json::to_value(r.cage).unwrap();
    assert_eq!(
        cage["unenforced"],
        json!(["device rules (cgroup v2 needs libcontainer's eBPF device filter, not built in)"])
    );
    assert_nothing_left(&f, &host, &runtime);
    assert_strict_limits_refuse(
        &f,
        &host,
        "--strict-limits: this host cannot enforce the device rules (cgroup v2",
    );
}

/// A job under `--strict-limits` on `host` fails as berth's, its message starting with
/// `refusal`, before any container, leaving storage and the home as they were.
fn assert_strict_limits_refuse(f: &Fixture, host: &FakeHost, refusal: &str) {
    let runtime = FakeRuntime::exiting(0);
    let svc = Services {
        host,
        runtime: &runtime,
    };
    let options = RunOptions {
        strict_limits: true,
        ..Default::default()
    };
    let r = berth::job::run(svc, &f.settings, &job(f, json!({})), &options, &mut |_| {});
    assert_eq!(r.error_class, Some(ErrorClass::Internal), "{}", r.message);
    assert!(r.message.starts_with(refusal), "{}", r.message);
    assert!(runtime.calls().is_empty(), "{:?}", runtime.calls());
    assert_eq!(snapshot(f), untouched());
    assert_nothing_left(f, host, &runtime);
}

#[test]
fn strict_limits_refuse_a_host_that_cannot_enforce_them() {
    let f = fixture();
    let host = FakeHost {
        no_cgroups: true,
        ..Default::default()
    };
    assert_strict_limits_refuse(
        &f,
        &host,
        "--strict-limits: this host cannot enforce the memory limit",
    );
}
