//! What berth's parent hands it besides its arguments: open descriptors and socket
//! activation's `LISTEN_FDS`. berth uses none of them (its one exception, the socket a
//! rootless berth passes to itself, is checked in [`super::userns`]), and none may reach
//! what berth starts.
//!
//! libcontainer's init keeps the first `LISTEN_FDS` descriptors after stderr open into the
//! container and announces them to the component, as a socket-activated runc would: under a
//! `LISTEN_FDS` berth did not set up, a descriptor its parent left open — a file, a socket,
//! a terminal — became the hostile component's. And every descriptor inherited without
//! close-on-exec would reach every program berth runs (pasta, id mappers, credential
//! helpers).

use std::io;

/// The variables of socket activation (sd_listen_fds(3)): never berth's.
const SOCKET_ACTIVATION: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// Drops socket activation's variables and marks every descriptor above stderr
/// close-on-exec. Call first thing in `main`, while the process has one thread.
pub fn distrust() -> io::Result<()> {
    for name in SOCKET_ACTIVATION {
        // SAFETY: called at the start of main, before any thread exists, so nothing reads
        // the environment concurrently.
        // JUSTIFICATION: libcontainer's init reads LISTEN_FDS from the environment it
        // inherits from berth; only removing it stops that.
        unsafe { std::env::remove_var(name) };
    }
    cloexec_above_stderr()
}

fn cloexec_above_stderr() -> io::Result<()> {
    // JUSTIFICATION: neither nix nor rustix wraps close_range(2).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing; it only sets a flag on
    // descriptors, and takes no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // Kernels before 5.11 (the flag) or 5.9 (the call): one descriptor at a time.
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
        return Err(e);
    }
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in open {
        // SAFETY: F_SETFD takes an integer; on a descriptor closed meanwhile (the listing's
        // own) it fails with EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: a descriptor this test owns.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        cloexec_above_stderr().unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
