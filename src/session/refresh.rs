//! Loading a browser session, with the refresh of its upstream tokens shortly before
//! they expire. The proxy (`pipeline`), the broker and sign-in all load sessions
//! through [`session_for`], so a session is refreshed, or ended, the same way whichever
//! door it comes through.

use super::{Session, Sessions, StoreError};
use crate::providers::{now_secs, Registry, LEEWAY_SECS};
use crate::upstream;
use serde_json::Value;

/// The nonce a refreshed ID token may carry: none, or the sign-in's own (OIDC Core
/// §12.2, errata 2; oidc-provider repeats it, most providers omit it).
fn refreshed_nonce(first: Option<&str>, refreshed: &str) -> Option<String> {
    let nonce_of = |t: &str| crate::providers::jwt::parse(t).ok().and_then(|p| p.claims.string("nonce"));
    nonce_of(refreshed).and(first.and_then(nonce_of))
}

/// Loads the session behind a cookie, refreshing the upstream tokens shortly before
/// they expire (once across replicas). `None`: no usable session. When the session's
/// provider provisions its users over SCIM and this user is provisioned, the groups
/// are the user's SCIM group memberships of now, not those of the sign-in's token (a
/// mover's change applies at the next lookup; `crate::scim`). They are not written
/// back: the stored session keeps the token's.
pub async fn session_for(registry: &Registry, sessions: &Sessions, id: &str) -> Result<Option<Session>, StoreError> {
    let Some(mut s) = load_refreshed(registry, sessions, id).await? else { return Ok(None) };
    if registry.by_id(&s.identity.provider).is_some_and(|p| p.spec.scim.is_some()) {
        if let Some(groups) = super::directory::groups_for(sessions.store.as_ref(), &s.identity.provider, &s.identity.subject).await? {
            s.identity.groups = groups;
            s.identity.groups_complete = true;
        }
    }
    Ok(Some(s))
}

async fn load_refreshed(registry: &Registry, sessions: &Sessions, id: &str) -> Result<Option<Session>, StoreError> {
    let Some(mut s) = sessions.load(id).await? else { return Ok(None) };
    let now = now_secs();
    let exp = s.upstream_exp.unwrap_or(i64::MAX);
    if exp - now > 60 {
        return Ok(Some(s));
    }
    let Some(sealed) = s.refresh_token.clone() else {
        // Nothing to refresh with: the session ends with the provider's tokens.
        if exp + LEEWAY_SECS < now {
            sessions.destroy(id).await?;
            return Ok(None);
        }
        return Ok(Some(s));
    };
    if !sessions.claim_refresh(id, std::time::Duration::from_secs(30)).await? {
        return Ok(Some(s).filter(|_| exp + LEEWAY_SECS >= now));
    }
    let Some(p) = registry.by_id(&s.identity.provider).cloned() else { return Ok(None) };
    let Some(refresh) = sessions.key.open(&sealed, &s.identity.sub) else { return Ok(None) };
    // An Azure AD B2C refresh token is redeemed at its policy's own token endpoint.
    let policy = s.identity.attributes.get("b2c_policy").and_then(Value::as_str).map(str::to_string);
    let policy = policy.as_deref();
    match upstream::exchange_for(&registry.http, &p, policy, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await {
        Ok(tokens) => {
            if let Some(idt) = tokens.get("id_token").and_then(Value::as_str) {
                let nonce = refreshed_nonce(s.id_token.as_deref(), idt);
                if let Ok((mut identity, new_exp)) = registry.verify_id_token(p.index, idt, nonce.as_deref(), None).await {
                    let access = tokens.get("access_token").and_then(Value::as_str);
                    let userinfo = upstream::endpoints_for(&p, policy).and_then(|d| d.userinfo_endpoint);
                    let completed = crate::providers::oidc::complete_from_userinfo(&registry.http, &p, userinfo, &mut identity, idt, access).await;
                    if identity.sub == s.identity.sub && completed.is_ok() {
                        identity.token_use = crate::identity::TokenUse::Session;
                        // Refreshed tokens often drop `amr`: the login's MFA stands.
                        super::carry_mfa(&mut identity, s.mfa);
                        s.identity = identity;
                        s.upstream_exp = Some(new_exp);
                        s.id_token = Some(idt.to_string());
                    }
                }
            }
            if let Some(r) = tokens.get("refresh_token").and_then(Value::as_str) {
                s.refresh_token = Some(sessions.key.seal(r, &s.identity.sub));
            }
            sessions.update(id, &s).await?;
            Ok(Some(s))
        }
        Err(e) => {
            tracing::info!(provider = p.id(), error = %e, "session refresh refused: ending the session");
            sessions.destroy(id).await?;
            Ok(None)
        }
    }
}
