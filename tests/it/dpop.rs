//! Sender-constrained tokens (CONTRACT §8.4), through the real gateway:
//! DPoP proofs checked as RFC 9449 §4.3 says, one attack per check; replay
//! refused in one process and across two sharing a real `redis-server`;
//! server nonces shared by replicas; the route requirement and challenges.

use serde_json::{Value, json};

use crate::support::issuer::b64;
use crate::support::redis::RedisServer;
use crate::support::{Signer, TestGateway, TestIssuer, Upstream, sha256_hex};

/// base64url SHA-256.
fn b64_sha256(bytes: &[u8]) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The RFC 7638 thumbprint of a P-256 or Ed25519 public JWK, computed here
/// independently of the gateway.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().unwrap() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap()
        ),
        other => panic!("{other}"),
    };
    b64_sha256(canonical.as_bytes())
}

static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A proof by `key` for `method` `htu` and `token`; `header` and `claims`
/// members override the defaults (null removes one).
fn proof(
    key: &Signer,
    method: &str,
    htu: &str,
    token: &str,
    header: Value,
    claims: Value,
) -> String {
    let n = JTI.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()});
    let mut c = json!({
        "jti": format!("jti-{}-{n}", std::process::id()),
        "htm": method,
        "htu": htu,
        "iat": crate::support::now(),
        "ath": b64_sha256(token.as_bytes()),
    });
    for (target, extra) in [(&mut h, header), (&mut c, claims)] {
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                target.as_object_mut().unwrap().remove(k);
            } else {
                target[k] = v.clone();
            }
        }
    }
    // Always an ES256 signature: a header naming another alg is refused
    // before the signature is looked at.
    key.raw_token("ES256", &h.to_string(), &c.to_string())
}

struct Setup {
    gw: TestGateway,
    issuer: TestIssuer,
    signer: Signer,
    client: Signer,
    up: Upstream,
}

impl Setup {
    /// A token bound to the client's key (or not).
    fn token(&self, bound: bool) -> String {
        let mut claims = self.issuer.claims();
        if bound {
            claims["cnf"] = json!({"jkt": thumbprint(&self.client.jwk())});
        }
        self.signer.token("ES256", json!({}), &claims)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url)
    }

    async fn send(&self, path: &str, auth: &str, proofs: &[&str]) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(self.url(path))
            .header("authorization", auth);
        for p in proofs {
            req = req.header("dpop", *p);
        }
        req.send().await.unwrap()
    }
}

fn config(issuer: &TestIssuer, up: &Upstream, dpop: &str, extra: &str) -> String {
    format!(
        r#"
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
    dpop: {dpop}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [idp], scopes_all: [read] }}
  - name: strict
    match: {{ path_prefix: /strict }}
    upstream: "{up}"
    auth: {{ issuers: [idp], sender_constrained: required }}
{extra}"#,
        iss = issuer.url,
        up = up.url()
    )
}

async fn setup_with(dpop: &str, extra: &str) -> Setup {
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up, dpop, extra)).await;
    Setup {
        gw,
        issuer,
        signer,
        client: Signer::es256("client"),
        up,
    }
}

async fn setup() -> Setup {
    setup_with("{ algorithms: [ES256, EdDSA] }", "").await
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_dpop_bound_token_passes_with_a_fresh_proof_and_never_twice_with_one() {
    let s = setup().await;
    let token = s.token(true);
    let htu = s.url("/api/orders");
    let p = proof(&s.client, "GET", &htu, &token, json!({}), json!({}));
    let auth = format!("DPoP {token}");
    let r = s.send("/api/orders?page=2", &auth, &[&p]).await;
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    let seen = s.up.seen().pop().unwrap();
    assert!(!seen.headers.contains_key("authorization"));
    assert!(
        !seen.headers.contains_key("dpop"),
        "the proof went upstream"
    );
    // The same proof again: a replay.
    let r = s.send("/api/orders?page=2", &auth, &[&p]).await;
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).starts_with(r#"DPoP error="invalid_dpop_proof""#),
        "{}",
        challenge(&r)
    );
    // A new proof for the same (now cached) token: checked, and it passes.
    let p2 = proof(&s.client, "GET", &htu, &token, json!({}), json!({}));
    assert_eq!(s.send("/api/orders", &auth, &[&p2]).await.status(), 200);
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(r#"authgate_auth_failures_total{route="api",reason="dpop_replay"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_proof_check_refuses_its_attack() {
    let s = setup().await;
    let token = s.token(true);
    let htu = s.url("/api/x");
    let auth = format!("DPoP {token}");
    let stranger = Signer::es256("stranger");
    let now = crate::support::now();
    let mut private = s.client.jwk();
    private["d"] = json!(b64([7u8; 32]));
    let good = |h: Value, c: Value| proof(&s.client, "GET", &htu, &token, h, c);
    let cases: Vec<(&str, String)> = vec![
        ("typ", good(json!({"typ": "jwt"}), json!({}))),
        (
            "alg outside the list",
            good(json!({"alg": "ES384"}), json!({})),
        ),
        ("alg none", good(json!({"alg": "none"}), json!({}))),
        ("private jwk", good(json!({"jwk": private}), json!({}))),
        ("no jwk", good(json!({"jwk": null}), json!({}))),
        ("htm", good(json!({}), json!({"htm": "POST"}))),
        (
            "htu path",
            good(json!({}), json!({"htu": s.url("/api/other")})),
        ),
        (
            "htu host",
            good(json!({}), json!({"htu": "http://evil.example/api/x"})),
        ),
        ("iat old", good(json!({}), json!({"iat": now - 600}))),
        ("iat future", good(json!({}), json!({"iat": now + 120}))),
        ("no iat", good(json!({}), json!({"iat": null}))),
        (
            "ath",
            good(json!({}), json!({"ath": b64_sha256(b"another token")})),
        ),
        ("no ath", good(json!({}), json!({"ath": null}))),
        ("no jti", good(json!({}), json!({"jti": null}))),
        (
            "key other than the bound one",
            proof(&stranger, "GET", &htu, &token, json!({}), json!({})),
        ),
    ];
    for (what, p) in &cases {
        let r = s.send("/api/x", &auth, &[p]).await;
        assert_eq!(r.status(), 401, "{what}");
        let c = challenge(&r);
        assert!(
            c.starts_with(r#"DPoP error="invalid_dpop_proof""#),
            "{what}: {c}"
        );
        assert!(c.contains(r#"algs="ES256 EdDSA""#), "{what}: {c}");
    }
    // A bad signature: the last byte of the signature changed.
    let mut p = good(json!({}), json!({}));
    let last = p.pop().unwrap();
    p.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        s.send("/api/x", &auth, &[&p]).await.status(),
        401,
        "signature"
    );
    // Exactly one proof.
    let (a, b) = (good(json!({}), json!({})), good(json!({}), json!({})));
    assert_eq!(
        s.send("/api/x", &auth, &[&a, &b]).await.status(),
        401,
        "two"
    );
    assert_eq!(s.send("/api/x", &auth, &[]).await.status(), 401, "none");
    // The same good proof shape still passes, so each case above failed on
    // its own check.
    assert_eq!(
        s.send("/api/x", &auth, &[&good(json!({}), json!({}))])
            .await
            .status(),
        200
    );
    // HTTP/1.1 htu normalisation: scheme and host case, default port.
    let upper = s
        .url("/api/x")
        .replace("http://127.0.0.1", "HTTP://127.0.0.1");
    let p = proof(&s.client, "GET", &upper, &token, json!({}), json!({}));
    assert_eq!(s.send("/api/x", &auth, &[&p]).await.status(), 200);
    assert_eq!(s.up.count(), 2);
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(
            r#"authgate_auth_failures_total{route="api",reason="invalid_dpop_proof"} 17"#
        ),
        "{metrics}"
    );
    // The proof by another key is the binding's failure, not the proof's.
    assert!(
        metrics
            .contains(r#"authgate_auth_failures_total{route="api",reason="binding_mismatch"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn bindings_hold_whatever_the_scheme_and_routes_can_require_them() {
    let s = setup().await;
    let bound = s.token(true);
    let plain = s.token(false);
    // A bound token as Bearer: refused as a token problem.
    let r = s.send("/api/x", &format!("Bearer {bound}"), &[]).await;
    assert_eq!(r.status(), 401);
    let c = challenge(&r);
    assert!(
        c.starts_with(r#"Bearer realm="authgate", error="invalid_token""#),
        "{c}"
    );
    assert!(c.contains(r#"DPoP algs="ES256 EdDSA""#), "{c}");
    // An unbound token with the DPoP scheme.
    let p = proof(
        &s.client,
        "GET",
        &s.url("/api/x"),
        &plain,
        json!({}),
        json!({}),
    );
    assert_eq!(
        s.send("/api/x", &format!("DPoP {plain}"), &[&p])
            .await
            .status(),
        401
    );
    // A plain Bearer token still works where binding is optional, but not
    // on the route that requires it.
    assert_eq!(
        s.send("/api/x", &format!("Bearer {plain}"), &[])
            .await
            .status(),
        200
    );
    let r = s.send("/strict/x", &format!("Bearer {plain}"), &[]).await;
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("sender-constrained"), "{body}");
    let p = proof(
        &s.client,
        "GET",
        &s.url("/strict/x"),
        &bound,
        json!({}),
        json!({}),
    );
    assert_eq!(
        s.send("/strict/x", &format!("DPoP {bound}"), &[&p])
            .await
            .status(),
        200
    );
    // No token: both challenges.
    let r = reqwest::get(s.url("/api/x")).await.unwrap();
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="authgate", DPoP algs="ES256 EdDSA""#
    );
    let metrics = s.gw.metrics().await;
    for reason in ["binding_mismatch", "sender_constraint_required"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test]
async fn server_nonces_are_required_handed_out_and_shared_by_replicas() {
    let secret = sha256_hex("a shared nonce secret");
    let env = [("AUTHGATE_TEST_DPOP_NONCE", secret.as_str())];
    let dpop = "{ nonce: true, nonce_secret_env: AUTHGATE_TEST_DPOP_NONCE }";
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start_with_env(&config(&issuer, &up, dpop, ""), &env).await;
    let s = Setup {
        gw,
        issuer,
        signer,
        client: Signer::es256("client"),
        up,
    };
    let token = s.token(true);
    let auth = format!("DPoP {token}");
    let p = proof(
        &s.client,
        "GET",
        &s.url("/api/x"),
        &token,
        json!({}),
        json!({}),
    );
    let r = s.send("/api/x", &auth, &[&p]).await;
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).starts_with(r#"DPoP error="use_dpop_nonce""#),
        "{}",
        challenge(&r)
    );
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let p = proof(
        &s.client,
        "GET",
        &s.url("/api/x"),
        &token,
        json!({}),
        json!({"nonce": nonce}),
    );
    assert_eq!(s.send("/api/x", &auth, &[&p]).await.status(), 200);
    // A forged nonce is refused.
    let p = proof(
        &s.client,
        "GET",
        &s.url("/api/x"),
        &token,
        json!({}),
        json!({"nonce": "AAAA"}),
    );
    assert_eq!(s.send("/api/x", &auth, &[&p]).await.status(), 401);

    // A second replica with the same secret takes the first one's nonce;
    // one with its own random secret does not.
    let nonced = async |gw: &TestGateway| {
        let htu = format!("{}/api/x", gw.url);
        let p = proof(
            &s.client,
            "GET",
            &htu,
            &token,
            json!({}),
            json!({"nonce": nonce}),
        );
        reqwest::Client::new()
            .get(&htu)
            .header("authorization", &auth)
            .header("dpop", p)
            .send()
            .await
            .unwrap()
    };
    let up = Upstream::spawn().await;
    let other = TestGateway::start_with_env(&config(&s.issuer, &up, dpop, ""), &env).await;
    assert_eq!(nonced(&other).await.status(), 200);
    let alone = TestGateway::start(&config(&s.issuer, &up, "{ nonce: true }", "")).await;
    let r = nonced(&alone).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("dpop-nonce"));
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(r#"authgate_auth_failures_total{route="api",reason="use_dpop_nonce"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_proof_used_on_one_replica_is_refused_on_another_through_redis() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let store = |policy: &str| {
        format!("revocation: {{ store: redis, redis_url: \"{url}\", on_store_error: {policy} }}")
    };
    let s = setup_with("{ algorithms: [ES256] }", &store("deny")).await;
    let up = Upstream::spawn().await;
    let b = TestGateway::start(&config(
        &s.issuer,
        &up,
        "{ algorithms: [ES256] }",
        &store("deny"),
    ))
    .await;
    let token = s.token(true);
    let auth = format!("DPoP {token}");
    // The same URL on both replicas (as behind one load balancer): the
    // proof's htu names the host the client called.
    let htu = "http://api.example/api/x";
    let p = proof(&s.client, "GET", htu, &token, json!({}), json!({}));
    let send = async |gw: &TestGateway, p: &str| {
        reqwest::Client::new()
            .get(format!("{}/api/x", gw.url))
            .header("host", "api.example")
            .header("authorization", &auth)
            .header("dpop", p)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send(&s.gw, &p).await, 200);
    assert_eq!(send(&b, &p).await, 401, "replayed on the other replica");
    // Redis down, deny: 503 rather than a replay window.
    redis.stop().await;
    let fresh = proof(&s.client, "GET", htu, &token, json!({}), json!({}));
    assert_eq!(send(&b, &fresh).await, 503);
    // Allow: each replica's own memory still refuses what it saw.
    let c = TestGateway::start(&config(
        &s.issuer,
        &up,
        "{ algorithms: [ES256] }",
        &store("allow"),
    ))
    .await;
    let fresh = proof(&s.client, "GET", htu, &token, json!({}), json!({}));
    assert_eq!(send(&c, &fresh).await, 200);
    assert_eq!(send(&c, &fresh).await, 401);
}

fn mtls_config(issuer: &TestIssuer, up: &Upstream, client_auth: &str) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
  workers: 2
  tls: {{ cert_file: server.crt, key_file: server.key, client_ca_file: ca.crt, client_auth: {client_auth} }}
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [idp] }}
    forward: {{ client_cert: true }}
"#,
        iss = issuer.url,
        up = up.url()
    )
}

#[tokio::test]
async fn certificate_bound_tokens_pass_only_over_their_certificate_on_http1_and_http2() {
    let pki = crate::support::tls::TestPki::new();
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start_in(&mtls_config(&issuer, &up, "optional"), &pki.dir).await;
    let url = format!("https://127.0.0.1:{}/api/x", gw.running.proxy_addr.port());
    let mut claims = issuer.claims();
    claims["cnf"] = json!({"x5t#S256": b64_sha256(&pki.clients[0].1)});
    let bound = format!("Bearer {}", signer.token("ES256", json!({}), &claims));
    let plain = format!(
        "Bearer {}",
        signer.token("ES256", json!({}), &issuer.claims())
    );
    let get = async |client: reqwest::Client, auth: &str| {
        client
            .get(&url)
            .header("authorization", auth)
            .header("client-cert", ":c3Bvb2Zl:")
            .send()
            .await
            .unwrap()
    };
    use base64::Engine;
    let expected = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(&pki.clients[0].1)
    );
    for http2 in [false, true] {
        let r = get(pki.client_with_cert(0, http2), &bound).await;
        assert_eq!(r.status(), 200, "http2 {http2}");
        let want = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(r.version(), want);
        // The verified certificate went upstream, never the client's own.
        let seen = up.seen().pop().unwrap();
        assert_eq!(seen.headers["client-cert"], expected.as_str());
    }
    // Another certificate of the same CA, or none: the binding fails.
    let r = get(pki.client_with_cert(1, false), &bound).await;
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).contains(r#"error="invalid_token""#),
        "{}",
        challenge(&r)
    );
    assert_eq!(get(pki.client(false), &bound).await.status(), 401);
    // Optional client auth: an unbound token without a certificate passes,
    // and a forged Client-Cert does not reach the upstream.
    assert_eq!(get(pki.client(false), &plain).await.status(), 200);
    assert!(!up.seen().pop().unwrap().headers.contains_key("client-cert"));
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains(r#"authgate_auth_failures_total{route="api",reason="binding_mismatch"} 2"#),
        "{metrics}"
    );

    // client_auth: required (the default): no certificate, no connection.
    let up = Upstream::spawn().await;
    let strict = TestGateway::start_in(&mtls_config(&issuer, &up, "required"), &pki.dir).await;
    let url = format!(
        "https://127.0.0.1:{}/api/x",
        strict.running.proxy_addr.port()
    );
    assert!(pki.client(false).get(&url).send().await.is_err());
    let r = pki
        .client_with_cert(0, false)
        .get(&url)
        .header("authorization", &bound)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
