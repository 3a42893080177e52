//! RFC 7662 token introspection for issuers of opaque tokens (the
//! phantom-token pattern): the gateway asks the issuer about a token and
//! turns the answer into the same verified claims a JWT would give, so the
//! same policy and identity headers apply.
//!
//! One call per token at a time (moka `try_get_with` is single-flight);
//! answers are cached for at most min(`cache_ttl`, the token's `exp`),
//! inactive answers briefly. A failed, slow or nonsensical answer is never
//! cached and never a pass: the request gets 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderValue};
use percent_encoding::NON_ALPHANUMERIC;
use serde_json::{Map, Value};

use crate::auth::AuthFailure;
use crate::auth::token::{BearerToken, Times};
use crate::auth::verify::{self, Verified};
use crate::config::{ConfigProblem, IntrospectionConfig, IssuerConfig};
use crate::jwks::fetch;

/// How long an `active: false` answer is remembered.
const INACTIVE_FOR: Duration = Duration::from_secs(5);
/// Largest answer accepted.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most answers cached per issuer.
const CACHED_ANSWERS: u64 = 100_000;

/// What the issuer said about a token.
#[derive(Debug, Clone)]
enum Answer {
    Active(Arc<Verified>),
    Inactive,
    /// Active, but not acceptable from this issuer (wrong `iss`, a required claim missing).
    Refused(AuthFailure),
}

struct AnswerExpiry {
    cache_ttl: Duration,
}

impl moka::Expiry<[u8; 32], Answer> for AnswerExpiry {
    fn expire_after_create(&self, _: &[u8; 32], answer: &Answer, _: Instant) -> Option<Duration> {
        Some(match answer {
            Answer::Inactive | Answer::Refused(_) => INACTIVE_FOR.min(self.cache_ttl),
            Answer::Active(v) => {
                let left = (v.exp - verify::now()).clamp(0.0, self.cache_ttl.as_secs_f64());
                Duration::from_secs_f64(left)
            }
        })
    }
}

/// Why an introspection call gave no usable answer (logged, never shown to clients).
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("answer is not a JSON object with a boolean \"active\"")]
    Invalid,
    /// `response: jwt` and the answer is not a JWT signed by the issuer's
    /// keys (RFC 9701): never a pass.
    #[error("signed answer refused: {0}")]
    Unsigned(&'static str),
}

/// Introspects opaque tokens for one issuer.
pub struct Introspector {
    issuer: Arc<IssuerConfig>,
    config: IntrospectionConfig,
    client: reqwest::Client,
    authorization: HeaderValue,
    answers: moka::future::Cache<[u8; 32], Answer>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("issuer", &self.issuer.name)
            .field("endpoint", &self.config.endpoint)
            .field("cached", &self.answers.entry_count())
            .finish()
    }
}

impl Introspector {
    /// An introspector for `issuer`, which must have `introspection:`.
    pub fn new(issuer: Arc<IssuerConfig>) -> Result<Option<Self>, ConfigProblem> {
        let Some(config) = issuer.introspection.clone() else {
            return Ok(None);
        };
        let path = format!("issuers.{}.ca_file", issuer.name);
        let client = fetch::http_client(issuer.ca_file.as_deref(), &path, config.timeout)?;
        // RFC 6749 §2.3.1: both parts are form-encoded before base64.
        let credentials = format!(
            "{}:{}",
            form_encode(config.client_id.as_bytes()),
            form_encode(&config.client_secret.0)
        );
        let mut authorization =
            HeaderValue::try_from(format!("Basic {}", STANDARD.encode(credentials))).map_err(
                |_| {
                    ConfigProblem::new(
                        &format!("issuers.{}.introspection.client_id", issuer.name),
                        "cannot be sent in a header",
                        "printable characters",
                    )
                },
            )?;
        authorization.set_sensitive(true);
        let answers = moka::future::Cache::builder()
            .max_capacity(CACHED_ANSWERS)
            .expire_after(AnswerExpiry {
                cache_ttl: config.cache_ttl,
            })
            .build();
        Ok(Some(Self {
            issuer,
            config,
            client,
            authorization,
            answers,
        }))
    }

    /// The issuer this introspector asks.
    pub fn issuer(&self) -> &Arc<IssuerConfig> {
        &self.issuer
    }

    /// The token's verified claims, or why it is refused.
    pub async fn introspect(
        &self,
        token: BearerToken<'_>,
        digest: [u8; 32],
        keys: Option<&crate::jwks::KeyCache>,
    ) -> Result<Arc<Verified>, AuthFailure> {
        let answer = self
            .answers
            .try_get_with(digest, self.call(token, digest, keys))
            .await
            .map_err(|e| {
                tracing::warn!(issuer = %self.issuer.name, error = %e, "token introspection failed");
                AuthFailure::IntrospectionUnavailable
            })?;
        match answer {
            Answer::Inactive => Err(AuthFailure::Inactive),
            Answer::Refused(failure) => Err(failure),
            Answer::Active(verified) => {
                // Checked on every use: a cached answer must not outlive the token.
                verify::check_times(
                    Times::of(&verified.claims),
                    &self.issuer,
                    verify::now(),
                    false,
                )?;
                Ok(verified)
            }
        }
    }

    async fn call(
        &self,
        token: BearerToken<'_>,
        digest: [u8; 32],
        keys: Option<&crate::jwks::KeyCache>,
    ) -> Result<Answer, CallError> {
        let accept = match self.config.signed {
            true => "application/token-introspection+jwt",
            false => "application/json",
        };
        let body = format!(
            "token={}&token_type_hint=access_token",
            form_encode(token.0.as_bytes())
        );
        let mut response = self
            .client
            .post(&self.config.endpoint)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, accept)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Transport(fetch::describe(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(CallError::Status(response.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CallError::Transport(fetch::describe(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CallError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        let (mut claims, phantom) = match self.config.signed {
            false => (
                serde_json::from_slice(&bytes).map_err(|_| CallError::Invalid)?,
                None,
            ),
            true => {
                let jwt = String::from_utf8(bytes).map_err(|_| CallError::Unsigned("not text"))?;
                let jwt = jwt.trim().to_owned();
                let claims = self.signed_claims(&jwt, keys).await?;
                (claims, Some(Arc::<str>::from(jwt)))
            }
        };
        let active = claims.remove("active").and_then(|a| a.as_bool());
        match active {
            None => Err(CallError::Invalid),
            Some(false) => Ok(Answer::Inactive),
            Some(true) => Ok(self.active(claims, digest, phantom)),
        }
    }

    /// The `token_introspection` claims of an RFC 9701 answer, once its
    /// signature by the issuer's keys, its `typ` and its `iss` are checked.
    async fn signed_claims(
        &self,
        jwt: &str,
        keys: Option<&crate::jwks::KeyCache>,
    ) -> Result<Map<String, Value>, CallError> {
        let keys = keys.ok_or(CallError::Unsigned("the issuer has no keys"))?;
        let jws = crate::auth::token::parse(jwt).map_err(|_| CallError::Unsigned("not a JWS"))?;
        // The payload's rules a token's get (time claims are numbers).
        jws.early().map_err(|_| CallError::Unsigned("not a JWS"))?;
        let typ = jws.header.typ.as_deref().map(crate::config::normalise_typ);
        if typ.as_deref() != Some("token-introspection+jwt") {
            return Err(CallError::Unsigned("typ is not token-introspection+jwt"));
        }
        let alg = jws
            .header
            .alg
            .filter(|a| self.issuer.algorithms.contains(a))
            .ok_or(CallError::Unsigned("alg is not one of the issuer's"))?;
        let key = keys
            .key_for(jws.header.kid.as_deref(), alg)
            .await
            .map_err(|_| CallError::Unsigned("no key of the issuer has its kid"))?;
        if !key.verifies_decoded(
            alg,
            jws.signing_input.as_bytes(),
            None,
            jws.signature_b64,
            &jws.signature,
        ) {
            return Err(CallError::Unsigned("bad signature"));
        }
        let mut claims = jws.claims().map_err(|_| CallError::Unsigned("not a JWS"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.issuer.as_str()) {
            return Err(CallError::Unsigned("iss is not the issuer"));
        }
        match claims.remove("token_introspection") {
            Some(Value::Object(inner)) => Ok(inner),
            _ => Err(CallError::Invalid),
        }
    }

    /// An active answer, checked like a JWT's claims where it says enough.
    fn active(
        &self,
        claims: Map<String, Value>,
        digest: [u8; 32],
        phantom: Option<Arc<str>>,
    ) -> Answer {
        // RFC 7662 makes `iss` optional; when present it must be ours.
        let iss = claims.get("iss").map(|v| v.as_str());
        if iss.is_some_and(|i| i != Some(self.issuer.issuer.as_str())) {
            return Answer::Refused(AuthFailure::WrongIssuer);
        }
        if let Err(failure) = verify::check_required(&claims, &self.issuer) {
            return Answer::Refused(failure);
        }
        let exp = Times::of(&claims).exp.unwrap_or(f64::INFINITY);
        Answer::Active(Arc::new(Verified {
            issuer: self.issuer.name.as_str().into(),
            kid: None,
            key_id: [0; 32],
            claims,
            exp,
            digest,
            identity: Default::default(),
            phantom,
        }))
    }
}

fn form_encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_everything_but_alphanumerics() {
        assert_eq!(form_encode(b"a b&c=d:e"), "a%20b%26c%3Dd%3Ae");
    }
}
