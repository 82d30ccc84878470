//! `network`: what a container reaches, what reaches it, and that the pasta connecting a
//! `bridge` container never outlives it. Real containers from the test registry; the only
//! targets of any traffic are servers these tests start on the host's loopback or in a
//! network namespace they create (the "outside" a bridge reaches).
//!
//! The last test needs neither root nor a registry: a host without pasta, with the fakes.

#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn script_image(name: &str, script: &str) -> BuiltImage {
    push(&ImageSpec::script(script), &unique_repo(name), "1.0")
}

/// The host's IPv4 default gateway: what pasta gives the container as its own.
fn host_gateway() -> Ipv4Addr {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    routes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[1] == "00000000")
        .map(|f| Ipv4Addr::from(u32::from_str_radix(f[2], 16).unwrap().to_ne_bytes()))
        .expect("bridge networking needs a host with an IPv4 default route")
}

/// An HTTP server answering every request with `body`; it records who connected.
struct Server {
    port: u16,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

/// A server on the host's loopback.
fn serve(body: &str) -> Server {
    serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), body)
}

fn serve_on(listener: TcpListener, body: &str) -> Server {
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&peers);
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            seen.lock().unwrap().extend(conn.peer_addr().ok());
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let _ = conn.write_all(response.as_bytes());
        }
    });
    Server { port, peers }
}

/// A network namespace this test creates, joined to the host by a veth pair: the world
/// outside that a bridge container reaches through the host. Removed when dropped (with
/// the veth pair and the host's routes through it).
///
/// ```text
/// host  10.213.N.1/24, fd13:N::1/64  ──veth──  10.213.N.2/24, fd13:N::2/64  namespace
///       routes 10.214.N.0/24 and 169.254.169.254 to the namespace, where its `lo` has
///       10.214.N.1 (beyond the host's subnets: "the internet") and 169.254.169.254
///       (a metadata service)
/// ```
struct Outside {
    name: String,
    /// On the subnet attached to the host: its LAN.
    lan: Ipv4Addr,
    lan6: Ipv6Addr,
    /// The host's own address on that subnet.
    host: Ipv4Addr,
    host6: Ipv6Addr,
    /// Routed through the host, on no subnet of its own: the internet.
    internet: Ipv4Addr,
    /// The cloud metadata address, routed to the namespace (never to the real network).
    metadata: Ipv4Addr,
}

fn ip(args: &str) {
    let ok = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip {args}");
}

impl Outside {
    /// `metadata`: also route 169.254.169.254 to the namespace (one test at a time may).
    fn create(metadata: bool) -> Outside {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let n = u8::try_from(std::process::id() % 120).unwrap() * 2
            + 1
            + NEXT.fetch_add(1, Ordering::Relaxed) % 2;
        let name = format!("berth-out-{n}");
        let (host, ns) = (format!("bo{n}h"), format!("bo{n}n"));
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&format!("netns add {name}"));
        ip(&format!(
            "link add {host} type veth peer name {ns} netns {name}"
        ));
        ip(&format!("addr add 10.213.{n}.1/24 dev {host}"));
        ip(&format!("-6 addr add fd13:{n}::1/64 dev {host} nodad"));
        ip(&format!("link set {host} up"));
        ip(&format!("-n {name} addr add 10.213.{n}.2/24 dev {ns}"));
        ip(&format!(
            "-n {name} -6 addr add fd13:{n}::2/64 dev {ns} nodad"
        ));
        ip(&format!("-n {name} link set {ns} up"));
        ip(&format!("-n {name} link set lo up"));
        ip(&format!("-n {name} addr add 10.214.{n}.1/32 dev lo"));
        ip(&format!("-n {name} route add default via 10.213.{n}.1"));
        ip(&format!(
            "route add 10.214.{n}.0/24 via 10.213.{n}.2 dev {host}"
        ));
        if metadata {
            ip(&format!("-n {name} addr add 169.254.169.254/32 dev lo"));
            ip(&format!(
                "route add 169.254.169.254/32 via 10.213.{n}.2 dev {host}"
            ));
        }
        Outside {
            name,
            lan: Ipv4Addr::new(10, 213, n, 2),
            lan6: format!("fd13:{n}::2").parse().unwrap(),
            host: Ipv4Addr::new(10, 213, n, 1),
            host6: format!("fd13:{n}::1").parse().unwrap(),
            internet: Ipv4Addr::new(10, 214, n, 1),
            metadata: Ipv4Addr::new(169, 254, 169, 254),
        }
    }

    /// A server inside the namespace: a thread joins it to bind, then the listener stays.
    fn serve(&self, addr: IpAddr, body: &str) -> Server {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        let listener = std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind((addr, 0)).unwrap()
        })
        .join()
        .unwrap();
        serve_on(listener, body)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair, and the routes through it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Lists the interfaces and the default route, then fetches from `gw:port`.
fn reach_script(gw: Ipv4Addr, port: u16) -> String {
    format!(
        "echo \"IFACES $(ls /sys/class/net | tr '\\n' ' ')\"\n\
         echo \"ROUTE $(ip route | grep '^default')\"\n\
         if timeout 5 wget -q -O /tmp/got http://{gw}:{port}/ 2>/tmp/err; then echo \"GOT $(cat /tmp/got)\"; \
         else echo \"FAILED $(cat /tmp/err)\"; fi"
    )
}

/// The value of the first line of `out` that starts with `key `.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
}

/// pasta processes connecting containers of this berth's home, with their parent pids.
fn pastas_of(b: &Berth) -> Vec<(i32, i32)> {
    let home = b.home().to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_pasta = args.first().is_some_and(|a| a.contains("pasta"));
        if is_pasta && args.iter().any(|a| a.starts_with(&home)) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // After the `(comm)` field: state, then the parent's pid.
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            found.push((pid, ppid));
        }
    }
    found
}

/// Waits up to `limit` for this home's pasta processes to be gone.
fn pastas_gone(b: &Berth, limit: Duration) -> Vec<(i32, i32)> {
    let until = Instant::now() + limit;
    loop {
        let left = pastas_of(b);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bridge_reaches_out_but_not_the_hosts_loopback_and_none_reaches_nothing() {
    require_env!();
    let outside = Outside::create(false);
    let token = format!("payload-{:x}", std::process::id());
    let far = outside.serve(outside.internet.into(), &token);
    let near = serve("the host's loopback");
    let gw = host_gateway();
    let script = format!(
        "{}\n{}",
        reach_script(outside.internet, far.port),
        reach_script(gw, near.port)
            .replace("GOT", "LOCAL")
            .replace("FAILED", "NOLOCAL")
    );
    let img = script_image("reach", &script);
    let b = Berth::new();

    let r = b.run_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(line(&r.stderr, "GOT"), token, "{}", r.stderr);
    let ifaces: Vec<&str> = line(&r.stderr, "IFACES").split_whitespace().collect();
    assert!(ifaces.contains(&"lo"), "{ifaces:?}");
    assert_eq!(ifaces.len(), 2, "lo and pasta's interface: {ifaces:?}");
    assert!(
        line(&r.stderr, "ROUTE").starts_with(&format!("default via {gw} ")),
        "{}",
        r.stderr
    );
    // The gateway address is not the host's loopback: nothing bound there is reachable.
    assert!(!r.stderr.contains("LOCAL the host"), "{}", r.stderr);
    assert!(
        near.peers.lock().unwrap().is_empty(),
        "the host's loopback was reached"
    );
    let peers = far.peers.lock().unwrap().clone();
    assert!(!peers.is_empty(), "the outside server was not reached");
    let bridged = job_id(&r.json());

    // none: the same attempt finds no route, and only lo exists.
    let r = b.run_job(&job(&img.reference, json!({"network": "none"}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let failed = line(&r.stderr, "FAILED");
    assert!(failed.contains("unreachable"), "{}", r.stderr);
    assert_eq!(line(&r.stderr, "IFACES").trim(), "lo");
    assert_eq!(far.peers.lock().unwrap().len(), peers.len());
    assert!(pastas_of(&b).is_empty(), "{:?}", pastas_of(&b));
    b.assert_clean(&[&bridged, &job_id(&r.json())]);
}

/// A server of the test's at `addr` (in the host's namespace, or the outside's), and the
/// line the component prints about reaching it.
struct Target {
    name: &'static str,
    url: String,
    server: Server,
    body: String,
}

fn target(name: &'static str, addr: IpAddr, outside: Option<&Outside>) -> Target {
    let body = format!("{name}-{:x}", std::process::id());
    let server = match outside {
        Some(o) => o.serve(addr, &body),
        None => serve_on(TcpListener::bind((addr, 0)).unwrap(), &body),
    };
    let host = match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    Target {
        name,
        url: format!("http://{host}:{}/", server.port),
        server,
        body,
    }
}

/// Fetches from each target, then lists the fence's rules and tries to delete one.
fn fence_script(targets: &[Target]) -> String {
    let script: String = targets
        .iter()
        .map(|t| {
            format!(
                "if timeout 10 wget -q -O /tmp/got {} 2>/tmp/err; then echo \"{} GOT $(cat /tmp/got)\"; \
                 else echo \"{} FAILED $(cat /tmp/err)\"; fi\n",
                t.url, t.name, t.name
            )
        })
        .collect();
    // The rules themselves, as the container sees them (it cannot change them).
    format!(
        "{script}echo \"RULES $(ip rule | grep -c prohibit)\"\n\
         echo \"RULES6 $(ip -6 rule | grep -c prohibit)\"\n\
         echo \"DNS $(ip rule | grep -c 'to 169.254.1.1 lookup main')\"\n\
         ip rule del prio 110 2>/dev/null; echo \"DEL $?\"\n"
    )
}

#[test]
fn bridge_is_fenced_off_the_host_and_its_networks_unless_the_operator_allows() {
    require_env!();
    let outside = Outside::create(true);
    let targets = [
        target("internet", outside.internet.into(), Some(&outside)),
        target("lan", outside.lan.into(), Some(&outside)),
        target("lan6", outside.lan6.into(), Some(&outside)),
        target("metadata", outside.metadata.into(), Some(&outside)),
        target("host", outside.host.into(), None),
        target("host6", outside.host6.into(), None),
    ];
    let img = script_image("fence", &fence_script(&targets));
    let b = Berth::new();
    let path = b.write_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));

    // By default: the internet only. Everything else is refused inside the container's
    // namespace (EACCES from a prohibit rule: no packet leaves, nothing waits).
    let r = b.run_cmd(&["run", "--json", path.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        line(&r.stderr, "internet GOT"),
        targets[0].body,
        "{}",
        r.stderr
    );
    for t in &targets[1..] {
        let failed = line(&r.stderr, &format!("{} FAILED", t.name));
        assert!(
            failed.contains("Permission denied"),
            "{}: {}",
            t.name,
            r.stderr
        );
        assert!(
            t.server.peers.lock().unwrap().is_empty(),
            "{} was reached",
            t.name
        );
    }
    // At least the host's two v4 and two v6 addresses with their subnets, link-local space
    // and AWS's v6 metadata address; the DNS forwarder let through; the container's
    // attempt to delete a rule refused.
    let rules: usize = line(&r.stderr, "RULES").parse().unwrap();
    assert!(rules >= 5, "{}", r.stderr);
    let rules6: usize = line(&r.stderr, "RULES6").parse().unwrap();
    assert!(rules6 >= 6, "{}", r.stderr);
    assert_eq!(line(&r.stderr, "DNS"), "1", "{}", r.stderr);
    assert_ne!(line(&r.stderr, "DEL"), "0", "{}", r.stderr);
    let result = r.json();
    assert!(result["cage"].get("host_access").is_none(), "{result}");
    let fenced = job_id(&result);

    // The operator's flag lifts the fence: every server answers.
    let r = b.run_cmd(&[
        "run",
        "--json",
        "--allow-host-access",
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    for t in &targets {
        assert_eq!(
            line(&r.stderr, &format!("{} GOT", t.name)),
            t.body,
            "{}",
            r.stderr
        );
        assert!(!t.server.peers.lock().unwrap().is_empty(), "{}", t.name);
    }
    let result = r.json();
    assert_eq!(result["cage"]["host_access"], true, "{result}");
    b.assert_clean(&[&fenced, &job_id(&result)]);
}

#[test]
fn pasta_runs_while_its_container_does_and_not_after_a_timeout() {
    require_env!();
    let img = script_image("pasta-life", "echo started\nsleep 3201");
    let b = Berth::new();
    let path = b.write_job(&job(
        &img.reference,
        json!({"network": "bridge", "process_timeout": 3}),
        json!({}),
    ));
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    let berth = i32::try_from(child.id()).unwrap();
    let running = pastas_of(&b);
    assert_eq!(running.len(), 1, "one pasta per container: {running:?}");
    assert_eq!(running[0].1, berth, "pasta is berth's own child");

    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the timeout is the component's fault"
    );
    let left = pastas_of(&b);
    assert!(
        left.is_empty(),
        "pasta outlived its timed-out job: {left:?}"
    );
    // Reaped, not a zombie: it is no longer in /proc at all.
    assert!(!Path::new(&format!("/proc/{}", running[0].0)).exists());
    b.assert_clean(&[]);
}

#[test]
fn pasta_dies_with_an_interrupted_or_killed_berth() {
    require_env!();
    let img = script_image("pasta-kill", "echo started\nsleep 3202");
    let b = Berth::new();
    let path = b.write_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));

    // SIGTERM: berth stops the container and pasta, and cleans up.
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    assert_eq!(pastas_of(&b).len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(pastas_of(&b).is_empty(), "{:?}", pastas_of(&b));
    b.assert_clean(&[]);

    // SIGKILL: nothing of berth runs any more, yet pasta goes too (its parent-death
    // signal); the container itself is left for gc, as always.
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    assert_eq!(pastas_of(&b).len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let left = pastas_gone(&b, Duration::from_secs(5));
    assert!(left.is_empty(), "pasta outlived a killed berth: {left:?}");
    let job = b.running_job_id();
    let gc = b.run_cmd(&["gc"]);
    assert_eq!(gc.status, 0, "{}", gc.stderr);
    b.assert_clean(&[&job]);
}

#[test]
fn nothing_on_the_host_leads_into_a_bridge_container() {
    require_env!();
    // A port free on the host, for the container to listen on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let img = script_image(
        "inbound",
        &format!(
            "(while [ ! -s /tmp/in ]; do nc -l -p {port} > /tmp/in 2>>/tmp/err; done &)\n\
             sleep 0.3\necho listening\nsleep 5\n\
             i=0; until [ -s /tmp/in ] || [ $i -gt 50 ]; do\n\
               echo inside | nc 127.0.0.1 {port} 2>>/tmp/err; i=$((i+1)); sleep 0.1\n\
             done\n\
             echo \"RECEIVED $(cat /tmp/in)\"\n\
             echo \"nc said: $(head -c 300 /tmp/err 2>/dev/null | tr '\\n' ' ')\""
        ),
    );
    let b = Berth::new();
    let path = b.write_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));
    let (mut child, mut lines) = b.spawn_run(&path);
    assert_eq!(lines.next().unwrap().unwrap(), "listening");

    // Left to itself pasta would forward, after its next scan (once a second), every port
    // bound in the namespace: keep trying for longer than that.
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let e = TcpStream::connect_timeout(&target, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // And pasta listens on no port of the host at all.
    let pasta = pastas_of(&b);
    assert_eq!(pasta.len(), 1, "{pasta:?}");
    let ss = Command::new("ss")
        .args(["-H", "-l", "-t", "-u", "-n", "-p"])
        .output()
        .unwrap();
    let listening = String::from_utf8_lossy(&ss.stdout);
    let tag = format!("pid={},", pasta[0].0);
    assert!(
        !listening.lines().any(|l| l.contains(&tag)),
        "pasta listens on the host:\n{listening}"
    );

    // The listener inside was real: the container reached it itself. (The listener and
    // the client both retry: on a loaded host busybox's nc sometimes lost the one try.)
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l == "RECEIVED inside"), "{rest:?}");
    assert!(pastas_of(&b).is_empty());
    b.assert_clean(&[]);
}

#[test]
fn a_host_without_pasta_fails_the_bridge_job_as_berths_failure() {
    require_env!();
    let img = script_image("no-pasta", "echo should-not-run");
    let b = Berth::new();
    let empty = tempfile::tempdir().unwrap();
    let path = b.write_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));
    let started = Instant::now();
    let out = b
        .cmd()
        .env("PATH", empty.path())
        .args(["run", "--json", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["error_class"], "internal");
    let message = result["message"].as_str().unwrap();
    assert!(message.contains("apt-get install passt"), "{message}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("should-not-run"), "{stderr}");
    b.assert_clean(&[&job_id(&result)]);
}

/// Runs a `bridge` job with `pasta` in `PATH` being `script`; returns the result document.
fn run_with_fake_pasta(b: &Berth, script: &str) -> (serde_json::Value, Duration) {
    let img = script_image("fake-pasta", "echo should-not-run");
    let bin = tempfile::tempdir().unwrap();
    let pasta = bin.path().join("pasta");
    std::fs::write(&pasta, format!("#!/bin/sh\n{script}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pasta, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = b.write_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));
    let started = Instant::now();
    let out = b
        .cmd()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
        .args(["run", "--json", path.to_str().unwrap()])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("should-not-run"), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), took)
}

#[test]
fn a_pasta_that_gives_up_fails_the_job_with_its_words() {
    require_env!();
    let b = Berth::new();
    let (result, _) = run_with_fake_pasta(
        &b,
        "echo 'Failed to send 51 bytes to syslog' >&2\n\
         echo 'External interface not usable' >&2\nexit 1",
    );
    assert_eq!(result["error_class"], "internal");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("pasta could not connect")
            && message.ends_with("pasta exited (exit status: 1): External interface not usable"),
        "{message}"
    );
    b.assert_clean(&[&job_id(&result)]);
}

#[test]
fn a_pasta_that_hangs_is_killed_and_the_job_fails() {
    require_env!();
    let b = Berth::new();
    // Never ready, and deaf to SIGTERM.
    let (result, took) = run_with_fake_pasta(&b, "trap '' TERM\nexec sleep 3471");
    assert_eq!(result["error_class"], "internal");
    let message = result["message"].as_str().unwrap();
    assert!(message.contains("did not connect"), "{message}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let ps = Command::new("pgrep")
        .args(["-f", "sleep 3471"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the hung pasta survived");
    b.assert_clean(&[&job_id(&result)]);
}

/// The job asks the runtime for the network its mode means; a runtime that cannot
/// connect it (no pasta) fails the job as berth's own failure, leaving nothing behind.
/// Fakes only: no root, no registry.
mod fakes {
    use berth::contract::result::Status;
    use berth::contract::{ErrorClass, JobFile};
    use berth::host::Network;
    use berth::host::fake::FakeHost;

    use berth::job::{RunOptions, Services, Settings};
    use berth::runtime::fake::{FakeRuntime, RuntimeCall, Step};
    use serde_json::json;

    /// A one-layer image in a fresh cache, pinned (no registry is asked).
    fn settings_with_image(dir: &std::path::Path) -> (Settings, String) {
        super::offline_settings(dir)
    }

    fn job(image: &str, network: &str) -> JobFile {
        let job = json!({
            "component": {"id": "acme.fake", "image": image, "network": network},
            "configuration": {"parameters": {}}
        });
        JobFile::parse(&serde_json::to_vec(&job).unwrap()).unwrap()
    }

    fn run(
        settings: &Settings,
        runtime: &FakeRuntime,
        job: &JobFile,
    ) -> berth::contract::JobResult {
        let host = FakeHost::default();
        let svc = Services {
            host: &host,
            runtime,
        };
        berth::job::run(svc, settings, job, &RunOptions::default(), &mut |_| {})
    }

    /// The networks the job asked the runtime for, in order.
    fn asked_networks(runtime: &FakeRuntime) -> Vec<Network> {
        runtime
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                RuntimeCall::Run { network, .. } => Some(network),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_mode_asks_for_its_network() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, image) = settings_with_image(dir.path());
        for (mode, network) in [
            ("none", Network::Loopback),
            ("host", Network::Host),
            ("bridge", Network::Outbound),
        ] {
            let runtime = FakeRuntime::exiting(0);
            let result = run(&settings, &runtime, &job(&image, mode));
            assert_eq!(result.status, Status::Success, "{mode}: {}", result.message);
            assert_eq!(asked_networks(&runtime), [network], "{mode}");
        }
    }

    #[test]
    fn the_operators_flag_asks_for_a_bridge_without_the_fence() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, image) = settings_with_image(dir.path());
        let host = FakeHost::default();
        let options = RunOptions {
            allow_host_access: true,
            ..RunOptions::default()
        };
        for (mode, network) in [
            ("bridge", Network::OutboundToHost),
            ("none", Network::Loopback),
        ] {
            let runtime = FakeRuntime::exiting(0);
            let svc = Services {
                host: &host,
                runtime: &runtime,
            };
            let result = berth::job::run(svc, &settings, &job(&image, mode), &options, &mut |_| {});
            assert_eq!(result.status, Status::Success, "{}", result.message);
            assert_eq!(asked_networks(&runtime), [network], "{mode}");
            // The result says so only where it changed something.
            let cage = serde_json::to_value(result.cage).unwrap();
            assert_eq!(
                cage.get("host_access").is_some(),
                mode == "bridge",
                "{cage}"
            );
        }
    }

    /// The environment of the container a job in `mode` gets, run with `proxy_env`.
    fn container_env(mode: &str, proxy_env: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let (settings, image) = settings_with_image(dir.path());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = std::sync::Arc::clone(&seen);
        // The job's one bundle, while its component runs (the fake is handed /data).
        let bundles = settings.home.join("run/bundles");
        let runtime = FakeRuntime::new(move |_| {
            let bundle = std::fs::read_dir(&bundles)
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            let config = std::fs::read(bundle.path().join("config.json")).unwrap();
            let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
            let env = config["process"]["env"].as_array().unwrap().clone();
            let env = env.iter().map(|v| v.as_str().unwrap().to_owned());
            into.lock().unwrap().extend(env);
            berth::runtime::fake::outcome(0)
        });
        let host = FakeHost::default();
        let svc = Services {
            host: &host,
            runtime: &runtime,
        };
        let options = RunOptions {
            proxy_env: proxy_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..RunOptions::default()
        };
        let result = berth::job::run(svc, &settings, &job(&image, mode), &options, &mut |_| {});
        assert_eq!(result.status, Status::Success, "{}", result.message);
        seen.lock().unwrap().clone()
    }

    #[test]
    fn proxy_variables_reach_only_a_bridge_container_and_only_when_given() {
        let proxies = [
            ("https_proxy", "http://proxy.example:3128"),
            ("NO_PROXY", ".internal"),
        ];
        let env = container_env("bridge", &proxies);
        assert!(
            env.contains(&"https_proxy=http://proxy.example:3128".to_owned()),
            "{env:?}"
        );
        assert!(env.contains(&"NO_PROXY=.internal".to_owned()), "{env:?}");
        for (mode, given) in [
            ("none", &proxies[..]),
            ("host", &proxies[..]),
            ("bridge", &[]),
        ] {
            let env = container_env(mode, given);
            assert!(
                !env.iter().any(|e| e.to_lowercase().contains("proxy")),
                "{mode}: {env:?}"
            );
        }
    }

    fn options(allow_host_access: bool) -> RunOptions {
        RunOptions {
            allow_host_access,
            ..RunOptions::default()
        }
    }

    #[test]
    fn an_action_asks_for_the_fence_unless_the_operator_lifts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, image) = settings_with_image(dir.path());
        let job = json!({
            "component": {"id": "acme.fake", "image": image, "network": "bridge",
                          "synchronous_actions": ["probe"]},
            "configuration": {"parameters": {}}
        });
        let job = JobFile::parse(&serde_json::to_vec(&job).unwrap()).unwrap();
        let host = FakeHost::default();
        for (allow, network) in [(false, Network::Outbound), (true, Network::OutboundToHost)] {
            let runtime = FakeRuntime::new(|_| {
                let mut o = berth::runtime::fake::outcome(0);
                o.stdout_tail = "{\"ok\": true}".to_owned();
                o
            });
            let svc = Services {
                host: &host,
                runtime: &runtime,
            };
            let answer = berth::job::action(svc, &settings, &job, "probe", options(allow)).unwrap();
            assert_eq!(answer, json!({"ok": true}));
            assert_eq!(asked_networks(&runtime), [network], "{allow}");
        }
    }

    #[test]
    fn no_pasta_is_berths_failure_naming_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, image) = settings_with_image(dir.path());
        let runtime = FakeRuntime::exiting(0).failing_at(Step::Network);
        let result = run(&settings, &runtime, &job(&image, "bridge"));
        assert_eq!(result.status, Status::Error);
        assert_eq!(result.error_class, Some(ErrorClass::Internal));
        assert!(
            result.message.contains("apt-get install passt"),
            "{}",
            result.message
        );
        assert!(runtime.live().is_empty());
        let jobs = std::fs::read_dir(settings.home.join("jobs"))
            .unwrap()
            .count();
        assert_eq!(jobs, 0, "the job directory is removed");
    }

    #[test]
    fn the_fake_host_refuses_outbound_networks_without_pasta() {
        use berth::host::Host;
        let host = FakeHost {
            pasta_missing: true,
            ..Default::default()
        };
        let scratch = std::path::Path::new("/nowhere/net");
        assert!(
            host.attach_network(7, Network::Loopback, scratch)
                .unwrap()
                .is_none()
        );
        let e = host
            .attach_network(7, Network::Outbound, scratch)
            .unwrap_err();
        assert!(
            berth::util::chain(&e).contains("apt-get install passt"),
            "{e}"
        );
        assert_eq!(host.calls().len(), 2);
    }
}

#[test]
fn a_bridge_container_resolves_through_pastas_forwarder() {
    require_env!();
    let img = script_image(
        "resolv",
        "echo \"NS $(grep nameserver /etc/resolv.conf 2>/dev/null | tr '\\n' ' ')\"\n\
         (echo x >> /etc/resolv.conf) 2>/dev/null && echo WRITABLE || echo READONLY",
    );
    let b = Berth::new();
    let r = b.run_job(&job(
        &img.reference,
        json!({"network": "bridge"}),
        json!({}),
    ));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(line(&r.stderr, "NS").trim(), "nameserver 169.254.1.1");
    assert!(r.stderr.lines().any(|l| l == "READONLY"), "{}", r.stderr);
    // none has no resolver to give: the image's own file, here none at all.
    let r = b.run_job(&job(&img.reference, json!({"network": "none"}), json!({})));
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(line(&r.stderr, "NS").trim(), "");
}
