//! Sender-constrained tokens (CONTRACT §8.4): a token bound to a key the
//! client holds passes only with proof of that key, on every request
//! (cached or not): `cnf.jkt` with a DPoP proof by the key of that
//! thumbprint (RFC 9449), `cnf["x5t#S256"]` with the client certificate of
//! this very connection (RFC 8705). A route with `sender_constrained:
//! required` takes bound tokens only.

use http::{HeaderMap, Method, Uri};
use serde_json::Value;

use super::dpop::{self, Expected, ProofError};
use super::extract::Scheme;
use super::failure::AuthFailure;
use crate::config::{IssuerConfig, Policy};
use crate::proxy::headers::ClientInfo;
use crate::revocation::Revocations;

/// What of the request the binding checks read.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The request method (a proof's `htm`).
    pub method: &'a Method,
    /// The request target (a proof's `htu`, with the authority for HTTP/2).
    pub uri: &'a Uri,
    /// The request headers (`Host`, `DPoP`).
    pub headers: &'a HeaderMap,
    /// The connection: TLS (the `htu` scheme) and its client certificate.
    pub client: &'a ClientInfo,
}

/// Checks every binding the token carries, and the route's requirement.
/// `Ok(Some(nonce))`: send this fresh `DPoP-Nonce` with the answer.
pub async fn check(
    scheme: Scheme,
    token: &str,
    claims: &serde_json::Map<String, Value>,
    issuer: &IssuerConfig,
    policy: &Policy,
    sender: &Sender<'_>,
    revocations: &Revocations,
) -> Result<Option<String>, AuthFailure> {
    let cnf = claims.get("cnf").and_then(Value::as_object);
    let jkt = cnf.and_then(|c| c.get("jkt"));
    let x5t = cnf.and_then(|c| c.get("x5t#S256"));
    if let Some(x5t) = x5t {
        let presented = sender.client.cert.as_ref().map(|c| c.x5t_s256.as_str());
        if x5t.as_str().is_none() || presented != x5t.as_str() {
            return Err(AuthFailure::BindingMismatch {
                why: "the token is bound to a client certificate this connection did not present",
                proof: false,
            });
        }
    }
    let nonce = match (jkt, scheme) {
        (Some(jkt), Scheme::Dpop) => {
            let jkt = jkt
                .as_str()
                .ok_or(AuthFailure::Malformed("cnf.jkt is not a string"))?;
            proof(token, jkt, issuer, sender, revocations).await?
        }
        (Some(_), Scheme::Bearer | Scheme::Cookie) => {
            return Err(AuthFailure::BindingMismatch {
                why: "a DPoP-bound token must be sent with the DPoP scheme and a proof",
                proof: false,
            });
        }
        (None, Scheme::Dpop) => {
            return Err(AuthFailure::BindingMismatch {
                why: "a token sent with the DPoP scheme must be DPoP-bound (cnf.jkt)",
                proof: false,
            });
        }
        (None, Scheme::Bearer | Scheme::Cookie) => None,
    };
    if policy.sender_constrained && jkt.is_none() && x5t.is_none() {
        return Err(AuthFailure::SenderConstraintRequired);
    }
    Ok(nonce)
}

/// The DPoP proof of a token bound to `jkt`: checked, and its `jti` used
/// once across every replica sharing the store.
async fn proof(
    token: &str,
    jkt: &str,
    issuer: &IssuerConfig,
    sender: &Sender<'_>,
    revocations: &Revocations,
) -> Result<Option<String>, AuthFailure> {
    let mut proofs = sender.headers.get_all("dpop").iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err(AuthFailure::InvalidDpopProof(
            "exactly one DPoP header is required",
        ));
    };
    let proof = proof
        .to_str()
        .map_err(|_| AuthFailure::InvalidDpopProof("the DPoP header is not text"))?;
    let htu = request_htu(sender).ok_or(AuthFailure::InvalidDpopProof(
        "the request's URI cannot be checked",
    ))?;
    let now = super::verify::now();
    let expected = Expected {
        method: sender.method.as_str(),
        htu: &htu,
        token,
        now,
        leeway: issuer.leeway,
    };
    let checked = match dpop::check(proof, &issuer.dpop, &expected) {
        Ok(checked) => checked,
        Err(ProofError::Invalid(why)) => return Err(AuthFailure::InvalidDpopProof(why)),
        Err(ProofError::NonceRequired) => return Err(AuthFailure::UseDpopNonce),
    };
    if checked.jkt != jkt {
        return Err(AuthFailure::BindingMismatch {
            why: "the DPoP proof is signed by another key than the token is bound to",
            proof: true,
        });
    }
    // One use per htu and jti within the proof's window (RFC 9449 §11.1).
    let mut once = Vec::with_capacity(htu.len() + 1 + checked.jti.len());
    once.extend_from_slice(htu.as_bytes());
    once.push(b' ');
    once.extend_from_slice(checked.jti.as_bytes());
    let key = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &once);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(key.as_ref());
    match revocations.first_use(&digest, checked.remember).await {
        Ok(true) => {}
        Ok(false) => return Err(AuthFailure::DpopReplay),
        Err(_) => return Err(AuthFailure::RevocationUnavailable),
    }
    Ok((issuer.dpop.nonce && checked.nonce_stale)
        .then(|| dpop::current_nonce(&issuer.dpop.nonce_secret.0, now)))
}

/// The request's own URI as a proof's `htu` must name it: the listener's
/// scheme, the authority from `:authority` or `Host`, the path.
fn request_htu(sender: &Sender<'_>) -> Option<String> {
    let scheme = if sender.client.tls { "https" } else { "http" };
    let authority = match sender.uri.authority() {
        Some(a) => a.as_str(),
        None => sender.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    dpop::normalise_htu(&format!("{scheme}://{authority}{}", sender.uri.path()))
}

/// The nonce to send with a `use_dpop_nonce` refusal.
pub fn nonce_for_refusal(issuer: &IssuerConfig) -> String {
    dpop::current_nonce(&issuer.dpop.nonce_secret.0, super::verify::now())
}
