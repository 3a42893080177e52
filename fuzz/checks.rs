//! What each fuzz target checks, shared by the fuzz targets and by the
//! regression test that replays the committed seeds and crash inputs
//! (`tests/it/fuzz_corpus.rs`) on every `cargo test`.

use std::sync::OnceLock;

use authgate::auth::{extract, token};
use authgate::config::TokenSource;
use authgate::jwks::KeySet;
use authgate::jwks::keyset::Lookup;
use authgate::routing::{self, RouteTable, Target};
use jsonwebtoken::Algorithm;

/// Token extraction (Authorization, Cookie, query) and strict JWS parsing.
pub fn token(data: &[u8]) {
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        headers.insert(http::header::AUTHORIZATION, v.clone());
        headers.insert(http::header::COOKIE, v);
    }
    let sources = [TokenSource::Header, TokenSource::Cookie("at".into())];
    let query = std::str::from_utf8(data).ok();
    let _ = extract::extract(&headers, query, &sources);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(jws) = token::parse(text) {
            assert!(jws.signing_input.len() < text.len());
            // The scan before the signature and the whole parse after it
            // agree on what both read.
            if let (Ok(early), Ok(claims)) = (jws.early(), jws.claims()) {
                let iss = claims.get("iss").and_then(|v| v.as_str());
                assert_eq!(early.iss.as_deref(), iss);
                assert_eq!(early.times, token::Times::of(&claims));
            }
        }
        let _ = token::inspect(text);
    }
}

/// JWKS documents: a key is only ever found for an algorithm that fits it,
/// and never an HMAC key.
pub fn jwks(data: &[u8]) {
    let Ok(set) = KeySet::from_jwks("fuzz", data) else {
        return;
    };
    for alg in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        if let Lookup::Found(key) = set.find(None, alg) {
            assert!(key.fits(alg));
            assert!(alg != Algorithm::HS256, "an HMAC key from a JWKS");
        }
    }
}

/// OIDC discovery documents: a result always names an http(s) URL.
pub fn discovery(data: &[u8]) {
    if let Ok(uri) = authgate::jwks::discovery::parse(data, "https://idp.fuzz") {
        assert!(uri.starts_with("https://") || uri.starts_with("http://"));
    }
}

/// Config loading: a config or a non-empty list of problems.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) =
        authgate::config::parse(text, std::path::Path::new("/nonexistent"), &|_| None)
    {
        assert!(!problems.is_empty());
    }
}

fn table() -> &'static RouteTable {
    static T: OnceLock<RouteTable> = OnceLock::new();
    T.get_or_init(|| {
        let yaml = r#"
routes:
  - { name: a, match: { path: /exact }, upstream: "http://127.0.0.1:1", auth: public }
  - { name: b, match: { path_prefix: /api/v1 }, upstream: "http://127.0.0.1:1", auth: public }
  - { name: c, match: { path_template: "/tenants/{tenant}/orders/{id}" }, upstream: "http://127.0.0.1:1", auth: public }
  - { name: d, match: { path_prefix: /, host: example.com }, upstream: "http://127.0.0.1:1", auth: public }
"#;
        match authgate::config::parse(yaml, std::path::Path::new("."), &|_| None) {
            Ok(loaded) => RouteTable::new(loaded.config.routes),
            Err(p) => panic!("{p:?}"),
        }
    })
}

/// Path normalisation and route matching: a normalised path has no dot
/// segments and is stable under normalising again.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = routing::normalise(raw) else {
        return;
    };
    assert!(!path.split('/').any(|s| s == "." || s == ".."), "{path:?}");
    assert_eq!(routing::normalise(&path).ok().as_deref(), Some(&*path));
    for host in [None, Some("example.com")] {
        let target = Target {
            method: &http::Method::GET,
            host,
            path: &path,
        };
        if let Some((route, params)) = table().find(target) {
            let _ = (route.index, params.get("tenant"));
        }
    }
}
