//! `routes.yaml` and `providers/*.yaml`: strict parsing, `${ENV}` expansion and
//! validation into immutable specs.
//!
//! `load` is the only entry point; `idfabric check`, `serve` and every test call it, so
//! what `check` accepts is exactly what the gateway runs. Every problem in every file
//! is collected (with file, line and key) before failing. Nothing here runs on the
//! request path: the specs are compiled into the gateway's tables once per load.

mod env;
mod error;
mod raw;
mod validate;

pub use env::{expand, EnvString};
pub use error::{ConfigError, ConfigErrors};
pub use validate::{b2c_issuer_tenant, guid_from, load, FIREBASE_JWKS_URL};

use crate::identity::Population;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub listen_http: Option<SocketAddr>,
    pub listen_https: Option<TlsListen>,
    pub admin: Option<SocketAddr>,
    /// Who may call the admin listener's operator endpoints (`admin:` map form).
    pub admin_guard: AdminGuard,
    pub providers: Vec<Arc<ProviderSpec>>,
    pub session: SessionSpec,
    pub broker: Option<BrokerSpec>,
    pub server: ServerSpec,
    pub routes: Vec<RouteSpec>,
    pub audit: AuditSpec,
    pub reload: ReloadSpec,
    pub tracing: TracingSpec,
}

/// The guard of the admin listener's operator endpoints (everything but `/metrics`,
/// `/healthz`, `/readyz`): a bearer token and the host names a request may name.
#[derive(Debug, Clone, Default)]
pub struct AdminGuard {
    /// `None`: no token configured, so the guarded paths are refused (fail closed).
    pub token: Option<AdminToken>,
    /// Where the token was read from (`admin.token_file`), for instructions that must
    /// not print the token itself.
    pub token_file: Option<PathBuf>,
    /// Extra host names (lowercase, no port) besides the listen address and `localhost`.
    pub hosts: Vec<String>,
    /// A second listener serving the guarded paths only (the first then serves the
    /// probes and metrics only).
    pub ops_listen: Option<SocketAddr>,
}

/// The admin bearer token. Kept for `idfabric report access` (which calls the admin
/// listener with it); never printed (`Debug` is redacted) and compared only through
/// its SHA-256 digest in constant time.
#[derive(Clone)]
pub struct AdminToken {
    secret: String,
    digest: [u8; 32],
}

impl AdminToken {
    /// Tokens shorter than this are refused by validation (a guessable token guards nothing).
    pub const MIN_LEN: usize = 16;

    pub fn new(secret: String) -> AdminToken {
        let digest = crate::providers::token_hash(&secret);
        AdminToken { secret, digest }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `presented` is the token: equal-length digests compared in constant
    /// time, so the comparison says nothing about how much of a guess was right.
    pub fn matches(&self, presented: &str) -> bool {
        let d = crate::providers::token_hash(presented);
        aws_lc_rs::constant_time::verify_slices_are_equal(&d, &self.digest).is_ok()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

#[derive(Debug, Clone)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    pub store: SessionStore,
    pub cookie: String,
    pub ttl: Duration,
    pub idle: Duration,
    pub key_file: Option<PathBuf>,
    pub login_limits: LoginLimits,
}

/// `session.login_limits`: what one client, and everyone together, may hold of sign-ins
/// in progress (login transactions and parked broker requests), and how fast one client
/// may start them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Sign-ins in progress per client address; past it the client's oldest is dropped.
    pub per_client: u32,
    /// Sign-ins in progress overall; past it the oldest is dropped.
    pub total: u32,
    /// Sign-in starts (`/.idfabric/login`, the broker's `/authorize`) per client address
    /// per minute, with bursts up to the same number.
    pub rate_per_minute: u32,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits { per_client: 32, total: 20_000, rate_per_minute: 300 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStore {
    Memory,
    /// `redis://`, `rediss://`, `redis+sentinel://`, `redis[s]+cluster://` with `session.tls`.
    Redis(crate::session::redis_conn::RedisTarget),
}

#[derive(Debug, Clone)]
pub struct BrokerSpec {
    pub issuer: String,
    /// The path part of `issuer` (no trailing slash), served on the proxy listener.
    pub path: String,
    pub signing_key: PathBuf,
    pub identity_token_ttl: Duration,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub clients: Vec<BrokerClientSpec>,
}

/// A relying party of the broker, validated (docs/broker.md).
#[derive(Debug, Clone)]
pub struct BrokerClientSpec {
    pub client_id: String,
    /// Plain secret or argon2 PHC string; `None` for public clients.
    pub client_secret: Option<String>,
    pub public: bool,
    /// Exact-match redirect URIs (absolute, no fragment).
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes this client may ask for.
    pub scopes: Vec<String>,
    /// `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant_types: Vec<String>,
    /// Populations whose providers may sign users in for this client; empty = all.
    pub populations: Vec<Population>,
    /// Provider ids allowed for this client; `None` = every browser-capable provider.
    pub providers: Option<Vec<String>>,
    pub require_pkce: bool,
    /// May introspect access tokens issued to other clients (a resource server);
    /// otherwise `/introspect` shows a client only its own tokens.
    pub introspect: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub threads: usize,
    pub verify_cache_entries: u64,
    pub upstream_keepalive: usize,
    /// Where `serve --upgrade` receives the listening sockets of the running process.
    pub upgrade_sock: PathBuf,
}

/// One upstream identity provider.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub id: String,
    pub file: PathBuf,
    pub population: Population,
    /// The issuer exactly as tokens carry it; for multi-tenant Entra it contains `{tenantid}`.
    pub issuer: String,
    pub discovery_url: Option<String>,
    pub jwks_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub audiences: Vec<String>,
    pub domains: Vec<String>,
    pub scopes: Vec<String>,
    /// normalised field -> source claim name.
    pub claims: BTreeMap<String, String>,
    pub display_name: String,
    pub jwks_refresh: Duration,
    /// `acr` (or Entra `acrs`) values that prove a second factor.
    pub mfa_acr: Vec<String>,
    /// Extra authorize parameters for browser sign-in.
    pub authorize_params: Vec<(String, String)>,
    pub kind: KindSpec,
}

impl ProviderSpec {
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// Where discovery is fetched from.
    pub fn discovery_location(&self) -> String {
        match &self.discovery_url {
            Some(u) => u.clone(),
            None => {
                let base = match &self.kind {
                    KindSpec::Entra(e) if e.discovery_authority.is_some() => {
                        e.discovery_authority.clone().unwrap_or_default()
                    }
                    _ => self.issuer.clone(),
                };
                format!("{}/.well-known/openid-configuration", base.trim_end_matches('/'))
            }
        }
    }
}

/// The kind-specific part of a provider: a closed set, one variant per kind.
#[derive(Debug, Clone)]
pub enum KindSpec {
    Entra(EntraSpec),
    Okta(OktaSpec),
    Auth0(Auth0Spec),
    Cognito(CognitoSpec),
    Oidc(OidcSpec),
    Dev(DevSpec),
    AzureB2c(AzureB2cSpec),
    Firebase(FirebaseSpec),
}

impl KindSpec {
    pub fn name(&self) -> &'static str {
        match self {
            KindSpec::Entra(_) => "entra",
            KindSpec::Okta(_) => "okta",
            KindSpec::Auth0(_) => "auth0",
            KindSpec::Cognito(_) => "cognito",
            KindSpec::Oidc(_) => "oidc",
            KindSpec::Dev(_) => "dev",
            KindSpec::AzureB2c(_) => "azure_b2c",
            KindSpec::Firebase(_) => "firebase",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraVariant {
    Workforce,
    External,
}

#[derive(Debug, Clone)]
pub struct EntraSpec {
    /// Allowed `tid` values (lower-case); empty = only the tenant in the issuer.
    pub tenants: Vec<String>,
    pub variant: EntraVariant,
    /// For `common`/`organizations` authorities: the original issuer URL, used to
    /// build the discovery URL while `issuer` holds the `{tenantid}` template.
    pub discovery_authority: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OktaSpec {
    pub org_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Auth0Spec {
    pub tenant_domain: String,
    pub extra_issuers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    Access,
    Id,
    Any,
}

#[derive(Debug, Clone)]
pub struct CognitoSpec {
    pub token_use: TokenUse,
    pub groups_are_roles: bool,
}

#[derive(Debug, Clone)]
pub struct OidcSpec {
    pub tenant: String,
}

#[derive(Debug, Clone)]
pub struct AzureB2cSpec {
    /// Accepted policies as written (compared case-insensitively).
    pub policies: Vec<String>,
    /// Policies that always enforce MFA (compared case-insensitively).
    pub mfa_policies: Vec<String>,
    /// Extra accepted issuers (exact strings, trailing slash included).
    pub extra_issuers: Vec<String>,
    /// The tenant GUID named by the issuer's path (lower-case).
    pub tenant: String,
}

impl AzureB2cSpec {
    /// The URLs keys come from, one per policy (deduplicated): `url` with `{policy}`
    /// substituted, in the policies' configured spelling.
    pub fn per_policy(&self, url: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.policies {
            let u = url.replace("{policy}", p);
            if !out.contains(&u) {
                out.push(u);
            }
        }
        out
    }

    pub fn allows(&self, policy: &str) -> bool {
        self.policies.iter().any(|p| p.eq_ignore_ascii_case(policy))
    }

    pub fn enforces_mfa(&self, policy: &str) -> bool {
        self.mfa_policies.iter().any(|p| p.eq_ignore_ascii_case(policy))
    }
}

#[derive(Debug, Clone)]
pub struct FirebaseSpec {
    pub project_id: String,
    /// Identity Platform tenants allowed; empty = project-level users only.
    pub tenants: Vec<String>,
    pub allow_anonymous: bool,
    /// `https://session.firebase.google.com/{project_id}`: session cookies, refused here.
    pub session_issuer: String,
}

/// The token dialect a dev provider imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Entra,
    Okta,
    Auth0,
    Cognito,
    Firebase,
    AzureB2c,
}

impl Shape {
    pub const ALL: [Shape; 6] =
        [Shape::Entra, Shape::Okta, Shape::Auth0, Shape::Cognito, Shape::Firebase, Shape::AzureB2c];

    pub fn parse(s: &str) -> Option<Shape> {
        match s {
            "entra" => Some(Shape::Entra),
            "okta" => Some(Shape::Okta),
            "auth0" => Some(Shape::Auth0),
            "cognito" => Some(Shape::Cognito),
            "firebase" => Some(Shape::Firebase),
            "azure_b2c" => Some(Shape::AzureB2c),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Entra => "entra",
            Shape::Okta => "okta",
            Shape::Auth0 => "auth0",
            Shape::Cognito => "cognito",
            Shape::Firebase => "firebase",
            Shape::AzureB2c => "azure_b2c",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DevSpec {
    pub shape: Shape,
    pub signing_key: PathBuf,
    pub users: Vec<DevUserSpec>,
    pub token_ttl: Duration,
    /// The tenant the shaped tokens carry (a GUID for the entra shape, a pool id for cognito …).
    pub tenant: String,
    /// Entra-shape tenant allow-list (defaults to `[tenant]`).
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DevUserSpec {
    pub name: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub mfa: bool,
    pub email_verified: Option<bool>,
    pub connection: Option<String>,
    pub org: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Bearer,
    Session,
    Either,
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Bearer => "bearer",
            AuthMode::Session => "session",
            AuthMode::Either => "either",
            AuthMode::None => "none",
        }
    }
}

/// What the upstream receives in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationHeader {
    Keep,
    Strip,
    IdentityToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: bool,
    pub sni: String,
    /// What was written in the file (for logs and `/providers`-style output).
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    pub population: Option<Population>,
    pub mfa: bool,
    pub groups_any: Vec<String>,
    pub groups_all: Vec<String>,
    pub roles_any: Vec<String>,
    pub scopes_all: Vec<String>,
    pub tenants: Vec<String>,
    pub email_verified: bool,
    pub allow_anonymous: bool,
}

#[derive(Debug, Clone)]
pub struct PopulationTarget {
    pub upstreams: Vec<Upstream>,
    pub require: Requirements,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    pub host: HostMatch,
    pub path_prefix: String,
    pub auth: AuthMode,
    /// The default upstreams (absent when only `by_population` is given).
    pub upstreams: Vec<Upstream>,
    /// Indexed by `Population::index()`.
    pub by_population: Option<[Option<PopulationTarget>; 2]>,
    pub require: Requirements,
    /// Provider ids accepted on this route; `None` = every enabled provider.
    pub providers: Option<Vec<String>>,
    pub authorization: AuthorizationHeader,
    pub identity_token: bool,
    pub branding: BrandingSpec,
    /// `path_prefix` compares case-sensitively (default: ASCII case-insensitively).
    pub case_sensitive: bool,
    /// `;` path parameters are accepted (and ignored by matching); default: refused.
    pub path_params: bool,
}

/// Validated branding (colours checked, logo loaded as a data URI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrandingSpec {
    pub product_name: Option<String>,
    pub primary_color: Option<String>,
    pub accent_color: Option<String>,
    pub logo_data_uri: Option<String>,
    pub tagline: Option<String>,
    pub support_text: Option<String>,
}

/// Where audit lines go (`audit.output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    Stdout,
    Off,
    File(PathBuf),
}

/// `audit:` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSpec {
    pub output: AuditOutput,
    /// Full email addresses in audit lines (default: masked).
    pub include_email: bool,
}

/// `reload:` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSpec {
    pub watch: bool,
    pub debounce: Duration,
}

/// `tracing:` validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TracingSpec {
    pub otlp_endpoint: Option<String>,
}
