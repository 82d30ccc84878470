//! Writing to the operator without ever panicking: `println!` panics when stdout is a closed
//! pipe (`berth storage tables | head`), which would abort a job half-way. A closed stdout
//! ends a listing early; a closed stderr loses a message; neither changes an exit status.

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes one line to stdout; `false` once stdout is gone (the caller may stop producing).
pub fn out(line: impl Display) -> bool {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// Writes lines to stdout until they end or stdout is gone.
pub fn lines<I, T>(lines: I)
where
    I: IntoIterator<Item = T>,
    T: Display,
{
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    for line in lines {
        if writeln!(stdout, "{line}").is_err() {
            return;
        }
    }
    let _ = stdout.flush();
}

/// Writes one line to stderr, if stderr is still there: as a JSON log line under
/// `--log-format json` (see [`json_lines`]), so that every line there parses.
pub fn err(line: impl Display) {
    if JSON_LINES.load(Ordering::Relaxed) {
        err_raw(super::log::operator_line(&line.to_string()));
    } else {
        err_raw(line);
    }
}

/// Writes one line to stderr as it is.
pub fn err_raw(line: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// What [`err`] writes is JSON log lines from now on.
pub fn json_lines() {
    JSON_LINES.store(true, Ordering::Relaxed);
}

static JSON_LINES: AtomicBool = AtomicBool::new(false);
