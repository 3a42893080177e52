//! Shared by the criterion benches and the `hot_path` profiling example:
//! keys for every algorithm family, tokens, and a runtime with one
//! protected route whose issuer reads its JWKS from a file.

#![allow(dead_code)]

use std::sync::Arc;

use authgate::auth::verify;
use authgate::config::parse;
use authgate::gateway::Runtime;
use authgate::telemetry::metrics::Metrics;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

const ISS: &str = "https://idp.bench";

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Bench keys: one per algorithm family, with their public JWKs.
pub struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

impl Keys {
    pub fn new() -> Self {
        let ec_alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec_doc = EcdsaKeyPair::generate_pkcs8(ec_alg, &SystemRandom::new()).unwrap();
        Self {
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(ec_alg, ec_doc.as_ref()).unwrap(),
            ed: Ed25519KeyPair::generate().unwrap(),
        }
    }

    pub fn jwks(&self) -> String {
        let p = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64(self.rsa.public_key().modulus().big_endian_without_leading_zero()),
             "e": b64(self.rsa.public_key().exponent().big_endian_without_leading_zero())},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&p[1..33]), "y": b64(&p[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(self.ed.public_key().as_ref())},
        ]})
        .to_string()
    }

    pub fn token(&self, alg: &str, sub: &str) -> String {
        self.token_with(alg, sub, json!({}))
    }

    /// A public JWK of the `alg` family's key (a DPoP proof's `jwk`).
    pub fn jwk(&self, alg: &str) -> serde_json::Value {
        let p = self.ec.public_key().as_ref();
        match alg {
            "ES256" => {
                json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            "EdDSA" => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(self.ed.public_key().as_ref())})
            }
            _ => {
                json!({"kty": "RSA", "n": b64(self.rsa.public_key().modulus().big_endian_without_leading_zero()),
                        "e": b64(self.rsa.public_key().exponent().big_endian_without_leading_zero())})
            }
        }
    }

    /// A DPoP proof by the `alg` key for GET `htu`, bound to `token`, with
    /// a unique `jti`.
    pub fn proof(&self, alg: &str, htu: &str, token: &str, jti: &str) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": self.jwk(alg)}).to_string();
        let ath = b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            token.as_bytes(),
        ));
        let claims =
            json!({"jti": jti, "htm": "GET", "htu": htu, "iat": verify::now() as i64, "ath": ath});
        self.sign(alg, &format!("{}.{}", b64(header), b64(claims.to_string())))
    }

    /// A token whose claims also hold `extra`.
    pub fn token_with(&self, alg: &str, sub: &str, extra: serde_json::Value) -> String {
        let kid = match alg {
            "ES256" => "ec",
            "EdDSA" => "ed",
            _ => "rsa",
        };
        let now = verify::now() as i64;
        let header = b64(json!({"alg": alg, "kid": kid, "typ": "at+jwt"}).to_string());
        let mut claims = json!({"iss": ISS, "sub": sub, "aud": "api", "scope": "read write",
                            "iat": now, "exp": now + 3600, "jti": sub});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.sign(alg, &format!("{header}.{}", b64(claims.to_string())))
    }

    /// A forged token: `header_members` extra header members and `claims`
    /// extra claims (`"m0":0`, ...), and `pad` bytes in one more claim,
    /// signed over other bytes, so that only the signature refuses it.
    /// Wide ones are what a forger sends to make each refusal cost the most.
    pub fn forged(&self, alg: &str, header_members: usize, claims: usize, pad: usize) -> String {
        let token = self.token(alg, "mallory");
        let (header, rest) = token.split_once('.').unwrap();
        let payload = rest.split('.').next().unwrap();
        let widen = |segment: &str, n: usize, pad: usize| {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap();
            for i in 0..n {
                object.insert(format!("m{i}"), 0.into());
            }
            if pad > 0 {
                object.insert("pad".into(), "p".repeat(pad).into());
            }
            b64(serde_json::Value::Object(object).to_string())
        };
        let input = format!(
            "{}.{}",
            widen(header, header_members, 0),
            widen(payload, claims, pad)
        );
        let other = self.sign(alg, &format!("{input}x"));
        let signature = other.rsplit('.').next().unwrap();
        format!("{input}.{signature}")
    }

    /// `input` and its signature by the `alg` key.
    fn sign(&self, alg: &str, input: &str) -> String {
        let rng = SystemRandom::new();
        let sig = match alg {
            "ES256" => self
                .ec
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            "EdDSA" => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            rsa => {
                let enc: &'static dyn signature::RsaEncoding = if rsa == "PS256" {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(enc, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(sig))
    }
}

/// A runtime with one protected route whose issuer reads `jwks` from a file.
pub async fn runtime(jwks: &str) -> Runtime {
    let dir = std::env::temp_dir().join(format!("authgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.json"), jwks).unwrap();
    let yaml = format!(
        r#"
issuers:
  idp: {{ issuer: "{ISS}", jwks_file: keys.json, algorithms: [RS256, PS256, ES256, EdDSA], audiences: [api] }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    upstream: "http://127.0.0.1:1"
    auth: {{ issuers: [idp], scopes_all: [read] }}
"#
    );
    let config = parse(&yaml, &dir, &|_| None).unwrap().config;
    let rt = Runtime::build(config, None, &Arc::new(Metrics::new())).unwrap();
    for keys in rt.keys.values() {
        keys.start().await;
    }
    rt
}
