//! How berth reaches registries: what a command line or a job's settings say.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::auth;
use super::registries_conf::RegistriesConf;

/// How long a pull may take by default: a large image over a slow link, with room to spare.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How berth reaches registries.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Registries (`host[:port]`) that may be spoken to over plain HTTP. Loopback
    /// registries always may.
    pub insecure: Vec<String>,
    /// Retries of a failed request that may succeed later (connection refused, 5xx, 429,
    /// a transfer that broke: a blob then resumes where it stopped).
    pub retries: u32,
    /// First back-off; it doubles after each retry, up to a minute.
    pub backoff: Duration,
    /// Show a progress bar while fetching (when stderr is a terminal).
    pub progress: bool,
    /// `--authfile` / `REGISTRY_AUTH_FILE`: read first, and must exist.
    pub authfile: Option<PathBuf>,
    /// berth's own credentials file (`berth login`), read last.
    pub berth_auth_file: Option<PathBuf>,
    /// The certs.d directories (containers-certs.d(5)) to look in for a registry's
    /// `HOST[:PORT]/`, in order: podman's (`tls::standard_certs_d`), then berth's own.
    pub certs_d: Vec<PathBuf>,
    /// How long a pull may take from the first request to the last byte, and how long a
    /// berth waits for another's lock on a blob or layer it needs.
    pub pull_timeout: Duration,
    /// When a registry is asked at all (`--pull`).
    pub pull: PullPolicy,
    /// registries.conf: locations, mirrors, insecure and blocked registries.
    pub registries: RegistriesConf,
}

/// When berth asks a registry about an image it has stored (`--pull`, podman's words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Fetch the manifest every time; stored layers are still reused.
    Always,
    /// A stored image is used without asking any registry.
    Missing,
    /// No registry is asked: an image not stored is an error.
    Never,
    /// A tag is checked with a `HEAD`; its manifest is fetched only when it changed, and a
    /// registry that cannot answer leaves the stored image to run.
    #[default]
    Newer,
}

/// A pull policy berth does not know.
#[derive(Debug, thiserror::Error)]
pub enum PullPolicyError {
    #[error("{origin}: unknown pull policy {value:?}: expected always, missing, never or newer")]
    Unknown { origin: String, value: String },
}

impl PullPolicy {
    /// The policy `value` names; `origin` says where it was given, for the error.
    pub fn parse(value: &str, origin: &str) -> Result<PullPolicy, PullPolicyError> {
        match value.trim() {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            "newer" => Ok(PullPolicy::Newer),
            _ => Err(PullPolicyError::Unknown {
                origin: origin.to_owned(),
                value: value.to_owned(),
            }),
        }
    }

    /// The policy given on the command line or in the environment (`given`, named
    /// `flag`), else the last one the configuration files set (`(file, value)`, in the
    /// order read), else `newer`.
    pub fn resolve(
        given: Option<&str>,
        flag: &str,
        files: &[(PathBuf, String)],
    ) -> Result<PullPolicy, PullPolicyError> {
        if let Some(value) = given {
            return PullPolicy::parse(value, flag);
        }
        match files.last() {
            Some((path, value)) => PullPolicy::parse(value, &format!("{}: pull", path.display())),
            None => Ok(PullPolicy::default()),
        }
    }

    /// The word for the policy, as `--pull` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::Missing => "missing",
            PullPolicy::Never => "never",
            PullPolicy::Newer => "newer",
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            insecure: Vec::new(),
            retries: 4,
            backoff: Duration::from_millis(500),
            progress: true,
            authfile: None,
            berth_auth_file: None,
            certs_d: vec![PathBuf::from(super::tls::SYSTEM_CERTS_D)],
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            pull: PullPolicy::default(),
            registries: RegistriesConf::default(),
        }
    }
}

impl RegistrySettings {
    /// Whether plain HTTP is allowed for `registry` (`host[:port]`): `--insecure-registry`,
    /// registries.conf's `insecure`, or loopback.
    pub fn allows_http(&self, registry: &str) -> bool {
        self.insecure.iter().any(|r| r == registry)
            || self.registries.insecure(registry)
            || is_loopback(registry)
    }

    /// Where credentials are looked up.
    pub fn credential_sources(&self) -> auth::Sources {
        auth::Sources::from_env(self.authfile.as_deref(), self.berth_auth_file.as_deref())
    }
}

pub(super) fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_parses_by_its_word() {
        for p in [
            PullPolicy::Always,
            PullPolicy::Missing,
            PullPolicy::Never,
            PullPolicy::Newer,
        ] {
            assert_eq!(PullPolicy::parse(p.as_str(), "--pull").unwrap(), p);
        }
    }

    #[test]
    fn the_flag_wins_over_the_files_and_the_last_file_over_the_first() {
        let files = [
            (PathBuf::from("/etc/berth/berth.toml"), "always".to_owned()),
            (PathBuf::from("/h/berth.toml"), "missing".to_owned()),
        ];
        let r = |given| PullPolicy::resolve(given, "--pull", &files).unwrap();
        assert_eq!(r(Some("never")), PullPolicy::Never);
        assert_eq!(r(None), PullPolicy::Missing);
        assert_eq!(
            PullPolicy::resolve(None, "--pull", &files[..1]).unwrap(),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::resolve(None, "--pull", &[]).unwrap(),
            PullPolicy::Newer
        );
    }

    #[test]
    fn an_unknown_policy_is_named_with_where_it_was_given() {
        let e = PullPolicy::resolve(Some("sometimes"), "--pull", &[]).unwrap_err();
        assert!(e.to_string().contains("--pull"), "{e}");
        assert!(e.to_string().contains("\"sometimes\""), "{e}");
        let files = [(PathBuf::from("/h/berth.toml"), "Always".to_owned())];
        let e = PullPolicy::resolve(None, "--pull", &files).unwrap_err();
        assert!(e.to_string().contains("/h/berth.toml: pull"), "{e}");
        assert!(e.to_string().contains("\"Always\""), "{e}");
    }
}
