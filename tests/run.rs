//! `berth run` end to end: real images pushed to a real registry, real containers through
//! libcontainer, and what is left on the host afterwards.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

#[test]
fn component_sees_config_environment_and_data_folder() {
    require_env!();
    let img = script_image(
        "config",
        r#"echo CONFIG-START; cat /data/config.json; echo; echo CONFIG-END
echo "ENV $KBC_COMPONENTID $KBC_CONFIGID $KBC_DATADIR $KBC_COMPONENT_RUN_MODE $KBC_PROJECTID"
echo "HOST $(hostname)"
for d in in/tables in/files in/user out/tables out/files; do [ -d /data/$d ] && echo "DIR $d"; done
echo "STATE $(cat /data/in/state.json)"
touch /tmp/scratch && echo "TMP writable"
"#,
    );
    let b = Berth::new();
    let mut j = job(
        &img.reference,
        json!({}),
        json!({"greeting": "hi", "#secret": "x"}),
    );
    j["component"]["image_parameters"] = json!({"api": "https://example.invalid"});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["status"], "success");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["image"]["digest"], img.digest.as_str());

    // --json sends the component's stdout to stderr, line by line.
    let start = r
        .stderr
        .find("CONFIG-START\n")
        .expect("config.json printed")
        + 13;
    let end = r.stderr.find("CONFIG-END").unwrap();
    let config: serde_json::Value = serde_json::from_str(&r.stderr[start..end]).unwrap();
    assert_eq!(
        config,
        json!({
            "parameters": {"greeting": "hi", "#secret": "x"},
            "storage": {},
            "authorization": {},
            "image_parameters": {"api": "https://example.invalid"},
            "action": "run"
        })
    );
    assert!(
        r.stderr.contains("ENV acme.test 42 /data/ run 1"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("HOST acme-test"), "{}", r.stderr);
    for d in [
        "in/tables",
        "in/files",
        "in/user",
        "out/tables",
        "out/files",
    ] {
        assert!(
            r.stderr.contains(&format!("DIR {d}")),
            "missing {d}: {}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("STATE {}"), "{}", r.stderr);
    assert!(r.stderr.contains("TMP writable"), "{}", r.stderr);
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn stdout_is_streamed_while_the_container_runs() {
    require_env!();
    // The second line only comes once the test has seen the first: if berth buffered the
    // output until the end, the container would wait forever (and time out).
    let img = script_image(
        "stream",
        "echo first\nwhile [ ! -e /data/in/user/go ]; do sleep 0.1; done\necho second",
    );
    let b = Berth::new();
    let path = b.write_job(&job(
        &img.reference,
        json!({"process_timeout": 60}),
        json!({}),
    ));
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    assert!(
        child.try_wait().unwrap().is_none(),
        "berth ended before the container did"
    );
    // Let the container go on: create the file in its data folder.
    let job_dir = b.job_dir();
    std::fs::write(Berth::data_dir(&job_dir, 0).join("in/user/go"), b"").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    b.assert_clean(&[]);
}

#[test]
fn outputs_can_be_kept_on_the_host() {
    require_env!();
    let img = script_image(
        "outputs",
        "printf 'a,b\\n1,2\\n' > /data/out/tables/t.csv\necho blob > /data/out/files/f.txt",
    );
    let b = Berth::new();
    let kept = b.dir.path().join("kept");
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"default_bucket": "out.c-kept"}});
    let path = b.write_job(&j);
    let r = b.run_cmd(&[
        "run",
        "--json",
        "--keep-outputs",
        kept.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(kept.join("tables/t.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("files/f.txt")).unwrap(),
        "blob\n"
    );
    b.assert_clean(&[&job_id(&r.json())]);
}

#[test]
fn exit_codes_and_error_classes() {
    require_env!();
    // (script, berth's exit status, class, component exit code, message fragment)
    let cases = [
        ("echo all good", 0, None, 0, "finished"),
        (
            "echo 'bad parameter x' >&2; exit 1",
            1,
            Some("user"),
            1,
            "bad parameter x",
        ),
        (
            "echo 'only on stdout'; exit 1",
            1,
            Some("user"),
            1,
            "only on stdout",
        ),
        ("exit 1", 1, Some("user"), 1, "No error message."),
        (
            "echo 'crashed' >&2; exit 2",
            2,
            Some("application"),
            2,
            "crashed",
        ),
        ("exit 42", 2, Some("application"), 42, "exit code 42"),
        // A crash of a child the script passes on (pid 1 itself ignores such signals).
        (
            "sh -c 'kill -SEGV $$'; exit $?",
            2,
            Some("application"),
            139,
            "exit code 139",
        ),
    ];
    let b = Berth::new();
    let mut ids = Vec::new();
    for (script, status, class, code, fragment) in cases {
        let img = script_image("exit", script);
        let r = b.run_job(&job(&img.reference, json!({}), json!({})));
        let result = r.json();
        assert_eq!(r.status, status, "{script}: {}", r.stderr);
        assert_eq!(result["exit_code"], code, "{script}");
        assert_eq!(result["error_class"], json!(class), "{script}");
        let message = result["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{script}: {message}");
        ids.push(job_id(&result));
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    b.assert_clean(&ids);
}

#[test]
fn timeout_kills_the_whole_container() {
    require_env!();
    let img = script_image(
        "timeout",
        "sleep 3001 &\nsleep 3002 &\necho started\nsleep 3003",
    );
    let b = Berth::new();
    let started = Instant::now();
    let r = b.run_job(&job(
        &img.reference,
        json!({"process_timeout": 2}),
        json!({}),
    ));
    let took = started.elapsed();
    let result = r.json();
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        "component acme.test exceeded the timeout of 2 seconds"
    );
    assert_eq!(result["exit_code"], 137);
    assert!(
        took < Duration::from_secs(120),
        "not killed at the timeout: {took:?}"
    );
    assert!(r.stderr.contains("started"));
    // No sleep survived.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 300[123]"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "processes survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn runtime_process_timeout_overrides_the_component() {
    require_env!();
    let img = script_image("rtimeout", "sleep 3201");
    let b = Berth::new();
    let mut j = job(&img.reference, json!({"process_timeout": 3600}), json!({}));
    j["configuration"]["runtime"] = json!({"process_timeout": 1});
    let r = b.run_job(&j);
    assert_eq!(r.status, 1);
    assert_eq!(
        r.json()["message"],
        "component acme.test exceeded the timeout of 1 seconds"
    );
}

#[test]
fn out_of_memory_is_reported_from_the_cgroup() {
    require_env!();
    // dd with a 64 MB block allocates it at once: far over a 24 MB limit.
    let img = script_image("oom", "dd if=/dev/zero of=/dev/null bs=64M count=1");
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({"memory": "24m"}), json!({})));
    let result = r.json();
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        "component acme.test ran out of memory (limit 24m)"
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    require_env!();
    let img = script_image(
        "net",
        "ls /sys/class/net\ncat /sys/class/net/lo/operstate /sys/class/net/lo/flags\n\
         (while :; do nc -l -p 8080 >> /tmp/got; done &)
         i=0; until [ -s /tmp/got ] || [ $i -gt 100 ]; do i=$((i+1)); echo ping | nc 127.0.0.1 8080 2>/dev/null; sleep 0.05; done
         echo \"GOT $(head -1 /tmp/got)\"",
    );
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({"network": "none"}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.contains(&"lo"), "{}", r.stderr);
    assert!(
        !lines.iter().any(|l| l.starts_with("eth")),
        "host interfaces visible: {}",
        r.stderr
    );
    // IFF_UP is bit 0 of the flags.
    let flags = lines
        .iter()
        .find(|l| l.starts_with("0x"))
        .expect("flags printed");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down: {flags:#x}");
    assert!(
        r.stderr.contains("GOT ping"),
        "loopback TCP does not work: {}",
        r.stderr
    );

    // host: the host's interfaces are visible.
    let r = b.run_job(&job(&img.reference, json!({"network": "host"}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for iface in host_ifaces {
        assert!(
            r.stderr.lines().any(|l| l == iface),
            "{iface} not visible with host network"
        );
    }
}

#[test]
fn a_working_directory_the_image_lacks_is_made_for_it() {
    require_env!();
    let mut spec = ImageSpec::script("echo \"in $(pwd)\"\ntouch here && echo wrote");
    spec.workdir = Some("/srv/app".into());
    let img = push(&spec, &unique_repo("workdir"), "1.0");
    let b = Berth::new();
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("in /srv/app"), "{}", r.stderr);
    assert!(r.stderr.contains("wrote"), "{}", r.stderr);
    b.assert_clean(&[&job_id(&r.json())]);
}

#[test]
fn image_user_is_honoured_and_can_write_outputs() {
    require_env!();
    let mut spec =
        ImageSpec::script("id -u; id -g; echo ok > /data/out/tables/t.csv && echo WROTE");
    spec.user = Some("app".to_owned());
    let img = push(&spec, &unique_repo("user"), "1.0");
    let b = Berth::new();
    let mut j = job(&img.reference, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"default_bucket": "out.c-user"}});
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.contains(&"1000"), "{}", r.stderr);
    assert!(lines.contains(&"WROTE"), "{}", r.stderr);
}

#[test]
fn second_run_fetches_no_blob() {
    require_env!();
    let img = script_image("cached", "echo hi");
    let b = Berth::new();
    let first = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(first.status, 0, "{}", first.stderr);
    // The config and two layers.
    assert_eq!(first.json()["image"]["fetched_blobs"], 3);
    let log_before = registry_gets(&img.reference, "blobs");
    let second = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert_eq!(second.json()["image"]["fetched_blobs"], 0);
    if let Some(before) = log_before {
        assert_eq!(
            registry_gets(&img.reference, "blobs"),
            Some(before),
            "the registry served blobs again"
        );
    }
    // A digest-pinned image stored under its repository needs no registry at all.
    let asked_before = registry_gets(&img.reference, "");
    let r = b.run_job(&job(&img.pinned(), json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stdout);
    assert_eq!(r.json()["image"]["fetched_blobs"], 0);
    assert_eq!(r.json()["image"]["digest"], img.digest.as_str());
    assert_eq!(registry_gets(&img.reference, ""), asked_before);
    // Its digest under a name the store never saw it by (here another registry, where
    // nothing listens) is another image until that registry confirms it.
    let elsewhere = img.pinned().replace(&registry(), "127.0.0.1:9");
    let r = b.run_job(&job(&elsewhere, json!({}), json!({})));
    assert_eq!(r.status, 3, "{}", r.stdout);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("127.0.0.1:9 is unreachable"), "{message}");
}

/// How many GETs under `what` (`blobs`, `manifests`, or "" for both) the registry logged
/// for this image's repository, if its log is known (`BERTH_TEST_REGISTRY_LOG`, set by
/// scripts/test.sh).
fn registry_gets(reference: &str, what: &str) -> Option<usize> {
    let log = std::env::var("BERTH_TEST_REGISTRY_LOG").ok()?;
    let text = std::fs::read_to_string(log).ok()?;
    let repo = reference
        .split_once('/')
        .unwrap()
        .1
        .rsplit_once(':')
        .unwrap()
        .0;
    let needle = format!("\"GET /v2/{repo}/{what}");
    Some(text.lines().filter(|l| l.contains(&needle)).count())
}

#[test]
fn bad_job_files_are_user_errors() {
    require_env!();
    let b = Berth::new();
    let r = b.run_job(&json!({"component": {"id": "a", "image": "x/y", "memroy": "1g"}}));
    assert_eq!(r.status, 1);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("component.memroy: unknown field"),
        "{result}"
    );
    let r = b.run_cmd(&["run", "--json", "/nonexistent/job.json"]);
    assert_eq!(r.status, 1);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/job.json")
    );
    let r = b.run_job(&job("127.0.0.1:5000/Not Valid", json!({}), json!({})));
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid image reference")
    );
}

#[test]
fn registry_unreachable_and_image_missing_are_berths_failures() {
    require_env!();
    let b = Berth::new();
    let r = b.run_job(&job("127.0.0.1:9/acme/none:1.0", json!({}), json!({})));
    assert_eq!(r.status, 3);
    let result = r.json();
    assert_eq!(result["error_class"], "internal");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("registry 127.0.0.1:9 is unreachable"),
        "{result}"
    );

    let missing = format!("{}/{}:1.0", registry(), unique_repo("missing"));
    let r = b.run_job(&job(&missing, json!({}), json!({})));
    assert_eq!(r.status, 3, "{}", r.stdout);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("not found"), "{message}");
    assert!(message.contains(&missing), "{message}");
    b.assert_clean(&[]);
}

#[test]
fn ctrl_c_stops_the_container_and_cleans_up() {
    require_env!();
    let img = script_image("sigint", "echo started\nsleep 3101");
    let b = Berth::new();
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 3101"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "container survived Ctrl-C");
    b.assert_clean(&[]);
}
