//! The TLS side of client connections (`src/server/tls_stream.rs`, rustls's
//! unbuffered API under buffers of our own): bodies many records long cross
//! it intact both ways, over HTTP/1.1 and HTTP/2; a failed handshake is
//! answered with its alert; a handshake message larger than TLS allows
//! ends the connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::TestGateway;
use crate::support::tls::TestPki;

/// An upstream answering every request with the request's own body.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn tls_gateway_yaml(upstream: &str, tls_extra: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  tls: {{ cert_file: server.crt, key_file: server.key{tls_extra} }}\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"{upstream}\"\n    auth: public\n"
    )
}

/// A TLS gateway with `pki`'s certificate in front of [`echo_upstream`];
/// `tls_extra` adds to its `server.tls` keys.
async fn tls_gateway(pki: &TestPki, tls_extra: &str) -> TestGateway {
    let up = echo_upstream().await;
    TestGateway::start_in(
        &tls_gateway_yaml(&format!("http://{up}"), tls_extra),
        &pki.dir,
    )
    .await
}

/// A raw TCP connection to `gw`'s proxy port.
async fn tcp_to(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.running.proxy_addr).await.unwrap()
}

#[tokio::test]
async fn bodies_many_records_long_cross_tls_intact_both_ways() {
    let pki = TestPki::new();
    let gw = tls_gateway(&pki, "").await;
    let url = format!("https://localhost:{}/echo", gw.running.proxy_addr.port());
    // 3 MiB that no two records' worth repeat alike (a prime period).
    let body: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect();
    for http2 in [false, true] {
        let client = pki.client(http2);
        for _ in 0..2 {
            let r = client.post(&url).body(body.clone()).send().await.unwrap();
            assert_eq!(r.status(), 200, "http2 {http2}");
            let version = r.version();
            let got = r.bytes().await.unwrap();
            assert_eq!(got.len(), body.len(), "http2 {http2}");
            assert!(got == body, "http2 {http2}: the body came back altered");
            let expected = if http2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            };
            assert_eq!(version, expected);
        }
    }
}

#[tokio::test]
async fn a_client_without_the_required_certificate_gets_the_alert_that_says_so() {
    let pki = TestPki::new();
    let gw = tls_gateway(&pki, ", client_ca_file: ca.crt, client_auth: required").await;
    let tcp = tcp_to(&gw).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // TLS 1.3: the client's side of the handshake completes before the
    // server has judged its (empty) certificate; the verdict is the alert.
    let result = async {
        let mut tls = pki.connector().connect(name, tcp).await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await
    };
    let err = tokio::time::timeout(Duration::from_secs(5), result)
        .await
        .expect("the gateway answered")
        .expect_err("no certificate, no connection");
    assert!(
        err.to_string().contains("CertificateRequired"),
        "the client was not told why: {err}"
    );
}

#[tokio::test]
async fn a_handshake_message_larger_than_tls_allows_ends_the_connection() {
    let pki = TestPki::new();
    let gw = tls_gateway(&pki, "").await;
    let mut tcp = tcp_to(&gw).await;
    // A full-size handshake record whose ClientHello claims 16 MiB: rustls
    // refuses any handshake message over 64 KiB as soon as it reads the
    // claim (without an alert), so the connection ends at once instead of
    // buffering what follows. (One record only: bytes the gateway never
    // reads would turn its close into a reset.)
    let mut record = vec![22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff];
    record.resize(5 + 0x4000, 0);
    tcp.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was held open, buffering");
    assert!(
        answer.first() != Some(&22),
        "the handshake went on: {answer:?}"
    );
}

#[tokio::test]
async fn a_handshake_message_in_one_byte_records_is_cut_off_at_the_receive_cap() {
    // A ClientHello that claims 60 KiB (within the 64 KiB rustls accepts),
    // sent one byte a record and never finished: rustls joins the fragments
    // where they lie and discards nothing until the message is whole, so
    // each byte takes six in the receive buffer. At its cap (about 82 KiB,
    // `tls_stream.rs`) the connection ends; without it the gateway would
    // buffer on until `header_read_timeout` (10 s).
    let pki = TestPki::new();
    let gw = tls_gateway(&pki, "").await;
    let mut tcp = tcp_to(&gw).await;
    let mut message = vec![1, 0x00, 0xf0, 0x00];
    message.resize(40 * 1024, 0);
    let records: Vec<u8> = message.iter().flat_map(|&b| [22, 3, 1, 0, 1, b]).collect();
    // Fails once the gateway has closed, which is the point.
    let _ = tcp.write_all(&records).await;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "the connection was held open, buffering past the cap"
    );
    assert!(answer.is_empty(), "the handshake went on: {answer:?}");
}

#[tokio::test]
async fn a_tls12_client_is_served_and_its_bodies_cross_intact() {
    let pki = TestPki::new();
    let gw = tls_gateway(&pki, "").await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = pki
        .connector_for(&[&rustls::version::TLS12])
        .connect(name, tcp_to(&gw).await)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let body = vec![b'x'; 100_000];
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let expected_tail = body.as_slice();
    let read = async {
        let mut buf = [0u8; 16384];
        while !answer.ends_with(expected_tail) {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the whole body came back");
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}
