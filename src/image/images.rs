//! The local image store and what a command asks of it: list, remove, prune, and the
//! [`Puller`] and [`Unpacker`] that fill it and unpack from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::content::Store;
use super::distribution::RegistrySettings;
use super::inspect::{self, Inspection};
use super::layers::prune::{self, PruneError, PruneLimits, Removed};
use super::layers::unpack::Budget;
use super::layers::{UnpackCaps, Unpacking, ensure_stack};
use super::pull::{PulledImage, Puller};
use super::spec::ImageError;
use super::spec::digest::chain_id;
use super::spec::record::ImageRecord;
use super::verify::SignaturePolicy;

/// The local image store. Opening it creates it and closes its root; it sweeps nothing
/// (see [`Images::sweep_leftovers`]).
#[derive(Debug)]
pub struct Images {
    store: Store,
}

impl Images {
    pub fn open(cache: &Path) -> Result<Images, ImageError> {
        Ok(Images {
            store: Store::open(cache)?,
        })
    }

    /// Waits at most `wait` for another berth fetching or unpacking a blob or layer this
    /// one needs (`--pull-timeout`).
    #[must_use]
    pub fn with_lock_wait(self, wait: Duration) -> Images {
        Images {
            store: self.store.with_lock_wait(wait),
        }
    }

    /// Removes what berths no longer running left in the store's `tmp/` over an hour ago;
    /// returns how many entries and their bytes.
    pub fn sweep_leftovers(&self) -> (usize, u64) {
        prune::sweep_temp(&self.store.cache().tmp(), prune::TEMP_MAX_AGE)
    }

    /// Every image stored, sorted by reference.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.store.records()
    }

    /// `berth inspect`: what the store holds of `image` (a reference as pulled, or a
    /// digest), read without asking any registry.
    pub fn inspect(&self, image: &str) -> Result<Inspection, ImageError> {
        inspect::inspect(&self.store, image)
    }

    /// `berth rmi`: removes the image's record, then each blob and layer no other image
    /// references; refuses an image a live job leases.
    pub fn remove(&self, image: &str) -> Result<Removed, PruneError> {
        prune::rmi(&self.store, image)
    }

    /// `berth prune`: images unused for longer than `limits.older_than`, then the least
    /// recently used until the store is under `limits.max_size`, then whatever nothing
    /// references; it sweeps `tmp/` itself, and counts it.
    pub fn prune(&self, limits: PruneLimits) -> Result<Removed, PruneError> {
        prune::prune(&self.store, limits)
    }

    /// What fills the store: from registries reached as `registry` says, under the
    /// signature policy `policy`, refusing images whose layers declare more than `caps`.
    pub fn puller<'a>(
        &'a self,
        registry: &'a RegistrySettings,
        policy: &'a SignaturePolicy,
        caps: UnpackCaps,
    ) -> Puller<'a> {
        Puller {
            store: &self.store,
            registry,
            policy,
            caps,
            unpacking: None,
        }
    }

    /// What unpacks images as `how` says, within `caps`, leasing what it uses in the name
    /// of `holder` (a job, for `berth rmi` to say who; empty: this berth).
    pub fn unpacker(&self, how: Unpacking, caps: UnpackCaps, holder: &str) -> Unpacker<'_> {
        Unpacker {
            store: &self.store,
            unpacking: how,
            caps,
            holder: if holder.is_empty() {
                format!("berth pid {}", std::process::id())
            } else {
                format!("{holder}, berth pid {}", std::process::id())
            },
        }
    }
}

/// Unpacks pulled images into the layer store (see [`Images::unpacker`]).
#[derive(Debug)]
pub struct Unpacker<'a> {
    store: &'a Store,
    unpacking: Unpacking,
    caps: UnpackCaps,
    holder: String,
}

impl Unpacker<'_> {
    /// How this unpacker writes layers (for [`Puller::with_unpacked`]).
    pub fn unpacking(&self) -> Unpacking {
        self.unpacking
    }

    /// The stack of a pulled image's layer directories (see the layer store in the module docs), for
    /// [`super::RootfsView::create`]; unpacks the layers the store lacks first. The stack
    /// and its layers are leased to this process until it exits: `rmi` and `prune` leave
    /// them alone.
    pub fn rootfs(&self, image: &PulledImage) -> Result<(PathBuf, bool), ImageError> {
        let diff_ids = &image.config.rootfs.diff_ids;
        let holder = format!("{} ({})", self.holder, image.reference);
        // One lease, on the stack: prune keeps every layer a leased stack lists. (A lease
        // per layer cost a file each, on every run.) Layers this call is about to unpack
        // are not listed yet, but they are as new as prune's grace period.
        if let Some(chain) = chain_id(diff_ids) {
            prune::lease(self.store, &chain, &holder)?;
        }
        let budget = Budget::new(&image.reference, self.caps);
        ensure_stack(
            self.store,
            &image.layers,
            diff_ids,
            &self.unpacking,
            &budget,
        )
    }
}
