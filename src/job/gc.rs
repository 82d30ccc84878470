//! Finds what dead berths left behind — running containers, mounts, cgroups, working
//! directories — and removes it.
//!
//! libcontainer sets no parent-death signal, so a berth killed with SIGKILL leaves its
//! container running. Every berth invocation sweeps first (cheap: one directory listing
//! when nothing is left over), and `berth gc` does it on demand.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Services;
use super::workdir::{Home, is_dead, parse_container_id};
use crate::host::Host;
use crate::util::remove_tree;

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub jobs: Vec<String>,
    pub containers: Vec<String>,
    pub errors: Vec<String>,
}

/// Job directories under a home, by whether a berth still holds them.
#[derive(Debug, Default)]
struct Census {
    tag: String,
    dead: Vec<String>,
    live: Vec<String>,
    /// Where dead jobs' berths created their containers' cgroups (see [`note_cgroups`]).
    places: Vec<PathBuf>,
}

/// The file in a job's directory that says where its containers' cgroups go: below the
/// cgroup of the berth that ran it (a Slurm job's, a systemd unit's), which a later berth
/// elsewhere cannot know.
const CGROUPS_NOTE: &str = "cgroups";

/// The most of a note berth reads: a line per cgroup hierarchy.
const NOTE_BYTES: u64 = 64 * 1024;

/// Writes down, in the job's directory, the directories (one per hierarchy, as the host
/// names them) its containers' cgroups are created in.
pub fn note_cgroups(job_dir: &Path, places: &[PathBuf]) -> io::Result<()> {
    let mut text = String::new();
    for p in places {
        text.push_str(&p.to_string_lossy());
        text.push('\n');
    }
    fs::write(job_dir.join(CGROUPS_NOTE), text)
}

/// The places a dead job's note names: absolute paths below the cgroup filesystems, with
/// nothing but plain names in them (the note is berth's, but a sweep kills what it finds
/// there).
fn noted_cgroups(job_dir: &Path) -> Vec<PathBuf> {
    use std::io::Read;
    let mut text = String::new();
    let read = fs::File::open(job_dir.join(CGROUPS_NOTE))
        .and_then(|f| f.take(NOTE_BYTES).read_to_string(&mut text));
    if read.is_err() {
        return Vec::new();
    }
    let root = Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT);
    text.lines()
        .map(PathBuf::from)
        .filter(|p| {
            // Written back from its parts, a path with `.`, `..` or `//` in it differs.
            let plain: PathBuf = p.components().collect();
            p.starts_with(root)
                && plain.as_os_str() == p.as_os_str()
                && p.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                })
        })
        .collect()
}

impl Census {
    fn take(home: &Home) -> Census {
        let mut census = Census {
            tag: home.tag(),
            ..Census::default()
        };
        for entry in fs::read_dir(home.jobs()).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_dead(&entry.path()) {
                census.places.extend(noted_cgroups(&entry.path()));
                census.dead.push(name);
            } else {
                census.live.push(name);
            }
        }
        census.dead.sort();
        census
    }

    /// A container of this home whose job has no live berth — whether its job directory
    /// is still there or not.
    fn is_orphan(&self, container: &str) -> bool {
        match parse_container_id(container) {
            Some((tag, job)) => tag == self.tag && !self.live.iter().any(|l| l == job),
            None => false,
        }
    }
}

/// Removes the leftovers of every dead job under `home`.
pub fn sweep(svc: Services<'_>, home: &Home) -> GcReport {
    let census = Census::take(home);
    let mut report = GcReport::default();
    // Containers first: they may still run and hold the mounts and directories.
    let failed = remove_containers(svc, home, &census, &mut report);
    remove_bundles(svc.host, home, &census, &mut report);
    for id in &census.dead {
        // A job whose container could not be removed keeps its directory, so the next sweep
        // sees the job as dead again and retries.
        if failed
            .iter()
            .any(|c| parse_container_id(c).is_some_and(|(_, job)| job == id))
        {
            continue;
        }
        let dir = home.jobs().join(id);
        match remove_tree(&dir) {
            Ok(()) => report.jobs.push(id.clone()),
            Err(e) => report
                .errors
                .push(format!("cannot remove {}: {e}", dir.display())),
        }
    }
    if !report.jobs.is_empty() || !report.containers.is_empty() {
        tracing::warn!(
            jobs = ?report.jobs,
            containers = ?report.containers,
            "removed leftovers of jobs whose berth died"
        );
    }
    for e in &report.errors {
        tracing::error!("gc: {e}");
    }
    report
}

/// Removes the containers of this home that no live berth holds; returns those that could
/// not be removed.
///
/// Their cgroups say which exist; state files may be gone (a private tmpfs) or unreadable.
/// Cgroups are the whole host's, shared by every berth home: a container's id names its
/// home, and only this home's are ours. A container whose job directory is gone is still
/// an orphan: nothing else would ever remove it. Containers' cgroups are looked for where
/// this berth would create them, at the top of each hierarchy, and where dead jobs noted
/// theirs (below another Slurm job's cgroup, say).
fn remove_containers(
    svc: Services<'_>,
    home: &Home,
    census: &Census,
    report: &mut GcReport,
) -> Vec<String> {
    let state_root = home.state_root();
    let mut places = svc.host.cgroup_places();
    places.extend(census.places.iter().cloned());
    places.sort();
    places.dedup();
    let mut containers = svc.host.cgroup_children(&places);
    containers.extend(
        fs::read_dir(&state_root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned()),
    );
    containers.retain(|id| census.is_orphan(id));
    containers.sort();
    containers.dedup();
    let mut failed = Vec::new();
    for id in containers {
        let cgroups: Vec<PathBuf> = places.iter().map(|p| p.join(&id)).collect();
        match svc.runtime.remove_orphan(&state_root, &id, &cgroups) {
            Ok(()) => report.containers.push(id),
            Err(e) => {
                report.errors.push(crate::util::chain(&e));
                failed.push(id);
            }
        }
    }
    failed
}

/// Unmounts and removes the bundles of dead jobs.
fn remove_bundles(host: &dyn Host, home: &Home, census: &Census, report: &mut GcReport) {
    for entry in fs::read_dir(home.bundles()).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !census.is_orphan(&id) {
            continue;
        }
        let dir = entry.path();
        for m in host.mounts_under(&dir) {
            if let Err(e) = host.unmount(&m) {
                report.errors.push(crate::util::chain(&e));
            }
        }
        if let Err(e) = remove_tree(&dir) {
            report
                .errors
                .push(format!("cannot remove {}: {e}", dir.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::job::workdir::JobDir;
    use crate::runtime::fake::FakeRuntime;

    #[test]
    fn container_ids_map_to_homes_and_jobs() {
        let id = crate::job::workdir::container_id("0a1b2c3d", "abc123", 0);
        assert_eq!(parse_container_id(&id), Some(("0a1b2c3d", "abc123")));
        assert_eq!(parse_container_id("berth-t-abc123-x"), None);
        assert_eq!(parse_container_id("berth-abc123"), None);
        assert_eq!(parse_container_id("other-1"), None);
    }

    #[test]
    fn dead_jobs_are_swept_and_live_and_new_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let live = JobDir::create(&home).unwrap();
        live.image_dir(0).unwrap();
        // A dead job: a directory nobody holds a lock on.
        let dead_dir = home.jobs().join("deadbeef0000");
        fs::create_dir_all(dead_dir.join("0/data")).unwrap();
        // Just created by a berth that has not locked it yet, and one whose berth died
        // between creating and locking it long ago.
        let young = home.jobs().join(".new-young0000000");
        fs::create_dir_all(&young).unwrap();
        let stale = home.jobs().join(".new-stale0000000");
        fs::create_dir_all(&stale).unwrap();
        let old = std::time::SystemTime::now() - 2 * crate::job::workdir::NEW_DEAD_AFTER;
        fs::File::open(&stale).unwrap().set_modified(old).unwrap();

        let host = FakeHost::default();
        let runtime = FakeRuntime::exiting(0);
        let svc = Services {
            host: &host,
            runtime: &runtime,
        };
        let report = sweep(svc, &home);
        assert_eq!(
            report.jobs,
            vec![".new-stale0000000".to_owned(), "deadbeef0000".to_owned()]
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(!dead_dir.exists() && !stale.exists());
        assert!(young.exists());
        assert!(live.dir.exists());
    }

    #[test]
    fn a_note_names_only_plain_paths_below_the_cgroup_filesystems() {
        let d = tempfile::tempdir().unwrap();
        let good = PathBuf::from("/sys/fs/cgroup/memory/slurm_n1/uid_0/job_7/step_batch/task_0");
        note_cgroups(d.path(), std::slice::from_ref(&good)).unwrap();
        assert_eq!(noted_cgroups(d.path()), vec![good.clone()]);
        // A note berth did not write the way it writes them: only the plain line is kept.
        fs::write(
            d.path().join(CGROUPS_NOTE),
            "/sys/fs/cgroup/memory/../../../etc\n/etc\nrelative/x\n\
             /sys/fs/cgroup/memory/./x\n/sys/fs/cgroup/memory/slurm_n1/uid_0/job_7/step_batch/task_0\n",
        )
        .unwrap();
        assert_eq!(noted_cgroups(d.path()), vec![good]);
        assert!(noted_cgroups(&d.path().join("missing")).is_empty());
    }
}
