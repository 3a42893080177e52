//! No client exhausts shared resources (CONTRACT §8.1b): a few HTTP/2
//! clients opening hundreds of streams against a slow upstream are held to
//! the destination's connection cap, the rest get 503 `upstream_busy`,
//! and another client is served meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{TestGateway, Upstream};

/// An upstream that answers every request after `delay`, counting the
/// connections it accepts.
async fn slow_upstream(delay: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"slow")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// Opens `connections` HTTP/2 connections to `gateway` and sends `streams`
/// GETs of `path` on each at once; each task yields the status, whether
/// `Retry-After` came with it, and the body.
async fn h2_flood(
    gateway: std::net::SocketAddr,
    connections: usize,
    streams: usize,
    path: &'static str,
) -> Vec<tokio::task::JoinHandle<(u16, bool, String)>> {
    let mut flood = Vec::new();
    for _ in 0..connections {
        let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        for _ in 0..streams {
            let client = client.clone();
            flood.push(tokio::spawn(async move {
                let mut client = client.ready().await.unwrap();
                let req = http::Request::builder()
                    .uri(format!("http://gateway.test{path}"))
                    .body(())
                    .unwrap();
                let (response, _) = client.send_request(req, true).unwrap();
                let response = response.await.unwrap();
                let (status, retry) = (
                    response.status().as_u16(),
                    response.headers().contains_key("retry-after"),
                );
                let mut body = response.into_body();
                let mut text = Vec::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                    text.extend_from_slice(&chunk);
                }
                (status, retry, String::from_utf8_lossy(&text).into_owned())
            }));
        }
    }
    flood
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test]
async fn http2_stream_floods_are_held_to_the_upstream_connection_cap() {
    let (slow, accepted) = slow_upstream(Duration::from_millis(1500)).await;
    let other = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        r#"
server: {{ listen: "127.0.0.1:0", workers: 1 }}
routes:
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: "http://{slow}"
    auth: public
    forward: {{ max_connections: 16, connect_timeout: 500ms }}
  - name: other
    match: {{ path_prefix: /other }}
    upstream: "{other}"
    auth: public
"#,
        other = other.url()
    ))
    .await;
    let before = open_descriptors();
    let flood = h2_flood(gw.running.proxy_addr, 4, 100, "/slow").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = open_descriptors();
    // Another client is served while the flood waits.
    let started = std::time::Instant::now();
    let r = reqwest::get(format!("{}/other/x", gw.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    let mut ok = 0;
    let mut busy = 0;
    for task in flood {
        match task.await.unwrap() {
            (200, _, _) => ok += 1,
            (503, true, _) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let connections = accepted.load(Ordering::SeqCst);
    eprintln!(
        "flood: {ok} answered, {busy} upstream_busy, {connections} upstream connections, descriptors {before} -> {during}"
    );
    // Each upstream connection is one descriptor of the gateway's; the
    // process-wide count (printed) also holds every other test's sockets.
    assert!(connections <= 16, "{connections} upstream connections");
    assert_eq!(ok + busy, 400);
    assert!(busy > 0 && ok >= 16, "{ok} ok, {busy} busy");
    assert!(
        gw.metrics()
            .await
            .contains(r#"authgate_requests_total{route="slow",status="503"}"#)
    );
}

#[tokio::test]
async fn http2_streams_are_capped_in_total_not_only_per_connection() {
    // Few upstream connections (the requests past them wait in the pool,
    // still holding their stream places), so the test fits a machine with
    // 1024 descriptors.
    let (slow, accepted) = slow_upstream(Duration::from_millis(2000)).await;
    let gw = TestGateway::start(&format!(
        r#"
server: {{ listen: "127.0.0.1:0", workers: 1, max_connections: 4 }}
routes:
  - name: slow
    match: {{ path_prefix: / }}
    upstream: "http://{slow}"
    auth: public
    forward: {{ max_connections: 16, connect_timeout: 5s }}
"#
    ))
    .await;
    let flood = h2_flood(gw.running.proxy_addr, 2, 200, "/slow").await;
    let mut too_many = 0;
    for task in flood {
        let (status, retry_after, body) = task.await.unwrap();
        if body.contains("too_many_streams") {
            assert_eq!((status, retry_after), (503, true));
            too_many += 1;
        }
    }
    // 256 places in all (max(max_connections, 256)): the other 144 are
    // refused at once.
    assert_eq!(too_many, 144, "refused past the stream total");
    assert!(
        gw.metrics()
            .await
            .contains(r#"authgate_requests_total{route="(none)",status="503"} 144"#),
        "each refusal is counted"
    );
    assert!(accepted.load(Ordering::SeqCst) <= 16);
}
