//! Running one container: create, start, stream its output, wait (with a deadline), and
//! remove it.
//!
//! [`Runtime`] is the seam: [`Youki`] drives youki's libcontainer (the only caller of it in
//! berth), and `fake::FakeRuntime` stands in for it in tests that must run without root. A
//! container exists from a successful [`Runtime::run`] until [`Runtime::delete`]; when `run`
//! fails, nothing of the container is left.
//!
//! libcontainer's traps, and what [`Youki`] does about them (see
//! `shared/reference/libcontainer.md`):
//! - an empty or `/` cgroups path makes a failed build or a delete SIGKILL every process in
//!   berth's own cgroup: the host computes the path (below berth's own cgroup, or `/berth`,
//!   never berth's own or one above it, see `host::nest`), and the runtime accepts only an
//!   absolute path whose last part is the container's id;
//! - `build()` and `start()` `chdir` the whole process: they run under one lock, and berth's
//!   working directory is restored afterwards;
//! - a failure between create and start leaves init blocked forever: the container is
//!   deleted on every path out of `run`;
//! - OOM kills are only visible in the cgroup, which `delete()` removes: they are read first;
//! - a new network namespace has `lo` down: between create and start it is brought up, and
//!   connected to the outside when the job asks for it (through the host seam, which
//!   starts pasta); what connects it is stopped as soon as the container has ended.
//!
//! Beyond libcontainer, the wait loop watches what the container writes to disk
//! ([`DiskWatch`]) and kills it past its cap.

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
pub mod output;
mod supervise;
mod youki;

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use crate::host::Network;
pub use youki::Youki;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "refusing cgroups path {0:?}: it must be an absolute path ending in the container's id"
    )]
    UnsafeCgroupPath(String),
    #[error("cannot create container {id}")]
    Create {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot start container {id}")]
    Start {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("container {id}: {what} failed")]
    Wait {
        id: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot kill container {id}")]
    Kill {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot remove container {id}")]
    Delete {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("container {0} is not known to this berth")]
    Unknown(String),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("cannot open {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How the container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: a signal N reads as 128+N.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// One container to run.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    pub id: &'a str,
    /// Directory with `config.json` (whose `root.path` names the rootfs).
    pub bundle: &'a Path,
    /// Where libcontainer keeps container state.
    pub state_root: &'a Path,
    pub cgroups_path: &'a str,
    /// Written into the cgroup by berth where libcontainer cannot (rootless).
    pub limits: crate::host::Limits,
    pub timeout: Duration,
    /// How long a stopped container (at its timeout, or interrupted) has between SIGTERM
    /// and SIGKILL.
    pub stop_grace: Duration,
    /// How the container's network namespace is connected (whether it has one of its own
    /// is the bundle's choice; [`Network::Host`] asks for nothing).
    pub network: Network,
    /// What the container may write to disk, watched while it runs.
    pub disk: Option<&'a DiskWatch>,
}

/// The directories a container writes to on the host (its data folder, `/tmp`, its
/// rootfs's upper directory) and how much they may grow: measured while it runs (every
/// second at most, less often when a measurement takes long) and once more after it
/// ended; the container is killed when they hold more than `baseline + cap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskWatch {
    pub dirs: Vec<std::path::PathBuf>,
    /// What they held before the container started.
    pub baseline: u64,
    pub cap: u64,
}

/// A container that wrote more than its disk cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskExceeded {
    /// What it added, in bytes (as far as measured).
    pub written: u64,
    /// It nested directories deeper than berth measures ([`crate::confined::MAX_USAGE_DEPTH`]).
    pub too_deep: bool,
}

impl DiskWatch {
    /// What the directories hold now: bytes, and whether a tree was too deep to measure. A
    /// directory that cannot be measured counts nothing (logged).
    pub fn measure(&self) -> crate::confined::Usage {
        let mut total = crate::confined::Usage::default();
        for dir in &self.dirs {
            match crate::confined::disk_usage(dir) {
                Ok(u) => {
                    total.bytes = total.bytes.saturating_add(u.bytes);
                    total.too_deep |= u.too_deep;
                }
                Err(e) => tracing::warn!("cannot measure {}: {e}", dir.display()),
            }
        }
        total
    }

    /// Whether the container has gone past its cap.
    pub fn exceeded(&self) -> Option<DiskExceeded> {
        let usage = self.measure();
        let written = usage.bytes.saturating_sub(self.baseline);
        (written > self.cap || usage.too_deep).then_some(DiskExceeded {
            written,
            too_deep: usage.too_deep,
        })
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: ExitStatus,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// The cgroup could tell whether the OOM killer struck (it has a memory controller).
    pub oom_known: bool,
    pub interrupted: bool,
    /// Killed (or found, once it ended) past its disk cap.
    pub disk_exceeded: Option<DiskExceeded>,
    /// What its cgroups measured, read before they were removed.
    pub usage: crate::host::CgroupUsage,
    pub stdout_tail: String,
    pub stderr: String,
}

/// Runs containers. Implementations are shared between threads: a job removes one container
/// while it collects the outputs of the same row.
pub trait Runtime: fmt::Debug + Send + Sync {
    /// Creates and starts the container, passes each stdout line to `on_line` as it arrives,
    /// and waits for it to end (SIGKILL at the deadline, or when the operator interrupts).
    /// On success the ended container still exists, for [`Runtime::delete`]; on failure
    /// nothing of it is left.
    fn run(
        &self,
        req: &RunRequest<'_>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<RunOutcome, RuntimeError>;

    /// Removes a container `run` left: its processes, cgroups and state.
    fn delete(&self, id: &str) -> Result<(), RuntimeError>;

    /// Removes a container left behind by a berth that died: kills whatever still runs in
    /// its cgroups (`cgroups`: its directories, one per hierarchy, as the host names them)
    /// and removes them and its state, even when the state is unreadable.
    fn remove_orphan(
        &self,
        state_root: &Path,
        id: &str,
        cgroups: &[std::path::PathBuf],
    ) -> Result<(), RuntimeError>;
}

/// Accepts the cgroups path of container `id` only when it is absolute, names no `.`, `..`
/// or empty part, and ends in `id` below at least one parent: libcontainer kills every
/// process of the cgroup it names when it removes the container.
fn check_cgroups_path(path: &str, id: &str) -> Result<(), RuntimeError> {
    let refuse = || RuntimeError::UnsafeCgroupPath(path.to_owned());
    let rest = path.strip_prefix('/').ok_or_else(refuse)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let plain = parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != "..");
    if !plain || parts.last() != Some(&id) || id.is_empty() {
        return Err(refuse());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_paths_ending_in_the_id_are_accepted() {
        assert!(check_cgroups_path("/berth/abc-1", "abc-1").is_ok());
        assert!(check_cgroups_path("/berth-u1001/abc-1", "abc-1").is_ok());
        assert!(check_cgroups_path("/slurm/job_7/step_0/abc-1", "abc-1").is_ok());
        // A view's path: the parent is every mount's top.
        assert!(check_cgroups_path("/abc-1", "abc-1").is_ok());
        for bad in [
            "",
            "/",
            "/berth",
            "/berth/",
            "/berth/../abc-1",
            "/berth/./abc-1",
            "//abc-1",
            "berth/abc-1",
            "/berth/abc-1/x",
            "/berth/abc-2",
        ] {
            assert!(
                check_cgroups_path(bad, "abc-1").is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(check_cgroups_path("/", "").is_err());
    }

    #[test]
    fn signals_read_as_128_plus_n() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(9).code(), 137);
    }
}
