//! `berth inspect` of an image pulled from a real registry: its digest is the registry's,
//! its layers and their sizes are those pushed, its run configuration is the config's, and
//! it says where the image came from and what accepted it.

mod common;

use common::{Berth, ImageSpec, push, registry, sha256, unique_repo};

#[test]
fn inspect_shows_what_the_store_holds_of_a_pulled_image() {
    require_env!();
    let mut spec = ImageSpec::script("echo inspected");
    spec.env.push("GREETING=hello world".into());
    spec.workdir = Some("/work".into());
    spec.user = Some("1000:1000".into());
    let img = push(&spec, &unique_repo("inspect"), "1.0");
    let b = Berth::new();
    let r = b.run_cmd(&["pull", &img.reference]);
    assert_eq!(r.status, 0, "{}", r.stderr);

    let r = b.run_cmd(&["inspect", "--json", &img.reference]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["digest"], img.digest.as_str());
    assert_eq!(v["manifest"], img.digest.as_str());
    assert_eq!(v["reference"], img.reference.as_str());
    assert_eq!(v["platform"]["os"], "linux");
    assert_eq!(v["platform"]["architecture"], "amd64");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), spec.layers.len());
    for (shown, pushed) in layers.iter().zip(&spec.layers) {
        assert_eq!(shown["digest"], format!("sha256:{}", sha256(pushed)));
        assert_eq!(shown["size"], pushed.len());
    }
    let total: usize = spec.layers.iter().map(Vec::len).sum();
    assert_eq!(v["size"], total);
    let config = &v["config"];
    assert_eq!(config["entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(config["cmd"], serde_json::json!(["/run.sh"]));
    assert_eq!(
        config["env"],
        serde_json::json!(["PATH=/bin", "GREETING=hello world"])
    );
    assert_eq!(config["workdir"], "/work");
    assert_eq!(config["user"], "1000:1000");
    let origins = v["pulled_as"].as_array().unwrap();
    assert_eq!(origins.len(), 1, "{origins:?}");
    assert_eq!(origins[0]["reference"], img.reference.as_str());
    assert_eq!(origins[0]["registry"], registry());
    // No policy in force: the record says so, and under which scope it was accepted.
    assert!(origins[0]["accepted"]["policy"].is_null(), "{origins:?}");
    assert!(
        origins[0]["accepted"]["requirements"].is_string(),
        "{origins:?}"
    );

    // By digest too, and as text for a human.
    let r = b.run_cmd(&["inspect", &img.digest[..19]]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&img.digest), "{}", r.stdout);
    assert!(r.stdout.contains("GREETING=hello world"), "{}", r.stdout);
    assert!(r.stdout.contains("linux/amd64"), "{}", r.stdout);
}

#[test]
fn inspecting_an_image_not_stored_is_a_user_error_saying_to_pull_it() {
    require_env!();
    let b = Berth::new();
    let image = format!("{}/{}:1.0", registry(), unique_repo("never-pulled"));
    let r = b.run_cmd(&["inspect", &image]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&image), "{}", r.stderr);
    assert!(r.stderr.contains("is not stored"), "{}", r.stderr);
    assert!(r.stderr.contains("berth pull"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}
