//! A container's own network namespace, connected as its job asks: loopback only, or
//! outbound access through pasta (Debian's `passt` package) with nothing inbound.
//!
//! pasta gives the namespace a tap interface with the host's addresses and routes and
//! translates its traffic to ordinary sockets of the host; berth starts one per container
//! and stops it when the container has ended. How, and why so:
//! - pasta joins the namespace through a bind mount of `/proc/<pid>/ns/net` in a scratch
//!   directory, not through `/proc` itself: it lowers its capabilities before opening the
//!   namespace, and `/proc/<pid>/ns` of the container's init needs ptrace access (a
//!   superset of init's capabilities) that it then no longer has;
//! - as root it runs `--runas 0`: by default it would switch to `nobody`, without the
//!   capability to join a namespace of the initial user namespace (it still drops every
//!   capability but three, and seccomp-confines itself, once set up);
//! - it runs in the foreground as berth's child, in its own process group (a terminal's
//!   Ctrl-C is berth's to handle), with `PR_SET_PDEATHSIG`: a berth killed with SIGKILL
//!   takes it along;
//! - it is ready when it writes its pid file, which it does once the namespace is
//!   configured; it logs to a size-limited file in the scratch directory;
//! - [`NetworkGuard`] stops it: SIGTERM (as soon as the container has ended, with
//!   [`NetworkGuard::stop_soon`]), SIGKILL after a grace period, reaped when dropped;
//! - once pasta configured the namespace, the host fences it off the host's addresses, its
//!   attached subnets and link-local space (`super::fence`), unless the operator allows
//!   them ([`Network::OutboundToHost`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use super::HostError;

/// How a container's network is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host's namespace: nothing to connect.
    Host,
    /// Its own namespace with only `lo`, which is brought up.
    Loopback,
    /// Its own namespace with `lo` and outbound access through pasta; no port of the host
    /// leads into it, and the host's addresses, its attached subnets and link-local space
    /// are fenced off (see `fence`).
    Outbound,
    /// As [`Network::Outbound`], without the fence: the operator allows the host and its
    /// networks (`--allow-host-access`).
    OutboundToHost,
}

impl Network {
    /// Whether pasta connects it.
    pub fn outbound(self) -> bool {
        matches!(self, Network::Outbound | Network::OutboundToHost)
    }
}

/// The address inside the namespace where pasta answers DNS, forwarding to the host's
/// first resolver: the `nameserver` a container's `/etc/resolv.conf` should name.
pub const DNS_FORWARD: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The program berth runs, looked up in `PATH`.
const PASTA: &str = "pasta";

/// Where programs are looked up when berth has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long pasta may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness is checked; pasta needs a few tens of milliseconds.
const READY_POLL: Duration = Duration::from_millis(2);

/// How long pasta has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// pasta's log file size limit (it rotates within it).
const LOG_BYTES: u64 = 64 << 10;

/// How much of pasta's complaints goes into an error message.
const DETAIL_LINES: usize = 3;

/// The files of one connection, in its scratch directory.
#[derive(Debug, Clone)]
struct PastaFiles {
    /// The bind mount of the container's network namespace.
    netns: PathBuf,
    pid: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
}

impl PastaFiles {
    fn in_dir(dir: &Path) -> PastaFiles {
        PastaFiles {
            netns: dir.join("netns"),
            pid: dir.join("pasta.pid"),
            log: dir.join("pasta.log"),
            stderr: dir.join("pasta.stderr"),
        }
    }
}

/// pasta's command line: join the namespace at `files.netns`, configure its address,
/// routes and DNS forwarding, forward no port in either direction.
fn pasta_args(files: &PastaFiles, as_root: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--quiet", "--foreground"].map(OsString::from).to_vec();
    if as_root {
        args.extend(["--runas", "0"].map(OsString::from));
    }
    args.extend(
        [
            "--config-net",
            // Nothing of the host's (-t, -u) or of the namespace's (-T, -U) is forwarded to
            // the other side: a container reaches out, nothing reaches in.
            "--tcp-ports",
            "none",
            "--udp-ports",
            "none",
            "--tcp-ns",
            "none",
            "--udp-ns",
            "none",
            // By default pasta maps the gateway address to the host's loopback: every service
            // bound to the host's 127.0.0.1 (databases, registries, agents) would be one hop
            // away from the component. A bridge reaches out, not into its host.
            "--no-map-gw",
            "--dns-forward",
        ]
        .map(OsString::from),
    );
    args.push(DNS_FORWARD.to_string().into());
    args.push("--log-file".into());
    args.push(files.log.clone().into());
    args.push("--log-size".into());
    args.push(LOG_BYTES.to_string().into());
    args.push("--pid".into());
    args.push(files.pid.clone().into());
    args.push("--netns".into());
    args.push(files.netns.clone().into());
    args
}

/// `name` in the directories of `path` (a `PATH` value; the usual system directories
/// when there is none).
fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path.unwrap_or_else(|| OsStr::new(DEFAULT_PATH));
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The error for a host without pasta, naming the package that brings it.
pub fn pasta_missing(path: Option<&OsStr>) -> HostError {
    let path = path.map_or_else(|| "unset".into(), OsStr::to_string_lossy);
    HostError::PastaMissing(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {PASTA} in PATH ({path})"),
    ))
}

/// A `/etc/resolv.conf` for a container connected by pasta: the host's search domains and
/// options, and pasta's DNS forwarder as the only nameserver (the host's own may be on
/// its loopback, which the container cannot reach).
pub fn resolv_conf(host: &str) -> String {
    let mut out = format!("nameserver {DNS_FORWARD}\n");
    for line in host.lines().map(str::trim) {
        let keyword = line.split_whitespace().next().unwrap_or("");
        if matches!(keyword, "search" | "domain" | "options") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Connects the network namespace of `pid` to the outside through pasta, using `scratch`
/// (created here, removed by the guard) for its files. Call it from a thread that outlives
/// the guard: pasta's parent-death signal follows the thread that started it.
pub fn connect(pid: i32, scratch: &Path, as_root: bool) -> Result<NetworkGuard, HostError> {
    connect_searching(pid, scratch, as_root, std::env::var_os("PATH").as_deref())
}

/// [`connect`], with pasta looked up in `path`.
fn connect_searching(
    pid: i32,
    scratch: &Path,
    as_root: bool,
    path: Option<&OsStr>,
) -> Result<NetworkGuard, HostError> {
    let program = find_program(PASTA, path).ok_or_else(|| pasta_missing(path))?;
    let mut guard = NetworkGuard {
        pid,
        dir: scratch.to_owned(),
        files: PastaFiles::in_dir(scratch),
        mounted: false,
        child: None,
        stopping_since: None,
    };
    guard.bind_netns()?;
    guard.spawn(&program, as_root)?;
    guard.wait_ready()?;
    tracing::debug!("pasta connected the network of pid {pid}");
    Ok(guard)
}

/// A running pasta and its scratch directory: dropping it stops pasta, reaps it, and
/// removes the directory. Also cleans up after a connection that failed half-way.
#[derive(Debug)]
pub struct NetworkGuard {
    /// The container's init, whose namespace this connects.
    pid: i32,
    dir: PathBuf,
    files: PastaFiles,
    mounted: bool,
    child: Option<Child>,
    /// When pasta was asked to stop.
    stopping_since: Option<Instant>,
}

impl NetworkGuard {
    fn scratch_err(&self) -> impl Fn(io::Error) -> HostError + '_ {
        |source| HostError::NetworkScratch {
            pid: self.pid,
            dir: self.dir.clone(),
            source,
        }
    }

    fn bind_netns(&mut self) -> Result<(), HostError> {
        std::fs::create_dir(&self.dir).map_err(self.scratch_err())?;
        File::create(&self.files.netns).map_err(self.scratch_err())?;
        let ns = format!("/proc/{}/ns/net", self.pid);
        nix::mount::mount(
            Some(ns.as_str()),
            &self.files.netns,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| (self.scratch_err())(e.into()))?;
        self.mounted = true;
        Ok(())
    }

    fn spawn(&mut self, program: &Path, as_root: bool) -> Result<(), HostError> {
        let stderr = File::create(&self.files.stderr).map_err(self.scratch_err())?;
        let mut cmd = Command::new(program);
        cmd.args(pasta_args(&self.files, as_root))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        let parent = nix::unistd::getpid();
        // JUSTIFICATION: the parent-death signal can only be set in the child between fork
        // and exec; std has no safe API for it.
        // SAFETY: the closure only makes two syscalls (prctl, getppid), which are
        // async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // berth died before the signal was armed: nobody will ever stop pasta.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::from(io::ErrorKind::BrokenPipe));
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => pasta_missing(std::env::var_os("PATH").as_deref()),
            _ => HostError::PastaSpawn {
                program: program.to_owned(),
                source,
            },
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for pasta's pid file: written once the namespace is configured.
    fn wait_ready(&mut self) -> Result<(), HostError> {
        let started = Instant::now();
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(self.failed("pasta is not running".into()));
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(self.failed(format!("pasta exited ({status})")));
            }
            let written = std::fs::read_to_string(&self.files.pid)
                .is_ok_and(|s| s.trim().parse::<u32>().is_ok());
            if written {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(HostError::PastaTimeout {
                    pid: self.pid,
                    waited: READY_TIMEOUT,
                });
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// The error for a pasta that gave up, with its last words.
    fn failed(&self, what: String) -> HostError {
        let mut said: Vec<String> = [&self.files.stderr, &self.files.log]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
            // Its complaints about a missing syslog, and its version banner, are noise.
            .filter(|l| !l.is_empty() && !l.contains("syslog") && !l.contains(" version"))
            .collect();
        said.dedup();
        let tail = said.len().saturating_sub(DETAIL_LINES);
        let detail = match said[tail..].join("; ") {
            s if s.is_empty() => what,
            s => format!("{what}: {s}"),
        };
        HostError::PastaFailed {
            pid: self.pid,
            detail,
        }
    }

    /// Asks pasta to stop (SIGTERM) and removes its files, without waiting for it: a
    /// process with a tap device takes tens of milliseconds to exit, which can pass while
    /// the container is removed. (pasta keeps the namespace open; it needs none of its
    /// files any more.) Dropping the guard reaps it, killing it if it has not exited
    /// within the grace period by then.
    pub fn stop_soon(&mut self) {
        if let (Some(child), None) = (&self.child, self.stopping_since) {
            terminate(child);
            self.stopping_since = Some(Instant::now());
        }
        self.remove_files();
    }

    /// Unmounts the namespace's handle and removes the scratch directory.
    fn remove_files(&mut self) {
        if self.mounted {
            match nix::mount::umount2(&self.files.netns, MntFlags::MNT_DETACH) {
                Ok(()) => self.mounted = false,
                Err(e) => tracing::warn!("cannot unmount {}: {e}", self.files.netns.display()),
            }
        }
        if let Err(e) = crate::util::remove_tree(&self.dir) {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }

    /// Stops pasta (SIGTERM, then SIGKILL after the grace period) and reaps it.
    fn stop_pasta(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let since = *self.stopping_since.get_or_insert_with(|| {
                terminate(&child);
                Instant::now()
            });
            if !exits_within(&child, STOP_GRACE.saturating_sub(since.elapsed())) {
                tracing::warn!("pasta (pid {}) ignored SIGTERM; killing it", child.id());
                let _ = child.kill();
            }
        }
        if let Err(e) = child.wait() {
            tracing::warn!("cannot reap pasta (pid {}): {e}", child.id());
        }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        self.stop_pasta();
        self.remove_files();
    }
}

/// SIGTERM to a child that has not been reaped (so its pid is still its own).
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Whether `child` exits within `grace` (it is not reaped here).
fn exits_within(child: &Child, grace: Duration) -> bool {
    let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        // Already reaped by someone, or no pidfd support: nothing to wait for here.
        return false;
    };
    let ms = i32::try_from(grace.as_millis()).unwrap_or(i32::MAX);
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let deadline = Instant::now() + grace;
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => return true,
            Err(nix::Error::EINTR) if Instant::now() < deadline => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_text(as_root: bool) -> Vec<String> {
        let files = PastaFiles::in_dir(Path::new("/run/x/net"));
        pasta_args(&files, as_root)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value that follows `flag`, which must appear once.
    fn value_of<'a>(args: &'a [String], flag: &str) -> &'a str {
        let at: Vec<usize> = (0..args.len()).filter(|&i| args[i] == flag).collect();
        assert_eq!(at.len(), 1, "{flag} in {args:?}");
        &args[at[0] + 1]
    }

    #[test]
    fn pasta_forwards_nothing_in_either_direction() {
        let args = args_text(true);
        for flag in ["--tcp-ports", "--udp-ports", "--tcp-ns", "--udp-ns"] {
            assert_eq!(value_of(&args, flag), "none", "{flag}");
        }
    }

    #[test]
    fn pasta_joins_the_bound_namespace_configures_it_and_reports_readiness() {
        let args = args_text(true);
        assert_eq!(value_of(&args, "--netns"), "/run/x/net/netns");
        assert_eq!(value_of(&args, "--pid"), "/run/x/net/pasta.pid");
        assert_eq!(value_of(&args, "--log-file"), "/run/x/net/pasta.log");
        assert_eq!(value_of(&args, "--dns-forward"), "169.254.1.1");
        for flag in ["--config-net", "--foreground", "--quiet", "--no-map-gw"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        // A PID as the last argument would join the init's user namespace too.
        assert_eq!(args.last().map(String::as_str), Some("/run/x/net/netns"));
    }

    #[test]
    fn pasta_stays_root_only_when_berth_is() {
        assert_eq!(value_of(&args_text(true), "--runas"), "0");
        assert!(!args_text(false).iter().any(|a| a == "--runas"));
    }

    #[test]
    fn programs_are_found_in_path_and_only_there() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("pasta");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(find_program("pasta", Some(&path)), Some(exe.clone()));
        assert_eq!(
            find_program("pasta", Some(OsStr::new("/nonexistent"))),
            None
        );
        // Not executable: not a program.
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_program("pasta", Some(&path)), None);
        // Relative PATH entries are never searched (berth runs as root).
        assert_eq!(find_program("pasta", Some(OsStr::new("."))), None);
    }

    #[test]
    fn a_host_without_pasta_fails_at_once_naming_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("net");
        let e = connect_searching(1, &scratch, true, Some(OsStr::new("/nonexistent"))).unwrap_err();
        assert!(matches!(e, HostError::PastaMissing(_)), "{e:?}");
        let text = crate::util::chain(&e);
        assert!(text.contains("apt-get install passt"), "{text}");
        assert!(text.contains("/nonexistent"), "{text}");
        assert!(!scratch.exists(), "nothing is prepared without pasta");
    }

    #[test]
    fn resolv_conf_names_the_forwarder_and_keeps_search_and_options() {
        let host =
            "# generated\nnameserver 127.0.0.53\nsearch corp.example\noptions edns0 trust-ad\n";
        assert_eq!(
            resolv_conf(host),
            "nameserver 169.254.1.1\nsearch corp.example\noptions edns0 trust-ad\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 169.254.1.1\n");
    }
}
