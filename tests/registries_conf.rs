//! registries.conf (containers-registries.conf(5)) against the real local registry: a
//! location rewrites a prefix, a mirror serves an image its registry cannot (the
//! registry is then a dead loopback port), a mirror that is down or lacks the image
//! passes to the next, `pull-from-mirror` chooses which references a mirror serves, a
//! blocked registry is refused, and a bad file is named with its line. The file is the
//! one `CONTAINERS_REGISTRIES_CONF` names in each berth's own directory (tests/common).

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::net::TcpListener;

use common::{Berth, BuiltImage, ImageSpec, Run, push, registry, unique_repo};

/// A loopback port nothing listens on: a registry that is down.
fn dead_port() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn write_conf(b: &Berth, text: &str) {
    fs::write(b.dir.path().join("registries.conf"), text).unwrap();
}

/// A berth whose registries.conf gives a registry that is down (returned) the test
/// registry as its mirror, with `mirror_keys` added to the mirror's table.
fn mirrored_dead_registry(mirror_keys: &str) -> (Berth, String) {
    let dead = dead_port();
    let b = Berth::new();
    write_conf(
        &b,
        &format!(
            "[[registry]]\nlocation = \"{dead}\"\n\
             [[registry.mirror]]\nlocation = \"{}\"\n{mirror_keys}",
            registry()
        ),
    );
    (b, dead)
}

fn pushed(name: &str) -> (String, BuiltImage) {
    let repo = unique_repo(name);
    let img = push(&ImageSpec::script("echo hi"), &repo, "1.0");
    (repo, img)
}

fn pull(b: &Berth, image: &str) -> Run {
    b.run_cmd(&["-v", "pull", image])
}

fn pulled_ok(r: &Run) {
    assert_eq!(r.status, 0, "{}", r.stderr);
}

#[test]
fn a_mirror_serves_an_image_whose_registry_is_down_under_its_own_name() {
    require_env!();
    let (repo, _img) = pushed("mirror");
    let (b, dead) = mirrored_dead_registry("");
    let original = format!("{dead}/{repo}:1.0");
    let r = pull(&b, &original);
    pulled_ok(&r);
    assert!(r.stdout.contains(&original), "recorded as {}", r.stdout);
    assert!(r.stderr.contains("pulling from a mirror"), "{}", r.stderr);
    assert!(r.stderr.contains("registries.conf"), "{}", r.stderr);
}

#[test]
fn the_signature_policy_decides_on_the_original_name_not_the_mirrors() {
    require_env!();
    let (repo, _img) = pushed("mirror-policy");
    let (b, dead) = mirrored_dead_registry("");
    // The mirror's own repository is accepted; the original name is rejected.
    let policy = b.dir.path().join("policy.json");
    let text = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {format!("{}/{repo}", registry()): [{"type": "insecureAcceptAnything"}]}}
    });
    fs::write(&policy, text.to_string()).unwrap();
    let r = b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "pull",
        &format!("{dead}/{repo}:1.0"),
    ]);
    assert_eq!(r.status, 1, "the mirror's name was trusted: {}", r.stderr);
    assert!(r.stderr.contains(&dead), "{}", r.stderr);
}

#[test]
fn a_mirror_that_is_down_or_lacks_the_image_passes_to_the_registry() {
    require_env!();
    let (_repo, img) = pushed("fallthrough");
    let b = Berth::new();
    write_conf(
        &b,
        &format!(
            "[[registry]]\nlocation = \"{reg}\"\n\
             [[registry.mirror]]\nlocation = \"{dead}\"\n\
             [[registry.mirror]]\nlocation = \"{reg}/nothing-here\"\n",
            reg = registry(),
            dead = dead_port()
        ),
    );
    let r = pull(&b, &img.reference);
    pulled_ok(&r);
    assert_eq!(
        r.stderr.matches("mirror passed over").count(),
        2,
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("pulling from a mirror"), "{}", r.stderr);
}

#[test]
fn a_digest_only_mirror_serves_digests_and_not_tags() {
    require_env!();
    let (repo, img) = pushed("digest-only");
    let (b, dead) = mirrored_dead_registry("pull-from-mirror = \"digest-only\"\n");
    let r = pull(&b, &format!("{dead}/{repo}:1.0"));
    assert_ne!(r.status, 0, "a tag was pulled from a digest-only mirror");
    assert!(r.stderr.contains(&dead), "{}", r.stderr);
    pulled_ok(&pull(&b, &format!("{dead}/{repo}@{}", img.digest)));
}

#[test]
fn a_prefix_is_rewritten_to_its_location() {
    require_env!();
    let base = unique_repo("rewrite");
    push(&ImageSpec::script("echo hi"), &format!("{base}/app"), "1.0");
    let b = Berth::new();
    write_conf(
        &b,
        &format!(
            "[[registry]]\nprefix = \"example.com/foo\"\nlocation = \"{}/{base}\"\n",
            registry()
        ),
    );
    let r = pull(&b, "example.com/foo/app:1.0");
    pulled_ok(&r);
    assert!(r.stdout.contains("example.com/foo/app:1.0"), "{}", r.stdout);
}

#[test]
fn a_blocked_registry_is_refused_naming_the_file() {
    require_env!();
    let (_repo, img) = pushed("blocked");
    let b = Berth::new();
    write_conf(
        &b,
        &format!(
            "[[registry]]\nlocation = \"{}\"\nblocked = true\n",
            registry()
        ),
    );
    let r = pull(&b, &img.reference);
    assert_eq!(r.status, 1, "a user error: {}", r.stderr);
    let file = b.dir.path().join("registries.conf");
    assert!(
        r.stderr.contains(&file.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("blocked"), "{}", r.stderr);
}

#[test]
fn a_bad_registries_conf_is_a_user_error_naming_file_and_line() {
    require_env!();
    let b = Berth::new();
    write_conf(
        &b,
        "[[registry]]\nlocation = \"a.example\"\nblocked = yes\n",
    );
    let r = pull(&b, &format!("{}/x:1", registry()));
    assert_eq!(r.status, 1, "a user error: {}", r.stderr);
    let file = b.dir.path().join("registries.conf");
    assert!(
        r.stderr.contains(&format!("{}:3", file.display())),
        "{}",
        r.stderr
    );
}

/// The names `berth images --json` lists.
fn stored(b: &Berth) -> String {
    let r = b.run_cmd(&["images", "--json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    r.stdout
}

#[test]
fn a_short_name_is_pulled_from_the_one_search_registry_under_its_full_name() {
    require_env!();
    let (repo, _img) = pushed("short");
    let b = Berth::new();
    write_conf(
        &b,
        &format!("unqualified-search-registries = [\"{}\"]\n", registry()),
    );
    let r = pull(&b, &format!("{repo}:1.0"));
    pulled_ok(&r);
    assert!(
        r.stderr
            .contains("one unqualified-search-registries registry"),
        "-v says which rule: {}",
        r.stderr
    );
    let full = format!("{}/{repo}:1.0", registry());
    assert!(stored(&b).contains(&full), "{}", stored(&b));
    // inspect and rmi resolve it as the pull did.
    let r = b.run_cmd(&["inspect", &format!("{repo}:1.0")]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = b.run_cmd(&["rmi", &format!("{repo}:1.0")]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(!stored(&b).contains(&full), "{}", stored(&b));
}

#[test]
fn a_short_name_alias_is_pulled_under_its_target() {
    require_env!();
    let (repo, _img) = pushed("alias");
    let b = Berth::new();
    write_conf(
        &b,
        &format!("[aliases]\n\"app\" = \"{}/{repo}\"\n", registry()),
    );
    let r = pull(&b, "app:1.0");
    pulled_ok(&r);
    assert!(r.stderr.contains("by its alias in"), "{}", r.stderr);
    assert!(
        stored(&b).contains(&format!("{}/{repo}:1.0", registry())),
        "{}",
        stored(&b)
    );
}

#[test]
fn podmans_short_name_alias_cache_wins_over_registries_conf() {
    require_env!();
    let (repo, _img) = pushed("alias-cache");
    let b = Berth::new();
    // registries.conf's alias names a registry that is down; the cache's, the real one.
    write_conf(
        &b,
        &format!("[aliases]\n\"app\" = \"{}/{repo}\"\n", dead_port()),
    );
    fs::write(
        b.dir.path().join("short-name-aliases.conf"),
        format!("[aliases]\n  \"app\" = \"{}/{repo}\"\n", registry()),
    )
    .unwrap();
    let r = pull(&b, "app:1.0");
    pulled_ok(&r);
    assert!(
        r.stderr.contains("short-name-aliases.conf"),
        "-v names the cache: {}",
        r.stderr
    );
    assert!(
        stored(&b).contains(&format!("{}/{repo}:1.0", registry())),
        "{}",
        stored(&b)
    );
}

#[test]
fn a_short_name_of_two_search_registries_is_ambiguous() {
    require_env!();
    let other = dead_port();
    let b = Berth::new();
    write_conf(
        &b,
        &format!(
            "unqualified-search-registries = [\"{}\", \"{other}\"]\n",
            registry()
        ),
    );
    let r = pull(&b, "acme/app:1");
    assert_eq!(r.status, 1, "a user error: {}", r.stderr);
    assert!(r.stderr.contains("ambiguous"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{}/acme/app:1", registry()))
            && r.stderr.contains(&format!("{other}/acme/app:1")),
        "names both: {}",
        r.stderr
    );
}

#[test]
fn a_short_name_without_registries_conf_is_an_error_not_docker_hub() {
    require_env!();
    let b = Berth::new();
    let r = pull(&b, "alpine");
    assert_eq!(r.status, 1, "a user error: {}", r.stderr);
    assert!(
        r.stderr
            .contains("no registry is configured for short names"),
        "{}",
        r.stderr
    );
}
