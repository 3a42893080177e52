//! When a request may be sent to its upstream a second time: only a
//! bodiless GET, HEAD or OPTIONS, and only when the upstream closed the
//! (reused) connection without answering (see `pool::RETRY_IF_IDLE`).

use http::Request;

use super::request_body::RequestBody;

/// Whether the upstream closed or reset the connection before any answer.
pub(super) fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            );
        }
        source = s.source();
    }
    false
}

/// A copy of a bodiless GET, HEAD or OPTIONS request, to send again.
pub(super) fn resendable(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let idempotent = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !idempotent || !matches!(req.body(), RequestBody::Empty) {
        return None;
    }
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}
