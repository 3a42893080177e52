//! `server:` and `admin:`, and the limits that span sections (the
//! file-descriptor budget, route timeouts against `idle_timeout`).

use super::*;

/// `forward.max_connections` when a route does not say.
pub const DEFAULT_UPSTREAM_CONNECTIONS: u64 = 256;
/// The largest `forward.max_connections`.
pub const MAX_UPSTREAM_CONNECTIONS: u64 = 65_535;
/// Descriptors kept for everything but client and upstream connections
/// (listeners, key and Redis connections, files, the runtime's own).
const RESERVED_DESCRIPTORS: u64 = 256;
impl Validator<'_> {
    /// Limits that depend on more than one section: the file-descriptor
    /// budget, and route timeouts longer than the idle timeout.
    /// A `max_connections` left at its default is lowered to fit, with a
    /// warning; one the file sets is an error when it does not fit.
    pub(super) fn check_limits(
        &mut self,
        server: &mut ServerConfig,
        routes: &[RouteConfig],
        explicit: bool,
    ) {
        let mut destinations: Vec<(&http::uri::Authority, usize)> = Vec::new();
        for route in routes {
            let Some(up) = &route.upstream else { continue };
            let a = &up.authority;
            match destinations.iter_mut().find(|(d, _)| *d == a) {
                Some((_, n)) => *n = (*n).max(route.forward.max_connections),
                None => destinations.push((a, route.forward.max_connections)),
            }
        }
        let upstream: u64 = destinations.iter().map(|(_, n)| *n as u64).sum();
        let needed = server.max_connections as u64 + upstream + RESERVED_DESCRIPTORS;
        if let Some(hard) = crate::descriptors::descriptor_limit() {
            let fits = hard.saturating_sub(upstream + RESERVED_DESCRIPTORS);
            if needed > hard && !explicit && fits >= 64 {
                // Not a warning: `check --strict` must not fail a file that
                // sets nothing on a machine with a low limit.
                tracing::info!(
                    default = server.max_connections,
                    using = fits,
                    hard_limit = hard,
                    "server.max_connections lowered to fit the file descriptor limit"
                );
                server.max_connections = fits as usize;
            } else if needed > hard {
                self.problem(
                    "server.max_connections",
                    format!(
                        "{} client connections, {upstream} upstream connections and {RESERVED_DESCRIPTORS} others need {needed} file descriptors, but this process may open {hard}",
                        server.max_connections
                    ),
                    format!(
                        "at most {} (or raise the hard limit: ulimit -Hn, LimitNOFILE=)",
                        hard.saturating_sub(upstream + RESERVED_DESCRIPTORS)
                    ),
                );
            }
        }
        for (i, route) in routes.iter().enumerate() {
            if !server.idle_timeout.is_zero() && route.forward.timeout > server.idle_timeout {
                self.lint(
                    &format!("routes[{i}].forward.timeout"),
                    format!(
                        "{}s is longer than server.idle_timeout ({}s): the upstream may answer after a client behind a proxy with the same idle timeout has given up",
                        route.forward.timeout.as_secs(),
                        server.idle_timeout.as_secs()
                    ),
                    "a timeout no longer than server.idle_timeout",
                );
            }
        }
    }

    pub(super) fn server(&mut self, value: Option<Value>) -> Option<ServerConfig> {
        let f: ServerFile = match value {
            None | Some(Value::Null) => ServerFile::default(),
            Some(v) => self.shape("server", v)?,
        };
        let tls = f.tls.map(|t| TlsConfig {
            cert_file: self.file("server.tls.cert_file", &t.cert_file),
            key_file: self.file("server.tls.key_file", &t.key_file),
            client_cert_required: self
                .client_auth(t.client_auth.as_deref(), t.client_ca_file.is_some()),
            client_ca_file: t
                .client_ca_file
                .map(|c| self.file("server.tls.client_ca_file", &c)),
        });
        // Checked here so that `check` names a bad certificate or key; the
        // runtime builds the listener's rustls config from the same paths.
        if let Some(t) = &tls {
            if self
                .problems
                .iter()
                .all(|p| !p.path.starts_with("server.tls"))
            {
                let built = crate::tls::listener_config(
                    &t.cert_file,
                    &t.key_file,
                    t.client_ca_file.as_deref(),
                    t.client_cert_required,
                );
                if let Err(e) = built {
                    self.problem(&e.key, e.problem, e.expected);
                }
            }
        }
        let max_header_bytes = f.max_header_bytes.unwrap_or(16_384);
        if !(1024..=1_048_576).contains(&max_header_bytes) {
            self.problem(
                "server.max_header_bytes",
                format!("{max_header_bytes} is out of range"),
                "between 1024 and 1048576",
            );
        }
        let max_connections = f.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            self.problem("server.max_connections", "must not be 0", "at least 1");
        }
        let workers = match f.workers {
            None => default_workers(),
            Some(n @ 1..=MAX_WORKERS) => n as usize,
            Some(n) => {
                self.problem(
                    "server.workers",
                    format!("{n} is out of range"),
                    "between 1 and 1024, or left out for one per core",
                );
                1
            }
        };
        let server = ServerConfig {
            listen: self.addr("server.listen", f.listen.as_deref(), DEFAULT_LISTEN),
            tls,
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                f.header_read_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            idle_timeout: self.duration(
                "server.idle_timeout",
                f.idle_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            max_header_bytes: max_header_bytes as usize,
            max_connections: max_connections as usize,
            workers,
            drain_timeout: self.duration(
                "server.drain_timeout",
                f.drain_timeout.as_deref(),
                DEFAULT_DRAIN_TIMEOUT,
            ),
        };
        Some(server)
    }

    pub(super) fn admin(&mut self, value: Option<Value>) -> Option<AdminConfig> {
        let f: AdminFile = match value {
            None | Some(Value::Null) => AdminFile::default(),
            Some(v) => self.shape("admin", v)?,
        };
        let token_sha256 = match f.token_sha256.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(hex) => match decode_hex32(hex) {
                Some(d) => Some(d),
                None => {
                    self.problem(
                        "admin.token_sha256",
                        "not a SHA-256 digest",
                        "64 hex digits, as printed by `printf %s TOKEN | sha256sum`",
                    );
                    None
                }
            },
        };
        Some(AdminConfig {
            listen: self.addr("admin.listen", f.listen.as_deref(), DEFAULT_ADMIN_LISTEN),
            token_sha256,
        })
    }
}

/// How many workers the proxy runs when `server.workers` is not set:
/// `AUTHGATE_WORKER_THREADS`, or one per core.
fn default_workers() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::env::var("AUTHGATE_WORKER_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}
