//! Route selection: path normalisation, then the first route (in file order)
//! whose host, path and method match. Does not authenticate or forward.
//!
//! Normalisation rules (the same path is matched and forwarded, so a route
//! can never be reached by a spelling its plain path would not match):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded, other escapes are kept with upper-case hex;
//! - empty segments are merged (`//a` is `/a`);
//! - dot segments (`.`, `..`, also as `%2e`, `.%2E`) are refused with 400,
//!   as are `;` in any form (Tomcat and Spring read `/public;x/../admin`
//!   as path parameters and drop them), encoded `/` (`%2F`), `\` in any
//!   form, NUL and control characters and malformed escapes;
//! - matching is case-sensitive (RFC 3986 §6.2.2.1): `/Admin` is not `/admin`.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::config::{PathMatch, RouteConfig};

mod host;
pub(crate) mod path;
pub use host::{BadHost, RequestHost, request_host};
pub use path::{BadPath, normalise};

/// A compiled route: its config plus a matcher.
#[derive(Debug)]
pub struct Route {
    /// The validated config of this route.
    pub config: RouteConfig,
    /// Position in the file (0-based), used to index per-route state.
    pub index: usize,
    matcher: Matcher,
}

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
}

/// Values bound to `path_template` parameters, in template order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params<'p>(Vec<(Arc<str>, &'p str)>);

impl<'p> Params<'p> {
    /// The value bound to `name`.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| *v)
    }
}

impl Route {
    fn compile(index: usize, config: RouteConfig) -> Self {
        let matcher = match &config.path {
            PathMatch::Exact(p) => Matcher::Exact(p.clone()),
            PathMatch::Prefix(p) => Matcher::Prefix(p.trim_end_matches('/').to_owned()),
            PathMatch::Template(t) => Matcher::Template(
                t.split('/')
                    .skip(1)
                    .map(
                        |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(name) => Segment::Param(name.into()),
                            None => Segment::Literal(s.to_owned()),
                        },
                    )
                    .collect(),
            ),
        };
        Self {
            config,
            index,
            matcher,
        }
    }

    fn match_path<'p>(&self, path: &'p str) -> Option<Params<'p>> {
        match &self.matcher {
            // One trailing `/` is the same resource: `/orders/` must not fall
            // through to a later, laxer route.
            Matcher::Exact(p) => {
                (p == path || path.strip_suffix('/') == Some(p)).then(Params::default)
            }
            Matcher::Prefix(p) => {
                let rest = path.strip_prefix(p.as_str())?;
                (rest.is_empty() || rest.starts_with('/') || p.is_empty()).then(Params::default)
            }
            Matcher::Template(segments) => {
                let mut parts = path[1..].split('/');
                let mut params = Vec::new();
                for seg in segments {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Param(name) if !part.is_empty() => {
                            params.push((name.clone(), part));
                        }
                        _ => return None,
                    }
                }
                match parts.next() {
                    None => Some(Params(params)),
                    Some("") if parts.next().is_none() => Some(Params(params)),
                    Some(_) => None,
                }
            }
        }
    }

    /// First literal path segment, used to index the table; `None` for routes
    /// that can match any first segment.
    fn first_segment(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Exact(p) | Matcher::Prefix(p) => {
                let seg = p.trim_start_matches('/').split('/').next().unwrap_or("");
                (!seg.is_empty()).then_some(seg)
            }
            Matcher::Template(segs) => match segs.first() {
                Some(Segment::Literal(l)) if !l.is_empty() => Some(l.as_str()),
                _ => None,
            },
        }
    }
}

/// Every route, in file order, indexed by first path segment. The index
/// is only ever filled from config, so a fast hasher is safe for it.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_first_segment: HashMap<String, Vec<usize>, foldhash::quality::RandomState>,
    any_first_segment: Vec<usize>,
    /// Whether any route matches on host (if none, the host is not needed).
    by_host: bool,
}

/// Request facts that select a route.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Host, lower case, without port or trailing dot.
    pub host: Option<&'a str>,
    /// Normalised path.
    pub path: &'a str,
}

impl RouteTable {
    /// Compiles `routes`, keeping their order.
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        let mut table = Self::default();
        for (i, config) in routes.into_iter().enumerate() {
            let route = Route::compile(i, config);
            match route.first_segment() {
                Some(seg) => table
                    .by_first_segment
                    .entry(seg.to_owned())
                    .or_default()
                    .push(i),
                None => table.any_first_segment.push(i),
            }
            table.by_host |= route.config.host.is_some();
            table.routes.push(route);
        }
        table
    }

    /// The first route with an upstream matching `target`, with its
    /// template parameters: what the proxy listener serves.
    pub fn find<'p>(&self, target: Target<'p>) -> Option<(&Route, Params<'p>)> {
        self.find_where(target, true)
    }

    /// The first route matching `target`, decision-only routes included:
    /// what the decision listener judges by.
    pub fn find_any<'p>(&self, target: Target<'p>) -> Option<(&Route, Params<'p>)> {
        self.find_where(target, false)
    }

    fn find_where<'p>(
        &self,
        target: Target<'p>,
        with_upstream: bool,
    ) -> Option<(&Route, Params<'p>)> {
        let first = target.path[1..].split('/').next().unwrap_or("");
        let indexed = self
            .by_first_segment
            .get(first)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (mut a, mut b) = (
            indexed.iter().peekable(),
            self.any_first_segment.iter().peekable(),
        );
        // Merge the two ascending index lists so file order decides.
        loop {
            let i = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => return None,
            };
            let route = &self.routes[*i?];
            if with_upstream && route.config.upstream.is_none() {
                continue;
            }
            if let Some(params) = route.matches(target) {
                return Some((route, params));
            }
        }
    }

    /// Whether any route matches on host: if none does, a request's host
    /// need not be worked out.
    pub fn by_host(&self) -> bool {
        self.by_host
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True without routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl Route {
    fn matches<'p>(&self, target: Target<'p>) -> Option<Params<'p>> {
        if let Some(host) = &self.config.host {
            if target.host != Some(host.as_str()) {
                return None;
            }
        }
        if let Some(methods) = &self.config.methods {
            if !methods.contains(target.method) {
                return None;
            }
        }
        self.match_path(target.path)
    }
}

#[cfg(test)]
mod tests;
