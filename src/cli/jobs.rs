//! `berth jobs` and `berth job show ID`: the records of the jobs that ran against the
//! configured store (every host's, with a shared one) — status, error class, component,
//! configuration, host, image, timings, and the rows each table got.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use berth::contract::ErrorClass;
use berth::job::Settings;
use berth::storage::{JobQuery, JobRecord, JobStatus, StorageError};

use super::print;
use super::storage::{fail, open, utc};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    berth jobs --status error --since -1days\n  \
    berth jobs --component keboola.ex-db-mysql --json")]
pub struct JobsArgs {
    /// Only jobs that ended so: success or error
    #[arg(long, value_name = "S")]
    pub status: Option<JobStatus>,
    /// Only jobs of this component
    #[arg(long, value_name = "ID")]
    pub component: Option<String>,
    /// Only jobs that started at or after T: an ISO 8601 time, unix seconds, or relative
    /// (`-2 hours`, `-1 days`)
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// At most this many, newest first
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
    /// Print JSON (the whole records, results included) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Everything recorded of one job: status, error class, component, configuration,
    /// host, image, timings, and the rows loaded into each table
    Show {
        /// The job's id, as `berth jobs` lists it (or as given to `berth run --job-id`)
        id: String,
        /// Print the record as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn jobs(settings: &Settings, args: &JobsArgs) -> anyhow::Result<ExitCode> {
    let since_ms = match &args.since {
        Some(text) => match berth::mapping::time::parse_since(text, berth::util::unix_ms()) {
            Ok(ms) => Some(ms),
            Err(reason) => {
                print::err(format!("berth: --since {reason}"));
                return Ok(ExitCode::from(ErrorClass::User.exit_status()));
            }
        },
        None => None,
    };
    let query = JobQuery {
        status: args.status,
        component: args.component.clone(),
        since_ms,
        limit: Some(args.limit),
    };
    let records = match open(settings).and_then(|s| s.jobs(&query)) {
        Ok(r) => r,
        Err(e) => return Ok(fail(&e)),
    };
    if args.json {
        print::out(serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = records.iter().map(|r| r.id.len()).max().unwrap_or(6).max(6);
    let header = format!(
        "{:<width$}  {:<7}  {:<11}  {:<24}  {:<10}  {:<12}  {:<20}  DURATION",
        "JOB ID", "STATUS", "CLASS", "COMPONENT", "CONFIG", "HOST", "STARTED (UTC)"
    );
    let rows = records.iter().map(|r| {
        format!(
            "{:<width$}  {:<7}  {:<11}  {:<24}  {:<10}  {:<12}  {:<20}  {}",
            r.id,
            r.status.as_str(),
            class(r).unwrap_or("-"),
            r.component,
            r.config.as_deref().unwrap_or("-"),
            if r.host.is_empty() { "-" } else { &r.host },
            utc(r.started_ms),
            duration(r)
        )
    });
    print::lines(std::iter::once(header).chain(rows));
    Ok(ExitCode::SUCCESS)
}

pub fn job(settings: &Settings, command: JobCommand) -> anyhow::Result<ExitCode> {
    let JobCommand::Show { id, json } = command;
    let record = match open(settings).and_then(|s| s.job(&id)) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let e = StorageError::Invalid {
                what: format!("job {id}"),
                reason: "no such job is recorded".into(),
            };
            return Ok(fail(&e));
        }
        Err(e) => return Ok(fail(&e)),
    };
    if json {
        print::out(serde_json::to_string_pretty(&record)?);
    } else {
        print::lines(describe(&record));
    }
    Ok(ExitCode::SUCCESS)
}

/// The error class of a failed job, from its result.
fn class(r: &JobRecord) -> Option<&str> {
    r.result.get("error_class").and_then(Value::as_str)
}

fn duration(r: &JobRecord) -> String {
    let ms = r.finished_ms.saturating_sub(r.started_ms).max(0);
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// One line per thing recorded of the job, for the operator.
fn describe(r: &JobRecord) -> Vec<String> {
    let res = &r.result;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut lines = vec![
        format!("job:        {}", r.id),
        match class(r) {
            Some(c) => format!("status:     {} ({c})", r.status.as_str()),
            None => format!("status:     {}", r.status.as_str()),
        },
        format!("component:  {}", r.component),
        format!("config:     {}", r.config.as_deref().unwrap_or("-")),
        format!(
            "host:       {}",
            if r.host.is_empty() { "-" } else { &r.host }
        ),
    ];
    if let (Some(reference), Some(digest)) = (
        text(&res["image"]["reference"]),
        text(&res["image"]["digest"]),
    ) {
        lines.push(format!("image:      {reference} ({digest})"));
    }
    lines.push(format!(
        "started:    {} UTC, took {}",
        utc(r.started_ms),
        duration(r)
    ));
    let t = &res["timings"];
    if t.is_object() {
        let secs = |k: &str| t[k].as_f64().unwrap_or(0.0);
        lines.push(format!(
            "timings:    pull {:.2} s, unpack {:.2} s, run {:.2} s, mapping {:.2} s",
            secs("pull"),
            secs("unpack"),
            secs("run"),
            secs("mapping")
        ));
    }
    for t in res["outputs"]["tables"].as_array().into_iter().flatten() {
        lines.push(format!(
            "table:      {}: {} rows loaded, {} rows now",
            t["id"].as_str().unwrap_or("?"),
            t["rows_loaded"],
            t["rows"]
        ));
    }
    let files: Vec<String> = res["outputs"]["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    if !files.is_empty() {
        lines.push(format!("files:      {}", files.join(", ")));
    }
    if let Some(message) = text(&res["message"]).filter(|m| !m.is_empty()) {
        lines.push(format!("message:    {message}"));
    }
    lines
}
