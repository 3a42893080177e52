//! What of a secret may be logged: `token_fp`, the first 12 hex digits
//! of a token's SHA-256 (CONTRACT §6), enough to correlate log lines and
//! find a token a user reports, useless for replaying it; and URLs with
//! their password masked.

/// The first 12 hex digits of `digest` (a token's SHA-256).
pub fn fingerprint(digest: &[u8; 32]) -> String {
    hex(&digest[..6])
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// `text` with the password of `url`, wherever it appears, replaced.
pub fn redact_in(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(url, &redact_url(url)).replace(p, "***"),
        None => text.to_owned(),
    }
}
