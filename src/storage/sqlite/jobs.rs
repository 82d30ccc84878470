//! Job records. A success is written in the transaction that commits the job's outputs,
//! keyed by the job id: a second commit of the same id finds it and applies nothing. A
//! failure is recorded once the job ended, and never replaces a success.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::storage::sql::{SqliteRes as Res, to_i64};
use crate::storage::{JobQuery, JobRecord, JobStatus, StorageError};

/// Inserts `job` (or replaces a failure of its id); never replaces a success.
const UPSERT: &str = "INSERT INTO jobs (id, component, config, status, host, started_ms,
        finished_ms, result)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (id) DO UPDATE SET component = excluded.component,
        config = excluded.config, status = excluded.status, host = excluded.host,
        started_ms = excluded.started_ms, finished_ms = excluded.finished_ms,
        result = excluded.result
     WHERE jobs.status <> 'success'";

/// Completes a success's record with its final result.
const COMPLETE: &str = "UPDATE jobs SET finished_ms = ?2, result = ?3
     WHERE id = ?1 AND status = 'success'";

fn upsert(conn: &Connection, job: &JobRecord) -> rusqlite::Result<usize> {
    conn.execute(
        UPSERT,
        params![
            job.id,
            job.component,
            job.config,
            job.status.as_str(),
            job.host,
            job.started_ms,
            job.finished_ms,
            job.result.to_string()
        ],
    )
}

/// The success record of a job's commit: fails when this job id committed already.
pub(super) fn commit_job(tx: &Transaction<'_>, job: &JobRecord) -> Res<()> {
    if upsert(tx, job)? == 0 {
        return Err(StorageError::AlreadyCommitted {
            job: job.id.clone(),
        }
        .into());
    }
    Ok(())
}

/// Keeps a record of a job that ended: a failure, or the full result of a success
/// committed before.
pub(super) fn record_job(conn: &Connection, job: &JobRecord) -> Res<()> {
    // A job record is an audit trail, not data: losing the last one to a power cut is
    // acceptable, an fsync on every job's critical path is not. In WAL mode the next FULL
    // commit makes it durable anyway.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let written = if job.status == JobStatus::Success {
        conn.execute(
            COMPLETE,
            params![job.id, job.finished_ms, job.result.to_string()],
        )
        .and_then(|n| if n == 0 { upsert(conn, job) } else { Ok(n) })
    } else {
        upsert(conn, job)
    };
    conn.pragma_update(None, "synchronous", "FULL")?;
    written?;
    Ok(())
}

const COLUMNS: &str = "id, component, config, status, host, started_ms, finished_ms, result";

fn job_of_row(r: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let status: String = r.get(3)?;
    let result: String = r.get(7)?;
    Ok(JobRecord {
        id: r.get(0)?,
        component: r.get(1)?,
        config: r.get(2)?,
        status: status.parse().unwrap_or(JobStatus::Error),
        host: r.get(4)?,
        started_ms: r.get(5)?,
        finished_ms: r.get(6)?,
        result: serde_json::from_str(&result).unwrap_or_default(),
    })
}

pub(super) fn find_job(conn: &Connection, id: &str) -> Res<Option<JobRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            job_of_row,
        )
        .optional()?)
}

/// Job records matching `query`, newest first.
pub(super) fn find_jobs(conn: &Connection, query: &JobQuery) -> Res<Vec<JobRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM jobs
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR component = ?2)
           AND started_ms >= ?3
         ORDER BY started_ms DESC, id DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            query.status.map(JobStatus::as_str),
            query.component,
            query.since_ms.unwrap_or(i64::MIN),
            query.limit.map_or(-1, to_i64),
        ],
        job_of_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
