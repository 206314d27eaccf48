//! The relying party's requests to an upstream identity provider: where its endpoints
//! are (its discovery document, or the dev provider's own) and the token endpoint
//! exchange (authorization code and refresh token grants, RFC 6749 §4.1.3 and §6).
//!
//! Both browser sign-in (`login`, the code) and the session refresh
//! (`session::session_for`, the refresh token) call it, so it sits below both and knows
//! neither.

use crate::providers::jwks::Discovery;
use crate::providers::Provider;
use serde_json::Value;

/// The provider's endpoints from discovery (dev providers: their own).
pub fn endpoints(p: &Provider) -> Option<Discovery> {
    if p.dev_signer.is_some() {
        return serde_json::from_value(crate::providers::dev_op::discovery(&p.spec)).ok();
    }
    p.status().discovery
}

/// The endpoints of an Azure AD B2C `policy` (each policy has its own authorize, token
/// and end-session endpoints); `None` policy, or a policy whose document is not
/// loaded: [`endpoints`].
pub fn endpoints_for(p: &Provider, policy: Option<&str>) -> Option<Discovery> {
    let Some(policy) = policy else { return endpoints(p) };
    if p.dev_policy_signer(policy).is_some() {
        return serde_json::from_value(crate::providers::dev_op::discovery_for(&p.spec, policy)).ok();
    }
    match p.status().policy_discovery.get(&policy.to_ascii_lowercase()) {
        Some(d) => Some(d.clone()),
        None => endpoints(p),
    }
}

/// Why a token endpoint exchange failed. The messages are shown on sign-in error pages
/// and logged: they name no code, token or secret.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("the provider has no token endpoint")]
    NoTokenEndpoint,
    #[error("the identity provider's token endpoint cannot be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("the token response was cut short")]
    CutShort(#[source] reqwest::Error),
    #[error("the token response is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The provider's `error` code, reduced to `[A-Za-z0-9_]`, at most 64 characters.
    #[error("the identity provider refused the code ({0})")]
    Refused(String),
}

/// POSTs to the provider's token endpoint; the client secret (if any) goes in the body,
/// or as HTTP Basic when the provider's discovery asks for `client_secret_basic` only.
pub async fn exchange(http: &reqwest::Client, p: &Provider, params: &[(&str, &str)]) -> Result<Value, ExchangeError> {
    exchange_for(http, p, None, params).await
}

/// [`exchange`] at an Azure AD B2C policy's own token endpoint (a code or refresh
/// token is redeemed where its policy issued it).
pub async fn exchange_for(http: &reqwest::Client, p: &Provider, policy: Option<&str>, params: &[(&str, &str)]) -> Result<Value, ExchangeError> {
    let discovered = endpoints_for(p, policy);
    let basic = discovered.as_ref().is_some_and(|d| d.wants_basic_auth());
    let endpoint = discovered.and_then(|d| d.token_endpoint).ok_or(ExchangeError::NoTokenEndpoint)?;
    let client_id = p.spec.client_id.as_deref().unwrap_or_default();
    let body = {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            s.append_pair(k, v);
        }
        s.append_pair("client_id", client_id);
        if let (Some(secret), false) = (&p.spec.client_secret, basic) {
            s.append_pair("client_secret", secret);
        }
        s.finish()
    };
    let mut request = http.post(&endpoint);
    if let (Some(secret), true) = (&p.spec.client_secret, basic) {
        // RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
        let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        request = request.basic_auth(enc(client_id), Some(enc(secret)));
    }
    let resp = request
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(ExchangeError::Unreachable)?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(ExchangeError::CutShort)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(ExchangeError::NotJson)?;
    if !status.is_success() {
        let err = v.get("error").and_then(Value::as_str).unwrap_or("error");
        let err: String = err.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return Err(ExchangeError::Refused(err));
    }
    Ok(v)
}
