//! OpenID Connect Back-Channel Logout 1.0 towards the broker's own clients
//! (https://openid.net/specs/openid-connect-backchannel-1_0.html): when a broker session
//! ends — sign-out at `/.idfabric/logout`, logout at the broker's `end_session`, an
//! upstream back-channel logout or an admin revocation — every client holding tokens of
//! that session and registering a `backchannel_logout_uri` is told so with a logout
//! token, and can end its own session for the user.
//!
//! Who holds a family's tokens (the client and the `sub` its tokens carry) is written at
//! code redemption into the session store (`idf:bfh:{family}`, see `grants`), so the
//! replica that ends the session need not be the one that issued the tokens. The
//! record is *taken* (read and deleted at once) before sending, so a family revoked
//! twice — sign-out, then an admin revocation of the same user — is announced once.
//!
//! Delivery runs in a spawned task, off the request that ended the session: a POST of
//! `logout_token=…` with a 5 s timeout, retried after 1 s and 5 s and 25 s on a network
//! error, a 5xx or a 429; a 2xx is success, any other 4xx means the client refuses the
//! token and retrying would not help (§2.8). Counted in
//! `idfabric_broker_backchannel_logouts_total{client,result}` (`delivered`, `failed`
//! for each failed attempt that is retried, `gave_up`); a failure is logged with the
//! client and the reason, never with the token.
//!
//! Why deliveries are kept in the store: a retry sequence lasts up to about a minute,
//! and a replica stopped (deploy, crash) in that minute would otherwise lose the
//! logouts it had not yet delivered. Each delivery is written before its first attempt
//! (`idf:{bcl}:p:{family}`, listed in the set `idf:{bcl}:pending`, kept an hour) with a
//! claim (`idf:{bcl}:c:{family}`, [`CLAIM`]) that the replica renews while it works on
//! it; it is removed when delivered or given up. Every replica looks at the pending set
//! every [`RESUME_EVERY`] ([`resume`]): a delivery whose claim lapsed (its replica
//! stopped) is claimed and sent afresh, with a new logout token and the same retries.
//! A client may therefore receive a logout twice (the stop came after it answered,
//! before the record was removed); logout tokens are idempotent for it (§2.6: it ends
//! a session that is already gone). A delivery older than [`KEEP`] is dropped
//! (`gave_up`).

use super::grants::Holder;
use crate::config::{BrokerClientSpec, BrokerSpec};
use crate::keys::Signer;
use crate::metrics::metrics;
use crate::runtime::Runtime;
use crate::session::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The `events` member that makes a JWT a logout token (§2.4).
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How long a logout token is valid (§2.4 recommends "at most two minutes").
pub const TOKEN_TTL: i64 = 120;
/// Waits before the retries of a failed delivery.
pub const BACKOFF: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(25)];
/// Timeout of one delivery attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replica's hold on a delivery lasts unless renewed; the replica renews
/// it every [`RENEW_EVERY`] while it works on the delivery, so a stopped replica's
/// deliveries are free again within this.
pub const CLAIM: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often each replica looks for deliveries whose replica stopped.
pub const RESUME_EVERY: Duration = Duration::from_secs(5);
/// How long an undelivered logout is kept.
pub const KEEP: Duration = Duration::from_secs(3600);
const PENDING_SET: &str = "idf:{bcl}:pending";

fn record_key(family: &str) -> String {
    format!("idf:{{bcl}}:p:{family}")
}

fn claim_key(family: &str) -> String {
    format!("idf:{{bcl}}:c:{family}")
}

/// A delivery kept in the store until it is done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Pending {
    holder: Holder,
    /// When it was first written (seconds since the epoch).
    since: i64,
}

/// The claims of the logout token for `holder` of `family` (§2.4): no `nonce`.
pub fn claims(issuer: &str, holder: &Holder, family: &str, now: i64) -> Value {
    json!({
        "iss": issuer,
        "aud": holder.client_id,
        "iat": now,
        "exp": now + TOKEN_TTL,
        "jti": crate::web::random(16),
        "sub": holder.sub,
        "sid": family,
        "events": { EVENT: {} },
    })
}

/// Announces, off the caller's path, the end of the token `families` to the clients
/// holding them. Nothing is sent (and nothing is spawned) without a broker, a signer or a
/// client with a `backchannel_logout_uri`.
pub fn announce(rt: &Runtime, families: Vec<String>) {
    let (Some(b), Some(m), Some(s)) = (&rt.config.broker, &rt.minter, &rt.sessions) else { return };
    if families.is_empty() || !b.clients.iter().any(|c| c.backchannel_logout_uri.is_some()) {
        return;
    }
    let job = Job { broker: b.clone(), signer: m.signer.clone(), store: s.store.clone(), http: rt.registry.http.clone() };
    tokio::spawn(async move { job.run(families).await });
}

struct Job {
    broker: BrokerSpec,
    signer: Arc<Signer>,
    store: Arc<dyn Store>,
    http: reqwest::Client,
}

impl Job {
    async fn run(self, families: Vec<String>) {
        let mut sends = Vec::new();
        for family in families {
            let holder = match super::grants::take_holder(&*self.store, &family).await {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "back-channel logout: session store unavailable; clients not told");
                    continue;
                }
            };
            let Some(client) = super::clients::find(&self.broker, &holder.client_id) else { continue };
            if client.backchannel_logout_uri.is_none() {
                continue;
            }
            // Kept (and claimed by this replica) before the first attempt, so a stop
            // does not lose it; a store failure here still sends it, unkept.
            if let Err(e) = keep(&*self.store, &family, &holder).await {
                tracing::warn!(error = %e, "back-channel logout not kept in the session store; sending it anyway");
            }
            sends.push(self.send(family, holder));
        }
        futures_util::future::join_all(sends).await;
    }

    /// Signs a fresh logout token for `holder`, delivers it with retries and forgets
    /// the kept delivery.
    async fn send(&self, family: String, holder: Holder) {
        let Some(client) = super::clients::find(&self.broker, &holder.client_id).cloned() else {
            return forget(&*self.store, &family).await;
        };
        let Some(uri) = client.backchannel_logout_uri.clone() else { return forget(&*self.store, &family).await };
        let token = self.signer.sign_jwt("logout+jwt", &claims(&self.broker.issuer, &holder, &family, crate::providers::now_secs()));
        deliver(self.http.clone(), client, uri, token, Some((&*self.store, family.as_str()))).await;
        forget(&*self.store, &family).await;
    }
}

/// Writes a delivery into the store, claimed by this replica.
async fn keep(store: &dyn Store, family: &str, holder: &Holder) -> Result<(), crate::session::StoreError> {
    let rec = Pending { holder: holder.clone(), since: crate::providers::now_secs() };
    let bytes = serde_json::to_vec(&rec).map_err(|_| crate::session::StoreError::Corrupt)?;
    store.set_nx(&claim_key(family), CLAIM).await?;
    store.set(&record_key(family), bytes, KEEP).await?;
    store.add_member(PENDING_SET, family, KEEP).await
}

/// Removes a finished delivery (best effort: a leftover is resumed and sent again).
async fn forget(store: &dyn Store, family: &str) {
    let _ = store.delete(&record_key(family)).await;
    let _ = store.remove_member(PENDING_SET, family).await;
    let _ = store.delete(&claim_key(family)).await;
}

/// Every [`RESUME_EVERY`] (first a second after start), takes over the kept deliveries
/// whose replica stopped (their claim lapsed) and sends them. Runs until `shutdown`.
pub async fn resume(state: Arc<arc_swap::ArcSwap<Runtime>>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        wait = RESUME_EVERY;
        let rt = state.load_full();
        let (Some(b), Some(m), Some(s)) = (&rt.config.broker, &rt.minter, &rt.sessions) else { continue };
        if !b.clients.iter().any(|c| c.backchannel_logout_uri.is_some()) {
            continue;
        }
        let job = Job { broker: b.clone(), signer: m.signer.clone(), store: s.store.clone(), http: rt.registry.http.clone() };
        let families = match job.store.members(PENDING_SET).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "pending back-channel logouts not read; trying again");
                continue;
            }
        };
        let job = Arc::new(job);
        for family in families {
            let rec = match job.store.get(&record_key(&family)).await {
                Ok(Some(b)) => serde_json::from_slice::<Pending>(&b).ok(),
                Ok(None) => None,
                Err(_) => continue,
            };
            let Some(rec) = rec else {
                let _ = job.store.remove_member(PENDING_SET, &family).await;
                continue;
            };
            if !matches!(job.store.set_nx(&claim_key(&family), CLAIM).await, Ok(true)) {
                continue; // a live replica works on it
            }
            // Finished between the read and the claim: nothing to resume.
            if !matches!(job.store.get(&record_key(&family)).await, Ok(Some(_))) {
                let _ = job.store.delete(&claim_key(&family)).await;
                continue;
            }
            if crate::providers::now_secs() - rec.since > KEEP.as_secs() as i64 {
                metrics().broker_backchannel_logouts_total.with_label_values(&[rec.holder.client_id.as_str(), "gave_up"]).inc();
                tracing::warn!(client = %rec.holder.client_id, "back-channel logout kept too long; giving up");
                forget(&*job.store, &family).await;
                continue;
            }
            tracing::info!(client = %rec.holder.client_id, "resuming a back-channel logout whose replica stopped");
            let job = job.clone();
            tokio::spawn(async move { job.send(family, rec.holder).await });
        }
    }
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Worth another try (network error, timeout, 5xx, 429).
    Retry(String),
    /// The client refused the token (another 4xx, or a redirect).
    Refused(String),
}

async fn attempt(http: &reqwest::Client, uri: &str, token: &str) -> Attempt {
    let body = format!("logout_token={}", percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC));
    let sent = http
        .post(uri)
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::CACHE_CONTROL, "no-store")
        .timeout(ATTEMPT_TIMEOUT)
        .body(body)
        .send()
        .await;
    match sent {
        Err(e) if e.is_timeout() => Attempt::Retry("timeout".into()),
        Err(e) if e.is_connect() => Attempt::Retry("connection failed".into()),
        Err(_) => Attempt::Retry("request failed".into()),
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => Attempt::Retry(format!("status {}", r.status().as_u16())),
        Ok(r) => Attempt::Refused(format!("status {}", r.status().as_u16())),
    }
}

/// Sends `token` to `client`, retrying on [`BACKOFF`], renewing the claim on the
/// kept delivery (`kept`: the store and the family) before each attempt and while
/// it waits.
async fn deliver(http: reqwest::Client, client: BrokerClientSpec, uri: String, token: String, kept: Option<(&dyn Store, &str)>) {
    let count = |result: &str| {
        metrics().broker_backchannel_logouts_total.with_label_values(&[client.client_id.as_str(), result]).inc();
    };
    let renew = || async {
        if let Some((store, family)) = kept {
            let _ = store.set(&claim_key(family), b"1".to_vec(), CLAIM).await;
        }
    };
    for (i, wait) in std::iter::once(None).chain(BACKOFF.iter().map(Some)).enumerate() {
        if let Some(w) = wait {
            let mut left = *w;
            while !left.is_zero() {
                let step = left.min(RENEW_EVERY);
                tokio::time::sleep(step).await;
                left -= step;
                renew().await;
            }
        }
        renew().await;
        match attempt(&http, &uri, &token).await {
            Attempt::Delivered => {
                count("delivered");
                tracing::info!(client = %client.client_id, attempt = i + 1, "back-channel logout delivered");
                return;
            }
            Attempt::Retry(why) if i < BACKOFF.len() => {
                count("failed");
                tracing::warn!(client = %client.client_id, attempt = i + 1, reason = %why, "back-channel logout failed; will retry");
            }
            Attempt::Retry(why) | Attempt::Refused(why) => {
                count("gave_up");
                tracing::warn!(client = %client.client_id, attempt = i + 1, reason = %why, "back-channel logout not delivered; giving up");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logout_token_claims_follow_the_spec() {
        let h = Holder { client_id: "rp".into(), sub: "corp-okta:alice".into() };
        let c = claims("https://id.example/broker", &h, "fam1", 1000);
        assert_eq!(c["aud"], "rp");
        assert_eq!(c["sub"], "corp-okta:alice");
        assert_eq!(c["sid"], "fam1");
        assert_eq!(c["exp"], 1000 + TOKEN_TTL);
        assert_eq!(c["events"][EVENT], json!({}));
        assert!(c.get("nonce").is_none());
        assert_ne!(c["jti"], claims("https://id.example/broker", &h, "fam1", 1000)["jti"]);
    }
}
