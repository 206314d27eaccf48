//! Finding the caller's credential: a bearer token or a session cookie (or none).
//!
//! Works on plain `http::HeaderMap`s so the gateway, forward-auth and tests share it.

use crate::refusal::Refusal;
use http::HeaderMap;

/// The credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    Session(&'a str),
    None,
}

/// Reads `Authorization: Bearer …` (exactly one header) and then the session cookie.
/// A malformed Authorization header is a refusal, not "no credential": a client that
/// tried to authenticate and got it wrong must hear why.
///
/// `cookie_name` is the session cookie's one accepted name on this request, from
/// [`crate::config::SessionSpec::cookie_name`]: the scheme and `session.cookie_domain`
/// decide it (over TLS `__Host-…`, which the browser refuses unless it is `Secure`,
/// `Path=/` and host-only, so a sibling subdomain or a plain-HTTP hop cannot plant it;
/// `__Secure-…` when the cookie is shared by a domain; over plain HTTP the bare name).
pub fn extract<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Result<Credential<'a>, Refusal> {
    let mut auth = headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(Refusal::DuplicateAuthorization);
        }
        let value = value.to_str().map_err(|_| Refusal::Malformed("Authorization header is not visible ASCII"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::UnsupportedScheme);
        }
        let token = rest.trim();
        if token.is_empty() {
            return Err(Refusal::Malformed("empty bearer token"));
        }
        if token.len() > crate::providers::jwt::MAX_TOKEN_BYTES {
            return Err(Refusal::TokenTooLarge);
        }
        // The token's characters are checked by the JWS parser on a cache miss; a cached
        // token matched byte for byte a token that parsed.
        return Ok(Credential::Bearer(token));
    }
    let found = session_cookie(headers, cookie_name);
    Ok(found.map(Credential::Session).unwrap_or(Credential::None))
}

/// The value of cookie `name`, from any `Cookie` header (parsing lives with the other
/// web pieces).
pub use crate::web::session_cookie;

/// Whether the client is a browser that should be sent to the login page.
/// It accepts `text/html`, or the browser says it is navigating
/// (`Sec-Fetch-Mode: navigate`, <https://www.w3.org/TR/fetch-metadata/#sec-fetch-mode-header>).
pub fn wants_html(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    value("accept").is_some_and(|a| a.contains("text/html"))
        || value("sec-fetch-mode").is_some_and(|m| m.trim().eq_ignore_ascii_case("navigate"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(list: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn extraction_table() {
        let cases: Vec<(&str, HeaderMap, Result<Credential, Refusal>)> = vec![
            ("bearer", headers(&[("authorization", b"Bearer abc.def.ghi")]), Ok(Credential::Bearer("abc.def.ghi"))),
            ("scheme case", headers(&[("authorization", b"bearer abc")]), Ok(Credential::Bearer("abc"))),
            ("none", headers(&[]), Ok(Credential::None)),
            ("basic", headers(&[("authorization", b"Basic dXNlcg==")]), Err(Refusal::UnsupportedScheme)),
            ("empty", headers(&[("authorization", b"Bearer ")]), Err(Refusal::Malformed("empty bearer token"))),
            (
                "duplicate",
                headers(&[("authorization", b"Bearer a"), ("authorization", b"Bearer b")]),
                Err(Refusal::DuplicateAuthorization),
            ),
            (
                "non-ascii",
                headers(&[("authorization", b"Bearer \xff\xfe")]),
                Err(Refusal::Malformed("Authorization header is not visible ASCII")),
            ),
            (
                "cookie",
                headers(&[("cookie", b"a=1; idfabric_session=xyz; b=2")]),
                Ok(Credential::Session("xyz")),
            ),
        ];
        for (name, h, want) in cases {
            assert_eq!(extract(&h, "idfabric_session"), want, "{name}");
        }
    }

    #[test]
    fn the_scheme_decides_the_one_accepted_cookie_name() {
        let both = headers(&[("cookie", b"idfabric_session=plain; __Host-idfabric_session=prefixed")]);
        let plain = headers(&[("cookie", b"idfabric_session=planted")]);
        let prefixed = headers(&[("cookie", b"__Host-idfabric_session=prefixed")]);
        let shared = headers(&[("cookie", b"__Host-idfabric_session=host; __Secure-idfabric_session=domain")]);
        let cases = [
            ("tls, both", &both, true, None, Credential::Session("prefixed")),
            ("tls, plain only: ignored", &plain, true, None, Credential::None),
            ("tls, prefixed", &prefixed, true, None, Credential::Session("prefixed")),
            ("http, both", &both, false, None, Credential::Session("plain")),
            ("http, prefixed only: ignored", &prefixed, false, None, Credential::None),
            ("tls, host-only: __Host-", &shared, true, None, Credential::Session("host")),
            ("tls, cookie_domain: __Secure-", &shared, true, Some("example.com"), Credential::Session("domain")),
            ("tls, cookie_domain, __Host- only: ignored", &prefixed, true, Some("example.com"), Credential::None),
        ];
        for (name, h, tls, domain, want) in cases {
            let spec = crate::config::SessionSpec {
                store: crate::config::SessionStore::Memory,
                cookie: "idfabric_session".into(),
                ttl: std::time::Duration::from_secs(60),
                idle: std::time::Duration::from_secs(60),
                key_file: None,
                login_limits: Default::default(),
                cookie_domain: domain.map(String::from),
                auth_host: None,
            };
            assert_eq!(extract(h, &spec.cookie_name(tls)), Ok(want), "{name}");
        }
    }

    #[test]
    fn browsers_by_accept_or_navigation() {
        let cases: [(&[(&str, &[u8])], bool); 5] = [
            (&[("accept", b"text/html,application/xhtml+xml,*/*;q=0.8")], true),
            (&[("sec-fetch-mode", b"navigate")], true),
            (&[("accept", b"application/json"), ("sec-fetch-mode", b"cors")], false),
            (&[("accept", b"*/*")], false),
            (&[], false),
        ];
        for (list, want) in cases {
            assert_eq!(wants_html(&headers(list)), want, "{list:?}");
        }
    }
}
