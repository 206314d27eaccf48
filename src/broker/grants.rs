//! Broker state over the shared `session::Store` (memory or Redis), so every replica
//! honours every code and refresh token.
//!
//! - Authorize transactions (`b:{id}` in the pending space of `crate::session::pending`,
//!   apart from sessions and capped): the authorize request parked while the user signs
//!   in, with the SHA-256 of the browser-binding nonce (the `btx` cookie,
//!   `crate::web::binding`); single use (`take`), 10 minutes.
//! - Codes (`idf:bc:{sha256}`): single use, 60 seconds, bound to the client, redirect
//!   URI and PKCE challenge. Redeeming *claims* the code first: its used-marker
//!   (`idf:bcu:{sha256}` → family) is set with the store's atomic set-if-absent, so of
//!   any number of concurrent redemptions (on any replica) exactly one wins, and every
//!   other one, concurrent or later, finds the marker and revokes what the code produced.
//! - Refresh tokens: opaque 256-bit values stored only as SHA-256 (`idf:brt:{sha256}`),
//!   each in a *family* (one sign-in at one client). Every use rotates, claimed the same
//!   way: the used-marker (`idf:bru:{sha256}` → family) is set if absent before the token
//!   is deleted, so presenting a rotated token again — or twice at once — revokes the
//!   whole family (`idf:bfr:{family}`), which also turns off the family's access tokens
//!   at `/userinfo` and `/introspect`.
//!
//! Why claim-then-delete rather than `take` (GETDEL): with `take`, a loser of a race
//! finds neither the token nor (yet) the marker and cannot tell a replay from garbage,
//! so a concurrent replay would escape the family revocation.
//!
//! Nothing here stores a code, token or nonce in the clear; keys are digests.

use super::digest;
use crate::identity::Identity;
use crate::session::pending::{Caps, Parked, Pending};
use crate::session::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const TXN_TTL: Duration = Duration::from_secs(600);
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a redeemed code is remembered, so that a replay still finds its family.
pub const USED_CODE_TTL: Duration = Duration::from_secs(24 * 3600);

/// An authorize request waiting for the user to sign in (or step up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthzRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub scope: Vec<String>,
    pub code_challenge: Option<String>,
    pub max_age: Option<i64>,
    /// `acr_values` asked for a second factor.
    pub mfa: bool,
    /// `prompt=login` (or `max_age` exceeded): the sign-in must be newer than this request.
    pub fresh: bool,
    pub created_at: i64,
    /// SHA-256 (hex) of the browser-binding nonce held in the `btx` cookie; empty (never
    /// matches) until parked.
    #[serde(default)]
    pub browser: String,
    /// What the sign-in may offer the browser (the client's providers), read by
    /// `/.idfabric/login` from the parked request.
    #[serde(default)]
    pub offer: Option<crate::session::SignInOffer>,
}

/// Outcome of resuming a parked authorize request.
pub enum Unparked {
    Live(Box<AuthzRequest>),
    /// Unknown, already resumed, or older than [`TXN_TTL`].
    Expired,
    /// The browser's nonce does not match: the request was started in another browser.
    /// The request stays parked for its own browser.
    Foreign,
}

/// What a code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scope: Vec<String>,
    pub identity: Identity,
    pub auth_time: Option<i64>,
    /// The idfabric browser session the user signed in with.
    pub session: Option<String>,
    pub family: String,
    pub created_at: i64,
}

/// What a refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub family: String,
    pub client_id: String,
    pub scope: Vec<String>,
    pub identity: Identity,
    pub auth_time: Option<i64>,
    /// Bound to this browser session (no `offline_access`): refresh ends with it.
    pub session: Option<String>,
    /// The family's absolute end (rotation does not extend it).
    pub family_exp: i64,
}

/// Who holds a family's tokens (`idf:bfh:{family}`): the client, and the `sub` its
/// tokens carry; read when the family's session ends, to send the client a logout
/// token (`super::backchannel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub client_id: String,
    pub sub: String,
}

fn holder_key(family: &str) -> String {
    format!("idf:bfh:{family}")
}

/// Takes (reads and deletes at once) the holder of `family`, so that of two
/// revocations of one family only the first announces it.
pub async fn take_holder(store: &dyn Store, family: &str) -> Result<Option<Holder>, StoreError> {
    match store.take(&holder_key(family)).await? {
        Some(b) => parse(&b).map(Some),
        None => Ok(None),
    }
}

/// Outcome of presenting a refresh token.
pub enum Redeemed {
    Live(Box<RefreshGrant>),
    /// A rotated token presented again: the family is now revoked.
    Reused,
    Unknown,
}

/// Outcome of presenting a code.
pub enum CodeRedeemed {
    Live(Box<CodeGrant>),
    /// Already redeemed: the family it produced is now revoked.
    Replayed,
    Unknown,
}

/// What a bulk revocation ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// Families bound to the session or user (revoked before or now).
    pub count: usize,
    /// Families that were live until this revocation (to announce to their clients).
    pub fresh: Vec<String>,
}

pub struct Grants<'a> {
    pub store: &'a dyn Store,
    /// How long family markers live: the longest lifetime of any token of a family.
    pub family_ttl: Duration,
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|_| StoreError::Corrupt)
}

fn parse<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|_| StoreError::Corrupt)
}

fn now() -> i64 {
    crate::providers::now_secs()
}

/// Parks `r` as `id` for `client`'s browser holding the nonce whose digest is `browser`,
/// in the space of sign-ins in progress (capped per client and overall, see
/// `crate::session::pending`).
pub async fn park(
    pending: &dyn Pending,
    caps: Caps,
    client: &str,
    id: &str,
    r: &AuthzRequest,
    browser: &str,
) -> Result<Parked, StoreError> {
    let bound = AuthzRequest { browser: browser.to_string(), ..r.clone() };
    pending.park(&crate::session::parked_key(id), client, "", json(&bound)?, TXN_TTL, caps).await
}

/// Resumes the request parked as `id` for the browser presenting `nonce`. The nonce is
/// compared (as digests, in constant time) before the request is taken, so a stranger
/// holding the resume link cannot use up the real browser's request.
pub async fn unpark(pending: &dyn Pending, id: &str, nonce: &str) -> Result<Unparked, StoreError> {
    if id.is_empty() || id.len() > 64 {
        return Ok(Unparked::Expired);
    }
    let key = crate::session::parked_key(id);
    let Some(b) = pending.peek(&key).await? else { return Ok(Unparked::Expired) };
    let parked: AuthzRequest = parse(&b)?;
    if !crate::web::binding::matches(&parked.browser, nonce) {
        return Ok(Unparked::Foreign);
    }
    let Some(b) = pending.take(&key).await? else { return Ok(Unparked::Expired) };
    let r: AuthzRequest = parse(&b)?;
    if now() - r.created_at > TXN_TTL.as_secs() as i64 {
        return Ok(Unparked::Expired);
    }
    Ok(Unparked::Live(Box::new(r)))
}

impl Grants<'_> {
    pub async fn put_code(&self, code: &str, g: &CodeGrant) -> Result<(), StoreError> {
        self.store.set(&format!("idf:bc:{}", digest(code)), json(g)?, CODE_TTL).await
    }

    /// Redeems a code, once across every replica: the used-marker is claimed atomically
    /// before the code is deleted. A code seen before (or being redeemed right now by
    /// another request) revokes the family it produced.
    pub async fn take_code(&self, code: &str) -> Result<CodeRedeemed, StoreError> {
        let d = digest(code);
        let used = format!("idf:bcu:{d}");
        let Some(b) = self.store.get(&format!("idf:bc:{d}")).await? else { return self.code_replay(&used).await };
        let g: CodeGrant = parse(&b)?;
        if !self.store.set_if_absent(&used, g.family.as_bytes().to_vec(), USED_CODE_TTL).await? {
            self.revoke_family(&g.family).await?;
            return Ok(CodeRedeemed::Replayed);
        }
        self.store.delete(&format!("idf:bc:{d}")).await?;
        if now() - g.created_at > CODE_TTL.as_secs() as i64 {
            return Ok(CodeRedeemed::Unknown);
        }
        Ok(CodeRedeemed::Live(Box::new(g)))
    }

    /// A code that is gone: a replay when its used-marker remains.
    async fn code_replay(&self, used: &str) -> Result<CodeRedeemed, StoreError> {
        match self.store.get(used).await? {
            Some(family) => {
                self.revoke_family(&String::from_utf8_lossy(&family)).await?;
                Ok(CodeRedeemed::Replayed)
            }
            None => Ok(CodeRedeemed::Unknown),
        }
    }

    /// Stores a new refresh token of `g.family`.
    pub async fn put_refresh(&self, token: &str, g: &RefreshGrant) -> Result<(), StoreError> {
        let d = digest(token);
        let left = Duration::from_secs((g.family_exp - now()).max(1) as u64);
        self.store.set(&format!("idf:brt:{d}"), json(g)?, left).await?;
        self.store.add_member(&format!("idf:bfm:{}", g.family), &d, left).await
    }

    /// Uses a refresh token (rotation), once across every replica: the used-marker is
    /// claimed atomically before the token is deleted. A rotated token presented again,
    /// or presented twice at once, revokes its family.
    pub async fn take_refresh(&self, token: &str) -> Result<Redeemed, StoreError> {
        let d = digest(token);
        let used = format!("idf:bru:{d}");
        let Some(b) = self.store.get(&format!("idf:brt:{d}")).await? else { return self.refresh_reuse(&used).await };
        let g: RefreshGrant = parse(&b)?;
        let left = Duration::from_secs((g.family_exp - now()).max(1) as u64);
        if !self.store.set_if_absent(&used, g.family.as_bytes().to_vec(), left).await? {
            self.revoke_family(&g.family).await?;
            return Ok(Redeemed::Reused);
        }
        self.store.delete(&format!("idf:brt:{d}")).await?;
        let _ = self.store.remove_member(&format!("idf:bfm:{}", g.family), &d).await?;
        if g.family_exp < now() || self.is_revoked(&g.family).await? {
            return Ok(Redeemed::Unknown);
        }
        Ok(Redeemed::Live(Box::new(g)))
    }

    /// A refresh token that is gone: reuse when its used-marker remains.
    async fn refresh_reuse(&self, used: &str) -> Result<Redeemed, StoreError> {
        match self.store.get(used).await? {
            Some(family) => {
                self.revoke_family(&String::from_utf8_lossy(&family)).await?;
                Ok(Redeemed::Reused)
            }
            None => Ok(Redeemed::Unknown),
        }
    }

    /// A live refresh token's grant, without using it (introspection, revocation).
    pub async fn peek_refresh(&self, token: &str) -> Result<Option<RefreshGrant>, StoreError> {
        let Some(b) = self.store.get(&format!("idf:brt:{}", digest(token))).await? else { return Ok(None) };
        let g: RefreshGrant = parse(&b)?;
        if g.family_exp < now() || self.is_revoked(&g.family).await? {
            return Ok(None);
        }
        Ok(Some(g))
    }

    /// Revokes every token of a family: refresh tokens are deleted, access tokens are
    /// refused by `/userinfo` and `/introspect` through the marker. Returns whether the
    /// family was live until now (the marker was absent), so that only a family's first
    /// end is announced to its client.
    pub async fn revoke_family(&self, family: &str) -> Result<bool, StoreError> {
        if family.is_empty() {
            return Ok(false);
        }
        let fresh = self.store.set_if_absent(&format!("idf:bfr:{family}"), b"1".to_vec(), self.family_ttl).await?;
        let set = format!("idf:bfm:{family}");
        for d in self.store.members(&set).await? {
            self.store.delete(&format!("idf:brt:{d}")).await?;
        }
        self.store.delete(&set).await?;
        Ok(fresh)
    }

    /// Records who holds `family` (for the back-channel logout when its session ends).
    pub async fn set_holder(&self, family: &str, h: &Holder) -> Result<(), StoreError> {
        self.store.set(&holder_key(family), json(h)?, self.family_ttl).await
    }

    pub async fn is_revoked(&self, family: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&format!("idf:bfr:{family}")).await?.is_some())
    }

    /// Records that `family` was issued from the browser session `session`, so that
    /// logging out at the broker revokes it.
    pub async fn bind_to_session(&self, session: &str, family: &str) -> Result<(), StoreError> {
        self.store.add_member(&format!("idf:bsf:{}", digest(session)), family, self.family_ttl).await
    }

    /// Records that `family` lives only as long as the browser session `session` (no
    /// `offline_access`), so that signing out at the gateway revokes it.
    pub async fn bind_to_session_lifetime(&self, session: &str, family: &str) -> Result<(), StoreError> {
        self.store.add_member(&format!("idf:bsl:{}", digest(session)), family, self.family_ttl).await
    }

    /// Revokes the families that live only as long as the browser session (gateway
    /// sign-out); `offline_access` families are left to their own lifetime. Returns the
    /// revoked families (as do the other bulk revocations).
    pub async fn revoke_session_lifetime(&self, session: &str) -> Result<Ended, StoreError> {
        let key = format!("idf:bsl:{}", digest(session));
        let families = self.store.members(&key).await?;
        let mut ended = Ended { count: families.len(), fresh: Vec::new() };
        for f in families {
            if self.revoke_family(&f).await? {
                ended.fresh.push(f);
            }
        }
        self.store.delete(&key).await?;
        Ok(ended)
    }

    /// Records that `family` belongs to the user `sub` (for [`Grants::revoke_subject`]).
    pub async fn bind_to_subject(&self, sub: &str, family: &str) -> Result<(), StoreError> {
        self.store.add_member(&format!("idf:bsub:{}", digest(sub)), family, self.family_ttl).await
    }

    /// Revokes every family of the user `sub`, offline ones included (the leaver case).
    pub async fn revoke_subject(&self, sub: &str) -> Result<Ended, StoreError> {
        let key = format!("idf:bsub:{}", digest(sub));
        let families = self.store.members(&key).await?;
        let mut ended = Ended { count: families.len(), fresh: Vec::new() };
        for f in families {
            if self.revoke_family(&f).await? {
                ended.fresh.push(f);
            }
        }
        self.store.delete(&key).await?;
        Ok(ended)
    }

    /// Revokes every family issued from a browser session (broker logout).
    pub async fn revoke_session(&self, session: &str) -> Result<Ended, StoreError> {
        let key = format!("idf:bsf:{}", digest(session));
        let families = self.store.members(&key).await?;
        let mut ended = Ended { count: families.len(), fresh: Vec::new() };
        for f in families {
            if self.revoke_family(&f).await? {
                ended.fresh.push(f);
            }
        }
        self.store.delete(&key).await?;
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Population;
    use crate::session::memory::MemoryStore;

    fn refresh_grant(family: &str) -> RefreshGrant {
        RefreshGrant {
            family: family.into(),
            client_id: "portal".into(),
            scope: vec!["openid".into()],
            identity: Identity::new("wf", crate::identity::ProviderKind::Dev, Population::Workforce, "u1".into()),
            auth_time: Some(1),
            session: None,
            family_exp: now() + 3600,
        }
    }

    #[tokio::test]
    async fn only_a_live_familys_end_is_announced_and_its_holder_is_taken_once() {
        let store = MemoryStore::new(1000);
        let g = Grants { store: &store, family_ttl: Duration::from_secs(3600) };
        let h = Holder { client_id: "rp".into(), sub: "wf:alice".into() };
        for f in ["f1", "f2"] {
            g.set_holder(f, &h).await.unwrap();
            g.bind_to_subject("wf:alice", f).await.unwrap();
        }
        // f2 ended earlier (the client's own /revoke): not announced when the user is revoked.
        assert!(g.revoke_family("f2").await.unwrap());
        assert!(!g.revoke_family("f2").await.unwrap(), "already revoked");
        let ended = g.revoke_subject("wf:alice").await.unwrap();
        assert_eq!((ended.count, ended.fresh), (2, vec!["f1".to_string()]));
        assert_eq!(take_holder(&store, "f1").await.unwrap(), Some(h));
        assert_eq!(take_holder(&store, "f1").await.unwrap(), None, "taken once");
    }

    #[tokio::test]
    async fn rotation_and_reuse_revoke_the_family() {
        let store = MemoryStore::new(1000);
        let g = Grants { store: &store, family_ttl: Duration::from_secs(3600) };
        g.put_refresh("rt-1", &refresh_grant("fam")).await.unwrap();
        g.put_refresh("rt-2", &refresh_grant("fam")).await.unwrap();
        assert!(matches!(g.take_refresh("rt-1").await.unwrap(), Redeemed::Live(_)));
        assert!(g.peek_refresh("rt-2").await.unwrap().is_some(), "siblings live until reuse");
        assert!(matches!(g.take_refresh("rt-1").await.unwrap(), Redeemed::Reused));
        assert!(g.is_revoked("fam").await.unwrap());
        assert!(g.peek_refresh("rt-2").await.unwrap().is_none(), "the whole family is gone");
        assert!(matches!(g.take_refresh("rt-2").await.unwrap(), Redeemed::Unknown));
        assert!(matches!(g.take_refresh("never-issued").await.unwrap(), Redeemed::Unknown));
        let keys_hold_no_token = store.get("idf:brt:rt-2").await.unwrap().is_none();
        assert!(keys_hold_no_token);
    }

    #[tokio::test]
    async fn a_code_is_single_use_and_a_replay_revokes_its_family() {
        let store = MemoryStore::new(1000);
        let g = Grants { store: &store, family_ttl: Duration::from_secs(3600) };
        let code = code_grant("fam2");
        g.put_code("c-1", &code).await.unwrap();
        assert!(matches!(g.take_code("c-1").await.unwrap(), CodeRedeemed::Live(_)));
        assert!(!g.is_revoked("fam2").await.unwrap());
        assert!(matches!(g.take_code("c-1").await.unwrap(), CodeRedeemed::Replayed));
        assert!(g.is_revoked("fam2").await.unwrap());
        assert!(matches!(g.take_code("c-2").await.unwrap(), CodeRedeemed::Unknown));
    }

    fn code_grant(family: &str) -> CodeGrant {
        CodeGrant {
            client_id: "portal".into(),
            redirect_uri: "http://rp.test/cb".into(),
            code_challenge: None,
            nonce: None,
            scope: vec!["openid".into()],
            identity: Identity::new("wf", crate::identity::ProviderKind::Dev, Population::Workforce, "u1".into()),
            auth_time: None,
            session: None,
            family: family.into(),
            created_at: now(),
        }
    }

    /// Runs `n` redemptions at once on a multi-threaded runtime; returns how many won.
    async fn race<F, Fut>(n: usize, f: F) -> usize
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(f())).collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        won
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redemptions_of_one_code_win_once_and_revoke_the_family() {
        let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(1000)));
        for round in 0..20 {
            let family = format!("fam-race-{round}");
            let code = format!("code-{round}");
            let g = Grants { store, family_ttl: Duration::from_secs(3600) };
            g.put_code(&code, &code_grant(&family)).await.unwrap();
            let won = race(10, || {
                let code = code.clone();
                async move {
                    let g = Grants { store, family_ttl: Duration::from_secs(3600) };
                    matches!(g.take_code(&code).await.unwrap(), CodeRedeemed::Live(_))
                }
            })
            .await;
            assert_eq!(won, 1, "round {round}");
            assert!(g.is_revoked(&family).await.unwrap(), "every loser is a replay: round {round}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_uses_of_one_refresh_token_win_once_and_revoke_the_family() {
        let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(1000)));
        for round in 0..20 {
            let family = format!("rfam-race-{round}");
            let token = format!("rt-{round}");
            let g = Grants { store, family_ttl: Duration::from_secs(3600) };
            g.put_refresh(&token, &refresh_grant(&family)).await.unwrap();
            let won = race(10, || {
                let token = token.clone();
                async move {
                    let g = Grants { store, family_ttl: Duration::from_secs(3600) };
                    matches!(g.take_refresh(&token).await.unwrap(), Redeemed::Live(_))
                }
            })
            .await;
            // At most one: the claimant may itself find the family already revoked by
            // a loser's replay (its tokens would be dead anyway), so zero is fine too.
            assert!(won <= 1, "round {round}: {won} winners");
            assert!(g.is_revoked(&family).await.unwrap(), "round {round}");
        }
    }

    #[tokio::test]
    async fn a_parked_request_resumes_only_with_its_browser_nonce() {
        let pending = crate::session::pending::MemoryPending::new();
        let r = AuthzRequest {
            client_id: "portal".into(),
            redirect_uri: "http://rp.test/cb".into(),
            state: None,
            nonce: None,
            scope: vec!["openid".into()],
            code_challenge: None,
            max_age: None,
            mfa: false,
            fresh: false,
            created_at: now(),
            browser: String::new(),
            offer: None,
        };
        let caps = Caps { per_client: 4, total: 10 };
        let digest = crate::web::binding::digest("nonce-of-the-browser");
        park(&pending, caps, "10.0.0.1", "txn-1", &r, &digest).await.unwrap();
        assert!(pending
            .peek("b:txn-1")
            .await
            .unwrap()
            .is_some_and(|b| !String::from_utf8_lossy(&b).contains("nonce-of")));
        assert!(matches!(unpark(&pending, "txn-1", "").await.unwrap(), Unparked::Foreign));
        assert!(matches!(unpark(&pending, "txn-1", "1").await.unwrap(), Unparked::Foreign));
        assert!(
            matches!(unpark(&pending, "txn-1", "nonce-of-the-browser").await.unwrap(), Unparked::Live(_)),
            "a stranger did not use it up"
        );
        assert!(matches!(unpark(&pending, "txn-1", "nonce-of-the-browser").await.unwrap(), Unparked::Expired), "single use");
        assert!(matches!(unpark(&pending, "", "x").await.unwrap(), Unparked::Expired));
    }
}
