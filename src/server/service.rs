//! The hyper service of every client connection: each request is counted
//! (waiting on its upstream, then in flight until its body is dropped),
//! HTTP/2 requests take a place in the process's stream total, and the
//! gateway answers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};

use super::activity::{Activity, Busy};
use crate::gateway::{Gateway, StreamSlot};
use crate::proxy::upgrade::UpgradeSlot;
use crate::proxy::{Body, headers::ClientInfo};

/// The future answering one request.
pub(super) type Reply =
    Pin<Box<dyn Future<Output = Result<Response<ConnBody>, Infallible>> + Send>>;

/// The service hyper calls for each request of one connection. The request
/// counts as in flight until its response body is dropped; an HTTP/1.1
/// upgrade request carries the connection's upgrade slot to the forwarder.
pub(super) fn service(
    gateway: Arc<Gateway>,
    client: ClientInfo,
    activity: Activity,
    upgrades: Option<UpgradeSlot>,
    http2: bool,
) -> impl Service<Request<Incoming>, Response = Response<ConnBody>, Error = Infallible, Future = Reply>
+ Clone
+ Send
+ Unpin
+ 'static {
    service_fn(move |mut req: Request<Incoming>| -> Reply {
        let busy = activity.busy();
        let awaiting = activity.awaiting();
        if let Some(slot) = &upgrades {
            if req.headers().contains_key(header::UPGRADE) {
                req.extensions_mut().insert(slot.clone());
            }
        }
        let (gateway, client) = (gateway.clone(), client.clone());
        // Boxed: parking polls hyper with `poll_without_shutdown`, which
        // wants an `Unpin` future.
        Box::pin(async move {
            let slot = if http2 {
                match gateway.stream_slot() {
                    Some(slot) => Some(slot),
                    None => {
                        return Ok(gateway.too_many_streams(&req).map(|inner| ConnBody {
                            inner,
                            _busy: busy,
                            _slot: None,
                        }));
                    }
                }
            } else {
                None
            };
            let response = gateway.handle(req, client).await;
            drop(awaiting);
            Ok(response.map(|inner| ConnBody {
                inner,
                _busy: busy,
                _slot: slot,
            }))
        })
    })
}

/// A response body that keeps its request counted as in flight (and, for
/// HTTP/2, its place in the process's stream total).
pub(super) struct ConnBody {
    inner: Body,
    _busy: Busy,
    _slot: Option<StreamSlot>,
}

impl http_body::Body for ConnBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }
    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
