//! The broker driven by an independent OpenID Connect client library: the Rust
//! `openidconnect` crate (v4), over our reqwest. Discovery, the authorization code flow
//! with PKCE through a real sign-in at the dev provider, the token exchange, ID token
//! verification (signature against the published JWKS, iss, aud, nonce, exp, at_hash)
//! by the library, userinfo and refresh. If the library accepts every step, so should
//! any standard relying party.

use crate::common;
use common::agent::*;
use common::oidc::follow;
use common::*;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

const SECRET: &str = "oidc-crate-secret-7e2a";
const REDIRECT: &str = "http://rp.test/oidc/callback";

/// The library's HTTP client: one request over reqwest, no redirects followed.
async fn send(req: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let mut rb = client().request(req.method().clone(), req.uri().to_string());
    for (k, v) in req.headers() {
        rb = rb.header(k, v);
    }
    let resp = rb.body(req.body().clone()).send().await?;
    let mut b = http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        b = b.header(k, v);
    }
    Ok(b.body(resp.bytes().await?.to_vec()).expect("a valid response"))
}

fn gateway() -> (TestEnv, SharedGateway) {
    let env = TestEnv::new();
    env.write_wf_provider(
        "\
         - { name: alice, display_name: Alice Admin, email: alice@corp.test, email_verified: true, groups: [hr], mfa: true }\n",
    );
    let text = format!(
        "listen: {{ http: 127.0.0.1:{http} }}\nadmin: 127.0.0.1:{admin}\nproviders: [wf]\n\
         broker:\n  issuer: http://127.0.0.1:{http}/broker\n  signing_key: certs/broker-signing.pem\n  clients:\n\
         \x20   - {{ client_id: rp, client_secret: \"{SECRET}\", redirect_uris: [\"{REDIRECT}\"] }}\n\
         routes: []\n",
        http = env.http_port,
        admin = env.admin_port,
    );
    env.write("routes.yaml", &text);
    let gw = SharedGateway::start(&env);
    (env, gw)
}

#[tokio::test]
async fn the_openidconnect_crate_signs_in_verifies_and_refreshes() {
    let (env, _gw) = gateway();
    let issuer = format!("http://127.0.0.1:{}/broker", env.http_port);
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &send)
        .await
        .expect("discovery is accepted");
    let rp = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("rp".into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize, csrf, nonce) = rp
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The browser part: our cookie-keeping agent through the dev provider's login.
    let back = follow(&Agent::browser(), authorize.as_str(), "alice").await;
    let q = query_of(&back);
    assert_eq!(q.get("state"), Some(csrf.secret()));
    assert_eq!(q.get("iss"), Some(&issuer));
    let code = q["code"].clone();

    let tokens = rp
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint from discovery")
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .expect("the token response is accepted");
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = rp.id_token_verifier().set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token.claims(&verifier, &nonce).expect("the ID token verifies");
    assert!(claims.subject().as_str().starts_with("wf:"), "normalised sub");
    assert_eq!(claims.email().map(|e| e.as_str()), Some("alice@corp.test"));
    assert!(claims.auth_time().is_some());
    let hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&hash), "at_hash matches");

    let info: CoreUserInfoClaims = rp
        .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
        .expect("userinfo endpoint from discovery")
        .request_async(&send)
        .await
        .expect("userinfo is accepted");
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@corp.test"));

    let refresh = tokens.refresh_token().expect("a refresh token");
    let renewed = rp
        .exchange_refresh_token(refresh)
        .expect("token endpoint")
        .request_async(&send)
        .await
        .expect("refresh is accepted");
    assert_ne!(renewed.refresh_token().map(|r| r.secret()), Some(refresh.secret()), "rotated");
    let renewed_id = renewed.id_token().expect("an ID token on refresh");
    // No nonce is echoed on refresh: accept any.
    let c = renewed_id.claims(&verifier, |_: Option<&Nonce>| Ok(())).expect("the refreshed ID token verifies");
    assert_eq!(c.subject(), claims.subject());
    // The old refresh token is spent: reuse is refused (and revokes the family).
    assert!(rp.exchange_refresh_token(refresh).unwrap().request_async(&send).await.is_err());
}
