//! Stored files in PostgreSQL: their rows and tags, the queries that list them, and the
//! content keys they name (the contents are in the blob store, put before the commit).

use std::collections::HashSet;

use postgres::{GenericClient, Transaction};

use crate::storage::blob::Blob;
use crate::storage::sql::{PgRes as Res, to_i64, to_u64};
use crate::storage::{FileInfo, FileQuery, FileUpload, StorageError};

/// The content key of file `id`.
pub(super) fn content_key(c: &mut impl GenericClient, id: u64) -> Res<String> {
    let row = c.query_opt("SELECT content FROM files WHERE id = $1", &[&to_i64(id)])?;
    Ok(row.ok_or(StorageError::NoSuchFile(id))?.get(0))
}

/// Every content key a file names: what the sweep keeps.
pub(super) fn content_keys(c: &mut impl GenericClient) -> Res<HashSet<String>> {
    let rows = c.query("SELECT DISTINCT content FROM files", &[])?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Inserts a file row (its id drawn under the files lock the caller holds) and its tags.
pub(super) fn insert_file(
    tx: &mut Transaction<'_>,
    upload: &FileUpload,
    blob: &Blob,
    now: i64,
) -> Res<FileInfo> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO files (name, content, size_bytes, created_ms, is_permanent,
                is_public, is_encrypted)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &upload.name,
                &blob.key,
                &to_i64(blob.size),
                &now,
                &upload.is_permanent,
                &upload.is_public,
                &upload.is_encrypted,
            ],
        )?
        .get(0);
    let mut tags = Vec::with_capacity(upload.tags.len());
    for tag in &upload.tags {
        if !tags.contains(tag) {
            tx.execute(
                "INSERT INTO file_tags (file_id, tag) VALUES ($1, $2)",
                &[&id, tag],
            )?;
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

/// Adds `tags` to the stored file `id`, skipping those it has.
pub(super) fn add_tags(tx: &mut Transaction<'_>, id: u64, tags: &[String]) -> Res<()> {
    let id = to_i64(id);
    // Locks the file's row: two jobs tagging one file add each tag once.
    if tx
        .query_opt("SELECT 1 FROM files WHERE id = $1 FOR UPDATE", &[&id])?
        .is_none()
    {
        return Err(StorageError::NoSuchFile(to_u64(id)).into());
    }
    for tag in tags {
        tx.execute(
            "INSERT INTO file_tags (file_id, tag) VALUES ($1, $2)
             ON CONFLICT (file_id, tag) DO NOTHING",
            &[&id, tag],
        )?;
    }
    Ok(())
}

/// Files matching `query`, newest first.
pub(super) fn find_files(c: &mut impl GenericClient, query: &FileQuery) -> Res<Vec<FileInfo>> {
    let mut all: Vec<&String> = query.tags_all.iter().collect();
    all.sort();
    all.dedup();
    let ids: Vec<i64> = query.ids.iter().map(|&i| to_i64(i)).collect();
    let rows = c.query(
        "SELECT f.id, f.name, f.size_bytes, f.created_ms, f.is_permanent, f.is_public,
            f.is_encrypted,
            coalesce((SELECT array_agg(tag ORDER BY seq) FROM file_tags WHERE file_id = f.id),
                '{}')
         FROM files f
         WHERE (SELECT count(*) FROM file_tags WHERE file_id = f.id AND tag = ANY($1)) = $2
           AND (cardinality($3::text[]) = 0 OR EXISTS (SELECT 1 FROM file_tags
                WHERE file_id = f.id AND tag = ANY($3)))
           AND NOT EXISTS (SELECT 1 FROM file_tags WHERE file_id = f.id AND tag = ANY($4))
           AND (cardinality($5::bigint[]) = 0 OR f.id = ANY($5))
           AND f.id > $6
           AND f.created_ms >= $8
         ORDER BY f.id DESC
         LIMIT $7",
        &[
            &all,
            &to_i64(all.len() as u64),
            &query.include_any,
            &query.exclude,
            &ids,
            &query.since_id.map_or(0, to_i64),
            &query.limit.map(to_i64),
            &query.created_since_ms.unwrap_or(i64::MIN),
        ],
    )?;
    Ok(rows
        .iter()
        .map(|r| FileInfo {
            id: to_u64(r.get(0)),
            name: r.get(1),
            size_bytes: to_u64(r.get(2)),
            created_ms: r.get(3),
            is_permanent: r.get(4),
            is_public: r.get(5),
            is_encrypted: r.get(6),
            tags: r.get(7),
        })
        .collect())
}
