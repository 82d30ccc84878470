//! Ctrl-C and SIGTERM: noticed, not fatal.
//!
//! berth must never die half-way with a container running and a working directory on disk,
//! so the binary installs handlers that only set a flag and wake a pipe. Long work (pulls,
//! unpacks, a running container) checks [`requested`] and unwinds through its normal
//! cleanup; the runtime's wait loop also polls [`wake_fd`].

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE: OnceLock<UnixStream> = OnceLock::new();

/// Installs the handlers for SIGINT and SIGTERM. Call once, early in `main`.
pub fn install() -> std::io::Result<()> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let w = writer.try_clone()?;
        // SAFETY: the handler only stores into atomics and writes one byte to a
        // non-blocking socket; both are async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                REQUESTED.store(true, Ordering::SeqCst);
                let _ = std::io::Write::write(&mut &w, &[1]);
            })?;
        }
    }
    let _ = WAKE.set(reader);
    Ok(())
}

/// True once the operator asked berth to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A descriptor that becomes readable when a stop is requested (absent if handlers were
/// never installed, as in unit tests).
pub fn wake_fd() -> Option<BorrowedFd<'static>> {
    WAKE.get().map(|s| s.as_fd())
}

/// Fails with [`Interrupted`] once a stop was requested.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by the operator")]
pub struct Interrupted;
