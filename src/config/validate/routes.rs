//! `routes:`: matchers, upstreams, the auth policy and `forward:`.

use super::*;

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        value: Option<Value>,
        issuers: &[IssuerConfig],
        decisions: bool,
    ) -> Option<Vec<RouteConfig>> {
        let list = match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(s)) => s,
            Some(_) => {
                self.problem("routes", "not a list", "a list of routes");
                return None;
            }
        };
        let before = self.problems.len();
        let mut names = HashSet::new();
        let mut out = Vec::new();
        let mut hmac_users: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, value) in list.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(f) = self.shape::<RouteFile>(&path, value) else {
                continue;
            };
            if let Some(name) = &f.name {
                if !names.insert(name.clone()) {
                    self.problem(
                        &join(&path, "name"),
                        format!("route name {name:?} is used twice"),
                        "a unique name per route",
                    );
                }
            }
            if let Some(route) = self.route(&path, f, issuers, decisions) {
                if let RouteAuth::Protected(p) = &route.auth {
                    for name in &p.issuers {
                        if let Some(iss) = issuers.iter().find(|i| &i.name == name) {
                            if matches!(iss.keys, KeySource::Hmac(_)) {
                                *hmac_users.entry(&iss.name).or_default() += 1;
                            }
                        }
                    }
                }
                out.push(route);
            }
        }
        for (name, n) in hmac_users {
            if n > 1 {
                self.lint(
                    &format!("issuers.{name}.algorithms"),
                    format!("an HMAC secret shared by {n} routes: any of their upstreams holding it could mint tokens for the others"),
                    "an asymmetric algorithm for issuers that several routes share",
                );
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    pub(super) fn route(
        &mut self,
        path: &str,
        f: RouteFile,
        issuers: &[IssuerConfig],
        decisions: bool,
    ) -> Option<RouteConfig> {
        let name = match f.name {
            Some(n) if !n.is_empty() => n,
            _ => {
                self.problem(&join(path, "name"), "missing", "a unique route name");
                String::new()
            }
        };
        let m = match f.matcher {
            Some(m) => m,
            None => {
                self.problem(
                    &join(path, "match"),
                    "missing",
                    "a match with path, path_prefix or path_template",
                );
                MatchFile::default()
            }
        };
        let (host, path_match, methods, params) = self.matcher(&join(path, "match"), m);
        // CONTRACT §8.3: with a decision listener, a route without an
        // upstream is decision-only.
        let decision_only = decisions && f.upstream.is_none();
        let mut upstream = match decision_only {
            true => None,
            false => self.upstream(&join(path, "upstream"), f.upstream.as_deref()),
        };
        let auth = self.auth(&join(path, "auth"), f.auth, issuers, &params);
        let forward = f.forward.unwrap_or_default();
        let protocol = forward.protocol.clone();
        let forward = self.forward(&join(path, "forward"), forward);
        if forward.phantom_jwt {
            let signed = |n: &String| {
                issuers
                    .iter()
                    .any(|i| i.name == *n && i.introspection.as_ref().is_some_and(|c| c.signed))
            };
            let ok = matches!(&auth, Some(RouteAuth::Protected(p)) if p.issuers.iter().any(signed));
            if !ok {
                self.problem(
                    &join(path, "forward.authorization"),
                    "jwt needs an issuer of the route with introspection.response: jwt",
                    "strip or keep, or an issuer whose introspection answers are signed",
                );
            }
        }
        if let Some(up) = &mut upstream {
            self.protocol(&join(path, "forward.protocol"), protocol.as_deref(), up);
        }
        if forward.keep_authorization {
            if let Some(up) = &upstream {
                if !up.https && !is_loopback_host(up.authority.host()) {
                    self.lint(
                        &join(path, "forward.authorization"),
                        "keep sends bearer tokens in clear text to a non-loopback upstream",
                        "strip, or an https or loopback upstream",
                    );
                }
            }
        }
        Some(RouteConfig {
            name: name.into(),
            host,
            path: path_match?,
            methods,
            upstream: match decision_only {
                true => None,
                false => Some(upstream?),
            },
            auth: auth?,
            forward,
        })
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn matcher(
        &mut self,
        path: &str,
        m: MatchFile,
    ) -> (
        Option<String>,
        Option<PathMatch>,
        Option<Vec<Method>>,
        Vec<String>,
    ) {
        let host = m.host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let mut found = Vec::new();
        let mut params = Vec::new();
        if let Some(p) = m.path {
            found.push(("path", PathMatch::Exact(p)));
        }
        if let Some(p) = m.path_prefix {
            found.push((
                "path_prefix",
                PathMatch::Prefix(p.trim_end_matches('/').to_owned()),
            ));
        }
        if let Some(p) = m.path_template {
            found.push(("path_template", PathMatch::Template(p)));
        }
        if found.len() != 1 {
            self.problem(
                path,
                if found.is_empty() {
                    "no path matcher".to_owned()
                } else {
                    let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
                    format!("several path matchers: {}", names.join(", "))
                },
                "exactly one of path, path_prefix, path_template",
            );
        }
        let mut path_match = None;
        if let Some((key, pm)) = found.into_iter().next() {
            let pattern = match &pm {
                PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Template(p) => p,
            };
            let is_template = matches!(pm, PathMatch::Template(_));
            let original = if pattern.is_empty() { "/" } else { pattern };
            match crate::routing::path::check_pattern(original, is_template) {
                Ok(p) => {
                    params = p;
                    path_match = Some(pm);
                }
                Err(problem) => self.problem(
                    &join(path, key),
                    problem,
                    "a normalised absolute path like /orders or /tenants/{tenant}/orders",
                ),
            }
        }
        let methods = m.methods.map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| match Method::from_bytes(text.as_bytes()) {
                    Ok(m) if text.bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
                    _ => {
                        self.problem(
                            &format!("{path}.methods[{i}]"),
                            format!("{text:?} is not an HTTP method"),
                            "an upper-case method like GET",
                        );
                        None
                    }
                })
                .collect()
        });
        (host, path_match, methods, params)
    }

    pub(super) fn upstream(&mut self, path: &str, text: Option<&str>) -> Option<Upstream> {
        const EXPECTED: &str = "http://HOST:PORT, https://HOST:PORT or h2c://HOST:PORT";
        let Some(text) = text else {
            self.problem(
                path,
                "missing (only routes of a config with decisions: may leave it out)",
                EXPECTED,
            );
            return None;
        };
        let bad = |v: &mut Self, why: &str| {
            v.problem(path, format!("{text:?} {why}"), EXPECTED);
            None
        };
        let Ok(uri) = text.parse::<http::Uri>() else {
            return bad(self, "is not a URL");
        };
        let (https, http2) = match uri.scheme_str() {
            Some("http") => (false, false),
            Some("https") => (true, false),
            Some("h2c") => (false, true),
            _ => return bad(self, "is not an http, https or h2c URL"),
        };
        let Some(authority) = uri.authority().cloned() else {
            return bad(self, "has no host");
        };
        if authority.as_str().contains('@') {
            return bad(self, "carries credentials");
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return bad(self, "has a path or query, which authgate does not rewrite");
        }
        let Ok(host) = http::HeaderValue::from_str(authority.as_str()) else {
            return bad(self, "has a host that cannot be a Host header");
        };
        Some(Upstream {
            https,
            http2,
            authority,
            host,
        })
    }

    /// `forward.protocol`: `http2` turns an https upstream into HTTP/2 over
    /// TLS; `h2c://` is HTTP/2 whatever it says, so only `http2` fits it.
    fn protocol(&mut self, path: &str, text: Option<&str>, up: &mut Upstream) {
        let h2c = up.http2;
        match (text, up.https, h2c) {
            (None, ..) => {}
            (Some("http1"), _, false) => {}
            (Some("http2"), true, _) => up.http2 = true,
            (Some("http2"), false, true) => {}
            (Some("http2"), false, false) => self.problem(
                path,
                "http2 needs an https:// upstream (ALPN h2)",
                "http1, an https:// upstream, or h2c://HOST:PORT for cleartext HTTP/2",
            ),
            (Some("http1"), _, true) => self.problem(
                path,
                "an h2c:// upstream is always HTTP/2",
                "http2 or no protocol, or an http:// upstream",
            ),
            (Some(other), ..) => {
                self.problem(path, format!("unknown choice {other:?}"), "http1 or http2")
            }
        }
    }

    pub(super) fn auth(
        &mut self,
        path: &str,
        value: Option<Value>,
        issuers: &[IssuerConfig],
        params: &[String],
    ) -> Option<RouteAuth> {
        let value = match value {
            None => {
                self.problem(
                    path,
                    "missing",
                    "`public` or a policy with issuers; there is no implicit public route",
                );
                return None;
            }
            Some(Value::String(s)) if s == "public" => return Some(RouteAuth::Public),
            Some(Value::String(s)) => {
                self.problem(
                    path,
                    format!("{s:?} is not a policy"),
                    "`public` or a policy",
                );
                return None;
            }
            Some(v) => v,
        };
        let f: PolicyFile = self.shape(path, value)?;
        let before = self.problems.len();
        let names = f.issuers.unwrap_or_default();
        if names.is_empty() {
            self.problem(
                &join(path, "issuers"),
                "missing",
                "the names of the issuers whose tokens this route accepts",
            );
        }
        let chosen = self.chosen_issuers(path, &names, issuers);
        self.audience_rule(path, f.audiences.as_deref(), &chosen);
        let claims = self.claim_constraints(path, f.claims, params);
        let token_from = self.token_sources(path, f.token_from);
        let sender_constrained = self.sender_constrained(path, f.sender_constrained.as_deref());
        let browser = self.browser(
            path,
            f.allowed_origins.as_deref(),
            f.cors_preflight.as_deref(),
            f.optional,
            &token_from,
        );
        let resource_metadata = f
            .resource_metadata
            .and_then(|m| self.resource_metadata(&join(path, "resource_metadata"), m))
            .map(Box::new);
        (self.problems.len() == before).then_some({
            RouteAuth::Protected(Box::new(Policy {
                issuers: names,
                audiences: f.audiences,
                clients: f.clients,
                scopes_all: f.scopes_all,
                scopes_any: f.scopes_any,
                claims,
                token_from,
                sender_constrained,
                allowed_origins: browser.0,
                cors_preflight: browser.1,
                optional: browser.2,
                resource_metadata,
            }))
        })
    }

    /// The route's issuers by name; at most one may introspect.
    fn chosen_issuers<'i>(
        &mut self,
        path: &str,
        names: &[String],
        issuers: &'i [IssuerConfig],
    ) -> Vec<&'i IssuerConfig> {
        let mut chosen = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match issuers.iter().find(|c| &c.name == name) {
                Some(c) => chosen.push(c),
                None => {
                    let known: Vec<&str> = issuers.iter().map(|c| c.name.as_str()).collect();
                    self.problem(
                        &format!("{path}.issuers[{i}]"),
                        format!("unknown issuer {name:?}"),
                        if known.is_empty() {
                            "an issuer defined under issuers:".to_owned()
                        } else {
                            format!("one of {}", known.join(", "))
                        },
                    );
                }
            }
        }
        let introspecting: Vec<&str> = chosen
            .iter()
            .filter(|c| c.introspection.is_some())
            .map(|c| c.name.as_str())
            .collect();
        if introspecting.len() > 1 {
            self.problem(
                &join(path, "issuers"),
                format!(
                    "several issuers with introspection ({}), but an opaque token does not say which one issued it",
                    introspecting.join(", ")
                ),
                "at most one issuer with introspection per route",
            );
        }
        chosen
    }

    /// CONTRACT §2: a protected route never accepts any audience.
    fn audience_rule(
        &mut self,
        path: &str,
        audiences: Option<&[String]>,
        chosen: &[&IssuerConfig],
    ) {
        match audiences {
            Some([]) => self.problem(
                &join(path, "audiences"),
                "empty, so any audience would pass",
                "at least one audience",
            ),
            Some(_) => {}
            None => {
                for c in chosen {
                    // Only an issuer with no keys at all is exempt: one
                    // that also verifies JWTs would pass them with any `aud`.
                    let jwt_issuer =
                        !matches!(c.keys, KeySource::IntrospectionOnly | KeySource::ApiKeys(_));
                    if c.audiences.is_empty() && jwt_issuer {
                        self.problem(
                            &join(path, "audiences"),
                            format!(
                                "no audience for issuer {:?}, so any audience would pass",
                                c.name
                            ),
                            format!("audiences here or in issuers.{}.audiences", c.name),
                        );
                    }
                }
            }
        }
    }

    /// `claims:`, with `{path.NAME}` bound to the route's template.
    fn claim_constraints(
        &mut self,
        path: &str,
        wanted: BTreeMap<String, String>,
        params: &[String],
    ) -> Vec<(String, ClaimValue)> {
        let mut claims = Vec::new();
        for (claim, value) in wanted {
            let at = format!("{path}.claims.{claim}");
            let v = match value
                .strip_prefix("{path.")
                .and_then(|r| r.strip_suffix('}'))
            {
                Some(param) if params.iter().any(|p| p == param) => {
                    ClaimValue::PathParam(param.to_owned())
                }
                Some(param) => {
                    self.problem(
                        &at,
                        format!(
                            "{{path.{param}}} is not a parameter of this route's path_template"
                        ),
                        if params.is_empty() {
                            "a path_template with that {parameter}".to_owned()
                        } else {
                            format!(
                                "one of {}",
                                params
                                    .iter()
                                    .map(|p| format!("{{path.{p}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        },
                    );
                    continue;
                }
                None => ClaimValue::Literal(value),
            };
            claims.push((claim, v));
        }
        claims
    }

    /// `token_from:` (default `[header]`).
    fn token_sources(&mut self, path: &str, sources: Option<Vec<String>>) -> Vec<TokenSource> {
        let mut token_from = Vec::new();
        for (i, s) in sources
            .unwrap_or_else(|| vec!["header".into()])
            .iter()
            .enumerate()
        {
            match s.as_str() {
                "header" => token_from.push(TokenSource::Header),
                c if c.starts_with("cookie:") && c.len() > 7 => {
                    token_from.push(TokenSource::Cookie(c[7..].to_owned()))
                }
                h if h.starts_with("header:") => {
                    match http::HeaderName::from_bytes(&h.as_bytes()[7..]) {
                        Ok(name)
                            if name != http::header::AUTHORIZATION
                                && name != http::header::COOKIE =>
                        {
                            token_from.push(TokenSource::NamedHeader(name))
                        }
                        _ => self.problem(
                            &format!("{path}.token_from[{i}]"),
                            format!("{h:?} does not name a usable header"),
                            "header:X-Api-Key (Authorization is `header`, cookies `cookie:NAME`)",
                        ),
                    }
                }
                other => self.problem(
                    &format!("{path}.token_from[{i}]"),
                    format!("unknown token source {other:?}"),
                    "header, header:NAME or cookie:NAME",
                ),
            }
        }
        token_from
    }
}
