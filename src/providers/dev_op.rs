//! The dev provider's OpenID Provider endpoints, so browser sign-in runs locally:
//! discovery and keys, `authorize` (a page to pick a demo user; codes are short-lived, single-use and
//! bound to client, redirect URI, nonce and PKCE challenge), `token` (authorization
//! code and refresh token grants) and `logout` (RP-initiated logout).
//!
//! Codes and refresh tokens are JWTs signed with the provider's own key, so any
//! replica can redeem them; a per-process set of used code ids stops replays.

use super::dev::{self, Kind, MintOptions};
use super::{jwks, jwt, now_secs, Provider};
use super::dev::DevSpec;
use crate::web::pages;
use crate::web::{pkce_challenge, random, Reply, Request};
use serde_json::{json, Value};
use std::sync::LazyLock;
use std::time::Duration;

const CODE_TTL: i64 = 60;
const REFRESH_TTL: i64 = 8 * 3600;

static USED_CODES: LazyLock<moka::sync::Cache<String, ()>> = LazyLock::new(|| {
    moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(CODE_TTL as u64 * 2)).build()
});

/// The discovery document this dev provider serves: the metadata the broker publishes
/// too (`op::Metadata`), with the dev provider's endpoints, RS256 and no client
/// credentials grant.
pub fn discovery(spec: &crate::config::ProviderSpec) -> Value {
    discovery_at(spec, &dev::base(spec))
}

/// The discovery document of an azure_b2c-shaped dev provider's `policy`: that
/// policy's endpoints below `…/{id}/{policy}/`, as B2C publishes one per policy.
pub fn discovery_for(spec: &crate::config::ProviderSpec, policy: &str) -> Value {
    discovery_at(spec, &format!("{}/{policy}", dev::base(spec)))
}

/// The dev provider's metadata with its endpoints below `base`.
fn discovery_at(spec: &crate::config::ProviderSpec, base: &str) -> Value {
    let doc = crate::op::Metadata {
        issuer: &spec.issuer,
        base,
        signing_algs: vec!["RS256".into()],
        grant_types: &["authorization_code", "refresh_token"],
        token_auth_methods: &["client_secret_post", "client_secret_basic", "none"],
    }
    .document();
    Value::Object(doc)
}

/// The dev provider's key set: its one signing key.
pub fn jwks(signer: &crate::keys::Signer) -> Value {
    json!({ "keys": [signer.public_jwk()] })
}

/// Why `token mint` could not mint.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("provider `{provider}` is not enabled in {config}")]
    NotEnabled { provider: String, config: String },
    #[error("provider `{provider}` is kind `{kind}`; only dev providers mint tokens")]
    NotDev { provider: String, kind: String },
    #[error("provider `{provider}` has no user `{user}` (users: {users})")]
    NoUser { provider: String, user: String, users: String },
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
}

/// Mints `count` tokens of the dev provider `provider` for its user `user` (`idfabric
/// token mint`, and tests): access tokens, or ID tokens with `id_token`; `ttl` seconds
/// instead of the provider's `token_ttl`.
pub fn mint_tokens(
    config: &crate::config::Config,
    provider: &str,
    user: &str,
    id_token: bool,
    ttl: Option<i64>,
    count: u64,
) -> Result<Vec<String>, MintError> {
    mint_tokens_for(config, provider, user, id_token, ttl, count, false)
}

/// [`mint_tokens`]; with `distinct_users`, token `n` is for user `{user}-{n}` (its own
/// `sub` and ids, the rest of the user's claims), for load tests of per-user work.
pub fn mint_tokens_for(
    config: &crate::config::Config,
    provider: &str,
    user: &str,
    id_token: bool,
    ttl: Option<i64>,
    count: u64,
    distinct_users: bool,
) -> Result<Vec<String>, MintError> {
    let spec = config
        .providers
        .iter()
        .find(|p| p.id == provider)
        .ok_or_else(|| MintError::NotEnabled { provider: provider.into(), config: config.path.display().to_string() })?;
    let Some(d) = dev::section_of(spec) else {
        return Err(MintError::NotDev { provider: provider.into(), kind: spec.kind_name().to_string() });
    };
    let u = d.users.iter().find(|u| u.name == user).ok_or_else(|| {
        let names: Vec<&str> = d.users.iter().map(|u| u.name.as_str()).collect();
        MintError::NoUser { provider: provider.into(), user: user.into(), users: names.join(", ") }
    })?;
    // An azure_b2c-shaped provider with per-policy keys: its sign-in (or MFA) policy's key.
    let policy = d.mint_policy(u.mfa);
    let signer = crate::keys::Signer::load(policy.map(|(_, k)| k).unwrap_or(&d.signing_key))?;
    let policy = policy.map(|(p, _)| p);
    let kind = if id_token { Kind::Id } else { Kind::Access };
    let now = now_secs();
    Ok((0..count)
        .map(|i| {
            let opts = MintOptions { kind, now, ttl, nonce: None, serial: (count > 1).then_some(i) };
            if distinct_users {
                let each = dev::DevUserSpec { name: format!("{}-{i}", u.name), ..u.clone() };
                return dev::mint_for_policy(spec, d, &signer, &each, &opts, policy);
            }
            dev::mint_for_policy(spec, d, &signer, u, &opts, policy)
        })
        .collect())
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(status, &json!({"error": error, "error_description": description}), "dev_op_error")
}

/// Serves `/.idfabric/dev/{id}/{sub}` for the OP endpoints.
/// `known_host` says whether a host belongs to a configured route (logout may only
/// return there).
/// An azure_b2c-shaped dev provider with `policies:` serves each policy's endpoints at
/// `{policy}/authorize`, `{policy}/token` and `{policy}/logout`.
pub fn handle(p: &Provider, sub: &str, req: &Request<'_>, known_host: &dyn Fn(&str) -> bool) -> Option<Reply> {
    let d = dev::section_of(&p.spec)?;
    let (policy, leaf) = match sub.split_once('/') {
        Some((policy, leaf)) => (Some(p.dev_policy_signer(policy).map(|_| policy)?), leaf),
        None => (None, sub),
    };
    match leaf {
        "authorize" => Some(authorize(p, d, req, policy, false)),
        // Cognito's hosted sign-up page beside its authorize endpoint.
        "signup" if d.shape == dev::Shape::Cognito => Some(authorize(p, d, req, policy, true)),
        "token" if req.method == "POST" => Some(token(p, d, req, policy)),
        "logout" => Some(logout(req, known_host)),
        _ => None,
    }
}

/// B2C's answers for "Forgot your password?" and a cancelled page, which the dev OP
/// gives when the form posts `b2c_error=forgot` or `b2c_error=cancel`
/// (<https://learn.microsoft.com/en-us/azure/active-directory-b2c/error-codes>).
fn b2c_error(which: &str) -> Option<&'static str> {
    match which {
        "forgot" => Some("AADB2C90118: The user has forgotten their password."),
        "cancel" => Some("AADB2C90091: The user has cancelled entering self-asserted information."),
        _ => None,
    }
}

fn authorize(p: &Provider, d: &DevSpec, req: &Request<'_>, policy: Option<&str>, signup: bool) -> Reply {
    let get = |k: &str| req.input(k).unwrap_or_default();
    let client_id = get("client_id");
    let redirect_uri = get("redirect_uri");
    if p.spec.client_id.as_deref() != Some(client_id.as_str()) {
        return oauth_error(400, "invalid_client", "unknown client_id");
    }
    let Ok(redirect) = url::Url::parse(&redirect_uri) else {
        return oauth_error(400, "invalid_request", "redirect_uri is not a URL");
    };
    if redirect.path() != "/.idfabric/callback" {
        return oauth_error(400, "invalid_request", "redirect_uri must be an idfabric callback");
    }
    if get("response_type") != "code" || get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
        return back(&redirect, &get("state"), &[("error", "invalid_request"), ("error_description", "code flow with PKCE S256 only")]);
    }
    let step_up = !get("acr_values").is_empty() || !get("claims").is_empty() || get("prompt") == "login" || get("max_age") == "0";
    // "Forgot your password?" / "Cancel" on a B2C-shaped page.
    if let Some(desc) = b2c_error(&get("b2c_error")).filter(|_| req.method == "POST" && d.shape == dev::Shape::AzureB2c) {
        return back(&redirect, &get("state"), &[("error", "access_denied"), ("error_description", desc)]);
    }
    let Some(user) = req.input("user").filter(|_| req.method == "POST") else {
        let users: Vec<pages::DevUser> = d
            .users
            .iter()
            .map(|u| pages::DevUser {
                name: &u.name,
                display_name: u.display_name.as_deref(),
                email: u.email.as_deref(),
                mfa: u.mfa || step_up,
                groups: &u.groups,
            })
            .collect();
        let keep = ["client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method", "acr_values", "claims", "prompt", "max_age", "login_hint", "screen_hint"];
        let params: Vec<(String, String)> =
            keep.iter().filter_map(|k| req.input(k).map(|v| (k.to_string(), v))).collect();
        let leaf = if signup { "signup" } else { "authorize" };
        let action = match policy {
            Some(pol) => format!("{}{}/{pol}/{leaf}", dev::PATH_PREFIX, p.spec.id),
            None => format!("{}{}/{leaf}", dev::PATH_PREFIX, p.spec.id),
        };
        let journey = pages::DevJourney {
            signup: signup || get("screen_hint") == "signup" || get("prompt") == "create",
            b2c_policy: policy,
        };
        return Reply::html(200, pages::dev_authorize_page(&p.spec.id, &action, &users, &params, step_up, &journey), "ok");
    };
    if get("deny") == "1" {
        return back(&redirect, &get("state"), &[("error", "access_denied"), ("error_description", "the user declined")]);
    }

    let Some(u) = d.users.iter().find(|u| u.name == user) else {
        return oauth_error(400, "invalid_request", "unknown user");
    };
    let signer = p.dev_signer.as_ref().expect("dev provider has a signer");
    let code = signer.sign_jwt(
        "dev-code",
        &json!({
            "iss": p.spec.issuer, "typ": "code", "user": u.name, "client_id": client_id, "redirect_uri": redirect_uri,
            "nonce": get("nonce"), "code_challenge": get("code_challenge"), "mfa": u.mfa || step_up,
            "exp": now_secs() + CODE_TTL, "jti": random(12), "policy": policy,
        }),
    );
    back(&redirect, &get("state"), &[("code", &code)])
}

fn back(redirect: &url::Url, state: &str, params: &[(&str, &str)]) -> Reply {
    let mut u = redirect.clone();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if !state.is_empty() {
            q.append_pair("state", state);
        }
    }
    Reply::redirect(u.as_str(), "ok")
}

/// Verifies one of our own code / refresh JWTs and returns its claims.
fn open_own(p: &Provider, token: &str, typ: &str) -> Option<Value> {
    let signer = p.dev_signer.as_ref()?;
    let set = jwks::parse_jwks(self::jwks(signer).to_string().as_bytes(), "dev").ok()?;
    let parsed = jwt::parse(token).ok()?;
    let key = set.find(parsed.header.kid.as_deref())?;
    jwt::verify_signature(&parsed, key).ok()?;
    let c = parsed.claims.into_map();
    let fresh = c.get("exp").and_then(Value::as_i64).is_some_and(|e| e >= now_secs());
    (fresh && c.get("typ").and_then(Value::as_str) == Some(typ) && c.get("iss").and_then(Value::as_str) == Some(&p.spec.issuer))
        .then_some(Value::Object(c))
}

fn token(p: &Provider, d: &DevSpec, req: &Request<'_>, policy: Option<&str>) -> Reply {
    let form = |k: &str| req.form(k).unwrap_or_default();
    let client_id = basic_client(req).unwrap_or_else(|| form("client_id"));
    if p.spec.client_id.as_deref() != Some(client_id.as_str()) {
        return oauth_error(401, "invalid_client", "unknown client");
    }
    match form("grant_type").as_str() {
        "authorization_code" => {
            let Some(c) = open_own(p, &form("code"), "code") else {
                return oauth_error(400, "invalid_grant", "code is invalid or expired");
            };
            let jti = c["jti"].as_str().unwrap_or_default().to_string();
            if USED_CODES.contains_key(&jti) {
                return oauth_error(400, "invalid_grant", "code was already used");
            }
            USED_CODES.insert(jti, ());
            if c["client_id"] != client_id.as_str() || c["redirect_uri"] != form("redirect_uri").as_str() {
                return oauth_error(400, "invalid_grant", "code was issued to another client or redirect_uri");
            }
            if c["code_challenge"].as_str() != Some(&pkce_challenge(&form("code_verifier"))) {
                return oauth_error(400, "invalid_grant", "PKCE verification failed");
            }
            // Like B2C: a code is redeemed at the token endpoint of the policy that issued it.
            if c["policy"].as_str().map(str::to_ascii_lowercase) != policy.map(str::to_ascii_lowercase) {
                return oauth_error(400, "invalid_grant", "code was issued by another policy");
            }
            let mfa = c["mfa"].as_bool().unwrap_or(false);
            // No `nonce` in the authorize request: none in the ID token (OIDC Core 3.1.2.1).
            let nonce = c["nonce"].as_str().filter(|n| !n.is_empty());
            issue(p, d, c["user"].as_str().unwrap_or_default(), nonce, mfa, policy)
        }
        "refresh_token" => {
            let Some(c) = open_own(p, &form("refresh_token"), "refresh") else {
                return oauth_error(400, "invalid_grant", "refresh token is invalid or expired");
            };
            // Like Auth0 on silent renew: refreshed tokens carry no MFA evidence.
            issue(p, d, c["user"].as_str().unwrap_or_default(), None, false, policy)
        }
        _ => oauth_error(400, "unsupported_grant_type", "authorization_code and refresh_token only"),
    }
}

fn basic_client(req: &Request<'_>) -> Option<String> {
    use base64::Engine;
    let v = req.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.strip_prefix("Basic ")?).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let id = s.split(':').next()?;
    Some(url::form_urlencoded::parse(format!("x={id}").as_bytes()).next()?.1.into_owned())
}

fn issue(p: &Provider, d: &DevSpec, user: &str, nonce: Option<&str>, mfa: bool, policy: Option<&str>) -> Reply {
    let Some(u) = d.users.iter().find(|u| u.name == user) else {
        return oauth_error(400, "invalid_grant", "user no longer exists");
    };
    let mut u = u.clone();
    u.mfa = mfa;
    let signer = p.dev_signer.as_ref().expect("dev provider has a signer");
    // Tokens of a policy are signed with that policy's key; refresh tokens (ours) with the OP's.
    let token_signer = policy.and_then(|pol| p.dev_policy_signer(pol)).unwrap_or(signer);
    let now = now_secs();
    let opts = |kind| MintOptions { kind, now, ttl: None, nonce: nonce.map(str::to_string), serial: None };
    let access = dev::mint_for_policy(&p.spec, d, token_signer, &u, &opts(Kind::Access), policy);
    let id = dev::mint_for_policy(&p.spec, d, token_signer, &u, &opts(Kind::Id), policy);
    let refresh = signer.sign_jwt(
        "dev-refresh",
        &json!({"iss": p.spec.issuer, "typ": "refresh", "user": u.name, "exp": now + REFRESH_TTL, "jti": random(12)}),
    );
    Reply::json(
        200,
        &json!({"access_token": access, "id_token": id, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": d.token_ttl.as_secs()}),
        "ok",
    )
}

fn logout(req: &Request<'_>, known_host: &dyn Fn(&str) -> bool) -> Reply {
    match req.param("post_logout_redirect_uri").and_then(|u| url::Url::parse(&u).ok()) {
        // Only back to idfabric's signed-out page on a configured host: never an open redirect.
        Some(u) if u.path() == "/.idfabric/logged-out" && u.host_str().is_some_and(|h| known_host(h)) => {
            Reply::redirect(u.as_str(), "ok")
        }
        _ => Reply::html(200, "<!doctype html><title>Signed out</title><p>Signed out of the development provider.</p>".into(), "ok"),
    }
}
