//! `decisions:`: the decision listener's address and who may ask it.

use super::*;

/// Who may ask when `trusted_proxies` is left out: this host only.
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

impl Validator<'_> {
    pub(super) fn decisions(&mut self, value: Option<Value>) -> Option<DecisionsConfig> {
        let f: DecisionsFile = match value {
            None => return None,
            Some(Value::Null) => DecisionsFile::default(),
            Some(v) => self.shape("decisions", v)?,
        };
        let Some(listen) = f.listen.as_deref() else {
            self.problem(
                "decisions.listen",
                "missing",
                "IP:PORT, like 127.0.0.1:9902",
            );
            return None;
        };
        let listen = self.addr("decisions.listen", Some(listen), "");
        let texts = match f.trusted_proxies {
            Some(list) => list,
            None => LOOPBACK.map(str::to_owned).to_vec(),
        };
        let mut trusted_proxies = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match Cidr::parse(text.trim()) {
                Some(c) => trusted_proxies.push(c),
                None => self.problem(
                    &format!("decisions.trusted_proxies[{i}]"),
                    format!("{text:?} is not an address range"),
                    "a CIDR like 10.0.0.0/8 or ::1/128, or one address",
                ),
            }
        }
        if trusted_proxies.is_empty() {
            self.problem(
                "decisions.trusted_proxies",
                "empty: no proxy could ask",
                "the addresses of the proxies in front (127.0.0.1/32 for a sidecar)",
            );
        }
        Some(DecisionsConfig {
            listen,
            trusted_proxies,
        })
    }
}
