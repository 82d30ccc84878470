//! `berth sandbox`: the data folder of a job prepared as a run would prepare it — input
//! mapping, `config.json`, `in/state.json` — into a directory of the operator's, and nothing
//! more: no image, no container, no output mapping, no change to storage or state.
//!
//! The data folder (with decrypted secrets in `config.json`) is prepared in a job directory
//! of berth's own, then copied into the operator's directory from directory handles
//! ([`keep`]): a link someone planted there, or the directory itself a link, cannot send
//! what berth writes elsewhere.

use std::path::{Path, PathBuf};

use super::lazy_storage::LazyStorage;
use super::row::{stage_inputs, start_state, write_json};
use super::vault::Vault;
use super::workdir::{DATA_DIRS, Home, JobDir};
use super::{JobError, Settings};
use crate::confined;
use crate::contract::JobFile;
use crate::mapping::{MappingError, keep};

/// Prepares the data folder of each row of `job` in `dir` (`dir` itself, or `dir/<row id>`
/// when the configuration has several rows) and returns them. `dir` must be empty or new.
pub fn sandbox(settings: &Settings, job: &JobFile, dir: &Path) -> Result<Vec<PathBuf>, JobError> {
    let rows = job.row_configurations().map_err(JobError::Contract)?;
    let mut storage = LazyStorage::new(settings.store.clone());
    let (mut rows, _) = super::variables::resolve_rows(job, rows, &mut storage)?;
    crate::contract::validate::check_configurations(&job.component, &rows)?;
    super::stored::fill_oauth_credentials(&mut storage, &job.component.id, &mut rows)?;
    let dest = open_empty(dir)?;
    let scratch = JobDir::create(&Home::new(&settings.home)).map_err(JobError::Workdir)?;
    let mut vault = Vault::for_store(settings.secrets_key(), settings.store.is_shared());
    let mut prepared = Vec::new();
    for (n, (row_id, config)) in rows.iter().enumerate() {
        let data = scratch.dir.join(n.to_string());
        for sub in std::iter::once("").chain(DATA_DIRS) {
            let path = data.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| JobError::Sandbox {
                dir: path.clone(),
                source,
            })?;
        }
        let own = vault.open_image_parameters(job)?;
        let forbidden = own.secrets.clone();
        let config_json = vault.open_config(job, config, own, &forbidden, "")?;
        let start = start_state(job, row_id.as_deref(), &mut storage, &mut vault)?;
        stage_inputs(&mut storage, config, &data, &start.storage.input)?;
        write_json(&data.join("config.json"), &config_json)?;
        write_json(&data.join("in/state.json"), &start.component)?;
        let dst = keep::keep_dir(&dest, row_id.as_deref(), rows.len() > 1)?;
        copy(&data, &dst)?;
        prepared.push(dst.path());
    }
    scratch.remove().map_err(JobError::Workdir)?;
    Ok(prepared)
}

/// Opens `dir` (creating it), which must be empty: a sandbox never mixes with what was
/// there. A link is refused.
fn open_empty(dir: &Path) -> Result<confined::Dir, JobError> {
    let dest = keep::destination(dir)?;
    if !dest.entries().map_err(MappingError::from)?.is_empty() {
        return Err(JobError::SandboxNotEmpty {
            dir: dir.to_owned(),
        });
    }
    Ok(dest)
}

/// Copies the data folder `data` (berth's own) into `dst`.
fn copy(data: &Path, dst: &confined::Dir) -> Result<(), JobError> {
    let src = confined::Dir::open(data).map_err(MappingError::from)?;
    keep::copy_tree(&src, dst, 0)?;
    Ok(())
}
