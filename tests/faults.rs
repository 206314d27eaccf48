//! Faults the gateway must ride out: an identity
//! provider that hangs for 10 s or answers 500s, and Redis restarted mid-traffic. In
//! every case the gateway keeps serving what it can, refuses the rest clearly, says so
//! in metrics and logs, and loses no session data that Redis kept.

use crate::common;
use common::agent::*;
use common::fakeidp::new_signer;
use common::fixtures::*;
use common::redis::RedisServer;
use common::*;
use idfabric::keys::KeyKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const DEV_WF: &str = "id: dev-wf\nkind: dev\npopulation: workforce\nshape: entra\nissuer: {ISSUER}\nsigning_key: certs/dev-idp-workforce.pem\n\
     client_id: wf-client\nusers:\n  - { name: alice, email: alice@corp.test, groups: [staff], mfa: true }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_or_failing_provider_slows_nobody_else() {
    let mut s = Stack::new(Shape::Oidc, KeysFrom::Discovery, "jwks_refresh: 1s\n");
    let dev = DEV_WF.replace("{ISSUER}", &s.env.dev_issuer("dev-wf"));
    s.add_provider("dev-wf", &dev);
    s.start();
    let good = s.token().mint(&s.key);
    let dev_token = s.env.mint("dev-wf", "alice", &[]);
    assert_eq!(s.get("/x", &good).await.status, 200);

    // The provider hangs for 10 s on every request.
    s.fake.set_delay(Duration::from_secs(10));
    let stranger = new_signer(KeyKind::Rsa2048);
    let unknown = s.token().set("jti", "unknown-kid").mint(&stranger);
    let started = Instant::now();
    let pending = {
        let (url, unknown) = (format!("{}/x", s.env.proxy()), unknown.clone());
        tokio::spawn(async move {
            let r = client().get(url).bearer_auth(unknown).send().await.unwrap();
            (r.status().as_u16(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While a key refetch hangs on the slow provider, every other request is fast.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(s.get("/x", &good).await.status, 200, "known keys keep verifying");
        assert_eq!(s.get("/x", &dev_token).await.status, 200, "another provider is untouched");
        assert!(t.elapsed() < Duration::from_secs(1), "not held up by the slow provider: {:?}", t.elapsed());
    }
    let (status, done) = pending.await.unwrap();
    let waited = done - started;
    assert_eq!(status, 401, "an unknown key is refused, not served");
    assert!(waited < Duration::from_secs(8), "bounded by the fetch timeout, not the provider: {waited:?}");
    assert_eq!(s.readyz().await, 200, "still ready: last-known-good keys");

    // Now it answers 500 to everything: refreshes fail, are counted, keys are kept.
    s.fake.set_delay(Duration::ZERO);
    s.fake.set_status(Some(500));
    let st = &s;
    s.eventually(Duration::from_secs(20), "a failed refresh against the 500s", move || async move {
        st.provider_status().await["last_error"].as_str().is_some_and(|e| e.contains("500"))
    })
    .await;
    assert_eq!(s.get("/x", &good).await.status, 200, "last-known-good keys during 500s");
    let status = s.provider_status().await;
    assert!(status["consecutive_failures"].as_u64().unwrap_or(0) > 0, "{status}");
    assert_eq!(status["ready"], true, "{status}");
    let metrics = s.metrics().await;
    let failures = series(&metrics, "idfabric_jwks_refresh_total", &[("provider", &s.id), ("result", "bad_status")]);
    assert!(failures >= 1.0, "refresh failures are counted:\n{metrics}");
    let log = s.gw.as_ref().unwrap().log();
    assert!(log.contains(&s.id) && log.to_lowercase().contains("refresh"), "a log line names the provider:\n{log}");
    assert!(!log.contains(&good[..40]), "no token in the log");

    // It recovers by itself.
    s.fake.set_status(None);
    s.eventually(Duration::from_secs(20), "recovery after the 500s", move || async move {
        st.provider_status().await["consecutive_failures"].as_u64() == Some(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_mid_traffic_keeps_its_sessions() {
    let mut redis = RedisServer::start();
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write("providers/dev-wf.yaml", &DEV_WF.replace("{ISSUER}", &env.dev_issuer("dev-wf")));
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [dev-wf]\n\
             session: {{ store: \"{redis}\", cookie: idfabric_session, key_file: certs/session.key }}\n\
             routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{echo}]\n",
            http = env.http_port,
            admin = env.admin_port,
            redis = redis.url(),
            echo = echo.addr()
        ),
    );
    let gw = Gateway::start(&env);
    let app = format!("http://wf.test:{}/", env.http_port);
    let user = Arc::new(Agent::browser());
    let (r, _sid) = user.sign_in(&app, "alice").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sub = decoded(&r.upstream()["x-identity-sub"]);
    let token = env.mint("dev-wf", "alice", &[]);

    // Session and bearer traffic, recorded, while Redis restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((Vec::<u16>::new(), Vec::<u16>::new())));
    let traffic = {
        let (stop, seen, user, app, token) = (stop.clone(), seen.clone(), user.clone(), app.clone(), token.clone());
        tokio::spawn(async move {
            let bearer = Agent::api();
            while !stop.load(Ordering::Relaxed) {
                let s = user.get(&app).await.status;
                let b = bearer.send("GET", &app, None, &[("authorization", &format!("Bearer {token}"))]).await.status;
                {
                    let mut g = seen.lock().unwrap();
                    g.0.push(s);
                    g.1.push(b);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(move || {
        redis.restart(Duration::from_secs(2));
        redis
    })
    .await
    .map(|r| {
        // Keep the server alive until the end of the test.
        std::mem::forget(r);
    })
    .unwrap();

    // Once Redis is back, the same cookie works again: the session was kept.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = user.get(&app).await;
        if r.status == 200 {
            assert_eq!(decoded(&r.upstream()["x-identity-sub"]), sub, "the same person");
            break;
        }
        assert!(Instant::now() < deadline, "the session never came back after the restart: {} {}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();

    let (sessions, bearers) = seen.lock().unwrap().clone();
    assert!(sessions.len() > 20, "enough traffic crossed the restart");
    assert!(bearers.iter().all(|s| *s == 200), "bearer traffic never needs Redis: {bearers:?}");
    assert!(
        sessions.iter().all(|s| *s == 200 || *s == 503),
        "sessions are served or refused with a 503, never sent to sign in again: {sessions:?}"
    );
    assert!(sessions.contains(&503), "the outage was seen (and refused closed): {sessions:?}");
    assert_eq!(sessions.last(), Some(&200));
    assert!(gw.log().contains("session_store_unavailable"), "a log line says why:\n{}", gw.log());
}
