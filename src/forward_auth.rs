//! Forward-auth: a front proxy (nginx `auth_request`, ingress-nginx, Traefik
//! ForwardAuth, Caddy `forward_auth`, Envoy/Istio HTTP `ext_authz`) holds a request and
//! asks `/.idfabric/auth` (or any path below it) whether it may pass. The answer comes
//! from the same route table and the same pipeline as idfabric's own proxy
//! (`pipeline::admit_request`, `propagate::route_headers`); this module only finds out
//! which request is being asked about and shapes the answer for the proxy.
//!
//! Each proxy names the original request its own way. [`original`] takes the first of
//! these that is present:
//!
//! 1. `X-Original-URL` (an absolute URL) and `X-Original-Method`: ingress-nginx.
//! 2. `X-Forwarded-Uri`, `X-Forwarded-Method`, `X-Forwarded-Host`, `X-Forwarded-Proto`:
//!    Traefik, Caddy.
//! 3. `X-Original-URI` (with `X-Original-Method`, `X-Forwarded-Host`, `X-Forwarded-Proto`):
//!    the nginx `auth_request` convention.
//! 4. The path below the check path and the check's own query, method and `Host`: Envoy,
//!    whose HTTP `ext_authz` appends the original path to `path_prefix` and keeps the
//!    method (<https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/ext_authz/v3/ext_authz.proto>).
//!
//! Every other one of these that is also present must name the same request (host,
//! canonical path and query, method), and none may repeat: most proxies pass the
//! client's own headers on to the check, so a client adding `X-Original-URL` that its
//! Traefik does not set would otherwise have a different request judged. Now it is
//! refused (`invalid_target`). The original path is canonicalised like a proxied one
//! (`crate::canon`), with the same `invalid_path` refusals.
//!
//! These headers are trusted because only the proxy can reach the check endpoint; the
//! deployment must keep it so (docs/forward-auth.md).
//!
//! A browser that must sign in gets the sign-in URL: as a `302` where the proxy passes
//! redirects to the browser (Traefik, Caddy, Envoy), else as `401` with
//! [`SIGNIN_HEADER`] (nginx `auth_request` and ingress-nginx treat anything but 2xx,
//! 401 and 403 as an error). `?redirect=1` / `?redirect=0` on the check path overrides
//! the choice.

use crate::canon::{self, CanonPath, PathProblem, TargetProblem};
use crate::pipeline::{self, Admission, Denial};
use crate::propagate::{self, Change};
use crate::refusal::Refusal;
use crate::runtime::{normalise_host, CompiledRoute, Runtime};
use http::{HeaderMap, HeaderValue, Method};

/// The check endpoint; every path below it is a check too (the Envoy form).
pub const CHECK_PATH: &str = "/.idfabric/auth";

/// The answer header naming the sign-in URL, for nginx `auth_request_set`.
pub const SIGNIN_HEADER: &str = "x-idfabric-signin";

/// The part of `path` below [`CHECK_PATH`] (`""` for the check path itself), or `None`
/// when `path` is not a check. Compared exactly: other spellings are not checks.
pub fn below_check_path(path: &str) -> Option<&str> {
    path.strip_prefix(CHECK_PATH).filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Which convention named the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `X-Original-URL` (ingress-nginx).
    OriginalUrl,
    /// `X-Forwarded-Uri` (Traefik, Caddy).
    ForwardedUri,
    /// `X-Original-URI` (nginx `auth_request`).
    OriginalUri,
    /// The check request's own path below [`CHECK_PATH`] (Envoy), or, when nothing else
    /// names a request, `/` on the check's `Host`.
    CheckPath,
}

/// What the proxy sent, as plain values.
pub struct CheckRequest<'a> {
    pub method: &'a Method,
    /// The check path's part below [`CHECK_PATH`], as sent (`""` for the path itself).
    pub rest: &'a str,
    /// The check request's query.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The check arrived over TLS, or (behind a trusted proxy) the client used https.
    pub tls: bool,
    /// The original client's address (behind a trusted proxy, what it says): adaptive
    /// MFA's `network_change`.
    pub client: Option<std::net::IpAddr>,
}

/// The request the proxy asks about.
#[derive(Debug)]
pub struct Original {
    pub source: Source,
    pub method: Method,
    pub https: bool,
    /// As named (port included): one authority without user information.
    pub host: String,
    pub path: CanonPath<'static>,
    /// The canonical path and the query, as the pipeline reads the request.
    pub uri: http::Uri,
}

/// One header's (or the check path's) idea of the original request.
struct Named {
    source: Source,
    host: String,
    path: CanonPath<'static>,
    query: Option<String>,
}

fn bad(p: TargetProblem) -> Refusal {
    Refusal::InvalidTarget(p)
}

/// The single value of header `name` (trimmed; an empty one counts as absent). A
/// repeated header is a conflict; one that is not visible ASCII is `problem`.
fn one<'h>(headers: &'h HeaderMap, name: &str, problem: TargetProblem) -> Result<Option<&'h str>, Refusal> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(bad(TargetProblem::ForwardedConflict));
    }
    let v = first.to_str().map_err(|_| bad(problem))?.trim();
    Ok((!v.is_empty()).then_some(v))
}

/// A host as one authority (`host` or `host:port`), without user information or a list.
fn host(h: Option<&str>) -> Result<String, Refusal> {
    let h = h.ok_or(bad(TargetProblem::NoHost))?;
    let ok = !h.contains([',', '@', '/']) && h.parse::<http::uri::Authority>().is_ok();
    ok.then(|| h.to_string()).ok_or(bad(TargetProblem::ForwardedHost))
}

/// `target` (`/path?query`, as sent) canonicalised.
fn named(source: Source, host: String, target: &str) -> Result<Named, Refusal> {
    if !target.starts_with('/') {
        return Err(bad(TargetProblem::ForwardedUri));
    }
    let (raw, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let path = canon::canonicalize(raw).map_err(Refusal::InvalidPath)?.into_owned();
    Ok(Named { source, host, path, query })
}

/// `X-Original-URL`: scheme (`https`?), authority and `/path?query` of an absolute URL.
fn absolute(url: &str) -> Result<(bool, String, String), Refusal> {
    let e = || bad(TargetProblem::ForwardedUrl);
    let uri: http::Uri = url.parse().map_err(|_| e())?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(e()),
    };
    let authority = uri.authority().map(|a| a.as_str()).filter(|a| !a.contains('@')).ok_or_else(e)?;
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = if pq.starts_with('/') { pq.to_string() } else { format!("/{pq}") };
    Ok((https, authority.to_string(), target))
}

/// The original request of a check: see the module docs for the order and the rule
/// that every convention present must agree.
pub fn original(req: &CheckRequest<'_>) -> Result<Original, Refusal> {
    let h = req.headers;
    let host_header = one(h, "host", TargetProblem::ForwardedHost)?;
    let forwarded_host = || -> Result<String, Refusal> {
        host(one(h, "x-forwarded-host", TargetProblem::ForwardedHost)?.or(host_header))
    };
    let mut all: Vec<Named> = Vec::with_capacity(2);
    let mut url_https = None;
    if let Some(url) = one(h, "x-original-url", TargetProblem::ForwardedUrl)? {
        let (https, authority, target) = absolute(url)?;
        url_https = Some(https);
        all.push(named(Source::OriginalUrl, host(Some(&authority))?, &target)?);
    }
    if let Some(uri) = one(h, "x-forwarded-uri", TargetProblem::ForwardedUri)? {
        all.push(named(Source::ForwardedUri, forwarded_host()?, uri)?);
    }
    if let Some(uri) = one(h, "x-original-uri", TargetProblem::ForwardedUri)? {
        all.push(named(Source::OriginalUri, forwarded_host()?, uri)?);
    }
    if !req.rest.is_empty() || all.is_empty() {
        // The check path itself, with nothing else naming a request, asks about `/`.
        let target = match (req.rest, req.query) {
            ("", _) => "/".to_string(),
            (rest, Some(q)) => format!("{rest}?{q}"),
            (rest, None) => rest.to_string(),
        };
        all.push(named(Source::CheckPath, host(host_header)?, &target)?);
    }
    let first = &all[0];
    let same = |n: &Named| {
        normalise_host(&n.host) == normalise_host(&first.host) && n.path.path() == first.path.path() && n.query == first.query
    };
    if !all.iter().all(same) {
        return Err(bad(TargetProblem::ForwardedConflict));
    }
    let method = method(req)?;
    let https = match url_https.filter(|_| first.source == Source::OriginalUrl) {
        Some(https) => https,
        None => match one(h, "x-forwarded-proto", TargetProblem::ForwardedProto)?.map(|p| p.split(',').next().unwrap_or("").trim()) {
            Some(p) if p.eq_ignore_ascii_case("https") => true,
            Some(p) if p.eq_ignore_ascii_case("http") => false,
            Some(_) => return Err(bad(TargetProblem::ForwardedProto)),
            None => req.tls,
        },
    };
    let Named { source, host, path, query } = all.swap_remove(0);
    let uri = match &query {
        Some(q) => format!("{}?{q}", path.path()),
        None => path.path().to_string(),
    }
    .parse()
    .map_err(|_| bad(TargetProblem::ForwardedUri))?;
    Ok(Original { source, method, https, host, path, uri })
}

/// The original method: `X-Original-Method` / `X-Forwarded-Method` (which must agree),
/// else the check's own (Envoy keeps it; nginx subrequests and Traefik and Caddy checks
/// are `GET` whatever the original was, so they must name it). With an appended path
/// (Envoy) the check's method is the original's, so a named one must match it.
fn method(req: &CheckRequest<'_>) -> Result<Method, Refusal> {
    let named: Vec<&str> = [
        one(req.headers, "x-original-method", TargetProblem::ForwardedMethod)?,
        one(req.headers, "x-forwarded-method", TargetProblem::ForwardedMethod)?,
    ]
    .into_iter()
    .flatten()
    .collect();
    let method = match named.first() {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| bad(TargetProblem::ForwardedMethod))?,
        None => req.method.clone(),
    };
    let appended = !req.rest.is_empty() && method != *req.method;
    if appended || named.iter().any(|m| *m != method.as_str()) {
        return Err(bad(TargetProblem::ForwardedConflict));
    }
    Ok(method)
}

/// The route and request a check was about, once its route is known (audit, metrics).
#[derive(Debug)]
pub struct Target {
    pub route: u32,
    pub host: String,
    /// The canonical path (no query).
    pub path: String,
    pub method: Method,
}

/// Where a browser that must sign in is sent.
#[derive(Debug, PartialEq, Eq)]
pub struct SignIn {
    /// Absolute: `{scheme}://{original host}/.idfabric/login?rd=<original path and query>`.
    pub url: String,
    /// Answer `302` to it (else `401` naming it in [`SIGNIN_HEADER`]).
    pub redirect: bool,
}

#[derive(Debug)]
pub enum Answer {
    /// `200` with these headers for the proxy to copy onto the request.
    Allow { admission: Admission, headers: Vec<(&'static str, HeaderValue)> },
    /// The refusal's status, problem+json and challenge; a sign-in for a browser.
    Refuse { denial: Denial, signin: Option<SignIn> },
}

/// A check's outcome.
#[derive(Debug)]
pub struct Checked {
    /// `None` when the check was refused before a route was found.
    pub target: Option<Target>,
    pub answer: Answer,
}

/// Answers one check.
pub async fn check(rt: &Runtime, req: &CheckRequest<'_>) -> Checked {
    let refused = |r: Refusal, target| Checked { target, answer: Answer::Refuse { denial: Denial::plain(r), signin: None } };
    let original = match original(req) {
        Ok(o) => o,
        Err(r) => return refused(r, None),
    };
    let params = || Refusal::InvalidPath(PathProblem::ParamsNotAllowed);
    let Some(route) = rt.routes.find(&original.host, original.path.route_path()) else {
        return refused(if original.path.has_params() { params() } else { Refusal::ForwardNoRoute }, None);
    };
    let target = Some(Target {
        route: route.index,
        host: original.host.clone(),
        path: original.path.path().to_string(),
        method: original.method.clone(),
    });
    if original.path.has_params() && !route.spec.path_params {
        return refused(params(), target);
    }
    // The session cookie's name follows the scheme the browser used (`__Host-` over https).
    let answer = match pipeline::admit_request(rt, route, &original.method, req.headers, &original.uri, original.https, req.client).await {
        Ok(admission) => Answer::Allow { headers: answer_headers(rt, route, &admission), admission },
        Err(denial) => {
            let signin = denial.redirect.as_deref().map(|to| SignIn {
                url: format!("{}://{}{to}", if original.https { "https" } else { "http" }, original.host),
                redirect: redirects(req, original.source),
            });
            Answer::Refuse { denial, signin }
        }
    };
    Checked { target, answer }
}

/// Whether a sign-in is a `302`: asked with `redirect=1|0` on the check path (not on an
/// appended path, whose query is the original's), else where the proxy passes the
/// redirect to the browser: Traefik and Caddy (`X-Forwarded-Uri`) and Envoy (which
/// returns a denied check's status and headers to the client).
fn redirects(req: &CheckRequest<'_>, source: Source) -> bool {
    let asked = match (req.rest, req.query) {
        ("", Some(q)) => url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "redirect").map(|(_, v)| v),
        _ => None,
    };
    match asked.as_deref() {
        Some("1") => true,
        Some("0") => false,
        _ => matches!(source, Source::ForwardedUri | Source::CheckPath),
    }
}

/// oauth2-proxy's names for the same values (`X-Auth-Request-*`), so a proxy set up for
/// it copies ours unchanged. Its `X-Auth-Request-Access-Token` has no counterpart: a
/// provider's access token never leaves idfabric (`X-Identity-Token` is the app's).
fn alias(name: &str) -> Option<&'static str> {
    match name {
        "x-identity-sub" => Some("x-auth-request-user"),
        "x-identity-email" => Some("x-auth-request-email"),
        "x-identity-groups" => Some("x-auth-request-groups"),
        "x-identity-username" => Some("x-auth-request-preferred-username"),
        _ => None,
    }
}

/// The allowed check's headers: the route's name, then exactly what the proxy would
/// send upstream (`propagate::route_headers`; a removed `Authorization` is the absence
/// of one here), each identity header followed by its alias.
fn answer_headers(rt: &Runtime, route: &CompiledRoute, admission: &Admission) -> Vec<(&'static str, HeaderValue)> {
    let mut out = Vec::with_capacity(16);
    if let Ok(v) = HeaderValue::from_str(&route.spec.name) {
        out.push(("x-identity-route", v));
    }
    let verified = admission.verified().map(|v| &**v);
    let _ = propagate::route_headers(rt.minter.as_ref(), &route.spec, route.index, verified, |change| {
        match change {
            Change::Set(name, value) => {
                if let Some(a) = alias(name) {
                    out.push((a, value.clone()));
                }
                out.push((name, value));
            }
            Change::SetAuthorization(value) => out.push(("authorization", value)),
            Change::RemoveAuthorization => {}
        }
        Ok::<(), std::convert::Infallible>(())
    });
    out
}

#[cfg(test)]
mod tests;
