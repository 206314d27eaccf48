//! `/authorize` and `/authorize/resume`: the authorization code flow with PKCE.
//!
//! Until the client and its redirect URI are known to be registered, every error is an
//! HTML page on the broker (never a redirect: an unregistered URI may be an attacker's).
//! After that, errors go back to the client as `error`, `state` and `iss` (RFC 9207).
//!
//! The user's idfabric browser session on the broker's host is the sign-in. Without a
//! usable one (none, `prompt=login`, `max_age` exceeded, `acr_values` asking for a
//! second factor the session lacks, or a provider this client does not accept) the
//! request is parked as a single-use transaction and the browser goes through
//! `/.idfabric/login`, which returns to `/authorize/resume`.

use super::grants::{self, AuthzRequest, CodeGrant, Grants, Unparked};
use super::{clients, err, tokens, ErrorCode, OAuthError};
use crate::config::{BrokerClientSpec, BrokerSpec};
use crate::login;
use crate::providers::now_secs;
use crate::runtime::{normalise_host, Runtime};
use crate::session::{Session, SignInOffer};
use crate::web::{binding, pages, random, Reply, Request};
use std::collections::BTreeMap;

/// Whether `host` (as the browser sent it) is the broker issuer's host.
pub fn on_broker_host(b: &BrokerSpec, host: &str) -> bool {
    let issuer_host =
        url::Url::parse(&b.issuer).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    normalise_host(host) == normalise_host(&issuer_host)
}

/// An error shown to the user on the broker itself: 503 when the store is down (try
/// again), else 400.
fn page(rt: &Runtime, req: &Request<'_>, title: &str, detail: &str, code: ErrorCode) -> Reply {
    let theme = login::theme_for(rt, req.host, "/");
    let status = if code == ErrorCode::TemporarilyUnavailable { 503 } else { 400 };
    Reply::html(status, pages::error_page(&theme, status, title, detail, None), code.as_str())
}

/// Back to the client's (registered) redirect URI with `params`, `state` and `iss`.
fn back(
    b: &BrokerSpec,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
    reason: &'static str,
) -> Reply {
    let Ok(mut u) = url::Url::parse(redirect_uri) else {
        return Reply::html(500, "redirect URI is not a URL".into(), "server_error");
    };
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &b.issuer);
    }
    Reply::redirect(u.as_str(), reason)
}

fn back_err(b: &BrokerSpec, r: &AuthzRequest, e: OAuthError) -> Reply {
    back(
        b,
        &r.redirect_uri,
        r.state.as_deref(),
        &[("error", e.code.as_str()), ("error_description", e.description)],
        e.code.as_str(),
    )
}

pub async fn authorize(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    if let Some(refused) = login::throttled(rt, req, "authorize") {
        return refused;
    }
    let p = match authorize_params(req) {
        Ok(p) => p,
        Err(e) => return page(rt, req, "Invalid sign-in request", e.description, e.code),
    };
    let (client, early) = match trusted_client(rt, b, req, &p) {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let r = match validate(client, &p, early.clone()) {
        Ok(r) => r,
        Err(e) => return back_err(b, &early, e),
    };
    let Some(sessions) = rt.sessions.clone() else {
        return back_err(b, &r, err(ErrorCode::TemporarilyUnavailable, "sign-in is not configured"));
    };
    let prompt = prompt_values(&p);
    let sid = req.cookie(&rt.config.session.cookie_name(req.tls)).map(str::to_string);
    let session = match current_session(rt, &sessions, sid.as_deref()).await {
        Ok(s) => s,
        Err(e) => return back_err(b, &r, e.into()),
    };
    let had_session = session.is_some();
    let why = match standing(rt, client, &r, session, prompt.contains(&"login")) {
        // Signed in well enough: issue the code now.
        Standing::Ready(s) => return issue(rt, b, client, &r, sid.as_deref().unwrap_or_default(), *s).await,
        Standing::Needs(why) => why,
    };
    if prompt.contains(&"none") {
        return back_err(b, &r, why);
    }
    if let Err(e) = allowed_idp(rt, client, &p) {
        return back_err(b, &r, e);
    }
    let fresh = needs_fresh(&prompt, &r, had_session, &why);
    to_sign_in(rt, b, req, &sessions, &p, AuthzRequest { fresh, ..r }).await
}

/// The request's parameters: the query of a GET, the form body of a POST (OpenID
/// Connect Core §3.1.2.1 wants both); a POST with a query too is refused, so the
/// parameters come from one place.
fn authorize_params(req: &Request<'_>) -> Result<BTreeMap<String, String>, OAuthError> {
    match (req.method, super::params(req.query)) {
        ("GET", Ok(p)) => Ok(p),
        ("POST", Ok(q)) if q.is_empty() => super::form(req),
        (_, Err(e)) => Err(e),
        _ => Err(err(ErrorCode::InvalidRequest, "use GET, or POST with a form body")),
    }
}

/// The registered client and redirect URI of the request, on the broker's own host; the
/// request as far as it can be trusted for error redirects. Until both are known every
/// error is a page here (an unregistered URI may be an attacker's).
fn trusted_client<'b>(
    rt: &Runtime,
    b: &'b BrokerSpec,
    req: &Request<'_>,
    p: &BTreeMap<String, String>,
) -> Result<(&'b BrokerClientSpec, AuthzRequest), Reply> {
    let Some(client) = p.get("client_id").and_then(|c| clients::find(b, c)) else {
        return Err(page(
            rt,
            req,
            "Unknown application",
            "The application that sent you here is not registered with this sign-in service.",
            ErrorCode::InvalidClient,
        ));
    };
    let Some(redirect_uri) = p.get("redirect_uri").filter(|u| client.redirect_uris.contains(u)) else {
        return Err(page(
            rt,
            req,
            "Invalid return address",
            "The application asked to return to an address it has not registered, so you were not sent there.",
            ErrorCode::InvalidRequest,
        ));
    };
    if !on_broker_host(b, req.host) {
        return Err(page(
            rt,
            req,
            "Wrong address",
            "Sign-in requests must use the sign-in service's own address.",
            ErrorCode::InvalidRequest,
        ));
    }
    let early = AuthzRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: p.get("state").cloned(),
        nonce: None,
        scope: Vec::new(),
        code_challenge: None,
        max_age: None,
        mfa: false,
        fresh: false,
        created_at: now_secs(),
        browser: String::new(),
        offer: None,
    };
    Ok((client, early))
}

/// The space-separated `prompt` values.
fn prompt_values(p: &BTreeMap<String, String>) -> Vec<&str> {
    p.get("prompt").map(|v| v.split(' ').collect()).unwrap_or_default()
}

/// The browser's idfabric session on this host, through sign-in's loader.
async fn current_session(
    rt: &Runtime,
    sessions: &crate::session::Sessions,
    sid: Option<&str>,
) -> Result<Option<Session>, crate::session::StoreError> {
    match sid {
        Some(id) => crate::session::session_for(&rt.registry, sessions, id).await,
        None => Ok(None),
    }
}

/// Whether the browser's session can have a code now, and if not why.
enum Standing {
    Ready(Box<Session>),
    Needs(OAuthError),
}

fn standing(
    rt: &Runtime,
    client: &BrokerClientSpec,
    r: &AuthzRequest,
    session: Option<Session>,
    prompt_login: bool,
) -> Standing {
    match session {
        None => Standing::Needs(err(ErrorCode::LoginRequired, "the user is not signed in")),
        Some(_) if prompt_login => {
            Standing::Needs(err(ErrorCode::LoginRequired, "prompt=login asks for a new sign-in"))
        }
        Some(s) => match unmet(rt, client, r, &s, false) {
            Ok(()) => Standing::Ready(Box::new(s)),
            Err(e) => Standing::Needs(e),
        },
    }
}

/// An `idp` hint must name a provider this client may use.
fn allowed_idp(rt: &Runtime, client: &BrokerClientSpec, p: &BTreeMap<String, String>) -> Result<(), OAuthError> {
    match p.get("idp") {
        Some(idp) if !clients::allows_provider(rt, client, idp) => {
            Err(err(ErrorCode::InvalidRequest, "idp names no provider this client may use"))
        }
        _ => Ok(()),
    }
}

/// A new authentication is asked of the provider for `prompt=login` and `max_age`
/// (its single sign-on could otherwise answer silently with an old one) and when an
/// existing session was too old; a first sign-in keeps the provider's SSO.
fn needs_fresh(prompt: &[&str], r: &AuthzRequest, had_session: bool, why: &OAuthError) -> bool {
    prompt.contains(&"login") || r.max_age.is_some() || (had_session && why.code == ErrorCode::LoginRequired)
}

/// Parks the request and sends the browser to `/.idfabric/login`, which returns to
/// `/authorize/resume`: `idp` → `provider` (no discovery page), `login_hint` → `email`
/// (discovery by domain), `acr_values` → `step_up`, renewal → `prompt=login`.
async fn to_sign_in(
    rt: &Runtime,
    b: &BrokerSpec,
    req: &Request<'_>,
    sessions: &crate::session::Sessions,
    p: &BTreeMap<String, String>,
    mut r: AuthzRequest,
) -> Reply {
    let txn = random(binding::ID_BYTES);
    let rd = format!("{}/authorize/resume?txn={txn}&client_id={}", b.path, urlencode(&r.client_id));
    // The sign-in offers this client's providers: handed over in the parked request.
    let providers = clients::find(b, &r.client_id).map(|c| clients::browser_providers(rt, c)).unwrap_or_default();
    r.offer = Some(SignInOffer {
        host: normalise_host(req.host).to_string(),
        rd: rd.clone(),
        providers: providers.iter().map(|p| p.spec.id.clone()).collect(),
    });
    // The parked request belongs to this browser: a random nonce in a host-only cookie,
    // kept with the request as a digest, must come back on resume.
    let bind = binding::new();
    match grants::park(&*sessions.pending, sessions.caps, &req.client_key(), &txn, &r, &bind.digest).await {
        Ok(parked) => {
            crate::metrics::metrics().login_pending.set(parked.held as i64);
            login::count_abandoned(rt, &parked.evicted);
        }
        Err(e) => return back_err(b, &r, e.into()),
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("rd", &rd);
    if let Some(idp) = p.get("idp") {
        q.append_pair("provider", idp);
    }
    if let Some(hint) = p.get("login_hint").filter(|h| h.contains('@') && h.len() <= 256) {
        q.append_pair("email", hint);
    }
    if r.mfa {
        q.append_pair("step_up", "1");
    }
    if r.fresh {
        q.append_pair("prompt", "login");
    }
    let name = binding::cookie_name("btx", &txn, req.tls).expect("an id of ours names a cookie");
    let bound = binding::set_cookie(&name, &bind.nonce, grants_ttl_secs(), req.tls);
    Reply::redirect(&format!("/.idfabric/login?{}", q.finish()), "ok").with_cookie(bound)
}

fn grants_ttl_secs() -> i64 {
    super::grants::TXN_TTL.as_secs() as i64
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn family_ttl(b: &BrokerSpec) -> std::time::Duration {
    b.refresh_token_ttl.max(b.access_token_ttl).max(b.id_token_ttl)
}

/// The protocol checks of an authorize request, once its redirect URI is trusted.
fn validate(
    client: &BrokerClientSpec,
    p: &BTreeMap<String, String>,
    mut r: AuthzRequest,
) -> Result<AuthzRequest, OAuthError> {
    if p.contains_key("request") {
        return Err(err(ErrorCode::RequestNotSupported, "request objects are not supported"));
    }
    if p.contains_key("request_uri") {
        return Err(err(ErrorCode::RequestUriNotSupported, "request_uri is not supported"));
    }
    match p.get("response_type").map(String::as_str) {
        None => return Err(err(ErrorCode::InvalidRequest, "response_type is missing")),
        Some("code") => {}
        Some(_) => return Err(err(ErrorCode::UnsupportedResponseType, "only response_type=code is supported")),
    }
    if p.get("response_mode").is_some_and(|m| m != "query") {
        return Err(err(ErrorCode::InvalidRequest, "only response_mode=query is supported"));
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(err(ErrorCode::UnauthorizedClient, "this client may not use the authorization code flow"));
    }
    let scope: Vec<String> = p
        .get("scope")
        .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if !scope.iter().any(|s| s == "openid") {
        return Err(err(ErrorCode::InvalidScope, "scope must include openid"));
    }
    if scope.iter().any(|s| !client.scopes.contains(s)) {
        return Err(err(ErrorCode::InvalidScope, "scope asks for a scope this client may not have"));
    }
    r.scope = scope;
    // Keep the order asked for, drop repeats anywhere (`openid email openid email …`).
    let mut seen = std::collections::HashSet::new();
    r.scope.retain(|s| seen.insert(s.clone()));
    match (p.get("code_challenge"), p.get("code_challenge_method").map(String::as_str)) {
        (Some(_), Some("S256")) => {}
        (Some(_), Some("plain")) | (Some(_), None) => {
            return Err(err(ErrorCode::InvalidRequest, "PKCE method plain is not supported; use S256"))
        }
        (Some(_), Some(_)) => return Err(err(ErrorCode::InvalidRequest, "code_challenge_method must be S256")),
        (None, Some(_)) => return Err(err(ErrorCode::InvalidRequest, "code_challenge_method without code_challenge")),
        (None, None) if client.require_pkce => {
            return Err(err(ErrorCode::InvalidRequest, "PKCE (code_challenge with S256) is required"))
        }
        (None, None) => {}
    }
    if let Some(c) = p.get("code_challenge") {
        if c.len() != 43 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(err(ErrorCode::InvalidRequest, "code_challenge is not a base64url SHA-256"));
        }
        r.code_challenge = Some(c.clone());
    }
    let prompt: Vec<&str> = p.get("prompt").map(|v| v.split(' ').collect()).unwrap_or_default();
    if prompt.contains(&"none") && prompt.len() > 1 {
        return Err(err(ErrorCode::InvalidRequest, "prompt=none cannot be combined with other values"));
    }
    if let Some(m) = p.get("max_age") {
        r.max_age =
            Some(m.parse::<u32>().map_err(|_| err(ErrorCode::InvalidRequest, "max_age is not a number of seconds"))?
                as i64);
    }
    r.mfa = p.get("acr_values").is_some_and(|a| tokens::asks_for_mfa(a));
    if p.get("nonce").is_some_and(|n| n.len() > 512) || r.state.as_ref().is_some_and(|s| s.len() > 2048) {
        return Err(err(ErrorCode::InvalidRequest, "nonce or state is too long"));
    }
    r.nonce = p.get("nonce").cloned();
    Ok(r)
}

/// Clock difference allowed between the provider's `auth_time` and ours.
const LEEWAY_SECS: i64 = 60;

/// When the session was authenticated: the provider's `auth_time`, else its creation.
fn auth_time(s: &Session) -> i64 {
    s.identity.auth_time.unwrap_or(s.created_at)
}

/// Why this session cannot serve this request (`None`: it can). After a sign-in
/// (`resumed`), a `fresh` request needs a session newer than the request.
fn unmet(
    rt: &Runtime,
    client: &BrokerClientSpec,
    r: &AuthzRequest,
    s: &Session,
    resumed: bool,
) -> Result<(), OAuthError> {
    if !clients::allows_provider(rt, client, &s.identity.provider) {
        return Err(err(ErrorCode::LoginRequired, "the session's provider is not accepted by this client"));
    }
    // A sign-in that happened after the request satisfies `prompt=login` and `max_age`.
    // The provider must have authenticated after the request, not only idfabric have
    // made a new session (a provider that ignores `prompt=login` does not renew).
    let renewed = resumed && s.created_at >= r.created_at && auth_time(s) >= r.created_at - LEEWAY_SECS;
    if resumed && r.fresh && !renewed {
        return Err(err(ErrorCode::LoginRequired, "the sign-in was not renewed"));
    }
    if let Some(max) = r.max_age.filter(|_| !renewed) {
        // `max_age=0` asks for a sign-in now, like `prompt=login` (OpenID Connect Core §3.1.2.1).
        if max == 0 || now_secs() - auth_time(s) > max {
            return Err(err(ErrorCode::LoginRequired, "the sign-in is older than max_age"));
        }
    }
    if r.mfa && !(s.mfa || s.identity.mfa) {
        return Err(err(ErrorCode::UnmetAuthenticationRequirements, "acr_values asked for a second factor"));
    }
    Ok(())
}

/// After sign-in: finishes the parked request. The binding cookie is cleared whatever
/// the outcome (code, error redirect, error page).
pub async fn resume(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    let txn = req.param("txn").unwrap_or_default();
    let reply = finish(rt, b, req, &txn).await;
    match binding::cookie_name("btx", &txn, req.tls) {
        Some(name) => reply.with_cookie(binding::clear_cookie(&name, req.tls)),
        None => reply, // no cookie of ours can have a name made from it
    }
}

async fn finish(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>, txn: &str) -> Reply {
    let Some(sessions) = rt.sessions.clone() else {
        return page(rt, req, "Sign-in unavailable", "This gateway has no session store.", ErrorCode::TemporarilyUnavailable);
    };
    let r = match parked(rt, req, &sessions, txn).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let Some(client) = clients::find(b, &r.client_id).filter(|c| c.redirect_uris.contains(&r.redirect_uri)) else {
        return page(rt, req, "Unknown application", "The application is no longer registered.", ErrorCode::InvalidClient);
    };
    let (sid, s) = match signed_in(rt, req, &sessions).await {
        Ok(found) => found,
        Err(e) => return back_err(b, &r, e),
    };
    if let Err(e) = unmet(rt, client, &r, &s, true) {
        return back_err(b, &r, e);
    }
    issue(rt, b, client, &r, &sid, s).await
}

/// The parked request `txn`, for this browser only (its binding cookie's nonce).
async fn parked(
    rt: &Runtime,
    req: &Request<'_>,
    sessions: &crate::session::Sessions,
    txn: &str,
) -> Result<AuthzRequest, Reply> {
    let elsewhere = || {
        page(
            rt,
            req,
            "This sign-in was started elsewhere",
            "Return to the application and start again in this browser.",
            ErrorCode::InvalidRequest,
        )
    };
    let nonce = binding::cookie_name("btx", txn, req.tls).and_then(|name| req.cookie(&name));
    let Some(nonce) = nonce.filter(|n| !n.is_empty()) else { return Err(elsewhere()) };
    match grants::unpark(&*sessions.pending, txn, nonce).await {
        Ok(Unparked::Live(r)) => Ok(*r),
        Ok(Unparked::Foreign) => Err(elsewhere()),
        Ok(Unparked::Expired) => Err(page(
            rt,
            req,
            "This sign-in has expired",
            "The sign-in link was already used or is too old. Return to the application and start again.",
            ErrorCode::InvalidRequest,
        )),
        Err(_) => Err(page(
            rt,
            req,
            "Sign-in unavailable",
            "The session service cannot be reached. Please try again in a moment.",
            ErrorCode::TemporarilyUnavailable,
        )),
    }
}

/// The session the sign-in left in this browser.
async fn signed_in(
    rt: &Runtime,
    req: &Request<'_>,
    sessions: &crate::session::Sessions,
) -> Result<(String, Session), OAuthError> {
    let not_done = || err(ErrorCode::LoginRequired, "the sign-in did not complete");
    let sid = req.cookie(&rt.config.session.cookie_name(req.tls)).ok_or_else(not_done)?;
    match crate::session::session_for(&rt.registry, sessions, sid).await? {
        Some(s) => Ok((sid.to_string(), s)),
        None => Err(not_done()),
    }
}

/// Stores a code for this sign-in and sends it to the client.
async fn issue(
    rt: &Runtime,
    b: &BrokerSpec,
    client: &BrokerClientSpec,
    r: &AuthzRequest,
    sid: &str,
    s: Session,
) -> Reply {
    let Some(sessions) = rt.sessions.clone() else {
        return back_err(b, r, err(ErrorCode::TemporarilyUnavailable, "sign-in is not configured"));
    };
    let at = auth_time(&s);
    let mut identity = s.identity;
    crate::session::carry_mfa(&mut identity, s.mfa);
    let code = random(32);
    let grant = CodeGrant {
        client_id: client.client_id.clone(),
        redirect_uri: r.redirect_uri.clone(),
        code_challenge: r.code_challenge.clone(),
        nonce: r.nonce.clone(),
        scope: r.scope.clone(),
        identity,
        auth_time: Some(at),
        session: Some(sid.to_string()),
        family: random(16),
        created_at: now_secs(),
    };
    if let Err(e) = (Grants { store: &*sessions.store, family_ttl: family_ttl(b) }).put_code(&code, &grant).await {
        return back_err(b, r, e.into());
    }
    tracing::info!(
        endpoint = "authorize",
        client_id = client.client_id.as_str(),
        provider = grant.identity.provider.as_str(),
        "broker code issued"
    );
    back(b, &r.redirect_uri, r.state.as_deref(), &[("code", &code)], "ok")
}
