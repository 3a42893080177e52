//! `authgate demo`: a demo issuer, an echo upstream and a gateway, all on
//! loopback, with copy-paste curl lines. The gateway runs on a config parsed
//! and validated exactly like a user's `gateway.yaml`.

pub mod echo;
pub mod issuer;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::server::Running;
use crate::server::shutdown::{Signal, Signals};

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(ephemeral: bool) -> ExitCode {
    // Installed before anything is printed, so a Ctrl-C right after the
    // banner still drains instead of killing the process.
    let Ok(mut signals) = Signals::install() else {
        return ExitCode::FAILURE;
    };
    match start(ephemeral).await {
        Ok((running, banner)) => {
            // A closed stdout (piped into `head`) must not stop the demo.
            let _ = writeln!(std::io::stdout().lock(), "{banner}");
            while signals.next().await != Signal::Terminate {}
            running.shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(port: u16, ephemeral: bool) -> Result<TcpListener, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], if ephemeral { 0 } else { port }));
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (try --ephemeral-ports)"))
}

async fn start(ephemeral: bool) -> Result<(Running, String), String> {
    let issuer_listener = bind(8180, ephemeral).await?;
    let echo_listener = bind(8181, ephemeral).await?;
    let issuer_addr = issuer_listener.local_addr().map_err(|e| e.to_string())?;
    let echo_addr = echo_listener.local_addr().map_err(|e| e.to_string())?;
    let demo_issuer = issuer::DemoIssuer::new(format!("http://{issuer_addr}"))?;
    tokio::spawn(demo_issuer.clone().serve(issuer_listener));
    tokio::spawn(echo::serve(echo_listener));

    // An API key for the partners route: only its digest goes to the file.
    let (api_key, entry) = crate::auth::api_keys::new_key("partner-acme", &["orders:read".into()])?;
    let dir = std::env::temp_dir().join(format!("authgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let keys = dir.join("api-keys.yaml");
    std::fs::write(&keys, entry).map_err(|e| format!("{}: {e}", keys.display()))?;
    let yaml = demo_config(ephemeral, issuer_addr, echo_addr);
    let loaded = crate::config::parse(&yaml, &dir, &|_| None).map_err(|p| {
        p.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let running = Running::start(loaded.config)
        .await
        .map_err(|e| e.to_string())?;
    let gw = running.proxy_addr;
    let admin = running.admin_addr;
    let token = demo_issuer.mint("alice", "orders:read", 3600, Some("acme"), None);
    let banner = banner(gw, admin, issuer_addr, echo_addr, &token, &api_key);
    Ok((running, banner))
}

/// The demo's `gateway.yaml`: one issuer, a public route, a scoped route and
/// a tenant-bound template route.
fn demo_config(ephemeral: bool, issuer_addr: SocketAddr, echo_addr: SocketAddr) -> String {
    let (gw_port, admin_port) = if ephemeral { (0, 0) } else { (8080, 9901) };
    format!(
        r#"
server:
  listen: "127.0.0.1:{gw_port}"
admin:
  listen: "127.0.0.1:{admin_port}"
issuers:
  demo:
    issuer: "http://{issuer_addr}"
    jwks_uri: "http://{issuer_addr}/jwks.json"
    algorithms: [ES256]
    audiences: [demo-api]
    max_lifetime: 1h
    required_claims: [exp, iat, sub]
    dpop: {{ algorithms: [ES256, EdDSA] }}
  partner-keys:
    api_keys: {{ file: api-keys.yaml }}
routes:
  - name: health
    match: {{ path: /health, methods: [GET] }}
    upstream: "http://{echo_addr}"
    auth: public
  - name: tenant-orders
    match: {{ path_template: "/tenants/{{tenant}}/orders" }}
    upstream: "http://{echo_addr}"
    auth:
      issuers: [demo]
      scopes_all: [orders:read]
      claims: {{ tenant: "{{path.tenant}}" }}
  - name: orders
    match: {{ path_prefix: /orders }}
    upstream: "http://{echo_addr}"
    auth:
      issuers: [demo]
      scopes_all: [orders:read]
  - name: partners
    match: {{ path_prefix: /partners }}
    upstream: "http://{echo_addr}"
    auth:
      issuers: [partner-keys]
      scopes_all: [orders:read]
      token_from: ["header:X-Api-Key"]
  - name: echo-grpc
    match: {{ path_prefix: /demo.Echo }}
    upstream: "h2c://{echo_addr}"
    auth:
      issuers: [demo]
      scopes_all: [orders:read]
"#
    )
}

/// What the demo prints: addresses, a token, and a curl line per answer.
fn banner(
    gw: SocketAddr,
    admin: SocketAddr,
    issuer_addr: SocketAddr,
    echo_addr: SocketAddr,
    token: &str,
    api_key: &str,
) -> String {
    // The DPoP lines call this very binary, wherever it was built.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "authgate".into());
    format!(
        r#"
authgate demo is running (Ctrl-C stops everything)
  gateway   http://{gw}      routes: /orders (scope orders:read), /tenants/{{tenant}}/orders, /health (public),
                                  /demo.Echo/* (gRPC over h2c, scope orders:read), /partners (API key)
  issuer    http://{issuer_addr}      JWKS at /jwks.json, tokens at /token?sub=&scope=&ttl=&tenant=&dpop_jkt=
  upstream  http://{echo_addr}      echoes back what it receives
  admin     http://{admin}      /healthz /readyz /metrics

# A freshly minted token (sub=alice, scope=orders:read, tenant=acme, valid 1h):
TOKEN={token}

# 200: the upstream echoes the identity headers authgate added
curl -s -H "Authorization: Bearer $TOKEN" http://{gw}/orders/42

# 401: no token
curl -i http://{gw}/orders/42

# 403: token without the orders:read scope
curl -i -H "Authorization: Bearer $(curl -s 'http://{issuer_addr}/token?sub=bob&scope=profile')" http://{gw}/orders/42

# 401: expired token
curl -i -H "Authorization: Bearer $(curl -s 'http://{issuer_addr}/token?sub=alice&scope=orders:read&ttl=-300')" http://{gw}/orders/42

# 403: tenant mismatch (token for acme, path for globex)
curl -i -H "Authorization: Bearer $TOKEN" http://{gw}/tenants/globex/orders

# gRPC: a unary call over HTTP/2 (h2c) to an echo service; the framed
# message (field 1 = "hello") comes back, grpc-status 0 in the trailers
printf '\0\0\0\0\7\n\5hello' | curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' -H "Authorization: Bearer $TOKEN" --data-binary @- http://{gw}/demo.Echo/Say | od -c

# gRPC without a token: a trailers-only answer, grpc-status 16 (UNAUTHENTICATED)
curl -si --http2-prior-knowledge -H 'content-type: application/grpc' --data-binary '' http://{gw}/demo.Echo/Say

# DPoP (RFC 9449): a token bound to a key only its holder has; each request
# carries a fresh proof signed with that key (a replayed one is refused)
{exe} dpop key --out /tmp/authgate-demo-dpop.pem
DPOP_TOKEN=$(curl -s "http://{issuer_addr}/token?sub=alice&scope=orders:read&dpop_jkt=$({exe} dpop jkt --key /tmp/authgate-demo-dpop.pem)")
curl -s -H "Authorization: DPoP $DPOP_TOKEN" -H "DPoP: $({exe} dpop proof --key /tmp/authgate-demo-dpop.pem --url http://{gw}/orders/42 --token $DPOP_TOKEN)" http://{gw}/orders/42

# An API key (stored as its SHA-256 only; `authgate key new` makes more):
API_KEY={api_key}
curl -s -H "X-Api-Key: $API_KEY" http://{gw}/partners/orders

# metrics
curl -s http://{admin}/metrics | grep authgate_
"#
    )
}
