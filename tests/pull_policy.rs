//! The pull policy (`--pull`, `BERTH_PULL`, `pull = "…"` in berth.toml) against a real
//! registry, counted in its access log (`BERTH_TEST_REGISTRY_LOG`): `newer` checks a tag
//! with a HEAD and GETs its manifest only when it moved, `always` GETs it every time,
//! `missing` asks nothing about a stored tag, `never` asks nothing at all.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{Berth, BuiltImage, ImageSpec, Run, push, registry, unique_repo};

/// berth's requests for `repo` in the registry's log, as `METHOD /v2/…` (berth's user
/// agent only: skopeo's pushes are not counted).
fn requests(repo: &str) -> Vec<String> {
    let log = std::env::var("BERTH_TEST_REGISTRY_LOG")
        .unwrap_or_else(|_| "/var/tmp/berth-registry/registry.log".to_owned());
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("registry log {log}: {e}"));
    let needle = format!("/v2/{repo}/");
    text.lines()
        .filter(|l| l.contains(&needle) && l.contains("\"berth/"))
        .filter_map(|l| {
            let request = l.split('"').nth(1)?;
            let mut words = request.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect()
}

/// How many of `repo`'s requests are `METHOD /v2/REPO/WHAT…`, waiting a moment for the
/// registry to write the line of a request that was just answered (until `at_least`).
fn count(repo: &str, method: &str, what: &str, at_least: usize) -> usize {
    let prefix = format!("{method} /v2/{repo}/{what}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = requests(repo)
            .iter()
            .filter(|r| r.starts_with(&prefix))
            .count();
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts the registry logged exactly `expected` requests `METHOD /v2/REPO/WHAT…`.
fn assert_count(repo: &str, method: &str, what: &str, expected: usize) {
    assert_eq!(
        count(repo, method, what, expected),
        expected,
        "{method} {what}…: {:#?}",
        requests(repo)
    );
}

fn repo_of(img: &BuiltImage) -> String {
    let (_, rest) = img.reference.split_once('/').unwrap();
    rest.rsplit_once(':').unwrap().0.to_owned()
}

fn pull(b: &Berth, policy: Option<&str>, image: &str) -> Run {
    let mut args = Vec::new();
    if let Some(p) = policy {
        args.extend(["--pull", p]);
    }
    args.extend(["pull", image]);
    b.run_cmd(&args)
}

fn pulled_ok(r: &Run) -> String {
    assert_eq!(r.status, 0, "{}", r.stderr);
    r.stdout.split_whitespace().nth(1).unwrap().to_owned()
}

fn image(name: &str, word: &str) -> BuiltImage {
    push(
        &ImageSpec::script(&format!("echo {word}")),
        &unique_repo(name),
        "1.0",
    )
}

#[test]
fn newer_checks_an_unchanged_tag_with_a_head_and_gets_nothing() {
    require_env!();
    let b = Berth::new();
    let img = image("newer-same", "same");
    let repo = repo_of(&img);
    assert_eq!(pulled_ok(&pull(&b, None, &img.reference)), img.digest);
    // A tag pulled for the first time: one GET of its manifest, no HEAD.
    assert_count(&repo, "GET", "manifests/", 1);
    assert_count(&repo, "HEAD", "manifests/", 0);
    let blobs = count(&repo, "GET", "blobs/", 1);
    for policy in [None, Some("newer")] {
        assert_eq!(pulled_ok(&pull(&b, policy, &img.reference)), img.digest);
    }
    // Then one HEAD per pull, and nothing else.
    assert_count(&repo, "HEAD", "manifests/1.0", 2);
    assert_count(&repo, "GET", "manifests/", 1);
    assert_count(&repo, "GET", "blobs/", blobs);
}

#[test]
fn newer_fetches_a_tag_that_moved() {
    require_env!();
    let b = Berth::new();
    let first = image("newer-moved", "first");
    let repo = repo_of(&first);
    assert_eq!(pulled_ok(&pull(&b, None, &first.reference)), first.digest);
    let second = push(&ImageSpec::script("echo second"), &repo, "1.0");
    assert_ne!(first.digest, second.digest);
    assert_eq!(pulled_ok(&pull(&b, None, &second.reference)), second.digest);
    let manifest = format!("manifests/{}", second.digest);
    assert_count(&repo, "GET", &manifest, 1);
}

#[test]
fn always_gets_the_manifest_every_time_and_reuses_the_layers() {
    require_env!();
    let b = Berth::new();
    let img = image("always", "always");
    let repo = repo_of(&img);
    pulled_ok(&pull(&b, None, &img.reference));
    let gets = count(&repo, "GET", "manifests/1.0", 0);
    let blobs = count(&repo, "GET", "blobs/", 1);
    for _ in 0..2 {
        assert_eq!(
            pulled_ok(&pull(&b, Some("always"), &img.reference)),
            img.digest
        );
    }
    assert_count(&repo, "GET", "manifests/1.0", gets + 2);
    assert_count(&repo, "GET", "blobs/", blobs);
}

#[test]
fn missing_asks_nothing_about_a_stored_tag_and_pulls_one_not_stored() {
    require_env!();
    let b = Berth::new();
    let img = image("missing", "old");
    let repo = repo_of(&img);
    assert_eq!(
        pulled_ok(&pull(&b, Some("missing"), &img.reference)),
        img.digest,
        "an image not stored is pulled"
    );
    let moved = push(&ImageSpec::script("echo new"), &repo, "1.0");
    let before = requests(&repo);
    assert_eq!(
        pulled_ok(&pull(&b, Some("missing"), &moved.reference)),
        img.digest,
        "the stored tag is used as it is"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(requests(&repo), before, "missing asked the registry");
}

#[test]
fn never_asks_no_registry_and_fails_for_an_image_not_stored() {
    require_env!();
    let b = Berth::new();
    let img = image("never", "never");
    let repo = repo_of(&img);
    let r = pull(&b, Some("never"), &img.reference);
    assert_eq!(r.status, 1, "a user error: {}", r.stderr);
    assert!(r.stderr.contains(&img.reference), "{}", r.stderr);
    assert!(r.stderr.contains("--pull never"), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(300));
    assert!(requests(&repo).is_empty(), "{:?}", requests(&repo));

    pulled_ok(&pull(&b, None, &img.reference));
    let before = requests(&repo);
    let job = common::job(&img.reference, serde_json::json!({}), serde_json::json!({}));
    let path = b.write_job(&job);
    let r = b.run_cmd(&["--pull", "never", "run", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stdout.contains("never"), "{}", r.stdout);
    assert_eq!(
        pulled_ok(&pull(&b, Some("never"), &img.pinned())),
        img.digest
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(requests(&repo), before, "never asked the registry");
}

#[test]
fn a_digest_never_seen_in_its_repository_is_not_run_unconfirmed() {
    require_env!();
    let b = Berth::new();
    let img = image("unconfirmed", "bytes");
    pulled_ok(&pull(&b, None, &img.reference));
    // The same bytes, named in a repository the store never saw them in: only that
    // repository's registry can say it has them there.
    let other = unique_repo("unconfirmed-other");
    let elsewhere = format!("{}/{other}@{}", registry(), img.digest);
    for policy in ["never", "missing"] {
        let r = pull(&b, Some(policy), &elsewhere);
        assert_eq!(r.status, 1, "--pull {policy}: {}", r.stderr);
        assert!(r.stderr.contains(&img.digest), "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("--pull {policy}")),
            "{}",
            r.stderr
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(requests(&other).is_empty(), "{:?}", requests(&other));
    // Under newer the registry is asked, and has no such manifest there.
    let r = pull(&b, None, &elsewhere);
    assert_eq!(r.status, 3, "{}", r.stderr);
}

#[test]
fn the_policy_comes_from_the_flag_the_environment_or_berth_toml() {
    require_env!();
    let b = Berth::new();
    let img = image("configured", "configured");
    fs::create_dir_all(b.home()).unwrap();
    fs::write(b.home().join("berth.toml"), "pull = \"never\"\n").unwrap();
    let r = pull(&b, None, &img.reference);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--pull never"), "{}", r.stderr);
    // The flag wins over the file, the environment too.
    pulled_ok(&pull(&b, Some("newer"), &img.reference));
    let r = Run::from(
        b.cmd()
            .env("BERTH_PULL", "always")
            .args(["pull", &img.reference])
            .output()
            .unwrap(),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);

    let r = pull(&b, Some("sometimes"), &img.reference);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("\"sometimes\""), "{}", r.stderr);
    assert!(r.stderr.contains("--pull"), "{}", r.stderr);
    fs::write(b.home().join("berth.toml"), "pull = \"often\"\n").unwrap();
    let r = pull(&b, None, &img.reference);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("\"often\""), "{}", r.stderr);
    assert!(r.stderr.contains("berth.toml: pull"), "{}", r.stderr);
}
