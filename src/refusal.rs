//! Every way a request can be refused, with its status, reason string and challenge
//! defined in one place (STYLE.md habits 6-8).
//!
//! `reason()` is the stable machine-readable string used as the problem+json `reason`,
//! the metric label and the log field; it is always a `&'static str`, never built from
//! request data. Each mapping is one exhaustive `match`, so a new variant does not
//! compile until its status and reason are chosen.

use thiserror::Error;

/// Why a credential or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    // --- credential extraction -------------------------------------------------
    #[error("no bearer token was sent")]
    NoCredential,
    #[error("the request carries more than one Authorization header")]
    DuplicateAuthorization,
    #[error("the Authorization header is not a Bearer token")]
    UnsupportedScheme,
    #[error("the token is larger than 16 KiB")]
    TokenTooLarge,
    #[error("the token is not a well-formed signed JWT ({0})")]
    Malformed(&'static str),
    #[error("no session cookie was sent")]
    NoSession,
    #[error("the session is unknown or has expired")]
    BadSession,

    // --- JOSE header --------------------------------------------------------------
    #[error("unsigned tokens (alg none) are never accepted")]
    AlgNone,
    #[error("the token's algorithm is not accepted (symmetric or unknown algorithm)")]
    AlgNotAllowed,
    #[error("the token's algorithm does not match the algorithm of the key it names")]
    AlgMismatch,
    #[error("the token header carries a key or key URL (jwk, jku, x5u, x5c); keys come only from the provider")]
    UntrustedHeaderKey,
    #[error("the token header marks an extension critical that is not understood")]
    UnknownCrit,

    // --- issuer, keys, signature -------------------------------------------------
    #[error("the token's issuer is not a configured provider")]
    UnknownIssuer,
    #[error("the token's provider is not accepted on this route")]
    ProviderNotAllowed,
    #[error("the token names a signing key the provider does not publish")]
    UnknownKid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the provider's signing keys are not available")]
    ProviderUnavailable,
    #[error("the signing key is not bound to the token's issuer")]
    KeyIssuerMismatch,

    // --- claims ------------------------------------------------------------------
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token's issuer does not match the provider")]
    IssuerMismatch,
    #[error("the token's audience is not accepted")]
    AudienceMismatch,
    #[error("the token's tenant is not allowed")]
    TenantNotAllowed,
    #[error("the token is of the wrong type for this provider (token_use)")]
    WrongTokenUse,
    #[error("Okta org authorization server access tokens can only be validated by Okta")]
    OktaOrgAccessToken,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    #[error("the session service is unavailable")]
    SessionStoreUnavailable,
    #[error("the ID token's nonce does not match the sign-in")]
    NonceMismatch,
    #[error("the ID token's at_hash does not match the access token")]
    AtHashMismatch,
    #[error("the token comes from a B2C policy (user flow) this provider does not accept")]
    PolicyNotAllowed,
    #[error("anonymous users are not accepted by this provider")]
    AnonymousNotAllowed,
    #[error("a Firebase session cookie was sent where an ID token is expected")]
    SessionCookieNotIdToken,
    #[error("the token's auth_time is in the future")]
    AuthTimeInFuture,
    #[error("the token's subject is not a usable user id")]
    InvalidSubject,

    // --- policy --------------------------------------------------------------------
    #[error("this route does not serve the {0} population")]
    PopulationNotAllowed(String),
    #[error("this route requires multi-factor authentication")]
    MfaRequired { acr_values: Option<String> },
    #[error("this route requires membership of one of the groups: {0}")]
    GroupRequired(String),
    #[error("this route requires group information the provider did not deliver completely")]
    GroupsIncomplete,
    #[error("this route requires one of the roles: {0}")]
    RoleRequired(String),
    #[error("this route requires the scopes: {0}")]
    InsufficientScope(String),
    #[error("this route does not serve the tenant")]
    TenantRequired,
    #[error("this route requires a verified email address")]
    EmailNotVerified,
    #[error("this route does not admit anonymous users")]
    RealUserRequired,

    // --- routing -------------------------------------------------------------------
    #[error("no route matches this host and path")]
    NoRoute,
    /// The path has no safe canonical form (`crate::canon`).
    #[error("{0}")]
    InvalidPath(crate::canon::PathProblem),
    /// The request target is not one idfabric routes (RFC 9112 §3.2).
    #[error("{0}")]
    InvalidTarget(crate::canon::TargetProblem),
}

/// How the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
    InvalidToken,
    /// 400 with `error="invalid_request"`.
    InvalidRequest,
    /// 401 with `error="insufficient_user_authentication"` (RFC 9470).
    StepUp,
    /// 403, naming the unmet requirement.
    Forbidden,
    /// 403 with `error="insufficient_scope"` (RFC 6750).
    Scope,
    /// 503: the provider, not the client, is at fault.
    Unavailable,
    /// 404.
    NotFound,
    /// 400 without a challenge (the request itself is malformed).
    BadRequest,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCredential => "missing_token",
            Refusal::DuplicateAuthorization => "duplicate_authorization",
            Refusal::UnsupportedScheme => "unsupported_scheme",
            Refusal::TokenTooLarge => "token_too_large",
            Refusal::Malformed(_) => "malformed_token",
            Refusal::NoSession => "missing_session",
            Refusal::BadSession => "invalid_session",
            Refusal::AlgNone => "alg_none",
            Refusal::AlgNotAllowed => "alg_not_allowed",
            Refusal::AlgMismatch => "alg_mismatch",
            Refusal::UntrustedHeaderKey => "untrusted_header_key",
            Refusal::UnknownCrit => "unknown_crit",
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::ProviderNotAllowed => "provider_not_allowed",
            Refusal::UnknownKid => "unknown_kid",
            Refusal::BadSignature => "bad_signature",
            Refusal::ProviderUnavailable => "provider_unavailable",
            Refusal::KeyIssuerMismatch => "key_issuer_mismatch",
            Refusal::Expired => "token_expired",
            Refusal::NotYetValid => "token_not_yet_valid",
            Refusal::IssuedInFuture => "token_issued_in_future",
            Refusal::IssuerMismatch => "issuer_mismatch",
            Refusal::AudienceMismatch => "audience_mismatch",
            Refusal::TenantNotAllowed => "tenant_not_allowed",
            Refusal::WrongTokenUse => "wrong_token_use",
            Refusal::OktaOrgAccessToken => "okta_org_access_token",
            Refusal::MissingClaim(_) => "missing_claim",
            Refusal::NonceMismatch => "nonce_mismatch",
            Refusal::SessionStoreUnavailable => "session_store_unavailable",
            Refusal::AtHashMismatch => "at_hash_mismatch",
            Refusal::PolicyNotAllowed => "policy_not_allowed",
            Refusal::AnonymousNotAllowed => "anonymous_not_allowed",
            Refusal::SessionCookieNotIdToken => "firebase_session_cookie",
            Refusal::AuthTimeInFuture => "auth_time_in_future",
            Refusal::InvalidSubject => "invalid_subject",
            Refusal::PopulationNotAllowed(_) => "population_not_allowed",
            Refusal::MfaRequired { .. } => "mfa_required",
            Refusal::GroupRequired(_) => "group_required",
            Refusal::GroupsIncomplete => "groups_incomplete",
            Refusal::RoleRequired(_) => "role_required",
            Refusal::InsufficientScope(_) => "insufficient_scope",
            Refusal::TenantRequired => "tenant_required",
            Refusal::EmailNotVerified => "email_not_verified",
            Refusal::RealUserRequired => "real_user_required",
            Refusal::NoRoute => "no_route",
            Refusal::InvalidPath(_) => "invalid_path",
            Refusal::InvalidTarget(_) => "invalid_target",
        }
    }

    pub fn class(&self) -> Class {
        match self {
            Refusal::NoCredential
            | Refusal::UnsupportedScheme
            | Refusal::TokenTooLarge
            | Refusal::Malformed(_)
            | Refusal::NoSession
            | Refusal::BadSession
            | Refusal::AlgNone
            | Refusal::AlgNotAllowed
            | Refusal::AlgMismatch
            | Refusal::UntrustedHeaderKey
            | Refusal::UnknownCrit
            | Refusal::UnknownIssuer
            | Refusal::ProviderNotAllowed
            | Refusal::UnknownKid
            | Refusal::BadSignature
            | Refusal::KeyIssuerMismatch
            | Refusal::Expired
            | Refusal::NotYetValid
            | Refusal::IssuedInFuture
            | Refusal::IssuerMismatch
            | Refusal::AudienceMismatch
            | Refusal::TenantNotAllowed
            | Refusal::WrongTokenUse
            | Refusal::OktaOrgAccessToken
            | Refusal::MissingClaim(_)
            | Refusal::NonceMismatch
            | Refusal::AtHashMismatch
            | Refusal::PolicyNotAllowed
            | Refusal::AnonymousNotAllowed
            | Refusal::SessionCookieNotIdToken
            | Refusal::AuthTimeInFuture
            | Refusal::InvalidSubject => Class::InvalidToken,
            Refusal::DuplicateAuthorization => Class::InvalidRequest,
            Refusal::InvalidPath(_) | Refusal::InvalidTarget(_) => Class::BadRequest,
            Refusal::ProviderUnavailable | Refusal::SessionStoreUnavailable => Class::Unavailable,
            Refusal::MfaRequired { .. } => Class::StepUp,
            Refusal::InsufficientScope(_) => Class::Scope,
            Refusal::PopulationNotAllowed(_)
            | Refusal::GroupRequired(_)
            | Refusal::GroupsIncomplete
            | Refusal::RoleRequired(_)
            | Refusal::TenantRequired
            | Refusal::EmailNotVerified
            | Refusal::RealUserRequired => Class::Forbidden,
            Refusal::NoRoute => Class::NotFound,
        }
    }

    pub fn status(&self) -> u16 {
        match self.class() {
            Class::InvalidToken | Class::StepUp => 401,
            Class::InvalidRequest | Class::BadRequest => 400,
            Class::Forbidden | Class::Scope => 403,
            Class::Unavailable => 503,
            Class::NotFound => 404,
        }
    }

    /// The decision label for `auth_decisions_total`.
    pub fn decision(&self) -> &'static str {
        match self.class() {
            Class::InvalidToken | Class::InvalidRequest => "challenge",
            Class::StepUp => "step_up",
            Class::Forbidden | Class::Scope => "deny",
            Class::Unavailable | Class::NotFound | Class::BadRequest => "error",
        }
    }

    /// The `WWW-Authenticate` header value, where the class has one.
    pub fn challenge(&self) -> Option<String> {
        let desc = self.to_string().replace('"', "'");
        match (self.class(), self) {
            (Class::InvalidToken, _) => Some(format!("Bearer error=\"invalid_token\", error_description=\"{desc}\"")),
            (Class::InvalidRequest, _) => Some(format!("Bearer error=\"invalid_request\", error_description=\"{desc}\"")),
            (Class::StepUp, Refusal::MfaRequired { acr_values }) => Some(match acr_values {
                Some(acr) => format!(
                    "Bearer error=\"insufficient_user_authentication\", error_description=\"{desc}\", acr_values=\"{acr}\""
                ),
                None => format!("Bearer error=\"insufficient_user_authentication\", error_description=\"{desc}\""),
            }),
            (Class::Scope, Refusal::InsufficientScope(scopes)) => Some(format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{desc}\", scope=\"{}\"",
                scopes.replace(", ", " ")
            )),
            (Class::Unavailable, _) => Some("Bearer".to_string()),
            _ => None,
        }
    }

    /// The unmet requirement, for 403 bodies (`requirement` member).
    pub fn requirement(&self) -> Option<&'static str> {
        match self {
            Refusal::PopulationNotAllowed(_) => Some("population"),
            Refusal::MfaRequired { .. } => Some("mfa"),
            Refusal::GroupRequired(_) | Refusal::GroupsIncomplete => Some("groups"),
            Refusal::RoleRequired(_) => Some("roles_any"),
            Refusal::InsufficientScope(_) => Some("scopes_all"),
            Refusal::TenantRequired => Some("tenants"),
            Refusal::EmailNotVerified => Some("email_verified"),
            Refusal::RealUserRequired => Some("allow_anonymous"),
            _ => None,
        }
    }

    /// The RFC 9457 problem document. Never contains a token or a secret: only the
    /// variant's own text, which is built from config values and fixed strings.
    pub fn problem_json(&self, route: Option<&str>) -> String {
        let mut body = serde_json::json!({
            "type": format!("urn:idfabric:problem:{}", self.reason()),
            "title": self.title(),
            "status": self.status(),
            "detail": self.to_string(),
            "reason": self.reason(),
        });
        if let Some(r) = route {
            body["route"] = serde_json::Value::String(r.to_string());
        }
        if let Some(req) = self.requirement() {
            body["requirement"] = serde_json::Value::String(req.to_string());
        }
        body.to_string()
    }

    fn title(&self) -> &'static str {
        match self.class() {
            Class::InvalidToken => "Unauthorized",
            Class::InvalidRequest | Class::BadRequest => "Bad Request",
            Class::StepUp => "Step-up authentication required",
            Class::Forbidden | Class::Scope => "Forbidden",
            Class::Unavailable => "Identity provider unavailable",
            Class::NotFound => "Not Found",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        let cases = [
            (Refusal::NoCredential, 401, Some("invalid_token")),
            (Refusal::Expired, 401, Some("invalid_token")),
            (Refusal::DuplicateAuthorization, 400, Some("invalid_request")),
            (Refusal::MfaRequired { acr_values: Some("c1".into()) }, 401, Some("insufficient_user_authentication")),
            (Refusal::GroupRequired("hr".into()), 403, None),
            (Refusal::InsufficientScope("orders:read".into()), 403, Some("insufficient_scope")),
            (Refusal::ProviderUnavailable, 503, None),
            (Refusal::InvalidPath(crate::canon::PathProblem::EncodedSlash), 400, None),
            (Refusal::InvalidTarget(crate::canon::TargetProblem::NoHost), 400, None),
        ];
        for (r, status, err) in cases {
            assert_eq!(r.status(), status, "{r:?}");
            let ch = r.challenge();
            match err {
                Some(e) => assert!(ch.unwrap().contains(&format!("error=\"{e}\"")), "{r:?}"),
                None => assert!(ch.map_or(true, |c| !c.contains("error=")), "{r:?}"),
            }
        }
    }

    #[test]
    fn path_refusals_name_their_class() {
        let r = Refusal::InvalidPath(crate::canon::PathProblem::DotSegmentWithParams);
        let body: serde_json::Value = serde_json::from_str(&r.problem_json(None)).unwrap();
        assert_eq!((body["status"].as_u64(), body["reason"].as_str()), (Some(400), Some("invalid_path")));
        assert!(body["detail"].as_str().unwrap().contains("`;` parameters"), "{body}");
        assert_eq!(Refusal::InvalidTarget(crate::canon::TargetProblem::Form).reason(), "invalid_target");
    }

    #[test]
    fn problem_body_names_requirement() {
        let body: serde_json::Value =
            serde_json::from_str(&Refusal::GroupRequired("hr".into()).problem_json(Some("hr"))).unwrap();
        assert_eq!(body["status"], 403);
        assert_eq!(body["reason"], "group_required");
        assert_eq!(body["requirement"], "groups");
        assert_eq!(body["route"], "hr");
    }
}
