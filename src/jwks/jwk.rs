//! One JWK turned into a [`VerifyKey`], strictly: `use` must be `sig`,
//! `key_ops` must allow `verify`, `alg` must fit the key, RSA moduli are at
//! least 2048 bits, and symmetric keys are never taken from a JWKS. The
//! public key is parsed once here for every algorithm it may verify.

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// What kind of key this is, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// RSA with this modulus length in bytes (RS*, PS*).
    Rsa(usize),
    /// EC P-256 (ES256).
    P256,
    /// EC P-384 (ES384).
    P384,
    /// OKP Ed25519 (EdDSA).
    Ed25519,
    /// A shared secret (HS*), never from a JWKS document.
    Hmac,
}

/// One usable verification key.
pub struct VerifyKey {
    /// `kid`, if the JWK had one.
    pub kid: Option<String>,
    /// Key family.
    pub family: KeyFamily,
    /// The JWK's own `alg` restriction.
    pub alg: Option<Algorithm>,
    /// The key in jsonwebtoken's form (HMAC secrets are verified with it).
    pub key: DecodingKey,
    /// Public keys parsed once by aws-lc-rs, one per algorithm the key may
    /// verify, so a verification does not re-parse the key every time.
    pub parsed: Vec<(Algorithm, ParsedPublicKey)>,
    /// SHA-256 of the public key material (zero for an HMAC secret): a key
    /// replaced under the same `kid` is a different key.
    pub id: [u8; 32],
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// True when this key may verify `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        let family_fits = match self.family {
            KeyFamily::Rsa(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::P256 => alg == ES256,
            KeyFamily::P384 => alg == ES384,
            KeyFamily::Ed25519 => alg == EdDSA,
            KeyFamily::Hmac => matches!(alg, HS256 | HS384 | HS512),
        };
        family_fits && self.alg.is_none_or(|a| a == alg)
    }

    /// The pre-parsed public key for `alg`, if this is a public key that fits it.
    pub fn parsed_for(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.parsed.iter().find(|(a, _)| *a == alg).map(|(_, k)| k)
    }

    /// Whether `signature_b64` (base64url, unpadded) is this key's signature
    /// of `signing_input` under `alg` (see [`VerifyKey::verifies_decoded`]).
    pub fn verifies(&self, alg: Algorithm, signing_input: &[u8], signature_b64: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature_b64)
            .is_ok_and(|sig| self.verifies_decoded(alg, signing_input, None, signature_b64, &sig))
    }

    /// Whether `signature` (as decoded from `signature_b64`) is this key's
    /// signature of `signing_input` under `alg`. The one place a signature
    /// is checked: the key must fit `alg`, the signature must have exactly
    /// the length `alg` gives with this key (DER-encoded ECDSA and
    /// truncated RSA never reach the crypto), then aws-lc-rs (public keys,
    /// parsed when the JWKS loaded) or jsonwebtoken (HMAC secrets, from
    /// the base64 text) decides. Given the SHA-256 of `signing_input`,
    /// RS256, PS256 and ES256 check the signature of that digest (the same
    /// check, without hashing the input again); every other algorithm
    /// hashes `signing_input` itself.
    pub fn verifies_decoded(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        sha256: Option<&aws_lc_rs::digest::Digest>,
        signature_b64: &str,
        signature: &[u8],
    ) -> bool {
        if !self.fits(alg) || signature.len() != self.signature_len(alg) {
            return false;
        }
        let sha256 = sha256
            .filter(|_| matches!(alg, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256));
        match (self.parsed_for(alg), sha256) {
            (Some(public), Some(digest)) => public.verify_digest_sig(digest, signature).is_ok(),
            (Some(public), None) => public.verify_sig(signing_input, signature).is_ok(),
            (None, _) => {
                self.family == KeyFamily::Hmac
                    && jsonwebtoken::crypto::verify(signature_b64, signing_input, &self.key, alg)
                        .unwrap_or(false)
            }
        }
    }

    /// The exact signature length `alg` produces with this key.
    pub fn signature_len(&self, alg: Algorithm) -> usize {
        use Algorithm::*;
        match (self.family, alg) {
            (KeyFamily::Rsa(n), _) => n,
            // ECDSA is `r‖s`, each as long as the curve's field.
            (_, ES384) => 96,
            (_, HS384) => 48,
            (_, HS256) => 32,
            _ => 64,
        }
    }
}

/// Smallest RSA modulus accepted: 2048 bits (RFC 7518 §3.3).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// A JWK's key material: its family, jsonwebtoken's form and the public
/// key bytes aws-lc-rs parses.
type Material = (KeyFamily, DecodingKey, Vec<u8>);

/// The JWK as a verification key, or why it is skipped.
pub fn parse(jwk: &Value) -> Result<VerifyKey, &'static str> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Err("use is not sig");
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("key_ops does not allow verify");
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.parse::<Algorithm>().map_err(|_| "unsupported alg")?),
        Some(_) => return Err("alg is not a string"),
    };
    let (family, key, public) = match text("kty") {
        Some("RSA") => rsa(jwk)?,
        Some("EC") => ec(jwk)?,
        Some("OKP") => okp(jwk)?,
        Some("oct") => return Err("symmetric keys are never taken from a JWKS"),
        _ => return Err("unsupported kty"),
    };
    let mut key = VerifyKey {
        kid: text("kid").map(str::to_owned),
        family,
        alg,
        key,
        parsed: Vec::new(),
        id: key_id(&public),
    };
    if alg.is_some_and(|a| !key.fits(a)) {
        return Err("alg does not fit the key type");
    }
    for (a, verification) in VERIFICATION {
        if key.fits(*a) {
            let parsed = ParsedPublicKey::new(*verification, &public)
                .map_err(|_| "public key rejected by the crypto library")?;
            key.parsed.push((*a, parsed));
        }
    }
    Ok(key)
}

fn text<'j>(jwk: &'j Value, name: &str) -> &'j str {
    jwk.get(name).and_then(Value::as_str).unwrap_or("")
}

fn b64(jwk: &Value, name: &str) -> Result<Vec<u8>, &'static str> {
    let v = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or("missing key member")?;
    URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|_| "key member is not base64url")
}

fn rsa(jwk: &Value) -> Result<Material, &'static str> {
    let (n, e) = (b64(jwk, "n")?, b64(jwk, "e")?);
    let len = n.iter().skip_while(|&&b| b == 0).count();
    if len < MIN_RSA_MODULUS_BYTES {
        return Err("RSA modulus shorter than 2048 bits");
    }
    let key = DecodingKey::from_rsa_components(text(jwk, "n"), text(jwk, "e"))
        .map_err(|_| "unusable RSA key")?;
    Ok((KeyFamily::Rsa(len), key, rsa_public_key_der(&n, &e)))
}

fn ec(jwk: &Value) -> Result<Material, &'static str> {
    let (family, size) = match jwk.get("crv").and_then(Value::as_str) {
        Some("P-256") => (KeyFamily::P256, 32),
        Some("P-384") => (KeyFamily::P384, 48),
        _ => return Err("unsupported crv"),
    };
    let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
    if x.len() != size || y.len() != size {
        return Err("EC coordinates have the wrong length");
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(4); // uncompressed
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = DecodingKey::from_ec_components(text(jwk, "x"), text(jwk, "y"))
        .map_err(|_| "unusable EC key")?;
    Ok((family, key, point))
}

fn okp(jwk: &Value) -> Result<Material, &'static str> {
    if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("unsupported crv");
    }
    let x = b64(jwk, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key has the wrong length");
    }
    let key =
        DecodingKey::from_ed_components(text(jwk, "x")).map_err(|_| "unusable Ed25519 key")?;
    Ok((KeyFamily::Ed25519, key, x))
}

/// aws-lc-rs verification for each public-key algorithm (RSA 2048–8192 bits,
/// as jsonwebtoken allows; ECDSA as fixed-length `r‖s`).
const VERIFICATION: &[(Algorithm, &'static dyn VerificationAlgorithm)] = &[
    (Algorithm::RS256, &signature::RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &signature::RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &signature::RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &signature::RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &signature::RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &signature::RSA_PSS_2048_8192_SHA512),
    (Algorithm::ES256, &signature::ECDSA_P256_SHA256_FIXED),
    (Algorithm::ES384, &signature::ECDSA_P384_SHA384_FIXED),
    (Algorithm::EdDSA, &signature::ED25519),
];

fn key_id(public: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
    let mut id = [0; 32];
    id.copy_from_slice(d.as_ref());
    id
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` in DER.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, bytes: &[u8]) {
        let bytes = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
        let pad = bytes.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        length(out, bytes.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
    }
    fn length(out: &mut Vec<u8>, len: usize) {
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
            _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}
