//! Forwarding to upstreams: header rewrites (`headers`), the response body
//! type (`body`) and the pooled client (`forward`). No authentication here.

pub mod body;
pub mod forward;
pub mod headers;

pub use body::Body;
pub use forward::{ForwardError, Forwarder};
