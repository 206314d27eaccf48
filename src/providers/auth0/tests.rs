//! Auth0's quirks: issuers with a trailing slash and custom domains, the identity
//! provider from the `sub` prefix, namespaced claims, `amr: ["mfa"]`, service tokens.

use super::super::kind::testing::{provider, refused, Fixture};
use super::*;
use serde_json::json;

const ISS: &str = "https://acme.eu.auth0.com/";

fn tenant() -> Fixture {
    provider(&format!(
        "id: shop\nkind: auth0\nissuer: {ISS}\nissuers: [https://login.acme.example/]\naudiences: [https://api.acme.example]\nclient_id: spa\n"
    ))
}

fn access(sub: &str) -> serde_json::Value {
    json!({"iss": ISS, "sub": sub, "aud": ["https://api.acme.example", format!("{ISS}userinfo")], "azp": "spa", "scope": "openid read:orders"})
}

#[test]
fn mfa_shows_only_as_amr_mfa() {
    let f = tenant();
    let mut c = access("auth0|65a1");
    assert!(!f.map(c.clone()).unwrap().mfa);
    c["amr"] = json!(["mfa"]);
    let id = f.map(c).unwrap();
    assert!(id.mfa);
    assert_eq!(id.mfa_source, crate::identity::MfaSource::Amr);
    assert_eq!(id.amr, vec!["mfa".to_string()]);
}

#[test]
fn the_identity_provider_comes_from_the_sub_prefix() {
    let f = tenant();
    let idp = |sub: &str| {
        let id = f.map(access(sub)).unwrap();
        (id.idp, id.idp_kind)
    };
    assert_eq!(idp("auth0|65a1"), ("shop".into(), "native".into()));
    assert_eq!(idp("google-oauth2|1049"), ("auth0:google-oauth2".into(), "social".into()));
    assert_eq!(idp("samlp|acme-corp|ann@acme.example"), ("auth0:samlp:acme-corp".into(), "enterprise".into()));
}

#[test]
fn custom_domains_are_extra_issuers_and_others_are_refused() {
    let f = tenant();
    assert_eq!(f.kind().extra_issuers(), vec!["https://login.acme.example/".to_string()]);
    let mut c = access("auth0|65a1");
    c["iss"] = json!("https://login.acme.example/");
    assert!(f.map(c.clone()).is_ok());
    c["iss"] = json!("https://acme.eu.auth0.com");
    assert_eq!(f.map(c).unwrap_err(), Refusal::IssuerMismatch, "no trailing slash: another issuer");
    assert!(refused("id: shop\nkind: auth0\nissuer: https://acme.eu.auth0.com\naudiences: [x]\n").contains("end with `/`"));
}

#[test]
fn namespaced_claims_become_attributes_and_organizations_the_org() {
    let mut c = access("auth0|65a1");
    c["https://acme.example/roles"] = json!(["buyer"]);
    c["org_id"] = json!("org_123");
    let id = tenant().map(c).unwrap();
    assert_eq!(id.attributes.get("roles"), Some(&json!(["buyer"])));
    assert_eq!(id.org.as_deref(), Some("org_123"));
    assert_eq!(id.token_use, TokenUse::Access);
    assert_eq!(id.tenant, "acme.eu.auth0.com");
}

#[test]
fn client_credentials_tokens_are_services() {
    let c = json!({"iss": ISS, "sub": "m2m@clients", "aud": "https://api.acme.example", "gty": "client-credentials", "azp": "m2m"});
    let id = tenant().map(c).unwrap();
    assert_eq!(id.principal_type, PrincipalType::Service);
    assert_eq!(id.idp, "shop");
}

#[test]
fn step_up_asks_for_the_multi_factor_policy() {
    let f = tenant();
    assert_eq!(f.kind().step_up_params(&f.spec)[0], ("acr_values", PAPE_MULTI_FACTOR.to_string()));
}

#[test]
fn sign_up_opens_universal_login_on_its_sign_up_screen() {
    use crate::journey::Journey;
    let f = tenant();
    let start = f.kind().journey(&f.spec, Journey::Signup, "https://acme.eu.auth0.com/authorize", None).unwrap();
    assert_eq!(start.params, vec![("screen_hint", "signup".to_string())]);
    assert_eq!((start.endpoint, start.policy), (None, None), "the authorize endpoint itself");
    assert!(f.kind().journey(&f.spec, Journey::Reset, "x", None).is_none());
    let off = provider(&format!("id: shop\nkind: auth0\nissuer: {ISS}\naudiences: [a]\nclient_id: spa\nsignup: false\n"));
    assert!(off.kind().journey(&off.spec, Journey::Signup, "x", None).is_none(), "signup: false");
    let staff = provider(&format!("id: staff\nkind: auth0\npopulation: workforce\nissuer: {ISS}\naudiences: [a]\nclient_id: spa\n"));
    assert!(staff.kind().journey(&staff.spec, Journey::Signup, "x", None).is_none(), "off by default for the workforce");
}
