//! Configuration reload, on SIGHUP or a file change (`crate::watch`): validate fully,
//! build a new runtime, swap it in atomically (arc-swap), keep the old one on any error.
//!
//! Requests in flight finish on the runtime they started with (each holds an `Arc`).
//! What must survive a reload is carried over: a provider whose key source did not
//! change keeps its fetched keys (no window without keys), and the session store is
//! kept when `session:` did not change (a memory store would otherwise lose every
//! session) while a changed session key file is still picked up. Listener addresses
//! cannot change without a restart (Pingora binds them at start), nor can the other
//! settings read only at start (`server.threads`, …); such a change is refused with a
//! clear log line naming the keys, never reported as reloaded and silently ignored.
//! The TLS certificate is checked here too (a garbage PEM is refused); the listener
//! swaps in renewed certificate files itself (`crate::tls`), on the same triggers.

use crate::config::{self, Config};
use crate::metrics::metrics;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads `path` and swaps the new runtime into `state`; returns a description of the
/// outcome for the log.
///
/// # Errors
/// Every reason the new configuration was refused, on one line (file, line and key
/// where known); the running configuration is then unchanged.
pub fn reload(state: &ArcSwap<Runtime>, path: &Path) -> Result<String, ReloadError> {
    let old = state.load_full();
    let result = load(&old, path).and_then(|rt| {
        let sink = crate::audit::prepare(&rt.config.audit)?;
        Ok((rt, sink))
    });
    let label = if result.is_ok() { "success" } else { "failure" };
    metrics().config_reloads_total.with_label_values(&[label]).inc();
    let (new, sink) = result?;
    let summary = format!("{} provider(s), {} route(s)", new.config.providers.len(), new.config.routes.len());
    state.store(Arc::new(new));
    crate::audit::install(sink);
    Ok(summary)
}

/// Why a new configuration was refused; the running one is then unchanged. Each
/// message is one line (file, line and key where known), for the reload log line.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}", .0.to_string().trim_end().replace('\n', "; "))]
    Config(#[source] config::ConfigErrors),
    #[error("{} cannot change on reload (read at start only): restart (or `serve --upgrade`) instead", .0.join(", "))]
    StartOnly(Vec<&'static str>),
    #[error("{}: key `listen.https`: cannot read: {source}", path.display())]
    TlsRead { path: PathBuf, source: std::io::Error },
    #[error("{}: key `listen.https`: not PEM: {source}", path.display())]
    TlsPem { path: PathBuf, source: pem::PemError },
    #[error("{}: key `listen.https`: holds no {what}", path.display())]
    TlsMissing { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// The configuration's warnings (`config::Config::warnings`), one log line each, at
/// start and on every reload.
pub fn log_warnings(config: &config::Config) {
    for w in &config.warnings {
        tracing::warn!(file = %w.file.display(), line = w.line, key = w.key.as_deref().unwrap_or(""), "configuration warning: {}", w.message);
    }
}

fn load(old: &Runtime, path: &Path) -> Result<Runtime, ReloadError> {
    let config = config::load(path, crate::providers::KINDS).map_err(ReloadError::Config)?;
    log_warnings(&config);
    check_start_only(&old.config, &config)?;
    check_tls(&config)?;
    let mut rt = Runtime::build(config)?;
    crate::revocation::zero_series(&rt.config);
    for p in &rt.registry.providers {
        if let Some(prev) = old.registry.by_id(&p.spec.id) {
            p.adopt_keys(prev);
        }
    }
    // The login limits, the cookie domain and the sign-in host apply to the store in
    // place: changing them keeps every session.
    let same_store = crate::config::SessionSpec {
        login_limits: old.config.session.login_limits,
        cookie_domain: old.config.session.cookie_domain.clone(),
        auth_host: old.config.session.auth_host.clone(),
        ..rt.config.session.clone()
    };
    if same_store == old.config.session {
        // Same store (sessions and sign-ins in progress survive), with the key file as it
        // reads now and the new limits.
        if let (Some(new), Some(prev)) = (rt.sessions.take(), &old.sessions) {
            rt.sessions = Some(match Arc::try_unwrap(new) {
                Ok(s) => Arc::new(crate::session::Sessions { store: prev.store.clone(), pending: prev.pending.clone(), ..s }),
                Err(_) => prev.clone(),
            });
        }
    }
    Ok(rt)
}

/// What is read only at start: a reload that changes it would report success and not
/// apply it, so it is refused, naming every such key, with the way to apply it.
fn check_start_only(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let same_https = old.listen_https.as_ref().map(|t| t.addr) == new.listen_https.as_ref().map(|t| t.addr);
    let changed: Vec<&'static str> = [
        ("listen", old.listen_http != new.listen_http || !same_https),
        ("admin", old.admin != new.admin),
        ("admin.ops_listen", old.admin_guard.ops_listen != new.admin_guard.ops_listen),
        ("server.threads", old.server.threads != new.server.threads),
        ("server.work_stealing", old.server.work_stealing != new.server.work_stealing),
        ("server.upstream_keepalive", old.server.upstream_keepalive != new.server.upstream_keepalive),
        ("server.upgrade_sock", old.server.upgrade_sock != new.server.upgrade_sock),
        ("reload.watch", old.reload.watch != new.reload.watch),
        ("tracing", old.tracing != new.tracing),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(ReloadError::StartOnly(changed))
}

/// The TLS certificate and key must still be readable PEM of the right kind, so the
/// next restart does not fail on what a reload accepted.
fn check_tls(config: &Config) -> Result<(), ReloadError> {
    match &config.listen_https {
        Some(t) => check_tls_files(&t.cert, &t.key),
        None => Ok(()),
    }
}

fn check_tls_files(cert: &Path, key: &Path) -> Result<(), ReloadError> {
    let read = |p: &Path, want: &dyn Fn(&str) -> bool, what: &'static str| -> Result<(), ReloadError> {
        let path = || p.to_path_buf();
        let text = std::fs::read(p).map_err(|source| ReloadError::TlsRead { path: path(), source })?;
        let blocks = pem::parse_many(&text).map_err(|source| ReloadError::TlsPem { path: path(), source })?;
        if blocks.iter().any(|b| want(b.tag())) {
            Ok(())
        } else {
            Err(ReloadError::TlsMissing { path: path(), what })
        }
    };
    read(cert, &|tag| tag == "CERTIFICATE", "CERTIFICATE block")?;
    read(key, &|tag| tag.ends_with("PRIVATE KEY"), "PRIVATE KEY block")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The checks' messages, as the reload log line shows them.
    fn check_start_only(old: &Config, new: &Config) -> Result<(), String> {
        super::check_start_only(old, new).map_err(|e| e.to_string())
    }

    fn check_tls_files(cert: &Path, key: &Path) -> Result<(), String> {
        super::check_tls_files(cert, key).map_err(|e| e.to_string())
    }

    fn config(dir: &Path, extra: &str) -> Config {
        std::fs::write(
            dir.join("routes.yaml"),
            format!("listen: {{ http: 127.0.0.1:18080 }}\nadmin: 127.0.0.1:19090\nroutes:\n  - {{ name: a, match: {{ host: a.test }}, upstream: [127.0.0.1:9] }}\n{extra}"),
        )
        .unwrap();
        config::load(&dir.join("routes.yaml"), crate::providers::KINDS).unwrap()
    }

    #[test]
    fn start_only_settings_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = config(dir.path(), "");
        assert_eq!(check_start_only(&base, &config(dir.path(), "audit: { output: off }\n")), Ok(()));
        // More threads also turn on work stealing (its default follows `threads`).
        let e = check_start_only(&base, &config(dir.path(), "server: { threads: 4 }\n")).unwrap_err();
        assert!(e.starts_with("server.threads, server.work_stealing cannot change on reload"), "{e}");
        let e = check_start_only(&base, &config(dir.path(), "server: { threads: 4, work_stealing: false }\n")).unwrap_err();
        assert!(e.starts_with("server.threads cannot change on reload"), "{e}");
        let e = check_start_only(&base, &config(dir.path(), "server: { work_stealing: true }\n")).unwrap_err();
        assert!(e.starts_with("server.work_stealing cannot change on reload"), "{e}");
        let e = check_start_only(
            &base,
            &config(dir.path(), "server: { upgrade_sock: /tmp/x.sock }\nreload: { watch: false }\n"),
        )
        .unwrap_err();
        assert!(e.starts_with("server.upgrade_sock, reload.watch cannot"), "{e}");
        let moved = config(dir.path(), "").listen_http.map(|a| std::net::SocketAddr::new(a.ip(), a.port() + 1));
        let e = check_start_only(&base, &Config { listen_http: moved, ..config(dir.path(), "") }).unwrap_err();
        assert!(e.starts_with("listen cannot change"), "{e}");
        // The admin token and hosts are read per request (a reload applies them); the
        // ops listener is bound at start.
        let ops = |extra: &str| {
            let mut c = config(dir.path(), "");
            c.admin_guard.hosts = vec![extra.to_string()];
            c.admin_guard.token = Some(crate::config::AdminToken::new(format!("{extra}-0123456789abcdef")));
            c
        };
        assert_eq!(check_start_only(&base, &ops("a")), Ok(()));
        let moved = Config {
            admin_guard: crate::config::AdminGuard { ops_listen: Some("127.0.0.1:19091".parse().unwrap()), ..ops("a").admin_guard },
            ..config(dir.path(), "")
        };
        let e = check_start_only(&base, &moved).unwrap_err();
        assert!(e.starts_with("admin.ops_listen cannot change"), "{e}");
    }

    #[test]
    fn tls_files_must_be_pem_of_the_right_kind() {
        let dir = tempfile::tempdir().unwrap();
        crate::keys::generate_dev_set(dir.path(), false, false).unwrap();
        let (cert, key) = (dir.path().join("dev-tls.crt"), dir.path().join("dev-tls.key"));
        assert_eq!(check_tls_files(&cert, &key), Ok(()));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        assert!(check_tls_files(&garbage, &key).unwrap_err().contains("holds no CERTIFICATE"));
        assert!(
            check_tls_files(&key, &key).unwrap_err().contains("holds no CERTIFICATE"),
            "a key is not a certificate"
        );
        assert!(check_tls_files(&cert, &cert).unwrap_err().contains("PRIVATE KEY"));
        assert!(check_tls_files(&dir.path().join("missing.crt"), &key).unwrap_err().contains("cannot read"));
    }
}
