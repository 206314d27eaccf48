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

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = self.state.load_full();
        match session.req_header().uri.path() {
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
            _ => json(404, &serde_json::json!({"status": 404, "detail": "admin paths: /metrics /healthz /readyz /providers /access?since=90d&format=json|csv, POST /sessions/revoke?sub="})),
        }
    }
}

/// `POST /sessions/revoke?sub=…`: ends every session of one normalised `sub` on every
/// replica sharing the store (the leaver case).
async fn revoke(rt: &Runtime, session: &mut ServerSession) -> Response<Vec<u8>> {
    if session.req_header().method != http::Method::POST {
        return json(405, &serde_json::json!({"status": 405, "detail": "use POST /sessions/revoke?sub=..."}));
    }
    let sub = session.req_header().uri.query().and_then(|q| crate::web::param(q, "sub")).unwrap_or_default();
    if sub.is_empty() {
        return json(400, &serde_json::json!({"status": 400, "detail": "the sub query parameter is required"}));
    }
    let Some(sessions) = &rt.sessions else {
        return json(503, &serde_json::json!({"status": 503, "detail": "no session store"}));
    };
    // The leaver case: browser sessions and every broker token family of the person,
    // `offline_access` ones included (they outlive sessions otherwise).
    let revoked = async { Ok::<_, crate::session::StoreError>((sessions.revoke_sub(&sub).await?, crate::broker::revoke_subject(rt, &sub).await?)) };
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
    if session.req_header().method != http::Method::GET {
        return json(405, &serde_json::json!({"status": 405, "detail": "use GET /access?since=90d&format=json|csv"}));
    }
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
    let report = crate::access::build_report(&records, &rt.config, now - window.as_secs() as i64, now);
    let content_type = match format {
        crate::access::Format::Json => "application/json",
        crate::access::Format::Csv => "text/csv; charset=utf-8",
    };
    reply(200, content_type, crate::access::render(&report, format).into_bytes())
}

