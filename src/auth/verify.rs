//! Verifies a JWT against one of a route's issuers, cheapest checks first:
//! shape, issuer, algorithm, type, time claims, key, then the signature
//! (jsonwebtoken on aws-lc-rs), then the claims that need trusting, which
//! are only then built (`token.rs`).
//! Route policy (audience, scopes, claims) is `policy.rs`.

use std::sync::{Arc, OnceLock};

use http::HeaderName;
use serde_json::{Map, Value};

use super::failure::AuthFailure;
use super::identity::{self, Identity};
use super::token::{self, BearerToken, Times};
use crate::config::normalise_typ;
use crate::jwks::KeyCache;

/// Claims that passed every issuer-level check.
#[derive(Debug)]
pub struct Verified {
    /// Name of the issuer that vouched for the token.
    pub issuer: Arc<str>,
    /// `kid` used, rechecked on cache hits so a removed key stops its tokens.
    pub kid: Option<String>,
    /// The verifying key's id, rechecked on cache hits so a key replaced
    /// under the same `kid` stops its tokens too.
    pub key_id: [u8; 32],
    /// All claims.
    pub claims: Map<String, Value>,
    /// `exp`, seconds since the epoch.
    pub exp: f64,
    /// SHA-256 of the token (`token_fp` on cache hits without rehashing).
    pub digest: [u8; 32],
    /// The identity headers last rendered from these claims, and for which
    /// route: a cached token on the same route reuses them.
    pub identity: OnceLock<(RouteKey, Identity)>,
    /// The authorization server's signed JWT an introspection answered with
    /// (RFC 9701), sent upstream by `forward.authorization: jwt`.
    pub phantom: Option<Arc<str>>,
}

/// One route of one authenticator (one runtime): claims can outlive a
/// reload (an introspector and its answers are kept when its issuer is
/// unchanged), and route number N of the next runtime is another route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey {
    /// The authenticator's own number.
    pub authenticator: u64,
    /// The route's position in its config.
    pub index: usize,
}

impl Verified {
    /// Whether identity headers were rendered for `route`:
    /// [`Authenticator::admit`](super::Authenticator::admit) renders them
    /// only for a request it lets through, so these claims passed that
    /// route's policy.
    pub fn admitted_on(&self, route: RouteKey) -> bool {
        self.identity.get().is_some_and(|(r, _)| *r == route)
    }

    /// The identity headers for `route` (whose mapping is `mapping`):
    /// rendered once per cached token and route, not per request.
    pub fn identity_headers(&self, route: RouteKey, mapping: &[(HeaderName, String)]) -> Identity {
        match self.identity.get() {
            Some((r, headers)) if *r == route => headers.clone(),
            _ => {
                let headers: Identity = identity::headers(mapping, &self.claims).into();
                let _ = self.identity.set((route, headers.clone()));
                headers
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Verifies `token` against the issuer its `iss` names among `issuers`.
pub async fn verify(
    token: BearerToken<'_>,
    (digest, signing_sha256): ([u8; 32], Option<aws_lc_rs::digest::Digest>),
    issuers: &[Arc<KeyCache>],
    now: f64,
) -> Result<Verified, AuthFailure> {
    let jws = token::parse(token.0)?;
    let early = jws.early()?;
    let keys = issuers
        .iter()
        .find(|k| Some(k.issuer().issuer.as_str()) == early.iss.as_deref())
        .ok_or(AuthFailure::WrongIssuer)?;
    let issuer = keys.issuer();
    let alg = jws
        .header
        .alg
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or(AuthFailure::AlgorithmNotAllowed)?;
    if let Some(required) = &issuer.token_type {
        let typ = jws.header.typ.as_deref().map(normalise_typ);
        if typ.as_deref() != Some(required.as_str()) {
            return Err(AuthFailure::WrongType);
        }
    }
    let exp = check_times(early.times, issuer, now, true)?.unwrap_or(f64::INFINITY);
    let key = keys.key_for(jws.header.kid.as_deref(), alg).await?;
    if !key.fits(alg) {
        return Err(AuthFailure::AlgorithmNotAllowed);
    }
    // The digest is of the token's bytes before its last `.`: the signing
    // input exactly when the token has three parts.
    let signing_sha256 = signing_sha256
        .as_ref()
        .filter(|_| jws.signing_input.len() + 1 + jws.signature_b64.len() == token.0.len());
    if !key.verifies_decoded(
        alg,
        jws.signing_input.as_bytes(),
        signing_sha256,
        jws.signature_b64,
        &jws.signature,
    ) {
        return Err(AuthFailure::BadSignature);
    }
    let claims = jws.claims()?;
    check_required(&claims, issuer)?;
    Ok(Verified {
        issuer: issuer.name.as_str().into(),
        kid: jws.header.kid,
        key_id: key.id,
        claims,
        exp,
        digest,
        identity: OnceLock::new(),
        phantom: None,
    })
}

/// exp (required for JWTs; optional in an introspection answer), nbf,
/// iat with leeway; `max_lifetime`. Returns `exp`.
pub(crate) fn check_times(
    Times { exp, nbf, iat }: Times,
    issuer: &crate::config::IssuerConfig,
    now: f64,
    exp_required: bool,
) -> Result<Option<f64>, AuthFailure> {
    let leeway = issuer.leeway.as_secs_f64();
    if exp.is_none() && exp_required {
        return Err(AuthFailure::Malformed("token has no exp claim"));
    }
    if exp.is_some_and(|exp| now > exp + leeway) {
        return Err(AuthFailure::Expired);
    }
    if let Some(nbf) = nbf {
        if nbf > now + leeway {
            return Err(AuthFailure::NotYetValid("token is not valid yet (nbf)"));
        }
    }
    if let Some(iat) = iat {
        if iat > now + leeway {
            return Err(AuthFailure::NotYetValid(
                "token was issued in the future (iat)",
            ));
        }
    }
    if let Some(max) = issuer.max_lifetime {
        let (Some(exp), Some(iat)) = (exp, iat) else {
            return Err(AuthFailure::Malformed(
                "token lacks exp or iat, which this issuer's max_lifetime needs",
            ));
        };
        if exp - iat > max.as_secs_f64() {
            return Err(AuthFailure::LifetimeTooLong);
        }
    }
    Ok(exp)
}

/// Every claim the issuer requires is present and not null.
pub(crate) fn check_required(
    claims: &Map<String, Value>,
    issuer: &crate::config::IssuerConfig,
) -> Result<(), AuthFailure> {
    for claim in &issuer.required_claims {
        if claims.get(claim).is_none_or(Value::is_null) {
            return Err(AuthFailure::Malformed(
                "token lacks a claim the issuer requires",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_rendered_for_the_route_that_asks() {
        let verified = Verified {
            issuer: "idp".into(),
            kid: None,
            key_id: [0; 32],
            claims: serde_json::from_str(r#"{"sub":"alice","tenant":"t1"}"#).unwrap(),
            exp: f64::INFINITY,
            digest: [0; 32],
            identity: OnceLock::new(),
            phantom: None,
        };
        let subject = [(HeaderName::from_static("x-auth-subject"), "sub".to_owned())];
        let tenant = [(
            HeaderName::from_static("x-auth-tenant"),
            "tenant".to_owned(),
        )];
        let route = |index| RouteKey {
            authenticator: 1,
            index,
        };
        for _ in 0..2 {
            let on_0 = verified.identity_headers(route(0), &subject);
            assert_eq!(on_0.len(), 1);
            assert_eq!(
                (on_0[0].0.as_str(), on_0[0].1.as_bytes()),
                ("x-auth-subject", &b"alice"[..])
            );
            let on_1 = verified.identity_headers(route(1), &tenant);
            assert_eq!(on_1.len(), 1);
            assert_eq!(
                (on_1[0].0.as_str(), on_1[0].1.as_bytes()),
                ("x-auth-tenant", &b"t1"[..])
            );
        }
        let first = verified.identity_headers(route(0), &subject);
        assert!(
            Arc::ptr_eq(&first, &verified.identity_headers(route(0), &subject)),
            "memoised"
        );
    }
}
