//! One loaded configuration compiled for the request path: the route table, upstream
//! pools with passive health, the provider registry and the token minter.
//!
//! A `Runtime` is immutable once built; a reload builds a new one and swaps it in
//! (arc-swap), so requests in flight finish on the runtime they started with.

use crate::config::rules::{lower_require, Policy};
use crate::config::{Config, HostMatch, RouteSpec, Upstream, UpstreamOptions, UpstreamTarget};
use crate::identity::Population;
use crate::keys::Signer;
use crate::propagate::Minter;
use crate::providers::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// How long a peer that failed to connect is skipped.
pub const PEER_DOWN_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error("session key {path}: {source}")]
    SessionKeyRead { path: String, source: std::io::Error },
    #[error("session key {path}: must hold exactly 32 bytes, found {found}")]
    SessionKeySize { path: String, found: usize },
    #[error(transparent)]
    Store(#[from] crate::session::StoreError),
}

/// The session store and key named by `session:` in routes.yaml.
fn sessions(config: &Config) -> Result<crate::session::Sessions, BuildError> {
    use crate::session::pending::{Caps, MemoryPending, Pending, RedisPending};
    use crate::session::{memory::MemoryStore, redis_store::RedisStore, SessionKey, Sessions, Store};
    // Sign-ins in progress get their own space: a flood of them never evicts a session.
    let (store, pending): (Arc<dyn Store>, Arc<dyn Pending>) = match &config.session.store {
        crate::config::SessionStore::Memory => (Arc::new(MemoryStore::new(1_000_000)), Arc::new(MemoryPending::new())),
        crate::config::SessionStore::Redis(url) => {
            let redis = Arc::new(RedisStore::new(url)?);
            (redis.clone(), Arc::new(RedisPending { store: redis }))
        }
    };
    let limits = config.session.login_limits;
    let caps = Caps { per_client: limits.per_client, total: limits.total };
    let key = match &config.session.key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|source| BuildError::SessionKeyRead { path: path.display().to_string(), source })?;
            SessionKey::from_bytes(&bytes)
                .ok_or_else(|| BuildError::SessionKeySize { path: path.display().to_string(), found: bytes.len() })?
        }
        None => {
            tracing::warn!("no session.key_file: using a random session key (sessions end on restart)");
            SessionKey::random()
        }
    };
    Ok(Sessions { store, pending, caps, key, idle: config.session.idle, absolute: config.session.ttl })
}

/// Round-robin over a route's upstreams, skipping peers that recently failed.
#[derive(Debug)]
pub struct Pool {
    pub peers: Vec<Upstream>,
    /// Per peer: the resolver of an entry written as a name (`None`: an IP address).
    names: Vec<Option<Arc<crate::dns::Name>>>,
    next: AtomicUsize,
    down_until_ms: Vec<AtomicI64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Pool {
    pub fn new(peers: Vec<Upstream>) -> Pool {
        let down_until_ms = peers.iter().map(|_| AtomicI64::new(0)).collect();
        let names = peers
            .iter()
            .map(|p| match &p.target {
                UpstreamTarget::Name { host, port } => Some(Arc::new(crate::dns::Name::new(host, *port))),
                UpstreamTarget::Addr(_) => None,
            })
            .collect();
        Pool { peers, names, next: AtomicUsize::new(0), down_until_ms }
    }

    /// The address to connect to for peer `i` (a name is resolved: `crate::dns`).
    pub async fn resolve(&self, i: usize, opts: &UpstreamOptions) -> Result<SocketAddr, crate::dns::ResolveError> {
        match (&self.peers[i].target, &self.names[i]) {
            (_, Some(name)) => name.addr(opts.resolve_every, opts.connect_timeout).await,
            (UpstreamTarget::Addr(a), None) => Ok(*a),
            (UpstreamTarget::Name { host, .. }, None) => Err(crate::dns::ResolveError::NoAddress { host: host.clone() }),
        }
    }

    /// How many connection attempts a request may make: one per address of every peer.
    pub fn attempts(&self) -> usize {
        self.names.iter().map(|n| n.as_ref().map_or(1, |n| n.address_count())).sum()
    }

    /// A connection to peer `i` failed: skip it for a while, and a name moves on to its
    /// next address.
    pub fn connect_failed(&self, i: usize) {
        self.mark_down(i);
        if let Some(Some(name)) = self.names.get(i) {
            name.connect_failed();
        }
    }

    /// The next healthy peer; when every peer is marked down, the next one anyway.
    pub fn pick(&self) -> Option<usize> {
        let n = self.peers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if n == 1 {
            return Some(0);
        }
        let now = now_ms();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.down_until_ms[i].load(Ordering::Relaxed) <= now)
            .or(Some(start % n))
    }

    pub fn mark_down(&self, i: usize) {
        if let Some(slot) = self.down_until_ms.get(i) {
            slot.store(now_ms() + PEER_DOWN_FOR.as_millis() as i64, Ordering::Relaxed);
        }
    }
}

/// A route ready for matching and proxying.
#[derive(Debug)]
pub struct CompiledRoute {
    pub spec: RouteSpec,
    pub index: u32,
    /// Indices of accepted providers; `None` = all.
    pub allowed: Option<Vec<usize>>,
    pub default_pool: Option<Pool>,
    pub population_pools: [Option<Pool>; 2],
    /// Route-level plus population-level `require:`, lowered into the rule form
    /// (`config::rules::lower_require`), per population; `None` when the route does not
    /// serve that population.
    reqs: [Option<Policy>; 2],
}

impl CompiledRoute {
    /// The compiled `require:` for an identity of `pop`: the route's, then its
    /// population target's.
    pub fn requirements(&self, pop: Population) -> Option<&Policy> {
        self.reqs[pop.index()].as_ref()
    }

    fn compile_requirements(spec: &RouteSpec, has_default: bool) -> [Option<Policy>; 2] {
        Population::ALL.map(|pop| {
            let mut levels = vec![&spec.require];
            match &spec.by_population {
                None => {}
                Some(targets) => match &targets[pop.index()] {
                    Some(t) => levels.push(&t.require),
                    None if !has_default => return None,
                    None => {}
                },
            }
            Some(lower_require(&levels))
        })
    }

    /// The pool serving `pop` (or the default pool for public requests).
    pub fn pool(&self, pop: Option<Population>) -> Option<&Pool> {
        pop.and_then(|p| self.population_pools[p.index()].as_ref()).or(self.default_pool.as_ref())
    }
}

/// Host + path-prefix matching; the most specific host wins, then the longest prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub routes: Vec<CompiledRoute>,
    exact: HashMap<String, Vec<u32>>,
    wildcard: Vec<(String, Vec<u32>)>,
    any: Vec<u32>,
}

/// `/api` matches `/api` and `/api/x`, never `/apix`; a prefix ending in `/` matches by
/// plain prefix. Case-insensitive (ASCII) unless the route is `case_sensitive`: canonical
/// paths are ASCII (`crate::canon` percent-encodes the rest), so this is the whole fold,
/// and it needs no lower-cased copy of either side.
fn prefix_matches(prefix: &str, case_sensitive: bool, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let (p, b) = (prefix.as_bytes(), path.as_bytes());
    if b.len() < p.len() {
        return false;
    }
    let (head, rest) = b.split_at(p.len());
    let same = if case_sensitive { head == p } else { head.eq_ignore_ascii_case(p) };
    same && (prefix.ends_with('/') || rest.is_empty() || rest[0] == b'/')
}

impl RouteTable {
    pub fn new(routes: Vec<CompiledRoute>) -> RouteTable {
        let mut t = RouteTable { routes, ..Default::default() };
        for r in &t.routes {
            match &r.spec.host {
                HostMatch::Exact(h) => t.exact.entry(h.clone()).or_default().push(r.index),
                HostMatch::Wildcard(s) => match t.wildcard.iter_mut().find(|(w, _)| w == s) {
                    Some((_, v)) => v.push(r.index),
                    None => t.wildcard.push((s.clone(), vec![r.index])),
                },
                HostMatch::Any => t.any.push(r.index),
            }
        }
        let routes = &t.routes;
        let by_prefix_len = |v: &mut Vec<u32>| v.sort_by_key(|i| std::cmp::Reverse(routes[*i as usize].spec.path_prefix.len()));
        t.exact.values_mut().for_each(by_prefix_len);
        t.wildcard.iter_mut().for_each(|(_, v)| by_prefix_len(v));
        by_prefix_len(&mut t.any);
        t.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t
    }

    /// The route for `host` and a canonical path without `;params`
    /// (`crate::canon::CanonPath::route_path`).
    pub fn find(&self, host: &str, path: &str) -> Option<&CompiledRoute> {
        let host = normalise_host(host);
        let pick = |list: &[u32]| {
            list.iter().map(|i| &self.routes[*i as usize]).find(|r| prefix_matches(&r.spec.path_prefix, r.spec.case_sensitive, path))
        };
        if let Some(r) = self.exact.get(host.as_ref()).and_then(|l| pick(l)) {
            return Some(r);
        }
        for (suffix, list) in &self.wildcard {
            if host.ends_with(suffix.as_str()) && host.len() > suffix.len() {
                if let Some(r) = pick(list) {
                    return Some(r);
                }
            }
        }
        pick(&self.any)
    }
}

/// Lower-case host without port (`Api.Example.com:8443` → `api.example.com`); borrows
/// when the host is already in that form (the common case).
pub fn normalise_host(host: &str) -> std::borrow::Cow<'_, str> {
    let h = if host.starts_with('[') {
        host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host)
    } else {
        host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map(|(h, _)| h).unwrap_or(host)
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

/// Everything the request path needs, built from one `Config`.
pub struct Runtime {
    /// Distinguishes runtimes across reloads (metric handle caches key on it).
    pub generation: u64,
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub minter: Option<Minter>,
    pub routes: RouteTable,
    /// Browser sessions (memory or Redis), shared by login, the pipeline and admin.
    pub sessions: Option<Arc<crate::session::Sessions>>,
}

impl Runtime {
    pub fn build(config: Config) -> Result<Runtime, BuildError> {
        let registry = Arc::new(Registry::new(&config)?);
        let minter = match &config.broker {
            Some(b) => Some(
                Minter::new(
                    Arc::new(Signer::load(&b.signing_key)?),
                    &b.issuer,
                    b.identity_token_ttl,
                    config.server.verify_cache_entries,
                )
                .with_retired(&crate::keys::published_retired(&b.signing_key, crate::providers::now_secs())),
            ),
            None => None,
        };
        let index_of: HashMap<&str, usize> =
            config.providers.iter().enumerate().map(|(i, p)| (p.id.as_str(), i)).collect();
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let allowed =
                    spec.providers.as_ref().map(|ids| ids.iter().filter_map(|id| index_of.get(id.as_str()).copied()).collect());
                let pools = spec.by_population.as_ref().map(|bp| {
                    [bp[0].as_ref().map(|t| Pool::new(t.upstreams.clone())), bp[1].as_ref().map(|t| Pool::new(t.upstreams.clone()))]
                });
                CompiledRoute {
                    reqs: CompiledRoute::compile_requirements(spec, !spec.upstreams.is_empty()),
                    index: i as u32,
                    allowed,
                    default_pool: (!spec.upstreams.is_empty()).then(|| Pool::new(spec.upstreams.clone())),
                    population_pools: pools.unwrap_or([None, None]),
                    spec: spec.clone(),
                }
            })
            .collect();
        let sessions = Some(Arc::new(sessions(&config)?));
        static GENERATION: AtomicUsize = AtomicUsize::new(0);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed) as u64;
        Ok(Runtime { generation, registry, minter, routes: RouteTable::new(routes), sessions, config: Arc::new(config) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for cs in [false, true] {
            assert!(prefix_matches("/", cs, "/anything"));
            assert!(prefix_matches("/api", cs, "/api"));
            assert!(prefix_matches("/api", cs, "/api/v1"));
            assert!(!prefix_matches("/api", cs, "/apix"));
            assert!(!prefix_matches("/admin", cs, "/administrator"));
            assert!(!prefix_matches("/admin", cs, "/admin.txt"));
            assert!(prefix_matches("/public/", cs, "/public/x"));
            assert!(!prefix_matches("/public/", cs, "/public"));
            assert!(!prefix_matches("/api", cs, "/ap"));
        }
        assert!(prefix_matches("/admin", false, "/ADMIN/users"));
        assert!(prefix_matches("/Admin", false, "/aDmIn"));
        assert!(!prefix_matches("/admin", false, "/ADMINISTRATOR"));
        assert!(!prefix_matches("/admin", true, "/ADMIN/users"));
        assert!(prefix_matches("/Admin", true, "/Admin/users"));
        // Non-ASCII (never in a canonical path) compares bytewise, without panicking.
        assert!(!prefix_matches("/ab", false, "/\u{e9}x"));
    }

    #[test]
    fn hosts() {
        assert_eq!(normalise_host("Api.Example.com:8443"), "api.example.com");
        assert_eq!(normalise_host("[::1]:80"), "[::1]");
        assert_eq!(normalise_host("example.com."), "example.com");
    }
}
