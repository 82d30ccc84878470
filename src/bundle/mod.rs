//! The OCI runtime bundle: the `config.json` libcontainer reads, built from the image's
//! config and the job's limits.
//!
//! What goes in and why:
//! - process: Entrypoint + Cmd, the image's Env with the contract's `KBC_*` on top,
//!   WorkingDir, the image's User resolved against the image's own `/etc/passwd`;
//! - podman's default capability set (for a user other than root only as the bounding
//!   set), no new privileges, rlimits no higher than berth's own hard limits (root on
//!   hardened hosts cannot raise them, and asking fails the start);
//! - podman's default seccomp profile, compiled for that capability set, with berth's
//!   refusals of namespaces, keyrings and the kernel log (`seccomp.rs`);
//! - podman's masked and read-only paths of `/proc` and `/sys`;
//! - `/data` and `/tmp` bound from the job's working directory;
//! - new pid, mount, ipc, uts and cgroup namespaces, plus a network namespace unless the
//!   component asks for the host's;
//! - a devices cgroup that denies everything but the few devices of the container's `/dev`;
//! - the container's view of its cgroups read-only, every cgroup v1 hierarchy included;
//! - memory (swap off), cpu and pids limits, only for controllers the host has: asking for
//!   a missing one fails the container, so it is reported as not enforced instead.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

mod seccomp;
mod user;

pub use seccomp::SeccompError;
pub use user::{home_dir, resolve_user};

use crate::contract::{ErrorClass, NetworkMode};
use crate::host::{CgroupSupport, IdMap};
use crate::image::RunConfig;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("image has neither an Entrypoint nor a Cmd: nothing to run")]
    NoCommand,
    #[error("image user {user:?}: {message}")]
    User { user: String, message: String },
    #[error("invalid runtime spec")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("cannot build the seccomp filter")]
    Seccomp(#[from] SeccompError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the image's working directory {dir}")]
    WorkingDir {
        dir: String,
        #[source]
        source: crate::confined::ConfinedError,
    },
}

impl BundleError {
    /// Whose fault it is: an image that cannot run as it is (no command, a user it does not
    /// have) is a broken image, berth's side like any broken image (contract §7). Every
    /// variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            BundleError::NoCommand
            | BundleError::User { .. }
            | BundleError::Spec(_)
            | BundleError::Seccomp(_)
            | BundleError::Write { .. }
            | BundleError::WorkingDir { .. } => ErrorClass::Internal,
        }
    }
}

/// podman's default capabilities: Docker's set less MKNOD, NET_RAW and AUDIT_WRITE, which a
/// data-processing component has no use for (no device nodes, no raw packets, no audit log)
/// and which only widen what a compromised one can reach.
pub const CAPABILITIES: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

use crate::host::ALLOWED_DEVICES;

/// What of the kernel's own state a container may not see: podman's masked paths (an empty
/// read-only tmpfs over a directory, `/dev/null` over a file; a path the host lacks is
/// skipped), plus `/proc/asound` (the runtime spec's default) and `/proc/interrupts` (which
/// Docker masks since: per-CPU interrupt counts are a side channel on the host's devices
/// and activity). `/sys/dev/block` lists the host's disks; `/sys/devices/virtual/powercap`
/// exposes the energy counters of the PLATYPUS attack (CVE-2020-8694).
pub const MASKED_PATHS: [&str; 14] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
];

/// podman's read-only paths: kernel tunables a container may read but never set.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

pub use crate::host::Limits;

/// Everything that shapes one container.
#[derive(Debug)]
pub struct BundleSpec<'a> {
    pub image: &'a RunConfig,
    /// The container's root filesystem (an absolute path).
    pub root: &'a Path,
    /// Its own user namespace with these ids, or the host's (`None`).
    pub ids: Option<&'a IdMap>,
    pub user: &'a ContainerUser,
    /// `HOME`, when the image's `Env` has none (see [`home_dir`]).
    pub home: &'a str,
    /// A file bound read-only at `/etc/resolv.conf` (for a network with its own resolver).
    pub resolv_conf: Option<&'a Path>,
    pub env: &'a [(String, String)],
    pub data_dir: &'a Path,
    pub tmp_dir: &'a Path,
    pub hostname: &'a str,
    pub network: NetworkMode,
    pub limits: &'a Limits,
    pub cgroups_path: &'a str,
    pub cgroups: &'a CgroupSupport,
    pub nofile_limit: u64,
    /// The largest file the container may write (`RLIMIT_FSIZE`): its disk cap, so no
    /// single write or `fallocate` takes more at once than the watchdog allows in all.
    pub file_size_limit: u64,
    /// The container has one id (a rootless operator without subordinate ids): no mount
    /// may name another, as `/dev/pts` does its `tty` group.
    pub single_id: bool,
    pub seccomp: crate::contract::Seccomp,
}

/// The image's working directory, absolute (`/` when it names none).
fn working_dir(image: &RunConfig) -> String {
    match image.working_dir.as_deref() {
        None | Some("") => "/".to_owned(),
        Some(d) if d.starts_with('/') => d.to_owned(),
        Some(d) => format!("/{d}"),
    }
}

/// Creates the image's working directory in the container's root filesystem `root` where
/// the image lacks it, owned by the container's root (`owner`, as host ids), as Docker and
/// podman do: images built with a `WORKDIR` their layers never create run unchanged. The
/// image's own tree is walked without following its links.
pub fn ensure_working_dir(
    root: &Path,
    image: &RunConfig,
    owner: (u32, u32),
) -> Result<(), BundleError> {
    let dir = working_dir(image);
    let err = |source| BundleError::WorkingDir {
        dir: dir.clone(),
        source,
    };
    let rel = dir.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    let top = crate::confined::Dir::open(root).map_err(err)?;
    top.create_dirs(rel, owner).map_err(err)?;
    Ok(())
}

/// Builds the runtime spec.
pub fn build(b: &BundleSpec<'_>) -> Result<Spec, BundleError> {
    let caps: HashSet<Capability> = CAPABILITIES.into_iter().collect();
    let seccomp = match b.seccomp {
        crate::contract::Seccomp::Default => Some(seccomp::default_filter(&caps)?),
        crate::contract::Seccomp::Unconfined => None,
    };
    let process = process(b, caps)?;
    let mut readonly: Vec<String> = READONLY_PATHS.map(str::to_owned).to_vec();
    readonly.extend(cgroup_readonly_paths(&b.cgroups.v1_mounts));
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(b.network, b.ids)?)
        .uid_mappings(id_mappings(b.ids.map(|m| m.uid_start), b.ids)?)
        .gid_mappings(id_mappings(b.ids.map(|m| m.gid_start), b.ids)?)
        .resources(resources(b)?)
        .cgroups_path(PathBuf::from(b.cgroups_path))
        .masked_paths(MASKED_PATHS.map(str::to_owned).to_vec())
        .readonly_paths(readonly)
        .build()?;
    linux.set_seccomp(seccomp);
    if b.cgroups.rootless {
        // libcontainer's v1 manager writes device rules with any resources, which only real
        // root may: berth writes the limits itself once the container is created, and the
        // device rules come from the parent cgroup root delegated.
        linux.set_resources(None);
    }

    let mut spec = Spec::default();
    spec.set_hostname(Some(b.hostname.to_owned()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(b.root)
            .readonly(false)
            .build()?,
    ));
    spec.set_process(Some(process));
    spec.set_mounts(Some(mounts(b)?));
    spec.set_linux(Some(linux));
    spec.set_annotations(None);
    Ok(spec)
}

/// The container's process: the image's command, environment and user, with `caps`.
fn process(b: &BundleSpec<'_>, caps: HashSet<Capability>) -> Result<Process, BundleError> {
    let mut args: Vec<String> = b.image.entrypoint.clone().unwrap_or_default();
    args.extend(b.image.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }

    let mut env: Vec<String> = b.image.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    // libcontainer's init would look HOME up in the container's /etc/passwd, which the
    // image controls (a FIFO there blocks the container before any timeout applies).
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", b.home));
    }
    for (k, v) in b.env {
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
        env.push(format!("{k}={v}"));
    }

    let cwd = working_dir(b.image);
    // As podman: a process that is not root keeps the bounding set and nothing else.
    // (The kernel would clear the sets at the image's exec anyway; without them here, not
    // even a file capability — ignored on berth's nosuid mounts today — could bring one
    // back through no_new_privileges' intersection with the permitted set.)
    let working = if b.user.uid == 0 {
        caps.clone()
    } else {
        HashSet::new()
    };

    Ok(ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(b.user.uid)
                .gid(b.user.gid)
                .additional_gids(b.user.additional_gids.clone())
                .build()?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps)
                .effective(working.clone())
                .permitted(working)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(b.nofile_limit)
                .hard(b.nofile_limit)
                .build()?,
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitFsize)
                .soft(b.file_size_limit)
                .hard(b.file_size_limit)
                .build()?,
        ])
        .no_new_privileges(true)
        .build()?)
}

fn namespaces(
    network: NetworkMode,
    ids: Option<&IdMap>,
) -> Result<Vec<LinuxNamespace>, BundleError> {
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ];
    if network != NetworkMode::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if ids.is_some() {
        namespaces.push(LinuxNamespaceType::User);
    }
    Ok(namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()?)
}

/// Container ids 0..size as host ids start..start+size; nothing without a user namespace.
fn id_mappings(
    start: Option<u32>,
    ids: Option<&IdMap>,
) -> Result<Vec<LinuxIdMapping>, BundleError> {
    let (Some(start), Some(ids)) = (start, ids) else {
        return Ok(Vec::new());
    };
    Ok(vec![
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(start)
            .size(ids.size)
            .build()?,
    ])
}

/// Limits for the controllers the host has, and the devices rules.
fn resources(b: &BundleSpec<'_>) -> Result<LinuxResources, BundleError> {
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules()?);
    if b.cgroups.memory.is_some() {
        let bytes = i64::try_from(b.limits.memory_bytes).unwrap_or(i64::MAX);
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                // memory+swap equal to memory: no swap.
                .swap(bytes)
                .build()?,
        );
    }
    if b.cgroups.cpu {
        let period: u64 = 100_000;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(crate::host::cpu_quota(b.limits.cpus, period))
                .build()?,
        );
    }
    if b.cgroups.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(b.limits.pids).build()?);
    }
    Ok(resources.build()?)
}

/// Deny every device, then allow the few a container needs. Without the deny the
/// container's devices cgroup inherits its parent's `a *:* rwm`, and the allow rules that
/// libcgroups adds by itself (the same devices, plus `mknod` of any node and tun) change
/// nothing. On cgroup v2 the rules take effect only where libcgroups is built with its
/// `cgroupsv2_devices` feature.
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, BundleError> {
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()?,
    ];
    for (major, minor) in ALLOWED_DEVICES {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        rules.push(rule.build()?);
    }
    Ok(rules)
}

/// Where the container's cgroup filesystem is mounted (the runtime's default mounts put it
/// there).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The container's cgroup filesystem, as read-only paths.
///
/// The spec's default mounts ask for `/sys/fs/cgroup` read-only, but libcontainer 0.7 drops
/// the `ro` on a cgroup v1 host: it mounts a tmpfs there and each hierarchy under it, all
/// writable (measured: a component raised its own `pids.max` from 1024 to 4096, lifted its
/// cpu quota, and made a child cgroup that kept berth from removing the container's). The
/// runtime remounts each read-only path on its own (a remount does not reach submounts), so
/// the tmpfs and every hierarchy are listed, as libcontainer names them: the last part of
/// the host's mount point, for every one under `/sys/fs/cgroup`. On cgroup v2 the list is
/// the root alone, which libcontainer already mounts read-only.
fn cgroup_readonly_paths(host_mounts: &[PathBuf]) -> Vec<String> {
    let mut paths = vec![CGROUP_ROOT.to_owned()];
    for mount in host_mounts {
        let name = mount
            .strip_prefix(CGROUP_ROOT)
            .ok()
            .and_then(|rest| rest.to_str())
            .filter(|rest| !rest.is_empty() && !rest.contains('/'));
        if let Some(name) = name {
            paths.push(format!("{CGROUP_ROOT}/{name}"));
        }
    }
    paths
}

/// The runtime's default mounts, plus `/data` and `/tmp` from the job's directory.
fn mounts(b: &BundleSpec<'_>) -> Result<Vec<Mount>, BundleError> {
    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    if b.single_id {
        for m in mounts.iter_mut() {
            let options = m.options().clone().unwrap_or_default();
            m.set_options(Some(
                options
                    .into_iter()
                    .filter(|o| !o.starts_with("gid="))
                    .collect(),
            ));
        }
    }
    // A rootless berth's containers are in its user namespace (see `host::userns`).
    let in_userns = b.ids.is_some() || b.cgroups.rootless;
    if in_userns && b.network == NetworkMode::Host {
        // The kernel lets a user namespace mount sysfs only with a network namespace of its
        // own; with the host's network the host's /sys is bound in, read-only (what
        // Docker's userns-remap does for --net=host).
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/sys"))
        {
            *m = MountBuilder::default()
                .destination("/sys")
                .typ("bind")
                .source("/sys")
                .options(
                    ["rbind", "ro", "nosuid", "noexec", "nodev"]
                        .map(str::to_owned)
                        .to_vec(),
                )
                .build()?;
        }
    }
    for (dest, src) in [("/data", b.data_dir), ("/tmp", b.tmp_dir)] {
        mounts.push(
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(src)
                .options(vec![
                    "rbind".to_owned(),
                    "rw".to_owned(),
                    "nosuid".to_owned(),
                    "nodev".to_owned(),
                ])
                .build()?,
        );
    }
    if let Some(resolv) = b.resolv_conf {
        mounts.push(
            MountBuilder::default()
                .destination("/etc/resolv.conf")
                .typ("bind")
                .source(resolv)
                .options(
                    ["rbind", "ro", "nosuid", "nodev", "noexec"]
                        .map(str::to_owned)
                        .to_vec(),
                )
                .build()?,
        );
    }
    Ok(mounts)
}

/// Writes the spec as `config.json` into the bundle directory.
pub fn write(spec: &Spec, bundle: &Path) -> Result<(), BundleError> {
    let path = bundle.join("config.json");
    let json = serde_json::to_vec(spec).map_err(|e| BundleError::Write {
        path: path.clone(),
        source: e.into(),
    })?;
    fs::write(&path, json).map_err(|source| BundleError::Write { path, source })
}

/// A hostname from a component id: lowercase letters, digits and dashes, at most 63.
pub fn hostname_for(component_id: &str) -> String {
    let mut h: String = component_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    h = h.trim_matches('-').to_owned();
    if h.is_empty() { "berth".to_owned() } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_spec<'a>(
        image: &'a RunConfig,
        user: &'a ContainerUser,
        env: &'a [(String, String)],
        limits: &'a Limits,
        cgroups: &'a CgroupSupport,
        network: NetworkMode,
    ) -> BundleSpec<'a> {
        BundleSpec {
            image,
            root: Path::new("/run/bundles/c1/rootfs"),
            ids: None,
            user,
            home: "/root",
            resolv_conf: None,
            env,
            data_dir: Path::new("/jobs/1/data"),
            tmp_dir: Path::new("/jobs/1/tmp"),
            hostname: "acme-hello",
            network,
            limits,
            cgroups_path: "/berth/c1",
            cgroups,
            nofile_limit: 20_000,
            file_size_limit: 10_000_000_000,
            single_id: false,
            seccomp: crate::contract::Seccomp::Default,
        }
    }

    #[test]
    fn spec_carries_command_env_mounts_and_limits() {
        let image = RunConfig {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo hi".into()]),
            env: Some(vec!["PATH=/bin".into(), "KBC_RUNID=spoofed".into()]),
            working_dir: Some("app".into()),
            user: None,
        };
        let user = ContainerUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        let env = vec![("KBC_RUNID".to_owned(), "r1".to_owned())];
        let limits = Limits {
            memory_bytes: 256_000_000,
            cpus: 1.5,
            pids: 1024,
        };
        let cgroups = CgroupSupport {
            memory: Some("/m".into()),
            memory_v2: false,
            pids: true,
            cpu: true,
            v1_mounts: Vec::new(),
            ..CgroupSupport::default()
        };
        let spec = build(&bundle_spec(
            &image,
            &user,
            &env,
            &limits,
            &cgroups,
            NetworkMode::None,
        ))
        .unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &vec!["/bin/sh", "-c", "echo hi"]
        );
        let penv = p.env().as_ref().unwrap();
        assert!(penv.contains(&"KBC_RUNID=r1".to_owned()));
        assert!(!penv.contains(&"KBC_RUNID=spoofed".to_owned()));
        assert!(penv.contains(&"PATH=/bin".to_owned()));
        assert_eq!(p.cwd(), &PathBuf::from("/app"));
        let rlimits = p.rlimits().as_ref().unwrap();
        assert_eq!(rlimits[0].hard(), 20_000);
        assert_eq!(rlimits[1].typ(), PosixRlimitType::RlimitFsize);
        assert_eq!(
            (rlimits[1].soft(), rlimits[1].hard()),
            (10_000_000_000, 10_000_000_000)
        );
        let mounts = spec.mounts().as_ref().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert_eq!(data.source().as_deref(), Some(Path::new("/jobs/1/data")));
        let linux = spec.linux().as_ref().unwrap();
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(256_000_000));
        assert_eq!(r.memory().as_ref().unwrap().swap(), Some(256_000_000));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(150_000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 1024);
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/c1"))
        );
        // Rootless: libcontainer would write device rules; berth writes the limits itself.
        let rootless = CgroupSupport {
            rootless: true,
            ..cgroups
        };
        let spec = build(&bundle_spec(
            &image,
            &user,
            &env,
            &limits,
            &rootless,
            NetworkMode::None,
        ))
        .unwrap();
        assert!(spec.linux().as_ref().unwrap().resources().is_none());
    }

    #[test]
    fn host_network_and_missing_controllers() {
        let image = RunConfig {
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        };
        let user = ContainerUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        let limits = Limits {
            memory_bytes: 1,
            cpus: 1.0,
            pids: 1,
        };
        let none = CgroupSupport::default();
        let spec = build(&bundle_spec(
            &image,
            &user,
            &[],
            &limits,
            &none,
            NetworkMode::Host,
        ))
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            !linux
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network)
        );
        let r = linux.resources().as_ref().unwrap();
        assert!(r.memory().is_none() && r.pids().is_none() && r.cpu().is_none());
    }

    #[test]
    fn an_image_without_a_command_is_refused() {
        let user = ContainerUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        let limits = Limits {
            memory_bytes: 1,
            cpus: 1.0,
            pids: 1,
        };
        let e = build(&bundle_spec(
            &RunConfig::default(),
            &user,
            &[],
            &limits,
            &CgroupSupport::default(),
            NetworkMode::None,
        ))
        .unwrap_err();
        assert!(matches!(e, BundleError::NoCommand));
    }

    fn root_user() -> ContainerUser {
        ContainerUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        }
    }

    fn some_limits() -> Limits {
        Limits {
            memory_bytes: 1,
            cpus: 1.0,
            pids: 1,
        }
    }

    fn minimal_spec() -> Spec {
        let image = RunConfig {
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        };
        build(&bundle_spec(
            &image,
            &root_user(),
            &[],
            &some_limits(),
            &CgroupSupport::default(),
            NetworkMode::None,
        ))
        .unwrap()
    }

    #[test]
    fn capabilities_are_podmans_eleven_and_never_inherited() {
        use Capability as C;
        let spec = minimal_spec();
        let process = spec.process().as_ref().unwrap();
        let caps = process.capabilities().as_ref().unwrap();
        let expected: HashSet<Capability> = [
            C::Chown,
            C::DacOverride,
            C::Fowner,
            C::Fsetid,
            C::Kill,
            C::NetBindService,
            C::Setfcap,
            C::Setgid,
            C::Setpcap,
            C::Setuid,
            C::SysChroot,
        ]
        .into_iter()
        .collect();
        assert_eq!(caps.bounding().as_ref(), Some(&expected));
        assert_eq!(caps.effective().as_ref(), Some(&expected));
        assert_eq!(caps.permitted().as_ref(), Some(&expected));
        assert_eq!(caps.inheritable().as_ref(), Some(&HashSet::new()));
        assert_eq!(caps.ambient().as_ref(), Some(&HashSet::new()));
        for dropped in [C::Mknod, C::NetRaw, C::AuditWrite, C::SysAdmin] {
            assert!(!expected.contains(&dropped));
        }
        assert_eq!(process.no_new_privileges(), Some(true));
    }

    #[test]
    fn a_non_root_user_keeps_only_the_bounding_set() {
        let image = RunConfig {
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        };
        let user = ContainerUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        };
        let spec = build(&bundle_spec(
            &image,
            &user,
            &[],
            &some_limits(),
            &CgroupSupport::default(),
            NetworkMode::None,
        ))
        .unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let none = HashSet::new();
        assert_eq!(caps.effective().as_ref(), Some(&none));
        assert_eq!(caps.permitted().as_ref(), Some(&none));
        assert_eq!(caps.ambient().as_ref(), Some(&none));
        assert_eq!(caps.inheritable().as_ref(), Some(&none));
        assert_eq!(
            caps.bounding().as_ref(),
            Some(&CAPABILITIES.into_iter().collect())
        );
    }

    #[test]
    fn podmans_paths_are_masked_and_read_only() {
        let linux = minimal_spec().linux().clone().unwrap();
        let masked = linux.masked_paths().clone().unwrap();
        for p in [
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
            "/sys/dev/block",
            "/sys/fs/selinux",
            "/proc/interrupts",
        ] {
            assert!(masked.iter().any(|m| m == p), "{p} not masked: {masked:?}");
        }
        let readonly = linux.readonly_paths().clone().unwrap();
        assert!(readonly.starts_with(&READONLY_PATHS.map(str::to_owned)));
    }

    #[test]
    fn devices_are_denied_but_for_the_minimal_set() {
        // Also with no controller to limit: the devices rules do not depend on them.
        let spec = minimal_spec();
        let resources = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let rules: Vec<(bool, String)> = resources
            .devices()
            .iter()
            .flatten()
            .map(|d| (d.allow(), d.to_string()))
            .collect();
        let allow = |r: &str| (true, r.to_owned());
        assert_eq!(
            rules,
            vec![
                (false, "a *:* rwm".to_owned()),
                allow("c 1:3 rwm"),
                allow("c 1:5 rwm"),
                allow("c 1:7 rwm"),
                allow("c 1:8 rwm"),
                allow("c 1:9 rwm"),
                allow("c 5:0 rwm"),
                allow("c 5:2 rwm"),
                allow("c 136:* rwm"),
            ]
        );
    }

    #[test]
    fn every_cgroup_v1_hierarchy_is_read_only() {
        let host: Vec<PathBuf> = [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/cpu,cpuacct",
            "/sys/fs/cgroup/systemd",
            // libcontainer mounts none of these: not under /sys/fs/cgroup, or nested.
            "/run/other/cgroup/pids",
            "/sys/fs/cgroup/deep/er",
            "/sys/fs/cgroup",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            cgroup_readonly_paths(&host),
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/systemd",
            ]
        );
        // cgroup v2: the root alone.
        assert_eq!(cgroup_readonly_paths(&[]), ["/sys/fs/cgroup"]);
        // The spec keeps the runtime's read-only paths and adds the host's hierarchies.
        let image = RunConfig {
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        };
        let cgroups = CgroupSupport {
            v1_mounts: host.clone(),
            ..Default::default()
        };
        let spec = build(&bundle_spec(
            &image,
            &root_user(),
            &[],
            &some_limits(),
            &cgroups,
            NetworkMode::None,
        ))
        .unwrap();
        let readonly = spec
            .linux()
            .as_ref()
            .unwrap()
            .readonly_paths()
            .clone()
            .unwrap();
        let defaults = READONLY_PATHS.map(str::to_owned);
        assert!(readonly.starts_with(&defaults), "{readonly:?}");
        assert_eq!(readonly[defaults.len()..], cgroup_readonly_paths(&host));
    }

    #[test]
    fn hostnames_are_sanitised() {
        assert_eq!(hostname_for("keboola.ex-db_mysql"), "keboola-ex-db-mysql");
        assert_eq!(hostname_for("..."), "berth");
        assert_eq!(hostname_for(&"a".repeat(100)).len(), 63);
    }
}
