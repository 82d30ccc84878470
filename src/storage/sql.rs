//! What the two SQL backends (`sqlite`, `postgres`) share below their [`Storage`] impls:
//! the error every part of them returns, and how counts and lists sit in columns. A leaf,
//! so that a backend's parts need not import the file that calls them.
//!
//! [`Storage`]: super::Storage

use super::StorageError;

/// An error inside a SQL backend: berth's own, or the database's (`E`), which the backend
/// names (its path, its URL) at the boundary.
#[derive(Debug)]
pub(super) enum Fail<E> {
    Storage(StorageError),
    Db(E),
}

impl<E> From<StorageError> for Fail<E> {
    fn from(e: StorageError) -> Self {
        Fail::Storage(e)
    }
}

impl From<rusqlite::Error> for Fail<rusqlite::Error> {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<postgres::Error> for Fail<postgres::Error> {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

/// What a part of the embedded backend returns.
pub(super) type SqliteRes<T> = Result<T, Fail<rusqlite::Error>>;

/// What a part of the shared backend returns.
pub(super) type PgRes<T> = Result<T, Fail<postgres::Error>>;

/// A count as a SQL integer (saturating).
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A SQL integer as a count (a negative one is 0).
pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A list as the JSON text a column holds.
pub(super) fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// The list a column's JSON text holds (none when it is not one).
pub(super) fn parse_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}
