//! Any compliant OpenID Provider: standard claims, with `claims:` in the provider file
//! for everything a standard does not name (groups, roles, org …).
//!
//! Browser sign-in also reads the UserInfo endpoint: in the code flow, a conforming OP
//! returns the claims asked for with `scope` (email, profile, groups …) from UserInfo
//! only, and puts little more than `sub` in the ID token (OpenID Connect Core §5.4; oidc-provider
//! does exactly this by default). Without UserInfo such a user would arrive with no
//! email and no groups, and every group rule would fail closed.

use super::claims::{apply_amr_acr, apply_overrides, Claims};
use super::kind::{check_audience_or_client, check_issuer_exact, section, Ctx, Kind, Loader};
use crate::config::kind::{SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, ProviderKind, TokenUse};
use crate::refusal::Refusal;

crate::provider_file!(
    /// `kind: oidc` (any compliant provider).
    OidcFile {
        mfa_acr: Option<Vec<S>>,
        /// Value of `tenant` for this provider (default: the issuer host).
        tenant: Option<S>,
    }
);

pub static LOADER: Loader<OidcFile> = Loader { kind: ProviderKind::Oidc, population: None, issuer: None, check };

fn check(f: &OidcFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    if spec.audiences.is_empty() && spec.client_id.is_none() {
        cx.at("audiences", "is required (or client_id): the accepted `aud` values");
    }
    section(Oidc { tenant: f.tenant.as_ref().map(|s| s.to_string()).unwrap_or(cx.issuer_host.clone()) })
}

/// A `kind: oidc` provider: the standard mapping, plus UserInfo at sign-in.
#[derive(Debug, Clone)]
pub struct Oidc {
    pub tenant: String,
}

impl Kind for Oidc {
    fn label(&self) -> ProviderKind {
        ProviderKind::Oidc
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        standard_identity(ctx, c, &self.tenant)
    }

    fn reads_userinfo(&self) -> bool {
        true
    }
}

/// The standard mapping (OpenID Connect Core §5.1 claims, RFC 9068 access tokens):
/// exact issuer, `aud` a configured audience or the client id, `sub` the subject.
pub fn standard_identity(ctx: &Ctx<'_>, c: &Claims, tenant: &str) -> Result<Identity, Refusal> {
    let iss = check_issuer_exact(ctx, c)?;
    check_audience_or_client(ctx, c)?;
    let sub = c.str("sub").ok_or(Refusal::MissingClaim("sub"))?;
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, sub.to_string());
    id.issuer = iss.to_string();
    id.tenant = tenant.to_string();
    let aud_is_client = ctx.spec.client_id.as_deref().is_some_and(|cid| c.has_audience(cid));
    let access = c.has("scope") || c.has("scp") || c.has("client_id") || !aud_is_client
        || ctx.header.typ.as_deref().is_some_and(super::claims::is_at_jwt);
    id.token_use = if access { TokenUse::Access } else { TokenUse::Id };
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

/// Why the UserInfo response could not be used (the sign-in then fails closed).
#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    #[error("the identity provider's userinfo endpoint cannot be reached")]
    Unreachable,
    #[error("the identity provider's userinfo endpoint answered {0}")]
    Status(u16),
    #[error("the userinfo response is not a JSON object (signed userinfo is not supported)")]
    NotJson,
    #[error("the userinfo response is for another user than the ID token")]
    SubjectMismatch,
}

impl UserinfoError {
    pub fn reason(&self) -> &'static str {
        match self {
            UserinfoError::SubjectMismatch => "userinfo_subject_mismatch",
            _ => "userinfo_failed",
        }
    }
}

/// Largest UserInfo document read (the same bound as discovery documents).
const MAX_USERINFO_BYTES: usize = 1 << 20;

/// `GET` the UserInfo endpoint with the access token of this sign-in.
pub async fn fetch_userinfo(http: &reqwest::Client, endpoint: &str, access_token: &str) -> Result<Claims, UserinfoError> {
    let resp = http
        .get(endpoint)
        .bearer_auth(access_token)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|_| UserinfoError::Unreachable)?;
    if !resp.status().is_success() {
        return Err(UserinfoError::Status(resp.status().as_u16()));
    }
    let bytes = resp.bytes().await.map_err(|_| UserinfoError::Unreachable)?;
    if bytes.len() > MAX_USERINFO_BYTES {
        return Err(UserinfoError::NotJson);
    }
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(Claims::from_map(map)),
        _ => Err(UserinfoError::NotJson),
    }
}

/// For a provider that reads UserInfo (`kind: oidc`) whose discovery names its endpoint, completes a
/// browser sign-in's identity from it (see the module doc); other kinds are untouched.
pub async fn complete_from_userinfo(
    http: &reqwest::Client,
    p: &super::Provider,
    endpoint: Option<String>,
    id: &mut Identity,
    id_token: &str,
    access_token: Option<&str>,
) -> Result<(), UserinfoError> {
    let (true, Some(endpoint), Some(at)) = (p.kind().reads_userinfo(), endpoint, access_token) else {
        return Ok(());
    };
    let id_claims = super::jwt::parse(id_token).map(|t| t.claims).unwrap_or_default();
    let ui = fetch_userinfo(http, &endpoint, at).await?;
    merge_userinfo(id, &id_claims, &ui, &p.spec)
}

/// Completes a sign-in identity with UserInfo claims. The response must be about the
/// ID token's user (`sub` equal, OpenID Connect Core §5.3.4). The signed ID token wins: a claim
/// it carries is never replaced, UserInfo only fills what it lacks, including the
/// sources of the provider's `claims:` mapping.
pub fn merge_userinfo(id: &mut Identity, id_token: &Claims, ui: &Claims, spec: &ProviderSpec) -> Result<(), UserinfoError> {
    if ui.str("sub").is_none() || ui.str("sub") != id_token.str("sub") {
        return Err(UserinfoError::SubjectMismatch);
    }
    let missing = |name: &str| !id_token.has(name) && ui.has(name);
    if missing("email") {
        id.email = ui.string("email");
    }
    if missing("email_verified") {
        id.email_verified = ui.bool_lenient("email_verified");
    }
    if missing("name") {
        id.name = ui.string("name");
    }
    if missing("preferred_username") {
        id.username = ui.string("preferred_username");
    }
    if missing("groups") {
        id.groups = ui.list("groups");
        id.groups_complete = true;
    }
    if missing("roles") {
        id.roles = ui.list("roles");
    }
    let mut from_ui = spec.clone();
    from_ui.claims.retain(|_, source| missing(source));
    apply_overrides(id, ui, &from_ui);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Claims {
        Claims::from_map(v.as_object().cloned().unwrap())
    }

    #[test]
    fn userinfo_fills_only_what_the_id_token_lacks() {
        let spec = ProviderSpec {
            id: "op".into(),
            file: "providers/op.yaml".into(),
            population: crate::identity::Population::Workforce,
            issuer: "https://op.example".into(),
            discovery_url: None,
            jwks_url: None,
            client_id: Some("c".into()),
            client_secret: None,
            audiences: vec![],
            domains: vec![],
            scopes: vec![],
            claims: [("attributes.dept".to_string(), "department".to_string())].into(),
            display_name: "OP".into(),
            jwks_refresh: std::time::Duration::from_secs(60),
            mfa_acr: vec![],
            authorize_params: vec![],
            route_policies: vec![],
            ssf: None,
            kind: section(Oidc { tenant: "op.example".into() }),
            scim: None,
        };
        let idt = claims(json!({"sub": "u1", "name": "From ID token"}));
        let mut id = Identity::new("op", ProviderKind::Oidc, crate::identity::Population::Workforce, "u1".into());
        id.name = Some("From ID token".into());
        let ui = claims(json!({"sub": "u1", "name": "Other", "email": "a@x.test", "email_verified": false, "groups": ["g1"], "department": "R&D"}));
        merge_userinfo(&mut id, &idt, &ui, &spec).unwrap();
        assert_eq!(id.attributes.get("dept"), Some(&json!("R&D")), "a `claims:` source found only in userinfo");
        assert_eq!(id.name.as_deref(), Some("From ID token"));
        assert_eq!(id.email.as_deref(), Some("a@x.test"));
        assert_eq!(id.email_verified, Some(false));
        assert_eq!(id.groups, vec!["g1".to_string()]);
        assert!(id.groups_complete);
        let other = claims(json!({"sub": "u2", "email": "b@x.test"}));
        assert!(matches!(merge_userinfo(&mut id, &idt, &other, &spec), Err(UserinfoError::SubjectMismatch)));
        let none = claims(json!({"email": "b@x.test"}));
        assert!(matches!(merge_userinfo(&mut id, &idt, &none, &spec), Err(UserinfoError::SubjectMismatch)));
    }
}
