//! Revocation through the real server and admin listener: single tokens
//! by `jti`, whole subjects by `issued_before`, the admin endpoint's
//! answers, and the Redis store shared by real gateway processes, down
//! and back up.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::binary::{free_port, run, run_with_env};
use crate::support::redis::RedisServer;
use crate::support::{
    Signer, TestGateway, TestIssuer, Upstream, eventually, now, sha256_hex, temp_dir,
};

const ADMIN_TOKEN: &str = "revocation-admin-token-0123456789";

fn config(issuer: &TestIssuer, up: &Upstream, revocation: &str, admin: &str) -> String {
    format!(
        r#"
{admin}
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
    max_lifetime: 1h
{revocation}
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

fn admin_block(listen: &str) -> String {
    format!(
        "admin: {{ listen: \"{listen}\", token_sha256: \"{}\" }}",
        sha256_hex(ADMIN_TOKEN)
    )
}

fn token(key: &Signer, issuer: &TestIssuer, extra: Value) -> String {
    let mut claims = issuer.claims();
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    key.token("ES256", json!({}), &claims)
}

async fn get(base: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn revoke(admin: &str, bearer: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{admin}/revocations"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_revoked_jti_gets_401_revoked_even_after_it_was_cached() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up, "", &admin_block("127.0.0.1:0"))).await;
    let stolen = token(&key, &issuer, json!({"jti": "stolen-1"}));
    let other = token(&key, &issuer, json!({"jti": "other-1"}));
    assert_eq!(
        get(&gw.url, &stolen).await.status(),
        200,
        "verified and cached"
    );

    let body = json!({"jti": "stolen-1", "expires_at": now() + 300}).to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &body).await.status(),
        204
    );

    let seen = up.count();
    let r = get(&gw.url, &stolen).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="authgate", error="invalid_token", error_description="token has been revoked""#
    );
    assert_eq!(up.count(), seen, "the upstream saw nothing");
    assert_eq!(get(&gw.url, &other).await.status(), 200);
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"authgate_auth_failures_total{route="api",reason="revoked"} 1"#));
    assert!(metrics.contains(r#"authgate_revocations{kind="token"} 1"#));
    assert!(metrics.contains("authgate_revocation_store_up 1"));
}

#[tokio::test]
async fn a_subject_revocation_refuses_older_tokens_and_lets_new_ones_in() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up, "", &admin_block("127.0.0.1:0"))).await;
    let t = now();
    let alice_old = token(&key, &issuer, json!({"iat": t - 60, "jti": "a1"}));
    let alice_no_iat = token(&key, &issuer, json!({"iat": null, "jti": "a2"}));
    let bob_old = token(&key, &issuer, json!({"sub": "bob", "iat": t - 60}));
    assert_eq!(get(&gw.url, &alice_old).await.status(), 200);

    let body = json!({"issuer": "idp", "sub": "alice", "issued_before": t - 10}).to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &body).await.status(),
        204
    );

    assert_eq!(get(&gw.url, &alice_old).await.status(), 401);
    assert_eq!(
        get(&gw.url, &alice_no_iat).await.status(),
        401,
        "no iat: nothing shows the token is newer"
    );
    assert_eq!(get(&gw.url, &bob_old).await.status(), 200);
    let alice_new = token(&key, &issuer, json!({"iat": t, "jti": "a3"}));
    assert_eq!(
        get(&gw.url, &alice_new).await.status(),
        200,
        "logged in again"
    );
}

#[tokio::test]
async fn revocation_times_past_the_year_9999_are_refused_and_numeric_subjects_match() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up, "", &admin_block("127.0.0.1:0"))).await;
    let huge = token(&key, &issuer, json!({"jti": "huge"}));
    for body in [
        r#"{"jti":"huge","expires_at":9223372036854775807}"#,
        r#"{"jti":"huge","expires_at":253402300800}"#,
        r#"{"issuer":"idp","sub":"alice","issued_before":1e300}"#,
        r#"{"issuer":"idp","sub":"alice","issued_before":1,"expires_at":9223372036854775807}"#,
    ] {
        let r = revoke(&gw.admin, Some(ADMIN_TOKEN), body).await;
        assert_eq!(r.status(), 400, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains("after the year 9999"), "{body}: {text}");
    }
    assert_eq!(
        get(&gw.url, &huge).await.status(),
        200,
        "nothing half-revoked"
    );
    let body = r#"{"jti":"huge","expires_at":253402300799}"#;
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), body).await.status(),
        204
    );
    assert_eq!(
        get(&gw.url, &huge).await.status(),
        401,
        "the latest time revokes"
    );

    let numeric = token(&key, &issuer, json!({"sub": 4711, "iat": now() - 60}));
    assert_eq!(get(&gw.url, &numeric).await.status(), 200);
    let body = json!({"issuer": "idp", "sub": "4711", "issued_before": now()}).to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &body).await.status(),
        204
    );
    assert_eq!(
        get(&gw.url, &numeric).await.status(),
        401,
        "a numeric sub is matched by its decimal text"
    );
}

#[tokio::test]
async fn the_admin_endpoint_wants_its_token_and_a_well_formed_body() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up, "", &admin_block("127.0.0.1:0"))).await;
    let good = json!({"jti": "x", "expires_at": now() + 60}).to_string();

    for bearer in [None, Some("wrong-token"), Some("")] {
        let r = revoke(&gw.admin, bearer, &good).await;
        assert_eq!(r.status(), 401, "{bearer:?}");
        assert_eq!(challenge(&r), r#"Bearer realm="authgate-admin""#);
    }
    let twice = reqwest::Client::new()
        .post(format!("{}/revocations", gw.admin))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 401, "two Authorization headers");

    let cases = [
        ("{", "body: EOF while parsing an object"),
        (
            r#"{"jti":"x"}"#,
            "expires_at: missing (the token's exp, UNIX seconds)",
        ),
        (
            r#"{"jti":"x","expires_at":"tomorrow"}"#,
            "body: invalid type: string \"tomorrow\"",
        ),
        (
            r#"{"jti":"x","expires_at":1,"why":"y"}"#,
            "body: unknown field `why`",
        ),
        (
            r#"{"issuer":"nope","sub":"a","issued_before":1}"#,
            "issuer: unknown issuer \"nope\"",
        ),
        (r#"{"issuer":"idp","issued_before":1}"#, "sub: missing"),
        (
            r#"{"issuer":"idp","sub":"a"}"#,
            "issued_before: missing (UNIX seconds)",
        ),
        (
            "{}",
            "body: give either {jti, expires_at} or {issuer, sub, issued_before}",
        ),
    ];
    for (body, expected) in cases {
        let r = revoke(&gw.admin, Some(ADMIN_TOKEN), body).await;
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(answer["error"], "invalid_request");
        let description = answer["error_description"].as_str().unwrap();
        assert!(description.starts_with(expected), "{body}: {description}");
    }
    let big = format!(r#"{{"jti":"{}","expires_at":1}}"#, "x".repeat(20_000));
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &big).await.status(),
        400
    );

    // The proxy port never serves the admin endpoint.
    let r = reqwest::Client::new()
        .post(format!("{}/revocations", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn without_an_admin_token_digest_revocations_answer_404() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up, "", "")).await;
    let body = json!({"jti": "x", "expires_at": now() + 60}).to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &body).await.status(),
        404
    );
}

/// Writes a config for one replica sharing `redis` and returns (file, proxy, admin).
fn replica(
    dir: &std::path::Path,
    name: &str,
    issuer: &TestIssuer,
    up: &Upstream,
    redis: &RedisServer,
    policy: &str,
) -> (std::path::PathBuf, String, u16) {
    let (proxy, admin) = (free_port(), free_port());
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:{proxy}\" }}\n{}",
        config(
            issuer,
            up,
            &format!(
                "revocation: {{ store: redis, redis_url: \"{}\", on_store_error: {policy} }}",
                redis.url()
            ),
            &admin_block(&format!("127.0.0.1:{admin}")),
        )
    );
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    (file, format!("http://127.0.0.1:{proxy}"), admin)
}

#[tokio::test]
async fn a_revocation_on_one_replica_reaches_another_within_a_second_and_survives_restarts() {
    let redis = RedisServer::start().await;
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let dir = temp_dir("replicas");
    let (file_a, url_a, admin_a) = replica(&dir, "a", &issuer, &up, &redis, "deny");
    let (file_b, url_b, admin_b) = replica(&dir, "b", &issuer, &up, &redis, "deny");
    let _a = run(&file_a, admin_a).await;
    let b = run(&file_b, admin_b).await;

    let stolen = token(&key, &issuer, json!({"jti": "shared-1"}));
    assert_eq!(get(&url_a, &stolen).await.status(), 200);
    assert_eq!(get(&url_b, &stolen).await.status(), 200, "cached on b");

    let body = json!({"jti": "shared-1", "expires_at": now() + 300}).to_string();
    let admin_url = format!("http://127.0.0.1:{admin_a}");
    assert_eq!(
        revoke(&admin_url, Some(ADMIN_TOKEN), &body).await.status(),
        204
    );
    let revoked_at = Instant::now();
    assert_eq!(get(&url_a, &stolen).await.status(), 401, "at once on a");
    eventually("replica b to refuse the token", async || {
        get(&url_b, &stolen).await.status() == 401
    })
    .await;
    let took = revoked_at.elapsed();
    eprintln!("cross-replica revocation took {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        redis
            .cli(&["GET", "authgate:revoked:jti:shared-1"])
            .trim()
            .parse::<i64>()
            .is_ok()
    );

    // A replica started afterwards loads what is stored.
    drop(b);
    let _b = run(&file_b, admin_b).await;
    assert_eq!(get(&url_b, &stolen).await.status(), 401, "after restart");
}

#[tokio::test]
async fn while_redis_is_down_deny_fails_closed_and_allow_serves_then_both_recover() {
    let mut redis = RedisServer::start().await;
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let with = |policy: &str| {
        config(
            &issuer,
            &up,
            &format!(
                "revocation: {{ store: redis, redis_url: \"{}\", on_store_error: {policy} }}",
                redis.url()
            ),
            &admin_block("127.0.0.1:0"),
        )
    };
    let deny = TestGateway::start(&with("deny")).await;
    let allow = TestGateway::start(&with("allow")).await;
    let revoked = token(&key, &issuer, json!({"jti": "before-outage"}));
    let fine = token(&key, &issuer, json!({"jti": "fine"}));
    let body = json!({"jti": "before-outage", "expires_at": now() + 300}).to_string();
    assert_eq!(
        revoke(&deny.admin, Some(ADMIN_TOKEN), &body).await.status(),
        204
    );
    eventually("allow replica to hear the revocation", async || {
        get(&allow.url, &revoked).await.status() == 401
    })
    .await;

    redis.stop().await;
    eventually("deny replica to fail closed", async || {
        get(&deny.url, &fine).await.status() == 503
    })
    .await;
    let r = get(&deny.url, &fine).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let seen = up.count();
    assert_eq!(get(&allow.url, &fine).await.status(), 200, "allow serves");
    assert_eq!(up.count(), seen + 1);
    assert_eq!(
        get(&allow.url, &revoked).await.status(),
        401,
        "what was mirrored still holds"
    );
    assert_eq!(get(&deny.url, &revoked).await.status(), 401);
    let ready = reqwest::get(format!("{}/readyz", deny.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .contains("\"component\":\"revocation\"")
    );
    let ready = reqwest::get(format!("{}/readyz", allow.admin))
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "allow keeps serving, so it stays ready"
    );
    let late = json!({"jti": "fine", "expires_at": now() + 300}).to_string();
    assert_eq!(
        revoke(&deny.admin, Some(ADMIN_TOKEN), &late).await.status(),
        503,
        "nothing is half-revoked while the store is down"
    );
    assert!(
        deny.metrics().await.contains(
            r#"authgate_auth_failures_total{route="api",reason="revocation_unavailable"}"#
        )
    );

    redis.restart().await;
    eventually("deny replica to recover", async || {
        get(&deny.url, &fine).await.status() == 200
    })
    .await;
    assert_eq!(
        get(&deny.url, &revoked).await.status(),
        401,
        "kept by redis's own restart"
    );
    assert_eq!(get(&allow.url, &revoked).await.status(), 401);
}

#[tokio::test]
async fn a_rediss_store_verifies_the_server_and_works() {
    let pki = crate::support::tls::TestPki::new();
    let redis = RedisServer::start_tls(&pki).await;
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let store = |ca: &str| {
        format!(
            "revocation: {{ store: redis, redis_url: \"rediss://127.0.0.1:{}\"{ca} }}",
            redis.port
        )
    };
    let ca = format!(", ca_file: \"{}\"", pki.dir.join("ca.crt").display());
    let gw = TestGateway::start(&config(
        &issuer,
        &up,
        &store(&ca),
        &admin_block("127.0.0.1:0"),
    ))
    .await;
    let stolen = token(&key, &issuer, json!({"jti": "over-tls"}));
    assert_eq!(get(&gw.url, &stolen).await.status(), 200);
    let body = json!({"jti": "over-tls", "expires_at": now() + 300}).to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &body).await.status(),
        204
    );
    assert_eq!(get(&gw.url, &stolen).await.status(), 401);
    assert!(
        redis
            .cli(&["GET", "authgate:revoked:jti:over-tls"])
            .trim()
            .parse::<i64>()
            .is_ok(),
        "written to the TLS server"
    );

    // Without our CA the server is not trusted: the store never syncs.
    let untrusted = TestGateway::start_unready(
        &config(&issuer, &up, &store(""), &admin_block("127.0.0.1:0")),
        std::path::Path::new("."),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = reqwest::get(format!("{}/readyz", untrusted.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "an unverified Redis is never trusted");
}

#[tokio::test]
async fn a_brief_subscription_drop_does_not_turn_requests_into_503s() {
    let redis = RedisServer::start().await;
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let store = format!(
        "revocation: {{ store: redis, redis_url: \"{}\", on_store_error: deny }}",
        redis.url()
    );
    let gw = TestGateway::start(&config(&issuer, &up, &store, &admin_block("127.0.0.1:0"))).await;
    let fine = token(&key, &issuer, json!({"jti": "fine"}));
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..5 {
        // Redis drops the subscriber (as it does when one PUBLISH
        // overflows its output buffer); the replica resubscribes.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        for _ in 0..20 {
            *statuses
                .entry(get(&gw.url, &fine).await.status().as_u16())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(statuses.keys().collect::<Vec<_>>(), [&200], "{statuses:?}");
}

#[tokio::test]
async fn revocation_ca_file_adds_to_the_system_roots_it_does_not_replace_them() {
    // The Redis server's CA is the "system" root (SSL_CERT_FILE); ca_file
    // names an unrelated CA. Replacing the roots would leave Redis untrusted.
    let pki = crate::support::tls::TestPki::new();
    let unrelated = crate::support::tls::TestPki::new();
    let redis = RedisServer::start_tls(&pki).await;
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let (proxy, admin) = (free_port(), free_port());
    let yaml = format!(
        "server: {{ listen: \"127.0.0.1:{proxy}\" }}\n{}",
        config(
            &issuer,
            &up,
            &format!(
                "revocation: {{ store: redis, redis_url: \"rediss://127.0.0.1:{}\", ca_file: \"{}\" }}",
                redis.port,
                unrelated.dir.join("ca.crt").display()
            ),
            &admin_block(&format!("127.0.0.1:{admin}")),
        )
    );
    let dir = temp_dir("redis-roots");
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, yaml).unwrap();
    let system_roots = pki.dir.join("ca.crt");
    // Ready means the revocation store synchronised over verified TLS.
    let _gateway = run_with_env(&file, admin, &[("SSL_CERT_FILE", &system_roots)]).await;
    let stolen = token(&key, &issuer, json!({"jti": "roots"}));
    let url = format!("http://127.0.0.1:{proxy}");
    assert_eq!(get(&url, &stolen).await.status(), 200);
}

#[tokio::test]
async fn a_later_subject_revocation_never_shortens_an_earlier_one_in_redis() {
    let redis = RedisServer::start().await;
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let store = format!(
        "revocation: {{ store: redis, redis_url: \"{}\" }}",
        redis.url()
    );
    let gw = TestGateway::start(&config(&issuer, &up, &store, &admin_block("127.0.0.1:0"))).await;
    let t = now();
    // Kept until issued_before + max_lifetime (1h) + leeway.
    let first = json!({"issuer": "idp", "sub": "alice", "issued_before": t}).to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &first).await.status(),
        204
    );
    // A later cut-off that would be forgotten in a minute.
    let later =
        json!({"issuer": "idp", "sub": "alice", "issued_before": t + 1, "expires_at": t + 60})
            .to_string();
    assert_eq!(
        revoke(&gw.admin, Some(ADMIN_TOKEN), &later).await.status(),
        204
    );
    let ttl: i64 = redis
        .cli(&["TTL", r#"authgate:revoked:sub:["idp","alice"]"#])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 3000, "the earlier, longer keep must stay: TTL {ttl}");
    let value: f64 = redis
        .cli(&["GET", r#"authgate:revoked:sub:["idp","alice"]"#])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(value, (t + 1) as f64, "the later cut-off is kept");
}
