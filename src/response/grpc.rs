//! Refusals as gRPC clients expect them (CONTRACT §8.2): a request whose
//! `content-type` is gRPC gets every gateway-made answer as a trailers-only
//! response, one HEADERS frame that ends the stream, HTTP status 200, with
//! `grpc-status` mapped from the HTTP status as gRPC's own mapping does
//! and the reason, percent-encoded, in `grpc-message`.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::proxy::Body;

/// `grpc-status` codes the gateway answers with.
pub const INTERNAL: u8 = 13;
pub const UNAUTHENTICATED: u8 = 16;
pub const PERMISSION_DENIED: u8 = 7;
pub const UNIMPLEMENTED: u8 = 12;
pub const UNAVAILABLE: u8 = 14;
pub const DEADLINE_EXCEEDED: u8 = 4;
pub const RESOURCE_EXHAUSTED: u8 = 8;
pub const UNKNOWN: u8 = 2;

/// gRPC's percent-encoding: everything outside printable ASCII, and `%`.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Marks a gateway-made answer, with what a gRPC rendering of it needs.
#[derive(Debug, Clone)]
pub(super) struct Made {
    pub(super) message: Box<str>,
    pub(super) grpc_status: Option<u8>,
}

/// Whether `headers` announce a gRPC request: `application/grpc`, or
/// `application/grpc+proto` and the like (a `;` parameter is tolerated).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    const GRPC: &[u8] = b"application/grpc";
    ct.len() >= GRPC.len()
        && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// The `grpc-status` for a gateway-made answer of `status` (gRPC's
/// "HTTP to gRPC status code mapping").
pub fn status_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        413 | 431 => RESOURCE_EXHAUSTED,
        _ => UNKNOWN,
    }
}

/// `response` as a trailers-only gRPC answer when the gateway made it;
/// an upstream's answer passes unchanged. Keeps `www-authenticate`,
/// `retry-after` and `cache-control`.
pub fn trailers_only(response: Response<Body>) -> Response<Body> {
    let Some(made) = response.extensions().get::<Made>().cloned() else {
        return response;
    };
    let code = made
        .grpc_status
        .unwrap_or_else(|| status_for(response.status()));
    let (parts, _) = response.into_parts();
    let mut answer = Response::new(Body::Empty);
    let h = answer.headers_mut();
    for name in [
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
        header::CACHE_CONTROL,
        http::HeaderName::from_static("dpop-nonce"),
    ] {
        if let Some(v) = parts.headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let message = utf8_percent_encode(&made.message, MESSAGE).to_string();
    if let Ok(v) = HeaderValue::try_from(message) {
        h.insert("grpc-message", v);
    }
    answer
}

/// The call's deadline from `grpc-timeout` (`1*8DIGIT` and a unit of H, M,
/// S, m, u or n); `Err` when the header is there but malformed.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ()> {
    let Some(v) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let v = v.as_bytes();
    let (digits, unit) = v.split_at(v.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    // Eight digits at most: no overflow in u64 nanoseconds below hours.
    let n: u64 = std::str::from_utf8(digits)
        .map_err(|_| ())?
        .parse()
        .map_err(|_| ())?;
    Ok(Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return Err(()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", yes)])), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpcx",
            "application/json",
            "text/grpc",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts() {
        let t = |v: &'static str| timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("100m"), Ok(Some(Duration::from_millis(100))));
        assert_eq!(t("2S"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(
            t("99999999H"),
            Ok(Some(Duration::from_secs(99_999_999 * 3600)))
        );
        assert_eq!(t("1n"), Ok(Some(Duration::from_nanos(1))));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "10"] {
            assert_eq!(t(bad), Err(()), "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn messages_are_percent_encoded() {
        let m = utf8_percent_encode("50% off\n é", MESSAGE).to_string();
        assert_eq!(m, "50%25 off%0A %C3%A9");
    }
}
