//! RFC 7662 introspection through the real server, against a real loopback
//! introspection endpoint: opaque tokens get the same policy and identity
//! headers as JWTs; inactive, failing and stalled answers never pass.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::support::introspection::{Introspection, Mode};
use crate::support::{Signer, TestGateway, TestIssuer, Upstream, eventually, now, sha256_hex};

const SECRET: &str = "intro secret&=:";
const ADMIN_TOKEN: &str = "introspection-admin-token-42";

struct Fx {
    intro: Introspection,
    up: Upstream,
    gw: TestGateway,
}

/// The gateway's config: the introspected issuer `legacy`, the route
/// `orders` wanting `scopes`, and extra issuers and routes.
fn yaml(
    intro: &Introspection,
    up: &Upstream,
    scopes: &str,
    extra_issuer: &str,
    extra_route: &str,
) -> String {
    format!(
        r#"
admin: {{ listen: "127.0.0.1:0", token_sha256: "{digest}" }}
issuers:
  legacy:
    issuer: "https://legacy.example"
    audiences: [api]
    leeway: 0s
    introspection:
      endpoint: "{endpoint}"
      client_id: "gate way"
      client_secret: "{SECRET}"
      cache_ttl: 60s
      timeout: 300ms
{extra_issuer}
routes:
  - name: orders
    match: {{ path_prefix: /orders }}
    upstream: "{up}"
    auth: {{ issuers: [legacy], scopes_all: [{scopes}] }}
{extra_route}
"#,
        digest = sha256_hex(ADMIN_TOKEN),
        endpoint = intro.url,
        up = up.url(),
    )
}

async fn fixture(extra_issuer: &str, extra_route: &str) -> Fx {
    let intro = Introspection::spawn().await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&yaml(&intro, &up, "orders:read", extra_issuer, extra_route)).await;
    Fx { intro, up, gw }
}

async fn get(gw: &TestGateway, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/orders/1", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn active_claims(scope: &str) -> serde_json::Value {
    json!({"iss": "https://legacy.example", "sub": "carol", "aud": "api", "scope": scope,
           "client_id": "app", "iat": now(), "exp": now() + 300, "jti": "op-1"})
}

#[tokio::test]
async fn an_opaque_token_is_introspected_once_and_gets_the_same_policy_and_headers() {
    let fx = fixture("", "").await;
    fx.intro.active("opaque-good", active_claims("orders:read"));
    fx.intro.active("opaque-narrow", active_claims("profile"));

    let r = get(&fx.gw, "opaque-good").await;
    assert_eq!(r.status(), 200);
    let seen = fx.up.seen().pop().unwrap();
    assert_eq!(seen.headers["x-auth-subject"], "carol");
    assert_eq!(seen.headers["x-auth-issuer"], "https://legacy.example");
    assert_eq!(seen.headers["x-auth-scopes"], "orders:read");
    assert!(!seen.headers.contains_key("authorization"));

    let calls = fx.intro.calls();
    assert_eq!(calls.len(), 1);
    let basic =
        base64::engine::general_purpose::STANDARD.encode("gate%20way:intro%20secret%26%3D%3A");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(&*format!("Basic {basic}"))
    );
    assert_eq!(
        calls[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        calls[0].body,
        "token=opaque%2Dgood&token_type_hint=access_token"
    );

    assert_eq!(get(&fx.gw, "opaque-good").await.status(), 200);
    assert_eq!(fx.intro.calls().len(), 1, "the answer is cached");

    let r = get(&fx.gw, "opaque-narrow").await;
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(r#"scope="orders:read""#)
    );
}

#[tokio::test]
async fn an_inactive_token_gets_401_inactive_and_is_cached_briefly() {
    let fx = fixture("", "").await;
    let before = fx.up.count();
    for _ in 0..3 {
        let r = get(&fx.gw, "opaque-unknown").await;
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="authgate", error="invalid_token", error_description="token is not active""#
        );
    }
    assert_eq!(fx.intro.calls().len(), 1, "negatively cached");
    assert_eq!(fx.up.count(), before);
    assert!(
        fx.gw
            .metrics()
            .await
            .contains(r#"authgate_auth_failures_total{route="orders",reason="inactive"} 3"#)
    );
}

#[tokio::test]
async fn an_answer_for_another_issuer_is_refused() {
    let fx = fixture("", "").await;
    let mut claims = active_claims("orders:read");
    claims["iss"] = json!("https://evil.example");
    fx.intro.active("opaque-foreign", claims);
    assert_eq!(get(&fx.gw, "opaque-foreign").await.status(), 401);
    assert_eq!(fx.up.count(), 0);
}

#[tokio::test]
async fn a_down_failing_or_stalled_endpoint_is_503_never_a_pass() {
    let fx = fixture("", "").await;
    fx.intro.active("opaque-good", active_claims("orders:read"));
    let modes = [
        ("status 500", Mode::Status(500), "t1"),
        ("not JSON", Mode::Body("<html>"), "t2"),
        ("no active member", Mode::Body(r#"{"sub":"x"}"#), "t3"),
        (
            "active as a string",
            Mode::Body(r#"{"active":"true"}"#),
            "t4",
        ),
        (
            "stalled past the timeout",
            Mode::Stall(Duration::from_secs(3)),
            "opaque-good",
        ),
    ];
    for (what, mode, token) in modes {
        fx.intro.set_mode(mode);
        let started = std::time::Instant::now();
        let r = get(&fx.gw, token).await;
        assert_eq!(r.status(), 503, "{what}");
        assert!(r.headers().contains_key("retry-after"), "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: bounded"
        );
    }
    assert_eq!(fx.up.count(), 0, "the upstream saw nothing");
    fx.intro.set_mode(Mode::Normal);
    assert_eq!(
        get(&fx.gw, "opaque-good").await.status(),
        200,
        "failures are not cached"
    );
}

#[tokio::test]
async fn a_cached_answer_never_outlives_the_token() {
    let fx = fixture("", "").await;
    let mut claims = active_claims("orders:read");
    claims["exp"] = json!(now() + 2);
    fx.intro.active("opaque-short", claims);
    assert_eq!(get(&fx.gw, "opaque-short").await.status(), 200);
    eventually("the token to expire", async || {
        get(&fx.gw, "opaque-short").await.status() == 401
    })
    .await;
}

#[tokio::test]
async fn an_introspected_token_can_be_revoked_by_jti_and_by_subject() {
    let fx = fixture("", "").await;
    fx.intro.active("opaque-good", active_claims("orders:read"));
    let mut other = active_claims("orders:read");
    other["jti"] = json!("op-2");
    other["sub"] = json!("dave");
    fx.intro.active("opaque-dave", other);
    assert_eq!(get(&fx.gw, "opaque-good").await.status(), 200);
    let revoke = async |body: serde_json::Value| {
        reqwest::Client::new()
            .post(format!("{}/revocations", fx.gw.admin))
            .bearer_auth(ADMIN_TOKEN)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        revoke(json!({"jti": "op-1", "expires_at": now() + 300})).await,
        204
    );
    assert_eq!(get(&fx.gw, "opaque-good").await.status(), 401);
    assert_eq!(get(&fx.gw, "opaque-dave").await.status(), 200);
    let body = json!({"issuer": "legacy", "sub": "dave", "issued_before": now() + 1});
    assert_eq!(revoke(body).await, 204);
    assert_eq!(get(&fx.gw, "opaque-dave").await.status(), 401);
}

#[tokio::test]
async fn on_a_mixed_route_jwts_are_verified_and_opaque_tokens_introspected() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let corp = format!(
        r#"  corp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]"#,
        iss = issuer.url
    );
    let up = Upstream::spawn().await;
    let mixed = format!(
        r#"  - name: mixed
    match: {{ path_prefix: /mixed }}
    upstream: "{}"
    auth: {{ issuers: [corp, legacy] }}"#,
        up.url()
    );
    let fx = fixture(&corp, &mixed).await;
    fx.intro.active("opaque-good", active_claims("orders:read"));
    let get_mixed = async |token: &str| {
        reqwest::Client::new()
            .get(format!("{}/mixed/1", fx.gw.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    let jwt = key.token("ES256", json!({}), &issuer.claims());
    assert_eq!(get_mixed(&jwt).await, 200);
    assert_eq!(fx.intro.calls().len(), 0, "a JWT is verified with keys");
    assert_eq!(get_mixed("opaque-good").await, 200);
    assert_eq!(fx.intro.calls().len(), 1);
    assert_eq!(up.seen().pop().unwrap().headers["x-auth-subject"], "carol");

    // On the introspection-only route even a JWT is introspected (and unknown there).
    let mut claims = issuer.claims();
    claims["scope"] = json!("orders:read");
    let jwt = key.token("ES256", json!({}), &claims);
    assert_eq!(get(&fx.gw, &jwt).await.status(), 401);
    assert_eq!(fx.intro.calls().len(), 2);
}

/// A reload keeps the introspector (and its cached answers) when the issuer
/// is unchanged, as it is here: its DPoP nonce key, drawn at random, is the
/// same in every parse. A route tightened by the reload must still apply to
/// the answers it keeps.
#[tokio::test]
async fn a_reload_that_tightens_a_route_applies_to_cached_introspection_answers() {
    let Fx { intro, up, gw } = fixture("", "").await;
    intro.active("opaque-reader", active_claims("orders:read"));
    for _ in 0..2 {
        assert_eq!(get(&gw, "opaque-reader").await.status(), 200);
    }
    let tighter = format!(
        "server: {{ listen: \"127.0.0.1:0\", workers: 2 }}\n{}",
        yaml(&intro, &up, "orders:read, orders:admin", "", "")
    );
    let loaded = authgate::config::parse(&tighter, std::path::Path::new("."), &|_| None).unwrap();
    gw.running.gateway.reload(loaded.config).unwrap();
    let before = up.count();
    for _ in 0..2 {
        let r = get(&gw, "opaque-reader").await;
        assert_eq!(r.status(), 403, "the reloaded route wants orders:admin too");
    }
    assert_eq!(up.count(), before, "the upstream must see nothing");
    assert_eq!(
        intro.calls().len(),
        1,
        "the introspector and its cached answer were kept across the reload"
    );
}
