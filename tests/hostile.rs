//! A hostile container: it replaces what berth reads after the run (`/data/out/tables`,
//! `/data/out/files`, `/data/out/state.json`, `/data/out` itself) with symlinks to absolute
//! paths of the HOST, which berth would resolve on the host, or ships an image whose
//! `/etc/passwd` is a FIFO. Each test prepares a canary on the host and checks that berth
//! neither moves, reads nor copies it, and that the job fails as the component's fault.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A host directory the container is not given, holding `files` (path, content).
fn canary(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-canary-")
        .tempdir_in("/tmp")
        .unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

/// The canary is all there, unchanged.
fn assert_canary(canary: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        assert_eq!(
            fs::read_to_string(canary.join(path)).ok().as_deref(),
            Some(*content),
            "the host's {path} was taken"
        );
    }
}

/// What a host directory linked as `out/tables` would give: a table.
const HOST_TABLE: &[(&str, &str)] = &[("x.csv", "a\n1\n")];
/// ... as `out/files`: a file.
const HOST_FILE: &[(&str, &str)] = &[("x.txt", "host secret\n")];
/// ... as `out`: a table, a file and a state.
const HOST_OUT: &[(&str, &str)] = &[
    ("tables/x.csv", "a\n1\n"),
    ("files/x.txt", "host secret\n"),
    ("state.json", r#"{"stolen": true}"#),
];

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

fn job_with_bucket(image: &str) -> Value {
    let mut j = job(image, json!({}), json!({}));
    j["configuration"]["storage"] = json!({"output": {"default_bucket": "out.c-x"}});
    j
}

fn tables(b: &Berth) -> Vec<String> {
    let r = b.run_cmd(&["storage", "tables", "--json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let list: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    list.iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn files(b: &Berth) -> Vec<Value> {
    let r = b.run_cmd(&["storage", "files", "--json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn component_state(b: &Berth) -> Option<Value> {
    // `state show` prints what the component finds in in/state.json.
    let r = b.run_cmd(&["state", "show", "acme.test", "42"]);
    (r.status == 0).then(|| serde_json::from_str::<Value>(&r.stdout).unwrap())
}

/// The run failed as the component's fault, with a message that contains `fragment`.
fn assert_user_error(r: &Run, fragment: &str) -> Value {
    assert_eq!(r.status, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user", "{result}");
    let message = result["message"].as_str().unwrap();
    assert!(message.contains(fragment), "{fragment:?} not in: {message}");
    result
}

/// `rm -rf /data/out/<sub> && ln -s <host dir> /data/out/<sub>`: nothing of the host
/// directory is taken, and it stays where it is.
fn symlinked_out_dir(sub: &str, host_files: &[(&str, &str)]) {
    let host = canary(host_files);
    let b = Berth::new();
    let img = script_image(
        &format!("hostile-{sub}"),
        &format!(
            "rm -rf /data/out/{sub} && ln -s {} /data/out/{sub}",
            host.path().display()
        ),
    );
    let r = b.run_job(&job_with_bucket(&img.reference));
    assert_canary(host.path(), host_files);
    let result = assert_user_error(&r, &format!("out/{sub} is a symlink"));
    assert!(tables(&b).is_empty(), "a host table landed in storage");
    assert!(files(&b).is_empty(), "a host file landed in storage");
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_symlinked_out_tables_takes_nothing_from_the_host() {
    require_env!();
    symlinked_out_dir("tables", HOST_TABLE);
}

#[test]
fn a_symlinked_out_files_takes_nothing_from_the_host() {
    require_env!();
    symlinked_out_dir("files", HOST_FILE);
}

#[test]
fn a_symlinked_out_takes_nothing_from_the_host() {
    require_env!();
    let host = canary(HOST_OUT);
    let b = Berth::new();
    let img = script_image(
        "hostile-out",
        &format!(
            "rm -rf /data/out && ln -s {} /data/out",
            host.path().display()
        ),
    );
    let r = b.run_job(&job_with_bucket(&img.reference));
    assert_canary(host.path(), HOST_OUT);
    let result = assert_user_error(&r, "out is a symlink");
    assert!(tables(&b).is_empty(), "a host table landed in storage");
    assert!(component_state(&b).is_none(), "a state was saved");
    b.assert_clean(&[&job_id(&result)]);
}

/// A state.json that is a link to a host file is not read: the job fails and the state
/// stays as the last good run left it.
#[test]
fn a_symlinked_state_is_not_read() {
    require_env!();
    let host = canary(HOST_OUT);
    let b = Berth::new();
    let good = script_image("state-good", "echo '{\"count\": 1}' > /data/out/state.json");
    let r = b.run_job(&job(&good.reference, json!({}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(component_state(&b), Some(json!({"count": 1})));

    let img = script_image(
        "hostile-state",
        &format!(
            "ln -s {} /data/out/state.json",
            host.path().join("state.json").display()
        ),
    );
    let r = b.run_job(&job(&img.reference, json!({}), json!({})));
    assert_canary(host.path(), HOST_OUT);
    let result = assert_user_error(&r, "out/state.json");
    assert_eq!(component_state(&b), Some(json!({"count": 1})));
    b.assert_clean(&[&job_id(&result)]);
}

/// `--keep-outputs DIR`: runs the job, keeping its outputs in `kept`.
fn run_keeping(b: &Berth, j: &Value, kept: &Path) -> Run {
    let path = b.write_job(j);
    b.run_cmd(&[
        "run",
        "--json",
        "--keep-outputs",
        kept.to_str().unwrap(),
        path.to_str().unwrap(),
    ])
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    describe_tree(dir)
        .into_iter()
        .filter(|(_, d)| !d.starts_with("dir "))
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn kept_outputs_copy_no_host_file_through_a_symlinked_entry() {
    require_env!();
    let host = canary(HOST_TABLE);
    let b = Berth::new();
    let kept = b.dir.path().join("kept");
    let img = script_image(
        "hostile-keep-entry",
        &format!(
            "echo ok > /data/out/files/f.txt\nrm -rf /data/out/tables && ln -s {} /data/out/tables",
            host.path().display()
        ),
    );
    let r = run_keeping(&b, &job_with_bucket(&img.reference), &kept);
    assert_canary(host.path(), HOST_TABLE);
    assert_eq!(files_under(&kept), vec!["files/f.txt"]);
    let result = assert_user_error(&r, "out/tables is a symlink");
    assert!(tables(&b).is_empty());
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn kept_outputs_copy_no_host_file_through_a_symlinked_out() {
    require_env!();
    let host = canary(HOST_OUT);
    let b = Berth::new();
    let kept = b.dir.path().join("kept");
    let img = script_image(
        "hostile-keep-out",
        &format!(
            "rm -rf /data/out && ln -s {} /data/out",
            host.path().display()
        ),
    );
    let r = run_keeping(&b, &job_with_bucket(&img.reference), &kept);
    assert!(
        files_under(&kept).is_empty(),
        "host files were copied: {:?}",
        files_under(&kept)
    );
    assert_canary(host.path(), HOST_OUT);
    let result = assert_user_error(&r, "out is a symlink");
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn kept_outputs_are_never_written_through_links_in_the_destination() {
    require_env!();
    let b = Berth::new();
    let img = script_image(
        "keep-planted",
        "printf 'id\\n7\\n' > /data/out/tables/t.csv\necho ok > /data/out/files/f.txt",
    );
    // A link planted below the operator's directory, and the directory itself a link.
    let kept = b.dir.path().join("kept");
    let below = canary(HOST_TABLE);
    fs::create_dir(&kept).unwrap();
    if let Some((uid, gid)) = test_user() {
        std::os::unix::fs::chown(&kept, Some(uid), Some(gid)).unwrap();
    }
    std::os::unix::fs::symlink(below.path(), kept.join("tables")).unwrap();
    let itself = canary(HOST_TABLE);
    let linked = b.dir.path().join("linked");
    std::os::unix::fs::symlink(itself.path(), &linked).unwrap();
    for (dir, host, link) in [
        (&kept, &below, kept.join("tables")),
        (&linked, &itself, linked.clone()),
    ] {
        let r = run_keeping(&b, &job_with_bucket(&img.reference), dir);
        let result = assert_user_error(&r, &format!("{} is a symlink", link.display()));
        assert_canary(host.path(), HOST_TABLE);
        assert_eq!(
            files_under(host.path()),
            ["x.csv"],
            "written through {}",
            link.display()
        );
        assert!(tables(&b).is_empty());
        b.assert_clean(&[&job_id(&result)]);
    }
    // A kept file that is a hard link to a file elsewhere is replaced, not written through.
    fs::remove_file(kept.join("tables")).unwrap();
    fs::create_dir(kept.join("tables")).unwrap();
    fs::hard_link(below.path().join("x.csv"), kept.join("tables/t.csv")).unwrap();
    if let Some((uid, gid)) = test_user() {
        std::os::unix::fs::chown(kept.join("tables"), Some(uid), Some(gid)).unwrap();
    }
    let r = run_keeping(&b, &job_with_bucket(&img.reference), &kept);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(kept.join("tables/t.csv")).unwrap(),
        "id\n7\n"
    );
    assert_eq!(
        fs::read_to_string(kept.join("files/f.txt")).unwrap(),
        "ok\n"
    );
    assert_canary(below.path(), HOST_TABLE);
}

#[test]
fn a_row_id_cannot_make_kept_outputs_leave_their_directory() {
    require_env!();
    let b = Berth::new();
    let parent = b.dir.path().join("keep-parent");
    fs::create_dir(&parent).unwrap();
    let kept = parent.join("kept");
    let img = script_image("hostile-keep-row", "echo ok > /data/out/files/f.txt");
    let mut j = job(&img.reference, json!({}), json!({}));
    j["rows"] = json!([
        {"id": "..", "configuration": {}},
        {"id": "fine", "configuration": {}},
    ]);
    let r = run_keeping(&b, &j, &kept);
    let result = assert_user_error(&r, "\"..\"");
    let beside: Vec<String> = fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kept")
        .collect();
    assert!(beside.is_empty(), "written outside {kept:?}: {beside:?}");
    assert!(files(&b).is_empty());
    b.assert_clean(&[&job_id(&result)]);
}
/// A layer whose `/etc/passwd` and `/etc/group` are FIFOs.
fn fifo_passwd_layer() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for path in ["etc/passwd", "etc/group"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Fifo);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        tar.append_data(&mut h, path, std::io::empty()).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Runs an image whose `/etc/passwd` and `/etc/group` are FIFOs as user `1000:1000`, with
/// `env` in its config; berth is killed (and the test fails) if it has not ended in 2 min.
fn run_with_fifo_passwd(name: &str, env: &[&str]) {
    // Not `id`: it would read /etc/passwd, and block.
    let mut spec = ImageSpec::script(
        "awk '/^Uid:/ {u = $2} /^Gid:/ {g = $2} END {print \"ran as \" u \":\" g}' /proc/self/status",
    );
    spec.layers.push(fifo_passwd_layer());
    spec.user = Some("1000:1000".into());
    spec.env.extend(env.iter().map(|e| (*e).to_owned()));
    let img = push(&spec, &unique_repo(name), "1.0");
    let b = Berth::new();
    let path = b.write_job(&job(
        &img.reference,
        json!({"process_timeout": 30}),
        json!({}),
    ));
    let mut child = b
        .cmd()
        .args(["run", "--json", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            // The container berth was creating is dead berth's: gc removes it.
            let gc = b.run_cmd(&["gc"]);
            panic!(
                "berth blocked on the image's /etc/passwd FIFO (gc: {} {})",
                gc.status, gc.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let r = Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.status, 0, "{}{}", r.stderr, r.stdout);
    assert!(r.stderr.contains("ran as 1000:1000"), "{}", r.stderr);
    b.assert_clean(&[&job_id(&r.json())]);
}

/// Resolving the image's user must not open a FIFO at `/etc/passwd`: berth would block
/// forever, before any timeout applies. (With `HOME` in the image's environment, so that
/// libcontainer's init does not look it up in the container's `/etc/passwd` either.)
#[test]
fn a_fifo_at_the_images_passwd_does_not_block_berth() {
    require_env!();
    run_with_fifo_passwd("hostile-passwd", &["HOME=/"]);
}

/// Without `HOME`, libcontainer's init calls `getpwuid_r` inside the container, which
/// opens the FIFO and blocks before the container starts — and berth waits for it with no
/// deadline. Passes once the bundle sets `HOME` (Docker's rule: the passwd entry's home,
/// else `/`).
#[test]
fn a_fifo_at_the_images_passwd_does_not_block_the_container_init() {
    require_env!();
    run_with_fifo_passwd("hostile-passwd-home", &[]);
}
