//! A per-client rate limit on starting sign-ins (`/.idfabric/login`, the broker's
//! `/authorize`): each start parks server-side state, so one client must not be able to
//! start them as fast as it can send requests.
//!
//! A token bucket per client key (`web::client_key`; behind `server.trusted_proxies` the
//! forwarded client's address, not the proxy's): `rate_per_minute` tokens, refilled
//! continuously, one per start; an empty bucket is a 429 with `Retry-After`. The table is
//! a bounded cache (least recently used clients leave first when it is full, and an idle
//! client's bucket is dropped after it would have refilled anyway), so a flood from many
//! addresses costs bounded memory; a client that was dropped starts again with a full
//! bucket, which is what it would have had.

use moka::sync::Cache;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Clients tracked at once.
const MAX_CLIENTS: u64 = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

static BUCKETS: LazyLock<Cache<String, Arc<Mutex<Bucket>>>> = LazyLock::new(|| {
    Cache::builder().max_capacity(MAX_CLIENTS).time_to_idle(Duration::from_secs(120)).build()
});

/// Takes one token from `client`'s bucket; `Err(seconds)` to wait when it is empty.
pub fn admit(client: &str, per_minute: u32) -> Result<(), u64> {
    let capacity = f64::from(per_minute.max(1));
    let per_sec = capacity / 60.0;
    let bucket = BUCKETS.get_with_by_ref(client, || Arc::new(Mutex::new(Bucket { tokens: capacity, at: Instant::now() })));
    let Ok(mut b) = bucket.lock() else { return Ok(()) };
    let now = Instant::now();
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(capacity);
    b.at = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        return Ok(());
    }
    Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let client = "test-client-burst";
        for i in 0..5 {
            assert_eq!(admit(client, 5), Ok(()), "start {i}");
        }
        let wait = admit(client, 5).unwrap_err();
        assert!((1..=12).contains(&wait), "{wait}");
        assert_eq!(admit("test-client-other", 5), Ok(()), "per client");
    }
}
