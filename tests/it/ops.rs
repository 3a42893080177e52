//! Operations through the real binary: logs that never hold a token or a
//! secret, access-log fields, metric names, reload on file change.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::binary::{BIN, free_port, run, signal};
use crate::support::issuer::{b64, hmac};
use crate::support::tls::TestPki;
use crate::support::{Signer, TestIssuer, Upstream, eventually, now, raw, sha256_hex, temp_dir};

const HMAC_SECRET: &str = "hmac-secret-value-0123456789-abcdefghij";
const ADMIN_TOKEN: &str = "admin-token-value-9f8e7d6c5b4a";

#[tokio::test]
async fn no_log_line_at_trace_level_holds_a_token_or_a_secret() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("redaction");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
server: {{ listen: "127.0.0.1:{port}" }}
admin: {{ listen: "127.0.0.1:{admin}", token_sha256: "{digest}" }}
issuers:
  idp: {{ issuer: "{iss}", jwks_uri: "{iss}/jwks.json", algorithms: [ES256], audiences: [api] }}
  internal: {{ issuer: "internal", hmac_secret_env: TEST_HMAC, algorithms: [HS256], audiences: [api] }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [idp, internal], scopes_all: [read], token_from: [header, "cookie:session"], allowed_origins: ["https://app.example"] }}
  - name: keep
    match: {{ path_prefix: /keep }}
    upstream: "{up}"
    auth: {{ issuers: [idp] }}
    forward: {{ authorization: keep }}
"#,
            digest = sha256_hex(ADMIN_TOKEN),
            iss = issuer.url,
            up = up.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--log-level", "trace", "--config"])
        .arg(&file)
        .env("TEST_HMAC", HMAC_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    eventually("ready", async || {
        reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    let valid = key.token("ES256", json!({}), &issuer.claims());
    let mut expired_claims = issuer.claims();
    expired_claims["exp"] = (now() - 3600).into();
    let expired = key.token("ES256", json!({}), &expired_claims);
    let forged = {
        let (input, _) = valid.rsplit_once('.').unwrap();
        format!("{input}.{}", b64([9u8; 64]))
    };
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none"}"#),
        valid.split('.').nth(1).unwrap()
    );
    let hs = {
        let header = b64(r#"{"alg":"HS256"}"#);
        let claims = json!({"iss": "internal", "aud": "api", "scope": "read", "sub": "svc", "exp": now() + 60});
        let input = format!("{header}.{}", b64(claims.to_string()));
        format!(
            "{input}.{}",
            b64(hmac("HS256", HMAC_SECRET.as_bytes(), input.as_bytes()))
        )
    };
    let tokens = [&valid, &expired, &forged, &none, &hs];
    let base = format!("http://127.0.0.1:{port}");
    let h1 = reqwest::Client::new();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for client in [&h1, &h2] {
        for t in tokens {
            client
                .get(format!("{base}/api/x?q=1"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            client
                .get(format!("{base}/keep/x"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
        }
        client
            .get(format!("{base}/api/x"))
            .header("cookie", format!("session={valid}"))
            .send()
            .await
            .unwrap();
        client
            .get(format!("{base}/api/x?access_token={valid}"))
            .send()
            .await
            .unwrap();
        client
            .get(format!("{base}/api/x"))
            .basic_auth("user", Some("basic-password-secret"))
            .send()
            .await
            .unwrap();
        client
            .get(format!("{base}/api/x"))
            .header("proxy-authorization", "Bearer proxy-secret-value")
            .header("set-cookie", "sid=set-cookie-secret")
            .send()
            .await
            .unwrap();
    }
    raw::get(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "/api/x",
        &[
            ("Authorization", &format!("Bearer {valid}")),
            ("Authorization", &format!("Bearer {forged}")),
        ],
    )
    .await;
    for t in [ADMIN_TOKEN, "wrong-admin-token"] {
        h1.post(format!("http://127.0.0.1:{admin}/revocations"))
            .bearer_auth(t)
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    assert!(up.count() >= 4, "valid tokens were forwarded");

    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let logs = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    assert!(logs.lines().count() > 50, "trace level must actually log");

    let mut secrets: Vec<String> = vec![
        HMAC_SECRET.into(),
        ADMIN_TOKEN.into(),
        "basic-password-secret".into(),
        b64("user:basic-password-secret"),
        "proxy-secret-value".into(),
        "set-cookie-secret".into(),
    ];
    for t in tokens {
        let parts: Vec<&str> = t.split('.').collect();
        secrets.push(parts[1].to_owned());
        if parts[2].len() >= 16 {
            secrets.push(parts[2].to_owned());
        }
    }
    for secret in &secrets {
        let hits: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            hits.is_empty(),
            "a log line holds a secret: {:?}",
            hits.first()
        );
    }

    // One access-log line per proxied request, with the contract's fields.
    let access: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "authgate::access")
        .collect();
    assert_eq!(access.len(), 2 * (2 * tokens.len() + 4) + 1);
    let fp = &sha256_hex(&valid)[..12];
    let ok = access
        .iter()
        .find(|v| v["status"] == 200 && v["token_fp"] == fp)
        .unwrap();
    assert_eq!(ok["route"], "api");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/api/x", "the query string is never logged");
    assert_eq!(ok["issuer"], "idp");
    assert_eq!(ok["subject"], "alice");
    assert!(ok["timestamp"].is_string() && ok["duration_ms"].is_number());
    let expired_line = access.iter().find(|v| v["reason"] == "expired").unwrap();
    assert_eq!(expired_line["status"], 401);
    assert_eq!(expired_line["token_fp"], &sha256_hex(&expired)[..12]);
}

#[tokio::test]
async fn metrics_expose_the_contract_names() {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = crate::support::TestGateway::start(&format!(
        "issuers:\n  idp: {{ issuer: \"{iss}\", jwks_uri: \"{iss}/jwks.json\", algorithms: [ES256], audiences: [api] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: / }}\n    upstream: \"{up}\"\n    auth: {{ issuers: [idp] }}\n",
        iss = issuer.url,
        up = up.url()
    ))
    .await;
    let client = reqwest::Client::new();
    client
        .get(format!("{}/x", gw.url))
        .bearer_auth(key.token("ES256", json!({}), &issuer.claims()))
        .send()
        .await
        .unwrap();
    client.get(format!("{}/x", gw.url)).send().await.unwrap();
    let m = gw.metrics().await;
    for expected in [
        r#"authgate_requests_total{route="api",status="200"} 1"#,
        r#"authgate_requests_total{route="api",status="401"} 1"#,
        r#"authgate_auth_failures_total{route="api",reason="missing_token"} 1"#,
        "authgate_request_duration_seconds_count 2",
        "authgate_auth_duration_seconds_count 2",
        r#"authgate_jwks_refresh_total{issuer="idp",result="success"} 1"#,
        r#"authgate_jwks_keys{issuer="idp"} 1"#,
        r#"authgate_jwks_key_age_seconds{issuer="idp"}"#,
        r#"authgate_verified_cache_total{result="miss"} 1"#,
    ] {
        assert!(m.contains(expected), "missing {expected:?} in\n{m}");
    }
}

#[tokio::test]
async fn a_changed_config_file_is_reloaded_without_a_signal() {
    let up = Upstream::spawn().await;
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("watch");
    let file = dir.join("gateway.yaml");
    let write = |path: &str| {
        std::fs::write(
            &file,
            format!("server: {{ listen: \"127.0.0.1:{port}\" }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nroutes:\n  - name: r\n    match: {{ path_prefix: {path} }}\n    upstream: \"{}\"\n    auth: public\n", up.url()),
        )
        .unwrap()
    };
    write("/first");
    let mut child = run(&file, admin).await;
    let get = async |path: &str| {
        reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get("/first").await, 200);
    write("/second-route");
    eventually("the edited file to be served", async || {
        get("/second-route").await == 200
    })
    .await;
    std::fs::write(&file, "routes: nonsense\n").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get("/second-route").await,
        200,
        "an invalid edit leaves the running config"
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections() {
    let (first, second) = (TestPki::new(), TestPki::new());
    let up = Upstream::spawn().await;
    let (port, admin) = (free_port(), free_port());
    let file = first.dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!("server:\n  listen: \"127.0.0.1:{port}\"\n  tls: {{ cert_file: server.crt, key_file: server.key }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n", up.url()),
    )
    .unwrap();
    let mut child = run(&file, admin).await;
    let url = format!("https://localhost:{port}/x");
    assert_eq!(
        first.client(false).get(&url).send().await.unwrap().status(),
        200
    );
    assert!(second.client(false).get(&url).send().await.is_err());
    for name in ["server.crt", "server.key"] {
        std::fs::copy(second.dir.join(name), first.dir.join(name)).unwrap();
    }
    eventually("the new certificate", async || {
        second.client(false).get(&url).send().await.is_ok()
    })
    .await;
    assert!(first.client(false).get(&url).send().await.is_err());
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
