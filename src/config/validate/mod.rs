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
    AdminFile, DecisionsFile, DpopFile, ForwardFile, IssuerFile, MatchFile, PolicyFile,
    ResourceMetadataFile, RevocationFile, RouteFile, ServerFile, TopFile,
};
use super::*;

mod browser;
mod decisions;
mod dpop;
mod forward;
mod issuers;
mod revocation;
mod routes;
mod server;

pub use server::{DEFAULT_UPSTREAM_CONNECTIONS, MAX_UPSTREAM_CONNECTIONS};

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
    let proxy = top.server.is_some() || top.decisions.is_none();
    let decisions = v.decisions(top.decisions);
    let admin = v.admin(top.admin);
    let issuers = v.issuers(top.issuers);
    let revocation = v.revocation(top.revocation);
    let server = v.server(top.server);
    let routes = v.routes(top.routes, &issuers, decisions.is_some());
    let mut server = server?;
    let routes = routes?;
    v.check_limits(&mut server, &routes, explicit_max_connections);
    let warnings = std::mem::take(&mut v.warnings);
    Some(Loaded {
        config: Config {
            server,
            admin: admin?,
            issuers: issuers.into_iter().map(Arc::new).collect(),
            revocation: revocation?,
            routes,
            decisions,
            proxy,
        },
        warnings,
    })
}

impl Validator<'_> {
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

/// A URL whose host is loopback (`localhost`, 127.0.0.0/8, `[::1]`).
pub fn is_loopback_url(s: &str) -> bool {
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
        "min_refresh_interval" | "drain_timeout" | "timeout" | "max_age" => H,
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
