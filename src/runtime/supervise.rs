//! Watching a started container to its end: stdout streamed line by line, stderr kept, the
//! exit status reaped; at the deadline or when the operator interrupts, stopped as `docker
//! stop` stops one (SIGTERM to its init, SIGKILL to all of it after a grace period); killed
//! at once when what it wrote to disk passes its cap (measured now and then: see
//! [`DiskWatch`]).
//!
//! One `poll` covers the two output pipes, a pidfd of the container's init and the
//! interrupt pipe, so berth needs no threads while a container runs (libcontainer clones
//! without atfork handlers; fewer threads, fewer surprises).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::output::{LineSplitter, Tail};
use super::{DiskExceeded, DiskWatch, ExitStatus, RunOutcome, RuntimeError};

/// stderr and the stdout tail kept for the job's message.
const KEEP_BYTES: usize = 1 << 20;

/// After init exits, how long to wait for the output pipes to drain.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long one poll may sleep once a kill was sent (the pidfd wakes it earlier).
const AFTER_KILL_POLL: Duration = Duration::from_millis(200);

/// A container still running this long after it was killed is killed again: a kill can
/// fail, and nothing may outlive its deadline.
const KILL_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// One read from a pipe.
const READ_CHUNK: usize = 64 << 10;

/// The shortest time between two disk measurements.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// A measurement may take at most this share of the time (1/N): a tree of many files is
/// measured less often.
const MEASURE_SHARE: u32 = 10;

/// A started container's init process and the read ends of its output pipes.
#[derive(Debug)]
pub struct Watched {
    pub id: String,
    pub pid: Pid,
    pub stdout: File,
    pub stderr: File,
    pub deadline: Instant,
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL when the container is stopped.
    pub stop_grace: Duration,
    pub disk: Option<DiskWatch>,
}

/// Where one wait stands.
#[derive(Debug)]
struct Watch {
    stdout_lines: LineSplitter,
    stdout_tail: Tail,
    stderr: Tail,
    out_open: bool,
    err_open: bool,
    status: Option<ExitStatus>,
    exited_at: Option<Instant>,
    timed_out: bool,
    interrupted: bool,
    /// When a stop's grace period ends (SIGTERM was sent to init).
    grace_ends: Option<Instant>,
    /// When the last kill was sent.
    killed_at: Option<Instant>,
    /// When the disk is measured next.
    measure_at: Instant,
    disk_exceeded: Option<DiskExceeded>,
    buf: Vec<u8>,
}

/// Which of the polled descriptors are readable.
#[derive(Debug, Default, Clone, Copy)]
struct Ready {
    out: bool,
    err: bool,
    pid: bool,
    wake: bool,
}

/// Waits for the container to end, streaming stdout to `on_line`; `kill` SIGKILLs every
/// process of the container (past its disk cap, or its stop grace after SIGTERM at the
/// deadline or when the operator interrupts).
pub fn wait(
    w: &Watched,
    kill: &mut dyn FnMut(),
    on_line: &mut dyn FnMut(&str),
) -> Result<RunOutcome, RuntimeError> {
    let pidfd = pidfd(w)?;
    let mut watch = Watch::new();
    while !watch.done() {
        let ready = watch.poll(w, &pidfd)?;
        watch.read_outputs(w, ready, on_line);
        if ready.pid || watch.status.is_none() {
            watch.reap(w.pid);
        }
        watch.watch_disk(w);
        watch.enforce(w, ready, &pidfd, kill);
    }
    // What it left counts too: a burst just before the end, between two measurements.
    if watch.disk_exceeded.is_none() && !watch.interrupted {
        watch.disk_exceeded = w.disk.as_ref().and_then(DiskWatch::exceeded);
    }
    watch.stdout_lines.finish(on_line);
    tracing::debug!("container {} exited", w.id);
    Ok(watch.into_outcome())
}

fn pidfd(w: &Watched) -> Result<OwnedFd, RuntimeError> {
    let err = |source: std::io::Error| RuntimeError::Wait {
        id: w.id.clone(),
        what: "pidfd_open",
        source,
    };
    let pid = rustix::process::Pid::from_raw(w.pid.as_raw())
        .ok_or_else(|| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| err(e.into()))
}

impl Watch {
    fn new() -> Watch {
        Watch {
            stdout_lines: LineSplitter::default(),
            stdout_tail: Tail::new(KEEP_BYTES),
            stderr: Tail::new(KEEP_BYTES),
            out_open: true,
            err_open: true,
            status: None,
            exited_at: None,
            timed_out: false,
            interrupted: false,
            grace_ends: None,
            killed_at: None,
            measure_at: Instant::now() + MEASURE_EVERY,
            disk_exceeded: None,
            buf: vec![0u8; READ_CHUNK],
        }
    }

    /// Init has exited and its output is drained — or is still held open by something that
    /// outlived it, which is not worth waiting for.
    fn done(&self) -> bool {
        if self.status.is_some() && !self.out_open && !self.err_open {
            return true;
        }
        let drained_too_long = self.exited_at.is_some_and(|t| t.elapsed() > DRAIN_GRACE);
        if drained_too_long {
            tracing::debug!("output still open {DRAIN_GRACE:?} after exit; not waiting longer");
        }
        drained_too_long
    }

    fn poll_timeout(&self, w: &Watched) -> PollTimeout {
        let now = Instant::now();
        let wait = if self.status.is_some() {
            DRAIN_GRACE
        } else if self.killing() {
            AFTER_KILL_POLL
        } else if w.disk.is_some() {
            w.deadline
                .min(self.measure_at)
                .saturating_duration_since(now)
        } else {
            w.deadline.saturating_duration_since(now)
        };
        let ms = i32::try_from(wait.as_millis().min(60_000)).unwrap_or(60_000);
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    }

    fn poll(&self, w: &Watched, pidfd: &OwnedFd) -> Result<Ready, RuntimeError> {
        let mut fds = Vec::with_capacity(4);
        let mut slot = |on: bool, fd| {
            on.then(|| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            })
        };
        let out = slot(self.out_open, w.stdout.as_fd());
        let err = slot(self.err_open, w.stderr.as_fd());
        let pid = slot(self.status.is_none(), pidfd.as_fd());
        let wake = match crate::interrupt::wake_fd() {
            Some(fd) => slot(!self.interrupted, fd),
            None => None,
        };
        match poll(&mut fds, self.poll_timeout(w)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(RuntimeError::Wait {
                    id: w.id.clone(),
                    what: "poll",
                    source: e.into(),
                });
            }
        }
        let ready = |idx: Option<usize>| {
            idx.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        Ok(Ready {
            out: ready(out),
            err: ready(err),
            pid: ready(pid),
            wake: ready(wake),
        })
    }

    fn read_outputs(&mut self, w: &Watched, ready: Ready, on_line: &mut dyn FnMut(&str)) {
        if ready.out {
            match read_some(&w.stdout, &mut self.buf) {
                Some(0) | None => self.out_open = false,
                Some(n) => {
                    self.stdout_tail.push(&self.buf[..n]);
                    self.stdout_lines.push(&self.buf[..n], on_line);
                }
            }
        }
        if ready.err {
            match read_some(&w.stderr, &mut self.buf) {
                Some(0) | None => self.err_open = false,
                Some(n) => self.stderr.push(&self.buf[..n]),
            }
        }
    }

    fn reap(&mut self, pid: Pid) {
        if self.status.is_some() {
            return;
        }
        self.status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitStatus::Signal(sig as i32)),
            // Someone else reaped it: the status is lost, but it is gone.
            Err(nix::Error::ECHILD) => Some(ExitStatus::Signal(Signal::SIGKILL as i32)),
            Ok(_) | Err(_) => None,
        };
        if self.status.is_some() {
            self.exited_at = Some(Instant::now());
        }
    }

    /// A kill was sent for one reason or another.
    fn killing(&self) -> bool {
        self.timed_out || self.interrupted || self.disk_exceeded.is_some()
    }

    /// Measures what the running container wrote when it is time to, remembering when it
    /// went past its cap (`enforce` kills it).
    fn watch_disk(&mut self, w: &Watched) {
        let Some(disk) = &w.disk else { return };
        let now = Instant::now();
        // Also during a stop's grace period: stopping is no licence to fill the disk.
        let past = self.disk_exceeded.is_some() || self.killed_at.is_some();
        if self.status.is_some() || past || now < self.measure_at {
            return;
        }
        self.disk_exceeded = disk.exceeded();
        let took = now.elapsed();
        self.measure_at = Instant::now() + MEASURE_EVERY.max(took * MEASURE_SHARE);
        if let Some(over) = self.disk_exceeded {
            tracing::warn!(
                "container {} wrote {} bytes, past its disk cap of {}; killing it",
                w.id,
                over.written,
                disk.cap
            );
        }
    }

    /// Stops the container when the operator interrupts or the deadline passes, kills it
    /// past its disk cap or at the end of the stop's grace period, and again while it
    /// still runs.
    fn enforce(&mut self, w: &Watched, ready: Ready, pidfd: &OwnedFd, kill: &mut dyn FnMut()) {
        if self.status.is_some() {
            return;
        }
        let now = Instant::now();
        if ready.wake && crate::interrupt::requested() && !self.interrupted {
            self.interrupted = true;
            tracing::warn!(
                "stopping container {} (interrupted): SIGTERM, SIGKILL in {:?}",
                w.id,
                w.stop_grace
            );
            self.stop(w, pidfd, now);
        } else if !self.killing() && now >= w.deadline {
            self.timed_out = true;
            tracing::warn!(
                "container {} exceeded its timeout of {:?}; stopping it: SIGTERM, SIGKILL in {:?}",
                w.id,
                w.timeout,
                w.stop_grace
            );
            self.stop(w, pidfd, now);
        }
        let due = match self.killed_at {
            Some(killed) => now.duration_since(killed) >= KILL_AGAIN_AFTER,
            None => self.disk_exceeded.is_some() || self.grace_ends.is_some_and(|t| now >= t),
        };
        if due {
            self.killed_at = Some(now);
            kill();
        }
    }

    /// SIGTERM to the container's init, as `docker stop` sends it (init alone: what it
    /// started is its to stop). Through the pidfd, so it never reaches a recycled pid.
    fn stop(&mut self, w: &Watched, pidfd: &OwnedFd, now: Instant) {
        if self.grace_ends.is_some() {
            return;
        }
        self.grace_ends = Some(now + w.stop_grace);
        match rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::TERM) {
            // ESRCH: it has just exited; the next reap sees it.
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                tracing::warn!("cannot send SIGTERM to container {}: {e}; killing it", w.id);
                // No grace without a signal: the kill is due at once.
                self.grace_ends = Some(now);
            }
        }
    }

    fn into_outcome(self) -> RunOutcome {
        RunOutcome {
            status: self
                .status
                .unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32)),
            timed_out: self.timed_out,
            oom_killed: false,
            oom_known: false,
            interrupted: self.interrupted,
            disk_exceeded: self.disk_exceeded,
            stdout_tail: self.stdout_tail.into_string(),
            stderr: self.stderr.into_string(),
            usage: crate::host::CgroupUsage::default(),
        }
    }
}

/// One read; `None` when the pipe failed (treated as closed), retried on EINTR.
fn read_some(mut f: &File, buf: &mut [u8]) -> Option<usize> {
    loop {
        match f.read(buf) {
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}
