//! SIGHUP reloads routes.yaml and the provider files: a valid change is swapped in
//! without a restart, an invalid one is refused and the running config stays.

use crate::common;
use common::*;
use std::time::{Duration, Instant};

async fn status(env: &TestEnv, host: &str, token: &str) -> u16 {
    client()
        .get(format!("{}/x", env.proxy()))
        .header("host", host)
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn eventually(env: &TestEnv, host: &str, token: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = status(env, host, token).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{host}: expected {want}, still {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn routes(echo: &Echo, with_b: bool) -> String {
    let mut r =
        format!("  - name: a\n    match: {{ host: a.test }}\n    auth: bearer\n    upstream: [{}]\n", echo.addr());
    if with_b {
        r.push_str(&format!(
            "  - name: b\n    match: {{ host: b.test }}\n    auth: bearer\n    upstream: [{}]\n",
            echo.addr()
        ));
    }
    r
}

/// A gateway on route `a` of `echo`, and a workforce token for it.
fn started(echo: &Echo) -> (TestEnv, Gateway, String) {
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &routes(echo, false));
    let gw = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);
    (env, gw, token)
}

#[tokio::test]
async fn sighup_swaps_in_a_valid_config_and_keeps_the_old_one_on_error() {
    let echo = Echo::start();
    let (env, gw, token) = started(&echo);
    assert_eq!(status(&env, "a.test", &token).await, 200);
    assert_eq!(status(&env, "b.test", &token).await, 404);

    // A valid change: route b appears, route a keeps working (keys carried over).
    env.write_routes(&["dev-wf"], &routes(&echo, true));
    gw.signal("HUP");
    eventually(&env, "b.test", &token, 200).await;
    assert_eq!(status(&env, "a.test", &token).await, 200);

    // An invalid change (a typo) is refused: the running config stays, the failure is
    // counted and logged with the file, line and key.
    let broken = routes(&echo, false).replace("upstream:", "upstrem:");
    env.write_routes(&["dev-wf"], &broken);
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log().contains("configuration reload failed") {
        assert!(Instant::now() < deadline, "no reload failure logged:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.log().contains("upstrem"), "the log names the bad key:\n{}", gw.log());
    assert_eq!(status(&env, "b.test", &token).await, 200, "old config still serves");
    let metrics = client().get(format!("{}/metrics", env.admin())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("idfabric_config_reloads_total{result=\"success\"} 2"), "{metrics}");
    assert!(metrics.contains("idfabric_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(!metrics.contains(&token[..40]));
}

#[tokio::test]
async fn a_start_only_setting_is_refused_by_name_not_silently_ignored() {
    let echo = Echo::start();
    let (env, gw, token) = started(&echo);

    // Route b plus more worker threads: the threads would not change until a restart,
    // so the reload is refused as a whole, naming the key.
    env.write_routes(&["dev-wf"], &format!("{}server: {{ threads: 2 }}\n", routes(&echo, true)));
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log().contains("configuration reload failed") {
        assert!(Instant::now() < deadline, "no reload failure logged:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More threads also change the implied `work_stealing`: both are named.
    assert!(gw.log().contains("server.threads, server.work_stealing cannot change on reload"), "{}", gw.log());
    assert_eq!(status(&env, "b.test", &token).await, 404, "nothing of the refused file applies");
    assert_eq!(status(&env, "a.test", &token).await, 200);

    // A mistyped store URL is refused without its password reaching the log.
    env.write_routes(
        &["dev-wf"],
        &format!("{}session: {{ store: \"redis:/:hunter2-secret@127.0.0.1:6379\" }}\n", routes(&echo, true)),
    );
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log().contains("session.store") {
        assert!(Instant::now() < deadline, "no session.store failure logged:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.log().contains("***@127.0.0.1:6379"), "{}", gw.log());
    assert!(!gw.log().contains("hunter2"), "a password in the log:\n{}", gw.log());
}
