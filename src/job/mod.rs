//! One job, start to end: pull → unpack → for each row: input mapping → data folder →
//! bundle → run → output mapping → … → one storage transaction → report.
//!
//! This is the only layer that knows the order of things. Everything it calls (image,
//! bundle, runtime, mapping, storage, host) knows nothing about jobs, and every resource it
//! creates — the job directory, the overlay mount, the container — is released on every way
//! out, including errors and Ctrl-C.
//!
//! All or nothing (contract §6): rows only *stage* their outputs; they are applied to
//! storage in one transaction after every row succeeded, together with the new states. A
//! failed job applies only the tables marked `write_always`.

pub mod gc;
pub mod workdir;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bundle::{self, BundleError, Limits};
use crate::contract::config_file::{self, RunIdentity};
use crate::contract::mapping::StorageConfig;
use crate::contract::result::{ImageSummary, OutputSummary, Status, Timings};
use crate::contract::{
    Configuration, ErrorClass, JobFile, JobResult, NetworkMode, truncate_message,
};
use crate::host::Host;
use crate::image::{ImageError, Images, Ownership, PulledImage, RegistrySettings, RootfsView};
use crate::mapping::output::{OutputContext, StagedOutputs};
use crate::mapping::{MappingError, StorageState};
use crate::runtime::{self, RunOutcome, RuntimeError};
use crate::storage::{Changes, JobRecord, SqliteStorage, StateKey, Storage, StorageError};
use workdir::{Home, JobDir};

/// Choices an operator makes for one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Copy what the component wrote to `/data/out` here after it ran (one directory per
    /// row when the configuration has rows).
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
    #[error("job file: {0}")]
    Contract(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("invalid out/state.json: {0}")]
    State(String),
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
            JobError::BridgeNetwork | JobError::Contract(_) | JobError::State(_) => {
                ErrorClass::User
            }
            JobError::Image(e) if e.is_user_error() => ErrorClass::User,
            JobError::Mapping(e) if e.is_user_error() => ErrorClass::User,
            JobError::Storage(e) if e.is_user_error() => ErrorClass::User,
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
    outputs: OutputSummary,
}

/// The project store, opened the first time a job needs it: a job that maps nothing and
/// keeps no state never touches it.
struct LazyStorage<'a> {
    root: &'a Path,
    opened: Option<SqliteStorage>,
}

impl LazyStorage<'_> {
    fn get(&mut self) -> Result<&dyn Storage, StorageError> {
        if self.opened.is_none() {
            self.opened = Some(SqliteStorage::open(self.root)?);
        }
        Ok(self
            .opened
            .as_ref()
            .map(|s| s as &dyn Storage)
            .expect("opened above"))
    }
}

/// Where the embedded project store lives under a berth home.
pub fn storage_dir(home: &Path) -> PathBuf {
    home.join("storage")
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
    let started_ms = crate::mapping::time::now_ms();
    let mut progress = Progress::default();
    let mut job_id = String::new();
    let storage_root = storage_dir(&settings.home);
    let mut storage = LazyStorage {
        root: &storage_root,
        opened: None,
    };
    let outcome = run_inner(
        host,
        settings,
        job,
        options,
        on_line,
        &mut progress,
        &mut job_id,
        &mut storage,
    );
    progress.timings.total = started.elapsed().as_secs_f64();
    let (status, error_class, message) = match outcome {
        Ok(Verdict {
            status,
            class,
            message,
        }) => (status, class, message),
        Err(e) => {
            let e = if crate::interrupt::requested() {
                JobError::Interrupted
            } else {
                e
            };
            (Status::Error, Some(e.class()), e.to_string())
        }
    };
    let result = JobResult {
        job_id,
        status,
        error_class,
        message: truncate_message(&message),
        exit_code: progress.exit_code,
        image: progress.image,
        outputs: progress.outputs,
        timings: progress.timings,
    };
    if let Some(s) = &storage.opened {
        let record = JobRecord {
            id: result.job_id.clone(),
            component: job.component.id.clone(),
            config: job.config_id.clone(),
            status: match result.status {
                Status::Success => crate::storage::JobStatus::Success,
                Status::Error => crate::storage::JobStatus::Error,
            },
            started_ms,
            finished_ms: crate::mapping::time::now_ms(),
            result: serde_json::to_value(&result).unwrap_or(Value::Null),
        };
        if let Err(e) = s.record_job(&record) {
            tracing::warn!("cannot record job {}: {e}", result.job_id);
        }
    }
    result
}

/// How the job ended, when it got to run its containers.
#[derive(Debug)]
struct Verdict {
    status: Status,
    class: Option<ErrorClass>,
    message: String,
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    host: &dyn Host,
    settings: &Settings,
    job: &JobFile,
    options: &RunOptions,
    on_line: &mut dyn FnMut(&str),
    progress: &mut Progress,
    job_id: &mut String,
    storage: &mut LazyStorage<'_>,
) -> Result<Verdict, JobError> {
    if job.component.network == NetworkMode::Bridge {
        return Err(JobError::BridgeNetwork);
    }
    let rows = job.row_configurations().map_err(JobError::Contract)?;
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
    let cgroups = host.cgroups();
    for what in cgroups.unenforced() {
        tracing::warn!("this host cannot enforce the {what}");
    }

    let mut staged = Vec::new();
    let mut states: Vec<(StateKey, Option<Value>)> = Vec::new();
    let mut verdict = None;
    for (n, (row_id, config)) in rows.iter().enumerate() {
        let row = RowRun {
            host,
            home: &home,
            jobdir: &jobdir,
            n,
            job,
            row_id: row_id.as_deref(),
            config,
            image: &image,
            rootfs: &rootfs,
            keep_outputs: options.keep_outputs.as_deref(),
            multiple_rows: rows.len() > 1,
        };
        let t = Instant::now();
        let ran = row.run(storage, on_line, progress);
        progress.timings.run += t.elapsed().as_secs_f64();
        let ended = ran?;
        staged.push(ended.outputs);
        if let Some(s) = ended.state {
            states.push(s);
        }
        if ended.verdict.status == Status::Error {
            verdict = Some(ended.verdict);
            break;
        }
    }

    let t = Instant::now();
    let verdict = match verdict {
        Some(failure) => {
            // Only tables marked write_always survive a failed job; files and states never.
            let changes = Changes {
                tables: staged
                    .into_iter()
                    .flat_map(|s| s.tables)
                    .filter(|t| t.write_always)
                    .map(|t| t.load)
                    .collect(),
                ..Default::default()
            };
            if !changes.tables.is_empty() {
                match storage.get().and_then(|s| s.apply(&changes)) {
                    Ok(report) => progress.outputs.record(&report),
                    Err(e) => tracing::error!(
                        "cannot write the write_always tables of the failed job: {e}"
                    ),
                }
            }
            failure
        }
        None => {
            let changes = Changes {
                tables: staged
                    .iter_mut()
                    .flat_map(|s| s.tables.drain(..))
                    .map(|t| t.load)
                    .collect(),
                files: staged.iter_mut().flat_map(|s| s.files.drain(..)).collect(),
                states,
            };
            if !(changes.tables.is_empty() && changes.files.is_empty() && changes.states.is_empty())
            {
                tracing::info!(
                    "committing {} tables, {} files and {} states to storage",
                    changes.tables.len(),
                    changes.files.len(),
                    changes.states.len()
                );
                let report = storage.get()?.apply(&changes)?;
                progress.outputs.record(&report);
            }
            let id = &job.component.id;
            Verdict {
                status: Status::Success,
                class: None,
                message: format!("component {id} finished"),
            }
        }
    };
    progress.timings.mapping += t.elapsed().as_secs_f64();
    jobdir.remove().map_err(JobError::Workdir)?;
    tracing::debug!("job directory removed");
    Ok(verdict)
}

/// What one row left behind: its verdict, staged outputs and new state.
struct RowEnd {
    verdict: Verdict,
    outputs: StagedOutputs,
    state: Option<(StateKey, Option<Value>)>,
}

/// One row of a job: everything needed to run it.
struct RowRun<'a> {
    host: &'a dyn Host,
    home: &'a Home,
    jobdir: &'a JobDir,
    n: usize,
    job: &'a JobFile,
    row_id: Option<&'a str>,
    config: &'a Configuration,
    image: &'a PulledImage,
    rootfs: &'a Path,
    keep_outputs: Option<&'a Path>,
    multiple_rows: bool,
}

impl RowRun<'_> {
    fn run(
        &self,
        storage: &mut LazyStorage<'_>,
        on_line: &mut dyn FnMut(&str),
        progress: &mut Progress,
    ) -> Result<RowEnd, JobError> {
        let job = self.job;
        let dir = self.jobdir.image_dir(self.n).map_err(JobError::Workdir)?;
        let user = bundle::resolve_user(self.rootfs, self.image.config.config.user.as_deref())?;
        let storage_config: StorageConfig = self.config.storage.clone().unwrap_or_default();

        // The state this row starts from, when it has one.
        let key = job.config_id.as_ref().map(|config| StateKey {
            component: job.component.id.clone(),
            config: config.clone(),
            row: self.row_id.map(str::to_owned),
        });
        let previous = match &key {
            Some(k) => storage.get()?.state(k)?,
            None => None,
        };
        let (component_state, storage_state) = split_state(previous.clone());

        let t = Instant::now();
        let input = &storage_config.input;
        let input_state = if input.tables.is_empty() && input.files.is_empty() {
            Default::default()
        } else {
            crate::mapping::input::stage_inputs(
                storage.get()?,
                input,
                &dir.data,
                &storage_state.input,
                crate::mapping::time::now_ms(),
            )?
            .state
        };
        progress.timings.mapping += t.elapsed().as_secs_f64();

        let config = config_file::config_json(self.config, &job.component.image_parameters, "run");
        write_json(&dir.data.join("config.json"), &config)?;
        write_json(&dir.data.join("in/state.json"), &component_state)?;
        if user.uid != 0 || user.gid != 0 {
            for p in [&dir.data, &dir.tmp] {
                workdir::chown_tree(p, user.uid, user.gid).map_err(JobError::Workdir)?;
            }
        }

        let (exited, view) = self.start(&dir, &user, on_line)?;
        progress.exit_code = Some(exited.outcome.status.code());
        let verdict = classify(job, &exited.outcome);
        let failed = verdict.status == Status::Error;
        tracing::debug!("container done");

        if let Some(keep) = self.keep_outputs {
            let dst = match (self.multiple_rows, self.row_id) {
                (true, Some(r)) => keep.join(r),
                _ => keep.to_owned(),
            };
            let n = workdir::export_outputs(&dir.data.join("out"), &dst).map_err(|source| {
                JobError::Write {
                    path: dst.clone(),
                    source,
                }
            })?;
            tracing::info!("kept {n} output files in {}", dst.display());
        }

        // Overlapped: removing the container is cgroup work inside libcontainer; staging the
        // outputs and removing the rootfs view is file work here. (No container is being
        // created meanwhile, so the extra thread cannot meet libcontainer's clone.)
        let t = Instant::now();
        let out_ctx = OutputContext {
            component_id: &job.component.id,
            config_id: job.config_id.as_deref(),
            row_id: self.row_id,
            run_id: &self.jobdir.id,
            component_default_bucket: job.component.default_bucket,
        };
        let staging = self.jobdir.staging(self.n);
        let (deleted, collected) = std::thread::scope(|s| {
            let deleting = s.spawn(move || exited.delete());
            let collected = view.release().and_then(|()| {
                let staged = crate::mapping::output::collect_outputs(
                    &dir.data.join("out"),
                    &storage_config.output,
                    &out_ctx,
                    &staging,
                    failed,
                )?;
                let state = if failed {
                    None
                } else {
                    read_out_state(&dir.data)?
                };
                self.jobdir
                    .remove_image(self.n)
                    .map_err(JobError::Workdir)?;
                Ok((staged, state))
            });
            (deleting.join(), collected)
        });
        deleted.map_err(|_| {
            JobError::Workdir(std::io::Error::other("container removal panicked"))
        })??;
        progress.timings.mapping += t.elapsed().as_secs_f64();
        let (outputs, component_out) = match collected {
            Ok(c) => c,
            // The component's own failure explains more than what it left behind.
            Err(e) if failed => {
                tracing::warn!("{e}");
                (StagedOutputs::default(), None)
            }
            Err(e) => return Err(e),
        };
        let state = match (key, failed) {
            (Some(k), false) => {
                let value = json!({
                    "component": component_out.unwrap_or_else(|| json!({})),
                    "storage": StorageState { input: input_state },
                });
                // An unchanged state needs no write (and no fsync on the job's way out).
                (previous.as_ref() != Some(&value)).then_some((k, Some(value)))
            }
            _ => None,
        };
        Ok(RowEnd {
            verdict,
            outputs,
            state,
        })
    }

    /// Writes the bundle, mounts the rootfs view and runs the container to its end.
    fn start<'h>(
        &'h self,
        dir: &workdir::ImageDir,
        user: &bundle::ContainerUser,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(runtime::Exited, Mounted<'h>), JobError> {
        let job = self.job;
        let host = self.host;
        let container_id = self.jobdir.container_id(self.n);
        let env = config_file::environment(&RunIdentity {
            job,
            run_id: &self.jobdir.id,
            component_id: &job.component.id,
            row_id: self.row_id,
            debug: false,
        });
        let cgroups = host.cgroups();
        let cgroups_path = format!("{}/{container_id}", runtime::CGROUP_PARENT);
        let hostname = bundle::hostname_for(&job.component.id);
        let limits = Limits {
            memory_bytes: job.component.memory.0,
            cpus: job.component.cpus,
            pids: crate::contract::job::DEFAULT_PIDS,
        };
        let spec = bundle::build(&bundle::BundleSpec {
            image: &self.image.config.config,
            user,
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
                self.rootfs,
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
                state_root: &self.home.state_root(),
                cgroups_path: &cgroups_path,
                timeout: Duration::from_secs(job.main_timeout_secs()),
                loopback: job.component.network == NetworkMode::None,
            },
            on_line,
        )?;
        Ok((exited, view))
    }
}

/// A stored state is `{component, storage}`: the component's own part, and berth's
/// bookkeeping for adaptive mappings.
fn split_state(stored: Option<Value>) -> (Value, StorageState) {
    let Some(Value::Object(mut map)) = stored else {
        return (json!({}), StorageState::default());
    };
    let component = match map.remove("component") {
        Some(v @ Value::Object(_)) => v,
        Some(Value::Array(a)) if a.is_empty() => json!({}),
        Some(other) if !other.is_null() => other,
        _ => json!({}),
    };
    let storage = map
        .remove("storage")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    (component, storage)
}

/// The state a component left in `out/state.json`: missing or empty clears it.
fn read_out_state(data: &Path) -> Result<Option<Value>, JobError> {
    let path = data.join("out/state.json");
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(JobError::Write { path, source }),
    };
    if !meta.is_file() {
        return Err(JobError::State(
            "it must be a regular file (not a symlink or directory)".into(),
        ));
    }
    if meta.len() > 64 << 20 {
        return Err(JobError::State(format!(
            "{} bytes is too large for a state",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&path).map_err(|source| JobError::Write { path, source })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| JobError::State(e.to_string()))?;
    Ok(match value {
        Value::Null => None,
        Value::Array(a) if a.is_empty() => None,
        v => Some(v),
    })
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

fn write_json(path: &Path, value: &Value) -> Result<(), JobError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(path, bytes).map_err(|source| JobError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Turns how the container ended into the job's status (contract §7).
fn classify(job: &JobFile, run: &RunOutcome) -> Verdict {
    let (status, class, message) = classify_parts(job, run);
    Verdict {
        status,
        class,
        message,
    }
}

fn classify_parts(job: &JobFile, run: &RunOutcome) -> (Status, Option<ErrorClass>, String) {
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
        }
    }

    #[test]
    fn exit_codes_map_to_classes() {
        let j = job();
        assert_eq!(
            classify_parts(&j, &outcome(ExitStatus::Code(0))).0,
            Status::Success
        );
        let mut o = outcome(ExitStatus::Code(1));
        o.stdout_tail = "bad config".to_owned();
        assert_eq!(
            classify_parts(&j, &o),
            (
                Status::Error,
                Some(ErrorClass::User),
                "bad config".to_owned()
            )
        );
        o.stderr = "real reason\n".to_owned();
        assert_eq!(classify_parts(&j, &o).2, "real reason");
        assert_eq!(
            classify_parts(&j, &outcome(ExitStatus::Code(1))).2,
            "No error message."
        );
        let (_, class, msg) = classify_parts(&j, &outcome(ExitStatus::Code(3)));
        assert_eq!(class, Some(ErrorClass::Application));
        assert!(msg.contains("exit code 3"), "{msg}");
        let (_, class, msg) = classify_parts(&j, &outcome(ExitStatus::Signal(11)));
        assert_eq!(class, Some(ErrorClass::Application));
        assert!(msg.contains("exit code 139"), "{msg}");
    }

    #[test]
    fn timeout_and_oom_are_user_errors() {
        let j = job();
        let mut o = outcome(ExitStatus::Signal(9));
        o.timed_out = true;
        let (_, class, msg) = classify_parts(&j, &o);
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(
            msg,
            "component acme.hello exceeded the timeout of 7 seconds"
        );
        let mut o = outcome(ExitStatus::Signal(9));
        o.oom_killed = true;
        let (_, class, msg) = classify_parts(&j, &o);
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
