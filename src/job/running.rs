//! The jobs running under a home, as another berth sees them: `berth ps` and `berth kill`.
//!
//! Each job directory holds a small record, `running.json` (0600, berth's), written when
//! the directory is made and again as each container of the job starts: the job's id,
//! component, configuration, row and image, and who runs it — berth's pid with that
//! process's start time, and the operator. The record is never trusted for liveness: a job
//! runs while a process holds its directory's flock (see [`super::workdir`]), and the
//! holder is read from `/proc/locks`. A signal goes only to the process that holds the
//! lock, is the record's pid and started when the record says, through a pidfd opened
//! before those checks — so a pid the kernel recycled is never signalled.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::workdir::{Home, NEW_PREFIX};
use crate::contract::ErrorClass;
use crate::host::procs::{self, StopSignal};

/// The record's name in a job directory.
pub const RECORD: &str = "running.json";

/// The most of a record berth reads.
const RECORD_BYTES: u64 = 64 * 1024;

/// What a running job's berth writes about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub job_id: String,
    pub component: String,
    pub config: Option<String>,
    /// The row running now, when the configuration has rows.
    pub row: Option<String>,
    /// The image running now (a processor's, between the component's), or about to.
    pub image: String,
    /// The container running now, once one was started.
    pub container: Option<String>,
    /// When the job started, in milliseconds since the epoch.
    pub started_ms: i64,
    /// The berth running it, and when that process started (clock ticks after boot).
    pub pid: i32,
    pub pid_start: u64,
    /// The operator, as the host knows them.
    pub uid: u32,
    pub rootless: bool,
}

impl Running {
    /// Writes the record into the job directory `dir`, replacing the last one whole (a
    /// reader sees the old record or the new, never half of one).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!(".{RECORD}.tmp"));
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        fs::rename(&tmp, dir.join(RECORD))
    }

    /// The record in the job directory `dir` (read without following a link, capped).
    pub fn read(dir: &Path) -> io::Result<Running> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(RECORD))?;
        let mut bytes = Vec::new();
        file.take(RECORD_BYTES).read_to_end(&mut bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The record of the job a berth runs, rewritten as its containers start. Failing to
/// write it costs `berth ps` a line, never the job: it is logged.
#[derive(Debug)]
pub struct RunningNote {
    dir: PathBuf,
    record: Mutex<Running>,
}

impl RunningNote {
    /// Writes the first record of the job in `dir`.
    pub fn start(dir: &Path, record: Running) -> RunningNote {
        let note = RunningNote {
            dir: dir.to_owned(),
            record: Mutex::new(record),
        };
        note.update(|_| {});
        note
    }

    /// Changes the record and writes it again.
    pub fn update(&self, change: impl FnOnce(&mut Running)) {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut record);
        if let Err(e) = record.write(&self.dir) {
            tracing::warn!(
                "cannot write {} (berth ps will not show the job): {e}",
                self.dir.join(RECORD).display()
            );
        }
    }
}

/// The record of this berth's job, as it starts.
pub fn record_of_this_berth(
    job_id: &str,
    component: &str,
    config: Option<&str>,
    image: &str,
    rootless_uid: Option<u32>,
) -> Running {
    let pid = i32::try_from(std::process::id()).unwrap_or(0);
    Running {
        job_id: job_id.to_owned(),
        component: component.to_owned(),
        config: config.map(str::to_owned),
        row: None,
        image: image.to_owned(),
        container: None,
        started_ms: crate::util::unix_ms(),
        pid,
        pid_start: procs::start_time(pid).unwrap_or(0),
        uid: rootless_uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
        rootless: rootless_uid.is_some(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunningError {
    #[error("no job {job} is running under {home}")]
    NotRunning { job: String, home: PathBuf },
    #[error("{job} names several running jobs: {}", .candidates.join(", "))]
    Ambiguous {
        job: String,
        candidates: Vec<String>,
    },
    #[error(
        "the berth of job {job} is not the process its record names (pid {pid}): it is not \
         signalled"
    )]
    NotItsBerth { job: String, pid: i32 },
    #[error("job {job} ended before it could be signalled")]
    Ended { job: String },
    #[error("cannot send {signal} to berth {pid} of job {job}")]
    Signal {
        job: String,
        pid: i32,
        signal: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read which processes hold job directories (/proc/locks)")]
    Locks(#[source] io::Error),
}

impl RunningError {
    /// Whose fault it is. Every variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            RunningError::NotRunning { .. } | RunningError::Ambiguous { .. } => ErrorClass::User,
            RunningError::NotItsBerth { .. }
            | RunningError::Ended { .. }
            | RunningError::Signal { .. }
            | RunningError::Locks(_) => ErrorClass::Internal,
        }
    }
}

/// A running job: its record, the process holding its lock, and its memory now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub record: Running,
    /// The job directory's name (the job's id, unless one was given).
    pub dir_name: String,
    pub dir: PathBuf,
    /// What the container running now holds in memory, if one runs.
    pub memory: Option<u64>,
}

/// The jobs running under `home`, oldest first: each directory whose lock a process holds
/// and whose record that process wrote. A directory whose lock nobody holds, or whose
/// holder is not its record's berth, is not listed.
pub fn list(home: &Home) -> Result<Vec<RunningJob>, RunningError> {
    let mut jobs = Vec::new();
    for entry in fs::read_dir(home.jobs()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(NEW_PREFIX) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let Ok(record) = Running::read(&dir) else {
            continue;
        };
        if holds_lock(&dir, &record)? {
            jobs.push(RunningJob {
                record,
                dir_name: name,
                dir,
                memory: None,
            });
        }
    }
    let containers: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.record.container.as_deref())
        .collect();
    let memory = procs::containers_memory(&containers);
    for job in &mut jobs {
        job.memory = job
            .record
            .container
            .as_ref()
            .and_then(|c| memory.get(c).copied());
    }
    jobs.sort_by(|a, b| {
        (a.record.started_ms, &a.dir_name).cmp(&(b.record.started_ms, &b.dir_name))
    });
    Ok(jobs)
}

/// Whether the record's berth, as it started, holds the lock of the job directory `dir`.
fn holds_lock(dir: &Path, record: &Running) -> Result<bool, RunningError> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Ok(false);
    };
    let holders = procs::flock_holders(meta.dev(), meta.ino()).map_err(RunningError::Locks)?;
    Ok(holders.contains(&record.pid)
        && procs::start_time(record.pid).is_ok_and(|t| t == record.pid_start))
}

/// The running job `job` names: its id or its directory's name, whole or a prefix of
/// exactly one.
pub fn find(home: &Home, job: &str) -> Result<RunningJob, RunningError> {
    let jobs = list(home)?;
    let named = |j: &RunningJob| j.record.job_id == job || j.dir_name == job;
    if let Some(found) = jobs.iter().find(|j| named(j)) {
        return Ok(found.clone());
    }
    let mut prefixed: Vec<RunningJob> = jobs
        .into_iter()
        .filter(|j| !job.is_empty() && j.record.job_id.starts_with(job))
        .collect();
    match prefixed.len() {
        0 => Err(RunningError::NotRunning {
            job: job.to_owned(),
            home: home.jobs(),
        }),
        1 => Ok(prefixed.remove(0)),
        _ => Err(RunningError::Ambiguous {
            job: job.to_owned(),
            candidates: prefixed.into_iter().map(|j| j.record.job_id).collect(),
        }),
    }
}

/// Sends `signal` to the berth running `job` and returns a handle on that process (to
/// wait for its end). The process is pinned first (a pidfd), then checked: it must still
/// be the record's — same start time — and hold the job's lock.
pub fn signal(job: &RunningJob, signal: StopSignal) -> Result<OwnedFd, RunningError> {
    let id = || job.record.job_id.clone();
    let pid = job.record.pid;
    let pidfd = procs::pidfd(pid).map_err(|_| RunningError::Ended { job: id() })?;
    if !holds_lock(&job.dir, &job.record)? {
        return Err(
            if fs::symlink_metadata(&job.dir).is_err() || procs::start_time(pid).is_err() {
                RunningError::Ended { job: id() }
            } else {
                RunningError::NotItsBerth { job: id(), pid }
            },
        );
    }
    procs::send_signal(&pidfd, signal).map_err(|source| RunningError::Signal {
        job: id(),
        pid,
        signal: signal.name(),
        source,
    })?;
    Ok(pidfd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::workdir::JobDir;

    fn record_for(job: &JobDir, pid: i32, pid_start: u64) -> Running {
        Running {
            job_id: job.id.clone(),
            component: "acme.sleep".into(),
            config: Some("42".into()),
            row: None,
            image: "127.0.0.1:5000/acme/sleep:1".into(),
            container: None,
            started_ms: 1,
            pid,
            pid_start,
            uid: 0,
            rootless: false,
        }
    }

    fn me() -> (i32, u64) {
        let pid = i32::try_from(std::process::id()).unwrap();
        (pid, procs::start_time(pid).unwrap())
    }

    #[test]
    fn a_job_runs_while_its_records_berth_holds_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let job = JobDir::create(&home).unwrap();
        let (pid, start) = me();
        let record = record_for(&job, pid, start);
        record.write(&job.dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(job.dir.join(RECORD))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let listed = list(&home).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].record, record);
        assert_eq!(find(&home, &job.id).unwrap().record, record);
        assert_eq!(find(&home, &job.id[..4]).unwrap().record, record);
        let e = find(&home, "zz").unwrap_err();
        assert!(matches!(e, RunningError::NotRunning { .. }), "{e}");
        // Its lock gone, the job is not running, whatever its record says.
        let dir = job.dir.clone();
        let bytes = fs::read(dir.join(RECORD)).unwrap();
        drop(job);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(RECORD), bytes).unwrap();
        assert!(list(&home).unwrap().is_empty());
    }

    /// `flock DIR sleep 60`: a process (util-linux's flock) that holds the lock of `dir`,
    /// once it does.
    fn lock_holder(dir: &Path) -> std::process::Child {
        let mut child = std::process::Command::new("flock")
            .arg(dir)
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(dir).unwrap();
        for _ in 0..500 {
            if procs::flock_holders(meta.dev(), meta.ino())
                .unwrap()
                .contains(&pid)
            {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("flock never took the lock of {}", dir.display());
    }

    #[test]
    fn a_record_naming_another_process_or_a_recycled_pid_is_never_signalled() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let job = JobDir::create(&home).unwrap();
        // A live process that does not hold the job's lock (this test holds it).
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let other_pid = i32::try_from(other.id()).unwrap();
        let other_start = procs::start_time(other_pid).unwrap();
        record_for(&job, other_pid, other_start)
            .write(&job.dir)
            .unwrap();
        assert!(
            list(&home).unwrap().is_empty(),
            "the lock holder is not the record's"
        );
        let running = RunningJob {
            record: record_for(&job, other_pid, other_start),
            dir_name: job.id.clone(),
            dir: job.dir.clone(),
            memory: None,
        };
        let e = signal(&running, StopSignal::Term).unwrap_err();
        assert!(matches!(e, RunningError::NotItsBerth { .. }), "{e}");
        assert!(
            other.try_wait().unwrap().is_none(),
            "a process without the lock was signalled"
        );

        // The lock's holder and the record's pid, but not the record's start time: the pid
        // of a berth that died, which the kernel gave to this process.
        let dir = d.path().join("jobs/0123456789ab");
        fs::create_dir_all(&dir).unwrap();
        let mut holder = lock_holder(&dir);
        let holder_pid = i32::try_from(holder.id()).unwrap();
        let holder_start = procs::start_time(holder_pid).unwrap();
        let recycled = RunningJob {
            record: record_for(&job, holder_pid, holder_start + 1),
            dir_name: "0123456789ab".into(),
            dir: dir.clone(),
            memory: None,
        };
        recycled.record.write(&dir).unwrap();
        let e = signal(&recycled, StopSignal::Term).unwrap_err();
        assert!(matches!(e, RunningError::NotItsBerth { .. }), "{e}");
        assert!(
            holder.try_wait().unwrap().is_none(),
            "a recycled pid was signalled"
        );
        assert_eq!(list(&home).unwrap(), Vec::new());
        // With the start time it has, it is the job's berth: listed, and signalled.
        let mut record = recycled.record.clone();
        record.pid_start = holder_start;
        record.write(&dir).unwrap();
        let listed = list(&home).unwrap();
        assert_eq!(listed.len(), 1);
        let pidfd = signal(&listed[0], StopSignal::Term).unwrap();
        assert!(procs::wait_exit(&pidfd, std::time::Duration::from_secs(10)).unwrap());
        let status = holder.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn an_unreadable_or_linked_record_is_no_job() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::new(d.path());
        let job = JobDir::create(&home).unwrap();
        fs::write(job.dir.join(RECORD), b"{not json").unwrap();
        assert!(list(&home).unwrap().is_empty());
        let (pid, start) = me();
        let elsewhere = d.path().join("elsewhere.json");
        record_for(&job, pid, start).write(d.path()).unwrap();
        fs::rename(d.path().join(RECORD), &elsewhere).unwrap();
        fs::remove_file(job.dir.join(RECORD)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, job.dir.join(RECORD)).unwrap();
        assert!(list(&home).unwrap().is_empty());
    }
}
