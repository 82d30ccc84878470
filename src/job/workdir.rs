//! Where a job keeps its files while it runs, and how a dead job's files are recognised.
//!
//! ```text
//! <home>/jobs/<job id>/              flock-ed for as long as the job's berth lives
//! <home>/jobs/<job id>/<n>/          image n's data/ (mounted at /data), tmp/ (at /tmp), and
//!                                    the overlay's upper/ and work/: everything that may be big
//! <home>/run/bundles/<container id>/ its OCI bundle: config.json and rootfs/ (the overlay);
//!                                    container id = berth-<home tag>-<job id>-<n>
//! <home>/run/state/<container id>/   libcontainer's state
//! ```
//!
//! `<home>/run` is small and short-lived, so berth mounts a private tmpfs there (inside its
//! private mount namespace) when it can: no disk churn on every start, and nothing of it
//! survives the berth that created it — a reboot or a crash cannot leave stale container
//! state that points at recycled pids. Dead containers are found by their cgroups instead.
//!
//! The job directory itself is the lock (flock works on directories), and the kernel drops
//! the lock when its holder dies however it dies. It is created as `.new-<id>`, locked, and
//! only then renamed into place, so a job directory whose lock can be taken belongs to a
//! dead berth, always.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::Digest;

use crate::util::remove_tree;

/// The folders of a data folder (contract §1), parents first.
pub const DATA_DIRS: [&str; 7] = [
    "in",
    "in/tables",
    "in/files",
    "in/user",
    "out",
    "out/tables",
    "out/files",
];

/// The directories under berth's home that jobs use.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: &Path) -> Home {
        Home {
            root: root.to_owned(),
        }
    }

    /// Makes the home private (creating it if needed): it holds every job's data,
    /// `config.json` with its secrets, and the project store. Nobody else may list or read
    /// it; only the search bit is left for others ([`TRAVERSE`]), because a container's
    /// root is nobody on the host and must pass through to its job's directories. A home an
    /// older berth created open is closed here; the umask keeps what is created below it
    /// private.
    pub fn ensure_private(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(&self.root)?;
        let mode = fs::metadata(&self.root)?.permissions().mode() & 0o7777;
        if mode != TRAVERSE {
            set_mode(&self.root, TRAVERSE)?;
        }
        Ok(())
    }

    /// The first directory above the home that other users may not search (its mode has
    /// no `x` for others), if any: a container whose root is nobody on the host could not
    /// reach its bundle or data folder through it.
    pub fn closed_ancestor(&self) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.root
            .ancestors()
            .skip(1)
            .find(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
            .map(Path::to_path_buf)
    }

    /// A short name for this home in the names of its containers: cgroups are the whole
    /// host's, and a sweep must only ever touch its own home's.
    pub fn tag(&self) -> String {
        let digest = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
        hex::encode(&digest[..HOME_TAG_BYTES])
    }

    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// Runtime scratch: bundles and container state (a private tmpfs where possible).
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// libcontainer's state root.
    pub fn state_root(&self) -> PathBuf {
        self.runtime_dir().join("state")
    }

    /// Where each container's OCI bundle is written.
    pub fn bundles(&self) -> PathBuf {
        self.runtime_dir().join("bundles")
    }
}

/// A running job's directory, removed when dropped.
#[derive(Debug)]
pub struct JobDir {
    pub id: String,
    pub dir: PathBuf,
    /// The home's tag, part of every container id.
    tag: String,
    bundles: PathBuf,
    /// How many image directories were created (their bundles are removed with the job).
    images: std::cell::Cell<usize>,
    /// The flock on `dir`, held until the directory is removed.
    lock: Option<Flock<File>>,
}

impl JobDir {
    pub fn create(home: &Home) -> io::Result<JobDir> {
        JobDir::create_as(home, None)
    }

    /// A job directory named `preferred` (from [`new_id`]: chosen before the job pulls, so
    /// that every line it logs can name it) unless that name cannot be claimed (see
    /// [`claim_new`]); a new name otherwise.
    pub fn create_as(home: &Home, preferred: Option<&str>) -> io::Result<JobDir> {
        if let Some(id) = preferred {
            crate::util::plain_name(id).map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("job id {id:?}: {reason}"),
                )
            })?;
        }
        let jobs = home.jobs();
        fs::create_dir_all(&jobs)?;
        set_mode(&jobs, TRAVERSE)?;
        fs::create_dir_all(home.state_root())?;
        fs::create_dir_all(home.bundles())?;
        set_mode(&home.bundles(), TRAVERSE)?;
        let (id, dir, lock) = claim_new(&jobs, preferred)?;
        Ok(JobDir {
            id,
            dir,
            tag: home.tag(),
            bundles: home.bundles(),
            images: std::cell::Cell::new(0),
            lock: Some(lock),
        })
    }

    /// The container id for image `n` of this job.
    pub fn container_id(&self, n: usize) -> String {
        container_id(&self.tag, &self.id, n)
    }

    /// Creates image `n`'s directories: the data folder of contract §1, `/tmp`, the
    /// overlay's upper and work directories, and the bundle with its rootfs mount point.
    ///
    /// ```text
    /// <job>/<n>/          0711: the container's root (nobody on the host) passes through
    /// <job>/<n>/box/      0700, the container's root's: data/, tmp/, and rootfs/ if copied
    /// <job>/<n>/overlay/  0700, berth's: upper/ and work/, which only the kernel uses
    /// ```
    pub fn image_dir(&self, n: usize) -> io::Result<ImageDir> {
        let path = self.dir.join(n.to_string());
        let boxed = path.join("box");
        let overlay = path.join("overlay");
        let data = boxed.join("data");
        let tmp = boxed.join("tmp");
        let bundle = self.bundles.join(self.container_id(n));
        // Parents first, one mkdir each: this is on every job's critical path.
        mkdir(&path, TRAVERSE)?;
        self.images.set(self.images.get().max(n + 1));
        fs::create_dir(&boxed)?;
        fs::create_dir(&overlay)?;
        fs::create_dir(&data)?;
        for sub in DATA_DIRS {
            fs::create_dir(data.join(sub))?;
        }
        mkdir(&tmp, STICKY_TMP)?;
        for d in [&overlay.join("upper"), &overlay.join("work")] {
            fs::create_dir(d)?;
        }
        mkdir(&bundle, TRAVERSE)?;
        fs::create_dir(bundle.join("rootfs"))?;
        Ok(ImageDir {
            upper: overlay.join("upper"),
            work: overlay.join("work"),
            copy: boxed.join("rootfs"),
            boxed,
            rootfs: bundle.join("rootfs"),
            data,
            tmp,
            bundle,
        })
    }

    /// Where image `n`'s outputs wait for the job's commit.
    pub fn staging(&self, n: usize) -> PathBuf {
        self.dir.join("staging").join(n.to_string())
    }

    /// Removes image `n`'s directories (its data folder is gone once its row ended; what
    /// the row output is already staged).
    pub fn remove_image(&self, n: usize) -> io::Result<()> {
        remove_tree(&self.bundles.join(self.container_id(n)))?;
        remove_tree(&self.dir.join(n.to_string()))
    }

    /// Removes the job's directories; the lock goes with `self`.
    pub fn remove(mut self) -> io::Result<()> {
        self.remove_files()
    }

    fn remove_files(&mut self) -> io::Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        for n in 0..self.images.get() {
            remove_tree(&self.bundles.join(self.container_id(n)))?;
        }
        let r = remove_tree(&self.dir);
        if r.is_ok() {
            self.lock = None;
        }
        r
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        if let Err(e) = self.remove_files() {
            tracing::error!("cannot remove job directory {}: {e}", self.dir.display());
        }
    }
}

/// A new job's id: 12 random hex digits.
pub fn new_id() -> String {
    crate::util::random_hex(6)
}

/// Creates a job directory, locked before it gets its name: as `.new-<id>`, locked, then
/// renamed to `<id>`. A sweep removes a `.new-` directory only once it is old and its lock
/// could be taken; should one have done so before this berth locked it (a berth stopped
/// for that long), the lock or the rename fails and another id is tried: a directory by a
/// job's name is always held by its berth. The first name tried is `preferred`, if given.
fn claim_new(jobs: &Path, preferred: Option<&str>) -> io::Result<(String, PathBuf, Flock<File>)> {
    let mut last = None;
    for attempt in 0..CLAIM_ATTEMPTS {
        let id = match preferred.filter(|_| attempt == 0) {
            Some(id) => id.to_owned(),
            None => new_id(),
        };
        let new = jobs.join(format!("{NEW_PREFIX}{id}"));
        let dir = jobs.join(&id);
        mkdir(&new, TRAVERSE)?;
        let locked = File::open(&new).and_then(|f| {
            Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))
        });
        let claimed = locked.and_then(|lock| fs::rename(&new, &dir).map(|()| lock));
        match claimed {
            Ok(lock) => return Ok((id, dir, lock)),
            // Taken by a sweep: it is removing the directory, or has removed it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::WouldBlock
                ) =>
            {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no job directory could be claimed")))
}

/// How many ids [`claim_new`] tries before giving up.
const CLAIM_ATTEMPTS: usize = 8;

/// Directories the container's root must pass through to reach its rootfs and the sources
/// of its bind mounts: from its user namespace it is nobody on the host, so it needs the
/// search bit for others. Nobody can list them (Docker's userns-remap does the same with
/// /var/lib/docker); what is inside is 0700 its owner's.
pub const TRAVERSE: u32 = 0o711;

/// `/tmp` of a container: everyone's, sticky, as in any image.
const STICKY_TMP: u32 = 0o1777;

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// mkdir with exactly `mode` (the umask would take the bits for others away).
fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir(path)?;
    set_mode(path, mode)
}

/// `berth-<home tag>-<job id>-<n>`: the container of image `n` of a job.
pub fn container_id(tag: &str, job_id: &str, n: usize) -> String {
    format!("{CONTAINER_PREFIX}{tag}-{job_id}-{n}")
}

/// What every berth container id starts with.
pub const CONTAINER_PREFIX: &str = "berth-";

/// How many bytes of the home path's digest name the home in container ids.
const HOME_TAG_BYTES: usize = 4;

/// `berth-<tag>-<job>-<n>` → (`<tag>`, `<job>`).
pub fn parse_container_id(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix(CONTAINER_PREFIX)?;
    let (tag, rest) = rest.split_once('-')?;
    let (job, n) = rest.rsplit_once('-')?;
    n.parse::<usize>().ok()?;
    Some((tag, job))
}

/// One image's directories inside a job.
#[derive(Debug, Clone)]
pub struct ImageDir {
    /// What the container's root owns: `data`, `tmp` and a copied rootfs.
    pub boxed: PathBuf,
    pub data: PathBuf,
    pub tmp: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where a copy of the rootfs goes when there is no overlay (created then).
    pub copy: PathBuf,
    /// The OCI bundle: `config.json` and the `rootfs` mount point.
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
}

/// The name a job directory has until it is locked.
pub const NEW_PREFIX: &str = ".new-";

/// A `.new-` directory this old, unlocked, belongs to a berth that died between creating
/// and locking it (younger ones may be about to be locked).
pub const NEW_DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// What a job directory says about its berth, read from its lock at the moment of asking.
#[derive(Debug)]
pub enum Liveness {
    /// A berth holds its lock — or is about to: a `.new-` directory younger than
    /// [`NEW_DEAD_AFTER`].
    Live,
    /// Nobody held its lock, and now the caller does: its berth is dead, and while the
    /// caller keeps this no other sweep takes the job up.
    Dead(Flock<File>),
    /// No directory by that name. A job's containers are created only once its directory
    /// is in place, and removed before it is, so what a gone job left is nobody's.
    Gone,
    /// It could not be opened or locked (too many open files, no permission, ...): for all
    /// anyone knows its berth lives, and nothing of it may be removed.
    Unknown(io::Error),
}

/// Whether the berth of the job directory `dir` lives: only a lock that could be taken (or
/// a directory that is verifiably gone) says it does not.
pub fn liveness(dir: &Path) -> Liveness {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let is_new = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(NEW_PREFIX));
    if is_new {
        match fs::symlink_metadata(dir).and_then(|m| m.modified()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Liveness::Gone,
            Err(e) => return Liveness::Unknown(e),
            // A clock set back makes it young: kept, never removed too early.
            Ok(t) if t.elapsed().is_ok_and(|age| age >= NEW_DEAD_AFTER) => {}
            Ok(_) => return Liveness::Live,
        }
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Liveness::Gone,
        Err(e) => return Liveness::Unknown(e),
    };
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Liveness::Live,
        Err((_, e)) => return Liveness::Unknown(io::Error::from(e)),
    };
    // Its berth may have removed it and let go between the open and the lock: then the
    // lock is on a directory no longer there.
    let held = lock.metadata().map(|m| (m.dev(), m.ino()));
    match (held, fs::symlink_metadata(dir).map(|m| (m.dev(), m.ino()))) {
        (Ok(held), Ok(now)) if held == now => Liveness::Dead(lock),
        (Ok(_), Ok(_)) => Liveness::Gone,
        (Ok(_), Err(e)) if e.kind() == io::ErrorKind::NotFound => Liveness::Gone,
        (Err(e), _) | (_, Err(e)) => Liveness::Unknown(e),
    }
}

/// Hands the data folder to the container's user, so a component that does not run as
/// root can still write its outputs.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    use nix::unistd::{Gid, Uid, fchownat};
    fchownat(
        None,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_left_open_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("home");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        Home::new(&root).ensure_private().unwrap();
        let mode = fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
    }

    #[test]
    fn a_home_below_a_closed_directory_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let closed = d.path().join("closed");
        fs::create_dir_all(closed.join("inner")).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o750)).unwrap();
        let home = Home::new(&closed.join("inner/home"));
        assert_eq!(home.closed_ancestor(), Some(closed.clone()));
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o751)).unwrap();
        let open = Home::new(&closed.join("inner/home"));
        let left = open.closed_ancestor();
        // Above the test's own directory, the machine decides (/tmp is searchable).
        assert!(left.is_none() || !left.unwrap().starts_with(d.path()));
    }

    #[test]
    fn a_live_job_is_not_dead_and_cleans_up_after_itself() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let job = JobDir::create(&home).unwrap();
        let img = job.image_dir(0).unwrap();
        assert!(img.data.join("in/tables").is_dir());
        assert!(img.data.join("out/files").is_dir());
        assert!(
            matches!(liveness(&job.dir), Liveness::Live),
            "our own job looks dead"
        );
        let dir = job.dir.clone();
        job.remove().unwrap();
        assert!(!dir.exists());
        assert!(
            matches!(liveness(&dir), Liveness::Gone),
            "a missing directory is nobody's"
        );
    }

    #[test]
    fn a_job_directory_that_cannot_be_opened_is_not_dead() {
        use crate::util::no_fds;
        if let Some(dir) = no_fds::child_arg() {
            let verdict = no_fds::exhausted(|| liveness(Path::new(&dir)));
            let Liveness::Unknown(e) = verdict else {
                panic!("with no descriptor to spare, a live job is {verdict:?}");
            };
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let job = JobDir::create(&Home::new(d.path())).unwrap();
        no_fds::run_child(
            "job::workdir::tests::a_job_directory_that_cannot_be_opened_is_not_dead",
            job.dir.to_str().unwrap(),
        );
        assert!(job.dir.is_dir());
    }

    #[test]
    fn a_dead_job_is_held_by_whoever_claims_it() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let dir = home.jobs().join("deadbeef0000");
        fs::create_dir_all(&dir).unwrap();
        let Liveness::Dead(claim) = liveness(&dir) else {
            panic!("an unlocked job directory is not dead");
        };
        // A second sweep meanwhile sees it taken.
        assert!(matches!(liveness(&dir), Liveness::Live));
        drop(claim);
        assert!(matches!(liveness(&dir), Liveness::Dead(_)));
    }

    #[test]
    fn dropping_a_job_removes_it() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let dir = {
            let job = JobDir::create(&home).unwrap();
            job.image_dir(0).unwrap();
            job.dir.clone()
        };
        assert!(!dir.exists());
        assert_eq!(fs::read_dir(home.jobs()).unwrap().count(), 0);
    }
}
