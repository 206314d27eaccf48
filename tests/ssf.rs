//! Shared Signals (SSF) receiver against the real binary: a small transmitter in the
//! test signs Security Event Tokens (RFC 8417) with the dev provider's real key (the
//! one its JWKS publishes) and pushes them (RFC 8935) to `/.idfabric/ssf/events`.
//!
//! - Two replicas on one real Redis: a CAEP `session-revoked` SET (an `iss_sub`
//!   subject) posted to replica A ends the user's session and refuses the user's
//!   bearer token on B; a RISC `account-disabled` SET (a `complex` subject whose user
//!   is `opaque`) does the same for another user; an unknown event is accepted (202)
//!   and changes nothing; an `email` subject ends the session and tokens of the user
//!   who signed in with that verified address, and refuses the token of a user who
//!   never signed in but carries it.
//! - Bad SETs (unsigned, another key, replayed jti, wrong audience, unknown issuer,
//!   unknown or unresolvable subject, wrong media type, oversized) get the RFC 8935
//!   §2.3 error and change nothing; the keys come from `ssf.jwks_url` there.
//! - A provider file with an incomplete `ssf:` section is refused at load, with the line.

use crate::common;
use common::agent::*;
use common::fixtures::now;
use common::redis::RedisServer;
use common::*;
use idfabric::keys::Signer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const SSF_ISS: &str = "https://ssf.corp.test/";
const AUD: &str = "https://idfabric.corp.test/ssf";

/// An Auth0-shaped dev provider (subject = the token's `sub`) that transmits SSF events;
/// its access tokens' namespaced email claims are mapped, as an Auth0 Action would add them.
fn provider_file(env: &TestEnv, jwks_url: Option<&str>) -> String {
    let jwks = jwks_url.map(|u| format!(", jwks_url: \"{u}\"")).unwrap_or_default();
    format!(
        "id: rwf\nkind: dev\npopulation: workforce\nshape: auth0\nissuer: {}\nsigning_key: certs/dev-idp-workforce.pem\n\
         client_id: wf-client\naudiences: [api://idfabric]\n\
         ssf: {{ issuer: \"{SSF_ISS}\", audience: \"{AUD}\"{jwks} }}\n\
         claims: {{ email: \"https://idfabric.dev/email\", email_verified: \"https://idfabric.dev/email_verified\" }}\nusers:\n\
         \x20 - {{ name: alice, email: alice@corp.test, groups: [staff], mfa: true }}\n\
         \x20 - {{ name: bob, email: bob@corp.test, groups: [staff], mfa: true }}\n\
         \x20 - {{ name: carol, email: carol@corp.test, email_verified: true, groups: [staff], mfa: true }}\n\
         \x20 - {{ name: dave, email: Dave@Corp.test, email_verified: true, groups: [staff], mfa: true }}\n",
        env.dev_issuer("rwf")
    )
}

fn routes(env: &TestEnv, store: &str, echo: &str) -> String {
    format!(
        "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [rwf]\n\
         session: {{ store: \"{store}\", cookie: idfabric_session, key_file: certs/session.key }}\n\
         routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{echo}]\n",
        http = env.http_port,
        admin = env.admin_line(),
    )
}

fn on(env: &TestEnv, path: &str) -> String {
    format!("http://wf.test:{}{path}", env.http_port)
}

fn dev_key(env: &TestEnv) -> Signer {
    Signer::load(&env.path().join("certs/dev-idp-workforce.pem")).unwrap()
}

/// A well-formed SET for one event about `subject` (SSF 1.0: `sub_id` at the top).
fn set_claims(event: &str, subject: Value) -> Value {
    json!({
        "iss": SSF_ISS,
        "aud": AUD,
        "iat": now(),
        "jti": format!("set-{:016x}", rand::random::<u64>()),
        "sub_id": subject,
        "events": { event: { "event_timestamp": now() } },
    })
}

async fn push(env: &TestEnv, content_type: &str, body: String) -> (u16, Value) {
    let r = client()
        .post(format!("{}/.idfabric/ssf/events", env.proxy()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(json!({"raw": text})))
}

async fn push_set(env: &TestEnv, token: String) -> (u16, Value) {
    push(env, "application/secevent+jwt", token).await
}

async fn bearer(env: &TestEnv, token: &str) -> Resp {
    Agent::api().send("GET", &on(env, "/"), None, &[("authorization", &format!("Bearer {token}"))]).await
}

async fn reason_of(r: Resp) -> (u16, String) {
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, body["reason"].as_str().unwrap_or("").to_string())
}

/// Waits until `env` refuses `token` as revoked; how long that took.
async fn refused_within(env: &TestEnv, token: &str, limit: Duration, log: &str) -> Duration {
    let sent = Instant::now();
    loop {
        if reason_of(bearer(env, token).await).await == (401, "revoked".to_string()) {
            return sent.elapsed();
        }
        assert!(sent.elapsed() < limit, "the token was never refused\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssf_session_revoked_and_account_disabled_end_access_on_both_replicas() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let ea = TestEnv::new();
    ea.write("providers/rwf.yaml", &provider_file(&ea, None));
    ea.write("routes.yaml", &routes(&ea, &redis.url(), &echo.addr()));
    let eb = TestEnv::new();
    for dir in ["certs", "providers"] {
        std::fs::create_dir_all(eb.path().join(dir)).unwrap();
        for e in std::fs::read_dir(ea.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), eb.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    eb.write("routes.yaml", &routes(&eb, &redis.url(), &echo.addr()));
    let ga = Gateway::start(&ea);
    let gb = Gateway::start(&eb);

    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&ea, "/"), "alice").await;
    let alice_sub = decoded(&r.upstream()["x-identity-sub"]).strip_prefix("rwf:").unwrap().to_string();
    let bob = Agent::browser();
    let (r, _) = bob.sign_in(&on(&ea, "/"), "bob").await;
    let bob_sub = decoded(&r.upstream()["x-identity-sub"]).strip_prefix("rwf:").unwrap().to_string();
    let carol = Agent::browser();
    carol.sign_in(&on(&ea, "/"), "carol").await;
    let alice_token = ea.mint("rwf", "alice", &[]);
    let bob_token = ea.mint("rwf", "bob", &[]);
    let carol_token = ea.mint("rwf", "carol", &[]);
    let dave_token = ea.mint("rwf", "dave", &[]);
    assert_eq!(alice.get(&on(&eb, "/")).await.status, 200);
    assert_eq!(bearer(&eb, &bob_token).await.status, 200);
    let key = dev_key(&ea);

    // An event idfabric does not act on: accepted, nothing changes.
    let unknown = set_claims("https://schemas.openid.net/secevent/caep/event-type/device-compliance-change", json!({"format": "opaque", "id": alice_sub}));
    let (s, body) = push_set(&ea, key.sign_jwt("secevent+jwt", &unknown)).await;
    assert_eq!(s, 202, "{body}\n{}", ga.log());
    assert_eq!(bearer(&eb, &alice_token).await.status, 200, "an unknown event changes nothing");

    // CAEP session-revoked for alice (iss_sub: the provider's token issuer) on A.
    let sr = set_claims(SESSION_REVOKED, json!({"format": "iss_sub", "iss": ea.dev_issuer("rwf"), "sub": alice_sub}));
    let (s, body) = push_set(&ea, key.sign_jwt("secevent+jwt", &sr)).await;
    assert_eq!(s, 202, "{body}\n{}", ga.log());
    let took = refused_within(&eb, &alice_token, Duration::from_secs(3), &gb.log()).await;
    eprintln!("ssf: alice's bearer token refused on replica B {} ms after the SET reached A", took.as_millis());
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(alice.get(&on(&eb, "/")).await.redirect().path(), "/.idfabric/login", "her session ended");
    assert_eq!(bob.get(&on(&eb, "/")).await.status, 200, "bob untouched");
    assert_eq!(bearer(&ea, &bob_token).await.status, 200, "bob untouched");

    // RISC account-disabled for bob (complex subject, opaque user) on B.
    let ad = set_claims(ACCOUNT_DISABLED, json!({"format": "complex", "user": {"format": "opaque", "id": bob_sub}}));
    let (s, body) = push_set(&eb, key.sign_jwt("secevent+jwt", &ad)).await;
    assert_eq!(s, 202, "{body}\n{}", gb.log());
    refused_within(&ea, &bob_token, Duration::from_secs(1), &ga.log()).await;
    assert_eq!(bob.get(&on(&ea, "/")).await.redirect().path(), "/.idfabric/login", "his session ended");

    // The same SET again, on the other replica: a replay.
    let (s, body) = push_set(&ea, key.sign_jwt("secevent+jwt", &ad)).await;
    assert_eq!((s, body["err"].as_str()), (400, Some("invalid_request")), "{body}");

    // An email subject (any case) on A: carol signed in with that verified address, so
    // her session and her token end on B.
    assert_eq!(bearer(&eb, &carol_token).await.status, 200);
    assert_eq!(bearer(&eb, &dave_token).await.status, 200);
    let purged = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
    let by_email = set_claims(purged, json!({"format": "email", "email": "CAROL@corp.test"}));
    let (s, body) = push_set(&ea, key.sign_jwt("secevent+jwt", &by_email)).await;
    assert_eq!(s, 202, "{body}\n{}", ga.log());
    let took = refused_within(&eb, &carol_token, Duration::from_secs(3), &gb.log()).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(carol.get(&on(&eb, "/")).await.redirect().path(), "/.idfabric/login", "her session ended");
    assert_eq!(bearer(&eb, &dave_token).await.status, 200, "another address untouched");
    // dave never signed in: idfabric knows no subject for his address, but his token
    // carries it, verified, and is refused on both replicas.
    let by_email = set_claims(purged, json!({"format": "complex", "user": {"format": "email", "email": "dave@corp.test"}}));
    let (s, body) = push_set(&eb, key.sign_jwt("secevent+jwt", &by_email)).await;
    assert_eq!(s, 202, "{body}\n{}", gb.log());
    refused_within(&ea, &dave_token, Duration::from_secs(1), &ga.log()).await;
    refused_within(&eb, &dave_token, Duration::from_secs(1), &gb.log()).await;

    let metrics = scrape_metrics(&ea).await;
    assert_eq!(metric_value(&metrics, "idfabric_revocations_total{event=\"session_revoked\",source=\"ssf\"}"), 1.0, "{metrics}");
    assert_eq!(metric_value(&metrics, "idfabric_ssf_sets_total{result=\"ignored\"}"), 1.0, "{metrics}");
    let metrics = scrape_metrics(&eb).await;
    assert_eq!(metric_value(&metrics, "idfabric_revocations_total{event=\"account_disabled\",source=\"ssf\"}"), 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_sets_get_the_rfc8935_error_and_change_nothing() {
    let echo = Echo::start();
    let env = TestEnv::new();
    // The transmitter's keys from ssf.jwks_url (here the dev provider's JWKS).
    let jwks = format!("{}/jwks", env.dev_issuer("rwf"));
    env.write("providers/rwf.yaml", &provider_file(&env, Some(&jwks)));
    env.write("routes.yaml", &routes(&env, "memory", &echo.addr()));
    let gw = Gateway::start(&env);
    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&env, "/"), "alice").await;
    let sub = decoded(&r.upstream()["x-identity-sub"]).strip_prefix("rwf:").unwrap().to_string();
    let alice_token = env.mint("rwf", "alice", &[]);
    let key = dev_key(&env);
    let good = || set_claims(ACCOUNT_DISABLED, json!({"format": "opaque", "id": sub}));
    let with = |k: &str, v: Value| {
        let mut c = good();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let other_key = Signer::from_pkcs8(
        &pem::parse(idfabric::keys::generate_pem(idfabric::keys::KeyKind::Rsa2048).unwrap().as_bytes()).unwrap().into_contents(),
    )
    .unwrap();
    let kid = key.public_jwk()["kid"].as_str().unwrap().to_string();

    // A good SET for someone else first, so its jti can be replayed.
    let first = key.sign_jwt("secevent+jwt", &set_claims(ACCOUNT_DISABLED, json!({"format": "opaque", "id": "someone-else"})));
    let (s, body) = push_set(&env, first.clone()).await;
    assert_eq!(s, 202, "{body}\n{}", gw.log());
    let secret_part = first.rsplit('.').next().unwrap().to_string();

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("unsigned", common::fakeidp::unsigned(&json!({"alg": "none", "typ": "secevent+jwt"}), &good()), "invalid_request", "unsigned"),
        ("another key", common::fakeidp::sign_with_header(&other_key, &json!({"alg": "RS256", "kid": kid, "typ": "secevent+jwt"}), &good()), "invalid_key", "signature"),
        ("unknown kid", common::fakeidp::sign_with_header(&other_key, &json!({"alg": "RS256", "kid": "nope", "typ": "secevent+jwt"}), &good()), "invalid_key", "kid"),
        ("replayed jti", first.clone(), "invalid_request", "already"),
        ("wrong audience", key.sign_jwt("secevent+jwt", &with("aud", json!("https://someone-else.test"))), "invalid_audience", "aud"),
        ("unknown issuer", key.sign_jwt("secevent+jwt", &with("iss", json!("https://evil.test/"))), "invalid_issuer", "ssf.issuer"),
        ("token issuer, not ssf issuer", key.sign_jwt("secevent+jwt", &with("iss", json!(env.dev_issuer("rwf")))), "invalid_issuer", "ssf.issuer"),
        ("unknown subject issuer", key.sign_jwt("secevent+jwt", &with("sub_id", json!({"format": "iss_sub", "iss": "https://other-idp.test/", "sub": sub}))), "invalid_request", "iss"),
        ("email subject, no address", key.sign_jwt("secevent+jwt", &with("sub_id", json!({"format": "email", "email": "alice at corp"}))), "invalid_request", "email"),
        ("unknown subject format", key.sign_jwt("secevent+jwt", &with("sub_id", json!({"format": "phone_number", "phone_number": "+12065550100"}))), "invalid_request", "format"),
        ("no subject", key.sign_jwt("secevent+jwt", &without("sub_id")), "invalid_request", "subject"),
        ("no events", key.sign_jwt("secevent+jwt", &without("events")), "invalid_request", "events"),
        ("no jti", key.sign_jwt("secevent+jwt", &without("jti")), "invalid_request", "jti"),
        ("no iat", key.sign_jwt("secevent+jwt", &without("iat")), "invalid_request", "iat"),
        ("too old", key.sign_jwt("secevent+jwt", &with("iat", json!(now() - 3 * 86400))), "invalid_request", "older"),
        ("ID token typ", key.sign_jwt("at+jwt", &good()), "invalid_request", "typ"),
        ("not a JWT", "not-a-jwt".into(), "invalid_request", "three"),
    ];
    for (name, token, err, says) in cases {
        let (status, body) = push_set(&env, token).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["err"].as_str(), Some(err), "{name}: {body}");
        let d = body["description"].as_str().unwrap_or("");
        assert!(d.contains(says), "{name}: {d:?} should mention {says:?}");
    }
    let (s, body) = push(&env, "application/json", key.sign_jwt("secevent+jwt", &good())).await;
    assert_eq!((s, body["err"].as_str()), (400, Some("invalid_request")), "wrong media type: {body}");
    let (s, body) = push(&env, "application/secevent+jwt", "a".repeat(20 * 1024)).await;
    assert_eq!((s, body["err"].as_str()), (413, Some("invalid_request")), "oversized: {body}");

    // Nothing changed: alice's session and token work; only the first SET revoked.
    assert_eq!(alice.get(&on(&env, "/")).await.status, 200, "{}", gw.log());
    assert_eq!(bearer(&env, &alice_token).await.status, 200);
    let metrics = scrape_metrics(&env).await;
    assert_eq!(metric_value(&metrics, "idfabric_revocations_total{event=\"account_disabled\",source=\"ssf\"}"), 1.0, "{metrics}");
    assert_eq!(metric_value(&metrics, "idfabric_ssf_sets_total{result=\"replayed\"}"), 1.0, "{metrics}");
    assert!(!gw.log().contains(&secret_part), "no SET in the log");

    // The good SET now ends her access.
    let (s, body) = push_set(&env, key.sign_jwt("secevent+jwt", &good())).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(reason_of(bearer(&env, &alice_token).await).await, (401, "revoked".to_string()));
    assert_eq!(alice.get(&on(&env, "/")).await.redirect().path(), "/.idfabric/login");
}

#[test]
fn an_incomplete_ssf_section_is_refused_at_load_with_its_line() {
    let env = TestEnv::new();
    let text = provider_file(&env, None).replace(&format!(", audience: \"{AUD}\""), "").replace("ssf: {", "ssf:\n  {");
    env.write("providers/rwf.yaml", &text);
    env.write("routes.yaml", &routes(&env, "memory", "127.0.0.1:9"));
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_ne!(code, 0, "{out}{err}");
    let line = text.lines().position(|l| l.starts_with("ssf:")).unwrap() + 1;
    assert!(err.contains(&format!("rwf.yaml:{line}")), "{err}");
    assert!(err.contains("ssf.audience") && err.contains("is required"), "{err}");
    let bad = provider_file(&env, Some("ftp://keys.test/jwks"));
    env.write("providers/rwf.yaml", &bad);
    let (code, _, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("ssf.jwks_url"), "{err}");
}

/// A small RFC 8936 poll transmitter: SETs are queued until acknowledged (or reported
/// in `setErrs`), every poll answers all queued SETs; it records each request's body
/// and `Authorization`, and how often each `jti` was delivered.
#[derive(Default)]
struct Transmitter {
    queue: std::collections::BTreeMap<String, String>,
    polls: Vec<(String, Value)>,
    delivered: std::collections::HashMap<String, usize>,
    errs: serde_json::Map<String, Value>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Transmitter>>;

async fn start_transmitter() -> (String, Shared) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ssf/poll", listener.local_addr().unwrap());
    let state: Shared = Default::default();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let st = st.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    break (head, buf[end + 4..end + 4 + len].to_vec());
                };
                let auth = head.lines().find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: "))).unwrap_or("").to_string();
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let answer = {
                    let mut t = st.lock().unwrap();
                    t.polls.push((auth.clone(), req.clone()));
                    if auth == "Bearer poll-token-0123456789" {
                        for jti in req["ack"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                            t.queue.remove(jti);
                        }
                        for (jti, e) in req["setErrs"].as_object().into_iter().flatten() {
                            t.queue.remove(jti);
                            t.errs.insert(jti.clone(), e.clone());
                        }
                        let sets: serde_json::Map<String, Value> = t.queue.iter().map(|(j, s)| (j.clone(), json!(s))).collect();
                        for j in sets.keys() {
                            *t.delivered.entry(j.clone()).or_default() += 1;
                        }
                        Some(json!({"sets": sets, "moreAvailable": false}).to_string())
                    } else {
                        None
                    }
                };
                let resp = match answer {
                    Some(b) => format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}", b.len()),
                    None => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                };
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssf_poll_delivery_ends_the_session_acknowledges_and_reports_bad_sets_once_across_replicas() {
    let redis = RedisServer::start();
    let echo = Echo::start();
    let (poll_url, tx) = start_transmitter().await;
    let ea = TestEnv::new();
    let poll = format!(", poll: {{ url: \"{poll_url}\", token_file: poll.token, interval: 1s }}");
    let file = provider_file(&ea, None).replace(&format!("audience: \"{AUD}\""), &format!("audience: \"{AUD}\"{poll}"));
    ea.write("providers/rwf.yaml", &file);
    ea.write("poll.token", "poll-token-0123456789\n");
    ea.write("routes.yaml", &routes(&ea, &redis.url(), &echo.addr()));
    let eb = TestEnv::new();
    for dir in ["certs", "providers"] {
        std::fs::create_dir_all(eb.path().join(dir)).unwrap();
        for e in std::fs::read_dir(ea.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), eb.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    eb.write("poll.token", "poll-token-0123456789\n");
    eb.write("routes.yaml", &routes(&eb, &redis.url(), &echo.addr()));
    let ga = Gateway::start(&ea);
    let gb = Gateway::start(&eb);

    let alice = Agent::browser();
    let (r, _) = alice.sign_in(&on(&ea, "/"), "alice").await;
    let alice_sub = decoded(&r.upstream()["x-identity-sub"]).strip_prefix("rwf:").unwrap().to_string();
    let bob = Agent::browser();
    bob.sign_in(&on(&ea, "/"), "bob").await;
    let alice_token = ea.mint("rwf", "alice", &[]);
    assert_eq!(bearer(&eb, &alice_token).await.status, 200);
    let key = dev_key(&ea);

    // A session-revoked SET and a SET signed with a key the provider never published.
    let good = set_claims(SESSION_REVOKED, json!({"format": "iss_sub", "iss": ea.dev_issuer("rwf"), "sub": alice_sub}));
    let good_jti = good["jti"].as_str().unwrap().to_string();
    let bad = set_claims(SESSION_REVOKED, json!({"format": "opaque", "id": "bob"}));
    let bad_jti = bad["jti"].as_str().unwrap().to_string();
    let stranger = Signer::load(&ea.path().join("certs/dev-idp-customer.pem")).unwrap();
    {
        let mut t = tx.lock().unwrap();
        t.queue.insert(good_jti.clone(), key.sign_jwt("secevent+jwt", &good));
        t.queue.insert(bad_jti.clone(), stranger.sign_jwt("secevent+jwt", &bad));
    }
    let queued = Instant::now();

    // Within the interval (1 s) plus a poll's round trip, on both replicas.
    let took = refused_within(&eb, &alice_token, Duration::from_secs(4), &gb.log()).await;
    eprintln!("ssf poll: alice's bearer token refused on replica B {} ms after the SET was queued", took.as_millis());
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(alice.get(&on(&ea, "/")).await.redirect().path(), "/.idfabric/login", "her session ended");
    assert_eq!(bob.get(&on(&eb, "/")).await.status, 200, "bob untouched");

    // Acknowledged, and the bad SET reported in setErrs; neither delivered again.
    while !tx.lock().unwrap().queue.is_empty() {
        assert!(queued.elapsed() < Duration::from_secs(8), "never acknowledged\n{}\n{}", ga.log(), gb.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = tx.lock().unwrap().delivered.clone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t = tx.lock().unwrap();
    assert_eq!(t.delivered, settled, "nothing delivered again once acknowledged");
    assert!(t.delivered[&good_jti] <= 2, "re-delivered at most once (to the other replica): {:?}", t.delivered);
    assert_eq!(t.errs[&bad_jti]["err"], "invalid_key", "{:?}", t.errs);
    assert!(t.errs[&bad_jti]["description"].is_string());
    assert!(t.polls.iter().all(|(auth, _)| auth == "Bearer poll-token-0123456789"));
    let first = &t.polls[0].1;
    assert_eq!((first["returnImmediately"].as_bool(), first["maxEvents"].as_u64()), (Some(true), Some(100)), "{first}");
    let acked = t.polls.iter().any(|(_, b)| b["ack"].as_array().is_some_and(|a| a.contains(&json!(good_jti))));
    assert!(acked, "the jti was acknowledged: {:?}", t.polls);
    // One poll per interval across both replicas, not one each: ~1 per second.
    let polls = t.polls.len();
    let secs = queued.elapsed().as_secs_f64() + 1.0;
    drop(t);
    assert!((polls as f64) < secs * 1.6 + 2.0, "{polls} polls in {secs:.1}s");

    // Acted on once across the replicas.
    let total = metric_value(&scrape_metrics(&ea).await, "idfabric_revocations_total{event=\"session_revoked\",source=\"ssf\"}")
        + metric_value(&scrape_metrics(&eb).await, "idfabric_revocations_total{event=\"session_revoked\",source=\"ssf\"}");
    assert_eq!(total, 1.0);
    let ok = metric_value(&scrape_metrics(&ea).await, "idfabric_ssf_polls_total{provider=\"rwf\",result=\"ok\"}")
        + metric_value(&scrape_metrics(&eb).await, "idfabric_ssf_polls_total{provider=\"rwf\",result=\"ok\"}");
    assert!(ok >= 2.0, "{ok}");
}

#[test]
fn a_poll_url_in_plain_http_off_loopback_is_refused_at_load() {
    let env = TestEnv::new();
    let poll = ", poll: { url: \"http://ssf.example.com/poll\", token: abc }";
    env.write("providers/rwf.yaml", &provider_file(&env, None).replace(&format!("audience: \"{AUD}\""), &format!("audience: \"{AUD}\"{poll}")));
    env.write("routes.yaml", &routes(&env, "memory", "127.0.0.1:9"));
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("ssf.poll.url") && err.contains("https"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_poll_endpoint_backs_off_and_never_logs_the_token() {
    let env = TestEnv::new();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let poll = format!(", poll: {{ url: \"http://127.0.0.1:{closed}/poll\", token: poll-secret-token-42, interval: 1s }}");
    env.write("providers/rwf.yaml", &provider_file(&env, None).replace(&format!("audience: \"{AUD}\""), &format!("audience: \"{AUD}\"{poll}")));
    env.write("routes.yaml", &routes(&env, "memory", "127.0.0.1:9"));
    let gw = Gateway::start(&env);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let m = scrape_metrics(&env).await;
    let failed = metric_value(&m, "idfabric_ssf_polls_total{provider=\"rwf\",result=\"transport_error\"}");
    // Without backoff: about 4 polls; with it: at 0.25 s, then 2 s later, then 4 s later.
    assert!((1.0..=2.0).contains(&failed), "{failed} failed polls in 4.5 s\n{m}");
    assert_eq!(metric_value(&m, "idfabric_ssf_polls_total{provider=\"rwf\",result=\"ok\"}"), 0.0);
    let log = gw.log();
    assert!(log.contains("ssf poll failed; backing off"), "{log}");
    assert!(!log.contains("poll-secret-token-42"), "the token is never logged");
}

/// The `sub` claim of a compact JWT (the test's own minted token).
fn token_sub(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_email_subject_finds_the_scim_users_that_list_the_address() {
    const SCIM_TOKEN: &str = "scim-token-0123456789abcdef";
    let echo = Echo::start();
    let env = TestEnv::new();
    // Tokens without an email claim: only the SCIM records tie the address to them.
    let file = provider_file(&env, None).replace("users:\n", "scim: { token_file: scim.token }\nusers:\n")
        + "  - { name: erin, groups: [staff], mfa: true }\n  - { name: frank, groups: [staff], mfa: true }\n";
    env.write("providers/rwf.yaml", &file);
    env.write("scim.token", SCIM_TOKEN);
    env.write("routes.yaml", &routes(&env, "memory", &echo.addr()));
    let gw = Gateway::start(&env);
    let key = dev_key(&env);
    let erin_token = env.mint("rwf", "erin", &[]);
    let frank_token = env.mint("rwf", "frank", &[]);
    let scim = |method: &str, path: String, body: Value| {
        client()
            .request(method.parse().unwrap(), format!("{}/.idfabric/scim/v2{path}", env.proxy()))
            .header("authorization", format!("Bearer {SCIM_TOKEN}"))
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
    };
    let user = |sub: &str, name: &str, emails: Value| {
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "externalId": sub, "userName": name, "active": true, "emails": emails})
    };
    let r = scim("POST", "/Users".into(), user(&token_sub(&erin_token), "erin.upn@corp.test", json!([{"value": "Erin@Personal.test", "type": "work", "primary": true}]))).await.unwrap();
    assert_eq!(r.status(), 201);
    let erin_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let r = scim("POST", "/Users".into(), user(&token_sub(&frank_token), "frank@corp.test", json!([]))).await.unwrap();
    assert_eq!(r.status(), 201);
    // Erin's address changes: the old one no longer names her.
    let r = scim("PUT", format!("/Users/{erin_id}"), user(&token_sub(&erin_token), "erin.upn@corp.test", json!([{"value": "erin2@corp.test", "primary": true}]))).await.unwrap();
    assert_eq!(r.status(), 200);

    let disabled = |email: &str| key.sign_jwt("secevent+jwt", &set_claims(ACCOUNT_DISABLED, json!({"format": "email", "email": email})));
    let (s, body) = push_set(&env, disabled("erin@personal.test")).await;
    assert_eq!(s, 202, "{body}\n{}", gw.log());
    assert_eq!(bearer(&env, &erin_token).await.status, 200, "an address erin no longer has");
    let (s, body) = push_set(&env, disabled("ERIN2@corp.test")).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(reason_of(bearer(&env, &erin_token).await).await, (401, "revoked".to_string()), "{}", gw.log());
    assert_eq!(bearer(&env, &frank_token).await.status, 200, "frank untouched");
    // frank's userName is his address.
    let (s, body) = push_set(&env, disabled("frank@corp.test")).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(reason_of(bearer(&env, &frank_token).await).await, (401, "revoked".to_string()));
}
