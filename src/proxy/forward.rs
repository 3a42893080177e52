//! Sends an already-authorised request to its route's upstream over a
//! pooled connection (see `pool.rs`) and streams the answer back; a
//! WebSocket upgrade is handed over as `upgrade.rs` says.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rustls::RootCertStore;
use tokio_rustls::TlsConnector;

use super::Body;
pub use super::error::ForwardError;
use super::headers;
use super::pool::{self, Destination, Lease};
use super::upgrade::{switch, take_upgrade};
use crate::config::{ConfigProblem, RouteConfig};

/// The upstream destinations of the routes, each with its idle connections.
/// Routes that share scheme, authority, CA file and connect timeout share a
/// destination; a route finds its own by index, with no lookup by name.
#[derive(Debug)]
pub struct Forwarder {
    destinations: Vec<(Key, Upstream)>,
    /// Per route, its destination; `None` for decision-only routes.
    by_route: Vec<Option<usize>>,
}

/// A destination's connections: HTTP/1.1 (pooled one request at a time)
/// or HTTP/2 (multiplexed).
#[derive(Debug, Clone)]
enum Upstream {
    Http1(Arc<Destination>),
    Http2(Arc<pool::h2::Destination>),
}

/// What makes two routes' upstreams the same destination.
type Key = (
    bool,
    bool,
    http::uri::Authority,
    Option<PathBuf>,
    Duration,
    usize,
);

impl Forwarder {
    /// Builds the destinations for `routes` (reads CA files; called at load
    /// and reload). A plain-HTTP destination of `previous` that is still
    /// used is kept, idle connections and all, so a reload does not make
    /// every upstream connection anew; https destinations are rebuilt, since
    /// picking up a changed CA file is one reason to reload. Each
    /// destination keeps one pool per worker of the `workers`.
    pub fn new(
        routes: &[RouteConfig],
        previous: Option<&Forwarder>,
        workers: usize,
    ) -> Result<Self, ConfigProblem> {
        let mut destinations: Vec<(Key, Upstream)> = Vec::new();
        let mut connectors = Connectors::default();
        let mut by_route = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            let f = &route.forward;
            let Some(up) = &route.upstream else {
                by_route.push(None);
                continue;
            };
            let key: Key = (
                up.https,
                up.http2,
                up.authority.clone(),
                f.ca_file.clone(),
                f.connect_timeout,
                f.max_connections,
            );
            if let Some(index) = destinations.iter().position(|(k, _)| *k == key) {
                by_route.push(Some(index));
                continue;
            }
            let kept = previous
                .filter(|_| !up.https)
                .and_then(|p| p.destinations.iter().find(|(k, _)| *k == key))
                .map(|(_, d)| d.clone());
            let destination = match kept {
                Some(d) => d,
                None => destination(up, f, i, &mut connectors, workers)?,
            };
            destinations.push((key, destination));
            by_route.push(Some(destinations.len() - 1));
        }
        Ok(Self {
            destinations,
            by_route,
        })
    }

    /// Forwards `req` (headers already rewritten, URI in origin form) for
    /// route number `route`.
    pub async fn forward(
        &self,
        route: usize,
        timeout: Duration,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ForwardError> {
        let upgrade = take_upgrade(&mut req);
        // The proxy's route table never matches a decision-only route.
        let Some(index) = self.by_route[route] else {
            return Err(ForwardError::BadRequest);
        };
        let sent = match &self.destinations[index].1 {
            Upstream::Http1(d) => tokio::time::timeout(timeout, d.send(req))
                .await
                .map(|r| r.map(|(response, lease)| (response, Lease::Http1(lease)))),
            // An upgrade is HTTP/1.1's; over HTTP/2 it would need RFC 8441.
            Upstream::Http2(_) if upgrade.is_some() => return Err(ForwardError::UpgradeOverHttp2),
            Upstream::Http2(d) => tokio::time::timeout(timeout, d.send(req))
                .await
                .map(|r| r.map(|(response, stream)| (response, Lease::Http2(stream)))),
        };
        let (response, lease) = match sent {
            Err(_) => return Err(ForwardError::Timeout),
            Ok(result) => result?,
        };
        if let (Some((slot, protocol)), StatusCode::SWITCHING_PROTOCOLS) =
            (upgrade, response.status())
        {
            // The connection now belongs to the upgrade: never pooled.
            return Ok(switch(slot, protocol, response));
        }
        let (mut parts, body) = response.into_parts();
        headers::rewrite_response(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::upstream(body, lease)))
    }
}

/// The upstream request target: the normalised path and the query, in
/// origin form (the route's destination supplies scheme and authority).
pub fn upstream_uri(path: &str, query: Option<&str>) -> Result<Uri, ForwardError> {
    let uri = match query {
        None => Uri::try_from(path),
        Some(q) => {
            let mut text = String::with_capacity(path.len() + 1 + q.len());
            text.push_str(path);
            text.push('?');
            text.push_str(q);
            Uri::try_from(text)
        }
    };
    uri.map_err(|_| ForwardError::BadRequest)
}

/// TLS connectors by CA file and protocol (ALPN), built once each per load.
type Connectors = Vec<((Option<PathBuf>, bool), TlsConnector)>;

/// A new destination for route number `i`.
fn destination(
    up: &crate::config::Upstream,
    f: &crate::config::ForwardConfig,
    i: usize,
    connectors: &mut Connectors,
    workers: usize,
) -> Result<Upstream, ConfigProblem> {
    let which = (f.ca_file.clone(), up.http2);
    let tls = if !up.https {
        None
    } else if let Some((_, c)) = connectors.iter().find(|(k, _)| *k == which) {
        Some(c.clone())
    } else {
        let path = format!("routes[{i}].forward.ca_file");
        let c = tls_connector(f.ca_file.as_deref(), &path, up.http2)?;
        connectors.push((which, c.clone()));
        Some(c)
    };
    let authority = up.authority.clone();
    let (timeout, max) = (f.connect_timeout, f.max_connections);
    let built = match up.http2 {
        false => Destination::new(authority, tls, timeout, workers, max)
            .map(|d| Upstream::Http1(Arc::new(d))),
        true => pool::h2::Destination::new(authority, tls, timeout, workers, max)
            .map(|d| Upstream::Http2(Arc::new(d))),
    };
    built.map_err(|e| {
        ConfigProblem::new(
            &format!("routes[{i}].upstream"),
            e,
            "an upstream whose host is a DNS name or an IP address",
        )
    })
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
    path: &str,
    http2: bool,
) -> Result<TlsConnector, ConfigProblem> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate must not stop the gateway.
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca_file {
        let certs = crate::tls::read_certs(ca, path)
            .map_err(|e| ConfigProblem::new(&e.key, e.problem, e.expected))?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                ConfigProblem::new(
                    path,
                    format!("unusable CA certificate: {e}"),
                    "PEM CA certificates",
                )
            })?;
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigProblem::new(path, e.to_string(), "TLS 1.2 and 1.3"))?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    // HTTP/2 is offered alone: an upstream that does not select it is
    // refused (502), never spoken to in HTTP/1.1 instead.
    tls.alpn_protocols = vec![match http2 {
        false => b"http/1.1".to_vec(),
        true => b"h2".to_vec(),
    }];
    Ok(TlsConnector::from(Arc::new(tls)))
}
