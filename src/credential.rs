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
/// The request's scheme decides the cookie's one accepted name: over TLS only
/// `__Host-{cookie_name}` (the prefix makes the browser refuse it unless it is `Secure`,
/// `Path=/` and host-only, so a sibling subdomain or a plain-HTTP hop cannot plant it);
/// over plain HTTP only `{cookie_name}` (browsers never send a `__Host-` cookie there).
pub fn extract<'a>(headers: &'a HeaderMap, cookie_name: &str, tls: bool) -> Result<Credential<'a>, Refusal> {
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
    let found = if tls {
        session_cookie(headers, &format!("__Host-{cookie_name}"))
    } else {
        session_cookie(headers, cookie_name)
    };
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
            assert_eq!(extract(&h, "idfabric_session", false), want, "{name}");
        }
    }

    #[test]
    fn the_scheme_decides_the_one_accepted_cookie_name() {
        let both = headers(&[("cookie", b"idfabric_session=plain; __Host-idfabric_session=prefixed")]);
        let plain = headers(&[("cookie", b"idfabric_session=planted")]);
        let prefixed = headers(&[("cookie", b"__Host-idfabric_session=prefixed")]);
        let cases = [
            ("tls, both", &both, true, Credential::Session("prefixed")),
            ("tls, plain only: ignored", &plain, true, Credential::None),
            ("tls, prefixed", &prefixed, true, Credential::Session("prefixed")),
            ("http, both", &both, false, Credential::Session("plain")),
            ("http, prefixed only: ignored", &prefixed, false, Credential::None),
        ];
        for (name, h, tls, want) in cases {
            assert_eq!(extract(h, "idfabric_session", tls), Ok(want), "{name}");
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
