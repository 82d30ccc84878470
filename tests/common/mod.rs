//! Shared helpers for the integration tests: a real registry, images built from real
//! binaries (Debian's busybox-static) and pushed with skopeo, and a berth with a home of its
//! own.
//!
//! These tests need root, a registry (`scripts/registry.sh start`), `skopeo` and
//! `/bin/busybox` (busybox-static). Where any is missing they print why and skip — except
//! under `CI=true`, where a missing prerequisite is a failure: CI must run them all.

#![allow(dead_code, reason = "each test binary uses a part of these helpers")]
#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]
#![expect(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

mod shared_store;
#[allow(unused_imports, reason = "only the shared store's tests use it")]
pub use shared_store::SharedStore;
pub mod sigstore;

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Skips (or, in CI, fails) the calling test when the host cannot run it.
#[macro_export]
macro_rules! require_env {
    () => {
        if let Some(reason) = $crate::common::missing_prerequisite() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI must run every test, but: {reason}");
            }
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// Skips the rest of a test for `reason` (formatted), printing it — except under
/// `CI=true`, where a skip is a failure: CI runs on a host that has everything.
#[macro_export]
macro_rules! skip {
    ($($reason:tt)*) => {{
        let reason = format!($($reason)*);
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI must run every test, but: {reason}");
        }
        eprintln!("skipping: {reason}");
        return;
    }};
}

pub fn missing_prerequisite() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            if !nix::unistd::geteuid().is_root() {
                return Some("needs root (containers run through libcontainer as root)".into());
            }
            if !Path::new("/bin/busybox").is_file() {
                return Some("needs /bin/busybox (apt-get install busybox-static)".into());
            }
            if Command::new("skopeo").arg("--version").output().is_err() {
                return Some("needs skopeo (apt-get install skopeo)".into());
            }
            let url = format!("http://{}/v2/", registry());
            match Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", &url])
                .status()
            {
                Ok(s) if s.success() => None,
                _ => Some(format!(
                    "no registry at {} (scripts/registry.sh start, or set BERTH_TEST_REGISTRY)",
                    registry()
                )),
            }
        })
        .clone()
}

/// Where berth under test looks for the system's signature policy: nowhere, so that no
/// test depends on the machine's /etc/containers/policy.json (tests/signatures.rs gives
/// one of its own where it tests that lookup).
pub const NO_SYSTEM_POLICY: &str = "/nonexistent/berth-test/policy.json";

/// The registry tests push to and berth pulls from.
pub fn registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

/// A unique repository name, so parallel tests never share an image.
pub fn unique_repo(name: &str) -> String {
    let n: u64 = rand_u64();
    format!("berth-test/{name}-{n:x}")
}

pub fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random bytes");
    u64::from_le_bytes(b)
}

// ---------------------------------------------------------------------------------------
// Layers and images

/// One entry of a layer tar.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// A raw name the tar builder would refuse (`../x`), written as a regular file.
    RawFile {
        name: String,
        data: Vec<u8>,
    },
}

pub fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode: 0o755,
    }
}
pub fn file(path: &str, data: &[u8]) -> Entry {
    Entry::File {
        path: path.into(),
        data: data.to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}
pub fn exe(path: &str, data: &[u8]) -> Entry {
    Entry::File {
        path: path.into(),
        data: data.to_vec(),
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}
pub fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.into(),
        target: target.into(),
    }
}
pub fn hardlink(path: &str, target: &str) -> Entry {
    Entry::Hardlink {
        path: path.into(),
        target: target.into(),
    }
}
pub fn whiteout(path: &str) -> Entry {
    let p = Path::new(path);
    let name = format!(".wh.{}", p.file_name().unwrap().to_string_lossy());
    let full = match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => format!("{}/{name}", parent.display()),
        _ => name,
    };
    file(&full, b"")
}
pub fn opaque(dir: &str) -> Entry {
    file(&format!("{dir}/.wh..wh..opq"), b"")
}

/// An uncompressed tar of the entries, in order.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Entry::File {
                path,
                data,
                mode,
                uid,
                gid,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..]).unwrap();
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::RawFile { name, data } => {
                let mut raw = tar::Header::new_old();
                raw.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                raw.set_mode(0o644);
                raw.set_size(data.len() as u64);
                raw.set_entry_type(tar::EntryType::Regular);
                raw.set_mtime(1_700_000_000);
                raw.set_cksum();
                b.get_mut().extend_from_slice(raw.as_bytes());
                b.get_mut().extend_from_slice(data);
                let pad = (512 - data.len() % 512) % 512;
                b.get_mut().extend(std::iter::repeat_n(0u8, pad));
            }
        }
    }
    b.into_inner().unwrap()
}

/// The busybox-static binary and a symlink per applet: a small real userland.
pub fn busybox_layer() -> &'static [u8] {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    LAYER.get_or_init(|| {
        let busybox = fs::read("/bin/busybox").expect("read /bin/busybox");
        let list = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        let mut entries = vec![
            dir("bin"),
            dir("etc"),
            dir("tmp"),
            dir("data"),
            exe("bin/busybox", &busybox),
            file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            ),
            file("etc/group", b"root:x:0:\napp:x:1000:\n"),
        ];
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                entries.push(symlink(&format!("bin/{applet}"), "busybox"));
            }
        }
        gzip(&tar_of(&entries))
    })
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The diff id of a layer (tar or tar.gz, perhaps several gzip members), decompressed and
/// hashed by gzip and sha256sum as it streams: a bomb's layer of hundreds of megabytes never
/// lies whole in memory, and is hashed in a second rather than the unoptimised test
/// build's ten.
pub fn diff_id(layer: &[u8]) -> String {
    if !layer.starts_with(&[0x1f, 0x8b]) {
        return format!("sha256:{}", sha256(layer));
    }
    let mut child = Command::new("sh")
        .args(["-c", "gzip -dc | sha256sum"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip and sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let out = std::thread::scope(|s| {
        s.spawn(move || stdin.write_all(layer).unwrap());
        child.wait_with_output().unwrap()
    });
    assert!(out.status.success(), "gzip -dc | sha256sum failed");
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// Every path below `root`, not following links.
pub fn walk_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&p) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
                out.push(e.path());
            }
        }
    }
    out
}

/// An image to build: layers (tar or tar.gz bytes) and its run config.
#[derive(Default, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Vec<u8>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

impl ImageSpec {
    /// busybox plus a script at /run.sh that is the image's command.
    pub fn script(script: &str) -> ImageSpec {
        let layer = gzip(&tar_of(&[exe(
            "run.sh",
            format!("#!/bin/sh\n{script}\n").as_bytes(),
        )]));
        ImageSpec {
            layers: vec![busybox_layer().to_vec(), layer],
            entrypoint: Some(vec!["/bin/sh".into()]),
            cmd: Some(vec!["/run.sh".into()]),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        }
    }
}

/// A built image: where it is as an OCI layout, and where it was pushed.
pub struct BuiltImage {
    pub layout: tempfile::TempDir,
    pub reference: String,
    /// The manifest digest the registry serves.
    pub digest: String,
}

impl BuiltImage {
    pub fn pinned(&self) -> String {
        let repo = self.reference.rsplit_once(':').map(|(r, _)| r).unwrap();
        format!("{repo}@{}", self.digest)
    }
}

/// Writes `spec` as an OCI layout and pushes it to the test registry with skopeo.
pub fn push(spec: &ImageSpec, repo: &str, tag: &str) -> BuiltImage {
    let layout = tempfile::tempdir().unwrap();
    let blobs = layout.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = sha256(bytes);
        fs::write(blobs.join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &spec.layers {
        let (digest, size) = put(l);
        let media = if l.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        layer_descs.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
        diff_ids.push(diff_id(l));
    }
    let mut cfg = serde_json::Map::new();
    if let Some(e) = &spec.entrypoint {
        cfg.insert("Entrypoint".into(), serde_json::json!(e));
    }
    if let Some(c) = &spec.cmd {
        cfg.insert("Cmd".into(), serde_json::json!(c));
    }
    cfg.insert("Env".into(), serde_json::json!(spec.env));
    if let Some(w) = &spec.workdir {
        cfg.insert("WorkingDir".into(), serde_json::json!(w));
    }
    if let Some(u) = &spec.user {
        cfg.insert("User".into(), serde_json::json!(u));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    fs::write(
        layout.path().join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let reference = format!("{}/{repo}:{tag}", registry());
    let digestfile = layout.path().join("pushed.digest");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--preserve-digests",
            "--digestfile",
        ])
        .arg(&digestfile)
        .arg(format!("oci:{}:{tag}", layout.path().display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = fs::read_to_string(&digestfile).unwrap().trim().to_owned();
    assert_eq!(digest, manifest_digest, "skopeo changed the manifest");
    BuiltImage {
        layout,
        reference,
        digest,
    }
}

// ---------------------------------------------------------------------------------------
// Running berth

/// A berth with its own home and image cache.
pub struct Berth {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The `--json` result document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not the result JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the `--json` result's message contains `needle`.
    pub fn assert_message_has(&self, needle: &str) {
        let result = self.json();
        let message = result["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{needle:?} not in {}",
            self.stdout
        );
    }
}

/// The unprivileged operator every berth of these tests runs as, when `BERTH_TEST_USER`
/// names one (CI runs the spine suite once more that way): its uid and gid.
pub fn test_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        let name = std::env::var("BERTH_TEST_USER")
            .ok()
            .filter(|n| !n.is_empty())?;
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap_or_else(|| panic!("BERTH_TEST_USER {name:?} does not exist"));
        Some((user.uid.as_raw(), user.gid.as_raw()))
    })
}

/// The berth binary, where any user can run it: a copy in a directory of its own when the
/// build's is not (a checkout under root's 0700 home), kept for the test process.
pub fn berth_for_anyone() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let built = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
        let reachable = built
            .ancestors()
            .skip(1)
            .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
        if reachable {
            return built;
        }
        // One copy per build, shared by the test processes (the binary is large).
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&built).unwrap();
        let root = Path::new("/var/tmp/berth-test-exe");
        let dir = root.join(format!(
            "{}-{}",
            meta.size(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        ));
        let copy = dir.join("berth");
        if !copy.is_file() {
            for d in [root, dir.as_path()] {
                fs::create_dir_all(d).unwrap();
                fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
            }
            let partial = dir.join(format!("berth.{}", std::process::id()));
            fs::copy(&built, &partial).unwrap();
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&partial, &copy).unwrap();
        }
        copy
    })
    .clone()
}

/// berth as the user `uid`:`gid`, with no supplementary groups (through `setpriv`).
pub fn berth_as(uid: u32, gid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(berth_for_anyone());
    c
}

impl Berth {
    pub fn new() -> Berth {
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = test_user() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        Berth { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn cmd(&self) -> Command {
        let mut c = match test_user() {
            Some((uid, gid)) => berth_as(uid, gid),
            None => Command::new(env!("CARGO_BIN_EXE_berth")),
        };
        c.arg("--home")
            .arg(self.home())
            .arg("--cache")
            .arg(self.cache())
            .arg("--retries")
            .arg("0");
        c.env_remove("RUST_LOG")
            .env("BERTH_SYSTEM_SIGNATURE_POLICY", NO_SYSTEM_POLICY);
        // The embedded store unless a test names another (tests/store_conformance.rs).
        c.env_remove("BERTH_STORAGE").env_remove("BERTH_FILES");
        // No credentials of whoever runs the tests: podman's and Docker's auth files are
        // looked for in this berth's own directory.
        let own = self.dir.path();
        c.env("XDG_RUNTIME_DIR", own.join("run-user"))
            .env("XDG_CONFIG_HOME", own.join("config"))
            .env("DOCKER_CONFIG", own.join("docker"))
            .env_remove("REGISTRY_AUTH_FILE");
        // Nor the host's registries.conf or podman's short-name alias cache: only files the
        // test writes here, if it does.
        c.env("CONTAINERS_REGISTRIES_CONF", own.join("registries.conf"));
        c.env(
            "BERTH_SHORT_NAME_ALIAS_CONF",
            own.join("short-name-aliases.conf"),
        );
        c
    }

    pub fn run_cmd(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("run berth"))
    }

    /// Starts `berth run JOB` in the background; returns it with its stdout, line by line.
    pub fn spawn_run(
        &self,
        job: &Path,
    ) -> (
        std::process::Child,
        std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    ) {
        let mut child = self
            .cmd()
            .args(["run", job.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        (
            child,
            std::io::BufRead::lines(std::io::BufReader::new(stdout)),
        )
    }

    /// The id of container `n` of `job`: `berth-<home tag>-<job>-<n>`, the tag naming
    /// this berth's home (the first 4 bytes of its path's sha256).
    pub fn container_id(&self, job: &str, n: usize) -> String {
        use std::os::unix::ffi::OsStrExt;
        let tag = &sha256(self.home().as_os_str().as_bytes())[..8];
        format!("berth-{tag}-{job}-{n}")
    }

    /// The data folder of image `n` of a running job (see src/job/workdir.rs).
    pub fn data_dir(job_dir: &Path, n: usize) -> PathBuf {
        job_dir.join(n.to_string()).join("box/data")
    }

    /// The id of the job that is running (or whose berth died).
    pub fn running_job_id(&self) -> String {
        let dir = self.job_dir();
        dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The directory of the job that is running (or whose berth died).
    pub fn job_dir(&self) -> PathBuf {
        fs::read_dir(self.home().join("jobs"))
            .unwrap()
            .flatten()
            .find(|e| e.path().is_dir())
            .expect("a job directory")
            .path()
    }

    /// The zip archive stored as file `id`: its entries, name → content (directories end
    /// in `/`, content empty), and its comment.
    pub fn unzip(&self, id: u64) -> (BTreeMap<String, Vec<u8>>, String) {
        use std::io::Read;
        let path = self.dir.path().join(format!("file-{id}.zip"));
        let r = self.run_cmd(&[
            "storage",
            "download",
            &id.to_string(),
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_eq!(r.status, 0, "{}", r.stderr);
        let mut zip = zip::ZipArchive::new(fs::File::open(&path).unwrap()).unwrap();
        let comment = String::from_utf8_lossy(zip.comment()).into_owned();
        let mut entries = BTreeMap::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            entries.insert(entry.name().to_owned(), content);
        }
        (entries, comment)
    }

    /// Writes a job file and runs it with `--json`.
    pub fn run_job(&self, job: &serde_json::Value) -> Run {
        let path = self.write_job(job);
        self.run_cmd(&["run", "--json", path.to_str().unwrap()])
    }

    pub fn write_job(&self, job: &serde_json::Value) -> PathBuf {
        let path = self.dir.path().join(format!("job-{:x}.json", rand_u64()));
        fs::write(&path, serde_json::to_vec_pretty(job).unwrap()).unwrap();
        path
    }

    /// Asserts berth left nothing behind: no job directory, no container state, no mount,
    /// and no cgroup of any of `job_ids`.
    pub fn assert_clean(&self, job_ids: &[&str]) {
        let list = |p: PathBuf| -> Vec<String> {
            fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let jobs = list(self.home().join("jobs"));
        assert!(jobs.is_empty(), "job directories left behind: {jobs:?}");
        for sub in ["run/state", "run/bundles"] {
            let left = list(self.home().join(sub));
            assert!(left.is_empty(), "left behind in {sub}: {left:?}");
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let home = self.dir.path().to_string_lossy().into_owned();
        assert!(!mounts.contains(&home), "mounts left behind under {home}");
        let cgroups = cgroups_of(job_ids);
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    }
}

/// Starts `cmd` (a verbose `berth run`) and reads its stderr until berth says it is
/// committing; returns it with the rest of its stderr, to kill it mid-commit.
pub fn spawn_until_committing(
    cmd: &mut Command,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let committing = lines.by_ref().any(|l| l.unwrap().contains("committing"));
    assert!(committing, "berth never reached the commit");
    (child, lines)
}

/// `berth encrypt ARGS` with `input` on stdin.
pub fn encrypt(b: &Berth, args: &[&str], input: &str) -> Run {
    use std::process::Stdio;
    let mut child = b
        .cmd()
        .arg("encrypt")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
}

/// `input` as `berth encrypt ARGS` encrypts it.
pub fn encrypted(b: &Berth, args: &[&str], input: serde_json::Value) -> serde_json::Value {
    let r = encrypt(b, args, &input.to_string());
    assert_eq!(r.status, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// The job id of a `--json` result.
pub fn job_id(result: &serde_json::Value) -> String {
    result["job_id"].as_str().unwrap_or_default().to_owned()
}

/// Cgroup directories (any v1 controller or the v2 hierarchy) of these jobs' containers,
/// wherever they are: below `/berth` (`/berth-u<uid>`), below the cgroup berth ran in (a
/// Slurm job's, a delegated one), or below a `--cgroup-parent`.
pub fn cgroups_of(job_ids: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let is_ours = |name: &str| {
        job_ids.iter().any(|j| {
            !j.is_empty() && name.starts_with("berth-") && name.contains(&format!("-{j}-"))
        })
    };
    // Each hierarchy (the v2 root, if that is what /sys/fs/cgroup is, included).
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if is_ours(&name) {
                found.push(e.path().display().to_string());
            } else {
                stack.push(e.path());
            }
        }
    }
    found.sort();
    found
}

/// The cgroup directory, in the hierarchy mounted at `hierarchy`, of the container of `job`
/// (its first image's), wherever berth put it.
pub fn container_cgroup(hierarchy: &Path, job: &str) -> Option<PathBuf> {
    cgroups_of(&[job])
        .into_iter()
        .map(PathBuf::from)
        .filter(|d| d.starts_with(hierarchy))
        .min_by_key(|d| d.components().count())
}

/// Whether a process whose command line matches `pattern` (`pgrep -f`) is running.
pub fn running(pattern: &str) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    !out.stdout.is_empty()
}

/// The unprivileged user `name` (created if missing, with a subordinate id range unless
/// `subordinate` is false): its uid and gid.
pub fn ensure_user(name: &str, subordinate: bool) -> (u32, u32) {
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let mut add = Command::new("useradd");
        add.args(["--create-home", "--shell", "/bin/sh"]);
        if !subordinate {
            add.args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]);
        }
        let out = add.arg(name).output().unwrap();
        assert!(out.status.success(), "useradd {name}: {out:?}");
    }
    let user = nix::unistd::User::from_name(name).unwrap().unwrap();
    (user.uid.as_raw(), user.gid.as_raw())
}

/// A job for `image` with the given extra component settings and parameters.
pub fn job(
    image: &str,
    component: serde_json::Value,
    parameters: serde_json::Value,
) -> serde_json::Value {
    let mut c = serde_json::json!({"id": "acme.test", "image": image});
    if let serde_json::Value::Object(extra) = component {
        for (k, v) in extra {
            c[k] = v;
        }
    }
    serde_json::json!({
        "component": c,
        "config_id": "42",
        "configuration": {"parameters": parameters},
    })
}

/// A listing of a tree for exact comparisons: path → description of type, mode, owner,
/// content digest or link target, and hard-link group.
pub fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    describe_shifted_tree(root, 0)
}

/// [`describe_tree`] of a tree whose owners were moved up by `shift` (a container id
/// range's start): owners are shown as the container sees them.
pub fn describe_shifted_tree(root: &Path, shift: u32) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    fn walk(
        root: &Path,
        dir: &Path,
        shift: u32,
        out: &mut BTreeMap<String, String>,
        inodes: &mut BTreeMap<u64, String>,
    ) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let desc = if ft.is_dir() {
                format!(
                    "dir {:o} {}:{}",
                    m.mode() & 0o7777,
                    m.uid() - shift,
                    m.gid() - shift
                )
            } else if ft.is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                let group = if m.nlink() > 1 {
                    format!(" hardlink-group {first}")
                } else {
                    String::new()
                };
                format!(
                    "file {:o} {}:{} {}{group}",
                    m.mode() & 0o7777,
                    m.uid() - shift,
                    m.gid() - shift,
                    sha256(&fs::read(&p).unwrap())
                )
            };
            out.insert(rel, desc);
            if ft.is_dir() {
                walk(root, &p, shift, out, inodes);
            }
        }
    }
    walk(root, root, shift, &mut out, &mut inodes);
    out
}

/// Settings for a berth under `dir` that never reaches a registry, and the pinned reference
/// of a one-layer image already in its store: for tests with the fake runtime, which need an
/// image but no registry and no root.
pub fn offline_settings(dir: &Path) -> (berth::job::Settings, String) {
    let settings = berth::job::Settings {
        home: dir.join("home"),
        cache: dir.join("cache"),
        registry: berth::image::RegistrySettings {
            retries: 0,
            progress: false,
            ..Default::default()
        },
        signature_policy: Default::default(),
        unpack_caps: Default::default(),
        copy_rootfs: false,
        ids: None,
        store: berth::storage::StoreSettings::embedded(&dir.join("home")),
    };
    let image = store_fake_image(&settings.cache);
    (settings, image)
}

/// Puts a one-layer image (an `/etc/passwd`, nothing to run) straight into the image store
/// at `cache` and returns its pinned reference, on a registry that does not exist.
fn store_fake_image(cache: &Path) -> String {
    use berth::image::{Digest, Store};
    let store = Store::open(cache).unwrap();
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(passwd.len() as u64);
    h.set_mode(0o644);
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": Digest::of(&layer).to_string(), "size": layer.len()}]
    }))
    .unwrap();
    for blob in [&layer, &config, &manifest] {
        store.put_blob(&Digest::of(blob), blob).unwrap();
    }
    // Port 9 on loopback: nothing listens, so any registry request would fail.
    let reference = format!("127.0.0.1:9/test/fake@{}", Digest::of(&manifest));
    // What a pull with no signature policy in force would have recorded.
    let parsed = berth::image::ImageRef::parse(&reference).unwrap();
    let accepted = berth::image::Gate::load(None, &[])
        .unwrap()
        .rules(&parsed)
        .acceptance();
    store
        .save_record(&berth::image::ImageRecord {
            reference: reference.clone(),
            digest: Digest::of(&manifest),
            manifest: Digest::of(&manifest),
            config: Digest::of(&config),
            layers: vec![Digest::of(&layer)],
            size: layer.len() as u64,
            pulled_at: 0,
            last_used: 0,
            accepted: Some(accepted),
        })
        .unwrap();
    reference
}
