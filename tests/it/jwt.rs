//! Token verification through the real server: every attack is sent, and
//! each test asserts the status, the challenge, and that the upstream saw
//! nothing.

use serde_json::{Value, json};

use crate::support::issuer::{b64, hmac};
use crate::support::{Signer, TestGateway, TestIssuer, Upstream, now, raw};

struct Fx {
    issuer: TestIssuer,
    up: Upstream,
    gw: TestGateway,
    rsa: Signer,
    ec: Signer,
    ed: Signer,
}

async fn fixture() -> Fx {
    let (rsa, ec, ed) = (
        Signer::rsa("rsa-1"),
        Signer::es256("ec-1"),
        Signer::ed25519("ed-1"),
    );
    let issuer = TestIssuer::spawn(&[&rsa, &ec, &ed]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        r#"
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA]
    audiences: [api]
    leeway: 30s
    max_lifetime: 1h
    token_type: at+jwt
    jwks_cache: {{ min_refresh_interval: 1s }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [idp], scopes_all: [read] }}
  - name: tenants
    match: {{ path_template: "/tenants/{{tenant}}/orders" }}
    upstream: "{up}"
    auth:
      issuers: [idp]
      claims: {{ tenant_id: "{{path.tenant}}" }}
"#,
        iss = issuer.url,
        up = up.url()
    ))
    .await;
    Fx {
        issuer,
        up,
        gw,
        rsa,
        ec,
        ed,
    }
}

struct Answer {
    status: u16,
    challenge: Option<String>,
    body: String,
}

impl Fx {
    async fn call_path(&self, path: &str, token: &str) -> Answer {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.gw.url))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        Answer {
            status: r.status().as_u16(),
            challenge: r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: r.text().await.unwrap(),
        }
    }

    async fn call(&self, token: &str) -> Answer {
        self.call_path("/api/orders", token).await
    }

    /// Sends `token` and asserts a 401 invalid_token whose description holds
    /// `words`, and that nothing reached the upstream.
    async fn rejects(&self, token: &str, words: &str) {
        let before = self.up.count();
        let a = self.call(token).await;
        assert_eq!(a.status, 401, "body: {}", a.body);
        let challenge = a.challenge.unwrap();
        assert!(
            challenge.starts_with(r#"Bearer realm="authgate", error="invalid_token""#),
            "{challenge}"
        );
        assert!(
            challenge.contains(words),
            "{challenge:?} should mention {words:?}"
        );
        let sig = token.rsplit('.').next().unwrap_or("");
        assert!(sig.len() < 8 || !a.body.contains(sig), "token echoed");
        assert_eq!(self.up.count(), before, "the upstream must see nothing");
    }

    fn good(&self) -> String {
        self.ec.token("ES256", json!({}), &self.issuer.claims())
    }
}

#[tokio::test]
async fn every_supported_algorithm_verifies_and_sets_identity_headers() {
    let fx = fixture().await;
    let cases = [
        (&fx.rsa, "RS256"),
        (&fx.rsa, "RS384"),
        (&fx.rsa, "RS512"),
        (&fx.rsa, "PS256"),
        (&fx.rsa, "PS384"),
        (&fx.rsa, "PS512"),
        (&fx.ec, "ES256"),
        (&fx.ed, "EdDSA"),
    ];
    for (signer, alg) in cases {
        let a = fx
            .call(&signer.token(alg, json!({}), &fx.issuer.claims()))
            .await;
        assert_eq!(a.status, 200, "{alg}: {}", a.body);
    }
    let seen = fx.up.seen();
    assert_eq!(seen.len(), 8);
    let h = &seen[0].headers;
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-issuer"], fx.issuer.url.as_str());
    assert_eq!(h["x-auth-scopes"], "read");
    assert!(
        h.get("authorization").is_none(),
        "Authorization must be stripped"
    );
}

#[tokio::test]
async fn alg_none_in_every_casing_is_refused() {
    let fx = fixture().await;
    let payload = b64(fx.issuer.claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "kid": "ec-1", "typ": "at+jwt"}).to_string());
        fx.rejects(&format!("{header}.{payload}."), "algorithm is not allowed")
            .await;
        let valid_sig = fx.good().rsplit('.').next().unwrap().to_owned();
        fx.rejects(
            &format!("{header}.{payload}.{valid_sig}"),
            "algorithm is not allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let fx = fixture().await;
    for secret in [fx.rsa.public_pem().into_bytes(), fx.rsa.public_jwk_bytes()] {
        let header = b64(json!({"alg": "HS256", "kid": "rsa-1", "typ": "at+jwt"}).to_string());
        let input = format!("{header}.{}", b64(fx.issuer.claims().to_string()));
        let token = format!("{input}.{}", b64(hmac("HS256", &secret, input.as_bytes())));
        fx.rejects(&token, "algorithm is not allowed").await;
    }
}

#[tokio::test]
async fn flipped_truncated_and_empty_signatures_are_refused() {
    let fx = fixture().await;
    for token in [
        fx.good(),
        fx.rsa.token("RS256", json!({}), &fx.issuer.claims()),
    ] {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        bytes[10] ^= 1;
        fx.rejects(&format!("{input}.{}", b64(&bytes)), "signature is invalid")
            .await;
        fx.rejects(
            &format!("{input}.{}", b64(&bytes[..bytes.len() - 1])),
            "signature is invalid",
        )
        .await;
        fx.rejects(&format!("{input}."), "signature is invalid")
            .await;
    }
    // A valid signature over different claims.
    let other = fx.ec.token("ES256", json!({}), &json!({"iss": fx.issuer.url, "sub": "mallory", "aud": "api", "scope": "read", "iat": now(), "exp": now() + 60}));
    let sig = other.rsplit('.').next().unwrap();
    let good = fx.good();
    let (input, _) = good.rsplit_once('.').unwrap();
    fx.rejects(&format!("{input}.{sig}"), "signature is invalid")
        .await;
}

#[tokio::test]
async fn ecdsa_zero_and_der_encoded_signatures_are_refused() {
    let fx = fixture().await;
    let good = fx.good();
    let (input, sig) = good.rsplit_once('.').unwrap();
    fx.rejects(
        &format!("{input}.{}", b64([0u8; 64])),
        "signature is invalid",
    )
    .await;
    let raw_sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    let (r, s) = raw_sig.split_at(32);
    let int = |v: &[u8]| {
        let v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        let mut out = vec![0x02];
        if v[0] & 0x80 != 0 {
            out.push((v.len() + 1) as u8);
            out.push(0);
        } else {
            out.push(v.len() as u8);
        }
        out.extend(v);
        out
    };
    let (r, s) = (int(r), int(s));
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    fx.rejects(&format!("{input}.{}", b64(der)), "signature is invalid")
        .await;
}

#[tokio::test]
async fn embedded_jwk_jku_and_x5u_are_never_used_or_fetched() {
    let fx = fixture().await;
    let attacker = Signer::es256("attacker");
    let evil = format!("{}/evil-keys", fx.issuer.url);
    let before = fx.issuer.fetches();
    for extra in [
        json!({"jwk": attacker.jwk()}),
        json!({"jku": evil}),
        json!({"x5u": evil}),
        json!({"jku": evil, "jwk": attacker.jwk()}),
    ] {
        fx.rejects(
            &attacker.token("ES256", extra.clone(), &fx.issuer.claims()),
            "not known",
        )
        .await;
        let mut with_real_kid = extra;
        with_real_kid["kid"] = "ec-1".into();
        fx.rejects(
            &attacker.token("ES256", with_real_kid, &fx.issuer.claims()),
            "signature is invalid",
        )
        .await;
    }
    assert_eq!(
        fx.issuer
            .other_fetches
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "jku/x5u must never be fetched"
    );
    assert!(
        fx.issuer.fetches() <= before + 1,
        "at most one unknown-kid refresh"
    );
}

#[tokio::test]
async fn crit_b64_and_duplicate_members_are_refused() {
    let fx = fixture().await;
    fx.rejects(
        &fx.ec.token(
            "ES256",
            json!({"crit": ["exp"], "exp": 1}),
            &fx.issuer.claims(),
        ),
        "crit",
    )
    .await;
    fx.rejects(
        &fx.ec.token(
            "ES256",
            json!({"b64": false, "crit": ["b64"]}),
            &fx.issuer.claims(),
        ),
        "not supported",
    )
    .await;
    let dup = fx.ec.raw_token(
        "ES256",
        r#"{"alg":"ES256","kid":"ec-1","typ":"at+jwt","kid":"rsa-1"}"#,
        &fx.issuer.claims().to_string(),
    );
    fx.rejects(&dup, "duplicate members").await;
    // The same name spelled with an escape is the same member, even when
    // both carry the one valid kid.
    let escaped = fx.ec.raw_token(
        "ES256",
        r#"{"alg":"ES256","kid":"ec-1","typ":"at+jwt","k\u0069d":"ec-1"}"#,
        &fx.issuer.claims().to_string(),
    );
    fx.rejects(&escaped, "duplicate members").await;
    // Duplicates among members authgate does not read are refused too,
    // once the signature holds, in the header and in the payload.
    let claims = fx.issuer.claims().to_string();
    let unread = fx.ec.raw_token(
        "ES256",
        r#"{"alg":"ES256","kid":"ec-1","typ":"at+jwt","x5t":"a","x5\u0074":"b"}"#,
        &claims,
    );
    fx.rejects(
        &unread,
        "token header is not a JSON object without duplicate members",
    )
    .await;
    let twice = format!(r#"{{"sub":"mallory",{}"#, &claims[1..]);
    assert!(twice.matches("\"sub\"").count() == 2, "{twice}");
    let unread = fx.ec.raw_token(
        "ES256",
        r#"{"alg":"ES256","kid":"ec-1","typ":"at+jwt"}"#,
        &twice,
    );
    fx.rejects(
        &unread,
        "token payload is not a JSON object without duplicate members",
    )
    .await;
}

#[tokio::test]
async fn typ_must_match_the_issuer_token_type() {
    let fx = fixture().await;
    fx.rejects(
        &fx.ec
            .token("ES256", json!({"typ": "JWT"}), &fx.issuer.claims()),
        "typ",
    )
    .await;
    fx.rejects(
        &fx.ec
            .token("ES256", json!({"typ": null}), &fx.issuer.claims()),
        "typ",
    )
    .await;
    let a = fx
        .call(&fx.ec.token(
            "ES256",
            json!({"typ": "application/AT+JWT"}),
            &fx.issuer.claims(),
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn time_claims_hold_at_the_leeway_and_fail_just_beyond() {
    let fx = fixture().await;
    let with = |changes: Value| {
        let mut c = fx.issuer.claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        fx.ec.token("ES256", json!({}), &c)
    };
    let t = now();
    for ok in [
        json!({"exp": t - 25, "iat": t - 100}),
        json!({"nbf": t + 25}),
        json!({"iat": t + 25, "exp": t + 300}),
        json!({"exp": t + 3000, "iat": t - 600}),
    ] {
        let a = fx.call(&with(ok.clone())).await;
        assert_eq!(a.status, 200, "{ok}: {}", a.body);
    }
    fx.rejects(
        &with(json!({"exp": t - 35, "iat": t - 100})),
        "token expired",
    )
    .await;
    fx.rejects(&with(json!({"nbf": t + 35})), "not valid yet")
        .await;
    fx.rejects(&with(json!({"iat": t + 35})), "issued in the future")
        .await;
    fx.rejects(&with(json!({"iat": t - 10, "exp": t + 3591})), "lifetime")
        .await;
    fx.rejects(&with(json!({"exp": null})), "no exp").await;
    fx.rejects(&with(json!({"exp": (t + 60).to_string()})), "JSON numbers")
        .await;
    fx.rejects(&with(json!({"iat": true})), "JSON numbers")
        .await;
}

#[tokio::test]
async fn audience_is_any_of_over_a_string_or_an_array() {
    let fx = fixture().await;
    let with_aud = |aud: Value| {
        let mut c = fx.issuer.claims();
        c["aud"] = aud;
        fx.ec.token("ES256", json!({}), &c)
    };
    assert_eq!(fx.call(&with_aud(json!("api"))).await.status, 200);
    assert_eq!(
        fx.call(&with_aud(json!(["other", "api"]))).await.status,
        200
    );
    fx.rejects(&with_aud(json!("other")), "audience").await;
    fx.rejects(&with_aud(json!(["other", "API"])), "audience")
        .await;
    fx.rejects(&with_aud(Value::Null), "audience").await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let fx = fixture().await;
    let mut c = fx.issuer.claims();
    c["iss"] = "https://evil.example".into();
    fx.rejects(&fx.ec.token("ES256", json!({}), &c), "issuer")
        .await;
    c["iss"] = format!("{}/", fx.issuer.url).into();
    fx.rejects(&fx.ec.token("ES256", json!({}), &c), "issuer")
        .await;
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let fx = fixture().await;
    let mut c = fx.issuer.claims();
    c["scope"] = "write READ".into();
    let before = fx.up.count();
    let a = fx.call(&fx.ec.token("ES256", json!({}), &c)).await;
    assert_eq!(a.status, 403);
    let ch = a.challenge.unwrap();
    assert!(
        ch.contains(r#"error="insufficient_scope""#) && ch.contains(r#"scope="read""#),
        "{ch}"
    );
    assert_eq!(fx.up.count(), before);
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["write", "read"]);
    assert_eq!(
        fx.call(&fx.ec.token("ES256", json!({}), &c)).await.status,
        200
    );
}

#[tokio::test]
async fn tenant_claim_must_match_the_path_parameter() {
    let fx = fixture().await;
    let mut c = fx.issuer.claims();
    c["tenant_id"] = "acme".into();
    let token = fx.ec.token("ES256", json!({}), &c);
    assert_eq!(
        fx.call_path("/tenants/acme/orders", &token).await.status,
        200
    );
    let before = fx.up.count();
    let a = fx.call_path("/tenants/globex/orders", &token).await;
    assert_eq!(a.status, 403);
    assert!(
        a.challenge
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );
    assert_eq!(fx.up.count(), before);
}

/// The verified-token cache skips the policy for claims that passed it on
/// the same route before: never for another route, or for a policy that
/// reads the path.
#[tokio::test]
async fn a_cached_token_meets_each_routes_policy_on_every_request() {
    let fx = fixture().await;
    let mut c = fx.issuer.claims();
    c["tenant_id"] = "acme".into();
    c["scope"] = "write".into();
    c.as_object_mut().unwrap().remove("scp");
    let token = fx.ec.token("ES256", json!({}), &c);
    for _ in 0..2 {
        let on_tenant = fx.call_path("/tenants/acme/orders", &token).await;
        assert_eq!(on_tenant.status, 200, "{}", on_tenant.body);
    }
    let before = fx.up.count();
    for _ in 0..2 {
        let a = fx.call(&token).await;
        assert_eq!(a.status, 403, "api wants scope read: {}", a.body);
        assert!(a.challenge.unwrap().contains(r#"scope="read""#));
        let other = fx.call_path("/tenants/globex/orders", &token).await;
        assert_eq!(other.status, 403, "{}", other.body);
    }
    assert_eq!(fx.up.count(), before, "the upstream must see nothing");
}

#[tokio::test]
async fn extraction_follows_rfc_6750() {
    let fx = fixture().await;
    let addr = fx.gw.running.proxy_addr;
    let token = fx.good();
    let auth = format!("Bearer {token}");
    let two = raw::get(
        addr,
        "/api/x",
        &[("Authorization", &auth), ("Authorization", &auth)],
    )
    .await;
    assert_eq!(two.status, 400);
    assert!(
        two.header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_request""#)
    );
    let query = raw::get(addr, &format!("/api/x?access_token={token}"), &[]).await;
    assert_eq!(query.status, 400);
    let basic = raw::get(addr, "/api/x", &[("Authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(basic.status, 401);
    assert_eq!(
        basic.header("www-authenticate").unwrap(),
        r#"Bearer realm="authgate""#
    );
    let none = raw::get(addr, "/api/x", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate").unwrap(),
        r#"Bearer realm="authgate""#
    );
    let lower = raw::get(
        addr,
        "/api/x",
        &[("Authorization", &format!("bearer   {token} "))],
    )
    .await;
    assert_eq!(lower.status, 200);
    let huge = raw::get(
        addr,
        "/api/x",
        &[("Authorization", &format!("Bearer {}", "a".repeat(17_000)))],
    )
    .await;
    assert!(huge.status == 401 || huge.status == 431, "{}", huge.status);
    assert_eq!(
        fx.up.count(),
        1,
        "only the valid request may reach the upstream"
    );
}

#[tokio::test]
async fn a_reused_token_is_served_from_the_verified_cache() {
    let fx = fixture().await;
    let token = fx.good();
    for _ in 0..3 {
        assert_eq!(fx.call(&token).await.status, 200);
    }
    let metrics = fx.gw.metrics().await;
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("authgate_verified_cache_total{result=\"hit\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(hits >= 2, "{metrics}");
}

#[tokio::test]
async fn the_token_iss_picks_the_issuer_whose_keys_verify_it() {
    let (a_key, b_key) = (Signer::es256("a-1"), Signer::es256("b-1"));
    let (a, b) = (
        TestIssuer::spawn(&[&a_key]).await,
        TestIssuer::spawn(&[&b_key]).await,
    );
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        r#"
issuers:
  a: {{ issuer: "{a}", jwks_uri: "{a}/jwks.json", algorithms: [ES256], audiences: [api] }}
  b: {{ issuer: "{b}", jwks_uri: "{b}/jwks.json", algorithms: [ES256], audiences: [api] }}
routes:
  - name: both
    match: {{ path_prefix: / }}
    upstream: "{up}"
    auth: {{ issuers: [a, b] }}
"#,
        a = a.url,
        b = b.url,
        up = up.url()
    ))
    .await;
    let call = async |token: String| {
        reqwest::Client::new()
            .get(format!("{}/x", gw.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        call(a_key.token("ES256", json!({}), &a.claims())).await,
        200
    );
    assert_eq!(
        call(b_key.token("ES256", json!({}), &b.claims())).await,
        200
    );
    // Claims to be from a, signed with b's key (and b's kid): a's keys must decide.
    assert_eq!(
        call(b_key.token("ES256", json!({}), &a.claims())).await,
        401
    );
    let mut forged = b_key.token("ES256", json!({"kid": "a-1"}), &a.claims());
    assert_eq!(call(forged.clone()).await, 401);
    forged.push('x');
    assert_eq!(call(forged).await, 401);
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn clients_are_matched_against_azp_or_client_id() {
    let key = Signer::es256("k");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        r#"
issuers:
  idp: {{ issuer: "{iss}", jwks_uri: "{iss}/jwks.json", algorithms: [ES256], audiences: [api] }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: "{up}"
    auth: {{ issuers: [idp], clients: [web-app] }}
"#,
        iss = issuer.url,
        up = up.url()
    ))
    .await;
    let call = async |claim: &str, value: &str| {
        let mut c = issuer.claims();
        c[claim] = value.into();
        let token = key.token("ES256", json!({}), &c);
        let r = reqwest::Client::new()
            .get(format!("{}/x", gw.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    };
    assert_eq!(call("azp", "web-app").await.0, 200);
    assert_eq!(call("client_id", "web-app").await.0, 200);
    let (status, challenge) = call("azp", "mobile-app").await;
    assert_eq!(status, 403);
    assert!(challenge.unwrap().contains(r#"error="insufficient_scope""#));
    assert_eq!(
        call("sub", "web-app").await.0,
        403,
        "no azp or client_id at all"
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn hmac_issuers_take_their_secret_from_the_environment_only() {
    let secret = "0123456789abcdef0123456789abcdef-long-enough";
    let up = Upstream::spawn().await;
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
issuers:
  internal: {{ issuer: "internal", hmac_secret_env: SHARED_SECRET, algorithms: [HS256], audiences: [api] }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: "{}"
    auth: {{ issuers: [internal] }}
"#,
        up.url()
    );
    let loaded = authgate::config::parse(&yaml, std::path::Path::new("."), &|n| {
        (n == "SHARED_SECRET").then(|| secret.to_owned())
    })
    .unwrap();
    let running = authgate::server::Running::start(loaded.config)
        .await
        .unwrap();
    let sign = |alg: &str, key: &[u8]| {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string());
        let claims =
            json!({"iss": "internal", "aud": "api", "sub": "svc", "iat": now(), "exp": now() + 60});
        let input = format!("{header}.{}", b64(claims.to_string()));
        format!("{input}.{}", b64(hmac(alg, key, input.as_bytes())))
    };
    let call = async |token: String| {
        reqwest::Client::new()
            .get(format!("http://{}/x", running.proxy_addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call(sign("HS256", secret.as_bytes())).await, 200);
    assert_eq!(
        call(sign("HS256", b"another-secret-of-32-bytes-or-more!!")).await,
        401
    );
    assert_eq!(
        call(sign("HS512", secret.as_bytes())).await,
        401,
        "HS512 is not in the issuer's list"
    );
    assert_eq!(up.count(), 1);
}
