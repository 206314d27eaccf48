//! What the upstream app receives: the `X-Identity-*` headers, the broker-minted
//! `X-Identity-Token` and the `Authorization` the route asks for. [`route_headers`] is
//! the one place these are decided, for the proxied request and for the forward-auth
//! answer alike.
//!
//! Header values outside visible ASCII (and `%`) are percent-encoded UTF-8; list items
//! are joined with `,` after encoding any `,` inside an item, so a list is always
//! split unambiguously. Minted tokens are cached per verified token and route and
//! reused until a minute before they expire, so a hot token pays no signature.

use crate::config::{AuthorizationHeader, RouteSpec};
use crate::identity::{Identity, IdentityClaims, Outbound};
use crate::keys::Signer;
use crate::providers::{now_secs, Verified};
use http::HeaderValue;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The prefix of every identity header; inbound headers with it are always removed.
pub const PREFIX: &str = "x-identity-";
pub const TOKEN_HEADER: &str = "x-identity-token";

/// Percent-encodes bytes outside printable ASCII, `%`, and (for list items) `,`.
pub fn encode_value(v: &str, in_list: bool) -> String {
    let mut out = String::with_capacity(v.len());
    encode_into(&mut out, v, in_list);
    out
}

/// [`encode_value`] appended to `out`.
fn encode_into(out: &mut String, v: &str, in_list: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in v.bytes() {
        let plain = (0x20..0x7f).contains(&b) && b != b'%' && !(in_list && b == b',');
        if plain {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

fn list(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum());
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        encode_into(&mut out, item, true);
    }
    out
}

/// The `X-Identity-*` headers (without the token) for an identity. Names are static
/// lower-case strings: Pingora turns a `&'static str` into its case-preserving name
/// without copying (a `HeaderName` would be title-cased into a new buffer per insert).
pub fn identity_headers(id: &Identity) -> Vec<(&'static str, HeaderValue)> {
    let mut out = Vec::with_capacity(10);
    // The encoded string becomes the header value's buffer (no second copy); it is
    // visible ASCII by construction, and `from_maybe_shared` still checks it.
    let mut push = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            out.push((name, v));
        }
    };
    push("x-identity-sub", encode_value(&id.sub, false));
    push("x-identity-provider", encode_value(&id.provider, false));
    push("x-identity-population", id.population.as_str().to_string());
    push("x-identity-tenant", encode_value(&id.tenant, false));
    if let Some(e) = &id.email {
        push("x-identity-email", encode_value(e, false));
    }
    if let Some(u) = &id.username {
        push("x-identity-username", encode_value(u, false));
    }
    if let Some(n) = &id.name {
        push("x-identity-name", encode_value(n, false));
    }
    push("x-identity-groups", list(&id.groups));
    push("x-identity-roles", list(&id.roles));
    push("x-identity-mfa", id.mfa.to_string());
    out
}

/// One change to the headers an admitted request carries upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An identity header or `X-Identity-Token`.
    Set(&'static str, HeaderValue),
    /// `Authorization: Bearer <minted token>` (`authorization: identity_token`).
    SetAuthorization(HeaderValue),
    /// The client's `Authorization` must not reach the upstream (`strip`, or
    /// `identity_token` with nothing to put in its place).
    RemoveAuthorization,
}

/// The headers for an admitted request on `route`, in order, passed to `apply`:
/// the identity headers and `X-Identity-Token` (`identity_token: true` with a broker)
/// for a verified caller, then what becomes of `Authorization` (`keep` leaves it
/// alone). `verified` is `None` on public routes (`auth: none`), where `strip` and
/// `identity_token` both remove the header. The proxy applies the changes to the
/// upstream request; forward-auth puts the `Set`s into its answer, for the front
/// proxy to copy onto the request.
pub fn route_headers<E>(
    minter: Option<&Minter>,
    route: &RouteSpec,
    route_index: u32,
    verified: Option<&Verified>,
    mut apply: impl FnMut(Change) -> Result<(), E>,
) -> Result<(), E> {
    let Some(v) = verified else {
        if route.authorization != AuthorizationHeader::Keep {
            apply(Change::RemoveAuthorization)?;
        }
        return Ok(());
    };
    let shared = v.upstream.get_or_init(|| match minter {
        Some(m) => m.shared(v),
        None => Arc::new(outbound(&v.identity)),
    });
    for (k, val) in &shared.headers {
        apply(Change::Set(k, val.clone()))?;
    }
    let token = match (minter, route.identity_token || route.authorization == AuthorizationHeader::IdentityToken) {
        (Some(m), true) => Some(m.token_for(shared, v, &route.name, route_index)),
        _ => None,
    };
    if let (Some(t), true) = (&token, route.identity_token) {
        apply(Change::Set(TOKEN_HEADER, t.clone()))?;
    }
    match (route.authorization, token) {
        (AuthorizationHeader::Keep, _) => Ok(()),
        (AuthorizationHeader::Strip, _) | (AuthorizationHeader::IdentityToken, None) => apply(Change::RemoveAuthorization),
        (AuthorizationHeader::IdentityToken, Some(t)) => {
            // A compact JWS is base64url and dots: always a valid header value.
            let bearer = HeaderValue::from_str(&format!("Bearer {}", t.to_str().unwrap_or_default()))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            apply(Change::SetAuthorization(bearer))
        }
    }
}

/// The claims of a minted `X-Identity-Token`: the identity's, then the token's own.
#[derive(Serialize)]
struct MintedClaims<'a> {
    #[serde(flatten)]
    identity: IdentityClaims<'a>,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: &'a str,
}

/// Routes whose minted token one identity keeps at a time; the oldest makes room.
pub const MINTED_PER_IDENTITY: usize = 16;

/// An identity's [`Outbound`]: its headers encoded, no token minted yet.
pub fn outbound(id: &Identity) -> Outbound {
    Outbound { headers: identity_headers(id), minted: std::sync::Mutex::new(Vec::new()) }
}

/// Mints `X-Identity-Token`s with the broker key.
pub struct Minter {
    pub signer: Arc<Signer>,
    issuer: String,
    ttl: i64,
    /// By identity key; an entry lives as long as a minted token (`identity_token_ttl`).
    shares: moka::sync::Cache<[u8; 32], Arc<Outbound>>,
    /// Public keys of retired broker keys still inside their overlap (`keys rotate`):
    /// tokens they signed stay verifiable until they expire.
    retired: Vec<serde_json::Value>,
}

impl Minter {
    pub fn new(signer: Arc<Signer>, issuer: &str, ttl: Duration, capacity: u64) -> Minter {
        Minter {
            signer,
            issuer: issuer.to_string(),
            ttl: ttl.as_secs().max(30) as i64,
            shares: moka::sync::Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
            retired: Vec::new(),
        }
    }

    /// Also publishes these retired keys (never signs with them).
    pub fn with_retired(mut self, retired: &[Signer]) -> Minter {
        self.retired = retired.iter().filter(|s| s.kid != self.signer.kid).map(|s| s.public_jwk().clone()).collect();
        self
    }

    /// The shared state of `v`'s identity (created on its first credential). The
    /// cache belongs to one broker key: a new key is a new runtime, so a token signed
    /// by a previous key is never handed out.
    ///
    /// A lookup and, for a new identity, an insert (not moka's `get_with`, whose
    /// coordination of concurrent initialisers costs more than the rare duplicate it
    /// saves: two first requests of one identity at once may each encode its headers).
    pub fn shared(&self, v: &Verified) -> Arc<Outbound> {
        if let Some(found) = self.shares.get(&v.identity_key) {
            return found;
        }
        let fresh = Arc::new(outbound(&v.identity));
        self.shares.insert(v.identity_key, fresh.clone());
        fresh
    }

    /// The token for this verified credential on this route, from `shared` when fresh
    /// (more than a minute left). The token is returned as a ready header value
    /// (cloning it is a reference count).
    pub fn token_for(&self, shared: &Outbound, v: &Verified, route: &str, route_index: u32) -> HeaderValue {
        let now = now_secs();
        let fresh = |exp: i64| exp - now > 60;
        // Held while signing: concurrent first requests of one identity mint once.
        let mut list = shared.minted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, tok, _)) = list.iter().find(|(r, _, exp)| *r == route_index && fresh(*exp)) {
            return tok.clone();
        }
        let exp = (now + self.ttl).min(v.exp.max(now + 1));
        let minted = self.mint(&v.identity, route, now, exp);
        // A compact JWS is base64url and dots: always a valid header value (the check
        // runs; the bytes are moved, not copied).
        let tok = HeaderValue::from_maybe_shared(bytes::Bytes::from(minted)).unwrap_or_else(|_| HeaderValue::from_static(""));
        list.retain(|(r, _, e)| *r != route_index && fresh(*e));
        if list.len() >= MINTED_PER_IDENTITY {
            list.remove(0);
        }
        list.push((route_index, tok.clone(), exp));
        tok
    }

    /// Signs a token for `id` with audience `aud`.
    pub fn mint(&self, id: &Identity, aud: &str, now: i64, exp: i64) -> String {
        let mut jti = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut jti);
        let mut hex = [0u8; 24];
        for (i, b) in jti.iter().enumerate() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex[2 * i] = DIGITS[usize::from(b >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        let jti = std::str::from_utf8(&hex).unwrap_or_default();
        let claims = MintedClaims { identity: IdentityClaims::new(id), iss: &self.issuer, aud, iat: now, nbf: now, exp, jti };
        self.signer.sign_jwt("JWT", &claims)
    }

    /// The broker's public keys: the active key first, then retired keys in overlap.
    pub fn jwks(&self) -> serde_json::Value {
        json!({ "keys": self.public_keys().collect::<Vec<_>>() })
    }

    /// Every key a token of this broker may be signed with (verify with these, by `kid`).
    pub fn public_keys(&self) -> impl Iterator<Item = &serde_json::Value> {
        std::iter::once(self.signer.public_jwk()).chain(self.retired.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{identity_claims, identity_key, Population};

    #[test]
    fn encoding() {
        assert_eq!(encode_value("Adele Vance", false), "Adele Vance");
        assert_eq!(encode_value("Zoë", false), "Zo%C3%AB");
        assert_eq!(encode_value("a,b", false), "a,b");
        assert_eq!(encode_value("a,b", true), "a%2Cb");
        assert_eq!(encode_value("100%\n", false), "100%25%0A");
        assert_eq!(list(&["a,b".to_string(), "Zoë".to_string(), String::new(), "x".to_string()]), "a%2Cb,Zo%C3%AB,,x");
        assert_eq!(list(&[]), "");
        assert_eq!(list(&["\u{7f}\u{1}".to_string()]), "%7F%01");
    }

    fn route(authorization: AuthorizationHeader, identity_token: bool) -> RouteSpec {
        RouteSpec {
            name: "r".into(),
            host: crate::config::HostMatch::Any,
            path_prefix: "/".into(),
            auth: crate::config::AuthMode::Either,
            upstreams: Vec::new(),
            by_population: None,
            require: Default::default(),
            policy: None,
            risk: None,
            providers: None,
            authorization,
            forwarded_headers: true,
            identity_token,
            branding: Default::default(),
            b2c_policy: None,
            case_sensitive: false,
            path_params: false,
            cors_preflight: Default::default(),
            upstream: Default::default(),
        }
    }

    fn changes(minter: Option<&Minter>, route: &RouteSpec, v: Option<&Verified>) -> Vec<Change> {
        let mut out = Vec::new();
        route_headers(minter, route, 0, v, |c| {
            out.push(c);
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    /// Two credentials of one identity share its headers and minted tokens; another
    /// identity gets its own; past the per-identity limit the oldest route's token goes.
    #[test]
    fn credentials_of_one_identity_share_headers_and_minted_tokens() {
        let pem = crate::keys::generate_pem(crate::keys::KeyKind::Es256).unwrap();
        let signer = crate::keys::Signer::from_pkcs8(pem::parse(pem.as_bytes()).unwrap().contents()).unwrap();
        let minter = Minter::new(Arc::new(signer), "https://gw.test/broker", Duration::from_secs(300), 16);
        let alice = || Identity::new("wf", crate::identity::ProviderKind::Entra, Population::Workforce, "alice".into());
        let a1 = Verified::new(alice(), 0, "k1".into(), now_secs() + 600, [1; 32]);
        let a2 = Verified::new(alice(), 0, "k2".into(), now_secs() + 900, [2; 32]);
        let bob = Verified::new(
            Identity::new("wf", crate::identity::ProviderKind::Entra, Population::Workforce, "bob".into()),
            0,
            "k1".into(),
            now_secs() + 600,
            [3; 32],
        );
        let token = |v: &Verified, route_index: u32| {
            let mut out = None;
            route_headers(Some(&minter), &route(AuthorizationHeader::Keep, true), route_index, Some(v), |c| {
                if let Change::Set(TOKEN_HEADER, t) = c {
                    out = Some(t);
                }
                Ok::<_, ()>(())
            })
            .unwrap();
            out.expect("a minted token")
        };
        let t1 = token(&a1, 0);
        assert_eq!(token(&a2, 0), t1, "the second credential reuses the first one's token");
        assert!(Arc::ptr_eq(a1.upstream.get().unwrap(), a2.upstream.get().unwrap()));
        assert_ne!(token(&bob, 0), t1);
        assert!(!Arc::ptr_eq(a1.upstream.get().unwrap(), bob.upstream.get().unwrap()));
        let shared = a1.upstream.get().unwrap().clone();
        for r in 1..=MINTED_PER_IDENTITY as u32 {
            token(&a1, r);
        }
        let routes: Vec<u32> = shared.minted.lock().unwrap().iter().map(|(r, _, _)| *r).collect();
        assert_eq!(routes, (1..=MINTED_PER_IDENTITY as u32).collect::<Vec<_>>(), "route 0, the oldest, made room");
        assert_ne!(token(&a2, 0), t1, "an evicted route's token is minted afresh");
        // Without a broker, headers only, per credential.
        let lone = Verified::new(alice(), 0, "k1".into(), now_secs() + 600, [4; 32]);
        assert!(changes(None, &route(AuthorizationHeader::Keep, true), Some(&lone)).iter().any(|c| matches!(c, Change::Set("x-identity-sub", _))));
        assert!(lone.upstream.get().unwrap().minted.lock().unwrap().is_empty());
    }

    /// What each `authorization` / `identity_token` combination sends, with and without
    /// a broker and a verified caller: the one table the proxy and forward-auth share.
    #[test]
    fn route_headers_follow_the_route_settings() {
        use AuthorizationHeader::*;
        let pem = crate::keys::generate_pem(crate::keys::KeyKind::Es256).unwrap();
        let signer = crate::keys::Signer::from_pkcs8(pem::parse(pem.as_bytes()).unwrap().contents()).unwrap();
        let minter = Minter::new(Arc::new(signer), "https://gw.test/broker", Duration::from_secs(300), 16);
        let id = Identity::new("wf", crate::identity::ProviderKind::Entra, Population::Workforce, "u1".into());
        let v = Verified::new(id, 0, String::new(), now_secs() + 600, [7; 32]);
        let names = |c: &[Change]| -> Vec<String> {
            c.iter()
                .map(|c| match c {
                    Change::Set(n, _) => n.to_string(),
                    Change::SetAuthorization(v) => format!("authorization={}", &v.to_str().unwrap()[..7]),
                    Change::RemoveAuthorization => "-authorization".into(),
                })
                .filter(|n| !n.starts_with("x-identity-") || n == TOKEN_HEADER)
                .collect()
        };
        let cases: [(AuthorizationHeader, bool, Option<&Minter>, &[&str]); 8] = [
            (Keep, true, Some(&minter), &["x-identity-token"]),
            (Keep, false, Some(&minter), &[]),
            (Strip, true, Some(&minter), &["x-identity-token", "-authorization"]),
            (IdentityToken, true, Some(&minter), &["x-identity-token", "authorization=Bearer "]),
            (IdentityToken, false, Some(&minter), &["authorization=Bearer "]),
            (IdentityToken, true, None, &["-authorization"]),
            (Keep, true, None, &[]),
            (Strip, false, None, &["-authorization"]),
        ];
        for (authz, token, m, want) in cases {
            let got = changes(m, &route(authz, token), Some(&v));
            assert_eq!(names(&got), want, "{authz:?} identity_token={token} broker={}", m.is_some());
            assert!(got.iter().any(|c| matches!(c, Change::Set("x-identity-sub", _))), "{authz:?}");
        }
        // Authorization carries exactly the X-Identity-Token.
        let got = changes(Some(&minter), &route(IdentityToken, true), Some(&v));
        let token = got.iter().find_map(|c| match c {
            Change::Set(TOKEN_HEADER, t) => Some(t.to_str().unwrap().to_string()),
            _ => None,
        });
        assert!(got.contains(&Change::SetAuthorization(HeaderValue::from_str(&format!("Bearer {}", token.unwrap())).unwrap())));
        // Public routes: no identity; `keep` leaves the header, the others remove it.
        assert!(changes(Some(&minter), &route(Keep, true), None).is_empty());
        for authz in [Strip, IdentityToken] {
            assert_eq!(changes(Some(&minter), &route(authz, true), None), [Change::RemoveAuthorization], "{authz:?}");
        }
    }

    /// A minted token carries exactly the identity's claims (as `identity_claims` maps
    /// them, nulls included) plus its own six, and the identity key changes with what
    /// the token says and not with per-token fields.
    #[test]
    fn minted_claims_are_the_identity_claims_plus_the_token_claims() {
        use base64::Engine;
        let pem = crate::keys::generate_pem(crate::keys::KeyKind::Es256).unwrap();
        let signer = crate::keys::Signer::from_pkcs8(pem::parse(pem.as_bytes()).unwrap().contents()).unwrap();
        let minter = Minter::new(Arc::new(signer), "https://gw.test/broker", Duration::from_secs(300), 16);
        let mut id = Identity::new("wf", crate::identity::ProviderKind::Entra, Population::Workforce, "u1".into());
        id.email = Some("zoë@example.com".into());
        id.groups = vec!["a\"b".into(), "c".into()];
        id.auth_time = Some(1_700_000_000);
        let tok = minter.mint(&id, "app", 1_800_000_000, 1_800_000_300);
        let parts: Vec<&str> = tok.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        assert_eq!(decode(parts[0]), json!({"alg": "ES256", "kid": minter.signer.kid, "typ": "JWT"}));
        let got = decode(parts[1]);
        let mut want = identity_claims(&id);
        for (k, v) in [("iss", json!("https://gw.test/broker")), ("aud", json!("app")), ("iat", json!(1_800_000_000)), ("nbf", json!(1_800_000_000)), ("exp", json!(1_800_000_300))] {
            want.insert(k.into(), v);
        }
        let jti = got["jti"].as_str().unwrap().to_string();
        assert!(jti.len() == 24 && jti.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{jti}");
        want.insert("jti".into(), json!(jti));
        assert_eq!(got, serde_json::Value::Object(want));
        assert_eq!(got["email"], "zoë@example.com");
        assert!(got["name"].is_null() && got.get("name").is_some(), "absent values are null");
        // The key follows what the token says, not per-token fields.
        let k = identity_key(&id);
        let mut later = id.clone();
        (later.iat, later.exp, later.token_id) = (Some(1), Some(2), Some("t".into()));
        assert_eq!(identity_key(&later), k);
        later.groups.push("d".into());
        assert_ne!(identity_key(&later), k);
    }

    #[test]
    fn headers_for_identity() {
        let mut id = Identity::new("corp", crate::identity::ProviderKind::Entra, Population::Workforce, "oid-1".into());
        id.tenant = "t".into();
        id.groups = vec!["hr".into(), "a,b".into()];
        id.mfa = true;
        let h = identity_headers(&id);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(get("x-identity-sub").as_deref(), Some("corp:oid-1"));
        assert_eq!(get("x-identity-groups").as_deref(), Some("hr,a%2Cb"));
        assert_eq!(get("x-identity-mfa").as_deref(), Some("true"));
        assert_eq!(get("x-identity-email"), None);
    }
}
