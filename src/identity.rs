//! The normalised identity: the one claim schema every provider's token is mapped into
//! (docs/configuration.md and docs/broker.md show it as headers and claims). Field names
//! and the spellings of the enums below are the contract: headers, JSON, broker claims
//! and audit lines carry them unchanged.
//!
//! This module knows nothing about any provider's dialect; `providers/` builds values
//! of this type and everything after verification (policy, propagation, minting,
//! `token inspect`) reads only this type.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The two identity worlds a company runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Population {
    Workforce,
    Customer,
}

impl Population {
    pub const ALL: [Population; 2] = [Population::Workforce, Population::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            Population::Workforce => "workforce",
            Population::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "workforce" => Some(Population::Workforce),
            "customer" => Some(Population::Customer),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Population {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The provider kinds: the one list of kind labels (`kind:` in a provider file and
/// `provider_kind` in an identity). What each kind does lives in `providers/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Entra,
    Okta,
    Auth0,
    Cognito,
    AzureB2c,
    Firebase,
    Oidc,
    Dev,
    /// Not a provider file's kind: identities the broker vouches for itself
    /// (client-credentials service clients).
    Broker,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Entra => "entra",
            ProviderKind::Okta => "okta",
            ProviderKind::Auth0 => "auth0",
            ProviderKind::Cognito => "cognito",
            ProviderKind::AzureB2c => "azure_b2c",
            ProviderKind::Firebase => "firebase",
            ProviderKind::Oidc => "oidc",
            ProviderKind::Dev => "dev",
            ProviderKind::Broker => "broker",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the credential behind an identity was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// An OAuth access token (bearer).
    Access,
    /// An OpenID Connect ID token.
    Id,
    /// A browser session of this gateway.
    Session,
}

impl TokenUse {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Id => "id",
            TokenUse::Session => "session",
        }
    }
}

impl fmt::Display for TokenUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: a person, or software acting as itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalType {
    User,
    Service,
}

impl PrincipalType {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalType::User => "user",
            PrincipalType::Service => "service",
        }
    }
}

impl fmt::Display for PrincipalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where `mfa = true` came from; `none` means the provider gave no evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MfaSource {
    Amr,
    Acr,
    Session,
    #[default]
    None,
}

/// One caller, whatever provider vouched for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `"{provider id}:{subject}"`, globally unique.
    pub sub: String,
    /// The provider's stable user id (Entra `oid`, Okta user id, Auth0/Cognito `sub`).
    pub subject: String,
    pub provider: String,
    pub provider_kind: ProviderKind,
    pub population: Population,
    pub tenant: String,
    pub org: Option<String>,
    pub idp: String,
    pub idp_kind: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub principal_type: PrincipalType,
    pub user_type: Option<String>,
    pub groups: Vec<String>,
    pub groups_complete: bool,
    pub roles: Vec<String>,
    pub admin_roles: Vec<String>,
    pub scopes: Vec<String>,
    pub permissions: Vec<String>,
    pub amr: Vec<String>,
    pub amr_raw: Vec<String>,
    pub mfa: bool,
    pub mfa_source: MfaSource,
    pub acr: Option<String>,
    pub auth_context: Vec<String>,
    pub auth_time: Option<i64>,
    pub iat: Option<i64>,
    pub exp: Option<i64>,
    pub token_use: TokenUse,
    pub client_id: Option<String>,
    pub issuer: String,
    pub session_id: Option<String>,
    pub token_id: Option<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// An identity with every optional field empty; providers fill it in.
    pub fn new(provider: &str, provider_kind: ProviderKind, population: Population, subject: String) -> Self {
        Identity {
            sub: format!("{provider}:{subject}"),
            subject,
            provider: provider.to_string(),
            provider_kind,
            population,
            tenant: String::new(),
            org: None,
            idp: provider.to_string(),
            idp_kind: "native".into(),
            email: None,
            email_verified: None,
            name: None,
            username: None,
            principal_type: PrincipalType::User,
            user_type: None,
            groups: Vec::new(),
            groups_complete: false,
            roles: Vec::new(),
            admin_roles: Vec::new(),
            scopes: Vec::new(),
            permissions: Vec::new(),
            amr: Vec::new(),
            amr_raw: Vec::new(),
            mfa: false,
            mfa_source: MfaSource::None,
            acr: None,
            auth_context: Vec::new(),
            auth_time: None,
            iat: None,
            exp: None,
            token_use: TokenUse::Access,
            client_id: None,
            issuer: String::new(),
            session_id: None,
            token_id: None,
            attributes: BTreeMap::new(),
        }
    }
}

/// The normalised identity as JWT claims (the field names of [`Identity`], `sub` the
/// global `{provider}:{subject}`): the one mapping from identity to claims, used for
/// the minted `X-Identity-Token` (`crate::propagate`), for the key of the minted-token
/// cache ([`identity_key`]) and, filtered to its listed claims, by the broker's tokens.
/// Absent values are `null`. Borrowed from the identity and serialised straight to JSON: no `serde_json::Map` is
/// built per token. Fields are in alphabetical order (the order of the sorted map the
/// claims used to be), so the JSON is stable; a minted token appends its own claims.
#[derive(Debug, Serialize)]
pub struct IdentityClaims<'a> {
    acr: Option<&'a str>,
    amr: &'a [String],
    auth_time: Option<i64>,
    client_id: Option<&'a str>,
    email: Option<&'a str>,
    email_verified: Option<bool>,
    groups: &'a [String],
    groups_complete: bool,
    idp: &'a str,
    mfa: bool,
    name: Option<&'a str>,
    org: Option<&'a str>,
    permissions: &'a [String],
    population: Population,
    principal_type: PrincipalType,
    provider: &'a str,
    provider_kind: ProviderKind,
    roles: &'a [String],
    scopes: &'a [String],
    sub: &'a str,
    subject: &'a str,
    tenant: &'a str,
    token_use: TokenUse,
    username: Option<&'a str>,
}

impl<'a> IdentityClaims<'a> {
    pub fn new(id: &'a Identity) -> IdentityClaims<'a> {
        IdentityClaims {
            acr: id.acr.as_deref(),
            amr: &id.amr,
            auth_time: id.auth_time,
            client_id: id.client_id.as_deref(),
            email: id.email.as_deref(),
            email_verified: id.email_verified,
            groups: &id.groups,
            groups_complete: id.groups_complete,
            idp: &id.idp,
            mfa: id.mfa,
            name: id.name.as_deref(),
            org: id.org.as_deref(),
            permissions: &id.permissions,
            population: id.population,
            principal_type: id.principal_type,
            provider: &id.provider,
            provider_kind: id.provider_kind,
            roles: &id.roles,
            scopes: &id.scopes,
            sub: &id.sub,
            subject: &id.subject,
            tenant: &id.tenant,
            token_use: id.token_use,
            username: id.username.as_deref(),
        }
    }
}

/// [`IdentityClaims`] as a JSON object (the broker's tokens filter and extend it).
pub fn identity_claims(id: &Identity) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(IdentityClaims::new(id)) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// What every credential of one identity sends upstream: the identity headers, encoded
/// once, and the `X-Identity-Token`s minted for it, per route (`crate::propagate` builds
/// and fills it). Two bearer tokens of one person (a refreshed token, a second device)
/// and a browser session (whose verified identity is re-built when its cache entry
/// ends) meet here by [`identity_key`], so neither is re-encoded nor re-signed per
/// credential.
#[derive(Debug)]
pub struct Outbound {
    pub headers: Vec<(&'static str, http::HeaderValue)>,
    /// (route index, token, exp), oldest first.
    pub minted: std::sync::Mutex<Vec<(u32, http::HeaderValue, i64)>>,
}

/// SHA-256 of what a minted token says about `id` (its [`IdentityClaims`] as JSON):
/// the key under which minted tokens are shared by every credential of one identity.
/// Serialised into a per-thread buffer, so the hash costs no allocation.
pub fn identity_key(id: &Identity) -> [u8; 32] {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        // Borrowed strings, numbers and enums: serialising cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &IdentityClaims::new(id));
        let key = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &buf);
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        key
    })
}

