//! `berth config …` and `berth oauth …`: the configurations and OAuth credentials a project
//! keeps in its store. `put` encrypts the plain `#` values as `berth encrypt` does before
//! anything is stored; `show` and `list` print them as stored, ciphertexts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use berth::contract::ErrorClass;
use berth::contract::stored::{ConfigurationFile, RowFile};
use berth::job::Settings;
use berth::secrets::{self, Ids, Keyring, Scope, SecretsError};
use berth::storage::{OAuthCredentials, Storage, StorageError, StoredConfiguration, StoredRow};

use super::print;
use super::status::status;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Store a configuration of a component (and its rows), replacing the one of that id
    ///
    /// FILE is JSON: {"name": …, "configuration": {…as a job file's configuration…},
    /// "rows": [{"id": …, "name": …, "is_disabled": false, "configuration": {…}}]}; it is
    /// checked as a job that runs it would be. Plain `#` values are encrypted as `berth
    /// encrypt` would, for the component, the project and (with --scope config) this
    /// configuration; ciphertexts are kept as they are. Each put makes a new version,
    /// which the job's components see as KBC_CONFIGVERSION.
    #[command(after_help = "Examples:\n  \
        berth config put keboola.ex-db-mysql 42 orders.json\n  \
        berth config put keboola.ex-db-mysql 42 orders.json --scope config\n\n\
        A job file then names it instead of carrying it, with only some of its rows:\n  \
        {\"component\": \"keboola.ex-db-mysql\", \"config_id\": \"42\", \"row_ids\": [\"r1\"]}")]
    Put(PutArgs),
    /// Print a stored configuration as `put` reads it, `#` values as ciphertexts
    Show {
        /// The component id, e.g. keboola.ex-db-mysql
        component: String,
        /// The configuration id
        id: String,
    },
    /// List the stored configurations: component, id, version, rows, last put, name
    List {
        /// Only this component's
        component: Option<String>,
        /// Print JSON (everything stored, ciphertexts for secrets) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a stored configuration (its states stay)
    Rm {
        /// The component id
        component: String,
        /// The configuration id
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OAuthCommand {
    /// Store OAuth credentials of a component under an id, replacing those of that id
    ///
    /// FILE is the JSON object the original's OAuth broker answers with (`id`,
    /// `authorizedFor`, `creator`, `created`, `oauthVersion`, `appKey`, `#appSecret`,
    /// `#data`, …). A configuration whose `authorization.oauth_api` has this `id` and no
    /// `credentials` gets them, as stored with `#` values decrypted, in
    /// `authorization.oauth_api.credentials` of its config.json. Plain `#` values are
    /// encrypted for the component (and project) first; ciphertexts are kept.
    #[command(after_help = "Examples:\n  \
        berth oauth put keboola.ex-google-drive main credentials.json\n  \
        berth oauth show keboola.ex-google-drive main\n\n\
        A configuration then says only which:\n  \
        {\"authorization\": {\"oauth_api\": {\"id\": \"main\"}}, \"parameters\": {…}}")]
    Put(OAuthPutArgs),
    /// Print stored OAuth credentials, `#` values as ciphertexts
    Show {
        /// The component id
        component: String,
        /// The credentials' id
        id: String,
    },
    /// List the stored OAuth credentials: component, id, last put, authorized for
    List {
        /// Only this component's
        component: Option<String>,
        /// Print JSON (everything stored, ciphertexts for secrets) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove stored OAuth credentials
    Rm {
        /// The component id
        component: String,
        /// The credentials' id
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The component id, e.g. keboola.ex-db-mysql
    pub component: String,
    /// The configuration id (what a job file's `config_id` names)
    pub id: String,
    /// The configuration (JSON); `-` reads stdin
    pub file: PathBuf,
    /// The project its secrets are for (the `project_id` of the jobs that run it)
    #[arg(long, value_name = "P", default_value = "1")]
    pub project: String,
    /// What plain `#` values are encrypted for: component, project (component + project),
    /// config (component + project + this configuration) or project-wide
    #[arg(long, default_value = "project", value_name = "SCOPE")]
    pub scope: Scope,
}

#[derive(Debug, Args)]
pub struct OAuthPutArgs {
    /// The component id, e.g. keboola.ex-google-drive
    pub component: String,
    /// The credentials' id (what `authorization.oauth_api.id` names)
    pub id: String,
    /// The credentials (a JSON object); `-` reads stdin
    pub file: PathBuf,
    /// The project its secrets are for (the `project_id` of the jobs that use them)
    #[arg(long, value_name = "P", default_value = "1")]
    pub project: String,
    /// What plain `#` values are encrypted for: component, project (component + project)
    /// or project-wide
    #[arg(long, default_value = "project", value_name = "SCOPE", value_parser = oauth_scope)]
    pub scope: Scope,
}

/// Credentials serve every configuration of their component: none may be bound to one.
fn oauth_scope(s: &str) -> Result<Scope, String> {
    match s.parse::<Scope>()? {
        Scope::Config => Err(
            "credentials serve every configuration of the component: use component, project \
             or project-wide"
                .to_owned(),
        ),
        scope => Ok(scope),
    }
}

/// Why a `config` or `oauth` command failed.
#[derive(Debug, thiserror::Error)]
enum ConfigsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("configuration {id} of component {component} is not stored")]
    NoConfiguration { component: String, id: String },
    #[error("OAuth credentials {id} of component {component} are not stored")]
    NoCredentials { component: String, id: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl ConfigsError {
    fn class(&self) -> ErrorClass {
        match self {
            ConfigsError::Read { .. } | ConfigsError::Invalid { .. } => ErrorClass::User,
            ConfigsError::NoConfiguration { .. } | ConfigsError::NoCredentials { .. } => {
                ErrorClass::User
            }
            ConfigsError::Storage(e) if e.is_user_error() => ErrorClass::User,
            ConfigsError::Storage(_) => ErrorClass::Internal,
            ConfigsError::Secrets(e) => e.class(),
        }
    }
}

pub fn config(settings: &Settings, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    Ok(finish(run_config(settings, command)))
}

pub fn oauth(settings: &Settings, command: OAuthCommand) -> anyhow::Result<ExitCode> {
    Ok(finish(run_oauth(settings, command)))
}

fn finish(done: Result<(), ConfigsError>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            status(e.class())
        }
    }
}

fn open(settings: &Settings) -> Result<Box<dyn Storage>, ConfigsError> {
    Ok(berth::storage::open(&settings.store)?)
}

fn run_config(settings: &Settings, command: ConfigCommand) -> Result<(), ConfigsError> {
    match command {
        ConfigCommand::Put(args) => put_config(settings, &args),
        ConfigCommand::Show { component, id } => {
            let stored = open(settings)?.configuration(&component, &id)?;
            let stored = stored.ok_or_else(|| ConfigsError::NoConfiguration { component, id })?;
            print_json(&file_of(stored))
        }
        ConfigCommand::List { component, json } => {
            let list = open(settings)?.configurations(component.as_deref())?;
            if json {
                return print_json(&list);
            }
            print_configurations(&list);
            Ok(())
        }
        ConfigCommand::Rm { component, id } => {
            if !open(settings)?.remove_configuration(&component, &id)? {
                return Err(ConfigsError::NoConfiguration { component, id });
            }
            print::out(format!(
                "removed configuration {id} of component {component}"
            ));
            Ok(())
        }
    }
}

fn run_oauth(settings: &Settings, command: OAuthCommand) -> Result<(), ConfigsError> {
    match command {
        OAuthCommand::Put(args) => put_oauth(settings, &args),
        OAuthCommand::Show { component, id } => {
            let stored = open(settings)?.oauth_credentials(&component, &id)?;
            let stored = stored.ok_or_else(|| ConfigsError::NoCredentials { component, id })?;
            print_json(&stored.credentials)
        }
        OAuthCommand::List { component, json } => {
            let list = open(settings)?.list_oauth_credentials(component.as_deref())?;
            if json {
                return print_json(&list);
            }
            print_credentials(&list);
            Ok(())
        }
        OAuthCommand::Rm { component, id } => {
            if !open(settings)?.remove_oauth_credentials(&component, &id)? {
                return Err(ConfigsError::NoCredentials { component, id });
            }
            print::out(format!(
                "removed OAuth credentials {id} of component {component}"
            ));
            Ok(())
        }
    }
}

fn put_config(settings: &Settings, args: &PutArgs) -> Result<(), ConfigsError> {
    let text = read(&args.file)?;
    let invalid = |message: String| ConfigsError::Invalid {
        path: args.file.clone(),
        message,
    };
    let file = ConfigurationFile::parse(&text, &args.component, &args.id).map_err(invalid)?;
    let mut value = serde_json::to_value(&file).map_err(|e| invalid(e.to_string()))?;
    let ids = Ids {
        component: &args.component,
        project: &args.project,
        config: Some(&args.id),
    };
    let encrypted = seal(settings, &mut value, args.scope, &ids)?;
    let file: ConfigurationFile =
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    let stored = open(settings)?.put_configuration(&stored_of(&args.component, &args.id, file))?;
    print::out(format!(
        "stored configuration {} of component {} (version {}, {} rows, {encrypted} values \
         encrypted)",
        stored.id,
        stored.component,
        stored.version,
        stored.rows.len()
    ));
    Ok(())
}

fn put_oauth(settings: &Settings, args: &OAuthPutArgs) -> Result<(), ConfigsError> {
    let text = read(&args.file)?;
    let invalid = |message: String| ConfigsError::Invalid {
        path: args.file.clone(),
        message,
    };
    let mut value: Value = serde_json::from_slice(&text).map_err(|e| {
        invalid(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(invalid("OAuth credentials are a JSON object".to_owned()));
    }
    let ids = Ids {
        component: &args.component,
        project: &args.project,
        config: None,
    };
    let encrypted = seal(settings, &mut value, args.scope, &ids)?;
    let creds = OAuthCredentials {
        component: args.component.clone(),
        id: args.id.clone(),
        credentials: value,
        updated_ms: 0,
    };
    open(settings)?.put_oauth_credentials(&creds)?;
    print::out(format!(
        "stored OAuth credentials {} of component {} ({encrypted} values encrypted)",
        args.id, args.component
    ));
    Ok(())
}

/// Encrypts the plain `#` values of `value`; returns how many. The master key is read (or,
/// with an embedded store, made) only when there is one.
fn seal(
    settings: &Settings,
    value: &mut Value,
    scope: Scope,
    ids: &Ids<'_>,
) -> Result<usize, SecretsError> {
    if secrets::plain_secrets(value).is_empty() {
        return Ok(0);
    }
    let key_file = settings.secrets_key();
    // With a shared store, every host needs the same key: none is made here.
    let ring = if settings.store.is_shared() {
        Keyring::load_existing(&key_file)?
    } else {
        Keyring::load_or_create(&key_file)?
    };
    secrets::encrypt_tree(value, scope, ids, &ring)
}

/// The content of `path`, or of stdin for `-`.
fn read(path: &Path) -> Result<Vec<u8>, ConfigsError> {
    let failed = |source| ConfigsError::Read {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(failed)?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(failed)
}

fn stored_of(component: &str, id: &str, file: ConfigurationFile) -> StoredConfiguration {
    StoredConfiguration {
        component: component.to_owned(),
        id: id.to_owned(),
        name: file.name,
        configuration: Value::Object(file.configuration),
        rows: (file.rows.into_iter())
            .map(|r| StoredRow {
                id: r.id,
                name: r.name,
                is_disabled: r.is_disabled,
                configuration: Value::Object(r.configuration),
            })
            .collect(),
        version: 0,
        updated_ms: 0,
    }
}

/// A stored configuration as `put` reads it.
fn file_of(stored: StoredConfiguration) -> ConfigurationFile {
    let object = |v: Value| match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    ConfigurationFile {
        name: stored.name,
        configuration: object(stored.configuration),
        rows: (stored.rows.into_iter())
            .map(|r| RowFile {
                id: r.id,
                name: r.name,
                is_disabled: r.is_disabled,
                configuration: object(r.configuration),
            })
            .collect(),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), ConfigsError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ConfigsError::Invalid {
        path: PathBuf::from("output"),
        message: e.to_string(),
    })?;
    print::out(text);
    Ok(())
}

fn print_configurations(list: &[StoredConfiguration]) {
    let cw = width(list.iter().map(|c| c.component.len()), "COMPONENT");
    let iw = width(list.iter().map(|c| c.id.len()), "ID");
    let now = berth::util::unix_now();
    let header = format!(
        "{:<cw$}  {:<iw$}  VERSION  ROWS  UPDATED          NAME",
        "COMPONENT", "ID"
    );
    let rows = list.iter().map(|c| {
        let updated = berth::util::ago(ms_to_time(c.updated_ms), now);
        format!(
            "{:<cw$}  {:<iw$}  {:>7}  {:>4}  {updated:<15}  {}",
            c.component,
            c.id,
            c.version,
            c.rows.len(),
            c.name
        )
    });
    print::lines(std::iter::once(header).chain(rows));
}

fn print_credentials(list: &[OAuthCredentials]) {
    let cw = width(list.iter().map(|c| c.component.len()), "COMPONENT");
    let iw = width(list.iter().map(|c| c.id.len()), "ID");
    let now = berth::util::unix_now();
    let header = format!(
        "{:<cw$}  {:<iw$}  UPDATED          AUTHORIZED FOR",
        "COMPONENT", "ID"
    );
    let rows = list.iter().map(|c| {
        let updated = berth::util::ago(ms_to_time(c.updated_ms), now);
        let who = c.credentials["authorizedFor"].as_str().unwrap_or("");
        format!("{:<cw$}  {:<iw$}  {updated:<15}  {who}", c.component, c.id)
    });
    print::lines(std::iter::once(header).chain(rows));
}

fn width(lens: impl Iterator<Item = usize>, header: &str) -> usize {
    lens.max().unwrap_or(0).max(header.len())
}

fn ms_to_time(ms: i64) -> u64 {
    u64::try_from(ms / 1000).unwrap_or(0)
}
