//! Configuration: `gateway.yaml` read (`yaml.rs`), shaped (`file.rs`) and
//! validated (`validate.rs`) into the typed [`Config`] the gateway runs on.
//! Loading never half-succeeds: either every check passes or the caller gets
//! every problem found.

mod duration;
mod file;
mod validate;
mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;

pub use duration::parse_duration;
pub use validate::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDENTITY_HEADERS, DEFAULT_LISTEN, is_hmac,
    is_loopback_host, is_loopback_url, normalise_typ,
};

/// One thing wrong with a config file, printed as `path: problem (expected)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where, as `issuers.corp.leeway` or `routes[2].match.path`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
    /// What would be right.
    pub expected: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: &str, problem: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} ({})", self.problem, self.expected)
        } else {
            write!(f, "{}: {} ({})", self.path, self.problem, self.expected)
        }
    }
}

impl std::error::Error for ConfigProblem {}

/// Joins a config path and a key: `join("issuers", "corp")` is `issuers.corp`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A successfully validated file, with the security lints it raised.
#[derive(Debug)]
pub struct Loaded {
    /// The config to run.
    pub config: Config,
    /// Lint findings: warnings, or errors under `check --strict`.
    pub warnings: Vec<ConfigProblem>,
}

/// Reads and validates the file at `path`; relative file paths inside it are
/// resolved against the file's directory.
pub fn load(path: &Path) -> Result<Loaded, Vec<ConfigProblem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigProblem::new(
            "",
            format!("cannot read {}: {e}", path.display()),
            "a readable gateway.yaml",
        )]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base, &|name| std::env::var(name).ok())
}

/// Validates YAML `text`, with `lookup` answering `${NAME}`.
pub fn parse(
    text: &str,
    base_dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let value = yaml::parse(text, lookup, &mut problems).map_err(|p| vec![p])?;
    let early = problems.len();
    let result = validate::validate(&value, base_dir, lookup, &mut problems);
    // A value whose ${VAR} was missing is reported once, not again as invalid.
    let reported: Vec<String> = problems[..early].iter().map(|p| p.path.clone()).collect();
    let mut index = 0;
    problems.retain(|p| {
        index += 1;
        index <= early || !reported.contains(&p.path)
    });
    match result {
        Some(loaded) if problems.is_empty() => Ok(loaded),
        _ => Err(problems),
    }
}

/// The whole validated configuration.
#[derive(Debug)]
pub struct Config {
    /// `server:`
    pub server: ServerConfig,
    /// `admin:`
    pub admin: AdminConfig,
    /// `issuers:`, in file order.
    pub issuers: Vec<Arc<IssuerConfig>>,
    /// `revocation:`
    pub revocation: RevocationConfig,
    /// `routes:`, in file order (first match wins).
    pub routes: Vec<RouteConfig>,
    /// `decisions:`: the decision listener, when there is one.
    pub decisions: Option<DecisionsConfig>,
    /// Whether the proxy listener runs: `server:` may be left out when
    /// `decisions:` is there, and then only the decision listener serves.
    pub proxy: bool,
}

/// `decisions:`
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionsConfig {
    /// Address of the decision listener.
    pub listen: SocketAddr,
    /// Peers allowed to ask (default: loopback only).
    pub trusted_proxies: Vec<Cidr>,
}

/// An address range, `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a single host).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse().ok()?, None),
        };
        let max = match addr {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in this range (an IPv4-mapped IPv6 peer counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `server:`
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address of the proxy listener.
    pub listen: SocketAddr,
    /// TLS files; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Time allowed for a request's headers (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request head accepted; beyond it the client gets 431.
    pub max_header_bytes: usize,
    /// Connections served at once; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Worker threads serving the proxy port (`server::workers`); read at
    /// start only.
    pub workers: usize,
    /// Bound on the SIGTERM drain.
    pub drain_timeout: Duration,
}

/// `server.tls:`
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, client certificates are requested and verified.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: a client certificate is required (the
    /// default) or only verified when sent.
    pub client_cert_required: bool,
}

/// `admin:`
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address of the admin listener.
    pub listen: SocketAddr,
    /// SHA-256 of the admin bearer token; `None` disables `POST /revocations`.
    pub token_sha256: Option<[u8; 32]>,
}

/// Bytes that must never be printed: `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A JWKS document at this URL.
    JwksUri(String),
    /// `{issuer}/.well-known/openid-configuration` names the JWKS URL.
    Discovery,
    /// A JWKS document on disk.
    JwksFile(PathBuf),
    /// A shared HMAC secret from the environment (HS* algorithms only).
    Hmac(Secret),
    /// No keys: opaque tokens are checked by RFC 7662 introspection.
    IntrospectionOnly,
    /// API keys looked up by their SHA-256 in this file (CONTRACT §8.5).
    ApiKeys(PathBuf),
}

/// `issuers.NAME.introspection:`
#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    /// RFC 7662 endpoint.
    pub endpoint: String,
    /// Client id for HTTP Basic authentication.
    pub client_id: String,
    /// Client secret for HTTP Basic authentication.
    pub client_secret: Secret,
    /// Upper bound on caching an answer.
    pub cache_ttl: Duration,
    /// Time allowed for one call, connect included.
    pub timeout: Duration,
    /// `response: jwt`: answers are RFC 9701 JWTs signed with the issuer's
    /// keys (phantom tokens).
    pub signed: bool,
}

/// `issuers.NAME.jwks_cache:`
#[derive(Debug, Clone, PartialEq)]
pub struct JwksCacheConfig {
    /// Upper bound on key freshness; a shorter `Cache-Control: max-age` wins.
    pub ttl: Duration,
    /// Refetch keys once when a token names a kid we do not know.
    pub refresh_on_unknown_kid: bool,
    /// At most one unknown-kid refresh per issuer per this interval.
    pub min_refresh_interval: Duration,
    /// How long the last good keys keep serving while fetches fail.
    pub stale_if_error: Duration,
}

/// One entry of `issuers:`.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// The name routes refer to.
    pub name: String,
    /// Exact value of the `iss` claim.
    pub issuer: String,
    /// Where keys come from.
    pub keys: KeySource,
    /// The only algorithms accepted, whatever a token's header says.
    pub algorithms: Vec<Algorithm>,
    /// Extra CA for key and discovery fetches.
    pub ca_file: Option<PathBuf>,
    /// Default accepted audiences (any-of).
    pub audiences: Vec<String>,
    /// Clock skew allowed on exp / nbf / iat.
    pub leeway: Duration,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: Option<Duration>,
    /// Claims that must be present (exp is always required).
    pub required_claims: Vec<String>,
    /// Required `typ` header, compared case-insensitively without `application/`.
    pub token_type: Option<String>,
    /// Key cache behaviour.
    pub jwks_cache: JwksCacheConfig,
    /// RFC 7662 introspection for opaque tokens.
    pub introspection: Option<IntrospectionConfig>,
    /// How DPoP proofs for this issuer's tokens are checked.
    pub dpop: DpopConfig,
}

/// `issuers.NAME.dpop` (RFC 9449).
#[derive(Debug, Clone, PartialEq)]
pub struct DpopConfig {
    /// Asymmetric algorithms a proof may use.
    pub algorithms: Vec<Algorithm>,
    /// The issuer has a `dpop:` section: its routes' challenges offer DPoP
    /// (bound tokens are enforced either way).
    pub announced: bool,
    /// How old a proof's `iat` may be (the issuer's leeway added).
    pub max_age: Duration,
    /// Proofs must carry a server nonce.
    pub nonce: bool,
    /// The nonce key: shared by replicas (`nonce_secret_env`) or random
    /// per process and issuer (the same across reloads).
    pub nonce_secret: Secret,
}

/// `revocation.store`
#[derive(Debug, Clone, PartialEq)]
pub enum RevocationStore {
    /// In this process only.
    Memory,
    /// Shared by every replica through Redis.
    Redis(String),
}

/// `revocation:`
#[derive(Debug, Clone, PartialEq)]
pub struct RevocationConfig {
    /// Where revocations live.
    pub store: RevocationStore,
    /// Fail closed (`true`, the default) or open while the store is down.
    pub deny_on_store_error: bool,
    /// Extra CA for a `rediss://` store (besides the system roots).
    pub ca_file: Option<PathBuf>,
    /// How long a lost subscription may stay lost before `on_store_error`
    /// applies (a brief drop must not turn every request into a 503).
    pub store_grace: Duration,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    /// `path`: the whole normalised path.
    Exact(String),
    /// `path_prefix`: whole segments only.
    Prefix(String),
    /// `path_template`: `/tenants/{tenant}/orders`.
    Template(String),
}

/// An upstream's scheme and authority.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// `true` for https.
    pub https: bool,
    /// `true` for HTTP/2: `h2c://` (prior knowledge), or `https://` with
    /// `forward.protocol: http2` (ALPN `h2`).
    pub http2: bool,
    /// `host:port` as written.
    pub authority: http::uri::Authority,
    /// The same, as the `Host` header the upstream receives.
    pub host: http::HeaderValue,
}

/// Where a route looks for the token.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// `Authorization: Bearer …`
    Header,
    /// A cookie of this name.
    Cookie(String),
    /// A header of this name holding the credential as it is
    /// (`header:X-Api-Key`).
    NamedHeader(http::HeaderName),
}

/// A claim constraint's expected value.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    /// Must equal this string.
    Literal(String),
    /// Must equal the value bound to this `path_template` parameter.
    PathParam(String),
}

/// A protected route's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Names of accepted issuers.
    pub issuers: Vec<String>,
    /// The route's own audiences; when `None` each issuer's defaults apply.
    pub audiences: Option<Vec<String>>,
    /// Accepted `azp` / `client_id` values.
    pub clients: Option<Vec<String>>,
    /// Every one must be granted.
    pub scopes_all: Vec<String>,
    /// At least one must be granted (when non-empty).
    pub scopes_any: Vec<String>,
    /// Exact-match claim constraints (dotted claim path, value).
    pub claims: Vec<(String, ClaimValue)>,
    /// Where the token may come from.
    pub token_from: Vec<TokenSource>,
    /// `auth.sender_constrained: required`: only tokens bound to the
    /// sender's key (DPoP or a client certificate) pass.
    pub sender_constrained: bool,
    /// Origins (`https://app.example`) allowed to make unsafe requests
    /// authenticated by a cookie (CSRF protection).
    pub allowed_origins: Vec<String>,
    /// `cors_preflight: forward`: CORS preflights go upstream unauthenticated.
    pub cors_preflight: bool,
    /// `optional: true`: no credentials is no identity, not a refusal.
    pub optional: bool,
    /// RFC 9728 metadata served for this route, named in its challenges.
    pub resource_metadata: Option<Box<ResourceMetadata>>,
}

impl Policy {
    /// Whether a claim constraint names a path parameter (so the policy's
    /// answer depends on the request, not on the claims alone).
    pub fn reads_path(&self) -> bool {
        self.claims
            .iter()
            .any(|(_, v)| matches!(v, ClaimValue::PathParam(_)))
    }
}

/// `auth.resource_metadata` (RFC 9728), with where it is served.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceMetadata {
    /// The metadata document (JSON).
    pub document: String,
    /// The path it is served at: `/.well-known/oauth-protected-resource`
    /// before the resource's path (RFC 9728 §3.1).
    pub path: String,
    /// The whole URL, as the challenge's `resource_metadata` names it.
    pub url: String,
}

/// `routes[i].auth`
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAuth {
    /// No authentication.
    Public,
    /// Authenticate with this policy.
    Protected(Box<Policy>),
}

/// The largest `leeway` an issuer may set (CONTRACT §8.1b).
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `routes[i].forward`
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// Identity headers: header name <- dotted claim path.
    pub headers: Vec<(HeaderName, String)>,
    /// Forward the client's `Authorization` header.
    pub keep_authorization: bool,
    /// `authorization: jwt`: send the introspection answer's signed JWT
    /// upstream in place of the opaque token (phantom tokens).
    pub phantom_jwt: bool,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Extra CA for an https upstream.
    pub ca_file: Option<PathBuf>,
    /// Most connections open to this route's destination (per process).
    pub max_connections: usize,
    /// Send the verified client certificate upstream (RFC 9440).
    pub client_cert: bool,
}

/// One entry of `routes:`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique name, used in logs and metrics.
    pub name: Arc<str>,
    /// Host to match (lower case, no port), if any.
    pub host: Option<String>,
    /// Path matcher.
    pub path: PathMatch,
    /// Methods to match; `None` matches any.
    pub methods: Option<Vec<Method>>,
    /// Where matching requests go; `None` for a decision-only route
    /// (CONTRACT §8.3), which the proxy listener never matches.
    pub upstream: Option<Upstream>,
    /// Authentication.
    pub auth: RouteAuth,
    /// What is sent upstream.
    pub forward: ForwardConfig,
}

/// An algorithm's JOSE name (`ES256`, `EdDSA`), as challenges list it.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}
