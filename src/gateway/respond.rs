//! Writing idfabric's own responses (refusals, JSON documents, redirects) through
//! Pingora's downstream session.

use crate::refusal::Refusal;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes a complete response with the given headers and body. Headers are appended,
/// so a name may repeat (`Set-Cookie`). The request's `X-Request-Id` (set by the
/// gateway's `request_filter`) is echoed, so a refused caller can quote it.
pub async fn send(session: &mut Session, status: u16, headers: &[(&str, &str)], body: Bytes) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(headers.len() + 3))?;
    for (k, v) in headers {
        h.append_header(k.to_string(), *v)?;
    }
    if let Some(id) = session.req_header().headers.get(crate::trace::REQUEST_ID_NAME) {
        h.insert_header(crate::trace::REQUEST_ID, id.clone())?;
    }
    h.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(h), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

pub async fn json(session: &mut Session, status: u16, body: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(body).unwrap_or_default();
    send(session, status, &[("content-type", "application/json"), ("cache-control", "no-store")], text.into()).await
}

/// problem+json with `WWW-Authenticate` where the refusal has a challenge.
pub async fn refusal(session: &mut Session, r: &Refusal, route: Option<&str>) -> Result<()> {
    refusal_with(session, r, route, &[]).await
}

/// [`refusal`] with more headers (forward-auth's sign-in URL).
pub async fn refusal_with(session: &mut Session, r: &Refusal, route: Option<&str>, extra: &[(&str, &str)]) -> Result<()> {
    let body = r.problem_json(route);
    let challenge = r.challenge();
    let mut headers = vec![("content-type", "application/problem+json"), ("cache-control", "no-store")];
    if let Some(c) = &challenge {
        headers.push(("www-authenticate", c.as_str()));
    }
    headers.extend_from_slice(extra);
    send(session, r.status(), &headers, body.into()).await
}

/// 302 (login page, step-up).
pub async fn redirect(session: &mut Session, location: &str) -> Result<()> {
    send(session, 302, &[("location", location), ("cache-control", "no-store")], Bytes::new()).await
}

/// A refusal as an HTML page, for browsers with a session.
pub async fn refusal_page(
    session: &mut Session,
    rt: &crate::runtime::Runtime,
    r: &Refusal,
    route: &crate::runtime::CompiledRoute,
) -> Result<()> {
    let host = session.req_header().uri.host().map(str::to_string).or_else(|| {
        session.req_header().headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string)
    });
    let theme = crate::login::theme_for(rt, host.as_deref().unwrap_or(""), &route.spec.path_prefix);
    // A browser cannot act on an RFC 9470 challenge: where no step-up was possible the
    // missing second factor is an access denial with a clear page.
    let (status, title) = match r {
        Refusal::MfaRequired { .. } => (403, "Access denied"),
        _ => match r.status() {
            403 => (403, "Access denied"),
            503 => (503, "Temporarily unavailable"),
            s => (s, "Sign-in required"),
        },
    };
    let body = crate::web::pages::error_page(&theme, status, title, &r.to_string(), Some("/.idfabric/logout"));
    reply(session, &crate::web::Reply::html(status, body, r.reason())).await
}

/// Writes a `web::Reply`.
pub async fn reply(session: &mut Session, r: &crate::web::Reply) -> Result<()> {
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send(session, r.status, &headers, Bytes::from(r.body.clone())).await
}
