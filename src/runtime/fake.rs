//! A stand-in for the container runtime, for tests that must run without root: it records
//! every call, plays the component with a closure that sees the data folder, and fails any
//! chosen step the way the real runtime would (nothing left after a failed `run`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{DiskWatch, ExitStatus, Network, RunOutcome, RunRequest, Runtime, RuntimeError};

/// A call the job made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCall {
    Run {
        id: String,
        bundle: PathBuf,
        network: Network,
    },
    Delete {
        id: String,
    },
    RemoveOrphan {
        id: String,
    },
}

/// A step that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    /// Connecting the network between create and start, as on a host without pasta.
    Network,
    Start,
    Wait,
    Delete,
    RemoveOrphan,
}

/// What the component does when it "runs": gets the host path of its `/data`, returns how
/// it ended.
pub type Component = Box<dyn Fn(&Path) -> RunOutcome + Send + Sync>;

pub struct FakeRuntime {
    component: Component,
    fail: Option<Step>,
    calls: Mutex<Vec<RuntimeCall>>,
    live: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("fail", &self.fail)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl FakeRuntime {
    /// A runtime whose containers do what `component` does.
    pub fn new(component: impl Fn(&Path) -> RunOutcome + Send + Sync + 'static) -> Self {
        FakeRuntime {
            component: Box::new(component),
            fail: None,
            calls: Mutex::new(Vec::new()),
            live: Mutex::new(BTreeSet::new()),
        }
    }

    /// A component that writes nothing and exits with `code`.
    pub fn exiting(code: i32) -> Self {
        FakeRuntime::new(move |_| outcome(code))
    }

    /// Makes `step` fail.
    pub fn failing_at(mut self, step: Step) -> Self {
        self.fail = Some(step);
        self
    }

    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Containers that exist now: created by `run` and not yet deleted.
    pub fn live(&self) -> Vec<String> {
        self.live
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record(&self, call: RuntimeCall) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }

    fn fails(&self, step: Step) -> bool {
        self.fail == Some(step)
    }
}

/// How a component that exits with `code` ended, with nothing printed.
pub fn outcome(code: i32) -> RunOutcome {
    RunOutcome {
        status: ExitStatus::Code(code),
        timed_out: false,
        oom_killed: false,
        oom_known: true,
        interrupted: false,
        disk_exceeded: None,
        stdout_tail: String::new(),
        stderr: String::new(),
        usage: crate::host::CgroupUsage::default(),
    }
}

fn injected(what: &str) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(std::io::Error::other(format!("injected {what} failure")))
}

/// The host directory the bundle mounts at `/data`.
fn data_dir(bundle: &Path) -> Option<PathBuf> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    spec.mounts()
        .as_ref()?
        .iter()
        .find(|m| m.destination() == Path::new("/data"))?
        .source()
        .clone()
}

impl Runtime for FakeRuntime {
    fn run(
        &self,
        req: &RunRequest<'_>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<RunOutcome, RuntimeError> {
        let id = req.id.to_owned();
        self.record(RuntimeCall::Run {
            id: id.clone(),
            bundle: req.bundle.to_owned(),
            network: req.network,
        });
        if self.fails(Step::Create) {
            let source = injected("create");
            return Err(RuntimeError::Create { id, source });
        }
        if self.fails(Step::Network) {
            return Err(crate::host::network::pasta_missing(None).into());
        }
        if self.fails(Step::Start) {
            let source = injected("start");
            return Err(RuntimeError::Start { id, source });
        }
        let data = data_dir(req.bundle).ok_or_else(|| RuntimeError::Io {
            what: "the bundle's /data mount",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let mut outcome = (self.component)(&data);
        outcome.stdout_tail.lines().for_each(&mut *on_line);
        // As the real runtime measures once more after the container ended.
        if outcome.disk_exceeded.is_none() {
            outcome.disk_exceeded = req.disk.and_then(DiskWatch::exceeded);
        }
        if self.fails(Step::Wait) {
            let source = std::io::Error::other("injected wait failure");
            let what = "poll";
            return Err(RuntimeError::Wait { id, what, source });
        }
        if let Ok(mut live) = self.live.lock() {
            live.insert(id);
        }
        Ok(outcome)
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.record(RuntimeCall::Delete { id: id.to_owned() });
        if self.fails(Step::Delete) {
            let source = injected("delete");
            let id = id.to_owned();
            return Err(RuntimeError::Delete { id, source });
        }
        let removed = self.live.lock().map(|mut l| l.remove(id)).unwrap_or(false);
        if !removed {
            return Err(RuntimeError::Unknown(id.to_owned()));
        }
        Ok(())
    }

    fn remove_orphan(
        &self,
        _state_root: &Path,
        id: &str,
        _cgroups: &[PathBuf],
    ) -> Result<(), RuntimeError> {
        self.record(RuntimeCall::RemoveOrphan { id: id.to_owned() });
        if self.fails(Step::RemoveOrphan) {
            let source = injected("remove");
            let id = id.to_owned();
            return Err(RuntimeError::Delete { id, source });
        }
        Ok(())
    }
}
