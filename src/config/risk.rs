//! Adaptive MFA's vocabulary (`crate::risk` observes and decides): the signal names,
//! a request's set of signals, and a route's compiled settings. They live beside the
//! configuration that holds them, like the policy rules (`rules`), so the compiled
//! route and `risk: low` can name them without the configuration depending on the
//! request path.

use ipnet::IpNet;
use std::net::IpAddr;

/// One risk signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    NewDevice,
    NetworkChange,
    SensitiveRequest,
    RecentRefusals,
}

impl Signal {
    pub const ALL: [Signal; 4] = [Signal::NewDevice, Signal::NetworkChange, Signal::SensitiveRequest, Signal::RecentRefusals];

    /// The stable name: the `signal` label and the audit field's values.
    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::NewDevice => "new_device",
            Signal::NetworkChange => "network_change",
            Signal::SensitiveRequest => "sensitive_request",
            Signal::RecentRefusals => "recent_refusals",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The signals of one request: those that fired, and of those the ones the
/// credential's MFA does not cover (which ask for a step-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    fired: u8,
    uncovered: u8,
}

impl Signals {
    /// No signal fired (requests on routes that are not adaptive).
    pub const NONE: Signals = Signals { fired: 0, uncovered: 0 };

    /// Records that `s` fired, covered or not.
    pub fn fire(&mut self, s: Signal, covered: bool) {
        self.fired |= s.bit();
        if !covered {
            self.uncovered |= s.bit();
        }
    }

    /// No signal fired (or none was looked at).
    pub fn is_empty(self) -> bool {
        self.fired == 0
    }

    /// Some fired signal is not covered by the credential's MFA: a step-up is due.
    pub fn step_up(self) -> bool {
        self.uncovered != 0
    }

    /// The signals that fired, in [`Signal::ALL`] order.
    pub fn fired(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.fired & s.bit() != 0)
    }

    /// The fired signals not covered by MFA.
    pub fn uncovered(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.uncovered & s.bit() != 0)
    }

    /// The names of the fired signals (audit lines).
    pub fn names(self) -> Vec<&'static str> {
        self.fired().map(Signal::as_str).collect()
    }
}

/// What a route marks sensitive (`sensitive:`): a request is sensitive when its method
/// is listed or its path matches one of the globs.
#[derive(Debug, Clone)]
pub struct Sensitive {
    /// Upper-case method names.
    pub methods: Vec<String>,
    pub paths: Option<globset::GlobSet>,
}

/// The default `sensitive.methods`: the methods that change state (RFC 9110 §9.2.1:
/// everything but the safe methods; `OPTIONS` and `TRACE` are left out as they carry
/// no application change).
pub const DEFAULT_SENSITIVE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

impl Default for Sensitive {
    fn default() -> Sensitive {
        Sensitive { methods: DEFAULT_SENSITIVE_METHODS.iter().map(|m| m.to_string()).collect(), paths: None }
    }
}

impl Sensitive {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.methods.iter().any(|m| m == method) || self.paths.as_ref().is_some_and(|g| g.is_match(path))
    }
}

/// A route's adaptive settings, present when the route has `mfa: adaptive` somewhere
/// or a policy rule with `risk: low` (signals are only looked at then).
#[derive(Debug, Clone, Default)]
pub struct RiskSpec {
    pub sensitive: Sensitive,
}

/// The network a client address belongs to for `network_change`: its /24 (IPv4,
/// IPv4-mapped IPv6 included) or /48 (IPv6), a typical customer allocation, so a
/// DHCP renewal or privacy address rotation inside it does not fire.
pub fn network_of(ip: IpAddr) -> IpNet {
    let ip = ip.to_canonical();
    let len = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_slash_24_and_slash_48() {
        assert_eq!(network_of("203.0.113.77".parse().unwrap()).to_string(), "203.0.113.0/24");
        assert_eq!(network_of("::ffff:203.0.113.77".parse().unwrap()).to_string(), "203.0.113.0/24");
        assert_eq!(network_of("2001:db8:aa:bb::1".parse().unwrap()).to_string(), "2001:db8:aa::/48");
        let net = network_of("198.51.100.1".parse().unwrap());
        assert!(net.contains(&"198.51.100.254".parse::<IpAddr>().unwrap()));
        assert!(!net.contains(&"198.51.101.1".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn signals_keep_fired_and_uncovered_apart() {
        let mut s = Signals::default();
        assert!(s.is_empty() && !s.step_up());
        s.fire(Signal::SensitiveRequest, true);
        assert!(!s.is_empty() && !s.step_up(), "covered by MFA");
        s.fire(Signal::NetworkChange, false);
        assert!(s.step_up());
        assert_eq!(s.names(), ["network_change", "sensitive_request"]);
        assert_eq!(s.uncovered().map(Signal::as_str).collect::<Vec<_>>(), ["network_change"]);
    }

    #[test]
    fn sensitive_defaults_to_state_changing_methods() {
        let s = Sensitive::default();
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(s.matches(m, "/"), "{m}");
        }
        for m in ["GET", "HEAD", "OPTIONS", "post"] {
            assert!(!s.matches(m, "/"), "{m}");
        }
    }

}
