//! `routes.yaml` and `providers/*.yaml`: strict parsing, `${ENV}` expansion and
//! validation into immutable specs.
//!
//! `load` is the only entry point; `idfabric check`, `serve` and every test call it, so
//! what `check` accepts is exactly what the gateway runs. Configuration knows no
//! provider kind: each provider file is read by the kind it names, from the registry
//! the caller passes (`providers::KINDS`; `kind.rs` here is the interface). Every
//! problem in every file is collected (with file, line and key) before failing. Nothing
//! here runs on the request path: the specs are compiled into the gateway's tables once
//! per load.

mod env;
mod error;
pub mod kind;
mod raw;
mod redis_target;
pub mod risk;
pub mod rules;
mod validate;

pub use env::{expand, EnvString};
pub use error::{ConfigError, ConfigErrors};
pub use kind::{KindLoader, KindSection, Kinds};
pub use redis_target::{RedisTarget, StoreUrlError, TlsFiles, Topology, SCHEMES};
pub use validate::{load, valid_phc};

use crate::identity::{Population, ProviderKind};
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
    /// Policy rules that can never match or always match, duplicated rules, time
    /// windows that say less than they seem: printed by `check`, logged by `run`.
    pub warnings: Vec<ConfigError>,
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
        let digest = sha256(&secret);
        AdminToken { secret, digest }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `presented` is the token: equal-length digests compared in constant
    /// time, so the comparison says nothing about how much of a guess was right.
    pub fn matches(&self, presented: &str) -> bool {
        let d = sha256(presented);
        aws_lc_rs::constant_time::verify_slices_are_equal(&d, &self.digest).is_ok()
    }
}

fn sha256(s: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A store URL fit for logs and error messages: the password, if any, is replaced by
/// `***` (`redis://user:***@host:6379/0`). Text that does not parse as a URL with a
/// host keeps only what follows its last `@`.
pub fn redacted(url: impl AsRef<str>) -> String {
    let url = url.as_ref();
    match url::Url::parse(url) {
        // Without a host (`redis:/:pw@h`, one slash) the credentials are not parsed as
        // such: the fallback below applies.
        Ok(mut u) if u.has_host() && !u.host_str().unwrap_or_default().contains(',') => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        // Sentinel and Cluster URLs list several hosts: what precedes the last `@` goes.
        _ => match url.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                format!("{scheme}://***@{}", rest.rsplit_once('@').map_or(rest, |(_, h)| h))
            }
            Some(_) => url.to_string(),
            None => url.rsplit_once('@').map_or(url.to_string(), |(_, host)| format!("***@{host}")),
        },
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
    /// `session.cookie_domain`: the session cookie is set with `Domain=` this (lowercase,
    /// no leading dot) and is then `__Secure-` (not `__Host-`) prefixed over TLS.
    pub cookie_domain: Option<String>,
    /// `session.auth_host`: sign-ins run on this host (lowercase, optional `:port`) and
    /// sessions are handed to route hosts with a one-time code.
    pub auth_host: Option<String>,
}

impl SessionSpec {
    /// The session cookie's one accepted name on a request. Over TLS `__Host-{cookie}`
    /// (the browser insists on `Secure`, `Path=/` and no `Domain`, so a sibling
    /// subdomain cannot plant it), or `__Secure-{cookie}` with `cookie_domain` (a
    /// `Domain` cookie cannot be `__Host-`: RFC 6265bis §4.1.3.2). Over plain HTTP the
    /// bare name (browsers never send prefixed cookies there).
    pub fn cookie_name(&self, tls: bool) -> String {
        match (tls, &self.cookie_domain) {
            (false, _) => self.cookie.clone(),
            (true, None) => format!("__Host-{}", self.cookie),
            (true, Some(_)) => format!("__Secure-{}", self.cookie),
        }
    }
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
    Redis(RedisTarget),
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
    /// OpenID Connect Back-Channel Logout 1.0: where logout tokens are POSTed when a
    /// session of this client ends (https, or http on loopback only).
    pub backchannel_logout_uri: Option<String>,
    /// Whether the client needs `sid` in logout tokens (always sent; kept for metadata).
    pub backchannel_logout_session_required: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// `server.trusted_proxies`: TCP peers whose forwarding headers are believed (`crate::forwarded`).
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// `server.public_url`: the external origin, whatever the headers say.
    pub public_url: Option<crate::forwarded::PublicUrl>,
    pub threads: usize,
    /// `server.work_stealing`: the proxy's worker threads share one work-stealing
    /// runtime (`true`), or each runs its own single-threaded runtime (`false`, the
    /// default with one thread).
    pub work_stealing: bool,
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
    /// The policies a route may name for its sign-ins (`b2c_policy:`): an Azure AD
    /// B2C provider's `policies`, set by its kind; empty for every other kind.
    pub route_policies: Vec<String>,
    /// Shared Signals events accepted from this provider (`ssf:`).
    pub ssf: Option<SsfSpec>,
    /// The kind's own validated keys (read back by the kind in `providers/`).
    pub kind: KindSection,
    /// `scim:`: SCIM 2.0 provisioning from this provider (`crate::scim`).
    pub scim: Option<ScimSpec>,
}

/// Which SCIM attribute carries the user's subject at the provider, so that a SCIM
/// user maps to the idfabric subject `{provider}:{value}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimSubject {
    /// `externalId`: the provider's object id (Entra sends the user's objectId, Okta
    /// its user id), which is what their tokens carry as `sub`/`oid`.
    ExternalId,
    /// `userName`: for a provider whose subject claim is the UPN or email.
    UserName,
}

/// A provider's SCIM settings. The bearer token is kept only as its SHA-256 digest and
/// compared in constant time.
#[derive(Clone)]
pub struct ScimSpec {
    digest: [u8; 32],
    pub subject: ScimSubject,
}

impl ScimSpec {
    pub fn new(token: &str, subject: ScimSubject) -> ScimSpec {
        ScimSpec { digest: sha256(token), subject }
    }

    /// Whether `presented` is the token (digests compared in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&sha256(presented), &self.digest).is_ok()
    }
}

impl std::fmt::Debug for ScimSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimSpec").field("token", &"***").field("subject", &self.subject).finish()
    }
}

/// A provider's validated `ssf:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfSpec {
    /// `iss` of the transmitter's Security Event Tokens.
    pub issuer: String,
    /// The transmitter's keys; `None`: the provider's own.
    pub jwks_url: Option<String>,
    /// What `aud` must contain.
    pub audience: String,
    /// `ssf.poll`: poll delivery (RFC 8936), besides push.
    pub poll: Option<SsfPoll>,
}

/// A provider's validated `ssf.poll:` section.
#[derive(Clone, PartialEq, Eq)]
pub struct SsfPoll {
    /// The transmitter's poll endpoint.
    pub url: String,
    /// The bearer token for it (never logged).
    pub token: String,
    pub interval: std::time::Duration,
    pub max_events: u32,
}

impl std::fmt::Debug for SsfPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsfPoll").field("url", &self.url).field("token", &"***").field("interval", &self.interval).field("max_events", &self.max_events).finish()
    }
}

impl ProviderSpec {
    pub fn kind(&self) -> ProviderKind {
        self.kind.kind()
    }

    pub fn kind_name(&self) -> &'static str {
        self.kind.kind().as_str()
    }
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

/// Where one upstream entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// An IP address and port, used as written.
    Addr(SocketAddr),
    /// A DNS name, resolved while serving (the first request that needs it, then again
    /// every `resolve_every`), so an upstream that moves is followed without a reload.
    Name { host: String, port: u16 },
}

/// One entry of a route's `upstream` list: `host:port`, `http://host[:port]` or
/// `https://host[:port]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub target: UpstreamTarget,
    pub tls: bool,
    /// The URL's host: the TLS server name (SNI) sent to an `https://` upstream, and
    /// the name its certificate must carry.
    pub sni: String,
    /// What was written in the file (for logs and `/providers`-style output).
    pub label: String,
}

impl Upstream {
    /// The address of an entry written as an IP address; `None` for a name.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.target {
            UpstreamTarget::Addr(a) => Some(a),
            UpstreamTarget::Name { .. } => None,
        }
    }
}

/// The HTTP version spoken to a route's upstreams (`upstream_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default; WebSocket upgrades need it).
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (RFC 9113 §3.3), e.g. a gRPC server
    /// behind `http://` entries.
    H2c,
    /// HTTP/2 negotiated with ALPN `h2` on `https://` entries.
    H2,
}

/// How a route talks to its upstreams: `upstream_host`, `timeouts`, `resolve_every`,
/// `ca_file`, `upstream_protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// The `Host` header sent upstream; `None`: the client's.
    pub host_header: Option<String>,
    /// Connecting, TLS handshake included (`timeouts.connect`, default 3s).
    pub connect_timeout: Duration,
    /// Waiting for each read from the upstream (`timeouts.read`); `None`: no limit.
    pub read_timeout: Option<Duration>,
    /// How long a name's addresses are used before it is resolved again.
    pub resolve_every: Duration,
    /// CA certificates `https://` entries are verified against instead of the system
    /// roots: the file, and its certificates (DER) as read and checked at load.
    pub ca_file: Option<PathBuf>,
    pub ca_certs: Option<Arc<Vec<Vec<u8>>>>,
    pub protocol: UpstreamProtocol,
}

impl UpstreamOptions {
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            host_header: None,
            connect_timeout: Self::CONNECT_TIMEOUT,
            read_timeout: None,
            resolve_every: Self::RESOLVE_EVERY,
            ca_file: None,
            ca_certs: None,
            protocol: UpstreamProtocol::Http1,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    pub population: Option<Population>,
    pub mfa: bool,
    /// `mfa: adaptive`: customers step up only when a risk signal fires
    /// (`crate::risk`); workforce identities need MFA as with `mfa: true`.
    pub adaptive_mfa: bool,
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
    /// `policy:` compiled (regexes and globs built once per load); checked after `require`.
    pub policy: Option<Arc<rules::Policy>>,
    /// Adaptive MFA's settings (`sensitive:`): present when the route has `mfa:
    /// adaptive` or a `risk: low` rule, the only routes whose requests are assessed.
    pub risk: Option<Arc<risk::RiskSpec>>,
    /// Provider ids accepted on this route; `None` = every enabled provider.
    pub providers: Option<Vec<String>>,
    pub authorization: AuthorizationHeader,
    /// The upstream receives `X-Forwarded-For/Proto/Host` (`forwarded_headers`, default true).
    pub forwarded_headers: bool,
    pub identity_token: bool,
    pub branding: BrandingSpec,
    /// The Azure AD B2C policy this route's sign-ins run (`b2c_policy:`).
    pub b2c_policy: Option<String>,
    /// `path_prefix` compares case-sensitively (default: ASCII case-insensitively).
    pub case_sensitive: bool,
    /// `;` path parameters are accepted (and ignored by matching); default: refused.
    pub path_params: bool,
    /// What a CORS preflight needs on this route.
    pub cors_preflight: CorsPreflight,
    /// How the route's upstreams are reached.
    pub upstream: UpstreamOptions,
}

/// `cors_preflight`: a browser's CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) never carries credentials (Fetch standard,
/// <https://fetch.spec.whatwg.org/#cors-preflight-fetch>), so an API that browsers call
/// cross-origin can only answer it if it reaches the app unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorsPreflight {
    /// Judged like any other request (the default).
    #[default]
    Authenticate,
    /// Admitted without a credential and without identity headers.
    Allow,
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
