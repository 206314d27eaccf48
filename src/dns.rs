//! Upstream names (`app.internal:8080`, `https://api.example.com`) resolved while
//! serving, so an upstream whose address changes (a Kubernetes Service recreated, a
//! cloud load balancer that moves) is followed without a reload.
//!
//! Resolution goes through the system resolver (`getaddrinfo`, via
//! `tokio::net::lookup_host`): it honours `/etc/hosts`, `nsswitch.conf` and the
//! cluster's search domains, but does not report record TTLs. Addresses are therefore
//! kept for the route's `resolve_every` (default 30 s) instead of the TTL. After that the
//! next request still uses them while one background lookup refreshes them
//! (stale-while-revalidate: no request waits on DNS once a name has resolved), and a
//! failed refresh keeps the old addresses for another period, with a log line. Only the
//! first request for a name waits for its lookup, bounded by the connect timeout.
//!
//! A name with several addresses is used one address at a time; a connect failure
//! moves on to the next address and makes the next request refresh the name.
//!
//! A name that has never resolved is looked up by one request at a time, and a failed
//! lookup is remembered for a few seconds: while the resolver is down, requests get
//! their 502 at once instead of each starting a lookup (each of which holds a thread of
//! the blocking pool until the resolver gives up).

use arc_swap::ArcSwapOption;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a name gave no address. The messages name the host (from the configuration),
/// never request data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("`{host}` does not resolve: {why}")]
    Lookup { host: String, why: String },
    #[error("`{host}` resolves to no address")]
    NoAddress { host: String },
    #[error("`{host}` did not resolve within {limit:?}")]
    TimedOut { host: String, limit: Duration },
}

/// One upstream name and the addresses it last resolved to.
#[derive(Debug)]
pub struct Name {
    host: String,
    port: u16,
    cache: ArcSwapOption<Resolved>,
    /// A background refresh is running (one per name at a time).
    refreshing: AtomicBool,
    /// Held by the request doing the first lookup.
    first: tokio::sync::Mutex<()>,
    /// The last failed first lookup, answered again for `NEGATIVE_FOR`.
    failed: std::sync::Mutex<Option<(Instant, ResolveError)>>,
}

/// How long a failed first lookup is answered without asking again (at most the
/// route's `resolve_every`).
const NEGATIVE_FOR: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Resolved {
    addrs: Vec<SocketAddr>,
    at: Instant,
    /// Which address requests use now.
    next: AtomicUsize,
    /// Set by a connect failure: refresh at the next request.
    suspect: AtomicBool,
}

impl Resolved {
    fn new(addrs: Vec<SocketAddr>, next: usize) -> Resolved {
        Resolved { addrs, at: Instant::now(), next: AtomicUsize::new(next), suspect: AtomicBool::new(false) }
    }

    fn current(&self) -> SocketAddr {
        self.addrs[self.next.load(Ordering::Relaxed) % self.addrs.len()]
    }
}

impl Name {
    pub fn new(host: &str, port: u16) -> Name {
        Name {
            host: host.to_string(),
            port,
            cache: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            first: tokio::sync::Mutex::new(()),
            failed: std::sync::Mutex::new(None),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The address to connect to now. Waits (at most `limit`, behind any other request
    /// doing the same) only when the name has never resolved; otherwise answers from
    /// the cache and, when the addresses are older than `every` or one failed,
    /// refreshes them in the background.
    pub async fn addr(self: &Arc<Self>, every: Duration, limit: Duration) -> Result<SocketAddr, ResolveError> {
        if let Some(r) = self.cache.load_full() {
            let due = r.at.elapsed() >= every || r.suspect.load(Ordering::Relaxed);
            if due && !self.refreshing.swap(true, Ordering::AcqRel) {
                let me = self.clone();
                tokio::spawn(async move {
                    me.refresh(limit).await;
                    me.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(r.current());
        }
        let _first = self.first.lock().await;
        if let Some(r) = self.cache.load_full() {
            return Ok(r.current());
        }
        if let Some((at, e)) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if at.elapsed() < every.min(NEGATIVE_FOR) {
                return Err(e.clone());
            }
        }
        match self.lookup(limit).await {
            Ok(addrs) => {
                let r = Arc::new(Resolved::new(addrs, 0));
                let addr = r.current();
                self.cache.store(Some(r));
                Ok(addr)
            }
            Err(e) => {
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// How many addresses the name has now (1 before it first resolved).
    pub fn address_count(&self) -> usize {
        self.cache.load().as_ref().map_or(1, |r| r.addrs.len())
    }

    /// A connection to the current address failed: use the next one, and resolve the
    /// name again at the next request.
    pub fn connect_failed(&self) {
        if let Some(r) = self.cache.load().as_ref() {
            r.next.fetch_add(1, Ordering::Relaxed);
            r.suspect.store(true, Ordering::Relaxed);
        }
    }

    async fn refresh(&self, limit: Duration) {
        let old = self.cache.load_full();
        match self.lookup(limit).await {
            Ok(addrs) => {
                // Keep going round the same addresses when they did not change.
                let next = old.filter(|o| o.addrs == addrs).map_or(0, |o| o.next.load(Ordering::Relaxed));
                self.cache.store(Some(Arc::new(Resolved::new(addrs, next))));
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream name refresh failed: keeping its last addresses");
                if let Some(o) = old {
                    let kept = Resolved::new(o.addrs.clone(), o.next.load(Ordering::Relaxed));
                    self.cache.store(Some(Arc::new(kept)));
                }
            }
        }
    }

    async fn lookup(&self, limit: Duration) -> Result<Vec<SocketAddr>, ResolveError> {
        let host = || self.host.clone();
        let found = tokio::time::timeout(limit, tokio::net::lookup_host((self.host.as_str(), self.port)))
            .await
            .map_err(|_| ResolveError::TimedOut { host: host(), limit })?
            .map_err(|e| ResolveError::Lookup { host: host(), why: e.to_string() })?;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for a in found {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            return Err(ResolveError::NoAddress { host: host() });
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_and_failures_rotate() {
        let n = Arc::new(Name::new("localhost", 8080));
        let a = n.addr(Duration::from_secs(30), Duration::from_secs(5)).await.unwrap();
        assert!(a.ip().is_loopback() && a.port() == 8080, "{a}");
        let count = n.address_count();
        n.connect_failed();
        let b = n.addr(Duration::from_secs(30), Duration::from_secs(5)).await.unwrap();
        if count > 1 {
            assert_ne!(a, b, "a failed address is not used again at once");
        }
    }

    async fn settle(n: &Name) {
        for _ in 0..100 {
            if !n.refreshing.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the refresh never finished");
    }

    #[tokio::test]
    async fn addresses_older_than_resolve_every_are_refreshed_in_the_background() {
        let n = Arc::new(Name::new("localhost", 8080));
        let every = Duration::from_millis(50);
        n.addr(every, Duration::from_secs(5)).await.unwrap();
        let first = n.cache.load_full().unwrap().at;
        tokio::time::sleep(every).await;
        // Due: answered from the cache at once, refreshed behind it.
        n.addr(every, Duration::from_secs(5)).await.unwrap();
        settle(&n).await;
        assert!(n.cache.load_full().unwrap().at > first, "the name was resolved again");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_addresses() {
        let n = Arc::new(Name::new("upstream.invalid", 80));
        let known: SocketAddr = "10.0.0.9:80".parse().unwrap();
        n.cache.store(Some(Arc::new(Resolved::new(vec![known], 0))));
        n.connect_failed(); // due now
        assert_eq!(n.addr(Duration::from_secs(30), Duration::from_secs(5)).await.unwrap(), known);
        settle(&n).await;
        let kept = n.cache.load_full().unwrap();
        assert_eq!(kept.addrs, vec![known]);
        assert!(!kept.suspect.load(Ordering::Relaxed), "kept for another period, not retried at every request");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_error_not_a_panic() {
        // RFC 6761 §6.4: `.invalid` never resolves.
        let n = Arc::new(Name::new("upstream.invalid", 80));
        let e = n.addr(Duration::from_secs(30), Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("upstream.invalid"), "{e}");
        // Remembered: the next request gets the same answer without a lookup.
        let at = n.failed.lock().unwrap().as_ref().map(|(at, _)| *at).expect("the failure is remembered");
        let again = n.addr(Duration::from_secs(30), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(again.to_string(), e.to_string());
        assert_eq!(n.failed.lock().unwrap().as_ref().map(|(at, _)| *at), Some(at), "no second lookup");
    }
}
