//! The WebSocket upgrade path, gateway side: a request asking for
//! `websocket` is marked before its hop-by-hop headers are rewritten (any
//! other upgrade is refused); the forwarder restores `Connection`/`Upgrade`
//! for the upstream, and once the upstream answers 101 its side of the
//! connection is left in the client connection's [`UpgradeSlot`], which the
//! client connection splices with its own (`server/http1.rs`).

use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::Body;
use super::headers;

/// For an HTTP/1.1 upgrade request: the client connection's upgrade slot
/// and the requested protocol, restoring the hop-by-hop headers an upgrade
/// needs.
pub(super) fn take_upgrade(req: &mut Request<Incoming>) -> Option<(UpgradeSlot, HeaderValue)> {
    let protocol = req.extensions().get::<UpgradeRequest>()?.0.clone();
    let slot = req.extensions_mut().remove::<UpgradeSlot>()?;
    req.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    req.headers_mut().insert(header::UPGRADE, protocol.clone());
    Some((slot, protocol))
}

/// Where an upstream that switched protocols leaves its side of the
/// connection for the client connection to splice with its own.
#[derive(Debug, Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    fn put(&self, upstream: OnUpgrade) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(upstream);
    }

    /// The upstream's side, if the last request switched protocols.
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Marks a request as an upgrade (set before headers are rewritten, since
/// the rewrite removes `Upgrade` as hop-by-hop).
#[derive(Debug, Clone)]
pub struct UpgradeRequest(pub HeaderValue);

/// An upgrade to anything but WebSocket (400): `h2c` and private protocols
/// would let a client talk to the upstream past every check on the
/// requests that follow.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("only websocket upgrades are forwarded")]
pub struct UnsupportedUpgrade;

/// Records an HTTP/1.1 WebSocket upgrade request in its extensions; any
/// other upgrade is refused.
pub fn note_upgrade(req: &mut http::request::Parts) -> Result<(), UnsupportedUpgrade> {
    if req.version != Version::HTTP_11 {
        return Ok(());
    }
    let wants = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let mut protocols = req.headers.get_all(header::UPGRADE).iter();
    let (Some(protocol), None) = (protocols.next(), protocols.next()) else {
        // No Upgrade (or several): nothing is upgraded, and the hop-by-hop
        // rewrite drops what there is.
        return if wants && req.headers.contains_key(header::UPGRADE) {
            Err(UnsupportedUpgrade)
        } else {
            Ok(())
        };
    };
    if !protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return Err(UnsupportedUpgrade);
    }
    if wants {
        let protocol = protocol.clone();
        req.extensions.insert(UpgradeRequest(protocol));
    }
    Ok(())
}

/// The 101 for the client; the upstream's side goes to `slot`.
pub(super) fn switch(
    slot: UpgradeSlot,
    protocol: HeaderValue,
    mut response: Response<Incoming>,
) -> Response<Body> {
    slot.put(hyper::upgrade::on(&mut response));
    let (mut parts, _) = response.into_parts();
    headers::rewrite_response(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);
    Response::from_parts(parts, Body::Empty)
}
