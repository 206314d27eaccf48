//! The admin listener's guard, against the real binary: the operator paths
//! (`/providers`, `/access`, `POST /sessions/revoke`) need the admin bearer token, a
//! `Host` naming the listener and no foreign `Origin`; the probes and metrics stay open
//! to anyone who reaches the port (Kubernetes and Prometheus call by pod IP); without a
//! token the operator paths are closed; `admin.ops_listen` moves them to a listener
//! of their own.

use crate::common;

use common::*;
use reqwest::header::{HOST, ORIGIN};
use reqwest::Method;
use serde_json::Value;

/// A gateway with one dev provider and the given `admin:` line.
fn gateway(admin: impl FnOnce(&TestEnv) -> String) -> (TestEnv, Gateway) {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice, email: alice@example.com, groups: [hr] }\n");
    let text = format!(
        "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [wf]\n\
         routes:\n  - name: app\n    match: {{ path_prefix: / }}\n    upstream: [127.0.0.1:9]\n",
        http = env.http_port,
        admin = admin(&env),
    );
    env.write("routes.yaml", &text);
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
    let gw = Gateway::start(&env);
    (env, gw)
}

/// (status, problem reason, WWW-Authenticate) of a response.
async fn outcome(rb: reqwest::RequestBuilder) -> (u16, String, Option<String>) {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    (status, body["reason"].as_str().unwrap_or("").to_string(), challenge)
}

#[tokio::test]
async fn operator_paths_need_the_token_a_known_host_and_no_foreign_origin() {
    let (env, gw) = gateway(|e| e.admin_line());
    let token = env.admin_token();
    let admin = env.admin();
    let c = client();
    for (method, path) in [(Method::GET, "/providers"), (Method::GET, "/access"), (Method::POST, "/sessions/revoke?sub=wf:x")] {
        let url = format!("{admin}{path}");
        let (s, reason, challenge) = outcome(c.request(method.clone(), &url)).await;
        assert_eq!((s, reason.as_str()), (401, "admin_token_missing"), "{method} {path}");
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{method} {path}");
        let (s, reason, _) = outcome(c.request(method.clone(), &url).bearer_auth("not-the-admin-token-000")).await;
        assert_eq!((s, reason.as_str()), (401, "admin_token_invalid"), "{method} {path}");
        let (s, reason, _) = outcome(c.request(method.clone(), &url).basic_auth("admin", Some(&token))).await;
        assert_eq!((s, reason.as_str()), (401, "admin_token_invalid"), "Basic is not Bearer: {method} {path}");
        // DNS rebinding: the right token (a browser never has it, but the check does not
        // rely on that), a name the attacker controls.
        let (s, reason, _) = outcome(c.request(method.clone(), &url).bearer_auth(&token).header(HOST, "rebind.evil.example:9090")).await;
        assert_eq!((s, reason.as_str()), (421, "admin_host_not_allowed"), "{method} {path}");
        let (s, reason, _) = outcome(c.request(method.clone(), &url).bearer_auth(&token).header(ORIGIN, "http://evil.example")).await;
        assert_eq!((s, reason.as_str()), (403, "admin_origin_not_allowed"), "{method} {path}");
    }
    // With the token and an allowed Host (the listen address, or localhost), it answers.
    for host in [None, Some(format!("localhost:{}", env.admin_port))] {
        let mut rb = env.admin_call(Method::GET, "/providers");
        if let Some(h) = &host {
            rb = rb.header(HOST, h);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200, "{host:?}");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["providers"][0]["id"], "wf", "{doc}");
    }
    let r = env.admin_call(Method::POST, "/sessions/revoke?sub=wf:nobody").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Probes and metrics: no token, any Host (pod IP scrapes), and they count the refusals.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = c.get(format!("{admin}{path}")).header(HOST, "10.1.2.3:9090").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let text = scrape_metrics(&env).await;
    for reason in ["admin_token_missing", "admin_token_invalid", "admin_host_not_allowed", "admin_origin_not_allowed"] {
        let n = metric_value(&text, &format!("idfabric_admin_refusals_total{{reason=\"{reason}\"}}"));
        assert!(n >= 3.0, "{reason}: {n}");
    }
    // The token is never logged.
    assert!(!gw.log().contains(&token), "the admin token reached the log");
}

#[tokio::test]
async fn without_a_token_the_operator_paths_are_closed() {
    let (env, _gw) = gateway(|e| format!("admin: 127.0.0.1:{}", e.admin_port));
    let c = client();
    for (method, path) in [(Method::GET, "/providers"), (Method::GET, "/access"), (Method::POST, "/sessions/revoke?sub=x")] {
        let r = c.request(method.clone(), format!("{}{path}", env.admin())).bearer_auth("anything-at-all-0000").send().await.unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "admin_token_not_configured", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("admin.token_file"), "{body}");
    }
    assert_eq!(c.get(format!("{}/readyz", env.admin())).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_token_given_inline_and_extra_hosts_work() {
    let token = "inline-admin-token-7f3e9c2b1a";
    let (env, _gw) = gateway(|e| {
        format!("admin: {{ listen: 127.0.0.1:{}, token: \"{token}\", hosts: [idfabric-admin.ops.svc] }}", e.admin_port)
    });
    let url = format!("{}/providers", env.admin());
    let r = client().get(&url).bearer_auth(token).header(HOST, "idfabric-admin.ops.svc:9090").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, reason, _) = outcome(client().get(&url).bearer_auth(token).header(HOST, "other.ops.svc")).await;
    assert_eq!((s, reason.as_str()), (421, "admin_host_not_allowed"));
}

#[tokio::test]
async fn ops_listen_takes_the_operator_paths() {
    let ops_port = free_port();
    let (env, _gw) = gateway(|e| {
        format!(
            "admin: {{ listen: 127.0.0.1:{}, ops_listen: 127.0.0.1:{ops_port}, token_file: certs/admin.token }}",
            e.admin_port
        )
    });
    let ops = format!("http://127.0.0.1:{ops_port}");
    let token = env.admin_token();
    let c = client();
    // The operator paths are on the ops listener only, still behind the token.
    let r = env.admin_call(Method::GET, "/providers").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("ops_listen"));
    assert_eq!(c.get(format!("{ops}/providers")).bearer_auth(&token).send().await.unwrap().status(), 200);
    let (s, reason, _) = outcome(c.get(format!("{ops}/providers"))).await;
    assert_eq!((s, reason.as_str()), (401, "admin_token_missing"));
    // The probes stay on the first listener.
    assert_eq!(c.get(format!("{ops}/metrics")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(format!("{}/metrics", env.admin())).send().await.unwrap().status(), 200);

    // Every path on exactly one listener: the first serves the probes and metrics only
    // (with or without the token), the ops listener the guarded paths only, each still
    // guarded there (token, Host).
    for (method, path, guarded) in [
        (Method::GET, "/metrics", false),
        (Method::GET, "/healthz", false),
        (Method::GET, "/readyz", false),
        (Method::GET, "/providers", true),
        (Method::GET, "/access?since=1d", true),
        (Method::POST, "/sessions/revoke?sub=wf:nobody", true),
    ] {
        let on_admin = c.request(method.clone(), format!("{}{path}", env.admin())).bearer_auth(&token).send().await.unwrap();
        let on_ops = c.request(method.clone(), format!("{ops}{path}")).bearer_auth(&token).send().await.unwrap();
        let (a, o) = (on_admin.status().as_u16(), on_ops.status().as_u16());
        if guarded {
            assert_eq!((a, o), (404, 200), "{method} {path}: admin {a}, ops {o}");
            let (s, reason, _) = outcome(c.request(method.clone(), format!("{ops}{path}"))).await;
            assert_eq!((s, reason.as_str()), (401, "admin_token_missing"), "{method} {path} without the token");
            let foreign = c.request(method.clone(), format!("{ops}{path}")).bearer_auth(&token).header(HOST, "evil.example");
            let (s, reason, _) = outcome(foreign).await;
            assert_eq!((s, reason.as_str()), (421, "admin_host_not_allowed"), "{method} {path} with a foreign Host");
        } else {
            assert_eq!((a, o), (200, 404), "{method} {path}: admin {a}, ops {o}");
            let open = c.request(method.clone(), format!("{}{path}", env.admin())).send().await.unwrap();
            assert_eq!(open.status(), 200, "{method} {path} needs no token");
        }
    }
}

#[test]
fn check_refuses_bad_admin_settings() {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice }\n");
    for (admin, want) in [
        ("{ listen: 127.0.0.1:1, token: short }", "at least 16 characters"),
        ("{ listen: 127.0.0.1:1, token_file: certs/nope.token }", "cannot read"),
        ("{ listen: 127.0.0.1:1, token: aaaaaaaaaaaaaaaaaaaa, token_file: certs/admin.token }", "not both"),
        ("{ listen: 127.0.0.1:1, token_file: certs/admin.token, hosts: [\"http://x\"] }", "not a host name"),
        ("{ listen: 127.0.0.1:1, token_file: certs/admin.token, ops_listen: 127.0.0.1:1 }", "must differ"),
        ("{ listen: 127.0.0.1:1, tokn: x }", "tokn"),
    ] {
        env.write(
            "routes.yaml",
            &format!("listen: {{ http: 127.0.0.1:{} }}\nadmin: {admin}\nproviders: [wf]\nroutes:\n  - {{ name: app, upstream: [127.0.0.1:9] }}\n", env.http_port),
        );
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 1, "{admin}: {out}{err}");
        assert!(err.contains(want), "{admin}: want `{want}` in:\n{err}");
        assert!(!err.contains("aaaaaaaaaaaaaaaaaaaa"), "the token is not echoed: {err}");
    }
}

/// A new token in `admin.token_file` applies on reload (SIGHUP): the old one stops
/// working at once, without a restart.
#[tokio::test]
async fn a_rotated_token_applies_on_reload() {
    let (env, gw) = gateway(|e| e.admin_line());
    let old = env.admin_token();
    assert_eq!(env.admin_call(Method::GET, "/providers").send().await.unwrap().status(), 200);
    let new = "rotated-admin-token-5d41402abc4b2a76";
    env.write("certs/admin.token", &format!("{new}\n"));
    gw.signal("HUP");
    let url = format!("{}/providers", env.admin());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while client().get(&url).bearer_auth(new).send().await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "the new token was not applied; log:\n{}", gw.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, reason, _) = outcome(client().get(&url).bearer_auth(&old)).await;
    assert_eq!((s, reason.as_str()), (401, "admin_token_invalid"));
    assert!(!gw.log().contains(new) && !gw.log().contains(&old), "a token reached the log");
}
