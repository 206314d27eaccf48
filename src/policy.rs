//! Route requirements → decision. The only place that says allow or deny.
//!
//! `decide` returns a `Permit` (which only this module can build) or the `Refusal`
//! naming the first unmet requirement. Group rules fail closed when the provider did
//! not deliver complete group information (`groups_complete = false`).
//!
//! Both forms a route can state its conditions in are decided by one evaluator
//! (`lang`, the compiled rules): a route's `require:` (the simple form: one fixed list
//! of conditions that must all hold) is lowered at load into one allow rule
//! (`lang::lower_require`) and decided first, then its `policy:` (allow and deny rules
//! with combinators, over the identity and the request's method, path and time).

/// The compiled rules live with the configuration that holds them (`config::rules`).
pub use crate::config::rules as lang;

use crate::identity::Identity;
use crate::refusal::Refusal;
pub use lang::{Policy, Request};

/// Proof that `decide` allowed the request.
#[derive(Debug)]
pub struct Permit(());

/// Decides a route's lowered `require:` (route-level, then population-level:
/// `runtime::CompiledRoute::requirements`) for `id`, without request facts (the simple
/// form looks at the identity only; the proxy uses [`decide_request`]).
pub fn decide(id: &Identity, require: &Policy, mfa_acr: &[String]) -> Result<Permit, Refusal> {
    const NO_REQUEST: Request = Request { method: "", path: "", now: 0, signals: crate::config::risk::Signals::NONE };
    require.decide(id, &NO_REQUEST).map_err(|u| refusal(u, id, mfa_acr))?;
    Ok(Permit(()))
}

/// [`decide`], then the route's `policy` for this request.
pub fn decide_request(
    id: &Identity,
    require: &Policy,
    policy: Option<&Policy>,
    req: &Request,
    mfa_acr: &[String],
) -> Result<Permit, Refusal> {
    require.decide(id, req).map_err(|u| refusal(u, id, mfa_acr))?;
    if let Some(p) = policy {
        p.decide(id, req).map_err(|u| refusal(u, id, mfa_acr))?;
    }
    Ok(Permit(()))
}

/// An unmet criterion as the refusal the client sees.
pub fn refusal(u: lang::Unmet, id: &Identity, mfa_acr: &[String]) -> Refusal {
    use lang::RequireUnmet as R;
    match u {
        lang::Unmet::Policy(p) => Refusal::Policy(p),
        lang::Unmet::Mfa => Refusal::MfaRequired { acr_values: (!mfa_acr.is_empty()).then(|| mfa_acr.join(" ")) },
        lang::Unmet::MfaAge(max_age) => Refusal::MfaTooOld { max_age },
        lang::Unmet::GroupsIncomplete => Refusal::GroupsIncomplete,
        lang::Unmet::Risk => Refusal::MfaRequired { acr_values: (!mfa_acr.is_empty()).then(|| mfa_acr.join(" ")) },
        lang::Unmet::Require(r) => match r {
            R::RealUser => Refusal::RealUserRequired,
            R::Population => Refusal::PopulationNotAllowed(id.population.to_string()),
            R::Tenant => Refusal::TenantRequired,
            R::EmailVerified => Refusal::EmailNotVerified,
            R::Group(g) => Refusal::GroupRequired(g.to_string()),
            R::Role(r) => Refusal::RoleRequired(r.to_string()),
            R::Scopes(s) => Refusal::InsufficientScope(s.to_string()),
        },
    }
}

#[cfg(test)]
#[path = "policy/tests.rs"]
mod tests;
