//! Upstream identity providers: the registry that finds a token's provider by its
//! issuer, the key sets it keeps fresh, the verification every kind shares, the cache
//! of verified identities, and one file per kind for that kind's dialect and quirks
//! (the `Kind` trait and the kind registry `KINDS` are in `kind.rs`).
//!
//! Order of checks for a bearer token (cheapest and most decisive first): size and
//! shape → header rules (`jwt`) → provider by `iss` → key by `kid` (one rate-limited
//! refetch when unknown) → signature with the key's own algorithm → `exp`/`nbf`/`iat`
//! → the kind's issuer, audience and quirk rules and its mapping to `Identity`.
//! Nothing outside this module knows a provider's claim names.

pub mod auth0;
pub mod azure_b2c;
pub mod claims;
pub mod cognito;
pub mod dev;
pub mod dev_op;
pub mod entra;
pub mod firebase;
pub mod jwks;
pub mod jwt;
pub mod kind;
pub mod logout;
pub mod set;
pub mod okta;
pub mod oidc;

pub use kind::{check_audience, check_audience_or_client, check_issuer_exact, Ctx, Kind, KINDS};

use crate::config::{Config, ProviderSpec};
use crate::identity::{Identity, TokenUse};
use crate::keys::Signer;
use crate::metrics::metrics;
use crate::refusal::Refusal;
use arc_swap::ArcSwap;
use claims::Claims;
use jwks::{Discovery, FetchError, KeySet};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Clock skew accepted on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 60;
/// An unknown `kid` triggers at most one key refetch per provider in this interval.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Maps verified claims with `kind`'s rules, then applies what every kind shares:
/// the provider's `claims:` overrides, `iat`/`exp`, and a subject being present.
fn map_identity(kind: &dyn Kind, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
    let mut id = kind.identity(ctx, c)?;
    claims::apply_overrides(&mut id, c, ctx.spec);
    id.iat = c.i64("iat");
    id.exp = c.i64("exp");
    if id.subject.is_empty() {
        return Err(Refusal::MissingClaim("sub"));
    }
    Ok(id)
}

/// What `/providers` shows and readiness needs.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub discovery: Option<Discovery>,
    pub discovery_fetched: Option<Instant>,
    pub jwks_uri: Option<String>,
    pub last_error: Option<String>,
    pub last_attempt: Option<SystemTime>,
    pub consecutive_failures: u32,
    /// Azure AD B2C: each policy's discovery document (its own authorize, token and
    /// end-session endpoints), by lower-case policy name.
    pub policy_discovery: HashMap<String, Discovery>,
}

/// One configured provider at run time.
pub struct Provider {
    pub spec: Arc<ProviderSpec>,
    pub index: usize,
    /// The kind's rules for this provider (a dev provider's: its shape's).
    kind: Arc<dyn Kind>,
    /// The rules for ID tokens from browser sign-in: audience = our client id.
    login: (Arc<ProviderSpec>, Arc<dyn Kind>),
    keys: ArcSwap<KeySet>,
    status: Mutex<Status>,
    refetch_gate: tokio::sync::Mutex<Option<Instant>>,
    /// The dev provider's own signing key (kind `dev` only).
    pub dev_signer: Option<Arc<Signer>>,
    /// An azure_b2c-shaped dev provider's per-policy keys: (policy, signer).
    pub dev_policy_signers: Vec<(String, Arc<Signer>)>,
}

impl Provider {
    pub fn new(spec: Arc<ProviderSpec>, index: usize) -> Result<Provider, crate::keys::KeyError> {
        let kind = kind::kind_of(&spec).cloned().ok_or_else(|| {
            crate::keys::KeyError::Generate(format!("provider `{}` was not read by a provider kind", spec.id))
        })?;
        let dev_signer = match kind.as_dev() {
            Some(d) => Some(Arc::new(Signer::load(&d.signing_key)?)),
            None => None,
        };
        let mut dev_policy_signers = Vec::new();
        for (policy, path) in kind.as_dev().map(|d| d.policy_keys.as_slice()).unwrap_or_default() {
            dev_policy_signers.push((policy.clone(), Arc::new(Signer::load(path)?)));
        }
        let mut login_spec = (*spec).clone();
        login_spec.audiences = spec.client_id.iter().cloned().collect();
        let login_kind = kind.for_sign_in().unwrap_or_else(|| kind.clone());
        Ok(Provider {
            login: (Arc::new(login_spec), login_kind),
            kind,
            spec,
            index,
            keys: ArcSwap::from_pointee(KeySet::default()),
            status: Mutex::new(Status::default()),
            refetch_gate: tokio::sync::Mutex::new(None),
            dev_signer,
            dev_policy_signers,
        })
    }

    /// A dev provider's signer for `policy` (an azure_b2c-shaped dev provider with
    /// per-policy keys); `None` for a policy it does not serve.
    pub fn dev_policy_signer(&self, policy: &str) -> Option<&Arc<Signer>> {
        self.dev_policy_signers.iter().find(|(p, _)| p.eq_ignore_ascii_case(policy)).map(|(_, s)| s)
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// This provider's kind (its rules, sign-in parameters, dev token shape).
    pub fn kind(&self) -> &dyn Kind {
        &*self.kind
    }

    /// Where discovery is fetched from: `discovery_url`, else below the kind's base.
    pub fn discovery_location(&self) -> String {
        match &self.spec.discovery_url {
            Some(u) => u.clone(),
            None => {
                let base = self.kind.discovery_base(&self.spec);
                format!("{}/.well-known/openid-configuration", base.trim_end_matches('/'))
            }
        }
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.load().keys.is_empty()
    }

    /// Fetches discovery (when due) and the JWKS, replacing the key set on success and
    /// keeping the last good one on failure.
    pub async fn refresh(&self, http: &reqwest::Client) -> Result<usize, FetchError> {
        let result = self.fetch_keys(http).await;
        let m = metrics();
        let id = self.spec.id.as_str();
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt = Some(SystemTime::now());
        match &result {
            Ok(_) => {
                st.last_error = None;
                st.consecutive_failures = 0;
                m.jwks_refresh_total.with_label_values(&[id, "success"]).inc();
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                m.jwks_refresh_total.with_label_values(&[id, e.label()]).inc();
                // A provider served by this very process (dev) is unreachable for the first
                // moments of start-up; only repeated or post-start failures are news.
                if st.consecutive_failures > 2 || self.has_keys() {
                    tracing::warn!(provider = id, error = %e, "jwks refresh failed; keeping last known good keys");
                } else {
                    tracing::debug!(provider = id, error = %e, "jwks fetch failed; retrying");
                }
            }
        }
        drop(st);
        let set = result?;
        let n = set.keys.len();
        m.jwks_keys.with_label_values(&[id]).set(n as i64);
        m.jwks_age_seconds.with_label_values(&[id]).set(0);
        self.keys.store(Arc::new(set));
        Ok(n)
    }

    async fn fetch_keys(&self, http: &reqwest::Client) -> Result<KeySet, FetchError> {
        let template = self.spec.jwks_url.clone().unwrap_or_else(|| self.discovery_location());
        if let Some(locations) = self.kind.key_locations(&template) {
            return self.fetch_merged_keys(http, locations).await;
        }
        let uri = match &self.spec.jwks_url {
            Some(u) => u.clone(),
            None => self.discover(http).await?,
        };
        let set = jwks::fetch_jwks(http, &uri).await?;
        if let Ok(mut st) = self.status.lock() {
            st.jwks_uri = Some(uri);
        }
        Ok(set)
    }

    /// Keys published in several places (the kind's `key_locations`: JWKS URLs when
    /// `jwks_url` is configured, else discovery documents): every set is fetched and
    /// the keys merged, each bound to the policies that publish it
    /// (`jwks::merge_policy_keys`). One failing location fails the refresh, so the last
    /// good merged set stays in use.
    async fn fetch_merged_keys(&self, http: &reqwest::Client, locations: Vec<kind::KeyLocation>) -> Result<KeySet, FetchError> {
        let mut uris: Vec<(String, Option<String>)> = Vec::new();
        let mut by_policy = HashMap::new();
        if self.spec.jwks_url.is_some() {
            uris = locations.into_iter().map(|l| (l.url, l.policy)).collect();
        } else {
            let extra = self.kind.extra_issuers();
            for loc in locations {
                let d = jwks::fetch_discovery(http, &loc.url).await?;
                let ok = d.issuer == self.spec.issuer || extra.contains(&d.issuer);
                if !ok && d.issuer.trim_end_matches('/') != self.spec.issuer.trim_end_matches('/') {
                    return Err(FetchError::IssuerMismatch { found: d.issuer, expected: self.spec.issuer.clone() });
                }
                uris.push((d.jwks_uri.clone(), loc.policy.clone()));
                if let Some(p) = &loc.policy {
                    by_policy.insert(p.to_ascii_lowercase(), d.clone());
                }
                if let Ok(mut st) = self.status.lock() {
                    st.discovery = Some(d);
                    st.discovery_fetched = Some(Instant::now());
                }
            }
        }
        let mut merged = KeySet::default();
        let mut fetched: Vec<String> = Vec::new();
        for (uri, policy) in &uris {
            let set = jwks::fetch_jwks(http, uri).await?;
            jwks::merge_policy_keys(&mut merged, set, policy.as_deref(), uri)?;
            if !fetched.contains(uri) {
                fetched.push(uri.clone());
            }
        }
        if let Ok(mut st) = self.status.lock() {
            st.jwks_uri = Some(fetched.join(" "));
            if !by_policy.is_empty() {
                st.policy_discovery = by_policy;
            }
        }
        Ok(merged)
    }

    /// Discovery, re-fetched every 12 hours; its issuer must be ours.
    async fn discover(&self, http: &reqwest::Client) -> Result<String, FetchError> {
        if let Ok(st) = self.status.lock() {
            if let (Some(d), Some(at)) = (&st.discovery, st.discovery_fetched) {
                if at.elapsed() < Duration::from_secs(12 * 3600) {
                    return Ok(d.jwks_uri.clone());
                }
            }
        }
        let url = self.discovery_location();
        let d = jwks::fetch_discovery(http, &url).await?;
        let expected = self.spec.issuer.as_str();
        if d.issuer.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err(FetchError::IssuerMismatch { found: d.issuer, expected: expected.to_string() });
        }
        let uri = d.jwks_uri.clone();
        if let Ok(mut st) = self.status.lock() {
            st.discovery = Some(d);
            st.discovery_fetched = Some(Instant::now());
        }
        Ok(uri)
    }

    /// Takes over another provider's fetched keys and discovery when both fetch them
    /// from the same place (config reload: no window without keys).
    pub fn adopt_keys(&self, prev: &Provider) {
        let same_source = self.spec.issuer == prev.spec.issuer
            && self.spec.jwks_url == prev.spec.jwks_url
            && self.spec.discovery_url == prev.spec.discovery_url
            && self.spec.kind() == prev.spec.kind();
        if same_source {
            self.keys.store(prev.keys.load_full());
            if let (Ok(mut mine), Ok(theirs)) = (self.status.lock(), prev.status.lock()) {
                *mine = theirs.clone();
            }
        }
    }

    /// Loads a dev provider's keys straight from its signing key (no HTTP), for
    /// commands that run without the server (`token inspect`).
    pub fn install_dev_keys(&self) {
        let one = |s: &Signer| jwks::parse_jwks(serde_json::json!({ "keys": [s.public_jwk()] }).to_string().as_bytes(), "dev").ok();
        if self.dev_policy_signers.is_empty() {
            if let Some(set) = self.dev_signer.as_deref().and_then(one) {
                self.keys.store(Arc::new(set));
            }
            return;
        }
        // Per-policy keys, each bound to its policy as the HTTP refresh binds them.
        let mut merged = KeySet::default();
        for (policy, signer) in &self.dev_policy_signers {
            let Some(set) = one(signer) else { return };
            if jwks::merge_policy_keys(&mut merged, set, Some(policy), "dev").is_err() {
                return;
            }
        }
        self.keys.store(Arc::new(merged));
    }

    /// One refetch for an unknown `kid`: shared by concurrent callers, at most one per
    /// `REFETCH_INTERVAL`.
    async fn refetch(&self, http: &reqwest::Client) {
        let mut last = self.refetch_gate.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.refresh(http).await;
    }
}


/// A verified bearer token, as cached.
#[derive(Debug)]
pub struct Verified {
    pub identity: Identity,
    pub provider: usize,
    pub kid: String,
    pub exp: i64,
    pub token_hash: [u8; 32],
    /// What this identity sends upstream (identity headers, minted tokens), shared by
    /// every credential of the same identity; found on the first request that needs it
    /// and kept as long as the cached verification, so a hot token reaches it without
    /// a shared-cache lookup.
    pub upstream: OnceLock<Arc<crate::identity::Outbound>>,
    /// Hash of what a minted token says about this identity (`identity::identity_key`):
    /// two bearer tokens of the same person share headers and minted tokens.
    pub identity_key: [u8; 32],
    /// For a browser session: the network it began on (adaptive MFA's
    /// `network_change`); `None` for bearer tokens.
    pub network: Option<ipnet::IpNet>,
}

impl Verified {
    pub fn new(identity: Identity, provider: usize, kid: String, exp: i64, token_hash: [u8; 32]) -> Verified {
        let identity_key = crate::identity::identity_key(&identity);
        Verified {
            identity_key,
            identity,
            provider,
            kid,
            exp,
            token_hash,
            upstream: OnceLock::new(),
            network: None,
        }
    }
}

struct ExpireAtExp;

impl moka::Expiry<[u8; 32], Arc<Verified>> for ExpireAtExp {
    fn expire_after_create(&self, _k: &[u8; 32], v: &Arc<Verified>, _now: Instant) -> Option<Duration> {
        Some(Duration::from_secs((v.exp - now_secs()).max(0) as u64))
    }
}

/// A refusal, with the provider it concerns when one was identified.
#[derive(Debug, Clone)]
pub struct VerifyError {
    pub refusal: Refusal,
    pub provider: Option<usize>,
}

/// Every enabled provider, found by issuer.
pub struct Registry {
    pub providers: Vec<Arc<Provider>>,
    by_issuer: HashMap<String, Vec<usize>>,
    /// Entra `{tenantid}` templates: (prefix, suffix, provider).
    templated: Vec<(String, String, usize)>,
    cache: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    /// Tokens refused for reasons that cannot change (bad signature, expired …): a
    /// repeated bad token costs a hash, not a signature check. The provider is the one
    /// whose check refused it (`None`: refused before any provider was chosen, which
    /// holds on every route); a provider's refusal is replayed only on routes that
    /// allow that provider (`replays_on`).
    refused_cache: moka::sync::Cache<[u8; 32], (Refusal, Option<usize>)>,
    /// Per provider: another provider can claim the same issuer (two app
    /// registrations of one tenant, an Entra `{tenantid}` template). A cached answer
    /// about such a provider's token says nothing about its sibling, so it is neither
    /// cached as a refusal nor used to refuse a route that allows only the sibling.
    shares_issuer: Vec<bool>,
    pub http: reqwest::Client,
    /// Unique per registry ever built in this process (keys the per-thread cache).
    generation: usize,
}

impl Registry {
    pub fn new(config: &Config) -> Result<Registry, crate::keys::KeyError> {
        let mut providers = Vec::new();
        let mut by_issuer: HashMap<String, Vec<usize>> = HashMap::new();
        let mut templated = Vec::new();
        for (i, spec) in config.providers.iter().enumerate() {
            let p = Provider::new(spec.clone(), i)?;
            if let Some((prefix, suffix)) = spec.issuer.split_once("{tenantid}") {
                templated.push((prefix.to_string(), suffix.to_string(), i));
            } else {
                by_issuer.entry(spec.issuer.clone()).or_default().push(i);
            }
            for extra in p.kind.extra_issuers() {
                by_issuer.entry(extra).or_default().push(i);
            }
            providers.push(Arc::new(p));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("idfabric/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::keys::KeyError::Generate(format!("http client: {e}")))?;
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.server.verify_cache_entries)
            .expire_after(ExpireAtExp)
            .support_invalidation_closures()
            .build();
        static GENERATION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refused_cache = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(300))
            .build();
        let mut registry = Registry {
            providers,
            by_issuer,
            templated,
            cache,
            refused_cache,
            shares_issuer: Vec::new(),
            http,
            generation,
        };
        registry.shares_issuer = registry.issuer_siblings();
        Ok(registry)
    }

    /// Which providers share an issuer with another (see `shares_issuer`).
    fn issuer_siblings(&self) -> Vec<bool> {
        let mut shared = vec![false; self.providers.len()];
        for iss in self.by_issuer.keys() {
            let c = self.candidates(iss);
            if c.len() > 1 {
                c.iter().for_each(|&i| shared[i] = true);
            }
        }
        if self.templated.len() > 1 {
            self.templated.iter().for_each(|(_, _, i)| shared[*i] = true);
        }
        shared
    }

    /// Whether a remembered refusal from `provider` answers for a route allowing
    /// `allowed`: provider-independent refusals (malformed, unknown issuer) always do; a
    /// provider's own refusal (tenant, policy, audience, signature under its keys) only
    /// where that provider is allowed. Elsewhere the token is judged afresh, which
    /// answers `provider_not_allowed` without a signature check.
    fn replays_on(provider: Option<usize>, allowed: Option<&[usize]>) -> bool {
        match (provider, allowed) {
            (None, _) | (_, None) => true,
            (Some(p), Some(a)) => a.contains(&p),
        }
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.spec.id == id)
    }

    /// Providers whose issuer (or issuer template) matches `iss`.
    fn candidates(&self, iss: &str) -> std::borrow::Cow<'_, [usize]> {
        let exact = self.by_issuer.get(iss).map_or(&[][..], Vec::as_slice);
        let mut templated = self
            .templated
            .iter()
            .filter(|(prefix, suffix, _)| {
                let mid = iss.strip_prefix(prefix.as_str()).and_then(|r| r.strip_suffix(suffix.as_str()));
                mid.is_some_and(|mid| !mid.is_empty() && !mid.contains('/'))
            })
            .map(|(_, _, i)| *i)
            .peekable();
        // Most issuers name one provider exactly: borrowed, nothing allocated.
        if templated.peek().is_none() {
            return std::borrow::Cow::Borrowed(exact);
        }
        std::borrow::Cow::Owned(exact.iter().copied().chain(templated).collect())
    }

    /// Verifies a bearer token, answering from the cache when it can. `allowed` limits
    /// the providers a route accepts (indices); `None` accepts every provider. A token
    /// of a revoked subject or upstream session issued before its revocation is refused
    /// (`revoked`, `crate::deny`), whichever cache answered.
    pub async fn verify(&self, token: &str, allowed: Option<&[usize]>) -> Result<Arc<Verified>, VerifyError> {
        let v = self.verify_signed(token, allowed).await?;
        if let Err(r) = crate::deny::check(&v.identity, v.identity.iat) {
            return Err(self.refused(r, Some(v.provider)));
        }
        Ok(v)
    }

    async fn verify_signed(&self, token: &str, allowed: Option<&[usize]>) -> Result<Arc<Verified>, VerifyError> {
        if token.len() > jwt::MAX_TOKEN_BYTES {
            return Err(self.refused(Refusal::TokenTooLarge, None));
        }
        let me = self.generation;
        if let Some(v) = hot::get(me, token) {
            if self.check_cached(&v, allowed).is_ok() {
                metrics().verify_cache_hits_total.inc();
                return Ok(v);
            }
        }
        let hash = token_hash(token);
        if let Some(v) = self.cache.get(&hash) {
            match self.check_cached(&v, allowed) {
                Ok(()) => {
                    metrics().verify_cache_hits_total.inc();
                    hot::put(me, token, &v);
                    return Ok(v);
                }
                // A sibling on the same issuer may accept the token: judge it afresh.
                Err(Some(Refusal::ProviderNotAllowed)) if self.shares_issuer[v.provider] => {}
                Err(Some(r)) => return Err(self.refused(r, Some(v.provider))),
                Err(None) => self.cache.invalidate(&hash),
            }
        }
        if let Some(r) = self.refused_cache.get(&hash) {
            if Self::replays_on(r.1, allowed) {
                return Err(self.refused(r.0, r.1));
            }
        }
        metrics().verify_cache_misses_total.inc();
        let v = match self.verify_uncached(token, hash, allowed).await {
            Ok(v) => v,
            Err(e) => {
                if is_permanent(&e.refusal) && e.provider.is_none_or(|p| !self.shares_issuer[p]) {
                    self.refused_cache.insert(hash, (e.refusal.clone(), e.provider));
                }
                return Err(e);
            }
        };
        let v = Arc::new(v);
        self.cache.insert(hash, v.clone());
        hot::put(me, token, &v);
        let id = self.providers[v.provider].id();
        metrics().token_validations_total.with_label_values(&[id, "valid", "ok"]).inc();
        Ok(v)
    }

    /// `Err(None)`: the entry is stale (its key left the JWKS) and must be re-verified.
    fn check_cached(&self, v: &Verified, allowed: Option<&[usize]>) -> Result<(), Option<Refusal>> {
        if now_secs() > v.exp + LEEWAY_SECS {
            return Err(Some(Refusal::Expired));
        }
        if !self.providers[v.provider].keys().keys.contains_key(&v.kid) {
            return Err(None);
        }
        if allowed.is_some_and(|a| !a.contains(&v.provider)) {
            return Err(Some(Refusal::ProviderNotAllowed));
        }
        Ok(())
    }

    fn refused(&self, refusal: Refusal, provider: Option<usize>) -> VerifyError {
        let label = provider.map(|i| self.providers[i].id()).unwrap_or("unknown");
        let result = if refusal == Refusal::ProviderUnavailable { "error" } else { "invalid" };
        metrics().token_validations_total.with_label_values(&[label, result, refusal.reason()]).inc();
        VerifyError { refusal, provider }
    }

    async fn verify_uncached(
        &self,
        token: &str,
        hash: [u8; 32],
        allowed: Option<&[usize]>,
    ) -> Result<Verified, VerifyError> {
        let parsed = jwt::parse(token).map_err(|r| self.refused(r, None))?;
        let iss = parsed.claims.str("iss").ok_or_else(|| self.refused(Refusal::MissingClaim("iss"), None))?;
        let candidates = self.candidates(iss);
        if candidates.is_empty() {
            return Err(self.refused(Refusal::UnknownIssuer, None));
        }
        let mut permitted = candidates.iter().copied().filter(|i| allowed.is_none_or(|a| a.contains(i))).peekable();
        if permitted.peek().is_none() {
            return Err(self.refused(Refusal::ProviderNotAllowed, Some(candidates[0])));
        }
        let mut first_err = None;
        for i in permitted {
            match self.verify_with(&self.providers[i], &parsed, hash).await {
                Ok(v) => return Ok(v),
                Err(r) => {
                    first_err.get_or_insert((r, i));
                }
            }
        }
        let (r, i) = first_err.unwrap_or((Refusal::UnknownIssuer, 0));
        Err(self.refused(r, Some(i)))
    }

    async fn verify_with(&self, p: &Provider, parsed: &jwt::Parsed<'_>, hash: [u8; 32]) -> Result<Verified, Refusal> {
        p.kind.precheck(&parsed.header, &parsed.claims)?;
        let kid = parsed.header.kid.as_deref();
        let key = match p.keys().find(kid).cloned() {
            Some(k) => k,
            None => {
                p.refetch(&self.http).await;
                let keys = p.keys();
                match keys.find(kid) {
                    Some(k) => k.clone(),
                    None if keys.keys.is_empty() => return Err(Refusal::ProviderUnavailable),
                    None => return Err(Refusal::UnknownKid),
                }
            }
        };
        jwt::verify_signature(parsed, &key)?;
        let exp = jwt::check_times(&parsed.claims, now_secs(), LEEWAY_SECS)?;
        let ctx = Ctx { spec: &p.spec, kind_label: p.spec.kind(), header: &parsed.header, key: &key };
        let identity = map_identity(&*p.kind, &ctx, &parsed.claims)?;
        Ok(Verified::new(identity, p.index, key.kid.clone(), exp, hash))
    }

    /// Verifies an ID token from browser sign-in at provider `index`: the same rules as
    /// bearer tokens, with `aud` = our client id, plus `nonce` (required, exact), `azp`
    /// (when present, our client id) and `at_hash` (when present, bound to the access token).
    pub async fn verify_id_token(
        &self,
        index: usize,
        id_token: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<(Identity, i64), Refusal> {
        let p = self.providers.get(index).ok_or(Refusal::UnknownIssuer)?;
        let parsed = jwt::parse(id_token)?;
        let iss = parsed.claims.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
        if !self.candidates(iss).contains(&index) {
            return Err(Refusal::IssuerMismatch);
        }
        let kid = parsed.header.kid.as_deref();
        let key = match p.keys().find(kid).cloned() {
            Some(k) => k,
            None => {
                p.refetch(&self.http).await;
                p.keys().find(kid).cloned().ok_or(Refusal::UnknownKid)?
            }
        };
        jwt::verify_signature(&parsed, &key)?;
        let exp = jwt::check_times(&parsed.claims, now_secs(), LEEWAY_SECS)?;
        // A sign-in's ID token must echo its nonce; a refreshed one may omit it but
        // must not carry another (OIDC Core 12.2).
        match (nonce, parsed.claims.str("nonce")) {
            (Some(n), Some(got)) if n == got => {}
            (None, None) => {}
            _ => return Err(Refusal::NonceMismatch),
        }
        let client = p.spec.client_id.as_deref().unwrap_or("");
        if let Some(azp) = parsed.claims.str("azp") {
            if azp != client {
                return Err(Refusal::AudienceMismatch);
            }
        }
        if let (Some(at_hash), Some(at)) = (parsed.claims.str("at_hash"), access_token) {
            if !crate::keys::at_hash_matches(at_hash, at, key.alg) {
                return Err(Refusal::AtHashMismatch);
            }
        }
        let (spec, login_kind) = &p.login;
        let ctx = Ctx { spec, kind_label: p.spec.kind(), header: &parsed.header, key: &key };
        let mut identity = map_identity(&**login_kind, &ctx, &parsed.claims)?;
        identity.token_use = TokenUse::Id;
        Ok((identity, exp))
    }

    /// Verifies without the cache or metrics (for `token inspect`).
    pub async fn inspect(&self, token: &str) -> Result<Verified, VerifyError> {
        let hash = token_hash(token);
        self.verify_uncached(token, hash, None).await
    }

    /// Drops the cached verifications of the identities `revoked` matches (a revoked
    /// subject or upstream session: `crate::revocation`). Their tokens are then verified
    /// afresh, and refused by the deny list until they expire.
    pub fn forget(&self, revoked: impl Fn(&crate::identity::Identity) -> bool + Send + Sync + 'static) {
        let _ = self.cache.invalidate_entries_if(move |_, v| revoked(&v.identity));
    }

    /// Every provider has usable keys.
    pub fn ready(&self) -> bool {
        self.providers.iter().all(|p| p.has_keys())
    }

    /// Per-provider state for the admin listener's `/providers`.
    pub fn status_json(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .providers
            .iter()
            .map(|p| {
                let st = p.status();
                let keys = p.keys();
                let mut kids: Vec<&String> = keys.keys.keys().collect();
                kids.sort();
                serde_json::json!({
                    "id": p.spec.id,
                    "kind": p.spec.kind_name(),
                    "population": p.spec.population,
                    "issuer": p.spec.issuer,
                    "discovery": match (&p.spec.jwks_url, &st.discovery) {
                        (Some(_), _) => "skipped (jwks_url configured)",
                        (None, Some(_)) => "ok",
                        (None, None) => "not fetched",
                    },
                    "jwks_uri": st.jwks_uri,
                    "key_ids": kids,
                    "keys": keys.keys.len(),
                    "jwks_age_seconds": keys.age().map(|d| d.as_secs()),
                    "ready": !keys.keys.is_empty(),
                    "last_error": st.last_error,
                    "consecutive_failures": st.consecutive_failures,
                })
            })
            .collect();
        serde_json::json!({ "providers": list })
    }

    /// Updates the age gauges (called when metrics are scraped).
    pub fn update_gauges(&self) {
        for p in &self.providers {
            let keys = p.keys();
            let age = keys.age().map(|d| d.as_secs() as i64).unwrap_or(-1);
            metrics().jwks_age_seconds.with_label_values(&[p.id()]).set(age);
            metrics().jwks_keys.with_label_values(&[p.id()]).set(keys.keys.len() as i64);
        }
    }

    /// Keeps every provider's keys fresh: quick retries until the first success, then
    /// one refresh per `jwks_refresh` interval. Runs until `stop` resolves.
    pub async fn run_refresher(self: Arc<Self>, mut stop: impl FnMut() -> bool) {
        let mut next: Vec<Instant> = vec![Instant::now(); self.providers.len()];
        let mut backoff: Vec<Duration> = vec![Duration::from_millis(250); self.providers.len()];
        loop {
            if stop() {
                return;
            }
            let now = Instant::now();
            for (i, p) in self.providers.iter().enumerate() {
                if now < next[i] {
                    continue;
                }
                match p.refresh(&self.http).await {
                    Ok(_) => {
                        backoff[i] = Duration::from_millis(250);
                        next[i] = Instant::now() + p.spec.jwks_refresh;
                    }
                    Err(_) => {
                        next[i] = Instant::now() + backoff[i];
                        backoff[i] = (backoff[i] * 2).min(Duration::from_secs(30));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A tiny per-thread front of the verified-identity cache: the last tokens seen on
/// this worker thread, found by exact comparison of the whole token. A repeated token
/// then costs a memcmp instead of a SHA-256 and a shared-cache lookup. Entries are
/// re-checked exactly like shared-cache hits (expiry, key still published, route's
/// providers), and belong to one registry (a reload starts afresh).
mod hot {
    use super::Verified;
    use std::cell::RefCell;
    use std::sync::Arc;

    const SLOTS: usize = 64;

    /// (registry generation, token, verified). The token's buffer is reused by the
    /// next token put in the slot (only verified tokens are put: at most 64 ×
    /// `MAX_TOKEN_BYTES` per thread).
    type Slot = Option<(usize, String, Arc<Verified>)>;

    thread_local! {
        static SLOTS_TL: RefCell<Vec<Slot>> = RefCell::new(vec![None; SLOTS]);
    }

    fn index(token: &str) -> usize {
        // The tail of a JWS is signature bytes: as good as random for spreading.
        let b = token.as_bytes();
        let tail = &b[b.len().saturating_sub(8)..];
        tail.iter().fold(0usize, |acc, x| acc.wrapping_mul(31).wrapping_add(*x as usize)) % SLOTS
    }

    pub fn get(registry: usize, token: &str) -> Option<Arc<Verified>> {
        SLOTS_TL.with(|s| match &s.borrow()[index(token)] {
            Some((r, t, v)) if *r == registry && &**t == token => Some(v.clone()),
            _ => None,
        })
    }

    pub fn put(registry: usize, token: &str, v: &Arc<Verified>) {
        SLOTS_TL.with(|s| match &mut s.borrow_mut()[index(token)] {
            Some((r, t, old)) => {
                *r = registry;
                t.clear();
                t.push_str(token);
                *old = v.clone();
            }
            empty => *empty = Some((registry, token.to_string(), v.clone())),
        });
    }
}

/// Refusals that the same token bytes will always get from the same registry.
/// Key and provider problems (unknown kid, provider unavailable) are transient.
fn is_permanent(r: &Refusal) -> bool {
    matches!(
        r,
        Refusal::Malformed(_)
            | Refusal::AlgNone
            | Refusal::AlgNotAllowed
            | Refusal::UntrustedHeaderKey
            | Refusal::UnknownCrit
            | Refusal::UnknownIssuer
            | Refusal::BadSignature
            | Refusal::Expired
            | Refusal::IssuerMismatch
            | Refusal::AudienceMismatch
            | Refusal::TenantNotAllowed
            | Refusal::WrongTokenUse
            | Refusal::OktaOrgAccessToken
            | Refusal::MissingClaim(_)
            | Refusal::PolicyNotAllowed
            | Refusal::KeyPolicyMismatch
            | Refusal::AnonymousNotAllowed
            | Refusal::SessionCookieNotIdToken
            | Refusal::InvalidSubject
    )
}

pub fn token_hash(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::Registry;

    /// The repository's two dev providers (workforce = 0, customer = 1) with fresh keys,
    /// held in the registry as a running gateway holds them.
    fn two_providers() -> (tempfile::TempDir, crate::config::Config, Registry) {
        let dir = tempfile::tempdir().unwrap();
        crate::keys::generate_dev_set(&dir.path().join("certs"), false, false).unwrap();
        std::fs::create_dir_all(dir.path().join("providers")).unwrap();
        for id in ["dev-workforce", "dev-customer"] {
            let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("providers/{id}.yaml"));
            std::fs::copy(repo, dir.path().join(format!("providers/{id}.yaml"))).unwrap();
        }
        let routes = "listen: { http: 127.0.0.1:8080 }\nproviders: [dev-workforce, dev-customer]\n\
                      routes:\n  - { name: app, upstream: [127.0.0.1:9] }\n";
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        let config = crate::config::load(&dir.path().join("routes.yaml"), super::KINDS).unwrap();
        let registry = Registry::new(&config).unwrap();
        for p in &registry.providers {
            p.install_dev_keys();
        }
        assert_eq!(registry.providers[0].id(), "dev-workforce");
        (dir, config, registry)
    }

    fn reason(r: Result<std::sync::Arc<super::Verified>, super::VerifyError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.refusal.reason(),
        }
    }

    #[test]
    fn cached_answers_hold_only_where_their_provider_is_allowed() {
        let (_dir, config, reg) = two_providers();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (wf, cu): (&[usize], &[usize]) = (&[0], &[1]);
        let mint = |user: &str, ttl: Option<i64>| super::dev_op::mint_tokens(&config, "dev-workforce", user, false, ttl, 1).unwrap().remove(0);
        // A refusal from the workforce provider's own checks (expired under its keys), in
        // both orders of routes, twice each so the second answer comes from the cache.
        let expired = mint("alice", Some(-3600));
        for (allowed, want) in [(Some(wf), "token_expired"), (Some(cu), "provider_not_allowed"), (None, "token_expired")] {
            for _ in 0..2 {
                assert_eq!(reason(rt.block_on(reg.verify(&expired, allowed))), want, "{allowed:?}");
            }
        }
        let forged = {
            let t = mint("bob", None);
            let (rest, sig) = t.rsplit_once('.').unwrap();
            format!("{rest}.{}{}", if sig.starts_with('A') { "B" } else { "A" }, &sig[1..])
        };
        for (allowed, want) in [(Some(cu), "provider_not_allowed"), (Some(wf), "bad_signature"), (Some(cu), "provider_not_allowed")] {
            assert_eq!(reason(rt.block_on(reg.verify(&forged, allowed))), want, "{allowed:?}");
        }
        // A verified token: served where its provider is allowed, refused elsewhere, from the cache too.
        let good = mint("alice", None);
        for (allowed, want) in [(None, "ok"), (Some(cu), "provider_not_allowed"), (Some(wf), "ok"), (Some(cu), "provider_not_allowed")] {
            assert_eq!(reason(rt.block_on(reg.verify(&good, allowed))), want, "{allowed:?}");
        }
        // Provider-independent refusals hold everywhere.
        for allowed in [Some(wf), Some(cu), None] {
            assert_eq!(reason(rt.block_on(reg.verify("not.a.jwt", allowed))), "malformed_token");
        }
        assert!(reg.shares_issuer.iter().all(|s| !s), "the two dev providers have their own issuers");
    }

    #[test]
    fn remembered_refusals_replay_only_where_their_provider_is_allowed() {
        // Provider-independent refusals (malformed, unknown issuer) hold everywhere.
        assert!(Registry::replays_on(None, None));
        assert!(Registry::replays_on(None, Some(&[])));
        assert!(Registry::replays_on(None, Some(&[1])));
        // A provider's refusal: on routes allowing every provider, or that provider.
        assert!(Registry::replays_on(Some(0), None));
        assert!(Registry::replays_on(Some(0), Some(&[0])));
        assert!(Registry::replays_on(Some(0), Some(&[2, 0])));
        // Not on a route that trusts only others: the route judges the token itself.
        assert!(!Registry::replays_on(Some(0), Some(&[1])));
        assert!(!Registry::replays_on(Some(0), Some(&[])));
    }
}
