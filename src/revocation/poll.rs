//! Shared Signals poll delivery (RFC 8936, https://www.rfc-editor.org/rfc/rfc8936):
//! for each provider with `ssf.poll`, idfabric POSTs to the transmitter's endpoint
//!
//! ```json
//! {"maxEvents": 100, "returnImmediately": true, "ack": ["jti", …], "setErrs": {"jti": {"err": "…", "description": "…"}}}
//! ```
//!
//! with the configured bearer token, and hands every SET of the answer's `sets` to the
//! same [`super::ssf::process`] as push delivery (same checks, same actions, same
//! `jti` single use). Acted-on and ignored SETs are acknowledged on the next request;
//! refused ones are reported in `setErrs` with the RFC 8935 §2.3 code (RFC 8936 §2.4);
//! a SET that could not be applied because the session store was down is neither, so
//! the transmitter delivers it again. A SET already received (its `jti` claimed, by
//! push, or by another replica's poll) is acknowledged: it was acted on.
//!
//! Why a lock per round: every replica runs this task, and one poll per interval is
//! enough. A replica polls a provider only after it set the store key
//! `idf:{rev}:ssf-poll:{provider}` (absent-only, living one interval), so the
//! replicas take turns; a replica that dies mid-round leaves the key to lapse. Its
//! unsent acknowledgements are not lost: the transmitter re-delivers those SETs and
//! whichever replica polls acknowledges them as already received. With
//! `moreAvailable: true` the same replica polls again at once (its lock renewed).
//!
//! Transport errors, non-2xx answers and bodies that are not the RFC's JSON back off:
//! the interval doubled per failure up to five minutes, logged (never the token), and
//! counted in `idfabric_ssf_polls_total{provider,result}`.

use crate::config::SsfPoll;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest wait after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A poll answer larger than this is refused (`bad_response`).
const MAX_ANSWER: usize = 4 << 20;
/// Per-request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many immediate re-polls for `moreAvailable` in one round.
const MORE_ROUNDS: usize = 10;

/// One provider's poll state on this replica.
#[derive(Default)]
struct Stream {
    next: Option<Instant>,
    failures: u32,
    ack: Vec<String>,
    errs: Map<String, Value>,
}

/// Runs until `shutdown` turns true; reads the current runtime each tick (a reload
/// may add, change or drop a provider's `ssf.poll`).
pub async fn run(state: Arc<ArcSwap<Runtime>>, mut shutdown: watch::Receiver<bool>) {
    let mut streams: HashMap<(String, String), Stream> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let rt = state.load_full();
        let polled: Vec<(String, SsfPoll)> = rt
            .registry
            .providers
            .iter()
            .filter_map(|p| p.spec.ssf.as_ref()?.poll.clone().map(|poll| (p.id().to_string(), poll)))
            .collect();
        streams.retain(|(id, url), _| polled.iter().any(|(i, p)| i == id && &p.url == url));
        for (provider, poll) in polled {
            let stream = streams.entry((provider.clone(), poll.url.clone())).or_default();
            if stream.next.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let wait = round(&rt, &provider, &poll, stream).await;
            stream.next = Some(Instant::now() + wait);
        }
    }
}

/// One round for one provider: take the turn, poll (again while more is available);
/// returns how long to wait before the next round.
async fn round(rt: &Runtime, provider: &str, poll: &SsfPoll, stream: &mut Stream) -> Duration {
    let Some(sessions) = &rt.sessions else { return poll.interval };
    let lock = format!("idf:{{rev}}:ssf-poll:{provider}");
    for _ in 0..MORE_ROUNDS {
        match sessions.store.set_nx(&lock, poll.interval).await {
            Ok(true) => {}
            Ok(false) => return poll.interval,
            Err(e) => {
                tracing::debug!(provider, error = %e, "ssf poll skipped: session store unavailable");
                return poll.interval;
            }
        }
        match once(rt, provider, poll, stream).await {
            Ok(more) => {
                stream.failures = 0;
                crate::metrics::metrics().ssf_polls_total.with_label_values(&[provider, "ok"]).inc();
                if !more {
                    return poll.interval;
                }
                // Let this replica go on at once: the next turn is its own.
                let _ = sessions.store.delete(&lock).await;
            }
            Err(result) => {
                stream.failures = stream.failures.saturating_add(1);
                crate::metrics::metrics().ssf_polls_total.with_label_values(&[provider, result]).inc();
                let wait = poll.interval.saturating_mul(1 << stream.failures.min(10)).min(MAX_BACKOFF);
                tracing::warn!(provider, result, failures = stream.failures, wait_ms = wait.as_millis() as u64, "ssf poll failed; backing off");
                return wait;
            }
        }
    }
    poll.interval
}

/// One poll request and the processing of its SETs. `Ok(moreAvailable)`, or the
/// failure's `result` label (the acknowledgements are then kept for the next one).
async fn once(rt: &Runtime, provider: &str, poll: &SsfPoll, stream: &mut Stream) -> Result<bool, &'static str> {
    let body = json!({
        "maxEvents": poll.max_events,
        "returnImmediately": true,
        "ack": stream.ack,
        "setErrs": stream.errs,
    });
    let resp = rt
        .registry
        .http
        .post(&poll.url)
        .bearer_auth(&poll.token)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .timeout(TIMEOUT)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| {
            tracing::info!(provider, error = %without_url(&e), "ssf poll request failed");
            "transport_error"
        })?;
    let status = resp.status();
    if !status.is_success() {
        tracing::info!(provider, status = status.as_u16(), "ssf poll answered with an error status");
        return Err("http_error");
    }
    let bytes = read_capped(resp).await?;
    // Delivered: what was sent is now the transmitter's.
    stream.ack.clear();
    stream.errs.clear();
    let answer: Value = serde_json::from_slice(&bytes).map_err(|_| "bad_response")?;
    let sets = match answer.get("sets") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("bad_response"),
    };
    for (jti, set) in sets {
        let Some(token) = set.as_str() else {
            stream.errs.insert(jti, json!({"err": "invalid_request", "description": "the SET is not a compact JWT string"}));
            crate::metrics::metrics().ssf_sets_total.with_label_values(&["malformed"]).inc();
            continue;
        };
        match super::ssf::process(rt, token.trim()).await {
            Ok(_) => stream.ack.push(jti),
            Err(f) if f.reason == crate::providers::set::SetError::Replayed.reason() => stream.ack.push(jti),
            Err(f) if f.is_transient() => {}
            Err(f) => {
                stream.errs.insert(jti, json!({"err": f.err, "description": f.description}));
            }
        }
    }
    Ok(answer.get("moreAvailable").and_then(Value::as_bool).unwrap_or(false))
}

/// The body, refused when larger than [`MAX_ANSWER`].
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, &'static str> {
    if resp.content_length().is_some_and(|n| n as usize > MAX_ANSWER) {
        return Err("bad_response");
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| "transport_error")? {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err("bad_response");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A reqwest error without its URL (a poll URL may carry a secret in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<poll url>");
    }
    s
}
