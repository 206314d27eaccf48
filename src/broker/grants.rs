//! Broker state over the shared `session::Store` (memory or Redis), so every replica
//! honours every code and refresh token.
//!
//! - Authorize transactions (`idf:bt:{id}`): the authorize request parked while the
//!   user signs in; single use (`take`), 10 minutes.
//! - Codes (`idf:bc:{sha256}`): single use (`take`), 60 seconds, bound to the client,
//!   redirect URI and PKCE challenge. A redeemed code leaves a marker
//!   (`idf:bcu:{sha256}` → family) so a replay revokes what the code produced.
//! - Refresh tokens: opaque 256-bit values stored only as SHA-256 (`idf:brt:{sha256}`),
//!   each in a *family* (one sign-in at one client). Every use rotates: the old token is
//!   taken and a used-marker (`idf:bru:{sha256}` → family) remains, so presenting a
//!   rotated token again revokes the whole family (`idf:bfr:{family}`), which also
//!   turns off the family's access tokens at `/userinfo` and `/introspect`.
//!
//! Nothing here stores a code or token in the clear; keys are digests.

use super::digest;
use crate::identity::Identity;
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

impl Grants<'_> {
    pub async fn park(&self, id: &str, r: &AuthzRequest) -> Result<(), StoreError> {
        self.store.set(&format!("idf:bt:{id}"), json(r)?, TXN_TTL).await
    }

    pub async fn unpark(&self, id: &str) -> Result<Option<AuthzRequest>, StoreError> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        let Some(b) = self.store.take(&format!("idf:bt:{id}")).await? else { return Ok(None) };
        let r: AuthzRequest = parse(&b)?;
        Ok((now() - r.created_at <= TXN_TTL.as_secs() as i64).then_some(r))
    }

    pub async fn put_code(&self, code: &str, g: &CodeGrant) -> Result<(), StoreError> {
        self.store.set(&format!("idf:bc:{}", digest(code)), json(g)?, CODE_TTL).await
    }

    /// Takes a code (once). A code seen before revokes the family it produced.
    pub async fn take_code(&self, code: &str) -> Result<CodeRedeemed, StoreError> {
        let d = digest(code);
        if let Some(b) = self.store.take(&format!("idf:bc:{d}")).await? {
            let g: CodeGrant = parse(&b)?;
            if now() - g.created_at > CODE_TTL.as_secs() as i64 {
                return Ok(CodeRedeemed::Unknown);
            }
            return Ok(CodeRedeemed::Live(Box::new(g)));
        }
        match self.store.get(&format!("idf:bcu:{d}")).await? {
            Some(family) => {
                self.revoke_family(&String::from_utf8_lossy(&family)).await?;
                Ok(CodeRedeemed::Replayed)
            }
            None => Ok(CodeRedeemed::Unknown),
        }
    }

    /// Remembers that `code` was redeemed into `family`.
    pub async fn code_used(&self, code: &str, family: &str) -> Result<(), StoreError> {
        self.store.set(&format!("idf:bcu:{}", digest(code)), family.as_bytes().to_vec(), USED_CODE_TTL).await
    }

    /// Stores a new refresh token of `g.family`.
    pub async fn put_refresh(&self, token: &str, g: &RefreshGrant) -> Result<(), StoreError> {
        let d = digest(token);
        let left = Duration::from_secs((g.family_exp - now()).max(1) as u64);
        self.store.set(&format!("idf:brt:{d}"), json(g)?, left).await?;
        self.store.add_member(&format!("idf:bfm:{}", g.family), &d, left).await
    }

    /// Takes a refresh token (rotation). A rotated token presented again revokes its family.
    pub async fn take_refresh(&self, token: &str) -> Result<Redeemed, StoreError> {
        let d = digest(token);
        if let Some(b) = self.store.take(&format!("idf:brt:{d}")).await? {
            let g: RefreshGrant = parse(&b)?;
            let _ = self.store.remove_member(&format!("idf:bfm:{}", g.family), &d).await?;
            let left = Duration::from_secs((g.family_exp - now()).max(1) as u64);
            self.store.set(&format!("idf:bru:{d}"), g.family.as_bytes().to_vec(), left).await?;
            if g.family_exp < now() || self.is_revoked(&g.family).await? {
                return Ok(Redeemed::Unknown);
            }
            return Ok(Redeemed::Live(Box::new(g)));
        }
        match self.store.get(&format!("idf:bru:{d}")).await? {
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
    /// refused by `/userinfo` and `/introspect` through the marker.
    pub async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        if family.is_empty() {
            return Ok(());
        }
        self.store.set(&format!("idf:bfr:{family}"), b"1".to_vec(), self.family_ttl).await?;
        let set = format!("idf:bfm:{family}");
        for d in self.store.members(&set).await? {
            self.store.delete(&format!("idf:brt:{d}")).await?;
        }
        self.store.delete(&set).await
    }

    pub async fn is_revoked(&self, family: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&format!("idf:bfr:{family}")).await?.is_some())
    }

    /// Records that `family` was issued from the browser session `session`, so that
    /// logging out at the broker revokes it.
    pub async fn bind_to_session(&self, session: &str, family: &str) -> Result<(), StoreError> {
        self.store.add_member(&format!("idf:bsf:{}", digest(session)), family, self.family_ttl).await
    }

    /// Records that `family` belongs to the user `sub` (for [`Grants::revoke_subject`]).
    pub async fn bind_to_subject(&self, sub: &str, family: &str) -> Result<(), StoreError> {
        self.store.add_member(&format!("idf:bsub:{}", digest(sub)), family, self.family_ttl).await
    }

    /// Revokes every family of the user `sub`, offline ones included (the leaver case).
    pub async fn revoke_subject(&self, sub: &str) -> Result<usize, StoreError> {
        let key = format!("idf:bsub:{}", digest(sub));
        let families = self.store.members(&key).await?;
        for f in &families {
            self.revoke_family(f).await?;
        }
        self.store.delete(&key).await?;
        Ok(families.len())
    }

    /// Revokes every family issued from a browser session (broker logout).
    pub async fn revoke_session(&self, session: &str) -> Result<usize, StoreError> {
        let key = format!("idf:bsf:{}", digest(session));
        let families = self.store.members(&key).await?;
        for f in &families {
            self.revoke_family(f).await?;
        }
        self.store.delete(&key).await?;
        Ok(families.len())
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
            identity: Identity::new("wf", "dev", Population::Workforce, "u1".into()),
            auth_time: Some(1),
            session: None,
            family_exp: now() + 3600,
        }
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
        let code = CodeGrant {
            client_id: "portal".into(),
            redirect_uri: "http://rp.test/cb".into(),
            code_challenge: None,
            nonce: None,
            scope: vec!["openid".into()],
            identity: Identity::new("wf", "dev", Population::Workforce, "u1".into()),
            auth_time: None,
            session: None,
            family: "fam2".into(),
            created_at: now(),
        };
        g.put_code("c-1", &code).await.unwrap();
        assert!(matches!(g.take_code("c-1").await.unwrap(), CodeRedeemed::Live(_)));
        g.code_used("c-1", "fam2").await.unwrap();
        assert!(!g.is_revoked("fam2").await.unwrap());
        assert!(matches!(g.take_code("c-1").await.unwrap(), CodeRedeemed::Replayed));
        assert!(g.is_revoked("fam2").await.unwrap());
        assert!(matches!(g.take_code("c-2").await.unwrap(), CodeRedeemed::Unknown));
    }
}
