//! User journeys through the real binary: Azure AD B2C policies per journey (a route's
//! own policy, "Forgot your password?" into the reset policy and back signed in, a
//! cancelled page back to the sign-in, step-up at the MFA policy, keys bound to the
//! policy that publishes them) against an azure_b2c-shaped dev provider serving six
//! policies with three keys; "Create an account" asked for each platform's own way
//! (Auth0 `screen_hint=signup`, Cognito's hosted `/signup`, Entra External ID
//! `prompt=create`, Okta's hosted widget, B2C's sign-up policy); and the login funnel
//! counting journeys apart.

use crate::common;
use common::agent::*;
use common::*;
use serde_json::json;
use std::sync::LazyLock;

const APP: usize = 0;
const N_APPS: usize = 1;
const TENANT: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
const API_AUD: &str = "https://api.shop.test";

struct Fixture {
    env: TestEnv,
    _echo: Echoes,
    _gw: SharedGateway,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

fn b2c_issuer(env: &TestEnv) -> String {
    format!("{}/{TENANT}/v2.0/", env.dev_issuer("b2c"))
}

const USERS: &str = "users:\n  - { name: carol, display_name: Carol Customer, email: carol@example.net }\n";

impl Fixture {
    fn start() -> Fixture {
        let echo = Echoes::start(N_APPS);
        let env = TestEnv::new();
        env.write("certs/b2c-mfa.pem", &idfabric::keys::generate_pem(idfabric::keys::KeyKind::Rsa2048).unwrap());
        env.write(
            "providers/b2c.yaml",
            &format!(
                "id: b2c\nkind: dev\npopulation: customer\nshape: azure_b2c\nissuer: {iss}\nsigning_key: certs/dev-idp-customer.pem\n\
                 display_name: Shop account\nclient_id: b2c-client\naudiences: [{API_AUD}]\n\
                 policies:\n\
                 \x20 - {{ name: B2C_1_susi }}\n\
                 \x20 - {{ name: B2C_1_signup }}\n\
                 \x20 - {{ name: B2C_1_reset, signing_key: certs/dev-idp-workforce.pem }}\n\
                 \x20 - {{ name: B2C_1_edit }}\n\
                 \x20 - {{ name: B2C_1_mfa, signing_key: certs/b2c-mfa.pem }}\n\
                 \x20 - {{ name: B2C_1_partner }}\n\
                 mfa_policies: [B2C_1_mfa]\n\
                 journeys: {{ signin: B2C_1_susi, signup: B2C_1_signup, reset: B2C_1_reset, profile: B2C_1_edit, mfa: B2C_1_mfa }}\n{USERS}",
                iss = b2c_issuer(&env)
            ),
        );
        let cu = |id: &str, shape: &str, extra: &str| {
            env.write_dev_provider(id, "customer", shape, "dev-idp-customer.pem", &format!("display_name: {id} account\nclient_id: {id}-client\n{extra}{USERS}"))
        };
        cu("a0", "auth0", "");
        cu("cg", "cognito", "");
        cu("ext", "entra", &format!("tenant: a1b2c3d4-0000-4000-8000-00000000ce11\n"));
        cu("ok", "okta", "signup: true\n");
        cu("fun", "auth0", "");
        env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", &format!("display_name: Staff\nclient_id: wf-client\n{USERS}"));
        let app = echo.addr(APP);
        let session = |name: &str, host: &str, providers: &str, more: &str| {
            format!("  - name: {name}\n    match: {{ host: {host} }}\n    auth: session\n    upstream: [{app}]\n    providers: [{providers}]\n{more}")
        };
        let routes = [
            session("shop", "shop.test", "b2c", ""),
            session("partner", "partner.test", "b2c", "    b2c_policy: B2C_1_partner\n"),
            session("vault", "vault.test", "b2c", "    require: { population: customer, mfa: true }\n"),
            session("join", "join.test", "a0, cg, ext, ok, b2c, wf", ""),
            session("fun", "fun.test", "fun", ""),
            format!("  - name: api\n    match: {{ host: api.test }}\n    auth: bearer\n    upstream: [{app}]\n    providers: [b2c]\n"),
        ]
        .concat();
        env.write_routes(&["b2c", "a0", "cg", "ext", "ok", "fun", "wf"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, _echo: echo, _gw: gw }
    }
}

fn at(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", fx().env.http_port)
}

/// On the dev provider's page at `authorize`: posts its form with `extra` fields (a
/// user, or B2C's `b2c_error`) and returns where the provider sends the browser.
async fn answer(b: &Agent, authorize: &url::Url, extra: &[(&str, &str)]) -> url::Url {
    let page = b.get(authorize.as_str()).await;
    assert_eq!(page.status, 200, "dev provider page: {}", page.body);
    let action = page.url.join(&unescape(between(&page.body, "<form method=\"post\" action=\"", "\"").unwrap())).unwrap();
    let mut fields = hidden_inputs(&page.body);
    fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post(action.as_str(), &form).await.redirect()
}

/// The policy a dev B2C authorize URL runs (`/.idfabric/dev/b2c/{policy}/authorize`).
fn policy_of(authz: &url::Url) -> String {
    let rest = authz.path().strip_prefix("/.idfabric/dev/b2c/").unwrap_or_else(|| panic!("not the B2C OP: {authz}"));
    let (policy, leaf) = rest.split_once('/').unwrap_or_else(|| panic!("no policy in {authz}"));
    assert_eq!(leaf, "authorize", "{authz}");
    policy.to_string()
}

async fn session_policy(b: &Agent, host: &str) -> serde_json::Value {
    let me = b.get(&at(host, "/.idfabric/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    me.json()["attributes"]["b2c_policy"].clone()
}

// --- Azure AD B2C -----------------------------------------------------------------------

#[tokio::test]
async fn a_route_chooses_its_b2c_policy_and_the_rest_sign_in_at_the_signin_one() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("shop.test", "/")).await;
    assert_eq!(policy_of(&authz), "B2C_1_susi", "journeys.signin");
    let p = Agent::browser();
    let authz = p.to_provider(&at("partner.test", "/deals")).await;
    assert_eq!(policy_of(&authz), "B2C_1_partner", "the route's b2c_policy");
    let cb = p.pick_user(&authz, "carol").await;
    let (page, _) = p.finish(&cb, &at("partner.test", "/deals")).await;
    assert_eq!(page.upstream()["x-identity-provider"], "b2c");
    assert_eq!(session_policy(&p, "partner.test").await, "B2C_1_partner", "the token came from that policy (tfp)");
}

#[tokio::test]
async fn forgot_password_runs_the_reset_policy_and_returns_signed_in() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("shop.test", "/orders")).await;
    assert_eq!(policy_of(&authz), "B2C_1_susi");
    // "Forgot your password?" on the sign-up/sign-in page: B2C answers AADB2C90118.
    let page = b.get(authz.as_str()).await.body;
    assert!(page.contains("name=\"b2c_error\" value=\"forgot\"") && page.contains("B2C_1_susi"), "{page}");
    let cb = answer(&b, &authz, &[("b2c_error", "forgot")]).await;
    assert_eq!(cb.path(), "/.idfabric/callback");
    assert!(query_of(&cb)["error_description"].starts_with("AADB2C90118"), "{cb}");
    let reset = b.get(cb.as_str()).await;
    assert_eq!(reset.status, 302, "{}", reset.body);
    let reset = reset.redirect();
    assert_eq!(policy_of(&reset), "B2C_1_reset", "idfabric starts the reset policy itself");
    let q = query_of(&reset);
    assert_eq!(q["client_id"], "b2c-client");
    assert_eq!(q["code_challenge_method"], "S256");
    // The reset journey ends with tokens of the reset policy, signed with its own key.
    let cb = b.pick_user(&reset, "carol").await;
    let (page, _) = b.finish(&cb, &at("shop.test", "/orders")).await;
    assert_eq!(page.status, 200);
    assert_eq!(decoded(&page.upstream()["x-identity-email"]), "carol@example.net");
    assert_eq!(session_policy(&b, "shop.test").await, "B2C_1_reset");
}

#[tokio::test]
async fn a_cancelled_journey_returns_to_the_sign_in() {
    let b = Agent::browser();
    let reset = b.get(&at("shop.test", "/.idfabric/login?journey=reset&rd=%2Fcart")).await.redirect();
    assert_eq!(policy_of(&reset), "B2C_1_reset", "a reset link starts the reset policy");
    let cb = answer(&b, &reset, &[("b2c_error", "cancel")]).await;
    assert!(query_of(&cb)["error_description"].starts_with("AADB2C90091"), "{cb}");
    let back = b.get(cb.as_str()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let back = back.redirect();
    assert_eq!(back.path(), "/.idfabric/login");
    assert_eq!(query_of(&back)["rd"], "/cart");
    assert!(b.cookie("shop.test", SESSION).is_none(), "no session from a cancelled journey");
    // The sign-in again (one provider: straight to its sign-in policy).
    let again = b.get(back.as_str()).await.redirect();
    assert_eq!(policy_of(&again), "B2C_1_susi");
}

#[tokio::test]
async fn step_up_runs_the_mfa_policy() {
    let b = Agent::browser();
    let (r, first) = b.sign_in(&at("vault.test", "/safe"), "carol").await;
    let step = r.redirect();
    assert_eq!((step.path(), query_of(&step)["step_up"].as_str()), ("/.idfabric/login", "1"), "B2C_1_susi shows no MFA");
    let authz = b.get(step.as_str()).await.redirect();
    assert_eq!(policy_of(&authz), "B2C_1_mfa", "the MFA policy, not the sign-in one");
    let q = query_of(&authz);
    assert_eq!(q["prompt"], "login");
    assert!(!q.contains_key("acr_values") && !q.contains_key("max_age"), "B2C's acr is a policy name: {q:?}");
    let cb = b.pick_user(&authz, "carol").await;
    let (done, second) = b.finish(&cb, &at("vault.test", "/safe")).await;
    assert_ne!(first, second);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.upstream()["x-identity-mfa"], "true", "from the MFA policy");
    assert_eq!(session_policy(&b, "vault.test").await, "B2C_1_mfa");
}

/// A token as the B2C-shaped OP issues it for `policy`, signed with `key` (a PEM in certs/).
fn b2c_token(policy: &str, key: &str) -> String {
    let signer = idfabric::keys::Signer::load(&fx().env.path().join("certs").join(key)).unwrap();
    let now = common::fixtures::now();
    let oid = "4c7e9a1b-3d5f-4a2c-8e6b-0d1f3a5c7e9b";
    signer.sign_jwt(
        "JWT",
        &json!({"iss": b2c_issuer(&fx().env), "aud": API_AUD, "azp": "b2c-client", "sub": oid, "oid": oid, "tfp": policy,
                "scp": "orders.read", "ver": "1.0", "iat": now, "nbf": now, "exp": now + 600}),
    )
}

#[tokio::test]
async fn a_token_of_one_policy_is_never_verified_with_another_policys_key() {
    let _ = fx();
    let api = Agent::api();
    let call = |token: String| {
        let api = &api;
        async move { api.send("GET", &at("api.test", "/orders"), None, &[("authorization", &format!("Bearer {token}"))]).await }
    };
    // Each policy's token with its own key: accepted.
    for (policy, key) in [("B2C_1_susi", "dev-idp-customer.pem"), ("B2C_1_reset", "dev-idp-workforce.pem"), ("B2C_1_mfa", "b2c-mfa.pem")] {
        let r = call(b2c_token(policy, key)).await;
        assert_eq!(r.status, 200, "{policy}: {}", r.body);
    }
    // A sign-in policy token signed with a key only the reset (or MFA) policy publishes.
    for key in ["dev-idp-workforce.pem", "b2c-mfa.pem"] {
        let r = call(b2c_token("B2C_1_susi", key)).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["reason"], "key_policy_mismatch", "{key}: {}", r.body);
    }
    // `token mint` issues under the sign-in policy with its key; `token inspect` binds
    // the keys per policy as the gateway does.
    let minted = fx().env.mint("b2c", "carol", &[]);
    let r = call(minted.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, out, err) = fx().env.run(&["token", "inspect", &minted, "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("B2C_1_susi"), "{out}");
    let forged = b2c_token("B2C_1_susi", "dev-idp-workforce.pem");
    let (code, out, err) = fx().env.run(&["token", "inspect", &forged, "--config", "routes.yaml"]);
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("key_policy_mismatch"), "{out}{err}");
    // The MFA policy's name on a token signed with the sign-in key: MFA is not forged.
    let r = call(b2c_token("B2C_1_mfa", "dev-idp-customer.pem")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "key_policy_mismatch");
}

// --- Sign-up, each platform's own way ---------------------------------------------------

#[tokio::test]
async fn the_sign_in_page_offers_each_providers_own_journeys() {
    let b = Agent::browser();
    let page = b.get(&at("join.test", "/.idfabric/login?rd=%2Fwelcome")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // (The page escapes `/` in attributes as `&#x2f;`.)
    let link = |id: &str, j: &str| format!("login?provider={id}&amp;journey={j}&amp;rd=%2Fwelcome\"");
    for id in ["a0", "cg", "ext", "ok", "b2c"] {
        assert!(page.body.contains(&link(id, "signup")), "{id}: Create an account\n{}", page.body);
    }
    assert!(page.body.contains(&link("b2c", "reset")) && page.body.contains(&link("b2c", "profile")), "B2C's reset and profile policies");
    for (id, j) in [("a0", "reset"), ("wf", "signup"), ("wf", "reset")] {
        assert!(!page.body.contains(&link(id, j)), "{id} offers no {j}");
    }
    assert!(page.body.contains("Create an account") && page.body.contains("Forgot your password?") && page.body.contains("Edit your profile"));
}

#[tokio::test]
async fn sign_up_goes_to_each_platforms_own_sign_up_page() {
    let b = Agent::browser();
    let start = |id: &'static str| {
        let b = &b;
        async move {
            let r = b.get(&at("join.test", &format!("/.idfabric/login?provider={id}&journey=signup&rd=%2Fwelcome"))).await;
            assert_eq!(r.status, 302, "{id}: {}", r.body);
            r.redirect()
        }
    };
    // Auth0: Universal Login's sign-up screen.
    let u = start("a0").await;
    assert_eq!(u.path(), "/.idfabric/dev/a0/authorize");
    assert_eq!(query_of(&u)["screen_hint"], "signup");
    assert!(b.get(u.as_str()).await.body.contains("<strong>Sign-up:</strong>"), "the dev OP says it stands in for a sign-up page");
    // Cognito: the hosted UI's /signup page, with the authorize request's parameters.
    let u = start("cg").await;
    assert_eq!(u.path(), "/.idfabric/dev/cg/signup");
    let q = query_of(&u);
    for k in ["client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge"] {
        assert!(q.contains_key(k), "cognito /signup without {k}: {u}");
    }
    assert!(!q.contains_key("screen_hint") && !q.contains_key("prompt"));
    // Entra External ID: prompt=create.
    let u = start("ext").await;
    assert_eq!(u.path(), "/.idfabric/dev/ext/authorize");
    assert_eq!(query_of(&u)["prompt"], "create");
    // Okta: the hosted widget's own Sign up link (the authorize endpoint unchanged).
    let u = start("ok").await;
    assert_eq!(u.path(), "/.idfabric/dev/ok/authorize");
    assert!(!query_of(&u).contains_key("prompt") && !query_of(&u).contains_key("screen_hint"));
    // Azure AD B2C: the sign-up policy.
    let u = start("b2c").await;
    assert_eq!(policy_of(&u), "B2C_1_signup");
    // A provider without sign-up, and a journey nobody offers: refused with a page.
    let r = b.get(&at("join.test", "/.idfabric/login?provider=wf&journey=signup&rd=%2F")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("Not available"), "{}", r.body);
    let r = b.get(&at("shop.test", "/.idfabric/login?journey=welcome&rd=%2F")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // The whole Cognito sign-up: its page, then a session.
    let u = start("cg").await;
    let cb = b.pick_user(&u, "carol").await;
    let (page, _) = b.finish(&cb, &at("join.test", "/welcome")).await;
    assert_eq!(page.upstream()["x-identity-provider"], "cg");
}

#[tokio::test]
async fn the_funnel_counts_sign_ups_apart_from_sign_ins() {
    let admin = fx().env.admin();
    let series = |t: &str, j: &str, s: &str| -> f64 {
        t.lines()
            .filter(|l| l.starts_with("idfabric_login_funnel_total{"))
            .filter(|l| [("provider", "fun"), ("journey", j), ("stage", s)].iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    let scrape = || async { client().get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    for j in ["signin", "signup", "stepup"] {
        for s in ["started", "provider_redirect", "callback_ok", "callback_error", "session_created", "abandoned"] {
            let labels = [("provider", "fun"), ("population", "customer"), ("journey", j), ("stage", s)];
            let found = before.lines().any(|l| {
                l.starts_with("idfabric_login_funnel_total{") && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            });
            assert!(found, "pre-initialised: {labels:?}");
        }
    }
    assert!(!before.lines().any(|l| l.contains("provider=\"fun\"") && l.contains("journey=\"reset\"")), "Auth0 offers no reset here");
    // One sign-up to the end, one sign-in to the end.
    let b = Agent::browser();
    let u = b.get(&at("fun.test", "/.idfabric/login?journey=signup&rd=%2F")).await.redirect();
    assert_eq!(query_of(&u)["screen_hint"], "signup");
    let cb = b.pick_user(&u, "carol").await;
    b.finish(&cb, &at("fun.test", "/")).await;
    let c = Agent::browser();
    let (page, _) = c.sign_in(&at("fun.test", "/"), "carol").await;
    assert_eq!(page.status, 200);
    let after = scrape().await;
    for j in ["signup", "signin"] {
        for s in ["started", "provider_redirect", "callback_ok", "session_created"] {
            assert_eq!(series(&after, j, s) - series(&before, j, s), 1.0, "{j} {s}");
        }
    }
    assert_eq!(series(&after, "stepup", "started"), series(&before, "stepup", "started"));
}

#[test]
fn a_route_can_name_only_a_policy_of_a_b2c_provider_it_accepts() {
    let env = TestEnv::new();
    env.write(
        "providers/b2c.yaml",
        &format!(
            "id: b2c\nkind: dev\npopulation: customer\nshape: azure_b2c\nissuer: {}\nsigning_key: certs/dev-idp-customer.pem\n\
             policies: [ {{ name: B2C_1_susi }}, {{ name: B2C_1_reset }} ]\njourneys: {{ reset: B2C_1_reset }}\n{USERS}",
            b2c_issuer(&env)
        ),
    );
    env.write_dev_provider("a0", "customer", "auth0", "dev-idp-customer.pem", USERS);
    let route = |providers: &str, policy: &str| {
        format!("  - name: r\n    match: {{ host: r.test }}\n    upstream: [127.0.0.1:9]\n    providers: [{providers}]\n    b2c_policy: {policy}\n")
    };
    for (providers, policy, ok) in [("b2c", "b2c_1_RESET", true), ("b2c", "B2C_1_other", false), ("a0", "B2C_1_susi", false)] {
        env.write_routes(&["b2c", "a0"], &route(providers, policy));
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code == 0, ok, "{providers} {policy}:\n{out}{err}");
        if !ok {
            assert!(format!("{out}{err}").contains("routes.b2c_policy"), "{out}{err}");
        }
    }
    // A journey naming a policy the provider does not accept is refused at load.
    env.write("providers/b2c.yaml", &format!(
        "id: b2c\nkind: dev\npopulation: customer\nshape: azure_b2c\nissuer: {}\nsigning_key: certs/dev-idp-customer.pem\n\
         policies: [ {{ name: B2C_1_susi }} ]\njourneys: {{ signup: B2C_1_signup }}\n{USERS}",
        b2c_issuer(&env)
    ));
    env.write_routes(&["b2c"], "  - name: r\n    match: { host: r.test }\n    upstream: [127.0.0.1:9]\n");
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("journeys.signup"), "{out}{err}");
}

/// With a sign-in host, a sign-up link on an app host runs the sign-up there, then
/// hands the new session back like any sign-in; a route's `b2c_policy` is the app
/// route's, not the sign-in host's.
#[tokio::test]
async fn journeys_travel_through_the_sign_in_host() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("a0", "customer", "auth0", "dev-idp-customer.pem", &format!("client_id: a0-client\n{USERS}"));
    env.write(
        "providers/b2c.yaml",
        &format!(
            "id: b2c\nkind: dev\npopulation: customer\nshape: azure_b2c\nissuer: {}\nsigning_key: certs/dev-idp-customer.pem\n\
             policies: [ {{ name: B2C_1_susi }}, {{ name: B2C_1_partner }} ]\n{USERS}",
            b2c_issuer(&env)
        ),
    );
    let up = echo.addr();
    let routes = format!(
        "  - name: a\n    match: {{ host: a.test }}\n    upstream: [{up}]\n    providers: [a0]\n\
         \x20 - name: p\n    match: {{ host: p.test }}\n    upstream: [{up}]\n    providers: [b2c]\n    b2c_policy: B2C_1_partner\n"
    );
    env.write_routes(&["a0", "b2c"], &routes);
    let text = std::fs::read_to_string(env.routes_path()).unwrap();
    env.write("routes.yaml", &format!("{text}session: {{ auth_host: auth.test }}\n"));
    let _gw = Gateway::start(&env);
    let port = env.http_port;
    let b = Agent::browser();
    let start = b.get(&format!("http://a.test:{port}/.idfabric/login?journey=signup&rd=%2Fwelcome")).await.redirect();
    assert_eq!((start.host_str(), query_of(&start)["journey"].as_str()), (Some("auth.test"), "signup"), "{start}");
    let login = b.get(start.as_str()).await.redirect();
    assert_eq!((login.host_str(), login.path()), (Some("auth.test"), "/.idfabric/login"));
    assert_eq!(query_of(&login)["journey"], "signup");
    let authz = b.get(login.as_str()).await.redirect();
    assert_eq!(authz.path(), "/.idfabric/dev/a0/authorize");
    assert_eq!(query_of(&authz)["screen_hint"], "signup");
    let callback = b.pick_user(&authz, "carol").await;
    let back = b.get(callback.as_str()).await.redirect();
    assert_eq!(back.host_str(), Some("auth.test"), "back to the start URL");
    assert!(!query_of(&back).contains_key("journey"), "the return is any sign-in: {back}");
    let redeem = b.get(back.as_str()).await.redirect();
    assert_eq!(redeem.host_str(), Some("a.test"), "the new account's session is handed to the app host");
    let home = b.get(redeem.as_str()).await.redirect();
    assert_eq!(home.path(), "/welcome");
    // The partner route's own policy, on the sign-in host.
    let p = Agent::browser();
    let start = p.get(&format!("http://p.test:{port}/.idfabric/login?rd=%2F")).await.redirect();
    let login = p.get(start.as_str()).await.redirect();
    let authz = p.get(login.as_str()).await.redirect();
    assert_eq!(policy_of(&authz), "B2C_1_partner", "{authz}");
}
