//! The image's `User`, resolved against the image's own `/etc/passwd` and `/etc/group`.

use std::io::Read;
use std::path::Path;

use super::{BundleError, ContainerUser};
use crate::confined;

/// Resolves the image's `User` (`uid`, `name`, `uid:gid`, `name:group`) against the
/// rootfs's own `/etc/passwd` and `/etc/group`, as Docker does.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ContainerUser, BundleError> {
    let spec = user.unwrap_or("").trim();
    if spec.is_empty() {
        return Ok(ContainerUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let err = |message: String| BundleError::User {
        user: spec.to_owned(),
        message,
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_image_file(rootfs, "etc/passwd");
    let groups = read_image_file(rootfs, "etc/group");
    // name:x:uid:gid:...
    let passwd_entry = |pred: &dyn Fn(&str, u32) -> bool| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            let gid: u32 = f.get(3)?.parse().ok()?;
            pred(f[0], uid).then(|| (f[0].to_owned(), uid, gid))
        })
    };
    let (name, uid, mut gid) = match user_part.parse::<u32>() {
        Ok(uid) => match passwd_entry(&|_, u| u == uid) {
            Some((n, _, g)) => (Some(n), uid, g),
            None => (None, uid, 0),
        },
        Err(_) => match passwd_entry(&|n, _| n == user_part) {
            Some((n, u, g)) => (Some(n), u, g),
            None => return Err(err("no such user in the image's /etc/passwd".to_owned())),
        },
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.first() == Some(&g)).then(|| f.get(2)?.parse().ok())?
                })
                .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
        };
    }
    let mut additional_gids: Vec<u32> = match &name {
        Some(n) => groups
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let members = f.get(3)?;
                members
                    .split(',')
                    .any(|m| m == n)
                    .then(|| f.get(2)?.parse().ok())?
            })
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ContainerUser {
        uid,
        gid,
        additional_gids,
    })
}

/// The home directory of `uid` in the image's `/etc/passwd`, or `/` (Docker's rule) — for
/// a `HOME` the bundle sets itself: without one, libcontainer's init looks it up in the
/// container's `/etc/passwd`, where a FIFO blocks the container before it starts.
pub fn home_dir(rootfs: &Path, uid: u32) -> String {
    read_image_file(rootfs, "etc/passwd")
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let home = f.get(5).filter(|h| h.starts_with('/'))?;
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| (*home).to_owned())
        })
        .unwrap_or_else(|| "/".to_owned())
}

/// The most read of an image's `/etc/passwd` or `/etc/group`.
const MAX_IMAGE_FILE_BYTES: u64 = 1 << 20;

/// Reads the first mebibyte of a small text file of the image, or nothing when it is not a
/// regular file: the rootfs is untrusted, so the file is opened beneath the rootfs's handle
/// with no link followed (a link could point anywhere on the host) and without blocking (a
/// FIFO would block berth forever).
fn read_image_file(rootfs: &Path, rel: &str) -> String {
    let mut text = String::new();
    let file = confined::Dir::open(rootfs).and_then(|root| root.open_file(rel));
    match file {
        Ok(f) => {
            if let Err(e) = f.take(MAX_IMAGE_FILE_BYTES).read_to_string(&mut text) {
                tracing::debug!("not reading the image's {rel}: {e}");
            }
        }
        Err(e) => tracing::debug!("not reading the image's {rel}: {e}"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        fs::write(d.path().join("etc/group"), group).unwrap();
        d
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\n";

    #[test]
    fn users_resolve_like_docker() {
        let d = rootfs_with(PASSWD, GROUP);
        let u = |s: &str| resolve_user(d.path(), Some(s));
        assert_eq!(u("").unwrap().uid, 0);
        let app = u("app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1001, vec![2000])
        );
        assert_eq!(u("1000").unwrap().gid, 1001);
        let unknown = u("4242").unwrap();
        assert_eq!((unknown.uid, unknown.gid), (4242, 0));
        assert_eq!(u("app:extra").unwrap().gid, 2000);
        assert_eq!(u("1000:7").unwrap().gid, 7);
        assert!(u("nobody").unwrap_err().to_string().contains("nobody"));
        assert!(u("app:nogroup").is_err());
    }

    #[test]
    fn passwd_behind_a_symlink_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("passwd"), PASSWD).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("etc")).unwrap();
        assert!(resolve_user(d.path(), Some("app")).is_err());
    }

    /// Resolves `user` in another thread, failing the test if it does not return promptly.
    fn resolve_promptly(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (rootfs, user) = (rootfs.to_owned(), user.to_owned());
        std::thread::spawn(move || {
            let r = resolve_user(&rootfs, Some(&user)).map(|u| (u.uid, u.gid));
            tx.send(r.map_err(|e| e.to_string())).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("resolving the user blocked")
    }

    #[test]
    fn a_fifo_at_passwd_or_group_is_not_read_and_does_not_block() {
        let d = rootfs_with(PASSWD, GROUP);
        let fifo = |p: &str| {
            fs::remove_file(d.path().join(p)).unwrap();
            nix::unistd::mkfifo(
                &d.path().join(p),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap();
        };
        fifo("etc/group");
        assert!(
            resolve_promptly(d.path(), "app:extra")
                .unwrap_err()
                .contains("no group \"extra\"")
        );
        fifo("etc/passwd");
        assert_eq!(resolve_promptly(d.path(), "1000:7"), Ok((1000, 7)));
        assert!(
            resolve_promptly(d.path(), "app")
                .unwrap_err()
                .contains("no such user")
        );
    }

    #[test]
    fn a_passwd_that_is_a_link_or_a_directory_is_not_read() {
        let d = rootfs_with(PASSWD, GROUP);
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("passwd"), PASSWD).unwrap();
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        assert!(resolve_promptly(d.path(), "app").is_err());
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        fs::create_dir(d.path().join("etc/passwd")).unwrap();
        assert!(resolve_promptly(d.path(), "app").is_err());
    }

    #[test]
    fn only_the_first_mebibyte_is_read() {
        let mut big = String::from(PASSWD);
        big.push_str(&"#\n".repeat(1 << 20));
        big.push_str("late:x:3000:3000::/:/bin/sh\n");
        let d = rootfs_with(&big, GROUP);
        assert_eq!(resolve_promptly(d.path(), "app"), Ok((1000, 1001)));
        assert!(resolve_promptly(d.path(), "late").is_err());
    }

    #[test]
    fn home_comes_from_passwd_else_root() {
        let d = rootfs_with(PASSWD, GROUP);
        assert_eq!(home_dir(d.path(), 1000), "/home/app");
        assert_eq!(home_dir(d.path(), 0), "/root");
        assert_eq!(home_dir(d.path(), 4242), "/");
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let root = d.path().to_owned();
        std::thread::spawn(move || tx.send(home_dir(&root, 1000)).unwrap());
        let home = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(home.expect("reading a FIFO blocked"), "/");
    }
}
