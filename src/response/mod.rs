//! Every answer the gateway makes itself, for every listener: the small
//! JSON body (`{"error", "error_description"}`), `Cache-Control: no-store`,
//! and for refusals their `WWW-Authenticate` and `Retry-After`. A leaf:
//! auth, proxy, admin and server describe a refusal as a [`Refusal`] and
//! this module renders it; `grpc` renders the same refusal for gRPC
//! clients, from what [`refuse`] marks on the answer.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::proxy::Body;

pub mod grpc;
mod refusal;
pub use refusal::Refusal;

/// Renders `refusal`: the one place a refusal becomes an answer.
pub fn refuse(refusal: Refusal<'_>) -> Response<Body> {
    let body = serde_json::json!({
        "error": refusal.error,
        "error_description": refusal.description,
    });
    let mut response = json(refusal.status, body.to_string());
    let h = response.headers_mut();
    if let Some(v) = refusal
        .challenge
        .and_then(|v| HeaderValue::try_from(v).ok())
    {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    if let Some(secs) = refusal.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(v) = refusal
        .dpop_nonce
        .and_then(|n| HeaderValue::try_from(n).ok())
    {
        h.insert("dpop-nonce", v);
    }
    response.extensions_mut().insert(grpc::Made {
        message: refusal.description.into(),
        grpc_status: refusal.grpc_status,
    });
    response
}

/// 400 `invalid_request` saying what is wrong with the request.
pub fn bad_request(problem: &dyn std::fmt::Display) -> Response<Body> {
    refuse(Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        &problem.to_string(),
    ))
}

/// 404 for a request no route matches.
pub fn no_route() -> Response<Body> {
    refuse(Refusal::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no route matches this request",
    ))
}

/// 403 `forbidden` (the decision listener: no route, or a peer that may
/// not ask).
pub fn forbidden(description: &str) -> Response<Body> {
    refuse(Refusal::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        description,
    ))
}

/// A small JSON answer (`body` already JSON), never cached.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
