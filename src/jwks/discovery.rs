//! OIDC discovery: `{issuer}/.well-known/openid-configuration` names the
//! JWKS URL. The document's `issuer` must equal the configured one exactly
//! (OIDC Discovery §4.3), or its keys are never used.

use serde::Deserialize;

use super::fetch::{FetchError, Fetcher};

/// The discovery URL for `issuer`.
pub fn url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches the discovery document and returns its `jwks_uri`.
pub async fn jwks_uri(fetcher: &Fetcher, issuer: &str) -> Result<String, FetchError> {
    let doc = fetcher.get_json(&url(issuer)).await?;
    parse(&doc.body, issuer)
}

/// The `jwks_uri` of a discovery document for `issuer`.
pub fn parse(body: &[u8], issuer: &str) -> Result<String, FetchError> {
    #[derive(Deserialize)]
    struct Doc {
        issuer: String,
        jwks_uri: String,
    }
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|_| FetchError::Invalid("discovery document lacks issuer or jwks_uri"))?;
    if doc.issuer != issuer {
        return Err(FetchError::IssuerMismatch { found: doc.issuer });
    }
    if !(doc.jwks_uri.starts_with("https://") || doc.jwks_uri.starts_with("http://")) {
        return Err(FetchError::Invalid("jwks_uri is not an http(s) URL"));
    }
    Ok(doc.jwks_uri)
}

#[cfg(test)]
mod tests {
    #[test]
    fn discovery_url_ignores_a_trailing_slash() {
        assert_eq!(
            super::url("https://idp.example.com/"),
            "https://idp.example.com/.well-known/openid-configuration"
        );
    }
}
