//! Okta custom authorization servers: `uid` (not `sub`) is the user in access tokens,
//! `scp` is an array, org-server access tokens are refused (PROVIDERS.md §2, §5.3).

use super::claims::{apply_amr_acr, issuer_host, Claims};
use super::{check_audience, check_issuer_exact, Ctx};
use crate::config::OktaSpec;
use crate::identity::Identity;
use crate::refusal::Refusal;

/// The `typ` Okta puts on org authorization server access tokens.
const ORG_AT_TYP: &str = "application/okta-internal-at+jwt";

pub fn identity(ctx: &Ctx<'_>, k: &OktaSpec, c: &Claims) -> Result<Identity, Refusal> {
    let iss = check_issuer_exact(ctx, c)?;
    let access = c.has("cid") || c.has("uid") || c.has("scp");
    // Org AS access tokens are for Okta only: recognisable by their typ or by an issuer
    // without an /oauth2/{server} path (okta/okta-jwt-verifier-java#93).
    let org_issuer = url::Url::parse(iss).map(|u| !u.path().contains("/oauth2/")).unwrap_or(false);
    if ctx.header.typ.as_deref() == Some(ORG_AT_TYP) || (access && org_issuer && ctx.kind_label == "okta") {
        return Err(Refusal::OktaOrgAccessToken);
    }
    check_audience(c, &ctx.spec.audiences)?;
    let (subject, service) = if access {
        match c.str("uid") {
            Some(uid) => (uid.to_string(), false),
            None => (c.str("cid").or(c.str("sub")).ok_or(Refusal::MissingClaim("uid"))?.to_string(), true),
        }
    } else {
        (c.str("sub").ok_or(Refusal::MissingClaim("sub"))?.to_string(), false)
    };
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, subject);
    id.issuer = iss.to_string();
    id.tenant = issuer_host(iss);
    id.token_use = if access { "access" } else { "id" }.into();
    if service {
        id.principal_type = "service".into();
    }
    id.username = if access { c.string("sub").filter(|_| !service) } else { c.string("preferred_username") };
    id.email = c.string("email");
    id.email_verified = c.bool_lenient("email_verified");
    id.name = c.string("name");
    id.groups = c.list("groups");
    id.groups_complete = c.has("groups");
    id.scopes = c.scope_list("scp");
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    // Okta's `rsa` is RSA SecurID, a one-time password (PROVIDERS.md §5.7), not key proof.
    if id.amr_raw.iter().any(|a| a == "rsa") {
        id.amr.retain(|a| a != "pop" || id.amr_raw.iter().any(|r| r == "pop" || r == "phr"));
        if !id.amr.iter().any(|a| a == "otp") {
            id.amr.push("otp".into());
        }
    }
    id.client_id = if access { c.string("cid") } else { c.audiences().first().map(|s| s.to_string()) };
    id.auth_time = c.i64("auth_time");
    id.token_id = c.string("jti");
    (id.idp, id.idp_kind) = idp(c, k, &ctx.spec.id);
    Ok(id)
}

/// `idp` is the org id (`00o…`) for users homed in Okta, else an IdP id (`0oa…`).
fn idp(c: &Claims, k: &OktaSpec, provider: &str) -> (String, String) {
    match c.str("idp") {
        None => (provider.to_string(), "native".into()),
        Some(v) if k.org_id.as_deref() == Some(v) => (provider.to_string(), "native".into()),
        Some(v) if k.org_id.is_none() && v.starts_with("00o") => (provider.to_string(), "native".into()),
        Some(v) => (format!("okta-idp:{v}"), "federated".into()),
    }
}
