//! `routes[i].forward`: identity headers, `authorization`, timeouts, the CA
//! file and the destination's connection cap.

use super::*;

impl Validator<'_> {
    pub(super) fn forward(&mut self, path: &str, f: ForwardFile) -> ForwardConfig {
        let mut headers = Vec::new();
        match f.headers {
            None => {
                for (h, c) in DEFAULT_IDENTITY_HEADERS {
                    headers.push((HeaderName::from_static(h), c.to_owned()));
                }
            }
            Some(map) => {
                for (name, claim) in map {
                    let at = format!("{path}.headers.{name}");
                    match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(h) if crate::proxy::names::is_reserved(&h) => self.problem(
                            &at,
                            format!("{name} is set by the gateway itself"),
                            "an identity header name like X-Auth-Tenant",
                        ),
                        Ok(h) => headers.push((h, claim)),
                        Err(_) => self.problem(
                            &at,
                            "not a valid header name",
                            "a token like X-Auth-Tenant",
                        ),
                    }
                }
            }
        }
        let (keep_authorization, phantom_jwt) = match f.authorization.as_deref().unwrap_or("strip")
        {
            "strip" => (false, false),
            "keep" => (true, false),
            "jwt" => (false, true),
            other => {
                self.problem(
                    &join(path, "authorization"),
                    format!("unknown choice {other:?}"),
                    "strip, keep or jwt",
                );
                (false, false)
            }
        };
        ForwardConfig {
            client_cert: f.client_cert.unwrap_or(false),
            headers,
            keep_authorization,
            phantom_jwt,
            timeout: self.duration(
                &join(path, "timeout"),
                f.timeout.as_deref(),
                Duration::from_secs(30),
            ),
            connect_timeout: self.duration(
                &join(path, "connect_timeout"),
                f.connect_timeout.as_deref(),
                Duration::from_secs(5),
            ),
            ca_file: f.ca_file.map(|c| self.file(&join(path, "ca_file"), &c)),
            max_connections: match f.max_connections.unwrap_or(DEFAULT_UPSTREAM_CONNECTIONS) {
                n @ 1..=MAX_UPSTREAM_CONNECTIONS => n as usize,
                n => {
                    self.problem(
                        &join(path, "max_connections"),
                        format!("{n} is out of range"),
                        format!("1 to {MAX_UPSTREAM_CONNECTIONS}"),
                    );
                    DEFAULT_UPSTREAM_CONNECTIONS as usize
                }
            },
        }
    }
}
