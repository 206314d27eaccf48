//! `session.store` as a Redis URL, with its `session.tls` files: parsed and checked at
//! load, so what `check` accepts also starts. The session store connects to what this
//! describes.

use std::path::{Path, PathBuf};

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

/// Why `session.store` or `session.tls` cannot be used. No message repeats a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("a Sentinel URL names its master: redis+sentinel://h1:26379,h2:26379/<master>")]
    SentinelMaster,
    #[error("`{0}` is not a Sentinel master name")]
    MasterName(String),
    #[error("a Cluster URL lists seed nodes only (Cluster has no databases): redis+cluster://h1:7000,h2:7001")]
    ClusterPath,
    /// The redis crate's error kind (never the URL).
    #[error("not a Redis URL ({0})")]
    NotRedis(String),
    #[error("the scheme is none of {}", SCHEMES.join(", "))]
    Scheme,
    #[error("session.tls applies to rediss:// and rediss+cluster:// stores only")]
    TlsWithoutTls,
    #[error("session.tls: cert_file and key_file go together (mutual TLS)")]
    HalfClientCert,
    #[error("an empty entry in the list of host:port")]
    EmptyHost,
    #[error("`{0}` is not host:port")]
    NotHostPort(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("session.tls.{key} {}: {source}", path.display())]
    Read { key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("session.tls.{key} {}: no PEM certificate in it", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("session.tls.key_file {}: no PEM private key in it", path.display())]
    NoKey { path: PathBuf },
    /// The client refused the target; `url` is redacted.
    #[error("{url}: {source}")]
    Client { url: String, source: redis::RedisError },
}

/// `user:pass@h1:p1,h2:p2` → (username, password, hosts), each host checked as
/// `host:port` (IPv6 in brackets) with `default_port` when none is given.
#[allow(clippy::type_complexity)]
fn auth_and_hosts(s: &str, default_port: u16) -> Result<(Option<String>, Option<String>, Vec<(String, u16)>), StoreUrlError> {
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
            return Err(StoreUrlError::EmptyHost);
        }
        let u = url::Url::parse(&format!("redis://{h}")).map_err(|_| StoreUrlError::NotHostPort(h.into()))?;
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(other) => other.to_string(),
            None => return Err(StoreUrlError::NoHost(h.into())),
        };
        if u.path() != "" && u.path() != "/" || u.query().is_some() || !u.username().is_empty() {
            return Err(StoreUrlError::NotHostPort(h.into()));
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
    pub fn parse(url: &str, tls: TlsFiles) -> Result<RedisTarget, StoreUrlError> {
        let topology = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, master) = rest
                .rsplit_once('/')
                .filter(|(_, m)| !m.is_empty())
                .ok_or(StoreUrlError::SentinelMaster)?;
            let (username, password, hosts) = auth_and_hosts(hosts, 26379)?;
            if master.contains(['/', '?', '#', '@']) {
                return Err(StoreUrlError::MasterName(master.into()));
            }
            Topology::Sentinel { sentinels: hosts.iter().map(|h| node_url("redis", h)).collect(), master: master.into(), username, password }
        } else if let Some((tls_on, rest)) =
            url.strip_prefix("redis+cluster://").map(|r| (false, r)).or_else(|| url.strip_prefix("rediss+cluster://").map(|r| (true, r)))
        {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err(StoreUrlError::ClusterPath);
            }
            let (username, password, hosts) = auth_and_hosts(rest, 6379)?;
            let scheme = if tls_on { "rediss" } else { "redis" };
            Topology::Cluster { nodes: hosts.iter().map(|h| node_url(scheme, h)).collect(), tls: tls_on, username, password }
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            redis::Client::open(url).map_err(|e| StoreUrlError::NotRedis(format!("{:?}", e.kind())))?;
            Topology::Single { url: url.to_string() }
        } else {
            return Err(StoreUrlError::Scheme);
        };
        let target = RedisTarget { url: url.to_string(), topology, tls };
        if !target.tls.is_empty() && !target.uses_tls() {
            return Err(StoreUrlError::TlsWithoutTls);
        }
        if target.tls.cert_file.is_some() != target.tls.key_file.is_some() {
            return Err(StoreUrlError::HalfClientCert);
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
    pub fn certificates(&self) -> Result<Option<redis::TlsCertificates>, StoreUrlError> {
        if self.tls.is_empty() {
            return Ok(None);
        }
        let read = |key: &'static str, p: &Path| std::fs::read(p).map_err(|source| StoreUrlError::Read { key, path: p.into(), source });
        let root_cert = match &self.tls.ca_file {
            Some(p) => {
                let pem = read("ca_file", p)?;
                if pem_certs(&pem) == 0 {
                    return Err(StoreUrlError::NoCertificate { key: "ca_file", path: p.clone() });
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => {
                let cert = read("cert_file", c)?;
                if pem_certs(&cert) == 0 {
                    return Err(StoreUrlError::NoCertificate { key: "cert_file", path: c.clone() });
                }
                let key = read("key_file", k)?;
                if !pem_key(&key) {
                    return Err(StoreUrlError::NoKey { path: k.clone() });
                }
                Some(redis::ClientTlsConfig { client_cert: cert, client_key: key })
            }
            _ => None,
        };
        Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
    }
}
