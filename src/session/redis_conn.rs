//! Where the shared session store lives and how idfabric reaches it: one Redis
//! (`redis://`, `rediss://`), a Sentinel-managed master (`redis+sentinel://`) or a
//! Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
//!
//! Managed Redis (ElastiCache, Memorystore, Azure Cache) speaks TLS, often with a
//! private CA, sometimes with client certificates, and comes as a single endpoint, a
//! Sentinel group or a cluster. The three shapes differ only in how a connection is
//! found, so they meet in one [`Conn`] that the store's commands run on unchanged.
//!
//! - Single: a `ConnectionManager`, which reconnects by itself.
//! - Sentinel: the master named by the sentinels, asked again whenever the current
//!   connection fails or answers `READONLY` (the master was demoted). A write is
//!   acknowledged only once a replica has it (`WAIT 1`), so a session that a browser was
//!   given survives the master's death: Redis replication is asynchronous, and without
//!   the wait the newest writes are the ones a failover drops
//!   (<https://redis.io/docs/latest/operate/oss_and_stack/management/replication/>).
//! - Cluster: the cluster client follows `MOVED`/`ASK` and reconnects by itself; every
//!   key idfabric writes carries a hash tag (`{…}`) wherever several keys meet in one
//!   command, script or pipeline, so each touches one slot.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, RedisFuture, Value};
use std::time::Duration;

pub use crate::config::{RedisTarget, StoreUrlError, TlsFiles, Topology, SCHEMES};

/// One connection of whichever shape; the store's commands, pipelines and scripts run
/// on it as on any redis connection.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Sentinel(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a redis::Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The sentinels and the master connection currently in use.
pub struct SentinelLink {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: std::sync::Mutex<Option<MultiplexedConnection>>,
}

/// What connections are made from.
pub enum Backend {
    Single(redis::Client),
    Sentinel(SentinelLink),
    Cluster(ClusterClient),
}

/// The rustls provider for `rediss://`: the redis crate builds its TLS config from the
/// process default, and this binary links two providers, so one is chosen explicitly.
fn crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl Backend {
    pub fn new(target: &RedisTarget, op_timeout: Duration) -> Result<Backend, StoreUrlError> {
        let certs = target.certificates()?;
        if target.uses_tls() {
            crypto_provider();
        }
        let e = |source: redis::RedisError| StoreUrlError::Client { url: super::redis_store::redacted(&target.url), source };
        Ok(match &target.topology {
            Topology::Single { url } => Backend::Single(match certs {
                Some(c) => redis::Client::build_with_tls(url.as_str(), c).map_err(e)?,
                None => redis::Client::open(url.as_str()).map_err(e)?,
            }),
            Topology::Sentinel { sentinels, master, username, password } => {
                let mut info = redis::RedisConnectionInfo::default();
                if let Some(u) = username {
                    info = info.set_username(u);
                }
                if let Some(p) = password {
                    info = info.set_password(p);
                }
                let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                let client = SentinelClient::build(sentinels.clone(), master.clone(), Some(node), SentinelServerType::Master).map_err(e)?;
                Backend::Sentinel(SentinelLink { sentinels: tokio::sync::Mutex::new(client), current: std::sync::Mutex::new(None) })
            }
            Topology::Cluster { nodes, username, password, .. } => {
                let mut b = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(op_timeout)
                    .response_timeout(op_timeout)
                    .retries(2);
                if let Some(u) = username {
                    b = b.username(u);
                }
                if let Some(p) = password {
                    b = b.password(p);
                }
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                Backend::Cluster(b.build().map_err(e)?)
            }
        })
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self, Backend::Sentinel(_))
    }

    /// A new connection (single, cluster) or the current master's (sentinel).
    pub async fn connect(&self, op_timeout: Duration) -> redis::RedisResult<Conn> {
        match self {
            Backend::Single(client) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(op_timeout))
                    .set_response_timeout(Some(op_timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(client.clone(), cfg).await.map(Conn::Single)
            }
            Backend::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            Backend::Sentinel(link) => {
                if let Some(c) = link.current.lock().ok().and_then(|c| c.clone()) {
                    return Ok(Conn::Sentinel(c));
                }
                let mut sentinels = link.sentinels.lock().await;
                // Another task may have found the master while this one waited.
                if let Some(c) = link.current.lock().ok().and_then(|c| c.clone()) {
                    return Ok(Conn::Sentinel(c));
                }
                let client = sentinels.async_get_client().await?;
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(op_timeout))
                    .set_response_timeout(Some(op_timeout));
                let mut conn = client.get_multiplexed_async_connection_with_config(&cfg).await?;
                // The sentinels' view may lag a failover: only a master is used.
                let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
                if !matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "the node the sentinels name is not a master yet")));
                }
                if let Ok(mut cur) = link.current.lock() {
                    *cur = Some(conn.clone());
                }
                tracing::info!(master = %client.get_connection_info().addr(), "session store: connected to the Sentinel master");
                Ok(Conn::Sentinel(conn))
            }
        }
    }

    /// A client for a publish/subscribe connection: the node (single), the current
    /// master (Sentinel). `None` on a Cluster, where the log poll alone serves.
    pub async fn pubsub_client(&self) -> redis::RedisResult<Option<redis::Client>> {
        match self {
            Backend::Single(client) => Ok(Some(client.clone())),
            Backend::Sentinel(link) => link.sentinels.lock().await.async_get_client().await.map(Some),
            Backend::Cluster(_) => Ok(None),
        }
    }

    /// After a failed operation: a Sentinel connection that failed, timed out or met a
    /// demoted master is dropped, so the next operation asks the sentinels again.
    pub fn failed(&self, e: Option<&redis::RedisError>) {
        let Backend::Sentinel(link) = self else { return };
        let stale = e.is_none_or(|e| {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
                || e.code().is_some_and(|c| c == "READONLY" || c == "MASTERDOWN" || c == "LOADING")
        });
        if stale {
            if let Ok(mut cur) = link.current.lock() {
                *cur = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(u: &str) -> Result<RedisTarget, StoreUrlError> {
        RedisTarget::parse(u, TlsFiles::default())
    }

    #[test]
    fn the_four_forms_parse() {
        assert!(matches!(parse("redis://127.0.0.1:6379/0").unwrap().topology, Topology::Single { .. }));
        assert!(parse("rediss://:pw@cache.internal:6380").unwrap().uses_tls());
        match parse("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1],sentinel-2:26380/mymaster").unwrap().topology {
            Topology::Sentinel { sentinels, master, password, username } => {
                assert_eq!(sentinels, ["redis://10.0.0.1:26379", "redis://[::1]:26379", "redis://sentinel-2:26380"]);
                assert_eq!(master, "mymaster");
                assert_eq!((username, password.as_deref()), (None, Some("s@cret")));
            }
            t => panic!("{t:?}"),
        }
        match parse("rediss+cluster://app:pw@h1:7000,h2:7001").unwrap().topology {
            Topology::Cluster { nodes, tls, username, .. } => {
                assert_eq!(nodes, ["rediss://h1:7000", "rediss://h2:7001"]);
                assert!(tls);
                assert_eq!(username.as_deref(), Some("app"));
            }
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn bad_forms_say_why_without_the_password() {
        for (u, why) in [
            ("redis+sentinel://h1:26379,h2:26379", "names its master"),
            ("redis+sentinel://h1:26379/", "names its master"),
            ("redis+cluster://h1:7000/0", "seed nodes only"),
            ("redis+cluster://h1:notaport", "host:port"),
            ("redis+sentinel://:pw@h1:26379,,h2/m", "host:port"),
            ("memcached://h", "scheme"),
        ] {
            let e = parse(u).unwrap_err().to_string();
            assert!(e.contains(why), "{u}: {e}");
            assert!(!e.contains("pw"), "{u}: {e}");
        }
        let tls = TlsFiles { ca_file: Some("ca.pem".into()), ..TlsFiles::default() };
        assert!(RedisTarget::parse("redis://h:6379", tls.clone()).unwrap_err().to_string().contains("rediss://"));
        assert!(RedisTarget::parse("rediss://h:6379", tls).is_ok());
        let half = TlsFiles { cert_file: Some("c.pem".into()), ..TlsFiles::default() };
        assert!(RedisTarget::parse("rediss://h:6379", half).unwrap_err().to_string().contains("go together"));
    }
}
