//! berth: a daemonless runner for data-processing components packaged as OCI images.
//!
//! The modules follow the pipeline, with dependencies pointing one way, down:
//!
//! ```text
//! cli ─▶ job ─▶ image (registry → store → rootfs cache)
//!          ├──▶ bundle (OCI runtime spec)
//!          └──▶ runtime (libcontainer)
//!                          all of them ─▶ host (the kernel seam), contract (the data types)
//! ```
//!
//! `contract` holds the job file, `config.json` and the result document — the data every
//! layer may read. `host` is the only place that mounts, joins namespaces or reads cgroups,
//! and the place tests substitute. `storage` holds the project's tables, files and states.

pub mod bundle;
pub mod confined;
pub mod contract;
pub mod host;
pub mod image;
pub mod interrupt;
pub mod job;
pub mod mapping;
pub mod runtime;
pub mod storage;
pub mod util;
