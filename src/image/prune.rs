//! Keeping the store small: leases a job takes on the layers it uses, `rmi`, `prune`, and
//! the sweep of what a crashed berth left in `tmp/`.
//!
//! ```text
//! <cache>/leases/<hex>/<pid>.<random>   flock-ed by a live berth whose job uses the stack
//!                                       named <hex> (the image's chain id), and so every
//!                                       layer that stack lists; holds who it is
//! ```
//!
//! A lease is taken before the layers are unpacked or looked up and held until the berth
//! exits (the kernel drops the flock however it exits), so a layer a job mounts is never
//! removed under it. One lease per image, not per layer: a run pays one file for it. A lease file whose lock can be taken belongs to a dead berth.
//!
//! Blobs, layers and stacks no record references are removed — a layer only once no
//! remaining image uses it; those that landed in the last [`GRACE`] are kept unless they
//! belonged to an image removed now, because a pull in progress writes its blobs and
//! layers before its record.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::digest::{Digest, chain_id};
use super::manifest::ImageConfig;
use super::store::{ImageRecord, Store};
use super::{ImageError, parse_reference};
use crate::contract::ErrorClass;

/// Temporary leftovers older than this, of a berth no longer running, are swept.
pub const TEMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// Unreferenced blobs and trees younger than this may belong to a pull in progress.
pub const GRACE: Duration = Duration::from_secs(600);
const NEW_LEASE: &str = ".new-";

/// Leases this process holds; they last as long as it does.
static HELD: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("image {image} is not in the store")]
    Unknown { image: String },
    #[error("image {image} is in use by a running job ({holders}); it is kept")]
    InUse { image: String, holders: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl PruneError {
    pub fn class(&self) -> ErrorClass {
        match self {
            PruneError::Unknown { .. } | PruneError::InUse { .. } => ErrorClass::User,
            PruneError::Image(e) => e.class(),
        }
    }
}

/// What was removed, and how many bytes that freed.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Removed {
    pub images: Vec<String>,
    pub blobs: usize,
    pub trees: usize,
    pub temporary: usize,
    pub bytes: u64,
}

impl Removed {
    fn add(&mut self, other: Removed) {
        self.images.extend(other.images);
        self.blobs += other.blobs;
        self.trees += other.trees;
        self.temporary += other.temporary;
        self.bytes += other.bytes;
    }
}

fn store_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Store {
        path: path.to_owned(),
        source,
    }
}

/// Marks the layer directories or stack named by `chain` (a chain or diff id) as used by
/// this process until it exits.
pub fn lease(store: &Store, chain: &Digest, holder: &str) -> Result<(), ImageError> {
    let dir = store.root().join("leases").join(chain.hex());
    fs::create_dir_all(&dir).map_err(store_err(&dir))?;
    let name = format!("{}.{}", std::process::id(), crate::util::random_hex(6));
    let new = dir.join(format!("{NEW_LEASE}{name}"));
    let mut file = File::create(&new).map_err(store_err(&new))?;
    file.write_all(holder.as_bytes()).map_err(store_err(&new))?;
    let lock =
        Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| ImageError::Store {
            path: new.clone(),
            source: io::Error::from(e),
        })?;
    // Only a locked file gets a name a checker reads: it never sees one not yet locked.
    let dest = dir.join(name);
    fs::rename(&new, &dest).map_err(store_err(&dest))?;
    HELD.lock()
        .map_err(|_| ImageError::Store {
            path: dest.clone(),
            source: io::Error::other("lease list poisoned"),
        })?
        .push(lock);
    Ok(())
}

/// Who holds a live lease on `chain`; stale lease files are removed on the way.
///
/// Only a lock that could be taken makes a lease stale: a lease file or directory that
/// cannot be opened, read or locked (too many open files, no permission, ...) counts as a
/// holder berth cannot check, and keeps the image.
pub fn holders(store: &Store, chain: &str) -> Vec<String> {
    let dir = store.root().join("leases").join(chain);
    let unknown = |path: &Path, e: &dyn std::fmt::Display| {
        format!("a holder berth cannot check: {}: {e}", path.display())
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![unknown(&dir, &e)],
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                out.push(unknown(&dir, &e));
                continue;
            }
        };
        if entry.file_name().to_string_lossy().starts_with(NEW_LEASE) {
            continue;
        }
        let path = entry.path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            // Removed meanwhile as stale by another checker.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.push(unknown(&path, &e));
                continue;
            }
        };
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_stale) => {
                let _ = fs::remove_file(&path);
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => out.push(holder),
            Err((_, e)) => out.push(unknown(&path, &e)),
        }
    }
    if out.is_empty() {
        let _ = fs::remove_dir(&dir);
    }
    out.sort();
    out
}

/// Removes entries of `tmp` older than `max_age` whose berth (the pid in their name) is
/// gone. Returns how many and their bytes.
pub fn sweep_temp(tmp: &Path, max_age: Duration) -> (usize, u64) {
    let mut swept = (0, 0);
    for entry in fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if writer_alive(&name) || !older_than(&entry.path(), max_age) {
            continue;
        }
        let bytes = du(&entry.path());
        if crate::util::remove_tree(&entry.path()).is_ok() {
            tracing::debug!(path = %entry.path().display(), "temporary leftover removed");
            swept.0 += 1;
            swept.1 += bytes;
        }
    }
    swept
}

/// Whether the berth named in a temporary path (`label.<pid>.<random>`) still runs.
fn writer_alive(name: &str) -> bool {
    let mut parts = name.rsplit('.');
    let (Some(_), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    pid.parse::<u32>()
        .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|d| d > age)
}

/// Bytes a file or tree holds (hard links counted once; never follows a symlink).
pub fn du(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            return 0;
        }
        let mut total = meta.len();
        if meta.is_dir() {
            for e in fs::read_dir(path).into_iter().flatten().flatten() {
                total += walk(&e.path(), seen);
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

/// The chain (hex) of `record`'s image, which names its stack and which a job using it
/// leases; `None` when its config is unreadable.
pub fn record_chain(store: &Store, record: &ImageRecord) -> Option<String> {
    record_keys(store, record).last().cloned()
}

/// The names `record`'s layer directories and stack may have (their part before any `-`):
/// every layer's diff id, and the chain id of every layer with those below it (the last is
/// the image's chain). Empty when its config is unreadable.
pub fn record_keys(store: &Store, record: &ImageRecord) -> Vec<String> {
    let Some(config) = store
        .read_blob(&record.config)
        .ok()
        .flatten()
        .and_then(|bytes| ImageConfig::parse(&bytes).ok())
    else {
        return Vec::new();
    };
    let diff_ids = &config.rootfs.diff_ids;
    let chains = (1..=diff_ids.len()).filter_map(|n| chain_id(&diff_ids[..n]));
    diff_ids
        .iter()
        .cloned()
        .chain(chains)
        .map(|d| d.hex().to_owned())
        .collect()
}

/// Blob hexes and layer/stack keys `records` reference.
fn referenced(store: &Store, records: &[ImageRecord]) -> (HashSet<String>, HashSet<String>) {
    let mut blobs = HashSet::new();
    let mut keys = HashSet::new();
    for r in records {
        for d in [&r.digest, &r.manifest, &r.config]
            .into_iter()
            .chain(&r.layers)
        {
            blobs.insert(d.hex().to_owned());
        }
        keys.extend(record_keys(store, r));
    }
    (blobs, keys)
}

/// Removes every blob, layer and stack no record references and no live job uses; `doomed`
/// (blob hexes and keys of images removed now) skip the grace period. Trees of the
/// flattened `rootfs/` earlier versions kept are no longer used: all go, unless an old
/// berth still running leases one.
pub fn collect(store: &Store, doomed: &HashSet<String>) -> Removed {
    let (blobs, keys) = referenced(store, &store.records());
    let leased = leased_keys(store);
    let mut removed = Removed::default();
    let removable = |name: &str, path: &Path| doomed.contains(name) || older_than(path, GRACE);
    let blob_dir = store.root().join("blobs/sha256");
    for e in fs::read_dir(&blob_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if blobs.contains(&name) || !removable(&name, &e.path()) {
            continue;
        }
        let bytes = du(&e.path());
        if fs::remove_file(e.path()).is_ok() {
            removed.blobs += 1;
            removed.bytes += bytes;
        }
    }
    // Stacks first: a stack never names a layer already gone.
    for (dir, counted, legacy) in [
        ("stacks", false, false),
        ("layers", true, false),
        ("rootfs", true, true),
    ] {
        for e in fs::read_dir(store.root().join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name.split('-').next().unwrap_or_default().to_owned();
            let unused = legacy || (!keys.contains(&key) && removable(&key, &e.path()));
            // Old berths leased flattened trees themselves.
            let held = leased.as_ref().is_none_or(|l| l.contains(&key))
                || (legacy && !holders(store, &key).is_empty());
            if !unused || held {
                continue;
            }
            let bytes = du(&e.path());
            if crate::util::remove_tree(&e.path()).is_ok() {
                removed.trees += usize::from(counted);
                removed.bytes += bytes;
            }
        }
    }
    let _ = fs::remove_dir(store.root().join("rootfs"));
    removed
}

/// The keys of what live jobs use: each stack a live berth leases, and every layer it
/// lists. `None` when that cannot be known (the leases or a leased stack's list cannot be
/// read): then every layer and stack is kept.
fn leased_keys(store: &Store) -> Option<HashSet<String>> {
    let key_of = |name: &str| name.split('-').next().unwrap_or_default().to_owned();
    let list = |dir: &str| match fs::read_dir(store.root().join(dir)) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<String>>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    };
    let unknown = |what: &str, e: &io::Error| {
        tracing::warn!("cannot tell which layers running jobs use ({what}: {e}); keeping all");
    };
    let mut keys = HashSet::new();
    for key in list("leases").map_err(|e| unknown("leases", &e)).ok()? {
        if !holders(store, &key).is_empty() {
            keys.insert(key);
        }
    }
    for name in list("stacks").map_err(|e| unknown("stacks", &e)).ok()? {
        if !keys.contains(&key_of(&name)) {
            continue;
        }
        let path = store.root().join("stacks").join(&name).join("layers");
        let listed = fs::read_to_string(&path)
            .map_err(|e| unknown(&path.display().to_string(), &e))
            .ok()?;
        keys.extend(listed.lines().filter(|l| !l.is_empty()).map(key_of));
    }
    Some(keys)
}

/// The records `image` names: a reference as pulled, or a digest (full, or the 12-digit
/// short form `berth images` shows) of what a reference resolved to.
pub fn matching(store: &Store, image: &str) -> Vec<ImageRecord> {
    let records = store.records();
    let normal = parse_reference(image).map(|r| r.to_string()).ok();
    let hex = image.strip_prefix("sha256:").filter(|h| h.len() >= 12);
    let by_digest = |r: &ImageRecord| {
        hex.is_some_and(|h| r.digest.hex().starts_with(h) || r.manifest.hex().starts_with(h))
    };
    records
        .into_iter()
        .filter(|r| r.reference == image || normal.as_deref() == Some(&r.reference) || by_digest(r))
        .collect()
}

/// Removes one image's record and leaves its blobs and trees to [`collect`]; refuses an
/// image a live job uses.
fn remove_image(store: &Store, record: &ImageRecord) -> Result<HashSet<String>, PruneError> {
    let keys = record_keys(store, record);
    if let Some(chain) = keys.last() {
        let holders = holders(store, chain);
        if !holders.is_empty() {
            return Err(PruneError::InUse {
                image: record.reference.clone(),
                holders: holders.join(", "),
            });
        }
    }
    store.remove_record(&record.reference)?;
    let mut doomed: HashSet<String> = [&record.digest, &record.manifest, &record.config]
        .into_iter()
        .chain(&record.layers)
        .map(|d| d.hex().to_owned())
        .collect();
    doomed.extend(keys);
    Ok(doomed)
}

/// `berth rmi`: removes the image `image` names and what only it referenced.
pub fn rmi(store: &Store, image: &str) -> Result<Removed, PruneError> {
    let records = matching(store, image);
    if records.is_empty() {
        return Err(PruneError::Unknown {
            image: image.to_owned(),
        });
    }
    let mut doomed = HashSet::new();
    let mut removed = Removed::default();
    for r in &records {
        doomed.extend(remove_image(store, r)?);
        removed.images.push(r.reference.clone());
    }
    removed.add(collect(store, &doomed));
    Ok(removed)
}

/// What `berth prune` keeps: a size the store must get under, an age of last use.
#[derive(Debug, Default, Clone, Copy)]
pub struct PruneLimits {
    pub max_size: Option<u64>,
    pub older_than: Option<Duration>,
}

/// Bytes the store holds: blobs, layers, stacks, old trees and temporary files.
pub fn store_bytes(store: &Store) -> u64 {
    ["blobs", "layers", "stacks", "rootfs", "tmp"]
        .iter()
        .map(|d| du(&store.root().join(d)))
        .sum()
}

fn last_used(r: &ImageRecord) -> u64 {
    r.last_used.max(r.pulled_at)
}

/// `berth prune`: images unused for longer than `older_than`, then the least recently used
/// until the store is under `max_size`; then whatever nothing references, and temporary
/// leftovers. Images a live job uses are kept.
pub fn prune(store: &Store, limits: PruneLimits) -> Result<Removed, PruneError> {
    let mut removed = Removed::default();
    // Opening the store swept already; what it found counts as this prune's.
    let (temporary, bytes) = sweep_temp(&store.root().join("tmp"), TEMP_MAX_AGE);
    removed.temporary = temporary + store.swept().0;
    removed.bytes = bytes + store.swept().1;
    let mut records = store.records();
    records.sort_by_key(last_used);
    let now = crate::util::unix_now();
    let mut size = limits.max_size.map(|_| store_bytes(store));
    for r in &records {
        let stale = limits
            .older_than
            .is_some_and(|age| last_used(r) + age.as_secs() < now);
        let over = matches!((size, limits.max_size), (Some(s), Some(max)) if s > max);
        if !stale && !over {
            continue;
        }
        let doomed = match remove_image(store, r) {
            Ok(d) => d,
            Err(PruneError::InUse { image, holders }) => {
                tracing::info!("{image} is in use ({holders}); kept");
                continue;
            }
            Err(e) => return Err(e),
        };
        removed.images.push(r.reference.clone());
        let freed = collect(store, &doomed);
        size = size.map(|s| s.saturating_sub(freed.bytes));
        removed.add(freed);
    }
    removed.add(collect(store, &HashSet::new()));
    Ok(removed)
}

/// Parses `500M`, `2G`, `1024` (bytes; K, M, G, T are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let shift = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M, G or T)")),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 500M or 2G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `7d`, `12h`, `30m`, `45s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration such as 7d, 12h, 30m or 45s");
    let unit = s.chars().last().ok_or_else(bad)?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Puts a store entry back in time by `secs`.
    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        File::open(path).unwrap().set_modified(t).unwrap();
    }

    /// Stores an image named `name` with these layers (their bytes are the layer contents,
    /// their diff ids their digests), a directory per layer and its stack; returns the
    /// record and its top layer's directory.
    fn image(store: &Store, name: &str, layers: &[&[u8]]) -> (ImageRecord, PathBuf) {
        let digests: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
        for (l, d) in layers.iter().zip(&digests) {
            store.put_blob(d, l).unwrap();
        }
        let ids: Vec<String> = digests.iter().map(|d| format!("\"{d}\"")).collect();
        let config = format!(
            r#"{{"rootfs": {{"type": "layers", "diff_ids": [{}]}}}}"#,
            ids.join(",")
        );
        let config_digest = Digest::of(config.as_bytes());
        store.put_blob(&config_digest, config.as_bytes()).unwrap();
        let manifest = format!("manifest of {name}");
        let manifest_digest = Digest::of(manifest.as_bytes());
        store
            .put_blob(&manifest_digest, manifest.as_bytes())
            .unwrap();
        let rec = ImageRecord {
            reference: name.to_owned(),
            digest: manifest_digest.clone(),
            manifest: manifest_digest,
            config: config_digest,
            layers: digests.clone(),
            size: 1,
            pulled_at: 1000,
            last_used: 1000,
            accepted: None,
        };
        store.save_record(&rec).unwrap();
        let mut tree = PathBuf::new();
        for d in &digests {
            tree = store
                .root()
                .join("layers")
                .join(format!("{}-0-65536", d.hex()));
            fs::create_dir_all(tree.join("bin")).unwrap();
            fs::write(tree.join("bin/sh"), name).unwrap();
        }
        let chain = chain_id(&digests).unwrap();
        let stack = store
            .root()
            .join("stacks")
            .join(format!("{}-0-65536", chain.hex()));
        fs::create_dir_all(&stack).unwrap();
        (rec, tree)
    }

    #[test]
    fn a_layer_goes_only_with_the_last_image_using_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, _) = image(&store, "reg/a:1", &[b"base", b"only a"]);
        image(&store, "reg/b:1", &[b"base", b"only b"]);
        let layer = |d: &Digest| store.root().join(format!("layers/{}-0-65536", d.hex()));
        let stacks = || fs::read_dir(store.root().join("stacks")).unwrap().count();
        assert_eq!(stacks(), 2);
        rmi(&store, "reg/a:1").unwrap();
        assert!(layer(&a.layers[0]).is_dir() && !layer(&a.layers[1]).exists());
        assert_eq!(stacks(), 1);
        rmi(&store, "reg/b:1").unwrap();
        assert!(!layer(&a.layers[0]).exists());
        assert_eq!(stacks(), 0);
    }

    #[test]
    fn trees_of_earlier_versions_are_swept_whatever_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, _) = image(&store, "reg/a:1", &[b"layer"]);
        let chain = record_chain(&store, &a).unwrap();
        let old = store.root().join("rootfs").join(format!("{chain}-0-65536"));
        fs::create_dir_all(old.join("bin")).unwrap();
        fs::write(old.join("bin/sh"), b"sh").unwrap();
        let removed = prune(&store, PruneLimits::default()).unwrap();
        assert_eq!(removed.trees, 1, "{removed:?}");
        assert!(!store.root().join("rootfs").exists());
        assert_eq!(store.records(), vec![a]);
    }

    fn blob_names(store: &Store) -> HashSet<String> {
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn rmi_removes_what_only_that_image_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, tree_a) = image(&store, "reg/a:1", &[b"base", b"only a"]);
        let (b, tree_b) = image(&store, "reg/b:1", &[b"base", b"only b"]);
        let removed = rmi(&store, "reg/a:1").unwrap();
        assert_eq!(removed.images, vec!["reg/a:1".to_owned()]);
        // manifest, config, its own layer; the shared base stays.
        assert_eq!((removed.blobs, removed.trees), (3, 1), "{removed:?}");
        assert!(removed.bytes > 0);
        assert!(!tree_a.exists() && tree_b.is_dir());
        let blobs = blob_names(&store);
        assert!(blobs.contains(a.layers[0].hex()), "shared base removed");
        assert!(!blobs.contains(a.layers[1].hex()));
        assert!(!blobs.contains(a.config.hex()));
        assert!(b.layers.iter().all(|l| blobs.contains(l.hex())));
        assert_eq!(store.records(), vec![b.clone()]);

        let e = rmi(&store, "reg/a:1").unwrap_err();
        assert_eq!(e.class(), ErrorClass::User);
        assert_eq!(e.to_string(), "image reg/a:1 is not in the store");
        // By the short digest `berth images` shows.
        let short = format!("sha256:{}", &b.manifest.hex()[..12]);
        assert_eq!(
            rmi(&store, &short).unwrap().images,
            vec!["reg/b:1".to_owned()]
        );
        assert!(blob_names(&store).is_empty() && !tree_b.exists());
    }

    #[test]
    fn an_image_a_live_job_leases_is_neither_removed_nor_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, tree) = image(&store, "reg/a:1", &[b"layer"]);
        let chain = record_chain(&store, &a).unwrap();
        let chain_digest: Digest = format!("sha256:{chain}").parse().unwrap();
        lease(&store, &chain_digest, "job j1").unwrap();
        let e = rmi(&store, "reg/a:1").unwrap_err();
        assert_eq!(e.class(), ErrorClass::User);
        assert!(e.to_string().contains("job j1"), "{e}");
        let limits = PruneLimits {
            max_size: Some(0),
            older_than: Some(Duration::from_secs(1)),
        };
        let removed = prune(&store, limits).unwrap();
        assert!(removed.images.is_empty(), "{removed:?}");
        assert!(tree.is_dir());
        assert_eq!(store.records(), vec![a]);
        // Even without its record, the tree stays while leased.
        store.remove_record("reg/a:1").unwrap();
        age(&tree, 7200);
        assert_eq!(collect(&store, &HashSet::from([chain])).trees, 0);
        assert!(tree.is_dir());
    }

    #[test]
    fn a_lease_that_cannot_be_checked_holds_its_image() {
        use crate::util::no_fds;
        if let Some(dir) = no_fds::child_arg() {
            let store = Store::open(Path::new(&dir)).unwrap();
            let holders = no_fds::exhausted(|| holders(&store, &"c".repeat(64)));
            assert_eq!(holders.len(), 1, "{holders:?}");
            assert!(
                holders[0].starts_with("a holder berth cannot check: ")
                    && holders[0].contains("Too many open files"),
                "{holders:?}"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chain: Digest = format!("sha256:{}", "c".repeat(64)).parse().unwrap();
        lease(&store, &chain, "job j1").unwrap();
        no_fds::run_child(
            "image::prune::tests::a_lease_that_cannot_be_checked_holds_its_image",
            dir.path().to_str().unwrap(),
        );
        assert_eq!(holders(&store, chain.hex()), vec!["job j1".to_owned()]);
    }

    #[test]
    fn a_leased_stack_whose_layers_cannot_be_read_keeps_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Two layers: the top one is kept only by the stack's list (the lease names the
        // chain of both).
        let (a, tree) = image(&store, "reg/a:1", &[b"base", b"top"]);
        let chain = record_chain(&store, &a).unwrap();
        let chain_digest: Digest = format!("sha256:{chain}").parse().unwrap();
        lease(&store, &chain_digest, "job j1").unwrap();
        let stack = store.root().join(format!("stacks/{chain}-0-65536"));
        // Its list of layers is unreadable (a directory where the file should be).
        fs::create_dir(stack.join("layers")).unwrap();
        store.remove_record("reg/a:1").unwrap();
        age(&tree, 7200);
        assert_eq!(collect(&store, &HashSet::new()).trees, 0);
        assert!(tree.is_dir(), "a layer a running job may use was removed");
    }

    #[test]
    fn stale_leases_are_not_holders() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let leases = store.root().join("leases/abc");
        fs::create_dir_all(&leases).unwrap();
        fs::write(leases.join("1.aaaa"), "dead job").unwrap();
        assert!(holders(&store, "abc").is_empty());
        assert!(!leases.exists(), "stale lease kept");
    }

    #[test]
    fn prune_by_age_then_by_size_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = crate::util::unix_now();
        let mut names = Vec::new();
        for (n, used) in [
            ("reg/old:1", now - 8 * 86_400),
            ("reg/mid:1", now - 3600),
            ("reg/new:1", now),
        ] {
            let (mut r, _) = image(&store, n, &[n.as_bytes()]);
            r.last_used = used;
            store.save_record(&r).unwrap();
            names.push(n);
        }
        let week = PruneLimits {
            older_than: Some(parse_duration("7d").unwrap()),
            max_size: None,
        };
        assert_eq!(
            prune(&store, week).unwrap().images,
            vec!["reg/old:1".to_owned()]
        );
        let total = store_bytes(&store);
        // Just under what both hold: the least recently used one goes, the other stays.
        let limits = PruneLimits {
            max_size: Some(total - 1),
            older_than: None,
        };
        let removed = prune(&store, limits).unwrap();
        assert_eq!(removed.images, vec!["reg/mid:1".to_owned()]);
        assert!(store_bytes(&store) < total - 1);
        let left: Vec<String> = store.records().into_iter().map(|r| r.reference).collect();
        assert_eq!(left, vec!["reg/new:1".to_owned()]);
    }

    #[test]
    fn plain_prune_removes_old_unreferenced_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (kept, tree) = image(&store, "reg/a:1", &[b"layer"]);
        let orphan = Digest::of(b"orphan");
        store.put_blob(&orphan, b"orphan").unwrap();
        let fresh = Digest::of(b"fresh orphan");
        store.put_blob(&fresh, b"fresh orphan").unwrap();
        age(&store.blob_path(&orphan), 3600);
        let orphan_tree = store.root().join("layers").join("f".repeat(64));
        fs::create_dir(&orphan_tree).unwrap();
        age(&orphan_tree, 3600);
        let fresh_tree = store.root().join("layers").join("e".repeat(64));
        fs::create_dir(&fresh_tree).unwrap();
        let removed = prune(&store, PruneLimits::default()).unwrap();
        assert_eq!((removed.blobs, removed.trees), (1, 1), "{removed:?}");
        assert!(removed.images.is_empty());
        assert!(!store.has_blob(&orphan) && !orphan_tree.exists());
        // A layer that may belong to a pull in progress stays too.
        assert!(fresh_tree.is_dir());
        // A blob that may belong to a pull in progress stays.
        assert!(store.has_blob(&fresh));
        assert!(tree.is_dir() && store.has_blob(&kept.config));
    }

    #[test]
    fn the_sweep_removes_old_leftovers_of_dead_berths_only() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path();
        let dead = tmp.join("rootfs.999999999.abcdef");
        fs::create_dir_all(dead.join("usr/bin")).unwrap();
        fs::write(dead.join("usr/bin/x"), "partial").unwrap();
        let live = tmp.join(format!("sha.{}.abcdef", std::process::id()));
        fs::write(&live, "being written").unwrap();
        let young = tmp.join("ref.999999999.123456");
        fs::write(&young, "new").unwrap();
        age(&dead, 7200);
        age(&live, 7200);
        let (n, bytes) = sweep_temp(tmp, TEMP_MAX_AGE);
        assert_eq!(n, 1);
        assert!(bytes >= 7);
        assert!(!dead.exists() && live.exists() && young.exists());
    }

    #[test]
    fn opening_the_store_sweeps_its_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let partial = store.root().join("tmp/layer.999999999.abcdef");
        fs::write(&partial, "half a layer").unwrap();
        age(&partial, 7200);
        let reopened = Store::open(dir.path()).unwrap();
        assert!(!partial.exists());
        assert_eq!(reopened.swept(), (1, 12));
        assert_eq!(
            prune(&reopened, PruneLimits::default()).unwrap().temporary,
            1
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("5X").unwrap_err().contains("unit"));
        assert!(parse_size("M").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("").is_err());
    }
}
