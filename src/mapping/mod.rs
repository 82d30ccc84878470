//! Between storage and the data folder: input mapping (storage → `/data/in`, with
//! manifests) and output mapping (`/data/out` → the changes a job will commit).
//!
//! Neither side commits anything: input mapping only reads storage, and output mapping
//! turns what a component wrote into [`Changes`](crate::storage::Changes) that the job
//! applies in one transaction once every row succeeded (contract §6, "all or nothing").
//!
//! Everything in the data folder is untrusted: no symlink is followed, and every manifest,
//! file name and CSV is validated, with errors that name the file.

pub mod input;
pub mod keep;
pub mod output;
pub mod state;
pub mod time;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confined::{self, ConfinedError};
use crate::contract::ErrorClass;
use crate::contract::mapping::TagFilter;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The configuration or the component's output is wrong.
    #[error("{0}")]
    User(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something in the data folder the container controls, or the host while reading it.
    #[error(transparent)]
    Confined(#[from] ConfinedError),
    /// `out/state.json` is not JSON.
    #[error("invalid out/state.json: {0}")]
    State(#[source] serde_json::Error),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MappingError {
    /// Whose fault it is. Every variant is listed: a new one must be classified here.
    pub fn class(&self) -> ErrorClass {
        match self {
            MappingError::User(_) | MappingError::State(_) => ErrorClass::User,
            MappingError::Storage(e) if e.is_user_error() => ErrorClass::User,
            MappingError::Confined(e) if e.is_user_error() => ErrorClass::User,
            MappingError::Storage(_) | MappingError::Confined(_) | MappingError::Io { .. } => {
                ErrorClass::Internal
            }
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MappingError + '_ {
        move |source| MappingError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// berth's part of a configuration's state (contract §11): what `adaptive` mappings
/// imported last. Kept beside the component's own state, never shown to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageState {
    #[serde(default)]
    pub input: InputState,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableImport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileImport>,
}

/// The last import of a table by an `adaptive` mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableImport {
    pub source: String,
    /// ISO 8601 with milliseconds: rows changed after it are new.
    pub last_import_date: String,
}

/// The newest file an `adaptive` file mapping imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileImport {
    pub tags: Vec<TagFilter>,
    pub last_import_id: u64,
}

/// Opens the directory `path` beneath its parent, which is berth's own (the data folder):
/// `path` itself is the container's, and a link there is refused.
fn open_beneath_parent(path: &Path) -> Result<confined::Dir, ConfinedError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => confined::Dir::open(parent)?.open_dir(name),
        _ => Err(ConfinedError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a directory inside the data folder",
            ),
        }),
    }
}

/// A file or table name a mapping may use inside the data folder: one plain component.
fn plain_name(name: &str) -> bool {
    crate::util::plain_name(name).is_ok()
}
