//! Registries and transports: they produce blobs into the content store. The registry
//! client (auth challenges, certs.d TLS, capped manifests, resumed blobs) writes through
//! the narrow [`Ingest`](super::content::Ingest) sink; OCI layouts and `docker save`
//! archives are read as strictly.

pub mod auth;
mod pinned;
mod registries_conf;
mod registry;
mod settings;
mod tls;
pub mod transport;

pub use registries_conf::{
    RegistriesConf, RegistriesConfError, registries_conf_files, short_name_alias_cache,
};
pub use registry::RegistryClient;
pub use settings::{PullPolicy, PullPolicyError, RegistrySettings};
pub use tls::{SYSTEM_CERTS_D, standard_certs_d, user_certs_d};
