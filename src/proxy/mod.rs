//! Forwarding to upstreams: header rewrites (`headers`) and the names they
//! treat specially (`names`), the response body
//! type (`body`) and the forwarder (`forward`) and its upstream connections (`pool`). No authentication here.

pub(crate) mod body;
pub(crate) mod error;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod names;
pub(crate) mod pool;
pub(crate) mod request_body;
pub(crate) mod retry;
pub(crate) mod upgrade;

pub use body::Body;
pub use forward::{ForwardError, Forwarder};
