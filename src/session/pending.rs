//! The space that holds sign-ins in progress: login transactions (keyed by `state`) and
//! broker authorize requests parked while the user signs in.
//!
//! Anyone can create these without signing in, so they are kept apart from sessions and
//! bounded on their own: a flood of sign-in starts fills (and evicts from) this space
//! only, never the one that holds signed-in users. Two caps apply at every insert: at
//! most `per_client` entries per client address and at most `total` overall; past
//! either, the oldest entries are dropped (their sign-ins are abandoned). Each entry
//! carries a tag (the provider id of a login transaction, empty for a parked broker
//! request) so that what is dropped or expires can be counted in the login funnel.
//!
//! - memory: one map plus two insertion-ordered indexes (overall and per client), under
//!   one lock; expiry is checked on read and swept oldest-first.
//! - Redis: one hash per entry (`idf:{txn}:v:{key}`, with a TTL), a sorted set of every
//!   entry scored by creation time (`idf:{txn}:pending`, members `key|tag|client`) and
//!   one per client (`idf:{txn}:c:{client}`); inserts with their evictions, takes and sweep pages are
//!   Lua scripts, so replicas agree on what was dropped and count it once. The sweep reads
//!   the sorted set in pages (`ZRANGEBYSCORE … LIMIT`), never whole. Every key carries the
//!   `{txn}` hash tag so the scripts touch one slot.

use super::redis_store::{count_found, Op};
use super::StoreError;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The caps of the space (`session.login_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_client: u32,
    pub total: u32,
}

/// What an insert did besides inserting.
#[derive(Debug, Default)]
pub struct Parked {
    /// Tags of the entries dropped to stay within the caps.
    pub evicted: Vec<String>,
    /// Entries held after the insert (every replica's, on Redis).
    pub held: u64,
}

/// Entries removed by a sweep.
#[derive(Debug, Default)]
pub struct Swept {
    /// Tags of entries older than their lifetime, each reported by one replica only.
    pub expired: Vec<String>,
    pub held: u64,
}

#[async_trait]
pub trait Pending: Send + Sync {
    /// Holds `value` as `key` for `client` during `ttl`, dropping the oldest entries
    /// beyond `caps`.
    async fn park(&self, key: &str, client: &str, tag: &str, value: Vec<u8>, ttl: Duration, caps: Caps)
        -> Result<Parked, StoreError>;
    /// The value of `key`, left in place.
    async fn peek(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads and removes `key` in one step (single use).
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes up to `max` entries created before `cutoff` (seconds since the epoch).
    async fn sweep(&self, cutoff: i64, max: usize) -> Result<Swept, StoreError>;
}

fn now() -> i64 {
    crate::providers::now_secs()
}

// --- memory ------------------------------------------------------------------------

struct Entry {
    value: Vec<u8>,
    client: String,
    tag: String,
    seq: u64,
    created: i64,
    expires: Instant,
}

#[derive(Default)]
struct Space {
    entries: HashMap<String, Entry>,
    /// Insertion order overall and per client (sequence number → key).
    order: BTreeMap<u64, String>,
    clients: HashMap<String, BTreeMap<u64, String>>,
    seq: u64,
}

impl Space {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.order.remove(&e.seq);
        if let Some(c) = self.clients.get_mut(&e.client) {
            c.remove(&e.seq);
            if c.is_empty() {
                self.clients.remove(&e.client);
            }
        }
        Some(e)
    }

    fn oldest_of(&self, client: &str) -> Option<String> {
        self.clients.get(client).and_then(|c| c.values().next().cloned())
    }

    fn oldest(&self) -> Option<String> {
        self.order.values().next().cloned()
    }
}

/// The memory space of one process.
#[derive(Default)]
pub struct MemoryPending {
    space: Mutex<Space>,
}

impl MemoryPending {
    pub fn new() -> MemoryPending {
        MemoryPending::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Space>, StoreError> {
        self.space.lock().map_err(|_| StoreError::Corrupt)
    }

    pub fn len(&self) -> usize {
        self.space.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Pending for MemoryPending {
    async fn park(&self, key: &str, client: &str, tag: &str, value: Vec<u8>, ttl: Duration, caps: Caps)
        -> Result<Parked, StoreError> {
        let mut s = self.lock()?;
        s.remove(key);
        s.seq += 1;
        let seq = s.seq;
        s.entries.insert(
            key.to_string(),
            Entry { value, client: client.to_string(), tag: tag.to_string(), seq, created: now(), expires: Instant::now() + ttl },
        );
        s.order.insert(seq, key.to_string());
        s.clients.entry(client.to_string()).or_default().insert(seq, key.to_string());
        let mut evicted = Vec::new();
        while s.clients.get(client).map_or(0, BTreeMap::len) > caps.per_client.max(1) as usize {
            let Some(k) = s.oldest_of(client) else { break };
            evicted.extend(s.remove(&k).map(|e| e.tag));
        }
        while s.entries.len() > caps.total.max(1) as usize {
            let Some(k) = s.oldest() else { break };
            evicted.extend(s.remove(&k).map(|e| e.tag));
        }
        Ok(Parked { evicted, held: s.entries.len() as u64 })
    }

    async fn peek(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.lock()?;
        Ok(s.entries.get(key).filter(|e| e.expires > Instant::now()).map(|e| e.value.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut s = self.lock()?;
        Ok(s.remove(key).filter(|e| e.expires > Instant::now()).map(|e| e.value))
    }

    async fn sweep(&self, cutoff: i64, max: usize) -> Result<Swept, StoreError> {
        let mut s = self.lock()?;
        let mut expired = Vec::new();
        while expired.len() < max {
            let Some((_, k)) = s.order.first_key_value() else { break };
            let k = k.clone();
            let stale = s.entries.get(&k).is_some_and(|e| e.created < cutoff || e.expires <= Instant::now());
            if !stale {
                break;
            }
            expired.extend(s.remove(&k).map(|e| e.tag));
        }
        Ok(Swept { expired, held: s.entries.len() as u64 })
    }
}

// --- Redis -------------------------------------------------------------------------

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

const PENDING: &str = "idf:{txn}:pending";

fn value_key(key: &str) -> String {
    format!("idf:{{txn}}:v:{key}")
}

fn client_key(client: &str) -> String {
    format!("idf:{{txn}}:c:{client}")
}

/// Inserts one entry and drops the oldest beyond the caps. KEYS: value hash, pending
/// set, client set. ARGV: value, ttl seconds, score (creation time in milliseconds),
/// member (`key|tag|client`), per-client cap, total cap. Returns the count held, then
/// the dropped members; the new entry itself is never dropped (scores can tie). A
/// member names its entry (`v:` + key) and its client set (`c:` + client), so both are
/// found even after the entry's own TTL ran out. Keys and tags (config ids) hold no `|`.
const PARK: &str = r#"
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'm', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[2])
local out = {0}
local function drop(m)
  local key, client = string.match(m, '^([^|]*)|[^|]*|(.*)$')
  redis.call('DEL', 'idf:{txn}:v:' .. key)
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZREM', 'idf:{txn}:c:' .. client, m)
  table.insert(out, m)
end
local function trim(set, cap)
  local over = redis.call('ZCARD', set) - cap
  if over <= 0 then return end
  for _, m in ipairs(redis.call('ZRANGE', set, 0, over)) do
    if over > 0 and m ~= ARGV[4] then
      drop(m)
      over = over - 1
    end
  end
end
trim(KEYS[3], tonumber(ARGV[5]))
trim(KEYS[2], tonumber(ARGV[6]))
out[1] = redis.call('ZCARD', KEYS[2])
return out
"#;

/// Reads and removes one entry. KEYS: value hash, pending set. Returns the value or nil.
const TAKE: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'v', 'm')
if not f[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], f[2])
local client = string.match(f[2], '^[^|]*|[^|]*|(.*)$')
if client then redis.call('ZREM', 'idf:{txn}:c:' .. client, f[2]) end
return f[1]
"#;

/// One sweep page. KEYS: pending set. ARGV: cutoff score (milliseconds), page size. Returns the count
/// held, then the removed members (each removed by exactly one caller).
const SWEEP: &str = r#"
local out = {0}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  local key, client = string.match(m, '^([^|]*)|[^|]*|(.*)$')
  if key then
    redis.call('DEL', 'idf:{txn}:v:' .. key)
    redis.call('ZREM', 'idf:{txn}:c:' .. client, m)
  end
  redis.call('ZREM', KEYS[1], m)
  table.insert(out, m)
end
out[1] = redis.call('ZCARD', KEYS[1])
return out
"#;

fn script(cell: &'static std::sync::OnceLock<redis::Script>, src: &str) -> &'static redis::Script {
    cell.get_or_init(|| redis::Script::new(src))
}

/// The tag of a member `key|tag|client`.
fn tag_of(member: &str) -> String {
    member.split('|').nth(1).unwrap_or_default().to_string()
}

/// The pending space on the shared Redis (the session store's connection).
pub struct RedisPending {
    pub store: std::sync::Arc<super::redis_store::RedisStore>,
}

/// A script's reply `[held, member…]`.
fn held_and_members(v: Vec<redis::Value>) -> Result<(u64, Vec<String>), StoreError> {
    let mut it = v.into_iter();
    let held = match it.next() {
        Some(redis::Value::Int(n)) => n.max(0) as u64,
        _ => return Err(StoreError::Corrupt),
    };
    let members = it
        .map(|m| match m {
            redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            _ => Err(StoreError::Corrupt),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((held, members))
}

#[async_trait]
impl Pending for RedisPending {
    async fn park(&self, key: &str, client: &str, tag: &str, value: Vec<u8>, ttl: Duration, caps: Caps)
        -> Result<Parked, StoreError> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let mut call = script(&S, PARK).prepare_invoke();
        call.key(value_key(key)).key(PENDING).key(client_key(client));
        call.arg(value).arg(ttl.as_secs().max(1)).arg(now_ms()).arg(format!("{key}|{tag}|{client}"));
        call.arg(caps.per_client.max(1)).arg(caps.total.max(1));
        let reply: Vec<redis::Value> = self.store.run_ok(Op::PendingPark, |mut c| async move { call.invoke_async(&mut c).await }).await?;
        let (held, members) = held_and_members(reply)?;
        Ok(Parked { evicted: members.iter().map(|m| tag_of(m)).collect(), held })
    }

    async fn peek(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = value_key(key);
        let r = self.store.run(Op::PendingPeek, |mut c| async move { redis::AsyncCommands::hget(&mut c, k, "v").await }).await;
        count_found(Op::PendingPeek, &r);
        r
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let mut call = script(&S, TAKE).prepare_invoke();
        call.key(value_key(key)).key(PENDING);
        let r = self.store.run(Op::PendingTake, |mut c| async move { call.invoke_async(&mut c).await }).await;
        count_found(Op::PendingTake, &r);
        r
    }

    async fn sweep(&self, cutoff: i64, max: usize) -> Result<Swept, StoreError> {
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let mut call = script(&S, SWEEP).prepare_invoke();
        call.key(PENDING).arg(cutoff.saturating_mul(1000)).arg(max.max(1));
        let reply: Vec<redis::Value> = self.store.run_ok(Op::PendingSweep, |mut c| async move { call.invoke_async(&mut c).await }).await?;
        let (held, members) = held_and_members(reply)?;
        Ok(Swept { expired: members.iter().map(|m| tag_of(m)).collect(), held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn caps_drop_the_oldest_per_client_then_overall() {
        let p = MemoryPending::new();
        let caps = Caps { per_client: 3, total: 5 };
        for i in 0..5 {
            let r = p.park(&format!("a{i}"), "10.0.0.1", "wf", b"x".to_vec(), TTL, caps).await.unwrap();
            assert_eq!(r.evicted.len(), usize::from(i >= 3), "insert {i}");
        }
        assert!(p.peek("a0").await.unwrap().is_none() && p.peek("a1").await.unwrap().is_none());
        assert!(p.peek("a4").await.unwrap().is_some());
        for i in 0..3 {
            p.park(&format!("b{i}"), "10.0.0.2", "cu", b"y".to_vec(), TTL, caps).await.unwrap();
        }
        assert_eq!(p.len(), 5, "the total cap holds");
        assert!(p.peek("a2").await.unwrap().is_none(), "the oldest overall went first");
        assert_eq!(p.take("b2").await.unwrap().as_deref(), Some(&b"y"[..]));
        assert!(p.take("b2").await.unwrap().is_none(), "single use");
        let swept = p.sweep(now() + 1, 2).await.unwrap();
        assert_eq!(swept.expired.len(), 2, "a page at a time");
        assert_eq!(swept.held, 2);
        let s = p.space.lock().unwrap();
        let indexed: usize = s.clients.values().map(BTreeMap::len).sum();
        assert_eq!((s.order.len(), indexed), (2, 2), "indexes follow the entries");
    }
}
