//! `berth component`: the known components, definitions kept in berth's home that job files
//! name by id (`"component": "acme.ex"`) and that processors are (contract §12).
//!
//! ```text
//! <home>/components/          0700
//! <home>/components/<id>.json 0600: the same JSON as a job file's inline `component`
//! ```
//!
//! A definition holds the component's image parameters, which may be secrets: only berth's
//! operator may read them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use berth::contract::job::{KnownComponentError, check_plain_name};
use berth::contract::result::{Status, Timings};
use berth::contract::{Component, ContractError, ErrorClass, JobFile, JobResult};
use berth::job::Settings;

use super::print;
use super::status::status;

#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Add a component definition (JSON, as a job file's inline `component`), replacing a
    /// known component of the same id
    Add {
        /// The definition (JSON)
        file: PathBuf,
    },
    /// List the known components
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Forget a known component
    Remove {
        /// The component's id
        id: String,
    },
}

/// Where the known components of berth's home are kept.
pub fn components_dir(settings: &Settings) -> PathBuf {
    settings.home.join("components")
}

pub fn component(settings: &Settings, command: ComponentCommand) -> anyhow::Result<ExitCode> {
    let dir = components_dir(settings);
    let done = match command {
        ComponentCommand::Add { file } => add(&dir, &file),
        ComponentCommand::List { json } => list(&dir, json),
        ComponentCommand::Remove { id } => remove(&dir, &id),
    };
    Ok(match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            status(e.class())
        }
    })
}

/// Reads a job file, the stored configuration it names instead of carrying one, and the
/// known components it names: an unknown one is the user's error, before anything runs.
pub fn load_job(settings: &Settings, path: &Path) -> Result<JobFile, Box<JobResult>> {
    let mut job = JobFile::load(path).map_err(|e| Box::new(invalid_job(&e)))?;
    berth::job::load_stored_configuration(settings, &mut job).map_err(|e| {
        let mut result = invalid_job(&ContractError::Parse {
            path: path.to_owned(),
            message: berth::util::chain(&e),
        });
        result.error_class = Some(e.class());
        Box::new(result)
    })?;
    job.resolve_components(&components_dir(settings))
        .map_err(|e| {
            Box::new(invalid_job(&ContractError::Parse {
                path: path.to_owned(),
                message: berth::util::chain(&e),
            }))
        })?;
    Ok(job)
}

/// The result of a job whose file could not be read.
fn invalid_job(e: &ContractError) -> JobResult {
    JobResult {
        job_id: String::new(),
        status: Status::Error,
        error_class: Some(ErrorClass::User),
        message: e.to_string(),
        exit_code: None,
        image: None,
        cage: None,
        outputs: Default::default(),
        timings: Timings::default(),
        already_committed: false,
        usage: None,
        variables: Vec::new(),
    }
}

/// Why a component command failed.
#[derive(Debug, thiserror::Error)]
enum ComponentError {
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Definition { path: PathBuf, message: String },
    #[error("{path}")]
    Named {
        path: PathBuf,
        #[source]
        source: KnownComponentError,
    },
    #[error(transparent)]
    Known(#[from] KnownComponentError),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot print the components")]
    Print(#[source] serde_json::Error),
}

impl ComponentError {
    /// Whose fault it is: a bad definition or id is the operator's, a failing disk berth's.
    fn class(&self) -> ErrorClass {
        match self {
            ComponentError::ReadFile { .. }
            | ComponentError::Definition { .. }
            | ComponentError::Named { .. }
            | ComponentError::Known(_) => ErrorClass::User,
            ComponentError::Io { .. } | ComponentError::Print(_) => ErrorClass::Internal,
        }
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ComponentError {
        let path = path.to_owned();
        move |source| ComponentError::Io { what, path, source }
    }
}

fn add(dir: &Path, file: &Path) -> Result<(), ComponentError> {
    let path = file.to_owned();
    let text = fs::read(file).map_err(|source| ComponentError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let component = Component::parse(&text).map_err(|message| ComponentError::Definition {
        path: path.clone(),
        message,
    })?;
    check_plain_name(&component.id).map_err(|source| ComponentError::Named { path, source })?;
    ensure_private_dir(dir)?;
    let path = dir.join(format!("{}.json", component.id));
    let replaced = path.exists();
    write_private(&path, &component)?;
    if replaced {
        print::err(format!(
            "note: replaced the known component {} (was in {})",
            component.id,
            path.display()
        ));
    }
    print::out(format!(
        "added component {} ({})",
        component.id, component.image
    ));
    Ok(())
}

fn list(dir: &Path, json: bool) -> Result<(), ComponentError> {
    let components = read_all(dir)?;
    if json {
        let text = serde_json::to_string_pretty(&components).map_err(ComponentError::Print)?;
        print::out(text);
        return Ok(());
    }
    let width = components
        .iter()
        .map(|c| c.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let header = format!("{:<width$}  {:<8}  {:>7}  IMAGE", "ID", "MEMORY", "TIMEOUT");
    let rows = components.iter().map(|c| {
        format!(
            "{:<width$}  {:<8}  {:>6}s  {}",
            c.id,
            c.memory.to_string(),
            c.process_timeout,
            c.image
        )
    });
    print::lines(std::iter::once(header).chain(rows));
    Ok(())
}

fn remove(dir: &Path, id: &str) -> Result<(), ComponentError> {
    check_plain_name(id)?;
    let path = dir.join(format!("{id}.json"));
    match fs::remove_file(&path) {
        Ok(()) => {
            print::out(format!("removed component {id}"));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ComponentError::Known(KnownComponentError::Unknown {
                id: id.to_owned(),
                dir: dir.to_owned(),
            }))
        }
        Err(e) => Err(ComponentError::io("remove", &path)(e)),
    }
}

/// Every known component, by id; a definition that cannot be read is named and skipped.
fn read_all(dir: &Path) -> Result<Vec<Component>, ComponentError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ComponentError::io("list", dir)(e)),
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .filter(|id| check_plain_name(id).is_ok())
        .collect();
    ids.sort();
    let mut found = Vec::new();
    for id in ids {
        match Component::load_known(dir, &id) {
            Ok(c) => found.push(c),
            Err(e) => print::err(format!("warning: {}", berth::util::chain(&e))),
        }
    }
    Ok(found)
}

fn ensure_private_dir(dir: &Path) -> Result<(), ComponentError> {
    fs::create_dir_all(dir).map_err(ComponentError::io("create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(ComponentError::io("make private", dir))
}

/// Writes the definition next to its place, 0600 from the start, and renames it there: a
/// reader never sees half of it.
fn write_private(path: &Path, component: &Component) -> Result<(), ComponentError> {
    let mut bytes = serde_json::to_vec_pretty(component).map_err(ComponentError::Print)?;
    bytes.push(b'\n');
    let partial = path.with_extension(format!("json.{}.partial", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&partial, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(ComponentError::io("write", path)(e));
    }
    Ok(())
}
