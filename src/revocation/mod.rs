//! Revocation: a deny list of single tokens (by `jti`) and of whole
//! subjects (every token of `sub` from an issuer issued before a time).
//!
//! Every replica checks its own in-process [`DenyList`] on every request,
//! so the hot path never waits on a network call. The [`Store`] behind it
//! decides how revocations reach that list: `memory` applies them in this
//! process; `redis` writes them to Redis (so they survive restarts) and
//! every replica mirrors them through a subscription. While the mirror
//! cannot be trusted to be complete (Redis unreachable), `on_store_error`
//! decides: deny (fail closed, 503) or allow (use what was mirrored).

pub(crate) mod body;
mod denylist;
pub(crate) mod memory;
pub(crate) mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use denylist::DenyList;

use crate::config::{ConfigProblem, RevocationConfig, RevocationStore};

/// A jti revocation is kept this long past the token's `expires_at`, so
/// a token still accepted within an issuer's leeway stays refused.
pub const KEPT_AFTER_EXPIRY: i64 = 3600 + crate::config::MAX_LEEWAY.as_secs() as i64;

/// One revocation, as stored in Redis and published to every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Revocation {
    /// One token, by `jti`, from any issuer.
    Token {
        /// The token's `jti`.
        jti: String,
        /// The token's `exp`; the entry is dropped [`KEPT_AFTER_EXPIRY`] later.
        expires_at: i64,
    },
    /// Every token of `sub` from `issuer` with `iat` before `issued_before`
    /// (tokens without `iat` too: nothing shows they are newer).
    Subject {
        /// The issuer's name in the config (not its `iss` URL).
        issuer: String,
        /// The subject.
        sub: String,
        /// Seconds since the epoch.
        issued_before: f64,
        /// When the entry may be dropped (no token it covers can still be
        /// valid); `None` keeps it.
        until: Option<i64>,
    },
}

impl Revocation {
    /// When the entry may be forgotten, seconds since the epoch.
    pub fn until(&self) -> Option<i64> {
        match self {
            Revocation::Token { expires_at, .. } => {
                Some(expires_at.saturating_add(KEPT_AFTER_EXPIRY))
            }
            Revocation::Subject { until, .. } => *until,
        }
    }

    /// True when this revocation refuses a token of `issuer` with `claims`.
    pub fn covers(&self, issuer: &str, claims: &Map<String, Value>) -> bool {
        match self {
            Revocation::Token { jti, .. } => {
                claims.get("jti").and_then(Value::as_str) == Some(jti.as_str())
            }
            Revocation::Subject {
                issuer: i,
                sub,
                issued_before,
                ..
            } => {
                i == issuer
                    && subject(claims).as_deref() == Some(sub.as_str())
                    && issued_before_time(claims, *issued_before)
            }
        }
    }
}

/// The token's `sub` as text: a string, or a number by its decimal text
/// (some IdPs issue numeric user ids; a revocation body's `sub` is a string).
pub(crate) fn subject(claims: &Map<String, Value>) -> Option<std::borrow::Cow<'_, str>> {
    match claims.get("sub")? {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

/// `iat` before `before`; a token without a numeric `iat` counts as older.
pub(crate) fn issued_before_time(claims: &Map<String, Value>, before: f64) -> bool {
    claims
        .get("iat")
        .and_then(Value::as_f64)
        .is_none_or(|iat| iat < before)
}

/// Why a token may not pass the revocation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// On the deny list.
    #[error("revoked")]
    Revoked,
    /// The store is down under `on_store_error: deny`.
    #[error("revocation store unavailable")]
    Unavailable,
}

/// Why a revocation could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer in time or refused the write.
    #[error("revocation store unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, so [`Store`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where revocations are kept and how they reach every replica's [`DenyList`].
pub trait Store: Send + Sync + fmt::Debug {
    /// Records `revocation` durably (as far as the store goes) and applies
    /// it to this replica's list before returning.
    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StoreError>>;
    /// False while this replica's list may be missing revocations.
    fn healthy(&self) -> bool;
    /// Why the store is not healthy, for `/readyz` and logs.
    fn problem(&self) -> Option<String>;
    /// Starts background work (subscriptions); called once per store.
    fn start(&self);
    /// Records `key` for `ttl` if it is new in the shared store: `Some(true)`
    /// the first time, `Some(false)` after; `None` when the store is this
    /// process only (the caller's own memory decides).
    fn first_use<'a>(
        &'a self,
        key: &'a [u8; 32],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<bool>, StoreError>>;
}

/// Bytes the local one-time-use memory (DPoP `jti`s) may hold. Past it the
/// least useful entries go: documented in docs/security.md.
const SEEN_BYTES: u64 = 64 * 1024 * 1024;

/// A one-time key's remembered lifetime, for moka's per-entry expiry.
struct SeenFor;

impl moka::Expiry<[u8; 32], Duration> for SeenFor {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        ttl: &Duration,
        _created: std::time::Instant,
    ) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The revocation list of a gateway: the store and the local deny list.
#[derive(Debug)]
pub struct Revocations {
    config: RevocationConfig,
    list: Arc<DenyList>,
    store: Box<dyn Store>,
    /// One-time keys seen by this process (DPoP proof `jti`s), by digest.
    seen: moka::sync::Cache<[u8; 32], Duration>,
}

impl Revocations {
    /// Builds the store named in the config, with every entry of `previous`
    /// carried over (a reload never forgets a revocation); nothing connects
    /// until [`Revocations::start`].
    pub fn new(
        config: &RevocationConfig,
        previous: Option<&Revocations>,
    ) -> Result<Self, ConfigProblem> {
        let list = Arc::new(DenyList::default());
        if let Some(p) = previous {
            list.carry_over(&p.list);
        }
        let store: Box<dyn Store> = match &config.store {
            RevocationStore::Memory => Box::new(memory::MemoryStore::new(list.clone())),
            RevocationStore::Redis(url) => Box::new(redis::RedisStore::new(
                url,
                config.ca_file.as_deref(),
                config.store_grace,
                list.clone(),
            )?),
        };
        let seen = match previous {
            Some(p) => p.seen.clone(),
            None => moka::sync::Cache::builder()
                .weigher(|_, _| 64)
                .max_capacity(SEEN_BYTES)
                .expire_after(SeenFor)
                .build(),
        };
        Ok(Self {
            config: config.clone(),
            list,
            store,
            seen,
        })
    }

    /// True the first time `key` is seen within `ttl`, by every replica
    /// sharing the store (Redis `SET NX EX`), or by this process with the
    /// memory store. With Redis down, `on_store_error` decides: deny is an
    /// error, allow falls back to this process's memory.
    pub async fn first_use(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, StoreError> {
        let local = || self.seen.entry(*key).or_insert(ttl).is_fresh();
        match self.store.first_use(key, ttl).await {
            Ok(Some(fresh)) => {
                // Remembered here too, so a Redis outage later still
                // refuses what this replica saw.
                let here = local();
                Ok(fresh && here)
            }
            Ok(None) => Ok(local()),
            Err(_) if !self.config.deny_on_store_error => Ok(local()),
            Err(e) => Err(e),
        }
    }

    /// The config this was built from (reloads keep it when unchanged).
    pub fn config(&self) -> &RevocationConfig {
        &self.config
    }

    /// Starts the store's background work.
    pub fn start(&self) {
        self.store.start();
    }

    /// Refuses revoked tokens; applies `on_store_error` while the store is down.
    pub fn check(&self, issuer: &str, claims: &Map<String, Value>) -> Result<(), Refused> {
        if self.list.is_revoked(issuer, claims) {
            return Err(Refused::Revoked);
        }
        if self.config.deny_on_store_error && !self.store.healthy() {
            return Err(Refused::Unavailable);
        }
        Ok(())
    }

    /// Records a revocation (and applies it here).
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.store.revoke(revocation).await
    }

    /// What keeps protected routes from being served, for `/readyz`: only
    /// an unhealthy store under `on_store_error: deny`.
    pub fn not_ready(&self) -> Option<String> {
        if self.config.deny_on_store_error && !self.store.healthy() {
            Some(
                self.store
                    .problem()
                    .unwrap_or_else(|| "revocation store not synchronised yet".into()),
            )
        } else {
            None
        }
    }

    /// True while the store is reachable and this replica's list complete.
    pub fn healthy(&self) -> bool {
        self.store.healthy()
    }

    /// Entries on this replica's list (tokens, subjects).
    pub fn entries(&self) -> (usize, usize) {
        self.list.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_revocation_outlives_any_leeway_by_an_hour() {
        let r = Revocation::Token {
            jti: "a".into(),
            expires_at: 1_000,
        };
        let max_leeway = crate::config::MAX_LEEWAY.as_secs() as i64;
        assert_eq!(r.until(), Some(1_000 + 3_600 + max_leeway));
        let far = Revocation::Token {
            jti: "a".into(),
            expires_at: i64::MAX,
        };
        assert_eq!(far.until(), Some(i64::MAX), "saturates, never wraps");
    }
}
