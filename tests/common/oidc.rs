//! Relying-party helpers for the broker tests: PKCE, authorize URLs, driving the
//! browser part of a sign-in through the dev provider, the token endpoint, and
//! verifying the broker's JWTs against its published `/jwks` with `jsonwebtoken`.
#![allow(dead_code)]

use super::agent::{query_of, Agent};
use super::*;
use serde_json::Value;
use std::collections::HashMap;
use url::Url;

/// A fresh PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    use base64::Engine;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    (verifier.clone(), challenge(&verifier))
}

pub fn challenge(verifier: &str) -> String {
    use base64::Engine;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b[0]
}

pub fn random_str() -> String {
    (0..24).map(|_| format!("{:02x}", rand_byte())).collect()
}

/// One authorization request under construction.
pub struct AuthzReq {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub params: Vec<(String, String)>,
}

impl AuthzReq {
    /// `response_type=code`, `scope=openid profile email`, S256 PKCE, state and nonce.
    pub fn new(client_id: &str, redirect_uri: &str) -> AuthzReq {
        let (verifier, ch) = pkce();
        let state = random_str();
        let nonce = random_str();
        let params = vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), client_id.into()),
            ("redirect_uri".into(), redirect_uri.into()),
            ("scope".into(), "openid profile email".into()),
            ("state".into(), state.clone()),
            ("nonce".into(), nonce.clone()),
            ("code_challenge".into(), ch),
            ("code_challenge_method".into(), "S256".into()),
        ];
        AuthzReq { client_id: client_id.into(), redirect_uri: redirect_uri.into(), state, nonce, verifier, params }
    }

    /// Sets (replaces) a parameter.
    pub fn set(mut self, k: &str, v: &str) -> AuthzReq {
        self.params.retain(|(n, _)| n != k);
        self.params.push((k.into(), v.into()));
        self
    }

    pub fn without(mut self, k: &str) -> AuthzReq {
        self.params.retain(|(n, _)| n != k);
        self
    }

    pub fn url(&self, issuer: &str) -> String {
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(self.params.iter()).finish();
        format!("{issuer}/authorize?{q}")
    }
}

/// Follows redirects from `start` like a browser, picking `user` on the dev provider's
/// page, until a redirect leaves the gateway (the client's redirect URI). Returns it.
pub async fn follow(agent: &Agent, start: &str, user: &str) -> Url {
    let mut url = Url::parse(start).unwrap();
    for _ in 0..12 {
        if url.path().starts_with("/.idfabric/dev/") && url.path().ends_with("/authorize") {
            url = agent.pick_user(&url, user).await;
            continue;
        }
        let r = agent.get(url.as_str()).await;
        assert_eq!(r.status, 302, "expected a redirect from {url}, got {}: {}", r.status, r.body);
        let next = r.location();
        if next.host_str() != Some("127.0.0.1") {
            return next;
        }
        url = next;
    }
    panic!("too many redirects from {start}");
}

/// The query of the client's redirect: asserts `state` and `iss`, returns the params.
pub fn callback_params(u: &Url, req: &AuthzReq, issuer: &str) -> HashMap<String, String> {
    let q = query_of(u);
    assert_eq!(q.get("state"), Some(&req.state), "state comes back: {u}");
    assert_eq!(q.get("iss").map(String::as_str), Some(issuer), "RFC 9207 iss: {u}");
    q
}

/// A token-style POST (form body), with optional Basic client credentials and headers.
pub async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
    let mut rb = client().post(url).header("content-type", "application/x-www-form-urlencoded").body(body);
    if let Some((id, secret)) = basic {
        rb = rb.basic_auth(id, Some(secret));
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.unwrap())
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Verifies a broker JWT against the published keys; returns (header typ, claims).
pub async fn verify_jwt(issuer: &str, token: &str, aud: Option<&str>) -> (String, Value) {
    let jwks: jsonwebtoken::jwk::JwkSet =
        client().get(format!("{issuer}/jwks")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.clone().expect("broker tokens name their key");
    let jwk = jwks.find(&kid).expect("the key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    match aud {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &v).unwrap_or_else(|e| panic!("broker JWT does not verify: {e}"));
    (header.typ.unwrap_or_default(), data.claims)
}
