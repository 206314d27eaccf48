//! Forward-auth behind the proxies people run, against the real binary: a real nginx
//! (`auth_request`, `auth_request_set`, `error_page 401`) and a real Caddy
//! (`forward_auth` with `copy_headers`) in front of the echo app, each with a whole
//! browser sign-in through the proxy; then the other conventions spoken directly to the
//! check endpoint: Envoy's appended path, ingress-nginx's `X-Original-URL`, Traefik's
//! `X-Forwarded-*`; no route (403), the route's `authorization:`, CORS preflights (also
//! through idfabric's own proxy), the `X-Auth-Request-*` aliases, headers that disagree,
//! and the metrics a check counts in.
//!
//! One gateway (memory sessions), one nginx and one Caddy serve every test of this file.
//! nginx runs with `master_process off` (one process, as the test's user) and its own
//! prefix, temp paths and logs; Caddy with `admin off` and its own HOME/XDG directories.
//! Both are Debian packages (`make deps-test` installs them).
//!
//! Routes (echo app per route): `app.test` (workforce provider `wf`, any signed-in
//! user), `hr.test` (group `hr`), `idt.test` (`authorization: identity_token`),
//! `cors.test` (bearer, `cors_preflight: allow`), `nocors.test` (bearer, default),
//! `mfa.test` (`mfa: true`).

use crate::common;
use common::agent::*;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

const APP: usize = 0;
const HR: usize = 1;
const IDT: usize = 2;
const CORS: usize = 3;
const NOCORS: usize = 4;
const MFA: usize = 5;
const N_APPS: usize = 6;

struct Fixture {
    env: TestEnv,
    echo: Echoes,
    _gw: SharedGateway,
    nginx: Front,
    caddy: Front,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

impl Fixture {
    fn start() -> Fixture {
        let echo = Echoes::start(N_APPS);
        let env = TestEnv::new();
        env.write_wf_provider(
            "  - { name: alice, display_name: Alice Admin, email: alice@corp.test, email_verified: true, groups: [hr, staff], mfa: true }\n\
             \x20 - { name: bob, email: bob@corp.test, groups: [staff] }\n",
        );
        let a = |i: usize| echo.addr(i);
        let routes = format!(
            "  - {{ name: app, match: {{ host: app.test }}, upstream: [{app}], providers: [wf] }}\n\
             \x20 - {{ name: hr, match: {{ host: hr.test }}, upstream: [{hr}], providers: [wf], require: {{ groups_any: [hr] }} }}\n\
             \x20 - {{ name: idt, match: {{ host: idt.test }}, upstream: [{idt}], providers: [wf], authorization: identity_token }}\n\
             \x20 - {{ name: cors, match: {{ host: cors.test }}, auth: bearer, cors_preflight: allow, upstream: [{cors}] }}\n\
             \x20 - {{ name: nocors, match: {{ host: nocors.test }}, auth: bearer, upstream: [{nocors}] }}\n\
             \x20 - {{ name: mfa, match: {{ host: mfa.test }}, upstream: [{mfa}], providers: [wf], require: {{ mfa: true }} }}\n",
            app = a(APP),
            hr = a(HR),
            idt = a(IDT),
            cors = a(CORS),
            nocors = a(NOCORS),
            mfa = a(MFA),
        );
        env.write_routes(&["wf"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        let nginx = Front::nginx(env.http_port, echo.ports[APP]);
        let caddy = Front::caddy(env.http_port, echo.ports[APP]);
        Fixture { env, echo, _gw: gw, nginx, caddy }
    }

    /// `http://{host}:{gateway port}{path}`: the check endpoint spoken to directly.
    fn gw(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.env.http_port)
    }
}

// --- The front proxies ------------------------------------------------------------------

/// A front proxy process (nginx or Caddy) on a free loopback port, tethered to this test
/// process: a `sh` watchdog kills it when the test process exits (its stdin closes), so
/// it can live in a `static`. Its temp directory (config, logs) goes with it.
struct Front {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Front {
    fn spawn(program: &str, args: &[&str], dir: tempfile::TempDir, port: u16, envs: &[(&str, String)]) -> Front {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success());
        assert!(found, "`{program}` is not installed: run `make deps-test` (Debian package `{program}`)");
        // A `static` is never dropped: the watchdog also removes the directory.
        let script = r#""$@" </dev/null & c=$!; read _ignored; kill $c 2>/dev/null; wait $c
            case "$FRONT_RMDIR" in /tmp/*) rm -rf "$FRONT_RMDIR";; esac"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg("front-tether").arg(program).args(args).current_dir(dir.path());
        cmd.env("FRONT_RMDIR", dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "{program} did not start on {port}:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Front { child, port, dir }
    }

    /// nginx with `auth_request` in front of the echo app: the nginx auth_request
    /// configuration of docs/forward-auth.md, on loopback ports.
    fn nginx(gw: u16, app: u16) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        for t in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join("tmp").join(t)).unwrap();
        }
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream idfabric {{ server 127.0.0.1:{gw}; }}
    server {{
        listen 127.0.0.1:{port};
{snippet}
        location / {{
            auth_request /.idfabric/auth;
            auth_request_set $idf_signin $upstream_http_x_idfabric_signin;
            auth_request_set $idf_sub $upstream_http_x_identity_sub;
            auth_request_set $idf_email $upstream_http_x_identity_email;
            auth_request_set $idf_groups $upstream_http_x_identity_groups;
            auth_request_set $idf_user $upstream_http_x_auth_request_user;
            error_page 401 = @idfabric_signin;
            proxy_set_header X-Identity-Sub $idf_sub;
            proxy_set_header X-Identity-Email $idf_email;
            proxy_set_header X-Identity-Groups $idf_groups;
            proxy_set_header X-Auth-Request-User $idf_user;
            proxy_pass http://127.0.0.1:{app};
        }}
    }}
}}
"#,
            snippet = NGINX_IDFABRIC_LOCATIONS,
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let (conf, prefix, err) =
            (format!("{d}/nginx.conf"), format!("{d}/"), format!("{d}/error.log"));
        Front::spawn("nginx", &["-p", &prefix, "-c", &conf, "-e", &err], dir, port, &[])
    }

    /// Caddy with `forward_auth` (+ `copy_headers`) in front of the echo app, and the
    /// sign-in paths proxied to idfabric.
    fn caddy(gw: u16, app: u16) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let caddyfile = format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\n\
             http://:{port} {{\n\tbind 127.0.0.1\n\
             \thandle /.idfabric/auth* {{\n\t\trespond 404\n\t}}\n\
             \thandle /.idfabric/* {{\n\t\treverse_proxy 127.0.0.1:{gw}\n\t}}\n\
             \thandle {{\n\
             \t\tforward_auth 127.0.0.1:{gw} {{\n\
             \t\t\turi /.idfabric/auth\n\
             \t\t\tcopy_headers X-Identity-Sub X-Identity-Email X-Identity-Groups X-Auth-Request-User\n\
             \t\t}}\n\
             \t\treverse_proxy 127.0.0.1:{app}\n\t}}\n}}\n"
        );
        std::fs::write(dir.path().join("Caddyfile"), caddyfile).unwrap();
        let home = dir.path().display().to_string();
        let envs = [
            ("HOME", home.clone()),
            ("XDG_DATA_HOME", format!("{home}/data")),
            ("XDG_CONFIG_HOME", format!("{home}/config")),
        ];
        Front::spawn("caddy", &["run", "--config", "Caddyfile", "--adapter", "caddyfile"], dir, port, &envs)
    }

    /// `http://{host}:{this proxy's port}{path}`.
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The idfabric part of an nginx `server` block (docs/forward-auth.md shows the same):
/// the check location (internal, so clients cannot call it through nginx) and the
/// sign-in paths proxied with the browser's host.
const NGINX_IDFABRIC_LOCATIONS: &str = r#"
        location ^~ /.idfabric/auth {
            internal;
            proxy_pass http://idfabric;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
        location /.idfabric/ {
            proxy_pass http://idfabric;
            proxy_set_header Host $http_host;
        }
        location @idfabric_signin {
            if ($idf_signin = "") {
                return 401;
            }
            return 302 $idf_signin;
        }
"#;

// --- helpers ------------------------------------------------------------------------------

/// Sum of the series of `name` whose labels include all of `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn problem(r: &Resp, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}: {}", r.url, r.body);
    assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"), "{r:?}");
    let b = r.json();
    assert_eq!((b["status"].as_u64(), b["reason"].as_str()), (Some(status as u64), Some(reason)), "{b}");
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", fx().env.mint("wf", user, &[]))
}

/// The whole sign-in through a front proxy: the browser asks the app at `app_url`, is
/// sent to the login page on the app's host, picks `user` at the dev provider and comes
/// back through the proxy (every hop asserted by `Agent::sign_in`); returns what the app
/// then saw.
async fn sign_in_through(b: &Agent, app_url: &str, user: &str) -> serde_json::Map<String, serde_json::Value> {
    let (page, _sid) = b.sign_in(app_url, user).await;
    page.upstream()
}

fn assert_identity_reached_the_app(seen: &serde_json::Map<String, serde_json::Value>, proxy: &str) {
    let h = |n: &str| seen.get(n).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{proxy}: app saw no {n}: {seen:?}"));
    assert!(h("x-identity-sub").starts_with("wf:"), "{proxy}: {seen:?}");
    assert_eq!(h("x-auth-request-user"), h("x-identity-sub"), "{proxy}: the alias carries the same value");
    assert_eq!(h("x-identity-email"), "alice@corp.test", "{proxy}");
    assert_eq!(h("x-identity-groups"), "hr,staff", "{proxy}");
}

// --- nginx auth_request --------------------------------------------------------------------

#[tokio::test]
async fn nginx_auth_request_refuses_api_calls_and_signs_browsers_in() {
    let f = fx();
    let ng = &f.nginx;
    // An API client without a credential: 401 from nginx, the app never asked.
    let api = Agent::api();
    let r = api.send("GET", &ng.url("app.test", "/reports"), None, &[("accept", "application/json")]).await;
    assert_eq!(r.status, 401, "{}\nnginx log:\n{}", r.body, ng.log());
    assert!(!r.body.contains("\"app\""), "the app was not asked: {}", r.body);
    // nginx passes the check's challenge on with its own 401.
    assert!(r.header("www-authenticate").is_some_and(|c| c.contains("invalid_token")), "{r:?}");
    // With a token the app sees the identity headers nginx copied from the answer.
    let r = api.send("GET", &ng.url("app.test", "/reports"), None, &[("authorization", bearer("alice").as_str())]).await;
    assert_identity_reached_the_app(&r.upstream(), "nginx bearer");
    // A browser: nginx's `error_page 401` sends it to the URL in X-Idfabric-Signin.
    let b = Agent::browser();
    let app_url = ng.url("app.test", "/reports?q=1");
    let login = b.get(&app_url).await.redirect();
    assert_eq!(login.as_str(), ng.url("app.test", "/.idfabric/login?rd=%2Freports%3Fq%3D1"), "the sign-in page on the app's own host");
    // The whole sign-in through nginx, then the app sees who it is.
    let seen = sign_in_through(&b, &app_url, "alice").await;
    assert_identity_reached_the_app(&seen, "nginx session");
    // The route's `require` holds through nginx too: bob signs in, and is refused.
    let b = Agent::browser();
    let (r, _) = b.sign_in(&ng.url("hr.test", "/payroll"), "bob").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("\"app\""), "the app was not asked: {}", r.body);
    // The check location is internal: a client cannot ask it through nginx.
    let r = api.send("GET", &ng.url("app.test", "/.idfabric/auth"), None, &[("x-original-uri", "/")]).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

// --- Caddy forward_auth ----------------------------------------------------------------------

#[tokio::test]
async fn caddy_forward_auth_redirects_browsers_and_copies_identity_headers() {
    let f = fx();
    let cd = &f.caddy;
    let api = Agent::api();
    let r = api.send("GET", &cd.url("app.test", "/reports"), None, &[("accept", "application/json")]).await;
    problem(&r, 401, "missing_token");
    assert!(r.header("www-authenticate").is_some_and(|c| c.contains("invalid_token")), "{r:?}");
    assert!(r.header("x-idfabric-signin").is_none(), "API clients get no sign-in URL: {r:?}");
    // Caddy passes a denied check's answer through: the browser gets the 302 itself.
    let b = Agent::browser();
    let app_url = cd.url("app.test", "/docs/a?b=c");
    let r = b.get(&app_url).await;
    let login = r.redirect();
    assert_eq!(login.as_str(), cd.url("app.test", "/.idfabric/login?rd=%2Fdocs%2Fa%3Fb%3Dc"), "{}", cd.log());
    assert_eq!(r.header("x-idfabric-signin").as_deref(), Some(login.as_str()));
    let seen = sign_in_through(&b, &app_url, "alice").await;
    assert_identity_reached_the_app(&seen, "caddy session");
    // An unknown or expired session sends the browser to sign in again.
    let stale = Agent::browser();
    stale.set("app.test", SESSION, "no-such-session");
    let r = stale.get(&cd.url("app.test", "/docs")).await;
    assert_eq!(r.redirect().as_str(), cd.url("app.test", "/.idfabric/login?rd=%2Fdocs"));
    // A session without a second factor on a route that requires one: the browser is
    // sent back to its provider to step up, through the same redirect.
    let b = Agent::browser();
    let (r, _) = b.sign_in(&cd.url("mfa.test", "/vault"), "bob").await;
    let step_up = r.redirect();
    assert_eq!((step_up.host_str(), step_up.path()), (Some("mfa.test"), "/.idfabric/login"), "{step_up}");
    let q = query_of(&step_up);
    assert_eq!((q["step_up"].as_str(), q["provider"].as_str(), q["rd"].as_str()), ("1", "wf", "/vault"), "{step_up}");
    // The check is for Caddy only.
    let r = api.send("GET", &cd.url("app.test", "/.idfabric/auth/x"), None, &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // A navigation without `Accept: text/html` is a browser too.
    let r = Agent::api().send("GET", &cd.url("app.test", "/x"), None, &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(r.status, 302, "{}", r.body);
}

// --- The other conventions, spoken to the check endpoint directly -------------------------------

#[tokio::test]
async fn envoy_appended_path_is_the_original_request() {
    let f = fx();
    let api = Agent::api();
    let r = api.send("GET", &f.gw("app.test", "/.idfabric/auth/reports/2024?x=1"), None, &[("authorization", bearer("alice").as_str())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-identity-route").as_deref(), Some("app"));
    assert!(r.header("x-identity-sub").unwrap().starts_with("wf:"));
    // The appended path is canonicalised like a proxied one, and refused the same way
    // (sent raw: a URL parser would resolve the dot segments first).
    let raw = |target: &str, host: &str, auth: &str| {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
        let (status, _, body) = raw_request(f.env.http_port, req.as_bytes());
        let reason = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|b| b["reason"].as_str().map(str::to_string));
        (status, reason.unwrap_or(body))
    };
    let bob = format!("Authorization: {}\r\n", bearer("bob"));
    assert_eq!(raw("/.idfabric/auth/static/%2e%2e/admin", "app.test", ""), (400, "invalid_path".into()));
    assert_eq!(raw("/.idfabric/auth/x/../payroll", "hr.test", &bob), (403, "group_required".into()));
    // Dot segments in the appended path stay inside it: `/.idfabric/auth/../../payroll`
    // is a check about `/payroll`, never a request proxied to the hr app.
    assert_eq!(raw("/.idfabric/auth/../../payroll", "hr.test", &bob), (403, "group_required".into()));
    // A browser: Envoy returns a denied check's answer to the client, so a 302.
    let b = Agent::browser();
    let r = b.get(&f.gw("app.test", "/.idfabric/auth/reports?q=1")).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let port = f.env.http_port;
    assert_eq!(r.raw_location(), Some(format!("http://app.test:{port}/.idfabric/login?rd=%2Freports%3Fq%3D1")));
    // The method of an Envoy check is the original's: a named one must agree with it.
    let r = api.send("DELETE", &f.gw("app.test", "/.idfabric/auth/x"), None, &[("x-original-method", "GET")]).await;
    problem(&r, 400, "invalid_target");
}

#[tokio::test]
async fn ingress_nginx_original_url_names_host_scheme_and_method() {
    let f = fx();
    let api = Agent::api();
    let check = f.gw("idfabric.svc.cluster.local", "/.idfabric/auth");
    let ingress = |url: &'static str| [("x-original-url", url), ("x-original-method", "GET"), ("x-sent-from", "nginx-ingress-controller")];
    let mut h = ingress("https://app.test/reports?q=1").to_vec();
    let token = bearer("alice");
    h.push(("authorization", token.as_str()));
    let r = api.send("GET", &check, None, &h).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-identity-route").as_deref(), Some("app"));
    let sub = r.header("x-identity-sub").unwrap();
    assert_eq!(r.header("x-auth-request-user"), Some(sub));
    assert_eq!(r.header("x-auth-request-email").as_deref(), Some("alice@corp.test"));
    assert_eq!(r.header("x-auth-request-groups").as_deref(), Some("hr,staff"));
    assert_eq!(r.header("x-auth-request-preferred-username"), r.header("x-identity-username"));
    assert!(r.header("x-auth-request-access-token").is_none(), "no access token is ever answered");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    // A browser: 401 (ingress-nginx only understands 2xx, 401 and 403) naming the sign-in URL.
    let b = Agent::browser();
    let r = b.send("GET", &check, None, &ingress("https://app.test/reports?q=1")).await;
    problem(&r, 401, "missing_token");
    assert_eq!(r.header("x-idfabric-signin").as_deref(), Some("https://app.test/.idfabric/login?rd=%2Freports%3Fq%3D1"));
    // `?redirect=1` on the check path asks for the 302 instead.
    let r = b.send("GET", &format!("{check}?redirect=1"), None, &ingress("https://app.test/r")).await;
    assert_eq!((r.status, r.raw_location().as_deref()), (302, Some("https://app.test/.idfabric/login?rd=%2Fr")));
    // Not an absolute URL: refused, never judged as something else.
    let r = api.send("GET", &check, None, &[("x-original-url", "/reports")]).await;
    problem(&r, 400, "invalid_target");
}

#[tokio::test]
async fn traefik_headers_and_a_client_sent_header_that_disagrees() {
    let f = fx();
    let api = Agent::api();
    let check = f.gw("idfabric", "/.idfabric/auth");
    let traefik = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "hr.test"),
        ("x-forwarded-uri", "/payroll"),
    ];
    let r = api.send("GET", &check, None, &[&traefik[..], &[("authorization", bearer("bob").as_str())]].concat()).await;
    problem(&r, 403, "group_required");
    // Traefik passes the client's own headers along: one naming a request on another
    // host (where bob would pass) does not get that request judged instead.
    let token = bearer("bob");
    let spoof = [("x-original-url", "https://app.test/payroll"), ("authorization", token.as_str())];
    let r = api.send("GET", &check, None, &[&traefik[..], &spoof[..]].concat()).await;
    problem(&r, 400, "invalid_target");
    assert!(r.json()["detail"].as_str().unwrap().contains("different original requests"), "{}", r.body);
    let r = api.send("GET", &check, None, &[&traefik[..], &[("x-forwarded-uri", "/public")]].concat()).await;
    problem(&r, 400, "invalid_target");
    // A browser behind Traefik gets the 302 (Traefik returns a denied answer as is).
    let r = Agent::browser().send("GET", &check, None, &traefik).await;
    assert_eq!((r.status, r.raw_location().as_deref()), (302, Some("https://hr.test/.idfabric/login?rd=%2Fpayroll")));
}

#[tokio::test]
async fn no_route_is_a_403_with_its_reason_and_counted() {
    let f = fx();
    let before = scrape_metrics(&f.env).await;
    let labels = [("route", "none"), ("outcome", "no_route")];
    let api = Agent::api();
    for h in [
        vec![("x-forwarded-host", "nowhere.test"), ("x-forwarded-uri", "/")],
        vec![("x-original-url", "https://nowhere.test/x")],
    ] {
        let r = api.send("GET", &f.gw("idfabric", "/.idfabric/auth"), None, &h).await;
        problem(&r, 403, "no_route");
        assert!(r.header("www-authenticate").is_none());
    }
    let r = api.send("GET", &f.gw("nowhere.test", "/.idfabric/auth/x"), None, &[]).await;
    problem(&r, 403, "no_route");
    let after = scrape_metrics(&f.env).await;
    let count = |t: &str| series(t, "idfabric_requests_total", &labels);
    assert!(count(&after) - count(&before) >= 3.0, "no_route checks are counted:\n{after}");
    // A decided check counts under its route, like a proxied request.
    let r = api.send("GET", &f.gw("app.test", "/.idfabric/auth/m"), None, &[("authorization", bearer("alice").as_str())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = scrape_metrics(&f.env).await;
    assert!(series(&m, "idfabric_auth_decisions_total", &[("route", "app"), ("decision", "allow"), ("reason", "ok")]) >= 1.0, "{m}");
    assert!(series(&m, "idfabric_requests_total", &[("route", "app"), ("outcome", "allow")]) >= 1.0, "{m}");
}

#[tokio::test]
async fn the_route_authorization_setting_is_honoured() {
    let f = fx();
    let api = Agent::api();
    let token = bearer("alice");
    let check = |host: &str| f.gw(host, "/.idfabric/auth/a");
    let r = api.send("GET", &check("idt.test"), None, &[("authorization", token.as_str())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let minted = r.header("x-identity-token").expect("the identity token");
    assert_eq!(jwt_claims(&minted)["aud"], "idt");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {minted}")), "identity_token: Authorization carries it");
    assert!(r.header("x-auth-request-access-token").is_none());
    let r = api.send("GET", &check("app.test"), None, &[("authorization", token.as_str())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("authorization"), None, "keep: the answer names no Authorization");
}

#[tokio::test]
async fn cors_preflights_pass_where_the_route_allows_them() {
    let f = fx();
    let api = Agent::api();
    let preflight = [("origin", "https://spa.example"), ("access-control-request-method", "POST")];
    // Forward-auth, the original method named by the proxy (nginx/ingress) or Envoy's own.
    for host in ["cors.test", "nocors.test"] {
        let named = [&preflight[..], &[("x-original-uri", "/api/orders"), ("x-original-method", "OPTIONS")]].concat();
        let r = api.send("GET", &f.gw(host, "/.idfabric/auth"), None, &named).await;
        let envoy = api.send("OPTIONS", &f.gw(host, "/.idfabric/auth/api/orders"), None, &preflight).await;
        for r in [r, envoy] {
            if host == "cors.test" {
                assert_eq!(r.status, 200, "{host}: {}", r.body);
                assert!(r.header("x-identity-sub").is_none(), "a preflight carries no identity");
            } else {
                problem(&r, 401, "missing_token");
            }
        }
    }
    // An OPTIONS that is not a preflight (no Access-Control-Request-Method) is judged.
    let r = api.send("OPTIONS", &f.gw("cors.test", "/.idfabric/auth/api"), None, &[("origin", "https://spa.example")]).await;
    problem(&r, 401, "missing_token");
    // idfabric's own proxy: the preflight reaches the app, unauthenticated, on `allow` only.
    let r = api.send("OPTIONS", &f.gw("cors.test", "/api/orders"), None, &preflight).await;
    let seen = r.upstream();
    assert_eq!(r.json()["app"], f.echo.app(CORS));
    assert_eq!(r.json()["method"], "OPTIONS");
    assert!(!seen.contains_key("x-identity-sub"), "{seen:?}");
    let r = api.send("OPTIONS", &f.gw("nocors.test", "/api/orders"), None, &preflight).await;
    problem(&r, 401, "missing_token");
    // The other methods on the `allow` route still need a token.
    let r = api.send("POST", &f.gw("cors.test", "/api/orders"), None, &[("origin", "https://spa.example")]).await;
    problem(&r, 401, "missing_token");
}

#[test]
fn the_front_proxy_configs_are_the_documented_ones() {
    // The nginx locations above are the documented ones, word for word.
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/forward-auth.md")).unwrap();
    for line in NGINX_IDFABRIC_LOCATIONS.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(doc.contains(line), "docs/forward-auth.md lacks the tested nginx line `{line}`");
    }
    for line in ["handle /.idfabric/auth* {", "respond 404", "uri /.idfabric/auth", "copy_headers X-Identity-Sub X-Identity-Email X-Identity-Groups X-Auth-Request-User"] {
        assert!(doc.contains(line), "docs/forward-auth.md lacks the tested Caddy line `{line}`");
    }
}
