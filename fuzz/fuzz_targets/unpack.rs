#![no_main]
//! The layer unpacker: any blob (plain tar, gzip or zstd, picked from its magic bytes, as
//! berth picks it) unpacked into an empty scratch directory under small caps.
//!
//! Besides a panic, each of these is a crash: a write outside the layer's directory (a
//! canary beside it must stay as it was), a device node or a dropped extended attribute
//! that made it in, files larger in total than the caps allow (the byte cap covers the
//! whole stream, so what is written can never exceed it; one file over it is stopped by
//! `RLIMIT_FSIZE`, which libFuzzer reports as a crash), and a heap grown past 32 MiB, the
//! memory goal of a pull.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth::image::Digest;
use berth::image::unpack::{Budget, Extraction, Ownership, UnpackCaps, unpack_layer};
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;
use rustix::process::{Resource, Rlimit};

/// Small enough that every input runs in milliseconds, large enough for a bomb to show.
const CAPS: UnpackCaps = UnpackCaps {
    bytes: 64 << 20,
    entries: 10_000,
};
const HEAP_LIMIT: usize = 32 << 20;

/// The scratch directory: `run/` (the blob and the layer's directory, new for each input)
/// and `outside/`, a canary that no input may change.
struct Scratch {
    root: PathBuf,
    canary: Vec<(PathBuf, Snapshot)>,
}

/// What is compared of a canary entry.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    mtime: i64,
    content: Option<Vec<u8>>,
}

fn snapshot(path: &Path) -> Snapshot {
    let m = fs::symlink_metadata(path).expect("canary exists");
    Snapshot {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: if m.is_dir() { 0 } else { m.len() },
        nlink: if m.is_dir() { 0 } else { m.nlink() },
        mtime: if m.is_dir() { 0 } else { m.mtime() },
        content: m
            .is_file()
            .then(|| fs::read(path).expect("canary readable")),
    }
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base = std::env::var_os("BERTH_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let root = base.join(format!("berth-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("outside/dir")).expect("scratch directory");
        fs::write(root.join("outside/precious"), b"keep").expect("canary");
        let canary = ["outside", "outside/dir", "outside/precious"]
            .iter()
            .map(|p| (root.join(p), snapshot(&root.join(p))))
            .collect();
        // A file over the byte cap stops the fuzzer (SIGXFSZ), rather than the disk filling.
        let limit = Rlimit {
            current: Some(CAPS.bytes + (1 << 20)),
            maximum: rustix::process::getrlimit(Resource::Fsize).maximum,
        };
        rustix::process::setrlimit(Resource::Fsize, limit).expect("RLIMIT_FSIZE");
        Scratch { root, canary }
    })
}

fn names(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("an entry").file_name())
        .collect()
}

/// Walks the layer's directory without following links: the regular files' total size
/// (each inode once), and a panic for anything that must never be there.
fn walk(dir: &Path, overlay: &str, seen: &mut BTreeSet<u64>, total: &mut u64) {
    // The layer's own modes may deny the walk (and the removal after it).
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    check_xattrs(dir, overlay, true);
    for entry in fs::read_dir(dir).expect("layer directory readable") {
        let path = entry.expect("an entry").path();
        let m = fs::symlink_metadata(&path).expect("entry");
        let t = m.file_type();
        if t.is_dir() {
            walk(&path, overlay, seen, total);
            continue;
        }
        if t.is_file() {
            if seen.insert(m.ino()) {
                *total += m.len();
            }
        } else if t.is_char_device() {
            assert_eq!(
                m.rdev(),
                0,
                "{}: a device node, not a whiteout",
                path.display()
            );
        } else {
            assert!(
                t.is_symlink() || t.is_fifo(),
                "{}: {t:?} must not be unpacked",
                path.display()
            );
        }
        if !t.is_symlink() {
            check_xattrs(&path, overlay, false);
        }
    }
}

/// Only `user.*` attributes (never `user.overlay.*`) and, on a directory, the opaque mark.
fn check_xattrs(path: &Path, overlay: &str, is_dir: bool) {
    let mut buf = vec![0u8; 64 << 10];
    let Ok(n) = rustix::fs::llistxattr(path, &mut buf) else {
        return;
    };
    for name in buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        let opaque = is_dir && name == format!("{overlay}opaque");
        let user = name.starts_with("user.") && !name.starts_with("user.overlay.");
        assert!(opaque || user, "{}: xattr {name} kept", path.display());
    }
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let run = s.root.join("run");
    fs::create_dir(&run).expect("run directory");
    let (blob, layer) = (run.join("blob"), run.join("layer"));
    fs::write(&blob, data).expect("blob");
    fs::create_dir(&layer).expect("layer directory");
    let how = Extraction {
        ownership: Ownership::Ignore,
        ids: None,
        overlay_xattrs: berth::host::overlay_xattr_prefix(),
    };
    let digest = Digest::of(data);
    let unpacked = within_heap(HEAP_LIMIT, "unpack", || {
        let budget = Budget::new("fuzz", CAPS);
        unpack_layer(&blob, &digest, &digest, &layer, &how, &budget).map_err(|e| e.to_string())
    });
    // Nothing left the layer's directory.
    for (path, before) in &s.canary {
        assert_eq!(&snapshot(path), before, "{} changed", path.display());
    }
    assert_eq!(
        names(&s.canary[0].0),
        ["dir", "precious"].map(OsString::from).into()
    );
    assert_eq!(
        names(&s.root),
        ["outside", "run"].map(OsString::from).into()
    );
    assert_eq!(names(&run), ["blob", "layer"].map(OsString::from).into());
    let b = fs::symlink_metadata(&blob).expect("blob");
    assert!(b.is_file() && b.nlink() == 1 && fs::read(&blob).expect("blob") == data);
    // Nothing was written beyond what the stream holds.
    let (mut seen, mut total) = (BTreeSet::new(), 0);
    walk(&layer, how.overlay_xattrs, &mut seen, &mut total);
    assert!(total <= CAPS.bytes, "{total} bytes of files, over the cap");
    if let Ok(stats) = &unpacked {
        assert!(
            total <= stats.bytes,
            "{total} bytes of files from a {}-byte stream",
            stats.bytes
        );
    }
    fs::remove_dir_all(&run).expect("run directory removed");
});
