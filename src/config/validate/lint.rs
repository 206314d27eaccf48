//! Warnings about route policies that load but cannot mean what was written: rules
//! that can never match (an `and` asking for two populations at once, `not` of a rule
//! that always matches, a group required both present and absent) or always match (an
//! allow rule without criteria, which makes every other allow rule pointless; a deny
//! rule that refuses everything), duplicated rules, and time windows that say less than
//! they seem to. `idfabric check` prints them and `run` logs them; they never stop a
//! load, since such a policy still decides safely, only not as its author meant.
//!
//! The analysis is over the compiled rules (`config::rules`), so it sees values as they
//! are compared (methods upper-cased, tenants lower-cased). It knows the conditions
//! the route's own `require:` imposes (they are checked first, so a policy rule that
//! contradicts them never matches either). It assumes complete group information: with
//! incomplete groups a group criterion is unknown, and a deny rule with one refuses
//! anyway.

use crate::config::rules::{Criterion, Policy, Requirement, Rule, TimeWindow};
use crate::config::Requirements;

/// One warning: where (`policy.allow[1].and[0]`, the top-level rule index for finding
/// its line) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    /// `("allow", 1)`: the top-level rule the warning is about.
    pub top: (&'static str, usize),
    pub message: String,
}

/// Every warning for one route's `policy:`, given its route-level `require:`.
pub fn policy(policy: &Policy, require: &Requirements) -> Vec<Warning> {
    let lowered = crate::config::rules::lower_require(&[require]);
    let outer: Vec<&Criterion> = match lowered.allow.as_deref() {
        Some([Rule::All(cs)]) => cs.iter().collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (i, r) in policy.deny.iter().enumerate() {
        let w = |message: String| Warning { path: format!("policy.deny[{i}]"), top: ("deny", i), message };
        if always(r) {
            out.push(w(format!("`{r}` matches every request: every caller is refused (403 policy_denied) and no allow rule is ever reached")));
        } else if let Some(why) = never(r, &outer) {
            out.push(w(format!("`{r}` can never match ({why}), so it denies nothing")));
        } else {
            branches(r, &format!("policy.deny[{i}]"), ("deny", i), &outer, &mut out);
        }
    }
    if let Some(allow) = &policy.allow {
        for (i, r) in allow.iter().enumerate() {
            let w = |message: String| Warning { path: format!("policy.allow[{i}]"), top: ("allow", i), message };
            if always(r) {
                let rest = if allow.len() > 1 { "; the other allow rules change nothing" } else { "; without it (and without `allow`) the policy means the same" };
                out.push(w(format!("`{r}` matches every caller: everyone not denied is allowed{rest}")));
            } else if let Some(why) = never(r, &outer) {
                out.push(w(format!("`{r}` can never match ({why})")));
            } else {
                branches(r, &format!("policy.allow[{i}]"), ("allow", i), &outer, &mut out);
            }
        }
        duplicates(allow, "policy.allow", "allow", &mut out);
    }
    duplicates(&policy.deny, "policy.deny", "deny", &mut out);
    for (list, rules) in [("deny", &policy.deny[..]), ("allow", policy.allow.as_deref().unwrap_or_default())] {
        for (i, r) in rules.iter().enumerate() {
            nested(r, &format!("policy.{list}[{i}]"), (list, i), &mut out);
        }
    }
    out
}

/// The branches of `or`s inside a rule that can match as a whole: a branch that can
/// never match is dead code.
fn branches(r: &Rule, path: &str, top: (&'static str, usize), outer: &[&Criterion], out: &mut Vec<Warning>) {
    match r {
        Rule::Or(rs) => {
            for (j, b) in rs.iter().enumerate() {
                let p = format!("{path}.or[{j}]");
                match never(b, outer) {
                    Some(why) => out.push(Warning { path: p, top, message: format!("`{b}` can never match ({why}); the `or` never takes it") }),
                    None => branches(b, &p, top, outer, out),
                }
            }
        }
        Rule::And(rs) => {
            let mut c = Conj::default();
            c.crit.extend(outer);
            flatten(r, &mut c);
            for (j, b) in rs.iter().enumerate() {
                branches(b, &format!("{path}.and[{j}]"), top, &c.crit, out);
            }
        }
        Rule::All(_) | Rule::Not(_) => {}
    }
}

/// Duplicated rules in one list, and in every `and`/`or` below it, and criteria and
/// time windows that hold always.
fn nested(r: &Rule, path: &str, top: (&'static str, usize), out: &mut Vec<Warning>) {
    match r {
        Rule::All(cs) => {
            for c in cs {
                if let Criterion::Time(w) = c {
                    if let Some(m) = time(w, cs.len()) {
                        out.push(Warning { path: format!("{path}.time"), top, message: m });
                    }
                }
            }
        }
        Rule::And(rs) | Rule::Or(rs) => {
            let kind = if matches!(r, Rule::And(_)) { "and" } else { "or" };
            for (j, x) in rs.iter().enumerate() {
                nested(x, &format!("{path}.{kind}[{j}]"), top, out);
            }
            let mut found = Vec::new();
            duplicates(rs, &format!("{path}.{kind}"), top.0, &mut found);
            out.extend(found.into_iter().map(|w| Warning { top, ..w }));
        }
        Rule::Not(x) => nested(x, &format!("{path}.not"), top, out),
    }
}

fn time(w: &TimeWindow, criteria: usize) -> Option<String> {
    const ALL_DAYS: u8 = 0x7f;
    if w.days == ALL_DAYS && w.from == 0 && w.to == 24 * 60 {
        // A map of this one criterion is reported as a rule that always matches.
        return (criteria > 1).then(|| "`time` holds at every moment (every day, 00:00-24:00): it adds nothing".to_string());
    }
    if w.from > w.to && w.days != ALL_DAYS {
        return Some(format!(
            "`from` {:02}:{:02} is after `to` {:02}:{:02}, so the window wraps past midnight, and both parts count on the listed days: \
             the hours after midnight belong to the day they fall on, not to the evening before (a window from Friday evening does not reach into Saturday)",
            w.from / 60,
            w.from % 60,
            w.to / 60,
            w.to % 60
        ));
    }
    None
}

fn duplicates(rules: &[Rule], path: &str, list: &'static str, out: &mut Vec<Warning>) {
    let texts: Vec<String> = rules.iter().map(Rule::to_string).collect();
    for (j, t) in texts.iter().enumerate() {
        if let Some(i) = texts[..j].iter().position(|x| x == t) {
            out.push(Warning { path: format!("{path}[{j}]"), top: (list, j), message: format!("`{t}` repeats {path}[{i}]") });
        }
    }
}

/// A conjunction, flattened: the criteria every branch of it requires, the rules it
/// requires not to hold, and the `or`s one branch of which must hold.
#[derive(Default)]
struct Conj<'r> {
    crit: Vec<&'r Criterion>,
    nots: Vec<&'r Rule>,
    ors: Vec<&'r [Rule]>,
}

fn flatten<'r>(r: &'r Rule, out: &mut Conj<'r>) {
    match r {
        Rule::All(cs) => out.crit.extend(cs),
        Rule::And(rs) => rs.iter().for_each(|x| flatten(x, out)),
        Rule::Not(x) => out.nots.push(x),
        Rule::Or(rs) => out.ors.push(rs),
    }
}

/// Whether `r` holds for every identity and request.
fn always(r: &Rule) -> bool {
    match r {
        Rule::All(cs) => cs.iter().all(|c| matches!(c, Criterion::Time(w) if w.days == 0x7f && w.from == 0 && w.to == 24 * 60)),
        Rule::And(rs) => rs.iter().all(always),
        Rule::Or(rs) => rs.iter().any(always),
        Rule::Not(x) => never(x, &[]).is_some(),
    }
}

/// Why `r` can never hold when the criteria `outer` (of an enclosing conjunction, and
/// the route's `require:`) hold, if it cannot.
fn never(r: &Rule, outer: &[&Criterion]) -> Option<String> {
    let mut c = Conj::default();
    c.crit.extend(outer);
    flatten(r, &mut c);
    if let Some(why) = contradiction(&c.crit) {
        return Some(why);
    }
    for n in &c.nots {
        if always(n) {
            return Some(format!("`not: {n}` never holds, since `{n}` always does"));
        }
        if implied(n, &c.crit) {
            return Some(format!("it requires `{n}` and `not: {n}` at once"));
        }
    }
    for rs in &c.ors {
        let whys: Vec<Option<String>> = rs.iter().map(|b| never(b, &c.crit)).collect();
        if !whys.is_empty() && whys.iter().all(Option::is_some) {
            return Some(format!("no branch of its `or` can match: {}", whys.into_iter().flatten().next().unwrap_or_default()));
        }
    }
    None
}

/// A single-valued attribute a criterion limits to a list of values (an identity has
/// one population, one provider, ...; a request one method).
fn single(c: &Criterion) -> Option<(&'static str, Vec<String>)> {
    let owned = |v: &[String]| v.to_vec();
    Some(match c {
        Criterion::Population(p) => ("population", p.iter().map(|p| p.as_str().to_string()).collect()),
        Criterion::Provider(v) => ("provider", owned(v)),
        Criterion::Tenant(v) => ("tenant", owned(v)),
        Criterion::Org(v) => ("org", owned(v)),
        Criterion::PrincipalType(t) => ("principal_type", t.iter().map(|t| t.as_str().to_string()).collect()),
        Criterion::UserType(v) => ("user_type", owned(v)),
        Criterion::Method(v) => ("method", owned(v)),
        Criterion::Acr(v) => ("acr", owned(v)),
        Criterion::Require(Requirement::Population(p)) => ("population", vec![p.as_str().to_string()]),
        Criterion::Require(Requirement::Tenant(v)) => ("tenant", owned(v)),
        _ => return None,
    })
}

/// The names a criterion requires the identity to hold (`groups_all`, or a one-name
/// `groups_any`), by kind.
fn held(c: &Criterion) -> Option<(&'static str, &[String])> {
    let (kind, names, all) = set(c)?;
    (all || names.len() == 1).then_some((kind, names))
}

fn set(c: &Criterion) -> Option<(&'static str, &[String], bool)> {
    Some(match c {
        Criterion::Groups { names, all } => ("groups", names, *all),
        Criterion::Roles { names, all } => ("roles", names, *all),
        Criterion::Scopes { names, all } => ("scopes", names, *all),
        Criterion::Permissions { names, all } => ("permissions", names, *all),
        _ => return None,
    })
}

/// The values a conjunction leaves possible for a single-valued attribute (`None`:
/// unconstrained), and the criteria that narrowed it.
fn possible<'c>(crit: &[&'c Criterion], key: &str) -> Option<(Vec<String>, Vec<&'c Criterion>)> {
    let mut left: Option<Vec<String>> = None;
    let mut by = Vec::new();
    for c in crit {
        if let Some((k, values)) = single(c) {
            if k == key {
                by.push(*c);
                left = Some(match left {
                    None => values,
                    Some(l) => l.into_iter().filter(|v| values.contains(v)).collect(),
                });
            }
        }
    }
    left.map(|l| (l, by))
}

const SINGLE: [&str; 8] = ["population", "provider", "tenant", "org", "principal_type", "user_type", "method", "acr"];

fn contradiction(crit: &[&Criterion]) -> Option<String> {
    for key in SINGLE {
        if let Some((left, by)) = possible(crit, key) {
            if left.is_empty() {
                let names: Vec<String> = by.iter().map(|c| format!("`{c}`")).collect();
                return Some(format!("{} leave no {key} possible", names.join(" and ")));
            }
        }
    }
    None
}

/// Whether every identity and request meeting `crit` also meets `r`.
fn implied(r: &Rule, crit: &[&Criterion]) -> bool {
    match r {
        Rule::All(cs) => !cs.is_empty() && cs.iter().all(|c| implied_criterion(c, crit)),
        Rule::And(rs) => !rs.is_empty() && rs.iter().all(|x| implied(x, crit)),
        Rule::Or(rs) => rs.iter().any(|x| implied(x, crit)),
        Rule::Not(x) => never(x, crit).is_some(),
    }
}

fn implied_criterion(c: &Criterion, crit: &[&Criterion]) -> bool {
    if let Some((key, values)) = single(c) {
        return possible(crit, key).is_some_and(|(left, _)| !left.is_empty() && left.iter().all(|v| values.contains(v)));
    }
    if let Some((kind, names, all)) = set(c) {
        let has: Vec<&String> = crit.iter().filter_map(|x| held(x)).filter(|(k, _)| *k == kind).flat_map(|(_, n)| n).collect();
        return if all { names.iter().all(|n| has.contains(&n)) } else { names.iter().any(|n| has.contains(&n)) };
    }
    let text = c.to_string();
    crit.iter().any(|x| x.to_string() == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Problems;
    use crate::config::raw;

    /// The warnings for `policy` (the YAML under `policy:`) on a route whose `require:`
    /// is `require` (a YAML flow map, or empty).
    fn warnings(require: &str, policy_yaml: &str) -> Vec<Warning> {
        let file = std::path::Path::new("routes.yaml");
        let mut errors = Vec::new();
        let raw: raw::Policy = serde_norway::from_str(policy_yaml).expect("policy parses");
        let compiled = super::super::policy::policy(&raw, None, false, &mut Problems { file, text: policy_yaml, out: &mut errors });
        let req = if require.is_empty() {
            Requirements::default()
        } else {
            let r: raw::Require = serde_norway::from_str(require).expect("require parses");
            super::super::requirements(Some(&r), None, "routes.require", &mut Problems { file, text: require, out: &mut errors })
        };
        assert!(errors.is_empty(), "{errors:?}");
        policy(&compiled, &req)
    }

    /// The one warning `policy_yaml` gets, at `path`; its message.
    fn one(require: &str, policy_yaml: &str, path: &str) -> String {
        let w = warnings(require, policy_yaml);
        assert_eq!(w.len(), 1, "{policy_yaml}: {w:#?}");
        assert_eq!(w[0].path, path, "{w:#?}");
        w[0].message.clone()
    }

    fn none(require: &str, policy_yaml: &str) {
        let w = warnings(require, policy_yaml);
        assert!(w.is_empty(), "{policy_yaml}: {w:#?}");
    }

    #[test]
    fn an_and_of_two_populations_or_providers_never_matches() {
        let m = one("", "allow:\n  - and:\n      - { population: workforce }\n      - { population: customer }\n", "policy.allow[0]");
        assert!(m.contains("can never match") && m.contains("no population possible"), "{m}");
        let m = one("", "allow:\n  - and: [{ provider: [corp] }, { provider: [shop] }]\n  - { groups_any: [hr] }\n", "policy.allow[0]");
        assert!(m.contains("no provider possible"), "{m}");
        // Overlapping lists leave a value: no warning.
        none("", "allow:\n  - and: [{ provider: [corp, shop] }, { provider: [shop] }]\n");
        // Methods are single-valued too, and so is the route's own `require.population`.
        let m = one("", "allow:\n  - and: [{ method: [GET] }, { method: [post] }]\n", "policy.allow[0]");
        assert!(m.contains("no method possible"), "{m}");
        let m = one("{ population: workforce }", "allow:\n  - { population: customer }\n", "policy.allow[0]");
        assert!(m.contains("require.population: workforce"), "{m}");
    }

    #[test]
    fn not_of_a_rule_that_always_matches_never_matches() {
        let m = one("", "deny:\n  - not: {}\n", "policy.deny[0]");
        assert!(m.contains("never holds") && m.contains("denies nothing"), "{m}");
        let m = one("", "allow:\n  - { groups_any: [hr] }\n  - not: { time: { from: \"00:00\", to: \"24:00\" } }\n", "policy.allow[1]");
        assert!(m.contains("can never match"), "{m}");
    }

    #[test]
    fn a_group_required_present_and_absent_never_matches() {
        let m = one("", "allow:\n  - and:\n      - { groups_all: [hr, staff] }\n      - not: { groups_any: [staff] }\n", "policy.allow[0]");
        assert!(m.contains("at once"), "{m}");
        // A population required and excluded.
        let m = one("", "allow:\n  - and: [{ population: workforce }, { not: { population: [workforce, customer] } }]\n", "policy.allow[0]");
        assert!(m.contains("at once"), "{m}");
        // `groups_any: [a, b]` and `not: { groups_any: [a] }` can both hold (member of b only).
        none("", "allow:\n  - and: [{ groups_any: [a, b] }, { not: { groups_any: [a] } }]\n");
    }

    #[test]
    fn an_allow_rule_without_criteria_always_matches() {
        let m = one("", "allow:\n  - { groups_any: [hr] }\n  - {}\n", "policy.allow[1]");
        assert!(m.contains("matches every caller") && m.contains("other allow rules change nothing"), "{m}");
        let m = one("", "allow:\n  - or: [{ method: [GET] }, {}]\n", "policy.allow[0]");
        assert!(m.contains("matches every caller"), "{m}");
    }

    #[test]
    fn a_deny_rule_that_always_matches_refuses_everything() {
        let m = one("", "deny:\n  - {}\nallow:\n  - { groups_any: [hr] }\n", "policy.deny[0]");
        assert!(m.contains("every caller is refused") && m.contains("no allow rule is ever reached"), "{m}");
    }

    #[test]
    fn duplicated_rules_are_named_with_the_first() {
        let m = one("", "allow:\n  - { groups_any: [hr] }\n  - { roles_any: [x] }\n  - { groups_any: [hr] }\n", "policy.allow[2]");
        assert!(m.contains("repeats policy.allow[0]"), "{m}");
        let m = one("", "deny:\n  - or: [{ user_type: [guest] }, { user_type: [guest] }]\n", "policy.deny[0].or[1]");
        assert!(m.contains("repeats policy.deny[0].or[0]"), "{m}");
    }

    #[test]
    fn time_windows_that_say_less_than_they_seem() {
        let m = one("", "allow:\n  - { time: { days: [mon-fri], from: \"22:00\", to: \"06:00\" } }\n", "policy.allow[0].time");
        assert!(m.contains("wraps past midnight"), "{m}");
        // Every day: the wrap is plain (22:00 to 06:00 every night).
        none("", "allow:\n  - { time: { from: \"22:00\", to: \"06:00\" } }\n");
        let m = one("", "allow:\n  - { groups_any: [hr], time: { days: [mon-sun] } }\n", "policy.allow[0].time");
        assert!(m.contains("adds nothing"), "{m}");
    }

    #[test]
    fn an_or_branch_that_never_matches_is_dead() {
        let m = one("", "allow:\n  - or:\n      - { groups_any: [hr] }\n      - and: [{ population: workforce }, { population: customer }]\n", "policy.allow[0].or[1]");
        assert!(m.contains("never takes it"), "{m}");
    }

    #[test]
    fn ordinary_policies_get_no_warning() {
        none("{ population: workforce }", "deny:\n  - user_type: guest\n  - not: { email_verified: true }\nallow:\n  - method: [GET, HEAD]\n  - { method: [POST, DELETE], groups_any: [editors] }\n");
        none("", "allow:\n  - { path: [\"/admin\", \"/admin/**\"], mfa_max_age: 15m }\n  - not: { path: [\"/admin\", \"/admin/**\"] }\n");
        none("", "deny:\n  - and:\n      - path: \"/admin/**\"\n      - not: { mfa_max_age: 15m }\n");
    }

    /// The analysis is sound: a rule it calls never-matching matches no identity and
    /// request, one it calls always-matching matches every one. Checked over random
    /// rules against every identity and request of a small world (groups complete, as
    /// the analysis assumes).
    mod sound {
        use super::*;
        use crate::identity::{Identity, Population, ProviderKind};
        use crate::config::rules::Request;
        use proptest::prelude::*;

        fn names(all: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
            prop::sample::subsequence(all.to_vec(), 1..=all.len()).prop_map(|v| v.into_iter().map(str::to_string).collect())
        }

        fn criterion() -> impl Strategy<Value = Criterion> {
            prop_oneof![
                prop::sample::subsequence(Population::ALL.to_vec(), 1..=2).prop_map(Criterion::Population),
                names(&["a", "b"]).prop_map(Criterion::Provider),
                names(&["GET", "POST"]).prop_map(Criterion::Method),
                (names(&["hr", "eng"]), any::<bool>()).prop_map(|(names, all)| Criterion::Groups { names, all }),
                (names(&["r1", "r2"]), any::<bool>()).prop_map(|(names, all)| Criterion::Roles { names, all }),
                Just(Criterion::Time(TimeWindow { days: 0x7f, from: 0, to: 24 * 60, offset_secs: 0 })),
            ]
        }

        fn rule() -> impl Strategy<Value = Rule> {
            let leaf = prop::collection::vec(criterion(), 0..3).prop_map(Rule::All);
            leaf.prop_recursive(4, 24, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 1..4).prop_map(Rule::And),
                    prop::collection::vec(inner.clone(), 1..4).prop_map(Rule::Or),
                    inner.prop_map(|r| Rule::Not(Box::new(r))),
                ]
            })
        }

        /// Every identity and request of the small world.
        fn world() -> Vec<(Identity, &'static str)> {
            let subsets = |a: &str, b: &str| vec![vec![], vec![a.to_string()], vec![b.to_string()], vec![a.to_string(), b.to_string()]];
            let mut out = Vec::new();
            for pop in Population::ALL {
                for provider in ["a", "b"] {
                    for groups in subsets("hr", "eng") {
                        for roles in subsets("r1", "r2") {
                            for method in ["GET", "POST"] {
                                let mut id = Identity::new(provider, ProviderKind::Oidc, pop, "u".into());
                                id.provider = provider.to_string();
                                id.groups = groups.clone();
                                id.groups_complete = true;
                                id.roles = roles.clone();
                                out.push((id, method));
                            }
                        }
                    }
                }
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn never_and_always_are_never_wrong(r in rule()) {
                let never = never(&r, &[]);
                let always = always(&r);
                for (id, method) in world() {
                    let req = Request { method, path: "/", now: 0, signals: Default::default() };
                    let o = r.eval(&id, &req);
                    if let Some(why) = &never {
                        prop_assert!(o != crate::config::rules::Outcome::Match, "{r} matched {id:?} {method} but lint says never: {why}");
                    }
                    if always {
                        prop_assert!(o == crate::config::rules::Outcome::Match, "{r} did not match {id:?} {method} but lint says always");
                    }
                }
            }
        }
    }
}
