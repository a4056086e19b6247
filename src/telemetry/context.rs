//! W3C trace context in and out, and where an operation's span sits in the trace.
//!
//! A session is one story told by many pods, so its operations must be findable together. The
//! rules (documented in the README's "Observability"):
//! - a client's context wins: `params._meta` (SEP-414) for the operation span, the
//!   `traceparent` header for the request's HTTP span (the operation's default parent);
//! - without one, a session's request is a child of the context stored when the session was
//!   created (its `initialize` span), so the whole session is one trace;
//! - either way the operation links to the session's context (or to the context of the call
//!   that created its state handle), so it stays reachable.
//!
//! Contexts cross pods as `traceparent` text (session records, stream metas, envelopes).
//! Everything here is a no-op while traces are off ([`super::otel::enabled`]).

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceState};
use opentelemetry::{Context, KeyValue};
use serde_json::{Map, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::otel::enabled;
use super::span::current_scope;
pub use super::span::{adopt, innermost, within, within_scope, Carried, Current, LiveSpan, Scope};

/// Reads propagation fields from HTTP headers.
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Reads propagation fields from a request's `params._meta` (string values only).
struct MetaExtractor<'a>(&'a Map<String, Value>);

impl Extractor for MetaExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

fn extract(carrier: &dyn Extractor) -> Option<Context> {
    let cx = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), carrier)
    });
    cx.span().span_context().is_valid().then_some(cx)
}

/// The context (trace context and baggage) a client sent in HTTP headers, if valid.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<Context> {
    const TRACEPARENT: axum::http::HeaderName = axum::http::HeaderName::from_static("traceparent");
    if !enabled() || !headers.contains_key(TRACEPARENT) {
        return None;
    }
    extract(&HeaderExtractor(headers))
}

/// The context a client sent in `params._meta` (`traceparent`, `tracestate`, `baggage`).
pub fn from_meta(params: &Map<String, Value>) -> Option<Context> {
    let meta = params.get("_meta")?.as_object()?;
    if !enabled() || !meta.contains_key("traceparent") {
        return None;
    }
    extract(&MetaExtractor(meta))
}

/// A stored `traceparent` (`00-<trace id>-<span id>-<flags>`) as a remote span context;
/// parsed directly, without the propagator (it runs once per request of a traced session).
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
    let b = traceparent.trim().as_bytes();
    // Fixed layout: "00-" 32 hex "-" 16 hex "-" 2 hex.
    if b.len() != 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let [flags] = hex::<1>(&b[53..55])?;
    let sc = SpanContext::new(
        TraceId::from_bytes(hex::<16>(&b[3..35])?),
        SpanId::from_bytes(hex::<8>(&b[36..52])?),
        TraceFlags::new(flags & 1),
        true,
        TraceState::NONE,
    );
    sc.is_valid().then_some(sc)
}

/// `2 * N` lower- or upper-case hexadecimal digits as `N` bytes. Table-driven and checked once
/// at the end: random digits made a branch per digit mispredict half the time (perf: 0.3 µs
/// per request for the two parses of a session's context).
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    const INVALID: u8 = 0xF0;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (TABLE[pair[0] as usize], TABLE[pair[1] as usize]);
        bad |= hi | lo;
        *byte = hi << 4 | lo;
    }
    (bad & INVALID == 0 && digits.len() == 2 * N).then_some(out)
}

/// What a session whose `initialize` was not sampled stores instead of a context: its later
/// requests are not sampled either (a parent-based policy follows the session, not each
/// request), and nothing has to be parsed or linked for them. (Sessions stored by earlier
/// versions hold a `traceparent` with the sampled flag off, which means the same.)
pub const UNSAMPLED_SESSION: &str = "-";

/// The mark of an unsampled session ([`UNSAMPLED_SESSION`]) while traces are on.
pub fn unsampled_traceparent() -> Option<String> {
    enabled().then(|| UNSAMPLED_SESSION.to_owned())
}

/// The `traceparent` of a request's span; `None` while traces are off or when not sampled.
pub fn traceparent(span: Option<&LiveSpan>) -> Option<String> {
    span.map(|s| format_traceparent(s.context()))
}

/// The `traceparent` of the span running now (the producer of a message about to leave).
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    innermost().span_context().map(|sc| format_traceparent(&sc))
}

/// `00-<trace id>-<span id>-<flags>` (W3C Trace Context), written directly.
fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Links `span` to the stored context `traceparent`, saying why (`abacus.link`: `session`,
/// `handle`, `producer`, `transport`).
pub fn link(span: &tracing::Span, traceparent: Option<&str>, why: &'static str) {
    if let Some(sc) = traceparent.and_then(span_context) {
        span.add_link_with_attributes(sc, vec![KeyValue::new(super::otlp::LINK_REASON, why)]);
    }
}

/// [`link`] for the span running now.
pub fn link_current(traceparent: Option<&str>, why: &'static str) {
    let Some(sc) = traceparent.filter(|_| enabled()).and_then(span_context) else {
        return;
    };
    match innermost() {
        Current::Live(span) => span.add_link(sc, why),
        Current::Tracing(span) => {
            span.add_link_with_attributes(sc, vec![KeyValue::new(super::otlp::LINK_REASON, why)])
        }
        Current::None => {}
    }
}

/// A connection's peer as the `client.address` attribute: written once per connection, shared
/// by the spans of its requests.
#[derive(Debug)]
pub struct Peer {
    addr: std::net::IpAddr,
    text: std::sync::OnceLock<std::sync::Arc<str>>,
}

impl Peer {
    /// The peer of a new connection (nothing is formatted until a span needs it).
    pub fn new(addr: std::net::IpAddr) -> Peer {
        Peer {
            addr,
            text: std::sync::OnceLock::new(),
        }
    }

    fn text(&self) -> std::sync::Arc<str> {
        self.text
            .get_or_init(|| self.addr.to_string().into())
            .clone()
    }
}

/// What an HTTP span names, kept until the span can be created (a session's request waits for
/// its session).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: axum::http::Method,
    path: std::borrow::Cow<'static, str>,
    peer: std::sync::Arc<Peer>,
}

#[cfg(test)]
impl HttpRequest {
    /// A `POST /mcp` from 127.0.0.1.
    pub fn for_tests() -> HttpRequest {
        HttpRequest {
            method: axum::http::Method::POST,
            path: "/mcp".into(),
            peer: std::sync::Arc::new(Peer::new(std::net::Ipv4Addr::LOCALHOST.into())),
        }
    }
}

/// The HTTP server span of one request (OTel HTTP semantic conventions), a child of `parent`
/// (a client's context from the headers, or a session's).
fn http_span(http: &HttpRequest, parent: Option<&SpanContext>) -> LiveSpan {
    let name = match (http.method.as_str(), http.path.as_ref()) {
        ("POST", "/mcp") => std::borrow::Cow::Borrowed("POST /mcp"),
        ("GET", "/mcp") => std::borrow::Cow::Borrowed("GET /mcp"),
        ("DELETE", "/mcp") => std::borrow::Cow::Borrowed("DELETE /mcp"),
        (m, p) => std::borrow::Cow::Owned(format!("{m} {p}")),
    };
    let method = match http.method.as_str() {
        "POST" => opentelemetry::Value::from("POST"),
        "GET" => opentelemetry::Value::from("GET"),
        other => opentelemetry::Value::from(other.to_owned()),
    };
    // Room for what the end adds (the status code, an error type): no regrowth then.
    let mut attributes = Vec::with_capacity(6);
    attributes.extend([
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", http.path.clone()),
        KeyValue::new("network.protocol.version", "1.1"),
        KeyValue::new("client.address", http.peer.text()),
    ]);
    LiveSpan::start(name, SpanKind::Server, parent, attributes)
}

/// The span scope of one request, decided before anything is recorded: a request that will
/// not be sampled gets none and costs no span at all. `None` while traces are off.
/// - A client's context in the headers is the parent, and its sampled flag decides (under a
///   parent-based policy).
/// - A session's request (`Mcp-Session-Id` to `/mcp`, no client context) waits for its
///   session: the scope is filled by [`place_session_request`], under the session's context
///   and following its sampling.
/// - Anything else is a new trace, sampled at the policy's ratio.
pub fn request_scope(
    req: &axum::http::Request<hyper::body::Incoming>,
    peer: &std::sync::Arc<Peer>,
) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    let path = req.uri().path();
    let http = HttpRequest {
        method: req.method().clone(),
        path: match path {
            "/mcp" => std::borrow::Cow::Borrowed("/mcp"),
            other => std::borrow::Cow::Owned(other.to_owned()),
        },
        peer: peer.clone(),
    };
    if let Some(client) = from_headers(req.headers()) {
        let sc = client.span().span_context().clone();
        let span =
            super::otel::sample_with_parent(sc.is_sampled()).then(|| http_span(&http, Some(&sc)));
        return Some(Scope::of(span));
    }
    const SESSION: axum::http::HeaderName = axum::http::HeaderName::from_static("mcp-session-id");
    if http.path == "/mcp" && req.headers().contains_key(SESSION) {
        return Some(Scope::pending(http));
    }
    let span = super::otel::sample_root().then(|| http_span(&http, None));
    Some(Scope::of(span))
}

/// Records how a request ended on its HTTP span: the status code, and `error.type` with an
/// error status for a server error.
pub fn end_request(scope: &Scope, status: axum::http::StatusCode) {
    let Some(span) = scope.span() else {
        return;
    };
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_error(status.as_str().to_owned());
    }
}

/// Places a session's request once the session's context (`traceparent`) is known: its HTTP
/// span becomes a child of it, so that the whole session is one trace whichever pod serves
/// each request, if the session is sampled. A request placed already (the client sent a
/// context) keeps its span.
pub fn place_session_request(session: Option<&str>) {
    if !enabled() {
        return;
    }
    let Some(scope) = current_scope() else {
        return;
    };
    scope.fill(|http| {
        let parent = session.and_then(span_context);
        let sampled = match (&parent, session) {
            (_, Some(UNSAMPLED_SESSION)) => super::otel::sample_with_parent(false),
            (Some(sc), _) => super::otel::sample_with_parent(sc.is_sampled()),
            (None, _) => super::otel::sample_root(),
        };
        sampled.then(|| http_span(http, parent.as_ref()))
    });
}

/// Whether an operation gets a span, and its client-given parent: `None` for no span (traces
/// off, or neither its request nor a client context in `params._meta` is sampled);
/// `Some(client)` otherwise, `client` being the `_meta` context (SEP-414), read once here.
pub fn operation_placement(params: &Map<String, Value>) -> Option<Option<Context>> {
    if !enabled() {
        return None;
    }
    match from_meta(params) {
        Some(client) => super::otel::sample_with_parent(client.span().span_context().is_sampled())
            .then_some(Some(client)),
        None => innermost().is_some().then_some(None),
    }
}

/// Starts an operation span: `client` (from [`operation_placement`]) is its parent, the span
/// running now (its default parent) becoming a link; it links to the session's (or handle's)
/// context `session`.
pub fn start_operation(
    name: impl Into<std::borrow::Cow<'static, str>>,
    attributes: Vec<KeyValue>,
    client: Option<Context>,
    session: Option<&str>,
) -> LiveSpan {
    let running = innermost().span_context();
    let span = match client {
        Some(client) => {
            let parent = client.span().span_context().clone();
            let span = LiveSpan::start(name, SpanKind::Server, Some(&parent), attributes);
            if let Some(t) = running {
                span.add_link(t, "transport");
            }
            span
        }
        None => LiveSpan::start(name, SpanKind::Server, running.as_ref(), attributes),
    };
    if let Some(sc) = session.and_then(span_context) {
        span.add_link(sc, "session");
    }
    span
}

/// A span for a message another pod produced (a cross-pod hop through Redis): a consumer span
/// named `receive {what}`, a child of the span running now, linked to the producer.
pub fn receive_span(what: &'static str, producer: Option<&str>) -> tracing::Span {
    receive_span_on("abacus:signals", what, producer)
}

/// [`receive_span`] for a message that came through `channel` (`abacus:events` for the
/// wake-up of a stream's reader by the pod writing it).
pub fn receive_span_on(
    channel: &'static str,
    what: &'static str,
    producer: Option<&str>,
) -> tracing::Span {
    if !enabled() || producer.is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "abacus.receive",
        otel.name = %format!("receive {what}"),
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.operation.type = "receive",
        messaging.destination.name = channel,
        abacus.signal = what,
    );
    adopt(&span);
    link(&span, producer, "producer");
    span
}

/// A client span (a Redis command) under the span running now, if a span runs; `describe`
/// (its name and attributes) runs only then, so an unsampled request allocates nothing.
pub fn client_span(describe: impl FnOnce() -> (String, Vec<KeyValue>)) -> Option<LiveSpan> {
    if !enabled() {
        return None;
    }
    let parent = innermost().span_context()?;
    let (name, attributes) = describe();
    Some(LiveSpan::start(
        name,
        SpanKind::Client,
        Some(&parent),
        attributes,
    ))
}

/// A client call (a Redis command) made before its request's span could be placed: the
/// session lookup that tells where the request's spans belong. Held back and recorded, with
/// its real start and end, once the span is placed ([`record_deferred`]).
pub struct DeferredCall {
    /// Span name (`EVALSHA touch`).
    pub name: String,
    /// Its attributes (`db.*`).
    pub attributes: Vec<KeyValue>,
    pub start: std::time::SystemTime,
    pub end: std::time::SystemTime,
    /// `error.type` when it failed.
    pub error: Option<&'static str>,
}

tokio::task_local! {
    static DEFERRED: std::cell::RefCell<Vec<DeferredCall>>;
}

/// Runs `lookup` with its client spans held back (see [`DeferredCall`]).
pub async fn deferring<T>(lookup: impl std::future::Future<Output = T>) -> (T, Vec<DeferredCall>) {
    if !enabled() {
        return (lookup.await, Vec::new());
    }
    DEFERRED
        .scope(Default::default(), async {
            let out = lookup.await;
            (out, DEFERRED.with(|d| d.take()))
        })
        .await
}

/// Whether client spans are held back in this task right now.
pub fn is_deferring() -> bool {
    DEFERRED.try_with(|_| ()).is_ok()
}

/// Holds a finished client call back (only while [`is_deferring`]).
pub fn defer(call: DeferredCall) {
    let _ = DEFERRED.try_with(|d| d.borrow_mut().push(call));
}

/// Records held-back client calls as children of the span running now (placed by now).
pub fn record_deferred(calls: Vec<DeferredCall>) {
    if calls.is_empty() || !enabled() {
        return;
    }
    let Some(parent) = innermost().span_context() else {
        return;
    };
    for call in calls {
        let span = LiveSpan::start_at(
            call.name,
            SpanKind::Client,
            Some(&parent),
            call.attributes,
            call.start,
        );
        if let Some(kind) = call.error {
            span.set_error(kind);
        }
        span.end_at(call.end);
    }
}

/// Records an SSE message written as an `sse.message` event on the span running now.
pub fn sse_event(id: Option<&str>, bytes: usize) {
    if !enabled() {
        return;
    }
    let current = innermost();
    if !current.is_some() {
        return;
    }
    let mut attributes = vec![KeyValue::new("messaging.message.body.size", bytes as i64)];
    if let Some(id) = id {
        attributes.push(KeyValue::new("sse.event.id", id.to_owned()));
    }
    match current {
        Current::Live(span) => span.add_event("sse.message", attributes),
        Current::Tracing(span) => span.add_event("sse.message", attributes),
        Current::None => {}
    }
}

/// A JSON-RPC id as the `jsonrpc.request.id` attribute: a string id as it is, a number as text.
pub fn request_id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The span context of the span running now, if traces are on and it is valid.
fn current_span_context() -> Option<SpanContext> {
    if !enabled() {
        return None;
    }
    innermost().span_context()
}

/// The trace id of the span running now if it is sampled (a metric exemplar's link to it).
pub fn sampled_trace_id() -> Option<String> {
    current_span_context()
        .filter(SpanContext::is_sampled)
        .map(|sc| sc.trace_id().to_string())
}

/// The trace and span id of the span running now, for log lines.
pub fn current_ids() -> Option<(String, String)> {
    current_span_context().map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_traceparents_parse_as_remote_contexts() {
        let sc = span_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(span_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(span_context("garbage").is_none());
        let upper =
            span_context("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00").unwrap();
        assert_eq!(upper.trace_id(), sc.trace_id());
        assert!(!upper.is_sampled());
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(span_context(bad).is_none(), "{bad}");
        }
    }
}
