//! The demo identity provider: a fresh ES256 key per run, its JWKS at
//! `/jwks.json`, and `/token?sub=&scope=&ttl=&tenant=&dpop_jkt=` minting access tokens
//! as plain text (for `$(curl …)`). For the demo only; it has no users.

use std::convert::Infallible;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::proxy::Body;

/// The demo issuer.
#[derive(Clone)]
pub struct DemoIssuer {
    issuer: Arc<str>,
    key: Arc<EcdsaKeyPair>,
    jwks: Arc<str>,
}

impl DemoIssuer {
    /// A new issuer named `issuer`, with a freshly generated key.
    pub fn new(issuer: String) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a key".to_owned())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| "cannot load the generated key".to_owned())?;
        let point = key.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "demo-1",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        Ok(Self {
            issuer: issuer.into(),
            key: Arc::new(key),
            jwks: jwks.to_string().into(),
        })
    }

    /// Mints a token for `sub` with `scope`, valid for `ttl` seconds
    /// (negative: already expired), bound to the DPoP key `dpop_jkt` if given.
    pub fn mint(
        &self,
        sub: &str,
        scope: &str,
        ttl: i64,
        tenant: Option<&str>,
        dpop_jkt: Option<&str>,
    ) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let iat = if ttl < 0 { now + ttl - 60 } else { now };
        let mut claims = serde_json::json!({
            "iss": &*self.issuer, "sub": sub, "aud": "demo-api", "scope": scope,
            "iat": iat, "exp": now + ttl, "jti": format!("demo-{now}-{sub}"),
        });
        if let Some(t) = tenant {
            claims["tenant"] = t.into();
        }
        if let Some(jkt) = dpop_jkt {
            claims["cnf"] = serde_json::json!({ "jkt": jkt });
        }
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"demo-1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map(|s| URL_SAFE_NO_PAD.encode(s.as_ref()))
            .unwrap_or_default();
        format!("{input}.{sig}")
    }

    /// Serves `/jwks.json` and `/token` on `listener`.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let issuer = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let issuer = issuer.clone();
                    async move { Ok::<_, Infallible>(issuer.answer(&req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/jwks.json" => reply(
                StatusCode::OK,
                "application/jwk-set+json",
                self.jwks.to_string(),
            ),
            "/token" => {
                let q = req.uri().query().unwrap_or("");
                let param = |name: &str| {
                    q.split('&')
                        .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                        .map(|v| {
                            percent_encoding::percent_decode_str(v)
                                .decode_utf8_lossy()
                                .replace('+', " ")
                        })
                };
                let ttl = param("ttl")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(300)
                    .clamp(-86_400, 3600);
                let token = self.mint(
                    &param("sub").unwrap_or_else(|| "alice".into()),
                    &param("scope").unwrap_or_default(),
                    ttl,
                    param("tenant").as_deref(),
                    param("dpop_jkt").as_deref(),
                );
                reply(StatusCode::OK, "text/plain", token)
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}
