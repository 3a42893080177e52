//! A real upstream on loopback that records every request it sees and
//! echoes method, path and headers back as JSON. Bodies are read as a
//! stream and only counted. `?delay_ms=N` delays the answer; an `Upgrade`
//! request is answered 101 and the upgraded bytes are echoed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uri: String,
    pub headers: HeaderMap,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn spawn() -> Self {
        Self::spawn_with(None).await
    }

    /// An upstream serving HTTPS with `acceptor`'s certificate.
    pub async fn spawn_tls(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::spawn_with(Some(acceptor)).await
    }

    async fn spawn_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Self {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
        };
        let served = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let up = served.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let up = up.clone();
                        async move { Ok::<_, Infallible>(up.answer(req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        up
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Number of requests seen.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn answer(&self, mut req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let upgrade = req.headers().contains_key("upgrade");
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let headers = req.headers().clone();
        let delay = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("delay_ms="))
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let mut body = req.into_body();
        let mut body_len = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        let echo: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        self.seen.lock().unwrap().push(Seen {
            uri: uri.clone(),
            headers,
        });
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if let Some(on_upgrade) = on_upgrade {
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            return Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        let body = serde_json::json!({"method": method, "uri": uri, "headers": echo, "body_len": body_len});
        Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", "echo")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    }
}
