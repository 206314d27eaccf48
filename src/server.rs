//! Assembling the Pingora server: the proxy service (HTTP and HTTPS listeners), the
//! admin listener, the background JWKS refresher and, for the demo, echo apps.

use crate::admin::{Admin, Role as AdminRole};
use crate::config::Config;
use crate::echo::Echo;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::Arc;

struct Refresher {
    state: Arc<ArcSwap<Runtime>>,
    config_path: std::path::PathBuf,
    /// Reload on file change too (`reload.watch` and not `serve --no-watch`).
    watch: bool,
    /// The TLS listener's certificate, reloaded with the configuration.
    cert: Option<Arc<crate::tls::CertStore>>,
}

/// What asked for a reload.
enum Trigger {
    Shutdown,
    Hangup,
    Files(Vec<std::path::PathBuf>),
}

impl Refresher {
    fn start_watch(&self) -> Option<crate::watch::Watch> {
        if !self.watch {
            tracing::info!("file watch off: reload with SIGHUP");
            return None;
        }
        let rt = self.state.load_full();
        match crate::watch::Watch::start(&rt.config) {
            Ok(w) => {
                tracing::info!(dirs = ?w.dirs(), "watching configuration files; changes reload automatically");
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch configuration files: reload with SIGHUP");
                None
            }
        }
    }

    /// The one reload path for SIGHUP and file changes, with its one log line.
    fn reload(&self, trigger: &Trigger, watch: Option<&mut crate::watch::Watch>) {
        let (by, changed) = match trigger {
            Trigger::Files(paths) => ("file change", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()),
            _ => ("SIGHUP", Vec::new()),
        };
        match crate::reload::reload(&self.state, &self.config_path) {
            Ok(summary) => {
                let rt = self.state.load_full();
                tracing::info!(file = %self.config_path.display(), trigger = by, ?changed, %summary, "configuration reloaded");
                if let (Some(store), Some(t)) = (&self.cert, &rt.config.listen_https) {
                    store.set_files(&t.cert, &t.key);
                }
                if let Some(w) = watch {
                    w.update(&rt.config);
                }
            }
            Err(e) => {
                tracing::error!(
                    file = %self.config_path.display(),
                    trigger = by,
                    ?changed,
                    error = %e,
                    "configuration reload failed; keeping the running configuration"
                );
                if let Some(w) = watch {
                    w.resync();
                }
            }
        }
        // The certificate is reloaded whatever became of the rest: a renewal must not
        // wait for an unrelated configuration mistake to be fixed.
        if let Some(store) = &self.cert {
            reload_cert(store, by);
        }
    }
}

/// Swaps in a renewed listener certificate, with its log line.
fn reload_cert(store: &crate::tls::CertStore, by: &str) {
    use crate::tls::Reloaded;
    match store.reload() {
        Reloaded::Unchanged => {}
        Reloaded::Swapped(cert) => tracing::info!(trigger = by, %cert, "TLS certificate reloaded: new connections get it"),
        Reloaded::Kept(e) => {
            tracing::error!(trigger = by, error = %e, "TLS certificate reload failed; keeping the running certificate")
        }
    }
}

#[async_trait]
impl BackgroundService for Refresher {
    /// Keeps the current runtime's keys fresh, sweeps abandoned sign-ins and flushes
    /// access evidence; on SIGHUP or a watched file change reloads the configuration
    /// and restarts the per-runtime tasks for the new runtime.
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reload disabled");
                None
            }
        };
        let mut watch = self.start_watch();
        // What the watched files looked like at the last load (either door).
        let mut loaded = watch.as_ref().map(|w| w.fingerprint());
        let flusher = tokio::spawn(flush_access(self.state.clone(), shutdown.clone()));
        tokio::spawn(crate::revocation::listen(self.state.clone(), shutdown.clone()));
        tokio::spawn(crate::revocation::ssf_poll(self.state.clone(), shutdown.clone()));
        tokio::spawn(crate::broker::backchannel::resume(self.state.clone(), shutdown.clone()));
        loop {
            let rt = self.state.load_full();
            let stop = shutdown.clone();
            let sweeper = tokio::spawn(sweep_abandoned(rt.clone(), shutdown.clone()));
            let refresher = tokio::spawn(rt.registry.clone().run_refresher(move || *stop.borrow()));
            drop(rt);
            let mut down = shutdown.clone();
            let trigger = tokio::select! {
                _ = down.changed() => Trigger::Shutdown,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => Trigger::Hangup,
                paths = async { match watch.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => Trigger::Files(paths),
            };
            sweeper.abort();
            refresher.abort();
            if matches!(trigger, Trigger::Shutdown) || *shutdown.borrow() {
                let _ = flusher.await;
                return;
            }
            let now = watch.as_ref().map(|w| w.fingerprint());
            if matches!(trigger, Trigger::Files(_)) && now == loaded {
                tracing::debug!("watched files changed back or were only touched: no reload");
                continue;
            }
            // Taken before the reload read the files: a change made during it still
            // differs from `loaded` and triggers its own reload.
            loaded = now;
            self.reload(&trigger, watch.as_mut());
        }
    }
}

/// Writes access evidence into the current runtime's store every `FLUSH_EVERY`, and
/// once more on shutdown.
async fn flush_access(state: Arc<ArcSwap<Runtime>>, mut shutdown: ShutdownWatch) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(crate::access::FLUSH_EVERY) => false,
            _ = shutdown.changed() => true,
        };
        let rt = state.load_full();
        if let Some(s) = &rt.sessions {
            if let Err(e) = crate::access::flush(s.store.as_ref()).await {
                tracing::warn!(store = s.store.kind(), error = %e, "access evidence not written; retrying at the next flush");
            }
        }
        if stopping || *shutdown.borrow() {
            return;
        }
    }
}

/// Options beyond the config file.
#[derive(Default)]
pub struct RunOptions {
    /// Echo apps to start (demo).
    pub echo: Vec<SocketAddr>,
    /// Take over listening sockets from a running idfabric (Pingora graceful upgrade).
    pub upgrade: bool,
    /// Do not reload on file changes (`serve --no-watch`); SIGHUP still works.
    pub no_watch: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
    #[error("TLS listener {addr}: {source}")]
    Tls { addr: SocketAddr, source: Box<pingora::Error> },
    #[error("TLS listener {addr}: {source}")]
    Cert { addr: SocketAddr, source: crate::tls::CertError },
}

/// Builds and runs the server; returns only on error.
pub fn run(config: Config, opts: RunOptions) -> Result<(), StartError> {
    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        upstream_keepalive_pool_size: config.server.upstream_keepalive,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        // The new process waits this many seconds for the old one's SIGQUIT.
        upgrade_sock_connect_accept_max_retries: Some(30),
        ..ServerConf::default()
    };
    let opt = Opt { upgrade: opts.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    for p in &config.providers {
        if p.kind() == crate::identity::ProviderKind::Dev {
            tracing::warn!(
                provider = p.id.as_str(),
                "DEVELOPMENT PROVIDER ENABLED: it mints tokens for anyone who asks; never use it in production"
            );
        }
    }
    let config_path = config.path.clone();
    let watch = config.reload.watch && !opts.no_watch;
    crate::audit::configure(&config.audit)?;
    let listen_http = config.listen_http;
    let listen_https = config.listen_https.clone();
    let admin = config.admin;
    let ops_listen = config.admin_guard.ops_listen;
    let runtime = Runtime::build(config)?;
    crate::revocation::zero_series(&runtime.config);
    // Signing out at `/.idfabric/logout` also revokes the broker token families issued
    // from the session (sign-in does not know the broker; it calls this hook).
    crate::login::on_sign_out(crate::broker::sign_out_hook);
    preinitialise_series(&runtime);
    let state = Arc::new(ArcSwap::from_pointee(runtime));

    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Gateway::new(state.clone()));
    if let Some(a) = listen_http {
        proxy.add_tcp(&a.to_string());
    }
    let mut cert = None;
    if let Some(tls) = &listen_https {
        // The certificate comes from the store at each handshake (`crate::tls`), so a
        // renewal is served without a restart.
        let (store, summary) =
            crate::tls::CertStore::open(&tls.cert, &tls.key).map_err(|source| StartError::Cert { addr: tls.addr, source })?;
        if summary.expired {
            tracing::warn!(cert = %summary, "the TLS certificate has expired: clients will refuse it until it is renewed");
        }
        let store = Arc::new(store);
        let mut settings =
            pingora::listeners::tls::TlsSettings::intermediate("", "").map_err(|source| StartError::Tls { addr: tls.addr, source })?;
        settings.set_cert_resolver(store.clone());
        // HTTP/2 is offered through ALPN next to HTTP/1.1.
        settings.enable_h2();
        proxy.add_tls_with_settings(&tls.addr.to_string(), None, settings);
        cert = Some(store);
    }
    server.add_service(proxy);
    if let Some(a) = admin {
        let role = if ops_listen.is_some() { AdminRole::Probes } else { AdminRole::All };
        let mut svc = Service::new("idfabric admin".to_string(), Admin { state: state.clone(), role });
        svc.add_tcp(&a.to_string());
        server.add_service(svc);
    }
    if let Some(a) = ops_listen {
        let mut svc = Service::new("idfabric admin ops".to_string(), Admin { state: state.clone(), role: AdminRole::Ops });
        svc.add_tcp(&a.to_string());
        server.add_service(svc);
    }
    for addr in &opts.echo {
        let mut svc = Service::new(format!("echo {addr}"), Echo { name: format!("echo-{}", addr.port()) });
        svc.add_tcp(&addr.to_string());
        server.add_service(svc);
    }
    server.add_service(background_service("jwks refresher", Refresher { state, config_path, watch, cert }));
    tracing::info!(http = ?listen_http, https = ?listen_https.map(|t| t.addr), admin = ?admin, admin_ops = ?ops_listen, "idfabric listening");
    // `run` returns once Pingora has shut down (SIGTERM, SIGINT, or handed its sockets to
    // a new process on SIGQUIT); the audit lines still queued are written before exit.
    server.run(pingora::server::RunArgs::default());
    if !crate::audit::finish(crate::audit::FINISH_LIMIT) {
        tracing::warn!("audit log: the writer did not finish in time; its last lines may be missing");
    }
    if !crate::trace::finish(std::time::Duration::from_secs(3)) {
        tracing::warn!("tracing: the last request spans could not be exported before exit");
    }
    std::process::exit(0)
}

/// Runs only echo apps (tests and benchmarks use it as an upstream).
pub fn run_echo(addrs: Vec<SocketAddr>, threads: usize) -> ! {
    let conf = ServerConf { threads, grace_period_seconds: Some(0), graceful_shutdown_timeout_seconds: Some(1), ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    for addr in addrs {
        let mut svc = Service::new(format!("echo {addr}"), Echo { name: format!("echo-{}", addr.port()) });
        svc.add_tcp(&addr.to_string());
        server.add_service(svc);
    }
    server.run_forever();
}

/// Creates the zero-valued series dashboards and alerts expect to exist before the
/// first event (label values from config only).
fn preinitialise_series(rt: &Runtime) {
    let m = crate::metrics::metrics();
    for s in crate::risk::Signal::ALL {
        m.risk_signals_total.with_label_values(&[s.as_str()]);
        m.risk_stepups_total.with_label_values(&[s.as_str()]);
    }
    for p in &rt.registry.providers {
        let (id, pop) = (p.id(), p.spec.population.as_str());
        m.token_validations_total.with_label_values(&[id, "valid", "ok"]);
        m.jwks_keys.with_label_values(&[id]);
        m.jwks_age_seconds.with_label_values(&[id]).set(-1);
        m.logins_total.with_label_values(&[id, pop, "success"]);
        m.logins_total.with_label_values(&[id, pop, "failure"]);
        for journey in crate::login::offered_journeys(p) {
            for stage in ["started", "provider_redirect", "callback_ok", "callback_error", "session_created", "abandoned"] {
                m.login_funnel_total.with_label_values(&[pop, id, journey.as_str(), stage]);
            }
        }
    }
    for r in &rt.routes.routes {
        m.upstream_errors_total.with_label_values(&[r.spec.name.as_str()]);
    }
    m.config_reloads_total.with_label_values(&["failure"]);
    // Exported at zero without a TLS listener too, so the dashboard and alert read the
    // same series everywhere.
    m.tls_cert_reloads_total.with_label_values(&["success"]);
    m.tls_cert_reloads_total.with_label_values(&["failure"]);
}

/// Counts sign-ins that were started and never came back (`abandoned` funnel stage).
async fn sweep_abandoned(rt: Arc<Runtime>, shutdown: ShutdownWatch) {
    let Some(sessions) = rt.sessions.clone() else { return };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        if *shutdown.borrow() {
            return;
        }
        if let Ok(swept) = sessions.sweep_abandoned().await {
            crate::metrics::metrics().login_pending.set(swept.held as i64);
            crate::login::count_abandoned(&rt, &swept.expired);
        }
    }
}
