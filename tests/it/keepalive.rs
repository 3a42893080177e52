//! Keep-alive connections that go quiet are parked (hyper's state dropped,
//! the socket and any TLS session kept; see `src/server/http1.rs`). The
//! client must never notice: the same connection keeps working, plain or
//! over TLS, a request split across a pause is not lost, upgrades (plain and
//! over TLS) and slow streamed answers still work, and a parked connection
//! costs neither CPU nor much memory.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::binary::{free_port, proc_field, run};
use crate::support::tls::TestPki;
use crate::support::{TestGateway, Upstream, raw};

/// Longer than the gateway's park delay (100 ms), so the connection is parked.
const PAUSE: Duration = Duration::from_millis(400);

fn open_yaml(upstream: &str, extra: &str) -> String {
    format!(
        "{extra}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"{upstream}\"\n    auth: public\n"
    )
}

async fn open_gateway(upstream: &str, extra: &str) -> TestGateway {
    TestGateway::start(&open_yaml(upstream, extra)).await
}

/// [`open_gateway`] over TLS, with `pki`'s server certificate.
async fn open_tls_gateway(upstream: &str, pki: &TestPki) -> TestGateway {
    let server = "server:\n  listen: \"127.0.0.1:0\"\n  tls: { cert_file: server.crt, key_file: server.key }";
    TestGateway::start_in(&open_yaml(upstream, server), &pki.dir).await
}

/// Reads byte by byte into `data` until it ends with `end` (5 s at most).
async fn read_until(tcp: &mut (impl AsyncRead + Unpin), data: &mut Vec<u8>, end: &[u8]) {
    let mut byte = [0u8; 1];
    while !data.ends_with(end) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte))
            .await
            .expect("more of the response within 5 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(data)
        );
        data.push(byte[0]);
    }
}

/// Reads one response (head and a Content-Length or chunked body).
async fn read_response(tcp: &mut (impl AsyncRead + Unpin)) -> String {
    let mut data = Vec::new();
    read_until(tcp, &mut data, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&data).to_ascii_lowercase();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
    {
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await.unwrap();
        data.extend_from_slice(&body);
    } else if head.contains("transfer-encoding: chunked") {
        read_until(tcp, &mut data, b"\r\n0\r\n\r\n").await;
    }
    String::from_utf8(data).unwrap()
}

async fn get(tcp: &mut (impl AsyncRead + AsyncWrite + Unpin), path: &str) -> String {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(tcp).await
}

#[tokio::test]
async fn a_keep_alive_connection_keeps_working_after_being_parked() {
    let up = Upstream::spawn().await;
    let gw = open_gateway(&up.url(), "").await;
    let mut tcp = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    for i in 0..3 {
        let r = get(&mut tcp, &format!("/n{i}")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(!r.to_ascii_lowercase().contains("connection: close"), "{r}");
        tokio::time::sleep(PAUSE).await;
    }
    let uris: Vec<_> = up.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/n0", "/n1", "/n2"]);
}

#[tokio::test]
async fn a_request_head_split_across_a_pause_is_not_lost() {
    let up = Upstream::spawn().await;
    let gw = open_gateway(&up.url(), "").await;
    let mut tcp = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    assert!(get(&mut tcp, "/first").await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(PAUSE).await;
    // Parked now; half a head, a pause, the rest.
    tcp.write_all(b"GET /sec").await.unwrap();
    tokio::time::sleep(PAUSE).await;
    tcp.write_all(b"ond HTTP/1.1\r\nHost: a\r\nX-Part")
        .await
        .unwrap();
    tokio::time::sleep(PAUSE).await;
    tcp.write_all(b": two\r\n\r\n").await.unwrap();
    let r = read_response(&mut tcp).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/second");
    assert_eq!(seen[1].headers["x-part"], "two");
}

/// Waits for the gateway to close `client` (EOF, or a reset), at most 5 s.
async fn closed_within_5s(client: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_parked_connection_is_still_closed_at_idle_timeout() {
    let up = Upstream::spawn().await;
    let gw = open_gateway(
        &up.url(),
        "server:\n  listen: \"127.0.0.1:0\"\n  idle_timeout: 800ms\n",
    )
    .await;
    let mut tcp = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    assert!(get(&mut tcp, "/a").await.starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    closed_within_5s(&mut tcp).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );
}

/// Stops `gw` while `client` (served one request, then quiet for longer
/// than the park delay) is parked: the connection must end at once, and the
/// stop with it, not at `drain_timeout` (30 s here) or `idle_timeout`.
async fn a_stop_closes_it(gw: TestGateway, client: &mut (impl AsyncRead + Unpin)) {
    tokio::time::sleep(PAUSE).await;
    let started = std::time::Instant::now();
    let stop = tokio::spawn(gw.running.shutdown());
    closed_within_5s(client).await;
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("the stop does not wait for the parked connection")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

const LONG_TIMEOUTS: &str = "  idle_timeout: 60s\n  drain_timeout: 30s\n";

#[tokio::test]
async fn a_parked_connection_ends_at_once_when_the_gateway_stops() {
    let up = Upstream::spawn().await;
    let server = format!("server:\n  listen: \"127.0.0.1:0\"\n{LONG_TIMEOUTS}");
    let gw = open_gateway(&up.url(), &server).await;
    let mut tcp = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    assert!(get(&mut tcp, "/a").await.starts_with("HTTP/1.1 200"));
    a_stop_closes_it(gw, &mut tcp).await;
}

#[tokio::test]
async fn a_parked_tls_connection_ends_at_once_when_the_gateway_stops() {
    let pki = TestPki::new();
    let up = Upstream::spawn().await;
    let server = format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  tls: {{ cert_file: server.crt, key_file: server.key }}\n{LONG_TIMEOUTS}"
    );
    let gw = TestGateway::start_in(&open_yaml(&up.url(), &server), &pki.dir).await;
    let mut tls = tls_connect(&pki, gw.running.proxy_addr).await;
    assert!(get(&mut tls, "/a").await.starts_with("HTTP/1.1 200"));
    a_stop_closes_it(gw, &mut tls).await;
}

#[tokio::test]
async fn a_websocket_upgrade_on_a_parked_connection_is_spliced() {
    let up = Upstream::spawn().await;
    let gw = open_gateway(&up.url(), "").await;
    let mut tcp = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    assert!(get(&mut tcp, "/plain").await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(PAUSE).await;
    // Data sent after another pause: still spliced.
    raw::upgrade_and_echo(&mut tcp, PAUSE).await;
}

/// A TLS connection through the gateway of `pki`'s certificate.
async fn tls_connect(
    pki: &TestPki,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    pki.connector().connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn a_tls_connection_keeps_working_after_being_parked() {
    let pki = TestPki::new();
    let up = Upstream::spawn().await;
    let gw = open_tls_gateway(&up.url(), &pki).await;
    let mut tls = tls_connect(&pki, gw.running.proxy_addr).await;
    for i in 0..3 {
        let r = get(&mut tls, &format!("/n{i}")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        tokio::time::sleep(PAUSE).await;
    }
    // Parked: a head split across pauses, then two requests in one record.
    tls.write_all(b"GET /sp").await.unwrap();
    tokio::time::sleep(PAUSE).await;
    tls.write_all(b"lit HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut tls).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(PAUSE).await;
    tls.write_all(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(read_response(&mut tls).await.starts_with("HTTP/1.1 200"));
    }
    let uris: Vec<_> = up.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/n0", "/n1", "/n2", "/split", "/p1", "/p2"]);
}

#[tokio::test]
async fn a_websocket_upgrade_over_tls_is_spliced() {
    // Upgrades over TLS take the same path as plain ones: the socket back
    // from hyper, spliced with the upstream's side.
    let pki = TestPki::new();
    let up = Upstream::spawn().await;
    let gw = open_tls_gateway(&up.url(), &pki).await;
    let mut tls = tls_connect(&pki, gw.running.proxy_addr).await;
    raw::upgrade_and_echo(&mut tls, Duration::ZERO).await;
    assert_eq!(up.seen()[0].headers["upgrade"], "websocket");
}

/// An upstream answering every request on a connection with a chunked body
/// whose chunks come `PAUSE` apart.
async fn slow_streaming_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    buf.clear();
                    while !buf.ends_with(b"\r\n\r\n") {
                        if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        buf.push(byte[0]);
                    }
                    let parts: [&[u8]; 4] = [
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                        b"5\r\nworld\r\n",
                        b"3\r\nend\r\n",
                        b"0\r\n\r\n",
                    ];
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(PAUSE).await;
                        }
                        if tcp.write_all(part).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_slow_streamed_answer_is_not_mistaken_for_a_quiet_connection() {
    let addr = slow_streaming_upstream().await;
    let gw = open_gateway(&format!("http://{addr}"), "").await;
    let mut tcp = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    for _ in 0..2 {
        let r = get(&mut tcp, "/stream").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.contains("hello") && r.contains("world") && r.contains("end"),
            "{r}"
        );
        assert!(!r.to_ascii_lowercase().contains("connection: close"), "{r}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS").unwrap().parse().unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A client connection, plain or TLS.
trait Client: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Client for T {}

/// RSS per parked connection (KiB) and CPU ticks over a quiet second, with
/// `n` connections each served one request and left open, over TLS or not.
async fn parked_cost(tls: bool, n: u64) -> (f64, u64) {
    // Thousands of client sockets in this process: the soft descriptor
    // limit up to the hard one (the gateway raises its own).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // The real binary, so that its RSS and CPU are its own.
    let up = Upstream::spawn().await;
    let pki = TestPki::new();
    let (proxy, admin) = (free_port(), free_port());
    let file = pki.dir.join("gateway.yaml");
    let tls_files = match tls {
        true => ", tls: { cert_file: server.crt, key_file: server.key }",
        false => "",
    };
    let extra = format!(
        "server: {{ listen: \"127.0.0.1:{proxy}\"{tls_files} }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}"
    );
    std::fs::write(&file, open_yaml(&up.url(), &extra)).unwrap();
    let gateway = run(&file, admin).await;
    let addr: SocketAddr = format!("127.0.0.1:{proxy}").parse().unwrap();
    // One client connection, over TLS or not.
    let open = async |path: &str| -> Box<dyn Client> {
        let mut held: Box<dyn Client> = match tls {
            true => Box::new(tls_connect(&pki, addr).await),
            false => Box::new(TcpStream::connect(addr).await.unwrap()),
        };
        let r = get(&mut held, path).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        held
    };
    for _ in 0..50 {
        drop(open("/warm").await);
    }
    tokio::time::sleep(PAUSE).await;
    let before = rss_kib(gateway.id());
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(open("/idle").await);
    }
    tokio::time::sleep(PAUSE).await;
    let after = rss_kib(gateway.id());
    let per_connection = (after.saturating_sub(before)) as f64 / n as f64;
    let ticks = cpu_ticks(gateway.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_ticks = cpu_ticks(gateway.id()) - ticks;
    eprintln!(
        "tls {tls}: RSS {before} -> {after} KiB: {per_connection:.1} KiB per parked connection; \
         {idle_ticks} CPU ticks in 1 s with {n} parked"
    );
    // And every one of them still answers.
    for h in held.iter_mut().step_by(50) {
        let r = get(h, "/again").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    (per_connection, idle_ticks)
}

#[tokio::test]
async fn parked_connections_cost_little_memory_and_no_cpu() {
    let (per_connection, idle_ticks) = parked_cost(false, 4000).await;
    // Unparked, hyper holds about 39 KiB per connection; parked, 1.5-2.1
    // KiB remain (3.9 while the connection's task kept room for hyper's
    // run and the sniff's state: `http1::serve_http1`). RSS grows in steps
    // of 2 MiB here, hence thousands of connections: 0.5 KiB a step.
    assert!(
        per_connection < 3.0,
        "{per_connection:.1} KiB per connection"
    );
    assert!(idle_ticks <= 10, "{idle_ticks} ticks of CPU while idle");
}

#[tokio::test]
async fn parked_tls_connections_give_back_hyper_s_buffers() {
    let (per_connection, idle_ticks) = parked_cost(true, 1500).await;
    // Unparked, a TLS connection holds about 42 KiB (hyper's and rustls's
    // state); parked, rustls's session remains: 5.3 KiB, against 10.7
    // while rustls's buffered connection kept its 4 KiB receive buffer and
    // the task was twice the size (`tls_stream.rs` gives its own buffers
    // back when parked), and 22 while the task's future held the session
    // in each of its states (`connection.rs`).
    assert!(
        per_connection < 8.0,
        "{per_connection:.1} KiB per connection"
    );
    assert!(idle_ticks <= 10, "{idle_ticks} ticks of CPU while idle");
}
