//! File-watch reload: a saved change to routes.yaml, a provider file or a key is picked
//! up without SIGHUP; every bad change (syntax error, missing `${ENV}`, garbage key, a
//! provider file deleted while in use) is refused, counted and logged once, and the
//! running configuration keeps serving. Requests in flight finish on their config.

use crate::common;
use common::*;
use std::io::{Read, Write};
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

async fn eventually(env: &TestEnv, host: &str, token: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let got = status(env, host, token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{host}: expected {want}, still {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reloads(env: &TestEnv, result: &str) -> f64 {
    metric_value(&scrape_metrics(env).await, &format!("idfabric_config_reloads_total{{result=\"{result}\"}}"))
}

/// Waits until `result` reloads reach `n`, then returns the log lines of failed reloads.
async fn wait_reloads(env: &TestEnv, gw: &Gateway, result: &str, n: f64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(env, result).await < n {
        assert!(Instant::now() < deadline, "no {result} reload #{n}; log:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.log().lines().filter(|l| l.contains("configuration reload failed")).map(str::to_string).collect()
}

fn route(name: &str, host: &str, upstream: &str) -> String {
    format!("  - name: {name}\n    match: {{ host: {host} }}\n    auth: bearer\n    upstream: [{upstream}]\n")
}

/// Saves like an editor: write a temporary file beside the target, then rename it over.
fn save_by_rename(env: &TestEnv, rel: &str, text: &str) {
    let tmp = env.path().join(format!("{rel}.tmp~"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, env.path().join(rel)).unwrap();
}

#[tokio::test]
async fn changes_are_picked_up_and_bad_changes_refused() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &route("a", "a.test", &echo.addr()));
    let gw = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);
    assert_eq!(status(&env, "a.test", &token).await, 200);
    assert_eq!(status(&env, "b.test", &token).await, 404);
    assert!(gw.log().contains("watching configuration files"), "{}", gw.log());
    let good = std::fs::read_to_string(env.routes_path()).unwrap();

    // 1. An editor-style save adds route b: served within seconds, no SIGHUP, one reload.
    let with_b = format!("{good}{}", route("b", "b.test", &echo.addr()));
    save_by_rename(&env, "routes.yaml", &with_b);
    let took = eventually(&env, "b.test", &token, 200).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(status(&env, "a.test", &token).await, 200, "keys carried over");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(reloads(&env, "success").await, 2.0, "initial load + one debounced reload");
    assert!(gw.log().contains("trigger=\"file change\""), "{}", gw.log());

    // 2. A YAML syntax error: refused, the log line names the file and the line.
    std::fs::write(env.routes_path(), format!("{with_b}  - name: [unclosed\n")).unwrap();
    let failures = wait_reloads(&env, &gw, "failure", 1.0).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    let line_ref = format!("{}:", env.routes_path().display());
    let at = failures[0].find(&line_ref).unwrap_or_else(|| panic!("no file in {}", failures[0]));
    assert!(failures[0][at + line_ref.len()..].starts_with(|c: char| c.is_ascii_digit()), "no line: {}", failures[0]);
    assert_eq!(status(&env, "b.test", &token).await, 200, "old config still serves");

    // 3. A missing ${ENV} variable: refused, naming the variable and the key.
    std::fs::write(env.routes_path(), format!("{good}{}", route("c", "c.test", "\"${IDF_WATCH_TEST_UNSET}\"")))
        .unwrap();
    let failures = wait_reloads(&env, &gw, "failure", 2.0).await;
    assert!(failures[1].contains("IDF_WATCH_TEST_UNSET"), "{}", failures[1]);
    assert!(failures[1].contains("upstream"), "{}", failures[1]);
    assert_eq!(status(&env, "c.test", &token).await, 404);
    assert_eq!(status(&env, "b.test", &token).await, 200);

    // Back to a good config (route b kept) before the key and provider cases.
    save_by_rename(&env, "routes.yaml", &with_b);
    wait_reloads(&env, &gw, "success", 3.0).await;

    // 4. A garbage broker signing key: refused; restoring it is picked up again.
    let key_path = env.path().join("certs/broker-signing.pem");
    let key = std::fs::read(&key_path).unwrap();
    std::fs::write(&key_path, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n").unwrap();
    let failures = wait_reloads(&env, &gw, "failure", 3.0).await;
    assert!(failures[2].contains("broker-signing.pem"), "{}", failures[2]);
    assert_eq!(status(&env, "a.test", &token).await, 200);
    std::fs::write(&key_path, &key).unwrap();
    wait_reloads(&env, &gw, "success", 4.0).await;

    // 5. The provider file deleted while in use: refused; its tokens still work.
    let provider = env.path().join("providers/dev-wf.yaml");
    let saved = std::fs::read(&provider).unwrap();
    std::fs::remove_file(&provider).unwrap();
    let failures = wait_reloads(&env, &gw, "failure", 4.0).await;
    assert!(failures[3].contains("dev-wf"), "{}", failures[3]);
    assert_eq!(status(&env, "a.test", &token).await, 200, "old config keeps verifying dev-wf tokens");
    std::fs::write(&provider, saved).unwrap();
    wait_reloads(&env, &gw, "success", 5.0).await;
    assert_eq!(status(&env, "b.test", &token).await, 200);

    // Unrelated files beside routes.yaml, and a save without changes, never reload.
    env.write("notes.txt", "hello");
    env.write(".routes.yaml.swp", "vim");
    let same = std::fs::read(env.routes_path()).unwrap();
    std::fs::write(env.routes_path(), same).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&env, "success").await, 5.0);
    assert_eq!(reloads(&env, "failure").await, 4.0);

    let metrics = scrape_metrics(&env).await;
    assert!(!metrics.contains(&token[..40]));
    assert!(!gw.log().contains(&token[..40]));
}

/// A one-connection upstream that waits before answering.
fn slow_upstream(delay: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(delay);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow");
            });
        }
    });
    port
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let echo = Echo::start();
    let slow = slow_upstream(Duration::from_secs(3));
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    let both =
        format!("{}{}", route("a", "a.test", &echo.addr()), route("slow", "slow.test", &format!("127.0.0.1:{slow}")));
    env.write_routes(&["dev-wf"], &both);
    let gw = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);

    let (proxy, t) = (env.proxy(), token.clone());
    let in_flight = tokio::spawn(async move {
        let r = client().get(format!("{proxy}/x")).header("host", "slow.test").bearer_auth(t).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The route disappears while its request waits on the upstream.
    env.write_routes(&["dev-wf"], &route("a", "a.test", &echo.addr()));
    eventually(&env, "slow.test", &token, 404).await;
    let (code, body) = in_flight.await.unwrap();
    assert_eq!((code, body.as_str()), (200, "slow"), "log:\n{}", gw.log());
    assert_eq!(status(&env, "a.test", &token).await, 200);
}

#[tokio::test]
async fn no_watch_leaves_reloads_to_sighup() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    let a = route("a", "a.test", &echo.addr());
    env.write_routes(&["dev-wf"], &format!("{a}reload: {{ watch: false }}\n"));
    let gw = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);
    assert!(gw.log().contains("file watch off"), "{}", gw.log());
    env.write_routes(&["dev-wf"], &format!("{a}{}reload: {{ watch: false }}\n", route("b", "b.test", &echo.addr())));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(&env, "b.test", &token).await, 404, "not reloaded without SIGHUP");
    gw.signal("HUP");
    eventually(&env, "b.test", &token, 200).await;
}

#[tokio::test]
async fn a_rotated_broker_key_is_published_without_sighup() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &route("a", "a.test", &echo.addr()));
    let gw = Gateway::start(&env);
    let kids = || async {
        let v: serde_json::Value =
            client().get(format!("{}/broker/jwks", env.proxy())).send().await.unwrap().json().await.unwrap();
        v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let before = kids().await;
    assert_eq!(before.len(), 1);
    let (code, _, err) = env.run(&["keys", "rotate", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = kids().await;
        if now.len() == 2 && now[0] != before[0] && now.contains(&before[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "new key never published: {now:?}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_burst_of_saves_is_one_reload_of_the_last_and_a_file_written_in_pieces_is_not_read_half_way() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &route("a", "a.test", &echo.addr()));
    // A 2 s debounce: the pauses below (50 ms, 150 ms) stay far inside it even when the
    // test machine stalls.
    let base = format!("reload: {{ debounce: 2s }}\n{}", std::fs::read_to_string(env.routes_path()).unwrap());
    std::fs::write(env.routes_path(), &base).unwrap();
    let gw = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);

    // Ten complete saves 50 ms apart (well inside the debounce): the last wins.
    for i in 1..=10 {
        std::fs::write(
            env.routes_path(),
            format!("{base}{}", route(&format!("r{i}"), &format!("r{i}.test"), &echo.addr())),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(&env, "r10.test", &token, 200).await;
    assert_eq!(status(&env, "r9.test", &token).await, 404, "the last save wins");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The initial load and one reload.
    let ok = reloads(&env, "success").await;
    assert_eq!(ok, 2.0, "{ok} successful loads for one burst; log:\n{}", gw.log());
    assert_eq!(reloads(&env, "failure").await, 0.0);

    // Written in place in three pieces, 150 ms apart; the first piece alone would parse
    // (route a only) and the second would not: neither is ever loaded.
    let full = format!("{base}{}{}", route("b", "b.test", &echo.addr()), route("c", "c.test", &echo.addr()));
    let cut1 = base.len();
    let cut2 = cut1 + 20;
    let before = reloads(&env, "success").await;
    let mut f = std::fs::File::create(env.routes_path()).unwrap();
    for piece in [&full[..cut1], &full[cut1..cut2], &full[cut2..]] {
        f.write_all(piece.as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(f);
    eventually(&env, "c.test", &token, 200).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(reloads(&env, "failure").await, 0.0, "a half-written file was read; log:\n{}", gw.log());
    assert_eq!(reloads(&env, "success").await, before + 1.0);
    assert_eq!(status(&env, "b.test", &token).await, 200);
    assert_eq!(status(&env, "r10.test", &token).await, 404);
}

/// The key ids the broker publishes.
async fn broker_kids(env: &TestEnv) -> Vec<String> {
    let v: serde_json::Value =
        client().get(format!("{}/broker/jwks", env.proxy())).send().await.unwrap().json().await.unwrap();
    v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

/// Waits up to 10 s for the published key ids to pass `check`.
async fn wait_kids(env: &TestEnv, gw: &Gateway, want: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = broker_kids(env).await;
        if check(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{want}: still {now:?}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_swapped_key_directory_is_followed() {
    let echo = Echo::start();
    let env = TestEnv::new();
    // `certs` is a symlink to a versioned directory, swapped atomically (`ln -sfn` style).
    std::fs::rename(env.path().join("certs"), env.path().join("certs-v1")).unwrap();
    std::os::unix::fs::symlink("certs-v1", env.path().join("certs")).unwrap();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &route("a", "a.test", &echo.addr()));
    let gw = Gateway::start(&env);
    let v1 = broker_kids(&env).await;
    assert_eq!(v1.len(), 1);

    // A new key set in certs-v2, then the swap: the new broker key is published.
    let (code, _, err) = env.run(&["keys", "generate", "--dir", "certs-v2"]);
    assert_eq!(code, 0, "{err}");
    let tmp = env.path().join("certs.tmp");
    std::os::unix::fs::symlink("certs-v2", &tmp).unwrap();
    std::fs::rename(&tmp, env.path().join("certs")).unwrap();
    let old = v1[0].clone();
    let v2 = wait_kids(&env, &gw, "the swapped directory's key", |k| k.len() == 1 && k[0] != old).await;

    // The new directory is the one watched now: a rotation inside it is published too.
    let (code, _, err) = env.run(&["keys", "rotate", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "{err}");
    let prev = v2[0].clone();
    wait_kids(&env, &gw, "the key rotated inside certs-v2", |k| k.len() == 2 && k.contains(&prev) && k[0] != prev)
        .await;
    assert!(env.path().join("certs-v2/broker-signing.pem").exists());
}
