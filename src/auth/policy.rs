//! A route's policy over verified claims: audience (any-of), client,
//! scopes and exact-match claim constraints. Case-sensitive throughout.

use serde_json::{Map, Value};

use super::failure::AuthFailure;
use super::token::claim;
use crate::config::{ClaimValue, IssuerConfig, Policy};
use crate::routing::Params;

/// Checks `claims` against `policy`; `issuer` supplies default audiences.
pub fn check(
    policy: &Policy,
    issuer: &IssuerConfig,
    claims: &Map<String, Value>,
    params: &Params<'_>,
) -> Result<(), AuthFailure> {
    let audiences = policy.audiences.as_deref().unwrap_or(&issuer.audiences);
    if !audiences.is_empty()
        && !strings(claims.get("aud")).any(|a| audiences.iter().any(|x| x == a))
    {
        return Err(AuthFailure::WrongAudience);
    }
    if let Some(clients) = &policy.clients {
        let client = ["azp", "client_id"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str));
        if !client.is_some_and(|c| clients.iter().any(|x| x == c)) {
            return Err(AuthFailure::ClaimMismatch(
                "token client is not allowed on this route",
            ));
        }
    }
    if !policy.scopes_all.is_empty() || !policy.scopes_any.is_empty() {
        let has = |s: &String| granted_scopes(claims).any(|g| g == s);
        if !policy.scopes_all.iter().all(has) {
            return Err(AuthFailure::InsufficientScope {
                scope: policy.scopes_all.join(" "),
            });
        }
        if !policy.scopes_any.is_empty() && !policy.scopes_any.iter().any(has) {
            return Err(AuthFailure::InsufficientScope {
                scope: policy.scopes_any.join(" "),
            });
        }
    }
    for (name, expected) in &policy.claims {
        let expected = match expected {
            ClaimValue::Literal(v) => v.as_str(),
            ClaimValue::PathParam(p) => params.get(p).unwrap_or("\u{0}"),
        };
        if !strings(claim(claims, name)).any(|v| v == expected) {
            return Err(AuthFailure::ClaimMismatch(
                "token claims do not match this route's constraints",
            ));
        }
    }
    Ok(())
}

/// `scope` (a space-separated string, RFC 8693 §4.2 and RFC 9068 §2.2.3;
/// an array there is not read) and `scp` (an array, or a string). Only
/// RFC 6749 §3.3 scope tokens count: a "scope" holding a tab or a quote
/// could be split differently by an upstream. The identity headers read
/// scopes through this function too, so an upstream never sees a scope
/// the policy did not grant.
pub fn granted_scopes(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .into_iter()
        .flat_map(|s| s.split(' '));
    let (scp_text, scp_list) = match claims.get("scp") {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    scope
        .chain(scp_text.into_iter().flat_map(|s| s.split(' ')))
        .chain(scp_list.into_iter().flatten())
        .filter(|s| !s.is_empty() && s.bytes().all(is_scope_char))
}

/// RFC 6749 §3.3 `NQCHAR`: `%x21 / %x23-5B / %x5D-7E`.
fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// A claim as strings: a string, or each string of an array.
fn strings(value: Option<&Value>) -> impl Iterator<Item = &str> {
    let (one, many) = match value {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}
