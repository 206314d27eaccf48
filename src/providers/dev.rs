//! The built-in development OpenID Provider (`kind: dev`).
//!
//! A real, minimal OP served by idfabric itself at `/.idfabric/dev/{id}/`: discovery
//! and JWKS over HTTP, RSA-2048 tokens for the users in its file, shaped like a chosen
//! real provider (`shape: entra|okta|auth0|cognito|firebase|azure_b2c`) so that demos and tests run the
//! real verification and mapping code of that kind. Each kind writes its own token
//! shape (`Kind::dev_token`); this file holds the users, the keys and the OP's
//! documents. It must never run in production: startup logs a warning and
//! `idfabric check --production` refuses it.

use super::kind::{self as kinds, section, Loader, Param};
use super::{auth0, azure_b2c, cognito, entra, firebase, okta};
use crate::config::kind::{is_guid, strings, valid_id, SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, ProviderKind};
use crate::keys::Signer;
use crate::journey::{ErrorTurn, Journey, JourneyStart};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The path prefix the dev providers are served under on the proxy listener.
pub const PATH_PREFIX: &str = "/.idfabric/dev/";

/// The user flow an `azure_b2c`-shaped dev provider signs users in with (`tfp`).
pub const B2C_POLICY: &str = "B2C_1_susi";
/// The user flow used for users with `mfa: true`: configured as MFA-enforcing in the
/// dev provider's B2C rules (`mfa_policies`), the only way B2C tokens show MFA (B2C's
/// `acr` is the policy name, not an assurance level).
pub const B2C_MFA_POLICY: &str = "B2C_1_susi_mfa";

crate::provider_file!(
    /// `kind: dev`: the built-in development OpenID Provider.
    DevFile {
        shape: S,
        signing_key: S,
        users: Vec<DevUser>,
        token_ttl: Option<S>,
        tenant: Option<S>,
        mfa_acr: Option<Vec<S>>,
        tenants: Option<Vec<S>>,
        /// "Create an account" on the sign-in page, as the shape's platform asks for it
        /// (default: customer providers; the azure_b2c shape uses `journeys.signup`).
        signup: Option<bool>,
        /// azure_b2c shape: the policies this OP serves, each at
        /// `…/{id}/{policy}/…` with its own signing key (default: `B2C_1_susi` and the
        /// MFA-enforcing `B2C_1_susi_mfa`, both on `signing_key`, at `…/{id}/…`).
        policies: Option<Vec<DevPolicy>>,
        /// azure_b2c shape: policies with MFA always on.
        mfa_policies: Option<Vec<S>>,
        /// azure_b2c shape: the policy of each user journey.
        journeys: Option<azure_b2c::JourneysFile>,
    }
);

/// One policy an azure_b2c-shaped dev provider serves.
#[derive(Debug, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DevPolicy {
    pub name: S,
    /// Its own signing key (default: the provider's `signing_key`).
    pub signing_key: Option<S>,
}

#[derive(Debug, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    pub name: S,
    pub email: Option<S>,
    pub display_name: Option<S>,
    #[serde(default)]
    pub groups: Vec<S>,
    #[serde(default)]
    pub roles: Vec<S>,
    #[serde(default)]
    pub scopes: Vec<S>,
    #[serde(default)]
    pub mfa: bool,
    pub email_verified: Option<bool>,
    /// For the auth0 shape: the connection strategy (`auth0`, `google-oauth2`, …).
    pub connection: Option<S>,
    pub org: Option<S>,
    #[serde(default)]
    pub attributes: BTreeMap<String, S>,
}

/// The token dialect a dev provider imitates: one of the real kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Entra,
    Okta,
    Auth0,
    Cognito,
    Firebase,
    AzureB2c,
}

impl Shape {
    pub const ALL: [Shape; 6] =
        [Shape::Entra, Shape::Okta, Shape::Auth0, Shape::Cognito, Shape::Firebase, Shape::AzureB2c];

    /// The real kind this shape imitates.
    pub fn kind(self) -> ProviderKind {
        match self {
            Shape::Entra => ProviderKind::Entra,
            Shape::Okta => ProviderKind::Okta,
            Shape::Auth0 => ProviderKind::Auth0,
            Shape::Cognito => ProviderKind::Cognito,
            Shape::Firebase => ProviderKind::Firebase,
            Shape::AzureB2c => ProviderKind::AzureB2c,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }

    pub fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|shape| shape.as_str() == s)
    }
}

/// A dev provider's validated keys; as a kind it reads tokens in its shape's dialect.
#[derive(Debug, Clone)]
pub struct DevSpec {
    pub shape: Shape,
    pub signing_key: PathBuf,
    pub users: Vec<DevUserSpec>,
    pub token_ttl: Duration,
    /// The tenant the shaped tokens carry (a GUID for the entra shape, a pool id for cognito …).
    pub tenant: String,
    /// Entra-shape tenant allow-list (defaults to `[tenant]`).
    pub tenants: Vec<String>,
    /// The real kind whose rules read this provider's tokens.
    pub shaped: Arc<dyn kinds::Kind>,
    /// azure_b2c shape with `policies:`: each policy's signing key, served at
    /// `…/{id}/{policy}/jwks` (empty: one key at `…/{id}/jwks`).
    pub policy_keys: Vec<(String, PathBuf)>,
    /// With `policy_keys`: the policies `token mint` issues under (sign-in, and the MFA
    /// one for `mfa` users).
    pub mint_policies: (Option<String>, Option<String>),
}

impl DevSpec {
    /// The policy and key file a token for a user (`mfa`) is minted with outside a
    /// sign-in (`token mint`): the sign-in policy, or the MFA policy for MFA users;
    /// `None` without per-policy keys.
    pub fn mint_policy(&self, mfa: bool) -> Option<(&str, &std::path::Path)> {
        let (signin, mfa_policy) = &self.mint_policies;
        let name = if mfa { mfa_policy.as_ref().or(signin.as_ref()) } else { signin.as_ref() }?;
        self.policy_keys.iter().find(|(p, _)| p.eq_ignore_ascii_case(name)).map(|(p, k)| (p.as_str(), k.as_path()))
    }
}

#[derive(Debug, Clone)]
pub struct DevUserSpec {
    pub name: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub mfa: bool,
    pub email_verified: Option<bool>,
    pub connection: Option<String>,
    pub org: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// The dev provider's keys, when `spec` is one.
pub fn section_of(spec: &ProviderSpec) -> Option<&DevSpec> {
    super::kind::kind_of(spec)?.as_dev()
}

/// Token checks, sign-in and step-up follow the shape; keys, issuers, discovery and
/// sign-out are the dev OP's own.
impl kinds::Kind for DevSpec {
    fn label(&self) -> ProviderKind {
        ProviderKind::Dev
    }

    fn as_dev(&self) -> Option<&DevSpec> {
        Some(self)
    }

    fn precheck(&self, header: &super::jwt::JoseHeader, c: &super::claims::Claims) -> Result<(), Refusal> {
        self.shaped.precheck(header, c)
    }

    fn identity(&self, ctx: &super::kind::Ctx<'_>, c: &super::claims::Claims) -> Result<Identity, Refusal> {
        self.shaped.identity(ctx, c)
    }

    fn for_sign_in(&self) -> Option<Arc<dyn kinds::Kind>> {
        let shaped = self.shaped.for_sign_in()?;
        Some(Arc::new(DevSpec { shaped, ..self.clone() }))
    }

    fn hint_params(&self, login_hint: &str) -> Vec<Param> {
        self.shaped.hint_params(login_hint)
    }

    fn step_up_params(&self, spec: &ProviderSpec) -> Vec<Param> {
        self.shaped.step_up_params(spec)
    }

    /// Per-policy keys: the shape's per-policy locations on this OP.
    fn key_locations(&self, template: &str) -> Option<Vec<kinds::KeyLocation>> {
        if self.policy_keys.is_empty() {
            return None;
        }
        self.shaped.key_locations(template)
    }

    fn journey(&self, spec: &ProviderSpec, journey: Journey, authz: &str, route_policy: Option<&str>) -> Option<JourneyStart> {
        self.shaped.journey(spec, journey, authz, route_policy)
    }

    fn callback_error(&self, journey: Journey, error: &str, description: Option<&str>) -> Option<ErrorTurn> {
        self.shaped.callback_error(journey, error, description)
    }

    fn creates_sessions(&self) -> bool {
        self.shaped.creates_sessions()
    }
}

pub static LOADER: Loader<DevFile> = Loader { kind: ProviderKind::Dev, population: None, issuer: None, check };

fn check(f: &DevFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    let shape = Shape::parse(&f.shape).unwrap_or_else(|| {
        let all: Vec<&str> = Shape::ALL.iter().map(|s| s.as_str()).collect();
        cx.at("shape", format!("`{}` is not one of {}", &*f.shape, all.join(", ")));
        Shape::Okta
    });
    let signing_key = cx.base_dir.join(&*f.signing_key);
    if !signing_key.exists() {
        cx.at("signing_key", format!("{} does not exist (run `idfabric keys generate`)", signing_key.display()));
    }
    if f.users.is_empty() {
        cx.at("users", "a dev provider needs at least one user");
    }
    let users = users(&f.users, cx);
    let tenant = match (&f.tenant, shape) {
        (Some(t), _) => t.to_string(),
        (None, Shape::Entra) => guid_from(&spec.id),
        (None, Shape::Cognito) => spec.id.clone(),
        (None, Shape::AzureB2c) => azure_b2c::issuer_tenant(&spec.issuer).unwrap_or_default(),
        (None, _) => cx.issuer_host.clone(),
    };
    if shape == Shape::Entra && !is_guid(&tenant) {
        cx.at("tenant", "the entra shape needs a GUID tenant id");
    }
    let policy_keys = dev_policies(f, shape, &signing_key, cx);
    if shape == Shape::AzureB2c {
        b2c_shape(spec, &tenant, !policy_keys.is_empty(), cx);
    } else if f.policies.is_some() || f.mfa_policies.is_some() || f.journeys.is_some() {
        cx.at("policies", "policies, mfa_policies and journeys are for the azure_b2c shape");
    }
    if shape == Shape::AzureB2c && f.signup.is_some() {
        cx.at("signup", "the azure_b2c shape signs up with a policy: name it in `journeys.signup`");
    }
    let tenants = match &f.tenants {
        Some(t) => strings(t).into_iter().map(|t| t.to_ascii_lowercase()).collect(),
        None => vec![tenant.to_ascii_lowercase()],
    };
    if spec.audiences.is_empty() {
        spec.audiences = vec!["api://idfabric".into()];
    }
    if spec.client_id.is_none() {
        spec.client_id = Some(format!("{}-app", spec.id));
    }
    let signup = kinds::signup_default(f.signup, spec);
    let b2c = b2c_rules(f, &policy_keys, cx);
    if shape == Shape::AzureB2c {
        spec.route_policies = b2c.0.clone();
    }
    let mint_policies = if policy_keys.is_empty() {
        (None, None)
    } else {
        let (policies, mfa, journeys) = &b2c;
        (journeys.signin.clone().or(policies.first().cloned()), journeys.mfa.clone().or(mfa.first().cloned()))
    };
    let shaped = shaped(shape, spec, &tenant, &tenants, signup, b2c);
    if spec.mfa_acr.is_empty() {
        spec.mfa_acr = shaped.dev_mfa_acr();
    }
    let token_ttl = crate::config::kind::duration(cx, "token_ttl", f.token_ttl.as_ref(), Duration::from_secs(3600));
    section(DevSpec { shape, signing_key, users, token_ttl, tenant, tenants, shaped, policy_keys, mint_policies })
}

fn users(list: &[DevUser], cx: &mut SectionCheck<'_, '_>) -> Vec<DevUserSpec> {
    let mut names = HashSet::new();
    list.iter()
        .map(|u| {
            if !names.insert(u.name.to_string()) || !valid_id(&u.name) {
                cx.problems.at(
                    Some(&format!("name: {}", &*u.name)),
                    "users.name",
                    format!("`{}` is duplicate or not a simple name", &*u.name),
                );
            }
            DevUserSpec {
                name: u.name.to_string(),
                email: u.email.as_ref().map(|s| s.to_string()),
                display_name: u.display_name.as_ref().map(|s| s.to_string()),
                groups: strings(&u.groups),
                roles: strings(&u.roles),
                scopes: strings(&u.scopes),
                mfa: u.mfa,
                email_verified: u.email_verified,
                connection: u.connection.as_ref().map(|s| s.to_string()),
                org: u.org.as_ref().map(|s| s.to_string()),
                attributes: u.attributes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            }
        })
        .collect()
}

/// `policies:` of an azure_b2c-shaped dev provider: each policy and its key file.
fn dev_policies(f: &DevFile, shape: Shape, signing_key: &std::path::Path, cx: &mut SectionCheck<'_, '_>) -> Vec<(String, PathBuf)> {
    let Some(list) = f.policies.as_ref().filter(|_| shape == Shape::AzureB2c) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in list {
        let name = p.name.to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            cx.at("policies.name", format!("`{name}` is not a policy name (e.g. B2C_1_susi)"));
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            cx.at("policies.name", format!("`{name}` is listed twice"));
        }
        let key = match &p.signing_key {
            Some(k) => cx.base_dir.join(&**k),
            None => signing_key.to_path_buf(),
        };
        if !key.exists() {
            cx.at("policies.signing_key", format!("{} does not exist (run `idfabric keys generate`)", key.display()));
        }
        out.push((name, key));
    }
    if out.is_empty() {
        cx.at("policies", "lists no policy");
    }
    out
}

/// The azure_b2c shape's policies, MFA policies and journeys: the file's (with
/// `policies:`), else the two default user flows.
fn b2c_rules(f: &DevFile, policy_keys: &[(String, PathBuf)], cx: &mut SectionCheck<'_, '_>) -> (Vec<String>, Vec<String>, azure_b2c::Journeys) {
    if policy_keys.is_empty() {
        return (vec![B2C_POLICY.into(), B2C_MFA_POLICY.into()], vec![B2C_MFA_POLICY.into()], azure_b2c::Journeys::default());
    }
    let policies: Vec<String> = policy_keys.iter().map(|(p, _)| p.clone()).collect();
    let mfa: Vec<String> = f.mfa_policies.as_ref().map(|m| strings(m)).unwrap_or_default();
    for m in &mfa {
        if !policies.iter().any(|p| p.eq_ignore_ascii_case(m)) {
            cx.at("mfa_policies", format!("`{m}` is not one of `policies`"));
        }
    }
    let journeys = azure_b2c::check_journeys(f.journeys.as_ref(), &policies, &mfa, cx);
    (policies, mfa, journeys)
}

/// B2C issuers name the tenant GUID in their path, so must an azure_b2c-shaped dev
/// provider's; discovery does not live under such an issuer, so keys come from the
/// dev OP's own JWKS (one per policy with `policies:`).
fn b2c_shape(spec: &mut ProviderSpec, tenant: &str, per_policy: bool, cx: &mut SectionCheck<'_, '_>) {
    if azure_b2c::issuer_tenant(&spec.issuer).as_deref() != Some(tenant.to_ascii_lowercase().as_str()) {
        cx.at(
            "issuer",
            format!("the azure_b2c shape needs an issuer naming its tenant GUID, e.g. `…/.idfabric/dev/{}/{{tenant-guid}}/v2.0/`", spec.id),
        );
    }
    if spec.jwks_url.is_none() && spec.discovery_url.is_none() {
        let marker = format!("/.idfabric/dev/{}", spec.id);
        if let Some(i) = spec.issuer.find(&marker) {
            let leaf = if per_policy { "{policy}/jwks" } else { "jwks" };
            spec.jwks_url = Some(format!("{}/{leaf}", &spec.issuer[..i + marker.len()]));
        }
    }
}

/// The rules of the real kind a shape imitates, as a dev provider configures them.
fn shaped(
    shape: Shape,
    spec: &ProviderSpec,
    tenant: &str,
    tenants: &[String],
    signup: bool,
    (policies, mfa_policies, journeys): (Vec<String>, Vec<String>, azure_b2c::Journeys),
) -> Arc<dyn kinds::Kind> {
    match shape {
        Shape::Entra => Arc::new(entra::Entra {
            tenants: tenants.to_vec(),
            variant: entra::EntraVariant::Workforce,
            discovery_authority: None,
            signup,
            issuer_tenant: Default::default(),
        }),
        Shape::Okta => Arc::new(okta::Okta { org_id: None, signup }),
        Shape::Auth0 => Arc::new(auth0::Auth0 { tenant_domain: tenant.to_string(), extra_issuers: Vec::new(), signup }),
        Shape::Cognito => {
            Arc::new(cognito::Cognito { token_use: cognito::AcceptedUse::Access, groups_are_roles: false, signup })
        }
        // The project id is the client id (Firebase `aud`); project-level users only.
        Shape::Firebase => Arc::new(firebase::Firebase::new(spec.client_id.clone().unwrap_or_default(), Vec::new(), false)),
        // The file's policies, else one user flow plus an MFA-enforcing one for users
        // with `mfa: true`; the tenant is the GUID the dev issuer names (checked above).
        Shape::AzureB2c => Arc::new(azure_b2c::AzureB2c {
            policies,
            mfa_policies,
            extra_issuers: Vec::new(),
            tenant: tenant.to_ascii_lowercase(),
            journeys,
        }),
    }
}

/// A stable GUID-shaped id derived from a provider id (dev tenants look real).
pub fn guid_from(seed: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let h: String = d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

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
pub fn stable(seed: &str, len: usize) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()[..len].to_string()
}

pub fn guid(seed: &str) -> String {
    guid_from(seed)
}

/// Mints a token for `user`, shaped like `dev.shape`.
pub fn mint(spec: &ProviderSpec, dev: &DevSpec, signer: &Signer, user: &DevUserSpec, o: &MintOptions) -> String {
    mint_for_policy(spec, dev, signer, user, o, None)
}

/// [`mint`] for an azure_b2c-shaped provider's `policy` (its `tfp`).
pub fn mint_for_policy(spec: &ProviderSpec, dev: &DevSpec, signer: &Signer, user: &DevUserSpec, o: &MintOptions, policy: Option<&str>) -> String {
    let exp = o.now + o.ttl.unwrap_or(dev.token_ttl.as_secs() as i64);
    let mut c = Map::new();
    c.insert("iss".into(), json!(spec.issuer));
    c.insert("iat".into(), json!(o.now));
    c.insert("exp".into(), json!(exp));
    if let Some(n) = &o.nonce {
        c.insert("nonce".into(), json!(n));
    }
    let t = DevToken {
        spec,
        dev,
        user,
        o,
        client_id: spec.client_id.clone().unwrap_or_default(),
        audience: spec.audiences.first().cloned().unwrap_or_default(),
        seed: format!("{}/{}", spec.id, user.name),
        email: user.email.clone(),
        policy,
    };
    dev.shaped.dev_token(&t, &mut c);
    let (seed, c) = (&t.seed, &mut c);
    if let Some(n) = o.serial {
        c.insert("jti".into(), json!(format!("{}-{n}", stable(&format!("{seed}/{}", o.now), 12))));
    }
    signer.sign_jwt("JWT", &Value::Object(std::mem::take(c)))
}

/// What a kind's `dev_token` writes a token from.
pub struct DevToken<'a> {
    pub spec: &'a ProviderSpec,
    pub dev: &'a DevSpec,
    pub user: &'a DevUserSpec,
    pub o: &'a MintOptions,
    pub client_id: String,
    /// The first configured audience (access tokens).
    pub audience: String,
    /// `{provider}/{user}`: stable ids derive from it.
    pub seed: String,
    pub email: Option<String>,
    /// azure_b2c shape: the policy the token is issued under (`None`: the shape's default).
    pub policy: Option<&'a str>,
}

impl DevToken<'_> {
    pub fn scopes(&self) -> Vec<String> {
        scopes(self.user)
    }
}

pub fn dev_mfa_values(spec: &ProviderSpec) -> Vec<String> {
    spec.mfa_acr.first().cloned().into_iter().collect()
}

pub fn scopes(user: &DevUserSpec) -> Vec<String> {
    let mut s = vec!["openid".to_string(), "profile".to_string(), "email".to_string()];
    s.extend(user.scopes.iter().cloned());
    s
}

pub fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::kind::{kind_of, Ctx};
    use crate::providers::{jwt, map_identity};

    /// A dev provider of each shape: its tokens, minted with the shape's `dev_token`,
    /// read back by the same kind's rules (the signature checked with its own key).
    #[test]
    fn every_shape_mints_tokens_its_kind_accepts() {
        let dir = tempfile::tempdir().unwrap();
        crate::keys::generate_dev_set(&dir.path().join("certs"), false, false).unwrap();
        std::fs::create_dir_all(dir.path().join("providers")).unwrap();
        let mut ids = Vec::new();
        for shape in Shape::ALL {
            let id = format!("dev-{}", shape.as_str().replace('_', "-"));
            let issuer = match shape {
                Shape::AzureB2c => format!("http://127.0.0.1:8080/.idfabric/dev/{id}/{}/v2.0/", guid_from("b2c")),
                _ => format!("http://127.0.0.1:8080/.idfabric/dev/{id}"),
            };
            let yaml = format!(
                "id: {id}\nkind: dev\npopulation: customer\nshape: {}\nissuer: {issuer}\nsigning_key: certs/dev-idp-customer.pem\n\
                 users:\n  - {{ name: ann, email: ann@example.net, email_verified: true, mfa: true, groups: [g1], scopes: [orders:read] }}\n",
                shape.as_str()
            );
            std::fs::write(dir.path().join(format!("providers/{id}.yaml")), yaml).unwrap();
            ids.push(id);
        }
        let routes = format!("listen: {{ http: 127.0.0.1:8080 }}\nproviders: [{}]\nroutes: []\n", ids.join(", "));
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        let config = crate::config::load(&dir.path().join("routes.yaml"), crate::providers::KINDS).unwrap();
        for spec in &config.providers {
            let kind = kind_of(spec).unwrap();
            let dev = kind.as_dev().unwrap();
            assert_eq!(kind.label(), ProviderKind::Dev);
            assert!(kind.extra_issuers().is_empty() && kind.key_locations("x").is_none(), "keys and issuers are the dev OP's own");
            let signer = Signer::load(&dev.signing_key).unwrap();
            let keys = super::super::jwks::parse_jwks(super::super::dev_op::jwks(&signer).to_string().as_bytes(), "dev").unwrap();
            let o = MintOptions { kind: Kind::Access, now: super::super::now_secs(), ttl: None, nonce: None, serial: None };
            let token = mint(spec, dev, &signer, &dev.users[0], &o);
            let parsed = jwt::parse(&token).unwrap();
            let key = keys.find(parsed.header.kid.as_deref()).unwrap();
            jwt::verify_signature(&parsed, key).unwrap();
            let ctx = Ctx { spec, kind_label: spec.kind(), header: &parsed.header, key };
            let id = map_identity(&**kind, &ctx, &parsed.claims).unwrap_or_else(|r| panic!("{}: {r:?}", dev.shape.as_str()));
            assert_eq!(id.provider_kind, ProviderKind::Dev);
            assert!(id.sub.starts_with(&format!("{}:", spec.id)) && !id.subject.is_empty());
            assert!(id.mfa, "{}: an mfa user's token proves it in the shape's own way", dev.shape.as_str());
        }
    }

    #[test]
    fn guid_from_is_stable_and_shaped() {
        let g = guid_from("dev-workforce");
        assert_eq!(g, guid_from("dev-workforce"));
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
    }
}
