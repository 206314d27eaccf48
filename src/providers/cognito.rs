//! Amazon Cognito user pools: `token_use` enforced, access tokens bound by `client_id`
//! (they carry no `aud`), federated auto-groups stripped, string booleans and
//! `custom:*` attributes; sign-out through Cognito's own `/logout`.
//!
//! Vendor references:
//! <https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html>
//! (verification: `token_use`, `client_id`, `aud`),
//! <https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html>,
//! <https://docs.aws.amazon.com/cognito/latest/developerguide/logout-endpoint.html>,
//! <https://docs.aws.amazon.com/cognito/latest/developerguide/hosted-UI-endpoints.html>
//! (the hosted `/signup` page takes the authorize endpoint's parameters).

use super::claims::{apply_amr_acr, Claims};
use super::dev::{guid, scopes, stable, DevToken, Kind as MintKind};
use super::kind::{check_issuer_exact, section, signup_default, standard_journey, Ctx, Kind, Loader, Param};
use crate::journey::{Journey, JourneyStart};
use crate::config::kind::{SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, Population, PrincipalType, ProviderKind, TokenUse};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The `acr` a dev provider shaped like Cognito puts on MFA users' tokens.
const DEV_MFA_ACR: &str = "urn:cognito:loa:3";

crate::provider_file!(
    /// `kind: cognito`.
    CognitoFile {
        token_use: Option<S>,
        mfa_acr: Option<Vec<S>>,
        /// Treat `cognito:groups` as roles too.
        groups_are_roles: Option<bool>,
        /// "Create an account" on the sign-in page (default: customer providers).
        signup: Option<bool>,
    }
);

/// Which Cognito tokens a provider accepts (`token_use:` in its file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedUse {
    Access,
    Id,
    Any,
}

/// The hosted UI's sign-up page for an authorization endpoint: `https://{domain}/signup`
/// for `https://{domain}/oauth2/authorize` (a dev provider's `…/authorize` becomes
/// `…/signup` beside it). `None` for an endpoint of another shape.
pub fn signup_page(authz: &str) -> Option<String> {
    let mut u = url::Url::parse(authz).ok()?;
    let path = u.path().to_string();
    let base = path.strip_suffix("/oauth2/authorize").or_else(|| path.strip_suffix("/authorize"))?;
    u.set_path(&format!("{base}/signup"));
    u.set_query(None);
    Some(u.to_string())
}

pub static LOADER: Loader<CognitoFile> =
    Loader { kind: ProviderKind::Cognito, population: Some(Population::Customer), issuer: None, check };

fn check(f: &CognitoFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    let token_use = match f.token_use.as_deref() {
        None | Some("access") => AcceptedUse::Access,
        Some("id") => AcceptedUse::Id,
        Some("any") => AcceptedUse::Any,
        Some(v) => {
            cx.at("token_use", format!("`{v}` is not one of access, id, any"));
            AcceptedUse::Access
        }
    };
    if spec.client_id.is_none() && spec.audiences.is_empty() {
        cx.at("client_id", "is required: Cognito access tokens are bound to the app client id");
    }
    section(Cognito { token_use, groups_are_roles: f.groups_are_roles.unwrap_or(false), signup: signup_default(f.signup, spec) })
}

/// A Cognito user pool provider's rules.
#[derive(Debug, Clone)]
pub struct Cognito {
    pub token_use: AcceptedUse,
    pub groups_are_roles: bool,
    /// Sign-up offered: the hosted UI's `/signup` page.
    pub signup: bool,
}

impl Kind for Cognito {
    fn label(&self) -> ProviderKind {
        ProviderKind::Cognito
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        identity(ctx, self, c)
    }

    /// Sign-up: the hosted UI's `/signup` page beside `/oauth2/authorize`, with the same
    /// parameters.
    fn journey(&self, spec: &ProviderSpec, journey: Journey, authz: &str, _route_policy: Option<&str>) -> Option<JourneyStart> {
        match journey {
            Journey::Signup if self.signup => Some(JourneyStart { endpoint: Some(signup_page(authz)?), ..JourneyStart::default() }),
            _ => standard_journey(self, spec, journey),
        }
    }

    /// Browser sign-in reads the ID token, whatever bearer tokens the provider takes.
    fn for_sign_in(&self) -> Option<Arc<dyn Kind>> {
        Some(Arc::new(Cognito { token_use: AcceptedUse::Id, ..self.clone() }))
    }

    /// Cognito's `/logout` is not RP-initiated logout: it takes `client_id` and
    /// `logout_uri` (one of the app client's sign-out URLs), no `id_token_hint`.
    fn end_session_params(&self, client_id: &str, back: &str, _id_token: Option<&str>) -> Vec<Param> {
        vec![("client_id", client_id.to_string()), ("logout_uri", back.to_string())]
    }

    fn dev_mfa_acr(&self) -> Vec<String> {
        vec![DEV_MFA_ACR.into()]
    }

    /// `token_use`, `client_id` (no `aud`) in access tokens, `cognito:groups` with the
    /// federated auto-group, string booleans, `custom:*` attributes.
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let DevToken { dev, user, o, client_id, seed, email, .. } = t;
        let mut groups = user.groups.clone();
        if let Some(conn) = &user.connection {
            groups.push(format!("{}_{conn}", dev.tenant));
        }
        c.insert("sub".into(), json!(guid(&seed)));
        if !groups.is_empty() {
            c.insert("cognito:groups".into(), json!(groups));
        }
        c.insert("auth_time".into(), json!(o.now));
        c.insert("jti".into(), json!(guid(&format!("{seed}/{}", o.now))));
        c.insert("origin_jti".into(), json!(guid(&format!("origin/{seed}/{}", o.now))));
        if user.mfa {
            c.insert("acr".into(), json!(DEV_MFA_ACR));
            c.insert("amr".into(), json!(["pwd", "otp", "mfa"]));
        }
        let username = match &user.connection {
            Some(conn) => format!("{conn}_{}", stable(&seed, 21)),
            None => user.name.clone(),
        };
        if o.kind == MintKind::Access {
            c.insert("token_use".into(), json!("access"));
            c.insert("version".into(), json!(2));
            c.insert("client_id".into(), json!(client_id));
            c.insert("scope".into(), json!(scopes(user).join(" ")));
            c.insert("username".into(), json!(username));
        } else {
            c.insert("token_use".into(), json!("id"));
            c.insert("aud".into(), json!(client_id));
            c.insert("cognito:username".into(), json!(username));
            if let Some(e) = &email {
                c.insert("email".into(), json!(e));
                // Cognito sends booleans as strings in places: exercise the coercion.
                c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(true).to_string()));
            }
            if let Some(n) = &user.display_name {
                c.insert("name".into(), json!(n));
            }
            if let Some(conn) = &user.connection {
                c.insert(
                    "identities".into(),
                    json!([{"userId": stable(&seed, 21), "providerName": conn, "providerType": conn,
                            "issuer": null, "primary": "true", "dateCreated": "1716900000000"}]),
                );
            }
            for (k, v) in &user.attributes {
                c.insert(format!("custom:{k}"), json!(v));
            }
        }
    }
}

fn identity(ctx: &Ctx<'_>, k: &Cognito, c: &Claims) -> Result<Identity, Refusal> {
    let iss = check_issuer_exact(ctx, c)?;
    let token_use = c.str("token_use").ok_or(Refusal::MissingClaim("token_use"))?;
    let is_access = match (token_use, k.token_use) {
        ("access", AcceptedUse::Access | AcceptedUse::Any) => true,
        ("id", AcceptedUse::Id | AcceptedUse::Any) => false,
        _ => return Err(Refusal::WrongTokenUse),
    };
    let allowed = |v: &str| ctx.spec.client_id.as_deref() == Some(v) || ctx.spec.audiences.iter().any(|a| a == v);
    let auds = c.audiences();
    let client = if is_access { c.str("client_id") } else { auds.first().map(|a| a.as_ref()) };
    if !client.is_some_and(allowed) {
        return Err(Refusal::AudienceMismatch);
    }
    let sub = c.str("sub").ok_or(Refusal::MissingClaim("sub"))?;
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, sub.to_string());
    id.issuer = iss.to_string();
    let pool = iss.rsplit('/').next().unwrap_or_default().to_string();
    id.token_use = if is_access { TokenUse::Access } else { TokenUse::Id };
    id.client_id = client.map(str::to_string);
    id.username = c.string(if is_access { "username" } else { "cognito:username" });
    if is_access && !c.has("username") && Some(sub) == c.str("client_id") {
        id.principal_type = PrincipalType::Service;
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
    for (name, v) in c.iter() {
        if let Some(attr) = name.strip_prefix("custom:") {
            id.attributes.insert(attr.to_string(), v.to_value());
        } else if matches!(name, "cognito:preferred_role" | "cognito:roles" | "origin_jti") {
            id.attributes.insert(name.to_string(), v.to_value());
        }
    }
    Ok(id)
}

/// The primary entry of `identities` (federated users), else native.
fn idp(c: &Claims, provider: &str) -> (String, String) {
    let Some(Value::Array(list)) = c.value("identities") else {
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

#[cfg(test)]
mod tests;
