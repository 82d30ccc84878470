//! A project of its own on the shared store that `scripts/services.sh start` runs on
//! loopback: a PostgreSQL database and an S3 prefix, both removed when it is dropped.

use berth::storage::blob::{BlobStore, S3Blobs};
use berth::storage::{FilesUrl, Storage, StorageUrl, StoreSettings};

pub struct SharedStore {
    pub settings: StoreSettings,
    database: String,
    admin: String,
}

impl SharedStore {
    /// A fresh database and prefix, or why the servers are not there (the variables
    /// `eval "$(scripts/services.sh start)"` sets are missing).
    pub fn new() -> Result<SharedStore, String> {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| format!("{name} is not set (eval \"$(scripts/services.sh start)\")"))
        };
        let admin = var("BERTH_TEST_PG_URL")?;
        let s3 = var("BERTH_TEST_S3_URL")?;
        let tag = format!("{:016x}", super::rand_u64());
        let database = format!("berth_t_{tag}");
        let mut c = ::postgres::Client::connect(&admin, ::postgres::NoTls)
            .map_err(|e| format!("{admin}: {e}"))?;
        c.batch_execute(&format!("CREATE DATABASE {database}"))
            .map_err(|e| format!("create database {database}: {e}"))?;
        let (base, _) = admin
            .rsplit_once('/')
            .ok_or("BERTH_TEST_PG_URL has no database")?;
        let settings = StoreSettings {
            storage: StorageUrl::Postgres(format!("{base}/{database}")),
            files: FilesUrl::S3 {
                bucket: s3
                    .trim_start_matches("s3://")
                    .trim_end_matches('/')
                    .to_owned(),
                prefix: format!("t-{tag}"),
            },
        };
        Ok(SharedStore {
            settings,
            database,
            admin,
        })
    }

    /// `--storage URL --files URL` for a berth that should use this store.
    pub fn args(&self) -> Vec<String> {
        let StorageUrl::Postgres(storage) = &self.settings.storage else {
            unreachable!("a shared store is PostgreSQL")
        };
        let FilesUrl::S3 { bucket, prefix } = &self.settings.files else {
            unreachable!("a shared store keeps its files in S3")
        };
        vec![
            "--storage".into(),
            storage.clone(),
            "--files".into(),
            format!("s3://{bucket}/{prefix}"),
        ]
    }

    pub fn open(&self) -> Box<dyn Storage> {
        berth::storage::open(&self.settings).unwrap()
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        if let Ok(mut c) = ::postgres::Client::connect(&self.admin, ::postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ));
        }
        if let FilesUrl::S3 { bucket, prefix } = &self.settings.files
            && let Ok(blobs) = S3Blobs::open(bucket, prefix)
        {
            for (key, _) in blobs.list().unwrap_or_default() {
                let _ = blobs.delete(&key);
            }
        }
    }
}
