//! The normalised identity: the one claim schema every provider's token is mapped into
//! (INTERFACE.md, "The normalised identity"). Field names here are the contract.
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
    pub provider_kind: String,
    pub population: Population,
    pub tenant: String,
    pub org: Option<String>,
    pub idp: String,
    pub idp_kind: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub principal_type: String,
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
    pub token_use: String,
    pub client_id: Option<String>,
    pub issuer: String,
    pub session_id: Option<String>,
    pub token_id: Option<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// An identity with every optional field empty; providers fill it in.
    pub fn new(provider: &str, provider_kind: &str, population: Population, subject: String) -> Self {
        Identity {
            sub: format!("{provider}:{subject}"),
            subject,
            provider: provider.to_string(),
            provider_kind: provider_kind.to_string(),
            population,
            tenant: String::new(),
            org: None,
            idp: provider.to_string(),
            idp_kind: "native".into(),
            email: None,
            email_verified: None,
            name: None,
            username: None,
            principal_type: "user".into(),
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
            token_use: "access".into(),
            client_id: None,
            issuer: String::new(),
            session_id: None,
            token_id: None,
            attributes: BTreeMap::new(),
        }
    }
}
