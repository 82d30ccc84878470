//! What the host's operations fail with, in a leaf: the `Host` trait returns it, and so do
//! the helpers (cgroups, network, fence) its implementation calls.

use std::path::PathBuf;

use super::nest::NestError;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot mount overlay at {target}")]
    Overlay {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot give berth a private mount namespace")]
    IsolateMounts(#[source] std::io::Error),
    #[error("cannot mount a tmpfs at {target}")]
    Tmpfs {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bring loopback up in the network namespace of pid {pid}")]
    Loopback {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("path {0} cannot be used in an overlay mount (it contains ',' or ':')")]
    OverlayPath(PathBuf),
    #[error("cannot empty cgroup {path}: {detail}")]
    CgroupBusy { path: PathBuf, detail: String },
    #[error("cannot set {file} of cgroup {path}")]
    Limit {
        path: PathBuf,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nest(#[from] NestError),
    #[error(
        "refusing to empty cgroup {0}: it is outside the cgroup filesystems, a hierarchy's \
         root, or holds berth itself"
    )]
    OwnCgroup(PathBuf),
    #[error("cannot prepare cgroup {path} for containers")]
    NestDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make pid {pid} the OOM killer's first choice")]
    OomScore {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network mode \"bridge\" needs pasta, which is not installed (apt-get install passt)")]
    PastaMissing(#[source] std::io::Error),
    #[error("cannot prepare {dir} to connect the network namespace of pid {pid}")]
    NetworkScratch {
        pid: i32,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start pasta ({program})")]
    PastaSpawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pasta could not connect the network namespace of pid {pid}: {detail}")]
    PastaFailed { pid: i32, detail: String },
    #[error("cannot fence the network namespace of pid {pid} off the host's addresses")]
    Fence {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("pasta did not connect the network namespace of pid {pid} within {waited:?}")]
    PastaTimeout {
        pid: i32,
        waited: std::time::Duration,
    },
}

impl HostError {
    /// True when the kernel refused overlayfs itself (not supported here, not permitted),
    /// as opposed to a broken path: the caller may fall back to copying.
    pub fn overlay_refused(&self) -> bool {
        match self {
            HostError::Overlay { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EINVAL | libc::EPERM | libc::ENODEV | libc::EOPNOTSUPP | libc::EACCES)
            ),
            _ => false,
        }
    }
}
