//! Process signals: SIGTERM / SIGINT stop the gateway, SIGHUP reloads.

use tokio::signal::unix::{SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop accepting, drain, exit 0.
    Terminate,
    /// Reload the config file.
    Reload,
}

/// Listens for SIGTERM, SIGINT and SIGHUP.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (before the listener opens, so no signal is lost).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Terminate,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(super) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // Awaited as a temporary: bound to a name first, the future would be
    // held twice (as the local and as the awaited value).
    let _ = futures_util::future::OptionFuture::from(stop_pending(stop)).await;
}

/// The stop still to come, or `None` when it has come. The flag only ever
/// turns true (`Running::shutdown`), so any change (or the sender gone) is
/// the stop: `changed()`, whose future is smaller than `wait_for`'s, and a
/// parked connection's task holds it (`http1.rs`).
pub(super) fn stop_pending(
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<impl Future<Output = Result<(), tokio::sync::watch::error::RecvError>> + Send + '_> {
    let stopped = *stop.borrow_and_update();
    (!stopped).then(|| stop.changed())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio::time::timeout;

    use super::stopped;

    #[tokio::test]
    async fn stopped_resolves_once_the_flag_is_set_even_if_already_seen() {
        let (tx, mut rx) = watch::channel(false);
        assert!(
            timeout(Duration::from_millis(50), stopped(&mut rx))
                .await
                .is_err(),
            "not stopped yet"
        );
        tx.send(true).unwrap();
        timeout(Duration::from_secs(1), stopped(&mut rx))
            .await
            .expect("the stop");
        // Seen once already: a second wait (a connection that parks after
        // the stop) must not wait for a change that will never come.
        timeout(Duration::from_secs(1), stopped(&mut rx))
            .await
            .expect("a stop already seen is still the stop");
        let (gone, mut orphan) = watch::channel(false);
        drop(gone);
        timeout(Duration::from_secs(1), stopped(&mut orphan))
            .await
            .expect("a sender gone is the stop");
        drop(tx);
    }
}
