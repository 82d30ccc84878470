//! What the store keeps of an image reference: what it resolved to, and which rules of which
//! signature policy accepted it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// What an image reference resolved to when it was last pulled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub reference: String,
    /// What the reference names in the registry: an index or a manifest.
    pub digest: Digest,
    /// The manifest for this host's platform.
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    /// Compressed size of all layers, in bytes.
    pub size: u64,
    /// Seconds since the epoch.
    pub pulled_at: u64,
    /// When a pull or a job last used the image, in seconds since the epoch (0: never
    /// recorded, as in records written before berth kept it).
    #[serde(default)]
    pub last_used: u64,
    /// The signature policy that accepted the image under this reference (see
    /// `verify::Rules::acceptance`); `None` in records written before berth
    /// kept it, and for layouts and archives (checked at every load): checked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
}

/// Which rules of which signature policy accepted an image for a reference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    /// The policy file; `None`: no policy was in force.
    pub policy: Option<PathBuf>,
    /// The scope of the policy whose requirements applied.
    pub scope: String,
    /// The digest of those requirements.
    pub requirements: Digest,
}
