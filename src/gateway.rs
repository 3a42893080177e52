//! The request path, top to bottom: normalise the path, find the route,
//! authenticate, rewrite headers, forward. Each request works on the
//! [`Runtime`] snapshot current when it started; reload swaps the snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::auth::{Authenticator, Identity};
use crate::config::{Config, ConfigProblem, RouteAuth};
use crate::introspection::Introspector;
use crate::jwks::KeyCache;
use crate::proxy::headers::{self as rewrite, ClientInfo, IdentityNames, Rewrite};
use crate::proxy::{Body, Forwarder, forward};
use crate::revocation::Revocations;
use crate::routing::{self, RequestHost, RouteTable, Target};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::{Metrics, Name, RouteReason};

/// Everything built from one config file.
#[derive(Debug)]
pub struct Runtime {
    /// The config (routes moved into `routes`).
    pub config: Config,
    /// Compiled routes.
    pub routes: RouteTable,
    /// Authentication for protected routes.
    pub auth: Authenticator,
    /// Upstream clients.
    pub forwarder: Forwarder,
    /// Key caches by issuer name; kept across reloads when the issuer is unchanged.
    pub keys: HashMap<String, Arc<KeyCache>>,
    /// Introspectors by issuer name (issuers with `introspection:`); kept
    /// across reloads like the key caches.
    pub introspectors: HashMap<String, Arc<Introspector>>,
    /// The revocation list; kept across reloads while `revocation:` is unchanged.
    pub revocations: Arc<Revocations>,
    /// Every identity header name of the config: no client sends these
    /// upstream, on any route.
    pub identity_names: IdentityNames,
}

impl Runtime {
    /// Builds a runtime, reusing `previous` key caches whose issuer config is unchanged.
    pub fn build(
        mut config: Config,
        previous: Option<&Runtime>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ConfigProblem> {
        let mut keys = HashMap::new();
        let mut introspectors = HashMap::new();
        for issuer in &config.issuers {
            let reused = previous
                .and_then(|p| p.introspectors.get(&issuer.name))
                .filter(|i| **i.issuer() == **issuer)
                .cloned();
            let introspector = match reused {
                Some(i) => Some(i),
                None => Introspector::new(issuer.clone())?.map(Arc::new),
            };
            if let Some(i) = introspector {
                introspectors.insert(issuer.name.clone(), i);
            }
            let older = previous
                .and_then(|p| p.keys.get(&issuer.name))
                .filter(|k| k.same_source(issuer));
            let cache = match older {
                Some(k) if **k.issuer() == **issuer => k.clone(),
                Some(k) => Arc::new(KeyCache::carrying(issuer.clone(), k, metrics.clone())?),
                None => Arc::new(KeyCache::new(issuer.clone(), metrics.clone())?),
            };
            keys.insert(issuer.name.clone(), cache);
        }
        let revocations = match previous.map(|p| &p.revocations) {
            Some(r) if *r.config() == config.revocation => r.clone(),
            other => Arc::new(Revocations::new(&config.revocation, other.map(|r| &**r))?),
        };
        let routes = std::mem::take(&mut config.routes);
        let identity_names = IdentityNames::new(routes.iter().map(|r| &r.forward));
        let forwarder = Forwarder::new(
            &routes,
            previous.map(|p| &p.forwarder),
            config.server.workers,
        )?;
        let auth = Authenticator::new(&routes, &keys, &introspectors, revocations.clone(), metrics);
        Ok(Self {
            config,
            routes: RouteTable::new(routes),
            auth,
            forwarder,
            keys,
            introspectors,
            revocations,
            identity_names,
        })
    }

    /// A TLS acceptor for the current certificate, if TLS is configured.
    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.config
            .tls_server
            .clone()
            .map(tokio_rustls::TlsAcceptor::from)
    }

    /// What keeps this runtime from serving, as (config path, problem):
    /// issuers whose keys have not loaded yet, and a revocation store that
    /// is down under `on_store_error: deny`.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .keys
            .iter()
            .filter(|(_, k)| !k.ready())
            .map(|(name, k)| {
                let problem = k
                    .last_error()
                    .unwrap_or_else(|| "keys not loaded yet".into());
                (format!("issuers.{name}"), problem)
            })
            .collect();
        out.sort();
        if let Some(problem) = self.revocations.not_ready() {
            out.push(("revocation".into(), problem));
        }
        out
    }

    /// Starts background work: loading keys of every issuer not loaded yet,
    /// and the revocation store's subscription.
    pub fn start_background(&self) {
        self.revocations.start();
        // Each cache starts once (its background refresh runs for as long
        // as a runtime holds it); a cache carried over with its keys only
        // needs the refresh.
        for cache in self.keys.values() {
            let cache = cache.clone();
            tokio::spawn(async move { cache.start().await });
        }
    }
}

/// The long-lived gateway: the current runtime and the process-wide metrics.
#[derive(Debug)]
pub struct Gateway {
    runtime: RwLock<Arc<Runtime>>,
    /// Process-wide metrics.
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// HTTP/2 requests in flight over every connection (see
    /// [`Gateway::stream_slot`]).
    streams: Arc<std::sync::atomic::AtomicUsize>,
    /// `max(server.max_connections, 256)`, fixed at start like
    /// `max_connections` itself.
    stream_cap: usize,
}

/// One HTTP/2 request's place in the process-wide stream count; given
/// back when dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// A gateway serving `runtime`.
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>) -> Self {
        let stream_cap = runtime.config.server.max_connections.max(256);
        Self {
            stream_cap,
            runtime: RwLock::new(Arc::new(runtime)),
            metrics,
            draining: AtomicBool::new(false),
            streams: Arc::default(),
        }
    }

    /// The current snapshot.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new config; in-flight requests keep the old snapshot.
    pub fn reload(&self, mut config: Config) -> Result<(), ConfigProblem> {
        let current = self.runtime();
        // The worker threads started with the gateway stay: pools are sized
        // for them, whatever the new file says.
        config.server.workers = current.config.server.workers;
        let next = Runtime::build(config, Some(&current), &self.metrics)?;
        next.start_background();
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// A place for one more HTTP/2 request, or `None` when the process
    /// already has `max(server.max_connections, 256)` in flight: each
    /// connection may carry 256 streams, so without a total a few clients
    /// could hold far more requests than `max_connections` allows
    /// connections.
    pub fn stream_slot(&self) -> Option<StreamSlot> {
        let before = self.streams.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(self.streams.clone());
        (before < self.stream_cap).then_some(slot)
    }

    /// Marks the gateway as shutting down (`/readyz` turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True after [`Gateway::start_draining`].
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Answers one request and writes its access-log line; a request whose
    /// client leaves before the answer is logged and counted as 499.
    pub async fn handle(&self, req: Request<Incoming>, client: ClientInfo) -> Response<Body> {
        let runtime = self.runtime();
        let mut accounted = Accounted {
            log: Some(AccessLog::start(req.method(), req.uri())),
            started: Instant::now(),
            metrics: &self.metrics,
        };
        let log = accounted.log.as_mut().expect("set just above");
        let response = serve(&runtime, &self.metrics, req, client, log).await;
        accounted.finish(response.status());
        response
    }
}

/// nginx's status for a request its client closed before the answer.
const CLIENT_CLOSED: u16 = 499;

/// An access-log record that is written even when the request's future is
/// dropped (the client went away while the upstream was still working).
struct Accounted<'a> {
    log: Option<AccessLog>,
    started: Instant,
    metrics: &'a Metrics,
}

impl Accounted<'_> {
    fn finish(&mut self, status: StatusCode) {
        if let Some(log) = self.log.take() {
            log.finish(status, self.started, self.metrics);
        }
    }
}

impl Drop for Accounted<'_> {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
            log.finish(status, self.started, self.metrics);
        }
    }
}

async fn serve(
    rt: &Runtime,
    metrics: &Metrics,
    req: Request<Incoming>,
    client: ClientInfo,
    log: &mut AccessLog,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    if let Err(e) = forward::note_upgrade(&mut parts) {
        return bad_request(&e);
    }
    let path = match routing::normalise(parts.uri.path()) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let host = match routing::request_host(parts.version, &parts.uri, &parts.headers) {
        Ok(h) => h,
        Err(e) => return bad_request(&e),
    };
    let target = Target {
        method: &parts.method,
        host: host.as_ref().map(RequestHost::host),
        path: &path,
    };
    let Some((route, params)) = rt.routes.find(target) else {
        return json_response(StatusCode::NOT_FOUND, NOT_FOUND);
    };
    log.route = Some(Name(route.config.name.clone()));

    let identity: Identity = match &route.config.auth {
        RouteAuth::Public => Identity::default(),
        RouteAuth::Protected(policy) => {
            let auth_started = Instant::now();
            let outcome = rt
                .auth
                .authenticate(
                    route.index,
                    policy,
                    &parts.headers,
                    parts.uri.query(),
                    &params,
                )
                .await;
            metrics
                .auth_duration
                .observe(auth_started.elapsed().as_secs_f64());
            log.token_digest = outcome.digest;
            match outcome.result {
                Ok(verified) => {
                    log.issuer = Some(verified.issuer.clone());
                    log.subject = verified
                        .claims
                        .get("sub")
                        .and_then(|s| s.as_str())
                        .map(str::to_owned);
                    verified.identity_headers(route.index, &route.config.forward.headers)
                }
                Err(failure) => {
                    metrics
                        .auth_failures
                        .get_or_create(&RouteReason {
                            route: Name(route.config.name.clone()),
                            reason: failure.reason(),
                        })
                        .inc();
                    log.reason = Some(failure.reason());
                    return failure.into_response();
                }
            }
        }
    };

    let uri = match forward::upstream_uri(&path, parts.uri.query()) {
        Ok(uri) => uri,
        Err(e) => return e.into_response(),
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let token_from = match &route.config.auth {
        RouteAuth::Public => &[][..],
        RouteAuth::Protected(policy) => &policy.token_from,
    };
    rewrite::rewrite_request(
        &mut parts.headers,
        Rewrite {
            forward: &route.config.forward,
            reserved: &rt.identity_names,
            token_from,
            identity: &identity,
            client,
            forwarded_host: host.as_ref().map(RequestHost::header),
            upstream_host: &route.config.upstream.host,
        },
    );
    let req = Request::from_parts(parts, body);
    match rt
        .forwarder
        .forward(route.index, route.config.forward.timeout, req)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(route = %route.config.name, error = %e, "forwarding failed");
            log.reason = e.reason();
            e.into_response()
        }
    }
}

const NOT_FOUND: &str =
    r#"{"error":"not_found","error_description":"no route matches this request"}"#;

/// 400 `invalid_request` naming what is wrong with the request's path,
/// host or upgrade.
fn bad_request(problem: &dyn std::fmt::Display) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        error_json("invalid_request", &problem.to_string()),
    )
}

fn error_json(error: &str, description: &str) -> String {
    serde_json::json!({"error": error, "error_description": description}).to_string()
}

/// A small JSON answer; the one place gateway-made responses are built.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
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
