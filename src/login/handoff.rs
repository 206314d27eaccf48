//! One sign-in for many hosts through a central sign-in host (`session.auth_host`).
//!
//! Every provider then needs one redirect URI (`https://{auth_host}/.idfabric/callback`)
//! however many hosts sit behind idfabric, and each host keeps its own host-only
//! (`__Host-`) session cookie: no cookie is ever shared with a sibling subdomain.
//!
//! 1. A route host `H` that needs a sign-in (`/.idfabric/login?rd=…` on `H`) sets a
//!    binding cookie on `H` (`idfabric_hx_…`, a random nonce, as sign-ins do) and sends
//!    the browser to `{auth_host}/.idfabric/session-handoff/start?to={H's URL}&hx={digest}`.
//! 2. The sign-in host checks that `to` is on a configured route host, with this
//!    request's scheme and port (never an open redirect). Without a usable session of
//!    its own it runs an ordinary sign-in whose return path is this same start URL.
//! 3. With one, it stores a one-time code (`crate::session::handoff`: at most 60 s, one
//!    redemption, bound to `H` and to the binding digest) and redirects to
//!    `{H}/.idfabric/session-handoff?code=…`.
//! 4. `H` redeems the code: it must be live, unredeemed, issued for `H`, and the
//!    browser must hold the binding cookie `H` set in step 1, so a code cannot sign
//!    another browser in (login CSRF) nor be used on another host. `H` then sets its own
//!    host-only session cookie to the same session: signing out on any host ends it on all.
//!
//! A sign-in that resumes a parked broker request stays on the broker's host (the
//! request's own offer of providers applies there).

use super::{login_providers, page, route_for, safe_rd, store_down, Failure};
use crate::metrics::metrics;
use crate::runtime::{normalise_host, Runtime};
use crate::session::handoff::{Handoff, Redeemed};
use crate::session::Sessions;
use crate::web::{self, binding, Reply, Request};

/// On the sign-in host: checks the target, then issues a code (or signs in first).
pub const START: &str = "/.idfabric/session-handoff/start";
/// On a route host: redeems a code.
pub const REDEEM: &str = "/.idfabric/session-handoff";

/// How long the route host's binding cookie lives: as long as a sign-in may take.
const BINDING_SECS: i64 = 600;

/// The configured sign-in host when `host` is another one (sign-ins go there).
pub fn auth_host_for<'a>(rt: &'a Runtime, host: &str) -> Option<&'a str> {
    let auth = rt.config.session.auth_host.as_deref()?;
    (normalise_host(auth) != normalise_host(host)).then_some(auth)
}

/// The port a `Host` value names, if any (`a.test:8080` → `8080`; `[::1]` → none).
fn port_of(host: &str) -> Option<&str> {
    let (_, port) = host.rsplit_once(':')?;
    (!host.ends_with(']') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

/// `scheme://authority` of the sign-in host as reached from a request on `req`: the
/// configured port, else the port this request came in on (one listener serves all).
fn auth_origin(auth: &str, req: &Request<'_>) -> String {
    match (port_of(auth), port_of(req.host)) {
        (None, Some(port)) => format!("{}://{auth}:{port}", req.scheme()),
        _ => format!("{}://{auth}", req.scheme()),
    }
}

/// `scheme://authority` of the host where sign-ins run for a request on `req`: the
/// sign-in host when one is configured, else the request's own.
pub fn home_origin(rt: &Runtime, req: &Request<'_>) -> String {
    match rt.config.session.auth_host.as_deref() {
        Some(auth) => auth_origin(auth, req),
        None => req.origin(),
    }
}

/// Counts a handoff outcome (`idfabric_session_handoffs_total{result}`).
fn count(result: &'static str) {
    metrics().session_handoffs_total.with_label_values(&[result]).inc();
}

/// The binding cookie of a handoff: named after its digest's first 16 hex characters.
fn binding_cookie(digest: &str, tls: bool) -> String {
    web::cookie_name(&format!("idfabric_hx_{}", &digest[..16.min(digest.len())]), tls)
}

fn is_digest(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Step 1, on a route host: bind the browser, then go to the sign-in host. `journey`, `step_up`,
/// `provider` and `prompt` travel along for the sign-in there.
pub fn begin(auth: &str, req: &Request<'_>, rd: &str) -> Reply {
    let bind = binding::new();
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("to", &format!("{}{rd}", req.origin())).append_pair("hx", &bind.digest);
    for k in ["step_up", "provider", "prompt", "journey"] {
        if let Some(v) = req.input(k) {
            q.append_pair(k, &v);
        }
    }
    let location = format!("{}{START}?{}", auth_origin(auth, req), q.finish());
    let cookie = binding::set_cookie(&binding_cookie(&bind.digest, req.tls), &bind.nonce, BINDING_SECS, req.tls);
    Reply::redirect(&location, "ok").with_cookie(cookie)
}

/// Where a handoff may go: on a configured route host.
struct Target {
    /// `scheme://host[:port]` as the route host's URL names it.
    origin: String,
    /// Lowercase, no port.
    host: String,
    /// Path and query.
    rd: String,
}

/// The host and return path of a sign-in on the sign-in host whose `rd` is a start URL
/// (`START?to=…`): the providers and look of that sign-in are the target route's.
/// Unchecked (the start endpoint checks before anything is issued).
pub fn signs_in_for(rt: &Runtime, host: &str, rd: &str) -> Option<(String, String)> {
    rt.config.session.auth_host.as_ref()?;
    if auth_host_for(rt, host).is_some() {
        return None;
    }
    let (path, query) = rd.split_once('?')?;
    if path != START {
        return None;
    }
    let to = url::Url::parse(&web::param(query, "to")?).ok()?;
    let rd = match to.query() {
        Some(q) => format!("{}?{q}", to.path()),
        None => to.path().to_string(),
    };
    Some((to.host_str()?.to_string(), rd))
}

/// `to` is a URL with this request's scheme and port, no credentials or fragment, on a
/// host that a route names itself (exact or wildcard: a catch-all route names no host).
fn target(rt: &Runtime, req: &Request<'_>, to: &str) -> Option<Target> {
    let u = url::Url::parse(to).ok()?;
    let default = if req.tls { 443 } else { 80 };
    let own_port = port_of(req.host).and_then(|p| p.parse::<u16>().ok()).unwrap_or(default);
    if u.scheme() != req.scheme() || u.port_or_known_default() != Some(own_port) {
        return None;
    }
    if !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let rd = safe_rd(Some(path.as_str()))?;
    let route = rt.routes.find(&host, rd.split('?').next().unwrap_or("/"))?;
    if matches!(route.spec.host, crate::config::HostMatch::Any) {
        return None;
    }
    let origin = match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    };
    Some(Target { origin, host, rd })
}

/// Steps 2 and 3, on the sign-in host.
pub async fn start(rt: &Runtime, sessions: &Sessions, req: &Request<'_>) -> Reply {
    if rt.config.session.auth_host.is_none() || auth_host_for(rt, req.host).is_some() {
        return page(rt, req, 404, "Unknown site", "Sessions are handed over by the sign-in host only.", Failure::NoRoute);
    }
    let Some(t) = req.param("to").and_then(|to| target(rt, req, &to)) else {
        count(Failure::HandoffTargetNotAllowed.as_str());
        return page(rt, req, 400, "Invalid return address", "The address to return to after sign-in is not an application of this gateway.", Failure::HandoffTargetNotAllowed);
    };
    let Some(hx) = req.param("hx").filter(|d| is_digest(d)) else {
        count(Failure::HandoffNotBound.as_str());
        return page(rt, req, 400, "Sign-in cannot continue", "The application did not bind this sign-in to your browser. Go back to the application and try again.", Failure::HandoffNotBound);
    };
    let step_up = req.param("step_up").as_deref() == Some("1");
    let provider = req.param("provider");
    let route = route_for(rt, &t.host, &t.rd);
    let allowed: Vec<String> = route.map(|r| login_providers(rt, r).iter().map(|p| p.spec.id.clone()).collect()).unwrap_or_default();
    let sid = req.cookie(&rt.config.session.cookie_name(req.tls)).map(str::to_string);
    let current = match &sid {
        Some(id) => match crate::session::session_for(&rt.registry, sessions, id).await {
            Ok(s) => s,
            Err(e) => return store_down(super::theme_for(rt, &t.host, &t.rd).population, &e),
        },
        None => None,
    };
    // A session that cannot serve the target (another route's provider, no second
    // factor for a step-up, or a fresh sign-in asked for) signs in again first.
    let usable = current.as_ref().filter(|s| {
        allowed.contains(&s.identity.provider)
            && (!step_up || s.mfa)
            && provider.as_ref().is_none_or(|p| *p == s.identity.provider)
            && req.param("prompt").as_deref() != Some("login")
            && req.param("journey").is_none_or(|j| j == "signin")
    });
    let (Some(sid), Some(_)) = (sid, usable) else {
        // Back to this start URL after the sign-in, without `prompt`: the sign-in it
        // asks for is the one that follows.
        let mut back = url::form_urlencoded::Serializer::new(String::new());
        back.append_pair("to", &req.param("to").unwrap_or_default()).append_pair("hx", &hx);
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if step_up {
            back.append_pair("step_up", "1");
            q.append_pair("step_up", "1");
        }
        if let Some(p) = &provider {
            back.append_pair("provider", p);
            q.append_pair("provider", p);
        }
        if req.param("prompt").as_deref() == Some("login") {
            q.append_pair("prompt", "login");
        }
        // Sign-up, reset or profile edit: that journey, then back as any sign-in.
        if let Some(j) = req.param("journey") {
            q.append_pair("journey", &j);
        }
        q.append_pair("rd", &format!("{START}?{}", back.finish()));
        return Reply::redirect(&format!("/.idfabric/login?{}", q.finish()), "ok");
    };
    let h = Handoff { host: t.host.clone(), session: sid, browser: hx, rd: t.rd.clone(), created_at: crate::providers::now_secs() };
    match sessions.issue_handoff(&h).await {
        Ok(code) => {
            count("issued");
            tracing::info!(host = %t.host, "session handed off");
            Reply::redirect(&format!("{}{REDEEM}?code={code}", t.origin), "ok")
        }
        Err(e) => store_down(super::theme_for(rt, &t.host, &t.rd).population, &e),
    }
}

/// Step 4, on a route host: the code becomes this host's own session cookie.
pub async fn redeem(rt: &Runtime, sessions: &Sessions, req: &Request<'_>) -> Reply {
    let refused = |status, title: &str, detail: &str, why: Failure| {
        count(why.as_str());
        page(rt, req, status, title, detail, why)
    };
    let expired = "This sign-in link was already used or is too old. Open the application again to sign in.";
    let h = match sessions.redeem_handoff(&req.param("code").unwrap_or_default()).await {
        Ok(Redeemed::Valid(h)) => h,
        Ok(Redeemed::Replayed) => return refused(400, "This sign-in link was already used", expired, Failure::HandoffReplayed),
        Ok(Redeemed::Unknown) => return refused(400, "This sign-in has expired", expired, Failure::HandoffInvalid),
        Err(e) => return store_down(super::theme_for(rt, req.host, "/").population, &e),
    };
    let name = binding_cookie(&h.browser, req.tls);
    let clear = binding::clear_cookie(&name, req.tls);
    if h.host != normalise_host(req.host) {
        let detail = "This sign-in link was made for another application.";
        return refused(400, "Sign-in failed", detail, Failure::HandoffHostMismatch).with_cookie(clear);
    }
    if binding::check(req, Some(name.as_str()), &h.browser) != binding::Presented::Bound {
        let detail = "This browser did not start this sign-in, so it was not completed. If you started it, open the application again.";
        return refused(403, "This sign-in was started elsewhere", detail, Failure::HandoffNotBound).with_cookie(clear);
    }
    let session = match sessions.load(&h.session).await {
        Ok(Some(s)) => s,
        Ok(None) => return refused(400, "This sign-in has expired", expired, Failure::HandoffInvalid).with_cookie(clear),
        Err(e) => return store_down(super::theme_for(rt, req.host, &h.rd).population, &e),
    };
    count("redeemed");
    let cookie = web::set_session_cookie(&rt.config.session, &h.session, sessions.absolute.as_secs() as i64, req.tls);
    let reply = Reply::redirect(&h.rd, "ok").with_cookie(cookie).with_cookie(clear);
    // The device cookie is host-only: an MFA sign-in on the sign-in host remembers this
    // browser on the app host too (adaptive MFA's `new_device`).
    match crate::risk::signed_in(sessions.key.device(), &session.identity.sub, session.mfa, req.tls) {
        Some(device) => reply.with_cookie(device),
        None => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_host_values() {
        assert_eq!(port_of("a.test:8080"), Some("8080"));
        assert_eq!(port_of("a.test"), None);
        assert_eq!(port_of("[::1]"), None);
        assert_eq!(port_of("[::1]:8443"), Some("8443"));
        assert!(is_digest(&"0a".repeat(32)) && !is_digest(&"0A".repeat(32)) && !is_digest("00"));
    }
}
