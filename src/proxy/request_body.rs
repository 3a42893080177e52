//! The body a request carries upstream, and how far the client has sent it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// A request body for the upstream: the client's, or none. A request
/// without a body can be sent again (see `pool.rs`); hyper's `Incoming`
/// cannot be made anew, hence this type. Not [`Body`] with its `Empty`:
/// that larger type, moved through hyper's client, measured 700
/// instructions a request more under `bench/callgrind.sh`.
pub enum RequestBody {
    /// Streamed from the client; `progress` says whether it has ended or
    /// failed.
    Incoming {
        /// The client's body.
        inner: Incoming,
        /// Shared with the connection's lease.
        progress: Arc<Progress>,
    },
    /// No body.
    Empty,
}

/// How far a client's request body has got, as the upstream connection
/// needs to know: a connection is reused only once its request body has
/// ended (the response ending first is not enough, or the next request
/// would queue behind a client trickling its body), and a failure of the
/// client's body framing is the client's error (400), not the upstream's.
#[derive(Debug, Default)]
pub struct Progress {
    ended: AtomicBool,
    failed: AtomicBool,
}

impl Progress {
    /// True once the whole body was read from the client.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// True when reading the body from the client failed (bad chunk
    /// framing, a reset client).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

impl RequestBody {
    /// The client's body, or `Empty` when it has already ended (a GET).
    pub fn new(body: Incoming) -> Self {
        if http_body::Body::is_end_stream(&body) {
            RequestBody::Empty
        } else {
            RequestBody::Incoming {
                inner: body,
                progress: Arc::default(),
            }
        }
    }

    /// The body's progress, if it is streamed from the client.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        match self {
            RequestBody::Incoming { progress, .. } => Some(progress.clone()),
            RequestBody::Empty => None,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Incoming { inner, progress } => {
                let frame = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                match &frame {
                    None => progress.ended.store(true, Ordering::Release),
                    Some(Ok(_)) if inner.is_end_stream() => {
                        progress.ended.store(true, Ordering::Release);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => progress.failed.store(true, Ordering::Release),
                }
                Poll::Ready(frame)
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming { inner, .. } => inner.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming { inner, .. } => inner.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
