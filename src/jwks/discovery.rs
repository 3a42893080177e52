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
    if !(doc.jwks_uri.starts_with("https://") || loopback_http(&doc.jwks_uri)) {
        return Err(FetchError::Invalid(
            "jwks_uri must be https:// (plain http:// only on a loopback host)",
        ));
    }
    Ok(doc.jwks_uri)
}

/// `http://` to 127.0.0.0/8, `[::1]` or `localhost`: a sidecar IdP in the
/// same pod. Anywhere else, keys over plain HTTP can be replaced on the way.
fn loopback_http(url: &str) -> bool {
    url.starts_with("http://") && crate::config::is_loopback_url(url)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_http_key_urls_are_refused_off_loopback() {
        for (url, ok) in [
            ("https://idp.example/jwks", true),
            ("http://127.0.0.1:8080/jwks", true),
            ("http://[::1]:80/jwks", true),
            ("http://localhost/jwks", true),
            ("http://idp.example/jwks", false),
            ("http://10.0.0.1/jwks", false),
            ("http://127.0.0.1@evil.example/jwks", false),
            ("ftp://127.0.0.1/jwks", false),
        ] {
            let doc = format!(r#"{{"issuer":"i","jwks_uri":"{url}"}}"#);
            assert_eq!(super::parse(doc.as_bytes(), "i").is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn discovery_url_ignores_a_trailing_slash() {
        assert_eq!(
            super::url("https://idp.example.com/"),
            "https://idp.example.com/.well-known/openid-configuration"
        );
    }
}
