//! Upstream connection reuse, seen from the upstream's side of real
//! sockets: connections are shared across client connections, one whose
//! answer was abandoned midway is never reused, one the upstream closed
//! while idle is replaced without the client noticing, queued requests take
//! the first connection to come free, a hanging connect or TLS handshake
//! is a 504 after `connect_timeout`, and with several workers, client
//! connections are spread over them and each keeps its own pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{TestGateway, raw};

/// An HTTP/1.1 upstream written on bare sockets, so that it can misbehave
/// the way real ones do. It counts connections and answers by path:
/// - `/small`: `200 small`, connection kept;
/// - `/big`: a 10 MB answer of which it sends 64 KiB, then stalls;
/// - `/then-close`: `200 small`, then closes the connection 20 ms later,
///   without having said `Connection: close` (an upstream's keep-alive
///   timeout);
/// - `/arm`: `200 small`, and the next request on that connection is read
///   and answered by closing it (a keep-alive timeout firing just as the
///   request arrives).
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    /// Listens, serves every connection, counts them.
    async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Self::at(&listener);
        let connections = up.connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp));
            }
        });
        up
    }

    /// The counter for `listener`; accepting and serving are the caller's.
    fn at(listener: &TcpListener) -> Self {
        Self {
            addr: listener.local_addr().unwrap(),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(mut tcp: TcpStream) {
    const SMALL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall";
    let mut buf = Vec::new();
    let mut drop_next = false;
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or("");
        if drop_next {
            return;
        }
        match path {
            "/arm" => {
                drop_next = true;
                if tcp.write_all(SMALL).await.is_err() {
                    return;
                }
            }
            "/small" => {
                if tcp.write_all(SMALL).await.is_err() {
                    return;
                }
            }
            "/big" => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
                    .await;
                let _ = tcp.write_all(&[b'x'; 65536]).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "/then-close" => {
                let _ = tcp.write_all(SMALL).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
            _ => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        }
    }
}

/// One worker, so that every client connection shares one pool and the
/// upstream's connection counts are exact.
const ONE_WORKER: &str = r#"server: { listen: "127.0.0.1:0", workers: 1 }"#;

async fn gateway(up: &Scripted) -> TestGateway {
    gateway_to(&format!("http://{}", up.addr), 1).await
}

/// A gateway with `workers` worker threads whose one public route goes to
/// `upstream`.
async fn gateway_to(upstream: &str, workers: usize) -> TestGateway {
    TestGateway::start(&format!(
        r#"
server: {{ listen: "127.0.0.1:0", workers: {workers} }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: "{upstream}"
    auth: public
    forward: {{ timeout: 5s, connect_timeout: 1s }}
"#
    ))
    .await
}

/// `GET /small` through `gw`, answered `200 small`.
async fn small(gw: &TestGateway) {
    let r = raw::get(gw.running.proxy_addr, "/small", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "small"));
}

async fn scripted_gateway() -> (Scripted, TestGateway) {
    let up = Scripted::spawn().await;
    let gw = gateway(&up).await;
    (up, gw)
}

/// A gateway whose one upstream connection is armed (the upstream will
/// close it on the next request without answering) and has been idle for
/// over a second, so the gateway keeps a copy of a bodiless GET sent on it.
async fn armed_and_idle() -> (Scripted, TestGateway) {
    let (up, gw) = scripted_gateway().await;
    let r = raw::get(gw.running.proxy_addr, "/arm", &[]).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    (up, gw)
}

#[tokio::test]
async fn sequential_requests_from_many_clients_share_one_upstream_connection() {
    let (up, gw) = scripted_gateway().await;
    // Each raw::get is its own client connection (`Connection: close`).
    for _ in 0..20 {
        small(&gw).await;
    }
    assert_eq!(up.connections(), 1);
}

/// `GET /small` on a client connection kept open, answered `200 small`.
async fn small_on(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 1024]);
    while !seen.ends_with(b"small") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200 "));
}

#[tokio::test]
async fn connections_are_spread_over_the_workers_and_each_keeps_its_own_pool() {
    let up = Scripted::spawn().await;
    let gw = gateway_to(&format!("http://{}", up.addr), 2).await;
    four_clients_three_rounds(&gw).await;
    // Two client connections on each worker; each worker opened one
    // upstream connection and reused it (one shared pool would have made 1).
    assert_eq!(up.connections(), 2);
}

/// Four client connections held open, then three rounds of `GET /small`
/// on each in turn.
async fn four_clients_three_rounds(gw: &TestGateway) {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TcpStream::connect(gw.running.proxy_addr).await.unwrap());
    }
    for _ in 0..3 {
        for client in &mut clients {
            small_on(client).await;
        }
    }
}

#[tokio::test]
async fn a_reload_keeps_the_running_workers_whatever_the_file_says() {
    let (up, other) = (Scripted::spawn().await, Scripted::spawn().await);
    let gw = gateway_to(&format!("http://{}", up.addr), 2).await;
    // Another upstream (so a new pool is made) and `workers: 1` in the file.
    let yaml = format!(
        r#"
{ONE_WORKER}
admin: {{ listen: "127.0.0.1:0" }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: "http://{}"
    auth: public
"#,
        other.addr
    );
    let loaded = authgate::config::parse(&yaml, std::path::Path::new("."), &|_| None).unwrap();
    gw.running.gateway.reload(loaded.config).unwrap();
    four_clients_three_rounds(&gw).await;
    // Still two workers, so the new pool has two stacks: one upstream
    // connection each.
    assert_eq!((up.connections(), other.connections()), (0, 2));
}

#[tokio::test]
async fn an_answer_abandoned_midway_never_lends_its_connection_again() {
    let (up, gw) = scripted_gateway().await;
    small(&gw).await;
    // Read the head and some of the body of /big, then leave.
    let mut client = TcpStream::connect(gw.running.proxy_addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 32 * 1024];
    let mut read = 0;
    while read < got.len() {
        let n = client.read(&mut got[read..]).await.unwrap();
        assert!(n > 0, "the gateway closed before sending 32 KiB");
        read += n;
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK"));
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The stalled connection, with 10 MB still owed, must not answer this.
    for _ in 0..3 {
        small(&gw).await;
    }
    // One for the first /small (then lent to /big) and one after it.
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_unnoticed() {
    let (up, gw) = scripted_gateway().await;
    for round in 1..=3 {
        let r = raw::get(gw.running.proxy_addr, "/then-close", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "small"), "round {round}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.connections(), 3);
}

/// Fills `addr`'s accept queue (a listener with a backlog of 1 holds two)
/// so that further connects hang; the returned streams keep it full.
async fn fill_accept_queue(addr: SocketAddr) -> Vec<TcpStream> {
    let mut fillers = Vec::new();
    while fillers.len() < 4 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => fillers.push(tcp),
            _ => break,
        }
    }
    fillers
}

fn listener_with_backlog_of_one() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(1).unwrap()
}

#[tokio::test]
async fn a_connect_that_hangs_is_504_after_connect_timeout() {
    let listener = listener_with_backlog_of_one();
    let up = Scripted::at(&listener);
    let _fillers = fill_accept_queue(up.addr).await;
    let gw = gateway(&up).await;
    let started = std::time::Instant::now();
    let r = raw::get(gw.running.proxy_addr, "/small", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.contains("gateway_timeout"), "{}", r.body);
    // connect_timeout is 1 s; the route's own timeout is 5 s.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn queued_requests_take_the_first_connection_to_come_free() {
    // An upstream that accepts one connection and then no more, with its
    // accept queue full: every new connect hangs until connect_timeout.
    let listener = listener_with_backlog_of_one();
    let up = Scripted::at(&listener);
    let counted = up.connections.clone();
    let _listener = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        counted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(tcp));
        std::future::pending::<()>().await;
    });
    let gw = gateway(&up).await;
    small(&gw).await;
    let _fillers = fill_accept_queue(up.addr).await;
    // Five at once: one takes the idle connection, four start connects
    // that cannot succeed, and all five are served by the one connection.
    let addr = gw.running.proxy_addr;
    let burst: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { raw::get(addr, "/small", &[]).await }))
        .collect();
    for r in burst {
        let r = r.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "small"));
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_tls_handshake_that_never_answers_is_504_after_connect_timeout() {
    // Accepts every connection and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Scripted::at(&listener);
    let (addr, counted) = (up.addr, up.connections.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let gw = gateway_to(&format!("https://{addr}"), 1).await;
    let started = std::time::Instant::now();
    let r = raw::get(gw.running.proxy_addr, "/x", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    // The handshake is bounded by connect_timeout (1 s), not only by the
    // route's timeout (5 s).
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_get_on_a_connection_closed_as_it_was_reused_is_sent_again() {
    let (up, gw) = armed_and_idle().await;
    small(&gw).await;
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_post_on_a_connection_closed_as_it_was_reused_is_not_sent_again() {
    let (up, gw) = armed_and_idle().await;
    let r = raw::send(
        gw.running.proxy_addr,
        b"POST /small HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    // The upstream may have acted on it: the client decides, not us.
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_reload_keeps_the_idle_connections_of_unchanged_upstreams() {
    let (up, other) = (Scripted::spawn().await, Scripted::spawn().await);
    let gw = gateway(&up).await;
    small(&gw).await;
    // A new route in front, to another upstream; the old route unchanged.
    let yaml = format!(
        r#"
{ONE_WORKER}
admin: {{ listen: "127.0.0.1:0" }}
routes:
  - name: new
    match: {{ path_prefix: /new }}
    upstream: "http://{}"
    auth: public
  - name: all
    match: {{ path_prefix: / }}
    upstream: "http://{}"
    auth: public
    forward: {{ timeout: 5s, connect_timeout: 1s }}
"#,
        other.addr, up.addr
    );
    let loaded = authgate::config::parse(&yaml, std::path::Path::new("."), &|_| None).unwrap();
    gw.running.gateway.reload(loaded.config).unwrap();
    for _ in 0..3 {
        small(&gw).await;
    }
    let r = raw::get(gw.running.proxy_addr, "/new/small", &[]).await;
    assert_eq!(r.status, 404, "the scripted upstream knows no /new/small");
    assert_eq!((up.connections(), other.connections()), (1, 1));
}
