//! Microsoft Entra ID (workforce and External ID): the `{tenantid}` issuer template
//! bound to `tid` and to the key's own issuer, the tenant allow-list, `oid` as the
//! subject, group overage, v1/v2 claim differences, `domain_hint` and the `acrs`
//! claims challenge at sign-in.
//!
//! Vendor references: token claims
//! <https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference>
//! and <https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference>;
//! multi-tenant issuer validation
//! <https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#validate-the-issuer>;
//! group overage <https://learn.microsoft.com/en-us/security/zero-trust/develop/configure-tokens-group-claims-app-roles>;
//! authentication-context claims challenges
//! <https://learn.microsoft.com/en-us/entra/identity-platform/developer-guide-conditional-access-authentication-context>.

use super::claims::{apply_amr_acr, Claims};
use super::dev::{dev_mfa_values, guid, scopes, stable, DevToken, Kind as MintKind};
use super::kind::{check_audience, section, standard_journey, Ctx, Kind, Loader, Param};
use crate::journey::{Journey, JourneyStart};
use crate::config::kind::{is_guid, opt_strings, SectionCheck, S};
use crate::config::{KindSection, ProviderSpec};
use crate::identity::{Identity, PrincipalType, ProviderKind, TokenUse, Population};
use crate::refusal::Refusal;
use serde_json::{json, Map, Value};

/// Tenant of personal Microsoft accounts (MSA), the `tid` of consumer users
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference#payload-claims>).
pub const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Auth context asked for at step-up when `mfa_acr` names none.
const DEFAULT_AUTH_CONTEXT: &str = "c1";

crate::provider_file!(
    /// `kind: entra` (Microsoft Entra ID, workforce or External ID).
    EntraFile {
        tenants: Option<Vec<S>>,
        variant: Option<S>,
        mfa_acr: Option<Vec<S>>,
        /// External ID: "Create an account" on the sign-in page (default: on for
        /// External ID, which is the only variant with sign-up).
        signup: Option<bool>,
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraVariant {
    Workforce,
    External,
}

/// An Entra provider's rules.
#[derive(Debug, Clone)]
pub struct Entra {
    /// Allowed `tid` values (lower-case); empty = only the tenant in the issuer.
    pub tenants: Vec<String>,
    pub variant: EntraVariant,
    /// For `common`/`organizations` authorities: the original issuer URL, used to
    /// build the discovery URL while `issuer` holds the `{tenantid}` template.
    pub discovery_authority: Option<String>,
    /// External ID sign-up offered (`prompt=create`).
    pub signup: bool,
    /// What the issuer template's tenant segment asks of a token's `tid`, worked out
    /// once per template (the template it was worked out for, the rule).
    pub issuer_tenant: std::sync::OnceLock<(String, IssuerTenant)>,
}

/// What the first path segment of an issuer (the tenant, in Microsoft's issuers) asks
/// of a token's `tid`, given that the issuer is the template with `tid` substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerTenant {
    /// The issuer names no tenant (a dev issuer): nothing to bind.
    Unbound,
    /// The first segment is `{tenantid}` itself: it is the `tid`, which was substituted.
    Substituted,
    /// The first segment is fixed (or missing, `None`) and must be the `tid`.
    Fixed(Option<String>),
    /// Anything else (the placeholder inside a longer segment): parse each issuer.
    PerToken,
}

impl IssuerTenant {
    /// The rule for `template`. A tenant id is 36 characters of `[0-9a-f-]`, so any two
    /// substitute into the same URL structure: one probe tells how every `tid` parses.
    fn of(template: &str) -> IssuerTenant {
        const PROBE: &str = "00000000-0000-0000-0000-000000000000";
        let templated = template.contains("{tenantid}");
        let first = first_segment(&template.replace("{tenantid}", PROBE));
        match first {
            Some(seg) if templated && seg == PROBE => IssuerTenant::Substituted,
            Some(seg) if seg.contains(PROBE) => IssuerTenant::PerToken,
            seg if templated || seg.as_deref().is_some_and(is_guid) => IssuerTenant::Fixed(seg),
            _ => IssuerTenant::Unbound,
        }
    }
}

/// The first path segment of `url`, lower-cased.
fn first_segment(url: &str) -> Option<String> {
    url::Url::parse(url).ok().and_then(|u| u.path_segments()?.next().map(str::to_ascii_lowercase))
}

/// Whether `template` with every `{tenantid}` replaced by `tid` is exactly `iss`,
/// compared in place (no string is built per token).
fn is_instance(template: &str, tid: &str, iss: &str) -> bool {
    let mut parts = template.split("{tenantid}");
    let Some(mut rest) = iss.strip_prefix(parts.next().unwrap_or("")) else { return false };
    for part in parts {
        match rest.strip_prefix(tid).and_then(|r| r.strip_prefix(part)) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

impl Kind for Entra {
    fn label(&self) -> ProviderKind {
        ProviderKind::Entra
    }

    fn discovery_base<'a>(&'a self, spec: &'a ProviderSpec) -> &'a str {
        self.discovery_authority.as_deref().unwrap_or(&spec.issuer)
    }

    fn identity(&self, ctx: &Ctx<'_>, c: &Claims) -> Result<Identity, Refusal> {
        identity(ctx, self, c)
    }

    /// The typed address's domain skips Microsoft's own account picker.
    fn hint_params(&self, login_hint: &str) -> Vec<Param> {
        match login_hint.rsplit_once('@') {
            Some((_, d)) => vec![("domain_hint", d.to_string())],
            None => Vec::new(),
        }
    }

    /// External ID sign-up: `prompt=create` opens the user flow's sign-up page
    /// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow#request-an-authorization-code>).
    fn journey(&self, spec: &ProviderSpec, journey: Journey, _authz: &str, _route_policy: Option<&str>) -> Option<JourneyStart> {
        match journey {
            Journey::Signup if self.signup => Some(JourneyStart { params: vec![("prompt", "create".into())], ..JourneyStart::default() }),
            _ => standard_journey(self, spec, journey),
        }
    }

    /// A claims challenge for the authentication context (Conditional Access decides
    /// which second factor it needs); Entra ignores `acr_values`.
    fn step_up_params(&self, spec: &ProviderSpec) -> Vec<Param> {
        let value = spec.mfa_acr.first().cloned().unwrap_or_else(|| DEFAULT_AUTH_CONTEXT.into());
        vec![
            ("claims", format!(r#"{{"id_token":{{"acrs":{{"essential":true,"value":"{value}"}}}}}}"#)),
            ("prompt", "login".into()),
        ]
    }

    fn dev_mfa_acr(&self) -> Vec<String> {
        vec![DEFAULT_AUTH_CONTEXT.into()]
    }

    /// A v2.0 token: `tid`, `oid`, a pairwise `sub`, `acrs` for MFA users.
    fn dev_token(&self, t: &DevToken<'_>, c: &mut Map<String, Value>) {
        let DevToken { spec, dev, user, o, client_id, audience, seed, email, .. } = t;
        c.insert("nbf".into(), json!(o.now));
        c.insert("ver".into(), json!("2.0"));
        c.insert("tid".into(), json!(dev.tenant));
        c.insert("oid".into(), json!(guid(&seed)));
        c.insert("sub".into(), json!(stable(&format!("pairwise/{seed}"), 43)));
        c.insert("preferred_username".into(), json!(email.clone().unwrap_or(user.name.clone())));
        c.insert("uti".into(), json!(stable(&format!("{seed}/{}", o.now), 22)));
        if let Some(n) = &user.display_name {
            c.insert("name".into(), json!(n));
        }
        if !user.groups.is_empty() {
            c.insert("groups".into(), json!(user.groups));
        }
        if !user.roles.is_empty() {
            c.insert("roles".into(), json!(user.roles));
        }
        if user.mfa {
            c.insert("acrs".into(), json!(dev_mfa_values(spec)));
        }
        if let Some(e) = &email {
            c.insert("email".into(), json!(e));
            if user.email_verified == Some(true) {
                c.insert("xms_edov".into(), json!(true));
            }
        }
        if o.kind == MintKind::Access {
            c.insert("aud".into(), json!(audience));
            c.insert("azp".into(), json!(client_id));
            c.insert("scp".into(), json!(scopes(user).join(" ")));
            c.insert("idtyp".into(), json!("user"));
        } else {
            c.insert("aud".into(), json!(client_id));
        }
        for (k, v) in &user.attributes {
            c.insert(format!("extension_{k}"), json!(v));
        }
    }
}

pub static LOADER: Loader<EntraFile> =
    Loader { kind: ProviderKind::Entra, population: Some(Population::Workforce), issuer: None, check };

fn check(f: &EntraFile, spec: &mut ProviderSpec, cx: &mut SectionCheck<'_, '_>) -> KindSection {
    let variant = match f.variant.as_deref() {
        None | Some("workforce") => EntraVariant::Workforce,
        Some("external") => EntraVariant::External,
        Some(v) => {
            cx.at("variant", format!("`{v}` is not workforce or external"));
            EntraVariant::Workforce
        }
    };
    if variant == EntraVariant::External && spec.population == Population::Workforce && f.population.is_none() {
        spec.population = Population::Customer;
    }
    // `common` / `organizations` authorities issue tokens for many tenants: the issuer
    // becomes the `{tenantid}` template their discovery documents publish.
    let mut discovery_authority = None;
    for multi in ["/common/", "/organizations/"] {
        if spec.issuer.contains(multi) {
            discovery_authority = Some(spec.issuer.clone());
            spec.issuer = spec.issuer.replacen(multi, "/{tenantid}/", 1);
        }
    }
    let templated = spec.issuer.contains("{tenantid}");
    let mut tenants: Vec<String> = opt_strings(&f.tenants).into_iter().map(|t| t.to_ascii_lowercase()).collect();
    for t in &tenants {
        if t != "*" && !is_guid(t) {
            cx.at("tenants", format!("`{t}` is not a tenant id (GUID) or `*`"));
        }
    }
    if tenants.is_empty() {
        if templated {
            cx.at("tenants", "a multi-tenant issuer needs an allow-list of tenant ids (or `*` for any tenant)");
        } else if let Some(tid) = spec.issuer.split('/').find(|s| is_guid(s)) {
            tenants.push(tid.to_ascii_lowercase());
        }
    }
    if variant == EntraVariant::External {
        check_external_issuer(&spec.issuer, templated, cx);
    }
    if spec.audiences.is_empty() {
        cx.at("audiences", "is required: your API's application id or App ID URI");
    }
    let signup = match (variant, f.signup) {
        (EntraVariant::Workforce, Some(true)) => {
            cx.at("signup", "sign-up (`prompt=create`) is an External ID feature: set `variant: external`");
            false
        }
        (EntraVariant::Workforce, _) => false,
        (EntraVariant::External, s) => s.unwrap_or(true),
    };
    section(Entra { tenants, variant, discovery_authority, signup, issuer_tenant: Default::default() })
}

/// External ID issues `https://{tenantId}.ciamlogin.com/{tenantId}/v2.0`: the tenant
/// GUID, not the subdomain, is the host label
/// (<https://learn.microsoft.com/en-us/entra/external-id/customers/reference-tenant-type-comparison>).
fn check_external_issuer(issuer: &str, templated: bool, cx: &mut SectionCheck<'_, '_>) {
    if templated {
        cx.at("issuer", "External ID tenants are single-tenant: no `{tenantid}` / common issuers");
    }
    if let Ok(u) = url::Url::parse(issuer) {
        let label = u.host_str().and_then(|h| h.strip_suffix(".ciamlogin.com")).map(str::to_ascii_lowercase);
        let segment = u.path_segments().and_then(|mut s| s.next()).map(str::to_ascii_lowercase);
        if let Some(label) = label {
            if !is_guid(&label) || segment.as_deref() != Some(label.as_str()) {
                cx.at(
                    "issuer",
                    "External ID issuers are https://{tenantId}.ciamlogin.com/{tenantId}/v2.0 (the tenant GUID is the host label, not the subdomain)",
                );
            }
        }
    }
}

fn identity(ctx: &Ctx<'_>, k: &Entra, c: &Claims) -> Result<Identity, Refusal> {
    let iss = c.str("iss").ok_or(Refusal::MissingClaim("iss"))?;
    let tid = c.str("tid").ok_or(Refusal::MissingClaim("tid"))?.to_ascii_lowercase();
    if !is_guid(&tid) {
        return Err(Refusal::TenantNotAllowed);
    }
    check_issuer(ctx, k, iss, &tid)?;
    if !(k.tenants.iter().any(|t| t == "*" || *t == tid)) {
        return Err(Refusal::TenantNotAllowed);
    }
    check_audience(c, &ctx.spec.audiences)?;
    // `sub` is pairwise per application; `oid` is the user's id across applications
    // (https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference).
    let oid = c.str("oid").ok_or(Refusal::MissingClaim("oid"))?;
    let population = if tid == MSA_TENANT { Population::Customer } else { ctx.spec.population };
    let mut id = Identity::new(&ctx.spec.id, ctx.kind_label, population, oid.to_string());
    id.issuer = iss.to_string();
    id.tenant = tid.clone();
    if ctx.spec.issuer.contains("{tenantid}") {
        id.org = Some(tid.clone());
    }
    let v1 = c.string("ver").as_deref() == Some("1.0");
    id.username = if v1 { c.string("upn").or_else(|| c.string("unique_name")) } else { c.string("preferred_username") };
    id.email = c.string("email");
    id.email_verified = email_verified(c, id.email.as_deref());
    id.name = c.string("name");
    let app_only = c.str("idtyp") == Some("app") || (!c.has("scp") && c.str("sub") == Some(oid) && c.has("roles"));
    let roles = c.list("roles");
    if app_only {
        id.principal_type = PrincipalType::Service;
        id.permissions = roles;
    } else {
        id.roles = roles;
    }
    id.admin_roles = c.list("wids");
    id.scopes = c.scope_list("scp");
    let overage = c.value("_claim_names").is_some_and(|v| v.get("groups").is_some()) || c.has("hasgroups");
    id.groups = if overage { Vec::new() } else { c.list("groups") };
    id.groups_complete = !overage && c.has("groups");
    id.auth_context = c.list("acrs");
    apply_amr_acr(&mut id, c, &ctx.spec.mfa_acr);
    if v1 {
        // v1 `acr` is "0"/"1" (ISO 29115) and says nothing about MFA.
        id.acr = None;
    }
    id.client_id = c.string("azp").or_else(|| c.string("appid"));
    let is_id_token = !c.has("scp") && !app_only && ctx.spec.client_id.as_deref().is_some_and(|cid| c.has_audience(cid));
    id.token_use = if is_id_token { TokenUse::Id } else { TokenUse::Access };
    if is_id_token {
        id.client_id = ctx.spec.client_id.clone();
    }
    id.auth_time = c.i64("auth_time");
    id.session_id = c.string("sid");
    id.token_id = c.string("uti");
    let (idp, idp_kind, guest) = idp(c, iss, &tid, &ctx.spec.id);
    id.idp = idp;
    id.idp_kind = idp_kind.into();
    id.user_type = match c.i64("acct") {
        Some(0) => Some("member".into()),
        Some(1) => Some("guest".into()),
        _ if tid == MSA_TENANT => Some("consumer".into()),
        _ if guest => Some("guest".into()),
        _ => None,
    };
    for (name, v) in c.iter() {
        if matches!(name, "ctry" | "xms_pdl" | "xms_pl" | "login_hint" | "ipaddr") || name.starts_with("extension_") {
            id.attributes.insert(name.to_string(), v.to_value());
        }
    }
    Ok(id)
}

/// Microsoft's algorithm: substitute `tid` into the issuer template, compare exactly,
/// bind `tid` to the issuer's tenant segment, and bind the signing key's own `issuer`
/// (v2 JWKS) to the token's issuer.
/// `tid` is a lower-case tenant GUID (checked before). Nothing is allocated per token:
/// the template is compared in place and the tenant rule is worked out once.
fn check_issuer(ctx: &Ctx<'_>, k: &Entra, iss: &str, tid: &str) -> Result<(), Refusal> {
    let template = ctx.spec.issuer.as_str();
    if !is_instance(template, tid, iss) {
        return Err(Refusal::IssuerMismatch);
    }
    // The issuer's tenant (first path segment) must be the token's `tid` whenever the
    // issuer names one: a `{tenantid}` template or a tenant GUID (dev issuers name none).
    let (for_template, rule) = k.issuer_tenant.get_or_init(|| (template.to_string(), IssuerTenant::of(template)));
    let bound = match rule {
        _ if for_template != template => tenant_bound_slow(template, iss, tid),
        IssuerTenant::Unbound | IssuerTenant::Substituted => true,
        IssuerTenant::Fixed(seg) => seg.as_deref() == Some(tid),
        IssuerTenant::PerToken => tenant_bound_slow(template, iss, tid),
    };
    if !bound {
        return Err(Refusal::IssuerMismatch);
    }
    if let Some(key_issuer) = &ctx.key.issuer {
        if !is_instance(key_issuer, tid, iss) {
            return Err(Refusal::KeyIssuerMismatch);
        }
    }
    Ok(())
}

/// The tenant binding worked out from the token's issuer itself.
fn tenant_bound_slow(template: &str, iss: &str, tid: &str) -> bool {
    let first = first_segment(iss);
    let names_tenant = template.contains("{tenantid}") || first.as_deref().is_some_and(is_guid);
    !names_tenant || first.as_deref() == Some(tid)
}

/// `xms_edov` or a verified-email claim proves the address; otherwise unknown, never false.
fn email_verified(c: &Claims, email: Option<&str>) -> Option<bool> {
    if c.bool_lenient("xms_edov") == Some(true) {
        return Some(true);
    }
    let email = email?;
    let verified = ["verified_primary_email", "verified_secondary_email"]
        .iter()
        .any(|claim| c.list(claim).iter().any(|v| v.eq_ignore_ascii_case(email)));
    verified.then_some(true)
}

/// Where the user signed in (`idp`; absent for users of the token's own tenant):
/// (idp, idp_kind, is_guest). MSA users, other Entra tenants (B2B guests) and
/// federated enterprise IdPs are told apart.
fn idp(c: &Claims, iss: &str, tid: &str, provider: &str) -> (String, &'static str, bool) {
    match c.str("idp") {
        None => (provider.to_string(), "native", false),
        Some(v) if v == iss => (provider.to_string(), "native", false),
        Some(v) if v == "live.com" || v.contains(MSA_TENANT) => ("msa".into(), "social", true),
        Some(v) => match v.strip_prefix("https://sts.windows.net/").map(|r| r.trim_end_matches('/')) {
            Some(home) if is_guid(home) && home != tid => (format!("entra:{home}"), "external_tenant", true),
            _ => (format!("entra-idp:{v}"), "enterprise", true),
        },
    }
}

#[cfg(test)]
mod tests;
