//! The admin listener, on its own address and never on the proxy port:
//! `/healthz`, `/readyz`, `/metrics`, and `POST /revocations` (404 unless
//! `admin.token_sha256` is set).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::gateway::Gateway;
use crate::proxy::Body;
use crate::response;
use crate::revocation::{Revocation, body};
use crate::telemetry::metrics::{IssuerLabel, KindLabel};

/// Liveness path.
pub const HEALTHZ: &str = "/healthz";
/// Readiness path.
pub const READYZ: &str = "/readyz";
/// Metrics path.
pub const METRICS: &str = "/metrics";
/// Revocation path.
pub const REVOCATIONS: &str = "/revocations";

/// Admin connections served at once; more wait in the listen backlog, so
/// a flood of scrapers or idle sockets can never take the process's
/// descriptors (the proxy listener has its own `max_connections`).
pub const MAX_CONNECTIONS: usize = 64;

/// Serves admin requests until the task is dropped. Each connection must
/// send its request head within the proxy's `server.header_read_timeout`
/// (the same rule as on the proxy port), and at most [`MAX_CONNECTIONS`]
/// are served at once.
pub async fn listen(gateway: Arc<Gateway>, listener: TcpListener) {
    let served = gateway.clone();
    crate::server::side::serve(gateway, listener, MAX_CONNECTIONS, move |_peer| {
        let gateway = served.clone();
        service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(answer(&gateway, req).await) }
        })
    })
    .await;
}

async fn answer(gateway: &Gateway, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, HEALTHZ) => response::json(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, READYZ) => readyz(gateway),
        (&Method::GET, METRICS) => {
            let runtime = gateway.runtime();
            let m = &gateway.metrics;
            m.revocation_store_up
                .set(i64::from(runtime.revocations.healthy()));
            let (tokens, subjects) = runtime.revocations.entries();
            for (kind, n) in [("token", tokens), ("subject", subjects)] {
                m.revocations
                    .get_or_create(&KindLabel { kind })
                    .set(n as i64);
            }
            for keys in runtime.keys.values() {
                if let Some(age) = keys.age() {
                    let label = IssuerLabel {
                        issuer: keys.label().clone(),
                    };
                    gateway
                        .metrics
                        .jwks_key_age
                        .get_or_create(&label)
                        .set(age.as_secs_f64());
                }
            }
            let mut r = Response::new(Body::full(gateway.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::POST, REVOCATIONS) => revoke(gateway, req).await,
        _ => response::json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}

/// Largest accepted revocation body.
const MAX_REVOCATION_BYTES: usize = 16 * 1024;

/// `POST /revocations`: 404 without `admin.token_sha256`; 401 unless the
/// bearer token's SHA-256 matches (compared in constant time); 400 naming
/// what is wrong with the body; 503 if the store cannot take it; else 204.
async fn revoke(gateway: &Gateway, req: Request<Incoming>) -> Response<Body> {
    let runtime = gateway.runtime();
    let Some(expected) = runtime.config.admin.token_sha256 else {
        return response::json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#);
    };
    if !admin_token_matches(req.headers(), &expected) {
        let mut r = response::json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_token","error_description":"the admin bearer token is missing or wrong"}"#,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="authgate-admin""#),
        );
        return r;
    }
    let bytes = match Limited::new(req.into_body(), MAX_REVOCATION_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return invalid(&format!(
                "body: unreadable or larger than {MAX_REVOCATION_BYTES} bytes"
            ));
        }
    };
    let revocation = match body::parse(&bytes, &runtime.config.issuers) {
        Ok(r) => r,
        Err(problem) => return invalid(&problem),
    };
    if let Err(e) = runtime.revocations.revoke(&revocation).await {
        tracing::error!(error = %e, "revocation not stored");
        let mut r = response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"temporarily_unavailable","error_description":"the revocation store is unavailable; nothing was revoked"}"#,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    runtime.auth.forget(&revocation);
    match &revocation {
        Revocation::Token { jti, expires_at } => {
            tracing::info!(jti, expires_at, "token revoked");
        }
        Revocation::Subject {
            issuer,
            sub,
            issued_before,
            ..
        } => tracing::info!(issuer, sub, issued_before, "subject revoked"),
    }
    let mut r = Response::new(Body::full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Exactly one `Authorization: Bearer` header whose SHA-256 equals `expected`.
fn admin_token_matches(headers: &http::HeaderMap, expected: &[u8; 32]) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(token) = value
        .as_bytes()
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, token)| token.trim_ascii())
    else {
        return false;
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    aws_lc_rs::constant_time::verify_slices_are_equal(digest.as_ref(), expected).is_ok()
}

fn invalid(problem: &str) -> Response<Body> {
    let body = serde_json::json!({"error": "invalid_request", "error_description": problem});
    response::json(StatusCode::BAD_REQUEST, body.to_string())
}

fn readyz(gateway: &Gateway) -> Response<Body> {
    let mut not_ready = Vec::new();
    if gateway.is_draining() {
        not_ready.push(serde_json::json!({"component": "gateway", "problem": "shutting down"}));
    }
    for (component, problem) in gateway.runtime().not_ready() {
        not_ready.push(serde_json::json!({"component": component, "problem": problem}));
    }
    if not_ready.is_empty() {
        response::json(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        let body = serde_json::json!({"status": "not_ready", "not_ready": not_ready});
        response::json(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
    }
}
