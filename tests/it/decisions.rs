//! Decision mode (CONTRACT §8.3): a real nginx `auth_request` in front of
//! the decision listener (the recipe in `deploy/decisions/nginx.conf`, as
//! written), Traefik- and Envoy-HTTP-style requests straight to it, and
//! Envoy's gRPC `Authorization/Check` through a tonic client.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderAppendAction, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

use crate::support::binary::free_port;
use crate::support::nginx::Nginx;
use crate::support::{Signer, TestGateway, TestIssuer, Upstream, raw};

struct Setup {
    gw: TestGateway,
    issuer: TestIssuer,
    signer: Signer,
    /// `http://127.0.0.1:PORT` of the decision listener.
    decisions: String,
}

impl Setup {
    /// A token for alice with `scope` and, when given, `tenant`.
    fn token(&self, scope: &str, tenant: Option<&str>) -> String {
        let mut claims = self.issuer.claims();
        claims["scope"] = json!(scope);
        if let Some(t) = tenant {
            claims["tenant"] = json!(t);
        }
        self.signer.token("ES256", json!({}), &claims)
    }
}

fn config(issuer: &TestIssuer, trusted: &str) -> String {
    format!(
        r#"
decisions:
  listen: "127.0.0.1:0"
  trusted_proxies: [{trusted}]
issuers:
  idp:
    issuer: "{iss}"
    jwks_uri: "{iss}/jwks.json"
    algorithms: [ES256]
    audiences: [api]
routes:
  - name: orders
    match: {{ path_prefix: /orders }}
    auth: {{ issuers: [idp], scopes_all: [read] }}
    forward: {{ headers: {{ x-auth-subject: sub, x-auth-tenant: tenant }} }}
  - name: admin
    match: {{ path_prefix: /admin }}
    auth: {{ issuers: [idp], scopes_all: [admin] }}
  - name: tenants
    match: {{ path_template: "/tenants/{{tenant}}/orders" }}
    auth: {{ issuers: [idp], claims: {{ tenant: "{{path.tenant}}" }} }}
  - name: health
    match: {{ path: /health }}
    auth: public
"#,
        iss = issuer.url
    )
}

async fn setup_trusting(trusted: &str) -> Setup {
    let signer = Signer::es256("k1");
    let issuer = TestIssuer::spawn(&[&signer]).await;
    let gw = TestGateway::start(&config(&issuer, trusted)).await;
    let decisions = format!("http://{}", gw.running.decisions_addr.unwrap());
    Setup {
        gw,
        issuer,
        signer,
        decisions,
    }
}

async fn setup() -> Setup {
    setup_trusting("\"127.0.0.1/32\"").await
}

/// nginx running `deploy/decisions/nginx.conf` as written, in front of
/// `s`'s decision listener and `up`.
async fn nginx(s: &Setup, up: &Upstream) -> Nginx {
    let port = free_port();
    let recipe = std::fs::read_to_string("deploy/decisions/nginx.conf").unwrap();
    let servers = recipe
        .replace("LISTEN", &format!("127.0.0.1:{port}"))
        .replace("AUTHGATE", &s.decisions["http://".len()..])
        .replace("APP", &up.addr.to_string());
    Nginx::start(&servers, port).await
}

#[tokio::test]
async fn nginx_auth_request_allows_with_identity_overwritten_and_refuses_as_the_proxy_would() {
    let s = setup().await;
    let up = Upstream::spawn().await;
    let nginx = nginx(&s, &up).await;
    let client = reqwest::Client::new();
    let get = async |path: &str, headers: &[(&str, &str)]| {
        let mut req = client.get(format!("{}{path}", nginx.url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    };

    // Allowed: the identity headers are the decision's, never the client's.
    let token = format!("Bearer {}", s.token("read", Some("acme")));
    let r = get(
        "/orders/1",
        &[
            ("authorization", &token),
            ("x-auth-subject", "mallory"),
            ("x-auth-tenant", "evil"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.uri, "/orders/1");
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert_eq!(seen.headers["x-auth-tenant"], "acme");
    assert!(!seen.headers.contains_key("authorization"));
    // A header the decision did not set is removed, not left as the client's.
    let token = format!("Bearer {}", s.token("read", None));
    let r = get(
        "/orders/2",
        &[("authorization", &token), ("x-auth-tenant", "evil")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert!(
        !seen.headers.contains_key("x-auth-tenant"),
        "{:?}",
        seen.headers
    );

    let before = up.count();
    // 401 with the challenge reaching the client.
    let r = get("/orders/1", &[]).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // A client's own X-Forwarded-Uri is not what authgate judges: the path
    // nginx calls chose the X-Original style.
    let r = get(
        "/orders/1",
        &[
            ("x-forwarded-uri", "/health"),
            ("x-forwarded-method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    // 403: scope, tenant, no route.
    let read = format!("Bearer {}", s.token("read", Some("acme")));
    assert_eq!(
        get("/admin/users", &[("authorization", &read)])
            .await
            .status(),
        403
    );
    assert_eq!(
        get("/tenants/globex/orders", &[("authorization", &read)])
            .await
            .status(),
        403
    );
    assert_eq!(
        get("/nowhere", &[("authorization", &read)]).await.status(),
        403
    );
    // Spellings the proxy refuses never reach the upstream (nginx turns the
    // decision's 400 into a 500).
    for path in [
        "/health/..%2Forders/1",
        "/health;x",
        "/health/%2e%2e/orders/1",
    ] {
        let r = raw::get(
            format!("127.0.0.1:{}", nginx.port).parse().unwrap(),
            path,
            &[("Connection", "close")],
        )
        .await;
        assert_ne!(r.status, 200, "{path}");
    }
    assert_eq!(up.count(), before, "a refused request reached the upstream");
    // The public route passes without a token.
    assert_eq!(get("/health", &[]).await.status(), 200);

    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(r#"authgate_decisions_total{route="orders",status="200"} 2"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"authgate_requests_total{route="orders""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn forward_auth_and_envoy_http_styles_straight_to_the_listener() {
    let s = setup().await;
    let client = reqwest::Client::new();
    let token = format!("Bearer {}", s.token("read", Some("acme")));

    // Traefik / Caddy: X-Forwarded-*, all four required.
    let forwarded = |headers: &[(&str, &str)]| {
        let mut req = client.get(format!("{}/.authgate/x-forwarded", s.decisions));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    };
    let style = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example"),
        ("x-forwarded-uri", "/orders/7?page=2"),
    ];
    let mut with_token = style.to_vec();
    with_token.push(("authorization", &token));
    let r = forwarded(&with_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "alice");
    assert_eq!(r.headers()["x-auth-tenant"], "acme");
    assert!(r.text().await.unwrap().is_empty());
    let r = forwarded(&style).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "unauthorized");
    // One missing is 403; the other style's headers are ignored.
    let r = forwarded(&with_token[1..]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // One sent twice is ambiguous: 403, whichever copy would allow.
    let mut twice = with_token.clone();
    twice.push(("x-forwarded-uri", "/health"));
    let r = forwarded(&twice).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = forwarded(&[
        ("x-original-method", "GET"),
        ("x-original-uri", "/orders/7"),
        ("authorization", &token),
    ])
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);

    // Envoy ext_authz HTTP: the decision request is the judged request.
    let r = client
        .get(format!("{}/orders/7", s.decisions))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "alice");
    let r = client
        .get(format!("{}/orders/7", s.decisions))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A path the proxy answers 400 is 400 here.
    let addr = s.gw.running.decisions_addr.unwrap();
    let r = raw::get(addr, "/health/..%2Forders/7", &[("Connection", "close")]).await;
    assert_eq!(r.status, 400);
    // A client's request for the Check path, relayed over HTTP/1.1 by an
    // authorizer in HTTP mode, is judged as a request (no route: 403 JSON),
    // never answered as a gRPC Check.
    let r = client
        .post(format!(
            "{}/envoy.service.auth.v3.Authorization/Check",
            s.decisions
        ))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "forbidden");
    // A decision-only route is never served by the proxy listener.
    let r = client
        .get(format!("{}/orders/7", s.gw.url))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn peers_outside_trusted_proxies_are_refused() {
    let s = setup_trusting("\"10.0.0.0/8\", \"::1/128\"").await;
    let token = format!("Bearer {}", s.token("read", None));
    let r = reqwest::Client::new()
        .get(format!("{}/health", s.decisions))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // One answer and the connection closes: no pool of idle connections.
    assert_eq!(r.headers()["connection"], "close");
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "forbidden");
    let mut client = AuthorizationClient::connect(s.decisions.clone())
        .await
        .unwrap();
    let err = client
        .check(check_request("GET", "/health", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example".into(),
                    scheme: "https".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn envoy_grpc_check_sets_overwrites_and_removes_or_denies() {
    let s = setup().await;
    let mut client = AuthorizationClient::connect(s.decisions.clone())
        .await
        .unwrap();

    let token = format!("Bearer {}", s.token("read", None));
    let answer = client
        .check(check_request(
            "GET",
            "/orders/9?x=1",
            &[("authorization", &token)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = answer.http_response else {
        panic!("not OK: {:?}", answer.http_response)
    };
    let set: HashMap<_, _> = ok
        .headers
        .iter()
        .map(|h| {
            let hv = h.header.as_ref().unwrap();
            assert_eq!(
                h.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            );
            (hv.key.clone(), hv.value.clone())
        })
        .collect();
    assert_eq!(set["x-auth-subject"], "alice");
    // No tenant claim: x-auth-tenant is removed (after Envoy sets), and so
    // is the token.
    assert!(
        ok.headers_to_remove.contains(&"x-auth-tenant".to_owned()),
        "{ok:?}"
    );
    assert!(
        ok.headers_to_remove.contains(&"authorization".to_owned()),
        "{ok:?}"
    );
    assert!(
        !ok.headers_to_remove.contains(&"x-auth-subject".to_owned()),
        "{ok:?}"
    );

    // Refused: the proxy's status, challenge and body.
    let answer = client
        .check(check_request("GET", "/orders/9", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 16);
    let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
        panic!("not denied: {:?}", answer.http_response)
    };
    assert_eq!(denied.status.unwrap().code, 401);
    assert!(
        denied
            .headers
            .iter()
            .any(|h| h.header.as_ref().unwrap().key == "www-authenticate")
    );
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"], "unauthorized");

    let answer = client
        .check(check_request(
            "GET",
            "/admin/x",
            &[("authorization", &token)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 7);
    let answer = client
        .check(check_request(
            "GET",
            "/nowhere",
            &[("authorization", &token)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().code, 7);

    // A body that is no CheckRequest is refused as HTTP 403 too, never the
    // 200 a gRPC error would otherwise travel in.
    let tcp = tokio::net::TcpStream::connect(s.gw.running.decisions_addr.unwrap())
        .await
        .unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = http::Request::post(format!(
        "{}/envoy.service.auth.v3.Authorization/Check",
        s.decisions
    ))
    .header("content-type", "application/grpc")
    .body(())
    .unwrap();
    let (response, mut body) = h2.send_request(req, false).unwrap();
    body.send_data(
        bytes::Bytes::from_static(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]),
        true,
    )
    .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 403, "{response:?}");
}

#[test]
fn decision_only_routes_need_a_decision_listener_and_server_may_be_left_out() {
    let base =
        "issuers: {}\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    auth: public\n";
    let problems = authgate::config::parse(base, std::path::Path::new("."), &|_| None)
        .err()
        .unwrap();
    assert!(
        format!("{problems:?}").contains("routes[0].upstream"),
        "{problems:?}"
    );

    let only = format!("decisions: {{ listen: \"127.0.0.1:0\" }}\n{base}");
    let loaded = authgate::config::parse(&only, std::path::Path::new("."), &|_| None).unwrap();
    assert!(!loaded.config.proxy, "no server: means no proxy listener");
    assert!(loaded.config.routes[0].upstream.is_none());

    let bad = format!(
        "decisions: {{ listen: \"127.0.0.1:0\", trusted_proxies: [\"10.0.0.0/33\"] }}\n{base}"
    );
    let problems = authgate::config::parse(&bad, std::path::Path::new("."), &|_| None)
        .err()
        .unwrap();
    assert!(
        format!("{problems:?}").contains("decisions.trusted_proxies[0]"),
        "{problems:?}"
    );
}

/// The identity header names (lower case) of `deploy/decisions/gateway.yaml`,
/// which every recipe must overwrite.
fn recipe_identity_names() -> Vec<String> {
    let text = std::fs::read_to_string("deploy/decisions/gateway.yaml").unwrap();
    let loaded = authgate::config::parse(&text, std::path::Path::new("."), &|_| None)
        .unwrap_or_else(|p| panic!("deploy/decisions/gateway.yaml: {p:?}"));
    assert!(
        !loaded.config.proxy,
        "the recipes' authgate has no proxy listener"
    );
    let listen = loaded.config.decisions.as_ref().unwrap().listen;
    assert_eq!(listen.to_string(), "127.0.0.1:9902");
    let mut names: Vec<String> = loaded
        .config
        .routes
        .iter()
        .flat_map(|r| r.forward.headers.iter().map(|(n, _)| n.as_str().to_owned()))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "{names:?}");
    names
}

fn yaml(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn lower(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().map(|s| s.to_lowercase()).collect();
    v.sort();
    v
}

#[test]
fn the_traefik_and_caddy_recipes_strip_then_copy_every_identity_header() {
    let names = recipe_identity_names();
    let t = &yaml("deploy/decisions/traefik.yaml")[0]["http"];
    let auth = &t["middlewares"]["authgate"]["forwardAuth"];
    assert!(
        auth["address"]
            .as_str()
            .unwrap()
            .ends_with("/.authgate/x-forwarded")
    );
    assert_eq!(auth["trustForwardHeader"], false);
    let copied = auth["authResponseHeaders"].as_array().unwrap();
    assert_eq!(
        lower(copied.iter().map(|v| v.as_str().unwrap().to_owned())),
        names
    );
    let strip = t["middlewares"]["authgate-strip-identity"]["headers"]["customRequestHeaders"]
        .as_object()
        .unwrap();
    assert_eq!(lower(strip.keys().cloned()), names);
    assert!(strip.values().all(|v| v == ""));
    let chain = &t["routers"]["orders"]["middlewares"];
    assert_eq!(
        chain,
        &json!([
            "authgate-strip-identity",
            "authgate",
            "authgate-strip-token"
        ])
    );

    let caddy = std::fs::read_to_string("deploy/decisions/Caddyfile").unwrap();
    assert!(caddy.contains("uri /.authgate/x-forwarded"));
    let forward_auth = caddy.find("\tforward_auth ").unwrap();
    let copy = caddy
        .lines()
        .find_map(|l| l.trim().strip_prefix("copy_headers "))
        .unwrap();
    assert_eq!(lower(copy.split_whitespace().map(str::to_owned)), names);
    for name in &names {
        let strip = caddy
            .to_lowercase()
            .find(&format!("request_header -{name}\n"))
            .unwrap_or_else(|| panic!("{name} is not removed"));
        assert!(strip < forward_auth, "{name} removed after forward_auth");
    }
}

/// The named filters of an Envoy bootstrap's first listener, in order.
fn envoy_filters(doc: &Value) -> Vec<Value> {
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_envoy_and_istio_recipes_call_the_listener_as_it_expects() {
    let names = recipe_identity_names();
    let grpc = &yaml("deploy/decisions/envoy-grpc.yaml")[0];
    let hcm =
        &grpc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        hcm["common_http_protocol_options"]["headers_with_underscores_action"],
        "REJECT_REQUEST"
    );
    let filters = envoy_filters(grpc);
    let authz = &filters[0]["typed_config"];
    assert_eq!(
        authz["grpc_service"]["envoy_grpc"]["cluster_name"],
        "authgate"
    );
    assert_eq!(authz["failure_mode_allow"], false);
    let clusters = grpc["static_resources"]["clusters"].as_array().unwrap();
    let authgate = clusters.iter().find(|c| c["name"] == "authgate").unwrap();
    let options = &authgate["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert!(
        options["explicit_http_config"]
            .get("http2_protocol_options")
            .is_some()
    );

    let http = &yaml("deploy/decisions/envoy-http.yaml")[0];
    let filters = envoy_filters(http);
    let kinds: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.router"
        ]
    );
    let removed = |f: &Value| {
        lower(
            f["typed_config"]["mutations"]["request_mutations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["remove"].as_str().unwrap().to_owned()),
        )
    };
    assert_eq!(
        removed(&filters[0]),
        names,
        "identity headers removed before"
    );
    assert_eq!(removed(&filters[2]), ["authorization"]);
    let service = &filters[1]["typed_config"]["http_service"];
    let copied = service["authorization_response"]["allowed_upstream_headers"]["patterns"]
        .as_array()
        .unwrap();
    assert_eq!(
        lower(
            copied
                .iter()
                .map(|p| p["exact"].as_str().unwrap().to_owned())
        ),
        names
    );
    let clusters = http["static_resources"]["clusters"].as_array().unwrap();
    let authgate = clusters.iter().find(|c| c["name"] == "authgate").unwrap();
    assert!(
        authgate.get("typed_extension_protocol_options").is_none(),
        "the HTTP-mode cluster must speak HTTP/1.1"
    );

    let istio = yaml("deploy/decisions/istio.yaml");
    let provider = &istio[0]["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(provider["envoyExtAuthzGrpc"]["port"], 9902);
    let policy = istio
        .iter()
        .find(|d| d["kind"] == "AuthorizationPolicy")
        .unwrap();
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
}
