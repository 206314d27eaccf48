//! Browser sign-in (the relying-party side): home-realm discovery, the authorization
//! code flow with PKCE S256 + `state` + `nonce`, the callback that creates a session,
//! step-up, refresh and logout.
//!
//! Endpoints take a plain `web::Request` and return a `web::Reply`; the gateway only
//! copies them to the wire. ID tokens are verified by the same registry code as bearer
//! tokens (`Registry::verify_id_token`), so a provider's quirks apply to both doors.
//! Open redirects are impossible: the return path `rd` is a path (never a URL) and the
//! host is the one the browser used, which must be a configured route host or the
//! host of a parked request (a broker sign-in returns to its resume path and offers the
//! providers the parked request hands over in its [`crate::session::SignInOffer`]; sign-in knows
//! nothing else of the broker).
//!
//! A sign-in is bound to the browser that started it (`binding`: a nonce cookie per
//! transaction), starting sign-ins is rate limited per client (`throttle`) and what is
//! parked meanwhile is capped (`crate::session::pending`). Signing out is a POST from this
//! site's own pages; a GET only asks.

mod failure;
pub mod handoff;
pub mod throttle;

pub use crate::journey::Journey;
pub use failure::Failure;
use crate::journey::ErrorTurn;

use crate::config::HostMatch;
use crate::identity::{Population, TokenUse};
use crate::metrics::metrics;
use crate::providers::{now_secs, Provider};
use crate::runtime::{CompiledRoute, Runtime};
use crate::session::{LoginTxn, Session, Sessions, StoreError};
use crate::upstream::{endpoints, endpoints_for, exchange_for};
use crate::web::pages::{self, Branding, PageLink, ProviderButton, Theme};
use crate::web::{self, binding, clear_session_cookies, pkce_challenge, random, Reply, Request};
use serde_json::Value;
use std::sync::Arc;

/// Remembers the provider last chosen on the home-realm discovery page.
pub const IDP_COOKIE: &str = "idfabric_idp";


/// The paths [`handle`] serves.
pub const PATHS: &[&str] = &[
    "/.idfabric/login",
    "/.idfabric/callback",
    "/.idfabric/logout",
    "/.idfabric/logged-out",
    "/.idfabric/session",
    handoff::START,
    handoff::REDEEM,
];

/// Serves `/.idfabric/login`, `/callback`, `/logout`, `/logged-out`, `/session` and the
/// session handoff between hosts (`/session-handoff`, `/session-handoff/start`).
pub async fn handle(rt: &Runtime, req: &Request<'_>) -> Reply {
    let Some(sessions) = rt.sessions.clone() else {
        return page(rt, req, 501, "Sign-in is not configured", "This gateway has no session store.", Failure::SignInUnavailable);
    };
    match req.path {
        "/.idfabric/login" => match throttled(rt, req, "login") {
            Some(refused) => refused,
            None => login(rt, &sessions, req).await,
        },
        "/.idfabric/callback" => {
            let state = req.param("state").unwrap_or_default();
            let reply = callback(rt, &sessions, req, &state).await;
            // The binding cookie is cleared whatever the outcome.
            match binding::cookie_name("ltx", &state, req.tls) {
                Some(name) => reply.with_cookie(binding::clear_cookie(&name, req.tls)),
                None => reply,
            }
        }
        "/.idfabric/logout" => logout(rt, &sessions, req).await,
        // Each accepted token makes a session: limited per client like sign-in starts.
        "/.idfabric/session" => match throttle_wait(rt, req, "session") {
            Some(wait) => {
                let mut r = session_problem(429, Failure::SignInRateLimited, "Too many sessions were requested from your network; try again later.");
                r.headers.push(("retry-after", wait.to_string()));
                r
            }
            None => session_from_id_token(rt, &sessions, req).await,
        },
        // Each start may write a code: limited per client like sign-in starts.
        handoff::START => match throttled(rt, req, "handoff") {
            Some(refused) => refused,
            None => handoff::start(rt, &sessions, req).await,
        },
        handoff::REDEEM => handoff::redeem(rt, &sessions, req).await,
        "/.idfabric/logged-out" => {
            let theme = theme_for(rt, req.host, "/");
            Reply::html(200, pages::logged_out_page(&theme, "/.idfabric/login"), "ok")
        }
        _ => Reply::problem(&crate::refusal::Refusal::NoRoute),
    }
}

/// The per-client limit on starting sign-ins (`session.login_limits.rate_per_minute`):
/// a 429 page with `Retry-After` once the client's bucket is empty. Shared with the
/// broker's `/authorize`.
pub fn throttled(rt: &Runtime, req: &Request<'_>, endpoint: &'static str) -> Option<Reply> {
    let wait = throttle_wait(rt, req, endpoint)?;
    let detail = format!("Too many sign-ins were started from your network. Please try again in {wait} seconds.");
    let mut r = page(rt, req, 429, "Too many sign-in attempts", &detail, Failure::SignInRateLimited);
    r.headers.push(("retry-after", wait.to_string()));
    Some(r)
}

/// Takes one sign-in start from the client's budget; the seconds to wait when it is spent.
fn throttle_wait(rt: &Runtime, req: &Request<'_>, endpoint: &'static str) -> Option<u64> {
    let wait = throttle::admit(&req.client_key(), rt.config.session.login_limits.rate_per_minute).err()?;
    metrics().sign_in_rate_limited_total.with_label_values(&[endpoint]).inc();
    tracing::info!(endpoint, client = req.client_key(), retry_after = wait, "sign-in start refused: rate limit");
    Some(wait)
}

/// Counts sign-ins dropped from the pending space (capped or expired) as `abandoned`
/// in the login funnel; `tags` are `{provider}:{journey}` (empty for parked broker
/// requests).
pub fn count_abandoned(rt: &Runtime, tags: &[String]) {
    for tag in tags.iter().filter(|t| !t.is_empty()) {
        let (id, journey) = Journey::from_tag(tag);
        if let Some(p) = rt.registry.by_id(id) {
            funnel(p, journey, "abandoned");
        }
    }
}

/// An authorization endpoint of the usual shape, for asking a kind which journeys it
/// offers before its discovery document is loaded (Cognito's sign-up page is found
/// beside it).
const AUTHZ_PROBE: &str = "https://provider.invalid/oauth2/authorize";

/// Whether `p` offers `journey` for browser sign-in.
pub fn offers(p: &Provider, journey: Journey) -> bool {
    p.kind().journey(&p.spec, journey, AUTHZ_PROBE, None).is_some()
}

/// The journeys `p` offers (the funnel's series for it).
pub fn offered_journeys(p: &Provider) -> Vec<Journey> {
    Journey::ALL.into_iter().filter(|j| offers(p, *j)).collect()
}

fn page(rt: &Runtime, req: &Request<'_>, status: u16, title: &str, detail: &str, reason: Failure) -> Reply {
    let reason = reason.as_str();
    let theme = theme_for(rt, req.host, "/");
    tracing::info!(status, reason, host = req.host, path = req.path, "sign-in refused");
    Reply::html(status, pages::error_page(&theme, status, title, detail, Some("/.idfabric/login")), reason)
}

/// A return path that can only stay on this host: `/…`, never `//…`, `/\…` or a URL.
pub fn safe_rd(rd: Option<&str>) -> Option<String> {
    let rd = rd.unwrap_or("/");
    let ok = rd.starts_with('/')
        && !rd.starts_with("//")
        && !rd.starts_with("/\\")
        && !rd.contains('\\')
        && rd.len() <= 2048
        && !rd.chars().any(|c| c.is_control());
    ok.then(|| rd.to_string())
}

fn route_for<'a>(rt: &'a Runtime, host: &str, rd: &str) -> Option<&'a CompiledRoute> {
    let path = rd.split('?').next().unwrap_or("/");
    rt.routes.find(host, path).filter(|r| !matches!(r.spec.host, HostMatch::Any) || !rt.routes.routes.is_empty())
}

/// The look of pages for a request to `host` + `rd`: the route's population and branding.
pub fn theme_for(rt: &Runtime, host: &str, rd: &str) -> Theme {
    let route = route_for(rt, host, rd);
    let providers = route.map(|r| login_providers(rt, r)).unwrap_or_default();
    theme_with(route, &providers)
}

/// The look of pages for a sign-in offering `providers` on `route`: the route's
/// population, else workforce when every provider is a workforce one.
fn theme_with(route: Option<&CompiledRoute>, providers: &[&Arc<Provider>]) -> Theme {
    let population = match route.and_then(|r| r.spec.require.population) {
        Some(p) => p,
        None if !providers.is_empty() && providers.iter().all(|p| p.spec.population == Population::Workforce) => {
            Population::Workforce
        }
        None => Population::Customer,
    };
    Theme { population, branding: route.map(|r| r.spec.branding.clone()).unwrap_or_default() }
}

/// The providers a parked request hands to the sign-in returning to `rd` on `host` (a
/// broker `/authorize` waiting for sign-in), when `rd` is that request's resume path;
/// `None` when `rd` names no such request (the route's providers apply).
async fn offered<'a>(rt: &'a Runtime, sessions: &Sessions, host: &str, rd: &str) -> Result<Option<Vec<&'a Arc<Provider>>>, StoreError> {
    let Some(txn) = rd.split_once('?').and_then(|(_, query)| web::param(query, "txn")) else { return Ok(None) };
    let Some(offer) = crate::session::parked_offer(&*sessions.pending, &txn).await? else { return Ok(None) };
    if offer.rd != rd || offer.host != crate::runtime::normalise_host(host) {
        return Ok(None);
    }
    Ok(Some(offer.providers.iter().filter_map(|id| rt.registry.by_id(id)).collect()))
}

/// The providers and look of a sign-in returning to `rd` on `host`: what a parked
/// request offers, else the route's; `None` when neither exists.
async fn sign_in_options<'a>(rt: &'a Runtime, sessions: &Sessions, host: &str, rd: &str) -> Result<Option<(Vec<&'a Arc<Provider>>, Theme)>, StoreError> {
    // On the sign-in host, a sign-in for another host's handoff: that host's route.
    if let Some((host, rd)) = handoff::signs_in_for(rt, host, rd) {
        let Some(route) = route_for(rt, &host, &rd) else { return Ok(None) };
        let providers = login_providers(rt, route);
        let theme = theme_with(Some(route), &providers);
        return Ok(Some((providers, theme)));
    }
    let route = route_for(rt, host, rd);
    let providers = match (offered(rt, sessions, host, rd).await?, route) {
        (Some(p), _) => p,
        (None, Some(route)) => login_providers(rt, route),
        (None, None) => return Ok(None),
    };
    let theme = theme_with(route, &providers);
    Ok(Some((providers, theme)))
}

/// Providers that can sign a browser in on `route`: accepted by the route, of the
/// route's population, with a client id and an authorization endpoint.
fn login_providers<'a>(rt: &'a Runtime, route: &CompiledRoute) -> Vec<&'a Arc<Provider>> {
    rt.registry
        .providers
        .iter()
        .filter(|p| route.allowed.as_ref().is_none_or(|a| a.contains(&p.index)))
        .filter(|p| route.spec.require.population.is_none_or(|pop| pop == p.spec.population))
        .filter(|p| {
            route.spec.by_population.as_ref().is_none_or(|bp| bp[p.spec.population.index()].is_some() || !route.spec.upstreams.is_empty())
        })
        .filter(|p| p.spec.client_id.is_some() && (p.dev_signer.is_some() || p.spec.jwks_url.is_none()))
        .collect()
}

fn funnel(p: &Provider, journey: Journey, stage: &str) {
    metrics().login_funnel_total.with_label_values(&[p.spec.population.as_str(), p.id(), journey.as_str(), stage]).inc();
}

/// The Azure AD B2C policy a route names for its sign-ins (`b2c_policy:`); on the
/// sign-in host, the policy of the route the handoff returns to.
fn route_policy<'a>(rt: &'a Runtime, host: &str, rd: &str) -> Option<&'a str> {
    let route = match handoff::signs_in_for(rt, host, rd) {
        Some((host, rd)) => route_for(rt, &host, &rd),
        None => route_for(rt, host, rd),
    };
    route.and_then(|r| r.spec.b2c_policy.as_deref())
}

async fn login(rt: &Runtime, sessions: &Sessions, req: &Request<'_>) -> Reply {
    let Some(rd) = safe_rd(req.input("rd").as_deref()) else {
        return page(rt, req, 400, "Invalid return address", "The address to return to after sign-in must be a path on this site.", Failure::InvalidRd);
    };
    // With a sign-in host, other hosts hand the sign-in to it, except to resume a
    // parked broker request (its offer of providers is kept on this host).
    if let Some(auth) = handoff::auth_host_for(rt, req.host) {
        match offered(rt, sessions, req.host, &rd).await {
            Ok(Some(_)) => {}
            Ok(None) if route_for(rt, req.host, &rd).is_none() => {
                return page(rt, req, 404, "Unknown site", "No application is configured at this address.", Failure::NoRoute)
            }
            Ok(None) => return handoff::begin(auth, req, &rd),
            Err(e) => return store_down(theme_for(rt, req.host, &rd).population, &e),
        }
    }
    // A parked request (a broker sign-in) offers its own providers, else the route's.
    let (providers, theme) = match sign_in_options(rt, sessions, req.host, &rd).await {
        Ok(Some(found)) => found,
        Ok(None) => return page(rt, req, 404, "Unknown site", "No application is configured at this address.", Failure::NoRoute),
        Err(e) => return store_down(theme_for(rt, req.host, &rd).population, &e),
    };
    // A page that needs a second factor asks for step-up; a link may ask for another
    // journey (`journey=signup|reset|profile`).
    let journey = match (req.input("step_up").as_deref() == Some("1"), req.input("journey")) {
        (true, _) => Journey::Stepup,
        (false, None) => Journey::Signin,
        (false, Some(j)) => match Journey::requested(&j) {
            Some(j) => j,
            None => return page(rt, req, 400, "Unknown sign-in option", "The sign-in link asks for something this site does not offer.", Failure::UnknownJourney),
        },
    };
    let policy = route_policy(rt, req.host, &rd);
    // The broker's `prompt=login` / `max_age`: ask the provider for a new sign-in.
    let fresh = req.input("prompt").as_deref() == Some("login");
    if providers.is_empty() {
        return page(rt, req, 501, "No sign-in available", "No identity provider of this application supports browser sign-in.", Failure::SignInUnavailable);
    }
    let chosen = req.input("provider").and_then(|id| providers.iter().find(|p| p.spec.id == id).copied());
    if let Some(p) = chosen {
        return start(rt, sessions, req, p, &rd, None, journey, policy, fresh).await;
    }
    if !matches!(journey, Journey::Signin | Journey::Stepup) {
        // Another journey without a chosen provider: the one provider that offers it,
        // else the choice (each provider's links say what it offers).
        let offering: Vec<&Arc<Provider>> = providers.iter().copied().filter(|p| offers(p, journey)).collect();
        match offering.as_slice() {
            [] => return page(rt, req, 404, "Not available", "None of this application's sign-in options offers that.", Failure::JourneyNotOffered),
            [p] => return start(rt, sessions, req, p, &rd, None, journey, policy, fresh).await,
            _ => {}
        }
    }
    if let Some(email) = req.input("email").filter(|e| !e.trim().is_empty()) {
        let email = email.trim().to_string();
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
        return match providers.iter().find(|p| p.spec.domains.iter().any(|d| *d == domain)) {
            Some(p) => start(rt, sessions, req, p, &rd, Some(&email), journey, policy, fresh).await,
            None => {
                let buttons = buttons(&providers, None, &rd);
                let body = pages::login_page(&pages::LoginPage {
                    theme: &theme,
                    rd: &rd,
                    providers: &buttons,
                    show_email: true,
                    remembered: None,
                    error: Some("No sign-in is configured for that email domain. Choose an option below."),
                    email: Some(&email),
                });
                Reply::html(400, body, Failure::UnknownDomain.as_str())
            }
        };
    }
    if providers.len() == 1 {
        return start(rt, sessions, req, providers[0], &rd, None, journey, policy, fresh).await;
    }
    let remembered = req.cookie(IDP_COOKIE).filter(|id| providers.iter().any(|p| p.spec.id == *id));
    let buttons = buttons(&providers, remembered, &rd);
    let show_email = providers.iter().any(|p| !p.spec.domains.is_empty());
    let body = pages::login_page(&pages::LoginPage {
        theme: &theme,
        rd: &rd,
        providers: &buttons,
        show_email,
        remembered,
        error: None,
        email: None,
    });
    Reply::html(200, body, "ok")
}

/// Buttons for providers not reached by email domain (customer sign-in options), plus
/// the remembered provider whatever its kind, so "last used" is one click; each with
/// links to the other journeys its provider offers (create an account, reset a
/// password, edit a profile).
fn buttons(providers: &[&Arc<Provider>], remembered: Option<&str>, rd: &str) -> Vec<ProviderButton> {
    providers
        .iter()
        .filter(|p| {
            p.spec.domains.is_empty() || p.spec.population == Population::Customer || Some(p.spec.id.as_str()) == remembered
        })
        .map(|p| ProviderButton {
            id: p.spec.id.clone(),
            label: p.spec.display_name.clone(),
            population: p.spec.population,
            links: journey_links(p, rd),
        })
        .collect()
}

/// `/.idfabric/login?provider=…&journey=…&rd=…` for each journey besides sign-in that
/// `p` offers.
fn journey_links(p: &Provider, rd: &str) -> Vec<PageLink> {
    [(Journey::Signup, "Create an account"), (Journey::Reset, "Forgot your password?"), (Journey::Profile, "Edit your profile")]
        .into_iter()
        .filter(|(j, _)| offers(p, *j))
        .map(|(j, label)| {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("provider", &p.spec.id)
                .append_pair("journey", j.as_str())
                .append_pair("rd", rd)
                .finish();
            PageLink { label, href: format!("/.idfabric/login?{query}"), journey: j.as_str() }
        })
        .collect()
}

/// Starts `journey` at `p`: parks the pending sign-in (with its journey and, for Azure
/// AD B2C, its policy) and sends the browser to the page the provider runs it on.
#[allow(clippy::too_many_arguments)]
async fn start(
    rt: &Runtime,
    sessions: &Sessions,
    req: &Request<'_>,
    p: &Provider,
    rd: &str,
    hint: Option<&str>,
    journey: Journey,
    route_policy: Option<&str>,
    fresh: bool,
) -> Reply {
    let default_authz = endpoints(p).and_then(|d| d.authorization_endpoint);
    let Some(how) = p.kind().journey(&p.spec, journey, default_authz.as_deref().unwrap_or(AUTHZ_PROBE), route_policy) else {
        let detail = format!("{} does not offer this here.", p.spec.display_name);
        return page(rt, req, 404, "Not available", &detail, Failure::JourneyNotOffered);
    };
    funnel(p, journey, "started");
    let authz = match (&how.endpoint, &how.policy) {
        (Some(other_page), _) if default_authz.is_some() => Some(other_page.clone()),
        (Some(_), _) => None,
        (None, Some(policy)) => endpoints_for(p, Some(policy)).and_then(|d| d.authorization_endpoint),
        (None, None) => default_authz,
    };
    let Some(authz) = authz else {
        funnel(p, journey, "callback_error");
        return Reply::html(
            503,
            pages::error_page(&default_theme(p.spec.population), 503, "Identity provider unavailable", "Its discovery document has not been loaded; try again shortly.", Some("/.idfabric/login")),
            Failure::ProviderUnavailable.as_str(),
        );
    };
    let (state, nonce, verifier) = (random(binding::ID_BYTES), random(24), random(48));
    let bind = binding::new();
    let txn = LoginTxn {
        provider: p.spec.id.clone(),
        nonce: nonce.clone(),
        pkce_verifier: verifier.clone(),
        rd: rd.to_string(),
        host: req.host.to_string(),
        created_at: now_secs(),
        step_up: journey == Journey::Stepup,
        browser: bind.digest,
        journey,
        policy: how.policy.clone(),
    };
    match sessions.begin_login(&state, &txn, &req.client_key()).await {
        Ok(parked) => {
            metrics().login_pending.set(parked.held as i64);
            count_abandoned(rt, &parked.evicted);
        }
        Err(e) => return store_down(p.spec.population, &e),
    }
    let Ok(mut url) = url::Url::parse(&authz) else {
        return Reply::html(502, pages::error_page(&default_theme(p.spec.population), 502, "Identity provider misconfigured", "Its authorization endpoint is not a URL.", None), Failure::ProviderMisconfigured.as_str());
    };
    let mut scopes = p.spec.scopes.clone();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", p.spec.client_id.as_deref().unwrap_or_default())
            .append_pair("redirect_uri", &format!("{}/.idfabric/callback", req.origin()))
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(h) = hint {
            q.append_pair("login_hint", h);
            for (k, v) in p.kind().hint_params(h) {
                q.append_pair(k, &v);
            }
        }
        for (k, v) in &p.spec.authorize_params {
            q.append_pair(k, v);
        }
        for (k, v) in &how.params {
            q.append_pair(k, v);
        }
        if fresh && !how.params.iter().any(|(k, _)| *k == "prompt") {
            q.append_pair("prompt", "login");
        }
    }
    funnel(p, journey, "provider_redirect");
    let remember = web::cookie(IDP_COOKIE, &p.spec.id, Some(30 * 24 * 3600), req.tls);
    let name = binding::cookie_name("ltx", &state, req.tls).expect("a state of ours names a cookie");
    let bound = binding::set_cookie(&name, &bind.nonce, TXN_COOKIE_SECS, req.tls);
    Reply::redirect(url.as_str(), "ok").with_cookie(remember).with_cookie(bound)
}

/// How long the browser keeps a login's binding cookie: the transaction's lifetime.
const TXN_COOKIE_SECS: i64 = 600;

fn default_theme(population: Population) -> Theme {
    Theme { population, branding: Branding::default() }
}

fn store_down(population: Population, e: &StoreError) -> Reply {
    tracing::warn!(error = %e, "session store unavailable: refusing new sign-ins");
    Reply::html(
        503,
        pages::error_page(&default_theme(population), 503, "Sign-in is temporarily unavailable", "The session service cannot be reached. Please try again in a moment.", Some("/.idfabric/login")),
        Failure::SessionStoreUnavailable.as_str(),
    )
}

fn failed(p: Option<&Provider>, journey: Journey, theme: &Theme, status: u16, title: &str, detail: &str, reason: Failure) -> Reply {
    let reason = reason.as_str();
    if let Some(p) = p {
        funnel(p, journey, "callback_error");
        metrics().logins_total.with_label_values(&[p.id(), p.spec.population.as_str(), "failure"]).inc();
    }
    tracing::info!(provider = p.map(|p| p.id()).unwrap_or("unknown"), status, reason, "sign-in failed");
    Reply::html(status, pages::error_page(theme, status, title, detail, Some("/.idfabric/login")), reason)
}

async fn callback(rt: &Runtime, sessions: &Sessions, req: &Request<'_>, state: &str) -> Reply {
    let theme = theme_for(rt, req.host, "/");
    // Taken (used up) before anything else: a callback URL works once, whoever follows it.
    let txn = match sessions.finish_login(state).await {
        Ok(Some(t)) if binding::plausible_id(state) => t,
        Ok(_) => {
            return failed(None, Journey::Signin, &theme, 400, "This sign-in has expired", "The sign-in link was already used or is too old. Please start again.", Failure::InvalidState)
        }
        Err(e) => return store_down(theme.population, &e),
    };
    let Some(p) = rt.registry.by_id(&txn.provider).cloned() else {
        return failed(None, Journey::Signin, &theme, 400, "Sign-in failed", "The identity provider is no longer configured.", Failure::UnknownProvider);
    };
    let theme = match sign_in_options(rt, sessions, req.host, &txn.rd).await {
        Ok(Some((_, theme))) => theme,
        // The look only: without the offer, the route's (the sign-in goes on).
        Ok(None) | Err(_) => theme_for(rt, req.host, &txn.rd),
    };
    if txn.host != req.host {
        return failed(Some(&p), txn.journey, &theme, 400, "Sign-in failed", "The sign-in returned to a different site than it started on.", Failure::HostMismatch);
    }
    // Only the browser that started this sign-in may finish it; anyone else's session
    // (the victim's, in a login CSRF) is left exactly as it was.
    let name = binding::cookie_name("ltx", state, req.tls);
    match binding::check(req, name.as_deref(), &txn.browser) {
        binding::Presented::Bound => {}
        binding::Presented::Missing => {
            return failed(Some(&p), txn.journey, &theme, 403, "This sign-in was started elsewhere", "This browser did not start this sign-in, so it was not completed. If you started it, sign in again from the application.", Failure::StateNotBound)
        }
        binding::Presented::Mismatch => {
            return failed(Some(&p), txn.journey, &theme, 403, "This sign-in was started elsewhere", "This browser did not start this sign-in, so it was not completed. If you started it, sign in again from the application.", Failure::LoginCsrf)
        }
    }
    // RFC 9207: an `iss` in the response must name the provider this sign-in went to,
    // and must be there when the provider says it always sends one.
    let discovered = endpoints_for(&p, txn.policy.as_deref());
    let iss_required = discovered.as_ref().is_some_and(|d| d.authorization_response_iss_parameter_supported);
    let expected_iss = discovered.map(|d| d.issuer).unwrap_or_else(|| p.spec.issuer.clone());
    if req.param("iss").map_or(iss_required, |iss| iss != expected_iss) {
        return failed(Some(&p), txn.journey, &theme, 400, "Sign-in failed", "The response names another identity provider than the one the sign-in was sent to.", Failure::IssuerMismatch);
    }
    if let Some(err) = req.param("error") {
        match p.kind().callback_error(txn.journey, &err, req.param("error_description").as_deref()) {
            Some(ErrorTurn::Start(next)) => {
                tracing::info!(provider = p.id(), from = txn.journey.as_str(), to = next.as_str(), "sign-in: the provider handed over to another journey");
                return start(rt, sessions, req, &p, &txn.rd, None, next, None, false).await;
            }
            Some(ErrorTurn::BackToSignIn) => {
                funnel(&p, txn.journey, "callback_error");
                tracing::info!(provider = p.id(), journey = txn.journey.as_str(), "sign-in: the user cancelled; back to the sign-in");
                let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("rd", &txn.rd).finish();
                return Reply::redirect(&format!("/.idfabric/login?{query}"), Failure::JourneyCancelled.as_str());
            }
            None => {}
        }
        let (status, reason) = if err == "access_denied" { (403, Failure::AccessDenied) } else { (401, Failure::ProviderError) };
        let detail = format!("The identity provider answered: {}.", err.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>());
        return failed(Some(&p), txn.journey, &theme, status, "Sign-in was not completed", &detail, reason);
    }
    let Some(code) = req.param("code").filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return failed(Some(&p), txn.journey, &theme, 400, "Sign-in failed", "The identity provider sent no authorization code.", Failure::MissingCode);
    };
    let redirect_uri = format!("{}/.idfabric/callback", req.origin());
    let tokens = match exchange_for(&rt.registry.http, &p, txn.policy.as_deref(), &[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &redirect_uri),
        ("code_verifier", &txn.pkce_verifier),
    ])
    .await
    {
        Ok(t) => t,
        Err(e) => return failed(Some(&p), txn.journey, &theme, 502, "Sign-in failed", &e.to_string(), Failure::TokenExchangeFailed),
    };
    let Some(id_token) = tokens.get("id_token").and_then(Value::as_str) else {
        return failed(Some(&p), txn.journey, &theme, 502, "Sign-in failed", "The identity provider returned no ID token.", Failure::MissingIdToken);
    };
    let access = tokens.get("access_token").and_then(Value::as_str);
    let (mut identity, exp) = match rt.registry.verify_id_token(p.index, id_token, Some(&txn.nonce), access).await {
        Ok(v) => v,
        Err(r) => return failed(Some(&p), txn.journey, &theme, 401, "Sign-in failed", &r.to_string(), Failure::IdToken(r)),
    };
    let userinfo = endpoints_for(&p, txn.policy.as_deref()).and_then(|d| d.userinfo_endpoint);
    if let Err(e) = crate::providers::oidc::complete_from_userinfo(&rt.registry.http, &p, userinfo, &mut identity, id_token, access).await {
        return failed(Some(&p), txn.journey, &theme, 502, "Sign-in failed", &e.to_string(), Failure::from(&e));
    }
    if txn.step_up && !identity.mfa {
        return failed(Some(&p), txn.journey, &theme, 403, "Second factor not completed", "This page requires multi-factor authentication, and the identity provider did not confirm it.", Failure::MfaNotCompleted);
    }
    funnel(&p, txn.journey, "callback_ok");
    identity.token_use = TokenUse::Session;
    let refresh = tokens.get("refresh_token").and_then(Value::as_str).map(|r| sessions.key.seal(r, &identity.sub));
    let mfa = identity.mfa;
    let sub = identity.sub.clone();
    let mut session = Session {
        identity,
        created_at: 0,
        expires_at: 0,
        upstream_exp: Some(exp),
        refresh_token: refresh,
        id_token: Some(id_token.to_string()),
        mfa,
        touched_at: 0,
        network: crate::risk::session_network(req.client),
    };
    if session.refresh_token.is_none() {
        // Without a refresh token the session cannot outlive what the provider vouched for.
        session.upstream_exp = Some(exp);
    }
    let old = req.cookie(&rt.config.session.cookie_name(req.tls)).map(str::to_string);
    if let Some(old) = old {
        // A step-up must be completed by the person who was already signed in.
        if txn.step_up {
            if let Ok(Some(prev)) = sessions.load(&old).await {
                if prev.identity.sub != session.identity.sub {
                    return failed(Some(&p), txn.journey, &theme, 403, "Signed in as someone else", "The second factor was completed for a different account than the one signed in here.", Failure::StepUpUserMismatch);
                }
            }
        }
        let _ = sessions.destroy(&old).await;
    }
    let id = match sessions.create(session).await {
        Ok(id) => id,
        Err(e) => return store_down(p.spec.population, &e),
    };
    funnel(&p, txn.journey, "session_created");
    metrics().logins_total.with_label_values(&[p.id(), p.spec.population.as_str(), "success"]).inc();
    let cookie = web::set_session_cookie(&rt.config.session, &id, sessions.absolute.as_secs() as i64, req.tls);
    let reply = Reply::redirect(&txn.rd, "ok").with_cookie(cookie);
    match crate::risk::signed_in(sessions.key.device(), &sub, mfa, req.tls) {
        Some(device) => reply.with_cookie(device),
        None => reply,
    }
}

/// How recent the sign-in behind a token posted to `/.idfabric/session` must be.
pub const SESSION_MAX_AUTH_AGE: i64 = 300;

/// A JSON problem for `/.idfabric/session` (an API for the app's script, not a page).
fn session_problem(status: u16, reason: Failure, detail: &str) -> Reply {
    let reason = reason.as_str();
    let title = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Error",
    };
    tracing::info!(status, reason, "session exchange refused");
    let body = serde_json::json!({
        "type": format!("urn:idfabric:problem:{reason}"),
        "title": title,
        "status": status,
        "detail": detail,
        "reason": reason,
    });
    let mut r = Reply::json(status, &body, reason);
    r.headers[0].1 = "application/problem+json".into();
    r
}

/// A field of the posted body: JSON (`application/json`) or a urlencoded form.
fn body_field(req: &Request<'_>, name: &str) -> Option<String> {
    let json = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if json {
        let v: Value = serde_json::from_slice(req.body).ok()?;
        v.get(name).and_then(Value::as_str).map(str::to_string)
    } else {
        req.form(name)
    }
}

/// `POST /.idfabric/session`: an app that signed in with a provider SDK (Firebase) posts
/// the fresh ID token; idfabric verifies it and sets the session cookie. Same-origin only
/// (`Origin` must be this request's own), and the sign-in must be recent (`auth_time`).
async fn session_from_id_token(rt: &Runtime, sessions: &Sessions, req: &Request<'_>) -> Reply {
    if req.method != "POST" {
        let mut r = session_problem(405, Failure::MethodNotAllowed, "POST an ID token to create a session.");
        r.headers.push(("allow", "POST".into()));
        return r;
    }
    let origin = req.headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin != Some(req.origin().as_str()) {
        return session_problem(403, Failure::CrossOrigin, "The request must come from a page of this site (same Origin).");
    }
    let rd = match body_field(req, "rd") {
        Some(rd) => match safe_rd(Some(&rd)) {
            Some(rd) => Some(rd),
            None => return session_problem(400, Failure::InvalidRd, "The return address must be a path on this site."),
        },
        None => None,
    };
    let Some(token) = body_field(req, "id_token").filter(|t| !t.is_empty()) else {
        return session_problem(400, Failure::MissingIdToken, "The body names no id_token.");
    };
    let verified = match rt.registry.verify(&token, None).await {
        Ok(v) => v,
        Err(e) => {
            let r = Reply::problem(&e.refusal);
            tracing::info!(status = r.status, reason = r.reason, "session exchange refused");
            return r;
        }
    };
    let Some(p) = rt.registry.providers.get(verified.provider).cloned() else {
        return session_problem(400, Failure::NotASessionProvider, "The token's provider cannot create sessions.");
    };
    if !p.kind().creates_sessions() {
        return session_problem(400, Failure::NotASessionProvider, "Sessions are created here only from Firebase ID tokens; other providers sign in through /.idfabric/login.");
    }
    let now = now_secs();
    let fresh = verified.identity.auth_time.is_some_and(|t| now - t <= SESSION_MAX_AUTH_AGE);
    if !fresh {
        metrics().logins_total.with_label_values(&[p.id(), p.spec.population.as_str(), "failure"]).inc();
        return session_problem(401, Failure::StaleAuthTime, "The sign-in behind this token is older than 5 minutes; sign in again.");
    }
    let mut identity = verified.identity.clone();
    identity.token_use = TokenUse::Session;
    let mfa = identity.mfa;
    let sub = identity.sub.clone();
    let session = Session {
        identity,
        created_at: 0,
        expires_at: 0,
        // Without a refresh token the session cannot outlive what the provider vouched for.
        upstream_exp: Some(verified.exp),
        refresh_token: None,
        id_token: None,
        mfa,
        touched_at: 0,
        network: crate::risk::session_network(req.client),
    };
    let name = rt.config.session.cookie_name(req.tls);
    if let Some(old) = req.cookie(&name) {
        let _ = sessions.destroy(old).await;
    }
    let id = match sessions.create(session).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable: refusing new sessions");
            return session_problem(503, Failure::SessionStoreUnavailable, "The session service cannot be reached.");
        }
    };
    funnel(&p, Journey::Signin, "session_created");
    metrics().logins_total.with_label_values(&[p.id(), p.spec.population.as_str(), "success"]).inc();
    let cookie = web::set_session_cookie(&rt.config.session, &id, sessions.absolute.as_secs() as i64, req.tls);
    let device = crate::risk::signed_in(sessions.key.device(), &sub, mfa, req.tls);
    let reply = match rd {
        Some(rd) => Reply::redirect(&rd, "ok").with_cookie(cookie),
        None => Reply::json(200, &serde_json::json!({"status": "ok", "sub": sub}), "ok").with_cookie(cookie),
    };
    match device {
        Some(device) => reply.with_cookie(device),
        None => reply,
    }
}

/// What else ends when a browser signs out here: called with the ended session's id,
/// returns how many grants it revoked. The service assembly registers the broker's
/// (token families issued from the session), so sign-in calls it without knowing it.
pub type SignOutHook = for<'a> fn(&'a Runtime, &'a str) -> SignOutFuture<'a>;

/// The future a [`SignOutHook`] returns.
pub type SignOutFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<usize, StoreError>> + Send + 'a>>;

static SIGN_OUT: std::sync::OnceLock<SignOutHook> = std::sync::OnceLock::new();

/// Registers the [`SignOutHook`] (once per process; later calls are ignored).
pub fn on_sign_out(hook: SignOutHook) {
    let _ = SIGN_OUT.set(hook);
}

/// `/.idfabric/logout`: a GET shows a "Sign out?" page whose button POSTs back; a POST
/// from this site's own pages ends the session (and the broker token families issued
/// from it), clears every spelling of the session cookie and goes on to the provider's
/// RP-initiated logout. A GET never signs out, so a link or image elsewhere cannot.
async fn logout(rt: &Runtime, sessions: &Sessions, req: &Request<'_>) -> Reply {
    match req.method {
        "GET" | "HEAD" => {
            let theme = theme_for(rt, req.host, "/");
            let mut r = Reply::html(200, pages::sign_out_page(&theme, "/.idfabric/logout"), "confirm");
            // The button's POST must carry this page's Origin (`no-referrer`, here and in
            // the page's meta tag, would make browsers send `Origin: null`).
            set_header(&mut r, "referrer-policy", "same-origin");
            return r;
        }
        "POST" => {}
        _ => {
            let mut r = page(rt, req, 405, "Method not allowed", "Sign out with the button on the sign-out page.", Failure::MethodNotAllowed);
            r.headers.push(("allow", "GET, POST".into()));
            return r;
        }
    }
    if let Err(why) = same_origin(req) {
        let origin = req.headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("-");
        let origin: String = origin.chars().take(200).collect();
        tracing::info!(why, host = req.host, origin, "sign-out refused: not from this site");
        return page(rt, req, 403, "Sign-out not accepted", "The sign-out request did not come from this site. Use the sign-out button here.", Failure::CrossSiteLogout);
    }
    let name = rt.config.session.cookie_name(req.tls);
    let sid = req.cookie(&name);
    let ended = match sid {
        Some(id) => sessions.destroy(id).await.ok().flatten(),
        None => None,
    };
    if let (Some(id), Some(hook)) = (sid, SIGN_OUT.get()) {
        match hook(rt, id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(families = n, "sign-out: broker token families issued from the session revoked"),
            Err(e) => tracing::warn!(error = %e, "sign-out: broker token families not revoked"),
        }
    }
    // With a sign-in host, providers return there (its one registered address).
    let back = format!("{}/.idfabric/logged-out", handoff::home_origin(rt, req));
    let target = ended.as_ref().and_then(|s| {
        let p = rt.registry.by_id(&s.identity.provider)?;
        // An Azure AD B2C session ends at its policy's own end-session endpoint.
        let policy = s.identity.attributes.get("b2c_policy").and_then(Value::as_str);
        let end = endpoints_for(p, policy)?.end_session_endpoint?;
        let mut u = url::Url::parse(&end).ok()?;
        {
            let mut q = u.query_pairs_mut();
            let client = p.spec.client_id.clone().unwrap_or_default();
            for (k, v) in p.kind().end_session_params(&client, &back, s.id_token.as_deref()) {
                q.append_pair(k, &v);
            }
        }
        Some(u.to_string())
    });
    clear_session_cookies(Reply::redirect(target.as_deref().unwrap_or("/.idfabric/logged-out"), "ok"), &rt.config.session, req.tls)
}

/// Replaces (or adds) a header of a reply.
fn set_header(r: &mut Reply, name: &'static str, value: &str) {
    r.headers.retain(|(k, _)| *k != name);
    r.headers.push((name, value.to_string()));
}

/// Whether a state-changing POST comes from this site's own pages: `Sec-Fetch-Site:
/// cross-site` is refused; then `Origin` must be this request's own `scheme://host`
/// (`null` is refused), or, without `Origin`, the `Referer`'s origin. A request with
/// neither (not a browser: browsers send `Origin` on every POST) is let through, as a
/// cross-site page cannot make a browser drop both.
pub fn same_origin(req: &Request<'_>) -> Result<(), &'static str> {
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return Err("Sec-Fetch-Site is cross-site");
    }
    let origin_of = |u: &str| url::Url::parse(u).ok().map(|u| u.origin()).filter(url::Origin::is_tuple);
    let own = origin_of(&req.origin());
    match (header("origin"), header("referer")) {
        (Some(o), _) if own.is_some() && origin_of(o) == own => Ok(()),
        (Some(_), _) => Err("Origin is another site"),
        (None, Some(r)) if own.is_some() && origin_of(r) == own => Ok(()),
        (None, Some(_)) => Err("Referer is another site"),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_out_posts_must_come_from_this_site() {
        let cases: &[(&[(&str, &str)], bool, bool)] = &[
            (&[("origin", "https://app.example")], true, true),
            (&[("origin", "https://app.example:443")], true, true),
            (&[("origin", "https://evil.example")], true, false),
            (&[("origin", "http://app.example")], true, false),
            (&[("origin", "null")], true, false),
            (&[("origin", "https://sub.app.example")], true, false),
            (&[("referer", "https://app.example/some/page?x=1")], true, true),
            (&[("referer", "https://evil.example/app.example")], true, false),
            (&[("origin", "https://app.example"), ("sec-fetch-site", "cross-site")], true, false),
            (&[("origin", "https://app.example"), ("sec-fetch-site", "same-origin")], true, true),
            (&[], true, true),
            (&[("origin", "http://app.example")], false, true),
        ];
        for (headers, tls, ok) in cases {
            let mut h = http::HeaderMap::new();
            for (k, v) in *headers {
                h.insert(http::HeaderName::from_static(k), v.parse().unwrap());
            }
            let req = Request {
                method: "POST",
                host: "app.example",
                path: "/.idfabric/logout",
                query: "",
                headers: &h,
                body: b"",
                tls: *tls,
                client: None,
            };
            assert_eq!(same_origin(&req).is_ok(), *ok, "{headers:?} tls={tls}");
        }
    }

    #[test]
    fn return_paths_cannot_leave_the_site() {
        let cases = [
            (Some("/app?x=1"), true),
            (None, true),
            (Some("//evil.example"), false),
            (Some("https://evil.example/"), false),
            (Some("/\\evil.example"), false),
            (Some("/%2F/evil"), true), // stays a path on this host
            (Some("evil"), false),
            (Some("/a\nb"), false),
        ];
        for (rd, ok) in cases {
            assert_eq!(safe_rd(rd).is_some(), ok, "{rd:?}");
        }
    }
}
