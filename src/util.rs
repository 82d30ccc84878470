//! Small helpers with no better home.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// `n` random bytes as lowercase hex: unique names for jobs, containers and temp files.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if getrandom::fill(&mut buf).is_err() {
        // The kernel's random source is not expected to fail; if it does, uniqueness (not
        // secrecy) is all these names need.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = nanos ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(buf)
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Milliseconds since the epoch: the one clock storage, mappings and job records share.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long ago `then` (seconds since the epoch) was, shortly; `never` for 0.
pub fn ago(then: u64, now: u64) -> String {
    if then == 0 {
        return "never".to_owned();
    }
    let s = now.saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A byte count for humans: `1.2 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The buffer of a file berth streams through (layers, blobs, CSV in and out): large
/// enough that system calls do not dominate, small enough to stay out of the way.
pub const IO_BUFFER: usize = 256 << 10;

/// The longest file name the kernel takes (NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;

/// Whether `name` can name a file inside one directory: one plain path component, never
/// `.` or `..`; `Err` says why not.
pub fn plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Err("a file needs a name (not \".\" or \"..\")")
    } else if name.contains('/') || name.contains('\0') {
        Err("a file name cannot contain '/' or NUL")
    } else if name.len() > MAX_NAME_BYTES {
        Err("a file name is at most 255 bytes")
    } else {
        Ok(())
    }
}

/// Removes a file, symlink or directory tree (never following a symlink); a path that is
/// not there is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// An error and its causes on one line, `outer: inner: innermost`, skipping a cause whose
/// text the outer message already carries.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !next.is_empty() && !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

/// The job this berth runs, which every line it logs names (`--log-format json`).
static LOG_JOB: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Names the job every line logged from now on belongs to.
pub fn set_log_job(id: &str) {
    *LOG_JOB.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
}

/// The job lines logged now belong to, once a job started.
pub fn log_job() -> Option<String> {
    LOG_JOB.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Installs rustls' ring provider once per process (the HTTP clients of the registry and
/// of S3 build on it); another one installed already is fine.
pub fn install_crypto_provider() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// This host's name, for job records (empty when the kernel will not say).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// For unit tests of what happens when a process has no file descriptor to spare: the
/// check runs in a child copy of the test binary (the limit is the whole process's, and
/// other tests run in threads beside it).
#[cfg(test)]
pub mod no_fds {
    const CHILD: &str = "BERTH_TEST_NO_FDS_ARG";

    /// In the child: what the parent passed. `None` in the parent.
    pub fn child_arg() -> Option<String> {
        std::env::var(CHILD).ok()
    }

    /// Runs the test `name` (its full path) again in a child process with `arg`; fails
    /// unless it passes there.
    pub fn run_child(name: &str, arg: &str) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, arg)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` with every descriptor number this process may use taken: each open, socket
    /// or dup fails with EMFILE.
    pub fn exhausted<T>(f: impl FnOnce() -> T) -> T {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // The lowest free number: a limit there leaves no number to hand out.
        let lowest = nix::fcntl::fcntl(0, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)).unwrap();
        nix::unistd::close(lowest).unwrap();
        setrlimit(
            Resource::RLIMIT_NOFILE,
            u64::try_from(lowest).unwrap(),
            hard,
        )
        .unwrap();
        let out = f();
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_differ() {
        let a = random_hex(8);
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_hex(8));
    }

    #[test]
    fn ages_read_shortly() {
        assert_eq!(ago(0, 100), "never");
        assert_eq!(ago(95, 100), "5s ago");
        assert_eq!(ago(100, 100 + 180), "3m ago");
        assert_eq!(ago(100, 100 + 7200), "2h ago");
        assert_eq!(ago(100, 100 + 3 * 86_400), "3d ago");
    }

    #[test]
    fn bytes_for_humans() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_200_000), "1.2 MB");
    }

    #[test]
    fn plain_names_are_one_component() {
        for ok in ["a", "in.c-main.t.csv", ".hidden", "a b"] {
            assert_eq!(plain_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
        assert!(plain_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn removing_is_fine_with_anything_or_nothing() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("t");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path(), tree.join("link")).unwrap();
        remove_tree(&tree.join("link")).unwrap();
        assert!(d.path().exists(), "a symlink's target must survive");
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        remove_tree(&tree).unwrap();
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        remove_tree(&f).unwrap();
        assert!(!f.exists());
    }

    #[test]
    fn error_chains_read_outer_to_inner() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start container c1")]
        struct Outer(#[source] io::Error);
        let e = Outer(io::Error::other("permission denied"));
        assert_eq!(chain(&e), "cannot start container c1: permission denied");
    }
}
