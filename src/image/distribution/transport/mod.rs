//! Images without a registry: an OCI image layout (`oci:PATH[:REF]`, as skopeo and umoci
//! write it) and a `docker save` archive (`docker-archive:FILE.tar[:REF]`) load into the same
//! content store a registry pull fills, and `berth save` writes a layout back out.
//!
//! Both inputs are untrusted as much as a registry is: every blob is checked against the size
//! and digest its descriptor states before it lands, documents are size-capped before they
//! are read, and nothing inside a layout or an archive is followed as a link.

pub mod docker_archive;
pub mod oci_layout;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::image::content::Store;
use crate::image::spec::ImageError;
use crate::image::spec::digest::Digest;

/// The prefix that names an OCI layout.
pub const OCI: &str = "oci:";
/// The prefix that names a `docker save` archive.
pub const DOCKER_ARCHIVE: &str = "docker-archive:";

/// Where an image comes from when not from a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    OciLayout {
        dir: PathBuf,
        reference: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
}

impl Transport {
    /// `Some` when `name` names a transport (`oci:` or `docker-archive:`), `None` for a
    /// registry reference. As skopeo, the path ends at the first `:` after the prefix.
    pub fn parse(name: &str) -> Option<Result<Transport, ImageError>> {
        let (rest, oci) = if let Some(rest) = name.strip_prefix(OCI) {
            (rest, true)
        } else {
            (name.strip_prefix(DOCKER_ARCHIVE)?, false)
        };
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r.to_owned())),
            None => (rest, None),
        };
        if path.is_empty() || reference.as_deref() == Some("") {
            return Some(Err(ImageError::Reference {
                reference: name.to_owned(),
                message: "expected a path and, optionally, :REF after it".to_owned(),
            }));
        }
        let path = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
        Some(Ok(if oci {
            Transport::OciLayout {
                dir: path,
                reference,
            }
        } else {
            Transport::DockerArchive {
                file: path,
                reference,
            }
        }))
    }

    /// The name its image is recorded under: the prefix, the absolute path, the reference.
    pub fn name(&self) -> String {
        let (prefix, path, reference) = match self {
            Transport::OciLayout { dir, reference } => (OCI, dir, reference),
            Transport::DockerArchive { file, reference } => (DOCKER_ARCHIVE, file, reference),
        };
        let path = path.display();
        match reference {
            Some(r) => format!("{prefix}{path}:{r}"),
            None => format!("{prefix}{path}"),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Transport::OciLayout { dir, .. } => dir,
            Transport::DockerArchive { file, .. } => file,
        }
    }
}

/// Streams `size` bytes from `from` into the store as the blob `digest`, which lands only
/// if exactly those bytes with that digest arrive. `path` names `from` in errors.
fn copy_into(
    store: &Store,
    digest: &Digest,
    size: u64,
    mut from: impl Read,
    path: &Path,
) -> Result<(), ImageError> {
    let mut writer = store.blob_writer(digest, size)?;
    let mut buf = vec![0u8; crate::util::IO_BUFFER];
    loop {
        crate::interrupt::check()?;
        let n = from.read(&mut buf).map_err(|source| ImageError::Store {
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
    }
    writer.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_as_skopeo_names_them() {
        let t = Transport::parse("oci:/tmp/lay:v1").unwrap().unwrap();
        assert_eq!(
            t,
            Transport::OciLayout {
                dir: "/tmp/lay".into(),
                reference: Some("v1".into())
            }
        );
        assert_eq!(t.name(), "oci:/tmp/lay:v1");
        let t = Transport::parse("docker-archive:/x/a.tar")
            .unwrap()
            .unwrap();
        assert_eq!(t.name(), "docker-archive:/x/a.tar");
        let t = Transport::parse("oci:rel").unwrap().unwrap();
        assert!(t.path().is_absolute(), "{t:?}");
        assert!(Transport::parse("127.0.0.1:5000/a/b:1").is_none());
        for bad in ["oci:", "oci:/x:", "docker-archive:"] {
            let e = Transport::parse(bad).unwrap().unwrap_err();
            assert!(e.to_string().contains("expected a path"), "{bad}: {e}");
        }
    }
}
