//! Why a job failed, in a leaf: every step of a job returns it, and `mod.rs` reaches every
//! step.

use std::path::PathBuf;

use super::debug::DebugError;
use crate::bundle::BundleError;
use crate::contract::ErrorClass;
use crate::contract::placeholders::PlaceholderError;
use crate::contract::validate::ValidateError;
use crate::image::ImageError;
use crate::mapping::MappingError;
use crate::runtime::RuntimeError;
use crate::secrets::SecretsError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job file: {0}")]
    Contract(String),
    #[error(
        "configuration {id} of component {component} is not stored (store it with `berth \
         config put {component} {id} FILE`, or give the job a `configuration`)"
    )]
    NoStoredConfiguration { component: String, id: String },
    #[error("stored configuration {id} of component {component}: {message}")]
    StoredConfiguration {
        component: String,
        id: String,
        message: String,
    },
    #[error(
        "{at}.id: OAuth credentials {id} of component {component} are not stored (store them \
         with `berth oauth put {component} {id} FILE`, or give them in {at}.credentials)"
    )]
    NoOAuthCredentials {
        at: String,
        component: String,
        id: String,
    },
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
    /// Shared code or variables that cannot be replaced in the configuration of a row.
    #[error(
        "the configuration{}",
        row.as_ref().map(|r| format!(" of row {r}")).unwrap_or_default()
    )]
    Placeholders {
        row: Option<String>,
        #[source]
        source: PlaceholderError,
    },
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
            JobError::Contract(_)
            | JobError::NoStoredConfiguration { .. }
            | JobError::StoredConfiguration { .. }
            | JobError::NoOAuthCredentials { .. }
            | JobError::SandboxNotEmpty { .. }
            | JobError::Validate(_)
            | JobError::Placeholders { .. } => ErrorClass::User,
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
