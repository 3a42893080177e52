//! Everything built from one config file: the compiled routes, the
//! authenticator, the upstream pools, the key caches, introspectors and
//! revocation list. A reload builds the next [`Runtime`] from the previous
//! one, keeping what did not change; requests hold the snapshot they started
//! with.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::auth::introspect::Introspector;
use crate::config::{Config, ConfigProblem};
use crate::jwks::KeyCache;
use crate::proxy::Forwarder;
use crate::proxy::headers::IdentityNames;
use crate::revocation::Revocations;
use crate::routing::RouteTable;
use crate::telemetry::metrics::{Metrics, Name, RouteStats};

/// Everything built from one config file.
#[derive(Debug)]
pub struct Runtime {
    /// The config (routes moved into `routes`).
    pub config: Config,
    /// Compiled routes.
    pub routes: RouteTable,
    /// Authentication for protected routes.
    pub auth: Authenticator,
    /// Upstream clients.
    pub forwarder: Forwarder,
    /// Key caches by issuer name; kept across reloads when the issuer is unchanged.
    pub keys: HashMap<String, Arc<KeyCache>>,
    /// Introspectors by issuer name (issuers with `introspection:`); kept
    /// across reloads like the key caches.
    pub introspectors: HashMap<String, Arc<Introspector>>,
    /// The revocation list; kept across reloads while `revocation:` is unchanged.
    pub revocations: Arc<Revocations>,
    /// Every identity header name of the config: no client sends these
    /// upstream, on any route.
    pub identity_names: IdentityNames,
    /// The listener's rustls config, read from `server.tls`'s files when
    /// this runtime was built (so a reload picks up a new certificate).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// RFC 9728 metadata documents by the path they are served at.
    pub resource_metadata: Vec<(String, bytes::Bytes)>,
    /// Per route (by position): its request counters, resolved once.
    pub stats: Vec<Arc<RouteStats>>,
}

impl Runtime {
    /// Builds a runtime, reusing `previous` key caches whose issuer config is unchanged.
    pub fn build(
        mut config: Config,
        previous: Option<&Runtime>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ConfigProblem> {
        let mut keys = HashMap::new();
        let mut introspectors = HashMap::new();
        for issuer in &config.issuers {
            let reused = previous
                .and_then(|p| p.introspectors.get(&issuer.name))
                .filter(|i| **i.issuer() == **issuer)
                .cloned();
            let introspector = match reused {
                Some(i) => Some(i),
                None => Introspector::new(issuer.clone())?.map(Arc::new),
            };
            if let Some(i) = introspector {
                introspectors.insert(issuer.name.clone(), i);
            }
            let older = previous
                .and_then(|p| p.keys.get(&issuer.name))
                .filter(|k| k.same_source(issuer));
            let cache = match older {
                Some(k) if **k.issuer() == **issuer => k.clone(),
                Some(k) => Arc::new(KeyCache::carrying(issuer.clone(), k, metrics.clone())?),
                None => Arc::new(KeyCache::new(issuer.clone(), metrics.clone())?),
            };
            keys.insert(issuer.name.clone(), cache);
        }
        let revocations = match previous.map(|p| &p.revocations) {
            Some(r) if *r.config() == config.revocation => r.clone(),
            other => Arc::new(Revocations::new(&config.revocation, other.map(|r| &**r))?),
        };
        let tls = match &config.server.tls {
            None => None,
            Some(t) => Some(
                crate::tls::listener_config(
                    &t.cert_file,
                    &t.key_file,
                    t.client_ca_file.as_deref(),
                    t.client_cert_required,
                )
                .map_err(|e| ConfigProblem::new(&e.key, e.problem, e.expected))?,
            ),
        };
        let routes = std::mem::take(&mut config.routes);
        let resource_metadata = routes
            .iter()
            .filter_map(|r| match &r.auth {
                crate::config::RouteAuth::Protected(p) => p.resource_metadata.as_ref(),
                crate::config::RouteAuth::Public => None,
            })
            .map(|m| (m.path.clone(), bytes::Bytes::from(m.document.clone())))
            .collect();
        let identity_names = IdentityNames::new(
            routes
                .iter()
                .flat_map(|r| r.forward.headers.iter().map(|(n, _)| n)),
        );
        let forwarder = Forwarder::new(
            &routes,
            previous.map(|p| &p.forwarder),
            config.server.workers,
        )?;
        let mut api_keys = HashMap::new();
        for issuer in &config.issuers {
            if let crate::config::KeySource::ApiKeys(path) = &issuer.keys {
                let loaded =
                    crate::auth::api_keys::ApiKeys::load(path, &issuer.name).map_err(|e| {
                        ConfigProblem::new(
                            &format!("issuers.{}.api_keys.file", issuer.name),
                            e,
                            "a YAML list of {sha256, subject, ...} entries",
                        )
                    })?;
                api_keys.insert(issuer.name.clone(), Arc::new(loaded));
            }
        }
        let stats = routes
            .iter()
            .map(|r| Arc::new(metrics.route_stats(Name(r.name.clone()))))
            .collect();
        let auth = Authenticator::new(
            &routes,
            &keys,
            &introspectors,
            &api_keys,
            revocations.clone(),
            metrics,
        );
        Ok(Self {
            config,
            routes: RouteTable::new(routes),
            auth,
            forwarder,
            keys,
            introspectors,
            revocations,
            identity_names,
            tls,
            resource_metadata,
            stats,
        })
    }

    /// The TLS server config for the current certificate, if TLS is
    /// configured.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// What keeps this runtime from serving, as (config path, problem):
    /// issuers whose keys have not loaded yet, and a revocation store that
    /// is down under `on_store_error: deny`.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .keys
            .iter()
            .filter(|(_, k)| !k.ready())
            .map(|(name, k)| {
                let problem = k
                    .last_error()
                    .unwrap_or_else(|| "keys not loaded yet".into());
                (format!("issuers.{name}"), problem)
            })
            .collect();
        out.sort();
        if let Some(problem) = self.revocations.not_ready() {
            out.push(("revocation".into(), problem));
        }
        out
    }

    /// Starts background work: loading keys of every issuer not loaded yet,
    /// and the revocation store's subscription.
    pub fn start_background(&self) {
        self.revocations.start();
        // Each cache starts once (its background refresh runs for as long
        // as a runtime holds it); a cache carried over with its keys only
        // needs the refresh.
        for cache in self.keys.values() {
            let cache = cache.clone();
            tokio::spawn(async move { cache.start().await });
        }
    }
}
