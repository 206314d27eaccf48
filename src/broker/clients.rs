//! The broker's relying parties, as configured in `routes.yaml` (`broker.clients`), and
//! client authentication at the token, introspection and revocation endpoints.
//!
//! Secrets are either plain values (usually `${ENV}`) compared in constant time over
//! their SHA-256 digests (so neither content nor length leaks through timing), or
//! argon2 PHC strings (`$argon2id$...`, made by `idfabric keys hash-secret`), so a
//! leaked `routes.yaml` does not leak the secret.

use super::{err, ErrorCode, OAuthError};
use crate::config::{BrokerClientSpec, BrokerSpec};
use crate::providers::Provider;
use crate::runtime::Runtime;
use crate::web::Request;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn find<'a>(b: &'a BrokerSpec, client_id: &str) -> Option<&'a BrokerClientSpec> {
    b.clients.iter().find(|c| c.client_id == client_id)
}

/// Whether `s` parses as an argon2 PHC string (checked when the configuration loads).
pub use crate::config::valid_phc;

/// Concurrent argon2 checks: each costs tens of milliseconds and ~19 MiB, so they run
/// on the blocking pool, two at a time; a flood of wrong secrets queues there instead
/// of occupying the proxy's worker threads.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `secret_matches` off the request threads (argon2 on the blocking pool).
pub async fn secret_matches_async(configured: &str, presented: &str) -> bool {
    if !configured.starts_with("$argon2") {
        return secret_matches(configured, presented);
    }
    let Ok(_slot) = ARGON2_SLOTS.acquire().await else { return false };
    let (c, p) = (configured.to_string(), presented.to_string());
    tokio::task::spawn_blocking(move || secret_matches(&c, &p)).await.unwrap_or(false)
}

/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("no randomness available")]
    NoRandomness,
    #[error("{0}")]
    Argon2(argon2::password_hash::Error),
}

/// An argon2id PHC string for `secret` with a random salt (`idfabric keys hash-secret`).
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| HashError::NoRandomness)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(HashError::Argon2)
}

/// Whether `presented` is the client's secret.
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    if configured.starts_with("$argon2") {
        return PasswordHash::new(configured)
            .is_ok_and(|h| Argon2::default().verify_password(presented.as_bytes(), &h).is_ok());
    }
    let a = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, configured.as_bytes());
    let b = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, presented.as_bytes());
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref()).is_ok()
}

/// `Authorization: Basic` credentials (RFC 6749 §2.3.1: both parts form-urlencoded).
/// `Err` when the header is there but unusable.
fn basic(req: &Request<'_>) -> Result<Option<(String, String)>, OAuthError> {
    let Some(v) = req.headers.get(http::header::AUTHORIZATION) else { return Ok(None) };
    let bad = || err(ErrorCode::InvalidClient, "the Authorization header is not usable Basic client credentials");
    let v = v.to_str().map_err(|_| bad())?;
    let Some((scheme, rest)) = v.trim().split_once(' ') else { return Err(bad()) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().map(|c| c.into_owned());
    Ok(Some((decode(id).map_err(|_| bad())?, decode(secret).map_err(|_| bad())?)))
}

/// The client id a request names (form/query `client_id` or the Basic user), for logs
/// and metrics only; nothing is authenticated here.
pub fn named_client<'a>(b: &'a BrokerSpec, req: &Request<'_>) -> Option<&'a str> {
    let id = match basic(req) {
        Ok(Some((id, _))) => Some(id),
        _ => req.input("client_id"),
    }?;
    find(b, &id).map(|c| c.client_id.as_str())
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Post,
    /// A public client naming itself (PKCE is then its proof at the token endpoint).
    None,
}

/// Authenticates the client of a token-style request (`client_secret_basic`,
/// `client_secret_post`, or `none` for public clients). Exactly one method may be used.
pub async fn authenticate<'a>(
    b: &'a BrokerSpec,
    req: &Request<'_>,
    form: &BTreeMap<String, String>,
) -> Result<(&'a BrokerClientSpec, AuthMethod), OAuthError> {
    let header = basic(req)?;
    let post = form.get("client_secret");
    let (id, secret, method) = match (header, post) {
        (Some(_), Some(_)) => {
            return Err(err(ErrorCode::InvalidRequest, "use one client authentication method, not two"))
        }
        (Some((id, s)), None) => {
            if form.get("client_id").is_some_and(|f| *f != id) {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "client_id in the body differs from the Authorization header",
                ));
            }
            (id, Some(s.clone()), AuthMethod::Basic)
        }
        (None, Some(s)) => (form.get("client_id").cloned().unwrap_or_default(), Some(s.clone()), AuthMethod::Post),
        (None, None) => (form.get("client_id").cloned().unwrap_or_default(), None, AuthMethod::None),
    };
    if id.is_empty() {
        return Err(err(ErrorCode::InvalidClient, "no client authentication was sent"));
    }
    let client = find(b, &id).ok_or(err(ErrorCode::InvalidClient, "client authentication failed"))?;
    // Some libraries send Basic `client_id:` (empty password) for public clients.
    let secret = secret.filter(|s| !(client.public && s.is_empty()));
    match (&client.client_secret, secret) {
        (None, None) if client.public => Ok((client, AuthMethod::None)),
        (None, Some(_)) => Err(err(ErrorCode::InvalidClient, "a public client has no secret to send")),
        (Some(_), None) => Err(err(ErrorCode::InvalidClient, "this client must authenticate with its secret")),
        (Some(want), Some(got)) if secret_matches_async(want, &got).await => Ok((client, method)),
        _ => Err(err(ErrorCode::InvalidClient, "client authentication failed")),
    }
}

/// Providers that can sign a browser in for `client`: its `providers` (default: every
/// provider with a client id and an authorization endpoint), within its `populations`.
pub fn browser_providers<'a>(rt: &'a Runtime, client: &BrokerClientSpec) -> Vec<&'a Arc<Provider>> {
    rt.registry
        .providers
        .iter()
        .filter(|p| p.spec.client_id.is_some() && (p.dev_signer.is_some() || p.spec.jwks_url.is_none()))
        .filter(|p| client.providers.as_ref().is_none_or(|ids| ids.contains(&p.spec.id)))
        .filter(|p| client.populations.is_empty() || client.populations.contains(&p.spec.population))
        .collect()
}

/// Whether a user of `provider` may receive tokens for `client`.
pub fn allows_provider(rt: &Runtime, client: &BrokerClientSpec, provider: &str) -> bool {
    browser_providers(rt, client).iter().any(|p| p.spec.id == provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_secrets() {
        assert!(secret_matches("s3cret-value", "s3cret-value"));
        assert!(!secret_matches("s3cret-value", "s3cret-valuf"));
        assert!(!secret_matches("s3cret-value", ""));
        let phc = hash_secret("hunter2-hunter2").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(valid_phc(&phc));
        assert!(!valid_phc("$argon2id$nonsense"));
        assert!(secret_matches(&phc, "hunter2-hunter2"));
        assert!(!secret_matches(&phc, "hunter2-hunter3"));
    }

    #[test]
    fn hashes_too_costly_to_check_are_refused() {
        let h = hash_secret("s3cret").unwrap();
        assert!(valid_phc(&h), "{h}");
        assert!(!valid_phc(&h.replace("m=19456", "m=4194304")), "4 GiB per attempt");
        assert!(!valid_phc(&h.replace("t=2", "t=1000")));
    }
}
