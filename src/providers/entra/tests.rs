//! Entra's quirks, on claims as Microsoft documents them: v1/v2 tokens, `oid` as the
//! subject, the tenant bound to the issuer and the key, group overage, app-only tokens,
//! personal accounts, and the sign-in parameters.

use super::super::kind::testing::{key, provider, Fixture};
use super::*;
use jsonwebtoken::Algorithm::RS256;
use serde_json::json;

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";
const OID: &str = "00000000-0000-0000-66f3-3332eca7ea81";

fn single_tenant() -> Fixture {
    provider(&format!(
        "id: corp\nkind: entra\nissuer: https://login.microsoftonline.com/{TID}/v2.0\naudiences: [api://corp]\nclient_id: corp-app\n"
    ))
}

fn multi_tenant() -> Fixture {
    provider("id: multi\nkind: entra\nissuer: https://login.microsoftonline.com/organizations/v2.0\naudiences: [api://corp]\ntenants: ['*']\n")
}

fn v2(tid: &str) -> serde_json::Value {
    json!({
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"), "aud": "api://corp", "tid": tid,
        "oid": OID, "sub": "pairwise-sub-for-this-app", "ver": "2.0", "scp": "read",
        "preferred_username": "ann@contoso.example", "acr": "1",
    })
}

#[test]
fn v2_tokens_use_oid_as_the_subject_and_preferred_username() {
    let id = single_tenant().map(v2(TID)).unwrap();
    assert_eq!(id.subject, OID, "`sub` is pairwise per application; `oid` is the user");
    assert_eq!(id.sub, format!("corp:{OID}"));
    assert_eq!(id.username.as_deref(), Some("ann@contoso.example"));
    assert_eq!(id.tenant, TID);
    assert_eq!(id.token_use, TokenUse::Access);
    assert_eq!(id.provider_kind, ProviderKind::Entra);
    assert_eq!(id.acr.as_deref(), Some("1"), "v2 keeps acr");
}

#[test]
fn v1_tokens_read_upn_and_drop_the_iso_acr() {
    let f = provider(&format!(
        "id: corp\nkind: entra\nissuer: https://sts.windows.net/{TID}/\naudiences: [api://corp]\n"
    ));
    let c = json!({
        "iss": format!("https://sts.windows.net/{TID}/"), "aud": "api://corp", "tid": TID, "oid": OID,
        "ver": "1.0", "upn": "ann@contoso.example", "unique_name": "other", "acr": "1", "scp": "read",
    });
    let id = f.map(c).unwrap();
    assert_eq!(id.username.as_deref(), Some("ann@contoso.example"), "v1: upn, not preferred_username");
    assert_eq!(id.acr, None, "v1 `acr` is 0/1 and says nothing about MFA");
    assert!(!id.mfa);
}

#[test]
fn the_issuer_template_is_bound_to_tid_and_the_keys_issuer() {
    let f = multi_tenant();
    assert_eq!(f.spec.issuer, "https://login.microsoftonline.com/{tenantid}/v2.0");
    assert_eq!(f.map(v2(OTHER)).unwrap().tenant, OTHER, "any tenant with `*`");
    assert_eq!(f.map(v2(OTHER)).unwrap().org.as_deref(), Some(OTHER), "a multi-tenant app sees the tenant as org");
    // The issuer names one tenant, `tid` another.
    let mut c = v2(OTHER);
    c["tid"] = json!(TID);
    assert_eq!(f.map(c).unwrap_err(), Refusal::IssuerMismatch);
    // A key published for the template signs only for the token's own tenant's issuer.
    let template_key = key(RS256, Some("https://login.microsoftonline.com/{tenantid}/v2.0"));
    assert!(f.map_with(Some("JWT"), &template_key, v2(OTHER)).is_ok());
    let tenant_key = key(RS256, Some(&format!("https://login.microsoftonline.com/{TID}/v2.0")));
    assert_eq!(f.map_with(Some("JWT"), &tenant_key, v2(OTHER)).unwrap_err(), Refusal::KeyIssuerMismatch);
    // `tid` must be a GUID at all.
    let mut c = v2(OTHER);
    c["tid"] = json!("contoso");
    assert_eq!(f.map(c).unwrap_err(), Refusal::TenantNotAllowed);
}

#[test]
fn tenants_outside_the_allow_list_are_refused() {
    let f = provider(&format!(
        "id: multi\nkind: entra\nissuer: https://login.microsoftonline.com/common/v2.0\naudiences: [api://corp]\ntenants: [{TID}]\n"
    ));
    assert!(f.map(v2(TID)).is_ok());
    assert_eq!(f.map(v2(OTHER)).unwrap_err(), Refusal::TenantNotAllowed);
    assert_eq!(
        f.kind().discovery_base(&f.spec),
        "https://login.microsoftonline.com/common/v2.0",
        "discovery stays at the authority the file names"
    );
}

#[test]
fn group_overage_leaves_groups_incomplete() {
    let f = single_tenant();
    let mut c = v2(TID);
    c["groups"] = json!(["g1", "g2"]);
    let id = f.map(c.clone()).unwrap();
    assert_eq!(id.groups, vec!["g1".to_string(), "g2".to_string()]);
    assert!(id.groups_complete);
    // Too many groups: a pointer to Graph instead of the list (JWT) or `hasgroups` (implicit flow).
    c.as_object_mut().unwrap().remove("groups");
    c["_claim_names"] = json!({"groups": "src1"});
    c["_claim_sources"] = json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}});
    let id = f.map(c).unwrap();
    assert!(id.groups.is_empty() && !id.groups_complete, "overage: no group rule may pass");
    let mut c = v2(TID);
    c["hasgroups"] = json!(true);
    c["groups"] = json!(["partial"]);
    let id = f.map(c).unwrap();
    assert!(id.groups.is_empty() && !id.groups_complete);
}

#[test]
fn app_only_tokens_are_services_with_permissions() {
    let c = json!({
        "iss": format!("https://login.microsoftonline.com/{TID}/v2.0"), "aud": "api://corp", "tid": TID,
        "oid": OID, "sub": OID, "idtyp": "app", "roles": ["Orders.Read"], "azp": "daemon-app",
    });
    let id = single_tenant().map(c).unwrap();
    assert_eq!(id.principal_type, PrincipalType::Service);
    assert_eq!(id.permissions, vec!["Orders.Read".to_string()]);
    assert!(id.roles.is_empty());
    assert_eq!(id.client_id.as_deref(), Some("daemon-app"));
}

#[test]
fn personal_accounts_are_customers_and_guests_are_told_apart() {
    let f = multi_tenant();
    let mut c = v2(MSA_TENANT);
    c["idp"] = json!("live.com");
    let id = f.map(c).unwrap();
    assert_eq!(id.population, Population::Customer);
    assert_eq!(id.user_type.as_deref(), Some("consumer"));
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), ("msa", "social"));
    let mut c = v2(TID);
    c["idp"] = json!(format!("https://sts.windows.net/{OTHER}/"));
    let id = f.map(c).unwrap();
    assert_eq!((id.idp.as_str(), id.idp_kind.as_str()), (format!("entra:{OTHER}").as_str(), "external_tenant"));
    assert_eq!(id.user_type.as_deref(), Some("guest"));
}

#[test]
fn id_tokens_and_auth_context_mfa() {
    let f = provider(&format!(
        "id: corp\nkind: entra\nissuer: https://login.microsoftonline.com/{TID}/v2.0\naudiences: [api://corp]\nclient_id: corp-app\nmfa_acr: [c2]\n"
    ));
    let mut c = v2(TID);
    c.as_object_mut().unwrap().remove("scp");
    c["aud"] = json!("corp-app");
    c["acrs"] = json!(["c2"]);
    let id = f.sign_in(c).unwrap();
    assert_eq!(id.token_use, TokenUse::Id);
    assert_eq!(id.client_id.as_deref(), Some("corp-app"));
    assert!(id.mfa, "an auth context listed in mfa_acr proves the second factor");
}

#[test]
fn sign_in_asks_with_domain_hint_and_an_acrs_claims_challenge() {
    let f = single_tenant();
    assert_eq!(f.kind().hint_params("ann@contoso.example"), vec![("domain_hint", "contoso.example".to_string())]);
    assert!(f.kind().hint_params("ann").is_empty());
    let step_up = f.kind().step_up_params(&f.spec);
    assert_eq!(step_up[0], ("claims", r#"{"id_token":{"acrs":{"essential":true,"value":"c1"}}}"#.to_string()));
    assert_eq!(step_up[1], ("prompt", "login".to_string()));
}

#[test]
fn external_id_issuers_name_the_tenant_guid_as_host() {
    let bad = super::super::kind::testing::refused(
        "id: ext\nkind: entra\nvariant: external\nissuer: https://contoso.ciamlogin.com/contoso.onmicrosoft.com/v2.0\naudiences: [api://x]\n",
    );
    assert!(bad.contains("tenant GUID is the host label"), "{bad}");
    let f = provider(&format!(
        "id: ext\nkind: entra\nvariant: external\nissuer: https://{TID}.ciamlogin.com/{TID}/v2.0\naudiences: [api://x]\n"
    ));
    assert_eq!(f.spec.population, Population::Customer, "External ID defaults to customers");
}

#[test]
fn external_id_signs_up_with_prompt_create_and_the_workforce_never() {
    use crate::journey::Journey;
    let ext = provider(&format!("id: ext\nkind: entra\nvariant: external\nissuer: https://{TID}.ciamlogin.com/{TID}/v2.0\naudiences: [api://x]\n"));
    let start = ext.kind().journey(&ext.spec, Journey::Signup, "x", None).unwrap();
    assert_eq!(start.params, vec![("prompt", "create".to_string())]);
    let f = single_tenant();
    assert!(f.kind().journey(&f.spec, Journey::Signup, "x", None).is_none());
    let err = super::super::kind::testing::refused(&format!(
        "id: corp\nkind: entra\nissuer: https://login.microsoftonline.com/{TID}/v2.0\naudiences: [api://x]\nsignup: true\n"
    ));
    assert!(err.contains("External ID feature"), "{err}");
}

/// The issuer check compared in place, with the tenant rule worked out once per
/// template, decides exactly as substituting and parsing every issuer would.
#[test]
fn the_issuer_check_without_per_token_parsing_decides_as_parsing_does() {
    let templates = [
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        "https://sts.windows.net/{tenantid}/",
        "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
        "https://{tenantid}.ciamlogin.com/{tenantid}/v2.0",
        "https://login.example/x{tenantid}/v2.0",
        "https://login.example/t/{tenantid}/v2.0",
        "https://{tenantid}.login.example",
        "http://127.0.0.1:8080/.idfabric/dev/wf",
        "https://login.example/{tenantid}",
    ];
    let tids = ["9188040d-6c67-4c5b-b112-36a304b66dad", "72f988bf-86f1-41af-91ab-2d7cd011db47"];
    for template in templates {
        let rule = IssuerTenant::of(template);
        for tid in tids {
            let genuine = template.replace("{tenantid}", tid);
            let other = template.replace("{tenantid}", tids[0]);
            for iss in [genuine.clone(), other, format!("{genuine}/"), genuine.to_uppercase(), String::new(), template.to_string()] {
                let slow_match = template.replace("{tenantid}", tid) == iss;
                assert_eq!(is_instance(template, tid, &iss), slow_match, "{template} {tid} {iss}");
                if !slow_match {
                    continue;
                }
                let fast = match &rule {
                    IssuerTenant::Unbound | IssuerTenant::Substituted => true,
                    IssuerTenant::Fixed(seg) => seg.as_deref() == Some(tid),
                    IssuerTenant::PerToken => tenant_bound_slow(template, &iss, tid),
                };
                assert_eq!(fast, tenant_bound_slow(template, &iss, tid), "{template} {tid} {iss} {rule:?}");
            }
        }
    }
    assert_eq!(IssuerTenant::of(templates[0]), IssuerTenant::Substituted);
    assert_eq!(IssuerTenant::of(templates[2]), IssuerTenant::Fixed(Some(tids[0].into())));
    assert_eq!(IssuerTenant::of(templates[4]), IssuerTenant::PerToken);
    assert_eq!(IssuerTenant::of(templates[7]), IssuerTenant::Unbound);
}
