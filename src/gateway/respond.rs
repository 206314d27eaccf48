//! Writing idfabric's own responses (refusals, JSON documents, redirects) through
//! Pingora's downstream session.

use crate::refusal::Refusal;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes a complete response with the given headers and body.
pub async fn send(session: &mut Session, status: u16, headers: &[(&str, &str)], body: Bytes) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(headers.len() + 2))?;
    for (k, v) in headers {
        h.insert_header(k.to_string(), *v)?;
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
    let body = r.problem_json(route);
    let challenge = r.challenge();
    let mut headers = vec![("content-type", "application/problem+json"), ("cache-control", "no-store")];
    if let Some(c) = &challenge {
        headers.push(("www-authenticate", c.as_str()));
    }
    send(session, r.status(), &headers, body.into()).await
}

/// 302 to the login page, remembering where the browser was going.
pub async fn login_redirect(session: &mut Session, path_and_query: &str) -> Result<()> {
    let rd: String = url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    let location = format!("/.idfabric/login?rd={rd}");
    send(session, 302, &[("location", &location), ("cache-control", "no-store")], Bytes::new()).await
}
