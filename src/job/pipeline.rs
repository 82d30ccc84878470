//! The job as a whole: image, rows in order, the one commit, the result and its record.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;

use super::lazy_storage::LazyStorage;
use super::processors::{self, ProcessorImage, ProcessorImages};
use super::progress::Progress;
use super::row::{RowContext, RowEnd, RowRun};
use super::running::{self, RunningNote};
use super::vault::Vault;
use super::verdict::Verdict;
use super::workdir::{Home, JobDir};
use super::{CommitMode, JobError, RunOptions, Services, Settings};
use crate::contract::result::{Cage, ImageSummary, Status, Variable};
use crate::contract::{JobFile, JobResult, UserNamespace, truncate_message};
use crate::host::IdMap;
use crate::image::{Images, PulledImage, Puller, Unpacker, Unpacking};
use crate::mapping::output::StagedOutputs;
use crate::storage::{Changes, JobRecord, JobStatus, StateKey, Storage, StorageError};

/// What the rows left for the commit.
#[derive(Debug, Default)]
struct Rows {
    staged: Vec<StagedOutputs>,
    states: Vec<(StateKey, Option<Value>)>,
    /// The versions the written states were read at.
    state_versions: Vec<(StateKey, u64)>,
    /// The verdict of the row that failed, which ends the job.
    failure: Option<Verdict>,
    /// The rows committed already, one by one (`--commit row`).
    committed: Vec<String>,
}

/// One job: what it runs on, what it was asked, and what it has done so far.
#[derive(Debug)]
pub(super) struct JobRun<'a> {
    svc: Services<'a>,
    settings: &'a Settings,
    job: &'a JobFile,
    options: &'a RunOptions,
    progress: Progress,
    storage: LazyStorage,
    /// The job's secrets, which every message it reports is masked with.
    vault: Vault,
    /// The job's id: given (`--job-id`, Slurm's), or the job directory's.
    job_id: String,
    started_ms: i64,
}

impl<'a> JobRun<'a> {
    pub fn new(
        svc: Services<'a>,
        settings: &'a Settings,
        job: &'a JobFile,
        options: &'a RunOptions,
    ) -> JobRun<'a> {
        JobRun {
            svc,
            settings,
            job,
            options,
            progress: Progress::default(),
            storage: LazyStorage::new(settings.store.clone()),
            vault: Vault::for_store(settings.secrets_key(), settings.store.is_shared()),
            job_id: job_id(options),
            started_ms: crate::util::unix_ms(),
        }
    }

    /// Runs the job and reports it; the job is recorded in storage when it touched it.
    pub fn run(self, on_line: &mut dyn FnMut(&str)) -> JobResult {
        self.run_keeping_stderr(on_line).0
    }

    /// [`JobRun::run`], with what the last container wrote to stderr (datadir mode only).
    pub fn run_keeping_stderr(mut self, on_line: &mut dyn FnMut(&str)) -> (JobResult, String) {
        let started = Instant::now();
        self.started_ms = crate::util::unix_ms();
        let outcome = self.execute(on_line);
        self.progress.timings.total = started.elapsed().as_secs_f64();
        let verdict = outcome.unwrap_or_else(|e| {
            let e = if crate::interrupt::requested() {
                JobError::Interrupted
            } else {
                e
            };
            Verdict {
                status: Status::Error,
                class: Some(e.class()),
                message: crate::util::chain(&e),
            }
        });
        let mut image = self.progress.image;
        if let Some(image) = &mut image {
            image.stages = std::mem::take(&mut self.progress.stages);
        }
        let result = JobResult {
            job_id: self.job_id,
            status: verdict.status,
            error_class: verdict.class,
            message: truncate_message(&self.vault.mask(&verdict.message)),
            exit_code: self.progress.exit_code,
            image,
            cage: self.progress.cage,
            outputs: self.progress.outputs,
            timings: self.progress.timings,
            already_committed: self.progress.already_committed,
            usage: self.progress.usage,
            variables: self.progress.variables,
        };
        // A job id that committed before keeps its record as it was.
        if !result.already_committed {
            let explicit = self.options.job_id.is_some();
            let opened = self.storage.opened().is_some();
            let storage = match (opened, explicit) {
                (false, false) => None,
                _ => self.storage.get().ok(),
            };
            record(storage, self.job, &result, self.started_ms);
        }
        (result, self.progress.stderr)
    }

    fn execute(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<Verdict, JobError> {
        // An action answers for the configuration, not for each of its rows; a given data
        // folder is one run.
        let whole = self.options.action.is_some() || self.options.datadir.is_some();
        let rows = match whole {
            true => vec![(None, self.job.configuration.clone())],
            false => self.job.row_configurations().map_err(JobError::Contract)?,
        };
        let (mut rows, used) = super::variables::resolve_rows(self.job, rows, &mut self.storage)?;
        self.progress.variables = (used.into_iter())
            .map(|(name, value)| Variable { name, value })
            .collect();
        crate::contract::validate::check_configurations(&self.job.component, &rows)?;
        if let Some(done) = self.committed_before()? {
            return Ok(done);
        }
        if rows.is_empty() {
            // As in the original: every row is disabled, nothing runs, and that is fine.
            tracing::info!("every row is disabled: nothing to run");
            return Ok(Verdict::success(&self.job.component.id));
        }
        let component = &self.job.component.id;
        super::stored::fill_oauth_credentials(&mut self.storage, component, &mut rows)?;
        // Before any image is pulled: a processor that cannot run fails the job at once.
        let wanted = processors::wanted(self.job, &rows, whole)?;
        let ids = self.ids();
        if let Some(cgroup) = self.svc.host.cgroups().undelegated {
            return Err(JobError::Undelegated { cgroup });
        }
        // A container of its own user namespace reaches its bundle and data folder as an
        // id that is nobody on the host (a rootless berth's containers are the operator).
        let nobody = ids.is_some() && self.svc.host.rootless().is_none();
        if let Some(dir) = Home::new(&self.settings.home)
            .closed_ancestor()
            .filter(|_| nobody)
        {
            return Err(JobError::HomeUnreachable { dir });
        }
        let unenforced = self.progress.cage.as_ref().map(|c| &c.unenforced);
        if let Some(missing) = unenforced.filter(|m| self.options.strict_limits && !m.is_empty()) {
            return Err(JobError::Unenforced(missing.clone()));
        }
        let settings = self.settings;
        let images = self.images()?;
        let unpacking = Unpacking::new(self.svc.host.privileged(), ids);
        let holder = format!("a job of component {}", self.job.component.id);
        let unpacker = images.unpacker(unpacking, settings.unpack_caps, &holder);
        let puller = settings.puller(&images, &unpacker);
        let (image, rootfs) = self.prepare_image(&puller, &unpacker)?;
        let processor_images = self.prepare_processors(&puller, &unpacker, &wanted)?;
        let home = Home::new(&self.settings.home);
        let (jobdir, running) = self.job_dir(&home, &image.reference)?;
        let job_id = self.job_id.clone();
        tracing::debug!(job = %jobdir.id, "job directory {}", jobdir.dir.display());
        let ctx = RowContext {
            svc: self.svc,
            copy_rootfs: self.settings.copy_rootfs,
            ids,
            home: &home,
            jobdir: &jobdir,
            job_id: &job_id,
            running: &running,
            job: self.job,
            image: &image,
            rootfs: &rootfs,
            keep_outputs: self.options.keep_outputs.as_deref(),
            multiple_rows: rows.len() > 1,
            action: self.options.action.as_deref(),
            debug: self.options.debug,
            allow_host_access: self.options.allow_host_access,
            proxy_env: &self.options.proxy_env,
            datadir: self.options.datadir.as_ref(),
        };
        let done = self.run_rows(&ctx, &rows, &processor_images, on_line)?;
        let verdict = self.commit(done)?;
        jobdir.remove().map_err(JobError::Workdir)?;
        tracing::debug!("job directory removed");
        Ok(verdict)
    }

    /// The job's directory — named by the job's id unless the operator gave one — with the
    /// notes a later berth reads there: where its containers' cgroups go, and what `berth
    /// ps` shows about it.
    fn job_dir(&mut self, home: &Home, image: &str) -> Result<(JobDir, RunningNote), JobError> {
        let fresh = self.options.job_id.is_none();
        let preferred = fresh.then_some(self.job_id.as_str());
        let jobdir = JobDir::create_as(home, preferred).map_err(JobError::Workdir)?;
        super::gc::note_cgroups(&jobdir.dir, &self.svc.host.cgroup_places())
            .map_err(JobError::Workdir)?;
        if fresh && jobdir.id != self.job_id {
            // Its name was taken (a sweep held it): the job takes its directory's.
            self.job_id.clone_from(&jobdir.id);
            crate::util::set_log_job(&self.job_id);
        }
        let record = running::record_of_this_berth(
            &self.job_id,
            &self.job.component.id,
            self.job.config_id.as_deref(),
            image,
            self.svc.host.rootless().map(|r| r.uid),
        );
        let running = RunningNote::start(&jobdir.dir, record);
        Ok((jobdir, running))
    }

    /// The container's ids on the host: the operator's range, unless the component opts
    /// out (which the result shows, and the log says).
    fn ids(&mut self) -> Option<IdMap> {
        let mode = self.job.component.user_namespace;
        let ids = match mode {
            UserNamespace::Private => self.settings.ids,
            UserNamespace::Host => {
                tracing::warn!(
                    "component {} runs with the host's ids: root in it is root on the host",
                    self.job.component.id
                );
                None
            }
        };
        let seccomp = self.job.component.seccomp;
        if !seccomp.is_default() {
            tracing::warn!(
                "component {} runs without a seccomp filter: every system call is open to it",
                self.job.component.id
            );
        }
        let unenforced = self.svc.host.cgroups().unenforced();
        for what in &unenforced {
            tracing::warn!("this host cannot enforce the {what}");
        }
        let rootless = self.svc.host.rootless();
        // What the operator can find on the host: a rootless berth's container ids are ids
        // of its own namespace, which are the operator's subordinate range outside.
        let host_ids = match rootless {
            Some(r) => ids.map(|_| r.host_ids()),
            None => ids.map(|m| m.to_string()),
        };
        self.progress.cage = Some(Cage {
            user_namespace: mode,
            id_range: host_ids,
            unenforced: unenforced.into_iter().map(str::to_owned).collect(),
            disk_limit: self.job.component.disk,
            seccomp,
            rootless: rootless.is_some(),
            host_access: self.options.allow_host_access
                && self.job.component.network == crate::contract::NetworkMode::Bridge,
        });
        ids
    }

    /// The image store, without what dead berths left in it.
    fn images(&self) -> Result<Images, JobError> {
        let images =
            Images::open(&self.settings.cache)?.with_lock_wait(self.settings.registry.pull_timeout);
        images.sweep_leftovers();
        Ok(images)
    }

    /// Pulls the image (asking the registry only what it must) and unpacks it.
    fn prepare_image(
        &mut self,
        puller: &Puller<'_>,
        unpacker: &Unpacker<'_>,
    ) -> Result<(PulledImage, PathBuf), JobError> {
        let t = Instant::now();
        let image = puller.pull(&self.job.image_reference())?;
        self.progress.timings.pull = t.elapsed().as_secs_f64();
        self.progress.image = Some(ImageSummary {
            reference: image.reference.clone(),
            digest: image.digest.to_string(),
            fetched_blobs: image.fetched_blobs,
            fetched_bytes: image.fetched_bytes,
            stages: Vec::new(),
        });
        let t = Instant::now();
        let (rootfs, _) = unpacker.rootfs(&image)?;
        self.progress.timings.unpack = t.elapsed().as_secs_f64();
        tracing::debug!("image ready");
        Ok((image, rootfs))
    }

    /// Pulls and unpacks the processors' images (`wanted`: component id and reference).
    fn prepare_processors(
        &mut self,
        puller: &Puller<'_>,
        unpacker: &Unpacker<'_>,
        wanted: &[(String, String)],
    ) -> Result<ProcessorImages, JobError> {
        let mut prepared = ProcessorImages::new();
        for (id, reference) in wanted {
            tracing::info!("pulling {reference} for {id}");
            let t = Instant::now();
            let image = puller.pull(reference)?;
            self.progress.timings.pull += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (rootfs, _) = unpacker.rootfs(&image)?;
            self.progress.timings.unpack += t.elapsed().as_secs_f64();
            prepared.insert(reference.clone(), ProcessorImage { image, rootfs });
        }
        Ok(prepared)
    }

    /// Runs the rows in order until one fails; their outputs are only staged — or, in
    /// per-row commit mode, committed as each row succeeds. Each row's images (its
    /// processors and the component) get the next job image numbers.
    fn run_rows(
        &mut self,
        ctx: &RowContext<'_>,
        rows: &[(Option<String>, crate::contract::Configuration)],
        processor_images: &ProcessorImages,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Rows, JobError> {
        let mut done = Rows::default();
        let mut n = 0;
        for (row_id, config) in rows {
            let main = (ctx.image, ctx.rootfs);
            // An action, or a given data folder, runs the component alone.
            let alone = ctx.action.is_some() || ctx.datadir.is_some();
            let chain = processors::chain(self.job, config, main, processor_images, alone)?;
            let row = RowRun {
                ctx,
                n,
                row_id: row_id.as_deref(),
                config,
            };
            n += chain.len();
            let per_row = row_id.as_deref().filter(|_| self.commits_per_row());
            if let Some(id) = row_id.as_deref().filter(|_| self.commits_outputs())
                && self.row_committed_before(id)?
            {
                continue;
            }
            let t = Instant::now();
            let ran = row.run(
                &chain,
                &mut self.storage,
                &mut self.vault,
                on_line,
                &mut self.progress,
            );
            self.progress.timings.run += t.elapsed().as_secs_f64();
            let RowEnd {
                verdict,
                outputs,
                state,
                state_version,
            } = ran?;
            let versions = (state.as_ref()).map(|(key, _)| (key.clone(), state_version));
            if let Some(id) = per_row.filter(|_| !verdict.failed()) {
                let changes = changes(vec![outputs], state.into_iter().collect(), versions);
                self.commit_row(id, changes)?;
                done.committed.push(id.to_owned());
                continue;
            }
            done.staged.push(outputs);
            done.state_versions.extend(versions);
            done.states.extend(state);
            if verdict.failed() {
                done.failure = Some(verdict);
                break;
            }
        }
        Ok(done)
    }

    /// Whether rows commit one by one (`--commit row`).
    fn commits_per_row(&self) -> bool {
        self.options.commit == CommitMode::Row && self.commits_outputs()
    }

    /// Whether the run commits outputs at all: an action, a data folder given whole and
    /// debug mode do not.
    fn commits_outputs(&self) -> bool {
        let o = self.options;
        o.action.is_none() && o.datadir.is_none() && !o.debug
    }

    /// The record a row commits with in per-row mode: the job's id, `/rows/` and the row's
    /// (a job id has no `/`, so no job's own record can be taken for it).
    fn row_record(&self, row_id: &str) -> JobRecord {
        let result = serde_json::json!({"job_id": self.job_id, "row": row_id, "status": "success"});
        self.success_record(self.row_record_id(row_id), result)
    }

    fn row_record_id(&self, row_id: &str) -> String {
        format!("{}/rows/{row_id}", self.job_id)
    }

    /// The record of a success committed under `id`, with what it says of it.
    fn success_record(&self, id: String, result: Value) -> JobRecord {
        JobRecord {
            id,
            component: self.job.component.id.clone(),
            config: self.job.config_id.clone(),
            status: JobStatus::Success,
            host: crate::util::hostname(),
            started_ms: self.started_ms,
            finished_ms: crate::util::unix_ms(),
            result,
        }
    }

    /// Whether a row of a given job id committed in an earlier run of it (in per-row mode):
    /// a requeue after a later row's node died runs only the rows that did not, in either
    /// mode.
    fn row_committed_before(&mut self, row_id: &str) -> Result<bool, JobError> {
        if self.options.job_id.is_none() {
            return Ok(false);
        }
        let id = self.row_record_id(row_id);
        let committed =
            (self.storage.get()?.job(&id)?).is_some_and(|r| r.status == JobStatus::Success);
        if committed {
            tracing::info!("row {row_id} committed already in an earlier run: skipped");
        }
        Ok(committed)
    }

    /// Commits one row's outputs and state with the row's record (per-row mode).
    fn commit_row(&mut self, row_id: &str, mut changes: Changes) -> Result<(), JobError> {
        tracing::info!(
            "committing row {row_id}: {} tables, {} files and {} states",
            changes.tables.len(),
            changes.files.len(),
            changes.states.len()
        );
        changes.job = Some(self.row_record(row_id));
        match self.storage.get()?.apply(&changes) {
            Ok(report) => self.progress.record(&report),
            Err(StorageError::AlreadyCommitted { .. }) => {
                tracing::warn!("row {row_id} committed already, elsewhere: nothing applied");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Applies what the rows staged in one transaction: everything after a success, only
    /// the `write_always` tables after a failure (files and states never).
    fn commit(&mut self, done: Rows) -> Result<Verdict, JobError> {
        if self.options.debug {
            // No output mapping, no state (contract §13): the archives are stored already.
            return Ok(done
                .failure
                .unwrap_or_else(|| Verdict::success(&self.job.component.id)));
        }
        let t = Instant::now();
        let verdict = match done.failure {
            Some(failure) => {
                if !done.committed.is_empty() {
                    tracing::warn!(
                        "rows committed before the failure stay in storage: {}",
                        done.committed.join(", ")
                    );
                }
                self.commit_write_always(done.staged);
                failure
            }
            None => {
                self.commit_all(done.staged, done.states, done.state_versions)?;
                if self.progress.already_committed {
                    already_committed(&self.job_id, None)
                } else {
                    Verdict::success(&self.job.component.id)
                }
            }
        };
        self.progress.timings.mapping += t.elapsed().as_secs_f64();
        Ok(verdict)
    }

    fn commit_write_always(&mut self, staged: Vec<StagedOutputs>) {
        let changes = Changes {
            tables: staged
                .into_iter()
                .flat_map(|s| s.tables)
                .filter(|t| t.write_always)
                .map(|t| t.load)
                .collect(),
            ..Default::default()
        };
        if changes.tables.is_empty() {
            return;
        }
        match self.storage.get().and_then(|s| s.apply(&changes)) {
            Ok(report) => self.progress.record(&report),
            Err(e) => tracing::error!(
                "cannot write the write_always tables of the failed job: {}",
                crate::util::chain(&e)
            ),
        }
    }

    fn commit_all(
        &mut self,
        staged: Vec<StagedOutputs>,
        states: Vec<(StateKey, Option<Value>)>,
        state_versions: Vec<(StateKey, u64)>,
    ) -> Result<(), JobError> {
        let mut changes = changes(staged, states, state_versions);
        let nothing = changes.file_tags.is_empty() && changes.states.is_empty();
        let untouched = self.storage.opened().is_none() && self.options.job_id.is_none();
        if changes.tables.is_empty() && changes.files.is_empty() && nothing && untouched {
            return Ok(());
        }
        tracing::info!(
            "committing {} tables, {} files and {} states to storage",
            changes.tables.len(),
            changes.files.len(),
            changes.states.len()
        );
        // The job's success is recorded in the same transaction: its id commits once.
        let result = serde_json::json!({"job_id": self.job_id, "status": "success"});
        changes.job = Some(self.success_record(self.job_id.clone(), result));
        match self.storage.get()?.apply(&changes) {
            Ok(report) => self.progress.record(&report),
            Err(StorageError::AlreadyCommitted { job }) => {
                tracing::warn!("job {job} committed already, elsewhere: nothing applied");
                self.progress.already_committed = true;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// When the job's id (given, not made up) committed before — a requeue after its node
    /// died after the commit — the job is done: nothing runs, nothing is applied again.
    fn committed_before(&mut self) -> Result<Option<Verdict>, JobError> {
        let Some(id) = self.options.job_id.as_deref() else {
            return Ok(None);
        };
        let Some(record) = self.storage.get()?.job(id)? else {
            return Ok(None);
        };
        if record.status != JobStatus::Success {
            return Ok(None);
        }
        tracing::info!(
            "job {id} committed already on {}: nothing to do",
            record.host
        );
        self.progress.already_committed = true;
        Ok(Some(already_committed(id, Some(&record.host))))
    }
}

/// What rows staged, as one set of changes to apply.
fn changes(
    staged: Vec<StagedOutputs>,
    states: Vec<(StateKey, Option<Value>)>,
    state_versions: impl IntoIterator<Item = (StateKey, u64)>,
) -> Changes {
    let mut changes = Changes {
        states,
        state_versions: state_versions.into_iter().collect(),
        ..Default::default()
    };
    for s in staged {
        changes.tables.extend(s.tables.into_iter().map(|t| t.load));
        changes.files.extend(s.files);
        changes.file_tags.extend(s.file_tags);
    }
    changes
}

/// The verdict of a run whose job id committed before.
fn already_committed(id: &str, host: Option<&str>) -> Verdict {
    let on = host
        .filter(|h| !h.is_empty())
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    Verdict {
        status: Status::Success,
        class: None,
        message: format!("job {id} committed already{on}; nothing was applied again"),
    }
}

/// The job's id — the operator's, the caller's fresh one, or a new one — which every line
/// logged from now on names.
fn job_id(options: &RunOptions) -> String {
    let id = (options.job_id.clone())
        .or_else(|| options.fresh_id.clone())
        .unwrap_or_else(super::workdir::new_id);
    crate::util::set_log_job(&id);
    id
}

/// Keeps a record of the job in storage, if the job opened it.
fn record(storage: Option<&dyn Storage>, job: &JobFile, result: &JobResult, started_ms: i64) {
    let Some(s) = storage else {
        return;
    };
    let record = JobRecord {
        id: result.job_id.clone(),
        component: job.component.id.clone(),
        config: job.config_id.clone(),
        status: match result.status {
            Status::Success => JobStatus::Success,
            Status::Error => JobStatus::Error,
        },
        host: crate::util::hostname(),
        started_ms,
        finished_ms: crate::util::unix_ms(),
        result: serde_json::to_value(result).unwrap_or(Value::Null),
    };
    if let Err(e) = s.record_job(&record) {
        tracing::warn!(
            "cannot record job {}: {}",
            result.job_id,
            crate::util::chain(&e)
        );
    }
}
