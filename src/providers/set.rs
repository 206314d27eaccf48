//! Security Event Tokens (RFC 8417, https://www.rfc-editor.org/rfc/rfc8417) that a
//! provider's Shared Signals transmitter pushes (RFC 8935) to idfabric.
//!
//! A SET is checked like every other provider-signed JWT (the same header rules and
//! signature code), with the provider found by its `ssf.issuer` rather than its token
//! issuer, and its keys taken from `ssf.jwks_url` when set (a transmitter such as
//! Okta's or Google's RISC feed publishes its own key set) or else the provider's own.
//! Then the SET rules: `aud` contains `ssf.audience`, `iat` present and recent, `jti`
//! present, `events` an object. `jti` single use is the caller's (it needs the store).

use super::jwks::{KeySet, VerifyKey};
use super::{jwt, now_secs, Registry, LEEWAY_SECS};
use crate::refusal::Refusal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a SET may be (by `iat`) and how long its `jti` is remembered. Push
/// transmitters retry a failed delivery for a while (Okta for minutes, Google's RISC
/// feed for up to hours); a day covers that, and a SET older than a day is refused.
pub const MAX_AGE_SECS: i64 = 24 * 3600;

/// Shortest time between two fetches of one `ssf.jwks_url` for an unknown `kid`.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// What a verified SET says.
#[derive(Debug, Clone)]
pub struct Set {
    /// Index of the provider whose `ssf.issuer` signed it.
    pub provider: usize,
    pub jti: String,
    /// Until when the `jti` must be remembered (seconds since the epoch).
    pub remember_until: i64,
    /// The `events` object: event type URI to payload.
    pub events: serde_json::Map<String, serde_json::Value>,
    /// The SSF 1.0 `sub_id` claim (RFC 9493 subject identifier), when present.
    pub sub_id: Option<serde_json::Value>,
}

/// Why a SET was refused: the RFC 8935 §2.3 `err` code ([`SetError::err`]), a fixed
/// reason for metrics and logs, and the `description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// A check every JWT shares (header, signature, times).
    #[error("{0}")]
    Token(Refusal),
    #[error("no provider has ssf.issuer `{0}`")]
    Issuer(String),
    #[error("no key of the transmitter matches the SET's kid")]
    UnknownKey,
    #[error("the transmitter's keys cannot be fetched")]
    KeysUnavailable,
    #[error("the SET is not for this receiver (aud)")]
    Audience,
    #[error("the SET lacks the required claim `{0}`")]
    Missing(&'static str),
    #[error("the events claim is not an object")]
    Events,
    #[error("the SET is older than {MAX_AGE_SECS} seconds")]
    TooOld,
    #[error("the SET (jti) was already received")]
    Replayed,
}

impl SetError {
    /// The RFC 8935 §2.3 error code.
    pub fn err(&self) -> &'static str {
        match self {
            SetError::Token(Refusal::BadSignature) | SetError::Token(Refusal::UnknownKid) | SetError::UnknownKey => "invalid_key",
            SetError::KeysUnavailable => "invalid_key",
            SetError::Issuer(_) => "invalid_issuer",
            SetError::Audience => "invalid_audience",
            _ => "invalid_request",
        }
    }

    /// Fixed label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SetError::Token(r) => r.reason(),
            SetError::Issuer(_) => "unknown_issuer",
            SetError::UnknownKey => "unknown_kid",
            SetError::KeysUnavailable => "keys_unavailable",
            SetError::Audience => "audience_mismatch",
            SetError::Missing(_) => "missing_claim",
            SetError::Events => "missing_event",
            SetError::TooOld => "too_old",
            SetError::Replayed => "replayed",
        }
    }
}

impl From<Refusal> for SetError {
    fn from(r: Refusal) -> Self {
        SetError::Token(r)
    }
}

/// Key sets fetched from `ssf.jwks_url`s: URL to (when fetched, keys).
fn fetched() -> &'static Mutex<HashMap<String, (Instant, Arc<KeySet>)>> {
    static KEYS: std::sync::OnceLock<Mutex<HashMap<String, (Instant, Arc<KeySet>)>>> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

impl Registry {
    /// Verifies a pushed SET (RFC 8417 §2, RFC 8935 §2); the `jti` replay check is
    /// the caller's.
    pub async fn verify_set(&self, token: &str) -> Result<Set, SetError> {
        let parsed = jwt::parse(token)?;
        // RFC 8417 §2.3: `typ` is `secevent+jwt` when present; an ID or access
        // token is never a SET.
        if let Some(typ) = parsed.header.typ.as_deref() {
            let t = typ.to_ascii_lowercase();
            if !matches!(t.as_str(), "secevent+jwt" | "application/secevent+jwt" | "jwt") {
                return Err(Refusal::Malformed("the typ is not secevent+jwt").into());
            }
        }
        let iss = parsed.claims.str("iss").ok_or(SetError::Missing("iss"))?;
        let index = self
            .providers
            .iter()
            .position(|p| p.spec.ssf.as_ref().is_some_and(|s| s.issuer == iss))
            .ok_or_else(|| SetError::Issuer(iss.chars().take(200).collect()))?;
        let key = self.set_key(index, parsed.header.kid.as_deref()).await?;
        jwt::verify_signature(&parsed, &key)?;
        let ssf = self.providers[index].spec.ssf.as_ref().expect("found by ssf");
        let c = &parsed.claims;
        if !c.has_audience(&ssf.audience) {
            return Err(SetError::Audience);
        }
        let now = now_secs();
        let iat = match c.raw("iat") {
            None => return Err(SetError::Missing("iat")),
            Some(_) => c.i64("iat").ok_or(Refusal::Malformed("iat is not a number"))?,
        };
        if iat > now + LEEWAY_SECS {
            return Err(Refusal::IssuedInFuture.into());
        }
        if iat + MAX_AGE_SECS + LEEWAY_SECS < now {
            return Err(SetError::TooOld);
        }
        if c.has("exp") {
            jwt::check_times(c, now, LEEWAY_SECS)?;
        }
        let events = match c.value("events") {
            Some(serde_json::Value::Object(events)) => events,
            _ => return Err(SetError::Events),
        };
        let jti = c.string("jti").filter(|j| !j.is_empty()).ok_or(SetError::Missing("jti"))?;
        Ok(Set { provider: index, jti, remember_until: iat + MAX_AGE_SECS + LEEWAY_SECS, events, sub_id: c.value("sub_id") })
    }

    /// The key for `kid`: from `ssf.jwks_url` when set (fetched on first use and for an
    /// unknown `kid`, at most every 10 seconds), else the provider's own keys (one
    /// rate-limited refetch for an unknown `kid`).
    async fn set_key(&self, index: usize, kid: Option<&str>) -> Result<Arc<VerifyKey>, SetError> {
        let p = &self.providers[index];
        let Some(url) = p.spec.ssf.as_ref().and_then(|s| s.jwks_url.clone()) else {
            if let Some(k) = p.keys().find(kid).cloned() {
                return Ok(k);
            }
            p.refetch(&self.http).await;
            return p.keys().find(kid).cloned().ok_or(SetError::UnknownKey);
        };
        let cached = fetched().lock().unwrap_or_else(|e| e.into_inner()).get(&url).cloned();
        let refresh_after = p.spec.jwks_refresh;
        if let Some((at, keys)) = &cached {
            if let Some(k) = keys.find(kid).filter(|_| at.elapsed() < refresh_after) {
                return Ok(k.clone());
            }
            if at.elapsed() < REFETCH_INTERVAL {
                return keys.find(kid).cloned().ok_or(SetError::UnknownKey);
            }
        }
        match super::jwks::fetch_jwks(&self.http, &url).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                fetched().lock().unwrap_or_else(|e| e.into_inner()).insert(url, (Instant::now(), keys.clone()));
                keys.find(kid).cloned().ok_or(SetError::UnknownKey)
            }
            Err(e) => {
                tracing::warn!(provider = p.id(), error = %e, "ssf.jwks_url cannot be fetched");
                match cached {
                    Some((_, keys)) => keys.find(kid).cloned().ok_or(SetError::UnknownKey),
                    None => Err(SetError::KeysUnavailable),
                }
            }
        }
    }
}

impl Registry {
    /// The provider whose token issuer is `iss` (an `iss_sub` subject identifier's
    /// `iss`), the first when several share it.
    pub fn provider_for_issuer(&self, iss: &str) -> Option<usize> {
        self.candidates(iss).first().copied()
    }
}
