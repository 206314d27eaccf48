//! Interop with OpenID software nobody here wrote, against the real binary.
//!
//! - **Upstream**: panva's `oidc-provider` (OpenID Certified OP, `tests/interop/op.mjs`)
//!   is a `kind: oidc` provider of idfabric. A cookie-keeping agent drives the whole
//!   browser chain: app route → `/.idfabric/login` → the OP's `/auth` → its login form
//!   → back to `/.idfabric/callback` → session → the echo app receives the normalised
//!   identity headers; then session refresh, RP-initiated logout at the OP's
//!   `end_session_endpoint`, and refused tampered callbacks.
//! - **Downstream**: `openid-client` v6 (OpenID Certified RP, `tests/interop/rp.mjs`)
//!   signs in at idfabric's broker: discovery, code + PKCE + nonce + state, ID token
//!   validation, userinfo, refresh, introspection, revocation, end-session URL.
//!
//! The node packages are pinned in `tests/interop/package-lock.json`. When
//! `tests/interop/node_modules` is missing (a fresh clone), the first test runs
//! `npm ci` there itself (CI does it beforehand, see `.ci/run`).

use crate::common;
use common::agent::*;
use common::*;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use url::Url;

// --- Node side: packages and processes ----------------------------------------------

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Installs the pinned node packages once per test run when they are missing or older
/// than the lockfile. Panics with what to run by hand when that is impossible.
fn node_modules() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let dir = interop_dir();
        if Command::new("node").arg("--version").output().is_err() {
            return Err("`node` is not installed (Node.js 20 or newer is needed: apt-get install nodejs npm)".into());
        }
        let installed = dir.join("node_modules/.package-lock.json");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let fresh = match (modified(&installed), modified(&dir.join("package-lock.json"))) {
            (Some(i), Some(l)) => i >= l,
            _ => false,
        };
        let present = ["oidc-provider", "openid-client"].iter().all(|p| dir.join("node_modules").join(p).join("package.json").exists());
        if fresh && present {
            return Ok(());
        }
        eprintln!("interop: installing the pinned node packages (npm ci in {})", dir.display());
        let mut child = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run npm ({e}); run `npm ci --prefix tests/interop` by hand"))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("npm ci failed ({s}); run `npm ci --prefix tests/interop` and look at its output")),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    return Err("npm ci took more than 5 minutes; run `npm ci --prefix tests/interop` by hand".into());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => return Err(format!("npm ci: {e}")),
            }
        }
    });
    if let Err(e) = r {
        panic!("interop tests need the node packages of tests/interop: {e}");
    }
}

/// A node script from `tests/interop/`, tethered to this test (it exits when its stdin
/// closes) and killed on drop.
pub(crate) struct Node {
    child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Node {
    /// Starts `node script args…` and waits for its `READY <value>` line.
    fn start(script: &str, args: &[String]) -> (Node, String) {
        node_modules();
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let node = Node { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = line.strip_prefix("READY ") {
                        return (node, v.trim().to_string());
                    }
                }
                Err(_) => panic!("{script} did not print READY; stderr:\n{}", node.stderr()),
            }
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- Upstream: oidc-provider as a `kind: oidc` provider -------------------------------

const OP_ID: &str = "interop-op";
const OP_CLIENT: &str = "idfabric-interop";
const OP_SECRET: &str = "s3cret:with/odd+chars%";

pub(crate) struct Upstream {
    pub(crate) env: TestEnv,
    _echo: Echo,
    gw: Gateway,
    op: Node,
    pub(crate) issuer: String,
}

impl Upstream {
    /// oidc-provider, an echo app and idfabric with `app.test` behind the OP.
    /// `id_token_ttl`: the OP's ID/access token lifetime (idfabric refreshes a session
    /// 60 s before it ends).
    fn start(id_token_ttl: u64) -> Upstream {
        Self::start_with(id_token_ttl, None)
    }

    /// `broker_client`: also serve the broker with this relying party (redirect URI,
    /// post-logout redirect URI); broker sign-ins return to idfabric on 127.0.0.1.
    fn start_with(id_token_ttl: u64, broker_client: Option<(&str, &str)>) -> Upstream {
        Self::start_full(id_token_ttl, broker_client, false)
    }

    /// The OP also sends OpenID Connect Back-Channel Logout to idfabric
    /// (`tests/continuous_access.rs`).
    pub(crate) fn start_with_backchannel_logout() -> Upstream {
        Self::start_full(3600, None, true)
    }

    fn start_full(id_token_ttl: u64, broker_client: Option<(&str, &str)>, backchannel: bool) -> Upstream {
        let env = TestEnv::new();
        let echo = Echo::start();
        let app = format!("http://app.test:{}", env.http_port);
        let backchannel_args =
            if backchannel { vec!["--backchannel-logout-uri".to_string(), format!("{}/.idfabric/backchannel-logout", env.proxy())] } else { vec![] };
        let (op, issuer) = Node::start(
            "op.mjs",
            &[
                "--tether".into(),
                "--port".into(),
                "0".into(),
                "--client-id".into(),
                OP_CLIENT.into(),
                "--client-secret".into(),
                OP_SECRET.into(),
                "--redirect-uri".into(),
                format!("{app}/.idfabric/callback"),
                "--redirect-uri".into(),
                format!("{}/.idfabric/callback", env.proxy()),
                "--post-logout-redirect-uri".into(),
                format!("{app}/.idfabric/logged-out"),
                "--id-token-ttl".into(),
                id_token_ttl.to_string(),
            ]
            .into_iter()
            .chain(backchannel_args)
            .collect::<Vec<String>>(),
        );
        env.write(
            &format!("providers/{OP_ID}.yaml"),
            &format!(
                "id: {OP_ID}\nkind: oidc\npopulation: workforce\ndisplay_name: Interop OP\nissuer: {issuer}\n\
                 client_id: {OP_CLIENT}\nclient_secret: \"{OP_SECRET}\"\nscopes: [openid, profile, email, groups]\n"
            ),
        );
        let routes = format!(
            "  - name: app\n    match: {{ host: app.test }}\n    upstream: [{}]\n    providers: [{OP_ID}]\n\
             \x20   require: {{ population: workforce, groups_any: [admins] }}\n",
            echo.addr()
        );
        match broker_client {
            None => env.write_routes(&[OP_ID], &routes),
            Some((redirect_uri, post_logout)) => env.write(
                "routes.yaml",
                &format!(
                    "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [{OP_ID}]\n\
                     broker:\n  issuer: {proxy}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
                     \x20   - client_id: {RP_CLIENT}\n      client_secret: \"{RP_SECRET}\"\n      redirect_uris: [{redirect_uri}]\n\
                     \x20     post_logout_redirect_uris: [{post_logout}]\n\
                     routes:\n{routes}",
                    http = env.http_port,
                    admin = env.admin_port,
                    proxy = env.proxy(),
                ),
            ),
        }
        let (code, out, err) = env.run(&["check", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "idfabric check against oidc-provider:\n{out}{err}");
        let gw = Gateway::start(&env);
        Upstream { env, _echo: echo, gw, op, issuer }
    }

    pub(crate) fn at(&self, path: &str) -> String {
        format!("http://app.test:{}{path}", self.env.http_port)
    }

    /// Browser → app → idfabric login → the OP's authorize → its login form, signed in
    /// as `login`. Returns the authorize request idfabric built and the OP's redirect
    /// back to idfabric's callback (not yet followed).
    pub(crate) async fn through_op(&self, b: &Agent, path: &str, login: &str) -> (Url, Url) {
        let authz = self.to_op(b, path).await;
        assert!(authz.as_str().starts_with(&format!("{}/auth?", self.issuer)), "{authz}");
        let interaction = self.op_redirect(b.get(authz.as_str()).await);
        assert!(interaction.path().starts_with("/interaction/"), "the OP asks for a login: {interaction}");
        let form = b.get(interaction.as_str()).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let action = form.url.join(&unescape(between(&form.body, "<form method=\"post\" action=\"", "\"").unwrap())).unwrap();
        let resume = self.op_redirect(b.post(action.as_str(), &[("login", login)]).await);
        let callback = self.op_redirect(b.get(resume.as_str()).await);
        assert_eq!(callback.path(), "/.idfabric/callback", "{callback}");
        (authz, callback)
    }

    /// From an app page to the OP's authorization endpoint: app → login → OP.
    pub(crate) async fn to_op(&self, b: &Agent, path: &str) -> Url {
        let login = b.get(&self.at(path)).await.redirect();
        assert_eq!(login.path(), "/.idfabric/login", "an anonymous browser is sent to the login page");
        b.get(login.as_str()).await.redirect()
    }

    /// The OP answers 302 or 303: the resolved `Location`.
    pub(crate) fn op_redirect(&self, r: Resp) -> Url {
        assert!(matches!(r.status, 302 | 303), "OP {} answered {}: {}\nOP log:\n{}", r.url, r.status, r.body, self.op.stderr());
        r.location()
    }

    pub(crate) fn log(&self) -> String {
        self.gw.log()
    }
}

#[tokio::test]
async fn oidc_provider_signs_a_browser_in_through_idfabric() {
    let up = Upstream::start(3600);
    let b = Agent::browser();
    let (authz, callback) = up.through_op(&b, "/reports?q=1", "ada").await;
    let aq = query_of(&authz);
    assert_eq!(aq["client_id"], OP_CLIENT);
    assert_eq!(aq["code_challenge_method"], "S256");
    assert_eq!(aq["redirect_uri"], up.at("/.idfabric/callback"));
    let cq = query_of(&callback);
    assert_eq!(cq["state"], aq["state"]);
    assert_eq!(cq["iss"], up.issuer, "oidc-provider sends RFC 9207 `iss` in the authorization response");

    let r = b.get(callback.as_str()).await;
    assert_eq!(r.status, 302, "callback refused: {}\nidfabric log:\n{}\nOP log:\n{}", r.body, up.log(), up.op.stderr());
    assert_eq!(r.raw_location().as_deref(), Some("/reports?q=1"));
    let page = b.get(&up.at("/reports?q=1")).await;
    let h = page.upstream();
    assert_eq!(decoded(&h["x-identity-sub"]), format!("{OP_ID}:u-1815-ada"));
    assert_eq!(h["x-identity-provider"], OP_ID);
    assert_eq!(h["x-identity-population"], "workforce");
    assert_eq!(decoded(&h["x-identity-tenant"]), "127.0.0.1", "tenant: the issuer's host");
    assert_eq!(decoded(&h["x-identity-email"]), "ada@interop.test");
    assert_eq!(decoded(&h["x-identity-name"]), "Ada Lovelace");
    assert_eq!(decoded(&h["x-identity-username"]), "ada");
    assert_eq!(decoded(&h["x-identity-groups"]), "engineers,admins");
    assert_eq!(h["x-identity-mfa"], "false", "amr [pwd] is no second factor");
    let token = h["x-identity-token"].as_str().expect("an idfabric identity token");
    assert_eq!(jwt_claims(token)["sub"], format!("{OP_ID}:u-1815-ada"));

    let me = b.get(&up.at("/.idfabric/me")).await.json();
    assert_eq!(me["provider_kind"], "oidc");
    assert_eq!(me["subject"], "u-1815-ada");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["groups_complete"], true);
    assert_eq!(me["amr"], serde_json::json!(["pwd"]));
    assert_eq!(me["acr"], "urn:interop:loa:1");
    assert_eq!(me["mfa"], false);
    assert!(me["auth_time"].as_i64().is_some(), "{me}");
    assert_eq!(me["token_use"], "session");

    // A user the route's group rule refuses.
    let g = Agent::browser();
    let (_, cb) = up.through_op(&g, "/", "grace").await;
    let r = g.get(cb.as_str()).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let refused = g.get(&up.at("/")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let me = g.get(&up.at("/.idfabric/me")).await.json();
    assert_eq!(me["email_verified"], false, "the OP says false: kept false, not null");
    assert_eq!(me["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(me["mfa"], true, "a knowledge and a possession factor");

    // Logout: the session ends, then RP-initiated logout at oidc-provider.
    let out = b.log_out(&up.at("/.idfabric/logout")).await;
    let end = out.redirect();
    assert!(end.as_str().starts_with(&format!("{}/session/end?", up.issuer)), "{end}");
    let eq = query_of(&end);
    assert_eq!(eq["post_logout_redirect_uri"], up.at("/.idfabric/logged-out"));
    assert_eq!(eq["client_id"], OP_CLIENT);
    assert!(eq.contains_key("id_token_hint"));
    let confirm = b.get(end.as_str()).await;
    assert_eq!(confirm.status, 200, "oidc-provider's logout confirmation: {}", confirm.body);
    let action = end.join(&unescape(between(&confirm.body, "action=\"", "\"").expect("logout form"))).unwrap();
    let mut form = hidden_inputs(&confirm.body);
    form.push(("logout".into(), "yes".into()));
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let back = up.op_redirect(b.post(action.as_str(), &fields).await);
    assert_eq!(back.as_str(), up.at("/.idfabric/logged-out"), "the OP sends the browser back to idfabric");
    assert_eq!(b.get(back.as_str()).await.status, 200);
    let again = b.get(&up.at("/reports")).await.redirect();
    assert_eq!(again.path(), "/.idfabric/login", "signed out at idfabric");
    // …and at the OP: a new sign-in asks for the login again.
    let authz = up.to_op(&b, "/").await;
    assert!(up.op_redirect(b.get(authz.as_str()).await).path().starts_with("/interaction/"));
}

#[tokio::test]
async fn tampered_callbacks_from_oidc_provider_are_refused() {
    let up = Upstream::start(3600);
    let b = Agent::browser();
    let (_, callback) = up.through_op(&b, "/", "ada").await;
    let with = |k: &str, v: &str| {
        let mut u = callback.clone();
        let pairs: Vec<(String, String)> =
            query_of(&callback).into_iter().map(|(a, b)| if a == k { (a, v.to_string()) } else { (a, b) }).collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u
    };
    let state = query_of(&callback)["state"].clone();
    let forged = b.get(with("state", &format!("{state}x")).as_str()).await;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("expired"), "{}", forged.body);
    assert!(b.cookie("app.test", SESSION).is_none());

    // A mix-up (RFC 9207): the code claims to come from another issuer.
    let mixed = b.get(with("iss", "http://127.0.0.1:1/evil").as_str()).await;
    assert_eq!(mixed.status, 400, "{}\n{}", mixed.body, up.log());
    assert!(b.cookie("app.test", SESSION).is_none());
    // The state was spent by that attempt: the genuine callback is now refused too.
    let replay = b.get(callback.as_str()).await;
    assert_eq!(replay.status, 400, "{}", replay.body);

    // A genuine code replayed in a new sign-in's callback: oidc-provider refuses it.
    let b = Agent::browser();
    let (_, second) = up.through_op(&b, "/", "ada").await;
    let mut stolen = second.clone();
    let code = query_of(&callback)["code"].clone();
    let pairs: Vec<(String, String)> =
        query_of(&second).into_iter().map(|(a, v)| if a == "code" { (a, code.clone()) } else { (a, v) }).collect();
    stolen.query_pairs_mut().clear().extend_pairs(pairs);
    let r = b.get(stolen.as_str()).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("invalid_grant"), "{}", r.body);
    assert!(b.cookie("app.test", SESSION).is_none());
}

#[tokio::test]
async fn sessions_refresh_against_oidc_provider() {
    // Tokens live 66 s: idfabric refreshes a session once fewer than 60 s are left.
    let up = Upstream::start(66);
    let b = Agent::browser();
    let (_, callback) = up.through_op(&b, "/", "ada").await;
    let r = b.get(callback.as_str()).await;
    assert_eq!(r.status, 302, "{}\n{}", r.body, up.log());
    let before = b.get(&up.at("/.idfabric/me")).await.json();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let page = b.get(&up.at("/")).await;
    let h = page.upstream();
    assert_eq!(decoded(&h["x-identity-email"]), "ada@interop.test", "claims survive the refresh\n{}", up.log());
    assert_eq!(decoded(&h["x-identity-groups"]), "engineers,admins");
    let after = b.get(&up.at("/.idfabric/me")).await.json();
    assert!(after["exp"].as_i64() > before["exp"].as_i64(), "refreshed: {before} → {after}\n{}", up.log());
    assert_eq!(after["sub"], before["sub"]);
}

// --- Downstream: openid-client against idfabric's broker ------------------------------

const RP_CLIENT: &str = "interop-rp";
const RP_SECRET: &str = "rp-s3cret:with/odd+chars%";

/// Runs `node rp.mjs args…` to completion and parses the JSON line it prints.
fn rp(args: &[String]) -> Value {
    node_modules();
    let out = Command::new("node").arg("rp.mjs").args(args).current_dir(interop_dir()).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rp.mjs {args:?} failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("rp.mjs printed no JSON ({e}): {stdout}"))
}

/// `rp.mjs start`: discovery at the broker, then the authorization URL openid-client built.
fn rp_start(issuer: &str, redirect_uri: &str, state_file: &Path, idp: Option<&str>) -> Url {
    let mut args: Vec<String> = vec![
        "start".into(),
        "--issuer".into(),
        issuer.into(),
        "--client-id".into(),
        RP_CLIENT.into(),
        "--client-secret".into(),
        RP_SECRET.into(),
        "--redirect-uri".into(),
        redirect_uri.into(),
        "--state-file".into(),
        state_file.display().to_string(),
    ];
    if let Some(idp) = idp {
        args.extend(["--idp".into(), idp.into()]);
    }
    let started = rp(&args);
    let authz = Url::parse(started["authorization_url"].as_str().unwrap()).unwrap();
    assert_eq!(authz.as_str().split('?').next(), Some(format!("{issuer}/authorize").as_str()), "{started}");
    let q = query_of(&authz);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], RP_CLIENT);
    assert!(q.contains_key("nonce") && q.contains_key("state"), "{q:?}");
    authz
}

/// The browser part of a broker sign-in: follows every redirect from the authorization
/// URL, signs `user` in at whichever provider page comes up (the dev provider's user
/// picker or oidc-provider's login form), and stops at the relying party's redirect URI.
async fn browse_to_rp(b: &Agent, authz: &Url, redirect_uri: &str, user: &str, log: impl Fn() -> String) -> Url {
    let mut url = authz.clone();
    let mut hops = Vec::new();
    loop {
        assert!(hops.len() < 16, "too many redirects: {hops:#?}\n{}", log());
        hops.push(url.to_string());
        if url.as_str().starts_with(redirect_uri) {
            return url;
        }
        if url.path().starts_with("/.idfabric/dev/") && url.path().ends_with("/authorize") {
            url = b.pick_user(&url, user).await;
            continue;
        }
        if url.path().starts_with("/interaction/") {
            let form = b.get(url.as_str()).await;
            assert_eq!(form.status, 200, "{}", form.body);
            let action = url.join(&unescape(between(&form.body, "<form method=\"post\" action=\"", "\"").unwrap())).unwrap();
            url = b.post(action.as_str(), &[("login", user)]).await.location();
            continue;
        }
        let r = b.get(url.as_str()).await;
        assert!(matches!(r.status, 302 | 303), "{} answered {}: {}\nhops: {hops:#?}\n{}", r.url, r.status, r.body, log());
        url = r.location();
    }
}

/// `rp.mjs finish`: everything after the browser, as a JSON report; asserts that
/// openid-client accepted every step and that the broker behaved as specified.
fn rp_finish(state_file: &Path, callback: &Url, post_logout: &str, issuer: &str, log: impl Fn() -> String) -> Value {
    let report = rp(&[
        "finish".into(),
        "--state-file".into(),
        state_file.display().to_string(),
        "--callback".into(),
        callback.to_string(),
        "--post-logout-redirect-uri".into(),
        post_logout.into(),
    ]);
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "openid-client refused something:\n{pretty}\n{}", log());
    let ok = &report["ok"];
    let claims = &report["id_token_claims"];
    assert_eq!(claims["iss"], issuer, "{pretty}");
    assert_eq!(claims["aud"], RP_CLIENT, "{pretty}");
    let sub = claims["sub"].as_str().unwrap();
    assert_eq!(ok["userinfo"]["sub"], sub, "{pretty}");
    assert_eq!(ok["introspection_access"]["active"], true, "{pretty}");
    assert_eq!(ok["introspection_access"]["client_id"], RP_CLIENT, "{pretty}");
    assert_eq!(ok["introspection_access"]["sub"], sub, "{pretty}");
    assert_eq!(report["token_response"]["has_refresh_token"], true, "{pretty}");
    assert_eq!(ok["refresh"]["access_token_differs"], true, "{pretty}");
    assert_eq!(ok["refresh"]["refresh_token_rotated"], true, "{pretty}");
    assert_eq!(ok["refresh"]["id_token_sub"], sub, "{pretty}");
    assert_eq!(ok["introspection_refresh"]["active"], true, "{pretty}");
    assert_eq!(ok["introspection_after_revocation"]["active"], false, "{pretty}");
    assert_eq!(ok["refresh_after_revocation_refused"]["error"], "invalid_grant", "{pretty}");
    assert_eq!(ok["refresh_reuse_refused"]["error"], "invalid_grant", "a spent refresh token: {pretty}");
    assert_eq!(ok["introspection_access_after_revocation"]["active"], false, "{pretty}");
    // openid-client parses the broker's RFC 6750 / RFC 7617 challenges.
    let refused = &ok["userinfo_after_revocation_refused"];
    assert_eq!(refused["status"], 401, "{pretty}");
    assert_eq!(refused["challenge"]["scheme"], "bearer", "{pretty}");
    assert_eq!(refused["challenge"]["parameters"]["error"], "invalid_token", "{pretty}");
    let wrong = &ok["wrong_secret_refused"];
    assert_eq!(wrong["status"], 401, "{pretty}");
    assert_eq!(wrong["code"], "OAUTH_WWW_AUTHENTICATE_CHALLENGE", "{pretty}");
    assert_eq!(wrong["cause"][0]["scheme"], "basic", "{pretty}");
    let end = Url::parse(ok["end_session_url"].as_str().unwrap()).unwrap();
    assert_eq!(end.as_str().split('?').next(), Some(format!("{issuer}/logout").as_str()));
    report
}

#[tokio::test]
async fn openid_client_signs_in_at_the_broker() {
    let env = TestEnv::new();
    let echo = Echo::start();
    env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", "client_id: wf-client\ndomains: [corp.test]\n");
    env.write_dev_provider("cu", "customer", "auth0", "dev-idp-customer.pem", "client_id: cu-client\naudiences: [https://api.shop.test]\n");
    let issuer = format!("{}/broker", env.proxy());
    let rp_base = format!("http://127.0.0.1:{}", free_port());
    let redirect_uri = format!("{rp_base}/callback");
    let post_logout = format!("{rp_base}/signed-out");
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [wf, cu]\n\
             broker:\n  issuer: {issuer}\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - client_id: {RP_CLIENT}\n      client_secret: \"{RP_SECRET}\"\n      redirect_uris: [{redirect_uri}]\n\
             \x20     post_logout_redirect_uris: [{post_logout}]\n\
             routes:\n  - name: app\n    match: {{ host: app.test }}\n    upstream: [{echo}]\n",
            http = env.http_port,
            admin = env.admin_port,
            echo = echo.addr(),
        ),
    );
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "broker config:\n{out}{err}");
    let gw = Gateway::start(&env);

    let state_file = env.path().join("rp-state.json");
    let authz = rp_start(&issuer, &redirect_uri, &state_file, Some("cu"));
    assert_eq!(query_of(&authz)["idp"], "cu");
    // idp=cu skips the home-realm page (two providers) and goes to the customer provider.
    let b = Agent::browser();
    let login = b.get(authz.as_str()).await.redirect();
    let provider = b.get(login.as_str()).await.redirect();
    assert!(provider.path().starts_with("/.idfabric/dev/cu/"), "{login} → {provider}");
    let callback = browse_to_rp(&b, &authz, &redirect_uri, "alice", || gw.log()).await;
    let cq = query_of(&callback);
    assert_eq!(cq["state"], query_of(&authz)["state"]);
    assert_eq!(cq.get("iss"), Some(&issuer), "RFC 9207 iss in the authorization response");

    let report = rp_finish(&state_file, &callback, &post_logout, &issuer, || gw.log());
    let claims = &report["id_token_claims"];
    assert!(claims["sub"].as_str().unwrap().starts_with("cu:"), "the normalised subject: {claims}");
    assert_eq!(claims["provider"], "cu");
    assert_eq!(report["ok"]["userinfo"]["email"], "alice@example.com");

    // RP-initiated logout at the broker goes back to the registered address.
    let end = report["ok"]["end_session_url"].as_str().unwrap();
    let back = b.get(end).await.redirect();
    assert!(back.as_str().starts_with(&post_logout), "{back}");
}

/// Both ends third-party: openid-client → idfabric's broker → oidc-provider upstream.
#[tokio::test]
async fn openid_client_through_the_broker_to_oidc_provider() {
    let rp_base = format!("http://127.0.0.1:{}", free_port());
    let redirect_uri = format!("{rp_base}/callback");
    let post_logout = format!("{rp_base}/signed-out");
    let up = Upstream::start_with(3600, Some((&redirect_uri, &post_logout)));
    let issuer = format!("{}/broker", up.env.proxy());
    let state_file = up.env.path().join("rp-state.json");
    let authz = rp_start(&issuer, &redirect_uri, &state_file, None);
    let b = Agent::browser();
    let callback = browse_to_rp(&b, &authz, &redirect_uri, "ada", || format!("{}\nOP:\n{}", up.log(), up.op.stderr())).await;
    let report = rp_finish(&state_file, &callback, &post_logout, &issuer, || up.log());
    let claims = &report["id_token_claims"];
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert_eq!(claims["sub"], format!("{OP_ID}:u-1815-ada"), "{pretty}");
    assert_eq!(claims["provider_kind"], "oidc", "{pretty}");
    assert_eq!(claims["groups"], serde_json::json!(["engineers", "admins"]), "upstream UserInfo claims reach the broker's ID token: {pretty}");
    assert_eq!(report["ok"]["userinfo"]["email"], "ada@interop.test", "{pretty}");
    assert_eq!(report["ok"]["userinfo"]["name"], "Ada Lovelace", "{pretty}");
}
