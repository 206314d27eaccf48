//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/providers`, the
//! access-review report (`GET /access`, read-only) and session revocation.
//!
//! Separate from the proxy listener so operators can keep it on a private address.
//! A private address is not enough on its own: a browser on the operator's machine
//! reaches `127.0.0.1:9090` too, and a page that rebinds its DNS name to that address
//! (DNS rebinding) could read `/access` or post `/sessions/revoke`. So every path but
//! the probes and metrics is guarded (`guard`): a bearer token (`admin.token_file` or
//! `admin.token`, compared in constant time), a `Host` that names this listener
//! (its address, loopback, `localhost` or `admin.hosts`) and no cross-site `Origin`. Without a
//! token the guarded paths are refused: an operator endpoint nobody configured a
//! secret for is not left open. Kubernetes probes and Prometheus call by pod IP, so
//! `/metrics`, `/healthz` and `/readyz` take neither token nor Host check (they
//! reveal no person's data).

use crate::metrics::metrics;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct Admin {
    pub state: Arc<ArcSwap<Runtime>>,
    pub role: Role,
}

/// Which paths a listener serves: with `admin.ops_listen` the guarded paths move to
/// their own listener (so only that address needs exposing to operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every path (no `ops_listen`).
    All,
    /// `/metrics`, `/healthz`, `/readyz` only.
    Probes,
    /// The guarded paths only (`admin.ops_listen`).
    Ops,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json(status: u16, v: &serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", serde_json::to_vec_pretty(v).unwrap_or_default())
}

/// Every admin path, the one method it answers (a `GET` path answers `HEAD` too), how
/// to call it (for the 404 text), and whether it is guarded.
const ENDPOINTS: &[(&str, http::Method, &str, bool)] = &[
    ("/metrics", http::Method::GET, "", false),
    ("/healthz", http::Method::GET, "", false),
    ("/readyz", http::Method::GET, "", false),
    ("/providers", http::Method::GET, "", true),
    ("/access", http::Method::GET, "?since=90d&format=json|csv", true),
    ("/sessions/revoke", http::Method::POST, "?sub=", true),
];

impl Role {
    fn serves(self, guarded: bool) -> bool {
        match self {
            Role::All => true,
            Role::Probes => !guarded,
            Role::Ops => guarded,
        }
    }
}

fn endpoint(path: &str, role: Role) -> Option<&'static (&'static str, http::Method, &'static str, bool)> {
    ENDPOINTS.iter().find(|(p, _, _, g)| *p == path && role.serves(*g))
}

fn not_found(role: Role) -> Response<Vec<u8>> {
    let paths: Vec<String> =
        ENDPOINTS.iter().filter(|e| role.serves(e.3)).map(|(p, m, hint, _)| format!("{m} {p}{hint}")).collect();
    let mut detail = format!("admin paths: {}", paths.join(", "));
    match role {
        Role::Probes => detail.push_str(" (the operator paths are on admin.ops_listen)"),
        Role::Ops => detail.push_str(" (the probes and metrics are on admin.listen)"),
        Role::All => {}
    }
    json(404, &serde_json::json!({"status": 404, "detail": detail}))
}

/// 404 for an unknown path, 405 (with `Allow`) for a known path asked with another
/// method: a probe or a script with a typo gets told what exists instead of a guess.
fn refuse(path: &str, method: &http::Method, role: Role) -> Option<Response<Vec<u8>>> {
    let Some((_, want, _, _)) = endpoint(path, role) else { return Some(not_found(role)) };
    if method == want || (*want == http::Method::GET && *method == http::Method::HEAD) {
        return None;
    }
    let allow = if *want == http::Method::GET { "GET, HEAD" } else { want.as_str() };
    let mut r = json(405, &serde_json::json!({"status": 405, "detail": format!("use {want} {path}")}));
    if let Ok(v) = http::HeaderValue::from_str(allow) {
        r.headers_mut().insert(http::header::ALLOW, v);
    }
    Some(r)
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = self.state.load_full();
        let path = session.req_header().uri.path().to_string();
        if let Some(r) = refuse(&path, &session.req_header().method, self.role) {
            return r;
        }
        if let Some((guarded_path, ..)) = endpoint(&path, self.role).filter(|e| e.3) {
            let local = session.server_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            if let Err(r) = guard::check(&rt.config.admin_guard, local, session.req_header()) {
                metrics().admin_refusals_total.with_label_values(&[r.reason()]).inc();
                tracing::warn!(reason = r.reason(), path = guarded_path, "admin request refused");
                return r.response();
            }
        }
        match path.as_str() {
            "/metrics" => {
                rt.registry.update_gauges();
                reply(200, "text/plain; version=0.0.4", metrics().render())
            }
            "/healthz" => json(200, &serde_json::json!({"status": "ok"})),
            "/readyz" => {
                let missing: Vec<&str> =
                    rt.registry.providers.iter().filter(|p| !p.has_keys()).map(|p| p.id()).collect();
                if missing.is_empty() {
                    json(200, &serde_json::json!({"status": "ready"}))
                } else {
                    json(503, &serde_json::json!({"status": "not ready", "providers_without_keys": missing}))
                }
            }
            "/providers" => json(200, &rt.registry.status_json()),
            "/sessions/revoke" => revoke(&rt, session).await,
            "/access" => access(&rt, session).await,
            _ => not_found(self.role), // unreachable: `refuse` answered every other path
        }
    }
}

/// `POST /sessions/revoke?sub=…`: ends every session of one normalised `sub` on every
/// replica sharing the store (the leaver case).
async fn revoke(rt: &Runtime, session: &mut ServerSession) -> Response<Vec<u8>> {
    let sub = session.req_header().uri.query().and_then(|q| crate::web::param(q, "sub")).unwrap_or_default();
    if sub.is_empty() {
        return json(400, &serde_json::json!({"status": 400, "detail": "the sub query parameter is required"}));
    }
    if rt.sessions.is_none() {
        return json(503, &serde_json::json!({"status": 503, "detail": "no session store"}));
    }
    // The leaver case: browser sessions, every broker token family of the person
    // (`offline_access` ones included: they outlive sessions otherwise) and the
    // person's bearer tokens issued so far, on every replica (`crate::revocation`).
    use crate::revocation::{revoke, Event, Source, Target};
    match revoke(rt, Target::Subject(sub.clone()), Source::Admin, Event::SessionRevoked).await {
        Ok(out) => {
            json(200, &serde_json::json!({"sub": sub, "revoked": out.sessions, "broker_token_families": out.broker_families}))
        }
        Err(e) => json(503, &serde_json::json!({"status": 503, "detail": e.to_string()})),
    }
}

/// `GET /access?since=90d&format=json|csv`: the access-review report (`crate::access`),
/// after writing this process's pending evidence into the store.
async fn access(rt: &Runtime, session: &mut ServerSession) -> Response<Vec<u8>> {
    let query = session.req_header().uri.query().unwrap_or("");
    let since = crate::web::param(query, "since").unwrap_or_else(|| "90d".into());
    let window = match crate::access::parse_since(&since) {
        Ok(w) => w,
        Err(e) => return json(400, &serde_json::json!({"status": 400, "detail": e.to_string()})),
    };
    let format = crate::web::param(query, "format").unwrap_or_else(|| "json".into());
    let Some(format) = crate::access::Format::parse(&format) else {
        return json(400, &serde_json::json!({"status": 400, "detail": "format must be json or csv"}));
    };
    let Some(sessions) = &rt.sessions else {
        return json(503, &serde_json::json!({"status": 503, "detail": "no session store"}));
    };
    let store = sessions.store.as_ref();
    let read = async {
        crate::access::flush(store).await?;
        Ok::<_, crate::session::StoreError>((store.scan_access().await?, crate::access::provisioned(store, &rt.config).await?))
    };
    let (records, people) = match read.await {
        Ok(r) => r,
        Err(e) => return json(503, &serde_json::json!({"status": 503, "detail": e.to_string()})),
    };
    let now = crate::providers::now_secs();
    let report = crate::access::build_report(&records, &rt.config, crate::access::window_start(now, window), now, &people);
    let content_type = match format {
        crate::access::Format::Json => "application/json",
        crate::access::Format::Csv => "text/csv; charset=utf-8",
    };
    reply(200, content_type, crate::access::render(&report, format).into_bytes())
}

/// The checks in front of the guarded admin paths, in order: the `Host` names this
/// listener, no foreign `Origin`, a token is configured, and the request carries it.
pub mod guard {
    use crate::config::AdminGuard;
    use http::Response;
    use pingora::http::RequestHeader;
    use std::net::IpAddr;

    /// Why a guarded admin request was refused. The reason strings are metric labels
    /// (`idfabric_admin_refusals_total{reason}`) and the problem+json `reason`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum AdminRefusal {
        /// The `Host` names neither this listener's address, `localhost` nor `admin.hosts`.
        HostNotAllowed,
        /// A browser sent the request from a page of another site.
        OriginNotAllowed,
        /// Neither `admin.token_file` nor `admin.token` is set: guarded paths stay closed.
        TokenNotConfigured,
        /// No `Authorization: Bearer` header.
        TokenMissing,
        /// A bearer token that is not the admin token (or more than one `Authorization`).
        TokenInvalid,
    }

    impl AdminRefusal {
        pub fn reason(self) -> &'static str {
            match self {
                AdminRefusal::HostNotAllowed => "admin_host_not_allowed",
                AdminRefusal::OriginNotAllowed => "admin_origin_not_allowed",
                AdminRefusal::TokenNotConfigured => "admin_token_not_configured",
                AdminRefusal::TokenMissing => "admin_token_missing",
                AdminRefusal::TokenInvalid => "admin_token_invalid",
            }
        }

        pub fn status(self) -> u16 {
            match self {
                // RFC 9110 §15.5.20: this server is not the one the request is meant for.
                AdminRefusal::HostNotAllowed => 421,
                AdminRefusal::OriginNotAllowed | AdminRefusal::TokenNotConfigured => 403,
                AdminRefusal::TokenMissing | AdminRefusal::TokenInvalid => 401,
            }
        }

        fn detail(self) -> &'static str {
            match self {
                AdminRefusal::HostNotAllowed => {
                    "the Host header does not name this admin listener (its address, localhost, or one of admin.hosts)"
                }
                AdminRefusal::OriginNotAllowed => "cross-site requests to the admin listener are refused (Origin is not an allowed host)",
                AdminRefusal::TokenNotConfigured => {
                    "this admin path needs a token and none is configured: set admin.token_file or admin.token in routes.yaml"
                }
                AdminRefusal::TokenMissing => "this admin path needs Authorization: Bearer <admin token>",
                AdminRefusal::TokenInvalid => "the bearer token is not the admin token",
            }
        }

        pub fn response(self) -> Response<Vec<u8>> {
            let body = serde_json::json!({
                "type": format!("urn:idfabric:problem:{}", self.reason()),
                "title": http::StatusCode::from_u16(self.status()).ok().and_then(|s| s.canonical_reason()).unwrap_or("Refused"),
                "status": self.status(),
                "detail": self.detail(),
                "reason": self.reason(),
            });
            let mut r = super::reply(self.status(), "application/problem+json", body.to_string().into_bytes());
            let challenge = match self {
                AdminRefusal::TokenMissing => Some("Bearer realm=\"idfabric-admin\""),
                AdminRefusal::TokenInvalid => Some("Bearer realm=\"idfabric-admin\", error=\"invalid_token\""),
                _ => None,
            };
            if let Some(c) = challenge {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static(c));
            }
            r
        }
    }

    /// Runs every check; `local` is the address the connection arrived on.
    pub fn check(g: &AdminGuard, local: Option<IpAddr>, req: &RequestHeader) -> Result<(), AdminRefusal> {
        // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2).
        let host = req.uri.authority().map(|a| a.as_str()).or(req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
        if !host.is_some_and(|h| host_allowed(h, local, &g.hosts)) {
            return Err(AdminRefusal::HostNotAllowed);
        }
        if let Some(origin) = req.headers.get(http::header::ORIGIN) {
            if !origin_allowed(origin.as_bytes(), local, &g.hosts) {
                return Err(AdminRefusal::OriginNotAllowed);
            }
        }
        let token = g.token.as_ref().ok_or(AdminRefusal::TokenNotConfigured)?;
        let mut auth = req.headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (auth.next(), auth.next()) else {
            return Err(if req.headers.contains_key(http::header::AUTHORIZATION) {
                AdminRefusal::TokenInvalid
            } else {
                AdminRefusal::TokenMissing
            });
        };
        let presented = value.to_str().ok().and_then(bearer).ok_or(AdminRefusal::TokenInvalid)?;
        if token.matches(presented) {
            Ok(())
        } else {
            Err(AdminRefusal::TokenInvalid)
        }
    }

    /// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
    fn bearer(v: &str) -> Option<&str> {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
    }

    /// Whether a `Host` value (`name`, `name:port`, `[v6]:port`) names this listener:
    /// the address the connection arrived on, `localhost` or a loopback address (a
    /// published container port is called as `127.0.0.1` but arrives on the container's
    /// own address), or one of `admin.hosts`. Any port: only the name matters for
    /// rebinding, which needs a name the attacker controls.
    pub fn host_allowed(host: &str, local: Option<IpAddr>, extra: &[String]) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((ip, rest)) if rest.is_empty() || rest.strip_prefix(':').is_some_and(all_digits) => ip,
                _ => return false,
            },
            None => match host.rsplit_once(':') {
                Some((n, port)) if all_digits(port) => n,
                Some(_) => return false,
                None => host,
            },
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") || extra.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || Some(ip) == local,
            Err(_) => false,
        }
    }

    fn all_digits(s: &str) -> bool {
        !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
    }

    /// An `Origin` (RFC 6454 serialisation: `scheme://host[:port]`) whose host is allowed;
    /// `null` and anything unparsable are not.
    fn origin_allowed(origin: &[u8], local: Option<IpAddr>, extra: &[String]) -> bool {
        let Some(rest) = std::str::from_utf8(origin).ok().and_then(|o| o.strip_prefix("http://").or(o.strip_prefix("https://")))
        else {
            return false;
        };
        !rest.contains(['/', '?', '#', '@']) && host_allowed(rest, local, extra)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::config::AdminToken;

        const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

        fn req(headers: &[(&str, &str)]) -> RequestHeader {
            let mut r = RequestHeader::build("GET", b"/access", None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        }

        fn guard(token: Option<&str>) -> AdminGuard {
            AdminGuard {
                token: token.map(|t| AdminToken::new(t.to_string())),
                token_file: None,
                hosts: vec!["idfabric-admin.ops.svc".into()],
                ops_listen: None,
            }
        }

        #[test]
        fn hosts() {
            let extra = ["admin.internal".to_string()];
            for h in ["127.0.0.1", "127.0.0.1:9090", "localhost", "LOCALHOST:9090", "localhost.", "[::1]:9090", "[::1]", "admin.internal", "Admin.Internal:443"] {
                assert!(host_allowed(h, LOCAL, &extra), "{h}");
            }
            for h in ["", ":9090", "evil.example", "evil.example:9090", "127.0.0.1.nip.io", "localhost.evil.example", "10.0.0.1", "127.0.0.1:x", "[::1", "[::1]x", "127.0.0.1:9090:1", "admin.internal.evil"] {
                assert!(!host_allowed(h, LOCAL, &extra), "{h}");
            }
            // A listener on a pod IP answers to that IP (any port) but not to others.
            let pod = Some("10.1.2.3".parse().unwrap());
            assert!(host_allowed("10.1.2.3:9090", pod, &[]));
            assert!(!host_allowed("10.1.2.4:9090", pod, &[]));
            assert!(host_allowed("127.0.0.1:9190", pod, &[]), "a published port called on loopback");
        }

        #[test]
        fn checks_in_order() {
            let t = "s3cret-admin-token-0123";
            let ok = format!("Bearer {t}");
            assert_eq!(check(&guard(Some(t)), LOCAL, &req(&[("host", "127.0.0.1:9090"), ("authorization", &ok)])), Ok(()));
            assert_eq!(check(&guard(Some(t)), LOCAL, &req(&[("host", "localhost"), ("authorization", &format!("bearer {t}"))])), Ok(()));
            let cases: &[(&[(&str, &str)], AdminRefusal)] = &[
                (&[("authorization", &ok)], AdminRefusal::HostNotAllowed),
                (&[("host", "rebound.evil.example"), ("authorization", &ok)], AdminRefusal::HostNotAllowed),
                (&[("host", "localhost"), ("origin", "http://evil.example"), ("authorization", &ok)], AdminRefusal::OriginNotAllowed),
                (&[("host", "localhost"), ("origin", "null"), ("authorization", &ok)], AdminRefusal::OriginNotAllowed),
                (&[("host", "localhost"), ("origin", "http://localhost:9090/x"), ("authorization", &ok)], AdminRefusal::OriginNotAllowed),
                (&[("host", "localhost")], AdminRefusal::TokenMissing),
                (&[("host", "localhost"), ("authorization", "Bearer wrong-token-0000000000")], AdminRefusal::TokenInvalid),
                (&[("host", "localhost"), ("authorization", &format!("Basic {t}"))], AdminRefusal::TokenInvalid),
                (&[("host", "localhost"), ("authorization", "Bearer ")], AdminRefusal::TokenInvalid),
                (&[("host", "localhost"), ("authorization", &format!("Bearer {t}x"))], AdminRefusal::TokenInvalid),
                (&[("host", "localhost"), ("authorization", &ok), ("authorization", &ok)], AdminRefusal::TokenInvalid),
            ];
            for (headers, want) in cases {
                assert_eq!(check(&guard(Some(t)), LOCAL, &req(headers)), Err(*want), "{headers:?}");
            }
            // Same-site origins pass; no token configured fails closed even with a good Host.
            let same = req(&[("host", "localhost:9090"), ("origin", "http://localhost:9090"), ("authorization", &ok)]);
            assert_eq!(check(&guard(Some(t)), LOCAL, &same), Ok(()));
            assert_eq!(check(&guard(None), LOCAL, &same), Err(AdminRefusal::TokenNotConfigured));
            let r = AdminRefusal::TokenNotConfigured.response();
            assert_eq!(r.status(), 403);
            assert!(String::from_utf8_lossy(r.body()).contains("admin.token_file"));
            assert_eq!(AdminRefusal::TokenMissing.response().headers()["www-authenticate"], "Bearer realm=\"idfabric-admin\"");
            assert_eq!(AdminRefusal::HostNotAllowed.response().status(), 421);
        }

        #[test]
        fn the_token_never_shows_in_debug() {
            let g = guard(Some("s3cret-admin-token-0123"));
            assert!(!format!("{g:?}").contains("s3cret"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_paths() {
        let (get, head, post) = (http::Method::GET, http::Method::HEAD, http::Method::POST);
        let all = Role::All;
        assert!(refuse("/metrics", &get, all).is_none());
        assert!(refuse("/metrics", &head, all).is_none());
        assert!(refuse("/sessions/revoke", &post, all).is_none());
        let r = refuse("/metrics", &post, all).unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET, HEAD"));
        let r = refuse("/sessions/revoke", &get, all).unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "POST"));
        assert_eq!(refuse("/nope", &get, all).unwrap().status(), 404);
        // With `ops_listen`: probes on one listener, operator paths on the other.
        assert!(refuse("/metrics", &get, Role::Probes).is_none());
        assert_eq!(refuse("/access", &get, Role::Probes).unwrap().status(), 404);
        assert!(refuse("/access", &get, Role::Ops).is_none());
        assert_eq!(refuse("/healthz", &get, Role::Ops).unwrap().status(), 404);
    }

    #[test]
    fn windows_never_start_before_the_epoch() {
        let now = 1_800_000_000;
        assert_eq!(crate::access::window_start(now, std::time::Duration::from_secs(90 * 86_400)), now - 90 * 86_400);
        assert_eq!(crate::access::window_start(now, std::time::Duration::from_secs(u64::MAX)), 0);
        assert_eq!(crate::access::window_start(now, std::time::Duration::from_secs(now as u64 + 1)), 0);
    }
}
