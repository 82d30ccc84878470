//! The seam to the kernel: every mount, namespace, id and cgroup operation berth makes
//! itself goes through [`Host`].
//!
//! Two reasons for one seam. Unit tests substitute a recording fake (the `fake` module,
//! built for tests and the `test-utils` feature) to drive error paths the real kernel will
//! not produce on demand. And running as root differs from running rootless exactly here,
//! so that difference stays in one place instead of being spread through the code as
//! `if getuid() == 0`.
//!
//! (libcontainer makes its own syscalls to build the container; those stay behind the
//! `runtime` module, which is the only caller of libcontainer.)

mod cgroups;
pub mod delegate;
pub mod fence;
pub mod ids;
pub mod inherited;
mod linux;
pub mod nest;
pub mod network;
pub mod procs;
pub mod userns;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

use std::fmt;
use std::path::{Path, PathBuf};

pub use ids::IdMap;
pub use linux::LinuxHost;

/// The xattr namespace overlayfs reads its markers (an opaque directory) from here: real
/// root's `trusted.overlay.`, or, in a user namespace (a rootless berth), `user.overlay.`
/// with the overlay mounted `userxattr` — `trusted.*` needs privilege over the whole host.
pub fn overlay_xattr_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let initial = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        if initial && rustix::process::geteuid().is_root() {
            "trusted.overlay."
        } else {
            "user.overlay."
        }
    })
}
pub use network::{Network, NetworkGuard};
pub use userns::Rootless;

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
    Nest(#[from] nest::NestError),
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

/// Which cgroup hierarchy limits land in, and which controllers it offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupSupport {
    /// Where the memory controller lives, if anywhere (a v1 hierarchy or the v2 root).
    pub memory: Option<PathBuf>,
    pub memory_v2: bool,
    /// A cgroup v2 (unified) host: device rules need an eBPF program attached to the
    /// container's cgroup, which libcontainer loads only when built with its
    /// `cgroupsv2_devices` feature.
    pub unified: bool,
    pub pids: bool,
    pub cpu: bool,
    /// The cgroup v1 hierarchies' mount points (none on a v2 host): each is mounted into a
    /// container under the same name.
    pub v1_mounts: Vec<PathBuf>,
    /// Rootless on cgroup v1: limits are berth's to write after the container is created
    /// (libcontainer would also write device rules, which only real root may), and device
    /// rules come from the delegated parent.
    pub rootless: bool,
    /// Rootless on cgroup v1, a hierarchy without a cgroup delegated to the operator: no
    /// container can be created there (libcontainer joins every hierarchy it finds).
    pub undelegated: Option<PathBuf>,
    /// Rootless: the delegated parent lets containers use every device.
    pub devices_open: bool,
}

/// The character devices a container may use, as (major, minor or every minor): the nodes
/// libcontainer creates in its `/dev` (null, zero, full, random, urandom, tty) and the
/// pseudo-terminals of `/dev/pts` with their `ptmx`. Everything else is denied first (for
/// rootless operators, in the cgroup `berth setup-rootless` delegates).
pub const ALLOWED_DEVICES: [(i64, Option<i64>); 8] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// The CFS quota for `cpus` CPUs per `period` microseconds (at least 1 ms: the kernel's
/// minimum).
pub fn cpu_quota(cpus: f64, period: u64) -> i64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "a cpu count times a period of microseconds fits an i64"
    )]
    let quota = (cpus * period as f64).round() as i64;
    quota.max(1000)
}

/// What a container's cgroups measured over its life (read before they are removed);
/// `None` where this host's cgroups cannot tell (a controller missing or not delegated, a
/// kernel without the file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// The most memory it held at once, in bytes (page cache included, as the limit counts).
    pub memory_peak: Option<u64>,
    /// CPU time its processes spent in user space, in microseconds.
    pub cpu_user_us: Option<u64>,
    /// CPU time the kernel spent for them, in microseconds.
    pub cpu_system_us: Option<u64>,
    /// The most processes and threads it had at once.
    pub pids_peak: Option<u64>,
}

/// The limits a container's cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpus: f64,
    pub pids: i64,
}

impl CgroupSupport {
    /// What cannot be enforced here, in words an operator can act on.
    pub fn unenforced(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.memory.is_none() {
            missing.push("memory limit (no memory cgroup controller)");
        }
        if !self.pids {
            missing.push("process limit (no pids cgroup controller)");
        }
        if !self.cpu {
            missing.push("cpu quota (no cpu cgroup controller)");
        }
        if self.devices_open {
            missing.push("device rules (no deny-all on the delegated devices cgroup)");
        }
        if self.unified && !V2_DEVICE_FILTER {
            missing.push(
                "device rules (cgroup v2 needs libcontainer's eBPF device filter, not built in)",
            );
        }
        missing
    }
}

/// Whether berth's libcontainer is built with its `cgroupsv2_devices` feature (it is not:
/// that pulls in libbpf and needs `libelf-dev`). Without it the device rules of a cgroup v2
/// host are silently dropped; `/dev` still holds only the minimal nodes, and the mounts
/// are `nodev`, but a device node reached any other way is not refused by the cgroup.
const V2_DEVICE_FILTER: bool = false;

/// Everything berth asks of the kernel directly.
pub trait Host: fmt::Debug + Send + Sync {
    /// True when berth may set any owner and mount: root, in the initial user namespace or
    /// (rootless) in the one it re-executed itself in.
    fn privileged(&self) -> bool;

    /// Who berth is on the host when it runs for an unprivileged operator inside its own
    /// user namespace (see [`userns`]); `None` for a root operator.
    fn rootless(&self) -> Option<Rootless>;

    /// The cgroups path (libcontainer's) of container `id`: below berth's own cgroup where
    /// berth runs inside one it may write to, else below `/berth` (`/berth-u<uid>` for a
    /// rootless operator), or below `--cgroup-parent` (see [`nest`]). Never berth's own
    /// cgroup or one above it.
    fn container_cgroup(&self, id: &str) -> Result<String, HostError>;

    /// The directories, as the host names them, whose children may be this operator's
    /// containers' cgroups: where this berth creates them, and the top-level parents.
    fn cgroup_places(&self) -> Vec<PathBuf>;

    /// Readies the cgroups containers will be created below (see [`nest`]): creates their
    /// parents, gives berth its view where the parents differ between hierarchies, and on
    /// cgroup v2 moves berth into a leaf. Call once, in berth's private mount namespace,
    /// after the sweep (which needs the host's view).
    fn enter_cgroup_nest(&self) -> Result<(), HostError>;

    /// The lowest memory limit of the cgroups containers are created below, if any.
    fn memory_ceiling(&self) -> Option<nest::Ceiling>;

    /// Moves berth into a private mount namespace, so every mount it makes disappears with
    /// it even when it is killed. Must be called while berth has a single thread.
    fn isolate_mounts(&self) -> Result<(), HostError>;

    /// Mounts an overlay of the `lowers` (top first, never written) with `upper` taking
    /// every change.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), HostError>;

    /// Mounts a fresh tmpfs at `target` (for small, short-lived runtime state).
    fn mount_tmpfs(&self, target: &Path) -> Result<(), HostError>;

    /// Detaches the mount at `target`.
    fn unmount(&self, target: &Path) -> Result<(), HostError>;

    /// Mount points at or below `dir` in berth's mount namespace, deepest first.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;

    /// Brings `lo` up inside the network namespace of `pid` (libcontainer leaves it down).
    fn loopback_up(&self, pid: i32) -> Result<(), HostError>;

    /// Connects the network namespace of `pid` — a created container's init, not started
    /// yet — as `network` asks. What keeps it connected (pasta, for [`Network::Outbound`])
    /// runs as long as the returned guard lives; `scratch` is a directory that does not
    /// exist yet, for its files, which the guard removes. Call it from a thread that
    /// outlives the guard.
    fn attach_network(
        &self,
        pid: i32,
        network: Network,
        scratch: &Path,
    ) -> Result<Option<NetworkGuard>, HostError>;

    /// Writes `limits` into the cgroup `path` of a created container when the runtime could
    /// not ([`CgroupSupport::rootless`]); does nothing otherwise.
    fn limit_cgroup(&self, path: &str, limits: &Limits) -> Result<(), HostError>;

    /// Makes the process `pid` (a created container's init, not started yet) and what it
    /// forks the OOM killer's first choice: under a memory limit berth shares with its
    /// container (a Slurm job's, a unit's), the component dies when it is exhausted, not its
    /// runner. Only raises the score, which any process may; the container cannot lower it.
    fn oom_first(&self, pid: i32) -> Result<(), HostError>;

    /// The hard limit on open files berth itself runs under; no container may ask for more.
    fn hard_nofile_limit(&self) -> u64;

    /// The hard limit on the size of a file berth itself runs under (`RLIMIT_FSIZE`,
    /// usually unlimited); no container may ask for more.
    fn hard_file_size_limit(&self) -> u64;

    /// The cgroup controllers available for limits.
    fn cgroups(&self) -> CgroupSupport;

    /// How many times the OOM killer struck in the container's cgroup, if that is known.
    fn oom_kills(&self, cgroups_path: &str) -> Option<u64>;

    /// What the container's cgroup measured so far (peak memory, CPU time, peak
    /// processes): read after it ended and before it is deleted.
    fn cgroup_usage(&self, cgroups_path: &str) -> CgroupUsage;

    /// Names of the cgroups directly below the directories `places` (see
    /// [`Host::cgroup_places`]): the containers that exist, whatever state files say.
    fn cgroup_children(&self, places: &[PathBuf]) -> Vec<String>;

    /// Kills every process in the cgroup directories `dirs` (a container's, one per
    /// hierarchy) — freezing them first and repeating until they are empty, so a process
    /// that forks as fast as it is killed cannot outrun it — and removes them with every
    /// cgroup below. A missing directory is fine; a hierarchy's root, or one holding berth
    /// itself, is refused.
    fn remove_cgroup(&self, dirs: &[PathBuf]) -> Result<(), HostError>;

    /// Kills every process in the cgroup `path` as [`Host::remove_cgroup`] does, and keeps
    /// the cgroup: the way to stop a container when the runtime's own kill fails.
    fn kill_cgroup(&self, path: &str) -> Result<(), HostError>;

    /// The operator's subordinate id range (`/etc/subuid`, `/etc/subgid`), if it has one
    /// large enough for a container.
    fn subordinate_ids(&self) -> Option<IdMap>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_device_rules_are_reported_unenforced() {
        use fake::FakeHost;
        // cgroup v1: the devices controller takes the rules; nothing to report.
        let v1 = FakeHost::default().cgroups();
        assert!(!v1.unified);
        assert_eq!(v1.unenforced(), Vec::<&str>::new());
        // cgroup v2: libcontainer drops them without its eBPF device filter.
        let v2 = FakeHost {
            cgroup_v2: true,
            ..Default::default()
        }
        .cgroups();
        assert!(v2.unified);
        assert_eq!(
            v2.unenforced(),
            ["device rules (cgroup v2 needs libcontainer's eBPF device filter, not built in)"]
        );
        // Also for a rootless operator's delegated v2 cgroup.
        let rootless = CgroupSupport {
            rootless: true,
            ..v2
        };
        assert_eq!(rootless.unenforced().len(), 1);
    }
}
