//! Authentication of protected routes: extract the bearer token, verify it
//! (or find it in the verified-token cache), apply the route policy.
//! Forwarding and identity headers happen after, in the gateway.

mod admit;
pub mod api_keys;
pub(crate) mod binding;
pub mod dpop;
pub mod extract;
pub(crate) mod failure;
mod front;
pub mod identity;
pub(crate) mod introspect;
pub(crate) mod policy;
pub mod token;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

pub use admit::{Admitted, Denied};
pub use failure::AuthFailure;
pub use identity::Identity;
pub use verify::{RouteKey, Verified};

use crate::config::{KeySource, Policy, RouteAuth, RouteConfig};
use crate::jwks::KeyCache;
use crate::revocation::{Revocation, Revocations};
use crate::routing::Params;
use crate::telemetry::metrics::{Metrics, ResultLabel, RouteReason};
use crate::telemetry::sharded::{self, Histogram};
use introspect::Introspector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Bytes the verified-token cache may weigh (token bytes plus a per-entry
/// allowance for the claims), so long tokens cannot grow it unbounded.
const VERIFIED_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Per-entry allowance for the decoded claims and bookkeeping.
const VERIFIED_ENTRY_OVERHEAD: usize = 1024;

/// What authentication produced, with the token fingerprint for the access
/// log even when it failed.
pub struct Outcome<'r> {
    /// SHA-256 of the token, when there was one.
    pub digest: Option<[u8; 32]>,
    /// The verified claims, or the failure.
    pub result: Result<Arc<Verified>, AuthFailure>,
    /// The token as presented (its scheme), when there was one.
    found: Option<extract::Found<'r>>,
}

impl Outcome<'_> {
    /// No usable token: nothing to fingerprint.
    fn refused(failure: AuthFailure) -> Self {
        Self {
            digest: None,
            result: Err(failure),
            found: None,
        }
    }
}

/// Numbers authenticators (see [`RouteKey`]).
static AUTHENTICATORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Authenticates requests for one config snapshot.
pub struct Authenticator {
    /// This authenticator's number: its routes' [`RouteKey`]s and its
    /// slots in each thread's cache front.
    id: u64,
    /// Per route (by position): the key caches of its issuers.
    route_issuers: Vec<Vec<Arc<KeyCache>>>,
    /// Per route: how its opaque tokens are introspected, if they are.
    route_introspection: Vec<Option<RouteIntrospection>>,
    /// Per route: the `algs` its challenges offer DPoP with, if they do.
    route_dpop_algs: Vec<Option<Arc<str>>>,
    /// Per route: its RFC 9728 metadata URL, named in its challenges.
    route_metadata: Vec<Option<Arc<str>>>,
    /// Per route: its API-key issuers' keys.
    route_api_keys: Vec<Vec<Arc<api_keys::ApiKeys>>>,
    /// Keyed by the token's keyed hash ([`front::Front::key`]), each entry
    /// holding the token: a hit is an exact byte match, with no SHA-256 on
    /// the hot path. foldhash rather than SipHash: a token is some 600
    /// bytes, and only tokens whose signature verified are ever inserted,
    /// so a client cannot choose colliding keys. Keyed by the hash, not the
    /// bytes, because moka rehashes and compares keys as its table grows
    /// and churns: with 600-byte keys that was 4–5 µs of a
    /// signature-checking request's 64 once the cache was full.
    verified: VerifiedCache,
    /// Each thread's last tokens, looked at before `verified`.
    front: front::Front,
    revocations: Arc<Revocations>,
    cache_hits: sharded::Counter,
    cache_misses: sharded::Counter,
    failures: Family<RouteReason, Counter>,
    duration: Histogram,
}

/// A route's introspecting issuer (config allows one per route).
struct RouteIntrospection {
    introspector: Arc<Introspector>,
    /// No issuer of the route has keys: every token is introspected,
    /// JWT-shaped or not.
    only: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("routes", &self.route_issuers.len())
            .field("verified_tokens", &self.verified.entry_count())
            .finish()
    }
}

/// An entry's weight: the token's bytes plus what its decoded claims hold
/// on the heap (a 16 KiB token of 1,150 tiny claims holds some 80 KB of
/// maps and strings, so weighing the token alone let 64 MiB become 647 MB).
fn weigh(_: &u64, entry: &Entry) -> u32 {
    let claims: usize = entry
        .verified
        .claims
        .iter()
        .map(|(k, v)| MAP_ENTRY_BYTES + k.len() + value_bytes(v))
        .sum();
    u32::try_from(entry.token.len() + VERIFIED_ENTRY_OVERHEAD + claims).unwrap_or(u32::MAX)
}

/// A JSON value and a map entry's share of its `BTreeMap` node, on the
/// high side (serde_json's `Value` is 32 bytes, a `String` 24).
const VALUE_BYTES: usize = 32;
const MAP_ENTRY_BYTES: usize = 24 + VALUE_BYTES + 48;

/// What a claim value holds on the heap beyond its own slot, estimated.
fn value_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.capacity(),
        Value::Array(items) => items.iter().map(|v| VALUE_BYTES + value_bytes(v)).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| MAP_ENTRY_BYTES + k.len() + value_bytes(v))
            .sum(),
    }
}

/// A verified-cache entry: the token (a hit compares it, the key being
/// only its hash) and what its checks proved. No `Debug`: it holds a token.
#[derive(Clone)]
struct Entry {
    token: Arc<[u8]>,
    verified: Arc<Verified>,
}

impl Entry {
    fn is_for(&self, token: &[u8]) -> bool {
        *self.token == *token
    }
}

type VerifiedCache = moka::sync::Cache<u64, Entry, foldhash::quality::RandomState>;

/// The verified-token cache: bounded by weight (see [`weigh`]), each entry
/// gone at its token's `exp`.
fn verified_cache() -> VerifiedCache {
    moka::sync::Cache::builder()
        .max_capacity(VERIFIED_CACHE_BYTES)
        .weigher(weigh)
        .expire_after(UntilExp)
        .support_invalidation_closures()
        .build_with_hasher(foldhash::quality::RandomState::default())
}

struct UntilExp;

impl moka::Expiry<u64, Entry> for UntilExp {
    fn expire_after_create(&self, _: &u64, e: &Entry, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs_f64(
            (e.verified.exp - verify::now()).clamp(0.0, 86_400.0 * 366.0),
        ))
    }
}

impl Authenticator {
    /// Wires each route to its issuers' key caches and introspector.
    pub fn new(
        routes: &[RouteConfig],
        caches: &HashMap<String, Arc<KeyCache>>,
        introspectors: &HashMap<String, Arc<Introspector>>,
        keys: &HashMap<String, Arc<api_keys::ApiKeys>>,
        revocations: Arc<Revocations>,
        metrics: &Metrics,
    ) -> Self {
        let route_api_keys = per_route(routes, |p| named(p, keys));
        let route_issuers = per_route(routes, |p| named(p, caches));
        let route_introspection = per_route(routes, |p| {
            let introspector = p.issuers.iter().find_map(|n| introspectors.get(n))?;
            let only = p.issuers.iter().all(|n| {
                caches
                    .get(n)
                    .is_none_or(|k| k.issuer().keys == KeySource::IntrospectionOnly)
            });
            Some(RouteIntrospection {
                introspector: introspector.clone(),
                only,
            })
        });
        let route_dpop_algs = per_route(routes, |p| admit::dpop_algs(p, caches));
        let route_metadata = per_route(routes, |p| {
            p.resource_metadata
                .as_ref()
                .map(|m| Arc::from(m.url.as_str()))
        });
        let verified = verified_cache();
        let cache_hits = metrics
            .verified_cache
            .get_or_create(&ResultLabel { result: "hit" })
            .clone();
        let cache_misses = metrics
            .verified_cache
            .get_or_create(&ResultLabel { result: "miss" })
            .clone();
        let id = AUTHENTICATORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            id,
            route_issuers,
            route_introspection,
            route_dpop_algs,
            route_metadata,
            route_api_keys,
            verified,
            front: front::Front::new(id),
            revocations,
            cache_hits,
            cache_misses,
            failures: metrics.auth_failures.clone(),
            duration: metrics.auth_duration.clone(),
        }
    }

    /// Authenticates a request on route number `route` under `policy`.
    pub async fn authenticate<'r>(
        &self,
        route: usize,
        policy: &Policy,
        headers: &'r HeaderMap,
        query: Option<&str>,
        params: &Params<'_>,
    ) -> Outcome<'r> {
        let found = match extract::extract(headers, query, &policy.token_from) {
            Ok(found) => found,
            Err(failure) => return Outcome::refused(failure),
        };
        let issuers = &self.route_issuers[route];
        let keyed = &self.route_api_keys[route];
        // CONTRACT §8.5: API keys by digest; a JWS goes to the route's JWT
        // issuers when it has some.
        let by_key = !keyed.is_empty()
            && (keyed.len() == issuers.len() || !token::looks_like_jws(found.bytes()));
        let introspected = self.route_introspection[route]
            .as_ref()
            .filter(|i| i.only || !token::looks_like_jws(found.bytes()));
        // The cache first: a hit is a token that passed every check below.
        // Only JWTs the route verifies itself are cached, under this key.
        let key = (introspected.is_none() && !by_key).then(|| self.front.key(found.bytes()));
        let hit = key.and_then(|key| self.cached(key, found.bytes(), issuers));
        let (digest, result) = match hit {
            Some(v) => (v.digest, Ok(v)),
            None if by_key => {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, found.bytes());
                let mut digest = [0u8; 32];
                digest.copy_from_slice(d.as_ref());
                let now = verify::now();
                let result = keyed
                    .iter()
                    .find_map(|k| k.lookup(&digest, now))
                    .unwrap_or(Err(AuthFailure::UnknownKey));
                (digest, result)
            }
            None => match found.check() {
                // Boxed: a miss's future (the signature check, or an
                // introspection call through reqwest) is 3.7 KiB; inline, it
                // made every request's future 6.2 KiB instead of 3.8, held
                // while the request is in flight and copied when it moves,
                // hits included. A miss pays one allocation for it.
                Ok(token) => Box::pin(self.afresh(token, key, introspected, issuers)).await,
                Err(failure) => return Outcome::refused(failure),
            },
        };
        let result = result.and_then(|v| {
            self.revocations
                .check(&v.issuer, &v.claims)
                .inspect_err(|_| {
                    if let Some(key) = key {
                        self.verified.invalidate(&key);
                    }
                    self.front.clear();
                })?;
            // A policy without path parameters depends on the claims alone:
            // identity headers rendered for this route mean these claims
            // passed it here before.
            if v.admitted_on(self.route_key(route)) && !policy.reads_path() {
                return Ok(v);
            }
            let issuer = issuers
                .iter()
                .find(|k| *k.issuer().name == *v.issuer)
                .ok_or(AuthFailure::WrongIssuer)?;
            policy::check(policy, issuer.issuer(), &v.claims, params)?;
            Ok(v)
        });
        Outcome {
            digest: Some(digest),
            result,
            found: Some(found),
        }
    }

    /// A checked token the cache did not have: introspected, or verified
    /// (and then cached, under `key` when the caller has it, if valid);
    /// with its digest.
    async fn afresh(
        &self,
        token: token::BearerToken<'_>,
        key: Option<u64>,
        introspected: Option<&RouteIntrospection>,
        issuers: &[Arc<KeyCache>],
    ) -> ([u8; 32], Result<Arc<Verified>, AuthFailure>) {
        let (digest, signing_sha256) = token.digests();
        let result = match introspected {
            Some(i) => {
                let name = &i.introspector.issuer().name;
                let keys = issuers.iter().find(|k| k.issuer().name == *name);
                i.introspector
                    .introspect(token, digest, keys.map(|k| &**k))
                    .await
            }
            None => {
                self.verify(token, key, (digest, signing_sha256), issuers)
                    .await
            }
        };
        (digest, result)
    }

    /// Verifies a JWT that is not in the cache, and caches it if valid.
    async fn verify(
        &self,
        token: token::BearerToken<'_>,
        key: Option<u64>,
        digests: ([u8; 32], Option<aws_lc_rs::digest::Digest>),
        issuers: &[Arc<KeyCache>],
    ) -> Result<Arc<Verified>, AuthFailure> {
        let v = Arc::new(verify::verify(token, digests, issuers, verify::now()).await?);
        let entry = Entry {
            token: token.0.as_bytes().into(),
            verified: v.clone(),
        };
        let key = key.unwrap_or_else(|| self.front.key(token.0.as_bytes()));
        self.verified.insert(key, entry);
        Ok(v)
    }

    /// A still-valid cache entry whose issuer this route accepts and whose key is still published.
    fn cached(&self, key: u64, token: &[u8], issuers: &[Arc<KeyCache>]) -> Option<Arc<Verified>> {
        let found = self
            .front
            .get_or_fill(key, token, || self.verified.get(&key));
        let hit = found.filter(|v| {
            v.exp > verify::now()
                && issuers.iter().any(|k| {
                    *k.issuer().name == *v.issuer && k.still_has(v.kid.as_deref(), &v.key_id)
                })
        });
        match hit {
            Some(_) => self.cache_hits.inc(),
            None => self.cache_misses.inc(),
        };
        hit
    }

    /// Route number `index` of this authenticator's config.
    pub fn route_key(&self, index: usize) -> RouteKey {
        RouteKey {
            authenticator: self.id,
            index,
        }
    }

    /// Drops every verified token `revocation` covers from the cache (the
    /// revocation check on each request refuses them anyway; this frees them).
    pub fn forget(&self, revocation: &Revocation) {
        self.front.clear();
        let revocation = revocation.clone();
        let _ = self.verified.invalidate_entries_if(move |_, e| {
            revocation.covers(&e.verified.issuer, &e.verified.claims)
        });
    }
}

/// `f` of each route's policy; nothing (the default) for public routes.
fn per_route<T: Default>(routes: &[RouteConfig], f: impl Fn(&Policy) -> T) -> Vec<T> {
    routes
        .iter()
        .map(|r| match &r.auth {
            RouteAuth::Public => T::default(),
            RouteAuth::Protected(p) => f(p),
        })
        .collect()
}

/// What `by_name` holds for the policy's issuers, in the policy's order.
fn named<T: Clone>(policy: &Policy, by_name: &HashMap<String, T>) -> Vec<T> {
    policy
        .issuers
        .iter()
        .filter_map(|n| by_name.get(n).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn heavy(claims: usize) -> Arc<Verified> {
        let mut map = serde_json::Map::new();
        for i in 0..claims {
            map.insert(format!("c{i}"), serde_json::Value::from(i));
        }
        Arc::new(Verified {
            issuer: "idp".into(),
            kid: None,
            key_id: [0; 32],
            claims: map,
            exp: verify::now() + 3600.0,
            digest: [0; 32],
            identity: OnceLock::new(),
            phantom: None,
        })
    }

    #[test]
    fn tokens_with_thousands_of_claims_are_weighed_by_what_they_hold() {
        let cache = verified_cache();
        let entry = Entry {
            token: vec![b'a'; 16 * 1024].into(),
            verified: heavy(1_150),
        };
        // 647 MB held by 8,000 such entries was measured: about 81 KB each.
        assert!(weigh(&0, &entry) >= 81_000, "{}", weigh(&0, &entry));
        for key in 0..8_000u64 {
            cache.insert(key, entry.clone());
        }
        cache.run_pending_tasks();
        assert!(cache.weighted_size() <= VERIFIED_CACHE_BYTES);
        assert!(
            cache.entry_count() <= VERIFIED_CACHE_BYTES / 81_000,
            "{} entries kept",
            cache.entry_count()
        );
    }
}
