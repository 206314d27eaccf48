//! Route `policy:` rules end to end, against the real binary with dev providers and
//! minted tokens: each example of docs/configuration.md ("Policies") allowed and
//! refused with its reason and status, and config errors with file and line.

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
