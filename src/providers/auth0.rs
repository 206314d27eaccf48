//! Auth0: issuer with trailing slash (plus custom domains), `aud` string or array,
//! identity provider from the `sub` prefix, namespaced custom claims, Organizations,
//! `amr: ["mfa"]` only on interactive MFA (PROVIDERS.md §3, §5.3, §5.5).

use super::claims::{apply_amr_acr, Claims};
use super::{check_audience, Ctx};
use crate::config::Auth0Spec;
use crate::identity::Identity;
use crate::refusal::Refusal;

pub fn identity(ctx: &Ctx<'_>, k: &Auth0Spec, c: &Claims) -> Result<Identity, Refusal> {
    let iss = c.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
    if iss != ctx.spec.issuer && !k.extra_issuers.iter().any(|i| i == iss) {
        return Err(Refusal::IssuerMismatch);
    }
    check_audience(c, &ctx.spec.audiences)?;
    let sub = c.str("sub").ok_or(Refusal::MissingClaim("sub"))?;
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, sub.to_string());
    id.issuer = iss.to_string();
    id.tenant = k.tenant_domain.clone();
    id.org = c.string("org_id");
    if let Some(name) = c.get("org_name") {
        id.attributes.insert("org_name".into(), name.clone());
    }
    let service = c.str("gty") == Some("client-credentials") || sub.ends_with("@clients");
    if service {
        id.principal_type = "service".into();
    }
    let rfc9068 = ctx.header.typ.as_deref().is_some_and(super::claims::is_at_jwt);
    let access = rfc9068 || c.has("scope") || c.has("permissions") || c.has("gty") || c.has("azp");
    id.token_use = if access { "access" } else { "id" }.into();
    id.client_id = c.string("azp").or_else(|| c.string("client_id"));
    if !access {
        id.client_id = c.audiences().first().map(|s| s.to_string());
    }
    id.email = c.string("email");
    id.email_verified = c.bool_lenient("email_verified");
    id.name = c.string("name");
    id.username = c.string("nickname");
    id.scopes = c.scope_list("scope");
    id.permissions = c.list("permissions");
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    id.auth_time = c.i64("auth_time");
    id.session_id = c.string("sid");
    id.token_id = c.string("jti");
    if !service {
        (id.idp, id.idp_kind) = idp(sub, &ctx.spec.id);
    }
    // Namespaced claims (`https://example.com/roles`) become attributes, namespace stripped;
    // `claims:` can map them onto roles, groups, … (applied after this function).
    for (name, v) in c.0.iter() {
        if name.starts_with("https://") || name.starts_with("http://") {
            let short = name.rsplit('/').next().unwrap_or(name);
            if !short.is_empty() {
                id.attributes.insert(short.to_string(), v.clone());
            }
        }
    }
    Ok(id)
}

/// The identity provider from the `sub` prefix (`google-oauth2|…`, `samlp|conn|…`).
fn idp(sub: &str, provider: &str) -> (String, String) {
    let mut parts = sub.split('|');
    let strategy = parts.next().unwrap_or("");
    let second = parts.next();
    let has_id = second.is_some();
    match strategy {
        _ if !has_id => (provider.to_string(), "native".into()),
        "auth0" | "email" | "sms" => (provider.to_string(), "native".into()),
        "samlp" | "waad" | "oidc" | "adfs" | "ad" | "okta" | "pingfederate" => {
            let conn = if parts.next().is_some() { second.unwrap_or("") } else { "" };
            let v = if conn.is_empty() { format!("auth0:{strategy}") } else { format!("auth0:{strategy}:{conn}") };
            (v, "enterprise".into())
        }
        "google-oauth2" | "facebook" | "apple" | "github" | "windowslive" | "linkedin" | "twitter" | "amazon"
        | "microsoft" => (format!("auth0:{strategy}"), "social".into()),
        other => (format!("auth0:{other}"), "unknown".into()),
    }
}
