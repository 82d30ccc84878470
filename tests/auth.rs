//! Registry credentials and TLS against the real Distribution registry (Debian's
//! `docker-registry`): each test starts its own instance on a free loopback port with a CA
//! and server certificate made here by `openssl`, htpasswd (bcrypt, `htpasswd -B`)
//! authentication, and, where asked, client certificates (`http.tls.clientcas`). The CA
//! goes into a certs.d directory under berth's temporary home; /etc is never touched.
//! Images are pushed with skopeo. Also: a zstd layer from the ordinary test registry.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use common::{file, gzip, sha256, tar_of};
use serde_json::json;

const USER: &str = "berth-user";
const PASSWORD: &str = "s3cret-Pa55word";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates it signed, made with openssl.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f);
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")));
        Pki { dir }
    }

    /// Docker's guide to a self-signed registry: one certificate, for `san`, that openssl
    /// marks `CA:TRUE`, presented by the registry (`server.*`) and trusted as `ca.crt`; it
    /// also signs the client pair, which only skopeo's push needs.
    fn docker_guide(name: &str, san: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f);
        run(Command::new("openssl")
            .args([
                "req", "-newkey", "rsa:2048", "-nodes", "-x509", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .args(["-addext", &format!("subjectAltName={san}")])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")));
        fs::copy(p("ca.crt"), p("server.cert")).unwrap();
        fs::copy(p("ca.key"), p("server.key")).unwrap();
        let pki = Pki { dir };
        pki.issue("client", false);
        pki
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// A key and a certificate signed by this CA; `server` adds the 127.0.0.1 SAN.
    fn issue(&self, name: &str, server: bool) {
        let p = |f: &str| self.path(f);
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(p(&format!("{name}.key")))
            .arg("-out")
            .arg(p(&format!("{name}.csr"))));
        let ext = p(&format!("{name}.ext"));
        let usage = if server { "serverAuth" } else { "clientAuth" };
        let san = if server {
            "subjectAltName=IP:127.0.0.1\n"
        } else {
            ""
        };
        fs::write(&ext, format!("{san}extendedKeyUsage={usage}\n")).unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p(&format!("{name}.csr")))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(p(&format!("{name}.cert"))));
    }
}

/// A Distribution registry with TLS and htpasswd auth on a free loopback port.
struct AuthRegistry {
    addr: String,
    pki: Pki,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl AuthRegistry {
    fn start(client_certs: bool) -> AuthRegistry {
        let pki = Pki::new("berth-test-ca");
        pki.issue("server", true);
        pki.issue("client", false);
        AuthRegistry::start_with(pki, client_certs)
    }

    /// A registry presenting `pki`'s `server.cert`.
    fn start_with(pki: Pki, client_certs: bool) -> AuthRegistry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap();
        assert!(htpasswd.status.success(), "htpasswd (apache2-utils) failed");
        fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = serve(dir.path(), &pki, &addr, client_certs, None);
        AuthRegistry {
            addr,
            pki,
            child,
            _dir: dir,
        }
    }

    /// Starts it again on the same port and data, its blobs now redirected to `base`.
    fn redirect_blobs_to(&mut self, base: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = serve(self._dir.path(), &self.pki, &self.addr, false, Some(base));
    }

    /// A cert dir for skopeo (same layout as certs.d): CA, and the client pair.
    fn push(&self, repo: &str, layers: &[(Vec<u8>, &str)]) -> String {
        let certs = tempfile::tempdir().unwrap();
        fs::copy(self.pki.path("ca.crt"), certs.path().join("ca.crt")).unwrap();
        for f in ["client.cert", "client.key"] {
            fs::copy(self.pki.path(f), certs.path().join(f)).unwrap();
        }
        let reference = format!("{}/{repo}:1.0", self.addr);
        push_layout(
            layers,
            &reference,
            &[
                "--dest-cert-dir",
                certs.path().to_str().unwrap(),
                "--dest-creds",
                &format!("{USER}:{PASSWORD}"),
            ],
        );
        reference
    }

    /// berth's certs.d directory for this registry under `home`, with the CA (and the
    /// client certificate pair).
    fn trust(&self, home: &Path, client_pair: bool) {
        let d = home.join("certs.d").join(&self.addr);
        fs::create_dir_all(&d).unwrap();
        fs::copy(self.pki.path("ca.crt"), d.join("ca.crt")).unwrap();
        if client_pair {
            fs::copy(self.pki.path("client.cert"), d.join("client.cert")).unwrap();
            fs::copy(self.pki.path("client.key"), d.join("client.key")).unwrap();
        }
    }
}

/// `docker-registry serve` with TLS and htpasswd in `dir`; waits until it listens.
fn serve(dir: &Path, pki: &Pki, addr: &str, client_certs: bool, redirect: Option<&str>) -> Child {
    let clientcas = if client_certs {
        format!("    clientcas:\n      - {}\n", pki.path("ca.crt").display())
    } else {
        String::new()
    };
    let middleware = match redirect {
        Some(base) => format!(
            "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {base}\n"
        ),
        None => String::new(),
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n\
         http:\n  addr: {addr}\n  tls:\n    certificate: {cert}\n    key: {key}\n{clientcas}\
         auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n{middleware}",
        data = dir.join("data").display(),
        cert = pki.path("server.cert").display(),
        key = pki.path("server.key").display(),
        htpasswd = dir.join("htpasswd").display(),
    );
    let config_path = dir.join("config.yml");
    fs::write(&config_path, config).unwrap();
    let log = fs::File::create(dir.join("registry.log")).unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "the registry on {addr} did not start: {}",
        fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
    );
}

/// An OCI layout with `layers` (bytes, media type) holding one file each, pushed with skopeo.
fn push_layout(layers: &[(Vec<u8>, &str)], reference: &str, skopeo_args: &[&str]) {
    let layout = tempfile::tempdir().unwrap();
    let blobs = layout.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        fs::write(blobs.join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (bytes, media) in layers {
        let (digest, size) = put(bytes);
        descs.push(json!({"mediaType": media, "digest": digest, "size": size}));
        diff_ids.push(format!("sha256:{}", sha256(&uncompressed(bytes))));
    }
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descs,
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    fs::write(
        layout.path().join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]});
    fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests"])
        .args(skopeo_args)
        .arg(format!("oci:{}:1.0", layout.path().display()))
        .arg(format!("docker://{reference}")));
}

fn uncompressed(bytes: &[u8]) -> Vec<u8> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
        out
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(bytes).unwrap()
    } else {
        bytes.to_vec()
    }
}

fn layer(content: &[u8]) -> Vec<u8> {
    gzip(&tar_of(&[file("hello", content)]))
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A berth with its own home, cache and HOME, and none of the host's credentials.
struct Isolated {
    dir: tempfile::TempDir,
}

struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Isolated {
    fn new() -> Isolated {
        Isolated {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn user_home(&self) -> PathBuf {
        self.dir.path().join("user")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--home")
            .arg(self.home())
            .arg("--cache")
            .arg(self.dir.path().join("cache"))
            .args(["--retries", "0"])
            .env("HOME", self.user_home())
            // podman's places, kept inside the test's directory: without XDG_RUNTIME_DIR
            // berth would read /run/containers/<uid>/auth.json.
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("BERTH_SYSTEM_SIGNATURE_POLICY", common::NO_SYSTEM_POLICY)
            .env("RUST_LOG", "berth=debug");
        c
    }

    fn berth(&self, args: &[&str]) -> Out {
        self.output(self.cmd().args(args))
    }

    fn output(&self, cmd: &mut Command) -> Out {
        let out = cmd.output().unwrap();
        Out {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn login(&self, registry: &str, password: &str) -> Out {
        self.login_with(&[registry], password)
    }

    /// `berth login ARGS -u USER --password-stdin`, `password` on stdin.
    fn login_with(&self, args: &[&str], password: &str) -> Out {
        self.login_in(self.cmd(), args, password)
    }

    /// `cmd login ARGS -u USER --password-stdin`, `password` on stdin.
    fn login_in(&self, mut cmd: Command, args: &[&str], password: &str) -> Out {
        let mut child = cmd
            .arg("login")
            .args(args)
            .args(["-u", USER, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn docker_config(&self, config: &serde_json::Value) {
        let d = self.user_home().join(".docker");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn assert_no_secret(out: &Out) {
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        assert!(
            !text.contains(&b64(&format!("{USER}:{PASSWORD}"))),
            "the encoded credentials leaked: {text}"
        );
    }
}

#[test]
fn berth_login_stores_credentials_a_pull_then_uses_until_logout() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let image = reg.push(&common::unique_repo("auth-login"), &[(layer(b"hi"), GZIP)]);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);

    let out = berth.login(&reg.addr, PASSWORD);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_no_secret(&out);
    let stored = berth.home().join("auth.json");
    let mode = fs::metadata(&stored).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let out = berth.berth(&["pull", &image]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_no_secret(&out);

    let out = berth.berth(&["logout", &reg.addr]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let again = Isolated::new();
    reg.trust(&again.home(), false);
    let out = again.berth(&["pull", &image]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("requires authentication") && out.stderr.contains(&reg.addr),
        "{}",
        out.stderr
    );
}

#[test]
fn login_with_an_authfile_writes_there_and_a_pull_reads_it() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let image = reg.push(
        &common::unique_repo("auth-authfile"),
        &[(layer(b"hi"), GZIP)],
    );
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let authfile = berth.dir.path().join("elsewhere/auth.json");
    let file = authfile.to_str().unwrap();
    let out = berth.login_with(&[&reg.addr, "--authfile", file], PASSWORD);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(authfile.is_file());
    assert!(!berth.home().join("auth.json").exists());
    let out = berth.berth(&["--authfile", file, "pull", &image]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = berth.berth(&["pull", &image]);
    assert_eq!(out.status, 1, "pulled without the authfile: {}", out.stderr);
}

#[test]
fn login_and_logout_without_a_registry_take_the_first_search_registry() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let conf = berth.dir.path().join("registries.conf");
    let login = |text: &str| {
        fs::write(&conf, text).unwrap();
        let mut cmd = berth.cmd();
        cmd.env("CONTAINERS_REGISTRIES_CONF", &conf);
        berth.login_in(cmd, &[], PASSWORD)
    };
    let out = login("");
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("name the registry to log in to")
            && out.stderr.contains(conf.to_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(!berth.home().join("auth.json").exists());

    let out = login(&format!(
        "unqualified-search-registries = [\"{}\", \"127.0.0.1:1\"]\n",
        reg.addr
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("logged in to {}", reg.addr));
    let stored = fs::read_to_string(berth.home().join("auth.json")).unwrap();
    assert!(stored.contains(&reg.addr), "{stored}");
    let out = berth.output(
        berth
            .cmd()
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .arg("logout"),
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("logged out of {}", reg.addr));
}

#[test]
fn podmans_user_auth_json_is_read() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let image = reg.push(&common::unique_repo("auth-podman"), &[(layer(b"hi"), GZIP)]);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let d = berth.user_home().join(".config/containers");
    fs::create_dir_all(&d).unwrap();
    let auths = json!({"auths": {reg.addr.clone(): {"auth": b64(&format!("{USER}:{PASSWORD}"))}}});
    fs::write(d.join("auth.json"), serde_json::to_vec(&auths).unwrap()).unwrap();
    let out = berth.berth(&["pull", &image]);
    assert_eq!(out.status, 0, "{}", out.stderr);
}

#[test]
fn a_wrong_password_at_login_is_refused_and_not_stored() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let out = berth.login(&reg.addr, "not-the-password");
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&reg.addr), "{}", out.stderr);
    assert!(!out.stderr.contains("not-the-password"), "{}", out.stderr);
    assert!(!berth.home().join("auth.json").exists());
}

#[test]
fn docker_config_auths_and_credential_helpers_are_used() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let image = reg.push(&common::unique_repo("auth-docker"), &[(layer(b"hi"), GZIP)]);

    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    berth.docker_config(&json!({"auths": {
        format!("https://{}", reg.addr): {"auth": b64(&format!("{USER}:{PASSWORD}"))}
    }}));
    let out = berth.berth(&["pull", &image]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_no_secret(&out);

    // A helper found on PATH, as docker finds it, asked with the server on stdin.
    let helped = Isolated::new();
    reg.trust(&helped.home(), false);
    let bin = helped.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let asked = helped.dir.path().join("asked");
    let helper = bin.join("docker-credential-berthtest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\necho \"$server\" > {asked}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            asked = asked.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    helped.docker_config(&json!({"credHelpers": {reg.addr.clone(): "berthtest"}}));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = helped.output(helped.cmd().env("PATH", path).args(["pull", &image]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_no_secret(&out);
    assert_eq!(fs::read_to_string(&asked).unwrap().trim(), reg.addr);
}

#[test]
fn wrong_or_missing_credentials_are_user_errors_naming_the_registry() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let image = reg.push(&common::unique_repo("auth-wrong"), &[(layer(b"hi"), GZIP)]);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let authfile = berth.dir.path().join("authfile.json");
    fs::write(
        &authfile,
        serde_json::to_vec(&json!({"auths": {reg.addr.clone(): {
            "auth": b64(&format!("{USER}:wrong-{PASSWORD}"))}}}))
        .unwrap(),
    )
    .unwrap();
    let out = berth.berth(&["--authfile", authfile.to_str().unwrap(), "pull", &image]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&reg.addr) && out.stderr.contains("refused the credentials"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(USER), "{}", out.stderr);
    assert!(
        !out.stderr.contains(&format!("wrong-{PASSWORD}")),
        "{}",
        out.stderr
    );

    // The same through REGISTRY_AUTH_FILE and a job's --json result.
    let job = berth.dir.path().join("job.json");
    fs::write(
        &job,
        serde_json::to_vec(&json!({
            "component": {"id": "acme.auth", "image": image},
            "config_id": "1", "configuration": {"parameters": {}}
        }))
        .unwrap(),
    )
    .unwrap();
    let out = berth.output(berth.cmd().env("REGISTRY_AUTH_FILE", &authfile).args([
        "run",
        "--json",
        job.to_str().unwrap(),
    ]));
    assert_eq!(out.status, 1, "{}", out.stderr);
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(result["error_class"], "user", "{result}");
    assert!(
        result["message"].as_str().unwrap().contains(&reg.addr),
        "{result}"
    );
    assert!(
        !out.stdout.contains(&format!("wrong-{PASSWORD}")),
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains(&format!("wrong-{PASSWORD}")),
        "{}",
        out.stderr
    );

    let none = Isolated::new();
    reg.trust(&none.home(), false);
    let out = none.berth(&["pull", &image]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("registry {} requires authentication", reg.addr)),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unknown_ca_is_refused_naming_the_host_and_certs_d() {
    require_env!();
    let reg = AuthRegistry::start(false);
    let berth = Isolated::new();
    // A certs.d directory for the registry, with some other CA in it.
    trust_other(&reg, &berth, &Pki::new("some-other-ca"));
    let out = assert_untrusted(&reg, &berth);
    assert!(
        out.stderr.contains(&format!("certs.d/{}/", reg.addr)),
        "{}",
        out.stderr
    );
}

/// Puts `other`'s `ca.crt` in berth's certs.d directory for `reg`.
fn trust_other(reg: &AuthRegistry, berth: &Isolated, other: &Pki) {
    let d = berth.home().join("certs.d").join(&reg.addr);
    fs::create_dir_all(&d).unwrap();
    fs::copy(other.path("ca.crt"), d.join("ca.crt")).unwrap();
}

#[test]
fn a_self_signed_certificate_made_as_dockers_guide_says_is_trusted_from_certs_d() {
    require_env!();
    let reg = AuthRegistry::start_with(Pki::docker_guide("127.0.0.1", "IP:127.0.0.1"), false);
    let image = reg.push(
        &common::unique_repo("auth-selfsigned"),
        &[(layer(b"hi"), GZIP)],
    );
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let out = berth.login(&reg.addr, PASSWORD);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = berth.berth(&["pull", &image]);
    assert_eq!(out.status, 0, "{}", out.stderr);
}

/// What a pull from `reg` says when it is refused for its certificate.
fn assert_untrusted(reg: &AuthRegistry, berth: &Isolated) -> Out {
    let out = berth.berth(&["pull", &format!("{}/acme/none:1.0", reg.addr)]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("TLS certificate of {} is not trusted", reg.addr)),
        "{}",
        out.stderr
    );
    out
}

#[test]
fn another_self_signed_certificate_with_the_same_name_is_refused() {
    require_env!();
    let reg = AuthRegistry::start_with(Pki::docker_guide("127.0.0.1", "IP:127.0.0.1"), false);
    let berth = Isolated::new();
    trust_other(
        &reg,
        &berth,
        &Pki::docker_guide("127.0.0.1", "IP:127.0.0.1"),
    );
    assert_untrusted(&reg, &berth);
}

#[test]
fn a_pinned_self_signed_certificate_for_another_address_is_refused() {
    require_env!();
    let reg = AuthRegistry::start_with(Pki::docker_guide("127.0.0.2", "IP:127.0.0.2"), false);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    assert_untrusted(&reg, &berth);
}

#[test]
fn a_registry_that_wants_a_client_certificate_gets_the_pair_from_certs_d() {
    require_env!();
    let reg = AuthRegistry::start(true);
    let image = reg.push(&common::unique_repo("auth-mtls"), &[(layer(b"hi"), GZIP)]);
    let berth = Isolated::new();
    reg.trust(&berth.home(), true);
    let authfile = berth.dir.path().join("auth.json");
    fs::write(
        &authfile,
        serde_json::to_vec(&json!({"auths": {reg.addr.clone(): {
            "username": USER, "password": PASSWORD}}}))
        .unwrap(),
    )
    .unwrap();
    let out = berth.berth(&["--authfile", authfile.to_str().unwrap(), "pull", &image]);
    assert_eq!(out.status, 0, "{}", out.stderr);

    let without = Isolated::new();
    reg.trust(&without.home(), false);
    let out = without.berth(&["--authfile", authfile.to_str().unwrap(), "pull", &image]);
    assert_eq!(
        out.status, 1,
        "pulled without a client certificate: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("{} refused the TLS handshake", reg.addr))
            && out.stderr.contains("client certificate")
            && out.stderr.contains(&format!("certs.d/{}/", reg.addr)),
        "{}",
        out.stderr
    );
}

#[test]
fn a_zstd_layer_pulls_from_the_registry() {
    require_env!();
    let tar = tar_of(&[file("hello", b"from zstd")]);
    let zstd_layer = zstd::encode_all(&tar[..], 3).unwrap();
    let plain = tar_of(&[file("plain", b"from tar")]);
    let reference = format!("{}/{}:1.0", common::registry(), common::unique_repo("zstd"));
    push_layout(
        &[
            (zstd_layer, "application/vnd.oci.image.layer.v1.tar+zstd"),
            (plain, "application/vnd.oci.image.layer.v1.tar"),
        ],
        &reference,
        &["--dest-tls-verify=false"],
    );
    let berth = Isolated::new();
    let out = berth.berth(&["pull", &reference]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    // Each layer is unpacked into a directory of its own.
    let layers = berth.dir.path().join("cache/layers");
    let trees: Vec<PathBuf> = fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(trees.len(), 2, "{trees:?}");
    let found = |name: &str| {
        trees
            .iter()
            .flat_map(|t| walk(t))
            .find(|p| p.file_name().is_some_and(|n| n == name))
            .map(|p| fs::read(p).unwrap())
    };
    assert_eq!(found("hello").as_deref(), Some(&b"from zstd"[..]));
    assert_eq!(found("plain").as_deref(), Some(&b"from tar"[..]));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_redirect_from_https_to_plain_http_is_refused_naming_both() {
    require_env!();
    let mut reg = AuthRegistry::start(false);
    let image = reg.push(
        &common::unique_repo("auth-redirect"),
        &[(layer(b"hi"), GZIP)],
    );
    // Distribution's redirect middleware sends blob downloads to this "storage" over HTTP.
    let storage = TcpListener::bind("127.0.0.1:0").unwrap();
    storage.set_nonblocking(true).unwrap();
    let storage_base = format!("http://{}", storage.local_addr().unwrap());
    reg.redirect_blobs_to(&storage_base);
    let berth = Isolated::new();
    reg.trust(&berth.home(), false);
    let authfile = berth.dir.path().join("auth.json");
    fs::write(
        &authfile,
        serde_json::to_vec(&json!({"auths": {reg.addr.clone(): {
            "username": USER, "password": PASSWORD}}}))
        .unwrap(),
    )
    .unwrap();
    let out = berth.berth(&["--authfile", authfile.to_str().unwrap(), "pull", &image]);
    assert_eq!(out.status, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("a redirect from https://{}/v2/", reg.addr))
            && out.stderr.contains(&format!("to {storage_base}/"))
            && out.stderr.contains("only to HTTPS"),
        "{}",
        out.stderr
    );
    assert!(
        storage.accept().is_err(),
        "berth connected to the plain HTTP storage"
    );
    assert_no_secret(&out);
}
