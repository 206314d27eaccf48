//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/providers`, the
//! access-review report (`GET /access`, read-only) and session revocation.
//!
//! Separate from the proxy listener so operators can keep it on a private address.

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

/// Every admin path, the one method it answers (a `GET` path answers `HEAD` too), and
/// how to call it (for the 404 text).
const ENDPOINTS: &[(&str, http::Method, &str)] = &[
    ("/metrics", http::Method::GET, ""),
    ("/healthz", http::Method::GET, ""),
    ("/readyz", http::Method::GET, ""),
    ("/providers", http::Method::GET, ""),
    ("/access", http::Method::GET, "?since=90d&format=json|csv"),
    ("/sessions/revoke", http::Method::POST, "?sub="),
];

fn method_of(path: &str) -> Option<&'static http::Method> {
    ENDPOINTS.iter().find(|(p, _, _)| *p == path).map(|(_, m, _)| m)
}

fn not_found() -> Response<Vec<u8>> {
    let paths: Vec<String> = ENDPOINTS.iter().map(|(p, m, hint)| format!("{m} {p}{hint}")).collect();
    json(404, &serde_json::json!({"status": 404, "detail": format!("admin paths: {}", paths.join(", "))}))
}

/// 404 for an unknown path, 405 (with `Allow`) for a known path asked with another
/// method: a probe or a script with a typo gets told what exists instead of a guess.
fn refuse(path: &str, method: &http::Method) -> Option<Response<Vec<u8>>> {
    let Some(want) = method_of(path) else { return Some(not_found()) };
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
        if let Some(r) = refuse(&path, &session.req_header().method) {
            return r;
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
            _ => not_found(), // unreachable: `refuse` answered every other path
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
    let Some(sessions) = &rt.sessions else {
        return json(503, &serde_json::json!({"status": 503, "detail": "no session store"}));
    };
    // The leaver case: browser sessions and every broker token family of the person,
    // `offline_access` ones included (they outlive sessions otherwise).
    let revoked = async {
        Ok::<_, crate::session::StoreError>((
            sessions.revoke_sub(&sub).await?,
            crate::broker::revoke_subject(rt, &sub).await?,
        ))
    };
    match revoked.await {
        Ok((n, families)) => {
            tracing::info!(revoked = n, broker_families = families, "sessions revoked by admin");
            metrics().sessions_active.sub(n as i64);
            json(200, &serde_json::json!({"sub": sub, "revoked": n, "broker_token_families": families}))
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
        Err(e) => return json(400, &serde_json::json!({"status": 400, "detail": e})),
    };
    let format = crate::web::param(query, "format").unwrap_or_else(|| "json".into());
    let Some(format) = crate::access::Format::parse(&format) else {
        return json(400, &serde_json::json!({"status": 400, "detail": "format must be json or csv"}));
    };
    let Some(sessions) = &rt.sessions else {
        return json(503, &serde_json::json!({"status": 503, "detail": "no session store"}));
    };
    let store = sessions.store.as_ref();
    let records = match crate::access::flush(store).await {
        Ok(_) => store.scan_access().await,
        Err(e) => Err(e),
    };
    let records = match records {
        Ok(r) => r,
        Err(e) => return json(503, &serde_json::json!({"status": 503, "detail": e.to_string()})),
    };
    let now = crate::providers::now_secs();
    let report = crate::access::build_report(&records, &rt.config, crate::access::window_start(now, window), now);
    let content_type = match format {
        crate::access::Format::Json => "application/json",
        crate::access::Format::Csv => "text/csv; charset=utf-8",
    };
    reply(200, content_type, crate::access::render(&report, format).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_paths() {
        let (get, head, post) = (http::Method::GET, http::Method::HEAD, http::Method::POST);
        assert!(refuse("/metrics", &get).is_none());
        assert!(refuse("/metrics", &head).is_none());
        assert!(refuse("/sessions/revoke", &post).is_none());
        let r = refuse("/metrics", &post).unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET, HEAD"));
        let r = refuse("/sessions/revoke", &get).unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "POST"));
        assert_eq!(refuse("/nope", &get).unwrap().status(), 404);
    }

    #[test]
    fn windows_never_start_before_the_epoch() {
        let now = 1_800_000_000;
        assert_eq!(crate::access::window_start(now, std::time::Duration::from_secs(90 * 86_400)), now - 90 * 86_400);
        assert_eq!(crate::access::window_start(now, std::time::Duration::from_secs(u64::MAX)), 0);
        assert_eq!(crate::access::window_start(now, std::time::Duration::from_secs(now as u64 + 1)), 0);
    }
}
