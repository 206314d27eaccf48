//! SCIM 2.0 provisioning (`/.idfabric/scim/v2/`) against the real binary, with the
//! request bodies Microsoft Entra and Okta document for their provisioning clients:
//!
//! - Entra: `GET ?filter=userName eq …` then `POST /Users`, then the leaver's
//!   `PATCH` with `"value": "False"`: alice's session and bearer token are refused on
//!   the next request; set `"True"` again, she signs in anew and new tokens pass.
//! - Okta: `POST /Users`, then `DELETE`: bob's session and bearer token are refused.
//! - Okta's path-less `{"op":"replace","value":{"active":false}}` refuses the bearer.
//! - The protocol: no/wrong token 401, bad filter 400 `invalidFilter`, unknown id
//!   404, duplicate `userName` 409, create/get/filter/PUT roundtrip, groups with
//!   member add/remove, oversized body 413, all as `application/scim+json` with the
//!   SCIM error schema.
//!
//! Entra: https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups
//! Okta: https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20

use crate::common;
use common::agent::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "scim-token-0123456789abcdef";

const WF: &str = "id: rwf\nkind: dev\npopulation: workforce\nshape: auth0\nissuer: {ISSUER}\nsigning_key: certs/dev-idp-workforce.pem\n\
     client_id: wf-client\naudiences: [api://idfabric]\nscim: { token_file: scim.token }\nusers:\n\
     \x20 - { name: alice, email: alice@corp.test, groups: [staff], mfa: true }\n\
     \x20 - { name: bob, email: bob@corp.test, groups: [staff], mfa: true }\n";

fn start() -> (Echo, TestEnv, Gateway) {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &env.dev_issuer("rwf")));
    env.write("scim.token", &format!("{TOKEN}\n"));
    env.write(
        "routes.yaml",
        &format!(
            "listen: {{ http: 127.0.0.1:{} }}\n{}\nproviders: [rwf]\naudit: {{ output: audit.log }}\n\
             routes:\n  - name: wf\n    match: {{ host: wf.test }}\n    upstream: [{}]\n",
            env.http_port,
            env.admin_line(),
            echo.addr()
        ),
    );
    let gw = Gateway::start(&env);
    (echo, env, gw)
}

fn on(env: &TestEnv, path: &str) -> String {
    format!("http://wf.test:{}{path}", env.http_port)
}

/// A SCIM call with `token`: status, content type and JSON body (`Null` when empty).
async fn call_with(env: &TestEnv, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, String, Value) {
    let url = format!("{}/.idfabric/scim/v2{path}", env.proxy());
    let mut r = client().request(method.parse().unwrap(), url);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/scim+json").body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = resp.text().await.unwrap();
    (status, ct, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn call(env: &TestEnv, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (s, _, v) = call_with(env, Some(TOKEN), method, path, body).await;
    (s, v)
}

async fn bearer(env: &TestEnv, token: &str) -> (u16, String) {
    let r = Agent::api().send("GET", &on(env, "/"), None, &[("authorization", &format!("Bearer {token}"))]).await;
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, body["reason"].as_str().unwrap_or("").to_string())
}

/// Signs `user` in; their browser and their provider subject (the part after `rwf:`).
async fn signed_in(env: &TestEnv, user: &str) -> (Agent, String) {
    let a = Agent::browser();
    let (r, _) = a.sign_in(&on(env, "/"), user).await;
    let sub = decoded(&r.upstream()["x-identity-sub"]);
    (a, sub.strip_prefix("rwf:").expect("a global sub").to_string())
}

fn assert_error(status: u16, v: &Value, want: u16, scim_type: Option<&str>) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:Error"]), "{v}");
    assert_eq!(v["status"], json!(want.to_string()), "{v}");
    assert_eq!(v["scimType"].as_str(), scim_type, "{v}");
}

/// Entra's create request (its documented body), for the user with `object_id`.
fn entra_user(object_id: &str, upn: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": object_id,
        "userName": upn,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": upn}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Alice Anders", "familyName": "Anders", "givenName": "Alice"},
        "roles": []
    })
}

/// Okta's create request (its documented body), for the user with Okta id `okta_id`.
fn okta_user(okta_id: &str, login: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": login,
        "name": {"givenName": "Bob", "familyName": "Builder"},
        "emails": [{"primary": true, "value": login, "type": "work"}],
        "displayName": "Bob Builder",
        "locale": "en-US",
        "externalId": okta_id,
        "groups": [],
        "password": "1mz050nq",
        "active": true
    })
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entra_deactivation_refuses_the_session_and_bearer_at_once_and_reactivation_lets_in_again() {
    let (_echo, env, gw) = start();
    let (alice, oid) = signed_in(&env, "alice").await;
    let (bob, _) = signed_in(&env, "bob").await;
    let token = env.mint("rwf", "alice", &[]);
    assert_eq!(bearer(&env, &token).await.0, 200, "{}", gw.log());

    // Entra first asks whether the user exists, then creates it.
    let (s, v) = call(&env, "GET", "/Users?filter=userName+eq+%22alice%40corp.test%22", None).await;
    assert_eq!((s, v["totalResults"].as_u64()), (200, Some(0)), "{v}");
    let (s, created) = call(&env, "POST", "/Users", Some(entra_user(&oid, "alice@corp.test"))).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["location"].as_str().map(|l| l.ends_with(&format!("/.idfabric/scim/v2/Users/{id}"))), Some(true), "{created}");
    assert_eq!(bearer(&env, &token).await.0, 200, "a joiner keeps access");

    // The leaver: Entra's PATCH with the boolean as a string.
    let (s, v) = call(&env, "PATCH", &format!("/Users/{id}"), Some(patch(json!([{"op": "Replace", "path": "active", "value": "False"}])))).await;
    assert_eq!((s, &v["active"]), (200, &json!(false)), "{v}");
    assert_eq!(bearer(&env, &token).await, (401, "revoked".to_string()), "{}", gw.log());
    assert_eq!(alice.get(&on(&env, "/")).await.redirect().path(), "/.idfabric/login", "the session is gone");
    assert_eq!(bob.get(&on(&env, "/")).await.status, 200, "another user is untouched");

    // The audit writer thread flushes on its own schedule: give it a moment.
    let mut audit = String::new();
    for _ in 0..100 {
        audit = std::fs::read_to_string(env.path().join("audit.log")).unwrap_or_default();
        if audit.contains("\"kind\":\"revocation\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = audit.lines().find(|l| l.contains("\"kind\":\"revocation\"")).expect("a revocation audit line");
    let a: Value = serde_json::from_str(line).unwrap();
    assert_eq!((a["source"].as_str(), a["event"].as_str()), (Some("scim"), Some("user_deactivated")), "{a}");
    assert_eq!(a["sub"].as_str(), Some(format!("rwf:{oid}").as_str()));

    // Re-activated: credentials issued from now on pass.
    let (s, v) = call(&env, "PATCH", &format!("/Users/{id}"), Some(patch(json!([{"op": "Replace", "path": "active", "value": "True"}])))).await;
    assert_eq!((s, &v["active"]), (200, &json!(true)), "{v}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(bearer(&env, &token).await.0, 401, "a token from before the revocation stays refused");
    assert_eq!(bearer(&env, &env.mint("rwf", "alice", &[])).await.0, 200, "a new token passes");
    let (again, _) = signed_in(&env, "alice").await;
    assert_eq!(again.get(&on(&env, "/")).await.status, 200);

    let metrics = scrape_metrics(&env).await;
    assert!(metric_value(&metrics, "idfabric_revocations_total{event=\"user_deactivated\",source=\"scim\"}") >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn okta_delete_refuses_the_session_and_bearer() {
    let (_echo, env, gw) = start();
    let (bob, okta_id) = signed_in(&env, "bob").await;
    let token = env.mint("rwf", "bob", &[]);
    let (s, created) = call(&env, "POST", "/Users", Some(okta_user(&okta_id, "bob@corp.test"))).await;
    assert_eq!(s, 201, "{created}");
    assert!(created.get("password").is_none(), "the password is never kept or returned: {created}");
    let id = created["id"].as_str().unwrap();
    let (s, v) = call(&env, "DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!((s, v), (204, Value::Null));
    assert_eq!(bearer(&env, &token).await, (401, "revoked".to_string()), "{}", gw.log());
    assert_eq!(bob.get(&on(&env, "/")).await.redirect().path(), "/.idfabric/login");
    let (s, v) = call(&env, "GET", &format!("/Users/{id}"), None).await;
    assert_error(s, &v, 404, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn okta_path_less_deactivation_refuses_the_bearer() {
    let (_echo, env, _gw) = start();
    let (_, okta_id) = signed_in(&env, "bob").await;
    let token = env.mint("rwf", "bob", &[]);
    let (_, created) = call(&env, "POST", "/Users", Some(okta_user(&okta_id, "bob@corp.test"))).await;
    let id = created["id"].as_str().unwrap();
    let (s, v) = call(&env, "PATCH", &format!("/Users/{id}"), Some(patch(json!([{"op": "replace", "value": {"id": id, "active": false}}])))).await;
    assert_eq!((s, &v["active"]), (200, &json!(false)), "{v}");
    assert_eq!(bearer(&env, &token).await, (401, "revoked".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_protocol_roundtrips_and_refuses_what_it_does_not_support() {
    let (_echo, env, _gw) = start();
    // Authentication.
    let (s, ct, v) = call_with(&env, None, "GET", "/Users", None).await;
    assert_error(s, &v, 401, None);
    assert_eq!(ct, "application/scim+json");
    let (s, _, v) = call_with(&env, Some("scim-token-0123456789abcdeX"), "GET", "/Users", None).await;
    assert_error(s, &v, 401, None);

    // Create, get, filter (userName is case-insensitive), PUT.
    let (s, ct, u) = call_with(&env, Some(TOKEN), "POST", "/Users", Some(entra_user("oid-1", "Carol@corp.test"))).await;
    assert_eq!((s, ct.as_str()), (201, "application/scim+json"), "{u}");
    let id = u["id"].as_str().unwrap().to_string();
    let (s, got) = call(&env, "GET", &format!("/Users/{id}"), None).await;
    assert_eq!((s, &got["userName"], &got["externalId"]), (200, &json!("Carol@corp.test"), &json!("oid-1")));
    let (s, list) = call(&env, "GET", "/Users?filter=userName%20eq%20%22carol%40corp.test%22", None).await;
    assert_eq!((s, list["totalResults"].as_u64(), &list["Resources"][0]["id"]), (200, Some(1), &json!(id)), "{list}");
    assert_eq!(list["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
    let (s, v) = call(&env, "POST", "/Users", Some(entra_user("oid-2", "carol@CORP.test"))).await;
    assert_error(s, &v, 409, Some("uniqueness"));
    let mut put = entra_user("oid-1", "carol.new@corp.test");
    put["displayName"] = json!("Carol N");
    let (s, v) = call(&env, "PUT", &format!("/Users/{id}"), Some(put)).await;
    assert_eq!((s, &v["displayName"], &v["meta"]["created"]), (200, &json!("Carol N"), &got["meta"]["created"]), "{v}");
    let (_, list) = call(&env, "GET", "/Users?filter=userName%20eq%20%22carol.new%40corp.test%22", None).await;
    assert_eq!(list["totalResults"].as_u64(), Some(1), "the new name is indexed");
    let (_, list) = call(&env, "GET", "/Users?filter=userName%20eq%20%22carol%40corp.test%22", None).await;
    assert_eq!(list["totalResults"].as_u64(), Some(0), "the old name is not");
    let (_, all) = call(&env, "GET", "/Users", None).await;
    assert_eq!(all["totalResults"].as_u64(), Some(1), "{all}");

    // Refusals.
    for f in ["emails%20eq%20%22a%22", "userName%20co%20%22a%22", "userName%20eq%20a", "userName%20eq%20%22a%22%20and%20active%20eq%20true"] {
        let (s, v) = call(&env, "GET", &format!("/Users?filter={f}"), None).await;
        assert_error(s, &v, 400, Some("invalidFilter"));
    }
    let (s, v) = call(&env, "GET", "/Users/no-such-id", None).await;
    assert_error(s, &v, 404, None);
    let (s, v) = call(&env, "POST", "/Users", Some(json!({"userName": "x@corp.test"}))).await;
    assert_error(s, &v, 400, Some("invalidValue"));
    let (s, v) = call(&env, "PATCH", &format!("/Users/{id}"), Some(json!({"Operations": []}))).await;
    assert_error(s, &v, 400, Some("invalidSyntax"));
    let (s, v) = call(&env, "PATCH", &format!("/Users/{id}"), Some(patch(json!([{"op": "replace", "path": "active", "value": "maybe"}])))).await;
    assert_error(s, &v, 400, Some("invalidValue"));
    let big = json!({"userName": "y@corp.test", "externalId": "x".repeat(20_000)});
    let (s, v) = call(&env, "POST", "/Users", Some(big)).await;
    assert_error(s, &v, 413, None);

    // Groups: create, members add and remove (Entra's and Okta's shapes), delete.
    let (s, g) = call(&env, "POST", "/Groups", Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Sales", "externalId": "g-1", "members": []}))).await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let add = patch(json!([{"op": "Add", "path": "members", "value": [{"value": id}, {"value": "other"}]}]));
    let (s, g) = call(&env, "PATCH", &format!("/Groups/{gid}"), Some(add)).await;
    assert_eq!((s, g["members"].as_array().map(Vec::len)), (200, Some(2)), "{g}");
    let remove = patch(json!([{"op": "remove", "path": "members[value eq \"other\"]"}]));
    let (_, g) = call(&env, "PATCH", &format!("/Groups/{gid}"), Some(remove)).await;
    assert_eq!(g["members"], json!([{"value": id}]));
    let (s, got) = call(&env, "GET", &format!("/Groups/{gid}"), None).await;
    assert_eq!((s, &got["members"]), (200, &json!([{"value": id}])));
    let (s, _) = call(&env, "DELETE", &format!("/Groups/{gid}"), None).await;
    assert_eq!(s, 204);
    let (s, v) = call(&env, "GET", &format!("/Groups/{gid}"), None).await;
    assert_error(s, &v, 404, None);
}

/// Replica A (whose dev provider issues the tokens) and B with the same keys, one
/// Redis; the route `/eng/` requires the group `eng`, `/staff/` the group `staff`.
fn replicas(redis: &common::redis::RedisServer, echo: &Echo) -> (TestEnv, TestEnv) {
    let routes = |env: &TestEnv| {
        format!(
            "listen: {{ http: 127.0.0.1:{http} }}\n{admin}\nproviders: [rwf]\n\
             session: {{ store: \"{redis}\", cookie: idfabric_session, key_file: certs/session.key }}\n\
             routes:\n\
             \x20 - {{ name: eng, match: {{ host: wf.test, path_prefix: /eng/ }}, upstream: [{echo}], require: {{ groups_any: [eng] }} }}\n\
             \x20 - {{ name: staff, match: {{ host: wf.test, path_prefix: /staff/ }}, upstream: [{echo}], require: {{ groups_any: [staff] }} }}\n\
             \x20 - {{ name: wf, match: {{ host: wf.test }}, upstream: [{echo}] }}\n",
            http = env.http_port,
            admin = env.admin_line(),
            redis = redis.url(),
            echo = echo.addr(),
        )
    };
    let a = TestEnv::new();
    // Okta-shaped: its tokens carry the whole `groups` claim (complete groups).
    a.write("providers/rwf.yaml", &WF.replace("{ISSUER}", &a.dev_issuer("rwf")).replace("shape: auth0", "shape: okta"));
    a.write("scim.token", &format!("{TOKEN}\n"));
    a.write("routes.yaml", &routes(&a));
    let b = TestEnv::new();
    for dir in ["certs", "providers"] {
        std::fs::create_dir_all(b.path().join(dir)).unwrap();
        for e in std::fs::read_dir(a.path().join(dir)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), b.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    b.write("scim.token", &format!("{TOKEN}\n"));
    b.write("routes.yaml", &routes(&b));
    (a, b)
}

/// Polls `check` on a 20 ms beat until it holds; how long that took (panics after 3 s).
async fn within<F, Fut>(what: &str, log: &Gateway, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(3), "{what}: never\n{}", log.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// A request with the browser's session cookie as an API client sends it, so a
/// refusal is problem+json naming its reason.
async fn status_reason(a: &Agent, url: &str) -> (u16, String) {
    let api = Agent::api();
    api.set("wf.test", SESSION, &a.cookie("wf.test", SESSION).expect("a session cookie"));
    let r = api.get(url).await;
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, body["reason"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mover_s_group_change_applies_to_live_sessions_on_both_replicas_within_a_second() {
    let redis = common::redis::RedisServer::start();
    let echo = Echo::start();
    let (ea, eb) = replicas(&redis, &echo);
    let ga = Gateway::start(&ea);
    let gb = Gateway::start(&eb);
    let (alice, oid) = signed_in(&ea, "alice").await;
    let (bob, _) = signed_in(&ea, "bob").await;
    let forbidden = (403, "group_required".to_string());
    for env in [&ea, &eb] {
        assert_eq!(status_reason(&alice, &on(env, "/eng/")).await, forbidden, "the token's groups: staff only");
        assert_eq!(alice.get(&on(env, "/staff/")).await.status, 200);
    }
    let staff_token = ea.mint("rwf", "alice", &[]);
    assert_eq!(bearer(&eb, &staff_token).await.0, 200);

    // Entra provisions alice, the group `staff` with her, and an empty group `eng`.
    let (s, u) = call(&ea, "POST", "/Users", Some(entra_user(&oid, "alice@corp.test"))).await;
    assert_eq!(s, 201, "{u}");
    let uid = u["id"].as_str().unwrap().to_string();
    let group = |name: &str, ext: &str| json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name, "externalId": ext, "members": []});
    let (_, staff) = call(&ea, "POST", "/Groups", Some(group("staff", "0f1e-staff"))).await;
    let staff_id = staff["id"].as_str().unwrap().to_string();
    let (s, v) = call(&ea, "PATCH", &format!("/Groups/{staff_id}"), Some(patch(json!([{"op": "Add", "path": "members", "value": [{"value": uid}]}])))).await;
    assert_eq!(s, 200, "{v}");
    let (s, eng) = call(&ea, "POST", "/Groups", Some(group("eng", "8aa1-eng"))).await;
    assert_eq!(s, 201, "{eng}");
    let eng_id = eng["id"].as_str().unwrap().to_string();

    // The mover joins `eng` (Entra's PATCH: capitalised op, members as a list): her
    // session is let in on both replicas without signing in again.
    let add = patch(json!([{"op": "Add", "path": "members", "value": [{"value": uid}]}]));
    let (s, v) = call(&ea, "PATCH", &format!("/Groups/{eng_id}"), Some(add)).await;
    assert_eq!(s, 200, "{v}");
    let took = within("B admits the added member", &gb, || async { alice.get(&on(&eb, "/eng/")).await.status == 200 }).await;
    eprintln!("scim: group add applied on replica B after {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1100), "{took:?}");
    let r = alice.get(&on(&ea, "/eng/")).await;
    assert_eq!(r.status, 200);
    let groups = decoded(&r.upstream()["x-identity-groups"]);
    assert!(groups.contains("eng") && groups.contains("8aa1-eng"), "displayName and externalId: {groups}");
    assert_eq!(status_reason(&bob, &on(&eb, "/eng/")).await, forbidden, "another user is untouched");

    // Okta's removal (a filtered path): refused on both, with the group reason.
    let remove = patch(json!([{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}]));
    let (s, v) = call(&ea, "PATCH", &format!("/Groups/{eng_id}"), Some(remove)).await;
    assert_eq!((s, &v["members"]), (200, &json!([])), "{v}");
    let took = within("B refuses the removed member", &gb, || async { status_reason(&alice, &on(&eb, "/eng/")).await.0 == 403 }).await;
    eprintln!("scim: group removal applied on replica B after {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1100), "{took:?}");
    assert_eq!(status_reason(&alice, &on(&ea, "/eng/")).await, forbidden);
    assert_eq!(alice.get(&on(&eb, "/staff/")).await.status, 200, "her other group still counts, the session lives");
    assert_eq!(bearer(&eb, &staff_token).await, (401, "revoked".to_string()), "a token from before a removal carries stale groups");

    // PUT replaces `staff` without her: the staff route refuses her session too.
    let mut put = staff.clone();
    put["members"] = json!([]);
    let (s, v) = call(&ea, "PUT", &format!("/Groups/{staff_id}"), Some(put)).await;
    assert_eq!(s, 200, "{v}");
    within("B refuses after the PUT", &gb, || async { status_reason(&alice, &on(&eb, "/staff/")).await.0 == 403 }).await;

    // Added again, then the group is deleted: refused again.
    let add = patch(json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]));
    call(&ea, "PATCH", &format!("/Groups/{eng_id}"), Some(add)).await;
    within("B admits her again", &gb, || async { alice.get(&on(&eb, "/eng/")).await.status == 200 }).await;
    let (s, _) = call(&ea, "DELETE", &format!("/Groups/{eng_id}"), None).await;
    assert_eq!(s, 204);
    within("B refuses after the group is deleted", &gb, || async { status_reason(&alice, &on(&eb, "/eng/")).await.0 == 403 }).await;

    // A token issued after the change passes (its issuer vouches for its groups).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(bearer(&eb, &ea.mint("rwf", "alice", &[])).await.0, 200);
    let metrics = scrape_metrics(&ea).await;
    assert!(metric_value(&metrics, "idfabric_revocations_total{event=\"group_removed\",source=\"scim\"}") >= 1.0, "{metrics}");
    drop(ga);
}
