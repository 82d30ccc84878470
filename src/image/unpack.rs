//! Applies one layer (a tar stream, plain, gzip or zstd) onto a root filesystem.
//!
//! Layers are untrusted. Whatever an entry says, nothing is written, linked, chmod-ed or
//! deleted outside `rootfs`:
//! - a path with `..` that climbs, and a hard link pointing out, refuse the whole layer;
//! - an entry (or a whiteout) below an existing symlink refuses the whole layer: inside a
//!   container the link would resolve within the rootfs, but here on the host it could
//!   point anywhere;
//! - the tar crate's own `unpack_in` checks (canonical parent inside the root, `O_EXCL`
//!   file creation, no chmod through a symlink) stay in force underneath.
//!
//! Whiteouts follow the OCI image spec: `.wh.NAME` deletes NAME from lower layers, and
//! `.wh..wh..opq` empties its directory of everything lower layers put there (entries of
//! the same layer stay, in whatever order the tar lists them).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::ImageError;
use super::digest::{Digest, Hasher};

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// How ownership recorded in the layer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Files get the uid/gid the tar records (needs privilege).
    Preserve,
    /// Files belong to whoever unpacks (rootless without a user namespace).
    Ignore,
}

/// What one layer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
}

/// What one image may unpack to: a few kilobytes of gzip can expand to terabytes, or to
/// millions of empty files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackCaps {
    /// Uncompressed bytes of all layers together (the tar streams, headers included).
    pub bytes: u64,
    /// Tar entries of all layers together.
    pub entries: u64,
}

impl Default for UnpackCaps {
    fn default() -> Self {
        UnpackCaps {
            bytes: 32 << 30,
            entries: 2_000_000,
        }
    }
}

/// What is left of an image's caps while its layers are unpacked one after the other.
#[derive(Debug)]
pub struct Budget<'a> {
    image: &'a str,
    caps: UnpackCaps,
    used: LayerStats,
}

impl<'a> Budget<'a> {
    pub fn new(image: &'a str, caps: UnpackCaps) -> Budget<'a> {
        Budget {
            image,
            caps,
            used: LayerStats::default(),
        }
    }

    fn refuse(&self, what: &str, cap: u64) -> ImageError {
        ImageError::TooLarge {
            image: self.image.to_owned(),
            what: format!(
                "it unpacks to more than {cap} {what}, the cap per image \
                 (--max-image-{what} raises it)"
            ),
        }
    }
}

/// Unpacks the layer blob at `blob` (digest `layer`) onto `rootfs`, checking that its
/// uncompressed content has digest `diff_id`, and that the image stays within `budget`.
pub fn unpack_layer(
    blob: &Path,
    layer: &Digest,
    diff_id: &Digest,
    rootfs: &Path,
    ownership: Ownership,
    id_limit: Option<u32>,
    budget: &mut Budget<'_>,
) -> Result<LayerStats, ImageError> {
    let bad = |message: String| ImageError::BadLayer {
        layer: layer.clone(),
        message,
    };
    let file = File::open(blob).map_err(|source| ImageError::Store {
        path: blob.to_owned(),
        source,
    })?;
    let reader = decompressor(BufReader::with_capacity(crate::util::IO_BUFFER, file))
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Hasher::new(),
        bytes: 0,
        cap: budget.caps.bytes.saturating_sub(budget.used.bytes),
    };
    let mut stats = LayerStats::default();
    let entries_left = budget.caps.entries.saturating_sub(budget.used.entries);
    let applied = (|| {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        archive.set_preserve_ownerships(ownership == Ownership::Preserve);
        let mut applier = Applier {
            rootfs,
            layer,
            ownership,
            id_limit,
            written: HashSet::new(),
        };
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for entry in entries {
            crate::interrupt::check()?;
            if stats.entries >= entries_left {
                return Err(budget.refuse("entries", budget.caps.entries));
            }
            let mut entry = entry.map_err(|e| bad(format!("corrupt tar: {e}")))?;
            applier.apply(&mut entry)?;
            stats.entries += 1;
        }
        Ok(())
    })();
    // Over the byte cap, the reader failed whatever was reading: that is the error to give.
    if hashing.bytes > hashing.cap {
        return Err(budget.refuse("bytes", budget.caps.bytes));
    }
    applied?;
    // The diff id covers the whole uncompressed stream, including the padding after the
    // last entry that the tar reader does not consume.
    let drained = io::copy(&mut hashing, &mut io::sink());
    if hashing.bytes > hashing.cap {
        return Err(budget.refuse("bytes", budget.caps.bytes));
    }
    drained.map_err(|e| bad(format!("corrupt stream: {e}")))?;
    stats.bytes = hashing.bytes;
    budget.used.bytes += stats.bytes;
    budget.used.entries += stats.entries;
    let actual = hashing.hasher.finish();
    if actual != *diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("uncompressed layer {layer}"),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(stats)
}

/// Picks the decompressor from the stream's magic bytes rather than the media type, which
/// registries and image builders get wrong often enough.
fn decompressor<R: Read + Send + 'static>(mut r: BufReader<R>) -> io::Result<Box<dyn Read + Send>> {
    use std::io::BufRead;
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
    /// Bytes this layer may still unpack to; reading past it fails.
    cap: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bytes > self.cap {
            return Err(io::Error::other("the image's unpacked size cap is reached"));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > self.cap {
            return Err(io::Error::other("the image's unpacked size cap is reached"));
        }
        Ok(n)
    }
}

struct Applier<'a> {
    rootfs: &'a Path,
    layer: &'a Digest,
    ownership: Ownership,
    /// Owners must be below this (the ids of a rootless berth's namespace: the kernel
    /// refuses others, and the error should say which file and what to do).
    id_limit: Option<u32>,
    /// Paths this layer created, which its own opaque whiteouts must keep.
    written: HashSet<PathBuf>,
}

impl Applier<'_> {
    fn escape(&self, path: &Path, why: &str) -> ImageError {
        ImageError::LayerEscape {
            layer: self.layer.clone(),
            path: path.to_owned(),
            why: why.to_owned(),
        }
    }

    fn bad(&self, message: String) -> ImageError {
        ImageError::BadLayer {
            layer: self.layer.clone(),
            message,
        }
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry
            .path()
            .map_err(|e| self.bad(format!("bad entry path: {e}")))?
            .into_owned();
        let Some(rel) = normalize(&raw).map_err(|()| self.escape(&raw, "has a '..' component"))?
        else {
            return Ok(()); // the root directory itself
        };
        self.check_no_symlink_ancestors(&rel, &raw)?;
        if self.whiteout(&rel, &raw)? {
            return Ok(());
        }
        self.check_owner(entry.header(), &rel)?;
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            self.check_hard_link(entry, &raw)?;
        }
        let dest = self.rootfs.join(&rel);
        // A new entry replaces whatever lower layers had at its path, even a directory.
        if let Ok(existing) = fs::symlink_metadata(&dest)
            && !(existing.is_dir() && kind.is_dir())
        {
            crate::util::remove_tree(&dest)
                .map_err(|e| self.bad(format!("replace {}: {e}", rel.display())))?;
        }

        self.create_missing_parents(&rel)
            .map_err(|e| self.bad(format!("parents of {}: {e}", rel.display())))?;
        match kind {
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                self.make_special(entry, kind, &dest)?;
            }
            _ => self.unpack(entry, &rel, &raw)?,
        }
        self.written.insert(rel);
        Ok(())
    }

    fn check_owner(&self, header: &tar::Header, rel: &Path) -> Result<(), ImageError> {
        let Some(limit) = self
            .id_limit
            .filter(|_| self.ownership == Ownership::Preserve)
        else {
            return Ok(());
        };
        // An unreadable field leaves the owner unset, as everywhere else in unpacking.
        let ids = [("uid", header.uid().ok()), ("gid", header.gid().ok())];
        for (what, id) in ids {
            let Some(id) = id else { continue };
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            if id >= limit {
                return Err(ImageError::Shift(super::ShiftError::OutOfRange {
                    path: self.rootfs.join(rel),
                    what,
                    id,
                    size: limit,
                }));
            }
        }
        Ok(())
    }

    /// Applies `rel` if it is a whiteout (`.wh.NAME` or the opaque marker); `true` if so.
    fn whiteout(&self, rel: &Path, raw: &Path) -> Result<bool, ImageError> {
        let name = rel.file_name().unwrap_or_default();
        let parent = rel.parent().unwrap_or_else(|| Path::new(""));
        if name == OPAQUE {
            self.clear_opaque(parent)
                .map_err(|e| self.bad(format!("opaque whiteout in {}: {e}", parent.display())))?;
            return Ok(true);
        }
        let Some(target) = name.to_str().and_then(|n| n.strip_prefix(WHITEOUT_PREFIX)) else {
            return Ok(false);
        };
        if target.is_empty() || target == "." || target == ".." {
            return Err(self.escape(raw, "whiteout names no file"));
        }
        let victim = self.rootfs.join(parent).join(target);
        crate::util::remove_tree(&victim)
            .map_err(|e| self.bad(format!("whiteout {}: {e}", raw.display())))?;
        Ok(true)
    }

    /// A hard link must point inside the rootfs, at something that exists and is no
    /// directory.
    fn check_hard_link<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let target = entry
            .link_name()
            .map_err(|e| self.bad(format!("bad link name: {e}")))?
            .ok_or_else(|| self.bad(format!("hard link {} has no target", raw.display())))?
            .into_owned();
        let target_rel = normalize(&target)
            .map_err(|()| self.escape(raw, "hard link target has a '..' component"))?
            .ok_or_else(|| self.escape(raw, "hard link to the root directory"))?;
        self.check_no_symlink_ancestors(&target_rel, raw)?;
        match fs::symlink_metadata(self.rootfs.join(&target_rel)) {
            Ok(m) if m.is_dir() => {
                Err(self.bad(format!("hard link {} to a directory", raw.display())))
            }
            Ok(_) => Ok(()),
            Err(_) => Err(self.bad(format!(
                "hard link {} to missing {}",
                raw.display(),
                target_rel.display()
            ))),
        }
    }

    /// Files, directories and links, through the tar reader's own checks.
    fn unpack<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let unpacked = entry.unpack_in(self.rootfs).map_err(|e| {
            if self.resolves_outside(rel) {
                self.escape(raw, "resolves outside the rootfs")
            } else {
                self.bad(format!("{}: {e}", raw.display()))
            }
        })?;
        if !unpacked {
            return Err(self.escape(raw, "refused by the tar reader"));
        }
        Ok(())
    }

    /// Creates the directories above `rel` that neither the layer nor a lower one made, as
    /// 0755 like Docker and podman. The tar reader would create them with the process's
    /// umask: 0700 under berth's, which a non-root container user cannot traverse. Existing
    /// ancestors were checked not to be symlinks; the missing ones are made here, inside the
    /// rootfs.
    fn create_missing_parents(&self, rel: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut dir = self.rootfs.to_path_buf();
        for part in parent.components() {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir)?;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the parent of `rel` resolves to a place outside the rootfs (what the tar
    /// reader refuses to write through).
    fn resolves_outside(&self, rel: &Path) -> bool {
        let parent = self
            .rootfs
            .join(rel.parent().unwrap_or_else(|| Path::new("")));
        match (parent.canonicalize(), self.rootfs.canonicalize()) {
            (Ok(p), Ok(root)) => !p.starts_with(root),
            _ => false,
        }
    }

    /// Refuses entries whose existing ancestors include a symlink.
    fn check_no_symlink_ancestors(&self, rel: &Path, raw: &Path) -> Result<(), ImageError> {
        let mut prefix = PathBuf::new();
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                break; // the entry itself may replace a symlink
            }
            prefix.push(part);
            match fs::symlink_metadata(self.rootfs.join(&prefix)) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.escape(
                        raw,
                        &format!("goes through the symlink {}", prefix.display()),
                    ));
                }
                Ok(_) => {}
                Err(_) => break, // not there yet: the tar reader creates real directories
            }
        }
        Ok(())
    }

    /// Removes from `rel_dir` everything this layer did not write itself.
    fn clear_opaque(&self, rel_dir: &Path) -> io::Result<()> {
        let dir = self.rootfs.join(rel_dir);
        let meta = match fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !meta.is_dir() {
            return Ok(());
        }
        for child in fs::read_dir(&dir)? {
            let child = child?;
            let child_rel = rel_dir.join(child.file_name());
            if self.written.contains(&child_rel) {
                if child.file_type()?.is_dir() {
                    self.clear_opaque(&child_rel)?;
                }
            } else {
                crate::util::remove_tree(&child.path())?;
            }
        }
        Ok(())
    }

    fn make_special<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        kind: tar::EntryType,
        dest: &Path,
    ) -> Result<(), ImageError> {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (flag, dev) = match kind {
            tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
            tar::EntryType::Char | tar::EntryType::Block => {
                if self.ownership == Ownership::Ignore {
                    // Unprivileged: device nodes cannot be created; containers get their
                    // devices from the runtime anyway.
                    tracing::debug!(path = %dest.display(), "skipping device node");
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let flag = if kind == tar::EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                (flag, makedev(u64::from(major), u64::from(minor)))
            }
            _ => return Ok(()),
        };
        let io_err = |e: nix::Error| self.bad(format!("{}: {e}", dest.display()));
        let mode = Mode::from_bits_truncate(mode);
        match mknod(dest, flag, mode, dev) {
            // Root of a user namespace (a rootless berth) may not create device nodes either.
            Err(nix::Error::EPERM) if flag != SFlag::S_IFIFO => {
                tracing::debug!(path = %dest.display(), "skipping device node (not permitted)");
                return Ok(());
            }
            other => other.map_err(io_err)?,
        }
        if self.ownership == Ownership::Preserve {
            let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
            let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
            nix::unistd::fchownat(
                None,
                dest,
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io_err)?;
        }
        // mknod applies the umask; the layer's mode is the one to keep.
        nix::sys::stat::fchmodat(
            None,
            dest,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io_err)
    }
}

/// Turns an entry path into a clean relative path with leading `/` and `.` dropped.
/// `Err` for any `..` component; `Ok(None)` for the root itself.
fn normalize(path: &Path) -> Result<Option<PathBuf>, ()> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            // No legitimate layer needs `..`; resolving it lexically would only hide intent.
            Component::ParentDir => return Err(()),
            Component::Normal(p) => out.push(p),
        }
    }
    if out.as_os_str().is_empty() || out == Path::new(OsStr::new("")) {
        Ok(None)
    } else {
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Builds an uncompressed tar in memory from (path, kind) entries.
    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_600_000_000);
            match e {
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o640);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Link(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Hard(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// Writes raw tar bytes whose names the tar builder would refuse (`..`).
    fn raw_tar_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn apply(root: &Path, tar_bytes: &[u8]) -> Result<LayerStats, ImageError> {
        let blob = root
            .parent()
            .unwrap()
            .join(format!("layer-{}.tar", crate::util::random_hex(4)));
        fs::write(&blob, tar_bytes).unwrap();
        let d = Digest::of(tar_bytes);
        let mut budget = Budget::new("test", UnpackCaps::default());
        unpack_layer(&blob, &d, &d, root, Ownership::Ignore, None, &mut budget)
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        (dir, root)
    }

    #[test]
    fn files_dirs_links_and_modes() {
        let (_d, root) = setup();
        apply(
            &root,
            &tar_of(&[
                E::Dir("etc"),
                E::File("etc/hello", b"hi"),
                E::Link("etc/link", "hello"),
                E::Hard("etc/hard", "etc/hello"),
            ]),
        )
        .unwrap();
        assert_eq!(fs::read(root.join("etc/hello")).unwrap(), b"hi");
        assert_eq!(
            fs::read_link(root.join("etc/link")).unwrap(),
            Path::new("hello")
        );
        let m = fs::metadata(root.join("etc/hello")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        assert_eq!(m.nlink(), 2);
        assert_eq!(m.ino(), fs::metadata(root.join("etc/hard")).unwrap().ino());
    }

    /// Sets the process's umask until dropped (process-wide: the tests that run meanwhile
    /// only get stricter modes, which as root they can still read).
    struct Umask(nix::sys::stat::Mode);

    impl Umask {
        fn set(bits: u32) -> Umask {
            Umask(nix::sys::stat::umask(
                nix::sys::stat::Mode::from_bits_truncate(bits),
            ))
        }
    }

    impl Drop for Umask {
        fn drop(&mut self) {
            nix::sys::stat::umask(self.0);
        }
    }

    #[test]
    fn missing_parents_are_0755_and_modes_ignore_a_strict_umask() {
        let (_d, root) = setup();
        let _umask = Umask::set(0o077);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o4755);
        h.set_size(1);
        b.append_data(&mut h, "usr/bin/x", &b"x"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Fifo);
        h.set_mode(0o666);
        h.set_size(0);
        b.append_data(&mut h, "run/fifo", io::empty()).unwrap();
        apply(&root, &b.into_inner().unwrap()).unwrap();
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("usr"), 0o755);
        assert_eq!(mode("usr/bin"), 0o755);
        assert_eq!(mode("usr/bin/x"), 0o4755);
        assert_eq!(mode("run"), 0o755);
        assert_eq!(mode("run/fifo"), 0o666);
        // A directory the layer lists keeps its own mode.
        apply(&root, &tar_of(&[E::Dir("opt"), E::File("opt/a/b", b"1")])).unwrap();
        assert_eq!(mode("opt"), 0o755);
        assert_eq!(mode("opt/a"), 0o755);
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let (_d, root) = setup();
        apply(
            &root,
            &tar_of(&[
                E::Dir("a"),
                E::File("a/gone", b"1"),
                E::File("a/kept", b"1"),
                E::Dir("o"),
                E::File("o/old", b"1"),
                E::Dir("o/sub"),
                E::File("o/sub/old", b"1"),
            ]),
        )
        .unwrap();
        apply(
            &root,
            &tar_of(&[
                E::File("a/.wh.gone", b""),
                E::Dir("o"),
                E::Dir("o/sub"),
                E::File("o/sub/new", b"2"),
                E::File("o/.wh..wh..opq", b""),
                E::File("o/new", b"2"),
            ]),
        )
        .unwrap();
        assert!(!root.join("a/gone").exists());
        assert!(root.join("a/kept").exists());
        assert!(!root.join("a/.wh.gone").exists());
        assert!(!root.join("o/old").exists());
        assert!(
            !root.join("o/sub/old").exists(),
            "opaque must clear lower content of kept dirs"
        );
        assert!(root.join("o/sub/new").exists());
        assert!(root.join("o/new").exists());
        assert!(!root.join("o/.wh..wh..opq").exists());
    }

    #[test]
    fn a_file_replaces_a_directory_and_back() {
        let (_d, root) = setup();
        apply(
            &root,
            &tar_of(&[E::Dir("x"), E::File("x/y", b"1"), E::File("f", b"1")]),
        )
        .unwrap();
        apply(&root, &tar_of(&[E::File("x", b"now a file"), E::Dir("f")])).unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), b"now a file");
        assert!(root.join("f").is_dir());
    }

    #[test]
    fn dotdot_escape_refuses_the_layer() {
        let (d, root) = setup();
        let e = apply(&root, &raw_tar_entry("../escaped", b"evil")).unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
        assert!(!d.path().join("escaped").exists());
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let (d, root) = setup();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let e = apply(
            &root,
            &tar_of(&[
                E::Link("evil", outside.to_str().unwrap()),
                E::File("evil/planted", b"x"),
            ]),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
        assert!(!outside.join("planted").exists());
        // the same with a relative link climbing out
        let (d2, root2) = setup();
        fs::create_dir(d2.path().join("outside")).unwrap();
        let e = apply(
            &root2,
            &tar_of(&[E::Link("up", "../outside"), E::File("up/planted", b"x")]),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
        assert!(!d2.path().join("outside/planted").exists());
    }

    #[test]
    fn whiteout_through_a_symlink_is_refused() {
        let (d, root) = setup();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"keep").unwrap();
        apply(
            &root,
            &tar_of(&[E::Link("evil", outside.to_str().unwrap())]),
        )
        .unwrap();
        let e = apply(&root, &tar_of(&[E::File("evil/.wh.precious", b"")])).unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
        assert!(outside.join("precious").exists());
        let e = apply(&root, &tar_of(&[E::File(".wh...", b"")])).unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
    }

    #[test]
    fn hard_link_out_of_the_root_is_refused() {
        let (d, root) = setup();
        fs::write(d.path().join("secret"), b"s").unwrap();
        let e = apply(&root, &tar_of(&[E::Hard("h", "../secret")])).unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
        assert!(!root.join("h").exists());
    }

    #[test]
    fn wrong_diff_id_is_refused() {
        let (d, root) = setup();
        let bytes = tar_of(&[E::File("a", b"1")]);
        let blob = d.path().join("l.tar");
        fs::write(&blob, &bytes).unwrap();
        let e = unpack_layer(
            &blob,
            &Digest::of(&bytes),
            &Digest::of(b"x"),
            &root,
            Ownership::Ignore,
            None,
            &mut Budget::new("test", UnpackCaps::default()),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn gzip_and_zstd_layers() {
        use std::io::Write;
        let bytes = tar_of(&[E::File("z", b"zz")]);
        let diff = Digest::of(&bytes);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&bytes[..], 3).unwrap();
        for compressed in [gz, zs] {
            let (d, root) = setup();
            let blob = d.path().join("l");
            fs::write(&blob, &compressed).unwrap();
            unpack_layer(
                &blob,
                &Digest::of(&compressed),
                &diff,
                &root,
                Ownership::Ignore,
                None,
                &mut Budget::new("test", UnpackCaps::default()),
            )
            .unwrap();
            assert_eq!(fs::read(root.join("z")).unwrap(), b"zz");
        }
    }

    /// Unpacks `layers` (uncompressed) one after the other under `caps`.
    fn unpack_capped(layers: &[Vec<u8>], caps: UnpackCaps) -> Result<(), ImageError> {
        let (d, root) = setup();
        let mut budget = Budget::new("127.0.0.1:5000/acme/bomb:1", caps);
        for (i, bytes) in layers.iter().enumerate() {
            let blob = d.path().join(format!("l{i}"));
            fs::write(&blob, bytes).unwrap();
            let digest = Digest::of(bytes);
            unpack_layer(
                &blob,
                &digest,
                &digest,
                &root,
                Ownership::Ignore,
                None,
                &mut budget,
            )?;
        }
        Ok(())
    }

    #[test]
    fn an_image_over_its_entry_cap_is_refused_across_layers() {
        let one = tar_of(&[E::File("a", b"1"), E::File("b", b"2")]);
        let two = tar_of(&[E::File("c", b"3"), E::File("d", b"4")]);
        let caps = |entries| UnpackCaps {
            bytes: 1 << 30,
            entries,
        };
        unpack_capped(&[one.clone(), two.clone()], caps(4)).unwrap();
        let e = unpack_capped(&[one, two], caps(3)).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "image 127.0.0.1:5000/acme/bomb:1 is refused: it unpacks to more than 3 entries, \
             the cap per image (--max-image-entries raises it)"
        );
    }

    #[test]
    fn an_image_over_its_byte_cap_is_refused_even_inside_one_file() {
        use std::io::Write;
        // 64 MiB of zeros: a few kilobytes gzipped.
        let big = tar_of(&[E::File("zeros", &vec![0u8; 64 << 20])]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&big).unwrap();
        let gz = gz.finish().unwrap();
        let (d, root) = setup();
        let blob = d.path().join("bomb");
        fs::write(&blob, &gz).unwrap();
        let caps = UnpackCaps {
            bytes: 1 << 20,
            entries: 100,
        };
        let mut budget = Budget::new("oci:/x:bomb", caps);
        let e = unpack_layer(
            &blob,
            &Digest::of(&gz),
            &Digest::of(&big),
            &root,
            Ownership::Ignore,
            None,
            &mut budget,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("image oci:/x:bomb is refused: it unpacks to more than 1048576 bytes"),
            "{e}"
        );
        // Stopped at the cap, not after writing the whole file.
        let written = fs::metadata(root.join("zeros")).map_or(0, |m| m.len());
        assert!(written <= 2 << 20, "{written} bytes written");
        let small = tar_of(&[E::File("a", b"1")]);
        unpack_capped(&[small], caps).unwrap();
    }

    #[test]
    fn normalize_paths() {
        assert_eq!(
            normalize(Path::new("./a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(
            normalize(Path::new("/a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(normalize(Path::new("./")).unwrap(), None);
        assert!(normalize(Path::new("a/../b")).is_err());
        assert!(normalize(Path::new("../b")).is_err());
    }
}
