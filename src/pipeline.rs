//! The request pipeline without the proxy: credential → verify + normalise → decide.
//!
//! The gateway, forward-auth (`/.idfabric/auth`) and `token inspect` all call these
//! functions, so a decision is made the same way whichever door a request uses.

use crate::config::AuthMode;
use crate::credential::{self, Credential};
use crate::identity::Population;
use crate::policy::{self, Permit};
use crate::providers::Verified;
use crate::refusal::Refusal;
use crate::runtime::{CompiledRoute, Runtime};
use http::HeaderMap;
use std::sync::Arc;

/// The request may proceed.
#[derive(Debug)]
pub enum Admission {
    /// `auth: none`.
    Public,
    Allowed { verified: Arc<Verified>, permit: Permit },
}

impl Admission {
    pub fn verified(&self) -> Option<&Arc<Verified>> {
        match self {
            Admission::Public => None,
            Admission::Allowed { verified, .. } => Some(verified),
        }
    }

    pub fn population(&self) -> Option<Population> {
        self.verified().map(|v| v.identity.population)
    }
}

/// The request is refused.
#[derive(Debug)]
pub struct Denial {
    pub refusal: Refusal,
    /// The provider the credential came from, when known (metrics, logs).
    pub provider: Option<usize>,
    pub population: Option<Population>,
    /// A browser should be sent to the login page instead of a 401.
    pub login_redirect: bool,
}

impl Denial {
    fn plain(refusal: Refusal) -> Denial {
        Denial { refusal, provider: None, population: None, login_redirect: false }
    }
}

/// Authenticates and authorises one request for `route`.
pub async fn admit(rt: &Runtime, route: &CompiledRoute, headers: &HeaderMap) -> Result<Admission, Denial> {
    let mode = route.spec.auth;
    if mode == AuthMode::None {
        return Ok(Admission::Public);
    }
    let browser = credential::wants_html(headers);
    let cred = credential::extract(headers, &rt.config.session.cookie).map_err(Denial::plain)?;
    let token = match (mode, cred) {
        (AuthMode::Bearer | AuthMode::Either, Credential::Bearer(t)) => t,
        (AuthMode::Bearer, _) => return Err(Denial::plain(Refusal::NoCredential)),
        (AuthMode::Session, Credential::Bearer(_)) | (AuthMode::Session | AuthMode::Either, Credential::Session(_)) => {
            // Sessions are created by browser sign-in; until one exists, any cookie is unknown.
            return Err(Denial { login_redirect: browser, ..Denial::plain(Refusal::BadSession) });
        }
        (AuthMode::Session, Credential::None) => {
            return Err(Denial { login_redirect: browser, ..Denial::plain(Refusal::NoSession) })
        }
        (AuthMode::Either, Credential::None) => {
            return Err(Denial { login_redirect: browser, ..Denial::plain(Refusal::NoCredential) })
        }
        (AuthMode::None, _) => return Ok(Admission::Public),
    };
    let verified = rt
        .registry
        .verify(token, route.allowed.as_deref())
        .await
        .map_err(|e| Denial { refusal: e.refusal, provider: e.provider, population: None, login_redirect: false })?;
    decide(rt, route, verified)
}

/// The policy step alone, for a verified credential.
pub fn decide(rt: &Runtime, route: &CompiledRoute, verified: Arc<Verified>) -> Result<Admission, Denial> {
    let id = &verified.identity;
    let deny = |refusal| Denial {
        refusal,
        provider: Some(verified.provider),
        population: Some(id.population),
        login_redirect: false,
    };
    let Some(reqs) = route.requirements(id.population) else {
        return Err(deny(Refusal::PopulationNotAllowed(id.population.to_string())));
    };
    let mfa_acr = &rt.registry.providers[verified.provider].spec.mfa_acr;
    match policy::decide(id, &reqs, mfa_acr) {
        Ok(permit) => Ok(Admission::Allowed { verified: verified.clone(), permit }),
        Err(r) => Err(deny(r)),
    }
}
