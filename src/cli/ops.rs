//! What an operator reaches for around the jobs: `berth ps` and `berth kill`, and what
//! installs berth like a tool: `berth completions` and `berth man`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::print;
use super::status::status;
use berth::host::procs::StopSignal;
use berth::job::running::{self, RunningJob};
use berth::job::{self, Services, workdir::Home};

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The job: its id as `berth ps` shows it (or a prefix of exactly one)
    pub job: String,
    /// What the job's berth gets: TERM or INT (it kills the container, commits nothing and
    /// removes everything, as on Ctrl-C), or KILL (it dies at once; `berth kill` then
    /// removes what it left, as `berth gc` would)
    #[arg(long, short, default_value = "TERM", value_parser = parse_signal, value_name = "SIGNAL")]
    pub signal: StopSignal,
    /// How long to wait for the job to end before giving up (exit 3): 45s, 2m
    #[arg(long, default_value = "60s", value_parser = super::prune::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

fn parse_signal(s: &str) -> Result<StopSignal, String> {
    let name = s.trim().to_ascii_uppercase();
    match name.strip_prefix("SIG").unwrap_or(&name) {
        "INT" | "2" => Ok(StopSignal::Int),
        "TERM" | "15" => Ok(StopSignal::Term),
        "KILL" | "9" => Ok(StopSignal::Kill),
        _ => Err(format!(
            "{s:?}: berth kill sends TERM, INT or KILL (any other signal would end berth \
             without removing its container)"
        )),
    }
}

/// A running job as `berth ps --json` prints it.
#[derive(Debug, Serialize)]
struct PsEntry<'a> {
    job_id: &'a str,
    component: &'a str,
    config: Option<&'a str>,
    row: Option<&'a str>,
    image: &'a str,
    container: Option<&'a str>,
    /// RFC 3339.
    started: String,
    started_ms: i64,
    pid: i32,
    /// What the running container holds now, in bytes.
    memory_bytes: Option<u64>,
    /// `root`, or the rootless operator's name.
    user: String,
    uid: u32,
    rootless: bool,
}

impl<'a> PsEntry<'a> {
    fn of(job: &'a RunningJob) -> PsEntry<'a> {
        let r = &job.record;
        PsEntry {
            job_id: &r.job_id,
            component: &r.component,
            config: r.config.as_deref(),
            row: r.row.as_deref(),
            image: &r.image,
            container: r.container.as_deref(),
            started: jiff::Timestamp::from_millisecond(r.started_ms)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            started_ms: r.started_ms,
            pid: r.pid,
            memory_bytes: job.memory,
            user: user_name(r.uid),
            uid: r.uid,
            rootless: r.rootless,
        }
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// `berth ps`: the jobs running under this home.
pub fn ps(home: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let jobs = match running::list(&Home::new(home)) {
        Ok(jobs) => jobs,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            return Ok(status(e.class()));
        }
    };
    let entries: Vec<PsEntry<'_>> = jobs.iter().map(PsEntry::of).collect();
    if json {
        print::out(serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "JOB",
        "COMPONENT",
        "CONFIG",
        "ROW",
        "IMAGE",
        "STARTED",
        "PID",
        "MEMORY",
        "USER",
    ];
    let now = berth::util::unix_now();
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            let started = u64::try_from(e.started_ms / 1000).unwrap_or(0);
            let user = if e.rootless {
                format!("{} (rootless)", e.user)
            } else {
                e.user.clone()
            };
            [
                e.job_id.to_owned(),
                e.component.to_owned(),
                e.config.unwrap_or("-").to_owned(),
                e.row.unwrap_or("-").to_owned(),
                e.image.to_owned(),
                berth::util::ago(started, now),
                e.pid.to_string(),
                e.memory_bytes
                    .map_or_else(|| "-".to_owned(), berth::util::human_bytes),
                user,
            ]
        })
        .collect();
    print::lines(table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

/// Columns as wide as their widest cell, two spaces apart.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    std::iter::once(line(header.to_vec()))
        .chain(
            rows.iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        )
        .collect()
}

/// `berth kill`: signals the job's berth, waits for it to end, and removes what it left.
pub fn kill(svc: Services<'_>, home: &Path, args: &KillArgs) -> ExitCode {
    let home = Home::new(home);
    let signalled = running::find(&home, &args.job).and_then(|job| {
        let pidfd = running::signal(&job, args.signal)?;
        Ok((job, pidfd))
    });
    let (job, pidfd) = match signalled {
        Ok(s) => s,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            return status(e.class());
        }
    };
    let id = &job.record.job_id;
    let pid = job.record.pid;
    match berth::host::procs::wait_exit(&pidfd, args.timeout) {
        Ok(true) => {}
        Ok(false) => {
            print::err(format!(
                "berth: berth {pid} of job {id} did not end within {:?} of {}",
                args.timeout,
                args.signal.name()
            ));
            return status(berth::contract::ErrorClass::Internal);
        }
        Err(e) => {
            print::err(format!(
                "berth: cannot wait for berth {pid} of job {id}: {e}"
            ));
            return status(berth::contract::ErrorClass::Internal);
        }
    }
    // A berth that died without its cleanup (SIGKILL) left its container and directory.
    let report = job::gc::sweep(svc, &home);
    for e in &report.errors {
        print::err(format!("error: {e}"));
    }
    print::out(format!(
        "stopped job {id} ({} to berth {pid})",
        args.signal.name()
    ));
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        status(berth::contract::ErrorClass::Internal)
    }
}

/// The shells `berth completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `berth completions SHELL`: the completion script of `cli`, berth's command line (the
/// dispatcher hands it down, so that the commands need not reach up for it), on stdout.
pub fn completions(shell: Shell, mut cli: clap::Command) -> ExitCode {
    use clap_complete::Shell as S;
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli, "berth", &mut out);
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &out);
    ExitCode::SUCCESS
}

/// `berth man DIR`: `berth.1` and a page per subcommand (`berth-run.1`,
/// `berth-storage-import.1`, …) of `cli` into DIR.
pub fn man(dir: &Path, cli: clap::Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cli, dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_sends_only_the_signals_berth_stops_on() {
        assert_eq!(parse_signal("TERM"), Ok(StopSignal::Term));
        assert_eq!(parse_signal("sigint"), Ok(StopSignal::Int));
        assert_eq!(parse_signal("9"), Ok(StopSignal::Kill));
        let e = parse_signal("HUP").unwrap_err();
        assert!(e.contains("TERM, INT or KILL"), "{e}");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = [["a1".to_owned(), "bbbb".to_owned()]];
        assert_eq!(table(&["JOB", "X"], &rows), ["JOB  X", "a1   bbbb"]);
    }
}
