//! Every header rewrite between client and upstream, and the names involved.
//! Nothing else in the crate adds or removes forwarded headers.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub use super::names::{
    IDENTITY_PREFIX, IdentityNames, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_REQUEST_ID, is_reserved,
};
use super::names::{ROUTING_OVERRIDES, is_hop_by_hop};
use crate::config::{ForwardConfig, TokenSource};

/// Facts about the client connection used in `X-Forwarded-*`, prepared
/// once per connection rather than formatted on every request.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Peer address of the connection, as `X-Forwarded-For` shows it.
    pub ip: HeaderValue,
    /// True when the client connected over TLS.
    pub tls: bool,
    /// The client certificate rustls verified on this connection, if any.
    pub cert: Option<Arc<ClientCert>>,
}

/// A verified client certificate (mTLS), as the binding check (RFC 8705)
/// and `forward.client_cert` (RFC 9440) use it.
#[derive(Debug)]
pub struct ClientCert {
    /// base64url SHA-256 of the DER: what `cnf["x5t#S256"]` must equal.
    pub x5t_s256: String,
    /// `Client-Cert` (RFC 9440): the DER as a structured-field byte sequence.
    pub header: HeaderValue,
}

impl ClientCert {
    /// From the leaf certificate's DER.
    pub fn from_der(der: &[u8]) -> Self {
        use base64::Engine;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let header =
            HeaderValue::try_from(format!(":{b64}:")).unwrap_or(HeaderValue::from_static(""));
        Self { x5t_s256, header }
    }
}

impl ClientInfo {
    /// The client at `ip` (IPv4-mapped IPv6 shown as IPv4).
    pub fn new(ip: IpAddr, tls: bool) -> Self {
        let text = ip.to_canonical().to_string();
        Self {
            ip: HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("unknown")),
            tls,
            cert: None,
        }
    }
}

/// Removes hop-by-hop headers and any header that `Connection` names.
///
/// One pass over the (few) names present, and only those present are
/// removed: most requests carry none, and most responses only
/// `Connection: keep-alive`, which costs one removal and no allocation.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |_| false);
}

/// Removes hop-by-hop headers, those `Connection` names, and those
/// `doomed` picks, in one pass over the names present.
fn strip(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let connection = headers.get_all(header::CONNECTION);
    // `Connection: keep-alive` (or `close`) names only a header that goes
    // anyway: then no other name needs comparing with its tokens.
    let names_others = connection.iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close")
        })
    });
    let named = |name: &HeaderName| {
        names_others
            && connection.iter().any(|v| {
                v.as_bytes().split(|b| *b == b',').any(|t| {
                    t.trim_ascii()
                        .eq_ignore_ascii_case(name.as_str().as_bytes())
                })
            })
    };
    // The first few on the stack: a request usually loses only its
    // `Authorization`, and that should not cost an allocation.
    let mut few: [Option<HeaderName>; 4] = Default::default();
    let mut more: Vec<HeaderName> = Vec::new();
    let mut has_connection = false;
    for name in headers.keys() {
        if *name == header::CONNECTION {
            has_connection = true;
        } else if is_hop_by_hop(name) || doomed(name) || named(name) {
            match few.iter_mut().find(|slot| slot.is_none()) {
                Some(slot) => *slot = Some(name.clone()),
                None => more.push(name.clone()),
            }
        }
    }
    if has_connection {
        headers.remove(header::CONNECTION);
    }
    for name in few.into_iter().flatten().chain(more) {
        headers.remove(name);
    }
}

/// Removes every header a client may have sent that the upstream could
/// take for ours: identity headers in any spelling (see [`IdentityNames`])
/// and the routing overrides of [`ROUTING_OVERRIDES`].
fn spoofable(name: &HeaderName, reserved: &IdentityNames) -> bool {
    reserved.covers(name) || ROUTING_OVERRIDES.contains(&name.as_str())
}

/// What a request's headers are rewritten with for its upstream.
#[derive(Debug)]
pub struct Rewrite<'a> {
    /// The route's `forward:` section.
    pub forward: &'a ForwardConfig,
    /// Identity names of the whole config.
    pub reserved: &'a IdentityNames,
    /// The route's token sources: a token cookie is removed with
    /// `Authorization` (none on public routes).
    pub token_from: &'a [TokenSource],
    /// Headers derived from verified claims (none on public routes).
    pub identity: &'a [(HeaderName, HeaderValue)],
    /// The client connection.
    pub client: ClientInfo,
    /// The validated, normalised host the request was routed by.
    pub forwarded_host: Option<HeaderValue>,
    /// `Host` for the upstream.
    pub upstream_host: &'a HeaderValue,
    /// The authorization server's signed JWT to send as the credential
    /// (`forward.authorization: jwt`).
    pub phantom: Option<&'a str>,
}

/// Rewrites a request's headers for the upstream.
pub fn rewrite_request(headers: &mut HeaderMap, r: Rewrite<'_>) {
    // The credential goes unless the route keeps it (and a phantom JWT
    // takes its place below).
    let drop_credentials = !r.forward.keep_authorization;
    strip(headers, |name| {
        spoofable(name, r.reserved)
            || (drop_credentials && (*name == header::AUTHORIZATION || name.as_str() == "dpop"))
    });
    if drop_credentials {
        for source in r.token_from {
            match source {
                TokenSource::Cookie(name) => strip_cookie(headers, name),
                TokenSource::NamedHeader(name) => {
                    headers.remove(name);
                }
                TokenSource::Header => {}
            }
        }
    }
    append_forwarded_for(headers, r.client.ip);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if r.client.tls { "https" } else { "http" }),
    );
    match r.forwarded_host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
    match headers.entry(X_REQUEST_ID) {
        header::Entry::Occupied(e) if valid_request_id(e.get()) => {}
        header::Entry::Occupied(mut e) => {
            e.insert(new_request_id());
        }
        header::Entry::Vacant(e) => {
            e.insert(new_request_id());
        }
    }
    headers.insert(header::HOST, r.upstream_host.clone());
    // CONTRACT §8.6: the upstream gets the authorization server's own JWT,
    // byte for byte, and can verify it without calling anyone.
    if let Some(jwt) = r.phantom {
        if let Ok(mut v) = HeaderValue::try_from(format!("Bearer {jwt}")) {
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
    }
    // RFC 9440: the certificate rustls verified (a client's own
    // `Client-Cert` was removed with the routing overrides above).
    if r.forward.client_cert {
        if let Some(cert) = &r.client.cert {
            headers.insert(HeaderName::from_static("client-cert"), cert.header.clone());
        }
    }
    for (name, value) in r.identity {
        headers.append(name.clone(), value.clone());
    }
}

/// Removes the cookie `name` from every `Cookie` header, keeping the others;
/// a header left empty is removed.
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let carries = |v: &HeaderValue| {
        v.as_bytes().split(|b| *b == b';').any(|pair| {
            let pair = pair.trim_ascii();
            pair.strip_prefix(name.as_bytes())
                .is_some_and(|rest| rest.first() == Some(&b'='))
        })
    };
    if !headers.get_all(header::COOKIE).iter().any(carries) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let rest: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != name))
                .filter(|pair| !pair.is_empty())
                .collect();
            (!rest.is_empty())
                .then(|| HeaderValue::from_str(&rest.join("; ")).ok())
                .flatten()
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// Removes hop-by-hop headers from an upstream response.
pub fn rewrite_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// A fresh DPoP nonce for the client (RFC 9449 §8.2), replacing any the
/// upstream sent.
pub fn dpop_nonce(headers: &mut HeaderMap, nonce: String) {
    if let Ok(v) = HeaderValue::try_from(nonce) {
        headers.insert(HeaderName::from_static("dpop-nonce"), v);
    }
}

/// For an HTTP/1.1 client of a gRPC upstream: HTTP/1.1 sends only trailer
/// fields its response declares in `Trailer`, and HTTP/2 answers declare
/// none, so the gRPC status fields are declared here (other trailing
/// metadata reaches HTTP/2 clients only).
pub fn declare_grpc_trailers(headers: &mut HeaderMap) {
    if crate::response::grpc::is_grpc(headers) && !headers.contains_key(header::TRAILER) {
        headers.insert(
            header::TRAILER,
            HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
        );
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: HeaderValue) {
    // One lookup through the entry, for reading and replacing alike.
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Vacant(e) => {
            e.insert(ip);
        }
        header::Entry::Occupied(mut e) => {
            let prior = e.get().to_str().map(str::trim).unwrap_or("");
            let value = match prior.is_empty() {
                true => ip,
                false => HeaderValue::try_from(format!("{prior}, {}", ip.to_str().unwrap_or("")))
                    .unwrap_or(ip),
            };
            e.insert(value);
        }
    }
}

/// A client-chosen request id is kept when short and printable.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// A unique id: a random per-thread prefix and that thread's counter (no
/// syscall per request, and no counter that every worker writes).
pub fn new_request_id() -> HeaderValue {
    thread_local! {
        static NEXT: (u64, std::cell::Cell<u64>) = (random_prefix(), std::cell::Cell::new(0));
    }
    let (prefix, n) = NEXT.with(|(prefix, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        (*prefix, n)
    });
    // Hex by hand: `format!` was a tenth of the header rewrite's cost.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, byte) in text.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        *byte = HEX[((word >> (60 - 4 * (i % 16))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// 64 random bits (the process id twice if the system's generator fails).
fn random_prefix() -> u64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let id = std::process::id().to_le_bytes();
        bytes[..4].copy_from_slice(&id);
        bytes[4..].copy_from_slice(&id);
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn forward(keep: bool) -> ForwardConfig {
        ForwardConfig {
            headers: vec![(HeaderName::from_static("x-tenant"), "tenant".into())],
            keep_authorization: keep,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            ca_file: None,
            max_connections: 256,
            client_cert: false,
            phantom_jwt: false,
        }
    }

    fn client() -> ClientInfo {
        ClientInfo::new("10.0.0.9".parse().unwrap(), true)
    }

    #[test]
    fn spoofed_identity_and_hop_by_hop_headers_never_cross() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-auth-subject", "admin"),
            ("X-Auth-Anything", "1"),
            ("x-tenant", "other"),
            ("x_tenant", "other"),
            ("x_auth_subject", "admin"),
            ("forwarded", "for=1.2.3.4;host=admin.example"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("cookie", "theme=dark; session=eyJ.a.b"),
            ("cookie", "session=eyJ.c.d"),
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("authorization", "Bearer abc"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-request-id", "req-1"),
            ("accept", "text/plain"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let identity = [(
            HeaderName::from_static("x-auth-subject"),
            HeaderValue::from_static("alice"),
        )];
        let upstream = HeaderValue::from_static("127.0.0.1:8081");
        let reserved = IdentityNames::new(forward(false).headers.iter().map(|(n, _)| n));
        rewrite_request(
            &mut h,
            Rewrite {
                forward: &forward(false),
                reserved: &reserved,
                token_from: &[TokenSource::Header, TokenSource::Cookie("session".into())],
                identity: &identity,
                client: client(),
                forwarded_host: Some(HeaderValue::from_static("api.example.com")),
                upstream_host: &upstream,
                phantom: None,
            },
        );
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "cookie",
                "host",
                "x-auth-subject",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-request-id"
            ]
        );
        assert_eq!(h["x-auth-subject"], "alice");
        assert_eq!(h.get_all("x-auth-subject").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        let cookies: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(
            cookies,
            ["theme=dark"],
            "the token cookie is gone, others stay"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-request-id"], "req-1");
        assert_eq!(h["host"], "127.0.0.1:8081");
    }

    #[test]
    fn authorization_is_kept_only_when_configured_and_ids_are_generated() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        h.insert(X_REQUEST_ID, HeaderValue::from_static("bad id with spaces"));
        h.insert(header::COOKIE, HeaderValue::from_static("session=eyJ.a.b"));
        let upstream = HeaderValue::from_static("u:1");
        rewrite_request(
            &mut h,
            Rewrite {
                forward: &forward(true),
                reserved: &IdentityNames::default(),
                token_from: &[TokenSource::Cookie("session".into())],
                identity: &[],
                client: client(),
                forwarded_host: None,
                upstream_host: &upstream,
                phantom: None,
            },
        );
        assert_eq!(h["authorization"], "Bearer abc");
        assert_eq!(
            h["cookie"], "session=eyJ.a.b",
            "kept with authorization: keep"
        );
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32);
        let (a, b) = (new_request_id(), new_request_id());
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let counter = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(counter(b) > counter(a));
    }

    #[test]
    fn responses_lose_connection_and_what_it_names_but_nothing_else() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive"),
            ("connection", " X-Private , close"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-connection-id", "7"),
            ("content-type", "text/plain"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        rewrite_response(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-connection-id"]);
    }
}
