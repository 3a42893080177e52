//! The body of `POST /revocations` (CONTRACT §5): `{"jti", "expires_at"}`
//! revokes one token; `{"issuer", "sub", "issued_before"}` revokes every
//! token of a subject issued before that time. Each problem is named.

use serde::Deserialize;

use super::Revocation;
use crate::config::IssuerConfig;

/// Longest accepted `jti` or `sub`, in bytes.
const MAX_ID_BYTES: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    jti: Option<String>,
    expires_at: Option<i64>,
    issuer: Option<String>,
    sub: Option<String>,
    issued_before: Option<f64>,
}

/// Parses a request body into a revocation, or says what is wrong.
pub fn parse(bytes: &[u8], issuers: &[std::sync::Arc<IssuerConfig>]) -> Result<Revocation, String> {
    let body: Body = serde_json::from_slice(bytes).map_err(|e| format!("body: {e}"))?;
    match body {
        Body {
            jti: Some(jti),
            expires_at,
            issuer: None,
            sub: None,
            issued_before: None,
        } => {
            id("jti", &jti)?;
            let expires_at =
                expires_at.ok_or("expires_at: missing (the token's exp, UNIX seconds)")?;
            if expires_at <= 0 {
                return Err("expires_at: must be UNIX seconds".into());
            }
            Ok(Revocation::Token { jti, expires_at })
        }
        Body {
            jti: None,
            expires_at,
            issuer,
            sub,
            issued_before,
        } if issuer.is_some() || sub.is_some() || issued_before.is_some() => {
            let issuer = issuer.ok_or("issuer: missing (an issuer name from the config)")?;
            let config = issuers
                .iter()
                .find(|i| i.name == issuer)
                .ok_or_else(|| format!("issuer: unknown issuer {issuer:?}"))?;
            let sub = sub.ok_or("sub: missing")?;
            id("sub", &sub)?;
            let issued_before = issued_before.ok_or("issued_before: missing (UNIX seconds)")?;
            if !(issued_before.is_finite() && issued_before > 0.0) {
                return Err("issued_before: must be UNIX seconds".into());
            }
            // Without an explicit end, keep the entry while a token it covers
            // could still be valid: only bounded when the issuer bounds lifetimes.
            let until = expires_at.or_else(|| {
                config.max_lifetime.map(|max| {
                    issued_before.ceil() as i64
                        + max.as_secs() as i64
                        + config.leeway.as_secs() as i64
                })
            });
            Ok(Revocation::Subject {
                issuer,
                sub,
                issued_before,
                until,
            })
        }
        Body { jti: Some(_), .. } => Err(
            "body: give either {jti, expires_at} or {issuer, sub, issued_before}, not both".into(),
        ),
        Body { .. } => {
            Err("body: give either {jti, expires_at} or {issuer, sub, issued_before}".into())
        }
    }
}

fn id(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field}: empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(format!("{field}: longer than {MAX_ID_BYTES} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Revocation, String> {
        parse(s.as_bytes(), &[])
    }

    #[test]
    fn a_jti_body_needs_expires_at() {
        assert_eq!(
            parse_str(r#"{"jti":"a","expires_at":1800000000}"#).unwrap(),
            Revocation::Token {
                jti: "a".into(),
                expires_at: 1_800_000_000
            }
        );
        assert_eq!(
            parse_str(r#"{"jti":"a"}"#).unwrap_err(),
            "expires_at: missing (the token's exp, UNIX seconds)"
        );
        assert_eq!(parse_str(r#"{"jti":""}"#).unwrap_err(), "jti: empty");
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(
            parse_str("{")
                .unwrap_err()
                .starts_with("body: EOF while parsing an object")
        );
        assert!(
            parse_str(r#"{"jti":"a","expires_at":1,"color":"red"}"#)
                .unwrap_err()
                .starts_with("body: unknown field `color`")
        );
        assert!(
            parse_str(r#"{"jti":"a","expires_at":"soon"}"#)
                .unwrap_err()
                .starts_with("body: invalid type: string \"soon\"")
        );
        assert_eq!(
            parse_str("{}").unwrap_err(),
            "body: give either {jti, expires_at} or {issuer, sub, issued_before}"
        );
        assert_eq!(
            parse_str(r#"{"sub":"alice","issued_before":1}"#).unwrap_err(),
            "issuer: missing (an issuer name from the config)"
        );
        assert_eq!(
            parse_str(r#"{"issuer":"corp","sub":"alice","issued_before":1}"#).unwrap_err(),
            "issuer: unknown issuer \"corp\""
        );
    }
}
