//! The broker's own JWTs: RFC 9068 access tokens (`typ: at+jwt`) and OpenID Connect ID
//! tokens, both carrying the normalised identity under the names of the normalised claim schema (docs/identity.md), signed with
//! the broker key (`rt.minter.signer`) and verified against the published keys
//! (`rt.minter.public_keys()`, so tokens of a retired key stay valid through rotation).

use crate::config::{BrokerClientSpec, BrokerSpec};
use crate::identity::Identity;
use crate::propagate::Minter;
use crate::providers::{jwks, jwt, now_secs};
use serde_json::{json, Map, Value};

/// `acr` of a sign-in with a proven second factor, and without one.
pub const ACR_MFA: &str = "mfa";
pub const ACR_SFA: &str = "sfa";

/// `acr_values` that ask for a second factor.
pub fn asks_for_mfa(acr_values: &str) -> bool {
    acr_values.split(' ').any(|v| {
        v == ACR_MFA
            || v == crate::providers::auth0::PAPE_MULTI_FACTOR
            || v == crate::providers::okta::LOA_2FA
    })
}

/// One grant being turned into tokens.
pub struct Grant<'a> {
    pub client: &'a BrokerClientSpec,
    pub identity: &'a Identity,
    pub scope: &'a [String],
    /// The family id (`sid`): revocation turns off every token carrying it.
    pub family: &'a str,
    pub auth_time: Option<i64>,
    pub nonce: Option<&'a str>,
}

impl Grant<'_> {
    fn has_scope(&self, s: &str) -> bool {
        self.scope.iter().any(|x| x == s)
    }
}

fn amr(id: &Identity) -> Vec<String> {
    let mut amr = id.amr.clone();
    if id.mfa && !amr.iter().any(|a| a == "mfa") {
        amr.push("mfa".into());
    }
    amr
}

/// The normalised identity fields (the normalised claim names) every broker token carries,
/// beside the standard claims; userinfo and discovery list them from here.
pub const NORMALISED_CLAIMS: &[&str] = &[
    "subject",
    "provider",
    "provider_kind",
    "population",
    "tenant",
    "org",
    "idp",
    "groups",
    "roles",
    "mfa",
    "principal_type",
];

/// The normalised identity fields every broker token carries (`NORMALISED_CLAIMS`).
fn identity_claims(c: &mut Map<String, Value>, id: &Identity) {
    c.extend(crate::identity::identity_claims(id).into_iter().filter(|(k, v)| NORMALISED_CLAIMS.contains(&k.as_str()) && !v.is_null()));
}

fn jti() -> String {
    crate::web::random(16)
}

/// An RFC 9068 access token (`aud` = the client).
pub fn access_token(m: &Minter, b: &BrokerSpec, g: &Grant<'_>, now: i64) -> (String, i64) {
    let exp = now + b.access_token_ttl.as_secs() as i64;
    let id = g.identity;
    let mut c = Map::new();
    identity_claims(&mut c, id);
    let std = json!({
        "iss": b.issuer,
        "sub": id.sub,
        "aud": g.client.client_id,
        "client_id": g.client.client_id,
        "iat": now,
        "exp": exp,
        "jti": jti(),
        "scope": g.scope.join(" "),
        "sid": g.family,
        "acr": if id.mfa { ACR_MFA } else { ACR_SFA },
        "amr": amr(id),
        "email": id.email,
        "email_verified": id.email_verified,
        "name": id.name,
        "username": id.username,
        "groups_complete": id.groups_complete,
        "permissions": id.permissions,
    });
    if let Value::Object(s) = std {
        c.extend(s.into_iter().filter(|(_, v)| !v.is_null()));
    }
    if let Some(t) = g.auth_time {
        c.insert("auth_time".into(), json!(t));
    }
    (m.signer.sign_jwt("at+jwt", &Value::Object(c)), exp)
}

/// An OpenID Connect ID token for `g.client`.
pub fn id_token(m: &Minter, b: &BrokerSpec, g: &Grant<'_>, access_token: &str, now: i64) -> String {
    let id = g.identity;
    let mut c = Map::new();
    identity_claims(&mut c, id);
    c.insert("iss".into(), json!(b.issuer));
    c.insert("sub".into(), json!(id.sub));
    c.insert("aud".into(), json!(g.client.client_id));
    c.insert("azp".into(), json!(g.client.client_id));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + b.id_token_ttl.as_secs() as i64));
    c.insert("sid".into(), json!(g.family));
    c.insert("acr".into(), json!(if id.mfa { ACR_MFA } else { ACR_SFA }));
    c.insert("amr".into(), json!(amr(id)));
    c.insert("at_hash".into(), json!(crate::keys::at_hash(m.signer.alg, access_token)));
    if let Some(t) = g.auth_time {
        c.insert("auth_time".into(), json!(t));
    }
    if let Some(n) = g.nonce {
        c.insert("nonce".into(), json!(n));
    }
    if g.has_scope("email") {
        if let Some(e) = &id.email {
            c.insert("email".into(), json!(e));
            if let Some(v) = id.email_verified {
                c.insert("email_verified".into(), json!(v));
            }
        }
    }
    if g.has_scope("profile") {
        if let Some(n) = &id.name {
            c.insert("name".into(), json!(n));
        }
        if let Some(u) = &id.username {
            c.insert("preferred_username".into(), json!(u));
        }
    }
    m.signer.sign_jwt("JWT", &Value::Object(c))
}

/// What kind of broker token to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    /// ID tokens (for `id_token_hint`: may be expired).
    Id,
}

/// Why a presented token is not a valid broker token. Each reason is a fixed,
/// secret-free sentence (the token itself never appears); the endpoint maps every one
/// to its OAuth error (`invalid_token` at `/userinfo`, an inactive token elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.description())]
pub enum VerifyError {
    Malformed,
    WrongType,
    BadSignature,
    WrongIssuer,
    NoExpiry,
    Expired,
    MissingClaim,
    WrongAudience,
}

impl VerifyError {
    /// The fixed description for an `error_description` (the `Display` text).
    pub fn description(self) -> &'static str {
        match self {
            VerifyError::Malformed => "the token is not a well-formed JWT",
            VerifyError::WrongType => "the token is not of the expected type",
            VerifyError::BadSignature => "the token is not signed by a key of this issuer",
            VerifyError::WrongIssuer => "the token was issued by another issuer",
            VerifyError::NoExpiry => "the token has no expiry",
            VerifyError::Expired => "the access token has expired",
            VerifyError::MissingClaim => "the token lacks a claim a broker token carries",
            VerifyError::WrongAudience => "the token's audience is not the client it was issued to",
        }
    }
}

/// Verifies a token the broker issued and returns its claims.
pub fn verify(m: &Minter, b: &BrokerSpec, token: &str, kind: Kind) -> Result<Map<String, Value>, VerifyError> {
    let parsed = jwt::parse(token).map_err(|_| VerifyError::Malformed)?;
    let typ = parsed.header.typ.as_deref().unwrap_or("");
    let typ_ok = match kind {
        Kind::Access => typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
        Kind::Id => typ.eq_ignore_ascii_case("JWT"),
    };
    if !typ_ok {
        return Err(VerifyError::WrongType);
    }
    let doc = json!({"keys": m.public_keys().collect::<Vec<_>>()}).to_string();
    let set = jwks::parse_jwks(doc.as_bytes(), "broker").map_err(|_| VerifyError::BadSignature)?;
    let key = set.find(parsed.header.kid.as_deref()).ok_or(VerifyError::BadSignature)?;
    jwt::verify_signature(&parsed, key).map_err(|_| VerifyError::BadSignature)?;
    let c = parsed.claims.into_map();
    if c.get("iss").and_then(Value::as_str) != Some(b.issuer.as_str()) {
        return Err(VerifyError::WrongIssuer);
    }
    let exp = c.get("exp").and_then(Value::as_i64).ok_or(VerifyError::NoExpiry)?;
    match kind {
        Kind::Access => {
            if exp + crate::providers::LEEWAY_SECS < now_secs() {
                return Err(VerifyError::Expired);
            }
            if c.get("client_id").and_then(Value::as_str).is_none() {
                return Err(VerifyError::MissingClaim);
            }
        }
        Kind::Id => {
            // X-Identity-Tokens share key and `typ`; only ID tokens name an `azp`.
            let azp = c.get("azp").and_then(Value::as_str).ok_or(VerifyError::MissingClaim)?;
            if c.get("aud").and_then(Value::as_str) != Some(azp) {
                return Err(VerifyError::WrongAudience);
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_claims_are_exactly_the_normalised_claims() {
        let id = Identity::new("wf", crate::identity::ProviderKind::Dev, crate::identity::Population::Workforce, "u1".into());
        let mut c = Map::new();
        identity_claims(&mut c, &id);
        for k in c.keys() {
            assert!(NORMALISED_CLAIMS.contains(&k.as_str()), "{k} is not listed in NORMALISED_CLAIMS");
        }
        for k in ["subject", "provider", "population", "mfa", "principal_type"] {
            assert!(c.contains_key(k), "{k}");
        }
    }

    #[test]
    fn verify_errors_carry_their_reason() {
        assert_eq!(VerifyError::Expired.to_string(), "the access token has expired");
        assert_eq!(VerifyError::BadSignature.description(), VerifyError::BadSignature.to_string());
    }

    #[test]
    fn mfa_acr_values() {
        assert!(asks_for_mfa("mfa"));
        assert!(asks_for_mfa("sfa http://schemas.openid.net/pape/policies/2007/06/multi-factor"));
        assert!(!asks_for_mfa("sfa"));
    }
}
