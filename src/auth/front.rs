//! A small per-thread front for the verified-token cache.
//!
//! A moka lookup costs about 1,200 instructions and writes moka's shared
//! bookkeeping (its read buffer and frequency sketch) on every hit, from
//! every worker. Each thread keeps the last tokens it saw in a few
//! direct-mapped slots instead: a hit is one keyed hash, a byte comparison
//! and a reference count on this thread. Nothing here is trusted more than
//! moka's entry: the caller checks expiry and key on every hit, and the
//! revocation check runs on every request after it, so an entry the front
//! still holds after moka dropped it can never let through what moka
//! would not. Revocations empty every thread's front anyway (the epoch).

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Verified;

/// Slots per thread: enough for the hot tokens of a worker, small enough
/// that the largest tokens (16 KiB) hold at most 1 MiB per thread.
const SLOTS: usize = 64;

/// One authenticator's front: which slots are its own, and the epoch that
/// empties them.
#[derive(Debug)]
pub(super) struct Front {
    owner: u64,
    epoch: AtomicU64,
    hasher: foldhash::quality::RandomState,
}

type Slot = Option<(Box<[u8]>, Arc<Verified>)>;

#[derive(Default)]
struct Local {
    owner: u64,
    epoch: u64,
    slots: Vec<Slot>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::default();
}

impl Front {
    /// The front of authenticator number `owner`: a thread's slots filled
    /// for another (an earlier reload, or another gateway in the same
    /// process) are never read for this one.
    pub(super) fn new(owner: u64) -> Self {
        Self {
            owner,
            epoch: AtomicU64::new(0),
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// This thread's entry for `token`, or else what `fill` finds (moka),
    /// kept in the slot for next time: one hash of the token either way.
    pub(super) fn get_or_fill(
        &self,
        token: &[u8],
        fill: impl Fn() -> Option<Arc<Verified>>,
    ) -> Option<Arc<Verified>> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let index = (self.hasher.hash_one(token) as usize) % SLOTS;
        LOCAL
            .try_with(|local| {
                let mut local = local.borrow_mut();
                if local.owner != self.owner || local.epoch != epoch || local.slots.is_empty() {
                    local.slots.clear();
                    local.slots.resize_with(SLOTS, || None);
                    local.owner = self.owner;
                    local.epoch = epoch;
                }
                let slot = &mut local.slots[index];
                match slot {
                    Some((t, v)) if **t == *token => Some(v.clone()),
                    _ => {
                        let found = fill()?;
                        *slot = Some((token.into(), found.clone()));
                        Some(found)
                    }
                }
            })
            // No thread-local left (the thread is ending): moka alone.
            .unwrap_or_else(|_| fill())
    }

    /// Empties every thread's front (each on its next lookup).
    pub(super) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }
}
