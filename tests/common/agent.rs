//! A cookie-keeping HTTP agent for the sign-in tests: it follows no redirect by itself,
//! keeps cookies per host like a browser, and can click through the dev provider's
//! user picker. Shared by tests/signin.rs and tests/signin_ciam.rs.
#![allow(dead_code)]

use super::*;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use url::Url;

/// The session cookie name on plain HTTP.
pub const SESSION: &str = "idfabric_session";

// --- A cookie-keeping HTTP agent that follows nothing by itself ---------------------

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    pub url: Url,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// The raw `Location` header.
    pub fn raw_location(&self) -> Option<String> {
        self.header(LOCATION.as_str())
    }

    /// `Location` resolved against the request URL (as a browser does).
    pub fn location(&self) -> Url {
        let raw =
            self.raw_location().unwrap_or_else(|| panic!("no Location on {} {}: {}", self.status, self.url, self.body));
        self.url.join(&raw).unwrap()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    /// The whole `Set-Cookie` value for `name`, if this response sets it.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split(';').next().and_then(|p| p.split_once('=')).is_some_and(|(k, _)| k == name))
    }

    pub fn is_html(&self) -> bool {
        self.header("content-type").is_some_and(|c| c.starts_with("text/html"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}) from {}: {}", self.url, self.body))
    }

    /// Asserts a redirect and returns its resolved target.
    pub fn redirect(&self) -> Url {
        assert_eq!(self.status, 302, "expected a redirect from {}, got {}: {}", self.url, self.status, self.body);
        self.location()
    }

    /// The echo app's view of the upstream request's headers.
    pub fn upstream(&self) -> serde_json::Map<String, Value> {
        assert_eq!(self.status, 200, "not proxied ({}): {}", self.url, self.body);
        self.json()["headers"].as_object().cloned().unwrap_or_default()
    }
}

pub fn query_of(u: &Url) -> HashMap<String, String> {
    u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A browser-like client: a cookie jar per host (ports ignored, as browsers do),
/// `Accept: text/html` when `browser`.
pub struct Agent {
    pub http: reqwest::Client,
    pub jar: Mutex<HashMap<String, BTreeMap<String, String>>>,
    pub browser: bool,
}

impl Agent {
    pub fn browser() -> Agent {
        Agent { http: client(), jar: Mutex::new(HashMap::new()), browser: true }
    }

    pub fn api() -> Agent {
        Agent { http: client(), jar: Mutex::new(HashMap::new()), browser: false }
    }

    /// A browser that also speaks TLS to the gateway (`https://` URLs; the test
    /// certificate is self-signed) and connects from `local` (a loopback address such as
    /// 127.0.0.2, to be another client) when given.
    pub fn browser_with(local: Option<std::net::IpAddr>) -> Agent {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(true)
            .local_address(local)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        Agent { http, jar: Mutex::new(HashMap::new()), browser: true }
    }

    pub fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(host).and_then(|j| j.get(name).cloned())
    }

    pub fn set(&self, host: &str, name: &str, value: &str) {
        self.jar.lock().unwrap().entry(host.to_string()).or_default().insert(name.to_string(), value.to_string());
    }

    pub fn clear(&self, host: &str, name: &str) {
        if let Some(j) = self.jar.lock().unwrap().get_mut(host) {
            j.remove(name);
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send("GET", url, None, &[]).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Resp {
        self.send("POST", url, Some(form), &[]).await
    }

    pub async fn send(&self, method: &str, url: &str, form: Option<&[(&str, &str)]>, extra: &[(&str, &str)]) -> Resp {
        let u = Url::parse(url).unwrap();
        let host = u.host_str().unwrap().to_string();
        let port = u.port().expect("test URLs carry a port");
        let target = format!(
            "{}://127.0.0.1:{port}{}{}",
            u.scheme(),
            u.path(),
            u.query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        let mut rb = match method {
            "POST" => self.http.post(&target),
            "GET" => self.http.get(&target),
            m => self.http.request(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), &target),
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
            let Some((k, v)) = first.split_once('=') else {
                continue;
            };
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
    pub async fn to_provider(&self, app_url: &str) -> Url {
        let login = self.get(app_url).await.redirect();
        assert_eq!(login.path(), "/.idfabric/login", "an anonymous browser is sent to the login page");
        let authz = self.get(login.as_str()).await.redirect();
        assert!(authz.path().ends_with("/authorize"), "single-provider route goes to the provider: {authz}");
        authz
    }

    /// On the dev provider's page: shows the page, then "clicks" `user` (posting the
    /// page's own form). Returns the callback URL the provider redirects to.
    pub async fn pick_user(&self, authorize: &Url, user: &str) -> Url {
        let page = self.get(authorize.as_str()).await;
        assert_eq!(page.status, 200, "dev provider page: {}", page.body);
        assert!(page.is_html());
        assert!(page.body.contains(&format!("name=\"user\" value=\"{user}\"")), "no button for {user}: {}", page.body);
        let action =
            page.url.join(&unescape(between(&page.body, "<form method=\"post\" action=\"", "\"").unwrap())).unwrap();
        let mut fields = hidden_inputs(&page.body);
        fields.push(("user".into(), user.into()));
        let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let back = self.post(action.as_str(), &form).await.redirect();
        assert_eq!(back.path(), "/.idfabric/callback");
        back
    }

    /// The whole sign-in on a single-provider route: returns the response of the first
    /// request after the callback (the `rd` page) and the session cookie value.
    pub async fn sign_in(&self, app_url: &str, user: &str) -> (Resp, String) {
        let authz = self.to_provider(app_url).await;
        let callback = self.pick_user(&authz, user).await;
        self.finish(&callback, app_url).await
    }

    /// Follows the callback; asserts a session cookie and the return to `app_url`.
    pub async fn finish(&self, callback: &Url, app_url: &str) -> (Resp, String) {
        let r = self.get(callback.as_str()).await;
        let back = r.redirect();
        assert_eq!(back.as_str(), Url::parse(app_url).unwrap().as_str(), "returns to the page that asked");
        let host = callback.host_str().unwrap();
        let sid = self.cookie(host, SESSION).unwrap_or_else(|| panic!("no session cookie: {:?}", r.set_cookies()));
        (self.get(back.as_str()).await, sid)
    }
}

impl Agent {
    /// Signs out at `url` (`…/.idfabric/logout`) as a browser does: the GET shows the
    /// "Sign out?" page (and ends nothing), its button POSTs the form back with this
    /// site's `Origin`. Returns the POST's response.
    pub async fn log_out(&self, url: &str) -> Resp {
        let page = self.get(url).await;
        assert_eq!(page.status, 200, "sign-out page at {url}: {}", page.body);
        assert!(page.is_html() && page.body.contains("Sign out?"), "{}", page.body);
        assert!(page.set_cookies().is_empty(), "showing the page changes no cookie: {:?}", page.set_cookies());
        let action =
            page.url.join(&unescape(between(&page.body, "<form method=\"post\" action=\"", "\"").unwrap())).unwrap();
        let fields = hidden_inputs(&page.body);
        let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let origin = Url::parse(url).unwrap().origin().ascii_serialization();
        self.send("POST", action.as_str(), Some(&form), &[("origin", &origin)]).await
    }
}

pub fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Undoes minijinja's HTML escaping.
pub fn unescape(s: &str) -> String {
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
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
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

pub fn decoded(v: &Value) -> String {
    percent_encoding::percent_decode_str(v.as_str().unwrap_or_default()).decode_utf8_lossy().to_string()
}
