//! The audit log: exactly one JSON line per auth decision (allowed, denied, challenged,
//! forward-auth), with every documented field, never a token, a query string or a full
//! email (unless configured); `X-Request-Id` and W3C `traceparent` reach the upstream
//! and the same ids are in the line.

use crate::common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const FIELDS: [&str; 18] = [
    "ts",
    "request_id",
    "trace_id",
    "kind",
    "route",
    "provider",
    "population",
    "sub",
    "decision",
    "reason",
    "status",
    "latency_ms",
    "method",
    "host",
    "path",
    "client_ip",
    "mfa",
    "email",
];

fn routes(echo: &Echo, extra: &str) -> String {
    format!(
        "  - name: hr\n    match: {{ host: hr.test }}\n    auth: bearer\n    upstream: [{e}]\n    require: {{ groups_any: [hr] }}\n\
         audit: {{ output: audit.log{extra} }}\n",
        e = echo.addr()
    )
}

/// The audit lines carrying `request_id`, waiting up to 5 s for the first one.
async fn lines_for(env: &TestEnv, request_id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .filter(|v| v["request_id"] == request_id)
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            // Give a stray duplicate the chance to show up before counting.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap_or_default();
            return text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["request_id"] == request_id)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_line(env: &TestEnv, request_id: &str) -> Value {
    let lines = lines_for(env, request_id).await;
    assert_eq!(lines.len(), 1, "exactly one audit line for {request_id}: {lines:?}");
    lines.into_iter().next().unwrap()
}

fn assert_shape(line: &Value) {
    let obj = line.as_object().unwrap();
    for f in FIELDS {
        if f != "email" {
            assert!(obj.contains_key(f), "field {f} missing: {line}");
        }
    }
    for k in obj.keys() {
        assert!(FIELDS.contains(&k.as_str()), "undocumented field {k}: {line}");
    }
    let ts = line["ts"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".", "RFC 3339 ms UTC: {ts}");
    let trace = line["trace_id"].as_str().unwrap();
    assert!(trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()), "{trace}");
    assert!(line["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(line["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn one_line_per_decision_with_ids_propagated_and_nothing_secret() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &routes(&echo, ""));
    let gw = Gateway::start(&env);
    let alice = env.mint("dev-wf", "alice", &[]);
    let bob = env.mint("dev-wf", "bob", &[]);
    let inbound_trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    // Allowed: the upstream gets our request id and a traceparent continuing the trace.
    let resp = client()
        .get(format!("{}/reports?access_token=SECRETQUERY", env.proxy()))
        .header("host", "hr.test")
        .header("x-request-id", "req-allow-1")
        .header("traceparent", format!("00-{inbound_trace}-00f067aa0ba902b7-01"))
        .header("tracestate", "vendor=abc")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = echo_headers(resp).await;
    assert_eq!(seen["x-request-id"], "req-allow-1");
    let tp = seen["traceparent"].as_str().unwrap();
    assert!(tp.starts_with(&format!("00-{inbound_trace}-")) && tp.ends_with("-01"), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "idfabric's own span is the parent: {tp}");
    assert_eq!(seen["tracestate"], "vendor=abc");
    let l = one_line(&env, "req-allow-1").await;
    assert_shape(&l);
    assert_eq!(l["kind"], "proxy");
    assert_eq!(l["route"], "hr");
    assert_eq!(l["provider"], "dev-wf");
    assert_eq!(l["population"], "workforce");
    assert!(l["sub"].as_str().unwrap().starts_with("dev-wf:"), "{l}");
    assert_eq!(
        (l["decision"].as_str(), l["reason"].as_str(), l["status"].as_u64()),
        (Some("allow"), Some("ok"), Some(200))
    );
    assert_eq!(
        (l["method"].as_str(), l["host"].as_str(), l["path"].as_str()),
        (Some("GET"), Some("hr.test"), Some("/reports"))
    );
    assert_eq!(l["mfa"], true);
    assert_eq!(l["email"], "a***@example.com", "masked by default");
    assert_eq!(l["trace_id"], inbound_trace);

    // Denied: bob lacks the hr group. An invalid traceparent is replaced, not forwarded.
    let resp = client()
        .get(format!("{}/reports", env.proxy()))
        .header("host", "hr.test")
        .header("x-request-id", "req-deny-1")
        .header("traceparent", "00-not-a-valid-trace-context")
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let l = one_line(&env, "req-deny-1").await;
    assert_shape(&l);
    assert_eq!((l["decision"].as_str(), l["status"].as_u64()), (Some("deny"), Some(403)));
    assert_eq!(l["provider"], "dev-wf");
    assert!(l["sub"].as_str().is_some_and(|s| s.starts_with("dev-wf:")), "a refusal names who was refused: {l}");
    let metrics = scrape_metrics(&env).await;
    let reason = l["reason"].as_str().unwrap();
    assert!(
        metric_value(
            &metrics,
            &format!("idfabric_auth_decisions_total{{decision=\"deny\",reason=\"{reason}\",route=\"hr\"}}")
        ) >= 1.0,
        "the audit reason is the metric's reason `{reason}`:\n{metrics}"
    );

    // Challenged: no credential on a bearer route. A request id that is not sane is
    // replaced by a generated one.
    let resp = client()
        .get(format!("{}/reports", env.proxy()))
        .header("host", "hr.test")
        .header("x-request-id", "req-challenge-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let l = one_line(&env, "req-challenge-1").await;
    assert_shape(&l);
    assert_eq!((l["decision"].as_str(), l["status"].as_u64()), (Some("challenge"), Some(401)));
    assert_eq!(l["sub"], Value::Null);

    // Forward-auth: the original host and path (never its query) are audited.
    let resp = client()
        .get(format!("{}/.idfabric/auth", env.proxy()))
        .header("x-forwarded-host", "hr.test")
        .header("x-forwarded-uri", "/payroll?code=SECRETQUERY")
        .header("x-request-id", "req-fwd-1")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let l = one_line(&env, "req-fwd-1").await;
    assert_shape(&l);
    assert_eq!(
        (l["kind"].as_str(), l["route"].as_str(), l["path"].as_str()),
        (Some("forward_auth"), Some("hr"), Some("/payroll"))
    );
    assert_eq!((l["decision"].as_str(), l["status"].as_u64()), (Some("allow"), Some(200)));
    let resp = client()
        .get(format!("{}/.idfabric/auth", env.proxy()))
        .header("x-forwarded-host", "hr.test")
        .header("x-forwarded-uri", "/payroll")
        .header("x-request-id", "req-fwd-2")
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let l = one_line(&env, "req-fwd-2").await;
    assert_eq!(
        (l["kind"].as_str(), l["decision"].as_str(), l["status"].as_u64()),
        (Some("forward_auth"), Some("deny"), Some(403))
    );
    assert!(l["sub"].as_str().is_some_and(|s| s.starts_with("dev-wf:")), "{l}");

    // A request id with a space is not trusted: a generated one goes upstream.
    let resp = client()
        .get(format!("{}/", env.proxy()))
        .header("host", "hr.test")
        .header("x-request-id", "bad id")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let rid = echo_headers(resp).await["x-request-id"].as_str().unwrap().to_string();
    assert!(rid.len() == 32 && rid.bytes().all(|b| b.is_ascii_hexdigit()), "{rid}");
    one_line(&env, &rid).await;

    // Nothing secret in the file.
    let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap();
    for secret in [&alice[..40], &bob[..40], "SECRETQUERY", "alice@example.com", "bob@example.com"] {
        assert!(!text.contains(secret), "audit log leaks {secret}:\n{text}");
    }

    // `include_email: true`, picked up by the file watch: full addresses from then on.
    env.write_routes(&["dev-wf"], &routes(&echo, ", include_email: true"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("req-email-{n}");
        client()
            .get(format!("{}/", env.proxy()))
            .header("host", "hr.test")
            .header("x-request-id", &id)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        if one_line(&env, &id).await["email"] == "alice@example.com" {
            break;
        }
        assert!(Instant::now() < deadline, "include_email never applied; log:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric_value(&scrape_metrics(&env).await, "idfabric_audit_dropped_total"), 0.0);
}

#[tokio::test]
async fn an_unwritable_audit_file_is_a_clear_start_up_error() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &routes(&echo, "").replace("audit.log", "no-such-dir/audit.log"));
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(env.routes_path())
        .current_dir(env.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit.output") && err.contains("no-such-dir/audit.log"), "{err}");
}

#[tokio::test]
async fn log_lines_sit_in_the_request_span_when_enabled() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &routes(&echo, ""));
    let gw = Gateway::start_with(&env, &[("IDFABRIC_LOG", "info,idfabric::request=debug")], true);
    let resp = client()
        .get(format!("{}/reports", env.proxy()))
        .header("host", "hr.test")
        .header("x-request-id", "req-span-1")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gw.log();
        if let Some(line) = log.lines().find(|l| l.contains("request refused") && l.contains("req-span-1")) {
            assert!(
                line.contains(
                    "request{request_id=\"req-span-1\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\" route=\"hr\"}"
                ),
                "{line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no refusal line:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(not(feature = "otlp"))]
#[test]
fn an_otlp_endpoint_without_the_feature_is_a_clear_load_error() {
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], "  - { name: a, match: { host: a.test }, upstream: [127.0.0.1:9] }\ntracing: { otlp_endpoint: http://127.0.0.1:4318 }\n");
    let (code, _, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("tracing.otlp_endpoint") && err.contains("otlp"), "{err}");
}

/// Sends traffic with distinct request ids, then `signal` right after the last
/// response, and checks that every answered request has its line once the process is
/// gone (the writer drains every 20 ms: the last lines used to die with the process).
async fn every_line_survives(signal: &str, concurrent: bool) {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &routes(&echo, ""));
    let mut gw = Gateway::start(&env);
    let alice = env.mint("dev-wf", "alice", &[]);
    let send = |id: String| {
        let (url, token) = (format!("{}/x", env.proxy()), alice.clone());
        async move {
            let r = client().get(url).header("host", "hr.test").header("x-request-id", &id).bearer_auth(token);
            let resp = r.send().await.ok()?;
            (resp.status() == 200 && resp.bytes().await.is_ok()).then_some(id)
        }
    };
    let mut answered = Vec::new();
    for round in 0..10 {
        let ids: Vec<String> = (0..20).map(|i| format!("{signal}-{round}-{i}")).collect();
        if concurrent {
            let tasks: Vec<_> = ids.into_iter().map(|id| tokio::spawn(send(id))).collect();
            for t in tasks {
                answered.extend(t.await.unwrap());
            }
        } else {
            for id in ids {
                answered.extend(send(id).await);
            }
        }
    }
    assert_eq!(answered.len(), 200, "every request answered before the signal");
    // The logging phase (which queues the line) runs after the response is written:
    // signal once it has run for all 200 (`requests_total` is counted in it too).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client().get(format!("{}/metrics", env.admin())).send().await.unwrap().text().await.unwrap();
        let logged: f64 = text
            .lines()
            .filter(|l| l.starts_with("idfabric_requests_total{") && l.contains("route=\"hr\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if logged >= 200.0 {
            break;
        }
        assert!(Instant::now() < deadline, "only {logged} of 200 requests reached the logging phase");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.signal(signal);
    let (status, log) =
        tokio::task::spawn_blocking(move || (gw.wait_exit(Duration::from_secs(20)), gw.log())).await.unwrap();
    assert!(status.is_some(), "the gateway did not exit on SIG{signal}:\n{log}");
    let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap();
    let ids: std::collections::HashSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a broken line ({e}): {l}")))
        .filter_map(|v| v["request_id"].as_str().map(String::from))
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(missing.is_empty(), "{} of 200 audit lines lost at SIG{signal}: {missing:?}\nlog:\n{log}", missing.len());
}

#[tokio::test]
async fn every_audit_line_is_written_before_a_sigterm_exit() {
    every_line_survives("TERM", true).await;
}

#[tokio::test]
async fn every_audit_line_is_written_before_a_sigint_exit() {
    every_line_survives("INT", false).await;
}
