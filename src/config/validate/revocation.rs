//! `revocation:`: the store, its URL (parsed as `run` parses it), its CA
//! file and grace.

use super::*;

impl Validator<'_> {
    pub(super) fn revocation(&mut self, value: Option<Value>) -> Option<RevocationConfig> {
        let f: RevocationFile = match value {
            None | Some(Value::Null) => RevocationFile::default(),
            Some(v) => self.shape("revocation", v)?,
        };
        let store = match f.store.as_deref().unwrap_or("memory") {
            "memory" => RevocationStore::Memory,
            "redis" => match f.redis_url {
                // Parsed by the redis crate's own URL parser, the one `run`
                // uses; no message shows the URL's password.
                Some(url) => match redis_url_problem(&url) {
                    None => RevocationStore::Redis(url),
                    Some(problem) => {
                        self.problem(
                            "revocation.redis_url",
                            problem,
                            "redis://HOST:PORT or rediss://HOST:PORT",
                        );
                        RevocationStore::Memory
                    }
                },
                None => {
                    self.problem(
                        "revocation.redis_url",
                        "missing for store: redis",
                        "redis://HOST:PORT",
                    );
                    RevocationStore::Memory
                }
            },
            other => {
                self.problem(
                    "revocation.store",
                    format!("unknown store {other:?}"),
                    "memory or redis",
                );
                RevocationStore::Memory
            }
        };
        let deny_on_store_error = match f.on_store_error.as_deref().unwrap_or("deny") {
            "deny" => true,
            "allow" => false,
            other => {
                self.problem(
                    "revocation.on_store_error",
                    format!("unknown policy {other:?}"),
                    "deny or allow",
                );
                true
            }
        };
        let ca_file = f.ca_file.map(|c| self.file("revocation.ca_file", &c));
        let store_grace = self.duration(
            "revocation.store_grace",
            f.store_grace.as_deref(),
            Duration::from_secs(5),
        );
        Some(RevocationConfig {
            store,
            deny_on_store_error,
            ca_file,
            store_grace,
        })
    }
}

/// What is wrong with a `redis_url`, if anything.
fn redis_url_problem(url: &str) -> Option<String> {
    use crate::telemetry::redact::{redact_in, redact_url};
    use redis::IntoConnectionInfo;
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Some(format!("{}: not a redis URL", redact_url(url)));
    }
    url.into_connection_info()
        .err()
        .map(|e| format!("{}: {}", redact_url(url), redact_in(&e.to_string(), url)))
}
