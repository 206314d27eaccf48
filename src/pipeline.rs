//! The request pipeline without the proxy: credential → verify + normalise → decide.
//!
//! The gateway, forward-auth (`/.idfabric/auth`) and `token inspect` all call these
//! functions, so a decision is made the same way whichever door a request uses.

use crate::config::{AuthMode, CorsPreflight};
use crate::credential::{self, Credential};
use crate::identity::Population;
use crate::policy::{self, Permit};
use crate::providers::Verified;
use crate::refusal::Refusal;
use crate::runtime::{CompiledRoute, Runtime};
use crate::risk::{self, Observed, Signals};
use http::HeaderMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The request may proceed.
#[derive(Debug)]
pub enum Admission {
    /// `auth: none`, or a CORS preflight on a route with `cors_preflight: allow`.
    Public,
    Allowed {
        verified: Arc<Verified>,
        permit: Permit,
        /// Adaptive MFA's signals for this request (audit line); empty elsewhere.
        risk: Signals,
    },
}

impl Admission {
    /// The risk signals that fired (none for public admissions).
    pub fn risk(&self) -> Signals {
        match self {
            Admission::Public => Signals::default(),
            Admission::Allowed { risk, .. } => *risk,
        }
    }

    pub fn verified(&self) -> Option<&Arc<Verified>> {
        match self {
            Admission::Public => None,
            Admission::Allowed { verified, .. } => Some(verified),
        }
    }

    pub fn population(&self) -> Option<Population> {
        self.verified().map(|v| v.identity.population)
    }
}

/// The request is refused.
#[derive(Debug)]
pub struct Denial {
    pub refusal: Refusal,
    /// The provider the credential came from, when known (metrics, logs).
    pub provider: Option<usize>,
    pub population: Option<Population>,
    /// Send the browser here instead (login page, or step-up at the provider).
    pub redirect: Option<String>,
    /// The client is a browser with a session: answer with a page, not problem+json.
    pub html: bool,
    /// The verified identity that was refused (policy refusals), for the audit line.
    pub verified: Option<Arc<Verified>>,
    /// Adaptive MFA's signals (a step-up they caused, for the audit line).
    pub risk: Signals,
}

impl Denial {
    /// A refusal with nothing more known (no identity, no page, no redirect).
    pub fn plain(refusal: Refusal) -> Denial {
        Denial { refusal, provider: None, population: None, redirect: None, html: false, verified: None, risk: Signals::default() }
    }
}

fn login_url(path_and_query: &str, extra: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    format!("/.idfabric/login?{extra}rd={rd}")
}

/// [`admit_from`] for a request whose method is known: a CORS preflight on a route with
/// `cors_preflight: allow` is admitted as public (no credential is read, no identity
/// header is sent), everything else goes to [`admit_from`]. The proxy and forward-auth (with
/// the original method) both ask this, so a preflight passes or not the same way.
pub async fn admit_request(
    rt: &Runtime,
    route: &CompiledRoute,
    method: &http::Method,
    headers: &HeaderMap,
    uri: &http::Uri,
    tls: bool,
    client: Option<IpAddr>,
) -> Result<Admission, Denial> {
    if route.spec.cors_preflight == CorsPreflight::Allow && is_cors_preflight(method, headers) {
        return Ok(Admission::Public);
    }
    admit_from(rt, route, method, headers, uri, tls, client).await
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`
/// (<https://fetch.spec.whatwg.org/#cors-preflight-fetch>). A plain `OPTIONS` without
/// them is an ordinary request.
pub fn is_cors_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Authenticates and authorises one request for `route` from `client` (the client's
/// address, trusted-proxy-aware; it and the device cookie are what adaptive MFA sees,
/// `crate::risk`). `uri` gives the return address after a browser sign-in; `tls` (the
/// request arrived over TLS) picks the one session cookie name accepted
/// (`credential::extract`). `method` and the (canonical) path of `uri` are what a route
/// `policy` sees of the request.
pub async fn admit_from(
    rt: &Runtime,
    route: &CompiledRoute,
    method: &http::Method,
    headers: &HeaderMap,
    uri: &http::Uri,
    tls: bool,
    client: Option<IpAddr>,
) -> Result<Admission, Denial> {
    let pq = || uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = policy::Request::now(method.as_str(), uri.path());
    let mode = route.spec.auth;
    if mode == AuthMode::None {
        return Ok(Admission::Public);
    }
    let seen = Observed {
        client,
        device: route.spec.risk.as_ref().and_then(|_| risk::device::presented(headers, tls)),
        network: None,
    };
    let browser = credential::wants_html(headers);
    let to_login = |r: Refusal| Denial { redirect: browser.then(|| login_url(pq(), "")), ..Denial::plain(r) };
    let cred = credential::extract(headers, &rt.config.session.cookie_name(tls)).map_err(Denial::plain)?;
    let token = match (mode, cred) {
        (AuthMode::Bearer | AuthMode::Either, Credential::Bearer(t)) => t,
        (AuthMode::Bearer, _) => return Err(Denial::plain(Refusal::NoCredential)),
        (AuthMode::Session | AuthMode::Either, Credential::Session(id)) => {
            let verified = session(rt, id).await.map_err(|r| match r {
                Refusal::BadSession => to_login(r),
                other => Denial { html: browser, ..Denial::plain(other) },
            })?;
            // A session is bound to its provider: a route that accepts other providers
            // only sends the browser to sign in with one of those.
            if route.allowed.as_ref().is_some_and(|a| !a.contains(&verified.provider)) {
                return Err(Denial {
                    provider: Some(verified.provider),
                    verified: Some(verified.clone()),
                    ..to_login(Refusal::ProviderNotAllowed)
                });
            }
            let seen = Observed { network: verified.network, ..seen };
            return decide_seen(rt, route, verified, &req, &seen).map_err(|d| step_up(rt, d, browser, pq()));
        }
        (AuthMode::Session, Credential::Bearer(_)) => return Err(to_login(Refusal::NoSession)),
        (AuthMode::Session, Credential::None) => return Err(to_login(Refusal::NoSession)),
        (AuthMode::Either, Credential::None) => return Err(to_login(Refusal::NoCredential)),
        (AuthMode::None, _) => return Ok(Admission::Public),
    };
    let verified = rt
        .registry
        .verify(token, route.allowed.as_deref())
        .await
        .map_err(|e| Denial { provider: e.provider, ..Denial::plain(e.refusal) })?;
    admit_bearer_seen(rt, route, verified, &req, &seen)
}

/// What `admit_from` decides for a bearer token once it is verified: public routes admit
/// without looking, session-only routes refuse it (`missing_session`), a route that
/// does not accept the token's provider refuses it (`provider_not_allowed`), then the
/// policy decides. `token inspect` asks this for every route.
pub fn admit_bearer(rt: &Runtime, route: &CompiledRoute, verified: Arc<Verified>, req: &policy::Request) -> Result<Admission, Denial> {
    admit_bearer_seen(rt, route, verified, req, &Observed::default())
}

/// [`admit_bearer`] with what the request shows besides the token (adaptive MFA).
fn admit_bearer_seen(rt: &Runtime, route: &CompiledRoute, verified: Arc<Verified>, req: &policy::Request, seen: &Observed<'_>) -> Result<Admission, Denial> {
    match route.spec.auth {
        AuthMode::None => return Ok(Admission::Public),
        AuthMode::Session => return Err(Denial::plain(Refusal::NoSession)),
        AuthMode::Bearer | AuthMode::Either => {}
    }
    if route.allowed.as_ref().is_some_and(|a| !a.contains(&verified.provider)) {
        return Err(Denial {
            provider: Some(verified.provider),
            verified: Some(verified.clone()),
            ..Denial::plain(Refusal::ProviderNotAllowed)
        });
    }
    decide_seen(rt, route, verified, req, seen)
}

/// A browser session whose login lacked MFA is sent back to its provider for a second
/// factor where that can work: customers always, workforce when the provider names
/// the `acr` values that prove MFA. Otherwise the refusal stands (a clear page).
fn step_up(rt: &Runtime, mut d: Denial, browser: bool, pq: &str) -> Denial {
    d.html = browser;
    if !browser || !matches!(d.refusal, Refusal::MfaRequired { .. }) {
        return d;
    }
    let Some(p) = d.provider.map(|i| &rt.registry.providers[i]) else { return d };
    if d.population == Some(Population::Customer) || !p.spec.mfa_acr.is_empty() {
        d.redirect = Some(login_url(pq, &format!("step_up=1&provider={}&", p.spec.id)));
    }
    d
}

/// The session behind a cookie as a verified credential. Served from this process's
/// cache of session lookups (`session::cache`, one second at most) when it can be, so a
/// busy browser reuses one `Verified` with its identity headers and minted tokens.
pub async fn session(rt: &Runtime, id: &str) -> Result<Arc<Verified>, Refusal> {
    use crate::session::cache;
    let sessions = rt.sessions.as_ref().ok_or(Refusal::BadSession)?;
    let key = cache::key(id);
    if let Some(v) = cache::get(&key, rt.generation) {
        return Ok(v);
    }
    let ticket = cache::ticket();
    let s = crate::session::session_for(&rt.registry, sessions, id)
        .await
        .map_err(|_| Refusal::SessionStoreUnavailable)?
        .ok_or(Refusal::BadSession)?;
    let provider = rt.registry.by_id(&s.identity.provider).ok_or(Refusal::BadSession)?.index;
    // A session the revocation could not reach in the store (created on another
    // replica while it ran) still ends here: it began before the revocation.
    crate::deny::check_session(&s.identity, s.created_at).map_err(|_| Refusal::BadSession)?;
    // Served from the cache until the upstream tokens need their refresh (which only a
    // store lookup does) or the session's absolute end, whichever comes first.
    let deadline = s.expires_at.min(s.upstream_exp.map_or(i64::MAX, |e| e - 60));
    let mut identity = s.identity;
    crate::session::carry_mfa(&mut identity, s.mfa);
    let mut verified = Verified::new(identity, provider, String::new(), s.expires_at, key);
    verified.network = s.network.as_deref().and_then(|n| n.parse().ok());
    let verified = Arc::new(verified);
    cache::put(key, rt.generation, verified.clone(), deadline, ticket);
    Ok(verified)
}

/// The policy step alone, for a verified credential and the request's method, path and
/// time. On an adaptive route the risk signals are those of a request that shows
/// nothing else (no client address, no device cookie).
pub fn decide(rt: &Runtime, route: &CompiledRoute, verified: Arc<Verified>, req: &policy::Request) -> Result<Admission, Denial> {
    decide_seen(rt, route, verified, req, &Observed::default())
}

/// [`decide`] with what the request shows besides the credential: on an adaptive route
/// (`route.spec.risk`) the risk signals are assessed first and counted
/// (`idfabric_risk_signals_total`, and `idfabric_risk_stepups_total` when they are
/// why the answer is a step-up).
fn decide_seen(rt: &Runtime, route: &CompiledRoute, verified: Arc<Verified>, req: &policy::Request, seen: &Observed<'_>) -> Result<Admission, Denial> {
    let id = &verified.identity;
    let signals = match &route.spec.risk {
        Some(spec) => {
            let key = rt.sessions.as_ref().map(|s| s.key.device());
            risk::assess(spec, key, id, seen, req.method, req.path)
        }
        None => Signals::default(),
    };
    let req = &policy::Request { signals, ..*req };
    let deny = |refusal| Denial {
        refusal,
        provider: Some(verified.provider),
        population: Some(id.population),
        redirect: None,
        html: false,
        verified: Some(verified.clone()),
        risk: signals,
    };
    let Some(reqs) = route.requirements(id.population) else {
        return Err(deny(Refusal::PopulationNotAllowed(id.population.to_string())));
    };
    let mfa_acr = &rt.registry.providers[verified.provider].spec.mfa_acr;
    let decided = policy::decide_request(id, reqs, route.spec.policy.as_deref(), req, mfa_acr);
    // A step-up on an adaptive route is the signals' doing when one is uncovered (a
    // customer: `mfa: adaptive` or `risk: low` asks for nothing else).
    let stepped_up =
        id.population == Population::Customer && signals.step_up() && matches!(decided, Err(Refusal::MfaRequired { .. }));
    risk::count(signals, stepped_up);
    match decided {
        Ok(permit) => Ok(Admission::Allowed { verified: verified.clone(), permit, risk: signals }),
        Err(r) => Err(deny(r)),
    }
}

// ---------------------------------------------------------------------------------
// Explanations (`token inspect`, `/.idfabric/me?explain=1`): one route's decision for
// a verified credential, with every condition that decided it. Not on the request path.

/// One route's decision, explained: each lowered `require:` condition and each
/// `policy:` rule with its result for this identity and request, then the decision
/// the proxy makes. Names configured values and reasons, never a credential.
#[derive(Debug, serde::Serialize)]
pub struct Explanation {
    pub route: String,
    /// The request judged: its method, canonical path and the host it was asked for.
    pub method: String,
    pub path: String,
    /// The route's `require:` (route level, then the population target's) as the one
    /// rule it is lowered into, its `criteria` being the `require.*` conditions in the
    /// order they are checked; `null` when the route does not serve the population.
    pub require: Option<policy::lang::Step>,
    /// Every `policy:` rule (deny rules first) with its result; absent without `policy:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyExplanation>,
    /// `allow`, `deny`, `step_up`, `challenge` or `error` (as `Refusal::decision`).
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `ok`, `public` (`auth: none`), or the refusal's reason.
    pub reason: &'static str,
    /// For a person: what the reason means here.
    pub detail: String,
}

#[derive(Debug, serde::Serialize)]
pub struct PolicyExplanation {
    pub rules: Vec<policy::lang::Step>,
}

/// [`Explanation`] of `route` for `verified` and a request of `method` on the canonical
/// `path`, now; `session`: the credential is a browser session (routes with `auth:
/// bearer` do not take one) rather than a bearer token.
pub fn explain(rt: &Runtime, route: &CompiledRoute, verified: &Arc<Verified>, method: &str, path: &str, session: bool) -> Explanation {
    let req = &policy::Request::now(method, path);
    let id = &verified.identity;
    // The lowered `require:` is one allow rule (`lang::lower_require`).
    let require = route.requirements(id.population).and_then(|r| r.explain(id, req).into_iter().next()).map(|mut step| {
        step.rule = "require".into();
        step
    });
    let policy = route.spec.policy.as_ref().map(|p| PolicyExplanation { rules: p.explain(id, req) });
    let (decision, status, reason, detail) = match admit_verified(rt, route, verified, req, session) {
        Ok(Admission::Public) => ("allow", None, "public", "public route (auth: none): no credential is looked at".to_string()),
        Ok(Admission::Allowed { .. }) => ("allow", None, "ok", "every condition holds".to_string()),
        Err(d) if d.refusal == Refusal::NoSession => {
            ("deny", Some(d.refusal.status()), d.refusal.reason(), "session route: bearer tokens are not accepted".to_string())
        }
        Err(d) => (d.refusal.decision().as_str(), Some(d.refusal.status()), d.refusal.reason(), d.refusal.to_string()),
    };
    Explanation {
        route: route.spec.name.clone(),
        method: req.method.to_string(),
        path: req.path.to_string(),
        require,
        policy,
        decision,
        status,
        reason,
        detail,
    }
}

/// What [`admit_from`] decides once the credential is verified: [`admit_bearer`] for a
/// token; for a session, the same steps as `admit_from` takes for one (without the
/// browser's redirects).
fn admit_verified(rt: &Runtime, route: &CompiledRoute, verified: &Arc<Verified>, req: &policy::Request, session: bool) -> Result<Admission, Denial> {
    if !session {
        return admit_bearer(rt, route, verified.clone(), req);
    }
    match route.spec.auth {
        AuthMode::None => Ok(Admission::Public),
        AuthMode::Bearer => Err(Denial::plain(Refusal::NoCredential)),
        AuthMode::Session | AuthMode::Either if route.allowed.as_ref().is_some_and(|a| !a.contains(&verified.provider)) => {
            Err(Denial::plain(Refusal::ProviderNotAllowed))
        }
        AuthMode::Session | AuthMode::Either => decide(rt, route, verified.clone(), req),
    }
}
