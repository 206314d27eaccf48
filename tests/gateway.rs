//! The gateway end to end, against the real binary: population routing, every
//! `require` rule over HTTP, header spoofing, `authorization:` modes, the broker-minted
//! `X-Identity-Token`, refusals (problem+json, docs/refusals.md), forward-auth and
//! `/me`, route matching, upstream failure and the admin listener.
//!
//! One gateway, one echo process (many ports, one app per port) and one config serve
//! the whole file (starting a gateway per test would cost more than the tests); every
//! test uses its own routes (by host), so tests can run in parallel and metric deltas
//! stay attributable.
//!
//! Providers: `wf` (workforce, Entra-shaped), `cu` (customer, Auth0-shaped),
//! `cg` (customer, Cognito-shaped).

use crate::common;

use common::*;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, HOST};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

// Echo app indices (one port each).
const APP_WF: usize = 0;
const APP_CU: usize = 1;
const APP: usize = 2;
const M_EXACT: usize = 3;
const M_WILD: usize = 4;
const M_ANY: usize = 5;
const M_API: usize = 6;
const M_API_V2: usize = 7;
const M_ROOT: usize = 8;
const PUBLIC: usize = 9;
const N_APPS: usize = 10;

const WF_TENANT: &str = "3f1b5c2a-1111-4222-8333-444455556666";

struct Fixture {
    env: TestEnv,
    echo: Echoes,
    gw: SharedGateway,
    tokens: Mutex<HashMap<(String, String), String>>,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

impl Fixture {
    fn start() -> Fixture {
        let echo = Echoes::start(N_APPS);
        let env = TestEnv::new();
        let (code, _, err) = env.run(&["keys", "generate", "--dir", "certs2"]);
        assert_eq!(code, 0, "{err}");
        env.write_dev_provider(
            "wf",
            "workforce",
            "entra",
            "dev-idp-workforce.pem",
            &format!(
                "tenant: {WF_TENANT}\naudiences: [api://idfabric]\nusers:\n\
                 - {{ name: alice, display_name: \"Alice Zoë\", email: alice@contoso.example, email_verified: true, groups: [hr, staff], roles: [reader], scopes: [orders:read], mfa: true }}\n\
                 - {{ name: bob, display_name: Bob, email: bob@contoso.example, groups: [staff], mfa: false }}\n\
                 - {{ name: carl, email: carl@contoso.example, email_verified: true, groups: [hr, eng], roles: [admin], mfa: true }}\n"
            ),
        );
        env.write_dev_provider(
            "cu",
            "customer",
            "auth0",
            "dev-idp-customer.pem",
            "audiences: [https://api.shop.example]\n\
             claims: { groups: https://idfabric.dev/groups, roles: https://idfabric.dev/roles, email: https://idfabric.dev/email, email_verified: https://idfabric.dev/email_verified }\n\
             users:\n\
             - { name: carol, email: carol@gmail.example, email_verified: true, connection: google-oauth2, scopes: [orders:read], groups: [vip] }\n\
             - { name: dave, email: dave@example.net, connection: auth0 }\n",
        );
        env.write_dev_provider(
            "cg",
            "customer",
            "cognito",
            "../certs2/dev-idp-customer.pem",
            "users:\n- { name: erin, email: erin@example.org, groups: [members], scopes: [orders:read], mfa: true }\n",
        );
        let a = |i: usize| echo.addr(i);
        let (closed1, closed2, closed3) = (closed_port(), closed_port(), closed_port());
        let simple = |name: &str, require: &str| {
            format!("  - name: {name}\n    match: {{ host: {name}.test }}\n    upstream: [{}]\n    require: {{ {require} }}\n", a(APP))
        };
        let mut routes = String::new();
        routes += &format!(
            "  - name: pop\n    match: {{ host: pop.test }}\n    by_population:\n      workforce: {{ upstream: [{}] }}\n      customer: {{ upstream: [{}] }}\n",
            a(APP_WF),
            a(APP_CU)
        );
        routes += &format!(
            "  - name: pop-wf-only\n    match: {{ host: pop-wf-only.test }}\n    by_population:\n      workforce: {{ upstream: [{}] }}\n",
            a(APP_WF)
        );
        routes += &format!(
            "  - name: pop-default\n    match: {{ host: pop-default.test }}\n    upstream: [{}]\n    by_population:\n      workforce: {{ upstream: [{}], require: {{ mfa: true }} }}\n",
            a(APP),
            a(APP_WF)
        );
        routes += &simple("req-population", "population: workforce");
        routes += &simple("req-mfa", "mfa: true");
        routes += &simple("req-groups-any", "groups_any: [hr, finance]");
        routes += &simple("req-groups-all", "groups_all: [hr, eng]");
        routes += &simple("req-roles", "roles_any: [admin, owner]");
        routes += &simple("req-scopes", "scopes_all: [orders:read]");
        routes += &simple("req-tenants", &format!("tenants: [{WF_TENANT}, cg]"));
        routes += &simple("req-email", "email_verified: true");
        routes += &simple("fa", "groups_any: [hr]");
        let opt = |name: &str, extra: &str| {
            format!("  - name: {name}\n    match: {{ host: {name}.test }}\n    upstream: [{}]\n{extra}", a(APP))
        };
        routes += &opt("bearer", "    auth: bearer\n");
        routes += &opt("either", "");
        routes += &opt("session-only", "    auth: session\n");
        routes += &opt("authz-default", "");
        routes += &opt("authz-keep", "    authorization: keep\n");
        routes += &opt("authz-strip", "    authorization: strip\n");
        routes += &opt("authz-idtoken", "    authorization: identity_token\n");
        routes += &opt("no-idtoken", "    identity_token: false\n");
        routes += &opt("spoof", "");
        routes += &opt("refusals", "    auth: bearer\n");
        routes += &opt("browser", "");
        routes += &opt("only-cu", "    providers: [cu]\n");
        routes += &opt("metrics-probe", "");
        let public = |name: &str, matcher: &str, i: usize| {
            format!("  - name: {name}\n    match: {{ {matcher} }}\n    auth: none\n    upstream: [{}]\n", a(i))
        };
        routes += &public("m-exact", "host: api.example.test", M_EXACT);
        routes += &public("m-wild", "host: \"*.example.test\"", M_WILD);
        routes += &public("m-any", "path_prefix: /anyhost", M_ANY);
        routes += &public("m-api", "host: prefix.test, path_prefix: /api", M_API);
        routes += &public("m-api-v2", "host: prefix.test, path_prefix: /api/v2", M_API_V2);
        routes += &public("m-root", "host: prefix.test, path_prefix: /", M_ROOT);
        routes += &public("public", "path_prefix: /public/", PUBLIC);
        // One app behind an open prefix and a protected rest (a common layout).
        routes += &public("trav-open", "host: trav.test, path_prefix: /open/", APP);
        routes += &opt("trav", "    require: { groups_any: [hr] }\n").replace("host: trav.test", "host: trav.test, path_prefix: /");
        routes += &public("public-strip", "host: public-strip.test", PUBLIC).replace("auth: none\n", "auth: none\n    authorization: strip\n");
        routes += &format!("  - name: up-partial\n    match: {{ host: up-partial.test }}\n    auth: none\n    upstream: [127.0.0.1:{closed1}, {}]\n", a(APP));
        routes += &format!("  - name: up-down\n    match: {{ host: up-down.test }}\n    auth: none\n    upstream: [127.0.0.1:{closed2}, 127.0.0.1:{closed3}]\n");
        routes += &format!("  - name: up-down-auth\n    match: {{ host: up-down-auth.test }}\n    upstream: [127.0.0.1:{closed3}]\n");
        env.write_routes(&["wf", "cu", "cg"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, echo, gw, tokens: Mutex::new(HashMap::new()) }
    }

    /// A fresh access token for a dev user (minted once per file).
    fn token(&self, provider: &str, user: &str) -> String {
        let key = (provider.to_string(), user.to_string());
        if let Some(t) = self.tokens.lock().unwrap().get(&key) {
            return t.clone();
        }
        let t = self.env.mint(provider, user, &[]);
        self.tokens.lock().unwrap().insert(key, t.clone());
        t
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.proxy())
    }

    /// `GET path` on the proxy with `Host: host`.
    fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        client().get(self.url(path)).header(HOST, host)
    }
}

/// A response read completely.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// The echo app's view of the upstream request's headers.
    fn upstream_headers(&self) -> serde_json::Map<String, Value> {
        assert_eq!(self.status, 200, "not proxied: {}", self.body);
        self.json()["headers"].as_object().cloned().unwrap_or_default()
    }

    fn app(&self) -> String {
        self.json()["app"].as_str().unwrap_or_default().to_string()
    }

    fn assert_problem(&self, status: u16, reason: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.header("content-type").as_deref(), Some("application/problem+json"), "{self:?}");
        let b = self.json();
        assert_eq!(b["status"], status, "{b}");
        assert_eq!(b["reason"], reason, "{b}");
        assert!(b["type"].is_string() && b["title"].is_string() && b["detail"].is_string(), "{b}");
    }

    /// The `error="..."` of the `WWW-Authenticate` challenge.
    fn challenge_error(&self) -> Option<String> {
        let c = self.header("www-authenticate")?;
        assert!(c.starts_with("Bearer"), "{c}");
        let rest = c.split("error=\"").nth(1)?;
        Some(rest.split('"').next()?.to_string())
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Got {
    let resp = rb.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    assert_ne!(status, 500, "the gateway never answers 500: {body}");
    Got { status, headers, body }
}

/// A valid request still succeeds (after a bad one).
async fn still_serving() {
    let f = fx();
    let g = send(f.get("req-mfa.test", "/ok").bearer_auth(f.token("wf", "alice"))).await;
    assert_eq!(g.status, 200, "gateway stopped serving valid requests: {}", g.body);
}

// --- population routing ------------------------------------------------------------

#[tokio::test]
async fn by_population_routes_each_population_to_its_upstream() {
    let f = fx();
    struct Case {
        name: &'static str,
        route: &'static str,
        provider: &'static str,
        user: &'static str,
        status: u16,
        app: Option<usize>,
        reason: Option<&'static str>,
    }
    let cases = [
        Case { name: "workforce to A", route: "pop", provider: "wf", user: "bob", status: 200, app: Some(APP_WF), reason: None },
        Case { name: "auth0 customer to B", route: "pop", provider: "cu", user: "dave", status: 200, app: Some(APP_CU), reason: None },
        Case { name: "cognito customer to B", route: "pop", provider: "cg", user: "erin", status: 200, app: Some(APP_CU), reason: None },
        Case { name: "workforce-only: workforce", route: "pop-wf-only", provider: "wf", user: "alice", status: 200, app: Some(APP_WF), reason: None },
        Case {
            name: "workforce-only: customer without target or default",
            route: "pop-wf-only",
            provider: "cu",
            user: "carol",
            status: 403,
            app: None,
            reason: Some("population_not_allowed"),
        },
        Case { name: "default upstream serves the other population", route: "pop-default", provider: "cu", user: "dave", status: 200, app: Some(APP), reason: None },
        Case { name: "population target requirement applies", route: "pop-default", provider: "wf", user: "bob", status: 401, app: None, reason: Some("mfa_required") },
        Case { name: "population target with its requirement met", route: "pop-default", provider: "wf", user: "alice", status: 200, app: Some(APP_WF), reason: None },
    ];
    for c in cases {
        let token = f.token(c.provider, c.user);
        let g = send(f.get(&format!("{}.test", c.route), "/x").bearer_auth(&token)).await;
        assert_eq!(g.status, c.status, "{}: {}", c.name, g.body);
        if let Some(app) = c.app {
            assert_eq!(g.app(), f.echo.app(app), "{}", c.name);
            let h = g.upstream_headers();
            let pop = if c.provider == "wf" { "workforce" } else { "customer" };
            assert_eq!(h["x-identity-population"], pop, "{}", c.name);
        }
        if let Some(reason) = c.reason {
            let status = c.status;
            g.assert_problem(status, reason);
            if reason == "population_not_allowed" {
                assert_eq!(g.json()["requirement"], "population", "{}", c.name);
            }
        }
    }
}

// --- every `require` rule ------------------------------------------------------------

#[tokio::test]
async fn every_require_rule_allows_and_refuses_over_http() {
    let f = fx();
    // (case, route, provider, user, status, reason, requirement, WWW-Authenticate error)
    type Case = (&'static str, &'static str, &'static str, &'static str, u16, &'static str, &'static str, Option<&'static str>);
    let cases: &[Case] = &[
        ("population: workforce allowed", "req-population", "wf", "bob", 200, "", "", None),
        ("population: customer refused", "req-population", "cu", "carol", 403, "population_not_allowed", "population", None),
        ("mfa: workforce with mfa", "req-mfa", "wf", "alice", 200, "", "", None),
        ("mfa: cognito customer with mfa", "req-mfa", "cg", "erin", 200, "", "", None),
        ("mfa: workforce without mfa", "req-mfa", "wf", "bob", 401, "mfa_required", "mfa", Some("insufficient_user_authentication")),
        ("mfa: customer without mfa", "req-mfa", "cu", "carol", 401, "mfa_required", "mfa", Some("insufficient_user_authentication")),
        ("groups_any: member of hr", "req-groups-any", "wf", "alice", 200, "", "", None),
        ("groups_any: no listed group", "req-groups-any", "wf", "bob", 403, "group_required", "groups", None),
        ("groups_any: customer group vip", "req-groups-any", "cu", "carol", 403, "group_required", "groups", None),
        ("groups_all: hr and eng", "req-groups-all", "wf", "carl", 200, "", "", None),
        ("groups_all: hr only", "req-groups-all", "wf", "alice", 403, "group_required", "groups", None),
        ("roles_any: admin", "req-roles", "wf", "carl", 200, "", "", None),
        ("roles_any: reader only", "req-roles", "wf", "alice", 403, "role_required", "roles_any", None),
        ("roles_any: no roles", "req-roles", "cu", "dave", 403, "role_required", "roles_any", None),
        ("scopes_all: workforce scp", "req-scopes", "wf", "alice", 200, "", "", None),
        ("scopes_all: auth0 scope", "req-scopes", "cu", "carol", 200, "", "", None),
        ("scopes_all: cognito scope", "req-scopes", "cg", "erin", 200, "", "", None),
        ("scopes_all: missing", "req-scopes", "cu", "dave", 403, "insufficient_scope", "scopes_all", Some("insufficient_scope")),
        ("scopes_all: workforce missing", "req-scopes", "wf", "bob", 403, "insufficient_scope", "scopes_all", Some("insufficient_scope")),
        ("tenants: entra tenant listed", "req-tenants", "wf", "alice", 200, "", "", None),
        ("tenants: cognito pool listed", "req-tenants", "cg", "erin", 200, "", "", None),
        ("tenants: auth0 tenant not listed", "req-tenants", "cu", "carol", 403, "tenant_required", "tenants", None),
        ("email_verified: entra verified", "req-email", "wf", "alice", 200, "", "", None),
        ("email_verified: auth0 verified", "req-email", "cu", "carol", 200, "", "", None),
        ("email_verified: entra unknown", "req-email", "wf", "bob", 403, "email_not_verified", "email_verified", None),
        ("email_verified: auth0 unverified", "req-email", "cu", "dave", 403, "email_not_verified", "email_verified", None),
    ];
    let mut failures = Vec::new();
    for &(name, route, provider, user, status, reason, requirement, error) in cases {
        let token = f.token(provider, user);
        let g = send(f.get(&format!("{route}.test"), "/r").bearer_auth(&token)).await;
        if g.status != status {
            failures.push(format!("{name}: want {status}, got {} {}", g.status, g.body));
            continue;
        }
        if status == 200 {
            let h = g.upstream_headers();
            assert_eq!(g.app(), f.echo.app(APP), "{name}");
            assert!(h["x-identity-sub"].as_str().unwrap().starts_with(&format!("{provider}:")), "{name}");
            continue;
        }
        g.assert_problem(status, reason);
        let body = g.json();
        assert_eq!(body["requirement"], requirement, "{name}: {body}");
        assert_eq!(body["route"], route, "{name}: {body}");
        assert!(!g.body.contains(&token) && !g.body.contains("eyJ"), "{name}: the body carries a token: {}", g.body);
        assert_eq!(g.challenge_error().as_deref(), error, "{name}: {:?}", g.header("www-authenticate"));
    }
    assert!(failures.is_empty(), "failed cases:\n{}", failures.join("\n"));
}

// --- header spoofing ------------------------------------------------------------------

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let f = fx();
    let spoof = [
        ("X-IDENTITY-SUB", "evil-sub"),
        ("x-identity-extra", "evil-extra"),
        ("X-Identity-Groups", "evil-admins"),
        ("X-Identity-Mfa", "evil-true"),
        ("x-IdEnTiTy-PoPuLaTiOn", "evil-pop"),
        ("X-Identity-Token", "evil.token.value"),
        ("X-Identity-Email", "evil@example.com"),
        ("X-Identity-", "evil-empty-suffix"),
    ];
    let with_spoof = |rb: reqwest::RequestBuilder| spoof.iter().fold(rb, |rb, (k, v)| rb.header(*k, *v));
    // (case, request, whether the upstream gets real identity headers)
    let cases = [
        ("authenticated route", with_spoof(f.get("spoof.test", "/s").bearer_auth(f.token("wf", "alice"))), true),
        ("auth: none route", with_spoof(f.get("any.test", "/public/s")), false),
        ("auth: none route with a token", with_spoof(f.get("any.test", "/public/s").bearer_auth(f.token("wf", "alice"))), false),
    ];
    for (name, rb, identified) in cases {
        let g = send(rb).await;
        let h = g.upstream_headers();
        for (k, v) in &h {
            if k.starts_with("x-identity") {
                assert!(!v.as_str().unwrap_or("").contains("evil"), "{name}: spoofed {k}: {v} reached the upstream");
            }
        }
        assert!(!h.contains_key("x-identity-extra") && !h.contains_key("x-identity-"), "{name}: {h:?}");
        if identified {
            assert!(h["x-identity-sub"].as_str().unwrap().starts_with("wf:"), "{name}");
            assert_eq!(h["x-identity-mfa"], "true", "{name}");
            assert_eq!(h["x-identity-groups"], "hr,staff", "{name}");
            assert!(h["x-identity-token"].as_str().unwrap().starts_with("eyJ"), "{name}");
        } else {
            assert!(!h.keys().any(|k| k.starts_with("x-identity")), "{name}: {h:?}");
        }
    }
}

/// `X-Identity_Sub` is a different header name, but CGI-style stacks (PHP, Rack, WSGI)
/// turn both `-` and `_` into `HTTP_X_IDENTITY_SUB`, so it must not reach the app either.
#[tokio::test]
async fn underscore_variants_of_identity_headers_are_removed() {
    let f = fx();
    let g = send(
        f.get("spoof.test", "/s")
            .bearer_auth(f.token("wf", "bob"))
            .header("X-Identity_Sub", "evil-sub")
            .header("x_identity_groups", "evil-admins"),
    )
    .await;
    let h = g.upstream_headers();
    let leaked: Vec<_> = h.iter().filter(|(_, v)| v.as_str().unwrap_or("").contains("evil")).collect();
    assert!(leaked.is_empty(), "underscore identity headers reached the upstream: {leaked:?}");
}

/// Every spelling whose letters read `xidentity` (separators are whatever RFC 9110
/// `tchar` allows) is removed before the upstream, and forward-auth and `/me` never
/// echo one back.
#[tokio::test]
async fn identity_headers_in_any_spelling_never_reach_the_upstream() {
    const SPELLINGS: &[&str] = &[
        "X-Identity.Sub",
        "X-Identity~Groups",
        "x_identity_sub",
        "XIdentity-Sub",
        "X-IDENTITY--sub",
        "x.identity.email",
        "X!Identity#Roles",
        "x$identity%mfa",
        "x&identity'tenant",
        "x*identity+name",
        "x^identity`username",
        "x|identity|provider",
        "xidentitytoken",
        "X-Identity",
    ];
    let f = fx();
    let forged = |mut rb: reqwest::RequestBuilder| {
        for (i, n) in SPELLINGS.iter().enumerate() {
            rb = rb.header(*n, format!("evil-{i}"));
        }
        rb
    };
    let g = send(forged(f.get("spoof.test", "/s").bearer_auth(f.token("wf", "bob")))).await;
    let h = g.upstream_headers();
    let leaked: Vec<_> = h.iter().filter(|(_, v)| v.as_str().unwrap_or("").contains("evil")).collect();
    assert!(leaked.is_empty(), "identity header spellings reached the upstream: {leaked:?}");
    assert!(h["x-identity-sub"].as_str().unwrap().starts_with("wf:"), "{h:?}");
    // Anonymous requests too (no identity headers of ours at all).
    let h = send(forged(f.get("any.test", "/public/s"))).await.upstream_headers();
    assert!(!h.values().any(|v| v.as_str().unwrap_or("").contains("evil")), "{h:?}");
    // Forward-auth answers with its own headers only; `/me` with the identity only.
    let g = send(forged(
        client().get(f.url("/.idfabric/auth")).header("x-forwarded-host", "fa.test").header("x-forwarded-uri", "/r"),
    )
    .bearer_auth(f.token("wf", "alice")))
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    for (k, v) in &g.headers {
        assert!(!v.to_str().unwrap_or("").contains("evil"), "forward-auth echoed {k}: {v:?}");
    }
    let g = send(forged(client().get(f.url("/.idfabric/me"))).bearer_auth(f.token("wf", "alice"))).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(!g.body.contains("evil"), "/me echoed a client header: {}", g.body);
    assert!(g.headers.iter().all(|(_, v)| !v.to_str().unwrap_or("").contains("evil")));
}

#[tokio::test]
async fn identity_header_values_are_percent_encoded() {
    let f = fx();
    let g = send(f.get("spoof.test", "/s").bearer_auth(f.token("wf", "alice"))).await;
    let h = g.upstream_headers();
    assert_eq!(h["x-identity-name"], "Alice Zo%C3%AB");
    assert_eq!(h["x-identity-provider"], "wf");
    assert_eq!(h["x-identity-tenant"], WF_TENANT);
    assert_eq!(h["x-identity-email"], "alice@contoso.example");
    assert_eq!(h["x-identity-roles"], "reader");
}

// --- authorization: keep | strip | identity_token ---------------------------------------

#[tokio::test]
async fn authorization_option_keeps_strips_or_replaces_the_header() {
    let f = fx();
    let token = f.token("wf", "alice");
    let original = format!("Bearer {token}");
    for (route, want) in [
        ("authz-default", "keep"),
        ("authz-keep", "keep"),
        ("authz-strip", "strip"),
        ("authz-idtoken", "identity_token"),
    ] {
        let g = send(f.get(&format!("{route}.test"), "/a").bearer_auth(&token)).await;
        let h = g.upstream_headers();
        let auth = h.get("authorization").and_then(Value::as_str);
        match want {
            "keep" => assert_eq!(auth, Some(original.as_str()), "{route}"),
            "strip" => assert_eq!(auth, None, "{route}"),
            _ => {
                let replaced = auth.unwrap_or_else(|| panic!("{route}: no Authorization upstream"));
                let minted = replaced.strip_prefix("Bearer ").expect("a Bearer header");
                assert_ne!(minted, token, "{route}: the provider token was forwarded");
                assert_eq!(Some(minted), h["x-identity-token"].as_str(), "{route}: Authorization carries the identity token");
                let claims = jwt_claims(minted);
                assert_eq!(claims["aud"], route);
                assert_eq!(claims["iss"], format!("{}/broker", f.env.proxy()));
            }
        }
    }
    // auth: none routes: the client's header passes by default (keep), and `strip` removes it.
    let g = send(f.get("any.test", "/public/k").header(AUTHORIZATION, "Bearer opaque-public")).await;
    assert_eq!(g.upstream_headers().get("authorization").and_then(Value::as_str), Some("Bearer opaque-public"));
    let g = send(f.get("public-strip.test", "/k").header(AUTHORIZATION, "Bearer opaque-public")).await;
    assert_eq!(g.upstream_headers().get("authorization"), None);
}

// --- X-Identity-Token ---------------------------------------------------------------------

async fn broker_key(f: &Fixture) -> (jsonwebtoken::DecodingKey, jsonwebtoken::jwk::Jwk) {
    let jwks: Value = client().get(f.url("/broker/jwks")).send().await.unwrap().json().await.unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    (jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(), jwk)
}

#[tokio::test]
async fn identity_token_verifies_with_the_published_broker_key() {
    let f = fx();
    let (key, jwk) = broker_key(f).await;
    let discovery: Value =
        client().get(f.url("/broker/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let issuer = format!("{}/broker", f.env.proxy());
    assert_eq!(discovery["issuer"], issuer);
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/jwks"));
    for (route, provider, user) in [("spoof", "wf", "alice"), ("req-scopes", "cu", "carol"), ("pop", "cg", "erin")] {
        let g = send(f.get(&format!("{route}.test"), "/t").bearer_auth(f.token(provider, user))).await;
        let h = g.upstream_headers();
        let minted = h["x-identity-token"].as_str().unwrap_or_else(|| panic!("{route}: no X-Identity-Token"));
        let header = jsonwebtoken::decode_header(minted).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256, "{route}");
        if let (Some(kid), Some(want)) = (&header.kid, &jwk.common.key_id) {
            assert_eq!(kid, want, "{route}");
        }
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&[route]);
        v.set_issuer(&[issuer.as_str()]);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Value>(minted, &key, &v).unwrap_or_else(|e| panic!("{route}: {e}"));
        let c = data.claims;
        let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
        assert!(exp > iat && exp - iat <= 300, "{route}: lifetime {}", exp - iat);
        assert_eq!(c["sub"], h["x-identity-sub"], "{route}");
        assert_eq!(c["provider"], provider, "{route}");
        assert!(c["groups"].is_array() && c["roles"].is_array() && c["scopes"].is_array(), "{route}: {c}");
        // The token is bound to its route: another route's audience does not verify.
        let mut other = v.clone();
        other.set_audience(&["some-other-route"]);
        assert!(jsonwebtoken::decode::<Value>(minted, &key, &other).is_err(), "{route}");
    }
}

#[tokio::test]
async fn identity_token_false_sends_no_token() {
    let f = fx();
    let g = send(f.get("no-idtoken.test", "/n").bearer_auth(f.token("wf", "alice"))).await;
    let h = g.upstream_headers();
    assert!(!h.contains_key("x-identity-token"), "{h:?}");
    assert!(h["x-identity-sub"].as_str().unwrap().starts_with("wf:"));
}

// --- refusals ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_credentials_are_refused_per_interface_and_the_gateway_keeps_serving() {
    let f = fx();
    let valid = f.token("wf", "alice");
    let big = format!("Bearer {}", "a".repeat(17 * 1024));
    let mut dup = HeaderMap::new();
    dup.append(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {valid}")).unwrap());
    dup.append(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {valid}")).unwrap());
    // (case, extra headers, status, reason, WWW-Authenticate error)
    let cases: Vec<(&str, HeaderMap, u16, &str, &str)> = vec![
        ("no token", HeaderMap::new(), 401, "missing_token", "invalid_token"),
        ("basic scheme", one(AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0"), 401, "unsupported_scheme", "invalid_token"),
        ("duplicate authorization", dup, 400, "duplicate_authorization", "invalid_request"),
        ("empty bearer", one(AUTHORIZATION, "Bearer "), 401, "malformed_token", "invalid_token"),
        ("space inside token", one(AUTHORIZATION, "Bearer abc def"), 401, "malformed_token", "invalid_token"),
        ("not a jwt", one(AUTHORIZATION, "Bearer not-a-jwt"), 401, "malformed_token", "invalid_token"),
        ("garbage segments", one(AUTHORIZATION, "Bearer abc.def.ghi"), 401, "malformed_token", "invalid_token"),
        ("oversized", one(AUTHORIZATION, &big), 401, "token_too_large", "invalid_token"),
        ("browser on a bearer route", one(reqwest::header::ACCEPT, "text/html"), 401, "missing_token", "invalid_token"),
    ];
    for (name, headers, status, reason, error) in cases {
        let g = send(f.get("refusals.test", "/r").headers(headers)).await;
        assert_eq!(g.status, status, "{name}: {}", g.body);
        g.assert_problem(status, reason);
        assert_eq!(g.challenge_error().as_deref(), Some(error), "{name}");
        assert!(g.header("www-authenticate").unwrap().contains("error_description="), "{name}");
        assert!(!g.body.contains(&valid), "{name}: the body carries the token");
        still_serving().await;
    }
}

#[tokio::test]
async fn every_response_carries_the_request_id_the_upstream_saw() {
    let f = fx();
    let is_generated = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    // Refusals idfabric writes itself echo the caller's id (so a refused caller can quote
    // the audit line's id) or the one generated for the request.
    let g = send(f.get("refusals.test", "/r").header("x-request-id", "req-refused-7")).await;
    g.assert_problem(401, "missing_token");
    assert_eq!(g.header("x-request-id").as_deref(), Some("req-refused-7"));
    let g = send(f.get("nowhere.test", "/x")).await;
    g.assert_problem(404, "no_route");
    assert!(g.header("x-request-id").is_some_and(|id| is_generated(&id)), "{:?}", g.headers);
    let g = send(f.get("refusals.test", "/r").header("x-request-id", "bad id")).await;
    assert!(g.header("x-request-id").is_some_and(|id| is_generated(&id)), "an id with a space is replaced");
    // A proxied answer carries the id the upstream received.
    let resp = f.get("req-mfa.test", "/ok").bearer_auth(f.token("wf", "alice")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answered = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let seen = echo_headers(resp).await["x-request-id"].as_str().map(str::to_string);
    assert!(answered.as_deref().is_some_and(is_generated), "{answered:?}");
    assert_eq!(answered, seen, "the response and the upstream name the same request");
    let resp = f.get("req-mfa.test", "/ok").header("x-request-id", "req-ok-7").bearer_auth(f.token("wf", "alice"));
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "req-ok-7");
    assert_eq!(echo_headers(resp).await["x-request-id"], "req-ok-7");
    // A repeated header reaches the upstream as the one id chosen.
    let mut twice = HeaderMap::new();
    twice.append("x-request-id", HeaderValue::from_static("req-dup-7"));
    twice.append("x-request-id", HeaderValue::from_static("req-dup-8"));
    let resp = f.get("req-mfa.test", "/ok").headers(twice).bearer_auth(f.token("wf", "alice"));
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.headers().get_all("x-request-id").iter().count(), 1);
    assert_eq!(echo_headers(resp).await["x-request-id"], "req-dup-7");
}

fn one(name: reqwest::header::HeaderName, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

#[tokio::test]
async fn non_visible_authorization_bytes_are_a_malformed_token() {
    let f = fx();
    let port = f.env.http_port;
    for (name, value) in [
        ("latin-1 bytes", &b"Bearer \xff\xfeabc"[..]),
        ("utf-8 text", "Bearer t\u{00f6}ken".as_bytes()),
        ("tab inside", &b"Bearer abc\tdef"[..]),
    ] {
        let mut req = b"GET /r HTTP/1.1\r\nHost: refusals.test\r\nConnection: close\r\nAuthorization: ".to_vec();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n\r\n");
        let (status, head, body) = raw_request(port, &req);
        assert_eq!(status, 401, "{name}: {head}\n{body}");
        let b: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{name}: {body}"));
        assert_eq!(b["reason"], "malformed_token", "{name}");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer error=\"invalid_token\""), "{name}: {head}");
        still_serving().await;
    }
}

#[tokio::test]
async fn browser_without_session_is_sent_to_login_and_apis_get_401() {
    let f = fx();
    let g = send(f.get("browser.test", "/deep/page?x=1&y=a%20b").header("accept", "text/html,application/xhtml+xml")).await;
    assert_eq!(g.status, 302, "{}", g.body);
    let loc = g.header("location").unwrap();
    let rd = loc.strip_prefix("/.idfabric/login?rd=").unwrap_or_else(|| panic!("location {loc}"));
    let decoded: String = url::form_urlencoded::parse(format!("rd={rd}").as_bytes()).next().unwrap().1.into_owned();
    assert_eq!(decoded, "/deep/page?x=1&y=a%20b");
    // No text/html: an API client, so a 401 challenge.
    let g = send(f.get("browser.test", "/deep/page").header("accept", "application/json")).await;
    g.assert_problem(401, "missing_token");
    // Session-only route, browser: also the login page.
    let g = send(f.get("session-only.test", "/s").header("accept", "text/html")).await;
    assert_eq!(g.status, 302);
    // Session-only route, bearer token: not a session.
    let g = send(f.get("session-only.test", "/s").bearer_auth(f.token("wf", "alice"))).await;
    assert_eq!(g.status, 401, "{}", g.body);
    still_serving().await;
}

#[tokio::test]
async fn no_matching_route_is_a_404_problem() {
    let f = fx();
    for (host, path) in [("nowhere.test", "/x"), ("example.test", "/x"), ("prefix.test.evil", "/api")] {
        let g = send(f.get(host, path)).await;
        g.assert_problem(404, "no_route");
    }
    let g = send(f.get("spoof.test", "/.idfabric/nothing-here")).await;
    g.assert_problem(404, "no_route");
    still_serving().await;
}

#[tokio::test]
async fn tokens_of_providers_a_route_does_not_accept_are_refused() {
    let f = fx();
    let g = send(f.get("only-cu.test", "/p").bearer_auth(f.token("wf", "alice"))).await;
    g.assert_problem(401, "provider_not_allowed");
    let g = send(f.get("only-cu.test", "/p").bearer_auth(f.token("cu", "dave"))).await;
    assert_eq!(g.status, 200, "{}", g.body);
}

/// The verification caches answer only where their provider is allowed: a refusal
/// from `wf`'s checks (remembered for the token) is not replayed on a route that trusts
/// only `cu`, and a `wf` token verified on an open route never passes that route.
#[tokio::test]
async fn cached_verdicts_apply_only_where_their_provider_is_allowed() {
    let f = fx();
    // A refusal under wf's keys (bad signature), first where wf is allowed, then on a
    // cu-only route: judged for that route, not replayed.
    let forged = common::fixtures::flip_signature(&f.env.mint("wf", "bob", &[]));
    for _ in 0..2 {
        send(f.get("bearer.test", "/b").bearer_auth(&forged)).await.assert_problem(401, "bad_signature");
    }
    send(f.get("only-cu.test", "/p").bearer_auth(&forged)).await.assert_problem(401, "provider_not_allowed");
    // And back: the cu-only verdict was not remembered for the open route.
    send(f.get("bearer.test", "/b").bearer_auth(&forged)).await.assert_problem(401, "bad_signature");
    // An ID token is wf's own refusal for bearer use (the same path as a tenant or policy refusal).
    let id_token = f.env.mint("wf", "bob", &["--id-token"]);
    let first = send(f.get("bearer.test", "/b").bearer_auth(&id_token)).await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert_ne!(first.json()["reason"], "provider_not_allowed", "{}", first.body);
    send(f.get("only-cu.test", "/p").bearer_auth(&id_token)).await.assert_problem(401, "provider_not_allowed");
    // A cached hit: valid on the open route, then refused on the cu-only route, in both orders.
    let token = f.env.mint("wf", "alice", &[]);
    assert_eq!(send(f.get("bearer.test", "/b").bearer_auth(&token)).await.status, 200);
    for _ in 0..2 {
        send(f.get("only-cu.test", "/p").bearer_auth(&token)).await.assert_problem(401, "provider_not_allowed");
    }
    let other = f.env.mint("wf", "carl", &[]);
    send(f.get("only-cu.test", "/p").bearer_auth(&other)).await.assert_problem(401, "provider_not_allowed");
    assert_eq!(send(f.get("bearer.test", "/b").bearer_auth(&other)).await.status, 200);
    // The cu token itself is served on both.
    let cu = f.token("cu", "dave");
    assert_eq!(send(f.get("only-cu.test", "/p").bearer_auth(&cu)).await.status, 200);
    assert_eq!(send(f.get("bearer.test", "/b").bearer_auth(&cu)).await.status, 200);
}

// --- forward-auth and /me -----------------------------------------------------------------

#[tokio::test]
async fn forward_auth_answers_with_identity_headers_or_a_refusal() {
    let f = fx();
    let fa = |host: &str, uri: &str| {
        client().get(f.url("/.idfabric/auth")).header("x-forwarded-host", host).header("x-forwarded-uri", uri)
    };
    let g = send(fa("fa.test", "/reports?q=1").bearer_auth(f.token("wf", "alice"))).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(g.header("x-identity-sub").unwrap().starts_with("wf:"));
    assert_eq!(g.header("x-identity-population").as_deref(), Some("workforce"));
    assert_eq!(g.header("x-identity-groups").as_deref(), Some("hr,staff"));
    assert_eq!(g.header("x-identity-mfa").as_deref(), Some("true"));
    let minted = g.header("x-identity-token").expect("forward-auth returns the identity token");
    assert_eq!(jwt_claims(&minted)["aud"], "fa");
    // Refusals: denied (403), unauthenticated (401), unknown host (403 `no_route`: nginx
    // `auth_request` would turn a 404 into a 500).
    let g = send(fa("fa.test", "/reports").bearer_auth(f.token("wf", "bob"))).await;
    g.assert_problem(403, "group_required");
    assert!(g.header("x-identity-sub").is_none());
    let g = send(fa("fa.test", "/reports")).await;
    g.assert_problem(401, "missing_token");
    assert!(g.header("www-authenticate").unwrap().contains("invalid_token"));
    let g = send(fa("req-mfa.test", "/").bearer_auth(f.token("wf", "bob"))).await;
    g.assert_problem(401, "mfa_required");
    assert_eq!(g.challenge_error().as_deref(), Some("insufficient_user_authentication"));
    let g = send(fa("nowhere.test", "/").bearer_auth(f.token("wf", "alice"))).await;
    g.assert_problem(403, "no_route");
    // X-Original-URI (nginx) works too; a spoofed identity header on the check changes nothing.
    let g = send(
        client()
            .get(f.url("/.idfabric/auth"))
            .header("x-forwarded-host", "FA.test:443")
            .header("x-original-uri", "/x")
            .header("x-identity-sub", "evil")
            .bearer_auth(f.token("wf", "carl")),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(g.header("x-identity-sub").unwrap().starts_with("wf:"));
}

/// Forward-auth answers with the headers the proxy would send upstream, `Authorization`
/// included: a route with `authorization: identity_token` gets `Bearer <minted token>`
/// in the answer (for the front proxy to copy); `keep` and `strip` routes get none.
#[tokio::test]
async fn forward_auth_honours_the_route_authorization_setting() {
    let f = fx();
    let token = f.token("wf", "alice");
    let fa = |route: &str| {
        client()
            .get(f.url("/.idfabric/auth"))
            .header("x-forwarded-host", format!("{route}.test"))
            .header("x-forwarded-uri", "/a")
            .bearer_auth(&token)
    };
    for route in ["authz-default", "authz-keep", "authz-strip", "authz-idtoken"] {
        let g = send(fa(route)).await;
        assert_eq!(g.status, 200, "{route}: {}", g.body);
        assert_eq!(g.header("x-identity-route").as_deref(), Some(route));
        assert!(g.header("x-identity-sub").unwrap().starts_with("wf:"), "{route}");
        let minted = g.header("x-identity-token").unwrap_or_else(|| panic!("{route}: no identity token"));
        assert_eq!(jwt_claims(&minted)["aud"], route);
        let auth = g.header("authorization");
        if route == "authz-idtoken" {
            assert_eq!(auth, Some(format!("Bearer {minted}")), "{route}: Authorization carries the identity token");
        } else {
            assert_eq!(auth, None, "{route}: the answer names no Authorization");
        }
        // The proxied request on the same route gets the same identity token.
        let up = send(f.get(&format!("{route}.test"), "/a").bearer_auth(&token)).await.upstream_headers();
        assert_eq!(up["x-identity-token"].as_str(), Some(minted.as_str()), "{route}");
    }
}

#[tokio::test]
async fn me_returns_the_normalised_identity() {
    let f = fx();
    let fields = [
        "sub", "subject", "provider", "provider_kind", "population", "tenant", "org", "idp", "email", "email_verified",
        "name", "username", "principal_type", "groups", "roles", "scopes", "permissions", "groups_complete", "amr", "mfa",
        "acr", "auth_time", "exp", "token_use", "client_id", "attributes",
    ];
    // (provider, user, population, mfa, expected groups)
    for (provider, user, population, mfa, groups) in [
        ("wf", "alice", "workforce", true, vec!["hr", "staff"]),
        ("cu", "carol", "customer", false, vec!["vip"]),
        ("cg", "erin", "customer", true, vec!["members"]),
    ] {
        let g = send(client().get(f.url("/.idfabric/me")).bearer_auth(f.token(provider, user))).await;
        assert_eq!(g.status, 200, "{provider}: {}", g.body);
        let id = g.json();
        for field in fields {
            assert!(id.get(field).is_some(), "{provider}: /me lacks `{field}`: {id}");
        }
        for list in ["groups", "roles", "scopes", "permissions", "amr"] {
            assert!(id[list].is_array(), "{provider}: `{list}` is not an array: {id}");
        }
        assert!(id["attributes"].is_object(), "{provider}");
        let subject = id["subject"].as_str().unwrap();
        assert_eq!(id["sub"], format!("{provider}:{subject}"), "{provider}");
        assert_eq!(id["provider"], provider);
        assert_eq!(id["provider_kind"], "dev");
        assert_eq!(id["population"], population);
        assert_eq!(id["mfa"], mfa, "{provider}: {id}");
        assert_eq!(id["token_use"], "access", "{provider}");
        assert_eq!(id["principal_type"], "user", "{provider}");
        assert!(!id["tenant"].as_str().unwrap().is_empty(), "{provider}: tenant is always filled");
        assert!(!id["idp"].as_str().unwrap().is_empty(), "{provider}: idp is always filled");
        let got: Vec<&str> = id["groups"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for gname in &groups {
            assert!(got.contains(gname), "{provider}: groups {got:?}");
        }
    }
    let g = send(client().get(f.url("/.idfabric/me"))).await;
    g.assert_problem(401, "missing_token");
    let g = send(client().get(f.url("/.idfabric/me")).bearer_auth("abc.def.ghi")).await;
    assert_eq!(g.status, 401);
}

// --- route matching -------------------------------------------------------------------------

#[tokio::test]
async fn route_matching_prefers_exact_host_then_wildcard_then_any_and_the_longest_prefix() {
    let f = fx();
    // (case, Host, path, app, or None for 404)
    let cases: &[(&str, &str, &str, Option<usize>)] = &[
        ("exact host beats wildcard and any-host", "api.example.test", "/anyhost", Some(M_EXACT)),
        ("wildcard beats any-host", "foo.example.test", "/anyhost", Some(M_WILD)),
        ("deep wildcard", "a.b.example.test", "/x", Some(M_WILD)),
        ("any host", "other.test", "/anyhost/x", Some(M_ANY)),
        ("wildcard does not match the apex", "example.test", "/anyhost", Some(M_ANY)),
        ("exact host, case-insensitive, with port", "API.Example.TEST:8080", "/x", Some(M_EXACT)),
        ("wildcard, case-insensitive, with port", "Foo.EXAMPLE.test:1", "/x", Some(M_WILD)),
        ("longest prefix /api/v2", "prefix.test", "/api/v2/users", Some(M_API_V2)),
        ("prefix /api/v2 exactly", "prefix.test", "/api/v2", Some(M_API_V2)),
        ("prefix /api", "prefix.test", "/api/v1", Some(M_API)),
        ("prefix /api exactly", "prefix.test", "/api", Some(M_API)),
        ("/api does not match /apix", "prefix.test", "/apix", Some(M_ROOT)),
        ("/api/v2 does not match /api/v2x", "prefix.test", "/api/v2x", Some(M_API)),
        ("root prefix", "prefix.test", "/", Some(M_ROOT)),
        ("any-host prefix does not match /anyhostx", "other.test", "/anyhostx", None),
        ("public prefix", "whatever.test", "/public/x", Some(PUBLIC)),
    ];
    let mut failures = Vec::new();
    for &(name, host, path, app) in cases {
        let g = send(f.get(host, path)).await;
        match app {
            Some(i) if g.status == 200 && g.app() == f.echo.app(i) => {}
            None if g.status == 404 => {}
            _ => failures.push(format!("{name}: {host}{path} -> {} {}", g.status, g.body.chars().take(200).collect::<String>())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A dot-segment path must not reach the upstream through an open prefix: many apps
/// (and any normalising proxy in front of them) resolve `/open/../admin` to `/admin`,
/// which on this host needs a group the anonymous client does not have.
#[tokio::test]
async fn dot_segments_do_not_escape_an_open_prefix() {
    let f = fx();
    for path in ["/open/../admin", "/open/%2e%2e/admin", "/open/%2E%2E/admin", "/open/./../admin"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: trav.test\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw_request(f.env.http_port, req.as_bytes());
        assert_ne!(status, 200, "{path} reached the upstream unauthenticated: {body}");
    }
    let g = send(f.get("trav.test", "/open/page")).await;
    assert_eq!(g.status, 200, "{}", g.body);
}

// --- upstream failure -----------------------------------------------------------------------

#[tokio::test]
async fn a_closed_upstream_is_skipped_and_all_down_is_a_502_problem() {
    let f = fx();
    for i in 0..6 {
        let g = send(f.get("up-partial.test", &format!("/u{i}"))).await;
        assert_eq!(g.status, 200, "request {i}: {}", g.body);
        assert_eq!(g.app(), f.echo.app(APP));
    }
    let series = "idfabric_upstream_errors_total{route=\"up-down\"}";
    let before = metric_value(&scrape_metrics(&f.env).await, series);
    let g = send(f.get("up-down.test", "/d")).await;
    g.assert_problem(502, "upstream_unreachable");
    assert_eq!(g.json()["route"], "up-down");
    let after = metric_value(&scrape_metrics(&f.env).await, series);
    assert!(after >= before + 1.0, "{series}: {before} -> {after}");
    // An authenticated route whose upstream is down: still 502, never the token in the body.
    let token = f.token("wf", "alice");
    let g = send(f.get("up-down-auth.test", "/d").bearer_auth(&token)).await;
    g.assert_problem(502, "upstream_unreachable");
    assert!(!g.body.contains(&token));
    still_serving().await;
}

// --- admin ------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_health_readiness_and_providers() {
    let f = fx();
    for path in ["/healthz", "/readyz"] {
        let g = send(client().get(format!("{}{path}", f.env.admin()))).await;
        assert_eq!(g.status, 200, "{path}: {}", g.body);
    }
    let g = send(f.env.admin_call(reqwest::Method::GET, "/providers")).await;
    assert_eq!(g.status, 200);
    let doc = g.json();
    let list = doc["providers"].as_array().unwrap_or_else(|| panic!("{doc}"));
    for id in ["wf", "cu", "cg"] {
        let p = list.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("{id} missing: {doc}"));
        let kids = p["key_ids"].as_array().unwrap_or_else(|| panic!("{id}: {p}"));
        assert!(!kids.is_empty(), "{id}: {p}");
        assert!(p.get("jwks_age_seconds").is_some(), "{id}: {p}");
        assert!(p["jwks_age_seconds"].is_number(), "{id}: keys are held, so they have an age: {p}");
        assert_eq!(p["kind"], "dev");
    }
    // The dev provider's kid is the one its JWKS publishes over HTTP.
    let jwks: Value = client().get(f.url("/.idfabric/dev/wf/jwks")).send().await.unwrap().json().await.unwrap();
    let wf = list.iter().find(|p| p["id"] == "wf").unwrap();
    assert_eq!(wf["key_ids"][0], jwks["keys"][0]["kid"]);
}

#[tokio::test]
async fn metrics_have_the_interface_families_and_no_request_data_in_labels() {
    let f = fx();
    let marker = "zz9pluralzalpha";
    let token = f.token("cu", "carol");
    // Traffic of every kind, with request data the labels must not pick up.
    send(f.get("metrics-probe.test", &format!("/{marker}?q={marker}")).bearer_auth(&token)).await;
    send(f.get("metrics-probe.test", &format!("/{marker}")).bearer_auth(&token)).await;
    send(f.get("metrics-probe.test", &format!("/{marker}"))).await;
    send(f.get("metrics-probe.test", "/x").bearer_auth(format!("{marker}.{marker}.{marker}"))).await;
    send(f.get(&format!("{marker}.test"), &format!("/{marker}"))).await;
    send(f.get("req-groups-any.test", &format!("/{marker}")).bearer_auth(f.token("wf", "bob"))).await;
    let text = scrape_metrics(&f.env).await;
    for family in [
        "idfabric_requests_total",
        "idfabric_request_duration_seconds",
        "idfabric_auth_decisions_total",
        "idfabric_token_validations_total",
        "idfabric_verify_cache_hits_total",
        "idfabric_verify_cache_misses_total",
        "idfabric_jwks_keys",
        "idfabric_jwks_age_seconds",
        "idfabric_upstream_errors_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "family {family} missing");
    }
    assert!(metric_value(&text, "idfabric_jwks_keys{provider=\"wf\"}") >= 1.0, "jwks_keys for wf");
    assert!(metric_value(&text, "idfabric_verify_cache_hits_total") >= 1.0, "a repeated token is a cache hit");
    assert!(
        metric_value(&text, "idfabric_requests_total{outcome=\"allow\",population=\"customer\",provider=\"cu\",route=\"metrics-probe\"}") >= 2.0,
        "allowed requests counted by route/population/provider:\n{}",
        text.lines().filter(|l| l.contains("metrics-probe")).collect::<Vec<_>>().join("\n")
    );
    assert!(
        metric_value(&text, "idfabric_auth_decisions_total{decision=\"deny\",reason=\"group_required\",route=\"req-groups-any\"}") >= 1.0,
        "denials counted with their reason"
    );
    assert!(!text.contains(marker), "request data leaked into metrics");
    assert!(!text.contains(&token[..40]) && !text.contains("eyJ"), "a token leaked into metrics");
    // Every label value is a config id or a fixed word.
    let routes = [
        "pop", "pop-wf-only", "pop-default", "req-population", "req-mfa", "req-groups-any", "req-groups-all", "req-roles",
        "req-scopes", "req-tenants", "req-email", "fa", "bearer", "either", "session-only", "authz-default", "authz-keep",
        "authz-strip", "authz-idtoken", "no-idtoken", "spoof", "refusals", "browser", "only-cu", "metrics-probe", "m-exact",
        "m-wild", "m-any", "m-api", "m-api-v2", "m-root", "public", "public-strip", "up-partial", "up-down", "up-down-auth",
        "trav-open", "trav", "none",
    ];
    // `unknown`: a token whose issuer could not be read (fixed word, not request data).
    let providers = ["wf", "cu", "cg", "none", "unknown"];
    for line in text.lines().filter(|l| l.starts_with("idfabric_")) {
        let Some(labels) = line.split_once('{').and_then(|(_, r)| r.rsplit_once('}')).map(|(l, _)| l) else { continue };
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label syntax: {line}"));
            let v = v.trim_end_matches('"');
            match k {
                "route" => assert!(routes.contains(&v), "route label {v:?} is not a config route: {line}"),
                "provider" => assert!(providers.contains(&v), "provider label {v:?}: {line}"),
                "population" => assert!(["workforce", "customer", "none"].contains(&v), "{line}"),
                "le" => {}
                _ => assert!(
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "label {k}={v:?} is not a fixed word: {line}"
                ),
            }
        }
    }
}

/// The gateway log names refusals without carrying tokens.
#[tokio::test]
async fn refusal_log_lines_carry_no_token() {
    let f = fx();
    let token = f.token("wf", "bob");
    let g = send(f.get("req-groups-all.test", "/log-probe").bearer_auth(&token)).await;
    assert_eq!(g.status, 403);
    // The log is read on another thread: give it time on a slow machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f.gw.log().contains("/log-probe") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = f.gw.log();
    let line = log.lines().find(|l| l.contains("/log-probe")).unwrap_or_else(|| panic!("refusal not logged:\n{log}"));
    assert!(line.contains("group_required") && line.contains("req-groups-all"), "{line}");
    assert!(!log.contains(&token[..60]), "a token was logged");
}

