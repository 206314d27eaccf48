//! Continuous access: OpenID Connect Back-Channel Logout against the real binary.
//!
//! - Two replicas on one real Redis: a logout token posted to replica A ends the
//!   user's session and refuses the user's bearer tokens on replica B within a
//!   second; another user is untouched; a token issued after the logout passes.
//! - Bad logout tokens (unsigned, wrong key, replayed, with a nonce, without the
//!   event, oversized) get the spec's 400 JSON and change nothing.
//! - Node `oidc-provider` (the OP of `tests/interop.rs`, started the same way) sends a
//!   real logout token when the user ends the session at the OP.
//! - The admin revocation on the memory store.
//!
//! Except for `oidc-provider`'s, the logout tokens are signed with the dev provider's
//! real key (the one its JWKS publishes), as a provider signs them.

use crate::common;
use common::agent::*;
use common::redis::RedisServer;
use common::*;
use common::fixtures::now;
use idfabric::keys::Signer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use url::Url;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// An Auth0-shaped dev provider: its subject is the token's `sub`, as in the logout token.
const WF: &str = "id: rwf\nkind: dev\npopulation: workforce\nshape: auth0\nissuer: {ISSUER}\nsigning_key: certs/dev-idp-workforce.pem\n\
     client_id: wf-client\naudiences: [api://idfabric]\nusers:\n  - { name: alice, email: alice@corp.test, groups: [staff], mfa: true }\n\
     \x20 - { name: bob, email: bob@corp.test, groups: [staff], mfa: true }\n";

fn routes(env: &TestEnv, redis: &str, echo: &str) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [rwf]\n\
         session: {{ store: \"{redis}\", cookie: idfabric_session, key_file: certs/session.key }}\n\
         routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{echo}]\n",
        http = env.http_port,
        admin = env.admin_line(),
    )
}

/// Replica A (whose dev provider issues the tokens) and B with the same keys and Redis.
fn replicas(redis: &RedisServer, echo: &Echo) -> (TestEnv, TestEnv) {
    let a = TestEnv::new();
    a.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &a.dev_issuer("rwf")));
    a.write("routes.yaml", &routes(&a, &redis.url(), &echo.addr()));
    let b = TestEnv::new();
    for dir in ["certs", "providers"] {
        std::fs::create_dir_all(b.path().join(dir)).unwrap();
        for e in std::fs::read_dir(a.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), b.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    b.write("routes.yaml", &routes(&b, &redis.url(), &echo.addr()));
    (a, b)
}

fn on(env: &TestEnv, path: &str) -> String {
    format!("http://wf.test:{}{path}", env.http_port)
}

fn dev_key(env: &TestEnv) -> Signer {
    Signer::load(&env.path().join("certs/dev-idp-workforce.pem")).unwrap()
}

/// A well-formed logout token's claims for `sub` (and `sid`).
fn logout_claims(env: &TestEnv, sub: Option<&str>, sid: Option<&str>) -> Value {
    let mut c = json!({
        "iss": env.dev_issuer("rwf"),
        "aud": "wf-client",
        "iat": now(),
        "exp": now() + 120,
        "jti": format!("jti-{}", rand_hex()),
        "events": { EVENT: {} },
    });
    if let Some(s) = sub {
        c["sub"] = json!(s);
    }
    if let Some(s) = sid {
        c["sid"] = json!(s);
    }
    c
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn post_logout(env: &TestEnv, body: &str) -> (u16, Option<String>, String) {
    let r = client()
        .post(format!("{}/.idfabric/backchannel-logout", env.proxy()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cc = r.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, cc, r.text().await.unwrap())
}

fn form(token: &str) -> String {
    format!("logout_token={}", url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>())
}

async fn bearer(env: &TestEnv, token: &str) -> Resp {
    Agent::api().send("GET", &on(env, "/"), None, &[("authorization", &format!("Bearer {token}"))]).await
}

async fn reason_of(r: Resp) -> (u16, String) {
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, body["reason"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backchannel_logout_on_one_replica_ends_access_on_the_other_within_a_second() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (ea, eb) = replicas(&redis, &echo);
    let ga = Gateway::start(&ea);
    let gb = Gateway::start(&eb);

    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&ea, "/"), "alice").await;
    let sub = decoded(&r.upstream()["x-identity-sub"]);
    let subject = sub.strip_prefix("rwf:").expect("a global sub").to_string();
    let bob = Agent::browser();
    bob.sign_in(&on(&ea, "/"), "bob").await;
    assert_eq!(alice.get(&on(&eb, "/")).await.status, 200, "the session works on B");

    let alice_token = ea.mint("rwf", "alice", &[]);
    let bob_token = ea.mint("rwf", "bob", &[]);
    for env in [&ea, &eb] {
        assert_eq!(bearer(env, &alice_token).await.status, 200, "{}", ga.log());
    }

    // The provider tells replica A that alice signed out (sub only: every session).
    let token = dev_key(&ea).sign_jwt("logout+jwt", &logout_claims(&ea, Some(&subject), None));
    let sent = Instant::now();
    let (status, cc, body) = post_logout(&ea, &form(&token)).await;
    assert_eq!(status, 200, "{body}\n{}", ga.log());
    assert_eq!(cc.as_deref(), Some("no-store"));

    // On B: the session is gone and her bearer token refused within a second.
    let mut refused_after = None;
    while sent.elapsed() < Duration::from_secs(3) {
        let (s, reason) = reason_of(bearer(&eb, &alice_token).await).await;
        if s == 401 && reason == "revoked" {
            refused_after = Some(sent.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = refused_after.unwrap_or_else(|| panic!("B never refused the revoked token\n{}", gb.log()));
    eprintln!("continuous_access: bearer token refused on replica B {} ms after the logout reached A", took.as_millis());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(alice.get(&on(&eb, "/")).await.redirect().path(), "/.idfabric/login", "B sends her to sign in");
    assert_eq!(alice.get(&on(&ea, "/")).await.redirect().path(), "/.idfabric/login", "A too");
    assert_eq!(reason_of(bearer(&ea, &alice_token).await).await, (401, "revoked".to_string()));
    let me = Agent::api().send("GET", &on(&eb, "/.idfabric/me"), None, &[("authorization", &format!("Bearer {alice_token}"))]).await;
    assert_eq!(reason_of(me).await, (401, "revoked".to_string()), "every door refuses it");

    // Bob is untouched on both.
    assert_eq!(bob.get(&on(&eb, "/")).await.status, 200);
    for env in [&ea, &eb] {
        assert_eq!(bearer(env, &bob_token).await.status, 200);
    }

    // A token issued after the logout (a later second) passes on both.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = ea.mint("rwf", "alice", &[]);
    for env in [&ea, &eb] {
        assert_eq!(bearer(env, &fresh).await.status, 200, "a token issued after the revocation");
    }
    // And she can sign in again.
    let again = Agent::browser();
    let (r, _) = again.sign_in(&on(&eb, "/"), "alice").await;
    assert_eq!(r.status, 200);

    // A missed message is caught by the log poll: the subscriptions are cut, then the
    // admin revokes bob on A; B still refuses his token within the poll interval.
    redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let bob_sub = {
        let r = bob.get(&on(&eb, "/")).await;
        decoded(&r.upstream()["x-identity-sub"])
    };
    let r = ea.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={bob_sub}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = Instant::now();
    loop {
        if reason_of(bearer(&eb, &bob_token).await).await == (401, "revoked".to_string()) {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(3), "B never learned of the admin revocation\n{}", gb.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("continuous_access: without the channel, B refused the token {} ms after the admin revocation", sent.elapsed().as_millis());
    assert!(sent.elapsed() < Duration::from_millis(1600), "{:?}", sent.elapsed());
    assert_eq!(bob.get(&on(&eb, "/")).await.redirect().path(), "/.idfabric/login");

    // A replica started after the logout learns of it from the log.
    let metrics = scrape_metrics(&ea).await;
    assert_eq!(metric_value(&metrics, "idfabric_revocations_total{event=\"logout\",source=\"backchannel_logout\"}"), 1.0, "{metrics}");
    assert_eq!(metric_value(&metrics, "idfabric_revocations_total{event=\"session_revoked\",source=\"admin\"}"), 1.0, "{metrics}");
    drop(gb);
    let gb2 = Gateway::start(&eb);
    assert_eq!(reason_of(bearer(&eb, &alice_token).await).await, (401, "revoked".to_string()), "{}", gb2.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_logout_tokens_get_the_spec_error_and_change_nothing() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (ea, _) = replicas(&redis, &echo);
    let ga = Gateway::start(&ea);
    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&ea, "/"), "alice").await;
    let sub = decoded(&r.upstream()["x-identity-sub"]);
    let subject = sub.strip_prefix("rwf:").unwrap().to_string();
    let alice_token = ea.mint("rwf", "alice", &[]);
    let key = dev_key(&ea);
    let good = || logout_claims(&ea, Some(&subject), None);
    let with = |k: &str, v: Value| {
        let mut c = good();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let other_key = Signer::from_pkcs8(
        &pem::parse(idfabric::keys::generate_pem(idfabric::keys::KeyKind::Rsa2048).unwrap().as_bytes()).unwrap().into_contents(),
    )
    .unwrap();
    let kid = key.public_jwk()["kid"].as_str().unwrap().to_string();
    let replayed = key.sign_jwt("logout+jwt", &logout_claims(&ea, Some("someone-else"), None));
    let secret_part = replayed.rsplit('.').next().unwrap().to_string();
    let (s, _, b) = post_logout(&ea, &form(&replayed)).await;
    assert_eq!(s, 200, "first use of a token for an unknown user: {b}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unsigned", common::fakeidp::unsigned(&json!({"alg": "none", "typ": "logout+jwt"}), &good()), "unsigned"),
        ("another key", common::fakeidp::sign_with_header(&other_key, &json!({"alg": "RS256", "kid": kid, "typ": "logout+jwt"}), &good()), "signature"),
        ("replayed jti", replayed.clone(), "already used"),
        ("nonce present", key.sign_jwt("logout+jwt", &with("nonce", json!("n-1"))), "nonce"),
        ("no events", key.sign_jwt("logout+jwt", &without("events")), "events"),
        ("other event", key.sign_jwt("logout+jwt", &with("events", json!({"http://schemas.openid.net/event/other": {}}))), "events"),
        ("event not an object", key.sign_jwt("logout+jwt", &with("events", json!({EVENT: "yes"}))), "events"),
        ("no iat", key.sign_jwt("logout+jwt", &without("iat")), "iat"),
        ("no jti", key.sign_jwt("logout+jwt", &without("jti")), "jti"),
        ("neither sub nor sid", key.sign_jwt("logout+jwt", &without("sub")), "sub or sid"),
        ("other audience", key.sign_jwt("logout+jwt", &with("aud", json!("someone-else"))), "aud"),
        ("expired", key.sign_jwt("logout+jwt", &with("exp", json!(now() - 3600))), "expired"),
        ("too old, no exp", key.sign_jwt("logout+jwt", &{ let mut c = without("exp"); c["iat"] = json!(now() - 3600); c }), "older than"),
        ("issued in the future", key.sign_jwt("logout+jwt", &with("iat", json!(now() + 3600))), "future"),
        ("access token typ", key.sign_jwt("at+jwt", &good()), "typ"),
        ("not a JWT", "not-a-jwt".to_string(), "three"),
    ];
    for (name, token, says) in cases {
        let (status, cc, body) = post_logout(&ea, &form(&token)).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(cc.as_deref(), Some("no-store"), "{name}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{name}: not JSON: {body}"));
        assert_eq!(v["error"], "invalid_request", "{name}: {body}");
        let d = v["error_description"].as_str().unwrap_or("");
        assert!(d.contains(says), "{name}: {d:?} should mention {says:?}");
    }
    // Oversized body, missing parameter, not a form.
    let (s, _, b) = post_logout(&ea, &format!("logout_token={}", "a".repeat(20 * 1024))).await;
    assert_eq!((s, json_error(&b)), (400, "invalid_request".to_string()), "oversized: {b}");
    let (s, _, b) = post_logout(&ea, "other=1").await;
    assert_eq!((s, json_error(&b)), (400, "invalid_request".to_string()), "missing: {b}");

    // Nothing changed: alice's session and token work, no revocation counted.
    assert_eq!(alice.get(&on(&ea, "/")).await.status, 200, "{}", ga.log());
    assert_eq!(bearer(&ea, &alice_token).await.status, 200);
    let metrics = scrape_metrics(&ea).await;
    assert_eq!(metric_value(&metrics, "idfabric_revocations_total{event=\"logout\",source=\"backchannel_logout\"}"), 1.0, "only the one good token");
    assert!(!ga.log().contains(&secret_part), "no logout token in the log");
}

fn json_error(body: &str) -> String {
    serde_json::from_str::<Value>(body).ok().and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or_default()
}

/// Node `oidc-provider` (OpenID Certified) sends a real logout token when the user's
/// session at the OP ends: the idfabric session signed in through that OP session is
/// gone and the next request is sent to sign in.
#[tokio::test]
async fn oidc_provider_back_channel_logout_ends_the_idfabric_session() {
    let up = crate::interop::Upstream::start_with_backchannel_logout();
    let b = Agent::browser();
    let (_, callback) = up.through_op(&b, "/reports", "ada").await;
    let r = b.get(callback.as_str()).await;
    assert_eq!(r.status, 302, "callback refused: {}\n{}", r.body, up.log());
    assert_eq!(b.get(&up.at("/reports")).await.status, 200, "signed in");
    let me = b.get(&up.at("/.idfabric/me")).await.json();
    assert!(me["session_id"].as_str().is_some_and(|s| !s.is_empty()), "the OP's sid is on the session: {me}");

    // Another browser of the same user, signed in through its own OP session, stays.
    let other = Agent::browser();
    let (_, cb) = up.through_op(&other, "/reports", "ada").await;
    assert_eq!(other.get(cb.as_str()).await.status, 302);

    // The user ends the session at the OP itself (not at idfabric): its end-session
    // confirmation, then `logout=yes`. The OP posts the logout token before answering.
    let end = Url::parse(&format!("{}/session/end", up.issuer)).unwrap();
    let confirm = b.get(end.as_str()).await;
    assert_eq!(confirm.status, 200, "oidc-provider's logout confirmation: {}", confirm.body);
    let action = end.join(&unescape(between(&confirm.body, "action=\"", "\"").expect("logout form"))).unwrap();
    let mut form = hidden_inputs(&confirm.body);
    form.push(("logout".into(), "yes".into()));
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = b.post(action.as_str(), &fields).await;
    assert!(matches!(done.status, 200 | 302 | 303), "{}: {}", done.status, done.body);

    let next = b.get(&up.at("/reports")).await;
    assert_eq!(next.status, 302, "{}\n{}", next.body, up.log());
    assert_eq!(next.redirect().path(), "/.idfabric/login", "sent to sign in\n{}", up.log());
    assert_eq!(other.get(&up.at("/reports")).await.status, 200, "the other OP session is untouched");
    let metrics = scrape_metrics(&up.env).await;
    assert_eq!(
        metric_value(&metrics, "idfabric_backchannel_logouts_total{result=\"ok\"}"),
        1.0,
        "one logout token, accepted\n{}",
        up.log()
    );
}

/// With the memory store (one process) the admin revocation is complete in the process:
/// sessions end, bearer tokens issued so far are refused, later ones pass, and the
/// audit line names the source.
#[tokio::test]
async fn admin_revocation_on_the_memory_store_refuses_earlier_bearer_tokens() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &env.dev_issuer("rwf")));
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{} }}\n{}\nproviders: [rwf]\naudit: {{ output: audit.log }}\n\
             routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{}]\n",
            env.http_port,
            env.admin_line(),
            echo.addr()
        ),
    );
    let gw = Gateway::start(&env);
    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&env, "/"), "alice").await;
    let sub = decoded(&r.upstream()["x-identity-sub"]);
    let token = env.mint("rwf", "alice", &[]);
    assert_eq!(bearer(&env, &token).await.status, 200);

    let r = env.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={sub}")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["revoked"], 1, "{body}");
    assert_eq!(reason_of(bearer(&env, &token).await).await, (401, "revoked".to_string()), "{}", gw.log());
    assert_eq!(alice.get(&on(&env, "/")).await.redirect().path(), "/.idfabric/login");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(bearer(&env, &env.mint("rwf", "alice", &[])).await.status, 200, "issued after the revocation");

    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"kind\":\"revocation\"")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no revocation audit line: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["source"].as_str(), v["event"].as_str(), v["target"].as_str()), (Some("admin"), Some("session_revoked"), Some("subject")));
    assert_eq!((v["sub"].as_str(), v["sessions"].as_u64(), v["complete"].as_bool()), (Some(sub.as_str()), Some(1), Some(true)));
}
