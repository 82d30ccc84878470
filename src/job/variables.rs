//! Shared code and variables replaced in each row's configuration before anything runs
//! (`contract::placeholders`), from the project's stored `keboola.shared-code` and
//! `keboola.variables` configurations.

use serde_json::Value;

use super::JobError;
use super::lazy_storage::LazyStorage;
use crate::contract::placeholders::{self, JobValues, Lookup, ResolveError, StoredConfig};
use crate::contract::{Configuration, JobFile};
use crate::storage::StorageError;

/// The configurations a job runs: the row's id (none without rows) and its configuration.
pub(super) type RowConfigs = Vec<(Option<String>, Configuration)>;

/// The stored configurations of the job's project, read from its store when first needed.
struct Stored<'s> {
    storage: &'s mut LazyStorage,
}

impl Lookup for Stored<'_> {
    type Error = StorageError;

    fn configuration(
        &mut self,
        component: &str,
        id: &str,
    ) -> Result<Option<StoredConfig>, StorageError> {
        let stored = self.storage.get()?.configuration(component, id)?;
        // A disabled row still holds its values, as the original reads rows by id.
        Ok(stored.map(|c| StoredConfig {
            configuration: c.configuration,
            rows: c
                .rows
                .into_iter()
                .map(|r| (r.id, r.configuration))
                .collect(),
        }))
    }
}

/// `rows` with their placeholders replaced, and every variable used with its value (a
/// later row's value of a name wins). A row without shared code, variables or
/// placeholders is kept as it was.
pub(super) fn resolve_rows(
    job: &JobFile,
    rows: RowConfigs,
    storage: &mut LazyStorage,
) -> Result<(RowConfigs, Vec<(String, String)>), JobError> {
    let values = JobValues {
        id: job.variable_values_id.as_deref(),
        data: job.variable_values_data.as_ref(),
    };
    let mut lookup = Stored { storage };
    let mut replaced: Vec<(String, String)> = Vec::new();
    let mut resolved = Vec::with_capacity(rows.len());
    for (row, config) in rows {
        let json = serde_json::to_value(&config).map_err(|e| JobError::Contract(e.to_string()))?;
        let done =
            placeholders::resolve(json.clone(), values, &mut lookup).map_err(|e| match e {
                ResolveError::Placeholder(e) => JobError::Placeholders {
                    row: row.clone(),
                    source: e,
                },
                ResolveError::Lookup(e) => JobError::Storage(e),
            })?;
        for (name, value) in done.replaced {
            match replaced.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => replaced.push((name, value)),
            }
        }
        if done.configuration == json {
            resolved.push((row, config));
            continue;
        }
        let config = reparse(done.configuration, row.as_deref())?;
        resolved.push((row, config));
    }
    Ok((resolved, replaced))
}

/// A configuration with its placeholders replaced, typed again: what a value made of it
/// must still be a configuration.
fn reparse(json: Value, row: Option<&str>) -> Result<Configuration, JobError> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let at = match row {
            Some(r) => format!("row {r}: "),
            None => String::new(),
        };
        JobError::Contract(format!(
            "{at}configuration after replacing variables: {}: {}",
            e.path(),
            e.inner()
        ))
    })
}
