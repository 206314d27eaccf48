//! `session.store: redis://host:port`: shared by every replica, so a session created on
//! one replica works on another and a logout or revocation ends it everywhere.
//!
//! Uses a `ConnectionManager` (reconnects by itself). Every call has a short timeout:
//! when Redis is down, sign-ins fail closed with a clear page and bearer traffic,
//! which never touches the store, is unaffected.

use super::{AccessRecord, Store, StoreError};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::time::Duration;
use tokio::sync::OnceCell;

const OP_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    pub fn new(url: &str) -> Result<RedisStore, StoreError> {
        Ok(RedisStore { client: redis::Client::open(url).map_err(unavailable)?, conn: OnceCell::new() })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(OP_TIMEOUT))
                    .set_response_timeout(Some(OP_TIMEOUT))
                    .set_number_of_retries(1);
                tokio::time::timeout(OP_TIMEOUT, ConnectionManager::new_with_config(self.client.clone(), cfg))
                    .await
                    .map_err(|_| StoreError::Unavailable("connect timeout".into()))?
                    .map_err(unavailable)
            })
            .await?;
        Ok(c.clone())
    }

    async fn run<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        tokio::time::timeout(OP_TIMEOUT, f(conn))
            .await
            .map_err(|_| StoreError::Unavailable("timeout".into()))?
            .map_err(unavailable)
    }
}

/// Access evidence layout: `idf:acc:{route}:{sub}` (hash: first, last, count) per row,
/// `idf:accid:{sub}` (hash: last, provider, username, name, groups as JSON) per
/// identity, and the set `idf:acc:index` of row keys. Route names hold no `:`.
const ACCESS_INDEX: &str = "idf:acc:index";

/// Merges one record atomically: earliest first, latest last, summed count; identity
/// facts replaced only by a record at least as recent; both expire after the retention.
const MERGE_ACCESS: &str = r#"
redis.call('HSETNX', KEYS[1], 'first', ARGV[1])
if tonumber(ARGV[1]) < tonumber(redis.call('HGET', KEYS[1], 'first')) then redis.call('HSET', KEYS[1], 'first', ARGV[1]) end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'last') or '0') then redis.call('HSET', KEYS[1], 'last', ARGV[2]) end
redis.call('HINCRBY', KEYS[1], 'count', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[3], KEYS[1])
if tonumber(ARGV[2]) >= tonumber(redis.call('HGET', KEYS[2], 'last') or '0') then
  redis.call('HSET', KEYS[2], 'last', ARGV[2], 'provider', ARGV[5], 'username', ARGV[6], 'name', ARGV[7], 'groups', ARGV[8])
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"#;

fn access_keys(route: &str, sub: &str) -> (String, String) {
    (format!("idf:acc:{route}:{sub}"), format!("idf:accid:{sub}"))
}

fn secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|mut c| async move { c.get(key).await }).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        self.run(|mut c| async move { c.set_ex(key, value, secs(ttl)).await }).await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|mut c| async move { c.get_del(key).await }).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(|mut c| async move { c.del(key).await }).await
    }

    async fn set_nx(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.run(|mut c| async move {
            let r: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(1)
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
        self.run(|mut c| async move {
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
        self.run(|mut c| async move { c.smembers(key).await }).await
    }

    async fn remove_member(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        self.run(|mut c| async move { c.srem::<_, _, i64>(key, member).await.map(|n| n > 0) }).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
    }

    async fn record_access(&self, records: &[AccessRecord]) -> Result<(), StoreError> {
        let keep = secs(super::ACCESS_RETENTION);
        for chunk in records.chunks(500) {
            let mut pipe = redis::pipe();
            for r in chunk {
                let (row, ident) = access_keys(&r.route, &r.sub);
                let groups = serde_json::to_string(&r.groups).map_err(|_| StoreError::Corrupt)?;
                pipe.cmd("EVAL")
                    .arg(MERGE_ACCESS)
                    .arg(3)
                    .arg(row)
                    .arg(ident)
                    .arg(ACCESS_INDEX)
                    .arg(r.first_seen)
                    .arg(r.last_seen)
                    .arg(r.count)
                    .arg(keep)
                    .arg(&r.provider)
                    .arg(r.username.as_deref().unwrap_or(""))
                    .arg(r.name.as_deref().unwrap_or(""))
                    .arg(groups)
                    .ignore();
            }
            self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await?;
        }
        Ok(())
    }

    async fn scan_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        let keys: Vec<String> = self.members(ACCESS_INDEX).await?;
        let mut out = Vec::new();
        let mut idents: std::collections::HashMap<String, Option<std::collections::HashMap<String, String>>> =
            std::collections::HashMap::new();
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.hgetall(k);
            }
            let rows: Vec<std::collections::HashMap<String, String>> =
                self.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
            for (key, row) in chunk.iter().zip(rows) {
                let Some((route, sub)) = key.strip_prefix("idf:acc:").and_then(|r| r.split_once(':')) else { continue };
                if row.is_empty() {
                    let _ = self.remove_member(ACCESS_INDEX, key).await; // expired
                    continue;
                }
                if !idents.contains_key(sub) {
                    let k = access_keys(route, sub).1;
                    let h: std::collections::HashMap<String, String> = self.run(|mut c| async move { c.hgetall(k).await }).await?;
                    idents.insert(sub.to_string(), (!h.is_empty()).then_some(h));
                }
                let Some(Some(id)) = idents.get(sub) else { continue };
                let num = |h: &std::collections::HashMap<String, String>, f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                let text = |f: &str| id.get(f).filter(|v| !v.is_empty()).cloned();
                out.push(AccessRecord {
                    sub: sub.to_string(),
                    route: route.to_string(),
                    provider: id.get("provider").cloned().unwrap_or_default(),
                    username: text("username"),
                    name: text("name"),
                    groups: id.get("groups").and_then(|g| serde_json::from_str(g).ok()).unwrap_or_default(),
                    first_seen: num(&row, "first"),
                    last_seen: num(&row, "last"),
                    count: num(&row, "count").max(0) as u64,
                });
            }
        }
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
