//! Raw files → validated `Config`. Every problem is collected; none stops the others.

use super::error::{from_serde, ConfigError, ConfigErrors, Problems};
use super::raw::{self, ProviderHead};
use super::*;
use crate::identity::Population;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Loads `routes.yaml` at `path` and the enabled provider files beside it, validating
/// everything. The error lists every problem found.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
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

    let providers = load_providers(&base_dir, path, &text, &file.providers, &mut errors);
    let mut p = Problems { file: path, text: &text, out: &mut errors };
    let config = build(&file, &base_dir, path, providers, &mut p);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
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
    let broker = file.broker.as_ref().and_then(|b| broker(b, base_dir, &providers, p));
    let server = ServerSpec {
        threads: file.server.as_ref().and_then(|s| s.threads).unwrap_or(1).max(1),
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
            if !names.insert(spec.name.clone()) {
                p.at(Some(&format!("name: {}", spec.name)), "routes.name", format!("duplicate route name `{}`", spec.name));
            }
            routes.push(spec);
        }
    }
    Config {
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

fn admin_token(p: &mut Problems, key: &str, secret: String) -> Option<AdminToken> {
    if secret.chars().count() < AdminToken::MIN_LEN || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.at(None, key, format!("the admin token must be at least {} characters without spaces", AdminToken::MIN_LEN));
        return None;
    }
    Some(AdminToken::new(secret))
}

fn duration(p: &mut Problems, anchor: Option<&str>, key: &str, value: Option<&EnvString>, default: Duration) -> Duration {
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
    }
}

/// `session.store` as a Redis URL with `session.tls`: the form, and the TLS files read
/// and parsed now, so what `check` accepts also starts.
fn redis_store(v: &str, tls: Option<&raw::SessionTls>, base_dir: &Path, p: &mut Problems) -> SessionStore {
    use crate::session::redis_conn::{RedisTarget, TlsFiles, SCHEMES};
    let file = |f: Option<&EnvString>| f.map(|f| base_dir.join(&**f));
    let files = tls.map_or_else(TlsFiles::default, |t| TlsFiles {
        ca_file: file(t.ca_file.as_ref()),
        cert_file: file(t.cert_file.as_ref()),
        key_file: file(t.key_file.as_ref()),
    });
    // A mistyped URL may still carry a password.
    let shown = crate::session::redis_store::redacted(v);
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

fn broker(b: &raw::Broker, base_dir: &Path, providers: &[Arc<ProviderSpec>], p: &mut Problems) -> Option<BrokerSpec> {
    let url = match url::Url::parse(&b.issuer) {
        Ok(u) => u,
        Err(e) => {
            p.at(None, "broker.issuer", format!("not a URL: {e}"));
            return None;
        }
    };
    check_scheme(p, None, "broker.issuer", &url);
    if url.path().trim_end_matches('/').is_empty() {
        p.at(None, "broker.issuer", "needs a path (e.g. https://id.example.com/broker): the broker's endpoints are served under it");
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.at(None, "broker.issuer", "must not have a query or fragment (OpenID Connect Discovery §3)");
    }
    let ttl = duration(p, None, "broker.identity_token_ttl", b.identity_token_ttl.as_ref(), Duration::from_secs(300));
    if ttl > Duration::from_secs(300) {
        p.at(None, "broker.identity_token_ttl", "must be at most 5m");
    }
    let day = Duration::from_secs(24 * 3600);
    let mut token_ttl = |key: &str, v: Option<&EnvString>, default: Duration, max: Duration| {
        let d = duration(p, None, key, v, default);
        if d > max {
            p.at(None, key, format!("must be at most {}", humantime::format_duration(max)));
        }
        d.min(max)
    };
    let access_token_ttl = token_ttl("broker.access_token_ttl", b.access_token_ttl.as_ref(), Duration::from_secs(600), day);
    let id_token_ttl = token_ttl("broker.id_token_ttl", b.id_token_ttl.as_ref(), Duration::from_secs(600), day);
    let refresh_token_ttl =
        token_ttl("broker.refresh_token_ttl", b.refresh_token_ttl.as_ref(), Duration::from_secs(30 * 24 * 3600), day * 365);
    let mut seen = HashSet::new();
    let clients = b.clients.iter().map(|c| broker_client(c, providers, &mut seen, p)).collect();
    Some(BrokerSpec {
        issuer: b.issuer.trim_end_matches('/').to_string(),
        path: url.path().trim_end_matches('/').to_string(),
        signing_key: base_dir.join(&*b.signing_key),
        identity_token_ttl: ttl.min(Duration::from_secs(300)),
        access_token_ttl,
        id_token_ttl,
        refresh_token_ttl,
        clients,
    })
}

/// Grant types the broker implements.
const BROKER_GRANTS: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

fn broker_client(
    c: &raw::BrokerClient,
    providers: &[Arc<ProviderSpec>],
    seen: &mut HashSet<String>,
    p: &mut Problems,
) -> BrokerClientSpec {
    let id = c.client_id.to_string();
    let anchor = format!("client_id: {id}");
    let a = Some(anchor.as_str());
    if !valid_id(&id) {
        p.at(a, "broker.clients.client_id", format!("`{id}` must be 1-64 characters of letters, digits, `-`, `_`, `.`"));
    }
    if !seen.insert(id.clone()) {
        p.at(a, "broker.clients.client_id", format!("duplicate client_id `{id}`"));
    }
    let public = c.public.unwrap_or(false);
    let secret = c.client_secret.as_ref().map(|s| s.to_string());
    match (&secret, public) {
        (None, false) => p.at(a, "broker.clients", format!("confidential client `{id}` needs a client_secret (or `public: true`)")),
        (Some(_), true) => p.at(a, "broker.clients.client_secret", format!("public client `{id}` must not have a client_secret")),
        (Some(s), false) if s.starts_with("$argon2") && !crate::broker::clients::valid_phc(s) => {
            p.at(a, "broker.clients.client_secret", "looks like an argon2 hash but is not a valid PHC string (make one with `idfabric keys hash-secret`)")
        }
        (Some(s), false) if s.len() < 8 => p.at(a, "broker.clients.client_secret", "must be at least 8 characters"),
        _ => {}
    }
    let mut uris = |key: &str, list: &[EnvString]| -> Vec<String> {
        let out = strings(list);
        for u in &out {
            match url::Url::parse(u) {
                Err(e) => p.at(a, key, format!("`{u}` is not an absolute URL: {e}")),
                Ok(parsed) if parsed.fragment().is_some() || u.contains('#') => p.at(a, key, format!("`{u}` must not have a fragment")),
                Ok(parsed) if !parsed.has_host() => p.at(a, key, format!("`{u}` has no host")),
                Ok(_) => {}
            }
        }
        out
    };
    let redirect_uris = uris("broker.clients.redirect_uris", &c.redirect_uris);
    let post_logout_redirect_uris = uris("broker.clients.post_logout_redirect_uris", &c.post_logout_redirect_uris);
    let scopes = c.scopes.as_deref().map(strings).unwrap_or_else(|| ["openid", "profile", "email", "offline_access"].map(String::from).to_vec());
    let grant_types = c.grant_types.as_deref().map(strings).unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    for g in &grant_types {
        if !BROKER_GRANTS.contains(&g.as_str()) {
            p.at(a, "broker.clients.grant_types", format!("`{g}` is not one of authorization_code, refresh_token, client_credentials"));
        }
    }
    if public && grant_types.iter().any(|g| g == "client_credentials") {
        p.at(a, "broker.clients.grant_types", "a public client cannot use client_credentials");
    }
    if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        p.at(a, "broker.clients.redirect_uris", format!("client `{id}` uses authorization_code and needs at least one redirect URI"));
    }
    let mut populations = Vec::new();
    for v in c.populations.as_deref().unwrap_or_default() {
        match Population::parse(v) {
            Some(pop) => populations.push(pop),
            None => p.at(a, "broker.clients.populations", format!("`{}` is neither workforce nor customer", &**v)),
        }
    }
    let client_providers = c.providers.as_deref().map(strings);
    for pid in client_providers.iter().flatten() {
        if !providers.iter().any(|s| s.id == *pid) {
            p.at(a, "broker.clients.providers", format!("`{pid}` is not an enabled provider"));
        }
    }
    let introspect = introspect(c, &id, public, a, p);
    BrokerClientSpec {
        client_id: id,
        client_secret: secret,
        public,
        redirect_uris,
        post_logout_redirect_uris,
        scopes,
        grant_types,
        populations,
        providers: client_providers,
        require_pkce: c.require_pkce.unwrap_or(true) || public,
        introspect,
    }
}

/// `introspect: true` lets a confidential client see other clients' access tokens at
/// `/introspect`; a public client cannot introspect at all, so asking for it is a mistake.
fn introspect(c: &raw::BrokerClient, id: &str, public: bool, a: Option<&str>, p: &mut Problems) -> bool {
    let on = c.introspect.unwrap_or(false);
    if on && public {
        p.at(a, "broker.clients.introspect", format!("public client `{id}` cannot introspect (it has no secret)"));
    }
    on
}

fn strings(v: &[EnvString]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn opt_strings(v: &Option<Vec<EnvString>>) -> Vec<String> {
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

fn check_scheme(p: &mut Problems, anchor: Option<&str>, key: &str, url: &url::Url) {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(url) => {}
        "http" => p.at(anchor, key, "must be https (plain http is allowed only on loopback addresses)"),
        other => p.at(anchor, key, format!("unsupported scheme `{other}`")),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

// ---------------------------------------------------------------------------------
// Routes

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
    let default_upstreams = r.upstream.as_ref().map(|u| upstreams(u, a, "routes.upstream", p)).unwrap_or_default();
    let by_population = r.by_population.as_ref().map(|bp| {
        let mut out: [Option<PopulationTarget>; 2] = [None, None];
        for (pop, target) in [(Population::Workforce, &bp.workforce), (Population::Customer, &bp.customer)] {
            if let Some(t) = target {
                let key = format!("routes.by_population.{pop}");
                out[pop.index()] = Some(PopulationTarget {
                    upstreams: upstreams(&t.upstream, a, &format!("{key}.upstream"), p),
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
    if auth == AuthMode::None && (r.require.is_some() || r.by_population.is_some()) {
        p.at(a, "routes.auth", "`auth: none` cannot be combined with `require` or `by_population`");
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
    Some(RouteSpec {
        name,
        host,
        path_prefix,
        auth,
        upstreams: default_upstreams,
        by_population,
        require,
        providers,
        authorization,
        identity_token: r.identity_token.unwrap_or(true),
        branding: branding(r.branding.as_ref(), a, p),
        case_sensitive: r.case_sensitive.unwrap_or(false),
        path_params: r.path_params.unwrap_or(false),
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

fn upstreams(list: &[EnvString], anchor: Option<&str>, key: &str, p: &mut Problems) -> Vec<Upstream> {
    if list.is_empty() {
        p.at(anchor, key, "must list at least one address");
    }
    list.iter().filter_map(|u| upstream(u, anchor, key, p)).collect()
}

fn upstream(value: &str, anchor: Option<&str>, key: &str, p: &mut Problems) -> Option<Upstream> {
    let (tls, rest) = if let Some(r) = value.strip_prefix("https://") {
        (true, r)
    } else {
        (false, value.strip_prefix("http://").unwrap_or(value))
    };
    let rest = rest.trim_end_matches('/');
    let with_port = if rest.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        rest.to_string()
    } else {
        format!("{rest}:{}", if tls { 443 } else { 80 })
    };
    let host = with_port.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or("").to_string();
    let addr = with_port.parse::<SocketAddr>().ok().or_else(|| with_port.to_socket_addrs().ok()?.next());
    match addr {
        Some(addr) => Some(Upstream { addr, tls, sni: host, label: value.to_string() }),
        None => {
            p.at(anchor, key, format!("`{value}` is not a reachable host:port"));
            None
        }
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
    Requirements {
        population,
        mfa: r.mfa.unwrap_or(false),
        groups_any: opt_strings(&r.groups_any),
        groups_all: opt_strings(&r.groups_all),
        roles_any: opt_strings(&r.roles_any),
        scopes_all: opt_strings(&r.scopes_all),
        tenants: opt_strings(&r.tenants).into_iter().map(|t| t.to_ascii_lowercase()).collect(),
        email_verified: r.email_verified.unwrap_or(false),
        allow_anonymous: r.allow_anonymous.unwrap_or(false),
    }
}

// ---------------------------------------------------------------------------------
// Providers

struct ProviderFile {
    path: PathBuf,
    text: String,
    head: ProviderHead,
    /// The file is not YAML at all: reported instead of "no such id" / "unknown kind".
    syntax: Option<ConfigError>,
}

fn load_providers(
    base_dir: &Path,
    routes_path: &Path,
    routes_text: &str,
    enabled: &[EnvString],
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<ProviderSpec>> {
    let dir = base_dir.join("providers");
    let mut files: Vec<ProviderFile> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(ConfigError { file: path, line: None, key: None, message: format!("cannot read: {e}") });
                    continue;
                }
            };
            let (head, syntax) = match parse::<ProviderHead>(&path, &text) {
                Ok(head) => (head, None),
                Err(e) => (ProviderHead { id: None, kind: None }, Some(e)),
            };
            files.push(ProviderFile { path, text, head, syntax });
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for id in enabled {
        if !seen.insert(id.to_string()) {
            let line = super::error::locate(routes_text, None, "providers");
            errors.push(ConfigError {
                file: routes_path.to_path_buf(),
                line,
                key: Some("providers".into()),
                message: format!("provider `{}` is listed twice", &**id),
            });
            continue;
        }
        let by_id: Vec<&ProviderFile> = files.iter().filter(|f| f.head.id.as_deref() == Some(&**id)).collect();
        let found = match by_id.len() {
            1 => Some(by_id[0]),
            0 => files.iter().find(|f| f.path.file_stem().and_then(|s| s.to_str()) == Some(&**id)),
            _ => {
                for f in &by_id[1..] {
                    errors.push(ConfigError {
                        file: f.path.clone(),
                        line: super::error::locate(&f.text, None, "id"),
                        key: Some("id".into()),
                        message: format!("provider id `{}` is also used by {}", &**id, by_id[0].path.display()),
                    });
                }
                None
            }
        };
        match found {
            Some(f) => {
                if let Some(spec) = provider(f, base_dir, errors) {
                    if spec.id != **id {
                        errors.push(ConfigError {
                            file: f.path.clone(),
                            line: super::error::locate(&f.text, None, "id"),
                            key: Some("id".into()),
                            message: format!("file is enabled as `{}` but its id is `{}`", &**id, spec.id),
                        });
                    }
                    out.push(Arc::new(spec));
                }
            }
            None if by_id.len() > 1 => {}
            // A file that is not valid YAML may well be the one meant: say what is wrong with it.
            None if files.iter().any(|f| f.syntax.is_some()) => {
                errors.extend(files.iter().filter_map(|f| f.syntax.clone()));
                errors.push(ConfigError {
                    file: routes_path.to_path_buf(),
                    line: super::error::locate(routes_text, None, "providers"),
                    key: Some("providers".into()),
                    message: format!("no readable file in {} has id `{}` (see the syntax errors above)", dir.display(), &**id),
                });
            }
            None => errors.push(ConfigError {
                file: routes_path.to_path_buf(),
                line: super::error::locate(routes_text, None, "providers"),
                key: Some("providers".into()),
                message: format!("no file in {} has id `{}`", dir.display(), &**id),
            }),
        }
    }
    out
}

fn provider(f: &ProviderFile, base_dir: &Path, errors: &mut Vec<ConfigError>) -> Option<ProviderSpec> {
    if let Some(e) = &f.syntax {
        errors.push(e.clone());
        return None;
    }
    let kind = f.head.kind.clone().unwrap_or_default();
    let parsed = match kind.as_str() {
        "entra" => parse::<raw::EntraFile>(&f.path, &f.text).map(Raw::Entra),
        "okta" => parse::<raw::OktaFile>(&f.path, &f.text).map(Raw::Okta),
        "auth0" => parse::<raw::Auth0File>(&f.path, &f.text).map(Raw::Auth0),
        "cognito" => parse::<raw::CognitoFile>(&f.path, &f.text).map(Raw::Cognito),
        "oidc" => parse::<raw::OidcFile>(&f.path, &f.text).map(Raw::Oidc),
        "dev" => parse::<raw::DevFile>(&f.path, &f.text).map(Raw::Dev),
        "azure_b2c" => parse::<raw::AzureB2cFile>(&f.path, &f.text).map(Raw::AzureB2c),
        "firebase" => parse::<raw::FirebaseFile>(&f.path, &f.text).map(Raw::Firebase),
        other => Err(ConfigError {
            file: f.path.clone(),
            line: super::error::locate(&f.text, None, "kind"),
            key: Some("kind".into()),
            message: format!(
                "unknown kind `{other}` (expected entra, okta, auth0, cognito, azure_b2c, firebase, oidc or dev)"
            ),
        }),
    };
    let raw = match parsed {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let before = errors.len();
    let mut p = Problems { file: &f.path, text: &f.text, out: errors };
    let spec = raw.validate(&f.path, base_dir, &mut p);
    if errors.len() > before {
        None
    } else {
        spec
    }
}

enum Raw {
    Entra(raw::EntraFile),
    Okta(raw::OktaFile),
    Auth0(raw::Auth0File),
    Cognito(raw::CognitoFile),
    Oidc(raw::OidcFile),
    Dev(raw::DevFile),
    AzureB2c(raw::AzureB2cFile),
    Firebase(raw::FirebaseFile),
}

/// The keys every kind shares, borrowed from whichever raw struct was parsed.
struct Common<'a> {
    id: &'a EnvString,
    population: &'a Option<EnvString>,
    issuer: &'a Option<EnvString>,
    discovery_url: &'a Option<EnvString>,
    jwks_url: &'a Option<EnvString>,
    client_id: &'a Option<EnvString>,
    client_secret: &'a Option<EnvString>,
    audiences: &'a Option<Vec<EnvString>>,
    domains: &'a Option<Vec<EnvString>>,
    scopes: &'a Option<Vec<EnvString>>,
    claims: &'a Option<BTreeMap<String, EnvString>>,
    display_name: &'a Option<EnvString>,
    jwks_refresh: &'a Option<EnvString>,
    mfa_acr: &'a Option<Vec<EnvString>>,
    authorize_params: &'a Option<BTreeMap<String, EnvString>>,
}

macro_rules! common {
    ($f:expr) => {
        Common {
            id: &$f.id,
            population: &$f.population,
            issuer: &$f.issuer,
            discovery_url: &$f.discovery_url,
            jwks_url: &$f.jwks_url,
            client_id: &$f.client_id,
            client_secret: &$f.client_secret,
            audiences: &$f.audiences,
            domains: &$f.domains,
            scopes: &$f.scopes,
            claims: &$f.claims,
            display_name: &$f.display_name,
            jwks_refresh: &$f.jwks_refresh,
            mfa_acr: &$f.mfa_acr,
            authorize_params: &$f.authorize_params,
        }
    };
}

const KNOWN_CLAIM_FIELDS: &[&str] = &[
    "subject", "email", "email_verified", "name", "username", "groups", "roles", "permissions", "scopes", "org",
    "tenant", "idp",
];

impl Raw {
    fn common(&self) -> Common<'_> {
        match self {
            Raw::Entra(f) => common!(f),
            Raw::Okta(f) => common!(f),
            Raw::Auth0(f) => common!(f),
            Raw::Cognito(f) => common!(f),
            Raw::Oidc(f) => common!(f),
            Raw::Dev(f) => common!(f),
            Raw::AzureB2c(f) => common!(f),
            Raw::Firebase(f) => common!(f),
        }
    }

    fn default_population(&self) -> Option<Population> {
        match self {
            Raw::Entra(_) | Raw::Okta(_) => Some(Population::Workforce),
            Raw::Auth0(_) | Raw::Cognito(_) => Some(Population::Customer),
            Raw::AzureB2c(_) | Raw::Firebase(_) => Some(Population::Customer),
            Raw::Oidc(_) | Raw::Dev(_) => None,
        }
    }

    fn validate(&self, path: &Path, base_dir: &Path, p: &mut Problems) -> Option<ProviderSpec> {
        let c = self.common();
        let id = c.id.to_string();
        if !valid_id(&id) {
            p.at(None, "id", format!("`{id}` must be 1-64 characters of letters, digits, `-`, `_`, `.`"));
        }
        let population = match c.population.as_deref() {
            Some(v) => Population::parse(v).or_else(|| {
                p.at(None, "population", format!("`{v}` is not workforce or customer"));
                None
            }),
            None => self.default_population().or_else(|| {
                p.at(None, "population", "is required for this kind (workforce or customer)");
                None
            }),
        }
        .unwrap_or(Population::Customer);
        let issuer = match c.issuer.as_deref() {
            Some(i) => i.to_string(),
            None if matches!(self, Raw::Firebase(_)) => match self {
                Raw::Firebase(f) => format!("{FIREBASE_ISSUER_PREFIX}{}", &*f.project_id),
                _ => String::new(),
            },
            None => {
                p.at(None, "issuer", "is required");
                String::new()
            }
        };
        let issuer_url = url::Url::parse(&issuer.replace("{tenantid}", "tenantid"));
        match &issuer_url {
            Ok(u) => check_scheme(p, None, "issuer", u),
            Err(e) if !issuer.is_empty() => p.at(None, "issuer", format!("not a URL: {e}")),
            Err(_) => {}
        }
        for (key, v) in [("discovery_url", c.discovery_url), ("jwks_url", c.jwks_url)] {
            if let Some(v) = v {
                match url::Url::parse(&v.replace("{policy}", "policy")) {
                    Ok(u) => check_scheme(p, None, key, &u),
                    Err(e) => p.at(None, key, format!("not a URL: {e}")),
                }
            }
        }
        let mut claims = BTreeMap::new();
        for (field, source) in c.claims.iter().flatten() {
            if source.is_empty() {
                p.at(None, &format!("claims.{field}"), "source claim name is empty");
            }
            let field_name = field.strip_prefix("attributes.").unwrap_or(field);
            if !KNOWN_CLAIM_FIELDS.contains(&field.as_str()) && !field.starts_with("attributes.") {
                p.at(
                    None,
                    &format!("claims.{field}"),
                    format!(
                        "unknown field `{field}` (known: {}; or attributes.NAME)",
                        KNOWN_CLAIM_FIELDS.join(", ")
                    ),
                );
            }
            let _ = field_name;
            claims.insert(field.clone(), source.to_string());
        }
        let jwks_refresh = duration(p, None, "jwks_refresh", c.jwks_refresh.as_ref(), Duration::from_secs(600));
        let mut spec = ProviderSpec {
            id: id.clone(),
            file: path.to_path_buf(),
            population,
            issuer: issuer.clone(),
            discovery_url: c.discovery_url.as_ref().map(|s| s.to_string()),
            jwks_url: c.jwks_url.as_ref().map(|s| s.to_string()),
            client_id: c.client_id.as_ref().map(|s| s.to_string()),
            client_secret: c.client_secret.as_ref().map(|s| s.to_string()),
            audiences: opt_strings(c.audiences),
            domains: opt_strings(c.domains).into_iter().map(|d| d.to_ascii_lowercase()).collect(),
            scopes: c
                .scopes
                .as_deref()
                .map(strings)
                .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]),
            claims,
            display_name: c.display_name.as_ref().map(|s| s.to_string()).unwrap_or_else(|| id.clone()),
            jwks_refresh,
            mfa_acr: opt_strings(c.mfa_acr),
            authorize_params: c
                .authorize_params
                .iter()
                .flatten()
                .filter(|(k, _)| {
                    let reserved = ["response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge", "code_challenge_method"];
                    if reserved.contains(&k.as_str()) {
                        p.at(None, &format!("authorize_params.{k}"), "is set by idfabric itself");
                        false
                    } else {
                        true
                    }
                })
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            kind: KindSpec::Oidc(OidcSpec { tenant: String::new() }),
        };
        let host = issuer_url.as_ref().ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        spec.kind = match self {
            Raw::Entra(f) => entra(f, &mut spec, p),
            Raw::Okta(f) => {
                if spec.audiences.is_empty() {
                    p.at(None, "audiences", "is required: the accepted `aud` values (e.g. api://default)");
                }
                if spec.mfa_acr.is_empty() {
                    spec.mfa_acr =
                        vec!["urn:okta:loa:2fa:any".into(), "phr".into(), "phrh".into()];
                }
                KindSpec::Okta(OktaSpec { org_id: f.org_id.as_ref().map(|s| s.to_string()) })
            }
            Raw::Auth0(f) => {
                if !spec.issuer.ends_with('/') && !spec.issuer.is_empty() {
                    p.at(None, "issuer", "Auth0 issuers end with `/` (https://{domain}/)");
                }
                let extra = opt_strings(&f.issuers);
                for i in &extra {
                    if !i.ends_with('/') {
                        p.at(None, "issuers", format!("`{i}`: Auth0 issuers end with `/`"));
                    }
                }
                if spec.audiences.is_empty() {
                    p.at(None, "audiences", "is required: the API identifier(s) tokens must carry in `aud`");
                }
                KindSpec::Auth0(Auth0Spec {
                    tenant_domain: f.tenant_domain.as_ref().map(|s| s.to_string()).unwrap_or(host.clone()),
                    extra_issuers: extra,
                })
            }
            Raw::Cognito(f) => {
                let token_use = match f.token_use.as_deref() {
                    None | Some("access") => TokenUse::Access,
                    Some("id") => TokenUse::Id,
                    Some("any") => TokenUse::Any,
                    Some(v) => {
                        p.at(None, "token_use", format!("`{v}` is not one of access, id, any"));
                        TokenUse::Access
                    }
                };
                if spec.client_id.is_none() && spec.audiences.is_empty() {
                    p.at(None, "client_id", "is required: Cognito access tokens are bound to the app client id");
                }
                KindSpec::Cognito(CognitoSpec { token_use, groups_are_roles: f.groups_are_roles.unwrap_or(false) })
            }
            Raw::Oidc(f) => {
                if spec.audiences.is_empty() && spec.client_id.is_none() {
                    p.at(None, "audiences", "is required (or client_id): the accepted `aud` values");
                }
                KindSpec::Oidc(OidcSpec { tenant: f.tenant.as_ref().map(|s| s.to_string()).unwrap_or(host.clone()) })
            }
            Raw::Dev(f) => dev(f, &mut spec, base_dir, p),
            Raw::AzureB2c(f) => azure_b2c(f, &mut spec, p),
            Raw::Firebase(f) => firebase(f, &mut spec, p),
        };
        Some(spec)
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn entra(f: &raw::EntraFile, spec: &mut ProviderSpec, p: &mut Problems) -> KindSpec {
    let variant = match f.variant.as_deref() {
        None | Some("workforce") => EntraVariant::Workforce,
        Some("external") => EntraVariant::External,
        Some(v) => {
            p.at(None, "variant", format!("`{v}` is not workforce or external"));
            EntraVariant::Workforce
        }
    };
    if variant == EntraVariant::External && spec.population == Population::Workforce && f.population.is_none() {
        spec.population = Population::Customer;
    }
    // `common` / `organizations` authorities issue tokens for many tenants: the issuer
    // becomes the `{tenantid}` template Microsoft publishes (PROVIDERS.md §1.1).
    let mut discovery_authority = None;
    for multi in ["/common/", "/organizations/"] {
        if spec.issuer.contains(multi) {
            discovery_authority = Some(spec.issuer.clone());
            spec.issuer = spec.issuer.replacen(multi, "/{tenantid}/", 1);
        }
    }
    let templated = spec.issuer.contains("{tenantid}");
    let mut tenants: Vec<String> = opt_strings(&f.tenants).into_iter().map(|t| t.to_ascii_lowercase()).collect();
    for t in &tenants {
        if t != "*" && !is_guid(t) {
            p.at(None, "tenants", format!("`{t}` is not a tenant id (GUID) or `*`"));
        }
    }
    if tenants.is_empty() {
        if templated {
            p.at(None, "tenants", "a multi-tenant issuer needs an allow-list of tenant ids (or `*` for any tenant)");
        } else if let Some(tid) = spec.issuer.split('/').find(|s| is_guid(s)) {
            tenants.push(tid.to_ascii_lowercase());
        }
    }
    if variant == EntraVariant::External {
        if templated {
            p.at(None, "issuer", "External ID tenants are single-tenant: no `{tenantid}` / common issuers");
        }
        // External ID issues `https://{tenantId}.ciamlogin.com/{tenantId}/v2.0`: the tenant
        // GUID, not the subdomain, is the host label (PROVIDERS-CIAM.md §10.1).
        if let Ok(u) = url::Url::parse(&spec.issuer) {
            let label = u.host_str().and_then(|h| h.strip_suffix(".ciamlogin.com")).map(str::to_ascii_lowercase);
            let segment = u.path_segments().and_then(|mut s| s.next()).map(str::to_ascii_lowercase);
            if let Some(label) = label {
                if !is_guid(&label) || segment.as_deref() != Some(label.as_str()) {
                    p.at(
                        None,
                        "issuer",
                        "External ID issuers are https://{tenantId}.ciamlogin.com/{tenantId}/v2.0 (the tenant GUID is the host label, not the subdomain)",
                    );
                }
            }
        }
    }
    if spec.audiences.is_empty() {
        p.at(None, "audiences", "is required: your API's application id or App ID URI");
    }
    KindSpec::Entra(EntraSpec { tenants, variant, discovery_authority })
}

fn dev(f: &raw::DevFile, spec: &mut ProviderSpec, base_dir: &Path, p: &mut Problems) -> KindSpec {
    let shape = Shape::parse(&f.shape).unwrap_or_else(|| {
        p.at(None, "shape", format!("`{}` is not one of entra, okta, auth0, cognito, firebase, azure_b2c", &*f.shape));
        Shape::Okta
    });
    let signing_key = base_dir.join(&*f.signing_key);
    if !signing_key.exists() {
        p.at(
            None,
            "signing_key",
            format!("{} does not exist (run `idfabric keys generate`)", signing_key.display()),
        );
    }
    if f.users.is_empty() {
        p.at(None, "users", "a dev provider needs at least one user");
    }
    let mut names = HashSet::new();
    let users: Vec<DevUserSpec> = f
        .users
        .iter()
        .map(|u| {
            if !names.insert(u.name.to_string()) || !valid_id(&u.name) {
                p.at(Some(&format!("name: {}", &*u.name)), "users.name", format!("`{}` is duplicate or not a simple name", &*u.name));
            }
            DevUserSpec {
                name: u.name.to_string(),
                email: u.email.as_ref().map(|s| s.to_string()),
                display_name: u.display_name.as_ref().map(|s| s.to_string()),
                groups: strings(&u.groups),
                roles: strings(&u.roles),
                scopes: strings(&u.scopes),
                mfa: u.mfa,
                email_verified: u.email_verified,
                connection: u.connection.as_ref().map(|s| s.to_string()),
                org: u.org.as_ref().map(|s| s.to_string()),
                attributes: u.attributes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            }
        })
        .collect();
    let tenant = match (&f.tenant, shape) {
        (Some(t), _) => t.to_string(),
        (None, Shape::Entra) => guid_from(&spec.id),
        (None, Shape::Cognito) => spec.id.clone(),
        (None, Shape::AzureB2c) => b2c_issuer_tenant(&spec.issuer).unwrap_or_default(),
        (None, _) => url::Url::parse(&spec.issuer).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default(),
    };
    if shape == Shape::Entra && !is_guid(&tenant) {
        p.at(None, "tenant", "the entra shape needs a GUID tenant id");
    }
    if shape == Shape::AzureB2c {
        // B2C issuers name the tenant GUID in their path (PROVIDERS-CIAM §9): so must this one.
        if b2c_issuer_tenant(&spec.issuer).as_deref() != Some(tenant.to_ascii_lowercase().as_str()) {
            p.at(
                None,
                "issuer",
                format!("the azure_b2c shape needs an issuer naming its tenant GUID, e.g. `…/.idfabric/dev/{}/{{tenant-guid}}/v2.0/`", spec.id),
            );
        }
        // Discovery does not live under such an issuer: keys come from the dev OP's own JWKS.
        if spec.jwks_url.is_none() && spec.discovery_url.is_none() {
            let marker = format!("/.idfabric/dev/{}", spec.id);
            if let Some(i) = spec.issuer.find(&marker) {
                spec.jwks_url = Some(format!("{}/jwks", &spec.issuer[..i + marker.len()]));
            }
        }
    }
    let tenants = match &f.tenants {
        Some(t) => strings(t).into_iter().map(|t| t.to_ascii_lowercase()).collect(),
        None => vec![tenant.to_ascii_lowercase()],
    };
    if spec.audiences.is_empty() {
        spec.audiences = vec!["api://idfabric".into()];
    }
    if spec.client_id.is_none() {
        spec.client_id = Some(format!("{}-app", spec.id));
    }
    if spec.mfa_acr.is_empty() {
        spec.mfa_acr = match shape {
            Shape::Entra => vec!["c1".into()],
            Shape::Okta => vec!["urn:okta:loa:2fa:any".into()],
            Shape::Cognito => vec!["urn:cognito:loa:3".into()],
            // Auth0 and Firebase prove a second factor by `amr` / `sign_in_second_factor`.
            Shape::Auth0 | Shape::Firebase => vec![],
            // B2C's `acr` is a policy name: MFA comes from the MFA-enforcing user flow.
            Shape::AzureB2c => vec![],
        };
    }
    KindSpec::Dev(DevSpec {
        shape,
        signing_key,
        users,
        token_ttl: duration(p, None, "token_ttl", f.token_ttl.as_ref(), Duration::from_secs(3600)),
        tenant,
        tenants,
    })
}

/// The tenant GUID an Azure AD B2C issuer names: the first GUID path segment (default
/// pattern `https://{host}/{guid}/v2.0/`, `tfp` pattern `https://{host}/tfp/{guid}/{policy}/v2.0/`).
pub fn b2c_issuer_tenant(issuer: &str) -> Option<String> {
    let u = url::Url::parse(issuer).ok()?;
    let seg = u.path_segments()?.find(|s| is_guid(s))?;
    Some(seg.to_ascii_lowercase())
}

fn azure_b2c(f: &raw::AzureB2cFile, spec: &mut ProviderSpec, p: &mut Problems) -> KindSpec {
    let policies = strings(&f.policies);
    if policies.is_empty() {
        p.at(None, "policies", "is required: the user flows / custom policies whose tokens are accepted");
    }
    for pol in &policies {
        if pol.is_empty() || pol.contains('/') || pol.contains('{') {
            p.at(None, "policies", format!("`{pol}` is not a policy name (e.g. B2C_1_susi)"));
        }
    }
    let mfa_policies = opt_strings(&f.mfa_policies);
    for m in &mfa_policies {
        if !policies.iter().any(|x| x.eq_ignore_ascii_case(m)) {
            p.at(None, "mfa_policies", format!("`{m}` is not one of `policies`"));
        }
    }
    if f.mfa_acr.is_some() {
        p.at(None, "mfa_acr", "B2C's `acr` is the policy name, not an assurance level: list MFA policies in `mfa_policies`");
    }
    spec.mfa_acr.clear();
    let extra = opt_strings(&f.issuers);
    let tenant = b2c_issuer_tenant(&spec.issuer);
    if !spec.issuer.is_empty() {
        if !spec.issuer.ends_with('/') {
            p.at(None, "issuer", "B2C issuers end with `/` (https://{host}/{tenant-guid}/v2.0/)");
        }
        if tenant.is_none() {
            p.at(None, "issuer", "a B2C issuer names the tenant id (GUID) in its path: https://{host}/{tenant-guid}/v2.0/");
        }
    }
    for i in &extra {
        match url::Url::parse(i) {
            Ok(u) => check_scheme(p, None, "issuers", &u),
            Err(e) => p.at(None, "issuers", format!("`{i}` is not a URL: {e}")),
        }
        if !i.ends_with('/') {
            p.at(None, "issuers", format!("`{i}`: B2C issuers end with `/`"));
        }
        if tenant.is_some() && b2c_issuer_tenant(i) != tenant {
            p.at(None, "issuers", format!("`{i}` does not name the issuer's tenant id"));
        }
    }
    for (key, v) in [("discovery_url", &spec.discovery_url), ("jwks_url", &spec.jwks_url)] {
        if let Some(v) = v {
            if policies.len() > 1 && !v.contains("{policy}") {
                p.at(None, key, "B2C keys are per policy: put a `{policy}` placeholder in the URL");
            }
        }
    }
    if spec.discovery_url.is_none() && spec.jwks_url.is_none() {
        // https://{host}/{guid}/v2.0/ -> https://{host}/{guid}/{policy}/v2.0/.well-known/openid-configuration
        match spec.issuer.strip_suffix("/v2.0/") {
            Some(base) if !base.contains("/tfp/") => {
                spec.discovery_url = Some(format!("{base}/{{policy}}/v2.0/.well-known/openid-configuration"));
            }
            _ if spec.issuer.is_empty() => {}
            _ => p.at(None, "discovery_url", "is required for this issuer (with a `{policy}` placeholder)"),
        }
    }
    if spec.audiences.is_empty() && spec.client_id.is_none() {
        p.at(None, "audiences", "is required (or client_id): the application id(s) tokens carry in `aud`");
    }
    KindSpec::AzureB2c(AzureB2cSpec {
        policies,
        mfa_policies,
        extra_issuers: extra,
        tenant: tenant.unwrap_or_default(),
    })
}

const FIREBASE_ISSUER_PREFIX: &str = "https://securetoken.google.com/";
const FIREBASE_SESSION_ISSUER_PREFIX: &str = "https://session.firebase.google.com/";
/// Google's securetoken keys as a JWKS (the same keys for every Firebase project).
pub const FIREBASE_JWKS_URL: &str =
    "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com";

fn firebase(f: &raw::FirebaseFile, spec: &mut ProviderSpec, p: &mut Problems) -> KindSpec {
    let project = f.project_id.to_string();
    let valid = !project.is_empty()
        && project.len() <= 63
        && project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':' || c == '.');
    if !valid {
        p.at(None, "project_id", format!("`{project}` is not a Firebase / Google Cloud project id"));
    }
    if f.mfa_acr.is_some() {
        p.at(None, "mfa_acr", "Firebase tokens carry no `acr`; MFA comes from `firebase.sign_in_second_factor`");
    }
    spec.mfa_acr.clear();
    // The signing keys are shared by every Firebase project: `aud` == project id is the
    // only binding to this project, so no other audience may be configured.
    if spec.audiences.is_empty() {
        spec.audiences = vec![project.clone()];
    } else if spec.audiences != [project.clone()] {
        p.at(None, "audiences", "Firebase ID tokens carry the project id as `aud`: leave `audiences` unset");
    }
    if spec.jwks_url.is_none() && spec.discovery_url.is_none() {
        spec.jwks_url = Some(FIREBASE_JWKS_URL.to_string());
    }
    if spec.issuer.starts_with(FIREBASE_SESSION_ISSUER_PREFIX) {
        p.at(None, "issuer", "session-cookie issuers are not ID-token issuers");
    }
    let tenants = opt_strings(&f.tenants);
    if f.tenants.is_some() && tenants.is_empty() {
        p.at(None, "tenants", "an empty list allows no user: remove it for project-level users only");
    }
    KindSpec::Firebase(FirebaseSpec {
        session_issuer: format!("{FIREBASE_SESSION_ISSUER_PREFIX}{project}"),
        project_id: project,
        tenants,
        allow_anonymous: f.allow_anonymous.unwrap_or(false),
    })
}

/// A stable GUID-shaped id derived from a provider id (dev tenants look real).
pub fn guid_from(seed: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let h: String = d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}


#[cfg(test)]
#[path = "validate/tests.rs"]
mod tests;
