//! Browser sign-in in a real headless Chromium, driven over
//! WebDriver (fantoccini → chromedriver → /usr/bin/chromium): workforce sign-in by email
//! domain, customer sign-in by button, customer step-up, logout. Every page is
//! screenshotted per theme (workforce and branded customer home-realm pages, the dev
//! provider's page, its step-up variant, error pages, the signed-out page) into the
//! test's temp directory and copied to `target/screenshots/` (paths printed), and each
//! is checked to render: a non-trivial PNG and the stylesheet applied (computed styles).
//!
//! Route hosts are `*.localhost`, which browsers resolve to loopback by themselves.
//! Skipped, with a message, only when Chromium or chromedriver is missing and cannot be
//! installed (`.ci/run` and `make test` install them, so CI runs these).

use crate::common;

use common::redis::{ensure_installed, have};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Both browser parts, or why not.
fn browser_available() -> Result<(), String> {
    let chromium = Path::new(CHROMIUM).exists() || ensure_installed("chromium", "chromium");
    let driver = ensure_installed("chromedriver", "chromium-driver");
    match (chromium && Path::new(CHROMIUM).exists(), driver && have("chromedriver")) {
        (true, true) => Ok(()),
        (c, d) => Err(format!(
            "SKIPPED browser tests: {}{} missing and could not be installed (apt-get install chromium chromium-driver)",
            if c { "" } else { "chromium " },
            if d { "" } else { "chromedriver " }
        )),
    }
}

/// `chromedriver --port=…`, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session with a fresh profile.
async fn chromium(driver: &Driver, profile: &Path) -> Client {
    let args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--no-proxy-server".into(),
        "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,Translate".into(),
        "--window-size=1280,900".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    caps.insert("pageLoadStrategy".into(), json!("normal"));
    let mut last = None;
    // chromedriver may need a moment after it listens.
    for _ in 0..5 {
        match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{}", driver.port)).await {
            Ok(c) => return c,
            Err(e) => {
                last = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("could not start Chromium through chromedriver: {last:?}");
}

struct Shots {
    dir: PathBuf,
    publish: PathBuf,
    taken: Vec<PathBuf>,
}

impl Shots {
    fn new(base: &Path) -> Shots {
        let dir = base.join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        // CARGO_TARGET_TMPDIR is <target>/tmp: publish next to it, in <target>/screenshots.
        let publish = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots");
        std::fs::create_dir_all(&publish).unwrap();
        Shots { dir, publish, taken: Vec::new() }
    }

    /// Screenshots the current page as `name.png`, checks it renders with its styles.
    async fn take(&mut self, c: &Client, name: &str) {
        // The page is complete and styled.
        let styled = c
            .execute(
                "const card = document.querySelector('.card');\
                 const cs = card ? getComputedStyle(card) : null;\
                 const body = getComputedStyle(document.body);\
                 return { ready: document.readyState, title: document.title, hasCard: !!card,\
                   cardBg: cs ? cs.backgroundColor : null, cardRadius: cs ? cs.borderRadius : null,\
                   bodyBg: body.backgroundColor, font: body.fontFamily, sheets: document.styleSheets.length,\
                   overflowX: document.documentElement.scrollWidth > window.innerWidth + 1 };",
                vec![],
            )
            .await
            .unwrap();
        let url = c.current_url().await.unwrap();
        assert_eq!(styled["ready"], "complete", "{name}: {url}");
        assert!(styled["hasCard"].as_bool().unwrap(), "{name}: no .card on {url}: {styled}");
        assert!(styled["sheets"].as_u64().unwrap() >= 1, "{name}: no stylesheet: {styled}");
        let card_bg = styled["cardBg"].as_str().unwrap();
        assert!(card_bg != "rgba(0, 0, 0, 0)" && card_bg != "transparent", "{name}: card unstyled: {styled}");
        assert_ne!(styled["bodyBg"], "rgba(0, 0, 0, 0)", "{name}: page background unstyled: {styled}");
        assert!(styled["font"].as_str().unwrap().contains("system-ui"), "{name}: font stack missing: {styled}");
        assert_eq!(styled["overflowX"], false, "{name}: horizontal overflow: {styled}");
        assert!(!styled["title"].as_str().unwrap().is_empty(), "{name}: untitled page");

        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
        assert!(png.len() > 5 * 1024, "{name}: a {}-byte screenshot is a blank page", png.len());
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        let published = self.publish.join(format!("{name}.png"));
        std::fs::copy(&path, &published).unwrap();
        println!("screenshot {name}: {} ({} bytes) -> {}", path.display(), png.len(), published.display());
        self.taken.push(published);
    }
}

/// A computed style property of the first element matching `css`.
async fn style(c: &Client, css: &str, prop: &str) -> String {
    let v = c
        .execute("const e = document.querySelector(arguments[0]); return e ? getComputedStyle(e)[arguments[1]] : null;", vec![json!(css), json!(prop)])
        .await
        .unwrap();
    v.as_str().unwrap_or_else(|| panic!("no element {css}")).to_string()
}

/// Waits until the current URL satisfies `ok`, returns it.
async fn wait_url(c: &Client, what: &str, ok: impl Fn(&url::Url) -> bool) -> url::Url {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let u = c.current_url().await.unwrap();
        if ok(&u) {
            return u;
        }
        assert!(Instant::now() < deadline, "waiting for {what}; still at {u}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The echo JSON the app page shows (Chromium renders JSON as text in a <pre>).
async fn echo_json(c: &Client) -> Value {
    let text = c
        .execute("const pre = document.querySelector('pre'); return (pre || document.body).innerText;", vec![])
        .await
        .unwrap();
    serde_json::from_str(text.as_str().unwrap()).unwrap_or_else(|e| panic!("the app page is not the echo JSON ({e}): {text}"))
}

async fn click(c: &Client, css: &str) {
    c.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

struct Setup {
    env: TestEnv,
    _echo: Echoes,
    _gw: Gateway,
}

fn setup() -> Setup {
    let echo = Echoes::start(3);
    let env = TestEnv::new();
    write_config(&env, &echo, None);
    let gw = Gateway::start(&env);
    Setup { env, _echo: echo, _gw: gw }
}

/// Providers and routes; `session` is an optional `session:` line (e.g. a Redis store).
fn write_config(env: &TestEnv, echo: &Echoes, session: Option<&str>) {
    env.write_dev_provider(
        "wf",
        "workforce",
        "entra",
        "dev-idp-workforce.pem",
        "display_name: Corp employees\nclient_id: wf-client\ndomains: [corp.test]\nusers:\n\
         - { name: alice, display_name: Alice Admin, email: alice@corp.test, email_verified: true, groups: [hr, staff], mfa: true }\n\
         - { name: bob, display_name: Bob Builder, email: bob@corp.test, groups: [engineering], mfa: false }\n",
    );
    env.write_dev_provider(
        "partner",
        "workforce",
        "okta",
        "dev-idp-workforce.pem",
        "display_name: Partner SSO\nclient_id: partner-client\naudiences: [api://default]\nusers:\n\
         - { name: pat, email: pat@partner.test, groups: [partners] }\n",
    );
    let claims = "claims: { groups: https://idfabric.dev/groups, roles: https://idfabric.dev/roles, email: https://idfabric.dev/email, email_verified: https://idfabric.dev/email_verified }\n";
    env.write_dev_provider(
        "cu",
        "customer",
        "auth0",
        "dev-idp-customer.pem",
        &format!(
            "display_name: Shop account\nclient_id: cu-client\naudiences: [https://api.shop.test]\n{claims}users:\n\
             - {{ name: carol, display_name: Carol Customer, email: carol@gmail.example, email_verified: true, connection: google-oauth2 }}\n\
             - {{ name: dave, display_name: Dave Newcomer, email: dave@example.net, connection: auth0 }}\n"
        ),
    );
    env.write_dev_provider(
        "social",
        "customer",
        "cognito",
        "dev-idp-customer.pem",
        "display_name: Social login\nclient_id: social-client\nusers:\n- { name: sam, email: sam@example.org }\n",
    );
    let branding = "    branding: { product_name: Acme Shop, primary_color: \"#e11d48\", accent_color: \"#f59e0b\", tagline: Fresh deals every day, support_text: \"Need help? support@acme.example\" }\n";
    let routes = format!(
        "  - name: work\n    match: {{ host: work.localhost }}\n    upstream: [{w}]\n    providers: [wf, partner]\n    require: {{ population: workforce }}\n    branding: {{ product_name: Contoso Intranet }}\n\
         \x20 - name: shop\n    match: {{ host: shop.localhost }}\n    upstream: [{s}]\n    providers: [cu, social]\n    require: {{ population: customer }}\n{branding}\
         \x20 - name: vip\n    match: {{ host: vip.localhost }}\n    upstream: [{v}]\n    providers: [cu]\n    require: {{ population: customer, mfa: true }}\n{branding}",
        w = echo.addr(0),
        s = echo.addr(1),
        v = echo.addr(2),
    );
    env.write_routes(&["wf", "partner", "cu", "social"], &routes);
    if let Some(line) = session {
        let text = std::fs::read_to_string(env.routes_path()).unwrap().replace("\nbroker:", &format!("\n{line}\nbroker:"));
        env.write("routes.yaml", &text);
    }
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_step_up_and_logout_in_headless_chromium() {
    if let Err(why) = browser_available() {
        println!("{why}");
        eprintln!("{why}");
        return;
    }
    let s = setup();
    let port = s.env.http_port;
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let shots = Shots::new(s.env.path());
    let c = chromium(&driver, profile.path()).await;
    // The journey runs in its own task so that the browser is closed even when it fails.
    let run = tokio::spawn(journey(c.clone(), port, shots)).await;
    let _ = c.close().await;
    match run {
        Ok(shots) => println!("{} screenshots in {}", shots.taken.len(), shots.publish.display()),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn journey(c: Client, port: u16, mut shots: Shots) -> Shots {
    let url = |host: &str, path: &str| format!("http://{host}:{port}{path}");
    // 1. Workforce: the app sends the browser to the home-realm page (workforce theme).
    c.goto(&url("work.localhost", "/reports?y=2024")).await.unwrap();
    let u = wait_url(&c, "the login page", |u| u.path() == "/.idfabric/login").await;
    assert_eq!(u.host_str(), Some("work.localhost"));
    shots.take(&c, "01-login-workforce").await;
    assert_eq!(style(&c, "body", "backgroundColor").await, "rgb(238, 240, 243)", "workforce page background");
    assert_eq!(style(&c, ".topbar", "backgroundColor").await, "rgb(31, 41, 51)", "corporate top bar");
    let h1 = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, "Sign in with your work account");
    assert!(c.find(Locator::Css("button[name=provider][value=partner]")).await.is_ok(), "the other workforce option is a button");
    // Type the email, submit: the domain picks the Entra-shaped provider.
    c.find(Locator::Css("input#email")).await.unwrap().send_keys("alice@corp.test").await.unwrap();
    click(&c, "form button.btn-primary[type=submit]").await;
    let dev = wait_url(&c, "the dev provider", |u| u.path() == "/.idfabric/dev/wf/authorize").await;
    assert_eq!(dev.query_pairs().find(|(k, _)| k == "login_hint").map(|(_, v)| v.into_owned()).as_deref(), Some("alice@corp.test"));
    shots.take(&c, "02-dev-provider-workforce").await;
    assert!(style(&c, ".devbar", "backgroundImage").await.contains("repeating-linear-gradient"), "the dev warning bar is styled");
    click(&c, "button[name=user][value=alice]").await;
    wait_url(&c, "back on the app", |u| u.host_str() == Some("work.localhost") && u.path() == "/reports").await;
    let echo = echo_json(&c).await;
    let h = &echo["headers"];
    assert!(h["x-identity-sub"].as_str().unwrap().starts_with("wf:"), "{echo}");
    assert_eq!(h["x-identity-provider"], "wf");
    assert_eq!(h["x-identity-population"], "workforce");
    assert_eq!(echo["path"], "/reports");
    assert_eq!(echo["query"], "y=2024");
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|k| k.name() == "idfabric_session").expect("session cookie in the browser");
    assert_eq!(session.http_only(), Some(true));

    // 2. Logout: through the provider's end-session, to the signed-out page.
    c.goto(&url("work.localhost", "/.idfabric/logout")).await.unwrap();
    // A GET only asks; the button POSTs from this site's own page.
    let h1 = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, "Sign out?");
    assert!(c.get_all_cookies().await.unwrap().iter().any(|k| k.name() == "idfabric_session"), "not signed out by the GET");
    shots.take(&c, "03a-sign-out-confirm-workforce").await;
    click(&c, "form button.btn-primary[type=submit]").await;
    wait_url(&c, "the signed-out page", |u| u.path() == "/.idfabric/logged-out" && u.host_str() == Some("work.localhost")).await;
    shots.take(&c, "03-logged-out-workforce").await;
    let h1 = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, "You have signed out");
    assert!(c.get_all_cookies().await.unwrap().iter().all(|k| k.name() != "idfabric_session"), "cookie gone");
    // The app asks for a sign-in again.
    c.goto(&url("work.localhost", "/reports")).await.unwrap();
    wait_url(&c, "the login page again", |u| u.path() == "/.idfabric/login").await;

    // 3. An error page (open-redirect attempt), workforce theme.
    c.goto(&url("work.localhost", "/.idfabric/login?rd=//evil.example")).await.unwrap();
    let u = wait_url(&c, "the error page", |u| u.path() == "/.idfabric/login").await;
    assert_eq!(u.host_str(), Some("work.localhost"), "stays on the site");
    shots.take(&c, "04-error-workforce").await;
    assert!(c.find(Locator::Css(".kicker")).await.unwrap().text().await.unwrap().contains("400"));

    // 4. Customer: the branded home-realm page, sign-in by button.
    c.goto(&url("shop.localhost", "/cart")).await.unwrap();
    wait_url(&c, "the customer login page", |u| u.path() == "/.idfabric/login").await;
    shots.take(&c, "05-login-customer-branded").await;
    assert!(style(&c, ".band", "backgroundImage").await.contains("rgb(225, 29, 72)"), "brand colour in the band");
    assert_eq!(style(&c, ".card", "borderTopLeftRadius").await, "16px", "customer theme shape");
    let brand = c.find(Locator::Css(".brand-name")).await.unwrap().text().await.unwrap();
    assert_eq!(brand, "Acme Shop");
    assert_eq!(c.find(Locator::Css(".tagline")).await.unwrap().text().await.unwrap(), "Fresh deals every day");
    assert!(c.find(Locator::Css("input#email")).await.is_err(), "no email box when no provider has domains");
    click(&c, "button[name=provider][value=cu]").await;
    wait_url(&c, "the dev provider", |u| u.path() == "/.idfabric/dev/cu/authorize").await;
    click(&c, "button[name=user][value=dave]").await;
    wait_url(&c, "back on the shop", |u| u.host_str() == Some("shop.localhost") && u.path() == "/cart").await;
    let echo = echo_json(&c).await;
    assert_eq!(echo["headers"]["x-identity-provider"], "cu");
    assert_eq!(echo["headers"]["x-identity-population"], "customer");
    // The remembered choice is shown first next time.
    c.goto(&url("shop.localhost", "/.idfabric/logout")).await.unwrap();
    click(&c, "form button.btn-primary[type=submit]").await;
    wait_url(&c, "signed out of the shop", |u| u.path() == "/.idfabric/logged-out").await;
    shots.take(&c, "06-logged-out-customer").await;
    c.goto(&url("shop.localhost", "/cart")).await.unwrap();
    wait_url(&c, "the customer login page", |u| u.path() == "/.idfabric/login").await;
    let first = c.find(Locator::Css(".providers li:first-child button")).await.unwrap();
    assert_eq!(first.attr("value").await.unwrap().as_deref(), Some("cu"));
    assert!(first.text().await.unwrap().to_lowercase().contains("last used"), "marked as last used");
    shots.take(&c, "07-login-customer-remembered").await;

    // 5. Customer step-up: a route requiring MFA, reached without it.
    c.goto(&url("vip.localhost", "/lounge")).await.unwrap();
    wait_url(&c, "the dev provider", |u| u.path() == "/.idfabric/dev/cu/authorize").await;
    click(&c, "button[name=user][value=carol]").await;
    let step = wait_url(&c, "the step-up at the provider", |u| {
        u.path() == "/.idfabric/dev/cu/authorize" && u.query_pairs().any(|(k, _)| k == "acr_values")
    })
    .await;
    assert!(step.query_pairs().any(|(k, v)| k == "prompt" && v == "login"));
    shots.take(&c, "08-dev-provider-step-up").await;
    assert!(c.find(Locator::Css(".notice")).await.unwrap().text().await.unwrap().contains("Step-up"));
    click(&c, "button[name=user][value=carol]").await;
    wait_url(&c, "back in the lounge", |u| u.host_str() == Some("vip.localhost") && u.path() == "/lounge").await;
    let echo = echo_json(&c).await;
    assert_eq!(echo["headers"]["x-identity-mfa"], "true", "{echo}");

    // 6. A customer-themed error page (a forged callback).
    c.goto(&url("shop.localhost", "/.idfabric/callback?code=x&state=forged")).await.unwrap();
    wait_url(&c, "the error page", |u| u.path() == "/.idfabric/callback").await;
    shots.take(&c, "09-error-customer").await;
    assert!(c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap().contains("expired"));

    // 7. The workforce page on a phone-sized window (responsive, no overflow).
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&url("work.localhost", "/.idfabric/login?rd=%2F")).await.unwrap();
    wait_url(&c, "the login page", |u| u.path() == "/.idfabric/login").await;
    shots.take(&c, "10-login-workforce-mobile").await;
    c.goto(&url("shop.localhost", "/.idfabric/login?rd=%2F")).await.unwrap();
    wait_url(&c, "the login page", |u| u.path() == "/.idfabric/login").await;
    shots.take(&c, "11-login-customer-mobile").await;
    shots
}

/// Two gateway processes sharing one real Redis: a session made through A works on B in
/// the same browser (cookies ignore ports, as behind one load-balanced name), and a
/// logout on B ends it on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_survives_across_two_gateways_sharing_redis() {
    if let Err(why) = browser_available() {
        println!("{why}");
        eprintln!("{why}");
        return;
    }
    let redis = common::redis::RedisServer::start();
    let echo = Echoes::start(3);
    let session = format!("session: {{ store: \"{}\", key_file: certs/session.key }}", redis.url());
    let a = TestEnv::new();
    write_config(&a, &echo, Some(&session));
    // B: A's keys and provider files (the dev providers live on A), its own ports.
    let b = TestEnv::new();
    for dir in ["certs", "providers"] {
        for e in std::fs::read_dir(a.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), b.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    let routes_b = std::fs::read_to_string(a.routes_path())
        .unwrap()
        .replace(&format!("127.0.0.1:{}", a.http_port), &format!("127.0.0.1:{}", b.http_port))
        .replace(&format!("127.0.0.1:{}", a.admin_port), &format!("127.0.0.1:{}", b.admin_port));
    b.write("routes.yaml", &routes_b);
    let (_ga, _gb) = (Gateway::start(&a), Gateway::start(&b));

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = chromium(&driver, profile.path()).await;
    let (pa, pb) = (a.http_port, b.http_port);
    let run = tokio::spawn({
        let c = c.clone();
        async move {
            c.goto(&format!("http://work.localhost:{pa}/a")).await.unwrap();
            wait_url(&c, "the login page", |u| u.path() == "/.idfabric/login").await;
            c.find(Locator::Css("input#email")).await.unwrap().send_keys("bob@corp.test").await.unwrap();
            click(&c, "form button.btn-primary[type=submit]").await;
            click(&c, "button[name=user][value=bob]").await;
            wait_url(&c, "back on A", |u| u.port() == Some(pa) && u.path() == "/a").await;
            let on_a = echo_json(&c).await;
            c.goto(&format!("http://work.localhost:{pb}/b")).await.unwrap();
            let u = wait_url(&c, "B", |u| u.port() == Some(pb)).await;
            assert_eq!(u.path(), "/b", "B knows the session made on A (no login page)");
            let on_b = echo_json(&c).await;
            assert_eq!(on_b["headers"]["x-identity-sub"], on_a["headers"]["x-identity-sub"]);
            // Logout on B; A no longer knows the session.
            c.goto(&format!("http://work.localhost:{pb}/.idfabric/logout")).await.unwrap();
            click(&c, "form button.btn-primary[type=submit]").await;
            wait_url(&c, "signed out", |u| u.path() == "/.idfabric/logged-out").await;
            c.goto(&format!("http://work.localhost:{pa}/a")).await.unwrap();
            wait_url(&c, "the login page on A", |u| u.port() == Some(pa) && u.path() == "/.idfabric/login").await;
        }
    })
    .await;
    let _ = c.close().await;
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(redis.cmd(&["DBSIZE"]), "0", "logout left nothing behind in Redis");
}
