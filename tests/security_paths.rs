//! The router and the upstream read the same path: every spelling of a restricted path
//! is either refused (`400 invalid_path` / `invalid_target`, problem+json) or routed to
//! the restricted route, and whenever the upstream is reached, the request line it saw
//! carries the canonical origin-form path and the query exactly as sent.
//!
//! Routes (all on one raw-TCP upstream that records each request line): `/admin` needs
//! group `admins`, `/` any employee, `/static/` is public, `/app` is public and accepts
//! `;` parameters, `/CaseSens` is public and case-sensitive. Requests go over raw TCP:
//! HTTP clients normalise the very spellings under test.

use crate::common::{metric_value, raw_request, Gateway, TestEnv};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// An upstream that records the request line of every request it receives and answers
/// 200 with `Connection: close` (so each request is one connection).
struct RecordingUpstream {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RecordingUpstream {
    fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                            break;
                        }
                    }
                    sink.lock().unwrap().push(first.trim_end().to_string());
                    let body = "upstream";
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        RecordingUpstream { port, lines }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn since(&self, n: usize) -> Vec<String> {
        self.lines.lock().unwrap()[n..].to_vec()
    }
}

struct Fx {
    env: TestEnv,
    up: RecordingUpstream,
    gw: Gateway,
    bob: String,
    alice: String,
}

fn fx() -> Fx {
    let env = TestEnv::new();
    let up = RecordingUpstream::start();
    env.write_wf_provider(
        "  - { name: alice, email: alice@corp.test, groups: [admins, staff] }\n  - { name: bob, email: bob@corp.test, groups: [staff] }\n",
    );
    let u = format!("[127.0.0.1:{}]", up.port);
    env.write_routes(
        &["wf"],
        &format!(
            "  - {{ name: admin, match: {{ path_prefix: /admin }}, auth: bearer, upstream: {u}, require: {{ groups_any: [admins] }} }}\n\
             \x20 - {{ name: home, match: {{ path_prefix: / }}, auth: bearer, upstream: {u}, require: {{ population: workforce }} }}\n\
             \x20 - {{ name: static, match: {{ path_prefix: /static/ }}, auth: none, upstream: {u} }}\n\
             \x20 - {{ name: app, match: {{ path_prefix: /app }}, auth: none, path_params: true, upstream: {u} }}\n\
             \x20 - {{ name: cs, match: {{ path_prefix: /CaseSens }}, auth: none, case_sensitive: true, upstream: {u} }}\n"
        ),
    );
    let gw = Gateway::start(&env);
    let bob = env.mint("wf", "bob", &[]);
    let alice = env.mint("wf", "alice", &[]);
    Fx { env, up, gw, bob, alice }
}

/// What one raw request produced: the answer, and the request lines the upstream saw.
struct Seen {
    status: u16,
    head: String,
    body: String,
    upstream: Vec<String>,
}

impl Seen {
    fn reason(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn problem(&self) -> bool {
        self.head.to_ascii_lowercase().contains("content-type: application/problem+json")
    }
}

impl Fx {
    /// Sends `request_line` (e.g. `GET /x HTTP/1.1`) with a Host and, optionally, a token.
    fn send(&self, request_line: &[u8], host: Option<&str>, token: Option<&str>) -> Seen {
        let mut req = request_line.to_vec();
        req.extend_from_slice(b"\r\n");
        if let Some(h) = host {
            req.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
        }
        if let Some(t) = token {
            req.extend_from_slice(format!("Authorization: Bearer {t}\r\n").as_bytes());
        }
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        let before = self.up.count();
        let (status, head, body) = raw_request(self.env.http_port, &req);
        // The upstream answers before the gateway does: its line is recorded by now.
        Seen { status, head, body, upstream: self.up.since(before) }
    }

    fn get(&self, target: &str, token: Option<&str>) -> Seen {
        self.send(format!("GET {target} HTTP/1.1").as_bytes(), Some("gw.test"), token)
    }
}

/// Spellings of `/admin/users` (and of paths through the public prefix into it) that
/// no canonical form makes safe: always 400 invalid_path, never proxied.
const REFUSED_PATHS: &[&str] = &[
    "/admin%2fusers",
    "/admin%2Fusers",
    "/ADMIN%2fusers",
    "/admin%5cusers",
    "/home/..;/admin/users",
    "/static/..;/admin/users",
    "/static/..;x=1/admin/users",
    "/static/.;/../admin/users",
    "/static/%2e%2e/admin/users",
    "/static/%2E%2E/admin/users",
    "/static/.%2e/admin/users",
    "/static/%2e./admin/users",
    "/static/%2e%2e;/admin/users",
    "/static/%252e%252e/admin/users",
    "/static/%25%32%65%25%32%65/admin/users",
    "/static/..%2fadmin/users",
    "/static/%2e%2e%2fadmin/users",
    "/static/..%5cadmin/users",
    "/static/%5c..%5cadmin/users",
    "/admin%252fusers",
    "/%2561dmin/users",
    "/admin%00/users",
    "/admin%2500/users",
    "/admin%0a/users",
    "/admin%20/users",
    "/%20admin/users",
    "/admin%09/users",
    "/static/%c0%ae%c0%ae/admin/users",
    "/static/%e0%80%ae%e0%80%ae/admin/users",
    "/static/%c0%af../admin/users",
    "/admin%ef%bc%8fusers",
    "/static/%ef%bc%8e%ef%bc%8e/admin/users",
    "/static/%ef%bc%8e%ef%bc%8e%ef%bc%8fadmin/users",
    "/static/%e2%80%a4%e2%80%a4/admin/users",
    "/static/%ef%bd%a1%ef%bd%a1/admin/users",
    "/admin%e2%88%95users",
    "/admin%e2%81%84users",
    "/admin%ef%bc%bcusers",
    "/%ef%bd%81dmin/users",
    "/%ef%bd%81%ef%bd%84%ef%bd%8d%ef%bd%89%ef%bd%8e/users",
    "/%e2%84%aapi",
    "/ad%c2%admin/users",
    "/admin%3bx/users",
    "/;x/admin/users",
    "/admin;x/users",
    "/ADMIN;jsessionid=1/users",
    "/%",
    "/admin%zz/users",
];

/// Spellings that canonicalise to `/admin/users`: routed to the admin route.
const ADMIN_SPELLINGS: &[&str] = &[
    "/admin/users",
    "/%61dmin/users",
    "/%61%64%6D%69%6E/users",
    "/ADMIN/users",
    "/Admin/Users",
    "/aDmIn/users",
    "//admin/users",
    "///admin//users",
    "/admin/./users",
    "/x/../admin/users",
    "/static/../admin/users",
    "/static/x/../../admin/users",
    "/../admin/users",
    "/./admin/users",
];

fn canonical_upper(p: &str) -> String {
    // What the upstream must see for each admin spelling: the decoded, merged,
    // dot-free path with the case as sent.
    idfabric::canon::canonicalize(p).unwrap().path().to_string()
}

#[test]
fn no_spelling_of_a_restricted_path_passes_and_the_upstream_sees_the_canonical_path() {
    let f = fx();
    let mut failures = Vec::new();
    for (who, token) in [("bob", Some(f.bob.as_str())), ("anonymous", None)] {
        for p in REFUSED_PATHS {
            let s = f.get(p, token);
            if s.status != 400 || s.reason() != "invalid_path" || !s.problem() || !s.upstream.is_empty() {
                failures.push(format!("{who} {p}: {} {} upstream {:?}", s.status, s.body, s.upstream));
            }
        }
        for p in ADMIN_SPELLINGS {
            let s = f.get(p, token);
            let want = if token.is_some() { (403, "group_required") } else { (401, "missing_token") };
            if (s.status, s.reason().as_str()) != want || !s.upstream.is_empty() {
                failures.push(format!("{who} {p}: {} {} upstream {:?}", s.status, s.body, s.upstream));
            }
        }
    }
    // An admin reaches the admin route by every accepted spelling, and the upstream is
    // told the canonical path, never the spelling.
    for p in ADMIN_SPELLINGS {
        let s = f.get(p, Some(&f.alice));
        let want = format!("GET {} HTTP/1.1", canonical_upper(p));
        if s.status != 200 || s.upstream != vec![want.clone()] {
            failures.push(format!("alice {p}: {} upstream {:?}, want {want}", s.status, s.upstream));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Raw bytes: a literal backslash and raw fullwidth letters (UTF-8 in the request line).
    for raw in [&b"GET /static/..\\admin/users HTTP/1.1"[..], b"GET /admin\\users HTTP/1.1", "GET /\u{FF41}dmin/users HTTP/1.1".as_bytes(), b"GET /admin\xff/users HTTP/1.1"] {
        let s = f.send(raw, Some("gw.test"), Some(&f.bob));
        assert_eq!(s.status, 400, "{}: {}", String::from_utf8_lossy(raw), s.body);
        assert!(s.upstream.is_empty(), "{}: proxied as {:?}", String::from_utf8_lossy(raw), s.upstream);
    }
    // Raw UTF-8 that folds to nothing: proxied percent-encoded.
    let s = f.send("GET /static/café HTTP/1.1".as_bytes(), Some("gw.test"), None);
    assert_eq!((s.status, s.upstream.clone()), (200, vec!["GET /static/caf%C3%A9 HTTP/1.1".to_string()]), "{}", s.body);

    // Metrics and the log line of refused paths.
    let metrics = tokio::runtime::Runtime::new().unwrap().block_on(crate::common::scrape_metrics(&f.env));
    let refused = metric_value(
        &metrics,
        "idfabric_requests_total{outcome=\"refused\",population=\"none\",provider=\"none\",route=\"none\"}",
    );
    assert!(refused >= 2.0 * (REFUSED_PATHS.len() - 4) as f64, "refused requests counted: {refused}\n{metrics}");
    let with_route = metric_value(&metrics, "idfabric_auth_decisions_total{decision=\"error\",reason=\"invalid_path\",route=\"admin\"}");
    assert!(with_route >= 4.0, "`;` on the admin route counts as its decision: {with_route}");
    let log = f.gw.log();
    assert!(log.contains("request refused") && log.contains("invalid_path"), "{log}");
}

#[test]
fn targets_other_than_origin_form_are_refused_or_made_origin_form() {
    let f = fx();
    let bob = Some(f.bob.as_str());
    for target in ["admin/users", "../admin/users", "*", "gw.test:80", "ftp://gw.test/admin/users", "mailto:a@gw.test"] {
        let s = f.send(format!("GET {target} HTTP/1.1").as_bytes(), Some("gw.test"), bob);
        assert_eq!((s.status, s.reason().as_str(), s.problem()), (400, "invalid_target", true), "{target}: {}", s.body);
        assert!(s.upstream.is_empty(), "{target}: proxied as {:?}", s.upstream);
    }
    // Ambiguous authorities, and bytes that are not UTF-8, are refused by Pingora's
    // parser already (a bare 400, before any phase of ours runs).
    for raw in [&b"GET http:/gw.test/admin HTTP/1.1"[..], b"GET http://gw.test\\@x/admin HTTP/1.1", b"GET /admin\xff/users HTTP/1.1"] {
        let s = f.send(raw, Some("gw.test"), bob);
        assert_eq!(s.status, 400, "{}: {}", String::from_utf8_lossy(raw), s.body);
        assert!(s.upstream.is_empty());
    }
    // CONNECT is answered by Pingora (405) or by us (400 invalid_target): never proxied.
    let s = f.send(b"CONNECT gw.test:443 HTTP/1.1", Some("gw.test:443"), bob);
    assert!(s.status == 400 || s.status == 405, "CONNECT: {} {}", s.status, s.body);
    assert!(s.upstream.is_empty());
    // `OPTIONS *` is answered here, never proxied.
    let s = f.send(b"OPTIONS * HTTP/1.1", Some("gw.test"), None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert!(s.head.to_ascii_lowercase().contains("allow: "), "{}", s.head);
    assert!(s.upstream.is_empty());
    // HTTP/1.1 without Host names no host.
    let s = f.send(b"GET /static/x HTTP/1.1", None, None);
    assert_eq!((s.status, s.reason().as_str(), s.problem()), (400, "invalid_target", true), "{}", s.body);
    assert!(s.upstream.is_empty());
    // HTTP/1.0 may omit it: routed (to host-less routes) on the canonical path.
    let s = f.send(b"GET /%73tatic/x HTTP/1.0", None, None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.upstream, vec!["GET /static/x HTTP/1.1".to_string()]);

    // Absolute-form: its authority is the routing host, the upstream gets origin-form.
    let s = f.send(b"GET http://gw.test/%61dmin/users?q=%2e%2e/%2F&x HTTP/1.1", Some("gw.test"), Some(&f.alice));
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.upstream, vec!["GET /admin/users?q=%2e%2e/%2F&x HTTP/1.1".to_string()]);
    let s = f.send(b"GET http://gw.test/ADMIN/users HTTP/1.1", Some("gw.test"), bob);
    assert_eq!((s.status, s.reason().as_str()), (403, "group_required"), "{}", s.body);
    let s = f.send(b"GET http://gw.test/static/..;/admin/users HTTP/1.1", Some("gw.test"), None);
    assert_eq!((s.status, s.reason().as_str()), (400, "invalid_path"), "{}", s.body);
    assert!(s.upstream.is_empty());
    // ... without Host: the upstream still gets one.
    let s = f.send(b"GET http://gw.test/static/a HTTP/1.1", None, None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.upstream, vec!["GET /static/a HTTP/1.1".to_string()]);
    // ... and a Host that disagrees is refused (before routing, whoever refuses it).
    for host in ["other.test", "gw.test:8080"] {
        let s = f.send(b"GET http://gw.test/static/a HTTP/1.1", Some(host), None);
        assert_eq!(s.status, 400, "{host}: {}", s.body);
        assert!(s.upstream.is_empty(), "{host}");
    }
}

#[test]
fn case_boundaries_params_queries_and_reserved_paths() {
    let f = fx();
    let bob = Some(f.bob.as_str());
    // Segment boundaries: `/admin` is not a prefix of `/administrator`.
    let s = f.get("/administrator", bob);
    assert_eq!((s.status, s.upstream.clone()), (200, vec!["GET /administrator HTTP/1.1".to_string()]), "{}", s.body);
    let s = f.get("/admin.txt", bob);
    assert_eq!(s.status, 200, "{}", s.body);
    // Case-insensitive by default; the upstream gets the case as sent.
    let s = f.get("/STATIC/x", None);
    assert_eq!((s.status, s.upstream.clone()), (200, vec!["GET /STATIC/x HTTP/1.1".to_string()]), "{}", s.body);
    // `case_sensitive: true`: other spellings fall to the next route (here: `/`, bearer).
    let s = f.get("/CaseSens/x", None);
    assert_eq!(s.status, 200, "{}", s.body);
    let s = f.get("/casesens/x", None);
    assert_eq!((s.status, s.reason().as_str()), (401, "missing_token"), "{}", s.body);
    // `path_params: true`: parameters ignored by matching and forwarded as sent.
    let s = f.get("/app;jsessionid=ABC/%78", None);
    assert_eq!((s.status, s.upstream.clone()), (200, vec!["GET /app;jsessionid=ABC/x HTTP/1.1".to_string()]), "{}", s.body);
    let s = f.get("/APP;a=b/./y", None);
    assert_eq!(s.upstream, vec!["GET /APP;a=b/y HTTP/1.1".to_string()], "{}", s.body);
    for p in ["/app/..;/admin/users", "/app;x/..;/admin", "/app/%2e%2e;/admin", "/app;%2f/x"] {
        let s = f.get(p, None);
        assert_eq!((s.status, s.reason().as_str()), (400, "invalid_path"), "{p}: {}", s.body);
        assert!(s.upstream.is_empty(), "{p}");
    }
    // The query is forwarded exactly as sent.
    let s = f.get("/static/%61?q=%2e%2e/%2F&x=%zz;y", None);
    assert_eq!(s.upstream, vec!["GET /static/a?q=%2e%2e/%2F&x=%zz;y HTTP/1.1".to_string()], "{}", s.body);

    // Reserved paths are recognised on the canonical path and never proxied.
    for (p, status, reason) in [
        ("/%2eidfabric/me", 401, "missing_token"),
        ("//.idfabric/me", 401, "missing_token"),
        ("/static/../.idfabric/me", 401, "missing_token"),
        ("/.IDFABRIC/me", 404, "no_route"),
        ("/.idfabric;x/me", 400, "invalid_path"),
        ("/%2Eidfabric/%6De", 401, "missing_token"),
        ("/BROKER/.well-known/openid-configuration", 404, "no_route"),
    ] {
        let s = f.get(p, None);
        assert_eq!((s.status, s.reason().as_str()), (status, reason), "{p}: {}", s.body);
        assert!(s.upstream.is_empty(), "{p}: proxied as {:?}", s.upstream);
    }

    // Forward-auth decides on the canonical form of the forwarded URI.
    let fwd = |uri: &str, token: Option<&str>| {
        let mut req = format!("GET /.idfabric/auth HTTP/1.1\r\nHost: gw.test\r\nX-Forwarded-Host: gw.test\r\nX-Forwarded-Uri: {uri}\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        let (status, head, body) = raw_request(f.env.http_port, req.as_bytes());
        Seen { status, head, body, upstream: vec![] }
    };
    for uri in ["/static/..;/admin/users", "/admin%2fusers", "/static/%2e%2e/admin", "/admin;x/users", "/%2561dmin"] {
        let s = fwd(uri, bob);
        assert_eq!((s.status, s.reason().as_str()), (400, "invalid_path"), "{uri}: {}", s.body);
    }
    for uri in ["/ADMIN/users", "/%61dmin/users?x=1", "//admin/users", "/static/../admin/users"] {
        let s = fwd(uri, bob);
        assert_eq!((s.status, s.reason().as_str()), (403, "group_required"), "{uri}: {}", s.body);
    }
    let s = fwd("/STATIC/x", None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert!(s.head.to_ascii_lowercase().contains("x-identity-route: static"), "{}", s.head);
    // nginx `auth_request` names the URI in X-Original-URI.
    for (uri, status) in [("/static/%2e%2e/admin/users", 400), ("/static/../admin/users", 401), ("/static/%61", 200)] {
        let req = format!(
            "GET /.idfabric/auth HTTP/1.1\r\nHost: gw.test\r\nX-Original-URI: {uri}\r\nConnection: close\r\n\r\n"
        );
        let (got, _, body) = raw_request(f.env.http_port, req.as_bytes());
        assert_eq!(got, status, "{uri}: {body}");
    }
}

#[test]
fn token_inspect_url_prints_the_canonical_path_and_route() {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: bob, groups: [staff] }\n");
    env.write_routes(
        &["wf"],
        "  - { name: admin, match: { path_prefix: /admin }, auth: bearer, upstream: [127.0.0.1:9], require: { groups_any: [admins] } }\n\
         \x20 - { name: home, match: { path_prefix: / }, auth: bearer, upstream: [127.0.0.1:9] }\n",
    );
    let (code, out, err) = env.run(&["token", "inspect", "--config", "routes.yaml", "--url", "http://gw.test//%61DMIN/./users?x=%2F"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["canonical_path"], "/aDMIN/users");
    assert_eq!(v["route"], "admin");
    let (code, out, _) = env.run(&["token", "inspect", "--config", "routes.yaml", "--url", "http://gw.test/home/..;/admin/users"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["status"].as_u64(), v["reason"].as_str()), (Some(400), Some("invalid_path")), "{out}");
    let (code, out, _) = env.run(&["token", "inspect", "--config", "routes.yaml", "--url", "admin/users"]);
    assert_eq!(code, 1);
    assert!(out.contains("invalid_target"), "{out}");
    // A non-canonical prefix is refused when the configuration loads.
    env.write_routes(&["wf"], "  - { name: bad, match: { path_prefix: /static/../admin }, auth: none, upstream: [127.0.0.1:9] }\n");
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_ne!(code, 0, "{out}");
    assert!(format!("{out}{err}").contains("path_prefix"), "{out}{err}");
}
