//! Azure AD B2C's quirks: policies instead of assurance levels, MFA only from
//! MFA-enforcing policies, local and social accounts, the legacy `sub`, per-policy keys.

use super::super::kind::testing::{provider, refused, Fixture};
use super::*;
use serde_json::json;

const TID: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
const OID: &str = "e7d4c8a2-5b1f-4c3e-9a6d-2f8b1c4e7a90";

fn iss() -> String {
    format!("https://shop.b2clogin.com/{TID}/v2.0/")
}

fn tenant() -> Fixture {
    provider(&format!(
        "id: shop-b2c\nkind: azure_b2c\nissuer: {}\nclient_id: 3f4e-app\npolicies: [B2C_1_susi, B2C_1_susi_mfa]\nmfa_policies: [B2C_1_susi_mfa]\n",
        iss()
    ))
}

fn token(policy: &str) -> serde_json::Value {
    json!({"iss": iss(), "aud": "3f4e-app", "sub": OID, "oid": OID, "tfp": policy, "emails": ["ann@shop.example"], "ver": "1.0"})
}

#[test]
fn local_accounts_are_native_social_ones_name_their_idp() {
    let f = tenant();
    let id = f.map(token("B2C_1_susi")).unwrap();
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("shop-b2c", "native"), "no `idp`: a local account");
    assert_eq!(id.subject, OID);
    assert_eq!(id.tenant, TID);
    assert_eq!(id.email.as_deref(), Some("ann@shop.example"), "`emails` is an array");
    assert_eq!(id.email_verified, None, "B2C asserts nothing about the address");
    assert_eq!(id.attributes.get("b2c_policy"), Some(&json!("B2C_1_susi")));
    let mut c = token("B2C_1_susi");
    c["idp"] = json!("google.com");
    let id = f.map(c).unwrap();
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("b2c-idp:google.com", "social"));
    let mut c = token("B2C_1_susi");
    c["idp"] = json!("https://sts.windows.net/72F988BF-86F1-41AF-91AB-2D7CD011DB47/");
    let id = f.map(c).unwrap();
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("entra:72f988bf-86f1-41af-91ab-2d7cd011db47", "enterprise"));
}

#[test]
fn the_policy_decides_acceptance_and_mfa_never_the_acr() {
    let f = tenant();
    assert!(!f.map(token("B2C_1_susi")).unwrap().mfa);
    let id = f.map(token("b2c_1_SUSI_mfa")).unwrap();
    assert!(id.mfa, "an MFA-enforcing policy, compared case-insensitively");
    assert_eq!(id.acr, None, "the policy name is not an acr");
    assert_eq!(f.map(token("B2C_1_edit_profile")).unwrap_err(), Refusal::PolicyNotAllowed);
    // Custom policies put the policy in `acr`.
    let mut c = token("x");
    c.as_object_mut().unwrap().remove("tfp");
    c["acr"] = json!("B2C_1_susi_mfa");
    assert!(f.map(c).unwrap().mfa);
    assert!(refused(&format!("id: b\nkind: azure_b2c\nissuer: {}\naudiences: [a]\npolicies: [P1]\nmfa_acr: [P1]\n", iss()))
        .contains("policy name, not an assurance level"));
}

#[test]
fn the_legacy_sub_is_no_subject_and_the_tenant_must_agree() {
    let f = tenant();
    let mut c = token("B2C_1_susi");
    c.as_object_mut().unwrap().remove("oid");
    c["sub"] = json!(LEGACY_SUB);
    assert_eq!(f.map(c).unwrap_err(), Refusal::InvalidSubject);
    let mut c = token("B2C_1_susi");
    c["tid"] = json!("0a1b2c3d-0000-4000-8000-00000000abcd");
    assert_eq!(f.map(c).unwrap_err(), Refusal::IssuerMismatch);
}

#[test]
fn keys_come_from_every_policy() {
    let f = tenant();
    let template = f.spec.discovery_url.clone().unwrap();
    assert_eq!(template, format!("https://shop.b2clogin.com/{TID}/{{policy}}/v2.0/.well-known/openid-configuration"));
    assert_eq!(
        f.kind().key_locations(&template).unwrap(),
        vec![
            format!("https://shop.b2clogin.com/{TID}/B2C_1_susi/v2.0/.well-known/openid-configuration"),
            format!("https://shop.b2clogin.com/{TID}/B2C_1_susi_mfa/v2.0/.well-known/openid-configuration"),
        ]
    );
}
