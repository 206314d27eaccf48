//! Every way a request can be refused, with its status, reason string and challenge
//! defined in one place, so a refusal carries its own reason wherever it travels and
//! no caller invents a status or a string for it.
//!
//! `reason()` is the stable machine-readable string used as the problem+json `reason`,
//! the metric label and the log field; it is always a `&'static str`, never built from
//! request data. [`Reason`] and [`Decision`] are the same labels as values, so request
//! state and metric series keys compare enums, not strings. Each mapping is one
//! exhaustive `match`, so a new variant does not compile until its status and reason
//! are chosen.

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
    #[error("the signing key is not published by the token's Azure AD B2C policy")]
    KeyPolicyMismatch,

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
    /// The subject or its upstream session was revoked (admin, back-channel logout)
    /// after this credential was issued (`crate::deny`).
    #[error("the credential was revoked: sign in again")]
    Revoked,

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
    /// A route `policy:` criterion did not hold (or a `deny` rule matched).
    #[error("{0}")]
    Policy(PolicyUnmet),
    /// `mfa_max_age`: the second factor was longer ago than the route allows (or its
    /// time is unknown); RFC 9470 step-up with `max_age`.
    #[error("this path requires a second factor within the last {max_age} seconds")]
    MfaTooOld { max_age: u64 },

    // --- routing -------------------------------------------------------------------
    #[error("no route matches this host and path")]
    NoRoute,
    /// A forward-auth check for a host and path no route protects: 403, not 404, because
    /// nginx `auth_request` turns any status but 2xx, 401 and 403 into a 500.
    #[error("no route matches the original host and path; idfabric does not protect it")]
    ForwardNoRoute,
    /// The path has no safe canonical form (`crate::canon`).
    #[error("{0}")]
    InvalidPath(crate::canon::PathProblem),
    /// The request target is not one idfabric routes (RFC 9112 §3.2).
    #[error("{0}")]
    InvalidTarget(crate::canon::TargetProblem),
}

/// The route `policy:` criterion that was not met: one reason string each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum PolicyUnmet {
    #[error("a deny rule of this route's policy matches the caller")]
    Denied,
    #[error("no allow rule of this route's policy matches the caller")]
    NoRule,
    #[error("this route's policy does not admit the caller's population")]
    Population,
    #[error("this route's policy does not admit the caller's provider")]
    Provider,
    #[error("this route's policy does not admit the caller's tenant")]
    Tenant,
    #[error("this route's policy does not admit the caller's organisation")]
    Org,
    #[error("this route's policy requires other group membership")]
    Group,
    #[error("this route's policy requires another role")]
    Role,
    #[error("this route's policy requires other scopes")]
    Scope,
    #[error("this route's policy requires other permissions")]
    Permission,
    #[error("this route's policy requires another (verified) email address")]
    Email,
    #[error("this route's policy does not admit this kind of principal")]
    PrincipalType,
    #[error("this route's policy does not admit this type of user")]
    UserType,
    #[error("this route's policy requires another claim value")]
    Claim,
    #[error("this route's policy does not allow this method for the caller")]
    Method,
    #[error("this route's policy does not allow this path for the caller")]
    Path,
    #[error("this route's policy does not allow the caller at this time")]
    Time,
    #[error("this route's policy requires another authentication context (acr)")]
    Acr,
}

impl PolicyUnmet {
    pub const fn code(self) -> Reason {
        match self {
            PolicyUnmet::Denied => Reason::PolicyDenied,
            PolicyUnmet::NoRule => Reason::PolicyNoRule,
            PolicyUnmet::Population => Reason::PolicyPopulation,
            PolicyUnmet::Provider => Reason::PolicyProvider,
            PolicyUnmet::Tenant => Reason::PolicyTenant,
            PolicyUnmet::Org => Reason::PolicyOrg,
            PolicyUnmet::Group => Reason::PolicyGroup,
            PolicyUnmet::Role => Reason::PolicyRole,
            PolicyUnmet::Scope => Reason::PolicyScope,
            PolicyUnmet::Permission => Reason::PolicyPermission,
            PolicyUnmet::Email => Reason::PolicyEmail,
            PolicyUnmet::PrincipalType => Reason::PolicyPrincipalType,
            PolicyUnmet::UserType => Reason::PolicyUserType,
            PolicyUnmet::Claim => Reason::PolicyClaim,
            PolicyUnmet::Method => Reason::PolicyMethod,
            PolicyUnmet::Path => Reason::PolicyPath,
            PolicyUnmet::Time => Reason::PolicyTime,
            PolicyUnmet::Acr => Reason::PolicyAcr,
        }
    }

    /// The `requirement` member of a 403 body.
    pub const fn requirement(self) -> &'static str {
        match self {
            PolicyUnmet::Denied => "policy.deny",
            PolicyUnmet::NoRule => "policy.allow",
            PolicyUnmet::Population => "policy.population",
            PolicyUnmet::Provider => "policy.provider",
            PolicyUnmet::Tenant => "policy.tenant",
            PolicyUnmet::Org => "policy.org",
            PolicyUnmet::Group => "policy.groups",
            PolicyUnmet::Role => "policy.roles",
            PolicyUnmet::Scope => "policy.scopes",
            PolicyUnmet::Permission => "policy.permissions",
            PolicyUnmet::Email => "policy.email",
            PolicyUnmet::PrincipalType => "policy.principal_type",
            PolicyUnmet::UserType => "policy.user_type",
            PolicyUnmet::Claim => "policy.claim",
            PolicyUnmet::Method => "policy.method",
            PolicyUnmet::Path => "policy.path",
            PolicyUnmet::Time => "policy.time",
            PolicyUnmet::Acr => "policy.acr",
        }
    }
}

/// Every reason string, as a closed set: `ok` for an allowed request, then one per
/// refusal. `as_str` is the only place the strings are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reason {
    #[default]
    Ok,
    MissingToken,
    DuplicateAuthorization,
    UnsupportedScheme,
    TokenTooLarge,
    MalformedToken,
    MissingSession,
    InvalidSession,
    AlgNone,
    AlgNotAllowed,
    AlgMismatch,
    UntrustedHeaderKey,
    UnknownCrit,
    UnknownIssuer,
    ProviderNotAllowed,
    UnknownKid,
    BadSignature,
    ProviderUnavailable,
    KeyIssuerMismatch,
    KeyPolicyMismatch,
    TokenExpired,
    TokenNotYetValid,
    TokenIssuedInFuture,
    IssuerMismatch,
    AudienceMismatch,
    TenantNotAllowed,
    WrongTokenUse,
    OktaOrgAccessToken,
    MissingClaim,
    NonceMismatch,
    SessionStoreUnavailable,
    AtHashMismatch,
    PolicyNotAllowed,
    AnonymousNotAllowed,
    FirebaseSessionCookie,
    AuthTimeInFuture,
    InvalidSubject,
    Revoked,
    PopulationNotAllowed,
    MfaRequired,
    GroupRequired,
    GroupsIncomplete,
    RoleRequired,
    InsufficientScope,
    TenantRequired,
    EmailNotVerified,
    RealUserRequired,
    PolicyDenied,
    PolicyNoRule,
    PolicyPopulation,
    PolicyProvider,
    PolicyTenant,
    PolicyOrg,
    PolicyGroup,
    PolicyRole,
    PolicyScope,
    PolicyPermission,
    PolicyEmail,
    PolicyPrincipalType,
    PolicyUserType,
    PolicyClaim,
    PolicyMethod,
    PolicyPath,
    PolicyTime,
    PolicyMfaAge,
    PolicyAcr,
    NoRoute,
    InvalidPath,
    InvalidTarget,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::MissingToken => "missing_token",
            Reason::DuplicateAuthorization => "duplicate_authorization",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::TokenTooLarge => "token_too_large",
            Reason::MalformedToken => "malformed_token",
            Reason::MissingSession => "missing_session",
            Reason::InvalidSession => "invalid_session",
            Reason::AlgNone => "alg_none",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::AlgMismatch => "alg_mismatch",
            Reason::UntrustedHeaderKey => "untrusted_header_key",
            Reason::UnknownCrit => "unknown_crit",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::ProviderNotAllowed => "provider_not_allowed",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::ProviderUnavailable => "provider_unavailable",
            Reason::KeyIssuerMismatch => "key_issuer_mismatch",
            Reason::KeyPolicyMismatch => "key_policy_mismatch",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenIssuedInFuture => "token_issued_in_future",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::TenantNotAllowed => "tenant_not_allowed",
            Reason::WrongTokenUse => "wrong_token_use",
            Reason::OktaOrgAccessToken => "okta_org_access_token",
            Reason::MissingClaim => "missing_claim",
            Reason::NonceMismatch => "nonce_mismatch",
            Reason::SessionStoreUnavailable => "session_store_unavailable",
            Reason::AtHashMismatch => "at_hash_mismatch",
            Reason::PolicyNotAllowed => "policy_not_allowed",
            Reason::AnonymousNotAllowed => "anonymous_not_allowed",
            Reason::FirebaseSessionCookie => "firebase_session_cookie",
            Reason::AuthTimeInFuture => "auth_time_in_future",
            Reason::InvalidSubject => "invalid_subject",
            Reason::Revoked => "revoked",
            Reason::PopulationNotAllowed => "population_not_allowed",
            Reason::MfaRequired => "mfa_required",
            Reason::GroupRequired => "group_required",
            Reason::GroupsIncomplete => "groups_incomplete",
            Reason::RoleRequired => "role_required",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::TenantRequired => "tenant_required",
            Reason::EmailNotVerified => "email_not_verified",
            Reason::RealUserRequired => "real_user_required",
            Reason::PolicyDenied => "policy_denied",
            Reason::PolicyNoRule => "policy_no_rule",
            Reason::PolicyPopulation => "policy_population",
            Reason::PolicyProvider => "policy_provider",
            Reason::PolicyTenant => "policy_tenant",
            Reason::PolicyOrg => "policy_org",
            Reason::PolicyGroup => "policy_group",
            Reason::PolicyRole => "policy_role",
            Reason::PolicyScope => "policy_scope",
            Reason::PolicyPermission => "policy_permission",
            Reason::PolicyEmail => "policy_email",
            Reason::PolicyPrincipalType => "policy_principal_type",
            Reason::PolicyUserType => "policy_user_type",
            Reason::PolicyClaim => "policy_claim",
            Reason::PolicyMethod => "policy_method",
            Reason::PolicyPath => "policy_path",
            Reason::PolicyTime => "policy_time",
            Reason::PolicyMfaAge => "policy_mfa_age",
            Reason::PolicyAcr => "policy_acr",
            Reason::NoRoute => "no_route",
            Reason::InvalidPath => "invalid_path",
            Reason::InvalidTarget => "invalid_target",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `decision` label of `auth_decisions_total` and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Decision {
    #[default]
    Allow,
    /// 401 `invalid_token` or 400 `invalid_request`: present a (better) credential.
    Challenge,
    /// 401 `insufficient_user_authentication`: authenticate again with a second factor.
    StepUp,
    /// 403: the identity does not meet the route's rules.
    Deny,
    /// 503, 404 or 400 without a challenge: not a judgement on the identity.
    Error,
}

impl Decision {
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Challenge => "challenge",
            Decision::StepUp => "step_up",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// The stable reason string (problem+json `reason`, metric label, log field).
    pub fn reason(&self) -> &'static str {
        self.code().as_str()
    }

    /// The reason as a value: compared and hashed without strings (metric series keys).
    pub fn code(&self) -> Reason {
        match self {
            Refusal::NoCredential => Reason::MissingToken,
            Refusal::DuplicateAuthorization => Reason::DuplicateAuthorization,
            Refusal::UnsupportedScheme => Reason::UnsupportedScheme,
            Refusal::TokenTooLarge => Reason::TokenTooLarge,
            Refusal::Malformed(_) => Reason::MalformedToken,
            Refusal::NoSession => Reason::MissingSession,
            Refusal::BadSession => Reason::InvalidSession,
            Refusal::AlgNone => Reason::AlgNone,
            Refusal::AlgNotAllowed => Reason::AlgNotAllowed,
            Refusal::AlgMismatch => Reason::AlgMismatch,
            Refusal::UntrustedHeaderKey => Reason::UntrustedHeaderKey,
            Refusal::UnknownCrit => Reason::UnknownCrit,
            Refusal::UnknownIssuer => Reason::UnknownIssuer,
            Refusal::ProviderNotAllowed => Reason::ProviderNotAllowed,
            Refusal::UnknownKid => Reason::UnknownKid,
            Refusal::BadSignature => Reason::BadSignature,
            Refusal::ProviderUnavailable => Reason::ProviderUnavailable,
            Refusal::KeyIssuerMismatch => Reason::KeyIssuerMismatch,
            Refusal::KeyPolicyMismatch => Reason::KeyPolicyMismatch,
            Refusal::Expired => Reason::TokenExpired,
            Refusal::NotYetValid => Reason::TokenNotYetValid,
            Refusal::IssuedInFuture => Reason::TokenIssuedInFuture,
            Refusal::IssuerMismatch => Reason::IssuerMismatch,
            Refusal::AudienceMismatch => Reason::AudienceMismatch,
            Refusal::TenantNotAllowed => Reason::TenantNotAllowed,
            Refusal::WrongTokenUse => Reason::WrongTokenUse,
            Refusal::OktaOrgAccessToken => Reason::OktaOrgAccessToken,
            Refusal::MissingClaim(_) => Reason::MissingClaim,
            Refusal::NonceMismatch => Reason::NonceMismatch,
            Refusal::SessionStoreUnavailable => Reason::SessionStoreUnavailable,
            Refusal::AtHashMismatch => Reason::AtHashMismatch,
            Refusal::PolicyNotAllowed => Reason::PolicyNotAllowed,
            Refusal::AnonymousNotAllowed => Reason::AnonymousNotAllowed,
            Refusal::SessionCookieNotIdToken => Reason::FirebaseSessionCookie,
            Refusal::AuthTimeInFuture => Reason::AuthTimeInFuture,
            Refusal::InvalidSubject => Reason::InvalidSubject,
            Refusal::Revoked => Reason::Revoked,
            Refusal::PopulationNotAllowed(_) => Reason::PopulationNotAllowed,
            Refusal::MfaRequired { .. } => Reason::MfaRequired,
            Refusal::GroupRequired(_) => Reason::GroupRequired,
            Refusal::GroupsIncomplete => Reason::GroupsIncomplete,
            Refusal::RoleRequired(_) => Reason::RoleRequired,
            Refusal::InsufficientScope(_) => Reason::InsufficientScope,
            Refusal::TenantRequired => Reason::TenantRequired,
            Refusal::EmailNotVerified => Reason::EmailNotVerified,
            Refusal::RealUserRequired => Reason::RealUserRequired,
            Refusal::Policy(p) => p.code(),
            Refusal::MfaTooOld { .. } => Reason::PolicyMfaAge,
            Refusal::NoRoute | Refusal::ForwardNoRoute => Reason::NoRoute,
            Refusal::InvalidPath(_) => Reason::InvalidPath,
            Refusal::InvalidTarget(_) => Reason::InvalidTarget,
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
            | Refusal::KeyPolicyMismatch
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
            | Refusal::InvalidSubject
            | Refusal::Revoked => Class::InvalidToken,
            Refusal::DuplicateAuthorization => Class::InvalidRequest,
            Refusal::InvalidPath(_) | Refusal::InvalidTarget(_) => Class::BadRequest,
            Refusal::ProviderUnavailable | Refusal::SessionStoreUnavailable => Class::Unavailable,
            Refusal::MfaRequired { .. } | Refusal::MfaTooOld { .. } => Class::StepUp,
            Refusal::InsufficientScope(_) => Class::Scope,
            Refusal::PopulationNotAllowed(_)
            | Refusal::GroupRequired(_)
            | Refusal::GroupsIncomplete
            | Refusal::RoleRequired(_)
            | Refusal::TenantRequired
            | Refusal::EmailNotVerified
            | Refusal::RealUserRequired
            | Refusal::Policy(_)
            | Refusal::ForwardNoRoute => Class::Forbidden,
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
    pub fn decision(&self) -> Decision {
        match self.class() {
            Class::InvalidToken | Class::InvalidRequest => Decision::Challenge,
            Class::StepUp => Decision::StepUp,
            Class::Forbidden | Class::Scope => Decision::Deny,
            Class::Unavailable | Class::NotFound | Class::BadRequest => Decision::Error,
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
            // RFC 9470 §3: `max_age` says how recent the authentication must be.
            (Class::StepUp, Refusal::MfaTooOld { max_age }) => Some(format!(
                "Bearer error=\"insufficient_user_authentication\", error_description=\"{desc}\", max_age=\"{max_age}\""
            )),
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
            Refusal::Policy(p) => Some(p.requirement()),
            Refusal::MfaTooOld { .. } => Some("policy.mfa_max_age"),
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

/// Why an admitted request got no answer from its upstream. Not a refusal (the auth
/// decision stands: `allow`), but a reason all the same: the problem+json `reason` and
/// the log line's, while `idfabric_upstream_errors_total{route}` counts them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum UpstreamFailure {
    /// Connecting (TLS handshake included) or waiting for a read took longer than the
    /// route's `timeouts`.
    #[error("the upstream application did not answer in time")]
    Timeout,
    /// The connection was refused or could not be made.
    #[error("the upstream application could not be reached")]
    Unreachable,
    /// No entry's name resolves.
    #[error("the upstream application's name does not resolve")]
    Unresolved,
    /// The upstream's certificate does not verify (CA, name, validity) or the TLS
    /// handshake failed.
    #[error("the TLS connection to the upstream application failed")]
    Tls,
    /// Anything else: the upstream closed the connection, or answered with something
    /// that is not HTTP.
    #[error("the upstream application could not be reached or failed")]
    Failed,
}

impl UpstreamFailure {
    pub const fn status(self) -> u16 {
        match self {
            UpstreamFailure::Timeout => 504,
            _ => 502,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            UpstreamFailure::Timeout => "upstream_timeout",
            UpstreamFailure::Unreachable => "upstream_unreachable",
            UpstreamFailure::Unresolved => "upstream_unresolved",
            UpstreamFailure::Tls => "upstream_tls_failed",
            UpstreamFailure::Failed => "upstream_error",
        }
    }

    pub const fn title(self) -> &'static str {
        match self {
            UpstreamFailure::Timeout => "Gateway Timeout",
            _ => "Bad Gateway",
        }
    }

    /// The problem+json body (RFC 9457) for this failure on `route`.
    pub fn problem_json(self, route: Option<&str>) -> String {
        serde_json::json!({
            "type": format!("urn:idfabric:problem:{}", self.reason()),
            "title": self.title(),
            "status": self.status(),
            "detail": self.to_string(),
            "reason": self.reason(),
            "route": route,
        })
        .to_string()
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

    #[test]
    fn reason_values_keep_their_strings() {
        assert_eq!(Reason::Ok.as_str(), "ok");
        assert_eq!(Refusal::NoCredential.code(), Reason::MissingToken);
        assert_eq!(Refusal::SessionCookieNotIdToken.reason(), "firebase_session_cookie");
        assert_eq!(Refusal::MfaRequired { acr_values: None }.decision().as_str(), "step_up");
        assert_eq!(Refusal::NoRoute.decision(), Decision::Error);
        assert_eq!((Refusal::ForwardNoRoute.status(), Refusal::ForwardNoRoute.reason()), (403, "no_route"));
        assert!(Refusal::ForwardNoRoute.challenge().is_none());
        assert_eq!(Refusal::GroupsIncomplete.decision().as_str(), "deny");
        assert_eq!(Refusal::Expired.decision().as_str(), "challenge");
    }
}
