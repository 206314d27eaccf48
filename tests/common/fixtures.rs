//! Token fixtures per upstream shape: a named baseline for each IdP dialect, shaped
//! like the vendors' documented tokens (Entra v2 access token,
//! <https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference>;
//! Okta custom authorization server access token,
//! <https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/>; Auth0 access
//! token, <https://auth0.com/docs/secure/tokens/access-tokens>; Cognito access token,
//! <https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html>)
//! plus plain OIDC, with fresh times, tweaked by a small builder and signed on demand,
//! so a test states only how its token differs from a real one. `provider_yaml` writes the matching provider file and `Stack`
//! runs a fake IdP, the echo app and the real gateway for one shape.

use super::fakeidp::{new_signer, sign_with_header, FakeIdp};
use super::{client, Echo, Gateway, TestEnv};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idfabric::keys::{KeyKind, Signer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

// --- made-up tenants, clients and users, shaped like the vendors' examples -------------

pub const ENTRA_TID: &str = "3c1a9e47-5b2d-4f8e-9a61-0d7c2e4b8f15";
pub const ENTRA_OID: &str = "f0e1d2c3-b4a5-4968-8776-655443322110";
/// The API's client id: the `aud` of v2 access tokens for it.
pub const ENTRA_API: &str = "a7b6c5d4-e3f2-4a1b-9c8d-7e6f5a4b3c21";
/// The client app that asked for the token (`azp`).
pub const ENTRA_CLIENT: &str = "c4f3d2a1-9b8e-4c7d-a6f5-1e2d3c4b5a69";
pub const ENTRA_GROUP: &str = "2f4e6a8c-1b3d-4f5a-8c7e-9d0b2a4c6e81";
pub const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

pub const OKTA_AS_PATH: &str = "/oauth2/default";
pub const OKTA_AUDIENCE: &str = "api://default";
pub const OKTA_CID: &str = "0oa2ab3cd4EF5gh6ij7k";
pub const OKTA_UID: &str = "00u5xyz7ABCD8efg9h0i";
pub const OKTA_LOGIN: &str = "priya.natarajan@example.com";

pub const AUTH0_TENANT: &str = "acme-prod.us.auth0.com";
pub const AUTH0_API: &str = "https://api.gateway.example.com";
pub const AUTH0_CLIENT: &str = "p8Zr3sLq0XbN7vTkY2uWc5HjA1dFe9Gm";
pub const AUTH0_SUB: &str = "google-oauth2|104839216750183926471";
pub const AUTH0_ROLES_CLAIM: &str = "https://gateway.example.com/roles";

pub const COGNITO_POOL: &str = "eu-west-1_Qw8Er7Ty6";
pub const COGNITO_CLIENT: &str = "5k2j8h4g6f1d3s9a7p0o2i4u6y";
pub const COGNITO_SUB: &str = "b3f1c2d4-7081-40a1-9e2b-5c6d7e8f9a0b";

pub const OIDC_REALM_PATH: &str = "/realms/acme";
pub const OIDC_AUDIENCE: &str = "https://api.acme.example";
pub const OIDC_CLIENT: &str = "acme-portal";
pub const OIDC_TENANT: &str = "acme";
pub const OIDC_SUB: &str = "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";

/// Azure AD B2C tenant `contosoretail`
/// (<https://learn.microsoft.com/en-us/azure/active-directory-b2c/tokens-overview>).
pub const B2C_TID: &str = "8d2f4a6c-1e3b-4c5d-9f7a-2b4c6d8e0f13";
/// The client app: `aud` of its ID tokens.
pub const B2C_CLIENT: &str = "a1b2c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
/// The orders API: `aud` of access tokens for it.
pub const B2C_API: &str = "e7f6d5c4-b3a2-4190-8f7e-6d5c4b3a2910";
pub const B2C_OID: &str = "4c7e9a1b-3d5f-4a2c-8e6b-0d1f3a5c7e9b";
pub const B2C_POLICY: &str = "B2C_1_susi";

/// Firebase project `acme-retail-prod` with an Identity Platform tenant
/// (<https://cloud.google.com/identity-platform/docs/multi-tenancy-authentication>).
pub const FIREBASE_PROJECT: &str = "acme-retail-prod";
pub const FIREBASE_UID: &str = "Hq3ZtY8vLm2Xc7Rb9Nw4Pk1Js6Df";
pub const FIREBASE_TENANT: &str = "eu-stores-x7k2p";

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The upstream dialects idfabric speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Entra,
    Okta,
    Auth0,
    Cognito,
    Oidc,
    B2c,
    Firebase,
}

impl Shape {
    pub const ALL: [Shape; 7] =
        [Shape::Entra, Shape::Okta, Shape::Auth0, Shape::Cognito, Shape::Oidc, Shape::B2c, Shape::Firebase];

    /// `kind:` in the provider file.
    pub fn kind(self) -> &'static str {
        match self {
            Shape::Entra => "entra",
            Shape::Okta => "okta",
            Shape::Auth0 => "auth0",
            Shape::Cognito => "cognito",
            Shape::Oidc => "oidc",
            Shape::B2c => "azure_b2c",
            Shape::Firebase => "firebase",
        }
    }

    /// A provider id for this shape.
    pub fn provider_id(self) -> &'static str {
        match self {
            Shape::Entra => "corp-entra",
            Shape::Okta => "corp-okta",
            Shape::Auth0 => "shop-auth0",
            Shape::Cognito => "shop-cognito",
            Shape::Oidc => "acme-oidc",
            Shape::B2c => "shop-b2c",
            Shape::Firebase => "app-firebase",
        }
    }

    /// The issuer's path on the fake IdP (Auth0 issuers are the bare host plus `/`).
    pub fn issuer_path(self) -> String {
        match self {
            Shape::Entra => format!("/{ENTRA_TID}/v2.0"),
            Shape::Okta => OKTA_AS_PATH.to_string(),
            Shape::Auth0 => String::new(),
            Shape::Cognito => format!("/{COGNITO_POOL}"),
            Shape::Oidc => OIDC_REALM_PATH.to_string(),
            Shape::B2c => format!("/{B2C_TID}/v2.0"),
            Shape::Firebase => format!("/{FIREBASE_PROJECT}"),
        }
    }

    /// The issuer exactly as tokens of this shape carry it on `fake`.
    pub fn issuer(self, fake: &FakeIdp) -> String {
        match self {
            Shape::Auth0 => format!("{}/", fake.base),
            // B2C issuers end with a slash: https://{host}/{tenant}/v2.0/
            Shape::B2c => format!("{}/", fake.issuer),
            _ => fake.issuer.clone(),
        }
    }

    /// The audience (Cognito: app client id) the provider file accepts.
    pub fn audience(self) -> &'static str {
        match self {
            Shape::Entra => ENTRA_API,
            Shape::Okta => OKTA_AUDIENCE,
            Shape::Auth0 => AUTH0_API,
            Shape::Cognito => COGNITO_CLIENT,
            Shape::Oidc => OIDC_AUDIENCE,
            Shape::B2c => B2C_CLIENT,
            Shape::Firebase => FIREBASE_PROJECT,
        }
    }

    /// The claim that binds a token to its audience (Cognito access tokens have no `aud`).
    pub fn audience_claim(self) -> &'static str {
        match self {
            Shape::Cognito => "client_id",
            _ => "aud",
        }
    }

    /// The stable upstream user id the baseline token normalises to.
    pub fn subject(self) -> &'static str {
        match self {
            Shape::Entra => ENTRA_OID,
            Shape::Okta => OKTA_UID,
            Shape::Auth0 => AUTH0_SUB,
            Shape::Cognito => COGNITO_SUB,
            Shape::Oidc => OIDC_SUB,
            Shape::B2c => B2C_OID,
            Shape::Firebase => FIREBASE_UID,
        }
    }

    /// The claim holding the user id (the one tampering tests change).
    pub fn subject_claim(self) -> &'static str {
        match self {
            Shape::Entra => "oid",
            Shape::Okta => "uid",
            Shape::B2c => "oid",
            _ => "sub",
        }
    }

    /// The normalised `tenant` of the baseline token on loopback.
    pub fn tenant(self) -> &'static str {
        match self {
            Shape::Entra => ENTRA_TID,
            Shape::Okta => "127.0.0.1",
            Shape::Auth0 => AUTH0_TENANT,
            Shape::Cognito => COGNITO_POOL,
            Shape::Oidc => OIDC_TENANT,
            Shape::B2c => B2C_TID,
            Shape::Firebase => "acme-retail-prod/tenants/eu-stores-x7k2p",
        }
    }

    pub fn population(self) -> &'static str {
        match self {
            Shape::Entra | Shape::Okta | Shape::Oidc => "workforce",
            Shape::Auth0 | Shape::Cognito | Shape::B2c | Shape::Firebase => "customer",
        }
    }

    /// The JOSE `typ` this IdP puts on access tokens (Okta custom AS and Cognito: none).
    pub fn typ(self) -> Option<&'static str> {
        match self {
            Shape::Entra | Shape::Auth0 | Shape::Oidc | Shape::B2c | Shape::Firebase => Some("JWT"),
            Shape::Okta | Shape::Cognito => None,
        }
    }
}

/// The baseline access-token payload of `shape`, issued now-ish and valid for an hour.
pub fn claims(shape: Shape, issuer: &str, audience: &str) -> Value {
    let iat = now() - 300;
    let exp = now() + 3600;
    match shape {
        Shape::Entra => json!({
            "aud": audience, "iss": issuer, "iat": iat, "nbf": iat, "exp": exp,
            "aio": "E2RgYJjV9yL+u7xq4Xk2b1dF3nT8pQ0aW6sZ5cH9mK1rN4vB7eG2=",
            "azp": ENTRA_CLIENT, "azpacr": "1", "idtyp": "user",
            "name": "Adele Vance", "oid": ENTRA_OID, "preferred_username": "AdeleV@contoso.example",
            "rh": "1.AXEAR56hPC1bjk-aYQ18LkuPFdTFtqfy4xtKnI1-b1pLPCFxAAJxAA.",
            "groups": [ENTRA_GROUP, "7a9c1e3f-5b7d-4e9a-b1c3-d5e7f9a1b3c5"],
            "roles": ["Reports.Read"], "scp": "access_as_user Reports.Read",
            "sid": "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
            "sub": "YWNjZXNzVG9rZW5QYWlyd2lzZVN1YmplY3RWYWx1ZTAy",
            "tid": ENTRA_TID, "uti": "kL2mN3oP4qR5sT6uV7wXAA", "ver": "2.0",
            "wids": ["62e90394-69f5-4237-9190-012177145e10"],
        }),
        Shape::Okta => json!({
            "ver": 1, "jti": "AT.Jk3Lm6No9Pq2Rs5Tu8Vw1Xy4Za7Bc0De3Fg6Hi9Jk2",
            "iss": issuer, "aud": audience, "iat": iat, "exp": exp,
            "cid": OKTA_CID, "uid": OKTA_UID,
            "scp": ["openid", "profile", "email", "reports.read"],
            "auth_time": iat - 15, "sub": OKTA_LOGIN,
            "groups": ["Everyone", "gateway-admins"],
        }),
        Shape::Auth0 => json!({
            AUTH0_ROLES_CLAIM: ["org-admin"],
            "iss": issuer, "sub": AUTH0_SUB,
            "aud": [audience, format!("{issuer}userinfo")],
            "iat": iat, "exp": exp,
            "scope": "openid profile email read:reports",
            "azp": AUTH0_CLIENT, "org_id": "org_Xb7Pq2LmN4sT9vWa",
            "permissions": ["read:reports", "write:reports"],
        }),
        Shape::Cognito => {
            let pool = issuer.rsplit('/').next().unwrap_or(COGNITO_POOL);
            json!({
                "sub": COGNITO_SUB,
                "cognito:groups": [format!("{pool}_Google"), "gateway-admins"],
                "iss": issuer, "version": 2, "client_id": audience,
                "origin_jti": "8c2e4a6b-1d3f-4e5a-9b7c-0d2e4f6a8b1c",
                "token_use": "access",
                "scope": "openid email profile https://api.gateway.example.com/reports.read",
                "auth_time": iat - 5, "exp": exp, "iat": iat,
                "jti": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
                "username": "Google_104839216750183926471",
            })
        }
        Shape::Oidc => json!({
            "iss": issuer, "sub": OIDC_SUB, "aud": audience, "azp": OIDC_CLIENT,
            "iat": iat, "exp": exp, "jti": "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e",
            "scope": "openid profile email orders:read",
            "email": "kim@acme.example", "email_verified": true, "name": "Kim Park",
            "preferred_username": "kim", "groups": ["staff"],
        }),
        // An ID token of user flow B2C_1_susi, Google sign-in.
        Shape::B2c => json!({
            "exp": exp, "nbf": iat, "ver": "1.0", "iss": issuer,
            "sub": B2C_OID, "aud": audience, "nonce": "f9Kd2Lp7Qx4Rz8Tw",
            "iat": iat, "auth_time": iat - 12, "oid": B2C_OID, "idp": "google.com",
            "name": "Tomás Alvarez", "given_name": "Tomás", "family_name": "Alvarez",
            "emails": ["tomas.alvarez@gmail.com"], "extension_LoyaltyTier": "gold",
            "tfp": B2C_POLICY, "at_hash": "Qm3Zr8Tn1Vb6Xc4Lp9Wd2A",
        }),
        // An Identity Platform tenant user, Google sign-in + SMS second factor.
        Shape::Firebase => json!({
            "org_role": "store_manager", "org_id": "org_4821", "name": "Lena Fischer",
            "picture": "https://lh3.googleusercontent.com/a/ACg8ocK7exampleFirebase=s96-c",
            "iss": issuer, "aud": audience, "auth_time": iat - 50,
            "user_id": FIREBASE_UID, "sub": FIREBASE_UID, "iat": iat, "exp": exp,
            "email": "lena.fischer@gmail.com", "email_verified": true,
            "firebase": {
                "identities": {"google.com": ["109876543210987654321"], "email": ["lena.fischer@gmail.com"]},
                "sign_in_provider": "google.com", "sign_in_second_factor": "phone",
                "second_factor_identifier": "7c1e9a3b-5d2f-4b8e-a6c4-0e9d2f7b1a35",
                "tenant": FIREBASE_TENANT,
            },
        }),
    }
}

/// A Cognito ID token of a Google-federated user for `issuer` and app `client`
/// (<https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-id-token.html>).
pub fn cognito_id_claims(issuer: &str, client: &str) -> Value {
    let pool = issuer.rsplit('/').next().unwrap_or(COGNITO_POOL);
    let iat = now() - 300;
    json!({
        "at_hash": "Jd9sK2mN5pQ8rT1vW4yZ7a", "sub": COGNITO_SUB,
        "cognito:groups": [format!("{pool}_Google"), "gateway-admins"],
        "email_verified": true, "iss": issuer,
        "cognito:username": "Google_104839216750183926471",
        "origin_jti": "8c2e4a6b-1d3f-4e5a-9b7c-0d2e4f6a8b1c", "aud": client,
        "identities": [{
            "userId": "104839216750183926471", "providerName": "Google", "providerType": "Google",
            "issuer": null, "primary": "true", "dateCreated": "1716900000000"
        }],
        "token_use": "id", "auth_time": iat - 5, "name": "Mei Chen", "nonce": "c9Xk2Qv7Lp4Rt1Wz",
        "exp": now() + 3600, "iat": iat, "jti": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "email": "mei.chen@gmail.com", "custom:tenant_id": "tnt_7Hq2",
    })
}

/// A token under construction: a JOSE header and a payload, tweaked then minted.
#[derive(Debug, Clone)]
pub struct Token {
    pub header: Value,
    pub claims: Value,
}

impl Token {
    /// The shape's baseline, with the shape's `typ` header.
    pub fn new(shape: Shape, issuer: &str, audience: &str) -> Token {
        Token::from_claims(shape, claims(shape, issuer, audience))
    }

    pub fn from_claims(shape: Shape, claims: Value) -> Token {
        let mut header = json!({});
        if let Some(t) = shape.typ() {
            header["typ"] = json!(t);
        }
        Token { header, claims }
    }

    pub fn set(mut self, k: &str, v: impl Into<Value>) -> Token {
        self.claims[k] = v.into();
        self
    }

    pub fn without(mut self, k: &str) -> Token {
        self.claims.as_object_mut().unwrap().remove(k);
        self
    }

    /// A JOSE header member (`typ`, `jku`, `crit`, …); `alg` and `kid` come from the key
    /// unless set here.
    pub fn header(mut self, k: &str, v: impl Into<Value>) -> Token {
        self.header[k] = v.into();
        self
    }

    /// Expired two minutes ago: beyond the gateway's 60 s leeway.
    pub fn expired(self) -> Token {
        self.exp_offset(-120)
    }

    /// Expired `secs` seconds ago (negative) or valid for `secs` more seconds.
    pub fn exp_offset(mut self, secs: i64) -> Token {
        let exp = now() + secs;
        self.claims["exp"] = json!(exp);
        self.claims["iat"] = json!(exp - 3600);
        if self.claims.get("nbf").is_some() {
            self.claims["nbf"] = json!(exp - 3600);
        }
        self
    }

    /// `nbf` five minutes ahead (beyond the leeway).
    pub fn not_yet_valid(self) -> Token {
        self.set("nbf", now() + 300)
    }

    /// `iat` five minutes ahead (beyond the leeway); `nbf`, if any, stays in the past.
    pub fn issued_in_future(self) -> Token {
        self.set("iat", now() + 300)
    }

    /// Signs with `signer` (its `alg` and `kid` unless the header overrides them).
    pub fn mint(&self, signer: &Signer) -> String {
        let mut header = json!({"alg": signer.alg, "kid": signer.kid});
        for (k, v) in self.header.as_object().unwrap() {
            header[k] = v.clone();
        }
        sign_with_header(signer, &header, &self.claims)
    }
}

// --- token surgery for attack cases ------------------------------------------------

fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.');
    let (h, p, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap_or(""));
    (h.to_string(), p.to_string(), s.to_string())
}

/// One bit of the signature flipped (decoded and re-encoded, so it is a real change).
pub fn flip_signature(token: &str) -> String {
    let (h, p, s) = parts(token);
    let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
    sig[0] ^= 0x01;
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The signature removed, dots kept (`header.payload.`).
pub fn strip_signature(token: &str) -> String {
    let (h, p, _) = parts(token);
    format!("{h}.{p}.")
}

/// One claim changed in the payload, the original signature kept.
pub fn tamper(token: &str, claim: &str, value: Value) -> String {
    let (h, p, s) = parts(token);
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    claims[claim] = value;
    format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// The classic key-confusion attack: `alg: HS256`, MACed with the provider's RSA public
/// key bytes (the modulus) as the HMAC secret.
pub fn hs256_with_public_key(public: &Signer, claims: &Value) -> String {
    use aws_lc_rs::hmac;
    let n = public.public_jwk()["n"].as_str().expect("an RSA key");
    let secret = URL_SAFE_NO_PAD.decode(n).unwrap();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": public.kid});
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

// --- provider files -----------------------------------------------------------------

/// Where the gateway gets a stack's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysFrom {
    /// Discovery at `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    /// `jwks_url:` in the provider file (discovery skipped).
    JwksUrl,
}

/// A provider file of `shape`'s kind accepting its baseline token (keys by discovery
/// unless `jwks_url` is given); `extra` is
/// appended verbatim (more YAML keys, e.g. `jwks_refresh: 1s` or `claims:`).
pub fn provider_yaml(shape: Shape, id: &str, issuer: &str, jwks_url: Option<&str>, extra: &str) -> String {
    let mut y = format!(
        "id: {id}\nkind: {kind}\npopulation: {pop}\nissuer: \"{issuer}\"\n",
        kind = shape.kind(),
        pop = shape.population()
    );
    y.push_str(&match shape {
        Shape::Entra => {
            format!("client_id: \"{ENTRA_CLIENT}\"\naudiences: [\"{ENTRA_API}\"]\ntenants: [\"{ENTRA_TID}\"]\n")
        }
        Shape::Okta => format!("client_id: {OKTA_CID}\naudiences: [\"{OKTA_AUDIENCE}\"]\n"),
        Shape::Auth0 => {
            format!("client_id: {AUTH0_CLIENT}\naudiences: [\"{AUTH0_API}\"]\ntenant_domain: {AUTH0_TENANT}\n")
        }
        Shape::Cognito => format!("client_id: {COGNITO_CLIENT}\ntoken_use: access\n"),
        Shape::Oidc => {
            format!("client_id: {OIDC_CLIENT}\naudiences: [\"{OIDC_AUDIENCE}\"]\ntenant: {OIDC_TENANT}\n")
        }
        // One policy, so one discovery document (no `{policy}` placeholder needed).
        Shape::B2c => {
            let mut y = format!("client_id: \"{B2C_CLIENT}\"\naudiences: [\"{B2C_API}\"]\npolicies: [{B2C_POLICY}]\n");
            if jwks_url.is_none() {
                let base = issuer.trim_end_matches('/');
                y.push_str(&format!("discovery_url: \"{base}/.well-known/openid-configuration\"\n"));
            }
            y
        }
        // Keys default to Google's JWKS: tests point them at the fake IdP's discovery.
        Shape::Firebase => {
            let mut y = format!("project_id: {FIREBASE_PROJECT}\ntenants: [{FIREBASE_TENANT}]\n");
            if jwks_url.is_none() {
                y.push_str(&format!("discovery_url: \"{issuer}/.well-known/openid-configuration\"\n"));
            }
            y
        }
    });
    if let Some(u) = jwks_url {
        y.push_str(&format!("jwks_url: \"{u}\"\n"));
    }
    y.push_str(extra);
    if !y.ends_with('\n') {
        y.push('\n');
    }
    y
}

// --- a running stack: fake IdP + echo app + gateway -----------------------------------

/// What the gateway answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

impl Reply {
    /// The problem+json `reason` ("" when absent).
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    /// A request header the echo app saw ("" when absent).
    pub fn echoed(&self, name: &str) -> &str {
        self.body["headers"][name].as_str().unwrap_or("")
    }
}

/// One shape's fake IdP (publishing an RSA key and a P-256 key), an echo app, and the
/// real gateway with one provider and a bearer route `/` to the echo app.
pub struct Stack {
    pub shape: Shape,
    pub id: String,
    pub env: TestEnv,
    pub fake: FakeIdp,
    pub issuer: String,
    pub echo: Echo,
    /// RS256 key, published from the start.
    pub key: Signer,
    /// ES256 key, published from the start.
    pub ec: Signer,
    pub gw: Option<Gateway>,
    providers: Vec<String>,
    routes: String,
}

impl Stack {
    /// Writes the shape's provider file (`keys`, plus `extra` YAML) and the routes; does
    /// not start the gateway.
    pub fn new(shape: Shape, keys_from: KeysFrom, extra: &str) -> Stack {
        let fake = FakeIdp::start(&shape.issuer_path());
        let issuer = shape.issuer(&fake);
        let (key, ec) = (new_signer(KeyKind::Rsa2048), new_signer(KeyKind::Es256));
        fake.set_keys(&[&key, &ec]);
        let env = TestEnv::new();
        let echo = Echo::start();
        let id = shape.provider_id().to_string();
        let jwks_url = (keys_from == KeysFrom::JwksUrl).then(|| fake.jwks_url());
        env.write(&format!("providers/{id}.yaml"), &provider_yaml(shape, &id, &issuer, jwks_url.as_deref(), extra));
        let routes = format!(
            "  - name: app\n    match: {{ path_prefix: / }}\n    auth: bearer\n    upstream: [{}]\n",
            echo.addr()
        );
        Stack { shape, id: id.clone(), env, fake, issuer, echo, key, ec, gw: None, providers: vec![id], routes }
    }

    /// Replaces this stack's own provider file.
    pub fn replace_provider(&self, yaml: &str) {
        self.env.write(&format!("providers/{}.yaml", self.id), yaml);
    }

    /// Adds another provider file (its id is enabled too).
    pub fn add_provider(&mut self, id: &str, yaml: &str) {
        self.env.write(&format!("providers/{id}.yaml"), yaml);
        self.providers.push(id.to_string());
    }

    /// Adds routes (YAML list items indented by two spaces) before the default one.
    pub fn add_routes(&mut self, yaml: &str) {
        self.routes = format!("{yaml}{}", self.routes);
    }

    fn write_routes(&self) {
        let ids: Vec<&str> = self.providers.iter().map(String::as_str).collect();
        self.env.write_routes(&ids, &self.routes);
    }

    /// Starts the gateway and waits until every provider has keys.
    pub fn start(&mut self) {
        self.write_routes();
        self.gw = Some(Gateway::start(&self.env));
    }

    /// Starts the gateway without waiting for readiness (provider outage at start).
    pub fn start_unready(&mut self) {
        self.write_routes();
        self.gw = Some(Gateway::start_with(&self.env, &[], false));
    }

    /// The shape's baseline token for this stack's issuer.
    pub fn token(&self) -> Token {
        Token::new(self.shape, &self.issuer, self.shape.audience())
    }

    /// `GET {proxy}{path}` with `Authorization: Bearer {token}`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let resp = client()
            .get(format!("{}{path}", self.env.proxy()))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap_or("").to_string());
        let (www_authenticate, content_type) = (header("www-authenticate"), header("content-type"));
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, www_authenticate, content_type, body }
    }

    /// The normalised identity (`/.idfabric/me`) for `token`.
    pub async fn me(&self, token: &str) -> Reply {
        self.get("/.idfabric/me", token).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = self.env.admin_call(reqwest::Method::GET, path).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    pub async fn readyz(&self) -> u16 {
        self.admin_get("/readyz").await.0
    }

    /// This stack's entry in the admin `/providers` document.
    pub async fn provider_status(&self) -> Value {
        let doc: Value = serde_json::from_str(&self.admin_get("/providers").await.1).unwrap();
        doc["providers"].as_array().unwrap().iter().find(|p| p["id"] == self.id.as_str()).cloned().unwrap()
    }

    /// Polls `check` (about every 100 ms) until it is true or `within` passes.
    pub async fn eventually<F, Fut>(&self, within: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !check().await {
            if Instant::now() > deadline {
                let log = self.gw.as_ref().map(|g| g.log()).unwrap_or_default();
                panic!("{:?}: {what} did not happen within {within:?}; gateway log:\n{log}", self.shape);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
