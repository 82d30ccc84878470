//! Secrets end to end (contract §8, §10): `berth encrypt`, a job that decrypts right before
//! the run, masking of everything berth prints from the component (also a secret split
//! across two writes of its stdout), states encrypted again, and the refusals.

mod common;

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery";
const PLAIN: &str = "plain-value-9876";
const STATE_SECRET: &str = "state-secret-value";

fn sha256_hex(s: &str) -> String {
    sha256(s.as_bytes())
}

/// Says, without printing them, that it sees the plain values; then prints them every way
/// it can: raw, base64, JSON-escaped, on stderr, and split across two writes.
const SCRIPT: &str = r##"pw=$(sed -n 's/.*"#password": *"\([^"]*\)".*/\1/p' /data/config.json)
plain=$(sed -n 's/.*"#plain": *"\([^"]*\)".*/\1/p' /data/config.json)
st=$(sed -n 's/.*"#refresh": *"\([^"]*\)".*/\1/p' /data/in/state.json)
echo "HASH $(printf %s "$pw" | sha256sum | cut -d' ' -f1)"
echo "PLAINHASH $(printf %s "$plain" | sha256sum | cut -d' ' -f1)"
echo "STATEHASH $(printf %s "$st" | sha256sum | cut -d' ' -f1)"
echo "RAW $pw and $plain"
echo "B64 $(printf %s "$pw" | base64)"
echo "STATE $st"
printf 'SPLIT correct-hor'
sleep 0.5
printf 'se-battery END\n'
echo "ERR $pw" >&2
echo '{"#refresh": "state-secret-value", "n": 1}' > /data/out/state.json
[ "$(sed -n 's/.*"fail": *\(true\).*/\1/p' /data/config.json)" = true ] && exit 1
exit 0"##;

fn assert_no_secret(what: &str, text: &str) {
    for s in [PASSWORD, PLAIN, STATE_SECRET] {
        assert!(!text.contains(s), "{what} shows {s}:\n{text}");
    }
}

#[test]
fn encrypted_values_reach_the_component_plain_and_nothing_berth_prints_shows_them() {
    require_env!();
    let img = push(&ImageSpec::script(SCRIPT), &unique_repo("secrets"), "1.0");
    let b = Berth::new();
    let config = encrypted(
        &b,
        &["--component", "acme.test", "--config", "42"],
        json!({"parameters": {"#password": PASSWORD, "user": "me"}}),
    );
    let cipher = config["parameters"]["#password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cipher.starts_with("KBC::ProjectSecure::"), "{cipher}");
    assert_eq!(config["parameters"]["user"], "me");
    // Encrypting again leaves a ciphertext as it is.
    let again = encrypted(&b, &["--component", "acme.test"], config.clone());
    assert_eq!(again, config);
    let key_file = b.home().join("secrets/keys.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&key_file.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let mut params = config["parameters"].clone();
    params["#plain"] = json!(PLAIN);
    let j = job(&img.reference, json!({}), params.clone());
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["status"], "success");
    let out = &r.stderr;
    assert!(
        out.contains(&format!("HASH {}", sha256_hex(PASSWORD))),
        "{out}"
    );
    assert!(
        out.contains(&format!("PLAINHASH {}", sha256_hex(PLAIN))),
        "{out}"
    );
    assert!(out.contains("RAW [hidden] and [hidden]"), "{out}");
    assert!(out.contains("B64 [hidden]"), "{out}");
    assert!(out.contains("SPLIT [hidden] END"), "{out}");
    assert!(
        out.contains("configuration.parameters.#plain is not encrypted"),
        "{out}"
    );
    assert_no_secret("the run", &format!("{}{out}", r.stdout));

    // The state the component wrote is stored encrypted, and decrypted for the next run.
    let stored = b.run_cmd(&["state", "show", "--all", "acme.test", "42"]);
    assert_eq!(stored.status, 0, "{}", stored.stderr);
    let state: Value = serde_json::from_str(&stored.stdout).unwrap();
    assert_eq!(state["component"]["n"], 1);
    let sealed = state["component"]["#refresh"].as_str().unwrap();
    assert!(sealed.starts_with("KBC::ProjectSecure::"), "{sealed}");
    assert_no_secret("the stored state", &stored.stdout);

    // A new master key: older ciphertexts still decrypt. The failing run's message (from
    // its stderr) is masked too, and so is the state it found.
    let rotated = encrypt(&b, &["--rotate-key"], "");
    assert_eq!(rotated.status, 0, "{}", rotated.stderr);
    assert!(
        rotated.stderr.contains("master key 2"),
        "{}",
        rotated.stderr
    );
    params["fail"] = json!(true);
    let r = b.run_job(&job(&img.reference, json!({}), params));
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert_eq!(result["message"], "ERR [hidden]");
    assert!(
        r.stderr
            .contains(&format!("STATEHASH {}", sha256_hex(STATE_SECRET))),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("STATE [hidden]"), "{}", r.stderr);
    assert_no_secret("the failed run", &format!("{}{}", r.stdout, r.stderr));
    let listed = b.run_cmd(&["state", "show", "--all", "acme.test", "42"]);
    assert_no_secret("the state after", &listed.stdout);
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_ciphertext_of_another_scope_is_a_user_error_naming_its_key_only() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo RAN"),
        &unique_repo("secrets-scope"),
        "1.0",
    );
    let b = Berth::new();
    let cases = [
        (vec!["--component", "acme.other"], "parameters.#password"),
        (
            vec!["--component", "acme.test", "--project", "2"],
            "parameters.#password",
        ),
        (
            vec![
                "--component",
                "acme.test",
                "--config",
                "43",
                "--scope",
                "config",
            ],
            "parameters.#password",
        ),
    ];
    for (args, path) in cases {
        let config = encrypted(&b, &args, json!({"#password": PASSWORD}));
        let cipher = config["#password"].as_str().unwrap().to_owned();
        let r = b.run_job(&job(&img.reference, json!({}), config));
        assert_eq!(r.status, 1, "{args:?}: {}", r.stderr);
        let result = r.json();
        assert_eq!(result["error_class"], "user", "{args:?}");
        assert_eq!(
            result["exit_code"],
            Value::Null,
            "{args:?}: no container ran"
        );
        let message = result["message"].as_str().unwrap();
        assert!(message.contains(path), "{args:?}: {message}");
        assert!(message.contains("does not decrypt"), "{args:?}: {message}");
        assert!(!r.stderr.contains("RAN"), "{args:?}");
        assert!(!r.stdout.contains(&cipher) && !r.stderr.contains(&cipher));
        assert_no_secret("the refusal", &format!("{}{}", r.stdout, r.stderr));
    }
    // Project-wide: any component of the project reads it.
    let config = encrypted(
        &b,
        &["--component", "acme.other", "--scope", "project-wide"],
        json!({"#password": PASSWORD}),
    );
    assert!(
        config["#password"]
            .as_str()
            .unwrap()
            .starts_with("KBC::ProjectWideSecure::")
    );
    let r = b.run_job(&job(&img.reference, json!({}), config));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("RAN"), "{}", r.stderr);
}

#[test]
fn a_configuration_holding_a_component_secret_is_refused() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo RAN"),
        &unique_repo("secrets-copy"),
        "1.0",
    );
    let b = Berth::new();
    let image_parameters = encrypted(
        &b,
        &["--component", "acme.test", "--scope", "component"],
        json!({"#api_key": "component-key-123"}),
    );
    let mut j = job(
        &img.reference,
        json!({}),
        json!({"#mine": "component-key-123"}),
    );
    j["component"]["image_parameters"] = image_parameters.clone();
    let r = b.run_job(&j);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let result = r.json();
    assert_eq!(result["error_class"], "user");
    assert_eq!(
        result["message"],
        "component secrets cannot be used in configurations (used in \"parameters.#mine\")"
    );
    assert!(!r.stderr.contains("RAN"));
    assert!(!r.stderr.contains("component-key-123"), "{}", r.stderr);

    // Its own secret elsewhere is fine, and the component gets it decrypted.
    let mut j = job(&img.reference, json!({}), json!({"#mine": "my-own-key"}));
    j["component"]["image_parameters"] = image_parameters;
    let r = b.run_job(&j);
    assert_eq!(r.status, 0, "{}", r.stderr);
}

#[test]
fn encrypt_refuses_what_it_cannot_do_without_printing_the_input() {
    let b = Berth::new();
    let r = encrypt(
        &b,
        &["--component", "acme.test"],
        "{\"#a\": \"half-a-secret",
    );
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("stdin is not JSON"), "{}", r.stderr);
    assert!(!r.stderr.contains("half-a-secret"), "{}", r.stderr);
    let r = encrypt(
        &b,
        &["--component", "acme.test", "--scope", "config"],
        "{\"#a\": \"v\"}",
    );
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("#a") && r.stderr.contains("config_id"),
        "{}",
        r.stderr
    );
    let r = encrypt(&b, &["--scope", "project"], "{}");
    assert_eq!(
        r.status, 2,
        "clap refuses a missing --component: {}",
        r.stderr
    );
    // Nothing to encrypt: the key file is made all the same, once, private.
    let out = encrypted(&b, &["--component", "acme.test"], json!({"a": 1}));
    assert_eq!(out, json!({"a": 1}));
}

/// A PEM-like private key: several lines, `+` and `/` in it, a newline at its end.
const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDfakeKeyLine01
Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG9mcmVkcGx1Z2xl
c3RpbGxub3RhcmVhbGtleWJ1dGxvb2tzbGlrZW9uZXRvdGhlbWFza2VyKysvLzAx
k3yTailLine+/Zz09==
-----END PRIVATE KEY-----
";

/// Gets the key from `config.json` (JSON-escaped there) and prints it every way: whole,
/// inside a line, JSON-escaped, in base64 (one line and wrapped), line by line through
/// `sed`, split across two writes with a pause, on stderr; writes it to `out/files`.
const PEM_SCRIPT: &str = r##"esc=$(sed -n 's/.*"#private_key": *"\([^"]*\)".*/\1/p' /data/config.json)
printf '%b' "$esc" > /tmp/key.pem
echo "HASH $(sha256sum < /tmp/key.pem | cut -d' ' -f1)"
echo "WHOLE"
cat /tmp/key.pem
echo "INLINE $(cat /tmp/key.pem) AFTER"
echo "ESCAPED $esc"
echo "B64 $(base64 -w0 /tmp/key.pem)"
base64 /tmp/key.pem
sed 's/^/> /' /tmp/key.pem
head -c 40 /tmp/key.pem
sleep 0.5
tail -c +41 /tmp/key.pem
echo "DONE"
cp /tmp/key.pem /data/out/files/key.pem
{ echo "the key:"; cat /tmp/key.pem; } > /data/out/files/report.txt
echo "cannot use the key:" >&2
cat /tmp/key.pem >&2
exit 1"##;

fn assert_no_key_line(what: &str, text: &str) {
    for line in PEM.lines() {
        assert!(!text.contains(line), "{what} shows {line:?}:\n{text}");
    }
}

#[test]
fn a_multi_line_secret_is_hidden_in_every_shape_in_output_messages_and_debug_archives() {
    require_env!();
    let img = push(
        &ImageSpec::script(PEM_SCRIPT),
        &unique_repo("secrets-pem"),
        "1.0",
    );
    let b = Berth::new();
    let params = encrypted(
        &b,
        &["--component", "acme.test"],
        json!({"#private_key": PEM}),
    );
    let path = b.write_job(&job(&img.reference, json!({}), params));
    let r = b.run_cmd(&["run", "--json", "--mode", "debug", path.to_str().unwrap()]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    // The component got the key as it is.
    assert!(
        r.stderr
            .contains(&format!("HASH {}", sha256(PEM.as_bytes()))),
        "{}",
        r.stderr
    );
    // What it printed: every shape hidden, its lines still lines.
    let printed: Vec<&str> = r
        .stderr
        .lines()
        .skip_while(|l| *l != "WHOLE")
        .take_while(|l| !l.ends_with("DONE"))
        .collect();
    assert_eq!(
        printed,
        [
            "WHOLE",
            "[hidden]",
            "INLINE [hidden] AFTER",
            "ESCAPED [hidden]\\n",
            "B64 [hidden]",
            "[hidden]",
            "> [hidden]",
            "> [hidden]",
            "> [hidden]",
            "> [hidden]",
            "> [hidden]",
            "> [hidden]",
            "[hidden]",
        ],
        "{}",
        r.stderr
    );
    assert_no_key_line("the run", &format!("{}{}", r.stdout, r.stderr));
    // The job's message (from its stderr), also as stored in the job's record.
    let result = r.json();
    assert_eq!(result["message"], "cannot use the key:\n[hidden]");
    // The debug archive of the data folder at the end.
    let ids = result["outputs"]["debug_files"].as_array().unwrap();
    let (output, _) = b.unzip(ids[1].as_u64().unwrap());
    let text = |name: &str| String::from_utf8_lossy(&output[name]).into_owned();
    assert_eq!(text("out/files/key.pem"), "[hidden]\n");
    assert_eq!(text("out/files/report.txt"), "the key:\n[hidden]\n");
    for (name, content) in &output {
        assert_no_key_line(name, &String::from_utf8_lossy(content));
    }
}

#[test]
fn with_a_shared_store_berth_never_makes_a_key_and_says_how_to_install_it() {
    let b = Berth::new();
    // Only the URL matters here: a store shared by several hosts (nothing listens there).
    let shared = ["--storage", "postgres://berth@127.0.0.1:9/project"];
    let mut args = shared.to_vec();
    args.extend(["--component", "acme.test"]);
    let r = encrypt(&b, &args, r##"{"#token": "t0ps3cret"}"##);
    assert_eq!(r.status, 3, "{}", r.stderr);
    let key_file = b.home().join("secrets/keys.json");
    assert!(!key_file.exists(), "a key was made");
    assert!(
        r.stderr.contains(&format!(
            "the master key file {} is missing, and this host uses a shared store",
            key_file.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("berth encrypt --rotate-key"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("t0ps3cret"));
    // Made on purpose once (then copied to every host), it is used.
    let mut args = shared.to_vec();
    args.push("--rotate-key");
    let r = encrypt(&b, &args, "");
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("copy this key file to every host"),
        "{}",
        r.stderr
    );
    let mut args = shared.to_vec();
    args.extend(["--component", "acme.test"]);
    let r = encrypt(&b, &args, r##"{"#token": "t0ps3cret"}"##);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stdout.contains("KBC::ProjectSecure::"), "{}", r.stdout);
}
