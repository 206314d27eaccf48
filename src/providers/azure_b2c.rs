//! Azure AD B2C: exact issuers (one tenant, several host variants, trailing slash),
//! the policy in `tfp`/`acr` checked against the configured policies (never an
//! assurance level), MFA only from configured `mfa_policies`, `emails` as an array,
//! `idp` for social accounts and `extension_*` attributes (PROVIDERS-CIAM.md §9, §11).

use super::claims::Claims;
use super::{check_audience_or_client, Ctx};
use crate::config::AzureB2cSpec;
use crate::identity::{Identity, MfaSource};
use crate::refusal::Refusal;
use serde_json::Value;

/// What old B2C tenants put into `sub` when it is not mapped (§9.9 #6).
const LEGACY_SUB: &str = "Not supported currently. Use oid claim.";

pub fn identity(ctx: &Ctx<'_>, k: &AzureB2cSpec, c: &Claims) -> Result<Identity, Refusal> {
    let iss = c.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
    if iss != ctx.spec.issuer && !k.extra_issuers.iter().any(|i| i == iss) {
        return Err(Refusal::IssuerMismatch);
    }
    // The tenant is the GUID in the issuer's path; a custom policy's `tid` must agree.
    let tenant = crate::config::b2c_issuer_tenant(iss).ok_or(Refusal::IssuerMismatch)?;
    if !k.tenant.is_empty() && tenant != k.tenant {
        return Err(Refusal::IssuerMismatch);
    }
    if let Some(tid) = c.str("tid") {
        if !tid.eq_ignore_ascii_case(&tenant) {
            return Err(Refusal::IssuerMismatch);
        }
    }
    // `tfp` (user flows) or `acr` (starter-pack custom policies): a policy name.
    let policy = c.str("tfp").or_else(|| c.str("acr")).ok_or(Refusal::MissingClaim("tfp"))?;
    if !k.allows(policy) {
        return Err(Refusal::PolicyNotAllowed);
    }
    check_audience_or_client(ctx, c)?;
    let subject = match (c.str("oid"), c.str("sub")) {
        (Some(oid), _) => oid,
        (None, Some(sub)) if sub != LEGACY_SUB => sub,
        (None, Some(_)) => return Err(Refusal::InvalidSubject),
        (None, None) => return Err(Refusal::MissingClaim("oid")),
    };
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, subject.to_string());
    id.issuer = iss.to_string();
    id.tenant = tenant;
    id.email = c.list("emails").into_iter().next().or_else(|| c.string("email"));
    // B2C asserts nothing about the address (§11.7).
    id.email_verified = None;
    id.name = c.string("name");
    id.scopes = c.scope_list("scp");
    let is_access = c.has("scp");
    id.token_use = if is_access { "access" } else { "id" }.into();
    id.client_id = if is_access { c.string("azp") } else { c.audiences().first().map(|s| s.to_string()) };
    id.auth_time = c.i64("auth_time");
    // `acr` here is a policy name: never an `acr`, never MFA evidence by itself.
    id.acr = None;
    id.amr = Vec::new();
    id.amr_raw = Vec::new();
    if k.enforces_mfa(policy) {
        id.mfa = true;
        id.mfa_source = MfaSource::Acr;
    } else {
        id.mfa = false;
        id.mfa_source = MfaSource::None;
    }
    (id.idp, id.idp_kind) = idp(c.str("idp"), &ctx.spec.id);
    id.groups_complete = false;
    id.attributes.insert("b2c_policy".into(), Value::String(policy.to_string()));
    for (name, v) in c.0.iter() {
        if let Some(attr) = name.strip_prefix("extension_") {
            if !attr.is_empty() {
                id.attributes.insert(attr.to_string(), v.clone());
            }
        } else if name == "newUser" {
            id.attributes.insert("new_user".into(), v.clone());
        } else if name == "emails" {
            id.attributes.insert("emails".into(), v.clone());
        }
    }
    Ok(id)
}

/// PROVIDERS-CIAM.md §11.4: no `idp` = a local account; social domains; Entra tenants.
fn idp(v: Option<&str>, provider: &str) -> (String, String) {
    const SOCIAL: &[&str] = &[
        "google.com", "facebook.com", "live.com", "github.com", "amazon.com", "linkedin.com", "twitter.com",
        "apple.com", "microsoft.com", "qq.com", "wechat.com", "weibo.com",
    ];
    let Some(v) = v else { return (provider.to_string(), "native".into()) };
    if SOCIAL.iter().any(|s| v.eq_ignore_ascii_case(s)) {
        return (format!("b2c-idp:{v}"), "social".into());
    }
    let home = v
        .strip_prefix("https://sts.windows.net/")
        .or_else(|| v.strip_prefix("https://login.microsoftonline.com/"))
        .map(|r| r.trim_end_matches('/').trim_end_matches("/v2.0"));
    match home {
        Some(tid) if super::entra::is_guid(tid) => (format!("entra:{}", tid.to_ascii_lowercase()), "enterprise".into()),
        _ => (format!("b2c-idp:{v}"), "unknown".into()),
    }
}
