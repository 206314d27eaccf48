//! Per-kind quirks and claim mapping, through the real binary: each kind gets one
//! gateway in front of a fake IdP and a table of named cases. A case either reads the
//! normalised identity from `/.idfabric/me`, or expects a route to admit (checking the
//! `X-Identity-*` headers the app sees) or refuse (checking the `reason`).
//! What every kind must do alike is in `conformance.rs`.

mod common;
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
        let issuer = format!("https://idp.example{}{}", shape.issuer_path(), if shape == Shape::Auth0 { "/" } else { "" });
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
