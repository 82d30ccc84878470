//! An image's stack: its layer directories, top first, as `stacks/<chain>/layers` lists
//! them; and how overlayfs reads them (whiteouts, opaque directories).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::image::spec::ImageError;
use crate::layout::cache_of_stack;

pub use crate::layout::STACK_LIST as LAYERS_FILE;

/// An image's layer directories, top first.
#[derive(Debug, Clone)]
pub struct Stack {
    pub layers: Vec<PathBuf>,
}

impl Stack {
    /// Reads the stack at `dir` (see `ensure_stack`, which writes it); every layer it names must exist.
    pub fn open(dir: &Path) -> Result<Stack, ImageError> {
        let store_err = |source| ImageError::Store {
            path: dir.join(LAYERS_FILE),
            source,
        };
        let text = fs::read_to_string(dir.join(LAYERS_FILE)).map_err(store_err)?;
        let base = cache_of_stack(dir)
            .ok_or_else(|| store_err(io::Error::from(io::ErrorKind::NotFound)))?
            .layers();
        let layers: Vec<PathBuf> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| base.join(l))
            .collect();
        if let Some(missing) = layers.iter().find(|l| !l.is_dir()) {
            return Err(ImageError::Store {
                path: missing.clone(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        Ok(Stack { layers })
    }

    /// Where the image's `rel` is, looking through the layers as overlayfs does: the
    /// topmost layer that has it, unless a whiteout or an opaque directory above hides it.
    pub fn find(&self, rel: &Path) -> Option<PathBuf> {
        for layer in &self.layers {
            let mut dir = layer.clone();
            for part in rel.components() {
                dir.push(part);
                let meta = fs::symlink_metadata(&dir);
                if meta.as_ref().is_ok_and(is_whiteout) {
                    return None;
                }
                if dir.as_path() != layer.join(rel) && meta.is_ok_and(|m| !m.is_dir()) {
                    return None; // a file here hides what lower layers have below
                }
            }
            if fs::symlink_metadata(&dir).is_ok() {
                return Some(dir);
            }
            if opaque_on_the_way(layer, rel) {
                return None;
            }
        }
        None
    }
}

/// Whether a node is an overlay whiteout (a 0/0 character device).
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether a directory is marked opaque (either xattr namespace).
pub fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 1];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            rustix::fs::lgetxattr(dir, *name, &mut value).is_ok_and(|n| n == 1 && value[0] == b'y')
        })
}

/// Whether a directory of `layer` above `rel` is opaque (hiding lower layers' content).
fn opaque_on_the_way(layer: &Path, rel: &Path) -> bool {
    let mut dir = layer.to_path_buf();
    rel.parent()
        .into_iter()
        .flat_map(Path::components)
        .any(|part| {
            dir.push(part);
            is_opaque(&dir)
        })
}
