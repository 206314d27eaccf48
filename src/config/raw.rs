//! The files exactly as written: strict serde structs (`deny_unknown_fields` on every
//! struct) that `validate` turns into immutable specs. Each provider kind declares its
//! own file struct beside its code (`crate::provider_file!`), so a kind's keys stay its own.
//!
//! Nothing here is used at request time; these types exist to reject typos with a
//! position.

use super::env::EnvString as S;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    pub listen: Listen,
    /// The admin listener: an address, or a map with `listen` and its guard.
    pub admin: Option<Admin>,
    #[serde(default)]
    pub providers: Vec<S>,
    pub session: Option<Session>,
    pub broker: Option<Broker>,
    pub server: Option<ServerTuning>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The audit log: one JSON line per auth decision (docs/operations.md).
    pub audit: Option<Audit>,
    /// How configuration changes are picked up (file watch; SIGHUP always works).
    pub reload: Option<Reload>,
    /// Request tracing (W3C `traceparent`, optional OTLP export).
    pub tracing: Option<Tracing>,
}

/// `admin: 127.0.0.1:9090` (the address alone) or
/// `admin: { listen: 127.0.0.1:9090, token_file: certs/admin.token, hosts: [...] }`.
/// Hand-written so a typo inside the map is reported by its key, as everywhere else,
/// instead of "did not match any variant".
#[derive(Debug)]
pub enum Admin {
    Addr(S),
    Full(AdminMap),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminMap {
    pub listen: S,
    /// A file holding the bearer token that guards every path but the probes and metrics.
    pub token_file: Option<S>,
    /// The token itself (meant for `${ENV}`).
    pub token: Option<S>,
    /// Host names (besides the listen address and `localhost`) the guarded paths answer to.
    #[serde(default)]
    pub hosts: Vec<S>,
    /// A second listener that serves the guarded paths (and only those).
    pub ops_listen: Option<S>,
}

impl<'de> Deserialize<'de> for Admin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Admin;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address (`127.0.0.1:9090`) or a map with `listen`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Admin, E> {
                super::env::expand(v).map(|s| Admin::Addr(S(s))).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Admin, A::Error> {
                AdminMap::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(Admin::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub http: Option<S>,
    pub https: Option<Https>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Https {
    pub addr: S,
    pub cert: S,
    pub key: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub store: Option<S>,
    pub cookie: Option<S>,
    pub ttl: Option<S>,
    /// Idle timeout (sliding); `ttl` is the absolute lifetime.
    pub idle: Option<S>,
    pub key_file: Option<S>,
    /// Bounds on sign-ins in progress and their rate (docs/configuration.md).
    pub login_limits: Option<LoginLimits>,
    /// PEM files for a `rediss://` store (docs/configuration.md).
    pub tls: Option<SessionTls>,
    /// One session cookie for every subdomain of this domain (`Domain=` attribute).
    pub cookie_domain: Option<S>,
    /// The one host that runs sign-ins and hands sessions to the other hosts.
    pub auth_host: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTls {
    pub ca_file: Option<S>,
    pub cert_file: Option<S>,
    pub key_file: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLimits {
    pub per_client: Option<u32>,
    pub total: Option<u32>,
    pub rate_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    pub issuer: S,
    pub signing_key: S,
    /// Lifetime of the `X-Identity-Token` minted per request (at most 5 minutes).
    pub identity_token_ttl: Option<S>,
    /// Broker access tokens (default 10m), ID tokens (default 10m), refresh-token
    /// families (default 30d); docs/broker.md.
    pub access_token_ttl: Option<S>,
    pub id_token_ttl: Option<S>,
    pub refresh_token_ttl: Option<S>,
    #[serde(default)]
    pub clients: Vec<BrokerClient>,
}

/// One relying party of the broker (docs/broker.md, "Clients").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerClient {
    pub client_id: S,
    /// A plain value (usually `${ENV}`) or an argon2 PHC string (`$argon2id$...`).
    pub client_secret: Option<S>,
    /// No secret; PKCE is then mandatory.
    pub public: Option<bool>,
    #[serde(default)]
    pub redirect_uris: Vec<S>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<S>,
    pub scopes: Option<Vec<S>>,
    pub grant_types: Option<Vec<S>>,
    pub populations: Option<Vec<S>>,
    pub providers: Option<Vec<S>>,
    pub require_pkce: Option<bool>,
    /// May introspect tokens issued to other clients (a resource server).
    pub introspect: Option<bool>,
    /// Where the broker POSTs OpenID Connect Back-Channel Logout tokens.
    pub backchannel_logout_uri: Option<S>,
    pub backchannel_logout_session_required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTuning {
    /// Proxies whose forwarding headers are believed, and the pinned external origin (docs/deployment.md).
    pub trusted_proxies: Option<Vec<S>>,
    pub public_url: Option<S>,
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    pub verify_cache_entries: Option<u64>,
    pub upstream_keepalive: Option<usize>,
    /// Unix socket for graceful upgrades (`serve --upgrade`).
    pub upgrade_sock: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: S,
    #[serde(rename = "match", default)]
    pub matcher: Match,
    pub auth: Option<S>,
    pub upstream: Option<Vec<S>>,
    pub by_population: Option<ByPopulation>,
    pub require: Option<Require>,
    /// `allow` and `deny` rule lists (docs/configuration.md, "Policies").
    pub policy: Option<Policy>,
    /// What fires adaptive MFA's `sensitive_request` (docs/adaptive-mfa.md).
    pub sensitive: Option<Sensitive>,
    /// Provider ids this route accepts; default: every enabled provider.
    pub providers: Option<Vec<S>>,
    /// What happens to the client's `Authorization` header: keep | strip | identity_token.
    pub authorization: Option<S>,
    /// Send `X-Forwarded-For/Proto/Host` upstream (default true).
    pub forwarded_headers: Option<bool>,
    /// Mint `X-Identity-Token` for this route (default true).
    pub identity_token: Option<bool>,
    /// Look of this route's sign-in pages (customer routes: white label).
    pub branding: Option<Branding>,
    /// The Azure AD B2C policy this route's sign-ins run (one of its B2C provider's
    /// `policies`); default: the provider's `journeys.signin`.
    pub b2c_policy: Option<S>,
    /// Match `path_prefix` case-sensitively (default false: `/ADMIN` is `/admin`).
    pub case_sensitive: Option<bool>,
    /// Accept `;` path parameters (`/app;jsessionid=1/x`); matching ignores them (default false).
    pub path_params: Option<bool>,
    /// `allow`: CORS preflights pass without a credential; `authenticate` (default):
    /// judged like any request.
    pub cors_preflight: Option<S>,
    /// The `Host` header sent upstream (default: the client's).
    pub upstream_host: Option<S>,
    /// `{ connect: 5s, read: 30s }`.
    pub timeouts: Option<Timeouts>,
    /// How often upstream names are resolved again (default 30s).
    pub resolve_every: Option<S>,
    /// PEM CA certificates that `https://` upstreams are verified against (default: the system roots).
    pub ca_file: Option<S>,
    /// `http1` (default), `h2c` or `h2`.
    pub upstream_protocol: Option<S>,
}

/// A route's upstream `timeouts:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<S>,
    pub read: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    pub product_name: Option<S>,
    pub primary_color: Option<S>,
    pub accent_color: Option<S>,
    /// A PNG, SVG or JPEG file (relative to routes.yaml), embedded in the page.
    pub logo: Option<S>,
    pub tagline: Option<S>,
    pub support_text: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub host: Option<S>,
    pub path_prefix: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByPopulation {
    pub workforce: Option<PopulationTarget>,
    pub customer: Option<PopulationTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationTarget {
    pub upstream: Vec<S>,
    pub require: Option<Require>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Require {
    pub population: Option<S>,
    /// `true`, `false` or `adaptive` (customers: step-up only when a risk signal fires).
    pub mfa: Option<Mfa>,
    pub groups_any: Option<Vec<S>>,
    pub groups_all: Option<Vec<S>>,
    pub roles_any: Option<Vec<S>>,
    pub scopes_all: Option<Vec<S>>,
    pub tenants: Option<Vec<S>>,
    pub email_verified: Option<bool>,
    /// Admit anonymous users (Firebase anonymous sign-in); default false.
    pub allow_anonymous: Option<bool>,
}

/// `require.mfa`: `true`, `false` or `adaptive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mfa {
    Required(bool),
    Adaptive,
}

impl<'de> Deserialize<'de> for Mfa {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mfa;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or adaptive")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Mfa, E> {
                Ok(Mfa::Required(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mfa, E> {
                match v {
                    "adaptive" => Ok(Mfa::Adaptive),
                    other => Err(E::custom(format!("`{other}` is not true, false or adaptive"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A route's `sensitive:` (adaptive MFA): the methods and paths that fire
/// `sensitive_request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensitive {
    pub methods: Option<Vec<S>>,
    pub paths: Option<Vec<S>>,
}

/// `scim:` in a provider file: the bearer token the provider's SCIM provisioning
/// client sends (`token_file` or `token`, one of them), and which SCIM attribute names
/// the user's subject at the provider (`externalId`, the default, or `userName`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scim {
    pub token_file: Option<S>,
    pub token: Option<S>,
    pub subject: Option<S>,
}

/// A route's `policy:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub allow: Option<Vec<Rule>>,
    #[serde(default)]
    pub deny: Vec<Rule>,
}

/// One rule: a criteria map, or exactly one of `and`, `or`, `not` (validation refuses
/// a map that mixes them). One struct rather than an untagged enum so that a typo is
/// reported by its key and line.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub and: Option<Vec<Rule>>,
    pub or: Option<Vec<Rule>>,
    pub not: Option<Box<Rule>>,
    pub population: Option<OneOrMany>,
    pub provider: Option<OneOrMany>,
    pub tenant: Option<OneOrMany>,
    pub org: Option<OneOrMany>,
    pub groups_any: Option<Vec<S>>,
    pub groups_all: Option<Vec<S>>,
    pub roles_any: Option<Vec<S>>,
    pub roles_all: Option<Vec<S>>,
    pub scopes_any: Option<Vec<S>>,
    pub scopes_all: Option<Vec<S>>,
    pub permissions_any: Option<Vec<S>>,
    pub permissions_all: Option<Vec<S>>,
    pub email: Option<OneOrMany>,
    pub email_domain: Option<OneOrMany>,
    /// `true` (a verified email is required) or `any` (`email`/`email_domain` also
    /// match unverified addresses).
    pub email_verified: Option<S>,
    pub principal_type: Option<OneOrMany>,
    pub user_type: Option<OneOrMany>,
    pub claim: Option<Claim>,
    pub method: Option<OneOrMany>,
    pub path: Option<OneOrMany>,
    pub time: Option<Time>,
    pub mfa: Option<bool>,
    pub mfa_max_age: Option<S>,
    pub acr: Option<OneOrMany>,
    /// `low`: no adaptive-MFA risk signal fires that the caller's MFA does not cover.
    pub risk: Option<S>,
}

/// `claim: { path: a.b, equals | in | prefix | regex }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub path: S,
    pub equals: Option<S>,
    #[serde(rename = "in")]
    pub in_: Option<Vec<S>>,
    pub prefix: Option<S>,
    pub regex: Option<S>,
}

/// `time: { days: [mon, tue], from: "06:00", to: "22:00", tz: UTC }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Time {
    pub days: Option<Vec<S>>,
    pub from: Option<S>,
    pub to: Option<S>,
    pub tz: Option<S>,
}

/// A value or a list of values (`method: GET` or `method: [GET, HEAD]`).
#[derive(Debug, Clone)]
pub struct OneOrMany(pub Vec<S>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                super::env::expand(v).map(|s| OneOrMany(vec![S(s)])).map_err(E::custom)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![S(v.to_string())]))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![S(v.to_string())]))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![S(v.to_string())]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<S>()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads only `id` and `kind`, ignoring everything else, so a disabled template with
/// unset `${...}` variables can be skipped without failing.
#[derive(Debug, Deserialize)]
pub struct ProviderHead {
    pub id: Option<String>,
    pub kind: Option<String>,
}

/// `audit:` in routes.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `stdout` (default), `off`, or a file path (appended to).
    pub output: Option<S>,
    /// Write full email addresses instead of masked ones (`a***@example.com`).
    pub include_email: Option<bool>,
}

/// `reload:` in routes.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// Watch the config, provider and key files and reload on change (default true).
    pub watch: Option<bool>,
    /// Quiet time after the last change before reloading (default 400ms).
    pub debounce: Option<S>,
}

/// `tracing:` in routes.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/HTTP collector endpoint; needs a binary built with `--features otlp`.
    pub otlp_endpoint: Option<S>,
}
