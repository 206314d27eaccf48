//! The Pingora peer for one upstream entry, from the route's upstream options, and the
//! reading of Pingora's connection errors as [`UpstreamFailure`]s.
//!
//! - Timeouts: `timeouts.connect` bounds the TCP connect and the whole connection
//!   (TLS handshake included); `timeouts.read` bounds each read of the response.
//! - `https://` entries: SNI and certificate name are the entry's host; the certificate
//!   is verified against the route's `ca_file` when set, else the system roots
//!   (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured). Connections verified against one set
//!   of CA certificates are never reused for a route with another (`group_key`).
//! - `upstream_protocol: h2c` speaks HTTP/2 with prior knowledge on cleartext; `h2`
//!   offers only `h2` in ALPN.

use crate::config::{Upstream, UpstreamOptions, UpstreamProtocol};
use crate::refusal::UpstreamFailure;
use crate::runtime::{CompiledRoute, Runtime};
use arc_swap::ArcSwapOption;
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::WrappedX509;
use pingora::{Error, ErrorSource, ErrorType};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long an idle upstream connection is kept for reuse.
const IDLE: Duration = Duration::from_secs(60);

/// Concurrent streams on one HTTP/2 upstream connection.
const H2_STREAMS: usize = 128;

/// The peer for entry `up` of a route at `addr` (the entry's address, or what its
/// name resolved to).
pub(super) fn http_peer(opts: &UpstreamOptions, up: &Upstream, addr: SocketAddr, ca: Option<RouteCa>) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, up.tls, up.sni.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(opts.connect_timeout);
    o.total_connection_timeout = Some(opts.connect_timeout);
    o.read_timeout = opts.read_timeout;
    o.idle_timeout = Some(IDLE);
    if matches!(opts.protocol, UpstreamProtocol::H2c | UpstreamProtocol::H2) {
        o.set_http_version(2, 2);
        o.max_h2_streams = H2_STREAMS;
    }
    if let Some(ca) = ca {
        o.ca = Some(ca.certs);
        peer.group_key = ca.group;
    }
    peer
}

/// The error `upstream_peer` returns when no entry's name resolves.
pub(super) fn unresolved(why: String) -> Box<Error> {
    Error::create(ErrorType::ConnectError, ErrorSource::Upstream, Some(why.into()), None)
}

/// What a Pingora error on the upstream side means for the client.
pub(super) fn classify(e: &Error) -> UpstreamFailure {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout => UpstreamFailure::Timeout,
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError | ConnectProxyFailure => {
            UpstreamFailure::Unreachable
        }
        TLSHandshakeFailure | TLSWantX509Lookup | InvalidCert | HandshakeError => UpstreamFailure::Tls,
        _ => UpstreamFailure::Failed,
    }
}

/// A route's `ca_file` certificates in the form Pingora's TLS connector takes, and the
/// connection-pool group of the connections verified against them (a digest of the
/// certificates: a changed file never reuses a connection the old one verified).
#[derive(Clone)]
pub(super) struct RouteCa {
    certs: Arc<CaType>,
    group: u64,
}

/// Each route's [`RouteCa`], built once per runtime (the configuration layer knows no
/// Pingora type).
#[derive(Default)]
pub(super) struct CaCache {
    built: ArcSwapOption<(u64, Vec<Option<RouteCa>>)>,
}

impl CaCache {
    pub(super) fn for_route(&self, rt: &Runtime, route: &CompiledRoute) -> Option<RouteCa> {
        route.spec.upstream.ca_certs.as_ref()?;
        if let Some(b) = self.built.load().as_ref().filter(|b| b.0 == rt.generation) {
            return b.1.get(route.index as usize).cloned().flatten();
        }
        let table: Vec<Option<RouteCa>> =
            rt.routes.routes.iter().map(|r| r.spec.upstream.ca_certs.as_deref().map(|c| wrap(c))).collect();
        let ca = table.get(route.index as usize).cloned().flatten();
        self.built.store(Some(Arc::new((rt.generation, table))));
        ca
    }
}

/// DER certificates (checked with the same parser when the configuration was loaded)
/// as Pingora's CA list. A certificate that would not parse is left out, never a panic:
/// an empty list fails every handshake (fail closed).
fn wrap(ders: &[Vec<u8>]) -> RouteCa {
    use x509_parser::prelude::FromDer;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ders.hash(&mut h);
    let certs: Vec<WrappedX509> = ders
        .iter()
        .filter_map(|d| {
            WrappedX509::try_new(d.clone(), |raw| x509_parser::certificate::X509Certificate::from_der(raw).map(|(_, c)| c)).ok()
        })
        .collect();
    RouteCa { certs: Arc::from(certs), group: h.finish() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamTarget;

    #[test]
    fn pingora_errors_are_read_as_failures() {
        for (t, want) in [
            (ErrorType::ConnectTimedout, UpstreamFailure::Timeout),
            (ErrorType::ReadTimedout, UpstreamFailure::Timeout),
            (ErrorType::TLSHandshakeTimedout, UpstreamFailure::Timeout),
            (ErrorType::ConnectRefused, UpstreamFailure::Unreachable),
            (ErrorType::ConnectNoRoute, UpstreamFailure::Unreachable),
            (ErrorType::TLSHandshakeFailure, UpstreamFailure::Tls),
            (ErrorType::InvalidCert, UpstreamFailure::Tls),
            (ErrorType::ConnectionClosed, UpstreamFailure::Failed),
            (ErrorType::InvalidHTTPHeader, UpstreamFailure::Failed),
        ] {
            assert_eq!(classify(&Error::new_up(t.clone())), want, "{t:?}");
        }
        assert_eq!(UpstreamFailure::Timeout.status(), 504);
        assert_eq!(UpstreamFailure::Unresolved.status(), 502);
    }

    #[test]
    fn route_options_reach_the_peer() {
        let up = Upstream {
            target: UpstreamTarget::Name { host: "api.internal".into(), port: 443 },
            tls: true,
            sni: "api.internal".into(),
            label: "https://api.internal".into(),
        };
        let opts = UpstreamOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Some(Duration::from_secs(30)),
            protocol: UpstreamProtocol::H2,
            ..Default::default()
        };
        let p = http_peer(&opts, &up, "10.0.0.7:443".parse().unwrap(), None);
        assert_eq!((p.sni.as_str(), p.is_tls()), ("api.internal", true));
        assert_eq!(p.options.connection_timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.options.total_connection_timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.options.read_timeout, Some(Duration::from_secs(30)));
        assert_eq!(p.options.alpn.get_min_http_version(), 2);
        let plain = http_peer(&UpstreamOptions::default(), &up, "10.0.0.7:80".parse().unwrap(), None);
        assert_eq!((plain.options.read_timeout, plain.options.alpn.get_min_http_version()), (None, 1));
    }
}
