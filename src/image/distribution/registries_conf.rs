//! `registries.conf` (containers-registries.conf(5), version 2), read as podman reads it:
//! `[[registry]]` entries rewrite a repository prefix to another location, mark a registry
//! insecure or blocked, and list mirrors tried before it. A pulled image keeps its own
//! name (the record, the signature policy's scope): a location or mirror is only where
//! its bytes come from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::tls::{env_path, user_containers_dir};
use crate::image::spec::ImageError;
use crate::image::spec::reference::{ImageRef, is_short_name, short_name_parts};

/// The system's registries.conf, and the directory of its drop-ins.
pub const SYSTEM_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
const SYSTEM_REGISTRIES_CONF_D: &str = "/etc/containers/registries.conf.d";
/// root's short-name alias cache, which podman writes when a user picks a registry at its
/// prompt; a rootless user's is `$XDG_CACHE_HOME/containers/short-name-aliases.conf`.
const SYSTEM_ALIAS_CACHE: &str = "/var/cache/containers/short-name-aliases.conf";

/// A registries.conf berth cannot use: the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesConfError {
    #[error("{}: cannot read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: alias {name:?}: {message}", path.display())]
    Alias {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("{}: registry {prefix:?}: {message}", path.display())]
    Entry {
        path: PathBuf,
        prefix: String,
        message: String,
    },
}

/// When a mirror is asked (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default, rename = "pull-from-mirror")]
    pull_from: PullFromMirror,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    /// The older spelling of `pull-from-mirror = "digest-only"` for every mirror.
    #[serde(default, rename = "mirror-by-digest-only")]
    digest_only: bool,
    #[serde(default)]
    mirror: Vec<Mirror>,
}

/// The keys berth reads; podman's others (`short-name-mode`, `credential-helpers`, …)
/// are left to podman rather than refused, so one file serves both.
#[derive(Debug, Deserialize)]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    /// Short name → fully qualified name; a later file's alias of a name replaces it.
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    /// Where a short name that is no alias may be; a later file that sets it replaces it.
    #[serde(rename = "unqualified-search-registries")]
    search: Option<Vec<String>>,
}

/// The short-name alias cache: only its `[aliases]` count (podman writes nothing else).
#[derive(Debug, Deserialize)]
struct RawAliasCache {
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

/// One `[[registry]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registry {
    /// `host[/path]`, or `*.domain` for a host's subdomains.
    prefix: String,
    /// Where the prefix's images are; empty for a wildcard prefix (the host itself).
    location: String,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<Mirror>,
    /// The file that said so, for errors and the debug log.
    file: PathBuf,
}

/// Where one image may be pulled from, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The image as named at this location (the original's tag and digest).
    pub image: ImageRef,
    /// A mirror (tried, and passed over when it fails), or the primary location.
    pub mirror: bool,
}

/// Every registries.conf read, merged: a later file's entry replaces an earlier one of the
/// same prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    registries: Vec<Registry>,
    /// Short name → (fully qualified name, the file that said so).
    aliases: BTreeMap<String, (String, PathBuf)>,
    /// `unqualified-search-registries`, and the file that set it.
    search: Option<(Vec<String>, PathBuf)>,
}

/// The files podman reads, in its order: `CONTAINERS_REGISTRIES_CONF` alone when set;
/// else a rootless user's own registries.conf instead of the system's, then the
/// system's drop-ins and the user's, each directory's `*.conf` sorted by name.
pub fn registries_conf_files() -> Vec<PathBuf> {
    let given = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    conf_files(
        given,
        user_containers_dir(),
        Path::new(SYSTEM_REGISTRIES_CONF),
    )
}

/// The short-name alias cache podman reads (and berth only reads): root's in `/var/cache`,
/// a rootless user's in `$XDG_CACHE_HOME` (`~/.cache`); `None` when a rootless user has
/// neither variable set.
pub fn short_name_alias_cache() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from(SYSTEM_ALIAS_CACHE));
    }
    let cache =
        env_path("XDG_CACHE_HOME").or_else(|| env_path("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("containers/short-name-aliases.conf"))
}

fn conf_files(given: Option<PathBuf>, user: Option<PathBuf>, system: &Path) -> Vec<PathBuf> {
    if let Some(file) = given {
        return vec![file];
    }
    let user_main = user.as_ref().map(|d| d.join("registries.conf"));
    let mut files = match user_main.filter(|f| f.is_file()) {
        Some(own) => vec![own],
        None => vec![system.to_owned()],
    };
    files.extend(drop_ins(Path::new(SYSTEM_REGISTRIES_CONF_D)));
    if let Some(dir) = user {
        files.extend(drop_ins(&dir.join("registries.conf.d")));
    }
    files
}

/// `dir`'s `*.conf` files, sorted by name (none when it does not exist).
fn drop_ins(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    files
}

impl RegistriesConf {
    /// Reads `files` in order; one that does not exist is skipped.
    pub fn load(files: &[PathBuf]) -> Result<RegistriesConf, RegistriesConfError> {
        let mut conf = RegistriesConf::default();
        for path in files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(RegistriesConfError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            conf.merge(path, &text)?;
            conf.files.push(path.clone());
        }
        Ok(conf)
    }

    /// Adds the short-name alias cache at `path` (containers-registries.conf(5)'s
    /// `short-name-aliases.conf`, as podman's `enforcing` mode writes it): its aliases win
    /// over registries.conf's, as podman's do. A file that does not exist, or that this user
    /// may not read, adds nothing.
    pub fn add_alias_cache(&mut self, path: &Path) -> Result<(), RegistriesConfError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Another user's cache (a rootless berth whose $HOME is root's, as after `su`):
            // it only adds aliases, so berth goes on without it rather than refusing to run.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                tracing::warn!(
                    "{}: cannot read it ({e}); its aliases are ignored",
                    path.display()
                );
                return Ok(());
            }
            Err(source) => {
                return Err(RegistriesConfError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let raw: RawAliasCache = parse_toml(path, &text)?;
        self.merge_aliases(path, raw.aliases)?;
        self.files.push(path.to_owned());
        Ok(())
    }

    /// One file's text, parsed as `load` parses a file (the fuzz target's entry).
    #[cfg(feature = "fuzzing")]
    pub fn from_text(text: &str) -> Result<RegistriesConf, RegistriesConfError> {
        let mut conf = RegistriesConf::default();
        conf.merge(Path::new("registries.conf"), text)?;
        Ok(conf)
    }

    /// Adds one file's entries (`text`, read from `path`) over the ones before.
    fn merge(&mut self, path: &Path, text: &str) -> Result<(), RegistriesConfError> {
        let raw: RawFile = parse_toml(path, text)?;
        for entry in raw.registry {
            let entry = check_entry(path, entry)?;
            self.registries.retain(|r| r.prefix != entry.prefix);
            self.registries.push(entry);
        }
        self.merge_aliases(path, raw.aliases)?;
        if let Some(search) = raw.search {
            self.search = Some((search, path.to_owned()));
        }
        Ok(())
    }

    /// Adds `aliases`, read from `path`, over the ones before.
    fn merge_aliases(
        &mut self,
        path: &Path,
        aliases: BTreeMap<String, String>,
    ) -> Result<(), RegistriesConfError> {
        for (name, target) in aliases {
            let bad = |message: &str| RegistriesConfError::Alias {
                path: path.to_owned(),
                name: name.clone(),
                message: message.to_owned(),
            };
            if !is_short_name(&name) || !short_name_parts(&name).1.is_empty() {
                return Err(bad("an alias is a short name without a tag or digest"));
            }
            if is_short_name(&target) || ImageRef::parse(&target).is_err() {
                return Err(bad(
                    "an alias names a fully qualified image (host/repository)",
                ));
            }
            self.aliases.insert(name, (target, path.to_owned()));
        }
        Ok(())
    }

    /// `reference` fully qualified, as podman's `short-name-mode = "enforcing"` resolves it
    /// without a terminal: a name with a registry host stays as it is; a short name is its
    /// alias, else its name at the one `unqualified-search-registries` registry. Several
    /// candidates, or none, are the user's to settle: a short name never means Docker Hub
    /// unless registries.conf says so.
    pub fn qualify(&self, reference: &str) -> Result<String, ImageError> {
        let reference = reference.trim();
        if !is_short_name(reference) {
            return Ok(reference.to_owned());
        }
        let bad = |message: String| ImageError::ShortName {
            reference: reference.to_owned(),
            message,
        };
        let parsed = |name: String| {
            ImageRef::parse(&name)
                .map(|r| r.to_string())
                .map_err(|message| ImageError::Reference {
                    reference: reference.to_owned(),
                    message,
                })
        };
        let (name, suffix) = short_name_parts(reference);
        if let Some((target, file)) = self.aliases.get(name) {
            let target = if suffix.is_empty() {
                target.clone()
            } else {
                format!("{}{suffix}", short_name_parts(target).0)
            };
            let resolved = parsed(target)?;
            tracing::debug!(
                short = reference, image = %resolved,
                "short name resolved by its alias in {}", file.display()
            );
            return Ok(resolved);
        }
        let registries = self.search.as_ref().map_or(&[][..], |(r, _)| r.as_slice());
        match registries {
            [] => Err(bad(format!(
                "short name {reference:?} names no registry, and no registry is configured for \
                 short names (no alias of it, no unqualified-search-registries in registries.conf); \
                 name the registry, e.g. docker.io/{reference}"
            ))),
            [one] => {
                let resolved = parsed(format!("{one}/{reference}"))?;
                let file = self.search.as_ref().map(|(_, f)| f.display().to_string());
                tracing::debug!(
                    short = reference, image = %resolved,
                    "short name resolved at the one unqualified-search-registries registry of {}",
                    file.unwrap_or_default()
                );
                Ok(resolved)
            }
            several => {
                let mut candidates = several
                    .iter()
                    .map(|r| parsed(format!("{r}/{reference}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let last = candidates.pop().unwrap_or_default();
                Err(bad(format!(
                    "short name {reference:?} is ambiguous: it could be {} or {last}; name the \
                     registry, or add an alias in registries.conf",
                    candidates.join(", ")
                )))
            }
        }
    }

    /// The first of `unqualified-search-registries`: where `podman login` (and `berth
    /// login`) logs in when no registry is named.
    pub fn first_search_registry(&self) -> Option<&str> {
        self.search
            .as_ref()
            .and_then(|(registries, _)| registries.first())
            .map(String::as_str)
    }

    /// Whether a registries.conf says plain HTTP is fine for `host` (`host[:port]`).
    pub fn insecure(&self, host: &str) -> bool {
        self.registries.iter().any(|r| {
            let own =
                r.insecure && (r.location == host || r.location.starts_with(&format!("{host}/")));
            own || r
                .mirrors
                .iter()
                .any(|m| m.insecure && host_of(&m.location) == host)
        })
    }

    /// Where `image` is pulled from, in order: its entry's mirrors that serve this kind
    /// of reference, then its location. An image of a blocked registry is refused.
    pub fn sources(&self, image: &ImageRef) -> Result<Vec<PullSource>, ImageError> {
        let Some(entry) = self.matching(image) else {
            return Ok(vec![PullSource {
                image: image.clone(),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(ImageError::Blocked {
                reference: image.to_string(),
                prefix: entry.prefix.clone(),
                file: entry.file.clone(),
            });
        }
        let by_digest = image.digest.is_some();
        let mut sources = Vec::new();
        for m in &entry.mirrors {
            let wanted = match m.pull_from {
                PullFromMirror::All => true,
                PullFromMirror::DigestOnly => by_digest,
                PullFromMirror::TagOnly => !by_digest,
            };
            if wanted {
                sources.push(located(image, entry, &m.location, true)?);
            }
        }
        sources.push(located(image, entry, &entry.location, false)?);
        Ok(sources)
    }

    /// The entry whose prefix matches `image`'s name and is longest.
    fn matching(&self, image: &ImageRef) -> Option<&Registry> {
        let name = format!("{}/{}", image.registry, image.repository);
        self.registries
            .iter()
            .filter(|r| prefix_matches(&r.prefix, &image.registry, &name))
            .max_by_key(|r| r.prefix.len())
    }
}

/// `image` named at `location` in place of `entry`'s prefix.
fn located(
    image: &ImageRef,
    entry: &Registry,
    location: &str,
    mirror: bool,
) -> Result<PullSource, ImageError> {
    let name = format!("{}/{}", image.registry, image.repository);
    let rest = if entry.prefix.starts_with("*.") {
        // A wildcard prefix stands for the whole host.
        &name[image.registry.len()..]
    } else {
        &name[entry.prefix.len()..]
    };
    let base = if location.is_empty() {
        &image.registry
    } else {
        location
    };
    let moved = format!("{base}{rest}");
    let mut at = ImageRef::parse(&moved).map_err(|message| ImageError::Reference {
        reference: format!("{moved} ({image} as {} places it)", entry.file.display()),
        message,
    })?;
    at.tag.clone_from(&image.tag);
    at.digest.clone_from(&image.digest);
    Ok(PullSource { image: at, mirror })
}

/// Whether `prefix` covers the repository `name` (`registry/repository`) of `registry`:
/// the same name, or one below it (podman's rule: a prefix ends at a path boundary).
fn prefix_matches(prefix: &str, registry: &str, name: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix('*') {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        return host.ends_with(domain);
    }
    match name.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Checks one entry: a prefix or location to go by; a wildcard prefix only for a host's
/// settings (podman refuses a location for one, as it would not know what to rewrite).
fn check_entry(path: &Path, raw: RawRegistry) -> Result<Registry, RegistriesConfError> {
    let prefix = raw.prefix.clone().or_else(|| raw.location.clone());
    let bad = |prefix: &str, message: &str| RegistriesConfError::Entry {
        path: path.to_owned(),
        prefix: prefix.to_owned(),
        message: message.to_owned(),
    };
    let Some(prefix) = prefix.filter(|p| !p.is_empty()) else {
        return Err(bad("", "neither prefix nor location is set"));
    };
    let wildcard = prefix.starts_with("*.");
    if prefix.contains('*') && (!wildcard || prefix.contains('/') || prefix[1..].contains('*')) {
        return Err(bad(&prefix, "a wildcard prefix is only `*.domain`"));
    }
    let location = raw.location.unwrap_or_default();
    if wildcard && !location.is_empty() {
        return Err(bad(&prefix, "a wildcard prefix cannot have a location"));
    }
    let location = if location.is_empty() && !wildcard {
        prefix.clone()
    } else {
        location
    };
    let mut mirrors = raw.mirror;
    if raw.digest_only {
        for m in &mut mirrors {
            m.pull_from = PullFromMirror::DigestOnly;
        }
    }
    Ok(Registry {
        prefix: prefix.trim_end_matches('/').to_owned(),
        location: location.trim_end_matches('/').to_owned(),
        insecure: raw.insecure,
        blocked: raw.blocked,
        mirrors,
        file: path.to_owned(),
    })
}

/// `text`, read from `path`, as TOML; a syntax error names the file and line.
fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, RegistriesConfError> {
    toml::from_str(text).map_err(|e| RegistriesConfError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().to_owned(),
    })
}

fn host_of(location: &str) -> &str {
    location.split('/').next().unwrap_or(location)
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.merge(Path::new("/t/registries.conf"), text).unwrap();
        c
    }

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn places(c: &RegistriesConf, s: &str) -> Vec<String> {
        let sources = c.sources(&image(s)).unwrap();
        sources.iter().map(|p| p.image.to_string()).collect()
    }

    #[test]
    fn the_longest_prefix_rewrites_to_its_location() {
        let c = conf(
            r#"
            [[registry]]
            prefix = "example.com"
            location = "127.0.0.1:5000/all"
            [[registry]]
            prefix = "example.com/foo"
            location = "127.0.0.1:5000/mirror/foo"
            "#,
        );
        assert_eq!(
            places(&c, "example.com/foo/app:1"),
            ["127.0.0.1:5000/mirror/foo/app:1"]
        );
        assert_eq!(
            places(&c, "example.com/bar:2"),
            ["127.0.0.1:5000/all/bar:2"]
        );
        // A prefix ends at a path boundary: foobar is not under foo.
        assert_eq!(
            places(&c, "example.com/foobar:1"),
            ["127.0.0.1:5000/all/foobar:1"]
        );
        assert_eq!(places(&c, "other.org/x:1"), ["other.org/x:1"]);
    }

    #[test]
    fn mirrors_come_first_as_pull_from_mirror_allows() {
        let c = conf(
            r#"
            [[registry]]
            location = "example.com"
            [[registry.mirror]]
            location = "127.0.0.1:5001/m"
            [[registry.mirror]]
            location = "127.0.0.1:5002"
            pull-from-mirror = "digest-only"
            [[registry.mirror]]
            location = "127.0.0.1:5003"
            pull-from-mirror = "tag-only"
            "#,
        );
        assert_eq!(
            places(&c, "example.com/a:1"),
            [
                "127.0.0.1:5001/m/a:1",
                "127.0.0.1:5003/a:1",
                "example.com/a:1"
            ]
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sources = c.sources(&image(&format!("example.com/a@{d}"))).unwrap();
        let hosts: Vec<&str> = sources.iter().map(|s| s.image.registry.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5001", "127.0.0.1:5002", "example.com"]);
        assert!(sources[0].mirror && !sources[2].mirror);
    }

    #[test]
    fn a_blocked_registry_is_refused_naming_the_file() {
        let c = conf("[[registry]]\nlocation = \"example.com\"\nblocked = true\n");
        let e = c.sources(&image("example.com/a:1")).unwrap_err();
        assert!(e.to_string().contains("/t/registries.conf"), "{e}");
        assert!(e.to_string().contains("example.com"), "{e}");
    }

    #[test]
    fn a_wildcard_prefix_covers_subdomains() {
        let c = conf(
            "[[registry]]\nprefix = \"*.example.com\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:5001\"\n",
        );
        assert_eq!(
            places(&c, "a.example.com/x:1"),
            ["127.0.0.1:5001/x:1", "a.example.com/x:1"]
        );
        assert_eq!(places(&c, "example.org/x:1"), ["example.org/x:1"]);
        let e = RegistriesConf::default()
            .merge_err("[[registry]]\nprefix = \"*.a.com\"\nlocation = \"b.com\"\n");
        assert!(e.contains("wildcard"), "{e}");
    }

    #[test]
    fn insecure_covers_locations_and_mirrors() {
        let c = conf(
            "[[registry]]\nlocation = \"10.0.0.1:5000/x\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"10.0.0.2:5000/y\"\ninsecure = true\n\
             [[registry]]\nlocation = \"10.0.0.3\"\n",
        );
        assert!(c.insecure("10.0.0.1:5000") && c.insecure("10.0.0.2:5000"));
        assert!(!c.insecure("10.0.0.3") && !c.insecure("10.0.0.1"));
    }

    #[test]
    fn a_later_file_replaces_an_entry_of_the_same_prefix() {
        let mut c = conf("[[registry]]\nlocation = \"example.com\"\nblocked = true\n");
        c.merge(
            Path::new("/t/b.conf"),
            "[[registry]]\nprefix = \"example.com\"\nlocation = \"127.0.0.1:5000\"\n",
        )
        .unwrap();
        assert_eq!(places(&c, "example.com/a:1"), ["127.0.0.1:5000/a:1"]);
    }

    #[test]
    fn a_bad_file_is_named_with_its_line() {
        let e =
            RegistriesConf::default().merge_err("[[registry]]\nlocation = \"a\"\nblocked = yes\n");
        assert!(e.starts_with("/t/bad.conf:3:"), "{e}");
        let e =
            RegistriesConf::default().merge_err("[[registry]]\nlocation = \"a\"\nblokced = true\n");
        assert!(e.contains("blokced"), "{e}");
        let e = RegistriesConf::default().merge_err("[[registry]]\ninsecure = true\n");
        assert!(e.contains("neither prefix nor location"), "{e}");
    }

    #[test]
    fn the_env_file_replaces_all_and_a_user_file_the_systems() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("given.conf");
        assert_eq!(
            conf_files(Some(given.clone()), None, Path::new("/sys.conf")),
            [given]
        );
        let user = dir.path().join("containers");
        std::fs::create_dir_all(&user).unwrap();
        let files = conf_files(None, Some(user.clone()), Path::new("/sys.conf"));
        assert_eq!(files[0], Path::new("/sys.conf"));
        std::fs::write(user.join("registries.conf"), "").unwrap();
        std::fs::create_dir_all(user.join("registries.conf.d")).unwrap();
        for f in ["b.conf", "a.conf", "c.txt"] {
            std::fs::write(user.join("registries.conf.d").join(f), "").unwrap();
        }
        let files = conf_files(None, Some(user.clone()), Path::new("/sys.conf"));
        assert_eq!(files[0], user.join("registries.conf"));
        let own: Vec<&PathBuf> = files.iter().filter(|f| f.starts_with(&user)).collect();
        assert_eq!(
            own,
            [
                &user.join("registries.conf"),
                &user.join("registries.conf.d/a.conf"),
                &user.join("registries.conf.d/b.conf")
            ]
        );
    }

    #[test]
    fn a_short_name_is_its_alias_keeping_its_tag_or_digest() {
        let mut c = conf(
            "unqualified-search-registries = [\"127.0.0.1:5001\"]\n\
             [aliases]\n\"app\" = \"127.0.0.1:5000/acme/app\"\n\"acme/x\" = \"127.0.0.1:5000/y:2\"\n",
        );
        assert_eq!(c.qualify("app").unwrap(), "127.0.0.1:5000/acme/app:latest");
        assert_eq!(c.qualify("app:1").unwrap(), "127.0.0.1:5000/acme/app:1");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            c.qualify(&format!("app@{d}")).unwrap(),
            format!("127.0.0.1:5000/acme/app@{d}")
        );
        assert_eq!(c.qualify("acme/x").unwrap(), "127.0.0.1:5000/y:2");
        assert_eq!(c.qualify("acme/x:3").unwrap(), "127.0.0.1:5000/y:3");
        // A later file's alias of the same name replaces it.
        c.merge(
            Path::new("/t/b.conf"),
            "[aliases]\n\"app\" = \"127.0.0.1:5002/other/app\"\n",
        )
        .unwrap();
        assert_eq!(c.qualify("app:1").unwrap(), "127.0.0.1:5002/other/app:1");
        let e = RegistriesConf::default().merge_err("[aliases]\n\"app\" = \"other/app\"\n");
        assert!(e.contains("fully qualified"), "{e}");
        let e = RegistriesConf::default().merge_err("[aliases]\n\"app:1\" = \"h.io/app\"\n");
        assert!(e.contains("without a tag"), "{e}");
    }

    #[test]
    fn the_alias_cache_wins_over_registries_conf_and_adds_only_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conf(
            "[aliases]\n\"app\" = \"127.0.0.1:5000/acme/app\"\n\"db\" = \"127.0.0.1:5000/db\"\n",
        );
        c.add_alias_cache(&dir.path().join("absent.conf")).unwrap();
        let cache = dir.path().join("short-name-aliases.conf");
        std::fs::write(
            &cache,
            "unqualified-search-registries = [\"127.0.0.1:5009\"]\n\
             [aliases]\n  \"app\" = \"127.0.0.1:5001/cached/app\"\n",
        )
        .unwrap();
        c.add_alias_cache(&cache).unwrap();
        assert_eq!(c.qualify("app:1").unwrap(), "127.0.0.1:5001/cached/app:1");
        assert_eq!(c.qualify("db").unwrap(), "127.0.0.1:5000/db:latest");
        // The cache's other keys are not registries.conf's: still no search registry.
        assert!(c.qualify("other").is_err());
        assert_eq!(c.files.last(), Some(&cache));
        std::fs::write(&cache, "[aliases]\n\"app\" = \n").unwrap();
        let e = c.add_alias_cache(&cache).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:", cache.display())), "{e}");
    }

    #[test]
    fn a_short_name_is_at_the_one_search_registry() {
        let c = conf("unqualified-search-registries = [\"127.0.0.1:5000\"]\n");
        assert_eq!(
            c.qualify("acme/app:1").unwrap(),
            "127.0.0.1:5000/acme/app:1"
        );
        assert_eq!(c.qualify("alpine").unwrap(), "127.0.0.1:5000/alpine:latest");
        // A qualified name stays as it is, Docker Hub's too.
        for s in [
            "docker.io/library/alpine",
            "127.0.0.1:5001/a:1",
            "localhost/a",
        ] {
            assert_eq!(c.qualify(s).unwrap(), s);
        }
        let hub = conf("unqualified-search-registries = [\"docker.io\"]\n");
        assert_eq!(
            hub.qualify("alpine").unwrap(),
            "docker.io/library/alpine:latest"
        );
    }

    #[test]
    fn several_search_registries_are_ambiguous_naming_each() {
        let c = conf("unqualified-search-registries = [\"127.0.0.1:5000\", \"127.0.0.1:5001\"]\n");
        let e = c.qualify("acme/app:1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "short name \"acme/app:1\" is ambiguous: it could be 127.0.0.1:5000/acme/app:1 or \
             127.0.0.1:5001/acme/app:1; name the registry, or add an alias in registries.conf"
        );
        assert_eq!(e.class(), crate::contract::ErrorClass::User);
        assert_eq!(c.first_search_registry(), Some("127.0.0.1:5000"));
    }

    #[test]
    fn no_search_registry_is_an_error_never_docker_hub() {
        for c in [
            RegistriesConf::default(),
            conf("unqualified-search-registries = []\n"),
        ] {
            let e = c.qualify("alpine").unwrap_err().to_string();
            assert!(
                e.contains("no registry is configured for short names"),
                "{e}"
            );
        }
        // A later file that sets the list replaces it (empty: none).
        let mut c = conf("unqualified-search-registries = [\"127.0.0.1:5000\"]\n");
        c.merge(
            Path::new("/t/b.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        assert!(c.qualify("alpine").is_err());
        assert_eq!(c.first_search_registry(), None);
    }

    impl RegistriesConf {
        fn merge_err(mut self, text: &str) -> String {
            self.merge(Path::new("/t/bad.conf"), text)
                .unwrap_err()
                .to_string()
        }
    }
}
