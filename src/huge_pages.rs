//! Transparent huge pages off for the process, as Redis does by default
//! (`disable-thp yes`).
//!
//! mimalloc asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`),
//! and on a kernel set to `always` they come unasked. Memory then grows 2
//! MiB at a time however little of it is used: a freshly started gateway
//! held 13 MiB of anonymous memory with huge pages and 2.2 without, and
//! 10,000 parked HTTP/1.1 connections 52.4 MiB against 31.9 (`bash
//! bench/idle.sh`, README *Idle connections*). A sidecar's memory limit is
//! what that costs, and the proxy's working set is too small for the TLB
//! savings to show.
//!
//! Two parts, because mimalloc starts before `main`: its `no_thp` feature
//! (Cargo.toml) keeps it from asking, which covers the pages it touches
//! before `main`; [`disable`] covers a kernel that gives them unasked.

/// Turns transparent huge pages off for the whole process (the flag is
/// the address space's, not the thread's). Pages already huge stay so;
/// later ones are not, whatever the kernel's setting.
pub fn disable() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "cannot turn transparent huge pages off");
    }
}
