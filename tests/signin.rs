//! Browser sign-in over HTTP, against the real binary: home-realm discovery,
//! the authorization code flow through the dev provider's own login page, sessions,
//! the remembered choice, step-up, logout, admin revocation, bad input (forged and
//! replayed state, reused codes, nonce mismatches, provider errors, tampered / foreign /
//! oversized cookies, open redirects), the funnel metrics, and sessions shared by two
//! gateway processes through a real Redis (which then goes down).
//!
//! A small cookie-keeping agent follows every redirect by hand, so each hop (status,
//! `Location`, `Set-Cookie`) is asserted. Every request goes to the gateway on
//! 127.0.0.1 with the `Host` the URL names (route hosts `*.test`), like a browser would.
//!
//! One gateway with a memory store serves the memory tests (started once); each test
//! uses its own users or routes, so tests can run in parallel. The Redis tests start their
//! own `redis-server` and gateways.
//!
//! Providers: `wf` (workforce, Entra-shaped, `domains: [corp.test]`; the dev Entra shape
//! proves MFA with auth context `c1`, so it can step up), `wf0` (workforce, Auth0-shaped:
//! no `mfa_acr`, so no step-up), `cu` (customer, Auth0-shaped), `mcu` (customer, only
//! for the metrics test).

use crate::common;
use common::agent::*;

use common::redis::RedisServer;
use common::*;
use reqwest::header::{AUTHORIZATION, HOST};
use serde_json::Value;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use url::Url;

const IDP: &str = "idfabric_idp";

// Echo app indices (one port each).
const APP_WF: usize = 0;
const APP_WFMFA: usize = 1;
const APP_SHOP: usize = 2;
const APP_MIX: usize = 3;
const APP_METRICS: usize = 4;
const N_APPS: usize = 5;

const AUTH0_MFA_ACR: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";

fn wf_provider_yaml() -> &'static str {
    "display_name: Corp employees\nclient_id: wf-client\naudiences: [api://idfabric]\ndomains: [corp.test]\nusers:\n\
     - { name: alice, display_name: Alice Admin, email: alice@corp.test, email_verified: true, groups: [hr, staff], mfa: true }\n\
     - { name: bob, display_name: Bob Builder, email: bob@corp.test, groups: [staff], mfa: false }\n\
     - { name: erin, email: erin@corp.test, groups: [staff] }\n\
     - { name: frank, email: frank@corp.test, groups: [staff] }\n"
}

fn cu_provider_yaml(name: &str, client: &str, extra: &str) -> String {
    format!(
        "display_name: {name}\nclient_id: {client}\naudiences: [https://api.shop.test]\n{extra}\
         claims: {{ groups: https://idfabric.dev/groups, roles: https://idfabric.dev/roles, email: https://idfabric.dev/email, email_verified: https://idfabric.dev/email_verified }}\n\
         users:\n\
         - {{ name: carol, display_name: Carol Customer, email: carol@gmail.example, email_verified: true, connection: google-oauth2, scopes: [orders:read] }}\n\
         - {{ name: dave, display_name: Dave Newcomer, email: dave@example.net, connection: auth0 }}\n"
    )
}

struct Fixture {
    env: TestEnv,
    _echo: Echoes,
    gw: SharedGateway,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

impl Fixture {
    fn start() -> Fixture {
        let echo = Echoes::start(N_APPS);
        let env = TestEnv::new();
        env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", wf_provider_yaml());
        env.write_dev_provider("cu", "customer", "auth0", "dev-idp-customer.pem", &cu_provider_yaml("Shop account", "cu-client", ""));
        env.write_dev_provider("mcu", "customer", "auth0", "dev-idp-customer.pem", &cu_provider_yaml("Metrics shop", "mcu-client", ""));
        // A workforce provider that cannot step up: the Auth0 shape names no `mfa_acr`.
        env.write_dev_provider(
            "wf0",
            "workforce",
            "auth0",
            "dev-idp-workforce.pem",
            "display_name: Partner staff\nclient_id: wf0-client\naudiences: [api://partner]\nusers:\n\
             - { name: bob, email: bob@partner.test, groups: [staff], mfa: false }\n",
        );
        let a = |i: usize| echo.addr(i);
        let routes = format!(
            "  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{wf}]\n    providers: [wf]\n    require: {{ population: workforce }}\n\
             \x20 - name: wfmfa\n    match: {{ host: wfmfa.test }}\n    upstream: [{wfmfa}]\n    providers: [wf0]\n    require: {{ population: workforce, mfa: true }}\n\
             \x20 - name: wfstep\n    match: {{ host: wfstep.test }}\n    upstream: [{wfmfa}]\n    providers: [wf]\n    require: {{ population: workforce, mfa: true }}\n\
             \x20 - name: shop\n    match: {{ host: shop.test }}\n    upstream: [{shop}]\n    providers: [cu]\n    require: {{ population: customer, mfa: true }}\n\
             \x20   branding: {{ product_name: Acme Shop, primary_color: \"#e11d48\", tagline: Fresh deals daily }}\n\
             \x20 - name: mix\n    match: {{ host: mix.test }}\n    upstream: [{mix}]\n    providers: [wf, cu]\n\
             \x20 - name: metrics\n    match: {{ host: metrics.test }}\n    upstream: [{met}]\n    providers: [mcu]\n",
            wf = a(APP_WF),
            wfmfa = a(APP_WFMFA),
            shop = a(APP_SHOP),
            mix = a(APP_MIX),
            met = a(APP_METRICS),
        );
        env.write_routes(&["wf", "cu", "mcu", "wf0"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, _echo: echo, gw }
    }
}

/// `http://{host}:{proxy port}{path}` on the shared gateway.
fn at(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", fx().env.http_port)
}

/// Sum of the series of `name` whose labels include all of `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn metrics_of(admin: &str) -> String {
    client().get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap()
}


// --- Home-realm discovery ------------------------------------------------------------

#[tokio::test]
async fn single_provider_route_redirects_straight_to_the_provider() {
    let b = Agent::browser();
    let login = b.get(&at("wf.test", "/reports?q=1")).await.redirect();
    assert_eq!(login.path(), "/.idfabric/login");
    assert_eq!(query_of(&login)["rd"], "/reports?q=1", "the return path rides along");
    let r = b.get(login.as_str()).await;
    let authz = r.redirect();
    assert_eq!(authz.host_str(), Some("127.0.0.1"), "the dev provider's issuer host");
    assert_eq!(authz.path(), "/.idfabric/dev/wf/authorize");
    let q = query_of(&authz);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "wf-client");
    assert_eq!(q["redirect_uri"], at("wf.test", "/.idfabric/callback"), "exact callback URI on the host used");
    assert!(q["scope"].split(' ').any(|s| s == "openid"), "{q:?}");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "S256 of the verifier, base64url");
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32, "random state and nonce: {q:?}");
    assert!(!q.contains_key("login_hint"), "no hint without an email");
    // A second start has its own state, nonce and verifier.
    let again = query_of(&b.get(login.as_str()).await.redirect());
    assert_ne!(again["state"], q["state"]);
    assert_ne!(again["nonce"], q["nonce"]);
    assert_ne!(again["code_challenge"], q["code_challenge"]);
    // The choice is remembered.
    let remember = r.set_cookie(IDP).expect("remembered-choice cookie");
    assert!(remember.starts_with("idfabric_idp=wf;"), "{remember}");
    assert!(remember.contains("HttpOnly") && remember.contains("SameSite=Lax") && remember.contains("Path=/"), "{remember}");

    // An API client (no text/html) gets a problem, not a redirect to a page.
    let api = Agent::api().get(&at("wf.test", "/reports")).await;
    assert_eq!(api.status, 401, "{}", api.body);
    assert!(api.raw_location().is_none());
    assert!(api.header("content-type").unwrap().starts_with("application/problem+json"));
}

#[tokio::test]
async fn home_realm_page_offers_an_email_box_and_the_customer_buttons() {
    let b = Agent::browser();
    let login = b.get(&at("mix.test", "/app/home")).await.redirect();
    let page = b.get(login.as_str()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.is_html());
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    let html = &page.body;
    assert!(html.contains("type=\"email\"") && html.contains("name=\"email\""), "email box: {html}");
    assert!(html.contains("name=\"provider\" value=\"cu\""), "customer button: {html}");
    assert!(!html.contains("name=\"provider\" value=\"wf\""), "the workforce provider is reached by email domain, not a button");
    assert!(html.contains("Continue with Shop account"));
    assert!(html.contains("action=\"/.idfabric/login\""));
    let rd: Vec<_> = hidden_inputs(html).into_iter().filter(|(k, _)| k == "rd").collect();
    assert!(!rd.is_empty() && rd.iter().all(|(_, v)| v == "/app/home"), "rd posted back: {rd:?}");
    assert!(!html.contains("Last used"), "nothing remembered yet");
    assert!(html.contains("<style>") && !html.contains("<script"), "inline CSS, no script");

    // The customer button starts that provider's flow.
    let authz = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/app/home"), ("provider", "cu")]).await.redirect();
    assert_eq!(authz.path(), "/.idfabric/dev/cu/authorize");
    assert_eq!(query_of(&authz)["client_id"], "cu-client");
    // A provider the route does not allow is not started: the page is shown again.
    let other = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/"), ("provider", "mcu")]).await;
    assert_eq!(other.status, 200);
    assert!(other.raw_location().is_none());
}

#[tokio::test]
async fn email_domain_picks_the_workforce_provider_with_login_hint() {
    let b = Agent::browser();
    let r = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/x"), ("email", " Alice@CORP.test ")]).await;
    let authz = r.redirect();
    assert_eq!(authz.path(), "/.idfabric/dev/wf/authorize");
    let q = query_of(&authz);
    assert_eq!(q["login_hint"], "Alice@CORP.test");
    assert_eq!(q["domain_hint"], "CORP.test", "Entra gets domain_hint too");
    assert!(r.set_cookie(IDP).unwrap().starts_with("idfabric_idp=wf;"));
    // The hint reaches the dev provider's page (kept in its form).
    let page = b.get(authz.as_str()).await;
    assert!(hidden_inputs(&page.body).contains(&("login_hint".into(), "Alice@CORP.test".into())));

    // An unknown domain: the page again, with an error, the email kept and the buttons.
    let unknown = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/x"), ("email", "zed@elsewhere.example")]).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.is_html());
    assert!(unknown.body.contains("role=\"alert\""), "{}", unknown.body);
    assert!(unknown.body.contains("value=\"zed@elsewhere.example\""));
    assert!(unknown.body.contains("name=\"provider\" value=\"cu\""));
    // Escaped, never markup.
    let xss = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/x"), ("email", "\"><script>alert(1)</script>@x.example")]).await;
    assert_eq!(xss.status, 400);
    assert!(!xss.body.contains("<script>alert(1)"), "{}", xss.body);
}

// --- The code flow and the session ----------------------------------------------------

#[tokio::test]
async fn full_code_flow_creates_a_session_and_the_upstream_gets_identity_headers() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("wf.test", "/dashboard?tab=2")).await;
    let callback = b.pick_user(&authz, "alice").await;
    assert_eq!(callback.host_str(), Some("wf.test"));
    let q = query_of(&callback);
    assert!(q.contains_key("code") && q["state"] == query_of(&authz)["state"], "{q:?}");
    let r = b.get(callback.as_str()).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.raw_location().as_deref(), Some("/dashboard?tab=2"), "a path on this host, never a URL");
    let cookie = r.set_cookie(SESSION).expect("session cookie");
    let sid = b.cookie("wf.test", SESSION).unwrap();
    assert_eq!(sid.len(), 43, "an opaque 256-bit id: {cookie}");
    assert!(!sid.contains('.'), "not a token");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP listener: no Secure (the __Host- cookie is for TLS)");
    assert!(!cookie.contains("Domain="), "host-only");

    let page = b.get(&at("wf.test", "/dashboard?tab=2")).await;
    let h = page.upstream();
    assert_eq!(h["x-identity-provider"], "wf");
    assert_eq!(h["x-identity-population"], "workforce");
    assert!(decoded(&h["x-identity-sub"]).starts_with("wf:"), "{h:?}");
    assert_eq!(decoded(&h["x-identity-email"]), "alice@corp.test");
    assert!(h["x-identity-groups"].as_str().unwrap().contains("hr"));
    assert_eq!(page.json()["path"], "/dashboard");

    // The same session answers /.idfabric/me.
    let me = b.get(&at("wf.test", "/.idfabric/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["provider"], "wf");
    assert_eq!(me.json()["token_use"], "session");
}

#[tokio::test]
async fn remembered_choice_marks_the_last_used_option() {
    let b = Agent::browser();
    let authz = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/"), ("provider", "cu")]).await.redirect();
    assert_eq!(b.cookie("mix.test", IDP).as_deref(), Some("cu"));
    let callback = b.pick_user(&authz, "dave").await;
    let (page, _) = b.finish(&callback, &at("mix.test", "/")).await;
    assert_eq!(page.upstream()["x-identity-provider"], "cu");

    // Later, on the home-realm page, the remembered option is first and marked.
    let fresh = Agent::browser();
    fresh.set("mix.test", IDP, "cu");
    let html = fresh.get(&at("mix.test", "/.idfabric/login?rd=%2F")).await.body;
    assert!(html.contains("btn-remembered") && html.contains("Last used"), "{html}");
    // A remembered id the route does not offer (or garbage) is ignored.
    for v in ["mcu", "nope", "%3Cscript%3E"] {
        let other = Agent::browser();
        other.set("mix.test", IDP, v);
        let r = other.get(&at("mix.test", "/.idfabric/login?rd=%2F")).await;
        assert_eq!(r.status, 200);
        assert!(!r.body.contains("Last used"), "{v}");
    }
}

// --- Step-up and MFA ------------------------------------------------------------------

#[tokio::test]
async fn customer_without_mfa_steps_up_at_the_provider_and_returns_to_the_same_page() {
    let b = Agent::browser();
    // Signing in without MFA lands back on the page, which then asks for a second factor.
    let (r, first) = b.sign_in(&at("shop.test", "/orders?id=7"), "carol").await;
    let step = r.redirect();
    assert_eq!(step.path(), "/.idfabric/login");
    let q = query_of(&step);
    assert_eq!(q["step_up"], "1");
    assert_eq!(q["provider"], "cu");
    assert_eq!(q["rd"], "/orders?id=7");

    // An API client with that session is refused (no redirect).
    let api = Agent::api();
    api.set("shop.test", SESSION, &first);
    let refused = api.get(&at("shop.test", "/orders?id=7")).await;
    assert_eq!(refused.status, 401, "a step-up challenge: {}", refused.body);
    assert_eq!(refused.json()["reason"], "mfa_required");
    assert!(refused.raw_location().is_none());

    // The step-up asks the provider for MFA the Auth0 way.
    let authz = b.get(step.as_str()).await.redirect();
    let aq = query_of(&authz);
    assert_eq!(aq["acr_values"], AUTH0_MFA_ACR);
    assert_eq!(aq["prompt"], "login");
    let page = b.get(authz.as_str()).await;
    assert!(page.body.contains("Verify a second factor"), "the dev provider says it is a step-up");
    let callback = b.pick_user(&authz, "carol").await;
    let (done, second) = b.finish(&callback, &at("shop.test", "/orders?id=7")).await;
    assert_ne!(first, second, "a new session after step-up");
    let h = done.upstream();
    assert_eq!(h["x-identity-mfa"], "true");
    assert_eq!(h["x-identity-provider"], "cu");
    assert_eq!(done.json()["path"], "/orders");

    // The pre-step-up session was ended by the new sign-in.
    api.set("shop.test", SESSION, &first);
    assert_eq!(api.get(&at("shop.test", "/orders")).await.status, 401);
}

#[tokio::test]
async fn workforce_without_mfa_gets_a_403_page_when_the_provider_cannot_step_up() {
    let b = Agent::browser();
    let (r, _) = b.sign_in(&at("wfmfa.test", "/payroll"), "bob").await;
    assert!(r.raw_location().is_none(), "no step-up redirect: the provider has no mfa_acr");
    assert!(r.is_html(), "a page for a browser: {}", r.body);
    assert!(r.body.contains("theme-workforce"));
    assert!(r.body.contains("multi-factor"), "says why: {}", r.body);
    // An API client with the same session gets problem+json (RFC 9470 challenge), not a page.
    let api = Agent::api();
    api.set("wfmfa.test", SESSION, &b.cookie("wfmfa.test", SESSION).unwrap());
    let p = api.get(&at("wfmfa.test", "/payroll")).await;
    assert_eq!(p.status, 401);
    assert!(p.header("content-type").unwrap().starts_with("application/problem+json"));
    assert_eq!(p.json()["reason"], "mfa_required");
    assert_eq!(
        r.status, 403,
        "a workforce route requiring MFA, reached without it where the provider cannot step up, \
         answers 403 with a clear page (got {} titled {:?})",
        r.status,
        between(&r.body, "<h1>", "</h1>")
    );
    assert!(r.body.contains("Access denied"), "{}", r.body);
}

#[tokio::test]
async fn workforce_provider_with_an_mfa_acr_steps_up_with_a_claims_challenge() {
    let b = Agent::browser();
    // A login without the auth context (bob has no MFA) lands on the step-up.
    let authz = b.to_provider(&at("wfstep.test", "/vault")).await;
    let cb = b.pick_user(&authz, "bob").await;
    let (r, first) = b.finish(&cb, &at("wfstep.test", "/vault")).await;
    let step = r.redirect();
    let q = query_of(&step);
    assert_eq!((q["step_up"].as_str(), q["provider"].as_str(), q["rd"].as_str()), ("1", "wf", "/vault"));
    let authz = b.get(step.as_str()).await.redirect();
    let aq = query_of(&authz);
    let claims: Value = serde_json::from_str(&aq["claims"]).unwrap();
    assert_eq!(claims["id_token"]["acrs"]["value"], "c1", "Entra: a claims challenge for the auth context");
    assert_eq!(claims["id_token"]["acrs"]["essential"], true);
    assert_eq!(aq["prompt"], "login");
    let cb = b.pick_user(&authz, "bob").await;
    let (done, second) = b.finish(&cb, &at("wfstep.test", "/vault")).await;
    assert_ne!(first, second);
    assert_eq!(done.upstream()["x-identity-mfa"], "true");
}

// --- Logout and revocation ------------------------------------------------------------

#[tokio::test]
async fn logout_ends_the_session_and_goes_through_the_providers_end_session() {
    let b = Agent::browser();
    let (page, sid) = b.sign_in(&at("wf.test", "/"), "bob").await;
    assert_eq!(page.status, 200);
    let r = b.log_out(&at("wf.test", "/.idfabric/logout")).await;
    let clear = r.set_cookie(SESSION).expect("the cookie is cleared");
    assert!(clear.contains("Max-Age=0"), "{clear}");
    assert!(b.cookie("wf.test", SESSION).is_none());
    let end = r.redirect();
    assert_eq!(end.host_str(), Some("127.0.0.1"));
    assert_eq!(end.path(), "/.idfabric/dev/wf/logout", "RP-initiated logout at the provider");
    let q = query_of(&end);
    assert_eq!(q["post_logout_redirect_uri"], at("wf.test", "/.idfabric/logged-out"));
    assert_eq!(q["client_id"], "wf-client");
    assert_eq!(q["id_token_hint"].split('.').count(), 3, "id_token_hint is the ID token");
    let back = b.get(end.as_str()).await.redirect();
    assert_eq!(back.as_str(), at("wf.test", "/.idfabric/logged-out"));
    let out = b.get(back.as_str()).await;
    assert_eq!(out.status, 200);
    assert!(out.body.contains("You have signed out"), "{}", out.body);
    assert!(unescape(&out.body).contains("href=\"/.idfabric/login\""), "{}", out.body);

    // The old cookie is refused: a browser goes to the login page, an API client gets 401.
    let replay = Agent::browser();
    replay.set("wf.test", SESSION, &sid);
    assert_eq!(replay.get(&at("wf.test", "/")).await.redirect().path(), "/.idfabric/login");
    let api = Agent::api();
    api.set("wf.test", SESSION, &sid);
    assert_eq!(api.get(&at("wf.test", "/")).await.status, 401);

    // Logging out without a session goes straight to the signed-out page.
    let none = Agent::browser().log_out(&at("wf.test", "/.idfabric/logout")).await;
    assert_eq!(none.raw_location().as_deref(), Some("/.idfabric/logged-out"));
}

#[tokio::test]
async fn admin_revoke_by_sub_ends_every_session_of_that_person() {
    let (b1, b2, b3) = (Agent::browser(), Agent::browser(), Agent::browser());
    let (p1, s1) = b1.sign_in(&at("wf.test", "/"), "erin").await;
    let (_, s2) = b2.sign_in(&at("wf.test", "/"), "erin").await;
    // A third session through the mixed route's email discovery (same person, same sub).
    let authz = b3.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/"), ("email", "erin@corp.test")]).await.redirect();
    let cb = b3.pick_user(&authz, "erin").await;
    let (p3, _) = b3.finish(&cb, &at("mix.test", "/")).await;
    let sub = decoded(&p1.upstream()["x-identity-sub"]);
    assert_eq!(decoded(&p3.upstream()["x-identity-sub"]), sub);
    // Someone else's session survives.
    let other = Agent::browser();
    other.sign_in(&at("wf.test", "/"), "frank").await;

    let env = &fx().env;
    let get = env.admin_call(reqwest::Method::GET, "/sessions/revoke?sub=x").send().await.unwrap();
    assert_eq!(get.status(), 405);
    let missing = env.admin_call(reqwest::Method::POST, "/sessions/revoke").send().await.unwrap();
    assert_eq!(missing.status(), 400);
    let enc: String = url::form_urlencoded::byte_serialize(sub.as_bytes()).collect();
    let r = env.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={enc}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["revoked"], 3, "{v}");
    assert_ne!(s1, s2);
    for (b, host) in [(&b1, "wf.test"), (&b2, "wf.test"), (&b3, "mix.test")] {
        assert_eq!(b.get(&at(host, "/")).await.redirect().path(), "/.idfabric/login", "revoked on {host}");
    }
    assert_eq!(other.get(&at("wf.test", "/")).await.status, 200, "other people keep their sessions");
    // Revoking again finds nothing.
    let again: Value =
        env.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={enc}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["revoked"], 0);
}

// --- Bad input ------------------------------------------------------------------------

#[tokio::test]
async fn forged_or_missing_state_is_refused_with_a_page() {
    let b = Agent::browser();
    for q in ["?code=abc&state=forged-state-value", "?code=abc", "?state=", &format!("?code=abc&state={}", "s".repeat(500))] {
        let r = b.get(&at("wf.test", &format!("/.idfabric/callback{q}"))).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.is_html());
        assert!(r.body.contains("This sign-in has expired"), "{}", r.body);
        assert!(r.set_cookie(SESSION).is_none());
        assert!(r.raw_location().is_none());
    }
    assert!(fx().gw.log().contains("invalid_state"), "a log line names the reason");
}

#[tokio::test]
async fn a_replayed_callback_and_a_reused_code_are_refused() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("wf.test", "/")).await;
    let callback = b.pick_user(&authz, "bob").await;
    let first = b.get(callback.as_str()).await;
    assert_eq!(first.status, 302);
    assert!(first.set_cookie(SESSION).is_some());
    // The same code and state again: the transaction is single use.
    let replay = Agent::browser().get(callback.as_str()).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.set_cookie(SESSION).is_none());

    // The same code with a fresh, valid state: the provider refuses the used code.
    let c = Agent::browser();
    let fresh = c.to_provider(&at("wf.test", "/")).await;
    let state = query_of(&fresh)["state"].clone();
    let code = query_of(&callback)["code"].clone();
    let mut u = Url::parse(&at("wf.test", "/.idfabric/callback")).unwrap();
    u.query_pairs_mut().append_pair("code", &code).append_pair("state", &state);
    let reused = c.get(u.as_str()).await;
    assert_eq!(reused.status, 502, "{}", reused.body);
    assert!(reused.is_html());
    assert!(reused.body.contains("invalid_grant"), "{}", reused.body);
    assert!(reused.set_cookie(SESSION).is_none());
}

/// Runs the dev provider's authorize step ourselves with `params` changed, so the code
/// (and the ID token it buys) carries what we chose; returns the callback URL.
async fn authorize_with(b: &Agent, authz: &Url, user: &str, change: &[(&str, Option<&str>)]) -> Url {
    let mut q: Vec<(String, String)> = authz.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    for (k, v) in change {
        q.retain(|(n, _)| n != k);
        if let Some(v) = v {
            q.push((k.to_string(), v.to_string()));
        }
    }
    q.push(("user".into(), user.into()));
    let form: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let base = format!("http://127.0.0.1:{}{}", authz.port().unwrap(), authz.path());
    b.post(&base, &form).await.redirect()
}

#[tokio::test]
async fn a_mismatched_or_missing_nonce_is_refused() {
    for (label, nonce) in [("mismatched", Some("not-the-nonce-of-this-sign-in")), ("missing", None)] {
        let b = Agent::browser();
        let authz = b.to_provider(&at("wf.test", "/")).await;
        let callback = authorize_with(&b, &authz, "bob", &[("nonce", nonce)]).await;
        let r = b.get(callback.as_str()).await;
        assert_eq!(r.status, 401, "{label}: {}", r.body);
        assert!(r.is_html());
        assert!(r.set_cookie(SESSION).is_none(), "{label}");
        assert!(r.body.to_lowercase().contains("nonce"), "{label}: {}", r.body);
    }
    assert!(fx().gw.log().contains("nonce_mismatch"));
}

#[tokio::test]
async fn a_provider_error_callback_gets_a_403_page() {
    let b = Agent::browser();
    let authz = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/"), ("provider", "cu")]).await.redirect();
    // The user declines at the provider.
    let callback = authorize_with(&b, &authz, "carol", &[("deny", Some("1"))]).await;
    let q = query_of(&callback);
    assert_eq!(q["error"], "access_denied");
    let r = b.get(callback.as_str()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.is_html());
    assert!(r.body.contains("access_denied") && r.body.contains("Sign-in was not completed"), "{}", r.body);
    assert!(r.set_cookie(SESSION).is_none());
    // Another error code: 401; markup in it is stripped.
    let authz = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/"), ("provider", "cu")]).await.redirect();
    let state = query_of(&authz)["state"].clone();
    let mut u = Url::parse(&at("mix.test", "/.idfabric/callback")).unwrap();
    u.query_pairs_mut().append_pair("error", "server_error<script>").append_pair("state", &state);
    let r = b.get(u.as_str()).await;
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("<script>"));
}

#[tokio::test]
async fn a_callback_on_another_host_than_the_sign_in_started_on_is_refused() {
    let b = Agent::browser();
    let authz = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", "/"), ("provider", "cu")]).await.redirect();
    let callback = b.pick_user(&authz, "carol").await;
    let mut moved = callback.clone();
    moved.set_host(Some("shop.test")).unwrap();
    let r = b.get(moved.as_str()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.set_cookie(SESSION).is_none());
}

#[tokio::test]
async fn tampered_foreign_and_oversized_session_cookies_are_no_session() {
    let b = Agent::browser();
    let (_, sid) = b.sign_in(&at("wf.test", "/"), "bob").await;
    let flip = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        let i = c.len() / 2;
        c[i] = if c[i] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect::<String>()
    };
    let foreign = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])
    };
    let jwt = fx().env.mint("wf", "bob", &[]);
    let cases: Vec<(&str, String)> = vec![
        ("tampered", flip(&sid)),
        ("truncated", sid[..42].to_string()),
        ("extended", format!("{sid}A")),
        ("foreign", foreign),
        ("token as cookie", jwt),
        ("oversized", "A".repeat(6000)),
        ("markup", "%3Cscript%3E".into()),
    ];
    for (label, value) in cases {
        let browser = Agent::browser();
        browser.set("wf.test", SESSION, &value);
        let r = browser.get(&at("wf.test", "/")).await;
        assert_eq!(r.status, 302, "{label}: {} {}", r.status, r.body);
        assert_eq!(r.location().path(), "/.idfabric/login", "{label}");
        let api = Agent::api();
        api.set("wf.test", SESSION, &value);
        let r = api.get(&at("wf.test", "/")).await;
        assert_eq!(r.status, 401, "{label}: {}", r.body);
    }
    // The real one still works.
    assert_eq!(b.get(&at("wf.test", "/")).await.status, 200);
    // A cookie header far beyond any session id (64 KiB): refused, never a 5xx.
    let huge = Agent::api();
    huge.set("wf.test", SESSION, &"B".repeat(64 * 1024));
    let r = huge.get(&at("wf.test", "/")).await;
    assert!((400..500).contains(&r.status), "oversized cookie header: {}", r.status);
}

#[tokio::test]
async fn open_redirects_are_refused_with_a_400_page() {
    let b = Agent::browser();
    let attempts = [
        "rd=//evil.example/x",
        "rd=https://evil.example/",
        "rd=http%3A%2F%2Fevil.example%2F",
        "rd=/%5Cevil.example",
        "rd=%2F%5Cevil.example",
        "rd=%2F%2Fevil.example",
        "rd=%5C%5Cevil.example",
        "rd=/%09/evil.example",
        "rd=evil.example",
        "rd=javascript:alert(1)",
        "rd=%2F%2F%2Fevil.example",
    ];
    for a in attempts {
        for agent_host in ["wf.test", "mix.test"] {
            let r = b.get(&at(agent_host, &format!("/.idfabric/login?{a}"))).await;
            assert_eq!(r.status, 400, "{a} on {agent_host}: {}", r.body);
            assert!(r.raw_location().is_none(), "{a}: never a Location");
            assert!(r.is_html());
            assert!(r.body.contains("Invalid return address"), "{}", r.body);
        }
    }
    // Posted forms are checked the same way.
    for rd in ["//evil.example", "https://evil.example", "/\\evil.example"] {
        let r = b.post(&at("mix.test", "/.idfabric/login"), &[("rd", rd), ("email", "alice@corp.test")]).await;
        assert_eq!(r.status, 400, "{rd}");
        assert!(r.raw_location().is_none());
    }
    // An unknown host is not a place to return to.
    let r = b.get(&at("evil.example", "/.idfabric/login?rd=%2F")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.raw_location().is_none());

    // An encoded path stays a path on this host, all the way through the sign-in.
    let authz = b.get(&at("wf.test", "/.idfabric/login?rd=%2F%252F%2Fevil.example")).await.redirect();
    let callback = b.pick_user(&authz, "bob").await;
    let r = b.get(callback.as_str()).await;
    assert_eq!(r.raw_location().as_deref(), Some("/%2F/evil.example"));
    assert_eq!(r.location().host_str(), Some("wf.test"));
}

#[tokio::test]
async fn the_funnel_and_login_metrics_count_each_stage() {
    let admin = fx().env.admin();
    let stage = |t: &str, s: &str| series(t, "idfabric_login_funnel_total", &[("provider", "mcu"), ("population", "customer"), ("stage", s)]);
    let logins = |t: &str, r: &str| series(t, "idfabric_logins_total", &[("provider", "mcu"), ("population", "customer"), ("result", r)]);
    let before = metrics_of(&admin).await;

    // One success…
    let b = Agent::browser();
    let (page, _) = b.sign_in(&at("metrics.test", "/"), "carol").await;
    assert_eq!(page.status, 200);
    // …and one decline at the provider.
    let c = Agent::browser();
    let authz = c.to_provider(&at("metrics.test", "/")).await;
    let callback = authorize_with(&c, &authz, "carol", &[("deny", Some("1"))]).await;
    assert_eq!(c.get(callback.as_str()).await.status, 403);

    let after = metrics_of(&admin).await;
    let d = |s: &str| stage(&after, s) - stage(&before, s);
    assert_eq!(d("started"), 2.0, "{after}");
    assert_eq!(d("provider_redirect"), 2.0);
    assert_eq!(d("callback_ok"), 1.0);
    assert_eq!(d("session_created"), 1.0);
    assert_eq!(d("callback_error"), 1.0);
    assert_eq!(logins(&after, "success") - logins(&before, "success"), 1.0);
    assert_eq!(logins(&after, "failure") - logins(&before, "failure"), 1.0);
    // Every stage is exported from the start (a dashboard sees zeros, not gaps).
    assert!(after.contains("stage=\"abandoned\""), "abandoned is exported");
}

// --- Two gateways, one Redis ----------------------------------------------------------

/// routes.yaml text for a Redis-backed gateway on `http`/`admin`.
fn redis_routes(http: u16, admin: u16, redis: &str, echo: &str) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\nadmin: {{ listen: 127.0.0.1:{admin}, token_file: certs/admin.token }}\nproviders: [rwf, rcu]\n\
         session: {{ store: \"{redis}\", cookie: idfabric_session, ttl: 8h, idle: 1h, key_file: certs/session.key }}\n\
         broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n\
         routes:\n\
         \x20 - name: app\n    match: {{ host: app.test }}\n    upstream: [{echo}]\n    providers: [rwf, rcu]\n\
         \x20 - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{echo}]\n    providers: [rwf]\n\
         \x20 - name: shop\n    match: {{ host: shop.test }}\n    upstream: [{echo}]\n    providers: [rcu]\n"
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Gateway A's env (providers issued at A) and gateway B's env sharing A's keys and
/// provider files, both on `redis`.
fn two_envs(redis: &RedisServer, echo: &Echo) -> (TestEnv, TestEnv) {
    let a = TestEnv::new();
    a.write_dev_provider("rwf", "workforce", "entra", "dev-idp-workforce.pem", wf_provider_yaml());
    // Short-lived provider tokens: the session refreshes them on first use.
    a.write_dev_provider("rcu", "customer", "auth0", "dev-idp-customer.pem", &cu_provider_yaml("Shop account", "rcu-client", "token_ttl: 30s\n"));
    a.write("routes.yaml", &redis_routes(a.http_port, a.admin_port, &redis.url(), &echo.addr()));
    let b = TestEnv::new();
    copy_dir(&a.path().join("certs"), &b.path().join("certs"));
    copy_dir(&a.path().join("providers"), &b.path().join("providers"));
    b.write("routes.yaml", &redis_routes(b.http_port, b.admin_port, &redis.url(), &echo.addr()));
    for env in [&a, &b] {
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
    }
    (a, b)
}

fn on(env: &TestEnv, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", env.http_port)
}

fn session_json(redis: &RedisServer, sid: &str) -> Option<Value> {
    let raw = redis.cmd(&["GET", &format!("idf:s:{sid}")]);
    (!raw.is_empty()).then(|| serde_json::from_str(&raw).unwrap())
}

#[tokio::test]
async fn two_gateways_share_sessions_through_redis() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (ea, eb) = two_envs(&redis, &echo);
    let ga = Gateway::start(&ea);
    let gb = Gateway::start(&eb);

    // Signed in through A (email discovery), the session works on B.
    let user = Agent::browser();
    let authz = user.post(&on(&ea, "app.test", "/.idfabric/login"), &[("rd", "/in"), ("email", "alice@corp.test")]).await.redirect();
    assert_eq!(authz.port(), Some(ea.http_port), "the dev provider lives on A");
    let cb = user.pick_user(&authz, "alice").await;
    let (on_a, sid) = user.finish(&cb, &on(&ea, "app.test", "/in")).await;
    let sub = decoded(&on_a.upstream()["x-identity-sub"]);
    assert!(session_json(&redis, &sid).is_some(), "the session is in Redis");
    let on_b = user.get(&on(&eb, "app.test", "/in")).await;
    assert_eq!(decoded(&on_b.upstream()["x-identity-sub"]), sub, "same session on B");

    // Signed in through B (whose provider is served by A), the session works on A.
    let other = Agent::browser();
    let (r, _) = other.sign_in(&on(&eb, "wf.test", "/"), "bob").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(other.get(&on(&ea, "wf.test", "/")).await.status, 200);

    // Logout on B ends it on A.
    let out = user.log_out(&on(&eb, "app.test", "/.idfabric/logout")).await;
    assert!(out.set_cookie(SESSION).unwrap().contains("Max-Age=0"));
    assert!(session_json(&redis, &sid).is_none(), "gone from Redis");
    // A may serve it from its cache of session lookups for up to a second more.
    let replay = Agent::browser();
    replay.set("app.test", SESSION, &sid);
    let (replay, url) = (&replay, &on(&ea, "app.test", "/in"));
    within_session_cache_ttl("logout on B ends the session on A", || async move {
        replay.get(url).await.raw_location().is_some_and(|l| l.starts_with("/.idfabric/login"))
    })
    .await;

    // Revocation through B's admin ends a session made on A.
    let leaver = Agent::browser();
    let (r, lsid) = leaver.sign_in(&on(&ea, "wf.test", "/"), "erin").await;
    let lsub = decoded(&r.upstream()["x-identity-sub"]);
    let enc: String = url::form_urlencoded::byte_serialize(lsub.as_bytes()).collect();
    let v: Value =
        eb.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={enc}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["revoked"], 1, "{v}");
    assert!(session_json(&redis, &lsid).is_none());
    let (leaver, url) = (&leaver, &on(&ea, "wf.test", "/"));
    within_session_cache_ttl("revocation on B ends the session on A", || async move {
        leaver.get(url).await.raw_location().is_some_and(|l| l.starts_with("/.idfabric/login"))
    })
    .await;

    // Refresh shortly before the provider's tokens expire (token_ttl 30s), MFA kept.
    let shopper = Agent::browser();
    let authz = shopper.to_provider(&on(&ea, "shop.test", "/")).await;
    let step = authorize_with(&shopper, &authz, "carol", &[("acr_values", Some(AUTH0_MFA_ACR))]).await;
    let r = shopper.get(step.as_str()).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let ssid = shopper.cookie("shop.test", SESSION).unwrap();
    let before = session_json(&redis, &ssid).unwrap();
    assert_eq!(before["mfa"], true);
    let page = shopper.get(&on(&eb, "shop.test", "/")).await;
    assert_eq!(page.upstream()["x-identity-mfa"], "true", "the login's MFA survives a refresh that drops amr");
    let after = session_json(&redis, &ssid).unwrap();
    assert_ne!(after["id_token"], before["id_token"], "B refreshed the provider tokens");
    assert_ne!(after["refresh_token"], before["refresh_token"], "the rotated refresh token is stored (sealed)");
    assert!(!after["refresh_token"].as_str().unwrap().contains('.'), "sealed, not the JWT itself");
    let lock = redis.cmd(&["PTTL", &format!("idf:lock:{ssid}")]);
    assert!(lock.parse::<i64>().unwrap() > 0, "the refresh was claimed once for all replicas: {lock}");
    assert_eq!(shopper.get(&on(&ea, "shop.test", "/")).await.status, 200, "and A sees the refreshed session");

    // An expired transaction (10 minutes old): moved back in time in Redis.
    let late = Agent::browser();
    let authz = late.to_provider(&on(&ea, "wf.test", "/")).await;
    let state = query_of(&authz)["state"].clone();
    let key = format!("idf:{{txn}}:v:t:{state}");
    let mut txn: Value = serde_json::from_str(&redis.cmd(&["HGET", &key, "v"])).unwrap();
    txn["created_at"] = (txn["created_at"].as_i64().unwrap() - 3600).into();
    assert_eq!(redis.cmd(&["HSET", &key, "v", &txn.to_string()]), "0");
    let cb = late.pick_user(&authz, "bob").await;
    let r = late.get(cb.as_str()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert!(r.set_cookie(SESSION).is_none());

    // An abandoned sign-in (never came back) is counted once, by one of the replicas.
    let gone = Agent::browser();
    let authz = gone.to_provider(&on(&eb, "shop.test", "/")).await;
    let state = query_of(&authz)["state"].clone();
    // Pending sign-ins are a sorted set scored by creation time (milliseconds): made an hour older.
    let member = format!("t:{state}|rcu|127.0.0.1");
    let score: i64 = redis.cmd(&["ZSCORE", "idf:{txn}:pending", &member]).parse().expect("pending transaction");
    redis.cmd(&["ZADD", "idf:{txn}:pending", &(score - 3_600_000).to_string(), &member]);
    let abandoned = |t: &str| series(t, "idfabric_login_funnel_total", &[("provider", "rcu"), ("stage", "abandoned")]);
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let n = abandoned(&metrics_of(&ea.admin()).await) + abandoned(&metrics_of(&eb.admin()).await);
        if n >= 1.0 {
            assert_eq!(n, 1.0, "counted by exactly one replica");
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned sign-in was never counted");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop((ga, gb));
}

#[tokio::test]
async fn redis_down_fails_sign_in_closed_with_a_page_and_bearer_traffic_goes_on() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let (ea, _eb) = two_envs(&redis, &echo);
    let gw = Gateway::start(&ea);
    let user = Agent::browser();
    let (r, sid) = user.sign_in(&on(&ea, "wf.test", "/"), "alice").await;
    assert_eq!(r.status, 200);
    let token = ea.mint("rwf", "alice", &[]);
    let bearer = || async {
        client()
            .get(format!("http://127.0.0.1:{}/api", ea.http_port))
            .header(HOST, format!("wf.test:{}", ea.http_port))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(bearer().await.status(), 200);

    redis.stop();

    // A new sign-in: a clear 503 page, no redirect to the provider, no transaction lost silently.
    let fresh = Agent::browser();
    let r = fresh.get(&on(&ea, "wf.test", "/.idfabric/login?rd=%2F")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.is_html());
    assert!(r.body.contains("Sign-in is temporarily unavailable"), "{}", r.body);
    assert!(r.raw_location().is_none());
    // The email path on the mixed route too.
    let r = fresh.post(&on(&ea, "app.test", "/.idfabric/login"), &[("rd", "/"), ("email", "alice@corp.test")]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    // A callback cannot be finished either.
    let r = fresh.get(&on(&ea, "wf.test", "/.idfabric/callback?code=x&state=y")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    // A browser with a session gets a 503 page (fail closed), not the app, once the
    // gateway's cache of session lookups (a second at most) has let it go.
    let with_session = Agent::browser();
    with_session.set("wf.test", SESSION, &sid);
    let (w, url) = (&with_session, &on(&ea, "wf.test", "/"));
    within_session_cache_ttl("a session is refused with the store down", || async move { w.get(url).await.status == 503 }).await;
    let r = with_session.get(&on(&ea, "wf.test", "/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.is_html());

    // Bearer traffic never touches the store.
    let r = bearer().await;
    assert_eq!(r.status(), 200);
    let h = echo_headers(r).await;
    assert_eq!(h["x-identity-provider"], "rwf");
    assert!(gw.log().contains("session store unavailable"), "a log line says why");
}
