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
    exact: HashMap<String, Candidates>,
    /// By suffix with its leading dot (`*.example.com` → `.example.com`).
    wildcard: HashMap<String, Candidates>,
    any: Candidates,
}

/// The routes of one host match, indexed by the first segment of their path prefix, so
/// a lookup among a thousand prefixes costs one hash instead of a thousand comparisons.
/// Each list is in the order prefixes are tried: longest first.
#[derive(Debug, Default)]
struct Candidates {
    /// Lower-cased first segment of the prefix (`/API/v1` → `api`) → routes.
    by_segment: HashMap<String, Vec<u32>>,
    /// Prefixes without a first segment (`/`): candidates for every path.
    every: Vec<u32>,
}

/// The first segment of a canonical path or prefix, the key of [`Candidates`]:
/// `/api/v1` → `api`, `/api` → `api`, `/` → `` (none).
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

impl Candidates {
    fn push(&mut self, route: &CompiledRoute) {
        match first_segment(&route.spec.path_prefix) {
            "" => self.every.push(route.index),
            seg => self.by_segment.entry(seg.to_ascii_lowercase()).or_default().push(route.index),
        }
    }

    fn sort(&mut self, routes: &[CompiledRoute]) {
        let by_prefix_len = |v: &mut Vec<u32>| v.sort_by_key(|i| std::cmp::Reverse(routes[*i as usize].spec.path_prefix.len()));
        self.by_segment.values_mut().for_each(by_prefix_len);
        by_prefix_len(&mut self.every);
    }

    /// The first route, longest prefix first, whose prefix matches `path`. A prefix can
    /// only match a path with the same first segment (case folded: case-sensitive routes
    /// are checked exactly by `prefix_matches`), or any path when it has none. Prefixes
    /// are canonical (`//x` is refused at load), so the only one without a first segment
    /// is `/`, shorter than every indexed one: the indexed list, then `every`, is the
    /// longest-first order.
    fn pick<'r>(&self, routes: &'r [CompiledRoute], path: &str) -> Option<&'r CompiledRoute> {
        let indexed: &[u32] = match self.by_segment.is_empty() {
            true => &[],
            false => self.segment_list(first_segment(path)),
        };
        indexed.iter().chain(&self.every).map(|i| &routes[*i as usize]).find(|r| prefix_matches(&r.spec.path_prefix, r.spec.case_sensitive, path))
    }

    fn segment_list(&self, seg: &str) -> &[u32] {
        if seg.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.by_segment.get(seg.to_ascii_lowercase().as_str()).map_or(&[], Vec::as_slice);
        }
        self.by_segment.get(seg).map_or(&[], Vec::as_slice)
    }
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
            let list = match &r.spec.host {
                HostMatch::Exact(h) => t.exact.entry(h.clone()).or_default(),
                HostMatch::Wildcard(s) => t.wildcard.entry(s.clone()).or_default(),
                HostMatch::Any => &mut t.any,
            };
            list.push(r);
        }
        let routes = &t.routes;
        t.exact.values_mut().chain(t.wildcard.values_mut()).for_each(|c| c.sort(routes));
        t.any.sort(routes);
        t
    }

    /// The route for `host` and a canonical path without `;params`
    /// (`crate::canon::CanonPath::route_path`): the exact host's routes, then each
    /// wildcard whose suffix ends the host, longest suffix first, then any-host routes;
    /// within each, the longest matching path prefix.
    pub fn find(&self, host: &str, path: &str) -> Option<&CompiledRoute> {
        let host = normalise_host(host);
        let routes = self.routes.as_slice();
        if let Some(r) = self.exact.get(host.as_ref()).and_then(|c| c.pick(routes, path)) {
            return Some(r);
        }
        if !self.wildcard.is_empty() {
            // `*.example.com` matches any host ending in `.example.com` with at least one
            // label before it; trying the host's own suffixes left to right is trying the
            // wildcards longest first.
            let dots = host.bytes().enumerate().skip(1).filter(|(_, b)| *b == b'.').map(|(i, _)| i);
            for i in dots {
                if let Some(r) = self.wildcard.get(&host[i..]).and_then(|c| c.pick(routes, path)) {
                    return Some(r);
                }
            }
        }
        self.any.pick(routes, path)
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

    /// The route table's indexes (first path segment, wildcard suffix) pick the route a
    /// linear walk in the documented order picks: exact host, wildcards longest suffix
    /// first, any host; within each, longest prefix first, config order on ties.
    #[test]
    fn indexed_lookup_picks_what_a_linear_walk_picks() {
        use proptest::prelude::*;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("providers")).unwrap();
        let mut yaml = String::from("listen: { http: 127.0.0.1:8080 }\nproviders: []\nroutes:\n");
        let hosts = ["", "a.example", "b.a.example", "*.a.example", "*.example", "*.b.a.example", "x.test"];
        let prefixes = ["/", "/api", "/api/", "/API/v1", "/api/v1", "/admin", "/Admin/x", "/p1/", "/p2", "/a.b", "/static/"];
        let mut n = 0;
        for (hi, h) in hosts.iter().enumerate() {
            for (pi, p) in prefixes.iter().enumerate() {
                // A spread of the combinations, some case-sensitive.
                if (hi + pi) % 3 == 0 {
                    continue;
                }
                let host = if h.is_empty() { String::new() } else { format!("host: \"{h}\", ") };
                let cs = if (hi * pi) % 4 == 1 { ", case_sensitive: true" } else { "" };
                yaml.push_str(&format!(
                    "  - {{ name: r{n}, match: {{ {host}path_prefix: \"{p}\" }}, auth: none, upstream: [127.0.0.1:1]{cs} }}\n"
                ));
                n += 1;
            }
        }
        std::fs::write(d.path().join("routes.yaml"), &yaml).unwrap();
        let config = crate::config::load(&d.path().join("routes.yaml"), crate::providers::KINDS).expect("config");
        let rt = Runtime::build(config).expect("runtime");
        let table = &rt.routes;

        let linear = |host: &str, path: &str| -> Option<u32> {
            let host = normalise_host(host);
            let ordered = |pred: &dyn Fn(&HostMatch) -> bool| {
                let mut v: Vec<&CompiledRoute> = table.routes.iter().filter(|r| pred(&r.spec.host)).collect();
                v.sort_by_key(|r| std::cmp::Reverse(r.spec.path_prefix.len()));
                v.into_iter().find(|r| prefix_matches(&r.spec.path_prefix, r.spec.case_sensitive, path)).map(|r| r.index)
            };
            if let Some(i) = ordered(&|m| matches!(m, HostMatch::Exact(h) if *h == host)) {
                return Some(i);
            }
            let mut suffixes: Vec<&String> = table
                .routes
                .iter()
                .filter_map(|r| match &r.spec.host {
                    HostMatch::Wildcard(s) => Some(s),
                    _ => None,
                })
                .collect();
            suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
            suffixes.dedup();
            for s in suffixes {
                if host.ends_with(s.as_str()) && host.len() > s.len() {
                    if let Some(i) = ordered(&|m| matches!(m, HostMatch::Wildcard(w) if w == s)) {
                        return Some(i);
                    }
                }
            }
            ordered(&|m| matches!(m, HostMatch::Any))
        };

        // Not vacuous: the grid below reaches many different routes.
        let mut seen = std::collections::HashSet::new();
        for h in ["a.example", "b.a.example", "c.b.a.example", "z.example", "x.test", "other"] {
            for p in ["/", "/api", "/api/x", "/API/v1/y", "/admin", "/Admin/x", "/p1/q", "/p2", "/a.b", "/static/s"] {
                seen.insert(table.find(h, p).map(|r| r.index));
            }
        }
        assert!(seen.len() > 20, "only {} routes reached", seen.len());

        let host = prop::sample::select(vec![
            "a.example", "A.Example:443", "b.a.example", "c.b.a.example", "z.example", "example", "x.test", "other", "a.example.",
        ]);
        let seg = prop::sample::select(vec!["api", "API", "Api", "v1", "admin", "Admin", "x", "p1", "p2", "a.b", "static", ""]);
        let path = prop::collection::vec(seg, 0..4).prop_map(|v| format!("/{}", v.join("/")));
        proptest!(ProptestConfig { cases: 4000, ..ProptestConfig::default() }, |(h in host, p in path)| {
            prop_assert_eq!(table.find(h, &p).map(|r| r.index), linear(h, &p), "{} {}", h, p);
        });
    }

    #[test]
    fn hosts() {
        assert_eq!(normalise_host("Api.Example.com:8443"), "api.example.com");
        assert_eq!(normalise_host("[::1]:80"), "[::1]");
        assert_eq!(normalise_host("example.com."), "example.com");
    }
}
