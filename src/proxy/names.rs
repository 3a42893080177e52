//! Header names the gateway treats specially: the ones it sets itself, the
//! hop-by-hop ones, the ones that override routing upstream, and the
//! identity names no client may send in any spelling (CONTRACT §8.1).

use http::header::{self, HeaderName};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Prefix of headers only the gateway may set upstream.
pub const IDENTITY_PREFIX: &str = "x-auth-";

/// Headers that make frameworks behind us re-route, re-method or
/// re-attribute a request (Spring's `ForwardedHeaderFilter`, IIS URL
/// Rewrite, method-override middleware, TLS-offload conventions). A client
/// never gets to send them upstream.
pub const ROUTING_OVERRIDES: [&str; 12] = [
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-real-ip",
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
];

/// Names the gateway sets itself; an identity header may not use them.
pub fn is_reserved(name: &HeaderName) -> bool {
    is_hop_by_hop(name)
        || ROUTING_OVERRIDES.contains(&name.as_str())
        || [
            header::HOST,
            header::AUTHORIZATION,
            header::COOKIE,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REQUEST_ID,
        ]
        .contains(name)
}

/// Whether `name` describes one connection and never crosses the proxy
/// (RFC 9110 §7.6.1, plus the non-standard `Proxy-Connection`).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Every identity header name of the whole config, not only one route's:
/// a public route must not forward a client's `X-User` when another route
/// sets `X-User` from a claim, since the same upstream may serve both.
#[derive(Debug, Default, Clone)]
pub struct IdentityNames {
    /// The names outside the `x-auth-` prefix (the prefix covers the rest).
    outside_prefix: Box<[HeaderName]>,
    /// Every name, for a proxy told which headers to remove (Envoy).
    all: Box<[HeaderName]>,
}

impl IdentityNames {
    /// The union of `names`: every route's `forward.headers` names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a HeaderName>) -> Self {
        let mut all: Vec<HeaderName> = Vec::new();
        for name in names {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        let outside_prefix = all
            .iter()
            .filter(|n| !n.as_str().starts_with(IDENTITY_PREFIX))
            .cloned()
            .collect();
        Self {
            outside_prefix,
            all: all.into(),
        }
    }

    /// Every identity header name of the config.
    pub fn all(&self) -> &[HeaderName] {
        &self.all
    }

    /// True when a client header called `name` could be read upstream as an
    /// identity header: `_` is read as `-` (CGI and older WSGI servers turn
    /// both into `HTTP_X_AUTH_SUBJECT`), case is ignored (header names
    /// arrive lower-cased).
    pub fn covers(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        let prefix = IDENTITY_PREFIX.as_bytes();
        if name.len() >= prefix.len() && same_spelling(&name[..prefix.len()], prefix) {
            return true;
        }
        self.outside_prefix
            .iter()
            .any(|n| n.as_str().len() == name.len() && same_spelling(name, n.as_str().as_bytes()))
    }
}

/// Byte-wise equality with `_` and `-` taken as one character (both sides
/// are lower case).
fn same_spelling(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_cover_every_spelling_of_the_prefix_and_the_configured_names() {
        let names = IdentityNames::new(&[HeaderName::from_static("x-user")]);
        for spoof in [
            "x-auth-subject",
            "x_auth_subject",
            "x-auth_subject",
            "x_auth-anything",
            "x-user",
            "x_user",
        ] {
            assert!(
                names.covers(&HeaderName::from_bytes(spoof.as_bytes()).unwrap()),
                "{spoof}"
            );
        }
        for fine in ["x-users", "x-authx", "accept", "x-auth", "user"] {
            assert!(
                !names.covers(&HeaderName::from_bytes(fine.as_bytes()).unwrap()),
                "{fine}"
            );
        }
    }
}
