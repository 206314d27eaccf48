//! Firebase Authentication / Google Identity Platform ID tokens: one key set shared by
//! every Firebase project, so `iss` and `aud` (exact) are the only binding to the
//! project; RS256 with a `kid` only; `auth_time` in the past; `sub` ≤ 128 chars;
//! GCIP tenants against the allow-list; anonymous users refused unless allowed;
//! session cookies refused where an ID token is expected. Web apps sign users in with
//! the Firebase SDK inside the page, so the ID token is exchanged for a session.
//!
//! Vendor references:
//! <https://firebase.google.com/docs/auth/admin/verify-id-tokens#verify_id_tokens_using_a_third-party_jwt_library>
//! (the checks), <https://firebase.google.com/docs/auth/admin/manage-cookies> (session
//! cookies and their issuer), <https://cloud.google.com/identity-platform/docs/multi-tenancy-authentication>.

use super::claims::{Claims, Raw};
use super::dev::{guid, stable, DevToken};
use super::jwt::JoseHeader;
use super::kind::{check_issuer_exact, section, Ctx, Kind, Loader};
use super::{now_secs, LEEWAY_SECS};
use crate::config::kind::{opt_strings, SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, MfaSource, Population, ProviderKind, TokenUse};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};

const ISSUER_PREFIX: &str = "https://securetoken.google.com/";
const SESSION_ISSUER_PREFIX: &str = "https://session.firebase.google.com/";
/// Google's securetoken keys as a JWKS (the same keys for every Firebase project).
pub const JWKS_URL: &str =
    "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com";

crate::provider_file!(
    /// `kind: firebase` (Firebase Auth / Google Identity Platform ID tokens).
    FirebaseFile {
        project_id: S,
        /// Identity Platform tenant ids allowed; absent = project-level users only.
        tenants: Option<Vec<S>>,
        allow_anonymous: Option<bool>,
        mfa_acr: Option<Vec<S>>,
    }
);

pub static LOADER: Loader<FirebaseFile> = Loader {
    kind: ProviderKind::Firebase,
    population: Some(Population::Customer),
    issuer: Some(|f| format!("{ISSUER_PREFIX}{}", &*f.project_id)),
    check,
};

fn check(f: &FirebaseFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    let project = f.project_id.to_string();
    let valid = !project.is_empty()
        && project.len() <= 63
        && project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':' || c == '.');
    if !valid {
        cx.at("project_id", format!("`{project}` is not a Firebase / Google Cloud project id"));
    }
    if f.mfa_acr.is_some() {
        cx.at("mfa_acr", "Firebase tokens carry no `acr`; MFA comes from `firebase.sign_in_second_factor`");
    }
    spec.mfa_acr.clear();
    // The signing keys are shared by every Firebase project: `aud` == project id is the
    // only binding to this project, so no other audience may be configured.
    if spec.audiences.is_empty() {
        spec.audiences = vec![project.clone()];
    } else if spec.audiences != [project.clone()] {
        cx.at("audiences", "Firebase ID tokens carry the project id as `aud`: leave `audiences` unset");
    }
    if spec.jwks_url.is_none() && spec.discovery_url.is_none() {
        spec.jwks_url = Some(JWKS_URL.to_string());
    }
    if spec.issuer.starts_with(SESSION_ISSUER_PREFIX) {
        cx.at("issuer", "session-cookie issuers are not ID-token issuers");
    }
    let tenants = opt_strings(&f.tenants);
    if f.tenants.is_some() && tenants.is_empty() {
        cx.at("tenants", "an empty list allows no user: remove it for project-level users only");
    }
    section(Firebase::new(project, tenants, f.allow_anonymous.unwrap_or(false)))
}

/// A Firebase provider's rules.
#[derive(Debug, Clone)]
pub struct Firebase {
    pub project_id: String,
    /// Identity Platform tenants allowed; empty = project-level users only.
    pub tenants: Vec<String>,
    pub allow_anonymous: bool,
    /// `https://session.firebase.google.com/{project_id}`: session cookies, refused here.
    pub session_issuer: String,
}

impl Firebase {
    pub fn new(project_id: String, tenants: Vec<String>, allow_anonymous: bool) -> Firebase {
        Firebase { session_issuer: format!("{SESSION_ISSUER_PREFIX}{project_id}"), project_id, tenants, allow_anonymous }
    }
}

impl Kind for Firebase {
    fn label(&self) -> ProviderKind {
        ProviderKind::Firebase
    }

    /// Session cookies are found by their own issuer, to be refused by name.
    fn extra_issuers(&self) -> Vec<String> {
        vec![self.session_issuer.clone()]
    }

    fn precheck(&self, header: &JoseHeader, c: &Claims) -> Result<(), Refusal> {
        precheck(self, header, c)
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        identity(ctx, self, c)
    }

    fn creates_sessions(&self) -> bool {
        true
    }

    /// A Firebase ID token (access and ID tokens are the same thing): `aud` = project
    /// (the client id), `user_id` = `sub`, the `firebase` claim, custom claims at the
    /// top level.
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let DevToken { user, o, client_id, seed, email, .. } = t;
        let uid = stable(&seed, 28);
        c.insert("aud".into(), json!(client_id));
        c.insert("auth_time".into(), json!(o.now));
        c.insert("user_id".into(), json!(uid));
        c.insert("sub".into(), json!(uid));
        if let Some(n) = &user.display_name {
            c.insert("name".into(), json!(n));
        }
        let provider = user.connection.clone().unwrap_or_else(|| "password".into());
        let mut identities = Map::new();
        if let Some(e) = &email {
            c.insert("email".into(), json!(e));
            c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(false)));
            identities.insert("email".into(), json!([e]));
        }
        if provider != "password" && provider != "anonymous" {
            identities.insert(provider.clone(), json!([stable(&format!("{seed}/{provider}"), 21)]));
        }
        let mut fb = Map::new();
        fb.insert("identities".into(), Value::Object(identities));
        fb.insert("sign_in_provider".into(), json!(provider));
        if user.mfa {
            fb.insert("sign_in_second_factor".into(), json!("phone"));
            fb.insert("second_factor_identifier".into(), json!(guid(&format!("mfa/{seed}"))));
        }
        c.insert("firebase".into(), Value::Object(fb));
        // Custom claims (set with the Admin SDK) sit at the top level.
        if !user.roles.is_empty() {
            c.insert("roles".into(), json!(user.roles));
        }
        if !user.groups.is_empty() {
            c.insert("groups".into(), json!(user.groups));
        }
        for (k, v) in &user.attributes {
            c.insert(k.clone(), json!(v));
        }
    }
}

/// Longest uid the Admin SDKs accept.
pub const MAX_SUB_CHARS: usize = 128;

/// Claims Firebase owns; every other top-level claim is a developer's custom claim.
const RESERVED: &[&str] = &[
    "iss", "aud", "auth_time", "user_id", "sub", "iat", "exp", "nbf", "email", "email_verified", "phone_number",
    "name", "picture", "firebase", "acr", "amr", "at_hash", "azp", "cnf", "c_hash", "jti", "nonce",
];

/// Checks that need no key: refuse session cookies and `kid`-less tokens (custom
/// tokens) with their own reason before the key lookup would call them unknown.
fn precheck(k: &Firebase, header: &JoseHeader, c: &Claims) -> Result<(), Refusal> {
    if c.str("iss") == Some(k.session_issuer.as_str()) {
        return Err(Refusal::SessionCookieNotIdToken);
    }
    if header.kid.is_none() {
        return Err(Refusal::Malformed("Firebase ID tokens name their key (kid)"));
    }
    Ok(())
}

fn identity(ctx: &Ctx<'_>, k: &Firebase, c: &Claims) -> Result<Identity, Refusal> {
    if ctx.key.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(Refusal::AlgNotAllowed);
    }
    let iss = check_issuer_exact(ctx, c)?;
    // A plain string, exactly the project id (an array or another project: refused).
    match c.raw("aud") {
        Some(Raw::Str(a)) if a == k.project_id => {}
        Some(_) => return Err(Refusal::AudienceMismatch),
        None => return Err(Refusal::MissingClaim("aud")),
    }
    let sub = c.str("sub").ok_or(Refusal::MissingClaim("sub"))?;
    if sub.chars().count() > MAX_SUB_CHARS {
        return Err(Refusal::InvalidSubject);
    }
    let auth_time = c.i64("auth_time").ok_or(Refusal::MissingClaim("auth_time"))?;
    if auth_time > now_secs() + LEEWAY_SECS {
        return Err(Refusal::AuthTimeInFuture);
    }
    let fb = c.value("firebase");
    let fb = fb.as_ref().and_then(Value::as_object);
    let fb_str = |name: &str| fb.and_then(|f| f.get(name)).and_then(Value::as_str).filter(|s| !s.is_empty());
    // GCIP: tenants must be in the allow-list; a project-level provider takes none.
    let tenant = fb_str("tenant");
    match tenant {
        Some(t) if !k.tenants.iter().any(|x| x == t) => return Err(Refusal::TenantNotAllowed),
        None if !k.tenants.is_empty() => return Err(Refusal::TenantNotAllowed),
        _ => {}
    }
    let provider = fb_str("sign_in_provider");
    let anonymous = provider == Some("anonymous");
    if anonymous && !k.allow_anonymous {
        return Err(Refusal::AnonymousNotAllowed);
    }
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, sub.to_string());
    id.issuer = iss.to_string();
    id.tenant = match tenant {
        Some(t) => format!("{}/tenants/{t}", k.project_id),
        None => k.project_id.clone(),
    };
    id.email = c.string("email");
    id.email_verified = c.bool_lenient("email_verified");
    id.name = c.string("name");
    id.token_use = TokenUse::Id;
    id.client_id = None;
    id.auth_time = Some(auth_time);
    id.groups_complete = false;
    let second = fb_str("sign_in_second_factor");
    id.amr = amr(provider, second);
    id.amr_raw = Vec::new();
    id.acr = None;
    if second.is_some() {
        id.mfa = true;
        id.mfa_source = MfaSource::Amr;
    } else {
        id.mfa = false;
        id.mfa_source = MfaSource::None;
    }
    (id.idp, id.idp_kind) = idp(provider);
    let attrs = &mut id.attributes;
    if let Some(p) = provider {
        attrs.insert("sign_in_provider".into(), Value::String(p.into()));
    }
    if let Some(s) = second {
        attrs.insert("sign_in_second_factor".into(), Value::String(s.into()));
    }
    if let Some(t) = tenant {
        attrs.insert("firebase_tenant".into(), Value::String(t.into()));
    }
    if anonymous {
        attrs.insert("anonymous".into(), Value::Bool(true));
    }
    for name in ["phone_number", "picture"] {
        if let Some(v) = c.value(name) {
            attrs.insert(name.into(), v);
        }
    }
    for (name, v) in c.iter() {
        if !RESERVED.contains(&name) {
            attrs.insert(name.to_string(), v.to_value());
        }
    }
    Ok(id)
}

/// `amr` synthesised from the sign-in method (`firebase.sign_in_provider`) and second
/// factor (`firebase.sign_in_second_factor`): Firebase tokens carry no `amr` of their own.
fn amr(provider: Option<&str>, second: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    match provider {
        Some("password") => out.push("pwd"),
        Some("phone") => out.push("sms"),
        Some("anonymous" | "custom") | None => {}
        Some(_) => out.push("fed"),
    }
    match second {
        Some("phone") => out.push("sms"),
        Some("totp") => out.push("otp"),
        _ => {}
    }
    if second.is_some() {
        out.push("mfa");
    }
    let mut dedup: Vec<String> = Vec::new();
    for a in out {
        if !dedup.iter().any(|d| d == a) {
            dedup.push(a.to_string());
        }
    }
    dedup
}

/// Where the user signed in, from `firebase.sign_in_provider`: `password`, `phone` and
/// `anonymous` are Firebase's own; `oidc.*` / `saml.*` are enterprise IdPs; other
/// domains (`google.com`, …) social ones.
fn idp(provider: Option<&str>) -> (String, String) {
    let Some(p) = provider else { return ("firebase:unknown".into(), "unknown".into()) };
    let kind = match p {
        "password" | "phone" | "anonymous" => "native",
        "custom" => "unknown",
        _ if p.starts_with("oidc.") || p.starts_with("saml.") => "enterprise",
        _ if p.contains('.') => "social",
        _ => "unknown",
    };
    (format!("firebase:{p}"), kind.into())
}

#[cfg(test)]
mod tests;
