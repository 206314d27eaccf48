//! Why sign-in refused a request: one closed list. [`Failure::as_str`] is the reason
//! that appears in the reply's metric label (`reason`), the log line and, for
//! `/.idfabric/session`, the problem body's `reason` and `type`; the strings are part of
//! the interface (dashboards and tests match them), so a variant's string never changes.

use crate::providers::oidc::UserinfoError;
use crate::refusal::Refusal;

/// A refused sign-in start, callback, session exchange or sign-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No session store, or no provider of the application can sign a browser in.
    SignInUnavailable,
    /// The client's budget of sign-in starts is spent.
    SignInRateLimited,
    /// The return path is not a path on this site.
    InvalidRd,
    /// No application is configured at this address.
    NoRoute,
    MethodNotAllowed,
    /// A sign-out POST from another site.
    CrossSiteLogout,
    /// A `/.idfabric/session` POST from another origin.
    CrossOrigin,
    /// No provider is configured for the email's domain.
    UnknownDomain,
    /// `journey=` names no journey a browser may ask for.
    UnknownJourney,
    /// The provider (or none of the application's providers) offers the journey asked
    /// for (sign-up, password reset, profile edit).
    JourneyNotOffered,
    /// The user cancelled the provider's journey (Azure AD B2C `AADB2C90091`): back to
    /// the sign-in, a redirect rather than a refusal.
    JourneyCancelled,
    /// The provider's discovery document is not loaded.
    ProviderUnavailable,
    /// The provider's authorization endpoint is not a URL.
    ProviderMisconfigured,
    SessionStoreUnavailable,
    /// The callback's `state` names no sign-in in progress (used, expired or forged).
    InvalidState,
    /// The sign-in's provider is no longer configured.
    UnknownProvider,
    /// The callback came back to another host than the sign-in started on.
    HostMismatch,
    /// The browser presented no binding cookie for this sign-in.
    StateNotBound,
    /// The browser presented another browser's binding (login CSRF).
    LoginCsrf,
    /// The response's `iss` names another provider (RFC 9207).
    IssuerMismatch,
    /// The provider answered `error=access_denied`.
    AccessDenied,
    /// The provider answered another `error`.
    ProviderError,
    MissingCode,
    TokenExchangeFailed,
    MissingIdToken,
    /// The ID token was refused: the refusal's own reason.
    IdToken(Refusal),
    /// The UserInfo response could not be used.
    UserinfoFailed,
    /// The UserInfo response is about another user than the ID token.
    UserinfoSubjectMismatch,
    /// A step-up came back without a second factor.
    MfaNotCompleted,
    /// A step-up was completed by another account than the one signed in.
    StepUpUserMismatch,
    /// `/.idfabric/session` takes ID tokens of session providers (Firebase) only.
    NotASessionProvider,
    /// The sign-in behind a posted ID token is too old.
    StaleAuthTime,
    /// A session handoff names a return address that is not on a configured route host
    /// (or uses another scheme or port than the sign-in host).
    HandoffTargetNotAllowed,
    /// A session handoff without the target host's browser binding: no binding digest
    /// on the way out, or, on the way back, no binding cookie or another browser's.
    HandoffNotBound,
    /// The handoff code names nothing: expired (60 s), never issued or malformed.
    HandoffInvalid,
    /// The handoff code was redeemed before.
    HandoffReplayed,
    /// The handoff code was issued for another host.
    HandoffHostMismatch,
}

impl Failure {
    /// The reason string (metric label, log field, problem `reason`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::SignInUnavailable => "sign_in_unavailable",
            Failure::SignInRateLimited => "sign_in_rate_limited",
            Failure::InvalidRd => "invalid_rd",
            Failure::NoRoute => "no_route",
            Failure::MethodNotAllowed => "method_not_allowed",
            Failure::CrossSiteLogout => "cross_site_logout",
            Failure::CrossOrigin => "cross_origin",
            Failure::UnknownDomain => "unknown_domain",
            Failure::UnknownJourney => "unknown_journey",
            Failure::JourneyNotOffered => "journey_not_offered",
            Failure::JourneyCancelled => "journey_cancelled",
            Failure::ProviderUnavailable => "provider_unavailable",
            Failure::ProviderMisconfigured => "provider_misconfigured",
            Failure::SessionStoreUnavailable => "session_store_unavailable",
            Failure::InvalidState => "invalid_state",
            Failure::UnknownProvider => "unknown_provider",
            Failure::HostMismatch => "host_mismatch",
            Failure::StateNotBound => "state_not_bound",
            Failure::LoginCsrf => "login_csrf",
            Failure::IssuerMismatch => "issuer_mismatch",
            Failure::AccessDenied => "access_denied",
            Failure::ProviderError => "provider_error",
            Failure::MissingCode => "missing_code",
            Failure::TokenExchangeFailed => "token_exchange_failed",
            Failure::MissingIdToken => "missing_id_token",
            Failure::IdToken(r) => r.reason(),
            Failure::UserinfoFailed => "userinfo_failed",
            Failure::UserinfoSubjectMismatch => "userinfo_subject_mismatch",
            Failure::MfaNotCompleted => "mfa_not_completed",
            Failure::StepUpUserMismatch => "step_up_user_mismatch",
            Failure::NotASessionProvider => "not_a_session_provider",
            Failure::StaleAuthTime => "stale_auth_time",
            Failure::HandoffTargetNotAllowed => "handoff_target_not_allowed",
            Failure::HandoffNotBound => "handoff_not_bound",
            Failure::HandoffInvalid => "handoff_invalid",
            Failure::HandoffReplayed => "handoff_replayed",
            Failure::HandoffHostMismatch => "handoff_host_mismatch",
        }
    }
}

impl From<&UserinfoError> for Failure {
    fn from(e: &UserinfoError) -> Failure {
        match e {
            UserinfoError::SubjectMismatch => Failure::UserinfoSubjectMismatch,
            UserinfoError::Unreachable | UserinfoError::Status(_) | UserinfoError::NotJson => Failure::UserinfoFailed,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_userinfo_errors_own() {
        for e in [UserinfoError::Unreachable, UserinfoError::Status(500), UserinfoError::NotJson, UserinfoError::SubjectMismatch] {
            assert_eq!(Failure::from(&e).as_str(), e.reason());
        }
        assert_eq!(Failure::IdToken(Refusal::AtHashMismatch).as_str(), "at_hash_mismatch");
    }
}
