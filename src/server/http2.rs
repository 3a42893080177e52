//! HTTP/2 client connections: stream limits, rapid-reset protection, the
//! idle rule (no PINGs of our own), drain.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::activity::Activity;
use super::service;
use super::shutdown::stopped;
use crate::gateway::Gateway;
use crate::proxy::headers::ClientInfo;

/// Serves HTTP/2 on `io` until the client leaves, the connection idles
/// out (or sends no request within `header_read_timeout`), or the gateway
/// stops.
pub(super) async fn serve_http2<I>(
    gateway: Arc<Gateway>,
    io: I,
    client: ClientInfo,
    limits: super::Limits,
    activity: Activity,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256);
    // No keep-alive PINGs of our own: their PONGs would count as activity
    // and keep a client that sends nothing alive for good.
    let service = service::service(gateway, client, activity.clone(), None, true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let mut draining = false;
    let tick = [idle / 4, limits.header_read_timeout / 4]
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
                if !activity.any_request() && activity.age() >= limits.header_read_timeout {
                    tracing::debug!("no request within header_read_timeout");
                    return;
                }
            }
        }
    }
}
