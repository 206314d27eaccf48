//! Any compliant OpenID Provider: standard claims, with `claims:` in the provider file
//! for everything a standard does not name (groups, roles, org …).

use super::claims::{apply_amr_acr, Claims};
use super::{check_audience_or_client, check_issuer_exact, Ctx};
use crate::config::OidcSpec;
use crate::identity::Identity;
use crate::refusal::Refusal;

pub fn identity(ctx: &Ctx<'_>, k: &OidcSpec, c: &Claims) -> Result<Identity, Refusal> {
    let iss = check_issuer_exact(ctx, c)?;
    check_audience_or_client(ctx, c)?;
    let sub = c.str("sub").ok_or(Refusal::MissingClaim("sub"))?;
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, sub.to_string());
    id.issuer = iss.to_string();
    id.tenant = k.tenant.clone();
    let aud_is_client = ctx.spec.client_id.as_deref().is_some_and(|cid| c.audiences().contains(&cid));
    let access = c.has("scope") || c.has("scp") || c.has("client_id") || !aud_is_client
        || ctx.header.typ.as_deref().is_some_and(super::claims::is_at_jwt);
    id.token_use = if access { "access" } else { "id" }.into();
    id.client_id = c.string("client_id").or_else(|| c.string("azp")).or_else(|| if access { None } else { ctx.spec.client_id.clone() });
    id.email = c.string("email");
    id.email_verified = c.bool_lenient("email_verified");
    id.name = c.string("name");
    id.username = c.string("preferred_username");
    id.groups = c.list("groups");
    id.groups_complete = c.has("groups");
    id.roles = c.list("roles");
    id.scopes = if c.has("scope") { c.scope_list("scope") } else { c.scope_list("scp") };
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    id.auth_time = c.i64("auth_time");
    id.session_id = c.string("sid");
    id.token_id = c.string("jti");
    Ok(id)
}
