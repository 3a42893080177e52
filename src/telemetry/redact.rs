//! What of a secret may be logged: `token_fp`, the first 12 hex digits
//! of a token's SHA-256 (CONTRACT §6). Enough to correlate log lines and
//! find a token a user reports; useless for replaying it.

/// The first 12 hex digits of `digest` (a token's SHA-256).
pub fn fingerprint(digest: &[u8; 32]) -> String {
    let mut s = String::with_capacity(12);
    for b in &digest[..6] {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}
