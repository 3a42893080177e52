//! One access-log line per request (CONTRACT §6). The path is logged
//! without its query string; the token only as `token_fp`.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode, Uri};

use super::metrics::{Metrics, RouteStats};
use super::redact::fingerprint;
use crate::auth::Verified;

/// Facts gathered along the request path.
#[derive(Debug)]
pub struct AccessLog {
    method: Method,
    /// Cloning a `Uri` shares its bytes; only the path is ever logged.
    uri: Uri,
    /// Matched route (its name and counters).
    pub route: Option<Arc<RouteStats>>,
    /// The token let through: its issuer (config name) and `sub` are
    /// logged (kept whole rather than copied out on every request).
    pub verified: Option<Arc<Verified>>,
    /// Failure reason.
    pub reason: Option<&'static str>,
    /// SHA-256 of the token.
    pub token_digest: Option<[u8; 32]>,
    /// `proxy` or `decisions`: which listener answered.
    pub listener: &'static str,
}

impl AccessLog {
    /// Starts the record for a request.
    pub fn start(method: &Method, uri: &Uri) -> Self {
        Self {
            method: method.clone(),
            uri: uri.clone(),
            route: None,
            verified: None,
            reason: None,
            token_digest: None,
            listener: "proxy",
        }
    }

    /// Counts the request and writes its line.
    pub fn finish(self, status: StatusCode, started: Instant, metrics: &Metrics) {
        let took = started.elapsed();
        let decision = self.listener == "decisions";
        let route = self.route.as_ref().unwrap_or(&metrics.unrouted);
        metrics.request(route, status.as_u16(), took, decision);
        let verified = self.verified.as_deref();
        tracing::info!(
            target: "authgate::access",
            listener = self.listener,
            route = self.route.as_ref().map(|r| &*r.name.0),
            method = self.method.as_str(),
            path = self.uri.path(),
            status = status.as_u16(),
            duration_ms = took.as_secs_f64() * 1000.0,
            issuer = verified.map(|v| &*v.issuer),
            subject = verified.and_then(|v| v.claims.get("sub")).and_then(|s| s.as_str()),
            reason = self.reason,
            token_fp = self.token_digest.as_ref().map(fingerprint),
        );
    }
}
