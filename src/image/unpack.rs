//! Extracts one layer (a tar stream, plain, gzip or zstd) into a fresh, empty directory of
//! its own in the layer store, in the form overlayfs stacks.
//!
//! Layers are untrusted. Whatever an entry says, nothing is written, linked, chmod-ed or
//! deleted outside the layer's directory:
//! - a path with `..` and a hard link pointing out refuse the whole layer;
//! - every parent is opened beneath the layer directory's handle with `openat2` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so the kernel refuses
//!   an entry below a symlink (the layer's own: a lower layer's links are in other
//!   directories and never on the way) and anything that would leave the directory;
//! - the entry itself is created relative to its parent's handle with `O_EXCL`/`O_NOFOLLOW`
//!   semantics (`openat`, `mkdirat`, `symlinkat`, `linkat` without following, `mknodat`).
//!
//! Whiteouts stay whiteouts, as overlayfs reads them: `.wh.NAME` becomes a 0/0 character
//! device NAME, `.wh..wh..opq` the `overlay.opaque` xattr of its directory (`trusted.` for
//! berth as real root, `user.` in a user namespace, where the overlay is mounted with
//! `userxattr`). Device nodes are skipped (containers get theirs from the runtime) and
//! counted; extended attributes other than `user.*` (and never `user.overlay.*`, which
//! overlayfs would obey) are dropped.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid};
use rustix::io::Errno;

use super::ImageError;
use super::digest::{Digest, Hasher};
use super::members::{Member, Members};
use crate::host::IdMap;

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
/// Parent directories kept open: tar streams list a directory's entries together, and go
/// back up a few levels at most before moving on.
const OPEN_DIRS: usize = 8;

/// How ownership recorded in the layer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Files get the uid/gid the tar records (needs privilege).
    Preserve,
    /// Files belong to whoever unpacks (rootless without a user namespace).
    Ignore,
}

/// How a layer is written: owners, and which xattrs mark an opaque directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extraction {
    pub ownership: Ownership,
    /// With [`Ownership::Preserve`], image id N is written as `ids`' N (a range starting at
    /// 0 only checks the id is in range: a rootless berth's namespace has only these).
    pub ids: Option<IdMap>,
    /// `trusted.overlay.` or `user.overlay.`.
    pub overlay_xattrs: &'static str,
}

/// What one layer did.
#[derive(Debug, Default, Clone)]
pub struct LayerStats {
    /// Hard links (link, target) to files lower layers hold: see [`link_from_below`].
    pub pending_links: Vec<(PathBuf, PathBuf)>,
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes the layer lists, not created.
    pub devices_skipped: u64,
    /// Extended attributes not kept (not `user.*`).
    pub xattrs_dropped: u64,
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

/// What an image's layers have used of its caps so far; shared by the threads that unpack
/// them at once, so every byte and entry counts against one total.
#[derive(Debug)]
pub struct Budget<'a> {
    image: &'a str,
    caps: UnpackCaps,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl<'a> Budget<'a> {
    pub fn new(image: &'a str, caps: UnpackCaps) -> Budget<'a> {
        Budget {
            image,
            caps,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
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

    /// Counts `n` more bytes; `false` once the image is over its cap.
    fn take_bytes(&self, n: u64) -> bool {
        self.bytes.fetch_add(n, Ordering::Relaxed) + n <= self.caps.bytes
    }

    fn take_entry(&self) -> Result<(), ImageError> {
        if self.entries.fetch_add(1, Ordering::Relaxed) >= self.caps.entries {
            return Err(self.refuse("entries", self.caps.entries));
        }
        Ok(())
    }
}

/// Unpacks the layer blob at `blob` (digest `layer`) into `dest`, an empty directory,
/// checking that its uncompressed content has digest `diff_id`, and that the image stays
/// within `budget`.
pub fn unpack_layer(
    blob: &Path,
    layer: &Digest,
    diff_id: &Digest,
    dest: &Path,
    how: &Extraction,
    budget: &Budget<'_>,
) -> Result<LayerStats, ImageError> {
    let bad = |message: String| ImageError::BadLayer {
        layer: layer.clone(),
        message,
    };
    let store_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Store { path, source }
    };
    let file = File::open(blob).map_err(store_err(blob))?;
    let reader = decompressor(BufReader::with_capacity(crate::util::IO_BUFFER, file))
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Hasher::new(),
        bytes: 0,
        budget,
        over: false,
    };
    let root = open_root(dest).map_err(store_err(dest))?;
    let mut applier = Applier::new(root, dest, layer, how);
    let applied = (|| {
        let mut archive = tar::Archive::new(&mut hashing);
        let mut members = Members::new(&mut archive).map_err(|e| bad(crate::util::chain(&e)))?;
        while let Some(member) = members.next_member() {
            crate::interrupt::check()?;
            budget.take_entry()?;
            let mut member = member.map_err(|e| bad(crate::util::chain(&e)))?;
            applier.apply(&mut member)?;
            applier.stats.entries += 1;
        }
        applier.finish()
    })();
    // Over the byte cap, the reader failed whatever was reading: that is the error to give.
    if hashing.over {
        return Err(budget.refuse("bytes", budget.caps.bytes));
    }
    applied?;
    // The diff id covers the whole uncompressed stream, including the padding after the
    // last entry that the tar reader does not consume.
    let drained = io::copy(&mut hashing, &mut io::sink());
    if hashing.over {
        return Err(budget.refuse("bytes", budget.caps.bytes));
    }
    drained.map_err(|e| bad(format!("corrupt stream: {e}")))?;
    let mut stats = std::mem::take(&mut applier.stats);
    stats.bytes = hashing.bytes;
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

/// Makes the hard links a layer (unpacked into `dest`, not yet in place) has to files of
/// the layers `below` it (top first): each target is copied up into the layer first, as
/// overlayfs copies up a file before linking it, so the merged image shows one inode with
/// both names. The layer's content then depends on what is below it (see layers.rs).
pub fn link_from_below(
    dest: &Path,
    links: &[(PathBuf, PathBuf)],
    below: &super::layers::Stack,
    layer: &Digest,
    how: &Extraction,
) -> Result<(), ImageError> {
    let root = open_root(dest).map_err(|source| ImageError::Store {
        path: dest.to_owned(),
        source,
    })?;
    let mut applier = Applier::new(root, dest, layer, how);
    applier.pending_ok = false;
    // Only directories made here get metadata: the layer's own have theirs.
    applier.dirs.clear();
    for (link, target) in links {
        let exists = rustix::fs::statat(&*applier.root, target, AtFlags::SYMLINK_NOFOLLOW);
        if exists.is_err() {
            let source = below
                .find(target)
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()));
            let Some(source) = source else {
                return Err(applier.bad(format!(
                    "hard link {} to missing {}",
                    link.display(),
                    target.display()
                )));
            };
            applier.copy_up(&source, target)?;
        }
        applier.link_in_layer(link, target)?;
    }
    applier.finish()
}

fn open_root(dest: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dest, flags, Mode::empty())?)
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

struct HashingReader<'b, R> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
    budget: &'b Budget<'b>,
    /// The image went over its byte cap (reading fails from then on).
    over: bool,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let capped = || io::Error::other("the image's unpacked size cap is reached");
        if self.over {
            return Err(capped());
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if !self.budget.take_bytes(n as u64) {
            self.over = true;
            return Err(capped());
        }
        Ok(n)
    }
}

/// What a directory gets once every entry is in: entries added later would change its
/// time, and a mode without write permission would stop them.
#[derive(Debug, Clone, Default)]
struct DirMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: Option<u64>,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// An open directory of the layer, shared by the cache and whoever uses it.
type DirFd = Rc<OwnedFd>;

struct Applier<'a> {
    root: DirFd,
    root_path: &'a Path,
    layer: &'a Digest,
    how: &'a Extraction,
    /// Directories by path ("" is the root), most recently used last.
    open: Vec<(PathBuf, DirFd)>,
    dirs: HashMap<PathBuf, DirMeta>,
    /// Who creates the files: no chown is needed to give them to these ids.
    me: (u32, u32),
    /// The umask files are created under: bits it takes need a `fchmod` after.
    umask: u32,
    /// A hard link to a missing file may point into a lower layer (not when linking one).
    pending_ok: bool,
    buf: Vec<u8>,
    stats: LayerStats,
}

impl<'a> Applier<'a> {
    fn new(
        root: OwnedFd,
        root_path: &'a Path,
        layer: &'a Digest,
        how: &'a Extraction,
    ) -> Applier<'a> {
        let mut dirs = HashMap::new();
        let root_meta = DirMeta {
            mode: 0o755,
            owner: root_owner(how),
            ..DirMeta::default()
        };
        dirs.insert(PathBuf::new(), root_meta);
        Applier {
            root: Rc::new(root),
            root_path,
            layer,
            how,
            open: Vec::new(),
            dirs,
            me: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
            umask: umask(),
            pending_ok: true,
            buf: vec![0; 128 << 10],
            stats: LayerStats::default(),
        }
    }

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

    fn apply<R: Read>(&mut self, entry: &mut Member<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path.clone();
        let rel = normalize(&raw).map_err(|()| self.escape(&raw, "has a '..' component"))?;
        let kind = entry.header.entry_type();
        let Some(rel) = rel else {
            // The root directory itself: its metadata is the layer directory's.
            if kind.is_dir() {
                let meta = self.dir_meta(entry, &raw)?;
                self.dirs.insert(PathBuf::new(), meta);
            }
            return Ok(());
        };
        let name = rel.file_name().unwrap_or_default().to_owned();
        let parent_rel = rel.parent().unwrap_or_else(|| Path::new("")).to_owned();
        if self.whiteout(&parent_rel, &name, &raw)? {
            return Ok(());
        }
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            tracing::debug!(path = %raw.display(), "skipping device node");
            self.stats.devices_skipped += 1;
            return Ok(());
        }
        let owner = self.owner(&entry.header, &rel)?;
        let parent = self.parent(&parent_rel, &raw)?;
        match kind {
            tar::EntryType::Directory => {
                self.make_dir(&parent, &rel, &raw)?;
                let meta = self.dir_meta(entry, &raw)?;
                self.dirs.insert(rel, meta);
            }
            tar::EntryType::Symlink => self.symlink(entry, &parent, &rel, owner, &raw)?,
            tar::EntryType::Link => self.hard_link(entry, &parent, &rel, &raw)?,
            tar::EntryType::Fifo => self.fifo(entry, &parent, &rel, owner, &raw)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(entry, &parent, &rel, owner, &raw)?;
            }
            // Extension headers are read with their member (see members.rs).
            _ => {}
        }
        Ok(())
    }

    /// The owner an entry gets on disk; `None` where owners are not set.
    fn owner(&self, header: &tar::Header, rel: &Path) -> Result<Option<(u32, u32)>, ImageError> {
        if self.how.ownership != Ownership::Preserve {
            return Ok(None);
        }
        // An unreadable field is owner 0, as tar does.
        let id = |v: io::Result<u64>| u32::try_from(v.unwrap_or(0)).unwrap_or(u32::MAX);
        let (uid, gid) = (id(header.uid()), id(header.gid()));
        let Some(map) = self.how.ids else {
            return Ok(Some((uid, gid)));
        };
        let out_of_range = |what, id| {
            ImageError::Shift(super::ShiftError::OutOfRange {
                path: self.root_path.join(rel),
                what,
                id,
                size: map.size,
            })
        };
        let uid = map.uid(uid).ok_or_else(|| out_of_range("uid", uid))?;
        let gid = map.gid(gid).ok_or_else(|| out_of_range("gid", gid))?;
        Ok(Some((uid, gid)))
    }

    fn root_owner(&self) -> Option<(u32, u32)> {
        root_owner(self.how)
    }

    fn dir_meta<R: Read>(
        &mut self,
        entry: &Member<'_, R>,
        raw: &Path,
    ) -> Result<DirMeta, ImageError> {
        let rel = normalize(raw).ok().flatten().unwrap_or_default();
        Ok(DirMeta {
            mode: entry.header.mode().unwrap_or(0o755) & 0o7777,
            owner: self.owner(&entry.header, &rel)?,
            mtime: entry.header.mtime().ok(),
            xattrs: self.xattrs(entry),
        })
    }

    /// The `user.*` extended attributes the entry carries; the others are counted, dropped.
    fn xattrs<R: Read>(&mut self, entry: &Member<'_, R>) -> Vec<(OsString, Vec<u8>)> {
        let mut kept = Vec::new();
        for (key, value) in entry.pax_records() {
            let Some(name) = key.strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if name.starts_with(b"user.") && !name.starts_with(b"user.overlay.") {
                kept.push((OsStr::from_bytes(name).to_owned(), value.to_vec()));
            } else {
                self.stats.xattrs_dropped += 1;
            }
        }
        kept
    }
}

/// What directories the layer implies get: the image's root (shifted like everything else).
fn root_owner(how: &Extraction) -> Option<(u32, u32)> {
    match (how.ownership, how.ids) {
        (Ownership::Preserve, Some(map)) => Some((map.uid_start, map.gid_start)),
        (Ownership::Preserve, None) => Some((0, 0)),
        (Ownership::Ignore, _) => None,
    }
}

/// Opens the directory `rel` beneath `dir`, following no link and never leaving `dir`.
fn open_beneath(dir: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve)
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Applier<'_> {
    /// The layer's directory `rel` (created 0755 with its missing ancestors, as Docker
    /// and podman do), resolved by the kernel beneath the layer's root.
    fn parent(&mut self, rel: &Path, raw: &Path) -> Result<DirFd, ImageError> {
        if rel.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(i) = self.open.iter().position(|(p, _)| p == rel) {
            let hit = self.open.remove(i);
            let fd = hit.1.clone();
            self.open.push(hit);
            return Ok(fd);
        }
        let fd = match open_beneath(&self.root, rel) {
            Ok(fd) => Rc::new(fd),
            Err(Errno::NOENT) => self.create_parents(rel, raw)?,
            Err(e) => return Err(self.resolve_error(e, rel, raw)),
        };
        if self.open.len() >= OPEN_DIRS {
            self.open.remove(0);
        }
        self.open.push((rel.to_owned(), fd.clone()));
        Ok(fd)
    }

    fn create_parents(&mut self, rel: &Path, raw: &Path) -> Result<DirFd, ImageError> {
        let implied = DirMeta {
            mode: 0o755,
            owner: self.root_owner(),
            ..DirMeta::default()
        };
        let mut dir = self.root.clone();
        let mut path = PathBuf::new();
        for part in rel.components() {
            let part = Path::new(part.as_os_str());
            path.push(part);
            let next = match open_beneath(&dir, part) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&*dir, part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.resolve_error(e, &path, raw)),
                    }
                    self.dirs
                        .entry(path.clone())
                        .or_insert_with(|| implied.clone());
                    open_beneath(&dir, part).map_err(|e| self.resolve_error(e, &path, raw))?
                }
                Err(e) => return Err(self.resolve_error(e, &path, raw)),
            };
            dir = Rc::new(next);
        }
        Ok(dir)
    }

    fn resolve_error(&self, e: Errno, rel: &Path, raw: &Path) -> ImageError {
        // A symlink opened as a directory without following is "not a directory".
        let e = match e {
            Errno::NOTDIR if self.symlink_on_the_way(rel) => Errno::LOOP,
            e => e,
        };
        match e {
            Errno::LOOP => {
                self.escape(raw, &format!("goes through a symlink in {}", rel.display()))
            }
            Errno::XDEV => self.escape(raw, "resolves outside the layer"),
            e => self.bad(format!(
                "parent of {}: {}",
                raw.display(),
                io::Error::from(e)
            )),
        }
    }

    /// Whether `rel` or a directory above it in the layer is a symlink.
    fn symlink_on_the_way(&self, rel: &Path) -> bool {
        let mut prefix = PathBuf::new();
        rel.components().any(|part| {
            prefix.push(part);
            // Shorter prefixes were no links, so only the last component may be one.
            rustix::fs::statat(&*self.root, &prefix, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        })
    }

    /// Writes `name` in `parent_rel` as a whiteout if it is one (`.wh.NAME` or the opaque
    /// marker); `true` if so.
    fn whiteout(
        &mut self,
        parent_rel: &Path,
        name: &OsStr,
        raw: &Path,
    ) -> Result<bool, ImageError> {
        if name == OPAQUE {
            let dir = self.parent(parent_rel, raw)?;
            let attr = format!("{}opaque", self.how.overlay_xattrs);
            rustix::fs::fsetxattr(&*dir, attr.as_str(), b"y", rustix::fs::XattrFlags::empty())
                .map_err(|e| {
                    self.bad(format!(
                        "opaque whiteout in {}: {}",
                        parent_rel.display(),
                        io::Error::from(e)
                    ))
                })?;
            return Ok(true);
        }
        let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
            return Ok(false);
        };
        if target.is_empty() || target == b"." || target == b".." {
            return Err(self.escape(raw, "whiteout names no file"));
        }
        let target = OsStr::from_bytes(target);
        let dir = self.parent(parent_rel, raw)?;
        let rel = parent_rel.join(target);
        let make = || {
            rustix::fs::mknodat(
                &*dir,
                target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
        };
        self.create(&dir, &rel, make, raw)?;
        Ok(true)
    }

    /// Runs `make`, which creates `rel` in `dir`; if the layer listed that name before, the
    /// later entry replaces it, as tar does.
    fn create(
        &mut self,
        dir: &OwnedFd,
        rel: &Path,
        mut make: impl FnMut() -> Result<(), Errno>,
        raw: &Path,
    ) -> Result<(), ImageError> {
        match make() {
            Err(Errno::EXIST) => {
                self.remove_existing(dir, rel)?;
                make()
            }
            other => other,
        }
        .map_err(|e| self.bad(format!("{}: {}", raw.display(), io::Error::from(e))))
    }

    fn remove_existing(&mut self, dir: &OwnedFd, rel: &Path) -> Result<(), ImageError> {
        let name = rel.file_name().unwrap_or_default();
        let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
        let removed = match stat {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                // Its parents were just resolved without links: the path stays inside.
                crate::util::remove_tree(&self.root_path.join(rel))
            }
            Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io::Error::from),
        };
        // Handles kept open may be of what was removed.
        self.open.clear();
        self.dirs.retain(|p, _| !p.starts_with(rel));
        removed.map_err(|e| self.bad(format!("replace {}: {e}", rel.display())))
    }

    fn make_dir(&mut self, parent: &OwnedFd, rel: &Path, raw: &Path) -> Result<(), ImageError> {
        let name = rel.file_name().unwrap_or_default();
        // Searchable and writable until every entry is in (see DirMeta).
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW);
                if st.is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory) {
                    return Ok(());
                }
                self.create(
                    parent,
                    rel,
                    || rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)),
                    raw,
                )
            }
            other => {
                other.map_err(|e| self.bad(format!("{}: {}", raw.display(), io::Error::from(e))))
            }
        }
    }
}

/// What an entry's node gets after it is created.
struct NodeMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: u64,
}

impl Applier<'_> {
    fn node_meta<R: Read>(&self, entry: &Member<'_, R>, owner: Option<(u32, u32)>) -> NodeMeta {
        NodeMeta {
            mode: entry.header.mode().unwrap_or(0o644) & 0o7777,
            owner: owner.filter(|o| *o != self.me),
            mtime: entry.header.mtime().unwrap_or(0),
        }
    }

    /// A regular file, created with its mode and filled from the layer.
    fn file<R: Read>(
        &mut self,
        entry: &mut Member<'_, R>,
        parent: &OwnedFd,
        rel: &Path,
        owner: Option<(u32, u32)>,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let meta = self.node_meta(entry, owner);
        let xattrs = self.xattrs(entry);
        let name = rel.file_name().unwrap_or_default();
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(meta.mode);
        let mut fd = None;
        self.create(
            parent,
            rel,
            || {
                fd = Some(rustix::fs::openat(parent, name, flags, mode)?);
                Ok(())
            },
            raw,
        )?;
        let Some(fd) = fd else {
            return Err(self.bad(format!("{}: not created", raw.display())));
        };
        let mut file = File::from(fd);
        let mut buf = std::mem::take(&mut self.buf);
        let copied = (|| loop {
            let n = entry.data.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            file.write_all(&buf[..n])?;
        })();
        self.buf = buf;
        copied.map_err(|e: io::Error| self.bad(format!("{}: {e}", raw.display())))?;
        let set = || -> Result<(), Errno> {
            if let Some((uid, gid)) = meta.owner {
                rustix::fs::fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
            }
            // Set-id bits go with a chown, and with any write by a berth without CAP_FSETID
            // in the host's namespace (a rootless one: the kernel asks the initial
            // namespace); the umask (unless it is 0) takes others. They are put back.
            if meta.mode & 0o6000 != 0 || meta.mode & self.umask != 0 {
                rustix::fs::fchmod(&file, mode)?;
            }
            for (name, value) in &xattrs {
                let flags = rustix::fs::XattrFlags::empty();
                rustix::fs::fsetxattr(&file, name.as_os_str(), value, flags)?;
            }
            rustix::fs::futimens(&file, &timestamps(meta.mtime))
        };
        set().map_err(|e| self.bad(format!("{}: {}", raw.display(), io::Error::from(e))))
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &Member<'_, R>,
        parent: &OwnedFd,
        rel: &Path,
        owner: Option<(u32, u32)>,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let meta = self.node_meta(entry, owner);
        let target = entry
            .link
            .clone()
            .ok_or_else(|| self.bad(format!("symlink {} has no target", raw.display())))?;
        let name = rel.file_name().unwrap_or_default();
        self.create(
            parent,
            rel,
            || rustix::fs::symlinkat(&target, parent, name),
            raw,
        )?;
        self.set_at(parent, name, &meta, false)
            .map_err(|e| self.bad(format!("{}: {}", raw.display(), io::Error::from(e))))
    }

    fn fifo<R: Read>(
        &mut self,
        entry: &Member<'_, R>,
        parent: &OwnedFd,
        rel: &Path,
        owner: Option<(u32, u32)>,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let meta = self.node_meta(entry, owner);
        let name = rel.file_name().unwrap_or_default();
        let mode = Mode::from_raw_mode(meta.mode);
        let make = || rustix::fs::mknodat(parent, name, FileType::Fifo, mode, 0);
        self.create(parent, rel, make, raw)?;
        self.set_at(parent, name, &meta, true)
            .map_err(|e| self.bad(format!("{}: {}", raw.display(), io::Error::from(e))))
    }

    /// Owner, mode (not for a symlink) and time of `name` in `parent`, never following it.
    fn set_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &NodeMeta,
        mode: bool,
    ) -> Result<(), Errno> {
        if let Some((uid, gid)) = meta.owner {
            let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
            rustix::fs::chownat(
                parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if mode {
            // A FIFO the layer just made: not a link (mknodat made it), so following is moot.
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )?;
        }
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    /// A hard link, to something this layer wrote before (the layer is its own tree).
    fn hard_link<R: Read>(
        &mut self,
        entry: &Member<'_, R>,
        parent: &OwnedFd,
        rel: &Path,
        raw: &Path,
    ) -> Result<(), ImageError> {
        let target = entry
            .link
            .clone()
            .ok_or_else(|| self.bad(format!("hard link {} has no target", raw.display())))?;
        let target_rel = normalize(&target)
            .map_err(|()| self.escape(raw, "hard link target has a '..' component"))?
            .ok_or_else(|| self.escape(raw, "hard link to the root directory"))?;
        let missing = |this: &Self| {
            this.bad(format!(
                "hard link {} to missing {}",
                raw.display(),
                target_rel.display()
            ))
        };
        let target_parent_rel = target_rel.parent().unwrap_or_else(|| Path::new(""));
        let target_parent = if target_parent_rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            match open_beneath(&self.root, target_parent_rel) {
                Ok(fd) => Rc::new(fd),
                Err(Errno::NOENT) => {
                    // Perhaps a lower layer's file: linked once the layers below are in.
                    self.stats.pending_links.push((rel.to_owned(), target_rel));
                    return Ok(());
                }
                Err(Errno::NOTDIR) => return Err(missing(self)),
                Err(e) => return Err(self.resolve_error(e, target_parent_rel, raw)),
            }
        };
        let target_name = target_rel.file_name().unwrap_or_default();
        let name = rel.file_name().unwrap_or_default();
        let link =
            || rustix::fs::linkat(&*target_parent, target_name, parent, name, AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                self.remove_existing(parent, rel)?;
                link()
            }
            other => other,
        }
        .or_else(|e| match e {
            Errno::NOENT if !self.pending_ok => Err(e),
            Errno::NOENT => {
                self.stats
                    .pending_links
                    .push((rel.to_owned(), target_rel.clone()));
                Ok(())
            }
            e => Err(e),
        })
        .map_err(|e| match e {
            Errno::NOENT => missing(self),
            Errno::PERM => self.bad(format!("hard link {} to a directory", raw.display())),
            e => self.bad(format!("{}: {}", raw.display(), io::Error::from(e))),
        })
    }

    /// Copies the regular file `source` (a lower layer's, in the store) to `rel`, with its
    /// mode, owner and time.
    fn copy_up(&mut self, source: &Path, rel: &Path) -> Result<(), ImageError> {
        use std::os::unix::fs::MetadataExt;
        let err = |this: &Self, e: io::Error| this.bad(format!("copy up {}: {e}", rel.display()));
        let mut from = File::open(source).map_err(|e| err(self, e))?;
        let meta = from.metadata().map_err(|e| err(self, e))?;
        let parent_rel = rel.parent().unwrap_or_else(|| Path::new(""));
        let parent = self.parent(parent_rel, rel)?;
        let name = rel.file_name().unwrap_or_default();
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
        let fd =
            rustix::fs::openat(&*parent, name, flags, mode).map_err(|e| err(self, e.into()))?;
        let mut to = File::from(fd);
        io::copy(&mut from, &mut to).map_err(|e| err(self, e))?;
        let owner = Some((meta.uid(), meta.gid())).filter(|o| *o != self.me);
        let set = || -> Result<(), Errno> {
            if let Some((uid, gid)) = owner {
                rustix::fs::fchown(&to, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
            }
            rustix::fs::fchmod(&to, mode)?;
            let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
            rustix::fs::futimens(&to, &timestamps(mtime))
        };
        set().map_err(|e| err(self, e.into()))
    }

    /// Links `link` to `target`, both of this layer.
    fn link_in_layer(&mut self, link: &Path, target: &Path) -> Result<(), ImageError> {
        let parent_rel = link.parent().unwrap_or_else(|| Path::new(""));
        let parent = self.parent(parent_rel, link)?;
        let target_parent_rel = target.parent().unwrap_or_else(|| Path::new(""));
        let target_parent = self.parent(target_parent_rel, target)?;
        let (name, target_name) = (
            link.file_name().unwrap_or_default(),
            target.file_name().unwrap_or_default(),
        );
        rustix::fs::linkat(
            &*target_parent,
            target_name,
            &*parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| {
            self.bad(format!(
                "hard link {}: {}",
                link.display(),
                io::Error::from(e)
            ))
        })
    }

    /// Gives every directory its mode, owner and time, deepest first, now that nothing is
    /// added to them any more.
    fn finish(&mut self) -> Result<(), ImageError> {
        let mut dirs: Vec<(PathBuf, DirMeta)> = self.dirs.drain().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, meta) in dirs {
            let fd = if rel.as_os_str().is_empty() {
                self.root.clone()
            } else {
                match open_beneath(&self.root, &rel) {
                    Ok(fd) => Rc::new(fd),
                    // Replaced by a later entry of the layer.
                    Err(_) => continue,
                }
            };
            let set = || -> Result<(), Errno> {
                if let Some((uid, gid)) = meta.owner.filter(|o| *o != self.me) {
                    rustix::fs::fchown(&*fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
                }
                rustix::fs::fchmod(&*fd, Mode::from_raw_mode(meta.mode))?;
                for (name, value) in &meta.xattrs {
                    let flags = rustix::fs::XattrFlags::empty();
                    rustix::fs::fsetxattr(&*fd, name.as_os_str(), value, flags)?;
                }
                match meta.mtime {
                    Some(t) => rustix::fs::futimens(&*fd, &timestamps(t)),
                    None => Ok(()),
                }
            };
            set().map_err(|e| {
                self.bad(format!(
                    "directory {}: {}",
                    rel.display(),
                    io::Error::from(e)
                ))
            })?;
        }
        Ok(())
    }
}

/// The process's umask, read without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        // Unknown: assume it takes every bit, and always chmod.
        .unwrap_or(0o777)
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
    if out.as_os_str().is_empty() {
        Ok(None)
    } else {
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::IdMap;
    use std::fs;
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

    fn how() -> Extraction {
        Extraction {
            ownership: Ownership::Ignore,
            ids: None,
            overlay_xattrs: crate::host::overlay_xattr_prefix(),
        }
    }

    /// Unpacks `tar_bytes` into `root` (which must be empty, as a layer's directory is).
    fn apply(root: &Path, tar_bytes: &[u8]) -> Result<LayerStats, ImageError> {
        let blob = root
            .parent()
            .unwrap()
            .join(format!("layer-{}.tar", crate::util::random_hex(4)));
        fs::write(&blob, tar_bytes).unwrap();
        let d = Digest::of(tar_bytes);
        let budget = Budget::new("test", UnpackCaps::default());
        unpack_layer(&blob, &d, &d, root, &how(), &budget)
    }

    /// Unpacks each layer into a directory of its own, then merges them as the copy
    /// fallback does (and overlayfs would): the image as a container sees it.
    fn stacked(layers: &[Vec<u8>]) -> Result<(tempfile::TempDir, PathBuf), ImageError> {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let d = dir.path().join(format!("layer{i}"));
            fs::create_dir(&d).unwrap();
            apply(&d, l)?;
            dirs.insert(0, d);
        }
        let merged = dir.path().join("merged");
        fs::create_dir(&merged).unwrap();
        crate::image::rootfs::merge_layers(&dirs, &merged, false).unwrap();
        Ok((dir, merged))
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
        let (_d2, root) = setup();
        apply(&root, &tar_of(&[E::Dir("opt"), E::File("opt/a/b", b"1")])).unwrap();
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("opt"), 0o755);
        assert_eq!(mode("opt/a"), 0o755);
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let lower = tar_of(&[
            E::Dir("a"),
            E::File("a/gone", b"1"),
            E::File("a/kept", b"1"),
            E::Dir("o"),
            E::File("o/old", b"1"),
            E::Dir("o/sub"),
            E::File("o/sub/old", b"1"),
        ]);
        let upper = tar_of(&[
            E::File("a/.wh.gone", b""),
            E::Dir("o"),
            E::Dir("o/sub"),
            E::File("o/sub/new", b"2"),
            E::File("o/.wh..wh..opq", b""),
            E::File("o/new", b"2"),
        ]);
        // In the layer's own directory, whiteouts are what overlayfs reads.
        let (_d, layer) = setup();
        apply(&layer, &upper).unwrap();
        let gone = fs::symlink_metadata(layer.join("a/gone")).unwrap();
        assert!(crate::image::layers::is_whiteout(&gone), "{gone:?}");
        assert!(!layer.join("a/.wh.gone").exists());
        assert!(crate::image::layers::is_opaque(&layer.join("o")));
        assert!(!crate::image::layers::is_opaque(&layer.join("o/sub")));
        assert!(!layer.join("o/.wh..wh..opq").exists());
        // Stacked, they hide what the lower layer had.
        let (_d, root) = stacked(&[lower, upper]).unwrap();
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
        let (_d, root) = stacked(&[
            tar_of(&[E::Dir("x"), E::File("x/y", b"1"), E::File("f", b"1")]),
            tar_of(&[E::File("x", b"now a file"), E::Dir("f")]),
        ])
        .unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), b"now a file");
        assert!(root.join("f").is_dir());
        // Within one layer too: the later entry wins.
        let (_d, root) = setup();
        apply(
            &root,
            &tar_of(&[E::Dir("x"), E::File("x/y", b"1"), E::File("x", b"file")]),
        )
        .unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), b"file");
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
        let e = apply(
            &root,
            &tar_of(&[
                E::Link("evil", outside.to_str().unwrap()),
                E::File("evil/.wh.precious", b""),
            ]),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
        assert!(outside.join("precious").exists());
        // A lower layer's link is not in this layer's directory: the whiteout lands in a
        // real directory of the layer, and outside is untouched.
        let (_d, merged) = stacked(&[
            tar_of(&[E::Link("evil", outside.to_str().unwrap())]),
            tar_of(&[E::File("evil/.wh.precious", b"")]),
        ])
        .unwrap();
        assert!(outside.join("precious").exists());
        assert!(merged.join("evil").is_dir());
        let (_d, root) = setup();
        let e = apply(&root, &tar_of(&[E::File(".wh...", b"")])).unwrap_err();
        assert!(matches!(e, ImageError::LayerEscape { .. }), "{e}");
    }

    #[test]
    fn device_nodes_are_skipped_and_counted_and_xattrs_filtered() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        b.append_pax_extensions([
            ("SCHILY.xattr.user.kept", &b"1"[..]),
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("SCHILY.xattr.user.overlay.opaque", &b"y"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let (_d, root) = setup();
        let stats = apply(&root, &b.into_inner().unwrap()).unwrap();
        assert_eq!(stats.devices_skipped, 1);
        assert!(fs::symlink_metadata(root.join("dev/null")).is_err());
        assert_eq!(stats.xattrs_dropped, 2);
        let mut v = [0u8; 4];
        let n = rustix::fs::getxattr(root.join("f").as_path(), "user.kept", &mut v);
        // Filesystems without user xattrs (tmpfs before 6.6) refuse them on writing; the
        // dropped ones must never be there.
        if let Ok(n) = n {
            assert_eq!(&v[..n], b"1");
        }
        assert!(
            rustix::fs::getxattr(root.join("f").as_path(), "user.overlay.opaque", &mut v).is_err()
        );
    }

    #[test]
    fn a_sparse_entry_is_refused_before_its_holes_expand() {
        // Found by the `unpack` fuzz target (scripts/fuzz.sh): 131075 bytes of file from a
        // 6144-byte stream, the holes outside the byte budget.
        let bytes = include_bytes!("../../fuzz/regressions/unpack/sparse-gnu-holes.tar");
        let (_d, root) = setup();
        let e = apply(&root, bytes).unwrap_err();
        assert!(matches!(e, ImageError::BadLayer { .. }), "{e}");
        assert!(
            e.to_string().contains("entry sparse is a sparse file"),
            "{e}"
        );
        assert!(fs::symlink_metadata(root.join("sparse")).is_err());
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
            &how(),
            &Budget::new("test", UnpackCaps::default()),
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
                &how(),
                &Budget::new("test", UnpackCaps::default()),
            )
            .unwrap();
            assert_eq!(fs::read(root.join("z")).unwrap(), b"zz");
        }
    }

    /// Unpacks `layers` (uncompressed), each into its own directory, under `caps`.
    fn unpack_capped(layers: &[Vec<u8>], caps: UnpackCaps) -> Result<(), ImageError> {
        let (d, _) = setup();
        let budget = Budget::new("127.0.0.1:5000/acme/bomb:1", caps);
        for (i, bytes) in layers.iter().enumerate() {
            let blob = d.path().join(format!("l{i}"));
            fs::write(&blob, bytes).unwrap();
            let root = d.path().join(format!("root{i}"));
            fs::create_dir(&root).unwrap();
            let digest = Digest::of(bytes);
            unpack_layer(&blob, &digest, &digest, &root, &how(), &budget)?;
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
        let budget = Budget::new("oci:/x:bomb", caps);
        let e = unpack_layer(
            &blob,
            &Digest::of(&gz),
            &Digest::of(&big),
            &root,
            &how(),
            &budget,
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

    fn owned_tar(uid: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o4755);
        h.set_uid(uid);
        h.set_gid(50);
        h.set_size(1);
        b.append_data(&mut h, "bin/su", &b"x"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "su2", "bin/su").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "/nowhere").unwrap();
        b.into_inner().unwrap()
    }

    fn unpack_shifted(root: &Path, bytes: &[u8]) -> Result<LayerStats, ImageError> {
        let blob = root.parent().unwrap().join("shifted.tar");
        fs::write(&blob, bytes).unwrap();
        let how = Extraction {
            ownership: Ownership::Preserve,
            ids: Some(IdMap {
                uid_start: 100_000,
                gid_start: 200_000,
                size: 65_536,
            }),
            overlay_xattrs: crate::host::overlay_xattr_prefix(),
        };
        let d = Digest::of(bytes);
        unpack_layer(
            &blob,
            &d,
            &d,
            root,
            &how,
            &Budget::new("t", UnpackCaps::default()),
        )
    }

    #[test]
    fn owners_move_into_the_range_and_set_id_bits_stay() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: changing owners needs root");
            return;
        }
        let (_d, root) = setup();
        unpack_shifted(&root, &owned_tar(1000)).unwrap();
        let su = fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!((su.uid(), su.gid()), (101_000, 200_050));
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!(su.ino(), fs::metadata(root.join("su2")).unwrap().ino());
        let link = fs::symlink_metadata(root.join("link")).unwrap();
        assert_eq!((link.uid(), link.gid()), (100_000, 200_000));
        for dir in [&root, &root.join("bin")] {
            let m = fs::metadata(dir).unwrap();
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o7777),
                (100_000, 200_000, 0o755)
            );
        }
    }

    #[test]
    fn an_owner_outside_the_range_is_refused() {
        let (_d, root) = setup();
        let e = unpack_shifted(&root, &owned_tar(70_000)).unwrap_err();
        assert!(e.to_string().contains("image cannot be moved"), "{e}");
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("uid 70000"), "{source}");
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
