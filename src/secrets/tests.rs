use serde_json::json;

use super::*;
use crate::contract::ErrorClass;

const IDS: Ids<'static> = Ids {
    component: "acme.test",
    project: "7",
    config: Some("42"),
};

fn ring() -> (tempfile::TempDir, std::path::PathBuf, Keyring) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let ring = Keyring::load_or_create(&path).unwrap();
    (dir, path, ring)
}

#[test]
fn a_value_round_trips_and_carries_its_scope_prefix() {
    let (_d, _p, ring) = ring();
    for scope in Scope::ALL {
        let c = encrypt("s3cret", scope, &IDS, &ring, "#p").unwrap();
        assert!(c.starts_with(scope.prefix()), "{c}");
        assert!(!c.contains("s3cret"));
        assert_eq!(decrypt(&c, &IDS, &ring, "#p").unwrap(), "s3cret");
    }
    let a = encrypt("same", Scope::Project, &IDS, &ring, "#p").unwrap();
    let b = encrypt("same", Scope::Project, &IDS, &ring, "#p").unwrap();
    assert_ne!(a, b, "a fresh nonce each time");
}

#[test]
fn a_ciphertext_moved_out_of_its_scope_does_not_decrypt() {
    let (_d, _p, ring) = ring();
    let other_component = Ids {
        component: "acme.other",
        ..IDS
    };
    let other_project = Ids {
        project: "8",
        ..IDS
    };
    let other_config = Ids {
        config: Some("43"),
        ..IDS
    };
    let cases = [
        (Scope::Component, other_component, false),
        (Scope::Component, other_project, true),
        (Scope::Project, other_project, false),
        (Scope::Project, other_config, true),
        (Scope::Config, other_config, false),
        (Scope::ProjectWide, other_component, true),
        (Scope::ProjectWide, other_project, false),
    ];
    for (scope, ids, readable) in cases {
        let c = encrypt("s3cret", scope, &IDS, &ring, "#p").unwrap();
        let got = decrypt(&c, &ids, &ring, "parameters.#p");
        match got {
            Ok(plain) => assert!(readable, "{scope:?} read in {ids:?}: {plain}"),
            Err(e) => {
                assert!(!readable, "{scope:?} refused in {ids:?}: {e}");
                assert!(matches!(e, SecretsError::Undecryptable { .. }));
                assert!(e.to_string().contains("parameters.#p"), "{e}");
                assert_eq!(e.class(), ErrorClass::User);
            }
        }
    }
}

#[test]
fn a_prefix_swapped_or_a_byte_flipped_does_not_authenticate() {
    let (_d, _p, ring) = ring();
    let c = encrypt("s3cret", Scope::Component, &IDS, &ring, "#p").unwrap();
    let swapped = c.replace(Scope::Component.prefix(), Scope::ProjectWide.prefix());
    assert!(matches!(
        decrypt(&swapped, &IDS, &ring, "#p"),
        Err(SecretsError::Undecryptable { .. })
    ));
    let body = c.strip_prefix(Scope::Component.prefix()).unwrap();
    let mut bytes = STANDARD.decode(body).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let flipped = format!("{}{}", Scope::Component.prefix(), STANDARD.encode(bytes));
    assert!(matches!(
        decrypt(&flipped, &IDS, &ring, "#p"),
        Err(SecretsError::Undecryptable { .. })
    ));
    let junk = format!("{}not base64!", Scope::Project.prefix());
    assert!(matches!(
        decrypt(&junk, &IDS, &ring, "#p"),
        Err(SecretsError::Malformed { .. })
    ));
}

#[test]
fn config_scope_needs_a_config_id() {
    let (_d, _p, ring) = ring();
    let inline = Ids {
        config: None,
        ..IDS
    };
    let e = encrypt("x", Scope::Config, &inline, &ring, "#p").unwrap_err();
    assert!(matches!(e, SecretsError::NoConfig { .. }));
}

#[test]
fn old_ciphertexts_still_decrypt_after_rotation_and_a_lost_key_is_named() {
    let (d, path, ring) = ring();
    let old = encrypt("before", Scope::Project, &IDS, &ring, "#p").unwrap();
    Keyring::rotate(&path).unwrap();
    let rotated = Keyring::load(&path).unwrap();
    let new = encrypt("after", Scope::Project, &IDS, &rotated, "#p").unwrap();
    assert_eq!(decrypt(&old, &IDS, &rotated, "#p").unwrap(), "before");
    assert_eq!(decrypt(&new, &IDS, &rotated, "#p").unwrap(), "after");
    let other = Keyring::load_or_create(&d.path().join("other.json")).unwrap();
    let e = decrypt(&new, &IDS, &other, "#p").unwrap_err();
    assert!(
        matches!(e, SecretsError::UnknownKey { key_id: 2, .. }),
        "{e}"
    );
}

#[test]
fn trees_encrypt_only_hash_keys_and_never_twice() {
    let (_d, _p, ring) = ring();
    let mut tree = json!({
        "parameters": {
            "user": "me", "#password": "pw1",
            "nested": [{"#token": "tk"}, {"#empty": ""}],
            "#number": 5,
            "#done": "KBC::Secure::elsewhere"
        }
    });
    let n = encrypt_tree(&mut tree, Scope::Project, &IDS, &ring).unwrap();
    assert_eq!(n, 2);
    let p = &tree["parameters"];
    assert_eq!(p["user"], "me");
    assert_eq!(p["#number"], 5);
    assert_eq!(p["#done"], "KBC::Secure::elsewhere");
    assert_eq!(p["nested"][1]["#empty"], "");
    let pw = p["#password"].as_str().unwrap().to_owned();
    assert!(pw.starts_with("KBC::ProjectSecure::"));
    assert!(plain_secrets(&json!({"a": {"#b": pw}, "#c": "x"})) == ["x"]);
    assert!(has_ciphertexts(&json!({"a": {"#b": pw}})));
    assert!(!has_ciphertexts(&json!({"a": {"#b": "plain"}})));
    let before = tree.clone();
    assert_eq!(
        encrypt_tree(&mut tree, Scope::Config, &IDS, &ring).unwrap(),
        0
    );
    assert_eq!(tree, before, "encrypting again changes nothing");
}

#[test]
fn trees_decrypt_in_place_listing_secrets_and_plain_values() {
    let (_d, _p, ring) = ring();
    let mut tree = json!({"parameters": {"#a": "alpha", "list": [{"#b": "beta"}]}});
    encrypt_tree(&mut tree, Scope::Component, &IDS, &ring).unwrap();
    tree["parameters"]["#plain"] = json!("gamma");
    let found = decrypt_tree(&mut tree, "config", &IDS, &ring).unwrap();
    assert_eq!(
        tree,
        json!({"parameters": {"#a": "alpha", "list": [{"#b": "beta"}], "#plain": "gamma"}})
    );
    let mut secrets = found.secrets.clone();
    secrets.sort();
    assert_eq!(secrets, ["alpha", "beta", "gamma"]);
    assert_eq!(found.plain, ["config.parameters.#plain"]);
}

#[test]
fn a_decrypt_error_names_the_path_and_never_the_value() {
    let (_d, _p, ring) = ring();
    let mut tree = json!({"parameters": {"#a": "alpha-secret"}});
    encrypt_tree(&mut tree, Scope::Project, &IDS, &ring).unwrap();
    let c = tree["parameters"]["#a"].as_str().unwrap().to_owned();
    let other = Ids {
        project: "9",
        ..IDS
    };
    let e = decrypt_tree(&mut tree, "", &other, &ring).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("parameters.#a"), "{text}");
    assert!(!text.contains("alpha-secret"), "{text}");
    assert!(!text.contains(&c[c.len() - 10..]), "{text}");
}

#[test]
fn a_component_secret_copied_into_the_configuration_is_refused() {
    let secrets = vec!["component-key".to_owned()];
    let ok = json!({"parameters": {"#own": "mine", "plain": "component-key"}});
    refuse_copied(&ok, &secrets, "").unwrap();
    let bad = json!({"parameters": {"deep": [{"#stolen": "component-key"}]}});
    let e = refuse_copied(&bad, &secrets, "").unwrap_err();
    assert_eq!(
        e.to_string(),
        "component secrets cannot be used in configurations (used in \"parameters.deep[0].#stolen\")"
    );
    let e = refuse_copied(&bad, &secrets, "processors.after[1].").unwrap_err();
    assert_eq!(
        e.to_string(),
        "component secrets cannot be used in configurations (used in \"processors.after[1].parameters.deep[0].#stolen\")"
    );
    assert_eq!(e.class(), ErrorClass::User);
}

#[test]
fn scopes_parse_from_their_names() {
    assert_eq!("project-wide".parse::<Scope>().unwrap(), Scope::ProjectWide);
    assert_eq!("config".parse::<Scope>().unwrap(), Scope::Config);
    assert!("branch".parse::<Scope>().is_err());
    assert_eq!(Scope::default(), Scope::Project);
}

#[test]
fn ciphertexts_of_keboolas_stacks_are_named_never_wrapped_again() {
    let (_d, _p, ring) = ring();
    // What the original's wrappers make on Azure, Google Cloud and AWS (PHP's gzcompress
    // output, base64: `eJ…`), its generic and branch-type scopes, and the legacy ones.
    let azure = "KBC::ProjectSecureKV::eJwBXQGi/mE6Mjp7aTowO3M6";
    let google = "KBC::ConfigSecureGKMS::eJwBXQGi/mE6Mjp7aTowO3M6";
    let mut zlib = vec![0x78, 0x9c];
    zlib.extend_from_slice(&[0x4d; 120]);
    let aws = format!("KBC::ProjectSecure::{}", STANDARD.encode(&zlib));
    let cases = [
        (azure, "Azure Key Vault"),
        (google, "Google Cloud KMS"),
        ("KBC::SecureKV::eJx", "Azure Key Vault"),
        ("KBC::BranchTypeSecureGKMS::eJx", "Google Cloud KMS"),
        ("KBC::ProjectWideBranchTypeSecure::eJx", "AWS KMS"),
        ("KBC::ComponentProjectEncrypted==abc", "legacy stack key"),
        (aws.as_str(), "AWS KMS"),
    ];
    for (value, service) in cases {
        let mut tree = json!({"parameters": {"#db": {"#password": value}}});
        assert!(is_encrypted(value), "{value}");
        assert_eq!(
            encrypt_tree(&mut tree, Scope::Project, &IDS, &ring).unwrap(),
            0
        );
        assert_eq!(tree["parameters"]["#db"]["#password"], value);
        let e = decrypt_tree(&mut tree, "", &IDS, &ring).unwrap_err();
        assert_eq!(e.class(), ErrorClass::User);
        assert_eq!(
            e.to_string(),
            format!(
                "the value of parameters.#db.#password was encrypted on a Keboola stack (with \
                 its {service}) and cannot be decrypted here: put the plain value there and \
                 encrypt it with `berth encrypt`"
            )
        );
    }
    // Lookalikes are plain values: encrypted like any other.
    for plain in [
        "KBC::ProjectSecureXY::a",
        "KBC::Other::a",
        "KBC::ProjectSecureKV",
    ] {
        assert!(!is_encrypted(plain), "{plain}");
    }
}
