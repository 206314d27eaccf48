//! `POST /.idfabric/ssf/events`: a Shared Signals Framework receiver with push
//! delivery (RFC 8935, https://www.rfc-editor.org/rfc/rfc8935) of Security Event
//! Tokens (RFC 8417), acting on the CAEP
//! (https://openid.net/specs/openid-caep-1_0.html) and RISC
//! (https://openid.net/specs/openid-risc-profile-specification-1_0.html) events that
//! end or weaken a person's access.
//!
//! The transmitter posts one SET as the body (`Content-Type: application/secevent+jwt`).
//! It is verified by the registry (`providers::set`: the provider whose `ssf.issuer`
//! is the SET's `iss`, its keys, `aud`, `iat`, `events`), its subjects are resolved
//! (RFC 9493 subject identifiers) before anything changes, its `jti` is claimed once in
//! the session store (a replay is refused on every replica), then each event it names
//! is acted on through [`super::revoke`]. The answer is `202` with no body, or `400`
//! with the RFC 8935 §2.3 error `{"err": …, "description": …}`. A SET that names only
//! events idfabric does not act on is accepted (`202`) and counted as `ignored`.
//! Poll delivery (RFC 8936, [`super::poll`]) hands each fetched SET to the same
//! [`process`].

use super::{revoke, Event, Source, Target};
use crate::providers::set::SetError;
use crate::runtime::Runtime;
use crate::web::{Reply, Request};
use serde_json::Value;
use std::time::Duration;

/// The path transmitters push to.
pub const PATH: &str = "/.idfabric/ssf/events";

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// What idfabric does on an event type URI; `None`: not acted on.
fn event_of(uri: &str) -> Option<Event> {
    if let Some(name) = uri.strip_prefix(CAEP) {
        return match name {
            "session-revoked" => Some(Event::SessionRevoked),
            "credential-change" => Some(Event::CredentialChange),
            "token-claims-change" => Some(Event::ClaimsChange),
            "assurance-level-change" => Some(Event::AssuranceLevelChange),
            _ => None,
        };
    }
    match uri.strip_prefix(RISC)? {
        "account-disabled" => Some(Event::AccountDisabled),
        "account-purged" => Some(Event::AccountPurged),
        "account-credential-change-required" => Some(Event::CredentialChangeRequired),
        // RISC's older session event, and Google's RISC feed's OAuth token revocation.
        "sessions-revoked" | "tokens-revoked" => Some(Event::SessionRevoked),
        _ => None,
    }
}

/// Why a SET was not acted on: the RFC 8935 §2.3 / RFC 8936 §2.4 error code and
/// description, the HTTP status of a push answer, and the fixed reason (the
/// `idfabric_ssf_sets_total{result}` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub err: &'static str,
    pub description: String,
    pub reason: &'static str,
}

impl Failure {
    fn new(status: u16, err: &'static str, description: &str, reason: &'static str) -> Failure {
        crate::metrics::metrics().ssf_sets_total.with_label_values(&[reason]).inc();
        tracing::info!(reason, err, "shared signals event refused");
        Failure { status, err, description: description.to_string(), reason }
    }

    fn invalid(description: &str, reason: &'static str) -> Failure {
        Failure::new(400, "invalid_request", description, reason)
    }

    /// Not the SET's fault: the store could not be reached; the transmitter delivers it
    /// again (push: it retries on 503; poll: it is neither acknowledged nor refused).
    pub fn is_transient(&self) -> bool {
        self.status == 503
    }

    fn reply(&self) -> Reply {
        Reply::json(self.status, &serde_json::json!({"err": self.err, "description": self.description}), self.reason)
    }
}

/// The answer to a body larger than `web::MAX_BODY` (the gateway stops reading it).
pub fn too_large() -> Reply {
    Failure::new(413, "invalid_request", "the request body is too large", "body_too_large").reply()
}

/// Handles one pushed SET.
pub async fn handle(rt: &Runtime, req: &Request<'_>) -> Reply {
    if req.method != "POST" {
        let mut r = Failure::invalid("use POST with an application/secevent+jwt body", "method_not_allowed").reply();
        r.status = 405;
        r.headers.push(("allow", "POST".into()));
        return r;
    }
    let ct = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/secevent+jwt") {
        return Failure::invalid("the body must be application/secevent+jwt", "wrong_content_type").reply();
    }
    let Ok(token) = std::str::from_utf8(req.body) else {
        return Failure::invalid("the body is not a compact JWT", "malformed").reply();
    };
    match process(rt, token.trim()).await {
        Ok(result) => Reply { status: 202, headers: vec![("cache-control", "no-store".into())], body: Vec::new(), reason: result },
        Err(f) => f.reply(),
    }
}

/// Verifies one SET and acts on it, whichever delivery brought it (push or poll):
/// `Ok("ok")` when acted on, `Ok("ignored")` when it names no event idfabric acts on.
/// Counted in `idfabric_ssf_sets_total{result}` either way.
pub async fn process(rt: &Runtime, token: &str) -> Result<&'static str, Failure> {
    let set = match rt.registry.verify_set(token).await {
        Ok(s) => s,
        Err(e) => return Err(Failure::new(400, e.err(), &e.to_string(), e.reason())),
    };
    let provider = rt.registry.providers[set.provider].id().to_string();
    // Every subject is resolved before anything changes: a SET idfabric cannot act on
    // wholly is refused whole.
    let mut actions = Vec::new();
    for (uri, payload) in &set.events {
        let Some(event) = event_of(uri) else { continue };
        if event == Event::AssuranceLevelChange && payload.get("change_direction").and_then(Value::as_str) == Some("increase") {
            continue;
        }
        let subject = set.sub_id.as_ref().or_else(|| payload.get("subject"));
        let Some(subject) = subject else {
            return Err(Failure::invalid("the SET names no subject (sub_id)", "missing_subject"));
        };
        match target(rt, &provider, subject, event == Event::SessionRevoked) {
            Ok(t) => actions.push((t, event)),
            Err((description, reason)) => return Err(Failure::invalid(&description, reason)),
        }
    }
    let Some(sessions) = &rt.sessions else {
        return Err(Failure::invalid("idfabric has no session store", "no_session_store"));
    };
    // Single use across replicas: the first replica to claim the jti acts on it.
    let ttl = Duration::from_secs((set.remember_until - crate::providers::now_secs()).max(1) as u64);
    let jti_key = format!("idf:{{rev}}:ssf-jti:{provider}:{}", set.jti);
    match sessions.store.set_nx(&jti_key, ttl).await {
        Ok(true) => {}
        Ok(false) => return Err(Failure::invalid(&SetError::Replayed.to_string(), SetError::Replayed.reason())),
        Err(e) => return Err(unavailable(&e)),
    }
    let ignored = actions.is_empty();
    for (t, event) in actions {
        if let Err(e) = revoke(rt, t, Source::Ssf, event).await {
            // Released so the transmitter's retry is not refused as a replay.
            let _ = sessions.store.delete(&jti_key).await;
            return Err(unavailable(&e));
        }
    }
    let result = if ignored { "ignored" } else { "ok" };
    crate::metrics::metrics().ssf_sets_total.with_label_values(&[result]).inc();
    if ignored {
        let names: Vec<&str> = set.events.keys().map(|k| k.as_str()).take(8).collect();
        tracing::info!(provider, events = ?names, "shared signals event ignored: no event idfabric acts on");
    }
    Ok(result)
}

/// Resolves an RFC 9493 subject identifier (https://www.rfc-editor.org/rfc/rfc9493)
/// to whose access ends. `iss_sub`: the configured provider with that token issuer;
/// `opaque`: the transmitting provider's subject; `complex`: its `user`, or for
/// `session-revoked` with a `session` part that one upstream session (the provider's
/// `sid`); `email`: the transmitting provider's people with that address
/// ([`Target::Email`]: subjects that signed in with it verified, SCIM users that list
/// it, and any later credential that carries it verified). Other formats cannot be
/// resolved.
fn target(rt: &Runtime, provider: &str, subject: &Value, session_event: bool) -> Result<Target, (String, &'static str)> {
    let format = subject.get("format").and_then(Value::as_str).unwrap_or("");
    if format == "complex" {
        if session_event {
            if let Some(s) = subject.get("session") {
                let sid = opaque_id(s).ok_or_else(|| ("the complex subject's session must be an opaque id (the provider's sid)".to_string(), "unresolvable_subject"))?;
                return Ok(Target::UpstreamSession { provider: provider.to_string(), sid });
            }
        }
        let user = subject.get("user").ok_or_else(|| ("the complex subject has no user".to_string(), "unresolvable_subject"))?;
        return user_target(rt, provider, user);
    }
    user_target(rt, provider, subject)
}

fn opaque_id(v: &Value) -> Option<String> {
    (v.get("format")?.as_str()? == "opaque").then_some(())?;
    v.get("id")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn user_target(rt: &Runtime, provider: &str, v: &Value) -> Result<Target, (String, &'static str)> {
    match v.get("format").and_then(Value::as_str).unwrap_or("") {
        "iss_sub" => {
            let (Some(iss), Some(sub)) = (v.get("iss").and_then(Value::as_str), v.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty())) else {
                return Err(("an iss_sub subject needs iss and sub".into(), "unresolvable_subject"));
            };
            // Google's RISC feed names `https://accounts.google.com/`, its tokens
            // `https://accounts.google.com`: a trailing slash is not a second issuer.
            let other = iss.strip_suffix('/').map(str::to_string).unwrap_or_else(|| format!("{iss}/"));
            let Some(i) = rt.registry.provider_for_issuer(iss).or_else(|| rt.registry.provider_for_issuer(&other)) else {
                return Err(("the subject's iss is not a configured provider's issuer".into(), "unknown_subject"));
            };
            Ok(Target::subject_of(rt.registry.providers[i].id(), sub))
        }
        "opaque" => match opaque_id(v) {
            Some(id) => Ok(Target::subject_of(provider, &id)),
            None => Err(("an opaque subject needs an id".into(), "unresolvable_subject")),
        },
        "email" => match v.get("email").and_then(Value::as_str).and_then(crate::session::email_key_part) {
            Some(email) => Ok(Target::Email { provider: provider.to_string(), email }),
            None => Err(("an email subject needs one email address".into(), "unresolvable_subject")),
        },
        _ => Err(("the subject format is not one idfabric resolves (iss_sub, email, opaque, complex)".into(), "unresolvable_subject")),
    }
}

/// 503 when the session store cannot be reached: the transmitter retries.
fn unavailable(e: &crate::session::StoreError) -> Failure {
    tracing::warn!(error = %e, "shared signals event not applied: session store unavailable");
    Failure::new(503, "temporarily_unavailable", "the session store cannot be reached", "session_store_unavailable")
}
