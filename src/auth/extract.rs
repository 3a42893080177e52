//! Finds the bearer token of a request (RFC 6750 §2): the `Authorization`
//! header or a configured cookie. Tokens in the URL are refused outright.

use http::HeaderMap;
use http::header;
use percent_encoding::percent_decode_str;

use super::failure::AuthFailure;
use super::token::{BearerToken, MAX_TOKEN_BYTES};
use crate::config::TokenSource;

/// A token as found in a request, its characters not yet checked. The
/// verified-token cache may be asked about it first: only tokens that passed
/// [`Found::check`] and verification are ever stored there, so a hit is
/// byte for byte a token already checked, and a hit skips the pass over it.
#[derive(Clone, Copy)]
pub struct Found<'r>(&'r [u8], Scheme);

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer`, or a cookie.
    Bearer,
    /// `Authorization: DPoP` (RFC 9449), with a `DPoP` proof header.
    Dpop,
    /// A cookie (`token_from: cookie:NAME`): sent by browsers on cross-site
    /// requests too, hence the origin check for unsafe methods.
    Cookie,
}

impl<'r> Found<'r> {
    /// The scheme it came with.
    pub fn scheme(self) -> Scheme {
        self.1
    }

    /// The token's bytes, for a cache lookup.
    pub fn bytes(self) -> &'r [u8] {
        self.0
    }

    /// RFC 6750 `b64token` characters only, at most [`MAX_TOKEN_BYTES`].
    pub fn check(self) -> Result<BearerToken<'r>, AuthFailure> {
        check_token_chars(self.0)?;
        match std::str::from_utf8(self.0) {
            Ok(token) => Ok(BearerToken(token)),
            Err(_) => Err(INVALID_CHARS),
        }
    }
}

/// The token of a request, or why there is none usable.
pub fn extract<'r>(
    headers: &'r HeaderMap,
    query: Option<&str>,
    sources: &[TokenSource],
) -> Result<Found<'r>, AuthFailure> {
    if query.is_some_and(has_access_token_param) {
        return Err(AuthFailure::InvalidRequest(
            "tokens in the URL query are not accepted; send an Authorization: Bearer header",
        ));
    }
    for source in sources {
        let found = match source {
            TokenSource::Header => from_header(headers)?,
            TokenSource::Cookie(name) => from_cookie(headers, name)?,
            TokenSource::NamedHeader(name) => from_named(headers, name)?,
        };
        if let Some(token) = found {
            return Ok(token);
        }
    }
    Err(AuthFailure::MissingToken)
}

fn has_access_token_param(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        name == "access_token"
            || (name.contains('%')
                && percent_decode_str(name).decode_utf8_lossy() == "access_token")
    })
}

fn from_header(headers: &HeaderMap) -> Result<Option<Found<'_>>, AuthFailure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::InvalidRequest("several Authorization headers"));
    }
    // Bytes, not `to_str`: the token's character check (`Found::check`) is
    // the one pass over it, and refuses anything that is not ASCII.
    let text = value.as_bytes().trim_ascii();
    let split = text.iter().position(|b| matches!(b, b' ' | b'\t'));
    let (scheme, rest) = match split {
        Some(at) => (&text[..at], &text[at..]),
        None => (text, &b""[..]),
    };
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        // Another scheme is not our credential: answer as if none was sent.
        return Ok(None);
    };
    // RFC 6750 §2.1: `Bearer 1*SP b64token`. A tab is read as a separator
    // by some servers and as part of the token by others.
    let token = rest.trim_ascii_start();
    if rest.len() > token.len() && rest[..rest.len() - token.len()].contains(&b'\t') {
        return Err(AuthFailure::InvalidRequest(
            "the Bearer scheme must be followed by spaces only",
        ));
    }
    if token.is_empty() {
        return Err(AuthFailure::InvalidRequest(
            "Authorization: Bearer without a token",
        ));
    }
    Ok(Some(Found(token, scheme)))
}

/// A credential sent as the whole value of its own header (API keys).
fn from_named<'h>(
    headers: &'h HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<Found<'h>>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::InvalidRequest(
            "the credential header is sent more than once",
        ));
    }
    let key = value.as_bytes().trim_ascii();
    if key.is_empty() {
        return Err(AuthFailure::InvalidRequest(
            "the credential header is empty",
        ));
    }
    Ok(Some(Found(key, Scheme::Bearer)))
}

fn from_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<Found<'h>>, AuthFailure> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    return Err(AuthFailure::InvalidRequest(
                        "the token cookie is sent more than once",
                    ));
                }
                found = Some(v.trim_matches('"'));
            }
        }
    }
    match found {
        None | Some("") => Ok(None),
        Some(token) => Ok(Some(Found(token.as_bytes(), Scheme::Cookie))),
    }
}

const INVALID_CHARS: AuthFailure =
    AuthFailure::InvalidRequest("the bearer token contains characters RFC 6750 does not allow");

/// RFC 6750 `b64token` characters only, and a size cap.
fn check_token_chars(token: &[u8]) -> Result<(), AuthFailure> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed("token is larger than 16384 bytes"));
    }
    // No early exit: a branch-free fold over the bytes vectorises.
    let ok = token.iter().fold(true, |ok, &b| {
        ok & (b.is_ascii_alphanumeric()
            | (b == b'-')
            | (b == b'.')
            | (b == b'_')
            | (b == b'~')
            | (b == b'+')
            | (b == b'/')
            | (b == b'='))
    });
    if ok { Ok(()) } else { Err(INVALID_CHARS) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const HEADER: &[TokenSource] = &[TokenSource::Header];

    /// What the request path does: find, then check.
    fn token<'h>(
        h: &'h HeaderMap,
        query: Option<&str>,
        sources: &[TokenSource],
    ) -> Result<&'h str, AuthFailure> {
        extract(h, query, sources)
            .and_then(Found::check)
            .map(|t| t.0)
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_whitespace_tolerated() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER   abc.def.ghi  ",
        ] {
            let h = headers(&[("authorization", v)]);
            assert_eq!(token(&h, None, HEADER).unwrap(), "abc.def.ghi");
        }
    }

    #[test]
    fn other_schemes_count_as_no_credentials() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            token(&h, None, HEADER).unwrap_err(),
            AuthFailure::MissingToken
        );
    }

    #[test]
    fn duplicates_query_tokens_and_junk_are_invalid_requests() {
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            token(&two, None, HEADER).unwrap_err().reason(),
            "invalid_request"
        );
        let none = HeaderMap::new();
        for q in [
            "access_token=abc",
            "x=1&access_token=",
            "access%5Ftoken=abc",
        ] {
            assert_eq!(
                token(&none, Some(q), HEADER).unwrap_err().reason(),
                "invalid_request",
                "{q}"
            );
        }
        for v in ["Bearer", "Bearer a b", "Bearer a,b"] {
            let h = headers(&[("authorization", v)]);
            assert_eq!(
                token(&h, None, HEADER).unwrap_err().reason(),
                "invalid_request",
                "{v}"
            );
        }
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let h = headers(&[("authorization", &big)]);
        assert_eq!(token(&h, None, HEADER).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn cookies_are_read_only_when_configured() {
        let h = headers(&[("cookie", "a=1; session=tok.en.x")]);
        assert_eq!(
            token(&h, None, HEADER).unwrap_err(),
            AuthFailure::MissingToken
        );
        let cookie = [TokenSource::Cookie("session".into())];
        assert_eq!(token(&h, None, &cookie).unwrap(), "tok.en.x");
    }
}
