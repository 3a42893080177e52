//! The proxy foundation through the real server: forwarding and header
//! rewrites, routing and path normalisation, errors from upstreams, TLS and
//! HTTP/2, limits, streaming, WebSocket.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::tls::TestPki;
use crate::support::{TestGateway, Upstream, raw};

fn public_routes(up: &Upstream) -> String {
    format!(
        r#"
routes:
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: "{up}"
    auth: {{ issuers: [idp], audiences: [api] }}
  - name: orders
    match: {{ path_prefix: /orders, methods: [GET, POST, PUT] }}
    upstream: "{up}"
    auth: public
  - name: public
    match: {{ path_prefix: /public }}
    upstream: "{up}"
    auth: public
issuers:
  idp:
    issuer: "http://127.0.0.1:9"
    jwks_uri: "http://127.0.0.1:9/jwks.json"
    algorithms: [ES256]
"#,
        up = up.url()
    )
}

/// Public routes beside a protected `/admin` whose issuer is never reachable
/// (requests without a token are refused before any key is needed).
async fn gateway(up: &Upstream) -> TestGateway {
    TestGateway::start_unready(&public_routes(up), std::path::Path::new(".")).await
}

async fn started(up: &Upstream, extra: &str) -> TestGateway {
    let yaml = format!(
        "{extra}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    );
    TestGateway::start(&yaml).await
}

#[tokio::test]
async fn public_routes_forward_with_forwarding_headers_and_without_spoofed_identity() {
    let up = Upstream::spawn().await;
    let gw = started(&up, "").await;
    let r = raw::get(
        gw.running.proxy_addr,
        "/public/a?x=1&y=%20",
        &[
            ("X-Auth-Subject", "admin"),
            ("x-auth-roles", "root"),
            ("Connection", "x-hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic eA=="),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Request-Id", "req-42"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &up.seen()[0];
    assert_eq!(seen.uri, "/public/a?x=1&y=%20");
    let h = &seen.headers;
    for gone in [
        "x-auth-subject",
        "x-auth-roles",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not reach the upstream");
    }
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "gateway.test");
    assert_eq!(h["x-request-id"], "req-42");
    assert_eq!(h["host"], up.addr.to_string().as_str());
}

#[tokio::test]
async fn unmatched_requests_get_404_and_never_reach_the_upstream() {
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - name: orders\n    match: {{ path_prefix: /orders, methods: [GET] }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    ))
    .await;
    for path in ["/ordersx", "/Orders", "/other", "/"] {
        assert_eq!(
            raw::get(gw.running.proxy_addr, path, &[]).await.status,
            404,
            "{path}"
        );
    }
    let post = reqwest::Client::new()
        .post(format!("{}/orders", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    assert_eq!(
        raw::get(gw.running.proxy_addr, "/orders/7", &[])
            .await
            .status,
        200
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn path_tricks_never_reach_a_protected_route_through_a_public_one() {
    let up = Upstream::spawn().await;
    let gw = gateway(&up).await;
    let addr = gw.running.proxy_addr;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/..;/admin",
        "/public/./../admin",
        "/public%2F..%2Fadmin",
        "/public%2fadmin",
        "/public/%5C../admin",
        "/public/%00/admin",
        "/public/%zz",
    ] {
        let r = raw::get(addr, path, &[]).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    // Merged slashes and decoded unreserved characters land on the real route.
    for path in ["//admin", "/%61dmin", "/admin//x"] {
        let r = raw::get(addr, path, &[]).await;
        assert_eq!(r.status, 401, "{path} must be treated as /admin: {r:?}");
    }
    assert_eq!(up.count(), 0);
    let r = raw::get(addr, "/public//a/%7Eb", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        up.seen()[0].uri,
        "/public/a/~b",
        "the normalised path is what is forwarded"
    );
}

#[tokio::test]
async fn protected_routes_without_a_token_get_401_and_forward_nothing() {
    let up = Upstream::spawn().await;
    let gw = gateway(&up).await;
    let r = raw::get(
        gw.running.proxy_addr,
        "/admin/users",
        &[("X-Auth-Subject", "root")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        r#"Bearer realm="authgate""#
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_refused_upstream_is_502_and_a_silent_one_504() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gw = TestGateway::start(&format!(
        r#"
routes:
  - name: refused
    match: {{ path: /refused }}
    upstream: "http://{closed_addr}"
    auth: public
  - name: silent
    match: {{ path: /silent }}
    upstream: "http://{silent_addr}"
    auth: public
    forward: {{ timeout: 300ms }}
"#
    ))
    .await;
    let r = raw::get(gw.running.proxy_addr, "/refused", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.body,
        r#"{"error":"bad_gateway","error_description":"the upstream service is unavailable"}"#
    );
    let r = raw::get(gw.running.proxy_addr, "/silent", &[]).await;
    assert_eq!(r.status, 504);
    assert!(r.body.contains("gateway_timeout"));
    hold.abort();
}

#[tokio::test]
async fn tls_serves_http1_and_http2_by_alpn() {
    let pki = TestPki::new();
    let up = Upstream::spawn().await;
    let gw = TestGateway::start_in(
        &format!(
            r#"
server:
  listen: "127.0.0.1:0"
  tls: {{ cert_file: server.crt, key_file: server.key }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: "{}"
    auth: public
"#,
            up.url()
        ),
        &pki.dir,
    )
    .await;
    let url = format!("https://localhost:{}/x", gw.running.proxy_addr.port());
    let h2 = pki.client(true).get(&url).send().await.unwrap();
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h1 = pki.client(false).get(&url).send().await.unwrap();
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(up.seen()[0].headers["x-forwarded-proto"], "https");
    // A client that does not trust the CA fails the handshake.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_the_plain_port() {
    let up = Upstream::spawn().await;
    let gw = started(&up, "").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(format!("{}/x", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(up.seen()[0].headers["host"], up.addr.to_string().as_str());
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let up = Upstream::spawn().await;
    let gw = started(
        &up,
        "server:\n  listen: \"127.0.0.1:0\"\n  max_header_bytes: 8192\n",
    )
    .await;
    let big = "a".repeat(9000);
    let r = raw::get(gw.running.proxy_addr, "/x", &[("X-Big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn slow_headers_are_cut_at_header_read_timeout() {
    let up = Upstream::spawn().await;
    let gw = started(
        &up,
        "server:\n  listen: \"127.0.0.1:0\"\n  header_read_timeout: 300ms\n",
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection must be closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn max_connections_holds_extra_connections_until_one_closes() {
    let up = Upstream::spawn().await;
    let gw = started(
        &up,
        "server:\n  listen: \"127.0.0.1:0\"\n  max_connections: 2\n",
    )
    .await;
    let a = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let _b = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(raw::get(gw.running.proxy_addr, "/x", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection must wait");
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let up = Upstream::spawn().await;
    let gw = started(
        &up,
        "server:\n  listen: \"127.0.0.1:0\"\n  idle_timeout: 400ms\n",
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection must be closed"
    );
}

fn rss_kib() -> u64 {
    crate::support::binary::proc_field("self", "status", "VmRSS")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_one_gib_upload_streams_in_constant_memory() {
    let up = Upstream::spawn().await;
    let gw = started(&up, "").await;
    const TOTAL: u64 = 1 << 30;
    const CHUNK: usize = 256 * 1024;
    let before = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Repeat>();
    let req = http::Request::put(format!("{}/upload", gw.url))
        .body(Repeat {
            chunk: bytes::Bytes::from(vec![7u8; CHUNK]),
            left: TOTAL,
        })
        .unwrap();
    let r = client.request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    sampler.abort();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_len"], TOTAL);
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!("1 GiB upload: RSS before {before} KiB, peak growth {grew} KiB");
    assert!(
        grew < 64 * 1024,
        "RSS grew by {grew} KiB while streaming 1 GiB"
    );
}

/// A request body of `left` bytes sent as repeated `chunk`s, never held whole.
struct Repeat {
    chunk: bytes::Bytes,
    left: u64,
}

impl http_body::Body for Repeat {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.left) as usize;
        self.left -= n as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }
}

#[tokio::test]
async fn websocket_upgrades_are_spliced_through() {
    let up = Upstream::spawn().await;
    let gw = started(&up, "").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    raw::upgrade_and_echo(&mut tcp, Duration::ZERO).await;
    let seen = &up.seen()[0];
    assert_eq!(seen.headers["upgrade"], "websocket");
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let pki = TestPki::new();
    let up = Upstream::spawn_tls(pki.acceptor()).await;
    let port = up.addr.port();
    let gw = TestGateway::start_in(
        &format!(
            r#"
routes:
  - name: trusted
    match: {{ path_prefix: /trusted }}
    upstream: "https://localhost:{port}"
    auth: public
    forward: {{ ca_file: ca.crt }}
  - name: untrusted
    match: {{ path_prefix: /untrusted }}
    upstream: "https://localhost:{port}"
    auth: public
"#
        ),
        &pki.dir,
    )
    .await;
    assert_eq!(
        raw::get(gw.running.proxy_addr, "/trusted/x", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        up.seen()[0].headers["host"],
        format!("localhost:{port}").as_str()
    );
    let r = raw::get(gw.running.proxy_addr, "/untrusted/x", &[]).await;
    assert_eq!(
        r.status, 502,
        "a certificate from an unknown CA must be refused"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn host_routes_match_the_host_header_case_and_port_aside() {
    let (api, other) = (Upstream::spawn().await, Upstream::spawn().await);
    let gw = TestGateway::start(&format!(
        r#"
routes:
  - name: api
    match: {{ host: api.example.com, path_prefix: / }}
    upstream: "{}"
    auth: public
  - name: rest
    match: {{ path_prefix: / }}
    upstream: "{}"
    auth: public
"#,
        api.url(),
        other.url()
    ))
    .await;
    let addr = gw.running.proxy_addr;
    let send = |host: &'static str| async move {
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        raw::send(addr, req.as_bytes()).await.status
    };
    assert_eq!(send("API.Example.com:8443").await, 200);
    assert_eq!(send("api.example.com.").await, 200);
    assert_eq!((api.count(), other.count()), (2, 0));
    assert_eq!(send("www.example.com").await, 200);
    assert_eq!((api.count(), other.count()), (2, 1));
}
