//! `berth login` and `berth logout`: berth's own registry credentials, in `<home>/auth.json`
//! (mode 0600, the containers-auth.json(5) format), the last place pulls look — or in the
//! file `--authfile` / `REGISTRY_AUTH_FILE` names, the first.

use std::process::ExitCode;

use clap::Args;

use berth::contract::ErrorClass;
use berth::image::AuthError;
use berth::image::RegistryClient;
use berth::image::auth::{self, Credentials};
use berth::job::Settings;

use super::print;
use super::status::status;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, host[:port] [default: the first of registries.conf's
    /// unqualified-search-registries, as podman login]
    pub registry: Option<String>,
    /// The user name [default: asked on the terminal]
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from stdin (its first line) instead of asking for it
    #[arg(long)]
    pub password_stdin: bool,
    /// Store the credentials without checking them against the registry
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry, host[:port] [default: the first of registries.conf's
    /// unqualified-search-registries, as podman logout]
    pub registry: Option<String>,
}

/// `given`, else the first search registry of registries.conf; the user's error when
/// neither names one.
fn registry_of(settings: &Settings, given: Option<&str>) -> Result<String, (ErrorClass, String)> {
    if let Some(registry) = given {
        return Ok(registry.to_owned());
    }
    let conf = &settings.registry.registries;
    conf.first_search_registry()
        .map(str::to_owned)
        .ok_or_else(|| {
            let files: Vec<String> = conf.files.iter().map(|f| f.display().to_string()).collect();
            (
                ErrorClass::User,
                format!(
                    "name the registry to log in to: no unqualified-search-registries in \
                 registries.conf to take the first of (read: {})",
                    if files.is_empty() {
                        "none".to_owned()
                    } else {
                        files.join(", ")
                    }
                ),
            )
        })
}

pub fn login(settings: &Settings, args: &LoginArgs) -> ExitCode {
    match try_login(settings, args) {
        Ok(registry) => {
            print::out(format!("logged in to {registry}"));
            ExitCode::SUCCESS
        }
        Err((class, message)) => {
            print::err(format!("berth: {message}"));
            status(class)
        }
    }
}

/// Logs in; the registry logged in to.
fn try_login(settings: &Settings, args: &LoginArgs) -> Result<String, (ErrorClass, String)> {
    let fail = |e: AuthError| (e.class(), berth::util::chain(&e));
    let registry = registry_of(settings, args.registry.as_deref())?;
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => {
            return Err((
                ErrorClass::User,
                "--password-stdin needs --username".to_owned(),
            ));
        }
        None => read_username().map_err(fail)?,
    };
    let password = auth::read_password(args.password_stdin).map_err(fail)?;
    let credentials = Credentials {
        username,
        password,
        source: "berth login".to_owned(),
    };
    if !args.no_check {
        RegistryClient::check_login(&registry, &settings.registry, credentials.clone())
            .map_err(|e| (e.class(), berth::util::chain(&e)))?;
    }
    auth::store(&login_file(settings), &registry, &credentials).map_err(fail)?;
    Ok(registry)
}

/// Where `berth login` writes and `berth logout` removes: `--authfile` /
/// `REGISTRY_AUTH_FILE` as podman's do, else berth's own file.
fn login_file(settings: &Settings) -> std::path::PathBuf {
    settings
        .registry
        .authfile
        .clone()
        .unwrap_or_else(|| auth::berth_auth_file(&settings.home))
}

fn read_username() -> Result<String, AuthError> {
    use std::io::BufRead;
    eprint!("Username: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(AuthError::Prompt)?;
    Ok(line.trim().to_owned())
}

pub fn logout(settings: &Settings, args: &LogoutArgs) -> ExitCode {
    let path = login_file(settings);
    let registry = match registry_of(settings, args.registry.as_deref()) {
        Ok(r) => r,
        Err((class, message)) => {
            print::err(format!("berth: {message}"));
            return status(class);
        }
    };
    match auth::remove(&path, &registry) {
        Ok(true) => {
            print::out(format!("logged out of {registry}"));
            ExitCode::SUCCESS
        }
        Ok(false) => {
            print::err(format!(
                "berth: no credentials for {registry} in {}",
                path.display()
            ));
            status(ErrorClass::User)
        }
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            status(e.class())
        }
    }
}
