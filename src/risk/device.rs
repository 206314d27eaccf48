//! The long-lived device cookie behind `new_device`: set when a browser completes a
//! sign-in with MFA, so a remembered device stops asking for a second factor.
//!
//! Value: `{issued}.{device}.{mac}` — the issue time (unix seconds), 128 random bits
//! (base64url) and HMAC-SHA256 over a version tag, the subject, the issue time and the
//! device id, base64url. The subject is not in the cookie; the MAC binds it, so the
//! cookie is valid only for the subject it was issued to, and altering any part of it
//! (or presenting it for another subject) makes it count as no cookie. The MAC key is
//! derived from the session key with HKDF-SHA256 (RFC 5869) under its own label, so a
//! cookie MAC can never be confused with a sealed session value, and rotating the
//! session key forgets every device.
//!
//! The cookie is `HttpOnly; SameSite=Lax; Path=/`, over TLS `Secure` and `__Host-`
//! prefixed (host-only, so a sibling subdomain cannot plant one), and lives
//! [`LIFETIME`]. One browser remembers one subject: an MFA sign-in as another
//! subject replaces it.

use aws_lc_rs::{hkdf, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The cookie's base name (`__Host-idfabric_device` over TLS).
pub const COOKIE: &str = "idfabric_device";
/// How long a device stays remembered (and the cookie's `Max-Age`): 180 days.
pub const LIFETIME: i64 = 180 * 24 * 3600;
/// Longest cookie value looked at (anything longer is not ours).
const MAX_LEN: usize = 128;
/// Issue times this far in the future are accepted (clock skew between replicas).
const SKEW: i64 = 300;

/// The MAC key for device cookies.
pub struct DeviceKey(hmac::Key);

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl DeviceKey {
    /// Derives the device-cookie key from the session key's bytes.
    pub fn from_secret(secret: &[u8]) -> DeviceKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"idfabric").extract(secret);
        let mut bytes = [0u8; 32];
        let info = [b"idfabric device cookie v1".as_slice()];
        // `expand` fails only for lengths over 255 hash lengths; 32 bytes never does.
        if let Ok(okm) = prk.expand(&info, Len(32)) {
            let _ = okm.fill(&mut bytes);
        }
        DeviceKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
    }

    /// A cookie value for `sub`, issued at `now`.
    pub fn issue(&self, sub: &str, now: i64) -> String {
        let device = crate::web::random(16);
        let tag = hmac::sign(&self.0, &signed_bytes(sub, now, &device));
        format!("{now}.{device}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `value` is a cookie this key issued to `sub` within [`LIFETIME`].
    pub fn verify(&self, value: &str, sub: &str, now: i64) -> bool {
        if value.len() > MAX_LEN {
            return false;
        }
        let mut parts = value.splitn(3, '.');
        let (Some(issued), Some(device), Some(mac)) = (parts.next(), parts.next(), parts.next()) else { return false };
        let Ok(issued) = issued.parse::<i64>() else { return false };
        if issued > now + SKEW || now - issued > LIFETIME {
            return false;
        }
        let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else { return false };
        hmac::verify(&self.0, &signed_bytes(sub, issued, device), &mac).is_ok()
    }
}

/// The bytes the MAC covers: a version tag, the subject (length-prefixed), the issue
/// time and the device id.
fn signed_bytes(sub: &str, issued: i64, device: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(3 + 8 + sub.len() + 8 + device.len());
    b.extend_from_slice(b"v1\0");
    b.extend_from_slice(&(sub.len() as u64).to_be_bytes());
    b.extend_from_slice(sub.as_bytes());
    b.extend_from_slice(&issued.to_be_bytes());
    b.extend_from_slice(device.as_bytes());
    b
}

/// The cookie's name on this request: `__Host-` prefixed over TLS.
pub fn cookie_name(tls: bool) -> String {
    crate::web::cookie_name(COOKIE, tls)
}

/// The device cookie the request carries, if any.
pub fn presented(headers: &http::HeaderMap, tls: bool) -> Option<&str> {
    crate::web::session_cookie(headers, &cookie_name(tls))
}

/// `Set-Cookie` remembering this browser for `sub`.
pub fn set_cookie(key: &DeviceKey, sub: &str, now: i64, tls: bool) -> String {
    crate::web::cookie(&cookie_name(tls), &key.issue(sub, now), Some(LIFETIME), tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_valid_only_for_its_subject_key_and_lifetime() {
        let k = DeviceKey::from_secret(&[1u8; 32]);
        let now = 1_800_000_000;
        let c = k.issue("cu:alice", now);
        assert!(k.verify(&c, "cu:alice", now));
        assert!(k.verify(&c, "cu:alice", now + LIFETIME), "remembered for 180 days");
        assert!(!k.verify(&c, "cu:alice", now + LIFETIME + 1), "then forgotten");
        assert!(!k.verify(&c, "cu:alice", now - SKEW - 1), "not issued in the future");
        assert!(!k.verify(&c, "cu:bob", now), "bound to the subject");
        assert!(!DeviceKey::from_secret(&[2u8; 32]).verify(&c, "cu:alice", now), "bound to the key");
        assert!(!c.contains("alice"), "the subject is not in the cookie: {c}");
    }

    #[test]
    fn altered_cookies_count_as_none() {
        let k = DeviceKey::from_secret(&[1u8; 32]);
        let now = 1_800_000_000;
        let c = k.issue("s", now);
        let (issued, rest) = c.split_once('.').unwrap();
        let (device, mac) = rest.split_once('.').unwrap();
        let later = format!("{}.{device}.{mac}", issued.parse::<i64>().unwrap() + 1);
        let other_device = format!("{issued}.{}.{mac}", crate::web::random(16));
        let truncated = &c[..c.len() - 2];
        for bad in ["", "x", "1.2", "1.2.3", "..", &later, &other_device, truncated, &"a".repeat(400)] {
            assert!(!k.verify(bad, "s", now), "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_is_host_only_and_secure_over_tls() {
        let k = DeviceKey::from_secret(&[1u8; 32]);
        let tls = set_cookie(&k, "s", 1_800_000_000, true);
        assert!(tls.starts_with("__Host-idfabric_device="), "{tls}");
        for attr in ["; Path=/", "; HttpOnly", "; SameSite=Lax", "; Secure", "; Max-Age=15552000"] {
            assert!(tls.contains(attr), "{attr} in {tls}");
        }
        assert!(!tls.contains("Domain="), "{tls}");
        let plain = set_cookie(&k, "s", 1_800_000_000, false);
        assert!(plain.starts_with("idfabric_device=") && !plain.contains("Secure"), "{plain}");
    }
}
