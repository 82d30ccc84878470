//! How berth reaches registries: what a command line or a job's settings say.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::auth;

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
    /// `HOST[:PORT]/`, in order: the system's, `/etc/containers/certs.d`, then berth's own.
    pub certs_d: Vec<PathBuf>,
    /// How long a pull may take from the first request to the last byte, and how long a
    /// berth waits for another's lock on a blob or layer it needs.
    pub pull_timeout: Duration,
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
        }
    }
}

impl RegistrySettings {
    /// Whether plain HTTP is allowed for `registry` (`host[:port]`).
    pub fn allows_http(&self, registry: &str) -> bool {
        self.insecure.iter().any(|r| r == registry) || is_loopback(registry)
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
