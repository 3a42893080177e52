//! `authgate dpop …`: a P-256 key for a DPoP client, its RFC 7638
//! thumbprint, and proofs made with it, so nobody has to write a proof by
//! hand to try DPoP (the demo prints a working example).

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// Writes a fresh P-256 key (PKCS#8 PEM, readable by its owner only) to
/// `out`; its thumbprint.
pub fn new_key(out: &Path) -> Result<String, String> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| "cannot generate a key".to_owned())?;
    let b64 = STANDARD.encode(doc.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    write_private(out, &pem).map_err(|e| format!("{}: {e}", out.display()))?;
    thumbprint(out)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

fn load(path: &Path) -> Result<EcdsaKeyPair, String> {
    let der = PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = der else {
        return Err(format!("{}: not a PKCS#8 key", path.display()));
    };
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.secret_pkcs8_der())
        .map_err(|_| format!("{}: not a P-256 key", path.display()))
}

fn public_jwk(key: &EcdsaKeyPair) -> serde_json::Value {
    let point = key.public_key().as_ref();
    serde_json::json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    })
}

/// The key's RFC 7638 thumbprint: what a bound token's `cnf.jkt` holds.
pub fn thumbprint(path: &Path) -> Result<String, String> {
    let key = load(path)?;
    crate::auth::dpop::thumbprint(&public_jwk(&key)).ok_or_else(|| "unusable key".to_owned())
}

/// A proof by the key at `path` for `method` `url` (and `token`'s `ath`,
/// and `nonce`), valid now.
pub fn proof(
    path: &Path,
    method: &str,
    url: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, String> {
    let key = load(path)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no random numbers".to_owned())?;
    let htu = url.split(['?', '#']).next().unwrap_or(url);
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&key)});
    let mut claims = serde_json::json!({
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "htm": method.to_ascii_uppercase(),
        "htu": htu,
        "iat": now.as_secs(),
    });
    if let Some(t) = token {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
        claims["ath"] = URL_SAFE_NO_PAD.encode(digest.as_ref()).into();
    }
    if let Some(n) = nonce {
        claims["nonce"] = n.into();
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|_| "cannot sign".to_owned())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}
