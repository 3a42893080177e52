//! Browser and agent clients (CONTRACT §8.7): `allowed_origins`,
//! `cors_preflight`, `optional` and RFC 9728 `resource_metadata`.

use super::*;

/// RFC 9728 §3.1: the well-known path inserted before the resource's path.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

impl Validator<'_> {
    /// `(allowed_origins, cors_preflight, optional)`; a cookie token source
    /// without `allowed_origins` is refused: cookies ride along on
    /// cross-site requests, so the origin is the only CSRF defence.
    pub(super) fn browser(
        &mut self,
        path: &str,
        allowed_origins: Option<&[String]>,
        cors_preflight: Option<&str>,
        optional: Option<bool>,
        token_from: &[TokenSource],
    ) -> (Vec<String>, bool, bool) {
        let cookie = token_from
            .iter()
            .any(|t| matches!(t, TokenSource::Cookie(_)));
        let mut origins = Vec::new();
        match allowed_origins {
            None if cookie => self.problem(
                &join(path, "allowed_origins"),
                "missing: a cookie token source needs the origins allowed to make unsafe requests (CSRF)",
                "a list like [\"https://app.example\"]",
            ),
            None => {}
            Some(list) => {
                for (i, o) in list.iter().enumerate() {
                    match origin(o) {
                        Some(o) => origins.push(o),
                        None => self.problem(
                            &format!("{path}.allowed_origins[{i}]"),
                            format!("{o:?} is not an origin"),
                            "scheme://host[:port], like https://app.example",
                        ),
                    }
                }
            }
        }
        let cors = match cors_preflight {
            None | Some("refuse") => false,
            Some("forward") => true,
            Some(other) => {
                self.problem(
                    &join(path, "cors_preflight"),
                    format!("unknown choice {other:?}"),
                    "forward or refuse",
                );
                false
            }
        };
        (origins, cors, optional.unwrap_or(false))
    }

    pub(super) fn resource_metadata(
        &mut self,
        path: &str,
        f: ResourceMetadataFile,
    ) -> Option<ResourceMetadata> {
        let Ok(uri) = f.resource.parse::<http::Uri>() else {
            self.problem(
                &join(path, "resource"),
                "not a URL",
                "https://api.example/mcp",
            );
            return None;
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            self.problem(
                &join(path, "resource"),
                "not an absolute URL",
                "https://api.example/mcp",
            );
            return None;
        };
        if uri.query().is_some() || f.resource.contains('#') {
            self.problem(
                &join(path, "resource"),
                "has a query or fragment (RFC 9728 §1.2)",
                "https://api.example/mcp",
            );
            return None;
        }
        let rest = uri.path().trim_end_matches('/');
        let served = format!("{WELL_KNOWN}{rest}");
        let document = serde_json::json!({
            "resource": f.resource,
            "authorization_servers": f.authorization_servers,
            "scopes_supported": f.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        Some(ResourceMetadata {
            document: document.to_string(),
            url: format!("{scheme}://{authority}{served}"),
            path: served,
        })
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, lower case.
fn origin(text: &str) -> Option<String> {
    let uri: http::Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    if !matches!(scheme, "http" | "https") || !matches!(uri.path(), "" | "/") {
        return None;
    }
    Some(format!(
        "{scheme}://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}
