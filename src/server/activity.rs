//! What a client connection is doing: when bytes last moved each way and
//! how many of its requests are still being answered. The listener uses it
//! to close idle connections and to decide when a quiet HTTP/1.1 connection
//! may be parked (see `http1.rs`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Shared between a connection's task, its stream and its in-flight requests.
#[derive(Clone)]
pub struct Activity(Arc<State>);

struct State {
    start: Instant,
    /// Milliseconds since `start` of the last read and the last write.
    read_ms: AtomicU64,
    write_ms: AtomicU64,
    /// Requests whose response body has not been dropped yet.
    busy: AtomicUsize,
    /// Requests whose answer has not begun (waiting on the upstream): a
    /// connection is never idled out under them (`forward.timeout` bounds
    /// that wait instead).
    awaiting: AtomicUsize,
    /// Requests received over the connection's life.
    requests: AtomicU64,
    /// Set when a read found nothing while the connection was at rest.
    waiting: AtomicBool,
}

impl Activity {
    pub fn new() -> Self {
        Self(Arc::new(State {
            start: Instant::now(),
            read_ms: AtomicU64::new(0),
            write_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.0.start.elapsed().as_millis() as u64
    }

    fn read(&self) {
        self.0.read_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.0.write_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since bytes last moved either way.
    pub fn idle_for(&self) -> Duration {
        let last = self
            .0
            .read_ms
            .load(Ordering::Relaxed)
            .max(self.0.write_ms.load(Ordering::Relaxed));
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Marks a request as waiting for its answer until the guard drops;
    /// counts it among the connection's requests.
    pub fn awaiting(&self) -> Awaiting {
        self.0.awaiting.fetch_add(1, Ordering::Relaxed);
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        Awaiting(self.clone())
    }

    /// Whether the connection may be closed as idle: no bytes moved for
    /// `idle` and no request waiting on its upstream. A response body that
    /// moves no bytes for `idle` (a client with a zero window) is no
    /// protection: its connection is closed, and its upstream freed.
    pub fn idled_out(&self, idle: Duration) -> bool {
        !idle.is_zero() && self.idle_for() >= idle && self.0.awaiting.load(Ordering::Relaxed) == 0
    }

    /// True once the connection has sent a request.
    pub fn any_request(&self) -> bool {
        self.0.requests.load(Ordering::Relaxed) > 0
    }

    /// Time since the connection was accepted.
    pub fn age(&self) -> Duration {
        self.0.start.elapsed()
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// True when nothing is in flight and no bytes arrived since the last
    /// answer (no request head half-read).
    fn resting(&self) -> bool {
        self.0.busy.load(Ordering::Relaxed) == 0
            && self.0.read_ms.load(Ordering::Relaxed) <= self.0.write_ms.load(Ordering::Relaxed)
    }

    /// Resting, and nothing moved for `quiet`.
    pub fn at_rest(&self, quiet: Duration) -> bool {
        self.resting() && self.idle_for() >= quiet
    }

    /// When the connection last wrote, in ms since it opened: tells one
    /// rest period from the next.
    pub fn last_write(&self) -> u64 {
        self.0.write_ms.load(Ordering::Relaxed)
    }

    /// True (once) if, since the last call, a read found the socket empty
    /// while the connection was at rest: its server is waiting for the next
    /// request at a message boundary.
    pub fn take_waiting(&self) -> bool {
        self.0.waiting.swap(false, Ordering::Relaxed)
    }
}

/// An in-flight request (see [`Activity::busy`]).
pub struct Busy(Activity);

/// A request whose answer has not begun; see [`Activity::awaiting`].
pub struct Awaiting(Activity);

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.0.awaiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that records activity on every read and write.
pub struct Tracked {
    pub inner: TcpStream,
    pub activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        } else if r.is_pending() && self.activity.resting() {
            self.activity.0.waiting.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
