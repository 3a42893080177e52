//! One access-log line per request (CONTRACT §6). The path is logged
//! without its query string; the token only as `token_fp`.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode, Uri};

use super::metrics::{Metrics, Name};
use super::redact::fingerprint;

/// Facts gathered along the request path.
#[derive(Debug)]
pub struct AccessLog {
    method: Method,
    /// Cloning a `Uri` shares its bytes; only the path is ever logged.
    uri: Uri,
    /// Matched route.
    pub route: Option<Name>,
    /// Issuer (config name) that verified the token.
    pub issuer: Option<Arc<str>>,
    /// `sub` of the verified token.
    pub subject: Option<String>,
    /// Failure reason.
    pub reason: Option<&'static str>,
    /// SHA-256 of the token.
    pub token_digest: Option<[u8; 32]>,
    /// `proxy` or `decisions`: which listener answered.
    pub listener: &'static str,
}

thread_local! {
    static NO_ROUTE: Name = Name("(none)".into());
}

impl AccessLog {
    /// Starts the record for a request.
    pub fn start(method: &Method, uri: &Uri) -> Self {
        Self {
            method: method.clone(),
            uri: uri.clone(),
            route: None,
            issuer: None,
            subject: None,
            reason: None,
            token_digest: None,
            listener: "proxy",
        }
    }

    /// Counts the request and writes its line.
    pub fn finish(self, status: StatusCode, started: Instant, metrics: &Metrics) {
        let took = started.elapsed();
        let decision = self.listener == "decisions";
        match &self.route {
            Some(route) => metrics.request(route, status.as_u16(), took, decision),
            None => NO_ROUTE.with(|none| metrics.request(none, status.as_u16(), took, decision)),
        }
        tracing::info!(
            target: "authgate::access",
            listener = self.listener,
            route = self.route.as_ref().map(|r| &*r.0),
            method = self.method.as_str(),
            path = self.uri.path(),
            status = status.as_u16(),
            duration_ms = took.as_secs_f64() * 1000.0,
            issuer = self.issuer.as_deref(),
            subject = self.subject.as_deref(),
            reason = self.reason,
            token_fp = self.token_digest.as_ref().map(fingerprint),
        );
    }
}
