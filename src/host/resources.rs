//! The words of the `Host` trait for cgroups: what this host's cgroups can limit, the limits
//! a container gets and what its cgroups measured. A leaf, so that the trait and the code
//! that reads and writes cgroups share the types without importing each other.

use std::path::PathBuf;

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
