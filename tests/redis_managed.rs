//! Managed-Redis shapes against real servers: `rediss://` with a private CA and mutual
//! TLS, a Sentinel group whose master is killed while users sign in, and a three-master
//! Cluster carrying every flow that touches the store (sign-in, session, logout, the
//! pending-login caps, broker codes and refresh tokens, access evidence).
//!
//! Each topology is started once, in its own test; `redis-server`, `redis-server
//! --sentinel`, `redis-cli` and `openssl` are Debian's (`make deps-test` installs them).

use crate::common;
use common::agent::*;
use common::oidc::*;
use common::redis_topology::*;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WF: &str = "id: rwf\nkind: dev\npopulation: workforce\nshape: entra\nissuer: {ISSUER}\nsigning_key: certs/dev-idp-workforce.pem\n\
     client_id: wf-client\nusers:\n  - { name: alice, email: alice@corp.test, groups: [staff], mfa: true }\n\
     \x20 - { name: bob, email: bob@corp.test, groups: [staff], mfa: true }\n";

const CB: &str = "http://rp.test:3000/callback";
const SECRET: &str = "managed-redis-portal-secret";

/// routes.yaml with `session:` given whole (store, tls, limits) and a broker client.
fn routes(env: &TestEnv, session: &str, echo: &str) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [rwf]\n\
         session:\n  cookie: idfabric_session\n  key_file: certs/session.key\n{session}\
         broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
         \x20   - {{ client_id: portal, client_secret: {SECRET}, redirect_uris: [{CB}] }}\n\
         routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{echo}]\n",
        http = env.http_port,
        admin = env.admin_line(),
    )
}

fn site(session: &str, echo: &Echo) -> TestEnv {
    let env = TestEnv::new();
    env.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &env.dev_issuer("rwf")));
    env.write("routes.yaml", &routes(&env, session, &echo.addr()));
    env
}

fn on(env: &TestEnv, path: &str) -> String {
    format!("http://wf.test:{}{path}", env.http_port)
}

/// A sign-in that reports instead of panicking (the failover test expects refusals):
/// app → login → provider page → pick `user` → callback. `Ok(session id)` once the
/// callback set the cookie, `Err(what failed)` otherwise.
async fn try_sign_in(agent: &Agent, app: &str, user: &str) -> Result<String, String> {
    let r = agent.get(app).await;
    let login = (r.status == 302).then(|| r.location()).ok_or(format!("app: {}", r.status))?;
    let r = agent.get(login.as_str()).await;
    if r.status != 302 {
        return Err(format!("login: {} {}", r.status, r.body.chars().take(120).collect::<String>()));
    }
    let page = agent.get(r.location().as_str()).await;
    let action = between(&page.body, "<form method=\"post\" action=\"", "\"").ok_or(format!("provider page: {}", page.status))?;
    let action = page.url.join(&unescape(action)).unwrap();
    let mut fields = hidden_inputs(&page.body);
    fields.push(("user".into(), user.into()));
    let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = agent.post(action.as_str(), &form).await;
    if r.status != 302 {
        return Err(format!("provider: {}", r.status));
    }
    let r = agent.get(r.location().as_str()).await;
    if r.status != 302 {
        return Err(format!("callback: {} {}", r.status, r.body.chars().take(120).collect::<String>()));
    }
    agent.cookie("wf.test", SESSION).ok_or_else(|| "no session cookie".to_string())
}

fn sum_series(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_private_ca_and_mutual_tls_carries_sessions_and_check_says_what_is_wrong() {
    let certs = tempfile::tempdir().unwrap();
    tls_material(certs.path());
    let redis = TlsRedis::start(certs.path());
    let echo = Echo::start();
    let c = |f: &str| certs.path().join(f).display().to_string();
    let store = format!("rediss://127.0.0.1:{}", redis.tls_port);
    let tls = |ca: &str, client: bool| {
        let pair = if client { format!(", cert_file: {}, key_file: {}", c("client.pem"), c("client.key")) } else { String::new() };
        format!("  store: \"{store}\"\n  tls: {{ ca_file: {}{pair} }}\n", c(ca))
    };
    let env = site(&tls("ca.pem", true), &echo);

    // `check` connects as serve will: TLS, the private CA, the client certificate.
    let (code, out, err) = env.run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("session.store") && out.contains("ok: single store"), "{out}");
    // The server demands a client certificate: without one the store is refused, by `check`.
    env.write("routes.yaml", &routes(&env, &tls("ca.pem", false), &echo.addr()));
    let (code, out, _) = env.run(&["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("session.store") && out.contains("FAILED"), "{out}");
    // A CA that did not sign the server's certificate: refused too.
    env.write("routes.yaml", &routes(&env, &tls("other-ca.pem", true), &echo.addr()));
    let (code, out, _) = env.run(&["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    // `--offline` stays offline (the store is not asked), but still reads the files.
    let (code, out, err) = env.run(&["check", "--offline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("session.store"), "{out}");
    env.write("routes.yaml", &routes(&env, &format!("  store: \"{store}\"\n  tls: {{ ca_file: {} }}\n", c("missing.pem")), &echo.addr()));
    let (code, out, err) = env.run(&["check", "--offline"]);
    assert_ne!(code, 0);
    assert!(err.contains("session.tls.ca_file") && err.contains("missing.pem"), "{out}{err}");
    // session.tls on a plain redis:// store is a mistake, named.
    env.write("routes.yaml", &routes(&env, &format!("  store: \"redis://127.0.0.1:{}\"\n  tls: {{ ca_file: {} }}\n", redis.node.port, c("ca.pem")), &echo.addr()));
    let (code, _, err) = env.run(&["check", "--offline"]);
    assert_ne!(code, 0);
    assert!(err.contains("rediss://"), "{err}");

    // What check accepted also serves: a sign-in, the session in the TLS Redis, logout.
    env.write("routes.yaml", &routes(&env, &tls("ca.pem", true), &echo.addr()));
    let gw = Gateway::start(&env);
    let alice = Agent::browser();
    let (r, sid) = alice.sign_in(&on(&env, "/"), "alice").await;
    assert_eq!(decoded(&r.upstream()["x-identity-email"]), "alice@corp.test");
    assert_eq!(redis.node.cmd(&["EXISTS", &format!("idf:s:{sid}")]), "1", "the session lives in the TLS Redis");
    let clients = redis.node.cmd(&["CLIENT", "LIST"]);
    assert!(clients.contains(&format!("laddr=127.0.0.1:{}", redis.tls_port)), "idfabric is a TLS client: {clients}");
    alice.log_out(&on(&env, "/.idfabric/logout")).await;
    assert_eq!(redis.node.cmd(&["EXISTS", &format!("idf:s:{sid}")]), "0", "logout removed it");
    let m = scrape_metrics(&env).await;
    assert!(metric_value(&m, "idfabric_sessions_created_total") >= 1.0, "{m}");
    assert_eq!(metric_value(&m, "idfabric_sessions_ended_total{reason=\"logout\"}"), 1.0, "{m}");
    assert!(metric_value(&m, "idfabric_session_store_ops_total{op=\"set\",result=\"ok\"}") >= 1.0, "{m}");
    assert!(m.contains("idfabric_session_store_op_duration_seconds_bucket{op=\"get\""), "{m}");
    assert_eq!(metric_value(&m, "idfabric_sessions_active"), 0.0, "created then ended on this replica: {m}");
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_during_sign_ins_loses_no_acknowledged_session() {
    let mut group = SentinelGroup::start();
    let echo = Echo::start();
    // Refused sign-ins are retried at once: the per-client start rate is not what is tested.
    let session = format!("  store: \"{}\"\n  login_limits: {{ rate_per_minute: 100000 }}\n", group.url());
    let env = site(&session, &echo);
    let (code, out, err) = env.run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: sentinel store"), "{out}");
    let gw = Gateway::start(&env);
    let old_master = group.master.port;

    // Four users sign in over and over; every sign-in that handed out a cookie is kept.
    let app = on(&env, "/");
    let stop = Arc::new(AtomicBool::new(false));
    let signed: Arc<Mutex<Vec<(Instant, Arc<Agent>, String)>>> = Arc::default();
    let failed: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, signed, failed, app) = (stop.clone(), signed.clone(), failed.clone(), app.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let agent = Arc::new(Agent::browser());
                let started = Instant::now();
                match try_sign_in(&agent, &app, if w % 2 == 0 { "alice" } else { "bob" }).await {
                    Ok(sid) => signed.lock().unwrap().push((started, agent, sid)),
                    Err(e) => failed.lock().unwrap().push((started, e)),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = signed.lock().unwrap().len();
    assert!(before_kill > 5, "sign-ins run before the kill: {before_kill}, failures {:?}", failed.lock().unwrap());
    // Writes were confirmed by the replica before they were acknowledged.
    let waits = group.master.info("commandstats", "cmdstat_wait").unwrap_or_default();
    assert!(waits.starts_with("calls="), "the master saw WAIT: {waits:?}");
    let killed = Instant::now();
    group.master.kill();

    // Wait for a sign-in that started after the sentinels promoted the replica.
    let deadline = killed + Duration::from_secs(45);
    let recovered = loop {
        let first = signed.lock().unwrap().iter().filter(|(t, _, _)| *t > killed).map(|(t, _, _)| *t).min();
        if let Some(t) = first {
            break t;
        }
        assert!(Instant::now() < deadline, "no sign-in succeeded after the failover:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(group.master_port(), Some(group.replica.port), "the sentinels promoted the replica");
    assert_ne!(group.master_port(), Some(old_master));

    // Every acknowledged session is still valid, through the new master.
    let signed = signed.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (_, agent, sid) in &signed {
        let r = agent.get(&on(&env, "/orders")).await;
        if r.status != 200 {
            lost.push((sid.clone(), r.status));
        }
    }
    let failed = failed.lock().unwrap().clone();
    let during = failed.iter().filter(|(t, _)| *t >= killed).count();
    let outage = recovered.duration_since(killed);
    eprintln!(
        "sentinel failover: {} sessions acknowledged ({before_kill} before the kill), {} lost; sign-ins refused during the \
         failover: {during}; first sign-in that worked started {:.2} s after the kill",
        signed.len(),
        lost.len(),
        outage.as_secs_f64()
    );
    assert!(lost.is_empty(), "sessions lost in the failover: {lost:?}");
    assert!(outage < Duration::from_secs(20), "idfabric followed the new master within seconds: {outage:?}");
    // Refusals during the failover are the store refusal (503), never a crash.
    for (_, e) in &failed {
        assert!(e.contains("503") || e.contains("no session cookie"), "unexpected failure: {e}");
    }
    let m = scrape_metrics(&env).await;
    if during > 0 {
        assert!(sum_series(&m, "idfabric_session_store_ops_total", "result=\"error\"") >= 1.0, "{m}");
        assert!(gw.log().contains("session store"), "the outage is logged:\n{}", gw.log());
    }
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
    // New sign-ins keep working on the new master.
    let late = Agent::browser();
    assert!(try_sign_in(&late, &app, "alice").await.is_ok());
    assert_eq!(group.replica.cmd(&["EXISTS", &format!("idf:s:{}", late.cookie("wf.test", SESSION).unwrap())]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_master_cluster_carries_sign_in_logout_pending_caps_and_broker_grants() {
    let cluster = Cluster::start();
    let echo = Echo::start();
    let session = format!("  store: \"{}\"\n  login_limits: {{ per_client: 3, total: 100, rate_per_minute: 600 }}\n", cluster.url());
    let env = site(&session, &echo);
    let (code, out, err) = env.run(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: cluster store"), "{out}");
    let gw = Gateway::start(&env);

    // Sessions of many users spread over the masters; each works and logs out.
    let mut users = Vec::new();
    for i in 0..12 {
        let a = Agent::browser();
        let (r, sid) = a.sign_in(&on(&env, "/"), if i % 2 == 0 { "alice" } else { "bob" }).await;
        assert_eq!(r.status, 200);
        users.push((a, sid));
    }
    let holders: std::collections::BTreeSet<usize> = cluster.keys("idf:s:*").into_iter().map(|(n, _)| n).collect();
    assert!(holders.len() >= 2, "sessions spread over the masters: {holders:?}");
    let (bob, bob_sid) = users.pop().unwrap();
    bob.log_out(&on(&env, "/.idfabric/logout")).await;
    let replay = Agent::browser();
    replay.set("wf.test", SESSION, &bob_sid);
    assert_eq!(replay.get(&on(&env, "/")).await.redirect().path(), "/.idfabric/login", "logged out everywhere");
    for (a, _) in &users {
        assert_eq!(a.get(&on(&env, "/x")).await.status, 200);
    }

    // The pending space: its keys share one slot ({txn}); the per-client cap drops the
    // oldest start, whose callback then fails, while the newest completes.
    let mut authorizes = Vec::new();
    for _ in 0..4 {
        let fresh = Agent::browser();
        let authz = fresh.to_provider(&on(&env, "/")).await;
        authorizes.push((fresh, authz));
    }
    let pending: Vec<(usize, String)> = cluster.keys("idf:{txn}:*");
    let nodes: std::collections::BTreeSet<usize> = pending.iter().map(|(n, _)| *n).collect();
    assert_eq!(nodes.len(), 1, "the pending space is one slot: {pending:?}");
    assert_eq!(pending.iter().filter(|(_, k)| k.starts_with("idf:{txn}:v:")).count(), 3, "per_client: 3 holds");
    let (first, authz) = authorizes.remove(0);
    let back = first.pick_user(&authz, "alice").await;
    let r = first.get(back.as_str()).await;
    assert!(first.cookie("wf.test", SESSION).is_none(), "the dropped sign-in does not complete: {} {}", r.status, r.body);
    let (last, authz) = authorizes.pop().unwrap();
    let back = last.pick_user(&authz, "alice").await;
    last.finish(&back, &on(&env, "/")).await;

    // Broker: a code, its exchange, a refresh rotation, and reuse detection.
    let alice = &users[0].0;
    let issuer = format!("http://127.0.0.1:{}/broker", env.http_port);
    let req = AuthzReq::new("portal", CB).set("idp", "rwf");
    let back = follow(alice, &req.url(&issuer), "alice").await;
    let code = callback_params(&back, &req, &issuer)["code"].clone();
    let token = format!("{issuer}/token");
    let form = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CB), ("code_verifier", req.verifier.as_str())];
    let (s, _, b) = post_form(&token, &form, Some(("portal", SECRET))).await;
    assert_eq!(s, 200, "{b}");
    let first_rt = json_of(&b)["refresh_token"].as_str().expect("a refresh token").to_string();
    let rotate = [("grant_type", "refresh_token"), ("refresh_token", first_rt.as_str())];
    let (s, _, b) = post_form(&token, &rotate, Some(("portal", SECRET))).await;
    assert_eq!(s, 200, "{b}");
    let second_rt = json_of(&b)["refresh_token"].as_str().unwrap().to_string();
    let (s, _, b) = post_form(&token, &rotate, Some(("portal", SECRET))).await;
    assert_eq!((s, json_of(&b)["error"].as_str()), (400, Some("invalid_grant")), "reuse is caught: {b}");
    let again = [("grant_type", "refresh_token"), ("refresh_token", second_rt.as_str())];
    let (s, _, _) = post_form(&token, &again, Some(("portal", SECRET))).await;
    assert_eq!(s, 400, "reuse revoked the family");
    let (s, _, _) = post_form(&token, &form, Some(("portal", SECRET))).await;
    assert_eq!(s, 400, "a code is single use");

    // Access evidence: the admin report flushes it (one script over the {acc} slot) and
    // reads it back (pipelines over the same slot).
    let resp = env.admin_call(reqwest::Method::GET, "/access?format=csv").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csv = resp.text().await.unwrap();
    assert!(csv.contains("alice@corp.test") && csv.contains(",wf,"), "{csv}");
    let acc: std::collections::BTreeSet<usize> = cluster.keys("idf:{acc}:*").into_iter().map(|(n, _)| n).collect();
    assert_eq!(acc.len(), 1, "access evidence is one slot");

    let m = scrape_metrics(&env).await;
    assert_eq!(sum_series(&m, "idfabric_session_store_ops_total", "result=\"error\""), 0.0, "no store error: {m}");
    assert!(metric_value(&m, "idfabric_session_store_ops_total{op=\"pending_park\",result=\"ok\"}") >= 4.0, "{m}");
    assert!(!gw.log().contains("CROSSSLOT") && !gw.log().contains("panicked"), "{}", gw.log());
}
