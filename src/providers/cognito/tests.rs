//! Cognito's quirks: `token_use` enforced, access tokens carry no `aud` and are bound
//! by `client_id`, federated auto-groups dropped, string booleans, `custom:*`, logout.

use super::super::kind::testing::{provider, Fixture};
use super::*;
use serde_json::json;

const POOL: &str = "eu-west-1_AbCdEf123";
const CLIENT: &str = "5k3client";

fn pool(extra: &str) -> Fixture {
    provider(&format!(
        "id: shop\nkind: cognito\nissuer: https://cognito-idp.eu-west-1.amazonaws.com/{POOL}\nclient_id: {CLIENT}\n{extra}"
    ))
}

fn iss() -> String {
    format!("https://cognito-idp.eu-west-1.amazonaws.com/{POOL}")
}

fn access(client: &str) -> serde_json::Value {
    json!({
        "iss": iss(), "token_use": "access", "client_id": client, "sub": "d2c5-user", "username": "ann",
        "scope": "openid orders/read", "cognito:groups": ["buyers", format!("{POOL}_Google")],
    })
}

#[test]
fn access_tokens_without_aud_are_bound_by_client_id() {
    let f = pool("");
    let id = f.map(access(CLIENT)).unwrap();
    assert_eq!(id.token_use, TokenUse::Access);
    assert_eq!(id.client_id.as_deref(), Some(CLIENT));
    assert_eq!(id.username.as_deref(), Some("ann"));
    assert_eq!(id.scopes, vec!["openid".to_string(), "orders/read".to_string()]);
    assert_eq!(id.tenant, POOL);
    assert_eq!(f.map(access("another-app")).unwrap_err(), Refusal::AudienceMismatch);
    let mut no_client = access(CLIENT);
    no_client.as_object_mut().unwrap().remove("client_id");
    assert_eq!(f.map(no_client).unwrap_err(), Refusal::AudienceMismatch);
}

#[test]
fn federated_auto_groups_are_not_authorization_groups() {
    let id = pool("groups_are_roles: true\n").map(access(CLIENT)).unwrap();
    assert_eq!(id.groups, vec!["buyers".to_string()]);
    assert!(id.groups_complete);
    assert_eq!(id.roles, id.groups);
}

#[test]
fn token_use_is_enforced_and_sign_in_reads_id_tokens() {
    let f = pool("");
    let id_token = json!({
        "iss": iss(), "token_use": "id", "aud": CLIENT, "sub": "d2c5-user", "cognito:username": "ann",
        "email": "ann@shop.example", "email_verified": "true", "custom:tier": "gold",
        "identities": [{"providerName": "Google", "providerType": "Google", "primary": "true"}],
    });
    assert_eq!(f.map(id_token.clone()).unwrap_err(), Refusal::WrongTokenUse, "access-only provider");
    let id = f.sign_in(id_token.clone()).unwrap();
    assert_eq!(id.token_use, TokenUse::Id);
    assert_eq!(id.email_verified, Some(true), "Cognito sends booleans as strings");
    assert_eq!(id.attributes.get("tier"), Some(&json!("gold")));
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("cognito:Google", "social"));
    let id_only = pool("token_use: id\n");
    assert_eq!(id_only.map(access(CLIENT)).unwrap_err(), Refusal::WrongTokenUse);
    assert!(pool("token_use: any\n").map(id_token).is_ok());
    let mut missing = access(CLIENT);
    missing.as_object_mut().unwrap().remove("token_use");
    assert_eq!(f.map(missing).unwrap_err(), Refusal::MissingClaim("token_use"));
}

#[test]
fn client_credentials_tokens_are_services() {
    let c = json!({"iss": iss(), "token_use": "access", "client_id": CLIENT, "sub": CLIENT, "scope": "orders/read"});
    assert_eq!(pool("").map(c).unwrap().principal_type, PrincipalType::Service);
}

#[test]
fn sign_out_uses_cognitos_logout_parameters() {
    let f = pool("");
    assert_eq!(
        f.kind().end_session_params(CLIENT, "https://app.example/.idfabric/logged-out", Some("id.token")),
        vec![("client_id", CLIENT.to_string()), ("logout_uri", "https://app.example/.idfabric/logged-out".to_string())]
    );
}

#[test]
fn sign_up_is_the_hosted_ui_signup_page_beside_authorize() {
    use crate::journey::Journey;
    let f = pool("");
    let authz = "https://shop.auth.eu-west-1.amazoncognito.com/oauth2/authorize";
    let start = f.kind().journey(&f.spec, Journey::Signup, authz, None).unwrap();
    assert_eq!(start.endpoint.as_deref(), Some("https://shop.auth.eu-west-1.amazoncognito.com/signup"));
    assert!(start.params.is_empty(), "the same parameters as the authorize request");
    assert_eq!(signup_page("http://127.0.0.1:1/.idfabric/dev/c/authorize").as_deref(), Some("http://127.0.0.1:1/.idfabric/dev/c/signup"));
    assert_eq!(signup_page("https://x/other"), None);
    let off = pool("signup: false\n");
    assert!(off.kind().journey(&off.spec, Journey::Signup, authz, None).is_none());
}
