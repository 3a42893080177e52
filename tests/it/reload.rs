//! Reloads never weaken the gateway (CONTRACT §8.1b): keys kept alive by
//! `stale_if_error` outlive an unrelated edit, revocations outlive a
//! changed `revocation:` section, a changed CA file is picked up, and
//! values `check` would never accept are refused.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::{Signer, TestGateway, TestIssuer, Upstream, eventually, sha256_hex};

const ADMIN_TOKEN: &str = "reload-admin-token-0123456789abcdef";

fn yaml(issuer: &TestIssuer, up: &Upstream, leeway: &str, revocation: &str) -> String {
    format!(
        r#"
admin: {{ listen: "127.0.0.1:0", token_sha256: "{digest}" }}
{revocation}
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
    leeway: {leeway}
    jwks_cache: {{ ttl: 1s, min_refresh_interval: 1s, stale_if_error: 1h }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [idp] }}
"#,
        digest = sha256_hex(ADMIN_TOKEN),
        iss = issuer.url,
        up = up.url(),
    )
}

fn reload(gw: &TestGateway, yaml: &str) {
    let text = format!("server:\n  listen: \"127.0.0.1:0\"\n  workers: 2\n{yaml}");
    let loaded = authgate::config::parse(&text, Path::new("."), &|_| None).unwrap();
    gw.running.gateway.reload(loaded.config).unwrap();
}

async fn get(gw: &TestGateway, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/api/x", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_edit_to_leeway_during_an_idp_outage_keeps_the_stale_keys_serving() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&yaml(&issuer, &up, "30s", "")).await;
    let token = key.token("ES256", json!({}), &issuer.claims());
    assert_eq!(get(&gw, &token).await, 200);
    issuer.set_status(500);
    let before = issuer.fetches();
    eventually("a failed refresh", async || issuer.fetches() > before).await;
    reload(&gw, &yaml(&issuer, &up, "10s", ""));
    let mut claims = issuer.claims();
    claims["jti"] = json!("after-reload");
    let fresh = key.token("ES256", json!({}), &claims);
    assert_eq!(
        get(&gw, &fresh).await,
        200,
        "the keys that were serving still serve after an unrelated edit"
    );
    issuer.set_status(200);
}

#[tokio::test]
async fn revocations_survive_a_changed_revocation_section() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&yaml(&issuer, &up, "30s", "")).await;
    let mut claims = issuer.claims();
    claims["jti"] = json!("stolen");
    let token = key.token("ES256", json!({}), &claims);
    assert_eq!(get(&gw, &token).await, 200);
    let r = reqwest::Client::new()
        .post(format!("{}/revocations", gw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .body(json!({"jti": "stolen", "expires_at": crate::support::now() + 300}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get(&gw, &token).await, 401);
    reload(
        &gw,
        &yaml(
            &issuer,
            &up,
            "30s",
            "revocation: { store: memory, on_store_error: allow }",
        ),
    );
    assert_eq!(get(&gw, &token).await, 401, "still revoked after the edit");
}

#[test]
fn a_changed_ca_file_content_means_a_new_key_client() {
    let dir = crate::support::temp_dir("ca-reload");
    let pki = crate::support::tls::TestPki::new();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    let text = r#"
issuers:
  idp:
    issuer: "https://idp.example"
    jwks_uri: "https://idp.example/jwks.json"
    algorithms: [ES256]
    audiences: [api]
    ca_file: ca.pem
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: "http://127.0.0.1:1"
    auth: { issuers: [idp] }
"#;
    let issuer = || {
        let config = authgate::config::parse(text, &dir, &|_| None)
            .unwrap()
            .config;
        config.issuers[0].clone()
    };
    let metrics = std::sync::Arc::new(authgate::telemetry::metrics::Metrics::default());
    let cache = authgate::jwks::KeyCache::new(issuer(), metrics).unwrap();
    assert!(cache.same_source(&issuer()), "nothing changed");
    let other = crate::support::tls::TestPki::new();
    std::fs::write(dir.join("ca.pem"), &other.ca_pem).unwrap();
    assert!(
        !cache.same_source(&issuer()),
        "same path, new content: a new client"
    );
}

#[test]
fn durations_past_their_bound_are_refused_by_check() {
    let text = r#"
issuers:
  idp:
    issuer: "https://idp.example"
    jwks_uri: "https://idp.example/jwks.json"
    algorithms: [ES256]
    audiences: [api]
    leeway: 10m
    jwks_cache: { min_refresh_interval: 9000000h }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: "http://127.0.0.1:1"
    auth: { issuers: [idp] }
"#;
    let problems: Vec<String> = match authgate::config::parse(text, Path::new("."), &|_| None) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        problems,
        [
            "issuers.idp.jwks_cache.min_refresh_interval: 9000000h is more than the largest allowed, 1h (at most 1h)",
            "issuers.idp.leeway: 10m is more than the largest allowed, 5m (at most 5m)",
        ]
    );
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn an_issuer_removed_by_a_reload_is_fetched_no_more_even_with_no_request_after() {
    // Each worker keeps its own handle on the runtime it last served
    // (`Gateway::snapshot`); a reload must make idle workers let go of the
    // old one, whose key cache would otherwise go on refreshing.
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&yaml(&issuer, &up, "30s", "")).await;
    let token = key.token("ES256", json!({}), &issuer.claims());
    // Concurrent connections, so that both workers serve one.
    let served = tokio::join!(
        get(&gw, &token),
        get(&gw, &token),
        get(&gw, &token),
        get(&gw, &token)
    );
    assert_eq!(served, (200, 200, 200, 200));
    let public = format!(
        "routes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    );
    reload(&gw, &public);
    // A refresh already under way may still land.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = issuer.fetches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        issuer.fetches(),
        after,
        "the removed issuer's keys (ttl 1s) were fetched again after the reload"
    );
}
