//! `berth sandbox`: the data folder of a job prepared as a run would prepare it — input
//! mapping, `config.json`, `in/state.json` — into a directory of the operator's, and nothing
//! more: no image, no container, no output mapping, no change to storage or state.

use std::path::{Path, PathBuf};

use super::pipeline::LazyStorage;
use super::row::{stage_inputs, start_state, write_json};
use super::vault::Vault;
use super::workdir::DATA_DIRS;
use super::{JobError, Settings};
use crate::contract::JobFile;

/// Prepares the data folder of each row of `job` in `dir` (`dir` itself, or `dir/<row id>`
/// when the configuration has several rows) and returns them. `dir` must be empty or new.
pub fn sandbox(settings: &Settings, job: &JobFile, dir: &Path) -> Result<Vec<PathBuf>, JobError> {
    let rows = job.row_configurations().map_err(JobError::Contract)?;
    crate::contract::validate::check_configurations(&job.component, &rows)?;
    create_empty(dir)?;
    let mut storage = LazyStorage::new(settings.store.clone());
    let mut vault = Vault::for_store(settings.secrets_key(), settings.store.is_shared());
    let mut prepared = Vec::new();
    for (row_id, config) in &rows {
        let data = crate::mapping::keep::keep_dir(dir, row_id.as_deref(), rows.len() > 1)?;
        for sub in std::iter::once("").chain(DATA_DIRS) {
            let path = data.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| JobError::Sandbox {
                dir: path.clone(),
                source,
            })?;
        }
        let config_json = vault.open_config(job, config, &job.component.image_parameters)?;
        let start = start_state(job, row_id.as_deref(), &mut storage, &mut vault)?;
        stage_inputs(&mut storage, config, &data, &start.storage.input)?;
        write_json(&data.join("config.json"), &config_json)?;
        write_json(&data.join("in/state.json"), &start.component)?;
        prepared.push(data);
    }
    Ok(prepared)
}

/// Creates `dir`, or accepts it empty: a sandbox never mixes with what was there.
fn create_empty(dir: &Path) -> Result<(), JobError> {
    let io = |source| JobError::Sandbox {
        dir: dir.to_owned(),
        source,
    };
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(false) => Err(JobError::SandboxNotEmpty {
            dir: dir.to_owned(),
        }),
        Ok(true) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
