//! A route's upstream entries and the keys that say how they are reached
//! (`upstream_host`, `timeouts`, `resolve_every`, `ca_file`, `upstream_protocol`).
//!
//! Entries are parsed with the WHATWG URL parser (`url`), the one browsers use, so a
//! host is read the way every other tool reads it (IPv6 brackets, punycode, case).
//! Names are not resolved here: a load must not block on DNS, and a name that does not
//! resolve yet is a request-time 502 (`upstream_unresolved`), not a refused
//! configuration. CA files are read and every certificate parsed now, so a bad file
//! is a load error with its line, never a failed handshake later.

use super::super::env::EnvString;
use super::super::error::Problems;
use super::super::raw;
use super::super::{Upstream, UpstreamOptions, UpstreamProtocol, UpstreamTarget};
use std::path::Path;
use std::sync::Arc;

/// Every entry of one `upstream:` list; each bad entry is reported.
pub(super) fn list(list: &[EnvString], anchor: Option<&str>, key: &str, p: &mut Problems) -> Vec<Upstream> {
    if list.is_empty() {
        p.at(anchor, key, "must list at least one address");
    }
    list.iter()
        .filter_map(|u| match entry(u) {
            Ok(up) => Some(up),
            Err(why) => {
                p.at(anchor, key, format!("`{}` {why}", &**u));
                None
            }
        })
        .collect()
}

/// `host:port`, `http://host[:port]` or `https://host[:port]` (default ports 80, 443).
fn entry(value: &str) -> Result<Upstream, String> {
    let url_text = match value.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => value.to_string(),
        Some((scheme, _)) => return Err(format!("has scheme `{scheme}`: upstreams are host:port, http:// or https://")),
        None => format!("http://{value}"),
    };
    let url = url::Url::parse(&url_text).map_err(|e| format!("is not host:port or an http(s):// URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user information".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a path, query or fragment (the request's own path is forwarded)".into());
    }
    let tls = url.scheme() == "https";
    let port = url.port_or_known_default().ok_or("has no port")?;
    let (target, sni) = match url.host() {
        Some(url::Host::Ipv4(ip)) => (UpstreamTarget::Addr((ip, port).into()), ip.to_string()),
        Some(url::Host::Ipv6(ip)) => (UpstreamTarget::Addr((ip, port).into()), ip.to_string()),
        Some(url::Host::Domain(d)) if !d.is_empty() => {
            let host = d.trim_end_matches('.').to_string();
            (UpstreamTarget::Name { host: host.clone(), port }, host)
        }
        _ => return Err("has no host".into()),
    };
    Ok(Upstream { target, tls, sni, label: value.to_string() })
}

/// The route's upstream options, checked against its entries (`entries`: every entry
/// of the route, default and per population).
pub(super) fn options(r: &raw::Route, entries: &[&Upstream], anchor: Option<&str>, p: &mut Problems) -> UpstreamOptions {
    let d = UpstreamOptions::default();
    let timeouts = r.timeouts.as_ref();
    let connect = super::duration(p, anchor, "routes.timeouts.connect", timeouts.and_then(|t| t.connect.as_ref()), d.connect_timeout);
    let read = timeouts.and_then(|t| t.read.as_ref()).map(|v| super::duration(p, anchor, "routes.timeouts.read", Some(v), d.connect_timeout));
    let resolve_every = super::duration(p, anchor, "routes.resolve_every", r.resolve_every.as_ref(), d.resolve_every);
    let any_tls = entries.iter().any(|u| u.tls);
    let protocol = match r.upstream_protocol.as_deref() {
        None | Some("http1") => UpstreamProtocol::Http1,
        Some("h2c") => {
            if any_tls {
                p.at(anchor, "routes.upstream_protocol", "`h2c` is cleartext HTTP/2: use `h2` for https:// upstreams");
            }
            UpstreamProtocol::H2c
        }
        Some("h2") => {
            if entries.iter().any(|u| !u.tls) {
                p.at(anchor, "routes.upstream_protocol", "`h2` is HTTP/2 over TLS: use `h2c` for host:port and http:// upstreams");
            }
            UpstreamProtocol::H2
        }
        Some(v) => {
            p.at(anchor, "routes.upstream_protocol", format!("`{v}` is not one of http1, h2c, h2"));
            UpstreamProtocol::Http1
        }
    };
    let (ca_file, ca_certs) = match r.ca_file.as_deref() {
        None => (None, None),
        Some(f) => {
            let path = p.file.parent().unwrap_or(Path::new("")).join(f);
            if !any_tls {
                p.at(anchor, "routes.ca_file", "applies to https:// upstreams only; this route has none");
            }
            let certs = match ca_certificates(&path) {
                Ok(c) => Some(Arc::new(c)),
                Err(why) => {
                    p.at(anchor, "routes.ca_file", format!("{}: {why}", path.display()));
                    None
                }
            };
            (Some(path), certs)
        }
    };
    UpstreamOptions {
        host_header: r.upstream_host.as_deref().and_then(|h| host_header(h, anchor, p)),
        connect_timeout: connect,
        read_timeout: read,
        resolve_every,
        ca_file,
        ca_certs,
        protocol,
    }
}

/// `upstream_host`: an authority (`name` or `name:port`) fit for a `Host` header.
fn host_header(value: &str, anchor: Option<&str>, p: &mut Problems) -> Option<String> {
    let ok = !value.is_empty()
        && !value.contains(['@', '/', '?', '#'])
        && value.parse::<http::uri::Authority>().is_ok()
        && http::HeaderValue::from_str(value).is_ok();
    if ok {
        Some(value.to_string())
    } else {
        p.at(anchor, "routes.upstream_host", format!("`{value}` is not a host name (optionally with :port)"));
        None
    }
}

/// The certificates of a PEM CA file (DER), each one parsed as X.509 and accepted as a
/// trust anchor; anything else in the file is refused.
fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let blocks = pem::parse_many(&text).map_err(|e| format!("not PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    let mut out = Vec::with_capacity(blocks.len());
    let mut anchors = rustls::RootCertStore::empty();
    for (i, b) in blocks.iter().enumerate() {
        if b.tag() != "CERTIFICATE" {
            return Err(format!("block {} is `{}`, not a CERTIFICATE", i + 1, b.tag()));
        }
        use x509_parser::prelude::FromDer;
        x509_parser::certificate::X509Certificate::from_der(b.contents())
            .map_err(|e| format!("certificate {} is not X.509: {e}", i + 1))?;
        anchors
            .add(rustls::pki_types::CertificateDer::from(b.contents()))
            .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", i + 1))?;
        out.push(b.contents().to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let e = entry("127.0.0.1:3000").unwrap();
        assert_eq!((e.target, e.tls), (UpstreamTarget::Addr("127.0.0.1:3000".parse().unwrap()), false));
        let e = entry("https://API.Example.com").unwrap();
        assert_eq!(e.target, UpstreamTarget::Name { host: "api.example.com".into(), port: 443 });
        assert_eq!((e.tls, e.sni.as_str()), (true, "api.example.com"));
        let e = entry("https://[::1]:8443/").unwrap();
        assert_eq!((e.target, e.sni.as_str()), (UpstreamTarget::Addr("[::1]:8443".parse().unwrap()), "::1"));
        let e = entry("localhost:8080").unwrap();
        assert_eq!(e.target, UpstreamTarget::Name { host: "localhost".into(), port: 8080 });
        assert_eq!(entry("http://app.internal").unwrap().target, UpstreamTarget::Name { host: "app.internal".into(), port: 80 });
        for (bad, why) in [
            ("ftp://x:21", "scheme"),
            ("https://u:p@x", "user information"),
            ("https://x/api", "path"),
            ("x:99999", "not host:port"),
            ("https://", "not host:port"),
            ("http://x?y=1", "path, query"),
        ] {
            let e = entry(bad).map(|u| u.label).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
