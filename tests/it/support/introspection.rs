//! A real RFC 7662 introspection endpoint on loopback: answers from a
//! table of tokens, records each call (Authorization header and form
//! body), and can be made to fail, answer nonsense or stall.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// How the endpoint behaves.
#[derive(Clone)]
pub enum Mode {
    /// Answers from the table (`active: false` for unknown tokens).
    Normal,
    /// Answers this status with an empty body.
    Status(u16),
    /// Answers 200 with this body.
    Body(&'static str),
    /// Waits this long before answering normally.
    Stall(Duration),
}

/// One call as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Clone)]
pub struct Introspection {
    pub url: String,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Introspection {
    pub async fn spawn() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self {
            url: format!("http://{}/introspect", listener.local_addr().unwrap()),
            answers: Arc::default(),
            calls: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Normal)),
        };
        let served = me.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let me = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        me
    }

    /// Makes `token` active with `claims`.
    pub fn active(&self, token: &str, claims: Value) {
        let mut answer = claims;
        answer["active"] = json!(true);
        self.answers.lock().unwrap().insert(token.into(), answer);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (authorization, content_type) = (header("authorization"), header("content-type"));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        self.calls.lock().unwrap().push(Call {
            authorization,
            content_type,
            body: body.clone(),
        });
        let mode = self.mode.lock().unwrap().clone();
        let reply = |status: u16, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        };
        match mode {
            Mode::Status(s) => return reply(s, String::new()),
            Mode::Body(b) => return reply(200, b.into()),
            Mode::Stall(d) => tokio::time::sleep(d).await,
            Mode::Normal => {}
        }
        let token = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
            .unwrap_or_default();
        let answer = self
            .answers
            .lock()
            .unwrap()
            .get(&token)
            .cloned()
            .unwrap_or_else(|| json!({"active": false}));
        reply(200, answer.to_string())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
