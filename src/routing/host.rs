//! The request's host, read one way only (CONTRACT §8.1): `Host` and the
//! URI authority (`:authority` in HTTP/2, an absolute-form target in
//! HTTP/1.1) must each be a host name or IP literal with an optional port,
//! and must agree. The value routed by is the value forwarded upstream in
//! `X-Forwarded-Host`, so no upstream can read a request's host another way.

use std::net::Ipv6Addr;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Uri, Version};

/// Why a request's host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadHost {
    /// No `Host` on HTTP/1.1 (or no authority at all on HTTP/2).
    #[error("the request has no Host header")]
    Missing,
    /// More than one `Host` header.
    #[error("the request has more than one Host header")]
    Several,
    /// Userinfo, commas, spaces, an empty value, a bad port, ...
    #[error("the Host header is not a host name or IP address with an optional port")]
    Malformed,
    /// The URI authority names another host than `Host`.
    #[error("the request target's host differs from the Host header")]
    Mismatch,
}

/// A validated host: lower case, no trailing dot, with its port if one was
/// sent.
#[derive(Debug, Clone)]
pub struct RequestHost {
    value: HeaderValue,
    host_len: usize,
}

impl RequestHost {
    /// The host without its port (what `match.host` is compared with).
    pub fn host(&self) -> &str {
        // Built from checked ASCII only.
        std::str::from_utf8(&self.value.as_bytes()[..self.host_len]).unwrap_or("")
    }

    /// `host[:port]`, as sent upstream in `X-Forwarded-Host`.
    pub fn header(&self) -> HeaderValue {
        self.value.clone()
    }
}

/// The request's host, or why it is refused. `None` only for HTTP/1.0
/// requests that name none.
pub fn request_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<RequestHost>, BadHost> {
    let mut values = headers.get_all(header::HOST).iter();
    let from_header = values.next();
    if values.next().is_some() {
        return Err(BadHost::Several);
    }
    let from_header = from_header
        .map(|v| parse(v.as_bytes(), Some(v)))
        .transpose()?;
    let from_uri = uri
        .authority()
        .map(|a| parse(a.as_str().as_bytes(), None))
        .transpose()?;
    match (from_header, from_uri) {
        (Some(h), Some(u)) if h.host() != u.host() => Err(BadHost::Mismatch),
        (Some(h), _) => Ok(Some(h)),
        (None, Some(u)) => Ok(Some(u)),
        (None, None) if version >= Version::HTTP_11 => Err(BadHost::Missing),
        (None, None) => Ok(None),
    }
}

/// Parses `host[:port]`; `original` is reused when it is already normal.
fn parse(raw: &[u8], original: Option<&HeaderValue>) -> Result<RequestHost, BadHost> {
    let (host, port, upper) = match raw.first() {
        Some(b'[') => {
            let (host, port) = split_port(raw)?;
            if !ip_literal(host) {
                return Err(BadHost::Malformed);
            }
            (host, port, false)
        }
        _ => reg_name_and_port(raw)?,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let normal = host.len() + port.map_or(0, |p| 1 + p.len()) == raw.len() && !upper;
    let value = match original {
        Some(v) if normal => v.clone(),
        _ => {
            let mut text = host.to_ascii_lowercase();
            if let Some(p) = port {
                text.push(b':');
                text.extend_from_slice(p);
            }
            HeaderValue::from_bytes(&text).map_err(|_| BadHost::Malformed)?
        }
    };
    Ok(RequestHost {
        value,
        host_len: host.len(),
    })
}

/// A host, its port if sent, and whether the host has upper-case letters.
type HostPort<'a> = (&'a [u8], Option<&'a [u8]>, bool);

/// A DNS name or IPv4 address (letters, digits, `-`, `_`, dots between
/// non-empty labels of at most 63 bytes, at most 253 bytes, one trailing
/// dot allowed) and its optional port, in one pass over the bytes (this
/// runs on every request).
fn reg_name_and_port(raw: &[u8]) -> Result<HostPort<'_>, BadHost> {
    let (mut upper, mut label, mut after_dot) = (false, 0usize, true);
    let mut end = raw.len();
    for (i, &b) in raw.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            b'A'..=b'Z' => upper = true,
            b'.' if !after_dot => {
                after_dot = true;
                label = 0;
                continue;
            }
            b':' => {
                end = i;
                break;
            }
            _ => return Err(BadHost::Malformed),
        }
        after_dot = false;
        label += 1;
        if label > 63 {
            return Err(BadHost::Malformed);
        }
    }
    let host = &raw[..end];
    let name = host.strip_suffix(b".").unwrap_or(host);
    // `after_dot` still set: empty, or a dot right after another.
    if name.is_empty() || name.len() > 253 || name.ends_with(b".") {
        return Err(BadHost::Malformed);
    }
    let port = match raw.get(end..) {
        Some([b':', port @ ..]) => Some(check_port(port)?),
        _ => None,
    };
    Ok((host, port, upper))
}

/// 1 to 5 digits, at most 65535.
fn check_port(port: &[u8]) -> Result<&[u8], BadHost> {
    let value = port
        .iter()
        .try_fold(0u32, |n, b| {
            b.is_ascii_digit()
                .then(|| n * 10 + u32::from(b - b'0'))
                .filter(|n| *n <= 65_535)
        })
        .filter(|_| !port.is_empty() && port.len() <= 5);
    value.map(|_| port).ok_or(BadHost::Malformed)
}

/// Splits an IPv6 literal from its `:port` (the literal's colons sit
/// inside its brackets).
fn split_port(raw: &[u8]) -> Result<(&[u8], Option<&[u8]>), BadHost> {
    let after_literal = match raw.first() {
        Some(b'[') => {
            raw.iter()
                .position(|b| *b == b']')
                .ok_or(BadHost::Malformed)?
                + 1
        }
        _ => 0,
    };
    let Some(colon) = raw[after_literal..].iter().position(|b| *b == b':') else {
        return Ok((raw, None));
    };
    let (host, port) = (
        &raw[..after_literal + colon],
        &raw[after_literal + colon + 1..],
    );
    Ok((host, Some(check_port(port)?)))
}

/// `[` IPv6 address `]` (no zone identifiers).
fn ip_literal(host: &[u8]) -> bool {
    host.strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .and_then(|h| std::str::from_utf8(h).ok())
        .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(version: Version, uri: &str, hosts: &[&str]) -> Result<Option<String>, BadHost> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        let uri: Uri = uri.parse().unwrap();
        request_host(version, &uri, &h)
            .map(|o| o.map(|r| format!("{}|{}", r.host(), r.header().to_str().unwrap())))
    }

    #[test]
    fn good_hosts_are_normalised_and_bad_ones_refused() {
        let v11 = Version::HTTP_11;
        for (sent, expect) in [
            ("api.example", "api.example|api.example"),
            ("API.Example.:8443", "api.example|api.example:8443"),
            ("10.0.0.1:80", "10.0.0.1|10.0.0.1:80"),
            ("[::1]:8080", "[::1]|[::1]:8080"),
            ("svc_a.internal", "svc_a.internal|svc_a.internal"),
        ] {
            assert_eq!(
                host_of(v11, "/", &[sent]),
                Ok(Some(expect.into())),
                "{sent}"
            );
        }
        for bad in [
            "",
            "admin.example:1@public.example",
            "a,b",
            "a b",
            "a:",
            "a:99999",
            "a:1:2",
            "a..b",
            ".",
            "[::1",
            "[zz]",
            "a/b",
        ] {
            assert_eq!(
                host_of(v11, "/", &[bad]),
                Err(BadHost::Malformed),
                "{bad:?}"
            );
        }
        let long_label = "x".repeat(64);
        let long_name = format!("{}.example", ["abcdefghij"; 25].join("."));
        for bad in [long_label.as_str(), long_name.as_str()] {
            assert_eq!(host_of(v11, "/", &[bad]), Err(BadHost::Malformed), "{bad}");
        }
        assert!(host_of(v11, "/", &[&"x".repeat(63)]).is_ok());
        assert_eq!(host_of(v11, "/", &["a", "b"]), Err(BadHost::Several));
        assert_eq!(host_of(v11, "/", &[]), Err(BadHost::Missing));
        assert_eq!(host_of(Version::HTTP_10, "/", &[]), Ok(None));
        assert_eq!(
            host_of(v11, "http://admin.example/x", &["public.example"]),
            Err(BadHost::Mismatch)
        );
        assert_eq!(
            host_of(v11, "http://Public.example:80/x", &["public.example"]),
            Ok(Some("public.example|public.example".into()))
        );
        assert_eq!(
            host_of(Version::HTTP_2, "https://u@api.example/x", &[]),
            Err(BadHost::Malformed)
        );
    }
}
