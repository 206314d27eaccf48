//! The paths idfabric answers itself on the proxy listener: the dev providers'
//! discovery and keys, the broker's discovery and keys, forward-auth and `/me`.

use super::respond;
use crate::pipeline;
use crate::propagate;
use crate::providers::{dev, dev_op};
use crate::canon::PathProblem;
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

pub async fn handle(rt: &Runtime, session: &mut Session, path: &str) -> Result<Handled> {
    if let Some(rest) = path.strip_prefix(dev::PATH_PREFIX) {
        return dev_provider(rt, session, rest).await;
    }
    if matches!(path, "/.idfabric/login" | "/.idfabric/callback" | "/.idfabric/logout" | "/.idfabric/logged-out" | "/.idfabric/session") {
        let body = read_body(session).await?;
        let Some(body) = body else {
            return refuse(session, Refusal::Malformed("request body larger than 16 KiB"), None).await;
        };
        let (reply, status) = {
            let req = web_request(session, path, &body);
            let r = crate::login::handle(rt, &req).await;
            let s = r.status;
            (r, s)
        };
        respond::reply(session, &reply).await?;
        return Ok(Handled { status, reason: reply.reason });
    }
    if let Some(b) = &rt.config.broker {
        if under(path, &b.path) {
            return broker(rt, session, &path[b.path.len()..]).await;
        }
    }
    match path {
        "/.idfabric/auth" => forward_auth(rt, session).await,
        "/.idfabric/me" => me(rt, session).await,
        crate::revocation::backchannel::PATH => backchannel_logout(rt, session).await,
        _ => refuse(session, Refusal::NoRoute, None).await,
    }
}

/// OpenID Connect Back-Channel Logout from an upstream provider (`crate::revocation::backchannel`).
async fn backchannel_logout(rt: &Runtime, session: &mut Session) -> Result<Handled> {
    let reply = match read_body(session).await? {
        None => crate::revocation::backchannel::too_large(),
        Some(body) => {
            let path = session.req_header().uri.path().to_string();
            let req = web_request(session, &path, &body);
            crate::revocation::backchannel::handle(rt, &req).await
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

async fn dev_provider(rt: &Runtime, session: &mut Session, rest: &str) -> Result<Handled> {
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(p) = rt.registry.by_id(id).filter(|p| p.dev_signer.is_some()) else {
        return refuse(session, Refusal::NoRoute, None).await;
    };
    let signer = p.dev_signer.as_ref().expect("filtered on dev_signer");
    match sub {
        ".well-known/openid-configuration" => ok_json(session, &dev_op::discovery(&p.spec)).await,
        "jwks" => ok_json(session, &dev_op::jwks(signer)).await,
        _ => {
            let Some(body) = read_body(session).await? else {
                return refuse(session, Refusal::Malformed("request body larger than 16 KiB"), None).await;
            };
            let path = session.req_header().uri.path().to_string();
            let reply = {
                let req = web_request(session, &path, &body);
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
async fn broker(rt: &Runtime, session: &mut Session, _rest: &str) -> Result<Handled> {
    let reply = match read_body(session).await? {
        None => crate::broker::too_large(),
        Some(body) => {
            let path = session.req_header().uri.path().to_string();
            let req = web_request(session, &path, &body);
            crate::broker::handle(rt, &req).await
        }
    };
    respond::reply(session, &reply).await?;
    Ok(Handled { status: reply.status, reason: reply.reason })
}

/// nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz (HTTP): the original
/// host and URI come from `X-Forwarded-Host` / `X-Forwarded-Uri` (or `X-Original-URI`).
async fn forward_auth(rt: &Runtime, session: &mut Session) -> Result<Handled> {
    forward_auth_audited(rt, session, &mut super::ForwardDecision::default()).await
}

/// Forward-auth, recording its decision in `audit` for the audit line.
pub(super) async fn forward_auth_audited(rt: &Runtime, session: &mut Session, audit: &mut super::ForwardDecision) -> Result<Handled> {
    let req = session.req_header();
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let host = header("x-forwarded-host").or_else(|| header("host")).unwrap_or_default();
    let uri = header("x-forwarded-uri").or_else(|| header("x-original-uri")).unwrap_or_else(|| "/".into());
    let (raw_path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri.as_str(), None),
    };
    // The same canonical path the proxy would route on (`crate::canon`).
    let path = match crate::canon::canonicalize(raw_path) {
        Ok(p) => p,
        Err(problem) => return refuse(session, Refusal::InvalidPath(problem), None).await,
    };
    let Some(route) = rt.routes.find(&host, path.route_path()) else {
        let r = if path.has_params() { Refusal::InvalidPath(PathProblem::ParamsNotAllowed) } else { Refusal::NoRoute };
        return refuse(session, r, None).await;
    };
    audit.route(route.index, &host, path.path());
    if path.has_params() && !route.spec.path_params {
        let r = Refusal::InvalidPath(PathProblem::ParamsNotAllowed);
        audit.refused(&r);
        return refuse(session, r, Some(&route.spec.name)).await;
    }
    let original: http::Uri = match query {
        Some(q) => format!("{}?{q}", path.path()),
        None => path.path().to_string(),
    }
    .parse()
    .unwrap_or_else(|_| http::Uri::from_static("/"));
    match pipeline::admit(rt, route, &session.req_header().headers, &original, is_tls(session)).await {
        Ok(adm) => {
            audit.allowed(&adm);
            let mut h = pingora::http::ResponseHeader::build(200, Some(16))?;
            h.insert_header("x-identity-route", route.spec.name.as_str())?;
            // The same headers the proxy would send upstream; `Authorization` only when the
            // route replaces it (a removal is the absence of one in this answer).
            let verified = adm.verified().map(|v| &**v);
            propagate::route_headers(rt.minter.as_ref(), &route.spec, route.index, verified, |change| {
                match change {
                    propagate::Change::Set(name, value) => h.insert_header(name, value)?,
                    propagate::Change::SetAuthorization(value) => h.insert_header(http::header::AUTHORIZATION, value)?,
                    propagate::Change::RemoveAuthorization => {}
                }
                Ok::<_, Box<pingora::Error>>(())
            })?;
            h.insert_header("content-length", "0")?;
            h.insert_header("cache-control", "no-store")?;
            session.write_response_header(Box::new(h), true).await?;
            Ok(Handled { status: 200, reason: "ok" })
        }
        Err(d) => {
            audit.denied(&d);
            refuse(session, d.refusal, Some(&route.spec.name)).await
        }
    }
}

/// The caller's normalised identity (bearer token from any enabled provider).
async fn me(rt: &Runtime, session: &mut Session) -> Result<Handled> {
    let headers = session.req_header().headers.clone();
    let cred = match crate::credential::extract(&headers, &rt.config.session.cookie, is_tls(session)) {
        Ok(crate::credential::Credential::Bearer(t)) => t.to_string(),
        Ok(crate::credential::Credential::Session(id)) => {
            return match pipeline::session(rt, id).await {
                Ok(v) => ok_json(session, &serde_json::to_value(&v.identity).unwrap_or_default()).await,
                Err(r) => refuse(session, r, None).await,
            };
        }
        Ok(crate::credential::Credential::None) => return refuse(session, Refusal::NoCredential, None).await,
        Err(r) => return refuse(session, r, None).await,
    };
    match rt.registry.verify(&cred, None).await {
        Ok(v) => ok_json(session, &serde_json::to_value(&v.identity).unwrap_or_default()).await,
        Err(e) => refuse(session, e.refusal, None).await,
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

/// Whether the request arrived over TLS (the scheme decides cookie names).
pub fn is_tls(session: &Session) -> bool {
    session.digest().and_then(|d| d.ssl_digest.as_ref()).is_some()
}

fn web_request<'a>(session: &'a Session, path: &'a str, body: &'a [u8]) -> crate::web::Request<'a> {
    let req = session.req_header();
    let host = req
        .uri
        .host()
        .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let tls = is_tls(session);
    crate::web::Request {
        method: req.method.as_str(),
        host,
        path,
        query: req.uri.query().unwrap_or(""),
        headers: &req.headers,
        body,
        tls,
        client: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
    }
}
