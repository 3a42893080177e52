//! Timeouts on every protocol (CONTRACT §8.1b), through the real server:
//! HTTP/2 connections that never ask, partial prefaces, requests waiting on
//! a slow upstream, and upgraded tunnels that go quiet.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestGateway, Upstream, raw};

async fn gateway(up: &Upstream, server: &str) -> TestGateway {
    TestGateway::start(&format!(
        "server: {{ listen: \"127.0.0.1:0\", workers: 1, {server} }}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n    forward: {{ timeout: 10s }}\n",
        up.url()
    ))
    .await
}

/// Waits until the server closes `tcp` (reads to EOF or an error), at most `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, tcp.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn an_http2_connection_that_never_sends_a_request_is_closed() {
    let up = Upstream::spawn().await;
    let gw = gateway(&up, "header_read_timeout: 500ms, idle_timeout: 60s").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    // The preface and an empty SETTINGS frame, then nothing.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)).await,
        "closed after header_read_timeout, not idle_timeout"
    );
}

#[tokio::test]
async fn a_preface_sent_a_byte_at_a_time_is_read_and_served() {
    let up = Upstream::spawn().await;
    let gw = gateway(&up, "header_read_timeout: 5s").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for byte in preface {
        tcp.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rest through a real HTTP/2 client, on the same socket.
    let (mut client, conn) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(SkipPreface::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://gateway.test/x")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(up.count(), 1);
}

/// A socket whose first 24 written bytes (the client preface, already
/// sent by hand) are swallowed.
struct SkipPreface {
    inner: tokio::net::TcpStream,
    skip: usize,
}

impl SkipPreface {
    fn new(inner: tokio::net::TcpStream) -> Self {
        Self { inner, skip: 24 }
    }
}

impl tokio::io::AsyncRead for SkipPreface {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SkipPreface {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_request_waiting_on_a_slow_upstream_outlives_idle_timeout() {
    let up = Upstream::spawn().await;
    let gw = gateway(&up, "idle_timeout: 1s").await;
    let r = raw::get(gw.running.proxy_addr, "/slow?delay_ms=2500", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    // And over HTTP/2.
    let tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://gateway.test/slow?delay_ms=2500")
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(req, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_upgraded_tunnel_that_goes_quiet_is_closed() {
    let up = Upstream::spawn().await;
    let gw = gateway(&up, "idle_timeout: 1s").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    raw::upgrade_and_echo(&mut tcp, Duration::from_millis(300)).await;
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)).await,
        "a quiet tunnel closes after idle_timeout"
    );
}

#[tokio::test]
async fn a_client_with_a_zero_window_does_not_hold_an_upstream_connection_for_good() {
    // An upstream answering 1 MiB, counting connections that ended.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = ended.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; 1 << 20])),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    let gw = TestGateway::start(&format!(
        "server: {{ listen: \"127.0.0.1:0\", workers: 1, idle_timeout: 1s }}\nroutes:\n  - name: big\n    match: {{ path_prefix: / }}\n    upstream: \"http://{addr}\"\n    auth: public\n"
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let (mut client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://gateway.test/big")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    // The client never opens its window: no byte moves, and after
    // idle_timeout the gateway lets go of the connection and the upstream.
    crate::support::eventually("the upstream connection to be released", async || {
        ended.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
}
