//! berth: a daemonless runner for data-processing components packaged as OCI images.
//!
//! The modules follow the pipeline, with dependencies pointing one way, down (checked by
//! `tests/layers.rs`):
//!
//! ```text
//! cli (the binary) ─▶ job ─▶ image    registry → store → rootfs cache
//!                        ├──▶ bundle   the OCI runtime spec
//!                        ├──▶ runtime  the Runtime seam: libcontainer, or a fake in tests
//!                        └──▶ mapping ─▶ storage
//!          every layer may read: contract (the data types), util, interrupt
//!          at the bottom: host (the kernel seam: mounts, namespaces, cgroups; a fake in tests)
//! ```
//!
//! `contract` holds the job file, `config.json` and the result document — the data every
//! layer may read, depending on nothing else in the crate. `host` is the only place that
//! mounts, joins namespaces or touches cgroups, and `runtime` the only caller of
//! libcontainer: both are traits with recording fakes (`test-utils`), so the job loop's
//! failure paths are tested without root. `storage` holds the project's tables, files and
//! states.

#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "the 80-line rule is for berth's code; a test reads top to bottom"
    )
)]

pub mod bundle;
pub mod confined;
pub mod contract;
pub mod host;
pub mod image;
pub mod interrupt;
pub mod job;
pub mod layout;
pub mod mapping;
pub mod runtime;
pub mod secrets;
pub mod storage;
pub mod util;
