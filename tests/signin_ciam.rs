//! Browser sign-in for the CIAM platforms (issue 7) against the real binary, through a
//! loopback OP shaped like each: an Azure AD B2C user flow (`shape: azure_b2c`: issuer
//! naming the tenant GUID, `tfp`, `emails`, `idp`, `extension_*`) and Entra External ID
//! (the Entra v2 dialect on a customer tenant). Session, identity headers upstream,
//! MFA only from the MFA-enforcing user flow, and B2C logout.
//!
//! The cookie-keeping agent is the one of tests/signin.rs (each hop asserted by hand).

mod common;

use common::*;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use url::Url;

const SESSION: &str = "idfabric_session";

const APP_B2C: usize = 0;
const APP_EXT: usize = 1;
const N_APPS: usize = 2;

/// The B2C tenant GUID the dev issuer names, like `https://{t}.b2clogin.com/{guid}/v2.0/`.
const B2C_TENANT: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
/// The External ID (customer) tenant.
const EXT_TENANT: &str = "a1b2c3d4-0000-4000-8000-00000000ce11";

struct Fixture {
    env: TestEnv,
    _echo: Echoes,
    _gw: SharedGateway,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

/// The issuer of the B2C-shaped dev provider: below its OP path, the tenant GUID and
/// `v2.0/` (trailing slash included), as B2C's default issuer pattern.
fn b2c_issuer(env: &TestEnv) -> String {
    format!("{}/{B2C_TENANT}/v2.0/", env.dev_issuer("b2c"))
}

impl Fixture {
    fn start() -> Fixture {
        let echo = Echoes::start(N_APPS);
        let env = TestEnv::new();
        env.write(
            "providers/b2c.yaml",
            &format!(
                "id: b2c\nkind: dev\npopulation: customer\nshape: azure_b2c\nissuer: {iss}\nsigning_key: certs/dev-idp-customer.pem\n\
                 display_name: Contoso account\nclient_id: b2c-client\naudiences: [https://api.contoso.test]\n\
                 users:\n\
                 \x20 - {{ name: carol, display_name: Carol Customer, email: carol@gmail.example, connection: google.com, attributes: {{ loyaltyTier: gold }} }}\n\
                 \x20 - {{ name: dave, display_name: Dave Local, email: dave@example.net, mfa: true }}\n",
                iss = b2c_issuer(&env)
            ),
        );
        env.write_dev_provider(
            "ext",
            "customer",
            "entra",
            "dev-idp-customer.pem",
            &format!(
                "display_name: Fabrikam account\nclient_id: ext-client\naudiences: [api://fabrikam]\ntenant: {EXT_TENANT}\nusers:\n\
                 \x20 - {{ name: erin, display_name: Erin External, email: erin@outlook.example, email_verified: true }}\n"
            ),
        );
        let routes = format!(
            "  - name: b2c\n    match: {{ host: b2c.test }}\n    auth: session\n    upstream: [{b2c}]\n    providers: [b2c]\n    require: {{ population: customer }}\n\
             \x20 - name: b2c-ext-only\n    match: {{ host: b2c.test, path_prefix: /ext-only }}\n    auth: session\n    upstream: [{ext}]\n    providers: [ext]\n\
             \x20 - name: ext\n    match: {{ host: ext.test }}\n    auth: session\n    upstream: [{ext}]\n    providers: [ext]\n    require: {{ population: customer }}\n",
            b2c = echo.addr(APP_B2C),
            ext = echo.addr(APP_EXT),
        );
        env.write_routes(&["b2c", "ext"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, _echo: echo, _gw: gw }
    }
}

/// `http://{host}:{proxy port}{path}` on the shared gateway.
fn at(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", fx().env.http_port)
}

// --- A cookie-keeping HTTP agent that follows nothing by itself ---------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
    url: Url,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// The raw `Location` header.
    fn raw_location(&self) -> Option<String> {
        self.header(LOCATION.as_str())
    }

    /// `Location` resolved against the request URL (as a browser does).
    fn location(&self) -> Url {
        let raw = self.raw_location().unwrap_or_else(|| panic!("no Location on {} {}: {}", self.status, self.url, self.body));
        self.url.join(&raw).unwrap()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    /// The whole `Set-Cookie` value for `name`, if this response sets it.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.split(';').next().and_then(|p| p.split_once('=')).is_some_and(|(k, _)| k == name))
    }

    fn is_html(&self) -> bool {
        self.header("content-type").is_some_and(|c| c.starts_with("text/html"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}) from {}: {}", self.url, self.body))
    }

    /// Asserts a redirect and returns its resolved target.
    fn redirect(&self) -> Url {
        assert_eq!(self.status, 302, "expected a redirect from {}, got {}: {}", self.url, self.status, self.body);
        self.location()
    }

    /// The echo app's view of the upstream request's headers.
    fn upstream(&self) -> serde_json::Map<String, Value> {
        assert_eq!(self.status, 200, "not proxied ({}): {}", self.url, self.body);
        self.json()["headers"].as_object().cloned().unwrap_or_default()
    }
}

fn query_of(u: &Url) -> HashMap<String, String> {
    u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A browser-like client: a cookie jar per host (ports ignored, as browsers do),
/// `Accept: text/html` when `browser`.
struct Agent {
    http: reqwest::Client,
    jar: Mutex<HashMap<String, BTreeMap<String, String>>>,
    browser: bool,
}

impl Agent {
    fn browser() -> Agent {
        Agent { http: client(), jar: Mutex::new(HashMap::new()), browser: true }
    }

    fn api() -> Agent {
        Agent { http: client(), jar: Mutex::new(HashMap::new()), browser: false }
    }

    fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(host).and_then(|j| j.get(name).cloned())
    }

    fn set(&self, host: &str, name: &str, value: &str) {
        self.jar.lock().unwrap().entry(host.to_string()).or_default().insert(name.to_string(), value.to_string());
    }

    fn clear(&self, host: &str, name: &str) {
        if let Some(j) = self.jar.lock().unwrap().get_mut(host) {
            j.remove(name);
        }
    }

    async fn get(&self, url: &str) -> Resp {
        self.send("GET", url, None, &[]).await
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Resp {
        self.send("POST", url, Some(form), &[]).await
    }

    async fn send(&self, method: &str, url: &str, form: Option<&[(&str, &str)]>, extra: &[(&str, &str)]) -> Resp {
        let u = Url::parse(url).unwrap();
        let host = u.host_str().unwrap().to_string();
        let port = u.port().expect("test URLs carry a port");
        let target = format!("http://127.0.0.1:{port}{}{}", u.path(), u.query().map(|q| format!("?{q}")).unwrap_or_default());
        let mut rb = match method {
            "POST" => self.http.post(&target),
            _ => self.http.get(&target),
        };
        rb = rb.header(HOST, format!("{host}:{port}"));
        if self.browser {
            rb = rb.header(ACCEPT, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
        }
        let cookies: Vec<String> = self
            .jar
            .lock()
            .unwrap()
            .get(&host)
            .map(|j| j.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        if !cookies.is_empty() {
            rb = rb.header(COOKIE, cookies.join("; "));
        }
        for (k, v) in extra {
            rb = rb.header(*k, *v);
        }
        if let Some(f) = form {
            let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(f.iter()).finish();
            rb = rb.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        let r = Resp { status, headers, body, url: u };
        for c in r.set_cookies() {
            let first = c.split(';').next().unwrap_or_default();
            let Some((k, v)) = first.split_once('=') else { continue };
            let expired = c.split(';').any(|a| a.trim().eq_ignore_ascii_case("Max-Age=0"));
            if expired || v.is_empty() {
                self.clear(&host, k.trim());
            } else {
                self.set(&host, k.trim(), v);
            }
        }
        r
    }

    /// From an app URL to the provider's authorize redirect: app → login → provider.
    async fn to_provider(&self, app_url: &str) -> Url {
        let login = self.get(app_url).await.redirect();
        assert_eq!(login.path(), "/.idfabric/login", "an anonymous browser is sent to the login page");
        let authz = self.get(login.as_str()).await.redirect();
        assert!(authz.path().ends_with("/authorize"), "single-provider route goes to the provider: {authz}");
        authz
    }

    /// On the dev provider's page: shows the page, then "clicks" `user` (posting the
    /// page's own form). Returns the callback URL the provider redirects to.
    async fn pick_user(&self, authorize: &Url, user: &str) -> Url {
        let page = self.get(authorize.as_str()).await;
        assert_eq!(page.status, 200, "dev provider page: {}", page.body);
        assert!(page.is_html());
        assert!(page.body.contains(&format!("name=\"user\" value=\"{user}\"")), "no button for {user}: {}", page.body);
        let action = page.url.join(&unescape(between(&page.body, "<form method=\"post\" action=\"", "\"").unwrap())).unwrap();
        let mut fields = hidden_inputs(&page.body);
        fields.push(("user".into(), user.into()));
        let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let back = self.post(action.as_str(), &form).await.redirect();
        assert_eq!(back.path(), "/.idfabric/callback");
        back
    }

    /// The whole sign-in on a single-provider route: returns the response of the first
    /// request after the callback (the `rd` page) and the session cookie value.
    async fn sign_in(&self, app_url: &str, user: &str) -> (Resp, String) {
        let authz = self.to_provider(app_url).await;
        let callback = self.pick_user(&authz, user).await;
        self.finish(&callback, app_url).await
    }

    /// Follows the callback; asserts a session cookie and the return to `app_url`.
    async fn finish(&self, callback: &Url, app_url: &str) -> (Resp, String) {
        let r = self.get(callback.as_str()).await;
        let back = r.redirect();
        assert_eq!(back.as_str(), Url::parse(app_url).unwrap().as_str(), "returns to the page that asked");
        let host = callback.host_str().unwrap();
        let sid = self.cookie(host, SESSION).unwrap_or_else(|| panic!("no session cookie: {:?}", r.set_cookies()));
        (self.get(back.as_str()).await, sid)
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Undoes minijinja's HTML escaping.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `<input type="hidden" name="…" value="…">` pairs, unescaped.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[i + "<input type=\"hidden\" name=\"".len()..];
        let name = &rest[..rest.find('"').unwrap()];
        let value = between(rest, "value=\"", "\"").unwrap_or_default();
        out.push((unescape(name), unescape(value)));
    }
    out
}

fn decoded(v: &Value) -> String {
    percent_encoding::percent_decode_str(v.as_str().unwrap_or_default()).decode_utf8_lossy().to_string()
}

// --- Azure AD B2C ----------------------------------------------------------------------

#[tokio::test]
async fn b2c_user_flow_sign_in_creates_a_session_with_the_oid_and_the_first_email() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("b2c.test", "/orders")).await;
    assert!(authz.path().starts_with("/.idfabric/dev/b2c/"), "the B2C-shaped OP: {authz}");
    let callback = b.pick_user(&authz, "carol").await;
    let (page, sid) = b.finish(&callback, &at("b2c.test", "/orders")).await;
    assert_eq!(sid.len(), 43);
    let h = page.upstream();
    assert_eq!(h["x-identity-provider"], "b2c");
    assert_eq!(h["x-identity-population"], "customer");
    let sub = decoded(&h["x-identity-sub"]);
    let oid = sub.strip_prefix("b2c:").unwrap_or_else(|| panic!("{{id}}:{{oid}}: {sub}"));
    assert_eq!(oid.len(), 36, "the subject is the B2C object id (a GUID): {sub}");
    assert_eq!(oid.matches('-').count(), 4, "{sub}");
    assert_eq!(decoded(&h["x-identity-email"]), "carol@gmail.example", "from `emails`");
    assert_eq!(h["x-identity-mfa"], "false", "B2C_1_susi does not enforce MFA");

    // The session's identity: tenant from the issuer, social `idp`, the policy and `extension_*`.
    let me = b.get(&at("b2c.test", "/.idfabric/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["provider"], "b2c");
    assert_eq!(me["token_use"], "session");
    let text = me.to_string();
    assert!(text.contains(B2C_TENANT), "tenant from the issuer's GUID: {text}");
    assert!(text.contains("b2c-idp:google.com"), "idp of a social account: {text}");
    assert!(text.contains("B2C_1_susi"), "the policy is an attribute: {text}");
    assert!(text.contains("gold"), "extension_loyaltyTier: {text}");

    // The same person signs in again with the same subject.
    let again = Agent::browser();
    let (page2, _) = again.sign_in(&at("b2c.test", "/"), "carol").await;
    assert_eq!(decoded(&page2.upstream()["x-identity-sub"]), sub);
}

#[tokio::test]
async fn b2c_mfa_comes_only_from_the_mfa_enforcing_user_flow() {
    let b = Agent::browser();
    let (page, _) = b.sign_in(&at("b2c.test", "/"), "dave").await;
    let h = page.upstream();
    assert_eq!(decoded(&h["x-identity-email"]), "dave@example.net");
    assert_eq!(h["x-identity-mfa"], "true", "B2C_1_susi_mfa is configured as enforcing MFA");
    let text = b.get(&at("b2c.test", "/.idfabric/me")).await.body;
    assert!(text.contains("B2C_1_susi_mfa"), "{text}");
}

#[tokio::test]
async fn b2c_logout_ends_the_session_at_the_provider_too() {
    let b = Agent::browser();
    let (page, sid) = b.sign_in(&at("b2c.test", "/"), "carol").await;
    assert_eq!(page.status, 200);
    let r = b.get(&at("b2c.test", "/.idfabric/logout")).await;
    let clear = r.set_cookie(SESSION).expect("the cookie is cleared");
    assert!(clear.contains("Max-Age=0"), "{clear}");
    assert!(b.cookie("b2c.test", SESSION).is_none());
    let end = r.redirect();
    assert_eq!(end.path(), "/.idfabric/dev/b2c/logout", "RP-initiated logout at the B2C-shaped OP");
    let q = query_of(&end);
    assert_eq!(q["post_logout_redirect_uri"], at("b2c.test", "/.idfabric/logged-out"));
    assert_eq!(q["id_token_hint"].split('.').count(), 3);
    let back = b.get(end.as_str()).await.redirect();
    assert_eq!(back.as_str(), at("b2c.test", "/.idfabric/logged-out"));
    assert_eq!(b.get(back.as_str()).await.status, 200);

    // The old cookie is no session any more.
    let replay = Agent::browser();
    replay.set("b2c.test", SESSION, &sid);
    assert_eq!(replay.get(&at("b2c.test", "/")).await.redirect().path(), "/.idfabric/login");
    let api = Agent::api();
    api.set("b2c.test", SESSION, &sid);
    assert_eq!(api.get(&at("b2c.test", "/")).await.status, 401);
}

// --- Entra External ID -----------------------------------------------------------------

#[tokio::test]
async fn external_id_sign_in_reads_the_entra_v2_dialect_on_a_customer_tenant() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("ext.test", "/account")).await;
    assert!(authz.path().starts_with("/.idfabric/dev/ext/"), "{authz}");
    let callback = b.pick_user(&authz, "erin").await;
    let (page, _) = b.finish(&callback, &at("ext.test", "/account")).await;
    let h = page.upstream();
    assert_eq!(h["x-identity-provider"], "ext");
    assert_eq!(h["x-identity-population"], "customer");
    assert!(decoded(&h["x-identity-sub"]).starts_with("ext:"), "{h:?}");
    assert_eq!(decoded(&h["x-identity-email"]), "erin@outlook.example");
    let me = b.get(&at("ext.test", "/.idfabric/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains(EXT_TENANT), "the customer tenant's tid: {}", me.body);
}

#[tokio::test]
async fn a_session_only_opens_routes_that_accept_its_provider() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("b2c.test", "/account")).await;
    let callback = b.pick_user(&authz, "carol").await;
    let (page, _) = b.finish(&callback, &at("b2c.test", "/account")).await;
    assert_eq!(page.upstream()["x-identity-provider"], "b2c");
    // Same host, same cookie, but this route accepts only `ext`: sign in again there.
    let r = b.get(&at("b2c.test", "/ext-only/x")).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(r.location().path(), "/.idfabric/login");
}
