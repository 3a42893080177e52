//! Turns the raw YAML value into a typed [`Config`], collecting every problem
//! (each as `path: what is wrong (what would be right)`) instead of stopping
//! at the first. Defaults live here and only here.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::file::{
    AdminFile, ForwardFile, IssuerFile, MatchFile, PolicyFile, RevocationFile, RouteFile,
    ServerFile, TopFile,
};
use super::*;

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_HMAC_SECRET: usize = 32;

/// Default `server.listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default `admin.listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default `server.drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most `server.workers` accepted.
const MAX_WORKERS: u64 = 1024;

/// Default identity headers (CONTRACT §2 `forward.headers`).
pub const DEFAULT_IDENTITY_HEADERS: [(&str, &str); 3] = [
    ("x-auth-subject", "sub"),
    ("x-auth-issuer", "iss"),
    ("x-auth-scopes", "scope"),
];

struct Validator<'a> {
    base_dir: &'a Path,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: &'a mut Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
}

/// Validates `value`; returns `None` (with `problems` filled) when invalid.
pub fn validate(
    value: &Value,
    base_dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Loaded> {
    let mut v = Validator {
        base_dir,
        lookup,
        problems,
        warnings: Vec::new(),
    };
    let top: TopFile = match value {
        Value::Null => TopFile::default(),
        other => v.shape("", other.clone())?,
    };
    let explicit_max_connections = top
        .server
        .as_ref()
        .and_then(|s| s.get("max_connections"))
        .is_some();
    let server = v.server(top.server);
    let admin = v.admin(top.admin);
    let issuers = v.issuers(top.issuers);
    let revocation = v.revocation(top.revocation);
    let routes = v.routes(top.routes, &issuers);
    let (mut server, tls_server) = server?;
    let routes = routes?;
    v.check_limits(&mut server, &routes, explicit_max_connections);
    let warnings = std::mem::take(&mut v.warnings);
    Some(Loaded {
        config: Config {
            server,
            tls_server,
            admin: admin?,
            issuers: issuers.into_iter().map(Arc::new).collect(),
            revocation: revocation?,
            routes,
        },
        warnings,
    })
}

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
    fn check_limits(&mut self, server: &mut ServerConfig, routes: &[RouteConfig], explicit: bool) {
        let mut destinations: Vec<(&http::uri::Authority, usize)> = Vec::new();
        for route in routes {
            let a = &route.upstream.authority;
            match destinations.iter_mut().find(|(d, _)| *d == a) {
                Some((_, n)) => *n = (*n).max(route.forward.max_connections),
                None => destinations.push((a, route.forward.max_connections)),
            }
        }
        let upstream: u64 = destinations.iter().map(|(_, n)| *n as u64).sum();
        let needed = server.max_connections as u64 + upstream + RESERVED_DESCRIPTORS;
        if let Some(hard) = crate::server::limits::descriptor_limit() {
            let fits = hard.saturating_sub(upstream + RESERVED_DESCRIPTORS);
            if needed > hard && !explicit && fits >= 64 {
                self.lint(
                    "server.max_connections",
                    format!(
                        "the default of {} does not fit this process's {hard} file descriptors; using {fits}",
                        server.max_connections
                    ),
                    "raise the hard limit (ulimit -Hn, LimitNOFILE=) or set max_connections",
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

    fn problem(&mut self, path: &str, problem: impl Into<String>, expected: impl Into<String>) {
        self.problems
            .push(ConfigProblem::new(path, problem, expected));
    }

    /// Deserialises one section, reporting a serde error at its exact path.
    fn shape<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let at = if inner == "." {
                    path.to_owned()
                } else if inner.starts_with('[') {
                    format!("{path}{inner}")
                } else {
                    join(path, &inner)
                };
                let p = describe_serde_error(&at, &e.into_inner().to_string());
                self.problems.push(p);
                None
            }
        }
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(t) => match parse_duration(t) {
                Some(d) => {
                    let key = path.rsplit('.').next().unwrap_or(path);
                    let max = max_duration(key);
                    if d > max {
                        self.problem(
                            path,
                            format!("{t} is more than the largest allowed, {}", show(max)),
                            format!("at most {}", show(max)),
                        );
                        return default;
                    }
                    d
                }
                None => {
                    self.problem(
                        path,
                        format!("{t:?} is not a duration"),
                        "a number with ms, s, m or h, like 500ms or 30s",
                    );
                    default
                }
            },
        }
    }

    fn file(&mut self, path: &str, file: &str) -> PathBuf {
        let p = self.base_dir.join(file);
        if let Err(e) = std::fs::metadata(&p) {
            self.problem(
                path,
                format!("cannot read {file}: {}", io_reason(&e)),
                "a readable file",
            );
        }
        p
    }

    fn addr(&mut self, path: &str, text: Option<&str>, default: &str) -> SocketAddr {
        let text = text.unwrap_or(default);
        match text.parse() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    path,
                    format!("{text:?} is not an address"),
                    "IP:PORT, like 0.0.0.0:8443",
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn server(
        &mut self,
        value: Option<Value>,
    ) -> Option<(ServerConfig, Option<Arc<rustls::ServerConfig>>)> {
        let f: ServerFile = match value {
            None | Some(Value::Null) => ServerFile::default(),
            Some(v) => self.shape("server", v)?,
        };
        let tls = f.tls.map(|t| TlsConfig {
            cert_file: self.file("server.tls.cert_file", &t.cert_file),
            key_file: self.file("server.tls.key_file", &t.key_file),
            client_ca_file: t
                .client_ca_file
                .map(|c| self.file("server.tls.client_ca_file", &c)),
        });
        let tls_server = match &tls {
            Some(t)
                if self
                    .problems
                    .iter()
                    .all(|p| !p.path.starts_with("server.tls")) =>
            {
                match crate::tls::server_config(t) {
                    Ok(c) => Some(c),
                    Err(p) => {
                        self.problems.push(p);
                        None
                    }
                }
            }
            _ => None,
        };
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
            None => crate::server::workers::default_count(),
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
        Some((server, tls_server))
    }

    fn admin(&mut self, value: Option<Value>) -> Option<AdminConfig> {
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

    fn revocation(&mut self, value: Option<Value>) -> Option<RevocationConfig> {
        let f: RevocationFile = match value {
            None | Some(Value::Null) => RevocationFile::default(),
            Some(v) => self.shape("revocation", v)?,
        };
        let store = match f.store.as_deref().unwrap_or("memory") {
            "memory" => RevocationStore::Memory,
            "redis" => match f.redis_url {
                // Parsed exactly as `run` will (the same function).
                Some(url) => match crate::revocation::redis::client(&url, None) {
                    Ok(_) => RevocationStore::Redis(url),
                    Err(p) => {
                        self.problems.push(p);
                        RevocationStore::Memory
                    }
                },
                None => {
                    self.problem(
                        "revocation.redis_url",
                        "missing for store: redis",
                        "redis://HOST:PORT",
                    );
                    RevocationStore::Memory
                }
            },
            other => {
                self.problem(
                    "revocation.store",
                    format!("unknown store {other:?}"),
                    "memory or redis",
                );
                RevocationStore::Memory
            }
        };
        let deny_on_store_error = match f.on_store_error.as_deref().unwrap_or("deny") {
            "deny" => true,
            "allow" => false,
            other => {
                self.problem(
                    "revocation.on_store_error",
                    format!("unknown policy {other:?}"),
                    "deny or allow",
                );
                true
            }
        };
        let ca_file = f.ca_file.map(|c| self.file("revocation.ca_file", &c));
        let store_grace = self.duration(
            "revocation.store_grace",
            f.store_grace.as_deref(),
            Duration::from_secs(5),
        );
        Some(RevocationConfig {
            store,
            deny_on_store_error,
            ca_file,
            store_grace,
        })
    }

    fn issuers(&mut self, value: Option<Value>) -> Vec<IssuerConfig> {
        let map = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                self.problem("issuers", "not a mapping", "issuer names mapped to issuers");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (key, value) in map {
            let Some(name) = key.as_str().map(str::to_owned) else {
                self.problem("issuers", "issuer name is not a string", "a plain name");
                continue;
            };
            let path = join("issuers", &name);
            if let Some(f) = self.shape::<IssuerFile>(&path, value) {
                if let Some(issuer) = self.issuer(&path, name, f) {
                    out.push(issuer);
                }
            }
        }
        out
    }

    fn issuer(&mut self, path: &str, name: String, f: IssuerFile) -> Option<IssuerConfig> {
        let issuer = match &f.issuer {
            Some(i) if !i.is_empty() => i.clone(),
            _ => {
                self.problem(
                    &join(path, "issuer"),
                    "missing",
                    "the exact iss value of the issuer's tokens",
                );
                String::new()
            }
        };
        let mut algorithms = Vec::new();
        let introspection_only = f.introspection.is_some()
            && f.jwks_uri.is_none()
            && f.discovery != Some(true)
            && f.jwks_file.is_none()
            && f.hmac_secret_env.is_none();
        match &f.algorithms {
            // Opaque tokens carry no algorithm to choose.
            None if introspection_only => {}
            None => self.problem(
                &join(path, "algorithms"),
                "missing",
                "the algorithms this issuer signs with, like [ES256, RS256]",
            ),
            Some(list) if list.is_empty() => self.problem(
                &join(path, "algorithms"),
                "empty",
                "at least one algorithm, like [ES256]",
            ),
            Some(list) => {
                for (i, a) in list.iter().enumerate() {
                    let at = format!("{path}.algorithms[{i}]");
                    if a.eq_ignore_ascii_case("none") {
                        self.problem(
                            &at,
                            "\"none\" is never accepted",
                            "a signing algorithm, like ES256",
                        );
                    } else {
                        match Algorithm::from_str(a) {
                            Ok(alg) => algorithms.push(alg),
                            Err(_) => self.problem(
                                &at,
                                format!("unsupported algorithm {a:?}"),
                                "one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA HS256 HS384 HS512",
                            ),
                        }
                    }
                }
            }
        }
        let keys = self.key_source(path, &issuer, &f, &algorithms);
        let cache = f.jwks_cache.unwrap_or_default();
        let cache_path = join(path, "jwks_cache");
        let jwks_cache = JwksCacheConfig {
            ttl: self.duration(
                &join(&cache_path, "ttl"),
                cache.ttl.as_deref(),
                Duration::from_secs(600),
            ),
            refresh_on_unknown_kid: cache.refresh_on_unknown_kid.unwrap_or(true),
            min_refresh_interval: self.duration(
                &join(&cache_path, "min_refresh_interval"),
                cache.min_refresh_interval.as_deref(),
                Duration::from_secs(30),
            ),
            stale_if_error: self.duration(
                &join(&cache_path, "stale_if_error"),
                cache.stale_if_error.as_deref(),
                Duration::from_secs(24 * 3600),
            ),
        };
        let introspection = f.introspection.map(|i| {
            let at = join(path, "introspection");
            if !is_http_url(&i.endpoint) {
                self.problem(
                    &join(&at, "endpoint"),
                    format!("{:?} is not an http(s) URL", i.endpoint),
                    "https://HOST/PATH",
                );
            } else if i.endpoint.starts_with("http://") && !is_loopback_url(&i.endpoint) {
                self.lint(
                    &join(&at, "endpoint"),
                    "tokens and the client secret sent over plain http to a non-loopback host",
                    "an https URL",
                );
            }
            IntrospectionConfig {
                endpoint: i.endpoint,
                client_id: i.client_id,
                client_secret: Secret(i.client_secret.into_bytes()),
                cache_ttl: self.duration(
                    &join(&at, "cache_ttl"),
                    i.cache_ttl.as_deref(),
                    Duration::from_secs(60),
                ),
                timeout: self.duration(
                    &join(&at, "timeout"),
                    i.timeout.as_deref(),
                    Duration::from_secs(2),
                ),
            }
        });
        let keys = match (keys, &introspection) {
            (Some(k), _) => k,
            (None, Some(_)) => KeySource::IntrospectionOnly,
            (None, None) => {
                self.problem(
                    path,
                    "no key source",
                    "one of jwks_uri, discovery: true, jwks_file, hmac_secret_env or introspection",
                );
                KeySource::IntrospectionOnly
            }
        };
        for (i, c) in f.required_claims.iter().enumerate() {
            if c.is_empty() {
                self.problem(
                    &format!("{path}.required_claims[{i}]"),
                    "empty claim name",
                    "a claim name like sub",
                );
            }
        }
        Some(IssuerConfig {
            name,
            issuer,
            keys,
            algorithms,
            ca_file: f.ca_file.map(|c| self.file(&join(path, "ca_file"), &c)),
            audiences: f.audiences,
            leeway: self.duration(
                &join(path, "leeway"),
                f.leeway.as_deref(),
                Duration::from_secs(30),
            ),
            max_lifetime: f
                .max_lifetime
                .as_deref()
                .map(|t| self.duration(&join(path, "max_lifetime"), Some(t), Duration::ZERO)),
            required_claims: f.required_claims,
            token_type: f.token_type.map(|t| normalise_typ(&t)),
            jwks_cache,
            introspection,
        })
    }

    /// Exactly one key source; HS algorithms only with an HMAC secret.
    fn key_source(
        &mut self,
        path: &str,
        issuer: &str,
        f: &IssuerFile,
        algorithms: &[Algorithm],
    ) -> Option<KeySource> {
        let mut sources = Vec::new();
        if let Some(uri) = &f.jwks_uri {
            if !is_http_url(uri) {
                self.problem(
                    &join(path, "jwks_uri"),
                    format!("{uri:?} is not an http(s) URL"),
                    "https://HOST/PATH",
                );
            } else if uri.starts_with("http://") && !is_loopback_url(uri) {
                self.lint(
                    &join(path, "jwks_uri"),
                    "keys fetched over plain http from a non-loopback host",
                    "an https URL",
                );
            }
            sources.push(("jwks_uri", KeySource::JwksUri(uri.clone())));
        }
        if f.discovery == Some(true) {
            if !is_http_url(issuer) {
                self.problem(
                    &join(path, "discovery"),
                    "the issuer is not an http(s) URL, so it has no discovery document",
                    "jwks_uri or jwks_file",
                );
            } else if issuer.starts_with("http://") && !is_loopback_url(issuer) {
                self.lint(
                    &join(path, "discovery"),
                    "discovery over plain http from a non-loopback host",
                    "an https issuer",
                );
            }
            sources.push(("discovery", KeySource::Discovery));
        }
        if let Some(file) = &f.jwks_file {
            let p = self.file(&join(path, "jwks_file"), file);
            sources.push(("jwks_file", KeySource::JwksFile(p)));
        }
        if let Some(var) = &f.hmac_secret_env {
            let at = join(path, "hmac_secret_env");
            let secret = match (self.lookup)(var) {
                Some(s) if s.len() >= MIN_HMAC_SECRET => s.into_bytes(),
                Some(s) => {
                    self.problem(
                        &at,
                        format!("the secret in {var} is {} bytes", s.len()),
                        format!("at least {MIN_HMAC_SECRET} random bytes"),
                    );
                    Vec::new()
                }
                None => {
                    self.problem(
                        &at,
                        format!("environment variable {var} is not set"),
                        format!("export {var} before starting authgate"),
                    );
                    Vec::new()
                }
            };
            sources.push(("hmac_secret_env", KeySource::Hmac(Secret(secret))));
        }
        if sources.len() > 1 {
            let names: Vec<&str> = sources.iter().map(|(n, _)| *n).collect();
            self.problem(
                path,
                format!("several key sources: {}", names.join(", ")),
                "exactly one key source",
            );
        }
        let source = sources.into_iter().next().map(|(_, s)| s);
        let hmac = matches!(source, Some(KeySource::Hmac(_)));
        for (i, alg) in algorithms.iter().enumerate() {
            let at = format!("{path}.algorithms[{i}]");
            match (is_hmac(*alg), hmac) {
                (true, false) if source.is_some() => self.problem(
                    &at,
                    format!("{alg:?} on an issuer whose keys are public keys"),
                    "an asymmetric algorithm (RS*, PS*, ES*, EdDSA), or an HS algorithm only with hmac_secret_env",
                ),
                (false, true) => self.problem(
                    &at,
                    format!("{alg:?} needs a public key but the issuer has an HMAC secret"),
                    "HS256, HS384 or HS512",
                ),
                _ => {}
            }
        }
        source
    }

    fn routes(
        &mut self,
        value: Option<Value>,
        issuers: &[IssuerConfig],
    ) -> Option<Vec<RouteConfig>> {
        let list = match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(s)) => s,
            Some(_) => {
                self.problem("routes", "not a list", "a list of routes");
                return None;
            }
        };
        let before = self.problems.len();
        let mut names = HashSet::new();
        let mut out = Vec::new();
        let mut hmac_users: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, value) in list.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(f) = self.shape::<RouteFile>(&path, value) else {
                continue;
            };
            if let Some(name) = &f.name {
                if !names.insert(name.clone()) {
                    self.problem(
                        &join(&path, "name"),
                        format!("route name {name:?} is used twice"),
                        "a unique name per route",
                    );
                }
            }
            if let Some(route) = self.route(&path, f, issuers) {
                if let RouteAuth::Protected(p) = &route.auth {
                    for name in &p.issuers {
                        if let Some(iss) = issuers.iter().find(|i| &i.name == name) {
                            if matches!(iss.keys, KeySource::Hmac(_)) {
                                *hmac_users.entry(&iss.name).or_default() += 1;
                            }
                        }
                    }
                }
                out.push(route);
            }
        }
        for (name, n) in hmac_users {
            if n > 1 {
                self.lint(
                    &format!("issuers.{name}.algorithms"),
                    format!("an HMAC secret shared by {n} routes: any of their upstreams holding it could mint tokens for the others"),
                    "an asymmetric algorithm for issuers that several routes share",
                );
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    fn route(&mut self, path: &str, f: RouteFile, issuers: &[IssuerConfig]) -> Option<RouteConfig> {
        let name = match f.name {
            Some(n) if !n.is_empty() => n,
            _ => {
                self.problem(&join(path, "name"), "missing", "a unique route name");
                String::new()
            }
        };
        let m = match f.matcher {
            Some(m) => m,
            None => {
                self.problem(
                    &join(path, "match"),
                    "missing",
                    "a match with path, path_prefix or path_template",
                );
                MatchFile::default()
            }
        };
        let (host, path_match, methods, params) = self.matcher(&join(path, "match"), m);
        let upstream = self.upstream(&join(path, "upstream"), f.upstream.as_deref());
        let auth = self.auth(&join(path, "auth"), f.auth, issuers, &params);
        let forward = self.forward(&join(path, "forward"), f.forward.unwrap_or_default());
        if forward.keep_authorization {
            if let Some(up) = &upstream {
                if !up.https && !is_loopback_host(up.authority.host()) {
                    self.lint(
                        &join(path, "forward.authorization"),
                        "keep sends bearer tokens in clear text to a non-loopback upstream",
                        "strip, or an https or loopback upstream",
                    );
                }
            }
        }
        Some(RouteConfig {
            name: name.into(),
            host,
            path: path_match?,
            methods,
            upstream: upstream?,
            auth: auth?,
            forward,
        })
    }

    #[allow(clippy::type_complexity)]
    fn matcher(
        &mut self,
        path: &str,
        m: MatchFile,
    ) -> (
        Option<String>,
        Option<PathMatch>,
        Option<Vec<Method>>,
        Vec<String>,
    ) {
        let host = m.host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let mut found = Vec::new();
        let mut params = Vec::new();
        if let Some(p) = m.path {
            found.push(("path", PathMatch::Exact(p)));
        }
        if let Some(p) = m.path_prefix {
            found.push((
                "path_prefix",
                PathMatch::Prefix(p.trim_end_matches('/').to_owned()),
            ));
        }
        if let Some(p) = m.path_template {
            found.push(("path_template", PathMatch::Template(p)));
        }
        if found.len() != 1 {
            self.problem(
                path,
                if found.is_empty() {
                    "no path matcher".to_owned()
                } else {
                    let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
                    format!("several path matchers: {}", names.join(", "))
                },
                "exactly one of path, path_prefix, path_template",
            );
        }
        let mut path_match = None;
        if let Some((key, pm)) = found.into_iter().next() {
            let pattern = match &pm {
                PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Template(p) => p,
            };
            let is_template = matches!(pm, PathMatch::Template(_));
            let original = if pattern.is_empty() { "/" } else { pattern };
            match crate::routing::check_pattern(original, is_template) {
                Ok(p) => {
                    params = p;
                    path_match = Some(pm);
                }
                Err(problem) => self.problem(
                    &join(path, key),
                    problem,
                    "a normalised absolute path like /orders or /tenants/{tenant}/orders",
                ),
            }
        }
        let methods = m.methods.map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| match Method::from_bytes(text.as_bytes()) {
                    Ok(m) if text.bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
                    _ => {
                        self.problem(
                            &format!("{path}.methods[{i}]"),
                            format!("{text:?} is not an HTTP method"),
                            "an upper-case method like GET",
                        );
                        None
                    }
                })
                .collect()
        });
        (host, path_match, methods, params)
    }

    fn upstream(&mut self, path: &str, text: Option<&str>) -> Option<Upstream> {
        let Some(text) = text else {
            self.problem(path, "missing", "http://HOST:PORT or https://HOST:PORT");
            return None;
        };
        let bad = |v: &mut Self, why: &str| {
            v.problem(
                path,
                format!("{text:?} {why}"),
                "http://HOST:PORT or https://HOST:PORT",
            );
            None
        };
        let Ok(uri) = text.parse::<http::Uri>() else {
            return bad(self, "is not a URL");
        };
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return bad(self, "is not an http or https URL"),
        };
        let Some(authority) = uri.authority().cloned() else {
            return bad(self, "has no host");
        };
        if authority.as_str().contains('@') {
            return bad(self, "carries credentials");
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return bad(self, "has a path or query, which authgate does not rewrite");
        }
        let Ok(host) = http::HeaderValue::from_str(authority.as_str()) else {
            return bad(self, "has a host that cannot be a Host header");
        };
        Some(Upstream {
            https,
            authority,
            host,
        })
    }

    fn auth(
        &mut self,
        path: &str,
        value: Option<Value>,
        issuers: &[IssuerConfig],
        params: &[String],
    ) -> Option<RouteAuth> {
        let value = match value {
            None => {
                self.problem(
                    path,
                    "missing",
                    "`public` or a policy with issuers; there is no implicit public route",
                );
                return None;
            }
            Some(Value::String(s)) if s == "public" => return Some(RouteAuth::Public),
            Some(Value::String(s)) => {
                self.problem(
                    path,
                    format!("{s:?} is not a policy"),
                    "`public` or a policy",
                );
                return None;
            }
            Some(v) => v,
        };
        let f: PolicyFile = self.shape(path, value)?;
        let before = self.problems.len();
        let names = f.issuers.unwrap_or_default();
        if names.is_empty() {
            self.problem(
                &join(path, "issuers"),
                "missing",
                "the names of the issuers whose tokens this route accepts",
            );
        }
        let mut chosen = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match issuers.iter().find(|c| &c.name == name) {
                Some(c) => chosen.push(c),
                None => {
                    let known: Vec<&str> = issuers.iter().map(|c| c.name.as_str()).collect();
                    self.problem(
                        &format!("{path}.issuers[{i}]"),
                        format!("unknown issuer {name:?}"),
                        if known.is_empty() {
                            "an issuer defined under issuers:".to_owned()
                        } else {
                            format!("one of {}", known.join(", "))
                        },
                    );
                }
            }
        }
        let introspecting: Vec<&str> = chosen
            .iter()
            .filter(|c| c.introspection.is_some())
            .map(|c| c.name.as_str())
            .collect();
        if introspecting.len() > 1 {
            self.problem(
                &join(path, "issuers"),
                format!(
                    "several issuers with introspection ({}), but an opaque token does not say which one issued it",
                    introspecting.join(", ")
                ),
                "at most one issuer with introspection per route",
            );
        }
        match &f.audiences {
            Some(a) if a.is_empty() => self.problem(
                &join(path, "audiences"),
                "empty, so any audience would pass",
                "at least one audience",
            ),
            Some(_) => {}
            None => {
                for c in &chosen {
                    // Only an issuer with no keys at all is exempt: one
                    // that also verifies JWTs would pass them with any `aud`.
                    let jwt_issuer = !matches!(c.keys, KeySource::IntrospectionOnly);
                    if c.audiences.is_empty() && jwt_issuer {
                        self.problem(
                            &join(path, "audiences"),
                            format!(
                                "no audience for issuer {:?}, so any audience would pass",
                                c.name
                            ),
                            format!("audiences here or in issuers.{}.audiences", c.name),
                        );
                    }
                }
            }
        }
        let mut claims = Vec::new();
        for (claim, value) in f.claims {
            let at = format!("{path}.claims.{claim}");
            let v = match value
                .strip_prefix("{path.")
                .and_then(|r| r.strip_suffix('}'))
            {
                Some(param) if params.iter().any(|p| p == param) => {
                    ClaimValue::PathParam(param.to_owned())
                }
                Some(param) => {
                    self.problem(
                        &at,
                        format!(
                            "{{path.{param}}} is not a parameter of this route's path_template"
                        ),
                        if params.is_empty() {
                            "a path_template with that {parameter}".to_owned()
                        } else {
                            format!(
                                "one of {}",
                                params
                                    .iter()
                                    .map(|p| format!("{{path.{p}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        },
                    );
                    continue;
                }
                None => ClaimValue::Literal(value),
            };
            claims.push((claim, v));
        }
        let mut token_from = Vec::new();
        for (i, s) in f
            .token_from
            .unwrap_or_else(|| vec!["header".into()])
            .iter()
            .enumerate()
        {
            match s.as_str() {
                "header" => token_from.push(TokenSource::Header),
                c if c.starts_with("cookie:") && c.len() > 7 => {
                    token_from.push(TokenSource::Cookie(c[7..].to_owned()))
                }
                other => self.problem(
                    &format!("{path}.token_from[{i}]"),
                    format!("unknown token source {other:?}"),
                    "header or cookie:NAME",
                ),
            }
        }
        (self.problems.len() == before).then_some({
            RouteAuth::Protected(Policy {
                issuers: names,
                audiences: f.audiences,
                clients: f.clients,
                scopes_all: f.scopes_all,
                scopes_any: f.scopes_any,
                claims,
                token_from,
            })
        })
    }

    fn forward(&mut self, path: &str, f: ForwardFile) -> ForwardConfig {
        let mut headers = Vec::new();
        match f.headers {
            None => {
                for (h, c) in DEFAULT_IDENTITY_HEADERS {
                    headers.push((HeaderName::from_static(h), c.to_owned()));
                }
            }
            Some(map) => {
                for (name, claim) in map {
                    let at = format!("{path}.headers.{name}");
                    match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(h) if crate::proxy::headers::is_reserved(&h) => self.problem(
                            &at,
                            format!("{name} is set by the gateway itself"),
                            "an identity header name like X-Auth-Tenant",
                        ),
                        Ok(h) => headers.push((h, claim)),
                        Err(_) => self.problem(
                            &at,
                            "not a valid header name",
                            "a token like X-Auth-Tenant",
                        ),
                    }
                }
            }
        }
        let keep_authorization = match f.authorization.as_deref().unwrap_or("strip") {
            "strip" => false,
            "keep" => true,
            other => {
                self.problem(
                    &join(path, "authorization"),
                    format!("unknown choice {other:?}"),
                    "strip or keep",
                );
                false
            }
        };
        ForwardConfig {
            headers,
            keep_authorization,
            timeout: self.duration(
                &join(path, "timeout"),
                f.timeout.as_deref(),
                Duration::from_secs(30),
            ),
            connect_timeout: self.duration(
                &join(path, "connect_timeout"),
                f.connect_timeout.as_deref(),
                Duration::from_secs(5),
            ),
            ca_file: f.ca_file.map(|c| self.file(&join(path, "ca_file"), &c)),
            max_connections: match f.max_connections.unwrap_or(DEFAULT_UPSTREAM_CONNECTIONS) {
                n @ 1..=MAX_UPSTREAM_CONNECTIONS => n as usize,
                n => {
                    self.problem(
                        &join(path, "max_connections"),
                        format!("{n} is out of range"),
                        format!("1 to {MAX_UPSTREAM_CONNECTIONS}"),
                    );
                    DEFAULT_UPSTREAM_CONNECTIONS as usize
                }
            },
        }
    }

    fn lint(&mut self, path: &str, problem: impl Into<String>, expected: impl Into<String>) {
        self.warnings
            .push(ConfigProblem::new(path, problem, expected));
    }
}

/// Turns a serde message into `path: problem (expected)`.
fn describe_serde_error(path: &str, msg: &str) -> ConfigProblem {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(", expected ")
            .trim_start_matches("one of ")
            .replace('`', "");
        let at = match path.rsplit_once('.') {
            Some((parent, last)) if last == key => join(parent, key),
            _ if path.ends_with(key) => path.to_owned(),
            _ => join(path, key),
        };
        return ConfigProblem::new(&at, "unknown key", format!("one of {expected}"));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let key = rest.trim_end_matches('`');
        return ConfigProblem::new(&join(path, key), "missing", "required");
    }
    if let Some((got, expected)) = msg.split_once(", expected ") {
        return ConfigProblem::new(path, got, expected);
    }
    ConfigProblem::new(path, msg, "see gateway.yaml")
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.kind().to_string(),
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn is_http_url(s: &str) -> bool {
    s.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

fn is_loopback_url(s: &str) -> bool {
    s.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(is_loopback_host))
        .unwrap_or(false)
}

/// `localhost` or a loopback IP.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// HS256/384/512.
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// `typ` as compared (RFC 9068 §4): lower case, without `application/`.
pub fn normalise_typ(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .map(str::to_owned)
        .unwrap_or(lower)
}

/// The largest value each duration key may take (CONTRACT §8.1b): past
/// these a value is a typo or a way to switch a check off, and some (a
/// `min_refresh_interval` of 9,000,000 hours) overflow the clock arithmetic
/// of the caches.
pub fn max_duration(key: &str) -> Duration {
    const M: u64 = 60;
    const H: u64 = 3600;
    Duration::from_secs(match key {
        "leeway" => super::MAX_LEEWAY.as_secs(),
        "header_read_timeout" | "connect_timeout" | "store_grace" => 5 * M,
        "min_refresh_interval" | "drain_timeout" | "timeout" => H,
        "idle_timeout" | "ttl" | "cache_ttl" => 24 * H,
        "stale_if_error" => 7 * 24 * H,
        "max_lifetime" => 30 * 24 * H,
        _ => 24 * H,
    })
}

/// `90s`, `5m`, `24h`: a bound as an operator would write it.
fn show(d: Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
