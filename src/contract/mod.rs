//! The contract with components and operators (`shared/spec/contract.md`), as data.
//!
//! This is the leaf every other layer may read: the job file an operator writes, the
//! `config.json` a component reads, and the result document berth reports. Nothing in here
//! touches the network, the kernel or storage, so lower layers (bundle, runtime, mapping)
//! can depend on these types without reaching back up into `job`.

mod compat;
pub mod config_file;
pub mod job;
pub mod mapping;
mod mapping_defaults;
mod php;
pub mod placeholders;
pub mod result;
pub mod stored;
pub mod validate;

pub use job::{
    Component, Configuration, JobFile, MemoryLimit, NetworkMode, Seccomp, UserNamespace,
};
pub use result::{ErrorClass, JobResult, truncate_message};

/// A job file or configuration that breaks the contract: always the user's error.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read job file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("job file {path}: {message}")]
    Parse {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("job file: {field}: {message}")]
    Invalid { field: String, message: String },
}
