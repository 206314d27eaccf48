//! Amazon Cognito user pools: `token_use` enforced, access tokens bound by `client_id`
//! (they carry no `aud`), federated auto-groups stripped, string booleans and
//! `custom:*` attributes (PROVIDERS.md §4, §5.3).

use super::claims::{apply_amr_acr, Claims};
use super::{check_issuer_exact, Ctx};
use crate::config::{CognitoSpec, TokenUse};
use crate::identity::Identity;
use crate::refusal::Refusal;
use serde_json::Value;

pub fn identity(ctx: &Ctx<'_>, k: &CognitoSpec, c: &Claims) -> Result<Identity, Refusal> {
    let iss = check_issuer_exact(ctx, c)?;
    let token_use = c.str("token_use").ok_or(Refusal::MissingClaim("token_use"))?;
    let is_access = match (token_use, k.token_use) {
        ("access", TokenUse::Access | TokenUse::Any) => true,
        ("id", TokenUse::Id | TokenUse::Any) => false,
        _ => return Err(Refusal::WrongTokenUse),
    };
    let allowed = |v: &str| ctx.spec.client_id.as_deref() == Some(v) || ctx.spec.audiences.iter().any(|a| a == v);
    let client = if is_access { c.str("client_id") } else { c.audiences().first().copied() };
    if !client.is_some_and(allowed) {
        return Err(Refusal::AudienceMismatch);
    }
    let sub = c.str("sub").ok_or(Refusal::MissingClaim("sub"))?;
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, sub.to_string());
    id.issuer = iss.to_string();
    let pool = iss.rsplit('/').next().unwrap_or_default().to_string();
    id.token_use = if is_access { "access" } else { "id" }.into();
    id.client_id = client.map(str::to_string);
    id.username = c.string(if is_access { "username" } else { "cognito:username" });
    if is_access && !c.has("username") && Some(sub) == c.str("client_id") {
        id.principal_type = "service".into();
    }
    id.email = c.string("email");
    id.email_verified = c.bool_lenient("email_verified");
    id.name = c.string("name");
    // `{poolId}_{Provider}` groups only restate the federated IdP: not authorization groups.
    let auto_prefix = format!("{pool}_");
    id.groups = c.list("cognito:groups").into_iter().filter(|g| !g.starts_with(&auto_prefix)).collect();
    id.groups_complete = true;
    if k.groups_are_roles {
        id.roles = id.groups.clone();
    }
    id.scopes = c.scope_list("scope");
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    id.auth_time = c.i64("auth_time");
    id.token_id = c.string("jti");
    id.tenant = pool;
    (id.idp, id.idp_kind) = idp(c, &ctx.spec.id);
    for (name, v) in c.0.iter() {
        if let Some(attr) = name.strip_prefix("custom:") {
            id.attributes.insert(attr.to_string(), v.clone());
        } else if matches!(name.as_str(), "cognito:preferred_role" | "cognito:roles" | "origin_jti") {
            id.attributes.insert(name.clone(), v.clone());
        }
    }
    Ok(id)
}

/// The primary entry of `identities` (federated users), else native.
fn idp(c: &Claims, provider: &str) -> (String, String) {
    let Some(Value::Array(list)) = c.get("identities") else {
        return (provider.to_string(), "native".into());
    };
    let primary = list
        .iter()
        .find(|i| matches!(i.get("primary"), Some(Value::String(s)) if s == "true") || i.get("primary") == Some(&Value::Bool(true)))
        .or(list.first());
    let Some(entry) = primary else { return (provider.to_string(), "native".into()) };
    let name = entry.get("providerName").and_then(Value::as_str).unwrap_or("unknown");
    let kind = match entry.get("providerType").and_then(Value::as_str) {
        Some("Google" | "Facebook" | "SignInWithApple" | "LoginWithAmazon") => "social",
        Some("SAML" | "OIDC") => "enterprise",
        _ => "unknown",
    };
    (format!("cognito:{name}"), kind.into())
}
