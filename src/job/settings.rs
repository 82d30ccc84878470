//! What a job is run with: the operator's settings and choices for one run, and the
//! services (kernel seam, container runtime) it runs on. A leaf of `job`: every step reads
//! them, and none needs the steps for that.

use std::path::PathBuf;

use crate::host::{Host, IdMap};
use crate::image::{Images, Puller, RegistrySettings, SignaturePolicy, UnpackCaps, Unpacker};
use crate::runtime::Runtime;
use crate::storage::StoreSettings;

/// Names the master key file of the secrets, when not the one in berth's home.
pub const SECRETS_KEY_ENV: &str = "BERTH_SECRETS_KEY";

/// Choices an operator makes for one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Copy what the component wrote to `/data/out` here after it ran (one directory per
    /// row when the configuration has rows).
    pub keep_outputs: Option<PathBuf>,
    /// Refuse to run when a limit cannot be enforced, instead of warning.
    pub strict_limits: bool,
    /// Let `bridge` containers reach the host's own addresses, the subnets attached to it
    /// and link-local space (cloud metadata), which are fenced off otherwise.
    pub allow_host_access: bool,
    /// Proxy variables passed into `bridge` containers (`--env-proxy`, see [`proxy_env`]);
    /// never into `none` or `host` ones.
    pub proxy_env: Vec<(String, String)>,
    /// Run this synchronous action instead of `run` (contract §13): no input or output
    /// mapping, no state, a short timeout. Use [`action`](super::action()), which also checks the name.
    pub action: Option<String>,
    /// Debug mode (contract §13): archive the data folder before each image and at the
    /// end into storage files; no output mapping, no state saved.
    pub debug: bool,
    /// The job's id, when the operator (or the scheduler) gives one: a job id commits
    /// once — a run of an id that committed applies nothing and succeeds. `None`: a fresh
    /// id is made up.
    pub job_id: Option<String>,
    /// The fresh id, when the caller made it up (with [`workdir::new_id`](super::workdir::new_id), before anything
    /// else, so that every line it logs names the job); unused when `job_id` is given.
    pub fresh_id: Option<String>,
    /// A data folder given whole (`berth test`): copied in instead of one prepared from
    /// storage, with no input or output mapping, no processors, no state and no storage at
    /// all. Its `out/` is seen only through `keep_outputs`.
    pub datadir: Option<DataDirInput>,
    /// When the rows' outputs reach storage: all together after the last row (the
    /// default), or each row's after it succeeded, as the original runner does.
    pub commit: CommitMode,
}

/// When a job with rows commits its outputs (`berth run --commit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// One transaction after every row succeeded; a failed row leaves storage as it was
    /// (only `write_always` tables are written).
    #[default]
    Job,
    /// Each row's outputs and state in a transaction of their own, right after the row
    /// succeeded (the original's behaviour): a later row's failure keeps what earlier rows
    /// committed. Under a given job id, a rerun skips the rows that committed.
    Row,
}

/// The data folder a run in datadir mode starts from (see [`RunOptions::datadir`]).
#[derive(Debug, Clone)]
pub struct DataDirInput {
    /// The folder copied as the data folder: regular files and directories, no links.
    pub source: PathBuf,
    /// Written as `config.json` over the copied one, when given.
    pub config: Option<serde_json::Value>,
    /// Written as `in/state.json` over the copied one, when given.
    pub state: Option<serde_json::Value>,
}

/// The proxy variables curl, Go and most HTTP libraries read, in both cases.
pub const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// The proxy variables among `vars` (berth's environment, for `--env-proxy`); values that
/// are not UTF-8 are left out, as no component could use them as a URL.
pub fn proxy_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| PROXY_VARS.contains(&k.as_str()))
        .collect()
}

/// Where berth keeps things and how it reaches registries.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub cache: PathBuf,
    pub registry: RegistrySettings,
    /// The signature policy images must satisfy.
    pub signature_policy: SignaturePolicy,
    /// What one image may unpack to, against decompression bombs.
    pub unpack_caps: UnpackCaps,
    /// Give each job a copy of the rootfs instead of an overlay.
    pub copy_rootfs: bool,
    /// The host ids containers run as (their 0..65535); `None`: the host's own.
    pub ids: Option<IdMap>,
    /// The project store: embedded (`StoreSettings::embedded(home)`) or shared.
    pub store: StoreSettings,
}

impl Settings {
    /// What pulls images under these settings, skipping the layer blobs of images that
    /// `unpacker` has unpacked already (it unpacks next, and needs only their stacks).
    pub fn puller<'a>(&'a self, images: &'a Images, unpacker: &Unpacker<'_>) -> Puller<'a> {
        images
            .puller(&self.registry, &self.signature_policy, self.unpack_caps)
            .with_unpacked(unpacker.unpacking())
    }

    /// The master key file of the secrets: `BERTH_SECRETS_KEY`, or `<home>/secrets/keys.json`
    /// (an environment variable, so `berth run` and `berth encrypt` cannot disagree).
    pub fn secrets_key(&self) -> PathBuf {
        match std::env::var_os(SECRETS_KEY_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.home.join("secrets/keys.json"),
        }
    }
}

/// What a job runs on: the kernel seam and the container runtime (fakes in tests).
#[derive(Debug, Clone, Copy)]
pub struct Services<'a> {
    pub host: &'a dyn Host,
    pub runtime: &'a dyn Runtime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxy_variables_are_taken() {
        let vars = [
            ("https_proxy", "http://proxy:3128"),
            ("NO_PROXY", "localhost,.internal"),
            ("HOME", "/root"),
            ("ALL_PROXY_X", "nope"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        assert_eq!(
            proxy_env(vars),
            [
                ("https_proxy".to_owned(), "http://proxy:3128".to_owned()),
                ("NO_PROXY".to_owned(), "localhost,.internal".to_owned()),
            ]
        );
    }
}
