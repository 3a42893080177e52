//! Forwarding to upstreams: header rewrites (`headers`) and the names they
//! treat specially (`names`), the response body
//! type (`body`) and the forwarder (`forward`) and its upstream connections (`pool`). No authentication here.

pub mod body;
pub mod error;
pub mod forward;
pub mod headers;
pub mod names;
pub mod pool;
pub mod request_body;
mod retry;

pub use body::Body;
pub use forward::{ForwardError, Forwarder};
