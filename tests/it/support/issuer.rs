//! A real identity provider on loopback: keys generated per test process,
//! a JWKS endpoint whose content, status and latency a test controls, an
//! OIDC discovery document, and counters of every fetch.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
}

/// A signing key with its kid.
pub struct Signer {
    pub kid: String,
    key: Key,
}

fn rsa_key() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
}

impl Signer {
    /// RSA 2048 (shared by the test process: generation is slow).
    pub fn rsa(kid: &str) -> Self {
        use aws_lc_rs::encoding::AsDer;
        let der: aws_lc_rs::encoding::Pkcs8V1Der = rsa_key().as_der().unwrap();
        let key = RsaKeyPair::from_pkcs8(der.as_ref()).unwrap();
        Self {
            kid: kid.into(),
            key: Key::Rsa(key),
        }
    }

    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> Self {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        Self {
            kid: kid.into(),
            key: Key::Ec(
                EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).unwrap(),
                "P-256",
            ),
        }
    }

    /// A fresh Ed25519 key.
    pub fn ed25519(kid: &str) -> Self {
        Self {
            kid: kid.into(),
            key: Key::Ed(Ed25519KeyPair::generate().unwrap()),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => json!({
                "kty": "RSA", "kid": self.kid, "use": "sig",
                "n": b64(k.public_key().modulus().big_endian_without_leading_zero()),
                "e": b64(k.public_key().exponent().big_endian_without_leading_zero()),
            }),
            Key::Ec(k, crv) => {
                let p = k.public_key().as_ref();
                let n = (p.len() - 1) / 2;
                json!({"kty": "EC", "crv": crv, "kid": self.kid, "use": "sig",
                       "x": b64(&p[1..1 + n]), "y": b64(&p[1 + n..])})
            }
            Key::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig",
                                 "x": b64(k.public_key().as_ref())}),
        }
    }

    /// The public key as the bytes an attacker would use as an HMAC secret:
    /// the JWK's JSON text.
    pub fn public_jwk_bytes(&self) -> Vec<u8> {
        self.jwk().to_string().into_bytes()
    }

    /// RSA public key as PEM (SubjectPublicKeyInfo), for key-confusion attacks.
    pub fn public_pem(&self) -> String {
        use aws_lc_rs::encoding::AsDer;
        let Key::Rsa(k) = &self.key else {
            panic!("RSA only")
        };
        let der = k.public_key().as_der().unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// Signs `input` with `alg` (which must fit the key).
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(k) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} is not an RSA algorithm"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, input, &mut sig).unwrap();
                sig
            }
            Key::Ec(k, _) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Key::Ed(k) => k.sign(input).as_ref().to_vec(),
        }
    }

    /// A signed token: header `{"alg", "kid", "typ": "at+jwt"}` merged with
    /// `header_extra` (null removes a member), payload `claims`.
    pub fn token(&self, alg: &str, header_extra: Value, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "kid": self.kid, "typ": "at+jwt"});
        for (k, v) in header_extra.as_object().unwrap() {
            if v.is_null() {
                header.as_object_mut().unwrap().remove(k);
            } else {
                header[k] = v.clone();
            }
        }
        self.raw_token(alg, &header.to_string(), &claims.to_string())
    }

    /// Signs exactly these header and payload texts.
    pub fn raw_token(&self, alg: &str, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = self.sign(alg, input.as_bytes());
        format!("{input}.{}", b64(sig))
    }
}

/// HMAC-SHA256/384/512 over `input` with `secret`.
pub fn hmac(alg: &str, secret: &[u8], input: &[u8]) -> Vec<u8> {
    use aws_lc_rs::hmac;
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    hmac::sign(&hmac::Key::new(algorithm, secret), input)
        .as_ref()
        .to_vec()
}

/// What the issuer serves right now.
pub struct IssuerState {
    pub jwks: Value,
    pub status: u16,
    pub delay: Duration,
    pub content_type: &'static str,
    pub cache_control: Option<String>,
    /// `issuer` in the discovery document; `None` means the real URL.
    pub discovery_issuer: Option<String>,
    /// `jwks_uri` in the discovery document; `None` means this issuer's own.
    pub discovery_jwks_uri: Option<String>,
}

/// A running issuer.
#[derive(Clone)]
pub struct TestIssuer {
    /// `http://127.0.0.1:PORT`, also the `iss` value.
    pub url: String,
    pub state: Arc<Mutex<IssuerState>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    pub other_fetches: Arc<AtomicUsize>,
}

impl TestIssuer {
    /// Serves a JWKS holding `signers`' public keys.
    pub async fn spawn(signers: &[&Signer]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Self {
            url,
            state: Arc::new(Mutex::new(IssuerState {
                jwks: json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}),
                status: 200,
                delay: Duration::ZERO,
                content_type: "application/json",
                cache_control: None,
                discovery_issuer: None,
                discovery_jwks_uri: None,
            })),
            jwks_fetches: Arc::default(),
            other_fetches: Arc::default(),
        };
        let served = issuer.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let issuer = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let issuer = issuer.clone();
                        async move { Ok::<_, Infallible>(issuer.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        issuer
    }

    /// Replaces the published keys.
    pub fn publish(&self, signers: &[&Signer]) {
        self.state.lock().unwrap().jwks =
            json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
    }

    /// Makes the JWKS endpoint answer `status`.
    pub fn set_status(&self, status: u16) {
        self.state.lock().unwrap().status = status;
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Default claims: this issuer, audience `api`, scope `read`, 5 minutes.
    pub fn claims(&self) -> Value {
        let now = super::now();
        json!({"iss": self.url, "sub": "alice", "aud": "api", "scope": "read", "iat": now, "exp": now + 300})
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let (status, content_type, body, cache, delay) = {
            let s = self.state.lock().unwrap();
            match path.as_str() {
                "/jwks.json" => {
                    self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                    (
                        s.status,
                        s.content_type,
                        s.jwks.to_string(),
                        s.cache_control.clone(),
                        s.delay,
                    )
                }
                "/.well-known/openid-configuration" => {
                    let iss = s
                        .discovery_issuer
                        .clone()
                        .unwrap_or_else(|| self.url.clone());
                    let jwks_uri = s
                        .discovery_jwks_uri
                        .clone()
                        .unwrap_or_else(|| format!("{}/jwks.json", self.url));
                    let doc = json!({"issuer": iss, "jwks_uri": jwks_uri});
                    (
                        200,
                        "application/json",
                        doc.to_string(),
                        None,
                        Duration::ZERO,
                    )
                }
                _ => {
                    self.other_fetches.fetch_add(1, Ordering::SeqCst);
                    (404, "text/plain", String::new(), None, Duration::ZERO)
                }
            }
        };
        tokio::time::sleep(delay).await;
        let mut r = Response::builder()
            .status(status)
            .header("content-type", content_type);
        if let Some(c) = cache {
            r = r.header("cache-control", c);
        }
        r.body(Full::new(Bytes::from(body))).unwrap()
    }
}
