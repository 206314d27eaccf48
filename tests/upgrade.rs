//! Graceful binary upgrade (`serve --upgrade` + `SIGQUIT` to the old process): the new
//! process takes over the listening sockets, a request in flight on the old process
//! finishes, and traffic that keeps arriving during the handover loses nothing, not
//! even an audit line (both processes append to one file; the old one writes what it
//! still holds before it exits).

use crate::common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers every request after `delay` (a request in flight).
async fn slow_upstream(delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let body = "slow-done";
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_hands_the_sockets_over_without_losing_a_request() {
    let echo = Echo::start();
    let slow = slow_upstream(Duration::from_secs(3)).await;
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    let sock = env.path().join("upgrade.sock");
    let routes = format!(
        "  - name: a\n    match: {{ host: a.test }}\n    auth: bearer\n    upstream: [{}]\n\
         \x20 - name: slow\n    match: {{ host: slow.test }}\n    auth: bearer\n    upstream: [127.0.0.1:{slow}]\n",
        echo.addr()
    );
    env.write_routes(&["dev-wf"], &routes);
    let mut text = std::fs::read_to_string(env.routes_path()).unwrap();
    text.push_str(&format!("server: {{ upgrade_sock: {} }}\naudit: {{ output: audit.log }}\n", sock.display()));
    env.write("routes.yaml", &text);
    let mut old = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);
    let url = format!("{}/x", env.proxy());

    // Steady traffic on fresh connections (each request must be accepted by someone).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (stop, ok, failed, url, token) = (stop.clone(), ok.clone(), failed.clone(), url.clone(), token.clone());
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            let c = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build().unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("upgrade-{w}-{n}");
                let r = c.get(&url).header("host", "a.test").header("x-request-id", &id).bearer_auth(&token).send().await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        answered.lock().unwrap().push(id);
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // One request in flight on the old process while it hands over.
    let in_flight = {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            let r = client()
                .get(&url)
                .header("host", "slow.test")
                .header("x-request-id", "upgrade-in-flight")
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let new = Gateway::start_args(&env, &["--upgrade"], &[], false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    old.signal("QUIT");
    let exited = tokio::task::spawn_blocking(move || {
        let status = old.wait_exit(Duration::from_secs(30));
        (status, old.log())
    });
    let (status, old_log) = exited.await.unwrap();
    assert!(status.is_some(), "old process did not exit after SIGQUIT:\n{old_log}");
    assert!(old_log.contains("listener sockets sent"), "old process handed over its sockets:\n{old_log}");

    // Traffic keeps flowing on the new process alone.
    let before = ok.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) < before + 50 {
        assert!(Instant::now() < deadline, "no traffic after the old process exited:\n{}", new.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (code, body) = in_flight.await.unwrap();
    assert_eq!((code, body.as_str()), (200, "slow-done"), "the request in flight finished on the old process");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests lost during the upgrade ({} ok)", ok.load(Ordering::Relaxed));
    assert!(ok.load(Ordering::Relaxed) > 100, "enough traffic crossed the upgrade");
    assert_eq!(blocking_status(&format!("{}/healthz", env.admin())).unwrap(), 200, "admin listener handed over too");

    // One whole audit line per answered request, from whichever process answered it.
    let mut want = answered.lock().unwrap().clone();
    want.push("upgrade-in-flight".into());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap();
        let ids: std::collections::HashSet<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("a broken line ({e}): {l}")))
            .filter_map(|v| v["request_id"].as_str().map(String::from))
            .collect();
        let missing: Vec<&String> = want.iter().filter(|id| !ids.contains(*id)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} audit lines missing: {missing:?}", missing.len(), want.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
