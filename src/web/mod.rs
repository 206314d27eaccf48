//! The web pieces shared by every endpoint idfabric serves itself (sign-in, the broker,
//! the dev provider's OP endpoints, the gateway's own refusal pages): plain
//! request/reply values, cookies, the browser binding of a transaction and the HTML
//! pages. Their logic is testable without Pingora and the gateway only copies a
//! `Reply` onto the wire.
//!
//! This module sits below `login`, `broker`, `gateway` and `providers::dev_op`, so it
//! knows none of them: it depends only on `config` (branding), `identity` (population)
//! and `refusal` (problem bodies).

pub mod binding;
pub mod pages;

use crate::config::SessionSpec;
use http::HeaderMap;

/// The parts of a request an endpoint may read.
pub struct Request<'a> {
    pub method: &'a str,
    /// Host the client addressed (with port), e.g. `app.localhost:8080`: `Host`, or
    /// behind a trusted proxy the host it names, or `server.public_url`'s.
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The request body (only read for POST, at most `MAX_BODY` bytes).
    pub body: &'a [u8],
    /// The client used https: this connection is TLS, or a trusted proxy terminated
    /// TLS for it, or `server.public_url` is https. Decides `Secure` and `__Host-`.
    pub tls: bool,
    /// The client's address: the TCP peer, or behind trusted proxies the forwarded
    /// client (`None` on a Unix socket).
    pub client: Option<std::net::IpAddr>,
}

/// Largest body the built-in endpoints accept.
pub const MAX_BODY: usize = 16 * 1024;

impl Request<'_> {
    pub fn param(&self, name: &str) -> Option<String> {
        param(self.query, name)
    }

    pub fn form(&self, name: &str) -> Option<String> {
        param(std::str::from_utf8(self.body).unwrap_or(""), name)
    }

    /// A query parameter, or for POST a form field.
    pub fn input(&self, name: &str) -> Option<String> {
        if self.method == "POST" {
            self.form(name).or_else(|| self.param(name))
        } else {
            self.param(name)
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// `scheme://host` of this request.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.host)
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        session_cookie(self.headers, name)
    }

    /// The key under which this request's client is limited: [`client_key`].
    pub fn client_key(&self) -> String {
        client_key(self.client)
    }
}

/// Who "one client" is for per-client limits: the client's address (the TCP peer, or
/// behind trusted proxies the forwarded client: `Request::client`); for IPv6 its /64
/// (one subscriber's usual allocation, which a client can otherwise walk through).
pub fn client_key(peer: Option<std::net::IpAddr>) -> String {
    match peer {
        Some(std::net::IpAddr::V4(a)) => a.to_string(),
        Some(std::net::IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "local".into(),
    }
}

/// First value of `name` in an `application/x-www-form-urlencoded` string.
pub fn param(qs: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(qs.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// An HTTP response produced by idfabric itself.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Fixed reason string for metrics and logs (`ok` on success).
    pub reason: &'static str,
}

impl Reply {
    pub fn html(status: u16, body: String, reason: &'static str) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type", "text/html; charset=utf-8".into()),
                ("cache-control", "no-store".into()),
                ("x-frame-options", "DENY".into()),
                ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action *; frame-ancestors 'none'".into()),
                ("referrer-policy", "no-referrer".into()),
            ],
            body: body.into_bytes(),
            reason,
        }
    }

    pub fn json(status: u16, v: &serde_json::Value, reason: &'static str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into()), ("cache-control", "no-store".into())],
            body: serde_json::to_vec_pretty(v).unwrap_or_default(),
            reason,
        }
    }

    pub fn redirect(location: &str, reason: &'static str) -> Reply {
        Reply {
            status: 302,
            headers: vec![("location", location.to_string()), ("cache-control", "no-store".into())],
            body: Vec::new(),
            reason,
        }
    }

    pub fn problem(r: &crate::refusal::Refusal) -> Reply {
        let mut headers = vec![("content-type", "application/problem+json".into()), ("cache-control", "no-store".into())];
        if let Some(c) = r.challenge() {
            headers.push(("www-authenticate", c));
        }
        Reply { status: r.status(), headers, body: r.problem_json(None).into_bytes(), reason: r.reason() }
    }

    pub fn with_cookie(mut self, cookie: String) -> Reply {
        self.headers.push(("set-cookie", cookie));
        self
    }
}

/// Builds a `Set-Cookie` value. Secure cookies get the `__Host-` prefix rules:
/// Secure, Path=/, no Domain.
pub fn cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    match max_age {
        Some(s) => c.push_str(&format!("; Max-Age={s}")),
        None => {}
    }
    c
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn session_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A cookie's name on this request: `__Host-` prefixed over TLS.
pub fn cookie_name(base: &str, tls: bool) -> String {
    if tls {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

/// `Set-Cookie` for the session id: named by [`SessionSpec::cookie_name`], host-only,
/// or with `Domain=` the `session.cookie_domain` when one is configured.
pub fn set_session_cookie(spec: &SessionSpec, id: &str, max_age: i64, tls: bool) -> String {
    let mut c = cookie(&spec.cookie_name(tls), id, Some(max_age), tls);
    if let Some(d) = &spec.cookie_domain {
        c.push_str(&format!("; Domain={d}"));
    }
    c
}

/// Clears every spelling of the session cookie the scheme can touch: over TLS the
/// `__Host-` one, the `__Secure-` one with `session.cookie_domain` (same `Domain`, or
/// the browser keeps it) and the plain one (all `Secure`), over plain HTTP the plain one
/// (a plain-HTTP response cannot overwrite a `Secure` cookie, RFC 6265bis §5.7).
pub fn clear_session_cookies(mut reply: Reply, spec: &SessionSpec, tls: bool) -> Reply {
    let base = &spec.cookie;
    if tls {
        reply = reply.with_cookie(cookie(&cookie_name(base, true), "", Some(0), true));
    }
    if spec.cookie_domain.is_some() {
        reply = reply.with_cookie(set_session_cookie(spec, "", 0, tls));
    }
    reply.with_cookie(cookie(base, "", Some(0), tls))
}

/// Random URL-safe string of `bytes` random bytes.
pub fn random(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    let _ = aws_lc_rs::rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_example() {
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn client_keys() {
        let key = |s: &str| client_key(Some(s.parse().unwrap()));
        assert_eq!(key("127.0.0.2"), "127.0.0.2");
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"), "one /64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(client_key(None), "local");
    }

    #[test]
    fn params() {
        assert_eq!(param("a=1&rd=%2Fx%3Fy%3D1", "rd").as_deref(), Some("/x?y=1"));
        assert_eq!(param("a=1", "b"), None);
    }
}
