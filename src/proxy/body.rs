//! The one body type the gateway answers with: a streamed upstream body,
//! a small in-memory body, or nothing. Avoids boxing on the hot path.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

pin_project! {
    /// A response body.
    #[project = BodyProj]
    pub enum Body {
        /// Streamed from the upstream, frame by frame.
        Incoming { #[pin] inner: Incoming },
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

    /// A streamed body.
    pub fn incoming(inner: Incoming) -> Self {
        Body::Incoming { inner }
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
            BodyProj::Incoming { inner } => inner.poll_frame(cx),
            BodyProj::Full { inner } => inner
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            BodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Incoming { inner } => inner.is_end_stream(),
            Body::Full { inner } => inner.is_end_stream(),
            Body::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Incoming { inner } => inner.size_hint(),
            Body::Full { inner } => inner.size_hint(),
            Body::Empty => SizeHint::with_exact(0),
        }
    }
}
