//! `session.store: redis://…` (or `rediss://`, `redis+sentinel://`, `redis+cluster://`,
//! see `super::redis_conn`): shared by every replica, so a session created on one
//! replica works on another and a logout or revocation ends it everywhere.
//!
//! Every call has a short timeout: when Redis is down, sign-ins fail closed with a
//! clear page and bearer traffic, which never touches the store, is unaffected. Every
//! call is counted (`idfabric_session_store_ops_total{op,result}`) and timed
//! (`idfabric_session_store_op_duration_seconds{op}`); failures are logged at most once
//! a second, with the operation and the error, never a key or a value.

use super::redis_conn::{Backend, Conn, RedisTarget};
use super::{AccessRecord, Store, StoreError};
use crate::metrics::metrics;
use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const OP_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a write on a Sentinel-managed master waits for one replica to confirm it.
const REPLICA_WAIT_MS: u64 = 500;

/// The operations counted in `idfabric_session_store_ops_total` (a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
    Take,
    Delete,
    SetIfAbsent,
    AddMember,
    Members,
    RemoveMember,
    Ping,
    PendingPark,
    PendingPeek,
    PendingTake,
    PendingSweep,
    AccessWrite,
    AccessRead,
    LogAppend,
    LogRead,
    Publish,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Take => "take",
            Op::Delete => "delete",
            Op::SetIfAbsent => "set_if_absent",
            Op::AddMember => "add_member",
            Op::Members => "members",
            Op::RemoveMember => "remove_member",
            Op::Ping => "ping",
            Op::PendingPark => "pending_park",
            Op::PendingPeek => "pending_peek",
            Op::PendingTake => "pending_take",
            Op::PendingSweep => "pending_sweep",
            Op::AccessWrite => "access_write",
            Op::AccessRead => "access_read",
            Op::LogAppend => "log_append",
            Op::LogRead => "log_read",
            Op::Publish => "publish",
        }
    }

    fn writes(self) -> bool {
        !matches!(self, Op::Get | Op::Members | Op::Ping | Op::PendingPeek | Op::AccessRead | Op::LogRead)
    }
}

/// Counts one operation's result (`ok`, `miss` or `error`).
pub fn count(op: Op, result: &'static str) {
    metrics().session_store_ops_total.with_label_values(&[op.label(), result]).inc();
}

/// Counts a read that may find nothing: `miss` when it did.
pub(crate) fn count_found<T>(op: Op, r: &Result<Option<T>, StoreError>) {
    if let Ok(v) = r {
        count(op, if v.is_some() { "ok" } else { "miss" });
    }
}

pub struct RedisStore {
    backend: Backend,
    /// The single or cluster connection, made on first use (each reconnects by itself).
    conn: OnceCell<Conn>,
    /// The URL with its password hidden, for logs.
    shown: String,
    /// When a failure was last logged (milliseconds since the epoch).
    last_log: AtomicI64,
    /// Access evidence in the layout of earlier versions has been moved (or there is
    /// none to move: Cluster).
    access_migrated: std::sync::atomic::AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A store URL fit for logs and error messages: the password, if any, is replaced by
/// `***` (`redis://user:***@host:6379/0`). Text that does not parse as a URL with a
/// host keeps only what follows its last `@`.
pub use crate::config::redacted;

impl RedisStore {
    /// A store for `target`; connects on first use. Fails only on configuration that
    /// cannot work (unreadable TLS files, a URL the client rejects).
    pub fn new(target: &RedisTarget) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            backend: Backend::new(target, OP_TIMEOUT).map_err(|e| StoreError::Unavailable(e.to_string()))?,
            conn: OnceCell::new(),
            shown: redacted(&target.url),
            last_log: AtomicI64::new(0),
            access_migrated: std::sync::atomic::AtomicBool::new(matches!(target.topology, super::redis_conn::Topology::Cluster { .. })),
        })
    }

    /// A store on a plain `redis://` or `rediss://` URL.
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let target = RedisTarget::parse(url, Default::default()).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        RedisStore::new(&target)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let connect = || async {
            tokio::time::timeout(OP_TIMEOUT, self.backend.connect(OP_TIMEOUT))
                .await
                .map_err(|_| StoreError::Unavailable("connect timeout".into()))?
                .map_err(|e| {
                    self.backend.failed(Some(&e));
                    unavailable(e)
                })
        };
        if self.backend.is_sentinel() {
            return connect().await;
        }
        Ok(self.conn.get_or_try_init(connect).await?.clone())
    }

    /// Runs one operation with the timeout; counts an error (the caller counts success,
    /// which may be a miss) and times it.
    pub(crate) async fn run<T, F>(&self, op: Op, f: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let r = self.attempt(op, f).await;
        metrics().session_store_op_duration_seconds.with_label_values(&[op.label()]).observe(started.elapsed().as_secs_f64());
        if let Err(e) = &r {
            count(op, "error");
            self.log_failure(op, e);
        }
        r
    }

    /// [`Self::run`] for operations whose every success is `ok`.
    pub(crate) async fn run_ok<T, F>(&self, op: Op, f: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let r = self.run(op, f).await;
        if r.is_ok() {
            count(op, "ok");
        }
        r
    }

    async fn attempt<T, F>(&self, op: Op, f: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        let mut after = conn.clone();
        let out = match tokio::time::timeout(OP_TIMEOUT, f(conn)).await {
            Err(_) => {
                self.backend.failed(None);
                return Err(StoreError::Unavailable("timeout".into()));
            }
            Ok(Err(e)) => {
                self.backend.failed(Some(&e));
                return Err(unavailable(e));
            }
            Ok(Ok(v)) => v,
        };
        if self.backend.is_sentinel() && op.writes() {
            self.replicated(&mut after).await;
        }
        Ok(out)
    }

    /// Waits until one replica holds every write made so far on this connection, so a
    /// failover keeps it. Without a replica (all down) the write stands, logged: the
    /// master still serves it, and refusing every sign-in would be worse.
    async fn replicated(&self, conn: &mut Conn) {
        let waited: redis::RedisResult<i64> =
            redis::cmd("WAIT").arg(1).arg(REPLICA_WAIT_MS).query_async(conn).await;
        match waited {
            Ok(n) if n >= 1 => {}
            Ok(_) => self.log_rate_limited(|| tracing::warn!(store = %self.shown, "session store: no replica confirmed a write within {REPLICA_WAIT_MS} ms; a failover now would lose it")),
            Err(e) => self.backend.failed(Some(&e)),
        }
    }

    /// Moves access evidence written by earlier versions to the hash-tagged layout, a
    /// page at a time, once per process (again after a failure).
    async fn migrate_access(&self) -> Result<(), StoreError> {
        if self.access_migrated.load(Ordering::Relaxed) {
            return Ok(());
        }
        static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = S.get_or_init(|| redis::Script::new(MIGRATE_ACCESS));
        loop {
            let left: u64 =
                self.run_ok(Op::AccessWrite, |mut c| async move { script.arg(ACCESS_BATCH).invoke_async(&mut c).await }).await?;
            if left == 0 {
                self.access_migrated.store(true, Ordering::Relaxed);
                return Ok(());
            }
        }
    }

    fn log_failure(&self, op: Op, e: &StoreError) {
        self.log_rate_limited(|| tracing::warn!(store = %self.shown, op = op.label(), error = %e, "session store operation failed"));
    }

    fn log_rate_limited(&self, log: impl FnOnce()) {
        let now = crate::providers::now_secs();
        let last = self.last_log.load(Ordering::Relaxed);
        if now > last && self.last_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            log();
        }
    }
}

/// Access evidence layout: `idf:{acc}:r:<route>:<sub>` (hash: first, last, count) per
/// row, `idf:{acc}:id:<sub>` (hash: last, provider, username, name, groups as JSON) per
/// identity, and the set `idf:{acc}:index` of row keys. Route names hold no `:`. The
/// `{acc}` hash tag puts them in one Cluster slot: the merge script and the report's
/// pipelines touch several at once.
const ACCESS_INDEX: &str = "idf:{acc}:index";
const ROW_PREFIX: &str = "idf:{acc}:r:";

/// Records per script invocation and keys per report read: bounded, so neither one
/// Lua call nor one reply holds Redis (or our memory) for long, and large enough that
/// a report over 100k identities is a few hundred round trips, not 100k.
const ACCESS_BATCH: usize = 500;

/// Script invocations per pipeline: a usual flush (up to 5 000 records) is one round
/// trip; the backlog after a Redis outage (up to `crate::access::MAX_PENDING`) is sent
/// in several, each within the operation timeout.
const FLUSH_INVOCATIONS: usize = 10;

/// Merges a batch of records atomically. `KEYS[1]` is the index; record `i` has the
/// keys `KEYS[2i]` (row) and `KEYS[2i+1]` (identity) and seven values from
/// `ARGV[2 + 7(i-1)]`: first, last, count, provider, username, name, groups. Per row:
/// earliest first, latest last, summed count; identity facts replaced only by a record
/// at least as recent; both expire after the retention. Sent as EVALSHA (`redis::Script`
/// loads it once when Redis does not know it), so each flush sends only the data.
const MERGE_ACCESS: &str = r#"
local keep = ARGV[1]
for i = 1, (#KEYS - 1) / 2 do
  local row, ident, a = KEYS[2 * i], KEYS[2 * i + 1], 1 + 7 * (i - 1)
  local first, last = ARGV[a + 1], ARGV[a + 2]
  redis.call('HSETNX', row, 'first', first)
  if tonumber(first) < tonumber(redis.call('HGET', row, 'first')) then redis.call('HSET', row, 'first', first) end
  if tonumber(last) > tonumber(redis.call('HGET', row, 'last') or '0') then redis.call('HSET', row, 'last', last) end
  redis.call('HINCRBY', row, 'count', ARGV[a + 3])
  redis.call('EXPIRE', row, keep)
  redis.call('SADD', KEYS[1], row)
  if tonumber(last) >= tonumber(redis.call('HGET', ident, 'last') or '0') then
    redis.call('HSET', ident, 'last', last, 'provider', ARGV[a + 4], 'username', ARGV[a + 5], 'name', ARGV[a + 6], 'groups', ARGV[a + 7])
  end
  redis.call('EXPIRE', ident, keep)
end
return 1
"#;

/// Moves one page of access evidence from the layout before the `{acc}` hash tag
/// (`idf:acc:index`, `idf:acc:<route>:<sub>`, `idf:accid:<sub>`) to the current one,
/// merging with rows already written under the new names (earliest first, latest last,
/// summed count; a newer identity wins). ARGV: page size. Returns the rows left. Only
/// outside Cluster, the one place where the old layout could exist: it names keys in
/// other slots.
const MIGRATE_ACCESS: &str = r#"
for _, row in ipairs(redis.call('SPOP', 'idf:acc:index', tonumber(ARGV[1]))) do
  local rest = string.sub(row, 9)
  local sub = string.match(rest, '^[^:]+:(.+)$')
  if sub and redis.call('EXISTS', row) == 1 then
    local new = 'idf:{acc}:r:' .. rest
    if redis.call('EXISTS', new) == 0 then
      redis.call('RENAME', row, new)
    else
      local o = redis.call('HMGET', row, 'first', 'last', 'count')
      local n = redis.call('HMGET', new, 'first', 'last', 'count')
      if tonumber(o[1] or '0') < tonumber(n[1] or '0') then redis.call('HSET', new, 'first', o[1]) end
      if tonumber(o[2] or '0') > tonumber(n[2] or '0') then redis.call('HSET', new, 'last', o[2]) end
      redis.call('HINCRBY', new, 'count', tonumber(o[3] or '0'))
      redis.call('DEL', row)
    end
    redis.call('SADD', 'idf:{acc}:index', new)
    local oid, nid = 'idf:accid:' .. sub, 'idf:{acc}:id:' .. sub
    if redis.call('EXISTS', oid) == 1 then
      if redis.call('EXISTS', nid) == 0 then redis.call('RENAME', oid, nid) else redis.call('DEL', oid) end
    end
  end
end
return redis.call('SCARD', 'idf:acc:index')
"#;

fn merge_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(MERGE_ACCESS))
}

fn access_keys(route: &str, sub: &str) -> (String, String) {
    (format!("{ROW_PREFIX}{route}:{sub}"), identity_key(sub))
}

fn identity_key(sub: &str) -> String {
    format!("idf:{{acc}}:id:{sub}")
}

/// `idf:{acc}:r:<route>:<sub>` → (route, sub); `None` for anything else in the index.
fn parse_row_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(ROW_PREFIX)
        .and_then(|r| r.split_once(':'))
        .filter(|(route, sub)| !route.is_empty() && !sub.is_empty())
}

/// The pipeline of one flush: one script invocation per [`ACCESS_BATCH`] records.
fn merge_pipeline(records: &[AccessRecord], keep: u64) -> Result<redis::Pipeline, StoreError> {
    let script = merge_script();
    let mut pipe = redis::pipe();
    for chunk in records.chunks(ACCESS_BATCH) {
        let mut call = script.key(ACCESS_INDEX);
        call.arg(keep);
        for r in chunk {
            let (row, ident) = access_keys(&r.route, &r.sub);
            let groups = serde_json::to_string(&r.groups).map_err(|_| StoreError::Corrupt)?;
            call.key(row).key(ident);
            call.arg(r.first_seen)
                .arg(r.last_seen)
                .arg(r.count)
                .arg(&r.provider)
                .arg(r.username.as_deref().unwrap_or(""))
                .arg(r.name.as_deref().unwrap_or(""))
                .arg(groups);
        }
        pipe.invoke_script(&call).ignore();
    }
    Ok(pipe)
}

/// Whether every one of `n` pipelined invocations failed because Redis does not know
/// the script (so none ran).
fn all_noscript(e: &redis::RedisError, n: usize) -> bool {
    let noscript = Some(redis::ServerErrorKind::NoScript);
    e.clone().into_server_errors().is_some_and(|errs| errs.len() == n && errs.iter().all(|(_, s)| s.kind() == noscript))
}

type Hash = std::collections::HashMap<String, String>;

/// One access record from its row and identity hashes; `None` when either expired.
fn access_record(route: &str, sub: &str, row: &Hash, id: &Hash) -> Option<AccessRecord> {
    if row.is_empty() || id.is_empty() {
        return None;
    }
    let num = |h: &Hash, f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let text = |f: &str| id.get(f).filter(|v| !v.is_empty()).cloned();
    Some(AccessRecord {
        sub: sub.to_string(),
        route: route.to_string(),
        provider: id.get("provider").cloned().unwrap_or_default(),
        username: text("username"),
        name: text("name"),
        groups: id.get("groups").and_then(|g| serde_json::from_str(g).ok()).unwrap_or_default(),
        first_seen: num(row, "first"),
        last_seen: num(row, "last"),
        count: num(row, "count").max(0) as u64,
    })
}

fn secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.run(Op::Get, |mut c| async move { c.get(key).await }).await;
        count_found(Op::Get, &r);
        r
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        self.run_ok(Op::Set, |mut c| async move { c.set_ex(key, value, secs(ttl)).await }).await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.run(Op::Take, |mut c| async move { c.get_del(key).await }).await;
        count_found(Op::Take, &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run_ok(Op::Delete, |mut c| async move { c.del(key).await }).await
    }

    async fn set_if_absent(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, StoreError> {
        // `SET NX` is one atomic command: one caller across every replica gets `OK`.
        self.run_ok(Op::SetIfAbsent, |mut c| async move {
            let r: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .query_async(&mut c)
                .await?;
            Ok(r.is_some())
        })
        .await
    }

    async fn add_member(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        // Two commands on one key: one slot, so a Cluster pipeline holds them together.
        self.run_ok(Op::AddMember, |mut c| async move {
            redis::pipe()
                .sadd(key, member)
                .ignore()
                .expire(key, secs(ttl) as i64)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.run_ok(Op::Members, |mut c| async move { c.smembers(key).await }).await
    }

    async fn remove_member(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        self.run_ok(Op::RemoveMember, |mut c| async move { c.srem::<_, _, i64>(key, member).await.map(|n| n > 0) }).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run_ok(Op::Ping, |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
    }

    async fn record_access(&self, records: &[AccessRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.migrate_access().await?;
        let keep = secs(super::ACCESS_RETENTION);
        for part in records.chunks(ACCESS_BATCH * FLUSH_INVOCATIONS) {
            let pipe = merge_pipeline(part, keep)?;
            // A pipeline does not load a missing script by itself: when every invocation
            // failed with NOSCRIPT (first flush, Redis restarted or SCRIPT FLUSH), nothing
            // was merged, so the pipeline is sent again after one SCRIPT LOAD. Any other
            // error is returned (`crate::access::flush` keeps the records for the next
            // flush: delivery is at least once).
            let invocations = pipe.len();
            self.run_ok(Op::AccessWrite, |mut c| async move {
                match pipe.query_async::<()>(&mut c).await {
                    Err(e) if all_noscript(&e, invocations) => {
                        merge_script().prepare_invoke().load_async(&mut c).await?;
                        pipe.query_async::<()>(&mut c).await
                    }
                    other => other,
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn scan_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        self.migrate_access().await?;
        let mut out = Vec::new();
        // Identities already read in this report (most have several routes).
        let mut idents: std::collections::HashMap<String, Hash> = std::collections::HashMap::new();
        // SSCAN may return a key twice; each row is reported once.
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            // One SSCAN page, then one pipeline: every row of the page and every identity
            // not read yet (two round trips per page of about ACCESS_BATCH rows).
            let (next, page): (u64, Vec<String>) = self
                .run_ok(Op::AccessRead, |mut c| async move {
                    redis::cmd("SSCAN")
                        .arg(ACCESS_INDEX)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(ACCESS_BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let rows: Vec<(String, String, String)> = page
                .into_iter()
                .filter_map(|k| {
                    let (route, sub) = parse_row_key(&k).map(|(r, s)| (r.to_string(), s.to_string()))?;
                    seen.insert(k.clone()).then_some((k, route, sub))
                })
                .collect();
            for batch in rows.chunks(ACCESS_BATCH) {
                let mut pipe = redis::pipe();
                for (key, _, _) in batch {
                    pipe.hgetall(key);
                }
                let mut wanted: Vec<&str> = Vec::new();
                let mut asked: std::collections::HashSet<&str> = std::collections::HashSet::new();
                for (_, _, sub) in batch {
                    if !idents.contains_key(sub) && asked.insert(sub) {
                        wanted.push(sub);
                        pipe.hgetall(identity_key(sub));
                    }
                }
                let mut replies: Vec<Hash> = self.run_ok(Op::AccessRead, |mut c| async move { pipe.query_async(&mut c).await }).await?;
                let fetched = replies.split_off(batch.len());
                idents.extend(wanted.into_iter().map(String::from).zip(fetched));
                let mut expired = redis::pipe();
                for ((key, route, sub), row) in batch.iter().zip(&replies) {
                    match idents.get(sub).and_then(|id| access_record(route, sub, row, id)) {
                        Some(r) => out.push(r),
                        None if row.is_empty() => {
                            expired.srem(ACCESS_INDEX, key).ignore();
                        }
                        None => {}
                    }
                }
                if !expired.is_empty() {
                    // Index entries of rows that expired; best effort (the next report retries).
                    let _ = self.run_ok(Op::AccessWrite, |mut c| async move { expired.query_async::<()>(&mut c).await }).await;
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(out);
            }
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn log_append(&self, key: &str, score: i64, member: &str, keep: Duration) -> Result<(), StoreError> {
        // One key: one slot, so a Cluster pipeline holds the three commands together.
        let oldest = score - keep.as_millis() as i64;
        self.run_ok(Op::LogAppend, |mut c| async move {
            redis::pipe()
                .zadd(key, member, score)
                .ignore()
                .zrembyscore(key, "-inf", format!("({oldest}"))
                .ignore()
                .pexpire(key, keep.as_millis().max(1) as i64)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn log_since(&self, key: &str, after: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.run_ok(Op::LogRead, |mut c| async move { c.zrangebyscore_withscores(key, format!("({after}"), "+inf").await }).await
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        self.run_ok(Op::Publish, |mut c| async move { c.publish::<_, _, i64>(channel, message).await.map(|_| ()) }).await
    }

    async fn subscribe(&self, channel: &str, tx: tokio::sync::mpsc::Sender<String>) -> Result<bool, StoreError> {
        use futures_util::StreamExt;
        let connect = async {
            let Some(client) = self.backend.pubsub_client().await.map_err(unavailable)? else { return Ok(None) };
            let mut ps = client.get_async_pubsub().await.map_err(unavailable)?;
            ps.subscribe(channel).await.map_err(unavailable)?;
            Ok::<_, StoreError>(Some(ps))
        };
        let ps = match tokio::time::timeout(OP_TIMEOUT, connect).await {
            Err(_) => return Err(StoreError::Unavailable("subscribe timeout".into())),
            Ok(r) => r?,
        };
        let Some(ps) = ps else { return Ok(false) };
        let mut messages = ps.into_on_message();
        while let Some(m) = messages.next().await {
            if let Ok(text) = m.get_payload::<String>() {
                if tx.send(text).await.is_err() {
                    break;
                }
            }
        }
        Ok(true)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod access_tests {
    //! The access-evidence functions against a real `redis-server` (`make test`
    //! installs it; without one these tests fail rather than pass unseen).
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// The child, its port, and its directory (removed on drop).
    pub(super) struct Server(Child, u16, #[allow(dead_code)] tempfile::TempDir);

    impl Server {
        pub(super) fn port(&self) -> u16 {
            self.1
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    pub(super) fn redis_server() -> Option<Server> {
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server not runnable ({e}): install it (`make test` does)"));
        let server = Server(child, port, dir);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on {port}");
    }

    fn record(i: usize, count: u64, last: i64) -> AccessRecord {
        AccessRecord {
            sub: format!("sub-{i}"),
            route: if i % 3 == 0 { "hr".into() } else { "wiki".into() },
            provider: "dev-wf".into(),
            username: Some(format!("user{i}@example.com")),
            name: (i % 2 == 0).then(|| format!("User {i}")),
            groups: vec!["staff".into()],
            first_seen: 1_000 + i as i64,
            last_seen: last,
            count,
        }
    }

    async fn commandstat(store: &RedisStore, cmd: &str) -> u64 {
        let info: String = store
            .run(Op::Get, |mut c| async move { redis::cmd("INFO").arg("commandstats").query_async(&mut c).await })
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|v| v.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn evidence_in_the_layout_before_the_hash_tag_is_moved_and_merged() {
        let Some(server) = redis_server() else { return };
        let store = RedisStore::open(&format!("redis://127.0.0.1:{}", server.1)).unwrap();
        // Written by an earlier version: three rows of two identities.
        store
            .run_ok(Op::Set, |mut c| async move {
                redis::pipe()
                    .hset_multiple("idf:acc:wiki:dev-wf:u1", &[("first", "100"), ("last", "200"), ("count", "3")]).ignore()
                    .hset_multiple("idf:acc:hr:dev-wf:u1", &[("first", "150"), ("last", "150"), ("count", "1")]).ignore()
                    .hset_multiple("idf:acc:wiki:dev-wf:u2", &[("first", "120"), ("last", "130"), ("count", "2")]).ignore()
                    .hset_multiple("idf:accid:dev-wf:u1", &[("last", "200"), ("provider", "dev-wf"), ("username", "old"), ("name", ""), ("groups", "[]")]).ignore()
                    .hset_multiple("idf:accid:dev-wf:u2", &[("last", "130"), ("provider", "dev-wf"), ("username", "u2"), ("name", ""), ("groups", "[]")]).ignore()
                    .expire("idf:acc:wiki:dev-wf:u2", 1000).ignore()
                    .sadd("idf:acc:index", &["idf:acc:wiki:dev-wf:u1", "idf:acc:hr:dev-wf:u1", "idf:acc:wiki:dev-wf:u2"]).ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .unwrap();
        // A new replica already wrote u1 on wiki under the new names.
        let mut newer = record(0, 5, 300);
        (newer.sub, newer.route, newer.username) = ("dev-wf:u1".into(), "wiki".into(), Some("new".into()));
        let fresh = RedisStore::open(&format!("redis://127.0.0.1:{}", server.1)).unwrap();
        fresh.access_migrated.store(true, Ordering::Relaxed);
        fresh.record_access(&[newer]).await.unwrap();

        let mut got = store.scan_access().await.unwrap();
        got.sort_by(|a, b| (&a.sub, &a.route).cmp(&(&b.sub, &b.route)));
        let rows: Vec<(&str, &str, i64, i64, u64)> =
            got.iter().map(|r| (r.sub.as_str(), r.route.as_str(), r.first_seen, r.last_seen, r.count)).collect();
        assert_eq!(
            rows,
            [("dev-wf:u1", "hr", 150, 150, 1), ("dev-wf:u1", "wiki", 100, 300, 8), ("dev-wf:u2", "wiki", 120, 130, 2)]
        );
        assert_eq!(got[1].username.as_deref(), Some("new"), "the newer identity wins");
        let old: Vec<String> = store.run_ok(Op::Members, |mut c| async move { c.keys("idf:acc*").await }).await.unwrap();
        assert!(old.is_empty(), "nothing left in the old layout: {old:?}");
        let ttl: i64 = store.run_ok(Op::Get, |mut c| async move { c.ttl("idf:{acc}:r:wiki:dev-wf:u2").await }).await.unwrap();
        assert!((1..=1000).contains(&ttl), "a moved row keeps its expiry: {ttl}");
    }

    #[tokio::test]
    async fn many_records_merge_in_batches_and_read_back_whole() {
        let Some(server) = redis_server() else { return };
        let store = RedisStore::open(&format!("redis://127.0.0.1:{}", server.1)).unwrap();
        // Only the merge script is counted below (the move from the old layout has its own test).
        store.access_migrated.store(true, Ordering::Relaxed);
        let n = 1_234;
        let first: Vec<AccessRecord> = (0..n).map(|i| record(i, 2, 5_000)).collect();
        store.record_access(&first).await.unwrap();
        // Again, later: counts add up, first stays, last moves, identity facts follow.
        let mut again: Vec<AccessRecord> = (0..n).map(|i| record(i, 3, 6_000)).collect();
        again[7].name = Some("Renamed".into());
        store.record_access(&again).await.unwrap();
        // A script cache flush (Redis restart, failover) is survived by reloading it.
        store
            .run(Op::Set, |mut c| async move { redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut c).await })
            .await
            .unwrap();
        store.record_access(&[record(1, 1, 6_500)]).await.unwrap();

        // EVALSHA only: the script text is sent by SCRIPT LOAD, never with the data, and
        // each flush is one invocation per ACCESS_BATCH records.
        assert_eq!(commandstat(&store, "eval").await, 0);
        let per_flush = n.div_ceil(ACCESS_BATCH) as u64;
        // (A NOSCRIPT reply may or may not count as a call, depending on the Redis version.)
        let calls = commandstat(&store, "evalsha").await;
        assert!((2 * per_flush + 2..=3 * per_flush + 3).contains(&calls), "{calls} EVALSHA calls for 3 flushes");

        let mut got = store.scan_access().await.unwrap();
        got.sort_by_key(|r| r.sub.trim_start_matches("sub-").parse::<usize>().unwrap());
        assert_eq!(got.len(), n);
        let r = &got[7];
        assert_eq!((r.first_seen, r.last_seen, r.count), (1_007, 6_000, 5));
        assert_eq!(r.name.as_deref(), Some("Renamed"));
        assert_eq!(r.username.as_deref(), Some("user7@example.com"));
        assert_eq!(r.groups, vec!["staff".to_string()]);
        assert_eq!((got[1].count, got[1].last_seen), (6, 6_500));
        assert_eq!(got[3].route, "hr");
        // The report reads pages (SSCAN), never the whole index at once or key by key.
        assert_eq!(commandstat(&store, "smembers").await, 0);
        assert_eq!(commandstat(&store, "keys").await, 0);
        assert!(commandstat(&store, "sscan").await >= 1);

        // A row that expired leaves the index at the next report.
        store.run(Op::Delete, |mut c| async move { c.del::<_, ()>("idf:{acc}:r:hr:sub-0").await }).await.unwrap();
        assert_eq!(store.scan_access().await.unwrap().len(), n - 1);
        let left: u64 = store.run(Op::Members, |mut c| async move { c.scard(ACCESS_INDEX).await }).await.unwrap();
        assert_eq!(left, n as u64 - 1);

        // The backlog after an outage: several pipelines; when all succeed every
        // record is merged once (a failed pipeline makes the caller retry the whole
        // batch: delivery is at least once, docs/operations.md).
        let backlog: Vec<AccessRecord> =
            (0..12_000).map(|i| AccessRecord { route: "big".into(), ..record(i, 1, 7_000) }).collect();
        store.record_access(&backlog).await.unwrap();
        let all = store.scan_access().await.unwrap();
        assert_eq!(all.iter().filter(|r| r.route == "big" && r.count == 1).count(), 12_000);
        assert_eq!(all.len(), n - 1 + 12_000);
    }
}

#[cfg(test)]
mod log_tests {
    //! The revocation log and channel against a real `redis-server`.
    use super::access_tests::redis_server;
    use super::*;

    #[tokio::test]
    async fn the_log_keeps_its_window_and_the_channel_delivers() {
        let Some(server) = redis_server() else { return };
        let url = format!("redis://127.0.0.1:{}", server.port());
        let store = RedisStore::open(&url).unwrap();
        let keep = Duration::from_secs(10);
        store.log_append("idf:{rev}:log", 1_000, "old", keep).await.unwrap();
        store.log_append("idf:{rev}:log", 5_000, "mid", keep).await.unwrap();
        store.log_append("idf:{rev}:log", 12_000, "new", keep).await.unwrap();
        // "old" (2 s before 12 000 − 10 000) left with the last write; reads start after a score.
        let all = store.log_since("idf:{rev}:log", 0).await.unwrap();
        assert_eq!(all, vec![("mid".to_string(), 5_000), ("new".to_string(), 12_000)]);
        assert_eq!(store.log_since("idf:{rev}:log", 5_000).await.unwrap(), vec![("new".to_string(), 12_000)]);

        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let listener = RedisStore::open(&url).unwrap();
        let sub = tokio::spawn(async move { listener.subscribe("idf:{rev}:events", tx).await });
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            store.publish("idf:{rev}:events", "hello").await.unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                break m;
            }
            assert!(Instant::now() < deadline, "no message on the channel");
        };
        assert_eq!(got, "hello");
        sub.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn redacted_hides_only_the_password() {
        assert_eq!(redacted("redis://:s3cret@10.0.0.5:6379/0"), "redis://:***@10.0.0.5:6379/0");
        assert_eq!(redacted("rediss://app:s3cret@cache.internal/1"), "rediss://app:***@cache.internal/1");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("rdis//:s3cret@host"), "***@host");
        assert_eq!(redacted("redis:/:s3cret@127.0.0.1:6379"), "***@127.0.0.1:6379");
        assert!(!redacted("redis://u:p%40ss@h").contains("p%40ss"));
        assert_eq!(redacted("redis+sentinel://:pw@h1:26379,h2:26379/m"), "redis+sentinel://***@h1:26379,h2:26379/m");
        assert_eq!(redacted("rediss+cluster://app:pw@h1:7000,h2:7001"), "rediss+cluster://***@h1:7000,h2:7001");
        assert_eq!(redacted("redis+cluster://h1:7000,h2:7001"), "redis+cluster://h1:7000,h2:7001");
    }
}
