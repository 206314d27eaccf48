//! The request as the client made it, when idfabric runs behind a TLS-terminating
//! ingress or load balancer: the client's address, the scheme and the host it used.
//!
//! Behind a proxy the TCP connection says nothing about the client: the peer is the
//! proxy and the connection is plain HTTP. The proxy says what it saw in headers
//! (`Forwarded`, RFC 7239, or the de-facto `X-Forwarded-For/Proto/Host/Port`), and any
//! client can send the same headers. So they are believed only from a TCP peer inside
//! `server.trusted_proxies`; from anyone else they are ignored, and stripped before the
//! request goes upstream. `server.public_url` pins the scheme and host outright.
//!
//! The client is found the way nginx's `real_ip_recursive on` does
//! (<https://nginx.org/en/docs/http/ngx_http_realip_module.html>; Envoy's
//! `xff_num_trusted_hops` is the same walk with a hop count instead of addresses): walk
//! the chain from the right (each proxy appends the address it received the request
//! from), skip addresses of trusted proxies, and take the first untrusted one. An entry that is not an address (`unknown`, an obfuscated
//! `_name`, garbage) ends the walk: the client is then the nearest address known, the
//! last trusted hop. Everything left of the client came from the client and is dropped.
//!
//! Everything here is a pure function of (peer address, TLS, `Host`, headers, config):
//! no Pingora, no runtime, so the proxy, the built-in pages and forward-auth can all call
//! [`derive`], and the tests can feed it any header. Malformed input is ignored (the
//! connection's own facts stand), never a panic.
//!
//! Configuration types live here too ([`TrustedProxies`], [`PublicUrl`]) so that what
//! `config` accepts is exactly what this module reads.

use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED};
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::IpAddr;

/// Most hops walked in a forwarding chain; a longer run of trusted hops ends the walk
/// there (its leftmost address is then the client).
pub const MAX_HOPS: usize = 20;

/// `server.trusted_proxies`: the networks whose connections may speak for a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    /// One list entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address
    /// (`192.0.2.7`, `::1`). A CIDR with host bits set (`10.0.0.1/8`) is refused: it is
    /// ambiguous whether one host or the network was meant.
    pub fn parse_entry(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let net = match (s.parse::<IpNet>(), s.parse::<IpAddr>()) {
            (Ok(net), _) => {
                if net.trunc() != net {
                    return Err(format!("`{s}` has host bits set: write `{}` for the network, or the address alone", net.trunc()));
                }
                net
            }
            (_, Ok(ip)) => IpNet::from(ip),
            _ => return Err(format!("`{s}` is not an IP address or CIDR (examples: 10.0.0.0/8, 192.0.2.7, fd00::/8)")),
        };
        if let IpNet::V6(v6) = net {
            if v6.prefix_len() >= 96 && v6.network().to_ipv4_mapped().is_some() {
                return Err(format!("`{s}` is an IPv4-mapped IPv6 range: write it as IPv4 (peers are compared as IPv4)"));
            }
        }
        Ok(net)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` (IPv4-mapped IPv6 compared as IPv4) is inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// `server.public_url`: the external origin, pinned whatever the headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    https: bool,
    /// `host[:port]`, the port only when not the scheme's default.
    authority: String,
}

impl PublicUrl {
    /// An absolute `http` or `https` URL with a host and nothing after it but an
    /// optional `/`: no path, query, fragment or user info.
    pub fn parse(s: &str) -> Result<PublicUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not an absolute URL ({e})"))?;
        let https = match u.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("`{s}`: the scheme must be http or https, not `{other}`")),
        };
        let Some(host) = u.host_str().filter(|h| !h.is_empty()) else {
            return Err(format!("`{s}` names no host"));
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("`{s}` must not carry user info"));
        }
        if u.path() != "/" {
            return Err(format!("`{s}` must not have a path (idfabric's own paths sit at the root of the origin)"));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(format!("`{s}` must not have a query or fragment"));
        }
        // `url` already leaves out the scheme's default port.
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(PublicUrl { https, authority })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// The request as the client made it: what [`derive`] concluded. (The default, no
/// address over plain HTTP to no host, is only a placeholder before `derive` runs.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's address: the TCP peer, or behind trusted proxies the first
    /// untrusted hop (`None` on a Unix socket).
    pub client_ip: Option<IpAddr>,
    /// The client used https (TLS here, a trusted proxy's word, or `public_url`).
    pub https: bool,
    /// `host[:port]` the client addressed.
    pub authority: String,
    /// The TCP peer is inside `server.trusted_proxies`, so its forwarding headers were read.
    pub peer_trusted: bool,
    /// The TCP peer (IPv4-mapped addresses as IPv4).
    pub peer: Option<IpAddr>,
    /// The believed chain before the peer, client first (empty unless `peer_trusted`).
    via: Vec<IpAddr>,
}

impl Origin {
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The host without its port (IPv6 in brackets).
    pub fn host(&self) -> &str {
        split_port(&self.authority).0
    }

    /// The port the client connected to: the explicit one, else the scheme's default.
    pub fn port(&self) -> u16 {
        split_port(&self.authority).1.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority)
    }

    /// What the upstream receives in `X-Forwarded-For`: the believed chain, client
    /// first, then the TCP peer. `None` when there is no address at all (Unix socket).
    pub fn x_forwarded_for(&self) -> Option<String> {
        let mut out = String::new();
        for ip in self.via.iter().chain(self.peer.iter()) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&ip.to_string());
        }
        (!out.is_empty()).then_some(out)
    }

    /// The headers idfabric sets on the upstream request: `X-Forwarded-For` (when there
    /// is an address), `X-Forwarded-Proto`, `X-Forwarded-Host`, as ready header values:
    /// the scheme is a static value, a lone client address is formatted on the stack,
    /// so a request pays one copy of the host and one of the address.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&'static str, HeaderValue)> + '_ {
        let xff = match (self.via.as_slice(), self.peer) {
            ([], Some(ip)) => Some(ip_value(ip)),
            _ => self.x_forwarded_for().and_then(|v| HeaderValue::try_from(v).ok()),
        };
        let proto = HeaderValue::from_static(self.scheme());
        // `authority` came from a header value (or `public_url`), so it is one; the
        // same bytes are accepted as before (`from_bytes` is the check `insert_header`
        // applied to the `String` this used to be).
        let host = HeaderValue::from_bytes(self.authority.as_bytes()).ok();
        xff.map(|v| ("x-forwarded-for", v))
            .into_iter()
            .chain([("x-forwarded-proto", proto)])
            .chain(host.map(|v| ("x-forwarded-host", v)))
    }
}

/// One address as a header value, formatted without a temporary `String`.
fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    // The longest textual address (IPv6 with an embedded IPv4) is 45 bytes.
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    let _ = write!(w, "{ip}");
    let n = 48 - w.len();
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a request header carries a forwarding claim that only a trusted proxy may
/// make: `Forwarded`, any `X-Forwarded-*`, `X-Real-IP`. Removed from what the upstream
/// receives when the peer is not trusted.
pub fn is_forwarding_header(name: &str) -> bool {
    let n = name.as_bytes();
    const XF: &[u8] = b"x-forwarded-";
    name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
        || (n.len() > XF.len() && n[..XF.len()].eq_ignore_ascii_case(XF))
}

/// The request as the client made it. `peer` is the TCP peer, `tls` whether this
/// connection is TLS, `host` the request's authority as received (`Host` or the
/// absolute-form target).
///
/// Forwarding headers are read only when the peer is inside `trusted`. The
/// `X-Forwarded-*` family is read when the request has any of its four headers, else
/// `Forwarded`; a proxy must overwrite (or strip) the family it sets, as every common
/// ingress does for `X-Forwarded-*`. `public_url` then sets the scheme and host outright.
pub fn derive(
    peer: Option<IpAddr>,
    tls: bool,
    host: &str,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
    public_url: Option<&PublicUrl>,
) -> Origin {
    let peer = peer.map(|p| p.to_canonical());
    let peer_trusted = peer.is_some_and(|p| trusted.contains(p));
    let mut o = Origin { client_ip: peer, https: tls, authority: host.to_string(), peer_trusted, peer, via: Vec::new() };
    if peer_trusted {
        let claims = if X_FORWARDED.iter().any(|h| headers.contains_key(h)) {
            x_forwarded(headers, trusted)
        } else {
            forwarded(headers, trusted)
        };
        o.via = claims.via;
        if let Some(first) = o.via.first() {
            o.client_ip = Some(*first);
        }
        if let Some(https) = claims.https {
            o.https = https;
        }
        let authority = claims.host.as_deref().unwrap_or(host);
        if let Some(a) = normalise_authority(authority, claims.port, o.https) {
            o.authority = a;
        }
    }
    if let Some(p) = public_url {
        o.https = p.https;
        o.authority = p.authority.clone();
    }
    o
}

// Looked up as `HeaderName`s: a `&str` name is parsed and validated on every lookup.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED: [HeaderName; 4] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, X_FORWARDED_PORT];

/// What trusted headers said.
#[derive(Debug, Default)]
struct Claims {
    /// The believed chain before the peer, client first.
    via: Vec<IpAddr>,
    https: Option<bool>,
    host: Option<String>,
    port: Option<u16>,
}

/// Every value of a list header, rightmost first, across its lines (RFC 9110 §5.3: the
/// lines are one comma-separated list, in order). A line that is not visible ASCII is
/// one unreadable entry (`None`).
fn list_from_right<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<Option<&'a str>> {
    let mut out = Vec::new();
    for line in headers.get_all(name) {
        match line.to_str() {
            Ok(l) => out.extend(l.split(',').map(|e| Some(e.trim()))),
            Err(_) => out.push(None),
        }
    }
    out.reverse();
    out
}

/// The rightmost value of a single-valued header that some proxies append to instead of
/// overwrite: the one the nearest (trusted) proxy wrote. Anything left of it may be
/// the client's.
fn rightmost<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    list_from_right(headers, name).into_iter().next().flatten().filter(|v| !v.is_empty())
}

/// `X-Forwarded-For` walked from the right; `X-Forwarded-Proto/Host/Port` from the
/// nearest proxy (their rightmost value).
fn x_forwarded(headers: &HeaderMap, trusted: &TrustedProxies) -> Claims {
    let mut via = Vec::new();
    for entry in list_from_right(headers, &X_FORWARDED_FOR) {
        let Some(ip) = entry.and_then(xff_address) else { break };
        via.push(ip);
        if !trusted.contains(ip) || via.len() >= MAX_HOPS {
            break;
        }
    }
    via.reverse();
    Claims {
        via,
        https: rightmost(headers, &X_FORWARDED_PROTO).and_then(proto),
        host: rightmost(headers, &X_FORWARDED_HOST).and_then(valid_authority).map(str::to_string),
        port: rightmost(headers, &X_FORWARDED_PORT).and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0),
    }
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.1:5000`,
/// `[2001:db8::1]:5000`), as proxies write it.
fn xff_address(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse::<std::net::Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical())
}

fn proto(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("https") {
        Some(true)
    } else if s.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

/// A `Host`-syntax value (`host[:port]`, RFC 9110 §7.2) whose host is a DNS name or an
/// IP address (no user info, no other characters URI syntax would allow), or `None`.
/// The value ends up in redirect URLs and pages, so nothing else is accepted.
fn valid_authority(s: &str) -> Option<&str> {
    let a = s.parse::<http::uri::Authority>().ok()?;
    let host = a.host();
    let name_ok = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
    };
    let port_ok = a.as_str().len() == host.len() || a.port_u16().is_some_and(|p| p != 0);
    (name_ok && port_ok && !s.contains('@')).then_some(s)
}

/// `host[:port]` with `port` replacing the authority's own, and the scheme's default
/// port left out.
fn normalise_authority(authority: &str, port: Option<u16>, https: bool) -> Option<String> {
    let a = authority.parse::<http::uri::Authority>().ok()?;
    let port = port.or(a.port_u16());
    Some(match port {
        Some(p) if p != if https { 443 } else { 80 } => format!("{}:{p}", a.host()),
        _ => a.host().to_string(),
    })
}

/// `host[:port]` split at the port (IPv6 hosts keep their brackets).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.starts_with('[') || h.ends_with(']')) => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

// === RFC 7239 `Forwarded` ===

/// One `forwarded-element`'s parameters (names as sent; compared case-insensitively).
type Params<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// `Forwarded` walked from the right by `for=`. The element the walk ends on was
/// written by a trusted proxy (the one whose client it names), so its `proto=` and
/// `host=` are what the client used. Elements are parsed only as far as the walk goes.
fn forwarded(headers: &HeaderMap, trusted: &TrustedProxies) -> Claims {
    // `None`: a line that is not visible ASCII.
    let mut elements: Vec<Option<&str>> = Vec::new();
    for line in headers.get_all(&FORWARDED) {
        match line.to_str() {
            Ok(l) => elements.extend(split_outside_quotes(l, b',').into_iter().map(Some)),
            Err(_) => elements.push(None),
        }
    }
    let mut via = Vec::new();
    let mut last: Option<Params<'_>> = None;
    for e in elements.into_iter().rev() {
        let Some(params) = e.and_then(parse_element) else { break };
        let ip = param(&params, "for").and_then(node_address);
        last = Some(params);
        let Some(ip) = ip else { break };
        via.push(ip);
        if !trusted.contains(ip) || via.len() >= MAX_HOPS {
            break;
        }
    }
    via.reverse();
    let (https, host) = match &last {
        Some(p) => (param(p, "proto").and_then(proto), param(p, "host").and_then(valid_authority).map(str::to_string)),
        None => (None, None),
    };
    Claims { via, https, host, port: None }
}

fn param<'a>(params: &'a Params<'_>, name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
}

/// Splits at `sep` outside `"…"` (a backslash escapes the next byte inside quotes).
/// The separators and quotes are ASCII, so every cut is at a character boundary.
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// `forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )`,
/// `forwarded-pair = token "=" value`, `value = token / quoted-string`; a parameter
/// may not repeat within an element (RFC 7239 §4). `None` when the element does not
/// follow the grammar.
fn parse_element(e: &str) -> Option<Params<'_>> {
    let mut params: Params<'_> = Vec::new();
    for pair in split_outside_quotes(e, b';') {
        let pair = pair.trim_matches([' ', '\t']);
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        let value = if let Some(q) = value.strip_prefix('"') {
            unquote(q.strip_suffix('"')?)?
        } else if !value.is_empty() && value.bytes().all(is_tchar) {
            Cow::Borrowed(value)
        } else {
            return None;
        };
        if params.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            return None;
        }
        params.push((name, value));
    }
    Some(params)
}

/// The inside of a `quoted-string` (RFC 9110 §5.6.4) without its escapes, or `None`
/// when a quote is left unescaped or an escape dangles.
fn unquote(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['\\', '"']) {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(Cow::Owned(out))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `node` (RFC 7239 §6): `IPv4[:port]` or `"[IPv6]"[:port]`. `unknown` and
/// obfuscated identifiers (`_hidden`) name no address: `None`.
fn node_address(node: &str) -> Option<IpAddr> {
    let (name, port) = if let Some(rest) = node.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            a => Some(a.strip_prefix(':')?),
        };
        (IpAddr::V6(v6.parse().ok()?), port)
    } else {
        let (name, port) = match node.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (node, None),
        };
        (IpAddr::V4(name.parse().ok()?), port)
    };
    match port {
        None => {}
        Some(p) if p.len() <= 5 && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {}
        Some(p) if p.len() > 1 && p.starts_with('_') && p[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) => {}
        Some(_) => return None,
    }
    Some(name.to_canonical())
}

#[cfg(test)]
#[path = "forwarded/tests.rs"]
mod tests;
