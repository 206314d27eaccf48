//! Browser sign-in for the CIAM platforms against the real binary, through a
//! loopback OP shaped like each: an Azure AD B2C user flow (`shape: azure_b2c`: issuer
//! naming the tenant GUID, `tfp`, `emails`, `idp`, `extension_*`) and Entra External ID
//! (the Entra v2 dialect on a customer tenant). Session, identity headers upstream,
//! MFA only from the MFA-enforcing user flow, and B2C logout.
//!
//! The cookie-keeping agent is the one of tests/signin.rs (each hop asserted by hand).

use crate::common;
use common::agent::*;

use common::*;
use std::sync::LazyLock;


const APP_B2C: usize = 0;
const APP_EXT: usize = 1;
const N_APPS: usize = 2;

/// The B2C tenant GUID the dev issuer names, like `https://{t}.b2clogin.com/{guid}/v2.0/`.
const B2C_TENANT: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
/// The External ID (customer) tenant.
const EXT_TENANT: &str = "a1b2c3d4-0000-4000-8000-00000000ce11";

struct Fixture {
    env: TestEnv,
    _echo: Echoes,
    _gw: SharedGateway,
}

static FX: LazyLock<Fixture> = LazyLock::new(Fixture::start);

fn fx() -> &'static Fixture {
    &FX
}

/// The issuer of the B2C-shaped dev provider: below its OP path, the tenant GUID and
/// `v2.0/` (trailing slash included), as B2C's default issuer pattern.
fn b2c_issuer(env: &TestEnv) -> String {
    format!("{}/{B2C_TENANT}/v2.0/", env.dev_issuer("b2c"))
}

impl Fixture {
    fn start() -> Fixture {
        let echo = Echoes::start(N_APPS);
        let env = TestEnv::new();
        env.write(
            "providers/b2c.yaml",
            &format!(
                "id: b2c\nkind: dev\npopulation: customer\nshape: azure_b2c\nissuer: {iss}\nsigning_key: certs/dev-idp-customer.pem\n\
                 display_name: Contoso account\nclient_id: b2c-client\naudiences: [https://api.contoso.test]\n\
                 users:\n\
                 \x20 - {{ name: carol, display_name: Carol Customer, email: carol@gmail.example, connection: google.com, attributes: {{ loyaltyTier: gold }} }}\n\
                 \x20 - {{ name: dave, display_name: Dave Local, email: dave@example.net, mfa: true }}\n",
                iss = b2c_issuer(&env)
            ),
        );
        env.write_dev_provider(
            "ext",
            "customer",
            "entra",
            "dev-idp-customer.pem",
            &format!(
                "display_name: Fabrikam account\nclient_id: ext-client\naudiences: [api://fabrikam]\ntenant: {EXT_TENANT}\nusers:\n\
                 \x20 - {{ name: erin, display_name: Erin External, email: erin@outlook.example, email_verified: true }}\n"
            ),
        );
        let routes = format!(
            "  - name: b2c\n    match: {{ host: b2c.test }}\n    auth: session\n    upstream: [{b2c}]\n    providers: [b2c]\n    require: {{ population: customer }}\n\
             \x20 - name: b2c-ext-only\n    match: {{ host: b2c.test, path_prefix: /ext-only }}\n    auth: session\n    upstream: [{ext}]\n    providers: [ext]\n\
             \x20 - name: ext\n    match: {{ host: ext.test }}\n    auth: session\n    upstream: [{ext}]\n    providers: [ext]\n    require: {{ population: customer }}\n",
            b2c = echo.addr(APP_B2C),
            ext = echo.addr(APP_EXT),
        );
        env.write_routes(&["b2c", "ext"], &routes);
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 0, "test config is invalid:\n{out}{err}");
        let gw = SharedGateway::start(&env);
        Fixture { env, _echo: echo, _gw: gw }
    }
}

/// `http://{host}:{proxy port}{path}` on the shared gateway.
fn at(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", fx().env.http_port)
}


// --- Azure AD B2C ----------------------------------------------------------------------

#[tokio::test]
async fn b2c_user_flow_sign_in_creates_a_session_with_the_oid_and_the_first_email() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("b2c.test", "/orders")).await;
    assert!(authz.path().starts_with("/.idfabric/dev/b2c/"), "the B2C-shaped OP: {authz}");
    let callback = b.pick_user(&authz, "carol").await;
    let (page, sid) = b.finish(&callback, &at("b2c.test", "/orders")).await;
    assert_eq!(sid.len(), 43);
    let h = page.upstream();
    assert_eq!(h["x-identity-provider"], "b2c");
    assert_eq!(h["x-identity-population"], "customer");
    let sub = decoded(&h["x-identity-sub"]);
    let oid = sub.strip_prefix("b2c:").unwrap_or_else(|| panic!("{{id}}:{{oid}}: {sub}"));
    assert_eq!(oid.len(), 36, "the subject is the B2C object id (a GUID): {sub}");
    assert_eq!(oid.matches('-').count(), 4, "{sub}");
    assert_eq!(decoded(&h["x-identity-email"]), "carol@gmail.example", "from `emails`");
    assert_eq!(h["x-identity-mfa"], "false", "B2C_1_susi does not enforce MFA");

    // The session's identity: tenant from the issuer, social `idp`, the policy and `extension_*`.
    let me = b.get(&at("b2c.test", "/.idfabric/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["provider"], "b2c");
    assert_eq!(me["token_use"], "session");
    let text = me.to_string();
    assert!(text.contains(B2C_TENANT), "tenant from the issuer's GUID: {text}");
    assert!(text.contains("b2c-idp:google.com"), "idp of a social account: {text}");
    assert!(text.contains("B2C_1_susi"), "the policy is an attribute: {text}");
    assert!(text.contains("gold"), "extension_loyaltyTier: {text}");

    // The same person signs in again with the same subject.
    let again = Agent::browser();
    let (page2, _) = again.sign_in(&at("b2c.test", "/"), "carol").await;
    assert_eq!(decoded(&page2.upstream()["x-identity-sub"]), sub);
}

#[tokio::test]
async fn b2c_mfa_comes_only_from_the_mfa_enforcing_user_flow() {
    let b = Agent::browser();
    let (page, _) = b.sign_in(&at("b2c.test", "/"), "dave").await;
    let h = page.upstream();
    assert_eq!(decoded(&h["x-identity-email"]), "dave@example.net");
    assert_eq!(h["x-identity-mfa"], "true", "B2C_1_susi_mfa is configured as enforcing MFA");
    let text = b.get(&at("b2c.test", "/.idfabric/me")).await.body;
    assert!(text.contains("B2C_1_susi_mfa"), "{text}");
}

#[tokio::test]
async fn b2c_logout_ends_the_session_at_the_provider_too() {
    let b = Agent::browser();
    let (page, sid) = b.sign_in(&at("b2c.test", "/"), "carol").await;
    assert_eq!(page.status, 200);
    let r = b.log_out(&at("b2c.test", "/.idfabric/logout")).await;
    let clear = r.set_cookie(SESSION).expect("the cookie is cleared");
    assert!(clear.contains("Max-Age=0"), "{clear}");
    assert!(b.cookie("b2c.test", SESSION).is_none());
    let end = r.redirect();
    assert_eq!(end.path(), "/.idfabric/dev/b2c/logout", "RP-initiated logout at the B2C-shaped OP");
    let q = query_of(&end);
    assert_eq!(q["post_logout_redirect_uri"], at("b2c.test", "/.idfabric/logged-out"));
    assert_eq!(q["id_token_hint"].split('.').count(), 3);
    let back = b.get(end.as_str()).await.redirect();
    assert_eq!(back.as_str(), at("b2c.test", "/.idfabric/logged-out"));
    assert_eq!(b.get(back.as_str()).await.status, 200);

    // The old cookie is no session any more.
    let replay = Agent::browser();
    replay.set("b2c.test", SESSION, &sid);
    assert_eq!(replay.get(&at("b2c.test", "/")).await.redirect().path(), "/.idfabric/login");
    let api = Agent::api();
    api.set("b2c.test", SESSION, &sid);
    assert_eq!(api.get(&at("b2c.test", "/")).await.status, 401);
}

// --- Entra External ID -----------------------------------------------------------------

#[tokio::test]
async fn external_id_sign_in_reads_the_entra_v2_dialect_on_a_customer_tenant() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("ext.test", "/account")).await;
    assert!(authz.path().starts_with("/.idfabric/dev/ext/"), "{authz}");
    let callback = b.pick_user(&authz, "erin").await;
    let (page, _) = b.finish(&callback, &at("ext.test", "/account")).await;
    let h = page.upstream();
    assert_eq!(h["x-identity-provider"], "ext");
    assert_eq!(h["x-identity-population"], "customer");
    assert!(decoded(&h["x-identity-sub"]).starts_with("ext:"), "{h:?}");
    assert_eq!(decoded(&h["x-identity-email"]), "erin@outlook.example");
    let me = b.get(&at("ext.test", "/.idfabric/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains(EXT_TENANT), "the customer tenant's tid: {}", me.body);
}

#[tokio::test]
async fn a_session_only_opens_routes_that_accept_its_provider() {
    let b = Agent::browser();
    let authz = b.to_provider(&at("b2c.test", "/account")).await;
    let callback = b.pick_user(&authz, "carol").await;
    let (page, _) = b.finish(&callback, &at("b2c.test", "/account")).await;
    assert_eq!(page.upstream()["x-identity-provider"], "b2c");
    // Same host, same cookie, but this route accepts only `ext`: sign in again there.
    let r = b.get(&at("b2c.test", "/ext-only/x")).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(r.location().path(), "/.idfabric/login");
}
