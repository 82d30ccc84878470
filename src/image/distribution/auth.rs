//! Registry credentials: where berth finds them, how it keeps them, and how it keeps them
//! out of sight.
//!
//! Looked up only when a registry asks for them (a 401 with a `WWW-Authenticate`
//! challenge), in this order, the first file with an entry for the registry winning:
//! `--authfile` / `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` (without
//! that variable `/run/containers/<uid>/auth.json`), `$XDG_CONFIG_HOME/containers/auth.json`
//! (`~/.config/containers/auth.json`), `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json` — podman's order — and berth's own `<home>/auth.json` that
//! `berth login` writes unless given `--authfile`. Each file may hold `auths` (base64 `auth`,
//! or `username` and `password`; keyed by registry or by `registry/repository`),
//! `credHelpers` (per registry) and `credsStore`, both run as `docker-credential-<name> get`
//! with the server on stdin.
//!
//! A password is a [`Secret`] from the moment it is read: its `Debug` prints `[hidden]`,
//! it has no `Display`, and no error of this module carries one (parse errors of a
//! credentials file say only where the file is wrong, never what it holds).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use crate::image::spec::AuthError;

/// A password or token. Printing it through `Debug` shows `[hidden]`; there is no
/// `Display`: the only way to the value is [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[hidden]")
    }
}

/// A user name and password for one registry, and where they were found.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    /// The file or helper they came from, for error messages.
    pub source: String,
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> Secret {
        let raw = format!("{}:{}", self.username, self.password.expose());
        Secret(format!("Basic {}", B64.encode(raw)))
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where credentials are looked for, in order.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--authfile` / `REGISTRY_AUTH_FILE`: must exist when given.
    pub authfile: Option<PathBuf>,
    /// Files read when they exist, in order, after the authfile.
    pub files: Vec<PathBuf>,
}

impl Sources {
    /// The usual places, from the environment, then `berth_file` (what `berth login` writes).
    pub fn from_env(authfile: Option<&Path>, berth_file: Option<&Path>) -> Sources {
        let env = |k: &str| std::env::var_os(k);
        let uid = nix::unistd::geteuid().as_raw();
        Sources {
            authfile: authfile.map(Path::to_owned),
            files: podman_files(&env, uid, berth_file),
        }
    }

    /// The credentials for `repository` at `registry`, or `None` (anonymous).
    pub fn lookup(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Credentials>, AuthError> {
        let mut paths: Vec<(&Path, bool)> = Vec::new();
        if let Some(a) = &self.authfile {
            paths.push((a, true));
        }
        paths.extend(self.files.iter().map(|f| (f.as_path(), false)));
        for (path, required) in paths {
            let Some(file) = AuthFile::read(path, required)? else {
                continue;
            };
            if let Some(found) = file.find(path, registry, repository)? {
                tracing::debug!(registry, source = %found.source, "using stored credentials");
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// The files containers-auth.json(5) names, in podman's order, for a user `uid` whose
/// environment `env` shows; then `berth_file`.
fn podman_files(
    env: &dyn Fn(&str) -> Option<OsString>,
    uid: u32,
    berth_file: Option<&Path>,
) -> Vec<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = var("HOME");
    // podman's runtime file: where the session keeps it, else the system's per-user place.
    let runtime = var("XDG_RUNTIME_DIR").map_or_else(
        || PathBuf::from(format!("/run/containers/{uid}/auth.json")),
        |run| run.join("containers/auth.json"),
    );
    let mut files = vec![runtime];
    let config = var("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")));
    files.extend(config.map(|c| c.join("containers/auth.json")));
    if let Some(d) = var("DOCKER_CONFIG") {
        files.push(d.join("config.json"));
    } else if let Some(h) = &home {
        files.push(h.join(".docker/config.json"));
    }
    files.extend(berth_file.map(Path::to_owned));
    files
}

/// berth's own credentials file under its home.
pub fn berth_auth_file(home: &Path) -> PathBuf {
    home.join("auth.json")
}

#[derive(Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<Secret>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
}

impl AuthFile {
    fn read(path: &Path, required: bool) -> Result<Option<AuthFile>, AuthError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(source) => {
                return Err(AuthError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        AuthFile::parse(path, &bytes).map(Some)
    }

    /// Parses the file's `bytes`; `path` names it in errors.
    fn parse(path: &Path, bytes: &[u8]) -> Result<AuthFile, AuthError> {
        serde_json::from_slice(bytes).map_err(|e| AuthError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
        })
    }

    /// A helper for the registry, then the most specific `auths` entry, then the store.
    fn find(
        &self,
        path: &Path,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Credentials>, AuthError> {
        if let Some(helper) = self.helper_for(registry) {
            return run_helper(helper, registry);
        }
        if let Some(c) = self.stored(path, registry, repository)? {
            return Ok(Some(c));
        }
        match &self.creds_store {
            Some(store) if !store.is_empty() => run_helper(store, registry),
            _ => Ok(None),
        }
    }

    /// The `credHelpers` entry for the registry.
    fn helper_for(&self, registry: &str) -> Option<&str> {
        self.cred_helpers
            .iter()
            .find(|(k, _)| same_registry(&normalize_key(k), registry))
            .map(|(_, v)| v.as_str())
    }

    /// The credentials of the most specific `auths` entry for the repository.
    fn stored(
        &self,
        path: &Path,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Credentials>, AuthError> {
        for scope in scopes(registry, repository) {
            let entry = self
                .auths
                .iter()
                .find(|(k, _)| same_registry(&normalize_key(k), &scope));
            if let Some((_, entry)) = entry
                && let Some(c) = entry.credentials(path, registry)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// The fuzz target `auth` (fuzz/): `bytes` as a credentials file, and what berth would use
/// from it for `repository` at `registry`: the helper it would run (never run here), or
/// the stored credentials.
#[cfg(feature = "fuzzing")]
pub fn fuzz_auth_file(
    bytes: &[u8],
    registry: &str,
    repository: &str,
) -> Result<(Option<String>, Option<Credentials>), AuthError> {
    let path = Path::new("auth.json");
    let file = AuthFile::parse(path, bytes)?;
    let helper = file.helper_for(registry).map(str::to_owned);
    Ok((helper, file.stored(path, registry, repository)?))
}

impl AuthEntry {
    fn credentials(&self, path: &Path, registry: &str) -> Result<Option<Credentials>, AuthError> {
        let bad = |why| AuthError::BadEntry {
            registry: registry.to_owned(),
            path: path.to_owned(),
            why,
        };
        let source = path.display().to_string();
        if let Some(auth) = self.auth.as_ref().filter(|a| !a.is_empty()) {
            let decoded = B64
                .decode(auth.expose().trim())
                .map_err(|_| bad("`auth` is not base64"))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| bad("`auth` is not user:password"))?;
            return Ok(Some(Credentials {
                username: user.to_owned(),
                password: Secret::new(password),
                source,
            }));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
                username: u.clone(),
                password: p.clone(),
                source,
            })),
            // An empty entry: docker writes these beside a credsStore.
            _ => Ok(None),
        }
    }
}

/// `registry/a/b/c`, `registry/a/b`, `registry/a`, `registry`: the most specific first.
fn scopes(registry: &str, repository: &str) -> Vec<String> {
    let mut out = vec![format!("{registry}/{repository}")];
    let mut rest = repository;
    while let Some((parent, _)) = rest.rsplit_once('/') {
        out.push(format!("{registry}/{parent}"));
        rest = parent;
    }
    out.push(registry.to_owned());
    out
}

/// A key as docker writes it (`https://host/v1/`) or containers do (`host/ns/repo`).
fn normalize_key(key: &str) -> String {
    let (rest, had_scheme) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(r) => (r, true),
        None => (key, false),
    };
    let rest = rest.trim_end_matches('/');
    if had_scheme {
        rest.split('/').next().unwrap_or(rest).to_owned()
    } else {
        rest.to_owned()
    }
}

/// Equal, with Docker Hub's several names taken as one.
fn same_registry(key: &str, wanted: &str) -> bool {
    const HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];
    let hub = |s: &str| {
        HUB.iter()
            .find_map(|h| {
                (s == *h || s.starts_with(&format!("{h}/")))
                    .then(|| format!("docker.io{}", &s[h.len()..]))
            })
            .unwrap_or_else(|| s.to_owned())
    };
    hub(key) == hub(wanted)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: Secret,
}

/// `docker-credential-<helper> get`, the server on stdin; `None` when it has nothing.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, AuthError> {
    run_helper_program(
        helper,
        Path::new(&format!("docker-credential-{helper}")),
        registry,
    )
}

fn run_helper_program(
    helper: &str,
    program: &Path,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let fail = |message: String| AuthError::Helper {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        message,
    };
    let name = program
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {name}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading fails below with its own message.
        let _ = stdin.write_all(registry.as_bytes());
    }
    let mut stdout = Vec::new();
    if let Some(out) = child.stdout.take() {
        out.take(1 << 20)
            .read_to_end(&mut stdout)
            .map_err(|e| fail(format!("cannot read its answer: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&stdout);
        // The protocol's way of saying "nothing stored".
        if said.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().chain(said.lines()).next().unwrap_or("");
        let first: String = first.chars().take(200).collect();
        return Err(fail(format!("{}: {first}", output.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout)
        .map_err(|e| fail(format!("its answer is not valid (line {})", e.line())))?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
        source: name,
    }))
}

/// Stores `credentials` for `registry` in berth's file at `path` (mode 0600, replaced
/// atomically), keeping every other entry.
pub fn store(path: &Path, registry: &str, credentials: &Credentials) -> Result<(), AuthError> {
    let mut doc = read_raw(path)?;
    let mut auths = take_auths(&mut doc);
    let raw = format!("{}:{}", credentials.username, credentials.password.expose());
    auths.insert(
        registry.to_owned(),
        serde_json::json!({ "auth": B64.encode(raw) }),
    );
    doc.insert("auths".to_owned(), serde_json::Value::Object(auths));
    write_private(path, &doc)
}

/// Removes the entry for `registry` from berth's file; whether there was one.
pub fn remove(path: &Path, registry: &str) -> Result<bool, AuthError> {
    let mut doc = read_raw(path)?;
    let mut auths = take_auths(&mut doc);
    let removed = auths.remove(registry).is_some();
    doc.insert("auths".to_owned(), serde_json::Value::Object(auths));
    if removed {
        write_private(path, &doc)?;
    }
    Ok(removed)
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

fn take_auths(doc: &mut JsonMap) -> JsonMap {
    match doc.remove("auths") {
        Some(serde_json::Value::Object(m)) => m,
        _ => JsonMap::new(),
    }
}

/// berth's file as a JSON object (empty when missing), so entries berth does not know
/// survive a rewrite.
fn read_raw(path: &Path) -> Result<JsonMap, AuthError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AuthError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JsonMap::new()),
        Err(source) => Err(AuthError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_private(path: &Path, doc: &JsonMap) -> Result<(), AuthError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |source| AuthError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    let written = file
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// What a registry's `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `a="x, y",b=z` → [(a, "x, y"), (b, z)]: commas inside quotes are kept.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.push((name.trim().to_lowercase(), value.trim().to_owned()));
    }
}

/// A token server's answer (`token`, or OAuth's `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    access_token: Option<Secret>,
}

impl TokenAnswer {
    pub fn into_token(self) -> Option<Secret> {
        self.token
            .filter(|t| !t.is_empty())
            .or_else(|| self.access_token.filter(|t| !t.is_empty()))
    }
}

/// Reads a password from stdin: the first line (`--password-stdin`), or, on a terminal,
/// without echo after a prompt on stderr.
pub fn read_password(from_stdin: bool) -> Result<Secret, AuthError> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let tty = !from_stdin && stdin.is_terminal();
    if tty {
        eprint!("Password: ");
    }
    let echo = if tty { EchoOff::new() } else { None };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    if tty {
        eprintln!();
    }
    read.map_err(AuthError::Prompt)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    Ok(Secret::new(password))
}

/// The terminal's echo turned off until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and only a filled one
        // is used. JUSTIFICATION: no terminal API among berth's dependencies' features.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid pointer to a termios. JUSTIFICATION: as above.
        if unsafe { libc::tcgetattr(0, &raw mut saved) } != 0 {
            return None;
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: fd 0 and a valid termios copied from the terminal's own.
        // JUSTIFICATION: as above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw const quiet) };
        Some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same fd.
        // JUSTIFICATION: as in `new`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw const self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Credentials {
            username: "alice".into(),
            password: Secret::new("hunter2"),
            source: "test".into(),
        };
        let shown = format!("{c:?} {:?} {:#?}", c.basic_header(), c);
        assert!(shown.contains("alice"), "{shown}");
        assert!(shown.contains("[hidden]"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&B64.encode("alice:hunter2")), "{shown}");
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn keys_match_as_docker_and_containers_write_them() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_key("reg:5000/ns/repo"), "reg:5000/ns/repo");
        assert!(same_registry("index.docker.io", "docker.io"));
        assert!(same_registry(
            "docker.io/library/x",
            "registry-1.docker.io/library/x"
        ));
        assert!(!same_registry("reg:5000", "reg:5001"));
        assert_eq!(
            scopes("r", "a/b/c"),
            ["r/a/b/c", "r/a/b", "r/a", "r"].map(String::from)
        );
    }

    fn write(dir: &Path, name: &str, json: &serde_json::Value) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_vec(json).unwrap()).unwrap();
        p
    }

    #[test]
    fn lookup_takes_the_first_file_and_the_most_specific_entry() {
        let dir = tempfile::tempdir().unwrap();
        let b = |s: &str| B64.encode(s);
        let first = write(
            dir.path(),
            "first.json",
            &serde_json::json!({"auths": {
                "reg:5000": {"auth": b("general:one")},
                "reg:5000/team": {"auth": b("team:two")},
            }}),
        );
        let second = write(
            dir.path(),
            "second.json",
            &serde_json::json!({"auths": {"https://other:443/v1/": {"username": "u", "password": "p"}}}),
        );
        let sources = Sources {
            authfile: None,
            files: vec![dir.path().join("missing.json"), first, second],
        };
        let c = sources.lookup("reg:5000", "team/app").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("team", "two"));
        let c = sources.lookup("reg:5000", "else/app").unwrap().unwrap();
        assert_eq!(c.username, "general");
        let c = sources.lookup("other:443", "x").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "p"));
        assert!(sources.lookup("none:1", "x").unwrap().is_none());
    }

    #[test]
    fn files_are_searched_in_podmans_order_then_berths() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let berth = Path::new("/b/auth.json");
        let all = vars(&[
            ("XDG_RUNTIME_DIR", "/r"),
            ("XDG_CONFIG_HOME", "/c"),
            ("HOME", "/h"),
            ("DOCKER_CONFIG", "/d"),
        ]);
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            podman_files(&all, 1000, Some(berth)),
            paths(&[
                "/r/containers/auth.json",
                "/c/containers/auth.json",
                "/d/config.json",
                "/b/auth.json"
            ])
        );
        let bare = vars(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "")]);
        assert_eq!(
            podman_files(&bare, 1000, None),
            paths(&[
                "/run/containers/1000/auth.json",
                "/h/.config/containers/auth.json",
                "/h/.docker/config.json"
            ])
        );
        assert_eq!(
            podman_files(&vars(&[]), 0, None),
            paths(&["/run/containers/0/auth.json"])
        );
    }

    #[test]
    fn a_broken_file_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        std::fs::write(&p, r#"{"auths": {"reg": {"auth": "c2VjcmV0"}} oops"#).unwrap();
        let sources = Sources {
            authfile: Some(p.clone()),
            files: vec![],
        };
        let e = sources.lookup("reg", "x").unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let missing = Sources {
            authfile: Some(dir.path().join("nope.json")),
            files: vec![],
        };
        assert!(matches!(
            missing.lookup("reg", "x"),
            Err(AuthError::Read { .. })
        ));
    }

    #[test]
    fn login_stores_privately_and_logout_removes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("home/auth.json");
        let c = Credentials {
            username: "bob".into(),
            password: Secret::new("pw:with:colons"),
            source: String::new(),
        };
        store(&p, "reg:5000", &c).unwrap();
        store(&p, "other:1", &c).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sources = Sources {
            authfile: None,
            files: vec![p.clone()],
        };
        let found = sources.lookup("reg:5000", "a").unwrap().unwrap();
        assert_eq!(found.password.expose(), "pw:with:colons");
        assert!(remove(&p, "reg:5000").unwrap());
        assert!(!remove(&p, "reg:5000").unwrap());
        assert!(sources.lookup("reg:5000", "a").unwrap().is_none());
        assert!(sources.lookup("other:1", "a").unwrap().is_some());
    }

    #[test]
    fn credential_helpers_are_asked_with_the_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-berthtest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$server\" = reg:5000 ] || { echo 'credentials not found in native keychain'; exit 1; }\n\
             printf '{\"ServerURL\":\"%s\",\"Username\":\"helped\",\"Secret\":\"s3\"}' \"$server\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = run_helper_program("berthtest", &helper, "reg:5000")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "helped");
        assert_eq!(c.password.expose(), "s3");
        assert_eq!(c.source, "docker-credential-berthtest");
        assert!(
            run_helper_program("berthtest", &helper, "reg:6000")
                .unwrap()
                .is_none()
        );
        let e = run_helper("berth-no-such-helper", "reg").unwrap_err();
        assert!(
            e.to_string()
                .contains("docker-credential-berth-no-such-helper"),
            "{e}"
        );
    }
}
