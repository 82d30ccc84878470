//! The job file: which component to run and with which configuration.
//!
//! Every struct denies unknown keys, so a typo is an error naming the path of the bad key
//! instead of a silently ignored setting.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ContractError;
use super::compat;
pub use super::compat::Runtime;
use super::mapping::{Row, StorageConfig, merge};
use super::php;
use super::placeholders::VariableValuesData;

/// Default memory limit of a component (contract §9).
pub const DEFAULT_MEMORY: &str = "256m";
/// Default process timeout of a component in seconds (contract §9).
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// `runtime.process_timeout` above a day is capped there, as the original caps it
/// (contract §9).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// How long a synchronous action may take, unless the job allows less (contract §13).
pub const ACTION_TIMEOUT_SECS: u64 = 30;
/// Default CPU quota of a component (contract §9).
pub const DEFAULT_CPUS: f64 = 2.0;
/// Default cap on what a component writes to its data folder, `/tmp` and root filesystem.
pub const DEFAULT_DISK: &str = "10g";
/// Default limit on processes and threads in a container (contract §9).
pub const DEFAULT_PIDS: i64 = 1024;

/// One job: a component and a configuration of it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The component, inline, or named by the id of a known component (`"component":
    /// "acme.ex"`, see [`JobFile::resolve_components`]), which leaves its `image` empty
    /// until resolved.
    #[serde(deserialize_with = "component_or_id")]
    pub component: Component,
    /// Id of a stored configuration; `None` for an inline configuration.
    #[serde(default)]
    pub config_id: Option<String>,
    #[serde(default)]
    pub config_version: Option<String>,
    /// The project the job runs in (`KBC_PROJECTID`).
    #[serde(default = "default_project_id")]
    pub project_id: String,
    #[serde(default)]
    pub configuration: Configuration,
    /// Rows of the configuration, run in order, each with its configuration merged over
    /// the configuration's. None: the configuration runs once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Row>,
    /// Run only these rows (in the configuration's order), disabled ones too, as the
    /// original's `configRowIds`. Empty: every enabled row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_ids: Vec<String>,
    /// Whether the job file carries its configuration (`configuration` or `rows`): then
    /// it runs that, else the stored configuration its `config_id` names. Set by
    /// [`JobFile::parse`].
    #[serde(skip)]
    pub inline_configuration: bool,
    /// The branch the job runs in (`KBC_BRANCHID`); none for the default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_id: Option<String>,
    /// The project's feature gates (`KBC_PROJECT_FEATURE_GATES`, beside berth's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project_features: Vec<String>,
    /// The row of the configuration's `keboola.variables` configuration whose values
    /// replace its variables, instead of its default (`variables_values_id`).
    #[serde(
        default,
        alias = "variableValuesId",
        skip_serializing_if = "Option::is_none"
    )]
    pub variable_values_id: Option<String>,
    /// Values of the configuration's variables, inline: `{"values": [{"name", "value"}]}`.
    #[serde(
        default,
        alias = "variableValuesData",
        skip_serializing_if = "Option::is_none"
    )]
    pub variable_values_data: Option<VariableValuesData>,
    /// The known components the configuration's processors name, by id, once
    /// [`JobFile::resolve_components`] found them.
    #[serde(skip)]
    pub processor_components: BTreeMap<String, Component>,
}

fn default_project_id() -> String {
    "1".to_owned()
}

/// A component: its image and the limits it runs under.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub id: String,
    /// `host/repo:tag`, `host/repo@sha256:…` or `host/repo:tag@sha256:…`.
    pub image: String,
    #[serde(default)]
    pub memory: MemoryLimit,
    #[serde(default = "default_timeout")]
    pub process_timeout: u64,
    #[serde(default)]
    pub network: NetworkMode,
    /// Whose ids the container runs with. Only a component that truly needs the host's
    /// root says `host`; the job result shows it.
    #[serde(default)]
    pub user_namespace: UserNamespace,
    /// Whether its system calls are filtered. Only a component that truly needs a call
    /// the default profile refuses says `unconfined`; the job result shows it.
    #[serde(default)]
    pub seccomp: Seccomp,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// How much its data folder, `/tmp` and root filesystem may grow while it runs
    /// (binary units, as `memory`: `10g` is 10 GiB); past it the container is killed.
    #[serde(default = "default_disk")]
    pub disk: MemoryLimit,
    /// Component-level parameters handed to the component as `image_parameters`.
    #[serde(default)]
    pub image_parameters: Map<String, Value>,
    /// Outputs without a full table id go to `in.c-<component>-<config>` (contract §6).
    #[serde(default)]
    pub default_bucket: bool,
    /// The synchronous actions it answers (contract §13), run by `berth action NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synchronous_actions: Vec<String>,
    /// A JSON schema the configuration's `parameters` must match (contract §2), checked
    /// before anything is pulled; `configurationSchema` as in Keboola's Developer Portal.
    #[serde(
        default,
        alias = "configurationSchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub configuration_schema: Option<Value>,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_cpus() -> f64 {
    DEFAULT_CPUS
}

fn default_disk() -> MemoryLimit {
    DEFAULT_DISK.parse().unwrap_or(MemoryLimit(10 << 30))
}

/// The configuration a user wrote for a component (contract §2). Root keys are fixed;
/// `parameters` is free-form and belongs to the component.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Configuration {
    // Objects here may be `[]`, as Keboola's PHP writes an empty one (see `php`).
    #[serde(default, deserialize_with = "php::object")]
    pub parameters: Map<String, Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "php::optional_object"
    )]
    pub storage: Option<StorageConfig>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "php::optional_object"
    )]
    pub processors: Option<Processors>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "php::optional_object"
    )]
    pub runtime: Option<Runtime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "php::optional_object"
    )]
    pub authorization: Option<Map<String, Value>>,
    /// Accepted for compatibility with stored Keboola configurations; always replaced by
    /// the component's own image parameters before the component sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// A `keboola.variables` configuration: its variables are replaced in this one
    /// (`contract::placeholders`), with the values of its row `variables_values_id`
    /// unless the job gives others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables_values_id: Option<Value>,
    /// A `keboola.shared-code` configuration, whose rows `shared_code_row_ids` replace
    /// their `{{ rowId }}` items in lists of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_code_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_code_row_ids: Option<Value>,
    /// Keboola's artifacts (a project feature there): nothing stores them here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Value>,
}

impl Configuration {
    /// Adds the keys that are set but have no effect here to `keys` (see
    /// [`JobFile::inert_keys`]).
    fn inert_keys(&self, keys: &mut BTreeSet<String>) {
        let mut note = |set: bool, key: &str| {
            if set {
                keys.insert(key.to_owned());
            }
        };
        note(self.artifacts.is_some(), "artifacts");
        if let Some(r) = &self.runtime {
            r.inert_keys(&mut note);
        }
        if let Some(storage) = &self.storage {
            storage.inert_keys(&mut note);
        }
    }
}

/// `configuration.processors` (contract §12): images that run before and after the
/// component on the same data folder, each a known component.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Processors {
    #[serde(default)]
    pub before: Vec<Processor>,
    #[serde(default)]
    pub after: Vec<Processor>,
}

impl Processors {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }
}

/// One processor: which known component runs, and the `parameters` it gets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Processor {
    pub definition: ProcessorDefinition,
    #[serde(default, deserialize_with = "php::object")]
    pub parameters: Map<String, Value>,
}

/// `processors.*[].definition`: the component's id and, optionally, another tag (or
/// `sha256:…` digest) of its image.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorDefinition {
    pub component: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A memory limit in bytes, written as Docker reads `--memory` (go-units' `RAMInBytes`):
/// a number, an optional space, then `k`, `m`, `g`, `t` or `p` with an optional `i` and `b`,
/// all binary: `256m` is 256 MiB (2^28 bytes), `1.5g` is 1.5 GiB; a bare number is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(pub u64);

impl Default for MemoryLimit {
    fn default() -> Self {
        DEFAULT_MEMORY.parse().unwrap_or(MemoryLimit(256 << 20))
    }
}

/// The binary units of a size, largest first, as [`MemoryLimit`]'s `Display` picks them.
const SIZE_UNITS: [(char, u32); 5] = [('p', 50), ('t', 40), ('g', 30), ('m', 20), ('k', 10)];

impl FromStr for MemoryLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid =
            || format!("invalid size {s:?}: use a number with k, m or g (binary, as Docker)");
        let t = s.trim().to_ascii_lowercase();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let unit = unit.strip_prefix(' ').unwrap_or(unit);
        let unit = unit.strip_suffix('b').unwrap_or(unit);
        let unit = unit.strip_suffix('i').unwrap_or(unit);
        let shift = match unit {
            "" => 0,
            u => SIZE_UNITS
                .iter()
                .find(|(c, _)| u.len() == 1 && u.starts_with(*c))
                .map(|(_, shift)| *shift)
                .ok_or_else(invalid)?,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |d: &str| d.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(invalid());
        }
        let bytes =
            scaled(whole, fraction, shift).ok_or_else(|| format!("size {s:?} is too large"))?;
        // The kernel needs a few pages to start anything at all; below that the component
        // would die with a confusing OOM instead of a clear error.
        if bytes < 4 << 20 {
            return Err(format!("size {s:?} is below the minimum of 4m"));
        }
        Ok(MemoryLimit(bytes))
    }
}

/// `whole.fraction` (ASCII digits) times 2^`shift`, rounded down as Docker rounds; `None`
/// when it does not fit in 64 bits.
fn scaled(whole: &str, fraction: &str, shift: u32) -> Option<u64> {
    let whole: u128 = whole.parse().ok()?;
    // Exact decimal arithmetic on the fraction (18 digits are more than a byte needs).
    let (numerator, denominator) = fraction.bytes().take(18).fold((0u128, 1u128), |(n, d), c| {
        (n * 10 + u128::from(c - b'0'), d * 10)
    });
    let bytes = whole
        .checked_mul(1 << shift)?
        .checked_add((numerator << shift) / denominator)?;
    u64::try_from(bytes).ok()
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        match SIZE_UNITS
            .iter()
            .find(|(_, shift)| b != 0 && b.trailing_zeros() >= *shift)
        {
            Some((unit, shift)) => write!(f, "{}{unit}", b >> shift),
            None => write!(f, "{b}"),
        }
    }
}

impl Serialize for MemoryLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whose ids a container runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserNamespace {
    /// Its own user namespace: its ids 0..65535 are an unprivileged range of the host's, so
    /// its root is nobody on the host.
    #[default]
    Private,
    /// The host's ids: root in the container is root on the host.
    Host,
}

/// Which system calls a container may make.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// The profile podman and Docker apply (containers/common's allow-list), plus berth's
    /// refusal of new namespaces.
    #[default]
    Default,
    /// No filter, as `podman run --security-opt seccomp=unconfined`.
    Unconfined,
}

impl Seccomp {
    pub fn is_default(&self) -> bool {
        *self == Seccomp::Default
    }
}

/// How the container reaches the network (contract §9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace with only loopback, which is up.
    None,
    /// The host's network namespace.
    Host,
    /// Its own namespace with outbound access: the original runner's default, which most
    /// extractors and writers need, so a component that does not say gets it.
    #[default]
    Bridge,
}

impl Component {
    /// A component a job file names by id only: its definition is still to be read from
    /// the known components ([`JobFile::resolve_components`]).
    pub fn is_reference(&self) -> bool {
        self.image.is_empty()
    }

    /// Checks a definition: a component id, an image, sane limits. The error is the
    /// failing field and what is wrong with it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        check_id(&self.id).map_err(|m| ("id", m))?;
        if self.image.trim().is_empty() {
            return Err(("image", "is empty".to_owned()));
        }
        if !(self.cpus > 0.0 && self.cpus <= 1024.0) {
            let message = format!("{} is not between 0 and 1024", self.cpus);
            return Err(("cpus", message));
        }
        if self.process_timeout == 0 {
            return Err(("process_timeout", "must be at least 1 second".to_owned()));
        }
        Ok(())
    }

    /// Parses and checks a component definition (the JSON of a job file's inline
    /// `component`); the error names the path of the bad key.
    pub fn parse(text: &[u8]) -> Result<Component, String> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let c: Component = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            match path.as_str() {
                "." | "" => e.into_inner().to_string(),
                _ => format!("{path}: {}", e.into_inner()),
            }
        })?;
        c.check().map_err(|(field, m)| format!("{field}: {m}"))?;
        Ok(c)
    }

    /// The definition of known component `id`: `<dir>/<id>.json`.
    pub fn load_known(dir: &Path, id: &str) -> Result<Component, KnownComponentError> {
        check_plain_name(id)?;
        let path = dir.join(format!("{id}.json"));
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KnownComponentError::Unknown {
                    id: id.to_owned(),
                    dir: dir.to_owned(),
                });
            }
            Err(source) => return Err(KnownComponentError::Read { path, source }),
        };
        let c = Component::parse(&text).map_err(|message| KnownComponentError::Invalid {
            path: path.clone(),
            message,
        })?;
        if c.id != id {
            let message = format!("holds component {:?}, not {id:?}", c.id);
            return Err(KnownComponentError::Invalid { path, message });
        }
        Ok(c)
    }
}

/// A known component that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownComponentError {
    #[error(
        "{id:?} is not a plain component name (1-128 of A-Z a-z 0-9 . - _, not starting with a dot)"
    )]
    NotAName { id: String },
    #[error(
        "{id:?} is not a known component: there is no {id}.json in {dir} (add it with `berth \
         component add FILE`)"
    )]
    Unknown { id: String, dir: PathBuf },
    #[error("cannot read component definition {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("component definition {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// Where the job file names the component.
    #[error("{field}")]
    At {
        field: String,
        #[source]
        source: Box<KnownComponentError>,
    },
}

/// Whether `id` may name a file of the known components: a component id that is not
/// hidden (`.x`) and cannot be `..`.
pub fn check_plain_name(id: &str) -> Result<(), KnownComponentError> {
    if check_id(id).is_err() || id.starts_with('.') {
        return Err(KnownComponentError::NotAName { id: id.to_owned() });
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), String> {
    let plain = (id.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if id.is_empty() || id.len() > 128 || !plain {
        return Err(format!(
            "{id:?} is not a component id (1-128 of A-Z a-z 0-9 . - _)"
        ));
    }
    Ok(())
}

/// Whether a job file's text has a `configuration` or `rows` of its own (the text parsed
/// as a job file already, so it is a JSON object).
fn carries_configuration(text: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Keys {
        configuration: Option<serde::de::IgnoredAny>,
        rows: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Keys>(text)
        .is_ok_and(|k| k.configuration.is_some() || k.rows.is_some())
}

/// A configuration's `runtime.process_timeout`.
fn runtime_timeout(c: &Configuration) -> Option<u64> {
    c.runtime.as_ref().and_then(|r| r.process_timeout)
}

/// `component`: an inline definition, or the id of a known component (a string), which
/// becomes a definition with an empty image until resolved.
fn component_or_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Component, D::Error> {
    use serde::de::{self, MapAccess, Visitor};
    struct ComponentOrId;
    impl<'de> Visitor<'de> for ComponentOrId {
        type Value = Component;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a component (an object) or the id of a known component (a string)")
        }

        fn visit_str<E: de::Error>(self, id: &str) -> Result<Component, E> {
            let named = serde_json::json!({"id": id, "image": ""});
            serde_json::from_value(named).map_err(E::custom)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Component, A::Error> {
            let c = Component::deserialize(de::value::MapAccessDeserializer::new(map))?;
            if c.image.trim().is_empty() {
                return Err(de::Error::custom("image is empty"));
            }
            Ok(c)
        }
    }
    d.deserialize_any(ComponentOrId)
}

impl JobFile {
    /// The image to run: the component's, with the tag the configuration's
    /// `runtime.image_tag` (or the older `runtime.tag`) names instead of its own; a
    /// `sha256:…` value pins a digest.
    pub fn image_reference(&self) -> String {
        let runtime = self.configuration.runtime.as_ref();
        compat::image_reference(&self.component.image, runtime)
    }

    /// Keys of the configuration (and its rows) that the original runner accepts but that
    /// have no effect here, each named once, as `storage.input.tables[].column_types`.
    pub fn inert_keys(&self) -> Vec<String> {
        let mut keys = BTreeSet::new();
        self.configuration.inert_keys(&mut keys);
        for (_, config) in self.row_configurations().unwrap_or_default() {
            config.inert_keys(&mut keys);
        }
        keys.into_iter().collect()
    }

    /// Reads the definitions of the known components the job names from `dir` (berth's
    /// `<home>/components`): its component, when named by id, and its processors'. An
    /// unknown one is an error naming where the job names it.
    pub fn resolve_components(&mut self, dir: &Path) -> Result<(), KnownComponentError> {
        let at = |field: String| {
            move |e| KnownComponentError::At {
                field,
                source: Box::new(e),
            }
        };
        if self.component.is_reference() {
            self.component =
                Component::load_known(dir, &self.component.id).map_err(at("component".into()))?;
        }
        for (field, id) in self.processor_ids() {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.processor_components.entry(id)
            {
                let c = Component::load_known(dir, slot.key()).map_err(at(field))?;
                slot.insert(c);
            }
        }
        Ok(())
    }

    /// Every processor the job runs, with where the job names it.
    fn processor_ids(&self) -> Vec<(String, String)> {
        let mut ids = Vec::new();
        let rows = self.row_configurations().unwrap_or_default();
        for (row, config) in rows {
            let Some(p) = config.processors else { continue };
            let prefix = match &row {
                Some(r) => format!("row {r}: "),
                None => String::new(),
            };
            for (list, name) in [(&p.before, "before"), (&p.after, "after")] {
                for (i, proc) in list.iter().enumerate() {
                    let field = format!(
                        "{prefix}configuration.processors.{name}[{i}].definition.component"
                    );
                    ids.push((field, proc.definition.component.clone()));
                }
            }
        }
        ids
    }
    /// Reads and validates a job file. Every failure names the file and the bad key.
    pub fn load(path: &Path) -> Result<JobFile, ContractError> {
        let text = std::fs::read(path).map_err(|source| ContractError::Read {
            path: path.to_owned(),
            source,
        })?;
        let job = Self::parse(&text).map_err(|message| ContractError::Parse {
            path: path.to_owned(),
            message,
        })?;
        if let Some(t) = job.capped_timeout() {
            tracing::warn!(
                "configuration.runtime.process_timeout {t} is above the maximum of \
                 {MAX_TIMEOUT_SECS} seconds: capped there, as the original runner caps it"
            );
        }
        for key in job.inert_keys() {
            tracing::warn!(
                "configuration key {key} is accepted for compatibility but has no effect in berth"
            );
        }
        Ok(job)
    }

    /// Parses and validates a job file's text; the error names the path of the bad key.
    pub fn parse(text: &[u8]) -> Result<JobFile, String> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let mut job: JobFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path.is_empty() {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })?;
        job.inline_configuration = carries_configuration(text);
        job.check()?;
        Ok(job)
    }

    /// Validates the job as [`JobFile::parse`] does: again once a stored configuration
    /// took the place of the inline one. The error names the path of the bad key.
    pub fn check(&self) -> Result<(), String> {
        self.validate().map_err(|e| match e {
            ContractError::Invalid { field, message } if field.is_empty() => message,
            ContractError::Invalid { field, message } => format!("{field}: {message}"),
            other => other.to_string(),
        })
    }

    /// Whether the job runs the stored configuration its `config_id` names: it has one,
    /// and carries no configuration of its own.
    pub fn runs_stored_configuration(&self) -> bool {
        self.config_id.is_some() && !self.inline_configuration
    }

    /// Puts a stored configuration (and its rows, and its version unless the job names
    /// one) in the place of the inline one, and validates the job again.
    pub fn use_stored(
        &mut self,
        configuration: Configuration,
        rows: Vec<Row>,
        version: u64,
    ) -> Result<(), String> {
        self.configuration = configuration;
        self.rows = rows;
        self.inline_configuration = true;
        if self.config_version.is_none() {
            self.config_version = Some(version.to_string());
        }
        self.check()
    }

    fn validate(&self) -> Result<(), ContractError> {
        let invalid = |field: &str, message: String| ContractError::Invalid {
            field: field.to_owned(),
            message,
        };
        let checked = if self.component.is_reference() {
            check_id(&self.component.id).map_err(|m| ("id", m))
        } else {
            self.component.check()
        };
        if let Err((field, message)) = checked {
            return Err(invalid(&format!("component.{field}"), message));
        }
        // As the original: 0 is refused; above a day is capped (see `main_timeout_secs`).
        if let Some(0) = self
            .configuration
            .runtime
            .as_ref()
            .and_then(|r| r.process_timeout)
        {
            return Err(invalid(
                "configuration.runtime.process_timeout",
                "must be greater than 0".to_owned(),
            ));
        }
        self.check_row_ids()?;
        let mut ids = std::collections::HashSet::new();
        for (i, row) in self.rows.iter().enumerate() {
            if row.id.is_empty() || row.id.len() > 128 || row.id.contains(['/', '\0']) {
                return Err(invalid(
                    &format!("rows[{i}].id"),
                    format!("{:?} is not a row id", row.id),
                ));
            }
            if !ids.insert(&row.id) {
                return Err(invalid(
                    &format!("rows[{i}].id"),
                    format!("{:?} appears twice", row.id),
                ));
            }
        }
        let rows = (self.row_configurations()).map_err(|message| invalid("", message))?;
        if let Some((id, _)) = rows.iter().find(|(_, c)| runtime_timeout(c) == Some(0)) {
            let i = (self.rows.iter()).position(|r| Some(&r.id) == id.as_ref());
            return Err(invalid(
                &format!(
                    "rows[{}].configuration.runtime.process_timeout",
                    i.unwrap_or_default()
                ),
                "must be greater than 0".to_owned(),
            ));
        }
        // As in the original: a configuration's processors, or its rows', never both (an
        // empty list in a row is none).
        let set = |p: Option<&Value>| {
            p.and_then(|p| serde_json::from_value::<Processors>(p.clone()).ok())
                .is_some_and(|p| !p.is_empty())
        };
        let own = self.configuration.processors.as_ref();
        let in_a_row = (self.rows.iter()).any(|r| set(r.configuration.get("processors")));
        if own.is_some_and(|p| !p.is_empty()) && in_a_row {
            return Err(invalid(
                "rows",
                "processors are set in the configuration and in a row: set them in one place"
                    .to_owned(),
            ));
        }
        if let Some(config_id) = &self.config_id
            && (config_id.is_empty() || config_id.len() > 128 || config_id.contains(['/', '\0']))
        {
            return Err(invalid(
                "config_id",
                format!("{config_id:?} is not a configuration id"),
            ));
        }
        Ok(())
    }

    /// `row_ids`: each a row id, once, of a row the configuration has. Checked once the
    /// rows are known: not while the stored configuration is still to be read.
    fn check_row_ids(&self) -> Result<(), ContractError> {
        let invalid = |i: usize, message: String| ContractError::Invalid {
            field: format!("row_ids[{i}]"),
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for (i, id) in self.row_ids.iter().enumerate() {
            if !seen.insert(id) {
                return Err(invalid(i, format!("{id:?} appears twice")));
            }
            if self.runs_stored_configuration() {
                continue;
            }
            if !self.rows.iter().any(|r| &r.id == id) {
                let message = if self.rows.is_empty() {
                    format!("{id:?}: the configuration has no rows")
                } else {
                    let known: Vec<&str> = self.rows.iter().map(|r| r.id.as_str()).collect();
                    format!(
                        "{id:?} is not a row of the configuration (its rows: {})",
                        known.join(", ")
                    )
                };
                return Err(invalid(i, message));
            }
        }
        Ok(())
    }

    /// The configurations to run, in order: the rows that are enabled (or those `row_ids`
    /// names, enabled or not), each merged over the configuration (with its id), or the
    /// configuration alone when there are no rows.
    pub fn row_configurations(&self) -> Result<Vec<(Option<String>, Configuration)>, String> {
        if self.rows.is_empty() {
            return Ok(vec![(None, self.configuration.clone())]);
        }
        let base = serde_json::to_value(&self.configuration).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            if !self.row_ids.is_empty() {
                if !self.row_ids.contains(&row.id) {
                    continue;
                }
            } else if row.is_disabled {
                tracing::info!("skipping disabled row {}", row.id);
                continue;
            }
            let mut merged = base.clone();
            merge(&mut merged, &Value::Object(row.configuration.clone()));
            let config: Configuration = serde_path_to_error::deserialize(merged)
                .map_err(|e| format!("rows[{i}].configuration.{}: {}", e.path(), e.inner()))?;
            out.push((Some(row.id.clone()), config));
        }
        Ok(out)
    }

    /// The timeout of the main image: the configuration's `runtime.process_timeout` wins,
    /// capped at a day as the original caps it.
    pub fn main_timeout_secs(&self) -> u64 {
        self.configuration
            .runtime
            .as_ref()
            .and_then(|r| r.process_timeout)
            .map_or(self.component.process_timeout, |t| t.min(MAX_TIMEOUT_SECS))
    }

    /// The configuration's (or a row's) `runtime.process_timeout` when it asks for more
    /// than the maximum, which [`main_timeout_secs`](Self::main_timeout_secs) caps (and
    /// the operator is told).
    pub fn capped_timeout(&self) -> Option<u64> {
        let rows = self.row_configurations().unwrap_or_default();
        std::iter::once(&self.configuration)
            .chain(rows.iter().map(|(_, c)| c))
            .filter_map(runtime_timeout)
            .find(|&t| t > MAX_TIMEOUT_SECS)
    }

    /// This job as one of its rows runs its component: with the row's `runtime` (its
    /// timeout, its image tag), when it has one of its own; `None` when it has not.
    pub fn with_row_runtime(&self, row: &Configuration) -> Option<JobFile> {
        (row.runtime != self.configuration.runtime).then(|| JobFile {
            configuration: Configuration {
                runtime: row.runtime.clone(),
                ..self.configuration.clone()
            },
            ..self.clone()
        })
    }

    /// The timeout of a synchronous action: 30 s, or the job's own timeout if lower.
    pub fn action_timeout_secs(&self) -> u64 {
        self.main_timeout_secs().min(ACTION_TIMEOUT_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Result<JobFile, String> {
        JobFile::parse(text.as_bytes())
    }

    #[test]
    fn an_action_runs_30_s_unless_the_job_allows_less() {
        let j =
            job(r#"{"component": {"id": "a", "image": "x/y", "synchronous_actions": ["test"]}}"#)
                .unwrap();
        assert_eq!(j.component.synchronous_actions, vec!["test"]);
        assert_eq!(j.action_timeout_secs(), 30);
        let j = job(
            r#"{"component": {"id": "a", "image": "x/y", "process_timeout": 60},
                       "configuration": {"runtime": {"process_timeout": 7}}}"#,
        )
        .unwrap();
        assert_eq!(j.action_timeout_secs(), 7);
    }

    #[test]
    fn minimal_job_gets_contract_defaults() {
        let j =
            job(r#"{"component": {"id": "acme.hello", "image": "127.0.0.1:5000/acme/hello:1.0"}}"#)
                .unwrap();
        assert_eq!(j.component.memory, MemoryLimit(256 << 20));
        assert_eq!(j.component.process_timeout, 3600);
        assert_eq!(
            j.component.network,
            NetworkMode::Bridge,
            "as the original runner"
        );
        assert_eq!(j.config_id, None);
        assert_eq!(j.main_timeout_secs(), 3600);
    }

    #[test]
    fn unknown_keys_are_errors_naming_their_path() {
        let e = job(r#"{"component": {"id": "a", "image": "x/y", "memroy": "1g"}}"#).unwrap_err();
        assert!(
            e.starts_with("component.memroy: unknown field `memroy`"),
            "{e}"
        );
        let e = job(
            r#"{"component": {"id": "a", "image": "x/y"}, "configuration": {"parameter": {}}}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("configuration.parameter: unknown field `parameter`"),
            "{e}"
        );
        let e = job(r#"{"component": {"id": "a", "image": "x/y"}, "configuration": {"runtime": {"timeout": 3}}}"#)
            .unwrap_err();
        assert!(
            e.starts_with("configuration.runtime.timeout: unknown field `timeout`"),
            "{e}"
        );
    }

    #[test]
    fn memory_sizes_are_binary_as_docker_reads_them() {
        let bytes = |s: &str| s.parse::<MemoryLimit>().unwrap().0;
        assert_eq!(bytes("256m"), 256 * 1024 * 1024);
        assert_eq!(bytes("256M"), 268_435_456);
        assert_eq!(bytes("1G"), 1 << 30);
        assert_eq!(bytes("1.5g"), 1_610_612_736);
        assert_eq!(bytes("5000k"), 5_120_000);
        assert_eq!(bytes("512 MiB"), 512 << 20);
        assert_eq!(bytes("512mb"), 512 << 20);
        assert_eq!(bytes("1t"), 1 << 40);
        assert_eq!(bytes("268435456"), 268_435_456);
        assert_eq!(MemoryLimit(256 << 20).to_string(), "256m");
        assert_eq!(MemoryLimit(1_610_612_736).to_string(), "1536m");
        assert_eq!(MemoryLimit(10 << 30).to_string(), "10g");
        assert_eq!(MemoryLimit(256_000_000).to_string(), "250000k");
        assert_eq!(MemoryLimit::default().0, 268_435_456);
        assert!("12x".parse::<MemoryLimit>().is_err());
        assert!("1..5m".parse::<MemoryLimit>().is_err());
        assert!(".5m".parse::<MemoryLimit>().is_err());
        assert!("-5m".parse::<MemoryLimit>().is_err());
        assert!("m".parse::<MemoryLimit>().is_err());
        assert!(
            "99999999999p"
                .parse::<MemoryLimit>()
                .unwrap_err()
                .contains("too large")
        );
        assert!("1k".parse::<MemoryLimit>().unwrap_err().contains("minimum"));
        let e = job(r#"{"component": {"id": "a", "image": "x/y", "memory": "lots"}}"#).unwrap_err();
        assert!(e.contains("component.memory") && e.contains("lots"), "{e}");
    }

    #[test]
    fn runtime_timeout_overrides_and_is_capped_at_a_day() {
        let j = job(
            r#"{"component": {"id": "a", "image": "x/y", "process_timeout": 10},
                       "configuration": {"runtime": {"process_timeout": 20}}}"#,
        )
        .unwrap();
        assert_eq!(j.main_timeout_secs(), 20);
        assert_eq!(j.capped_timeout(), None);
        let j = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "configuration": {"runtime": {"process_timeout": 86401}}}"#)
        .unwrap();
        assert_eq!(j.main_timeout_secs(), MAX_TIMEOUT_SECS);
        assert_eq!(j.capped_timeout(), Some(86401));
        // The component's own timeout is not the configuration's: no cap.
        let j =
            job(r#"{"component": {"id": "a", "image": "x/y", "process_timeout": 90000}}"#).unwrap();
        assert_eq!(j.main_timeout_secs(), 90000);
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "configuration": {"runtime": {"process_timeout": 0}}}"#)
        .unwrap_err();
        assert_eq!(
            e,
            "configuration.runtime.process_timeout: must be greater than 0"
        );
    }

    #[test]
    fn bad_component_ids_are_refused() {
        let e = job(r#"{"component": {"id": "../etc", "image": "x/y"}}"#).unwrap_err();
        assert!(e.starts_with("component.id:"), "{e}");
        let e =
            job(r#"{"component": {"id": "a", "image": "x/y"}, "config_id": "a/b"}"#).unwrap_err();
        assert!(e.starts_with("config_id:"), "{e}");
    }

    #[test]
    fn rows_merge_over_the_configuration_and_skip_disabled() {
        let j = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "configuration": {"parameters": {"a": 1, "b": {"c": 2}}},
                       "rows": [{"id": "r1", "configuration": {"parameters": {"b": {"d": 3}}}},
                                {"id": "r2", "is_disabled": true},
                                {"id": "r3"}]}"#)
        .unwrap();
        let rows = j.row_configurations().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.as_deref(), Some("r1"));
        assert_eq!(
            Value::Object(rows[0].1.parameters.clone()),
            serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}})
        );
        assert_eq!(rows[1].0.as_deref(), Some("r3"));
        assert_eq!(rows[1].1.parameters["a"], 1);
    }

    #[test]
    fn row_ids_choose_rows_disabled_ones_too_in_the_configuration_order() {
        let j = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "rows": [{"id": "r1"}, {"id": "r2", "is_disabled": true}, {"id": "r3"}],
                       "row_ids": ["r3", "r2"]}"#)
        .unwrap();
        let ids: Vec<Option<String>> = (j.row_configurations().unwrap())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [Some("r2".to_owned()), Some("r3".to_owned())]);
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "rows": [{"id": "r1"}], "row_ids": ["r9"]}"#)
        .unwrap_err();
        assert_eq!(
            e,
            "row_ids[0]: \"r9\" is not a row of the configuration (its rows: r1)"
        );
        let e =
            job(r#"{"component": {"id": "a", "image": "x/y"}, "row_ids": ["r1"]}"#).unwrap_err();
        assert_eq!(e, "row_ids[0]: \"r1\": the configuration has no rows");
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "rows": [{"id": "r1"}], "row_ids": ["r1", "r1"]}"#)
        .unwrap_err();
        assert_eq!(e, "row_ids[1]: \"r1\" appears twice");
    }

    #[test]
    fn a_job_without_a_configuration_of_its_own_runs_the_stored_one() {
        let stored = job(r#"{"component": "a", "config_id": "42", "row_ids": ["r1"]}"#).unwrap();
        assert!(
            stored.runs_stored_configuration(),
            "row_ids wait for the stored rows"
        );
        for inline in [
            r#"{"component": "a", "config_id": "42", "configuration": {}}"#,
            r#"{"component": "a", "config_id": "42", "rows": [{"id": "r"}]}"#,
            r#"{"component": "a"}"#,
        ] {
            assert!(
                !job(inline).unwrap().runs_stored_configuration(),
                "{inline}"
            );
        }
        let mut j = stored;
        let rows = vec![Row {
            id: "r2".into(),
            is_disabled: false,
            configuration: Map::new(),
        }];
        let e = j.use_stored(Configuration::default(), rows, 3).unwrap_err();
        assert!(e.starts_with("row_ids[0]: \"r1\" is not a row"), "{e}");
        assert_eq!(j.config_version.as_deref(), Some("3"));
    }

    #[test]
    fn bad_rows_are_refused_with_their_path() {
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "rows": [{"id": "r1", "configuration": {"storage": {"input": {"tabels": []}}}}]}"#)
        .unwrap_err();
        assert!(
            e.starts_with("rows[0].configuration.storage.input.tabels"),
            "{e}"
        );
        let e = job(
            r#"{"component": {"id": "a", "image": "x/y"}, "rows": [{"id": "r"}, {"id": "r"}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        // Every row disabled: nothing runs, as in the original.
        let j = job(r#"{"component": {"id": "a", "image": "x/y"}, "rows": [{"id": "r", "is_disabled": true}]}"#).unwrap();
        assert!(j.row_configurations().unwrap().is_empty());
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "rows": [{"id": "r", "configuration": {"runtime": {"process_timeout": 0}}}]}"#)
        .unwrap_err();
        assert_eq!(
            e,
            "rows[0].configuration.runtime.process_timeout: must be greater than 0"
        );
    }

    #[test]
    fn storage_mapping_is_typed() {
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "configuration": {"storage": {"input": {"tables": [{"source": "in.c-a.b", "limt": 1}]}}}}"#)
        .unwrap_err();
        assert!(
            e.starts_with("configuration.storage.input.tables[0].limt"),
            "{e}"
        );
    }

    #[test]
    fn a_component_named_by_id_is_read_from_the_known_components() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = job(r#"{"component": "acme.ex",
                           "configuration": {"processors": {"after": [
                               {"definition": {"component": "acme.proc", "tag": "2"},
                                "parameters": {"x": 1}}]}}}"#)
        .unwrap();
        assert!(j.component.is_reference());
        let e = j.resolve_components(dir.path()).unwrap_err();
        let text = crate::util::chain(&e);
        assert!(
            text.starts_with("component: \"acme.ex\" is not a known component"),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");

        std::fs::write(
            dir.path().join("acme.ex.json"),
            r#"{"id": "acme.ex", "image": "x/y", "memory": "1g"}"#,
        )
        .unwrap();
        let e = j.resolve_components(dir.path()).unwrap_err();
        let text = crate::util::chain(&e);
        assert!(
            text.starts_with(
                "configuration.processors.after[0].definition.component: \"acme.proc\" is not"
            ),
            "{text}"
        );
        std::fs::write(
            dir.path().join("acme.proc.json"),
            r#"{"id": "acme.proc", "image": "x/p", "process_timeout": 9}"#,
        )
        .unwrap();
        j.resolve_components(dir.path()).unwrap();
        assert_eq!(j.component.image, "x/y");
        assert_eq!(j.component.memory, MemoryLimit(1 << 30));
        assert_eq!(j.processor_components["acme.proc"].process_timeout, 9);
        let p = &j.configuration.processors.as_ref().unwrap().after[0];
        assert_eq!(p.definition.tag.as_deref(), Some("2"));
        assert_eq!(p.parameters["x"], 1);
    }

    #[test]
    fn processors_are_typed_and_set_in_one_place() {
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "configuration": {"processors": {"before": [{"definition": {}}]}}}"#)
        .unwrap_err();
        assert!(
            e.starts_with(
                "configuration.processors.before[0].definition: missing field `component`"
            ),
            "{e}"
        );
        let e = job(r#"{"component": {"id": "a", "image": "x/y"},
                       "configuration": {"processors": {"before": [{"definition": {"component": "p"}}]}},
                       "rows": [{"id": "r", "configuration": {"processors": {"after": [{"definition": {"component": "q"}}]}}}]}"#)
        .unwrap_err();
        assert!(e.starts_with("rows: processors are set"), "{e}");
        // An empty list in a row is none, as in the original.
        job(r#"{"component": {"id": "a", "image": "x/y"},
                "configuration": {"processors": {"before": [{"definition": {"component": "p"}}]}},
                "rows": [{"id": "r", "configuration": {"processors": {"after": []}}}]}"#)
        .unwrap();
        let e = job(r#"{"component": {"id": "a", "image": ""}}"#).unwrap_err();
        assert!(e.contains("image is empty"), "{e}");
        let e = job(r#"{"component": "../x"}"#).unwrap_err();
        assert!(e.starts_with("component.id:"), "{e}");
    }

    #[test]
    fn known_component_files_must_be_plain_names_holding_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let e = Component::load_known(dir.path(), ".hidden").unwrap_err();
        assert!(matches!(e, KnownComponentError::NotAName { .. }), "{e}");
        std::fs::write(dir.path().join("a.json"), r#"{"id": "b", "image": "x/y"}"#).unwrap();
        let e = Component::load_known(dir.path(), "a").unwrap_err();
        assert!(e.to_string().contains("holds component \"b\""), "{e}");
    }

    #[test]
    fn network_modes_parse() {
        let j = job(r#"{"component": {"id": "a", "image": "x/y", "network": "host"}}"#).unwrap();
        assert_eq!(j.component.network, NetworkMode::Host);
        assert!(job(r#"{"component": {"id": "a", "image": "x/y", "network": "wifi"}}"#).is_err());
    }
}
