//! The broker as an OpenID Provider, against the real binary: discovery, the
//! code flow with PKCE for confidential and public clients through a real sign-in at
//! the dev provider, the `idp` and `login_hint` shortcuts, `prompt`, `max_age`,
//! `acr_values` step-up, userinfo, refresh rotation and reuse detection, code replay,
//! client credentials, introspection, revocation, RP-initiated logout, every bad input
//! with its RFC error code and status, the metrics, and no secret in any body or log.
//!
//! One gateway serves every test (started once per file); each test signs in with its own
//! cookie-keeping agent, so tests run in parallel. Relying parties are plain HTTP calls
//! here; their redirect URIs (`http://rp.test/...`) are never fetched, only read.
//!
//! Providers: `wf` (workforce, Entra-shaped, `domains: [corp.test]`, alice with MFA,
//! bob without, erin only for the admin-revocation test; the Entra shape can step up) and
//! `cu` (customer, Auth0-shaped, carol).
//! Clients: `portal` (confidential, `wf` only), `spa` (public), `hashed` (argon2 secret),
//! `svc` (client credentials), `shop` (customer population only), `lax` (PKCE optional).

use crate::common;
use common::agent::*;
use common::oidc::*;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

const PORTAL_SECRET: &str = "portal-secret-5f0c2a";
const HASHED_SECRET: &str = "hashed-secret-9d1e7b";
const SVC_SECRET: &str = "svc-secret-3a8c4d";
const SHOP_SECRET: &str = "shop-secret-6b2f9e";
const LAX_SECRET: &str = "lax-secret-1c7d3f";
const RS_SECRET: &str = "rs-secret-8e4a1b";
const PORTAL_CB: &str = "http://rp.test/cb";
const SPA_CB: &str = "http://spa.test/cb";

struct Fixture {
    env: TestEnv,
    gw: SharedGateway,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

fn issuer() -> String {
    format!("http://127.0.0.1:{}/broker", fx().env.http_port)
}

fn ep(path: &str) -> String {
    format!("{}{path}", issuer())
}

/// `idfabric keys hash-secret` with the secret on stdin.
fn hash_secret(secret: &str) -> String {
    use std::io::Write;
    let mut c =
        Command::new(BIN).args(["keys", "hash-secret"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$") && !phc.contains(secret), "{phc}");
    phc
}

impl Fixture {
    fn start() -> Fixture {
        let env = TestEnv::new();
        env.write_dev_provider(
            "wf",
            "workforce",
            "entra",
            "dev-idp-workforce.pem",
            "display_name: Corp\nclient_id: wf-client\naudiences: [api://idfabric]\ndomains: [corp.test]\nusers:\n\
             - { name: alice, display_name: Alice Admin, email: alice@corp.test, email_verified: true, groups: [hr, staff], roles: [reader], mfa: true }\n\
             - { name: bob, display_name: Bob Builder, email: bob@corp.test, groups: [staff], mfa: false }\n\
             - { name: erin, email: erin@corp.test, groups: [staff] }\n",
        );
        env.write_dev_provider(
            "cu",
            "customer",
            "auth0",
            "dev-idp-customer.pem",
            "display_name: Shop account\nclient_id: cu-client\naudiences: [https://api.shop.test]\nusers:\n\
             - { name: carol, display_name: Carol Customer, email: carol@gmail.example, email_verified: true, connection: google-oauth2 }\n",
        );
        let hashed = hash_secret(HASHED_SECRET);
        let text = format!(
            "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [wf, cu]\n\
             session: {{ store: memory, key_file: certs/session.key }}\n\
             broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - {{ client_id: portal, client_secret: \"{PORTAL_SECRET}\", redirect_uris: [\"{PORTAL_CB}\"], post_logout_redirect_uris: [\"http://rp.test/bye\"], providers: [wf] }}\n\
             \x20   - {{ client_id: spa, public: true, redirect_uris: [\"{SPA_CB}\"] }}\n\
             \x20   - {{ client_id: hashed, client_secret: \"{hashed}\", redirect_uris: [\"http://rp.test/h\"], providers: [wf] }}\n\
             \x20   - {{ client_id: svc, client_secret: \"{SVC_SECRET}\", grant_types: [client_credentials], scopes: [reports:read, reports:write] }}\n\
             \x20   - {{ client_id: shop, client_secret: \"{SHOP_SECRET}\", redirect_uris: [\"http://shop.test/cb\"], populations: [customer] }}\n\
             \x20   - {{ client_id: lax, client_secret: \"{LAX_SECRET}\", redirect_uris: [\"http://rp.test/lax\"], providers: [wf], require_pkce: false, grant_types: [authorization_code] }}\n\
             \x20   - {{ client_id: rs, client_secret: \"{RS_SECRET}\", grant_types: [client_credentials], introspect: true }}\n\
             routes:\n  - name: app\n    match: {{ host: app.test }}\n    upstream: [127.0.0.1:9]\n",
            http = env.http_port,
            admin = env.admin_line(),
        );
        env.write("routes.yaml", &text);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, gw }
    }
}

/// Signs `user` in for `req` and returns the code (asserting state and iss).
async fn code_for(agent: &Agent, req: &AuthzReq, user: &str) -> String {
    code_at(agent, req, user, &issuer()).await
}

/// [`code_for`] at another issuer (a second replica).
async fn code_at(agent: &Agent, req: &AuthzReq, user: &str, issuer: &str) -> String {
    let back = follow(agent, &req.url(issuer), user).await;
    let q = callback_params(&back, req, issuer);
    assert!(!q.contains_key("error"), "authorize failed: {back}");
    q["code"].clone()
}

/// The token request form of an authorization-code exchange for `req`.
fn code_form<'a>(req: &'a AuthzReq, code: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", req.redirect_uri.as_str()),
        ("code_verifier", req.verifier.as_str()),
    ]
}

/// Exchanges a code with the portal's secret (Basic) and returns the token response.
async fn exchange(
    req: &AuthzReq,
    code: &str,
    basic: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut form = code_form(req, code);
    if basic.is_none() {
        form.push(("client_id", req.client_id.as_str()));
    }
    post_form(&ep("/token"), &form, basic).await
}

async fn portal_tokens(agent: &Agent, user: &str) -> (AuthzReq, Value) {
    let req = AuthzReq::new("portal", PORTAL_CB).set("scope", "openid profile email");
    let code = code_for(agent, &req, user).await;
    let (status, _, body) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(status, 200, "{body}");
    (req, json_of(&body))
}

fn error_of(body: &str) -> String {
    json_of(body)["error"].as_str().unwrap_or_default().to_string()
}

/// `/introspect` as `client` (Basic).
async fn introspect_as(token: &str, client: (&str, &str)) -> Value {
    let (s, _, b) = post_form(&ep("/introspect"), &[("token", token)], Some(client)).await;
    assert_eq!(s, 200, "{b}");
    json_of(&b)
}

async fn introspect(token: &str) -> Value {
    let (s, _, b) = post_form(&ep("/introspect"), &[("token", token)], Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200, "{b}");
    json_of(&b)
}

async fn refresh(rt: &str, basic: (&str, &str)) -> (u16, String) {
    let (s, _, b) =
        post_form(&ep("/token"), &[("grant_type", "refresh_token"), ("refresh_token", rt)], Some(basic)).await;
    (s, b)
}

async fn userinfo(at: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(ep("/userinfo")).bearer_auth(at).send().await.unwrap();
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, h, r.text().await.unwrap())
}

// --- Discovery -----------------------------------------------------------------------

#[tokio::test]
async fn discovery_names_every_endpoint_and_capability() {
    let d: Value = client().get(ep("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let i = issuer();
    assert_eq!(d["issuer"], i);
    for (k, p) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("end_session_endpoint", "/logout"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
    ] {
        assert_eq!(d[k], format!("{i}{p}"), "{k}");
    }
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(d["response_modes_supported"], serde_json::json!(["query"]));
    assert_eq!(d["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(d["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    for g in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(d["grant_types_supported"].as_array().unwrap().contains(&Value::from(g)));
    }
    assert!(d["scopes_supported"].as_array().unwrap().contains(&Value::from("reports:read")));
    let claims = d["claims_supported"].as_array().unwrap();
    for c in ["sub", "auth_time", "population", "provider_kind", "principal_type", "groups"] {
        assert!(claims.contains(&Value::from(c)), "{c}");
    }
    assert_eq!(
        d["revocation_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"]),
        "public clients revoke too"
    );
    assert_eq!(
        d["introspection_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    let jwks: Value = client().get(ep("/jwks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert!(jwks["keys"][0]["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
}

// --- The code flow -------------------------------------------------------------------

#[tokio::test]
async fn confidential_client_code_flow_with_pkce_and_a_verified_id_token() {
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    // The anonymous browser goes to the sign-in, which goes straight to the client's one provider.
    let first = agent.get(&req.url(&issuer())).await.redirect();
    assert_eq!(first.path(), "/.idfabric/login");
    let rd = query_of(&first)["rd"].clone();
    assert!(rd.starts_with("/broker/authorize/resume?txn="), "{rd}");
    // The parked request belongs to this browser: another one cannot resume it.
    let stranger = Agent::browser().get(&format!("http://127.0.0.1:{}{rd}", fx().env.http_port)).await;
    assert_eq!(stranger.status, 400);
    assert!(stranger.raw_location().is_none());
    let code = code_for(&agent, &req, "alice").await;
    let (status, headers, body) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let t = json_of(&body);
    assert!(t["token_type"].as_str().unwrap().eq_ignore_ascii_case("bearer"));
    assert_eq!(t["expires_in"], 600);
    assert_eq!(t["scope"], "openid profile email");
    assert!(t["refresh_token"].as_str().is_some_and(|r| r.len() >= 43));

    let (typ, id) = verify_jwt(&issuer(), t["id_token"].as_str().unwrap(), Some("portal")).await;
    assert_eq!(typ, "JWT");
    assert!(id["sub"].as_str().unwrap().starts_with("wf:"), "normalised sub: {id}");
    assert_eq!(id["azp"], "portal");
    assert_eq!(id["nonce"], req.nonce.as_str());
    assert_eq!(id["population"], "workforce");
    assert_eq!(id["provider"], "wf");
    assert_eq!(id["email"], "alice@corp.test");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["name"], "Alice Admin");
    assert_eq!(id["principal_type"], "user");
    assert_eq!(id["mfa"], true);
    assert_eq!(id["acr"], "mfa");
    assert!(id["groups"].as_array().unwrap().contains(&Value::from("hr")));
    assert!(id["auth_time"].as_i64().is_some() && id["sid"].as_str().is_some() && id["at_hash"].as_str().is_some());

    let (typ, at) = verify_jwt(&issuer(), t["access_token"].as_str().unwrap(), Some("portal")).await;
    assert_eq!(typ, "at+jwt", "RFC 9068");
    assert_eq!(at["client_id"], "portal");
    assert_eq!(at["sub"], id["sub"]);
    assert_eq!(at["scope"], "openid profile email");
    assert!(at["jti"].as_str().is_some() && at["iat"].as_i64().is_some());

    let (s, _, b) = userinfo(t["access_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{b}");
    let u = json_of(&b);
    assert_eq!(u["sub"], id["sub"]);
    assert_eq!(u["email"], "alice@corp.test");
    assert_eq!(u["population"], "workforce");
    assert_eq!(u["preferred_username"].is_null(), id["preferred_username"].is_null());
    // userinfo by POST too.
    let r = client().post(ep("/userinfo")).bearer_auth(t["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Signed in now: the next authorize issues a code without another sign-in, also by POST.
    let again = AuthzReq::new("portal", PORTAL_CB);
    let back = agent.get(&again.url(&issuer())).await.redirect();
    assert!(callback_params(&back, &again, &issuer()).contains_key("code"));
    let posted = AuthzReq::new("portal", PORTAL_CB);
    let form: Vec<(&str, &str)> = posted.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let back = agent.post(&ep("/authorize"), &form).await.redirect();
    assert!(callback_params(&back, &posted, &issuer()).contains_key("code"));
}

#[tokio::test]
async fn public_client_with_idp_hint_skips_discovery() {
    let agent = Agent::browser();
    let req = AuthzReq::new("spa", SPA_CB).set("idp", "cu");
    let login = agent.get(&req.url(&issuer())).await.redirect();
    assert_eq!(query_of(&login)["provider"], "cu");
    let to_provider = agent.get(login.as_str()).await.redirect();
    assert_eq!(to_provider.path(), "/.idfabric/dev/cu/authorize", "no discovery page");
    let code = code_for(&agent, &req, "carol").await;
    // Basic with an empty password is how some libraries name a public client.
    let (status, _, body) = exchange(&req, &code, Some(("spa", ""))).await;
    assert_eq!(status, 200, "{body}");
    let t = json_of(&body);
    let (_, id) = verify_jwt(&issuer(), t["id_token"].as_str().unwrap(), Some("spa")).await;
    assert!(id["sub"].as_str().unwrap().starts_with("cu:"));
    assert_eq!(id["population"], "customer");
    assert_eq!(id["idp"].as_str().map(|s| !s.is_empty()), Some(true));
    // Without the hint the spa (all providers) gets the discovery page.
    let plain = AuthzReq::new("spa", SPA_CB);
    let login = Agent::browser().get(&plain.url(&issuer())).await.redirect();
    let page = Agent::browser().get(login.as_str()).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"provider\" value=\"cu\""), "{}", page.body);
    // A public client must send PKCE; it has no secret to send.
    let (s, h, b) = post_form(
        &ep("/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", SPA_CB),
            ("client_id", "spa"),
            ("client_secret", "guess"),
        ],
        None,
    )
    .await;
    assert_eq!((s, error_of(&b).as_str()), (401, "invalid_client"), "{b}");
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
}

#[tokio::test]
async fn single_page_apps_get_cors_only_from_their_own_origin() {
    let preflight = |origin: &'static str| async move {
        let r = client()
            .request(reqwest::Method::OPTIONS, ep("/token"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string()))
    };
    assert_eq!(preflight("http://spa.test").await, (204, Some("http://spa.test".into())));
    assert_eq!(preflight("http://evil.test").await, (204, None));
    assert_eq!(preflight("http://rp.test").await, (204, None), "confidential clients' origins get no CORS");
    let r = client().get(ep("/jwks")).header("origin", "http://anything.test").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = client().post(ep("/token")).header("origin", "http://spa.test").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["access-control-allow-origin"], "http://spa.test", "errors are readable by the app too");
}

#[tokio::test]
async fn login_hint_finds_the_provider_by_email_domain() {
    let agent = Agent::browser();
    let req = AuthzReq::new("spa", SPA_CB).set("login_hint", "bob@corp.test");
    let login = agent.get(&req.url(&issuer())).await.redirect();
    assert_eq!(query_of(&login)["email"], "bob@corp.test");
    let authz = agent.get(login.as_str()).await.redirect();
    assert_eq!(authz.path(), "/.idfabric/dev/wf/authorize");
    assert_eq!(query_of(&authz)["login_hint"], "bob@corp.test");
    let code = code_for(&agent, &req, "bob").await;
    let (s, _, b) = exchange(&req, &code, None).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn prompt_none_without_a_session_is_login_required() {
    let req = AuthzReq::new("portal", PORTAL_CB).set("prompt", "none");
    let back = Agent::browser().get(&req.url(&issuer())).await.redirect();
    let q = callback_params(&back, &req, &issuer());
    assert_eq!(q["error"], "login_required");
    assert!(!q.contains_key("code"));
}

#[tokio::test]
async fn prompt_login_and_max_age_reach_the_provider_even_without_a_session() {
    for (k, v) in [("prompt", "login"), ("max_age", "300")] {
        let agent = Agent::browser();
        let req = AuthzReq::new("portal", PORTAL_CB).set(k, v).set("idp", "wf");
        let login = agent.get(&req.url(&issuer())).await.redirect();
        assert_eq!(login.path(), "/.idfabric/login");
        let q = query_of(&login);
        assert_eq!(
            q.get("prompt").map(String::as_str),
            Some("login"),
            "{k}={v}: a fresh sign-in, not silent SSO: {login}"
        );
        let provider = agent.get(login.as_str()).await.redirect();
        assert_eq!(query_of(&provider).get("prompt").map(String::as_str), Some("login"), "{provider}");
    }
}

#[tokio::test]
async fn max_age_forces_a_new_sign_in_and_auth_time_is_reported() {
    let agent = Agent::browser();
    let (_, first) = portal_tokens(&agent, "alice").await;
    let (_, id1) = verify_jwt(&issuer(), first["id_token"].as_str().unwrap(), Some("portal")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // prompt=none cannot satisfy max_age=1 with a 2 s old sign-in.
    let none = AuthzReq::new("portal", PORTAL_CB).set("max_age", "1").set("prompt", "none");
    let q = callback_params(&agent.get(&none.url(&issuer())).await.redirect(), &none, &issuer());
    assert_eq!(q["error"], "login_required");
    // max_age=0 asks for a sign-in now, however recent the session.
    let zero = AuthzReq::new("portal", PORTAL_CB).set("max_age", "0").set("prompt", "none");
    let q = callback_params(&agent.get(&zero.url(&issuer())).await.redirect(), &zero, &issuer());
    assert_eq!(q["error"], "login_required");
    // Without prompt=none the user signs in again (prompt=login upstream).
    let req = AuthzReq::new("portal", PORTAL_CB).set("max_age", "1");
    let login = agent.get(&req.url(&issuer())).await.redirect();
    assert_eq!(login.path(), "/.idfabric/login");
    assert_eq!(query_of(&login)["prompt"], "login");
    let code = code_for(&agent, &req, "alice").await;
    let (_, _, b) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    let (_, id2) = verify_jwt(&issuer(), json_of(&b)["id_token"].as_str().unwrap(), Some("portal")).await;
    assert!(id2["auth_time"].as_i64().unwrap() > id1["auth_time"].as_i64().unwrap(), "{id1} {id2}");
}

#[tokio::test]
async fn acr_values_step_up_bob_to_mfa() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "bob").await;
    let (_, id) = verify_jwt(&issuer(), t["id_token"].as_str().unwrap(), Some("portal")).await;
    assert_eq!((id["mfa"].as_bool(), id["acr"].as_str()), (Some(false), Some("sfa")));
    // prompt=none cannot step up.
    let none = AuthzReq::new("portal", PORTAL_CB).set("acr_values", "mfa").set("prompt", "none");
    let q = callback_params(&agent.get(&none.url(&issuer())).await.redirect(), &none, &issuer());
    assert_eq!(q["error"], "unmet_authentication_requirements");
    let req = AuthzReq::new("portal", PORTAL_CB).set("acr_values", "mfa");
    let login = agent.get(&req.url(&issuer())).await.redirect();
    assert_eq!(query_of(&login)["step_up"], "1");
    let code = code_for(&agent, &req, "bob").await;
    let (_, _, b) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    let (_, id) = verify_jwt(&issuer(), json_of(&b)["id_token"].as_str().unwrap(), Some("portal")).await;
    assert_eq!((id["mfa"].as_bool(), id["acr"].as_str()), (Some(true), Some("mfa")), "{id}");
    assert!(id["amr"].as_array().unwrap().contains(&Value::from("mfa")));
}

#[tokio::test]
async fn a_client_limited_to_customers_refuses_workforce_sessions() {
    let agent = Agent::browser();
    portal_tokens(&agent, "alice").await;
    // The shop client accepts only customers: alice's workforce session does not count.
    let req = AuthzReq::new("shop", "http://shop.test/cb").set("prompt", "none");
    let q = callback_params(&agent.get(&req.url(&issuer())).await.redirect(), &req, &issuer());
    assert_eq!(q["error"], "login_required");
    let req = AuthzReq::new("shop", "http://shop.test/cb").set("idp", "wf");
    let q = callback_params(&agent.get(&req.url(&issuer())).await.redirect(), &req, &issuer());
    assert_eq!(q["error"], "invalid_request", "idp outside the client's providers");
}

// --- Refresh tokens, replays, revocation ----------------------------------------------

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "alice").await;
    let rt1 = t["refresh_token"].as_str().unwrap().to_string();
    let (s, b) = refresh(&rt1, ("portal", PORTAL_SECRET)).await;
    assert_eq!(s, 200, "{b}");
    let t2 = json_of(&b);
    let rt2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2, "rotated");
    let at2 = t2["access_token"].as_str().unwrap().to_string();
    let (_, id) = verify_jwt(&issuer(), t2["id_token"].as_str().unwrap(), Some("portal")).await;
    assert!(id.get("nonce").is_none(), "no nonce on refresh");
    assert_eq!(introspect(&at2).await["active"], true);
    // Narrower scope is fine, wider is not.
    let (s, _, b) = post_form(
        &ep("/token"),
        &[("grant_type", "refresh_token"), ("refresh_token", &rt2), ("scope", "openid offline_access")],
        Some(("portal", PORTAL_SECRET)),
    )
    .await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_scope"));
    // rt2 is still live after that refusal; presenting the rotated rt1 again takes the family down.
    let (s, b) = refresh(&rt1, ("portal", PORTAL_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{b}");
    let (s, b) = refresh(&rt2, ("portal", PORTAL_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{b}");
    assert_eq!(introspect(&at2).await["active"], false, "the family's access tokens are revoked");
    let (s, h, _) = userinfo(&at2).await;
    assert_eq!(s, 401);
    assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn refresh_keeps_the_family_alive_and_another_client_cannot_use_it() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "alice").await;
    let mut rt = t["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let (s, b) = refresh(&rt, ("portal", PORTAL_SECRET)).await;
        assert_eq!(s, 200, "{b}");
        rt = json_of(&b)["refresh_token"].as_str().unwrap().to_string();
    }
    let i = introspect(&rt).await;
    assert_eq!((i["active"].as_bool(), i["token_type"].as_str()), (Some(true), Some("refresh_token")));
    let (s, _, b) = post_form(&ep("/introspect"), &[("token", &rt)], Some(("hashed", HASHED_SECRET))).await;
    assert_eq!((s, json_of(&b)["active"].as_bool()), (200, Some(false)), "refresh tokens only show to their client");
    let (s, b) = refresh(&rt, ("hashed", HASHED_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"));
}

#[tokio::test]
async fn refresh_ends_with_the_sign_in_session_unless_offline_access_and_a_leaver_loses_both() {
    let agent = Agent::browser();
    // erin is used by this test alone: the admin revocation ends all of her sessions.
    let (_, bound) = portal_tokens(&agent, "erin").await;
    let req = AuthzReq::new("portal", PORTAL_CB).set("scope", "openid offline_access");
    let code = code_for(&agent, &req, "erin").await;
    let (s, _, b) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200, "{b}");
    let offline = json_of(&b);
    let (_, id) = verify_jwt(&issuer(), bound["id_token"].as_str().unwrap(), Some("portal")).await;
    let sub = id["sub"].as_str().unwrap();

    // The browser signs out of idfabric: the session-bound family ends, the offline one lives.
    let origin = issuer().trim_end_matches("/broker").to_string();
    let access = bound["access_token"].as_str().unwrap();
    assert_eq!(introspect(access).await["active"], true);
    agent.log_out(&format!("{origin}/.idfabric/logout")).await;
    assert_eq!(introspect(access).await["active"], false, "its access token is revoked at sign-out, not at expiry");
    let (s, b) = refresh(bound["refresh_token"].as_str().unwrap(), ("portal", PORTAL_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "the session behind it ended: {b}");
    let (s, b) = refresh(offline["refresh_token"].as_str().unwrap(), ("portal", PORTAL_SECRET)).await;
    assert_eq!(s, 200, "offline_access outlives the browser session: {b}");
    assert!(json_of(&b)["scope"].as_str().unwrap().contains("offline_access"));
    let rotated = json_of(&b)["refresh_token"].as_str().unwrap().to_string();

    // The leaver case: an admin revocation ends the offline family too.
    let r = fx()
        .env
        .admin_call(
            reqwest::Method::POST,
            &format!("/sessions/revoke?sub={}", url::form_urlencoded::byte_serialize(sub.as_bytes()).collect::<String>()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["broker_token_families"].as_u64().unwrap_or(0) >= 1, "{v}");
    let (s, b) = refresh(&rotated, ("portal", PORTAL_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "revoked with the person: {b}");
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_its_tokens() {
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let code = code_for(&agent, &req, "alice").await;
    let (s, _, b) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200);
    let t = json_of(&b);
    let (s, _, b) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{b}");
    assert_eq!(introspect(t["access_token"].as_str().unwrap()).await["active"], false);
    let (s, b) = refresh(t["refresh_token"].as_str().unwrap(), ("portal", PORTAL_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"));
}

#[tokio::test]
async fn revoke_ends_a_family_and_answers_200_for_unknown_tokens() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "alice").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let at = t["access_token"].as_str().unwrap();
    let (s, _, b) = post_form(
        &ep("/revoke"),
        &[("token", rt), ("token_type_hint", "refresh_token")],
        Some(("hashed", HASHED_SECRET)),
    )
    .await;
    assert_eq!((s, error_of(&b).as_str()), (400, "unauthorized_client"), "not the hashed client's token");
    let (s, _, _) = post_form(&ep("/revoke"), &[("token", rt)], Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200);
    assert_eq!(introspect(at).await["active"], false);
    let (s, b) = refresh(rt, ("portal", PORTAL_SECRET)).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"));
    let (s, _, _) = post_form(&ep("/revoke"), &[("token", "no-such-token")], Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200, "unknown tokens: 200 (RFC 7009)");
    let (s, h, b) = post_form(&ep("/revoke"), &[("token", rt)], None).await;
    assert_eq!((s, error_of(&b).as_str()), (401, "invalid_client"));
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    // An access token can be revoked too.
    let (_, t) = portal_tokens(&agent, "alice").await;
    let at = t["access_token"].as_str().unwrap();
    let (s, _, _) =
        post_form(&ep("/revoke"), &[("token", at), ("client_id", "portal"), ("client_secret", PORTAL_SECRET)], None)
            .await;
    assert_eq!(s, 200);
    assert_eq!(userinfo(at).await.0, 401);
}

// --- Client credentials, introspection ------------------------------------------------

#[tokio::test]
async fn client_credentials_issue_service_tokens() {
    let (s, _, b) = post_form(
        &ep("/token"),
        &[("grant_type", "client_credentials"), ("scope", "reports:read")],
        Some(("svc", SVC_SECRET)),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let t = json_of(&b);
    assert!(t.get("refresh_token").is_none() && t.get("id_token").is_none());
    assert_eq!(t["scope"], "reports:read");
    let (typ, at) = verify_jwt(&issuer(), t["access_token"].as_str().unwrap(), Some("svc")).await;
    assert_eq!(typ, "at+jwt");
    assert_eq!(at["sub"], "broker:svc");
    assert_eq!(at["principal_type"], "service");
    assert_eq!(at["provider"], "broker");
    let i = introspect_as(t["access_token"].as_str().unwrap(), ("rs", RS_SECRET)).await;
    assert_eq!((i["active"].as_bool(), i["client_id"].as_str()), (Some(true), Some("svc")));
    // No user behind it: userinfo refuses with insufficient_scope (RFC 6750 §3.1), in
    // the challenge and in the body.
    let (s, h, b) = userinfo(t["access_token"].as_str().unwrap()).await;
    assert_eq!(s, 403, "{b}");
    let challenge = h["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer") && challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains("scope=\"openid\""), "{challenge}");
    assert_eq!(error_of(&b), "insufficient_scope", "{b}");
    // Default scope: the client's own scopes.
    let (_, _, b) = post_form(&ep("/token"), &[("grant_type", "client_credentials")], Some(("svc", SVC_SECRET))).await;
    assert_eq!(json_of(&b)["scope"], "reports:read reports:write");
    for (basic, form, code, status) in [
        (("svc", SVC_SECRET), vec![("grant_type", "client_credentials"), ("scope", "openid")], "invalid_scope", 400),
        (("svc", SVC_SECRET), vec![("grant_type", "client_credentials"), ("scope", "admin")], "invalid_scope", 400),
        (("portal", PORTAL_SECRET), vec![("grant_type", "client_credentials")], "unauthorized_client", 400),
        (
            ("svc", SVC_SECRET),
            vec![("grant_type", "authorization_code"), ("code", "x"), ("redirect_uri", PORTAL_CB)],
            "unauthorized_client",
            400,
        ),
        (("svc", SVC_SECRET), vec![("grant_type", "password")], "unsupported_grant_type", 400),
        (("svc", SVC_SECRET), vec![("scope", "x")], "invalid_request", 400),
    ] {
        let (s, _, b) = post_form(&ep("/token"), &form, Some(basic)).await;
        assert_eq!((s, error_of(&b).as_str()), (status, code), "{form:?}: {b}");
    }
}

/// A client sees only its own tokens at `/introspect`; another client's token is
/// `{"active": false}` (RFC 7662 §2.2) unless the caller is marked `introspect: true`.
#[tokio::test]
async fn introspection_shows_a_client_only_its_own_tokens() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "alice").await;
    let portal_at = t["access_token"].as_str().unwrap();
    let (s, _, b) = post_form(&ep("/token"), &[("grant_type", "client_credentials")], Some(("svc", SVC_SECRET))).await;
    assert_eq!(s, 200, "{b}");
    let svc_at = json_of(&b)["access_token"].as_str().unwrap().to_string();
    // Each client sees its own token.
    let i = introspect_as(portal_at, ("portal", PORTAL_SECRET)).await;
    assert_eq!((i["active"].as_bool(), i["client_id"].as_str()), (Some(true), Some("portal")), "{i}");
    let i = introspect_as(&svc_at, ("svc", SVC_SECRET)).await;
    assert_eq!((i["active"].as_bool(), i["client_id"].as_str()), (Some(true), Some("svc")), "{i}");
    // Another client's token: inactive, and nothing else in the answer.
    for (token, caller) in [
        (portal_at, ("svc", SVC_SECRET)),
        (portal_at, ("hashed", HASHED_SECRET)),
        (svc_at.as_str(), ("portal", PORTAL_SECRET)),
        (svc_at.as_str(), ("lax", LAX_SECRET)),
    ] {
        assert_eq!(introspect_as(token, caller).await, serde_json::json!({"active": false}), "{} saw another client's token", caller.0);
    }
    // A resource server marked `introspect: true` sees every client's live tokens.
    for (token, owner) in [(portal_at, "portal"), (svc_at.as_str(), "svc")] {
        let i = introspect_as(token, ("rs", RS_SECRET)).await;
        assert_eq!((i["active"].as_bool(), i["client_id"].as_str()), (Some(true), Some(owner)), "{i}");
        assert!(i["sub"].is_string() && i["exp"].is_number(), "{i}");
    }
    // But not refresh tokens of others (they are only ever shown to their client).
    let rt = t["refresh_token"].as_str().unwrap();
    assert_eq!(introspect_as(rt, ("rs", RS_SECRET)).await, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn introspection_requires_client_authentication() {
    let (s, h, b) = post_form(&ep("/introspect"), &[("token", "anything")], None).await;
    assert_eq!((s, error_of(&b).as_str()), (401, "invalid_client"));
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let (s, _, b) = post_form(&ep("/introspect"), &[("token", "anything"), ("client_id", "spa")], None).await;
    assert_eq!((s, error_of(&b).as_str()), (401, "invalid_client"), "public clients cannot introspect");
    assert_eq!(introspect("not-a-token").await, serde_json::json!({"active": false}));
    assert_eq!(introspect("a.b.c").await, serde_json::json!({"active": false}));
    let (s, _, b) = post_form(&ep("/introspect"), &[], Some(("portal", PORTAL_SECRET))).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"));
}

#[tokio::test]
async fn hashed_secrets_authenticate() {
    let agent = Agent::browser();
    let req = AuthzReq::new("hashed", "http://rp.test/h");
    let code = code_for(&agent, &req, "alice").await;
    let (s, _, b) = exchange(&req, &code, Some(("hashed", "hashed-secret-wrong"))).await;
    assert_eq!((s, error_of(&b).as_str()), (401, "invalid_client"));
    // The failed attempt did not burn the code: client authentication comes first.
    let (s, _, b) = exchange(&req, &code, Some(("hashed", HASHED_SECRET))).await;
    assert_eq!(s, 200, "{b}");
}

// --- Logout --------------------------------------------------------------------------

#[tokio::test]
async fn logout_returns_only_to_registered_addresses() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "alice").await;
    let hint = t["id_token"].as_str().unwrap();
    let at = t["access_token"].as_str().unwrap();
    let url = format!(
        "{}/logout?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye-1",
        issuer(),
        url::form_urlencoded::byte_serialize(b"http://rp.test/bye").collect::<String>()
    );
    let r = agent.get(&url).await;
    let to = r.redirect();
    assert_eq!(to.as_str(), "http://rp.test/bye?state=bye-1");
    assert!(agent.cookie("127.0.0.1", SESSION).is_none(), "session cookie cleared");
    assert_eq!(userinfo(at).await.0, 401, "tokens from the ended session are revoked");
    let again = AuthzReq::new("portal", PORTAL_CB).set("prompt", "none");
    let q = callback_params(&agent.get(&again.url(&issuer())).await.redirect(), &again, &issuer());
    assert_eq!(q["error"], "login_required", "signed out");

    // Unregistered return address: the signed-out page, no redirect.
    let (_, t) = portal_tokens(&agent, "alice").await;
    let url = format!(
        "{}/logout?id_token_hint={}&post_logout_redirect_uri=http%3A%2F%2Fevil.test%2F",
        issuer(),
        t["id_token"].as_str().unwrap()
    );
    let r = agent.get(&url).await;
    assert_eq!(r.status, 200);
    assert!(r.raw_location().is_none() && r.is_html());
    // Without a hint, client_id names the client whose registered address is used.
    let r = agent
        .get(&format!("{}/logout?client_id=portal&post_logout_redirect_uri=http%3A%2F%2Frp.test%2Fbye", issuer()))
        .await;
    assert_eq!(r.redirect().as_str(), "http://rp.test/bye");
    // A tampered hint is refused.
    let good = t["id_token"].as_str().unwrap();
    let i = good.len() - 10;
    let flipped = if &good[i..i + 1] == "A" { "B" } else { "A" };
    let bad = format!("{}{flipped}{}", &good[..i], &good[i + 1..]);
    let r = agent.get(&format!("{}/logout?id_token_hint={bad}", issuer())).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn logout_without_proof_of_the_user_asks_before_ending_the_session() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "bob").await;
    let at = t["access_token"].as_str().unwrap();
    // A cross-site link (no id_token_hint): a confirmation page, nothing ended.
    let r = agent
        .get(&format!(
            "{}/logout?client_id=portal&post_logout_redirect_uri=http%3A%2F%2Frp.test%2Fbye&state=s-2",
            issuer()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.is_html() && r.raw_location().is_none() && r.body.contains("Sign out?"), "{}", r.body);
    assert!(agent.cookie("127.0.0.1", SESSION).is_some(), "the session stays");
    assert_eq!(userinfo(at).await.0, 200, "its tokens still work");
    // The user confirms (a same-site POST of the page's own form).
    let mut fields = hidden_inputs(&r.body);
    assert!(fields.iter().any(|(k, v)| k == "confirm" && v == "1"));
    fields.retain(|(k, _)| k != "id_token_hint");
    let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = agent.post(&format!("{}/logout", issuer()), &form).await;
    assert_eq!(done.redirect().as_str(), "http://rp.test/bye?state=s-2");
    assert!(agent.cookie("127.0.0.1", SESSION).is_none(), "session ended on confirmation");
    assert_eq!(userinfo(at).await.0, 401, "and its tokens revoked");
}

// --- Bad input -----------------------------------------------------------------------

#[tokio::test]
async fn authorize_shows_a_page_instead_of_redirecting_to_unknown_places() {
    let b = Agent::browser();
    for req in [
        AuthzReq::new("nobody", PORTAL_CB),
        AuthzReq::new("portal", "http://evil.test/cb"),
        AuthzReq::new("portal", "http://rp.test/cb/extra"),
        AuthzReq::new("portal", PORTAL_CB).without("redirect_uri"),
    ] {
        let r = b.get(&req.url(&issuer())).await;
        assert_eq!(r.status, 400, "{}", req.url(&issuer()));
        assert!(r.is_html() && r.raw_location().is_none());
    }
    let r = b.get(&format!("{}&client_id=portal", AuthzReq::new("portal", PORTAL_CB).url(&issuer()))).await;
    assert_eq!(r.status, 400, "repeated parameter");
}

#[tokio::test]
async fn authorize_errors_go_back_to_the_client_with_the_rfc_code() {
    let b = Agent::browser();
    let cases = [
        (AuthzReq::new("portal", PORTAL_CB).set("response_type", "token"), "unsupported_response_type"),
        (AuthzReq::new("portal", PORTAL_CB).set("response_type", "code id_token"), "unsupported_response_type"),
        (AuthzReq::new("portal", PORTAL_CB).without("response_type"), "invalid_request"),
        (AuthzReq::new("portal", PORTAL_CB).set("code_challenge_method", "plain"), "invalid_request"),
        (AuthzReq::new("portal", PORTAL_CB).without("code_challenge_method"), "invalid_request"),
        (
            AuthzReq::new("portal", PORTAL_CB).without("code_challenge").without("code_challenge_method"),
            "invalid_request",
        ),
        (AuthzReq::new("spa", SPA_CB).without("code_challenge").without("code_challenge_method"), "invalid_request"),
        (AuthzReq::new("portal", PORTAL_CB).set("code_challenge", "short"), "invalid_request"),
        (AuthzReq::new("portal", PORTAL_CB).set("scope", "profile email"), "invalid_scope"),
        (AuthzReq::new("portal", PORTAL_CB).set("scope", "openid admin"), "invalid_scope"),
        (AuthzReq::new("portal", PORTAL_CB).set("prompt", "none login"), "invalid_request"),
        (AuthzReq::new("portal", PORTAL_CB).set("max_age", "soon"), "invalid_request"),
        (AuthzReq::new("portal", PORTAL_CB).set("request", "eyJ.x.y"), "request_not_supported"),
        (AuthzReq::new("portal", PORTAL_CB).set("response_mode", "fragment"), "invalid_request"),
    ];
    for (req, code) in cases {
        let back = b.get(&req.url(&issuer())).await.redirect();
        let q = callback_params(&back, &req, &issuer());
        assert_eq!(q.get("error").map(String::as_str), Some(code), "{}", req.url(&issuer()));
    }
    // A client without PKCE requirement may leave it out, and gets no code_verifier check.
    let agent = Agent::browser();
    let req = AuthzReq::new("lax", "http://rp.test/lax").without("code_challenge").without("code_challenge_method");
    let code = code_for(&agent, &req, "alice").await;
    let (s, _, b) = post_form(
        &ep("/token"),
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", "http://rp.test/lax")],
        Some(("lax", LAX_SECRET)),
    )
    .await;
    let t = json_of(&b);
    assert_eq!(s, 200, "{b}");
    assert!(t.get("refresh_token").is_none(), "lax has no refresh_token grant");
}

#[tokio::test]
async fn token_endpoint_refuses_bad_codes_and_bad_clients() {
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let tok = ep("/token");
    let basic = Some(("portal", PORTAL_SECRET));
    // Client authentication failures: 401 with a Basic challenge, code untouched.
    let code = code_for(&agent, &req, "alice").await;
    let ac = |c: &str, v: &str, r: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), "authorization_code".into()),
            ("code".into(), c.into()),
            ("redirect_uri".into(), r.into()),
            ("code_verifier".into(), v.into()),
        ]
    };
    let form = ac(&code, &req.verifier, PORTAL_CB);
    let f: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    for (who, body_extra) in [
        (Some(("portal", "wrong-secret-xyz")), vec![]),
        (Some(("nobody", "x")), vec![]),
        (None, vec![]),
        (None, vec![("client_id", "portal")]),
    ] {
        let mut f2 = f.clone();
        f2.extend(body_extra);
        let (s, h, b) = post_form(&tok, &f2, who).await;
        assert_eq!((s, error_of(&b).as_str()), (401, "invalid_client"), "{b}");
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        assert!(!b.contains(PORTAL_SECRET));
    }
    // Both Basic and post: invalid_request.
    let mut both = f.clone();
    both.push(("client_secret", PORTAL_SECRET));
    let (s, _, b) = post_form(&tok, &both, basic).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"));
    // Wrong verifier: invalid_grant, and the code is spent.
    let (wrong_verifier, _) = pkce();
    let form = ac(&code, &wrong_verifier, PORTAL_CB);
    let f: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (s, _, b) = post_form(&tok, &f, basic).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{b}");
    let (s, _, b) = exchange(&req, &code, basic).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "spent");
    // Missing verifier, wrong redirect_uri, another client's code.
    for (mutate, client) in [("no_verifier", "portal"), ("redirect", "portal"), ("other_client", "hashed")] {
        let req = AuthzReq::new("portal", PORTAL_CB);
        let code = code_for(&agent, &req, "alice").await;
        let mut form = vec![("grant_type", "authorization_code"), ("code", code.as_str())];
        match mutate {
            "no_verifier" => form.push(("redirect_uri", PORTAL_CB)),
            "redirect" => form.extend([("redirect_uri", "http://rp.test/h"), ("code_verifier", req.verifier.as_str())]),
            _ => form.extend([("redirect_uri", PORTAL_CB), ("code_verifier", req.verifier.as_str())]),
        }
        let secret = if client == "portal" { PORTAL_SECRET } else { HASHED_SECRET };
        let (s, _, b) = post_form(&tok, &form, Some((client, secret))).await;
        assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{mutate}: {b}");
    }
    // Unknown code, missing code, unsupported grant, GET, JSON body, repeated parameter.
    let (s, _, b) = post_form(
        &tok,
        &[
            ("grant_type", "authorization_code"),
            ("code", "forged"),
            ("redirect_uri", PORTAL_CB),
            ("code_verifier", &req.verifier),
        ],
        basic,
    )
    .await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"));
    let (s, _, b) = post_form(&tok, &[("grant_type", "authorization_code"), ("redirect_uri", PORTAL_CB)], basic).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"));
    let (s, _, b) = post_form(&tok, &[("grant_type", "urn:ietf:params:oauth:grant-type:device_code")], basic).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "unsupported_grant_type"));
    let r = client().get(&tok).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .post(&tok)
        .basic_auth("portal", Some(PORTAL_SECRET))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), error_of(&r.text().await.unwrap()).as_str()), (400, "invalid_request"));
    let r = client()
        .post(&tok)
        .basic_auth("portal", Some(PORTAL_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&grant_type=refresh_token&refresh_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), error_of(&r.text().await.unwrap()).as_str()), (400, "invalid_request"));
    // Oversized body.
    let big = format!("grant_type=refresh_token&refresh_token={}", "a".repeat(20_000));
    let r =
        client().post(&tok).header("content-type", "application/x-www-form-urlencoded").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_of(&r.text().await.unwrap()), "invalid_request");
}

#[tokio::test]
async fn expired_codes_are_refused() {
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let code = code_for(&agent, &req, "alice").await;
    tokio::time::sleep(Duration::from_secs(62)).await;
    let (s, _, b) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{b}");
}

#[tokio::test]
async fn userinfo_refuses_tampered_foreign_and_missing_tokens() {
    let agent = Agent::browser();
    let (_, t) = portal_tokens(&agent, "alice").await;
    let at = t["access_token"].as_str().unwrap();
    // Flip one claim: the signature no longer matches.
    let parts: Vec<&str> = at.split('.').collect();
    let mut claims = jwt_claims(at);
    claims["sub"] = "wf:someone-else".into();
    use base64::Engine;
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    // The ID token is not an access token; a dev provider token is not the broker's.
    let dev = fx().env.mint("wf", "alice", &[]);
    // Each refusal names its reason (a fixed sentence; never the token).
    for (token, why) in [
        (forged.as_str(), "not signed by a key of this issuer"),
        (t["id_token"].as_str().unwrap(), "not of the expected type"),
        (dev.as_str(), "not of the expected type"),
        ("garbage", "not a well-formed JWT"),
    ] {
        let (s, h, b) = userinfo(token).await;
        assert_eq!(s, 401, "{b}");
        let c = h["www-authenticate"].to_str().unwrap();
        assert!(c.starts_with("Bearer") && c.contains("error=\"invalid_token\""), "{c}");
        assert!(c.contains(why) && json_of(&b)["error_description"].as_str().unwrap().contains(why), "{why}: {c} {b}");
        assert!(!b.contains(token) && !c.contains(token));
    }
    let r = client().get(ep("/userinfo")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"idfabric-broker\"", "no error code without a token");
}

// --- The parked request's browser binding ----------------------------------------------

/// The `Set-Cookie` of the binding cookie in `r` (name prefix `prefix`).
fn btx_cookie(r: &Resp, prefix: &str) -> Option<String> {
    r.set_cookies().into_iter().find(|c| c.starts_with(prefix))
}

/// `(name, value)` of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> (String, String) {
    let (k, v) = set_cookie.split(';').next().unwrap().split_once('=').unwrap();
    (k.to_string(), v.to_string())
}

fn clears(r: &Resp, name: &str) -> bool {
    r.set_cookie(name).is_some_and(|c| c.contains("Max-Age=0"))
}

#[tokio::test]
async fn the_browser_binding_is_a_random_nonce_checked_on_resume_and_cleared_on_every_outcome() {
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let first = agent.get(&req.url(&issuer())).await;
    let login = first.redirect();
    let set = btx_cookie(&first, "idfabric_btx_").expect("a binding cookie");
    let (name, nonce) = cookie_pair(&set);
    assert!(nonce != "1" && nonce.len() >= 43, "a random nonce, not a flag: {set}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=600"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    assert!(
        !set.contains("Domain") && !set.contains("Secure"),
        "host-only; plain-HTTP loopback like the session cookie: {set}"
    );
    let rd = query_of(&login)["rd"].clone();
    let resume = format!("http://127.0.0.1:{}{rd}", fx().env.http_port);

    // Another browser with a cookie of the right name but not the nonce: refused, its
    // cookie cleared, and the real browser's request is not used up by the attempt.
    for forged in ["1", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let stranger = Agent::browser();
        stranger.set("127.0.0.1", &name, forged);
        let r = stranger.get(&resume).await;
        assert_eq!(r.status, 400, "{forged}: {}", r.body);
        assert!(r.raw_location().is_none() && r.body.contains("started elsewhere"), "{}", r.body);
        assert!(clears(&r, &name), "{:?}", r.set_cookies());
    }
    // Success: the real browser signs in and gets its code; the cookie is cleared.
    let back = follow(&agent, login.as_str(), "alice").await;
    assert!(callback_params(&back, &req, &issuer()).contains_key("code"), "{back}");
    assert!(agent.cookie("127.0.0.1", &name).is_none(), "cleared after the code");

    // An error outcome (the browser comes back without signing in): cleared too.
    let quitter = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let first = quitter.get(&req.url(&issuer())).await;
    let (name, _) = cookie_pair(&btx_cookie(&first, "idfabric_btx_").unwrap());
    let rd = query_of(&first.redirect())["rd"].clone();
    let r = quitter.get(&format!("http://127.0.0.1:{}{rd}", fx().env.http_port)).await;
    assert_eq!(callback_params(&r.redirect(), &req, &issuer())["error"], "login_required");
    assert!(clears(&r, &name), "{:?}", r.set_cookies());

    // Expired or unknown request: the page, and the cookie cleared.
    let late = Agent::browser();
    let txn = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY";
    let name = format!("idfabric_btx_{}", &txn[..16]);
    late.set("127.0.0.1", &name, &"n".repeat(43));
    let r = late.get(&ep(&format!("/authorize/resume?txn={txn}&client_id=portal"))).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert!(clears(&r, &name), "{:?}", r.set_cookies());

    // A resume id that is not ours (non-ASCII, too long, a cookie attribute) is a page,
    // not a crash, and names no cookie.
    for txn in ["aaaaaaaaaaaaaaa%E2%82%AC", "x%3B%20Domain%3Devil.test", &"a".repeat(200)] {
        let r = late.get(&ep(&format!("/authorize/resume?txn={txn}"))).await;
        assert_eq!(r.status, 400, "{txn}: {}", r.body);
        assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    }
}

#[tokio::test]
async fn over_tls_the_binding_cookie_is_host_prefixed_and_secure() {
    let env = TestEnv::new();
    env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", "client_id: wf-client\n");
    let https = free_port();
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ https: {{ addr: 127.0.0.1:{https}, cert: certs/dev-tls.crt, key: certs/dev-tls.key }}, http: 127.0.0.1:{http} }}\n\
             admin: 127.0.0.1:{admin}\nproviders: [wf]\nsession: {{ store: memory }}\n\
             broker:\n  issuer: https://127.0.0.1:{https}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - {{ client_id: portal, client_secret: \"{PORTAL_SECRET}\", redirect_uris: [\"{PORTAL_CB}\"] }}\n\
             routes: []\n",
            http = env.http_port,
            admin = env.admin_port,
        ),
    );
    let _gw = Gateway::start(&env);
    let tls = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let issuer = format!("https://127.0.0.1:{https}/broker");
    let req = AuthzReq::new("portal", PORTAL_CB);
    let r = tls.get(req.url(&issuer)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let set: Vec<String> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let bind = set.iter().find(|c| c.contains("idfabric_btx_")).unwrap_or_else(|| panic!("{set:?}"));
    assert!(bind.starts_with("__Host-idfabric_btx_"), "{bind}");
    for attr in ["Secure", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(bind.contains(attr), "{attr}: {bind}");
    }
    assert!(!bind.contains("Domain"), "{bind}");
    // The unprefixed name (which a sibling host could plant) does not resume it.
    let (name, nonce) = cookie_pair(bind);
    let rd = url::Url::parse(&format!("https://127.0.0.1:{https}"))
        .unwrap()
        .join(r.headers()["location"].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .unwrap()
        .1
        .into_owned();
    let planted = name.trim_start_matches("__Host-").to_string();
    let r = tls
        .get(format!("https://127.0.0.1:{https}{rd}"))
        .header("cookie", format!("{planted}={nonce}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let cleared: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(cleared.iter().any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0")), "{cleared:?}");
}

// --- Single use under concurrency -------------------------------------------------------

/// `n` identical token requests at once, spread over `urls` in turn (replicas); returns
/// (status, the body of a 200 or the error_description) of each.
async fn at_once(
    urls: &[String],
    form: &[(&str, &str)],
    basic: (&'static str, &'static str),
    n: usize,
) -> Vec<(u16, String)> {
    let form: Vec<(String, String)> = form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (url, form) = (urls[i % urls.len()].clone(), form.clone());
            tokio::spawn(async move {
                let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (s, _, b) = post_form(&url, &f, Some(basic)).await;
                let d = if s == 200 { b } else { json_of(&b)["error_description"].as_str().unwrap_or_default().into() };
                (s, d)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// At most one 200, and every other request but the winner's is a detected replay (a
/// refresh winner may itself find the family revoked by a loser and answer
/// `invalid_grant`: then nobody gets tokens). Returns the winner's body, if any.
fn at_most_one_winner(answers: &[(u16, String)], replay: &str) -> Option<Value> {
    let winners: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert!(winners.len() <= 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 200 || *s == 400), "{answers:?}");
    let replays = answers.iter().filter(|(s, d)| *s == 400 && d.contains(replay)).count();
    assert!(replays >= answers.len() - 1, "every loser is a replay that revokes the family: {answers:?}");
    winners.first().map(|w| json_of(&w.1))
}

#[tokio::test]
async fn ten_parallel_redemptions_of_one_code_or_one_refresh_token_succeed_once_and_revoke() {
    let agent = Agent::browser();
    let tok = [ep("/token")];
    for _ in 0..3 {
        let req = AuthzReq::new("portal", PORTAL_CB);
        let code = code_for(&agent, &req, "alice").await;
        let form = code_form(&req, &code);
        // The claimant usually sees the losers' revocation and is refused too; if it
        // answered first, its tokens are revoked.
        if let Some(t) = at_most_one_winner(&at_once(&tok, &form, ("portal", PORTAL_SECRET), 10).await, "already used") {
            assert_eq!(
                introspect(t["access_token"].as_str().unwrap()).await["active"],
                false,
                "the code's tokens are revoked"
            );
            let (s, b) = refresh(t["refresh_token"].as_str().unwrap(), ("portal", PORTAL_SECRET)).await;
            assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"));
        }

        let (_, t) = portal_tokens(&agent, "alice").await;
        let form = [("grant_type", "refresh_token"), ("refresh_token", t["refresh_token"].as_str().unwrap())];
        let won = at_most_one_winner(&at_once(&tok, &form, ("portal", PORTAL_SECRET), 10).await, "already used");
        assert_eq!(introspect(t["access_token"].as_str().unwrap()).await["active"], false, "the family is revoked");
        if let Some(t2) = won {
            assert_eq!(introspect(t2["access_token"].as_str().unwrap()).await["active"], false, "with the winner's");
            let (s, b) = refresh(t2["refresh_token"].as_str().unwrap(), ("portal", PORTAL_SECRET)).await;
            assert_eq!((s, error_of(&b).as_str()), (400, "invalid_grant"), "{b}");
        }
    }
}

// --- Parameters in the URL --------------------------------------------------------------

#[tokio::test]
async fn post_endpoints_refuse_credentials_and_parameters_in_the_url_query() {
    let body = [("grant_type", "client_credentials")];
    // A secret in the query, even beside valid Basic credentials: refused, and not echoed.
    let secret_in_url = format!("{}?client_id=svc&client_secret={SVC_SECRET}", ep("/token"));
    let (s, h, b) = post_form(&secret_in_url, &body, Some(("svc", SVC_SECRET))).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"), "{b}");
    assert!(json_of(&b)["error_description"].as_str().unwrap().contains("URL query"), "{b}");
    assert!(!b.contains(SVC_SECRET) && h.get("www-authenticate").is_none());
    let (s, _, b) = post_form(
        &format!("{}?client_secret={SVC_SECRET}", ep("/token")),
        &[("client_id", "svc"), ("grant_type", "client_credentials")],
        None,
    )
    .await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"), "{b}");
    // Any other parameter in the query too (grant_type, token).
    let (s, _, b) =
        post_form(&format!("{}?grant_type=client_credentials", ep("/token")), &[], Some(("svc", SVC_SECRET))).await;
    assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"), "{b}");
    assert!(json_of(&b)["error_description"].as_str().unwrap().contains("POST form body"), "{b}");
    for path in ["/introspect", "/revoke"] {
        let (s, _, b) =
            post_form(&format!("{}?token=abc", ep(path)), &[("token", "abc")], Some(("portal", PORTAL_SECRET))).await;
        assert_eq!((s, error_of(&b).as_str()), (400, "invalid_request"), "{path}: {b}");
    }
    // The same request done right works.
    let (s, _, b) = post_form(&ep("/token"), &body, Some(("svc", SVC_SECRET))).await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!fx().gw.log().contains(SVC_SECRET), "the secret reaches no log line");
}

// --- Observability and hygiene ---------------------------------------------------------

#[tokio::test]
async fn no_secret_code_or_token_reaches_a_log_line_or_error_body() {
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let code = code_for(&agent, &req, "alice").await;
    let (_, _, b1) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await;
    let t = json_of(&b1);
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let (_, _, b2) = exchange(&req, &code, Some(("portal", PORTAL_SECRET))).await; // replay
    let (_, b3) = refresh(&rt, ("portal", PORTAL_SECRET)).await; // family revoked by the replay
    let (_, _, b4) = exchange(&req, &code, Some(("portal", "portal-secret-wrong"))).await;
    for body in [&b2, &b3, &b4] {
        for secret in [PORTAL_SECRET, "portal-secret-wrong", code.as_str(), rt.as_str()] {
            assert!(!body.contains(secret), "a body leaks a secret: {body}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = fx().gw.log();
    assert!(log.contains("broker request refused"), "refusals are logged");
    for secret in [
        PORTAL_SECRET,
        "portal-secret-wrong",
        code.as_str(),
        rt.as_str(),
        t["access_token"].as_str().unwrap(),
        &req.verifier,
    ] {
        assert!(!log.contains(secret), "the log leaks a secret");
    }
    let m = scrape_metrics(&fx().env).await;
    assert!(
        metric_value(&m, "idfabric_broker_requests_total{endpoint=\"token\",result=\"invalid_client\"}") >= 1.0,
        "{m}"
    );
    assert!(metric_value(&m, "idfabric_broker_requests_total{endpoint=\"token\",result=\"invalid_grant\"}") >= 1.0);
    assert!(metric_value(&m, "idfabric_broker_tokens_issued_total{grant=\"authorization_code\"}") >= 1.0);
}

#[test]
fn broker_client_config_errors_name_file_line_and_key() {
    let env = TestEnv::new();
    env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", "client_id: wf-client\n");
    let text = format!(
        "listen: {{ http: 127.0.0.1:{http} }}\nproviders: [wf]\n\
         broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  access_token_ttl: 2d\n  clients:\n\
         \x20   - {{ client_id: a, redirect_uris: [\"http://rp.test/cb\"] }}\n\
         \x20   - {{ client_id: b, client_secret: long-enough-secret, redirect_uris: [\"http://rp.test/cb#frag\", \"/relative\"] }}\n\
         \x20   - {{ client_id: b, client_secret: long-enough-secret, redirect_uris: [\"http://rp.test/cb\"], providers: [nope] }}\n\
         \x20   - {{ client_id: c, public: true, client_secret: x, redirect_uris: [\"http://rp.test/cb\"], grant_types: [client_credentials, implicit] }}\n\
         \x20   - {{ client_id: d, client_secret: \"$argon2id$garbage\", redirect_uris: [\"http://rp.test/cb\"] }}\n\
         routes: []\n",
        http = env.http_port
    );
    env.write("routes.yaml", &text);
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    let all = format!("{out}{err}");
    assert_eq!(code, 1, "{all}");
    for needle in [
        "key `broker.access_token_ttl`: must be at most 1day",
        "routes.yaml:8: key `broker.clients`: confidential client `a` needs a client_secret",
        "key `broker.clients.redirect_uris`: `http://rp.test/cb#frag` must not have a fragment",
        "`/relative` is not an absolute URL",
        "duplicate client_id `b`",
        "`nope` is not an enabled provider",
        "public client `c` must not have a client_secret",
        "`implicit` is not one of",
        "a public client cannot use client_credentials",
        "not a valid PHC string",
    ] {
        assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
    }
}

// --- Replicas sharing Redis -------------------------------------------------------------

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// routes.yaml of one replica: its own ports, the shared Redis and the shared issuer.
fn replica_routes(env: &TestEnv, redis: &str, issuer: &str) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [wf]\n\
         session: {{ store: \"{redis}\", key_file: certs/session.key }}\n\
         broker:\n  issuer: {issuer}\n  signing_key: certs/broker-signing.pem\n  clients:\n\
         \x20   - {{ client_id: portal, client_secret: \"{PORTAL_SECRET}\", redirect_uris: [\"{PORTAL_CB}\"] }}\n\
         routes: []\n",
        http = env.http_port,
        admin = env.admin_port,
    )
}

#[tokio::test]
async fn two_replicas_share_codes_and_refresh_families_through_redis() {
    let redis = common::redis::RedisServer::start();
    let a = TestEnv::new();
    a.write_wf_provider("  - { name: alice, email: alice@corp.test, mfa: true }\n");
    let issuer_a = format!("http://127.0.0.1:{}/broker", a.http_port);
    a.write("routes.yaml", &replica_routes(&a, &redis.url(), &issuer_a));
    let b = TestEnv::new();
    copy_dir(&a.path().join("certs"), &b.path().join("certs"));
    copy_dir(&a.path().join("providers"), &b.path().join("providers"));
    b.write("routes.yaml", &replica_routes(&b, &redis.url(), &issuer_a));
    let _ga = Gateway::start(&a);
    let _gb = Gateway::start(&b);
    let at_b = |p: &str| format!("http://127.0.0.1:{}/broker{p}", b.http_port);

    // The browser signs in at A; the code is redeemed at B.
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let code = code_at(&agent, &req, "alice", &issuer_a).await;
    let form = code_form(&req, &code);
    let (s, _, body) = post_form(&at_b("/token"), &form, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200, "{body}");
    let t = json_of(&body);
    assert!(redis.cmd(&["KEYS", "idf:b*"]).contains("idf:brt:"), "refresh tokens live in Redis");
    assert!(!redis.cmd(&["KEYS", "*"]).contains(t["refresh_token"].as_str().unwrap()), "stored only as digests");
    // A replay at A is detected (and revokes the family everywhere).
    let (s, _, body) = post_form(&format!("{issuer_a}/token"), &form, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!((s, error_of(&body).as_str()), (400, "invalid_grant"));
    let (s, _, body) = post_form(
        &at_b("/introspect"),
        &[("token", t["access_token"].as_str().unwrap())],
        Some(("portal", PORTAL_SECRET)),
    )
    .await;
    assert_eq!((s, json_of(&body)["active"].as_bool()), (200, Some(false)));

    // Ten redemptions of one code at once, alternating replicas: one wins (Redis SET NX),
    // every other is a replay; the same for one refresh token. A few rounds, as the race
    // window of a read-then-write implementation is narrow.
    let both = [format!("{issuer_a}/token"), at_b("/token")];
    let inactive = |at: String| async move {
        let (s, _, body) = post_form(&at_b("/introspect"), &[("token", &at)], Some(("portal", PORTAL_SECRET))).await;
        (s, json_of(&body)["active"].as_bool())
    };
    for _ in 0..8 {
        let req = AuthzReq::new("portal", PORTAL_CB);
        let code = code_at(&agent, &req, "alice", &issuer_a).await;
        let form = code_form(&req, &code);
        let won = at_most_one_winner(&at_once(&both, &form, ("portal", PORTAL_SECRET), 10).await, "already used");
        if let Some(won) = won {
            let at = won["access_token"].as_str().unwrap().to_string();
            assert_eq!(inactive(at).await, (200, Some(false)), "revoked on every replica");
        }
        // A live family (one plain exchange), then its refresh token ten times at once.
        let req = AuthzReq::new("portal", PORTAL_CB);
        let code = code_at(&agent, &req, "alice", &issuer_a).await;
        let form = code_form(&req, &code);
        let (s, _, body) = post_form(&both[1], &form, Some(("portal", PORTAL_SECRET))).await;
        assert_eq!(s, 200, "{body}");
        let first = json_of(&body);
        let form = [("grant_type", "refresh_token"), ("refresh_token", first["refresh_token"].as_str().unwrap())];
        let won = at_most_one_winner(&at_once(&both, &form, ("portal", PORTAL_SECRET), 10).await, "already used");
        let at = first["access_token"].as_str().unwrap().to_string();
        assert_eq!(inactive(at).await, (200, Some(false)), "the family is revoked on every replica");
        if let Some(won) = won {
            let at = won["access_token"].as_str().unwrap().to_string();
            assert_eq!(inactive(at).await, (200, Some(false)), "with the winner's tokens");
        }
    }

    // A new family: rotated at B, reuse detected at A.
    let req = AuthzReq::new("portal", PORTAL_CB);
    let code = code_at(&agent, &req, "alice", &issuer_a).await;
    let form = code_form(&req, &code);
    let (_, _, body) = post_form(&format!("{issuer_a}/token"), &form, Some(("portal", PORTAL_SECRET))).await;
    let rt1 = json_of(&body)["refresh_token"].as_str().unwrap().to_string();
    let refresh_at = |url: String, rt: String| async move {
        post_form(
            &url,
            &[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())],
            Some(("portal", PORTAL_SECRET)),
        )
        .await
    };
    let (s, _, body) = refresh_at(at_b("/token"), rt1.clone()).await;
    assert_eq!(s, 200, "{body}");
    let t2 = json_of(&body);
    let (s, _, body) = refresh_at(format!("{issuer_a}/token"), rt1).await;
    assert_eq!((s, error_of(&body).as_str()), (400, "invalid_grant"));
    let (s, _, body) = refresh_at(at_b("/token"), t2["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!((s, error_of(&body).as_str()), (400, "invalid_grant"), "the family is revoked on every replica");
    let r = client().get(at_b("/userinfo")).bearer_auth(t2["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_store_outage_is_503_not_an_invalid_token_an_inactive_token_or_a_false_sign_out() {
    let mut redis = common::redis::RedisServer::start();
    let env = TestEnv::new();
    env.write_wf_provider(
        "  - { name: alice, email: alice@corp.test, mfa: true }\n",
    );
    let issuer = format!("http://127.0.0.1:{}/broker", env.http_port);
    env.write("routes.yaml", &replica_routes(&env, &redis.url(), &issuer));
    let _gw = Gateway::start(&env);
    let agent = Agent::browser();
    let req = AuthzReq::new("portal", PORTAL_CB);
    let back = follow(&agent, &req.url(&issuer), "alice").await;
    let code = callback_params(&back, &req, &issuer)["code"].clone();
    let form = code_form(&req, &code);
    let (s, _, body) = post_form(&format!("{issuer}/token"), &form, Some(("portal", PORTAL_SECRET))).await;
    assert_eq!(s, 200, "{body}");
    let t = json_of(&body);
    let at = t["access_token"].as_str().unwrap();

    redis.stop();
    let r = client().get(format!("{issuer}/userinfo")).bearer_auth(at).send().await.unwrap();
    assert_eq!(r.status(), 503, "the token may be good: not invalid_token");
    assert_eq!(error_of(&r.text().await.unwrap()), "temporarily_unavailable");
    let (s, _, b) = post_form(&format!("{issuer}/introspect"), &[("token", at)], Some(("portal", PORTAL_SECRET))).await;
    assert_eq!((s, error_of(&b).as_str()), (503, "temporarily_unavailable"), "not a false inactive: {b}");
    let hint = t["id_token"].as_str().unwrap();
    let r = agent.get(&format!("{issuer}/logout?id_token_hint={hint}")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("not signed out"), "{}", r.body);
    assert!(agent.cookie("127.0.0.1", SESSION).is_some(), "nothing claimed, nothing cleared");
}

// --- Signing algorithm ------------------------------------------------------------------

#[tokio::test]
async fn an_rsa_broker_key_signs_rs256_and_the_retired_key_stays_published() {
    let env = TestEnv::new();
    env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", "client_id: wf-client\n");
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [wf]\n\
             broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - {{ client_id: svc, client_secret: \"{SVC_SECRET}\", grant_types: [client_credentials], scopes: [jobs] }}\n\
             routes: []\n",
            http = env.http_port,
            admin = env.admin_port,
        ),
    );
    let (code, out, err) = env.run(&["keys", "rotate", "--config", "routes.yaml", "--alg", "rs256"]);
    assert_eq!(code, 0, "{out}{err}");
    let _gw = Gateway::start(&env);
    let issuer = format!("http://127.0.0.1:{}/broker", env.http_port);
    let d: Value =
        client().get(format!("{issuer}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["id_token_signing_alg_values_supported"], serde_json::json!(["RS256", "ES256"]), "active key first");
    let (s, _, b) =
        post_form(&format!("{issuer}/token"), &[("grant_type", "client_credentials")], Some(("svc", SVC_SECRET))).await;
    assert_eq!(s, 200, "{b}");
    let at = json_of(&b)["access_token"].as_str().unwrap().to_string();
    assert_eq!(jsonwebtoken::decode_header(&at).unwrap().alg, jsonwebtoken::Algorithm::RS256);
    let (typ, claims) = verify_jwt(&issuer, &at, Some("svc")).await;
    assert_eq!((typ.as_str(), claims["sub"].as_str()), ("at+jwt", Some("broker:svc")));
}
