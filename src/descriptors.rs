//! The process's file-descriptor budget: raised to the hard limit at start
//! (as nginx's `worker_rlimit_nofile` and Envoy's launch scripts do), and
//! read by `check` so that `max_connections` plus the upstream caps never
//! promise more descriptors than the process may open.

/// The hard `RLIMIT_NOFILE`, when the platform has one.
pub fn descriptor_limit() -> Option<u64> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    (hard != rlimit::INFINITY).then_some(hard)
}

/// Raises the soft descriptor limit to the hard one; returns the new soft
/// limit (or why it could not be raised, which is logged, not fatal).
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    let hard = descriptor_limit().unwrap_or(u64::MAX);
    rlimit::increase_nofile_limit(hard)
}
