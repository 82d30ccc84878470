//! Proxies. berth's own registry requests go through `https_proxy` / `http_proxy` as
//! curl's do, except to a loopback registry, which is always reached directly; and
//! `--env-proxy` hands those variables to a `bridge` component. The only "proxy" is a
//! listener of the test's on the host's loopback that records the request line and answers
//! 502: nothing beyond this host is ever contacted (the proxy would resolve the name).

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

/// A proxy that records the first line of each request and answers 502.
struct Recorder {
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

fn recorder() -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lines);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]);
            seen.lock()
                .unwrap()
                .push(text.lines().next().unwrap_or_default().to_owned());
            let _ = conn.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    Recorder { url, lines }
}

/// `b`'s command with every proxy variable set to `proxy` and no `no_proxy`.
fn proxied(b: &Berth, proxy: &str) -> Command {
    let mut c = b.cmd();
    for var in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
        c.env_remove(var);
    }
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        c.env(var, proxy);
    }
    c.env("XDG_RUNTIME_DIR", b.home().join("xdg-run"));
    c
}

#[test]
fn a_registry_elsewhere_is_asked_through_the_proxy() {
    require_env!();
    let proxy = recorder();
    let b = Berth::new();
    let out = proxied(&b, &proxy.url)
        .args(["pull", "registry.example.invalid/acme/hello:1.0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The proxy's 502 makes the registry unreachable: the environment's failure.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("registry.example.invalid"), "{stderr}");
    let lines = proxy.lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("CONNECT registry.example.invalid:443 ")),
        "{lines:?}: {stderr}"
    );
}

#[test]
fn a_loopback_registry_is_reached_directly_whatever_the_proxy_variables_say() {
    require_env!();
    let img = push(
        &ImageSpec::script("true"),
        &unique_repo("proxy-direct"),
        "1.0",
    );
    let proxy = recorder();
    let b = Berth::new();
    let out = proxied(&b, &proxy.url)
        .args(["pull", &img.reference])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(proxy.lines.lock().unwrap().is_empty());
}

#[test]
fn env_proxy_hands_the_variables_to_a_bridge_component_only() {
    require_env!();
    let img = push(
        &ImageSpec::script("echo \"SEEN ${https_proxy:-unset} ${NO_PROXY:-unset}\" >&2"),
        &unique_repo("proxy-env"),
        "1.0",
    );
    let b = Berth::new();
    let run = |network: &str, flag: bool| {
        let path = b.write_job(&job(&img.reference, json!({"network": network}), json!({})));
        let mut c = b.cmd();
        c.env("https_proxy", "http://proxy.example:3128")
            .env("NO_PROXY", ".internal");
        c.arg("run");
        if flag {
            c.arg("--env-proxy");
        }
        let out = c.arg(&path).output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{all}");
        all
    };
    let seen = run("bridge", true);
    assert!(
        seen.contains("SEEN http://proxy.example:3128 .internal"),
        "{seen}"
    );
    for (network, flag) in [("bridge", false), ("none", true)] {
        let seen = run(network, flag);
        assert!(
            seen.contains("SEEN unset unset"),
            "{network} {flag}: {seen}"
        );
    }
}

#[test]
fn env_proxy_hands_the_variables_to_a_bridge_action_too() {
    require_env!();
    let img = push(
        &ImageSpec::script("printf '{\"seen\": \"%s\"}\\n' \"${https_proxy:-unset}\""),
        &unique_repo("proxy-action"),
        "1.0",
    );
    let b = Berth::new();
    let component = json!({"network": "bridge", "synchronous_actions": ["probe"]});
    let path = b.write_job(&job(&img.reference, component, json!({})));
    let answer = |flag: bool| {
        let mut c = b.cmd();
        c.env("https_proxy", "http://proxy.example:3128")
            .args(["action", "probe"]);
        if flag {
            c.arg("--env-proxy");
        }
        let out = c.arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flag}: {stderr}");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        answer["seen"].clone()
    };
    assert_eq!(answer(true), json!("http://proxy.example:3128"));
    assert_eq!(answer(false), json!("unset"));
}
