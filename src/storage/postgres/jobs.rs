//! Job records in PostgreSQL (see the embedded store's `jobs`): a success is written in
//! the commit's transaction under the job id's primary key, so a second commit of the
//! same id waits for the first and then finds it; a failure never replaces a success.

use postgres::{GenericClient, Row, Transaction};

use crate::storage::sql::{PgRes as Res, to_i64};
use crate::storage::{JobQuery, JobRecord, JobStatus, StorageError};

const UPSERT: &str = "INSERT INTO jobs (id, component, config, status, host, started_ms,
        finished_ms, result)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (id) DO UPDATE SET component = excluded.component,
        config = excluded.config, status = excluded.status, host = excluded.host,
        started_ms = excluded.started_ms, finished_ms = excluded.finished_ms,
        result = excluded.result
     WHERE jobs.status <> 'success'";

fn upsert(c: &mut impl GenericClient, job: &JobRecord) -> Result<u64, postgres::Error> {
    c.execute(
        UPSERT,
        &[
            &job.id,
            &job.component,
            &job.config,
            &job.status.as_str(),
            &job.host,
            &job.started_ms,
            &job.finished_ms,
            &job.result.to_string(),
        ],
    )
}

/// The success record of a job's commit: fails when this job id committed already.
pub(super) fn commit_job(tx: &mut Transaction<'_>, job: &JobRecord) -> Res<()> {
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
pub(super) fn record_job(tx: &mut Transaction<'_>, job: &JobRecord) -> Res<()> {
    if job.status == JobStatus::Success {
        let completed = tx.execute(
            "UPDATE jobs SET finished_ms = $2, result = $3 WHERE id = $1 AND status = 'success'",
            &[&job.id, &job.finished_ms, &job.result.to_string()],
        )?;
        if completed > 0 {
            return Ok(());
        }
    }
    upsert(tx, job)?;
    Ok(())
}

const COLUMNS: &str = "id, component, config, status, host, started_ms, finished_ms, result";

fn job_of_row(r: &Row) -> JobRecord {
    let status: &str = r.get(3);
    let result: &str = r.get(7);
    JobRecord {
        id: r.get(0),
        component: r.get(1),
        config: r.get(2),
        status: status.parse().unwrap_or(JobStatus::Error),
        host: r.get(4),
        started_ms: r.get(5),
        finished_ms: r.get(6),
        result: serde_json::from_str(result).unwrap_or_default(),
    }
}

pub(super) fn find_job(c: &mut impl GenericClient, id: &str) -> Res<Option<JobRecord>> {
    let row = c.query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])?;
    Ok(row.as_ref().map(job_of_row))
}

/// Job records matching `query`, newest first.
pub(super) fn find_jobs(c: &mut impl GenericClient, query: &JobQuery) -> Res<Vec<JobRecord>> {
    let rows = c.query(
        &format!(
            "SELECT {COLUMNS} FROM jobs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR component = $2)
               AND started_ms >= $3
             ORDER BY started_ms DESC, id DESC LIMIT $4"
        ),
        &[
            &query.status.map(JobStatus::as_str),
            &query.component,
            &query.since_ms.unwrap_or(i64::MIN),
            &query.limit.map(to_i64),
        ],
    )?;
    Ok(rows.iter().map(job_of_row).collect())
}
