//! Shared integration-test harness: a temp directory with generated keys and config
//! files, the real `idfabric` binary started on free loopback ports, and a fake
//! upstream identity provider (discovery + JWKS over real HTTP) whose keys and
//! availability the test controls.
//!
//! Each test file is its own crate; not every helper is used by every file.
#![allow(dead_code)]

pub mod agent;
pub mod fakeidp;
pub mod fixtures;
pub mod oidc;
pub mod redis;
pub mod redis_topology;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_idfabric");

/// A free loopback port (bound then released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory holding `routes.yaml`, `providers/` and `certs/` for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub admin_port: u16,
}

impl TestEnv {
    /// Creates the directory and generates the development key set into `certs/`.
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("providers")).unwrap();
        let out = Command::new(BIN).args(["keys", "generate", "--dir"]).arg(dir.path().join("certs")).output().unwrap();
        assert!(out.status.success(), "keys generate failed: {}", String::from_utf8_lossy(&out.stderr));
        TestEnv { dir, http_port: free_port(), admin_port: free_port() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn routes_path(&self) -> PathBuf {
        self.path().join("routes.yaml")
    }

    pub fn proxy(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The `admin:` line of a test config: this env's admin port, guarded by the token
    /// `keys generate` wrote to `certs/admin.token`.
    pub fn admin_line(&self) -> String {
        format!("admin: {{ listen: 127.0.0.1:{}, token_file: certs/admin.token }}", self.admin_port)
    }

    /// The admin token (`certs/admin.token`).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.path().join("certs/admin.token")).unwrap().trim().to_string()
    }

    /// A request to a guarded admin path (`/providers`, `/access`, `/sessions/revoke`)
    /// of this env's gateway, with the admin token.
    pub fn admin_call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client().request(method, format!("{}{path}", self.admin())).bearer_auth(self.admin_token())
    }

    /// The issuer a dev provider with this id must use in this env.
    pub fn dev_issuer(&self, id: &str) -> String {
        format!("{}/.idfabric/dev/{id}", self.proxy())
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    /// Writes `routes.yaml` with this env's ports, the given enabled providers and the
    /// given `routes:` body (YAML list items, already indented by two spaces).
    pub fn write_routes(&self, providers: &[&str], routes: &str) {
        let text = format!(
            "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [{providers}]\n\
             broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n\
             routes:\n{routes}",
            http = self.http_port,
            admin = self.admin_line(),
            providers = providers.join(", "),
        );
        self.write("routes.yaml", &text);
    }

    /// Writes a dev provider file: `shape` is entra|okta|auth0|cognito|firebase; `extra` is
    /// more YAML (must include `users:` unless `default_users` is wanted).
    /// The workforce provider `wf` (Entra-shaped, client `wf-client`, audience
    /// `api://idfabric`) with these `users:` list items (YAML lines `  - {…}`).
    pub fn write_wf_provider(&self, users: &str) {
        let extra = format!("client_id: wf-client\naudiences: [api://idfabric]\nusers:\n{users}");
        self.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", &extra);
    }

    pub fn write_dev_provider(&self, id: &str, population: &str, shape: &str, key: &str, extra: &str) {
        let users = if extra.contains("users:") {
            String::new()
        } else {
            "users:\n  - { name: alice, email: alice@example.com, email_verified: true, groups: [hr, staff], roles: [reader], scopes: [orders:read], mfa: true }\n  - { name: bob, email: bob@example.com, groups: [staff], mfa: false }\n".to_string()
        };
        let text = format!(
            "id: {id}\nkind: dev\npopulation: {population}\nshape: {shape}\nissuer: {issuer}\nsigning_key: certs/{key}\n{extra}\n{users}",
            issuer = self.dev_issuer(id)
        );
        self.write(&format!("providers/{id}.yaml"), &text);
    }

    /// Runs the binary with arguments in this env's directory and returns (status, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN).args(args).current_dir(self.path()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `idfabric token mint` for a dev provider user.
    pub fn mint(&self, provider: &str, user: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "mint", "--provider", provider, "--user", user, "--config", "routes.yaml"];
        args.extend_from_slice(extra);
        let (code, out, err) = self.run(&args);
        assert_eq!(code, 0, "mint failed: {err}");
        out.trim().to_string()
    }
}

/// A running `idfabric serve`, killed on drop. Its stderr is captured for assertions.
pub struct Gateway {
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts `idfabric serve` and waits until `/readyz` answers 200 (or 15 s pass,
    /// for tests that expect a provider without keys).
    pub fn start(env: &TestEnv) -> Gateway {
        Self::start_with(env, &[], true)
    }

    pub fn start_with(env: &TestEnv, envs: &[(&str, &str)], wait_ready: bool) -> Gateway {
        Self::start_args(env, &[], envs, wait_ready)
    }

    /// `idfabric serve --config <env>/routes.yaml` plus `args` (e.g. `--upgrade`).
    pub fn start_args(env: &TestEnv, args: &[&str], envs: &[(&str, &str)], wait_ready: bool) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"]).arg(env.routes_path()).args(args).current_dir(env.path());
        cmd.env("IDFABRIC_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let gw = Gateway { child, log };
        gw.wait_listening(env, wait_ready);
        gw
    }

    fn wait_listening(&self, env: &TestEnv, wait_ready: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let want = if wait_ready { "/readyz" } else { "/healthz" };
        while Instant::now() < deadline {
            if let Ok(code) = blocking_status(&format!("{}{want}", env.admin())) {
                if code == 200 && std::net::TcpStream::connect(("127.0.0.1", env.http_port)).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("gateway did not become {want} in time; log:\n{}", self.log.lock().unwrap());
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `limit` for the process to exit; its exit status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the gateway process (e.g. "HUP" to reload its configuration).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `GET` status with a tiny std-only client (used while waiting for start-up).
pub fn blocking_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr: SocketAddr = host.parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))
}

/// An async HTTP client for tests (no proxy, no redirects followed).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The echo app's view of a proxied request.
pub async fn echo_headers(resp: reqwest::Response) -> serde_json::Map<String, serde_json::Value> {
    let body: serde_json::Value = resp.json().await.unwrap();
    body["headers"].as_object().cloned().unwrap_or_default()
}

/// Starts `idfabric echo` on a free port; killed on drop.
pub struct Echo {
    child: Child,
    pub port: u16,
}

impl Echo {
    pub fn start() -> Echo {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["echo", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "echo did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Echo { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- Processes shared by every test of one file (one start, tests in parallel) -------
//
// A server kept in a `static` is never dropped, so it is started behind a small `sh`
// watchdog that kills it when the test process exits (its stdin pipe closes then).

/// Spawns `idfabric args...` in `dir`, tethered to this test process (see above).
pub fn spawn_tethered(args: &[String], dir: &Path, envs: &[(&str, &str)], stderr: Stdio) -> Child {
    // `IDFABRIC_TEST_RMDIR`: a temp directory to remove once the server is gone.
    let script = r#""$@" </dev/null & c=$!; read _ignored; kill $c 2>/dev/null; wait $c
        case "$IDFABRIC_TEST_RMDIR" in /tmp/*) rm -rf "$IDFABRIC_TEST_RMDIR";; esac"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("idfabric-tether").arg(BIN).args(args).current_dir(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(stderr).spawn().unwrap()
}

/// Stops a tethered process: closing its stdin makes the watchdog kill the server.
fn untether(child: &mut Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// `idfabric serve` for a whole test file: safe to keep in a `static`.
pub struct SharedGateway {
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl SharedGateway {
    pub fn start(env: &TestEnv) -> SharedGateway {
        let args = vec!["serve".to_string(), "--config".into(), env.routes_path().display().to_string()];
        let dir = env.path().display().to_string();
        let envs = [("IDFABRIC_LOG", "info"), ("NO_COLOR", "1"), ("IDFABRIC_TEST_RMDIR", dir.as_str())];
        let mut child = spawn_tethered(&args, env.path(), &envs, Stdio::piped());
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = blocking_status(&format!("{}/readyz", env.admin())).is_ok_and(|c| c == 200);
            if ready && std::net::TcpStream::connect(("127.0.0.1", env.http_port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not become ready; log:\n{}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
        SharedGateway { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for SharedGateway {
    fn drop(&mut self) {
        untether(&mut self.child);
    }
}

/// One `idfabric echo` process listening on `n` free ports; each port is its own app
/// (the echo body's `app` field is `echo-{port}`). Safe to keep in a `static`.
pub struct Echoes {
    child: Child,
    pub ports: Vec<u16>,
}

impl Echoes {
    pub fn start(n: usize) -> Echoes {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut args = vec!["echo".to_string()];
        for p in &ports {
            args.push("--listen".into());
            args.push(format!("127.0.0.1:{p}"));
        }
        let child = spawn_tethered(&args, &std::env::temp_dir(), &[], Stdio::null());
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
                assert!(Instant::now() < deadline, "echo did not start on {p}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Echoes { child, ports }
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// The `app` name the echo on port `i` reports.
    pub fn app(&self, i: usize) -> String {
        format!("echo-{}", self.ports[i])
    }
}

impl Drop for Echoes {
    fn drop(&mut self) {
        untether(&mut self.child);
    }
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    free_port()
}

/// Sends raw bytes as one HTTP/1.1 request and returns (status, head, body) of the reply.
pub fn raw_request(port: u16, request: &[u8]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Decodes the claims of a compact JWS without verifying it.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWS has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Scrapes the admin `/metrics` text.
pub async fn scrape_metrics(env: &TestEnv) -> String {
    client().get(format!("{}/metrics", env.admin())).send().await.unwrap().text().await.unwrap()
}

/// The value of one exposition line `name{labels}` (labels exactly as rendered), or 0.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == series).and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(0.0)
}

/// How long a replica may still serve a session that another replica ended (logout,
/// revocation): its per-process cache of session lookups keeps one for at most this.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(1);

/// Polls `check` until it holds, at most the session cache TTL plus a margin for the
/// requests themselves; panics naming `what` otherwise. Returns how long it took.
pub async fn within_session_cache_ttl<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    let limit = SESSION_CACHE_TTL + Duration::from_millis(1500);
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: still not so after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
