//! Authentication of protected routes: extract the bearer token, verify it
//! (or find it in the verified-token cache), apply the route policy.
//! Forwarding and identity headers happen after, in the gateway.

pub mod extract;
pub mod failure;
pub mod identity;
pub mod policy;
pub mod token;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

pub use failure::AuthFailure;
pub use identity::Identity;
pub use verify::Verified;

use crate::config::{Policy, RouteAuth, RouteConfig};
use crate::jwks::KeyCache;
use crate::routing::Params;
use crate::telemetry::metrics::{Metrics, ResultLabel};

/// Most tokens kept verified at once.
const VERIFIED_CACHE_ENTRIES: u64 = 100_000;

/// What authentication produced, with the token fingerprint for the access
/// log even when it failed.
#[derive(Debug)]
pub struct Outcome {
    /// SHA-256 of the token, when there was one.
    pub digest: Option<[u8; 32]>,
    /// The verified claims, or the failure.
    pub result: Result<Arc<Verified>, AuthFailure>,
}

/// Authenticates requests for one config snapshot.
pub struct Authenticator {
    /// Per route (by position): the key caches of its issuers.
    route_issuers: Vec<Vec<Arc<KeyCache>>>,
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("routes", &self.route_issuers.len())
            .field("verified_tokens", &self.verified.entry_count())
            .finish()
    }
}

struct UntilExp;

impl moka::Expiry<[u8; 32], Arc<Verified>> for UntilExp {
    fn expire_after_create(&self, _: &[u8; 32], v: &Arc<Verified>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs_f64(
            (v.exp - verify::now()).clamp(0.0, 86_400.0 * 366.0),
        ))
    }
}

impl Authenticator {
    /// Wires each route to its issuers' key caches.
    pub fn new(
        routes: &[RouteConfig],
        caches: &HashMap<String, Arc<KeyCache>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let route_issuers = routes
            .iter()
            .map(|r| match &r.auth {
                RouteAuth::Public => Vec::new(),
                RouteAuth::Protected(p) => p
                    .issuers
                    .iter()
                    .filter_map(|n| caches.get(n).cloned())
                    .collect(),
            })
            .collect();
        let verified = moka::sync::Cache::builder()
            .max_capacity(VERIFIED_CACHE_ENTRIES)
            .expire_after(UntilExp)
            .build();
        Self {
            route_issuers,
            verified,
            metrics,
        }
    }

    /// Authenticates a request on route number `route` under `policy`.
    pub async fn authenticate(
        &self,
        route: usize,
        policy: &Policy,
        headers: &HeaderMap,
        query: Option<&str>,
        params: &Params<'_>,
    ) -> Outcome {
        let token = match extract::extract(headers, query, &policy.token_from) {
            Ok(t) => t,
            Err(failure) => {
                return Outcome {
                    digest: None,
                    result: Err(failure),
                };
            }
        };
        let digest = token.digest();
        let issuers = &self.route_issuers[route];
        let result = match self.cached(&digest, issuers) {
            Some(v) => Ok(v),
            None => match verify::verify(token, issuers, verify::now()).await {
                Ok(v) => {
                    let v = Arc::new(v);
                    self.verified.insert(digest, v.clone());
                    Ok(v)
                }
                Err(f) => Err(f),
            },
        };
        let result = result.and_then(|v| {
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
        }
    }

    /// A still-valid cache entry whose issuer this route accepts and whose key is still published.
    fn cached(&self, digest: &[u8; 32], issuers: &[Arc<KeyCache>]) -> Option<Arc<Verified>> {
        let hit = self.verified.get(digest).filter(|v| {
            v.exp > verify::now()
                && issuers
                    .iter()
                    .any(|k| *k.issuer().name == *v.issuer && k.still_has(v.kid.as_deref()))
        });
        let label = if hit.is_some() { "hit" } else { "miss" };
        self.metrics
            .verified_cache
            .get_or_create(&ResultLabel { result: label })
            .inc();
        hit
    }

    /// Forgets a verified token (revocation).
    pub fn forget(&self, digest: &[u8; 32]) {
        self.verified.invalidate(digest);
    }
}
