//! Which hosted journey a browser sign-in runs at its provider: sign-in, creating an
//! account, resetting a password, editing a profile, or a step-up to a second factor.
//!
//! Customer platforms run each of these as its own journey on their hosted pages, and
//! each asks for it its own way (an authorize parameter, another endpoint, another
//! Azure AD B2C policy): each provider kind says how (its `journey` method).
//! The journey travels in the pending sign-in through the callback, so the login funnel
//! counts registrations apart from sign-ins (`journey` label).

use serde::{Deserialize, Serialize};

/// A journey at the provider's hosted pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Journey {
    /// Signing in to an existing account (also the answer for older pending sign-ins).
    #[default]
    Signin,
    /// Creating an account.
    Signup,
    /// Resetting a forgotten password.
    Reset,
    /// Editing the account's profile (Azure AD B2C profile-edit policy).
    Profile,
    /// A fresh second factor for a page that requires one.
    Stepup,
}

impl Journey {
    /// Every journey, in the order metrics and docs list them.
    pub const ALL: [Journey; 5] = [Journey::Signin, Journey::Signup, Journey::Reset, Journey::Profile, Journey::Stepup];

    /// The `journey` label and the `journey=` value of `/.idfabric/login`.
    pub fn as_str(self) -> &'static str {
        match self {
            Journey::Signin => "signin",
            Journey::Signup => "signup",
            Journey::Reset => "reset",
            Journey::Profile => "profile",
            Journey::Stepup => "stepup",
        }
    }

    /// A journey a browser may ask for with `journey=` (step-up comes only from
    /// `step_up=1`, which a refused page sets).
    pub fn requested(s: &str) -> Option<Journey> {
        [Journey::Signin, Journey::Signup, Journey::Reset, Journey::Profile].into_iter().find(|j| j.as_str() == s)
    }

    /// The tag a pending sign-in is parked under: the provider id for a sign-in (as
    /// before journeys existed, so replicas of either version read each other's),
    /// `{provider}:{journey}` for the others.
    pub fn tag(self, provider: &str) -> String {
        match self {
            Journey::Signin => provider.to_string(),
            _ => format!("{provider}:{}", self.as_str()),
        }
    }

    /// A parked sign-in's provider and journey, from its tag (a bare provider id, as
    /// parked before journeys existed, is a sign-in).
    pub fn from_tag(tag: &str) -> (&str, Journey) {
        match tag.split_once(':') {
            Some((p, j)) => (p, Journey::ALL.into_iter().find(|x| x.as_str() == j).unwrap_or_default()),
            None => (tag, Journey::Signin),
        }
    }
}

/// How a provider's hosted pages are asked for a journey.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JourneyStart {
    /// Azure AD B2C: the policy (user flow or custom policy) whose endpoints run it.
    pub policy: Option<String>,
    /// Another page than the authorization endpoint (Amazon Cognito's hosted `/signup`).
    pub endpoint: Option<String>,
    /// Authorize parameters added for this journey.
    pub params: Vec<(&'static str, String)>,
}

/// What a provider's error answer at the callback asks idfabric to do instead of
/// failing the sign-in (Azure AD B2C's `AADB2C90118` / `AADB2C90091`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorTurn {
    /// Start this journey with the same provider and return path.
    Start(Journey),
    /// The user cancelled a journey: back to the sign-in.
    BackToSignIn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_the_journey_and_old_tags_are_sign_ins() {
        for j in Journey::ALL {
            assert_eq!(Journey::from_tag(&j.tag("shop")), ("shop", j));
        }
        assert_eq!(Journey::from_tag("shop"), ("shop", Journey::Signin));
        assert_eq!(Journey::from_tag("shop:bogus"), ("shop", Journey::Signin));
        assert_eq!(Journey::requested("stepup"), None, "step-up is never asked for by name");
        assert_eq!(Journey::requested("signup"), Some(Journey::Signup));
    }
}
