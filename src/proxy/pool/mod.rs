//! Upstream connections: one stack of idle HTTP/1.1 connections per
//! destination and worker thread, shared by that worker's client
//! connections.
//!
//! Written for the hot path rather than taken from hyper-util's pooled
//! client, which hashed the destination's scheme and authority twice per
//! request (SipHash over each byte, lowercased), spawned a task per request
//! to return the connection, and cost about 8,400 instructions a request
//! under callgrind. Here a route knows its destination's index, a request
//! pops the most recently used connection under a lock held for a few
//! instructions, and the connection goes back when its response body ends.
//! When none is idle the request queues, and is served by the first
//! connection to come free, its own new one or another request's.
//!
//! Each connection is driven by its own task (hyper's `Connection`). A
//! connection is never reused while its last response is unfinished: one
//! that the client abandoned mid-body is closed, not returned. A request is
//! sent a second time only when that is safe: it was handed back unwritten,
//! or it is a bodiless GET, HEAD or OPTIONS (idempotent) that an upstream's
//! keep-alive timer cut off (see [`RETRY_IF_IDLE`]).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use super::error::ForwardError;
use super::request_body::{Progress, RequestBody};
use super::retry::{closed_unanswered, resendable};

pub mod h2;

/// Idle connections kept per destination; beyond this the oldest close.
const MAX_IDLE: usize = 256;
/// Requests that may wait for a connection to one destination (as Envoy's
/// default `max_pending_requests`); beyond, 503 `upstream_busy` at once.
const MAX_WAITING: usize = 1024;
/// Slack past a request's own connect attempt before it gives up waiting
/// (the connect's own timeout answers first).
const WAIT_MARGIN: Duration = Duration::from_millis(100);
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connections tried for one request whose earlier ones closed before it
/// could be written (or, see [`RETRY_IF_IDLE`], before it was answered).
const MAX_ATTEMPTS: u32 = 3;
/// A connection idle this long may be closed by the upstream's own
/// keep-alive timer just as a request is written on it (Node.js closes after
/// 5 s, for example). A bodiless GET, HEAD or OPTIONS taken from such a
/// connection keeps a copy of its head, so that if the upstream closes
/// without answering it is sent once more on a fresh connection, as nginx
/// does for cached connections. Busy connections (reused within this time)
/// pay nothing for it.
const RETRY_IF_IDLE: Duration = Duration::from_secs(1);

thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread use idle stack `index` of every destination: each
/// worker thread (`server::workers`) calls it once with its number. Other
/// threads (the admin listener, background tasks, tests) use stack 0.
pub fn set_shard(index: usize) {
    SHARD.with(|s| s.set(index));
}

/// This thread's idle stack.
pub(crate) fn shard() -> usize {
    SHARD.with(std::cell::Cell::get)
}

/// The authority's host without the brackets of an IPv6 literal.
fn bare_host(authority: &Authority) -> &str {
    authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// The name an upstream's TLS certificate must carry.
fn server_name(authority: &Authority) -> Result<ServerName<'static>, String> {
    let host = bare_host(authority);
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host}: not a TLS server name: {e}")),
    }
}

/// An upstream's port (the scheme's default when the authority names
/// none) and, over TLS, the connector with the name the certificate must
/// carry: what both pools (HTTP/1.1 and `h2`) dial with.
#[allow(clippy::type_complexity)]
fn endpoint(
    authority: &Authority,
    tls: Option<TlsConnector>,
) -> Result<(u16, Option<(TlsConnector, ServerName<'static>)>), String> {
    let port = authority
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tls = match tls {
        None => None,
        Some(connector) => Some((connector, server_name(authority)?)),
    };
    Ok((port, tls))
}

/// One worker's share of `total` (at least one).
fn share(total: usize, workers: usize) -> usize {
    (total / workers.max(1)).max(1)
}

/// A TCP connection to the upstream, Nagle off (requests are written whole).
async fn dial(authority: &Authority, port: u16) -> Result<TcpStream, ForwardError> {
    let tcp = TcpStream::connect((bare_host(authority), port))
        .await
        .map_err(|e| ForwardError::Unavailable(e.into()))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

fn abandoned() -> ForwardError {
    ForwardError::Unavailable("the connection attempt was abandoned".into())
}

/// One upstream (scheme, authority, TLS trust and connect timeout) and its
/// idle connections.
pub struct Destination {
    authority: Authority,
    port: u16,
    /// The TLS connector and the name the certificate must carry (https).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Connections (open or opening) allowed per shard: the destination's
    /// `forward.max_connections` shared out among the workers.
    per_shard: usize,
    /// Waiting requests allowed per shard.
    waiting_per_shard: usize,
    /// One per worker thread (`server::workers`): a connection is only ever
    /// used on the worker whose runtime drives it, so no request wakes a
    /// task on another thread.
    shards: Box<[Mutex<State>]>,
}

/// Idle connections (most recent at the back) and the requests waiting for
/// one (oldest at the front). Both are never non-empty at once for long.
#[derive(Default)]
struct State {
    idle: VecDeque<Idle>,
    waiters: VecDeque<Waiter>,
    /// Connections open or being opened (idle, lent and connecting).
    open: usize,
}

impl State {
    /// Gives `delivered` to the oldest request still waiting; back if none is.
    fn hand_over(&mut self, mut delivered: Delivered) -> Option<Delivered> {
        while let Some(waiter) = self.waiters.pop_front() {
            // A send fails only when that request is gone (timed out, or
            // its client left).
            match waiter.send(delivered) {
                Ok(()) => return None,
                Err(back) => delivered = back,
            }
        }
        Some(delivered)
    }
}

/// What a waiting request receives: a connection, or why none came.
type Delivered = Result<SendRequest<RequestBody>, ForwardError>;
type Waiter = oneshot::Sender<Delivered>;

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("authority", &self.authority)
            .field("https", &self.tls.is_some())
            .finish()
    }
}

/// What a response holds of its upstream connection until its body ends:
/// an HTTP/1.1 connection to give back, or an HTTP/2 stream's place.
pub enum Lease {
    /// See [`Http1Lease`].
    Http1(Http1Lease),
    /// Freed when dropped.
    Http2(h2::Stream),
}

impl Lease {
    /// The response has been read to its end.
    pub fn release(self) {
        match self {
            Lease::Http1(lease) => lease.release(),
            Lease::Http2(stream) => drop(stream),
        }
    }
}

/// An HTTP/1.1 connection lent to one request; [`Http1Lease::release`]
/// returns it once the response has been read to its end.
pub struct Http1Lease {
    sender: SendRequest<RequestBody>,
    home: Arc<Destination>,
    shard: usize,
    /// The request body's progress (none for a bodiless request).
    body: Option<Arc<Progress>>,
}

impl Http1Lease {
    /// Puts the connection back for the next request, if the request's
    /// body has been sent whole too; otherwise the connection closes once
    /// hyper is done with it (a client trickling its body must not hold up
    /// the next request on that connection).
    pub fn release(self) {
        if self.body.is_none_or(|b| b.ended()) {
            self.home.put(self.shard, self.sender);
        }
    }
}

impl Destination {
    /// A destination at `authority`, over TLS when `tls` is given, with an
    /// idle stack for each of `workers` worker threads and at most
    /// `max_connections` connections in all (each worker gets its share,
    /// at least one).
    pub fn new(
        authority: Authority,
        tls: Option<TlsConnector>,
        connect_timeout: Duration,
        workers: usize,
        max_connections: usize,
    ) -> Result<Self, String> {
        let (port, tls) = endpoint(&authority, tls)?;
        Ok(Self {
            authority,
            port,
            tls,
            connect_timeout,
            per_shard: share(max_connections, workers),
            waiting_per_shard: share(MAX_WAITING, workers),
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        })
    }

    /// Sends `req` (origin-form URI, headers final) on an idle connection,
    /// or on the first to become free: one returned by another request, or
    /// the one this request started connecting. Like Envoy's pending
    /// requests, a burst is served by whichever connections are ready first
    /// rather than each request waiting on its own connect. A pooled
    /// connection the upstream closed just as it was taken hands the request
    /// back unsent; it then goes to the next one. See [`RETRY_IF_IDLE`] for
    /// the one case a request already written is sent again.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Http1Lease), ForwardError> {
        let mut req = req.map(RequestBody::new);
        let body = req.body().progress();
        let shard = shard().min(self.shards.len() - 1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut sender, idle_for) = match self.take_or_wait(shard)? {
                Ok(taken) => taken,
                Err((waiting, connecting)) => {
                    // CONTRACT §8.1b: at most connect_timeout. A request whose
                    // own connect is under way gets a moment more, so that
                    // connect's timeout answers (504) rather than this one.
                    let wait = match connecting {
                        true => self.connect_timeout + WAIT_MARGIN,
                        false => self.connect_timeout,
                    };
                    match tokio::time::timeout(wait, waiting).await {
                        Err(_) => return Err(ForwardError::Busy),
                        Ok(delivered) => (delivered.map_err(|_| abandoned())??, Duration::ZERO),
                    }
                }
            };
            if let Err(e) = sender.ready().await {
                if attempts >= MAX_ATTEMPTS {
                    return Err(ForwardError::Unavailable(e.into()));
                }
                continue;
            }
            let again = (idle_for >= RETRY_IF_IDLE && attempts < MAX_ATTEMPTS)
                .then(|| resendable(&req))
                .flatten();
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let lease = Http1Lease {
                        sender,
                        home: self.clone(),
                        shard,
                        body,
                    };
                    return Ok((response, lease));
                }
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) if attempts < MAX_ATTEMPTS => req = unsent,
                    (None, Some(copy)) if closed_unanswered(e.error()) => {
                        tracing::debug!(
                            "upstream closed an idle connection as it was reused; sending again"
                        );
                        req = copy;
                    }
                    _ if body.as_ref().is_some_and(|b| b.failed()) => {
                        return Err(ForwardError::ClientBody);
                    }
                    _ => return Err(ForwardError::Unavailable(e.into_error().into())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open, and how
    /// long it was idle; if there is none, a place in the queue, with a
    /// connection attempt started for it while the destination is under
    /// its connection cap. A full queue is [`ForwardError::Busy`].
    #[allow(clippy::type_complexity)]
    fn take_or_wait(
        self: &Arc<Self>,
        shard: usize,
    ) -> Result<
        Result<(SendRequest<RequestBody>, Duration), (oneshot::Receiver<Delivered>, bool)>,
        ForwardError,
    > {
        let mut state = self.lock(shard);
        while let Some(conn) = state.idle.pop_back() {
            let idle_for = conn.since.elapsed();
            if !conn.sender.is_closed() && idle_for < IDLE_TIMEOUT {
                return Ok(Ok((conn.sender, idle_for)));
            }
        }
        // Requests that gave up (timed out, client gone) leave the queue.
        state.waiters.retain(|w| !w.is_closed());
        if state.waiters.len() >= self.waiting_per_shard {
            return Err(ForwardError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push_back(tx);
        let connect = state.open < self.per_shard;
        if connect {
            state.open += 1;
        }
        drop(state);
        if connect {
            self.spawn_connect(shard);
        }
        Ok(Err((rx, connect)))
    }

    /// Opens one connection (already counted in `open`) for the oldest
    /// waiting request of `shard`.
    fn spawn_connect(self: &Arc<Self>, shard: usize) {
        let me = self.clone();
        tokio::spawn(async move {
            match me.connect(shard).await {
                Ok(sender) => me.put(shard, sender),
                // Each failed attempt fails one waiting request, promptly.
                // (the failure goes out first, so the place it frees goes
                // to a request still waiting, not to this one again).
                Err(e) => {
                    me.fail_one(shard, e);
                    me.closed(shard);
                }
            }
        });
    }

    /// A connection of `shard` is gone: its place goes to a waiting request,
    /// if one is still waiting.
    fn closed(self: &Arc<Self>, shard: usize) {
        let mut state = self.lock(shard);
        state.open = state.open.saturating_sub(1);
        state.waiters.retain(|w| !w.is_closed());
        let connect = !state.waiters.is_empty() && state.open < self.per_shard;
        if connect {
            state.open += 1;
        }
        drop(state);
        if connect {
            self.spawn_connect(shard);
        }
    }

    /// Hands a free connection to the oldest waiting request, or keeps it.
    fn put(&self, shard: usize, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock(shard);
        let Some(Ok(sender)) = state.hand_over(Ok(sender)) else {
            return;
        };
        // The oldest sit at the front: close those past their time, and
        // make room.
        let idle = &mut state.idle;
        while idle
            .front()
            .is_some_and(|c| idle.len() >= MAX_IDLE || now - c.since >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    /// Fails the oldest waiting request with why a connect failed.
    fn fail_one(&self, shard: usize, error: ForwardError) {
        self.lock(shard).hand_over(Err(error));
    }

    /// One worker's idle connections and waiting requests. Uncontended:
    /// only that worker's thread takes it.
    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, State> {
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection, driven by its own task. `connect_timeout` bounds
    /// the TCP connect and the TLS handshake together: this runs on a task
    /// of its own, so nothing else would stop an upstream that accepts and
    /// then never answers the handshake from holding it for good.
    async fn connect(
        self: &Arc<Self>,
        shard: usize,
    ) -> Result<SendRequest<RequestBody>, ForwardError> {
        match tokio::time::timeout(self.connect_timeout, self.open(shard)).await {
            Err(_) => Err(ForwardError::Timeout),
            Ok(result) => result,
        }
    }

    async fn open(
        self: &Arc<Self>,
        shard: usize,
    ) -> Result<SendRequest<RequestBody>, ForwardError> {
        // Counted closed when the connection's driver ends, however it ends.
        let home = (self.clone(), shard);
        let tcp = dial(&self.authority, self.port).await?;
        match &self.tls {
            None => handshake(tcp, home).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| ForwardError::Unavailable(e.into()))?;
                handshake(stream, home).await
            }
        }
    }
}

/// The HTTP/1.1 handshake; the connection's driver task tells `home` when
/// the connection is gone. An upgraded connection leaves the count when it
/// switches: tunnels are bounded by the client side (`max_connections`,
/// `idle_timeout`), not by the pool.
async fn handshake<I>(
    io: I,
    home: (Arc<Destination>, usize),
) -> Result<SendRequest<RequestBody>, ForwardError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ForwardError::Unavailable(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
        let (destination, shard) = home;
        destination.closed(shard);
    });
    Ok(sender)
}
