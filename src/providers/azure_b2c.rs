//! Azure AD B2C: exact issuers (one tenant, several host variants, trailing slash),
//! the policy in `tfp`/`acr` checked against the configured policies (never an
//! assurance level), MFA only from configured `mfa_policies`, `emails` as an array,
//! `idp` for social accounts and `extension_*` attributes; discovery and keys are
//! published per policy, so keys come from every configured policy, each key bound to
//! the policies that publish it (a token of policy A never verifies with a key only
//! policy B publishes).
//!
//! User journeys: each is its own policy (`journeys:` names them). Sign-in, sign-up,
//! password reset and profile edit start at their policy's own authorize endpoint; a
//! step-up runs the MFA policy; the sign-up/sign-in page's "Forgot your password?"
//! answers `AADB2C90118`, which starts the reset policy, and a cancelled page answers
//! `AADB2C90091`, which returns to the sign-in.
//!
//! Vendor references: <https://learn.microsoft.com/en-us/azure/active-directory-b2c/tokens-overview>
//! (claims, issuer forms, per-policy metadata), <https://learn.microsoft.com/en-us/azure/active-directory-b2c/claimsschema>,
//! <https://learn.microsoft.com/en-us/azure/active-directory-b2c/add-password-reset-policy>
//! (`AADB2C90118` starts the password reset policy),
//! <https://learn.microsoft.com/en-us/azure/active-directory-b2c/error-codes> (`AADB2C90091`: the user cancelled),
//! <https://learn.microsoft.com/en-us/azure/active-directory-b2c/openid-connect> (authorize per policy, `prompt=login`).

use super::claims::Claims;
use super::dev::{guid, scopes, DevToken, Kind as MintKind, B2C_MFA_POLICY, B2C_POLICY};
use super::kind::{check_audience_or_client, section, Ctx, Kind, KeyLocation, Loader};
use crate::journey::{ErrorTurn, Journey, JourneyStart};
use crate::config::kind::{check_scheme, is_guid, opt_strings, strings, SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, MfaSource, Population, ProviderKind, TokenUse};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};

/// What old B2C tenants put into `sub` when no subject claim is mapped: a constant
/// sentence, never a user id
/// (<https://learn.microsoft.com/en-us/azure/active-directory-b2c/tokens-overview#claims>).
const LEGACY_SUB: &str = "Not supported currently. Use oid claim.";

crate::provider_file!(
    /// `kind: azure_b2c` (Azure AD B2C: keys and discovery per policy).
    AzureB2cFile {
        /// The user flows / custom policies accepted (`tfp` or `acr`, case-insensitive).
        policies: Vec<S>,
        /// Policies configured with MFA always enforced: their tokens imply MFA.
        mfa_policies: Option<Vec<S>>,
        /// Extra accepted issuers (other host variants of the same tenant).
        issuers: Option<Vec<S>>,
        mfa_acr: Option<Vec<S>>,
        /// The policy each user journey runs (each one of `policies`).
        journeys: Option<JourneysFile>,
    }
);

/// `journeys:` of an Azure AD B2C provider (or a dev provider of that shape).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneysFile {
    /// Sign-in (default: the first of `policies`); usually a sign-up-or-sign-in flow.
    pub signin: Option<S>,
    /// "Create an account": a sign-up policy (or the sign-up-or-sign-in one).
    pub signup: Option<S>,
    /// Password reset, started by "Forgot your password?" (`AADB2C90118`) or a link.
    pub reset: Option<S>,
    /// Profile edit, a link on the sign-in page.
    pub profile: Option<S>,
    /// Step-up: a policy with MFA always on (one of `mfa_policies`).
    pub mfa: Option<S>,
}

/// The policy each journey runs (`None`: not offered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journeys {
    pub signin: Option<String>,
    pub signup: Option<String>,
    pub reset: Option<String>,
    pub profile: Option<String>,
    pub mfa: Option<String>,
}

/// The `AADB2C` code an `error_description` starts with, as B2C writes it
/// (`AADB2C90118: The user has forgotten their password.`).
fn b2c_code(description: &str) -> Option<&str> {
    let code = description.trim_start().split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    code.starts_with("AADB2C").then_some(code)
}

/// Forgot password: the sign-up/sign-in page's link, answered to the app.
pub const FORGOT_PASSWORD: &str = "AADB2C90118";
/// The user cancelled a self-asserted page.
pub const CANCELLED: &str = "AADB2C90091";

/// An Azure AD B2C provider's rules.
#[derive(Debug, Clone)]
pub struct AzureB2c {
    /// Accepted policies as written (compared case-insensitively).
    pub policies: Vec<String>,
    /// Policies that always enforce MFA (compared case-insensitively).
    pub mfa_policies: Vec<String>,
    /// Extra accepted issuers (exact strings, trailing slash included).
    pub extra_issuers: Vec<String>,
    /// The tenant GUID named by the issuer's path (lower-case).
    pub tenant: String,
    /// The policy of each user journey.
    pub journeys: Journeys,
}

impl AzureB2c {
    /// The URLs keys come from, one per policy: `url` with `{policy}` substituted, in
    /// the policies' configured spelling, each with its policy.
    pub fn per_policy(&self, url: &str) -> Vec<KeyLocation> {
        self.policies.iter().map(|p| KeyLocation { url: url.replace("{policy}", p), policy: Some(p.clone()) }).collect()
    }

    /// The configured spelling of an accepted policy.
    fn configured(&self, policy: &str) -> Option<&String> {
        self.policies.iter().find(|p| p.eq_ignore_ascii_case(policy))
    }

    /// The policy sign-in runs: `journeys.signin`, else the first of `policies`.
    pub fn signin_policy(&self) -> Option<&String> {
        self.journeys.signin.as_ref().or(self.policies.first())
    }

    /// The policy step-up runs: `journeys.mfa`, else the first of `mfa_policies`.
    pub fn mfa_policy(&self) -> Option<&String> {
        self.journeys.mfa.as_ref().or(self.mfa_policies.first())
    }

    pub fn allows(&self, policy: &str) -> bool {
        self.policies.iter().any(|p| p.eq_ignore_ascii_case(policy))
    }

    pub fn enforces_mfa(&self, policy: &str) -> bool {
        self.mfa_policies.iter().any(|p| p.eq_ignore_ascii_case(policy))
    }
}

impl Kind for AzureB2c {
    fn label(&self) -> ProviderKind {
        ProviderKind::AzureB2c
    }

    fn extra_issuers(&self) -> Vec<String> {
        self.extra_issuers.clone()
    }

    /// Every policy publishes its own discovery document and JWKS.
    fn key_locations(&self, template: &str) -> Option<Vec<KeyLocation>> {
        Some(self.per_policy(template))
    }

    /// Each journey at its own policy's endpoints; a route may name the sign-in policy.
    /// Step-up runs the MFA policy with a fresh sign-in (`prompt=login`); without one,
    /// the sign-in policy with `prompt=login` (whose tokens then show no MFA).
    fn journey(&self, _spec: &ProviderSpec, journey: Journey, _authz: &str, route_policy: Option<&str>) -> Option<JourneyStart> {
        let (policy, params) = match journey {
            Journey::Signin => (route_policy.map(|p| self.configured(p)).unwrap_or(self.signin_policy())?, Vec::new()),
            Journey::Signup => (self.journeys.signup.as_ref()?, Vec::new()),
            Journey::Reset => (self.journeys.reset.as_ref()?, Vec::new()),
            Journey::Profile => (self.journeys.profile.as_ref()?, Vec::new()),
            Journey::Stepup => (self.mfa_policy().or(self.signin_policy())?, vec![("prompt", "login".to_string())]),
        };
        Some(JourneyStart { policy: Some(policy.clone()), endpoint: None, params })
    }

    /// `AADB2C90118` (forgot password) starts the reset policy when one is configured;
    /// `AADB2C90091` (cancelled) returns to the sign-in.
    fn callback_error(&self, journey: Journey, error: &str, description: Option<&str>) -> Option<ErrorTurn> {
        if error != "access_denied" {
            return None;
        }
        match b2c_code(description?)? {
            FORGOT_PASSWORD if journey != Journey::Reset && self.journeys.reset.is_some() => Some(ErrorTurn::Start(Journey::Reset)),
            CANCELLED => Some(ErrorTurn::BackToSignIn),
            _ => None,
        }
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        identity(ctx, self, c)
    }

    /// A user-flow token: `tfp` (the MFA flow for MFA users), `emails`, `oid` = `sub`,
    /// `idp` for social accounts.
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let DevToken { user, o, client_id, audience, seed, email, .. } = t;
        let oid = guid(&seed);
        c.insert("nbf".into(), json!(o.now));
        c.insert("ver".into(), json!("1.0"));
        c.insert("sub".into(), json!(oid));
        c.insert("oid".into(), json!(oid));
        let policy = match t.policy {
            Some(p) => p.to_string(),
            None if user.mfa => self.mfa_policy().cloned().unwrap_or_else(|| B2C_MFA_POLICY.into()),
            None => self.signin_policy().cloned().unwrap_or_else(|| B2C_POLICY.into()),
        };
        c.insert("tfp".into(), json!(policy));
        c.insert("auth_time".into(), json!(o.now));
        if let Some(e) = &email {
            c.insert("emails".into(), json!([e]));
        }
        if let Some(n) = &user.display_name {
            c.insert("name".into(), json!(n));
        }
        if let Some(conn) = &user.connection {
            c.insert("idp".into(), json!(conn));
        }
        if o.kind == MintKind::Access {
            c.insert("aud".into(), json!(audience));
            c.insert("azp".into(), json!(client_id));
            c.insert("scp".into(), json!(scopes(user).join(" ")));
        } else {
            c.insert("aud".into(), json!(client_id));
        }
        for (k, v) in &user.attributes {
            c.insert(format!("extension_{k}"), json!(v));
        }
    }
}

pub static LOADER: Loader<AzureB2cFile> =
    Loader { kind: ProviderKind::AzureB2c, population: Some(Population::Customer), issuer: None, check };

/// The tenant GUID an Azure AD B2C issuer names: the first GUID path segment (default
/// pattern `https://{host}/{guid}/v2.0/`, `tfp` pattern `https://{host}/tfp/{guid}/{policy}/v2.0/`).
pub fn issuer_tenant(issuer: &str) -> Option<String> {
    let u = url::Url::parse(issuer).ok()?;
    let seg = u.path_segments()?.find(|s| is_guid(s))?;
    Some(seg.to_ascii_lowercase())
}

/// The policy a `tfp`-form issuer names (`https://{host}/tfp/{guid}/{policy}/v2.0/`).
pub fn issuer_policy(issuer: &str) -> Option<String> {
    let u = url::Url::parse(issuer).ok()?;
    let mut segs = u.path_segments()?;
    segs.by_ref().find(|s| *s == "tfp")?;
    let _tenant = segs.next()?;
    segs.next().filter(|p| !p.is_empty() && *p != "v2.0").map(str::to_string)
}

fn check(f: &AzureB2cFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    let policies = strings(&f.policies);
    if policies.is_empty() {
        cx.at("policies", "is required: the user flows / custom policies whose tokens are accepted");
    }
    for pol in &policies {
        if pol.is_empty() || pol.contains('/') || pol.contains('{') {
            cx.at("policies", format!("`{pol}` is not a policy name (e.g. B2C_1_susi)"));
        }
    }
    let mfa_policies = opt_strings(&f.mfa_policies);
    for m in &mfa_policies {
        if !policies.iter().any(|x| x.eq_ignore_ascii_case(m)) {
            cx.at("mfa_policies", format!("`{m}` is not one of `policies`"));
        }
    }
    let journeys = check_journeys(f.journeys.as_ref(), &policies, &mfa_policies, cx);
    if f.mfa_acr.is_some() {
        cx.at("mfa_acr", "B2C's `acr` is the policy name, not an assurance level: list MFA policies in `mfa_policies`");
    }
    spec.mfa_acr.clear();
    let extra = opt_strings(&f.issuers);
    let tenant = issuer_tenant(&spec.issuer);
    check_issuers(spec, &extra, tenant.as_deref(), cx);
    for (key, v) in [("discovery_url", &spec.discovery_url), ("jwks_url", &spec.jwks_url)] {
        if let Some(v) = v {
            if policies.len() > 1 && !v.contains("{policy}") {
                cx.at(key, "B2C keys are per policy: put a `{policy}` placeholder in the URL");
            }
        }
    }
    if spec.discovery_url.is_none() && spec.jwks_url.is_none() {
        // https://{host}/{guid}/v2.0/ -> https://{host}/{guid}/{policy}/v2.0/.well-known/openid-configuration
        match spec.issuer.strip_suffix("/v2.0/") {
            Some(base) if !base.contains("/tfp/") => {
                spec.discovery_url = Some(format!("{base}/{{policy}}/v2.0/.well-known/openid-configuration"));
            }
            _ if spec.issuer.is_empty() => {}
            _ => cx.at("discovery_url", "is required for this issuer (with a `{policy}` placeholder)"),
        }
    }
    if spec.audiences.is_empty() && spec.client_id.is_none() {
        cx.at("audiences", "is required (or client_id): the application id(s) tokens carry in `aud`");
    }
    spec.route_policies = policies.clone();
    section(AzureB2c { policies, mfa_policies, extra_issuers: extra, tenant: tenant.unwrap_or_default(), journeys })
}

/// `journeys:`: each policy one of `policies` (its tokens must be accepted when the
/// journey returns), the MFA one one of `mfa_policies` (else step-up could never show
/// MFA).
pub fn check_journeys(f: Option<&JourneysFile>, policies: &[String], mfa_policies: &[String], cx: &mut SectionCheck<'_, '_>) -> Journeys {
    let Some(f) = f else { return Journeys::default() };
    let mut one = |key: &str, v: &Option<S>| -> Option<String> {
        let v = v.as_ref()?.to_string();
        match policies.iter().find(|p| p.eq_ignore_ascii_case(&v)) {
            Some(p) => Some(p.clone()),
            None => {
                cx.at(&format!("journeys.{key}"), format!("`{v}` is not one of `policies` (its tokens would be refused)"));
                None
            }
        }
    };
    let j = Journeys {
        signin: one("signin", &f.signin),
        signup: one("signup", &f.signup),
        reset: one("reset", &f.reset),
        profile: one("profile", &f.profile),
        mfa: one("mfa", &f.mfa),
    };
    if let Some(m) = &j.mfa {
        if !mfa_policies.iter().any(|x| x.eq_ignore_ascii_case(m)) {
            cx.at("journeys.mfa", format!("`{m}` is not one of `mfa_policies`: its tokens would never show MFA"));
        }
    }
    j
}

/// The issuer and extra issuers: trailing slash, the tenant GUID in the path, the same
/// tenant in every one.
fn check_issuers(spec: &ProviderSpec, extra: &[String], tenant: Option<&str>, cx: &mut SectionCheck<'_, '_>) {
    if !spec.issuer.is_empty() {
        if !spec.issuer.ends_with('/') {
            cx.at("issuer", "B2C issuers end with `/` (https://{host}/{tenant-guid}/v2.0/)");
        }
        if tenant.is_none() {
            cx.at("issuer", "a B2C issuer names the tenant id (GUID) in its path: https://{host}/{tenant-guid}/v2.0/");
        }
    }
    for i in extra {
        match url::Url::parse(i) {
            Ok(u) => check_scheme(cx, "issuers", &u),
            Err(e) => cx.at("issuers", format!("`{i}` is not a URL: {e}")),
        }
        if !i.ends_with('/') {
            cx.at("issuers", format!("`{i}`: B2C issuers end with `/`"));
        }
        if tenant.is_some() && issuer_tenant(i).as_deref() != tenant {
            cx.at("issuers", format!("`{i}` does not name the issuer's tenant id"));
        }
    }
}

fn identity(ctx: &Ctx<'_>, k: &AzureB2c, c: &Claims) -> Result<Identity, Refusal> {
    let iss = c.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
    if iss != ctx.spec.issuer && !k.extra_issuers.iter().any(|i| i == iss) {
        return Err(Refusal::IssuerMismatch);
    }
    // The tenant is the GUID in the issuer's path; a custom policy's `tid` must agree.
    let tenant = issuer_tenant(iss).ok_or(Refusal::IssuerMismatch)?;
    if !k.tenant.is_empty() && tenant != k.tenant {
        return Err(Refusal::IssuerMismatch);
    }
    if let Some(tid) = c.str("tid") {
        if !tid.eq_ignore_ascii_case(&tenant) {
            return Err(Refusal::IssuerMismatch);
        }
    }
    // `tfp` (user flows) or `acr` (starter-pack custom policies): a policy name.
    let policy = c.str("tfp").or_else(|| c.str("acr")).ok_or(Refusal::MissingClaim("tfp"))?;
    if !k.allows(policy) {
        return Err(Refusal::PolicyNotAllowed);
    }
    // A key fetched from some policies' documents verifies only those policies' tokens.
    if !ctx.key.policies.is_empty() && !ctx.key.policies.iter().any(|p| p.eq_ignore_ascii_case(policy)) {
        return Err(Refusal::KeyPolicyMismatch);
    }
    // The `tfp` issuer form names the policy too: it must be the token's.
    if let Some(named) = issuer_policy(iss) {
        if !named.eq_ignore_ascii_case(policy) {
            return Err(Refusal::IssuerMismatch);
        }
    }
    check_audience_or_client(ctx, c)?;
    let subject = match (c.str("oid"), c.str("sub")) {
        (Some(oid), _) => oid,
        (None, Some(sub)) if sub != LEGACY_SUB => sub,
        (None, Some(_)) => return Err(Refusal::InvalidSubject),
        (None, None) => return Err(Refusal::MissingClaim("oid")),
    };
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, ctx.spec.population, subject.to_string());
    id.issuer = iss.to_string();
    id.tenant = tenant;
    id.email = c.list("emails").into_iter().next().or_else(|| c.string("email"));
    // B2C asserts nothing about the address: `emails` is whatever the user flow collected.
    id.email_verified = None;
    id.name = c.string("name");
    id.scopes = c.scope_list("scp");
    let is_access = c.has("scp");
    id.token_use = if is_access { TokenUse::Access } else { TokenUse::Id };
    id.client_id = if is_access { c.string("azp") } else { c.audiences().first().map(|s| s.to_string()) };
    id.auth_time = c.i64("auth_time");
    // `acr` here is a policy name: never an `acr`, never MFA evidence by itself.
    id.acr = None;
    id.amr = Vec::new();
    id.amr_raw = Vec::new();
    if k.enforces_mfa(policy) {
        id.mfa = true;
        id.mfa_source = MfaSource::Acr;
    } else {
        id.mfa = false;
        id.mfa_source = MfaSource::None;
    }
    (id.idp, id.idp_kind) = idp(c.str("idp"), &ctx.spec.id);
    id.groups_complete = false;
    id.attributes.insert("b2c_policy".into(), Value::String(policy.to_string()));
    for (name, v) in c.iter() {
        if let Some(attr) = name.strip_prefix("extension_") {
            if !attr.is_empty() {
                id.attributes.insert(attr.to_string(), v.to_value());
            }
        } else if name == "newUser" {
            id.attributes.insert("new_user".into(), v.to_value());
        } else if name == "emails" {
            id.attributes.insert("emails".into(), v.to_value());
        }
    }
    Ok(id)
}

/// Where the user signed in: no `idp` = a local account; social IdPs by domain;
/// Entra tenants by their issuer (<https://learn.microsoft.com/en-us/azure/active-directory-b2c/tokens-overview#claims>).
fn idp(v: Option<&str>, provider: &str) -> (String, String) {
    const SOCIAL: &[&str] = &[
        "google.com", "facebook.com", "live.com", "github.com", "amazon.com", "linkedin.com", "twitter.com",
        "apple.com", "microsoft.com", "qq.com", "wechat.com", "weibo.com",
    ];
    let Some(v) = v else { return (provider.to_string(), "native".into()) };
    if SOCIAL.iter().any(|s| v.eq_ignore_ascii_case(s)) {
        return (format!("b2c-idp:{v}"), "social".into());
    }
    let home = v
        .strip_prefix("https://sts.windows.net/")
        .or_else(|| v.strip_prefix("https://login.microsoftonline.com/"))
        .map(|r| r.trim_end_matches('/').trim_end_matches("/v2.0"));
    match home {
        Some(tid) if is_guid(tid) => (format!("entra:{}", tid.to_ascii_lowercase()), "enterprise".into()),
        _ => (format!("b2c-idp:{v}"), "unknown".into()),
    }
}

#[cfg(test)]
mod tests;
