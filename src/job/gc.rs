//! Finds what dead berths left behind — running containers, mounts, cgroups, working
//! directories — and removes it.
//!
//! libcontainer sets no parent-death signal, so a berth killed with SIGKILL leaves its
//! container running. Every berth invocation sweeps first (cheap: one directory listing
//! when nothing is left over), and `berth gc` does it on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Services;
use super::workdir::{Home, Liveness, liveness, parse_container_id};
use crate::host::Host;
use crate::util::remove_tree;

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub jobs: Vec<String>,
    pub containers: Vec<String>,
    pub errors: Vec<String>,
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

/// What this home holds of each job: its containers (by their cgroups and state
/// directories), its bundles, and whether its directory is there.
#[derive(Debug, Default)]
struct Leftovers {
    /// Job id → the ids of its containers (and bundles) found.
    containers: BTreeMap<String, BTreeSet<String>>,
    /// Job directories, `.new-` ones included.
    dirs: BTreeSet<String>,
}

impl Leftovers {
    /// Lists what there is, without deciding anything: containers and bundles of this home
    /// only (cgroups are the whole host's, and a container's id names its home).
    fn list(host: &dyn Host, home: &Home) -> Leftovers {
        let tag = home.tag();
        let names = |dir: PathBuf| {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        };
        let mut found = Leftovers::default();
        let dirs: Vec<PathBuf> = fs::read_dir(home.jobs())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        let ids = host
            .cgroup_children(&places(host, &dirs))
            .into_iter()
            .chain(names(home.state_root()))
            .chain(names(home.bundles()));
        for id in ids {
            if let Some((t, job)) = parse_container_id(&id)
                && t == tag
            {
                let job = job.to_owned();
                found.containers.entry(job).or_default().insert(id);
            }
        }
        for entry in fs::read_dir(home.jobs()).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found
                    .dirs
                    .insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        found
    }

    /// Every job this home holds something of, `.new-` directories included.
    fn jobs(&self) -> BTreeSet<String> {
        self.containers.keys().chain(&self.dirs).cloned().collect()
    }
}

/// Removes the leftovers of every dead job under `home`.
///
/// Whether a job is dead is decided for each job at the moment its leftovers are removed,
/// by taking its directory's lock (held while they are removed), never from a listing taken
/// earlier: many berths share a home, and a job that appears after a listing must not look
/// orphaned to a sweep running meanwhile.
pub fn sweep(svc: Services<'_>, home: &Home) -> GcReport {
    let mut report = GcReport::default();
    for job in Leftovers::list(svc.host, home).jobs() {
        let dir = home.jobs().join(&job);
        let claim = match liveness(&dir) {
            Liveness::Live => continue,
            Liveness::Unknown(e) => {
                report.errors.push(format!(
                    "cannot tell whether the berth of job {job} lives ({}: {e}); its files \
                     and containers are kept",
                    dir.display()
                ));
                continue;
            }
            Liveness::Dead(lock) => Some(lock),
            Liveness::Gone => None,
        };
        // Dead or gone, the job gets nothing new: what is there now is all it left.
        let failed = remove_containers(svc, home, &job, &mut report);
        remove_bundles(svc.host, home, &job, &mut report);
        // A job whose container could not be removed keeps its directory, so the next sweep
        // sees the job as dead again and retries.
        if claim.is_some() && !failed {
            match remove_tree(&dir) {
                Ok(()) => report.jobs.push(job),
                Err(e) => report
                    .errors
                    .push(format!("cannot remove {}: {e}", dir.display())),
            }
        }
        drop(claim);
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

/// Where containers' cgroups may be: where this berth would create them, at the top of
/// each hierarchy, and where the jobs in `dirs` noted theirs (below another Slurm job's
/// cgroup, say).
fn places(host: &dyn Host, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut places = host.cgroup_places();
    places.extend(dirs.iter().flat_map(|d| noted_cgroups(d)));
    places.sort();
    places.dedup();
    places
}

/// Removes the containers of a dead or gone job: what its cgroups and state directories
/// say exists now. Returns whether one could not be removed.
fn remove_containers(svc: Services<'_>, home: &Home, job: &str, report: &mut GcReport) -> bool {
    let state_root = home.state_root();
    let places = places(svc.host, &[home.jobs().join(job)]);
    // Listed again: another sweep may have removed them since the first listing.
    let mut ids = svc.host.cgroup_children(&places);
    ids.extend(
        fs::read_dir(&state_root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned()),
    );
    let tag = home.tag();
    ids.retain(|id| parse_container_id(id) == Some((tag.as_str(), job)));
    ids.sort();
    ids.dedup();
    let mut failed = false;
    for id in ids {
        let cgroups: Vec<PathBuf> = places.iter().map(|p| p.join(&id)).collect();
        match svc.runtime.remove_orphan(&state_root, &id, &cgroups) {
            Ok(()) => report.containers.push(id),
            Err(e) => {
                report.errors.push(crate::util::chain(&e));
                failed = true;
            }
        }
    }
    failed
}

/// Unmounts and removes the bundles of a dead or gone job.
fn remove_bundles(host: &dyn Host, home: &Home, job: &str, report: &mut GcReport) {
    let tag = home.tag();
    for entry in fs::read_dir(home.bundles()).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if parse_container_id(&id) != Some((tag.as_str(), job)) {
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
    use std::sync::{Arc, Mutex};

    #[test]
    fn container_ids_map_to_homes_and_jobs() {
        let id = crate::job::workdir::container_id("0a1b2c3d", "abc123", 0);
        assert_eq!(parse_container_id(&id), Some(("0a1b2c3d", "abc123")));
        assert_eq!(parse_container_id("berth-t-abc123-x"), None);
        assert_eq!(parse_container_id("berth-abc123"), None);
        assert_eq!(parse_container_id("other-1"), None);
    }

    /// The sweep's listing of cgroups, once: a job a berth creates meanwhile, and its
    /// container. The job stays alive (locked) until the test ends.
    fn a_job_appears_while_listing(home: &Home, live: &Arc<Mutex<Option<JobDir>>>) -> FakeHost {
        let host = FakeHost::default();
        let (home, live) = (home.clone(), Arc::clone(live));
        *host.cgroup_listing.0.lock().unwrap() = Some(Box::new(move || {
            let mut live = live.lock().unwrap();
            let job = live.get_or_insert_with(|| JobDir::create(&home).unwrap());
            job.image_dir(0).unwrap();
            vec![job.container_id(0)]
        }));
        host
    }

    #[test]
    fn a_job_created_while_a_sweep_lists_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        fs::create_dir_all(home.jobs()).unwrap();
        let live = Arc::new(Mutex::new(None));
        let host = a_job_appears_while_listing(&home, &live);
        let runtime = FakeRuntime::exiting(0);
        let svc = Services {
            host: &host,
            runtime: &runtime,
        };
        let report = sweep(svc, &home);
        assert_eq!(report, GcReport::default());
        assert!(runtime.calls().is_empty(), "{:?}", runtime.calls());
        let live = live.lock().unwrap();
        let job = live.as_ref().unwrap();
        assert!(job.dir.is_dir());
        assert!(home.bundles().join(job.container_id(0)).is_dir());
    }

    #[test]
    fn a_job_whose_directory_cannot_be_opened_keeps_its_containers() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let tag = home.tag();
        fs::create_dir_all(home.jobs()).unwrap();
        // Not a directory berth made (opened without following links: ELOOP).
        let job = "0123456789ab";
        std::os::unix::fs::symlink(d.path(), home.jobs().join(job)).unwrap();
        let id = crate::job::workdir::container_id(&tag, job, 0);
        let host = FakeHost::default();
        let listed = id.clone();
        *host.cgroup_listing.0.lock().unwrap() = Some(Box::new(move || vec![listed.clone()]));
        let runtime = FakeRuntime::exiting(0);
        let svc = Services {
            host: &host,
            runtime: &runtime,
        };
        let report = sweep(svc, &home);
        assert!(runtime.calls().is_empty(), "{:?}", runtime.calls());
        assert!(report.jobs.is_empty() && report.containers.is_empty());
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(
            report.errors[0]
                .starts_with(&format!("cannot tell whether the berth of job {job} lives")),
            "{:?}",
            report.errors
        );
        assert!(home.jobs().join(job).exists());
    }

    #[test]
    fn the_containers_of_dead_and_gone_jobs_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let tag = home.tag();
        let dead = "deadbeef0001";
        fs::create_dir_all(home.jobs().join(dead)).unwrap();
        let host = FakeHost::default();
        let ids = vec![
            crate::job::workdir::container_id(&tag, dead, 0),
            // Its directory gone: nothing else would ever remove it.
            crate::job::workdir::container_id(&tag, "0123456789ab", 1),
            // Another home's.
            crate::job::workdir::container_id("0a0b0c0d", dead, 0),
        ];
        *host.cgroup_listing.0.lock().unwrap() = Some(Box::new(move || ids.clone()));
        let runtime = FakeRuntime::exiting(0);
        let svc = Services {
            host: &host,
            runtime: &runtime,
        };
        let report = sweep(svc, &home);
        assert_eq!(report.jobs, vec![dead.to_owned()]);
        assert_eq!(
            report.containers,
            vec![
                crate::job::workdir::container_id(&tag, "0123456789ab", 1),
                crate::job::workdir::container_id(&tag, dead, 0),
            ]
        );
        assert!(!home.jobs().join(dead).exists());
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
