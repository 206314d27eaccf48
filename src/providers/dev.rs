//! The built-in development OpenID Provider (`kind: dev`).
//!
//! A real, minimal OP served by idfabric itself at `/.idfabric/dev/{id}/`: discovery
//! and JWKS over HTTP, RSA-2048 tokens for the users in its file, shaped like a chosen
//! real provider (`shape: entra|okta|auth0|cognito|firebase|azure_b2c`) so that demos and tests run the
//! real verification and mapping code of that kind. It must never run in production:
//! startup logs a warning and `idfabric check --production` refuses it.

use crate::config::{DevSpec, DevUserSpec, ProviderSpec, Shape};
use crate::keys::Signer;
use serde_json::{json, Map, Value};

/// The path prefix the dev providers are served under on the proxy listener.
pub const PATH_PREFIX: &str = "/.idfabric/dev/";

/// The user flow an `azure_b2c`-shaped dev provider signs users in with (`tfp`).
pub const B2C_POLICY: &str = "B2C_1_susi";
/// The user flow used for users with `mfa: true`: configured as MFA-enforcing in the
/// dev mapper (`mfa_policies`), the only way B2C tokens can show MFA (PROVIDERS-CIAM §11).
pub const B2C_MFA_POLICY: &str = "B2C_1_susi_mfa";

/// Where this dev provider's endpoints live: `{proxy}/.idfabric/dev/{id}`, also when the
/// issuer continues below it (the azure_b2c shape's `…/{id}/{tenant-guid}/v2.0/`).
pub fn base(spec: &ProviderSpec) -> String {
    let marker = format!("{PATH_PREFIX}{}", spec.id);
    let iss = spec.issuer.as_str();
    if let Some(i) = iss.find(&marker) {
        let end = i + marker.len();
        if iss[end..].is_empty() || iss[end..].starts_with('/') {
            return iss[..end].to_string();
        }
    }
    iss.trim_end_matches('/').to_string()
}

/// Which token to mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    Id,
}

/// Options for one minted token.
#[derive(Debug, Clone)]
pub struct MintOptions {
    pub kind: Kind,
    pub now: i64,
    pub ttl: Option<i64>,
    pub nonce: Option<String>,
    /// Makes otherwise identical tokens distinct (`jti`), for bulk minting.
    pub serial: Option<u64>,
}

/// A stable id derived from the provider and user names (hex).
fn stable(seed: &str, len: usize) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()[..len].to_string()
}

fn guid(seed: &str) -> String {
    crate::config::guid_from(seed)
}

/// Mints a token for `user`, shaped like `dev.shape`.
pub fn mint(spec: &ProviderSpec, dev: &DevSpec, signer: &Signer, user: &DevUserSpec, o: &MintOptions) -> String {
    let exp = o.now + o.ttl.unwrap_or(dev.token_ttl.as_secs() as i64);
    let mut c = Map::new();
    c.insert("iss".into(), json!(spec.issuer));
    c.insert("iat".into(), json!(o.now));
    c.insert("exp".into(), json!(exp));
    if let Some(n) = &o.nonce {
        c.insert("nonce".into(), json!(n));
    }
    let client_id = spec.client_id.clone().unwrap_or_default();
    let audience = spec.audiences.first().cloned().unwrap_or_default();
    let seed = format!("{}/{}", spec.id, user.name);
    let email = user.email.clone();
    let c = &mut c;
    shape_claims(c, spec, dev, user, o, &client_id, &audience, &seed, email);
    if let Some(n) = o.serial {
        c.insert("jti".into(), json!(format!("{}-{n}", stable(&format!("{seed}/{}", o.now), 12))));
    }
    signer.sign_jwt("JWT", &Value::Object(std::mem::take(c)))
}

#[allow(clippy::too_many_arguments)]
fn shape_claims(
    c: &mut Map<String, Value>,
    spec: &ProviderSpec,
    dev: &DevSpec,
    user: &DevUserSpec,
    o: &MintOptions,
    client_id: &str,
    audience: &str,
    seed: &str,
    email: Option<String>,
) {
    let seed = seed.to_string();
    match dev.shape {
        Shape::Entra => {
            c.insert("nbf".into(), json!(o.now));
            c.insert("ver".into(), json!("2.0"));
            c.insert("tid".into(), json!(dev.tenant));
            c.insert("oid".into(), json!(guid(&seed)));
            c.insert("sub".into(), json!(stable(&format!("pairwise/{seed}"), 43)));
            c.insert("preferred_username".into(), json!(email.clone().unwrap_or(user.name.clone())));
            c.insert("uti".into(), json!(stable(&format!("{seed}/{}", o.now), 22)));
            if let Some(n) = &user.display_name {
                c.insert("name".into(), json!(n));
            }
            if !user.groups.is_empty() {
                c.insert("groups".into(), json!(user.groups));
            }
            if !user.roles.is_empty() {
                c.insert("roles".into(), json!(user.roles));
            }
            if user.mfa {
                c.insert("acrs".into(), json!(dev_mfa_values(spec)));
            }
            if let Some(e) = &email {
                c.insert("email".into(), json!(e));
                if user.email_verified == Some(true) {
                    c.insert("xms_edov".into(), json!(true));
                }
            }
            if o.kind == Kind::Access {
                c.insert("aud".into(), json!(audience));
                c.insert("azp".into(), json!(client_id));
                c.insert("scp".into(), json!(scopes(user).join(" ")));
                c.insert("idtyp".into(), json!("user"));
            } else {
                c.insert("aud".into(), json!(client_id));
            }
            for (k, v) in &user.attributes {
                c.insert(format!("extension_{k}"), json!(v));
            }
        }
        Shape::Okta => {
            let uid = format!("00u{}", stable(&seed, 17));
            c.insert("ver".into(), json!(1));
            if !user.groups.is_empty() {
                c.insert("groups".into(), json!(user.groups));
            }
            if user.mfa {
                c.insert("acr".into(), json!("urn:okta:loa:2fa:any"));
            }
            if o.kind == Kind::Access {
                c.insert("jti".into(), json!(format!("AT.{}", stable(&format!("{seed}/{}", o.now), 20))));
                c.insert("aud".into(), json!(audience));
                c.insert("cid".into(), json!(client_id));
                c.insert("uid".into(), json!(uid));
                c.insert("sub".into(), json!(email.clone().unwrap_or(user.name.clone())));
                c.insert("scp".into(), json!(scopes(user)));
                c.insert("auth_time".into(), json!(o.now));
            } else {
                c.insert("jti".into(), json!(format!("ID.{}", stable(&format!("{seed}/{}", o.now), 20))));
                c.insert("aud".into(), json!(client_id));
                c.insert("sub".into(), json!(uid));
                c.insert("idp".into(), json!(format!("00o{}", stable(&spec.id, 17))));
                c.insert("amr".into(), json!(if user.mfa { vec!["pwd", "otp", "mfa"] } else { vec!["pwd"] }));
                c.insert("preferred_username".into(), json!(email.clone().unwrap_or(user.name.clone())));
                c.insert("auth_time".into(), json!(o.now));
                if let Some(e) = &email {
                    c.insert("email".into(), json!(e));
                    c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(true)));
                }
            }
            if let Some(n) = &user.display_name {
                c.insert("name".into(), json!(n));
            }
            for (k, v) in &user.attributes {
                c.insert(k.clone(), json!(v));
            }
        }
        Shape::Auth0 => {
            let conn = user.connection.clone().unwrap_or_else(|| "auth0".into());
            c.insert("sub".into(), json!(format!("{conn}|{}", stable(&seed, 24))));
            if let Some(org) = &user.org {
                c.insert("org_id".into(), json!(org));
            }
            if user.mfa {
                c.insert("amr".into(), json!(["mfa"]));
            }
            let ns = "https://idfabric.dev/";
            if !user.roles.is_empty() {
                c.insert(format!("{ns}roles"), json!(user.roles));
            }
            if !user.groups.is_empty() {
                c.insert(format!("{ns}groups"), json!(user.groups));
            }
            if o.kind == Kind::Access {
                c.insert("aud".into(), json!([audience, format!("{}userinfo", with_slash(&spec.issuer))]));
                c.insert("azp".into(), json!(client_id));
                c.insert("scope".into(), json!(scopes(user).join(" ")));
                c.insert("permissions".into(), json!(user.scopes));
                if let Some(e) = &email {
                    c.insert(format!("{ns}email"), json!(e));
                    c.insert(format!("{ns}email_verified"), json!(user.email_verified.unwrap_or(false)));
                }
            } else {
                c.insert("aud".into(), json!(client_id));
                c.insert("nickname".into(), json!(user.name));
                c.insert("auth_time".into(), json!(o.now));
                if let Some(e) = &email {
                    c.insert("email".into(), json!(e));
                    c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(false)));
                }
                if let Some(n) = &user.display_name {
                    c.insert("name".into(), json!(n));
                }
            }
            for (k, v) in &user.attributes {
                c.insert(format!("{ns}{k}"), json!(v));
            }
        }
        Shape::Cognito => {
            let mut groups = user.groups.clone();
            if let Some(conn) = &user.connection {
                groups.push(format!("{}_{conn}", dev.tenant));
            }
            c.insert("sub".into(), json!(guid(&seed)));
            if !groups.is_empty() {
                c.insert("cognito:groups".into(), json!(groups));
            }
            c.insert("auth_time".into(), json!(o.now));
            c.insert("jti".into(), json!(guid(&format!("{seed}/{}", o.now))));
            c.insert("origin_jti".into(), json!(guid(&format!("origin/{seed}/{}", o.now))));
            if user.mfa {
                c.insert("acr".into(), json!("urn:cognito:loa:3"));
                c.insert("amr".into(), json!(["pwd", "otp", "mfa"]));
            }
            let username = match &user.connection {
                Some(conn) => format!("{conn}_{}", stable(&seed, 21)),
                None => user.name.clone(),
            };
            if o.kind == Kind::Access {
                c.insert("token_use".into(), json!("access"));
                c.insert("version".into(), json!(2));
                c.insert("client_id".into(), json!(client_id));
                c.insert("scope".into(), json!(scopes(user).join(" ")));
                c.insert("username".into(), json!(username));
            } else {
                c.insert("token_use".into(), json!("id"));
                c.insert("aud".into(), json!(client_id));
                c.insert("cognito:username".into(), json!(username));
                if let Some(e) = &email {
                    c.insert("email".into(), json!(e));
                    // Cognito sends booleans as strings in places: exercise the coercion.
                    c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(true).to_string()));
                }
                if let Some(n) = &user.display_name {
                    c.insert("name".into(), json!(n));
                }
                if let Some(conn) = &user.connection {
                    c.insert(
                        "identities".into(),
                        json!([{"userId": stable(&seed, 21), "providerName": conn, "providerType": conn,
                                "issuer": null, "primary": "true", "dateCreated": "1716900000000"}]),
                    );
                }
                for (k, v) in &user.attributes {
                    c.insert(format!("custom:{k}"), json!(v));
                }
            }
        }
        // PROVIDERS-CIAM.md §8: a Firebase ID token (access and ID tokens are the same
        // thing): `aud` = project (the client id), `user_id` = `sub`.
        Shape::Firebase => {
            let uid = stable(&seed, 28);
            c.insert("aud".into(), json!(client_id));
            c.insert("auth_time".into(), json!(o.now));
            c.insert("user_id".into(), json!(uid));
            c.insert("sub".into(), json!(uid));
            if let Some(n) = &user.display_name {
                c.insert("name".into(), json!(n));
            }
            let provider = user.connection.clone().unwrap_or_else(|| "password".into());
            let mut identities = Map::new();
            if let Some(e) = &email {
                c.insert("email".into(), json!(e));
                c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(false)));
                identities.insert("email".into(), json!([e]));
            }
            if provider != "password" && provider != "anonymous" {
                identities.insert(provider.clone(), json!([stable(&format!("{seed}/{provider}"), 21)]));
            }
            let mut fb = Map::new();
            fb.insert("identities".into(), Value::Object(identities));
            fb.insert("sign_in_provider".into(), json!(provider));
            if user.mfa {
                fb.insert("sign_in_second_factor".into(), json!("phone"));
                fb.insert("second_factor_identifier".into(), json!(guid(&format!("mfa/{seed}"))));
            }
            c.insert("firebase".into(), Value::Object(fb));
            // Custom claims (set with the Admin SDK) sit at the top level.
            if !user.roles.is_empty() {
                c.insert("roles".into(), json!(user.roles));
            }
            if !user.groups.is_empty() {
                c.insert("groups".into(), json!(user.groups));
            }
            for (k, v) in &user.attributes {
                c.insert(k.clone(), json!(v));
            }
        }
        // PROVIDERS-CIAM.md §12: a B2C user-flow token (issuer naming the tenant GUID,
        // `tfp` = the policy, `emails` an array, `idp` for social accounts, `oid` = `sub`).
        Shape::AzureB2c => {
            let oid = guid(&seed);
            c.insert("nbf".into(), json!(o.now));
            c.insert("ver".into(), json!("1.0"));
            c.insert("sub".into(), json!(oid));
            c.insert("oid".into(), json!(oid));
            c.insert("tfp".into(), json!(if user.mfa { B2C_MFA_POLICY } else { B2C_POLICY }));
            c.insert("auth_time".into(), json!(o.now));
            if let Some(e) = &email {
                c.insert("emails".into(), json!([e]));
            }
            if let Some(n) = &user.display_name {
                c.insert("name".into(), json!(n));
            }
            if let Some(conn) = &user.connection {
                c.insert("idp".into(), json!(conn));
            }
            if o.kind == Kind::Access {
                c.insert("aud".into(), json!(audience));
                c.insert("azp".into(), json!(client_id));
                c.insert("scp".into(), json!(scopes(user).join(" ")));
            } else {
                c.insert("aud".into(), json!(client_id));
            }
            for (k, v) in &user.attributes {
                c.insert(format!("extension_{k}"), json!(v));
            }
        }
    }
}

fn dev_mfa_values(spec: &ProviderSpec) -> Vec<String> {
    spec.mfa_acr.first().cloned().into_iter().collect()
}

fn scopes(user: &DevUserSpec) -> Vec<String> {
    let mut s = vec!["openid".to_string(), "profile".to_string(), "email".to_string()];
    s.extend(user.scopes.iter().cloned());
    s
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

/// The discovery document this dev provider serves.
pub fn discovery(spec: &ProviderSpec) -> Value {
    let base = base(spec);
    json!({
        "issuer": spec.issuer,
        "jwks_uri": format!("{base}/jwks"),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "end_session_endpoint": format!("{base}/logout"),
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
    })
}

pub fn jwks(signer: &Signer) -> Value {
    json!({ "keys": [signer.public_jwk()] })
}
