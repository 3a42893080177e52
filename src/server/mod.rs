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
pub(crate) mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::gateway::{Gateway, Runtime};
use crate::telemetry::metrics::Metrics;

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
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    proxy: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Running {
    /// Binds both listeners and starts serving `config`; keys load in the background.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        match crate::descriptors::raise_descriptor_limit() {
            Ok(soft) => tracing::debug!(nofile = soft, "file descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
        }
        let metrics = Arc::new(Metrics::new());
        let proxy_listen = config.server.listen;
        let admin_listen = config.admin.listen;
        let runtime = Runtime::build(config, None, &metrics)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy = bind(proxy_listen).await?;
        let admin = bind(admin_listen).await?;
        let proxy_addr = proxy.local_addr().map_err(|source| StartError::Bind {
            addr: proxy_listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: admin_listen,
            source,
        })?;
        runtime.start_background();
        let gateway = Arc::new(Gateway::new(runtime, metrics));
        let (stop, stopped) = watch::channel(false);
        let proxy = tokio::spawn(listener::accept_loop(gateway.clone(), proxy, stopped));
        let admin = tokio::spawn(crate::admin::listen(gateway.clone(), admin));
        tracing::info!(proxy = %proxy_addr, admin = %admin_addr, "authgate listening");
        Ok(Self {
            gateway,
            proxy_addr,
            admin_addr,
            stop,
            proxy,
            admin,
        })
    }

    /// `/readyz` turns 503, the listener stops accepting, in-flight requests
    /// drain (bounded by `server.drain_timeout`).
    pub async fn shutdown(self) {
        self.gateway.start_draining();
        let _ = self.stop.send(true);
        let _ = self.proxy.await;
        // The admin listener answers (readyz: 503) until the drain is over.
        self.admin.abort();
    }
}
