use super::*;
use crate::config::Requirements;
use crate::identity::Population;

// ---------------------------------------------------------------------------------
// `require:` (the simple form): the evaluator it had before it was lowered into the
// rule form, kept here as the reference the lowered form must agree with.

fn reference_check(id: &Identity, r: &Requirements, mfa_acr: &[String]) -> Result<(), Refusal> {
    if !r.allow_anonymous && id.attributes.get("anonymous") == Some(&serde_json::Value::Bool(true)) {
        return Err(Refusal::RealUserRequired);
    }
    if let Some(p) = r.population {
        if id.population != p {
            return Err(Refusal::PopulationNotAllowed(id.population.to_string()));
        }
    }
    if !r.tenants.is_empty() && !r.tenants.iter().any(|t| t.eq_ignore_ascii_case(&id.tenant)) {
        return Err(Refusal::TenantRequired);
    }
    if r.email_verified && id.email_verified != Some(true) {
        return Err(Refusal::EmailNotVerified);
    }
    if !r.groups_any.is_empty() || !r.groups_all.is_empty() {
        if !id.groups_complete {
            return Err(Refusal::GroupsIncomplete);
        }
        if !r.groups_any.is_empty() && !r.groups_any.iter().any(|g| id.groups.contains(g)) {
            return Err(Refusal::GroupRequired(r.groups_any.join(", ")));
        }
        if let Some(missing) = r.groups_all.iter().find(|g| !id.groups.contains(g)) {
            return Err(Refusal::GroupRequired(missing.clone()));
        }
    }
    if !r.roles_any.is_empty() && !r.roles_any.iter().any(|g| id.roles.contains(g)) {
        return Err(Refusal::RoleRequired(r.roles_any.join(", ")));
    }
    if !r.scopes_all.is_empty() {
        let missing: Vec<&str> =
            r.scopes_all.iter().filter(|s| !id.scopes.contains(s)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(Refusal::InsufficientScope(r.scopes_all.join(" ")));
        }
    }
    if r.mfa && !id.mfa {
        let acr_values = (!mfa_acr.is_empty()).then(|| mfa_acr.join(" "));
        return Err(Refusal::MfaRequired { acr_values });
    }
    Ok(())
}

fn reference_decide(id: &Identity, levels: &[Requirements], mfa_acr: &[String]) -> Result<(), Refusal> {
    levels.iter().try_for_each(|r| reference_check(id, r, mfa_acr))
}

/// The lowered form, decided by the one evaluator.
fn lowered_decide(id: &Identity, levels: &[Requirements], mfa_acr: &[String]) -> Result<(), Refusal> {
    let refs: Vec<&Requirements> = levels.iter().collect();
    decide(id, &lang::lower_require(&refs), mfa_acr).map(|_| ())
}

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
        let levels = std::slice::from_ref(&r);
        let got = lowered_decide(&id, levels, &[]);
        assert_eq!(got.as_ref().map_err(|e| e.reason()).copied(), want, "{name}");
        assert_eq!(got, reference_decide(&id, levels, &[]), "{name}: lowered and reference differ");
    }
}

#[test]
fn step_up_carries_acr_values() {
    let mut id = person();
    id.mfa = false;
    let r = req(|r| r.mfa = true);
    let err = lowered_decide(&id, std::slice::from_ref(&r), &["c1".to_string()]).unwrap_err();
    assert_eq!(err, Refusal::MfaRequired { acr_values: Some("c1".into()) });
}

// ---------------------------------------------------------------------------------
// `policy:` rules (lang)

use crate::policy::lang::{self, ClaimOp, ClaimTest, Criterion as C, Policy, Rule, TimeWindow};

/// 2026-12-07 10:00 UTC, a Monday.
const MONDAY_10: i64 = 1_796_637_600;

fn get(path: &str) -> Request<'_> {
    Request { method: "GET", path, now: MONDAY_10, signals: Default::default() }
}

/// The lowered `require:` of a route that says nothing (anonymous callers refused).
fn no_require() -> Policy {
    lang::lower_require(&[&Requirements::default()])
}

fn reason(p: &Policy, id: &Identity, req: &Request) -> Result<(), &'static str> {
    decide_request(id, &no_require(), Some(p), req, &[]).map(|_| ()).map_err(|e| e.reason())
}

fn allow(rules: Vec<Rule>) -> Policy {
    Policy { allow: Some(rules), deny: vec![] }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn glob(g: &str) -> lang::PathGlobs {
    let mut b = globset::GlobSetBuilder::new();
    b.add(globset::GlobBuilder::new(g).literal_separator(true).case_insensitive(true).build().unwrap());
    lang::PathGlobs { set: b.build().unwrap(), text: vec![g.to_string()] }
}

#[test]
fn monday_constant_is_a_monday_at_ten() {
    let w = TimeWindow { days: 1 << 1, from: 600, to: 601, offset_secs: 0 };
    assert!(w.contains(MONDAY_10));
    assert!(!w.contains(MONDAY_10 + 86_400));
}

#[test]
fn each_criterion_matches_and_names_its_reason() {
    let id = person();
    type Case = (&'static str, C, Result<(), &'static str>);
    let claim = |path: &str, op: ClaimOp| C::Claim(ClaimTest { path: lang::identity_field(path).unwrap(), op, text: path.into() });
    let cases: Vec<Case> = vec![
        ("population", C::Population(vec![Population::Workforce]), Ok(())),
        ("population no", C::Population(vec![Population::Customer]), Err("policy_population")),
        ("provider", C::Provider(strs(&["corp"])), Ok(())),
        ("provider no", C::Provider(strs(&["other"])), Err("policy_provider")),
        ("tenant", C::Tenant(strs(&["t1"])), Ok(())),
        ("tenant no", C::Tenant(strs(&["t2"])), Err("policy_tenant")),
        ("org absent", C::Org(strs(&["acme"])), Err("policy_org")),
        ("groups_any", C::Groups { names: strs(&["x", "hr"]), all: false }, Ok(())),
        ("groups_all no", C::Groups { names: strs(&["hr", "x"]), all: true }, Err("policy_group")),
        ("roles_all", C::Roles { names: strs(&["reader"]), all: true }, Ok(())),
        ("roles_any no", C::Roles { names: strs(&["admin"]), all: false }, Err("policy_role")),
        ("scopes_any", C::Scopes { names: strs(&["orders:read", "x"]), all: false }, Ok(())),
        ("scopes_all no", C::Scopes { names: strs(&["orders:read", "x"]), all: true }, Err("policy_scope")),
        ("permissions no", C::Permissions { names: strs(&["p"]), all: false }, Err("policy_permission")),
        ("email", C::Email { values: strs(&["a@corp.example"]), verified_only: true }, Ok(())),
        ("email_domain", C::EmailDomain { domains: strs(&["corp.example"]), verified_only: true }, Ok(())),
        ("email_domain no", C::EmailDomain { domains: strs(&["other.example"]), verified_only: true }, Err("policy_email")),
        ("email_verified", C::EmailVerified, Ok(())),
        ("principal_type", C::PrincipalType(vec![crate::identity::PrincipalType::User]), Ok(())),
        ("principal_type no", C::PrincipalType(vec![crate::identity::PrincipalType::Service]), Err("policy_principal_type")),
        ("user_type no", C::UserType(strs(&["guest"])), Err("policy_user_type")),
        ("claim equals", claim("tenant", ClaimOp::Equals("t1".into())), Ok(())),
        ("claim in list", claim("groups", ClaimOp::In(strs(&["eng"]))), Ok(())),
        ("claim prefix", claim("email", ClaimOp::Prefix("A@".into())), Ok(())),
        ("claim regex anchored", claim("email", ClaimOp::Regex(regex::Regex::new("^(?:corp)$").unwrap())), Err("policy_claim")),
        ("claim bool", claim("mfa", ClaimOp::Equals("true".into())), Ok(())),
        ("method", C::Method(strs(&["GET"])), Ok(())),
        ("method no", C::Method(strs(&["POST"])), Err("policy_method")),
        ("path", C::Path(glob("/admin/**")), Err("policy_path")),
        ("time", C::Time(TimeWindow { days: 0b0111110, from: 360, to: 1320, offset_secs: 0 }), Ok(())),
        ("time weekend", C::Time(TimeWindow { days: 0b1000001, from: 0, to: 1440, offset_secs: 0 }), Err("policy_time")),
        ("time offset", C::Time(TimeWindow { days: 0x7f, from: 360, to: 600, offset_secs: -3 * 3600 }), Ok(())),
        ("mfa", C::Mfa, Ok(())),
        ("mfa_max_age unknown auth_time", C::MfaMaxAge(900), Err("policy_mfa_age")),
        ("acr no", C::Acr(strs(&["c2"])), Err("policy_acr")),
    ];
    let mut id = id;
    id.email = Some("A@corp.example".into());
    for (name, c, want) in cases {
        let p = allow(vec![Rule::All(vec![c])]);
        assert_eq!(reason(&p, &id, &get("/app")), want, "{name}");
    }
}

#[test]
fn claims_reach_attributes_and_unverified_email_only_with_any() {
    let mut id = person();
    id.attributes.insert("dept".into(), serde_json::json!({"code": 42, "tags": ["x"]}));
    let at = |path: &[&str], op| C::Claim(ClaimTest { path: lang::ClaimPath::Attribute(strs(path)), op, text: String::new() });
    assert_eq!(reason(&allow(vec![Rule::All(vec![at(&["dept", "code"], ClaimOp::Equals("42".into()))])]), &id, &get("/")), Ok(()));
    assert_eq!(reason(&allow(vec![Rule::All(vec![at(&["dept", "tags"], ClaimOp::Equals("x".into()))])]), &id, &get("/")), Ok(()));
    assert_eq!(reason(&allow(vec![Rule::All(vec![at(&["nope"], ClaimOp::Equals("x".into()))])]), &id, &get("/")), Err("policy_claim"));
    id.email = Some("b@corp.example".into());
    id.email_verified = Some(false);
    let dom = |verified_only| allow(vec![Rule::All(vec![C::EmailDomain { domains: strs(&["corp.example"]), verified_only }])]);
    assert_eq!(reason(&dom(true), &id, &get("/")), Err("policy_email"));
    assert_eq!(reason(&dom(false), &id, &get("/")), Ok(()));
}

#[test]
fn mfa_age_uses_auth_time_and_steps_up_with_max_age() {
    let mut id = person();
    let p = allow(vec![Rule::All(vec![C::MfaMaxAge(900)])]);
    id.auth_time = Some(MONDAY_10 - 60);
    assert_eq!(reason(&p, &id, &get("/")), Ok(()));
    id.auth_time = Some(MONDAY_10 - 901);
    let err = decide_request(&id, &no_require(), Some(&p), &get("/"), &[]).unwrap_err();
    assert_eq!((err.status(), err.reason()), (401, "policy_mfa_age"));
    assert!(err.challenge().unwrap().contains("max_age=\"900\""));
    id.mfa = false;
    assert_eq!(reason(&p, &id, &get("/")), Err("mfa_required"));
}

#[test]
fn combinators_deny_wins_and_first_unmet_reason() {
    let id = person();
    let hr_or_contractor = Rule::Or(vec![
        Rule::All(vec![C::Population(vec![Population::Workforce]), C::Groups { names: strs(&["hr"]), all: false }]),
        Rule::All(vec![C::UserType(strs(&["contractor"])), C::Roles { names: strs(&["HR.Read"]), all: false }]),
    ]);
    assert_eq!(reason(&allow(vec![hr_or_contractor.clone()]), &id, &get("/")), Ok(()));
    let mut other = person();
    other.groups = strs(&["eng"]);
    assert_eq!(reason(&allow(vec![hr_or_contractor]), &other, &get("/")), Err("policy_group"));
    // and: first failing child
    let and = Rule::And(vec![Rule::All(vec![C::Mfa]), Rule::All(vec![C::Method(strs(&["POST"]))])]);
    assert_eq!(reason(&allow(vec![and]), &id, &get("/")), Err("policy_method"));
    // not: holds when the inner rule does not; reports the inner rule's criterion
    let not_service = Rule::Not(Box::new(Rule::All(vec![C::PrincipalType(vec![crate::identity::PrincipalType::Service])])));
    assert_eq!(reason(&allow(vec![not_service]), &id, &get("/")), Ok(()));
    let not_user = Rule::Not(Box::new(Rule::All(vec![C::PrincipalType(vec![crate::identity::PrincipalType::User])])));
    assert_eq!(reason(&allow(vec![not_user]), &id, &get("/")), Err("policy_principal_type"));
    // deny wins over a matching allow
    let p = Policy { allow: Some(vec![Rule::All(vec![])]), deny: vec![Rule::All(vec![C::Groups { names: strs(&["eng"]), all: false }])] };
    assert_eq!(reason(&p, &id, &get("/")), Err("policy_denied"));
    // no allow list: signed in is enough; an empty allow list admits nobody
    assert_eq!(reason(&Policy::default(), &id, &get("/")), Ok(()));
    assert_eq!(reason(&allow(vec![]), &id, &get("/")), Err("policy_no_rule"));
    // method split: GET for all, POST only for editors
    let p = allow(vec![
        Rule::All(vec![C::Method(strs(&["GET", "HEAD"]))]),
        Rule::All(vec![C::Method(strs(&["POST", "DELETE"])), C::Groups { names: strs(&["editors"]), all: false }]),
    ]);
    assert_eq!(reason(&p, &id, &get("/")), Ok(()));
    assert_eq!(reason(&p, &id, &Request { method: "POST", ..get("/") }), Err("policy_method"));
}

#[test]
fn incomplete_groups_fail_closed_in_allow_deny_and_not() {
    let mut id = person();
    id.groups_complete = false;
    let g = || Rule::All(vec![C::Groups { names: strs(&["contractors"]), all: false }]);
    assert_eq!(reason(&allow(vec![g()]), &id, &get("/")), Err("groups_incomplete"));
    assert_eq!(reason(&Policy { allow: None, deny: vec![g()] }, &id, &get("/")), Err("groups_incomplete"));
    assert_eq!(reason(&allow(vec![Rule::Not(Box::new(g()))]), &id, &get("/")), Err("groups_incomplete"));
    // an `or` with a definite match still matches
    assert_eq!(reason(&allow(vec![Rule::Or(vec![g(), Rule::All(vec![C::Mfa])])]), &id, &get("/")), Ok(()));
}

#[test]
fn require_is_checked_before_the_policy() {
    let id = person();
    let r = req(|r| r.groups_any = strs(&["x"]));
    let p = allow(vec![Rule::All(vec![C::Method(strs(&["POST"]))])]);
    let got = decide_request(&id, &lang::lower_require(&[&r]), Some(&p), &get("/"), &[]).unwrap_err();
    assert_eq!(got.reason(), "group_required");
}

// ---------------------------------------------------------------------------------
// Property: for any identity and any `require:` (one or two levels), the lowered form
// decides exactly as the reference evaluator: same allow, same refusal (reason, and
// the names it carries: the group list, the first missing group, the scope list, the
// caller's population, the step-up `acr_values`).

mod lowered_agrees_with_reference {
    use super::*;
    use proptest::prelude::*;

    /// Few names, so requirements and identities overlap often.
    const NAMES: &[&str] = &["hr", "eng", "ops", "HR", "orders:read", "orders:write"];
    const TENANTS: &[&str] = &["", "t1", "T1", "t2", "acme"];

    fn names() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop::sample::select(NAMES).prop_map(str::to_string), 0..4)
    }

    fn population() -> impl Strategy<Value = Population> {
        prop::sample::select(Population::ALL.to_vec())
    }

    fn anonymous() -> impl Strategy<Value = Option<serde_json::Value>> {
        prop::sample::select(vec![
            None,
            Some(serde_json::Value::Bool(true)),
            Some(serde_json::Value::Bool(false)),
            Some(serde_json::Value::String("true".into())),
        ])
    }

    prop_compose! {
        fn identity()(
            population in population(),
            tenant in prop::sample::select(TENANTS),
            email_verified in prop::option::of(any::<bool>()),
            groups in names(),
            groups_complete in any::<bool>(),
            roles in names(),
            scopes in names(),
            mfa in any::<bool>(),
            anonymous in anonymous(),
        ) -> Identity {
            let mut id = Identity::new("p", crate::identity::ProviderKind::Oidc, population, "u".into());
            id.tenant = tenant.to_string();
            id.email_verified = email_verified;
            id.groups = groups;
            id.groups_complete = groups_complete;
            id.roles = roles;
            id.scopes = scopes;
            id.mfa = mfa;
            if let Some(v) = anonymous {
                id.attributes.insert("anonymous".into(), v);
            }
            id
        }
    }

    prop_compose! {
        fn requirements()(
            population in prop::option::of(population()),
            mfa in any::<bool>(),
            groups_any in names(),
            groups_all in names(),
            roles_any in names(),
            scopes_all in names(),
            // As validation leaves them: lower-cased.
            tenants in prop::collection::vec(prop::sample::select(&["t1", "t2", "acme"][..]).prop_map(str::to_string), 0..3),
            email_verified in any::<bool>(),
            allow_anonymous in any::<bool>(),
        ) -> Requirements {
            Requirements { population, mfa, adaptive_mfa: false, groups_any, groups_all, roles_any, scopes_all, tenants, email_verified, allow_anonymous }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn same_decision_and_same_refusal(
            id in identity(),
            levels in prop::collection::vec(requirements(), 1..3),
            acr in prop::collection::vec(prop::sample::select(&["c1", "urn:mfa"][..]).prop_map(str::to_string), 0..3),
        ) {
            let want = reference_decide(&id, &levels, &acr);
            let got = lowered_decide(&id, &levels, &acr);
            prop_assert_eq!(&got, &want);
            // The problem document and challenge the client sees follow from the refusal.
            if let (Err(g), Err(w)) = (&got, &want) {
                prop_assert_eq!((g.status(), g.reason(), g.challenge()), (w.status(), w.reason(), w.challenge()));
            }
            // And through the request path, with no `policy:`: the same again.
            let refs: Vec<&Requirements> = levels.iter().collect();
            let via_request = decide_request(&id, &lang::lower_require(&refs), None, &get("/x"), &acr).map(|_| ());
            prop_assert_eq!(&via_request, &want);
        }

        /// A route's `policy:` never changes what its `require:` refuses: the simple
        /// form is decided first.
        #[test]
        fn require_refusals_win_over_any_policy(
            id in identity(),
            r in requirements(),
            method_ok in any::<bool>(),
        ) {
            let want = reference_decide(&id, std::slice::from_ref(&r), &[]);
            let p = allow(vec![Rule::All(vec![C::Method(strs(if method_ok { &["GET"] } else { &["POST"] }))])]);
            let got = decide_request(&id, &lang::lower_require(&[&r]), Some(&p), &get("/x"), &[]).map(|_| ());
            match want {
                Err(w) => prop_assert_eq!(got, Err(w)),
                Ok(()) if method_ok => prop_assert_eq!(got, Ok(())),
                Ok(()) => prop_assert_eq!(got.map_err(|e| e.reason()), Err("policy_method")),
            }
        }
    }

    #[test]
    fn explanation_names_each_lowered_condition() {
        let r = Requirements {
            population: Some(Population::Workforce),
            groups_any: strs(&["hr"]),
            groups_all: strs(&["eng", "ops"]),
            scopes_all: strs(&["orders:read"]),
            mfa: true,
            ..Requirements::default()
        };
        let steps = lang::lower_require(&[&r]).explain(&person(), &get("/"));
        assert_eq!(steps.len(), 1);
        let text: Vec<(&str, &str)> = steps[0].criteria.iter().map(|(c, r)| (c.as_str(), *r)).collect();
        assert_eq!(
            text,
            vec![
                ("require.allow_anonymous: false", "match"),
                ("require.population: workforce", "match"),
                ("require.groups_any: [hr], require.groups_all: [eng, ops]", "no match"),
                ("require.scopes_all: [orders:read]", "match"),
                ("require.mfa: true", "match"),
            ]
        );
        assert_eq!(steps[0].unmet, Some("group_required"));
    }
}

// ---------------------------------------------------------------------------------
// docs/policy.md: every idfabric example loads as configuration, and decides as the
// text around it says.

mod docs_examples {
    use super::*;
    use crate::config::{Config, RouteSpec};
    use crate::identity::{PrincipalType, ProviderKind};

    const DOC: &str = include_str!("../../docs/policy.md");
    const OKTA: &str = "id: corp-okta\nkind: okta\nissuer: https://example.okta.com/oauth2/default\naudiences: [api://orders]\n";

    /// The ```yaml blocks that are whole `routes.yaml` fragments (`routes:` first).
    fn route_blocks() -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = DOC;
        while let Some(start) = rest.find("```yaml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("closed block");
            if body.starts_with("routes:") {
                out.push(body[..end].to_string());
            }
            rest = &body[end + 3..];
        }
        out
    }

    fn load_all() -> Config {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("providers")).unwrap();
        std::fs::write(d.path().join("providers/corp-okta.yaml"), OKTA).unwrap();
        let mut routes = String::from("listen: { http: 127.0.0.1:8080 }\nproviders: [corp-okta]\nroutes:\n");
        for b in route_blocks() {
            // Each block on its own must load too (so a reader can copy one).
            std::fs::write(d.path().join("routes.yaml"), format!("listen: {{ http: 127.0.0.1:8080 }}\nproviders: [corp-okta]\n{b}")).unwrap();
            match crate::config::load(&d.path().join("routes.yaml"), crate::providers::KINDS) {
                Err(e) => panic!("docs/policy.md example does not load: {e:?}\n{b}"),
                // Nor does an example draw a `check` warning (unless it shows one on purpose).
                Ok(c) => assert!(b.contains("# check warns") || c.warnings.is_empty(), "docs/policy.md example draws warnings: {:?}\n{b}", c.warnings),
            }
            routes.push_str(b.strip_prefix("routes:\n").unwrap());
        }
        std::fs::write(d.path().join("routes.yaml"), routes).unwrap();
        crate::config::load(&d.path().join("routes.yaml"), crate::providers::KINDS).expect("all examples load together")
    }

    fn route<'c>(cfg: &'c Config, name: &str) -> &'c RouteSpec {
        cfg.routes.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no route {name} in docs/policy.md"))
    }

    fn decide_on(r: &RouteSpec, id: &Identity, method: &str, path: &str, now: i64) -> Result<(), &'static str> {
        let require = lang::lower_require(&[&r.require]);
        let req = Request { method, path, now, signals: Default::default() };
        decide_request(id, &require, r.policy.as_deref(), &req, &[]).map(|_| ()).map_err(|e| e.reason())
    }

    fn employee(f: impl FnOnce(&mut Identity)) -> Identity {
        let mut id = Identity::new("corp-okta", ProviderKind::Okta, Population::Workforce, "00u9".into());
        id.groups_complete = true;
        id.email = Some("pat@example.com".into());
        id.email_verified = Some(true);
        f(&mut id);
        id
    }

    #[test]
    fn every_example_loads_and_decides_as_documented() {
        let cfg = load_all();
        assert!(route_blocks().len() >= 8, "the examples were not found");
        let at = |name: &str, id: &Identity, method: &str, path: &str| decide_on(route(&cfg, name), id, method, path, MONDAY_10);

        // How a request is decided: the wiki.
        let customer = {
            let mut id = employee(|_| {});
            id.population = Population::Customer;
            id
        };
        assert_eq!(at("wiki", &customer, "GET", "/"), Err("population_not_allowed"));
        assert_eq!(at("wiki", &employee(|i| i.user_type = Some("Guest".into())), "GET", "/"), Err("policy_denied"));
        assert_eq!(at("wiki", &employee(|_| {}), "DELETE", "/"), Err("policy_method"));
        assert_eq!(at("wiki", &employee(|i| i.groups = strs(&["editors"])), "DELETE", "/"), Ok(()));
        assert_eq!(at("wiki", &employee(|_| {}), "GET", "/"), Ok(()));

        // Deny wins, and never steps up: the console's allow form steps up.
        let fresh = employee(|i| {
            i.mfa = true;
            i.auth_time = Some(MONDAY_10 - 60);
        });
        let stale = employee(|i| {
            i.mfa = true;
            i.auth_time = Some(MONDAY_10 - 3600);
        });
        assert_eq!(at("console", &fresh, "GET", "/admin/users"), Ok(()));
        assert_eq!(at("console", &fresh, "GET", "/admin"), Ok(()));
        assert_eq!(at("console", &stale, "GET", "/admin/users"), Err("policy_mfa_age"));
        assert_eq!(at("console", &stale, "GET", "/Admin"), Err("policy_mfa_age"));
        assert_eq!(at("console", &employee(|_| {}), "GET", "/admin/users"), Err("mfa_required"));
        assert_eq!(at("console", &employee(|_| {}), "GET", "/reports"), Ok(()));

        // Pomerium: a domain except two people (unverified copies denied too).
        assert_eq!(at("wiki-domain", &employee(|_| {}), "GET", "/"), Ok(()));
        let user2 = |verified| employee(|i| {
            i.email = Some("User2@example.com".into());
            i.email_verified = Some(verified);
        });
        assert_eq!(at("wiki-domain", &user2(true), "GET", "/"), Err("policy_denied"));
        assert_eq!(at("wiki-domain", &user2(false), "GET", "/"), Err("policy_denied"));
        assert_eq!(at("wiki-domain", &employee(|i| i.email = Some("pat@sub.example.com".into())), "GET", "/"), Err("policy_email"));
        assert_eq!(at("wiki-domain", &employee(|i| i.email_verified = None), "GET", "/"), Err("policy_email"));

        // Reading for everyone, writing for a group.
        assert_eq!(at("docs", &employee(|_| {}), "HEAD", "/x"), Ok(()));
        assert_eq!(at("docs", &employee(|_| {}), "PUT", "/x"), Err("policy_method"));
        assert_eq!(at("docs", &employee(|i| i.groups = strs(&["editors"])), "PUT", "/x"), Ok(()));
        assert_eq!(at("docs", &employee(|i| i.groups_complete = false), "PUT", "/x"), Err("policy_method"));

        // An admin area for one department; PPL's starts_with kept (/administrator too).
        let engineer = employee(|i| {
            i.attributes.insert("department".into(), serde_json::json!("engineering"));
        });
        assert_eq!(at("portal", &engineer, "GET", "/admin/x"), Ok(()));
        assert_eq!(at("portal", &employee(|_| {}), "GET", "/admin/x"), Err("policy_claim"));
        assert_eq!(at("portal", &employee(|_| {}), "GET", "/administrator"), Err("policy_claim"));
        assert_eq!(at("portal", &employee(|_| {}), "GET", "/home"), Ok(()));

        // Office hours: Monday 10:00 UTC is in, Sunday is not.
        assert_eq!(at("backoffice", &employee(|_| {}), "GET", "/"), Ok(()));
        assert_eq!(decide_on(route(&cfg, "backoffice"), &employee(|_| {}), "GET", "/", MONDAY_10 - 86_400), Err("policy_time"));
        assert_eq!(decide_on(route(&cfg, "backoffice"), &employee(|_| {}), "GET", "/", MONDAY_10 + 13 * 3600), Err("policy_time"));

        // One user by id, or admin@ addresses; only employees and interns.
        let staff = |kind: &str, f: &dyn Fn(&mut Identity)| {
            let mut id = employee(|i| {
                i.attributes.insert("employment".into(), serde_json::json!(kind));
            });
            f(&mut id);
            id
        };
        assert_eq!(at("ops", &staff("contractor", &|i| i.subject = "00u1a2b3c4".into()), "GET", "/"), Err("policy_denied"));
        assert_eq!(at("ops", &employee(|_| {}), "GET", "/"), Err("policy_denied"));
        assert_eq!(at("ops", &staff("intern", &|i| i.subject = "00u1a2b3c4".into()), "GET", "/"), Ok(()));
        assert_eq!(at("ops", &staff("employee", &|i| i.email = Some("admin@example.com".into())), "GET", "/"), Ok(()));
        assert_eq!(
            at("ops", &staff("employee", &|i| {
                i.email = Some("admin@example.com".into());
                i.email_verified = Some(false);
            }), "GET", "/"),
            // the first allow rule's reason (its `subject` claim), not the closest rule's
            Err("policy_claim")
        );
        assert_eq!(at("ops", &staff("employee", &|_| {}), "GET", "/"), Err("policy_claim"));

        // Oathkeeper: the JWT API.
        let api = |scopes: &[&str]| employee(|i| i.scopes = strs(scopes));
        assert_eq!(at("orders-api", &api(&[]), "GET", "/orders/1"), Err("insufficient_scope"));
        assert_eq!(at("orders-api", &api(&["orders:read"]), "GET", "/orders/1"), Ok(()));
        assert_eq!(at("orders-api", &api(&["orders:read"]), "DELETE", "/orders/1"), Err("policy_method"));
        // Oathkeeper: health, internal, admin.
        assert!(route(&cfg, "app-health").policy.is_none());
        let admin = employee(|i| i.groups = strs(&["admins"]));
        assert_eq!(at("app", &admin, "GET", "/internal/x"), Err("policy_denied"));
        assert_eq!(at("app", &admin, "GET", "/internal"), Err("policy_denied"));
        assert_eq!(at("app", &admin, "DELETE", "/admin/users/1"), Ok(()));
        assert_eq!(at("app", &admin, "PUT", "/admin/users/1"), Err("policy_method"));
        assert_eq!(at("app", &employee(|_| {}), "GET", "/admin"), Err("policy_group"));
        assert_eq!(at("app", &employee(|_| {}), "PUT", "/home"), Ok(()));
        let service = employee(|i| i.principal_type = PrincipalType::Service);
        assert_eq!(at("app", &service, "GET", "/home"), Ok(()));
    }

    /// The explanation shown in "Explaining a decision" is the one `explain` gives.
    #[test]
    fn the_documented_explanation_is_what_explain_prints() {
        let cfg = load_all();
        let r = route(&cfg, "wiki");
        let steps = r.policy.as_ref().unwrap().explain(&employee(|_| {}), &Request { method: "DELETE", path: "/", now: MONDAY_10, signals: Default::default() });
        let json = serde_json::to_value(&steps).unwrap();
        let rules = json.as_array().unwrap();
        for (step, text) in rules.iter().zip(["{user_type: [guest]}", "{method: [GET, HEAD]}", "{groups_any: [editors], method: [POST, PUT, DELETE]}"]) {
            assert_eq!(step["text"], text);
            let line = format!("\"text\": \"{text}\"");
            assert!(DOC.contains(&line), "docs/policy.md should show {line}");
        }
        assert_eq!(rules[2]["criteria"], serde_json::json!([["groups_any: [editors]", "no match"], ["method: [POST, PUT, DELETE]", "match"]]));
        assert_eq!(rules[2]["unmet"], "policy_group");
        assert_eq!(rules[1]["unmet"], "policy_method");
    }
}
