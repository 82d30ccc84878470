//! berth's exit status for a failed command, in a leaf: every command reports its
//! failures through it, and the dispatcher in `mod.rs` reaches every command.

use std::process::ExitCode;

use berth::contract::ErrorClass;

/// berth's exit status for a failure of the given class.
pub(super) fn status(class: ErrorClass) -> ExitCode {
    ExitCode::from(class.exit_status())
}
