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
//!
//! The steps live in their own files: [`pipeline`] (the job as a whole: image, rows,
//! commit, result), `row` (one row: data folder, container, outputs), `vault` (its
//! secrets: decrypted, masked, sealed again), `verdict` (how a
//! container's end becomes the job's status), `state` (what a configuration keeps),
//! [`workdir`] (the job directory) and [`gc`] (what dead berths left).

mod action;
mod debug;
pub mod gc;
mod pipeline;
mod processors;
mod row;
pub mod running;
mod sandbox;
mod state;
mod vault;
mod verdict;
pub mod workdir;

use std::path::PathBuf;

pub use action::{NO_RESPONSE, action};
pub use debug::{DebugError, MAX_ARCHIVED_BYTES, MAX_ARCHIVED_ENTRIES};
pub use sandbox::sandbox;

use crate::bundle::BundleError;
use crate::contract::validate::ValidateError;
use crate::contract::{ErrorClass, JobFile, JobResult};
use crate::host::{Host, IdMap};
use crate::image::{
    ImageError, Images, Puller, RegistrySettings, SignaturePolicy, UnpackCaps, Unpacker,
};
use crate::mapping::MappingError;
use crate::runtime::{Runtime, RuntimeError};
use crate::secrets::SecretsError;
use crate::storage::{StorageError, StoreSettings};

/// Names the master key file of the secrets, when not the one in berth's home.
pub const SECRETS_KEY_ENV: &str = "BERTH_SECRETS_KEY";

/// Choices an operator makes for one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Copy what the component wrote to `/data/out` here after it ran (one directory per
    /// row when the configuration has rows).
    pub keep_outputs: Option<PathBuf>,
    /// Refuse to run when a limit cannot be enforced, instead of warning.
    pub strict_limits: bool,
    /// Let `bridge` containers reach the host's own addresses, the subnets attached to it
    /// and link-local space (cloud metadata), which are fenced off otherwise.
    pub allow_host_access: bool,
    /// Run this synchronous action instead of `run` (contract §13): no input or output
    /// mapping, no state, a short timeout. Use [`action`], which also checks the name.
    pub action: Option<String>,
    /// Debug mode (contract §13): archive the data folder before each image and at the
    /// end into storage files; no output mapping, no state saved.
    pub debug: bool,
    /// The job's id, when the operator (or the scheduler) gives one: a job id commits
    /// once — a run of an id that committed applies nothing and succeeds. `None`: a fresh
    /// id is made up.
    pub job_id: Option<String>,
    /// The fresh id, when the caller made it up (with [`workdir::new_id`], before anything
    /// else, so that every line it logs names the job); unused when `job_id` is given.
    pub fresh_id: Option<String>,
}

/// Where berth keeps things and how it reaches registries.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub cache: PathBuf,
    pub registry: RegistrySettings,
    /// The signature policy images must satisfy.
    pub signature_policy: SignaturePolicy,
    /// What one image may unpack to, against decompression bombs.
    pub unpack_caps: UnpackCaps,
    /// Give each job a copy of the rootfs instead of an overlay.
    pub copy_rootfs: bool,
    /// The host ids containers run as (their 0..65535); `None`: the host's own.
    pub ids: Option<IdMap>,
    /// The project store: embedded (`StoreSettings::embedded(home)`) or shared.
    pub store: StoreSettings,
}

impl Settings {
    /// What pulls images under these settings, skipping the layer blobs of images that
    /// `unpacker` has unpacked already (it unpacks next, and needs only their stacks).
    pub fn puller<'a>(&'a self, images: &'a Images, unpacker: &Unpacker<'_>) -> Puller<'a> {
        images
            .puller(&self.registry, &self.signature_policy, self.unpack_caps)
            .with_unpacked(unpacker.unpacking())
    }

    /// The master key file of the secrets: `BERTH_SECRETS_KEY`, or `<home>/secrets/keys.json`
    /// (an environment variable, so `berth run` and `berth encrypt` cannot disagree).
    pub fn secrets_key(&self) -> PathBuf {
        match std::env::var_os(SECRETS_KEY_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.home.join("secrets/keys.json"),
        }
    }
}

/// What a job runs on: the kernel seam and the container runtime (fakes in tests).
#[derive(Debug, Clone, Copy)]
pub struct Services<'a> {
    pub host: &'a dyn Host,
    pub runtime: &'a dyn Runtime,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
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
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    Debug(#[from] DebugError),
    #[error("job directory")]
    Workdir(#[source] std::io::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rootless containers need a cgroup delegated by root, and {cgroup} is missing or not \
         yours: as root, run `berth setup-rootless <user>` once"
    )]
    Undelegated { cgroup: PathBuf },
    #[error(
        "a container's root is nobody on the host and cannot reach berth's home: {dir} is \
         not searchable by other users (chmod o+x {dir}, or use a --home below directories \
         everyone may search)"
    )]
    HomeUnreachable { dir: PathBuf },
    #[error("--strict-limits: this host cannot enforce the {}", .0.join(", the "))]
    Unenforced(Vec<String>),
    #[error("interrupted by the operator")]
    Interrupted,
    #[error("{dir} is not empty: a sandbox is prepared into an empty or new directory")]
    SandboxNotEmpty { dir: PathBuf },
    #[error("cannot prepare the sandbox in {dir}")]
    Sandbox {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl JobError {
    /// Whose fault it is. Every variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            JobError::Contract(_) | JobError::SandboxNotEmpty { .. } | JobError::Validate(_) => {
                ErrorClass::User
            }
            JobError::Image(e) => e.class(),
            JobError::Bundle(e) => e.class(),
            JobError::Mapping(e) => e.class(),
            JobError::Secrets(e) => e.class(),
            JobError::Storage(e) if e.is_user_error() => ErrorClass::User,
            JobError::Storage(_)
            | JobError::Runtime(_)
            | JobError::Workdir(_)
            | JobError::Write { .. }
            | JobError::Undelegated { .. }
            | JobError::HomeUnreachable { .. }
            | JobError::Unenforced(_)
            | JobError::Sandbox { .. }
            | JobError::Debug(_)
            | JobError::Interrupted => ErrorClass::Internal,
        }
    }
}

/// The part of a stored state the component finds in `/data/in/state.json` (`{}` when
/// there is none): what `berth state show` prints.
pub fn component_state(stored: Option<serde_json::Value>) -> serde_json::Value {
    state::split(stored).0
}

/// Runs a job to the end and says how it went. Never panics on bad input; every failure
/// becomes a result with its class.
pub fn run(
    svc: Services<'_>,
    settings: &Settings,
    job: &JobFile,
    options: &RunOptions,
    on_line: &mut dyn FnMut(&str),
) -> JobResult {
    pipeline::JobRun::new(svc, settings, job, options).run(on_line)
}
