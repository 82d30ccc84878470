//! The image cache's layout on disk, written down once: every path under the cache is
//! joined here, and nowhere else.
//!
//! ```text
//! <cache>/blobs/sha256/<hex>       manifests, configs and layers, verified before they land
//! <cache>/refs/<hex>.json          what a reference resolved to (hex: sha256 of the reference)
//! <cache>/layers/<name>/           one unpacked layer (its diff id, or a chain id with the
//!                                  id range it is owned in)
//! <cache>/stacks/<name>/layers     the layer names of one image, top first, and etc/ files
//! <cache>/locks/<name>.lock        flock-ed by the berth fetching a blob or unpacking a layer
//! <cache>/leases/<chain>/<pid>.<random>   flock-ed by a live berth whose job uses a stack
//! <cache>/tmp/<label>.<pid>.<random>      downloads and unpacks in progress
//! <cache>/rootfs/                  flattened trees of earlier versions (prune removes them)
//! ```
//!
//! The root is private (0700): images carry setuid-root binaries and whatever their layers
//! hold. What is below keeps its modes: the root alone closes the tree.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The image cache at one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates every folder a berth writes into and closes the root to 0700, also when it
    /// exists with looser bits. Nothing is swept or removed.
    pub fn ensure(&self) -> Result<(), (PathBuf, io::Error)> {
        for dir in [
            self.blobs(),
            self.refs(),
            self.layers(),
            self.stacks(),
            self.locks(),
            self.tmp(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| (dir, e))?;
        }
        let private = || -> io::Result<()> {
            if fs::metadata(&self.root)?.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        };
        private().map_err(|e| (self.root.clone(), e))
    }

    /// Blobs by the hex of their sha256 digest.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob(&self, hex: &str) -> PathBuf {
        self.blobs().join(hex)
    }

    /// Image records.
    pub fn refs(&self) -> PathBuf {
        self.root.join("refs")
    }

    /// The record of the reference whose sha256 is `hex`.
    pub fn record(&self, hex: &str) -> PathBuf {
        self.refs().join(format!("{hex}.json"))
    }

    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub fn layer(&self, name: &str) -> PathBuf {
        self.layers().join(name)
    }

    pub fn stacks(&self) -> PathBuf {
        self.root.join("stacks")
    }

    pub fn stack(&self, name: &str) -> PathBuf {
        self.stacks().join(name)
    }

    /// The list of layers a stack names, top first.
    pub fn stack_list(&self, name: &str) -> PathBuf {
        self.stack(name).join(STACK_LIST)
    }

    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub fn lock(&self, name: &str) -> PathBuf {
        self.locks().join(format!("{name}.lock"))
    }

    pub fn leases(&self) -> PathBuf {
        self.root.join("leases")
    }

    /// The leases on the stack (or legacy tree) named by the chain id `hex`.
    pub fn lease(&self, hex: &str) -> PathBuf {
        self.leases().join(hex)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh, unique path under `tmp/` for work that lands by rename:
    /// `<label>.<pid>.<random>`, so a sweep can tell whose it is.
    pub fn temp(&self, label: &str) -> PathBuf {
        self.tmp().join(format!(
            "{label}.{}.{}",
            std::process::id(),
            crate::util::random_hex(6)
        ))
    }

    /// Flattened root filesystems earlier versions kept.
    pub fn legacy_rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    /// What counts towards the cache's size: blobs, layers, stacks, old trees, temporary.
    pub fn sized(&self) -> [PathBuf; 5] {
        [
            self.root.join("blobs"),
            self.layers(),
            self.stacks(),
            self.legacy_rootfs(),
            self.tmp(),
        ]
    }
}

/// The file of a stack that lists its layers, top first.
pub const STACK_LIST: &str = "layers";

/// The cache a stack directory belongs to (`<cache>/stacks/<name>`).
pub fn cache_of_stack(stack: &Path) -> Option<Cache> {
    stack.parent()?.parent().map(Cache::new)
}
