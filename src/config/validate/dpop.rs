//! Sender-constrained tokens (CONTRACT §8.4): `issuers.NAME.dpop`,
//! `routes[i].auth.sender_constrained` and `server.tls.client_auth`.

use super::*;

/// Proof algorithms when `dpop.algorithms` is left out.
const DEFAULT_DPOP_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];
/// A nonce secret shared by replicas must be at least this long.
const MIN_NONCE_SECRET: usize = 32;

impl Validator<'_> {
    pub(super) fn dpop(&mut self, path: &str, f: Option<DpopFile>) -> DpopConfig {
        let announced = f.is_some();
        let f = f.unwrap_or_default();
        let path = join(path, "dpop");
        let mut algorithms = Vec::new();
        match f.algorithms {
            None => algorithms.extend(DEFAULT_DPOP_ALGORITHMS),
            Some(list) => {
                for (i, a) in list.iter().enumerate() {
                    let at = format!("{path}.algorithms[{i}]");
                    match Algorithm::from_str(a) {
                        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => self
                            .problem(
                                &at,
                                format!("{a:?} is not an asymmetric algorithm"),
                                "one of ES256 ES384 RS256 RS384 RS512 PS256 PS384 PS512 EdDSA",
                            ),
                        Ok(alg) => algorithms.push(alg),
                    }
                }
                if list.is_empty() {
                    self.problem(
                        &join(&path, "algorithms"),
                        "empty",
                        "at least one algorithm",
                    );
                }
            }
        }
        let max_age = self.duration(
            &join(&path, "max_age"),
            f.max_age.as_deref(),
            Duration::from_secs(300),
        );
        let nonce_secret = match f.nonce_secret_env {
            None => Secret(crate::auth::dpop::process_secret(&path)),
            Some(name) => match (self.lookup)(&name) {
                Some(v) if v.len() >= MIN_NONCE_SECRET => Secret(v.into_bytes()),
                Some(_) => {
                    self.problem(
                        &join(&path, "nonce_secret_env"),
                        format!("${name} is shorter than {MIN_NONCE_SECRET} bytes"),
                        "a random secret of at least 32 bytes",
                    );
                    Secret(Vec::new())
                }
                None => {
                    self.problem(
                        &join(&path, "nonce_secret_env"),
                        format!("${name} is not set"),
                        "the name of a variable holding the nonce secret",
                    );
                    Secret(Vec::new())
                }
            },
        };
        DpopConfig {
            announced,
            algorithms,
            max_age,
            nonce: f.nonce.unwrap_or(false),
            nonce_secret,
        }
    }

    /// `auth.sender_constrained`: `required` or `optional` (the default).
    pub(super) fn sender_constrained(&mut self, path: &str, text: Option<&str>) -> bool {
        match text.unwrap_or("optional") {
            "optional" => false,
            "required" => true,
            other => {
                self.problem(
                    &join(path, "sender_constrained"),
                    format!("unknown choice {other:?}"),
                    "optional or required",
                );
                false
            }
        }
    }

    /// `server.tls.client_auth`: `required` (the default with a CA file) or
    /// `optional`; either needs `client_ca_file`.
    pub(super) fn client_auth(&mut self, text: Option<&str>, has_ca: bool) -> bool {
        let path = "server.tls.client_auth";
        match (text, has_ca) {
            (None, _) | (Some("required"), true) => true,
            (Some("optional"), true) => false,
            (Some("required" | "optional"), false) => {
                self.problem(
                    path,
                    "needs server.tls.client_ca_file",
                    "the CA bundle client certificates are verified against",
                );
                true
            }
            (Some(other), _) => {
                self.problem(
                    path,
                    format!("unknown choice {other:?}"),
                    "optional or required",
                );
                true
            }
        }
    }
}
