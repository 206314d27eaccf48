//! Firebase's quirks: `amr` synthesised from the sign-in method, session cookies and
//! custom tokens refused by name, anonymous users, tenants, the exact project `aud`.

use super::super::kind::testing::{key, provider, Fixture};
use super::*;
use serde_json::json;

const PROJECT: &str = "acme-retail-prod";

fn project(extra: &str) -> Fixture {
    provider(&format!("id: app\nkind: firebase\nproject_id: {PROJECT}\n{extra}"))
}

fn token(sign_in: serde_json::Value) -> serde_json::Value {
    json!({
        "iss": format!("https://securetoken.google.com/{PROJECT}"), "aud": PROJECT, "sub": "uid-28-chars-aaaaaaaaaaaaaaa",
        "user_id": "uid-28-chars-aaaaaaaaaaaaaaa", "auth_time": now_secs() - 10, "firebase": sign_in,
    })
}

#[test]
fn amr_is_synthesised_from_the_sign_in_method_and_second_factor() {
    let f = project("");
    let id = f.map(token(json!({"sign_in_provider": "password"}))).unwrap();
    assert_eq!(id.amr, vec!["pwd".to_string()]);
    assert!(!id.mfa);
    let id = f.map(token(json!({"sign_in_provider": "password", "sign_in_second_factor": "phone"}))).unwrap();
    assert_eq!(id.amr, vec!["pwd".to_string(), "sms".into(), "mfa".into()]);
    assert!(id.mfa);
    assert_eq!(id.mfa_source, MfaSource::Amr);
    let id = f.map(token(json!({"sign_in_provider": "google.com"}))).unwrap();
    assert_eq!(id.amr, vec!["fed".to_string()]);
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("firebase:google.com", "social"));
    assert_eq!(id.token_use, TokenUse::Id);
}

#[test]
fn session_cookies_and_kidless_tokens_are_refused_by_name() {
    let f = project("");
    assert_eq!(f.kind().extra_issuers(), vec![format!("https://session.firebase.google.com/{PROJECT}")]);
    let mut c = token(json!({"sign_in_provider": "password"}));
    c["iss"] = json!(format!("https://session.firebase.google.com/{PROJECT}"));
    assert_eq!(f.map(c).unwrap_err(), Refusal::SessionCookieNotIdToken);
    let header = crate::providers::jwt::JoseHeader::default();
    let claims = crate::providers::claims::Claims::default();
    assert!(matches!(f.kind().precheck(&header, &claims), Err(Refusal::Malformed(_))), "custom tokens have no kid");
    assert!(f.kind().creates_sessions());
}

#[test]
fn anonymous_users_need_allow_anonymous() {
    let anon = token(json!({"sign_in_provider": "anonymous"}));
    assert_eq!(project("").map(anon.clone()).unwrap_err(), Refusal::AnonymousNotAllowed);
    let id = project("allow_anonymous: true\n").map(anon).unwrap();
    assert_eq!(id.attributes.get("anonymous"), Some(&json!(true)));
}

#[test]
fn the_project_binds_aud_exactly_and_tenants_are_allow_listed() {
    let f = project("");
    let mut c = token(json!({"sign_in_provider": "password"}));
    c["aud"] = json!([PROJECT]);
    assert_eq!(f.map(c).unwrap_err(), Refusal::AudienceMismatch, "a plain string only");
    let tenant = token(json!({"sign_in_provider": "password", "tenant": "eu-stores-x7k2p"}));
    assert_eq!(f.map(tenant.clone()).unwrap_err(), Refusal::TenantNotAllowed, "project-level provider");
    let id = project("tenants: [eu-stores-x7k2p]\n").map(tenant).unwrap();
    assert_eq!(id.tenant, format!("{PROJECT}/tenants/eu-stores-x7k2p"));
    assert_eq!(f.spec.jwks_url.as_deref(), Some(JWKS_URL));
}

#[test]
fn rs256_and_a_past_auth_time_only() {
    let f = project("");
    let c = token(json!({"sign_in_provider": "password"}));
    let es = key(jsonwebtoken::Algorithm::ES256, None);
    assert_eq!(f.map_with(Some("JWT"), &es, c.clone()).unwrap_err(), Refusal::AlgNotAllowed);
    let mut future = c;
    future["auth_time"] = json!(now_secs() + 3600);
    assert_eq!(f.map(future).unwrap_err(), Refusal::AuthTimeInFuture);
}
