//! The content store: blobs by digest, verified before they land, the record of each image
//! reference, and the locks concurrent berths fetch under. Opening it creates it and closes
//! its root; it never sweeps or collects (that is [`layers`](super::layers)' prune, asked
//! for by the commands).

mod store;

pub use store::{BlobWriter, Store};

use crate::image::spec::{Digest, ImageError};

/// Where blobs are written: the narrow sink distribution fills (it never sees the rest of
/// the store).
pub trait Ingest {
    /// A writer that lands the blob only if exactly `size` bytes with `digest` arrive.
    fn blob_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, ImageError>;
}

impl Ingest for Store {
    fn blob_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, ImageError> {
        Store::blob_writer(self, digest, size)
    }
}
