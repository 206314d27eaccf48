//! One-time codes that hand a signed-in session from `session.auth_host` to a route
//! host, so one sign-in (and one redirect URI at each provider) serves every host.
//!
//! A code names the session, the one host it may be redeemed on and the digest of the
//! browser-binding nonce that host set before sending the browser away. It lives in the
//! shared store (every replica redeems it) for at most [`CODE_TTL`], and redeeming
//! takes it in one atomic step, so exactly one request ever redeems it. A redeemed code
//! leaves a marker behind for a while so that a replay is told apart from a code that
//! never existed (both are refused; the reason differs in logs and metrics).

use super::{new_id, now, plausible_id, Sessions, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a code can be redeemed.
pub const CODE_TTL: Duration = Duration::from_secs(60);

/// How long a redeemed code is remembered as redeemed.
const USED_TTL: Duration = Duration::from_secs(600);

/// What a code hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The host (lowercase, no port) that may redeem the code.
    pub host: String,
    /// The session id the host's own cookie will carry.
    pub session: String,
    /// SHA-256 (hex) of the nonce in the host's handoff binding cookie.
    pub browser: String,
    /// The path (and query) on the host to go on to.
    pub rd: String,
    pub created_at: i64,
}

/// The outcome of redeeming a code.
#[derive(Debug, PartialEq, Eq)]
pub enum Redeemed {
    Valid(Handoff),
    /// The code was redeemed before.
    Replayed,
    /// No such code: expired, never issued or not one of ours.
    Unknown,
}

fn code_key(code: &str) -> String {
    format!("idf:h:{code}")
}

fn used_key(code: &str) -> String {
    format!("idf:hu:{code}")
}

impl Sessions {
    /// Stores `h` under a fresh code (256 random bits) for [`CODE_TTL`].
    pub async fn issue_handoff(&self, h: &Handoff) -> Result<String, StoreError> {
        let code = new_id();
        let bytes = serde_json::to_vec(h).map_err(|_| StoreError::Corrupt)?;
        self.store.set(&code_key(&code), bytes, CODE_TTL).await?;
        Ok(code)
    }

    /// Takes the code's handoff, at most once across every replica.
    pub async fn redeem_handoff(&self, code: &str) -> Result<Redeemed, StoreError> {
        if !plausible_id(code) {
            return Ok(Redeemed::Unknown);
        }
        let Some(bytes) = self.store.take(&code_key(code)).await? else {
            let used = self.store.get(&used_key(code)).await?.is_some();
            return Ok(if used { Redeemed::Replayed } else { Redeemed::Unknown });
        };
        // Best effort: the code is already gone, the marker only names the replay.
        let _ = self.store.set(&used_key(code), b"1".to_vec(), USED_TTL).await;
        let h: Handoff = serde_json::from_slice(&bytes).map_err(|_| StoreError::Corrupt)?;
        if now() - h.created_at > CODE_TTL.as_secs() as i64 {
            return Ok(Redeemed::Unknown);
        }
        Ok(Redeemed::Valid(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{memory::MemoryStore, pending::MemoryPending, SessionKey};
    use std::sync::Arc;

    fn sessions() -> Sessions {
        Sessions {
            store: Arc::new(MemoryStore::new(100)),
            pending: Arc::new(MemoryPending::new()),
            caps: crate::session::pending::Caps { per_client: 4, total: 10 },
            key: SessionKey::random(),
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(600),
        }
    }

    #[tokio::test]
    async fn a_code_is_redeemed_once_then_named_a_replay() {
        let s = sessions();
        let h = Handoff { host: "a.test".into(), session: new_id(), browser: "ab".repeat(32), rd: "/x".into(), created_at: now() };
        let code = s.issue_handoff(&h).await.unwrap();
        assert!(plausible_id(&code));
        assert_eq!(s.redeem_handoff(&code).await.unwrap(), Redeemed::Valid(h.clone()));
        assert_eq!(s.redeem_handoff(&code).await.unwrap(), Redeemed::Replayed);
        assert_eq!(s.redeem_handoff(&new_id()).await.unwrap(), Redeemed::Unknown);
        assert_eq!(s.redeem_handoff("short").await.unwrap(), Redeemed::Unknown);
        let old = Handoff { created_at: now() - 61, ..h };
        let code = s.issue_handoff(&old).await.unwrap();
        assert_eq!(s.redeem_handoff(&code).await.unwrap(), Redeemed::Unknown, "older than the code lifetime");
    }
}
