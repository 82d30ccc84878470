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
//! failed job applies only the tables marked `write_always`. An operator may ask for the
//! original's per-row commit instead ([`CommitMode::Row`]): each row's outputs in a
//! transaction of their own, once it succeeded.
//!
//! The steps live in their own files: [`pipeline`] (the job as a whole: image, rows,
//! commit, result), `row` (one row: data folder, container, outputs), `vault` (its
//! secrets: decrypted, masked, sealed again), `stored` (the stored configuration and OAuth
//! credentials it names), `verdict` (how a
//! container's end becomes the job's status), `state` (what a configuration keeps),
//! [`workdir`] (the job directory) and [`gc`] (what dead berths left). What every step
//! shares sits in leaves below them, so that no step reaches back up to this file:
//! [`JobError`] (`error`), [`Settings`], [`RunOptions`] and [`Services`] (`settings`), the
//! result being built (`progress`) and the store opened on first use (`lazy_storage`).

mod action;
mod datadir;
mod debug;
mod error;
pub mod gc;
mod lazy_storage;
mod pipeline;
mod processors;
mod progress;
mod row;
pub mod running;
mod sandbox;
mod settings;
mod state;
mod stored;
mod variables;
mod vault;
mod verdict;
pub mod workdir;

pub use action::{NO_RESPONSE, action};
pub use datadir::{CaseReport, DatadirError, TestOptions, TestReport, datadir_test};
pub use debug::{DebugError, MAX_ARCHIVED_BYTES, MAX_ARCHIVED_ENTRIES};
pub use error::JobError;
pub use sandbox::sandbox;
pub use settings::{
    CommitMode, DataDirInput, PROXY_VARS, RunOptions, SECRETS_KEY_ENV, Services, Settings,
    proxy_env,
};
pub use stored::load_stored_configuration;

use crate::contract::{JobFile, JobResult};

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
