//! berth's advisory locks in the shared database: what commits and migrations take so that
//! hosts writing at once go one after the other (see the module documentation).

use postgres::Transaction;

use crate::storage::TableId;
use crate::storage::sql::PgRes as Res;

/// The first key of berth's advisory locks (ASCII "bert"); the second names what is
/// locked. Other users of the database are free to use any other first key.
pub(super) const LOCK_SPACE: i32 = 0x6265_7274;

/// The advisory lock every file insert takes (after the tables'), and the one that
/// serialises schema migrations.
pub(super) const FILES_LOCK: i32 = 1;
pub(super) const SCHEMA_LOCK: i32 = 2;

/// The second key of the advisory lock of table `id`: a hash of the id. Two tables may
/// share a lock (they then commit one after the other); no table has two.
pub(super) fn table_lock(id: &TableId) -> i32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("table {id}").as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Takes the advisory lock `key` until the transaction ends.
pub(super) fn lock(tx: &mut Transaction<'_>, key: i32) -> Res<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_SPACE, &key])?;
    Ok(())
}
