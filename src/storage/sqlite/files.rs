//! Stored files: their rows and tags, the queries that list them, and the content keys
//! they name (the contents are in the blob store, written before the commit).

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::storage::blob::Blob;
use crate::storage::sql::{SqliteRes as Res, json_list, parse_list, to_i64, to_u64};
use crate::storage::{FileInfo, FileQuery, FileUpload, StorageError};

/// The content key of file `id`.
pub(super) fn content_key(conn: &Connection, id: u64) -> Res<String> {
    let key: Option<String> = conn
        .query_row(
            "SELECT content FROM files WHERE id = ?1",
            [to_i64(id)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(key.ok_or(StorageError::NoSuchFile(id))?)
}

/// Every content key a file names: what the sweep keeps.
pub(super) fn content_keys(conn: &Connection) -> Res<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT content FROM files")?;
    let keys = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(keys)
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
    blob: &Blob,
    now: i64,
) -> Res<FileInfo> {
    tx.execute(
        "INSERT INTO files (name, content, size_bytes, created_ms, is_permanent, is_public,
            is_encrypted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            upload.name,
            blob.key,
            to_i64(blob.size),
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
        size_bytes: blob.size,
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
           AND created_ms >= ?8
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
            query.created_since_ms.unwrap_or(i64::MIN),
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
        let e = f.store.open_file(999).err().unwrap();
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
        // The first file's content was stored; no file names it, and the sweep takes it
        // once it is old enough.
        assert!(f.store.files(&FileQuery::default()).unwrap().is_empty());
        assert_eq!(fs::read_dir(f.blobs_dir()).unwrap().count(), 1);
        assert_eq!(f.store.sweep(Duration::ZERO).unwrap(), 1);
        assert_eq!(fs::read_dir(f.blobs_dir()).unwrap().count(), 0);
    }

    #[test]
    fn the_same_content_is_stored_once_for_several_files() {
        let f = Fixture::new();
        let a = f.upload("same.txt", &[]);
        let b = f.upload("same.txt", &["again"]);
        assert_ne!(a.id, b.id);
        assert_eq!(fs::read_dir(f.blobs_dir()).unwrap().count(), 1);
        for id in [a.id, b.id] {
            let mut content = String::new();
            io::Read::read_to_string(&mut f.store.open_file(id).unwrap(), &mut content).unwrap();
            assert_eq!(content, "same.txt");
        }
    }

    #[test]
    fn orphaned_contents_are_swept() {
        let f = Fixture::new();
        let kept = f.upload("kept.txt", &[]);
        let orphan = f.blobs_dir().join("0123456789abcdef".repeat(4));
        fs::write(&orphan, b"left by a crash").unwrap();
        assert_eq!(f.store.sweep(Duration::from_secs(3600)).unwrap(), 0);
        assert!(orphan.exists());
        assert_eq!(f.store.sweep(Duration::ZERO).unwrap(), 1);
        assert!(!orphan.exists());
        assert!(f.store.open_file(kept.id).is_ok());
    }
}
