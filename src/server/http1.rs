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

use super::Limits;
use super::activity::{Activity, Tracked};
use super::service::service;
use super::shutdown::{stop_pending, stopped};
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
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Whether the transport can be parked at all.
    fn can_park(&self) -> bool;
    /// Whether waiting for socket readiness is enough to resume it now:
    /// nothing read from the socket is still buffered above it.
    fn at_rest(&self) -> bool {
        true
    }
    /// Gives back what it holds only while busy (called when parked).
    fn rest(&mut self) {}
    /// Ready when bytes (or EOF) can be read. A poll rather than tokio's
    /// `readable()` future, which would put its 152-byte waiter in every
    /// parked connection's future.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Parkable for Tracked {
    fn can_park(&self) -> bool {
        true
    }
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
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
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_readable(cx)
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
/// out, or the gateway stops; `done` is dropped then. The caller spawns it
/// as a task of its own (`connection.rs`), so what a long-lived connection
/// holds is this future alone, not the accept path's state around it.
///
/// A function returning an `async move` block rather than an `async fn`:
/// an async fn's future keeps its arguments twice (as passed, and as moved
/// into its body), and this future is most of what a parked connection's
/// task holds.
#[allow(clippy::manual_async_fn)]
pub fn serve_http1<I: Parkable>(
    gateway: Arc<Gateway>,
    mut io: Prefixed<I>,
    client: ClientInfo,
    limits: Limits,
    activity: Activity,
    mut stop: watch::Receiver<bool>,
    done: impl Send + 'static,
) -> impl Future<Output = ()> + Send {
    let conn = Http1 {
        park: io.inner.can_park(),
        gateway,
        client,
        activity,
        upgrades: UpgradeSlot::default(),
        limits,
    };
    async move {
        // Held where it was captured, not moved into a second slot; dropped
        // when the future is.
        let _done = &done;
        // One timer per connection: the idle-timeout check every tick,
        // brought forward to park a connection whose server went waiting.
        let timer = tokio::time::sleep(conn.tick());
        tokio::pin!(timer);
        loop {
            if conn.park && io.prefix.is_empty() && io.inner.at_rest() {
                io.inner.rest();
                let Some(stopping) = stop_pending(&mut stop) else {
                    return;
                };
                tokio::pin!(stopping);
                let parked = std::future::poll_fn(|cx| {
                    conn.poll_parked(&io.inner, stopping.as_mut(), timer.as_mut(), cx)
                });
                if !parked.await {
                    return;
                }
            }
            // Boxed: hyper's connection and the future driving it take
            // room only while the connection is busy, none in a parked
            // one's task.
            let run = Box::pin(conn.run(io, &mut stop, timer.as_mut()));
            let Some((back, ended)) = run.await else {
                return;
            };
            io = back;
            if let Some(upstream) = conn.upgrades.take() {
                // Boxed: rare, and no room for it in every connection's
                // future.
                let idle = conn.limits.idle_timeout;
                Box::pin(splice(io, upstream, &conn.activity, idle)).await;
                return;
            }
            if matches!(ended, Ended::Done) {
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}

/// What every run of hyper over one connection shares.
struct Http1 {
    gateway: Arc<Gateway>,
    client: ClientInfo,
    activity: Activity,
    /// Where the forwarder leaves an upgraded upstream for [`splice`].
    upgrades: UpgradeSlot,
    limits: Limits,
    /// Whether the transport can be parked.
    park: bool,
}

impl Http1 {
    /// The connection timer's period (not a field: every byte of this
    /// struct is in every parked connection's task).
    fn tick(&self) -> Duration {
        tick(self.limits.idle_timeout)
    }

    /// One run of hyper over the connection, from its next request until
    /// it is parked or ends: the socket back, with whatever hyper read
    /// ahead of a request, unless it is to be dropped.
    async fn run<I: Parkable>(
        &self,
        io: Prefixed<I>,
        stop: &mut watch::Receiver<bool>,
        timer: Pin<&mut tokio::time::Sleep>,
    ) -> Option<(Prefixed<I>, Ended)> {
        let service = service(
            self.gateway.clone(),
            self.client.clone(),
            self.activity.clone(),
            Some(self.upgrades.clone()),
            false,
        );
        let mut conn = builder(self.limits).serve_connection(TokioIo::new(io), service);
        self.activity.take_waiting();
        let ended = self.drive(&mut conn, stop, timer).await;
        if matches!(ended, Ended::Dropped) {
            return None;
        }
        let parts = conn.into_parts();
        let mut io = parts.io.into_inner();
        if !parts.read_buf.is_empty() {
            io.prefix = parts.read_buf;
        }
        Some((io, ended))
    }

    /// Runs hyper over the connection until it stops at a message boundary
    /// we asked for (park), ends, idles out, or the gateway stops.
    async fn drive<I, S>(
        &self,
        conn: &mut http1::Connection<TokioIo<Prefixed<I>>, S>,
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
        let (park, activity, idle) = (self.park, &self.activity, self.limits.idle_timeout);
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
                    Pin::new(&mut *conn).graceful_shutdown();
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
                        Pin::new(&mut *conn).graceful_shutdown();
                    }
                    timer.as_mut().reset(Instant::now() + self.tick());
                }
            }
        }
    }

    /// Parked: holds only the socket until the client speaks again. Ready
    /// with false when the connection should end instead (closed, idle, or
    /// the gateway stops). A poll written out rather than `select!` in an
    /// async fn, whose state (with `stopped`'s) was 264 bytes of every
    /// parked connection's task.
    fn poll_parked<I: Parkable>(
        &self,
        io: &I,
        stopping: Pin<&mut impl Future>,
        mut timer: Pin<&mut tokio::time::Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<bool> {
        if let Poll::Ready(r) = io.poll_readable(cx) {
            return Poll::Ready(r.is_ok());
        }
        if stopping.poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if self.activity.idled_out(self.limits.idle_timeout) {
                tracing::debug!("closing idle connection");
                return Poll::Ready(false);
            }
            timer.as_mut().reset(Instant::now() + self.tick());
        }
        Poll::Pending
    }
}

/// hyper's HTTP/1.1 server as every client connection uses it.
fn builder(limits: Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}

/// How often a connection idle for up to `idle` is checked.
fn tick(idle: Duration) -> Duration {
    if idle.is_zero() {
        Duration::from_secs(3600)
    } else {
        idle / 4
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
    let tick = tick(idle);
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
