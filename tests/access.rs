//! Access-review evidence: the gateway keeps first seen / last seen / count per
//! workforce identity and route, and `idfabric report access` (or the admin
//! `GET /access`) lists who used what and who holds a route's group but did not use it.
//! Once with the memory store (the report asks the admin listener) and once with a real
//! Redis (the report reads Redis directly).

use crate::common;
use common::redis::RedisServer;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const USERS: &str = "users:\n\
  - { name: alice, email: alice@example.com, groups: [hr, staff], mfa: true }\n\
  - { name: bob, email: bob@example.com, groups: [staff], mfa: true }\n\
  - { name: carol, email: carol@example.com, groups: [hr], mfa: true }\n";

fn setup(session: &str) -> (Echo, TestEnv) {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", USERS);
    env.write_dev_provider("dev-cu", "customer", "auth0", "dev-idp-customer.pem", "");
    let route = |name: &str, require: &str| {
        format!(
            "  - name: {name}\n    match: {{ host: {name}.test }}\n    auth: bearer\n    upstream: [{}]\n    require: {{ {require} }}\n",
            echo.addr()
        )
    };
    let routes = [
        route("hr", "population: workforce, groups_any: [hr]"),
        route("staff", "population: workforce, groups_all: [staff]"),
        route("wiki", ""),
        format!("audit: {{ output: off }}\n{session}"),
    ]
    .concat();
    env.write_routes(&["dev-wf", "dev-cu"], &routes);
    (echo, env)
}

async fn get(env: &TestEnv, route: &str, token: &str) -> u16 {
    let r = client().get(format!("{}/", env.proxy())).header("host", format!("{route}.test")).bearer_auth(token);
    r.send().await.unwrap().status().as_u16()
}

async fn sub_of(env: &TestEnv, token: &str) -> String {
    let me: Value = client()
        .get(format!("{}/.idfabric/me", env.proxy()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["sub"].as_str().unwrap().to_string()
}

struct People {
    alice: String,
    bob: String,
    carol: String,
}

/// alice: hr ×2, wiki; bob: wiki; carol: wiki; a customer: wiki (never recorded).
async fn traffic(env: &TestEnv) -> People {
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| env.mint("dev-wf", u, &[]));
    let customer = env.mint("dev-cu", "alice", &[]);
    assert_eq!(get(env, "hr", &alice).await, 200);
    assert_eq!(get(env, "hr", &alice).await, 200);
    assert_eq!(get(env, "wiki", &alice).await, 200);
    assert_eq!(get(env, "wiki", &bob).await, 200);
    assert_eq!(get(env, "wiki", &carol).await, 200);
    assert_eq!(get(env, "hr", &bob).await, 403, "denied accesses are not evidence of use");
    assert_eq!(get(env, "wiki", &customer).await, 200);
    People { alice: sub_of(env, &alice).await, bob: sub_of(env, &bob).await, carol: sub_of(env, &carol).await }
}

fn report(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["report", "access", "--config", "routes.yaml"];
    all.extend_from_slice(args);
    env.run(&all)
}

fn json_report(env: &TestEnv, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = report(env, &all);
    assert_eq!(code, 0, "report failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn pairs(list: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["sub"].as_str().unwrap().to_string(), r["route"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

fn row<'a>(list: &'a Value, sub: &str, route: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["sub"] == sub && r["route"] == route)
        .unwrap_or_else(|| panic!("no row {sub} {route}: {list}"))
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn check_full_report(r: &Value, p: &People) {
    let s = |sub: &str, route: &str| (sub.to_string(), route.to_string());
    assert_eq!(
        pairs(&r["accesses"]),
        sorted(vec![s(&p.alice, "hr"), s(&p.alice, "wiki"), s(&p.bob, "wiki"), s(&p.carol, "wiki")]),
        "{r}"
    );
    let a = row(&r["accesses"], &p.alice, "hr");
    assert_eq!(a["count"], 2);
    assert_eq!(a["provider"], "dev-wf");
    assert!(
        a["first_seen"].as_str().unwrap().ends_with('Z') && a["first_seen"].as_str() <= a["last_seen"].as_str(),
        "{a}"
    );
    // Holds the group but did not use the route: carol (hr), alice and bob (staff).
    assert_eq!(pairs(&r["unused"]), sorted(vec![s(&p.carol, "hr"), s(&p.alice, "staff"), s(&p.bob, "staff")]), "{r}");
    assert_eq!(row(&r["unused"], &p.carol, "hr")["via_groups"], serde_json::json!(["hr"]));
}

#[tokio::test]
async fn memory_store_report_through_the_admin_listener() {
    let (_echo, env) = setup("");
    let _gw = Gateway::start(&env);
    let p = traffic(&env).await;

    // JSON: the admin listener flushes pending evidence before answering.
    let r = json_report(&env, &[]);
    check_full_report(&r, &p);

    // CSV: one table, `used` rows then `unused` rows.
    let (code, csv, err) = report(&env, &["--format", "csv", "--since", "90d"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("status,sub,provider,username,name,route,first_seen,last_seen,count,via_groups"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.iter().filter(|l| l.starts_with("used,")).count(), 4, "{csv}");
    assert_eq!(rows.iter().filter(|l| l.starts_with("unused,")).count(), 3, "{csv}");
    assert!(
        rows.iter()
            .any(|l| l.starts_with(&format!("used,{},dev-wf,", p.alice)) && l.contains(",hr,") && l.ends_with(",2,")),
        "{csv}"
    );
    assert!(
        rows.iter()
            .any(|l| l.starts_with(&format!("unused,{},", p.carol)) && l.contains(",hr,,") && l.ends_with(",0,hr")),
        "{csv}"
    );

    // --since: after the window passes, nothing was used in it and every holder is unused.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = json_report(&env, &["--since", "1s"]);
    assert_eq!(r["accesses"].as_array().unwrap().len(), 0, "{r}");
    let unused = pairs(&r["unused"]);
    assert!(unused.contains(&(p.alice.clone(), "hr".into())), "{r}");
    assert!(row(&r["unused"], &p.alice, "hr")["last_seen"].is_string(), "last use before the window is shown");

    // The admin endpoint itself: read-only, validated parameters.
    let resp = env.admin_call(reqwest::Method::GET, "/access?format=csv").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let resp = env.admin_call(reqwest::Method::GET, "/access?since=soon").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client().post(format!("{}/access", env.admin())).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let (code, _, err) = report(&env, &["--since", "soon"]);
    assert_eq!(code, 1);
    assert!(err.contains("--since"), "{err}");
}

#[tokio::test]
async fn redis_store_report_reads_redis_directly() {
    let redis = RedisServer::start();
    let (_echo, env) = setup(&format!("session: {{ store: \"{}\", key_file: certs/session.key }}\n", redis.url()));
    let gw = Gateway::start(&env);
    let p = traffic(&env).await;

    // The gateway flushes every 10 s; the report reads Redis, not the gateway.
    let deadline = Instant::now() + Duration::from_secs(25);
    let r = loop {
        let r = json_report(&env, &[]);
        if r["accesses"].as_array().unwrap().len() >= 4 {
            break r;
        }
        assert!(Instant::now() < deadline, "no evidence in Redis: {r}\nlog:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    check_full_report(&r, &p);
    assert_eq!(redis.cmd(&["SCARD", "idf:{acc}:index"]).trim(), "4");

    // Evidence survives the gateway: stop it and the report still answers from Redis.
    drop(gw);
    let r = json_report(&env, &["--since", "90d"]);
    check_full_report(&r, &p);
    // More traffic from a second gateway merges into the same rows.
    let gw2 = Gateway::start(&env);
    let alice = env.mint("dev-wf", "alice", &[]);
    assert_eq!(get(&env, "hr", &alice).await, 200);
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let r = json_report(&env, &[]);
        if row(&r["accesses"], &p.alice, "hr")["count"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "count never merged: {r}\nlog:\n{}", gw2.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A TCP relay to `port` that holds each client→server write for `delay` (a Redis a
/// few milliseconds away) and counts those writes: a report that pipelines sends a
/// few per page, one that asks per identity sends one per identity.
async fn distant_redis(port: u16, delay: Duration) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap().port();
    let writes = std::sync::Arc::new(AtomicUsize::new(0));
    let count = writes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return };
                let ((mut cr, mut cw), (mut sr, mut sw)) = (client.into_split(), server.into_split());
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        count.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (relay, writes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_report_over_20k_identities_is_a_few_hundred_round_trips() {
    use std::sync::atomic::Ordering;
    let redis = RedisServer::start();
    let n = 20_000;
    // Seed the evidence layout the gateway writes: one row, one identity each.
    let seed = "local now = ARGV[2]
        for i = 1, tonumber(ARGV[1]) do
          local sub = 'dev-wf:seed-' .. i
          local row = 'idf:{acc}:r:wiki:' .. sub
          redis.call('HSET', row, 'first', now, 'last', now, 'count', i)
          redis.call('SADD', 'idf:{acc}:index', row)
          redis.call('HSET', 'idf:{acc}:id:' .. sub, 'last', now, 'provider', 'dev-wf', 'username', 'seed' .. i .. '@example.com', 'name', '', 'groups', '[]')
        end
        return 1";
    let now = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 60).to_string();
    redis.cmd(&["EVAL", seed, "0", &n.to_string(), &now]);
    let (relay, writes) = distant_redis(redis.port, Duration::from_millis(3)).await;
    let (_echo, env) =
        setup(&format!("session: {{ store: \"redis://127.0.0.1:{relay}\", key_file: certs/session.key }}\n"));

    let started = Instant::now();
    // Into a file: the report is megabytes, more than a pipe holds while we wait.
    let report = env.path().join("report.json");
    let mut child = std::process::Command::new(BIN)
        .args(["report", "access", "--config", "routes.yaml", "--format", "json"])
        .current_dir(env.path())
        .stdout(std::fs::File::create(&report).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Asking per identity would take 20k × 3 ms = a minute: give up well before.
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(45);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let (took, sent) = (started.elapsed(), writes.load(Ordering::Relaxed));
    eprintln!("report over {n} identities through a 3 ms link: {sent} writes to Redis, {took:?}");
    assert!(
        out.status.success(),
        "report failed after {took:?} and {sent} writes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::fs::read(&report).unwrap();
    let r: Value = serde_json::from_slice(&out).unwrap();
    let accesses = r["accesses"].as_array().unwrap();
    assert_eq!(accesses.len(), n, "every identity reported once");
    let row = accesses.iter().find(|a| a["sub"] == "dev-wf:seed-777").unwrap();
    assert_eq!((row["count"].as_u64(), row["username"].as_str()), (Some(777), Some("seed777@example.com")));
    // Pages of 500: an SSCAN and a pipeline each (a pipeline may arrive in a few writes).
    assert!(sent < 1_000, "{sent} writes to Redis for {n} identities (took {took:?})");
    assert_eq!(
        redis
            .cmd(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_keys:") || l.starts_with("cmdstat_smembers:"))
            .count(),
        0,
        "never KEYS or the whole index at once"
    );
}

#[tokio::test]
async fn admin_endpoints_answer_bad_methods_paths_and_windows_clearly() {
    let (_echo, env) = setup("");
    let _gw = Gateway::start(&env);
    let admin = env.admin();
    let c = client();
    // A known path asked with the wrong method: 405 naming the right one, and `Allow`.
    for (method, path, allow) in [
        (reqwest::Method::POST, "/metrics", "GET, HEAD"),
        (reqwest::Method::PUT, "/healthz", "GET, HEAD"),
        (reqwest::Method::DELETE, "/providers", "GET, HEAD"),
        (reqwest::Method::POST, "/access", "GET, HEAD"),
        (reqwest::Method::GET, "/sessions/revoke", "POST"),
    ] {
        let r = c.request(method.clone(), format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains(path), "{body}");
    }
    // HEAD is a GET without the body (load balancers probe with it).
    let r = c.head(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An unknown path lists the real ones.
    let r = c.get(format!("{admin}/metricz")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("/metrics"));
    // A window longer than time itself means "everything", not an overflow.
    let r = env.admin_call(reqwest::Method::GET, "/access?since=500000000000y").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["since"], "1970-01-01T00:00:00Z", "{body}");
    // A window that does not parse, and a missing sub, are 400s that say why.
    let r = env.admin_call(reqwest::Method::GET, "/access?since=-5d").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = env.admin_call(reqwest::Method::POST, "/sessions/revoke").send().await.unwrap();
    assert_eq!(r.status(), 400);
}

/// A SCIM call to the gateway with the provider's token.
async fn scim(env: &TestEnv, method: &str, path: &str, body: Value) -> Value {
    let r = client()
        .request(method.parse().unwrap(), format!("{}/.idfabric/scim/v2{path}", env.proxy()))
        .header("authorization", format!("Bearer {SCIM_TOKEN}"))
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

const SCIM_TOKEN: &str = "scim-token-access-review-0123456789";

#[tokio::test]
async fn with_scim_the_holders_are_the_provisioned_memberships_and_leavers_are_listed_apart() {
    let (_echo, env) = setup("");
    let file = env.path().join("providers/dev-wf.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\nscim: {{ token_file: scim.token }}\n")).unwrap();
    env.write("scim.token", SCIM_TOKEN);
    let _gw = Gateway::start(&env);
    let p = traffic(&env).await;
    let subject = |sub: &str| sub.strip_prefix("dev-wf:").unwrap().to_string();

    // Entra provisions alice and carol (seen), dave (never came by) and erin (a
    // leaver, deactivated); the group `hr` holds alice, dave and erin, not carol.
    let user = |ext: &str, name: &str, active: bool| {
        serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "externalId": ext, "userName": name, "displayName": name, "active": active})
    };
    let alice = scim(&env, "POST", "/Users", user(&subject(&p.alice), "alice@example.com", true)).await;
    scim(&env, "POST", "/Users", user(&subject(&p.carol), "carol@example.com", true)).await;
    let dave = scim(&env, "POST", "/Users", user("dave-oid", "dave@example.com", true)).await;
    let erin = scim(&env, "POST", "/Users", user("erin-oid", "erin@example.com", false)).await;
    let members: Vec<Value> = [&alice, &dave, &erin].iter().map(|u| serde_json::json!({"value": u["id"]})).collect();
    scim(&env, "POST", "/Groups", serde_json::json!({"displayName": "hr", "members": members})).await;

    let r = json_report(&env, &[]);
    let s = |sub: &str, route: &str| (sub.to_string(), route.to_string());
    // hr: dave holds it by SCIM and never used it; carol's token said hr, SCIM says
    // not (SCIM wins); alice used it; erin is a leaver. staff: nobody provisioned is
    // in a SCIM group `staff`, so only bob (not provisioned) holds it by his token.
    assert_eq!(pairs(&r["unused"]), sorted(vec![s("dev-wf:dave-oid", "hr"), s(&p.bob, "staff")]), "{r}");
    let d = row(&r["unused"], "dev-wf:dave-oid", "hr");
    assert_eq!((d["groups_from"].as_str(), d["username"].as_str()), (Some("scim"), Some("dave@example.com")), "{d}");
    assert_eq!(row(&r["unused"], &p.bob, "staff")["groups_from"], "token");
    let inactive = r["inactive"].as_array().unwrap();
    assert_eq!(inactive.len(), 1, "{r}");
    assert_eq!((inactive[0]["sub"].as_str(), inactive[0]["username"].as_str()), (Some("dev-wf:erin-oid"), Some("erin@example.com")));

    let (code, csv, err) = report(&env, &["--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(csv.lines().any(|l| l.starts_with("inactive,dev-wf:erin-oid,dev-wf,erin@example.com,")), "{csv}");
}
