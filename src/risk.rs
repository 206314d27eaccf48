//! Adaptive MFA for customers: the risk signals idfabric observes itself, and whether
//! the credential's second factor already answers them.
//!
//! A route with `require: { mfa: adaptive }` (or a policy rule with `risk: low`) lets a
//! customer in without MFA while nothing looks unusual, and asks for the ordinary
//! step-up (`mfa_required`) when a signal fires that the credential's MFA does not
//! cover. Four signals, each a stable name (metric label, audit field):
//!
//! | signal | fires when | covered by |
//! | --- | --- | --- |
//! | `new_device` | the request carries no valid device cookie bound to this subject | any MFA of this credential (the sign-in that proved it also set the cookie) |
//! | `network_change` | the client address (trusted-proxy-aware) is outside the /24 (IPv4) or /48 (IPv6) where the session began | nothing: a step-up makes a new session that begins on the new network |
//! | `sensitive_request` | the method or path is one the route marks `sensitive` | any MFA of this credential |
//! | `recent_refusals` | this subject was refused by a rule (`403`) [`REFUSAL_THRESHOLD`] times, each within [`REFUSAL_WINDOW`] of the last | MFA performed after the last of those refusals |
//!
//! Everything here is bounded and keyed by verified subjects only: the refusal counter
//! is a moka cache with a capacity and a time to live, and nothing an anonymous client
//! sends is remembered. The device cookie holds no subject: it is a random device id and
//! an issue time, MACed (HMAC-SHA256) together with the subject under a key derived from
//! the session key, so it proves "this browser completed MFA as this subject" and
//! nothing else; a cookie of another subject, or an altered one, counts as no cookie.

pub mod device;

pub use crate::config::risk::{network_of, RiskSpec, Sensitive, Signal, Signals, DEFAULT_SENSITIVE_METHODS};

use crate::identity::Identity;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// What the request shows besides the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// The client's address (the TCP peer, or behind trusted proxies the forwarded client).
    pub client: Option<IpAddr>,
    /// The device cookie's value, if the request carried one.
    pub device: Option<&'a str>,
    /// Where the session began (`None` for a bearer token or an older session).
    pub network: Option<IpNet>,
}

/// The network a session begins on (stored with it), for a known client address.
pub fn session_network(client: Option<IpAddr>) -> Option<String> {
    client.map(|ip| network_of(ip).to_string())
}

/// After a sign-in: with MFA, the device cookie that remembers this browser for `sub`
/// (and the subject's counted refusals are forgiven); without, nothing.
pub fn signed_in(key: &device::DeviceKey, sub: &str, mfa: bool, tls: bool) -> Option<String> {
    if !mfa {
        return None;
    }
    forgive(sub);
    Some(device::set_cookie(key, sub, now_secs(), tls))
}

/// Refusals of one subject needed for `recent_refusals` to fire.
pub const REFUSAL_THRESHOLD: u32 = 5;
/// A refusal counts while the previous one was at most this long ago.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(600);
/// Subjects the refusal counter holds at most (least recently used go first).
pub const REFUSAL_CAPACITY: u64 = 100_000;

/// Per subject: refusals counted and the time (unix seconds) of the last.
static REFUSALS: LazyLock<moka::sync::Cache<String, (u32, i64)>> = LazyLock::new(|| {
    moka::sync::Cache::builder().max_capacity(REFUSAL_CAPACITY).time_to_live(REFUSAL_WINDOW).build()
});

/// Counts one refusal of a verified subject.
pub fn note_refusal(sub: &str, now: i64) {
    // One atomic read-modify-write per key: concurrent refusals are all counted.
    REFUSALS.entry_by_ref(sub).and_upsert_with(|e| (e.map_or(0, |e| e.value().0).saturating_add(1), now));
}

/// Counts a refused request of a verified identity (the gateway and forward-auth call
/// this for every refusal they answer). Only a rule's `403` counts (decision `deny`):
/// step-ups are the remedy, challenges ask for another credential, and errors
/// (unavailable dependencies) are not the caller's doing.
pub fn note_denial(r: &crate::refusal::Refusal, identity: Option<&Identity>) {
    let Some(id) = identity else { return };
    if r.decision() == crate::refusal::Decision::Deny {
        note_refusal(&id.sub, now_secs());
    }
}

/// Forgets a subject's refusals (a completed MFA sign-in answers them).
pub fn forgive(sub: &str) {
    REFUSALS.invalidate(sub);
}

/// The subject's refusal count and the time of the last, if it reached the threshold.
fn recent_refusals(sub: &str) -> Option<i64> {
    REFUSALS.get(sub).filter(|(n, _)| *n >= REFUSAL_THRESHOLD).map(|(_, at)| at)
}

/// Which signals fire for `id` making this request, and which its MFA covers.
pub fn assess(
    spec: &RiskSpec,
    key: Option<&device::DeviceKey>,
    id: &Identity,
    seen: &Observed<'_>,
    method: &str,
    path: &str,
) -> Signals {
    let mut s = Signals::default();
    let known_device = match (key, seen.device) {
        (Some(k), Some(cookie)) => k.verify(cookie, &id.sub, now_secs()),
        _ => false,
    };
    if !known_device {
        s.fire(Signal::NewDevice, id.mfa);
    }
    if let (Some(net), Some(ip)) = (seen.network, seen.client) {
        if !net.contains(&ip.to_canonical()) {
            s.fire(Signal::NetworkChange, false);
        }
    }
    if spec.sensitive.matches(method, path) {
        s.fire(Signal::SensitiveRequest, id.mfa);
    }
    if let Some(last) = recent_refusals(&id.sub) {
        let after = id.mfa && id.auth_time.is_some_and(|t| t > last);
        s.fire(Signal::RecentRefusals, after);
    }
    s
}

/// Counts the signals of one decision: each fired signal, and each uncovered one again
/// as a step-up when the request was answered with one.
pub fn count(s: Signals, stepped_up: bool) {
    if s.is_empty() {
        return;
    }
    let m = crate::metrics::metrics();
    for sig in s.fired() {
        m.risk_signals_total.with_label_values(&[sig.as_str()]).inc();
    }
    if stepped_up {
        for sig in s.uncovered() {
            m.risk_stepups_total.with_label_values(&[sig.as_str()]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fire_from_the_threshold_and_mfa_after_them_covers() {
        let spec = RiskSpec { sensitive: Sensitive { methods: vec![], paths: None } };
        let key = device::DeviceKey::from_secret(&[7u8; 32]);
        let mut id = Identity::new("cu", crate::identity::ProviderKind::Auth0, crate::identity::Population::Customer, "risk-test-refusals".into());
        let now = now_secs();
        let cookie = key.issue(&id.sub, now);
        let seen = Observed { device: Some(&cookie), ..Observed::default() };
        for _ in 0..REFUSAL_THRESHOLD - 1 {
            note_refusal(&id.sub, now);
        }
        assert!(assess(&spec, Some(&key), &id, &seen, "GET", "/").is_empty());
        note_refusal(&id.sub, now);
        let s = assess(&spec, Some(&key), &id, &seen, "GET", "/");
        assert_eq!(s.names(), ["recent_refusals"]);
        assert!(s.step_up());
        id.mfa = true;
        id.auth_time = Some(now - 5);
        assert!(assess(&spec, Some(&key), &id, &seen, "GET", "/").step_up(), "MFA before the refusals does not cover them");
        id.auth_time = Some(now + 1);
        assert!(!assess(&spec, Some(&key), &id, &seen, "GET", "/").step_up(), "MFA after them does");
        forgive(&id.sub);
        assert!(assess(&spec, Some(&key), &id, &seen, "GET", "/").is_empty());
    }

    /// `require: { mfa: adaptive }` and `risk: low` as `crate::policy` decides them.
    #[test]
    fn policy_adaptive_asks_customers_only_when_a_signal_is_uncovered_and_the_workforce_always() {
        use crate::config::rules::{Criterion, Policy, Request, Rule};
        use crate::config::Requirements;
        use crate::identity::{Population, ProviderKind};
        let adaptive = crate::config::rules::lower_require(&[&Requirements { adaptive_mfa: true, ..Requirements::default() }]);
        let reason = |id: &Identity, signals: Signals| {
            let req = Request { signals, ..Request::now("GET", "/") };
            crate::policy::decide_request(id, &adaptive, None, &req, &[]).map(|_| ()).map_err(|r| r.reason())
        };
        let quiet = Signals::default();
        let mut device = Signals::default();
        device.fire(Signal::NewDevice, false);
        let mut covered = Signals::default();
        covered.fire(Signal::SensitiveRequest, true);

        let mut carol = Identity::new("cu", ProviderKind::Auth0, Population::Customer, "carol".into());
        assert_eq!(reason(&carol, quiet), Ok(()), "a customer without MFA, nothing unusual: admitted");
        assert_eq!(reason(&carol, covered), Ok(()), "a signal MFA already covers: admitted");
        assert_eq!(reason(&carol, device), Err("mfa_required"), "an uncovered signal: step-up");
        carol.mfa = true;
        assert_eq!(reason(&carol, quiet), Ok(()));

        let mut bob = Identity::new("wf", ProviderKind::Entra, Population::Workforce, "bob".into());
        assert_eq!(reason(&bob, quiet), Err("mfa_required"), "the workforce keeps mandatory MFA");
        bob.mfa = true;
        assert_eq!(reason(&bob, quiet), Ok(()));

        // `risk: low` in a policy: the same step-up when it does not hold.
        let p = Policy { allow: Some(vec![Rule::All(vec![Criterion::RiskLow])]), deny: vec![] };
        assert!(p.uses_risk());
        let carol = Identity::new("cu", ProviderKind::Auth0, Population::Customer, "carol".into());
        let decide = |signals| {
            let req = Request { signals, ..Request::now("GET", "/") };
            crate::policy::decide_request(&carol, &crate::config::rules::lower_require(&[]), Some(&p), &req, &[]).map(|_| ()).map_err(|r| r.reason())
        };
        assert_eq!(decide(quiet), Ok(()));
        assert_eq!(decide(covered), Ok(()));
        assert_eq!(decide(device), Err("mfa_required"));
        let not_risky = Policy { allow: None, deny: vec![Rule::Not(Box::new(Rule::All(vec![Criterion::RiskLow])))] };
        assert!(not_risky.uses_risk() && !Policy::default().uses_risk());
    }

    #[test]
    fn only_a_rules_403_counts_as_a_refusal() {
        use crate::refusal::Refusal;
        let id = Identity::new("cu", crate::identity::ProviderKind::Auth0, crate::identity::Population::Customer, "risk-test-denials".into());
        let not_counted = [
            Refusal::MfaRequired { acr_values: None },
            Refusal::MfaTooOld { max_age: 60 },
            Refusal::ProviderNotAllowed,
            Refusal::SessionStoreUnavailable,
        ];
        for r in &not_counted {
            for _ in 0..REFUSAL_THRESHOLD {
                note_denial(r, Some(&id));
            }
            assert!(recent_refusals(&id.sub).is_none(), "{r:?}");
        }
        for _ in 0..REFUSAL_THRESHOLD {
            note_denial(&Refusal::GroupRequired("admins".into()), Some(&id));
            note_denial(&Refusal::GroupRequired("admins".into()), None);
        }
        assert!(recent_refusals(&id.sub).is_some());
        forgive(&id.sub);
    }
}
