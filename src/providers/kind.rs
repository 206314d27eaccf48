//! A provider kind: everything idfabric does differently for one identity provider
//! product, behind one trait whose default methods are plain OpenID Connect.
//!
//! Each kind file (`entra.rs`, `okta.rs`, …) declares its provider-file keys, checks
//! them into a struct, and implements [`Kind`] on that struct, overriding only the
//! methods where the product departs from the standard. [`KINDS`] is the registry:
//! configuration loading reads each provider file with the kind it names, and the
//! validated struct travels in `ProviderSpec::kind` to the verifier and sign-in.

use super::claims::{issuer_host, Claims};
use super::dev::{DevToken, Kind as MintKind};
use super::jwks::VerifyKey;
use super::jwt::JoseHeader;
use crate::config::kind::{KindFile, ProviderSource, SectionCheck};
use crate::config::{KindLoader, KindSection, Kinds, ProviderSpec};
use crate::identity::{Identity, Population, ProviderKind};
use crate::journey::{ErrorTurn, Journey, JourneyStart};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Every kind this build knows, in the order messages list them.
pub static KINDS: &Kinds = &[
    &super::entra::LOADER,
    &super::okta::LOADER,
    &super::auth0::LOADER,
    &super::cognito::LOADER,
    &super::azure_b2c::LOADER,
    &super::firebase::LOADER,
    &super::oidc::LOADER,
    &super::dev::LOADER,
];

/// What a kind's mapping sees besides the claims.
pub struct Ctx<'a> {
    pub spec: &'a ProviderSpec,
    /// `provider_kind` in the identity (`dev` for dev providers, whatever their shape).
    pub kind_label: ProviderKind,
    pub header: &'a JoseHeader,
    pub key: &'a VerifyKey,
}

/// An authorize or end-session query parameter.
pub type Param = (&'static str, String);

/// One place a provider publishes signing keys (a JWKS, or a discovery document naming
/// one), and the Azure AD B2C policy whose keys they are: a key published only by
/// policy A's document never verifies a token of policy B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation {
    pub url: String,
    pub policy: Option<String>,
}

/// One identity provider product. Defaults are generic OpenID Connect.
pub trait Kind: Send + Sync + std::fmt::Debug {
    /// `kind:` in the provider file, `provider_kind` in identities.
    fn label(&self) -> ProviderKind;

    /// Issuers besides the configured one under which this provider's tokens are
    /// found (custom domains, host variants, an issuer that is refused by name).
    fn extra_issuers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Where discovery lives (below `/.well-known/openid-configuration`) when no
    /// `discovery_url` is configured: the issuer.
    fn discovery_base<'a>(&'a self, spec: &'a ProviderSpec) -> &'a str {
        &spec.issuer
    }

    /// Key source: `Some(urls)` when the keys are published in several places (one
    /// discovery document or JWKS per URL, merged), expanded from `template` (the
    /// configured `jwks_url` or the discovery location). `None`: one JWKS.
    fn key_locations(&self, _template: &str) -> Option<Vec<KeyLocation>> {
        None
    }

    /// Refusals decided before the key lookup, from the unverified token: only ever a
    /// more specific refusal, never an acceptance.
    fn precheck(&self, _header: &JoseHeader, _c: &Claims) -> Result<(), Refusal> {
        Ok(())
    }

    /// Checks issuer, audience and the kind's rules, and maps the claims to an identity.
    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        let host = c.str("iss").map(issuer_host).unwrap_or_default();
        super::oidc::standard_identity(ctx, c, &host)
    }

    /// The rules for ID tokens from browser sign-in, when they differ from the rules
    /// for bearer tokens (Cognito: `token_use: id`).
    fn for_sign_in(&self) -> Option<Arc<dyn Kind>> {
        None
    }

    /// Whether browser sign-in completes the identity from the UserInfo endpoint.
    /// Vendors put the requested claims in their ID tokens; a generic OpenID
    /// Provider may return them from UserInfo only (`oidc` overrides this).
    fn reads_userinfo(&self) -> bool {
        false
    }

    /// Authorize parameters added to `login_hint` when the user typed an email address.
    fn hint_params(&self, _login_hint: &str) -> Vec<Param> {
        Vec::new()
    }

    /// Authorize parameters asking for a fresh second factor (step-up): the first
    /// `mfa_acr` value as `acr_values`, a new sign-in, no reuse of an old one.
    fn step_up_params(&self, spec: &ProviderSpec) -> Vec<Param> {
        let mut out = Vec::new();
        if let Some(a) = spec.mfa_acr.first() {
            out.push(("acr_values", a.clone()));
        }
        out.push(("prompt", "login".into()));
        out.push(("max_age", "0".into()));
        out
    }

    /// How this provider's hosted pages start `journey` for browser sign-in, from its
    /// authorization endpoint `authz`; `route_policy` is a route's choice of Azure AD B2C
    /// policy. `None`: this provider does not offer the journey (sign-up, password
    /// reset and profile edit are off unless a kind's file turns them on).
    fn journey(&self, spec: &ProviderSpec, journey: Journey, _authz: &str, _route_policy: Option<&str>) -> Option<JourneyStart> {
        standard_journey(self, spec, journey)
    }

    /// An `error` answer at the callback that is not a failure but a turn in the
    /// journey (`journey`: the one that answered). `None`: the sign-in failed.
    fn callback_error(&self, _journey: Journey, _error: &str, _description: Option<&str>) -> Option<ErrorTurn> {
        None
    }

    /// Query parameters of the provider's end-session endpoint (OpenID Connect
    /// RP-Initiated Logout 1.0 §2).
    fn end_session_params(&self, client_id: &str, back: &str, id_token: Option<&str>) -> Vec<Param> {
        let mut out = vec![("post_logout_redirect_uri", back.to_string()), ("client_id", client_id.to_string())];
        if let Some(h) = id_token {
            out.push(("id_token_hint", h.to_string()));
        }
        out
    }

    /// Whether a browser app may exchange this provider's ID token for a session
    /// (`POST /.idfabric/session`): for providers whose SDK signs users in inside the
    /// page (Firebase), not through a redirect.
    fn creates_sessions(&self) -> bool {
        false
    }

    /// The `mfa_acr` a dev provider shaped like this kind uses when its file names none.
    fn dev_mfa_acr(&self) -> Vec<String> {
        Vec::new()
    }

    /// A dev provider's own keys (`kind: dev` only).
    fn as_dev(&self) -> Option<&super::dev::DevSpec> {
        None
    }

    /// The claims of a dev provider token shaped like this kind's (`shape:`).
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let user = t.user;
        c.insert("sub".into(), json!(super::dev::stable(&t.seed, 24)));
        c.insert("auth_time".into(), json!(t.o.now));
        if let Some(e) = &t.email {
            c.insert("email".into(), json!(e));
            c.insert("email_verified".into(), json!(user.email_verified.unwrap_or(false)));
        }
        if let Some(n) = &user.display_name {
            c.insert("name".into(), json!(n));
        }
        if !user.groups.is_empty() {
            c.insert("groups".into(), json!(user.groups));
        }
        if t.o.kind == MintKind::Access {
            c.insert("aud".into(), json!(t.audience));
            c.insert("client_id".into(), json!(t.client_id));
            c.insert("scope".into(), json!(t.scopes().join(" ")));
        } else {
            c.insert("aud".into(), json!(t.client_id));
        }
    }
}

/// Sign-in and step-up (the kind's `step_up_params`) at the authorization endpoint;
/// no other journey.
pub fn standard_journey<K: Kind + ?Sized>(k: &K, spec: &ProviderSpec, journey: Journey) -> Option<JourneyStart> {
    match journey {
        Journey::Signin => Some(JourneyStart::default()),
        Journey::Stepup => Some(JourneyStart { params: k.step_up_params(spec), ..JourneyStart::default() }),
        Journey::Signup | Journey::Reset | Journey::Profile => None,
    }
}

/// Whether a provider offers sign-up when its file does not say (`signup:`): customer
/// providers do, workforce ones do not.
pub fn signup_default(f: Option<bool>, spec: &ProviderSpec) -> bool {
    f.unwrap_or(spec.population == Population::Customer)
}

/// The section a kind's check returns: the kind itself, for `ProviderSpec::kind`.
pub fn section<K: Kind + 'static>(k: K) -> KindSection {
    let label = k.label();
    KindSection::new(label, Arc::new(k) as Arc<dyn Kind>)
}

/// The kind a validated spec carries (`None` only for a spec not built by `KINDS`).
pub fn kind_of(spec: &ProviderSpec) -> Option<&Arc<dyn Kind>> {
    spec.kind.get::<Arc<dyn Kind>>()
}

/// A registry entry: the kind's file struct `F`, its defaults and its own checks.
pub struct Loader<F> {
    pub kind: ProviderKind,
    /// The population when the file names none (`None`: it must).
    pub population: Option<Population>,
    /// The issuer when the file names none (`None`: it must).
    pub issuer: Option<fn(&F) -> String>,
    pub check: fn(&F, &mut ProviderSpec, &mut SectionCheck<'_, '_>) -> KindSection,
}

impl<F: KindFile> KindLoader for Loader<F> {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn load(&self, source: &mut ProviderSource<'_>) -> Option<ProviderSpec> {
        source.load::<F>(self.kind, self.population, self.issuer, self.check)
    }
}

/// `aud` must include one of `allowed` (string or array).
pub fn check_audience(c: &Claims, allowed: &[String]) -> Result<(), Refusal> {
    audience_in(c, |a| allowed.iter().any(|x| x == a))
}

fn audience_in(c: &Claims, ok: impl Fn(&str) -> bool) -> Result<(), Refusal> {
    let auds = c.audiences();
    if auds.is_empty() {
        return Err(Refusal::MissingClaim("aud"));
    }
    if auds.iter().any(|a| ok(a)) {
        Ok(())
    } else {
        Err(Refusal::AudienceMismatch)
    }
}

/// `aud` must include a configured audience or the client id.
pub fn check_audience_or_client(ctx: &Ctx<'_>, c: &Claims) -> Result<(), Refusal> {
    let client = ctx.spec.client_id.as_deref();
    audience_in(c, |a| ctx.spec.audiences.iter().any(|x| x == a) || client == Some(a))
}

/// `iss` must be the configured issuer exactly.
pub fn check_issuer_exact<'c>(ctx: &Ctx<'_>, c: &'c Claims) -> Result<&'c str, Refusal> {
    let iss = c.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
    if iss == ctx.spec.issuer {
        Ok(iss)
    } else {
        Err(Refusal::IssuerMismatch)
    }
}

/// For the kinds' unit tests: a provider file read through the real registry, and its
/// kind's mapping run on claims as if their signature had verified.
#[cfg(test)]
pub(crate) mod testing {
    use super::super::claims::Claims;
    use super::super::jwks::VerifyKey;
    use super::super::jwt::JoseHeader;
    use super::{kind_of, Ctx, Kind};
    use crate::config::ProviderSpec;
    use crate::identity::Identity;
    use crate::refusal::Refusal;
    use serde_json::Value;
    use std::sync::Arc;

    pub struct Fixture {
        _dir: tempfile::TempDir,
        pub spec: Arc<ProviderSpec>,
    }

    /// Loads `yaml` (a provider file whose first line is `id: …`) with `config::load`.
    pub fn provider(yaml: &str) -> Fixture {
        let id = yaml.lines().next().and_then(|l| l.strip_prefix("id: ")).expect("first line is `id: …`").trim();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("providers")).unwrap();
        std::fs::write(dir.path().join(format!("providers/{id}.yaml")), yaml).unwrap();
        let routes = format!("listen: {{ http: 127.0.0.1:8080 }}\nproviders: [{id}]\nroutes: []\n");
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        let config = match crate::config::load(&dir.path().join("routes.yaml"), super::KINDS) {
            Ok(c) => c,
            Err(e) => panic!("provider file refused:\n{e}"),
        };
        Fixture { spec: config.providers[0].clone(), _dir: dir }
    }

    /// The problems `config::load` reports for `yaml`, as text.
    pub fn refused(yaml: &str) -> String {
        let id = yaml.lines().next().and_then(|l| l.strip_prefix("id: ")).expect("first line is `id: …`").trim();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("providers")).unwrap();
        std::fs::write(dir.path().join(format!("providers/{id}.yaml")), yaml).unwrap();
        let routes = format!("listen: {{ http: 127.0.0.1:8080 }}\nproviders: [{id}]\nroutes: []\n");
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        match crate::config::load(&dir.path().join("routes.yaml"), super::KINDS) {
            Ok(_) => panic!("provider file accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// A verification key of algorithm `alg`, optionally bound to an issuer (Entra v2 JWKS).
    pub fn key(alg: jsonwebtoken::Algorithm, issuer: Option<&str>) -> VerifyKey {
        VerifyKey {
            kid: "k1".into(),
            alg,
            key: jsonwebtoken::DecodingKey::from_secret(b"unused"),
            parsed: None,
            issuer: issuer.map(str::to_string),
            policies: Vec::new(),
            thumbprint: [0; 32],
        }
    }

    fn claims(v: Value) -> Claims {
        Claims::from_map(v.as_object().cloned().expect("claims are an object"))
    }

    impl Fixture {
        pub fn kind(&self) -> &Arc<dyn Kind> {
            kind_of(&self.spec).expect("loaded by the registry")
        }

        /// A bearer token's claims through the kind (RS256 key, `typ: JWT`).
        pub fn map(&self, c: Value) -> Result<Identity, Refusal> {
            self.map_with(Some("JWT"), &key(jsonwebtoken::Algorithm::RS256, None), c)
        }

        pub fn map_with(&self, typ: Option<&str>, key: &VerifyKey, c: Value) -> Result<Identity, Refusal> {
            let header = JoseHeader { typ: typ.map(str::to_string), kid: Some(key.kid.clone()), ..JoseHeader::default() };
            let ctx = Ctx { spec: &self.spec, kind_label: self.spec.kind(), header: &header, key };
            let c = claims(c);
            self.kind().precheck(&header, &c)?;
            super::super::map_identity(&**self.kind(), &ctx, &c)
        }

        /// A sign-in ID token's claims: the kind's sign-in rules, `aud` = the client id.
        pub fn sign_in(&self, c: Value) -> Result<Identity, Refusal> {
            let mut spec = (*self.spec).clone();
            spec.audiences = spec.client_id.iter().cloned().collect();
            let kind = self.kind().for_sign_in().unwrap_or_else(|| self.kind().clone());
            let header = JoseHeader { typ: Some("JWT".into()), kid: Some("k1".into()), ..JoseHeader::default() };
            let k = key(jsonwebtoken::Algorithm::RS256, None);
            let ctx = Ctx { spec: &spec, kind_label: spec.kind(), header: &header, key: &k };
            super::super::map_identity(&*kind, &ctx, &claims(c))
        }
    }
}
