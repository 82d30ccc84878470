//! `berth test`: a component's datadir tests, each case run in the full cage with no
//! storage involved, its exit code, stdout, stderr and `out/` compared with what the case
//! expects — the cases of keboola.datadirtest (Python) and keboola/datadir-tests (PHP), read
//! as they read them (see `case`).
//!
//! Each case's `source/data` is copied (regular files and directories, never through a
//! link) into a fresh job directory of berth's own and run there as `berth run` runs a job
//! (see [`DataDirInput`]); `out/` is copied out of the container's reach and compared
//! (`compare`). The case folders are only ever read.

mod case;
mod compare;
mod format;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use super::pipeline::JobRun;
use super::workdir::{Home, JobDir};
use super::{DataDirInput, JobError, RunOptions, Services, Settings};
use crate::confined::Dir;
use crate::contract::{Component, ErrorClass, JobFile, JobResult};
use case::{Case, ExpectedOut, Step};

/// The most of a component's stdout a case keeps.
const MAX_STDOUT_BYTES: usize = 16 << 20;

/// How one case went.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub passed: bool,
    /// What differs, for a case that failed (empty for one that passed).
    pub message: String,
}

/// How every case went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TestReport {
    pub passed: usize,
    pub failed: usize,
    pub cases: Vec<CaseReport>,
}

/// Why the cases could not be run (a case that fails is no error: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum DatadirError {
    #[error("cannot read the cases folder {dir}")]
    Cases {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir} holds no case: a case is a folder with source/data, and expected/data/out or \
         expected-code"
    )]
    NoCases { dir: PathBuf },
    #[error("{dir} has no case {name}")]
    UnknownCase { dir: PathBuf, name: String },
    #[error("{dir} is not empty: the outputs are kept in an empty or new folder")]
    KeepNotEmpty { dir: PathBuf },
    #[error("cannot keep the outputs in {dir}")]
    Keep {
        dir: PathBuf,
        #[source]
        source: Box<crate::mapping::MappingError>,
    },
    #[error("component: {0}")]
    Component(String),
    /// berth could not run the image at all: the job's result says why.
    #[error("{}", .0.message)]
    Run(Box<JobResult>),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("interrupted by the operator")]
    Interrupted,
}

impl DatadirError {
    /// Whose fault it is. Every variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            DatadirError::Cases { .. }
            | DatadirError::NoCases { .. }
            | DatadirError::UnknownCase { .. }
            | DatadirError::KeepNotEmpty { .. }
            | DatadirError::Component(_) => ErrorClass::User,
            DatadirError::Keep { source, .. } => source.class(),
            DatadirError::Run(result) => result.error_class.unwrap_or(ErrorClass::Internal),
            DatadirError::Job(e) => e.class(),
            DatadirError::Interrupted => ErrorClass::Internal,
        }
    }
}

/// What to test, and how.
#[derive(Debug, Clone, Copy)]
pub struct TestOptions<'a> {
    /// The folder of cases.
    pub cases: &'a Path,
    /// Only the cases of these names, when there are any.
    pub only: &'a [String],
    /// Where each case's `out/` is copied (`<case>/`, `<case>/<step>/` in a chain), to
    /// look at or to make expectations of; it must be empty or new.
    pub keep_outputs: Option<&'a Path>,
}

/// Runs the cases `options` name with `component`'s image and limits, calling `on_case` as
/// each ends.
pub fn datadir_test(
    svc: Services<'_>,
    settings: &Settings,
    component: &Component,
    options: &TestOptions<'_>,
    on_case: &mut dyn FnMut(&CaseReport),
) -> Result<TestReport, DatadirError> {
    let dirs = select(options.cases, options.only)?;
    let keep = options.keep_outputs.map(keep_dir).transpose()?;
    let mut tester = Tester {
        svc,
        settings,
        job: job_of(component)?,
        scratch: JobDir::create(&Home::new(&settings.home)).map_err(JobError::Workdir)?,
        keep,
        runs: 0,
        pinned: false,
    };
    let mut report = TestReport::default();
    for dir in dirs {
        let case = match case::load(&dir) {
            Ok(case) => tester.run(&case)?,
            Err(message) => failed(&dir, message),
        };
        on_case(&case);
        match case.passed {
            true => report.passed += 1,
            false => report.failed += 1,
        }
        report.cases.push(case);
        if crate::interrupt::requested() {
            return Err(DatadirError::Interrupted);
        }
    }
    Ok(report)
}

/// The case folders to run: all of `dir`'s, or those named in `only`.
fn select(dir: &Path, only: &[String]) -> Result<Vec<PathBuf>, DatadirError> {
    let all = case::discover(dir).map_err(|source| DatadirError::Cases {
        dir: dir.to_owned(),
        source,
    })?;
    if all.is_empty() {
        return Err(DatadirError::NoCases {
            dir: dir.to_owned(),
        });
    }
    if let Some(name) = only.iter().find(|n| !all.iter().any(|d| d.ends_with(n))) {
        return Err(DatadirError::UnknownCase {
            dir: dir.to_owned(),
            name: name.clone(),
        });
    }
    Ok(all
        .into_iter()
        .filter(|d| only.is_empty() || only.iter().any(|n| d.ends_with(n)))
        .collect())
}

/// Opens the folder the outputs are kept in, which must be empty (or is made).
fn keep_dir(dir: &Path) -> Result<Dir, DatadirError> {
    let keep_err = |source| DatadirError::Keep {
        dir: dir.to_owned(),
        source: Box::new(source),
    };
    let opened = crate::mapping::keep::destination(dir).map_err(keep_err)?;
    let entries = opened.entries().map_err(|e| keep_err(e.into()))?;
    if !entries.is_empty() {
        return Err(DatadirError::KeepNotEmpty {
            dir: dir.to_owned(),
        });
    }
    Ok(opened)
}

/// The job every case runs: the component on an empty configuration (the case brings its
/// own `config.json`).
fn job_of(component: &Component) -> Result<JobFile, DatadirError> {
    let text = serde_json::to_vec(&json!({ "component": component }))
        .map_err(|e| DatadirError::Component(e.to_string()))?;
    JobFile::parse(&text).map_err(DatadirError::Component)
}

/// The report of a case that could not be read.
fn failed(dir: &Path, message: String) -> CaseReport {
    let name = dir.file_name().unwrap_or_default();
    CaseReport {
        name: name.to_string_lossy().into_owned(),
        passed: false,
        message,
    }
}

/// What runs the cases, one after the other.
struct Tester<'a> {
    svc: Services<'a>,
    settings: &'a Settings,
    job: JobFile,
    /// Where each run's `out/` is copied to, for comparing.
    scratch: JobDir,
    /// The operator's folder for the outputs, if any.
    keep: Option<Dir>,
    runs: usize,
    /// The image is run by its digest, once the first case pulled it.
    pinned: bool,
}

/// How one run of the component ended.
struct Ran {
    result: JobResult,
    code: i32,
    stdout: String,
    stderr: String,
    /// The copy of its `out/`.
    out: PathBuf,
}

impl Tester<'_> {
    /// Runs a case's steps in order until one fails; a chain's steps start from the state
    /// the one before left.
    fn run(&mut self, case: &Case) -> Result<CaseReport, DatadirError> {
        let mut state: Option<Value> = None;
        let mut problems = Vec::new();
        for (i, step) in case.steps.iter().enumerate() {
            let prefix = match step.name.is_empty() {
                true => String::new(),
                false => format!("step {}: ", step.name),
            };
            let state_in = match i {
                0 => None,
                _ => Some(state.take().unwrap_or_else(|| json!({}))),
            };
            let ran = match self.run_step(step, state_in)? {
                Ok(ran) => ran,
                Err(problem) => {
                    problems.push(format!("{prefix}{problem}"));
                    break;
                }
            };
            self.keep(&case.name, &step.name, &ran.out)?;
            let found = check(step, &ran);
            problems.extend(found.into_iter().map(|p| format!("{prefix}{p}")));
            if !problems.is_empty() {
                break;
            }
            if i + 1 < case.steps.len() {
                match left_state(&ran.out) {
                    Ok(s) => state = s,
                    Err(p) => {
                        problems.push(format!("{prefix}{p}"));
                        break;
                    }
                }
            }
        }
        Ok(CaseReport {
            name: case.name.clone(),
            passed: problems.is_empty(),
            message: problems.join("\n"),
        })
    }

    /// Runs the component on a copy of `step`'s data folder, `state` (if given) in its
    /// `in/state.json`. The inner error is the case's problem; the outer, berth's own.
    fn run_step(
        &mut self,
        step: &Step,
        state: Option<Value>,
    ) -> Result<Result<Ran, String>, DatadirError> {
        let config = match case::config(&step.source) {
            Ok(c) => c,
            Err(problem) => return Ok(Err(problem)),
        };
        // The runner always gives a state: `{}` where the case has none.
        let has_state = std::fs::symlink_metadata(step.source.join("in/state.json")).is_ok();
        let state = state.or_else(|| (!has_state).then(|| json!({})));
        self.runs += 1;
        let out = self.scratch.dir.join(format!("out-{}", self.runs));
        let options = RunOptions {
            keep_outputs: Some(out.clone()),
            datadir: Some(DataDirInput {
                source: step.source.clone(),
                config,
                state,
            }),
            ..RunOptions::default()
        };
        let mut stdout = String::new();
        let mut on_line = |line: &str| {
            if stdout.len() + line.len() < MAX_STDOUT_BYTES {
                stdout.push_str(line);
                stdout.push('\n');
            }
        };
        let job = JobRun::new(self.svc, self.settings, &self.job, &options);
        let (result, stderr) = job.run_keeping_stderr(&mut on_line);
        self.pin(&result);
        let Some(code) = result.exit_code else {
            // Nothing ran: the image, the host or berth failed, and would for every case.
            if result.image.is_none() || result.error_class != Some(ErrorClass::User) {
                return Err(DatadirError::Run(Box::new(result)));
            }
            return Ok(Err(format!(
                "the component did not run: {}",
                result.message
            )));
        };
        Ok(Ok(Ran {
            result,
            code,
            stdout,
            stderr,
            out,
        }))
    }

    /// Copies the `out/` of `case`'s `step` into the operator's folder, if one was given.
    fn keep(&self, case: &str, step: &str, out: &Path) -> Result<(), DatadirError> {
        let Some(keep) = &self.keep else {
            return Ok(());
        };
        let copy = || -> Result<u64, crate::mapping::MappingError> {
            let mut dst = keep.make_dir(case)?;
            if !step.is_empty() {
                dst = dst.make_dir(step)?;
            }
            crate::mapping::keep::copy_tree(&Dir::open(out)?, &dst, 0)
        };
        copy().map_err(|source| DatadirError::Keep {
            dir: keep.path(),
            source: Box::new(source),
        })?;
        Ok(())
    }

    /// After the first pull, runs the image by its digest: one registry request per test,
    /// not per case, and every case runs the same image.
    fn pin(&mut self, result: &JobResult) {
        let Some(image) = result.image.as_ref().filter(|_| !self.pinned) else {
            return;
        };
        self.pinned = true;
        if !image.reference.contains('@') {
            self.job.component.image = format!("{}@{}", image.reference, image.digest);
        }
    }
}

/// What differs from what `step` expects in how the component ran.
fn check(step: &Step, ran: &Ran) -> Vec<String> {
    let mut problems = Vec::new();
    if ran.code != step.code {
        problems.push(format!(
            "exit code {}, expected {}: {}",
            ran.code, step.code, ran.result.message
        ));
    }
    for (what, expected, actual) in [
        ("stdout", &step.stdout, &ran.stdout),
        ("stderr", &step.stderr, &ran.stderr),
    ] {
        if let Some(expected) = expected
            && !format::matches(expected, actual)
        {
            let (e, a) = (format::normalize(expected), format::normalize(actual));
            let file = format!("expected-{what}");
            problems.push(compare::diff(
                &format!("{what} does not match {file}:"),
                (&file, what),
                &(e + "\n"),
                &(a + "\n"),
            ));
        }
    }
    let expected = match &step.out {
        ExpectedOut::Unchecked => return problems,
        ExpectedOut::Folder(dir) => Some(dir.as_path()),
        ExpectedOut::Empty => None,
    };
    match compare::differences(expected, &ran.out) {
        Ok(found) => problems.extend(found),
        Err(e) => problems.push(format!("cannot compare out/: {}", crate::util::chain(&e))),
    }
    problems
}

/// The state a step left in (the copy of) its `out/state.json`, if it left one.
fn left_state(out: &Path) -> Result<Option<Value>, String> {
    let dir = Dir::open(out).map_err(|e| crate::util::chain(&e))?;
    match dir.read_to_end("state.json", 16 << 20) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("out/state.json is not JSON: {e}")),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(crate::util::chain(&e)),
    }
}
