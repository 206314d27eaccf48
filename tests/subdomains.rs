//! One sign-in across hosts, against the real binary and the dev provider:
//!
//! - `session.auth_host`: an anonymous browser on `a.test` is sent to the sign-in host
//!   `auth.test`, signs in there (the provider's one redirect URI is auth.test's
//!   callback), and comes back to `a.test` through a one-time code that `a.test` redeems
//!   for its own host-only cookie; `b.test` then gets its session without the provider,
//!   and a step-up asked for on an app host runs on the sign-in host.
//!   A replayed code, a code opened in another browser (login CSRF), a code for another
//!   host and a return address on no route are refused with their reasons. The codes
//!   live in the session store: the flow runs on a real Redis and on memory, and a code
//!   issued by one replica is redeemed (once) by another sharing the Redis.
//! - `session.cookie_domain`: the cookie carries `Domain=`, is `__Secure-` over TLS,
//!   works on a sibling host and is cleared (with its `Domain`) at sign-out; a route
//!   outside the domain is refused at load.
//!
//! Every request goes to 127.0.0.1 with the `Host` its URL names, as the sign-in tests do.

use crate::common;
use common::agent::*;
use common::redis::RedisServer;
use common::*;
use url::Url;

const START: &str = "/.idfabric/session-handoff/start";
const REDEEM: &str = "/.idfabric/session-handoff";

/// A gateway with routes on `a.test`, `b.test` and `vault.a.test` (which requires MFA;
/// one echo app for all), the workforce dev provider (Entra-shaped: it can step up), and
/// `session:` as given.
fn gateway(hosts: [&str; 2], session: &str) -> (TestEnv, Gateway, Echo) {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_wf_provider(
        "  - { name: alice, email: alice@corp.test, email_verified: true, groups: [hr], mfa: true }\n\
         \x20 - { name: mallory, email: mallory@corp.test, groups: [staff], mfa: true }\n\
         \x20 - { name: bob, email: bob@corp.test, groups: [staff], mfa: false }\n",
    );
    let routes = format!(
        "  - name: a\n    match: {{ host: {a} }}\n    upstream: [{up}]\n\
         \x20 - name: b\n    match: {{ host: {b} }}\n    upstream: [{up}]\n\
         \x20 - name: vault\n    match: {{ host: vault.{a} }}\n    upstream: [{up}]\n    require: {{ mfa: true }}\n",
        a = hosts[0],
        b = hosts[1],
        up = echo.addr()
    );
    env.write_routes(&["wf"], &routes);
    let text = std::fs::read_to_string(env.routes_path()).unwrap();
    env.write("routes.yaml", &format!("{text}session: {session}\n"));
    let gw = Gateway::start(&env);
    (env, gw, echo)
}

/// Whether the gateway's log shows `what` within two seconds (the log is read from its
/// stderr by another thread, so a line may arrive just after the response).
fn logged(gw: &Gateway, what: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !gw.log().contains(what) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// From an anonymous request on an app host to the sign-in host's start URL: asserts
/// the app host's own login hop and its binding cookie.
async fn to_start(b: &Agent, app: &str) -> Url {
    let app = Url::parse(app).unwrap();
    let login = b.get(app.as_str()).await.redirect();
    assert_eq!((login.host_str(), login.path()), (app.host_str(), "/.idfabric/login"));
    let r = b.get(login.as_str()).await;
    let start = r.redirect();
    assert_eq!((start.host_str(), start.path()), (Some("auth.test"), START), "to the sign-in host");
    let q = query_of(&start);
    assert_eq!(q["to"], app.as_str(), "the original URL travels along");
    let hx = &q["hx"];
    let bind = r.set_cookie(&format!("idfabric_hx_{}", &hx[..16])).expect("a binding cookie on the app host");
    assert!(bind.contains("HttpOnly") && !bind.contains("Domain"), "{bind}");
    start
}

/// The whole first sign-in through the sign-in host; returns the redeem URL (not yet
/// opened) and the sign-in host's session id.
async fn sign_in_via_auth_host(b: &Agent, app: &str, user: &str) -> (Url, String) {
    let start = to_start(b, app).await;
    let login = b.get(start.as_str()).await.redirect();
    assert_eq!((login.host_str(), login.path()), (Some("auth.test"), "/.idfabric/login"), "no session yet: sign in");
    let authz = b.get(login.as_str()).await.redirect();
    assert!(authz.path().ends_with("/authorize"), "{authz}");
    let redirect_uri = query_of(&authz)["redirect_uri"].clone();
    let port = Url::parse(app).unwrap().port().unwrap();
    assert_eq!(redirect_uri, format!("http://auth.test:{port}/.idfabric/callback"), "one redirect URI for every app");
    let callback = b.pick_user(&authz, user).await;
    let back = b.get(callback.as_str()).await.redirect();
    assert_eq!((back.host_str(), back.path()), (Some("auth.test"), START), "back to the start URL after sign-in");
    let sid = b.cookie("auth.test", SESSION).expect("a session on the sign-in host");
    let redeem = b.get(back.as_str()).await.redirect();
    (redeem, sid)
}

#[tokio::test]
async fn auth_host_signs_in_once_and_hands_sessions_to_each_app_host() {
    let redis = RedisServer::start();
    let (env, gw, _echo) = gateway(["a.test", "b.test"], &format!("{{ store: \"{}\", auth_host: auth.test }}", redis.url()));
    let port = env.http_port;
    let app_a = format!("http://a.test:{port}/hello?x=1");
    let app_b = format!("http://b.test:{port}/there");
    let b = Agent::browser();

    let (redeem, sid) = sign_in_via_auth_host(&b, &app_a, "alice").await;
    assert_eq!((redeem.host_str(), redeem.path()), (Some("a.test"), REDEEM));
    let r = b.get(redeem.as_str()).await;
    assert_eq!(r.redirect().as_str(), app_a, "on to the page that asked");
    let cookie = r.set_cookie(SESSION).expect("a.test's own session cookie");
    assert!(!cookie.contains("Domain"), "host-only: {cookie}");
    assert_eq!(b.cookie("a.test", SESSION).as_deref(), Some(sid.as_str()), "the one session");
    assert!(r.set_cookies().iter().any(|c| c.starts_with("idfabric_hx_") && c.contains("Max-Age=0")), "binding cleared");
    let page = b.get(&app_a).await;
    assert_eq!(decoded(&page.upstream()["x-identity-email"]), "alice@corp.test");

    // b.test: to the sign-in host and straight back, no provider in between.
    let start = to_start(&b, &app_b).await;
    let redeem_b = b.get(start.as_str()).await.redirect();
    assert_eq!((redeem_b.host_str(), redeem_b.path()), (Some("b.test"), REDEEM), "already signed in: a code at once");
    assert_eq!(b.get(redeem_b.as_str()).await.redirect().as_str(), app_b);
    assert_eq!(decoded(&b.get(&app_b).await.upstream()["x-identity-email"]), "alice@corp.test");

    // A code works once.
    let again = b.get(redeem.as_str()).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.is_html() && again.body.contains("already used"), "{}", again.body);
    assert!(logged(&gw, "handoff_replayed"), "{}", gw.log());

    let text = scrape_metrics(&env).await;
    assert_eq!(metric_value(&text, "idfabric_session_handoffs_total{result=\"redeemed\"}"), 2.0);

    // Signing out on b.test ends the one session: a.test is anonymous again.
    b.log_out(&format!("http://b.test:{port}/.idfabric/logout")).await;
    let anon = b.get(&app_a).await.redirect();
    assert_eq!(anon.path(), "/.idfabric/login", "the shared session ended");
}

#[tokio::test]
async fn a_step_up_on_an_app_host_runs_on_the_sign_in_host_and_hands_over_the_new_session() {
    let (env, _gw, _echo) = gateway(["a.test", "b.test"], "{ auth_host: auth.test }");
    let port = env.http_port;
    let vault = format!("http://vault.a.test:{port}/safe");
    let b = Agent::browser();
    // bob signs in without a second factor; the vault asks for one.
    let (redeem, first) = sign_in_via_auth_host(&b, &vault, "bob").await;
    assert_eq!(b.get(redeem.as_str()).await.redirect().as_str(), vault);
    let step = b.get(&vault).await.redirect();
    assert_eq!((step.host_str(), step.path()), (Some("vault.a.test"), "/.idfabric/login"));
    assert_eq!(query_of(&step)["step_up"], "1");
    // The app host hands the step-up to the sign-in host, which asks the provider.
    let start = b.get(step.as_str()).await.redirect();
    assert_eq!((start.host_str(), start.path()), (Some("auth.test"), START));
    assert_eq!((query_of(&start)["step_up"].as_str(), query_of(&start)["provider"].as_str()), ("1", "wf"));
    let login = b.get(start.as_str()).await.redirect();
    assert_eq!((login.host_str(), login.path()), (Some("auth.test"), "/.idfabric/login"), "no second factor yet");
    let authz = b.get(login.as_str()).await.redirect();
    let claims = query_of(&authz)["claims"].clone();
    assert!(claims.contains("acrs"), "a claims challenge for the auth context: {claims}");
    let callback = b.pick_user(&authz, "bob").await;
    let back = b.get(callback.as_str()).await.redirect();
    assert_eq!((back.host_str(), back.path()), (Some("auth.test"), START));
    let second = b.cookie("auth.test", SESSION).unwrap();
    assert_ne!(first, second, "the step-up made a new session");
    let redeem = b.get(back.as_str()).await.redirect();
    assert_eq!(b.get(redeem.as_str()).await.redirect().as_str(), vault);
    let page = b.get(&vault).await;
    assert_eq!(page.upstream()["x-identity-mfa"], "true", "{}", page.body);
    assert_eq!(b.cookie("vault.a.test", SESSION), Some(second));
}

#[tokio::test]
async fn a_code_issued_by_one_replica_is_redeemed_once_by_another() {
    // Two replicas on one Redis, as behind a load balancer: the code lives in the store.
    let redis = RedisServer::start();
    let session = format!("{{ store: \"{}\", key_file: certs/session.key, auth_host: auth.test }}", redis.url());
    let (one, _gw1, _echo) = gateway(["a.test", "b.test"], &session);
    let two = TestEnv::new();
    for dir in ["certs", "providers"] {
        for e in std::fs::read_dir(one.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), two.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    let routes = std::fs::read_to_string(one.routes_path())
        .unwrap()
        .replace(&format!("127.0.0.1:{}", one.http_port), &format!("127.0.0.1:{}", two.http_port))
        .replace(&format!("127.0.0.1:{}", one.admin_port), &format!("127.0.0.1:{}", two.admin_port));
    two.write("routes.yaml", &routes);
    let _gw2 = Gateway::start(&two);

    let b = Agent::browser();
    let (redeem, _) = sign_in_via_auth_host(&b, &format!("http://a.test:{}/x", one.http_port), "alice").await;
    let code = query_of(&redeem)["code"].clone();
    let on_two = format!("http://a.test:{}{REDEEM}?code={code}", two.http_port);
    let r = b.get(&on_two).await;
    assert_eq!(r.redirect().path(), "/x", "redeemed by the other replica: {}", r.body);
    let page = b.get(&format!("http://a.test:{}/x", two.http_port)).await;
    assert_eq!(decoded(&page.upstream()["x-identity-email"]), "alice@corp.test");
    let again = b.get(redeem.as_str()).await;
    assert_eq!(again.status, 400, "used up on every replica: {}", again.body);
    assert!(again.body.contains("already used"), "{}", again.body);
}

#[tokio::test]
async fn handoff_codes_are_bound_to_their_browser_and_host() {
    let (env, gw, _echo) = gateway(["a.test", "b.test"], "{ auth_host: auth.test }");
    let port = env.http_port;
    let app_a = format!("http://a.test:{port}/");

    // Login CSRF: mallory's code, opened in alice's browser, signs nobody in.
    let mallory = Agent::browser();
    let (code_url, _) = sign_in_via_auth_host(&mallory, &app_a, "mallory").await;
    let victim = Agent::browser();
    let r = victim.get(code_url.as_str()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("started elsewhere"), "{}", r.body);
    assert!(victim.cookie("a.test", SESSION).is_none(), "no session planted");
    assert!(logged(&gw, "handoff_not_bound"), "{}", gw.log());
    // It was used up by that attempt.
    let r = mallory.get(code_url.as_str()).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // A code for a.test redeemed on b.test.
    let start = to_start(&mallory, &app_a).await;
    let code_url = mallory.get(start.as_str()).await.redirect();
    let code = query_of(&code_url)["code"].clone();
    let r = mallory.get(&format!("http://b.test:{port}{REDEEM}?code={code}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("another application"), "{}", r.body);
    assert!(logged(&gw, "handoff_host_mismatch"), "{}", gw.log());
    assert!(mallory.cookie("b.test", SESSION).is_none());

    // Codes that never existed.
    let r = mallory.get(&format!("http://a.test:{port}{REDEEM}?code=nonsense")).await;
    assert_eq!(r.status, 400);
    assert!(logged(&gw, "handoff_invalid"), "{}", gw.log());

    // No open redirect: the return address must be on a route host, with this scheme and port.
    let hx = "0a".repeat(32);
    for to in [
        format!("http://evil.test:{port}/"),
        format!("https://a.test:{port}/"),
        format!("http://a.test:{}/", port + 1),
        format!("http://user@a.test:{port}/"),
        "javascript:alert(1)".to_string(),
    ] {
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("to", &to).append_pair("hx", &hx).finish();
        let r = mallory.get(&format!("http://auth.test:{port}{START}?{q}")).await;
        assert_eq!(r.status, 400, "{to}: {}", r.body);
        assert!(r.raw_location().is_none());
    }
    assert!(logged(&gw, "handoff_target_not_allowed"), "{}", gw.log());
    // Without the app host's binding digest nothing is issued.
    let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("to", &app_a).finish();
    let r = mallory.get(&format!("http://auth.test:{port}{START}?{q}")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // The start URL is the sign-in host's alone.
    let r = mallory.get(&format!("http://a.test:{port}{START}?to=x")).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Every outcome is counted by its reason.
    let text = scrape_metrics(&env).await;
    for (result, at_least) in [
        ("issued", 2.0),
        ("handoff_not_bound", 2.0),
        ("handoff_replayed", 1.0),
        ("handoff_host_mismatch", 1.0),
        ("handoff_invalid", 1.0),
        ("handoff_target_not_allowed", 5.0),
    ] {
        let n = metric_value(&text, &format!("idfabric_session_handoffs_total{{result=\"{result}\"}}"));
        assert!(n >= at_least, "{result}: {n}");
    }
}

#[tokio::test]
async fn cookie_domain_shares_one_cookie_and_clears_it_at_logout() {
    let (env, _gw, _echo) = gateway(["a.sso.test", "b.sso.test"], "{ cookie_domain: .SSO.test }");
    let port = env.http_port;
    let b = Agent::browser();
    let authz = b.to_provider(&format!("http://a.sso.test:{port}/")).await;
    let callback = b.pick_user(&authz, "alice").await;
    let r = b.get(callback.as_str()).await;
    let cookie = r.set_cookie(SESSION).expect("session cookie");
    assert!(cookie.contains("; Domain=sso.test"), "{cookie}");
    let sid = b.cookie("a.sso.test", SESSION).unwrap();

    // The browser sends a Domain cookie to the sibling host too.
    b.set("b.sso.test", SESSION, &sid);
    assert_eq!(decoded(&b.get(&format!("http://b.sso.test:{port}/")).await.upstream()["x-identity-email"]), "alice@corp.test");

    let out = b.log_out(&format!("http://b.sso.test:{port}/.idfabric/logout")).await;
    let cleared: Vec<String> = out.set_cookies().into_iter().filter(|c| c.starts_with(&format!("{SESSION}=;"))).collect();
    assert!(
        cleared.iter().any(|c| c.contains("Domain=sso.test") && c.contains("Max-Age=0")),
        "the Domain cookie is cleared with its Domain: {cleared:?}"
    );
    b.set("a.sso.test", SESSION, &sid);
    assert_eq!(b.get(&format!("http://a.sso.test:{port}/")).await.redirect().path(), "/.idfabric/login", "session ended");
}

#[tokio::test]
async fn cookie_domain_over_tls_is_secure_prefixed() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice, email: alice@corp.test, groups: [hr], mfa: true }\n");
    let tls = free_port();
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{http}, https: {{ addr: 127.0.0.1:{tls}, cert: certs/dev-tls.crt, key: certs/dev-tls.key }} }}\n\
             {admin}\nproviders: [wf]\nsession: {{ cookie_domain: sso.test }}\n\
             routes:\n  - name: a\n    match: {{ host: a.sso.test }}\n    upstream: [{up}]\n",
            http = env.http_port,
            admin = env.admin_line(),
            up = echo.addr()
        ),
    );
    let _gw = Gateway::start(&env);
    let b = Agent::browser_with(None);
    let authz = b.to_provider(&format!("https://a.sso.test:{tls}/")).await;
    let callback = b.pick_user(&authz, "alice").await;
    let r = b.get(callback.as_str()).await;
    let name = format!("__Secure-{SESSION}");
    let cookie = r.set_cookie(&name).unwrap_or_else(|| panic!("{name}: {:?}", r.set_cookies()));
    assert!(cookie.contains("; Secure") && cookie.contains("; Domain=sso.test"), "{cookie}");
    assert!(r.set_cookie(&format!("__Host-{SESSION}")).is_none(), "a Domain cookie cannot be __Host-");
    let page = b.get(&format!("https://a.sso.test:{tls}/")).await;
    assert_eq!(decoded(&page.upstream()["x-identity-email"]), "alice@corp.test");
}

#[test]
fn sign_in_hosts_are_checked_at_load() {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice, email: alice@corp.test }\n");
    let routes = "  - name: a\n    match: { host: a.sso.test }\n    upstream: [127.0.0.1:9]\n\
                  \x20 - name: other\n    match: { host: app.other.test }\n    upstream: [127.0.0.1:9]\n\
                  \x20 - name: api\n    match: { host: api.other.test }\n    auth: bearer\n    upstream: [127.0.0.1:9]\n";
    env.write_routes(&["wf"], routes);
    let base = std::fs::read_to_string(env.routes_path()).unwrap();
    let check = |session: &str| {
        env.write("routes.yaml", &format!("{base}session: {session}\n"));
        env.run(&["check", "--offline", "--config", "routes.yaml"])
    };
    let (code, out, err) = check("{ cookie_domain: sso.test }");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("session.cookie_domain") && err.contains("`other`") && err.contains("app.other.test"), "{err}");
    assert!(!err.contains("`api`"), "a bearer route uses no cookie: {err}");
    let (code, _, err) = check("{ cookie_domain: test }");
    assert_eq!(code, 1);
    assert!(err.contains("two labels"), "{err}");
    let (code, _, err) = check("{ cookie_domain: sso.test, auth_host: auth.sso.test }");
    assert_eq!(code, 1);
    assert!(err.contains("not both"), "{err}");
    let (code, _, err) = check("{ auth_host: \"https://auth.test/\" }");
    assert_eq!(code, 1);
    assert!(err.contains("session.auth_host"), "{err}");
    let (code, out, err) = check("{ auth_host: auth.other.test }");
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn handoff_starts_are_rate_limited_per_client() {
    // Each start may write a code into the store: it draws on the client's sign-in budget.
    let (env, _gw, _echo) = gateway(["a.test", "b.test"], "{ auth_host: auth.test, login_limits: { rate_per_minute: 2 } }");
    let port = env.http_port;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("to", &format!("http://a.test:{port}/"))
        .append_pair("hx", &"0a".repeat(32))
        .finish();
    let b = Agent::browser();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(b.get(&format!("http://auth.test:{port}{START}?{q}")).await.status);
    }
    assert_eq!(statuses, [302, 302, 429], "two starts, then the limit");
    let text = scrape_metrics(&env).await;
    assert_eq!(metric_value(&text, "idfabric_sign_in_rate_limited_total{endpoint=\"handoff\"}"), 1.0);
}
