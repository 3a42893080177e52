//! gRPC and HTTP/2 upstreams (CONTRACT §8.2), through the real gateway to a
//! real tonic service: the four call shapes with trailers, gRPC-shaped
//! refusals, `grpc-timeout`, multiplexing on few upstream connections,
//! GOAWAY and refused streams, HTTP/2 over TLS with ALPN, and mixed
//! client/upstream protocols.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tonic::Code;

use crate::support::grpc::{EchoClient, GrpcUpstream, msg};
use crate::support::tls::TestPki;
use crate::support::{Signer, TestGateway, TestIssuer, Upstream};

struct Setup {
    gw: TestGateway,
    issuer: TestIssuer,
    signer: Signer,
    up: GrpcUpstream,
}

impl Setup {
    fn token(&self) -> String {
        self.signer.token("ES256", json!({}), &self.issuer.claims())
    }

    async fn client(&self) -> EchoClient {
        EchoClient::connect(&self.gw.url)
            .await
            .with_token(&self.token())
    }
}

/// A gateway with `/echo.Echo/*` protected (scope `read`) in front of an
/// h2c gRPC service, and `/echo.Admin/*` needing a scope nobody has.
async fn setup() -> Setup {
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let up = GrpcUpstream::spawn().await;
    let gw = TestGateway::start(&routes(&issuer, &up.h2c_url(), "")).await;
    Setup {
        gw,
        issuer,
        signer,
        up,
    }
}

fn routes(issuer: &TestIssuer, upstream: &str, forward: &str) -> String {
    format!(
        r#"
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
routes:
  - name: echo
    match: {{ path_prefix: /echo.Echo }}
    upstream: "{upstream}"
    auth: {{ issuers: [idp], scopes_all: [read] }}
    forward: {{ headers: {{ x-user: sub }}{forward} }}
  - name: admin
    match: {{ path_prefix: /echo.Admin }}
    upstream: "{upstream}"
    auth: {{ issuers: [idp], scopes_all: [admin] }}
"#,
        iss = issuer.url
    )
}

#[tokio::test]
async fn unary_calls_reach_an_h2c_upstream_with_identity_and_without_the_token() {
    let s = setup().await;
    let mut client = s.client().await;
    let reply = client.unary("hello").await.unwrap();
    assert_eq!(reply.get_ref().text, "hello");
    // The identity header reached the service (it echoes it as metadata).
    assert_eq!(reply.metadata().get("x-seen-user").unwrap(), "alice");
    let seen = s.up.seen();
    let h = seen.last().unwrap();
    assert!(h.get("authorization").is_none(), "{h:?}");
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["content-type"], "application/grpc");
    // An upstream's own error status and trailing metadata pass unchanged.
    let err = client.unary("fail:9").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "upstream says no");
    assert_eq!(err.metadata().get("x-why").unwrap(), "upstream");
}

#[tokio::test]
async fn streaming_calls_pass_every_message_and_the_trailers() {
    let s = setup().await;
    let mut client = s.client().await;

    let mut stream = client.server_stream("tick").await.unwrap();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, ["tick#0", "tick#1", "tick#2"]);

    // Trailers after messages: the status and metadata of the upstream.
    let mut stream = client.server_stream("fail").await.unwrap();
    for _ in 0..3 {
        assert!(stream.message().await.unwrap().is_some());
    }
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "stopped after three");
    assert_eq!(err.metadata().get("x-why").unwrap(), "after-three");

    let items = futures_util::stream::iter(["a", "b", "c"].map(msg));
    assert_eq!(client.client_stream(items).await.unwrap().text, "a,b,c");
}

#[tokio::test]
async fn bidirectional_calls_stream_each_reply_before_the_next_request() {
    let s = setup().await;
    let mut client = s.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    // Each request is sent only after the reply to the one before: a
    // gateway that buffered either direction would hang here.
    for word in ["one", "two", "three"] {
        tx.send(msg(word)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .unwrap_or_else(|_| panic!("no reply to {word} before the next request"))
            .unwrap()
            .unwrap();
        assert_eq!(reply.text, word.to_uppercase());
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
}

#[tokio::test]
async fn gateway_refusals_are_grpc_statuses_a_tonic_client_understands() {
    let s = setup().await;
    let anonymous = EchoClient::connect(&s.gw.url).await;

    let err = anonymous.clone().unary("x").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.metadata()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "{err:?}"
    );

    let err = anonymous
        .clone()
        .with_token("not.a.token")
        .unary("x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Scope `admin` missing: 403 → PERMISSION_DENIED.
    let token = s.token();
    let channel = tonic::transport::Endpoint::from_shared(s.gw.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async |grpc: &mut tonic::client::Grpc<_>, path: &'static str| {
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(msg("x"));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        grpc.unary::<_, crate::support::grpc::Msg, _>(
            req,
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await
    };
    let err = call(&mut grpc, "/echo.Admin/Unary").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // No route: 404 → UNIMPLEMENTED.
    let err = call(&mut grpc, "/other.Service/Call").await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert_eq!(err.message(), "no route matches this request");
    // No upstream service never reached.
    assert!(s.up.seen().is_empty());
}

#[tokio::test]
async fn a_down_upstream_is_unavailable_and_refusals_are_trailers_only() {
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("h2c://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = TestGateway::start(&routes(&issuer, &dead, "")).await;
    let token = signer.token("ES256", json!({}), &issuer.claims());
    let err = EchoClient::connect(&gw.url)
        .await
        .with_token(&token)
        .unary("x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // On the wire: one HEADERS frame ending the stream, HTTP 200, the
    // gRPC status and a percent-encoded message; no body.
    let tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!("{}/echo.Echo/Unary", gw.url))
        .header("content-type", "application/grpc+proto")
        .header("authorization", "Bearer not-a-jwt")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.body().is_end_stream(),
        "a body or trailers followed"
    );
    let h = response.headers();
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["grpc-status"], "16");
    // (percent-encoding leaves printable ASCII but `%` as it is)
    assert_eq!(
        h["grpc-message"],
        "token is not a JWS in compact form (three dot-separated parts)"
    );
    assert!(h.contains_key("www-authenticate"));

    // The same refusal without a gRPC content-type stays JSON.
    let plain = reqwest::Client::new()
        .post(format!("{}/echo.Echo/Unary", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
    assert_eq!(plain.headers()["content-type"], "application/json");
}

/// A raw gRPC unary request over HTTP/2 with `headers`; the response head.
async fn raw_call(
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> http::Response<h2::RecvStream> {
    let tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::post(format!("{}{path}", gw.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (response, mut body) = client.send_request(req.body(()).unwrap(), false).unwrap();
    body.send_data(grpc_frame(message), true).unwrap();
    response.await.unwrap()
}

/// One length-prefixed gRPC message holding field 1 = `text`.
fn grpc_frame(text: &[u8]) -> Bytes {
    let mut encoded = vec![0x0a, text.len() as u8];
    encoded.extend_from_slice(text);
    let mut frame = vec![0];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    Bytes::from(frame)
}

#[tokio::test]
async fn grpc_timeout_lowers_the_route_timeout_and_answers_deadline_exceeded() {
    let s = setup().await;
    let token = format!("Bearer {}", s.token());
    let started = Instant::now();
    let response = raw_call(
        &s.gw,
        "/echo.Echo/Unary",
        &[("authorization", &token), ("grpc-timeout", "300m")],
        b"sleep:3000",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The deadline went upstream too, so the service can stop early.
    assert_eq!(s.up.seen().last().unwrap()["grpc-timeout"], "300m");
    // A malformed grpc-timeout is the client's error.
    let response = raw_call(
        &s.gw,
        "/echo.Echo/Unary",
        &[("authorization", &token), ("grpc-timeout", "soon")],
        b"x",
    )
    .await;
    assert_eq!(response.headers()["grpc-status"], "13");
    // A generous one leaves the call alone.
    let response = raw_call(
        &s.gw,
        "/echo.Echo/Unary",
        &[("authorization", &token), ("grpc-timeout", "10S")],
        b"sleep:50",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("grpc-status").is_none());
}

#[tokio::test]
async fn fifty_concurrent_calls_from_one_client_share_one_connection_per_worker() {
    let s = setup().await;
    let client = s.client().await;
    let calls = (0..50).map(|i| {
        let mut c = client.clone();
        tokio::spawn(async move { c.unary(&format!("sleep:{}", 300 + i % 2)).await })
    });
    let started = Instant::now();
    for call in futures_util::future::join_all(calls).await {
        assert!(call.unwrap().is_ok());
    }
    // Concurrent, not one after another.
    assert!(started.elapsed() < Duration::from_secs(5));
    let connections = s.up.connections();
    eprintln!("50 concurrent calls: {connections} upstream connection(s)");
    // The test gateway has two workers.
    assert!((1..=2).contains(&connections), "{connections}");
}

#[tokio::test]
async fn an_http1_client_reaches_an_h2c_upstream_and_gets_its_trailers() {
    let s = setup().await;
    let tcp = tokio::net::TcpStream::connect(s.gw.running.proxy_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/echo.Echo/Unary")
        .header("host", "gateway.test")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", s.token()))
        .body(Full::new(grpc_frame(b"over h1")))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), grpc_frame(b"over h1"));
}

#[tokio::test]
async fn an_http2_client_reaches_an_http1_upstream() {
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - name: p\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    ))
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/mixed", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(up.count(), 1);
}

/// A TLS acceptor for the test PKI's server certificate offering `alpn`.
fn acceptor(pki: &TestPki, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let config = authgate::tls::server_config(
        &pki.dir.join("server.crt"),
        &pki.dir.join("server.key"),
        None,
    )
    .unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn https_http2_upstreams_need_alpn_h2() {
    let pki = TestPki::new();
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let token = signer.token("ES256", json!({}), &issuer.claims());
    let ca = pki.dir.join("ca.crt");
    let forward = format!(", protocol: http2, ca_file: \"{}\"", ca.display());

    let h2 = GrpcUpstream::spawn_with(Some(acceptor(&pki, &[b"h2"]))).await;
    let url = format!("https://localhost:{}", h2.addr.port());
    let gw = TestGateway::start(&routes(&issuer, &url, &forward)).await;
    let mut client = EchoClient::connect(&gw.url).await.with_token(&token);
    assert_eq!(client.unary("tls").await.unwrap().get_ref().text, "tls");

    // An upstream that selects no protocol is never spoken to: 502.
    let h1 = GrpcUpstream::spawn_with(Some(acceptor(&pki, &[]))).await;
    let url = format!("https://localhost:{}", h1.addr.port());
    let gw = TestGateway::start(&routes(&issuer, &url, &forward)).await;
    let mut client = EchoClient::connect(&gw.url).await.with_token(&token);
    let err = client.unary("tls").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(h1.seen().is_empty());
    let r = reqwest::Client::new()
        .get(format!("{}/echo.Echo/Unary", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

/// An HTTP/2 upstream (the h2 crate, a misbehaving outside world) that
/// ends each connection after `per_connection` requests with a graceful
/// GOAWAY, and refuses the first stream of every connection when
/// `refuse_first` is set. Answers 200 with the path.
async fn goaway_upstream(per_connection: usize, refuse_first: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("h2c://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                let mut served = 0;
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if refuse_first && served == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        served += 1;
                        continue;
                    }
                    served += 1;
                    let path = req.uri().path().to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let response = http::Response::new(());
                        let mut body = respond.send_response(response, false).unwrap();
                        let _ = body.send_data(Bytes::from(path), true);
                    });
                    if served >= per_connection {
                        conn.graceful_shutdown();
                    }
                }
            });
        }
    });
    (url, connections)
}

fn public(upstream: &str) -> String {
    format!(
        "routes:\n  - name: p\n    match: {{ path_prefix: / }}\n    upstream: \"{upstream}\"\n    auth: public\n"
    )
}

#[tokio::test]
async fn goaway_and_refused_streams_never_fail_a_request_that_was_not_processed() {
    let (url, connections) = goaway_upstream(3, false).await;
    let gw = TestGateway::start(&public(&url)).await;
    let client = reqwest::Client::new();
    // In turn and concurrently: every request answered although each
    // connection is closed with GOAWAY after three.
    for i in 0..12 {
        let r = client
            .get(format!("{}/seq/{i}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), format!("/seq/{i}"));
    }
    let calls = (0..40).map(|i| {
        let (client, url) = (client.clone(), format!("{}/par/{i}", gw.url));
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status.unwrap(), 200);
    }
    assert!(connections.load(Ordering::SeqCst) >= 4);

    // REFUSED_STREAM: the upstream did nothing, so a GET goes again.
    let (url, _) = goaway_upstream(1000, true).await;
    let gw = TestGateway::start(&public(&url)).await;
    let r = client
        .get(format!("{}/refused", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn rapid_reset_against_an_h2c_upstream_is_cut_off_and_others_are_served() {
    let s = setup().await;
    let token = format!("Bearer {}", s.token());
    // The token verified and cached: each stream goes upstream at once.
    s.client().await.unary("warm").await.unwrap();
    let tcp = tokio::net::TcpStream::connect(s.gw.running.proxy_addr)
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let attempts = 5_000;
    let mut sent = 0;
    for _ in 0..attempts {
        let ready = tokio::time::timeout(Duration::from_secs(2), client.ready()).await;
        let Ok(Ok(c)) = ready else { break };
        client = c;
        let req = http::Request::post(format!("{}/echo.Echo/Unary", s.gw.url))
            .header("content-type", "application/grpc")
            .header("authorization", &token)
            .body(())
            .unwrap();
        let Ok((response, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    let cut_off = matches!(&ended, Ok(Ok(Err(_))));
    eprintln!(
        "rapid reset: {sent} sent, ended {ended:?}, upstream saw {} calls on {} connection(s)",
        s.up.seen().len(),
        s.up.connections()
    );
    assert!(sent < attempts || cut_off, "never cut off: {ended:?}");
    assert!(s.up.seen().len() < attempts / 2);
    assert!(s.up.connections() <= 2);
    // Others are still served, on the same upstream connections.
    let mut c = s.client().await;
    assert_eq!(
        c.unary("still here").await.unwrap().get_ref().text,
        "still here"
    );
}

#[tokio::test]
async fn check_refuses_http2_on_http_and_http1_on_h2c() {
    for (upstream, protocol, problem) in [
        (
            "http://127.0.0.1:1",
            "http2",
            "http2 needs an https:// upstream",
        ),
        (
            "h2c://127.0.0.1:1",
            "http1",
            "an h2c:// upstream is always HTTP/2",
        ),
        ("https://127.0.0.1:1", "spdy", "unknown choice"),
    ] {
        let yaml = format!(
            "server: {{ listen: \"127.0.0.1:0\" }}\nroutes:\n  - name: p\n    match: {{ path_prefix: / }}\n    upstream: \"{upstream}\"\n    auth: public\n    forward: {{ protocol: {protocol} }}\n"
        );
        let problems = authgate::config::parse(&yaml, std::path::Path::new("."), &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{upstream} with {protocol} accepted"));
        let text = format!("{problems:?}");
        assert!(text.contains("routes[0].forward.protocol"), "{text}");
        assert!(text.contains(problem), "{text}");
    }
}

#[tokio::test]
async fn a_websocket_upgrade_to_an_http2_upstream_is_400_and_never_sent() {
    let up = GrpcUpstream::spawn().await;
    let gw = TestGateway::start(&public(&up.h2c_url())).await;
    let r = reqwest::Client::new()
        .get(format!("{}/chat", gw.url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("HTTP/2"), "{body}");
    assert!(up.seen().is_empty());
}
