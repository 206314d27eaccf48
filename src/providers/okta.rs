//! Okta custom authorization servers: `uid` (not `sub`) is the user in access tokens,
//! `scp` is an array, org-server access tokens are refused (they are for Okta's own
//! APIs and cannot be validated by anyone else), RSA SecurID in `amr` is a one-time
//! password, step-up asks for `urn:okta:loa:2fa:any` with `max_age=0`.
//!
//! Vendor references: <https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/>
//! (token claims), <https://developer.okta.com/docs/concepts/auth-servers/> (org vs custom
//! authorization servers), <https://developer.okta.com/docs/guides/step-up-authentication/main/>,
//! <https://help.okta.com/oie/en-us/Content/Topics/identity-engine/policies/about-ssr.htm>
//! (self-service registration: the hosted Sign-In Widget's own "Sign up" link).

use super::claims::{apply_amr_acr, issuer_host, Claims};
use super::dev::{scopes, stable, DevToken, Kind as MintKind};
use super::kind::{check_audience, check_issuer_exact, section, standard_journey, Ctx, Kind, Loader, Param};
use crate::journey::{Journey, JourneyStart};
use crate::config::kind::{SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, Population, PrincipalType, ProviderKind, TokenUse};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};

/// The `typ` Okta puts on org authorization server access tokens.
const ORG_AT_TYP: &str = "application/okta-internal-at+jwt";

/// Okta's assurance level for "two factors, any kind": the default strong `acr` and
/// the one step-up asks for.
pub const LOA_2FA: &str = "urn:okta:loa:2fa:any";

crate::provider_file!(
    /// `kind: okta` (custom authorization servers only).
    OktaFile {
        mfa_acr: Option<Vec<S>>,
        /// The org id (`00o…`) that `idp` carries for users homed in Okta.
        org_id: Option<S>,
        /// "Create an account" on the sign-in page, for orgs with self-service
        /// registration enabled (default: off).
        signup: Option<bool>,
    }
);

pub static LOADER: Loader<OktaFile> =
    Loader { kind: ProviderKind::Okta, population: Some(Population::Workforce), issuer: None, check };

fn check(f: &OktaFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    if spec.audiences.is_empty() {
        cx.at("audiences", "is required: the accepted `aud` values (e.g. api://default)");
    }
    if spec.mfa_acr.is_empty() {
        spec.mfa_acr = vec![LOA_2FA.into(), "phr".into(), "phrh".into()];
    }
    section(Okta { org_id: f.org_id.as_ref().map(|s| s.to_string()), signup: f.signup.unwrap_or(false) })
}

/// An Okta provider's rules.
#[derive(Debug, Clone)]
pub struct Okta {
    pub org_id: Option<String>,
    /// Self-service registration is enabled in the org (its file says so).
    pub signup: bool,
}

impl Kind for Okta {
    fn label(&self) -> ProviderKind {
        ProviderKind::Okta
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        identity(ctx, self, c)
    }

    /// Sign-up: with self-service registration enabled, the hosted Sign-In Widget
    /// offers its own "Sign up" link; no authorize parameter opens the registration
    /// form itself, so the journey starts at the authorize endpoint unchanged and is
    /// counted as a sign-up.
    fn journey(&self, spec: &ProviderSpec, journey: Journey, _authz: &str, _route_policy: Option<&str>) -> Option<JourneyStart> {
        match journey {
            Journey::Signup if self.signup => Some(JourneyStart::default()),
            _ => standard_journey(self, spec, journey),
        }
    }

    fn step_up_params(&self, spec: &ProviderSpec) -> Vec<Param> {
        vec![
            ("acr_values", spec.mfa_acr.first().cloned().unwrap_or_else(|| LOA_2FA.into())),
            ("max_age", "0".into()),
        ]
    }

    fn dev_mfa_acr(&self) -> Vec<String> {
        vec![LOA_2FA.into()]
    }

    /// A custom authorization server's token: `uid`/`cid`/`scp` array in access
    /// tokens, `idp` and `amr` in ID tokens.
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let DevToken { spec, user, o, client_id, audience, seed, email, .. } = t;
        let uid = format!("00u{}", stable(&seed, 17));
        c.insert("ver".into(), json!(1));
        if !user.groups.is_empty() {
            c.insert("groups".into(), json!(user.groups));
        }
        if user.mfa {
            c.insert("acr".into(), json!(LOA_2FA));
        }
        if o.kind == MintKind::Access {
            c.insert("jti".into(), json!(format!("AT.{}", stable(&format!("{seed}/{}", o.now), 20))));
            c.insert("aud".into(), json!(audience));
            c.insert("cid".into(), json!(client_id));
            c.insert("uid".into(), json!(uid));
            c.insert("sub".into(), json!(email.clone().unwrap_or(user.name.clone())));
            c.insert("scp".into(), json!(scopes(user)));
            c.insert("auth_time".into(), json!(o.now));
        } else {
            c.insert("jti".into(), json!(format!("ID.{}", stable(&format!("{seed}/{}", o.now), 20))));
            c.insert("aud".into(), json!(client_id));
            c.insert("sub".into(), json!(uid));
            c.insert("idp".into(), json!(format!("00o{}", stable(&spec.id, 17))));
            c.insert("amr".into(), json!(if user.mfa { vec!["pwd", "otp", "mfa"] } else { vec!["pwd"] }));
            c.insert("preferred_username".into(), json!(email.clone().unwrap_or(user.name.clone())));
            c.insert("auth_time".into(), json!(o.now));
            if let Some(e) = &email {
                c.insert("email".into(), json!(e));
                c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(true)));
            }
        }
        if let Some(n) = &user.display_name {
            c.insert("name".into(), json!(n));
        }
        for (k, v) in &user.attributes {
            c.insert(k.clone(), json!(v));
        }
    }
}

fn identity(ctx: &Ctx<'_>, k: &Okta, c: &Claims) -> Result<Identity, Refusal> {
    let iss = check_issuer_exact(ctx, c)?;
    let access = c.has("cid") || c.has("uid") || c.has("scp");
    // Org AS access tokens are for Okta only: recognisable by their typ or by an issuer
    // without an /oauth2/{server} path (okta/okta-jwt-verifier-java#93).
    let org_issuer = url::Url::parse(iss).map(|u| !u.path().contains("/oauth2/")).unwrap_or(false);
    if ctx.header.typ.as_deref() == Some(ORG_AT_TYP) || (access && org_issuer && ctx.kind_label == ProviderKind::Okta) {
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
    id.token_use = if access { TokenUse::Access } else { TokenUse::Id };
    if service {
        id.principal_type = PrincipalType::Service;
    }
    id.username = if access { c.string("sub").filter(|_| !service) } else { c.string("preferred_username") };
    id.email = c.string("email");
    id.email_verified = c.bool_lenient("email_verified");
    id.name = c.string("name");
    id.groups = c.list("groups");
    id.groups_complete = c.has("groups");
    id.scopes = c.scope_list("scp");
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    // Okta's `rsa` is RSA SecurID, a one-time password, not proof of a key
    // (https://developer.okta.com/docs/reference/api/authn/#factor-type).
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
fn idp(c: &Claims, k: &Okta, provider: &str) -> (String, String) {
    match c.str("idp") {
        None => (provider.to_string(), "native".into()),
        Some(v) if k.org_id.as_deref() == Some(v) => (provider.to_string(), "native".into()),
        Some(v) if k.org_id.is_none() && v.starts_with("00o") => (provider.to_string(), "native".into()),
        Some(v) => (format!("okta-idp:{v}"), "federated".into()),
    }
}

#[cfg(test)]
mod tests;
