//! Path normalisation, the one reading of a request path (CONTRACT §8.1):
//! the same normalised path is matched and forwarded, so a route can never
//! be reached by a spelling its plain path would not match. A leaf: config
//! checks route patterns with it, routing matches with it.

use std::borrow::Cow;

/// Why a request path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// Not an absolute path.
    #[error("the request path must start with /")]
    NotAbsolute,
    /// `.` or `..` in any spelling.
    #[error("dot segments are not allowed in the request path")]
    DotSegment,
    /// `%2F`, `%5C`, a raw `\`, NUL or a control character.
    #[error(
        "encoded slashes, backslashes and control characters are not allowed in the request path"
    )]
    ForbiddenCharacter,
    /// `;` raw or as `%3B`: path parameters are read differently by
    /// different servers (Tomcat drops them, others keep them).
    #[error("';' is not allowed in the request path")]
    Semicolon,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the request path")]
    BadEscape,
}

/// Normalises `raw` per the module rules; borrowed when already normal.
pub fn normalise(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(BadPath::NotAbsolute);
    }
    if is_plain(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut segment = String::new();
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if i == last && !out.is_empty() {
                out.push('/');
            }
            continue;
        }
        segment.clear();
        decode_segment(seg, &mut segment)?;
        check_dots(&segment)?;
        out.push('/');
        out.push_str(&segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when no rule can change or refuse the path (the common case).
fn is_plain(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                let next = bytes.get(i + 1).copied().unwrap_or(b'/');
                if matches!(next, b'/' | b'.' | b';') {
                    return false;
                }
            }
            _ if b < 0x20 || b == 0x7f => return false,
            _ => {}
        }
        prev = b;
    }
    true
}

fn decode_segment(seg: &str, out: &mut String) -> Result<(), BadPath> {
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadPath::BadEscape)?;
            let value = hex_value(hex[0])
                .zip(hex_value(hex[1]))
                .map(|(h, l)| h << 4 | l)
                .ok_or(BadPath::BadEscape)?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value as char);
            } else if value < 0x20 || matches!(value, b'/' | b'\\' | 0x7f) {
                return Err(BadPath::ForbiddenCharacter);
            } else if value == b';' {
                return Err(BadPath::Semicolon);
            } else {
                out.push('%');
                out.push(HEX[(value >> 4) as usize] as char);
                out.push(HEX[(value & 15) as usize] as char);
            }
            i += 3;
        } else if b == b';' {
            return Err(BadPath::Semicolon);
        } else if b == b'\\' || b < 0x20 || b == 0x7f {
            return Err(BadPath::ForbiddenCharacter);
        } else {
            // Copy the run of plain bytes up to the next escape at once (keeps UTF-8 intact).
            let end = bytes[i..]
                .iter()
                .position(|&c| c == b'%' || c == b'\\' || c == b';' || c < 0x20 || c == 0x7f)
                .map_or(bytes.len(), |p| i + p);
            out.push_str(&seg[i..end]);
            i = end;
        }
    }
    Ok(())
}

fn check_dots(segment: &str) -> Result<(), BadPath> {
    if segment == "." || segment == ".." {
        Err(BadPath::DotSegment)
    } else {
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks a configured pattern is already normal; returns template parameter names.
pub fn check_pattern(pattern: &str, template: bool) -> Result<Vec<String>, String> {
    let mut params = Vec::new();
    let mut plain = String::with_capacity(pattern.len());
    for (i, seg) in pattern.split('/').enumerate() {
        if i > 0 {
            plain.push('/');
        }
        if template && seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
            let name = &seg[1..seg.len() - 1];
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("parameter {{{name}}} has an invalid name"));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            params.push(name.to_owned());
            plain.push('x');
        } else if seg.contains(['{', '}']) {
            return Err(if template {
                format!("segment {seg:?} mixes text and a parameter")
            } else {
                "braces are only meaningful in path_template".to_owned()
            });
        } else {
            plain.push_str(seg);
        }
    }
    match normalise(&plain) {
        Ok(n) if n == plain => Ok(params),
        Ok(n) => Err(format!(
            "{pattern:?} is not normalised (it would match as {n:?})"
        )),
        Err(e) => Err(format!("{pattern:?}: {e}")),
    }
}
