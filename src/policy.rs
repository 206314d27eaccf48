//! Route requirements → decision. The only place that says allow or deny.
//!
//! `decide` returns a `Permit` (which only this module can build) or the `Refusal`
//! naming the first unmet requirement. Group rules fail closed when the provider did
//! not deliver complete group information (`groups_complete = false`).
//!
//! A route's `require:` (the simple form: one fixed list of conditions that must all
//! hold) is checked first, then its `policy:` (`lang`: allow and deny rules with
//! combinators, over the identity and the request's method, path and time).

/// The compiled rules live with the configuration that holds them (`config::rules`).
pub use crate::config::rules as lang;

use crate::config::Requirements;
use crate::identity::{Identity, Population};
use crate::refusal::Refusal;
pub use lang::{Policy, Request};

/// Proof that `decide` allowed the request.
#[derive(Debug)]
pub struct Permit(());

/// Checks every requirement in `reqs` (route-level, then population-level).
pub fn decide(id: &Identity, reqs: &[Requirements], mfa_acr: &[String]) -> Result<Permit, Refusal> {
    for r in reqs {
        check(id, r, mfa_acr)?;
    }
    Ok(Permit(()))
}

/// [`decide`], then the route's `policy` for this request.
pub fn decide_request(
    id: &Identity,
    reqs: &[Requirements],
    policy: Option<&Policy>,
    req: &Request,
    mfa_acr: &[String],
) -> Result<Permit, Refusal> {
    let permit = decide(id, reqs, mfa_acr)?;
    if reqs.iter().any(|r| r.adaptive_mfa) {
        adaptive(id, req.signals, mfa_acr)?;
    }
    if let Some(p) = policy {
        p.decide(id, req).map_err(|u| refusal(u, mfa_acr))?;
    }
    Ok(permit)
}

/// A policy's unmet criterion as the refusal the client sees.
pub fn refusal(u: lang::Unmet, mfa_acr: &[String]) -> Refusal {
    match u {
        lang::Unmet::Policy(p) => Refusal::Policy(p),
        lang::Unmet::Mfa => Refusal::MfaRequired { acr_values: (!mfa_acr.is_empty()).then(|| mfa_acr.join(" ")) },
        lang::Unmet::MfaAge(max_age) => Refusal::MfaTooOld { max_age },
        lang::Unmet::GroupsIncomplete => Refusal::GroupsIncomplete,
        lang::Unmet::Risk => Refusal::MfaRequired { acr_values: (!mfa_acr.is_empty()).then(|| mfa_acr.join(" ")) },
    }
}

/// `mfa: adaptive`: a workforce identity needs MFA (the workforce keeps mandatory
/// MFA); a customer needs it only when a risk signal fires that the credential's MFA
/// does not cover (`crate::risk`).
fn adaptive(id: &Identity, signals: crate::risk::Signals, mfa_acr: &[String]) -> Result<(), Refusal> {
    let needed = match id.population {
        Population::Workforce => !id.mfa,
        Population::Customer => signals.step_up(),
    };
    if needed {
        return Err(Refusal::MfaRequired { acr_values: (!mfa_acr.is_empty()).then(|| mfa_acr.join(" ")) });
    }
    Ok(())
}

fn check(id: &Identity, r: &Requirements, mfa_acr: &[String]) -> Result<(), Refusal> {
    // Anonymous identities (Firebase anonymous sign-in, admitted by a provider with
    // `allow_anonymous`) reach only routes that say so.
    if !r.allow_anonymous && id.attributes.get("anonymous") == Some(&serde_json::Value::Bool(true)) {
        return Err(Refusal::RealUserRequired);
    }
    if let Some(p) = r.population {
        if id.population != p {
            return Err(Refusal::PopulationNotAllowed(id.population.to_string()));
        }
    }
    if !r.tenants.is_empty() && !r.tenants.iter().any(|t| t.eq_ignore_ascii_case(&id.tenant)) {
        return Err(Refusal::TenantRequired);
    }
    if r.email_verified && id.email_verified != Some(true) {
        return Err(Refusal::EmailNotVerified);
    }
    if !r.groups_any.is_empty() || !r.groups_all.is_empty() {
        if !id.groups_complete {
            return Err(Refusal::GroupsIncomplete);
        }
        if !r.groups_any.is_empty() && !r.groups_any.iter().any(|g| id.groups.contains(g)) {
            return Err(Refusal::GroupRequired(r.groups_any.join(", ")));
        }
        if let Some(missing) = r.groups_all.iter().find(|g| !id.groups.contains(g)) {
            return Err(Refusal::GroupRequired(missing.clone()));
        }
    }
    if !r.roles_any.is_empty() && !r.roles_any.iter().any(|g| id.roles.contains(g)) {
        return Err(Refusal::RoleRequired(r.roles_any.join(", ")));
    }
    if !r.scopes_all.is_empty() {
        let missing: Vec<&str> =
            r.scopes_all.iter().filter(|s| !id.scopes.contains(s)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(Refusal::InsufficientScope(r.scopes_all.join(" ")));
        }
    }
    if r.mfa && !id.mfa {
        let acr_values = (!mfa_acr.is_empty()).then(|| mfa_acr.join(" "));
        return Err(Refusal::MfaRequired { acr_values });
    }
    Ok(())
}


#[cfg(test)]
#[path = "policy/tests.rs"]
mod tests;
