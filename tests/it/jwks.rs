//! The key cache's life through the real server and a real issuer: start,
//! rotation, an IdP outage, an unknown-kid storm, discovery.

use std::time::Duration;

use serde_json::json;

use crate::support::{Signer, TestGateway, TestIssuer, Upstream, eventually};

fn yaml(issuer: &TestIssuer, up: &Upstream, cache: &str, source: &str) -> String {
    format!(
        r#"
issuers:
  idp:
    issuer: "{iss}"
    {source}
    algorithms: [ES256, RS256]
    audiences: [api]
    jwks_cache: {{ {cache} }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [idp] }}
"#,
        iss = issuer.url,
        up = up.url(),
    )
}

fn jwks_uri(issuer: &TestIssuer) -> String {
    format!(r#"jwks_uri: "{}/jwks.json""#, issuer.url)
}

/// An issuer publishing `keys` at its JWKS URI, an upstream, and a gateway
/// in front of both with the `jwks_cache` settings `cache`.
async fn setup(keys: &[&Signer], cache: &str) -> (TestIssuer, Upstream, TestGateway) {
    let issuer = TestIssuer::spawn(keys).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&yaml(&issuer, &up, cache, &jwks_uri(&issuer))).await;
    (issuer, up, gw)
}

async fn status(gw: &TestGateway, token: &str) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/x", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        r.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
    )
}

#[tokio::test]
async fn keys_load_at_start_so_the_first_request_does_not_fetch() {
    let k1 = Signer::es256("k1");
    let (issuer, _up, gw) = setup(&[&k1], "min_refresh_interval: 1s").await;
    assert_eq!(issuer.fetches(), 1);
    let token = k1.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &token).await.0, 200);
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn rotation_accepts_the_new_kid_and_drops_the_removed_one() {
    let (k1, k2) = (Signer::es256("k1"), Signer::es256("k2"));
    let (issuer, _up, gw) = setup(&[&k1], "ttl: 10m, min_refresh_interval: 1s").await;
    let old = k1.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &old).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    issuer.publish(&[&k1, &k2]);
    let new = k2.token("ES256", json!({}), &issuer.claims());
    assert_eq!(
        status(&gw, &new).await.0,
        200,
        "an unknown kid triggers one refresh"
    );
    assert_eq!(issuer.fetches(), 2);
    issuer.publish(&[&k2]);
    assert_eq!(
        status(&gw, &old).await.0,
        200,
        "cached keys serve until the next refresh"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = k2.token("ES256", json!({"kid": "k3"}), &issuer.claims());
    assert_eq!(status(&gw, &unknown).await.0, 401);
    assert_eq!(issuer.fetches(), 3);
    assert_eq!(
        status(&gw, &old).await.0,
        401,
        "the removed key's token is refused after the refresh"
    );
    assert_eq!(status(&gw, &new).await.0, 200);
}

#[tokio::test]
async fn a_key_replaced_under_the_same_kid_stops_its_cached_tokens() {
    let (a, b) = (Signer::es256("k1"), Signer::es256("k1"));
    let (issuer, up, gw) = setup(&[&a], "ttl: 10m, min_refresh_interval: 1s").await;
    let old = a.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &old).await.0, 200, "verified and cached");
    // The IdP replaces the key but keeps its kid (bad practice, but seen).
    issuer.publish(&[&b]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = b.token("ES256", json!({"kid": "k9"}), &issuer.claims());
    assert_eq!(status(&gw, &unknown).await.0, 401, "forces one refresh");
    let seen = up.count();
    assert_eq!(
        status(&gw, &old).await.0,
        401,
        "the cached token of the replaced key is checked again and refused"
    );
    assert_eq!(up.count(), seen);
    let new = b.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &new).await.0, 200);
}

#[tokio::test]
async fn cached_keys_survive_an_idp_outage_then_503_after_the_stale_window() {
    let k1 = Signer::es256("k1");
    let (issuer, up, gw) = setup(
        &[&k1],
        "ttl: 1s, min_refresh_interval: 1s, stale_if_error: 2s",
    )
    .await;
    let token = k1.token("ES256", json!({}), &issuer.claims());
    issuer.set_status(500);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(&gw, &token).await.0, 200, "stale keys keep serving");
    eventually("503 once the stale window is over", async || {
        status(&gw, &token).await.0 == 503
    })
    .await;
    let (code, retry_after) = status(&gw, &token).await;
    assert_eq!(code, 503);
    assert!(retry_after.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));
    let forwarded = up.count();
    assert_eq!(status(&gw, &token).await.0, 503);
    assert_eq!(up.count(), forwarded, "a 503 forwards nothing");
    issuer.set_status(200);
    eventually("recovery when the IdP returns", async || {
        status(&gw, &token).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn an_unknown_kid_storm_causes_at_most_a_few_fetches() {
    let k1 = Signer::es256("k1");
    let (issuer, up, gw) = setup(&[&k1], "min_refresh_interval: 30s").await;
    let before = issuer.fetches();
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        let token = k1.token(
            "ES256",
            json!({"kid": format!("random-{i}")}),
            &issuer.claims(),
        );
        let (client, url) = (client.clone(), format!("{}/api/x", gw.url));
        tasks.spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    while let Some(code) = tasks.join_next().await {
        assert_eq!(code.unwrap(), 401);
    }
    let fetched = issuer.fetches() - before;
    assert!(fetched <= 2, "{fetched} fetches for 500 unknown kids");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn discovery_finds_the_keys_and_a_mismatched_issuer_is_never_ready() {
    let k1 = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&k1]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&yaml(
        &issuer,
        &up,
        "min_refresh_interval: 1s",
        "discovery: true",
    ))
    .await;
    assert_eq!(
        status(&gw, &k1.token("ES256", json!({}), &issuer.claims()))
            .await
            .0,
        200
    );

    let evil = TestIssuer::spawn(&[&k1]).await;
    evil.state.lock().unwrap().discovery_issuer = Some("https://someone-else.example".into());
    let gw = TestGateway::start_unready(
        &yaml(&evil, &up, "min_refresh_interval: 1s", "discovery: true"),
        std::path::Path::new("."),
    )
    .await;
    let readyz = format!("{}/readyz", gw.admin);
    eventually("readyz to name the issuer", async || {
        let r = reqwest::get(&readyz).await.unwrap();
        r.status() == 503 && r.text().await.unwrap().contains("issuers.idp")
    })
    .await;
    assert_eq!(
        status(&gw, &k1.token("ES256", json!({}), &evil.claims()))
            .await
            .0,
        503
    );
    assert_eq!(
        evil.fetches(),
        0,
        "keys of a mismatched issuer are never fetched"
    );
}

#[tokio::test]
async fn a_jwks_file_is_loaded_and_non_json_answers_are_refused() {
    let k1 = Signer::es256("k1");
    let dir = crate::support::temp_dir("jwks-file");
    std::fs::write(
        dir.join("keys.json"),
        json!({"keys": [k1.jwk()]}).to_string(),
    )
    .unwrap();
    let issuer = TestIssuer::spawn(&[]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start_in(&yaml(&issuer, &up, "", "jwks_file: keys.json"), &dir).await;
    assert_eq!(
        status(&gw, &k1.token("ES256", json!({}), &issuer.claims()))
            .await
            .0,
        200
    );

    let html = TestIssuer::spawn(&[&k1]).await;
    html.state.lock().unwrap().content_type = "text/html";
    let gw = TestGateway::start_unready(
        &yaml(&html, &up, "", &jwks_uri(&html)),
        std::path::Path::new("."),
    )
    .await;
    eventually("a fetch", async || html.fetches() >= 1).await;
    assert_eq!(
        status(&gw, &k1.token("ES256", json!({}), &html.claims()))
            .await
            .0,
        503
    );
}

#[tokio::test]
async fn a_jwks_with_no_usable_key_is_a_failed_fetch_and_the_good_keys_keep_serving() {
    let k1 = Signer::es256("k1");
    let (issuer, _up, gw) = setup(
        &[&k1],
        "ttl: 1s, min_refresh_interval: 1s, stale_if_error: 1h",
    )
    .await;
    let token = k1.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &token).await.0, 200);
    for junk in [
        json!({"keys": []}),
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "XX"}]}),
    ] {
        issuer.state.lock().unwrap().jwks = junk;
        let before = issuer.fetches();
        eventually("another refresh", async || issuer.fetches() > before).await;
        assert_eq!(
            status(&gw, &token).await.0,
            200,
            "the last good keys keep serving"
        );
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"authgate_jwks_refresh_total{issuer="idp",result="error"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_jwks_file_over_512_kib_is_refused() {
    let k1 = Signer::es256("k1");
    let dir = crate::support::temp_dir("jwks-big");
    let padding: Vec<serde_json::Value> = (0..12_000)
        .map(|i| json!({"kty": "XX", "kid": format!("junk-{i:040}")}))
        .collect();
    let mut keys = vec![k1.jwk()];
    keys.extend(padding);
    let doc = json!({ "keys": keys }).to_string();
    assert!(doc.len() > 512 * 1024);
    std::fs::write(dir.join("keys.json"), doc).unwrap();
    let issuer = TestIssuer::spawn(&[]).await;
    let up = Upstream::spawn().await;
    let gw =
        TestGateway::start_unready(&yaml(&issuer, &up, "", "jwks_file: keys.json"), &dir).await;
    let readyz = format!("{}/readyz", gw.admin);
    eventually("readyz naming the oversized file", async || {
        let r = reqwest::get(&readyz).await.unwrap();
        r.status() == 503 && r.text().await.unwrap().contains("larger than")
    })
    .await;
    let token = k1.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &token).await.0, 503);
}

#[tokio::test]
async fn a_discovery_document_naming_a_plain_http_jwks_uri_off_loopback_is_refused() {
    let k1 = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&k1]).await;
    // An attacker on the path between the gateway and 10.0.0.1 could serve
    // any keys there.
    issuer.state.lock().unwrap().discovery_jwks_uri = Some("http://10.0.0.1/jwks.json".into());
    let up = Upstream::spawn().await;
    let gw = TestGateway::start_unready(
        &yaml(&issuer, &up, "min_refresh_interval: 1s", "discovery: true"),
        std::path::Path::new("."),
    )
    .await;
    let readyz = format!("{}/readyz", gw.admin);
    eventually("readyz to name the refused jwks_uri", async || {
        let r = reqwest::get(&readyz).await.unwrap();
        r.status() == 503 && r.text().await.unwrap().contains("jwks_uri must be https")
    })
    .await;
    let token = k1.token("ES256", json!({}), &issuer.claims());
    assert_eq!(status(&gw, &token).await.0, 503);
    assert_eq!(issuer.fetches(), 0, "no key document was fetched");
}
