//! Sends an already-authorised request to its route's upstream over a
//! pooled hyper-util client and streams the answer back. For WebSocket (and
//! any HTTP/1.1 `Upgrade`) the upstream's side is left in the client
//! connection's [`UpgradeSlot`] once the upstream answers 101; the client
//! connection splices the two (see `server/http1.rs`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use super::Body;
use super::headers;
use crate::config::{ConfigProblem, RouteConfig};

type HttpClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream refused or reset the connection, or answered garbage.
    #[error("upstream unavailable")]
    Unavailable(#[source] hyper_util::client::legacy::Error),
    /// No response headers within the route's timeout, or connect timed out.
    #[error("upstream timed out")]
    Timeout,
    /// The request could not be expressed for the upstream.
    #[error("request cannot be forwarded")]
    BadRequest,
}

impl ForwardError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    /// The short JSON answer for the client.
    pub fn into_response(self) -> Response<Body> {
        let (status, body): (_, &'static str) = match self {
            ForwardError::Unavailable(_) => (
                StatusCode::BAD_GATEWAY,
                r#"{"error":"bad_gateway","error_description":"the upstream service is unavailable"}"#,
            ),
            ForwardError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                r#"{"error":"gateway_timeout","error_description":"the upstream service did not answer in time"}"#,
            ),
            ForwardError::BadRequest => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","error_description":"the request cannot be forwarded"}"#,
            ),
        };
        crate::gateway::json_response(status, body)
    }
}

/// One pooled client per distinct (CA file, connect timeout) of the routes.
pub struct Forwarder {
    clients: Vec<(Option<PathBuf>, Duration, HttpClient)>,
    by_route: Vec<usize>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl Forwarder {
    /// Builds the clients for `routes` (reads CA files; called at load and reload).
    pub fn new(routes: &[RouteConfig]) -> Result<Self, ConfigProblem> {
        let mut clients: Vec<(Option<PathBuf>, Duration, HttpClient)> = Vec::new();
        let mut by_route = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            let f = &route.forward;
            let existing = clients
                .iter()
                .position(|(ca, t, _)| *ca == f.ca_file && *t == f.connect_timeout);
            let index = match existing {
                Some(index) => index,
                None => {
                    let path = format!("routes[{i}].forward.ca_file");
                    let client = build_client(f.ca_file.as_deref(), f.connect_timeout, &path)?;
                    clients.push((f.ca_file.clone(), f.connect_timeout, client));
                    clients.len() - 1
                }
            };
            by_route.push(index);
        }
        Ok(Self { clients, by_route })
    }

    /// Forwards `req` (headers already rewritten, URI already pointing at the
    /// upstream) for route number `route`.
    pub async fn forward(
        &self,
        route: usize,
        timeout: Duration,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ForwardError> {
        let client = &self.clients[self.by_route[route]].2;
        let upgrade = take_upgrade(&mut req);
        let response = match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => return Err(ForwardError::Timeout),
            Ok(Err(e)) if is_timeout(&e) => return Err(ForwardError::Timeout),
            Ok(Err(e)) => return Err(ForwardError::Unavailable(e)),
            Ok(Ok(response)) => response,
        };
        if let (Some((slot, protocol)), StatusCode::SWITCHING_PROTOCOLS) =
            (upgrade, response.status())
        {
            return Ok(switch(slot, protocol, response));
        }
        let (mut parts, body) = response.into_parts();
        headers::rewrite_response(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::incoming(body)))
    }
}

/// The upstream URI: its scheme and authority, the normalised path, the query.
pub fn upstream_uri(
    route: &RouteConfig,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, ForwardError> {
    let scheme = if route.upstream.https {
        "https"
    } else {
        "http"
    };
    let mut text = String::with_capacity(
        scheme.len()
            + 3
            + route.upstream.authority.as_str().len()
            + path.len()
            + query.map_or(0, |q| q.len() + 1),
    );
    text.push_str(scheme);
    text.push_str("://");
    text.push_str(route.upstream.authority.as_str());
    text.push_str(path);
    if let Some(q) = query {
        text.push('?');
        text.push_str(q);
    }
    Uri::try_from(text).map_err(|_| ForwardError::BadRequest)
}

/// For an HTTP/1.1 upgrade request: the client connection's upgrade slot
/// and the requested protocol, restoring the hop-by-hop headers an upgrade
/// needs.
fn take_upgrade(req: &mut Request<Incoming>) -> Option<(UpgradeSlot, HeaderValue)> {
    let protocol = req.extensions().get::<UpgradeRequest>()?.0.clone();
    let slot = req.extensions_mut().remove::<UpgradeSlot>()?;
    req.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    req.headers_mut().insert(header::UPGRADE, protocol.clone());
    Some((slot, protocol))
}

/// Where an upstream that switched protocols leaves its side of the
/// connection for the client connection to splice with its own.
#[derive(Debug, Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    fn put(&self, upstream: OnUpgrade) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(upstream);
    }

    /// The upstream's side, if the last request switched protocols.
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Marks a request as an upgrade (set before headers are rewritten, since
/// the rewrite removes `Upgrade` as hop-by-hop).
#[derive(Debug, Clone)]
pub struct UpgradeRequest(pub HeaderValue);

/// Records an HTTP/1.1 upgrade request in its extensions.
pub fn note_upgrade(req: &mut http::request::Parts) {
    if req.version != Version::HTTP_11 {
        return;
    }
    let wants = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if let (true, Some(protocol)) = (wants, req.headers.get(header::UPGRADE).cloned()) {
        req.extensions.insert(UpgradeRequest(protocol));
    }
}

/// The 101 for the client; the upstream's side goes to `slot`.
fn switch(
    slot: UpgradeSlot,
    protocol: HeaderValue,
    mut response: Response<Incoming>,
) -> Response<Body> {
    slot.put(hyper::upgrade::on(&mut response));
    let (mut parts, _) = response.into_parts();
    headers::rewrite_response(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);
    Response::from_parts(parts, Body::Empty)
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn build_client(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    path: &str,
) -> Result<HttpClient, ConfigProblem> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate must not stop the gateway.
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca_file {
        for cert in crate::tls::read_certs(ca, path)? {
            roots.add(cert).map_err(|e| {
                ConfigProblem::new(
                    path,
                    format!("unusable CA certificate: {e}"),
                    "PEM CA certificates",
                )
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigProblem::new(path, e.to_string(), "TLS 1.2 and 1.3"))?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}
