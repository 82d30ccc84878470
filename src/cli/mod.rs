//! The command line: what an operator types, and what each command prints.

mod component;
mod configs;
mod inspect;
mod jobs;
pub mod log;
mod login;
mod ops;
pub mod print;
mod prune;
mod secrets;
mod status;
mod storage;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use berth::contract::result::{EXIT_INTERRUPTED, Status};
use berth::contract::{ErrorClass, JobFile, JobResult};
use berth::host::{Host, IdMap, LinuxHost, Rootless};
use berth::image::{Images, PullPolicy, RegistrySettings, UnpackCaps, Unpacking};
use berth::job::{self, Services, Settings, workdir::Home};
use berth::runtime::Youki;
use berth::storage::{FilesUrl, StorageError, StoreSettings};
use status::status;

/// `berth --version`: the package's version and the commit it was built from (see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTH_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = VERSION,
    about = "Run data-processing components packaged as OCI images, without a daemon",
    long_about = "Run data-processing components packaged as OCI images, without a daemon.\n\n\
        berth pulls the component's image from a registry, unpacks it into a cached root \
        filesystem, prepares the /data folder and config.json the component expects, runs it \
        in its own namespaces and cgroup through youki's libcontainer, and cleans everything up \
        afterwards, also when it is interrupted.",
    after_help = "Exit status of `berth run`: 0 success, 1 user error (the component exited 1, timed \
        out or ran out of memory, or the job file is wrong), 2 application error (the component \
        crashed: any other exit status), 3 berth could not do its part (registry unreachable, \
        image missing, host refused), 130 interrupted.\n\n\
        Logs go to stderr; -v shows more, RUST_LOG overrides (e.g. RUST_LOG=berth=trace)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Where berth keeps its state: job directories and container state
    /// [default: /var/lib/berth for root, ~/.local/share/berth otherwise]
    #[arg(long, global = true, env = "BERTH_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Image cache: blobs, image records and unpacked root filesystems [default:
    /// <home>/cache] (the scripts in a checkout use its rootfs-cache/)
    #[arg(long, global = true, env = "BERTH_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// A registry (host[:port]) that may be reached over plain HTTP. Loopback registries
    /// always may. Repeat, or separate with commas in the environment variable
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub insecure_registries: Vec<String>,

    /// Registry credentials to use before any other (containers-auth.json(5) format, as
    /// podman's --authfile; berth login writes there); then, as podman,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
    /// ~/.docker/config.json, and berth's own (berth login)
    #[arg(long, global = true, env = "REGISTRY_AUTH_FILE", value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// How often a failed registry request that may succeed later is retried (back-off
    /// from 0.5 s, doubling, at most 60 s)
    #[arg(
        long,
        global = true,
        env = "BERTH_PULL_RETRIES",
        default_value_t = 4,
        value_name = "N"
    )]
    pub retries: u32,

    /// The signature policy (containers-policy.json(5)) images must satisfy before any of
    /// their layers is fetched [default: <home>/policy.json, else the system's
    /// (--system-signature-policy), whichever exists, else none: every image is accepted]
    #[arg(
        long,
        global = true,
        env = "BERTH_SIGNATURE_POLICY",
        value_name = "FILE"
    )]
    pub signature_policy: Option<PathBuf>,

    /// Where the system's signature policy is, used when neither --signature-policy nor
    /// <home>/policy.json gives one (as podman reads it)
    #[arg(
        long,
        global = true,
        env = "BERTH_SYSTEM_SIGNATURE_POLICY",
        default_value = berth::image::SYSTEM_POLICY,
        value_name = "FILE"
    )]
    pub system_signature_policy: PathBuf,

    /// The short-name alias cache podman writes when a user picks a registry for a short
    /// name (its aliases win over registries.conf's; berth reads it, never writes it)
    /// [default: /var/cache/containers/short-name-aliases.conf for root,
    /// $XDG_CACHE_HOME/containers/short-name-aliases.conf (~/.cache/…) otherwise]
    #[arg(
        long,
        global = true,
        env = "BERTH_SHORT_NAME_ALIAS_CONF",
        value_name = "FILE"
    )]
    pub short_name_alias_conf: Option<PathBuf>,

    /// How long a pull may take, from its first request to its last byte (a registry that
    /// trickles bytes fails naming the image), and how long berth waits for another berth
    /// fetching or unpacking a blob or layer it needs: 45s, 30m, 2h
    #[arg(
        long,
        global = true,
        env = "BERTH_PULL_TIMEOUT",
        default_value = "30m",
        value_parser = prune::parse_duration,
        value_name = "DURATION"
    )]
    pub pull_timeout: std::time::Duration,

    /// When a registry is asked about an image (run, action, pull, save): newer — a
    /// tag is checked with a HEAD and its manifest fetched only when it changed (a
    /// registry that is down, or answers 429 or 5xx, leaves a stored image to run, with a
    /// warning); always — the manifest is fetched every time (stored layers are reused);
    /// missing — a stored image is used without asking; never — no registry is asked, and
    /// an image not stored is an error. A digest-pinned image stored is never asked for
    /// [default: as in the configuration files (`pull = "…"`), else newer]
    ///
    /// e.g. `berth --pull never run job.json` on a host without network, after `berth
    /// pull` of the job's image
    #[arg(long, global = true, env = "BERTH_PULL", value_name = "POLICY")]
    pub pull: Option<String>,

    /// Give each job a copy of the image's root filesystem instead of an overlay on top of
    /// the cached one (slower; for hosts whose overlayfs misbehaves — berth falls back to a
    /// copy by itself where the kernel refuses overlayfs)
    #[arg(long, global = true, env = "BERTH_COPY_ROOTFS")]
    pub copy_rootfs: bool,

    /// What one image may unpack to, in bytes: a larger one is refused (a decompression bomb)
    #[arg(long, global = true, env = "BERTH_MAX_IMAGE_BYTES", default_value_t = UnpackCaps::default().bytes, value_name = "N")]
    pub max_image_bytes: u64,

    /// How many files, directories and links one image may unpack to
    #[arg(long, global = true, env = "BERTH_MAX_IMAGE_ENTRIES", default_value_t = UnpackCaps::default().entries, value_name = "N")]
    pub max_image_entries: u64,

    /// The host ids containers run as: their uids and gids 0..65535 are START..START+65535
    /// on the host, so their root is nobody here (START:SIZE, or UIDSTART:GIDSTART:SIZE)
    /// [default: the operator's range in /etc/subuid and /etc/subgid, else 1879048192:65536]
    #[arg(long, global = true, env = "BERTH_ID_RANGE", value_name = "START:SIZE")]
    pub id_range: Option<IdMap>,

    /// The cgroup containers' cgroups are created below, in every hierarchy [default: berth's
    /// own cgroup where berth runs inside one it may write to — a Slurm job, a systemd unit
    /// with Delegate=yes — else /berth, or /berth-u<uid> for a rootless operator]
    #[arg(long, global = true, env = "BERTH_CGROUP_PARENT", value_name = "PATH", value_parser = parse_cgroup_parent)]
    pub cgroup_parent: Option<String>,

    /// The project store's tables, states and job records: sqlite: (the embedded store in
    /// <home>/storage), sqlite:DIR, or postgres://user:password@host:port/db (shared by
    /// every host that names it) [default: as in /etc/berth/berth.toml, then
    /// <home>/berth.toml (`storage = "…"`), else sqlite:]
    #[arg(long, global = true, env = "BERTH_STORAGE", value_name = "URL")]
    pub storage: Option<String>,

    /// Where the project store keeps file contents: a directory, or s3://bucket/prefix
    /// (endpoint and credentials from AWS_ENDPOINT, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP) [default: as in the
    /// configuration files (`files = "…"`), else <home>/storage/files]
    #[arg(
        long = "files",
        id = "files-url",
        global = true,
        env = "BERTH_FILES",
        value_name = "URL"
    )]
    pub files_url: Option<String>,

    /// Show more of what berth does (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Show only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// How log lines on stderr look: text, or json — one JSON object per line (time,
    /// level, target, message, fields) naming the job on every line of a run, for log
    /// shippers
    #[arg(long, global = true, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The shape of berth's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job: pull the component's image, run it on its configuration, report
    ///
    /// The job file is JSON: {"component": {"id", "image", "memory", "process_timeout",
    /// "network"}, "config_id", "configuration": {"parameters": {...}}}; or, for a
    /// configuration stored with `berth config put`, {"component": "ID", "config_id": "42",
    /// "row_ids": [...]}. The component's stdout is streamed line by line as it comes.
    Run(RunArgs),
    /// Fetch an image into the local store and unpack it, with progress
    ///
    /// By default (--pull newer) a stored tag costs one HEAD request while it points
    /// where it did. Examples:
    ///
    ///   berth pull registry.example.com/acme/extractor:1.4
    ///   berth --pull always pull registry.example.com/acme/extractor:latest
    ///   berth pull oci:/srv/images/extractor:1.4
    #[command(verbatim_doc_comment)]
    Pull {
        /// host/repo:tag, host/repo@sha256:…, or host/repo:tag@sha256:…; or, without a
        /// registry, oci:DIR[:REF] (an OCI layout) or docker-archive:FILE.tar[:REF]
        image: String,
    },
    /// Write an image (pulled first if need be) as an OCI layout: oci:DIR[:REF]
    Save {
        /// The image, named as for `pull`
        image: String,
        /// oci:DIR[:REF]; REF defaults to the image's tag, else `latest`
        target: String,
    },
    /// List stored images: reference, digest, size, when last used
    Images {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a stored image: digests, platform, run config, layers, where it came from
    ///
    /// Shows the digests, the platform, the entrypoint, cmd, user, env, workdir and labels,
    /// the layers and their sizes, the references the image was pulled as and which rules
    /// of the signature policy accepted it. Asks no registry: pull the image first.
    /// Examples:
    ///
    ///   berth inspect registry.example.com/acme/extractor:1.4
    ///   berth inspect sha256:0123456789ab --json | jq -r .config.entrypoint
    #[command(verbatim_doc_comment)]
    Inspect {
        /// A reference as pulled, or a digest (sha256:… in full or its 12 first digits)
        image: String,
        /// Print JSON (stable keys: reference, digest, manifest, platform, config_digest,
        /// config, layers, size, pulled_as) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (by reference or digest) and the blobs and root filesystems only it
    /// used; refused while a running job uses it
    Rmi {
        /// A reference as pulled, or a digest (sha256:… in full or its 12 first digits)
        image: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove what nothing references and leftovers of crashed pulls; with --max-size or
    /// --older-than, also images (least recently used first). Never what a running job uses
    Prune(prune::PruneArgs),
    /// Store credentials for a registry in berth's home (checked against the registry first)
    Login(login::LoginArgs),
    /// Remove berth's stored credentials for a registry
    Logout(login::LogoutArgs),
    /// Remove containers, mounts and working directories left behind by a berth that died
    ///
    /// Every berth command does this first; `berth gc` does only this.
    Gc,
    /// Prepare this host for a rootless operator (run once, as root)
    ///
    /// Creates a cgroup `berth-u<uid>` in every hierarchy and hands it to USER, so that
    /// USER's containers get memory, cpu and process limits and berth's device rules (on
    /// cgroup v1 a rootless berth cannot start a container without it). Also checks that
    /// USER has subordinate ids (/etc/subuid, /etc/subgid) and that newuidmap, newgidmap and
    /// /dev/net/tun are usable, and says how to fix what is not. Safe to run again.
    SetupRootless {
        /// The operator's user name
        user: String,
    },
    /// The project's storage: list, import and export tables; list, upload and download files
    ///
    /// Tables and files live in the project store — embedded under <home>/storage (SQLite
    /// and a directory), or shared (--storage postgres://…, --files s3://…) — the same one
    /// jobs read their inputs from and write their outputs to.
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// The state configurations keep between runs
    #[command(subcommand)]
    State(storage::StateCommand),
    /// Configurations stored in the project, which job files name by `config_id` instead
    /// of carrying them
    ///
    /// A job file {"component": "ID", "config_id": "42"} without a `configuration` (or
    /// `rows`) of its own runs the stored configuration 42 of component ID, with its rows —
    /// or only those `"row_ids": [...]` names, disabled ones too. An inline `configuration`
    /// still wins: a one-off run of a stored configuration's id.
    #[command(subcommand)]
    Config(configs::ConfigCommand),
    /// OAuth credentials stored in the project, which a configuration's
    /// `authorization.oauth_api.id` names
    ///
    /// The credentials go, `#` values decrypted, into `authorization.oauth_api.credentials`
    /// of the component's config.json, as the original's OAuth broker puts them. Credentials
    /// given inline pass through; an id nothing is stored under fails the job (exit 1).
    #[command(subcommand)]
    Oauth(configs::OAuthCommand),
    /// List the jobs recorded in the store (every host's, with a shared store), newest first
    Jobs(jobs::JobsArgs),
    /// What the store recorded of one job
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Encrypt the `#` values of a configuration for a component (and project, and
    /// configuration), printing the JSON with ciphertexts in their place
    ///
    /// Only string values of keys starting with `#` are encrypted; values that are
    /// ciphertexts already are left as they are. A ciphertext decrypts only in a job of the
    /// component, project and configuration its scope binds.
    Encrypt(secrets::EncryptArgs),
    /// Prepare a job's data folder into DIR as a run would — input mapping, config.json
    /// (decrypted), in/state.json — and stop: no container, no output mapping, no change to
    /// storage or state, so the component can be run by hand on it
    Sandbox {
        /// The job file (JSON)
        job: PathBuf,
        /// Where the data folder goes (created; must be empty); one folder per row id
        /// when the configuration has several rows
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Run a synchronous action of the component (one it lists in `synchronous_actions`)
    /// and print the JSON it answers on stdout
    ///
    /// The component runs once on the configuration with `"action": NAME` in config.json,
    /// without input or output mapping and without state, for at most 30 s (less if the
    /// job's timeout is lower).
    Action {
        /// The action's name
        name: String,
        /// The job file (JSON)
        job: PathBuf,
        /// Let a `bridge` component reach this host's own addresses, the subnets attached
        /// to it and link-local addresses, as `berth run --allow-host-access`
        #[arg(long)]
        allow_host_access: bool,
        /// Pass berth's proxy variables into a `bridge` component, as `berth run
        /// --env-proxy`
        #[arg(long)]
        env_proxy: bool,
    },
    /// Run a component's datadir tests: each case's data folder through the image, in the
    /// cage of `berth run`, its out/, exit code and output compared with what it expects
    ///
    /// A case is a folder of CASES_DIR (names starting with `_` or `.` are skipped) laid
    /// out as keboola.datadirtest (Python) and keboola/datadir-tests (PHP) lay them out:
    /// source/data/ (config.json, in/) is copied into a job directory of berth's own and
    /// run with no storage, input or output mapping; out/ must then hold what
    /// expected/data/out/ holds (tables and files byte for byte, manifests and .json
    /// files as JSON, `.gitkeep` and other dot files ignored); the exit code must be what
    /// expected-code says (0 without it); stdout and stderr must match expected-stdout and
    /// expected-stderr where present (PHPUnit formats: %s, %d, %a…). The case folders are
    /// never changed. Exit status: 0 every case passed, 1 a case failed (or CASES_DIR is
    /// wrong), 3 berth could not run the image. Examples:
    ///
    ///   berth test registry.example.com/acme/ex-http:1.2 tests/functional
    ///   berth test --case 01-basic --json acme/ex-http:dev tests/functional
    #[command(verbatim_doc_comment)]
    Test(test::TestArgs),
    /// Known components: definitions kept in berth's home, which job files name by id
    /// (`"component": "ID"`) and processors run
    #[command(subcommand)]
    Component(component::ComponentCommand),
    /// List the jobs running under this home: job id, component, configuration, row,
    /// image, start, berth's pid, the memory its container holds now, and the operator
    Ps {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Stop a running job as Ctrl-C would: its container is killed, nothing is committed,
    /// everything is removed; also a job another berth of this home runs
    ///
    /// berth signals the job's berth — the process that holds the job's lock, checked
    /// against the pid and start time the job recorded, so a recycled pid is never
    /// signalled — waits for it to end, and removes whatever it left.
    Kill(ops::KillArgs),
    /// Print a completion script for a shell: `source <(berth completions bash)`, or put
    /// it where the shell loads completions from
    Completions {
        #[arg(value_enum)]
        shell: ops::Shell,
    },
    /// Write berth's man pages into DIR: berth.1 and one per subcommand (berth-run.1, …)
    Man {
        /// Where the pages go (created)
        dir: PathBuf,
    },
}

impl Command {
    /// Whether a rootless berth must run this in its own user namespace: everything that
    /// unpacks images, mounts, or touches job trees and containers.
    pub fn needs_namespace(&self) -> bool {
        match self {
            Command::Run(_)
            | Command::Test(_)
            | Command::Action { .. }
            | Command::Pull { .. }
            | Command::Save { .. }
            | Command::Gc
            | Command::Rmi { .. }
            | Command::Prune(_)
            | Command::Kill(_) => true,
            Command::Images { .. }
            | Command::Inspect { .. }
            | Command::Sandbox { .. }
            | Command::Storage(_)
            | Command::State(_)
            | Command::Config(_)
            | Command::Oauth(_)
            | Command::Jobs(_)
            | Command::Job(_)
            | Command::Encrypt(_)
            | Command::Login(_)
            | Command::Logout(_)
            | Command::Component(_)
            | Command::Ps { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::SetupRootless { .. } => false,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (JSON)
    pub job: PathBuf,
    /// Print a machine-readable result document on stdout; the component's output then
    /// goes to stderr
    #[arg(long)]
    pub json: bool,
    /// The job's id: a job id commits once — a run of an id that committed (a requeue
    /// after its node died) applies nothing and exits 0 [default: under Slurm,
    /// $SLURM_JOB_ID or $SLURM_JOB_ID_$SLURM_ARRAY_TASK_ID; else a new one]
    #[arg(long, value_name = "ID", value_parser = job_id)]
    pub job_id: Option<String>,
    /// Copy what the component wrote to /data/out into DIR after it ran (regular files and
    /// directories; symlinks are skipped)
    #[arg(long, value_name = "DIR")]
    pub keep_outputs: Option<PathBuf>,
    /// Refuse to run (exit 3) when this host cannot enforce a limit — memory, cpu,
    /// processes, device rules — instead of running with a warning; the limits missing are
    /// named either way, and listed under `cage.unenforced` in the --json result
    #[arg(long)]
    pub strict_limits: bool,
    /// Let a `bridge` component reach this host's own addresses, the subnets attached to
    /// its interfaces and link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata),
    /// which are refused otherwise (connecting fails at once with "Permission denied")
    #[arg(long)]
    pub allow_host_access: bool,
    /// Pass berth's proxy variables (http_proxy, https_proxy, no_proxy and their upper-case
    /// forms) into a `bridge` component; never into `none` or `host` ones
    #[arg(long)]
    pub env_proxy: bool,
    /// Run this tag (or `sha256:…` digest) of the component's image instead of its own;
    /// overrides the configuration's `runtime.image_tag`
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// `debug`: archive the data folder before the image runs and at the end (stage_0.zip,
    /// stage_output.zip, secrets shown as [hidden]) into storage files tagged `debug`, the
    /// component id and jobId:JOB; no output mapping, no state saved
    #[arg(long, value_enum, default_value_t = Mode::Run)]
    pub mode: Mode,
    /// When a job with rows writes to storage: `job` commits every row's outputs and
    /// states in one transaction after the last row (a failed row leaves storage as it
    /// was); `row` commits each row's right after it succeeded, as Keboola's runner does, so
    /// a later row's failure keeps earlier rows' outputs (with --job-id, a rerun skips the
    /// rows that committed)
    #[arg(long, value_enum, env = "BERTH_COMMIT_MODE", default_value_t = Commit::Job)]
    pub commit: Commit,
}

/// `berth run --commit`: see [`job::CommitMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Commit {
    /// All rows in one transaction, after the last (all or nothing)
    Job,
    /// Each row on its own, after it succeeded (the original runner's way)
    Row,
}

impl From<Commit> for job::CommitMode {
    fn from(c: Commit) -> Self {
        match c {
            Commit::Job => job::CommitMode::Job,
            Commit::Row => job::CommitMode::Row,
        }
    }
}

/// How `berth run` runs a job (contract §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The full workflow
    Run,
    /// As run, with the data folder archived; no output mapping, no state
    Debug,
}

impl Global {
    fn home(&self, host: &dyn Host) -> PathBuf {
        if let Some(h) = &self.home {
            return absolute(h);
        }
        if host.rootless().is_none() && nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/berth");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("berth"),
            _ => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".local/share/berth"))
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("berth-{}", nix::unistd::geteuid()))
                }),
        }
    }

    fn cache(&self, host: &dyn Host) -> PathBuf {
        match &self.cache {
            Some(c) => absolute(c),
            None => self.home(host).join("cache"),
        }
    }

    /// The id range containers run as: given, the operator's own, or berth's default for
    /// root. An unprivileged operator without subordinate ids runs with its own ids.
    fn ids(&self, host: &dyn Host) -> Option<IdMap> {
        if let Some(r) = host.rootless() {
            if self.id_range.is_some() {
                tracing::warn!(
                    "--id-range is for root operators; rootless containers use {}",
                    r.host_ids()
                );
            }
            return Some(r.container_ids());
        }
        let ids = self.id_range.or_else(|| host.subordinate_ids());
        match ids {
            Some(ids) => Some(ids),
            None if host.privileged() => Some(IdMap::default_range()),
            None => None,
        }
    }

    /// berth's configuration files, in the order read (later wins).
    fn configs(&self, host: &dyn Host) -> [PathBuf; 2] {
        [
            PathBuf::from(berth::storage::SYSTEM_CONFIG),
            self.home(host).join("berth.toml"),
        ]
    }

    /// The project store: flags and variables over `/etc/berth/berth.toml` and
    /// `<home>/berth.toml`, over the embedded default.
    fn store(&self, host: &dyn Host) -> Result<StoreSettings, StorageError> {
        StoreSettings::resolve(
            self.storage.as_deref(),
            self.files_url.as_deref(),
            &self.configs(host),
            &self.home(host),
        )
    }

    /// The pull policy: `--pull` or `BERTH_PULL` over the configuration files' `pull`,
    /// over `newer`.
    fn pull_policy(&self, host: &dyn Host) -> Result<PullPolicy, SettingsError> {
        #[derive(serde::Deserialize)]
        struct PullKey {
            pull: Option<String>,
        }
        let mut files = Vec::new();
        for path in self.configs(host) {
            let file = berth::storage::read_config::<PullKey>(&path)?;
            if let Some(value) = file.and_then(|f| f.pull) {
                files.push((path, value));
            }
        }
        Ok(PullPolicy::resolve(self.pull.as_deref(), "--pull", &files)?)
    }

    fn settings(&self, host: &dyn Host) -> Result<Settings, SettingsError> {
        let signature_policy = berth::image::locate_policy(
            self.signature_policy.as_deref(),
            &self.home(host),
            &self.system_signature_policy,
        );
        let home = self.home(host);
        Ok(Settings {
            home: self.home(host),
            cache: self.cache(host),
            registry: RegistrySettings {
                insecure: self.insecure_registries.clone(),
                retries: self.retries,
                progress: !self.quiet,
                authfile: self.authfile.as_deref().map(absolute),
                berth_auth_file: Some(berth::image::auth::berth_auth_file(&home)),
                certs_d: berth::image::standard_certs_d(berth::image::user_certs_d(), &home),
                pull_timeout: self.pull_timeout,
                pull: self.pull_policy(host)?,
                registries: registries_conf(self.short_name_alias_conf.as_deref())?,
                ..Default::default()
            },
            signature_policy,
            unpack_caps: UnpackCaps {
                bytes: self.max_image_bytes,
                entries: self.max_image_entries,
            },
            copy_rootfs: self.copy_rootfs,
            ids: self.ids(host),
            store: self.store(host)?,
        })
    }
}

/// Settings berth cannot use: the operator's to fix (exit 1).
#[derive(Debug, thiserror::Error)]
enum SettingsError {
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error(transparent)]
    Pull(#[from] berth::image::PullPolicyError),
    #[error(transparent)]
    Registries(#[from] berth::image::RegistriesConfError),
}

/// registries.conf as podman reads it (`CONTAINERS_REGISTRIES_CONF` alone when set), and
/// the short-name alias cache (`alias_cache`, else podman's).
fn registries_conf(
    alias_cache: Option<&Path>,
) -> Result<berth::image::RegistriesConf, SettingsError> {
    let mut conf = berth::image::RegistriesConf::load(&berth::image::registries_conf_files())?;
    let cache = alias_cache
        .map(absolute)
        .or_else(berth::image::short_name_alias_cache);
    if let Some(cache) = cache {
        conf.add_alias_cache(&cache)?;
    }
    Ok(conf)
}

/// The name `image` has in the store: a digest as given, a short name resolved as
/// registries.conf says (as a pull resolved it); the user's error (exit 1) when it cannot be.
fn stored_name(settings: &Settings, image: &str) -> Result<String, ExitCode> {
    if image.starts_with("sha256:") {
        return Ok(image.to_owned());
    }
    settings.registry.registries.qualify(image).map_err(|e| {
        print::err(format!("berth: {}", berth::util::chain(&e)));
        status(e.class())
    })
}

fn parse_cgroup_parent(s: &str) -> Result<String, String> {
    berth::host::nest::parse_parent(s).map_err(|e| e.to_string())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Runs the command; the exit status follows the job's class for `run`.
pub fn dispatch(cli: Cli, rootless: Option<Rootless>) -> anyhow::Result<ExitCode> {
    let host = match rootless {
        Some(r) => LinuxHost::rootless(r),
        None => LinuxHost::new(),
    }
    .with_cgroup_parent(cli.global.cgroup_parent.clone());
    let runtime = Youki::new(&host);
    let svc = Services {
        host: &host,
        runtime: &runtime,
    };
    let settings = match cli.global.settings(&host) {
        Ok(s) => s,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            return Ok(status(ErrorClass::User));
        }
    };
    // Completions and man pages are clap's alone: generating them (while a package is
    // built, say) makes no home.
    let clap_only = matches!(
        cli.command,
        Command::Completions { .. } | Command::Man { .. }
    );
    if !clap_only && let Err(e) = Home::new(&settings.home).ensure_private() {
        tracing::warn!("cannot make {} private: {e}", settings.home.display());
    }
    match cli.command {
        Command::Run(args) => run(svc, &settings, &args, cli.global.log_format),
        Command::Test(args) => {
            prepare_host(svc, &Home::new(&settings.home));
            Ok(test::test(svc, &settings, &args))
        }
        Command::Pull { image } => {
            job::gc::sweep(svc, &Home::new(&settings.home));
            pull(&host, &settings, &image)
        }
        Command::Save { image, target } => save(&settings, &image, &target),
        Command::Images { json } => images(&settings, json),
        Command::Inspect { image, json } => match stored_name(&settings, &image) {
            Ok(image) => inspect::inspect(&open_images(&settings)?, &image, json),
            Err(code) => Ok(code),
        },
        Command::Rmi { image, json } => match stored_name(&settings, &image) {
            Ok(image) => prune::rmi(&settings, &image, json),
            Err(code) => Ok(code),
        },
        Command::Prune(args) => prune::prune(&settings, &args),
        Command::Login(args) => Ok(login::login(&settings, &args)),
        Command::Logout(args) => Ok(login::logout(&settings, &args)),
        Command::Gc => Ok(gc(svc, &settings)),
        Command::SetupRootless { user } => setup_rootless(&user),
        Command::Storage(command) => storage::storage(&settings, command),
        Command::State(command) => storage::state(&settings, command),
        Command::Config(command) => configs::config(&settings, command),
        Command::Oauth(command) => configs::oauth(&settings, command),
        Command::Jobs(args) => jobs::jobs(&settings, &args),
        Command::Job(command) => jobs::job(&settings, command),
        Command::Encrypt(args) => secrets::encrypt(&settings, &args),
        Command::Sandbox { job, output } => Ok(sandbox(&settings, &job, &output)),
        Command::Action {
            name,
            job,
            allow_host_access,
            env_proxy,
        } => {
            let options = job::RunOptions {
                allow_host_access,
                proxy_env: proxy_vars(env_proxy),
                ..job::RunOptions::default()
            };
            Ok(action(svc, &settings, &name, &job, options))
        }
        Command::Component(command) => component::component(&settings, command),
        Command::Ps { json } => ops::ps(&settings.home, json),
        Command::Kill(args) => Ok(ops::kill(svc, &settings.home, &args)),
        Command::Completions { shell } => Ok(ops::completions(shell, Cli::command())),
        Command::Man { dir } => ops::man(&absolute(&dir), Cli::command()),
    }
}

fn setup_rootless(user: &str) -> anyhow::Result<ExitCode> {
    let report = match berth::host::delegate::setup_rootless(user) {
        Ok(r) => r,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            return Ok(status(ErrorClass::User));
        }
    };
    for dir in &report.delegated {
        print::out(format!("delegated {} to {user}", dir.display()));
    }
    for problem in &report.problems {
        print::err(format!("warning: {problem}"));
    }
    print::out(format!(
        "{user} can now run berth rootless{}",
        if report.problems.is_empty() {
            ""
        } else {
            " (see the warnings above)"
        }
    ));
    Ok(ExitCode::SUCCESS)
}

fn gc(svc: Services<'_>, settings: &Settings) -> ExitCode {
    let mut report = job::gc::sweep(svc, &Home::new(&settings.home));
    print::out(format!(
        "removed {} job directories and {} containers",
        report.jobs.len(),
        report.containers.len()
    ));
    // The embedded store sweeps its own at every open; a shared one's blobs are swept here
    // (a daily `berth gc` on one host is enough for all of them).
    if settings.store.is_shared() || matches!(settings.store.files, FilesUrl::S3 { .. }) {
        let swept = berth::storage::open(&settings.store)
            .and_then(|s| s.sweep(berth::storage::blob::ORPHAN_AGE));
        match swept {
            Ok(n) => {
                print::out(format!("removed {n} unreferenced file contents"));
            }
            Err(e) => report.errors.push(berth::util::chain(&e)),
        }
    }
    for e in &report.errors {
        print::err(format!("error: {e}"));
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        status(ErrorClass::Internal)
    }
}

/// Gives berth a private mount namespace, sweeps what dead berths left, and keeps runtime
/// state on a private tmpfs.
fn prepare_host(svc: Services<'_>, home: &Home) {
    // Must happen while berth is single-threaded: unshare refuses otherwise.
    let isolated = match svc.host.isolate_mounts() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "{}; mounts will be visible on the host until berth cleans them up",
                berth::util::chain(&e)
            );
            false
        }
    };
    // The sweep sees what dead berths left on disk, before the tmpfs hides it, and the
    // cgroups of the host, before berth's view of its own replaces them.
    job::gc::sweep(svc, home);
    if let Err(e) = svc.host.enter_cgroup_nest() {
        tracing::error!("{}", berth::util::chain(&e));
    }
    if isolated {
        let runtime_dir = home.runtime_dir();
        let mounted = std::fs::create_dir_all(&runtime_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                (svc.host.mount_tmpfs(&runtime_dir)).map_err(|e| berth::util::chain(&e))
            });
        if let Err(e) = mounted {
            tracing::warn!("{e}; keeping runtime state on disk");
        }
    }
    tracing::debug!("swept");
}

/// A job's fresh id, made up before anything of it runs: every line it logs names it — or
/// names the id the operator `given`, which the job then has.
fn new_job_id(given: Option<&str>) -> String {
    let id = job::workdir::new_id();
    berth::util::set_log_job(given.unwrap_or(&id));
    id
}

fn run(
    svc: Services<'_>,
    settings: &Settings,
    args: &RunArgs,
    log_format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let given = args.job_id.clone().or_else(slurm_job_id);
    let id = new_job_id(given.as_deref());
    prepare_host(svc, &Home::new(&settings.home));
    let mut job = match component::load_job(settings, &absolute(&args.job)) {
        Ok(j) => j,
        Err(invalid) => return Ok(report(&invalid, args.json)),
    };
    if let Some(tag) = &args.tag {
        override_tag(&mut job, tag);
    }
    let json = args.json;
    let mut on_line = |line: &str| {
        // A closed stdout (e.g. `| head`) must not kill the job half-way.
        if json && log_format == LogFormat::Json {
            print::err_raw(log::component_line(line));
        } else if json {
            print::err(line);
        } else {
            print::out(line);
        }
    };
    let options = job::RunOptions {
        keep_outputs: args.keep_outputs.as_deref().map(absolute),
        strict_limits: args.strict_limits,
        allow_host_access: args.allow_host_access,
        proxy_env: proxy_vars(args.env_proxy),
        action: None,
        debug: args.mode == Mode::Debug,
        job_id: given,
        fresh_id: Some(id),
        datadir: None,
        commit: args.commit.into(),
    };
    let result = job::run(svc, settings, &job, &options, &mut on_line);
    if !json && !result.outputs.debug_files.is_empty() {
        let ids: Vec<String> = result
            .outputs
            .debug_files
            .iter()
            .map(u64::to_string)
            .collect();
        print::err(format!("debug archives stored as files {}", ids.join(", ")));
    }
    Ok(report(&result, json))
}

fn sandbox(settings: &Settings, job: &Path, output: &Path) -> ExitCode {
    let prepared = component::load_job(settings, &absolute(job))
        .map_err(|invalid| (ErrorClass::User, invalid.message))
        .and_then(|j| {
            job::sandbox(settings, &j, &absolute(output))
                .map_err(|e| (e.class(), berth::util::chain(&e)))
        });
    match prepared {
        Ok(dirs) => {
            print::lines(dirs.iter().map(|d| d.display().to_string()));
            ExitCode::SUCCESS
        }
        Err((class, message)) => {
            print::err(format!("berth: {message}"));
            status(class)
        }
    }
}

/// Berth's proxy variables when `--env-proxy` asks for them, else none.
fn proxy_vars(env_proxy: bool) -> Vec<(String, String)> {
    if env_proxy {
        job::proxy_env(std::env::vars_os())
    } else {
        Vec::new()
    }
}

/// `berth action`: `options` are the network choices; the job id is made up here.
fn action(
    svc: Services<'_>,
    settings: &Settings,
    name: &str,
    job: &Path,
    options: job::RunOptions,
) -> ExitCode {
    let id = new_job_id(None);
    prepare_host(svc, &Home::new(&settings.home));
    let job = match component::load_job(settings, &absolute(job)) {
        Ok(j) => j,
        Err(invalid) => return report(&invalid, false),
    };
    let options = job::RunOptions {
        fresh_id: Some(id),
        ..options
    };
    match job::action(svc, settings, &job, name, options) {
        Ok(answer) => {
            match serde_json::to_string_pretty(&answer) {
                Ok(text) => {
                    print::out(text);
                }
                Err(e) => print::err(format!("berth: cannot print the answer: {e}")),
            }
            ExitCode::SUCCESS
        }
        Err(result) => report(&result, false),
    }
}

/// The longest job id berth takes.
const MAX_JOB_ID: usize = 128;

/// A job id: letters, digits, `.`, `_` and `-` (it names the job in storage, in
/// `KBC_RUNID` and in the `runId` tag of its files).
fn job_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_JOB_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: a job id has 1 to {MAX_JOB_ID} letters, digits, '.', '_' or '-'"
        ))
    }
}

/// The job id Slurm gives the batch job berth runs in: `SLURM_JOB_ID`, with
/// `_SLURM_ARRAY_TASK_ID` for a task of an array. A requeued job keeps it, so a node that
/// died after the commit cannot make the job commit twice.
fn slurm_job_id() -> Option<String> {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    let id = var("SLURM_JOB_ID")?;
    let id = match var("SLURM_ARRAY_TASK_ID") {
        Some(task) => format!("{id}_{task}"),
        None => id,
    };
    job_id(&id).ok()
}

/// Makes the job run `tag` of its component's image, as `runtime.image_tag` would.
fn override_tag(job: &mut JobFile, tag: &str) {
    let runtime = job
        .configuration
        .runtime
        .get_or_insert_with(Default::default);
    runtime.image_tag = Some(tag.to_owned());
}

fn report(result: &JobResult, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string_pretty(result) {
            Ok(text) => {
                print::out(text);
            }
            Err(e) => print::err(format!("berth: cannot print the result: {e}")),
        }
    } else if result.status == Status::Error {
        let class = match result.error_class {
            Some(ErrorClass::User) => "user error",
            Some(ErrorClass::Application) => "application error",
            Some(ErrorClass::Internal) | None => "berth error",
        };
        print::err(format!("berth: {class}: {}", result.message));
    } else {
        tracing::info!(
            "{} (pull {:.3} s, unpack {:.3} s, run {:.3} s, total {:.3} s)",
            result.message,
            result.timings.pull,
            result.timings.unpack,
            result.timings.run,
            result.timings.total
        );
    }
    if berth::interrupt::requested() {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    ExitCode::from(result.exit_status())
}

/// The image store, without what dead berths left in it (every command that uses it sweeps).
fn open_images(settings: &Settings) -> anyhow::Result<Images> {
    let images = Images::open(&settings.cache)
        .context("cannot open the image cache")?
        .with_lock_wait(settings.registry.pull_timeout);
    let (swept, bytes) = images.sweep_leftovers();
    if swept > 0 {
        tracing::debug!("removed {swept} temporary leftovers ({bytes} bytes) of dead berths");
    }
    Ok(images)
}

fn pull(host: &LinuxHost, settings: &Settings, image: &str) -> anyhow::Result<ExitCode> {
    let unpacking = Unpacking::new(host.privileged(), settings.ids);
    let images = open_images(settings)?;
    let unpacker = images.unpacker(unpacking, settings.unpack_caps, "");
    let puller = settings.puller(&images, &unpacker);
    let pulled = puller
        .pull(image)
        .and_then(|p| unpacker.rootfs(&p).map(|_| p));
    match pulled {
        Ok(p) => {
            print::out(format!("{} {}", p.reference, p.digest));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            Ok(status(e.class()))
        }
    }
}

fn save(settings: &Settings, image: &str, target: &str) -> anyhow::Result<ExitCode> {
    let images = open_images(settings)?;
    let puller = images.puller(
        &settings.registry,
        &settings.signature_policy,
        settings.unpack_caps,
    );
    match puller.save(image, target) {
        Ok(digest) => {
            print::out(format!("{target} {digest}"));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            Ok(status(e.class()))
        }
    }
}

fn images(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let images = open_images(settings)?;
    let records = images.list();
    if json {
        print::out(serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = records
        .iter()
        .map(|r| r.reference.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let header = format!(
        "{:<width$}  {:<19}  {:>10}  LAST USED",
        "REFERENCE", "DIGEST", "SIZE"
    );
    let now = berth::util::unix_now();
    let rows = records.iter().map(|r| {
        format!(
            "{:<width$}  sha256:{:<12}  {:>10}  {}",
            r.reference,
            r.manifest.short(),
            berth::util::human_bytes(r.size),
            berth::util::ago(r.last_used, now)
        )
    });
    print::lines(std::iter::once(header).chain(rows));
    Ok(ExitCode::SUCCESS)
}
