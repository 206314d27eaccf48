//! Upstreams that change and the protocols that cross the gateway, against the real
//! binary and real servers: `https://` upstreams verified against a route's `ca_file`
//! (SNI checked) with `upstream_host`; `host:port` names resolved while serving (and
//! one that never resolves); `timeouts` (504) and refused connections (502); WebSocket
//! upgrades and gRPC (HTTP/2 over TLS from the client, h2c or h2 over TLS to the
//! upstream, trailers)
//! through authenticated routes; the TLS listener's certificate reloaded on a
//! cert-manager style symlink swap and on SIGHUP without dropping open connections.
//!
//! Each test starts its own gateway and the upstream servers it needs, in-process:
//! an HTTPS echo (tokio-rustls), a WebSocket echo (tokio-tungstenite), a gRPC-style
//! HTTP/2 echo (`h2`, cleartext or TLS), and a TCP server that never answers.

use crate::common;
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// --- certificates ------------------------------------------------------------------------

/// A certificate and its key, PEM.
struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn self_signed(cn: &str) -> Pair {
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Pair { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
}

/// A test CA and a `localhost` certificate it signed: (CA PEM, leaf).
fn ca_and_leaf() -> (String, Pair) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "idfabric upstream test CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &*ca).unwrap();
    (ca.pem(), Pair { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any server certificate: the tests read which one was served.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the gateway's HTTPS listener offering `alpn`.
async fn tls_connect(port: u16, alpn: &[u8]) -> ClientTls {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(c)).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// The leaf certificate a TLS connection was served (DER).
fn served_cert(tls: &ClientTls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).unwrap_or_default()
}

// --- HTTP/1.1 by hand, for keep-alive over one connection ---------------------------------

/// Sends `GET path` with `Host: host` on `stream` and reads one response: (status, body).
async fn h1_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, host: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

// --- upstream servers -------------------------------------------------------------------------

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// An HTTPS upstream answering every request with JSON naming the SNI it was sent, the
/// `Host` header and the path; keep-alive.
async fn https_echo(pair: &Pair) -> u16 {
    let certs = vec![CertificateDer::from(pair.der.clone())];
    let key = {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap()
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let (l, port) = listener().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                let mut r = BufReader::new(tls);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut host = String::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("host") {
                                host = v.trim().to_string();
                            }
                        }
                    }
                    let body = serde_json::json!({ "sni": sni, "host": host, "path": path }).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A server that accepts connections and never writes (nor completes a TLS handshake).
async fn silent() -> u16 {
    let (l, port) = listener().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = l.accept().await {
            held.push(tcp);
        }
    });
    port
}

/// A WebSocket echo: first sends `sub=<X-Identity-Sub it received>`, then echoes every
/// text and binary message. Counts the TCP connections that reach it.
async fn ws_echo(accepted: Arc<AtomicUsize>) -> u16 {
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::Message;
    let (l, port) = listener().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let sub = Arc::new(Mutex::new(String::new()));
                let seen = sub.clone();
                let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                    let v = req.headers().get("x-identity-sub").and_then(|v| v.to_str().ok()).unwrap_or("");
                    *seen.lock().unwrap() = v.to_string();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
                let hello = format!("sub={}", sub.lock().unwrap());
                if ws.send(Message::text(hello)).await.is_err() {
                    return;
                }
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    } else if m.is_close() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A gRPC-style echo over HTTP/2: answers `application/grpc` with the request body,
/// `x-seen-sub` (the identity header it received) and the trailers `grpc-status: 0`,
/// `grpc-message: echoed`. Cleartext with prior knowledge (h2c) without `tls`, else TLS
/// with ALPN `h2` only. Counts requests.
async fn h2_echo(requests: Arc<AtomicUsize>, tls: Option<&Pair>) -> u16 {
    let acceptor = tls.map(|pair| {
        let key = {
            use rustls::pki_types::pem::PemObject;
            PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap()
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(pair.der.clone())], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let (l, port) = listener().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let requests = requests.clone();
            match acceptor.clone() {
                None => drop(tokio::spawn(serve_h2(tcp, requests))),
                Some(a) => drop(tokio::spawn(async move {
                    if let Ok(tls) = a.accept(tcp).await {
                        serve_h2(tls, requests).await;
                    }
                })),
            }
        }
    });
    port
}

async fn serve_h2<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: T, requests: Arc<AtomicUsize>) {
    let Ok(mut conn) = h2::server::handshake(io).await else { return };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        requests.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let (parts, mut body) = req.into_parts();
            let mut data = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            let sub = parts.headers.get("x-identity-sub").cloned().unwrap_or(http::HeaderValue::from_static(""));
            let resp = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("x-seen-sub", sub)
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else { return };
            let _ = send.send_data(Bytes::from(data), false);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("echoed"));
            let _ = send.send_trailers(trailers);
        });
    }
}

// --- the gateway ---------------------------------------------------------------------------------

/// A test directory with the workforce dev provider `wf` and `routes` (list items),
/// plus `listen_https` (`None`: HTTP only) and `extra` top-level YAML.
fn env_with(routes: &str, https: Option<(u16, &str, &str)>, extra: &str) -> TestEnv {
    let env = TestEnv::new();
    env.write_dev_provider("wf", "workforce", "entra", "dev-idp-workforce.pem", "");
    let https = https.map_or(String::new(), |(port, cert, key)| format!(", https: {{ addr: 127.0.0.1:{port}, cert: {cert}, key: {key} }}"));
    let text = format!(
        "listen: {{ http: 127.0.0.1:{http}{https} }}\n{admin}\nproviders: [wf]\n{extra}routes:\n{routes}",
        http = env.http_port,
        admin = env.admin_line(),
    );
    env.write("routes.yaml", &text);
    env
}

async fn get(env: &TestEnv, host: &str, path: &str, token: Option<&str>) -> (u16, Value, Duration) {
    let started = Instant::now();
    let mut req = client().get(format!("{}{path}", env.proxy())).header("host", host);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

async fn metric(env: &TestEnv, series: &str) -> f64 {
    metric_value(&scrape_metrics(env).await, series)
}

async fn wait_log(gw: &Gateway, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log().contains(needle) {
        assert!(Instant::now() < deadline, "`{needle}` never logged:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- https:// upstreams, upstream_host -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_ca_file_with_the_host_as_sni() {
    let (ca, leaf) = ca_and_leaf();
    let port = https_echo(&leaf).await;
    let routes = format!(
        "  - {{ name: tls-ok, match: {{ host: tls.test }}, auth: bearer, upstream: [\"https://localhost:{port}\"], ca_file: certs/up-ca.pem, upstream_host: app.internal }}\n\
         \x20 - {{ name: tls-host, match: {{ host: tls-host.test }}, auth: none, upstream: [\"https://localhost:{port}\"], ca_file: certs/up-ca.pem }}\n\
         \x20 - {{ name: tls-roots, match: {{ host: tls-roots.test }}, auth: none, upstream: [\"https://localhost:{port}\"] }}\n\
         \x20 - {{ name: tls-name, match: {{ host: tls-name.test }}, auth: none, upstream: [\"https://127.0.0.1:{port}\"], ca_file: certs/up-ca.pem }}\n"
    );
    let env = env_with(&routes, None, "");
    env.write("certs/up-ca.pem", &ca);
    let _gw = Gateway::start(&env);
    let token = env.mint("wf", "alice", &[]);

    // Verified against the route's CA, SNI = the entry's host, Host rewritten.
    let (status, body, _) = get(&env, "tls.test", "/orders?id=1", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sni"], "localhost", "{body}");
    assert_eq!(body["host"], "app.internal", "{body}");
    assert_eq!(body["path"], "/orders?id=1", "{body}");
    // Without `upstream_host` the upstream gets the client's Host.
    let (status, body, _) = get(&env, "tls-host.test", "/", None).await;
    assert_eq!((status, body["host"].as_str()), (200, Some("tls-host.test")), "{body}");
    // Not signed by a system root; a name the certificate does not carry: refused.
    for host in ["tls-roots.test", "tls-name.test"] {
        let (status, body, _) = get(&env, host, "/", None).await;
        assert_eq!((status, body["reason"].as_str()), (502, Some("upstream_tls_failed")), "{host}: {body}");
    }
    // Unauthenticated: refused before the upstream.
    let (status, body, _) = get(&env, "tls.test", "/", None).await;
    assert_eq!(status, 401, "{body}");
}

#[test]
fn route_upstream_keys_are_validated_with_file_and_line() {
    let env = env_with(
        "  - name: bad\n    upstream: [\"ftp://x:21\", \"https://a.test/path\"]\n    upstream_host: \"a b\"\n    timeouts: { connect: soon, read: 1s }\n    ca_file: certs/missing.pem\n    upstream_protocol: h3\n",
        None,
        "",
    );
    let (code, out, err) = env.run(&["check", "--offline"]);
    let text = format!("{out}{err}");
    assert_ne!(code, 0, "{text}");
    for needle in [
        "routes.yaml:6: key `routes.upstream`",
        "routes.yaml:8: key `routes.timeouts.connect`",
        "has scheme `ftp`",
        "must not carry a path",
        "routes.upstream_host",
        "routes.timeouts.connect",
        "routes.ca_file",
        "cannot read",
        "`h3` is not one of http1, h2c, h2",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

// --- names, timeouts, connect failures -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_while_serving_and_failures_have_their_own_reason() {
    let echo = Echo::start();
    let slow = silent().await;
    let closed = closed_port();
    let routes = format!(
        "  - {{ name: named, match: {{ host: named.test }}, auth: none, upstream: [\"localhost:{echo}\"], resolve_every: 1s }}\n\
         \x20 - {{ name: unresolvable, match: {{ host: nowhere.test }}, auth: none, upstream: [\"no-such-upstream.invalid:80\"], timeouts: {{ connect: 2s }} }}\n\
         \x20 - {{ name: slow, match: {{ host: slow.test }}, auth: none, upstream: [\"127.0.0.1:{slow}\"], timeouts: {{ read: 1s }} }}\n\
         \x20 - {{ name: handshake, match: {{ host: handshake.test }}, auth: none, upstream: [\"https://127.0.0.1:{slow}\"], timeouts: {{ connect: 1s }} }}\n\
         \x20 - {{ name: closed, match: {{ host: closed.test }}, auth: none, upstream: [\"127.0.0.1:{closed}\"] }}\n",
        echo = echo.port,
    );
    let env = env_with(&routes, None, "");
    let gw = Gateway::start(&env);

    // `localhost` resolves (to ::1 and/or 127.0.0.1: an address that refuses is
    // skipped), and keeps working across re-resolutions.
    for i in 0..4 {
        let (status, body, _) = get(&env, "named.test", &format!("/n{i}"), None).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["app"], format!("echo-{}", echo.port));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    let before = metric(&env, "idfabric_upstream_errors_total{route=\"unresolvable\"}").await;
    let (status, body, _) = get(&env, "nowhere.test", "/", None).await;
    assert_eq!((status, body["reason"].as_str()), (502, Some("upstream_unresolved")), "{body}");
    assert_eq!(body["route"], "unresolvable");
    assert!(metric(&env, "idfabric_upstream_errors_total{route=\"unresolvable\"}").await >= before + 1.0);
    wait_log(&gw, "no-such-upstream.invalid").await;

    // A read that never comes: 504 after `timeouts.read`.
    let (status, body, took) = get(&env, "slow.test", "/", None).await;
    assert_eq!((status, body["reason"].as_str()), (504, Some("upstream_timeout")), "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A TLS handshake that never completes: 504 after `timeouts.connect`.
    let (status, body, took) = get(&env, "handshake.test", "/", None).await;
    assert_eq!((status, body["reason"].as_str()), (504, Some("upstream_timeout")), "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Nothing listening: 502.
    let (status, body, _) = get(&env, "closed.test", "/", None).await;
    assert_eq!((status, body["reason"].as_str()), (502, Some("upstream_unreachable")), "{body}");
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

// --- WebSocket -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_after_the_auth_decision() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let accepted = Arc::new(AtomicUsize::new(0));
    let ws = ws_echo(accepted.clone()).await;
    let routes = format!("  - {{ name: ws, match: {{ host: ws.test }}, auth: bearer, upstream: [127.0.0.1:{ws}] }}\n");
    let https = free_port();
    let env = env_with(&routes, Some((https, "certs/dev-tls.crt", "certs/dev-tls.key")), "");
    let _gw = Gateway::start(&env);
    let token = env.mint("wf", "alice", &[]);

    // Without a token: 401 from the gateway, nothing reaches the upstream.
    let tcp = TcpStream::connect(("127.0.0.1", env.http_port)).await.unwrap();
    match tokio_tungstenite::client_async("ws://ws.test/chat", tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("an unauthenticated upgrade must be refused: {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the refused upgrade reached the upstream");

    let mut req = "ws://ws.test/chat".into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tcp = TcpStream::connect(("127.0.0.1", env.http_port)).await.unwrap();
    let (mut conn, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = conn.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().starts_with("sub=wf:"), "identity headers reach the upstream: {hello:?}");
    for i in 0..3 {
        conn.send(Message::text(format!("ping {i}"))).await.unwrap();
        assert_eq!(conn.next().await.unwrap().unwrap().to_text().unwrap(), format!("ping {i}"));
    }
    conn.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap().into_data().as_ref(), &[0u8, 1, 2, 255]);
    conn.close(None).await.unwrap();

    // wss: the same over the TLS listener (ALPN http/1.1).
    let mut req = "wss://ws.test/chat".into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tls = tls_connect(https, b"http/1.1").await;
    let (mut conn, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert!(conn.next().await.unwrap().unwrap().to_text().unwrap().starts_with("sub=wf:"));
    conn.send(Message::text("over tls")).await.unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap().to_text().unwrap(), "over tls");
    conn.close(None).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

// --- gRPC: HTTP/2 over TLS to the gateway, h2c to the upstream ---------------------------------------

/// One gRPC-style unary call over `client`: (status, x-seen-sub, body, trailers).
async fn grpc_call(
    client: h2::client::SendRequest<Bytes>,
    host: &str,
    token: Option<&str>,
    payload: &[u8],
) -> (u16, String, Vec<u8>, Option<http::HeaderMap>) {
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("https://{host}/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    // A gRPC message: uncompressed flag, 4-byte length, payload.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    send.send_data(Bytes::from(frame), true).unwrap();
    let (parts, mut body) = resp.await.unwrap().into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap();
    let sub = parts.headers.get("x-seen-sub").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (parts.status.as_u16(), sub, data, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2_reaches_h2c_and_h2_upstreams_with_their_trailers() {
    let (h2c_calls, tls_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let h2c = h2_echo(h2c_calls.clone(), None).await;
    let (ca, leaf) = ca_and_leaf();
    let h2tls = h2_echo(tls_calls.clone(), Some(&leaf)).await;
    let https = free_port();
    let routes = format!(
        "  - {{ name: grpc, match: {{ host: grpc.test }}, auth: bearer, upstream: [127.0.0.1:{h2c}], upstream_protocol: h2c }}\n\
         \x20 - {{ name: grpc-tls, match: {{ host: grpc-tls.test }}, auth: bearer, upstream: [\"https://localhost:{h2tls}\"], ca_file: certs/up-ca.pem, upstream_protocol: h2 }}\n"
    );
    let env = env_with(&routes, Some((https, "certs/dev-tls.crt", "certs/dev-tls.key")), "");
    env.write("certs/up-ca.pem", &ca);
    let _gw = Gateway::start(&env);
    let token = env.mint("wf", "alice", &[]);

    let tls = tls_connect(https, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the listener offers h2");
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);

    for (host, calls) in [("grpc.test", &h2c_calls), ("grpc-tls.test", &tls_calls)] {
        // Unauthenticated: 401 before the upstream.
        let (status, _, _, _) = grpc_call(client.clone(), host, None, b"nope").await;
        assert_eq!(status, 401, "{host}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{host}: the refused call reached the upstream");

        // Two calls on the one client connection: body both ways, identity, trailers.
        for payload in [&b"hello"[..], &[7u8; 20_000][..]] {
            let (status, sub, data, trailers) = grpc_call(client.clone(), host, Some(&token), payload).await;
            assert_eq!(status, 200, "{host}");
            assert!(sub.starts_with("wf:"), "{host}: identity headers reach the upstream: {sub:?}");
            assert_eq!(&data[5..], payload, "{host}");
            let trailers = trailers.expect("gRPC trailers reach the client");
            assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{host}: {trailers:?}");
            assert_eq!(trailers.get("grpc-message").map(|v| v.as_bytes()), Some(&b"echoed"[..]), "{host}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{host}");
    }
}

// --- the listener's certificate ---------------------------------------------------------------------

/// Publishes a certificate pair the way a Kubernetes Secret volume does: the files in
/// `..<version>/`, `..data` swapped to it atomically, `tls.crt` and `tls.key` links
/// through `..data`.
fn publish(dir: &Path, version: &str, cert: &str, key: &str) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("tls.crt"), cert).unwrap();
    std::fs::write(v.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

/// Waits until a new TLS connection is served `want`.
async fn eventually_served(port: u16, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if served_cert(&tls_connect(port, b"http/1.1").await) == want {
            return;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_dropping_connections() {
    let echo = Echo::start();
    let (a, b, c) = (self_signed("cert-a"), self_signed("cert-b"), self_signed("cert-c"));
    let https = free_port();
    let routes = format!("  - {{ name: plain, match: {{ host: plain.test }}, auth: none, upstream: [{}] }}\n", echo.addr());
    let env = env_with(&routes, Some((https, "tls/tls.crt", "tls/tls.key")), "");
    let dir = env.path().join("tls");
    publish(&dir, "a", &a.cert, &a.key);
    let gw = Gateway::start(&env);

    let mut open = tls_connect(https, b"http/1.1").await;
    assert_eq!(served_cert(&open), a.der, "starts with A");
    assert_eq!(h1_get(&mut open, "plain.test", "/1").await.0, 200);

    // cert-manager renews: B is served to new connections, the open one keeps working.
    let renewed = Instant::now();
    publish(&dir, "b", &b.cert, &b.key);
    eventually_served(https, &b.der).await;
    eprintln!("renewed certificate served {} ms after the swap", renewed.elapsed().as_millis());
    wait_log(&gw, "TLS certificate reloaded").await;
    assert!(gw.log().contains("cert-b"), "the log names the new certificate:\n{}", gw.log());
    let (status, body) = h1_get(&mut open, "plain.test", "/2").await;
    assert_eq!(status, 200, "the keep-alive connection survives the renewal: {body}");

    // A broken renewal (C's certificate with B's key) is refused: B stays.
    publish(&dir, "c", &c.cert, &b.key);
    wait_log(&gw, "TLS certificate reload failed").await;
    assert_eq!(served_cert(&tls_connect(https, b"http/1.1").await), b.der, "B is kept");
    assert_eq!(h1_get(&mut open, "plain.test", "/3").await.0, 200);
    assert!(metric(&env, "idfabric_tls_cert_reloads_total{result=\"success\"}").await >= 1.0);
    assert!(metric(&env, "idfabric_tls_cert_reloads_total{result=\"failure\"}").await >= 1.0);
    assert!(!gw.log().contains("BEGIN PRIVATE KEY") && !gw.log().contains(&b.key[40..80]), "no key material in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_when_files_are_not_watched() {
    let echo = Echo::start();
    let (a, b) = (self_signed("cert-a"), self_signed("cert-b"));
    let https = free_port();
    let routes = format!("  - {{ name: plain, match: {{ host: plain.test }}, auth: none, upstream: [{}] }}\n", echo.addr());
    let env = env_with(&routes, Some((https, "certs/live.crt", "certs/live.key")), "");
    env.write("certs/live.crt", &a.cert);
    env.write("certs/live.key", &a.key);
    let gw = Gateway::start_args(&env, &["--no-watch"], &[], true);
    assert_eq!(served_cert(&tls_connect(https, b"http/1.1").await), a.der);

    env.write("certs/live.crt", &b.cert);
    env.write("certs/live.key", &b.key);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served_cert(&tls_connect(https, b"http/1.1").await), a.der, "no watch: A until SIGHUP");
    gw.signal("HUP");
    eventually_served(https, &b.der).await;
}
