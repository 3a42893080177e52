//! Logs and metrics. Tokens never reach either: the access log carries only
//! `token_fp`, and no module formats header values.

pub(crate) mod access_log;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod redact;
pub mod sharded;
