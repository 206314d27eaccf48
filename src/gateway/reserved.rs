//! The paths idfabric answers itself on the proxy listener: the dev providers'
//! discovery and keys, the broker's discovery and keys, forward-auth and `/me`.
//! (Forward-auth checks reach [`forward_auth`] straight from the gateway's resolver,
//! which recognises the check path before canonicalising it.)

use super::respond;
use crate::pipeline;
use crate::providers::{dev, dev_op};
use crate::forward_auth;
use crate::forwarded::Origin;
use crate::refusal::Refusal;
use crate::runtime::Runtime;
use pingora::proxy::Session;
use pingora::Result;

/// What a reserved path produced, for logging and metrics.
pub struct Handled {
    pub status: u16,
    pub reason: &'static str,
}

/// Whether the canonical `path` is answered here rather than proxied. Compared like
/// route prefixes (ASCII case-insensitively), so no spelling of a reserved path that a
/// route would take for it (`/.IDFABRIC/me`, `/Broker/token`) is proxied upstream;
/// spellings other than the exact one then get `404 no_route` here.
pub fn is_reserved(rt: &Runtime, path: &str) -> bool {
    under_ci(path, "/.idfabric") || rt.config.broker.as_ref().is_some_and(|b| !b.path.is_empty() && under_ci(path, &b.path))
}

fn under(path: &str, base: &str) -> bool {
    path.strip_prefix(base).is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

fn under_ci(path: &str, base: &str) -> bool {
    let (p, b) = (path.as_bytes(), base.as_bytes());
    p.len() >= b.len() && p[..b.len()].eq_ignore_ascii_case(b) && (p.len() == b.len() || p[b.len()] == b'/')
}

/// `origin` is the request as the client made it (`crate::forwarded`): sign-in, the
/// broker and the dev provider build their URLs and cookie names from it.
pub async fn handle(rt: &Runtime, session: &mut Session, path: &str, origin: &Origin) -> Result<Handled> {
    if let Some(rest) = path.strip_prefix(dev::PATH_PREFIX) {
        return dev_provider(rt, session, rest, origin).await;
    }
    if crate::login::PATHS.contains(&path) {
        let body = read_body(session).await?;
        let Some(body) = body else {
            return refuse(session, Refusal::Malformed("request body larger than 16 KiB"), None).await;
        };
        let (reply, status) = {
            let req = web_request(session, origin, path, &body);
            let r = crate::login::handle(rt, &req).await;
            let s = r.status;
            (r, s)
        };
        respond::reply(session, &reply).await?;
        return Ok(Handled { status, reason: reply.reason });
    }
    if let Some(b) = &rt.config.broker {
        if under(path, &b.path) {
            return broker(rt, session, &path[b.path.len()..], origin).await;
        }
    }
    match path {
        "/.idfabric/me" => me(rt, session, origin).await,
        crate::revocation::backchannel::PATH => backchannel_logout(rt, session, origin).await,
        crate::revocation::ssf::PATH => ssf_events(rt, session, origin).await,
        p if crate::scim::is_path(p) => {
            let reply = match read_body(session).await? {
                None => crate::scim::too_large(),
                Some(body) => crate::scim::handle(rt, &web_request(session, origin, p, &body)).await,
            };
            respond::reply(session, &reply).await?;
            Ok(Handled { status: reply.status, reason: reply.reason })
        }
        _ => refuse(session, Refusal::NoRoute, None).await,
    }
}

/// OpenID Connect Back-Channel Logout from an upstream provider (`crate::revocation::backchannel`).
async fn backchannel_logout(rt: &Runtime, session: &mut Session, origin: &Origin) -> Result<Handled> {
    let reply = match read_body(session).await? {
        None => crate::revocation::backchannel::too_large(),
        Some(body) => {
            let path = session.req_header().uri.path().to_string();
            let req = web_request(session, origin, &path, &body);
            crate::revocation::backchannel::handle(rt, &req).await
        }
    };
    respond::reply(session, &reply).await?;
    Ok(Handled { status: reply.status, reason: reply.reason })
}

/// A Shared Signals event pushed by a provider's transmitter (`crate::revocation::ssf`).
async fn ssf_events(rt: &Runtime, session: &mut Session, origin: &Origin) -> Result<Handled> {
    let reply = match read_body(session).await? {
        None => crate::revocation::ssf::too_large(),
        Some(body) => {
            let path = session.req_header().uri.path().to_string();
            let req = web_request(session, origin, &path, &body);
            crate::revocation::ssf::handle(rt, &req).await
        }
    };
    respond::reply(session, &reply).await?;
    Ok(Handled { status: reply.status, reason: reply.reason })
}

async fn refuse(session: &mut Session, r: Refusal, route: Option<&str>) -> Result<Handled> {
    respond::refusal(session, &r, route).await?;
    Ok(Handled { status: r.status(), reason: r.reason() })
}

async fn ok_json(session: &mut Session, body: &serde_json::Value) -> Result<Handled> {
    respond::json(session, 200, body).await?;
    Ok(Handled { status: 200, reason: "ok" })
}

async fn dev_provider(rt: &Runtime, session: &mut Session, rest: &str, origin: &Origin) -> Result<Handled> {
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(p) = rt.registry.by_id(id).filter(|p| p.dev_signer.is_some()) else {
        return refuse(session, Refusal::NoRoute, None).await;
    };
    let signer = p.dev_signer.as_ref().expect("filtered on dev_signer");
    // An azure_b2c-shaped dev provider's per-policy documents.
    if let Some((policy, leaf)) = sub.split_once('/') {
        if let Some(signer) = p.dev_policy_signer(policy) {
            match leaf {
                "v2.0/.well-known/openid-configuration" => return ok_json(session, &dev_op::discovery_for(&p.spec, policy)).await,
                "jwks" => return ok_json(session, &dev_op::jwks(signer)).await,
                _ => {}
            }
        }
    }
    match sub {
        ".well-known/openid-configuration" => ok_json(session, &dev_op::discovery(&p.spec)).await,
        "jwks" => ok_json(session, &dev_op::jwks(signer)).await,
        _ => {
            let Some(body) = read_body(session).await? else {
                return refuse(session, Refusal::Malformed("request body larger than 16 KiB"), None).await;
            };
            let path = session.req_header().uri.path().to_string();
            let reply = {
                let req = web_request(session, origin, &path, &body);
                let known = |h: &str| rt.routes.find(h, "/.idfabric/logged-out").is_some();
                crate::providers::dev_op::handle(p, sub, &req, &known)
            };
            match reply {
                Some(r) => {
                    respond::reply(session, &r).await?;
                    Ok(Handled { status: r.status, reason: r.reason })
                }
                None => refuse(session, Refusal::NoRoute, None).await,
            }
        }
    }
}

/// Everything under the broker's issuer path goes to `crate::broker` (bodies up to 16 KiB).
async fn broker(rt: &Runtime, session: &mut Session, _rest: &str, origin: &Origin) -> Result<Handled> {
    let reply = match read_body(session).await? {
        None => crate::broker::too_large(),
        Some(body) => {
            let path = session.req_header().uri.path().to_string();
            let req = web_request(session, origin, &path, &body);
            crate::broker::handle(rt, &req).await
        }
    };
    respond::reply(session, &reply).await?;
    Ok(Handled { status: reply.status, reason: reply.reason })
}

/// A forward-auth check (`crate::forward_auth` decides), written for the proxy that
/// asked and recorded in `audit`: `200` with the headers to copy, the refusal as
/// problem+json, and for a browser that must sign in a `302` or a `401` naming the
/// sign-in URL in `X-Idfabric-Signin`.
pub(super) async fn forward_auth(rt: &Runtime, session: &mut Session, rest: &str, origin: &Origin, audit: &mut super::ForwardDecision) -> Result<Handled> {
    let checked = {
        let req = session.req_header();
        let check = forward_auth::CheckRequest {
            method: &req.method,
            rest,
            query: req.uri.query(),
            headers: &req.headers,
            // Behind a trusted TLS-terminating proxy: what the client used.
            tls: origin.https,
            client: origin.client_ip,
        };
        forward_auth::check(rt, &check).await
    };
    if let Some(t) = &checked.target {
        audit.target(t);
    }
    let route = checked.target.as_ref().map(|t| rt.routes.routes[t.route as usize].spec.name.as_str());
    match checked.answer {
        forward_auth::Answer::Allow { admission, headers } => {
            audit.allowed(&admission);
            let mut h = pingora::http::ResponseHeader::build(200, Some(headers.len() + 3))?;
            for (name, value) in headers {
                h.append_header(name, value)?;
            }
            if let Some(id) = session.req_header().headers.get(crate::trace::REQUEST_ID_NAME) {
                h.insert_header(crate::trace::REQUEST_ID, id.clone())?;
            }
            h.insert_header("content-length", "0")?;
            h.insert_header("cache-control", "no-store")?;
            session.write_response_header(Box::new(h), true).await?;
            Ok(Handled { status: 200, reason: "ok" })
        }
        forward_auth::Answer::Refuse { denial, signin } => {
            audit.denied(&denial);
            crate::risk::note_denial(&denial.refusal, denial.verified.as_deref().map(|v| &v.identity));
            let r = &denial.refusal;
            match signin {
                Some(s) if s.redirect => {
                    let headers = [("location", s.url.as_str()), (forward_auth::SIGNIN_HEADER, s.url.as_str()), ("cache-control", "no-store")];
                    respond::send(session, 302, &headers, Default::default()).await?;
                    Ok(Handled { status: 302, reason: r.reason() })
                }
                Some(s) => {
                    respond::refusal_with(session, r, route, &[(forward_auth::SIGNIN_HEADER, s.url.as_str())]).await?;
                    Ok(Handled { status: r.status(), reason: r.reason() })
                }
                None => refuse(session, r.clone(), route).await,
            }
        }
    }
}

/// The caller's normalised identity (bearer token from any enabled provider, or the
/// browser session); with `?explain=1` also how each route of this host decides for it.
async fn me(rt: &Runtime, session: &mut Session, origin: &Origin) -> Result<Handled> {
    let explain = match ExplainQuery::parse(session.req_header().uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(r) => return refuse(session, r, None).await,
    };
    let headers = session.req_header().headers.clone();
    let (verified, from_session) = match crate::credential::extract(&headers, &rt.config.session.cookie_name(origin.https)) {
        Ok(crate::credential::Credential::Bearer(t)) => match rt.registry.verify(t, None).await {
            Ok(v) => (v, false),
            Err(e) => return refuse(session, e.refusal, None).await,
        },
        Ok(crate::credential::Credential::Session(id)) => match pipeline::session(rt, id).await {
            Ok(v) => (v, true),
            Err(r) => return refuse(session, r, None).await,
        },
        Ok(crate::credential::Credential::None) => return refuse(session, Refusal::NoCredential, None).await,
        Err(r) => return refuse(session, r, None).await,
    };
    let identity = serde_json::to_value(&verified.identity).unwrap_or_default();
    let Some(q) = explain else { return ok_json(session, &identity).await };
    let host = super::host_of(session.req_header()).to_string();
    let routes = match explain_routes(rt, &host, &q, &verified, from_session) {
        Ok(r) => r,
        Err(r) => return refuse(session, r, None).await,
    };
    let body = serde_json::json!({ "identity": identity, "host": crate::runtime::normalise_host(&host), "routes": routes });
    ok_json(session, &body).await
}

/// `/.idfabric/me?explain=1[&method=M][&path=P]`: `None` without `explain` (or with
/// `explain=0`).
#[derive(Debug, Default)]
struct ExplainQuery {
    /// Upper-cased; `GET` when not given.
    method: Option<String>,
    /// Canonicalised like a request path (`crate::canon`).
    path: Option<String>,
}

impl ExplainQuery {
    fn parse(query: &str) -> std::result::Result<Option<ExplainQuery>, Refusal> {
        use crate::canon::TargetProblem;
        let bad = Refusal::InvalidTarget(TargetProblem::ExplainQuery);
        let (mut on, mut q) = (false, ExplainQuery::default());
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "explain" => match &*v {
                    "1" | "true" => on = true,
                    "0" | "false" => on = false,
                    _ => return Err(bad),
                },
                "method" => {
                    // A method token (RFC 9110 §9.1), bounded.
                    if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
                        return Err(bad);
                    }
                    q.method = Some(v.to_ascii_uppercase());
                }
                "path" => {
                    if !v.starts_with('/') || v.len() > 2048 {
                        return Err(bad);
                    }
                    let canon = crate::canon::canonicalize(&v).map_err(Refusal::InvalidPath)?;
                    if canon.has_params() {
                        return Err(Refusal::InvalidPath(crate::canon::PathProblem::ParamsNotAllowed));
                    }
                    q.path = Some(canon.route_path().to_string());
                }
                _ => {}
            }
        }
        Ok(on.then_some(q))
    }
}

/// The explanations `/.idfabric/me?explain=1` gives: with `path=`, the route that path
/// selects on this host (`404 no_route` when none does); without, every route of this
/// host, each judged at its `path_prefix`. Only this host's routes: a caller learns how
/// the site they are on decides, not the rest of the configuration.
fn explain_routes(rt: &Runtime, host: &str, q: &ExplainQuery, verified: &std::sync::Arc<crate::providers::Verified>, from_session: bool) -> std::result::Result<Vec<pipeline::Explanation>, Refusal> {
    let method = q.method.as_deref().unwrap_or("GET");
    if let Some(path) = &q.path {
        let route = rt.routes.find(host, path).ok_or(Refusal::NoRoute)?;
        return Ok(vec![pipeline::explain(rt, route, verified, method, path, from_session)]);
    }
    let host = crate::runtime::normalise_host(host);
    Ok(rt
        .routes
        .routes
        .iter()
        .filter(|r| host_matches(&r.spec.host, &host))
        .map(|r| pipeline::explain(rt, r, verified, method, &r.spec.path_prefix, from_session))
        .collect())
}

/// As `RouteTable::find` matches hosts (`host` normalised).
fn host_matches(m: &crate::config::HostMatch, host: &str) -> bool {
    use crate::config::HostMatch;
    match m {
        HostMatch::Any => true,
        HostMatch::Exact(h) => h == host,
        HostMatch::Wildcard(suffix) => host.ends_with(suffix.as_str()) && host.len() > suffix.len(),
    }
}

/// Reads the request body up to `web::MAX_BODY`; `None` when it is larger.
async fn read_body(session: &mut Session) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > crate::web::MAX_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Whether the request arrived over TLS on this connection. Behind a TLS-terminating
/// proxy the client's scheme is [`origin`]'s `https` instead.
pub fn is_tls(session: &Session) -> bool {
    session.digest().and_then(|d| d.ssl_digest.as_ref()).is_some()
}

/// The request as the client made it (`crate::forwarded`): the TCP peer, TLS and `Host`
/// of this connection, or what a peer in `server.trusted_proxies` says about them;
/// `server.public_url` pins the scheme and host.
pub fn origin(rt: &Runtime, session: &Session) -> Origin {
    let req = session.req_header();
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let server = &rt.config.server;
    crate::forwarded::derive(peer, is_tls(session), super::host_of(req), &req.headers, &server.trusted_proxies, server.public_url.as_ref())
}

/// The request for an endpoint idfabric serves itself, as the client made it: host,
/// scheme and client address from `origin`.
fn web_request<'a>(session: &'a Session, origin: &'a Origin, path: &'a str, body: &'a [u8]) -> crate::web::Request<'a> {
    let req = session.req_header();
    crate::web::Request {
        method: req.method.as_str(),
        host: &origin.authority,
        path,
        query: req.uri.query().unwrap_or(""),
        headers: &req.headers,
        body,
        tls: origin.https,
        client: origin.client_ip,
    }
}
