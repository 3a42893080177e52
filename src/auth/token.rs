//! Strict parsing of a JWS compact token (RFC 7515 §7.1, RFC 8725): three
//! unpadded base64url segments, a header and a payload that are JSON objects
//! without duplicate members. Parsing trusts nothing and verifies nothing;
//! `verify.rs` decides.
//!
//! The payload is read twice, in two strengths: [`Jws::early`] reads only
//! `iss` and the time claims, which the checks before the signature need,
//! and [`Jws::claims`] builds every claim once the signature holds. The
//! header likewise: duplicates among the names `parse` reads are refused at
//! once, the rest by [`Jws::claims`]. A forged token of hundreds of tiny
//! members then costs a scan, not a map and a hash set of them: what an
//! unsigned token costs stays close to what its size costs.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::failure::AuthFailure;
use crate::telemetry::redact::fingerprint;

/// Largest token accepted (bytes).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `kid` accepted (CONTRACT §8.1); real ones are UUIDs or thumbprints.
pub const MAX_KID_BYTES: usize = 256;

/// A bearer token as received. `Debug` prints only its fingerprint.
#[derive(Clone, Copy)]
pub struct BearerToken<'a>(pub &'a str);

impl BearerToken<'_> {
    /// SHA-256 of the token bytes: the verified-cache key and the log fingerprint.
    pub fn digest(&self) -> [u8; 32] {
        self.digests().0
    }

    /// The token's SHA-256 and, for a JWS, that of its signing input
    /// (everything before the last `.`), in one pass over the bytes: the
    /// signing input is the token's prefix, so its hash is the running
    /// hash's state at the last `.`, copied. RS256, PS256 and ES256 verify
    /// that digest instead of hashing the signing input a second time.
    pub fn digests(&self) -> ([u8; 32], Option<aws_lc_rs::digest::Digest>) {
        use aws_lc_rs::digest::{Context, SHA256};
        let bytes = self.0.as_bytes();
        let mut running = Context::new(&SHA256);
        let signing = self.0.rfind('.').map(|dot| {
            running.update(&bytes[..dot]);
            let signing = running.clone().finish();
            running.update(&bytes[dot..]);
            signing
        });
        if signing.is_none() {
            running.update(bytes);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(running.finish().as_ref());
        (out, signing)
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(fp={})", fingerprint(&self.digest()))
    }
}

/// True for the JWS compact shape (three dot-separated segments); anything
/// else is an opaque token, for introspection when the route allows it.
pub fn looks_like_jws(token: &[u8]) -> bool {
    token.iter().filter(|b| **b == b'.').count() == 2
}

/// The JOSE header fields authgate reads. Key-locating headers (`jku`,
/// `x5u`, `jwk`, `x5c`) are deliberately not kept: they are never used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    /// `alg`; `None` when the value names no algorithm we know (incl. `none`).
    pub alg: Option<Algorithm>,
    /// `kid`.
    pub kid: Option<String>,
    /// `typ`, as sent.
    pub typ: Option<String>,
}

/// A token split and decoded, not yet verified.
#[derive(Debug)]
pub struct Jws<'t> {
    /// Decoded header.
    pub header: JoseHeader,
    /// Decoded payload, read by [`Jws::early`] and [`Jws::claims`].
    payload: Vec<u8>,
    /// Whether the header has members authgate does not read, whose
    /// uniqueness [`Jws::claims`] checks.
    header_others: bool,
    /// `BASE64URL(header) . BASE64URL(payload)`, the signed bytes.
    pub signing_input: &'t str,
    /// The signature segment, still base64url.
    pub signature_b64: &'t str,
    /// The signature, decoded (once: the verification uses these bytes).
    pub signature: Vec<u8>,
}

/// Parses `token` strictly; see the module doc.
pub fn parse(token: &str) -> Result<Jws<'_>, AuthFailure> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed("token is larger than 16384 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed(
            "token is not a JWS in compact form (three dot-separated parts)",
        ));
    };
    // A header (about 100 bytes) is decoded onto the stack: it is read
    // here and dropped. Longer ones, which are legal, get a vector.
    let mut stack = [0u8; 512];
    let long: Vec<u8>;
    let header_bytes: &[u8] = match URL_SAFE_NO_PAD.decode_slice(h, &mut stack) {
        Ok(n) => &stack[..n],
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
            long = decode(h)?;
            &long
        }
        Err(base64::DecodeSliceError::DecodeError(_)) => return Err(not_base64url()),
    };
    let payload = decode(p)?;
    let signature = decode(s)?;
    let (header, header_others) = parse_header(header_bytes)?;
    Ok(Jws {
        header,
        payload,
        header_others,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature_b64: s,
        signature,
    })
}

/// What the checks before the signature read from the payload.
#[derive(Debug)]
pub struct Early<'p> {
    /// `iss` when it is a string.
    pub iss: Option<Cow<'p, str>>,
    /// `exp`, `nbf`, `iat`.
    pub times: Times,
}

/// The time claims, seconds since the epoch (fractions allowed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Times {
    /// `exp`.
    pub exp: Option<f64>,
    /// `nbf`.
    pub nbf: Option<f64>,
    /// `iat`.
    pub iat: Option<f64>,
}

impl Times {
    /// The time claims of an already built claims map (an introspection
    /// answer): a member that is not a number counts as absent there.
    pub fn of(claims: &Map<String, Value>) -> Self {
        let get = |name| claims.get(name).and_then(Value::as_f64);
        Times {
            exp: get("exp"),
            nbf: get("nbf"),
            iat: get("iat"),
        }
    }
}

impl Jws<'_> {
    /// `iss` and the time claims, read without building the other claims
    /// (their names are compared unescaped, and each may appear once);
    /// the time claims must be JSON numbers.
    pub fn early(&self) -> Result<Early<'_>, AuthFailure> {
        let scan =
            serde_json::from_slice::<Scan<'_>>(&self.payload).map_err(|_| not_an_object())?;
        if scan.time_not_a_number {
            return Err(AuthFailure::Malformed(
                "exp, nbf and iat must be JSON numbers",
            ));
        }
        Ok(scan.early)
    }

    /// Every claim, for a token whose signature holds: the whole payload,
    /// without duplicate members, and a header without duplicates among the
    /// members `parse` did not read.
    pub fn claims(&self) -> Result<Map<String, Value>, AuthFailure> {
        if self.header_others {
            let (segment, _) = self.signing_input.split_once('.').unwrap_or_default();
            let json = decode(segment)?;
            // Signed, so a map of its members costs no one but the issuer.
            serde_json::from_slice::<UniqueObject>(&json).map_err(|_| not_an_object_header())?;
        }
        serde_json::from_slice::<UniqueObject>(&self.payload)
            .map(|o| o.0)
            .map_err(|_| not_an_object())
    }
}

fn not_an_object_header() -> AuthFailure {
    AuthFailure::Malformed("token header is not a JSON object without duplicate members")
}

fn not_an_object() -> AuthFailure {
    AuthFailure::Malformed("token payload is not a JSON object without duplicate members")
}

/// [`Early`] as scanned, and whether a time claim was not a number (told
/// apart from a payload that is not an object, for the client's message).
struct Scan<'p> {
    early: Early<'p>,
    time_not_a_number: bool,
}

impl<'de> Deserialize<'de> for Scan<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scan<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Scan<'de>, A::Error> {
                let mut iss: Option<Text<'de>> = None;
                let mut times = [None; 3];
                let mut time_not_a_number = false;
                while let Some(key) = access.next_key::<Text<'de>>()? {
                    let Text::Str(name) = key else {
                        return Err(serde::de::Error::custom("member name not a string"));
                    };
                    let time = match &*name {
                        "iss" if iss.is_none() => {
                            iss = Some(access.next_value()?);
                            continue;
                        }
                        "iss" => return Err(serde::de::Error::custom("duplicate member")),
                        "exp" => &mut times[0],
                        "nbf" => &mut times[1],
                        "iat" => &mut times[2],
                        _ => {
                            access.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if time.is_some() {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    // A number holds no allocation; anything else is
                    // refused below, once the payload is known to be JSON.
                    match access.next_value::<Value>()? {
                        Value::Number(n) => *time = n.as_f64(),
                        _ => {
                            *time = Some(f64::NAN);
                            time_not_a_number = true;
                        }
                    }
                }
                let [exp, nbf, iat] = times;
                let iss = match iss {
                    Some(Text::Str(s)) => Some(s),
                    _ => None,
                };
                Ok(Scan {
                    early: Early {
                        iss,
                        times: Times { exp, nbf, iat },
                    },
                    time_not_a_number,
                })
            }
        }
        d.deserialize_map(V)
    }
}

fn decode(segment: &str) -> Result<Vec<u8>, AuthFailure> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| not_base64url())
}

fn not_base64url() -> AuthFailure {
    AuthFailure::Malformed("token segments must be unpadded base64url")
}

/// The header's rules, and whether it has members authgate does not read.
fn parse_header(bytes: &[u8]) -> Result<(JoseHeader, bool), AuthFailure> {
    let header = serde_json::from_slice::<RawHeader>(bytes).map_err(|_| not_an_object_header())?;
    if header.crit {
        return Err(AuthFailure::Malformed(
            "token header crit extensions are not supported",
        ));
    }
    if header.b64 {
        return Err(AuthFailure::Malformed(
            "unencoded payloads (b64) are not supported",
        ));
    }
    if header.enc_or_zip {
        return Err(AuthFailure::Malformed(
            "encrypted or compressed tokens are not supported",
        ));
    }
    let text = |member: Option<Text<'_>>| -> Result<Option<String>, AuthFailure> {
        match member {
            None => Ok(None),
            Some(Text::Str(s)) => Ok(Some(s.into_owned())),
            Some(Text::Other) => Err(AuthFailure::Malformed(
                "token header members alg, kid and typ must be strings",
            )),
        }
    };
    let (alg, kid, typ) = (text(header.alg)?, text(header.kid)?, text(header.typ)?);
    let alg = alg.ok_or(AuthFailure::Malformed("token header has no alg"))?;
    if kid.as_ref().is_some_and(|k| k.len() > MAX_KID_BYTES) {
        return Err(AuthFailure::Malformed("token kid is longer than 256 bytes"));
    }
    Ok((
        JoseHeader {
            // `none` in any casing, and anything else unknown, parses to None.
            alg: Algorithm::from_str(&alg).ok(),
            kid,
            typ,
        },
        header.others,
    ))
}

/// A JOSE header as read, before its rules are applied: the members
/// authgate reads, borrowed from the decoded bytes where they hold no
/// escapes, which of the refused ones were present, and whether there were
/// others. Read member by member, not into a map: a map of every name and
/// value was 10 of a signature-checking request's 56 allocations.
struct RawHeader<'de> {
    alg: Option<Text<'de>>,
    kid: Option<Text<'de>>,
    typ: Option<Text<'de>>,
    crit: bool,
    b64: bool,
    enc_or_zip: bool,
    others: bool,
}

/// A member's name or value: a string, borrowed from the input unless it
/// holds escapes, or anything else (skipped, but a type error for the
/// members that must be strings).
enum Text<'de> {
    Str(Cow<'de, str>),
    Other,
}

impl<'de> Deserialize<'de> for RawHeader<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<RawHeader<'de>, A::Error> {
                let mut header = RawHeader {
                    alg: None,
                    kid: None,
                    typ: None,
                    crit: false,
                    b64: false,
                    enc_or_zip: false,
                    others: false,
                };
                // Names compared after unescaping: `"al\u0067"` is `alg`.
                // Only the names read here are checked for duplicates before
                // the signature; the others wait for [`Jws::claims`], so that
                // a forged header of 1,200 members costs a scan (a hash set
                // of every name was 100 ns a member, 125 us a token).
                let mut seen = 0u8;
                while let Some(key) = access.next_key::<Text<'de>>()? {
                    // JSON names are strings; `Other` cannot come from a key.
                    let Text::Str(name) = key else {
                        return Err(serde::de::Error::custom("member name not a string"));
                    };
                    let (bit, slot) = match &*name {
                        "alg" => (1, Some(&mut header.alg)),
                        "kid" => (2, Some(&mut header.kid)),
                        "typ" => (4, Some(&mut header.typ)),
                        "crit" => (8, None),
                        "b64" => (16, None),
                        "enc" => (32, None),
                        "zip" => (64, None),
                        _ => (0, None),
                    };
                    match bit {
                        0 => header.others = true,
                        8 => header.crit = true,
                        16 => header.b64 = true,
                        32 | 64 => header.enc_or_zip = true,
                        _ => {}
                    }
                    if seen & bit != 0 {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    seen |= bit;
                    match slot {
                        Some(slot) => *slot = Some(access.next_value::<Text<'de>>()?),
                        None => {
                            access.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(header)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object whose top-level members are unique (RFC 7515 §4, RFC 8725 §3.x).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    match map.entry(key) {
                        serde_json::map::Entry::Occupied(_) => {
                            return Err(serde::de::Error::custom("duplicate member"));
                        }
                        serde_json::map::Entry::Vacant(slot) => {
                            slot.insert(access.next_value()?);
                        }
                    }
                }
                Ok(UniqueObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a claim by name, or by dotted path into nested objects when no
/// top-level claim has that exact name.
pub fn claim<'m>(claims: &'m Map<String, Value>, path: &str) -> Option<&'m Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// `authgate token inspect`: header and claims as pretty JSON, marked
/// NOT VERIFIED; the signature is described by length only.
pub fn inspect(input: &str) -> Result<String, &'static str> {
    let text = input.trim();
    let text = match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => text,
    };
    let mut parts = text.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWS compact token (three dot-separated parts)");
    };
    let json = |segment: &str| -> Result<Value, &'static str> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| "a segment is not unpadded base64url")?;
        serde_json::from_slice(&bytes).map_err(|_| "a segment is not JSON")
    };
    let header = json(h)?;
    let claims = json(p)?;
    let signature_bytes = URL_SAFE_NO_PAD.decode(s).map(|b| b.len()).unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut times = Map::new();
    for name in ["exp", "nbf", "iat"] {
        if let Some(t) = claims.get(name).and_then(Value::as_f64) {
            let delta = t as i64 - now;
            let words = if delta >= 0 {
                format!("in {delta} s")
            } else {
                format!("{} s ago", -delta)
            };
            times.insert(name.to_owned(), Value::String(words));
        }
    }
    let out = serde_json::json!({
        "warning": "NOT VERIFIED: decoded only; signature, issuer, audience and expiry were not checked",
        "header": header,
        "claims": claims,
        "times": times,
        "signature": format!("{signature_bytes} bytes, not shown"),
    });
    serde_json::to_string_pretty(&out).map_err(|_| "cannot print")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    /// Every reading a verified token gets: the parse, the scan before
    /// the signature and the claims after it.
    fn read_whole(t: &str) -> Result<Map<String, Value>, AuthFailure> {
        let jws = parse(t)?;
        jws.early()?;
        jws.claims()
    }

    #[test]
    fn a_well_formed_token_parses() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"iss":"x","exp":1.5}"#,
        );
        let jws = parse(&t).unwrap();
        assert_eq!(jws.header.alg, Some(Algorithm::ES256));
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        let early = jws.early().unwrap();
        assert_eq!(early.iss.as_deref(), Some("x"));
        assert_eq!(early.times.exp, Some(1.5));
        assert_eq!(jws.claims().unwrap()["exp"], 1.5);
        assert_eq!(jws.signature.len(), 3);
    }

    #[test]
    fn escaped_values_long_headers_and_unread_members_parse() {
        let long = format!(
            r#"{{"alg":"ES\u0032\u00356","kid":"k\"1","typ":"at+jwt","x":{{"a":[1,{{"b":null}}]}},"pad":"{}"}}"#,
            "p".repeat(600)
        );
        let t = token(&long, "{}");
        let jws = parse(&t).unwrap();
        assert_eq!(jws.header.alg, Some(Algorithm::ES256));
        assert_eq!(jws.header.kid.as_deref(), Some("k\"1"));
        assert_eq!(jws.header.typ.as_deref(), Some("at+jwt"));
        let kid = "k".repeat(256);
        let t = token(&format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#), "{}");
        assert_eq!(parse(&t).unwrap().header.kid, Some(kid));
    }

    #[test]
    fn the_early_scan_reads_iss_and_times_by_unescaped_name_and_skips_the_rest() {
        let t = token(
            r#"{"alg":"ES256"}"#,
            r#"{"deep":{"iss":"not this","exp":"nor this"},"\u0069ss":"idp","ex\u0070":2,"nbf":1e0,"iat":-1,"x":[{"y":null}]}"#,
        );
        let jws = parse(&t).unwrap();
        let early = jws.early().unwrap();
        assert_eq!(early.iss.as_deref(), Some("idp"));
        let times = Times {
            exp: Some(2.0),
            nbf: Some(1.0),
            iat: Some(-1.0),
        };
        assert_eq!(early.times, times);
        assert_eq!(Times::of(&jws.claims().unwrap()), times);
        let t = token(r#"{"alg":"ES256"}"#, r#"{"iss":{"a":1}}"#);
        assert_eq!(parse(&t).unwrap().early().unwrap().iss, None);
        // The claims it reads may appear once, in any spelling: the issuer
        // chosen here is the one the whole parse would find.
        for payload in [r#"{"iss":"a","i\u0073s":"b"}"#, r#"{"exp":1,"ex\u0070":2}"#] {
            let t = token(r#"{"alg":"ES256"}"#, payload);
            let jws = parse(&t).unwrap();
            assert!(
                matches!(jws.early(), Err(AuthFailure::Malformed(_))),
                "{payload}"
            );
        }
        // A duplicate among the claims the scan does not read is left to
        // the whole parse, after the signature.
        let t = token(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"b"}"#);
        let jws = parse(&t).unwrap();
        assert!(jws.early().is_ok());
        assert!(matches!(jws.claims(), Err(AuthFailure::Malformed(_))));
    }

    #[test]
    fn none_in_any_casing_names_no_algorithm() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(parse(&t).unwrap().header.alg, None, "{alg}");
        }
    }

    #[test]
    fn header_duplicates_among_read_names_fail_the_parse_and_others_the_claims() {
        // Read before the signature: refused by the parse, in any spelling.
        for header in [
            r#"{"alg":"ES256","k\u0069d":"a","kid":"b"}"#,
            r#"{"alg":"ES256","typ":"a","typ":"a"}"#,
        ] {
            let t = token(header, "{}");
            assert!(
                matches!(parse(&t), Err(AuthFailure::Malformed(_))),
                "{header}"
            );
        }
        // Not read: the parse passes, and the claims, after the signature, refuse.
        for header in [
            r#"{"alg":"ES256","x5t":"a","x5\u0074":"b"}"#,
            r#"{"x":{},"alg":"ES256","x":1}"#,
        ] {
            let t = token(header, "{}");
            let jws = parse(&t).unwrap();
            assert!(
                matches!(jws.claims(), Err(AuthFailure::Malformed(_))),
                "{header}"
            );
        }
        let t = token(r#"{"alg":"ES256","x5t":"a","kid":"k"}"#, r#"{"sub":"a"}"#);
        assert_eq!(parse(&t).unwrap().claims().unwrap()["sub"], "a");
    }

    #[test]
    fn duplicate_members_crit_b64_and_bad_types_are_malformed() {
        let cases = [
            token(r#"{"alg":"ES256","alg":"HS256"}"#, "{}"),
            token(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"b"}"#),
            token(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#, "{}"),
            token(r#"{"alg":"ES256","crit":[]}"#, "{}"),
            token(r#"{"alg":"ES256","b64":false}"#, "{}"),
            token(r#"{"alg":"ES256"}"#, r#"{"exp":"1700000000"}"#),
            token(r#"{"alg":"ES256"}"#, r#"{"nbf":null}"#),
            token(r#"{"alg":"ES256"}"#, r#"[1]"#),
            token(r#"{"alg":1}"#, "{}"),
            token(r#"{"kid":"x"}"#, "{}"),
            // Names are compared unescaped: these are `alg` twice, `crit`.
            token(r#"{"alg":"ES256","al\u0067":"none"}"#, "{}"),
            token(r#"{"alg":"ES256","cr\u0069t":[]}"#, "{}"),
            token(r#"{"alg":"ES256","enc":"A128GCM"}"#, "{}"),
            token(r#"{"alg":"ES256","zip":"DEF"}"#, "{}"),
            token(r#"{"alg":"ES256","kid":["a"]}"#, "{}"),
            token(r#"{"alg":"ES256","typ":{"a":1}}"#, "{}"),
            token(r#"{"alg":"ES256","x":1,"x":2}"#, "{}"),
            token(
                &format!(r#"{{"alg":"ES256","kid":"{}"}}"#, "k".repeat(257)),
                "{}",
            ),
            token(r#"{"alg":"ES256"} x"#, "{}"),
            token(r#"["alg","ES256"]"#, "{}"),
            token(r#"{"alg":"ES256"}"#, r#"{"s\u0075b":"a","sub":"b"}"#),
            token(r#"{"alg":"ES256"}"#, r#"{"iss":"a","i\u0073s":"b"}"#),
            token(r#"{"alg":"ES256"}"#, r#"{"exp":1,"exp":2}"#),
            token(r#"{"alg":"ES256"}"#, r#"{"iat":[1]}"#),
            token(r#"{"alg":"ES256"}"#, r#"{"iss":"a"} x"#),
        ];
        for t in cases {
            assert!(
                matches!(read_whole(&t), Err(AuthFailure::Malformed(_))),
                "{t}"
            );
        }
    }

    #[test]
    fn padding_standard_alphabet_and_wrong_part_counts_are_malformed() {
        let good = token(r#"{"alg":"ES256"}"#, "{}");
        let padded = format!("{good}=");
        let plus = good.replacen('e', "+", 1);
        for t in [
            padded,
            plus,
            "a.b".into(),
            format!("{good}.x"),
            String::new(),
        ] {
            assert!(matches!(parse(&t), Err(AuthFailure::Malformed(_))), "{t}");
        }
    }

    #[test]
    fn claims_are_found_by_name_then_by_dotted_path() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"a.b":1,"org":{"tenant":"acme"}}"#).unwrap();
        assert_eq!(claim(&m, "a.b"), Some(&Value::from(1)));
        assert_eq!(claim(&m, "org.tenant"), Some(&Value::from("acme")));
        assert_eq!(claim(&m, "org.missing"), None);
    }

    #[test]
    fn inspect_shows_header_and_claims_but_never_the_signature() {
        let t = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"sub":"alice","exp":1}"#),
            b64("SIGNATUREBYTES")
        );
        let out = inspect(&format!("Bearer {t}\n")).unwrap();
        assert!(out.contains("NOT VERIFIED"));
        assert!(out.contains("\"alice\""));
        assert!(!out.contains(&b64("SIGNATUREBYTES")));
        assert!(out.contains("14 bytes, not shown"));
    }

    #[test]
    fn debug_prints_only_the_fingerprint() {
        let t = BearerToken("secret.token.value");
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"));
        assert_eq!(shown.len(), "BearerToken(fp=)".len() + 12);
    }
}
