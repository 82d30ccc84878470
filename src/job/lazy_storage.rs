//! The project store, opened when first needed, shared by the steps of a job.

use crate::storage::{Storage, StorageError, StoreSettings};

/// The project store, opened the first time a job needs it: a job that maps nothing and
/// keeps no state never touches it.
#[derive(Debug)]
pub(super) struct LazyStorage {
    settings: StoreSettings,
    opened: Option<Box<dyn Storage>>,
}

impl LazyStorage {
    /// The store `settings` name, not opened yet.
    pub fn new(settings: StoreSettings) -> LazyStorage {
        LazyStorage {
            settings,
            opened: None,
        }
    }

    pub fn get(&mut self) -> Result<&dyn Storage, StorageError> {
        let store = match self.opened.take() {
            Some(s) => s,
            None => crate::storage::open(&self.settings)?,
        };
        Ok(&**self.opened.insert(store))
    }

    /// The store, if it was opened.
    pub fn opened(&self) -> Option<&dyn Storage> {
        self.opened.as_deref()
    }
}
