//! Route `policy:` rules end to end, against the real binary with dev providers and
//! minted tokens: each example of docs/configuration.md ("Policies") allowed and
//! refused with its reason and status, and config errors with file and line; the
//! explanations of `token inspect` and `/.idfabric/me?explain=1`; the warnings of
//! `idfabric check`; and the decision table, about a hundred (identity, request) →
//! (status, reason) rows over every criterion, decided by one gateway.

use crate::common;

use common::*;
use reqwest::header::{AUTHORIZATION, HOST};
use serde_json::Value;

const ROUTES: &str = r#"
  - name: hr-or-contractor
    match: { host: hr.test }
    upstream: [APP]
    policy:
      allow:
        - { population: workforce, groups_any: [hr] }
        - { population: workforce, roles_any: [HR.Read], claim: { path: email, regex: "[a-z]+@corp\\.example" } }
  - name: no-guests
    match: { host: guests.test }
    upstream: [APP]
    policy:
      deny:
        - user_type: guest
        - not: { email_verified: true }
  - name: org-verified
    match: { host: org.test }
    upstream: [APP]
    policy:
      allow:
        - { population: customer, org: org_acme, email_verified: true }
  - name: editors
    match: { host: editors.test }
    upstream: [APP]
    policy:
      allow:
        - method: [GET, HEAD]
        - { method: [POST, DELETE], groups_any: [editors] }
  - name: admin-mfa
    match: { host: admin.test }
    upstream: [APP]
    policy:
      deny:
        - and:
            - path: "/admin/**"
            - not: { mfa_max_age: 15m }
  - name: weekdays
    match: { host: weekdays.test }
    upstream: [APP]
    policy:
      allow:
        - { population: workforce, time: { days: [sun], from: "00:00", to: "00:01", tz: UTC } }
  - name: require-and-policy
    match: { host: reqpol.test }
    upstream: [APP]
    require: { population: workforce, groups_any: [hr] }
    policy:
      allow:
        - method: [GET]
"#;

struct Fx {
    env: TestEnv,
    _echo: Echo,
    gw: Gateway,
}

fn start() -> Fx {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_wf_provider(
        "  - { name: alice, email: alice@corp.example, email_verified: true, groups: [hr], mfa: true }\n  \
         - { name: chris, email: chris@corp.example, email_verified: true, roles: [HR.Read], attributes: { employment: contractor }, groups: [editors] }\n  \
         - { name: bob, email: bob@corp.example, groups: [staff] }\n",
    );
    env.write_dev_provider(
        "cu",
        "customer",
        "auth0",
        "dev-idp-customer.pem",
        "audiences: [https://api.shop.example]\nclaims: { email: https://idfabric.dev/email, email_verified: https://idfabric.dev/email_verified }\nusers:\n  - { name: carol, email: carol@acme.example, email_verified: true, org: org_acme }\n  - { name: dave, email: dave@acme.example, org: org_acme }\n",
    );
    env.write_routes(&["wf", "cu"], &ROUTES.replace("APP", &echo.addr()));
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let gw = Gateway::start(&env);
    Fx { env, _echo: echo, gw }
}

async fn call(fx: &Fx, method: &str, host: &str, path: &str, token: &str) -> (u16, Value, String) {
    let url = format!("{}{path}", fx.env.proxy());
    let resp = client()
        .request(method.parse().unwrap(), url)
        .header(HOST, host)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body, www)
}

async fn expect(fx: &Fx, method: &str, host: &str, path: &str, token: &str, want: (u16, &str)) -> String {
    let (status, body, www) = call(fx, method, host, path, token).await;
    let reason = if status == 200 { "ok" } else { body["reason"].as_str().unwrap_or("?") };
    assert_eq!((status, reason), want, "{method} {host}{path}: {body}\n{}", fx.gw.log());
    www
}

#[tokio::test]
async fn policy_examples_allow_and_refuse_with_their_reason() {
    let fx = start();
    let alice = fx.env.mint("wf", "alice", &[]);
    let chris = fx.env.mint("wf", "chris", &[]);
    let bob = fx.env.mint("wf", "bob", &[]);
    let carol = fx.env.mint("cu", "carol", &[]);
    let dave = fx.env.mint("cu", "dave", &[]);

    // employees in hr OR contractors with role HR.Read
    expect(&fx, "GET", "hr.test", "/", &alice, (200, "ok")).await;
    expect(&fx, "GET", "hr.test", "/", &chris, (200, "ok")).await;
    expect(&fx, "GET", "hr.test", "/", &bob, (403, "policy_group")).await;
    expect(&fx, "GET", "hr.test", "/", &carol, (403, "policy_population")).await;

    // anyone except guests (and callers without a verified email)
    expect(&fx, "GET", "guests.test", "/", &alice, (200, "ok")).await;
    expect(&fx, "GET", "guests.test", "/", &bob, (403, "policy_denied")).await;

    // customers of organisation X with a verified email
    expect(&fx, "GET", "org.test", "/", &carol, (200, "ok")).await;
    expect(&fx, "GET", "org.test", "/", &dave, (403, "policy_email")).await;
    expect(&fx, "GET", "org.test", "/", &alice, (403, "policy_population")).await;

    // GET for everyone signed in, POST/DELETE only for editors
    expect(&fx, "GET", "editors.test", "/doc", &bob, (200, "ok")).await;
    expect(&fx, "POST", "editors.test", "/doc", &chris, (200, "ok")).await;
    expect(&fx, "DELETE", "editors.test", "/doc", &bob, (403, "policy_method")).await;

    // /admin/** needs MFA within 15 minutes (minted tokens carry no auth_time)
    expect(&fx, "GET", "admin.test", "/reports", &bob, (200, "ok")).await;
    expect(&fx, "GET", "admin.test", "/Admin/users/1", &alice, (403, "policy_denied")).await;

    // a time window that is (almost) never open
    expect(&fx, "GET", "weekdays.test", "/", &alice, (403, "policy_time")).await;

    // token inspect explains every rule of each route's policy.
    let (code, out, err) = fx.env.run(&["token", "inspect", &bob, "--method", "delete", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let editors = v["routes"].as_array().unwrap().iter().find(|r| r["route"] == "editors").unwrap().clone();
    assert_eq!(editors["reason"], "policy_method", "{editors}");
    let rules = editors["policy"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{editors}");
    assert_eq!((rules[0]["rule"].as_str(), rules[0]["result"].as_str(), rules[0]["unmet"].as_str()), (Some("allow[0]"), Some("no match"), Some("policy_method")));
    // Criteria of one map are checked (and listed) in the fixed order of docs/configuration.md.
    assert_eq!(rules[1]["text"], "{groups_any: [editors], method: [POST, DELETE]}", "{editors}");
    assert_eq!(rules[1]["criteria"][0], serde_json::json!(["groups_any: [editors]", "no match"]), "{editors}");
    assert_eq!(rules[1]["criteria"][1], serde_json::json!(["method: [POST, DELETE]", "match"]), "{editors}");
    assert_eq!(rules[1]["unmet"], "policy_group", "{editors}");
    // The lowered `require:` is explained too: each condition with its result, then the policy.
    let rp = v["routes"].as_array().unwrap().iter().find(|r| r["route"] == "require-and-policy").unwrap().clone();
    assert_eq!((rp["decision"].as_str(), rp["reason"].as_str(), rp["status"].as_u64()), (Some("deny"), Some("group_required"), Some(403)), "{rp}");
    assert_eq!((rp["method"].as_str(), rp["path"].as_str()), (Some("DELETE"), Some("/")), "{rp}");
    assert_eq!(rp["require"]["rule"], "require", "{rp}");
    assert_eq!(rp["require"]["result"], "no match", "{rp}");
    assert_eq!(rp["require"]["unmet"], "group_required", "{rp}");
    assert_eq!(
        rp["require"]["criteria"],
        serde_json::json!([
            ["require.allow_anonymous: false", "match"],
            ["require.population: workforce", "match"],
            ["require.groups_any: [hr]", "no match"]
        ]),
        "{rp}"
    );
    assert_eq!(rp["policy"]["rules"][0]["result"], "no match", "{rp}");
    // A customer on GET: the population condition fails, the policy alone would allow.
    let (_, out, _) = fx.env.run(&["token", "inspect", &carol, "--config", "routes.yaml"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let rp = v["routes"].as_array().unwrap().iter().find(|r| r["route"] == "require-and-policy").unwrap().clone();
    assert_eq!(rp["reason"], "population_not_allowed", "{rp}");
    assert_eq!(rp["require"]["criteria"][1], serde_json::json!(["require.population: workforce", "no match"]), "{rp}");
    assert_eq!(rp["policy"]["rules"][0]["result"], "match", "{rp}");
    // With --url: the route that URL selects, judged at its canonical path (the deny rule
    // of `/admin/**` matches a spelling the gateway folds to it), and no other route.
    let (code, out, err) = fx.env.run(&["token", "inspect", &alice, "--url", "http://admin.test//Admin/./users/1", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out).into_iter::<Value>().map(Result::unwrap).collect();
    assert_eq!(docs[0]["canonical_path"], "/Admin/users/1", "{out}");
    let routes = docs[1]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{out}");
    assert_eq!((routes[0]["route"].as_str(), routes[0]["path"].as_str(), routes[0]["reason"].as_str()), (Some("admin-mfa"), Some("/Admin/users/1"), Some("policy_denied")), "{out}");
    let (_, out, _) = fx.env.run(&["token", "inspect", &alice, "--url", "http://admin.test/reports", "--config", "routes.yaml"]);
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out).into_iter::<Value>().map(Result::unwrap).collect();
    assert_eq!(docs[1]["routes"][0]["reason"], "ok", "{out}");

    let metrics = scrape_metrics(&fx.env).await;
    assert!(metrics.contains("reason=\"policy_method\""), "{metrics}");
}

#[test]
fn policy_config_errors_name_file_line_and_key() {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice }\n");
    let routes = "  - name: bad\n    match: { host: bad.test }\n    upstream: [127.0.0.1:9]\n    policy:\n      allow:\n        - { groups_any: [hr] }\n        - claim: { path: attributes.x, regex: \"(a\" }\n        - { time: { days: [mon-fri], from: \"25:00\" } }\n        - { principal_type: guest }\n        - { grops_any: [hr] }\n";
    env.write_routes(&["wf"], routes);
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    // Unknown keys are a parse error: reported alone, with their line.
    assert!(all.contains("routes.yaml:") && all.contains("grops_any"), "{all}");
    let fixed = routes.replace("        - { grops_any: [hr] }\n", "");
    env.write_routes(&["wf"], &fixed);
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    let text = std::fs::read_to_string(env.routes_path()).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (key, needle) in [
        ("routes.policy.claim.regex", "regex: \"(a\""),
        ("routes.policy.time.from", "25:00"),
        ("routes.policy.principal_type", "principal_type: guest"),
    ] {
        let want = format!("routes.yaml:{}: key `{key}`", line_of(needle));
        assert!(all.contains(&want), "want {want} in:\n{all}");
    }
    assert!(all.contains("write `user_type: guest`"), "{all}");
}

async fn me(fx: &Fx, host: &str, query: &str, token: Option<&str>) -> (u16, Value, String) {
    let mut req = client().get(format!("{}/.idfabric/me{query}", fx.env.proxy())).header(HOST, host);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

#[tokio::test]
async fn me_explains_each_route_of_this_host() {
    let fx = start();
    let bob = fx.env.mint("wf", "bob", &[]);
    let alice = fx.env.mint("wf", "alice", &[]);

    // Without `explain`: the identity, as before.
    let (status, v, _) = me(&fx, "editors.test", "", Some(&bob)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["provider"], "wf", "{v}");
    assert!(v.get("routes").is_none(), "{v}");

    // Every route of this host, judged for the method asked.
    let (status, v, text) = me(&fx, "editors.test", "?explain=1&method=delete", Some(&bob)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identity"]["provider"], "wf", "{v}");
    assert_eq!(v["host"], "editors.test", "{v}");
    let routes = v["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "only this host's routes: {v}");
    let r = &routes[0];
    assert_eq!((r["route"].as_str(), r["method"].as_str(), r["path"].as_str()), (Some("editors"), Some("DELETE"), Some("/")), "{r}");
    assert_eq!((r["decision"].as_str(), r["status"].as_u64(), r["reason"].as_str()), (Some("deny"), Some(403), Some("policy_method")), "{r}");
    assert_eq!(r["require"]["criteria"], serde_json::json!([["require.allow_anonymous: false", "match"]]), "{r}");
    assert_eq!(r["policy"]["rules"][1]["criteria"][0], serde_json::json!(["groups_any: [editors]", "no match"]), "{r}");
    // Never the credential.
    assert!(!text.contains(&bob) && !text.contains(bob.split('.').nth(2).unwrap()), "{text}");

    // A hypothetical request: the route that path selects on this host.
    let (status, v, _) = me(&fx, "reqpol.test", "?explain=1&path=/reports/q1", Some(&bob)).await;
    assert_eq!(status, 200, "{v}");
    let r = &v["routes"][0];
    assert_eq!((r["route"].as_str(), r["path"].as_str(), r["reason"].as_str()), (Some("require-and-policy"), Some("/reports/q1"), Some("group_required")), "{r}");
    assert_eq!(r["require"]["unmet"], "group_required", "{r}");
    assert_eq!(r["require"]["criteria"][2], serde_json::json!(["require.groups_any: [hr]", "no match"]), "{r}");
    let (_, v, _) = me(&fx, "reqpol.test", "?explain=1&path=/reports/q1", Some(&alice)).await;
    assert_eq!((v["routes"][0]["decision"].as_str(), v["routes"][0]["reason"].as_str()), (Some("allow"), Some("ok")), "{v}");
    // `/admin/**` of admin.test: the deny rule matches alice (no auth_time), not `/reports`.
    let (_, v, _) = me(&fx, "admin.test", "?explain=1&path=/Admin/users", Some(&alice)).await;
    assert_eq!((v["routes"][0]["reason"].as_str(), v["routes"][0]["policy"]["rules"][0]["result"].as_str()), (Some("policy_denied"), Some("match")), "{v}");
    let (_, v, _) = me(&fx, "admin.test", "?explain=1&path=/reports", Some(&alice)).await;
    assert_eq!((v["routes"][0]["reason"].as_str(), v["routes"][0]["policy"]["rules"][0]["result"].as_str()), (Some("ok"), Some("no match")), "{v}");

    // Bad input: specific refusals, not a guess.
    for (host, query, want) in [
        ("nothing.test", "?explain=1&path=/x", (404, "no_route")),
        ("editors.test", "?explain=1&method=G%20T", (400, "invalid_target")),
        ("editors.test", "?explain=yes", (400, "invalid_target")),
        ("editors.test", "?explain=1&path=x", (400, "invalid_target")),
        ("editors.test", "?explain=1&path=/a/%252e%252e/b", (400, "invalid_path")),
    ] {
        let (status, v, _) = me(&fx, host, query, Some(&bob)).await;
        assert_eq!((status, v["reason"].as_str().unwrap_or("?")), (want.0, want.1), "{host}{query}: {v}");
    }
    let (status, v, _) = me(&fx, "editors.test", "?explain=1", None).await;
    assert_eq!((status, v["reason"].as_str()), (401, Some("missing_token")), "{v}");
}

#[test]
fn check_warns_about_rules_that_never_or_always_match() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice, groups: [hr] }\n");
    let routes = "  - name: lint
    match: { host: lint.test }
    upstream: [APP]
    require: { population: workforce }
    policy:
      deny:
        - { user_type: [guest] }
        - and:
            - { groups_all: [hr, staff] }
            - not: { groups_any: [staff] }
      allow:
        - { population: customer }
        - { groups_any: [hr] }
        - {}
        - { groups_any: [hr] }
        - { time: { days: [mon-fri], from: \"22:00\", to: \"06:00\" } }
  - name: clean
    match: { host: clean.test }
    upstream: [APP]
    policy:
      allow:
        - method: [GET]
";
    env.write_routes(&["wf"], &routes.replace("APP", &echo.addr()));
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    // Warnings leave the exit status alone.
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration valid") && out.contains("5 warning(s)"), "{out}");
    let text = std::fs::read_to_string(env.routes_path()).unwrap();
    let line_of = |needle: &str, nth: usize| text.lines().enumerate().filter(|(_, l)| l.contains(needle)).nth(nth).unwrap().0 + 1;
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 5, "{err}");
    for (line, key, says) in [
        (line_of("- and:", 0), "routes[lint].policy.deny[1]", "can never match"),
        (line_of("{ population: customer }", 0), "routes[lint].policy.allow[0]", "require.population: workforce"),
        (line_of("- {}", 0), "routes[lint].policy.allow[2]", "matches every caller"),
        (line_of("{ groups_any: [hr] }", 1), "routes[lint].policy.allow[3]", "repeats policy.allow[1]"),
        (line_of("22:00", 0), "routes[lint].policy.allow[4].time", "wraps past midnight"),
    ] {
        let want = format!("warning: routes.yaml:{line}: key `{key}`: ");
        assert!(warnings.iter().any(|w| w.starts_with(&want) && w.contains(says)), "want {want}… {says} in:\n{err}");
    }
    assert!(!err.contains("routes[clean]"), "{err}");

    // `run` logs them at warn level when it starts.
    let gw = Gateway::start(&env);
    let log = gw.log();
    assert!(log.contains("configuration warning") && log.contains("routes[lint].policy.allow[2]") && log.contains("WARN"), "{log}");
}

// --- the decision table -----------------------------------------------------------------------
//
// One gateway, many routes (one or two per criterion), many identities: tokens minted by the
// dev providers, some re-signed with the provider's own key after changing claims the dev
// users cannot express (Entra `acct`, `idtyp`, `auth_time`, `acr`; Auth0 `permissions`).
// Each row is (identity, method, host, path) → (status, reason).

const TENANT: &str = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

/// Minutes of the UTC day, now.
fn utc_minute() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    ((secs % 86_400) / 60) as u32
}

fn hhmm(m: u32) -> String {
    let m = m % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn table_routes() -> String {
    let now = utc_minute();
    // A window open now (two hours either side) and one that is not (three to five hours ahead).
    let (open_from, open_to) = (hhmm(now + 1440 - 120), hhmm(now + 120));
    let (shut_from, shut_to) = (hhmm(now + 180), hhmm(now + 300));
    let rules: &[(&str, &str)] = &[
        ("pop", "policy: { allow: [ { population: workforce } ] }"),
        ("prov", "policy: { allow: [ { provider: [ok] } ] }"),
        ("tenant", &format!("policy: {{ allow: [ {{ tenant: [\"{}\"] }} ] }}", TENANT.to_ascii_uppercase())),
        ("org", "policy: { allow: [ { org: [org_acme] } ] }"),
        ("gany", "policy: { allow: [ { groups_any: [hr, eng] } ] }"),
        ("gall", "policy: { allow: [ { groups_all: [hr, staff] } ] }"),
        ("rany", "policy: { allow: [ { roles_any: [HR.Read] } ] }"),
        ("rall", "policy: { allow: [ { roles_all: [HR.Read, HR.Write] } ] }"),
        ("sany", "policy: { allow: [ { scopes_any: [orders:read, orders:write] } ] }"),
        ("sall", "policy: { allow: [ { scopes_all: [orders:read, orders:write] } ] }"),
        ("pany", "policy: { allow: [ { permissions_any: [orders:write] } ] }"),
        ("pall", "policy: { allow: [ { permissions_all: [orders:write, orders:delete] } ] }"),
        ("email", "policy: { allow: [ { email: [ALICE@corp.example, bob@corp.example] } ] }"),
        ("emailany", "policy: { allow: [ { email: [bob@corp.example], email_verified: any } ] }"),
        ("domain", "policy: { allow: [ { email_domain: [corp.example] } ] }"),
        ("domainany", "policy: { allow: [ { email_domain: [\"@corp.example\"], email_verified: any } ] }"),
        ("verified", "policy: { allow: [ { email_verified: true } ] }"),
        ("ptype", "policy: { allow: [ { principal_type: user } ] }"),
        ("svc", "policy: { allow: [ { principal_type: service, permissions_any: [orders:write] } ] }"),
        ("guest", "policy: { deny: [ { user_type: guest } ] }"),
        ("ceq", "policy: { allow: [ { claim: { path: attributes.extension_dept, equals: finance } } ] }"),
        ("cin", "policy: { allow: [ { claim: { path: groups, in: [eng, ops] } } ] }"),
        ("cpre", "policy: { allow: [ { claim: { path: email, prefix: \"alice@\" } } ] }"),
        ("cre", "policy: { allow: [ { claim: { path: attributes.region, regex: \"eu-[a-z]+\" } } ] }"),
        ("method", "policy: { allow: [ { method: [GET, HEAD] } ] }"),
        ("path", "policy: { allow: [ { path: [\"/public\", \"/public/**\"] } ] }"),
        ("open", &format!("policy: {{ allow: [ {{ population: workforce, time: {{ from: \"{open_from}\", to: \"{open_to}\" }} }} ] }}")),
        ("shut", &format!("policy: {{ allow: [ {{ population: workforce, time: {{ from: \"{shut_from}\", to: \"{shut_to}\" }} }} ] }}")),
        ("shiftedtz", &format!("policy: {{ allow: [ {{ time: {{ from: \"{}\", to: \"{}\", tz: \"+05:00\" }} }} ] }}", hhmm(now + 300 + 1440 - 60), hhmm(now + 300 + 60))),
        ("mfa", "policy: { allow: [ { mfa: true } ] }"),
        ("mfaage", "policy: { allow: [ { mfa_max_age: 15m } ] }"),
        ("acr", "policy: { allow: [ { acr: [gold] } ] }"),
        ("denywins", "policy: { deny: [ { groups_any: [staff] } ], allow: [ { groups_any: [hr] } ] }"),
        ("firstunmet", "policy: { allow: [ { groups_any: [admins] }, { roles_any: [Admin] } ] }"),
        ("orrule", "policy: { allow: [ { or: [ { groups_any: [hr] }, { and: [ { roles_any: [HR.Read] }, { not: { user_type: guest } } ] } ] } ] }"),
        ("adminmfa", "policy: { allow: [ { path: [\"/admin\", \"/admin/**\"], mfa_max_age: 15m }, { not: { path: [\"/admin\", \"/admin/**\"] } } ] }"),
        ("reqpol", "require: { population: workforce, groups_any: [staff] }\n    policy: { allow: [ { method: [GET] } ] }"),
        ("reqmfa", "require: { mfa: true }\n    policy: { deny: [ { user_type: guest } ] }"),
        ("reqscope", "require: { scopes_all: [orders:read] }\n    policy: { allow: [ { provider: [wf] } ] }"),
    ];
    let mut out = String::new();
    for (name, body) in rules {
        out.push_str(&format!("  - name: {name}\n    match: {{ host: {name}.test }}\n    upstream: [APP]\n    {body}\n"));
    }
    out
}

/// A dev token with some claims changed, signed again with the provider's own key.
fn resign(env: &TestEnv, token: &str, key: &str, changes: &Value) -> String {
    let mut claims = common::jwt_claims(token);
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    let signer = idfabric::keys::Signer::load(&env.path().join("certs").join(key)).unwrap();
    signer.sign_jwt("JWT", &claims)
}

#[tokio::test]
async fn decision_table() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider(
        "wf",
        "workforce",
        "entra",
        "dev-idp-workforce.pem",
        &format!(
            "tenant: {TENANT}\nclient_id: wf-client\naudiences: [api://idfabric]\nusers:\n  \
             - {{ name: alice, email: alice@corp.example, email_verified: true, groups: [hr, staff], roles: [HR.Read], scopes: [orders:read], mfa: true, attributes: {{ dept: finance }} }}\n  \
             - {{ name: bob, email: bob@corp.example, groups: [staff] }}\n  \
             - {{ name: hank, email: hank@corp.example, email_verified: true, groups: [], roles: [HR.Read, HR.Write], scopes: [orders:read, orders:write], mfa: true, attributes: {{ dept: sales }} }}\n"
        ),
    );
    env.write_dev_provider(
        "ok",
        "workforce",
        "okta",
        "dev-idp-workforce.pem",
        "audiences: [api://okta]\nclaims: { attributes.region: region }\nusers:\n  \
         - { name: olga, email: olga@corp.example, groups: [eng], mfa: true, attributes: { region: eu-west } }\n  \
         - { name: otto, email: otto@corp.example, attributes: { region: us-east } }\n",
    );
    env.write_dev_provider(
        "cu",
        "customer",
        "auth0",
        "dev-idp-customer.pem",
        "audiences: [https://api.shop.example]\nclaims: { email: https://idfabric.dev/email, email_verified: https://idfabric.dev/email_verified }\nusers:\n  \
         - { name: carol, email: carol@acme.example, email_verified: true, org: org_acme }\n  \
         - { name: dave, email: dave@corp.example, org: org_other }\n",
    );
    env.write_routes(&["wf", "ok", "cu"], &table_routes().replace("APP", &echo.addr()));
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let gw = Gateway::start(&env);

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let alice = env.mint("wf", "alice", &[]);
    let mut tokens: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    tokens.insert("alice+fresh", resign(&env, &alice, "dev-idp-workforce.pem", &serde_json::json!({ "auth_time": now - 60 })));
    tokens.insert("alice+stale", resign(&env, &alice, "dev-idp-workforce.pem", &serde_json::json!({ "auth_time": now - 3600 })));
    tokens.insert("alice+gold", resign(&env, &alice, "dev-idp-workforce.pem", &serde_json::json!({ "acr": "gold" })));
    tokens.insert("alice", alice);
    let bob = env.mint("wf", "bob", &[]);
    // An Entra B2B guest (`acct: 1`), and bob as a guest with MFA.
    tokens.insert("gina", resign(&env, &bob, "dev-idp-workforce.pem", &serde_json::json!({ "acct": 1 })));
    tokens.insert("bob", bob);
    let hank = env.mint("wf", "hank", &[]);
    tokens.insert("hank+guest", resign(&env, &hank, "dev-idp-workforce.pem", &serde_json::json!({ "acct": 1 })));
    // An app-only token (client credentials): `idtyp: app`, its app roles are permissions.
    tokens.insert("svc", resign(&env, &hank, "dev-idp-workforce.pem", &serde_json::json!({ "idtyp": "app", "roles": ["orders:write"], "scp": null })));
    tokens.insert("hank", hank);
    tokens.insert("olga", env.mint("ok", "olga", &[]));
    tokens.insert("otto", env.mint("ok", "otto", &[]));
    let carol = env.mint("cu", "carol", &[]);
    tokens.insert("carol+perms", resign(&env, &carol, "dev-idp-customer.pem", &serde_json::json!({ "permissions": ["orders:write", "orders:delete"] })));
    tokens.insert("carol", carol);
    let dave = env.mint("cu", "dave", &[]);
    tokens.insert("dave+perm", resign(&env, &dave, "dev-idp-customer.pem", &serde_json::json!({ "permissions": ["orders:write"] })));
    tokens.insert("dave", dave);

    #[rustfmt::skip]
    let table: &[(&str, &str, &str, &str, u16, &str)] = &[
        // population
        ("alice", "GET", "pop", "/", 200, "ok"),
        ("carol", "GET", "pop", "/", 403, "policy_population"),
        // provider
        ("olga", "GET", "prov", "/", 200, "ok"),
        ("alice", "GET", "prov", "/", 403, "policy_provider"),
        // tenant (case-insensitive) and org
        ("bob", "GET", "tenant", "/", 200, "ok"),
        ("olga", "GET", "tenant", "/", 403, "policy_tenant"),
        ("carol", "GET", "org", "/", 200, "ok"),
        ("dave", "GET", "org", "/", 403, "policy_org"),
        ("alice", "GET", "org", "/", 403, "policy_org"),
        // groups any / all; incomplete groups fail closed
        ("alice", "GET", "gany", "/", 200, "ok"),
        ("olga", "GET", "gany", "/", 200, "ok"),
        ("bob", "GET", "gany", "/", 403, "policy_group"),
        ("otto", "GET", "gany", "/", 403, "groups_incomplete"),
        ("carol", "GET", "gany", "/", 403, "groups_incomplete"),
        ("alice", "GET", "gall", "/", 200, "ok"),
        ("bob", "GET", "gall", "/", 403, "policy_group"),
        // roles any / all
        ("alice", "GET", "rany", "/", 200, "ok"),
        ("bob", "GET", "rany", "/", 403, "policy_role"),
        ("hank", "GET", "rall", "/", 200, "ok"),
        ("alice", "GET", "rall", "/", 403, "policy_role"),
        // scopes any / all
        ("alice", "GET", "sany", "/", 200, "ok"),
        ("bob", "GET", "sany", "/", 403, "policy_scope"),
        ("hank", "GET", "sall", "/", 200, "ok"),
        ("alice", "GET", "sall", "/", 403, "policy_scope"),
        // permissions any / all
        ("dave+perm", "GET", "pany", "/", 200, "ok"),
        ("carol", "GET", "pany", "/", 403, "policy_permission"),
        ("carol+perms", "GET", "pall", "/", 200, "ok"),
        ("dave+perm", "GET", "pall", "/", 403, "policy_permission"),
        // email: verified only, case-insensitive; `email_verified: any`
        ("alice", "GET", "email", "/", 200, "ok"),
        ("bob", "GET", "email", "/", 403, "policy_email"),
        ("bob", "GET", "emailany", "/", 200, "ok"),
        ("alice", "GET", "emailany", "/", 403, "policy_email"),
        // email domain: verified only; `email_verified: any`
        ("alice", "GET", "domain", "/", 200, "ok"),
        ("bob", "GET", "domain", "/", 403, "policy_email"),
        ("dave", "GET", "domain", "/", 403, "policy_email"),
        ("bob", "GET", "domainany", "/", 200, "ok"),
        ("dave", "GET", "domainany", "/", 200, "ok"),
        ("carol", "GET", "domainany", "/", 403, "policy_email"),
        ("carol", "GET", "verified", "/", 200, "ok"),
        ("dave", "GET", "verified", "/", 403, "policy_email"),
        // principal type and user type (guests)
        ("alice", "GET", "ptype", "/", 200, "ok"),
        ("svc", "GET", "ptype", "/", 403, "policy_principal_type"),
        ("svc", "GET", "svc", "/", 200, "ok"),
        // Criteria of one map are checked in the documented order: permissions before principal_type.
        ("hank", "GET", "svc", "/", 403, "policy_permission"),
        ("bob", "GET", "guest", "/", 200, "ok"),
        ("gina", "GET", "guest", "/", 403, "policy_denied"),
        // claim path: equals / in / prefix / regex
        ("alice", "GET", "ceq", "/", 200, "ok"),
        ("hank", "GET", "ceq", "/", 403, "policy_claim"),
        ("bob", "GET", "ceq", "/", 403, "policy_claim"),
        ("olga", "GET", "cin", "/", 200, "ok"),
        ("alice", "GET", "cin", "/", 403, "policy_claim"),
        ("alice", "GET", "cpre", "/", 200, "ok"),
        ("bob", "GET", "cpre", "/", 403, "policy_claim"),
        ("olga", "GET", "cre", "/", 200, "ok"),
        ("otto", "GET", "cre", "/", 403, "policy_claim"),
        // method
        ("bob", "GET", "method", "/", 200, "ok"),
        ("bob", "HEAD", "method", "/", 200, "ok"),
        ("bob", "POST", "method", "/", 403, "policy_method"),
        ("bob", "DELETE", "method", "/", 403, "policy_method"),
        // path glob within the route (case folded)
        ("bob", "GET", "path", "/public", 200, "ok"),
        ("bob", "GET", "path", "/Public/a/b.css", 200, "ok"),
        ("bob", "GET", "path", "/private/x", 403, "policy_path"),
        ("bob", "GET", "path", "/publicity", 403, "policy_path"),
        // time window (UTC, and a fixed offset)
        ("bob", "GET", "open", "/", 200, "ok"),
        ("bob", "GET", "shut", "/", 403, "policy_time"),
        ("bob", "GET", "shiftedtz", "/", 200, "ok"),
        ("carol", "GET", "open", "/", 403, "policy_population"),
        // mfa; mfa_max_age → 401 step-up
        ("alice", "GET", "mfa", "/", 200, "ok"),
        ("olga", "GET", "mfa", "/", 200, "ok"),
        ("bob", "GET", "mfa", "/", 401, "mfa_required"),
        ("alice+fresh", "GET", "mfaage", "/", 200, "ok"),
        ("olga", "GET", "mfaage", "/", 200, "ok"),
        ("alice+stale", "GET", "mfaage", "/", 401, "policy_mfa_age"),
        ("alice", "GET", "mfaage", "/", 401, "policy_mfa_age"),
        ("bob", "GET", "mfaage", "/", 401, "mfa_required"),
        // acr
        ("alice+gold", "GET", "acr", "/", 200, "ok"),
        ("alice", "GET", "acr", "/", 403, "policy_acr"),
        // deny wins over a matching allow rule
        ("alice", "GET", "denywins", "/", 403, "policy_denied"),
        ("olga", "GET", "denywins", "/", 403, "policy_group"),
        // the reason is the first allow rule's first unmet criterion
        ("bob", "GET", "firstunmet", "/", 403, "policy_group"),
        // or / and / not
        ("alice", "GET", "orrule", "/", 200, "ok"),
        ("hank", "GET", "orrule", "/", 200, "ok"),
        // hank's token has no groups claim: the group branch is unknown, which an `or`
        // overrides only with a branch that holds (hank) and otherwise fails closed.
        ("hank+guest", "GET", "orrule", "/", 403, "groups_incomplete"),
        ("bob", "GET", "orrule", "/", 403, "policy_group"),
        // a path inside the route that needs recent MFA (step-up), the rest open
        ("bob", "GET", "adminmfa", "/reports", 200, "ok"),
        ("alice+fresh", "GET", "adminmfa", "/admin/users", 200, "ok"),
        ("alice+stale", "GET", "adminmfa", "/admin/users", 401, "policy_mfa_age"),
        ("bob", "GET", "adminmfa", "/admin", 401, "mfa_required"),
        // require: and policy: together (require first, with its own reasons)
        ("alice", "GET", "reqpol", "/", 200, "ok"),
        ("alice", "POST", "reqpol", "/", 403, "policy_method"),
        ("carol", "GET", "reqpol", "/", 403, "population_not_allowed"),
        ("olga", "POST", "reqpol", "/", 403, "group_required"),
        ("alice", "GET", "reqmfa", "/", 200, "ok"),
        ("bob", "GET", "reqmfa", "/", 401, "mfa_required"),
        ("gina", "GET", "reqmfa", "/", 401, "mfa_required"),
        ("hank+guest", "GET", "reqmfa", "/", 403, "policy_denied"),
        ("alice", "GET", "reqscope", "/", 200, "ok"),
        ("bob", "GET", "reqscope", "/", 403, "insufficient_scope"),
        ("olga", "GET", "reqscope", "/", 403, "insufficient_scope"),
    ];
    assert!(table.len() >= 60);
    let mut failures = Vec::new();
    for (who, method, host, path, status, reason) in table {
        let token = tokens.get(who).unwrap_or_else(|| panic!("no token {who}"));
        let host = format!("{host}.test");
        let (got, body, www) = call_on(&env, method, &host, path, token).await;
        let got_reason = if got == 200 { "ok".to_string() } else { body["reason"].as_str().unwrap_or("?").to_string() };
        if (got, got_reason.as_str()) != (*status, *reason) {
            failures.push(format!("{who} {method} {host}{path}: want {status} {reason}, got {got} {got_reason} {body}"));
        }
        // A step-up says so (RFC 9470), with `max_age` for an MFA that is too old.
        if *status == 401 {
            assert!(www.contains("insufficient_user_authentication"), "{who} {host}{path}: {www}");
            if *reason == "policy_mfa_age" {
                assert!(www.contains("max_age=\"900\""), "{who} {host}{path}: {www}");
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} rows differ:\n{}\n{}", failures.len(), table.len(), failures.join("\n"), gw.log());
}

async fn call_on(env: &TestEnv, method: &str, host: &str, path: &str, token: &str) -> (u16, Value, String) {
    let resp = client()
        .request(method.parse().unwrap(), format!("{}{path}", env.proxy()))
        .header(HOST, host)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, resp.json().await.unwrap_or(Value::Null), www)
}

#[tokio::test]
async fn me_explains_for_a_browser_session_too() {
    use common::agent::Agent;
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_wf_provider(
        "  - { name: alice, email: alice@corp.example, email_verified: true, groups: [hr], mfa: true }\n  \
         - { name: bob, email: bob@corp.example, groups: [staff] }\n",
    );
    let routes = "  - name: app
    match: { host: app.test }
    auth: session
    upstream: [APP]
    policy:
      allow:
        - { groups_any: [hr] }
  - name: app-api
    match: { host: app.test, path_prefix: /api/ }
    auth: bearer
    upstream: [APP]
  - name: elsewhere
    match: { host: other.test }
    upstream: [APP]
";
    env.write_routes(&["wf"], &routes.replace("APP", &echo.addr()));
    let _gw = Gateway::start(&env);
    let port = env.http_port;
    let b = Agent::browser();
    let (page, _sid) = b.sign_in(&format!("http://app.test:{port}/"), "alice").await;
    assert_eq!(page.status, 200, "{}", page.body);

    let r = b.get(&format!("http://app.test:{port}/.idfabric/me?explain=1")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["identity"]["provider"], "wf", "{v}");
    let routes = v["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(names, ["app", "app-api"], "this host's routes only: {v}");
    assert_eq!((routes[0]["decision"].as_str(), routes[0]["reason"].as_str()), (Some("allow"), Some("ok")), "{v}");
    assert_eq!(routes[0]["policy"]["rules"][0]["result"], "match", "{v}");
    // A bearer-only route does not take the session, as the proxy would say.
    assert_eq!((routes[1]["path"].as_str(), routes[1]["status"].as_u64(), routes[1]["reason"].as_str()), (Some("/api/"), Some(401), Some("missing_token")), "{v}");
    // No session id or cookie in the answer.
    let sid = b.cookie("app.test", common::agent::SESSION).unwrap();
    assert!(!r.body.contains(&sid), "{}", r.body);
}
