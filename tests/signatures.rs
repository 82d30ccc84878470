//! Signed images only, where the operator's policy says so: cosign-style signatures made and
//! checked here with openssl (a second implementation: berth verifies with RustCrypto),
//! pushed to the test registry as cosign stores them, and pulled under each kind of policy.
//! Both of cosign's forms: the `.sig` tag, and cosign 3's sigstore bundles attached as
//! referrers (through the referrers tag schema: the test registry, Distribution 2.8, has no
//! referrers API; `tests/registry_lies.rs` serves one).

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::sigstore::*;
use common::*;
use serde_json::{Value, json};

/// The simple-signing payload cosign writes: the digest and the repository, no tag.
fn payload(identity: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

/// Pushes a cosign signature of `payload` made with `key` to `sha256-<hex>.sig` of the
/// image `img` (its repository and digest).
fn push_signature(img: &BuiltImage, key: &Key, payload: &[u8]) {
    push_signature_for(&repo_of(img), &img.digest, key, payload);
}

/// Pushes a cosign signature of `payload` made with `key` to `sha256-<hex>.sig` of
/// `digest` in `repo`, as cosign lays it out.
fn push_signature_for(repo: &str, digest: &str, key: &Key, payload: &[u8]) {
    push_signature_with(repo, digest, &base64_encode(&key.sign(payload)), payload);
}

/// Pushes `signature` (base64) of `payload` to `sha256-<hex>.sig` of `digest` in `repo`,
/// as cosign lays it out.
fn push_signature_with(repo: &str, digest: &str, signature: &str, payload: &[u8]) {
    let repo = repo.to_owned();
    let payload_digest = put_blob(&repo, payload);
    // cosign's config: an empty image config whose one layer is the payload.
    let config = serde_json::to_vec(&json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_digest]}, "config": {},
    }))
    .unwrap();
    let config_digest = put_blob(&repo, &config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest, "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature},
        }],
    });
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    let bytes = serde_json::to_vec(&manifest).unwrap();
    put_manifest(
        &repo,
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
    );
}

/// `berth-test/name-…` of `host/berth-test/name-…:tag`.
fn repo_of(img: &BuiltImage) -> String {
    let (_, rest) = img.reference.split_once('/').unwrap();
    rest.rsplit_once(':').unwrap().0.to_owned()
}

/// `host/berth-test/name-…`: what a cosign payload names.
fn repository(img: &BuiltImage) -> String {
    img.reference.rsplit_once(':').unwrap().0.to_owned()
}

/// Writes a policy file into `b`'s directory.
fn write_policy(b: &Berth, policy: &Value) -> PathBuf {
    let path = b.dir.path().join("policy.json");
    fs::write(&path, serde_json::to_vec_pretty(policy).unwrap()).unwrap();
    path
}

/// A `sigstoreSigned` requirement for `key` with `identity`.
fn sigstore(key: &Key, identity: &Value) -> Value {
    json!([{"type": "sigstoreSigned", "keyPath": key.public, "signedIdentity": identity}])
}

/// A policy rejecting everything but `img`'s repository, which needs `reqs`.
fn only(img: &Img, reqs: &Value) -> Value {
    json!({"default": [{"type": "reject"}],
           "transports": {"docker": {repository(img): reqs}}})
}

fn pull(b: &Berth, policy: &Path, image: &str) -> Run {
    b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "pull",
        image,
    ])
}

/// A pushed image that prints `hello-from-NAME`, and the digests of its layers.
struct Img {
    built: BuiltImage,
    layers: Vec<String>,
}

impl std::ops::Deref for Img {
    type Target = BuiltImage;
    fn deref(&self) -> &BuiltImage {
        &self.built
    }
}

fn image(name: &str) -> Img {
    let spec = ImageSpec::script(&format!("echo hello-from-{name}"));
    let layers = spec
        .layers
        .iter()
        .map(|l| format!("sha256:{}", sha256(l)))
        .collect();
    Img {
        built: push(&spec, &unique_repo(name), "1.0"),
        layers,
    }
}

/// How many GETs of `img`'s layers the registry logged.
fn layer_gets(img: &Img) -> usize {
    let log = std::env::var("BERTH_TEST_REGISTRY_LOG")
        .unwrap_or_else(|_| "/var/tmp/berth-registry/registry.log".to_owned());
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("registry log {log}: {e}"));
    let repo = repo_of(img);
    img.layers
        .iter()
        .map(|d| format!("\"GET /v2/{repo}/blobs/{d}"))
        .map(|needle| text.lines().filter(|l| l.contains(&needle)).count())
        .sum()
}

/// Asserts `r` is a refusal of `img` by the policy at `policy`, saying `why`, and that
/// no layer of `img` was fetched.
fn assert_refused(r: &Run, img: &Img, policy: &Path, why: &str) {
    assert_eq!(r.status, 1, "a refusal is the user's error: {}", r.stderr);
    assert!(r.stderr.contains(&repository(img)), "{}", r.stderr);
    assert!(r.stderr.contains(policy.to_str().unwrap()), "{}", r.stderr);
    assert!(r.stderr.contains(why), "expected {why:?}: {}", r.stderr);
    assert_eq!(layer_gets(img), 0, "a layer was fetched");
}

#[test]
fn a_signed_image_is_pulled_and_runs() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    let img = image("signed");
    push_signature(&img, &key, &payload(&repository(&img), &img.digest));
    let policy = write_policy(
        &b,
        &only(&img, &sigstore(&key, &json!({"type": "matchRepository"}))),
    );
    let r = pull(&b, &policy, &img.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), format!("{} {}", img.reference, img.digest));
    assert_eq!(layer_gets(&img), img.layers.len());

    // And end to end, in a fresh cache, through `berth run`.
    let b = Berth::new();
    let job = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "run",
        "--json",
        job.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("hello-from-signed"), "{}", r.stderr);
}

#[test]
fn an_unsigned_image_is_refused_before_any_layer() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    let img = image("unsigned");
    let policy = write_policy(
        &b,
        &json!({"default": sigstore(&key, &json!({"type": "matchRepository"}))}),
    );
    let r = pull(&b, &policy, &img.reference);
    assert_refused(&r, &img, &policy, "has no signature");
    assert!(
        r.stderr
            .contains(&format!("{}.sig", img.digest.replacen(':', "-", 1)))
    );

    // `berth run` refuses it the same way, as the user's error.
    let job = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "run",
        "--json",
        job.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert_eq!(r.json()["error_class"], "user");
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("has no signature"), "{message}");
    assert!(message.contains(policy.to_str().unwrap()), "{message}");
    assert_eq!(layer_gets(&img), 0);
}

#[test]
fn a_signature_by_another_key_is_refused() {
    require_env!();
    let b = Berth::new();
    let (ours, theirs) = (
        Key::new(b.dir.path(), "ours"),
        Key::new(b.dir.path(), "theirs"),
    );
    let img = image("otherkey");
    push_signature(&img, &theirs, &payload(&repository(&img), &img.digest));
    let policy = write_policy(
        &b,
        &only(&img, &sigstore(&ours, &json!({"type": "matchRepository"}))),
    );
    let r = pull(&b, &policy, &img.reference);
    assert_refused(&r, &img, &policy, "none of its signatures verifies with");
    assert!(
        r.stderr.contains(ours.public.to_str().unwrap()),
        "{}",
        r.stderr
    );
}

#[test]
fn a_signature_of_another_digest_is_refused() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    let img = image("otherdigest");
    let other = format!("sha256:{}", sha256(b"another image"));
    push_signature(&img, &key, &payload(&repository(&img), &other));
    let policy = write_policy(
        &b,
        &only(&img, &sigstore(&key, &json!({"type": "matchRepository"}))),
    );
    let r = pull(&b, &policy, &img.reference);
    assert_refused(&r, &img, &policy, &format!("is for another image, {other}"));
}

#[test]
fn identities_match_repository_or_exact_repository() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    // A mirror of an upstream image: the signature names the upstream repository.
    let img = image("mirror");
    let upstream = "upstream.example/acme/app";
    push_signature(&img, &key, &payload(upstream, &img.digest));

    let by_repo = write_policy(
        &b,
        &only(&img, &sigstore(&key, &json!({"type": "matchRepository"}))),
    );
    let r = pull(&b, &by_repo, &img.reference);
    assert_refused(
        &r,
        &img,
        &by_repo,
        &format!("its signature names {upstream}"),
    );

    // A cosign payload names no tag: matchExact (and the default for a tag) cannot match.
    let exact = write_policy(
        &b,
        &only(&img, &sigstore(&key, &json!({"type": "matchExact"}))),
    );
    let r = pull(&b, &exact, &img.reference);
    assert_refused(&r, &img, &exact, "does not accept");

    let mirrored = json!({"type": "exactRepository", "dockerRepository": upstream});
    let policy = write_policy(&b, &only(&img, &sigstore(&key, &mirrored)));
    let r = pull(&b, &policy, &img.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);

    // exactRepository naming another repository refuses it.
    let b = Berth::new();
    let key2 = Key::new(b.dir.path(), "ops");
    let own = image("own");
    push_signature(&own, &key2, &payload(&repository(&own), &own.digest));
    let elsewhere = json!({"type": "exactRepository", "dockerRepository": upstream});
    let policy = write_policy(&b, &only(&own, &sigstore(&key2, &elsewhere)));
    let r = pull(&b, &policy, &own.reference);
    assert_refused(
        &r,
        &own,
        &policy,
        &format!("its signature names {}", repository(&own)),
    );
    // Without signedIdentity (matchRepoDigestOrExact): a tag must match exactly, which a
    // cosign payload never does; a digest only needs the repository.
    let default = json!({"default": [{"type": "sigstoreSigned", "keyPath": key2.public}]});
    let default = write_policy(&b, &default);
    let r = pull(&b, &default, &own.reference);
    assert_refused(
        &r,
        &own,
        &default,
        "(matchRepoDigestOrExact) does not accept",
    );
    let r = pull(&b, &default, &own.pinned());
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(layer_gets(&own), own.layers.len());
    // And by tag under matchRepository, in a cache of its own (so the check runs again).
    let fresh = Berth::new();
    let same = write_policy(
        &fresh,
        &only(&own, &sigstore(&key2, &json!({"type": "matchRepository"}))),
    );
    assert_eq!(pull(&fresh, &same, &own.reference).status, 0);
}

#[test]
fn reject_by_default_with_one_repository_let_in() {
    require_env!();
    let b = Berth::new();
    let open = image("open");
    let closed = image("closed");
    let policy = write_policy(
        &b,
        &json!({"default": [{"type": "reject"}],
                "transports": {"docker": {
                    repository(&open): [{"type": "insecureAcceptAnything"}]}}}),
    );
    let r = pull(&b, &policy, &open.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let r = pull(&b, &policy, &closed.reference);
    assert_refused(&r, &closed, &policy, "the policy rejects it");
    assert!(r.stderr.contains("(default)"), "{}", r.stderr);
}

#[test]
fn a_gpg_requirement_is_a_clear_error() {
    require_env!();
    let b = Berth::new();
    let img = image("gpg");
    let policy = write_policy(
        &b,
        &json!({"default": [{"type": "signedBy", "keyType": "GPGKeys",
                             "keyPath": "/etc/pki/rpm-gpg/KEY"}]}),
    );
    let r = pull(&b, &policy, &img.reference);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains(policy.to_str().unwrap()), "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot check \"signedBy\""),
        "{}",
        r.stderr
    );
    assert_eq!(layer_gets(&img), 0);

    // Nor does an image already stored run under a broken policy.
    assert_eq!(b.run_cmd(&["pull", &img.reference]).status, 0);
    for again in [&img.reference, &img.pinned()] {
        let r = pull(&b, &policy, again);
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert!(r.stderr.contains(policy.to_str().unwrap()), "{}", r.stderr);
    }
}

#[test]
fn without_a_policy_images_are_accepted_and_verbose_says_so() {
    require_env!();
    let b = Berth::new();
    let img = image("nopolicy");
    let r = b.run_cmd(&["-v", "pull", &img.reference]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("no signature policy"), "{}", r.stderr);

    // A policy in berth's home applies without the flag.
    let img = image("homepolicy");
    let b = Berth::new();
    fs::create_dir_all(b.home()).unwrap();
    if let Some((uid, gid)) = test_user() {
        std::os::unix::fs::chown(b.home(), Some(uid), Some(gid)).unwrap();
    }
    let at_home = b.home().join("policy.json");
    fs::write(&at_home, br#"{"default": [{"type": "reject"}]}"#).unwrap();
    let r = b.run_cmd(&["pull", &img.reference]);
    assert_refused(&r, &img, &at_home, "the policy rejects it");
}

#[test]
fn local_layouts_follow_the_oci_scopes() {
    require_env!();
    let b = Berth::new();
    let img = image("layout");
    let dir = img.layout.path().to_str().unwrap().to_owned();
    let policy = write_policy(
        &b,
        &json!({"default": [{"type": "reject"}],
                "transports": {"oci": {dir.clone(): [{"type": "insecureAcceptAnything"}]}}}),
    );
    let r = pull(&b, &policy, &format!("oci:{dir}:1.0"));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let key = Key::new(b.dir.path(), "ops");
    let signed = write_policy(
        &b,
        &json!({"default": sigstore(&key, &json!({"type": "matchRepository"}))}),
    );
    let r = pull(&b, &signed, &format!("oci:{dir}:1.0"));
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot check signatures of oci:"),
        "{}",
        r.stderr
    );
}

/// Pushes an index holding `img`'s manifest for this host's platform as `repo:tag`;
/// returns the index's digest.
fn push_index(img: &BuiltImage, tag: &str) -> String {
    let repo = repo_of(img);
    let url = |r: &str| format!("http://{}/v2/{repo}/manifests/{r}", registry());
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let manifest = curl(&["-H", &format!("Accept: {oci}"), &url(&img.digest)]);
    assert_eq!(
        format!("sha256:{}", sha256(manifest.as_bytes())),
        img.digest
    );
    let arch = berth::image::host_architecture();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": oci, "digest": img.digest, "size": manifest.len(),
                       "platform": {"architecture": arch, "os": "linux"}}],
    }))
    .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &index).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &format!("@{}", file.path().display()),
        "-o",
        "/dev/null",
        &url(tag),
    ]);
    format!("sha256:{}", sha256(&index))
}

#[test]
fn an_index_is_signed_by_its_own_digest() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    let img = image("index");
    let index = push_index(&img, "multi");
    let multi = format!("{}:multi", repository(&img));
    let policy = write_policy(
        &b,
        &only(&img, &sigstore(&key, &json!({"type": "matchRepository"}))),
    );

    // cosign signs what the tag names: a signature of the platform manifest, even where
    // the index's signatures are looked for, does not sign the index.
    let repo = repo_of(&img);
    push_signature_for(
        &repo,
        &index,
        &key,
        &payload(&repository(&img), &img.digest),
    );
    let r = pull(&b, &policy, &multi);
    assert_refused(
        &r,
        &img,
        &policy,
        &format!("is for another image, {}, not {index}", img.digest),
    );

    push_signature_for(&repo, &index, &key, &payload(&repository(&img), &index));
    let r = pull(&b, &policy, &multi);
    assert_eq!(r.status, 0, "{}", r.stderr);
    // berth prints the platform manifest it picked from the index.
    assert_eq!(r.stdout.trim(), format!("{multi} {}", img.digest));
    assert_eq!(layer_gets(&img), img.layers.len());
}

#[test]
fn a_missing_policy_file_is_the_users_error() {
    require_env!();
    let b = Berth::new();
    let img = image("nofile");
    let missing = b.dir.path().join("nonexistent/policy.json");
    let r = pull(&b, &missing, &img.reference);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "cannot read the signature policy {}",
            missing.display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(layer_gets(&img), 0);
}

/// A policy accepting anything but `repo` (a repository scope, `host/name`), which needs
/// `key`'s signature.
fn signed_repository_only(repo: &str, key: &Key) -> Value {
    json!({"default": [{"type": "insecureAcceptAnything"}],
           "transports": {"docker": {repo: sigstore(key, &json!({"type": "matchRepository"}))}}})
}

/// How many GETs of the signature manifest of `digest` in `repo` the registry logged.
fn signature_gets(repo: &str, digest: &str) -> usize {
    let log = std::env::var("BERTH_TEST_REGISTRY_LOG")
        .unwrap_or_else(|_| "/var/tmp/berth-registry/registry.log".to_owned());
    let text = fs::read_to_string(&log).unwrap();
    let needle = format!(
        "\"GET /v2/{repo}/manifests/{}.sig",
        digest.replacen(':', "-", 1)
    );
    text.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn a_stored_digest_is_not_accepted_under_a_signed_repositorys_tag() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    // One image pushed to an open repository and, unsigned, as a tag of a repository whose
    // images must be signed: the same digest under both names.
    let spec = ImageSpec::script("echo hello-from-impostor");
    let open = push(&spec, &unique_repo("open"), "1.0");
    let acme = push(&spec, &unique_repo("acme"), "1");
    assert_eq!(open.digest, acme.digest);
    let policy = write_policy(&b, &signed_repository_only(&repository(&acme), &key));
    let r = pull(&b, &policy, &open.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);

    for reference in [acme.reference.clone(), acme.pinned()] {
        let r = pull(&b, &policy, &reference);
        assert_eq!(r.status, 1, "{reference} was accepted: {}", r.stderr);
        assert!(r.stderr.contains(&reference), "{}", r.stderr);
        assert!(r.stderr.contains(policy.to_str().unwrap()), "{}", r.stderr);
        assert!(r.stderr.contains("has no signature"), "{}", r.stderr);
    }
    // The store holds the bytes, but no record of them under acme's name.
    let images = b.run_cmd(&["images"]);
    assert!(
        !images.stdout.contains(&repository(&acme)),
        "{}",
        images.stdout
    );
}

#[test]
fn a_configuration_cannot_run_a_stored_image_under_a_signed_components_name() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    let acme = image("component");
    push_signature(&acme, &key, &payload(&repository(&acme), &acme.digest));
    // Any image the store holds, from anywhere: here one that shows what it was given.
    let impostor = push(
        &ImageSpec::script("echo IMPOSTOR-RAN; cat /data/config.json"),
        &unique_repo("impostor"),
        "1.0",
    );
    let policy = write_policy(&b, &signed_repository_only(&repository(&acme), &key));
    assert_eq!(pull(&b, &policy, &impostor.reference).status, 0);

    let image_parameters = encrypted(
        &b,
        &["--component", "acme.test", "--scope", "component"],
        json!({"#api_key": "component-key-123"}),
    );
    let mut j = job(&acme.reference, json!({}), json!({}));
    j["component"]["image_parameters"] = image_parameters;
    let mut by_configuration = j.clone();
    by_configuration["configuration"]["runtime"] = json!({"image_tag": impostor.digest});
    let cases = [
        ("runtime.image_tag", by_configuration, vec![]),
        ("--tag", j.clone(), vec!["--tag", impostor.digest.as_str()]),
    ];
    let pinned = format!("{}@{}", repository(&acme), impostor.digest);
    for (how, job, extra) in cases {
        let path = b.write_job(&job);
        let mut args = vec![
            "--signature-policy",
            policy.to_str().unwrap(),
            "run",
            "--json",
        ];
        args.extend(extra);
        args.push(path.to_str().unwrap());
        let r = b.run_cmd(&args);
        assert_eq!(r.status, 1, "{how}: {}\n{}", r.stdout, r.stderr);
        let result = r.json();
        assert_eq!(result["error_class"], "user", "{how}");
        assert_eq!(result["exit_code"], Value::Null, "{how}: a container ran");
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "image {pinned} is refused by the signature policy"
            )) && message.contains("has no signature"),
            "{how}: {message}"
        );
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(!all.contains("IMPOSTOR-RAN"), "{how}: the impostor ran");
        assert!(!all.contains("component-key-123"), "{how}");
    }

    // The component's own image runs, as signed.
    let path = b.write_job(&j);
    let r = b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "run",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("hello-from-component"), "{}", r.stderr);
}

#[test]
fn a_pinned_digest_never_seen_in_its_repository_is_confirmed_with_the_registry() {
    require_env!();
    let b = Berth::new();
    let stored = push(
        &ImageSpec::script("echo stored"),
        &unique_repo("stored"),
        "1.0",
    );
    let elsewhere = push(
        &ImageSpec::script("echo elsewhere"),
        &unique_repo("elsewhere"),
        "1.0",
    );
    assert_eq!(b.run_cmd(&["pull", &stored.reference]).status, 0);
    // Its digest under a repository that does not have it: the registry says so.
    let foreign = format!("{}@{}", repository(&elsewhere), stored.digest);
    let r = b.run_cmd(&["pull", &foreign]);
    assert_eq!(r.status, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("image {foreign} not found in the registry")),
        "{}",
        r.stderr
    );
    // Under its own repository it is known: nothing is asked.
    let log = std::env::var("BERTH_TEST_REGISTRY_LOG")
        .unwrap_or_else(|_| "/var/tmp/berth-registry/registry.log".to_owned());
    let asked = || {
        let needle = format!("/v2/{}/", repo_of(&stored));
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    };
    let before = asked();
    let r = b.run_cmd(&["pull", &stored.pinned()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        asked(),
        before,
        "the registry was asked about a known pinned image"
    );
}

#[test]
fn a_stored_image_is_checked_again_when_the_policy_changes() {
    require_env!();
    let b = Berth::new();
    let (ours, theirs) = (
        Key::new(b.dir.path(), "ours"),
        Key::new(b.dir.path(), "theirs"),
    );
    let img = image("repolicy");
    push_signature(&img, &ours, &payload(&repository(&img), &img.digest));
    let repo = repo_of(&img);
    let first = only(&img, &sigstore(&ours, &json!({"type": "matchRepository"})));
    let policy = write_policy(&b, &first);
    assert_eq!(pull(&b, &policy, &img.reference).status, 0);
    assert_eq!(signature_gets(&repo, &img.digest), 1);
    // The same rules: what they accepted stays accepted, by tag or by digest, unasked.
    for again in [img.reference.clone(), img.pinned()] {
        let r = pull(&b, &policy, &again);
        assert_eq!(r.status, 0, "{}", r.stderr);
    }
    assert_eq!(signature_gets(&repo, &img.digest), 1);

    // Another key, in the same file: the stored image is checked again, and refused.
    write_policy(
        &b,
        &only(
            &img,
            &sigstore(&theirs, &json!({"type": "matchRepository"})),
        ),
    );
    for again in [img.reference.clone(), img.pinned()] {
        let r = pull(&b, &policy, &again);
        assert_eq!(r.status, 1, "{again}: {}", r.stderr);
        assert!(
            r.stderr.contains("none of its signatures verifies with"),
            "{}",
            r.stderr
        );
    }
    // And a job naming it does not run.
    let job = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "run",
        "--json",
        job.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("hello-from-repolicy"), "{}", r.stderr);

    // The first rules again: accepted (checked once more), nothing fetched but that.
    write_policy(&b, &first);
    let r = pull(&b, &policy, &img.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(layer_gets(&img), img.layers.len());
}

#[test]
fn without_a_policy_of_its_own_berth_uses_the_systems() {
    require_env!();
    let b = Berth::new();
    let img = image("system-policy");
    let system = b.dir.path().join("system-policy.json");
    fs::write(&system, br#"{"default": [{"type": "reject"}]}"#).unwrap();
    let pull_with_system = |system: &Path| {
        let mut berth = b.cmd();
        berth
            .env("BERTH_SYSTEM_SIGNATURE_POLICY", system)
            .args(["-v", "pull", &img.reference]);
        Run::from(berth.output().unwrap())
    };
    let r = pull_with_system(&system);
    assert_refused(&r, &img, &system, "the policy rejects it");
    assert!(
        r.stderr
            .contains(&format!("signature policy {}", system.display())),
        "{}",
        r.stderr
    );

    // None there: accepted, and -v says where berth looked.
    let absent = b.dir.path().join("absent/policy.json");
    let r = pull_with_system(&absent);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let home_policy = b.home().join("policy.json");
    assert!(
        r.stderr.contains(&format!(
            "no signature policy (none at {} or {})",
            home_policy.display(),
            absent.display()
        )),
        "{}",
        r.stderr
    );
}

/// Attaches a cosign 3 bundle of `statement`, signed with `key`, to `img` as cosign does on
/// a registry without the referrers API; returns the referrer manifest's digest.
fn attach(img: &BuiltImage, key: &Key, statement: &Value) -> String {
    attach_bundle(&repo_of(img), &img.digest, &bundle(key, statement))
}

fn by_repository(key: &Key) -> Value {
    sigstore(key, &json!({"type": "matchRepository"}))
}

#[test]
fn a_cosign_3_bundle_is_found_through_the_referrers_tag_and_accepted() {
    require_env!();
    let b = Berth::new();
    let key = Key::new(b.dir.path(), "ops");
    let img = image("bundle");
    // Another artifact refers to the image too: an attestation of another predicate, by
    // the same key, which signs no approval of the image.
    let provenance = statement(&img.digest, "https://slsa.dev/provenance/v1");
    attach(&img, &key, &provenance);
    attach(&img, &key, &cosign_statement(&img.digest));
    let policy = write_policy(&b, &only(&img, &by_repository(&key)));
    let r = pull(&b, &policy, &img.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), format!("{} {}", img.reference, img.digest));
    assert_eq!(layer_gets(&img), img.layers.len());

    // End to end, in a fresh cache, through `berth run`.
    let b = Berth::new();
    let job = b.write_job(&job(&img.reference, json!({}), json!({})));
    let r = b.run_cmd(&[
        "--signature-policy",
        policy.to_str().unwrap(),
        "run",
        "--json",
        job.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("hello-from-bundle"), "{}", r.stderr);

    // A bundle names no repository: it stands for the one it is attached in. The default
    // identity (matchRepoDigestOrExact) accepts that for a digest, not for a tag.
    let b = Berth::new();
    let default = write_policy(
        &b,
        &only(
            &img,
            &json!([{"type": "sigstoreSigned", "keyPath": key.public}]),
        ),
    );
    let r = pull(&b, &default, &img.reference);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "its sigstore bundle names no repository, so it stands for {}",
            repository(&img)
        )),
        "{}",
        r.stderr
    );
    let r = pull(&b, &default, &img.pinned());
    assert_eq!(r.status, 0, "{}", r.stderr);
}

#[test]
fn forged_and_foreign_bundles_are_refused() {
    require_env!();
    let b = Berth::new();
    let (ours, theirs) = (
        Key::new(b.dir.path(), "ours"),
        Key::new(b.dir.path(), "theirs"),
    );
    let refused = |img: &Img, why: &str| {
        let policy = write_policy(&b, &only(img, &by_repository(&ours)));
        let r = pull(&b, &policy, &img.reference);
        assert_refused(&r, img, &policy, why);
    };

    let other_key = image("bundle-otherkey");
    attach(&other_key, &theirs, &cosign_statement(&other_key.digest));
    refused(
        &other_key,
        &format!(
            "none of its signatures verifies with {}",
            ours.public.display()
        ),
    );

    let other_digest = image("bundle-otherdigest");
    let elsewhere = format!("sha256:{}", sha256(b"another image"));
    attach(&other_digest, &ours, &cosign_statement(&elsewhere));
    refused(
        &other_digest,
        &format!(
            "is for another image, {elsewhere}, not {}",
            other_digest.digest
        ),
    );

    // The payload swapped for one naming the image, the signature left as it was.
    let tampered = image("bundle-tampered");
    let mut forged = bundle(&ours, &cosign_statement(&elsewhere));
    let payload = serde_json::to_vec(&cosign_statement(&tampered.digest)).unwrap();
    forged["dsseEnvelope"]["payload"] = base64_encode(&payload).into();
    attach_bundle(&repo_of(&tampered), &tampered.digest, &forged);
    refused(&tampered, "none of its signatures verifies with");

    // A signature with one bit flipped.
    let flipped = image("bundle-flipped");
    let mut forged = bundle(&ours, &cosign_statement(&flipped.digest));
    let payload = serde_json::to_vec(&cosign_statement(&flipped.digest)).unwrap();
    let mut signature = ours.sign(&pae(IN_TOTO, &payload));
    let last = signature.len() - 1;
    signature[last] ^= 1;
    forged["dsseEnvelope"]["signatures"][0]["sig"] = base64_encode(&signature).into();
    attach_bundle(&repo_of(&flipped), &flipped.digest, &forged);
    refused(&flipped, "none of its signatures verifies with");

    // Signed by the key, but an attestation, not a signature.
    let attested = image("bundle-attested");
    let provenance = statement(&attested.digest, "https://slsa.dev/provenance/v1");
    attach(&attested, &ours, &provenance);
    refused(
        &attested,
        "its sigstore bundle signs a statement of predicate type https://slsa.dev/provenance/v1",
    );

    // Another image's genuine bundle attached to this one: it signs the other digest.
    let target = image("bundle-moved");
    let repo = repo_of(&target);
    let other = push(&ImageSpec::script("echo other"), &repo, "other");
    let genuine = bundle(&ours, &cosign_statement(&other.digest));
    attach_bundle(&repo, &target.digest, &genuine);
    refused(
        &target,
        &format!(
            "is for another image, {}, not {}",
            other.digest, target.digest
        ),
    );

    // A referrers index listing a bundle whose manifest is attached to another image.
    let listed = image("bundle-listed");
    let repo = repo_of(&listed);
    let other = push(&ImageSpec::script("echo other"), &repo, "other");
    let referrer = attach_bundle(&repo, &other.digest, &genuine);
    let size = get_manifest(
        &repo,
        &referrer,
        "application/vnd.oci.image.manifest.v1+json",
    )
    .unwrap()
    .len();
    list_referrer(&repo, &listed.digest, &referrer, size);
    refused(&listed, "has no signature");
}

#[test]
fn key_paths_accept_a_signature_by_any_of_their_keys() {
    require_env!();
    let b = Berth::new();
    let keys: Vec<Key> = ["first", "second", "stranger"]
        .iter()
        .map(|n| Key::new(b.dir.path(), n))
        .collect();
    let trusted = |img: &Img| {
        let reqs = json!([{"type": "sigstoreSigned",
                           "keyPaths": [keys[0].public, keys[1].public],
                           "signedIdentity": {"type": "matchRepository"}}]);
        write_policy(&b, &only(img, &reqs))
    };
    // The second key's bundle, and the first key's `.sig`: each is enough.
    let by_second = image("keypaths-bundle");
    attach(&by_second, &keys[1], &cosign_statement(&by_second.digest));
    let r = pull(&b, &trusted(&by_second), &by_second.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let by_first = image("keypaths-sig");
    let signed = payload(&repository(&by_first), &by_first.digest);
    push_signature(&by_first, &keys[0], &signed);
    let r = pull(&b, &trusted(&by_first), &by_first.reference);
    assert_eq!(r.status, 0, "{}", r.stderr);

    let by_stranger = image("keypaths-stranger");
    attach(
        &by_stranger,
        &keys[2],
        &cosign_statement(&by_stranger.digest),
    );
    let policy = trusted(&by_stranger);
    let r = pull(&b, &policy, &by_stranger.reference);
    let both = format!(
        "none of its signatures verifies with {} or {}",
        keys[0].public.display(),
        keys[1].public.display()
    );
    assert_refused(&r, &by_stranger, &policy, &both);
}

#[test]
fn p384_keys_verify_bundles_and_sig_tags() {
    require_env!();
    let b = Berth::new();
    let key = Key::p384(b.dir.path(), "p384");
    let accepted = |img: &Img| {
        let policy = write_policy(&b, &only(img, &by_repository(&key)));
        let r = pull(&b, &policy, &img.reference);
        assert_eq!(r.status, 0, "{}: {}", img.reference, r.stderr);
    };
    // cosign 3's bundle: SHA-384 on P-384.
    let bundled = image("p384-bundle");
    attach(&bundled, &key, &cosign_statement(&bundled.digest));
    accepted(&bundled);
    // The `.sig` form, over SHA-384 (cosign) and over SHA-256 (containers/image's hash).
    for hash in ["-sha384", "-sha256"] {
        let img = image(&format!("p384-sig{hash}"));
        let signed = payload(&repository(&img), &img.digest);
        let signature = base64_encode(&key.sign_with(hash, &signed));
        push_signature_with(&repo_of(&img), &img.digest, &signature, &signed);
        accepted(&img);
    }
    // A P-256 key's signature does not pass for it.
    let p256 = Key::new(b.dir.path(), "p256");
    let img = image("p384-otherkey");
    attach(&img, &p256, &cosign_statement(&img.digest));
    let policy = write_policy(&b, &only(&img, &by_repository(&key)));
    let r = pull(&b, &policy, &img.reference);
    assert_refused(&r, &img, &policy, "none of its signatures verifies with");
}
