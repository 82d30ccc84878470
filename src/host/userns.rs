//! Rootless operators: berth re-executes itself inside a user namespace it owns, where it is
//! root, and does all its work there — as podman does (`podman unshare`).
//!
//! Why the whole process and not single operations: unpacking an image means giving its
//! files the image's owners, mounting the job's overlay, reading what a component running
//! as any uid left in `/data/out`, and removing job trees those uids own. Inside the
//! namespace all of that is the same code a root operator runs; outside, none of it is
//! allowed. What still differs (cgroups only where root delegated them, no device nodes, no
//! rlimits above the operator's) is asked of [`super::Host`].
//!
//! The namespace maps id 0 to the operator and ids 1..=65536 to the operator's subordinate
//! range (`/etc/subuid`, `/etc/subgid`, written by the setuid `newuidmap`/`newgidmap`).
//! Containers share this namespace, as with rootless podman: their root is the operator on
//! the host, and their other ids are the subordinate range. Two things rule out a nested
//! namespace of their own. Mapped to ids 1..=65536 here, a container's root could not
//! traverse the operator's home to its bundle and `/data`. Mapped to 0..65535, the range
//! spans both of this namespace's extents, which the kernel refuses for a single mapping
//! (and libcontainer writes two only through `newuidmap`, which has no say in here).
//! Without subordinate ids the namespace maps the operator alone.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

use serde::Serialize;

use super::IdMap;

/// The environment variable that tells a re-executed berth it is the namespace's side:
/// `FD` (the socket to its parent) to enter it, `in:FD` once inside. Checked, not trusted:
/// the socket must come from this process's parent, running as the same user the same
/// berth program, and the ids come from the kernel (the operator's own, then the
/// namespace's maps), never from the variable.
const MARKER: &str = "_BERTH_USERNS";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cannot start berth again inside a user namespace")]
    Spawn(#[source] std::io::Error),
    #[error("cannot talk to the berth inside the user namespace")]
    Sync(#[source] std::io::Error),
    #[error("cannot create a user namespace (are unprivileged user namespaces disabled?)")]
    Unshare(#[source] std::io::Error),
    #[error("cannot map ids with {program} (is the `uidmap` package installed?)")]
    MapperMissing {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} refused to map {ranges}: {detail}; check /etc/subuid and /etc/subgid")]
    MapperFailed {
        program: &'static str,
        ranges: String,
        detail: String,
    },
    #[error("cannot map the operator's own ids into the user namespace")]
    SelfMap(#[source] std::io::Error),
    #[error("cannot become root of the user namespace")]
    BecomeRoot(#[source] std::io::Error),
    #[error(
        "{MARKER} is set, but berth did not start this process to enter its user namespace \
         ({0}); unset it"
    )]
    Untrusted(String),
    #[error("cannot start berth again inside its user namespace")]
    Exec(#[source] std::io::Error),
}

/// Who a rootless berth is on the host: what its namespace's ids are outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rootless {
    pub uid: u32,
    pub gid: u32,
    /// The host ids of namespace ids 1..=65536, if the operator has subordinate ids.
    pub subordinate: Option<IdMap>,
}

impl Rootless {
    /// The ids containers get, as this namespace sees them: 0..65535 with subordinate ids,
    /// else the operator alone (id 0 here).
    pub fn container_ids(&self) -> IdMap {
        let size = match self.subordinate {
            Some(_) => super::ids::CONTAINER_IDS,
            None => 1,
        };
        IdMap {
            uid_start: 0,
            gid_start: 0,
            size,
        }
    }

    /// What containers' uids are on the host, for the job result: `0:UID:1` (root is the
    /// operator) and `1:START:65535` (the rest in the subordinate range).
    pub fn host_ids(&self) -> String {
        match self.subordinate {
            Some(s) => format!("0:{}:1,1:{}:{}", self.uid, s.uid_start, s.size - 1),
            None => format!("0:{}:1", self.uid),
        }
    }
}

impl Rootless {
    /// The unprivileged operator running this process, with its subordinate ranges
    /// (`/etc/subuid`, `/etc/subgid`) if it has ranges large enough for a container.
    pub fn operator() -> Rootless {
        let uid = nix::unistd::geteuid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name);
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
        let subordinate = name
            .as_deref()
            .and_then(|n| IdMap::from_subordinate(&subuid, &subgid, n, uid.as_raw()));
        Rootless {
            uid: uid.as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            subordinate,
        }
    }
}

/// Which side of the re-execution this process is.
#[derive(Debug)]
pub enum Side {
    /// Not asked for: berth runs as it was started.
    Outside,
    /// The re-executed berth, now root of its namespace.
    Inside(Rootless),
}

/// In the re-executed berth: finishes entering the namespace. Call first thing in `main`,
/// while the process has a single thread (unshare refuses otherwise).
pub fn enter_if_asked() -> Result<Side, UsernsError> {
    let Some(value) = std::env::var_os(MARKER) else {
        return Ok(Side::Outside);
    };
    let text = value.to_string_lossy().into_owned();
    // SAFETY: called at the start of main, before any thread exists, so nothing can read the
    // environment concurrently.
    // JUSTIFICATION: the marker must not reach the processes berth starts (pasta, mappers).
    unsafe { std::env::remove_var(MARKER) };
    let (inside, fd) = match text.strip_prefix("in:") {
        Some(fd) => (true, fd),
        None => (false, text.as_str()),
    };
    let mut sock = parent_socket(fd, inside).map_err(UsernsError::Untrusted)?;
    if inside {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let gid_map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
        let rootless = from_maps(&uid_map, &gid_map).ok_or_else(|| {
            UsernsError::Untrusted(format!(
                "this is not a user namespace berth made: uid_map {:?}",
                uid_map.trim()
            ))
        })?;
        return Ok(Side::Inside(rootless));
    }
    child_enter(&mut sock, &Rootless::operator())?;
    // Once more, now from inside: a process keeps the user namespace it was executed in as
    // the owner of its memory, which decides who may open /proc/PID of the containers it
    // clones (berth must, to connect their network). Executed outside, that is real root.
    // The socket goes along, for the berth inside to check its parent once more.
    // SAFETY: F_SETFD takes an integer, on a descriptor this process owns.
    if unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, 0) } == -1 {
        return Err(UsernsError::Exec(std::io::Error::last_os_error()));
    }
    let error = Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .arg0(std::env::args_os().next().unwrap_or_default())
        .env(MARKER, format!("in:{}", sock.as_raw_fd()))
        .exec();
    Err(UsernsError::Exec(error))
}

/// The socket the marker names, if it is what [`reexec`] passes: a socket (never stdin,
/// stdout or stderr) made by this process's parent, which runs as the same user and (seen
/// from outside the namespace) the same program. Why not, otherwise.
fn parent_socket(fd: &str, inside: bool) -> Result<UnixStream, String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let fd: i32 = fd
        .parse()
        .map_err(|_| format!("{fd:?} names no descriptor"))?;
    if fd <= 2 {
        return Err(format!(
            "descriptor {fd} is standard input, output or error"
        ));
    }
    let stat = nix::sys::stat::fstat(fd).map_err(|e| format!("descriptor {fd}: {e}"))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(format!("descriptor {fd} is not a socket"));
    }
    // SAFETY: fstat just found the descriptor open, and nothing closes it while borrowed.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let peer = getsockopt(&borrowed, PeerCredentials)
        .map_err(|e| format!("descriptor {fd} is no connected local socket: {e}"))?;
    let parent = nix::unistd::getppid();
    if peer.pid() != parent.as_raw() || peer.uid() != nix::unistd::getuid().as_raw() {
        return Err(format!(
            "descriptor {fd} was made by process {} (uid {}), not by this process's parent {parent}",
            peer.pid(),
            peer.uid()
        ));
    }
    // Inside the namespace, the parent's /proc entry is closed to us; the berth there was
    // checked by this very process before it executed itself again.
    if !inside {
        same_program(parent)?;
    }
    // SAFETY: checked above to be an open socket; from here on this process owns it (the
    // number came from the marker, which is gone, and nothing else in berth knows it).
    Ok(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Whether process `pid` runs the program this process runs.
fn same_program(pid: nix::unistd::Pid) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let program = |path: String| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    match (
        program(format!("/proc/{pid}/exe")),
        program("/proc/self/exe".into()),
    ) {
        (Ok(theirs), Ok(ours)) if theirs == ours => Ok(()),
        (Ok(_), Ok(_)) => Err(format!(
            "the parent process {pid} is not this berth program"
        )),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot tell the program of process {pid}: {e}")),
    }
}

/// Who the operator is, from this namespace's own `uid_map` and `gid_map` as [`reexec`]
/// writes them: `0 UID 1`, and `1 START 65536` with subordinate ids.
fn from_maps(uid_map: &str, gid_map: &str) -> Option<Rootless> {
    let lines = |map: &str| -> Option<Vec<[u32; 3]>> {
        map.lines()
            .map(|l| {
                let v: Vec<u32> = l
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                v.try_into().ok()
            })
            .collect()
    };
    let size = super::ids::CONTAINER_IDS;
    let (uids, gids) = (lines(uid_map)?, lines(gid_map)?);
    let (uid, gid, subordinate) = match (&uids[..], &gids[..]) {
        ([[0, uid, 1]], [[0, gid, 1]]) => (*uid, *gid, None),
        ([[0, uid, 1], [1, u, su]], [[0, gid, 1], [1, g, sg]]) if *su == size && *sg == size => {
            let ids = IdMap {
                uid_start: *u,
                gid_start: *g,
                size,
            };
            (*uid, *gid, Some(ids))
        }
        _ => return None,
    };
    Some(Rootless {
        uid,
        gid,
        subordinate,
    })
}

fn child_enter(sock: &mut UnixStream, me: &Rootless) -> Result<(), UsernsError> {
    let io = |e: nix::Error| std::io::Error::from(e);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| UsernsError::Unshare(io(e)))?;
    if me.subordinate.is_none() {
        // A namespace's owner may map its own ids without help (gids once setgroups is off).
        let write = |file: &str, text: String| std::fs::write(format!("/proc/self/{file}"), text);
        write("setgroups", "deny".into())
            .and_then(|()| write("uid_map", format!("0 {} 1", me.uid)))
            .and_then(|()| write("gid_map", format!("0 {} 1", me.gid)))
            .map_err(UsernsError::SelfMap)?;
    }
    sock.write_all(b"u").map_err(UsernsError::Sync)?;
    let mut answer = [0u8; 1];
    // The parent maps our ids (or fails and says so itself): wait until it has.
    sock.read_exact(&mut answer).map_err(UsernsError::Sync)?;
    let root = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .and_then(|()| nix::unistd::setresuid(root, root, root))
        .map_err(|e| UsernsError::BecomeRoot(io(e)))?;
    // After the id change, which clears it: when the outer berth dies, this one is asked to
    // stop (and cleans up) instead of running on unseen.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    // JUSTIFICATION: nix 0.29 has no wrapper for PR_SET_PDEATHSIG.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!("cannot set the parent-death signal");
    }
    Ok(())
}

/// In the operator's berth: starts berth again inside a new user namespace with the same
/// arguments, maps its ids, passes on SIGINT/SIGTERM/SIGHUP, and returns its exit status.
pub fn reexec(me: &Rootless) -> Result<ExitStatus, UsernsError> {
    let (mut ours, theirs) = UnixStream::pair().map_err(UsernsError::Spawn)?;
    let marker = theirs.as_raw_fd().to_string();
    let mut command = Command::new("/proc/self/exe");
    command
        .args(std::env::args_os().skip(1))
        .env(MARKER, marker);
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    let child_fd = OwnedFd::from(theirs);
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl on a descriptor
    // this process owns, to let it survive the exec.
    // JUSTIFICATION: std marks every descriptor close-on-exec and offers no way to pass one.
    unsafe {
        command.pre_exec(move || {
            let raw = child_fd.as_raw_fd();
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(UsernsError::Spawn)?;
    drop(command);
    let pid = child.id();
    forward_signals(pid);
    let mut ready = [0u8; 1];
    if ours.read_exact(&mut ready).is_ok() {
        // If the child died before asking, its own error is on stderr already.
        if let Some(sub) = me.subordinate {
            if let Err(e) = map_ids(pid, me, &sub) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        ours.write_all(b"m").map_err(UsernsError::Sync)?;
    }
    drop(ours);
    child.wait().map_err(UsernsError::Sync)
}

/// Runs newuidmap and newgidmap for `pid`: id 0 is the operator, 1..=65536 the range.
fn map_ids(pid: u32, me: &Rootless, sub: &IdMap) -> Result<(), UsernsError> {
    let size = sub.size.to_string();
    let one = |program: &'static str, own: u32, start: u32| {
        let args = [
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            start.to_string(),
            size.clone(),
        ];
        let out = Command::new(program)
            .args(&args)
            .output()
            .map_err(|source| UsernsError::MapperMissing { program, source })?;
        if !out.status.success() {
            return Err(UsernsError::MapperFailed {
                program,
                ranges: format!("0:{own}:1 1:{start}:{size}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    };
    one("newuidmap", me.uid, sub.uid_start)?;
    one("newgidmap", me.gid, sub.gid_start)
}

/// Passes the operator's stop requests on to the berth inside, which cleans up and exits.
fn forward_signals(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls kill(2), which is async-signal-safe.
        let registered = unsafe {
            signal_hook::low_level::register(sig, move || {
                libc::kill(pid, sig);
            })
        };
        if let Err(e) = registered {
            tracing::debug!("cannot forward signal {sig}: {e}");
        }
    }
}

/// The exit status to end the outer berth with: the inner one's, or 128 + its signal.
pub fn exit_code(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_is_read_from_the_namespace_maps() {
        let r = from_maps(
            "         0       1001          1\n         1     100000      65536\n",
            "0 1002 1\n1 200000 65536\n",
        )
        .unwrap();
        assert_eq!((r.uid, r.gid), (1001, 1002));
        let sub = r.subordinate.unwrap();
        assert_eq!((sub.uid_start, sub.gid_start), (100_000, 200_000));
        assert_eq!(r.container_ids().uid(65_535), Some(65_535));
        assert_eq!(r.host_ids(), "0:1001:1,1:100000:65535");
        let alone = from_maps("0 1001 1\n", "0 1001 1\n").unwrap();
        assert_eq!(alone.container_ids().uid(1), None);
        assert_eq!(alone.host_ids(), "0:1001:1");
        // The initial namespace, and maps berth never writes.
        for (u, g) in [
            ("0 0 4294967295\n", "0 0 4294967295\n"),
            ("", ""),
            ("0 1001 1\n", "0 1001 1\n1 200000 65536\n"),
            ("0 1001 2\n", "0 1001 2\n"),
            ("0 1001 1\n1 100000 10\n", "0 1001 1\n1 200000 10\n"),
        ] {
            assert!(from_maps(u, g).is_none(), "{u:?} {g:?}");
        }
    }

    #[test]
    fn a_marker_naming_no_socket_of_the_parent_is_refused() {
        for fd in ["", "x", "-1", "0", "2"] {
            assert!(parent_socket(fd, false).is_err(), "{fd:?}");
        }
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let e = parent_socket(&file.as_raw_fd().to_string(), false).unwrap_err();
        assert!(e.ends_with("is not a socket"), "{e}");
        // A socket, but this process made it, not its parent.
        let (a, _b) = UnixStream::pair().unwrap();
        let e = parent_socket(&a.as_raw_fd().to_string(), false).unwrap_err();
        assert!(e.contains("not by this process's parent"), "{e}");
    }

    #[test]
    fn exit_codes_follow_the_inner_berth() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
