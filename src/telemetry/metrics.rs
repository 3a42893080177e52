//! Prometheus metrics (CONTRACT §5) through prometheus-client; no
//! hand-formatted exposition. Label values are route and issuer names from
//! the config and fixed reason words, never request data.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

pub use super::sharded::Histogram;

/// A shared label value (route or issuer name) that clones without copying.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

/// `{route,status}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteStatus {
    /// Route name, or `(none)` when no route matched.
    pub route: Name,
    /// HTTP status code.
    pub status: u16,
}

/// `{route,reason}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteReason {
    /// Route name.
    pub route: Name,
    /// `AuthFailure::reason()`.
    pub reason: &'static str,
}

/// `{issuer,result}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IssuerResult {
    /// Issuer name.
    pub issuer: Name,
    /// `success` or `error`.
    pub result: &'static str,
}

/// `{issuer}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IssuerLabel {
    /// Issuer name.
    pub issuer: Name,
}

/// `{result}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    /// Outcome word.
    pub result: &'static str,
}

/// Every metric authgate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `authgate_requests_total{route,status}`
    pub requests: Family<RouteStatus, Counter>,
    /// `authgate_decisions_total{route,status}`: answers of the decision
    /// listener (kept apart from the proxy's requests)
    pub decisions: Family<RouteStatus, Counter>,
    /// `authgate_auth_failures_total{route,reason}`
    pub auth_failures: Family<RouteReason, Counter>,
    /// `authgate_request_duration_seconds`
    pub request_duration: Histogram,
    /// `authgate_auth_duration_seconds`
    pub auth_duration: Histogram,
    /// `authgate_jwks_refresh_total{issuer,result}`
    pub jwks_refresh: Family<IssuerResult, Counter>,
    /// `authgate_jwks_keys{issuer}`
    pub jwks_keys: Family<IssuerLabel, Gauge>,
    /// `authgate_jwks_key_age_seconds{issuer}`: time since keys were last fetched
    pub jwks_key_age: Family<IssuerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `authgate_verified_cache_total{result}`: hit or miss (counted on
    /// every request, so per worker)
    pub verified_cache: Family<ResultLabel, super::sharded::Counter>,
    /// `authgate_config_reloads_total{result}`: success or error
    pub config_reloads: Family<ResultLabel, Counter>,
    /// `authgate_revocation_store_up`: 1 while this replica's deny list is
    /// complete (always for `memory`; for `redis`, while subscribed)
    pub revocation_store_up: Gauge,
    /// `authgate_revocations{kind}`: entries on this replica's deny list (`token`, `subject`)
    pub revocations: Family<KindLabel, Gauge>,
    /// The counters of requests that matched no route.
    pub unrouted: Arc<RouteStats>,
}

/// `{kind}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// `token` or `subject`.
    pub kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let (requests, decisions) = (Family::default(), Family::default());
        let mut m = Self {
            registry: Registry::with_prefix("authgate"),
            auth_failures: Family::default(),
            request_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            auth_duration: Histogram::new(exponential_buckets(0.000_002, 2.0, 18)),
            jwks_refresh: Family::default(),
            jwks_keys: Family::default(),
            jwks_key_age: Family::default(),
            verified_cache: Family::default(),
            config_reloads: Family::default(),
            revocation_store_up: Gauge::default(),
            revocations: Family::default(),
            unrouted: Arc::new(RouteStats::new(
                Name("(none)".into()),
                &requests,
                &decisions,
            )),
            requests,
            decisions,
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "Requests answered, by route and status",
            m.requests.clone(),
        );
        r.register(
            "decisions",
            "Decisions answered by the decision listener, by route and status",
            m.decisions.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused by authentication, by route and reason",
            m.auth_failures.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Whole-request duration",
            m.request_duration.clone(),
        );
        r.register(
            "auth_duration_seconds",
            "Duration of the authentication step alone",
            m.auth_duration.clone(),
        );
        r.register(
            "jwks_refresh",
            "JWKS fetches, by issuer and result",
            m.jwks_refresh.clone(),
        );
        r.register(
            "jwks_keys",
            "Usable keys held per issuer",
            m.jwks_keys.clone(),
        );
        r.register(
            "jwks_key_age_seconds",
            "Seconds since each issuer's keys were last fetched",
            m.jwks_key_age.clone(),
        );
        r.register(
            "verified_cache",
            "Verified-token cache lookups, by result",
            m.verified_cache.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads, by result",
            m.config_reloads.clone(),
        );
        r.register(
            "revocation_store_up",
            "1 while the revocation list is complete (store reachable)",
            m.revocation_store_up.clone(),
        );
        r.register(
            "revocations",
            "Entries on this replica's revocation list, by kind",
            m.revocations.clone(),
        );
        m
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The counters of the route named `name`.
    pub fn route_stats(&self, name: Name) -> RouteStats {
        RouteStats::new(name, &self.requests, &self.decisions)
    }

    /// Counts one answered request (`decision`: of the decision listener).
    pub fn request(&self, route: &RouteStats, status: u16, took: Duration, decision: bool) {
        match decision {
            true => route.decisions.inc(&route.name, status),
            false => route.requests.inc(&route.name, status),
        }
        self.request_duration.observe(took.as_secs_f64());
    }
}

/// The statuses most answers have: their counters are resolved once per
/// route and kept, the others looked up in the family each time.
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504,
];

/// One route's request counters, built with each runtime: counting an
/// answer is an index and an atomic add, not a hash of the route's name
/// and a lock on the family.
#[derive(Debug)]
pub struct RouteStats {
    /// The route's name (the label, and the access log's `route`).
    pub name: Name,
    requests: StatusCounters,
    decisions: StatusCounters,
}

impl RouteStats {
    fn new(
        name: Name,
        requests: &Family<RouteStatus, Counter>,
        decisions: &Family<RouteStatus, Counter>,
    ) -> Self {
        Self {
            name,
            requests: StatusCounters::new(requests),
            decisions: StatusCounters::new(decisions),
        }
    }
}

/// A family's counters for one route, the common statuses resolved on first use.
#[derive(Debug)]
struct StatusCounters {
    family: Family<RouteStatus, Counter>,
    common: OnceLock<Box<[OnceLock<Counter>; COMMON_STATUSES.len()]>>,
}

impl StatusCounters {
    fn new(family: &Family<RouteStatus, Counter>) -> Self {
        Self {
            family: family.clone(),
            common: OnceLock::new(),
        }
    }

    fn inc(&self, route: &Name, status: u16) {
        let resolve = || {
            self.family
                .get_or_create(&RouteStatus {
                    route: route.clone(),
                    status,
                })
                .clone()
        };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                let slots = self
                    .common
                    .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
                slots[i].get_or_init(resolve).inc()
            }
            None => resolve().inc(),
        };
    }
}
