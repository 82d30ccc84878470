//! What `/proc` tells one berth about another: when a process started, which processes
//! hold a flock on a file, and how much memory a container's cgroup holds now.
//!
//! Read-only, and nothing here is trusted by itself: `berth kill` signals a process only
//! when the lock of its job, the pid and its start time all agree (see `job::running`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// When process `pid` started, in clock ticks after boot (field 22 of `/proc/PID/stat`):
/// with the pid, what names one process for as long as the machine runs, since the kernel
/// hands a freed pid to a later process.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no start time"),
        )
    })
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself: fields are counted after its last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    // `after` starts at field 3 (the state): field 22 is the 20th from there.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The processes holding a flock on the file `dev`/`ino` (as `stat` gives them), from
/// `/proc/locks`; waiters are not holders. A pid outside this pid namespace reads as 0 and
/// is left out.
pub fn flock_holders(dev: u64, ino: u64) -> io::Result<Vec<i32>> {
    let text = fs::read_to_string("/proc/locks")?;
    Ok(parse_flock_holders(&text, dev, ino))
}

fn parse_flock_holders(text: &str, dev: u64, ino: u64) -> Vec<i32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut pids: Vec<i32> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END`; a waiter has `->`
            // after the number.
            let [_, "FLOCK", _, _, pid, file, ..] = fields.as_slice() else {
                return None;
            };
            let mut parts = file.split(':');
            let maj = u32::from_str_radix(parts.next()?, 16).ok()?;
            let min = u32::from_str_radix(parts.next()?, 16).ok()?;
            let inode: u64 = parts.next()?.parse().ok()?;
            let pid: i32 = pid.parse().ok()?;
            (maj == major && min == minor && inode == ino && pid > 0).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A handle on process `pid` that stays bound to it even once the pid is reused.
pub fn pidfd(pid: i32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// The signals `berth kill` sends a job's berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// As Ctrl-C: berth kills the container, commits nothing and removes everything.
    Int,
    /// As `kill`: the same.
    Term,
    /// berth dies at once; what it leaves is removed by the next sweep.
    Kill,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Int => "SIGINT",
            StopSignal::Term => "SIGTERM",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

/// Sends `signal` to the process of `pidfd`.
pub fn send_signal(pidfd: &OwnedFd, signal: StopSignal) -> io::Result<()> {
    use rustix::process::Signal;
    let sig = match signal {
        StopSignal::Int => Signal::INT,
        StopSignal::Term => Signal::TERM,
        StopSignal::Kill => Signal::KILL,
    };
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}

/// Waits until the process of `pidfd` has ended, at most `timeout`; true when it did.
pub fn wait_exit(pidfd: &OwnedFd, timeout: std::time::Duration) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The memory each of the `containers` (cgroup names) holds now, in bytes, as its cgroup
/// counts it: found through `/proc/PID/cgroup` of the processes in it, so wherever berth
/// created the cgroup. A container with no process left (or none visible) is missing.
pub fn containers_memory(containers: &[&str]) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    if containers.is_empty() {
        return found;
    }
    let memory_mount = memory_mount();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        for container in containers {
            if found.contains_key(*container) {
                continue;
            }
            let bytes = cgroup_of(&text, container)
                .and_then(|(v2, path)| memory_now(memory_mount.as_ref(), v2, &path));
            if let Some(bytes) = bytes {
                found.insert((*container).to_owned(), bytes);
            }
        }
        if found.len() == containers.len() {
            break;
        }
    }
    found
}

/// Where the memory controller's v1 hierarchy is mounted, if it has one.
fn memory_mount() -> Option<PathBuf> {
    use libcgroups::v1::ControllerType;
    libcgroups::v1::util::get_subsystem_mount_point(&ControllerType::Memory).ok()
}

/// The container's memory cgroup in a `/proc/PID/cgroup` text: (v2, its path up to the
/// container's own directory), from the v1 `memory` line or else the v2 `0::` line.
fn cgroup_of(text: &str, container: &str) -> Option<(bool, String)> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(at) = path
            .split('/')
            .position(|part| part == container)
            .map(|n| path.split('/').take(n + 1).collect::<Vec<_>>().join("/"))
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some((false, at));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some((true, at));
        }
    }
    v2
}

fn memory_now(v1_mount: Option<&PathBuf>, v2: bool, path: &str) -> Option<u64> {
    let rel = path.trim_start_matches('/');
    let file = if v2 {
        Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT)
            .join(rel)
            .join("memory.current")
    } else {
        v1_mount?.join(rel).join("memory.usage_in_bytes")
    };
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_counted_after_the_command_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1234 56 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("1 (x) S 0"), None);
        let mine = start_time(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert!(mine > 0);
        assert_eq!(
            start_time(i32::try_from(std::process::id()).unwrap()).unwrap(),
            mine
        );
    }

    #[test]
    fn flock_holders_are_read_for_the_file_and_waiters_left_out() {
        let dev = libc::makedev(0xfd, 0x01);
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 4343 fd:01:1234 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 4444 fd:01:1234 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 4545 fd:01:9999 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 4646 08:01:1234 0 EOF\n\
                     5: FLOCK  ADVISORY  WRITE 0 fd:01:1234 0 EOF\n";
        assert_eq!(parse_flock_holders(locks, dev, 1234), vec![4242]);
        // A lock this process holds, on the real kernel.
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let file = fs::File::open(d.path()).unwrap();
        let meta = file.metadata().unwrap();
        assert!(flock_holders(meta.dev(), meta.ino()).unwrap().is_empty());
        let lock =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(flock_holders(meta.dev(), meta.ino()).unwrap(), vec![me]);
        drop(lock);
        assert!(flock_holders(meta.dev(), meta.ino()).unwrap().is_empty());
    }

    #[test]
    fn a_containers_memory_cgroup_is_found_in_v1_and_v2_lines() {
        let v1 = "12:pids:/berth/berth-a-b-0\n4:memory:/slurm/job_7/berth-a-b-0\n\
                  0::/user.slice\n";
        assert_eq!(
            cgroup_of(v1, "berth-a-b-0"),
            Some((false, "/slurm/job_7/berth-a-b-0".to_owned()))
        );
        let v2 = "0::/system.slice/berth.service/berth-a-b-0\n";
        assert_eq!(
            cgroup_of(v2, "berth-a-b-0"),
            Some((true, "/system.slice/berth.service/berth-a-b-0".to_owned()))
        );
        assert_eq!(cgroup_of(v2, "berth-a-b-1"), None);
        // Not a part of the path's name: only a whole component is the container.
        assert_eq!(cgroup_of("0::/berth/berth-a-b-01\n", "berth-a-b-0"), None);
        assert!(containers_memory(&[]).is_empty());
        assert!(containers_memory(&["berth-no-such-container-0"]).is_empty());
    }
}
