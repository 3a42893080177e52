//! The decision listener (CONTRACT §8.3): authgate as the authorizer of
//! another proxy. It answers whether a request may pass and never forwards
//! anything. The request judged is taken from where the **path the proxy
//! calls** says, never from headers a client could add:
//!
//! - [`X_FORWARDED`]: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`
//!   (Traefik ForwardAuth, Caddy `forward_auth`);
//! - [`X_ORIGINAL`]: `X-Original-Method`, `X-Original-URI` and `Host`
//!   (nginx `auth_request`);
//! - any other path: the decision request itself (Envoy ext_authz HTTP);
//! - [`envoy::CHECK`] over HTTP/2 with a gRPC content-type: Envoy's gRPC
//!   `Authorization/Check` (`envoy.rs`).
//!
//! The judged request is normalised, routed and authenticated by the same
//! `gateway::judge` as the proxy's. Allowed: 200, empty, with the route's
//! identity headers. Refused: the proxy's own answer. No route, a missing
//! style header, or a peer outside `trusted_proxies`: 403.

mod envoy;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::gateway::{self, Gateway, Listener};
use crate::proxy::Body;
use crate::proxy::headers::ClientInfo;
use crate::response;
use crate::routing::Route;
use crate::telemetry::access_log::AccessLog;

/// Traefik ForwardAuth and Caddy `forward_auth` call this path.
pub const X_FORWARDED: &str = "/.authgate/x-forwarded";
/// nginx `auth_request` calls this path.
pub const X_ORIGINAL: &str = "/.authgate/x-original";

/// What the decision listener sends back: its own answers, or tonic's.
type Answer = Response<tonic::body::Body>;

/// Serves decisions until the task is dropped: at most
/// `server.max_connections` connections at once, each sending its request
/// head within `server.header_read_timeout`; HTTP/1.1 and cleartext
/// HTTP/2 (Envoy's gRPC client speaks h2c).
pub async fn listen(gateway: Arc<Gateway>, listener: TcpListener) {
    let limit = gateway.runtime().config.server.max_connections;
    let served = gateway.clone();
    crate::server::side::serve(gateway, listener, limit, move |peer| {
        let gateway = served.clone();
        service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(answer(&gateway, req, peer.ip()).await) }
        })
    })
    .await;
}

/// One decision, logged and counted with `listener: decisions`.
async fn answer(gateway: &Gateway, req: Request<Incoming>, peer: IpAddr) -> Answer {
    let rt = gateway.runtime();
    let started = Instant::now();
    let grpc_check = envoy::is_check(&req);
    let mut log = AccessLog::start(req.method(), req.uri());
    log.listener = "decisions";
    let trusted = rt
        .config
        .decisions
        .as_ref()
        .is_some_and(|d| d.trusted_proxies.iter().any(|c| c.contains(peer)));
    let response = if !trusted {
        log.reason = Some("untrusted_peer");
        let mut refused = response::forbidden("this peer may not ask for decisions");
        // One answer per connection: an untrusted peer cannot hold
        // connections the proxies in front need.
        refused
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        match grpc_check {
            true => response::grpc::trailers_only(refused),
            false => refused,
        }
        .map(tonic::body::Body::new)
    } else if grpc_check {
        envoy::check(&rt, req, peer, &mut log).await
    } else {
        decide(&rt, req, peer, &mut log)
            .await
            .map(tonic::body::Body::new)
    };
    log.finish(response.status(), started, &gateway.metrics);
    response
}

/// An HTTP decision: the judged request, then the proxy's own judgement.
async fn decide(
    rt: &gateway::Runtime,
    req: Request<Incoming>,
    peer: IpAddr,
    log: &mut AccessLog,
) -> Response<Body> {
    let (parts, _body) = req.into_parts();
    // The judged request's scheme (a DPoP proof's `htu`): what the proxy
    // says it was, for the style that says; else plain HTTP.
    let https = parts.uri.path() == X_FORWARDED
        && parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let client = ClientInfo::new(peer, https);
    let judged = match judged_request(parts) {
        Ok(judged) => judged,
        Err(missing) => {
            log.reason = Some("bad_decision_request");
            return response::forbidden(&format!("the decision request lacks {missing}"));
        }
    };
    allowed_or_refused(rt, &judged, &client, log).await.0
}

/// Judges `judged` as the proxy would: 200 with the identity headers, or
/// the proxy's refusal; and the route, when one matched.
pub(crate) async fn allowed_or_refused<'r>(
    rt: &'r gateway::Runtime,
    judged: &http::request::Parts,
    client: &ClientInfo,
    log: &mut AccessLog,
) -> (Response<Body>, Option<&'r Route>) {
    let (path, host) = match gateway::normalise(judged) {
        Ok(found) => found,
        Err(e) => return (response::bad_request(&e), None),
    };
    let listener = Listener::Decisions;
    match gateway::judge(rt, judged, &path, host.as_ref(), listener, client, log).await {
        Err(refused) => (refused, None),
        Ok((route, admitted)) => {
            let mut allowed = Response::new(Body::Empty);
            let h = allowed.headers_mut();
            for (name, value) in admitted.identity.iter() {
                h.insert(name.clone(), value.clone());
            }
            h.insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            (allowed, Some(route))
        }
    }
}

/// The request a proxy asks about, by the path it called. Its headers are
/// the decision request's (the token, cookies), without the style's own.
fn judged_request(parts: http::request::Parts) -> Result<http::request::Parts, &'static str> {
    let (method, target, host) = match parts.uri.path() {
        X_FORWARDED => {
            let h = &parts.headers;
            // Proto is required by the style; the scheme does not route.
            required(h, "x-forwarded-proto")?;
            (
                required(h, "x-forwarded-method")?,
                required(h, "x-forwarded-uri")?,
                Some(required(h, "x-forwarded-host")?),
            )
        }
        X_ORIGINAL => {
            let h = &parts.headers;
            (
                required(h, "x-original-method")?,
                required(h, "x-original-uri")?,
                None,
            )
        }
        _ => return Ok(parts),
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "a valid method")?;
    let uri: Uri = target.parse().map_err(|_| "a valid request target")?;
    let host = match host {
        Some(h) => Some(http::HeaderValue::from_str(&h).map_err(|_| "a valid host")?),
        None => None,
    };
    let mut judged = Request::new(()).into_parts().0;
    judged.method = method;
    judged.uri = uri;
    // As HTTP/1.1: the host comes from `Host`, as the proxy reads it.
    judged.version = Version::HTTP_11;
    judged.headers = parts.headers;
    if let Some(host) = host {
        judged.headers.insert(header::HOST, host);
    }
    Ok(judged)
}

/// A required style header's value, or the name of the one missing.
fn required(headers: &HeaderMap, name: &'static str) -> Result<String, &'static str> {
    let mut values = headers.get_all(HeaderName::from_static(name)).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().map(str::to_owned).map_err(|_| name),
        // Missing, or sent twice (ambiguous): the decision cannot be made.
        _ => Err(name),
    }
}
