//! Running a gateway: bind the proxy and admin listeners, serve, and stop
//! with a bounded drain. Used by `authgate run`, `authgate demo` and the
//! integration tests alike, so all three exercise the same code.

mod activity;
mod connection;
mod http1;
mod http2;
pub(crate) mod listener;
mod service;
pub(crate) mod shutdown;
pub(crate) mod side;
mod tls_stream;
pub(crate) mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::gateway::{Gateway, Runtime};
use crate::telemetry::metrics::Metrics;

/// What serving a client connection reads of `server:`, copied into the
/// connection's future (the whole `ServerConfig` is 184 bytes, and an async
/// function holds its arguments twice for as long as it runs).
#[derive(Clone, Copy)]
struct Limits {
    header_read_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
    max_header_bytes: usize,
}

impl Limits {
    fn of(server: &crate::config::ServerConfig) -> Self {
        Limits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_header_bytes: server.max_header_bytes,
        }
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config could not be turned into a runtime (CA files, clients).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigProblem),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started gateway.
pub struct Running {
    /// The gateway (for reloads and inspection).
    pub gateway: Arc<Gateway>,
    /// Where the proxy listens (`0.0.0.0:0` when the config has only a
    /// decision listener).
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// Where the decision listener listens, when the config has one.
    pub decisions_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    proxy: Option<JoinHandle<()>>,
    admin: JoinHandle<()>,
    decisions: Option<JoinHandle<()>>,
}

impl Running {
    /// Binds both listeners and starts serving `config`; keys load in the background.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        match crate::descriptors::raise_descriptor_limit() {
            Ok(soft) => tracing::debug!(nofile = soft, "file descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
        }
        // The binary does this first thing; this is for gateways started
        // in-process (tests, benches).
        crate::huge_pages::disable();
        let metrics = Arc::new(Metrics::new());
        let proxy_listen = config.proxy.then_some(config.server.listen);
        let admin_listen = config.admin.listen;
        let decisions_listen = config.decisions.as_ref().map(|d| d.listen);
        let runtime = Runtime::build(config, None, &metrics)?;
        let proxy = bind(proxy_listen).await?;
        let decisions = bind(decisions_listen).await?;
        let (admin, admin_addr) = bind_one(admin_listen).await?;
        let addr = |l: &Option<(TcpListener, SocketAddr)>| l.as_ref().map(|(_, a)| *a);
        let proxy_addr = addr(&proxy).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let decisions_addr = addr(&decisions);
        runtime.start_background();
        let gateway = Arc::new(Gateway::new(runtime, metrics));
        let (stop, stopped) = watch::channel(false);
        let proxy = proxy.map(|(listener, _)| {
            tokio::spawn(listener::accept_loop(gateway.clone(), listener, stopped))
        });
        let decisions = decisions
            .map(|(listener, _)| tokio::spawn(crate::decisions::listen(gateway.clone(), listener)));
        let admin = tokio::spawn(crate::admin::listen(gateway.clone(), admin));
        tracing::info!(proxy = %proxy_addr, admin = %admin_addr, decisions = ?decisions_addr, "authgate listening");
        Ok(Self {
            gateway,
            proxy_addr,
            admin_addr,
            decisions_addr,
            stop,
            proxy,
            admin,
            decisions,
        })
    }

    /// `/readyz` turns 503, the listener stops accepting, in-flight requests
    /// drain (bounded by `server.drain_timeout`).
    pub async fn shutdown(self) {
        self.gateway.start_draining();
        let _ = self.stop.send(true);
        if let Some(proxy) = self.proxy {
            let _ = proxy.await;
        }
        // The admin and decision listeners answer (readyz: 503) until the
        // drain is over.
        self.admin.abort();
        if let Some(decisions) = self.decisions {
            decisions.abort();
        }
    }
}

/// Binds `addr`, if there is one to bind.
async fn bind(addr: Option<SocketAddr>) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    match addr {
        None => Ok(None),
        Some(addr) => bind_one(addr).await.map(Some),
    }
}

/// Binds `addr`; the listener and the address it got.
async fn bind_one(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}
