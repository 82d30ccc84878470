//! `berth encrypt`: turns a configuration's `#` values into ciphertexts bound to a scope,
//! and rotates the master key.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use berth::contract::ErrorClass;
use berth::job::Settings;
use berth::secrets::{self, Ids, Keyring, Scope};

use super::print;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    berth encrypt --component acme.ex config.json > config.encrypted.json\n  \
    echo '{\"#token\": \"t0ps3cret\"}' | berth encrypt --component acme.ex --scope component\n  \
    berth encrypt --rotate-key")]
pub struct EncryptArgs {
    /// The component the values are for
    #[arg(long, value_name = "ID", required_unless_present = "rotate_key")]
    pub component: Option<String>,
    /// The project the values are for (a job's `project_id`)
    #[arg(long, value_name = "P", default_value = "1")]
    pub project: String,
    /// The configuration the values are for (a job's `config_id`; needed by --scope config)
    #[arg(long, value_name = "C")]
    pub config: Option<String>,
    /// What the ciphertexts are bound to: component, project (component + project), config
    /// (component + project + configuration) or project-wide (every component of the project)
    #[arg(long, default_value = "project", value_name = "SCOPE")]
    pub scope: Scope,
    /// Add a new master key and make it current (older keys stay, so older ciphertexts
    /// still decrypt); without --component, only this
    #[arg(long)]
    pub rotate_key: bool,
    /// The master key file [default: <home>/secrets/keys.json; created on first use]
    #[arg(long, env = berth::job::SECRETS_KEY_ENV, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The JSON to encrypt [default: stdin]
    pub file: Option<PathBuf>,
}

/// Prints the JSON with every plain `#` value encrypted.
pub fn encrypt(settings: &Settings, args: &EncryptArgs) -> anyhow::Result<ExitCode> {
    let key_file = args
        .key_file
        .clone()
        .unwrap_or_else(|| settings.secrets_key());
    if args.rotate_key {
        match Keyring::rotate(&key_file) {
            Ok(id) => {
                print::err(format!(
                    "master key {id} of {} is now current; older keys stay for older \
                     ciphertexts",
                    key_file.display()
                ));
                if settings.store.is_shared() {
                    print::err(
                        "the store is shared: copy this key file to every host of it before \
                         any job encrypts with the new key",
                    );
                }
            }
            Err(e) => return Ok(failed(&e)),
        }
    }
    let Some(component) = &args.component else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut value = match read_json(args.file.as_ref()) {
        Ok(v) => v,
        Err(message) => {
            print::err(format!("berth: {message}"));
            return Ok(ExitCode::from(ErrorClass::User.exit_status()));
        }
    };
    let ids = Ids {
        component,
        project: &args.project,
        config: args.config.as_deref(),
    };
    // With a shared store, every host needs the same key: none is made here.
    let ring = if settings.store.is_shared() {
        Keyring::load_existing(&key_file)
    } else {
        Keyring::load_or_create(&key_file)
    };
    let encrypted =
        ring.and_then(|ring| secrets::encrypt_tree(&mut value, args.scope, &ids, &ring));
    if let Err(e) = encrypted {
        return Ok(failed(&e));
    }
    print::out(serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

fn failed(e: &secrets::SecretsError) -> ExitCode {
    print::err(format!("berth: {}", berth::util::chain(e)));
    ExitCode::from(e.class().exit_status())
}

/// The JSON of `file`, or of stdin; the error names where it came from (never its content:
/// it holds secrets).
fn read_json(file: Option<&PathBuf>) -> Result<serde_json::Value, String> {
    let (text, name) = match file {
        Some(path) => (
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            path.display().to_string(),
        ),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            (buf, "stdin".to_owned())
        }
    };
    serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{name} is not JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}
