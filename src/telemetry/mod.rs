//! Logs and metrics. Tokens never reach either: the access log carries only
//! `token_fp`, and no module formats header values.

pub mod access_log;
pub mod logging;
pub mod metrics;
pub mod redact;
