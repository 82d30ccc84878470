//! The `berth` binary: argument parsing, logging, signal handling and exit statuses.
//! Everything else lives in the library.

mod cli;

use std::process::ExitCode;

use berth::contract::ErrorClass;
use berth::host::Rootless;
use berth::host::userns::{self, Side};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Nothing berth writes is for other local users: job data and config.json (which hold
    // secrets), the storage, and images' setuid-root binaries in the cache. Where a mode must
    // be wider (an image's own files, directories a container user must traverse) it is set
    // explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // First, while berth has one thread: the re-executed berth of a rootless operator enters
    // its user namespace here.
    // Before anything else: what berth's parent left open or announced is not berth's.
    if let Err(e) = berth::host::inherited::distrust() {
        cli::print::err(format!(
            "berth: cannot close inherited descriptors on exec: {e}"
        ));
        return ExitCode::from(ErrorClass::Internal.exit_status());
    }
    let side = match userns::enter_if_asked() {
        Ok(side) => side,
        Err(e) => {
            cli::print::err(format!("berth: {}", berth::util::chain(&e)));
            return ExitCode::from(userns_class(&e).exit_status());
        }
    };
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet, cli.global.log_format);
    let rootless = match side {
        Side::Inside(r) => Some(r),
        Side::Outside if !nix::unistd::geteuid().is_root() && cli.command.needs_namespace() => {
            return rootless(&Rootless::operator());
        }
        Side::Outside => None,
    };
    if let Err(e) = berth::interrupt::install() {
        tracing::warn!("cannot install signal handlers ({e}); Ctrl-C will not clean up");
    }
    match cli::dispatch(cli, rootless) {
        Ok(code) => code,
        Err(e) => {
            cli::print::err(format!("berth: {e:#}"));
            ExitCode::from(ErrorClass::Internal.exit_status())
        }
    }
}

/// Whose fault a failure to enter the user namespace is. Every variant is listed: a new
/// one must be classified here.
fn userns_class(e: &userns::UsernsError) -> ErrorClass {
    use userns::UsernsError;
    match e {
        // The operator's environment names a marker berth did not set.
        UsernsError::Untrusted(_) => ErrorClass::User,
        UsernsError::Spawn(_)
        | UsernsError::Sync(_)
        | UsernsError::Unshare(_)
        | UsernsError::MapperMissing { .. }
        | UsernsError::MapperFailed { .. }
        | UsernsError::SelfMap(_)
        | UsernsError::BecomeRoot(_)
        | UsernsError::Exec(_) => ErrorClass::Internal,
    }
}

/// Runs the command again inside a user namespace of the operator's own (see
/// `berth::host::userns`), and ends with its status.
fn rootless(me: &Rootless) -> ExitCode {
    if me.subordinate.is_none() {
        tracing::warn!(
            "you have no subordinate ids in /etc/subuid and /etc/subgid: containers run as you \
             alone, and images with files of other owners cannot be used (as root: \
             usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {})",
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(me.uid))
                .ok()
                .flatten()
                .map_or_else(|| me.uid.to_string(), |u| u.name)
        );
    }
    match userns::reexec(me) {
        Ok(status) => ExitCode::from(userns::exit_code(status)),
        Err(e) => {
            cli::print::err(format!("berth: {}", berth::util::chain(&e)));
            ExitCode::from(ErrorClass::Internal.exit_status())
        }
    }
}

fn init_logging(verbose: u8, quiet: bool, format: cli::LogFormat) {
    // libcgroups warns about every v1 controller this host lacks on every container; that
    // is noise for an operator (berth reports what it cannot enforce itself).
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,berth=info,libcgroups=error,libcontainer=error",
        (false, 1) => "info,berth=debug,libcgroups=error,libcontainer=warn",
        (false, _) => "debug,libcgroups=warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // Its own complaint about a closed stderr is an `eprintln!`, which panics there.
        .log_internal_errors(false)
        .with_target(verbose > 0);
    if format == cli::LogFormat::Json {
        cli::print::json_lines();
        // Span fields are kept as text inside the JSON: no colours there.
        builder
            .with_ansi(false)
            .event_format(cli::log::JsonLines)
            .init();
        return;
    }
    // -vv shows time since start: where a run spends it.
    if verbose >= 2 {
        builder
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    } else {
        builder.without_time().init();
    }
}
