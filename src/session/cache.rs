//! The per-process cache of session lookups: a signed-in browser's requests reuse one
//! [`Verified`] (its identity headers and minted `X-Identity-Token`s included) instead
//! of reading, deserialising and rebuilding the session from the store on every request.
//!
//! Why it is safe:
//! - An entry lives at most [`TTL`] (one second), and never past the moment the session
//!   needs its upstream tokens refreshed or reaches its absolute end, so a change made by
//!   another replica (logout, revocation, a refresh) is seen here within [`TTL`].
//! - A change made on this replica is seen on the next request: ending, revoking or
//!   updating a session through [`super::Sessions`] invalidates its entry here, and
//!   [`invalidate_session`] / [`invalidate_subject`] are there for any other path that
//!   ends sessions (revocation events). A lookup that raced with an invalidation does not
//!   put what it read into the cache (an invalidation counter is compared before and after).
//! - Entries are tagged with the runtime generation they were built for: a provider
//!   index or route index of an older configuration is never served after a reload.
//! - It is bounded ([`MAX_ENTRIES`]) and keyed by the SHA-256 of the session id, so the
//!   cache never holds a cookie value.
//!
//! The idle expiry still slides: a cache miss (at least once per [`TTL`] per busy
//! session) reads the store, which pushes the idle expiry back at most once a minute.

use crate::providers::{now_secs, Verified};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a looked-up session is served from this process without reading the store:
/// the longest a logout or revocation on another replica can take to apply here.
pub const TTL: Duration = Duration::from_secs(1);

/// At most this many sessions are held (per process).
pub const MAX_ENTRIES: u64 = 100_000;

#[derive(Clone)]
struct Entry {
    verified: Arc<Verified>,
    /// `Runtime::generation` the entry was built for.
    generation: u64,
    /// Served until then (≤ [`TTL`] after the lookup).
    until: Instant,
}

fn cache() -> &'static moka::sync::Cache<[u8; 32], Entry> {
    static CACHE: OnceLock<moka::sync::Cache<[u8; 32], Entry>> = OnceLock::new();
    CACHE.get_or_init(|| moka::sync::Cache::builder().max_capacity(MAX_ENTRIES).time_to_live(TTL).build())
}

/// Bumped by every invalidation: a lookup that saw it change does not fill the cache.
static INVALIDATIONS: AtomicU64 = AtomicU64::new(0);

/// The key of a session id (what [`Verified::token_hash`] holds for a session).
pub fn key(id: &str) -> [u8; 32] {
    crate::providers::token_hash(id)
}

/// The cached session for `key`, built for runtime `generation`, when still fresh.
pub fn get(key: &[u8; 32], generation: u64) -> Option<Arc<Verified>> {
    let e = cache().get(key)?;
    (e.generation == generation && Instant::now() < e.until).then_some(e.verified)
}

/// The invalidation counter, read before a store lookup and handed to [`put`].
pub fn ticket() -> u64 {
    INVALIDATIONS.load(Ordering::Acquire)
}

/// Caches a session looked up from the store since `ticket`: kept [`TTL`] at most, and
/// never past `deadline` (seconds since the epoch: the upstream refresh point or the
/// absolute end). Not cached when an invalidation happened since `ticket`.
pub fn put(key: [u8; 32], generation: u64, verified: Arc<Verified>, deadline: i64, ticket: u64) {
    let left = deadline - now_secs();
    if left <= 0 {
        return;
    }
    let until = Instant::now() + TTL.min(Duration::from_secs(left as u64));
    if INVALIDATIONS.load(Ordering::Acquire) != ticket {
        return;
    }
    cache().insert(key, Entry { verified, generation, until });
    // An invalidation between the check and the insert must still win.
    if INVALIDATIONS.load(Ordering::Acquire) != ticket {
        cache().invalidate(&key);
    }
}

/// Forgets the session with this id (the cookie value): its next request reads the store.
pub fn invalidate_session(id: &str) {
    INVALIDATIONS.fetch_add(1, Ordering::AcqRel);
    cache().invalidate(&key(id));
}

/// Forgets every session of `sub` (the global `{provider}:{subject}`, as
/// `Identity::sub` and `Sessions::revoke_sub` name it). Walks the cache: revocations
/// are rare, the cache holds at most one [`TTL`] worth of active sessions.
pub fn invalidate_subject(sub: &str) {
    INVALIDATIONS.fetch_add(1, Ordering::AcqRel);
    let c = cache();
    for (k, e) in c.iter() {
        if e.verified.identity.sub == sub {
            c.invalidate(&*k);
        }
    }
}

/// Forgets every cached session.
pub fn invalidate_all() {
    INVALIDATIONS.fetch_add(1, Ordering::AcqRel);
    cache().invalidate_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Population, ProviderKind};

    fn verified(sub: &str, id: &str) -> Arc<Verified> {
        let identity = Identity::new("wf", ProviderKind::Entra, Population::Workforce, sub.into());
        Arc::new(Verified::new(identity, 0, String::new(), now_secs() + 600, key(id)))
    }

    /// Caches, retrying when another test's invalidation raced with it (the counter is
    /// process-wide and unit tests run in parallel).
    fn put_now(id: &str, sub: &str, gen: u64, deadline: i64) {
        for _ in 0..1000 {
            put(key(id), gen, verified(sub, id), deadline, ticket());
            if get(&key(id), gen).is_some() {
                return;
            }
        }
        panic!("never cached");
    }

    // One test: these steps must not interleave with each other.
    #[test]
    fn session_cache_serves_invalidates_and_expires() {
        let (a, b, c) = ("session-cache-test-a", "session-cache-test-b", "session-cache-test-c");
        let gen = 9_000_001;
        let far = now_secs() + 3600;
        put_now(a, "u-a", gen, far);
        put_now(b, "u-b", gen, far);
        put_now(c, "u-b", gen, far);
        assert!(Arc::ptr_eq(&get(&key(a), gen).unwrap(), &get(&key(a), gen).unwrap()), "one Verified across requests");
        assert!(get(&key(a), gen + 1).is_none(), "not for another runtime generation");

        invalidate_session(a);
        assert!(get(&key(a), gen).is_none(), "invalidated by id");
        let sub_b = verified("u-b", b).identity.sub.clone();
        invalidate_subject(&sub_b);
        assert!(get(&key(b), gen).is_none() && get(&key(c), gen).is_none(), "invalidated by subject");

        // A lookup that raced with an invalidation does not fill the cache.
        let t = ticket();
        invalidate_session("unrelated-session-id");
        put(key(a), gen, verified("u-a", a), far, t);
        assert!(get(&key(a), gen).is_none(), "stale lookup not cached");

        // Never past the deadline, never past the TTL.
        put(key(a), gen, verified("u-a", a), now_secs(), ticket());
        assert!(get(&key(a), gen).is_none(), "deadline reached: not cached");
        put_now(a, "u-a", gen, far);
        std::thread::sleep(TTL + Duration::from_millis(100));
        assert!(get(&key(a), gen).is_none(), "gone after the TTL");
    }
}
