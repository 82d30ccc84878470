//! One row of a job: its chain of images (processors and the component), the data folder
//! they share, what the last one wrote.
//!
//! The steps, in order: the data folder (input mapping, every image's `config.json`
//! decrypted, the state the component starts from); then for each image of the chain (see
//! `processors`): its `config.json`, the bundle and rootfs view, the container, and the data
//! folder passed on to the next image; after the last — overlapped with its container's
//! removal — the outputs staged for the job's commit and the state the component left.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::debug;
use super::lazy_storage::LazyStorage;
use super::processors::{self, Stage};
use super::progress::Progress;
use super::vault::Vault;
use super::verdict::{self, Verdict};
use super::workdir::{self, Home, ImageDir, JobDir};
use super::{DataDirInput, JobError, Services, state};
use crate::bundle::{self, ContainerUser, Limits};
use crate::contract::config_file::{self, RunIdentity};
use crate::contract::mapping::{DataTypeSupport, StorageConfig};
use crate::contract::result::{StageSummary, Usage};
use crate::contract::{Configuration, JobFile, NetworkMode};
use crate::host::IdMap;
use crate::image::{PulledImage, RootfsView, ViewDirs};
use crate::mapping::InputState;
use crate::mapping::input::InputReport;
use crate::mapping::output::{OutputContext, StagedOutputs};
use crate::runtime::output::DROPPED;
use crate::runtime::{self, Network, RunOutcome, RunRequest};
use crate::secrets::Masker;
use crate::storage::StateKey;

/// What every row of a job shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowContext<'a> {
    pub svc: Services<'a>,
    pub copy_rootfs: bool,
    /// The container's ids on the host, when it has its own user namespace.
    pub ids: Option<IdMap>,
    pub home: &'a Home,
    pub jobdir: &'a JobDir,
    /// The job's id: its record's key in storage, `KBC_RUNID`, the `runId` tag of its files.
    pub job_id: &'a str,
    /// What `berth ps` reads about the job: updated as each container starts.
    pub running: &'a super::running::RunningNote,
    pub job: &'a JobFile,
    pub image: &'a PulledImage,
    pub rootfs: &'a Path,
    pub keep_outputs: Option<&'a Path>,
    pub multiple_rows: bool,
    /// The synchronous action the job runs instead of `run`: no mapping, no state.
    pub action: Option<&'a str>,
    /// Debug mode: the data folder archived before each image and at the end; no mapping.
    pub debug: bool,
    /// The operator lets `bridge` containers reach the host and its networks.
    pub allow_host_access: bool,
    /// Proxy variables for `bridge` containers (`--env-proxy`).
    pub proxy_env: &'a [(String, String)],
    /// Datadir mode (`berth test`): the data folder is this one, copied; nothing is mapped.
    pub datadir: Option<&'a DataDirInput>,
}

impl<'s> RowContext<'s> {
    /// What a row shares, with `stage`'s job, image and rootfs.
    fn with_stage(&self, stage: &'s Stage<'_>) -> RowContext<'s> {
        RowContext {
            job: &stage.job,
            image: stage.image,
            rootfs: stage.rootfs,
            ..*self
        }
    }
}

/// One row: its place in the job and its configuration.
#[derive(Debug)]
pub(super) struct RowRun<'a> {
    pub ctx: &'a RowContext<'a>,
    pub n: usize,
    pub row_id: Option<&'a str>,
    pub config: &'a Configuration,
}

/// What one row left behind: its verdict, staged outputs and new state.
#[derive(Debug)]
pub(super) struct RowEnd {
    pub verdict: Verdict,
    pub outputs: StagedOutputs,
    pub state: Option<(StateKey, Option<Value>)>,
    /// The version of the stored state the row started from: a new state is committed only
    /// if it is still current.
    pub state_version: u64,
}

/// Where a row starts: the first image's data folder with the inputs staged, each image's
/// `config.json` (decrypted), and the state the component starts from.
#[derive(Debug)]
struct RowStart {
    /// The `config.json` of each image of the chain, in order.
    configs: Vec<Value>,
    /// What the component finds in `in/state.json`.
    component_state: Value,
    /// What the component left in `out/state.json`, once it ran.
    left_state: Option<Value>,
    /// The component ran last and succeeded: its state is read with its outputs.
    state_at_end: bool,
    key: Option<StateKey>,
    /// The stored state, its secrets decrypted (to tell whether the new one differs).
    previous: Option<Value>,
    /// Its version.
    state_version: u64,
    input_state: InputState,
    /// Input files to tag once the job succeeds (`processed_tags`).
    processed_tags: Vec<(u64, Vec<String>)>,
}

/// An image that ran: how it ended, and its container and rootfs view, still there.
struct Ran<'a> {
    verdict: Verdict,
    container: Container<'a>,
    view: Mounted<'a>,
}

impl RowRun<'_> {
    /// Runs the row's chain of images (contract §12) on one data folder that moves from
    /// each image to the next, then stages what the last one left.
    pub fn run(
        &self,
        chain: &[Stage<'_>],
        storage: &mut LazyStorage,
        vault: &mut Vault,
        on_line: &mut dyn FnMut(&str),
        progress: &mut Progress,
    ) -> Result<RowEnd, JobError> {
        let (mut dir, mut start) = self.prepare(chain, storage, vault, progress)?;
        for (i, stage) in chain.iter().enumerate() {
            let ctx = self.ctx.with_stage(stage);
            let step = RowRun {
                ctx: &ctx,
                n: self.n + i,
                row_id: self.row_id,
                config: stage.config(self.config),
            };
            let state = stage.is_main().then_some(&start.component_state);
            let user = step.ready(&dir, &start.configs[i], state)?;
            self.archive_for_debug(Some(i), storage, &vault.masker(), progress, &dir.data)?;
            let ran = step.run_image(stage, &dir, &user, vault, on_line, progress);
            // berth's own failure to run a processor: say which, the error cannot.
            let ran = ran.inspect_err(|_| {
                if !stage.is_main() {
                    tracing::error!("processor {} could not run", stage.id());
                }
            })?;
            let failed = ran.verdict.failed();
            let last = failed || i + 1 == chain.len();
            let mapped = self.ctx.action.is_none() && self.ctx.datadir.is_none();
            let keeps_state = stage.is_main() && !failed && mapped;
            if last {
                start.state_at_end = keeps_state;
                self.archive_for_debug(None, storage, &vault.masker(), progress, &dir.data)?;
                return self.finish(step.n, &dir, ran, start, vault, progress);
            }
            if keeps_state {
                // Read before anything moves: only the component's state is kept.
                start.left_state = crate::mapping::state::read_out_state(&dir.data)?;
            }
            let Ran {
                container, view, ..
            } = ran;
            container.delete()?;
            view.release()?;
            let from = (step.n, stage.id());
            dir = processors::pass_on(self.ctx.jobdir, from, &dir.data, step.n + 1)?;
        }
        Err(JobError::Contract("a row has no image to run".to_owned()))
    }

    /// Stages the outputs of the chain's last image (`n`), which ran in `dir`, and the state
    /// the component left.
    fn finish(
        &self,
        n: usize,
        dir: &ImageDir,
        ran: Ran<'_>,
        mut start: RowStart,
        vault: &mut Vault,
        progress: &mut Progress,
    ) -> Result<RowEnd, JobError> {
        let Ran {
            verdict,
            container,
            view,
        } = ran;
        self.keep_outputs(dir)?;
        let t = Instant::now();
        let read_state = start.state_at_end;
        let collected = self.collect(n, dir, container, view, verdict.failed(), read_state);
        progress.timings.mapping += t.elapsed().as_secs_f64();
        let (mut outputs, left_state) = collected?;
        if read_state {
            start.left_state = left_state;
        }
        if !verdict.failed() {
            outputs.file_tags = start.processed_tags;
        }
        let state = match (start.key, verdict.failed()) {
            (Some(key), false) => state::next(
                key,
                start.previous.as_ref(),
                start.left_state,
                start.input_state,
            ),
            _ => None,
        };
        let state = seal(state, vault, self.ctx.job)?;
        Ok(RowEnd {
            verdict,
            outputs,
            state,
            state_version: start.state_version,
        })
    }

    /// Runs this image on the data folder in `dir`, to its end.
    fn run_image(
        &self,
        stage: &Stage<'_>,
        dir: &ImageDir,
        user: &ContainerUser,
        vault: &Vault,
        on_line: &mut dyn FnMut(&str),
        progress: &mut Progress,
    ) -> Result<Ran<'_>, JobError> {
        let view = self.mount_rootfs(dir)?;
        let image = &self.ctx.image.config.config;
        bundle::ensure_working_dir(view.root(), image, self.host_ids(0, 0)?)?;
        if !stage.is_main() {
            tracing::info!("running processor {}", stage.id());
        }
        // The lines are masked as one stream: a secret across lines (a PEM key) is hidden
        // whole, and so is one split across two reads of the pipe.
        let masker = vault.masker();
        let mut lines = masker.lines();
        self.ctx.running.update(|r| {
            r.row = self.row_id.map(str::to_owned);
            r.image.clone_from(&self.ctx.image.reference);
            r.container = Some(self.ctx.jobdir.container_id(self.n));
        });
        let started = self.start(dir, user, view.root(), &mut |l| lines.push(l, on_line));
        lines.finish(on_line);
        let mut container = started?;
        mask_outcome(&mut container.outcome, &masker);
        if self.ctx.datadir.is_some() {
            progress.stderr.clone_from(&container.outcome.stderr);
        }
        let code = container.outcome.status.code();
        progress.exit_code = Some(code);
        let usage = usage(&container.outcome.usage, &dir.data.join("out"));
        progress
            .usage
            .get_or_insert_with(Usage::default)
            .add(&usage);
        progress.stages.push(StageSummary {
            component: stage.id().to_owned(),
            position: stage.position,
            row: self.row_id.map(str::to_owned),
            reference: self.ctx.image.reference.clone(),
            digest: self.ctx.image.digest.to_string(),
            exit_code: Some(code),
            usage,
        });
        let verdict = self.verdict(stage, &container.outcome);
        tracing::debug!("container done");
        Ok(Ran {
            verdict,
            container,
            view,
        })
    }

    /// How the image's end is the job's: a processor's failure names the processor.
    fn verdict(&self, stage: &Stage<'_>, outcome: &RunOutcome) -> Verdict {
        let ceiling = self.ctx.svc.host.memory_ceiling();
        let mut verdict = verdict::classify(self.ctx.job, outcome, ceiling.as_ref());
        if let Some(name) = self.ctx.action.filter(|_| outcome.timed_out) {
            // An action has a timeout of its own.
            verdict.message = format!(
                "action {name:?} of component {} exceeded the timeout of {} seconds",
                self.ctx.job.component.id,
                self.timeout_secs()
            );
        }
        if verdict.failed() && !stage.is_main() && !outcome.interrupted {
            verdict.message = format!("processor {}: {}", stage.id(), verdict.message);
        }
        verdict
    }

    /// The data folder of contract §1 for the row's first image: the inputs, and each
    /// image's `config.json` and the state, decrypted before any work, so a wrong
    /// ciphertext fails the job at once.
    fn prepare(
        &self,
        chain: &[Stage<'_>],
        storage: &mut LazyStorage,
        vault: &mut Vault,
        progress: &mut Progress,
    ) -> Result<(ImageDir, RowStart), JobError> {
        let ctx = self.ctx;
        let mut own = Vec::with_capacity(chain.len());
        for stage in chain {
            own.push(vault.open_image_parameters(&stage.job)?);
        }
        // No configuration of the row may carry an image-parameter secret of any image.
        let forbidden: Vec<String> = own.iter().flat_map(|p| p.secrets.clone()).collect();
        let mut configs = Vec::with_capacity(chain.len());
        for (stage, own) in chain.iter().zip(own) {
            // A processor's parameters are part of the job's configuration: encrypted for,
            // and decrypted as, the job's component.
            let config = stage.config(self.config);
            let json = vault.open_config(ctx.job, config, own, &forbidden, &stage.at)?;
            configs.push(match stage.is_main() {
                true => with_action(json, ctx.action),
                false => json,
            });
        }
        let dir = ctx.jobdir.image_dir(self.n).map_err(JobError::Workdir)?;
        // An action keeps no state and maps nothing (contract §13); a given data folder
        // is the input as it is.
        let mapped = ctx.action.is_none() && ctx.datadir.is_none();
        let start = match mapped {
            false => no_state(),
            true => start_state(ctx.job, self.row_id, storage, vault)?,
        };
        let t = Instant::now();
        let staged = match (mapped, ctx.datadir) {
            (true, _) => stage_inputs(storage, self.config, &dir.data, &start.storage.input)?,
            (false, Some(given)) => {
                copy_given(given, &dir.data)?;
                InputReport::default()
            }
            (false, None) => InputReport::default(),
        };
        progress.timings.mapping += t.elapsed().as_secs_f64();
        let start = RowStart {
            configs,
            component_state: start.component,
            left_state: None,
            state_at_end: false,
            key: start.key,
            previous: start.previous,
            state_version: start.version,
            input_state: staged.state,
            processed_tags: staged.processed_tags,
        };
        Ok((dir, start))
    }

    /// Writes this image's `config.json` (and `in/state.json` for the component) and gives
    /// the data folder to the image's user.
    fn ready(
        &self,
        dir: &ImageDir,
        config: &Value,
        state: Option<&Value>,
    ) -> Result<ContainerUser, JobError> {
        let ctx = self.ctx;
        let user = bundle::resolve_user(ctx.rootfs, ctx.image.config.config.user.as_deref())?;
        // A given data folder brings its own config.json and state, unless told otherwise.
        let (config, state) = match ctx.datadir {
            Some(given) => (given.config.as_ref(), given.state.as_ref()),
            None => (Some(config), state),
        };
        if let Some(config) = config {
            write_json(&dir.data.join("config.json"), config)?;
        }
        if let Some(state) = state {
            write_json(&dir.data.join("in/state.json"), state)?;
        }
        self.hand_over(dir, &user)?;
        Ok(user)
    }

    /// Gives the data folder to the container's user and the box around it (with `/tmp`)
    /// to the container's root, as host ids.
    fn hand_over(&self, dir: &ImageDir, user: &ContainerUser) -> Result<(), JobError> {
        let root = self.host_ids(0, 0)?;
        let owner = self.host_ids(user.uid, user.gid)?;
        let chown = |p: &Path, (uid, gid)| workdir::chown_tree(p, uid, gid);
        if root != (0, 0) {
            std::os::unix::fs::lchown(&dir.boxed, Some(root.0), Some(root.1))
                .and_then(|()| chown(&dir.tmp, root))
                .map_err(JobError::Workdir)?;
        }
        if owner != (0, 0) {
            chown(&dir.data, owner).map_err(JobError::Workdir)?;
        }
        Ok(())
    }

    /// Who container user `uid`/`gid` is on the host.
    fn host_ids(&self, uid: u32, gid: u32) -> Result<(u32, u32), JobError> {
        let Some(ids) = &self.ctx.ids else {
            return Ok((uid, gid));
        };
        let outside = |what: &str, id: u32| {
            JobError::Contract(format!(
                "the image runs as {what} {id}, outside the {} ids a container has",
                ids.size
            ))
        };
        let host_uid = ids.uid(uid).ok_or_else(|| outside("uid", uid))?;
        let host_gid = ids.gid(gid).ok_or_else(|| outside("gid", gid))?;
        Ok((host_uid, host_gid))
    }

    /// Mounts the job's writable view of the cached rootfs (or copies it).
    fn mount_rootfs(&self, dir: &ImageDir) -> Result<Mounted<'_>, JobError> {
        let host = self.ctx.svc.host;
        let dirs = ViewDirs {
            upper: &dir.upper,
            work: &dir.work,
            mount_point: &dir.rootfs,
            copy: &dir.copy,
        };
        let view = RootfsView::create(host, self.ctx.rootfs, &dirs, self.ctx.copy_rootfs)?;
        tracing::debug!("rootfs view ready");
        Ok(Mounted {
            view: Some(view),
            host,
        })
    }

    /// Writes the bundle and runs the container to its end.
    fn start(
        &self,
        dir: &ImageDir,
        user: &ContainerUser,
        root: &Path,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Container<'_>, JobError> {
        let ctx = self.ctx;
        let job = ctx.job;
        let container_id = ctx.jobdir.container_id(self.n);
        let cgroups_path = ctx
            .svc
            .host
            .container_cgroup(&container_id)
            .map_err(runtime::RuntimeError::Host)?;
        let stack_id = stack_id();
        let mut env = config_file::environment(&RunIdentity {
            job,
            config: self.config,
            run_id: ctx.job_id,
            component_id: &job.component.id,
            row_id: self.row_id,
            debug: ctx.debug,
            stack_id: stack_id.as_deref(),
        });
        if job.component.network == NetworkMode::Bridge {
            // Only a container that reaches out can use a proxy; `none` and `host` get none.
            env.extend(ctx.proxy_env.iter().cloned());
        }
        let resolv_conf = match job.component.network {
            NetworkMode::Bridge => Some(write_resolv_conf(&dir.bundle)?),
            NetworkMode::None | NetworkMode::Host => None,
        };
        let limits = Limits {
            memory_bytes: verdict::memory_limit(job, ctx.svc.host.memory_ceiling().as_ref()).0,
            cpus: job.component.cpus,
            pids: crate::contract::job::DEFAULT_PIDS,
        };
        let spec = bundle::build(&bundle::BundleSpec {
            image: &ctx.image.config.config,
            root,
            // A rootless berth's containers share its user namespace (see host::userns).
            ids: ctx
                .ids
                .as_ref()
                .filter(|_| ctx.svc.host.rootless().is_none()),
            user,
            home: &bundle::home_dir(ctx.rootfs, user.uid),
            resolv_conf: resolv_conf.as_deref(),
            env: &env,
            data_dir: &dir.data,
            tmp_dir: &dir.tmp,
            hostname: &bundle::hostname_for(&job.component.id),
            network: job.component.network,
            limits: &limits,
            cgroups_path: &cgroups_path,
            cgroups: &ctx.svc.host.cgroups(),
            nofile_limit: ctx.svc.host.hard_nofile_limit(),
            file_size_limit: job
                .component
                .disk
                .0
                .min(ctx.svc.host.hard_file_size_limit()),
            single_id: ctx.ids.is_some_and(|m| m.size == 1),
            seccomp: job.component.seccomp,
        })?;
        bundle::write(&spec, &dir.bundle)?;
        tracing::debug!("data folder and bundle written");
        let disk = self.disk_watch(dir);
        let request = RunRequest {
            id: &container_id,
            bundle: &dir.bundle,
            state_root: &ctx.home.state_root(),
            cgroups_path: &cgroups_path,
            limits,
            timeout: Duration::from_secs(self.timeout_secs()),
            stop_grace: stop_grace(),
            network: network(job.component.network, ctx.allow_host_access),
            disk: Some(&disk),
        };
        let outcome = ctx.svc.runtime.run(&request, on_line)?;
        Ok(Container {
            svc: ctx.svc,
            id: Some(container_id),
            outcome,
        })
    }

    /// What the container may write: its data folder, `/tmp` and its rootfs's upper
    /// directory (or copy) may grow by the component's disk cap from what they hold now.
    fn disk_watch(&self, dir: &ImageDir) -> runtime::DiskWatch {
        let rootfs = if self.ctx.copy_rootfs {
            &dir.copy
        } else {
            &dir.upper
        };
        let mut watch = runtime::DiskWatch {
            dirs: vec![dir.data.clone(), dir.tmp.clone(), rootfs.clone()],
            baseline: 0,
            cap: self.ctx.job.component.disk.0,
        };
        watch.baseline = watch.measure().bytes;
        watch
    }

    /// How long the container may run: an action's timeout, or the main image's.
    fn timeout_secs(&self) -> u64 {
        match self.ctx.action {
            Some(_) => self.ctx.job.action_timeout_secs(),
            None => self.ctx.job.main_timeout_secs(),
        }
    }

    /// Copies `out/` for an operator who asked to keep it.
    fn keep_outputs(&self, dir: &ImageDir) -> Result<(), JobError> {
        let Some(keep) = self.ctx.keep_outputs else {
            return Ok(());
        };
        use crate::mapping::keep;
        let dst = keep::open_keep_dir(keep, self.row_id, self.ctx.multiple_rows)?;
        let n = keep::export_outputs(&dir.data.join("out"), &dst)?;
        // `berth test` keeps them in its own folder, to compare: no news to the operator.
        match self.ctx.datadir {
            Some(_) => tracing::debug!("kept {n} output files in {}", dst.path().display()),
            None => tracing::info!("kept {n} output files in {}", dst.path().display()),
        }
        Ok(())
    }

    /// Stages the outputs and reads the new state while the container is removed: removing
    /// it is cgroup work inside the runtime, this is file work here. (No container is being
    /// created meanwhile, so the extra thread cannot meet libcontainer's clone.)
    fn collect(
        &self,
        n: usize,
        dir: &ImageDir,
        container: Container<'_>,
        view: Mounted<'_>,
        failed: bool,
        read_state: bool,
    ) -> Result<(StagedOutputs, Option<Value>), JobError> {
        let (deleted, collected) = std::thread::scope(|s| {
            let deleting = s.spawn(move || container.delete());
            let collected = view
                .release()
                .and_then(|()| self.collect_outputs(n, dir, failed, read_state));
            (deleting.join(), collected)
        });
        deleted.map_err(|_| {
            JobError::Workdir(std::io::Error::other("container removal panicked"))
        })??;
        match collected {
            Ok(c) => Ok(c),
            // The component's own failure explains more than what it left behind.
            Err(e) if failed => {
                tracing::warn!("{}", crate::util::chain(&e));
                Ok((StagedOutputs::default(), None))
            }
            Err(e) => Err(e),
        }
    }

    /// Stages what image `n` (the chain's last) left in `dir`'s `out/` as the row's
    /// outputs, under the component's name and mapping, and reads the state it left when
    /// `read_state` (it is the component).
    fn collect_outputs(
        &self,
        n: usize,
        dir: &ImageDir,
        failed: bool,
        read_state: bool,
    ) -> Result<(StagedOutputs, Option<Value>), JobError> {
        let ctx = self.ctx;
        if ctx.action.is_some() || ctx.debug || ctx.datadir.is_some() {
            // An action's answer is its stdout; what it left in the data folder is not kept.
            // Debug mode maps no outputs (contract §13); a datadir test compares them.
            ctx.jobdir.remove_image(n).map_err(JobError::Workdir)?;
            return Ok((StagedOutputs::default(), None));
        }
        let out_ctx = OutputContext {
            component_id: &ctx.job.component.id,
            config_id: ctx.job.config_id.as_deref(),
            row_id: self.row_id,
            run_id: ctx.job_id,
            component_default_bucket: ctx.job.component.default_bucket,
        };
        let mapping = self
            .config
            .storage
            .as_ref()
            .map(|s: &StorageConfig| &s.output)
            .cloned()
            .unwrap_or_default();
        let staged = crate::mapping::output::collect_outputs(
            &dir.data.join("out"),
            &mapping,
            &out_ctx,
            &ctx.jobdir.staging(n),
            failed,
        )?;
        let state = if read_state {
            crate::mapping::state::read_out_state(&dir.data)?
        } else {
            None
        };
        ctx.jobdir.remove_image(n).map_err(JobError::Workdir)?;
        Ok((staged, state))
    }

    /// In debug mode, archives the data folder `data` before image `stage` of the row runs
    /// (`Some(n)`), or after the last (`None`), and lists the stored file in the result.
    fn archive_for_debug(
        &self,
        stage: Option<usize>,
        storage: &mut LazyStorage,
        masker: &Masker,
        progress: &mut Progress,
        data: &Path,
    ) -> Result<(), JobError> {
        if !self.ctx.debug {
            return Ok(());
        }
        let target = debug::DebugTarget {
            component_id: &self.ctx.job.component.id,
            job_id: self.ctx.job_id,
            row_id: self.row_id,
            scratch: self.ctx.jobdir.dir.join("debug"),
        };
        let id = match stage {
            Some(n) => debug::archive_stage(&target, storage, masker, n, data)?,
            None => debug::archive_output(&target, storage, masker, data)?,
        };
        progress.outputs.debug_files.push(id);
        Ok(())
    }
}

/// What a container used: what its cgroups measured, and the bytes it left in `out`
/// (walked without following links; unknown when it cannot be walked).
fn usage(measured: &crate::host::CgroupUsage, out: &Path) -> Usage {
    #[expect(
        clippy::cast_precision_loss,
        reason = "microseconds of CPU time stay exact in an f64 for 285 years"
    )]
    let seconds = |us: u64| us as f64 / 1e6;
    let out_bytes = match crate::confined::file_bytes(out) {
        Ok(u) => Some(u.bytes),
        Err(e) => {
            tracing::warn!(
                "cannot measure what the container left in {}: {e}",
                out.display()
            );
            None
        }
    };
    Usage {
        peak_memory_bytes: measured.memory_peak,
        cpu_user_seconds: measured.cpu_user_us.map(seconds),
        cpu_system_seconds: measured.cpu_system_us.map(seconds),
        peak_pids: measured.pids_peak,
        out_bytes,
    }
}

/// Hides the secrets in what the job keeps of the component's output for its message.
fn mask_outcome(outcome: &mut RunOutcome, masker: &Masker) {
    outcome.stderr = mask_kept(&outcome.stderr, masker);
    outcome.stdout_tail = mask_kept(&outcome.stdout_tail, masker);
}

/// What the runtime kept of an output, masked: when its start was dropped, it may start
/// inside a secret, whose end is hidden too.
fn mask_kept(text: &str, masker: &Masker) -> String {
    match text.strip_prefix(DROPPED) {
        Some(rest) => format!("{DROPPED}{}", masker.mask_cut(rest)),
        None => masker.mask(text).into_owned(),
    }
}

/// The state to save, its `#` values encrypted.
fn seal(
    state: Option<(StateKey, Option<Value>)>,
    vault: &mut Vault,
    job: &JobFile,
) -> Result<Option<(StateKey, Option<Value>)>, JobError> {
    let Some((key, Some(mut value))) = state else {
        return Ok(state);
    };
    if let Some(component) = value.get_mut("component") {
        vault.seal_state(component, job)?;
    }
    Ok(Some((key, Some(value))))
}

/// A container that ran and still exists; removed however the row ends.
#[derive(Debug)]
struct Container<'a> {
    svc: Services<'a>,
    id: Option<String>,
    outcome: RunOutcome,
}

impl Container<'_> {
    fn delete(mut self) -> Result<(), JobError> {
        match self.id.take() {
            Some(id) => Ok(self.svc.runtime.delete(&id)?),
            None => Ok(()),
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Err(e) = self.svc.runtime.delete(&id)
        {
            tracing::error!("{}", crate::util::chain(&e));
        }
    }
}

/// A job's rootfs view, unmounted however the row ends.
#[derive(Debug)]
struct Mounted<'a> {
    view: Option<RootfsView>,
    host: &'a dyn crate::host::Host,
}

impl Mounted<'_> {
    /// The root filesystem the container gets.
    fn root(&self) -> &Path {
        self.view
            .as_ref()
            .map_or_else(|| Path::new(""), RootfsView::root)
    }

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
            tracing::error!("{}", crate::util::chain(&e));
        }
    }
}

/// Copies the given data folder into `data` (berth's new one): regular files and
/// directories, links skipped, never followed.
fn copy_given(given: &DataDirInput, data: &Path) -> Result<(), JobError> {
    use crate::mapping::{MappingError, keep};
    let src = crate::confined::Dir::open(&given.source).map_err(MappingError::from)?;
    let dst = crate::confined::Dir::open(data).map_err(MappingError::from)?;
    keep::copy_tree(&src, &dst, 0)?;
    Ok(())
}

/// Stages what the configuration's input mapping asks for into the data folder `data`.
pub(super) fn stage_inputs(
    storage: &mut LazyStorage,
    config: &Configuration,
    data: &Path,
    last: &InputState,
) -> Result<InputReport, JobError> {
    let input = config
        .storage
        .as_ref()
        .map(|s| &s.input)
        .filter(|i| !(i.tables.is_empty() && i.files.is_empty()));
    let Some(input) = input else {
        return Ok(InputReport::default());
    };
    // Typed tables carry a `schema` in their manifests where the configuration works
    // with native types, as in the original.
    let support = config
        .storage
        .as_ref()
        .and_then(|s| s.output.data_type_support);
    let native = matches!(
        support,
        Some(DataTypeSupport::Authoritative | DataTypeSupport::Hints)
    );
    Ok(crate::mapping::input::stage_typed_inputs(
        storage.get()?,
        input,
        data,
        last,
        crate::util::unix_ms(),
        native,
    )?)
}

/// The state a row starts from: its key, the stored state (its secrets decrypted), the
/// component's part (for `in/state.json`) and berth's own part.
pub(super) struct StartState {
    pub key: Option<StateKey>,
    pub previous: Option<Value>,
    /// The stored state's version (0: never written).
    pub version: u64,
    pub component: Value,
    pub storage: crate::mapping::StorageState,
}

/// Reads (and decrypts) the state the row of `row_id` starts from.
pub(super) fn start_state(
    job: &JobFile,
    row_id: Option<&str>,
    storage: &mut LazyStorage,
    vault: &mut Vault,
) -> Result<StartState, JobError> {
    let key = job.config_id.as_ref().map(|config| StateKey {
        component: job.component.id.clone(),
        config: config.clone(),
        row: row_id.map(str::to_owned),
    });
    let stored = match &key {
        Some(k) => storage.get()?.read_state(k)?,
        None => crate::storage::StoredState::default(),
    };
    let (previous, version) = (stored.value, stored.version);
    let (mut component, storage_state) = state::split(previous.clone());
    vault.open_state(&mut component, job)?;
    let previous = previous.map(|p| state::with_component(p, &component));
    Ok(StartState {
        key,
        previous,
        version,
        component,
        storage: storage_state,
    })
}

/// The state a row starts from when it keeps none (an action): nothing stored, `{}`.
fn no_state() -> StartState {
    StartState {
        key: None,
        previous: None,
        version: 0,
        component: Value::Object(serde_json::Map::new()),
        storage: crate::mapping::StorageState::default(),
    }
}

/// The `/etc/resolv.conf` of a bridge container: the host's search domains and pasta's DNS
/// forwarder (the host's own resolver may be on its loopback, out of the container's reach).
/// World-readable: the container's root is nobody on the host.
fn write_resolv_conf(bundle_dir: &Path) -> Result<std::path::PathBuf, JobError> {
    use std::os::unix::fs::PermissionsExt;
    let path = bundle_dir.join("resolv.conf");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let write_err = |source| JobError::Write {
        path: path.clone(),
        source,
    };
    std::fs::write(&path, crate::host::network::resolv_conf(&host)).map_err(write_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(write_err)?;
    Ok(path)
}

/// `config.json` with the action a synchronous action runs instead of `run`.
fn with_action(mut config: Value, action: Option<&str>) -> Value {
    if let (Some(name), Value::Object(map)) = (action, &mut config) {
        map.insert("action".to_owned(), Value::String(name.to_owned()));
    }
    config
}

pub(super) fn write_json(path: &Path, value: &Value) -> Result<(), JobError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(path, bytes).map_err(|source| JobError::Write {
        path: path.to_owned(),
        source,
    })
}

/// What the runtime connects for a network mode of contract §9 (the bundle gives every
/// mode but `host` a namespace of its own): a bridge is fenced off the host unless the
/// operator allows it.
fn network(mode: NetworkMode, allow_host_access: bool) -> Network {
    match mode {
        NetworkMode::None => Network::Loopback,
        NetworkMode::Host => Network::Host,
        NetworkMode::Bridge if allow_host_access => Network::OutboundToHost,
        NetworkMode::Bridge => Network::Outbound,
    }
}
/// How long a stopped container has between SIGTERM and SIGKILL: `docker stop`'s 10 s,
/// which components written for the original expect, or `BERTH_STOP_GRACE` seconds (an
/// engine that kills berth itself soon after its SIGTERM — Slurm's `KillWait` — needs
/// less: berth must be done before it).
fn stop_grace() -> Duration {
    const DEFAULT: Duration = Duration::from_secs(10);
    match std::env::var("BERTH_STOP_GRACE") {
        Err(_) => DEFAULT,
        Ok(s) => s
            .trim()
            .parse()
            .map(Duration::from_secs)
            .unwrap_or_else(|_| {
                tracing::warn!("BERTH_STOP_GRACE={s:?} is not a number of seconds; using 10");
                DEFAULT
            }),
    }
}

/// The operator's stack name, which components see as `KBC_STACKID`: `BERTH_STACK_ID`,
/// or `berth`. Set empty, it leaves `KBC_STACKID` unset, as outside Keboola (component
/// libraries then write the current manifest format instead of the legacy one).
fn stack_id() -> Option<String> {
    match std::env::var("BERTH_STACK_ID") {
        Ok(s) if s.is_empty() => None,
        Ok(s) => Some(s),
        Err(_) => Some(config_file::DEFAULT_STACK_ID.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::output::Tail;

    #[test]
    fn a_kept_output_cut_inside_a_secret_shows_no_part_of_it() {
        let secret = "line-one-of-the-key\nline-two-of-the-key\nend";
        let mut masker = Masker::default();
        masker.add(secret);
        // 20 bytes kept: the cut falls inside the secret's second line.
        let mut tail = Tail::new(20);
        tail.push(format!("x {secret}").as_bytes());
        tail.push(b" done");
        let kept = tail.into_string();
        assert!(kept.starts_with(DROPPED) && kept.contains("key"), "{kept}");
        assert_eq!(mask_kept(&kept, &masker), format!("{DROPPED}[hidden] done"));
        assert_eq!(mask_kept(&format!("x {secret}"), &masker), "x [hidden]");
    }
}
