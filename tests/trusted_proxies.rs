//! idfabric behind a TLS-terminating proxy (`server.trusted_proxies`, `server.public_url`,
//! the route key `forwarded_headers`), against the real binary, the echo upstream and
//! the dev provider.
//!
//! - A real nginx (Debian's package) terminates TLS with the test certificate that
//!   `keys generate` writes and proxies to idfabric's plain listener, setting
//!   `X-Forwarded-For/Proto/Host/Port` as an ingress does; idfabric trusts 127.0.0.1
//!   only. Browsers connect from other loopback addresses (127.0.0.2, …) so the client
//!   and the proxy have different addresses. A whole sign-in through it must produce an
//!   `https://` callback and `__Host-` cookies with `Secure`, and the upstream must see
//!   the client.
//! - The same headers sent straight to idfabric by a peer it does not trust change
//!   nothing, and never reach the upstream.
//! - `public_url` wins over whatever a trusted peer says.
//!
//! nginx runs as an unprivileged process (dropped to `nobody` with `setpriv` when the
//! tests run as root) in its own temp prefix, on a free port, `daemon off`.

use crate::common;
use common::agent::*;
use common::*;
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TLS_SESSION: &str = "__Host-idfabric_session";

/// Headers a client forges to pose as coming through a proxy.
const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.test"),
    ("x-forwarded-port", "443"),
    ("forwarded", "for=203.0.113.9;proto=https;host=evil.test"),
    ("x-real-ip", "203.0.113.9"),
];

fn loopback(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, 0, last]))
}

// --- nginx ---------------------------------------------------------------------------

/// A TLS-terminating nginx in front of idfabric's plain listener; stopped on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

fn nginx_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    let found = in_path.or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()));
    found.expect("nginx is not installed: `make deps-test` (or `apt-get install nginx`) installs Debian's nginx")
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Nginx {
    /// nginx on a free loopback port, TLS with `certs/dev-tls.*` of `env`, proxying to
    /// `env`'s plain listener with the headers an ingress sets.
    fn start(env: &TestEnv) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["dev-tls.crt", "dev-tls.key"] {
            std::fs::copy(env.path().join("certs").join(f), d.join(f)).unwrap();
        }
        let port = free_port();
        let conf = format!(
            "worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {d}/dev-tls.crt;\n\
                 ssl_certificate_key {d}/dev-tls.key;\n\
                 location / {{\n\
                   proxy_pass http://127.0.0.1:{upstream};\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Host $http_host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                   proxy_set_header X-Forwarded-Proto $scheme;\n\
                   proxy_set_header X-Forwarded-Host $http_host;\n\
                   proxy_set_header X-Forwarded-Port $server_port;\n\
                 }}\n\
               }}\n\
             }}\n",
            d = d.display(),
            upstream = env.http_port,
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let bin = nginx_binary();
        let args: Vec<String> = vec![
            "-p".into(),
            d.display().to_string(),
            "-c".into(),
            d.join("nginx.conf").display().to_string(),
            "-e".into(),
            d.join("error.log").display().to_string(),
            "-g".into(),
            "daemon off;".into(),
        ];
        let mut cmd = if running_as_root() {
            // Not as root: drop to nobody, who must be able to use the prefix.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
            for f in ["dev-tls.crt", "dev-tls.key", "nginx.conf"] {
                std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let child = cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut ng = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = ng.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", ng.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen in time:\n{}", ng.error_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        ng
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// `https://{host}:{nginx port}{path}`.
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM: the master stops its workers before it exits.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- The gateway ---------------------------------------------------------------------

/// A gateway with the workforce dev provider `wf`, a session route `app` on `host`, a
/// public route `/public` and a public route `quiet.test` with `forwarded_headers: false`,
/// the audit log in `audit.log`, and `top` (more top-level YAML, e.g. `server:`).
fn gateway(echo: &Echo, host: &str, top: &str) -> (TestEnv, Gateway) {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice, email: alice@corp.test, email_verified: true, groups: [staff] }\n");
    let routes = format!(
        "  - name: public\n    match: {{ host: {host}, path_prefix: /public }}\n    auth: none\n    upstream: [{e}]\n\
         \x20 - name: app\n    match: {{ host: {host} }}\n    auth: session\n    upstream: [{e}]\n    providers: [wf]\n\
         \x20 - name: quiet\n    match: {{ host: quiet.test }}\n    auth: none\n    upstream: [{e}]\n    forwarded_headers: false\n\
         audit: {{ output: audit.log }}\n\
         session: {{ login_limits: {{ rate_per_minute: 3 }} }}\n{top}",
        e = echo.addr()
    );
    env.write_routes(&["wf"], &routes);
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
    let gw = Gateway::start(&env);
    (env, gw)
}

/// The audit line of `request_id`, waiting up to 5 s for it.
fn audit_line(env: &TestEnv, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(env.path().join("audit.log")).unwrap_or_default();
        let found = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["request_id"] == request_id);
        if let Some(line) = found {
            return line;
        }
        assert!(Instant::now() < deadline, "no audit line for {request_id}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request_id(r: &Resp) -> String {
    r.header("x-request-id").expect("every response carries X-Request-Id")
}

fn cookie_named(r: &Resp, prefix: &str) -> Option<String> {
    r.set_cookies().into_iter().find(|c| c.starts_with(prefix))
}

/// The forwarding headers the upstream received (names lowercased).
fn forwarding(up: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    up.iter()
        .filter(|(k, _)| k.starts_with("x-forwarded-") || *k == "forwarded" || *k == "x-real-ip")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

// --- Behind nginx --------------------------------------------------------------------

#[tokio::test]
async fn behind_nginx_sign_in_is_https_with_host_cookies_and_the_upstream_sees_the_client() {
    let echo = Echo::start();
    let (env, gw) = gateway(&echo, "app.test", "server: { trusted_proxies: [127.0.0.1/32] }\n");
    let ng = Nginx::start(&env);
    let app = ng.url("app.test", "/hello?x=1");
    let b = Agent::browser_with(loopback(2));

    // The app sends the browser to sign in; sign-in sends it to the provider with an
    // https callback on the host and port the browser used.
    let login = b.get(&app).await.redirect();
    assert_eq!((login.scheme(), login.path()), ("https", "/.idfabric/login"));
    let start = b.get(login.as_str()).await;
    let authz = start.redirect();
    let callback_uri = ng.url("app.test", "/.idfabric/callback");
    assert_eq!(query_of(&authz)["redirect_uri"], callback_uri, "log:\n{}", gw.log());
    let ltx = cookie_named(&start, "__Host-idfabric_ltx_").unwrap_or_else(|| panic!("binding cookie: {:?}", start.set_cookies()));
    assert!(ltx.contains("; Secure") && ltx.contains("Path=/") && !ltx.contains("Domain"), "{ltx}");
    let idp = start.set_cookie("idfabric_idp").expect("remembered provider");
    assert!(idp.contains("; Secure"), "{idp}");

    // The provider (reached directly, from an untrusted address) sends the browser back
    // through nginx; the callback checks the same https redirect URI and binding cookie.
    let callback = b.pick_user(&authz, "alice").await;
    assert_eq!(callback.as_str().split('?').next(), Some(callback_uri.as_str()));
    let done = b.get(callback.as_str()).await;
    assert_eq!(done.redirect().as_str(), app, "back to the page that asked: {}", done.body);
    let session = done.set_cookie(TLS_SESSION).unwrap_or_else(|| panic!("no {TLS_SESSION}: {:?}", done.set_cookies()));
    assert!(session.contains("; Secure") && session.contains("HttpOnly") && session.contains("Path=/"), "{session}");
    assert!(!session.contains("Domain"), "a __Host- cookie names no domain: {session}");
    assert!(done.set_cookie(SESSION).is_none(), "no plain-HTTP session cookie: {:?}", done.set_cookies());

    // The upstream sees the client through both hops, whatever the client claimed:
    // nginx appends the client to its forged X-Forwarded-For (idfabric drops what is
    // left of the client) and relays its forged `Forwarded` untouched (idfabric drops it).
    let forged = [("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6;proto=http;host=evil.test")];
    let page = b.send("GET", &app, None, &forged).await;
    let up = page.upstream();
    assert_eq!(up["x-forwarded-proto"], "https");
    assert_eq!(up["x-forwarded-host"], format!("app.test:{}", ng.port));
    assert_eq!(up["x-forwarded-for"], "127.0.0.2, 127.0.0.1", "the client (first), then nginx");
    assert!(!up.contains_key("forwarded"), "{up:?}");
    assert_eq!(up["x-forwarded-port"], ng.port.to_string(), "nginx's own other headers pass");
    assert_eq!(up["x-identity-email"], "alice@corp.test");
    let line = audit_line(&env, &request_id(&page));
    assert_eq!((line["route"].as_str(), line["client_ip"].as_str()), (Some("app"), Some("127.0.0.2")), "{line}");

    // Sign-out: the POST's Origin is the https origin, and the provider is asked to come
    // back to the https logged-out page.
    let out = b.log_out(&ng.url("app.test", "/.idfabric/logout")).await;
    let provider_logout = out.redirect();
    let back = query_of(&provider_logout)["post_logout_redirect_uri"].clone();
    assert_eq!(back, ng.url("app.test", "/.idfabric/logged-out"));
    let cleared = out.set_cookie(TLS_SESSION).expect("the session cookie is cleared");
    assert!(cleared.contains("Max-Age=0") && cleared.contains("; Secure"), "{cleared}");
    let logged_out = b.get(b.get(provider_logout.as_str()).await.redirect().as_str()).await;
    assert_eq!(logged_out.status, 200, "{}", logged_out.body);

    // Per-client limits count the forwarded client, not nginx: 127.0.0.3 spends its
    // budget (3 starts a minute) and 127.0.0.4 still has its own.
    let c3 = Agent::browser_with(loopback(3));
    let start_url = ng.url("app.test", "/.idfabric/login?rd=/hello");
    for i in 0..3 {
        assert_eq!(c3.get(&start_url).await.status, 302, "start {i} of 127.0.0.3");
    }
    let refused = c3.get(&start_url).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let c4 = Agent::browser_with(loopback(4));
    assert_eq!(c4.get(&start_url).await.status, 302, "127.0.0.4 has its own budget");
    let log = gw.log();
    assert!(log.lines().any(|l| l.contains("rate limit") && l.contains("127.0.0.3")), "the refusal names the client:\n{log}");
}

// --- Spoofed headers from an untrusted peer ------------------------------------------

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_change_nothing() {
    let echo = Echo::start();
    // No trusted_proxies: every peer is untrusted.
    let (env, _gw) = gateway(&echo, "app.test", "");
    let at = |host: &str, path: &str| format!("http://{host}:{}{path}", env.http_port);
    let app = at("app.test", "/hello");
    let b = Agent::browser_with(loopback(2));
    let get = |url: String| {
        let b = &b;
        async move { b.send("GET", &url, None, SPOOFED).await }
    };

    let login = get(app.clone()).await.redirect();
    let start = get(login.to_string()).await;
    let authz = start.redirect();
    assert_eq!(query_of(&authz)["redirect_uri"], at("app.test", "/.idfabric/callback"), "an http callback on the real host");
    let ltx = cookie_named(&start, "idfabric_ltx_").expect("a plain binding cookie");
    assert!(!ltx.contains("Secure"), "{ltx}");
    assert!(cookie_named(&start, "__Host-").is_none(), "{:?}", start.set_cookies());

    let callback = b.pick_user(&authz, "alice").await;
    let done = get(callback.to_string()).await;
    assert_eq!(done.redirect().as_str(), app);
    let session = done.set_cookie(SESSION).unwrap_or_else(|| panic!("no {SESSION}: {:?}", done.set_cookies()));
    assert!(!session.contains("Secure"), "{session}");
    assert!(done.set_cookie(TLS_SESSION).is_none());

    let page = get(app.clone()).await;
    let up = page.upstream();
    let want = |host: &str| {
        vec![
            ("x-forwarded-for".to_string(), "127.0.0.2".to_string()),
            ("x-forwarded-host".to_string(), format!("{host}:{}", env.http_port)),
            ("x-forwarded-proto".to_string(), "http".to_string()),
        ]
    };
    assert_eq!(forwarding(&up), want("app.test"), "the client's own forwarding headers are replaced, not passed on");
    let line = audit_line(&env, &request_id(&page));
    assert_eq!(line["client_ip"], "127.0.0.2", "{line}");

    // A public route says the same; one with `forwarded_headers: false` says nothing,
    // and still passes none of the client's on.
    let public = get(at("app.test", "/public/x")).await.upstream();
    assert_eq!(forwarding(&public), want("app.test"));
    let quiet = get(at("quiet.test", "/x")).await.upstream();
    assert_eq!(forwarding(&quiet), Vec::<(String, String)>::new());
}

// --- public_url ----------------------------------------------------------------------

#[tokio::test]
async fn public_url_wins_over_what_a_trusted_proxy_says() {
    let echo = Echo::start();
    let (env, _gw) = gateway(
        &echo,
        "app.example.com",
        "server: { trusted_proxies: [127.0.0.0/8], public_url: \"https://app.example.com\" }\n",
    );
    let at = |path: &str| format!("http://app.example.com:{}{path}", env.http_port);
    // A trusted peer (127.0.0.2) that claims plain http on another host.
    let claims: &[(&str, &str)] = &[
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "evil.test:8080"),
    ];
    let b = Agent::browser_with(loopback(2));
    let login = b.send("GET", &at("/hello"), None, claims).await.redirect();
    let start = b.send("GET", login.as_str(), None, claims).await;
    let authz = start.redirect();
    assert_eq!(query_of(&authz)["redirect_uri"], "https://app.example.com/.idfabric/callback");
    let ltx = cookie_named(&start, "__Host-idfabric_ltx_").unwrap_or_else(|| panic!("{:?}", start.set_cookies()));
    assert!(ltx.contains("; Secure"), "{ltx}");

    let r = b.send("GET", &at("/public/x"), None, claims).await;
    let up = r.upstream();
    assert_eq!(up["x-forwarded-proto"], "https");
    assert_eq!(up["x-forwarded-host"], "app.example.com");
    assert_eq!(up["x-forwarded-for"], "198.51.100.7, 127.0.0.2", "the client still comes from the trusted chain");
    let line = audit_line(&env, &request_id(&r));
    assert_eq!(line["client_ip"], "198.51.100.7", "{line}");
}

// --- Configuration -------------------------------------------------------------------

#[test]
fn bad_trusted_proxies_and_public_urls_are_refused_at_load() {
    let env = TestEnv::new();
    env.write_wf_provider("  - { name: alice, email: alice@corp.test }\n");
    let routes = "  - name: app\n    upstream: [127.0.0.1:9]\n\
                  server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.1/8, not-an-ip]\n  public_url: https://app.example.com/app?x=1\n";
    env.write_routes(&["wf"], routes);
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    let text = format!("{out}{err}");
    assert_ne!(code, 0, "{text}");
    let line_of = |key: &str| {
        let text = std::fs::read_to_string(env.routes_path()).unwrap();
        text.lines().position(|l| l.trim_start().starts_with(key)).map(|i| i + 1).unwrap()
    };
    // `check --config routes.yaml` names the file as given.
    let prefix = |key: &str| format!("routes.yaml:{}: key `server.{key}`", line_of(&format!("{key}:")));
    assert!(text.contains(&format!("{}: entry 2: `10.0.0.1/8` has host bits set", prefix("trusted_proxies"))), "{text}");
    assert!(text.contains(&format!("{}: entry 3: `not-an-ip` is not an IP address or CIDR", prefix("trusted_proxies"))), "{text}");
    assert!(text.contains(&format!("{}: `https://app.example.com/app?x=1` must not have a path", prefix("public_url"))), "{text}");
}
