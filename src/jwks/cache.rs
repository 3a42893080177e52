//! One issuer's keys: loaded at start, refreshed in the background before
//! they go stale, refreshed at most once per `min_refresh_interval` when a
//! token names an unknown kid (single-flight: one fetch however many
//! requests wait), kept for `stale_if_error` while the IdP is down.
//!
//! Locks: a std `RwLock` guards the snapshot and is never held across an
//! await; a tokio `Mutex` is the single-flight gate for fetches.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use super::discovery;
use super::fetch::{FetchError, Fetcher};
use super::keyset::{KeySet, Lookup, VerifyKey};
use crate::config::{IssuerConfig, KeySource};
use crate::telemetry::metrics::{IssuerLabel, IssuerResult, Metrics, Name};

/// Shortest freshness honoured from `Cache-Control`, so an IdP sending
/// `max-age=0` is not fetched on every refresh tick.
const MIN_FRESHNESS: Duration = Duration::from_secs(30);
/// Retry pace while fetches fail.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// Bytes the unknown-kid cache may weigh: a client sending random kids
/// (each at most 256 bytes, see `auth::token`) fills it and no more.
const UNKNOWN_KIDS_BYTES: u64 = 1024 * 1024;
/// What moka and the boxed key cost per entry besides the kid's bytes
/// (an estimate on the high side).
const UNKNOWN_KID_OVERHEAD: usize = 96;

#[derive(Debug, Default, Clone)]
struct State {
    keys: Option<Arc<KeySet>>,
    loaded_at: Option<Instant>,
    fresh_for: Duration,
    last_attempt: Option<Instant>,
    /// Bumped after every fetch attempt; waiters compare it to skip a fetch
    /// another request just made.
    generation: u64,
    last_error: Option<String>,
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key with that `kid`, even after a refresh.
    #[error("no key with this kid")]
    UnknownKid,
    /// A key with that `kid` exists, of a family the algorithm does not fit.
    #[error("the key does not fit the algorithm")]
    WrongFamily,
    /// No usable keys (never loaded, or stale past `stale_if_error`).
    #[error("keys unavailable")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
}

/// The key cache of one issuer.
#[derive(Debug)]
pub struct KeyCache {
    issuer: Arc<IssuerConfig>,
    name: Name,
    fetcher: Option<Fetcher>,
    state: RwLock<State>,
    refresh: tokio::sync::Mutex<()>,
    unknown_kids: moka::sync::Cache<Box<str>, ()>,
    metrics: Arc<Metrics>,
    /// SHA-256 of the `ca_file`'s content when the cache was built: a
    /// reload that keeps the path but changes the file builds a new client.
    ca_digest: Option<[u8; 32]>,
    started: std::sync::atomic::AtomicBool,
}

impl KeyCache {
    /// A cache for `issuer`; nothing is fetched until [`KeyCache::start`].
    pub fn new(
        issuer: Arc<IssuerConfig>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::config::ConfigProblem> {
        let remote = matches!(issuer.keys, KeySource::JwksUri(_) | KeySource::Discovery);
        let fetcher = if remote {
            let path = format!("issuers.{}.ca_file", issuer.name);
            Some(Fetcher::new(issuer.ca_file.as_deref(), &path)?)
        } else {
            None
        };
        let mut state = State::default();
        if let KeySource::Hmac(secret) = &issuer.keys {
            state.keys = Some(Arc::new(KeySet::hmac(&secret.0)));
            state.loaded_at = Some(Instant::now());
            state.fresh_for = Duration::MAX;
        }
        let unknown_kids = unknown_kid_cache(
            issuer
                .jwks_cache
                .min_refresh_interval
                .max(Duration::from_secs(1)),
        );
        Ok(Self {
            name: Name(issuer.name.as_str().into()),
            ca_digest: ca_digest(&issuer),
            issuer,
            fetcher,
            state: RwLock::new(state),
            refresh: tokio::sync::Mutex::new(()),
            unknown_kids,
            metrics,
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A cache for `issuer` that starts with `older`'s keys (and their age):
    /// for a reload that changed only rules the keys do not depend on
    /// (`leeway`, `audiences`, `algorithms`, ...). Keys kept alive by
    /// `stale_if_error` during an IdP outage stay alive.
    pub fn carrying(
        issuer: Arc<IssuerConfig>,
        older: &KeyCache,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::config::ConfigProblem> {
        let mut cache = Self::new(issuer, metrics)?;
        let mut state = older.read().clone();
        state.generation = 0;
        *cache.state.get_mut().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(cache)
    }

    /// Whether this cache's keys are the keys `issuer` would load: the same
    /// issuer, key source, cache settings and CA file (path and content).
    pub fn same_source(&self, issuer: &IssuerConfig) -> bool {
        let mine = &self.issuer;
        mine.name == issuer.name
            && mine.issuer == issuer.issuer
            && mine.keys == issuer.keys
            && mine.jwks_cache == issuer.jwks_cache
            && mine.ca_file == issuer.ca_file
            && self.ca_digest == ca_digest(issuer)
    }

    /// The issuer this cache serves.
    pub fn issuer(&self) -> &Arc<IssuerConfig> {
        &self.issuer
    }

    /// Loads the keys once and keeps them fresh in the background for as
    /// long as the cache is alive.
    pub async fn start(self: &Arc<Self>) {
        if !self.needs_fetching() || self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        if self.read().keys.is_none() {
            self.refresh_once(self.generation()).await;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(background(weak));
    }

    fn needs_fetching(&self) -> bool {
        matches!(
            self.issuer.keys,
            KeySource::JwksUri(_) | KeySource::Discovery | KeySource::JwksFile(_)
        )
    }

    /// True once keys have loaded (or the issuer needs none).
    pub fn ready(&self) -> bool {
        !self.needs_fetching() || self.read().keys.is_some()
    }

    /// Why the issuer is not ready, for `/readyz`.
    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// Time since the keys were last loaded, if ever.
    pub fn age(&self) -> Option<Duration> {
        if !self.needs_fetching() {
            return None;
        }
        self.read().loaded_at.map(|t| t.elapsed())
    }

    /// The issuer's name as a metric label.
    pub fn label(&self) -> &Name {
        &self.name
    }

    /// True when the key `id` (under `kid`) is still in the current set.
    pub fn still_has(&self, kid: Option<&str>, id: &[u8; 32]) -> bool {
        self.usable().is_some_and(|k| k.contains(kid, id))
    }

    /// The key for a token's `kid` and `alg`; see the module doc for when this fetches.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, KeyError> {
        let generation = self.generation();
        let keys = match self.usable() {
            Some(keys) => keys,
            None => {
                if self.recently_attempted(RETRY_EVERY) {
                    return Err(self.unavailable());
                }
                self.refresh_once(generation).await;
                self.usable().ok_or_else(|| self.unavailable())?
            }
        };
        match keys.find(kid, alg) {
            Lookup::Found(key) => return Ok(key),
            Lookup::WrongFamily => return Err(KeyError::WrongFamily),
            Lookup::Unknown => {}
        }
        let Some(kid) = kid else {
            return Err(KeyError::UnknownKid);
        };
        let may_refresh = self.issuer.jwks_cache.refresh_on_unknown_kid
            && self.needs_fetching()
            && !self.unknown_kids.contains_key(kid)
            && !self.recently_attempted(self.issuer.jwks_cache.min_refresh_interval);
        if may_refresh {
            self.refresh_once(generation).await;
            if let Some(keys) = self.usable() {
                match keys.find(Some(kid), alg) {
                    Lookup::Found(key) => return Ok(key),
                    Lookup::WrongFamily => return Err(KeyError::WrongFamily),
                    Lookup::Unknown => {}
                }
            }
        }
        self.unknown_kids.insert(kid.into(), ());
        Err(KeyError::UnknownKid)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn generation(&self) -> u64 {
        self.read().generation
    }

    fn recently_attempted(&self, within: Duration) -> bool {
        self.read()
            .last_attempt
            .is_some_and(|t| t.elapsed() < within)
    }

    /// Keys that may still be used: fresh, or stale within `stale_if_error`.
    fn usable(&self) -> Option<Arc<KeySet>> {
        let s = self.read();
        let keys = s.keys.as_ref()?;
        let age = s.loaded_at?.elapsed();
        let limit = s
            .fresh_for
            .saturating_add(self.issuer.jwks_cache.stale_if_error);
        (age <= limit).then(|| keys.clone())
    }

    fn unavailable(&self) -> KeyError {
        let retry = self
            .issuer
            .jwks_cache
            .min_refresh_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        KeyError::Unavailable { retry_after: retry }
    }

    /// Fetches unless another caller fetched since `seen_generation`.
    async fn refresh_once(&self, seen_generation: u64) {
        let _gate = self.refresh.lock().await;
        if self.generation() != seen_generation {
            return;
        }
        let result = self.fetch().await;
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.generation += 1;
        s.last_attempt = Some(Instant::now());
        let outcome = match result {
            Ok((keys, max_age)) => {
                let ttl = self.issuer.jwks_cache.ttl;
                s.fresh_for = max_age.map_or(ttl, |age| age.max(MIN_FRESHNESS).min(ttl));
                self.metrics
                    .jwks_keys
                    .get_or_create(&IssuerLabel {
                        issuer: self.name.clone(),
                    })
                    .set(keys.len() as i64);
                tracing::info!(issuer = %self.issuer.name, keys = keys.len(), fresh_for_s = s.fresh_for.as_secs(), "keys loaded");
                s.keys = Some(Arc::new(keys));
                s.loaded_at = Some(Instant::now());
                s.last_error = None;
                // Kids unknown before may exist now.
                self.unknown_kids.invalidate_all();
                "success"
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer.name, error = %e, has_cached_keys = s.keys.is_some(), "key fetch failed");
                s.last_error = Some(e.to_string());
                "error"
            }
        };
        drop(s);
        self.metrics
            .jwks_refresh
            .get_or_create(&IssuerResult {
                issuer: self.name.clone(),
                result: outcome,
            })
            .inc();
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchError> {
        let doc = match (&self.issuer.keys, &self.fetcher) {
            (KeySource::JwksUri(url), Some(f)) => f.get_json(url).await?,
            (KeySource::Discovery, Some(f)) => {
                let url = discovery::jwks_uri(f, &self.issuer.issuer).await?;
                f.get_json(&url).await?
            }
            (KeySource::JwksFile(path), _) => super::fetch::Document {
                body: read_capped(path).await?.into(),
                max_age: None,
            },
            _ => return Err(FetchError::Invalid("issuer has no key document")),
        };
        let keys = KeySet::from_jwks(&self.issuer.name, &doc.body).map_err(FetchError::Invalid)?;
        // An IdP answering `{"keys":[]}` (or only keys we cannot use) must
        // not replace good keys: it is a failed fetch, and stale_if_error
        // applies as for any other.
        if keys.is_empty() {
            return Err(FetchError::Invalid("the JWKS holds no usable key"));
        }
        Ok((keys, doc.max_age))
    }

    /// When the background task should next refresh.
    fn next_refresh(&self) -> Instant {
        let s = self.read();
        let retry = s.last_attempt.unwrap_or_else(Instant::now) + RETRY_EVERY;
        match (s.loaded_at, &s.last_error) {
            (Some(at), None) => at + s.fresh_for.mul_f64(0.8),
            _ => retry,
        }
    }
}

/// SHA-256 of the issuer's `ca_file`, if it has one that can be read.
fn ca_digest(issuer: &IssuerConfig) -> Option<[u8; 32]> {
    let bytes = std::fs::read(issuer.ca_file.as_ref()?).ok()?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    d.as_ref().try_into().ok()
}

/// A `jwks_file`, read whole only when it is at most the size a fetched
/// document may have.
async fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, FetchError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| FetchError::File(e.kind()))?;
    let mut body = Vec::new();
    let cap = super::fetch::MAX_DOCUMENT_BYTES as u64;
    file.take(cap + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| FetchError::File(e.kind()))?;
    if body.len() as u64 > cap {
        return Err(FetchError::TooLarge);
    }
    Ok(body)
}

async fn background(cache: Weak<KeyCache>) {
    loop {
        let due = match cache.upgrade() {
            Some(c) => c.next_refresh(),
            None => return,
        };
        tokio::time::sleep_until(due.into()).await;
        let Some(c) = cache.upgrade() else { return };
        c.refresh_once(c.generation()).await;
    }
}

/// Kids looked up in vain, each kept for `ttl`; bounded in bytes, not count.
fn unknown_kid_cache(ttl: Duration) -> moka::sync::Cache<Box<str>, ()> {
    moka::sync::Cache::<Box<str>, ()>::builder()
        .weigher(|kid, _| u32::try_from(kid.len() + UNKNOWN_KID_OVERHEAD).unwrap_or(u32::MAX))
        .max_capacity(UNKNOWN_KIDS_BYTES)
        .time_to_live(ttl)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_kid_cache_is_bounded_in_bytes() {
        let cache = unknown_kid_cache(Duration::from_secs(60));
        for i in 0..20_000 {
            cache.insert(format!("{i:0>256}").into(), ());
        }
        cache.run_pending_tasks();
        assert!(
            cache.weighted_size() <= UNKNOWN_KIDS_BYTES,
            "{} bytes held",
            cache.weighted_size()
        );
        let per_entry = (256 + UNKNOWN_KID_OVERHEAD) as u64;
        assert!(cache.entry_count() <= UNKNOWN_KIDS_BYTES / per_entry);
    }
}
