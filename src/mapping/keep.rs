//! `--keep-outputs DIR`: a copy of what a component wrote, for the operator (and the copy
//! `berth sandbox` makes of the data folder it prepared).
//!
//! `out/` is the container's: it is walked from directory handles, and only regular files
//! and directories are copied. Symlinks, FIFOs, sockets and devices — `out` itself included —
//! are skipped with a warning: a link could make the copy (or an operator's later read of
//! it) reach anywhere on the host, and a FIFO would block berth.
//!
//! The destination is written from directory handles too: the operator's directory itself
//! is opened without following a link, and every directory and file below it is created
//! beneath its parent's handle. A link someone planted there (the directory itself a link,
//! `tables` a link to `/etc`) is refused, and a file of the same name is replaced, never
//! written through.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::MappingError;
use crate::confined::{self, Kind};

/// Directories nested deeper are not copied: each level holds a handle and a stack frame.
pub const MAX_DEPTH: usize = 128;

/// Opens the operator's directory `path` to copy into, creating it where missing; a link
/// there is refused.
pub fn destination(path: &Path) -> Result<confined::Dir, MappingError> {
    Ok(confined::Dir::create_root(path)?)
}

/// Where the outputs of a row are kept: `base` itself, or `base/<row id>` when the
/// configuration has several rows. A row id that is not one plain file name (`..`, `.`,
/// empty, with `/` or NUL) is refused: it would put the copy outside `base`.
pub fn keep_dir(
    base: &confined::Dir,
    row_id: Option<&str>,
    multiple_rows: bool,
) -> Result<confined::Dir, MappingError> {
    match row_dir(row_id, multiple_rows)? {
        Some(id) => Ok(base.make_dir(id)?),
        None => Ok(base.try_clone()?),
    }
}

/// [`keep_dir`] beneath the operator's directory `base`, the row id checked before
/// anything is created.
pub fn open_keep_dir(
    base: &Path,
    row_id: Option<&str>,
    multiple_rows: bool,
) -> Result<confined::Dir, MappingError> {
    row_dir(row_id, multiple_rows)?;
    keep_dir(&destination(base)?, row_id, multiple_rows)
}

/// The directory of its own a row's copy goes into, if any (see [`keep_dir`]).
fn row_dir(row_id: Option<&str>, multiple_rows: bool) -> Result<Option<&str>, MappingError> {
    match (multiple_rows, row_id) {
        (true, Some(id)) if super::plain_name(id) => Ok(Some(id)),
        (true, Some(id)) => Err(MappingError::User(format!(
            "row id {id:?} cannot name a directory for --keep-outputs: it must be a plain file name"
        ))),
        _ => Ok(None),
    }
}

/// Copies the regular files and directories under `out` (the data folder's `out/`; the
/// data folder is trusted, `out` and below are not) to `dst`, and returns how many files
/// it copied. Permission bits are kept, set-id and sticky bits are not.
pub fn export_outputs(out: &Path, dst: &confined::Dir) -> Result<u64, MappingError> {
    let src = match super::open_beneath_parent(out) {
        Ok(src) => src,
        Err(e) if e.is_user_error() => {
            tracing::warn!("not exporting outputs: {e}");
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    copy_tree(&src, dst, 0)
}

/// Copies the regular files and directories under `src` (`depth` levels down from where
/// the copy started) to `dst`; returns how many files it copied.
pub fn copy_tree(
    src: &confined::Dir,
    dst: &confined::Dir,
    depth: usize,
) -> Result<u64, MappingError> {
    let mut copied = 0;
    for entry in src.entries()? {
        let shown = src.shown(&entry.name);
        match entry.kind {
            Kind::Dir if depth >= MAX_DEPTH => tracing::warn!(
                "not exporting {}: nested deeper than {MAX_DEPTH} directories",
                shown.display()
            ),
            Kind::Dir => match src.open_dir(&entry.name) {
                Ok(dir) => copied += copy_tree(&dir, &dst.make_dir(&entry.name)?, depth + 1)?,
                Err(e) if e.is_user_error() => tracing::warn!("not exporting {e}"),
                Err(e) => return Err(e.into()),
            },
            Kind::File => match src.open_file(&entry.name) {
                Ok(file) => {
                    copy_file(file, &src.path().join(&entry.name), dst, &entry.name)?;
                    copied += 1;
                }
                Err(e) if e.is_user_error() => tracing::warn!("not exporting {e}"),
                Err(e) => return Err(e.into()),
            },
            kind => tracing::warn!("not exporting {}: it is {kind}", shown.display()),
        }
    }
    Ok(copied)
}

/// Copies the opened regular file `from` (at `from_path`, for errors) to `name` in `dst`.
fn copy_file(
    mut from: fs::File,
    from_path: &Path,
    dst: &confined::Dir,
    name: &std::ffi::OsStr,
) -> Result<(), MappingError> {
    let meta = from.metadata().map_err(MappingError::io(from_path))?;
    let mut out = dst.create_file(name, meta.permissions().mode() & 0o777)?;
    let to = dst.path().join(name);
    io::copy(&mut from, &mut out).map_err(MappingError::io(&to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// The operator's directory `kept` beside the data folder, and its handle.
    fn kept(d: &tempfile::TempDir) -> (PathBuf, confined::Dir) {
        let path = d.path().join("kept");
        let dir = destination(&path).unwrap();
        (path, dir)
    }

    /// A data folder with outputs, and a host directory outside it with a canary.
    fn setup() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("data/out");
        fs::create_dir_all(out.join("tables/sliced")).unwrap();
        fs::create_dir_all(out.join("files")).unwrap();
        fs::write(out.join("tables/t.csv"), "a\n1\n").unwrap();
        fs::write(out.join("tables/sliced/part0"), "1\n").unwrap();
        fs::write(out.join("state.json"), "{}").unwrap();
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("canary.csv"), "secret\n").unwrap();
        (d, out, host)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.extend(
                    listing(&e.path())
                        .into_iter()
                        .map(|n| format!("{name}/{n}")),
                );
            } else {
                out.push(name);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn regular_files_and_directories_are_copied_with_their_permissions() {
        let (d, out, _host) = setup();
        fs::set_permissions(out.join("tables/t.csv"), fs::Permissions::from_mode(0o4750)).unwrap();
        let (dst, handle) = kept(&d);
        assert_eq!(export_outputs(&out, &handle).unwrap(), 3);
        assert_eq!(
            listing(&dst),
            vec!["state.json", "tables/sliced/part0", "tables/t.csv"]
        );
        assert_eq!(fs::read(dst.join("tables/t.csv")).unwrap(), b"a\n1\n");
        let mode = fs::metadata(dst.join("tables/t.csv"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o750, "set-id bits must not be copied");
        assert!(dst.join("files").is_dir());
    }

    #[test]
    fn links_and_fifos_are_skipped_and_never_followed() {
        let (d, out, host) = setup();
        symlink("/etc/passwd", out.join("tables/evil.csv")).unwrap();
        symlink(host.path(), out.join("files/host")).unwrap();
        nix::unistd::mkfifo(
            &out.join("files/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (dst, k) = kept(&d);
        let (tx, rx) = std::sync::mpsc::channel();
        let o = out.clone();
        std::thread::spawn(move || tx.send(export_outputs(&o, &k).map_err(|e| e.to_string())));
        let copied = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO blocked the export");
        assert_eq!(copied.unwrap(), 3);
        assert_eq!(
            listing(&dst),
            vec!["state.json", "tables/sliced/part0", "tables/t.csv"]
        );
        assert!(fs::symlink_metadata(dst.join("tables/evil.csv")).is_err());
    }

    #[test]
    fn a_linked_out_copies_nothing_from_the_host() {
        let (d, out, host) = setup();
        fs::remove_dir_all(&out).unwrap();
        symlink(host.path(), &out).unwrap();
        let (dst, handle) = kept(&d);
        assert_eq!(export_outputs(&out, &handle).unwrap(), 0);
        assert!(listing(&dst).is_empty(), "{:?}", listing(&dst));
        assert!(host.path().join("canary.csv").exists());
    }

    #[test]
    fn directories_nested_too_deep_are_not_copied() {
        let (d, out, _host) = setup();
        // out/files is nested 1 deep; the last directory copied is MAX_DEPTH deep.
        let mut deepest = out.join("files");
        for _ in 1..MAX_DEPTH {
            deepest.push("d");
        }
        fs::create_dir_all(deepest.join("d")).unwrap();
        fs::write(deepest.join("above"), "x").unwrap();
        fs::write(deepest.join("d/bottom"), "x").unwrap();
        let (dst, handle) = kept(&d);
        assert_eq!(export_outputs(&out, &handle).unwrap(), 4);
        let kept = listing(&dst);
        assert!(kept.iter().any(|p| p.ends_with("/d/above")), "{kept:?}");
        assert!(!kept.iter().any(|p| p.ends_with("bottom")));
    }

    #[test]
    fn keep_dirs_stay_beneath_their_base() {
        let d = tempfile::tempdir().unwrap();
        let (path, base) = kept(&d);
        assert_eq!(
            keep_dir(&base, Some("r1"), true).unwrap().path(),
            path.join("r1")
        );
        assert!(path.join("r1").is_dir());
        assert_eq!(keep_dir(&base, Some("r2"), false).unwrap().path(), path);
        assert_eq!(keep_dir(&base, None, true).unwrap().path(), path);
        assert_eq!(keep_dir(&base, Some(".."), false).unwrap().path(), path);
        for id in ["..", ".", "", "a/b", "/etc", "a\0b"] {
            let e = keep_dir(&base, Some(id), true).unwrap_err();
            assert!(e.class() == crate::contract::ErrorClass::User, "{e}");
            let e = e.to_string();
            assert!(e.starts_with(&format!("row id {id:?} ")), "{e}");
        }
    }

    #[test]
    fn links_planted_in_the_destination_are_refused_and_never_followed() {
        let (d, out, host) = setup();
        let canary = host.path().join("canary.csv");
        // The destination itself a link: refused, nothing written where it points.
        let linked = d.path().join("linked");
        symlink(host.path(), &linked).unwrap();
        let e = destination(&linked).unwrap_err();
        assert_eq!(e.class(), crate::contract::ErrorClass::User);
        assert!(
            e.to_string().starts_with(&format!(
                "{} is a symlink: berth writes only",
                linked.display()
            )),
            "{e}"
        );
        // A directory below it a link: refused by its host path.
        let (dst, handle) = kept(&d);
        symlink(host.path(), dst.join("tables")).unwrap();
        let e = export_outputs(&out, &handle).unwrap_err();
        assert_eq!(e.class(), crate::contract::ErrorClass::User);
        let shown = dst.join("tables").display().to_string();
        assert!(
            e.to_string().starts_with(&format!("{shown} is a symlink")),
            "{e}"
        );
        // A file a link, or a hard link to a file outside: replaced or refused, the file
        // outside never written.
        fs::remove_file(dst.join("tables")).unwrap();
        fs::create_dir(dst.join("tables")).unwrap();
        fs::hard_link(&canary, dst.join("tables/t.csv")).unwrap();
        fs::remove_file(dst.join("state.json")).unwrap();
        symlink(&canary, dst.join("state.json")).unwrap();
        let e = export_outputs(&out, &handle).unwrap_err().to_string();
        assert!(e.contains("state.json is a symlink"), "{e}");
        fs::remove_file(dst.join("state.json")).unwrap();
        assert_eq!(export_outputs(&out, &handle).unwrap(), 3);
        assert_eq!(fs::read(dst.join("tables/t.csv")).unwrap(), b"a\n1\n");
        assert_eq!(fs::read(&canary).unwrap(), b"secret\n");
        assert_eq!(fs::read_dir(host.path()).unwrap().count(), 1);
    }
}
