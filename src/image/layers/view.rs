//! A job's writable view of an image: an overlay of the image's layer directories (see
//! [`ensure`](super::ensure)) with the job's own upper directory, or, where the kernel
//! refuses overlayfs, a copy merging the layers as the overlay would.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::stack::{Stack, is_opaque, is_whiteout};
use crate::host::Host;
use crate::image::spec::ImageError;

/// A job's writable view of a cached rootfs.
#[derive(Debug)]
pub enum RootfsView {
    Overlay { target: PathBuf },
    Copy { target: PathBuf },
}

/// Where a job's view of a rootfs goes.
#[derive(Debug, Clone, Copy)]
pub struct ViewDirs<'a> {
    /// The overlay's upper and work directories (same filesystem), which must exist.
    pub upper: &'a Path,
    pub work: &'a Path,
    /// Where the overlay is mounted; must exist.
    pub mount_point: &'a Path,
    /// Where a copy goes when there is no overlay: beside the job's other files, on disk (the
    /// mount point lives on a small runtime tmpfs). Created when needed.
    pub copy: &'a Path,
}

impl RootfsView {
    /// Mounts an overlay of the image's layers (the stack at `stack`, see
    /// `ensure_stack`) with its changes going to the upper
    /// directory, or merges them into a copy when the kernel refuses overlayfs or `copy`
    /// asks for it.
    pub fn create(
        host: &dyn Host,
        stack: &Path,
        dirs: &ViewDirs<'_>,
        copy: bool,
    ) -> Result<RootfsView, ImageError> {
        let stack = Stack::open(stack)?;
        if copy {
            return Self::copy(host, &stack.layers, dirs.copy);
        }
        let target = dirs.mount_point.to_owned();
        match host.mount_overlay(&stack.layers, dirs.upper, dirs.work, &target) {
            Ok(()) => Ok(RootfsView::Overlay { target }),
            Err(e) if e.overlay_refused() => {
                let e = crate::util::chain(&e);
                tracing::warn!("{e}; copying the rootfs instead (slower)");
                Self::copy(host, &stack.layers, dirs.copy)
            }
            Err(e) => Err(ImageError::Host(e)),
        }
    }

    fn copy(host: &dyn Host, layers: &[PathBuf], target: &Path) -> Result<RootfsView, ImageError> {
        let store_err = |source| ImageError::Store {
            path: target.to_owned(),
            source,
        };
        fs::create_dir(target).map_err(store_err)?;
        merge_layers(layers, target, host.privileged()).map_err(store_err)?;
        Ok(RootfsView::Copy {
            target: target.to_owned(),
        })
    }

    /// The root filesystem the container gets.
    pub fn root(&self) -> &Path {
        match self {
            RootfsView::Overlay { target } | RootfsView::Copy { target } => target,
        }
    }

    /// Unmounts the overlay (the job's directory removal deletes the rest).
    pub fn release(&self, host: &dyn Host) -> Result<(), ImageError> {
        match self {
            RootfsView::Overlay { target } => host.unmount(target).map_err(ImageError::Host),
            RootfsView::Copy { .. } => Ok(()),
        }
    }
}

/// Copies a tree preserving types, modes, times, hard links and — with `owners` (which
/// needs privilege) — owners; never follows a symlink.
#[cfg(test)]
pub fn copy_tree(src: &Path, dst: &Path, owners: bool) -> io::Result<()> {
    merge_layers(&[src.to_owned()], dst, owners)
}

/// Copies the layers (top first) into `dst` bottom up as overlayfs shows them: an upper
/// entry replaces a lower one, a whiteout removes it, an opaque directory hides what lower
/// layers had in it. Preserves types, modes, times, hard links and, with
/// `owners`, owners; never follows a symlink.
pub fn merge_layers(layers: &[PathBuf], dst: &Path, owners: bool) -> io::Result<()> {
    for layer in layers.iter().rev() {
        let mut copier = Copier {
            owners,
            links: HashMap::new(),
        };
        copier.dir_contents(layer, dst)?;
    }
    match layers.first() {
        Some(top) => Copier::metadata_of(owners, dst, &fs::symlink_metadata(top)?),
        None => Ok(()),
    }
}

struct Copier {
    owners: bool,
    /// The first copy of each multiply-linked inode, keyed by (device, inode) of the source.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    fn dir_contents(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let meta = fs::symlink_metadata(&from)?;
            let existing = fs::symlink_metadata(&to).ok();
            if is_whiteout(&meta) {
                crate::util::remove_tree(&to)?;
                continue;
            }
            let ft = meta.file_type();
            if ft.is_dir() {
                match existing {
                    Some(e) if e.is_dir() => {
                        if is_opaque(&from) {
                            empty_dir(&to)?;
                        }
                    }
                    Some(_) => {
                        crate::util::remove_tree(&to)?;
                        fs::create_dir(&to)?;
                    }
                    None => fs::create_dir(&to)?,
                }
                self.dir_contents(&from, &to)?;
            } else {
                if existing.is_some() {
                    crate::util::remove_tree(&to)?;
                }
                if ft.is_symlink() {
                    std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
                } else if !self.node(&from, &to, &meta)? {
                    continue; // a hard link to a node already copied
                }
            }
            self.metadata(&to, &meta)?;
        }
        Ok(())
    }

    /// Copies a file, FIFO or device node; `false` when it became a hard link instead.
    fn node(&mut self, from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<bool> {
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, to)?;
                return Ok(false);
            }
            self.links.insert((meta.dev(), meta.ino()), to.to_owned());
        }
        if meta.file_type().is_file() {
            fs::copy(from, to)?;
        } else {
            use nix::sys::stat::{Mode, SFlag, mknod};
            let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            let mode = Mode::from_bits_truncate(meta.mode() & 0o7777);
            mknod(to, kind, mode, meta.rdev()).map_err(io::Error::from)?;
        }
        Ok(true)
    }

    fn metadata(&self, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
        Self::metadata_of(self.owners, to, meta)
    }

    fn metadata_of(owners: bool, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        use nix::unistd::{Gid, Uid, fchownat};
        // Ownership first: chown clears set-id bits, so the mode comes after it.
        if owners {
            let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
            let nofollow = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
            fchownat(None, to, Some(uid), Some(gid), nofollow).map_err(io::Error::from)?;
        }
        if !meta.file_type().is_symlink() {
            fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
        let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
        utimensat(None, to, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(io::Error::from)
    }
}

/// Removes everything in `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        crate::util::remove_tree(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn copy_keeps_links_modes_and_hardlinks() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"data").unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::hard_link(src.join("sub/f"), src.join("h")).unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("l")).unwrap();
        let dst = d.path().join("dst");
        fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst, false).unwrap();
        assert_eq!(fs::read(dst.join("sub/f")).unwrap(), b"data");
        assert_eq!(
            fs::metadata(dst.join("sub/f")).unwrap().mode() & 0o7777,
            0o751
        );
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("/nowhere"));
        assert_eq!(
            fs::metadata(dst.join("h")).unwrap().ino(),
            fs::metadata(dst.join("sub/f")).unwrap().ino()
        );
    }

    fn view_dirs(job: &Path) -> ViewDirs<'_> {
        ViewDirs {
            upper: job,
            work: job,
            mount_point: job,
            copy: job,
        }
    }

    /// A store-like tree under `d`: the layers (bottom first, as (name, files) pairs) and
    /// a stack of them; returns the stack's path.
    type Files<'a> = &'a [(&'a str, &'a [u8])];

    fn stack_of(d: &Path, layers: &[(&str, Files<'_>)]) -> PathBuf {
        for (name, files) in layers {
            let dir = d.join("layers").join(name);
            fs::create_dir_all(&dir).unwrap();
            for (path, data) in *files {
                fs::write(dir.join(path), data).unwrap();
            }
        }
        let stack = d.join("stacks/s");
        fs::create_dir_all(&stack).unwrap();
        let top_first: Vec<&str> = layers.iter().rev().map(|(n, _)| *n).collect();
        fs::write(stack.join("layers"), top_first.join("\n")).unwrap();
        stack
    }

    #[test]
    fn refused_overlay_falls_back_to_a_copy_merging_the_layers() {
        let d = tempfile::tempdir().unwrap();
        let stack = stack_of(
            d.path(),
            &[
                ("base", &[("bin", b"x"), ("old", b"o")]),
                ("top", &[("new", b"n")]),
            ],
        );
        // The top layer removes `old`, as a whiteout.
        nix::sys::stat::mknod(
            &d.path().join("layers/top/old"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let host = FakeHost {
            refuse_overlay: true,
            ..Default::default()
        };
        let job = d.path().join("job");
        for sub in ["mnt", "upper", "work"] {
            fs::create_dir_all(job.join(sub)).unwrap();
        }
        let dirs = ViewDirs {
            upper: &job.join("upper"),
            work: &job.join("work"),
            mount_point: &job.join("mnt"),
            copy: &job.join("rootfs"),
        };
        let view = RootfsView::create(&host, &stack, &dirs, false).unwrap();
        assert!(matches!(view, RootfsView::Copy { .. }));
        assert_eq!(view.root(), job.join("rootfs"));
        assert_eq!(fs::read(job.join("rootfs/bin")).unwrap(), b"x");
        assert_eq!(fs::read(job.join("rootfs/new")).unwrap(), b"n");
        assert!(fs::symlink_metadata(job.join("rootfs/old")).is_err());
        view.release(&host).unwrap();
        assert!(host.calls().iter().all(|c| !c.starts_with("unmount")));
    }

    #[test]
    fn a_copy_can_be_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let stack = stack_of(d.path(), &[("one", &[("f", b"y")])]);
        let host = FakeHost::default();
        let copy = d.path().join("copy");
        let mut dirs = view_dirs(d.path());
        dirs.copy = &copy;
        let view = RootfsView::create(&host, &stack, &dirs, true).unwrap();
        assert!(matches!(view, RootfsView::Copy { .. }));
        assert_eq!(fs::read(copy.join("f")).unwrap(), b"y");
        assert!(host.calls().is_empty(), "no overlay was tried");
    }

    #[test]
    fn the_overlay_stacks_the_layers_top_first_and_is_unmounted_on_release() {
        let d = tempfile::tempdir().unwrap();
        let stack = stack_of(d.path(), &[("base", &[]), ("top", &[])]);
        let host = FakeHost::default();
        let view = RootfsView::create(&host, &stack, &view_dirs(d.path()), false).unwrap();
        assert!(matches!(view, RootfsView::Overlay { .. }));
        let layers = d.path().join("layers");
        let expected = format!(
            "mount_overlay {}:{} ",
            layers.join("top").display(),
            layers.join("base").display()
        );
        assert!(host.calls()[0].starts_with(&expected), "{:?}", host.calls());
        view.release(&host).unwrap();
        assert!(host.calls().last().unwrap().starts_with("unmount"));
    }

    #[test]
    fn a_stack_missing_a_layer_is_an_error_not_an_empty_root() {
        let d = tempfile::tempdir().unwrap();
        let stack = stack_of(d.path(), &[("base", &[])]);
        fs::remove_dir(d.path().join("layers/base")).unwrap();
        let e = RootfsView::create(&FakeHost::default(), &stack, &view_dirs(d.path()), false)
            .unwrap_err();
        assert!(e.to_string().contains("layers/base"), "{e}");
    }
}
