//! The real runtime: youki's libcontainer, in process.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;

use super::supervise::{self, Watched};
use super::{RunOutcome, RunRequest, Runtime, RuntimeError, check_cgroups_path};
use crate::host::{Host, NetworkGuard};

/// Where, in a container's bundle, the host keeps what connects its network.
const NETWORK_DIR: &str = "net";

/// `build()` and `start()` chdir the whole process and bind sockets by relative path: two
/// at once in one process start each other's containers (libcontainer.md, pitfall 2).
static LIFECYCLE: Mutex<()> = Mutex::new(());

/// libcontainer, with the host seam for what berth does around it (the network, OOM
/// counters, cgroups of dead containers).
#[derive(Debug)]
pub struct Youki<'h> {
    host: &'h dyn Host,
    /// Containers that ended and still exist, until [`Runtime::delete`].
    ended: Mutex<HashMap<String, Live>>,
}

impl<'h> Youki<'h> {
    pub fn new(host: &'h dyn Host) -> Youki<'h> {
        Youki {
            host,
            ended: Mutex::new(HashMap::new()),
        }
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the container and starts it, under the lifecycle lock.
    fn create_and_start(
        &self,
        req: &RunRequest<'_>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Live, RuntimeError> {
        let devnull = File::open("/dev/null").map_err(|source| RuntimeError::Io {
            what: "/dev/null",
            source,
        })?;
        let _lock = LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
        let cwd = std::env::current_dir().ok();
        // libcontainer creates the container's cgroups (and its state) with the process's
        // umask: under berth's 077 a container root that is nobody on the host could not
        // even read its own limits. The lock keeps every other creation out meanwhile.
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let created = create(req, devnull, stdout, stderr);
        nix::sys::stat::umask(umask);
        restore_cwd(cwd.as_deref());
        let mut live = Live {
            container: Some(created?),
            id: req.id.to_owned(),
            network: None,
        };
        tracing::debug!("container {} created", req.id);
        self.host.limit_cgroup(req.cgroups_path, &req.limits)?;
        let pid = live.pid()?.as_raw();
        // Inherited by everything the component forks. Without it the OOM killer may take
        // berth instead (its mapped binary outweighs a component that just started).
        if let Err(e) = self.host.oom_first(pid) {
            tracing::warn!("{}", crate::util::chain(&e));
        }
        let scratch = req.bundle.join(NETWORK_DIR);
        live.network = self.host.attach_network(pid, req.network, &scratch)?;
        let started = live.container_mut()?.start();
        restore_cwd(cwd.as_deref());
        started.map_err(|e| RuntimeError::Start {
            id: req.id.to_owned(),
            source: Box::new(e),
        })?;
        tracing::debug!("container {} started", req.id);
        Ok(live)
    }
}

impl Runtime for Youki<'_> {
    fn run(
        &self,
        req: &RunRequest<'_>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<RunOutcome, RuntimeError> {
        check_cgroups_path(req.cgroups_path, req.id)?;
        let pipe_err = |source: std::io::Error| RuntimeError::Io {
            what: "output pipe",
            source,
        };
        let (out_r, out_w) = pipe().map_err(pipe_err)?;
        let (err_r, err_w) = pipe().map_err(pipe_err)?;
        let started = Instant::now();
        let stderr = File::from(err_r);
        let mut live = self
            .create_and_start(req, out_w, err_w)
            .map_err(|e| with_init_log(e, &stderr))?;
        let watched = Watched {
            id: req.id.to_owned(),
            pid: live.pid()?,
            stdout: File::from(out_r),
            stderr,
            deadline: started + req.timeout,
            timeout: req.timeout,
            stop_grace: req.stop_grace,
            disk: req.disk.cloned(),
        };
        let host = self.host;
        let cgroups = req.cgroups_path;
        let mut kill = || {
            if let Err(e) = live.kill() {
                // The container must stop all the same: through its cgroup, as gc does.
                tracing::warn!("{}; killing its cgroup instead", crate::util::chain(&e));
                if let Err(e) = host.kill_cgroup(cgroups) {
                    tracing::error!("{}", crate::util::chain(&e));
                }
            }
        };
        let mut outcome = supervise::wait(&watched, &mut kill, on_line)?;
        // Init has ended, and with it every process of the container's pid namespace:
        // nothing needs the network any more. pasta exits while the container is removed,
        // and is reaped with it.
        if let Some(network) = live.network.as_mut() {
            network.stop_soon();
        }
        let oom_kills = self.host.oom_kills(req.cgroups_path);
        outcome.oom_known = oom_kills.is_some();
        outcome.oom_killed = oom_kills.unwrap_or(0) > 0;
        outcome.usage = self.host.cgroup_usage(req.cgroups_path);
        self.ended().insert(req.id.to_owned(), live);
        Ok(outcome)
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let live = self.ended().remove(id);
        let mut live = live.ok_or_else(|| RuntimeError::Unknown(id.to_owned()))?;
        live.delete()?;
        tracing::debug!("container {id} deleted");
        Ok(())
    }

    fn remove_orphan(
        &self,
        state_root: &Path,
        id: &str,
        cgroups: &[PathBuf],
    ) -> Result<(), RuntimeError> {
        let dir = state_root.join(id);
        // The state usually died with its berth (it lives on that berth's private tmpfs).
        if dir.join("state.json").is_file() {
            let _lock = LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
            match Container::load(dir.clone()) {
                Ok(mut c) => {
                    if let Err(e) = c.delete(true) {
                        tracing::warn!(
                            "libcontainer could not delete {id} ({e}); removing by hand"
                        );
                    }
                }
                Err(e) => tracing::warn!("cannot load state of {id} ({e}); removing by hand"),
            }
        }
        // A process that forks as fast as it is killed survives one pass of libcontainer's
        // kill; the host freezes and kills until the cgroup is empty, then removes it.
        self.host.remove_cgroup(cgroups)?;
        crate::util::remove_tree(&dir).map_err(|source| RuntimeError::Io {
            what: "container state",
            source,
        })
    }
}

/// The most of init's own log a failure to create or start carries.
const INIT_LOG_BYTES: usize = 4096;

/// A failed create or start, with what libcontainer's init logged about it: init logs to
/// the container's stderr, which nobody reads when the container never starts.
fn with_init_log(e: RuntimeError, stderr: &File) -> RuntimeError {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut log = Vec::new();
    // Everything init wrote is already in the pipe; never wait for more.
    if fcntl(stderr.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok() {
        let _ = stderr.take(1 << 20).read_to_end(&mut log);
    }
    let text = String::from_utf8_lossy(&log);
    let text = text.trim();
    if text.is_empty() {
        return e;
    }
    let start = text.len().saturating_sub(INIT_LOG_BYTES);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let log = text[start..].to_owned();
    match e {
        RuntimeError::Create { id, source } => RuntimeError::Create {
            id,
            source: Box::new(InitLog { source, log }),
        },
        RuntimeError::Start { id, source } => RuntimeError::Start {
            id,
            source: Box::new(InitLog { source, log }),
        },
        other => other,
    }
}

/// An error of libcontainer's with the log its init process left.
#[derive(Debug, thiserror::Error)]
#[error("{source} (init said: {log})")]
struct InitLog {
    source: Box<dyn std::error::Error + Send + Sync>,
    log: String,
}

fn create(
    req: &RunRequest<'_>,
    stdin: File,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Container, RuntimeError> {
    let err = |e: LibcontainerError| RuntimeError::Create {
        id: req.id.to_owned(),
        source: Box::new(e),
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

/// A created container that is deleted however we leave, and what connects its network,
/// stopped after it (fields drop after `Drop::drop`).
#[derive(Debug)]
struct Live {
    container: Option<Container>,
    id: String,
    network: Option<NetworkGuard>,
}

impl Live {
    fn container_mut(&mut self) -> Result<&mut Container, RuntimeError> {
        self.container
            .as_mut()
            .ok_or_else(|| RuntimeError::Unknown(self.id.clone()))
    }

    fn pid(&mut self) -> Result<nix::unistd::Pid, RuntimeError> {
        let id = self.id.clone();
        self.container_mut()?
            .pid()
            .ok_or_else(|| RuntimeError::Wait {
                id,
                what: "finding init's pid",
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }

    /// SIGKILL to every process in the container (through its cgroup).
    fn kill(&mut self) -> Result<(), RuntimeError> {
        let id = self.id.clone();
        self.container_mut()?
            .kill(Signal::SIGKILL, true)
            .map_err(|e| RuntimeError::Kill {
                id,
                source: Box::new(e),
            })
    }

    fn delete(&mut self) -> Result<(), RuntimeError> {
        match self.container.take() {
            Some(mut c) => c.delete(true).map_err(|e| RuntimeError::Delete {
                id: self.id.clone(),
                source: Box::new(e),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            tracing::error!("{}", crate::util::chain(&e));
        }
    }
}
