//! `AuthFailure`: one variant per contract reason (CONTRACT §5), each with
//! its status, `WWW-Authenticate` challenge and a description a client
//! developer can act on. Nothing here ever includes token bytes.

use std::time::Duration;

use http::StatusCode;

use crate::response::Refusal;

/// Why a request on a protected route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No credentials (or another scheme than Bearer).
    #[error("missing_token")]
    MissingToken,
    /// Several Authorization headers, a token in the query, a broken header.
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// Not a well-formed JWS compact token (or not a JWT we can check).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the key.
    #[error("bad_signature")]
    BadSignature,
    /// No key with the token's kid (after at most one refresh).
    #[error("unknown_kid")]
    UnknownKid,
    /// No API key of the route's issuers has this digest.
    #[error("unknown_key")]
    UnknownKey,
    /// `alg` outside the issuer's list, or not fitting the key.
    #[error("algorithm_not_allowed")]
    AlgorithmNotAllowed,
    /// `exp` passed (beyond leeway).
    #[error("expired")]
    Expired,
    /// `nbf` in the future, or `iat` in the future (beyond leeway).
    #[error("not_yet_valid: {0}")]
    NotYetValid(&'static str),
    /// `iss` is not one of the route's issuers.
    #[error("wrong_issuer")]
    WrongIssuer,
    /// `aud` holds none of the accepted audiences.
    #[error("wrong_audience")]
    WrongAudience,
    /// `typ` differs from the issuer's `token_type`.
    #[error("wrong_type")]
    WrongType,
    /// `exp - iat` beyond `max_lifetime`.
    #[error("lifetime_too_long")]
    LifetimeTooLong,
    /// On the deny list.
    #[error("revoked")]
    Revoked,
    /// Introspection said `active: false`.
    #[error("inactive")]
    Inactive,
    /// A required scope is missing; `scope` lists what the route needs.
    #[error("insufficient_scope")]
    InsufficientScope {
        /// Space-separated scopes to request.
        scope: String,
    },
    /// A claim constraint failed (tenant, client, a required claim value).
    #[error("claim_mismatch: {0}")]
    ClaimMismatch(&'static str),
    /// Keys for the issuer could not be obtained and none are cached.
    #[error("keys_unavailable")]
    KeysUnavailable {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The issuer's introspection endpoint is down, slow or answering
    /// nonsense; never a pass. Counted as `keys_unavailable`: the issuer
    /// cannot vouch for the token right now.
    #[error("keys_unavailable: introspection")]
    IntrospectionUnavailable,
    /// The shared revocation store is down and `on_store_error: deny`
    /// (an extension of CONTRACT §5's reasons: `revocation_unavailable`).
    #[error("revocation_unavailable")]
    RevocationUnavailable,
    /// A DPoP proof failed a check of RFC 9449 §4.3 (CONTRACT §8.4).
    #[error("invalid_dpop_proof: {0}")]
    InvalidDpopProof(&'static str),
    /// A DPoP proof's `jti` was already used within its window.
    #[error("dpop_replay")]
    DpopReplay,
    /// The proof lacks a valid server nonce; the answer carries one.
    #[error("use_dpop_nonce")]
    UseDpopNonce,
    /// The token's binding does not hold: a bound token sent as Bearer, a
    /// DPoP token without `cnf.jkt`, a proof key or client certificate
    /// other than the one bound (`proof`: the proof is at fault).
    #[error("binding_mismatch: {why}")]
    BindingMismatch {
        /// What does not match.
        why: &'static str,
        /// True when the proof (not the token) is at fault.
        proof: bool,
    },
    /// The route takes sender-constrained tokens only.
    #[error("sender_constraint_required")]
    SenderConstraintRequired,
    /// An unsafe request authenticated by a cookie without an allowed
    /// `Origin` (CONTRACT §8.7).
    #[error("csrf")]
    Csrf,
}

/// Retry-After for introspection and revocation-store outages.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(5);

impl AuthFailure {
    /// The metric label (CONTRACT §5 `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::InvalidRequest(_) => "invalid_request",
            AuthFailure::Malformed(_) => "malformed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::UnknownKid => "unknown_kid",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid(_) => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::WrongType => "wrong_type",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Inactive => "inactive",
            AuthFailure::InsufficientScope { .. } => "insufficient_scope",
            AuthFailure::ClaimMismatch(_) => "claim_mismatch",
            AuthFailure::KeysUnavailable { .. } | AuthFailure::IntrospectionUnavailable => {
                "keys_unavailable"
            }
            AuthFailure::RevocationUnavailable => "revocation_unavailable",
            AuthFailure::InvalidDpopProof(_) => "invalid_dpop_proof",
            AuthFailure::DpopReplay => "dpop_replay",
            AuthFailure::UseDpopNonce => "use_dpop_nonce",
            AuthFailure::BindingMismatch { .. } => "binding_mismatch",
            AuthFailure::SenderConstraintRequired => "sender_constraint_required",
            AuthFailure::Csrf => "csrf",
        }
    }

    /// The HTTP status (CONTRACT §3).
    pub fn status(&self) -> StatusCode {
        match self {
            AuthFailure::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthFailure::InsufficientScope { .. }
            | AuthFailure::ClaimMismatch(_)
            | AuthFailure::Csrf => StatusCode::FORBIDDEN,
            AuthFailure::KeysUnavailable { .. }
            | AuthFailure::IntrospectionUnavailable
            | AuthFailure::RevocationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthFailure::MissingToken
            | AuthFailure::Malformed(_)
            | AuthFailure::BadSignature
            | AuthFailure::UnknownKid
            | AuthFailure::UnknownKey
            | AuthFailure::AlgorithmNotAllowed
            | AuthFailure::Expired
            | AuthFailure::NotYetValid(_)
            | AuthFailure::WrongIssuer
            | AuthFailure::WrongAudience
            | AuthFailure::WrongType
            | AuthFailure::LifetimeTooLong
            | AuthFailure::Revoked
            | AuthFailure::Inactive
            | AuthFailure::InvalidDpopProof(_)
            | AuthFailure::DpopReplay
            | AuthFailure::UseDpopNonce
            | AuthFailure::BindingMismatch { .. }
            | AuthFailure::SenderConstraintRequired => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 `error` code, if the challenge carries one.
    fn error_code(&self) -> Option<&'static str> {
        match self {
            AuthFailure::MissingToken
            | AuthFailure::Csrf
            | AuthFailure::KeysUnavailable { .. }
            | AuthFailure::IntrospectionUnavailable
            | AuthFailure::RevocationUnavailable => None,
            AuthFailure::InvalidRequest(_) => Some("invalid_request"),
            AuthFailure::InsufficientScope { .. } | AuthFailure::ClaimMismatch(_) => {
                Some("insufficient_scope")
            }
            AuthFailure::Malformed(_)
            | AuthFailure::BadSignature
            | AuthFailure::UnknownKid
            | AuthFailure::UnknownKey
            | AuthFailure::AlgorithmNotAllowed
            | AuthFailure::Expired
            | AuthFailure::NotYetValid(_)
            | AuthFailure::WrongIssuer
            | AuthFailure::WrongAudience
            | AuthFailure::WrongType
            | AuthFailure::LifetimeTooLong
            | AuthFailure::Revoked
            | AuthFailure::Inactive
            | AuthFailure::BindingMismatch { proof: false, .. }
            | AuthFailure::SenderConstraintRequired => Some("invalid_token"),
            AuthFailure::InvalidDpopProof(_)
            | AuthFailure::DpopReplay
            | AuthFailure::BindingMismatch { proof: true, .. } => Some("invalid_dpop_proof"),
            AuthFailure::UseDpopNonce => Some("use_dpop_nonce"),
        }
    }

    /// True for failures of the DPoP proof itself, answered with a DPoP
    /// challenge carrying the error (RFC 9449 §7.1).
    fn is_proof_error(&self) -> bool {
        matches!(
            self,
            AuthFailure::InvalidDpopProof(_)
                | AuthFailure::DpopReplay
                | AuthFailure::UseDpopNonce
                | AuthFailure::BindingMismatch { proof: true, .. }
        )
    }

    /// What failed, in words a client developer can act on.
    pub fn description(&self) -> &str {
        match self {
            AuthFailure::MissingToken => "a bearer token is required",
            AuthFailure::InvalidRequest(what) => what,
            AuthFailure::Malformed(what) => what,
            AuthFailure::BadSignature => "token signature is invalid",
            AuthFailure::UnknownKid => "token signing key is not known to the issuer",
            AuthFailure::UnknownKey => "the API key is not known",
            AuthFailure::AlgorithmNotAllowed => "token algorithm is not allowed for this issuer",
            AuthFailure::Expired => "token expired",
            AuthFailure::NotYetValid(what) => what,
            AuthFailure::WrongIssuer => "token issuer is not accepted on this route",
            AuthFailure::WrongAudience => "token audience is not accepted on this route",
            AuthFailure::WrongType => "token type (typ header) is not accepted",
            AuthFailure::LifetimeTooLong => "token lifetime exceeds the issuer's maximum",
            AuthFailure::Revoked => "token has been revoked",
            AuthFailure::Inactive => "token is not active",
            AuthFailure::InsufficientScope { .. } => "token lacks a required scope",
            AuthFailure::ClaimMismatch(what) => what,
            AuthFailure::KeysUnavailable { .. } => "the issuer's signing keys are unavailable",
            AuthFailure::IntrospectionUnavailable => {
                "the issuer's token introspection is unavailable"
            }
            AuthFailure::RevocationUnavailable => "the revocation list is unavailable",
            AuthFailure::InvalidDpopProof(what) => what,
            AuthFailure::DpopReplay => "the DPoP proof was already used",
            AuthFailure::UseDpopNonce => "a DPoP nonce from this server is required",
            AuthFailure::BindingMismatch { why, .. } => why,
            AuthFailure::SenderConstraintRequired => {
                "this route takes only sender-constrained tokens (DPoP or a client certificate)"
            }
            AuthFailure::Csrf => {
                "a cookie-authenticated request with this method needs an allowed Origin"
            }
        }
    }

    /// For 503 answers: how long a client should wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthFailure::KeysUnavailable { retry_after } => Some(*retry_after),
            AuthFailure::IntrospectionUnavailable | AuthFailure::RevocationUnavailable => {
                Some(RETRY_UNAVAILABLE)
            }
            AuthFailure::MissingToken
            | AuthFailure::InvalidRequest(_)
            | AuthFailure::Malformed(_)
            | AuthFailure::BadSignature
            | AuthFailure::UnknownKid
            | AuthFailure::UnknownKey
            | AuthFailure::AlgorithmNotAllowed
            | AuthFailure::Expired
            | AuthFailure::NotYetValid(_)
            | AuthFailure::WrongIssuer
            | AuthFailure::WrongAudience
            | AuthFailure::WrongType
            | AuthFailure::LifetimeTooLong
            | AuthFailure::Revoked
            | AuthFailure::Inactive
            | AuthFailure::InsufficientScope { .. }
            | AuthFailure::ClaimMismatch(_)
            | AuthFailure::InvalidDpopProof(_)
            | AuthFailure::DpopReplay
            | AuthFailure::UseDpopNonce
            | AuthFailure::BindingMismatch { .. }
            | AuthFailure::SenderConstraintRequired
            | AuthFailure::Csrf => None,
        }
    }

    /// The `WWW-Authenticate` value, if the answer carries one: the Bearer
    /// challenge, and on a route that announces DPoP (`dpop_algs`) a DPoP
    /// challenge with `algs` too. A proof failure is a DPoP challenge with
    /// the error alone.
    pub fn challenge(&self, dpop_algs: Option<&str>, metadata: Option<&str>) -> Option<String> {
        let dpop = |error: bool| {
            let mut v = String::from("DPoP");
            let mut sep = " ";
            if error {
                if let Some(code) = self.error_code() {
                    v.push_str(&format!(
                        r#" error="{code}", error_description="{}""#,
                        self.description()
                    ));
                    sep = ", ";
                }
            }
            if let Some(algs) = dpop_algs {
                v.push_str(&format!(r#"{sep}algs="{algs}""#));
            }
            v
        };
        if self.is_proof_error() {
            return Some(dpop(true));
        }
        let bearer = self.bearer(metadata)?;
        Some(match dpop_algs {
            None => bearer,
            Some(_) => format!("{bearer}, {}", dpop(false)),
        })
    }

    /// The Bearer `WWW-Authenticate` value, if the answer carries one.
    pub fn www_authenticate(&self) -> Option<String> {
        self.bearer(None)
    }

    /// The Bearer challenge, naming the route's RFC 9728 `metadata` URL
    /// (§5.1: where the client finds which authorization server to ask).
    fn bearer(&self, metadata: Option<&str>) -> Option<String> {
        if self.retry_after().is_some() || matches!(self, AuthFailure::Csrf) {
            return None;
        }
        let mut v = String::from(r#"Bearer realm="authgate""#);
        if let Some(url) = metadata {
            v.push_str(r#", resource_metadata=""#);
            v.push_str(url);
            v.push('"');
        }
        if let Some(code) = self.error_code() {
            v.push_str(r#", error=""#);
            v.push_str(code);
            v.push('"');
            if !matches!(self, AuthFailure::MissingToken) {
                v.push_str(r#", error_description=""#);
                v.push_str(self.description());
                v.push('"');
            }
        }
        if let AuthFailure::InsufficientScope { scope } = self {
            v.push_str(r#", scope=""#);
            v.push_str(scope);
            v.push('"');
        }
        Some(v)
    }

    /// This failure as a refusal on a route that announces DPoP with
    /// `dpop_algs`; `nonce` is sent as `DPoP-Nonce`.
    pub fn refusal_on(
        &self,
        dpop_algs: Option<&str>,
        metadata: Option<&str>,
        nonce: Option<String>,
    ) -> Refusal<'_> {
        let mut refusal = self.refusal_with(self.challenge(dpop_algs, metadata));
        refusal.dpop_nonce = nonce;
        refusal
    }

    /// This failure as a refusal for `response::refuse` to render.
    pub fn refusal(&self) -> Refusal<'_> {
        self.refusal_with(self.www_authenticate())
    }

    fn refusal_with(&self, challenge: Option<String>) -> Refusal<'_> {
        let error = match self.error_code() {
            Some(code) => code,
            None if matches!(self, AuthFailure::Csrf) => "csrf",
            None if self.retry_after().is_some() => "temporarily_unavailable",
            None => "unauthorized",
        };
        Refusal {
            status: self.status(),
            error,
            description: self.description(),
            challenge,
            retry_after: self.retry_after().map(|r| r.as_secs().max(1)),
            grpc_status: None,
            dpop_nonce: None,
        }
    }
}

impl From<crate::jwks::KeyError> for AuthFailure {
    fn from(e: crate::jwks::KeyError) -> Self {
        use crate::jwks::KeyError;
        match e {
            KeyError::UnknownKid => AuthFailure::UnknownKid,
            KeyError::WrongFamily => AuthFailure::AlgorithmNotAllowed,
            KeyError::Unavailable { retry_after } => AuthFailure::KeysUnavailable { retry_after },
        }
    }
}

impl From<crate::revocation::Refused> for AuthFailure {
    fn from(e: crate::revocation::Refused) -> Self {
        match e {
            crate::revocation::Refused::Revoked => AuthFailure::Revoked,
            crate::revocation::Refused::Unavailable => AuthFailure::RevocationUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            AuthFailure::MissingToken.www_authenticate().unwrap(),
            r#"Bearer realm="authgate""#
        );
        assert_eq!(
            AuthFailure::Expired.www_authenticate().unwrap(),
            r#"Bearer realm="authgate", error="invalid_token", error_description="token expired""#
        );
        assert_eq!(
            AuthFailure::InsufficientScope {
                scope: "orders:read orders:write".into()
            }
            .www_authenticate()
            .unwrap(),
            r#"Bearer realm="authgate", error="insufficient_scope", error_description="token lacks a required scope", scope="orders:read orders:write""#
        );
        assert_eq!(
            AuthFailure::InvalidRequest("several Authorization headers").status(),
            StatusCode::BAD_REQUEST
        );
        assert!(
            AuthFailure::KeysUnavailable {
                retry_after: Duration::from_secs(5)
            }
            .www_authenticate()
            .is_none()
        );
    }
}
