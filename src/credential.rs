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
    // Over TLS the cookie carries the `__Host-` prefix (Secure, Path=/, no Domain).
    let secure = session_cookie(headers, &format!("__Host-{cookie_name}"));
    Ok(secure.or_else(|| session_cookie(headers, cookie_name)).map(Credential::Session).unwrap_or(Credential::None))
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

/// Whether the client is a browser that should be sent to the login page.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
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
}
