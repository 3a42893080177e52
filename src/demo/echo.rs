//! The demo upstream: answers every request with a JSON echo of its method,
//! path and headers, so the identity headers authgate adds are visible. A
//! gRPC call (over h2c, the demo's `/demo.Echo/` route) gets its request
//! message back with `grpc-status: 0`, whatever the method: a protobuf
//! message echoed is a valid answer of the same type.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The echo's answers: a few frames, trailers perhaps.
type EchoBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// Serves the echo on `listener` (HTTP/1.1 and cleartext HTTP/2).
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(match crate::response::grpc::is_grpc(req.headers()) {
                    true => grpc_echo(req).await,
                    false => echo(&req),
                })
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn frames(frames: Vec<Frame<Bytes>>) -> EchoBody {
    let frames: Vec<_> = frames.into_iter().map(Ok).collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

fn echo(req: &Request<Incoming>) -> Response<EchoBody> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "headers": headers,
    });
    let text = serde_json::to_string_pretty(&body).unwrap_or_default();
    let mut r = Response::new(frames(vec![Frame::data(Bytes::from(text))]));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The request's messages back, then `grpc-status: 0`; the subject the
/// gateway forwarded comes back as `x-auth-subject` metadata.
async fn grpc_echo(req: Request<Incoming>) -> Response<EchoBody> {
    let subject = req.headers().get("x-auth-subject").cloned();
    let mut trailers = HeaderMap::new();
    let body = match req.into_body().collect().await {
        Ok(collected) => {
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            collected.to_bytes()
        }
        Err(_) => {
            trailers.insert("grpc-status", HeaderValue::from_static("13"));
            Bytes::new()
        }
    };
    let mut r = Response::new(frames(vec![Frame::data(body), Frame::trailers(trailers)]));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(subject) = subject {
        h.insert("x-auth-subject", subject);
    }
    r
}
