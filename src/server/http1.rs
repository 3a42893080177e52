//! HTTP/1.1 client connections, with parking.
//!
//! hyper keeps an 8 KiB read buffer, an 8 KiB write buffer, cached header
//! maps and its dispatcher state for as long as a connection lives, busy or
//! not: about 39 KiB per idle keep-alive connection, 400 MB for 10,000 of
//! them. So, much as nginx does with its keep-alive connections, a
//! plain-text connection is *parked* once hyper has waited [`PARK_AFTER`]
//! for the next request with nothing to read: hyper is told to stop at this
//! message boundary, hands the socket back without shutting it down, and is
//! dropped. The task then waits for the next bytes holding only the socket,
//! and starts a fresh hyper connection when they come. The client sees one
//! uninterrupted keep-alive connection.
//!
//! Because hyper is run without its own upgrade support (which would shut
//! the socket down), HTTP/1.1 upgrades are spliced here: the forwarder
//! leaves the upstream's side in the connection's [`UpgradeSlot`], and once
//! hyper has written the 101 and handed the socket back, the two are joined.
//!
//! TLS connections are parked the same way, rustls's session kept (keys
//! and sequence numbers must survive) and the TLS stream's buffers given
//! back (`tls_stream.rs`). A TLS connection is parked only when nothing
//! read from the socket is still buffered above it, since socket readiness
//! says nothing about those bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::server::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::activity::{Activity, Tracked};
use super::service::service;
use super::shutdown::stopped;
use super::tls_stream::TlsStream;
use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::proxy::headers::ClientInfo;
use crate::proxy::upgrade::UpgradeSlot;
use std::time::Duration;

/// How long hyper waits for a connection's next request before it is
/// parked. Short, so that a burst of new connections going quiet does not
/// pile up hyper state; long enough that a busy keep-alive connection is not
/// torn down between requests (that costs about 15 µs of CPU a request).
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// A client stream that may be parked between requests.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether the transport can be parked at all.
    fn can_park(&self) -> bool;
    /// Whether waiting for socket readiness is enough to resume it now:
    /// nothing read from the socket is still buffered above it.
    fn at_rest(&self) -> bool {
        true
    }
    /// Gives back what it holds only while busy (called when parked).
    fn rest(&mut self) {}
    /// Resolves when bytes (or EOF) can be read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Parkable for Tracked {
    fn can_park(&self) -> bool {
        true
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.readable()
    }
}

impl Parkable for TlsStream {
    fn can_park(&self) -> bool {
        true
    }
    fn at_rest(&self) -> bool {
        TlsStream::at_rest(self)
    }
    fn rest(&mut self) {
        TlsStream::rest(self)
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.tcp().readable()
    }
}

/// A boxed TLS stream: moved as a pointer through the states of the
/// connection's future instead of copied into each.
impl<T: Parkable> Parkable for Box<T> {
    fn can_park(&self) -> bool {
        (**self).can_park()
    }
    fn at_rest(&self) -> bool {
        (**self).at_rest()
    }
    fn rest(&mut self) {
        (**self).rest()
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        (**self).readable()
    }
}

/// How one run of hyper over the connection ended.
enum Ended {
    /// hyper stopped at a message boundary because we asked: park.
    Parked,
    /// hyper is done with the connection (close, upgrade, or drain).
    Done,
    /// Idle past `idle_timeout`, or hyper failed: drop the socket.
    Dropped,
}

/// Serves HTTP/1.1 on `io` until the client leaves, the connection idles
/// out, or the gateway stops.
pub async fn serve_http1<I: Parkable>(
    gateway: Arc<Gateway>,
    io: Prefixed<I>,
    client: ClientInfo,
    server: &ServerConfig,
    activity: Activity,
    mut stop: watch::Receiver<bool>,
) {
    let builder = builder(server);
    let idle = server.idle_timeout;
    let park = io.inner.can_park();
    // One timer per connection: the idle-timeout check every `tick`, brought
    // forward to park a connection whose server went waiting.
    let tick = if idle.is_zero() {
        Duration::from_secs(3600)
    } else {
        idle / 4
    };
    let timer = tokio::time::sleep(tick);
    tokio::pin!(timer);
    let upgrades = UpgradeSlot::default();
    let mut io = io;
    loop {
        if park && io.prefix.is_empty() && io.inner.at_rest() {
            io.inner.rest();
            if !wait_parked(&io.inner, &mut stop, timer.as_mut(), tick, &activity, idle).await {
                return;
            }
        }
        let service = service(
            gateway.clone(),
            client.clone(),
            activity.clone(),
            Some(upgrades.clone()),
            false,
        );
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service));
        activity.take_waiting();
        let ended = drive(
            &mut conn,
            park,
            tick,
            idle,
            &activity,
            &mut stop,
            timer.as_mut(),
        )
        .await;
        if matches!(ended, Ended::Dropped) {
            return;
        }
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        if !parts.read_buf.is_empty() {
            io.prefix = parts.read_buf;
        }
        if let Some(upstream) = upgrades.take() {
            // Boxed: rare, and no room for it in every connection's future.
            Box::pin(splice(io, upstream, &activity, idle)).await;
            return;
        }
        if matches!(ended, Ended::Done) {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// Runs hyper over the connection until it stops at a message boundary we
/// asked for (park), ends, idles out, or the gateway stops.
async fn drive<I, S>(
    conn: &mut Box<http1::Connection<TokioIo<Prefixed<I>>, S>>,
    park: bool,
    tick: Duration,
    idle: Duration,
    activity: &Activity,
    stop: &mut watch::Receiver<bool>,
    mut timer: Pin<&mut tokio::time::Sleep>,
) -> Ended
where
    I: Parkable,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = super::service::ConnBody>
        + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Unpin,
{
    let mut parking = false;
    let mut draining = false;
    // The rest period (by its last write) already timed for parking:
    // hyper polls its read again on every wake-up, and each finds the
    // socket empty, so only the first finding of a period counts.
    let mut noted = u64::MAX;
    loop {
        tokio::select! {
            biased;
            step = std::future::poll_fn(|cx| match conn.poll_without_shutdown(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending if park && activity.take_waiting() && activity.last_write() != noted => {
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            }) => match step {
                Some(Ok(())) if parking && !draining => return Ended::Parked,
                Some(Ok(())) => return Ended::Done,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "connection ended with an error");
                    return Ended::Dropped;
                }
                // hyper waits for the next request and the socket is
                // empty: park unless it comes within PARK_AFTER.
                None => {
                    noted = activity.last_write();
                    timer.as_mut().reset(Instant::now() + PARK_AFTER);
                }
            },
            _ = stopped(stop), if !draining => {
                draining = true;
                Pin::new(&mut **conn).graceful_shutdown();
            }
            _ = timer.as_mut() => {
                if activity.idled_out(idle) {
                    tracing::debug!("closing idle connection");
                    return Ended::Dropped;
                }
                if park && !parking && !draining && activity.at_rest(PARK_AFTER / 2) {
                    // At a message boundary hyper closes its side at
                    // once and hands the socket back untouched.
                    parking = true;
                    Pin::new(&mut **conn).graceful_shutdown();
                }
                timer.as_mut().reset(Instant::now() + tick);
            }
        }
    }
}

/// hyper's HTTP/1.1 server as every client connection uses it.
fn builder(server: &ServerConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}

/// Parked: holds only the socket until the client speaks again. False when
/// the connection should end instead (closed, idle, or the gateway stops).
async fn wait_parked<I: Parkable>(
    io: &I,
    stop: &mut watch::Receiver<bool>,
    mut timer: Pin<&mut tokio::time::Sleep>,
    tick: Duration,
    activity: &Activity,
    idle: Duration,
) -> bool {
    loop {
        tokio::select! {
            r = io.readable() => return r.is_ok(),
            _ = stopped(stop) => return false,
            _ = timer.as_mut() => {
                if activity.idled_out(idle) {
                    tracing::debug!("closing idle connection");
                    return false;
                }
                timer.as_mut().reset(Instant::now() + tick);
            }
        }
    }
}

/// Joins the client's socket with the upstream's once both have switched,
/// until either side closes or no byte crosses the client's side for
/// `idle` (a tunnel is a connection like any other).
async fn splice<I: Parkable>(
    mut client: Prefixed<I>,
    upstream: OnUpgrade,
    activity: &Activity,
    idle: Duration,
) {
    let Ok(upstream) = upstream.await else {
        tracing::debug!("upgrade abandoned before the upstream switched");
        return;
    };
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let tick = if idle.is_zero() {
        Duration::from_secs(3600)
    } else {
        idle / 4
    };
    loop {
        tokio::select! {
            ended = copy.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error.kind = ?e.kind(), "upgraded connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                if !idle.is_zero() && activity.idle_for() >= idle {
                    tracing::debug!("closing idle upgraded connection");
                    return;
                }
            }
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Prefixed<I> {
    /// The stream.
    pub inner: I,
    /// Bytes read from it that its reader has not seen yet.
    pub prefix: Bytes,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
