//! `session.cookie_domain` and `session.auth_host`: one sign-in for several hosts.
//!
//! Checked against the routes, because a cookie domain only works for the hosts under
//! it: a browser drops a `Set-Cookie` whose `Domain` does not cover the host that sent
//! it (RFC 6265bis §5.7), so a route outside the domain would loop through sign-in
//! forever. Refusing the file says so at load instead.

use super::super::error::Problems;
use super::super::{AuthMode, HostMatch, RouteSpec};

/// A host name as a cookie domain or `auth_host` may name it: DNS labels of letters,
/// digits and `-`, at least two labels (never a bare top-level name), not an address.
fn host_name(h: &str) -> bool {
    let labels: Vec<&str> = h.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `host` (a route's exact host, or a wildcard's `.suffix`) lies under `domain`.
fn under(host: &str, domain: &str) -> bool {
    let host = host.trim_start_matches('.');
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// `session.cookie_domain`: lowercase, a leading dot dropped (RFC 6265 ignores it), and
/// every route that can use a session must be on a host under it.
pub fn cookie_domain(raw: Option<&str>, routes: &[RouteSpec], p: &mut Problems) -> Option<String> {
    let d = raw?.trim().trim_start_matches('.').to_ascii_lowercase();
    if !host_name(&d) {
        p.at(None, "session.cookie_domain", format!("`{d}` is not a domain name of at least two labels (e.g. example.com)"));
        return None;
    }
    for r in routes.iter().filter(|r| !matches!(r.auth, AuthMode::None | AuthMode::Bearer)) {
        let anchor = format!("name: {}", r.name);
        match &r.host {
            HostMatch::Exact(h) | HostMatch::Wildcard(h) if under(h, &d) => {}
            HostMatch::Exact(h) | HostMatch::Wildcard(h) => p.at(
                Some(anchor.as_str()),
                "session.cookie_domain",
                format!("route `{}` is on `{}`, which is not under cookie_domain `{d}`: browsers would drop its session cookie", r.name, h.trim_start_matches('.')),
            ),
            HostMatch::Any => p.at(
                Some(anchor.as_str()),
                "session.cookie_domain",
                format!("route `{}` matches any host, and a host outside cookie_domain `{d}` would never keep its session cookie: give it a `match.host` under `{d}`", r.name),
            ),
        }
    }
    Some(d)
}

/// `session.auth_host`: a host name (lowercase), optionally `:port`; never together
/// with `cookie_domain` (they are two answers to the same question).
pub fn auth_host(raw: Option<&str>, cookie_domain: Option<&str>, p: &mut Problems) -> Option<String> {
    let h = raw?.trim().to_ascii_lowercase();
    if cookie_domain.is_some() {
        p.at(None, "session.auth_host", "set either `cookie_domain` or `auth_host`, not both");
        return None;
    }
    let (name, port) = match h.rsplit_once(':') {
        Some((n, port)) => (n, Some(port)),
        None => (h.as_str(), None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_name(name) && name != "localhost" || !port_ok {
        p.at(None, "session.auth_host", format!("`{h}` is not a host name with an optional port (e.g. auth.example.com)"));
        return None;
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_under_a_domain() {
        assert!(under("app.example.com", "example.com"));
        assert!(under("example.com", "example.com"));
        assert!(under(".svc.example.com", "example.com"), "a wildcard's suffix");
        assert!(!under("badexample.com", "example.com"));
        assert!(!under("example.com.evil", "example.com"));
        assert!(host_name("example.com") && host_name("a-b.example.co.uk"));
        assert!(!host_name("com") && !host_name("10.0.0.1") && !host_name("-a.example.com") && !host_name("a..b"));
    }
}
