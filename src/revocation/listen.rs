//! How a replica learns of the other replicas' revocations: it subscribes to the
//! store's channel (re-subscribing after a break) and, behind that, reads the store's
//! log every [`POLL`], so a message lost while Redis or the subscription was down is
//! caught within a second of Redis answering again. At start the whole log is read:
//! a new replica knows every deny entry still alive. A memory store is not shared
//! and needs neither: `revoke` has already filled this process's list.

use super::{learn, CHANNEL, LOG_KEY};
use crate::deny::Entry;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the log is read.
pub const POLL: Duration = Duration::from_millis(1000);

/// How far back each poll reads again (milliseconds): entries are scored by the
/// writing replica's clock, so one written "in the past" by a replica a little behind
/// is still read. Re-reading is harmless (applying an entry twice changes nothing).
const OVERLAP_MS: i64 = 5_000;

/// Runs until `shutdown` turns true; reads the current runtime each round (a reload
/// may change the store).
pub async fn run(state: Arc<ArcSwap<Runtime>>, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let subscriber = tokio::spawn(subscribe(state.clone(), tx, shutdown.clone()));
    let mut cursor: i64 = 0;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(text) = rx.recv() => apply(&state.load(), &text),
            _ = tick.tick() => {
                let rt = state.load_full();
                crate::deny::list().prune(crate::providers::now_secs());
                let Some(sessions) = &rt.sessions else { continue };
                if !sessions.store.is_shared() {
                    continue;
                }
                match sessions.store.log_since(LOG_KEY, cursor).await {
                    Ok(entries) => {
                        for (text, score) in entries {
                            apply(&rt, &text);
                            cursor = cursor.max(score - OVERLAP_MS);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "revocation log not read; trying again in a second"),
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    subscriber.abort();
}

fn apply(rt: &Runtime, text: &str) {
    match serde_json::from_str::<Entry>(text) {
        Ok(e) => learn(rt, &e),
        Err(_) => tracing::warn!("a revocation message of an unknown shape was ignored"),
    }
}

/// Keeps a subscription to the channel, re-subscribing a second after it breaks.
async fn subscribe(state: Arc<ArcSwap<Runtime>>, tx: mpsc::Sender<String>, shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let store = state.load().sessions.as_ref().map(|s| s.store.clone());
        match store {
            Some(store) if store.is_shared() => match store.subscribe(CHANNEL, tx.clone()).await {
                Ok(true) => tracing::debug!("revocation channel closed; subscribing again"),
                Ok(false) => return,
                Err(e) => tracing::debug!(error = %e, "revocation channel unavailable; the log poll covers it"),
            },
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
