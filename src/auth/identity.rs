//! What the upstream learns about the caller: identity headers set from
//! verified claims (CONTRACT §4). Arrays are joined with a space; objects
//! and values that cannot be a header are left out. Scopes are the ones the
//! policy grants (`policy::granted_scopes`), whatever the claim's shape.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::policy::granted_scopes;
use super::token::claim;

/// The identity headers for the upstream (none on public routes). Shared:
/// a cached token keeps the list rendered for its route (see
/// [`super::Verified::identity_headers`]).
pub type Identity = Arc<[(HeaderName, HeaderValue)]>;

/// Builds the identity headers from `mapping` (header <- dotted claim path).
pub fn headers(
    mapping: &[(HeaderName, String)],
    claims: &Map<String, Value>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(mapping.len());
    for (name, path) in mapping {
        // Scopes are read as the policy reads them (`scope`, then `scp`).
        let text = match path.as_str() {
            "scope" => scopes(claims),
            _ => claim(claims, path).and_then(render),
        };
        // From the String's own buffer: no second copy.
        if let Some(v) = text.and_then(|s| HeaderValue::try_from(s).ok()) {
            out.push((name.clone(), v));
        }
    }
    out
}

/// The granted scopes joined by one space, or `None` when there are none.
fn scopes(claims: &Map<String, Value>) -> Option<String> {
    let mut out = String::new();
    for scope in granted_scopes(claims) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(scope);
    }
    (!out.is_empty()).then_some(out)
}

fn render(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => render(other),
                })
                .collect();
            parts.map(|p| p.join(" "))
        }
        Value::Object(_) | Value::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_headers_and_unsafe_values_are_dropped() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"alice","scp":["a","b"],"org":{"id":7},"evil":"x\r\nInjected: 1","obj":{"a":1}}"#,
        )
        .unwrap();
        let mapping = [
            (HeaderName::from_static("x-auth-subject"), "sub".to_owned()),
            (HeaderName::from_static("x-auth-scopes"), "scope".to_owned()),
            (HeaderName::from_static("x-auth-org"), "org.id".to_owned()),
            (HeaderName::from_static("x-auth-evil"), "evil".to_owned()),
            (HeaderName::from_static("x-auth-obj"), "obj".to_owned()),
        ];
        let h = headers(&mapping, &claims);
        let text: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            text,
            [
                ("x-auth-subject".into(), "alice".into()),
                ("x-auth-scopes".into(), "a b".into()),
                ("x-auth-org".into(), "7".into())
            ]
        );
    }
}
