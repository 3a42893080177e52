//! `store: memory`: revocations live in this process only (one replica;
//! lost on restart). Always healthy.

use std::sync::Arc;

use super::{BoxFuture, DenyList, Revocation, Store, StoreError};

/// The in-process store.
#[derive(Debug)]
pub struct MemoryStore {
    list: Arc<DenyList>,
}

impl MemoryStore {
    /// A store that writes straight to `list`.
    pub fn new(list: Arc<DenyList>) -> Self {
        Self { list }
    }
}

impl Store for MemoryStore {
    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        self.list.apply(revocation);
        Box::pin(async { Ok(()) })
    }

    fn healthy(&self) -> bool {
        true
    }

    fn problem(&self) -> Option<String> {
        None
    }

    fn start(&self) {}

    fn first_use<'a>(
        &'a self,
        _key: &'a [u8; 32],
        _ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<bool>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}
