//! Okta's quirks: org authorization server tokens refused, `uid` as the user in access
//! tokens, `scp` as an array, service tokens, RSA SecurID, step-up parameters.

use super::super::kind::testing::{key, provider, Fixture};
use super::*;
use jsonwebtoken::Algorithm::RS256;
use serde_json::json;

const AS: &str = "https://acme.okta.com/oauth2/aus1default";

fn custom_server() -> Fixture {
    provider(&format!("id: corp-okta\nkind: okta\nissuer: {AS}\naudiences: [api://default]\nclient_id: 0oaclient\n"))
}

fn access(iss: &str) -> serde_json::Value {
    json!({
        "iss": iss, "aud": "api://default", "ver": 1, "cid": "0oaclient", "uid": "00u1abc",
        "sub": "ann@acme.example", "scp": ["openid", "orders:read"], "groups": ["Everyone"],
    })
}

#[test]
fn access_tokens_name_the_user_by_uid_and_carry_scp_as_an_array() {
    let id = custom_server().map(access(AS)).unwrap();
    assert_eq!(id.subject, "00u1abc", "`sub` is the login name; `uid` is the user id");
    assert_eq!(id.username.as_deref(), Some("ann@acme.example"));
    assert_eq!(id.scopes, vec!["openid".to_string(), "orders:read".to_string()]);
    assert_eq!(id.token_use, TokenUse::Access);
    assert_eq!(id.client_id.as_deref(), Some("0oaclient"));
    assert_eq!(id.tenant, "acme.okta.com");
    assert_eq!(id.principal_type, PrincipalType::User);
}

#[test]
fn org_authorization_server_access_tokens_are_refused() {
    // An org AS issuer has no /oauth2/{server} path: its access tokens are for Okta's APIs.
    let org = provider("id: okta-org\nkind: okta\nissuer: https://acme.okta.com\naudiences: [https://acme.okta.com]\n");
    assert_eq!(org.map(access("https://acme.okta.com")).unwrap_err(), Refusal::OktaOrgAccessToken);
    // Or recognised by their `typ`, whatever the issuer.
    let f = custom_server();
    let typ = Some("application/okta-internal-at+jwt");
    assert_eq!(f.map_with(typ, &key(RS256, None), access(AS)).unwrap_err(), Refusal::OktaOrgAccessToken);
    // The org AS's ID tokens are fine (they are for this client).
    let id_token = json!({"iss": "https://acme.okta.com", "aud": "https://acme.okta.com", "sub": "00u1abc"});
    assert_eq!(org.map(id_token).unwrap().token_use, TokenUse::Id);
}

#[test]
fn tokens_without_uid_are_services() {
    let c = json!({"iss": AS, "aud": "api://default", "cid": "0oadaemon", "sub": "0oadaemon", "scp": ["orders:read"]});
    let id = custom_server().map(c).unwrap();
    assert_eq!(id.principal_type, PrincipalType::Service);
    assert_eq!(id.subject, "0oadaemon");
    assert_eq!(id.username, None);
}

#[test]
fn rsa_securid_is_a_one_time_password_and_the_default_acr_proves_mfa() {
    let f = custom_server();
    assert_eq!(f.spec.mfa_acr, vec![LOA_2FA.to_string(), "phr".into(), "phrh".into()]);
    let c = json!({"iss": AS, "aud": "api://default", "sub": "00u1abc", "amr": ["pwd", "rsa"]});
    let id = f.map(c).unwrap();
    assert!(id.amr.contains(&"otp".to_string()) && !id.amr.contains(&"pop".to_string()), "{:?}", id.amr);
    assert!(id.mfa, "password + one-time password");
    let c = json!({"iss": AS, "aud": "api://default", "sub": "00u1abc", "acr": LOA_2FA});
    assert!(f.map(c).unwrap().mfa);
}

#[test]
fn users_homed_in_okta_are_native_others_federated() {
    let f = custom_server();
    let mut c = json!({"iss": AS, "aud": "api://default", "sub": "00u1abc", "idp": "00o1org"});
    assert_eq!(f.map(c.clone()).unwrap().idp_kind, "native");
    c["idp"] = json!("0oa9saml");
    let id = f.map(c).unwrap();
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("okta-idp:0oa9saml", "federated"));
}

#[test]
fn step_up_asks_for_two_factors_now() {
    let f = custom_server();
    assert_eq!(
        f.kind().step_up_params(&f.spec),
        vec![("acr_values", LOA_2FA.to_string()), ("max_age", "0".to_string())]
    );
}

#[test]
fn sign_up_only_where_registration_is_enabled() {
    use crate::journey::Journey;
    let f = custom_server();
    assert!(f.kind().journey(&f.spec, Journey::Signup, "x", None).is_none(), "off by default");
    let on = provider(&format!("id: corp-okta\nkind: okta\nissuer: {AS}\naudiences: [api://default]\nclient_id: c\nsignup: true\n"));
    let start = on.kind().journey(&on.spec, Journey::Signup, "x", None).unwrap();
    assert_eq!(start, Default::default(), "the hosted widget's own Sign up link: the authorize endpoint unchanged");
}
