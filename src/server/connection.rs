//! One client connection, from accept to the protocol: its first bytes
//! within `header_read_timeout`, the TLS handshake (ALPN picks the
//! protocol) or, in plain text, the HTTP/2 preface read into the prefix
//! buffer; then HTTP/1.1 (`http1.rs`) or HTTP/2 (`http2.rs`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Limits;
use super::activity::{Activity, Tracked};
use super::http1::{self, Prefixed};
use super::http2;
use super::shutdown::stopped;
use super::tls_stream::TlsStream;
use crate::gateway::Gateway;
use crate::proxy::headers::{ClientCert, ClientInfo};

/// The HTTP/2 connection preface, which a plain-text HTTP/2 client (prior
/// knowledge) sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one client connection on its own task. `done` is dropped when
/// it ends, however it ends: it goes with the connection into its HTTP/1.1
/// task, or is dropped with the future that holds it. A plain and a TLS
/// connection get tasks of their own kinds, so neither's future holds room
/// for the other's: a task's future is as large as its largest state, for
/// as long as the connection lives, parked or not.
pub(super) fn spawn(
    gateway: Arc<Gateway>,
    tcp: TcpStream,
    ip: std::net::IpAddr,
    stop: watch::Receiver<bool>,
    done: impl Send + 'static,
) {
    let _ = tcp.set_nodelay(true);
    let runtime = gateway.runtime();
    let limits = Limits::of(&runtime.config.server);
    let tls = runtime.tls_config();
    drop(runtime);
    match tls {
        None => tokio::spawn(serve_plain(gateway, tcp, ip, limits, stop, done)),
        Some(tls) => tokio::spawn(serve_tls(gateway, tls, tcp, ip, limits, stop, done)),
    };
}

/// A plain-text connection: HTTP/1.1, or HTTP/2 by prior knowledge (its
/// future, large, boxed). Not an `async fn`, for the reason
/// `http1::serve_http1` is not. An HTTP/1.1 connection goes on in a task of
/// its own, so this future (the sniff's state, the arguments it was
/// spawned with) is not held for the connection's life.
#[allow(clippy::manual_async_fn)]
fn serve_plain(
    gateway: Arc<Gateway>,
    tcp: TcpStream,
    ip: std::net::IpAddr,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    done: impl Send + 'static,
) -> impl Future<Output = ()> + Send {
    async move {
        // Nothing is allocated for the connection until its first bytes
        // arrive, and those must come within `header_read_timeout`.
        // Boxed: the sniff's state (its timer among it) is needed once, and the
        // connection's future would otherwise keep room for it while parked.
        let sniff = Box::pin(tokio::time::timeout(
            limits.header_read_timeout,
            sniff_h2(&tcp),
        ));
        let first = tokio::select! {
            sniffed = sniff => sniffed,
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
                    Box::pin(http2::serve_http2(
                        gateway, io, client, limits, activity, stop,
                    ))
                    .await;
                } else {
                    tokio::spawn(http1::serve_http1(
                        gateway, io, client, limits, activity, stop, done,
                    ));
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {}
            Err(_) => tracing::debug!("no request within header_read_timeout"),
        }
    }
}

/// A TLS connection: the handshake, then HTTP/1.1 or HTTP/2 by ALPN. Not
/// an `async fn`, as `serve_plain` is not; HTTP/1.1 goes on in a task of
/// its own, as there.
#[allow(clippy::manual_async_fn)]
fn serve_tls(
    gateway: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    ip: std::net::IpAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
    done: impl Send + 'static,
) -> impl Future<Output = ()> + Send {
    async move {
        let activity = Activity::new();
        let io = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        let Some(stream) = handshake(tls, io, limits.header_read_timeout).await else {
            return;
        };
        let mut client = ClientInfo::new(ip, true);
        // rustls verified it against client_ca_file in the handshake.
        client.cert = stream
            .session()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Arc::new(ClientCert::from_der(leaf)));
        if stream.session().alpn_protocol() == Some(b"h2") {
            // Boxed: an HTTP/1.1 connection's future never holds room for an
            // HTTP/2 one (4.5 KiB).
            Box::pin(http2::serve_http2(
                gateway, stream, client, limits, activity, stop,
            ))
            .await;
        } else {
            let io = Prefixed {
                inner: stream,
                prefix: Bytes::new(),
            };
            tokio::spawn(http1::serve_http1(
                gateway, io, client, limits, activity, stop, done,
            ));
        }
    }
}

/// The TLS handshake, within `header_read_timeout`. The session comes back
/// boxed: moved as a pointer through the states of the connection's future
/// rather than copied into each (parked, driven, spliced), and, returned
/// from here, not held a second time by a `match` on the handshake's result
/// for as long as the connection lives. Those copies, with the room an
/// HTTP/2 future took (now boxed), were 11.5 KiB of the 19.8 a parked TLS
/// connection held.
async fn handshake(
    tls: Arc<rustls::ServerConfig>,
    io: Tracked,
    within: std::time::Duration,
) -> Option<Box<TlsStream>> {
    match tokio::time::timeout(within, TlsStream::accept(tls, io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
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
