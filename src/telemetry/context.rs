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

/// Reads one `traceparent` (and optional `tracestate`) held as text.
struct TextExtractor<'a>(&'a str);

impl Extractor for TextExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
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

/// Whether the headers carry a valid client context (then the HTTP span is its child).
pub fn headers_traced(headers: &axum::http::HeaderMap) -> bool {
    from_headers(headers).is_some()
}

/// A stored `traceparent` as a remote span context.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let cx = extract(&TextExtractor(traceparent))?;
    let sc = cx.span().span_context().clone();
    Some(SpanContext::new(
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags(),
        true,
        TraceState::NONE,
    ))
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

/// Puts the request's HTTP span (the span running now, not started yet) under its session's
/// context when the client sent none in its headers, so that the whole session is one trace
/// whichever pod serves each request.
pub fn adopt_session(headers: &axum::http::HeaderMap, session: Option<&str>) {
    if !enabled() || headers_traced(headers) {
        return;
    }
    if let Some(sc) = session.and_then(span_context) {
        let span = tracing::Span::current();
        if span
            .set_parent(Context::new().with_remote_span_context(sc.clone()))
            .is_err()
        {
            // Started already (a log line asked for its ids): the link keeps it reachable.
            span.add_link_with_attributes(sc, vec![KeyValue::new("abacus.link", "session")]);
        }
    }
}

/// Places a new (not yet started) operation span: a client context in `params._meta` is its
/// parent (SEP-414; the HTTP span, its default parent, becomes a link); it links to the
/// session's (or handle's) context `session`.
pub fn place_operation(span: &tracing::Span, params: &Map<String, Value>, session: Option<&str>) {
    if span.is_none() {
        return;
    }
    if let Some(client) = from_meta(params) {
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
    if !enabled() || producer.is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "abacus.receive",
        otel.name = %format!("receive {what}"),
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.operation.type = "receive",
        messaging.destination.name = "abacus:signals",
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

/// The trace id of the span running now if it is sampled (a metric exemplar's link to it).
pub fn sampled_trace_id() -> Option<String> {
    let span = tracing::Span::current();
    if !enabled() || span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// The trace and span id of the span running now, for log lines (starting it).
pub fn current_ids() -> Option<(String, String)> {
    let span = tracing::Span::current();
    if !enabled() || span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_traceparents_parse_as_remote_contexts() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
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
