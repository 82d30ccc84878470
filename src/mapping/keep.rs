//! `--keep-outputs DIR`: a copy of what a component wrote, for the operator.
//!
//! `out/` is the container's: it is walked from directory handles, and only regular files
//! and directories are copied. Symlinks, FIFOs, sockets and devices — `out` itself included —
//! are skipped with a warning: a link could make the copy (or an operator's later read of
//! it) reach anywhere on the host, and a FIFO would block berth.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::MappingError;
use crate::confined::{self, Kind};

/// Directories nested deeper are not copied: each level holds a handle and a stack frame.
pub const MAX_DEPTH: usize = 128;

/// Where the outputs of a row are kept: `base` itself, or `base/<row id>` when the
/// configuration has several rows. A row id that is not one plain file name (`..`, `.`,
/// empty, with `/` or NUL) is refused: it would put the copy outside `base`.
pub fn keep_dir(
    base: &Path,
    row_id: Option<&str>,
    multiple_rows: bool,
) -> Result<PathBuf, MappingError> {
    match (multiple_rows, row_id) {
        (true, Some(id)) if super::plain_name(id) => Ok(base.join(id)),
        (true, Some(id)) => Err(MappingError::User(format!(
            "row id {id:?} cannot name a directory for --keep-outputs: it must be a plain file name"
        ))),
        _ => Ok(base.to_owned()),
    }
}

/// Copies the regular files and directories under `out` (the data folder's `out/`; the
/// data folder is trusted, `out` and below are not) to `dst`, and returns how many files
/// it copied. Permission bits are kept, set-id and sticky bits are not.
pub fn export_outputs(out: &Path, dst: &Path) -> Result<u64, MappingError> {
    let src = match super::open_beneath_parent(out) {
        Ok(src) => src,
        Err(e) if e.is_user_error() => {
            tracing::warn!("not exporting outputs: {e}");
            fs::create_dir_all(dst).map_err(MappingError::io(dst))?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    copy_tree(&src, dst, 0)
}

fn copy_tree(src: &confined::Dir, dst: &Path, depth: usize) -> Result<u64, MappingError> {
    fs::create_dir_all(dst).map_err(MappingError::io(dst))?;
    let mut copied = 0;
    for entry in src.entries()? {
        let to = dst.join(&entry.name);
        let shown = src.shown(&entry.name);
        match entry.kind {
            Kind::Dir if depth >= MAX_DEPTH => tracing::warn!(
                "not exporting {}: nested deeper than {MAX_DEPTH} directories",
                shown.display()
            ),
            Kind::Dir => match src.open_dir(&entry.name) {
                Ok(dir) => copied += copy_tree(&dir, &to, depth + 1)?,
                Err(e) if e.is_user_error() => tracing::warn!("not exporting {e}"),
                Err(e) => return Err(e.into()),
            },
            Kind::File => match src.open_file(&entry.name) {
                Ok(file) => {
                    copy_file(file, &src.path().join(&entry.name), &to)?;
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

/// Copies the opened regular file `from` (at `from_path`, for errors) to `to`.
fn copy_file(mut from: fs::File, from_path: &Path, to: &Path) -> Result<(), MappingError> {
    let mode = from
        .metadata()
        .map_err(MappingError::io(from_path))?
        .permissions()
        .mode()
        & 0o777;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(MappingError::io(to))?;
    io::copy(&mut from, &mut out).map_err(MappingError::io(to))?;
    out.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(MappingError::io(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
        let dst = d.path().join("kept");
        assert_eq!(export_outputs(&out, &dst).unwrap(), 3);
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
        let dst = d.path().join("kept");
        let (tx, rx) = std::sync::mpsc::channel();
        let (o, k) = (out.clone(), dst.clone());
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
        let dst = d.path().join("kept");
        assert_eq!(export_outputs(&out, &dst).unwrap(), 0);
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
        let dst = d.path().join("kept");
        assert_eq!(export_outputs(&out, &dst).unwrap(), 4);
        let kept = listing(&dst);
        assert!(kept.iter().any(|p| p.ends_with("/d/above")), "{kept:?}");
        assert!(!kept.iter().any(|p| p.ends_with("bottom")));
    }

    #[test]
    fn keep_dirs_stay_beneath_their_base() {
        let base = Path::new("/keep");
        assert_eq!(keep_dir(base, Some("r1"), true).unwrap(), base.join("r1"));
        assert_eq!(keep_dir(base, Some("r1"), false).unwrap(), base);
        assert_eq!(keep_dir(base, None, true).unwrap(), base);
        assert_eq!(keep_dir(base, Some(".."), false).unwrap(), base);
        for id in ["..", ".", "", "a/b", "/etc", "a\0b"] {
            let e = keep_dir(base, Some(id), true).unwrap_err();
            assert!(e.class() == crate::contract::ErrorClass::User, "{e}");
            let e = e.to_string();
            assert!(e.starts_with(&format!("row id {id:?} ")), "{e}");
        }
    }
}
