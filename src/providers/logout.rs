//! Logout tokens of OpenID Connect Back-Channel Logout 1.0, as a relying party
//! (https://openid.net/specs/openid-connect-backchannel-1_0.html §2.4 and §2.6).
//!
//! A logout token is checked like an ID token from sign-in, with the same registry code
//! (provider by `iss`, key by `kid` with one rate-limited refetch, the header rules,
//! the signature with the key's own algorithm), then by the rules that keep an ID token
//! or an access token from passing for one: the `events` member, no `nonce`, `iat`
//! required, `sub` or `sid` present. `jti` single use is the caller's (it needs the
//! session store, which this module does not know).

use super::{jwt, now_secs, Registry, LEEWAY_SECS};
use crate::refusal::Refusal;

/// The `events` member that makes a JWT a logout token (§2.4).
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long after its `iat` a logout token without `exp` is accepted, and the shortest
/// time its `jti` is remembered. Providers send the token at once (node
/// `oidc-provider` gives it two minutes, Keycloak and Okta seconds); a token replayed
/// later than this is refused as too old rather than remembered for ever.
pub const MAX_AGE_SECS: i64 = 600;

/// What a verified logout token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// Index of the provider that signed it.
    pub provider: usize,
    /// The provider's subject (not yet `{provider}:` prefixed), when present.
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// Until when the `jti` must be remembered (seconds since the epoch).
    pub remember_until: i64,
}

/// Why a logout token was refused: the reason (a fixed label for logs and metrics) and
/// the `error_description` of the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// A check every token shares (header, issuer, key, signature, times).
    #[error("{0}")]
    Token(Refusal),
    #[error("the token is not for this client (aud)")]
    Audience,
    #[error("the provider has no client_id: idfabric is not its relying party")]
    NoClient,
    #[error("the token's typ is not logout+jwt")]
    Typ,
    #[error("the token lacks the required claim `{0}`")]
    Missing(&'static str),
    #[error("the events claim does not name the back-channel logout event")]
    Events,
    #[error("a logout token must not carry a nonce")]
    Nonce,
    #[error("the token is older than {MAX_AGE_SECS} seconds")]
    TooOld,
    #[error("the token (jti) was already used")]
    Replayed,
}

impl LogoutTokenError {
    /// Fixed label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            LogoutTokenError::Token(r) => r.reason(),
            LogoutTokenError::Audience => "audience_mismatch",
            LogoutTokenError::NoClient => "no_client_id",
            LogoutTokenError::Typ => "wrong_typ",
            LogoutTokenError::Missing(_) => "missing_claim",
            LogoutTokenError::Events => "missing_event",
            LogoutTokenError::Nonce => "nonce_present",
            LogoutTokenError::TooOld => "too_old",
            LogoutTokenError::Replayed => "replayed",
        }
    }
}

impl From<Refusal> for LogoutTokenError {
    fn from(r: Refusal) -> Self {
        LogoutTokenError::Token(r)
    }
}

impl Registry {
    /// Verifies a logout token (§2.6 steps 1-5 and 7; the `jti` replay check is the
    /// caller's). Every provider claiming the token's issuer is tried; the first one's
    /// refusal is reported.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutToken, LogoutTokenError> {
        let parsed = jwt::parse(token)?;
        // Explicit typing is recommended (§2.4) but not required; any other type
        // (an access token's `at+jwt`) is refused.
        if let Some(typ) = parsed.header.typ.as_deref() {
            let t = typ.to_ascii_lowercase();
            if !matches!(t.as_str(), "logout+jwt" | "application/logout+jwt" | "jwt") {
                return Err(LogoutTokenError::Typ);
            }
        }
        let iss = parsed.claims.str("iss").ok_or(LogoutTokenError::Missing("iss"))?;
        let candidates = self.candidates(iss);
        let mut first = None;
        for &i in candidates.iter() {
            match self.logout_token_at(i, &parsed).await {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or(LogoutTokenError::Token(Refusal::UnknownIssuer)))
    }

    async fn logout_token_at(&self, index: usize, parsed: &jwt::Parsed<'_>) -> Result<LogoutToken, LogoutTokenError> {
        let p = &self.providers[index];
        let client = p.spec.client_id.as_deref().ok_or(LogoutTokenError::NoClient)?;
        let kid = parsed.header.kid.as_deref();
        let key = match p.keys().find(kid).cloned() {
            Some(k) => k,
            None => {
                p.refetch(&self.http).await;
                p.keys().find(kid).cloned().ok_or(Refusal::UnknownKid)?
            }
        };
        jwt::verify_signature(parsed, &key)?;
        let c = &parsed.claims;
        if !c.has_audience(client) {
            return Err(LogoutTokenError::Audience);
        }
        let now = now_secs();
        let iat = match c.raw("iat") {
            None => return Err(LogoutTokenError::Missing("iat")),
            Some(_) => c.i64("iat").ok_or(Refusal::Malformed("iat is not a number"))?,
        };
        if iat > now + LEEWAY_SECS {
            return Err(Refusal::IssuedInFuture.into());
        }
        let exp = match c.raw("exp") {
            None => None,
            Some(_) => Some(jwt::check_times(c, now, LEEWAY_SECS)?),
        };
        if exp.is_none() && iat + MAX_AGE_SECS + LEEWAY_SECS < now {
            return Err(LogoutTokenError::TooOld);
        }
        let events = c.value("events");
        let events = events.as_ref().and_then(|e| e.as_object()).ok_or(LogoutTokenError::Events)?;
        if !events.get(EVENT).is_some_and(|v| v.is_object()) {
            return Err(LogoutTokenError::Events);
        }
        if c.has("nonce") {
            return Err(LogoutTokenError::Nonce);
        }
        let jti = c.string("jti").filter(|j| !j.is_empty()).ok_or(LogoutTokenError::Missing("jti"))?;
        let sub = c.string("sub").filter(|s| !s.is_empty());
        let sid = c.string("sid").filter(|s| !s.is_empty());
        if sub.is_none() && sid.is_none() {
            return Err(LogoutTokenError::Missing("sub or sid"));
        }
        let remember_until = exp.unwrap_or(iat).max(iat + MAX_AGE_SECS) + LEEWAY_SECS;
        Ok(LogoutToken { provider: index, sub, sid, jti, remember_until })
    }
}
