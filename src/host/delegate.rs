//! `berth setup-rootless USER`: what root does once so that a rootless operator's
//! containers get limits.
//!
//! On cgroup v1 an unprivileged user cannot create cgroups, and libcontainer joins a cgroup
//! in every hierarchy it finds: without a subtree of its own, a rootless berth cannot start
//! a container at all. Root makes `berth-u<uid>` in each hierarchy and hands it to the user.
//! The devices hierarchy's copy gets berth's device rules (deny all, allow the few a
//! container needs): children inherit them and cannot widen them, so containers of a
//! rootless operator get the same device rules as a root operator's, which libcontainer could
//! not write for it. On cgroup v2, `berth-u<uid>` is made below the root with the
//! controllers enabled and delegated the v2 way (the directory and its `cgroup.procs`,
//! `cgroup.subtree_control`, `cgroup.threads`).
//!
//! It also checks what else a rootless operator needs and says how to fix what is missing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{ALLOWED_DEVICES, IdMap};

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("setup-rootless must run as root (it creates cgroups and hands them to {user})")]
    NotRoot { user: String },
    #[error("no such user {0:?}")]
    UnknownUser(String),
    #[error("{user} is root, which needs no setup")]
    Root { user: String },
    #[error("cannot delegate cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What was done and what still needs the operator's attention.
#[derive(Debug, Default)]
pub struct Report {
    pub delegated: Vec<PathBuf>,
    pub problems: Vec<String>,
}

/// Delegates a cgroup subtree to `user` and checks the rest of a rootless setup.
pub fn setup_rootless(user: &str) -> Result<Report, DelegateError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DelegateError::NotRoot {
            user: user.to_owned(),
        });
    }
    let found = nix::unistd::User::from_name(user).ok().flatten();
    let who = found.ok_or_else(|| DelegateError::UnknownUser(user.to_owned()))?;
    if who.uid.is_root() {
        return Err(DelegateError::Root {
            user: user.to_owned(),
        });
    }
    let mut report = Report::default();
    for dir in cgroup_dirs(&format!("berth-u{}", who.uid))? {
        delegate(&dir, who.uid.as_raw(), who.gid.as_raw())?;
        report.delegated.push(dir);
    }
    check_subordinate(&mut report, user, who.uid.as_raw());
    check_tools(&mut report);
    Ok(report)
}

/// Where the subtree goes: `<hierarchy>/<name>` in every v1 hierarchy with a controller,
/// or below the v2 root with its controllers enabled.
fn cgroup_dirs(name: &str) -> Result<Vec<PathBuf>, DelegateError> {
    use libcgroups::common::{CgroupSetup, DEFAULT_CGROUP_ROOT, get_cgroup_setup};
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    if matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified)) {
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let enable: Vec<String> = controllers
            .split_whitespace()
            .filter(|c| ["memory", "pids", "cpu"].contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        let control = root.join("cgroup.subtree_control");
        fs::write(&control, enable.join(" ")).map_err(|source| DelegateError::Cgroup {
            path: control,
            source,
        })?;
        return Ok(vec![root.join(name)]);
    }
    let mut mounts = libcgroups::v1::util::list_subsystem_mount_points().unwrap_or_default();
    // Named hierarchies without a controller (`name=systemd`) are not joined by anyone.
    mounts.retain(|m| {
        let last = m.file_name().map(|n| n.to_string_lossy().into_owned());
        last.is_some_and(|n| n != "systemd" && !n.starts_with("name="))
    });
    Ok(mounts.into_iter().map(|m| m.join(name)).collect())
}

/// Makes `dir` (idempotent), fills what its controller needs, and hands it to the user.
fn delegate(dir: &Path, uid: u32, gid: u32) -> Result<(), DelegateError> {
    let err = |source: io::Error| DelegateError::Cgroup {
        path: dir.to_owned(),
        source,
    };
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    // A new cpuset cgroup has no cpus or memory nodes: nothing could join it.
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if let Some(parent) = dir.parent().filter(|p| p.join(file).is_file()) {
            let value = fs::read_to_string(parent.join(file)).map_err(err)?;
            fs::write(dir.join(file), value.trim()).map_err(err)?;
        }
    }
    // Once denied, the rules stay (and a cgroup with children may not change its default).
    let unrestricted = |list: String| list.lines().any(|l| l.trim() == "a *:* rwm");
    let devices = fs::read_to_string(dir.join("devices.list")).ok();
    if devices.is_some_and(unrestricted) {
        fs::write(dir.join("devices.deny"), "a").map_err(err)?;
        for (major, minor) in ALLOWED_DEVICES {
            let minor = minor.map_or_else(|| "*".to_owned(), |m| m.to_string());
            fs::write(dir.join("devices.allow"), format!("c {major}:{minor} rwm")).map_err(err)?;
        }
    }
    let owner = |p: &Path| std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(err);
    owner(dir)?;
    // v1: every file, so the user can set limits; v2: only the delegation files (the
    // others are the parent's to set).
    let v2 = dir.join("cgroup.subtree_control").is_file();
    for entry in fs::read_dir(dir).map_err(err)?.flatten() {
        let name = entry.file_name();
        let delegable = ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"]
            .iter()
            .any(|d| name == *d);
        if entry.file_type().is_ok_and(|t| t.is_file()) && (!v2 || delegable) {
            owner(&entry.path())?;
        }
    }
    Ok(())
}

fn check_subordinate(report: &mut Report, user: &str, uid: u32) {
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = fs::read_to_string("/etc/subgid").unwrap_or_default();
    if IdMap::from_subordinate(&subuid, &subgid, user, uid).is_none() {
        report.problems.push(format!(
            "{user} has no range of 65536 ids in /etc/subuid and /etc/subgid: containers will \
             run as {user} alone; add one with `usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 {user}` (a range no other user has)"
        ));
    }
}

fn check_tools(report: &mut Report) {
    use std::os::unix::fs::PermissionsExt;
    for tool in ["newuidmap", "newgidmap"] {
        let path = Path::new("/usr/bin").join(tool);
        match fs::metadata(&path) {
            Ok(m) if m.permissions().mode() & 0o4000 != 0 => {}
            Ok(_) => report.problems.push(format!(
                "{} is not set-user-id root: subordinate ids cannot be mapped",
                path.display()
            )),
            Err(_) => report
                .problems
                .push(format!("{tool} is missing: apt-get install uidmap")),
        }
    }
    match fs::metadata("/dev/net/tun") {
        Ok(m) if m.permissions().mode() & 0o006 == 0o006 => {}
        _ => report.problems.push(
            "/dev/net/tun is not usable by other users (Debian's default is 0666): rootless \
             jobs with network \"bridge\" will fail until `chmod 0666 /dev/net/tun`"
                .to_owned(),
        ),
    }
}
