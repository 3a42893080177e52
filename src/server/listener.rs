//! The proxy listener: accept under `max_connections`, optional TLS
//! handshake (bounded by `header_read_timeout`), HTTP/1.1 and HTTP/2 on one
//! port (ALPN over TLS, the connection preface in plain text), idle
//! connections closed after `idle_timeout`, graceful drain on stop.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::activity::{Activity, Busy, Tracked};
use super::http1::Prefixed;
use super::{http1, workers};
use crate::gateway::{Gateway, StreamSlot};
use crate::proxy::forward::UpgradeSlot;
use crate::proxy::{Body, headers::ClientInfo};
use crate::response::Refusal;

/// The HTTP/2 connection preface, which a plain-text HTTP/2 client (prior
/// knowledge) sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepts on `listener` until `stop` turns true, handing each connection
/// to the worker thread serving the fewest (Envoy's exact balance); then
/// waits (at most the configured drain time) for in-flight connections to
/// finish, and ends the workers. Accepting in one place costs a hand-off
/// per connection, not per request, and keeps the workers evenly loaded:
/// left to race each other for the listening socket, they split a client's
/// connections unevenly, and the busier one's p99 showed it.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let server = gateway.runtime().config.server.clone();
    let max = server.max_connections.min(Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    let (mut workers, ended) = start_workers(&gateway, &stop, server.workers);
    while !workers.is_empty() {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        if let Ok(tcp) = tcp.into_std() {
            let ip = peer.ip();
            hand_over(&mut workers, Handed { tcp, ip, permit });
        }
    }
    if workers.is_empty() {
        tracing::error!("no worker thread is running; not serving");
    }
    drop(listener);
    let drain = gateway.runtime().config.server.drain_timeout;
    tracing::info!(
        drain_s = drain.as_secs_f64(),
        "stopped accepting; draining connections"
    );
    match tokio::time::timeout(drain, slots.acquire_many(max)).await {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!(
            open = max as usize - slots.available_permits(),
            "drain time over; closing remaining connections"
        ),
    }
    // Closing the hand-off channels ends the workers.
    drop(workers);
    for done in ended {
        let _ = done.await;
    }
}

/// A worker thread as the acceptor sees it.
struct Worker {
    hand: mpsc::UnboundedSender<Handed>,
    /// Connections it is serving: the acceptor counts them in, the worker
    /// counts them out.
    load: Arc<AtomicUsize>,
}

/// Starts `count` workers, each serving what it is handed; also returns
/// what reports each one's end.
fn start_workers(
    gateway: &Arc<Gateway>,
    stop: &watch::Receiver<bool>,
    count: usize,
) -> (Vec<Worker>, Vec<oneshot::Receiver<()>>) {
    let (mut workers, mut ended) = (Vec::new(), Vec::new());
    for index in 0..count {
        let (hand, accepted) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let load = Arc::new(AtomicUsize::new(0));
        let (gateway, stop, counted) = (gateway.clone(), stop.clone(), load.clone());
        let work = move || serve_handed(gateway, accepted, counted, stop);
        match workers::spawn(index, work, done_tx) {
            Ok(()) => {
                workers.push(Worker { hand, load });
                ended.push(done_rx);
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot start a worker"),
        }
    }
    (workers, ended)
}

/// Gives `handed` to the least busy worker. One whose thread is gone (it
/// could not start its runtime) is dropped from the list and the next tried.
fn hand_over(workers: &mut Vec<Worker>, mut handed: Handed) {
    while let Some(i) = (0..workers.len()).min_by_key(|i| workers[*i].load.load(Ordering::Relaxed))
    {
        let w = &workers[i];
        w.load.fetch_add(1, Ordering::Relaxed);
        match w.hand.send(handed) {
            Ok(()) => return,
            Err(mpsc::error::SendError(back)) => {
                tracing::error!("a worker thread is gone; serving on the others");
                workers.swap_remove(i);
                handed = back;
            }
        }
    }
}

/// An accepted connection on its way to a worker.
struct Handed {
    tcp: std::net::TcpStream,
    ip: std::net::IpAddr,
    /// Its place under `max_connections`, held until it closes.
    permit: OwnedSemaphorePermit,
}

/// One worker: serves each connection handed to it, on this thread, until
/// the acceptor closes the channel.
async fn serve_handed(
    gateway: Arc<Gateway>,
    mut accepted: mpsc::UnboundedReceiver<Handed>,
    load: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
) {
    while let Some(handed) = accepted.recv().await {
        let Ok(tcp) = TcpStream::from_std(handed.tcp) else {
            load.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        let (gateway, stop, load) = (gateway.clone(), stop.clone(), load.clone());
        tokio::spawn(async move {
            connection(gateway, tcp, handed.ip, stop).await;
            load.fetch_sub(1, Ordering::Relaxed);
            drop(handed.permit);
        });
    }
}

/// One client connection. The task's own future stays small (a parked
/// connection holds little more than it): the TLS and HTTP/2 paths, which
/// are large, are boxed.
async fn connection(
    gateway: Arc<Gateway>,
    tcp: TcpStream,
    ip: std::net::IpAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let runtime = gateway.runtime();
    let server = runtime.config.server.clone();
    let Some(acceptor) = runtime.tls_acceptor() else {
        drop(runtime);
        // Nothing is allocated for the connection until its first bytes
        // arrive, and those must come within `header_read_timeout`.
        let first = tokio::select! {
            sniffed = tokio::time::timeout(server.header_read_timeout, sniff_h2(&tcp)) => sniffed,
            _ = stopped(&mut stop) => return,
        };
        let activity = Activity::new();
        let client = ClientInfo::new(ip, false);
        let io = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        match first {
            Ok(Ok(Some((h2, prefix)))) => {
                let io = Prefixed { inner: io, prefix };
                if h2 {
                    Box::pin(serve_h2(gateway, io, client, &server, activity, stop)).await;
                } else {
                    http1::serve(gateway, io, client, &server, activity, stop).await;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {}
            Err(_) => tracing::debug!("no request within header_read_timeout"),
        }
        return;
    };
    drop(runtime);
    Box::pin(async move {
        let activity = Activity::new();
        let io = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        match tokio::time::timeout(server.header_read_timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => {
                let client = ClientInfo::new(ip, true);
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_h2(gateway, stream, client, &server, activity, stop).await;
                } else {
                    let io = Prefixed {
                        inner: stream,
                        prefix: Bytes::new(),
                    };
                    http1::serve(gateway, io, client, &server, activity, stop).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
    })
    .await;
}

/// Reads a plain connection's first bytes, just enough to tell: `true` for
/// the HTTP/2 preface, `false` for anything else (HTTP/1.1), with the bytes
/// read (the connection replays them); `None` when the client closed
/// without sending anything. A client sending the preface a byte at a time
/// is waited for by socket readiness, never by polling.
async fn sniff_h2(tcp: &TcpStream) -> std::io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        tcp.readable().await?;
        match tcp.try_read(&mut buf[n..]) {
            Ok(0) => return Ok(None),
            Ok(read) => n += read,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some((false, Bytes::copy_from_slice(&buf[..n]))));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((true, Bytes::copy_from_slice(&buf))));
        }
    }
}

async fn serve_h2<I>(
    gateway: Arc<Gateway>,
    io: I,
    client: ClientInfo,
    server: &crate::config::ServerConfig,
    activity: Activity,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(server.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256);
    // No keep-alive PINGs of our own: their PONGs would count as activity
    // and keep a client that sends nothing alive for good.
    let service = service(gateway, client, activity.clone(), None, true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = server.idle_timeout;
    let mut draining = false;
    let tick = [idle / 4, server.header_read_timeout / 4]
        .into_iter()
        .filter(|t| !t.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(1));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(tick) => {
                if activity.idled_out(idle) {
                    tracing::debug!("closing idle connection");
                    return;
                }
                if !activity.any_request() && activity.age() >= server.header_read_timeout {
                    tracing::debug!("no request within header_read_timeout");
                    return;
                }
            }
        }
    }
}

/// The future answering one request.
pub(super) type Reply =
    Pin<Box<dyn Future<Output = Result<Response<ConnBody>, Infallible>> + Send>>;

/// The service hyper calls for each request of one connection. The request
/// counts as in flight until its response body is dropped; an HTTP/1.1
/// upgrade request carries the connection's upgrade slot to the forwarder.
pub(super) fn service(
    gateway: Arc<Gateway>,
    client: ClientInfo,
    activity: Activity,
    upgrades: Option<UpgradeSlot>,
    http2: bool,
) -> impl Service<Request<Incoming>, Response = Response<ConnBody>, Error = Infallible, Future = Reply>
+ Clone
+ Send
+ Unpin
+ 'static {
    service_fn(move |mut req: Request<Incoming>| -> Reply {
        let busy = activity.busy();
        let awaiting = activity.awaiting();
        if let Some(slot) = &upgrades {
            if req.headers().contains_key(header::UPGRADE) {
                req.extensions_mut().insert(slot.clone());
            }
        }
        let (gateway, client) = (gateway.clone(), client.clone());
        // Boxed: parking polls hyper with `poll_without_shutdown`, which
        // wants an `Unpin` future.
        Box::pin(async move {
            let slot = if http2 {
                match gateway.stream_slot() {
                    Some(slot) => Some(slot),
                    None => {
                        return Ok(too_many_streams().map(|inner| ConnBody {
                            inner,
                            _busy: busy,
                            _slot: None,
                        }));
                    }
                }
            } else {
                None
            };
            let response = gateway.handle(req, client).await;
            drop(awaiting);
            Ok(response.map(|inner| ConnBody {
                inner,
                _busy: busy,
                _slot: slot,
            }))
        })
    })
}

/// 503 for an HTTP/2 request past the process's stream total.
fn too_many_streams() -> Response<Body> {
    crate::response::refuse(
        Refusal::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "the gateway is serving as many HTTP/2 requests as it allows; retry shortly",
        )
        .retry_after(1),
    )
}

/// A response body that keeps its request counted as in flight (and, for
/// HTTP/2, its place in the process's stream total).
pub(super) struct ConnBody {
    inner: Body,
    _busy: Busy,
    _slot: Option<StreamSlot>,
}

impl http_body::Body for ConnBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }
    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
