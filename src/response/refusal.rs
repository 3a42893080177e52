//! A refusal described by the layer that refuses (auth, proxy, server),
//! before `response::refuse` renders it. A leaf: it knows nothing of bodies
//! or listeners, so any layer may describe a refusal without importing the
//! layers above it.

use http::StatusCode;

/// A gateway-made refusal, before it is rendered.
#[derive(Debug)]
pub struct Refusal<'a> {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` member (an RFC 6750 code, or ours: `upstream_busy`, ...).
    pub error: &'a str,
    /// The `error_description` member; never holds a token.
    pub description: &'a str,
    /// The `WWW-Authenticate` challenge, if any.
    pub challenge: Option<String>,
    /// Seconds for `Retry-After`, if the client should come back.
    pub retry_after: Option<u64>,
    /// The `grpc-status` for gRPC clients, when the HTTP status's mapping
    /// does not say it (a `grpc-timeout` that ran out).
    pub grpc_status: Option<u8>,
    /// A fresh DPoP nonce for the client (`DPoP-Nonce`).
    pub dpop_nonce: Option<String>,
}

impl<'a> Refusal<'a> {
    /// A refusal with no challenge and no `Retry-After`.
    pub fn new(status: StatusCode, error: &'a str, description: &'a str) -> Self {
        Self {
            status,
            error,
            description,
            challenge: None,
            retry_after: None,
            grpc_status: None,
            dpop_nonce: None,
        }
    }

    /// The same, asking the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The same, with `code` as its `grpc-status`.
    pub fn grpc_status(mut self, code: u8) -> Self {
        self.grpc_status = Some(code);
        self
    }
}
