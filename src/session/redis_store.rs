//! `session.store: redis://host:port`: shared by every replica, so a session created on
//! one replica works on another and a logout or revocation ends it everywhere.
//!
//! Uses a `ConnectionManager` (reconnects by itself). Every call has a short timeout:
//! when Redis is down, sign-ins fail closed with a clear page and bearer traffic,
//! which never touches the store, is unaffected.

use super::{Store, StoreError};
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

    fn kind(&self) -> &'static str {
        "redis"
    }
}
