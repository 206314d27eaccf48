//! What configuration needs from a provider kind, and what it offers one.
//!
//! Configuration sits below the provider kinds: it reads `routes.yaml` and the provider
//! files, checks the keys every kind shares, and hands each file to the kind named by
//! its `kind:` key, found in the list of kinds the caller passes to [`super::load`].
//! The kind parses its own file struct (declared with [`crate::provider_file!`], so
//! unknown keys are still refused per kind), checks its own keys, and returns its
//! validated section, which the spec carries without configuration knowing its type.

use super::error::{ConfigError, Problems};
pub use super::env::EnvString as S;
/// A provider file's `scim:` section.
pub use super::raw::Scim as ScimFile;
use super::ProviderSpec;
use crate::identity::{Population, ProviderKind};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One provider kind as the provider files know it (an entry of the kind registry).
pub trait KindLoader: Sync {
    fn kind(&self) -> ProviderKind;
    /// Reads and checks one provider file of this kind (see [`ProviderSource::load`]).
    fn load(&self, source: &mut ProviderSource<'_>) -> Option<ProviderSpec>;
}

/// The kinds a build knows, in the order error messages list them.
pub type Kinds = [&'static dyn KindLoader];

/// A kind's validated part of a provider file, opaque here: the kind reads it back
/// with [`KindSection::get`] as the type it stored.
#[derive(Clone)]
pub struct KindSection {
    kind: ProviderKind,
    section: Arc<dyn Any + Send + Sync>,
}

impl KindSection {
    pub fn new<T: Any + Send + Sync>(kind: ProviderKind, section: T) -> KindSection {
        KindSection { kind, section: Arc::new(section) }
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        self.section.downcast_ref()
    }
}

impl std::fmt::Debug for KindSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KindSection({})", self.kind)
    }
}

/// The keys every kind shares, borrowed from whichever file struct was parsed.
pub struct Common<'a> {
    pub id: &'a S,
    pub population: &'a Option<S>,
    pub issuer: &'a Option<S>,
    pub discovery_url: &'a Option<S>,
    pub jwks_url: &'a Option<S>,
    pub client_id: &'a Option<S>,
    pub client_secret: &'a Option<S>,
    pub audiences: &'a Option<Vec<S>>,
    pub domains: &'a Option<Vec<S>>,
    pub scopes: &'a Option<Vec<S>>,
    pub claims: &'a Option<BTreeMap<String, S>>,
    pub display_name: &'a Option<S>,
    pub jwks_refresh: &'a Option<S>,
    pub mfa_acr: &'a Option<Vec<S>>,
    pub authorize_params: &'a Option<BTreeMap<String, S>>,
    pub ssf: &'a Option<SsfFile>,
    pub scim: &'a Option<ScimFile>,
}

/// The provider file's `ssf:` section: this provider transmits Shared Signals
/// Framework events to idfabric (`crate::revocation::ssf`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfFile {
    /// The transmitter's issuer (`iss` of its Security Event Tokens).
    pub issuer: Option<S>,
    /// Where the transmitter's signing keys are published; default: the provider's own keys.
    pub jwks_url: Option<S>,
    /// The audience the transmitter puts in `aud` for idfabric (the stream's audience).
    pub audience: Option<S>,
    /// Poll delivery (RFC 8936): idfabric fetches the SETs from the transmitter.
    pub poll: Option<SsfPollFile>,
}

/// `ssf.poll:`: the transmitter's poll endpoint and the bearer token for it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfPollFile {
    pub url: Option<S>,
    pub token_file: Option<S>,
    pub token: Option<S>,
    /// How often to poll (default 5s).
    pub interval: Option<S>,
    /// `maxEvents` per poll (default 100).
    pub max_events: Option<u32>,
}

/// A provider file struct (declared with [`crate::provider_file!`]).
pub trait KindFile: DeserializeOwned {
    fn common(&self) -> Common<'_>;
}

/// Declares one provider file struct: the keys every kind shares, then the kind's own
/// (every kind declares `mfa_acr` itself, so each keeps its keys in its own order).
/// Unknown keys are refused with the list of this kind's keys.
#[macro_export]
macro_rules! provider_file {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub id: $crate::config::kind::S,
            #[allow(dead_code)] // read by the file head to pick the struct
            pub kind: $crate::config::kind::S,
            pub population: Option<$crate::config::kind::S>,
            pub issuer: Option<$crate::config::kind::S>,
            pub discovery_url: Option<$crate::config::kind::S>,
            pub jwks_url: Option<$crate::config::kind::S>,
            pub client_id: Option<$crate::config::kind::S>,
            pub client_secret: Option<$crate::config::kind::S>,
            pub audiences: Option<Vec<$crate::config::kind::S>>,
            pub domains: Option<Vec<$crate::config::kind::S>>,
            pub scopes: Option<Vec<$crate::config::kind::S>>,
            pub claims: Option<std::collections::BTreeMap<String, $crate::config::kind::S>>,
            pub display_name: Option<$crate::config::kind::S>,
            /// How often keys are re-fetched in the background (default 10m).
            pub jwks_refresh: Option<$crate::config::kind::S>,
            /// Extra authorize parameters for browser sign-in (Okta `idp`, Auth0
            /// `connection`/`organization`, Cognito `identity_provider`, …).
            pub authorize_params: Option<std::collections::BTreeMap<String, $crate::config::kind::S>>,
            /// Shared Signals Framework events this provider transmits.
            pub ssf: Option<$crate::config::kind::SsfFile>,
            /// SCIM 2.0 provisioning from this provider (`crate::scim`).
            pub scim: Option<$crate::config::kind::ScimFile>,
            $($(#[$fdoc])* pub $field: $ty),*
        }

        impl $crate::config::kind::KindFile for $name {
            fn common(&self) -> $crate::config::kind::Common<'_> {
                $crate::config::kind::Common {
                    id: &self.id,
                    population: &self.population,
                    issuer: &self.issuer,
                    discovery_url: &self.discovery_url,
                    jwks_url: &self.jwks_url,
                    client_id: &self.client_id,
                    client_secret: &self.client_secret,
                    audiences: &self.audiences,
                    domains: &self.domains,
                    scopes: &self.scopes,
                    claims: &self.claims,
                    display_name: &self.display_name,
                    jwks_refresh: &self.jwks_refresh,
                    mfa_acr: &self.mfa_acr,
                    authorize_params: &self.authorize_params,
                    ssf: &self.ssf,
                    scim: &self.scim,
                }
            }
        }
    };
}

/// What a kind's own checks get: the spec built from the shared keys (which the kind
/// may complete or adjust), where to report problems, and the configuration directory.
pub struct SectionCheck<'a, 'p> {
    pub problems: &'a mut Problems<'p>,
    pub base_dir: &'a Path,
    /// The issuer's host (empty when the issuer is not a URL).
    pub issuer_host: String,
}

impl SectionCheck<'_, '_> {
    pub fn at(&mut self, key: &str, message: impl Into<String>) {
        self.problems.at(None, key, message)
    }
}

/// One provider file, read but not yet parsed as its kind's struct.
pub struct ProviderSource<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) base_dir: &'a Path,
    pub(super) errors: &'a mut Vec<ConfigError>,
}

impl ProviderSource<'_> {
    /// Parses the file strictly as `F`, checks the shared keys, then runs the kind's
    /// own `check`, which returns the kind's section. `None` when any problem was found
    /// (all of them are recorded).
    ///
    /// `population`: the kind's default (`None`: the file must say). `default_issuer`:
    /// the issuer when the file names none (`None`: `issuer` is required).
    pub fn load<F: KindFile>(
        &mut self,
        kind: ProviderKind,
        population: Option<Population>,
        default_issuer: Option<fn(&F) -> String>,
        check: impl FnOnce(&F, &mut ProviderSpec, &mut SectionCheck<'_, '_>) -> KindSection,
    ) -> Option<ProviderSpec> {
        let file: F = match super::validate::parse(self.path, self.text) {
            Ok(f) => f,
            Err(e) => {
                self.errors.push(e);
                return None;
            }
        };
        let before = self.errors.len();
        let mut p = Problems { file: self.path, text: self.text, out: self.errors };
        let default_issuer = default_issuer.map(|f| f(&file));
        let (mut spec, issuer_host) =
            super::validate::common(&file.common(), self.path, kind, population, default_issuer, &mut p);
        let mut cx = SectionCheck { problems: &mut p, base_dir: self.base_dir, issuer_host };
        spec.kind = check(&file, &mut spec, &mut cx);
        spec.scim = super::validate::scim(file.common().scim.as_ref(), self.base_dir, cx.problems);
        if let (Some(ssf), Some(poll)) = (spec.ssf.as_mut(), file.common().ssf.as_ref().and_then(|s| s.poll.as_ref())) {
            ssf.poll = super::validate::ssf_poll(poll, self.base_dir, cx.problems);
        }
        (self.errors.len() == before).then_some(spec)
    }
}

/// The list as strings.
pub fn strings(v: &[S]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// An optional list as strings (absent = empty).
pub fn opt_strings(v: &Option<Vec<S>>) -> Vec<String> {
    v.as_deref().map(strings).unwrap_or_default()
}

/// `https`, or plain `http` on a loopback host only.
pub fn check_scheme(cx: &mut SectionCheck<'_, '_>, key: &str, url: &url::Url) {
    super::validate::check_scheme(cx.problems, None, key, url)
}

/// A duration such as `30s`, `5m`, `8h`; `default` when absent.
pub fn duration(cx: &mut SectionCheck<'_, '_>, key: &str, value: Option<&S>, default: Duration) -> Duration {
    super::validate::duration(cx.problems, None, key, value, default)
}

/// 1-64 characters of letters, digits, `-`, `_`, `.`.
pub fn valid_id(id: &str) -> bool {
    super::validate::valid_id(id)
}

/// A GUID in its 8-4-4-4-12 hex form (tenant ids).
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
