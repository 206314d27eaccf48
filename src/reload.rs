//! Configuration reload on SIGHUP: validate fully, build a new runtime, swap it in
//! atomically (arc-swap), keep the old one on any error.
//!
//! Requests in flight finish on the runtime they started with (each holds an `Arc`).
//! What must survive a reload is carried over: a provider whose key source did not
//! change keeps its fetched keys (no window without keys), and the session store is
//! kept when `session:` did not change (a memory store would otherwise lose every
//! session). Listener addresses cannot change without a restart (Pingora binds them at
//! start); such a change is refused with a clear log line.

use crate::config::{self, Config};
use crate::metrics::metrics;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::path::Path;
use std::sync::Arc;

/// Loads `path` and swaps the new runtime into `state`; returns a description of the
/// outcome for the log.
pub fn reload(state: &ArcSwap<Runtime>, path: &Path) -> Result<String, String> {
    let old = state.load_full();
    let result = load(&old, path);
    let label = if result.is_ok() { "success" } else { "failure" };
    metrics().config_reloads_total.with_label_values(&[label]).inc();
    let new = result?;
    let summary = format!("{} provider(s), {} route(s)", new.config.providers.len(), new.config.routes.len());
    state.store(Arc::new(new));
    Ok(summary)
}

fn load(old: &Runtime, path: &Path) -> Result<Runtime, String> {
    let config = config::load(path).map_err(|e| e.to_string().trim_end().replace('\n', "; "))?;
    check_listeners(&old.config, &config)?;
    let mut rt = Runtime::build(config).map_err(|e| e.to_string())?;
    for p in &rt.registry.providers {
        if let Some(prev) = old.registry.by_id(&p.spec.id) {
            p.adopt_keys(prev);
        }
    }
    if rt.config.session == old.config.session {
        rt.sessions = old.sessions.clone();
    }
    Ok(rt)
}

fn check_listeners(old: &Config, new: &Config) -> Result<(), String> {
    let same_https = old.listen_https.as_ref().map(|t| t.addr) == new.listen_https.as_ref().map(|t| t.addr);
    if old.listen_http != new.listen_http || !same_https || old.admin != new.admin {
        return Err("listener addresses (listen, admin) cannot change on reload: restart (or `serve --upgrade`) instead".into());
    }
    Ok(())
}
