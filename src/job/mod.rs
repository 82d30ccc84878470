//! One job, start to end: pull → unpack → data folder → bundle → run → report.
//!
//! This is the only layer that knows the order of things. Everything it calls (image,
//! bundle, runtime, host) knows nothing about jobs, and every resource it creates — the
//! job directory, the overlay mount, the container — is released on every way out,
//! including errors and Ctrl-C.

pub mod gc;
pub mod workdir;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bundle::{self, BundleError, Limits};
use crate::contract::config_file::{self, RunIdentity};
use crate::contract::result::{ImageSummary, Status, Timings};
use crate::contract::{ErrorClass, JobFile, JobResult, NetworkMode, truncate_message};
use crate::host::Host;
use crate::image::{ImageError, Images, Ownership, PulledImage, RegistrySettings, RootfsView};
use crate::runtime::{self, RunOutcome, RuntimeError};
use workdir::{Home, JobDir};

/// Choices an operator makes for one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Copy what the component wrote to `/data/out` here after it ran.
    pub keep_outputs: Option<PathBuf>,
}

/// Where berth keeps things and how it reaches registries.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub cache: PathBuf,
    pub registry: RegistrySettings,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("network mode \"bridge\" is not supported yet; use \"none\" or \"host\"")]
    BridgeNetwork,
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("job directory: {0}")]
    Workdir(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interrupted by the operator")]
    Interrupted,
}

impl JobError {
    pub fn class(&self) -> ErrorClass {
        match self {
            JobError::BridgeNetwork => ErrorClass::User,
            JobError::Image(e) if e.is_user_error() => ErrorClass::User,
            _ => ErrorClass::Internal,
        }
    }
}

/// Progress of one job, for the result document.
#[derive(Debug, Default)]
struct Progress {
    image: Option<ImageSummary>,
    timings: Timings,
    exit_code: Option<i32>,
}

/// Runs a job to the end and says how it went. Never panics on bad input; every failure
/// becomes a result with its class.
pub fn run(
    host: &dyn Host,
    settings: &Settings,
    job: &JobFile,
    options: &RunOptions,
    on_line: &mut dyn FnMut(&str),
) -> JobResult {
    let started = Instant::now();
    let mut progress = Progress::default();
    let mut job_id = String::new();
    let outcome = run_inner(
        host,
        settings,
        job,
        options,
        on_line,
        &mut progress,
        &mut job_id,
    );
    progress.timings.total = started.elapsed().as_secs_f64();
    let (status, error_class, message) = match outcome {
        Ok(run) => classify(job, &run),
        Err(e) => {
            let e = if crate::interrupt::requested() {
                JobError::Interrupted
            } else {
                e
            };
            (Status::Error, Some(e.class()), e.to_string())
        }
    };
    JobResult {
        job_id,
        status,
        error_class,
        message: truncate_message(&message),
        exit_code: progress.exit_code,
        image: progress.image,
        timings: progress.timings,
    }
}

fn run_inner(
    host: &dyn Host,
    settings: &Settings,
    job: &JobFile,
    options: &RunOptions,
    on_line: &mut dyn FnMut(&str),
    progress: &mut Progress,
    job_id: &mut String,
) -> Result<RunOutcome, JobError> {
    if job.component.network == NetworkMode::Bridge {
        return Err(JobError::BridgeNetwork);
    }
    let images = Images::open(&settings.cache, settings.registry.clone())?;

    let t = Instant::now();
    let image = images.pull(&job.component.image)?;
    progress.timings.pull = t.elapsed().as_secs_f64();
    progress.image = Some(ImageSummary {
        reference: image.reference.clone(),
        digest: image.digest.to_string(),
        fetched_blobs: image.fetched_blobs,
        fetched_bytes: image.fetched_bytes,
    });

    let t = Instant::now();
    let ownership = if host.privileged() {
        Ownership::Preserve
    } else {
        Ownership::Ignore
    };
    let (rootfs, _) = images.rootfs(&image, ownership)?;
    progress.timings.unpack = t.elapsed().as_secs_f64();
    tracing::debug!("image ready");

    let home = Home::new(&settings.home);
    let jobdir = JobDir::create(&home).map_err(JobError::Workdir)?;
    *job_id = jobdir.id.clone();
    tracing::debug!(job = %jobdir.id, "job directory {}", jobdir.dir.display());

    let t = Instant::now();
    let ran = run_image(host, &home, &jobdir, 0, job, &image, &rootfs, on_line);
    progress.timings.run = t.elapsed().as_secs_f64();
    let (exited, view) = ran?;
    progress.exit_code = Some(exited.outcome.status.code());
    tracing::debug!("container done");
    if let Some(dst) = &options.keep_outputs {
        let out = jobdir.dir.join("0/data/out");
        let n = workdir::export_outputs(&out, dst).map_err(|source| JobError::Write {
            path: dst.clone(),
            source,
        })?;
        tracing::info!("kept {n} output files in {}", dst.display());
    }
    // Removing the container is cgroup work inside libcontainer, removing the job directory
    // is filesystem work: they overlap. (No container is being created meanwhile, so the
    // extra thread cannot meet libcontainer's clone.)
    let (deleted, cleaned) = std::thread::scope(|s| {
        let deleting = s.spawn(move || exited.delete());
        let cleaned = view
            .release()
            .and_then(|()| jobdir.remove().map_err(JobError::Workdir));
        (deleting.join(), cleaned)
    });
    let outcome = deleted
        .map_err(|_| JobError::Workdir(std::io::Error::other("container removal panicked")))??;
    cleaned?;
    tracing::debug!("job directory removed");
    Ok(outcome)
}

/// Runs image `n` of the job in its own bundle directory. The container has ended when this
/// returns, but it (and the rootfs view) still exist for the caller to remove.
#[allow(clippy::too_many_arguments)]
fn run_image<'h>(
    host: &'h dyn Host,
    home: &Home,
    jobdir: &JobDir,
    n: usize,
    job: &JobFile,
    image: &PulledImage,
    rootfs: &std::path::Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<(runtime::Exited, Mounted<'h>), JobError> {
    let dir = jobdir.image_dir(n).map_err(JobError::Workdir)?;
    let user = bundle::resolve_user(rootfs, image.config.config.user.as_deref())?;

    let config =
        config_file::config_json(&job.configuration, &job.component.image_parameters, "run");
    write_json(&dir.data.join("config.json"), &config)?;
    write_json(&dir.data.join("in/state.json"), &serde_json::json!({}))?;
    if user.uid != 0 || user.gid != 0 {
        for p in [&dir.data, &dir.tmp] {
            workdir::chown_tree(p, user.uid, user.gid).map_err(JobError::Workdir)?;
        }
    }

    let container_id = jobdir.container_id(n);
    let run_id = jobdir.id.clone();
    let env = config_file::environment(&RunIdentity {
        job,
        run_id: &run_id,
        component_id: &job.component.id,
        row_id: None,
        debug: false,
    });
    let cgroups = host.cgroups();
    for what in cgroups.unenforced() {
        tracing::warn!("this host cannot enforce the {what}");
    }
    let cgroups_path = format!("{}/{container_id}", runtime::CGROUP_PARENT);
    let hostname = bundle::hostname_for(&job.component.id);
    let limits = Limits {
        memory_bytes: job.component.memory.0,
        cpus: job.component.cpus,
        pids: crate::contract::job::DEFAULT_PIDS,
    };
    let spec = bundle::build(&bundle::BundleSpec {
        image: &image.config.config,
        user: &user,
        env: &env,
        data_dir: &dir.data,
        tmp_dir: &dir.tmp,
        hostname: &hostname,
        network: job.component.network,
        limits: &limits,
        cgroups_path: &cgroups_path,
        cgroups: &cgroups,
        nofile_limit: host.hard_nofile_limit(),
    })?;
    bundle::write(&spec, &dir.bundle)?;
    tracing::debug!("data folder and bundle written");

    let view = Mounted {
        view: Some(RootfsView::create(
            host,
            rootfs,
            &dir.upper,
            &dir.work,
            &dir.rootfs,
        )?),
        host,
    };
    tracing::debug!("rootfs view ready");
    let exited = runtime::run(
        host,
        &runtime::RunRequest {
            id: &container_id,
            bundle: &dir.bundle,
            state_root: &home.state_root(),
            cgroups_path: &cgroups_path,
            timeout: Duration::from_secs(job.main_timeout_secs()),
            loopback: job.component.network == NetworkMode::None,
        },
        on_line,
    )?;
    Ok((exited, view))
}

/// A job's rootfs view, unmounted however the job ends.
struct Mounted<'a> {
    view: Option<RootfsView>,
    host: &'a dyn Host,
}

impl Mounted<'_> {
    fn release(mut self) -> Result<(), JobError> {
        match self.view.take() {
            Some(v) => v.release(self.host).map_err(JobError::from),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Some(v) = self.view.take()
            && let Err(e) = v.release(self.host)
        {
            tracing::error!("{e}");
        }
    }
}

fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<(), JobError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(path, bytes).map_err(|source| JobError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Turns how the container ended into the job's status (contract §7).
fn classify(job: &JobFile, run: &RunOutcome) -> (Status, Option<ErrorClass>, String) {
    let id = &job.component.id;
    let code = run.status.code();
    if run.interrupted {
        return (
            Status::Error,
            Some(ErrorClass::Internal),
            "interrupted by the operator".to_owned(),
        );
    }
    if run.timed_out {
        return (
            Status::Error,
            Some(ErrorClass::User),
            format!(
                "component {id} exceeded the timeout of {} seconds",
                job.main_timeout_secs()
            ),
        );
    }
    if code != 0 && run.oom_killed {
        return (
            Status::Error,
            Some(ErrorClass::User),
            format!(
                "component {id} ran out of memory (limit {})",
                job.component.memory
            ),
        );
    }
    let output = || {
        let stderr = run.stderr.trim();
        let stdout = run.stdout_tail.trim();
        if !stderr.is_empty() {
            stderr.to_owned()
        } else if !stdout.is_empty() {
            stdout.to_owned()
        } else {
            "No error message.".to_owned()
        }
    };
    match code {
        0 => {
            if !run.stderr.trim().is_empty() {
                tracing::warn!(
                    "component {id} wrote to stderr: {}",
                    truncate_message(run.stderr.trim())
                );
            }
            (Status::Success, None, format!("component {id} finished"))
        }
        1 => (Status::Error, Some(ErrorClass::User), output()),
        _ => (
            Status::Error,
            Some(ErrorClass::Application),
            format!("component {id} failed with exit code {code}: {}", output()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ExitStatus;

    fn job() -> JobFile {
        JobFile::parse(
            br#"{"component": {"id": "acme.hello", "image": "x/y", "process_timeout": 7}}"#,
        )
        .unwrap()
    }

    fn outcome(status: ExitStatus) -> RunOutcome {
        RunOutcome {
            status,
            timed_out: false,
            oom_killed: false,
            interrupted: false,
            stdout_tail: String::new(),
            stderr: String::new(),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn exit_codes_map_to_classes() {
        let j = job();
        assert_eq!(
            classify(&j, &outcome(ExitStatus::Code(0))).0,
            Status::Success
        );
        let mut o = outcome(ExitStatus::Code(1));
        o.stdout_tail = "bad config".to_owned();
        assert_eq!(
            classify(&j, &o),
            (
                Status::Error,
                Some(ErrorClass::User),
                "bad config".to_owned()
            )
        );
        o.stderr = "real reason\n".to_owned();
        assert_eq!(classify(&j, &o).2, "real reason");
        assert_eq!(
            classify(&j, &outcome(ExitStatus::Code(1))).2,
            "No error message."
        );
        let (_, class, msg) = classify(&j, &outcome(ExitStatus::Code(3)));
        assert_eq!(class, Some(ErrorClass::Application));
        assert!(msg.contains("exit code 3"), "{msg}");
        let (_, class, msg) = classify(&j, &outcome(ExitStatus::Signal(11)));
        assert_eq!(class, Some(ErrorClass::Application));
        assert!(msg.contains("exit code 139"), "{msg}");
    }

    #[test]
    fn timeout_and_oom_are_user_errors() {
        let j = job();
        let mut o = outcome(ExitStatus::Signal(9));
        o.timed_out = true;
        let (_, class, msg) = classify(&j, &o);
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(
            msg,
            "component acme.hello exceeded the timeout of 7 seconds"
        );
        let mut o = outcome(ExitStatus::Signal(9));
        o.oom_killed = true;
        let (_, class, msg) = classify(&j, &o);
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(msg, "component acme.hello ran out of memory (limit 256m)");
    }

    #[test]
    fn bridge_network_is_refused_before_anything_runs() {
        let mut j = job();
        j.component.network = NetworkMode::Bridge;
        let d = tempfile::tempdir().unwrap();
        let settings = Settings {
            home: d.path().join("home"),
            cache: d.path().join("cache"),
            registry: RegistrySettings::default(),
        };
        let host = crate::host::fake::FakeHost::default();
        let r = run(&host, &settings, &j, &RunOptions::default(), &mut |_| {});
        assert_eq!(r.error_class, Some(ErrorClass::User));
        assert!(r.message.contains("bridge"), "{}", r.message);
        assert!(host.calls().is_empty());
    }
}
