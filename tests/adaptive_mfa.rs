//! Adaptive MFA for customers (`require: { mfa: adaptive }`, policy `risk: low`)
//! through the real binary: the dev provider signs customers in without MFA, or with it
//! on a step-up, and idfabric asks for the step-up only when one of its own risk
//! signals fires — a first-seen device, a changed client network (behind a trusted
//! proxy, by its `X-Forwarded-For`), a sensitive method or path, many recent refusals.
//! Each signal is counted (`idfabric_risk_signals_total`, `idfabric_risk_stepups_total`)
//! and named on the request's audit line. Workforce routes keep mandatory MFA.
//!
//! Every test signs in its own customer: the refusal counter is per subject and the
//! gateway is shared.

use crate::common;
use common::agent::*;
use common::*;
use serde_json::Value;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The device cookie's name on plain HTTP.
const DEVICE: &str = "idfabric_device";

struct Fixture {
    env: TestEnv,
    _echo: Echo,
    _gw: SharedGateway,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

fn customers(names: &[&str]) -> String {
    names.iter().map(|n| format!("  - {{ name: {n}, email: {n}@shop.example, email_verified: true }}\n")).collect()
}

impl Fixture {
    fn start() -> Fixture {
        let echo = Echo::start();
        let env = TestEnv::new();
        env.write_dev_provider(
            "cu",
            "customer",
            "auth0",
            "dev-idp-customer.pem",
            &format!(
                "display_name: Shop account\nclient_id: cu-client\naudiences: [https://api.shop.test]\nusers:\n{}  - {{ name: maya, email: maya@shop.example, mfa: true }}\n",
                customers(&["ann", "ben", "cora", "dan", "eve", "fay", "gus", "hal", "ivy"])
            ),
        );
        env.write_wf_provider(
            "  - { name: alice, email: alice@corp.test, email_verified: true, groups: [staff], mfa: true }\n\
             \x20 - { name: bob, email: bob@corp.test, email_verified: true, groups: [staff] }\n",
        );
        let e = echo.addr();
        let routes = format!(
            "  - name: shop\n    match: {{ host: shop.test }}\n    auth: session\n    upstream: [{e}]\n    providers: [cu]\n\
             \x20   require: {{ population: customer, mfa: adaptive }}\n\
             \x20   sensitive: {{ methods: [POST, DELETE], paths: [\"/account/**\"] }}\n\
             \x20 - name: shop-admin\n    match: {{ host: shop.test, path_prefix: /admin }}\n    auth: session\n    upstream: [{e}]\n    providers: [cu]\n\
             \x20   require: {{ groups_any: [shop-admins] }}\n\
             \x20 - name: lang\n    match: {{ host: lang.test }}\n    auth: session\n    upstream: [{e}]\n    providers: [cu]\n\
             \x20   policy: {{ allow: [{{ risk: low }}] }}\n\
             \x20 - name: api\n    match: {{ host: api.test }}\n    auth: bearer\n    upstream: [{e}]\n    require: {{ mfa: adaptive }}\n\
             \x20 - name: staff\n    match: {{ host: staff.test }}\n    auth: bearer\n    upstream: [{e}]\n    require: {{ population: workforce, mfa: true }}\n\
             server: {{ trusted_proxies: [127.0.0.1/32] }}\n\
             audit: {{ output: audit.log }}\n"
        );
        env.write_routes(&["cu", "wf"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, _echo: echo, _gw: gw }
    }
}

/// `http://{host}:{proxy port}{path}` on the shared gateway.
fn at(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", fx().env.http_port)
}

async fn metrics() -> String {
    scrape_metrics(&fx().env).await
}

fn signals(text: &str, signal: &str) -> f64 {
    metric_value(text, &format!("idfabric_risk_signals_total{{signal=\"{signal}\"}}"))
}

fn stepups(text: &str, signal: &str) -> f64 {
    metric_value(text, &format!("idfabric_risk_stepups_total{{signal=\"{signal}\"}}"))
}

/// The audit line of the response's request, waiting up to 5 s for it.
fn audit_line(r: &Resp) -> Value {
    let id = r.header("x-request-id").expect("every response carries X-Request-Id");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(fx().env.path().join("audit.log")).unwrap_or_default();
        if let Some(line) = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["request_id"] == id) {
            return line;
        }
        assert!(Instant::now() < deadline, "no audit line for {id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts `r` is the step-up: a redirect to sign-in with the step-up parameters,
/// back to `rd`. Returns the sign-in URL.
fn is_step_up(r: &Resp, rd: &str) -> url::Url {
    let step = r.redirect();
    assert_eq!(step.path(), "/.idfabric/login", "{}", r.body);
    let q = query_of(&step);
    assert_eq!((q["step_up"].as_str(), q["provider"].as_str(), q["rd"].as_str()), ("1", "cu", rd));
    step
}

/// A GET from `ip` as the trusted proxy (127.0.0.1) reports it.
async fn get_from(b: &Agent, url: &str, ip: &str) -> Resp {
    b.send("GET", url, None, &[("x-forwarded-for", ip)]).await
}

/// Completes the step-up at `step` (a sign-in URL) as `user`, the callback arriving
/// from `ip` (`None`: the proxy itself); returns the page at `rd` afterwards.
async fn step_up(b: &Agent, step: &url::Url, user: &str, rd: &str, ip: Option<&str>) -> Resp {
    let authz = b.get(step.as_str()).await.redirect();
    assert!(query_of(&authz).contains_key("acr_values"), "the provider is asked for MFA: {authz}");
    let callback = b.pick_user(&authz, user).await;
    let extra: Vec<(&str, &str)> = ip.map(|ip| vec![("x-forwarded-for", ip)]).unwrap_or_default();
    let back = b.send("GET", callback.as_str(), None, &extra).await;
    let device = back.set_cookie(DEVICE).expect("an MFA sign-in remembers the device");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", &format!("Max-Age={}", 180 * 24 * 3600)] {
        assert!(device.contains(attr), "{attr} in {device}");
    }
    assert!(!device.contains(user), "the subject is not in the cookie: {device}");
    assert_eq!(back.redirect().path(), rd.split('?').next().unwrap());
    b.send("GET", back.location().as_str(), None, &extra).await
}

/// A first visit as `user` on shop.test: sign-in without MFA, the step-up `new_device`
/// asks for, then a second factor; the browser keeps the device cookie. Then the session
/// is dropped (the device cookie stays) and `user` signs in again without MFA, which
/// the remembered device lets through. Returns the page of that second sign-in.
async fn remembered(b: &Agent, user: &str) -> Resp {
    let (first, _) = b.sign_in(&at("shop.test", "/orders"), user).await;
    let step = is_step_up(&first, "/orders");
    let done = step_up(b, &step, user, "/orders", None).await;
    assert_eq!(done.upstream()["x-identity-mfa"], "true");
    assert!(b.cookie("shop.test", DEVICE).is_some());
    b.clear("shop.test", SESSION);
    let (again, _) = b.sign_in(&at("shop.test", "/orders"), user).await;
    again
}

// --- new_device -------------------------------------------------------------------------

#[tokio::test]
async fn a_first_seen_device_steps_up_and_once_remembered_a_customer_is_admitted_without_mfa() {
    let before = metrics().await;
    let b = Agent::browser();
    let (first, sid) = b.sign_in(&at("shop.test", "/orders?id=1"), "ann").await;
    let step = is_step_up(&first, "/orders?id=1");
    let line = audit_line(&first);
    assert_eq!(line["reason"], "mfa_required", "{line}");
    assert_eq!(line["risk_signals"], serde_json::json!(["new_device"]), "{line}");
    // An API client with that session: the step-up challenge as problem+json.
    let api = Agent::api();
    api.set("shop.test", SESSION, &sid);
    let r = api.get(&at("shop.test", "/orders")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["reason"], "mfa_required");

    let done = step_up(&b, &step, "ann", "/orders?id=1", None).await;
    assert_eq!(done.upstream()["x-identity-mfa"], "true");
    let line = audit_line(&done);
    assert_eq!(line["decision"], "allow");
    assert!(line.get("risk_signals").is_none(), "nothing fired after MFA on this device: {line}");

    // A new sign-in without MFA on the remembered device, from the same network.
    b.clear("shop.test", SESSION);
    let (again, _) = b.sign_in(&at("shop.test", "/orders"), "ann").await;
    let h = again.upstream();
    assert_eq!(h["x-identity-mfa"], "false", "admitted without a second factor");
    let sent = h.get("cookie").and_then(Value::as_str).unwrap_or_default();
    assert!(!sent.contains(DEVICE), "the upstream never sees the device cookie: {sent}");
    assert_eq!(b.get(&at("shop.test", "/orders/2")).await.status, 200);
    assert!(audit_line(&again).get("risk_signals").is_none());

    let after = metrics().await;
    assert!(signals(&after, "new_device") >= signals(&before, "new_device") + 2.0, "the browser and the API call");
    assert!(stepups(&after, "new_device") >= stepups(&before, "new_device") + 2.0);
}

#[tokio::test]
async fn a_device_cookie_of_another_subject_or_altered_does_not_count() {
    let b = Agent::browser();
    let page = remembered(&b, "ben").await;
    assert_eq!(page.upstream()["x-identity-mfa"], "false");
    let bens = b.cookie("shop.test", DEVICE).unwrap();

    // Ben's cookie in a browser where Cora signs in: not Cora's device.
    let other = Agent::browser();
    other.set("shop.test", DEVICE, &bens);
    let (r, _) = other.sign_in(&at("shop.test", "/"), "cora").await;
    is_step_up(&r, "/");
    assert_eq!(audit_line(&r)["risk_signals"], serde_json::json!(["new_device"]));

    // Altered: the issue time, the device id or the MAC changed, or garbage.
    let (issued, rest) = bens.split_once('.').unwrap();
    let (device, mac) = rest.split_once('.').unwrap();
    let mut flipped = mac.to_string();
    let last = if flipped.ends_with('A') { 'B' } else { 'A' };
    flipped.pop();
    flipped.push(last);
    let forged = [
        format!("{}.{device}.{mac}", issued.parse::<i64>().unwrap() + 1),
        format!("{issued}.AAAAAAAAAAAAAAAAAAAAAA.{mac}"),
        format!("{issued}.{device}.{flipped}"),
        "1.2.3".to_string(),
    ];
    for f in forged {
        let c = Agent::browser();
        c.set("shop.test", DEVICE, &f);
        let (r, _) = c.sign_in(&at("shop.test", "/"), "ben").await;
        is_step_up(&r, "/");
    }
    // Ben's own cookie, untouched, still works for Ben.
    let own = Agent::browser();
    own.set("shop.test", DEVICE, &bens);
    let (r, _) = own.sign_in(&at("shop.test", "/"), "ben").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// --- network_change ---------------------------------------------------------------------

#[tokio::test]
async fn a_changed_client_network_steps_up_and_the_new_session_begins_there() {
    let before = metrics().await;
    let b = Agent::browser();
    let page = remembered(&b, "dan").await;
    assert_eq!(page.status, 200, "signed in from the proxy's own address (127.0.0.1)");
    // The same /24, as the trusted proxy reports it: nothing fires.
    assert_eq!(get_from(&b, &at("shop.test", "/orders"), "127.0.0.77").await.status, 200);
    // Another network: step-up, for a browser and for an API client with the session.
    let moved = get_from(&b, &at("shop.test", "/orders"), "198.51.100.7").await;
    let step = is_step_up(&moved, "/orders");
    assert_eq!(audit_line(&moved)["risk_signals"], serde_json::json!(["network_change"]));
    let api = Agent::api();
    api.set("shop.test", SESSION, &b.cookie("shop.test", SESSION).unwrap());
    api.set("shop.test", DEVICE, &b.cookie("shop.test", DEVICE).unwrap());
    let r = api.send("GET", &at("shop.test", "/orders"), None, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("mfa_required")));
    // Without a forwarded address the client is the proxy itself: the first network.
    assert_eq!(b.get(&at("shop.test", "/orders")).await.status, 200);

    // The step-up from the new network makes a session that begins there.
    let done = step_up(&b, &step, "dan", "/orders", Some("198.51.100.7")).await;
    assert_eq!(done.upstream()["x-identity-mfa"], "true");
    assert_eq!(get_from(&b, &at("shop.test", "/orders"), "198.51.100.200").await.status, 200);
    // Back on the first network, that is a change again.
    let back = get_from(&b, &at("shop.test", "/orders"), "127.0.0.1").await;
    is_step_up(&back, "/orders");

    // IPv6 clients compare by /48: a step-up from one, then a move inside its /48 is not a
    // change, a move outside it is.
    let v6 = get_from(&b, &at("shop.test", "/orders"), "2001:db8:aa:1::7").await;
    let step = is_step_up(&v6, "/orders");
    step_up(&b, &step, "dan", "/orders", Some("2001:db8:aa:1::7")).await;
    assert_eq!(get_from(&b, &at("shop.test", "/orders"), "2001:db8:aa:ffff::2").await.status, 200);
    is_step_up(&get_from(&b, &at("shop.test", "/orders"), "2001:db8:ab::2").await, "/orders");
    let after = metrics().await;
    assert!(signals(&after, "network_change") >= signals(&before, "network_change") + 3.0);
    assert!(stepups(&after, "network_change") >= stepups(&before, "network_change") + 3.0);
}

// --- sensitive_request ------------------------------------------------------------------

#[tokio::test]
async fn a_sensitive_method_or_path_steps_up_until_the_session_has_mfa() {
    let before = metrics().await;
    let b = Agent::browser();
    let page = remembered(&b, "eve").await;
    assert_eq!(page.status, 200);
    let api = Agent::api();
    api.set("shop.test", SESSION, &b.cookie("shop.test", SESSION).unwrap());
    api.set("shop.test", DEVICE, &b.cookie("shop.test", DEVICE).unwrap());
    assert_eq!(api.get(&at("shop.test", "/orders")).await.status, 200, "reading is not sensitive");
    for (method, path) in [("POST", "/orders"), ("DELETE", "/orders/1"), ("GET", "/account/email"), ("GET", "/Account/Email")] {
        let r = api.send(method, &at("shop.test", path), if method == "POST" { Some(&[("x", "1")]) } else { None }, &[]).await;
        assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("mfa_required")), "{method} {path}");
        assert_eq!(audit_line(&r)["risk_signals"], serde_json::json!(["sensitive_request"]), "{method} {path}");
    }
    // PUT is not listed on this route.
    assert_eq!(api.send("PUT", &at("shop.test", "/orders/1"), None, &[]).await.status, 200);
    // A browser is sent to the step-up; after it the session's MFA covers the signal.
    let r = b.post(&at("shop.test", "/orders"), &[("x", "1")]).await;
    let step = is_step_up(&r, "/orders");
    step_up(&b, &step, "eve", "/orders", None).await;
    let r = b.post(&at("shop.test", "/orders"), &[("x", "1")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(audit_line(&r)["risk_signals"], serde_json::json!(["sensitive_request"]), "fired, covered, admitted");
    let after = metrics().await;
    assert!(signals(&after, "sensitive_request") >= signals(&before, "sensitive_request") + 6.0);
    assert!(stepups(&after, "sensitive_request") >= stepups(&before, "sensitive_request") + 5.0);
}

// --- forward-auth ----------------------------------------------------------------------

#[tokio::test]
async fn a_forward_auth_check_sees_the_same_signals_for_the_original_client() {
    let b = Agent::browser();
    assert_eq!(remembered(&b, "ivy").await.status, 200);
    let api = Agent::api();
    api.set("shop.test", SESSION, &b.cookie("shop.test", SESSION).unwrap());
    api.set("shop.test", DEVICE, &b.cookie("shop.test", DEVICE).unwrap());
    let check = at("shop.test", "/.idfabric/auth");
    let original = at("shop.test", "/orders");
    let ask = |ip: &'static str, method: &'static str| {
        let original = original.clone();
        let api = &api;
        let check = check.clone();
        async move {
            api.send("GET", &check, None, &[("x-original-url", original.as_str()), ("x-original-method", method), ("x-forwarded-for", ip)])
                .await
        }
    };
    let r = ask("127.0.0.9", "GET").await;
    assert_eq!(r.status, 200, "same network, remembered device: {}", r.body);
    assert_eq!(r.header("x-identity-mfa").as_deref(), Some("false"));
    let r = ask("203.0.113.9", "GET").await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("mfa_required")), "the original client moved");
    let line = audit_line(&r);
    assert_eq!((line["kind"].as_str(), line["risk_signals"].clone()), (Some("forward_auth"), serde_json::json!(["network_change"])));
    let r = ask("127.0.0.9", "DELETE").await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("mfa_required")), "the original method is sensitive");
}

// --- recent_refusals --------------------------------------------------------------------

#[tokio::test]
async fn many_recent_refusals_step_up_and_mfa_after_them_answers_them() {
    let before = metrics().await;
    let b = Agent::browser();
    assert_eq!(remembered(&b, "fay").await.status, 200);
    for i in 0..5 {
        let r = b.get(&at("shop.test", &format!("/admin/{i}"))).await;
        assert_eq!(r.status, 403, "not a shop admin: {}", r.body);
    }
    let r = b.get(&at("shop.test", "/orders")).await;
    let step = is_step_up(&r, "/orders");
    assert_eq!(audit_line(&r)["risk_signals"], serde_json::json!(["recent_refusals"]));
    let done = step_up(&b, &step, "fay", "/orders", None).await;
    assert_eq!(done.status, 200);
    assert!(audit_line(&done).get("risk_signals").is_none(), "the MFA sign-in forgave them");
    let after = metrics().await;
    assert!(stepups(&after, "recent_refusals") > stepups(&before, "recent_refusals"));
}

// --- risk: low in a policy --------------------------------------------------------------

#[tokio::test]
async fn a_risk_low_policy_rule_steps_up_like_adaptive_mfa() {
    let b = Agent::browser();
    let (r, _) = b.sign_in(&at("lang.test", "/"), "gus").await;
    let step = r.redirect();
    assert_eq!(query_of(&step)["step_up"], "1", "new_device on a `risk: low` route");
    assert_eq!(audit_line(&r)["risk_signals"], serde_json::json!(["new_device"]));
    let authz = b.get(step.as_str()).await.redirect();
    let cb = b.pick_user(&authz, "gus").await;
    let (done, _) = b.finish(&cb, &at("lang.test", "/")).await;
    assert_eq!(done.upstream()["x-identity-mfa"], "true");
}

// --- bearer tokens and the workforce ----------------------------------------------------

#[tokio::test]
async fn the_workforce_keeps_mandatory_mfa_and_customer_bearers_need_mfa_on_adaptive_routes() {
    let env = &fx().env;
    let api = client();
    let call = |host: &'static str, token: String| {
        let api = api.clone();
        async move {
            api.get(format!("{}/x", env.proxy())).header("host", host).bearer_auth(token).send().await.unwrap()
        }
    };
    let reason = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        (status, body["reason"].as_str().unwrap_or("").to_string())
    };
    // The workforce route with `mfa: true`: unchanged.
    assert_eq!(reason(call("staff.test", env.mint("wf", "bob", &[])).await).await, (401, "mfa_required".into()));
    assert_eq!(call("staff.test", env.mint("wf", "alice", &[])).await.status(), 200);
    // `mfa: adaptive` on a route both populations reach: mandatory for the workforce.
    assert_eq!(reason(call("api.test", env.mint("wf", "bob", &[])).await).await, (401, "mfa_required".into()));
    assert_eq!(call("api.test", env.mint("wf", "alice", &[])).await.status(), 200);
    // A customer's bearer token shows no device: MFA in the token, or a step-up.
    assert_eq!(reason(call("api.test", env.mint("cu", "hal", &[])).await).await, (401, "mfa_required".into()));
    assert_eq!(call("api.test", env.mint("cu", "maya", &[])).await.status(), 200);
}

#[tokio::test]
async fn every_signal_is_exported_from_start() {
    let text = metrics().await;
    for s in ["new_device", "network_change", "sensitive_request", "recent_refusals"] {
        for family in ["idfabric_risk_signals_total", "idfabric_risk_stepups_total"] {
            let series = format!("{family}{{signal=\"{s}\"}} ");
            assert!(text.contains(&series), "{series} in:\n{text}");
        }
    }
}
