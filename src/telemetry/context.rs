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

use std::sync::Arc;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceState};
use opentelemetry::{Context, KeyValue};
use serde_json::{Map, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::otel::enabled;

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
    if !enabled() || !headers.contains_key("traceparent") {
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
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags & 1),
        true,
        TraceState::NONE,
    );
    sc.is_valid().then_some(sc)
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

/// The `traceparent` of a span (starting it, so call after its parent is set); `None` while
/// traces are off or for a disabled span.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() || span.is_none() {
        return None;
    }
    traceparent_of(&span.context())
}

/// The `traceparent` of the span running now (the producer of a message about to leave).
pub fn current_traceparent() -> Option<String> {
    traceparent(&tracing::Span::current())
}

fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Links `span` to the stored context `traceparent`, saying why (`abacus.link`: `session`,
/// `handle`, `producer`, `transport`).
pub fn link(span: &tracing::Span, traceparent: Option<&str>, why: &'static str) {
    if let Some(sc) = traceparent.and_then(span_context) {
        span.add_link_with_attributes(sc, vec![KeyValue::new("abacus.link", why)]);
    }
}

/// The HTTP server span of one request (OTel HTTP semantic conventions), with `parent` (a
/// client's context from the headers, or a session's).
fn http_span(http: &HttpRequest, parent: Option<Context>) -> tracing::Span {
    // `&str` fields are recorded as they are; `%` would format each one into a new string.
    let name = match (http.method.as_str(), http.path.as_ref()) {
        ("POST", "/mcp") => std::borrow::Cow::Borrowed("POST /mcp"),
        ("GET", "/mcp") => std::borrow::Cow::Borrowed("GET /mcp"),
        (m, p) => std::borrow::Cow::Owned(format!("{m} {p}")),
    };
    let span = tracing::info_span!(
        "http.request",
        otel.name = name.as_ref(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = http.method.as_str(),
        url.path = http.path.as_ref(),
        http.response.status_code = tracing::field::Empty,
        network.protocol.version = "1.1",
        client.address = %http.peer,
        error.type = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    span
}

/// What an HTTP span names, kept until the span can be created.
#[derive(Debug, Clone)]
struct HttpRequest {
    method: axum::http::Method,
    path: std::borrow::Cow<'static, str>,
    peer: std::net::IpAddr,
}

/// A request whose HTTP span waits for its session (see [`request_span`]).
#[derive(Debug, Clone)]
pub struct PendingSpan(Arc<parking_lot::Mutex<(HttpRequest, Option<tracing::Span>)>>);

impl PendingSpan {
    /// The span, once the session was read (`Span::none()` if it was not sampled).
    pub fn span(&self) -> tracing::Span {
        self.0.lock().1.clone().unwrap_or_else(tracing::Span::none)
    }
}

tokio::task_local! {
    static PENDING: PendingSpan;
}

/// Runs a request's future with its pending span reachable by [`session_span`].
pub async fn with_pending<T>(pending: PendingSpan, fut: impl std::future::Future<Output = T>) -> T {
    PENDING.scope(pending, fut).await
}

/// The HTTP span of a request, decided before anything is created: a request that will not be
/// sampled gets `Span::none()` and costs no span at all.
/// - A client's context in the headers is the parent, and its sampled flag decides (under a
///   parent-based policy).
/// - A session's request (`Mcp-Session-Id` to `/mcp`, no client context) waits for its
///   session: the returned [`PendingSpan`] is filled by [`session_span`], under the session's
///   context and following its sampling.
/// - Anything else is a new trace, sampled at the policy's ratio.
pub fn request_span(
    req: &axum::http::Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
) -> (tracing::Span, Option<PendingSpan>) {
    if !enabled() {
        return (tracing::Span::none(), None);
    }
    let path = req.uri().path();
    let http = HttpRequest {
        method: req.method().clone(),
        path: match path {
            "/mcp" => std::borrow::Cow::Borrowed("/mcp"),
            other => std::borrow::Cow::Owned(other.to_owned()),
        },
        peer: peer.ip(),
    };
    if let Some(client) = from_headers(req.headers()) {
        let sampled = client.span().span_context().is_sampled();
        let span = if super::otel::sample_with_parent(sampled) {
            http_span(&http, Some(client))
        } else {
            tracing::Span::none()
        };
        return (span, None);
    }
    if req.headers().contains_key("mcp-session-id") && http.path == "/mcp" {
        let pending = PendingSpan(Arc::new(parking_lot::Mutex::new((http, None))));
        return (tracing::Span::none(), Some(pending));
    }
    let span = if super::otel::sample_root() {
        http_span(&http, None)
    } else {
        tracing::Span::none()
    };
    (span, None)
}

/// The HTTP span of a session's request, once the session's context (`traceparent`) is
/// known: its child, so that the whole session is one trace whichever pod serves each
/// request, if the session is sampled. A request whose span already exists (the client sent a
/// context) keeps it. Returns the span to run the rest of the request in.
pub fn session_span(session: Option<&str>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let Ok(pending) = PENDING.try_with(PendingSpan::clone) else {
        return tracing::Span::current();
    };
    let mut slot = pending.0.lock();
    if let Some(span) = &slot.1 {
        return span.clone();
    }
    let parent = session.and_then(span_context);
    let sampled = match (&parent, session) {
        (_, Some(UNSAMPLED_SESSION)) => super::otel::sample_with_parent(false),
        (Some(sc), _) => super::otel::sample_with_parent(sc.is_sampled()),
        (None, _) => super::otel::sample_root(),
    };
    let span = if sampled {
        let parent = parent.map(|sc| Context::new().with_remote_span_context(sc));
        http_span(&slot.0, parent)
    } else {
        tracing::Span::none()
    };
    slot.1 = Some(span.clone());
    span
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
        None => (!tracing::Span::current().is_none()).then_some(None),
    }
}

/// Places a new (not yet started) operation span: `client` (from [`operation_placement`]) is
/// its parent, the HTTP span, its default parent, becoming a link; it links to the session's
/// (or handle's) context `session`.
pub fn place_operation(span: &tracing::Span, client: Option<Context>, session: Option<&str>) {
    if span.is_none() {
        return;
    }
    if let Some(client) = client {
        let transport = tracing::Span::current().context();
        let _ = span.set_parent(client);
        let t = transport.span().span_context().clone();
        if t.is_valid() {
            span.add_link_with_attributes(t, vec![KeyValue::new("abacus.link", "transport")]);
        }
    }
    link(span, session, "session");
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
    link(&span, producer, "producer");
    span
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
    use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
    let Some(tracer) = super::otel::tracer() else {
        return;
    };
    if calls.is_empty() {
        return;
    }
    let parent = tracing::Span::current().context();
    for call in calls {
        let mut span = tracer
            .span_builder(call.name)
            .with_kind(SpanKind::Client)
            .with_start_time(call.start)
            .with_attributes(call.attributes)
            .start_with_context(tracer, &parent);
        if let Some(kind) = call.error {
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(kind));
        }
        span.end_with_timestamp(call.end);
    }
}

/// Records an SSE message written as an `sse.message` event on the span running now.
pub fn sse_event(id: Option<&str>, bytes: usize) {
    if !enabled() {
        return;
    }
    let span = tracing::Span::current();
    if span.is_none() {
        return;
    }
    let mut attributes = vec![KeyValue::new("messaging.message.body.size", bytes as i64)];
    if let Some(id) = id {
        attributes.push(KeyValue::new("sse.event.id", id.to_owned()));
    }
    span.add_event("sse.message", attributes);
}

/// A JSON-RPC id as the `jsonrpc.request.id` attribute: a string id as it is, a number as text.
pub fn request_id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The span context of the span running now (starting it), if traces are on and it is valid.
fn current_span_context() -> Option<SpanContext> {
    let span = tracing::Span::current();
    if !enabled() || span.is_none() {
        return None;
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace id of the span running now if it is sampled (a metric exemplar's link to it).
pub fn sampled_trace_id() -> Option<String> {
    current_span_context()
        .filter(SpanContext::is_sampled)
        .map(|sc| sc.trace_id().to_string())
}

/// The trace and span id of the span running now, for log lines (starting it).
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
    }
}
