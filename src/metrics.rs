//! The Prometheus metric families (docs/operations.md lists them), registered once per
//! process.
//!
//! Label values come only from config ids (route, provider) and closed enums (outcome,
//! decision, reason), never from request data, so cardinality is bounded by the config.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub auth_decisions_total: IntCounterVec,
    pub token_validations_total: IntCounterVec,
    pub jwks_refresh_total: IntCounterVec,
    pub jwks_keys: IntGaugeVec,
    pub jwks_age_seconds: IntGaugeVec,
    pub verify_cache_hits_total: IntCounter,
    pub verify_cache_misses_total: IntCounter,
    pub logins_total: IntCounterVec,
    /// Sessions this replica created minus those it saw end. Per process: behind several
    /// replicas sum it, and sessions that idle out in Redis unseen stay counted; for
    /// rates read `sessions_created_total` and `sessions_ended_total`.
    pub sessions_active: IntGauge,
    /// Browser sessions created (sum over replicas: right across replicas).
    pub sessions_created_total: IntCounter,
    /// Browser sessions ended, by reason (`logout`, `revoked`, `expired`).
    pub sessions_ended_total: IntCounterVec,
    /// Session store operations by operation and result (`ok`, `miss`, `error`).
    pub session_store_ops_total: IntCounterVec,
    /// Session store operation latency by operation (errors and timeouts included).
    pub session_store_op_duration_seconds: HistogramVec,
    pub upstream_errors_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    /// TLS listener certificate reloads that found changed files, by result.
    pub tls_cert_reloads_total: IntCounterVec,
    pub login_funnel_total: IntCounterVec,
    /// Sign-ins in progress held (login transactions and parked broker requests).
    pub login_pending: IntGauge,
    /// Sign-in starts refused by the per-client rate limit, by endpoint (`login`, `authorize`).
    pub sign_in_rate_limited_total: IntCounterVec,
    /// Broker (OpenID Provider) requests by endpoint and result (`ok` or the RFC error code).
    pub broker_requests_total: IntCounterVec,
    pub broker_tokens_issued_total: IntCounterVec,
    /// Back-channel logout deliveries to broker clients, by client and result.
    pub broker_backchannel_logouts_total: IntCounterVec,
    /// Audit lines dropped because the writer fell behind (docs/operations.md).
    pub audit_dropped_total: IntCounter,
    /// Access-review observations dropped (aggregate full, or store unreachable too long).
    pub access_dropped_total: IntCounter,
    /// Flushes of access-review evidence into the session store, by result.
    pub access_flushes_total: IntCounterVec,
    /// Guarded admin requests refused, by reason (`admin_token_invalid`, ...).
    pub admin_refusals_total: IntCounterVec,
    /// Session handoffs between hosts (`session.auth_host`), by result: `issued`,
    /// `redeemed` or the refusal's reason (`handoff_replayed`, ...).
    pub session_handoffs_total: IntCounterVec,
    /// Revocations by who asked and what happened (`crate::revocation`).
    pub revocations_total: IntCounterVec,
    /// Back-channel logout requests by result (`ok` or why the token was refused).
    pub backchannel_logouts_total: IntCounterVec,
    /// Pushed Security Event Tokens by result (`ok`, `ignored` or why it was refused).
    pub ssf_sets_total: IntCounterVec,
    /// `idfabric_ssf_polls_total{provider,result}`: RFC 8936 poll requests.
    pub ssf_polls_total: IntCounterVec,
    /// SCIM requests by resource (`users`, `groups`, …) and result (`ok` or the reason).
    pub scim_requests_total: IntCounterVec,
    /// Adaptive MFA: risk signals that fired on adaptive routes, by signal (every
    /// value pre-initialised at start, `server`).
    pub risk_signals_total: IntCounterVec,
    /// Adaptive MFA: step-ups asked for because of a signal MFA did not cover, by signal.
    pub risk_stepups_total: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("idfabric"), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace("idfabric")).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help).namespace("idfabric"), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time from request to response, by route and outcome")
                .namespace("idfabric")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route", "outcome"],
        )
        .expect("valid metric");
        r.register(Box::new(request_duration_seconds.clone())).expect("registered once");
        let hits = IntCounter::with_opts(
            Opts::new("verify_cache_hits_total", "Bearer tokens answered from the verified-identity cache").namespace("idfabric"),
        )
        .expect("valid metric");
        let misses = IntCounter::with_opts(
            Opts::new("verify_cache_misses_total", "Bearer tokens that needed full verification").namespace("idfabric"),
        )
        .expect("valid metric");
        let sessions = IntGauge::with_opts(Opts::new("sessions_active", "Browser sessions held").namespace("idfabric"))
            .expect("valid metric");
        for m in [&hits, &misses] {
            r.register(Box::new(m.clone())).expect("registered once");
        }
        r.register(Box::new(sessions.clone())).expect("registered once");
        let store_duration = HistogramVec::new(
            HistogramOpts::new("session_store_op_duration_seconds", "Session store operation latency, by operation")
                .namespace("idfabric")
                .buckets(vec![0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["op"],
        )
        .expect("valid metric");
        r.register(Box::new(store_duration.clone())).expect("registered once");
        let pending = IntGauge::with_opts(
            Opts::new("login_pending", "Sign-ins in progress held (login transactions and parked broker requests)")
                .namespace("idfabric"),
        )
        .expect("valid metric");
        r.register(Box::new(pending.clone())).expect("registered once");
        let risk_signals = counter(&r, "risk_signals_total", "Adaptive MFA risk signals that fired, by signal", &["signal"]);
        let risk_stepups = counter(&r, "risk_stepups_total", "Adaptive MFA step-ups asked for because of an uncovered risk signal, by signal", &["signal"]);
        Metrics {
            requests_total: counter(&r, "requests_total", "Requests by route, population, provider and outcome", &["route", "population", "provider", "outcome"]),
            request_duration_seconds,
            auth_decisions_total: counter(&r, "auth_decisions_total", "Authorization decisions by route, decision and reason", &["route", "decision", "reason"]),
            token_validations_total: counter(&r, "token_validations_total", "Token validations by provider, result and reason", &["provider", "result", "reason"]),
            jwks_refresh_total: counter(&r, "jwks_refresh_total", "JWKS fetches by provider and result", &["provider", "result"]),
            jwks_keys: gauge(&r, "jwks_keys", "Signing keys held per provider", &["provider"]),
            jwks_age_seconds: gauge(&r, "jwks_age_seconds", "Seconds since the provider's keys were last fetched", &["provider"]),
            verify_cache_hits_total: hits,
            verify_cache_misses_total: misses,
            logins_total: counter(&r, "logins_total", "Browser sign-ins by provider, population and result", &["provider", "population", "result"]),
            sessions_active: sessions,
            sessions_created_total: plain_counter(&r, "sessions_created_total", "Browser sessions created"),
            sessions_ended_total: counter(&r, "sessions_ended_total", "Browser sessions ended, by reason (logout, revoked, expired)", &["reason"]),
            session_store_ops_total: counter(&r, "session_store_ops_total", "Session store operations by operation and result (ok, miss, error)", &["op", "result"]),
            session_store_op_duration_seconds: store_duration,
            upstream_errors_total: counter(&r, "upstream_errors_total", "Failures talking to upstream apps, by route", &["route"]),
            config_reloads_total: counter(&r, "config_reloads_total", "Configuration loads by result", &["result"]),
            tls_cert_reloads_total: counter(&r, "tls_cert_reloads_total", "TLS listener certificate reloads of changed files, by result", &["result"]),
            login_funnel_total: counter(&r, "login_funnel_total", "Sign-in funnel stages by population, provider and journey (signin, signup, reset, profile, stepup)", &["population", "provider", "journey", "stage"]),
            login_pending: pending,
            sign_in_rate_limited_total: counter(&r, "sign_in_rate_limited_total", "Sign-in starts refused by the per-client rate limit, by endpoint", &["endpoint"]),
            broker_requests_total: counter(&r, "broker_requests_total", "Broker (OpenID Provider) requests by endpoint and result (ok or the RFC error code)", &["endpoint", "result"]),
            broker_tokens_issued_total: counter(&r, "broker_tokens_issued_total", "Broker token responses by grant type", &["grant"]),
            broker_backchannel_logouts_total: counter(&r, "broker_backchannel_logouts_total", "Back-channel logout deliveries to broker clients by client and result (delivered, failed, gave_up)", &["client", "result"]),
            audit_dropped_total: plain_counter(&r, "audit_dropped_total", "Audit lines dropped because the audit writer fell behind"),
            access_dropped_total: plain_counter(&r, "access_dropped_total", "Access-review observations dropped"),
            access_flushes_total: counter(&r, "access_flushes_total", "Access-review evidence flushes into the session store, by result", &["result"]),
            admin_refusals_total: counter(&r, "admin_refusals_total", "Guarded admin requests refused, by reason", &["reason"]),
            session_handoffs_total: counter(&r, "session_handoffs_total", "Session handoffs from the sign-in host, by result (issued, redeemed or the refusal reason)", &["result"]),
            revocations_total: counter(&r, "revocations_total", "Revocations by source (admin, backchannel_logout, ssf, scim) and event", &["source", "event"]),
            backchannel_logouts_total: counter(&r, "backchannel_logouts_total", "Back-channel logout requests by result (ok or the refusal reason)", &["result"]),
            ssf_sets_total: counter(&r, "ssf_sets_total", "Shared Signals Security Event Tokens (pushed or polled) by result (ok, ignored or the refusal reason)", &["result"]),
            ssf_polls_total: counter(&r, "ssf_polls_total", "Shared Signals poll requests (RFC 8936) by provider and result (ok, transport_error, http_error, bad_response)", &["provider", "result"]),
            scim_requests_total: counter(&r, "scim_requests_total", "SCIM provisioning requests by resource and result (ok or the refusal reason)", &["resource", "result"]),
            risk_signals_total: risk_signals,
            risk_stepups_total: risk_stepups,
            registry: r,
        }
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The three per-request series, resolved once per label combination.
pub struct RequestSeries {
    pub requests: IntCounter,
    pub duration: prometheus::Histogram,
    pub decision: Option<IntCounter>,
}

/// How a request ended: the `outcome` label of `requests_total` and
/// `request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// Admitted and proxied.
    #[default]
    Allow,
    /// Refused by a rule, a credential check or the request's shape.
    Refused,
    /// Refused because a dependency (provider keys, session store) is unavailable.
    Error,
    /// No route matches the host and path.
    NoRoute,
    /// Answered by idfabric itself (reserved paths, `OPTIONS *`).
    Internal,
    /// Admitted, then the upstream failed.
    UpstreamError,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::NoRoute => "no_route",
            Outcome::Internal => "internal",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// Identifies a label combination without strings: runtime generation, route index,
/// provider index, population index, outcome, reason and decision.
pub type SeriesKey = (u64, u32, u32, u8, Outcome, crate::refusal::Reason, crate::refusal::Decision);

thread_local! {
    static SERIES: std::cell::RefCell<std::collections::HashMap<SeriesKey, std::rc::Rc<RequestSeries>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The request series for `key`, built with `labels` on first use on this thread.
/// Keeps `with_label_values` (hashing, a lock) off the hot path.
pub fn request_series(key: SeriesKey, labels: impl FnOnce() -> RequestSeries) -> std::rc::Rc<RequestSeries> {
    SERIES.with(|s| {
        let mut map = s.borrow_mut();
        if map.len() > 100_000 {
            map.clear(); // bounded: label sets are bounded by config, this only guards reload churn
        }
        map.entry(key).or_insert_with(|| std::rc::Rc::new(labels())).clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::{Decision, Reason};

    #[test]
    fn outcome_labels() {
        let all = [Outcome::Allow, Outcome::Refused, Outcome::Error, Outcome::NoRoute, Outcome::Internal, Outcome::UpstreamError];
        let labels: Vec<&str> = all.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels, ["allow", "refused", "error", "no_route", "internal", "upstream_error"]);
    }

    #[test]
    fn series_are_cached_per_key() {
        let key = (u64::MAX - 7, 0, 0, 0, Outcome::Refused, Reason::MissingToken, Decision::Challenge);
        let mut built = 0;
        let series = || {
            built += 1;
            let m = metrics();
            RequestSeries {
                requests: m.requests_total.with_label_values(&["metrics-test", "none", "none", Outcome::Refused.as_str()]),
                duration: m.request_duration_seconds.with_label_values(&["metrics-test", Outcome::Refused.as_str()]),
                decision: None,
            }
        };
        let a = request_series(key, series);
        let b = request_series(key, || unreachable!("built once per key"));
        assert!(std::rc::Rc::ptr_eq(&a, &b));
        assert_eq!(built, 1);
    }
}
