//! Browser sessions and login transactions, behind one key-value store trait with two
//! implementations: `memory` (moka, one process) and `redis` (shared by replicas).
//!
//! The cookie holds only an opaque random id (256 bits); everything else is in the
//! store: the normalised identity, the login's MFA state (providers such as Auth0 drop
//! `amr` on silent renew), and the upstream refresh token sealed with the session key
//! (AES-256-GCM), so a store dump alone does not reveal it. Sessions have an idle
//! (sliding) and an absolute expiry. Login transactions (`state`, `nonce`, PKCE
//! verifier, return path, the digest of the browser-binding nonce) are single use:
//! taking one deletes it atomically. They live in their own bounded space
//! (`pending`), not beside sessions: anyone can start a sign-in, and a flood of starts
//! must never push a signed-in user out.

pub mod cache;
pub mod directory;
pub mod handoff;
pub mod memory;
pub mod pending;
pub mod redis_conn;
pub mod redis_store;
mod refresh;

pub use refresh::session_for;

use crate::identity::Identity;
use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store returned data it cannot read")]
    Corrupt,
}

/// The key-value operations sessions, transactions and (later) broker codes need.
#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError>;
    /// Reads and deletes in one step (single-use values).
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Sets `key` only if absent; true when this call set it (cross-replica "once").
    async fn set_nx(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.set_if_absent(key, b"1".to_vec(), ttl).await
    }
    /// Sets `key` to `value` only if absent, in one atomic step; true when this call set
    /// it. Exactly one of any number of concurrent callers (on any replica) sees true:
    /// the broker's single-use claim on a code or refresh token.
    async fn set_if_absent(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, StoreError>;
    /// Adds `member` to the set at `key` (kept at least `ttl`).
    async fn add_member(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError>;
    async fn members(&self, key: &str) -> Result<Vec<String>, StoreError>;
    /// True when `member` was in the set (exactly one concurrent caller sees true).
    async fn remove_member(&self, key: &str, member: &str) -> Result<bool, StoreError>;
    /// A health probe.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Merges access evidence (`crate::access`): per (`sub`, route) the earliest first
    /// seen, the latest last seen and the summed count; the identity facts of the
    /// record with the latest `last_seen` win.
    async fn record_access(&self, _records: &[AccessRecord]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(format!("the {} store keeps no access evidence", self.kind())))
    }
    /// Every access record held, with its identity's latest facts.
    async fn scan_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        Err(StoreError::Unavailable(format!("the {} store keeps no access evidence", self.kind())))
    }
    /// Whether other processes share this store (Redis: yes; memory: no). A store that
    /// is not shared keeps no log and sends no messages: the one process that uses it
    /// already knows everything it wrote.
    fn is_shared(&self) -> bool {
        false
    }
    /// Adds `member` to the time-ordered log at `key` (`score`: milliseconds since the
    /// epoch) and drops members older than `keep` (revocations: `crate::revocation`).
    async fn log_append(&self, _key: &str, _score: i64, _member: &str, _keep: Duration) -> Result<(), StoreError> {
        Ok(())
    }
    /// The members of the log at `key` with a score above `after`, oldest first, with
    /// their scores.
    async fn log_since(&self, _key: &str, _after: i64) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(Vec::new())
    }
    /// Sends `message` to every process subscribed to `channel` (at most once, no
    /// replay: `log_since` is the catch-up).
    async fn publish(&self, _channel: &str, _message: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Subscribes to `channel` and hands every message to `tx` until the subscription
    /// breaks (then returns, so the caller reconnects). `Ok(false)` when this store
    /// cannot subscribe (not shared, or a Redis Cluster): the log poll alone serves.
    async fn subscribe(&self, _channel: &str, _tx: tokio::sync::mpsc::Sender<String>) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Which implementation, for logs and `/providers`.
    fn kind(&self) -> &'static str;
}

/// Access evidence for one identity on one route (`crate::access`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub sub: String,
    pub route: String,
    pub provider: String,
    pub username: Option<String>,
    pub name: Option<String>,
    /// The identity's groups when last seen (on any route).
    pub groups: Vec<String>,
    /// Seconds since the epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
}

/// How long access evidence is kept after an identity's last access to a route.
pub const ACCESS_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// One signed-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub identity: Identity,
    pub created_at: i64,
    /// Absolute end, whatever the activity.
    pub expires_at: i64,
    /// The upstream tokens' expiry (refresh shortly before it).
    pub upstream_exp: Option<i64>,
    /// Sealed with the session key.
    pub refresh_token: Option<String>,
    /// Kept for RP-initiated logout (`id_token_hint`).
    pub id_token: Option<String>,
    /// The login proved MFA (kept across refreshes that drop `amr`).
    pub mfa: bool,
    /// The network (/24 or /48, `crate::risk::network_of`) of the client address the
    /// session began from, as CIDR text: adaptive MFA's `network_change` compares
    /// against it. Absent for sessions begun without a known client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// When the idle expiry was last pushed back (it slides at most once a minute,
    /// so a busy session costs a read per request, not a write).
    #[serde(default)]
    pub touched_at: i64,
}

/// The session's MFA still counts: an identity rebuilt from a session (each request,
/// a broker sign-in, a token refresh whose ID token dropped `amr`) keeps the second
/// factor its login proved, marked as coming from the session.
pub fn carry_mfa(identity: &mut Identity, login_mfa: bool) {
    if login_mfa && !identity.mfa {
        identity.mfa = true;
        identity.mfa_source = crate::identity::MfaSource::Session;
    }
}

/// A login in progress, keyed by its `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTxn {
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to return after sign-in: a path on a configured route host.
    pub rd: String,
    /// The host the browser used (callback and return stay on it).
    pub host: String,
    pub created_at: i64,
    pub step_up: bool,
    /// SHA-256 (hex) of the nonce in the browser's `ltx` cookie (`crate::web::binding`);
    /// empty never matches.
    #[serde(default)]
    pub browser: String,
    /// The journey at the provider (sign-in, sign-up, reset, …): the funnel's label.
    #[serde(default)]
    pub journey: crate::journey::Journey,
    /// Azure AD B2C: the policy whose endpoints the journey runs at (its token
    /// endpoint redeems the code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// The 32-byte session key from `session.key_file`, and the device-cookie MAC key
/// derived from it (`crate::risk::device`).
pub struct SessionKey(LessSafeKey, crate::risk::device::DeviceKey);

impl SessionKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<SessionKey> {
        if bytes.len() != 32 {
            return None;
        }
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?);
        Some(SessionKey(aead, crate::risk::device::DeviceKey::from_secret(bytes)))
    }

    /// The key that MACs device cookies (adaptive MFA's `new_device`).
    pub fn device(&self) -> &crate::risk::device::DeviceKey {
        &self.1
    }

    /// A random key (when no key file is configured: sessions then do not survive a restart).
    pub fn random() -> SessionKey {
        let mut k = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut k);
        SessionKey::from_bytes(&k).expect("32 bytes")
    }

    pub fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        let mut buf = plaintext.as_bytes().to_vec();
        let _ = self.0.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, rest) = raw.split_at(12);
        let mut buf = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.0.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// Session ids: 256 random bits, base64url (43 characters).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A cookie value that could be one of our ids (anything else is not looked up).
pub fn plausible_id(v: &str) -> bool {
    v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now() -> i64 {
    crate::providers::now_secs()
}

/// The longest address kept or looked up (RFC 5321 §4.5.3.1.3: a path is at most 256
/// octets, the address inside it 254).
pub const MAX_EMAIL: usize = 254;

/// An email address as idfabric compares it: trimmed and lower-cased whole, local part
/// included. RFC 5321 lets the local part be case-sensitive, but the identity providers
/// idfabric reads (Entra, Okta, Auth0, Google, Cognito) treat `Ann@x.test` and
/// `ann@x.test` as one account, and transmitters do not promise the case the user
/// signed in with. `None` for anything that is not one address: empty, without a
/// local part and a domain around one `@`, longer than [`MAX_EMAIL`], or with
/// whitespace or control characters (these never reach a store key).
pub fn email_key_part(email: &str) -> Option<String> {
    let e = email.trim();
    if e.len() > MAX_EMAIL || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = e.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(e.to_lowercase())
}

/// The identity's address when its provider says it is verified (`email_verified:
/// true`); absent or `false` is no address.
fn verified_email(identity: &Identity) -> Option<String> {
    (identity.email_verified == Some(true)).then_some(())?;
    email_key_part(identity.email.as_deref()?)
}

/// Counts sessions ended (`idfabric_sessions_ended_total{reason}`). Counted where the
/// ending happens, once, by the replica that ended it, so the sum over replicas is right.
/// Sessions that run out their idle time in the store are not seen ending.
fn ended(reason: &'static str, n: u64) {
    if n > 0 {
        crate::metrics::metrics().sessions_ended_total.with_label_values(&[reason]).inc_by(n);
        crate::metrics::metrics().sessions_active.sub(n as i64);
    }
}

/// Sessions over a `Store`, sign-ins in progress in their own `Pending` space.
pub struct Sessions {
    pub store: Arc<dyn Store>,
    pub pending: Arc<dyn pending::Pending>,
    /// `session.login_limits`: caps of the pending space.
    pub caps: pending::Caps,
    pub key: SessionKey,
    /// Idle timeout (sliding) and absolute lifetime.
    pub idle: Duration,
    pub absolute: Duration,
}

const TXN_TTL: Duration = Duration::from_secs(600);

/// The pending-space key of a request parked as `id` while its browser signs in (a
/// broker `/authorize` request; its `btx` binding cookie names the same id).
pub fn parked_key(id: &str) -> String {
    format!("b:{id}")
}

/// What a request parked while its browser signs in hands to the sign-in page: the
/// providers it may use. Parked inside the request's own record (as `offer`), so the
/// sign-in reads it without knowing who parked it, and the record's caps, lifetime and
/// single use apply to it unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInOffer {
    /// The host (normalised) the sign-in must run on.
    pub host: String,
    /// The return path (`rd`) of the sign-in: the parked request's resume path.
    pub rd: String,
    /// Ids of the providers that may sign the browser in.
    pub providers: Vec<String>,
}

/// The offer of the request parked as `id`, left parked. `None` when there is no such
/// request (expired, resumed) or it offers nothing.
pub async fn parked_offer(pending: &dyn pending::Pending, id: &str) -> Result<Option<SignInOffer>, StoreError> {
    #[derive(Deserialize)]
    struct Parked {
        #[serde(default)]
        offer: Option<SignInOffer>,
    }
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    let Some(b) = pending.peek(&parked_key(id)).await? else { return Ok(None) };
    let parked: Parked = serde_json::from_slice(&b).map_err(|_| StoreError::Corrupt)?;
    Ok(parked.offer)
}

impl Sessions {
    fn skey(id: &str) -> String {
        format!("idf:s:{id}")
    }

    fn subkey(sub: &str) -> String {
        format!("idf:sub:{sub}")
    }

    /// The sessions signed in through one upstream session (the provider's `sid`), for
    /// back-channel logout.
    fn upstream_key(provider: &str, sid: &str) -> String {
        format!("idf:usid:{provider}:{sid}")
    }

    /// The subjects (global `{provider}:{subject}`) that signed in at `provider` with
    /// the verified address `email` (already [`email_key_part`]), for Shared Signals
    /// events that name a person by email.
    fn email_key(provider: &str, email: &str) -> String {
        format!("idf:email:{provider}:{email}")
    }

    /// Stores a new session and returns its id.
    pub async fn create(&self, mut s: Session) -> Result<String, StoreError> {
        let id = new_id();
        s.created_at = now();
        s.touched_at = s.created_at;
        s.expires_at = s.created_at + self.absolute.as_secs() as i64;
        self.save(&id, &s).await?;
        self.store.add_member(&Self::subkey(&s.identity.sub), &id, self.absolute).await?;
        if let Some(sid) = &s.identity.session_id {
            self.store.add_member(&Self::upstream_key(&s.identity.provider, sid), &id, self.absolute).await?;
        }
        // Only an address the provider vouches for: an unverified one is whatever the
        // person typed, and indexing it would let anyone put their subject under a
        // victim's address (or the victim's under theirs). Kept as long as the session.
        if let Some(email) = verified_email(&s.identity) {
            self.store.add_member(&Self::email_key(&s.identity.provider, &email), &s.identity.sub, self.absolute).await?;
        }
        crate::metrics::metrics().sessions_created_total.inc();
        crate::metrics::metrics().sessions_active.inc();
        Ok(id)
    }

    async fn save(&self, id: &str, s: &Session) -> Result<(), StoreError> {
        let left = (s.expires_at - now()).max(1) as u64;
        let ttl = self.idle.min(Duration::from_secs(left));
        let bytes = serde_json::to_vec(s).map_err(|_| StoreError::Corrupt)?;
        self.store.set(&Self::skey(id), bytes, ttl).await
    }

    /// The session for a cookie value, sliding its idle expiry.
    pub async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        if !plausible_id(id) {
            return Ok(None);
        }
        let Some(bytes) = self.store.get(&Self::skey(id)).await? else { return Ok(None) };
        let mut s: Session = serde_json::from_slice(&bytes).map_err(|_| StoreError::Corrupt)?;
        let now = now();
        if s.expires_at <= now {
            cache::invalidate_session(id);
            self.store.delete(&Self::skey(id)).await?;
            ended("expired", 1);
            return Ok(None);
        }
        if now - s.touched_at >= 60 {
            s.touched_at = now;
            self.save(id, &s).await?;
        }
        Ok(Some(s))
    }

    /// Stores a changed session (a refresh); this replica's cached lookup is forgotten.
    pub async fn update(&self, id: &str, s: &Session) -> Result<(), StoreError> {
        let r = self.save(id, s).await;
        cache::invalidate_session(id);
        r
    }

    pub async fn destroy(&self, id: &str) -> Result<Option<Session>, StoreError> {
        if !plausible_id(id) {
            return Ok(None);
        }
        // Before and after: a lookup that read the session before it was taken is not
        // cached (the cache compares an invalidation counter around each lookup).
        cache::invalidate_session(id);
        let old = self.store.take(&Self::skey(id)).await;
        cache::invalidate_session(id);
        let old = old?;
        let s: Option<Session> = old.and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(s) = &s {
            ended("logout", 1);
            let _ = self.store.remove_member(&Self::subkey(&s.identity.sub), id).await?;
        }
        Ok(s)
    }

    /// The subjects (global `{provider}:{subject}`) that signed in at `provider` with the
    /// verified address `email` within the last session lifetime. `email` is compared
    /// as [`email_key_part`] makes it; an address that is not one yields nothing.
    pub async fn subjects_by_email(&self, provider: &str, email: &str) -> Result<Vec<String>, StoreError> {
        let Some(email) = email_key_part(email) else { return Ok(Vec::new()) };
        let prefix = format!("{provider}:");
        let mut subs = self.store.members(&Self::email_key(provider, &email)).await?;
        subs.retain(|s| s.starts_with(&prefix));
        subs.sort();
        Ok(subs)
    }

    /// Ends every session of `sub` (the leaver case); returns how many were live.
    pub async fn revoke_sub(&self, sub: &str) -> Result<usize, StoreError> {
        cache::invalidate_subject(sub);
        let ids = self.store.members(&Self::subkey(sub)).await?;
        let mut n = 0;
        for id in &ids {
            if self.store.take(&Self::skey(id)).await?.is_some() {
                n += 1;
            }
        }
        self.store.delete(&Self::subkey(sub)).await?;
        // A lookup that read a session before it was taken is not served either.
        cache::invalidate_subject(sub);
        ended("revoked", n as u64);
        Ok(n)
    }

    /// Ends every session signed in through the upstream session `sid` of `provider`
    /// (back-channel logout); returns the ids of those that were live.
    pub async fn revoke_upstream_session(&self, provider: &str, sid: &str) -> Result<Vec<String>, StoreError> {
        let key = Self::upstream_key(provider, sid);
        let mut ended_ids = Vec::new();
        for id in self.store.members(&key).await? {
            if let Some(b) = self.store.take(&Self::skey(&id)).await? {
                if let Ok(s) = serde_json::from_slice::<Session>(&b) {
                    let _ = self.store.remove_member(&Self::subkey(&s.identity.sub), &id).await?;
                }
                ended_ids.push(id);
            }
        }
        self.store.delete(&key).await?;
        ended("revoked", ended_ids.len() as u64);
        Ok(ended_ids)
    }

    /// Parks a login transaction for `client`, dropping the oldest beyond the caps.
    pub async fn begin_login(&self, state: &str, txn: &LoginTxn, client: &str) -> Result<pending::Parked, StoreError> {
        let bytes = serde_json::to_vec(txn).map_err(|_| StoreError::Corrupt)?;
        let tag = txn.journey.tag(&txn.provider);
        self.pending.park(&format!("t:{state}"), client, &tag, bytes, TXN_TTL, self.caps).await
    }

    /// Sign-ins in progress older than their lifetime: removed a page at a time (never
    /// the whole space at once); returns their tags (a login's provider id, empty for a
    /// parked broker request), each reported by one replica only.
    pub async fn sweep_abandoned(&self) -> Result<pending::Swept, StoreError> {
        const PAGE: usize = 500;
        const PAGES_PER_SWEEP: usize = 40;
        let cutoff = now() - TXN_TTL.as_secs() as i64;
        let mut all = pending::Swept::default();
        for _ in 0..PAGES_PER_SWEEP {
            let page = self.pending.sweep(cutoff, PAGE).await?;
            let last = page.expired.len() < PAGE;
            all.expired.extend(page.expired);
            all.held = page.held;
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// The transaction for `state`, at most once.
    pub async fn finish_login(&self, state: &str) -> Result<Option<LoginTxn>, StoreError> {
        if state.is_empty() || state.len() > 128 {
            return Ok(None);
        }
        let Some(bytes) = self.pending.take(&format!("t:{state}")).await? else { return Ok(None) };
        let t: LoginTxn = serde_json::from_slice(&bytes).map_err(|_| StoreError::Corrupt)?;
        Ok((now() - t.created_at <= TXN_TTL.as_secs() as i64).then_some(t))
    }

    /// True for exactly one caller per `id` within `ttl` (refresh once across replicas).
    pub async fn claim_refresh(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.store.set_nx(&format!("idf:lock:{id}"), ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let k = SessionKey::random();
        let sealed = k.seal("refresh-token-value", "sid-1");
        assert_eq!(k.open(&sealed, "sid-1").as_deref(), Some("refresh-token-value"));
        assert_eq!(k.open(&sealed, "sid-2"), None, "bound to its session");
        assert_eq!(SessionKey::random().open(&sealed, "sid-1"), None, "other key");
        assert!(!sealed.contains("refresh"));
    }

    #[test]
    fn email_addresses_are_compared_lower_cased_whole() {
        assert_eq!(email_key_part(" Ann.Lee@Corp.TEST ").as_deref(), Some("ann.lee@corp.test"));
        assert_eq!(email_key_part("\"a@b\"@corp.test").as_deref(), Some("\"a@b\"@corp.test"), "the last @ splits");
        for bad in ["", "ann", "@corp.test", "ann@", "ann @corp.test", "ann@corp\n.test", "ann@corp.test\u{0}"] {
            assert_eq!(email_key_part(bad), None, "{bad:?}");
        }
        let long = format!("{}@corp.test", "a".repeat(MAX_EMAIL));
        assert_eq!(email_key_part(&long), None);
    }

    #[test]
    fn only_a_verified_email_is_indexed() {
        use crate::identity::{Population, ProviderKind};
        let mut id = Identity::new("p", ProviderKind::Dev, Population::Workforce, "u1".into());
        id.email = Some("Ann@Corp.test".into());
        assert_eq!(verified_email(&id), None, "unknown");
        id.email_verified = Some(false);
        assert_eq!(verified_email(&id), None, "unverified");
        id.email_verified = Some(true);
        assert_eq!(verified_email(&id).as_deref(), Some("ann@corp.test"));
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(plausible_id(&id));
        assert!(!plausible_id("short"));
        assert!(!plausible_id(&format!("{}!", &id[..42])));
    }
}
