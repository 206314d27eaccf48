//! Pingora glue: each `ProxyHttp` phase calls one pipeline step and records the facts
//! it learned in `RequestCtx`; no identity, claim or policy logic lives here.
//!
//! | phase | does |
//! | --- | --- |
//! | `request_filter` | request target and canonical path (`crate::canon`; the request is rewritten to it, so the upstream reads the routed path); reserved paths and forward-auth checks (`crate::forward_auth`); route; credential, verify, decide (`pipeline::admit_request`); on refusal writes the response and returns `Ok(true)` |
//! | `upstream_peer` | picks the upstream for the identity's population (round-robin, passive health), resolves a name (`crate::dns`) and sets the route's timeouts, TLS and HTTP version (`peer`) |
//! | `upstream_request_filter` | removes client-sent `X-Identity-*`, adds the identity headers and token, sets `upstream_host`, and `X-Forwarded-For/Proto/Host` (`crate::forwarded`) |
//! | `response_filter` | the request's `X-Request-Id` on the upstream's answer |
//! | `fail_to_connect` | marks the peer (or the name's address) down and retries another one |
//! | `fail_to_proxy` | problem+json naming the failure (`upstream_timeout` 504, `upstream_unreachable` 502, …) instead of Pingora's bare error page |
//! | `logging` | metrics, the audit line, access evidence and the one log line per refused request |
//!
//! Every request gets an `X-Request-Id` (the client's when sane) and a W3C trace
//! context (`crate::trace`) in `request_filter`; both go upstream and into the audit
//! line, and the id comes back on every response (`response_filter`, `respond::send`).

mod peer;
mod reserved;
pub mod respond;

pub use reserved::is_reserved;

use crate::metrics::{self, metrics, Outcome};
use crate::pipeline::{self, Admission};
use crate::propagate;
use crate::providers::Verified;
use crate::refusal::{Decision, Reason, Refusal, UpstreamFailure};
use crate::runtime::Runtime;
use crate::trace::{self, TraceContext};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;
use std::time::Instant;

/// The proxy service.
pub struct Gateway {
    pub state: Arc<ArcSwap<Runtime>>,
    cas: peer::CaCache,
}

impl Gateway {
    pub fn new(state: Arc<ArcSwap<Runtime>>) -> Gateway {
        Gateway { state, cas: Default::default() }
    }
}

/// Facts about one request, filled in phase order and read by later phases.
pub struct RequestCtx {
    rt: Arc<Runtime>,
    started: Instant,
    route: Option<u32>,
    verified: Option<Arc<Verified>>,
    /// Index of the chosen peer in the route's pool, for passive health.
    peer: Option<usize>,
    tries: usize,
    /// Set when the failure is known before Pingora reports it (a name that does not
    /// resolve); otherwise `fail_to_proxy` reads it from the error.
    upstream_failure: Option<UpstreamFailure>,
    outcome: Outcome,
    reason: Reason,
    decision: Decision,
    /// The reason a reserved path's own reply gave (sign-in and broker pages), for the
    /// log line; routed requests and refusals carry theirs in `reason`.
    reply_reason: Option<&'static str>,
    provider: Option<usize>,
    population: Option<crate::identity::Population>,
    request_id: String,
    trace: TraceContext,
    /// Set when the request was a forward-auth check.
    forward: Option<Box<ForwardDecision>>,
    /// Adaptive MFA's signals for this request (audit line).
    risk: crate::risk::Signals,
    /// The client's address, scheme and host (behind trusted proxies, what they said),
    /// set first in `request_filter`.
    origin: crate::forwarded::Origin,
    /// The request's `tracing` span (target `idfabric::request`, debug level: free
    /// unless enabled, e.g. `IDFABRIC_LOG=info,idfabric::request=debug`); the request's
    /// log lines are emitted inside it.
    span: tracing::Span,
}

/// What a forward-auth check decided, for its audit line and metrics (filled by
/// `reserved`).
#[derive(Default)]
pub(crate) struct ForwardDecision {
    route: Option<u32>,
    /// The original request's method, host and canonical path.
    method: String,
    host: String,
    path: String,
    verified: Option<Arc<Verified>>,
    provider: Option<usize>,
    population: Option<crate::identity::Population>,
    decision: Decision,
    reason: Reason,
    risk: crate::risk::Signals,
}

impl ForwardDecision {
    fn target(&mut self, t: &crate::forward_auth::Target) {
        (self.route, self.host, self.path) = (Some(t.route), t.host.clone(), t.path.clone());
        self.method = t.method.as_str().to_string();
    }

    /// The check counts like a proxied request on its route: `allow`, `refused`,
    /// `error` (503) or `no_route`.
    fn outcome(&self, status: u16) -> Outcome {
        match (self.decision, self.reason) {
            (Decision::Allow, _) => Outcome::Allow,
            (_, Reason::NoRoute) => Outcome::NoRoute,
            _ if status == 503 => Outcome::Error,
            _ => Outcome::Refused,
        }
    }

    fn allowed(&mut self, adm: &Admission) {
        (self.decision, self.reason) = (Decision::Allow, Reason::Ok);
        self.risk = adm.risk();
        if let Admission::Allowed { verified, .. } = adm {
            (self.provider, self.population) = (Some(verified.provider), Some(verified.identity.population));
            self.verified = Some(verified.clone());
        }
    }

    fn denied(&mut self, d: &pipeline::Denial) {
        self.refused(&d.refusal);
        (self.provider, self.population) = (d.provider, d.population);
        self.verified = d.verified.clone();
        self.risk = d.risk;
    }

    fn refused(&mut self, r: &Refusal) {
        (self.decision, self.reason) = (r.decision(), r.code());
    }
}

impl RequestCtx {
    fn route<'a>(&self, rt: &'a Runtime) -> Option<&'a crate::runtime::CompiledRoute> {
        self.route.map(|i| &rt.routes.routes[i as usize])
    }
}

fn host_of(req: &RequestHeader) -> &str {
    req.uri.host().or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok())).unwrap_or("")
}

/// The methods named in the answer to `OPTIONS *`.
const ALLOW: &str = "OPTIONS, GET, HEAD, POST, PUT, PATCH, DELETE";

/// Where a request goes, decided on its canonical target.
enum Resolved {
    Route(u32),
    /// A forward-auth check: the check path's part below `/.idfabric/auth`.
    ForwardAuth(String),
    /// A path idfabric answers itself (canonical, without parameters).
    Reserved(String),
    NoRoute,
    /// `OPTIONS *`.
    Asterisk,
}

/// The canonical target to put on the request before anything else reads it, when it
/// differs from what was sent (non-canonical path, or absolute-form).
struct Rewrite {
    target: Vec<u8>,
    /// `Host` for an absolute-form request that sent none.
    host: Option<String>,
}

/// Classifies the request target (RFC 9112 §3.2), canonicalises its path (`crate::canon`)
/// and finds where it goes: every routing decision is made on the canonical path, and
/// the returned rewrite makes the upstream see exactly that path. A refusal carries the
/// route when one was found (`;` parameters on a route without `path_params`).
/// Allocates nothing for an already-canonical origin-form request.
fn resolve(rt: &Runtime, req: &RequestHeader) -> std::result::Result<(Resolved, Option<Rewrite>), (Refusal, Option<u32>)> {
    use crate::canon::{self, PathProblem, TargetForm, TargetProblem};
    let form = canon::target_form(req.method.as_str(), req.raw_path()).map_err(|p| (Refusal::InvalidTarget(p), None))?;
    let header_host = req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty());
    let (host, absolute) = match form {
        TargetForm::Asterisk => return Ok((Resolved::Asterisk, None)),
        TargetForm::Absolute { authority, https } => {
            if header_host.is_some_and(|h| !canon::same_authority(authority, h, https)) {
                return Err((Refusal::InvalidTarget(TargetProblem::HostMismatch), None));
            }
            (authority, true)
        }
        TargetForm::Origin => match req.uri.host().or(header_host) {
            Some(h) => (h, false),
            // HTTP/1.0 may omit Host: only routes for any host can match.
            None if req.version == http::Version::HTTP_10 => ("", false),
            None => return Err((Refusal::InvalidTarget(TargetProblem::NoHost), None)),
        },
    };
    if !req.raw_path_is_utf8() {
        return Err((Refusal::InvalidTarget(TargetProblem::NotUtf8), None));
    }
    // A check's path below `/.idfabric/auth` is the original request's path (Envoy), so
    // it is canonicalised as that path, on its own: `/.idfabric/auth/../x` asks about `/x`.
    if let Some(rest) = crate::forward_auth::below_check_path(req.uri.path()) {
        return Ok((Resolved::ForwardAuth(rest.to_string()), None));
    }
    let path = canon::canonicalize(req.uri.path()).map_err(|p| (Refusal::InvalidPath(p), None))?;
    // `unchanged` is false for canonical paths that took the slow path (`/.well-known/x`).
    let rewrite = ((!path.unchanged() && path.path() != req.uri.path()) || absolute).then(|| Rewrite {
        target: match req.uri.query() {
            Some(q) => format!("{}?{q}", path.path()).into_bytes(),
            None => path.path().as_bytes().to_vec(),
        },
        host: (absolute && header_host.is_none()).then(|| host.to_string()),
    });
    let params = Refusal::InvalidPath(PathProblem::ParamsNotAllowed);
    if let Some(rest) = crate::forward_auth::below_check_path(path.path()) {
        return Ok((Resolved::ForwardAuth(rest.to_string()), rewrite));
    }
    if reserved::is_reserved(rt, path.route_path()) {
        if path.has_params() {
            return Err((params, None));
        }
        return Ok((Resolved::Reserved(path.path().to_string()), rewrite));
    }
    match rt.routes.find(host, path.route_path()) {
        None if path.has_params() => Err((params, None)),
        None => Ok((Resolved::NoRoute, rewrite)),
        Some(route) if path.has_params() && !route.spec.path_params => Err((params, Some(route.index))),
        Some(route) => Ok((Resolved::Route(route.index), rewrite)),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            rt: self.state.load_full(),
            started: Instant::now(),
            route: None,
            verified: None,
            peer: None,
            tries: 0,
            upstream_failure: None,
            outcome: Outcome::Allow,
            reason: Reason::Ok,
            decision: Decision::Allow,
            reply_reason: None,
            provider: None,
            population: None,
            request_id: String::new(),
            trace: TraceContext::default(),
            forward: None,
            risk: Default::default(),
            origin: Default::default(),
            span: tracing::Span::none(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = ctx.rt.clone();
        let (id, as_sent) = trace::request_id(&session.req_header().headers);
        ctx.request_id = id;
        // The request carries the id from here on: upstream (the proxied request is a
        // copy of this header) and in every response idfabric writes (`respond::send`).
        // Rewritten unless the client sent exactly this one value (a repeated header
        // would reach the upstream with both values).
        if !as_sent {
            session.req_header_mut().insert_header(trace::REQUEST_ID, ctx.request_id.as_str())?;
        }
        ctx.trace = TraceContext::from_headers(&session.req_header().headers);
        ctx.span = tracing::debug_span!(
            target: "idfabric::request",
            "request",
            request_id = ctx.request_id.as_str(),
            trace_id = tracing::field::Empty,
            route = tracing::field::Empty,
        );
        if !ctx.span.is_disabled() {
            trace::join(&ctx.span, &mut ctx.trace);
            ctx.span.record("trace_id", ctx.trace.trace_id_hex().as_str());
        }
        let (resolved, rewrite) = match resolve(&rt, session.req_header()) {
            Ok(r) => r,
            Err((refusal, route)) => {
                ctx.origin = reserved::origin(&rt, session);
                ctx.route = route;
                ctx.outcome = Outcome::Refused;
                ctx.reason = refusal.code();
                ctx.decision = refusal.decision();
                let name = route.map(|i| rt.routes.routes[i as usize].spec.name.as_str());
                respond::refusal(session, &refusal, name).await?;
                return Ok(true);
            }
        };
        // The upstream (and every later phase) reads the canonical origin-form target.
        if let Some(rw) = rewrite {
            let req = session.req_header_mut();
            req.set_raw_path(&rw.target)?;
            if let Some(host) = rw.host {
                req.insert_header(http::header::HOST, host)?;
            }
        }
        // Read on the canonical request (an absolute-form target's `Host` is set now).
        ctx.origin = reserved::origin(&rt, session);
        let route = match resolved {
            Resolved::Route(i) => &rt.routes.routes[i as usize],
            Resolved::Asterisk => {
                // `OPTIONS *` asks about the server, not a resource: answered here.
                respond::send(session, 200, &[("allow", ALLOW), ("cache-control", "no-store")], Default::default()).await?;
                ctx.outcome = Outcome::Internal;
                return Ok(true);
            }
            Resolved::ForwardAuth(rest) => {
                let mut fwd = Box::<ForwardDecision>::default();
                let h = reserved::forward_auth(&rt, session, &rest, &ctx.origin, &mut fwd).await?;
                // Counted under the route it was about, like a proxied request.
                (ctx.route, ctx.provider, ctx.population) = (fwd.route, fwd.provider, fwd.population);
                (ctx.outcome, ctx.reason, ctx.decision) = (fwd.outcome(h.status), fwd.reason, fwd.decision);
                ctx.forward = Some(fwd);
                return Ok(true);
            }
            Resolved::Reserved(path) => {
                let h = reserved::handle(&rt, session, &path, &ctx.origin).await?;
                ctx.outcome = if h.status < 400 { Outcome::Internal } else { Outcome::Refused };
                ctx.reply_reason = Some(h.reason);
                return Ok(true);
            }
            Resolved::NoRoute => {
                ctx.outcome = Outcome::NoRoute;
                ctx.reason = Refusal::NoRoute.code();
                respond::refusal(session, &Refusal::NoRoute, None).await?;
                return Ok(true);
            }
        };
        ctx.route = Some(route.index);
        ctx.span.record("route", route.spec.name.as_str());
        let req = session.req_header();
        match pipeline::admit_request(&rt, route, &req.method, &req.headers, &req.uri, ctx.origin.https, ctx.origin.client_ip).await {
            Ok(adm) => {
                tarpit::forgive(tarpit::key(session, &ctx.origin));
                ctx.population = adm.population();
                ctx.risk = adm.risk();
                if let Admission::Allowed { verified, .. } = adm {
                    ctx.provider = Some(verified.provider);
                    ctx.verified = Some(verified);
                }
                Ok(false)
            }
            Err(d) => {
                ctx.provider = d.provider;
                ctx.population = d.population;
                ctx.verified = d.verified.clone();
                ctx.risk = d.risk;
                crate::risk::note_denial(&d.refusal, d.verified.as_deref().map(|v| &v.identity));
                ctx.outcome = if d.refusal.status() == 503 { Outcome::Error } else { Outcome::Refused };
                ctx.reason = d.refusal.code();
                ctx.decision = d.refusal.decision();
                if d.refusal.class() == crate::refusal::Class::InvalidToken
                    && !matches!(d.refusal, Refusal::NoCredential | Refusal::NoSession | Refusal::BadSession)
                {
                    tarpit::strike(tarpit::key(session, &ctx.origin)).await;
                }
                if let Some(location) = &d.redirect {
                    respond::redirect(session, location).await?;
                } else if d.html {
                    respond::refusal_page(session, &rt, &d.refusal, route).await?;
                } else {
                    respond::refusal(session, &d.refusal, Some(&route.spec.name)).await?;
                }
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let rt = ctx.rt.clone();
        let route = ctx.route(&rt).ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        let pool = route
            .pool(ctx.population)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(403), "no upstream for population"))?;
        let opts = &route.spec.upstream;
        // An entry whose name does not resolve is skipped like one that refuses connections.
        let mut unresolved = String::new();
        for _ in 0..pool.peers.len() {
            let i = pool.pick().ok_or_else(|| Error::explain(ErrorType::InternalError, "empty pool"))?;
            match pool.resolve(i, opts).await {
                Ok(addr) => {
                    ctx.peer = Some(i);
                    ctx.tries += 1;
                    let ca = self.cas.for_route(&rt, route);
                    return Ok(Box::new(peer::http_peer(opts, &pool.peers[i], addr, ca)));
                }
                Err(e) => {
                    pool.mark_down(i);
                    unresolved = e.to_string();
                }
            }
        }
        ctx.upstream_failure = Some(UpstreamFailure::Unresolved);
        Err(peer::unresolved(unresolved))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let rt = ctx.rt.clone();
        if let (Some(route), Some(i)) = (ctx.route(&rt), ctx.peer) {
            if let Some(pool) = route.pool(ctx.population) {
                pool.connect_failed(i);
                if ctx.tries < pool.attempts() {
                    e.set_retry(true);
                }
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        strip_identity_headers(upstream);
        upstream.insert_header(trace::TRACEPARENT, ctx.trace.traceparent())?;
        match &ctx.trace.tracestate {
            Some(ts) => upstream.insert_header(trace::TRACESTATE, ts.clone())?,
            // Only a `tracestate` without a valid `traceparent` is left to remove.
            None if upstream.headers.contains_key(trace::TRACESTATE_NAME) => {
                upstream.remove_header(&trace::TRACESTATE_NAME);
            }
            None => {}
        }
        let rt = ctx.rt.clone();
        strip_own_cookies(upstream, &rt.config.session.cookie);
        let Some(route) = ctx.route(&rt) else {
            return Ok(());
        };
        if let Some(host) = &route.spec.upstream.host_header {
            upstream.insert_header(http::header::HOST, host.as_str())?;
        }
        set_forwarding_headers(upstream, &ctx.origin, route.spec.forwarded_headers)?;
        propagate::route_headers(rt.minter.as_ref(), &route.spec, route.index, ctx.verified.as_deref(), |change| {
            match change {
                propagate::Change::Set(name, value) => upstream.insert_header(name, value)?,
                propagate::Change::SetAuthorization(value) => upstream.insert_header(http::header::AUTHORIZATION, value)?,
                propagate::Change::RemoveAuthorization => {
                    upstream.remove_header(&http::header::AUTHORIZATION);
                }
            }
            Ok(())
        })
    }

    /// The upstream's answer carries the request's `X-Request-Id` unless it set its own.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !ctx.request_id.is_empty() && !resp.headers.contains_key(trace::REQUEST_ID_NAME) {
            resp.insert_header(trace::REQUEST_ID, ctx.request_id.as_str())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let failure = match e.esource() {
            pingora::ErrorSource::Upstream => Some(ctx.upstream_failure.unwrap_or_else(|| peer::classify(e))),
            _ => ctx.upstream_failure,
        };
        let code = match (e.etype(), failure) {
            (ErrorType::HTTPStatus(c), _) => *c,
            (_, Some(f)) => f.status(),
            _ if e.esource() == &pingora::ErrorSource::Downstream => 0,
            _ => 500,
        };
        // The auth decision (allow) stands; the outcome records the upstream failure.
        ctx.outcome = Outcome::UpstreamError;
        let rt = ctx.rt.clone();
        let route = ctx.route(&rt).map(|r| r.spec.name.as_str());
        if let Some(r) = route {
            metrics().upstream_errors_total.with_label_values(&[r]).inc();
        }
        let failure = failure.unwrap_or(UpstreamFailure::Failed);
        if code > 0 {
            let body = if code == failure.status() {
                failure.problem_json(route)
            } else {
                serde_json::json!({
                    "type": "urn:idfabric:problem:upstream_error",
                    "title": "Gateway error",
                    "status": code,
                    "detail": "the upstream application could not be reached or failed",
                    "reason": "upstream_error",
                    "route": route,
                })
                .to_string()
            };
            let _ = respond::send(
                session,
                code,
                &[("content-type", "application/problem+json"), ("cache-control", "no-store")],
                body.into(),
            )
            .await;
        }
        tracing::warn!(
            parent: &ctx.span,
            route = route.unwrap_or("none"),
            status = code,
            reason = failure.reason(),
            error = %e,
            "upstream failure"
        );
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let rt = &ctx.rt;
        let key = (
            rt.generation,
            ctx.route.unwrap_or(u32::MAX),
            ctx.provider.map(|p| p as u32).unwrap_or(u32::MAX),
            ctx.population.map(|p| p.index() as u8).unwrap_or(u8::MAX),
            ctx.outcome,
            ctx.reason,
            ctx.decision,
        );
        let route = ctx.route(rt).map(|r| r.spec.name.as_str()).unwrap_or("none");
        let provider = ctx.provider.map(|i| rt.registry.providers[i].id()).unwrap_or("none");
        let population = ctx.population.map(|p| p.as_str()).unwrap_or("none");
        let series = metrics::request_series(key, || {
            let m = metrics::metrics();
            metrics::RequestSeries {
                requests: m.requests_total.with_label_values(&[route, population, provider, ctx.outcome.as_str()]),
                duration: m.request_duration_seconds.with_label_values(&[route, ctx.outcome.as_str()]),
                decision: ctx
                    .route
                    .map(|_| m.auth_decisions_total.with_label_values(&[route, ctx.decision.as_str(), ctx.reason.as_str()])),
            }
        });
        series.requests.inc();
        series.duration.observe(ctx.started.elapsed().as_secs_f64());
        if let Some(d) = &series.decision {
            d.inc();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // Access evidence is what was allowed (a refused request keeps its identity for
        // the audit line, but is no access).
        if let (Some(r), Some(v), Decision::Allow) = (ctx.route(rt), &ctx.verified, ctx.decision) {
            crate::access::observe(&r.spec.name, v);
        }
        if let Some(f) = ctx.forward.as_deref().filter(|f| f.decision == Decision::Allow) {
            if let (Some(r), Some(v)) = (f.route.map(|i| &rt.routes.routes[i as usize]), &f.verified) {
                crate::access::observe(&r.spec.name, v);
            }
        }
        if crate::audit::enabled() {
            audit(session, ctx, route, provider, status);
        }
        if matches!(ctx.outcome, Outcome::Refused | Outcome::Error | Outcome::NoRoute) {
            tracing::info!(
                parent: &ctx.span,
                route,
                provider,
                population,
                status,
                reason = ctx.reply_reason.unwrap_or(ctx.reason.as_str()),
                decision = ctx.decision.as_str(),
                method = %session.req_header().method,
                path = session.req_header().uri.path(),
                request_id = ctx.request_id.as_str(),
                "request refused"
            );
        }
    }
}

/// The audit line of a routed request (one per `auth_decisions_total` increment) or of
/// a forward-auth check that found its route.
fn audit(session: &Session, ctx: &RequestCtx, route: &str, provider: &str, status: u16) {
    let rt = &ctx.rt;
    let req = session.req_header();
    let client_ip = ctx.origin.client_ip.or_else(|| session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    let include_email = rt.config.audit.include_email;
    let base = |kind, route, host, path| crate::audit::Event {
        kind,
        request_id: &ctx.request_id,
        trace: &ctx.trace,
        route,
        provider: None,
        population: None,
        verified: None,
        decision: Decision::Allow,
        reason: Reason::Ok,
        status,
        started: ctx.started,
        method: req.method.as_str(),
        host,
        path,
        client_ip,
        include_email,
        risk: Default::default(),
    };
    if let Some(f) = ctx.forward.as_deref() {
        let Some(r) = f.route.map(|i| &rt.routes.routes[i as usize]) else {
            return;
        };
        crate::audit::record(&crate::audit::Event {
            provider: f.provider.map(|i| rt.registry.providers[i].id()),
            population: f.population,
            verified: f.verified.as_deref(),
            decision: f.decision,
            reason: f.reason,
            method: f.method.as_str(),
            risk: f.risk,
            ..base("forward_auth", &r.spec.name, &f.host, &f.path)
        });
        return;
    }
    if ctx.route.is_none() {
        return;
    }
    crate::audit::record(&crate::audit::Event {
        provider: ctx.provider.map(|_| provider),
        population: ctx.population,
        verified: ctx.verified.as_deref(),
        decision: ctx.decision,
        reason: ctx.reason,
        risk: ctx.risk,
        ..base("proxy", route, host_of(req), req.uri.path())
    });
}

/// Whether a header name could be read as an identity header by some upstream: the
/// name, lowercased with every non-alphanumeric byte dropped, starts with `xidentity`.
///
/// Frameworks disagree on separators: CGI-style ones (PHP, Rack, WSGI) map `-` and `_`
/// alike to `HTTP_X_IDENTITY_SUB`, some normalisers drop `.` or `~`, and a case-folding
/// lookup finds `X-IDENTITY--sub`. Stripping by the letters alone leaves a client no
/// spelling (`X-Identity.Sub`, `x_identity_sub`, `XIdentity-Sub`) that reaches the
/// upstream. Runs per header per request, so it compares bytes in place (no allocation).
pub fn is_identity_header(name: &str) -> bool {
    const LETTERS: &[u8] = b"xidentity";
    let mut want = LETTERS.iter();
    for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
        match want.next() {
            None => return true,
            Some(w) if b.to_ascii_lowercase() == *w => {}
            Some(_) => return false,
        }
    }
    want.next().is_none()
}

/// Removes every `X-Identity-*` header the client sent, in any spelling
/// [`is_identity_header`] counts as one.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    let names: Vec<http::HeaderName> = req.headers.keys().filter(|k| is_identity_header(k.as_str())).cloned().collect();
    for n in names {
        req.remove_header(&n);
    }
}

/// `X-Forwarded-For/Proto/Host` for the upstream (`crate::forwarded`): forwarding
/// headers are removed unless the peer is a trusted proxy, then ours are set unless the
/// route says `forwarded_headers: false`. With ours goes any `Forwarded`: a proxy may
/// relay a client's own untouched (nginx does), and it could contradict ours.
fn set_forwarding_headers(upstream: &mut RequestHeader, origin: &crate::forwarded::Origin, add: bool) -> Result<()> {
    if !origin.peer_trusted {
        let names: Vec<http::HeaderName> =
            upstream.headers.keys().filter(|k| crate::forwarded::is_forwarding_header(k.as_str())).cloned().collect();
        for n in names {
            upstream.remove_header(&n);
        }
    }
    if add {
        upstream.remove_header(&http::header::FORWARDED);
        for (name, value) in origin.upstream_headers() {
            upstream.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// Removes idfabric's own cookies (the session id in any spelling, the remembered
/// provider, the sign-in and handoff binding nonces, the adaptive-MFA device cookie)
/// from what the upstream receives: an app behind the gateway must not be able to
/// replay a session, finish someone's sign-in or borrow a remembered device.
pub fn strip_own_cookies(req: &mut RequestHeader, session_cookie: &str) {
    let ours = |name: &str| {
        let bare = name.strip_prefix("__Host-").or_else(|| name.strip_prefix("__Secure-")).unwrap_or(name);
        bare == session_cookie
            || name == crate::login::IDP_COOKIE
            || bare.starts_with("idfabric_ltx_")
            || bare.starts_with("idfabric_btx_")
            || bare.starts_with("idfabric_hx_")
            || bare == crate::risk::device::COOKIE
    };
    let values: Vec<String> =
        req.headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
    let mention = |v: &String| {
        v.contains(session_cookie)
            || v.contains(crate::login::IDP_COOKIE)
            || v.contains("idfabric_ltx_")
            || v.contains("idfabric_btx_")
            || v.contains("idfabric_hx_")
            || v.contains(crate::risk::device::COOKIE)
    };
    if !values.iter().any(mention) {
        return;
    }
    let kept: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !ours(pair.split('=').next().unwrap_or("")))
        .collect();
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        let _ = req.insert_header(http::header::COOKIE, kept.join("; "));
    }
}

/// Slows down connections that keep presenting invalid bearer tokens.
///
/// A flood of forged tokens costs a signature check each; answering it at full speed
/// would hand the flooder the CPU that valid traffic needs. After `FREE_STRIKES`
/// consecutive invalid tokens on one connection (client address and port), each further
/// refusal on it waits a little longer (up to a second). A valid request resets the
/// count. Behind a trusted proxy, whose connections carry many clients, the count is
/// per forwarded client address instead. The table is per worker thread and bounded.
mod tarpit {
    use pingora::proxy::Session;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    const FREE_STRIKES: u32 = 32;
    const MAX_ENTRIES: usize = 65_536;

    thread_local! {
        static STRIKES: RefCell<HashMap<SocketAddr, u32>> = RefCell::new(HashMap::new());
    }

    /// Whose strikes a request counts: its connection, or behind a trusted proxy its
    /// client's address (port 0).
    pub fn key(session: &Session, origin: &crate::forwarded::Origin) -> Option<SocketAddr> {
        if origin.peer_trusted {
            return origin.client_ip.map(|ip| SocketAddr::new(ip, 0));
        }
        session.client_addr().and_then(|a| a.as_inet()).copied()
    }

    pub fn forgive(key: Option<SocketAddr>) {
        let empty = STRIKES.with(|s| s.borrow().is_empty());
        if !empty {
            if let Some(p) = key {
                STRIKES.with(|s| s.borrow_mut().remove(&p));
            }
        }
    }

    pub async fn strike(key: Option<SocketAddr>) {
        let Some(p) = key else { return };
        let n = STRIKES.with(|s| {
            let mut map = s.borrow_mut();
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            let n = map.entry(p).or_insert(0);
            *n += 1;
            *n
        });
        if n > FREE_STRIKES {
            let steps = ((n - FREE_STRIKES) / 8 + 1).min(20) as u64;
            tokio::time::sleep(Duration::from_millis(50 * steps)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_in_every_spelling() {
        for n in [
            "x-identity-sub",
            "X-Identity-Sub",
            "x-identity-token",
            "x_identity_sub",
            "X-Identity_Groups",
            "x-identity.sub",
            "X-Identity~Groups",
            "xidentity-sub",
            "XIdentity-Sub",
            "X-IDENTITY--sub",
            "-x-identity",
            "x-identity",
            "X.I.D.E.N.T.I.T.Y",
            "x!identity#sub",
            "x$identity%sub",
            "x&identity'sub",
            "x*identity+sub",
            "x^identity`sub",
            "x|identity|sub",
            "xidentitysub",
            "x-identityanything",
        ] {
            assert!(is_identity_header(n), "{n} must count as an identity header");
        }
        for n in ["", "x", "x-ident", "x-identit", "identity", "x-id-sub", "x-forwarded-for", "y-identity-sub", "x1identity"] {
            assert!(!is_identity_header(n), "{n} is not an identity header");
        }
    }

    #[test]
    fn strips_every_spelling_and_keeps_the_rest() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for n in ["x-identity.sub", "x-identity~groups", "x_identity_sub", "xidentity-sub", "x-identity--sub", "x-identity-email"] {
            req.insert_header(n.to_string(), "forged").unwrap();
        }
        req.insert_header("x-keep", "1").unwrap();
        strip_identity_headers(&mut req);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
    }
}
