//! The per-request work of a reused (cached) token, outside any socket:
//! normalise the path, find the route, authenticate, build the identity
//! headers, rewrite the request headers. For instruction counts:
//!
//! ```sh
//! cargo build --release --example hot_path
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*requests*' \
//!     target/release/examples/hot_path 10000
//! ```
//! Instructions per request = the reported total / the count given.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use authgate::auth::identity;
use authgate::config::RouteAuth;
use authgate::gateway::Runtime;
use authgate::proxy::headers::{ClientInfo, Rewrite, rewrite_request};
use authgate::routing::{self, Target};
use http::{HeaderMap, HeaderValue, Method};

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().unwrap());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = support::Keys::new();
    let rt = tokio.block_on(support::runtime(&keys.jwks()));
    let token = keys.token("ES256", "alice");
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "wrk"),
        ("accept", "application/json"),
        ("x-request-id", "req-1234"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    // Warm the verified-token cache, then measure only cache hits.
    assert!(tokio.block_on(one(
        &rt,
        &headers,
        &ClientInfo::new("10.0.0.1".parse().unwrap(), false)
    )));
    let client = ClientInfo::new("10.0.0.1".parse().unwrap(), false);
    let ok = requests(&tokio, &rt, &headers, &client, n);
    assert_eq!(ok, n);
    println!("{n} requests");
}

/// The measured loop (callgrind collects only inside it). A cache hit
/// never waits, so `block_on` adds only its own small cost per request.
#[inline(never)]
fn requests(
    tokio: &tokio::runtime::Runtime,
    rt: &Runtime,
    headers: &HeaderMap,
    client: &ClientInfo,
    n: usize,
) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(tokio.block_on(one(rt, black_box(headers), client)));
    }
    ok
}

async fn one(rt: &Runtime, incoming: &HeaderMap, client: &ClientInfo) -> bool {
    let path = routing::normalise("/api/orders/7").unwrap();
    let Some((route, params)) = rt.routes.find(Target {
        method: &Method::GET,
        host: Some("api.example.com"),
        path: &path,
    }) else {
        return false;
    };
    let RouteAuth::Protected(policy) = &route.config.auth else {
        return false;
    };
    let outcome = rt
        .auth
        .authenticate(route.index, policy, incoming, None, &params)
        .await;
    let Ok(verified) = outcome.result else {
        return false;
    };
    let ids = identity::headers(&route.config.forward.headers, &verified.claims);
    // The server hands the gateway an owned header map; so does this.
    let mut headers = incoming.clone();
    let host = routing::request_host(
        http::Version::HTTP_11,
        &http::Uri::from_static("/"),
        &headers,
    )
    .ok()
    .flatten();
    rewrite_request(
        &mut headers,
        Rewrite {
            forward: &route.config.forward,
            reserved: &rt.identity_names,
            token_from: &policy.token_from,
            identity: &ids,
            client: client.clone(),
            forwarded_host: host.as_ref().map(routing::RequestHost::header),
            upstream_host: &route.config.upstream.as_ref().unwrap().host,
            phantom: None,
        },
    );
    black_box(headers.len()) > 0
}
