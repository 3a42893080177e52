//! The proxy listener: accept under `max_connections`, optional TLS
//! handshake (bounded by `header_read_timeout`), HTTP/1.1 and HTTP/2 on one
//! port, idle connections closed after `idle_timeout`, graceful drain on stop.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::gateway::Gateway;
use crate::proxy::headers::ClientInfo;

/// Runs the accept loop until `stop` turns true, then waits (at most the
/// configured drain time) for in-flight connections to finish.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let server = gateway.runtime().config.server.clone();
    let max = server.max_connections.min(Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    loop {
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
        let gateway = gateway.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(gateway, tcp, peer.ip(), stop).await;
            drop(permit);
        });
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
}

async fn connection(
    gateway: Arc<Gateway>,
    tcp: TcpStream,
    ip: std::net::IpAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let runtime = gateway.runtime();
    let server = runtime.config.server.clone();
    let activity = Activity::new();
    let io = Tracked {
        inner: tcp,
        activity: activity.clone(),
    };
    match runtime.tls_acceptor() {
        None => {
            let client = ClientInfo::new(ip, false);
            serve_http(gateway, TokioIo::new(io), client, &server, activity, stop).await;
        }
        Some(acceptor) => {
            drop(runtime);
            match tokio::time::timeout(server.header_read_timeout, acceptor.accept(io)).await {
                Ok(Ok(stream)) => {
                    let client = ClientInfo::new(ip, true);
                    serve_http(
                        gateway,
                        TokioIo::new(stream),
                        client,
                        &server,
                        activity,
                        stop,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<I>(
    gateway: Arc<Gateway>,
    io: I,
    client: ClientInfo,
    server: &crate::config::ServerConfig,
    activity: Activity,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(server.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let service = service_fn(move |req| {
        let (gateway, client) = (gateway.clone(), client.clone());
        async move { Ok::<_, Infallible>(gateway.handle(req, client).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = server.idle_timeout;
    let mut draining = false;
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
            _ = tokio::time::sleep(idle / 4), if !idle.is_zero() => {
                if activity.idle_for() >= idle {
                    tracing::debug!("closing idle connection");
                    return;
                }
            }
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Last time bytes moved on a connection.
#[derive(Clone)]
struct Activity(Arc<AtomicU64>, Instant);

impl Activity {
    fn new() -> Self {
        Self(Arc::new(AtomicU64::new(0)), Instant::now())
    }
    fn touch(&self) {
        self.0
            .store(self.1.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.0.load(Ordering::Relaxed));
        self.1.elapsed().saturating_sub(last)
    }
}

/// A stream that records activity on every read and write.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
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
            self.activity.touch();
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
            self.activity.touch();
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
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
