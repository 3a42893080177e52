//! A JWKS document turned into verification keys. Each key remembers what it
//! may verify (`kty`, `crv`, `alg`), so a token can never pick a key of the
//! wrong family. Keys we cannot or must not use are skipped with a log line.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

pub use super::jwk::{KeyFamily, VerifyKey};
use serde::Deserialize;
use serde_json::Value;

/// The result of looking a key up.
#[derive(Debug)]
pub enum Lookup {
    /// This key, which fits the algorithm.
    Found(Arc<VerifyKey>),
    /// A key with this kid exists but may not verify this algorithm.
    WrongFamily,
    /// No such key.
    Unknown,
}

/// An issuer's current keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// A set holding one HMAC secret.
    pub fn hmac(secret: &[u8]) -> Self {
        Self {
            keys: vec![Arc::new(VerifyKey {
                kid: None,
                family: KeyFamily::Hmac,
                alg: None,
                key: DecodingKey::from_secret(secret),
                parsed: Vec::new(),
                id: [0; 32],
            })],
        }
    }

    /// Parses a JWKS document; `Err` only when the document itself is unusable.
    pub fn from_jwks(issuer: &str, bytes: &[u8]) -> Result<Self, &'static str> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes)
            .map_err(|_| "not a JWKS document (a JSON object with a keys array)")?;
        let mut keys: Vec<Arc<VerifyKey>> = Vec::with_capacity(doc.keys.len().min(64));
        // One summary line per document, not one per skipped key: a junk
        // JWKS of 512 KiB would otherwise write a line per entry per refresh.
        let mut skipped = 0usize;
        let mut first_skipped: Option<(usize, &'static str)> = None;
        for (i, jwk) in doc.keys.iter().enumerate() {
            let why = match super::jwk::parse(jwk) {
                Ok(key) if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) => {
                    "duplicate kid (the first is kept)"
                }
                Ok(key) => {
                    keys.push(Arc::new(key));
                    continue;
                }
                Err(why) => why,
            };
            skipped += 1;
            first_skipped.get_or_insert((i, why));
        }
        if let Some((index, why)) = first_skipped {
            tracing::warn!(
                issuer,
                skipped,
                usable = keys.len(),
                first_index = index,
                first_reason = why,
                "skipped JWKs in the key document"
            );
        }
        Ok(Self { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True without usable keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when the key `id` is still published (under `kid`, if given).
    pub fn contains(&self, kid: Option<&str>, id: &[u8; 32]) -> bool {
        self.keys
            .iter()
            .any(|k| &k.id == id && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// The key to verify a token with `kid` and `alg`. Without a kid, the
    /// single key fitting `alg` is used; several candidates are ambiguous.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Lookup::Unknown;
                }
                named
                    .find(|k| k.fits(alg))
                    .map_or(Lookup::WrongFamily, |k| Lookup::Found(k.clone()))
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Lookup::Found(k.clone()),
                    _ => Lookup::Unknown,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: &str = r#"{"kty":"EC","crv":"P-256","kid":"e1","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    /// Counts the lines a closure logs.
    fn log_lines(f: impl FnOnce()) -> usize {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = lines.0.lock().unwrap().clone();
        text.iter().filter(|b| **b == b'\n').count()
    }

    #[test]
    fn a_junk_document_logs_one_summary_line_not_one_per_key() {
        let junk: Vec<String> = (0..5_000)
            .map(|i| format!(r#"{{"kty":"XX","kid":"k{i}"}}"#))
            .collect();
        let doc = format!(r#"{{"keys":[{},{EC}]}}"#, junk.join(","));
        let mut set = None;
        let lines = log_lines(|| set = Some(KeySet::from_jwks("idp", doc.as_bytes()).unwrap()));
        assert_eq!(lines, 1);
        assert_eq!(set.unwrap().len(), 1, "the usable key is kept");
    }

    #[test]
    fn keys_verify_only_their_own_family_and_alg() {
        let doc = format!(
            r#"{{"keys":[{EC},{{"kty":"oct","k":"c2VjcmV0","kid":"h"}},
            {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"a","y":"b"}},
            {{"kty":"EC","crv":"secp256k1","kid":"k","x":"a","y":"b"}}]}}"#
        );
        let set = KeySet::from_jwks("t", doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.find(Some("e1"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("e1"), Algorithm::HS256),
            Lookup::WrongFamily
        ));
        assert!(matches!(
            set.find(Some("e1"), Algorithm::RS256),
            Lookup::WrongFamily
        ));
        assert!(matches!(
            set.find(Some("h"), Algorithm::HS256),
            Lookup::Unknown
        ));
        assert!(matches!(set.find(None, Algorithm::ES256), Lookup::Found(_)));
    }

    #[test]
    fn a_jwk_alg_restricts_the_key() {
        let doc = EC.replace(r#""use":"sig","#, r#""use":"sig","alg":"ES384","#);
        let set = KeySet::from_jwks("t", format!(r#"{{"keys":[{doc}]}}"#).as_bytes()).unwrap();
        assert!(set.is_empty(), "ES384 on a P-256 key must be skipped");
    }

    #[test]
    fn documents_without_keys_are_refused() {
        assert!(KeySet::from_jwks("t", b"<html>").is_err());
        assert!(KeySet::from_jwks("t", br#"{"keys":{}}"#).is_err());
    }
}
