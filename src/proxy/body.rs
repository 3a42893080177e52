//! The body the gateway sends to clients, not boxed on the hot path: a
//! streamed upstream body, a small in-memory body, or nothing (the request
//! side is `request_body.rs`). An upstream's body returns its
//! connection to the pool when it has been read to the end (and only then:
//! a connection with unread bytes cannot be reused).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::pool::Lease;

pin_project! {
    /// A response body.
    #[project = BodyProj]
    pub enum Body {
        /// Streamed from the upstream, frame by frame.
        Incoming { #[pin] inner: Incoming, lease: Option<Lease> },
        /// Produced by the gateway (error bodies, admin answers).
        Full { #[pin] inner: Full<Bytes> },
        /// No body.
        Empty,
    }
}

impl Body {
    /// A body holding `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full {
            inner: Full::new(bytes.into()),
        }
    }

    /// A streamed upstream body; `lease` goes back to the pool at its end.
    pub fn upstream(inner: Incoming, lease: Lease) -> Self {
        let lease = if http_body::Body::is_end_stream(&inner) {
            lease.release();
            None
        } else {
            Some(lease)
        };
        Body::Incoming { inner, lease }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            BodyProj::Incoming { mut inner, lease } => {
                let frame = std::task::ready!(inner.as_mut().poll_frame(cx));
                // hyper stops polling once `is_end_stream` says so, so the
                // end is either that or the final `None`.
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => inner.is_end_stream(),
                    Some(Err(_)) => {
                        *lease = None;
                        false
                    }
                };
                if let Some(lease) = lease.take_if(|_| ended) {
                    lease.release();
                }
                Poll::Ready(frame)
            }
            BodyProj::Full { inner } => inner
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            BodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Incoming { inner, .. } => inner.is_end_stream(),
            Body::Full { inner } => inner.is_end_stream(),
            Body::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Incoming { inner, .. } => inner.size_hint(),
            Body::Full { inner } => inner.size_hint(),
            Body::Empty => SizeHint::with_exact(0),
        }
    }
}
