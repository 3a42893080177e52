//! The body of `POST /revocations` (CONTRACT §5): `{"jti", "expires_at"}`
//! revokes one token; `{"issuer", "sub", "issued_before"}` revokes every
//! token of a subject issued before that time. Each problem is named.

use serde::Deserialize;

use super::Revocation;
use crate::config::IssuerConfig;

/// Longest accepted `jti` or `sub`, in bytes.
const MAX_ID_BYTES: usize = 1024;
/// 9999-12-31T23:59:59Z: the latest `expires_at` or `issued_before`, so no
/// sum of it and a lifetime or grace period can wrap.
pub const MAX_TIME: i64 = 253_402_300_799;

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
            time("expires_at", expires_at as f64)?;
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
            time("issued_before", issued_before)?;
            if let Some(e) = expires_at {
                time("expires_at", e as f64)?;
            }
            // Without an explicit end, keep the entry while a token it covers
            // could still be valid: only bounded when the issuer bounds lifetimes.
            let until = expires_at.or_else(|| {
                config.max_lifetime.map(|max| {
                    let grace = max.as_secs().saturating_add(config.leeway.as_secs());
                    (issued_before.ceil() as i64).saturating_add(grace.min(MAX_TIME as u64) as i64)
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

/// UNIX seconds after the epoch and no later than year 9999.
fn time(field: &str, value: f64) -> Result<(), String> {
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{field}: must be UNIX seconds"));
    }
    if value > MAX_TIME as f64 {
        return Err(format!("{field}: after the year 9999 (at most {MAX_TIME})"));
    }
    Ok(())
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
        assert_eq!(
            parse_str(r#"{"jti":"a","expires_at":9223372036854775807}"#).unwrap_err(),
            "expires_at: after the year 9999 (at most 253402300799)"
        );
        assert!(parse_str(r#"{"jti":"a","expires_at":253402300799}"#).is_ok());
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
