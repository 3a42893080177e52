//! The listeners beside the proxy (admin, decisions): plain HTTP/1.1 and
//! cleartext HTTP/2 through hyper-util, at most `limit` connections at once
//! (more wait in the listen backlog), each sending its first bytes and
//! every request head within the proxy's `server.header_read_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::gateway::Gateway;

/// Serves `listener` until the task is dropped; `service` makes the hyper
/// service of one connection from its peer's address.
pub(crate) async fn serve<S, B>(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    limit: usize,
    service: impl Fn(SocketAddr) -> S + Send + Sync + 'static,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let service = Arc::new(service);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let read_timeout = gateway.runtime().config.server.header_read_timeout;
        let service = service.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A connection that never sends a byte (or an HTTP/2 preface
            // and nothing else) is closed after the same time.
            let mut byte = [0u8; 1];
            let first = tokio::time::timeout(read_timeout, tcp.peek(&mut byte)).await;
            if !matches!(first, Ok(Ok(1..))) {
                return;
            }
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout);
            let _ = builder
                .serve_connection(TokioIo::new(tcp), service(peer))
                .await;
        });
    }
}
