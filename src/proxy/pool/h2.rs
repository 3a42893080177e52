//! Upstream HTTP/2 connections (`h2c://`, or `https://` with
//! `forward.protocol: http2`): per destination and worker thread, a few
//! multiplexed connections, each carrying requests up to the stream limit
//! the upstream announced (`SETTINGS_MAX_CONCURRENT_STREAMS`, at most
//! [`MAX_STREAMS`]). A further connection opens only when every open one is
//! full, within the destination's `forward.max_connections` share.
//!
//! A connection the upstream is closing (`GOAWAY`, a reset) reports closed
//! and gets no new request; a request hyper hands back unwritten goes to
//! another connection, and so does one the upstream refused unprocessed
//! (`REFUSED_STREAM`, or past a `GOAWAY`'s last stream) when it is a
//! bodiless GET, HEAD or OPTIONS. Idle connections are pinged by hyper
//! (dead ones close) and closed after [`IDLE_TIMEOUT`] without a stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use super::{WAIT_MARGIN, abandoned, dial, endpoint, shard, share};
use crate::proxy::error::ForwardError;
use crate::proxy::request_body::RequestBody;
use crate::proxy::retry::resendable;

/// Streams one connection carries at most, whatever the upstream allows
/// (Envoy's and nginx's default is 100 and 128): past this a second
/// connection spreads the load and limits what one bad connection takes
/// down.
const MAX_STREAMS: usize = 128;
/// A connection with no stream for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often hyper pings an idle connection, and how long it waits for the
/// answer before it closes the connection.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests that may wait for a connection, per worker.
const MAX_WAITING: usize = 1024;
/// Tries for one request whose connection closed before it was written.
const MAX_ATTEMPTS: u32 = 3;

/// One HTTP/2 upstream and its connections.
pub struct Destination {
    authority: Authority,
    scheme: Scheme,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    per_shard: usize,
    shards: Box<[Mutex<State>]>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("authority", &self.authority)
            .field("http2", &true)
            .field("https", &self.tls.is_some())
            .finish()
    }
}

#[derive(Default)]
struct State {
    conns: Vec<Conn>,
    /// Connections being opened.
    connecting: usize,
    waiters: VecDeque<oneshot::Sender<Result<Taken, ForwardError>>>,
    next_id: u64,
}

/// An open connection as the pool holds it.
struct Conn {
    id: u64,
    sender: SendRequest<RequestBody>,
    shared: Arc<Shared>,
}

/// What the connection's driver and its requests share.
#[derive(Default)]
struct Shared {
    /// Streams open (requests sent whose response has not ended).
    streams: AtomicUsize,
    /// The upstream's current `SETTINGS_MAX_CONCURRENT_STREAMS`.
    max_streams: AtomicUsize,
    /// When the last stream ended, in milliseconds since `EPOCH`.
    idle_since: AtomicU64,
}

impl Shared {
    fn limit(&self) -> usize {
        self.max_streams
            .load(Ordering::Relaxed)
            .clamp(1, MAX_STREAMS)
    }

    fn has_room(&self) -> bool {
        self.streams.load(Ordering::Relaxed) < self.limit()
    }
}

/// A connection taken for one request: its sender, and its stream count,
/// held until the response ends.
struct Taken {
    sender: SendRequest<RequestBody>,
    stream: Stream,
}

/// One stream's place on its connection; freed when dropped (the response
/// body ended, failed or was abandoned).
pub struct Stream(Arc<Shared>);

impl Drop for Stream {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }
}

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Conn {
    fn take(&self) -> Taken {
        self.shared.streams.fetch_add(1, Ordering::AcqRel);
        Taken {
            sender: self.sender.clone(),
            stream: Stream(self.shared.clone()),
        }
    }
}

impl Destination {
    /// An HTTP/2 destination at `authority`, over TLS (ALPN `h2`) when `tls`
    /// is given, with at most `max_connections` connections in all.
    pub fn new(
        authority: Authority,
        tls: Option<TlsConnector>,
        connect_timeout: Duration,
        workers: usize,
        max_connections: usize,
    ) -> Result<Self, String> {
        let (port, tls) = endpoint(&authority, tls)?;
        Ok(Self {
            scheme: if tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority,
            port,
            tls,
            connect_timeout,
            per_shard: share(max_connections, workers),
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        })
    }

    /// Sends `req` (origin-form URI, headers final) as one stream.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Stream), ForwardError> {
        let mut req = self.prepare(req);
        let shard = shard().min(self.shards.len() - 1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Taken { mut sender, stream } = match self.take_or_wait(shard)? {
                Ok(taken) => taken,
                Err(waiting) => {
                    match tokio::time::timeout(self.connect_timeout + WAIT_MARGIN, waiting).await {
                        Err(_) => return Err(ForwardError::Busy),
                        Ok(delivered) => delivered.map_err(|_| abandoned())??,
                    }
                }
            };
            let again = (attempts < MAX_ATTEMPTS)
                .then(|| resendable(&req))
                .flatten();
            let body = req.body().progress();
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, stream)),
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) if attempts < MAX_ATTEMPTS => req = unsent,
                    (None, Some(copy)) if refused_unprocessed(e.error()) => {
                        tracing::debug!("upstream refused a stream unprocessed; sending again");
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

    /// The request as HTTP/2 sends it: absolute URI (`:scheme`,
    /// `:authority`), no `Host`, and `te: trailers`, which gRPC servers
    /// require and which is true of the gateway (it passes trailers on).
    fn prepare(&self, req: Request<Incoming>) -> Request<RequestBody> {
        let (mut parts, body) = req.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        parts.version = Version::HTTP_2;
        parts.headers.remove(header::HOST);
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
        Request::from_parts(parts, RequestBody::new(body))
    }

    /// A connection with room for one more stream, or a place in the queue
    /// (with a connection opening for it when the open ones are full and
    /// the share allows one more).
    #[allow(clippy::type_complexity)]
    fn take_or_wait(
        self: &Arc<Self>,
        shard: usize,
    ) -> Result<Result<Taken, oneshot::Receiver<Result<Taken, ForwardError>>>, ForwardError> {
        let mut state = self.lock(shard);
        state.conns.retain(|c| !c.sender.is_closed());
        if let Some(conn) = state.conns.iter().find(|c| c.shared.has_room()) {
            return Ok(Ok(conn.take()));
        }
        state.waiters.retain(|w| !w.is_closed());
        if state.waiters.len() >= MAX_WAITING {
            return Err(ForwardError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push_back(tx);
        // One connect serves the first MAX_STREAMS waiters; more wait for
        // another only when those will not fit.
        let wanted = state.waiters.len().div_ceil(MAX_STREAMS);
        let connect =
            state.connecting < wanted && state.conns.len() + state.connecting < self.per_shard;
        if connect {
            state.connecting += 1;
            state.next_id += 1;
        }
        let id = state.next_id;
        drop(state);
        if connect {
            self.spawn_connect(shard, id);
        }
        Ok(Err(rx))
    }

    fn spawn_connect(self: &Arc<Self>, shard: usize, id: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            let opened = match tokio::time::timeout(me.connect_timeout, me.open(shard, id)).await {
                Err(_) => Err(ForwardError::Timeout),
                Ok(result) => result,
            };
            let mut state = me.lock(shard);
            state.connecting -= 1;
            match opened {
                Ok(conn) => {
                    // The waiters it has room for, oldest first.
                    while conn.shared.has_room() {
                        let Some(waiter) = state.waiters.pop_front() else {
                            break;
                        };
                        // A waiter gone (timed out, client left) gives its
                        // stream back as the send fails.
                        let _ = waiter.send(Ok(conn.take()));
                    }
                    state.conns.push(conn);
                }
                // The waiters this connect was for fail with its reason,
                // unless another connect is still under way for them.
                Err(e) if state.connecting == 0 => {
                    tracing::debug!(error = %e, "upstream HTTP/2 connect failed");
                    while let Some(waiter) = state.waiters.pop_front() {
                        let _ = waiter.send(Err(ForwardError::Unavailable(e.to_string().into())));
                    }
                }
                Err(_) => {}
            }
        });
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, State> {
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects, handshakes, and starts the connection's driver.
    async fn open(self: &Arc<Self>, shard: usize, id: u64) -> Result<Conn, ForwardError> {
        let tcp = dial(&self.authority, self.port).await?;
        match &self.tls {
            None => self.handshake(tcp, shard, id).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| ForwardError::Unavailable(e.into()))?;
                // CONTRACT §8.2: HTTP/2 over TLS only when the upstream
                // selected h2; one that did not would be spoken at in a
                // protocol it did not agree to.
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ForwardError::Unavailable(
                        "the upstream did not select HTTP/2 (ALPN h2) in the TLS handshake".into(),
                    ));
                }
                self.handshake(stream, shard, id).await
            }
        }
    }

    async fn handshake<I>(
        self: &Arc<Self>,
        io: I,
        shard: usize,
        id: u64,
    ) -> Result<Conn, ForwardError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ForwardError::Unavailable(e.into()))?;
        let shared = Arc::new(Shared {
            max_streams: AtomicUsize::new(conn.current_max_send_streams()),
            idle_since: AtomicU64::new(now_ms()),
            ..Shared::default()
        });
        let watched = shared.clone();
        let home = self.clone();
        tokio::spawn(async move {
            let mut idle_check = tokio::time::interval(IDLE_TIMEOUT / 3);
            let mut retired = false;
            let ended = std::future::poll_fn(|cx| {
                let polled = std::pin::Pin::new(&mut conn).poll(cx);
                watched
                    .max_streams
                    .store(conn.current_max_send_streams(), Ordering::Relaxed);
                if !retired && idle_check.poll_tick(cx).is_ready() && idle_too_long(&watched) {
                    // Dropping the pool's sender lets hyper close the
                    // connection (GOAWAY) once no request holds one.
                    retired = true;
                    home.retire(shard, id);
                }
                polled
            });
            if let Err(e) = ended.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
            home.retire(shard, id);
        });
        Ok(Conn { id, sender, shared })
    }

    /// Removes connection `id` from `shard`'s list.
    fn retire(&self, shard: usize, id: u64) {
        self.lock(shard).conns.retain(|c| c.id != id);
    }
}

fn idle_too_long(shared: &Shared) -> bool {
    shared.streams.load(Ordering::Acquire) == 0
        && now_ms().saturating_sub(shared.idle_since.load(Ordering::Relaxed))
            >= IDLE_TIMEOUT.as_millis() as u64
}

/// Whether the upstream declined the stream without processing it, so that
/// sending it again cannot do anything twice: `REFUSED_STREAM`, or a
/// `GOAWAY` whose last stream came before it (RFC 9113 §8.7).
fn refused_unprocessed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
        }
        source = s.source();
    }
    false
}
