//! API keys stored as digests (CONTRACT §8.5): a YAML list of
//! `{sha256, subject, client_id, scopes, claims, expires_at}`. A presented
//! key is hashed and looked up by its SHA-256; no key exists in plain text
//! at rest, and none is ever compared byte by byte, so how long a wrong
//! key's matching prefix is cannot show in the answer's timing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::failure::AuthFailure;
use super::verify::Verified;

/// The largest key file read (about 10,000 entries).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One entry of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sha256: String,
    subject: String,
    client_id: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
    expires_at: Option<i64>,
}

/// An issuer's keys, by digest; each entry's claims prepared once.
#[derive(Debug)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], Arc<Verified>>,
}

impl ApiKeys {
    /// Reads `path` for issuer `issuer`; every problem is an error (a bad
    /// file at reload keeps the old keys serving).
    pub fn load(path: &Path, issuer: &str) -> Result<Self, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!("{} is over {MAX_FILE_BYTES} bytes", path.display()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries: Vec<Entry> = match serde_yaml_ng::from_str::<Option<Vec<Entry>>>(&text) {
            Ok(list) => list.unwrap_or_default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let issuer: Arc<str> = issuer.into();
        let mut by_digest = HashMap::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let digest = decode_hex32(&e.sha256)
                .ok_or_else(|| format!("entry {i}: sha256 is not 64 hex digits"))?;
            if e.subject.is_empty() {
                return Err(format!("entry {i}: subject is empty"));
            }
            let verified = verified(&issuer, digest, e);
            if by_digest.insert(digest, Arc::new(verified)).is_some() {
                return Err(format!("entry {i}: the same digest appears twice"));
            }
        }
        Ok(Self { by_digest })
    }

    /// The key whose SHA-256 is `digest`, unless it expired.
    pub fn lookup(
        &self,
        digest: &[u8; 32],
        now: f64,
    ) -> Option<Result<Arc<Verified>, AuthFailure>> {
        let found = self.by_digest.get(digest)?;
        Some(match found.exp <= now {
            true => Err(AuthFailure::Expired),
            false => Ok(found.clone()),
        })
    }
}

/// The claims a key stands for: `sub`, `client_id`, `scope`, `iss` (the
/// issuer's name) and its own `claims` (which cannot override those).
fn verified(issuer: &Arc<str>, digest: [u8; 32], e: Entry) -> Verified {
    let mut claims = e.claims;
    claims.insert("sub".into(), e.subject.into());
    claims.insert("iss".into(), Value::String(issuer.to_string()));
    if let Some(c) = e.client_id {
        claims.insert("client_id".into(), c.into());
    }
    if !e.scopes.is_empty() {
        claims.insert("scope".into(), e.scopes.join(" ").into());
    }
    Verified {
        issuer: issuer.clone(),
        kid: None,
        key_id: digest,
        claims,
        exp: e.expires_at.map_or(f64::MAX, |t| t as f64),
        digest,
        identity: OnceLock::new(),
        phantom: None,
    }
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh key (256 random bits, base64url) and its file entry.
pub fn new_key(subject: &str, scopes: &[String]) -> Result<(String, String), String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no random numbers".to_owned())?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let hex = crate::telemetry::redact::hex(digest.as_ref());
    let mut entry = format!(
        "- sha256: \"{hex}\"\n  subject: {}\n",
        serde_json::Value::from(subject)
    );
    if !scopes.is_empty() {
        entry.push_str(&format!(
            "  scopes: {}\n",
            serde_json::Value::from(scopes.to_vec())
        ));
    }
    Ok((key, entry))
}
