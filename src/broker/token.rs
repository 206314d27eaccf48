//! `/token`: the authorization code, refresh token and client credentials grants
//! (RFC 6749 §4.1.3, §6, §4.4; PKCE RFC 7636; OpenID Connect Core §3.1.3).
//!
//! Refresh tokens are issued on every code exchange of a client allowed the
//! `refresh_token` grant. Without `offline_access` the family is bound to the idfabric
//! browser session it came from (it ends with that session: logout, admin revocation,
//! expiry); with `offline_access` it lives `refresh_token_ttl` on its own.

use super::grants::{CodeRedeemed, Grants, Holder, Redeemed, RefreshGrant};
use super::tokens::{self, Grant};
use super::{authorize::family_ttl, clients, err, error_reply, Challenge, ErrorCode, OAuthError};
use crate::config::{BrokerClientSpec, BrokerSpec};
use crate::identity::{Identity, Population};
use crate::metrics::metrics;
use crate::providers::now_secs;
use crate::runtime::Runtime;
use crate::web::{pkce_challenge, random, Reply, Request};
use serde_json::json;
use std::collections::BTreeMap;

pub async fn token(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Reply {
    match grant(rt, b, req).await {
        Ok(r) => r,
        Err(e) => error_reply(e, Challenge::Basic),
    }
}

async fn grant(rt: &Runtime, b: &BrokerSpec, req: &Request<'_>) -> Result<Reply, OAuthError> {
    super::no_query(req)?;
    let form = super::form(req)?;
    let (client, _) = clients::authenticate(b, req, &form).await?;
    let kind = form.get("grant_type").ok_or(err(ErrorCode::InvalidRequest, "grant_type is missing"))?;
    let kind = match kind.as_str() {
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        "client_credentials" => "client_credentials",
        _ => {
            return Err(err(
                ErrorCode::UnsupportedGrantType,
                "grant_type must be authorization_code, refresh_token or client_credentials",
            ))
        }
    };
    if !client.grant_types.iter().any(|g| g == kind) {
        return Err(err(ErrorCode::UnauthorizedClient, "this client may not use this grant type"));
    }
    let sessions = rt.sessions.clone().ok_or(err(ErrorCode::TemporarilyUnavailable, "the broker has no store"))?;
    let grants = Grants { store: &*sessions.store, family_ttl: family_ttl(b) };
    let reply = match kind {
        "authorization_code" => code_grant(rt, b, client, &form, &grants).await?,
        "refresh_token" => refresh_grant(rt, b, client, &form, &grants, &sessions).await?,
        _ => client_credentials(rt, b, client, &form)?,
    };
    metrics().broker_tokens_issued_total.with_label_values(&[kind]).inc();
    tracing::info!(endpoint = "token", grant = kind, client_id = client.client_id.as_str(), "broker tokens issued");
    Ok(reply)
}

/// A PKCE verifier: 43-128 unreserved characters (RFC 7636 §4.1).
fn verifier_ok(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn code_grant(
    rt: &Runtime,
    b: &BrokerSpec,
    client: &BrokerClientSpec,
    form: &BTreeMap<String, String>,
    grants: &Grants<'_>,
) -> Result<Reply, OAuthError> {
    let code = form.get("code").ok_or(err(ErrorCode::InvalidRequest, "code is missing"))?;
    let redirect_uri = form.get("redirect_uri").ok_or(err(ErrorCode::InvalidRequest, "redirect_uri is missing"))?;
    let g = match grants.take_code(code).await? {
        CodeRedeemed::Live(g) => g,
        CodeRedeemed::Replayed => {
            return Err(err(
                ErrorCode::InvalidGrant,
                "the code was already used; the tokens issued from it are revoked",
            ))
        }
        CodeRedeemed::Unknown => return Err(err(ErrorCode::InvalidGrant, "the code is invalid or has expired")),
    };
    if g.client_id != client.client_id {
        return Err(err(ErrorCode::InvalidGrant, "the code was issued to another client"));
    }
    if g.redirect_uri != *redirect_uri {
        return Err(err(ErrorCode::InvalidGrant, "redirect_uri differs from the authorization request"));
    }
    match (&g.code_challenge, form.get("code_verifier")) {
        (Some(c), Some(v))
            if verifier_ok(v)
                && aws_lc_rs::constant_time::verify_slices_are_equal(pkce_challenge(v).as_bytes(), c.as_bytes())
                    .is_ok() => {}
        (Some(_), _) => return Err(err(ErrorCode::InvalidGrant, "PKCE verification failed")),
        (None, Some(_)) => {
            return Err(err(ErrorCode::InvalidGrant, "code_verifier sent for a code issued without PKCE"))
        }
        (None, None) => {}
    }
    let offline = g.scope.iter().any(|s| s == "offline_access");
    let refresh = if client.grant_types.iter().any(|t| t == "refresh_token") {
        let token = random(32);
        let rg = RefreshGrant {
            family: g.family.clone(),
            client_id: client.client_id.clone(),
            scope: g.scope.clone(),
            identity: g.identity.clone(),
            auth_time: g.auth_time,
            session: if offline { None } else { g.session.clone() },
            family_exp: now_secs() + b.refresh_token_ttl.as_secs() as i64,
        };
        grants.put_refresh(&token, &rg).await?;
        Some(token)
    } else {
        None
    };
    if let Some(s) = &g.session {
        grants.bind_to_session(s, &g.family).await?;
        if !offline {
            // Ends when the user signs out at the gateway (offline_access outlives that).
            grants.bind_to_session_lifetime(s, &g.family).await?;
        }
    }
    grants.bind_to_subject(&g.identity.sub, &g.family).await?;
    let holder = Holder { client_id: client.client_id.clone(), sub: g.identity.sub.clone() };
    grants.set_holder(&g.family, &holder).await?;
    // A concurrent replay of this code revokes the family (`take_code`): answer it as
    // refused rather than with tokens that are already dead.
    if grants.is_revoked(&g.family).await? {
        return Err(err(ErrorCode::InvalidGrant, "the code was used twice at once; the tokens issued from it are revoked"));
    }
    let grant = Grant {
        client,
        identity: &g.identity,
        scope: &g.scope,
        family: &g.family,
        auth_time: g.auth_time,
        nonce: g.nonce.as_deref(),
    };
    Ok(respond(rt, b, &grant, true, refresh))
}

async fn refresh_grant(
    rt: &Runtime,
    b: &BrokerSpec,
    client: &BrokerClientSpec,
    form: &BTreeMap<String, String>,
    grants: &Grants<'_>,
    sessions: &crate::session::Sessions,
) -> Result<Reply, OAuthError> {
    let presented = form.get("refresh_token").ok_or(err(ErrorCode::InvalidRequest, "refresh_token is missing"))?;
    let asked: Option<Vec<String>> =
        form.get("scope").map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect());
    // A scope wider than the grant is refused before rotation, so the token stays usable.
    if let (Some(asked), Some(live)) = (&asked, grants.peek_refresh(presented).await?) {
        if live.client_id == client.client_id && asked.iter().any(|a| !live.scope.contains(a)) {
            return Err(err(ErrorCode::InvalidScope, "scope exceeds what was originally granted"));
        }
    }
    let mut g = match grants.take_refresh(presented).await? {
        Redeemed::Live(g) => g,
        Redeemed::Reused => {
            tracing::warn!(
                endpoint = "token",
                client_id = client.client_id.as_str(),
                "refresh token reuse: family revoked"
            );
            return Err(err(ErrorCode::InvalidGrant, "the refresh token was already used; its family is revoked"));
        }
        Redeemed::Unknown => {
            return Err(err(ErrorCode::InvalidGrant, "the refresh token is invalid, expired or revoked"))
        }
    };
    if g.client_id != client.client_id {
        return Err(err(ErrorCode::InvalidGrant, "the refresh token was issued to another client"));
    }
    if let Some(sid) = &g.session {
        // Through sign-in's own loader: upstream tokens close to expiry are refreshed at
        // the provider (a disabled user ends the session there), expired ones end it.
        match crate::session::session_for(&rt.registry, sessions, sid).await? {
            Some(s) if s.identity.sub == g.identity.sub => {
                let mfa = g.identity.mfa;
                g.identity = s.identity;
                g.identity.mfa |= mfa || s.mfa;
            }
            _ => {
                grants.revoke_family(&g.family).await?;
                return Err(err(ErrorCode::InvalidGrant, "the sign-in session behind this refresh token has ended"));
            }
        }
    }
    let scope: Vec<String> = match asked {
        None => g.scope.clone(),
        Some(asked) => {
            if asked.iter().any(|a| !g.scope.contains(a)) {
                return Err(err(ErrorCode::InvalidScope, "scope exceeds what was originally granted"));
            }
            asked
        }
    };
    let token = random(32);
    grants.put_refresh(&token, &g).await?;
    let grant =
        Grant { client, identity: &g.identity, scope: &scope, family: &g.family, auth_time: g.auth_time, nonce: None };
    Ok(respond(rt, b, &grant, scope.iter().any(|s| s == "openid"), Some(token)))
}

/// The identity of a service client (`principal_type: service`).
fn service_identity(b: &BrokerSpec, client: &BrokerClientSpec) -> Identity {
    let population = client.populations.first().copied().unwrap_or(Population::Workforce);
    let mut id = Identity::new(SERVICE_PROVIDER, crate::identity::ProviderKind::Broker, population, client.client_id.clone());
    id.tenant = b.issuer.clone();
    id.principal_type = crate::identity::PrincipalType::Service;
    id.client_id = Some(client.client_id.clone());
    id.idp_kind = "service".into();
    id
}

/// `provider` and `provider_kind` of client-credentials identities: the broker itself.
pub const SERVICE_PROVIDER: &str = "broker";

fn client_credentials(
    rt: &Runtime,
    b: &BrokerSpec,
    client: &BrokerClientSpec,
    form: &BTreeMap<String, String>,
) -> Result<Reply, OAuthError> {
    let user_only = |s: &String| super::STANDARD_SCOPES.contains(&s.as_str());
    let scope: Vec<String> = match form.get("scope") {
        None => client.scopes.iter().filter(|s| !user_only(s)).cloned().collect(),
        Some(s) => {
            let asked: Vec<String> = s.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect();
            if asked.iter().any(|a| user_only(a) || !client.scopes.contains(a)) {
                return Err(err(ErrorCode::InvalidScope, "scope asks for a scope this client may not have"));
            }
            asked
        }
    };
    let identity = service_identity(b, client);
    let family = random(16);
    let grant = Grant { client, identity: &identity, scope: &scope, family: &family, auth_time: None, nonce: None };
    Ok(respond(rt, b, &grant, false, None))
}

/// The token response (RFC 6749 §5.1), never cached.
fn respond(rt: &Runtime, b: &BrokerSpec, g: &Grant<'_>, with_id_token: bool, refresh: Option<String>) -> Reply {
    let Some(m) = rt.minter.as_ref() else {
        return error_reply(err(ErrorCode::ServerError, "the broker has no signing key"), Challenge::Basic);
    };
    let now = now_secs();
    let (access, exp) = tokens::access_token(m, b, g, now);
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": exp - now,
        "scope": g.scope.join(" "),
    });
    if with_id_token {
        body["id_token"] = json!(tokens::id_token(m, b, g, &access, now));
    }
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    let mut r = Reply::json(200, &body, "ok");
    r.headers.push(("pragma", "no-cache".into()));
    r
}
