//! Binds a sign-in in progress to the browser that started it (login CSRF, RFC 6749
//! §10.12 and RFC 9700 §4.7): without it, anyone can start a sign-in as themselves, stop
//! before the callback and send a victim the callback URL, signing the victim's browser
//! in as the attacker (and, through the broker, every app behind it).
//!
//! When a sign-in leaves for the provider (`/.idfabric/login`) or a broker request is
//! parked (`/authorize`), a random 256-bit nonce goes into a cookie named after the
//! transaction (so two tabs can sign in at once) and only its SHA-256 is kept with the
//! transaction. The callback (or `/authorize/resume`) must present the same nonce; the
//! digests are compared in constant time. The cookie is host-only, `HttpOnly`,
//! `SameSite=Lax` (it must come back on the provider's top-level redirect) and over TLS
//! `__Host-` prefixed and `Secure`, so neither a sibling subdomain nor a plain-HTTP hop
//! can plant one.

use crate::web::{self, random};

/// The nonce for the browser's cookie and the digest kept with the transaction.
pub struct Binding {
    pub nonce: String,
    pub digest: String,
}

/// A fresh binding (256 random bits).
pub fn new() -> Binding {
    let nonce = random(32);
    Binding { digest: digest(&nonce), nonce }
}

/// SHA-256 of `v`, lowercase hex.
pub fn digest(v: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a presented nonce matches a kept digest (constant time; an empty digest,
/// the value of a transaction stored before binding existed, never matches).
pub fn matches(kept: &str, nonce: &str) -> bool {
    #[allow(deprecated)]
    let same = aws_lc_rs::constant_time::verify_slices_are_equal(kept.as_bytes(), digest(nonce).as_bytes()).is_ok();
    !kept.is_empty() && same
}

/// Random bytes of a transaction id (`state`, a parked request's `txn`): 32 base64url
/// characters.
pub const ID_BYTES: usize = 24;

/// An id that could be one of ours (anything else names no cookie).
pub fn plausible_id(id: &str) -> bool {
    id.len() == ID_BYTES / 3 * 4 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cookie that binds transaction `id` of `kind` (`ltx` login, `btx` broker):
/// `idfabric_{kind}_{first 16 characters of id}`, `__Host-` prefixed over TLS. `None`
/// for an id that is not [`plausible_id`].
pub fn cookie_name(kind: &str, id: &str, tls: bool) -> Option<String> {
    plausible_id(id).then(|| web::cookie_name(&format!("idfabric_{kind}_{}", &id[..16]), tls))
}

/// `Set-Cookie` for the binding, living as long as the transaction.
pub fn set_cookie(name: &str, nonce: &str, ttl_secs: i64, tls: bool) -> String {
    web::cookie(name, nonce, Some(ttl_secs), tls)
}

/// `Set-Cookie` that removes the binding (sent on every outcome).
pub fn clear_cookie(name: &str, tls: bool) -> String {
    web::cookie(name, "", Some(0), tls)
}

/// What the browser presented for a transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// The cookie carries the transaction's nonce.
    Bound,
    /// No cookie for this transaction: the browser did not start it (or drops cookies).
    Missing,
    /// A cookie with another nonce.
    Mismatch,
}

/// Checks the browser's cookie `name` (from `cookie_name`) against the kept digest.
pub fn check(req: &web::Request<'_>, name: Option<&str>, kept: &str) -> Presented {
    match name.and_then(|n| req.cookie(n)) {
        None => Presented::Missing,
        Some(nonce) if matches(kept, nonce) => Presented::Bound,
        Some(_) => Presented::Mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_round_trip() {
        let b = new();
        assert_eq!(b.nonce.len(), 43, "256 bits");
        assert!(matches(&b.digest, &b.nonce));
        assert!(!matches(&b.digest, &new().nonce));
        assert!(!matches("", ""), "an unbound transaction never matches");
        assert!(!b.digest.contains(&b.nonce));
    }

    #[test]
    fn cookie_names() {
        let id = random(ID_BYTES);
        let plain = cookie_name("ltx", &id, false).unwrap();
        assert_eq!(plain, format!("idfabric_ltx_{}", &id[..16]));
        assert_eq!(cookie_name("ltx", &id, true).unwrap(), format!("__Host-{plain}"));
        assert_eq!(cookie_name("ltx", "short", false), None);
        assert_eq!(cookie_name("ltx", &format!("{}=", &id[..31]), false), None);
    }
}
