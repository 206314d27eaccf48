//! Request correlation: the `X-Request-Id` and the W3C Trace Context (`traceparent`,
//! `tracestate`) a request carries upstream and into the audit line.
//!
//! idfabric takes part in the trace as one span: an inbound `traceparent` that is valid
//! keeps its trace id and flags, and the upstream sees idfabric's own span id as the
//! parent. An absent or invalid one is replaced by a new trace (sampled flag set, since
//! the audit line records it); `tracestate` travels only with a valid inbound parent.
//! Nothing here knows about Pingora or identities.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header names, lower-case.
pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The same names, pre-parsed for lookups on the request path (a `&str` lookup parses
/// the name every time).
pub const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
pub const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
pub const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

/// Longest inbound `X-Request-Id` that is kept.
pub const MAX_REQUEST_ID: usize = 128;

/// One request's place in a distributed trace.
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// idfabric's span (the parent the upstream sees).
    pub span_id: [u8; 8],
    pub flags: u8,
    /// The inbound parent span (the caller's span id), when the trace was continued.
    pub parent: Option<[u8; 8]>,
    /// The inbound `tracestate`, kept only with a valid inbound `traceparent`.
    pub tracestate: Option<HeaderValue>,
}

/// Random bytes from the thread's CSPRNG (`rand::rng()`: ChaCha12 seeded from the OS
/// and reseeded periodically). Ids are drawn on every request: aws-lc's `RAND_bytes`
/// (a DRBG with an RDRAND mix-in and key setup per call) cost ~4% of the proxy's CPU
/// at full load (PROFILE=hot), the thread-local generator a few nanoseconds.
fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    b
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The two lower-case hex digits of one byte.
fn hex_pair(b: u8) -> [u8; 2] {
    [HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]
}

fn hex_into(bytes: &[u8], out: &mut String) {
    for d in bytes.iter().flat_map(|b| hex_pair(*b)) {
        out.push(d as char);
    }
}

/// Lower-case hex of `bytes` written into `out` (at least twice as long), without
/// allocating; the audit line's trace id.
pub fn hex_to<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    let n = bytes.len().min(out.len() / 2);
    for (pair, b) in out.chunks_exact_mut(2).zip(&bytes[..n]) {
        pair.copy_from_slice(&hex_pair(*b));
    }
    std::str::from_utf8(&out[..2 * n]).unwrap_or("")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut s);
    s
}

/// Decodes exactly `N` bytes of lower-case hex (W3C forbids upper case).
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(b[2 * i])? << 4) | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// Parses a `traceparent` value per W3C Trace Context level 1: `version-traceid-parentid-flags`,
/// version `ff` invalid, all-zero ids invalid, version `00` exactly 55 characters, later
/// versions may append `-…` fields (ignored). Returns (trace id, parent id, flags).
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 || !v.is_ascii() {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v.as_bytes()[55] != b'-') {
        return None;
    }
    let b = v.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags))
}

impl TraceContext {
    /// Continues the inbound trace when its `traceparent` is valid, else starts one.
    pub fn from_headers(h: &HeaderMap) -> TraceContext {
        let inbound = h.get(TRACEPARENT_NAME).and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        match inbound {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id: random(),
                flags,
                parent: Some(parent),
                tracestate: h.get(TRACESTATE_NAME).filter(|v| v.len() <= 512).cloned(),
            },
            None => TraceContext { trace_id: random(), span_id: random(), flags: 0x01, parent: None, tracestate: None },
        }
    }

    /// The `traceparent` value the upstream receives (idfabric's span as the parent).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&self.trace_id, &mut s);
        s.push('-');
        hex_into(&self.span_id, &mut s);
        s.push('-');
        hex_into(&[self.flags], &mut s);
        s
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// The request's id: the (first) inbound `X-Request-Id` when it is 1–128 visible
/// ASCII characters, else a new random one (32 hex characters). The flag is true when
/// the headers already carry exactly this one value (nothing to rewrite).
pub fn request_id(h: &HeaderMap) -> (String, bool) {
    let mut inbound = h.get_all(REQUEST_ID_NAME).into_iter();
    match inbound.next().map(HeaderValue::as_bytes) {
        Some(b) if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c)) => {
            (String::from_utf8_lossy(b).into_owned(), inbound.next().is_none())
        }
        _ => (hex(&random::<16>()), false),
    }
}

/// The filter of the log lines when `IDFABRIC_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn,pingora=warn";

/// Installs the log-line subscriber alone: stderr, filtered by `IDFABRIC_LOG` (default
/// `info`, Pingora at `warn`), JSON lines when `IDFABRIC_LOG_FORMAT=json`. A second call
/// is a no-op.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDFABRIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = std::env::var("IDFABRIC_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Why the tracing subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("tracing.otlp_endpoint: this idfabric was built without OTLP export (the `otlp` feature)")]
    OtlpNotBuilt,
    #[error("tracing.otlp_endpoint {endpoint}: {source}")]
    Exporter { endpoint: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{0}")]
    Subscriber(Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the process's `tracing` subscriber: the log lines of [`init_tracing`]
/// and, when `tracing.otlp_endpoint` is set (binary built with `--features otlp`), an
/// OTLP/HTTP exporter of the per-request spans (`idfabric::request`).
///
/// # Errors
/// When the exporter cannot be built (the endpoint is validated at load).
pub fn init(spec: &crate::config::TracingSpec) -> Result<(), TraceError> {
    match &spec.otlp_endpoint {
        None => {
            init_tracing();
            Ok(())
        }
        #[cfg(feature = "otlp")]
        Some(endpoint) => otlp::init(endpoint),
        #[cfg(not(feature = "otlp"))]
        Some(_) => Err(TraceError::OtlpNotBuilt),
    }
}

/// Before exit: exports the request spans still batched for OTLP (`otlp` feature),
/// waiting at most `limit`; true when nothing was left behind.
pub fn finish(limit: std::time::Duration) -> bool {
    #[cfg(feature = "otlp")]
    return otlp::finish(limit);
    #[cfg(not(feature = "otlp"))]
    {
        let _ = limit;
        true
    }
}

/// Makes the request's span the exported one (no-op without the `otlp` feature or when
/// the span is disabled): parented on the inbound trace, and `tc` takes the exported
/// span's ids, so the upstream's `traceparent` names a span the collector receives.
pub fn join(span: &tracing::Span, tc: &mut TraceContext) {
    #[cfg(feature = "otlp")]
    otlp::join(span, tc);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, tc);
}

#[cfg(feature = "otlp")]
mod otlp {
    use super::TraceContext;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    /// `http://collector:4318` → `http://collector:4318/v1/traces`; a URL with a path is
    /// used as written.
    pub fn traces_url(endpoint: &str) -> String {
        match url::Url::parse(endpoint) {
            Ok(u) if u.path() == "/" || u.path().is_empty() => {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            }
            _ => endpoint.to_string(),
        }
    }

    /// Kept for [`finish`]: the batch exporter holds the last spans until flushed.
    static PROVIDER: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = std::sync::OnceLock::new();

    /// Exports the spans still batched, waiting at most `limit` (an unreachable
    /// collector must not hold the process).
    pub fn finish(limit: std::time::Duration) -> bool {
        let Some(provider) = PROVIDER.get() else { return true };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(provider.shutdown().is_ok());
        });
        rx.recv_timeout(limit).unwrap_or(false)
    }

    pub fn init(endpoint: &str) -> Result<(), super::TraceError> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .build()
            .map_err(|e| super::TraceError::Exporter { endpoint: endpoint.to_string(), source: Box::new(e) })?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("idfabric").build())
            .build();
        let tracer = provider.tracer("idfabric");
        let _ = PROVIDER.set(provider);
        let filter = tracing_subscriber::EnvFilter::try_from_env("IDFABRIC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(super::DEFAULT_LOG_FILTER));
        let json = std::env::var("IDFABRIC_LOG_FORMAT").is_ok_and(|v| v == "json");
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
        let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
        let spans = tracing_subscriber::filter::Targets::new().with_target("idfabric::request", tracing::Level::DEBUG);
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans))
            .try_init()
            .map_err(|e| super::TraceError::Subscriber(Box::new(e)))?;
        tracing::info!(endpoint = %traces_url(endpoint), "exporting request spans over OTLP/HTTP");
        Ok(())
    }

    pub fn join(span: &tracing::Span, tc: &mut TraceContext) {
        if span.is_disabled() {
            return;
        }
        if let Some(parent) = tc.parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(tc.trace_id),
                SpanId::from_bytes(parent),
                TraceFlags::new(tc.flags),
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            tc.trace_id = sc.trace_id().to_bytes();
            tc.span_id = sc.span_id().to_bytes();
            tc.flags = sc.trace_flags().to_u8();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, f) = parse_traceparent(good).unwrap();
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p), "00f067aa0ba902b7");
        assert_eq!(f, 1);
        // A later version may append fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // v00 must be exact
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn continues_or_starts_a_trace() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let t = TraceContext::from_headers(&h);
        let out = t.traceparent();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-00"));
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "our own span id");
        assert!(t.tracestate.is_some());

        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let t = TraceContext::from_headers(&h);
        assert!(parse_traceparent(&t.traceparent()).is_some());
        assert_ne!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.tracestate.is_none(), "tracestate dropped with an invalid parent");
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        assert!(matches!(request_id(&h), (id, false) if id.len() == 32));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), ("abc-123".to_string(), true));
        h.append(REQUEST_ID, HeaderValue::from_static("def-456"));
        assert_eq!(request_id(&h), ("abc-123".to_string(), false), "a repeated header is rewritten");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert!(matches!(request_id(&h), (id, false) if id.len() == 32));
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert!(matches!(request_id(&h), (id, false) if id.len() == 32));
    }
}
