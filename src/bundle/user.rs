//! The image's `User`, resolved against the image's own `/etc/passwd` and `/etc/group`.

use std::fs;
use std::io::Read;
use std::path::Path;

use super::{BundleError, ContainerUser};

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

/// Reads a small text file of the image, refusing to follow any symlink on the way: the
/// rootfs is untrusted and a link could point anywhere on the host.
fn read_image_file(rootfs: &Path, rel: &str) -> String {
    let mut path = rootfs.to_owned();
    for part in rel.split('/') {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_symlink() => {}
            _ => return String::new(),
        }
    }
    let mut text = String::new();
    if let Ok(f) = fs::File::open(&path) {
        let _ = f.take(1 << 20).read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
