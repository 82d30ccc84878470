//! Moving an unpacked tree's owners into a container's id range: a file the image gives to
//! uid N belongs to host uid start+N, so inside the container's user namespace it is N
//! again, and on the host it is nobody's.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::unistd::{Gid, Uid, fchownat};

use crate::host::IdMap;

#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error(
        "{path} is owned by {what} {id}, outside the {size} ids a container has{}",
        fix_for(*size)
    )]
    OutOfRange {
        path: PathBuf,
        what: &'static str,
        id: u32,
        size: u32,
    },
    #[error("cannot change the owner of {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to do when a container has a single id: a rootless operator without subordinate ids.
fn fix_for(size: u32) -> &'static str {
    if size == 1 {
        " (you have no subordinate ids: as root, give yourself a range with `usermod \
         --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, one no other user has)"
    } else {
        ""
    }
}

/// Shifts every owner under `root` (and `root` itself) by `map`, never following a link.
pub fn shift_tree(root: &Path, map: &IdMap) -> Result<u64, ShiftError> {
    let mut shifter = Shifter {
        map,
        seen: HashSet::new(),
        count: 0,
    };
    shifter.entry(root)?;
    Ok(shifter.count)
}

struct Shifter<'a> {
    map: &'a IdMap,
    /// Inodes with several names, shifted once.
    seen: HashSet<(u64, u64)>,
    count: u64,
}

impl Shifter<'_> {
    fn entry(&mut self, path: &Path) -> Result<(), ShiftError> {
        let io_err = |source| ShiftError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(io_err)?;
        let first_time = meta.nlink() <= 1 || self.seen.insert((meta.dev(), meta.ino()));
        if first_time {
            self.chown(path, &meta)?;
        }
        if meta.is_dir() {
            for child in fs::read_dir(path).map_err(io_err)? {
                self.entry(&child.map_err(io_err)?.path())?;
            }
        }
        Ok(())
    }

    fn chown(&mut self, path: &Path, meta: &fs::Metadata) -> Result<(), ShiftError> {
        let out_of_range = |what, id| ShiftError::OutOfRange {
            path: path.to_owned(),
            what,
            id,
            size: self.map.size,
        };
        let uid = self
            .map
            .uid(meta.uid())
            .ok_or_else(|| out_of_range("uid", meta.uid()))?;
        let gid = self
            .map
            .gid(meta.gid())
            .ok_or_else(|| out_of_range("gid", meta.gid()))?;
        let io_err = |source| ShiftError::Io {
            path: path.to_owned(),
            source,
        };
        let nofollow = AtFlags::AT_SYMLINK_NOFOLLOW;
        fchownat(
            None,
            path,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nofollow,
        )
        .map_err(|e| io_err(e.into()))?;
        // chown clears the set-id bits of files: put them back.
        let mode = meta.mode() & 0o7777;
        if !meta.file_type().is_symlink() && mode & 0o6000 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err)?;
        }
        self.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> IdMap {
        IdMap {
            uid_start: 100_000,
            gid_start: 200_000,
            size: 65_536,
        }
    }

    #[test]
    fn owners_move_into_the_range_and_set_id_bits_stay() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: changing owners needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/su"), b"x").unwrap();
        fchownat(
            None,
            &root.join("bin/su"),
            Some(Uid::from_raw(1000)),
            Some(Gid::from_raw(50)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        fs::set_permissions(root.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("bin/su"), root.join("su2")).unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("link")).unwrap();
        assert_eq!(shift_tree(&root, &map()).unwrap(), 4);
        let su = fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!((su.uid(), su.gid()), (101_000, 200_050));
        assert_eq!(su.mode() & 0o7777, 0o4755);
        let link = fs::symlink_metadata(root.join("link")).unwrap();
        assert_eq!((link.uid(), link.gid()), (100_000, 200_000));
        let top = fs::metadata(&root).unwrap();
        assert_eq!((top.uid(), top.gid()), (100_000, 200_000));
    }

    #[test]
    fn an_owner_outside_the_range_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: changing owners needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        let big = Uid::from_raw(70_000);
        fchownat(None, &f, Some(big), None, AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
        let e = shift_tree(d.path(), &map()).unwrap_err();
        assert!(e.to_string().contains("uid 70000"), "{e}");
    }
}
