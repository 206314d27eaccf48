//! Azure AD B2C's quirks: policies instead of assurance levels, MFA only from
//! MFA-enforcing policies, local and social accounts, the legacy `sub`, per-policy keys.

use super::super::kind::testing::{key, provider, refused, Fixture};
use super::super::kind::KeyLocation;
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
    let at = |p: &str| KeyLocation {
        url: format!("https://shop.b2clogin.com/{TID}/{p}/v2.0/.well-known/openid-configuration"),
        policy: Some(p.into()),
    };
    assert_eq!(f.kind().key_locations(&template).unwrap(), vec![at("B2C_1_susi"), at("B2C_1_susi_mfa")]);
}

fn journeys() -> Fixture {
    provider(&format!(
        "id: shop-b2c\nkind: azure_b2c\nissuer: {}\nclient_id: 3f4e-app\n\
         policies: [B2C_1_susi, B2C_1_signup, B2C_1_reset, B2C_1_edit, B2C_1_mfa, B2C_1_partner]\nmfa_policies: [B2C_1_mfa]\n\
         journeys: {{ signin: B2C_1_susi, signup: B2C_1_signup, reset: B2C_1_reset, profile: B2C_1_edit, mfa: B2C_1_mfa }}\n",
        iss()
    ))
}

fn policy_of(f: &Fixture, j: Journey, route: Option<&str>) -> Option<(Option<String>, Vec<(&'static str, String)>)> {
    f.kind().journey(&f.spec, j, "https://x/authorize", route).map(|s| (s.policy, s.params))
}

#[test]
fn each_journey_runs_its_own_policy_and_step_up_the_mfa_one() {
    let f = journeys();
    let p = |j, r| policy_of(&f, j, r).map(|(p, _)| p.unwrap());
    assert_eq!(p(Journey::Signin, None).as_deref(), Some("B2C_1_susi"));
    assert_eq!(p(Journey::Signin, Some("b2c_1_PARTNER")).as_deref(), Some("B2C_1_partner"), "a route's policy, configured spelling");
    assert_eq!(p(Journey::Signin, Some("B2C_1_other")), None, "a route cannot name a policy the provider does not accept");
    assert_eq!(p(Journey::Signup, None).as_deref(), Some("B2C_1_signup"));
    assert_eq!(p(Journey::Reset, None).as_deref(), Some("B2C_1_reset"));
    assert_eq!(p(Journey::Profile, None).as_deref(), Some("B2C_1_edit"));
    assert_eq!(policy_of(&f, Journey::Stepup, None), Some((Some("B2C_1_mfa".into()), vec![("prompt", "login".into())])));
    // The single-policy file of before: sign-in at its first policy, nothing else offered,
    // step-up at its MFA policy.
    let old = tenant();
    assert_eq!(policy_of(&old, Journey::Signin, None).unwrap().0.as_deref(), Some("B2C_1_susi"));
    assert_eq!(policy_of(&old, Journey::Signup, None), None);
    assert_eq!(policy_of(&old, Journey::Reset, None), None);
    assert_eq!(policy_of(&old, Journey::Stepup, None).unwrap().0.as_deref(), Some("B2C_1_susi_mfa"));
}

#[test]
fn forgot_password_starts_the_reset_policy_and_cancel_returns_to_the_sign_in() {
    let f = journeys();
    let k = f.kind();
    let forgot = Some("AADB2C90118: The user has forgotten their password.\r\nCorrelation ID: 1");
    assert_eq!(k.callback_error(Journey::Signin, "access_denied", forgot), Some(ErrorTurn::Start(Journey::Reset)));
    assert_eq!(k.callback_error(Journey::Reset, "access_denied", forgot), None, "never loops");
    let cancel = Some("AADB2C90091: The user has cancelled entering self-asserted information.");
    assert_eq!(k.callback_error(Journey::Reset, "access_denied", cancel), Some(ErrorTurn::BackToSignIn));
    assert_eq!(k.callback_error(Journey::Signup, "access_denied", cancel), Some(ErrorTurn::BackToSignIn));
    assert_eq!(k.callback_error(Journey::Signin, "server_error", forgot), None);
    assert_eq!(k.callback_error(Journey::Signin, "access_denied", Some("the user declined")), None);
    assert_eq!(k.callback_error(Journey::Signin, "access_denied", None), None);
    // Without a reset policy the forgotten password is a failed sign-in, as before.
    assert_eq!(tenant().kind().callback_error(Journey::Signin, "access_denied", forgot), None);
}

#[test]
fn journeys_name_accepted_policies_and_an_mfa_policy() {
    let base = format!("id: b\nkind: azure_b2c\nissuer: {}\naudiences: [a]\npolicies: [P1, P2]\nmfa_policies: [P2]\n", iss());
    assert!(refused(&format!("{base}journeys: {{ reset: P3 }}\n")).contains("journeys.reset"));
    assert!(refused(&format!("{base}journeys: {{ mfa: P1 }}\n")).contains("not one of `mfa_policies`"));
    assert!(refused(&format!("{base}journeys: {{ welcome: P1 }}\n")).contains("welcome"));
}

#[test]
fn a_key_verifies_only_the_policies_that_publish_it() {
    let f = journeys();
    let mut k = key(jsonwebtoken::Algorithm::RS256, None);
    k.policies = vec!["B2C_1_reset".into()];
    assert_eq!(f.map_with(Some("JWT"), &k, token("B2C_1_susi")).unwrap_err(), Refusal::KeyPolicyMismatch);
    assert!(f.map_with(Some("JWT"), &k, token("b2c_1_RESET")).is_ok());
    k.policies.push("B2C_1_susi".into());
    assert!(f.map_with(Some("JWT"), &k, token("B2C_1_susi")).is_ok(), "the same key under two policies serves both");
    k.policies.clear();
    assert!(f.map_with(Some("JWT"), &k, token("B2C_1_susi")).is_ok(), "a key bound to no policy (one JWKS)");
    // The `tfp` issuer form names the policy: it must be the token's.
    let tfp_iss = format!("https://shop.b2clogin.com/tfp/{TID}/B2C_1_susi/v2.0/");
    assert_eq!(issuer_policy(&tfp_iss).as_deref(), Some("B2C_1_susi"));
    assert_eq!(issuer_policy(&iss()), None);
}

#[test]
fn keys_merge_per_policy_and_a_kid_names_one_key() {
    use crate::providers::jwks::{merge_policy_keys, parse_jwks, KeySet};
    let jwk = |n: &str| format!(r#"{{"keys":[{{"kty":"RSA","kid":"k1","n":"{n}","e":"AQAB"}}]}}"#);
    let n1 = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    let n2 = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    let mut merged = KeySet::default();
    merge_policy_keys(&mut merged, parse_jwks(jwk(n1).as_bytes(), "a").unwrap(), Some("B2C_1_susi"), "a").unwrap();
    merge_policy_keys(&mut merged, parse_jwks(jwk(n1).as_bytes(), "b").unwrap(), Some("B2C_1_reset"), "b").unwrap();
    assert_eq!(merged.keys["k1"].policies, vec!["B2C_1_susi".to_string(), "B2C_1_reset".into()], "Microsoft-managed keys: one key, both policies");
    let clash = merge_policy_keys(&mut merged, parse_jwks(jwk(n2).as_bytes(), "c").unwrap(), Some("B2C_1A_custom"), "c");
    assert!(clash.is_err(), "one kid, two keys: refused, never guessed");
}
