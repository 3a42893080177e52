//! Hot-path benchmarks: the authentication step on a verified-token cache
//! hit, cold signature verification per algorithm, route matching as the
//! table grows, and the upstream header rewrite.
//!
//! `cargo bench --bench gateway`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;

use authgate::auth::token::BearerToken;
use authgate::auth::verify;
use authgate::config::{RouteAuth, parse};
use authgate::proxy::headers::{ClientInfo, IdentityNames, Rewrite, rewrite_request};
use authgate::revocation::Revocation;
use authgate::routing::{RouteTable, Target};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};

mod support;
use support::{Keys, runtime};

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

    // The same hit with 10,000 revoked jtis and 10,000 revoked subjects on
    // the deny list (none of them this token's): the per-request cost of
    // revocation.
    tokio.block_on(async {
        for i in 0..10_000 {
            let jti = Revocation::Token {
                jti: format!("revoked-{i}"),
                expires_at: verify::now() as i64 + 3600,
            };
            let sub = Revocation::Subject {
                issuer: "idp".into(),
                sub: format!("user-{i}"),
                issued_before: verify::now(),
                until: None,
            };
            rt.revocations.revoke(&jti).await.unwrap();
            rt.revocations.revoke(&sub).await.unwrap();
        }
    });
    c.bench_function("auth/verified_cache_hit_20k_revocations", |b| {
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
        // The token's hashes are part of the cost (one pass over the
        // token, the signing input's digest taken on the way).
        group.bench_function(alg, |b| {
            b.to_async(&tokio).iter(|| async {
                let token = BearerToken(black_box(&token));
                let v = verify::verify(token, token.digests(), &caches, verify::now()).await;
                black_box(v.is_ok())
            })
        });
    }
    group.finish();

    // Forged RS256 tokens, refused by their signature: a plain one; one of
    // 650 header members and 620 claims (15.5 KiB), which costs whatever
    // the checks before the signature cost per member; and one as long
    // made of one long claim, which costs what its length alone costs.
    let mut group = c.benchmark_group("verify/forged");
    for (name, members, claims, pad) in [
        ("plain", 0, 0, 0),
        ("wide", 650, 620, 0),
        ("long", 0, 0, 11_000),
    ] {
        let token = keys.forged("RS256", members, claims, pad);
        assert!(token.len() <= authgate::auth::token::MAX_TOKEN_BYTES);
        group.bench_function(name, |b| {
            b.to_async(&tokio).iter(|| async {
                let token = BearerToken(black_box(&token));
                let v = verify::verify(token, token.digests(), &caches, verify::now()).await;
                black_box(matches!(v, Err(authgate::auth::AuthFailure::BadSignature)))
            })
        });
    }
    group.finish();

    // One DPoP proof check (RFC 9449 §4.3, without the replay store):
    // what a DPoP request adds to a cached token's cost.
    let mut group = c.benchmark_group("dpop/proof");
    let config = authgate::config::DpopConfig {
        announced: true,
        algorithms: vec![
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::Algorithm::RS256,
        ],
        max_age: std::time::Duration::from_secs(300),
        nonce: false,
        nonce_secret: authgate::config::Secret(vec![0; 32]),
    };
    let token = keys.token("RS256", "dpop");
    let htu = "http://bench.example/api/x";
    for alg in ["ES256", "EdDSA", "RS256"] {
        let proof = keys.proof(alg, htu, &token, "jti-1");
        let expected = authgate::auth::dpop::Expected {
            method: "GET",
            htu,
            token: &token,
            now: verify::now(),
            leeway: std::time::Duration::from_secs(30),
        };
        assert!(authgate::auth::dpop::check(&proof, &config, &expected).is_ok());
        group.bench_function(alg, |b| {
            b.iter(|| {
                let checked = authgate::auth::dpop::check(black_box(&proof), &config, &expected);
                black_box(checked.is_ok())
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
    let client = ClientInfo::new("10.1.2.3".parse().unwrap(), true);
    let reserved = IdentityNames::new(route.forward.headers.iter().map(|(n, _)| n));
    c.bench_function("header_rewrite", |b| {
        b.iter_batched(
            || base.clone(),
            |mut headers| {
                rewrite_request(
                    &mut headers,
                    Rewrite {
                        forward: &route.forward,
                        reserved: &reserved,
                        token_from: &[],
                        identity: &identity,
                        client: client.clone(),
                        forwarded_host: Some(HeaderValue::from_static("api.example.com")),
                        upstream_host: &route.upstream.as_ref().unwrap().host,
                        phantom: None,
                    },
                );
                headers
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, auth, routes, rewrite);
criterion_main!(benches);
