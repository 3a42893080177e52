//! The raw shape of `gateway.yaml`: serde structs with `deny_unknown_fields`.
//! Only shapes and primitive types are checked here; meaning (durations, URLs,
//! cross-references) is checked in `validate.rs` so that every problem is
//! reported at once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `server:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub tls: Option<TlsFile>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    /// Extension: worker threads serving the proxy port.
    pub workers: Option<u64>,
    /// Extension: how long SIGTERM waits for in-flight requests.
    pub drain_timeout: Option<String>,
}

/// `server.tls:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
    /// `optional` or `required` (the default with `client_ca_file`).
    pub client_auth: Option<String>,
}

/// `admin:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Option<String>,
    pub token_sha256: Option<String>,
}

/// The top level of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopFile {
    pub server: Option<serde_yaml_ng::Value>,
    pub admin: Option<serde_yaml_ng::Value>,
    pub issuers: Option<serde_yaml_ng::Value>,
    pub revocation: Option<serde_yaml_ng::Value>,
    pub routes: Option<serde_yaml_ng::Value>,
    pub decisions: Option<serde_yaml_ng::Value>,
}

/// `decisions:` (decision mode, CONTRACT §8.3)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsFile {
    pub listen: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
}

/// One entry of `issuers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub discovery: Option<bool>,
    pub jwks_file: Option<String>,
    /// Extension: name of the environment variable holding an HMAC secret.
    pub hmac_secret_env: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub leeway: Option<String>,
    pub max_lifetime: Option<String>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    pub token_type: Option<String>,
    pub jwks_cache: Option<JwksCacheFile>,
    pub introspection: Option<IntrospectionFile>,
    pub dpop: Option<DpopFile>,
    pub api_keys: Option<ApiKeysFile>,
}

/// `issuers.NAME.api_keys:` (CONTRACT §8.5)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    pub file: String,
}

/// `issuers.NAME.dpop:` (RFC 9449 proofs, CONTRACT §8.4)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopFile {
    pub algorithms: Option<Vec<String>>,
    pub max_age: Option<String>,
    pub nonce: Option<bool>,
    pub nonce_secret_env: Option<String>,
}

/// `issuers.NAME.jwks_cache:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksCacheFile {
    pub ttl: Option<String>,
    pub refresh_on_unknown_kid: Option<bool>,
    pub min_refresh_interval: Option<String>,
    pub stale_if_error: Option<String>,
}

/// `issuers.NAME.introspection:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionFile {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
    pub cache_ttl: Option<String>,
    /// Extension: time allowed for one introspection call.
    pub timeout: Option<String>,
    /// `json` (RFC 7662, the default) or `jwt` (RFC 9701, signed).
    pub response: Option<String>,
}

/// `revocation:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationFile {
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub on_store_error: Option<String>,
    pub ca_file: Option<String>,
    pub store_grace: Option<String>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<MatchFile>,
    pub upstream: Option<String>,
    /// `public` or a policy; kept raw so each form gets precise messages.
    pub auth: Option<serde_yaml_ng::Value>,
    pub forward: Option<ForwardFile>,
}

/// `routes[i].match:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_template: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// `routes[i].auth:` as a policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub issuers: Option<Vec<String>>,
    pub audiences: Option<Vec<String>>,
    pub clients: Option<Vec<String>>,
    #[serde(default)]
    pub scopes_all: Vec<String>,
    #[serde(default)]
    pub scopes_any: Vec<String>,
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    pub token_from: Option<Vec<String>>,
    /// `required` or `optional` (default): tokens bound to a key (DPoP,
    /// certificate) only.
    pub sender_constrained: Option<String>,
    /// Origins allowed to make unsafe requests authenticated by a cookie.
    pub allowed_origins: Option<Vec<String>>,
    /// `forward`: CORS preflights pass upstream without a token.
    pub cors_preflight: Option<String>,
    /// A request without credentials passes without identity headers.
    pub optional: Option<bool>,
    /// RFC 9728 protected-resource metadata.
    pub resource_metadata: Option<ResourceMetadataFile>,
}

/// `routes[i].auth.resource_metadata:` (RFC 9728)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceMetadataFile {
    pub resource: String,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// `routes[i].forward:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardFile {
    pub headers: Option<BTreeMap<String, String>>,
    pub authorization: Option<String>,
    /// Extension: time allowed for the upstream's response headers.
    pub timeout: Option<String>,
    /// Extension: time allowed to connect to the upstream.
    pub connect_timeout: Option<String>,
    /// Extension: extra CA trusted for an https upstream.
    pub ca_file: Option<String>,
    /// Connections to this route's upstream destination, per process.
    pub max_connections: Option<u64>,
    /// `http1` (default) or `http2` (https upstreams only; `h2c://` is
    /// always HTTP/2).
    pub protocol: Option<String>,
    /// Send the verified client certificate as RFC 9440 `Client-Cert`.
    pub client_cert: Option<bool>,
}
