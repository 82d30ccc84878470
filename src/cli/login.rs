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
    /// The registry, host[:port]
    pub registry: String,
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
    /// The registry, host[:port]
    pub registry: String,
}

pub fn login(settings: &Settings, args: &LoginArgs) -> ExitCode {
    match try_login(settings, args) {
        Ok(()) => {
            print::out(format!("logged in to {}", args.registry));
            ExitCode::SUCCESS
        }
        Err((class, message)) => {
            print::err(format!("berth: {message}"));
            status(class)
        }
    }
}

fn try_login(settings: &Settings, args: &LoginArgs) -> Result<(), (ErrorClass, String)> {
    let fail = |e: AuthError| (e.class(), berth::util::chain(&e));
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
        RegistryClient::check_login(&args.registry, &settings.registry, credentials.clone())
            .map_err(|e| (e.class(), berth::util::chain(&e)))?;
    }
    auth::store(&login_file(settings), &args.registry, &credentials).map_err(fail)
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
    match auth::remove(&path, &args.registry) {
        Ok(true) => {
            print::out(format!("logged out of {}", args.registry));
            ExitCode::SUCCESS
        }
        Ok(false) => {
            print::err(format!(
                "berth: no credentials for {} in {}",
                args.registry,
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
