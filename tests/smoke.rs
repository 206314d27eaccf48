//! The shortest end-to-end path: a dev provider, a route, the real binary, a token.

use crate::common;
use common::*;

#[tokio::test]
async fn a_dev_token_reaches_the_upstream_with_identity_headers() {
    let echo = Echo::start();
    let env = TestEnv::new();
    env.write_dev_provider("dev-wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    env.write_routes(&["dev-wf"], &format!("  - name: app\n    upstream: [{}]\n    require: {{ groups_any: [hr] }}\n", echo.addr()));
    let _gw = Gateway::start(&env);
    let token = env.mint("dev-wf", "alice", &[]);
    let resp = client()
        .get(format!("{}/hello", env.proxy()))
        .bearer_auth(&token)
        .header("X-Identity-Sub", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = echo_headers(resp).await;
    assert!(h["x-identity-sub"].as_str().unwrap().starts_with("dev-wf:"));
    assert_ne!(h["x-identity-sub"], "spoofed");
    assert_eq!(h["x-identity-groups"], "hr,staff");
    assert!(h.contains_key("x-identity-token"));
    let resp = client().get(format!("{}/hello", env.proxy())).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
}
