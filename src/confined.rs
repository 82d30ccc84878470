//! Trees a container controls — its data folder's `out/`, an image's root filesystem —
//! walked from directory handles without following any link.
//!
//! What a container wrote may be a symlink to anywhere on the host (resolved by berth, on the
//! host, a link to `/etc` would hand berth the host's `/etc`), a FIFO that blocks whoever
//! opens it, or a device node. So nothing under a trusted root is ever opened by path: each
//! component is opened beneath its parent's handle with `openat2` and `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, `O_NOFOLLOW`, and `O_NONBLOCK` for files,
//! and what was opened is checked with `fstat`. A file is also looked at (`fstatat` without
//! following) before it is opened, because opening a device can have side effects.
//!
//! A symlink, FIFO, socket or device is the container's fault: an error that names its path
//! relative to the trusted root (`out/tables is a symlink: ...`). Errors of the host (an
//! `io::Error`) name the full host path instead: they are for the operator.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, ResolveFlags, Uid};
use rustix::io::Errno;

/// What a directory entry is, as `fstatat` without following sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl Kind {
    fn of_mode(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            FileType::Unknown => Kind::Unknown,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Unknown => "of an unknown file type",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfinedError {
    /// A symlink, FIFO, socket or device where berth reads.
    #[error("{} is {kind}: only regular files and directories are read", path.display())]
    NotRegular { path: PathBuf, kind: Kind },
    /// A directory where a file was expected, or the other way round.
    #[error("{} is {found}, not {expected}", path.display())]
    WrongKind {
        path: PathBuf,
        expected: Kind,
        found: Kind,
    },
    /// A symlink, FIFO, socket or device where berth writes.
    #[error(
        "{} is {kind}: berth writes only into directories and files it reaches without following a link",
        path.display()
    )]
    NotWritable { path: PathBuf, kind: Kind },
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// A name that is not one plain component, or that berth cannot use.
    #[error("{}: {reason}", path.display())]
    BadName { path: PathBuf, reason: &'static str },
    /// The host failed; `path` is the full host path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ConfinedError {
    /// The container's fault (what it wrote), not the host's.
    pub fn is_user_error(&self) -> bool {
        match self {
            ConfinedError::NotRegular { .. }
            | ConfinedError::NotWritable { .. }
            | ConfinedError::WrongKind { .. }
            | ConfinedError::TooLarge { .. }
            | ConfinedError::BadName { .. } => true,
            ConfinedError::Io { .. } => false,
        }
    }

    /// Nothing by that name (or one of its parents) exists.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfinedError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// This refusal where berth writes, beneath `root`: it names the host path, for the
    /// operator whose directory it is.
    fn writing(self, root: &Path) -> ConfinedError {
        match self {
            ConfinedError::NotRegular { path, kind } => ConfinedError::NotWritable {
                path: root.join(path),
                kind,
            },
            ConfinedError::WrongKind {
                path,
                expected,
                found,
            } => ConfinedError::WrongKind {
                path: root.join(path),
                expected,
                found,
            },
            e => e,
        }
    }

    /// The refusal of `found` where `expected` was wanted.
    fn refusal(path: PathBuf, expected: Kind, found: Kind) -> ConfinedError {
        match found {
            Kind::File | Kind::Dir => ConfinedError::WrongKind {
                path,
                expected,
                found,
            },
            kind => ConfinedError::NotRegular { path, kind },
        }
    }
}

/// One entry of a directory; `.` and `..` are never listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
}

/// A directory handle inside a trusted root; everything opened through it stays beneath it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The trusted root's host path, for the operator's error messages.
    root: Arc<Path>,
    /// Where this directory is, relative to the root: what errors show.
    rel: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

impl Dir {
    /// Opens berth's own, trusted directory `path` (links in it are followed): the root
    /// below which nothing is.
    pub fn open(path: &Path) -> Result<Dir, ConfinedError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ConfinedError::Io {
            path: path.to_owned(),
            source: e.into(),
        })?;
        Ok(Dir {
            fd,
            root: Arc::from(path),
            rel: PathBuf::new(),
        })
    }

    /// Opens (creating it, and its parents, where missing) the directory `path` an operator
    /// named for berth to write into. Its parents are the operator's path and followed;
    /// `path` itself must be a directory, not a link to one: what a local user could plant
    /// there must not send berth's writes elsewhere.
    pub fn create_root(path: &Path) -> Result<Dir, ConfinedError> {
        let io = |source: io::Error| ConfinedError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match std::fs::create_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(Dir {
                fd,
                root: Arc::from(path),
                rel: PathBuf::new(),
            }),
            Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                let meta = std::fs::symlink_metadata(path).map_err(io)?;
                let kind = Kind::of_mode(std::os::unix::fs::MetadataExt::mode(&meta));
                Err(ConfinedError::refusal(path.to_owned(), Kind::Dir, kind).writing(path))
            }
            Err(e) => Err(io(e.into())),
        }
    }

    /// Another handle of this directory.
    pub fn try_clone(&self) -> Result<Dir, ConfinedError> {
        let fd = self.fd.try_clone().map_err(|source| ConfinedError::Io {
            path: self.path(),
            source,
        })?;
        Ok(Dir {
            fd,
            root: Arc::clone(&self.root),
            rel: self.rel.clone(),
        })
    }

    /// Opens the directory `name` beneath this one to write into, creating it (mode 0777
    /// less the umask) when missing; a link or anything else in its place is refused.
    pub fn make_dir(&self, name: impl AsRef<Path>) -> Result<Dir, ConfinedError> {
        let name = self.plain(name.as_ref())?;
        let shown = self.shown(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.io(&shown, e)),
        }
        let fd = self
            .step(self.fd.as_fd(), name, &shown, Kind::Dir)
            .map_err(|e| e.writing(&self.root))?;
        Ok(Dir {
            fd,
            root: Arc::clone(&self.root),
            rel: shown,
        })
    }

    /// Creates the regular file `name` beneath this directory, with exactly `mode`, for
    /// writing. A file of that name is replaced, never written through (it may be a hard
    /// link to a file elsewhere); a link, directory or anything else there is refused.
    pub fn create_file(&self, name: impl AsRef<Path>, mode: u32) -> Result<File, ConfinedError> {
        let name = self.plain(name.as_ref())?;
        let shown = self.shown(name);
        match self.kind_at(self.fd.as_fd(), name, &shown) {
            Ok(Kind::File) => rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
                .map_err(|e| self.io(&shown, e))?,
            Ok(found) => {
                return Err(ConfinedError::refusal(shown, Kind::File, found).writing(&self.root));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(mode);
        let fd = rustix::fs::openat2(&self.fd, name, flags, mode, RESOLVE)
            .map_err(|e| self.io(&shown, e))?;
        // The umask took bits the mode asked for.
        rustix::fs::fchmod(&fd, mode).map_err(|e| self.io(&shown, e))?;
        Ok(File::from(fd))
    }

    /// This directory's host path.
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// How `name` beneath this directory is shown in errors: relative to the root.
    pub fn shown(&self, name: impl AsRef<Path>) -> PathBuf {
        self.rel.join(name)
    }

    /// Opens the directory `rel` (one name or a relative path) beneath this one.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Dir, ConfinedError> {
        let rel = rel.as_ref();
        let parts = self.parts(rel)?;
        let mut walked = self.rel.clone();
        let mut fd: Option<OwnedFd> = None;
        for part in parts {
            walked.push(part);
            let parent = fd.as_ref().map_or_else(|| self.fd.as_fd(), AsFd::as_fd);
            fd = Some(self.step(parent, part, &walked, Kind::Dir)?);
        }
        let fd = fd.ok_or_else(|| self.bad_name(rel, "names no directory"))?;
        Ok(Dir {
            fd,
            root: Arc::clone(&self.root),
            rel: walked,
        })
    }

    /// Opens the directory `rel` beneath this one, creating what is missing of it (mode
    /// 0755, owned by `owner`), as a runtime makes an image's missing working directory.
    /// What exists is walked as [`Dir::open_dir`] walks it: a link is refused.
    pub fn create_dirs(
        &self,
        rel: impl AsRef<Path>,
        owner: (u32, u32),
    ) -> Result<Dir, ConfinedError> {
        let rel = rel.as_ref();
        let mut walked = self.rel.clone();
        let mut fd: Option<OwnedFd> = None;
        for part in self.parts(rel)? {
            walked.push(part);
            let parent = fd.as_ref().map_or_else(|| self.fd.as_fd(), AsFd::as_fd);
            let opened = match self.step(parent, part, &walked, Kind::Dir) {
                Err(e) if e.is_not_found() => {
                    match rustix::fs::mkdirat(parent, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.io(&walked, e)),
                    }
                    let made = self.step(parent, part, &walked, Kind::Dir)?;
                    let (uid, gid) = (Uid::from_raw(owner.0), Gid::from_raw(owner.1));
                    rustix::fs::fchown(&made, Some(uid), Some(gid))
                        .map_err(|e| self.io(&walked, e))?;
                    // The umask took bits the mode asked for.
                    rustix::fs::fchmod(&made, Mode::from_raw_mode(0o755))
                        .map_err(|e| self.io(&walked, e))?;
                    made
                }
                other => other?,
            };
            fd = Some(opened);
        }
        let fd = fd.ok_or_else(|| self.bad_name(rel, "names no directory"))?;
        Ok(Dir {
            fd,
            root: Arc::clone(&self.root),
            rel: walked,
        })
    }

    /// Opens the regular file `rel` beneath this directory, for reading, without blocking.
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File, ConfinedError> {
        let rel = rel.as_ref();
        let mut parts = self.parts(rel)?;
        let name = parts
            .pop()
            .ok_or_else(|| self.bad_name(rel, "names no file"))?;
        let parent = match parts.is_empty() {
            true => None,
            false => Some(self.open_dir(parts.iter().collect::<PathBuf>())?),
        };
        let at = parent.as_ref().unwrap_or(self);
        let fd = at.step(at.fd.as_fd(), name, &at.shown(name), Kind::File)?;
        Ok(File::from(fd))
    }

    /// Reads the regular file `rel` whole, refusing one larger than `limit` bytes.
    pub fn read_to_end(&self, rel: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, ConfinedError> {
        let rel = rel.as_ref();
        let file = self.open_file(rel)?;
        let io_err = |source| ConfinedError::Io {
            path: self.root.join(self.shown(rel)),
            source,
        };
        let too_large = || ConfinedError::TooLarge {
            path: self.shown(rel),
            limit,
        };
        let len = file.metadata().map_err(io_err)?.len();
        if len > limit {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // It may grow while being read: read one byte more than allowed to notice.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(bytes)
    }

    /// The entries of this directory, by name, each with its kind as `fstatat` sees it
    /// without following.
    pub fn entries(&self) -> Result<Vec<Entry>, ConfinedError> {
        let io_err = |e: Errno| ConfinedError::Io {
            path: self.path(),
            source: e.into(),
        };
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(io_err)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(io_err)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = self.kind_at(self.fd.as_fd(), name, &self.shown(name))?;
            out.push(Entry {
                name: name.to_owned(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What the entry `name` of this directory is, without following it.
    pub fn kind_of(&self, name: impl AsRef<Path>) -> Result<Kind, ConfinedError> {
        let name = self.plain(name.as_ref())?;
        self.kind_at(self.fd.as_fd(), name, &self.shown(name))
    }

    /// Moves the entry `name` (the entry itself, never what a link points to) into
    /// `target` as `target_name`, which must not exist yet.
    pub fn rename_to(
        &self,
        name: impl AsRef<Path>,
        target: &Dir,
        target_name: impl AsRef<Path>,
    ) -> Result<(), ConfinedError> {
        let name = self.plain(name.as_ref())?;
        let target_name = target.plain(target_name.as_ref())?;
        rustix::fs::renameat_with(
            &self.fd,
            name,
            &target.fd,
            target_name,
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| ConfinedError::Io {
            path: self.path().join(name),
            source: e.into(),
        })
    }

    /// Opens one component `name` of `parent` as `want` (a directory or a regular file).
    fn step(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        shown: &Path,
        want: Kind,
    ) -> Result<OwnedFd, ConfinedError> {
        let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
        if want == Kind::Dir {
            // O_DIRECTORY refuses anything else before opening it.
            flags |= OFlags::DIRECTORY;
        } else {
            // Look first: opening a device node can have side effects.
            let found = self.kind_at(parent, name, shown)?;
            if found != want {
                return Err(ConfinedError::refusal(shown.to_owned(), want, found));
            }
            flags |= OFlags::NONBLOCK;
        }
        let fd = match rustix::fs::openat2(parent, name, flags, Mode::empty(), RESOLVE) {
            Ok(fd) => fd,
            Err(e) if e == Errno::LOOP || e == Errno::NOTDIR || e == Errno::XDEV => {
                let found = self.kind_at(parent, name, shown)?;
                if found == want {
                    return Err(self.io(shown, e));
                }
                return Err(ConfinedError::refusal(shown.to_owned(), want, found));
            }
            Err(e) => return Err(self.io(shown, e)),
        };
        // What was opened is what counts (the entry may have changed since it was looked at).
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.io(shown, e))?;
        let found = Kind::of_mode(stat.st_mode);
        if found != want {
            return Err(ConfinedError::refusal(shown.to_owned(), want, found));
        }
        Ok(fd)
    }

    fn kind_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        shown: &Path,
    ) -> Result<Kind, ConfinedError> {
        let stat = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io(shown, e))?;
        Ok(Kind::of_mode(stat.st_mode))
    }

    /// The plain components of a relative path; `..`, `/` at the start and empty names are
    /// refused (they could only mean to leave the tree).
    fn parts<'p>(&self, rel: &'p Path) -> Result<Vec<&'p OsStr>, ConfinedError> {
        let mut parts = Vec::new();
        for component in rel.components() {
            match component {
                Component::Normal(name) => parts.push(name),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(self.bad_name(rel, "must stay beneath its directory"));
                }
            }
        }
        Ok(parts)
    }

    /// `name` when it is one plain component.
    fn plain<'p>(&self, name: &'p Path) -> Result<&'p OsStr, ConfinedError> {
        match (
            self.parts(name)?.as_slice(),
            name.as_os_str().as_bytes().contains(&b'/'),
        ) {
            ([one], false) => Ok(*one),
            _ => Err(self.bad_name(name, "must be a single file name")),
        }
    }

    fn bad_name(&self, rel: &Path, reason: &'static str) -> ConfinedError {
        // Not `join`: an absolute `rel` would replace where it was asked from.
        let mut path = self.rel.clone().into_os_string();
        if !path.is_empty() && !rel.as_os_str().is_empty() {
            path.push("/");
        }
        path.push(rel);
        ConfinedError::BadName {
            path: path.into(),
            reason,
        }
    }

    fn io(&self, shown: &Path, e: Errno) -> ConfinedError {
        ConfinedError::Io {
            path: self.root.join(shown),
            source: e.into(),
        }
    }
}

/// What a tree holds on disk, as [`disk_usage`] measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated blocks, plus [`INODE_BYTES`] for every entry (an empty file still costs
    /// an inode).
    pub bytes: u64,
    /// Directories nest deeper than [`MAX_USAGE_DEPTH`]: what is below was not measured.
    pub too_deep: bool,
}

/// What an entry costs besides its blocks: an ext4 inode.
pub const INODE_BYTES: u64 = 256;

/// How deep [`disk_usage`] descends (one open directory per level).
pub const MAX_USAGE_DEPTH: usize = 256;

/// Measures the tree at `path` (berth's own directory) without following any link: each
/// directory is opened beneath its parent's handle with `O_NOFOLLOW`, so a link or a
/// rename by whoever writes the tree meanwhile can only make it miss or recount an entry,
/// never leave the tree. Entries that vanish while it walks are skipped.
pub fn disk_usage(path: &Path) -> Result<Usage, ConfinedError> {
    walk_sizes(path, allocated)
}

/// What the regular files of the tree at `path` hold: the sum of their sizes (what was
/// written to them, holes included), walked as [`disk_usage`] walks.
pub fn file_bytes(path: &Path) -> Result<Usage, ConfinedError> {
    walk_sizes(path, |stat| {
        if Kind::of_mode(stat.st_mode) == Kind::File {
            u64::try_from(stat.st_size).unwrap_or(0)
        } else {
            0
        }
    })
}

/// Walks the tree at `path` without following links, adding up `measure` of each entry
/// (the top directory included).
fn walk_sizes(path: &Path, measure: fn(&rustix::fs::Stat) -> u64) -> Result<Usage, ConfinedError> {
    let io = |source: Errno| ConfinedError::Io {
        path: path.to_owned(),
        source: source.into(),
    };
    let top = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(io)?;
    let mut usage = Usage {
        bytes: rustix::fs::fstat(&top).map_or(0, |s| measure(&s)),
        too_deep: false,
    };
    let mut stack = vec![rustix::fs::Dir::new(top).map_err(io)?];
    loop {
        let depth = stack.len();
        let Some(dir) = stack.last_mut() else { break };
        let Some(entry) = dir.read() else {
            stack.pop();
            continue;
        };
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let parent = dir.fd().map_err(io)?;
        let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io(e)),
        };
        usage.bytes = usage.bytes.saturating_add(measure(&stat));
        if Kind::of_mode(stat.st_mode) != Kind::Dir {
            continue;
        }
        if depth >= MAX_USAGE_DEPTH {
            usage.too_deep = true;
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => stack.push(rustix::fs::Dir::new(fd).map_err(io)?),
            // Gone, or replaced by something else since its stat.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(usage)
}

/// The bytes an entry occupies: its blocks and its inode.
fn allocated(stat: &rustix::fs::Stat) -> u64 {
    u64::try_from(stat.st_blocks)
        .unwrap_or(0)
        .saturating_mul(512)
        .saturating_add(INODE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn missing_directories_are_created_and_links_refused() {
        let (root, host, dir) = tree();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let made = dir.create_dirs("srv/app", me).unwrap();
        assert_eq!(made.path(), root.path().join("srv/app"));
        assert!(root.path().join("srv/app").is_dir());
        dir.create_dirs("srv/app", me).unwrap();
        symlink(host.path(), root.path().join("link")).unwrap();
        assert!(dir.create_dirs("link/x", me).is_err());
        assert!(!host.path().join("x").exists(), "created through a link");
    }

    #[test]
    fn destinations_are_written_beneath_handles_and_links_there_refused() {
        let (_root, host, _dir) = tree();
        let base = tempfile::tempdir().unwrap();
        let dest = Dir::create_root(&base.path().join("a/b")).unwrap();
        assert!(base.path().join("a/b").is_dir());
        let sub = dest.make_dir("sub").unwrap();
        assert_eq!(sub.path(), base.path().join("a/b/sub"));
        fs::write(base.path().join("a/b/sub/f"), "old").unwrap();
        let mut f = sub.create_file("f", 0o640).unwrap();
        io::Write::write_all(&mut f, b"new").unwrap();
        assert_eq!(fs::read(base.path().join("a/b/sub/f")).unwrap(), b"new");
        let meta = fs::metadata(base.path().join("a/b/sub/f")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o640
        );
        symlink(host.path(), base.path().join("a/b/link")).unwrap();
        nix::unistd::mkfifo(
            &base.path().join("a/b/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        for name in ["link", "fifo"] {
            let e = user_error(dest.make_dir(name).unwrap_err());
            assert!(
                e.starts_with(&base.path().join("a/b").join(name).display().to_string()),
                "{e}"
            );
            user_error(dest.create_file(name, 0o600).unwrap_err());
        }
        let e = user_error(dest.create_file("sub", 0o600).unwrap_err());
        assert!(e.ends_with("sub is a directory, not a regular file"), "{e}");
        let e = user_error(Dir::create_root(&base.path().join("a/b/link")).unwrap_err());
        assert!(e.contains("link is a symlink: berth writes only"), "{e}");
        assert_eq!(
            fs::read_dir(host.path()).unwrap().count(),
            1,
            "written through a link"
        );
    }

    /// A trusted root with `out/` inside, and a host directory outside it with a canary.
    fn tree() -> (tempfile::TempDir, tempfile::TempDir, Dir) {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("out/tables")).unwrap();
        fs::write(root.path().join("out/tables/t.csv"), "a\n1\n").unwrap();
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("canary.csv"), "secret\n").unwrap();
        let dir = Dir::open(root.path()).unwrap();
        (root, host, dir)
    }

    fn user_error(e: ConfinedError) -> String {
        assert!(e.is_user_error(), "not the container's fault: {e}");
        e.to_string()
    }

    #[test]
    fn regular_files_and_directories_are_read() {
        let (root, _host, dir) = tree();
        let tables = dir.open_dir("out/tables").unwrap();
        assert_eq!(tables.path(), root.path().join("out/tables"));
        assert_eq!(tables.shown("t.csv"), Path::new("out/tables/t.csv"));
        assert_eq!(
            tables.entries().unwrap(),
            vec![Entry {
                name: "t.csv".into(),
                kind: Kind::File
            }]
        );
        assert_eq!(dir.read_to_end("out/tables/t.csv", 4).unwrap(), b"a\n1\n");
        assert_eq!(tables.read_to_end("./t.csv", 4).unwrap(), b"a\n1\n");
        let mut text = String::new();
        dir.open_file("out/tables/t.csv")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\n1\n");
    }

    #[test]
    fn a_symlinked_directory_is_refused_by_its_path() {
        let (root, host, dir) = tree();
        fs::remove_dir_all(root.path().join("out/tables")).unwrap();
        symlink(host.path(), root.path().join("out/tables")).unwrap();
        let e = user_error(dir.open_dir("out/tables").unwrap_err());
        assert_eq!(
            e,
            "out/tables is a symlink: only regular files and directories are read"
        );
        let e = user_error(dir.open_file("out/tables/canary.csv").unwrap_err());
        assert!(e.starts_with("out/tables is a symlink"), "{e}");
        let out = dir.open_dir("out").unwrap();
        assert_eq!(out.kind_of("tables").unwrap(), Kind::Symlink);
        assert_eq!(
            out.entries().unwrap(),
            vec![Entry {
                name: "tables".into(),
                kind: Kind::Symlink
            }]
        );
        // A link to a file, and a link at the root of the walk.
        symlink(
            host.path().join("canary.csv"),
            root.path().join("out/state.json"),
        )
        .unwrap();
        let e = user_error(dir.read_to_end("out/state.json", 100).unwrap_err());
        assert!(e.starts_with("out/state.json is a symlink"), "{e}");
        fs::rename(root.path().join("out"), root.path().join("real")).unwrap();
        symlink(host.path(), root.path().join("out")).unwrap();
        let e = user_error(dir.open_dir("out").unwrap_err());
        assert!(e.starts_with("out is a symlink"), "{e}");
        assert!(host.path().join("canary.csv").exists());
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        let (_root, _host, dir) = tree();
        let tables = dir.open_dir("out/tables").unwrap();
        for rel in ["..", "../tables", "/etc", ""] {
            let e = user_error(tables.open_dir(rel).unwrap_err());
            assert!(e.starts_with("out/tables"), "{rel}: {e}");
        }
        let e = user_error(tables.open_file("../../out/tables/t.csv").unwrap_err());
        assert!(e.contains("must stay beneath"), "{e}");
        let e = user_error(tables.rename_to("t.csv", &dir, "out/x").unwrap_err());
        assert!(e.contains("single file name"), "{e}");
        let e = user_error(tables.rename_to("..", &dir, "x").unwrap_err());
        assert!(e.contains("must stay beneath"), "{e}");
    }

    #[test]
    fn a_fifo_never_blocks_and_is_refused() {
        let (root, _host, dir) = tree();
        nix::unistd::mkfifo(
            &root.path().join("out/state.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = root.path().to_owned();
        std::thread::spawn(move || {
            let dir = Dir::open(&path).unwrap();
            let read = dir
                .read_to_end("out/state.json", 100)
                .map_err(|e| e.to_string());
            let opened = dir.open_file("out/state.json").map_err(|e| e.to_string());
            tx.send((read, opened.map(|_| ()))).unwrap();
        });
        let (read, opened) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO blocked");
        let expected = "out/state.json is a FIFO: only regular files and directories are read";
        assert_eq!(read.unwrap_err(), expected);
        assert_eq!(opened.unwrap_err(), expected);
        assert_eq!(
            dir.open_dir("out").unwrap().kind_of("state.json").unwrap(),
            Kind::Fifo
        );
    }

    #[test]
    fn wrong_kinds_sizes_and_missing_entries() {
        let (_root, _host, dir) = tree();
        let e = user_error(dir.open_dir("out/tables/t.csv").unwrap_err());
        assert_eq!(e, "out/tables/t.csv is a regular file, not a directory");
        let e = user_error(dir.open_file("out/tables").unwrap_err());
        assert_eq!(e, "out/tables is a directory, not a regular file");
        let e = user_error(dir.read_to_end("out/tables/t.csv", 3).unwrap_err());
        assert_eq!(e, "out/tables/t.csv is larger than 3 bytes");
        let e = dir.open_dir("out/nothing").unwrap_err();
        assert!(!e.is_user_error() && e.is_not_found(), "{e}");
        let e = dir.read_to_end("gone/state.json", 3).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn renames_move_the_entry_between_handles_and_never_replace() {
        let (root, _host, dir) = tree();
        let staging = tempfile::tempdir().unwrap();
        let target = Dir::open(staging.path()).unwrap();
        let tables = dir.open_dir("out/tables").unwrap();
        tables.rename_to("t.csv", &target, "t.csv").unwrap();
        assert_eq!(fs::read(staging.path().join("t.csv")).unwrap(), b"a\n1\n");
        assert!(!root.path().join("out/tables/t.csv").exists());
        fs::write(root.path().join("out/tables/t.csv"), "again").unwrap();
        let e = tables.rename_to("t.csv", &target, "t.csv").unwrap_err();
        assert!(!e.is_user_error(), "{e}");
        assert_eq!(fs::read(staging.path().join("t.csv")).unwrap(), b"a\n1\n");
        // A link is moved as a link: nothing it points to moves.
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("canary"), "x").unwrap();
        symlink(host.path(), root.path().join("out/tables/evil")).unwrap();
        tables.rename_to("evil", &target, "evil").unwrap();
        assert_eq!(target.kind_of("evil").unwrap(), Kind::Symlink);
        assert!(host.path().join("canary").exists());
    }

    #[test]
    fn disk_usage_counts_blocks_and_entries_and_follows_no_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("tree");
        fs::create_dir_all(root.join("a/b")).unwrap();
        let empty = disk_usage(&root).unwrap();
        assert!(!empty.too_deep);
        fs::write(root.join("a/b/big"), vec![7u8; 1 << 20]).unwrap();
        fs::write(root.join("a/small"), b"x").unwrap();
        // A link to a large tree outside is counted as the link, not what it names.
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("huge"), vec![1u8; 4 << 20]).unwrap();
        symlink(&outside, root.join("a/out")).unwrap();
        let used = disk_usage(&root).unwrap();
        let grown = used.bytes - empty.bytes;
        assert!(
            ((1 << 20) + 3 * INODE_BYTES..(1 << 20) + (64 << 10)).contains(&grown),
            "{grown}"
        );
        // The top must be a directory, not a link to one.
        symlink(&root, d.path().join("link")).unwrap();
        assert!(disk_usage(&d.path().join("link")).is_err());
    }

    #[test]
    fn file_bytes_adds_up_regular_files_and_follows_no_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("out");
        fs::create_dir_all(root.join("tables/sliced")).unwrap();
        assert_eq!(file_bytes(&root).unwrap().bytes, 0);
        fs::write(root.join("tables/a.csv"), vec![b'x'; 1000]).unwrap();
        fs::write(root.join("tables/sliced/1.csv"), b"abc").unwrap();
        // A sparse file counts what was written to it, its hole included.
        let sparse = File::create(root.join("sparse")).unwrap();
        sparse.set_len(1 << 20).unwrap();
        let outside = d.path().join("outside");
        fs::write(&outside, vec![1u8; 4096]).unwrap();
        symlink(&outside, root.join("link")).unwrap();
        assert_eq!(file_bytes(&root).unwrap().bytes, 1000 + 3 + (1 << 20));
    }

    #[test]
    fn disk_usage_stops_at_its_depth_and_says_so() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("tree");
        fs::create_dir(&top).unwrap();
        // Made through handles: the whole path would pass PATH_MAX.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut fd = rustix::fs::open(&top, flags, Mode::empty()).unwrap();
        for _ in 0..MAX_USAGE_DEPTH + 5 {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", flags, Mode::empty()).unwrap();
        }
        assert!(disk_usage(&top).unwrap().too_deep);
    }
}
