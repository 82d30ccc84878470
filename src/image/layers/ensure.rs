//! The layer store: each layer unpacked once, into a directory of its own, and per image a
//! small stack naming its layers.
//!
//! ```text
//! <cache>/layers/<diff id hex>[-<ids key>]/   one layer as overlayfs stacks it (whiteouts
//!                                             as 0/0 devices, opaque directories by xattr)
//! <cache>/stacks/<chain hex>[-<ids key>]/     an image: `layers` lists its layer
//!                                             directories top first; `etc/passwd` and
//!                                             `etc/group` are the image's, for berth to
//!                                             resolve users without a mount
//! <cache>/locks/<name>.lock                   flock-ed while a berth unpacks that layer
//! ```
//!
//! A layer is unpacked into a fresh directory under `tmp/` and renamed into place when
//! complete, so no reader ever sees half a layer. A berth holds the layer's lock while it
//! unpacks, so many berths pulling one image unpack each layer once: the others wait, then
//! find it there. A crash leaves at most a directory under `tmp/` (swept later) and a lock
//! file the kernel unlocked. Owners are written moved into the container id range while
//! unpacking (the ids key names the range), so a layer serves one range.
//!
//! The layers of an image are unpacked in parallel, each on a thread of its own (at most one
//! per CPU), all joined before this returns: libcontainer clones later, and must find berth
//! with the threads it had.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::Flock;

use super::stack::{LAYERS_FILE, Stack};
use super::unpack::{Budget, Extraction, Ownership, Unpacking, unpack_layer};
use crate::image::content::Store;
use crate::image::spec::ImageError;
use crate::image::spec::digest::{Digest, chain_id};
use crate::image::spec::manifest::Descriptor;

/// The image files berth reads itself (to resolve the container's user), copied into the
/// stack; no bigger than bundle's reader reads.
const STACK_FILES: &[&str] = &["etc/passwd", "etc/group"];
const STACK_FILE_MAX: u64 = 1 << 20;

/// The name of a layer's directory for `unpacking`: its diff id, or, for a layer that
/// hard-links files of the layers below it (and so holds copies of them), the chain id of
/// it and those layers.
pub fn layer_name(id: &Digest, unpacking: &Unpacking) -> String {
    match (&unpacking.ids, unpacking.ownership) {
        (Some(ids), Ownership::Preserve) => format!("{}-{}", id.hex(), ids.key()),
        _ => id.hex().to_owned(),
    }
}

/// The directory names layer `i` of `diff_ids` may have, the usual one first.
fn candidate_names(diff_ids: &[Digest], i: usize, unpacking: &Unpacking) -> Vec<String> {
    let mut names = vec![layer_name(&diff_ids[i], unpacking)];
    names.extend(chain_id(&diff_ids[..=i]).map(|c| layer_name(&c, unpacking)));
    names
}

pub fn layer_path(store: &Store, name: &str) -> PathBuf {
    store.cache().layer(name)
}

/// Where the stack of the image with these layers lives.
pub fn stack_path(store: &Store, chain: &Digest, unpacking: &Unpacking) -> PathBuf {
    let name = match (&unpacking.ids, unpacking.ownership) {
        (Some(ids), Ownership::Preserve) => format!("{}-{}", chain.hex(), ids.key()),
        _ => chain.hex().to_owned(),
    };
    store.cache().stack(&name)
}

/// The stack of an image, unpacking what layers the store lacks first. Returns its path and
/// whether this call unpacked anything.
pub fn ensure_stack(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    unpacking: &Unpacking,
    budget: &Budget<'_>,
) -> Result<(PathBuf, bool), ImageError> {
    let chain = chain_id(diff_ids).ok_or_else(|| ImageError::BadConfig {
        message: "image has no layers".to_owned(),
    })?;
    let dest = stack_path(store, &chain, unpacking);
    let mut names: Vec<Option<String>> = (0..diff_ids.len())
        .map(|i| present(store, diff_ids, i, unpacking))
        .collect();
    if names.iter().all(Option::is_some) && dest.join(LAYERS_FILE).is_file() {
        return Ok((dest, false));
    }
    let started = std::time::Instant::now();
    let missing: Vec<usize> = (0..names.len()).filter(|i| names[*i].is_none()).collect();
    let unpacked = unpack_all(
        store, layers, diff_ids, &missing, unpacking, budget, &mut names,
    )?;
    if unpacked > 0 {
        tracing::info!(
            chain = %chain.short(),
            layers = unpacked,
            "unpacked in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    let names: Vec<String> = names.into_iter().flatten().collect();
    write_stack(store, &dest, &names)?;
    Ok((dest, unpacked > 0))
}

/// The name of layer `i`'s directory if the store has it.
fn present(store: &Store, diff_ids: &[Digest], i: usize, unpacking: &Unpacking) -> Option<String> {
    candidate_names(diff_ids, i, unpacking)
        .into_iter()
        .find(|n| layer_path(store, n).is_dir())
}

/// Writes the stack naming `names` (bottom first, as the config lists them) at `dest`.
fn write_stack(store: &Store, dest: &Path, names: &[String]) -> Result<(), ImageError> {
    if dest.join(LAYERS_FILE).is_file() {
        return Ok(());
    }
    let tmp = store.temp_path("stack");
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let store_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Store { path, source }
    };
    fs::create_dir_all(tmp.join("etc")).map_err(store_err(&tmp))?;
    let top_first: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    let list = top_first.join("\n") + "\n";
    fs::write(tmp.join(LAYERS_FILE), list).map_err(store_err(&tmp))?;
    let stack = Stack {
        layers: top_first.iter().map(|n| layer_path(store, n)).collect(),
    };
    for rel in STACK_FILES {
        copy_image_file(&stack, rel, &tmp.join(rel)).map_err(store_err(&tmp.join(rel)))?;
    }
    fs::create_dir_all(store.cache().stacks()).map_err(store_err(store.root()))?;
    match fs::rename(&tmp, dest) {
        Ok(()) => {
            guard.disarm();
            Ok(())
        }
        // Another berth wrote the same stack first; ours is dropped by the guard.
        Err(_) if dest.join(LAYERS_FILE).is_file() => Ok(()),
        Err(source) => Err(ImageError::Store {
            path: dest.to_owned(),
            source,
        }),
    }
}

/// Copies the image's `rel` to `to` if it is a regular file (a FIFO or a link there is the
/// image's business, never opened by berth).
fn copy_image_file(stack: &Stack, rel: &str, to: &Path) -> io::Result<()> {
    let Some(from) = stack.find(Path::new(rel)) else {
        return Ok(());
    };
    if !fs::symlink_metadata(&from)?.is_file() {
        return Ok(());
    }
    let mut bytes = Vec::new();
    File::open(&from)?
        .take(STACK_FILE_MAX)
        .read_to_end(&mut bytes)?;
    fs::write(to, bytes)
}

/// A layer unpacked into `tmp/` that links files of lower layers: it lands once they are
/// in place (still holding its lock).
struct Pending {
    index: usize,
    tmp: RemoveOnDrop,
    links: Vec<(PathBuf, PathBuf)>,
    _lock: Flock<File>,
}

/// Unpacks the `missing` layers (indexes into `layers`) in parallel, filling in their
/// `names`; returns how many this berth unpacked (another may have done some meanwhile).
fn unpack_all(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    missing: &[usize],
    unpacking: &Unpacking,
    budget: &Budget<'_>,
    names: &mut [Option<String>],
) -> Result<usize, ImageError> {
    let how = Extraction {
        ownership: unpacking.ownership,
        ids: unpacking
            .ids
            .filter(|_| unpacking.ownership == Ownership::Preserve),
        overlay_xattrs: crate::host::overlay_xattr_prefix(),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(missing.len())
        .max(1);
    let next = Mutex::new(missing.iter());
    let results: Mutex<Vec<(usize, Result<Landed, ImageError>)>> = Mutex::new(Vec::new());
    let umask = Umask::clear();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let job = next.lock().ok().and_then(|mut it| it.next().copied());
                    let Some(i) = job else {
                        break;
                    };
                    let names = candidate_names(diff_ids, i, unpacking);
                    let r = ensure_layer(store, &layers[i], &diff_ids[i], &names, &how, budget);
                    let failed = r.is_err();
                    if let Ok(mut all) = results.lock() {
                        all.push((i, r));
                    }
                    if failed {
                        break;
                    }
                }
            });
        }
    });
    drop(umask);
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut unpacked = 0;
    let mut pending = Vec::new();
    for (i, r) in results {
        match r? {
            Landed::There(name) => names[i] = Some(name),
            Landed::Unpacked(name) => {
                unpacked += 1;
                names[i] = Some(name);
            }
            Landed::Pending(mut p) => {
                p.index = i;
                pending.push(p);
            }
        }
    }
    for p in pending {
        let index = p.index;
        names[index] = Some(land_pending(
            store, layers, diff_ids, names, p, &how, unpacking,
        )?);
        unpacked += 1;
    }
    Ok(unpacked)
}

/// Links a pending layer's files from the layers below it (all in place: pending layers
/// land bottom up) and moves it in under its chain id.
fn land_pending(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    names: &[Option<String>],
    mut p: Pending,
    how: &Extraction,
    unpacking: &Unpacking,
) -> Result<String, ImageError> {
    let below = Stack {
        layers: names[..p.index]
            .iter()
            .rev()
            .flatten()
            .map(|n| layer_path(store, n))
            .collect(),
    };
    let tmp = p.tmp.0.take().unwrap_or_default();
    p.tmp.0 = Some(tmp.clone());
    let layer = &layers[p.index].digest;
    super::unpack::link_from_below(&tmp, &p.links, &below, layer, how)?;
    let name = candidate_names(diff_ids, p.index, unpacking)
        .pop()
        .unwrap_or_default();
    let dest = layer_path(store, &name);
    match fs::rename(&tmp, &dest) {
        Ok(()) => p.tmp.disarm(),
        // Landed by another berth meanwhile: ours is dropped.
        Err(_) if dest.is_dir() => {}
        Err(source) => return Err(ImageError::Store { path: dest, source }),
    }
    Ok(name)
}

enum Landed {
    /// Another berth had unpacked it.
    There(String),
    Unpacked(String),
    Pending(Pending),
}

/// Unpacks one layer unless it is there (perhaps once another berth released its lock).
fn ensure_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    names: &[String],
    how: &Extraction,
    budget: &Budget<'_>,
) -> Result<Landed, ImageError> {
    let name = names.first().cloned().unwrap_or_default();
    let lock = store.lock(&name, &format!("layer {diff_id}"))?;
    if let Some(there) = names.iter().find(|n| layer_path(store, n).is_dir()) {
        return Ok(Landed::There(there.clone()));
    }
    let store_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Store { path, source }
    };
    let tmp = store.temp_path("layer");
    fs::create_dir(&tmp).map_err(store_err(&tmp))?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(store_err(&tmp))?;
    let started = std::time::Instant::now();
    let blob = store.blob_path(&layer.digest);
    let stats = unpack_layer(&blob, &layer.digest, diff_id, &tmp, how, budget)?;
    if stats.devices_skipped > 0 {
        tracing::warn!(layer = %layer.digest, devices = stats.devices_skipped, "device nodes skipped");
    }
    tracing::info!(
        layer = %layer.digest.short(),
        entries = stats.entries,
        bytes = stats.bytes,
        xattrs_dropped = stats.xattrs_dropped,
        "layer unpacked in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if !stats.pending_links.is_empty() {
        return Ok(Landed::Pending(Pending {
            index: 0,
            tmp: guard,
            links: stats.pending_links,
            _lock: lock,
        }));
    }
    let dest = layer_path(store, &name);
    fs::rename(&tmp, &dest).map_err(store_err(&dest))?;
    guard.disarm();
    Ok(Landed::Unpacked(name))
}

struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = crate::util::remove_tree(&p);
        }
    }
}

/// Clears the process's umask until dropped, so that layer files are created with their
/// own modes in one system call. The umask is the process's: only the unpacking threads
/// create files meanwhile, and they are joined before it is put back.
struct Umask(nix::sys::stat::Mode);

impl Umask {
    fn clear() -> Umask {
        Umask(nix::sys::stat::umask(nix::sys::stat::Mode::empty()))
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}
