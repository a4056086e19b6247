//! The spans every sampled request records (its HTTP span, its MCP operation, its Redis
//! calls), kept as small records instead of `tracing` spans.
//!
//! Why: a `tracing` span exported through `tracing-opentelemetry` goes through the subscriber's
//! registry on every poll of the future it instruments (enter, exit, lookups), a field visitor,
//! the SDK's span builder and its `SpanData`; measured, that was most of the cost of tracing
//! (BENCHMARKS.md, "The cost of tracing"). A [`LiveSpan`] is one allocation holding the ids and
//! the attributes; when its last handle drops it is encoded straight into the OTLP/HTTP batch
//! ([`super::direct`]), or, with the gRPC exporter, handed to the SDK's batch queue as a
//! `SpanData`.
//!
//! Which span runs now is a Tokio task-local ([`within`]), read by [`innermost`]. The rarer
//! spans (a resumed stream, a hop received from another pod, a task's run) stay `tracing`
//! spans; [`innermost`] tells which of the two kinds is the more recent, and [`adopt`] places a
//! `tracing` span under a [`LiveSpan`].

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::context::HttpRequest;

/// A span being recorded; clones share it, and it ends (is queued for export) when the last
/// clone drops, as a `tracing` span does, unless [`LiveSpan::end_at`] ended it before.
#[derive(Clone)]
pub struct LiveSpan(Arc<Inner>);

impl std::fmt::Debug for LiveSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LiveSpan")
            .field(&self.0.context.span_id())
            .finish()
    }
}

struct Inner {
    context: SpanContext,
    parent: Option<(SpanId, bool)>,
    kind: SpanKind,
    start: SystemTime,
    data: parking_lot::Mutex<Data>,
}

/// What changes while the span runs.
struct Data {
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    /// Linked contexts and why (the `abacus.link` attribute).
    links: Vec<(SpanContext, &'static str)>,
    status: Status,
    end: Option<SystemTime>,
    exported: bool,
}

/// The scope spans are reported under (the one `tracing-opentelemetry`'s tracer has).
fn scope() -> &'static InstrumentationScope {
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();
    SCOPE.get_or_init(|| InstrumentationScope::builder("abacus").build())
}

fn random_span_id() -> SpanId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

fn random_trace_id() -> TraceId {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

impl LiveSpan {
    /// Starts a sampled span named `name`, a child of `parent` (in its trace, keeping its trace
    /// state), or the root of a new trace. Sampling is decided before this is called.
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> LiveSpan {
        Self::start_at(name, kind, parent, attributes, SystemTime::now())
    }

    /// [`LiveSpan::start`] for a span that began at `start` (a call made before its parent
    /// was known).
    pub fn start_at(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
        start: SystemTime,
    ) -> LiveSpan {
        let (trace_id, state, up) = match parent.filter(|p| p.is_valid()) {
            Some(p) => (
                p.trace_id(),
                p.trace_state().clone(),
                Some((p.span_id(), p.is_remote())),
            ),
            None => (random_trace_id(), TraceState::NONE, None),
        };
        let context = SpanContext::new(
            trace_id,
            random_span_id(),
            TraceFlags::SAMPLED,
            false,
            state,
        );
        LiveSpan(Arc::new(Inner {
            context,
            parent: up,
            kind,
            start,
            data: parking_lot::Mutex::new(Data {
                name: name.into(),
                attributes,
                events: Vec::new(),
                links: Vec::new(),
                status: Status::Unset,
                end: None,
                exported: false,
            }),
        }))
    }

    /// Its ids (its children's parent, a message's `traceparent`).
    pub fn context(&self) -> &SpanContext {
        &self.0.context
    }

    /// Adds (or, for a key set before, overrides) an attribute.
    pub fn set_attribute(&self, kv: KeyValue) {
        let mut data = self.0.data.lock();
        match data.attributes.iter_mut().find(|a| a.key == kv.key) {
            Some(a) => *a = kv,
            None => data.attributes.push(kv),
        }
    }

    /// Marks it failed: `error.type` and an error status, as the OTel conventions ask.
    pub fn set_error(&self, kind: impl Into<opentelemetry::Value>) {
        self.set_attribute(KeyValue::new("error.type", kind.into()));
        self.0.data.lock().status = Status::error("");
    }

    /// Links it to another span (`abacus.link` says why).
    pub fn add_link(&self, to: SpanContext, why: &'static str) {
        self.0.data.lock().links.push((to, why));
    }

    /// Records an event at this instant.
    pub fn add_event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        let event = Event::new(name, SystemTime::now(), attributes, 0);
        self.0.data.lock().events.push(event);
    }

    /// Ends it now (later changes are lost), or at `at`, and queues it for export.
    pub fn end_at(&self, at: SystemTime) {
        let inner = &*self.0;
        let mut data = inner.data.lock();
        data.end = Some(at);
        export(inner.parts(), &mut data);
    }
}

impl Inner {
    fn parts(&self) -> Fixed<'_> {
        Fixed {
            context: &self.context,
            parent: self.parent,
            kind: &self.kind,
            start: self.start,
        }
    }
}

/// What does not change while a span runs.
struct Fixed<'a> {
    context: &'a SpanContext,
    parent: Option<(SpanId, bool)>,
    kind: &'a SpanKind,
    start: SystemTime,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Inner {
            context,
            parent,
            kind,
            start,
            data,
        } = self;
        let fixed = Fixed {
            context,
            parent: *parent,
            kind,
            start: *start,
        };
        export(fixed, data.get_mut());
    }
}

/// Hands a finished span to the export queue, once.
fn export(inner: Fixed<'_>, data: &mut Data) {
    if std::mem::replace(&mut data.exported, true) || !super::otel::enabled() {
        return;
    }
    let (parent_span_id, parent_span_is_remote) = inner.parent.unwrap_or((SpanId::INVALID, false));
    if let Some(direct) = super::otel::direct() {
        direct.push(&super::otlp::SpanView {
            context: inner.context,
            parent_span_id,
            parent_span_is_remote,
            kind: inner.kind,
            name: &data.name,
            start: inner.start,
            end: data.end.unwrap_or_else(SystemTime::now),
            attributes: &data.attributes,
            dropped_attributes: 0,
            events: &data.events,
            dropped_events: 0,
            links: super::otlp::Links::Reasoned(&data.links),
            dropped_links: 0,
            status: &data.status,
        });
        return;
    }
    let mut events = SpanEvents::default();
    events.events = std::mem::take(&mut data.events);
    let mut links = SpanLinks::default();
    links.links = (data.links.drain(..))
        .map(|(to, why)| Link::new(to, vec![KeyValue::new(super::otlp::LINK_REASON, why)], 0))
        .collect();
    super::otel::queue(SpanData {
        span_context: inner.context.clone(),
        parent_span_id,
        parent_span_is_remote,
        span_kind: inner.kind.clone(),
        name: std::mem::take(&mut data.name),
        start_time: inner.start,
        end_time: data.end.unwrap_or_else(SystemTime::now),
        attributes: std::mem::take(&mut data.attributes),
        dropped_attributes_count: 0,
        events,
        links,
        status: std::mem::replace(&mut data.status, Status::Unset),
        instrumentation_scope: scope().clone(),
    });
}

/// The span a task runs in: known from the start, or filled in once the request's session is
/// read (a session's request is a child of the session's context, found only then).
#[derive(Clone)]
pub struct Scope {
    slot: Slot,
    /// The `tracing` span that was current when this scope began: a different current one
    /// was entered inside this scope, and is the more recent.
    outer: Option<tracing::Id>,
}

#[derive(Clone)]
enum Slot {
    Known(Option<LiveSpan>),
    Pending(Arc<Pending>),
}

/// A request waiting for its session, and the span decided then.
struct Pending {
    request: HttpRequest,
    span: OnceLock<Option<LiveSpan>>,
}

impl Scope {
    /// A scope running `span` (`None`: a request that is not sampled).
    pub fn of(span: Option<LiveSpan>) -> Scope {
        Scope {
            slot: Slot::Known(span),
            outer: tracing::Span::current().id(),
        }
    }

    /// A scope whose span, for `request`, is decided later ([`Scope::fill`]).
    pub fn pending(request: HttpRequest) -> Scope {
        Scope {
            slot: Slot::Pending(Arc::new(Pending {
                request,
                span: OnceLock::new(),
            })),
            outer: tracing::Span::current().id(),
        }
    }

    /// The span, if decided and sampled.
    pub fn span(&self) -> Option<LiveSpan> {
        match &self.slot {
            Slot::Known(s) => s.clone(),
            Slot::Pending(p) => p.span.get().cloned().flatten(),
        }
    }

    /// Decides a pending scope's span (`make` runs once; later calls keep the first answer).
    pub fn fill(&self, make: impl FnOnce(&HttpRequest) -> Option<LiveSpan>) {
        if let Slot::Pending(p) = &self.slot {
            p.span.get_or_init(|| make(&p.request));
        }
    }
}

tokio::task_local! {
    static CURRENT: Scope;
}

/// Runs `fut` with `scope` as its current span.
pub async fn within_scope<T>(scope: Scope, fut: impl std::future::Future<Output = T>) -> T {
    CURRENT.scope(scope, fut).await
}

/// Runs `fut` with `span` as its current span (`None`: nothing changes).
pub async fn within<T>(span: Option<LiveSpan>, fut: impl std::future::Future<Output = T>) -> T {
    match span {
        Some(s) => CURRENT.scope(Scope::of(Some(s)), fut).await,
        None => fut.await,
    }
}

/// The task's current scope, if any.
pub fn current_scope() -> Option<Scope> {
    CURRENT.try_with(Scope::clone).ok()
}

/// The span running now, of either kind.
pub enum Current {
    /// No span: traces off, or a request that is not sampled.
    None,
    /// A request's span.
    Live(LiveSpan),
    /// A `tracing` span (a resumed stream, a received hop, a task's run).
    Tracing(tracing::Span),
}

impl Current {
    /// Whether a span runs.
    pub fn is_some(&self) -> bool {
        !matches!(self, Current::None)
    }

    /// Its span context (starting a `tracing` span), if valid.
    pub fn span_context(&self) -> Option<SpanContext> {
        let sc = match self {
            Current::None => return None,
            Current::Live(s) => s.context().clone(),
            Current::Tracing(s) => s.context().span().span_context().clone(),
        };
        sc.is_valid().then_some(sc)
    }
}

/// The span running now: the task's [`LiveSpan`], unless a `tracing` span was entered inside
/// its scope (or there is no scope), then that one.
pub fn innermost() -> Current {
    let traced = tracing::Span::current();
    let scope =
        CURRENT.try_with(|s| (traced.id() == s.outer || traced.is_none()).then(|| s.span()));
    match scope {
        Ok(Some(Some(span))) => Current::Live(span),
        Ok(Some(None)) => Current::None,
        _ if traced.is_none() => Current::None,
        _ => Current::Tracing(traced),
    }
}

/// Places a new `tracing` span under the [`LiveSpan`] running now, if that is the innermost
/// span (its automatic parent would otherwise be an older `tracing` span, or none).
pub fn adopt(span: &tracing::Span) {
    if span.is_none() {
        return;
    }
    if let Current::Live(live) = innermost() {
        let parent = opentelemetry::Context::new().with_remote_span_context(live.context().clone());
        let _ = span.set_parent(parent);
    }
}

/// What a task spawned by a request keeps of its spans: its scope and the `tracing` span, so
/// that what it records (SSE events, Redis calls, messages it sends) stays in the request's
/// trace.
#[derive(Clone)]
pub struct Carried {
    scope: Option<Scope>,
    traced: tracing::Span,
}

impl Carried {
    /// The spans running now.
    pub fn capture() -> Carried {
        Carried {
            scope: current_scope(),
            traced: tracing::Span::current(),
        }
    }

    /// Runs `fut` under the captured spans.
    pub async fn run<T>(self, fut: impl std::future::Future<Output = T>) -> T {
        use tracing::Instrument as _;
        match self.scope {
            Some(scope) => CURRENT.scope(scope, fut).instrument(self.traced).await,
            None => fut.instrument(self.traced).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Instrument as _;

    fn span(name: &'static str) -> LiveSpan {
        LiveSpan::start(name, SpanKind::Server, None, Vec::new())
    }

    fn live_id(current: Current) -> Option<SpanId> {
        match current {
            Current::Live(s) => Some(s.context().span_id()),
            _ => None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_innermost_span_is_the_most_recently_entered_of_either_kind() {
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
        assert!(!innermost().is_some());
        let request = span("request");
        let id = request.context().span_id();
        within(Some(request.clone()), async {
            assert_eq!(live_id(innermost()), Some(id));
            let hop = tracing::info_span!("hop");
            async {
                assert!(matches!(innermost(), Current::Tracing(_)), "entered inside");
            }
            .instrument(hop)
            .await;
            assert_eq!(live_id(innermost()), Some(id));
        })
        .await;
        let outer = tracing::info_span!("task");
        async {
            let child = span("child");
            let child_id = child.context().span_id();
            within(Some(child), async {
                assert_eq!(live_id(innermost()), Some(child_id), "entered outside");
            })
            .await;
        }
        .instrument(outer)
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pending_scope_has_no_span_until_filled_and_keeps_the_first() {
        let scope = Scope::of(None);
        within_scope(scope, async { assert!(!innermost().is_some()) }).await;
        let request = HttpRequest::for_tests();
        let scope = Scope::pending(request);
        assert!(scope.span().is_none());
        let first = span("first");
        let id = first.context().span_id();
        scope.fill(|_| Some(first));
        scope.fill(|_| Some(span("second")));
        assert_eq!(scope.span().map(|s| s.context().span_id()), Some(id));
        let carried = within_scope(scope, async { Carried::capture() }).await;
        carried
            .run(async { assert_eq!(live_id(innermost()), Some(id)) })
            .await;
    }

    #[test]
    fn children_share_the_trace_and_attributes_are_set_once_per_key() {
        let parent = span("parent");
        let child = LiveSpan::start("child", SpanKind::Client, Some(parent.context()), vec![]);
        assert_eq!(child.context().trace_id(), parent.context().trace_id());
        assert_ne!(child.context().span_id(), parent.context().span_id());
        assert!(child.context().is_sampled() && !child.context().is_remote());
        child.set_attribute(KeyValue::new("a", 1));
        child.set_attribute(KeyValue::new("a", 2));
        child.set_error("boom");
        let data = child.0.data.lock();
        assert_eq!(data.attributes.len(), 2);
        assert_eq!(data.attributes[0], KeyValue::new("a", 2));
        assert!(matches!(data.status, Status::Error { .. }));
    }
}
