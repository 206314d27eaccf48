//! Firebase Authentication / Google Identity Platform ID tokens: one key set shared by
//! every Firebase project, so `iss` and `aud` (exact) are the only binding to the
//! project; RS256 with a `kid` only; `auth_time` in the past; `sub` ≤ 128 chars;
//! GCIP tenants against the allow-list; anonymous users refused unless allowed;
//! session cookies refused where an ID token is expected (PROVIDERS-CIAM.md §8, §11).

use super::claims::Claims;
use super::jwt::JoseHeader;
use super::{check_issuer_exact, now_secs, Ctx, LEEWAY_SECS};
use crate::config::FirebaseSpec;
use crate::identity::{Identity, MfaSource};
use crate::refusal::Refusal;
use serde_json::Value;

/// Longest uid the Admin SDKs accept.
pub const MAX_SUB_CHARS: usize = 128;

/// Claims Firebase owns; every other top-level claim is a developer's custom claim.
const RESERVED: &[&str] = &[
    "iss", "aud", "auth_time", "user_id", "sub", "iat", "exp", "nbf", "email", "email_verified", "phone_number",
    "name", "picture", "firebase", "acr", "amr", "at_hash", "azp", "cnf", "c_hash", "jti", "nonce",
];

/// Checks that need no key: refuse session cookies and `kid`-less tokens (custom
/// tokens) with their own reason before the key lookup would call them unknown.
pub fn precheck(k: &FirebaseSpec, header: &JoseHeader, c: &Claims) -> Result<(), Refusal> {
    if c.str("iss") == Some(k.session_issuer.as_str()) {
        return Err(Refusal::SessionCookieNotIdToken);
    }
    if header.kid.is_none() {
        return Err(Refusal::Malformed("Firebase ID tokens name their key (kid)"));
    }
    Ok(())
}

pub fn identity(ctx: &Ctx<'_>, k: &FirebaseSpec, c: &Claims) -> Result<Identity, Refusal> {
    if ctx.key.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(Refusal::AlgNotAllowed);
    }
    let iss = check_issuer_exact(ctx, c)?;
    // A plain string, exactly the project id (an array or another project: refused).
    match c.get("aud") {
        Some(Value::String(a)) if *a == k.project_id => {}
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
    let fb = c.get("firebase").and_then(Value::as_object);
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
    id.token_use = "id".into();
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
        if let Some(v) = c.get(name) {
            attrs.insert(name.into(), v.clone());
        }
    }
    for (name, v) in c.0.iter() {
        if !RESERVED.contains(&name.as_str()) {
            attrs.insert(name.clone(), v.clone());
        }
    }
    Ok(id)
}

/// PROVIDERS-CIAM.md §11.5: `amr` synthesised from the sign-in method and second factor.
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

/// PROVIDERS-CIAM.md §11.4.
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
