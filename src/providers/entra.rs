//! Microsoft Entra ID (workforce and External ID): the `{tenantid}` issuer template
//! bound to `tid` and to the key's own issuer, the tenant allow-list, `oid` as the
//! subject, group overage, v1/v2 claim differences (PROVIDERS.md §1, §5.3).

use super::claims::{apply_amr_acr, Claims};
use super::{check_audience, Ctx};
use crate::config::EntraSpec;
use crate::identity::{Identity, Population};
use crate::refusal::Refusal;

/// Tenant of personal Microsoft accounts (PROVIDERS.md §1.1).
pub const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

pub fn identity(ctx: &Ctx<'_>, k: &EntraSpec, c: &Claims) -> Result<Identity, Refusal> {
    let iss = c.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
    let tid = c.str("tid").ok_or(Refusal::MissingClaim("tid"))?.to_ascii_lowercase();
    if !is_guid(&tid) {
        return Err(Refusal::TenantNotAllowed);
    }
    check_issuer(ctx, iss, &tid)?;
    if !(k.tenants.iter().any(|t| t == "*" || *t == tid)) {
        return Err(Refusal::TenantNotAllowed);
    }
    check_audience(c, &ctx.spec.audiences)?;
    // `sub` is pairwise per application; `oid` is the stable id (PROVIDERS.md §1.4).
    let oid = c.str("oid").ok_or(Refusal::MissingClaim("oid"))?;
    let population = if tid == MSA_TENANT { Population::Customer } else { ctx.spec.population };
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, population, oid.to_string());
    id.issuer = iss.to_string();
    id.tenant = tid.clone();
    if ctx.spec.issuer.contains("{tenantid}") {
        id.org = Some(tid.clone());
    }
    let v1 = c.string("ver").as_deref() == Some("1.0");
    id.username = if v1 { c.string("upn").or_else(|| c.string("unique_name")) } else { c.string("preferred_username") };
    id.email = c.string("email");
    id.email_verified = email_verified(c, id.email.as_deref());
    id.name = c.string("name");
    let app_only = c.str("idtyp") == Some("app") || (!c.has("scp") && c.str("sub") == Some(oid) && c.has("roles"));
    let roles = c.list("roles");
    if app_only {
        id.principal_type = "service".into();
        id.permissions = roles;
    } else {
        id.roles = roles;
    }
    id.admin_roles = c.list("wids");
    id.scopes = c.scope_list("scp");
    let overage = c.get("_claim_names").and_then(|v| v.get("groups")).is_some() || c.has("hasgroups");
    id.groups = if overage { Vec::new() } else { c.list("groups") };
    id.groups_complete = !overage && c.has("groups");
    id.auth_context = c.list("acrs");
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    if v1 {
        // v1 `acr` is "0"/"1" (ISO 29115) and says nothing about MFA.
        id.acr = None;
    }
    id.client_id = c.string("azp").or_else(|| c.string("appid"));
    let is_id_token = !c.has("scp") && !app_only && ctx.spec.client_id.as_deref().is_some_and(|cid| c.audiences().contains(&cid));
    id.token_use = if is_id_token { "id" } else { "access" }.into();
    if is_id_token {
        id.client_id = ctx.spec.client_id.clone();
    }
    id.auth_time = c.i64("auth_time");
    id.session_id = c.string("sid");
    id.token_id = c.string("uti");
    let (idp, idp_kind, guest) = idp(c, iss, &tid, &ctx.spec.id);
    id.idp = idp;
    id.idp_kind = idp_kind.into();
    id.user_type = match c.i64("acct") {
        Some(0) => Some("member".into()),
        Some(1) => Some("guest".into()),
        _ if tid == MSA_TENANT => Some("consumer".into()),
        _ if guest => Some("guest".into()),
        _ => None,
    };
    for (name, v) in c.0.iter() {
        if matches!(name.as_str(), "ctry" | "xms_pdl" | "xms_pl" | "login_hint" | "ipaddr") || name.starts_with("extension_") {
            id.attributes.insert(name.clone(), v.clone());
        }
    }
    Ok(id)
}

/// Microsoft's algorithm: substitute `tid` into the issuer template, compare exactly,
/// bind `tid` to the issuer's tenant segment, and bind the signing key's own `issuer`
/// (v2 JWKS) to the token's issuer.
fn check_issuer(ctx: &Ctx<'_>, iss: &str, tid: &str) -> Result<(), Refusal> {
    let expected = ctx.spec.issuer.replace("{tenantid}", tid);
    if iss != expected {
        return Err(Refusal::IssuerMismatch);
    }
    // The issuer's tenant (first path segment) must be the token's `tid` whenever the
    // issuer names one: a `{tenantid}` template or a tenant GUID (dev issuers name none).
    let first_segment = url::Url::parse(iss).ok().and_then(|u| u.path_segments()?.next().map(str::to_ascii_lowercase));
    let names_tenant = ctx.spec.issuer.contains("{tenantid}") || first_segment.as_deref().is_some_and(is_guid);
    if names_tenant && first_segment.as_deref() != Some(tid) {
        return Err(Refusal::IssuerMismatch);
    }
    if let Some(key_issuer) = &ctx.key.issuer {
        if key_issuer.replace("{tenantid}", tid) != iss {
            return Err(Refusal::KeyIssuerMismatch);
        }
    }
    Ok(())
}

/// `xms_edov` or a verified-email claim proves the address; otherwise unknown, never false.
fn email_verified(c: &Claims, email: Option<&str>) -> Option<bool> {
    if c.bool_lenient("xms_edov") == Some(true) {
        return Some(true);
    }
    let email = email?;
    let verified = ["verified_primary_email", "verified_secondary_email"]
        .iter()
        .any(|claim| c.list(claim).iter().any(|v| v.eq_ignore_ascii_case(email)));
    verified.then_some(true)
}

/// PROVIDERS.md §5.5 for Entra: (idp, idp_kind, is_guest).
fn idp(c: &Claims, iss: &str, tid: &str, provider: &str) -> (String, &'static str, bool) {
    match c.str("idp") {
        None => (provider.to_string(), "native", false),
        Some(v) if v == iss => (provider.to_string(), "native", false),
        Some(v) if v == "live.com" || v.contains(MSA_TENANT) => ("msa".into(), "social", true),
        Some(v) => match v.strip_prefix("https://sts.windows.net/").map(|r| r.trim_end_matches('/')) {
            Some(home) if is_guid(home) && home != tid => (format!("entra:{home}"), "external_tenant", true),
            _ => (format!("entra-idp:{v}"), "enterprise", true),
        },
    }
}

pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, ch)| match i {
            8 | 13 | 18 | 23 => *ch == b'-',
            _ => ch.is_ascii_hexdigit(),
        })
}
