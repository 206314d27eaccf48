//! `POST /.idfabric/session`: an app that signed in with the Firebase SDK posts
//! the fresh ID token and gets a browser session, through the real binary. A fake IdP
//! publishes the keys (the provider's `jwks_url`), an echo app sits behind an
//! `auth: session` route. Same-origin only, `auth_time` at most 5 minutes old, only
//! Firebase tokens; expired and forged tokens are refused like bearer tokens.

use crate::common;
use common::fixtures::*;
use common::{client, echo_headers};
use serde_json::{json, Value};

const SESSION: &str = "idfabric_session";

/// A Firebase stack with an `auth: session` route `/web/` and a second (OIDC) provider
/// on the same fake IdP keys.
fn stack() -> Stack {
    let mut s = Stack::new(Shape::Firebase, KeysFrom::JwksUrl, "");
    let oidc_iss = format!("{}{}", s.fake.base, Shape::Oidc.issuer_path());
    let jwks = s.fake.jwks_url();
    s.add_provider(Shape::Oidc.provider_id(), &provider_yaml(Shape::Oidc, Shape::Oidc.provider_id(), &oidc_iss, Some(&jwks), ""));
    let echo = s.echo.addr();
    s.add_routes(&format!("  - name: web\n    match: {{ path_prefix: /web/ }}\n    auth: session\n    upstream: [{echo}]\n"));
    s.start();
    s
}

/// A Firebase ID token of a sign-in `age` seconds ago.
fn fresh(s: &Stack, age: i64) -> String {
    s.token().set("auth_time", now() - age).set("iat", now() - age.min(60)).mint(&s.key)
}

struct Answer {
    status: u16,
    location: Option<String>,
    cookie: Option<String>,
    body: Value,
}

/// POSTs `fields` (form-encoded, or JSON when `json`) with `Origin: origin`.
async fn post(s: &Stack, origin: Option<&str>, fields: &[(&str, &str)], json: bool) -> Answer {
    let mut rb = client().post(format!("{}/.idfabric/session", s.env.proxy()));
    if let Some(o) = origin {
        rb = rb.header("origin", o);
    }
    rb = if json {
        let body: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        rb.header("content-type", "application/json").body(Value::Object(body).to_string())
    } else {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        rb.header("content-type", "application/x-www-form-urlencoded").body(form.finish())
    };
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_string());
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{SESSION}=")).map(|r| r.split(';').next().unwrap().to_string()));
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, location, cookie, body }
}

async fn get_with_cookie(s: &Stack, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut rb = client().get(format!("{}{path}", s.env.proxy()));
    if let Some(c) = cookie {
        rb = rb.header("cookie", format!("{SESSION}={c}"));
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn a_fresh_firebase_token_from_the_same_origin_becomes_a_session() {
    let s = stack();
    let origin = s.env.proxy();
    // No session yet: the session route does not admit the browser.
    assert_ne!(get_with_cookie(&s, "/web/x", None).await.status().as_u16(), 200);

    let token = fresh(&s, 10);
    let a = post(&s, Some(&origin), &[("id_token", &token)], false).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["status"], "ok");
    let sub = format!("{}:{FIREBASE_UID}", s.id);
    assert_eq!(a.body["sub"], sub.as_str());
    let cookie = a.cookie.expect("a session cookie");

    let resp = get_with_cookie(&s, "/web/x", Some(&cookie)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let h = echo_headers(resp).await;
    assert_eq!(h.get("x-identity-sub").and_then(Value::as_str), Some(sub.as_str()), "{h:?}");
    // The Firebase token's second factor carries into the session.
    assert_eq!(h.get("x-identity-mfa").and_then(Value::as_str), Some("true"), "{h:?}");

    // JSON body with a return path: a redirect to it, with the cookie.
    let a = post(&s, Some(&origin), &[("id_token", &fresh(&s, 5)), ("rd", "/web/home?x=1")], true).await;
    assert_eq!(a.status, 302, "{:?}", a.body);
    assert_eq!(a.location.as_deref(), Some("/web/home?x=1"));
    let cookie = a.cookie.expect("a session cookie");
    assert_eq!(get_with_cookie(&s, "/web/home", Some(&cookie)).await.status().as_u16(), 200);

    // An open redirect is refused.
    let a = post(&s, Some(&origin), &[("id_token", &fresh(&s, 5)), ("rd", "//evil.example/")], false).await;
    assert_eq!((a.status, a.body["reason"].as_str()), (400, Some("invalid_rd")));
    assert!(a.cookie.is_none());

    let metrics = s.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("idfabric_login_funnel_total") && l.contains("session_created") && l.contains(s.id.as_str())),
        "no session_created funnel line:\n{metrics}"
    );
}

#[tokio::test]
async fn a_missing_or_foreign_origin_is_refused() {
    let s = stack();
    let token = fresh(&s, 10);
    for origin in [None, Some("https://evil.example"), Some("http://localhost:1"), Some("null")] {
        let a = post(&s, origin, &[("id_token", &token)], false).await;
        assert_eq!((a.status, a.body["reason"].as_str()), (403, Some("cross_origin")), "origin {origin:?}");
        assert!(a.cookie.is_none());
    }
    // Same host, other scheme: not the same origin either.
    let other = s.env.proxy().replace("http://", "https://");
    let a = post(&s, Some(&other), &[("id_token", &token)], false).await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn an_old_sign_in_a_foreign_kind_and_bad_tokens_are_refused() {
    let s = stack();
    let origin = s.env.proxy();
    let refused = |a: &Answer, status: u16, reason: &str| {
        assert_eq!((a.status, a.body["reason"].as_str().unwrap_or("")), (status, reason), "{:?}", a.body);
        assert!(a.cookie.is_none(), "no cookie on a refusal");
    };

    // auth_time more than 5 minutes ago (the baseline token's is ~6 minutes ago).
    let a = post(&s, Some(&origin), &[("id_token", &fresh(&s, 400))], false).await;
    refused(&a, 401, "stale_auth_time");
    let a = post(&s, Some(&origin), &[("id_token", &s.token().mint(&s.key))], false).await;
    refused(&a, 401, "stale_auth_time");

    // A valid token of another kind of provider.
    let oidc_iss = format!("{}{}", s.fake.base, Shape::Oidc.issuer_path());
    let other = Token::new(Shape::Oidc, &oidc_iss, Shape::Oidc.audience()).mint(&s.key);
    let a = post(&s, Some(&origin), &[("id_token", &other)], false).await;
    refused(&a, 400, "not_a_session_provider");

    // Expired and forged Firebase tokens.
    let expired = s.token().set("auth_time", now() - 3700).expired().mint(&s.key);
    let a = post(&s, Some(&origin), &[("id_token", &expired)], false).await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert!(a.cookie.is_none());
    let forged = flip_signature(&fresh(&s, 10));
    let a = post(&s, Some(&origin), &[("id_token", &forged)], false).await;
    assert_eq!(a.status, 401, "{:?}", a.body);
    assert!(a.cookie.is_none());
    let tampered = tamper(&fresh(&s, 10), "sub", json!("someone-else"));
    let a = post(&s, Some(&origin), &[("id_token", &tampered)], false).await;
    assert_eq!(a.status, 401, "{:?}", a.body);

    // No token at all, and GET.
    let a = post(&s, Some(&origin), &[("rd", "/web/")], false).await;
    refused(&a, 400, "missing_id_token");
    let resp = client().get(format!("{}/.idfabric/session", s.env.proxy())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

/// The dev provider's `shape: firebase`: `idfabric token mint` emits a Firebase ID token
/// (<https://firebase.google.com/docs/auth/admin/verify-id-tokens>) that the Firebase
/// mapper reads, and that `/.idfabric/session`
/// takes like a real one.
#[tokio::test]
async fn the_dev_provider_emits_firebase_shaped_tokens() {
    use common::{Echo, Gateway, TestEnv};
    let env = TestEnv::new();
    let echo = Echo::start();
    env.write_dev_provider(
        "fb",
        "customer",
        "firebase",
        "dev-idp-customer.pem",
        "client_id: acme-retail-dev\nusers:\n\
         - { name: lena, display_name: Lena Fischer, email: lena@example.com, email_verified: true, connection: google.com, mfa: true }\n\
         - { name: tom, email: tom@example.com }\n",
    );
    env.write_routes(
        &["fb"],
        &format!(
            "  - name: web\n    match: {{ path_prefix: /web/ }}\n    auth: session\n    upstream: [{e}]\n\
             \x20 - name: api\n    match: {{ path_prefix: / }}\n    auth: bearer\n    upstream: [{e}]\n",
            e = echo.addr()
        ),
    );
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "shape: firebase must be valid:\n{out}{err}");

    let lena = env.mint("fb", "lena", &[]);
    let c = common::jwt_claims(&lena);
    assert_eq!(c["iss"], env.dev_issuer("fb").as_str());
    assert_eq!(c["aud"], "acme-retail-dev");
    assert_eq!(c["user_id"], c["sub"]);
    assert!(c["auth_time"].is_i64());
    assert_eq!(c["firebase"]["sign_in_provider"], "google.com");
    assert_eq!(c["firebase"]["sign_in_second_factor"], "phone");
    let tom = env.mint("fb", "tom", &[]);
    let t = common::jwt_claims(&tom);
    assert_eq!(t["firebase"]["sign_in_provider"], "password");
    assert!(t["firebase"].get("sign_in_second_factor").is_none());

    let _gw = Gateway::start(&env);
    let me = |token: String| {
        let url = format!("{}/.idfabric/me", env.proxy());
        async move {
            let r = client().get(url).header("authorization", format!("Bearer {token}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let id = me(lena.clone()).await;
    assert_eq!(id["provider"], "fb");
    assert_eq!(id["subject"], c["sub"]);
    assert_eq!(id["tenant"], "acme-retail-dev");
    assert_eq!(id["idp"], "firebase:google.com");
    assert_eq!(id["mfa"], true);
    assert_eq!(id["email"], "lena@example.com");
    assert_eq!(id["name"], "Lena Fischer");
    let id = me(tom).await;
    assert_eq!((id["idp"].as_str(), id["mfa"].as_bool()), (Some("firebase:password"), Some(false)));

    // The dev Firebase token becomes a session like a real one.
    let resp = client()
        .post(format!("{}/.idfabric/session", env.proxy()))
        .header("origin", env.proxy())
        .header("content-type", "application/json")
        .body(json!({ "id_token": lena }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{SESSION}=")).map(|r| r.split(';').next().unwrap().to_string()))
        .expect("a session cookie");
    let resp = client()
        .get(format!("{}/web/", env.proxy()))
        .header("cookie", format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let h = echo_headers(resp).await;
    assert_eq!(h.get("x-identity-sub").and_then(Value::as_str), Some(format!("fb:{}", c["sub"].as_str().unwrap()).as_str()));
}
