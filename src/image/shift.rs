//! Owners in a container's id range: a file the image gives to uid N belongs to host uid
//! start+N, so inside the container's user namespace it is N again, and on the host it is
//! nobody's. The layer extractor writes owners so as it unpacks (see unpack.rs); this is
//! its error when an image names an id the range lacks.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error(
        "{path} is owned by {what} {id}, outside the {size} ids a container has{}",
        fix_for(*size)
    )]
    OutOfRange {
        path: PathBuf,
        what: &'static str,
        id: u32,
        size: u32,
    },
    #[error("cannot change the owner of {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to do when a container has a single id: a rootless operator without subordinate ids.
fn fix_for(size: u32) -> &'static str {
    if size == 1 {
        " (you have no subordinate ids: as root, give yourself a range with `usermod \
         --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, one no other user has)"
    } else {
        ""
    }
}
