//! Hot-path benchmarks: the authentication step on a verified-token cache
//! hit, cold signature verification per algorithm, route matching as the
//! table grows, and the upstream header rewrite.
//!
//! `cargo bench --bench gateway`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use authgate::auth::token::BearerToken;
use authgate::auth::verify;
use authgate::config::{RouteAuth, parse};
use authgate::gateway::Runtime;
use authgate::proxy::headers::{ClientInfo, rewrite_request};
use authgate::routing::{RouteTable, Target};
use authgate::telemetry::metrics::Metrics;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

const ISS: &str = "https://idp.bench";

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Bench keys: one per algorithm family, with their public JWKs.
struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

impl Keys {
    fn new() -> Self {
        let ec_alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec_doc = EcdsaKeyPair::generate_pkcs8(ec_alg, &SystemRandom::new()).unwrap();
        Self {
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(ec_alg, ec_doc.as_ref()).unwrap(),
            ed: Ed25519KeyPair::generate().unwrap(),
        }
    }

    fn jwks(&self) -> String {
        let p = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64(self.rsa.public_key().modulus().big_endian_without_leading_zero()),
             "e": b64(self.rsa.public_key().exponent().big_endian_without_leading_zero())},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&p[1..33]), "y": b64(&p[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(self.ed.public_key().as_ref())},
        ]})
        .to_string()
    }

    fn token(&self, alg: &str, sub: &str) -> String {
        let kid = match alg {
            "ES256" => "ec",
            "EdDSA" => "ed",
            _ => "rsa",
        };
        let now = verify::now() as i64;
        let header = b64(json!({"alg": alg, "kid": kid, "typ": "at+jwt"}).to_string());
        let claims = json!({"iss": ISS, "sub": sub, "aud": "api", "scope": "read write",
                            "iat": now, "exp": now + 3600, "jti": sub});
        let input = format!("{header}.{}", b64(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match alg {
            "ES256" => self
                .ec
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            "EdDSA" => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            rsa => {
                let enc: &'static dyn signature::RsaEncoding = if rsa == "PS256" {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(enc, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(sig))
    }
}

/// A runtime with one protected route whose issuer reads `jwks` from a file.
async fn runtime(jwks: &str) -> Runtime {
    let dir = std::env::temp_dir().join(format!("authgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.json"), jwks).unwrap();
    let yaml = format!(
        r#"
issuers:
  idp: {{ issuer: "{ISS}", jwks_file: keys.json, algorithms: [RS256, PS256, ES256, EdDSA], audiences: [api] }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "http://127.0.0.1:1"
    auth: {{ issuers: [idp], scopes_all: [read] }}
"#
    );
    let config = parse(&yaml, &dir, &|_| None).unwrap().config;
    let rt = Runtime::build(config, None, &Arc::new(Metrics::new())).unwrap();
    for keys in rt.keys.values() {
        keys.start().await;
    }
    rt
}

fn auth(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = Keys::new();
    let rt = tokio.block_on(runtime(&keys.jwks()));
    let (route, params) = rt
        .routes
        .find(Target {
            method: &Method::GET,
            host: None,
            path: "/api/x",
        })
        .unwrap();
    let RouteAuth::Protected(policy) = &route.config.auth else {
        unreachable!()
    };
    let mut headers = HeaderMap::new();
    let token = keys.token("ES256", "alice");
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let first = tokio.block_on(
        rt.auth
            .authenticate(route.index, policy, &headers, None, &params),
    );
    assert!(first.result.is_ok(), "{:?}", first.result);
    c.bench_function("auth/verified_cache_hit", |b| {
        b.to_async(&tokio).iter(|| async {
            let outcome = rt
                .auth
                .authenticate(route.index, policy, black_box(&headers), None, &params)
                .await;
            black_box(outcome.result.is_ok())
        })
    });

    let mut group = c.benchmark_group("verify/cold");
    let caches: Vec<_> = rt.keys.values().cloned().collect();
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        let token = keys.token(alg, "bob");
        group.bench_function(alg, |b| {
            b.to_async(&tokio).iter(|| async {
                let v =
                    verify::verify(BearerToken(black_box(&token)), &caches, verify::now()).await;
                black_box(v.is_ok())
            })
        });
    }
    group.finish();
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let mut yaml = String::from("routes:\n");
        for i in 0..n {
            yaml.push_str(&format!(
                "  - name: r{i}\n    match: {{ path_prefix: /svc{i}/v1, methods: [GET] }}\n    upstream: \"http://127.0.0.1:1\"\n    auth: public\n"
            ));
        }
        let config = parse(&yaml, Path::new("."), &|_| None).unwrap().config;
        let table = RouteTable::new(config.routes);
        let path = format!("/svc{}/v1/orders/7", n - 1);
        group.bench_with_input(BenchmarkId::from_parameter(n), &path, |b, path| {
            b.iter(|| {
                let target = Target {
                    method: &Method::GET,
                    host: Some("api.example.com"),
                    path: black_box(path),
                };
                black_box(table.find(target).map(|(r, _)| r.index))
            })
        });
    }
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let config = parse(
        "routes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: \"http://127.0.0.1:8081\"\n    auth: public\n",
        Path::new("."),
        &|_| None,
    )
    .unwrap()
    .config;
    let route = &config.routes[0];
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("authorization", "Bearer abc.def.ghi"),
        ("x-request-id", "req-1234"),
        ("connection", "keep-alive"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    let identity = [
        (
            http::HeaderName::from_static("x-auth-subject"),
            HeaderValue::from_static("alice"),
        ),
        (
            http::HeaderName::from_static("x-auth-scopes"),
            HeaderValue::from_static("read write"),
        ),
    ];
    let client = ClientInfo {
        ip: "10.1.2.3".parse().unwrap(),
        tls: true,
    };
    c.bench_function("header_rewrite", |b| {
        b.iter_batched(
            || base.clone(),
            |mut headers| {
                rewrite_request(
                    &mut headers,
                    &route.forward,
                    &identity,
                    client,
                    Some(HeaderValue::from_static("api.example.com")),
                    &route.upstream.authority,
                );
                headers
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, auth, routes, rewrite);
criterion_main!(benches);
