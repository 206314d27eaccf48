//! Browser sign-in under attack, against the real binary and its built-in dev provider
//! (a real OpenID Provider on the gateway's own listener):
//!
//! - login CSRF: an attacker starts a sign-in as themselves, completes the provider
//!   step, and has the victim's browser follow the callback. The callback is refused
//!   (the victim's browser holds no binding cookie for it) and the victim stays signed in
//!   as themselves; two tabs of one browser signing in at once both succeed.
//! - cookies: over TLS only the `__Host-` session cookie counts, the plain name is
//!   ignored; sign-out is a confirmed same-origin POST (a GET only asks, a cross-site
//!   POST is refused) and clears every spelling the scheme can touch.
//! - floods: thousands of sign-in starts from one client (and some from two other
//!   loopback addresses) park at most the configured number of transactions, are
//!   refused with 429 past the rate limit, grow the gateway's memory by a bounded amount
//!   and never push a signed-in user out; on the memory store and on a real Redis.

use crate::common;
use common::agent::*;
use common::redis::RedisServer;
use common::*;
use std::net::IpAddr;
use std::time::Duration;

/// The wf dev provider (Entra-shaped workforce) with two users.
fn write_provider(env: &TestEnv) {
    env.write_wf_provider(
        "  - { name: alice, email: alice@corp.test, groups: [staff] }\n  - { name: mallory, email: mallory@corp.test, groups: [staff] }\n",
    );
}

/// routes.yaml with an optional https listener, a session section and one route
/// `app.test` → `echo` signed in through `wf`.
fn write_config(env: &TestEnv, https: Option<u16>, session: &str, echo: &str) {
    write_config_with(env, https, session, echo, "");
}

/// [`write_config`] with more top-level YAML (e.g. a `broker:` section).
fn write_config_with(env: &TestEnv, https: Option<u16>, session: &str, echo: &str, more: &str) {
    let listen = match https {
        Some(p) => format!(
            "listen: {{ https: {{ addr: 127.0.0.1:{p}, cert: certs/dev-tls.crt, key: certs/dev-tls.key }}, http: 127.0.0.1:{} }}",
            env.http_port
        ),
        None => format!("listen: {{ http: 127.0.0.1:{} }}", env.http_port),
    };
    env.write(
        "routes.yaml",
        &format!(
            "{listen}\nadmin: 127.0.0.1:{admin}\nproviders: [wf]\nsession: {session}\n{more}\
             routes:\n  - name: app\n    match: {{ host: app.test }}\n    upstream: [{echo}]\n    providers: [wf]\n",
            admin = env.admin_port,
        ),
    );
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
}

struct Site {
    env: TestEnv,
    _echo: Echo,
    gw: Gateway,
    https: Option<u16>,
}

impl Site {
    fn start(tls: bool, session: &str) -> Site {
        let echo = Echo::start();
        let env = TestEnv::new();
        write_provider(&env);
        let https = tls.then(free_port);
        write_config(&env, https, session, &echo.addr());
        let gw = Gateway::start(&env);
        Site { env, _echo: echo, gw, https }
    }

    fn http(&self, path: &str) -> String {
        format!("http://app.test:{}{path}", self.env.http_port)
    }

    fn https(&self, path: &str) -> String {
        format!("https://app.test:{}{path}", self.https.expect("an https listener"))
    }
}

/// Sum of the exposition lines of `name` whose labels include all of `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Signs `user` in on `app` (an `http(s)://app.test:port/…` URL) and returns the session
/// cookie's name and value.
async fn sign_in(b: &Agent, app: &str, user: &str) -> (String, String) {
    let authz = b.to_provider(app).await;
    let cb = b.pick_user(&authz, user).await;
    let r = b.get(cb.as_str()).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let set = r.set_cookies();
    let session = set.iter().find(|c| c.contains("idfabric_session=") && !c.contains("Max-Age=0")).expect("a session cookie");
    let (name, value) = session.split(';').next().unwrap().split_once('=').unwrap();
    (name.to_string(), value.to_string())
}

/// Whether the gateway's log shows `needle` within a few seconds (stderr is read by a
/// thread, so a line may land just after the response).
async fn logged(gw: &Gateway, needle: &str) -> bool {
    for _ in 0..50 {
        if gw.log().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The `sub` the app sees for this browser (asserting it is let through).
async fn sub_on(b: &Agent, url: &str) -> String {
    decoded(&b.get(url).await.upstream()["x-identity-sub"])
}

// --- Login CSRF ------------------------------------------------------------------------

#[tokio::test]
async fn a_callback_started_by_someone_else_is_refused_and_the_victims_session_stands() {
    let site = Site::start(false, "{ store: memory }");
    let app = site.http("/inbox");
    // The victim is signed in as themselves.
    let victim = Agent::browser();
    let (name, victim_sid) = sign_in(&victim, &app, "alice").await;
    assert_eq!(name, SESSION);
    let alice = sub_on(&victim, &app).await;
    assert!(alice.starts_with("wf:"), "{alice}");

    // The attacker starts a sign-in as mallory, completes the provider step, and stops
    // before the callback.
    let attacker = Agent::browser();
    let authz = attacker.to_provider(&app).await;
    let bound: Vec<String> =
        attacker.jar.lock().unwrap()["app.test"].keys().filter(|k| k.starts_with("idfabric_ltx_")).cloned().collect();
    assert_eq!(bound.len(), 1, "the sign-in is bound to the attacker's browser: {bound:?}");
    let callback = attacker.pick_user(&authz, "mallory").await;

    // The victim's browser follows the callback URL: refused, nothing about its session changes.
    let r = victim.get(callback.as_str()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.is_html());
    assert!(r.body.contains("started elsewhere"), "{}", r.body);
    assert!(r.set_cookie(SESSION).is_none(), "the victim's session cookie is not touched: {:?}", r.set_cookies());
    assert_eq!(victim.cookie("app.test", SESSION).as_deref(), Some(victim_sid.as_str()));
    assert_eq!(sub_on(&victim, &app).await, alice, "still signed in as themselves");
    assert!(logged(&site.gw, "state_not_bound").await, "logged with its reason");

    // The transaction is used up: the attacker cannot finish it either.
    let again = attacker.get(callback.as_str()).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.set_cookie(&bound[0]).is_some_and(|c| c.contains("Max-Age=0")), "cleared on every outcome");

    // A binding cookie with another value (planted, or of another sign-in) is refused too.
    let authz = attacker.to_provider(&app).await;
    let callback = attacker.pick_user(&authz, "mallory").await;
    let state = query_of(&callback)["state"].clone();
    let planted = format!("idfabric_ltx_{}", &state[..16]);
    victim.set("app.test", &planted, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let r = victim.get(callback.as_str()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.set_cookie(&planted).is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(sub_on(&victim, &app).await, alice);
    assert!(logged(&site.gw, "login_csrf").await);

    let m = scrape_metrics(&site.env).await;
    assert_eq!(series(&m, "idfabric_logins_total", &[("provider", "wf"), ("result", "failure")]), 2.0, "{m}");
    assert_eq!(series(&m, "idfabric_login_funnel_total", &[("provider", "wf"), ("stage", "callback_error")]), 2.0);
}

#[tokio::test]
async fn two_tabs_of_one_browser_sign_in_at_once() {
    let site = Site::start(false, "{ store: memory }");
    let b = Agent::browser();
    let first = b.to_provider(&site.http("/one")).await;
    let second = b.to_provider(&site.http("/two")).await;
    let cb1 = b.pick_user(&first, "alice").await;
    let cb2 = b.pick_user(&second, "alice").await;
    // Finished in the other order: each tab's binding cookie is its own.
    for (cb, path) in [(cb2, "/two"), (cb1, "/one")] {
        let r = b.get(cb.as_str()).await;
        assert_eq!(r.redirect().path(), path, "{}", r.body);
    }
    assert!(sub_on(&b, &site.http("/one")).await.starts_with("wf:"), "signed in");
    let left: Vec<String> = b.jar.lock().unwrap()["app.test"].keys().filter(|k| k.contains("_ltx_")).cloned().collect();
    assert!(left.is_empty(), "every binding cookie was cleared: {left:?}");
}

// --- Cookies ---------------------------------------------------------------------------

#[tokio::test]
async fn over_tls_only_the_host_prefixed_cookie_counts_and_sign_out_clears_every_spelling() {
    let site = Site::start(true, "{ store: memory }");
    let app = site.https("/inbox");
    let b = Agent::browser_with(None);
    // The sign-in's binding cookie over TLS.
    let login = b.get(&app).await.redirect();
    let r = b.get(login.as_str()).await;
    let bind = r.set_cookies().into_iter().find(|c| c.contains("idfabric_ltx_")).expect("a binding cookie");
    assert!(bind.starts_with("__Host-idfabric_ltx_"), "{bind}");
    for attr in ["Secure", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(bind.contains(attr), "{attr}: {bind}");
    }
    assert!(!bind.contains("Domain"));
    let cb = b.pick_user(&r.redirect(), "alice").await;
    assert_eq!(cb.scheme(), "https");
    let done = b.get(cb.as_str()).await;
    assert_eq!(done.status, 302, "{}", done.body);
    let sid = b.cookie("app.test", &format!("__Host-{SESSION}")).expect("the __Host- session cookie");
    let alice = sub_on(&b, &app).await;

    // A plain-named cookie (what a sibling subdomain or an HTTP hop could plant) is
    // ignored over TLS, even holding a live session id.
    let planted = Agent::browser_with(None);
    planted.set("app.test", SESSION, &sid);
    assert_eq!(planted.get(&app).await.redirect().path(), "/.idfabric/login", "the plain name does not count over TLS");
    let prefixed = Agent::browser_with(None);
    prefixed.set("app.test", &format!("__Host-{SESSION}"), &sid);
    assert_eq!(sub_on(&prefixed, &app).await, alice);
    // Over plain HTTP it is the other way round.
    let http = Agent::browser();
    http.set("app.test", &format!("__Host-{SESSION}"), &sid);
    assert_eq!(http.get(&site.http("/inbox")).await.redirect().path(), "/.idfabric/login");

    // Sign-out over TLS clears both spellings (Secure), and the session is gone.
    b.set("app.test", SESSION, "planted-value");
    let out = b.log_out(&site.https("/.idfabric/logout")).await;
    assert_eq!(out.status, 302, "{}", out.body);
    let cleared = out.set_cookies();
    for name in [format!("__Host-{SESSION}"), SESSION.to_string()] {
        let c = cleared.iter().find(|c| c.starts_with(&format!("{name}=;"))).unwrap_or_else(|| panic!("{name}: {cleared:?}"));
        assert!(c.contains("Max-Age=0") && c.contains("Secure") && c.contains("Path=/"), "{c}");
    }
    assert!(b.cookie("app.test", SESSION).is_none() && b.cookie("app.test", &format!("__Host-{SESSION}")).is_none());
    assert_eq!(prefixed.get(&app).await.redirect().path(), "/.idfabric/login", "the session ended");

    // Over plain HTTP only the plain spelling can be touched.
    let (_, _) = sign_in(&http, &site.http("/inbox"), "alice").await;
    let out = http.log_out(&site.http("/.idfabric/logout")).await;
    let cleared = out.set_cookies();
    assert!(cleared.iter().any(|c| c.starts_with(&format!("{SESSION}=;")) && c.contains("Max-Age=0") && !c.contains("Secure")), "{cleared:?}");
    assert!(!cleared.iter().any(|c| c.starts_with("__Host-")), "{cleared:?}");
}

#[tokio::test]
async fn sign_out_is_a_same_origin_post_and_a_get_only_asks() {
    let site = Site::start(false, "{ store: memory }");
    let app = site.http("/inbox");
    let logout = site.http("/.idfabric/logout");
    let b = Agent::browser();
    let (_, sid) = sign_in(&b, &app, "alice").await;
    let alice = sub_on(&b, &app).await;

    // A GET (a link, an image, a top-level navigation from anywhere) shows a page and ends nothing.
    let page = b.get(&logout).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign out?") && page.body.contains("method=\"post\""), "{}", page.body);
    // So the button's POST carries this site's Origin (browsers send `null` under no-referrer).
    assert_eq!(page.header("referrer-policy").as_deref(), Some("same-origin"));
    assert!(page.body.contains("<meta name=\"referrer\" content=\"same-origin\">"), "{}", page.body);
    assert!(page.set_cookies().is_empty());
    assert_eq!(sub_on(&b, &app).await, alice, "still signed in after the GET");

    // Cross-site POSTs are refused with 403 and leave the session alone.
    let cross: [&[(&str, &str)]; 4] = [
        &[("origin", "http://evil.test")],
        &[("origin", "null")],
        &[("referer", "http://evil.test/page")],
        &[("origin", &format!("http://app.test:{}", site.env.http_port)), ("sec-fetch-site", "cross-site")],
    ];
    for headers in cross {
        let r = b.send("POST", &logout, Some(&[("confirm", "1")]), headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.set_cookies().is_empty(), "{headers:?}");
    }
    assert!(logged(&site.gw, "cross_site_logout").await);
    assert_eq!(b.cookie("app.test", SESSION).as_deref(), Some(sid.as_str()));
    assert_eq!(sub_on(&b, &app).await, alice, "cross-site POSTs ended nothing");
    let other = b.send("PUT", &logout, None, &[]).await;
    assert_eq!(other.status, 405, "{}", other.body);

    // The page's own button signs out.
    let out = b.log_out(&logout).await;
    assert_eq!(out.status, 302);
    assert_eq!(b.get(&app).await.redirect().path(), "/.idfabric/login");
}

// --- Floods ----------------------------------------------------------------------------

/// The gateway's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` sign-in starts at `url` from `local`, `parallel` at a time: (302s, 429s).
async fn starts(url: &str, host: &str, local: IpAddr, n: usize, parallel: usize) -> (usize, usize) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(Some(local))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..parallel)
        .map(|i| {
            let (client, url, host) = (client.clone(), url.to_string(), host.to_string());
            let count = n / parallel + usize::from(i < n % parallel);
            tokio::spawn(async move {
                let (mut ok, mut limited) = (0, 0);
                for _ in 0..count {
                    let r = client.get(&url).header("host", &host).header("accept", "text/html").send().await.unwrap();
                    match r.status().as_u16() {
                        302 => ok += 1,
                        429 => {
                            let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                            assert!((1..=60).contains(&wait), "{wait}");
                            limited += 1;
                        }
                        s => panic!("unexpected {s}: {}", r.text().await.unwrap_or_default()),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let mut total = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        total = (total.0 + a, total.1 + b);
    }
    total
}

/// Limits of the flood tests: 32 per client, 64 overall, 600 starts a minute per client.
const LIMITS: &str = "login_limits: { per_client: 32, total: 64, rate_per_minute: 600 }";
/// Bound on the gateway's RSS growth over a flood of 5 400 starts (KiB).
const RSS_GROWTH_KIB: u64 = 16 * 1024;

async fn flood(site: &Site) -> (usize, usize) {
    let app = site.http("/inbox");
    let user = Agent::browser();
    let (_, _) = sign_in(&user, &app, "alice").await;
    let alice = sub_on(&user, &app).await;
    let before = rss_kib(site.gw.pid());

    let url = format!("http://127.0.0.1:{}/.idfabric/login?provider=wf&rd=%2F", site.env.http_port);
    let host = format!("app.test:{}", site.env.http_port);
    let (ok, limited) = starts(&url, &host, "127.0.0.1".parse().unwrap(), 5000, 8).await;
    assert!(limited > 0 && ok >= 600, "past the burst the client is refused: {ok} started, {limited} refused");
    assert!(ok < 1000, "the rate limit holds: {ok} started");
    let mut others = 0;
    for local in ["127.0.0.2", "127.0.0.3"] {
        let (ok, limited) = starts(&url, &host, local.parse().unwrap(), 200, 4).await;
        assert_eq!(limited, 0, "another client has its own budget");
        others += ok;
    }
    assert!(logged(&site.gw, "sign_in_rate_limited").await);

    let m = scrape_metrics(&site.env).await;
    assert_eq!(series(&m, "idfabric_login_pending", &[]), 64.0, "the total cap holds: {m}");
    let abandoned = series(&m, "idfabric_login_funnel_total", &[("provider", "wf"), ("stage", "abandoned")]);
    assert_eq!(abandoned as usize, ok + others - 64, "every dropped transaction is counted as abandoned");
    assert_eq!(series(&m, "idfabric_sign_in_rate_limited_total", &[("endpoint", "login")]) as usize, limited);

    let grown = rss_kib(site.gw.pid()).saturating_sub(before);
    assert!(grown < RSS_GROWTH_KIB, "RSS grew by {grown} KiB over the flood");
    // The signed-in user was never pushed out, and a newcomer from another address can still sign in.
    assert_eq!(sub_on(&user, &app).await, alice);
    let newcomer = Agent::browser_with(Some("127.0.0.4".parse().unwrap()));
    sign_in(&newcomer, &app, "alice").await;
    (ok + others, grown as usize)
}

#[tokio::test]
async fn a_flood_of_sign_in_starts_is_capped_and_never_evicts_a_session_memory() {
    let site = Site::start(false, &format!("{{ store: memory, {LIMITS} }}"));
    let (started, grown) = flood(&site).await;
    eprintln!("memory store: {started} sign-ins started, RSS grew {grown} KiB");
}

#[tokio::test]
async fn a_flood_of_sign_in_starts_is_capped_and_never_evicts_a_session_redis() {
    let redis = RedisServer::start();
    let site = Site::start(false, &format!("{{ store: \"{}\", {LIMITS} }}", redis.url()));
    let (started, grown) = flood(&site).await;
    eprintln!("redis store: {started} sign-ins started, RSS grew {grown} KiB");
    // 64 after the flood; the newcomer's start pushed one out and its callback took its own.
    assert_eq!(redis.cmd(&["ZCARD", "idf:{txn}:pending"]), "63");
    let keys = redis.cmd(&["KEYS", "idf:{txn}:v:*"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 63, "one hash per parked transaction");
    let per_client = redis.cmd(&["ZCARD", "idf:{txn}:c:127.0.0.1"]).parse::<u32>().unwrap();
    assert!(per_client <= 32, "{per_client}");
    let indexed: u32 = redis
        .cmd(&["KEYS", "idf:{txn}:c:*"])
        .lines()
        .filter(|k| !k.is_empty())
        .map(|k| redis.cmd(&["ZCARD", k]).parse::<u32>().unwrap())
        .sum();
    assert_eq!(indexed, 63, "the per-client sets index exactly what is held");
    let ttl: i64 = redis.cmd(&["TTL", keys.lines().next().unwrap()]).parse().unwrap();
    assert!((1..=600).contains(&ttl), "transactions expire by themselves: {ttl}");
}

#[tokio::test]
async fn broker_authorize_starts_are_rate_limited_and_their_parked_requests_capped() {
    let echo = Echo::start();
    let env = TestEnv::new();
    write_provider(&env);
    let broker = format!(
        "broker:\n  issuer: http://127.0.0.1:{}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
         \x20   - {{ client_id: portal, public: true, redirect_uris: [\"http://rp.test/cb\"], providers: [wf] }}\n",
        env.http_port
    );
    let limits = "{ store: memory, login_limits: { per_client: 8, total: 64, rate_per_minute: 20 } }";
    write_config_with(&env, None, limits, &echo.addr(), &broker);
    let gw = Gateway::start(&env);
    let b = Agent::browser();
    let authorize = format!(
        "http://127.0.0.1:{}/broker/authorize?client_id=portal&redirect_uri=http%3A%2F%2Frp.test%2Fcb&response_type=code\
         &scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        env.http_port
    );
    let (mut parked, mut limited, mut first_resume) = (0, 0, None);
    for _ in 0..40 {
        let r = b.get(&authorize).await;
        match r.status {
            302 => {
                parked += 1;
                let login = r.location();
                let rd = query_of(&login)["rd"].clone();
                first_resume.get_or_insert(format!("http://127.0.0.1:{}{rd}", env.http_port));
            }
            429 => {
                assert!(r.header("retry-after").is_some());
                assert!(r.body.contains("Too many sign-in attempts"), "{}", r.body);
                limited += 1;
            }
            s => panic!("{s}: {}", r.body),
        }
    }
    assert!((20..=22).contains(&parked), "the burst, then the refill: {parked}");
    assert_eq!(parked + limited, 40);
    let m = scrape_metrics(&env).await;
    assert_eq!(series(&m, "idfabric_login_pending", &[]), 8.0, "the per-client cap holds: {m}");
    assert_eq!(series(&m, "idfabric_sign_in_rate_limited_total", &[("endpoint", "authorize")]) as usize, limited);
    assert!(logged(&gw, "sign_in_rate_limited").await);
    // The first parked request was pushed out by the newer ones: it resumes as expired,
    // in the browser that holds its binding cookie.
    let r = b.get(&first_resume.unwrap()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
}
