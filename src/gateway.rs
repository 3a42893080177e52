//! The request path, top to bottom: normalise the path, find the route,
//! authenticate, rewrite headers, forward. Each request works on the
//! [`Runtime`] snapshot current when it started; reload swaps the snapshot.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::auth::{Admitted, Identity};
use crate::config::{Config, ConfigProblem, RouteAuth};
use crate::proxy::headers::{self as rewrite, ClientInfo, Rewrite};
use crate::proxy::{Body, forward};
use crate::response;
use crate::routing::{self, RequestHost, Route, Target};
pub use crate::runtime::Runtime;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

/// The long-lived gateway: the current runtime and the process-wide metrics.
#[derive(Debug)]
pub struct Gateway {
    runtime: RwLock<Arc<Runtime>>,
    /// Bumped by each reload, after the swap (see [`Gateway::snapshot`]).
    generation: AtomicU64,
    /// Told of each reload, so that an idle worker lets go of the runtime
    /// it last used instead of keeping it (its key caches refreshing, its
    /// idle upstream connections open) until its next request.
    reloaded: tokio::sync::watch::Sender<u64>,
    /// Tells this gateway's entry in a thread's snapshot apart from
    /// another's (tests run several in one process).
    id: u64,
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

/// Numbers gateways for [`Gateway::id`].
static GATEWAY_IDS: AtomicU64 = AtomicU64::new(0);

/// A thread's copy of the current runtime: see [`Gateway::snapshot`].
struct LocalSnapshot {
    gateway: u64,
    generation: u64,
    runtime: Arc<Snapshot>,
}

/// A thread's own handle on a runtime (see [`Gateway::snapshot`]).
#[derive(Debug)]
pub struct Snapshot(Arc<Runtime>);

impl std::ops::Deref for Snapshot {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.0
    }
}

thread_local! {
    static SNAPSHOT: RefCell<Option<LocalSnapshot>> = const { RefCell::new(None) };
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
            generation: AtomicU64::new(0),
            reloaded: tokio::sync::watch::Sender::new(0),
            id: GATEWAY_IDS.fetch_add(1, Ordering::Relaxed),
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

    /// The current runtime as a request holds it. Each thread keeps its
    /// own handle on the runtime, refreshed when a reload has bumped the
    /// generation: a request reads one atomic that changes only on reload
    /// and counts itself on a reference count only its thread touches,
    /// instead of taking the shared lock and the runtime's own count (two
    /// cache lines every worker wrote on every request). Workers refresh
    /// theirs as soon as a reload is announced ([`Gateway::reloads`]), so a
    /// replaced runtime does not live on in an idle worker.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let generation = self.generation.load(Ordering::Acquire);
        SNAPSHOT.with(|cell| {
            let mut local = cell.borrow_mut();
            match &*local {
                Some(s) if s.gateway == self.id && s.generation == generation => s.runtime.clone(),
                _ => {
                    let runtime = Arc::new(Snapshot(self.runtime()));
                    *local = Some(LocalSnapshot {
                        gateway: self.id,
                        generation,
                        runtime: runtime.clone(),
                    });
                    runtime
                }
            }
        })
    }

    /// Announces each reload (its generation) once the new runtime serves.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
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
        let generation = self.generation.fetch_add(1, Ordering::Release) + 1;
        self.reloaded.send_replace(generation);
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

    /// 503 `too_many_streams` for an HTTP/2 request past the stream total,
    /// logged and counted like every other answer.
    pub fn too_many_streams(&self, req: &Request<Incoming>) -> Response<Body> {
        let mut log = AccessLog::start(req.method(), req.uri());
        log.reason = Some("too_many_streams");
        let grpc = response::grpc::is_grpc(req.headers());
        let response = response::refuse(
            crate::response::Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "the gateway is serving as many HTTP/2 requests as it allows; retry shortly",
            )
            .retry_after(1),
        );
        log.finish(response.status(), Instant::now(), &self.metrics);
        match grpc {
            true => response::grpc::trailers_only(response),
            false => response,
        }
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
    /// client leaves before the answer is logged and counted as 499. A gRPC
    /// client gets the gateway's own answers as gRPC statuses (logged and
    /// counted with their HTTP status).
    pub async fn handle(&self, req: Request<Incoming>, client: ClientInfo) -> Response<Body> {
        let runtime = self.snapshot();
        let grpc = response::grpc::is_grpc(req.headers());
        let mut accounted = Accounted {
            log: Some(AccessLog::start(req.method(), req.uri())),
            started: Instant::now(),
            metrics: &self.metrics,
        };
        let log = accounted.log.as_mut().expect("set just above");
        let response = proxy_request(&runtime, req, client, grpc, log).await;
        accounted.finish(response.status());
        match grpc {
            true => response::grpc::trailers_only(response),
            false => response,
        }
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

/// The request path: normalise, route, authenticate, rewrite, forward.
/// Each step answers the request itself only by returning a refusal.
/// `grpc`: the request is a gRPC call (its deadline applies, and an
/// HTTP/1.1 client gets the status trailers).
async fn proxy_request(
    rt: &Runtime,
    req: Request<Incoming>,
    client: ClientInfo,
    grpc: bool,
    log: &mut AccessLog,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    if let Err(e) = crate::proxy::upgrade::note_upgrade(&mut parts) {
        return response::bad_request(&e);
    }
    let (path, host) = match normalise(&parts) {
        Ok(found) => found,
        Err(e) => return response::bad_request(&e),
    };
    if let Some(document) = resource_metadata(rt, &parts.method, &path) {
        return response::json(StatusCode::OK, document);
    }
    let (route, admitted) = match judge(
        rt,
        &parts,
        &path,
        host.as_ref(),
        Listener::Proxy,
        &client,
        log,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let identity = admitted.identity;
    let phantom = admitted.phantom;
    // An unchanged path keeps the request's own bytes (no copy).
    let unchanged = match &path {
        std::borrow::Cow::Borrowed(_) => parts.uri.path_and_query().cloned(),
        std::borrow::Cow::Owned(_) => None,
    };
    let uri = match unchanged.map_or_else(
        || forward::upstream_uri(&path, parts.uri.query()),
        |p| Ok(http::Uri::from(p)),
    ) {
        Ok(uri) => uri,
        Err(e) => return response::refuse(e.refusal()),
    };
    parts.uri = uri;
    rewrite(
        rt,
        route,
        &identity,
        client,
        host.as_ref(),
        phantom.as_deref(),
        &mut parts,
    );
    // CONTRACT §8.2: a gRPC client's deadline lowers the route's timeout.
    let (timeout, deadline) = match grpc.then(|| response::grpc::timeout(&parts.headers)) {
        Some(Err(())) => return response::bad_request(&"grpc-timeout is malformed"),
        Some(Ok(Some(d))) if d < route.config.forward.timeout => (d, true),
        _ => (route.config.forward.timeout, false),
    };
    let req = Request::from_parts(parts, body);
    match rt.forwarder.forward(route.index, timeout, req).await {
        Ok(mut response) => {
            if grpc && client_version < Version::HTTP_2 {
                rewrite::declare_grpc_trailers(response.headers_mut());
            }
            if let Some(nonce) = admitted.dpop_nonce {
                rewrite::dpop_nonce(response.headers_mut(), nonce);
            }
            response
        }
        Err(forward::ForwardError::Timeout) if deadline => {
            log.reason = Some("deadline_exceeded");
            response::refuse(forward::ForwardError::Deadline.refusal())
        }
        Err(e) => {
            tracing::debug!(route = %route.config.name, error = %e, "forwarding failed");
            log.reason = e.reason();
            response::refuse(e.refusal())
        }
    }
}

/// RFC 9728 metadata served at `path` (CONTRACT §8.7), for GET and HEAD.
fn resource_metadata(rt: &Runtime, method: &http::Method, path: &str) -> Option<bytes::Bytes> {
    if rt.resource_metadata.is_empty() || !matches!(*method, http::Method::GET | http::Method::HEAD)
    {
        return None;
    }
    rt.resource_metadata
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, d)| d.clone())
}

/// Which listener asks: the proxy's table never matches a decision-only
/// route (one without `upstream`); the decision listener matches every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Proxy,
    Decisions,
}

/// Routes and authenticates a normalised request: its route and who is
/// calling, or the answer refusing it (the proxy's 404 becomes the decision
/// listener's 403). Shared by the proxy and the decision listener, so both
/// judge a request exactly alike.
pub(crate) async fn judge<'r>(
    rt: &'r Runtime,
    parts: &http::request::Parts,
    path: &str,
    host: Option<&RequestHost>,
    listener: Listener,
    client: &ClientInfo,
    log: &mut AccessLog,
) -> Result<(&'r Route, Admitted), Response<Body>> {
    let target = Target {
        method: &parts.method,
        host: host.map(RequestHost::host),
        path,
    };
    let found = match listener {
        Listener::Proxy => rt.routes.find(target),
        Listener::Decisions => rt.routes.find_any(target),
    };
    let Some((route, params)) = found else {
        return Err(match listener {
            Listener::Proxy => response::no_route(),
            Listener::Decisions => response::forbidden("no route matches this request"),
        });
    };
    log.route = Some(rt.stats[route.index].clone());
    match rt.auth.admit(route, &params, parts, client, log).await {
        Ok(admitted) => Ok((route, admitted)),
        Err(denied) => Err(response::refuse(denied.refusal())),
    }
}

/// Why a request cannot be routed (400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unroutable {
    #[error(transparent)]
    Path(#[from] routing::BadPath),
    #[error(transparent)]
    Host(#[from] routing::BadHost),
}

/// The request's normalised path (borrowed when already normal) and
/// validated host.
pub(crate) fn normalise(
    parts: &http::request::Parts,
) -> Result<(std::borrow::Cow<'_, str>, Option<RequestHost>), Unroutable> {
    let path = routing::normalise(parts.uri.path())?;
    let host = routing::request_host(parts.version, &parts.uri, &parts.headers)?;
    Ok((path, host))
}

/// Rewrites the request's headers for `route`'s upstream (CONTRACT §4).
fn rewrite(
    rt: &Runtime,
    route: &Route,
    identity: &Identity,
    client: ClientInfo,
    host: Option<&RequestHost>,
    phantom: Option<&str>,
    parts: &mut http::request::Parts,
) {
    let token_from = match &route.config.auth {
        RouteAuth::Public => &[][..],
        RouteAuth::Protected(policy) => &policy.token_from,
    };
    parts.version = Version::HTTP_11;
    // A decision-only route never reaches here (the proxy does not match it).
    let Some(upstream) = &route.config.upstream else {
        return;
    };
    let upstream_host = &upstream.host;
    rewrite::rewrite_request(
        &mut parts.headers,
        Rewrite {
            forward: &route.config.forward,
            reserved: &rt.identity_names,
            token_from,
            identity,
            client,
            forwarded_host: host.map(RequestHost::header),
            upstream_host,
            phantom,
        },
    );
}
