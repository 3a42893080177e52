//! Hostile clients and faulty upstreams through the real server: request
//! smuggling shapes are refused and never forwarded ambiguously; broken
//! upstreams give 502/504, never hang a client and leak no descriptors.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::binary::{free_port, run};
use crate::support::{TestGateway, Upstream, raw, temp_dir};

async fn public_gateway(upstream: &str, timeout: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
routes:
  - name: open
    match: {{ path_prefix: / }}
    upstream: "{upstream}"
    auth: public
    forward: {{ timeout: {timeout}, connect_timeout: 1s }}
"#
    ))
    .await
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_forwarded_ambiguously() {
    let up = Upstream::spawn().await;
    let gw = public_gateway(&up.url(), "5s").await;
    let addr = gw.running.proxy_addr;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let attacks: Vec<(&str, String)> = vec![
        (
            "CL and TE together",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE not ending in chunked",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "obs-fold",
            format!("GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}"),
        ),
        (
            "bare CR",
            format!("GET /a HTTP/1.1\rHost: x\r\n\r\n{smuggled}"),
        ),
        (
            "space before colon",
            format!("GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n{smuggled}"),
        ),
        (
            "NUL in a header",
            "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_owned(),
        ),
        (
            "a control character in the path",
            "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        ),
    ];
    for (what, bytes) in attacks {
        let before = up.count();
        let r = raw::send(addr, bytes.as_bytes()).await;
        let forwarded: Vec<String> = up.seen()[before..].iter().map(|s| s.uri.clone()).collect();
        assert!(
            !forwarded.iter().any(|u| u.contains("smuggled")),
            "{what}: smuggled request reached the upstream"
        );
        if r.status != 400 {
            // Anything not refused must have been forwarded as exactly one
            // unambiguous request.
            assert!(forwarded.len() <= 1, "{what}: {forwarded:?}");
            let seen = up.seen();
            let last = seen.last().unwrap();
            assert!(
                !(last.headers.contains_key("content-length")
                    && last.headers.contains_key("transfer-encoding")),
                "{what}: forwarded with both framings"
            );
        }
    }
    // Still serving everyone else.
    assert_eq!(raw::get(addr, "/ok", &[]).await.status, 200);
}

#[tokio::test]
async fn invalid_utf8_and_non_ascii_in_path_and_headers_get_a_clear_answer() {
    let up = Upstream::spawn().await;
    let gw = public_gateway(&up.url(), "5s").await;
    let addr = gw.running.proxy_addr;
    let r = raw::send(
        addr,
        b"GET /caf\xc3\xa9\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "raw non-ASCII path");
    let r = raw::send(
        addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Bytes: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(matches!(r.status, 200 | 400), "{}", r.status);
    assert_eq!(raw::get(addr, "/ok", &[]).await.status, 200);
}

/// How a fake upstream misbehaves once it has a request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Closes with RST (SO_LINGER 0).
    Reset,
    /// Reads the request, then closes its side without answering.
    HalfClose,
    /// Reads the request and never answers.
    Silent,
    /// Promises 100 body bytes, sends 10, closes.
    ShortBody,
}

async fn faulty_upstream(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                match fault {
                    Fault::Reset => {
                        // Linger 0 is exactly the RST wanted; with a zero
                        // timeout the drop cannot block.
                        #[allow(deprecated)]
                        let _ = tcp.set_linger(Some(Duration::ZERO));
                        drop(tcp);
                    }
                    Fault::HalfClose => {
                        let _ = tcp.shutdown().await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Fault::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
                    Fault::ShortBody => {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                            .await;
                        drop(tcp);
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn broken_upstreams_give_502_or_504_and_never_hang_the_client() {
    for (fault, expected) in [
        (Fault::Reset, 502),
        (Fault::HalfClose, 502),
        (Fault::Silent, 504),
    ] {
        let addr = faulty_upstream(fault).await;
        let gw = public_gateway(&format!("http://{addr}"), "500ms").await;
        let started = Instant::now();
        let r = raw::get(gw.running.proxy_addr, "/x", &[]).await;
        assert_eq!(r.status, expected, "{fault:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{fault:?} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_upstream_lying_about_its_length_never_hangs_the_client() {
    let addr = faulty_upstream(Fault::ShortBody).await;
    let gw = public_gateway(&format!("http://{addr}"), "500ms").await;
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        let r = reqwest::get(format!("http://{}/x", gw.running.proxy_addr)).await?;
        r.bytes().await
    })
    .await
    .expect("the client must not hang");
    // The status line went out before the upstream broke its promise, so
    // the client sees a truncated body as an error, never 100 bytes.
    assert!(result.is_err(), "got {:?}", result.map(|b| b.len()));
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn failing_requests_leak_no_descriptors() {
    // The real binary, so other tests in this process cannot disturb the count.
    let addr = faulty_upstream(Fault::Reset).await;
    let (proxy, admin) = (free_port(), free_port());
    let file = temp_dir("fds").join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "server: {{ listen: \"127.0.0.1:{proxy}\" }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nroutes:\n  - name: open\n    match: {{ path_prefix: / }}\n    upstream: \"http://{addr}\"\n    auth: public\n"
        ),
    )
    .unwrap();
    let gateway = run(&file, admin).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{proxy}/x");
    for _ in 0..200 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 502);
    }
    let before = open_descriptors(gateway.id());
    for _ in 0..10_000 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 502);
    }
    let after = open_descriptors(gateway.id());
    eprintln!("gateway descriptors: {before} before, {after} after 10,000 failing requests");
    assert!(after <= before + 4, "{before} -> {after}");
}

#[tokio::test]
async fn http2_rapid_reset_is_cut_off_and_others_are_still_served() {
    let up = Upstream::spawn().await;
    let gw = public_gateway(&up.url(), "5s").await;
    let addr = gw.running.proxy_addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let attempts = 5_000;
    let mut sent = 0;
    for i in 0..attempts {
        let ready = tokio::time::timeout(Duration::from_secs(2), client.ready()).await;
        let Ok(Ok(c)) = ready else { break };
        client = c;
        let req = http::Request::get(format!("http://gateway.test/rr/{i}?delay_ms=200"))
            .body(())
            .unwrap();
        let Ok((response, mut stream)) = client.send_request(req, true) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        sent += 1;
    }
    // The gateway ends the abusive connection instead of serving it forever.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    eprintln!(
        "rapid reset: {sent} of {attempts} streams sent, connection: {ended:?}, upstream saw {}",
        up.count()
    );
    // We still hold the client half, so an ended connection is the
    // gateway's doing (GOAWAY, then close: our next writes hit a broken pipe).
    let cut_off = matches!(&ended, Ok(Ok(Err(_))));
    assert!(sent < attempts || cut_off, "never cut off: {ended:?}");
    assert!(up.count() < attempts / 2, "upstream saw {}", up.count());
    // Everyone else is still served.
    assert_eq!(raw::get(addr, "/ok", &[]).await.status, 200);
}

#[tokio::test]
async fn http2_stream_floods_are_bounded_by_the_advertised_limit() {
    let up = Upstream::spawn().await;
    let gw = public_gateway(&up.url(), "5s").await;
    let tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("http://gateway.test/first")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    // The server's SETTINGS cap concurrent streams: a flood waits its turn.
    assert_eq!(client.current_max_send_streams(), 256);
    let mut pending = Vec::new();
    for i in 0..600 {
        client = client.ready().await.unwrap();
        let req = http::Request::get(format!("http://gateway.test/f/{i}?delay_ms=50"))
            .body(())
            .unwrap();
        pending.push(client.send_request(req, true).unwrap().0);
    }
    for response in pending {
        assert_eq!(response.await.unwrap().status(), 200);
    }
    assert_eq!(up.count(), 601);
}
