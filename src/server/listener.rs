//! The proxy listener: accept under `max_connections`, hand each connection
//! to the least busy worker thread (`connection.rs` takes it from there),
//! and on stop drain in-flight connections for at most `drain_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::shutdown::stopped;
use super::workers;
use crate::gateway::Gateway;

/// Accepts on `listener` until `stop` turns true, handing each connection
/// to the worker thread serving the fewest (Envoy's exact balance); then
/// waits (at most the configured drain time) for in-flight connections to
/// finish, and ends the workers. Accepting in one place costs a hand-off
/// per connection, not per request, and keeps the workers evenly loaded:
/// left to race each other for the listening socket, they split a client's
/// connections unevenly, and the busier one's p99 showed it.
pub async fn accept_loop(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let server = gateway.runtime().config.server.clone();
    let max = server.max_connections.min(Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    let (mut workers, ended) = start_workers(&gateway, &stop, server.workers);
    while !workers.is_empty() {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        if let Ok(tcp) = tcp.into_std() {
            let ip = peer.ip();
            hand_over(&mut workers, Handed { tcp, ip, permit });
        }
    }
    if workers.is_empty() {
        tracing::error!("no worker thread is running; not serving");
    }
    drop(listener);
    let drain = gateway.runtime().config.server.drain_timeout;
    tracing::info!(
        drain_s = drain.as_secs_f64(),
        "stopped accepting; draining connections"
    );
    match tokio::time::timeout(drain, slots.acquire_many(max)).await {
        Ok(_) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!(
            open = max as usize - slots.available_permits(),
            "drain time over; closing remaining connections"
        ),
    }
    // Closing the hand-off channels ends the workers.
    drop(workers);
    for done in ended {
        let _ = done.await;
    }
}

/// A worker thread as the acceptor sees it.
struct Worker {
    hand: mpsc::UnboundedSender<Handed>,
    /// Connections it is serving: the acceptor counts them in, the worker
    /// counts them out.
    load: Arc<AtomicUsize>,
}

/// Starts `count` workers, each serving what it is handed; also returns
/// what reports each one's end.
fn start_workers(
    gateway: &Arc<Gateway>,
    stop: &watch::Receiver<bool>,
    count: usize,
) -> (Vec<Worker>, Vec<oneshot::Receiver<()>>) {
    let (mut workers, mut ended) = (Vec::new(), Vec::new());
    for index in 0..count {
        let (hand, accepted) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let load = Arc::new(AtomicUsize::new(0));
        let (gateway, stop, counted) = (gateway.clone(), stop.clone(), load.clone());
        let work = move || run_worker(gateway, accepted, counted, stop);
        match workers::spawn(index, work, done_tx) {
            Ok(()) => {
                workers.push(Worker { hand, load });
                ended.push(done_rx);
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot start a worker"),
        }
    }
    (workers, ended)
}

/// Gives `handed` to the least busy worker. One whose thread is gone (it
/// could not start its runtime) is dropped from the list and the next tried.
fn hand_over(workers: &mut Vec<Worker>, mut handed: Handed) {
    while let Some(i) = (0..workers.len()).min_by_key(|i| workers[*i].load.load(Ordering::Relaxed))
    {
        let w = &workers[i];
        w.load.fetch_add(1, Ordering::Relaxed);
        match w.hand.send(handed) {
            Ok(()) => return,
            Err(mpsc::error::SendError(back)) => {
                tracing::error!("a worker thread is gone; serving on the others");
                workers.swap_remove(i);
                handed = back;
            }
        }
    }
}

/// An accepted connection on its way to a worker.
struct Handed {
    tcp: std::net::TcpStream,
    ip: std::net::IpAddr,
    /// Its place under `max_connections`, held until it closes.
    permit: OwnedSemaphorePermit,
}

/// A connection's hold on its worker's load count and its place under
/// `max_connections`, given back when its task ends (a panic included).
struct Served {
    load: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker: serves each connection handed to it, on this thread, until
/// the acceptor closes the channel.
async fn run_worker(
    gateway: Arc<Gateway>,
    mut accepted: mpsc::UnboundedReceiver<Handed>,
    load: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
) {
    let mut reloads = gateway.reloads();
    let mut reloading = true;
    loop {
        let handed = tokio::select! {
            handed = accepted.recv() => match handed {
                Some(handed) => handed,
                None => break,
            },
            // This thread's snapshot moves to the new runtime now, not at
            // its next request (`Gateway::snapshot`).
            changed = reloads.changed(), if reloading => {
                match changed {
                    Ok(()) => drop(gateway.snapshot()),
                    Err(_) => reloading = false,
                }
                continue;
            }
        };
        let done = Served {
            load: load.clone(),
            _permit: handed.permit,
        };
        let Ok(tcp) = TcpStream::from_std(handed.tcp) else {
            continue;
        };
        super::connection::spawn(gateway.clone(), tcp, handed.ip, stop.clone(), done);
    }
}
