//! Per-kind quirks and claim mapping, through the real binary: each kind gets one
//! gateway in front of a fake IdP and a table of named cases. A case either reads the
//! normalised identity from `/.idfabric/me`, or expects a route to admit (checking the
//! `X-Identity-*` headers the app sees) or refuse (checking the `reason`).
//! What every kind must do alike is in `conformance.rs`.

use crate::common;
use common::fakeidp::new_signer;
use common::fixtures::*;
use common::TestEnv;
use idfabric::keys::{KeyKind, Signer};
use serde_json::{json, Value};

// --- the case table -------------------------------------------------------------------

enum Want {
    /// `/.idfabric/me` answers 200 with (at least) these fields.
    Identity(Value),
    /// `GET path` reaches the app, which sees these headers.
    Admitted(&'static str, Vec<(&'static str, &'static str)>),
    /// `GET path` is refused with this status and `reason`.
    Refused(&'static str, u16, &'static str),
}

struct Case {
    name: &'static str,
    token: String,
    want: Want,
}

fn case(name: &'static str, token: String, want: Want) -> Case {
    Case { name, token, want }
}

/// Where `actual` differs from the fields `want` names (objects compared member-wise).
fn differences(path: &str, want: &Value, actual: &Value, out: &mut Vec<String>) {
    match (want, actual) {
        (Value::Object(w), Value::Object(a)) => {
            for (k, v) in w {
                differences(&format!("{path}.{k}"), v, a.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if want != actual => out.push(format!("{path}: want {want}, got {actual}")),
        _ => {}
    }
}

async fn run(s: &Stack, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        match &c.want {
            Want::Identity(want) => {
                let r = s.me(&c.token).await;
                if r.status != 200 {
                    failures.push(format!("{}: /.idfabric/me answered {} {:?}", c.name, r.status, r.body));
                    continue;
                }
                let mut diffs = Vec::new();
                differences("identity", want, &r.body, &mut diffs);
                failures.extend(diffs.into_iter().map(|d| format!("{}: {d}", c.name)));
            }
            Want::Admitted(path, headers) => {
                let r = s.get(path, &c.token).await;
                if r.status != 200 {
                    failures.push(format!("{}: {path} answered {} {:?}", c.name, r.status, r.body));
                    continue;
                }
                for (h, v) in headers {
                    if r.echoed(h) != *v {
                        failures.push(format!("{}: {h}: want {v:?}, got {:?}", c.name, r.echoed(h)));
                    }
                }
            }
            Want::Refused(path, status, reason) => {
                let r = s.get(path, &c.token).await;
                if (r.status, r.reason()) != (*status, *reason) {
                    let got = if r.status == 200 { "(admitted)".to_string() } else { r.body.to_string() };
                    failures.push(format!("{}: want {status} {reason}, got {} {got}", c.name, r.status));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{:?}:\n{}", s.shape, failures.join("\n"));
}

/// The fixture provider files are what real deployments write: `idfabric check --offline`
/// accepts every shape's file with a production-style https issuer.
#[test]
fn every_fixture_provider_file_passes_check() {
    let env = TestEnv::new();
    let ids: Vec<&str> = Shape::ALL.iter().map(|s| s.provider_id()).collect();
    for shape in Shape::ALL {
        let issuer = format!("https://idp.example{}{}", shape.issuer_path(), if matches!(shape, Shape::Auth0 | Shape::B2c) { "/" } else { "" });
        env.write(
            &format!("providers/{}.yaml", shape.provider_id()),
            &provider_yaml(shape, shape.provider_id(), &issuer, None, ""),
        );
    }
    env.write_routes(&ids, "  - name: app\n    upstream: [127.0.0.1:9]\n");
    let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");
}

// --- Entra ------------------------------------------------------------------------------

const TENANT_B: &str = "5d8e2f10-7a3c-4b9e-8f21-6c4d3b2a1e09";
const TENANT_OTHER: &str = "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e";

fn jwk_with_issuer(k: &Signer, issuer: &str) -> Value {
    let mut j = k.public_jwk().clone();
    j["issuer"] = json!(issuer);
    j
}

/// Multi-tenant Entra: issuer `{base}/{tenantid}/v2.0` with a tenant allow-list, keys
/// with and without a JWKS `issuer`, and a route that needs a group.
#[tokio::test]
async fn entra() {
    let mut s = Stack::new(Shape::Entra, KeysFrom::JwksUrl, "");
    let base = s.fake.base.clone();
    let template = format!("{base}/{{tenantid}}/v2.0");
    s.replace_provider(&format!(
        "id: {id}\nkind: entra\nissuer: \"{template}\"\naudiences: [\"{ENTRA_API}\"]\nclient_id: \"{ENTRA_CLIENT}\"\n\
         tenants: [\"{ENTRA_TID}\", \"{TENANT_B}\", \"{MSA_TENANT}\"]\nmfa_acr: [c1]\njwks_url: \"{jwks}\"\n",
        id = s.id,
        jwks = s.fake.jwks_url()
    ));
    let (templated_key, tenant_b_key) = (new_signer(KeyKind::Rsa2048), new_signer(KeyKind::Rsa2048));
    s.fake.set_raw_keys(vec![
        s.key.public_jwk().clone(),
        jwk_with_issuer(&templated_key, &template),
        jwk_with_issuer(&tenant_b_key, &format!("{base}/{TENANT_B}/v2.0")),
    ]);
    s.add_routes(&format!(
        "  - name: grp\n    match: {{ path_prefix: /grp/ }}\n    auth: bearer\n    upstream: [{}]\n\
         \x20   require: {{ groups_any: [\"{ENTRA_GROUP}\"] }}\n",
        s.echo.addr()
    ));
    s.start();
    let cases = entra_cases(&s, &templated_key, &tenant_b_key);
    run(&s, cases).await;
}

/// The baseline Entra token, issued by tenant `tid` (through the `{tenantid}` issuer).
fn in_tenant(s: &Stack, tid: &str) -> Token {
    s.token().set("tid", tid).set("iss", format!("{}/{tid}/v2.0", s.fake.base))
}

fn entra_cases(s: &Stack, templated_key: &Signer, tenant_b_key: &Signer) -> Vec<Case> {
    let k = &s.key;
    let a = || in_tenant(s, ENTRA_TID);
    let overage = a()
        .without("groups")
        .set("_claim_names", json!({"groups": "src1"}))
        .set("_claim_sources", json!({"src1": {"endpoint": "https://graph.windows.net/x/users/y/getMemberObjects"}}));
    let v1 = a()
        .set("ver", "1.0")
        .set("amr", json!(["pwd", "mfa"]))
        .set("acr", "1")
        .set("upn", "jordan_fabrikam.example#EXT#@contoso.onmicrosoft.com")
        .without("preferred_username");
    let sub = format!("{}:{ENTRA_OID}", s.id);
    vec![
        case(
            "v2 access token: oid is the subject, tid the tenant and org",
            a().mint(k),
            Want::Identity(json!({
                "sub": sub, "subject": ENTRA_OID, "provider_kind": "entra", "population": "workforce",
                "tenant": ENTRA_TID, "org": ENTRA_TID, "token_use": "access", "client_id": ENTRA_CLIENT,
                "username": "AdeleV@contoso.example", "email": null, "email_verified": null,
                "scopes": ["access_as_user", "Reports.Read"], "roles": ["Reports.Read"],
                "admin_roles": ["62e90394-69f5-4237-9190-012177145e10"],
                "groups_complete": true, "mfa": false, "amr": [], "idp": s.id,
            })),
        ),
        case(
            "allowed tenant B",
            in_tenant(s, TENANT_B).mint(k),
            Want::Identity(json!({"tenant": TENANT_B, "org": TENANT_B})),
        ),
        case(
            "tenant not in the allow-list",
            in_tenant(s, TENANT_OTHER).mint(k),
            Want::Refused("/", 401, "tenant_not_allowed"),
        ),
        case(
            "tid does not match the issuer's tenant",
            a().set("tid", TENANT_B).mint(k),
            Want::Refused("/", 401, "issuer_mismatch"),
        ),
        case(
            "tid is not a GUID",
            in_tenant(s, "contoso.example").mint(k),
            Want::Refused("/", 401, "tenant_not_allowed"),
        ),
        case(
            "key with the templated JWKS issuer",
            a().mint(templated_key),
            Want::Identity(json!({"tenant": ENTRA_TID})),
        ),
        case(
            "key bound to tenant B signs a tenant-A token",
            a().mint(tenant_b_key),
            Want::Refused("/", 401, "key_issuer_mismatch"),
        ),
        case(
            "key bound to tenant B signs a tenant-B token",
            in_tenant(s, TENANT_B).mint(tenant_b_key),
            Want::Identity(json!({"tenant": TENANT_B})),
        ),
        case(
            "groups delivered",
            a().mint(k),
            Want::Admitted(
                "/grp/x",
                vec![(
                    "x-identity-groups",
                    "2f4e6a8c-1b3d-4f5a-8c7e-9d0b2a4c6e81,7a9c1e3f-5b7d-4e9a-b1c3-d5e7f9a1b3c5",
                )],
            ),
        ),
        case(
            "group overage: groups incomplete",
            overage.mint(k),
            Want::Identity(json!({"groups": [], "groups_complete": false})),
        ),
        case(
            "group overage: group rules fail closed",
            overage.mint(k),
            Want::Refused("/grp/x", 403, "groups_incomplete"),
        ),
        case(
            "v1 token: amr pwd+mfa proves MFA, acr ignored, upn is the username",
            v1.mint(k),
            Want::Identity(json!({
                "mfa": true, "mfa_source": "amr", "amr": ["pwd", "mfa"], "acr": null,
                "username": "jordan_fabrikam.example#EXT#@contoso.onmicrosoft.com",
            })),
        ),
        case(
            "v1 token: the app sees X-Identity-Mfa true",
            v1.mint(k),
            Want::Admitted("/", vec![("x-identity-mfa", "true")]),
        ),
        case("v2 token: no amr, no MFA", a().mint(k), Want::Admitted("/", vec![("x-identity-mfa", "false")])),
        case(
            "auth context c1 (mfa_acr) proves MFA",
            a().set("acrs", json!(["c1"])).mint(k),
            Want::Identity(json!({"mfa": true, "mfa_source": "acr", "auth_context": ["c1"]})),
        ),
        case(
            "email without xms_edov: verification unknown",
            a().set("email", "adele.vance@contoso.example").mint(k),
            Want::Identity(json!({"email": "adele.vance@contoso.example", "email_verified": null})),
        ),
        case(
            "email with xms_edov: verified",
            a().set("email", "adele.vance@contoso.example").set("xms_edov", true).mint(k),
            Want::Identity(json!({"email_verified": true})),
        ),
        case(
            "personal Microsoft account tenant: customer population",
            in_tenant(s, MSA_TENANT).set("idp", "live.com").mint(k),
            Want::Identity(
                json!({"population": "customer", "user_type": "consumer", "tenant": MSA_TENANT, "idp": "msa"}),
            ),
        ),
        case(
            "guest from another tenant",
            a().set("idp", format!("https://sts.windows.net/{TENANT_B}/")).mint(k),
            Want::Identity(json!({"idp": format!("entra:{TENANT_B}"), "user_type": "guest"})),
        ),
        case(
            "app-only token: service principal, roles are permissions",
            a().set("idtyp", "app").without("scp").set("roles", json!(["Orders.Read.All"])).mint(k),
            Want::Identity(json!({"principal_type": "service", "permissions": ["Orders.Read.All"], "roles": []})),
        ),
    ]
}

/// Single-tenant Entra whose allow-list also names a second tenant: a token must still
/// carry the issuer's own tenant in `tid` (Microsoft's step 4: first path segment of
/// `iss` == `tid`).
#[tokio::test]
async fn entra_single_tenant() {
    let mut s = Stack::new(Shape::Entra, KeysFrom::Discovery, "");
    let yaml = provider_yaml(Shape::Entra, &s.id, &s.issuer, None, "")
        .replace(&format!("tenants: [\"{ENTRA_TID}\"]"), &format!("tenants: [\"{ENTRA_TID}\", \"{TENANT_B}\"]"));
    s.replace_provider(&yaml);
    s.start();
    let k = &s.key;
    let cases = vec![
        case("the issuer's own tenant", s.token().mint(k), Want::Identity(json!({"tenant": ENTRA_TID, "org": null}))),
        case(
            "another allowed tenant's tid under this issuer",
            s.token().set("tid", TENANT_B).mint(k),
            Want::Refused("/", 401, "issuer_mismatch"),
        ),
        case(
            "another allowed tenant's issuer",
            in_tenant(&s, TENANT_B).mint(k),
            Want::Refused("/", 401, "unknown_issuer"),
        ),
    ];
    run(&s, cases).await;
}

// --- Okta -------------------------------------------------------------------------------

/// A custom authorization server (`/oauth2/default`) plus, on the same org, the org
/// authorization server, whose access tokens only Okta may validate.
#[tokio::test]
async fn okta() {
    let mut s = Stack::new(Shape::Okta, KeysFrom::JwksUrl, "");
    let org = s.fake.base.clone();
    let yaml = provider_yaml(Shape::Okta, "okta-org", &org, Some(&s.fake.jwks_url()), "")
        .replace(&format!("audiences: [\"{OKTA_AUDIENCE}\"]"), &format!("audiences: [\"{org}\"]"));
    s.add_provider("okta-org", &yaml);
    s.start();
    let cases = okta_cases(&s, &org);
    run(&s, cases).await;
}

fn okta_cases(s: &Stack, org: &str) -> Vec<Case> {
    let k = &s.key;
    let t = || s.token();
    vec![
        case(
            "custom-AS access token: uid is the subject, sub the username, scp an array",
            t().mint(k),
            Want::Identity(json!({
                "sub": format!("{}:{OKTA_UID}", s.id), "subject": OKTA_UID, "username": OKTA_LOGIN,
                "scopes": ["openid", "profile", "email", "reports.read"], "client_id": OKTA_CID,
                "token_use": "access", "tenant": "127.0.0.1", "population": "workforce",
                "groups": ["Everyone", "gateway-admins"], "groups_complete": true, "mfa": false,
            })),
        ),
        case(
            "no groups claim: groups incomplete",
            t().without("groups").mint(k),
            Want::Identity(json!({"groups": [], "groups_complete": false})),
        ),
        case(
            "acr urn:okta:loa:2fa:any proves MFA",
            t().set("acr", "urn:okta:loa:2fa:any").mint(k),
            Want::Identity(json!({"mfa": true, "mfa_source": "acr", "acr": "urn:okta:loa:2fa:any"})),
        ),
        case(
            "acr 2fa:any:ifpossible does not prove MFA",
            t().set("acr", "urn:okta:loa:2fa:any:ifpossible").mint(k),
            Want::Identity(json!({"mfa": false})),
        ),
        case(
            "Okta Verify amr normalised",
            t().set("amr", json!(["pwd", "okta_verify", "otp", "mfa"])).mint(k),
            Want::Identity(json!({"amr": ["pwd", "otp", "mfa"], "mfa": true, "mfa_source": "amr"})),
        ),
        case(
            "client-credentials token (no uid): a service",
            t().without("uid").set("sub", OKTA_CID).without("groups").mint(k),
            Want::Identity(json!({"principal_type": "service", "subject": OKTA_CID, "username": null})),
        ),
        case(
            "org-AS access token recognised by typ",
            t().header("typ", "application/okta-internal-at+jwt").mint(k),
            Want::Refused("/", 401, "okta_org_access_token"),
        ),
        case(
            "org-AS access token recognised by its issuer",
            t().set("iss", org).set("aud", org).mint(k),
            Want::Refused("/", 401, "okta_org_access_token"),
        ),
    ]
}

// --- Auth0 ------------------------------------------------------------------------------

#[tokio::test]
/// Roles mapped from the namespaced claim with `claims:`; a custom domain of the same
/// tenant listed in `issuers:`.
async fn auth0() {
    let mut s = Stack::new(Shape::Auth0, KeysFrom::JwksUrl, "");
    let custom_domain = format!("http://localhost:{}/", s.fake.port);
    let extra = format!("claims:\n  roles: \"{AUTH0_ROLES_CLAIM}\"\nissuers: [\"{custom_domain}\"]\n");
    s.replace_provider(&provider_yaml(Shape::Auth0, &s.id, &s.issuer, Some(&s.fake.jwks_url()), &extra));
    s.start();
    let cases = auth0_cases(&s, &custom_domain);
    run(&s, cases).await;
}

fn auth0_cases(s: &Stack, custom_domain: &str) -> Vec<Case> {
    let k = &s.key;
    let t = || s.token();
    vec![
        case(
            "aud array; roles from the namespaced claim; idp from the sub prefix",
            t().mint(k),
            Want::Identity(json!({
                "sub": format!("{}:{AUTH0_SUB}", s.id), "subject": AUTH0_SUB, "provider_kind": "auth0",
                "population": "customer", "tenant": AUTH0_TENANT, "org": "org_Xb7Pq2LmN4sT9vWa",
                "roles": ["org-admin"], "idp": "auth0:google-oauth2", "idp_kind": "social",
                "permissions": ["read:reports", "write:reports"],
                "scopes": ["openid", "profile", "email", "read:reports"],
                "client_id": AUTH0_CLIENT, "token_use": "access", "principal_type": "user",
            })),
        ),
        case("aud as a plain string", t().set("aud", AUTH0_API).mint(k), Want::Identity(json!({"subject": AUTH0_SUB}))),
        case(
            "database user: native to the provider",
            t().set("sub", "auth0|665b2f9e4c1d8a0012ab34cd").mint(k),
            Want::Identity(json!({"idp": s.id, "idp_kind": "native"})),
        ),
        case(
            "enterprise SAML connection",
            t().set("sub", "samlp|globex-saml|s.rivera@globex.example").mint(k),
            Want::Identity(json!({"idp": "auth0:samlp:globex-saml", "idp_kind": "enterprise"})),
        ),
        case(
            "client-credentials token (gty): a service",
            t().set("sub", format!("{AUTH0_CLIENT}@clients"))
                .set("gty", "client-credentials")
                .set("aud", AUTH0_API)
                .without("org_id")
                .without(AUTH0_ROLES_CLAIM)
                .mint(k),
            Want::Identity(json!({"principal_type": "service", "roles": []})),
        ),
        case(
            "RFC 9068 profile: client_id, jti, typ at+jwt",
            t().without("azp")
                .set("client_id", AUTH0_CLIENT)
                .set("jti", "73WakrfVbNJBaAmhQtEeDv")
                .header("typ", "at+jwt")
                .mint(k),
            Want::Identity(
                json!({"client_id": AUTH0_CLIENT, "token_id": "73WakrfVbNJBaAmhQtEeDv", "token_use": "access"}),
            ),
        ),
        case(
            "custom domain listed in issuers: same tenant",
            t().set("iss", custom_domain).mint(k),
            Want::Identity(json!({"issuer": custom_domain, "tenant": AUTH0_TENANT, "subject": AUTH0_SUB})),
        ),
        case(
            "issuer without the trailing slash is another issuer",
            t().set("iss", s.issuer.trim_end_matches('/')).mint(k),
            Want::Refused("/", 401, "unknown_issuer"),
        ),
    ]
}

/// `idfabric check --offline` refuses an Auth0 issuer without its trailing slash.
#[test]
fn auth0_issuer_needs_trailing_slash() {
    let cases =
        [("with slash", "https://acme-prod.us.auth0.com/", 0), ("without slash", "https://acme-prod.us.auth0.com", 1)];
    for (name, issuer, want) in cases {
        let env = TestEnv::new();
        env.write("providers/shop-auth0.yaml", &provider_yaml(Shape::Auth0, "shop-auth0", issuer, None, ""));
        env.write_routes(&["shop-auth0"], "  - name: app\n    upstream: [127.0.0.1:9]\n");
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, want, "{name}: stdout {out}\nstderr {err}");
        if want == 1 {
            let text = format!("{out}{err}");
            assert!(
                text.contains("issuer") && text.contains("end with `/`"),
                "{name}: the error names the problem: {text}"
            );
        }
    }
}

// --- Cognito ----------------------------------------------------------------------------

const ID_POOL: &str = "eu-west-1_Id4Pool00";

/// One pool accepting access tokens (the default) and one accepting ID tokens.
#[tokio::test]
async fn cognito() {
    let mut s = Stack::new(Shape::Cognito, KeysFrom::JwksUrl, "");
    let id_issuer = format!("{}/{ID_POOL}", s.fake.base);
    let yaml = provider_yaml(Shape::Cognito, "shop-cognito-id", &id_issuer, Some(&s.fake.jwks_url()), "")
        .replace("token_use: access", "token_use: id");
    s.add_provider("shop-cognito-id", &yaml);
    s.start();
    let cases = cognito_cases(&s, &id_issuer);
    run(&s, cases).await;
}

fn cognito_cases(s: &Stack, id_issuer: &str) -> Vec<Case> {
    let k = &s.key;
    let t = || s.token();
    let id_token = || Token::from_claims(Shape::Cognito, cognito_id_claims(id_issuer, COGNITO_CLIENT));
    vec![
        case(
            "access token: auto-group stripped, bound by client_id",
            t().mint(k),
            Want::Identity(json!({
                "sub": format!("{}:{COGNITO_SUB}", s.id), "subject": COGNITO_SUB, "tenant": COGNITO_POOL,
                "groups": ["gateway-admins"], "groups_complete": true, "token_use": "access",
                "client_id": COGNITO_CLIENT, "username": "Google_104839216750183926471",
                "scopes": ["openid", "email", "profile", "https://api.gateway.example.com/reports.read"],
                "principal_type": "user", "population": "customer",
            })),
        ),
        case(
            "ID token on a token_use: access provider",
            Token::from_claims(Shape::Cognito, cognito_id_claims(&s.issuer, COGNITO_CLIENT)).mint(k),
            Want::Refused("/", 401, "wrong_token_use"),
        ),
        case(
            "access token on a token_use: id provider",
            t().set("iss", id_issuer).mint(k),
            Want::Refused("/", 401, "wrong_token_use"),
        ),
        case(
            "ID token: string email_verified coerced, custom:* become attributes",
            id_token().set("email_verified", "true").mint(k),
            Want::Identity(json!({
                "provider": "shop-cognito-id", "tenant": ID_POOL, "token_use": "id", "client_id": COGNITO_CLIENT,
                "email": "mei.chen@gmail.com", "email_verified": true,
                "username": "Google_104839216750183926471", "groups": ["gateway-admins"],
                "idp": "cognito:Google", "idp_kind": "social",
                "attributes": {"tenant_id": "tnt_7Hq2"},
            })),
        ),
        case(
            "ID token: \"false\" string",
            id_token().set("email_verified", "false").mint(k),
            Want::Identity(json!({"email_verified": false})),
        ),
        case(
            "ID token for another app client",
            id_token().set("aud", "someotherclient000000000000").mint(k),
            Want::Refused("/", 401, "audience_mismatch"),
        ),
        case(
            "native user: no auto-group, no identities",
            t().set("cognito:groups", json!(["gateway-admins"])).set("username", COGNITO_SUB).mint(k),
            Want::Identity(json!({"idp": s.id, "idp_kind": "native", "groups": ["gateway-admins"]})),
        ),
        case(
            "client-credentials access token: a service",
            t().set("sub", COGNITO_CLIENT)
                .without("username")
                .without("cognito:groups")
                .set("scope", "https://api.gateway.example.com/reports.read")
                .mint(k),
            Want::Identity(json!({"principal_type": "service", "subject": COGNITO_CLIENT})),
        ),
    ]
}

// --- Azure AD B2C -----------------------------------------------------------------------

const B2C_CUSTOM_POLICY: &str = "B2C_1A_signup_signin";
const B2C_MFA_POLICY: &str = "B2C_1_susi_mfa";

/// Serves one JWKS per B2C policy at `/{policy}/keys` (B2C keys are per policy; the
/// shared fake IdP serves one set only).
struct PolicyKeys {
    port: u16,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl PolicyKeys {
    fn start(sets: Vec<(&str, Vec<&Signer>)>) -> PolicyKeys {
        use std::io::{BufRead, BufReader, Write};
        let docs: std::collections::HashMap<String, String> = sets
            .into_iter()
            .map(|(p, keys)| {
                let keys: Vec<Value> = keys.iter().map(|k| k.public_jwk().clone()).collect();
                (format!("/{p}/keys"), json!({ "keys": keys }).to_string())
            })
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let h = hits.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).is_err() || l == "\r\n" || l.is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                *h.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                let (status, body) = match docs.get(&path) {
                    Some(d) => (200, d.clone()),
                    None => (404, "{}".to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        PolicyKeys { port, hits }
    }

    fn template(&self) -> String {
        format!("http://127.0.0.1:{}/{{policy}}/keys", self.port)
    }

    fn hits(&self, policy: &str) -> usize {
        *self.hits.lock().unwrap().get(&format!("/{policy}/keys")).unwrap_or(&0)
    }
}

/// Three policies with per-policy keys (a custom policy signs with its own key
/// container), an MFA policy, and a custom domain listed in `issuers`.
#[tokio::test]
async fn azure_b2c() {
    let mut s = Stack::new(Shape::B2c, KeysFrom::JwksUrl, "");
    let custom_key = new_signer(KeyKind::Rsa2048);
    let policy_keys = PolicyKeys::start(vec![
        (B2C_POLICY, vec![&s.key]),
        (B2C_MFA_POLICY, vec![&s.key]),
        (B2C_CUSTOM_POLICY, vec![&custom_key]),
    ]);
    let custom_domain = format!("http://b2c.localhost:{}/{B2C_TID}/v2.0/", s.fake.port);
    s.replace_provider(&format!(
        "id: {id}\nkind: azure_b2c\nissuer: \"{iss}\"\nissuers: [\"{custom_domain}\"]\n\
         client_id: \"{B2C_CLIENT}\"\naudiences: [\"{B2C_API}\"]\n\
         policies: [{B2C_POLICY}, {B2C_MFA_POLICY}, {B2C_CUSTOM_POLICY}]\nmfa_policies: [{B2C_MFA_POLICY}]\n\
         jwks_url: \"{jwks}\"\n",
        id = s.id,
        iss = s.issuer,
        jwks = policy_keys.template(),
    ));
    s.start();
    for p in [B2C_POLICY, B2C_MFA_POLICY, B2C_CUSTOM_POLICY] {
        assert!(policy_keys.hits(p) > 0, "the keys of policy {p} were fetched");
    }
    let cases = b2c_cases(&s, &custom_key, &custom_domain);
    run(&s, cases).await;
}

fn b2c_cases(s: &Stack, custom_key: &Signer, custom_domain: &str) -> Vec<Case> {
    let k = &s.key;
    let t = || s.token();
    let custom_policy = || {
        t().set("iss", custom_domain)
            .without("tfp")
            .set("acr", B2C_CUSTOM_POLICY.to_ascii_lowercase())
            .without("emails")
            .set("email", "tomas.alvarez@gmail.com")
            .set("tid", B2C_TID)
            .without("oid")
    };
    let access = t()
        .set("aud", B2C_API)
        .set("scp", "orders.read")
        .set("azp", B2C_CLIENT)
        .without("idp")
        .without("emails");
    let other_host = format!("http://localhost:{}/{B2C_TID}/v2.0/", s.fake.port);
    vec![
        case(
            "user-flow ID token: oid, emails[0], social idp, extension_* attributes, no MFA",
            t().mint(k),
            Want::Identity(json!({
                "sub": format!("{}:{B2C_OID}", s.id), "subject": B2C_OID, "provider_kind": "azure_b2c",
                "population": "customer", "tenant": B2C_TID, "email": "tomas.alvarez@gmail.com",
                "email_verified": null, "name": "Tomás Alvarez", "idp": "b2c-idp:google.com", "idp_kind": "social",
                "token_use": "id", "client_id": B2C_CLIENT, "mfa": false, "mfa_source": "none", "acr": null,
                "amr": [], "issuer": s.issuer,
                "attributes": {"LoyaltyTier": "gold", "b2c_policy": B2C_POLICY, "emails": ["tomas.alvarez@gmail.com"]},
            })),
        ),
        case(
            "policy name in other casing",
            t().set("tfp", B2C_POLICY.to_ascii_lowercase()).mint(k),
            Want::Identity(json!({"subject": B2C_OID})),
        ),
        case(
            "token of a policy not configured",
            t().set("tfp", "B2C_1_passwordreset").mint(k),
            Want::Refused("/", 401, "policy_not_allowed"),
        ),
        case("no tfp nor acr", t().without("tfp").mint(k), Want::Refused("/", 401, "missing_claim")),
        case(
            "MFA policy: mfa true from the configured policy",
            t().set("tfp", B2C_MFA_POLICY).mint(k),
            Want::Identity(json!({"mfa": true, "mfa_source": "acr", "acr": null})),
        ),
        case(
            "acr (a policy name) is never MFA evidence",
            t().without("tfp").set("acr", B2C_POLICY).mint(k),
            Want::Identity(json!({"mfa": false, "acr": null, "attributes": {"b2c_policy": B2C_POLICY}})),
        ),
        case(
            "custom policy via the custom domain, signed with its own key: acr, email, tid, sub",
            custom_policy().mint(custom_key),
            Want::Identity(json!({
                "subject": B2C_OID, "issuer": custom_domain, "tenant": B2C_TID,
                "email": "tomas.alvarez@gmail.com", "attributes": {"b2c_policy": "b2c_1a_signup_signin"},
            })),
        ),
        case(
            "custom policy whose tid is not the issuer's tenant",
            custom_policy().set("tid", ENTRA_TID).mint(custom_key),
            Want::Refused("/", 401, "issuer_mismatch"),
        ),
        case(
            "user-flow token signed with the key only the custom policy publishes",
            t().mint(custom_key),
            Want::Refused("/", 401, "key_policy_mismatch"),
        ),
        case(
            "custom policy token signed with the user flows' key",
            custom_policy().mint(k),
            Want::Refused("/", 401, "key_policy_mismatch"),
        ),
        case(
            "the other host variant, not configured",
            t().set("iss", other_host).mint(k),
            Want::Refused("/", 401, "unknown_issuer"),
        ),
        case(
            "issuer without its trailing slash",
            t().set("iss", s.issuer.trim_end_matches('/')).mint(k),
            Want::Refused("/", 401, "unknown_issuer"),
        ),
        case(
            "legacy sub 'Not supported currently' without oid",
            t().without("oid").set("sub", "Not supported currently. Use oid claim.").mint(k),
            Want::Refused("/", 401, "invalid_subject"),
        ),
        case(
            "access token for the API: scp, azp",
            access.mint(k),
            Want::Identity(json!({
                "token_use": "access", "scopes": ["orders.read"], "client_id": B2C_CLIENT,
                "idp": s.id, "idp_kind": "native", "email": null,
            })),
        ),
        case(
            "another application's token",
            t().set("aud", "0f0e0d0c-0b0a-4090-8070-605040302010").mint(k),
            Want::Refused("/", 401, "audience_mismatch"),
        ),
        case(
            "newUser and extension_* attributes",
            t().set("newUser", true).set("extension_OrgId", "org_17").set("idp_access_token", "secret").mint(k),
            Want::Identity(json!({
                "attributes": {"new_user": true, "OrgId": "org_17", "idp_access_token": null, "LoyaltyTier": "gold"},
            })),
        ),
        case(
            "federated Entra tenant idp",
            t().set("idp", format!("https://sts.windows.net/{ENTRA_TID}/")).mint(k),
            Want::Identity(json!({"idp": format!("entra:{ENTRA_TID}"), "idp_kind": "enterprise"})),
        ),
    ]
}

/// What `idfabric check --offline` says about B2C provider files.
#[test]
fn azure_b2c_config_errors() {
    let iss = format!("https://contosoretail.b2clogin.com/{B2C_TID}/v2.0/");
    let base = format!("id: shop-b2c\nkind: azure_b2c\nclient_id: \"{B2C_CLIENT}\"\n");
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("minimal: discovery derived from the issuer", format!("{base}issuer: {iss}\npolicies: [B2C_1_susi]\n"), None),
        ("policies missing", format!("{base}issuer: {iss}\n"), Some("policies")),
        (
            "issuer without the trailing slash",
            format!("{base}issuer: {}\npolicies: [B2C_1_susi]\n", iss.trim_end_matches('/')),
            Some("end with `/`"),
        ),
        (
            "two policies, one JWKS URL",
            format!("{base}issuer: {iss}\npolicies: [B2C_1_susi, B2C_1_edit]\njwks_url: https://k.example/keys\n"),
            Some("{policy}"),
        ),
        (
            "mfa policy not among the policies",
            format!("{base}issuer: {iss}\npolicies: [B2C_1_susi]\nmfa_policies: [B2C_1_mfa]\n"),
            Some("mfa_policies"),
        ),
        ("mfa_acr is meaningless", format!("{base}issuer: {iss}\npolicies: [B2C_1_susi]\nmfa_acr: [B2C_1_susi]\n"), Some("mfa_acr")),
        (
            "extra issuer of another tenant",
            format!("{base}issuer: {iss}\npolicies: [B2C_1_susi]\nissuers: [\"https://login.contoso.example/{ENTRA_TID}/v2.0/\"]\n"),
            Some("tenant"),
        ),
        ("unknown key", format!("{base}issuer: {iss}\npolicies: [B2C_1_susi]\ntenants: [x]\n"), Some("tenants")),
    ];
    for (name, yaml, want_err) in cases {
        let env = TestEnv::new();
        env.write("providers/shop-b2c.yaml", &yaml);
        env.write_routes(&["shop-b2c"], "  - name: app\n    upstream: [127.0.0.1:9]\n");
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        match want_err {
            None => assert_eq!(code, 0, "{name}: stdout {out}\nstderr {err}"),
            Some(text) => {
                assert_eq!(code, 1, "{name}: must fail: stdout {out}\nstderr {err}");
                assert!(format!("{out}{err}").contains(text), "{name}: the error names `{text}`: {out}{err}");
            }
        }
    }
    // The derived per-policy discovery URL.
    let env = TestEnv::new();
    env.write("providers/shop-b2c.yaml", &format!("{base}issuer: {iss}\npolicies: [B2C_1_susi]\n"));
    env.write_routes(&["shop-b2c"], "  - name: app\n    upstream: [127.0.0.1:9]\n");
    let config = idfabric::config::load(&env.routes_path(), idfabric::providers::KINDS).unwrap();
    assert_eq!(
        config.providers[0].discovery_url.as_deref(),
        Some(format!("https://contosoretail.b2clogin.com/{B2C_TID}/{{policy}}/v2.0/.well-known/openid-configuration").as_str())
    );
    assert_eq!(config.providers[0].population, idfabric::identity::Population::Customer);
}

// --- Entra External ID ------------------------------------------------------------------

const CIAM_TID: &str = "7e1f3a5c-9b2d-4e6f-8a0c-2d4f6b8e0a13";
const CIAM_CLIENT: &str = "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e";
const CIAM_OID: &str = "2a4c6e8f-0b1d-4f3a-9c5e-7b9d1f3a5c7e";

/// An External ID ID token for `issuer`, with the claims Microsoft documents for CIAM
/// tenants (<https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference>).
fn ciam_id_token(issuer: &str) -> Token {
    let iat = now() - 300;
    Token::from_claims(
        Shape::Entra,
        json!({
            "aud": CIAM_CLIENT, "iss": issuer, "iat": iat, "nbf": iat, "exp": now() + 3600,
            "aio": "AZQAa/8XBBBBx2Lm9Qr4Tn7Vb1Zc5Wd8Kp3Hf6Js0Rg4Yt7Ue1Io9",
            "email": "jamie.ortiz@example.net", "loyaltyNumber": "LN-448812", "name": "Jamie Ortiz",
            "nonce": "Vb4Nw8Qc2Lx6Rz9T", "oid": CIAM_OID, "preferred_username": "jamie.ortiz@example.net",
            "rh": "1.AXoAXDofflubbk6KDC1PtugKExzV5fOo-5xLjQ4fKjtMXW56AAB6AA.",
            "roles": ["Customer.Premium"], "sid": "004f8a2c-6e1b-4d3f-9a7c-5e2b8d1f4a6c",
            "sub": "Tm9uUGFpcndpc2VDdXN0b21lclN1YmplY3QwMQ", "tid": CIAM_TID,
            "uti": "pQ7rS2tU9vW4xY1zA8bCAA", "ver": "2.0",
        }),
    )
}

/// `kind: entra, variant: external`: the tenant GUID is the issuer's host label (here
/// `{tid}.localhost`), the Entra v2 mapping is reused, population defaults to customer;
/// a workforce Entra provider of the same tenant runs beside it with its own keys.
#[tokio::test]
async fn entra_external() {
    let mut s = Stack::new(Shape::Entra, KeysFrom::JwksUrl, "");
    let ciam_iss = format!("http://{CIAM_TID}.localhost:{}/{CIAM_TID}/v2.0", s.fake.port);
    s.replace_provider(&format!(
        "id: {id}\nkind: entra\nvariant: external\nissuer: \"{ciam_iss}\"\nclient_id: \"{CIAM_CLIENT}\"\n\
         audiences: [\"{CIAM_CLIENT}\"]\njwks_url: \"{jwks}\"\n",
        id = s.id,
        jwks = s.fake.jwks_url()
    ));
    let workforce = common::fakeidp::FakeIdp::start(&format!("/{CIAM_TID}/v2.0"));
    let workforce_key = new_signer(KeyKind::Rsa2048);
    workforce.set_keys(&[&workforce_key]);
    s.add_provider(
        "corp-entra-wf",
        &format!(
            "id: corp-entra-wf\nkind: entra\nissuer: \"{}\"\nclient_id: \"{CIAM_CLIENT}\"\naudiences: [\"{CIAM_CLIENT}\"]\njwks_url: \"{}\"\n",
            workforce.issuer,
            workforce.jwks_url()
        ),
    );
    s.start();
    let k = &s.key;
    let t = || ciam_id_token(&ciam_iss);
    let cases = vec![
        case(
            "External ID ID token: oid, tid from the GUID issuer, customer population",
            t().mint(k),
            Want::Identity(json!({
                "sub": format!("{}:{CIAM_OID}", s.id), "subject": CIAM_OID, "provider_kind": "entra",
                "population": "customer", "tenant": CIAM_TID, "issuer": ciam_iss, "email": "jamie.ortiz@example.net",
                "username": "jamie.ortiz@example.net", "roles": ["Customer.Premium"], "token_use": "id",
                "client_id": CIAM_CLIENT, "mfa": false,
            })),
        ),
        case(
            "tid differs from the issuer's tenant",
            t().set("tid", ENTRA_TID).mint(k),
            Want::Refused("/", 401, "issuer_mismatch"),
        ),
        case(
            "the subdomain instead of the tenant GUID as host label",
            t().set("iss", format!("http://contosofans.localhost:{}/{CIAM_TID}/v2.0", s.fake.port)).mint(k),
            Want::Refused("/", 401, "unknown_issuer"),
        ),
        case(
            "an External ID token signed with the workforce keys",
            t().mint(&workforce_key),
            Want::Refused("/", 401, "unknown_kid"),
        ),
        case(
            "the workforce provider still takes its own tokens (workforce population)",
            ciam_id_token(&workforce.issuer).mint(&workforce_key),
            Want::Identity(json!({"provider": "corp-entra-wf", "population": "workforce", "tenant": CIAM_TID})),
        ),
        case(
            "a workforce-issuer token signed with the External ID keys",
            ciam_id_token(&workforce.issuer).mint(k),
            Want::Refused("/", 401, "unknown_kid"),
        ),
    ];
    run(&s, cases).await;
}

/// `idfabric check --offline`: the ciamlogin issuer must carry the tenant GUID as its host label.
#[test]
fn entra_external_issuer_shape() {
    let cases = [
        ("GUID host label", format!("https://{CIAM_TID}.ciamlogin.com/{CIAM_TID}/v2.0"), 0),
        ("subdomain host label", format!("https://contosofans.ciamlogin.com/{CIAM_TID}/v2.0"), 1),
    ];
    for (name, issuer, want) in cases {
        let env = TestEnv::new();
        env.write(
            "providers/fans.yaml",
            &format!("id: fans\nkind: entra\nvariant: external\nissuer: {issuer}\naudiences: [\"{CIAM_CLIENT}\"]\n"),
        );
        env.write_routes(&["fans"], "  - name: app\n    upstream: [127.0.0.1:9]\n");
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, want, "{name}: stdout {out}\nstderr {err}");
    }
}

// --- Firebase ---------------------------------------------------------------------------

const FIREBASE_DEV_PROJECT: &str = "acme-retail-dev";

/// A tenant-bound provider for project `acme-retail-prod` and, on the same (shared!)
/// keys, a project-level provider for `acme-retail-dev` that allows anonymous users.
#[tokio::test]
async fn firebase() {
    let mut s = Stack::new(Shape::Firebase, KeysFrom::JwksUrl, "claims:\n  roles: org_role\n");
    let dev_iss = format!("{}/{FIREBASE_DEV_PROJECT}", s.fake.base);
    s.add_provider(
        "app-firebase-dev",
        &format!(
            "id: app-firebase-dev\nkind: firebase\nproject_id: {FIREBASE_DEV_PROJECT}\nissuer: \"{dev_iss}\"\n\
             allow_anonymous: true\njwks_url: \"{}\"\n",
            s.fake.jwks_url()
        ),
    );
    s.start();
    let cases = firebase_cases(&s, &dev_iss);
    run(&s, cases).await;
}

fn firebase_cases(s: &Stack, dev_iss: &str) -> Vec<Case> {
    let k = &s.key;
    let t = || s.token();
    let fb = |provider: &str, tenant: Option<&str>| {
        let mut f = json!({"identities": {}, "sign_in_provider": provider});
        if let Some(tn) = tenant {
            f["tenant"] = json!(tn);
        }
        f
    };
    let dev = || t().set("iss", dev_iss).set("aud", FIREBASE_DEV_PROJECT).set("firebase", fb("password", None));
    vec![
        case(
            "GCIP tenant user, Google + SMS second factor",
            t().mint(k),
            Want::Identity(json!({
                "sub": format!("{}:{FIREBASE_UID}", s.id), "subject": FIREBASE_UID, "provider_kind": "firebase",
                "population": "customer", "tenant": format!("{FIREBASE_PROJECT}/tenants/{FIREBASE_TENANT}"),
                "idp": "firebase:google.com", "idp_kind": "social", "email": "lena.fischer@gmail.com",
                "email_verified": true, "name": "Lena Fischer", "mfa": true, "mfa_source": "amr",
                "amr": ["fed", "sms", "mfa"], "acr": null, "token_use": "id", "client_id": null,
                "roles": ["store_manager"],
                "attributes": {
                    "org_role": "store_manager", "org_id": "org_4821", "sign_in_provider": "google.com",
                    "sign_in_second_factor": "phone", "firebase_tenant": FIREBASE_TENANT, "user_id": null,
                    "firebase": null,
                },
            })),
        ),
        case(
            "no second factor: no MFA",
            t().set("firebase", fb("password", Some(FIREBASE_TENANT))).mint(k),
            Want::Identity(json!({"mfa": false, "mfa_source": "none", "amr": ["pwd"], "idp_kind": "native"})),
        ),
        case(
            "another project's token on the shared keys (its own issuer)",
            t().set("iss", format!("{}/evil-project", s.fake.base)).set("aud", "evil-project").mint(k),
            Want::Refused("/", 401, "unknown_issuer"),
        ),
        case(
            "our issuer, another project's audience",
            t().set("aud", "evil-project").mint(k),
            Want::Refused("/", 401, "audience_mismatch"),
        ),
        case(
            "the dev project's issuer with the prod audience",
            dev().set("aud", FIREBASE_PROJECT).mint(k),
            Want::Refused("/", 401, "audience_mismatch"),
        ),
        case(
            "aud as an array",
            t().set("aud", json!([FIREBASE_PROJECT])).mint(k),
            Want::Refused("/", 401, "audience_mismatch"),
        ),
        case(
            "the dev project's own token: project-level user",
            dev().mint(k),
            Want::Identity(json!({"provider": "app-firebase-dev", "tenant": FIREBASE_DEV_PROJECT, "idp": "firebase:password"})),
        ),
        case(
            "tenant not in the allow-list",
            t().set("firebase", fb("google.com", Some("us-stores-q1w2e"))).mint(k),
            Want::Refused("/", 401, "tenant_not_allowed"),
        ),
        case(
            "project-level user on a tenant-bound provider",
            t().set("firebase", fb("google.com", None)).mint(k),
            Want::Refused("/", 401, "tenant_not_allowed"),
        ),
        case(
            "tenant user on a project-level provider",
            dev().set("firebase", fb("password", Some(FIREBASE_TENANT))).mint(k),
            Want::Refused("/", 401, "tenant_not_allowed"),
        ),
        case(
            "anonymous user where not allowed",
            t().without("email").set("firebase", fb("anonymous", Some(FIREBASE_TENANT))).mint(k),
            Want::Refused("/", 401, "anonymous_not_allowed"),
        ),
        case(
            "anonymous user where allowed: marked",
            dev().without("email").set("firebase", fb("anonymous", None)).mint(k),
            Want::Identity(json!({
                "provider": "app-firebase-dev", "idp": "firebase:anonymous", "idp_kind": "native",
                "attributes": {"anonymous": true},
            })),
        ),
        case(
            "session cookie where an ID token is expected",
            t().set("iss", format!("https://session.firebase.google.com/{FIREBASE_PROJECT}")).mint(k),
            Want::Refused("/", 401, "firebase_session_cookie"),
        ),
        case(
            "auth_time in the future",
            t().set("auth_time", now() + 600).mint(k),
            Want::Refused("/", 401, "auth_time_in_future"),
        ),
        case("auth_time missing", t().without("auth_time").mint(k), Want::Refused("/", 401, "missing_claim")),
        case("sub of 129 characters", t().set("sub", "a".repeat(129)).mint(k), Want::Refused("/", 401, "invalid_subject")),
        case(
            "sub of 128 characters",
            t().set("sub", "a".repeat(128)).mint(k),
            Want::Identity(json!({"subject": "a".repeat(128)})),
        ),
        case("empty sub", t().set("sub", "").mint(k), Want::Refused("/", 401, "missing_claim")),
        case(
            "no kid (custom-token style)",
            t().header("kid", Value::Null).mint(k),
            Want::Refused("/", 401, "malformed_token"),
        ),
        case("signed with ES256", t().mint(&s.ec), Want::Refused("/", 401, "alg_not_allowed")),
    ]
}

/// Defaults: issuer, audience and Google's JWKS from `project_id` alone; population customer.
#[test]
fn firebase_defaults_and_config_errors() {
    let env = TestEnv::new();
    env.write("providers/app-firebase.yaml", "id: app-firebase\nkind: firebase\nproject_id: acme-retail-prod\n");
    env.write_routes(&["app-firebase"], "  - name: app\n    upstream: [127.0.0.1:9]\n");
    let config = idfabric::config::load(&env.routes_path(), idfabric::providers::KINDS).unwrap();
    let p = &config.providers[0];
    assert_eq!(p.issuer, "https://securetoken.google.com/acme-retail-prod");
    assert_eq!(p.audiences, vec!["acme-retail-prod".to_string()]);
    assert_eq!(p.jwks_url.as_deref(), Some(idfabric::providers::firebase::JWKS_URL));
    assert_eq!(p.population, idfabric::identity::Population::Customer);
    for (name, extra, text) in [
        ("another audience", "audiences: [other]\n", "audiences"),
        ("not a project id", "", "project_id"),
        ("mfa_acr", "mfa_acr: [x]\n", "mfa_acr"),
        ("session issuer", "issuer: https://session.firebase.google.com/acme-retail-prod\n", "session"),
    ] {
        let env = TestEnv::new();
        let project = if name == "not a project id" { "Acme Retail" } else { "acme-retail-prod" };
        env.write(
            "providers/app-firebase.yaml",
            &format!("id: app-firebase\nkind: firebase\nproject_id: \"{project}\"\n{extra}"),
        );
        env.write_routes(&["app-firebase"], "  - name: app\n    upstream: [127.0.0.1:9]\n");
        let (code, out, err) = env.run(&["check", "--offline", "--config", "routes.yaml"]);
        assert_eq!(code, 1, "{name}: must fail: stdout {out}\nstderr {err}");
        assert!(format!("{out}{err}").contains(text), "{name}: names `{text}`: {out}{err}");
    }
}
