//! Compact JWS parsing and the provider-neutral header rules.
//!
//! The header is read only to refuse what must never be accepted (`alg: none`, HMAC,
//! keys or key URLs carried in the token, unknown `crit`) and to learn the `kid`.
//! Keys and the algorithm always come from the provider's JWKS, never from here.

use super::claims::Claims;
use crate::refusal::Refusal;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The latest `exp` accepted (9999-12-31T23:59:59Z): later values are refused as
/// malformed, so time arithmetic on `exp` (leeway, cache lifetime) cannot overflow.
pub const MAX_EXP: i64 = 253_402_300_799;

/// The header fields we read. The ones that only ever refuse a token (`crit`, the key
/// carriers, `enc`) are checked for presence and skipped without being built into
/// values (`IgnoredAny`); a `null` counts as absent, as it did when they were values.
#[derive(Debug, Deserialize, Default)]
pub struct JoseHeader {
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub crit: Option<IgnoredAny>,
    pub jku: Option<IgnoredAny>,
    pub jwk: Option<IgnoredAny>,
    pub x5u: Option<IgnoredAny>,
    pub x5c: Option<IgnoredAny>,
    pub enc: Option<IgnoredAny>,
}

/// A token split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: JoseHeader,
    pub alg: Algorithm,
    pub claims: Claims,
    /// `header.payload`, the signed bytes.
    pub signing_input: &'a str,
    pub signature: &'a str,
}

/// Splits, decodes and applies the header rules.
pub fn parse(token: &str) -> Result<Parsed<'_>, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::TokenTooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Refusal::Malformed("a signed JWT has exactly three dot-separated parts"));
    };
    if h.is_empty() || p.is_empty() {
        return Err(Refusal::Malformed("empty header or payload"));
    }
    let header: JoseHeader = decoded(h, |bytes| {
        serde_json::from_slice(bytes.map_err(|_| Refusal::Malformed("header is not base64url"))?)
            .map_err(|_| Refusal::Malformed("header is not a JSON object"))
    })?;
    let alg = check_header(&header)?;
    if s.is_empty() {
        return Err(Refusal::BadSignature);
    }
    // The payload is decoded into its own buffer: the claims keep it and read from it.
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| Refusal::Malformed("payload is not base64url"))?;
    let payload = String::from_utf8(payload).map_err(|_| Refusal::Malformed("payload is not a JSON object"))?;
    let claims = Claims::parse(payload).map_err(|_| Refusal::Malformed("payload is not a JSON object"))?;
    Ok(Parsed { header, alg, claims, signing_input: &token[..h.len() + 1 + p.len()], signature: s })
}

/// Decodes base64url `part` into a per-thread scratch buffer and hands the bytes (or
/// the decoding error) to `f`: a token's header is parsed from there, so decoding it
/// allocates nothing per token (the payload gets its own buffer, which the claims keep).
fn decoded<T>(part: &str, f: impl FnOnce(Result<&[u8], base64::DecodeError>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|buf| {
        // Re-entrancy cannot happen (`f` only parses JSON); should it, decode afresh.
        let Ok(mut buf) = buf.try_borrow_mut() else {
            let owned = URL_SAFE_NO_PAD.decode(part);
            return f(owned.as_deref().map_err(Clone::clone));
        };
        buf.clear();
        let out = match URL_SAFE_NO_PAD.decode_vec(part, &mut buf) {
            Ok(()) => f(Ok(&buf)),
            Err(e) => f(Err(e)),
        };
        if buf.capacity() > 2 * MAX_TOKEN_BYTES {
            *buf = Vec::new();
        }
        out
    })
}

fn check_header(h: &JoseHeader) -> Result<Algorithm, Refusal> {
    if h.enc.is_some() {
        return Err(Refusal::Malformed("encrypted tokens (JWE) are not accepted"));
    }
    let alg = h.alg.as_deref().ok_or(Refusal::Malformed("header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(Refusal::AlgNone);
    }
    let alg = asymmetric_alg(alg).ok_or(Refusal::AlgNotAllowed)?;
    if h.jku.is_some() || h.jwk.is_some() || h.x5u.is_some() || h.x5c.is_some() {
        return Err(Refusal::UntrustedHeaderKey);
    }
    if h.crit.is_some() {
        // We implement no JWS extension, so every critical one is unknown (RFC 7515 §4.1.11).
        return Err(Refusal::UnknownCrit);
    }
    Ok(alg)
}

/// The asymmetric algorithms we verify; HMAC and anything else is `None`.
pub fn asymmetric_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Checks the signature with the key's own algorithm.
pub fn verify_signature(p: &Parsed<'_>, key: &super::jwks::VerifyKey) -> Result<(), Refusal> {
    if p.alg != key.alg {
        return Err(Refusal::AlgMismatch);
    }
    if let Some(parsed) = &key.parsed {
        let sig = URL_SAFE_NO_PAD.decode(p.signature).map_err(|_| Refusal::BadSignature)?;
        return parsed.verify_sig(p.signing_input.as_bytes(), &sig).map_err(|_| Refusal::BadSignature);
    }
    match jsonwebtoken::crypto::verify(p.signature, p.signing_input.as_bytes(), &key.key, key.alg) {
        Ok(true) => Ok(()),
        _ => Err(Refusal::BadSignature),
    }
}

/// `exp` (required, at most `MAX_EXP`), `nbf` and `iat` with `leeway` seconds of clock skew.
pub fn check_times(c: &Claims, now: i64, leeway: i64) -> Result<i64, Refusal> {
    let exp = match c.raw("exp") {
        None => return Err(Refusal::MissingClaim("exp")),
        Some(_) => c.i64("exp").ok_or(Refusal::Malformed("exp is not a number"))?,
    };
    if exp > MAX_EXP {
        return Err(Refusal::Malformed("exp is out of range"));
    }
    if now > exp + leeway {
        return Err(Refusal::Expired);
    }
    if c.has("nbf") {
        let nbf = c.i64("nbf").ok_or(Refusal::Malformed("nbf is not a number"))?;
        if nbf > now + leeway {
            return Err(Refusal::NotYetValid);
        }
    }
    if c.has("iat") {
        let iat = c.i64("iat").ok_or(Refusal::Malformed("iat is not a number"))?;
        if iat > now + leeway {
            return Err(Refusal::IssuedInFuture);
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(header: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(r#"{"iss":"x"}"#))
    }

    #[test]
    fn header_rules() {
        let cases: &[(&str, Result<(), Refusal>)] = &[
            (r#"{"alg":"RS256","kid":"k"}"#, Ok(())),
            (r#"{"alg":"none"}"#, Err(Refusal::AlgNone)),
            (r#"{"alg":"NONE"}"#, Err(Refusal::AlgNone)),
            (r#"{"alg":"HS256"}"#, Err(Refusal::AlgNotAllowed)),
            (r#"{"alg":"RS256","jku":"https://evil/keys"}"#, Err(Refusal::UntrustedHeaderKey)),
            (r#"{"alg":"RS256","jwk":{"kty":"RSA"}}"#, Err(Refusal::UntrustedHeaderKey)),
            (r#"{"alg":"RS256","x5u":"https://evil"}"#, Err(Refusal::UntrustedHeaderKey)),
            (r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, Err(Refusal::UnknownCrit)),
            (r#"{"kid":"k"}"#, Err(Refusal::Malformed("header has no alg"))),
        ];
        for (h, want) in cases {
            let t = tok(h);
            let got = parse(&t).map(|_| ());
            assert_eq!(&got, want, "{h}");
        }
    }

    #[test]
    fn shape_rules() {
        assert!(matches!(parse("abc"), Err(Refusal::Malformed(_))));
        assert!(matches!(parse("a.b.c.d.e"), Err(Refusal::Malformed(_))));
        assert!(matches!(parse("!!.??.x"), Err(Refusal::Malformed(_))));
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(parse(&big).unwrap_err(), Refusal::TokenTooLarge);
        let stripped = format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(parse(&stripped).unwrap_err(), Refusal::BadSignature);
    }

    #[test]
    fn time_rules() {
        let c = |j: &str| Claims::parse(j.to_string()).unwrap();
        let now = 1_000_000;
        assert!(check_times(&c(r#"{"exp":1000100}"#), now, 60).is_ok());
        assert!(check_times(&c(r#"{"exp":999950}"#), now, 60).is_ok(), "inside leeway");
        assert_eq!(check_times(&c(r#"{"exp":999900}"#), now, 60), Err(Refusal::Expired));
        assert_eq!(check_times(&c(r#"{}"#), now, 60), Err(Refusal::MissingClaim("exp")));
        assert_eq!(check_times(&c(r#"{"exp":1000100,"nbf":1000100}"#), now, 60), Err(Refusal::NotYetValid));
        assert!(check_times(&c(r#"{"exp":1000100,"nbf":1000050}"#), now, 60).is_ok());
        assert_eq!(check_times(&c(r#"{"exp":1000900,"iat":1000500}"#), now, 60), Err(Refusal::IssuedInFuture));
        assert!(matches!(check_times(&c(r#"{"exp":"soon"}"#), now, 60), Err(Refusal::Malformed(_))));
        assert!(check_times(&c(r#"{"exp":253402300799}"#), now, 60).is_ok(), "year 9999");
        for far in [r#"{"exp":9223372036854775807}"#, r#"{"exp":1e300}"#, r#"{"exp":18446744073709551615}"#] {
            assert_eq!(check_times(&c(far), now, 60), Err(Refusal::Malformed("exp is out of range")), "{far}");
        }
    }
}
