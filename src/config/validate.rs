//! Raw files → validated `Config`. Every problem is collected; none stops the others.

use super::error::{from_serde, ConfigError, ConfigErrors, Problems};
use super::kind::Kinds;
use super::raw;
use super::*;
use crate::identity::Population;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

#[path = "validate/broker.rs"]
mod broker;
#[path = "validate/edge.rs"]
mod edge;
#[path = "validate/lint.rs"]
mod lint;
#[path = "validate/policy.rs"]
mod policy;
#[path = "validate/providers.rs"]
mod providers;
#[path = "validate/risk.rs"]
mod risk;
#[path = "validate/sso.rs"]
mod sso;
#[path = "validate/upstreams.rs"]
mod upstreams;

pub use broker::valid_phc;
pub(super) use providers::common;

/// Loads `routes.yaml` at `path` and the enabled provider files beside it, validating
/// everything; each provider file is read by its kind, one of `kinds`. The error lists
/// every problem found.
pub fn load(path: &Path, kinds: &Kinds) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: None,
                message: format!("cannot read: {e}"),
            }]))
        }
    };
    let file: raw::RoutesFile = match parse(path, &text) {
        Ok(f) => f,
        Err(e) => return Err(ConfigErrors(vec![e])),
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };

    let providers = providers::load_providers(kinds, &base_dir, path, &text, &file.providers, &mut errors);
    let mut p = Problems { file: path, text: &text, out: &mut errors };
    let mut config = build(&file, &base_dir, path, providers, &mut p);
    if errors.is_empty() {
        config.warnings = warnings(&config.routes, path, &text);
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Policy rules that load but can never match or always match (`lint`), each at the
/// line of its top-level rule. Warnings, not errors: such a policy still decides safely.
fn warnings(routes: &[RouteSpec], path: &Path, text: &str) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for r in routes {
        let Some(policy) = &r.policy else { continue };
        let anchor = format!("name: {}", r.name);
        for w in lint::policy(policy, &r.require) {
            out.push(ConfigError {
                file: path.to_path_buf(),
                line: rule_line(text, &anchor, w.top.0, w.top.1),
                key: Some(format!("routes[{}].{}", r.name, w.path)),
                message: w.message,
            });
        }
    }
    out
}

/// The line of item `index` of the `list:` (`allow` or `deny`) after the line holding
/// `anchor`; the list's own line when it is written inline (`allow: [...]`).
fn rule_line(text: &str, anchor: &str, list: &str, index: usize) -> Option<usize> {
    let key = super::error::locate(text, Some(anchor), list)?;
    let lines: Vec<&str> = text.lines().collect();
    let key_line = lines.get(key - 1)?;
    if key_line.split_once(&format!("{list}:")).is_some_and(|(_, rest)| !rest.trim().is_empty() && !rest.trim_start().starts_with('#')) {
        return Some(key);
    }
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut item_indent = None;
    let mut seen = 0;
    for (i, l) in lines.iter().enumerate().skip(key) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let at = *item_indent.get_or_insert(indent(l));
        if indent(l) < at || (indent(l) == at && !t.starts_with('-')) {
            break;
        }
        if indent(l) == at {
            if seen == index {
                return Some(i + 1);
            }
            seen += 1;
        }
    }
    Some(key)
}

pub(super) fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let quoted = super::env::quote_flow_placeholders(text);
    let de = serde_norway::Deserializer::from_str(&quoted);
    serde_path_to_error::deserialize(de).map_err(|e| from_serde(file, text, e))
}

fn build(
    file: &raw::RoutesFile,
    base_dir: &Path,
    path: &Path,
    providers: Vec<Arc<ProviderSpec>>,
    p: &mut Problems,
) -> Config {
    let listen_http = file.listen.http.as_ref().and_then(|a| addr(p, "listen.http", a));
    let listen_https = file.listen.https.as_ref().and_then(|h| {
        let addr = addr(p, "listen.https.addr", &h.addr)?;
        Some(TlsListen { addr, cert: base_dir.join(&*h.cert), key: base_dir.join(&*h.key) })
    });
    if file.listen.http.is_none() && file.listen.https.is_none() {
        p.at(None, "listen", "at least one of `http` or `https` is required");
    }
    let (admin, admin_guard) = admin(file.admin.as_ref(), base_dir, p);
    let session = session(file.session.as_ref(), base_dir, p);
    let broker = file.broker.as_ref().and_then(|b| broker::broker(b, base_dir, &providers, p));
    let server = ServerSpec {
        trusted_proxies: edge::trusted_proxies(file.server.as_ref().and_then(|s| s.trusted_proxies.as_deref()), p),
        public_url: edge::public_url(file.server.as_ref().and_then(|s| s.public_url.as_deref()), p),
        threads: file.server.as_ref().and_then(|s| s.threads).unwrap_or(1).max(1),
        // One worker thread has no one to steal from: its own single-threaded runtime
        // saves the shared-queue bookkeeping (benches/RESULTS.md, "Round two").
        work_stealing: file.server.as_ref().and_then(|s| s.work_stealing).unwrap_or_else(|| {
            file.server.as_ref().and_then(|s| s.threads).unwrap_or(1) > 1
        }),
        verify_cache_entries: file
            .server
            .as_ref()
            .and_then(|s| s.verify_cache_entries)
            .unwrap_or(100_000),
        upstream_keepalive: file.server.as_ref().and_then(|s| s.upstream_keepalive).unwrap_or(128),
        upgrade_sock: file
            .server
            .as_ref()
            .and_then(|s| s.upgrade_sock.as_deref())
            .map(|p| base_dir.join(p))
            .unwrap_or_else(|| PathBuf::from("/tmp/pingora_upgrade.sock")),
    };
    let enabled: HashSet<&str> = providers.iter().map(|p| p.id.as_str()).collect();
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for r in &file.routes {
        if let Some(spec) = route(r, &enabled, p) {
            b2c_policy_offered(&spec, &providers, p);
            if !names.insert(spec.name.clone()) {
                p.at(Some(&format!("name: {}", spec.name)), "routes.name", format!("duplicate route name `{}`", spec.name));
            }
            routes.push(spec);
        }
    }
    let mut session = session;
    let raw_session = file.session.as_ref();
    session.cookie_domain = sso::cookie_domain(raw_session.and_then(|s| s.cookie_domain.as_deref()), &routes, p);
    session.auth_host = sso::auth_host(
        raw_session.and_then(|s| s.auth_host.as_deref()),
        raw_session.and_then(|s| s.cookie_domain.as_deref()),
        p,
    );
    Config {
        warnings: Vec::new(),
        path: path.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        listen_http,
        listen_https,
        admin,
        admin_guard,
        providers,
        session,
        broker,
        server,
        routes,
        audit: audit(file.audit.as_ref(), base_dir, p),
        reload: ReloadSpec {
            watch: file.reload.as_ref().and_then(|r| r.watch).unwrap_or(true),
            debounce: duration(p, None, "reload.debounce", file.reload.as_ref().and_then(|r| r.debounce.as_ref()), Duration::from_millis(400)),
        },
        tracing: tracing(file.tracing.as_ref(), p),
    }
}

/// `audit:` (docs/operations.md, "Audit log").
fn audit(a: Option<&raw::Audit>, base_dir: &Path, p: &mut Problems) -> AuditSpec {
    let output = match a.and_then(|a| a.output.as_deref()) {
        None | Some("stdout") => AuditOutput::Stdout,
        Some("off") => AuditOutput::Off,
        Some("") => {
            p.at(None, "audit.output", "must be `stdout`, `off` or a file path");
            AuditOutput::Off
        }
        Some(path) => AuditOutput::File(base_dir.join(path)),
    };
    AuditSpec { output, include_email: a.and_then(|a| a.include_email).unwrap_or(false) }
}

/// `tracing:`; an OTLP endpoint needs a binary built with `--features otlp` (else a clear error).
fn tracing(t: Option<&raw::Tracing>, p: &mut Problems) -> TracingSpec {
    let otlp_endpoint = t.and_then(|t| t.otlp_endpoint.as_deref()).map(str::to_string);
    match &otlp_endpoint {
        Some(_) if !cfg!(feature = "otlp") => {
            p.at(None, "tracing.otlp_endpoint", "this idfabric was built without OTLP export (the `otlp` feature); remove the key");
        }
        Some(e) if !url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => {
            p.at(None, "tracing.otlp_endpoint", format!("`{e}` is not an http(s) URL"));
        }
        _ => {}
    }
    TracingSpec { otlp_endpoint }
}

fn addr(p: &mut Problems, key: &str, value: &str) -> Option<SocketAddr> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Some(a);
    }
    match value.to_socket_addrs().map(|mut i| i.next()) {
        Ok(Some(a)) => Some(a),
        _ => {
            p.at(None, key, format!("`{value}` is not a host:port address"));
            None
        }
    }
}

/// `admin:`: the listen address and the guard of the operator endpoints. The string
/// form has no token, so its guarded paths answer 403 until one is configured.
fn admin(a: Option<&raw::Admin>, base_dir: &Path, p: &mut Problems) -> (Option<SocketAddr>, AdminGuard) {
    let m = match a {
        None => return (None, AdminGuard::default()),
        Some(raw::Admin::Addr(s)) => return (addr(p, "admin", s), AdminGuard::default()),
        Some(raw::Admin::Full(m)) => m,
    };
    let listen = addr(p, "admin.listen", &m.listen);
    let token = match (&m.token_file, &m.token) {
        (Some(_), Some(_)) => {
            p.at(None, "admin.token", "set one of `token_file` or `token`, not both");
            None
        }
        (Some(f), None) => match std::fs::read_to_string(base_dir.join(&**f)) {
            Ok(t) => admin_token(p, "admin.token_file", t.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                p.at(None, "admin.token_file", format!("cannot read `{}`: {e} (`idfabric keys generate` writes certs/admin.token)", &**f));
                None
            }
        },
        (None, Some(t)) => admin_token(p, "admin.token", t.to_string()),
        (None, None) => None,
    };
    let mut hosts = Vec::new();
    for h in &m.hosts {
        let h = h.to_ascii_lowercase();
        let name_ok = !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if name_ok || h.parse::<std::net::IpAddr>().is_ok() {
            hosts.push(h);
        } else {
            p.at(None, "admin.hosts", format!("`{h}` is not a host name or IP address (no scheme, port or path)"));
        }
    }
    let ops_listen = m.ops_listen.as_ref().and_then(|o| addr(p, "admin.ops_listen", o));
    if ops_listen.is_some() && ops_listen == listen {
        p.at(None, "admin.ops_listen", "must differ from `admin.listen`");
    }
    let token_file = m.token_file.as_ref().map(|f| base_dir.join(&**f));
    (listen, AdminGuard { token, token_file, hosts, ops_listen })
}

/// A provider's `scim:` section: exactly one of `token_file` / `token` (at least
/// [`AdminToken::MIN_LEN`] characters, no spaces) and `subject` (`externalId` or
/// `userName`).
pub(super) fn scim(s: Option<&raw::Scim>, base_dir: &Path, p: &mut Problems) -> Option<ScimSpec> {
    let s = s?;
    let secret = match (&s.token_file, &s.token) {
        (Some(_), Some(_)) => {
            p.at(None, "scim.token", "set one of `token_file` or `token`, not both");
            return None;
        }
        (None, None) => {
            p.at(None, "scim", "set `token_file` or `token`: the bearer token the provider's provisioning client sends");
            return None;
        }
        (Some(f), None) => match std::fs::read_to_string(base_dir.join(&**f)) {
            Ok(t) => t.trim_end_matches(['\n', '\r']).to_string(),
            Err(e) => {
                p.at(None, "scim.token_file", format!("cannot read `{}`: {e}", &**f));
                return None;
            }
        },
        (None, Some(t)) => t.to_string(),
    };
    if secret.chars().count() < AdminToken::MIN_LEN || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.at(None, "scim.token", format!("the SCIM token must be at least {} characters without spaces", AdminToken::MIN_LEN));
        return None;
    }
    let subject = match s.subject.as_deref() {
        None | Some("externalId") => ScimSubject::ExternalId,
        Some("userName") => ScimSubject::UserName,
        Some(other) => {
            p.at(None, "scim.subject", format!("`{other}` is not one of `externalId`, `userName`"));
            return None;
        }
    };
    Some(ScimSpec::new(&secret, subject))
}

/// A provider's `ssf.poll:` section: `url` (https, or http on loopback), exactly one
/// of `token_file` / `token` (no spaces), `interval` (default 5 s, at least 1 s),
/// `max_events` (1-1000, default 100).
pub(super) fn ssf_poll(f: &super::kind::SsfPollFile, base_dir: &Path, p: &mut Problems) -> Option<super::SsfPoll> {
    let anchor = Some("poll:");
    let url = match f.url.as_deref() {
        None => {
            p.at(anchor, "ssf.poll", "`ssf.poll.url` is required: the transmitter's poll endpoint");
            return None;
        }
        Some(u) => match url::Url::parse(u) {
            Ok(url) => {
                check_scheme(p, anchor, "ssf.poll.url", &url);
                url.to_string()
            }
            Err(e) => {
                p.at(anchor, "ssf.poll.url", format!("not a URL: {e}"));
                return None;
            }
        },
    };
    let token = match (&f.token_file, &f.token) {
        (Some(_), Some(_)) => {
            p.at(anchor, "ssf.poll.token", "set one of `token_file` or `token`, not both");
            return None;
        }
        (None, None) => {
            p.at(anchor, "ssf.poll", "set `token_file` or `token`: the bearer token the transmitter gave for its poll endpoint");
            return None;
        }
        (Some(file), None) => match std::fs::read_to_string(base_dir.join(&**file)) {
            Ok(t) => t.trim_end_matches(['\n', '\r']).to_string(),
            Err(e) => {
                p.at(anchor, "ssf.poll.token_file", format!("cannot read `{}`: {e}", &**file));
                return None;
            }
        },
        (None, Some(t)) => t.to_string(),
    };
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.at(anchor, "ssf.poll.token", "the poll token must be non-empty, without spaces");
        return None;
    }
    let interval = duration(p, anchor, "ssf.poll.interval", f.interval.as_ref(), std::time::Duration::from_secs(5));
    if interval < std::time::Duration::from_secs(1) {
        p.at(anchor, "ssf.poll.interval", "must be at least 1s");
    }
    let max_events = f.max_events.unwrap_or(100);
    if !(1..=1000).contains(&max_events) {
        p.at(anchor, "ssf.poll.max_events", "must be between 1 and 1000");
    }
    Some(super::SsfPoll { url, token, interval, max_events })
}

fn admin_token(p: &mut Problems, key: &str, secret: String) -> Option<AdminToken> {
    if secret.chars().count() < AdminToken::MIN_LEN || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.at(None, key, format!("the admin token must be at least {} characters without spaces", AdminToken::MIN_LEN));
        return None;
    }
    Some(AdminToken::new(secret))
}

pub(super) fn duration(p: &mut Problems, anchor: Option<&str>, key: &str, value: Option<&EnvString>, default: Duration) -> Duration {
    match value {
        None => default,
        Some(v) => match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                p.at(anchor, key, format!("`{}` is not a duration (examples: 30s, 5m, 8h)", &**v));
                default
            }
        },
    }
}

fn session(s: Option<&raw::Session>, base_dir: &Path, p: &mut Problems) -> SessionSpec {
    let store = match s.and_then(|s| s.store.as_deref()) {
        None | Some("memory") => {
            if s.is_some_and(|s| s.tls.is_some()) {
                p.at(None, "session.tls", "applies to a rediss:// store only".to_string());
            }
            SessionStore::Memory
        }
        Some(v) => redis_store(v, s.and_then(|s| s.tls.as_ref()), base_dir, p),
    };
    SessionSpec {
        store,
        cookie: s.and_then(|s| s.cookie.as_deref()).unwrap_or("idfabric_session").to_string(),
        ttl: duration(p, None, "session.ttl", s.and_then(|s| s.ttl.as_ref()), Duration::from_secs(8 * 3600)),
        idle: duration(p, None, "session.idle", s.and_then(|s| s.idle.as_ref()), Duration::from_secs(3600)),
        key_file: s.and_then(|s| s.key_file.as_deref()).map(|k| base_dir.join(k)),
        login_limits: login_limits(s.and_then(|s| s.login_limits.as_ref()), p),
        // Checked against the routes once they are read (`build`).
        cookie_domain: None,
        auth_host: None,
    }
}

/// `session.store` as a Redis URL with `session.tls`: the form, and the TLS files read
/// and parsed now, so what `check` accepts also starts.
fn redis_store(v: &str, tls: Option<&raw::SessionTls>, base_dir: &Path, p: &mut Problems) -> SessionStore {
    use crate::config::{RedisTarget, TlsFiles, SCHEMES};
    let file = |f: Option<&EnvString>| f.map(|f| base_dir.join(&**f));
    let files = tls.map_or_else(TlsFiles::default, |t| TlsFiles {
        ca_file: file(t.ca_file.as_ref()),
        cert_file: file(t.cert_file.as_ref()),
        key_file: file(t.key_file.as_ref()),
    });
    // A mistyped URL may still carry a password.
    let shown = super::redacted(v);
    if !SCHEMES.iter().any(|s| v.starts_with(s)) {
        p.at(None, "session.store", format!("`{shown}` is neither `memory` nor a Redis URL ({})", SCHEMES.join(", ")));
        return SessionStore::Memory;
    }
    match RedisTarget::parse(v, files).and_then(|t| t.certificates().map(|_| t)) {
        Ok(t) => SessionStore::Redis(t),
        Err(e) => {
            p.at(None, "session.store", format!("`{shown}`: {e}"));
            SessionStore::Memory
        }
    }
}

/// `session.login_limits`: every value a positive count, `per_client` at most `total`.
fn login_limits(l: Option<&raw::LoginLimits>, p: &mut Problems) -> crate::config::LoginLimits {
    let d = crate::config::LoginLimits::default();
    let Some(l) = l else { return d };
    let mut count = |key: &str, v: Option<u32>, default: u32, max: u32| match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n,
        Some(n) => {
            p.at(None, key, format!("`{n}` is not between 1 and {max}"));
            default
        }
    };
    let limits = crate::config::LoginLimits {
        per_client: count("session.login_limits.per_client", l.per_client, d.per_client, 100_000),
        total: count("session.login_limits.total", l.total, d.total, 10_000_000),
        rate_per_minute: count("session.login_limits.rate_per_minute", l.rate_per_minute, d.rate_per_minute, 100_000),
    };
    if limits.per_client > limits.total {
        p.at(None, "session.login_limits.per_client", format!("`{}` is more than total ({})", limits.per_client, limits.total));
    }
    limits
}


pub(super) fn strings(v: &[EnvString]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub(super) fn opt_strings(v: &Option<Vec<EnvString>>) -> Vec<String> {
    v.as_deref().map(strings).unwrap_or_default()
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub(super) fn check_scheme(p: &mut Problems, anchor: Option<&str>, key: &str, url: &url::Url) {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(url) => {}
        "http" => p.at(anchor, key, "must be https (plain http is allowed only on loopback addresses)"),
        other => p.at(anchor, key, format!("unsupported scheme `{other}`")),
    }
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

// ---------------------------------------------------------------------------------
// Routes

/// A route's `b2c_policy` must be a policy of an Azure AD B2C provider (or a dev
/// provider of that shape) the route accepts: its sign-ins start there.
fn b2c_policy_offered(spec: &RouteSpec, providers: &[Arc<ProviderSpec>], p: &mut Problems) {
    let Some(policy) = &spec.b2c_policy else { return };
    let runs_it = providers
        .iter()
        .filter(|ps| spec.providers.as_ref().is_none_or(|ids| ids.contains(&ps.id)))
        .any(|ps| ps.route_policies.iter().any(|p| p.eq_ignore_ascii_case(policy)));
    if !runs_it {
        let anchor = format!("name: {}", spec.name);
        p.at(Some(&anchor), "routes.b2c_policy", format!("`{policy}` is not a policy of an Azure AD B2C provider this route accepts"));
    }
}

fn route(r: &raw::Route, enabled: &HashSet<&str>, p: &mut Problems) -> Option<RouteSpec> {
    let name = r.name.to_string();
    let anchor = format!("name: {name}");
    let a = Some(anchor.as_str());
    if !valid_id(&name) {
        p.at(a, "routes.name", format!("`{name}` must be 1-64 characters of letters, digits, `-`, `_`, `.`"));
    }
    let host = match r.matcher.host.as_deref().map(str::to_ascii_lowercase) {
        None => HostMatch::Any,
        Some(h) if h == "*" => HostMatch::Any,
        Some(h) if h.starts_with("*.") => HostMatch::Wildcard(h[1..].to_string()),
        Some(h) if h.contains('*') || h.contains('/') || h.is_empty() => {
            p.at(a, "routes.match.host", format!("`{h}` is not a host name (use `*.example.com` for a wildcard)"));
            HostMatch::Any
        }
        Some(h) => HostMatch::Exact(h),
    };
    let path_prefix = r.matcher.path_prefix.as_deref().unwrap_or("/").to_string();
    if !path_prefix.starts_with('/') {
        p.at(a, "routes.match.path_prefix", "must start with `/`");
    } else if let Some(why) = non_canonical_prefix(&path_prefix) {
        p.at(a, "routes.match.path_prefix", format!("`{path_prefix}` {why}"));
    } else if !r.case_sensitive.unwrap_or(false) && has_encoded_non_ascii(&path_prefix) {
        // Matching folds ASCII case only: `/%C3%89cole` would miss a `/%C3%A9cole` route
        // that a case-insensitive upstream serves for it.
        p.at(
            a,
            "routes.match.path_prefix",
            format!("`{path_prefix}` has non-ASCII characters, whose case is not folded: set `case_sensitive: true`"),
        );
    }
    let auth = match r.auth.as_deref() {
        None | Some("either") => AuthMode::Either,
        Some("bearer") => AuthMode::Bearer,
        Some("session") => AuthMode::Session,
        Some("none") => AuthMode::None,
        Some(v) => {
            p.at(a, "routes.auth", format!("`{v}` is not one of bearer, session, either, none"));
            AuthMode::Either
        }
    };
    let require = requirements(r.require.as_ref(), a, "routes.require", p);
    let policy = r.policy.as_ref().map(|x| Arc::new(policy::policy(x, a, r.case_sensitive.unwrap_or(false), p)));
    let adaptive = require.adaptive_mfa
        || r.by_population.as_ref().is_some_and(|bp| {
            [&bp.workforce, &bp.customer].iter().any(|t| t.as_ref().and_then(|t| t.require.as_ref()).is_some_and(|q| q.mfa == Some(raw::Mfa::Adaptive)))
        })
        || policy.as_ref().is_some_and(|p| p.uses_risk());
    let risk = risk::spec(r.sensitive.as_ref(), adaptive, r.case_sensitive.unwrap_or(false), a, p).map(Arc::new);
    let default_upstreams = r.upstream.as_ref().map(|u| upstreams::list(u, a, "routes.upstream", p)).unwrap_or_default();
    let by_population = r.by_population.as_ref().map(|bp| {
        let mut out: [Option<PopulationTarget>; 2] = [None, None];
        for (pop, target) in [(Population::Workforce, &bp.workforce), (Population::Customer, &bp.customer)] {
            if let Some(t) = target {
                let key = format!("routes.by_population.{pop}");
                out[pop.index()] = Some(PopulationTarget {
                    upstreams: upstreams::list(&t.upstream, a, &format!("{key}.upstream"), p),
                    require: requirements(t.require.as_ref(), a, &format!("{key}.require"), p),
                });
            }
        }
        if out.iter().all(Option::is_none) {
            p.at(a, "routes.by_population", "names neither `workforce` nor `customer`");
        }
        out
    });
    if r.upstream.is_none() && r.by_population.is_none() {
        p.at(a, "routes", format!("route `{name}` needs `upstream` or `by_population`"));
    }
    if auth == AuthMode::None && (r.require.is_some() || r.by_population.is_some() || r.policy.is_some()) {
        p.at(a, "routes.auth", "`auth: none` cannot be combined with `require`, `policy` or `by_population`");
    }
    let providers = r.providers.as_ref().map(|ids| {
        for id in ids {
            if !enabled.contains(&**id) {
                p.at(a, "routes.providers", format!("provider `{}` is not enabled in `providers`", &**id));
            }
        }
        strings(ids)
    });
    let authorization = match r.authorization.as_deref() {
        None | Some("keep") => AuthorizationHeader::Keep,
        Some("strip") => AuthorizationHeader::Strip,
        Some("identity_token") => AuthorizationHeader::IdentityToken,
        Some(v) => {
            p.at(a, "routes.authorization", format!("`{v}` is not one of keep, strip, identity_token"));
            AuthorizationHeader::Keep
        }
    };
    let cors_preflight = match r.cors_preflight.as_deref() {
        None | Some("authenticate") => CorsPreflight::Authenticate,
        Some("allow") => CorsPreflight::Allow,
        Some(v) => {
            p.at(a, "routes.cors_preflight", format!("`{v}` is not one of allow, authenticate"));
            CorsPreflight::Authenticate
        }
    };
    if cors_preflight == CorsPreflight::Allow && r.upstream.is_none() {
        // A preflight carries no identity, so no `by_population` upstream can be picked.
        p.at(a, "routes.cors_preflight", "`allow` needs a default `upstream` (a preflight has no population to pick a `by_population` upstream)");
    }
    let entries: Vec<&Upstream> = default_upstreams
        .iter()
        .chain(by_population.iter().flatten().flatten().flat_map(|t| t.upstreams.iter()))
        .collect();
    let upstream = upstreams::options(r, &entries, a, p);
    Some(RouteSpec {
        name,
        host,
        path_prefix,
        auth,
        upstreams: default_upstreams,
        by_population,
        require,
        policy,
        risk,
        providers,
        authorization,
        forwarded_headers: r.forwarded_headers.unwrap_or(true),
        identity_token: r.identity_token.unwrap_or(true),
        branding: branding(r.branding.as_ref(), a, p),
        b2c_policy: r.b2c_policy.as_ref().map(|s| s.to_string()),
        case_sensitive: r.case_sensitive.unwrap_or(false),
        path_params: r.path_params.unwrap_or(false),
        cors_preflight,
        upstream,
    })
}

/// Whether a canonical path has a percent-encoded byte of a non-ASCII character.
fn has_encoded_non_ascii(path: &str) -> bool {
    path.as_bytes().windows(2).any(|w| w[0] == b'%' && matches!(w[1], b'8'..=b'9' | b'A'..=b'F'))
}

/// Why a `path_prefix` is not in the canonical form request paths are matched in
/// (`crate::canon`), or `None`. A prefix with `..`, `//`, `%2f`, `;` or `\` could never
/// match a canonical path, or would match one other than it seems to name.
fn non_canonical_prefix(prefix: &str) -> Option<String> {
    if prefix.contains(';') {
        return Some("must not contain `;` (path parameters are never part of a route prefix)".into());
    }
    match crate::canon::canonicalize(prefix) {
        Err(problem) => Some(format!("is not a canonical path: {problem}")),
        Ok(c) if c.path() != prefix => Some(format!("is not canonical; write it as `{}`", c.path())),
        Ok(_) => None,
    }
}

fn color(v: &Option<EnvString>, anchor: Option<&str>, key: &str, p: &mut Problems) -> Option<String> {
    let v = v.as_deref()?;
    let hex = v.strip_prefix('#').unwrap_or("");
    if (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(v.to_ascii_lowercase())
    } else {
        p.at(anchor, key, format!("`{v}` is not a #rgb or #rrggbb colour"));
        None
    }
}

fn branding(b: Option<&raw::Branding>, anchor: Option<&str>, p: &mut Problems) -> BrandingSpec {
    let Some(b) = b else { return BrandingSpec::default() };
    let base = p.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let logo_data_uri = b.logo.as_deref().and_then(|f| {
        let path = base.join(f);
        let mime = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("png") => "image/png",
            Some("svg") => "image/svg+xml",
            Some("jpg" | "jpeg") => "image/jpeg",
            _ => {
                p.at(anchor, "routes.branding.logo", "must be a .png, .svg or .jpg file");
                return None;
            }
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() <= 64 * 1024 => {
                use base64::Engine;
                Some(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
            }
            Ok(_) => {
                p.at(anchor, "routes.branding.logo", "logo files are limited to 64 KiB");
                None
            }
            Err(e) => {
                p.at(anchor, "routes.branding.logo", format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    });
    BrandingSpec {
        product_name: b.product_name.as_ref().map(|s| s.to_string()),
        primary_color: color(&b.primary_color, anchor, "routes.branding.primary_color", p),
        accent_color: color(&b.accent_color, anchor, "routes.branding.accent_color", p),
        logo_data_uri,
        tagline: b.tagline.as_ref().map(|s| s.to_string()),
        support_text: b.support_text.as_ref().map(|s| s.to_string()),
    }
}

fn requirements(r: Option<&raw::Require>, anchor: Option<&str>, key: &str, p: &mut Problems) -> Requirements {
    let Some(r) = r else { return Requirements::default() };
    let population = r.population.as_ref().and_then(|v| {
        let parsed = Population::parse(v);
        if parsed.is_none() {
            p.at(anchor, &format!("{key}.population"), format!("`{}` is not workforce or customer", &**v));
        }
        parsed
    });
    let adaptive_mfa = r.mfa == Some(raw::Mfa::Adaptive);
    // The workforce keeps mandatory MFA: `adaptive` where only workforce identities can
    // come is a mistake, said at load rather than quietly read as `true`.
    if adaptive_mfa && (population == Some(Population::Workforce) || key.ends_with("workforce.require")) {
        p.at_value(
            anchor,
            &format!("{key}.mfa"),
            "adaptive",
            "`adaptive` is for customers; workforce routes keep mandatory MFA: write `mfa: true`",
        );
    }
    Requirements {
        population,
        mfa: r.mfa == Some(raw::Mfa::Required(true)),
        adaptive_mfa,
        groups_any: opt_strings(&r.groups_any),
        groups_all: opt_strings(&r.groups_all),
        roles_any: opt_strings(&r.roles_any),
        scopes_all: opt_strings(&r.scopes_all),
        tenants: opt_strings(&r.tenants).into_iter().map(|t| t.to_ascii_lowercase()).collect(),
        email_verified: r.email_verified.unwrap_or(false),
        allow_anonymous: r.allow_anonymous.unwrap_or(false),
    }
}


#[cfg(test)]
#[path = "validate/tests.rs"]
mod tests;
