//! `Authenticator::admit`: the request path's one call into auth. A public
//! route admits everyone; a protected one needs a token that passes every
//! check, then every binding it carries (`binding.rs`). Records the auth
//! metrics and the access log's token, issuer, subject and reason.

use std::sync::Arc;
use std::time::Instant;

use super::binding::{self, Sender};
use super::extract::Scheme;
use super::{AuthFailure, Authenticator, Identity};
use crate::config::{Policy, RouteAuth};
use crate::jwks::KeyCache;
use crate::proxy::headers::ClientInfo;
use crate::routing::{Params, Route};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::{Name, RouteReason};

/// A request let through: its identity headers, and a fresh `DPoP-Nonce`
/// for the client when its nonce is about to roll over.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Identity headers for the upstream (none on public routes).
    pub identity: Identity,
    /// `DPoP-Nonce` to send with the answer.
    pub dpop_nonce: Option<String>,
    /// The signed JWT to send upstream in place of the opaque token
    /// (`forward.authorization: jwt`).
    pub phantom: Option<Arc<str>>,
}

/// A request refused: why, and how the route's challenge reads.
#[derive(Debug)]
pub struct Denied {
    /// Why.
    pub failure: AuthFailure,
    /// The route's DPoP `algs`, when its challenges offer DPoP.
    dpop_algs: Option<Arc<str>>,
    /// The route's RFC 9728 metadata URL, named in its challenges.
    metadata: Option<Arc<str>>,
    /// A nonce for a `use_dpop_nonce` refusal.
    nonce: Option<String>,
}

impl Denied {
    /// The refusal to render.
    pub fn refusal(&self) -> crate::response::Refusal<'_> {
        self.failure.refusal_on(
            self.dpop_algs.as_deref(),
            self.metadata.as_deref(),
            self.nonce.clone(),
        )
    }
}

impl Authenticator {
    /// Who is calling on `route` over `client`'s connection.
    pub async fn admit(
        &self,
        route: &Route,
        params: &Params<'_>,
        request: &http::request::Parts,
        client: &ClientInfo,
        log: &mut AccessLog,
    ) -> Result<Admitted, Denied> {
        let RouteAuth::Protected(policy) = &route.config.auth else {
            return Ok(Admitted::default());
        };
        // CONTRACT §8.7: a CORS preflight carries no credentials by design.
        if policy.cors_preflight && is_preflight(request) {
            return Ok(Admitted::default());
        }
        let started = Instant::now();
        let outcome = self
            .authenticate(
                route.index,
                policy,
                &request.headers,
                request.uri.query(),
                params,
            )
            .await;
        let sender = Sender {
            method: &request.method,
            uri: &request.uri,
            headers: &request.headers,
            client,
        };
        let bound = match (outcome.result, outcome.found) {
            (Ok(_), Some(found))
                if found.scheme() == Scheme::Cookie && !origin_ok(policy, request) =>
            {
                Err(AuthFailure::Csrf)
            }
            (Ok(verified), Some(found)) => self
                .bound(route, policy, &verified, found, &sender)
                .await
                .map(|nonce| (verified, nonce)),
            (Ok(_), None) => Err(AuthFailure::MissingToken),
            // `optional`: no credentials is an anonymous request; invalid
            // ones are still refused.
            (Err(AuthFailure::MissingToken), _) if policy.optional => {
                self.duration.observe(started.elapsed().as_secs_f64());
                return Ok(Admitted::default());
            }
            (Err(failure), _) => Err(failure),
        };
        self.duration.observe(started.elapsed().as_secs_f64());
        log.token_digest = outcome.digest;
        match bound {
            Ok((verified, dpop_nonce)) => {
                let phantom = match route.config.forward.phantom_jwt {
                    true => verified.phantom.clone(),
                    false => None,
                };
                let identity = verified
                    .identity_headers(self.route_key(route.index), &route.config.forward.headers);
                log.verified = Some(verified);
                Ok(Admitted {
                    identity,
                    dpop_nonce,
                    phantom,
                })
            }
            Err(failure) => {
                self.failures
                    .get_or_create(&RouteReason {
                        route: Name(route.config.name.clone()),
                        reason: failure.reason(),
                    })
                    .inc();
                log.reason = Some(failure.reason());
                let nonce = match failure {
                    AuthFailure::UseDpopNonce => self.issuers(route.index).find_map(|k| {
                        let issuer = k.issuer();
                        issuer
                            .dpop
                            .nonce
                            .then(|| binding::nonce_for_refusal(issuer))
                    }),
                    _ => None,
                };
                Err(Denied {
                    failure,
                    dpop_algs: self.route_dpop_algs[route.index].clone(),
                    metadata: self.route_metadata[route.index].clone(),
                    nonce,
                })
            }
        }
    }

    /// The bindings of a verified token (`binding::check`).
    async fn bound(
        &self,
        route: &Route,
        policy: &Policy,
        verified: &super::Verified,
        found: super::extract::Found<'_>,
        sender: &Sender<'_>,
    ) -> Result<Option<String>, AuthFailure> {
        // The usual token binds nothing: no issuer to find, no text to check.
        if found.scheme() != Scheme::Dpop
            && !policy.sender_constrained
            && !verified.claims.contains_key("cnf")
        {
            return Ok(None);
        }
        let issuer = self
            .issuers(route.index)
            .find(|k| *k.issuer().name == *verified.issuer)
            .ok_or(AuthFailure::WrongIssuer)?;
        let token = std::str::from_utf8(found.bytes())
            .map_err(|_| AuthFailure::Malformed("token is not text"))?;
        binding::check(
            found.scheme(),
            token,
            &verified.claims,
            issuer.issuer(),
            policy,
            sender,
            &self.revocations,
        )
        .await
    }

    fn issuers(&self, route: usize) -> impl Iterator<Item = &Arc<KeyCache>> {
        self.route_issuers[route].iter()
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
fn is_preflight(request: &http::request::Parts) -> bool {
    request.method == http::Method::OPTIONS
        && request.headers.contains_key(http::header::ORIGIN)
        && request
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether a cookie-authenticated request may go on: safe methods always,
/// others only with an `Origin` the route allows.
fn origin_ok(policy: &Policy, request: &http::request::Parts) -> bool {
    use http::Method;
    if matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let mut origins = request.headers.get_all(http::header::ORIGIN).iter();
    let (Some(origin), None) = (origins.next(), origins.next()) else {
        return false;
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
    policy.allowed_origins.contains(&origin)
}

/// The `algs` a route's challenges offer DPoP with: its issuers' proof
/// algorithms, when one announces DPoP or the route takes bound tokens only.
pub(super) fn dpop_algs(
    policy: &Policy,
    caches: &std::collections::HashMap<String, Arc<KeyCache>>,
) -> Option<Arc<str>> {
    let issuers: Vec<_> = policy
        .issuers
        .iter()
        .filter_map(|n| caches.get(n))
        .collect();
    let announced = policy.sender_constrained || issuers.iter().any(|k| k.issuer().dpop.announced);
    if !announced {
        return None;
    }
    let mut algs: Vec<&str> = Vec::new();
    for k in &issuers {
        for a in &k.issuer().dpop.algorithms {
            let name = crate::config::algorithm_name(*a);
            if !algs.contains(&name) {
                algs.push(name);
            }
        }
    }
    Some(algs.join(" ").into())
}
