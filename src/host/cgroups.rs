//! cgroups on the real kernel: which controllers exist, the OOM counter of a container, and
//! removing a container's cgroups with everything still running in them.
//!
//! Works on v1, v2 and this host class's hybrid layout (v1 controllers plus a cgroup2 mount
//! at `/sys/fs/cgroup/unified`): a container's cgroup is a directory of the same name in
//! every hierarchy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{CgroupSupport, CgroupUsage, HostError};

/// How many freeze-kill-thaw rounds a removal tries before it gives up on a cgroup.
const KILL_ROUNDS: u32 = 200;

/// The pause between two rounds: enough for SIGKILLed processes to exit.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// Finds where limits can land. Parsing mountinfo several times: call once and keep it.
pub(super) fn discover() -> CgroupSupport {
    use libcgroups::common::{CgroupSetup, get_cgroup_setup};
    use libcgroups::v1::ControllerType;
    use libcgroups::v1::util::get_subsystem_mount_point;
    match get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => {
            let root = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT);
            let controllers =
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            CgroupSupport {
                memory: has("memory").then(|| root.to_owned()),
                memory_v2: true,
                unified: true,
                pids: has("pids"),
                cpu: has("cpu"),
                ..CgroupSupport::default()
            }
        }
        Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid) => CgroupSupport {
            memory: get_subsystem_mount_point(&ControllerType::Memory).ok(),
            memory_v2: false,
            pids: get_subsystem_mount_point(&ControllerType::Pids).is_ok(),
            cpu: get_subsystem_mount_point(&ControllerType::Cpu).is_ok(),
            v1_mounts: libcgroups::v1::util::list_subsystem_mount_points().unwrap_or_else(|e| {
                tracing::warn!("cannot list the cgroup v1 hierarchies ({e})");
                Vec::new()
            }),
            ..CgroupSupport::default()
        },
        Err(_) => CgroupSupport::default(),
    }
}

/// Every directory a cgroup named `path` can have: one per v1 hierarchy, plus v2's.
pub(super) fn dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let root = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT);
    let mut dirs: Vec<PathBuf> = libcgroups::v1::util::list_subsystem_mount_points()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.join(rel))
        .collect();
    dirs.push(root.join(rel));
    dirs.push(root.join("unified").join(rel));
    dirs.sort();
    dirs.dedup();
    dirs
}

pub(super) fn children(places: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = places
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

pub(super) fn oom_kills(support: &CgroupSupport, path: &str) -> Option<u64> {
    let dir = support.memory.as_ref()?.join(path.trim_start_matches('/'));
    let file = if support.memory_v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    let text = fs::read_to_string(dir.join(file)).ok()?;
    keyed(&text, "oom_kill")
}

/// What the container's cgroups measured: on cgroup v2 `memory.peak`, `cpu.stat` and
/// `pids.peak` of its one directory; on v1 (and the hybrid layout) `memory.max_usage_in_bytes`,
/// `cpuacct.usage_user`/`usage_sys` and `pids.peak`, each in its controller's hierarchy.
pub(super) fn usage(support: &CgroupSupport, path: &str) -> CgroupUsage {
    use libcgroups::v1::ControllerType;
    use libcgroups::v1::util::get_subsystem_mount_point;
    let rel = path.trim_start_matches('/');
    if support.unified {
        let dir = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT).join(rel);
        let stat = fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
        return CgroupUsage {
            memory_peak: read_number(&dir.join("memory.peak")),
            cpu_user_us: keyed(&stat, "user_usec"),
            cpu_system_us: keyed(&stat, "system_usec"),
            pids_peak: read_number(&dir.join("pids.peak")),
        };
    }
    let dir = |c: ControllerType| get_subsystem_mount_point(&c).ok().map(|m| m.join(rel));
    let file = |c: ControllerType, name: &str| dir(c).and_then(|d| read_number(&d.join(name)));
    let micros = |ns: u64| ns / 1000;
    CgroupUsage {
        memory_peak: file(ControllerType::Memory, "memory.max_usage_in_bytes"),
        cpu_user_us: file(ControllerType::CpuAcct, "cpuacct.usage_user").map(micros),
        cpu_system_us: file(ControllerType::CpuAcct, "cpuacct.usage_sys").map(micros),
        pids_peak: file(ControllerType::Pids, "pids.peak"),
    }
}

/// A cgroup file holding one number.
fn read_number(file: &Path) -> Option<u64> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The directories, with every cgroup below them.
fn tree_of(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut tree: Vec<PathBuf> = Vec::new();
    for d in dirs.iter().filter(|d| d.is_dir()) {
        collect_tree(d, &mut tree);
    }
    tree
}

/// Refuses to empty a hierarchy's root, a directory outside the cgroup filesystems, and one
/// that holds berth's own cgroup: emptying is SIGKILL to every process found there.
fn check_dirs(dirs: &[PathBuf]) -> Result<(), HostError> {
    let root = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT);
    let hierarchies = super::nest::current();
    let own: Vec<PathBuf> = hierarchies.iter().filter_map(|h| h.dir(&h.own)).collect();
    for d in dirs {
        let normal = d.is_absolute()
            && d.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::RootDir
                )
            });
        let mount = d == root || hierarchies.iter().any(|h| h.mount == *d);
        if !normal || mount || !d.starts_with(root) || own.iter().any(|o| o.starts_with(d)) {
            return Err(HostError::OwnCgroup(d.clone()));
        }
    }
    Ok(())
}

/// Kills every process of the cgroup `path`, in every hierarchy, until none is left.
pub(super) fn kill_all(path: &str) -> Result<(), HostError> {
    let dirs = dirs(path);
    check_dirs(&dirs)?;
    let tree = tree_of(&dirs);
    if tree.is_empty() {
        return Ok(());
    }
    empty(path, &tree)
}

/// Empties the cgroup directories and removes them, children first.
pub(super) fn remove(dirs: &[PathBuf]) -> Result<(), HostError> {
    check_dirs(dirs)?;
    let mut tree = tree_of(dirs);
    let Some(first) = dirs.first() else {
        return Ok(());
    };
    if tree.is_empty() {
        return Ok(());
    }
    empty(&first.display().to_string(), &tree)?;
    // Deepest first: a cgroup with children cannot be removed.
    tree.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &tree {
        remove_dir(d)?;
    }
    Ok(())
}

/// `dir` and every cgroup below it.
fn collect_tree(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_tree(&entry.path(), out);
        }
    }
}

/// Kills until no process is left: v2's `cgroup.kill` where the kernel has it, and on v1 a
/// frozen cgroup, so nothing forks between reading the pids and killing them.
fn empty(path: &str, tree: &[PathBuf]) -> Result<(), HostError> {
    for d in tree {
        let kill_file = d.join("cgroup.kill");
        if kill_file.is_file() {
            let _ = fs::write(kill_file, "1");
        }
    }
    let freezer = tree.iter().find(|d| d.join("freezer.state").is_file());
    for _ in 0..KILL_ROUNDS {
        let pids = pids_in(tree);
        if pids.is_empty() {
            return Ok(());
        }
        set_freezer(freezer, "FROZEN");
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        set_freezer(freezer, "THAWED");
        std::thread::sleep(ROUND_PAUSE);
    }
    Err(HostError::CgroupBusy {
        path: PathBuf::from(path),
        detail: format!(
            "processes still running after {KILL_ROUNDS} rounds of SIGKILL: {:?}",
            pids_in(tree)
        ),
    })
}

fn set_freezer(freezer: Option<&PathBuf>, state: &str) {
    if let Some(f) = freezer {
        let _ = fs::write(f.join("freezer.state"), state);
    }
}

fn pids_in(tree: &[PathBuf]) -> Vec<Pid> {
    let mut pids: Vec<Pid> = tree
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// rmdir, retried briefly: the kernel may still be tearing down the last process.
fn remove_dir(dir: &Path) -> Result<(), HostError> {
    let mut last = None;
    for attempt in 0..10u32 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(ROUND_PAUSE * (attempt + 1));
    }
    Err(HostError::Cgroup {
        path: dir.to_owned(),
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::TimedOut)),
    })
}

/// What a rootless operator's containers can have: limits only in hierarchies where
/// containers' parents (`nest`: the delegated `berth-u<uid>` of `berth setup-rootless`, or
/// berth's own cgroup where it may write to it) are the operator's; the rest is reported.
pub(super) fn delegated(base: CgroupSupport, nest: &super::nest::Nest) -> CgroupSupport {
    use libcgroups::v1::ControllerType;
    use libcgroups::v1::util::get_subsystem_mount_point;
    // libcgroups' own list (not exported): the hierarchies its v1 manager joins.
    const CONTROLLERS: [ControllerType; 12] = [
        ControllerType::Cpu,
        ControllerType::CpuAcct,
        ControllerType::CpuSet,
        ControllerType::Devices,
        ControllerType::HugeTlb,
        ControllerType::Memory,
        ControllerType::Pids,
        ControllerType::PerfEvent,
        ControllerType::Blkio,
        ControllerType::NetworkPriority,
        ControllerType::NetworkClassifier,
        ControllerType::Freezer,
    ];
    // The parent's directory below a mount (the top-level name where berth has no place
    // there, which only a hierarchy it does not join lacks).
    let parent_dir = |mount: &Path| {
        nest.places
            .iter()
            .find(|p| p.hierarchy.mount == mount)
            .and_then(super::nest::Place::dir)
            .unwrap_or_else(|| mount.join("berth"))
    };
    let writable = |dir: &Path| nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok();
    if base.memory_v2 {
        let ok = base
            .memory
            .as_deref()
            .is_some_and(|m| writable(&parent_dir(m)));
        return CgroupSupport {
            memory: base.memory.filter(|_| ok),
            pids: base.pids && ok,
            cpu: base.cpu && ok,
            rootless: true,
            ..base
        };
    }
    let mount = |c: &ControllerType| get_subsystem_mount_point(c).ok();
    let undelegated = CONTROLLERS
        .iter()
        .filter_map(mount)
        .map(|m| parent_dir(&m))
        .find(|d| !writable(d));
    let devices_open = mount(&ControllerType::Devices).is_some_and(|m| {
        let list = fs::read_to_string(parent_dir(&m).join("devices.list")).unwrap_or_default();
        list.lines().any(|l| l.trim() == "a *:* rwm")
    });
    CgroupSupport {
        rootless: true,
        undelegated,
        devices_open,
        ..base
    }
}

/// Writes the limits into the container's cgroup, in each hierarchy that has the
/// controller: what libcontainer does for root, done by berth for a rootless operator.
pub(super) fn write_limits(
    support: &CgroupSupport,
    path: &str,
    limits: &super::Limits,
) -> Result<(), HostError> {
    use libcgroups::v1::ControllerType;
    use libcgroups::v1::util::get_subsystem_mount_point;
    let rel = path.trim_start_matches('/');
    let write = |dir: &Path, file: &'static str, value: String| {
        fs::write(dir.join(file), value).map_err(|source| HostError::Limit {
            path: dir.to_owned(),
            file,
            source,
        })
    };
    let period: u64 = 100_000;
    let quota = super::cpu_quota(limits.cpus, period);
    if support.memory_v2 {
        let Some(dir) = support.memory.as_ref().map(|m| m.join(rel)) else {
            return Ok(());
        };
        write(&dir, "memory.max", limits.memory_bytes.to_string())?;
        write(&dir, "memory.swap.max", "0".into())?;
        write(&dir, "pids.max", limits.pids.to_string())?;
        return write(&dir, "cpu.max", format!("{quota} {period}"));
    }
    if let Some(dir) = support.memory.as_ref().map(|m| m.join(rel)) {
        write(
            &dir,
            "memory.limit_in_bytes",
            limits.memory_bytes.to_string(),
        )?;
        // memory+swap equal to memory: no swap; absent where swap accounting is off.
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            let bytes = limits.memory_bytes.to_string();
            write(&dir, "memory.memsw.limit_in_bytes", bytes)?;
        }
    }
    let mount = |c: &ControllerType| get_subsystem_mount_point(c).ok().map(|m| m.join(rel));
    if let Some(dir) = mount(&ControllerType::Pids).filter(|_| support.pids) {
        write(&dir, "pids.max", limits.pids.to_string())?;
    }
    if let Some(dir) = mount(&ControllerType::Cpu).filter(|_| support.cpu) {
        write(&dir, "cpu.cfs_period_us", period.to_string())?;
        write(&dir, "cpu.cfs_quota_us", quota.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emptying is SIGKILL to every process found: berth's own cgroup, one above it, a
    /// hierarchy's root and anything outside the cgroup filesystems are refused before any
    /// process is read. (The check, not `remove`, is called here: were it broken, `remove`
    /// would kill the test runner's cgroup.)
    #[test]
    fn berths_own_cgroup_and_roots_are_never_emptied() {
        let own = super::super::nest::own_dirs();
        assert!(!own.is_empty());
        let mut refused: Vec<PathBuf> = own.clone();
        refused.extend(own.iter().filter_map(|d| d.parent().map(Path::to_path_buf)));
        refused.extend(super::super::nest::current().into_iter().map(|h| h.mount));
        refused.extend(dirs("/"));
        refused.extend(
            [
                "/sys/fs/cgroup",
                "/etc",
                "/sys/fs/cgroup/memory/../../../etc",
                "relative",
            ]
            .map(PathBuf::from),
        );
        for dir in &refused {
            let e = check_dirs(std::slice::from_ref(dir)).unwrap_err();
            assert!(
                matches!(e, HostError::OwnCgroup(_)),
                "{}: {e}",
                dir.display()
            );
        }
        let child = own[0].join("berth-test-child-0");
        assert!(check_dirs(&[child]).is_ok());
    }
}
