//! `idfabric keys rotate`: the broker signs with the new key after a reload, and the
//! old key stays published in `/jwks` so tokens it signed still verify until they expire.

use crate::common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn jwks(env: &TestEnv) -> Vec<Value> {
    let v: Value = client().get(format!("{}/broker/jwks", env.proxy())).send().await.unwrap().json().await.unwrap();
    v["keys"].as_array().cloned().unwrap_or_default()
}

fn kids(keys: &[Value]) -> Vec<String> {
    keys.iter().map(|k| k["kid"].as_str().unwrap_or_default().to_string()).collect()
}

/// The `X-Identity-Token` the upstream received for a request with `token`.
async fn minted(env: &TestEnv, token: &str) -> String {
    let r = client().get(format!("{}/x", env.proxy())).header("host", "a.test").bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["headers"]["x-identity-token"].as_str().expect("identity token forwarded").to_string()
}

/// Verifies `jwt` against the published keys, picking the key by `kid`.
fn verifies(jwt: &str, keys: &[Value], issuer: &str) -> Result<String, String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let kid = header.kid.clone().ok_or("no kid")?;
    let jwk = keys.iter().find(|k| k["kid"] == kid.as_str()).ok_or(format!("kid {kid} not published"))?;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&["a"]);
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(jwt, &key, &v).map_err(|e| e.to_string())?;
    Ok(kid)
}

#[tokio::test]
async fn rotated_key_signs_new_tokens_and_the_old_key_stays_published() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    let routes = format!("  - name: a\n    match: {{ host: a.test }}\n    auth: bearer\n    upstream: [{}]\n", echo.addr());
    env.write_routes(&["dev-wf"], &routes);
    let gw = Gateway::start(&env);
    let issuer = format!("{}/broker", env.proxy());
    let token = env.mint("dev-wf", "alice", &[]);

    let before = jwks(&env).await;
    assert_eq!(before.len(), 1);
    let old_token = minted(&env, &token).await;
    let old_kid = verifies(&old_token, &before, &issuer).unwrap();

    let (code, out, err) = env.run(&["keys", "rotate", "--config", "routes.yaml", "--alg", "rs256"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&old_kid), "names the retired key: {out}");
    let retired: Vec<_> = std::fs::read_dir(env.path().join("certs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("broker-signing.retired-"))
        .collect();
    assert_eq!(retired.len(), 1, "old key kept as a retired file");

    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let keys = jwks(&env).await;
        if keys.len() == 2 {
            break keys;
        }
        assert!(Instant::now() < deadline, "jwks never showed both keys: {:?}\n{}", kids(&keys), gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let published = kids(&after);
    assert_ne!(published[0], old_kid, "the new key is listed first");
    assert!(published.contains(&old_kid), "the old key stays published: {published:?}");
    assert_eq!(after[0]["alg"], "RS256");

    // New identity tokens are signed with the new key; the old one still verifies.
    let token2 = env.mint("dev-wf", "bob", &[]);
    let new_token = minted(&env, &token2).await;
    assert_eq!(verifies(&new_token, &after, &issuer).unwrap(), published[0]);
    assert_eq!(verifies(&old_token, &after, &issuer).unwrap(), old_kid);

    // Without a broker section (and no --key) rotation says what is missing.
    env.write("routes-nobroker.yaml", "listen: { http: 127.0.0.1:1 }\nproviders: []\nroutes: []\n");
    let (code, _, err) = env.run(&["keys", "rotate", "--config", "routes-nobroker.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("broker") || err.contains("routes"), "{err}");
}
