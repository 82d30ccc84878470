//! Job records: what is kept of each finished job, an audit trail written outside any
//! `apply` and without an fsync of its own.

use rusqlite::{Connection, params};

use super::Res;
use crate::storage::JobRecord;

/// Keeps a record of a finished job (replacing one with the same id).
pub(super) fn record_job(conn: &Connection, job: &JobRecord) -> Res<()> {
    // A job record is an audit trail, not data: losing the last one to a power cut is
    // acceptable, an fsync on every job's critical path is not. In WAL mode the next FULL
    // commit makes it durable anyway.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let inserted = conn.execute(
        "INSERT OR REPLACE INTO jobs (id, component, config, status, started_ms,
            finished_ms, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            job.id,
            job.component,
            job.config,
            job.status.as_str(),
            job.started_ms,
            job.finished_ms,
            job.result.to_string()
        ],
    );
    conn.pragma_update(None, "synchronous", "FULL")?;
    inserted?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_fixture::Fixture;
    use crate::storage::{JobRecord, JobStatus, Storage};

    #[test]
    fn job_records_are_kept() {
        let f = Fixture::new();
        let mut job = JobRecord {
            id: "j1".into(),
            component: "keboola.ex-test".into(),
            config: Some("123".into()),
            status: JobStatus::Error,
            started_ms: 1,
            finished_ms: 2,
            result: json!({"status": "error"}),
        };
        f.store.record_job(&job).unwrap();
        job.status = JobStatus::Success;
        f.store.record_job(&job).unwrap();
        let conn = f.store.lock();
        let (n, status, result): (i64, String, String) = conn
            .query_row(
                "SELECT count(*), max(status), max(result) FROM jobs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (n, status.as_str(), result.as_str()),
            (1, "success", "{\"status\":\"error\"}")
        );
    }
}
