//! `issuers:`: each issuer's key source, algorithms, time rules, key cache
//! and introspection.

use super::*;
use crate::config::file::{IntrospectionFile, JwksCacheFile};

impl Validator<'_> {
    pub(super) fn issuers(&mut self, value: Option<Value>) -> Vec<IssuerConfig> {
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

    pub(super) fn issuer(
        &mut self,
        path: &str,
        name: String,
        mut f: IssuerFile,
    ) -> Option<IssuerConfig> {
        let issuer = match &f.issuer {
            Some(i) if !i.is_empty() => i.clone(),
            // An API key's `iss` is the issuer's name (CONTRACT §8.5).
            None if f.api_keys.is_some() => name.clone(),
            _ => {
                self.problem(
                    &join(path, "issuer"),
                    "missing",
                    "the exact iss value of the issuer's tokens",
                );
                String::new()
            }
        };
        let introspection_only = (f.introspection.is_some() || f.api_keys.is_some())
            && f.jwks_uri.is_none()
            && f.discovery != Some(true)
            && f.jwks_file.is_none()
            && f.hmac_secret_env.is_none();
        let algorithms = self.algorithms(path, f.algorithms.as_deref(), introspection_only);
        let keys = self.key_source(path, &issuer, &f, &algorithms);
        let jwks_cache = self.jwks_cache(path, f.jwks_cache.take());
        let introspection = f.introspection.take().map(|i| self.introspection(path, i));
        let keys = match (keys, &introspection) {
            (Some(k), _) => k,
            (None, Some(_)) => KeySource::IntrospectionOnly,
            (None, None) => {
                self.problem(
                    path,
                    "no key source",
                    "one of jwks_uri, discovery: true, jwks_file, hmac_secret_env, api_keys or introspection",
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
            dpop: self.dpop(path, f.dpop),
        })
    }

    /// Exactly one key source; HS algorithms only with an HMAC secret.
    pub(super) fn key_source(
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
        if let Some(keys) = &f.api_keys {
            let at = join(path, "api_keys.file");
            let p = self.file(&at, &keys.file);
            if self.problems.iter().all(|pr| pr.path != at) {
                self.api_keys_file(&at, &p);
            }
            sources.push(("api_keys", KeySource::ApiKeys(p)));
        }
        if let Some(var) = &f.hmac_secret_env {
            let secret = self.hmac_secret(&join(path, "hmac_secret_env"), var);
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
        self.algorithms_fit(path, algorithms, source.as_ref());
        source
    }

    /// `algorithms:`; `none` in any casing is refused. An issuer with only
    /// introspection needs none (opaque tokens carry no algorithm).
    fn algorithms(
        &mut self,
        path: &str,
        list: Option<&[String]>,
        introspection_only: bool,
    ) -> Vec<Algorithm> {
        let mut algorithms = Vec::new();
        match list {
            // Opaque tokens carry no algorithm to choose.
            None if introspection_only => {}
            None => self.problem(
                &join(path, "algorithms"),
                "missing",
                "the algorithms this issuer signs with, like [ES256, RS256]",
            ),
            Some([]) => self.problem(
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
        algorithms
    }

    /// `jwks_cache:`, each duration with its default.
    fn jwks_cache(&mut self, path: &str, cache: Option<JwksCacheFile>) -> JwksCacheConfig {
        let cache = cache.unwrap_or_default();
        let cache_path = join(path, "jwks_cache");
        JwksCacheConfig {
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
        }
    }

    /// `introspection:` (RFC 7662).
    fn introspection(&mut self, path: &str, i: IntrospectionFile) -> IntrospectionConfig {
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
        let signed = match i.response.as_deref() {
            None | Some("json") => false,
            Some("jwt") => true,
            Some(other) => {
                self.problem(
                    &join(&at, "response"),
                    format!("unknown choice {other:?}"),
                    "json or jwt",
                );
                false
            }
        };
        IntrospectionConfig {
            signed,
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
    }

    /// The HMAC secret in environment variable `var`: at least 32 bytes.
    fn hmac_secret(&mut self, at: &str, var: &str) -> Vec<u8> {
        match (self.lookup)(var) {
            Some(s) if s.len() >= MIN_HMAC_SECRET => s.into_bytes(),
            Some(s) => {
                self.problem(
                    at,
                    format!("the secret in {var} is {} bytes", s.len()),
                    format!("at least {MIN_HMAC_SECRET} random bytes"),
                );
                Vec::new()
            }
            None => {
                self.problem(
                    at,
                    format!("environment variable {var} is not set"),
                    format!("export {var} before starting authgate"),
                );
                Vec::new()
            }
        }
    }

    /// HS algorithms only with an HMAC secret, the others only with public keys.
    fn algorithms_fit(&mut self, path: &str, algorithms: &[Algorithm], source: Option<&KeySource>) {
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
    }

    /// Reads an API key file as `run` will (so `check` names its problems),
    /// and lints one that others than its owner may read.
    fn api_keys_file(&mut self, at: &str, path: &Path) {
        if let Err(e) = crate::auth::api_keys::ApiKeys::load(path, "check") {
            self.problem(at, e, "a YAML list of {sha256, subject, ...} entries");
            return;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    self.lint(
                        at,
                        "readable by others than its owner",
                        "chmod 600 (the digests let anyone test guesses offline)",
                    );
                }
            }
        }
    }
}
