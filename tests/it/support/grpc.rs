//! A real gRPC service (tonic's server machinery behind hyper's HTTP/2
//! server, cleartext or TLS with ALPN h2) and a real tonic client. The
//! messages are derived by hand with prost, so no protoc is needed.
//!
//! `echo.Echo` has the four call shapes:
//! - `Unary`: the message back; `fail:CODE` answers that gRPC status with
//!   trailing metadata `x-why: upstream`; `sleep:MS` waits first.
//! - `ServerStream`: the message three times, then `grpc-status` 9
//!   (`FAILED_PRECONDITION`) with `x-why: after-three` when it is `fail`.
//! - `ClientStream`: every message joined by `,`.
//! - `Bidi`: each message back as it arrives, upper-cased.
//!
//! Every call's request metadata is recorded, and every accepted
//! connection counted.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::{
    ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Code, Request, Response, Status, Streaming};

/// The one message type: a string.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

pub fn msg(text: &str) -> Msg {
    Msg { text: text.into() }
}

type Codec = tonic_prost::ProstCodec<Msg, Msg>;
type BoxStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The running service.
#[derive(Clone)]
pub struct GrpcUpstream {
    pub addr: std::net::SocketAddr,
    /// Request headers of every call, in arrival order.
    pub seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
}

impl GrpcUpstream {
    /// Cleartext HTTP/2 (prior knowledge): `h2c://` upstreams.
    pub async fn spawn() -> Self {
        Self::spawn_with(None).await
    }

    /// HTTP/2 over TLS: the acceptor must offer `h2` in ALPN.
    pub async fn spawn_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Self {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            connections: Arc::default(),
        };
        let served = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                served.connections.fetch_add(1, Ordering::SeqCst);
                let seen = served.seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(req.headers().clone());
                        async move { Ok::<_, Infallible>(dispatch(req).await) }
                    });
                    let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => h2.serve_connection(TokioIo::new(tcp), svc).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => h2.serve_connection(TokioIo::new(stream), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        up
    }

    /// `h2c://127.0.0.1:PORT`
    pub fn h2c_url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<http::HeaderMap> {
        self.seen.lock().unwrap().clone()
    }
}

async fn dispatch(req: http::Request<hyper::body::Incoming>) -> http::Response<tonic::body::Body> {
    let mut grpc = Grpc::new(Codec::default());
    match req.uri().path() {
        "/echo.Echo/Unary" => grpc.unary(Unary, req).await,
        "/echo.Echo/ServerStream" => grpc.server_streaming(ServerStream, req).await,
        "/echo.Echo/ClientStream" => grpc.client_streaming(ClientStream, req).await,
        "/echo.Echo/Bidi" => grpc.streaming(Bidi, req).await,
        _ => Status::unimplemented("no such method").into_http(),
    }
}

fn why(value: &'static str) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("x-why", MetadataValue::from_static(value));
    m
}

struct Unary;
impl UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = BoxFuture<Result<Response<Msg>, Status>>;
    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let user = request.metadata().get("x-user").cloned();
            let text = request.into_inner().text;
            if let Some(code) = text.strip_prefix("fail:") {
                let code = Code::from_i32(code.parse().unwrap());
                return Err(Status::with_metadata(
                    code,
                    "upstream says no",
                    why("upstream"),
                ));
            }
            if let Some(ms) = text.strip_prefix("sleep:") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            }
            let mut response = Response::new(msg(&text));
            if let Some(user) = user {
                response.metadata_mut().insert("x-seen-user", user);
            }
            Ok(response)
        })
    }
}

struct ServerStream;
impl ServerStreamingService<Msg> for ServerStream {
    type Response = Msg;
    type ResponseStream = BoxStream;
    type Future = BoxFuture<Result<Response<BoxStream>, Status>>;
    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let text = request.into_inner().text;
            let fail = text == "fail";
            let items = (0..3).map(move |i| Ok(msg(&format!("{text}#{i}"))));
            let tail = fail.then(|| {
                Err(Status::with_metadata(
                    Code::FailedPrecondition,
                    "stopped after three",
                    why("after-three"),
                ))
            });
            let stream = futures_util::stream::iter(items.chain(tail));
            Ok(Response::new(Box::pin(stream) as BoxStream))
        })
    }
}

struct ClientStream;
impl ClientStreamingService<Msg> for ClientStream {
    type Response = Msg;
    type Future = BoxFuture<Result<Response<Msg>, Status>>;
    fn call(&mut self, request: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let mut incoming = request.into_inner();
            let mut all = Vec::new();
            while let Some(m) = incoming.message().await? {
                all.push(m.text);
            }
            Ok(Response::new(msg(&all.join(","))))
        })
    }
}

struct Bidi;
impl StreamingService<Msg> for Bidi {
    type Response = Msg;
    type ResponseStream = BoxStream;
    type Future = BoxFuture<Result<Response<BoxStream>, Status>>;
    fn call(&mut self, request: Request<Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let incoming = request.into_inner();
            let out = incoming.map(|m| m.map(|m| msg(&m.text.to_uppercase())));
            Ok(Response::new(Box::pin(out) as BoxStream))
        })
    }
}

/// A tonic client for `echo.Echo` through `url` (`http://…` or `https://…`).
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    token: Option<String>,
}

impl EchoClient {
    pub async fn connect(url: &str) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            grpc: tonic::client::Grpc::new(channel),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every call.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn request<T>(&self, body: T) -> Request<T> {
        let mut req = Request::new(body);
        if let Some(t) = &self.token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    }

    pub async fn unary(&mut self, text: &str) -> Result<Response<Msg>, Status> {
        self.unary_req(self.request(msg(text))).await
    }

    pub async fn unary_req(&mut self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/echo.Echo/Unary");
        self.grpc.unary(req, path, Codec::default()).await
    }

    pub async fn server_stream(&mut self, text: &str) -> Result<Streaming<Msg>, Status> {
        self.grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/echo.Echo/ServerStream");
        let req = self.request(msg(text));
        Ok(self
            .grpc
            .server_streaming(req, path, Codec::default())
            .await?
            .into_inner())
    }

    pub async fn client_stream(
        &mut self,
        items: impl Stream<Item = Msg> + Send + 'static,
    ) -> Result<Msg, Status> {
        self.grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/echo.Echo/ClientStream");
        let req = self.request(items);
        Ok(self
            .grpc
            .client_streaming(req, path, Codec::default())
            .await?
            .into_inner())
    }

    pub async fn bidi(
        &mut self,
        items: impl Stream<Item = Msg> + Send + 'static,
    ) -> Result<Streaming<Msg>, Status> {
        self.grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/echo.Echo/Bidi");
        let req = self.request(items);
        Ok(self
            .grpc
            .streaming(req, path, Codec::default())
            .await?
            .into_inner())
    }
}
