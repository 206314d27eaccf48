//! OpenID Connect Back-Channel Logout 1.0 from the broker to its clients, against the
//! real binary: a user signs in through the broker for clients with and without a
//! `backchannel_logout_uri`; when the session ends (sign-out at `/.idfabric/logout`,
//! an admin revocation) the client's receiver gets one logout token, verified here
//! against the broker's JWKS claim by claim; a receiver that answers 500 first gets the
//! retry.
//!
//! The receivers are small HTTP/1.1 servers on loopback threads (they outlive each
//! test's runtime), recording every request; tests pick their own tokens by `sid`, so
//! they run in parallel against one gateway.
//!
//! Clients: `notes` (receiver that answers 200), `flaky` (receiver that answers 500 to
//! the first delivery of each session, then 200), `plain` (no back-channel URI).

use crate::common;
use common::agent::*;
use common::oidc::*;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

const NOTES_SECRET: &str = "notes-secret-2b7e91";
const FLAKY_SECRET: &str = "flaky-secret-7c3d05";
const PLAIN_SECRET: &str = "plain-secret-4f8a66";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// One request a receiver got: its content type and form body.
#[derive(Clone, Debug)]
struct Delivery {
    content_type: String,
    logout_token: String,
    /// `sid` of the (unverified) token, to tell tests apart.
    sid: String,
    status: u16,
}

/// An HTTP/1.1 receiver on a loopback port, answering each request with a status chosen
/// from the deliveries so far (`fail_first`: 500 to the first delivery of each `sid`).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start(fail_first: bool) -> Receiver {
        Self::start_with(fail_first, Arc::default()).0
    }

    /// Also answers 500 to every request while the returned flag is set.
    fn start_with(fail_first: bool, failing: Arc<std::sync::atomic::AtomicBool>) -> (Receiver, Arc<std::sync::atomic::AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let sink = got.clone();
        let fail = failing.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((content_type, body)) = read_request(&mut conn) else { continue };
                let token = url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let sid = unverified_claims(&token)["sid"].as_str().unwrap_or_default().to_string();
                let mut got = sink.lock().unwrap();
                let down = fail.load(std::sync::atomic::Ordering::SeqCst);
                let status = if down || (fail_first && !got.iter().any(|d| d.sid == sid)) { 500 } else { 200 };
                got.push(Delivery { content_type, logout_token: token, sid, status });
                drop(got);
                let reason = if status == 200 { "OK" } else { "Internal Server Error" };
                let _ = write!(conn, "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        (Receiver { port, got }, failing)
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}/backchannel-logout", self.port)
    }

    fn for_sid(&self, sid: &str) -> Vec<Delivery> {
        self.got.lock().unwrap().iter().filter(|d| d.sid == sid).cloned().collect()
    }

    /// Waits up to `within` for `n` deliveries of `sid`.
    async fn wait_for(&self, sid: &str, n: usize, within: Duration) -> Vec<Delivery> {
        let start = Instant::now();
        loop {
            let got = self.for_sid(sid);
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads one request: (content type, body).
fn read_request(conn: &mut std::net::TcpStream) -> Option<(String, String)> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().ok()?,
            "content-type" => content_type = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length.min(64 * 1024)];
    r.read_exact(&mut body).ok()?;
    Some((content_type, String::from_utf8(body).ok()?))
}

/// The payload of a JWT, not verified (only to route deliveries to their test).
fn unverified_claims(jwt: &str) -> Value {
    use base64::Engine;
    jwt.split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

struct Fixture {
    env: TestEnv,
    _gw: SharedGateway,
    notes: Receiver,
    flaky: Receiver,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

fn issuer() -> String {
    format!("http://127.0.0.1:{}/broker", fx().env.http_port)
}

impl Fixture {
    fn start() -> Fixture {
        let (notes, flaky) = (Receiver::start(false), Receiver::start(true));
        let env = TestEnv::new();
        env.write_dev_provider(
            "wf",
            "workforce",
            "entra",
            "dev-idp-workforce.pem",
            "display_name: Corp\nclient_id: wf-client\naudiences: [api://idfabric]\nusers:\n\
             - { name: alice, email: alice@corp.test, groups: [staff] }\n\
             - { name: bob, email: bob@corp.test, groups: [staff] }\n\
             - { name: erin, email: erin@corp.test, groups: [staff] }\n",
        );
        let text = format!(
            "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [wf]\n\
             session: {{ store: memory, key_file: certs/session.key }}\n\
             broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - {{ client_id: notes, client_secret: \"{NOTES_SECRET}\", redirect_uris: [\"http://notes.test/cb\"], backchannel_logout_uri: \"{notes}\" }}\n\
             \x20   - {{ client_id: flaky, client_secret: \"{FLAKY_SECRET}\", redirect_uris: [\"http://flaky.test/cb\"], backchannel_logout_uri: \"{flaky}\", backchannel_logout_session_required: true }}\n\
             \x20   - {{ client_id: plain, client_secret: \"{PLAIN_SECRET}\", redirect_uris: [\"http://plain.test/cb\"] }}\n\
             routes:\n  - name: app\n    match: {{ host: app.test }}\n    upstream: [127.0.0.1:9]\n",
            http = env.http_port,
            admin = env.admin_line(),
            notes = notes.uri(),
            flaky = flaky.uri(),
        );
        env.write("routes.yaml", &text);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, _gw: gw, notes, flaky }
    }
}

/// Signs `user` in for `client` in `agent`'s browser and returns the verified ID token's
/// claims.
async fn sign_in(agent: &Agent, client: &str, secret: &str, user: &str) -> Value {
    sign_in_at(&issuer(), agent, client, secret, user).await
}

async fn sign_in_at(issuer: &str, agent: &Agent, client: &str, secret: &str, user: &str) -> Value {
    let req = AuthzReq::new(client, &format!("http://{client}.test/cb"));
    let back = follow(agent, &req.url(issuer), user).await;
    let q = callback_params(&back, &req, issuer);
    assert!(!q.contains_key("error"), "authorize failed: {back}");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", req.redirect_uri.as_str()),
        ("code_verifier", req.verifier.as_str()),
    ];
    let (s, _, b) = post_form(&format!("{issuer}/token"), &form, Some((client, secret))).await;
    assert_eq!(s, 200, "{b}");
    let (_, id) = verify_jwt(issuer, json_of(&b)["id_token"].as_str().unwrap(), Some(client)).await;
    id
}

/// Verifies a delivered logout token with the broker's JWKS and checks every claim
/// against the ID token the client got.
async fn check_logout_token(d: &Delivery, client: &str, id_token: &Value) {
    assert_eq!(d.content_type, "application/x-www-form-urlencoded");
    let (typ, c) = verify_jwt(&issuer(), &d.logout_token, Some(client)).await;
    assert_eq!(typ, "logout+jwt");
    assert_eq!(c["iss"], issuer());
    assert_eq!(c["aud"], client);
    assert_eq!(c["sub"], id_token["sub"]);
    assert_eq!(c["sid"], id_token["sid"], "the sid the client saw in its ID token");
    assert_eq!(c["events"], serde_json::json!({ EVENT: {} }));
    assert!(c.get("nonce").is_none(), "a logout token has no nonce: {c}");
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16), "{c}");
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert!(exp > iat && exp - iat <= 120, "short-lived: {c}");
}

fn origin() -> String {
    issuer().trim_end_matches("/broker").to_string()
}

#[tokio::test]
async fn sign_out_sends_one_logout_token_to_the_client_that_registered_for_it() {
    let agent = Agent::browser();
    let id = sign_in(&agent, "notes", NOTES_SECRET, "alice").await;
    let plain = sign_in(&agent, "plain", PLAIN_SECRET, "alice").await;
    let sid = id["sid"].as_str().unwrap();
    assert!(fx().notes.for_sid(sid).is_empty(), "nothing is sent while the session lives");

    agent.log_out(&format!("{}/.idfabric/logout", origin())).await;
    let got = fx().notes.wait_for(sid, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "one logout token: {got:?}");
    check_logout_token(&got[0], "notes", &id).await;
    // No second delivery, and nothing for the client without a back-channel URI.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fx().notes.for_sid(sid).len(), 1);
    let psid = plain["sid"].as_str().unwrap();
    assert!(fx().notes.for_sid(psid).is_empty() && fx().flaky.for_sid(psid).is_empty());
    let metrics = scrape_metrics(&fx().env).await;
    assert!(metric_value(&metrics, "idfabric_broker_backchannel_logouts_total{client=\"notes\",result=\"delivered\"}") >= 1.0, "{metrics}");
}

#[tokio::test]
async fn admin_revocation_sends_the_logout_token_once() {
    let agent = Agent::browser();
    let id = sign_in(&agent, "notes", NOTES_SECRET, "bob").await;
    let sid = id["sid"].as_str().unwrap();
    let sub: String = url::form_urlencoded::byte_serialize(id["sub"].as_str().unwrap().as_bytes()).collect();
    let r = fx().env.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={sub}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = fx().notes.wait_for(sid, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check_logout_token(&got[0], "notes", &id).await;
    // Revoking again finds the family already announced.
    let r = fx().env.admin_call(reqwest::Method::POST, &format!("/sessions/revoke?sub={sub}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fx().notes.for_sid(sid).len(), 1, "announced once");
}

#[tokio::test]
async fn a_client_answering_500_gets_the_retry() {
    let agent = Agent::browser();
    let id = sign_in(&agent, "flaky", FLAKY_SECRET, "erin").await;
    let sid = id["sid"].as_str().unwrap();
    let t0 = Instant::now();
    agent.log_out(&format!("{}/.idfabric/logout", origin())).await;
    let got = fx().flaky.wait_for(sid, 2, Duration::from_secs(8)).await;
    assert_eq!(got.iter().map(|d| d.status).collect::<Vec<_>>(), [500, 200], "{got:?}");
    assert!(t0.elapsed() >= Duration::from_secs(1), "the retry waits its backoff");
    assert_eq!(got[0].logout_token, got[1].logout_token, "the same token is sent again");
    check_logout_token(&got[1], "flaky", &id).await;
    let metrics = scrape_metrics(&fx().env).await;
    let m = |result: &str| metric_value(&metrics, &format!("idfabric_broker_backchannel_logouts_total{{client=\"flaky\",result=\"{result}\"}}"));
    assert_eq!((m("failed"), m("delivered")), (1.0, 1.0), "{metrics}");
    assert!(!fx()._gw.log.lock().unwrap().contains(&got[0].logout_token), "no token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_still_pending_when_its_replica_stops_is_sent_by_the_next_one() {
    let redis = common::redis::RedisServer::start();
    let (rx, failing) = Receiver::start_with(false, Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let env = TestEnv::new();
    env.write_dev_provider(
        "wf",
        "workforce",
        "entra",
        "dev-idp-workforce.pem",
        "client_id: wf-client\naudiences: [api://idfabric]\nusers:\n  - { name: alice, email: alice@corp.test, groups: [staff] }\n",
    );
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [wf]\n\
             session: {{ store: \"{redis}\", key_file: certs/session.key }}\n\
             broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
             \x20   - {{ client_id: notes, client_secret: \"{NOTES_SECRET}\", redirect_uris: [\"http://notes.test/cb\"], backchannel_logout_uri: \"{uri}\" }}\n\
             routes:\n  - name: app\n    match: {{ host: app.test }}\n    upstream: [127.0.0.1:9]\n",
            http = env.http_port,
            admin = env.admin_line(),
            redis = redis.url(),
            uri = rx.uri(),
        ),
    );
    let issuer = format!("http://127.0.0.1:{}/broker", env.http_port);
    let gw = Gateway::start(&env);
    let agent = Agent::browser();
    let id = sign_in_at(&issuer, &agent, "notes", NOTES_SECRET, "alice").await;
    let sid = id["sid"].as_str().unwrap().to_string();
    agent.log_out(&format!("http://127.0.0.1:{}/.idfabric/logout", env.http_port)).await;
    // The client is down: the first attempt fails, and the replica is killed while it
    // waits to retry.
    let first = rx.wait_for(&sid, 1, Duration::from_secs(5)).await;
    assert_eq!(first.iter().map(|d| d.status).collect::<Vec<_>>(), [500], "{first:?}");
    drop(gw);
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let stopped = Instant::now();

    // The next replica (here: the same one restarted) finds it once the stopped
    // replica's claim lapses, and delivers a fresh logout token.
    let gw = Gateway::start(&env);
    let got = rx.wait_for(&sid, 2, Duration::from_secs(30)).await;
    assert_eq!(got.iter().map(|d| d.status).collect::<Vec<_>>(), [500, 200], "{got:?}\n{}", gw.log());
    eprintln!("broker back-channel: delivered {} ms after the replica stopped", stopped.elapsed().as_millis());
    let (typ, c) = verify_jwt(&issuer, &got[1].logout_token, Some("notes")).await;
    assert_eq!((typ.as_str(), c["sid"].as_str(), c["sub"].as_str()), ("logout+jwt", Some(sid.as_str()), id["sub"].as_str()));
    assert_ne!(got[0].logout_token, got[1].logout_token, "a fresh token");
    // Done: not sent again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(rx.for_sid(&sid).len(), 2);
}
