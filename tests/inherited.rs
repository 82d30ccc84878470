//! What berth's parent hands it — environment markers and open descriptors — is checked,
//! not trusted: `_BERTH_USERNS` (how a rootless berth knows it was re-executed inside its
//! user namespace) set by hand is refused, and descriptors berth did not open itself,
//! announced with `LISTEN_FDS` or not, never reach a container.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;
use serde_json::json;

/// Debian's `nobody`: an unprivileged user every host has.
const NOBODY: (u32, u32) = (65534, 65534);

/// The refusal of a marker berth did not set, whatever it claims.
fn assert_refused(r: &Run, what: &str) {
    assert_eq!(r.status, 1, "{what}: {}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("_BERTH_USERNS is set, but berth did not start this process")
            && r.stderr.contains("unset it"),
        "{what}: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("removed") && r.stdout.is_empty(),
        "{what} ran a command: {}{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn a_user_namespace_marker_set_by_hand_is_refused() {
    require_env!();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY.0), Some(NOBODY.1)).unwrap();
    let home = dir.path().join("home");
    let (uid, gid) = NOBODY;
    // "Inside already": a non-root berth that believed it would skip its namespace. A
    // descriptor of its own: berth would talk to stdin as to its parent. Root's claims
    // alike.
    let markers = [
        format!("in:{uid}:{gid}"),
        format!("in:{uid}:{gid}:100000:100000"),
        format!("0:{uid}:{gid}"),
        "in:0".to_owned(),
        "0".to_owned(),
        "garbage".to_owned(),
    ];
    for marker in &markers {
        let mut as_nobody = berth_as(uid, gid);
        as_nobody
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("_BERTH_USERNS", marker)
            .arg("--home")
            .arg(&home)
            .arg("gc");
        assert_refused(
            &Run::from(as_nobody.output().unwrap()),
            &format!("nobody with {marker}"),
        );
        let mut as_root = Command::new(env!("CARGO_BIN_EXE_berth"));
        as_root
            .env("_BERTH_USERNS", marker)
            .arg("--home")
            .arg(&home)
            .arg("gc");
        assert_refused(
            &Run::from(as_root.output().unwrap()),
            &format!("root with {marker}"),
        );
    }
    assert!(!home.exists(), "a refused berth created its home");
    // Without the marker, the same berth goes on (into its namespace, or saying why not).
    let mut plain = berth_as(uid, gid);
    plain.env_clear().env("PATH", "/usr/bin:/bin").args([
        "--home",
        home.to_str().unwrap(),
        "images",
    ]);
    let r = Run::from(plain.output().unwrap());
    assert_eq!(r.status, 0, "{}", r.stderr);
}

#[test]
fn descriptors_berth_did_not_open_never_reach_the_container() {
    require_env!();
    let b = Berth::new();
    let img = push(
        &ImageSpec::script(
            // No command substitution: its pipe would be the shell's descriptor 3.
            "for n in 3 4 5 6 7 8 9; do [ -e /proc/$$/fd/$n ] && echo \"open fd $n\"; done\n\
             echo \"listen: ${LISTEN_FDS:-none} ${LISTEN_PID:-none}\"\n\
             head -c 64 <&3 2>/dev/null; echo",
        ),
        &unique_repo("inherited-fds"),
        "1.0",
    );
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "the-parents-secret-4711").unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    let path = b.write_job(&job(&img.reference, json!({}), json!({})));
    let mut run = b.cmd();
    run.args(["run", "--json", path.to_str().unwrap()])
        // As systemd announces sockets it passes: "the next descriptor after stderr is
        // yours" — a claim berth cannot check, and which libcontainer would honour.
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1");
    let raw = file.as_raw_fd();
    // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe, on
    // descriptors this process owns.
    unsafe {
        run.pre_exec(move || {
            if raw != 3 && libc::dup2(raw, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Inherited the way a careless parent leaves a descriptor: not close-on-exec.
            if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = Run::from(run.output().unwrap());
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        !r.stderr.contains("open fd "),
        "the container has descriptors above stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr.lines().any(|l| l == "listen: none none"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("the-parents-secret-4711"),
        "the container read what its berth's parent left open: {}",
        r.stderr
    );
    b.assert_clean(&[]);
}
