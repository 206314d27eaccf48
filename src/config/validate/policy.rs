//! A route's `policy:` compiled into `crate::policy::lang::Policy`: values parsed,
//! lists lower-cased where matching folds case, regexes compiled with a size limit,
//! globs compiled. Every problem is reported with the route, key and line.

use super::super::error::Problems;
use super::super::raw;
use super::super::EnvString;
use crate::identity::{Population, PrincipalType};
use crate::config::rules::{self as lang, ClaimOp, ClaimPath, ClaimTest, Criterion, PathGlobs, Policy, Rule, TimeWindow};

/// The compiled size a `claim.regex` may reach (regex crate `size_limit`): enough for
/// any sensible pattern, small enough that a pathological one is refused at load.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Rules may nest this deep (`and`/`or`/`not`).
const MAX_DEPTH: usize = 8;

struct Ctx<'a, 'b, 'c> {
    p: &'a mut Problems<'b>,
    anchor: Option<&'c str>,
    case_sensitive: bool,
}

impl Ctx<'_, '_, '_> {
    fn err(&mut self, key: &str, value: Option<&str>, msg: impl Into<String>) {
        let full = format!("routes.policy.{key}");
        match value {
            Some(v) => self.p.at_value(self.anchor, &full, v, msg),
            None => self.p.at(self.anchor, &full, msg),
        }
    }
}

pub(super) fn policy(r: &raw::Policy, anchor: Option<&str>, case_sensitive: bool, p: &mut Problems) -> Policy {
    let mut cx = Ctx { p, anchor, case_sensitive };
    let allow = r.allow.as_ref().map(|rules| {
        if rules.is_empty() {
            cx.err("allow", None, "is empty, so nothing would be allowed; remove `allow` to admit every signed-in caller");
        }
        rules.iter().map(|x| rule(x, 0, &mut cx)).collect()
    });
    let deny = r.deny.iter().map(|x| rule(x, 0, &mut cx)).collect();
    Policy { allow, deny }
}

fn rule(r: &raw::Rule, depth: usize, cx: &mut Ctx) -> Rule {
    if depth > MAX_DEPTH {
        cx.err("not", None, format!("rules nest deeper than {MAX_DEPTH} levels"));
        return Rule::All(Vec::new());
    }
    let combinators = [r.and.is_some(), r.or.is_some(), r.not.is_some()].iter().filter(|b| **b).count();
    let criteria = criteria(r, cx);
    if combinators > 1 || (combinators == 1 && !criteria.is_empty()) {
        let key = if r.and.is_some() { "and" } else if r.or.is_some() { "or" } else { "not" };
        cx.err(
            key,
            None,
            "a rule is either a map of criteria or one of `and`, `or`, `not`; put the criteria in a rule inside it",
        );
    }
    if let Some(rs) = &r.and {
        if rs.is_empty() {
            cx.err("and", None, "needs at least one rule");
        }
        return Rule::And(rs.iter().map(|x| rule(x, depth + 1, cx)).collect());
    }
    if let Some(rs) = &r.or {
        if rs.is_empty() {
            cx.err("or", None, "needs at least one rule");
        }
        return Rule::Or(rs.iter().map(|x| rule(x, depth + 1, cx)).collect());
    }
    if let Some(x) = &r.not {
        return Rule::Not(Box::new(rule(x, depth + 1, cx)));
    }
    Rule::All(criteria)
}

fn list(v: &[EnvString]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn nonempty(key: &str, v: &[EnvString], cx: &mut Ctx) -> Vec<String> {
    if v.is_empty() {
        cx.err(key, None, "is an empty list, which nothing matches");
    }
    list(v)
}

fn lower(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

fn criteria(r: &raw::Rule, cx: &mut Ctx) -> Vec<Criterion> {
    let mut out = Vec::new();
    if let Some(v) = &r.population {
        let mut pops = Vec::new();
        for s in &v.0 {
            match Population::parse(s) {
                Some(p) => pops.push(p),
                None => cx.err("population", Some(s), format!("`{}` is not workforce or customer", &**s)),
            }
        }
        out.push(Criterion::Population(pops));
    }
    if let Some(v) = &r.provider {
        out.push(Criterion::Provider(nonempty("provider", &v.0, cx)));
    }
    if let Some(v) = &r.tenant {
        out.push(Criterion::Tenant(lower(nonempty("tenant", &v.0, cx))));
    }
    if let Some(v) = &r.org {
        out.push(Criterion::Org(nonempty("org", &v.0, cx)));
    }
    let sets: [(&str, &Option<Vec<EnvString>>, fn(Vec<String>, bool) -> Criterion, bool); 8] = [
        ("groups_any", &r.groups_any, |names, all| Criterion::Groups { names, all }, false),
        ("groups_all", &r.groups_all, |names, all| Criterion::Groups { names, all }, true),
        ("roles_any", &r.roles_any, |names, all| Criterion::Roles { names, all }, false),
        ("roles_all", &r.roles_all, |names, all| Criterion::Roles { names, all }, true),
        ("scopes_any", &r.scopes_any, |names, all| Criterion::Scopes { names, all }, false),
        ("scopes_all", &r.scopes_all, |names, all| Criterion::Scopes { names, all }, true),
        ("permissions_any", &r.permissions_any, |names, all| Criterion::Permissions { names, all }, false),
        ("permissions_all", &r.permissions_all, |names, all| Criterion::Permissions { names, all }, true),
    ];
    for (key, v, make, all) in sets {
        if let Some(v) = v {
            out.push(make(nonempty(key, v, cx), all));
        }
    }
    let verified_only = match r.email_verified.as_deref() {
        None => true,
        Some("true") => {
            out.push(Criterion::EmailVerified);
            true
        }
        Some("any") => {
            if r.email.is_none() && r.email_domain.is_none() {
                cx.err("email_verified", Some("any"), "`any` applies to `email` or `email_domain` in the same map");
            }
            false
        }
        Some(v) => {
            cx.err("email_verified", Some(v), format!("`{v}` is not `true` or `any`"));
            true
        }
    };
    if let Some(v) = &r.email {
        let values = lower(nonempty("email", &v.0, cx));
        for e in &values {
            if !e.contains('@') {
                cx.err("email", Some(e), format!("`{e}` is not an email address (use `email_domain` for a domain)"));
            }
        }
        out.push(Criterion::Email { values, verified_only });
    }
    if let Some(v) = &r.email_domain {
        let domains: Vec<String> = lower(nonempty("email_domain", &v.0, cx)).into_iter().map(|d| d.trim_start_matches('@').to_string()).collect();
        for d in &domains {
            if d.is_empty() || d.contains('@') || d.contains('/') {
                cx.err("email_domain", Some(d), format!("`{d}` is not a domain name"));
            }
        }
        out.push(Criterion::EmailDomain { domains, verified_only });
    }
    if let Some(v) = &r.principal_type {
        let mut types = Vec::new();
        for s in &v.0 {
            match &**s {
                "user" => types.push(PrincipalType::User),
                "service" => types.push(PrincipalType::Service),
                "guest" | "member" => cx.err(
                    "principal_type",
                    Some(s),
                    format!("`{}` is a user type, not a principal type (user, service): write `user_type: {}`", &**s, &**s),
                ),
                other => cx.err("principal_type", Some(s), format!("`{other}` is not user or service")),
            }
        }
        out.push(Criterion::PrincipalType(types));
    }
    if let Some(v) = &r.user_type {
        out.push(Criterion::UserType(lower(nonempty("user_type", &v.0, cx))));
    }
    if let Some(c) = &r.claim {
        if let Some(t) = claim(c, cx) {
            out.push(Criterion::Claim(t));
        }
    }
    if let Some(v) = &r.method {
        let mut methods = Vec::new();
        for m in &v.0 {
            let up = m.to_ascii_uppercase();
            if up.is_empty() || !up.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
                cx.err("method", Some(m), format!("`{}` is not an HTTP method", &**m));
            }
            methods.push(up);
        }
        out.push(Criterion::Method(methods));
    }
    if let Some(v) = &r.path {
        if let Some(g) = globs(&v.0, cx) {
            out.push(Criterion::Path(g));
        }
    }
    if let Some(t) = &r.time {
        if let Some(w) = time(t, cx) {
            out.push(Criterion::Time(w));
        }
    }
    if let Some(m) = r.mfa {
        if m {
            out.push(Criterion::Mfa);
        } else {
            cx.err("mfa", Some("false"), "`mfa: false` says nothing; remove it (use `not: { mfa: true }` to match callers without MFA)");
        }
    }
    if let Some(a) = &r.mfa_max_age {
        match humantime::parse_duration(a) {
            Ok(d) if !d.is_zero() => out.push(Criterion::MfaMaxAge(d.as_secs().max(1))),
            _ => cx.err("mfa_max_age", Some(a), format!("`{}` is not a duration (examples: 15m, 1h)", &**a)),
        }
    }
    if let Some(v) = &r.acr {
        out.push(Criterion::Acr(nonempty("acr", &v.0, cx)));
    }
    if let Some(v) = &r.risk {
        match &**v {
            "low" => out.push(Criterion::RiskLow),
            other => cx.err("risk", Some(other), format!("`{other}` is not `low` (the only risk level a rule can ask for)")),
        }
    }
    out
}

fn claim(c: &raw::Claim, cx: &mut Ctx) -> Option<ClaimTest> {
    let text = c.path.to_string();
    let path = if let Some(rest) = text.strip_prefix("attributes.") {
        let segs: Vec<String> = rest.split('.').map(str::to_string).collect();
        if segs.iter().any(String::is_empty) {
            cx.err("claim.path", Some(&text), format!("`{text}` has an empty segment"));
            return None;
        }
        ClaimPath::Attribute(segs)
    } else {
        match lang::identity_field(&text) {
            Some(p) => p,
            None => {
                cx.err("claim.path", Some(&text), format!("`{text}` is not an identity attribute; one of {}", lang::IDENTITY_FIELDS));
                return None;
            }
        }
    };
    let ops = [c.equals.is_some(), c.in_.is_some(), c.prefix.is_some(), c.regex.is_some()].iter().filter(|b| **b).count();
    if ops != 1 {
        cx.err("claim", None, "needs exactly one of `equals`, `in`, `prefix`, `regex`");
        return None;
    }
    let op = if let Some(e) = &c.equals {
        ClaimOp::Equals(e.to_string())
    } else if let Some(v) = &c.in_ {
        ClaimOp::In(nonempty("claim.in", v, cx))
    } else if let Some(pfx) = &c.prefix {
        ClaimOp::Prefix(pfx.to_string())
    } else {
        let src = c.regex.as_deref().unwrap_or_default();
        match regex::RegexBuilder::new(&format!("^(?:{src})$")).size_limit(REGEX_SIZE_LIMIT).build() {
            Ok(r) => ClaimOp::Regex(r),
            Err(e) => {
                let why = match e {
                    regex::Error::CompiledTooBig(_) => format!("compiles larger than the {REGEX_SIZE_LIMIT}-byte limit"),
                    other => other.to_string().lines().last().unwrap_or("invalid").trim().to_string(),
                };
                cx.err("claim.regex", Some(src), format!("`{src}` is not a usable regex: {why}"));
                return None;
            }
        }
    };
    Some(ClaimTest { path, op, text })
}

/// `path:` globs over the canonical request path: `*` within one segment, `**` across
/// segments; ASCII case is folded unless the route is `case_sensitive`.
fn globs(v: &[EnvString], cx: &mut Ctx) -> Option<PathGlobs> {
    if v.is_empty() {
        cx.err("path", None, "is an empty list, which nothing matches");
        return None;
    }
    let mut b = globset::GlobSetBuilder::new();
    for g in v {
        if !g.starts_with('/') {
            cx.err("path", Some(g), format!("`{}` must start with `/` (it is matched against the whole request path)", &**g));
            return None;
        }
        match globset::GlobBuilder::new(g).literal_separator(true).case_insensitive(!cx.case_sensitive).build() {
            Ok(glob) => {
                b.add(glob);
            }
            Err(e) => {
                cx.err("path", Some(g), format!("`{}` is not a glob: {}", &**g, e.kind()));
                return None;
            }
        }
    }
    match b.build() {
        Ok(set) => Some(PathGlobs { set, text: list(v) }),
        Err(e) => {
            cx.err("path", None, format!("globs do not compile: {e}"));
            None
        }
    }
}

const DAYS: [&str; 7] = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

/// `mon` or `monday` (any case); Sunday is 0.
fn day(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| s.len() >= 3 && d.starts_with(&s)).map(|i| i as u8)
}

/// `mon`, `fri`, or a range `mon-fri` (wrapping: `fri-mon`).
fn days(v: &[EnvString], cx: &mut Ctx) -> Option<u8> {
    let mut mask = 0u8;
    for item in v {
        // `mon-fri` or `mon..fri`.
        let parsed = match item.split_once("..").or_else(|| item.split_once('-')) {
            Some((a, b)) => {
                day(a).zip(day(b)).map(|(a, b)| {
                    let mut m = 0u8;
                    let mut d = a;
                    loop {
                        m |= 1 << d;
                        if d == b {
                            break m;
                        }
                        d = (d + 1) % 7;
                    }
                })
            }
            None => day(item).map(|d| 1 << d),
        };
        match parsed {
            Some(m) => mask |= m,
            None => {
                cx.err("time.days", Some(item), format!("`{}` is not a day (mon..sun) or a range (mon-fri)", &**item));
                return None;
            }
        }
    }
    Some(mask)
}

/// `HH:MM` as minutes of the day; `24:00` is the end of the day.
fn clock(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
}

/// `UTC`, `Z`, or a fixed offset `+02:00` / `-05:30`. Named zones (with daylight
/// saving) would need a time-zone database; they are refused with that explanation.
fn offset(s: &str) -> Option<i32> {
    if matches!(s, "UTC" | "utc" | "Z" | "GMT" | "Etc/UTC") {
        return Some(0);
    }
    let (sign, rest) = match s.strip_prefix("UTC").unwrap_or(s) {
        r if r.starts_with('+') => (1, &r[1..]),
        r if r.starts_with('-') => (-1, &r[1..]),
        _ => return None,
    };
    let mins = clock(rest)?;
    (mins <= 14 * 60).then_some(sign * mins as i32 * 60)
}

fn time(t: &raw::Time, cx: &mut Ctx) -> Option<TimeWindow> {
    let days = match &t.days {
        Some(d) if d.is_empty() => {
            cx.err("time.days", None, "is an empty list, which no day matches");
            return None;
        }
        Some(d) => days(d, cx)?,
        None => 0x7f,
    };
    let mut at = |key: &str, v: &Option<EnvString>, default: u16| match v.as_deref() {
        None => Some(default),
        Some(s) => clock(s).or_else(|| {
            cx.err(key, Some(s), format!("`{s}` is not a time of day (HH:MM, quoted)"));
            None
        }),
    };
    let from = at("time.from", &t.from, 0)?;
    let to = at("time.to", &t.to, 24 * 60)?;
    if from == to {
        cx.err("time.to", None, "equals `from`: the window is empty");
        return None;
    }
    let offset_secs = match t.tz.as_deref() {
        None => 0,
        Some(z) => match offset(z) {
            Some(o) => o,
            None => {
                cx.err("time.tz", Some(z), format!("`{z}` is not UTC or a fixed offset like +01:00 (named zones are not supported)"));
                return None;
            }
        },
    };
    Some(TimeWindow { days, from, to, offset_secs })
}
