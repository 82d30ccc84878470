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
mod error;
pub mod fence;
pub mod ids;
pub mod inherited;
mod linux;
mod mountinfo;
pub mod nest;
pub mod network;
pub mod procs;
mod resources;
pub mod userns;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

use std::fmt;
use std::path::{Path, PathBuf};

pub use error::HostError;
pub use ids::IdMap;
pub use linux::LinuxHost;
pub use network::{Network, NetworkGuard};
pub use resources::{ALLOWED_DEVICES, CgroupSupport, CgroupUsage, Limits, cpu_quota};
pub use userns::Rootless;

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
