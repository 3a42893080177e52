//! Strict at the edge (CONTRACT §8.1), each rule as the attack an outside
//! review tried, through the real server: what the client gets back and
//! what the upstream saw (or that it saw nothing).

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Signer, TestGateway, TestIssuer, Upstream, raw};

/// A protected route mapping `X-User: sub`, a tenant template route, a
/// cookie route, a host-bound admin route, and a public catch-all; all on
/// one upstream.
fn config(issuer: &TestIssuer, up: &Upstream) -> String {
    format!(
        r#"
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
routes:
  - name: users
    match: {{ path_prefix: /users }}
    upstream: "{up}"
    auth: {{ issuers: [idp] }}
    forward: {{ headers: {{ X-User: sub, X-Auth-Scopes: scope }} }}
  - name: tenant
    match: {{ path_template: "/tenants/{{tenant}}/orders" }}
    upstream: "{up}"
    auth: {{ issuers: [idp], claims: {{ tenant: "{{path.tenant}}" }} }}
  - name: scoped
    match: {{ path_prefix: /scoped }}
    upstream: "{up}"
    auth: {{ issuers: [idp], scopes_all: [admin] }}
  - name: browser
    match: {{ path_prefix: /app }}
    upstream: "{up}"
    auth: {{ issuers: [idp], token_from: ["cookie:session"], allowed_origins: ["https://app.example"] }}
  - name: admin
    match: {{ host: admin.example, path_prefix: / }}
    upstream: "{up}"
    auth: {{ issuers: [idp] }}
  - name: public
    match: {{ path_prefix: / }}
    upstream: "{up}"
    auth: public
"#,
        iss = issuer.url,
        up = up.url()
    )
}

struct Setup {
    key: Signer,
    issuer: TestIssuer,
    up: Upstream,
    gw: TestGateway,
}

async fn setup() -> Setup {
    let key = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&key]).await;
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&config(&issuer, &up)).await;
    Setup {
        key,
        issuer,
        up,
        gw,
    }
}

impl Setup {
    fn token(&self, extra: serde_json::Value) -> String {
        let mut claims = self.issuer.claims();
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.key.token("ES256", json!({}), &claims)
    }

    /// `GET path` with `Authorization: Bearer token`.
    async fn with_token(&self, path: &str, token: &str) -> raw::RawResponse {
        let bearer = format!("Bearer {token}");
        raw::get(
            self.gw.running.proxy_addr,
            path,
            &[("Authorization", &bearer)],
        )
        .await
    }

    async fn raw(&self, request: &str) -> raw::RawResponse {
        raw::send(self.gw.running.proxy_addr, request.as_bytes()).await
    }
}

/// Header names as an upstream that reads `_` as `-` (CGI, older WSGI)
/// would see them.
fn cgi_names(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().replace('_', "-"))
        .collect()
}

#[tokio::test]
async fn identity_headers_in_any_spelling_never_reach_the_upstream_of_a_public_route() {
    let s = setup().await;
    let r = raw::get(
        s.gw.running.proxy_addr,
        "/public/page",
        &[
            ("X-User", "admin"),
            ("X_User", "admin"),
            ("X_Auth_Subject", "admin"),
            ("x-auth_scopes", "admin"),
            ("X-Auth-Issuer", "evil"),
            ("X-Userx", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &s.up.seen()[0];
    let names = cgi_names(&seen.headers);
    for spoofed in ["x-user", "x-auth-subject", "x-auth-scopes", "x-auth-issuer"] {
        assert!(
            !names.iter().any(|n| n == spoofed),
            "{spoofed} reached the upstream: {names:?}"
        );
    }
    assert_eq!(seen.headers["x-userx"], "kept", "other headers pass");

    // On the protected route, only the gateway's own values arrive.
    let token = s.token(json!({"sub": "alice"}));
    let r = raw::get(
        s.gw.running.proxy_addr,
        "/users/me",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X_User", "admin"),
            ("X_Auth_Subject", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &s.up.seen()[1];
    assert_eq!(seen.headers.get_all("x-user").iter().count(), 1);
    assert_eq!(seen.headers["x-user"], "alice");
    assert!(!cgi_names(&seen.headers).contains(&"x-auth-subject".to_owned()));
}

#[tokio::test]
async fn routing_override_headers_never_reach_the_upstream() {
    let s = setup().await;
    let overrides = [
        ("Forwarded", "for=10.0.0.1;host=admin.example;proto=https"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Port", "443"),
        ("X-Real-IP", "10.0.0.1"),
        ("Client-Cert", ":MIIB:"),
        ("Client-Cert-Chain", ":MIIB:"),
        ("X-Forwarded-Client-Cert", "Hash=abc;Subject=\"CN=admin\""),
    ];
    let r = raw::get(s.gw.running.proxy_addr, "/public/x", &overrides).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &s.up.seen()[0].headers;
    for (name, _) in overrides {
        assert!(seen.get(name).is_none(), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn semicolons_in_any_spelling_are_400_and_reach_nothing() {
    let s = setup().await;
    for path in [
        "/public;jsessionid=1",
        "/users;/me",
        "/public/..;/users",
        "/users%3B/me",
        "/public/%3b",
    ] {
        let r = raw::get(s.gw.running.proxy_addr, path, &[]).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(r.body.contains("invalid_request"), "{path}: {r:?}");
    }
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn a_trailing_slash_does_not_skip_the_tenant_check() {
    let s = setup().await;
    for path in ["/tenants/acme/orders", "/tenants/acme/orders/"] {
        let r = raw::get(s.gw.running.proxy_addr, path, &[]).await;
        assert_eq!(r.status, 401, "{path} must be the tenant route: {r:?}");
    }
    let other = s.token(json!({"tenant": "globex"}));
    let r = s.with_token("/tenants/acme/orders/", &other).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(s.up.count(), 0);
    let own = s.token(json!({"tenant": "acme"}));
    let r = s.with_token("/tenants/acme/orders/", &own).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.up.seen()[0].uri, "/tenants/acme/orders/");
}

#[tokio::test]
async fn hosts_are_validated_and_the_routed_host_is_the_forwarded_one() {
    let s = setup().await;
    for (what, request) in [
        (
            "userinfo",
            "GET /x HTTP/1.1\r\nHost: admin.example:1@public.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "comma",
            "GET /x HTTP/1.1\r\nHost: a,b\r\nConnection: close\r\n\r\n",
        ),
        (
            "two hosts",
            "GET /x HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "empty",
            "GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        ),
        ("missing", "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"),
        (
            "absolute form naming another host",
            "GET http://admin.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "bad port",
            "GET /x HTTP/1.1\r\nHost: public.example:99999\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let r = s.raw(request).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
    }
    assert_eq!(s.up.count(), 0, "nothing refused was forwarded");

    let r = s
        .raw("GET /x HTTP/1.1\r\nHost: Public.Example.:8080\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        s.up.seen()[0].headers["x-forwarded-host"],
        "public.example:8080"
    );
    let r = s
        .raw("GET /x HTTP/1.1\r\nHost: ADMIN.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 401, "routed by the normalised host: {r:?}");
    assert_eq!(s.up.count(), 1);
}

#[tokio::test]
async fn an_http2_authority_that_disagrees_with_host_is_400() {
    let s = setup().await;
    let tcp = tokio::net::TcpStream::connect(s.gw.running.proxy_addr)
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut status = async |authority: &str, host: &str| {
        let req = http::Request::builder()
            .uri(format!("http://{authority}/x"))
            .header("host", host)
            .body(())
            .unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        response.await.unwrap().status().as_u16()
    };
    assert_eq!(status("public.example", "admin.example").await, 400);
    assert_eq!(status("admin.example", "public.example").await, 400);
    assert_eq!(s.up.count(), 0);
    assert_eq!(status("public.example", "public.example").await, 200);
    assert_eq!(s.up.seen()[0].headers["x-forwarded-host"], "public.example");
}

#[tokio::test]
async fn only_websocket_upgrades_are_forwarded() {
    let s = setup().await;
    for protocol in ["h2c", "tls/1.0", "websocket, h2c"] {
        let r = s
            .raw(&format!(
                "GET /public/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: {protocol}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
            ))
            .await;
        assert_eq!(r.status, 400, "{protocol}: {r:?}");
    }
    assert_eq!(s.up.count(), 0);
    let mut tcp = tokio::net::TcpStream::connect(s.gw.running.proxy_addr)
        .await
        .unwrap();
    raw::upgrade_and_echo(&mut tcp, Duration::ZERO).await;
}

#[tokio::test]
async fn a_tab_after_bearer_is_refused() {
    let s = setup().await;
    let token = s.token(json!({}));
    for value in [format!("Bearer\t{token}"), format!("Bearer \t{token}")] {
        let r = raw::get(
            s.gw.running.proxy_addr,
            "/users/me",
            &[("Authorization", &value)],
        )
        .await;
        assert_eq!(r.status, 400, "{value:?}: {r:?}");
    }
    assert_eq!(s.up.count(), 0);
    let r = raw::get(
        s.gw.running.proxy_addr,
        "/users/me",
        &[("Authorization", &format!("bearer   {token}"))],
    )
    .await;
    assert_eq!(r.status, 200, "spaces are fine: {r:?}");
}

#[tokio::test]
async fn policy_and_identity_headers_read_a_scope_array_the_same_way() {
    let s = setup().await;
    let array = s.token(json!({"scope": ["read", "admin"]}));
    let r = s.with_token("/scoped/x", &array).await;
    assert_eq!(r.status, 403, "a scope array grants nothing: {r:?}");
    let r = s.with_token("/users/me", &array).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        s.up.seen()[0].headers.get("x-auth-scopes").is_none(),
        "the upstream must not see scopes the policy did not grant: {:?}",
        s.up.seen()[0].headers
    );
    // A scope holding a tab is not a scope token: not `admin` to anyone.
    let tabbed = s.token(json!({"scope": "read\tadmin"}));
    assert_eq!(s.with_token("/users/me", &tabbed).await.status, 200);
    assert!(s.up.seen()[1].headers.get("x-auth-scopes").is_none());
    // The plain string form works for both.
    let plain = s.token(json!({"scope": "read admin"}));
    assert_eq!(s.with_token("/scoped/x", &plain).await.status, 200);
    assert_eq!(s.with_token("/users/me", &plain).await.status, 200);
    assert_eq!(s.up.seen()[3].headers["x-auth-scopes"], "read admin");
}

#[tokio::test]
async fn a_cookie_token_is_removed_from_the_cookie_header_upstream() {
    let s = setup().await;
    let token = s.token(json!({}));
    let r = raw::get(
        s.gw.running.proxy_addr,
        "/app/home",
        &[("Cookie", &format!("theme=dark; session={token}; lang=en"))],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &s.up.seen()[0].headers;
    let cookies: Vec<_> = seen.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["theme=dark; lang=en"]);
    assert!(!format!("{seen:?}").contains(&token), "the token is gone");
}

#[tokio::test]
async fn a_kid_over_256_bytes_is_malformed() {
    let s = setup().await;
    let long = "k".repeat(257);
    let token = s
        .key
        .token("ES256", json!({"kid": long}), &s.issuer.claims());
    let r = s.with_token("/users/me", &token).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.body.contains("kid is longer than 256 bytes"), "{r:?}");
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(r#"reason="malformed""#),
        "counted as malformed: {metrics}"
    );
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_not_an_upstream_failure() {
    let s = setup().await;
    let head = "POST /public/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(70_000));
    for (what, body) in [
        (
            "bad chunk size",
            "5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n".to_owned(),
        ),
        ("bare LF", "5\nhello\n0\n\n".to_owned()),
        ("oversized chunk extension", long_extension),
    ] {
        let r = s.raw(&format!("{head}{body}")).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(r.body.contains("invalid_request"), "{what}: {r:?}");
    }
    let metrics = s.gw.metrics().await;
    assert!(
        !metrics.contains(r#"status="502""#),
        "no client error counted as an upstream failure: {metrics}"
    );
}

/// An upstream that answers every request at once and reads its body
/// afterwards, slowly, as upstreams that answer early do.
async fn early_answering_upstream() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut body = req.into_body();
                        tokio::spawn(async move { while body.frame().await.is_some() {} });
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_trickling_its_body_never_holds_up_the_next_request() {
    let up = early_answering_upstream().await;
    let gw = TestGateway::start(&format!(
        "server: {{ listen: \"127.0.0.1:0\", workers: 1 }}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"http://{up}\"\n    auth: public\n    forward: {{ timeout: 1s }}\n"
    ))
    .await;
    // The slow client: its answer comes back at once, its body never ends.
    let mut slow = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = slow.read(&mut answer).await.unwrap();
    let head = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The next client must get a connection of its own, not queue behind
    // the unfinished body until its timeout.
    for _ in 0..3 {
        let r = raw::get(gw.running.proxy_addr, "/next", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "ok");
    }
    drop(slow);
}

#[tokio::test]
async fn the_admin_listener_closes_connections_that_dawdle_over_their_head() {
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        "server: {{ listen: \"127.0.0.1:0\", header_read_timeout: 500ms }}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    ))
    .await;
    for opening in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost: a\r\n"] {
        let mut tcp = tokio::net::TcpStream::connect(gw.running.admin_addr)
            .await
            .unwrap();
        tcp.write_all(opening).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "an admin connection sending {opening:?} must be closed after header_read_timeout"
        );
    }
    let r = reqwest::get(format!("{}/healthz", gw.admin)).await.unwrap();
    assert_eq!(r.status(), 200, "prompt clients are served");
}

#[tokio::test]
async fn a_request_its_client_abandons_is_still_logged_and_counted_as_499() {
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        "routes:\n  - name: slow\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    ))
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.running.proxy_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /x?delay_ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    crate::support::eventually("the upstream to get the request", async || up.count() == 1).await;
    drop(tcp);
    crate::support::eventually("the abandoned request to be counted", async || {
        gw.metrics()
            .await
            .contains(r#"authgate_requests_total{route="slow",status="499"} 1"#)
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_serves_at_most_64_connections_at_once() {
    let up = Upstream::spawn().await;
    let gw = TestGateway::start(&format!(
        "server: {{ listen: \"127.0.0.1:0\", header_read_timeout: 1500ms }}\nroutes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: \"{}\"\n    auth: public\n",
        up.url()
    ))
    .await;
    // 64 connections that say nothing hold every place...
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(
            tokio::net::TcpStream::connect(gw.running.admin_addr)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so the next one waits in the backlog until they are cut.
    let started = std::time::Instant::now();
    let r = reqwest::get(format!("{}/healthz", gw.admin)).await.unwrap();
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "served after {waited:?}: the 65th connection was not held back"
    );
    drop(idle);
}
