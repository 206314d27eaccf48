//! The broker: idfabric as an OpenID Provider for downstream relying parties, under
//! `broker.issuer` (docs/broker.md).
//!
//! Apps sign users in against one issuer, the broker; the broker signs them in upstream
//! through the browser sign-in of `login/` (home-realm discovery, step-up) and issues
//! its own ID and access tokens carrying the one normalised identity. So an app trusts
//! one issuer and one claim schema, whichever provider the user came from.
//!
//! | file | owns |
//! | --- | --- |
//! | `clients.rs` | the configured clients: lookup, client authentication (constant time, argon2 hashes) |
//! | `authorize.rs` | `/authorize` and `/authorize/resume` (after sign-in), error pages vs error redirects |
//! | `token.rs` | `/token`: authorization code, refresh token, client credentials |
//! | `grants.rs` | codes, refresh-token families and revocation markers over `session::Store` |
//! | `tokens.rs` | minting and verifying the broker's own JWTs |
//! | `endpoints.rs` | `/userinfo`, `/introspect`, `/revoke`, `/logout` |
//!
//! Errors are values ([`OAuthError`]): one `ErrorCode` gives the RFC error string, the
//! status, the metric label and the log field; descriptions are fixed strings, so no
//! secret, code or token can reach a body or a log line. Consent is implicit: every
//! client is configured by the operator (first-party), so no consent page is shown.

mod authorize;
pub mod backchannel;
pub mod clients;
mod endpoints;
mod grants;
mod token;
mod tokens;

use crate::config::BrokerSpec;
use crate::metrics::metrics;
use crate::runtime::Runtime;
use crate::web::{Reply, Request};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub use clients::hash_secret;

/// The RFC error codes the broker answers with (RFC 6749 §4.1.2.1, §5.2; RFC 6750 §3.1;
/// RFC 7009 §2.2.1; OpenID Connect Core §3.1.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    LoginRequired,
    UnmetAuthenticationRequirements,
    RequestNotSupported,
    RequestUriNotSupported,
    InvalidToken,
    /// RFC 6750 §3.1: the token is valid but lacks the scope the resource needs.
    InsufficientScope,
    UnsupportedTokenType,
    ServerError,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::UnmetAuthenticationRequirements => "unmet_authentication_requirements",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The status of a JSON error response (the token-style endpoints).
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidGrant
            | ErrorCode::UnauthorizedClient
            | ErrorCode::UnsupportedGrantType
            | ErrorCode::UnsupportedResponseType
            | ErrorCode::InvalidScope
            | ErrorCode::AccessDenied
            | ErrorCode::LoginRequired
            | ErrorCode::UnmetAuthenticationRequirements
            | ErrorCode::RequestNotSupported
            | ErrorCode::RequestUriNotSupported
            | ErrorCode::UnsupportedTokenType => 400,
        }
    }
}

/// A refused broker request: the RFC code and a fixed, secret-free description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: &'static str,
}

pub fn err(code: ErrorCode, description: &'static str) -> OAuthError {
    OAuthError { code, description }
}

impl From<crate::session::StoreError> for OAuthError {
    fn from(e: crate::session::StoreError) -> OAuthError {
        tracing::warn!(error = %e, "broker: session store unavailable");
        err(ErrorCode::TemporarilyUnavailable, "the session store cannot be reached; try again shortly")
    }
}

/// The JSON error body of the token-style endpoints; 401s carry the challenge the
/// endpoint's authentication scheme calls for.
fn error_reply(e: OAuthError, challenge: Challenge) -> Reply {
    let mut r = Reply::json(
        e.code.status(),
        &json!({"error": e.code.as_str(), "error_description": e.description}),
        e.code.as_str(),
    );
    r.headers.push(("pragma", "no-cache".into()));
    match (e.code.status(), challenge) {
        (401, Challenge::Basic) => {
            r.headers.push(("www-authenticate", "Basic realm=\"idfabric-broker\", charset=\"UTF-8\"".into()))
        }
        // No credential at all: a bare challenge (RFC 6750 §3.1).
        (401, Challenge::Bearer) if e.description == NO_TOKEN => {
            r.headers.push(("www-authenticate", "Bearer realm=\"idfabric-broker\"".into()))
        }
        (401, Challenge::Bearer) => r.headers.push((
            "www-authenticate",
            format!(
                "Bearer realm=\"idfabric-broker\", error=\"{}\", error_description=\"{}\"",
                e.code.as_str(),
                e.description
            ),
        )),
        // The only scope a Bearer endpoint of the broker needs is `openid` (userinfo).
        (403, Challenge::Bearer) => r.headers.push((
            "www-authenticate",
            format!(
                "Bearer realm=\"idfabric-broker\", error=\"{}\", error_description=\"{}\", scope=\"openid\"",
                e.code.as_str(),
                e.description
            ),
        )),
        _ => {}
    }
    r
}

/// The description of a userinfo request without any access token.
const NO_TOKEN: &str = "no access token was sent";

#[derive(Clone, Copy)]
enum Challenge {
    Basic,
    Bearer,
}

/// Counts the request and logs refusals (never a secret: only fixed strings and
/// configured client ids reach the line).
fn record(endpoint: &'static str, client: Option<&str>, reply: &Reply) {
    metrics().broker_requests_total.with_label_values(&[endpoint, reply.reason]).inc();
    if reply.reason != "ok" {
        tracing::info!(
            endpoint,
            client_id = client.unwrap_or("-"),
            error = reply.reason,
            status = reply.status,
            "broker request refused"
        );
    }
}

/// Serves every path under the broker's issuer path.
pub async fn handle(rt: &Runtime, req: &Request<'_>) -> Reply {
    let (Some(b), Some(_)) = (&rt.config.broker, &rt.minter) else {
        return Reply::problem(&crate::refusal::Refusal::NoRoute);
    };
    let rest = req.path.strip_prefix(b.path.as_str()).unwrap_or("");
    if req.method == "OPTIONS" {
        return cors(
            b,
            req,
            rest,
            Reply { status: 204, headers: vec![("cache-control", "no-store".into())], body: Vec::new(), reason: "ok" },
        );
    }
    let (endpoint, reply) = match rest {
        "/.well-known/openid-configuration" => ("discovery", Reply::json(200, &discovery(rt, b), "ok")),
        "/jwks" => ("jwks", jwks(rt)),
        "/authorize" => ("authorize", authorize::authorize(rt, b, req).await),
        "/authorize/resume" => ("authorize", authorize::resume(rt, b, req).await),
        "/token" => ("token", token::token(rt, b, req).await),
        "/userinfo" => ("userinfo", endpoints::userinfo(rt, b, req).await),
        "/introspect" => ("introspect", endpoints::introspect(rt, b, req).await),
        "/revoke" => ("revoke", endpoints::revoke(rt, b, req).await),
        "/logout" => ("logout", endpoints::logout(rt, b, req).await),
        _ => return Reply::problem(&crate::refusal::Refusal::NoRoute),
    };
    record(endpoint, clients::named_client(b, req), &reply);
    cors(b, req, rest, reply)
}

/// CORS for browser apps: discovery and keys for any origin; the token, userinfo and
/// revocation endpoints for the origins of public clients' redirect URIs (single-page
/// apps), with preflight (`OPTIONS`). Browser endpoints (`/authorize`, `/logout`) are
/// navigations and get none.
fn cors(b: &BrokerSpec, req: &Request<'_>, rest: &str, mut reply: Reply) -> Reply {
    let Some(origin) = req.headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return reply };
    let allowed = match rest {
        "/.well-known/openid-configuration" | "/jwks" => Some("*".to_string()),
        "/token" | "/userinfo" | "/revoke" => b
            .clients
            .iter()
            .filter(|c| c.public)
            .flat_map(|c| c.redirect_uris.iter())
            .filter_map(|u| url::Url::parse(u).ok())
            .any(|u| u.origin().ascii_serialization() == origin)
            .then(|| origin.to_string()),
        _ => None,
    };
    if let Some(a) = allowed {
        reply.headers.push(("access-control-allow-origin", a));
        reply.headers.push(("vary", "Origin".into()));
        if req.method == "OPTIONS" {
            reply.headers.push(("access-control-allow-methods", "GET, POST".into()));
            reply.headers.push(("access-control-allow-headers", "authorization, content-type".into()));
            reply.headers.push(("access-control-max-age", "600".into()));
        } else {
            reply.headers.push(("access-control-expose-headers", "www-authenticate".into()));
        }
    }
    reply
}

/// Revokes every broker token family of the user `sub` (refresh tokens deleted, access
/// tokens refused at `/userinfo` and `/introspect`), offline ones included. Meant for
/// the admin `POST /sessions/revoke?sub=` (the leaver case); returns how many families.
/// Their clients are sent back-channel logout tokens (`backchannel`).
pub async fn revoke_subject(rt: &Runtime, sub: &str) -> Result<usize, crate::session::StoreError> {
    let (Some(b), Some(s)) = (&rt.config.broker, &rt.sessions) else { return Ok(0) };
    let ended = grants::Grants { store: &*s.store, family_ttl: authorize::family_ttl(b) }.revoke_subject(sub).await?;
    backchannel::announce(rt, ended.fresh);
    Ok(ended.count)
}

/// Revokes the broker token families bound to the idfabric browser session `sid` (those
/// without `offline_access`: their access tokens stop working at `/userinfo` and
/// `/introspect` at once, not at expiry), when the user signs out at the gateway's own
/// `/.idfabric/logout`; returns how many families. Their clients are sent back-channel
/// logout tokens (`backchannel`).
pub async fn revoke_session_families(rt: &Runtime, sid: &str) -> Result<usize, crate::session::StoreError> {
    let (Some(b), Some(s)) = (&rt.config.broker, &rt.sessions) else { return Ok(0) };
    let ended =
        grants::Grants { store: &*s.store, family_ttl: authorize::family_ttl(b) }.revoke_session_lifetime(sid).await?;
    backchannel::announce(rt, ended.fresh);
    Ok(ended.count)
}

/// [`revoke_session_families`] in the shape of `login::SignOutHook`, which the service
/// assembly registers so that signing out at `/.idfabric/logout` revokes them.
pub fn sign_out_hook<'a>(rt: &'a Runtime, sid: &'a str) -> crate::login::SignOutFuture<'a> {
    Box::pin(revoke_session_families(rt, sid))
}

/// The reply to a body over `web::MAX_BODY` (the gateway stops reading it).
pub fn too_large() -> Reply {
    let e = err(ErrorCode::InvalidRequest, "the request body is larger than 16 KiB");
    let mut r = error_reply(e, Challenge::Basic);
    r.status = 413;
    metrics().broker_requests_total.with_label_values(&["oversized", "invalid_request"]).inc();
    tracing::info!(error = "invalid_request", status = 413, "broker request refused: body too large");
    r
}

fn jwks(rt: &Runtime) -> Reply {
    let mut r = Reply::json(200, &rt.minter.as_ref().map(|m| m.jwks()).unwrap_or_else(|| json!({"keys": []})), "ok");
    r.headers.retain(|(k, _)| *k != "cache-control");
    r.headers.push(("cache-control", "public, max-age=300".into()));
    r
}

/// Scopes the broker knows (clients may add their own, which are passed through).
pub const STANDARD_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The standard claims of broker ID tokens and userinfo (OpenID Connect Core §2, §5.1).
const STANDARD_CLAIMS: [&str; 16] = [
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "at_hash",
    "email",
    "email_verified",
    "name",
    "preferred_username",
];

/// `claims_supported`: the standard claims, then the normalised identity claims from
/// their one list (`tokens::NORMALISED_CLAIMS`), so a claim added there is advertised.
pub fn claims_supported() -> Vec<&'static str> {
    STANDARD_CLAIMS.iter().chain(tokens::NORMALISED_CLAIMS).copied().collect()
}

/// OpenID Connect Discovery 1.0 metadata, with RFC 8414 / 7662 / 7009 / 9207 fields.
pub fn discovery(rt: &Runtime, b: &BrokerSpec) -> Value {
    let mut algs: Vec<String> = Vec::new();
    if let Some(m) = &rt.minter {
        for k in m.public_keys() {
            if let Some(a) = k.get("alg").and_then(Value::as_str) {
                if !algs.iter().any(|x| x == a) {
                    algs.push(a.to_string());
                }
            }
        }
    }
    let mut scopes: Vec<String> = STANDARD_SCOPES.iter().map(|s| s.to_string()).collect();
    for c in &b.clients {
        for s in &c.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
    }
    let i = &b.issuer;
    // Introspection is for confidential clients; revocation also takes public clients
    // naming themselves (`none`), as `/revoke` does.
    let auth_methods = json!(["client_secret_basic", "client_secret_post"]);
    let revocation_methods = json!(["client_secret_basic", "client_secret_post", "none"]);
    let mut doc = crate::op::Metadata {
        issuer: i,
        base: i,
        signing_algs: algs,
        grant_types: &["authorization_code", "refresh_token", "client_credentials"],
        token_auth_methods: &["client_secret_basic", "client_secret_post", "none"],
    }
    .document();
    let extra = json!({
        "userinfo_endpoint": format!("{i}/userinfo"),
        "introspection_endpoint": format!("{i}/introspect"),
        "revocation_endpoint": format!("{i}/revoke"),
        "response_modes_supported": ["query"],
        "userinfo_signing_alg_values_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": revocation_methods,
        "scopes_supported": scopes,
        "claims_supported": claims_supported(),
        "acr_values_supported": [tokens::ACR_MFA, tokens::ACR_SFA],
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "require_request_uri_registration": false,
        "authorization_response_iss_parameter_supported": true,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    if let Value::Object(extra) = extra {
        doc.extend(extra);
    }
    Value::Object(doc)
}

/// The parameters of a request, refusing repeated ones (RFC 6749 §3.1: "MUST NOT be
/// included more than once") and absurdly long values.
fn params(qs: &str) -> Result<BTreeMap<String, String>, OAuthError> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        if v.len() > 8192 || k.len() > 128 {
            return Err(err(ErrorCode::InvalidRequest, "a parameter is too long"));
        }
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(err(ErrorCode::InvalidRequest, "a parameter is repeated"));
        }
    }
    // An empty value is the same as an absent parameter (RFC 6749 §3.1).
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

/// The form body of a POST endpoint (`application/x-www-form-urlencoded` only).
fn form(req: &Request<'_>) -> Result<BTreeMap<String, String>, OAuthError> {
    if req.method != "POST" {
        return Err(err(ErrorCode::InvalidRequest, "this endpoint accepts POST only"));
    }
    let ct = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(err(ErrorCode::InvalidRequest, "the body must be application/x-www-form-urlencoded"));
    }
    let body = std::str::from_utf8(req.body).map_err(|_| err(ErrorCode::InvalidRequest, "the body is not UTF-8"))?;
    params(body)
}

/// Refuses parameters in the URL query of a POST-only endpoint (`/token`,
/// `/introspect`, `/revoke`): RFC 6749 §2.3.1 and §3.2 want client credentials and
/// parameters in the form body (a URL ends up in proxy and server logs, browser
/// history and `Referer`). Only the parameter *names* are looked at; the refusal names
/// no value, so a secret sent this way reaches neither the body nor a log line.
fn no_query(req: &Request<'_>) -> Result<(), OAuthError> {
    if req.query.is_empty() {
        return Ok(());
    }
    let credential = url::form_urlencoded::parse(req.query.as_bytes())
        .any(|(k, _)| matches!(k.as_ref(), "client_secret" | "client_assertion" | "client_id"));
    Err(if credential {
        err(ErrorCode::InvalidRequest, "client credentials must not be sent in the URL query; send them in the POST body or the Authorization header")
    } else {
        err(ErrorCode::InvalidRequest, "parameters must be sent in the POST form body, not the URL query")
    })
}

/// Hex SHA-256 of a secret value, the only form in which codes and refresh tokens are
/// stored or used as keys.
fn digest(v: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(params("a=1&b=2").is_ok());
        assert_eq!(params("a=1&a=2").unwrap_err().code, ErrorCode::InvalidRequest);
        assert!(!params("a=&b=2").unwrap().contains_key("a"), "empty means absent");
    }

    #[test]
    fn claims_supported_lists_every_normalised_claim_once() {
        let c = claims_supported();
        for n in tokens::NORMALISED_CLAIMS {
            assert!(c.contains(n), "{n}");
        }
        let unique: std::collections::HashSet<_> = c.iter().collect();
        assert_eq!(unique.len(), c.len(), "no claim twice: {c:?}");
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::InsufficientScope.status(), 403);
        assert_eq!(ErrorCode::InvalidClient.status(), 401);
        assert_eq!(ErrorCode::InvalidGrant.status(), 400);
        assert_eq!(ErrorCode::TemporarilyUnavailable.status(), 503);
    }
}
