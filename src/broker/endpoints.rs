//! `/userinfo` (OpenID Connect Core §5.3, RFC 6750), `/introspect` (RFC 7662),
//! `/revoke` (RFC 7009) and `/logout` (OpenID Connect RP-Initiated Logout 1.0).

use super::authorize::{family_ttl, on_broker_host};
use super::clients::{self, AuthMethod};
use super::grants::Grants;
use super::tokens::{self, Kind};
use super::{err, error_reply, Challenge, ErrorCode, OAuthError};
use crate::config::BrokerSpec;
use crate::login;
use crate::runtime::Runtime;
use crate::web::{self, pages, Reply, Request};
use serde_json::{json, Map, Value};

fn grants<'a>(rt: &'a Runtime, b: &BrokerSpec) -> Result<Grants<'a>, OAuthError> {
    let s = rt.sessions.as_ref().ok_or(err(ErrorCode::TemporarilyUnavailable, "the broker has no store"))?;
    Ok(Grants { store: &*s.store, family_ttl: family_ttl(b) })
}

/// The bearer token of a userinfo request: the `Authorization` header, or the
/// `access_token` form field of a POST (RFC 6750 §2.1, §2.2), never both.
fn bearer(req: &Request<'_>) -> Result<String, OAuthError> {
    let header = match req.headers.get(http::header::AUTHORIZATION) {
        Some(v) => {
            let v = v.to_str().map_err(|_| err(ErrorCode::InvalidToken, "the Authorization header is not readable"))?;
            match v.split_once(' ') {
                Some((s, t)) if s.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => return Err(err(ErrorCode::InvalidToken, "the Authorization header is not a Bearer token")),
            }
        }
        None => None,
    };
    let body =
        if req.method == "POST" { super::form(req).ok().and_then(|f| f.get("access_token").cloned()) } else { None };
    match (header, body) {
        (Some(_), Some(_)) => Err(err(ErrorCode::InvalidRequest, "send the access token once")),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(err(ErrorCode::InvalidToken, super::NO_TOKEN)),
    }
}

/// A verified, unrevoked access token of this broker.
async fn live_access(rt: &Runtime, b: &BrokerSpec, token: &str) -> Result<Map<String, Value>, OAuthError> {
    let m = rt.minter.as_ref().ok_or(err(ErrorCode::ServerError, "the broker has no key"))?;
    let c = tokens::verify(m, b, token, Kind::Access).map_err(|e| err(ErrorCode::InvalidToken, e.description()))?;
    let family = c.get("sid").and_then(Value::as_str).unwrap_or_default();
    if grants(rt, b)?.is_revoked(family).await? {
        return Err(err(ErrorCode::InvalidToken, "the access token has been revoked"));
    }
    Ok(c)
}

pub async fn userinfo(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    if req.method != "GET" && req.method != "POST" {
        return error_reply(err(ErrorCode::InvalidRequest, "use GET or POST"), Challenge::Bearer);
    }
    let claims = match bearer(req) {
        Ok(t) => live_access(rt, b, &t).await,
        Err(e) => Err(e),
    };
    // A store outage stays a 503 (the token may well be good), not an `invalid_token`
    // that would make the client throw its tokens away.
    let c = match claims {
        Ok(c) => c,
        Err(e) => return error_reply(e, Challenge::Bearer),
    };
    let scope: Vec<&str> = c.get("scope").and_then(Value::as_str).unwrap_or("").split(' ').collect();
    if !scope.contains(&"openid") {
        // Service tokens (client credentials) describe no user (RFC 6750 §3.1).
        let e = err(ErrorCode::InsufficientScope, "the access token was not issued for the openid scope");
        return error_reply(e, Challenge::Bearer);
    }
    let mut out = Map::new();
    let copy = ["sub", "acr", "amr"].iter().chain(tokens::NORMALISED_CLAIMS);
    for &k in copy {
        if let Some(v) = c.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if scope.contains(&"email") {
        for k in ["email", "email_verified"] {
            if let Some(v) = c.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
    }
    if scope.contains(&"profile") {
        if let Some(v) = c.get("name") {
            out.insert("name".into(), v.clone());
        }
        if let Some(v) = c.get("username") {
            out.insert("preferred_username".into(), v.clone());
        }
    }
    Reply::json(200, &Value::Object(out), "ok")
}

/// Client authentication for introspection: a confidential client only.
async fn confidential<'a>(
    b: &'a BrokerSpec,
    req: &Request<'_>,
    form: &std::collections::BTreeMap<String, String>,
) -> Result<&'a crate::config::BrokerClientSpec, OAuthError> {
    match clients::authenticate(b, req, form).await? {
        (_, AuthMethod::None) => Err(err(ErrorCode::InvalidClient, "introspection requires client authentication")),
        (c, _) => Ok(c),
    }
}

pub async fn introspect(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    match introspection(rt, b, req).await {
        Ok(v) => Reply::json(200, &v, "ok"),
        Err(e) => error_reply(e, Challenge::Basic),
    }
}

async fn introspection(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Result<Value, OAuthError> {
    super::no_query(req)?;
    let form = super::form(req)?;
    let client = confidential(b, req, &form).await?;
    let token = form.get("token").ok_or(err(ErrorCode::InvalidRequest, "token is missing"))?;
    let inactive = json!({"active": false});
    if token.contains('.') {
        // Not a live token of ours: inactive. The store being down is not an answer.
        let c = match live_access(rt, b, token).await {
            Ok(c) => c,
            Err(e) if e.code == ErrorCode::InvalidToken => return Ok(inactive),
            Err(e) => return Err(e),
        };
        // Another client's token: only a client trusted to introspect (`introspect:
        // true`, a resource server) sees it; to anyone else it is a token they may not
        // see, answered as inactive (RFC 7662 §2.2).
        if !client.introspect && c.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
            return Ok(inactive);
        }
        let mut out = json!({"active": true, "token_type": "Bearer"});
        for k in [
            "scope",
            "client_id",
            "sub",
            "aud",
            "iss",
            "exp",
            "iat",
            "jti",
            "sid",
            "acr",
            "amr",
            "auth_time",
            "population",
            "provider",
            "principal_type",
            "mfa",
        ] {
            if let Some(v) = c.get(k) {
                out[k] = v.clone();
            }
        }
        if let Some(u) = c.get("username").or(c.get("email")) {
            out["username"] = u.clone();
        }
        return Ok(out);
    }
    // Refresh tokens are only shown to the client they were issued to.
    match grants(rt, b)?.peek_refresh(token).await? {
        Some(g) if g.client_id == client.client_id => Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": g.client_id,
            "scope": g.scope.join(" "),
            "sub": g.identity.sub,
            "iss": b.issuer,
            "exp": g.family_exp,
            "sid": g.family,
        })),
        _ => Ok(inactive),
    }
}

pub async fn revoke(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    match revocation(rt, b, req).await {
        Ok(()) => Reply::json(200, &json!({}), "ok"),
        Err(e) => error_reply(e, Challenge::Basic),
    }
}

async fn revocation(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Result<(), OAuthError> {
    super::no_query(req)?;
    let form = super::form(req)?;
    let (client, _) = clients::authenticate(b, req, &form).await?;
    let token = form.get("token").ok_or(err(ErrorCode::InvalidRequest, "token is missing"))?;
    let g = grants(rt, b)?;
    let not_yours = err(ErrorCode::UnauthorizedClient, "the token was not issued to this client");
    let family = if token.contains('.') {
        let m = rt.minter.as_ref().ok_or(err(ErrorCode::ServerError, "the broker has no key"))?;
        match tokens::verify(m, b, token, Kind::Access) {
            Ok(c) if c.get("client_id").and_then(Value::as_str) == Some(client.client_id.as_str()) => {
                c.get("sid").and_then(Value::as_str).map(str::to_string)
            }
            Ok(_) => return Err(not_yours),
            Err(_) => None,
        }
    } else {
        match g.peek_refresh(token).await? {
            Some(rg) if rg.client_id == client.client_id => Some(rg.family),
            Some(_) => return Err(not_yours),
            None => None,
        }
    };
    // Unknown, expired or already revoked tokens: nothing to do, and still 200 (RFC 7009 §2.2).
    if let Some(f) = family {
        g.revoke_family(&f).await?;
        tracing::info!(endpoint = "revoke", client_id = client.client_id.as_str(), "broker token family revoked");
    }
    Ok(())
}

/// RP-initiated logout: ends the idfabric session on the broker's host, revokes the
/// token families issued from it, and returns to a registered
/// `post_logout_redirect_uri` (else shows the signed-out page).
pub async fn logout(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    let theme = login::theme_for(rt, req.host, "/");
    let p = match logout_params(req) {
        Ok(p) => p,
        Err(detail) => return logout_refused(&theme, detail),
    };
    let hint = match id_token_hint(rt, b, &p) {
        Ok(h) => h,
        Err(detail) => return logout_refused(&theme, detail),
    };
    let client_id = match (hint.client, p.get("client_id")) {
        (Some(h), Some(c)) if h != *c => return logout_refused(&theme, "client_id does not match the ID token."),
        (Some(h), _) => Some(h),
        (None, c) => c.cloned(),
    };
    let client = client_id.as_deref().and_then(|c| clients::find(b, c));
    let clear = match end_session(rt, b, req, &p, hint.sub.as_deref()).await {
        Ending::NotSignedIn => None,
        Ending::Ended => Some(()),
        Ending::AskFirst => return confirm_page(&theme, b, &p, client_id.as_deref()),
        Ending::Unavailable => return logout_unavailable(&theme),
    };
    tracing::info!(
        endpoint = "logout",
        client_id = client.map(|c| c.client_id.as_str()).unwrap_or("-"),
        "broker logout"
    );
    let target =
        p.get("post_logout_redirect_uri").filter(|u| client.is_some_and(|c| c.post_logout_redirect_uris.contains(u)));
    let reply = after_logout(&theme, &p, target);
    match clear {
        // Every spelling of the session cookie, as the gateway's own sign-out does.
        Some(()) => web::clear_session_cookies(reply, &rt.config.session, req.tls),
        None => reply,
    }
}

/// A refused sign-out request: an error page, nothing ended.
fn logout_refused(theme: &pages::Theme, detail: &str) -> Reply {
    Reply::html(400, pages::error_page(theme, 400, "Sign-out request not accepted", detail, None), "invalid_request")
}

/// The store could not be reached: the user is told they are *not* signed out yet.
fn logout_unavailable(theme: &pages::Theme) -> Reply {
    let detail = "The session service cannot be reached, so you are not signed out yet. Please try again in a moment.";
    Reply::html(503, pages::error_page(theme, 503, "Sign-out unavailable", detail, None), "temporarily_unavailable")
}

/// The parameters: the query of a GET, or the form body of a POST without a query.
fn logout_params(req: &Request<'_>) -> Result<std::collections::BTreeMap<String, String>, &'static str> {
    match (req.method, super::params(req.query)) {
        ("POST", Ok(q)) if q.is_empty() => super::form(req).map_err(|e| e.description),
        (_, Ok(p)) => Ok(p),
        (_, Err(e)) => Err(e.description),
    }
}

/// What a verified `id_token_hint` says: the client it was issued to and the user.
#[derive(Default)]
struct Hint {
    client: Option<String>,
    sub: Option<String>,
}

/// The `id_token_hint`, if any: a broker ID token (it may have expired); anything else
/// refuses the request.
fn id_token_hint(
    rt: &Runtime,
    b: &BrokerSpec,
    p: &std::collections::BTreeMap<String, String>,
) -> Result<Hint, &'static str> {
    let Some(h) = p.get("id_token_hint") else { return Ok(Hint::default()) };
    match rt.minter.as_ref().map(|m| tokens::verify(m, b, h, Kind::Id)) {
        Some(Ok(c)) => {
            let claim = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            Ok(Hint { client: claim("aud"), sub: claim("sub") })
        }
        _ => Err("The sign-out request carries an ID token this service did not issue."),
    }
}

/// What happened to the browser's session on the broker's host.
enum Ending {
    /// No session here (or not the broker's host): nothing to end.
    NotSignedIn,
    /// Neither the user's own app (a hint for them) nor the user (a POSTed confirmation).
    AskFirst,
    /// Ended and its families revoked (the reply clears every spelling of the cookie).
    Ended,
    Unavailable,
}

/// Ends the session on this host (only the broker's own host holds broker sign-ins).
/// Only the signed-in user's own app (an ID token hint for this user) or the user (a
/// POSTed confirmation: `SameSite=Lax` keeps the cookie off cross-site POSTs) may end
/// it; anything else is asked first.
async fn end_session(
    rt: &Runtime,
    b: &BrokerSpec,
    req: &Request<'_>,
    p: &std::collections::BTreeMap<String, String>,
    hint_sub: Option<&str>,
) -> Ending {
    let name = rt.config.session.cookie_name(req.tls);
    let (Some(sid), Some(sessions), true) = (req.cookie(&name), rt.sessions.as_ref(), on_broker_host(b, req.host))
    else {
        return Ending::NotSignedIn;
    };
    let current = match sessions.load(sid).await {
        Ok(s) => s.map(|s| s.identity.sub),
        Err(e) => {
            tracing::warn!(error = %e, "broker logout: session store unavailable");
            return Ending::Unavailable;
        }
    };
    let proven = current.is_some() && hint_sub.is_some() && hint_sub == current.as_deref();
    let confirmed = req.method == "POST" && p.get("confirm").is_some_and(|v| v == "1");
    if current.is_some() && !proven && !confirmed {
        return Ending::AskFirst;
    }
    match sessions.destroy(sid).await {
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "broker logout: session store unavailable");
            return Ending::Unavailable;
        }
    }
    if let Ok(g) = grants(rt, b) {
        match g.revoke_session(sid).await {
            Ok(ended) => super::backchannel::announce(rt, ended.fresh),
            Err(e) => {
                tracing::warn!(error = %e, "broker logout: token families not revoked");
                return Ending::Unavailable;
            }
        }
    }
    Ending::Ended
}

/// The "Sign out?" page: its button POSTs the request back with `confirm=1`.
fn confirm_page(
    theme: &pages::Theme,
    b: &BrokerSpec,
    p: &std::collections::BTreeMap<String, String>,
    client_id: Option<&str>,
) -> Reply {
    let keep: Vec<(&str, &str)> = ["client_id", "post_logout_redirect_uri", "state"]
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (*k, v.as_str())))
        .chain(client_id.filter(|_| !p.contains_key("client_id")).map(|c| ("client_id", c)))
        .collect();
    Reply::html(200, pages::logout_confirm_page(theme, &format!("{}/logout", b.path), &keep), "confirm")
}

/// After sign-out: to the registered return address (with `state`), else the
/// signed-out page; an unregistered (or no) address is never redirected to.
fn after_logout(
    theme: &pages::Theme,
    p: &std::collections::BTreeMap<String, String>,
    target: Option<&String>,
) -> Reply {
    let signed_out = |reason| Reply::html(200, pages::logged_out_page(theme, "/.idfabric/login"), reason);
    let Some(u) = target else {
        return signed_out(if p.contains_key("post_logout_redirect_uri") { "invalid_request" } else { "ok" });
    };
    match url::Url::parse(u) {
        Ok(mut u) => {
            if let Some(s) = p.get("state") {
                u.query_pairs_mut().append_pair("state", s);
            }
            Reply::redirect(u.as_str(), "ok")
        }
        Err(_) => signed_out("ok"),
    }
}
