//! Property tests (proptest): arbitrary tokens never panic and never pass,
//! route matching agrees with a plain reference model, and the header
//! rewrite never lets a client's identity header through.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use authgate::auth::token;
use authgate::config::{RouteAuth, parse};
use authgate::gateway::Runtime;
use authgate::proxy::headers::{ClientInfo, IdentityNames, Rewrite, rewrite_request};
use authgate::routing::{RouteTable, Target};
use authgate::telemetry::metrics::Metrics;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use serde_json::json;

use crate::support::{Signer, temp_dir};

/// One runtime with a protected route whose issuer trusts `KEY`'s JWKS (from a file).
struct Fixture {
    tokio: tokio::runtime::Runtime,
    rt: Runtime,
    valid: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = Signer::es256("k1");
        let dir = temp_dir("props");
        std::fs::write(
            dir.join("jwks.json"),
            json!({"keys": [key.jwk()]}).to_string(),
        )
        .unwrap();
        let yaml = r#"
issuers:
  idp: { issuer: "https://idp.props", jwks_file: jwks.json, algorithms: [ES256, RS256], audiences: [api] }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: "http://127.0.0.1:1"
    auth: { issuers: [idp] }
"#;
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = parse(yaml, &dir, &|_| None).unwrap().config;
        let rt = Runtime::build(config, None, &Arc::new(Metrics::new())).unwrap();
        tokio.block_on(async {
            for k in rt.keys.values() {
                k.start().await;
            }
        });
        let now = crate::support::now();
        let valid = key.token(
            "ES256",
            json!({}),
            &json!({"iss": "https://idp.props", "sub": "alice", "aud": "api", "iat": now, "exp": now + 3600}),
        );
        Fixture { tokio, rt, valid }
    })
}

/// Runs one Authorization header value through the real authenticator.
fn authenticates(value: &[u8]) -> bool {
    let f = fixture();
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return false; // hyper would never hand us this header
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let (route, params) =
        f.rt.routes
            .find(Target {
                method: &Method::GET,
                host: None,
                path: "/api/x",
            })
            .unwrap();
    let RouteAuth::Protected(policy) = &route.config.auth else {
        unreachable!()
    };
    let outcome =
        f.tokio.block_on(
            f.rt.auth
                .authenticate(route.index, policy, &headers, None, &params),
        );
    outcome.result.is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_as_a_token_never_panic_and_never_pass(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&bytes);
        prop_assert!(!authenticates(&value));
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = token::parse(text);
        }
    }

    #[test]
    fn token_shaped_garbage_never_passes(
        segments in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,80}", 1..5)
    ) {
        let value = format!("Bearer {}", segments.join("."));
        prop_assert!(!authenticates(value.as_bytes()));
    }

    #[test]
    fn a_valid_token_with_any_one_byte_changed_never_passes(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let f = fixture();
        let mut bytes = f.valid.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&bytes);
        prop_assert!(!authenticates(&value), "changed byte {} to {:?}", i, to as char);
    }
}

#[test]
fn the_unchanged_valid_token_passes() {
    let f = fixture();
    assert!(authenticates(format!("Bearer {}", f.valid).as_bytes()));
}

/// The reference model: the first route, in order, whose prefix segments
/// start the path's segments.
fn model(prefixes: &[Vec<&str>], path: &[&str]) -> Option<usize> {
    prefixes
        .iter()
        .position(|p| p.len() <= path.len() && p.iter().zip(path).all(|(a, b)| a == b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn route_matching_agrees_with_the_reference_model(
        prefixes in proptest::collection::vec(proptest::collection::vec(prop::sample::select(vec!["a", "b", "ab", "c"]), 1..4), 1..12),
        path in proptest::collection::vec(prop::sample::select(vec!["a", "b", "ab", "c", "d"]), 0..5),
    ) {
        let mut yaml = String::from("routes:\n");
        for (i, p) in prefixes.iter().enumerate() {
            yaml.push_str(&format!(
                "  - name: r{i}\n    match: {{ path_prefix: /{} }}\n    upstream: \"http://127.0.0.1:1\"\n    auth: public\n",
                p.join("/")
            ));
        }
        let config = parse(&yaml, Path::new("."), &|_| None).unwrap().config;
        let table = RouteTable::new(config.routes);
        let text = format!("/{}", path.join("/"));
        let found = table
            .find(Target { method: &Method::GET, host: None, path: &text })
            .map(|(r, _)| r.index);
        prop_assert_eq!(found, model(&prefixes, &path), "path {}", text);
    }

    #[test]
    fn the_header_rewrite_never_lets_a_client_identity_header_through(
        spoofed in proptest::collection::vec(("[xX][-_][aA][uU][tT][hH][-_][a-zA-Z0-9_-]{1,12}", "[ -~]{0,20}"), 0..6),
        others in proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,20}"), 0..6),
    ) {
        let config = parse(
            "routes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: \"http://127.0.0.1:8081\"\n    auth: public\n    forward: { headers: { X-Tenant: tenant } }\n",
            Path::new("."),
            &|_| None,
        )
        .unwrap()
        .config;
        let route = &config.routes[0];
        let mut headers = HeaderMap::new();
        for (name, value) in spoofed.iter().chain(others.iter()) {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
        headers.append("x-tenant", HeaderValue::from_static("spoofed"));
        headers.append("x_tenant", HeaderValue::from_static("spoofed"));
        let ours = [(HeaderName::from_static("x-auth-subject"), HeaderValue::from_static("alice"))];
        let reserved = IdentityNames::new(route.forward.headers.iter().map(|(n, _)| n));
        rewrite_request(
            &mut headers,
            Rewrite {
                forward: &route.forward,
                reserved: &reserved,
                token_from: &[],
                identity: &ours,
                client: ClientInfo::new("10.0.0.1".parse().unwrap(), false),
                forwarded_host: None,
                upstream_host: &route.upstream.as_ref().unwrap().host,
                phantom: None,
            },
        );
        for (name, value) in &headers {
            if name.as_str().replace('_', "-").starts_with("x-auth-") {
                prop_assert_eq!(name.as_str(), "x-auth-subject");
                prop_assert_eq!(value, "alice");
            }
            prop_assert_ne!(name.as_str().replace('_', "-"), "x-tenant");
        }
        prop_assert_eq!(headers.get_all("x-auth-subject").iter().count(), 1);
    }
}
