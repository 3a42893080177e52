//! DPoP proofs (RFC 9449 §4.3), checked on every request that presents a
//! DPoP-bound token: `typ`, an asymmetric `alg` from the issuer's list, a
//! public `jwk` (its own key: the one thing in a JOSE header authgate takes
//! a key from, because the token binds it), the signature by that key,
//! `htm`, `htu`, `iat` within `max_age` and leeway, `ath`, the nonce when
//! the issuer asks for one, and the RFC 7638 thumbprint the token's
//! `cnf.jkt` must equal. Replay of `jti` is checked by the caller against
//! the shared store (`revocation::Revocations::first_use`).

use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::config::DpopConfig;

/// Longest proof accepted: a proof carries its key, an RSA-4096 one is
/// about 1.5 KiB.
const MAX_PROOF_BYTES: usize = 8 * 1024;
/// Longest `jti` kept for replay checks.
const MAX_JTI_BYTES: usize = 256;
/// JWK members that only a private key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// A nonce is valid for its time slot and the one after.
const NONCE_SLOT: Duration = Duration::from_secs(300);

/// Why a proof was refused (`invalid_dpop_proof` unless said otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof is wrong; the text says how (never proof bytes).
    #[error("{0}")]
    Invalid(&'static str),
    /// The proof lacks a valid server nonce: `use_dpop_nonce`.
    #[error("a DPoP nonce from this server is required")]
    NonceRequired,
}

/// What the request says a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request URI without query and fragment, normalised
    /// (see [`normalise_htu`]).
    pub htu: &'a str,
    /// The access token the proof is presented with.
    pub token: &'a str,
    /// Seconds since the epoch.
    pub now: f64,
    /// The issuer's clock leeway.
    pub leeway: Duration,
}

/// A proof that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// RFC 7638 thumbprint of the proof's key (base64url SHA-256).
    pub jkt: String,
    /// The proof's unique id, for the replay check.
    pub jti: String,
    /// How long the replay check must remember `jti`.
    pub remember: Duration,
    /// True when the nonce used is about to roll over (a fresh one is sent).
    pub nonce_stale: bool,
}

fn invalid(why: &'static str) -> ProofError {
    ProofError::Invalid(why)
}

/// Checks `proof` against `expected` under `config`.
pub fn check(
    proof: &str,
    config: &DpopConfig,
    expected: &Expected<'_>,
) -> Result<Checked, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(invalid("the DPoP proof is too long"));
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the DPoP proof is not a compact JWS"));
    };
    let header = decode_object(h).ok_or(invalid("the DPoP proof header is not a JSON object"))?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(invalid("the DPoP proof's typ is not dpop+jwt"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| Algorithm::from_str(a).ok())
        .filter(|a| config.algorithms.contains(a))
        .ok_or(invalid("the DPoP proof's alg is not accepted"))?;
    let jwk = header
        .get("jwk")
        .filter(|j| j.is_object())
        .ok_or(invalid("the DPoP proof carries no jwk"))?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.get(m).is_some()) {
        return Err(invalid("the DPoP proof's jwk holds a private key"));
    }
    let key =
        crate::jwks::jwk::parse(jwk).map_err(|_| invalid("the DPoP proof's jwk is unusable"))?;
    let signing_input = &proof[..h.len() + 1 + c.len()];
    if !key.fits(alg) || !key.verifies(alg, signing_input.as_bytes(), s) {
        return Err(invalid("the DPoP proof's signature is invalid"));
    }
    let claims =
        decode_object(c).ok_or(invalid("the DPoP proof's claims are not a JSON object"))?;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or(invalid("the DPoP proof has no usable jti"))?;
    if claims.get("htm").and_then(Value::as_str) != Some(expected.method) {
        return Err(invalid("the DPoP proof's htm is not this request's method"));
    }
    let htu = claims
        .get("htu")
        .and_then(Value::as_str)
        .and_then(normalise_htu);
    if htu.as_deref() != Some(expected.htu) {
        return Err(invalid("the DPoP proof's htu is not this request's URI"));
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .ok_or(invalid("the DPoP proof has no iat"))?;
    let (leeway, max_age) = (expected.leeway.as_secs_f64(), config.max_age.as_secs_f64());
    if iat > expected.now + leeway {
        return Err(invalid("the DPoP proof was issued in the future"));
    }
    if iat < expected.now - max_age - leeway {
        return Err(invalid("the DPoP proof is too old"));
    }
    let ath = URL_SAFE_NO_PAD.encode(digest(expected.token.as_bytes()));
    if claims.get("ath").and_then(Value::as_str) != Some(&ath) {
        return Err(invalid(
            "the DPoP proof's ath does not match the access token",
        ));
    }
    let nonce_stale = match config.nonce {
        false => false,
        true => {
            let nonce = claims.get("nonce").and_then(Value::as_str);
            nonce_state(&config.nonce_secret.0, nonce, expected.now)
                .ok_or(ProofError::NonceRequired)?
        }
    };
    Ok(Checked {
        jkt: thumbprint(jwk).ok_or(invalid("the DPoP proof's jwk is unusable"))?,
        jti: jti.to_owned(),
        remember: config.max_age + expected.leeway * 2,
        nonce_stale,
    })
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over its required
/// members, in lexical order, without whitespace; base64url.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let canonical = match member("kty")? {
        "EC" => {
            serde_json::json!({"crv": member("crv")?, "kty": "EC", "x": member("x")?, "y": member("y")?})
        }
        "RSA" => serde_json::json!({"e": member("e")?, "kty": "RSA", "n": member("n")?}),
        "OKP" => serde_json::json!({"crv": member("crv")?, "kty": "OKP", "x": member("x")?}),
        _ => return None,
    };
    // serde_json's map is ordered by key, and `to_string` adds no spaces.
    let text = serde_json::to_string(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(digest(text.as_bytes())))
}

/// An `htu` (or the request's own URI) as compared (RFC 9449 §4.3, RFC 3986
/// §6): scheme and host lower case, the default port dropped, no query or
/// fragment, percent-encodings upper case, an empty path as `/`.
pub fn normalise_htu(text: &str) -> Option<String> {
    let uri: http::Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let port = match authority.port_u16() {
        Some(p) if p != default => format!(":{p}"),
        _ => String::new(),
    };
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    Some(format!("{scheme}://{host}{port}{}", upper_percent(path)))
}

fn upper_percent(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_uppercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// The nonce key of an issuer without `nonce_secret_env`: drawn once per
/// process and told apart per issuer (`label`: its config path), so that
/// every parse of the same file gives the same key. A key drawn anew at
/// each reload made every nonce clients held stop validating, and made
/// the issuer differ from itself, so the reload rebuilt its introspector
/// (losing its cached answers) instead of keeping it.
pub fn process_secret(label: &str) -> Vec<u8> {
    static KEY: std::sync::OnceLock<aws_lc_rs::hmac::Key> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        // The system RNG failing leaves a zero key: nonces then still bind
        // to this process's slots, and `check` reports nothing worse.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes)
    });
    aws_lc_rs::hmac::sign(key, label.as_bytes())
        .as_ref()
        .to_vec()
}

fn slot(now: f64) -> u64 {
    (now.max(0.0) as u64) / NONCE_SLOT.as_secs()
}

/// The nonce for time slot `slot`: the slot and an HMAC over it, so every
/// replica holding the secret accepts it with nothing shared but the key.
fn nonce_for(secret: &[u8], slot: u64) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, &slot.to_be_bytes());
    let mut bytes = slot.to_be_bytes().to_vec();
    bytes.extend_from_slice(&tag.as_ref()[..16]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The nonce a client should use now.
pub fn current_nonce(secret: &[u8], now: f64) -> String {
    nonce_for(secret, slot(now))
}

/// `Some(stale)` when `nonce` is this slot's or the previous one's (stale:
/// a fresh one should be sent), `None` when it is missing or not ours.
fn nonce_state(secret: &[u8], nonce: Option<&str>, now: f64) -> Option<bool> {
    let nonce = nonce?;
    let current = slot(now);
    if nonce == nonce_for(secret, current) {
        // Within the last fifth of the slot: hand out the next one early.
        let into = now.max(0.0) as u64 % NONCE_SLOT.as_secs();
        return Some(into >= NONCE_SLOT.as_secs() * 4 / 5);
    }
    (current > 0 && nonce == nonce_for(secret, current - 1)).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_nonce_key_is_the_same_in_every_parse_and_differs_per_issuer() {
        let a = process_secret("issuers.a.dpop");
        assert_eq!(a.len(), 32);
        assert_eq!(a, process_secret("issuers.a.dpop"));
        assert_ne!(a, process_secret("issuers.b.dpop"));
    }

    #[test]
    fn rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn htu_normalisation() {
        let n = |s| normalise_htu(s);
        assert_eq!(
            n("HTTPS://API.Example:443/a%2fb?x=1#f").unwrap(),
            "https://api.example/a%2Fb"
        );
        assert_eq!(n("http://h:8080").unwrap(), "http://h:8080/");
        assert_eq!(n("http://u@h/"), None);
        assert_eq!(n("ftp://h/"), None);
    }

    #[test]
    fn nonces_roll_over_and_bind_to_the_secret() {
        let (a, b) = (b"a".repeat(32), b"b".repeat(32));
        let now = 1_000_000.0;
        let nonce = current_nonce(&a, now);
        assert_eq!(nonce_state(&a, Some(&nonce), now), Some(false));
        assert_eq!(nonce_state(&b, Some(&nonce), now), None);
        // The next slot still takes it, asking for a fresh one.
        assert_eq!(nonce_state(&a, Some(&nonce), now + 300.0), Some(true));
        assert_eq!(nonce_state(&a, Some(&nonce), now + 600.0), None);
        assert_eq!(nonce_state(&a, None, now), None);
    }
}
