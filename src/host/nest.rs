//! Where containers' cgroups go.
//!
//! Below berth's own cgroup when berth runs inside one it may write to — a Slurm job or
//! step, a systemd unit with `Delegate=yes`, a cgroup root delegated — so that the caller's
//! limits, accounting and kill reach the component; below `/berth` (a rootless operator's
//! `/berth-u<uid>`, see `berth setup-rootless`) where berth sits in the root cgroup, or
//! where it may not write to its own; below the cgroup `--cgroup-parent` names, if given.
//!
//! On cgroup v1 berth's own cgroup differs per hierarchy (Slurm's v1 plugins put a job in
//! `memory` and `freezer` only), so the parent does too. libcontainer takes one cgroups path
//! for every hierarchy: where the parents differ, berth gives itself a view in its private
//! mount namespace — each hierarchy's mount shows the parent at its top — and the
//! container's cgroups path is `/<id>` in all of them. The host never sees the view.
//!
//! On cgroup v2 a cgroup with processes cannot also hand controllers to children ("no
//! internal processes"): berth moves itself into a leaf, `<own>/berth-supervisor`, first.
//!
//! The paths computed here decide what libcontainer kills when it removes a container
//! (every process of the cgroup), so [`Nest::cgroups_path`] refuses a container cgroup that
//! is berth's own, or above it, in any hierarchy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::mountinfo;

/// The v2 leaf berth moves itself into before its own cgroup gets children.
pub const SUPERVISOR: &str = "berth-supervisor";

/// What berth accepts as a cgroup v1 controller of a hierarchy it nests in: libcgroups'
/// list (the hierarchies its v1 manager joins).
const CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// A v1 memory limit at or above this is "no limit" (the kernel's is 2^63 rounded down to
/// a page).
const UNLIMITED: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum NestError {
    #[error(
        "refusing cgroup {path} for container {id}: it is berth's own cgroup {own} or above it"
    )]
    Own {
        id: String,
        path: String,
        own: String,
    },
    #[error("refusing container id {0:?} as a cgroup name")]
    BadId(String),
    #[error("cgroup parent {0:?} must be an absolute cgroup path below the root, like /mine/jobs")]
    BadParent(String),
    #[error(
        "the cgroups of containers would differ between hierarchies, and berth has no view that unites them"
    )]
    NoView,
}

/// One cgroup hierarchy and berth's own cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted in berth's mount namespace.
    pub mount: PathBuf,
    /// The cgroup the mount shows at its top (`/` unless it is bound from below).
    pub root: String,
    /// Its controllers (`name=…` for a named v1 hierarchy); none for v2.
    pub controllers: Vec<String>,
    /// berth's own cgroup in it, as `/proc/self/cgroup` names it.
    pub own: String,
}

impl Hierarchy {
    /// The directory of cgroup `path` through this mount, if the mount shows it.
    pub fn dir(&self, path: &str) -> Option<PathBuf> {
        let rest = if self.root == "/" {
            path.strip_prefix('/')?
        } else if path == self.root {
            ""
        } else {
            path.strip_prefix(&self.root)?.strip_prefix('/')?
        };
        Some(if rest.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(rest)
        })
    }

    pub fn is_v2(&self) -> bool {
        self.controllers.is_empty()
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// A v1 hierarchy libcontainer joins: one with a controller it knows (not a named one).
    fn joined_v1(&self) -> bool {
        self.controllers
            .iter()
            .any(|c| CONTROLLERS.contains(&c.as_str()))
    }

    /// The path of `cgroup` as this mount shows it (`/` for its top).
    fn local(&self, cgroup: &str) -> Option<String> {
        let dir = self.dir(cgroup)?;
        let rest = dir.strip_prefix(&self.mount).ok()?;
        Some(format!("/{}", rest.display()))
    }
}

/// The cgroup hierarchies berth is in, from `/proc/self/mountinfo` and `/proc/self/cgroup`;
/// a hierarchy mounted more than once is taken where it is mounted last below
/// `/sys/fs/cgroup` (the top of a stack of mounts there).
pub fn hierarchies(mountinfo: &str, proc_cgroup: &str) -> Vec<Hierarchy> {
    let mounts: Vec<(PathBuf, String, String, Vec<String>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(dash + 1)?;
            let superopts = fields.get(dash + 3).copied().unwrap_or("");
            let root = mountinfo::unescape(fields.get(3)?);
            let mount = mountinfo::unescape(fields.get(4)?);
            let opts = superopts.split(',').map(str::to_owned).collect();
            Some((
                mount,
                root.to_string_lossy().into_owned(),
                fstype.to_owned(),
                opts,
            ))
        })
        .filter(|(_, _, fstype, _)| fstype == "cgroup" || fstype == "cgroup2")
        .collect();
    let mut found = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(own)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let controllers: Vec<String> = ctrls
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let matches = |(_, _, fstype, opts): &&(PathBuf, String, String, Vec<String>)| {
            if controllers.is_empty() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && controllers.iter().all(|c| opts.contains(c))
            }
        };
        let candidates: Vec<_> = mounts.iter().filter(matches).collect();
        let chosen = candidates
            .iter()
            .rev()
            .find(|(m, ..)| m.starts_with(libcgroups::common::DEFAULT_CGROUP_ROOT))
            .or_else(|| candidates.first());
        if let Some((mount, root, ..)) = chosen {
            found.push(Hierarchy {
                mount: mount.clone(),
                root: root.clone(),
                controllers,
                own: own.to_owned(),
            });
        }
    }
    found
}

/// The hierarchies of berth's process now.
pub fn current() -> Vec<Hierarchy> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    hierarchies(&mountinfo, &cgroup)
}

/// The directories of berth's own cgroups that its mounts show: what no removal may touch.
pub fn own_dirs() -> Vec<PathBuf> {
    current().iter().filter_map(|h| h.dir(&h.own)).collect()
}

/// A `--cgroup-parent`: absolute, normalised, not the root.
pub fn parse_parent(s: &str) -> Result<String, NestError> {
    let bad = || NestError::BadParent(s.to_owned());
    let rest = s.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\n'))
    {
        return Err(bad());
    }
    Ok(format!("/{rest}"))
}

/// Where this berth's containers' cgroups go, one parent per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nest {
    pub places: Vec<Place>,
}

/// A hierarchy and the cgroup containers are created in there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub hierarchy: Hierarchy,
    pub parent: String,
}

impl Place {
    /// The parent's directory through the mount.
    pub fn dir(&self) -> Option<PathBuf> {
        self.hierarchy.dir(&self.parent)
    }
}

/// What decides the nest besides the hierarchies.
#[derive(Debug)]
pub struct Choice<'a> {
    /// `--cgroup-parent`, already checked by [`parse_parent`].
    pub explicit: Option<&'a str>,
    /// The parent at the top: `/berth`, or `/berth-u<uid>` for a rootless operator.
    pub top: &'a str,
    /// Whether berth may create cgroups in a directory.
    pub writable: fn(&Path) -> bool,
}

/// Chooses the parent in each hierarchy libcontainer joins (the v1 ones with a controller,
/// else the v2 one).
pub fn plan(hierarchies: &[Hierarchy], choice: &Choice<'_>) -> Nest {
    let v1 = hierarchies.iter().any(Hierarchy::joined_v1);
    let joined = hierarchies
        .iter()
        .filter(|h| if v1 { h.joined_v1() } else { h.is_v2() });
    let places = joined
        .map(|h| {
            let own = own_base(h);
            let nest_in_own = own != "/" && h.dir(&own).is_some_and(|d| (choice.writable)(&d));
            let parent = match choice.explicit {
                Some(p) => p.to_owned(),
                None if nest_in_own => own,
                None => choice.top.to_owned(),
            };
            Place {
                hierarchy: h.clone(),
                parent,
            }
        })
        .collect();
    Nest { places }
}

/// berth's own cgroup to nest in: on v2, the cgroup above the supervisor leaf an earlier
/// berth moved itself (and the processes beside it) into.
fn own_base(h: &Hierarchy) -> String {
    match h.own.rsplit_once('/') {
        Some((up, leaf)) if h.is_v2() && leaf == SUPERVISOR => {
            if up.is_empty() { "/" } else { up }.to_owned()
        }
        _ => h.own.clone(),
    }
}

/// Joins a cgroup path and a name.
fn join(parent: &str, name: &str) -> String {
    format!("{}/{name}", parent.trim_end_matches('/'))
}

/// `path` is `own` or above it.
fn contains(path: &str, own: &str) -> bool {
    path == "/" || own == path || own.starts_with(&format!("{}/", path.trim_end_matches('/')))
}

impl Nest {
    /// The parents differ between the mounts: libcontainer needs the view.
    pub fn needs_view(&self) -> bool {
        let mut locals = self.places.iter().map(|p| p.hierarchy.local(&p.parent));
        match locals.next() {
            Some(first) => locals.any(|l| l != first),
            None => false,
        }
    }

    /// The cgroups path of container `id` for libcontainer: the parent as every mount shows
    /// it, plus `id`. Refuses an id that is no plain name and a cgroup that would be berth's
    /// own or above it in any hierarchy.
    pub fn cgroups_path(&self, id: &str) -> Result<String, NestError> {
        if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\n']) {
            return Err(NestError::BadId(id.to_owned()));
        }
        if self.needs_view() {
            return Err(NestError::NoView);
        }
        for place in &self.places {
            let path = join(&place.parent, id);
            let own = &place.hierarchy.own;
            if contains(&path, own) {
                return Err(NestError::Own {
                    id: id.to_owned(),
                    path,
                    own: own.clone(),
                });
            }
        }
        let local = self
            .places
            .first()
            .and_then(|p| p.hierarchy.local(&p.parent))
            .unwrap_or_else(|| "/berth".to_owned());
        Ok(join(&local, id))
    }

    /// The parents' directories as the host names them (before any view).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        self.places.iter().filter_map(Place::dir).collect()
    }

    /// The nest as it is seen once each mount shows its parent at its top.
    pub fn viewed(&self) -> Nest {
        let places = self
            .places
            .iter()
            .map(|p| Place {
                hierarchy: Hierarchy {
                    root: p.parent.clone(),
                    ..p.hierarchy.clone()
                },
                parent: p.parent.clone(),
            })
            .collect();
        Nest { places }
    }

    /// The same hierarchies with every parent at the top: where a view cannot be made.
    pub fn at_top(&self, top: &str) -> Nest {
        let places = self
            .places
            .iter()
            .map(|p| Place {
                hierarchy: p.hierarchy.clone(),
                parent: top.to_owned(),
            })
            .collect();
        Nest { places }
    }

    /// The lowest memory limit of the parent and the cgroups above it that berth can see.
    pub fn memory_ceiling(&self) -> Option<Ceiling> {
        let place = self
            .places
            .iter()
            .find(|p| p.hierarchy.has("memory") || p.hierarchy.is_v2())?;
        let file = if place.hierarchy.is_v2() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let mut best: Option<Ceiling> = None;
        let mut cgroup = place.parent.clone();
        loop {
            let limit = place
                .hierarchy
                .dir(&cgroup)
                .and_then(|d| fs::read_to_string(d.join(file)).ok())
                .and_then(|t| t.trim().parse::<u64>().ok())
                .filter(|b| *b < UNLIMITED);
            if let Some(bytes) = limit.filter(|b| best.as_ref().is_none_or(|c| *b < c.bytes)) {
                best = Some(Ceiling {
                    bytes,
                    cgroup: cgroup.clone(),
                });
            }
            match cgroup.rsplit_once('/') {
                Some(("", "")) | None => break,
                Some(("", _)) => cgroup = "/".to_owned(),
                Some((up, _)) => cgroup = up.to_owned(),
            }
        }
        best
    }
}

/// A memory limit of a cgroup above the containers'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceiling {
    pub bytes: u64,
    /// The cgroup that sets it, as the host names it.
    pub cgroup: String,
}

/// Creates `dir` and the missing cgroups above it, each cpuset one with its parent's cpus
/// and memory nodes (a new one has none, and nothing could join it).
pub fn make_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if let Some(parent) = dir.parent().filter(|p| p.join(file).is_file()) {
            let value = fs::read_to_string(parent.join(file))?;
            fs::write(dir.join(file), value.trim())?;
        }
    }
    Ok(())
}

/// Shows `dir` at the top of the cgroup mount `mount`, in berth's mount namespace: a copy of
/// the mount's subtree replaces the mount, or, where the mount is locked (a rootless berth's
/// namespace cannot uncover what a more privileged one mounted), goes on top of it.
pub fn show_at_top(dir: &Path, mount: &Path) -> io::Result<()> {
    use rustix::fs::CWD;
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    let tree = open_tree(
        CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    // Two entries for one hierarchy would make libcontainer mount it twice in the
    // container (and fail on a comounted one): take the old one away where allowed.
    if let Err(e) = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH) {
        tracing::debug!("cannot unmount {} ({e}); stacking on it", mount.display());
    }
    move_mount(
        &tree,
        "",
        CWD,
        mount,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// A hierarchy has several controllers (`cpu,cpuacct`): where a view can only be stacked on
/// the host's mount, libcontainer would find it twice and fail on its second symlink.
pub fn comounted(nest: &Nest) -> bool {
    nest.places
        .iter()
        .any(|p| p.hierarchy.controllers.len() > 1)
}

/// cgroup v2: moves berth into `<own>/berth-supervisor` and hands the controllers of its own
/// cgroup to children, so that containers can be created beside it.
pub fn leave_for_leaf(h: &Hierarchy) -> io::Result<()> {
    let Some(own) = h.dir(&h.own) else {
        return Ok(());
    };
    let leaf = own.join(SUPERVISOR);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())?;
    let available = fs::read_to_string(own.join("cgroup.controllers"))?;
    let enable: Vec<String> = available
        .split_whitespace()
        .filter(|c| ["memory", "pids", "cpu"].contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        fs::write(own.join("cgroup.subtree_control"), enable.join(" "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Slurm batch step on a cgroup v1 host without systemd, as cluster.md found it.
    const SLURM_MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:2 - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/memory rw,relatime shared:3 - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/freezer rw,relatime shared:4 - cgroup cgroup rw,freezer
29 25 0:27 / /sys/fs/cgroup/systemd rw,relatime shared:5 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/unified rw,relatime shared:6 - cgroup2 cgroup2 rw";
    const SLURM_CGROUP: &str = "\
4:name=systemd:/
3:freezer:/slurm_n1/uid_0/job_7/step_batch
2:memory:/slurm_n1/uid_0/job_7/step_batch/task_0
1:cpu:/
0::/";

    fn anywhere(_: &Path) -> bool {
        true
    }

    fn nowhere(_: &Path) -> bool {
        false
    }

    fn choice(explicit: Option<&str>, writable: fn(&Path) -> bool) -> Choice<'_> {
        Choice {
            explicit,
            top: "/berth",
            writable,
        }
    }

    fn parents(nest: &Nest) -> Vec<(String, String)> {
        nest.places
            .iter()
            .map(|p| (p.hierarchy.mount.display().to_string(), p.parent.clone()))
            .collect()
    }

    #[test]
    fn hierarchies_pair_mounts_with_own_cgroups() {
        let hs = hierarchies(SLURM_MOUNTINFO, SLURM_CGROUP);
        let own: Vec<(&str, &str)> = hs
            .iter()
            .map(|h| (h.mount.to_str().unwrap(), h.own.as_str()))
            .collect();
        assert_eq!(
            own,
            [
                ("/sys/fs/cgroup/systemd", "/"),
                ("/sys/fs/cgroup/freezer", "/slurm_n1/uid_0/job_7/step_batch"),
                (
                    "/sys/fs/cgroup/memory",
                    "/slurm_n1/uid_0/job_7/step_batch/task_0"
                ),
                ("/sys/fs/cgroup/cpu", "/"),
                ("/sys/fs/cgroup/unified", "/"),
            ]
        );
    }

    #[test]
    fn a_slurm_step_nests_where_slurm_put_berth_and_keeps_the_top_elsewhere() {
        let hs = hierarchies(SLURM_MOUNTINFO, SLURM_CGROUP);
        let nest = plan(&hs, &choice(None, anywhere));
        assert_eq!(
            parents(&nest),
            [
                (
                    "/sys/fs/cgroup/freezer".into(),
                    "/slurm_n1/uid_0/job_7/step_batch".into()
                ),
                (
                    "/sys/fs/cgroup/memory".into(),
                    "/slurm_n1/uid_0/job_7/step_batch/task_0".into()
                ),
                ("/sys/fs/cgroup/cpu".into(), "/berth".into()),
            ]
        );
        assert!(nest.needs_view());
        let viewed = nest.viewed();
        assert!(!viewed.needs_view());
        assert_eq!(viewed.cgroups_path("berth-a-b-0").unwrap(), "/berth-a-b-0");
        assert_eq!(
            nest.parent_dirs()[1],
            Path::new("/sys/fs/cgroup/memory/slurm_n1/uid_0/job_7/step_batch/task_0")
        );
    }

    #[test]
    fn a_cgroup_berth_may_not_write_to_is_left_for_the_top() {
        let hs = hierarchies(SLURM_MOUNTINFO, SLURM_CGROUP);
        let nest = plan(&hs, &choice(None, nowhere));
        assert!(nest.places.iter().all(|p| p.parent == "/berth"));
        assert!(!nest.needs_view());
        assert_eq!(nest.cgroups_path("berth-x-1").unwrap(), "/berth/berth-x-1");
    }

    #[test]
    fn the_same_cgroup_everywhere_needs_no_view() {
        let cgroup = "3:freezer:/test-xyz\n2:memory:/test-xyz\n1:cpu:/test-xyz\n0::/";
        let nest = plan(
            &hierarchies(SLURM_MOUNTINFO, cgroup),
            &choice(None, anywhere),
        );
        assert!(!nest.needs_view());
        assert_eq!(
            nest.cgroups_path("berth-x-1").unwrap(),
            "/test-xyz/berth-x-1"
        );
    }

    #[test]
    fn an_explicit_parent_wins_everywhere() {
        let hs = hierarchies(SLURM_MOUNTINFO, SLURM_CGROUP);
        let nest = plan(&hs, &choice(Some("/mine/jobs"), anywhere));
        assert!(nest.places.iter().all(|p| p.parent == "/mine/jobs"));
        assert_eq!(nest.cgroups_path("c").unwrap(), "/mine/jobs/c");
        assert_eq!(parse_parent("/mine/jobs/").unwrap(), "/mine/jobs");
        for bad in ["", "/", "mine", "/a/../b", "/a//b", "/./a"] {
            assert!(parse_parent(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn berths_own_cgroup_and_those_above_it_are_refused() {
        let cgroup = "2:memory:/a/b/c\n1:cpu:/\n0::/";
        let hs = hierarchies(SLURM_MOUNTINFO, cgroup);
        // A parent above berth's own cgroup, and an id that names the way down to it.
        let nest = plan(&hs, &choice(Some("/a"), anywhere));
        let e = nest.cgroups_path("b").unwrap_err();
        assert!(matches!(e, NestError::Own { .. }), "{e}");
        assert!(e.to_string().contains("/a/b"), "{e}");
        assert!(nest.cgroups_path("other").is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(nest.cgroups_path(bad), Err(NestError::BadId(_))));
        }
        // Nothing to nest in still refuses an empty place.
        assert!(contains("/", "/x"));
        assert!(contains("/a/b", "/a/b"));
        assert!(!contains("/a/bc", "/a/b"));
    }

    #[test]
    fn on_v2_berth_nests_above_its_supervisor_leaf() {
        let mountinfo = "30 1 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        let cgroup = "0::/system.slice/job.service/berth-supervisor";
        let nest = plan(&hierarchies(mountinfo, cgroup), &choice(None, anywhere));
        assert_eq!(
            nest.cgroups_path("c1").unwrap(),
            "/system.slice/job.service/c1"
        );
        let top = plan(&hierarchies(mountinfo, "0::/"), &choice(None, anywhere));
        assert_eq!(top.cgroups_path("c1").unwrap(), "/berth/c1");
    }

    #[test]
    fn a_mount_bound_from_below_shows_only_its_subtree() {
        let h = Hierarchy {
            mount: PathBuf::from("/sys/fs/cgroup/memory"),
            root: "/a/b".into(),
            controllers: vec!["memory".into()],
            own: "/a/b/c".into(),
        };
        assert_eq!(
            h.dir("/a/b/c"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/c"))
        );
        assert_eq!(h.dir("/a/b"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(h.dir("/a/bc"), None);
        assert_eq!(h.dir("/berth"), None);
    }

    #[test]
    fn the_memory_ceiling_is_the_lowest_limit_on_the_way_up() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("memory");
        for (dir, limit) in [
            ("", "9223372036854771712"),
            ("job", "300000000"),
            ("job/step", "9223372036854771712"),
            ("job/step/task", "500000000"),
        ] {
            fs::create_dir_all(m.join(dir)).unwrap();
            fs::write(m.join(dir).join("memory.limit_in_bytes"), limit).unwrap();
        }
        let h = Hierarchy {
            mount: m,
            root: "/".into(),
            controllers: vec!["memory".into()],
            own: "/job/step/task".into(),
        };
        let nest = Nest {
            places: vec![Place {
                hierarchy: h.clone(),
                parent: "/job/step/task".into(),
            }],
        };
        assert_eq!(
            nest.memory_ceiling(),
            Some(Ceiling {
                bytes: 300_000_000,
                cgroup: "/job".into()
            })
        );
        let top = Nest {
            places: vec![Place {
                hierarchy: h,
                parent: "/berth".into(),
            }],
        };
        assert_eq!(top.memory_ceiling(), None);
    }
}
