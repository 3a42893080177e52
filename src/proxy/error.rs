//! Why a request could not be forwarded, and how each reason is refused.

use http::StatusCode;

use crate::response::Refusal;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream refused or reset the connection, failed the TLS
    /// handshake, or answered garbage.
    #[error("upstream unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No response headers within the route's timeout, or connect timed out.
    #[error("upstream timed out")]
    Timeout,
    /// The request could not be expressed for the upstream.
    #[error("request cannot be forwarded")]
    BadRequest,
    /// Every connection to the destination is busy and the wait for one
    /// is over (or the queue is full): 503 `upstream_busy`.
    #[error("every connection to the upstream is busy")]
    Busy,
    /// The client's request body could not be read: bad chunk framing, or
    /// the client went away mid-body. The client's fault, not the upstream's.
    #[error("the client's request body is malformed or incomplete")]
    ClientBody,
    /// A WebSocket upgrade on a route whose upstream speaks HTTP/2.
    #[error("upgrades need an HTTP/1.1 upstream")]
    UpgradeOverHttp2,
    /// The gRPC client's own deadline (`grpc-timeout`) ran out before the
    /// upstream answered: `DEADLINE_EXCEEDED`.
    #[error("the call's grpc-timeout ran out")]
    Deadline,
}

impl ForwardError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout | ForwardError::Deadline => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::BadRequest
            | ForwardError::ClientBody
            | ForwardError::UpgradeOverHttp2 => StatusCode::BAD_REQUEST,
            ForwardError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason logged and counted, for the errors that have one beyond
    /// their status.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            ForwardError::Busy => Some("upstream_busy"),
            ForwardError::ClientBody => Some("bad_request_body"),
            ForwardError::Deadline => Some("deadline_exceeded"),
            ForwardError::Unavailable(_)
            | ForwardError::Timeout
            | ForwardError::BadRequest
            | ForwardError::UpgradeOverHttp2 => None,
        }
    }

    /// This error as a refusal for `response::refuse` to render.
    pub fn refusal(&self) -> Refusal<'static> {
        let (error, description) = match self {
            ForwardError::Busy => (
                "upstream_busy",
                "every connection to the upstream service is busy; retry shortly",
            ),
            ForwardError::Unavailable(_) => ("bad_gateway", "the upstream service is unavailable"),
            ForwardError::Timeout => (
                "gateway_timeout",
                "the upstream service did not answer in time",
            ),
            ForwardError::BadRequest => ("invalid_request", "the request cannot be forwarded"),
            ForwardError::ClientBody => (
                "invalid_request",
                "the request body is malformed or incomplete",
            ),
            ForwardError::UpgradeOverHttp2 => (
                "invalid_request",
                "this route's upstream speaks HTTP/2, which takes no Upgrade",
            ),
            ForwardError::Deadline => (
                "deadline_exceeded",
                "the call's grpc-timeout ran out before the upstream answered",
            ),
        };
        let refusal = Refusal::new(self.status(), error, description);
        match self {
            ForwardError::Busy => refusal.retry_after(1),
            ForwardError::Deadline => refusal.grpc_status(crate::response::grpc::DEADLINE_EXCEEDED),
            _ => refusal,
        }
    }
}
