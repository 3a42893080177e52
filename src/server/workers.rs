//! The proxy's worker threads, nginx's worker processes in one process.
//!
//! Each worker is a thread running a single-threaded tokio runtime. The
//! acceptor (`listener::accept_loop`) hands each new connection to the worker
//! serving the fewest, and that worker serves it from start to end on its
//! thread, upstream connections included: the pool keeps one idle stack per
//! worker (`proxy::pool`). Nothing on the hot path crosses threads, so no
//! request pays for a cross-thread wake-up, a work-stealing scheduler or a
//! task moving between cores. Against tokio's multi-threaded runtime this
//! measured 15 to 30 % less CPU a request (README, Performance). The cost:
//! a connection cannot move to an idle core once it has been placed.

/// Starts worker `index`: a thread named `authgate-worker-N` running `work`
/// to completion on a runtime of its own, then dropping that runtime, which
/// closes whatever connections it still holds. `done` fires after that.
pub fn spawn<F, Fut>(
    index: usize,
    work: F,
    done: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(format!("authgate-worker-{index}"))
        .spawn(move || {
            crate::proxy::pool::set_shard(index);
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    runtime.block_on(work());
                    drop(runtime);
                }
                Err(e) => tracing::error!(worker = index, error = %e, "cannot start a worker"),
            }
            let _ = done.send(());
        })
        .map(drop)
}
