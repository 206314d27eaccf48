//! The multi-replica proof: two gateway processes and one real Redis on
//! loopback, as two Kubernetes replicas behind a Service would run. Sessions, logout,
//! broker refresh-token families live in Redis, so any replica serves any request; when
//! one replica dies, nothing that the other could serve is lost.
//!
//! The "Service" here is a few lines in the test: round-robin over the two replicas,
//! moving on to the next one when a connection is refused (what kube-proxy plus a
//! retrying client or an ingress does).

use crate::common;
use common::agent::*;
use common::oidc::*;
use common::redis::RedisServer;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WF: &str = "id: rwf\nkind: dev\npopulation: workforce\nshape: entra\nissuer: {ISSUER}\nsigning_key: certs/dev-idp-workforce.pem\n\
     client_id: wf-client\nusers:\n  - { name: alice, email: alice@corp.test, groups: [staff], mfa: true }\n\
     \x20 - { name: bob, email: bob@corp.test, groups: [staff], mfa: true }\n\
     \x20 - { name: erin, email: erin@corp.test, groups: [staff], mfa: true }\n";

const CB: &str = "http://rp.test:3000/callback";
const SECRET: &str = "replica-portal-secret";

/// Both replicas serve one broker issuer (the Service's address: here A's).
fn routes(http: u16, admin: u16, issuer: &str, redis: &str, echo: &str) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\nadmin: {{ listen: 127.0.0.1:{admin}, token_file: certs/admin.token }}\nproviders: [rwf]\n\
         session: {{ store: \"{redis}\", cookie: idfabric_session, key_file: certs/session.key }}\n\
         broker:\n  issuer: {issuer}\n  signing_key: certs/broker-signing.pem\n  clients:\n\
         \x20   - {{ client_id: portal, client_secret: {SECRET}, redirect_uris: [{CB}] }}\n\
         routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{echo}]\n"
    )
}

fn issuer_of(a: &TestEnv) -> String {
    format!("http://127.0.0.1:{}/broker", a.http_port)
}

/// Replica A (whose dev provider issues the users' tokens) and replica B with the same
/// keys, provider files and Redis.
fn replicas(redis: &RedisServer, echo: &Echo) -> (TestEnv, TestEnv) {
    let a = TestEnv::new();
    a.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &a.dev_issuer("rwf")));
    a.write("routes.yaml", &routes(a.http_port, a.admin_port, &issuer_of(&a), &redis.url(), &echo.addr()));
    let b = TestEnv::new();
    for dir in ["certs", "providers"] {
        std::fs::create_dir_all(b.path().join(dir)).unwrap();
        for e in std::fs::read_dir(a.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), b.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    b.write("routes.yaml", &routes(b.http_port, b.admin_port, &issuer_of(&a), &redis.url(), &echo.addr()));
    (a, b)
}

fn on(env: &TestEnv, path: &str) -> String {
    format!("http://wf.test:{}{path}", env.http_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_survive_any_replica_and_a_killed_replica_loses_nothing_the_other_can_serve() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (ea, eb) = replicas(&redis, &echo);
    let mut ga = Gateway::start(&ea);
    let gb = Gateway::start(&eb);

    // A session created through A works through B.
    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&ea, "/"), "alice").await;
    let sub = decoded(&r.upstream()["x-identity-sub"]);
    let on_b = alice.get(&on(&eb, "/")).await;
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    assert_eq!(decoded(&on_b.upstream()["x-identity-sub"]), sub);

    // Logout on B ends it on A.
    let bob = Agent::browser();
    let (_, bob_sid) = bob.sign_in(&on(&ea, "/"), "bob").await;
    bob.log_out(&on(&eb, "/.idfabric/logout")).await;
    // (A may serve it from its cache of session lookups for up to a second more.)
    let replay = Agent::browser();
    replay.set("wf.test", SESSION, &bob_sid);
    let (replay, url) = (&replay, &on(&ea, "/"));
    within_session_cache_ttl("logged out on A too", || async move {
        replay.get(url).await.raw_location().is_some_and(|l| l.starts_with("/.idfabric/login"))
    })
    .await;

    // A broker refresh token rotated on A is refused as reused on B, and the reuse
    // revokes the whole family (also the token A just handed out).
    let issuer = issuer_of(&ea);
    let req = AuthzReq::new("portal", CB).set("idp", "rwf");
    let back = follow(&alice, &req.url(&issuer), "alice").await;
    let code = callback_params(&back, &req, &issuer)["code"].clone();
    let token_at = |env: &TestEnv| format!("http://127.0.0.1:{}/broker/token", env.http_port);
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB), ("code_verifier", req.verifier.as_str())];
    let (s, _, b) = post_form(&token_at(&ea), &form, Some(("portal", SECRET))).await;
    assert_eq!(s, 200, "{b}");
    let first = json_of(&b)["refresh_token"].as_str().expect("a refresh token").to_string();
    let refresh = |rt: String| [("grant_type".to_string(), "refresh_token".to_string()), ("refresh_token".to_string(), rt)];
    let form1 = refresh(first.clone());
    let form1: Vec<(&str, &str)> = form1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (s, _, b) = post_form(&token_at(&ea), &form1, Some(("portal", SECRET))).await;
    assert_eq!(s, 200, "rotated on A: {b}");
    let second = json_of(&b)["refresh_token"].as_str().unwrap().to_string();
    let (s, _, b) = post_form(&token_at(&eb), &form1, Some(("portal", SECRET))).await;
    assert_eq!((s, json_of(&b)["error"].as_str()), (400, Some("invalid_grant")), "reuse seen on B: {b}");
    let form2 = refresh(second);
    let form2: Vec<(&str, &str)> = form2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (s, _, b) = post_form(&token_at(&ea), &form2, Some(("portal", SECRET))).await;
    assert_eq!((s, json_of(&b)["error"].as_str()), (400, Some("invalid_grant")), "the family is revoked on A too: {b}");

    // Traffic through the "Service" while A is killed.
    let users: Vec<Arc<Agent>> = vec![Arc::new(alice), Arc::new(Agent::browser())];
    users[1].sign_in(&on(&ea, "/"), "erin").await;
    let ports = [ea.http_port, eb.http_port];
    let stop = Arc::new(AtomicBool::new(false));
    let (served, lost, retried) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (user, stop, served, lost, retried) = (user.clone(), stop.clone(), served.clone(), lost.clone(), retried.clone());
        workers.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let mut ok = false;
                for attempt in 0..2 {
                    let port = ports[(n + attempt) % 2];
                    let url = format!("http://wf.test:{port}/orders");
                    let cookie = user.cookie("wf.test", SESSION).unwrap_or_default();
                    let r = client()
                        .get(format!("http://127.0.0.1:{port}/orders"))
                        .header("host", format!("wf.test:{port}"))
                        .header("accept", "text/html")
                        .header("cookie", format!("{SESSION}={cookie}"))
                        .send()
                        .await;
                    match r {
                        Ok(r) => {
                            ok = r.status() == 200;
                            if !ok {
                                eprintln!("{url}: {}", r.status());
                            }
                            break;
                        }
                        // Connection refused: the Service moves on to the other replica.
                        Err(_) => {
                            retried.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if ok {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    ga.signal("KILL");
    assert!(ga.wait_exit(Duration::from_secs(10)).is_some(), "replica A is gone");
    let at_kill = served.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < at_kill + 100 {
        assert!(Instant::now() < deadline, "B stopped serving after A died:\n{}", gb.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(lost.load(Ordering::Relaxed), 0, "no request B could serve was lost ({} served)", served.load(Ordering::Relaxed));
    assert!(retried.load(Ordering::Relaxed) > 0, "some requests did meet the dead replica");
    for user in &users {
        assert_eq!(user.get(&on(&eb, "/")).await.status, 200, "every session lives on in B");
    }
}

/// What the per-process cache of session lookups must never change: a session ended on
/// this replica (logout, admin revocation) is refused on its very next request here, and
/// on the other replica within the cache's second; a session nobody uses still ends at
/// its idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_sessions_end_at_once_here_and_within_a_second_there() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (ea, eb) = replicas(&redis, &echo);
    let _ga = Gateway::start(&ea);
    let _gb = Gateway::start(&eb);
    let refused = |r: &Resp| r.raw_location().is_some_and(|l| l.starts_with("/.idfabric/login"));
    // Busy on both replicas, so both hold the session in their caches.
    let urls = [on(&ea, "/"), on(&eb, "/")];
    let warm = |agent| warm(agent, &urls);

    // Logout on A: refused on A at once, on B within the second.
    let alice = Agent::browser();
    let (_, sid) = alice.sign_in(&on(&ea, "/"), "alice").await;
    warm(&alice).await;
    alice.log_out(&on(&ea, "/.idfabric/logout")).await;
    let replay = Agent::browser();
    replay.set("wf.test", SESSION, &sid);
    assert!(refused(&replay.get(&on(&ea, "/")).await), "logged out here: refused on the next request");
    let (r, url) = (&replay, &on(&eb, "/"));
    let took = within_session_cache_ttl("logout on A ends the session on B", || async move { refused(&r.get(url).await) }).await;
    eprintln!("logout on A seen on B after {took:?}");

    // Admin revocation on B: refused on B at once, on A within the second.
    let bob = Agent::browser();
    let (first, _) = bob.sign_in(&on(&ea, "/"), "bob").await;
    let sub = decoded(&first.upstream()["x-identity-sub"]);
    warm(&bob).await;
    let enc: String = url::form_urlencoded::byte_serialize(sub.as_bytes()).collect();
    let r = eb.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={enc}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(refused(&bob.get(&on(&eb, "/")).await), "revoked here: refused on the next request");
    let (b, url) = (&bob, &on(&ea, "/"));
    let took = within_session_cache_ttl("revocation on B ends the session on A", || async move { refused(&b.get(url).await) }).await;
    eprintln!("revocation on B seen on A after {took:?}");
}

async fn warm(agent: &Agent, urls: &[String]) {
    for _ in 0..3 {
        for u in urls {
            let r = agent.get(u).await;
            assert_eq!(r.status, 200, "{u}: {}", r.body);
        }
    }
}

#[tokio::test]
async fn an_unused_session_still_ends_at_its_idle_timeout() {
    let env = TestEnv::new();
    let echo = Echo::start();
    env.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &env.dev_issuer("rwf")));
    let text = routes(env.http_port, env.admin_port, &issuer_of(&env), "memory", &echo.addr())
        .replace("key_file: certs/session.key", "idle: 2s, key_file: certs/session.key");
    env.write("routes.yaml", &text);
    let _g = Gateway::start(&env);
    let erin = Agent::browser();
    erin.sign_in(&on(&env, "/"), "erin").await;
    for _ in 0..5 {
        assert_eq!(erin.get(&on(&env, "/")).await.status, 200, "in use");
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = erin.get(&on(&env, "/")).await;
    assert_eq!(r.redirect().path(), "/.idfabric/login", "unused for longer than session.idle: ended");
}
