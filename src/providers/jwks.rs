//! A provider's signing keys: parsing a JWKS into verification keys whose algorithm is
//! pinned by the key itself, and fetching discovery documents and key sets.
//!
//! Symmetric (`oct`) keys are never loaded, so an HMAC token can never be checked
//! against a public key. A key without `alg` gets the one algorithm its type implies.

use super::jwt::asymmetric_alg;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Largest discovery or JWKS document we read.
const MAX_DOC_BYTES: usize = 1024 * 1024;

pub struct VerifyKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: DecodingKey,
    /// The same key parsed once for aws-lc (RSA keys otherwise get rebuilt on every
    /// verification); `None` falls back to `key`.
    pub parsed: Option<aws_lc_rs::signature::ParsedPublicKey>,
    /// Entra v2 JWKS: the issuer (template) this key may sign for.
    pub issuer: Option<String>,
    /// Azure AD B2C: the policies whose documents publish this key (the only ones whose
    /// tokens it verifies); empty: not bound to a policy.
    pub policies: Vec<String>,
    /// SHA-256 of the key's public parameters: the same `kid` published by two
    /// policies is one key only when these agree.
    pub thumbprint: [u8; 32],
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

/// One fetched key set; replaced whole on every successful refresh.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: HashMap<String, Arc<VerifyKey>>,
    pub fetched_at: Option<SystemTime>,
}

impl KeySet {
    /// The key a token names; a token without `kid` is accepted only when the set
    /// holds exactly one key.
    pub fn find(&self, kid: Option<&str>) -> Option<&Arc<VerifyKey>> {
        match kid {
            Some(k) => self.keys.get(k),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    pub fn age(&self) -> Option<Duration> {
        self.fetched_at.and_then(|t| t.elapsed().ok())
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("request to {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not valid JSON of the expected shape: {reason}")]
    Invalid { url: String, reason: String },
    #[error("discovery issuer `{found}` does not match the configured issuer `{expected}`")]
    IssuerMismatch { found: String, expected: String },
    #[error("{url} holds no usable signing key")]
    NoKeys { url: String },
}

impl FetchError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Http { .. } => "unreachable",
            FetchError::Status { .. } => "bad_status",
            FetchError::Invalid { .. } => "invalid_document",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
            FetchError::NoKeys { .. } => "no_keys",
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    issuer: Option<String>,
}

/// Parses a JWKS document; unusable entries are skipped, not fatal.
pub fn parse_jwks(body: &[u8], url: &str) -> Result<KeySet, FetchError> {
    let raw: RawJwks =
        serde_json::from_slice(body).map_err(|e| FetchError::Invalid { url: url.to_string(), reason: e.to_string() })?;
    let mut keys = HashMap::new();
    for v in raw.keys {
        let Ok(k) = serde_json::from_value::<RawJwk>(v) else { continue };
        if let Some(key) = to_key(k) {
            keys.insert(key.kid.clone(), Arc::new(key));
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoKeys { url: url.to_string() });
    }
    Ok(KeySet { keys, fetched_at: Some(SystemTime::now()) })
}

fn to_key(k: RawJwk) -> Option<VerifyKey> {
    if k.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let (alg, key) = match k.kty.as_str() {
        "RSA" => {
            let alg = match k.alg.as_deref() {
                None => Algorithm::RS256,
                Some(a) => asymmetric_alg(a).filter(|a| {
                    matches!(a, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
                })?,
            };
            (alg, DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?)
        }
        "EC" => {
            let alg = match k.crv.as_deref()? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                _ => return None,
            };
            if k.alg.as_deref().is_some_and(|a| asymmetric_alg(a) != Some(alg)) {
                return None;
            }
            (alg, DecodingKey::from_ec_components(k.x.as_deref()?, k.y.as_deref()?).ok()?)
        }
        "OKP" if k.crv.as_deref() == Some("Ed25519") => {
            (Algorithm::EdDSA, DecodingKey::from_ed_components(k.x.as_deref()?).ok()?)
        }
        // `oct` (HMAC) keys and anything else: never.
        _ => return None,
    };
    let parsed = parse_once(&k, alg);
    let thumbprint = thumbprint(&k);
    Some(VerifyKey { kid: k.kid.unwrap_or_default(), alg, key, parsed, issuer: k.issuer, policies: Vec::new(), thumbprint })
}

fn thumbprint(k: &RawJwk) -> [u8; 32] {
    let parts = [Some(&k.kty), k.crv.as_ref(), k.n.as_ref(), k.e.as_ref(), k.x.as_ref(), k.y.as_ref()];
    let joined: Vec<&str> = parts.iter().map(|p| p.map(String::as_str).unwrap_or("")).collect();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, joined.join("|").as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Adds `set`, fetched from `policy`'s document, to `merged`: each key bound to the
/// policies that publish it. The same `kid` with other key material under two policies
/// is refused (which key a token means would depend on its claims, read before its
/// signature is checked).
pub fn merge_policy_keys(merged: &mut KeySet, set: KeySet, policy: Option<&str>, url: &str) -> Result<(), FetchError> {
    merged.fetched_at = set.fetched_at;
    for (kid, key) in set.keys {
        let mut key = Arc::try_unwrap(key).unwrap_or_else(|k| VerifyKey {
            kid: k.kid.clone(),
            alg: k.alg,
            key: k.key.clone(),
            parsed: None,
            issuer: k.issuer.clone(),
            policies: k.policies.clone(),
            thumbprint: k.thumbprint,
        });
        match merged.keys.remove(&kid) {
            None => {
                key.policies.extend(policy.map(str::to_string));
                merged.keys.insert(kid, Arc::new(key));
            }
            Some(have) if have.thumbprint == key.thumbprint => {
                let mut have = Arc::try_unwrap(have).unwrap_or_else(|h| VerifyKey { policies: h.policies.clone(), ..key });
                if let Some(p) = policy {
                    if !have.policies.iter().any(|x| x.eq_ignore_ascii_case(p)) {
                        have.policies.push(p.to_string());
                    }
                }
                merged.keys.insert(kid, Arc::new(have));
            }
            Some(_) => {
                return Err(FetchError::Invalid {
                    url: url.to_string(),
                    reason: format!("key `{kid}` is published with other key material by another policy"),
                })
            }
        }
    }
    Ok(())
}

/// The aws-lc verification key for a JWK, parsed once per JWKS refresh.
fn parse_once(k: &RawJwk, alg: Algorithm) -> Option<aws_lc_rs::signature::ParsedPublicKey> {
    use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
    use base64::Engine;
    let b64 = |v: &Option<String>| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.as_deref()?).ok();
    match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
            let params: &'static sig::RsaParameters = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            let (n, e) = (b64(&k.n)?, b64(&k.e)?);
            RsaPublicKeyComponents { n: &n[..], e: &e[..] }.to_parsed_public_key(params).ok()
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let algo: &'static sig::EcdsaVerificationAlgorithm =
                if alg == Algorithm::ES256 { &sig::ECDSA_P256_SHA256_FIXED } else { &sig::ECDSA_P384_SHA384_FIXED };
            let mut point = vec![4u8];
            point.extend(b64(&k.x)?);
            point.extend(b64(&k.y)?);
            ParsedPublicKey::new(algo, point).ok()
        }
        Algorithm::EdDSA => ParsedPublicKey::new(&sig::ED25519, b64(&k.x)?).ok(),
        _ => None,
    }
}

/// The discovery fields idfabric uses.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    /// How the token endpoint takes client credentials (absent: the OP did not say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207: the OP puts `iss` in every authorization response.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authorization_response_iss_parameter_supported: bool,
}

impl Discovery {
    /// Client credentials in a Basic header only when the OP does not take them in the
    /// form body (`client_secret_post`, which every provider kind here supports).
    pub fn wants_basic_auth(&self) -> bool {
        let m = &self.token_endpoint_auth_methods_supported;
        !m.is_empty() && !m.iter().any(|x| x == "client_secret_post") && m.iter().any(|x| x == "client_secret_basic")
    }
}

/// Fetches a JSON document with a size limit.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let http = |e: reqwest::Error| FetchError::Http { url: url.to_string(), reason: without_url(&e) };
    let mut resp = client.get(url).header("accept", "application/json").send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: resp.status().as_u16() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_DOC_BYTES {
            return Err(FetchError::Invalid { url: url.to_string(), reason: "document larger than 1 MiB".into() });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "").replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s = format!("{s}: {inner}");
        source = inner.source();
    }
    s
}

pub async fn fetch_discovery(client: &reqwest::Client, url: &str) -> Result<Discovery, FetchError> {
    let body = fetch(client, url).await?;
    serde_json::from_slice(&body).map_err(|e| FetchError::Invalid { url: url.to_string(), reason: e.to_string() })
}

pub async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<KeySet, FetchError> {
    let body = fetch(client, url).await?;
    parse_jwks(&body, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_unusable_keys() {
        let doc = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"hs","alg":"HS256","n":"AQAB","e":"AQAB"},
            {"kty":"EC","kid":"ec","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","kid":"ec-wrong-alg","alg":"ES384","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let set = parse_jwks(doc, "test").unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys["ec"].alg, Algorithm::ES256);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(parse_jwks(b"<html>", "u"), Err(FetchError::Invalid { .. })));
        assert!(matches!(parse_jwks(br#"{"keys":[]}"#, "u"), Err(FetchError::NoKeys { .. })));
    }

    #[test]
    fn client_auth_follows_discovery() {
        let d = |m: &[&str]| Discovery { token_endpoint_auth_methods_supported: m.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        assert!(!d(&[]).wants_basic_auth(), "unsaid: the form body, which every kind here takes");
        assert!(!d(&["client_secret_basic", "client_secret_post"]).wants_basic_auth());
        assert!(d(&["client_secret_basic", "private_key_jwt"]).wants_basic_auth());
        assert!(!d(&["private_key_jwt"]).wants_basic_auth());
    }
}
