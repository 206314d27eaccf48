//! `POST /.idfabric/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0 as a
//! relying party (https://openid.net/specs/openid-connect-backchannel-1_0.html §2.5-2.8).
//!
//! The provider posts a form with one `logout_token`. It is verified by the registry
//! (`providers::logout`), its `jti` is claimed once in the session store (a replayed
//! token is refused on every replica), then the upstream session (`sid`) or, without
//! one, the whole subject (`sub`) is revoked (`super::revoke`). The answer is 200 when
//! the token was good, whether or not a session matched (§2.8), and 400
//! `{"error":"invalid_request","error_description":…}` for anything else, both with
//! `Cache-Control: no-store`. Nothing changes on a refused token.

use super::{revoke, Event, Source, Target};
use crate::providers::logout::LogoutTokenError;
use crate::runtime::Runtime;
use crate::web::{Reply, Request};
use std::time::Duration;

/// The path the providers post to.
pub const PATH: &str = "/.idfabric/backchannel-logout";

/// Largest `logout_token` read. Logout tokens are a few hundred bytes; the body as a
/// whole is bounded by the gateway (`web::MAX_BODY`, answered with [`too_large`]).
const MAX_TOKEN: usize = 8 * 1024;

fn invalid(description: &str, reason: &'static str) -> Reply {
    crate::metrics::metrics().backchannel_logouts_total.with_label_values(&[reason]).inc();
    tracing::info!(reason, "back-channel logout refused");
    Reply::json(400, &serde_json::json!({"error": "invalid_request", "error_description": description}), reason)
}

/// The answer to a body larger than `web::MAX_BODY` (the gateway stops reading it).
pub fn too_large() -> Reply {
    invalid("the request body is too large", "body_too_large")
}

/// Handles one back-channel logout request.
pub async fn handle(rt: &Runtime, req: &Request<'_>) -> Reply {
    if req.method != "POST" {
        let mut r = invalid("use POST with a form body", "method_not_allowed");
        r.status = 405;
        r.headers.push(("allow", "POST".into()));
        return r;
    }
    let form = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return invalid("the body must be application/x-www-form-urlencoded", "not_a_form");
    }
    let Some(token) = req.form("logout_token").filter(|t| !t.is_empty()) else {
        return invalid("the logout_token parameter is required", "missing_logout_token");
    };
    if token.len() > MAX_TOKEN {
        return invalid("the logout_token is too large", "token_too_large");
    }
    let t = match rt.registry.verify_logout_token(&token).await {
        Ok(t) => t,
        Err(e) => return invalid(&e.to_string(), e.reason()),
    };
    let provider = rt.registry.providers[t.provider].id().to_string();
    let Some(sessions) = &rt.sessions else {
        return invalid("idfabric has no session store", "no_session_store");
    };
    // Single use across replicas: the first replica to claim the jti acts on it.
    let ttl = Duration::from_secs((t.remember_until - crate::providers::now_secs()).max(1) as u64);
    let jti_key = format!("idf:{{rev}}:jti:{provider}:{}", t.jti);
    match sessions.store.set_nx(&jti_key, ttl).await {
        Ok(true) => {}
        Ok(false) => return invalid(&LogoutTokenError::Replayed.to_string(), LogoutTokenError::Replayed.reason()),
        Err(e) => return unavailable(&e),
    }
    // §2.7: a `sid` names one session at the provider; without one, every session of
    // the subject ends.
    let target = match (t.sid, t.sub) {
        (Some(sid), _) => Target::UpstreamSession { provider: provider.clone(), sid },
        (None, Some(sub)) => Target::subject_of(&provider, &sub),
        (None, None) => return invalid("the token lacks the required claim `sub or sid`", "missing_claim"),
    };
    match revoke(rt, target, Source::BackchannelLogout, Event::Logout).await {
        Ok(_) => {
            crate::metrics::metrics().backchannel_logouts_total.with_label_values(&["ok"]).inc();
            let mut r = Reply::json(200, &serde_json::json!({}), "ok");
            r.body.clear();
            r.headers.retain(|(n, _)| *n != "content-type");
            r
        }
        Err(e) => {
            // The jti is released so the provider's retry is not refused as a replay.
            let _ = sessions.store.delete(&jti_key).await;
            unavailable(&e)
        }
    }
}

/// 503 when the session store cannot be reached: the provider retries (§2.8 allows
/// any error status; a 400 would tell it the token was bad).
fn unavailable(e: &crate::session::StoreError) -> Reply {
    crate::metrics::metrics().backchannel_logouts_total.with_label_values(&["session_store_unavailable"]).inc();
    tracing::warn!(error = %e, "back-channel logout not applied: session store unavailable");
    Reply::json(
        503,
        &serde_json::json!({"error": "temporarily_unavailable", "error_description": "the session store cannot be reached"}),
        "session_store_unavailable",
    )
}
