//! Phantom tokens (CONTRACT §8.6): an opaque token at the edge, swapped for
//! the authorization server's own signed JWT upstream. A real loopback
//! RFC 9701 introspection endpoint signs its answers with the issuer's key
//! (published by a real JWKS server); unsigned, wrongly signed and
//! foreign answers are 503, never a pass; a key rotation at the
//! authorization server is followed.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::support::issuer::b64;
use crate::support::{Signer, TestGateway, TestIssuer, Upstream};

/// How the endpoint answers.
#[derive(Clone)]
enum Answer {
    /// Signed by this key (kid in the header).
    Signed(Arc<Signer>),
    /// The same claims, `alg: none`, no signature.
    Unsigned,
    /// Plain RFC 7662 JSON.
    Json,
}

/// A loopback introspection endpoint for `iss`: the token `opaque-1` is
/// active for alice; anything else inactive. Records the `Accept` header.
async fn endpoint(
    iss: String,
    answer: Arc<Mutex<Answer>>,
    accepts: Arc<Mutex<Vec<String>>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (iss, answer, accepts) = (iss.clone(), answer.clone(), accepts.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (iss, answer, accepts) = (iss.clone(), answer.clone(), accepts.clone());
                    async move {
                        let accept = req
                            .headers()
                            .get("accept")
                            .map(|v| v.to_str().unwrap().to_owned());
                        accepts.lock().unwrap().push(accept.unwrap_or_default());
                        let body = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        let body = String::from_utf8_lossy(&body).replace("%2D", "-");
                        let active =
                            body.contains("token=opaque-1&") || body.ends_with("token=opaque-1");
                        let now = crate::support::now();
                        let inner = match active {
                            true => {
                                json!({"active": true, "sub": "alice", "scope": "read", "iss": iss,
                                           "aud": "api", "exp": now + 300, "iat": now})
                            }
                            false => json!({"active": false}),
                        };
                        let outer = json!({"iss": iss, "aud": "gateway", "iat": now, "token_introspection": inner});
                        let mode = answer.lock().unwrap().clone();
                        let (ct, text) = match mode {
                            Answer::Json => ("application/json", inner.to_string()),
                            Answer::Unsigned => (
                                "application/token-introspection+jwt",
                                format!(
                                    "{}.{}.",
                                    b64(r#"{"alg":"none","typ":"token-introspection+jwt"}"#),
                                    b64(outer.to_string())
                                ),
                            ),
                            Answer::Signed(signer) => (
                                "application/token-introspection+jwt",
                                signer.token(
                                    "ES256",
                                    json!({"typ": "token-introspection+jwt"}),
                                    &outer,
                                ),
                            ),
                        };
                        let mut r = http::Response::new(Full::new(Bytes::from(text)));
                        r.headers_mut().insert("content-type", ct.parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    url
}

#[tokio::test]
async fn an_opaque_token_becomes_the_authorization_servers_own_jwt_upstream() {
    let key1 = Arc::new(Signer::es256("as-1"));
    let issuer = TestIssuer::spawn(&[&key1]).await;
    let answer = Arc::new(Mutex::new(Answer::Signed(key1.clone())));
    let accepts = Arc::new(Mutex::new(Vec::new()));
    let introspect = endpoint(issuer.url.clone(), answer.clone(), accepts.clone()).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        r#"
issuers:
  as:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
    jwks_cache: {{ min_refresh_interval: 1s }}
    introspection:
      endpoint: "{introspect}"
      client_id: gateway
      client_secret: s3cret
      response: jwt
      cache_ttl: 1s
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "{up}"
    auth: {{ issuers: [as], scopes_all: [read] }}
    forward: {{ authorization: jwt }}
"#,
        iss = issuer.url,
        up = up.url()
    ))
    .await;
    let client = reqwest::Client::new();
    let get = async |token: &str| {
        client
            .get(format!("{}/api/x", gw.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    let first = client
        .get(format!("{}/api/x", gw.url))
        .bearer_auth("opaque-1")
        .send()
        .await
        .unwrap();
    let status = first.status();
    assert_eq!(status, 200, "{:?}", first.text().await);
    assert_eq!(
        accepts.lock().unwrap()[0],
        "application/token-introspection+jwt"
    );
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    // The upstream holds the authorization server's JWT, which verifies
    // with the published key and carries the introspection claims.
    let auth = seen.headers["authorization"].to_str().unwrap().to_owned();
    let jwt = auth.strip_prefix("Bearer ").unwrap();
    assert_ne!(jwt, "opaque-1");
    let parts: Vec<&str> = jwt.split('.').collect();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["token_introspection"]["sub"], "alice");
    let input = format!("{}.{}", parts[0], parts[1]);
    let sig = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
        .unwrap();
    let point = {
        let jwk = key1.jwk();
        let x = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwk["x"].as_str().unwrap(),
        )
        .unwrap();
        let y = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwk["y"].as_str().unwrap(),
        )
        .unwrap();
        [vec![4u8], x, y].concat()
    };
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point,
    );
    public
        .verify(input.as_bytes(), &sig)
        .expect("the upstream can verify it");
    assert_eq!(get("opaque-2").await, 401, "inactive");

    // Answers not signed by the issuer's keys are never a pass.
    let stranger = Arc::new(Signer::es256("as-1"));
    for (what, mode) in [
        ("unsigned", Answer::Unsigned),
        ("plain JSON", Answer::Json),
        ("another key under the same kid", Answer::Signed(stranger)),
    ] {
        *answer.lock().unwrap() = mode;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(get("opaque-1").await, 503, "{what}");
    }

    // Key rotation at the authorization server: a new key, published.
    let key2 = Arc::new(Signer::es256("as-2"));
    issuer.publish(&[&key1, &key2]);
    *answer.lock().unwrap() = Answer::Signed(key2);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get("opaque-1").await, 200, "signed by the rotated-in key");
}

#[test]
fn authorization_jwt_needs_an_issuer_with_signed_introspection() {
    let yaml = r#"
issuers:
  idp: { issuer: "https://idp.example", jwks_uri: "https://idp.example/jwks", algorithms: [ES256], audiences: [api] }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: "http://127.0.0.1:1"
    auth: { issuers: [idp] }
    forward: { authorization: jwt }
"#;
    let problems = authgate::config::parse(yaml, std::path::Path::new("."), &|_| None)
        .err()
        .unwrap();
    assert!(
        format!("{problems:?}").contains("routes[0].forward.authorization"),
        "{problems:?}"
    );
}
