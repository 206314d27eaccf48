//! The provider conformance suite (in the manner of dex `storage/conformance`): one
//! function, `conformance(shape)`, run against a fake IdP of every provider kind through
//! the real binary. It covers admission and identity headers, every header / signature /
//! time / issuer / audience refusal with its `reason`, the unknown-`kid` refetch and its
//! rate limit, key rotation, last-known-good keys during an outage, a provider that is
//! down at start-up, and the validation metrics. Quirks of one kind live in `kinds.rs`.

use crate::common;
use common::fakeidp::unsigned;
use common::fixtures::*;
use idfabric::keys::KeyKind;
use idfabric::providers::REFETCH_INTERVAL;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn entra() {
    conformance(Shape::Entra).await
}

#[tokio::test]
async fn okta() {
    conformance(Shape::Okta).await
}

#[tokio::test]
async fn auth0() {
    conformance(Shape::Auth0).await
}

#[tokio::test]
async fn cognito() {
    conformance(Shape::Cognito).await
}

#[tokio::test]
async fn oidc() {
    conformance(Shape::Oidc).await
}

#[tokio::test]
async fn azure_b2c() {
    conformance(Shape::B2c).await
}

#[tokio::test]
async fn firebase() {
    conformance(Shape::Firebase).await
}

/// Everything every provider kind must do the same way. Four independent gateways run
/// side by side (the rotation check waits out the 10 s refetch interval).
async fn conformance(shape: Shape) {
    tokio::join!(token_rules(shape), rotation(shape), last_known_good(shape), provider_down_at_start(shape));
}

/// One gateway: admission, every refusal, the unknown-`kid` refetch, the metrics.
async fn token_rules(shape: Shape) {
    let mut s = Stack::new(shape, KeysFrom::Discovery, "");
    s.start();
    valid_token_is_admitted(&s).await;
    refusals_name_their_reason(&s).await;
    unknown_kid_refetches_once_per_interval(&s).await;
    metrics_label_provider_and_reason(&s).await;
}

// --- admission ----------------------------------------------------------------------

async fn valid_token_is_admitted(s: &Stack) {
    let r = s.get("/orders", &s.token().mint(&s.key)).await;
    assert_eq!(r.status, 200, "{:?}: valid token refused: {:?}", s.shape, r.body);
    let expect = [
        ("x-identity-sub", format!("{}:{}", s.id, s.shape.subject())),
        ("x-identity-provider", s.id.clone()),
        ("x-identity-population", s.shape.population().to_string()),
        ("x-identity-tenant", s.shape.tenant().to_string()),
    ];
    for (header, want) in expect {
        assert_eq!(r.echoed(header), want, "{:?}: {header}", s.shape);
    }
    let r = s.get("/orders", &s.token().exp_offset(-30).mint(&s.key)).await;
    assert_eq!(r.status, 200, "{:?}: exp 30 s ago is inside the 60 s leeway: {:?}", s.shape, r.body);
}

// --- refusals -----------------------------------------------------------------------

struct Case {
    name: &'static str,
    token: String,
    reason: &'static str,
}

fn case(name: &'static str, token: String, reason: &'static str) -> Case {
    Case { name, token, reason }
}

/// Every way a token of this shape must be refused with 401 `invalid_token`.
fn refusal_cases(s: &Stack) -> Vec<Case> {
    let t = s.token();
    let good = t.mint(&s.key);
    let sub = s.shape.subject_claim();
    vec![
        case("expired beyond the leeway", t.clone().expired().mint(&s.key), "token_expired"),
        case("nbf in the future", t.clone().not_yet_valid().mint(&s.key), "token_not_yet_valid"),
        case("iat in the future", t.clone().issued_in_future().mint(&s.key), "token_issued_in_future"),
        case("exp past year 9999", t.clone().set("exp", i64::MAX).mint(&s.key), "malformed_token"),
        case("unknown issuer", t.clone().set("iss", "https://evil.example/").mint(&s.key), "unknown_issuer"),
        case(
            "wrong audience",
            t.clone().set(s.shape.audience_claim(), "https://other.example").mint(&s.key),
            "audience_mismatch",
        ),
        case("alg none", unsigned(&json!({"alg": "none", "typ": "JWT"}), &t.claims), "alg_none"),
        case("HS256 keyed with the RSA public key", hs256_with_public_key(&s.key, &t.claims), "alg_not_allowed"),
        case(
            "jwk in the header",
            t.clone().header("jwk", s.key.public_jwk().clone()).mint(&s.key),
            "untrusted_header_key",
        ),
        case(
            "jku in the header",
            t.clone().header("jku", format!("{}/keys", s.fake.base)).mint(&s.key),
            "untrusted_header_key",
        ),
        case(
            "x5u in the header",
            t.clone().header("x5u", "https://evil.example/cert.pem").mint(&s.key),
            "untrusted_header_key",
        ),
        case(
            "crit in the header",
            t.clone().header("crit", json!(["exp"])).header("exp", 1).mint(&s.key),
            "unknown_crit",
        ),
        case("signature bit flipped", flip_signature(&good), "bad_signature"),
        case("signature stripped", strip_signature(&good), "bad_signature"),
        case("claim changed after signing", tamper(&good, sub, json!("someone-else")), "bad_signature"),
        case("RS256 header over an ES256 key", t.clone().header("alg", "RS256").mint(&s.ec), "alg_mismatch"),
        case("larger than 16 KiB", t.clone().set("pad", "x".repeat(17 * 1024)).mint(&s.key), "token_too_large"),
        case("garbage", "not-a-jwt".to_string(), "malformed_token"),
        case("garbage in three parts", "abc.def.ghi".to_string(), "malformed_token"),
    ]
}

async fn refusals_name_their_reason(s: &Stack) {
    let mut failures = Vec::new();
    for c in refusal_cases(s) {
        let r = s.get("/orders", &c.token).await;
        let challenge = r.www_authenticate.as_deref().unwrap_or("");
        let problem = r.content_type.as_deref() == Some("application/problem+json");
        if r.status != 401 || r.reason() != c.reason || !challenge.contains("invalid_token") || !problem {
            failures.push(format!(
                "{}: want 401 {}, got {} {:?} (challenge {challenge:?}, content-type {:?})",
                c.name, c.reason, r.status, r.body, r.content_type
            ));
        }
        if r.body.to_string().contains(&c.token) {
            failures.push(format!("{}: the refusal body echoes the token", c.name));
        }
    }
    assert!(failures.is_empty(), "{:?}:\n{}", s.shape, failures.join("\n"));
}

/// An unknown `kid` makes the gateway refetch the JWKS once; a second unknown `kid`
/// within `REFETCH_INTERVAL` (10 s) does not fetch again.
async fn unknown_kid_refetches_once_per_interval(s: &Stack) {
    let stranger = common::fakeidp::new_signer(KeyKind::Rsa2048);
    let before = s.fake.jwks_hits();
    let r = s.get("/orders", &s.token().header("kid", "unknown-1").mint(&stranger)).await;
    assert_eq!((r.status, r.reason()), (401, "unknown_kid"), "{:?}", s.shape);
    assert_eq!(s.fake.jwks_hits(), before + 1, "{:?}: an unknown kid refetches the JWKS", s.shape);
    let r = s.get("/orders", &s.token().header("kid", "unknown-2").mint(&stranger)).await;
    assert_eq!((r.status, r.reason()), (401, "unknown_kid"), "{:?}", s.shape);
    assert_eq!(s.fake.jwks_hits(), before + 1, "{:?}: a second unknown kid within 10 s must not refetch", s.shape);
}

async fn metrics_label_provider_and_reason(s: &Stack) {
    let text = s.metrics().await;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("idfabric_token_validations_total{")).collect();
    let has = |reason: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("provider=\"{}\"", s.id)) && l.contains(&format!("reason=\"{reason}\"")))
    };
    for reason in ["ok", "token_expired", "audience_mismatch", "bad_signature", "unknown_kid", "alg_mismatch"] {
        assert!(
            has(reason),
            "{:?}: no token_validations_total{{provider={},reason={reason}}} in:\n{}",
            s.shape,
            s.id,
            lines.join("\n")
        );
    }
    // No token (nor any base64url JSON segment of one) ever reaches the metrics.
    assert!(!text.contains("eyJ"), "{:?}: metrics contain token material", s.shape);
}

// --- keys over time -----------------------------------------------------------------

/// Rotation: a newly published key is picked up by the unknown-`kid` refetch; a key
/// removed from the JWKS stops verifying once the keys are re-fetched, even for a token
/// accepted (and cached) before.
async fn rotation(shape: Shape) {
    let mut s = Stack::new(shape, KeysFrom::Discovery, "");
    s.start();
    let key1_token = s.token().mint(&s.key);
    assert_eq!(s.get("/orders", &key1_token).await.status, 200, "{shape:?}: key1 before rotation");

    let key2 = common::fakeidp::new_signer(KeyKind::Rsa2048);
    s.fake.set_keys(&[&s.key, &key2, &s.ec]);
    let hits = s.fake.jwks_hits();
    let r = s.get("/orders", &s.token().mint(&key2)).await;
    assert_eq!(r.status, 200, "{shape:?}: a token signed with the newly published key2: {:?}", r.body);
    assert_eq!(s.fake.jwks_hits(), hits + 1, "{shape:?}: key2's unknown kid refetched the JWKS");

    s.fake.set_keys(&[&key2, &s.ec]);
    tokio::time::sleep(REFETCH_INTERVAL + Duration::from_secs(1)).await;
    let stranger = common::fakeidp::new_signer(KeyKind::Rsa2048);
    let r = s.get("/orders", &s.token().header("kid", "unknown-3").mint(&stranger)).await;
    assert_eq!((r.status, r.reason()), (401, "unknown_kid"), "{shape:?}: a kid nobody publishes");
    assert_eq!(s.fake.jwks_hits(), hits + 2, "{shape:?}: an unknown kid after the interval refetches again");

    for (name, token) in [("cached key1 token", key1_token), ("fresh key1 token", s.token().mint(&s.key))] {
        let r = s.get("/orders", &token).await;
        assert_eq!((r.status, r.reason()), (401, "unknown_kid"), "{shape:?}: {name} after key1 was removed");
    }
    let r = s.get("/orders", &s.token().set("jti", "after-rotation").mint(&key2)).await;
    assert_eq!(r.status, 200, "{shape:?}: key2 after rotation: {:?}", r.body);
}

/// Once keys are loaded, an unreachable IdP does not stop verification (last known good
/// keys), and the gateway stays ready.
async fn last_known_good(shape: Shape) {
    let mut s = Stack::new(shape, KeysFrom::Discovery, "jwks_refresh: 1s\n");
    s.start();
    s.fake.set_down(true);
    let st = &s;
    s.eventually(Duration::from_secs(10), "a failed background refresh", move || async move {
        st.provider_status().await["consecutive_failures"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let r = s.get("/orders", &s.token().mint(&s.key)).await;
    assert_eq!(r.status, 200, "{shape:?}: last-known-good keys during an outage: {:?}", r.body);
    assert_eq!(s.readyz().await, 200, "{shape:?}: still ready with last-known-good keys");
    let stranger = common::fakeidp::new_signer(KeyKind::Rsa2048);
    let r = s.get("/orders", &s.token().mint(&stranger)).await;
    assert_eq!((r.status, r.reason()), (401, "unknown_kid"), "{shape:?}: unknown kid while the IdP is down");
}

/// A provider unreachable (then serving garbage) at start-up: 503 `provider_unavailable`
/// and not ready, until it serves keys.
async fn provider_down_at_start(shape: Shape) {
    // Keys straight from the JWKS URL, so the garbage document is the key set itself.
    let mut s = Stack::new(shape, KeysFrom::JwksUrl, "");
    s.fake.set_down(true);
    s.start_unready();
    let token = s.token().mint(&s.key);
    let st = &s;
    for phase in ["down", "garbage"] {
        if phase == "garbage" {
            s.fake.set_down(false);
            s.fake.set_garbage(true);
            s.eventually(Duration::from_secs(10), "a JWKS fetch that reads garbage", move || async move {
                st.provider_status().await["last_error"].as_str().unwrap_or("").contains("not valid JSON")
            })
            .await;
        }
        let r = s.get("/orders", &token).await;
        assert_eq!((r.status, r.reason()), (503, "provider_unavailable"), "{shape:?}: IdP {phase} at start");
        assert_eq!(s.readyz().await, 503, "{shape:?}: IdP {phase}: not ready");
    }
    s.fake.set_garbage(false);
    s.eventually(Duration::from_secs(30), "readiness once the IdP serves keys", move || async move {
        st.readyz().await == 200
    })
    .await;
    let r = s.get("/orders", &token).await;
    assert_eq!(r.status, 200, "{shape:?}: after recovery: {:?}", r.body);
}
