//! Blobs in an S3-compatible object store: `s3://<bucket>/<prefix>/<sha256>`.
//!
//! The endpoint, region and credentials come from the standard variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP`, …) through `object_store`'s builder. A put is a conditional create
//! (`If-None-Match: *`): an object that is there already has the same content, since its
//! name is its digest. Contents up to [`SINGLE_PUT_BYTES`] go in one request; larger ones
//! as a multipart upload, which S3 cannot make conditional — harmless for the same reason.
//! berth's calls are synchronous: each blocks on a small runtime of its own.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

use super::{Blob, BlobStore, RENEW_AGE, Verified, bad_key, hex_of, open_source, valid_key};
use crate::storage::StorageError;

/// Contents up to this size are read into memory and put in one request.
const SINGLE_PUT_BYTES: u64 = 16 << 20;

/// The part size of a multipart upload (S3's minimum is 5 MiB).
const PART_BYTES: usize = 16 << 20;

/// Parts in flight at once during a multipart upload.
const PARTS_IN_FLIGHT: usize = 4;

/// A bucket (and a prefix in it) of an S3-compatible store.
#[derive(Debug)]
pub struct S3Blobs {
    store: AmazonS3,
    bucket: String,
    prefix: String,
    runtime: Arc<Runtime>,
}

impl S3Blobs {
    /// The blobs under `prefix` (may be empty) of `bucket`, reached as the `AWS_*`
    /// variables say.
    pub fn open(bucket: &str, prefix: &str) -> Result<S3Blobs, StorageError> {
        crate::util::install_crypto_provider();
        let location = format!("s3://{bucket}/{prefix}");
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| remote(&location, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StorageError::Io {
                path: "tokio runtime".into(),
                source,
            })?;
        Ok(S3Blobs {
            store,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            runtime: Arc::new(runtime),
        })
    }

    fn object(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn fail(&self, key: &str, e: object_store::Error) -> StorageError {
        remote(&format!("{}/{key}", self.location()), e)
    }

    /// How old the object under `key` is, if it is there.
    fn stored_age(&self, key: &str) -> Result<Option<Duration>, StorageError> {
        match self.runtime.block_on(self.store.head(&self.object(key))) {
            Ok(meta) => {
                let age_ms = crate::util::unix_ms() - meta.last_modified.timestamp_millis();
                Ok(Some(Duration::from_millis(
                    u64::try_from(age_ms).unwrap_or(0),
                )))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(key, e)),
        }
    }

    /// Puts `bytes` under `key`; an object there already (412) is the same content.
    fn put_small(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> Result<(), StorageError> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let object = self.object(key);
        let put = self.store.put_opts(&object, PutPayload::from(bytes), opts);
        match self.runtime.block_on(put) {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(self.fail(key, e)),
        }
    }

    /// Uploads the file at `path` in parts, checking that it still has `key` as digest.
    fn put_large(&self, path: &Path, key: &str) -> Result<(), StorageError> {
        let mut src = open_source(path)?;
        let io_err = |source| StorageError::Io {
            path: path.to_owned(),
            source,
        };
        self.runtime.block_on(async {
            let upload = self
                .store
                .put_multipart(&self.object(key))
                .await
                .map_err(|e| self.fail(key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                let n = read_full(&mut src, &mut buf).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.fail(key, e))?;
                writer.write(&buf[..n]);
            }
            if hex_of(&hasher.finalize()) != key {
                let _ = writer.abort().await;
                return Err(StorageError::Source {
                    path: path.to_owned(),
                    message: "the file changed while it was uploaded".into(),
                });
            }
            writer.finish().await.map_err(|e| self.fail(key, e))?;
            Ok(())
        })
    }
}

impl BlobStore for S3Blobs {
    fn put(&self, path: &Path) -> Result<Blob, StorageError> {
        let mut src = open_source(path)?;
        let io_err = |source| StorageError::Io {
            path: path.to_owned(),
            source,
        };
        let size = src.metadata().map_err(io_err)?.len();
        if size <= SINGLE_PUT_BYTES {
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            src.read_to_end(&mut bytes).map_err(io_err)?;
            let key = hex_of(&Sha256::digest(&bytes));
            let size = bytes.len() as u64;
            match self.stored_age(&key)? {
                None => self.put_small(&key, bytes, PutMode::Create)?,
                // Old content is written again to renew its age before the sweep sees it.
                Some(age) if age >= RENEW_AGE => {
                    self.put_small(&key, bytes, PutMode::Overwrite)?;
                }
                Some(_) => {}
            }
            return Ok(Blob { key, size });
        }
        let (key, size) = digest_file(&mut src).map_err(io_err)?;
        if self.stored_age(&key)?.is_none_or(|age| age >= RENEW_AGE) {
            self.put_large(path, &key)?;
        }
        Ok(Blob { key, size })
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        if !valid_key(key) {
            return Err(bad_key(key));
        }
        let got = self.runtime.block_on(self.store.get(&self.object(key)));
        let stream = got.map_err(|e| self.fail(key, e))?.into_stream();
        let reader = StreamReader {
            stream,
            runtime: Arc::clone(&self.runtime),
            chunk: bytes::Bytes::new(),
        };
        Ok(Box::new(Verified::new(reader, key)))
    }

    fn list(&self) -> Result<Vec<(String, Duration)>, StorageError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let now = crate::util::unix_ms();
        let listed: Vec<_> = self
            .runtime
            .block_on(self.store.list(prefix.as_ref()).collect::<Vec<_>>());
        let mut found = Vec::new();
        for meta in listed {
            let meta = meta.map_err(|e| self.fail("", e))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if !valid_key(name) {
                continue;
            }
            let age_ms = now - meta.last_modified.timestamp_millis();
            let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
            found.push((name.to_owned(), age));
        }
        Ok(found)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        if !valid_key(key) {
            return Err(bad_key(key));
        }
        match self.runtime.block_on(self.store.delete(&self.object(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(key, e)),
        }
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

fn remote(what: &str, e: object_store::Error) -> StorageError {
    StorageError::Remote {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

/// The sha256 and size of what `src` holds, read to its end.
fn digest_file(src: &mut File) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = io::copy(src, &mut hasher)?;
    Ok((hex_of(&hasher.finalize()), size))
}

/// Reads until `buf` is full or the file ends; returns how much.
fn read_full(src: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An object's body as a synchronous reader: each chunk is awaited on the store's runtime.
struct StreamReader {
    stream: BoxStream<'static, object_store::Result<bytes::Bytes>>,
    runtime: Arc<Runtime>,
    chunk: bytes::Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}
