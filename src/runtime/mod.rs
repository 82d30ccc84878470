//! Runs one container through youki's libcontainer: create, start, stream its output, wait
//! (with a deadline), and always delete it.
//!
//! libcontainer's traps, and what this module does about them (see
//! `shared/reference/libcontainer.md`):
//! - an empty or `/` cgroups path makes a failed build or a delete SIGKILL every process in
//!   berth's own cgroup: [`run`] refuses any path outside `/berth/`;
//! - `build()` and `start()` `chdir` the whole process: they run under one lock, and berth's
//!   working directory is restored afterwards;
//! - a failure between create and start leaves init blocked forever: the container is
//!   deleted on every path out of here, by a drop guard;
//! - OOM kills are only visible in the cgroup, which `delete()` removes: they are read first;
//! - a new network namespace has `lo` down: it is brought up between create and start.

pub mod output;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::host::Host;
use output::{LineSplitter, Tail};

/// The cgroup parent every berth container lives under.
pub const CGROUP_PARENT: &str = "/berth";

/// stderr and the stdout tail kept for the job's message.
const KEEP_BYTES: usize = 1 << 20;

/// After init exits, how long to wait for the output pipes to drain.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

static LIFECYCLE: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("refusing cgroups path {0:?}: it must be below {CGROUP_PARENT}/")]
    UnsafeCgroupPath(String),
    #[error("cannot create container {id}: {message}")]
    Create { id: String, message: String },
    #[error("cannot start container {id}: {message}")]
    Start { id: String, message: String },
    #[error("container {id}: {message}")]
    Wait { id: String, message: String },
    #[error("cannot remove container {id}: {message}")]
    Delete { id: String, message: String },
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// How the container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: a signal N reads as 128+N.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// One container to run.
#[derive(Debug)]
pub struct RunRequest<'a> {
    pub id: &'a str,
    /// Directory with `config.json` and `rootfs`.
    pub bundle: &'a Path,
    /// Where libcontainer keeps container state.
    pub state_root: &'a Path,
    pub cgroups_path: &'a str,
    pub timeout: Duration,
    /// Bring `lo` up in the container's new network namespace.
    pub loopback: bool,
}

/// What happened.
#[derive(Debug)]
pub struct RunOutcome {
    pub status: ExitStatus,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub interrupted: bool,
    pub stdout_tail: String,
    pub stderr: String,
}

/// A container that has ended but still exists: its cgroups and state are removed by
/// [`Exited::delete`] — or, if it is dropped, by the drop guard. Deleting takes a couple of
/// milliseconds of cgroup work, which the caller may overlap with its own cleanup.
#[derive(Debug)]
pub struct Exited {
    pub outcome: RunOutcome,
    live: Live,
}

impl Exited {
    /// Removes the container; its processes are all gone already.
    pub fn delete(mut self) -> Result<RunOutcome, RuntimeError> {
        self.live.delete()?;
        tracing::debug!("container {} deleted", self.live.id);
        Ok(self.outcome)
    }
}

/// Runs the container to its end, passing each stdout line to `on_line` as it arrives.
pub fn run(
    host: &dyn Host,
    req: &RunRequest<'_>,
    on_line: &mut dyn FnMut(&str),
) -> Result<Exited, RuntimeError> {
    check_cgroups_path(req.cgroups_path)?;
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| RuntimeError::Io { what, source }
    };
    let (out_r, out_w) = pipe().map_err(io("stdout pipe"))?;
    let (err_r, err_w) = pipe().map_err(io("stderr pipe"))?;
    let (out_r, err_r) = (File::from(out_r), File::from(err_r));
    let devnull = File::open("/dev/null").map_err(io("/dev/null"))?;

    let started = Instant::now();
    let mut live = {
        let _lock = LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
        let cwd = std::env::current_dir().ok();
        let created = create(req, devnull, out_w, err_w);
        restore_cwd(cwd.as_deref());
        let mut live = Live {
            container: Some(created?),
            id: req.id.to_owned(),
        };
        let pid = live.pid()?;
        tracing::debug!("container {} created", req.id);
        if req.loopback {
            host.loopback_up(pid.as_raw())?;
        }
        let started = live
            .container_mut()
            .start()
            .map_err(|e| RuntimeError::Start {
                id: req.id.to_owned(),
                message: e.to_string(),
            });
        restore_cwd(cwd.as_deref());
        started?;
        tracing::debug!("container {} started", req.id);
        live
    };
    let pid = live.pid()?;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid.as_raw()).ok_or_else(|| RuntimeError::Wait {
            id: req.id.to_owned(),
            message: format!("invalid pid {pid}"),
        })?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| RuntimeError::Wait {
        id: req.id.to_owned(),
        message: format!("pidfd_open: {e}"),
    })?;

    let deadline = started + req.timeout;
    let mut stdout_lines = LineSplitter::default();
    let mut stdout_tail = Tail::new(KEEP_BYTES);
    let mut stderr = Tail::new(KEEP_BYTES);
    let mut out_open = true;
    let mut err_open = true;
    let mut status: Option<ExitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut interrupted = false;
    let mut buf = vec![0u8; 64 << 10];

    loop {
        if status.is_some() && (!out_open && !err_open) {
            break;
        }
        if let Some(t) = exited_at
            && t.elapsed() > DRAIN_GRACE
        {
            tracing::debug!("output still open {DRAIN_GRACE:?} after exit; not waiting longer");
            break;
        }
        let now = Instant::now();
        let wait = if status.is_some() {
            DRAIN_GRACE
        } else if timed_out || interrupted {
            Duration::from_millis(200)
        } else {
            deadline.saturating_duration_since(now)
        };
        let timeout =
            PollTimeout::try_from(wait.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);

        let mut fds = Vec::with_capacity(4);
        let out_idx = out_open.then(|| {
            fds.push(PollFd::new(out_r.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let err_idx = err_open.then(|| {
            fds.push(PollFd::new(err_r.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let pid_idx = status.is_none().then(|| {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let wake = crate::interrupt::wake_fd();
        let wake_idx = wake.filter(|_| !interrupted).map(|w| {
            fds.push(PollFd::new(w, PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(RuntimeError::Wait {
                    id: req.id.to_owned(),
                    message: format!("poll: {e}"),
                });
            }
        }
        let ready = |idx: Option<usize>| {
            idx.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (out_ready, err_ready, pid_ready, wake_ready) = (
            ready(out_idx),
            ready(err_idx),
            ready(pid_idx),
            ready(wake_idx),
        );
        drop(fds);

        if out_ready {
            match (&out_r).read(&mut buf) {
                Ok(0) => out_open = false,
                Ok(n) => {
                    stdout_tail.push(&buf[..n]);
                    stdout_lines.push(&buf[..n], on_line);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => out_open = false,
            }
        }
        if err_ready {
            match (&err_r).read(&mut buf) {
                Ok(0) => err_open = false,
                Ok(n) => stderr.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => err_open = false,
            }
        }
        if pid_ready || status.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => status = Some(ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    status = Some(ExitStatus::Signal(sig as i32))
                }
                Ok(_) => {}
                Err(nix::Error::ECHILD) => {
                    // Someone else reaped it: the status is lost, but it is gone.
                    status = Some(ExitStatus::Signal(Signal::SIGKILL as i32));
                }
                Err(_) => {}
            }
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        if wake_ready && crate::interrupt::requested() && status.is_none() {
            interrupted = true;
            tracing::warn!("stopping container {} (interrupted)", req.id);
            live.kill();
        }
        if status.is_none() && !timed_out && !interrupted && Instant::now() >= deadline {
            timed_out = true;
            tracing::warn!(
                "container {} exceeded its timeout of {:?}; killing it",
                req.id,
                req.timeout
            );
            live.kill();
        }
    }
    stdout_lines.finish(on_line);
    tracing::debug!("container {} exited", req.id);
    let oom_killed = host.oom_kills(req.cgroups_path).unwrap_or(0) > 0;
    let outcome = RunOutcome {
        status: status.unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32)),
        timed_out,
        oom_killed,
        interrupted,
        stdout_tail: stdout_tail.into_string(),
        stderr: stderr.into_string(),
    };
    Ok(Exited { outcome, live })
}

fn check_cgroups_path(path: &str) -> Result<(), RuntimeError> {
    let rest = path
        .strip_prefix(CGROUP_PARENT)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or("");
    if rest.is_empty() || rest.contains("..") || rest.contains('/') {
        return Err(RuntimeError::UnsafeCgroupPath(path.to_owned()));
    }
    Ok(())
}

fn create(
    req: &RunRequest<'_>,
    stdin: File,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Container, RuntimeError> {
    let err = |e: libcontainer::error::LibcontainerError| RuntimeError::Create {
        id: req.id.to_owned(),
        message: e.to_string(),
    };
    ContainerBuilder::new(req.id.to_owned(), SyscallType::default())
        .validate_id()
        .map_err(err)?
        .with_root_path(req.state_root)
        .map_err(err)?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(req.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(err)
}

fn restore_cwd(cwd: Option<&Path>) {
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// A created container that is deleted however we leave.
#[derive(Debug)]
struct Live {
    container: Option<Container>,
    id: String,
}

impl Live {
    fn container_mut(&mut self) -> &mut Container {
        self.container
            .as_mut()
            .expect("container is present until deleted")
    }

    fn pid(&mut self) -> Result<nix::unistd::Pid, RuntimeError> {
        self.container_mut()
            .pid()
            .ok_or_else(|| RuntimeError::Wait {
                id: self.id.clone(),
                message: "container has no init pid".to_owned(),
            })
    }

    /// SIGKILL to every process in the container (through its cgroup).
    fn kill(&mut self) {
        if let Err(e) = self.container_mut().kill(Signal::SIGKILL, true) {
            tracing::warn!("cannot kill container {}: {e}", self.id);
        }
    }

    fn delete(&mut self) -> Result<(), RuntimeError> {
        match self.container.take() {
            Some(mut c) => c.delete(true).map_err(|e| RuntimeError::Delete {
                id: self.id.clone(),
                message: e.to_string(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            tracing::error!("{e}");
        }
    }
}

/// Removes a container left behind by a berth that died: kills what still runs in it and
/// removes its state and cgroups. Works from the cgroups path alone when the state is
/// unreadable (libcontainer does not write it atomically).
pub fn remove_orphan(state_root: &Path, id: &str) -> Result<(), RuntimeError> {
    let dir: PathBuf = state_root.join(id);
    let cgroups_path = format!("{CGROUP_PARENT}/{id}");
    check_cgroups_path(&cgroups_path)?;
    let err = |message: String| RuntimeError::Delete {
        id: id.to_owned(),
        message,
    };
    let _lock = LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
    match Container::load(dir.clone()) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                tracing::warn!("libcontainer could not delete {id} ({e}); removing by hand");
            }
        }
        Err(e) => tracing::warn!("cannot load state of {id} ({e}); removing by hand"),
    }
    let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: PathBuf::from(&cgroups_path),
        systemd_cgroup: false,
        container_name: id.to_owned(),
    })
    .map_err(|e| err(format!("cgroup manager: {e}")))?;
    libcgroups::common::CgroupManager::remove(&manager)
        .map_err(|e| err(format!("cgroup {cgroups_path}: {e}")))?;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(format!("state {}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cgroups_below_berth_are_accepted() {
        assert!(check_cgroups_path("/berth/abc-1").is_ok());
        for bad in [
            "",
            "/",
            "/berth",
            "/berth/",
            "/berth/../x",
            "/other/x",
            "berth/x",
            "/berth/a/b",
        ] {
            assert!(check_cgroups_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn signals_read_as_128_plus_n() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(9).code(), 137);
    }
}
