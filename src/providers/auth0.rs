//! Auth0: issuer with trailing slash (plus custom domains), `aud` string or array,
//! identity provider from the `sub` prefix, namespaced custom claims, Organizations,
//! `amr: ["mfa"]` only on interactive MFA, step-up with the PAPE multi-factor policy.
//!
//! Vendor references: <https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles>,
//! <https://auth0.com/docs/secure/tokens/json-web-tokens/create-custom-claims> (namespaced
//! claims), <https://auth0.com/docs/secure/multi-factor-authentication/step-up-authentication>,
//! <https://auth0.com/docs/customize/custom-domains> (one tenant, several issuers),
//! <https://auth0.com/docs/authenticate/login/auth0-universal-login/new-experience#signup>
//! (`screen_hint=signup` opens Universal Login on its sign-up screen).

use super::claims::{apply_amr_acr, Claims};
use super::dev::{scopes, stable, with_slash, DevToken, Kind as MintKind};
use super::kind::{check_audience, section, signup_default, standard_journey, Ctx, Kind, Loader, Param};
use crate::journey::{Journey, JourneyStart};
use crate::config::kind::{opt_strings, SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, Population, PrincipalType, ProviderKind, TokenUse};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};

/// The `acr_values` Auth0 understands as "require MFA" (OpenID Provider
/// Authentication Policy Extension 1.0).
pub const PAPE_MULTI_FACTOR: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";

crate::provider_file!(
    /// `kind: auth0`.
    Auth0File {
        mfa_acr: Option<Vec<S>>,
        /// Canonical tenant domain (the issuer may be a custom domain).
        tenant_domain: Option<S>,
        /// Extra accepted issuers (custom domains of the same tenant).
        issuers: Option<Vec<S>>,
        /// "Create an account" on the sign-in page (default: customer providers).
        signup: Option<bool>,
    }
);

pub static LOADER: Loader<Auth0File> =
    Loader { kind: ProviderKind::Auth0, population: Some(Population::Customer), issuer: None, check };

fn check(f: &Auth0File, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    if !spec.issuer.ends_with('/') && !spec.issuer.is_empty() {
        cx.at("issuer", "Auth0 issuers end with `/` (https://{domain}/)");
    }
    let extra = opt_strings(&f.issuers);
    for i in &extra {
        if !i.ends_with('/') {
            cx.at("issuers", format!("`{i}`: Auth0 issuers end with `/`"));
        }
    }
    if spec.audiences.is_empty() {
        cx.at("audiences", "is required: the API identifier(s) tokens must carry in `aud`");
    }
    section(Auth0 {
        tenant_domain: f.tenant_domain.as_ref().map(|s| s.to_string()).unwrap_or(cx.issuer_host.clone()),
        extra_issuers: extra,
        signup: signup_default(f.signup, spec),
    })
}

/// An Auth0 provider's rules.
#[derive(Debug, Clone)]
pub struct Auth0 {
    pub tenant_domain: String,
    pub extra_issuers: Vec<String>,
    /// Sign-up offered: Universal Login's sign-up screen.
    pub signup: bool,
}

impl Kind for Auth0 {
    fn label(&self) -> ProviderKind {
        ProviderKind::Auth0
    }

    fn extra_issuers(&self) -> Vec<String> {
        self.extra_issuers.clone()
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        identity(ctx, self, c)
    }

    /// Sign-up: Universal Login opens on its sign-up screen (`screen_hint=signup`).
    fn journey(&self, spec: &ProviderSpec, journey: Journey, _authz: &str, _route_policy: Option<&str>) -> Option<JourneyStart> {
        match journey {
            Journey::Signup if self.signup => {
                Some(JourneyStart { params: vec![("screen_hint", "signup".into())], ..JourneyStart::default() })
            }
            _ => standard_journey(self, spec, journey),
        }
    }

    fn step_up_params(&self, spec: &ProviderSpec) -> Vec<Param> {
        vec![
            ("acr_values", spec.mfa_acr.first().cloned().unwrap_or_else(|| PAPE_MULTI_FACTOR.into())),
            ("prompt", "login".into()),
        ]
    }

    /// Namespaced custom claims, `permissions`, `amr: ["mfa"]` for MFA users.
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let DevToken { spec, user, o, client_id, audience, seed, email, .. } = t;
        let conn = user.connection.clone().unwrap_or_else(|| "auth0".into());
        c.insert("sub".into(), json!(format!("{conn}|{}", stable(&seed, 24))));
        if let Some(org) = &user.org {
            c.insert("org_id".into(), json!(org));
        }
        if user.mfa {
            c.insert("amr".into(), json!(["mfa"]));
        }
        let ns = "https://idfabric.dev/";
        if !user.roles.is_empty() {
            c.insert(format!("{ns}roles"), json!(user.roles));
        }
        if !user.groups.is_empty() {
            c.insert(format!("{ns}groups"), json!(user.groups));
        }
        if o.kind == MintKind::Access {
            c.insert("aud".into(), json!([audience, format!("{}userinfo", with_slash(&spec.issuer))]));
            c.insert("azp".into(), json!(client_id));
            c.insert("scope".into(), json!(scopes(user).join(" ")));
            c.insert("permissions".into(), json!(user.scopes));
            if let Some(e) = &email {
                c.insert(format!("{ns}email"), json!(e));
                c.insert(format!("{ns}email_verified"), json!(user.email_verified.unwrap_or(false)));
            }
        } else {
            c.insert("aud".into(), json!(client_id));
            c.insert("nickname".into(), json!(user.name));
            c.insert("auth_time".into(), json!(o.now));
            if let Some(e) = &email {
                c.insert("email".into(), json!(e));
                c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(false)));
            }
            if let Some(n) = &user.display_name {
                c.insert("name".into(), json!(n));
            }
        }
        for (k, v) in &user.attributes {
            c.insert(format!("{ns}{k}"), json!(v));
        }
    }
}

fn identity(ctx: &Ctx<'_>, k: &Auth0, c: &Claims) -> Result<Identity, Refusal> {
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
    if let Some(name) = c.value("org_name") {
        id.attributes.insert("org_name".into(), name);
    }
    let service = c.str("gty") == Some("client-credentials") || sub.ends_with("@clients");
    if service {
        id.principal_type = PrincipalType::Service;
    }
    let rfc9068 = ctx.header.typ.as_deref().is_some_and(super::claims::is_at_jwt);
    let access = rfc9068 || c.has("scope") || c.has("permissions") || c.has("gty") || c.has("azp");
    id.token_use = if access { TokenUse::Access } else { TokenUse::Id };
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
    for (name, v) in c.iter() {
        if name.starts_with("https://") || name.starts_with("http://") {
            let short = name.rsplit('/').next().unwrap_or(name);
            if !short.is_empty() {
                id.attributes.insert(short.to_string(), v.to_value());
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

#[cfg(test)]
mod tests;
