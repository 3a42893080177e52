//! A small per-thread front for the verified-token cache, and the keyed
//! hash that both key tokens by.
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

use super::{Entry, Verified};

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

/// A slot shares the token's bytes with moka's entry: a miss copies the
/// token once, for both.
type Slot = Option<Entry>;

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

    /// The keyed hash of `token`: its slot here and its key in moka (whose
    /// entries hold the token, compared on every hit: two tokens can share
    /// a hash, and a client cannot choose which do without the key).
    pub(super) fn key(&self, token: &[u8]) -> u64 {
        self.hasher.hash_one(token)
    }

    /// This thread's entry for `token` (whose [`key`](Self::key) is `key`),
    /// or else what `fill` finds (moka), kept in the slot for next time.
    pub(super) fn get_or_fill(
        &self,
        key: u64,
        token: &[u8],
        fill: impl Fn() -> Option<Entry>,
    ) -> Option<Arc<Verified>> {
        // moka's entry under `key` may be another token's.
        let fill = || fill().filter(|e| e.is_for(token));
        let epoch = self.epoch.load(Ordering::Acquire);
        let index = (key as usize) % SLOTS;
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
                    Some(entry) if entry.is_for(token) => Some(entry.verified.clone()),
                    _ => {
                        let found = fill()?;
                        let verified = found.verified.clone();
                        *slot = Some(found);
                        Some(verified)
                    }
                }
            })
            // No thread-local left (the thread is ending): moka alone.
            .unwrap_or_else(|_| fill().map(|e| e.verified))
    }

    /// Empties every thread's front (each on its next lookup).
    pub(super) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    fn entry(token: &[u8], subject: &str) -> Entry {
        Entry {
            token: token.into(),
            verified: Arc::new(Verified {
                issuer: "idp".into(),
                kid: None,
                key_id: [0; 32],
                claims: serde_json::json!({ "sub": subject })
                    .as_object()
                    .unwrap()
                    .clone(),
                exp: f64::INFINITY,
                digest: [0; 32],
                identity: OnceLock::new(),
                phantom: None,
            }),
        }
    }

    fn subject(v: &Verified) -> &str {
        v.claims["sub"].as_str().unwrap()
    }

    /// The key is a hash: two tokens can share it. Neither moka's entry
    /// nor a slot may answer for a token other than the one it holds.
    #[test]
    fn an_entry_answers_only_for_its_own_token() {
        let front = Front::new(u64::MAX - 1);
        let key = front.key(b"token-a");
        let a = entry(b"token-a", "alice");
        // moka's entry under this key is another token's: a miss.
        assert!(
            front
                .get_or_fill(key, b"token-b", || Some(a.clone()))
                .is_none()
        );
        // The slot filled for token A ...
        let found = front.get_or_fill(key, b"token-a", || Some(a.clone()));
        assert_eq!(found.as_deref().map(subject), Some("alice"));
        // ... answers for A from the slot, without asking moka ...
        let found = front.get_or_fill(key, b"token-a", || panic!("slot not used"));
        assert_eq!(found.as_deref().map(subject), Some("alice"));
        // ... and not for B under the same key, nor does it keep B out.
        assert!(front.get_or_fill(key, b"token-b", || None).is_none());
        let b = entry(b"token-b", "bob");
        let found = front.get_or_fill(key, b"token-b", || Some(b.clone()));
        assert_eq!(found.as_deref().map(subject), Some("bob"));
        assert!(front.get_or_fill(key, b"token-a", || None).is_none());
    }
}
