//! Browser and agent clients (CONTRACT §8.7) through the real gateway:
//! CSRF for cookie-authenticated requests, CORS preflights passed upstream,
//! optional authentication, and RFC 9728 metadata found the way an MCP
//! client finds it (from the 401's `resource_metadata`).

use serde_json::{Value, json};

use crate::support::{Signer, TestGateway, TestIssuer, Upstream};

struct Setup {
    gw: TestGateway,
    token: String,
    up: Upstream,
}

async fn setup() -> Setup {
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        r#"
issuers:
  idp: {{ issuer: "{iss}", jwks_uri: "{iss}/jwks.json", algorithms: [ES256], audiences: [api] }}
routes:
  - name: app
    match: {{ path_prefix: /app }}
    upstream: "{up}"
    auth:
      issuers: [idp]
      token_from: ["cookie:session", header]
      allowed_origins: ["https://app.example"]
  - name: cors
    match: {{ path_prefix: /cors }}
    upstream: "{up}"
    auth: {{ issuers: [idp], cors_preflight: forward }}
  - name: open
    match: {{ path_prefix: /open }}
    upstream: "{up}"
    auth: {{ issuers: [idp], optional: true }}
  - name: mcp
    match: {{ path_prefix: /mcp }}
    upstream: "{up}"
    auth:
      issuers: [idp]
      resource_metadata:
        resource: "https://api.example/mcp"
        authorization_servers: ["{iss}"]
        scopes_supported: [read, write]
"#,
        iss = issuer.url,
        up = up.url()
    ))
    .await;
    let token = signer.token("ES256", json!({}), &issuer.claims());
    Setup { gw, token, up }
}

#[tokio::test]
async fn cookie_authenticated_unsafe_requests_need_an_allowed_origin() {
    let s = setup().await;
    let client = reqwest::Client::new();
    let cookie = format!("theme=dark; session={}; lang=en", s.token);
    let post = |origin: Option<&str>| {
        let mut req = client
            .post(format!("{}/app/orders", s.gw.url))
            .header("cookie", &cookie);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req
    };
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let r = post(origin).send().await.unwrap();
        assert_eq!(r.status(), 403, "{origin:?}");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "csrf");
    }
    assert_eq!(s.up.count(), 0, "a forged request reached the upstream");
    let r = post(Some("https://APP.example")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The token cookie stays at the edge; the others go on.
    let seen = s.up.seen().pop().unwrap();
    assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    // Safe methods need no Origin; a header token is no CSRF risk.
    let r = client
        .get(format!("{}/app/orders", s.gw.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{}/app/orders", s.gw.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(r#"authgate_auth_failures_total{route="app",reason="csrf"} 3"#),
        "{metrics}"
    );
}

#[test]
fn a_cookie_source_without_allowed_origins_is_refused_by_check() {
    let yaml = r#"
issuers:
  idp: { issuer: "https://idp.example", jwks_uri: "https://idp.example/jwks", algorithms: [ES256], audiences: [api] }
routes:
  - name: app
    match: { path_prefix: / }
    upstream: "http://127.0.0.1:1"
    auth: { issuers: [idp], token_from: ["cookie:session"] }
"#;
    let problems = authgate::config::parse(yaml, std::path::Path::new("."), &|_| None)
        .err()
        .unwrap();
    let text = format!("{problems:?}");
    assert!(text.contains("routes[0].auth.allowed_origins"), "{text}");
}

#[tokio::test]
async fn preflights_pass_without_a_token_and_optional_routes_take_anonymous_requests() {
    let s = setup().await;
    let client = reqwest::Client::new();
    let preflight = |acrm: bool| {
        let mut req = client
            .request(http::Method::OPTIONS, format!("{}/cors/x", s.gw.url))
            .header("origin", "https://app.example")
            .header("x-auth-subject", "mallory");
        if acrm {
            req = req.header("access-control-request-method", "POST");
        }
        req
    };
    assert_eq!(preflight(true).send().await.unwrap().status(), 200);
    let seen = s.up.seen().pop().unwrap();
    assert!(
        !seen.headers.contains_key("x-auth-subject"),
        "{:?}",
        seen.headers
    );
    // Not a preflight: a token is needed.
    assert_eq!(preflight(false).send().await.unwrap().status(), 401);

    let r = client
        .get(format!("{}/open/x", s.gw.url))
        .header("x-auth-subject", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.seen().pop().unwrap();
    assert!(!seen.headers.contains_key("x-auth-subject"));
    let r = client
        .get(format!("{}/open/x", s.gw.url))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "invalid credentials are still refused");
    let r = client
        .get(format!("{}/open/x", s.gw.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.up.seen().pop().unwrap().headers["x-auth-subject"],
        "alice"
    );
}

#[tokio::test]
async fn an_agent_finds_the_resource_metadata_from_the_401() {
    let s = setup().await;
    let r = reqwest::get(format!("{}/mcp", s.gw.url)).await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge}"));
    assert_eq!(
        url,
        "https://api.example/.well-known/oauth-protected-resource/mcp"
    );
    // Fetched as a client would, through the gateway that serves it.
    let uri: http::Uri = url.parse().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}{}", s.gw.url, uri.path()))
        .header("host", uri.host().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(doc["resource"], "https://api.example/mcp");
    assert_eq!(doc["scopes_supported"], json!(["read", "write"]));
    assert!(
        doc["authorization_servers"][0]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1")
    );
    assert_eq!(
        s.up.count(),
        0,
        "the metadata is the gateway's, not the upstream's"
    );
}
