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
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `session.tls`: PEM files for `rediss://` stores. All optional: `ca_file` for a
/// private CA (otherwise the system roots), `cert_file` with `key_file` for mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// How the store is laid out, from the scheme of `session.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `redis://` or `rediss://`: the URL as the redis crate reads it.
    Single { url: String },
    /// `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>`: the credentials
    /// are the master's (sentinels are asked without them).
    Sentinel { sentinels: Vec<String>, master: String, username: Option<String>, password: Option<String> },
    /// `redis[s]+cluster://[user:pass@]h1:7000,h2:7001`: seed nodes.
    Cluster { nodes: Vec<String>, tls: bool, username: Option<String>, password: Option<String> },
}

/// A parsed `session.store` URL with its `session.tls` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub url: String,
    pub topology: Topology,
    pub tls: TlsFiles,
}

impl AsRef<str> for RedisTarget {
    fn as_ref(&self) -> &str {
        &self.url
    }
}

/// The URL schemes `session.store` accepts besides `memory`.
pub const SCHEMES: &[&str] = &["redis://", "rediss://", "redis+sentinel://", "redis+cluster://", "rediss+cluster://"];

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn pem_certs(pem: &[u8]) -> usize {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).filter(|c| c.is_ok()).count()
}

fn pem_key(pem: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).is_ok()
}

/// `user:pass@h1:p1,h2:p2` → (username, password, hosts), each host checked as
/// `host:port` (IPv6 in brackets) with `default_port` when none is given.
#[allow(clippy::type_complexity)]
fn auth_and_hosts(s: &str, default_port: u16) -> Result<(Option<String>, Option<String>, Vec<(String, u16)>), String> {
    let (auth, hosts) = match s.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, s),
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), Some(decode(p))),
            None => ((!a.is_empty()).then(|| decode(a)), None),
        },
    };
    let mut out = Vec::new();
    for h in hosts.split(',') {
        if h.is_empty() {
            return Err("an empty entry in the list of host:port".into());
        }
        let u = url::Url::parse(&format!("redis://{h}")).map_err(|_| format!("`{h}` is not host:port"))?;
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(other) => other.to_string(),
            None => return Err(format!("`{h}` has no host")),
        };
        if u.path() != "" && u.path() != "/" || u.query().is_some() || !u.username().is_empty() {
            return Err(format!("`{h}` is not host:port"));
        }
        out.push((host, u.port().unwrap_or(default_port)));
    }
    Ok((username, password, out))
}

fn node_url(scheme: &str, (host, port): &(String, u16)) -> String {
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

impl RedisTarget {
    /// Reads `session.store`; the error says what is wrong without repeating a password.
    pub fn parse(url: &str, tls: TlsFiles) -> Result<RedisTarget, String> {
        let topology = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, master) = rest
                .rsplit_once('/')
                .filter(|(_, m)| !m.is_empty())
                .ok_or("a Sentinel URL names its master: redis+sentinel://h1:26379,h2:26379/<master>")?;
            let (username, password, hosts) = auth_and_hosts(hosts, 26379)?;
            if master.contains(['/', '?', '#', '@']) {
                return Err(format!("`{master}` is not a Sentinel master name"));
            }
            Topology::Sentinel { sentinels: hosts.iter().map(|h| node_url("redis", h)).collect(), master: master.into(), username, password }
        } else if let Some((tls_on, rest)) =
            url.strip_prefix("redis+cluster://").map(|r| (false, r)).or_else(|| url.strip_prefix("rediss+cluster://").map(|r| (true, r)))
        {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err("a Cluster URL lists seed nodes only (Cluster has no databases): redis+cluster://h1:7000,h2:7001".into());
            }
            let (username, password, hosts) = auth_and_hosts(rest, 6379)?;
            let scheme = if tls_on { "rediss" } else { "redis" };
            Topology::Cluster { nodes: hosts.iter().map(|h| node_url(scheme, h)).collect(), tls: tls_on, username, password }
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            redis::Client::open(url).map_err(|e| format!("not a Redis URL ({:?})", e.kind()))?;
            Topology::Single { url: url.to_string() }
        } else {
            return Err(format!("the scheme is none of {}", SCHEMES.join(", ")));
        };
        let target = RedisTarget { url: url.to_string(), topology, tls };
        if !target.tls.is_empty() && !target.uses_tls() {
            return Err("session.tls applies to rediss:// and rediss+cluster:// stores only".into());
        }
        if target.tls.cert_file.is_some() != target.tls.key_file.is_some() {
            return Err("session.tls: cert_file and key_file go together (mutual TLS)".into());
        }
        Ok(target)
    }

    pub fn uses_tls(&self) -> bool {
        match &self.topology {
            Topology::Single { url } => url.starts_with("rediss://"),
            Topology::Cluster { tls, .. } => *tls,
            Topology::Sentinel { .. } => false,
        }
    }

    /// `single`, `sentinel` or `cluster`, for logs and `check`.
    pub fn kind(&self) -> &'static str {
        match self.topology {
            Topology::Single { .. } => "single",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster { .. } => "cluster",
        }
    }

    /// The PEM material of `session.tls`, read and parsed now, so a bad file stops
    /// `check` and start-up rather than the first sign-in.
    pub fn certificates(&self) -> Result<Option<redis::TlsCertificates>, String> {
        if self.tls.is_empty() {
            return Ok(None);
        }
        let read = |key: &str, p: &Path| std::fs::read(p).map_err(|e| format!("session.tls.{key} {}: {e}", p.display()));
        let root_cert = match &self.tls.ca_file {
            Some(p) => {
                let pem = read("ca_file", p)?;
                if pem_certs(&pem) == 0 {
                    return Err(format!("session.tls.ca_file {}: no PEM certificate in it", p.display()));
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => {
                let cert = read("cert_file", c)?;
                if pem_certs(&cert) == 0 {
                    return Err(format!("session.tls.cert_file {}: no PEM certificate in it", c.display()));
                }
                let key = read("key_file", k)?;
                if !pem_key(&key) {
                    return Err(format!("session.tls.key_file {}: no PEM private key in it", k.display()));
                }
                Some(redis::ClientTlsConfig { client_cert: cert, client_key: key })
            }
            _ => None,
        };
        Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
    }
}

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
    pub fn new(target: &RedisTarget, op_timeout: Duration) -> Result<Backend, String> {
        let certs = target.certificates()?;
        if target.uses_tls() {
            crypto_provider();
        }
        let e = |e: redis::RedisError| format!("{}: {e}", super::redis_store::redacted(&target.url));
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

    fn parse(u: &str) -> Result<RedisTarget, String> {
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
            let e = parse(u).unwrap_err();
            assert!(e.contains(why), "{u}: {e}");
            assert!(!e.contains("pw"), "{u}: {e}");
        }
        let tls = TlsFiles { ca_file: Some("ca.pem".into()), ..TlsFiles::default() };
        assert!(RedisTarget::parse("redis://h:6379", tls.clone()).unwrap_err().contains("rediss://"));
        assert!(RedisTarget::parse("rediss://h:6379", tls).is_ok());
        let half = TlsFiles { cert_file: Some("c.pem".into()), ..TlsFiles::default() };
        assert!(RedisTarget::parse("rediss://h:6379", half).unwrap_err().contains("go together"));
    }
}
