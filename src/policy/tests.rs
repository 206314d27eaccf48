use super::*;
use crate::identity::Population;

fn person() -> Identity {
    let mut id = Identity::new("corp", crate::identity::ProviderKind::Entra, Population::Workforce, "u1".into());
    id.tenant = "t1".into();
    id.groups = vec!["hr".into(), "eng".into()];
    id.groups_complete = true;
    id.roles = vec!["reader".into()];
    id.scopes = vec!["orders:read".into()];
    id.email_verified = Some(true);
    id.mfa = true;
    id
}

fn req(f: impl FnOnce(&mut Requirements)) -> Requirements {
    let mut r = Requirements::default();
    f(&mut r);
    r
}

#[test]
fn requirement_table() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    type Case = (&'static str, Requirements, Box<dyn Fn(&mut Identity)>, Result<(), &'static str>);
    let cases: Vec<Case> = vec![
        ("empty allows", req(|_| {}), Box::new(|_| {}), Ok(())),
        ("population ok", req(|r| r.population = Some(Population::Workforce)), Box::new(|_| {}), Ok(())),
        ("population wrong", req(|r| r.population = Some(Population::Customer)), Box::new(|_| {}), Err("population_not_allowed")),
        ("mfa ok", req(|r| r.mfa = true), Box::new(|_| {}), Ok(())),
        ("mfa missing", req(|r| r.mfa = true), Box::new(|i| i.mfa = false), Err("mfa_required")),
        ("groups_any ok", req(|r| r.groups_any = s(&["x", "hr"])), Box::new(|_| {}), Ok(())),
        ("groups_any missing", req(|r| r.groups_any = s(&["x"])), Box::new(|_| {}), Err("group_required")),
        ("groups_all ok", req(|r| r.groups_all = s(&["hr", "eng"])), Box::new(|_| {}), Ok(())),
        ("groups_all partial", req(|r| r.groups_all = s(&["hr", "x"])), Box::new(|_| {}), Err("group_required")),
        ("groups incomplete fails closed", req(|r| r.groups_any = s(&["hr"])), Box::new(|i| i.groups_complete = false), Err("groups_incomplete")),
        ("roles ok", req(|r| r.roles_any = s(&["reader"])), Box::new(|_| {}), Ok(())),
        ("roles missing", req(|r| r.roles_any = s(&["admin"])), Box::new(|_| {}), Err("role_required")),
        ("scopes ok", req(|r| r.scopes_all = s(&["orders:read"])), Box::new(|_| {}), Ok(())),
        ("scopes missing", req(|r| r.scopes_all = s(&["orders:read", "orders:write"])), Box::new(|_| {}), Err("insufficient_scope")),
        ("tenant ok", req(|r| r.tenants = s(&["t1"])), Box::new(|_| {}), Ok(())),
        ("tenant wrong", req(|r| r.tenants = s(&["t2"])), Box::new(|_| {}), Err("tenant_required")),
        ("email verified ok", req(|r| r.email_verified = true), Box::new(|_| {}), Ok(())),
        ("email unknown is not verified", req(|r| r.email_verified = true), Box::new(|i| i.email_verified = None), Err("email_not_verified")),
        ("anonymous refused by default", req(|_| {}), Box::new(|i| { i.attributes.insert("anonymous".into(), serde_json::Value::Bool(true)); }), Err("real_user_required")),
        ("anonymous admitted where allowed", req(|r| r.allow_anonymous = true), Box::new(|i| { i.attributes.insert("anonymous".into(), serde_json::Value::Bool(true)); }), Ok(())),
        ("group denial beats step-up", req(|r| { r.mfa = true; r.groups_any = s(&["x"]) }), Box::new(|i| i.mfa = false), Err("group_required")),
    ];
    for (name, r, tweak, want) in cases {
        let mut id = person();
        tweak(&mut id);
        let got = decide(&id, std::slice::from_ref(&r), &[]).map(|_| ()).map_err(|e| e.reason());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn step_up_carries_acr_values() {
    let mut id = person();
    id.mfa = false;
    let r = req(|r| r.mfa = true);
    let err = decide(&id, std::slice::from_ref(&r), &["c1".to_string()]).unwrap_err();
    assert_eq!(err, Refusal::MfaRequired { acr_values: Some("c1".into()) });
}
