//! Stored files: their contents under `files/`, copied and fsynced before the commit
//! that names them (and removed again if it fails), their rows and tags, the queries
//! that list them, and the sweep of contents a crash left without a row.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Res, SqliteStorage, json_list, parse_list, to_i64, to_u64};
use crate::storage::{FileInfo, FileQuery, FileUpload, StorageError};

/// Content files no row names are removed once they are this old: younger ones may
/// belong to an `apply` that has not committed yet.
pub(super) const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);

/// A content file written for an upload that is not committed yet.
#[derive(Debug)]
pub(super) struct Staged {
    content: String,
    size: u64,
}

impl SqliteStorage {
    /// Removes content files that no file row names and that are older than `min_age`:
    /// what a crash between writing a file and committing its row leaves behind.
    pub fn sweep_orphans(&self, min_age: Duration) -> Result<usize, StorageError> {
        let known: HashSet<String> = self.read(|conn| {
            let mut stmt = conn.prepare("SELECT content FROM files")?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            Ok(names)
        })?;
        let io_err = |source| StorageError::Io {
            path: self.files_dir.clone(),
            source,
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.files_dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| known.contains(n)) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!("removed {removed} orphaned file contents");
        }
        Ok(removed)
    }

    /// Copies the uploads' contents into `files/` under fresh names, fsynced, before the
    /// transaction that makes them visible.
    pub(super) fn stage_files(&self, uploads: &[FileUpload]) -> Result<Vec<Staged>, StorageError> {
        let mut staged = Vec::with_capacity(uploads.len());
        for upload in uploads {
            match self.stage_file(upload) {
                Ok(s) => staged.push(s),
                Err(e) => {
                    self.unstage(&staged);
                    return Err(e);
                }
            }
        }
        if !staged.is_empty() {
            // The names must be durable before a committed row points at them.
            let dir = File::open(&self.files_dir).and_then(|d| d.sync_all());
            if let Err(source) = dir {
                self.unstage(&staged);
                return Err(StorageError::Io {
                    path: self.files_dir.clone(),
                    source,
                });
            }
        }
        Ok(staged)
    }

    fn stage_file(&self, upload: &FileUpload) -> Result<Staged, StorageError> {
        let source_err = |message: String| StorageError::Source {
            path: upload.path.clone(),
            message,
        };
        let mut src = File::open(&upload.path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => source_err("no such file".into()),
            _ => source_err(e.to_string()),
        })?;
        if !src.metadata().is_ok_and(|m| m.is_file()) {
            return Err(source_err("not a regular file".into()));
        }
        let content = crate::util::random_hex(16);
        let dest = self.files_dir.join(&content);
        let io_err = |source| StorageError::Io {
            path: dest.clone(),
            source,
        };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io_err)?;
        let copied = io::copy(&mut src, &mut out).and_then(|n| out.sync_all().map(|()| n));
        match copied {
            Ok(size) => Ok(Staged { content, size }),
            Err(source) => {
                let _ = fs::remove_file(&dest);
                Err(io_err(source))
            }
        }
    }

    pub(super) fn unstage(&self, staged: &[Staged]) {
        for s in staged {
            let _ = fs::remove_file(self.files_dir.join(&s.content));
        }
    }

    /// The content of file `id`, open for reading.
    pub(super) fn open_content(&self, id: u64) -> Result<File, StorageError> {
        let content: Option<String> = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT content FROM files WHERE id = ?1",
                    [to_i64(id)],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        let content = content.ok_or(StorageError::NoSuchFile(id))?;
        let path = self.files_dir.join(content);
        File::open(&path).map_err(|source| StorageError::Io { path, source })
    }
}

pub(super) fn check_upload(upload: &FileUpload) -> Result<(), StorageError> {
    let invalid = |reason: &str| StorageError::Invalid {
        what: format!("file name {:?} for {}", upload.name, upload.path.display()),
        reason: reason.to_owned(),
    };
    crate::util::plain_name(&upload.name).map_err(invalid)?;
    check_tags(&format!("tags of {}", upload.path.display()), &upload.tags)
}

/// Tags are never empty.
pub(super) fn check_tags(what: &str, tags: &[String]) -> Result<(), StorageError> {
    if tags.iter().any(String::is_empty) {
        return Err(StorageError::Invalid {
            what: what.to_owned(),
            reason: "a tag cannot be empty".into(),
        });
    }
    Ok(())
}

/// Adds `tags` to the stored file `id`, skipping those it has.
pub(super) fn add_tags(tx: &Transaction<'_>, id: u64, tags: &[String]) -> Res<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM files WHERE id = ?1)",
        [to_i64(id)],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StorageError::NoSuchFile(id).into());
    }
    let mut stmt = tx.prepare(
        "INSERT INTO file_tags (file_id, tag) SELECT ?1, ?2
         WHERE NOT EXISTS (SELECT 1 FROM file_tags WHERE file_id = ?1 AND tag = ?2)",
    )?;
    for tag in tags {
        stmt.execute(params![to_i64(id), tag])?;
    }
    Ok(())
}

pub(super) fn insert_file(
    tx: &Transaction<'_>,
    upload: &FileUpload,
    staged: &Staged,
    now: i64,
) -> Res<FileInfo> {
    tx.execute(
        "INSERT INTO files (name, content, size_bytes, created_ms, is_permanent, is_public,
            is_encrypted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            upload.name,
            staged.content,
            to_i64(staged.size),
            now,
            upload.is_permanent,
            upload.is_public,
            upload.is_encrypted
        ],
    )?;
    let id = tx.last_insert_rowid();
    let mut tags = Vec::with_capacity(upload.tags.len());
    let mut stmt = tx.prepare("INSERT INTO file_tags (file_id, tag) VALUES (?1, ?2)")?;
    for tag in &upload.tags {
        if !tags.contains(tag) {
            stmt.execute(params![id, tag])?;
            tags.push(tag.clone());
        }
    }
    Ok(FileInfo {
        id: to_u64(id),
        name: upload.name.clone(),
        tags,
        size_bytes: staged.size,
        created_ms: now,
        is_permanent: upload.is_permanent,
        is_public: upload.is_public,
        is_encrypted: upload.is_encrypted,
    })
}

/// Files matching `query`, newest first.
pub(super) fn find_files(conn: &Connection, query: &FileQuery) -> Res<Vec<FileInfo>> {
    let mut all: Vec<&String> = query.tags_all.iter().collect();
    all.sort();
    all.dedup();
    let mut stmt = conn.prepare(
        "SELECT id, name, size_bytes, created_ms, is_permanent, is_public, is_encrypted,
            (SELECT json_group_array(tag) FROM
                (SELECT tag FROM file_tags WHERE file_id = files.id ORDER BY rowid))
         FROM files
         WHERE (SELECT count(*) FROM file_tags WHERE file_id = files.id
                AND tag IN (SELECT value FROM json_each(?1))) = ?2
           AND (?3 = '[]' OR EXISTS (SELECT 1 FROM file_tags WHERE file_id = files.id
                AND tag IN (SELECT value FROM json_each(?3))))
           AND NOT EXISTS (SELECT 1 FROM file_tags WHERE file_id = files.id
                AND tag IN (SELECT value FROM json_each(?4)))
           AND (?5 = '[]' OR id IN (SELECT value FROM json_each(?5)))
           AND id > ?6
         ORDER BY id DESC
         LIMIT ?7",
    )?;
    let rows = stmt.query_map(
        params![
            json_list(&all),
            to_i64(all.len() as u64),
            json_list(&query.include_any),
            json_list(&query.exclude),
            json_list(&query.ids),
            query.since_id.map_or(0, to_i64),
            query.limit.map_or(-1, to_i64),
        ],
        |r| {
            Ok(FileInfo {
                id: to_u64(r.get(0)?),
                name: r.get(1)?,
                size_bytes: to_u64(r.get(2)?),
                created_ms: r.get(3)?,
                is_permanent: r.get(4)?,
                is_public: r.get(5)?,
                is_encrypted: r.get(6)?,
                tags: parse_list(&r.get::<_, String>(7)?),
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io;
    use std::time::Duration;

    use super::super::test_fixture::{Fixture, strings, upload};
    use crate::storage::{Changes, FileQuery, Storage};

    #[test]
    fn tags_are_added_to_stored_files_once_and_all_or_nothing() {
        let f = Fixture::new();
        let a = f.upload("a.txt", &["x"]);
        let tagged = |c: Changes| f.store.apply(&c).map(|_| ());
        tagged(Changes {
            file_tags: vec![(a.id, strings(&["done", "x", "done"]))],
            ..Changes::default()
        })
        .unwrap();
        let tags = |id| {
            let q = FileQuery {
                ids: vec![id],
                ..FileQuery::default()
            };
            f.store.files(&q).unwrap()[0].tags.clone()
        };
        assert_eq!(tags(a.id), strings(&["x", "done"]));
        let e = tagged(Changes {
            file_tags: vec![(a.id, strings(&["more"])), (a.id + 100, strings(&["y"]))],
            ..Changes::default()
        })
        .unwrap_err();
        assert!(e.is_user_error() && e.to_string().contains(&format!("file {}", a.id + 100)));
        assert_eq!(tags(a.id), strings(&["x", "done"]));
        let e = tagged(Changes {
            file_tags: vec![(a.id, strings(&[""]))],
            ..Changes::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("a tag cannot be empty"), "{e}");
    }

    #[test]
    fn files_and_tag_queries() {
        let f = Fixture::new();
        let a = f.upload("a.txt", &["x", "y"]);
        let b = f.upload("b.txt", &["x"]);
        let c = f.upload("c.txt", &["y", "z", "y"]);
        let d = f.upload("d.txt", &[]);
        assert!(a.id < b.id && b.id < c.id && c.id < d.id);
        assert_eq!(c.tags, strings(&["y", "z"]));
        assert_eq!(a.size_bytes, 5);

        let ids = |q: FileQuery| -> Vec<u64> {
            f.store.files(&q).unwrap().iter().map(|f| f.id).collect()
        };
        assert_eq!(ids(FileQuery::default()), vec![d.id, c.id, b.id, a.id]);
        let tags = |t: &[&str]| strings(t);
        assert_eq!(
            ids(FileQuery {
                tags_all: tags(&["x", "y"]),
                ..FileQuery::default()
            }),
            vec![a.id]
        );
        assert_eq!(
            ids(FileQuery {
                tags_all: tags(&["x", "x"]),
                ..FileQuery::default()
            }),
            vec![b.id, a.id]
        );
        assert_eq!(
            ids(FileQuery {
                include_any: tags(&["z", "x"]),
                ..FileQuery::default()
            }),
            vec![c.id, b.id, a.id]
        );
        assert_eq!(
            ids(FileQuery {
                include_any: tags(&["y"]),
                exclude: tags(&["z"]),
                ..FileQuery::default()
            }),
            vec![a.id]
        );
        assert_eq!(
            ids(FileQuery {
                ids: vec![a.id, d.id, 999],
                ..FileQuery::default()
            }),
            vec![d.id, a.id]
        );
        assert_eq!(
            ids(FileQuery {
                since_id: Some(b.id),
                ..FileQuery::default()
            }),
            vec![d.id, c.id]
        );
        assert_eq!(
            ids(FileQuery {
                limit: Some(2),
                ..FileQuery::default()
            }),
            vec![d.id, c.id]
        );
        let listed = &f
            .store
            .files(&FileQuery {
                ids: vec![a.id],
                ..FileQuery::default()
            })
            .unwrap()[0];
        assert_eq!(listed, &a);
        assert!(listed.is_encrypted && !listed.is_public);

        let mut content = String::new();
        io::Read::read_to_string(&mut f.store.open_file(c.id).unwrap(), &mut content).unwrap();
        assert_eq!(content, "c.txt");
        let e = f.store.open_file(999).unwrap_err();
        assert!(e.is_user_error());
        assert_eq!(e.to_string(), "file 999 does not exist");
    }

    #[test]
    fn unsafe_file_names_and_missing_sources_are_refused() {
        let f = Fixture::new();
        let path = f.file("x", b"x");
        for name in ["", ".", "..", "a/b", "../x"] {
            let e = f
                .store
                .apply(&Changes {
                    files: vec![upload(&path, name, &[])],
                    ..Changes::default()
                })
                .unwrap_err();
            assert!(e.is_user_error(), "{name}");
        }
        let missing = f.dir.path().join("nope");
        let e = f
            .store
            .apply(&Changes {
                files: vec![upload(&path, "ok", &[]), upload(&missing, "nope", &[])],
                ..Changes::default()
            })
            .unwrap_err();
        assert!(e.is_user_error());
        assert!(e.to_string().contains("nope: no such file"), "{e}");
        // The first file's content was staged, then removed again.
        assert_eq!(fs::read_dir(&f.store.files_dir).unwrap().count(), 0);
        assert!(f.store.files(&FileQuery::default()).unwrap().is_empty());
    }

    #[test]
    fn orphaned_contents_are_swept() {
        let f = Fixture::new();
        let kept = f.upload("kept.txt", &[]);
        let orphan = f.store.files_dir.join("0123456789abcdef");
        fs::write(&orphan, b"left by a crash").unwrap();
        assert_eq!(f.store.sweep_orphans(Duration::from_secs(3600)).unwrap(), 0);
        assert!(orphan.exists());
        assert_eq!(f.store.sweep_orphans(Duration::ZERO).unwrap(), 1);
        assert!(!orphan.exists());
        assert!(f.store.open_file(kept.id).is_ok());
    }
}
