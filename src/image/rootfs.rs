//! Root filesystems: one unpacked tree per layer chain, shared read-only by every job, and
//! a writable per-job view of it.
//!
//! The cache entry for a chain is built in `tmp/` and renamed into `rootfs/<chain id>`
//! when complete, so a reader never sees a half-unpacked tree and two berths unpacking the
//! same image at once both end up using one copy. Jobs never write to it: each gets an
//! overlay with its own upper directory or, where the kernel refuses overlayfs, a copy.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ImageError;
use super::Unpacking;
use super::digest::{Digest, chain_id};
use super::manifest::Descriptor;
use super::shift::shift_tree;
use super::store::Store;
use super::unpack::{Budget, Ownership, unpack_layer};
use crate::host::Host;

/// The cached rootfs for a layer chain, unpacking it first if needed. Returns the path and
/// whether this call unpacked it.
pub fn ensure_rootfs(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    unpacking: &Unpacking,
    budget: &mut Budget<'_>,
) -> Result<(PathBuf, bool), ImageError> {
    let chain = chain_id(diff_ids).ok_or_else(|| ImageError::BadConfig {
        message: "image has no layers".to_owned(),
    })?;
    let dest = rootfs_path(store, &chain, unpacking);
    if dest.is_dir() {
        return Ok((dest, false));
    }
    let tmp = store.temp_path("rootfs");
    fs::create_dir(&tmp).map_err(|source| ImageError::Store {
        path: tmp.clone(),
        source,
    })?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(|source| {
        ImageError::Store {
            path: tmp.clone(),
            source,
        }
    })?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let started = std::time::Instant::now();
    let mut entries = 0;
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let stats = unpack_layer(
            &store.blob_path(&layer.digest),
            &layer.digest,
            diff_id,
            &tmp,
            unpacking.ownership,
            // Where ids are not shifted afterwards, each is set as it comes: a rootless
            // berth's namespace has only these.
            unpacking.ids.filter(|m| m.uid_start == 0).map(|m| m.size),
            budget,
        )?;
        entries += stats.entries;
        tracing::debug!(layer = %layer.digest, entries = stats.entries, bytes = stats.bytes, "layer applied");
    }
    // A range starting at 0 (a rootless berth's own namespace) was set while unpacking.
    if let Some(ids) = unpacking
        .ids
        .as_ref()
        .filter(|m| m.uid_start != 0 || m.gid_start != 0)
    {
        let shifted = shift_tree(&tmp, ids)?;
        tracing::debug!(%ids, shifted, "owners moved into the container id range");
    }
    match fs::rename(&tmp, &dest) {
        Ok(()) => {
            guard.disarm();
            tracing::info!(
                chain = %chain.short(),
                layers = layers.len(),
                entries,
                "unpacked in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            Ok((dest, true))
        }
        // Another berth finished the same chain first; ours is dropped by the guard.
        Err(_) if dest.is_dir() => Ok((dest, false)),
        Err(source) => Err(ImageError::Store { path: dest, source }),
    }
}

/// Where the rootfs of a chain lives once unpacked.
pub fn rootfs_path(store: &Store, chain: &Digest, unpacking: &Unpacking) -> PathBuf {
    let name = match (&unpacking.ids, unpacking.ownership) {
        (Some(ids), Ownership::Preserve) => format!("{}-{}", chain.hex(), ids.key()),
        _ => chain.hex().to_owned(),
    };
    store.root().join("rootfs").join(name)
}

struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(&p);
        }
    }
}

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
    /// Mounts an overlay of `lower` with its changes going to the upper directory, or
    /// copies `lower` when the kernel refuses overlayfs or `copy` asks for it.
    pub fn create(
        host: &dyn Host,
        lower: &Path,
        dirs: &ViewDirs<'_>,
        copy: bool,
    ) -> Result<RootfsView, ImageError> {
        if copy {
            return Self::copy(host, lower, dirs.copy);
        }
        let target = dirs.mount_point.to_owned();
        match host.mount_overlay(lower, dirs.upper, dirs.work, &target) {
            Ok(()) => Ok(RootfsView::Overlay { target }),
            Err(e) if e.overlay_refused() => {
                let e = crate::util::chain(&e);
                tracing::warn!("{e}; copying the rootfs instead (slower)");
                Self::copy(host, lower, dirs.copy)
            }
            Err(e) => Err(ImageError::Host(e)),
        }
    }

    fn copy(host: &dyn Host, lower: &Path, target: &Path) -> Result<RootfsView, ImageError> {
        let store_err = |source| ImageError::Store {
            path: target.to_owned(),
            source,
        };
        fs::create_dir(target).map_err(store_err)?;
        copy_tree(lower, target, host.privileged()).map_err(store_err)?;
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
pub fn copy_tree(src: &Path, dst: &Path, owners: bool) -> io::Result<()> {
    let mut copier = Copier {
        owners,
        links: HashMap::new(),
    };
    copier.dir_contents(src, dst)?;
    copier.metadata(dst, &fs::symlink_metadata(src)?)
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
            let ft = meta.file_type();
            if ft.is_dir() {
                fs::create_dir(&to)?;
                self.dir_contents(&from, &to)?;
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else if !self.node(&from, &to, &meta)? {
                continue; // a hard link to a node already copied
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
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        use nix::unistd::{Gid, Uid, fchownat};
        // Ownership first: chown clears set-id bits, so the mode comes after it.
        if self.owners {
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

    #[test]
    fn refused_overlay_falls_back_to_a_copy_beside_the_job() {
        let d = tempfile::tempdir().unwrap();
        let lower = d.path().join("lower");
        fs::create_dir(&lower).unwrap();
        fs::write(lower.join("bin"), b"x").unwrap();
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
        let view = RootfsView::create(&host, &lower, &dirs, false).unwrap();
        assert!(matches!(view, RootfsView::Copy { .. }));
        assert_eq!(view.root(), job.join("rootfs"));
        assert_eq!(fs::read(job.join("rootfs/bin")).unwrap(), b"x");
        view.release(&host).unwrap();
        assert!(host.calls().iter().all(|c| !c.starts_with("unmount")));
    }

    #[test]
    fn a_copy_can_be_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let lower = d.path().join("lower");
        fs::create_dir(&lower).unwrap();
        fs::write(lower.join("f"), b"y").unwrap();
        let host = FakeHost::default();
        let copy = d.path().join("copy");
        let mut dirs = view_dirs(d.path());
        dirs.copy = &copy;
        let view = RootfsView::create(&host, &lower, &dirs, true).unwrap();
        assert!(matches!(view, RootfsView::Copy { .. }));
        assert_eq!(fs::read(copy.join("f")).unwrap(), b"y");
        assert!(host.calls().is_empty(), "no overlay was tried");
    }

    #[test]
    fn overlay_view_is_unmounted_on_release() {
        let d = tempfile::tempdir().unwrap();
        let host = FakeHost::default();
        let view = RootfsView::create(&host, d.path(), &view_dirs(d.path()), false).unwrap();
        assert!(matches!(view, RootfsView::Overlay { .. }));
        view.release(&host).unwrap();
        assert!(host.calls().last().unwrap().starts_with("unmount"));
    }
}
