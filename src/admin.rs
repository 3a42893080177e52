//! The admin listener, on its own address and never on the proxy port:
//! `/healthz`, `/readyz`, `/metrics`, and `POST /revocations` (404 unless
//! `admin.token_sha256` is set).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, json_response};
use crate::proxy::Body;
use crate::telemetry::metrics::IssuerLabel;

/// Liveness path.
pub const HEALTHZ: &str = "/healthz";
/// Readiness path.
pub const READYZ: &str = "/readyz";
/// Metrics path.
pub const METRICS: &str = "/metrics";
/// Revocation path.
pub const REVOCATIONS: &str = "/revocations";

/// Serves admin requests until the task is dropped.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(answer(&gateway, req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn answer(gateway: &Gateway, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, HEALTHZ) => json_response(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, READYZ) => readyz(gateway),
        (&Method::GET, METRICS) => {
            for keys in gateway.runtime().keys.values() {
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
        (&Method::POST, REVOCATIONS) if gateway.runtime().config.admin.token_sha256.is_some() => {
            json_response(
                StatusCode::NOT_IMPLEMENTED,
                r#"{"error":"not_implemented","error_description":"revocation is not available in this build"}"#,
            )
        }
        _ => json_response(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}

fn readyz(gateway: &Gateway) -> Response<Body> {
    let mut not_ready = Vec::new();
    if gateway.is_draining() {
        not_ready.push(serde_json::json!({"component": "gateway", "problem": "shutting down"}));
    }
    for (issuer, error) in gateway.runtime().not_ready() {
        not_ready.push(serde_json::json!({
            "component": format!("issuers.{issuer}"),
            "problem": error.unwrap_or_else(|| "keys not loaded yet".into()),
        }));
    }
    if not_ready.is_empty() {
        json_response(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        let body = serde_json::json!({"status": "not_ready", "not_ready": not_ready});
        json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
    }
}
