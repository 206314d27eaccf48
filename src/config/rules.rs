//! Route policies (`policy:` in routes.yaml): `allow` and `deny` rule lists, compiled
//! once per configuration load (`config::validate`), evaluated per request without
//! allocating. They live beside the configuration that holds them; `crate::policy`
//! (as `policy::lang`) applies them after a route's `require`.
//!
//! A rule is a criteria map (every criterion in it must hold) or a combinator (`and`,
//! `or`, `not`). Deny wins: a request is refused when a deny rule matches, else
//! allowed when some allow rule matches (or there is no `allow` list). The refusal
//! names the first unmet criterion of the first allow rule, so the reason is stable
//! for a given configuration and identity.
//!
//! Group criteria are three-valued: when the provider did not deliver complete group
//! information the answer is *unknown*, which never allows and always denies (a `deny`
//! rule that might match is taken to match, and `not` of unknown stays unknown), so an
//! overage or a missing claim fails closed.
//!
//! A route's `require:` (the simple form) is lowered into the same form at load
//! (`lower_require`): one allow rule of `Requirement` criteria, so one evaluator decides
//! both, while the simple form keeps its own refusal reasons (`group_required`,
//! `insufficient_scope`, ...), which clients and dashboards already know.

use super::Requirements;
use crate::identity::{Identity, Population, PrincipalType};
use crate::refusal::PolicyUnmet;
use globset::GlobSet;
use regex::Regex;
use std::fmt;

/// The request facts a policy can look at besides the identity.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request method (`GET`), as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub method: &'a str,
    /// The canonical request path (`crate::canon`), without the query.
    pub path: &'a str,
    /// Unix seconds, for `time` and `mfa_max_age`.
    pub now: i64,
    /// Adaptive MFA's risk signals for this caller and request (`risk: low`); empty
    /// unless the route is adaptive (`crate::risk`).
    pub signals: crate::config::risk::Signals,
}

impl Request<'_> {
    /// A request at the current time.
    pub fn now<'a>(method: &'a str, path: &'a str) -> Request<'a> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Request { method, path, now, signals: Default::default() }
    }
}

/// A compiled `policy:`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None`: no `allow` list, so every signed-in caller not denied is allowed.
    pub allow: Option<Vec<Rule>>,
    pub deny: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub enum Rule {
    /// A criteria map: every criterion must hold (an empty map always matches).
    All(Vec<Criterion>),
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
}

/// Why a rule or criterion did not hold, before it becomes a `Refusal`. It borrows
/// from the compiled policy (`'p`), so naming the unmet condition allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet<'p> {
    Policy(PolicyUnmet),
    /// `mfa: true` (or `mfa_max_age`) without a second factor: the ordinary step-up.
    Mfa,
    /// A second factor, but longer ago than this many seconds (or at an unknown time).
    MfaAge(u64),
    /// Group criteria on an identity whose groups are incomplete.
    GroupsIncomplete,
    /// `risk: low` while a risk signal fires that MFA does not cover: the step-up.
    Risk,
    /// A condition of the simple form (`require:`), refused with its own reason.
    Require(RequireUnmet<'p>),
}

/// The unmet `require:` condition, with what its refusal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireUnmet<'p> {
    /// An anonymous identity on a route without `allow_anonymous`.
    RealUser,
    /// The caller's population is not the required one (the refusal names the caller's).
    Population,
    Tenant,
    EmailVerified,
    /// `groups_any` as written (joined with `, `), or the first missing `groups_all` group.
    Group(&'p str),
    /// `roles_any` as written, joined with `, `.
    Role(&'p str),
    /// `scopes_all` as written, joined with spaces.
    Scopes(&'p str),
}

/// The three-valued result of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'p> {
    Match,
    NoMatch(Unmet<'p>),
    /// Cannot be told (incomplete groups): fails closed both ways.
    Unknown(Unmet<'p>),
}

impl Outcome<'_> {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::NoMatch(_) => "no match",
            Outcome::Unknown(_) => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Criterion {
    Population(Vec<Population>),
    Provider(Vec<String>),
    /// Lower-cased; compared ASCII case-insensitively.
    Tenant(Vec<String>),
    Org(Vec<String>),
    Groups { names: Vec<String>, all: bool },
    Roles { names: Vec<String>, all: bool },
    Scopes { names: Vec<String>, all: bool },
    Permissions { names: Vec<String>, all: bool },
    /// Whole addresses, lower-cased.
    Email { values: Vec<String>, verified_only: bool },
    /// Domains, lower-cased, without `@`.
    EmailDomain { domains: Vec<String>, verified_only: bool },
    EmailVerified,
    PrincipalType(Vec<PrincipalType>),
    UserType(Vec<String>),
    Claim(ClaimTest),
    /// Upper-case method names.
    Method(Vec<String>),
    Path(PathGlobs),
    Time(TimeWindow),
    Mfa,
    MfaMaxAge(u64),
    Acr(Vec<String>),
    /// `risk: low`: no uncovered adaptive-MFA risk signal.
    RiskLow,
    /// A condition of `require:`, lowered (`lower_require`); never written in `policy:`.
    Require(Requirement),
}

/// One condition of the simple form (`require:`), as `lower_require` compiles it.
///
/// Each is tested as the simple form always tested it (which differs from the policy
/// criterion of the same name in small ways kept on purpose: `email_verified` does not
/// ask for an address, incomplete groups are a definite no) and refused with the simple
/// form's own reason. They only ever appear in the one allow rule `lower_require`
/// builds, never under `not` or in `deny`, so a definite no fails closed.
#[derive(Debug, Clone)]
pub enum Requirement {
    /// Not an anonymous identity (`attributes.anonymous: true`, Firebase anonymous
    /// sign-in): present unless `allow_anonymous`.
    RealUser,
    Population(Population),
    /// Lower-cased; compared ASCII case-insensitively.
    Tenant(Vec<String>),
    EmailVerified,
    /// `groups_any` (one of) and `groups_all` (every one), with `groups_any` joined for
    /// the refusal. Either list may be empty, not both.
    Groups { any: Vec<String>, any_text: String, all: Vec<String> },
    /// `roles_any`, with the list joined for the refusal.
    Roles { any: Vec<String>, text: String },
    /// `scopes_all`, with the list joined for the refusal (and the RFC 6750 `scope`).
    Scopes { all: Vec<String>, text: String },
    Mfa,
    /// `mfa: adaptive`: a workforce identity needs MFA (the workforce keeps mandatory
    /// MFA); a customer needs it only when a risk signal fires that the credential's
    /// MFA does not cover (`crate::risk`).
    AdaptiveMfa,
}

impl Requirement {
    pub fn key(&self) -> &'static str {
        match self {
            Requirement::RealUser => "require.allow_anonymous",
            Requirement::Population(_) => "require.population",
            Requirement::Tenant(_) => "require.tenants",
            Requirement::EmailVerified => "require.email_verified",
            Requirement::Groups { .. } => "require.groups",
            Requirement::Roles { .. } => "require.roles_any",
            Requirement::Scopes { .. } => "require.scopes_all",
            Requirement::Mfa | Requirement::AdaptiveMfa => "require.mfa",
        }
    }

    /// What a failure is reported as, before the identity is known (`groups_all` names
    /// its first group here; `eval` names the first one the caller lacks).
    fn unmet(&self) -> Unmet<'_> {
        use RequireUnmet as U;
        Unmet::Require(match self {
            Requirement::RealUser => U::RealUser,
            Requirement::Population(_) => U::Population,
            Requirement::Tenant(_) => U::Tenant,
            Requirement::EmailVerified => U::EmailVerified,
            Requirement::Groups { any, any_text, all } => {
                U::Group(if any.is_empty() { all.first().map_or("", String::as_str) } else { any_text })
            }
            Requirement::Roles { text, .. } => U::Role(text),
            Requirement::Scopes { text, .. } => U::Scopes(text),
            Requirement::Mfa => return Unmet::Mfa,
            Requirement::AdaptiveMfa => return Unmet::Risk,
        })
    }

    /// Only adaptive MFA looks at the request (its risk signals); the other conditions
    /// look at the identity alone.
    fn eval(&self, id: &Identity, req: &Request) -> Outcome<'_> {
        let yes = match self {
            Requirement::RealUser => id.attributes.get("anonymous") != Some(&serde_json::Value::Bool(true)),
            Requirement::Population(p) => id.population == *p,
            Requirement::Tenant(t) => t.iter().any(|t| t.eq_ignore_ascii_case(&id.tenant)),
            Requirement::EmailVerified => id.email_verified == Some(true),
            Requirement::Groups { any, any_text, all } => {
                if !id.groups_complete {
                    return Outcome::NoMatch(Unmet::GroupsIncomplete);
                }
                if !any.is_empty() && !any_of(any, &id.groups) {
                    return Outcome::NoMatch(Unmet::Require(RequireUnmet::Group(any_text)));
                }
                if let Some(missing) = all.iter().find(|g| !id.groups.contains(g)) {
                    return Outcome::NoMatch(Unmet::Require(RequireUnmet::Group(missing)));
                }
                true
            }
            Requirement::Roles { any, .. } => any_of(any, &id.roles),
            Requirement::Scopes { all, .. } => all_of(all, &id.scopes),
            Requirement::Mfa => id.mfa,
            Requirement::AdaptiveMfa => match id.population {
                Population::Workforce => id.mfa,
                Population::Customer => !req.signals.step_up(),
            },
        };
        if yes {
            Outcome::Match
        } else {
            Outcome::NoMatch(self.unmet())
        }
    }
}

/// `require:` (the simple form) lowered into the rule form: one allow rule holding each
/// level's conditions (the route's, then its population target's), in the order the
/// simple form has always checked them, so the first unmet one (and so the refusal) is
/// the one it always was.
pub fn lower_require(levels: &[&Requirements]) -> Policy {
    let mut all = Vec::new();
    for r in levels {
        lower_level(r, &mut all);
    }
    Policy { allow: Some(vec![Rule::All(all)]), deny: Vec::new() }
}

/// One level of `require:`. The struct is taken apart without `..`, so a new field does
/// not compile until it has its arm here (in its place in the order).
fn lower_level(r: &Requirements, out: &mut Vec<Criterion>) {
    use Requirement as R;
    let Requirements { population, mfa, adaptive_mfa, groups_any, groups_all, roles_any, scopes_all, tenants, email_verified, allow_anonymous } = r;
    let conditions = [
        (!allow_anonymous).then_some(R::RealUser),
        population.map(R::Population),
        (!tenants.is_empty()).then(|| R::Tenant(tenants.clone())),
        email_verified.then_some(R::EmailVerified),
        (!groups_any.is_empty() || !groups_all.is_empty())
            .then(|| R::Groups { any: groups_any.clone(), any_text: groups_any.join(", "), all: groups_all.clone() }),
        (!roles_any.is_empty()).then(|| R::Roles { any: roles_any.clone(), text: roles_any.join(", ") }),
        (!scopes_all.is_empty()).then(|| R::Scopes { all: scopes_all.clone(), text: scopes_all.join(" ") }),
        mfa.then_some(R::Mfa),
        adaptive_mfa.then_some(R::AdaptiveMfa),
    ];
    out.extend(conditions.into_iter().flatten().map(Criterion::Require));
}

/// `path:` globs, with the text they were written as (for explanations).
#[derive(Debug, Clone)]
pub struct PathGlobs {
    pub set: GlobSet,
    pub text: Vec<String>,
}

/// `time:`: weekdays (bit 0 = Sunday), and a daily window in minutes of the local
/// day of a fixed UTC offset. `from > to` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub days: u8,
    pub from: u16,
    pub to: u16,
    pub offset_secs: i32,
}

impl TimeWindow {
    pub fn contains(&self, now: i64) -> bool {
        let local = now + self.offset_secs as i64;
        let day = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u16;
        // 1970-01-01 was a Thursday (4, counting Sunday as 0).
        let weekday = (day + 4).rem_euclid(7) as u8;
        let in_day = self.days & (1 << weekday) != 0;
        let in_hours = if self.from <= self.to {
            minute >= self.from && minute < self.to
        } else {
            minute >= self.from || minute < self.to
        };
        in_day && in_hours
    }
}

/// `claim:` compiled: where the value is read and how it is tested.
#[derive(Debug, Clone)]
pub struct ClaimTest {
    pub path: ClaimPath,
    pub op: ClaimOp,
    /// The path as written (for explanations).
    pub text: String,
}

/// A claim path resolved at load: a field of the normalised identity, or a path into
/// its `attributes` (the provider claims a provider file maps there).
#[derive(Clone)]
pub enum ClaimPath {
    Str(fn(&Identity) -> Option<&str>),
    List(fn(&Identity) -> &[String]),
    Bool(fn(&Identity) -> Option<bool>),
    Attribute(Vec<String>),
}

impl fmt::Debug for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimPath::Str(_) => f.write_str("Str"),
            ClaimPath::List(_) => f.write_str("List"),
            ClaimPath::Bool(_) => f.write_str("Bool"),
            ClaimPath::Attribute(p) => write!(f, "Attribute({p:?})"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ClaimOp {
    Equals(String),
    In(Vec<String>),
    Prefix(String),
    /// Anchored (`^(?:...)$`) and size-limited at load.
    Regex(Regex),
}

impl ClaimOp {
    fn test(&self, v: &str) -> bool {
        match self {
            ClaimOp::Equals(e) => v == e,
            ClaimOp::In(list) => list.iter().any(|e| e == v),
            ClaimOp::Prefix(p) => v.starts_with(p.as_str()),
            ClaimOp::Regex(r) => r.is_match(v),
        }
    }
}

/// The identity fields a `claim.path` may name, by their normalised names.
pub fn identity_field(name: &str) -> Option<ClaimPath> {
    use ClaimPath::*;
    Some(match name {
        "sub" => Str(|i| Some(&i.sub)),
        "subject" => Str(|i| Some(&i.subject)),
        "provider" => Str(|i| Some(&i.provider)),
        "provider_kind" => Str(|i| Some(i.provider_kind.as_str())),
        "population" => Str(|i| Some(i.population.as_str())),
        "tenant" => Str(|i| Some(&i.tenant)),
        "org" => Str(|i| i.org.as_deref()),
        "idp" => Str(|i| Some(&i.idp)),
        "idp_kind" => Str(|i| Some(&i.idp_kind)),
        "email" => Str(|i| i.email.as_deref()),
        "name" => Str(|i| i.name.as_deref()),
        "username" => Str(|i| i.username.as_deref()),
        "principal_type" => Str(|i| Some(i.principal_type.as_str())),
        "user_type" => Str(|i| i.user_type.as_deref()),
        "acr" => Str(|i| i.acr.as_deref()),
        "client_id" => Str(|i| i.client_id.as_deref()),
        "issuer" => Str(|i| Some(&i.issuer)),
        "token_use" => Str(|i| Some(i.token_use.as_str())),
        "groups" => List(|i| &i.groups),
        "roles" => List(|i| &i.roles),
        "admin_roles" => List(|i| &i.admin_roles),
        "scopes" => List(|i| &i.scopes),
        "permissions" => List(|i| &i.permissions),
        "amr" => List(|i| &i.amr),
        "auth_context" => List(|i| &i.auth_context),
        "email_verified" => Bool(|i| i.email_verified),
        "mfa" => Bool(|i| Some(i.mfa)),
        "groups_complete" => Bool(|i| Some(i.groups_complete)),
        _ => return None,
    })
}

/// The names `identity_field` knows, for error messages.
pub const IDENTITY_FIELDS: &str = "sub, subject, provider, provider_kind, population, tenant, org, idp, idp_kind, \
email, email_verified, name, username, principal_type, user_type, acr, client_id, issuer, token_use, groups, roles, \
admin_roles, scopes, permissions, amr, auth_context, mfa, groups_complete, attributes.<name>[.<name>...]";

impl ClaimTest {
    fn holds(&self, id: &Identity) -> bool {
        match &self.path {
            ClaimPath::Str(f) => f(id).is_some_and(|v| self.op.test(v)),
            ClaimPath::List(f) => f(id).iter().any(|v| self.op.test(v)),
            ClaimPath::Bool(f) => f(id).is_some_and(|b| self.op.test(if b { "true" } else { "false" })),
            ClaimPath::Attribute(path) => {
                let mut it = path.iter();
                let Some(first) = it.next() else { return false };
                let mut v = id.attributes.get(first.as_str());
                for seg in it {
                    v = v.and_then(|v| v.get(seg.as_str()));
                }
                v.is_some_and(|v| self.json(v, true))
            }
        }
    }

    /// Strings, booleans and numbers are tested by their text; an array holds when one
    /// of its (scalar) elements does.
    fn json(&self, v: &serde_json::Value, top: bool) -> bool {
        use serde_json::Value;
        match v {
            Value::String(s) => self.op.test(s),
            Value::Bool(b) => self.op.test(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                use std::io::Write;
                let mut buf = [0u8; 40];
                let mut cur = std::io::Cursor::new(&mut buf[..]);
                if write!(cur, "{n}").is_err() {
                    return false;
                }
                let len = cur.position() as usize;
                std::str::from_utf8(&buf[..len]).is_ok_and(|s| self.op.test(s))
            }
            Value::Array(a) if top => a.iter().any(|e| self.json(e, false)),
            _ => false,
        }
    }
}

fn any_of(want: &[String], have: &[String]) -> bool {
    want.iter().any(|w| have.contains(w))
}

fn all_of(want: &[String], have: &[String]) -> bool {
    want.iter().all(|w| have.contains(w))
}

fn set(names: &[String], have: &[String], all: bool) -> bool {
    if all {
        all_of(names, have)
    } else {
        any_of(names, have)
    }
}

fn email_domain(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Criterion {
    /// The key this criterion is written as (explanations, `requirement` members).
    pub fn key(&self) -> &'static str {
        match self {
            Criterion::Population(_) => "population",
            Criterion::Provider(_) => "provider",
            Criterion::Tenant(_) => "tenant",
            Criterion::Org(_) => "org",
            Criterion::Groups { all: false, .. } => "groups_any",
            Criterion::Groups { all: true, .. } => "groups_all",
            Criterion::Roles { all: false, .. } => "roles_any",
            Criterion::Roles { all: true, .. } => "roles_all",
            Criterion::Scopes { all: false, .. } => "scopes_any",
            Criterion::Scopes { all: true, .. } => "scopes_all",
            Criterion::Permissions { all: false, .. } => "permissions_any",
            Criterion::Permissions { all: true, .. } => "permissions_all",
            Criterion::Email { .. } => "email",
            Criterion::EmailDomain { .. } => "email_domain",
            Criterion::EmailVerified => "email_verified",
            Criterion::PrincipalType(_) => "principal_type",
            Criterion::UserType(_) => "user_type",
            Criterion::Claim(_) => "claim",
            Criterion::Method(_) => "method",
            Criterion::Path(_) => "path",
            Criterion::Time(_) => "time",
            Criterion::Mfa => "mfa",
            Criterion::MfaMaxAge(_) => "mfa_max_age",
            Criterion::Acr(_) => "acr",
            Criterion::RiskLow => "risk",
            Criterion::Require(r) => r.key(),
        }
    }

    /// What a failure of this criterion is reported as.
    pub fn unmet(&self) -> Unmet<'_> {
        use PolicyUnmet as P;
        Unmet::Policy(match self {
            Criterion::Population(_) => P::Population,
            Criterion::Provider(_) => P::Provider,
            Criterion::Tenant(_) => P::Tenant,
            Criterion::Org(_) => P::Org,
            Criterion::Groups { .. } => P::Group,
            Criterion::Roles { .. } => P::Role,
            Criterion::Scopes { .. } => P::Scope,
            Criterion::Permissions { .. } => P::Permission,
            Criterion::Email { .. } | Criterion::EmailDomain { .. } | Criterion::EmailVerified => P::Email,
            Criterion::PrincipalType(_) => P::PrincipalType,
            Criterion::UserType(_) => P::UserType,
            Criterion::Claim(_) => P::Claim,
            Criterion::Method(_) => P::Method,
            Criterion::Path(_) => P::Path,
            Criterion::Time(_) => P::Time,
            Criterion::Acr(_) => P::Acr,
            Criterion::Mfa => return Unmet::Mfa,
            Criterion::MfaMaxAge(s) => return Unmet::MfaAge(*s),
            Criterion::RiskLow => return Unmet::Risk,
            Criterion::Require(r) => return r.unmet(),
        })
    }

    pub fn eval(&self, id: &Identity, req: &Request) -> Outcome<'_> {
        let yes = match self {
            Criterion::Population(p) => p.contains(&id.population),
            Criterion::Provider(p) => p.iter().any(|p| *p == id.provider),
            Criterion::Tenant(t) => t.iter().any(|t| t.eq_ignore_ascii_case(&id.tenant)),
            Criterion::Org(o) => id.org.as_deref().is_some_and(|org| o.iter().any(|o| o == org)),
            Criterion::Groups { names, all } => {
                if !id.groups_complete {
                    return Outcome::Unknown(Unmet::GroupsIncomplete);
                }
                set(names, &id.groups, *all)
            }
            Criterion::Roles { names, all } => set(names, &id.roles, *all),
            Criterion::Scopes { names, all } => set(names, &id.scopes, *all),
            Criterion::Permissions { names, all } => set(names, &id.permissions, *all),
            Criterion::Email { values, verified_only } => {
                (!verified_only || id.email_verified == Some(true))
                    && id.email.as_deref().is_some_and(|e| values.iter().any(|v| v.eq_ignore_ascii_case(e)))
            }
            Criterion::EmailDomain { domains, verified_only } => {
                (!verified_only || id.email_verified == Some(true))
                    && id.email.as_deref().is_some_and(|e| {
                        let d = email_domain(e);
                        domains.iter().any(|v| v.eq_ignore_ascii_case(d))
                    })
            }
            Criterion::EmailVerified => id.email.is_some() && id.email_verified == Some(true),
            Criterion::PrincipalType(t) => t.contains(&id.principal_type),
            Criterion::UserType(t) => id.user_type.as_deref().is_some_and(|u| t.iter().any(|t| t.eq_ignore_ascii_case(u))),
            Criterion::Claim(c) => c.holds(id),
            Criterion::Method(m) => m.iter().any(|m| m == req.method),
            Criterion::Path(g) => g.set.is_match(req.path),
            Criterion::Time(w) => w.contains(req.now),
            Criterion::Mfa => id.mfa,
            Criterion::MfaMaxAge(max) => {
                if !id.mfa {
                    return Outcome::NoMatch(Unmet::Mfa);
                }
                id.auth_time.is_some_and(|t| t <= req.now && (req.now - t) as u64 <= *max)
            }
            Criterion::Acr(a) => id.acr.as_deref().is_some_and(|acr| a.iter().any(|a| a == acr)),
            Criterion::RiskLow => !req.signals.step_up(),
            Criterion::Require(r) => return r.eval(id, req),
        };
        if yes {
            Outcome::Match
        } else {
            Outcome::NoMatch(self.unmet())
        }
    }
}

impl Rule {
    /// What a `not` of this rule reports when this rule matches: its first criterion.
    fn subject(&self) -> Unmet<'_> {
        match self {
            Rule::All(c) => c.first().map_or(Unmet::Policy(PolicyUnmet::Denied), Criterion::unmet),
            Rule::And(r) | Rule::Or(r) => r.first().map_or(Unmet::Policy(PolicyUnmet::Denied), Rule::subject),
            Rule::Not(r) => r.subject(),
        }
    }

    pub fn eval(&self, id: &Identity, req: &Request) -> Outcome<'_> {
        match self {
            Rule::All(cs) => conj(cs.iter().map(|c| c.eval(id, req))),
            Rule::And(rs) => conj(rs.iter().map(|r| r.eval(id, req))),
            Rule::Or(rs) => {
                let mut first: Option<Outcome> = None;
                let mut unknown: Option<Outcome> = None;
                for o in rs.iter().map(|r| r.eval(id, req)) {
                    match o {
                        Outcome::Match => return Outcome::Match,
                        Outcome::Unknown(_) => unknown = unknown.or(Some(o)),
                        Outcome::NoMatch(_) => first = first.or(Some(o)),
                    }
                }
                unknown.or(first).unwrap_or(Outcome::NoMatch(Unmet::Policy(PolicyUnmet::NoRule)))
            }
            Rule::Not(r) => match r.eval(id, req) {
                Outcome::Match => Outcome::NoMatch(r.subject()),
                Outcome::NoMatch(_) => Outcome::Match,
                u @ Outcome::Unknown(_) => u,
            },
        }
    }
}

/// All of `outcomes`: the first definite failure, else the first unknown, else a match.
fn conj<'p>(outcomes: impl Iterator<Item = Outcome<'p>>) -> Outcome<'p> {
    let mut unknown = None;
    for o in outcomes {
        match o {
            Outcome::Match => {}
            Outcome::NoMatch(_) => return o,
            Outcome::Unknown(_) => unknown = unknown.or(Some(o)),
        }
    }
    unknown.unwrap_or(Outcome::Match)
}

impl Rule {
    /// Whether a `risk` criterion appears anywhere in this rule.
    fn uses_risk(&self) -> bool {
        match self {
            Rule::All(cs) => cs.iter().any(|c| matches!(c, Criterion::RiskLow)),
            Rule::And(rs) | Rule::Or(rs) => rs.iter().any(Rule::uses_risk),
            Rule::Not(r) => r.uses_risk(),
        }
    }
}

impl Policy {
    /// Whether some rule looks at adaptive-MFA risk (the route's requests are then
    /// assessed, `crate::risk`).
    pub fn uses_risk(&self) -> bool {
        self.deny.iter().chain(self.allow.iter().flatten()).any(Rule::uses_risk)
    }

    /// Deny wins; then some allow rule must match. The error is the first unmet
    /// criterion (of the matching deny rule: `policy_denied`; of the first allow rule
    /// otherwise).
    pub fn decide(&self, id: &Identity, req: &Request) -> Result<(), Unmet<'_>> {
        for r in &self.deny {
            match r.eval(id, req) {
                Outcome::Match => return Err(Unmet::Policy(PolicyUnmet::Denied)),
                Outcome::Unknown(u) => return Err(u),
                Outcome::NoMatch(_) => {}
            }
        }
        let Some(allow) = &self.allow else { return Ok(()) };
        let mut first = None;
        for r in allow {
            match r.eval(id, req) {
                Outcome::Match => return Ok(()),
                Outcome::NoMatch(u) | Outcome::Unknown(u) => first = first.or(Some(u)),
            }
        }
        Err(first.unwrap_or(Unmet::Policy(PolicyUnmet::NoRule)))
    }
}

// ---------------------------------------------------------------------------------
// Explanations (`token inspect`): every rule with its result. Not on the request path,
// so these allocate freely.

/// One evaluated rule of a policy, for people.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// `deny[0]`, `allow[2]`.
    pub rule: String,
    /// The rule as written, compactly.
    pub text: String,
    /// `match`, `no match` or `unknown`.
    pub result: &'static str,
    /// The reason the rule did not hold (its first unmet criterion), if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmet: Option<&'static str>,
    /// For a criteria map: each criterion with its own result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<(String, &'static str)>,
}

fn quote(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.key();
        match self {
            Criterion::Population(p) => write!(f, "{k}: [{}]", p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")),
            Criterion::Provider(v) | Criterion::Tenant(v) | Criterion::Org(v) | Criterion::UserType(v) | Criterion::Method(v) | Criterion::Acr(v) => {
                write!(f, "{k}: {}", quote(v))
            }
            Criterion::Groups { names, .. } | Criterion::Roles { names, .. } | Criterion::Scopes { names, .. } | Criterion::Permissions { names, .. } => {
                write!(f, "{k}: {}", quote(names))
            }
            Criterion::Email { values, verified_only } => write!(f, "{k}: {}{}", quote(values), if *verified_only { "" } else { " (verified or not)" }),
            Criterion::EmailDomain { domains, verified_only } => {
                write!(f, "{k}: {}{}", quote(domains), if *verified_only { "" } else { " (verified or not)" })
            }
            Criterion::EmailVerified => write!(f, "{k}: true"),
            Criterion::PrincipalType(t) => write!(f, "{k}: [{}]", t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")),
            Criterion::Claim(c) => {
                let op = match &c.op {
                    ClaimOp::Equals(v) => format!("equals {v}"),
                    ClaimOp::In(v) => format!("in {}", quote(v)),
                    ClaimOp::Prefix(v) => format!("prefix {v}"),
                    ClaimOp::Regex(r) => format!("regex {}", r.as_str()),
                };
                write!(f, "{k}: {} {op}", c.text)
            }
            Criterion::Path(g) => write!(f, "{k}: {}", quote(&g.text)),
            Criterion::Time(w) => {
                let days: Vec<&str> = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| w.days & (1 << i) != 0)
                    .map(|(_, d)| *d)
                    .collect();
                write!(
                    f,
                    "{k}: [{}] {:02}:{:02}-{:02}:{:02} UTC{:+}s",
                    days.join(", "),
                    w.from / 60,
                    w.from % 60,
                    w.to / 60,
                    w.to % 60,
                    w.offset_secs
                )
            }
            Criterion::Mfa => write!(f, "{k}: true"),
            Criterion::RiskLow => write!(f, "{k}: low"),
            Criterion::MfaMaxAge(s) => write!(f, "{k}: {s}s"),
            Criterion::Require(r) => match r {
                Requirement::RealUser => write!(f, "{k}: false"),
                Requirement::Population(p) => write!(f, "{k}: {}", p.as_str()),
                Requirement::Tenant(t) => write!(f, "{k}: {}", quote(t)),
                Requirement::EmailVerified | Requirement::Mfa => write!(f, "{k}: true"),
                Requirement::AdaptiveMfa => write!(f, "{k}: adaptive"),
                Requirement::Groups { any, all, .. } => match (any.is_empty(), all.is_empty()) {
                    (false, true) => write!(f, "require.groups_any: {}", quote(any)),
                    (true, _) => write!(f, "require.groups_all: {}", quote(all)),
                    (false, false) => write!(f, "require.groups_any: {}, require.groups_all: {}", quote(any), quote(all)),
                },
                Requirement::Roles { any, .. } => write!(f, "{k}: {}", quote(any)),
                Requirement::Scopes { all, .. } => write!(f, "{k}: {}", quote(all)),
            },
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, rs: &[Rule]| {
            write!(f, "{name}: [")?;
            for (i, r) in rs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{r}")?;
            }
            f.write_str("]")
        };
        match self {
            Rule::All(cs) => {
                f.write_str("{")?;
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("}")
            }
            Rule::And(rs) => list(f, "and", rs),
            Rule::Or(rs) => list(f, "or", rs),
            Rule::Not(r) => write!(f, "not: {r}"),
        }
    }
}

/// The reason string an unmet outcome becomes (as `crate::policy::refusal` maps it).
pub fn unmet_reason(u: Unmet) -> &'static str {
    use crate::refusal::Reason;
    match u {
        Unmet::Policy(p) => p.code().as_str(),
        Unmet::Mfa => Reason::MfaRequired.as_str(),
        Unmet::MfaAge(_) => Reason::PolicyMfaAge.as_str(),
        Unmet::GroupsIncomplete => Reason::GroupsIncomplete.as_str(),
        Unmet::Risk => Reason::MfaRequired.as_str(),
        Unmet::Require(r) => match r {
            RequireUnmet::RealUser => Reason::RealUserRequired,
            RequireUnmet::Population => Reason::PopulationNotAllowed,
            RequireUnmet::Tenant => Reason::TenantRequired,
            RequireUnmet::EmailVerified => Reason::EmailNotVerified,
            RequireUnmet::Group(_) => Reason::GroupRequired,
            RequireUnmet::Role(_) => Reason::RoleRequired,
            RequireUnmet::Scopes(_) => Reason::InsufficientScope,
        }
        .as_str(),
    }
}

impl Policy {
    /// Every rule (deny first, then allow) with its result for this identity and request.
    pub fn explain(&self, id: &Identity, req: &Request) -> Vec<Step> {
        let step = |list: &str, i: usize, r: &Rule| {
            let o = r.eval(id, req);
            let criteria = match r {
                Rule::All(cs) => cs.iter().map(|c| (c.to_string(), c.eval(id, req).label())).collect(),
                _ => Vec::new(),
            };
            Step {
                rule: format!("{list}[{i}]"),
                text: r.to_string(),
                result: o.label(),
                unmet: match o {
                    Outcome::Match => None,
                    Outcome::NoMatch(u) | Outcome::Unknown(u) => Some(unmet_reason(u)),
                },
                criteria,
            }
        };
        let mut out: Vec<Step> = self.deny.iter().enumerate().map(|(i, r)| step("deny", i, r)).collect();
        out.extend(self.allow.iter().flatten().enumerate().map(|(i, r)| step("allow", i, r)));
        out
    }
}
