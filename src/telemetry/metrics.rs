//! Prometheus metrics. Names follow the reference server where it had them
//! (`mcp_active_sessions`, `mcp_calculations_total`) and the OpenTelemetry MCP semantic
//! conventions for the operation duration (`mcp.server.operation.duration`, exported here as
//! `mcp_server_operation_duration_seconds`). Label values come only from bounded sets (known
//! method names, registered tool names, status codes), never from raw input.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::session::SessionCounters;

/// Methods that get their own label value; anything else is counted as `other`.
const KNOWN_METHODS: [&str; 24] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "response",
    "GET",
    "DELETE",
    "OPTIONS",
    "batch",
];

/// Returns `method` if it is a known method name, else `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: u16,
}

/// An exemplar's labels: the trace of one sampled request, so a slow bucket leads to a trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceExemplar {
    trace_id: String,
}

/// The exemplar of the request running now, when it is traced and sampled: at most one every
/// 100 ms per process (a scrape shows the last one per bucket; taking one per request would
/// cost every sampled request a trace-id string).
fn exemplar() -> Option<TraceExemplar> {
    static LAST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if !super::otel::enabled() {
        return None;
    }
    let now = crate::session::now_ms();
    let last = LAST_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) < 100 {
        return None;
    }
    let trace_id = super::context::sampled_trace_id()?;
    LAST_MS.store(now, std::sync::atomic::Ordering::Relaxed);
    Some(TraceExemplar { trace_id })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    mcp_method_name: &'static str,
    gen_ai_tool_name: &'static str,
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigInfoLabels {
    hash: String,
    resource_version: String,
}

/// Interns a registered tool name for use as a label value without a per-request allocation.
/// Only names of registered tools reach here, so the set is bounded by the toolsets.
pub fn intern_tool(name: &str) -> &'static str {
    intern(name)
}

/// The span name `{method} {tool}` of a call to a registered tool, made once: a sampled call
/// then names its span without formatting. Both parts are interned already (a known method,
/// a registered tool), so the set is bounded as [`intern_tool`]'s is.
pub fn tool_span_name(method: &'static str, tool: &'static str) -> &'static str {
    type Key = (&'static str, &'static str);
    static NAMES: Table<Key> = parking_lot::RwLock::new(Vec::new());
    interned(
        &NAMES,
        |((m, t), _)| std::ptr::eq(*m, method) && std::ptr::eq(*t, tool),
        || ((method, tool), format!("{method} {tool}")),
    )
}

/// Interns a label value from a bounded, code-defined set (tool and operation names).
fn intern(name: &str) -> &'static str {
    static NAMES: Table<()> = parking_lot::RwLock::new(Vec::new());
    interned(&NAMES, |(_, n)| *n == name, || ((), name.to_owned()))
}

/// Leaked strings, each with the key it was made for.
type Table<K> = parking_lot::RwLock<Vec<(K, &'static str)>>;

/// The string `table` holds for the entry `same` finds, else one made by `make` (once, even
/// when callers race) and kept for good.
fn interned<K>(
    table: &Table<K>,
    same: impl Fn(&(K, &'static str)) -> bool,
    make: impl FnOnce() -> (K, String),
) -> &'static str {
    if let Some((_, s)) = table.read().iter().find(|e| same(e)) {
        return s;
    }
    let mut entries = table.write();
    if let Some((_, s)) = entries.iter().find(|e| same(e)) {
        return s;
    }
    let (key, text) = make();
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    entries.push((key, leaked));
    leaked
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    active_sessions: Gauge,
    /// Tasks (the Tasks extension) running on this node.
    tasks_running: Gauge,
    calculations: Family<OperationLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, HistogramWithExemplars<TraceExemplar>>,
    session_durations: HistogramWithExemplars<TraceExemplar>,
    sessions_created: Counter,
    sessions_expired: Counter,
    sessions_deleted: Counter,
    store_loads: Counter,
    signals_sent: Counter,
    signals_received: Counter,
    store_commands: Counter,
    store_command_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    store_command_errors: Counter,
    store_up: Gauge,
    open_streams: Gauge,
    connections: Gauge,
    connections_refused: Family<RefusalLabels, Counter>,
    spans: Family<SpanLabels, Counter>,
    span_counters: std::sync::OnceLock<Arc<super::otel::SpanCounters>>,
    config_reloads: Family<ReloadLabels, Counter>,
    config_info: Family<ConfigInfoLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let active_sessions = Gauge::default();
        registry.register(
            "mcp_active_sessions",
            "Number of active sessions (live session records; never negative)",
            active_sessions.clone(),
        );
        let tasks_running = Gauge::default();
        registry.register(
            "abacus_tasks_running",
            "Tasks (MCP Tasks extension) running on this node now",
            tasks_running.clone(),
        );
        let calculations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "mcp_calculations",
            "Total number of calculations performed",
            calculations.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "mcp_requests",
            "MCP endpoint requests by JSON-RPC method (or HTTP verb) and HTTP status",
            requests.clone(),
        );
        let durations =
            Family::<DurationLabels, HistogramWithExemplars<TraceExemplar>>::new_with_constructor(
                || {
                    HistogramWithExemplars::new(
                        [
                            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                            5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                        ]
                        .into_iter(),
                    )
                },
            );
        registry.register(
            "mcp_server_operation_duration_seconds",
            "Duration of MCP request handling (OTel mcp.server.operation.duration); exemplars \
             carry the trace id of sampled requests",
            durations.clone(),
        );
        let session_durations = HistogramWithExemplars::new(
            [
                1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
            ]
            .into_iter(),
        );
        registry.register(
            "mcp_server_session_duration_seconds",
            "Lifetime of sessions that ended on this node, by DELETE or found expired (OTel \
             mcp.server.session.duration); in Redis mode idle expiry happens inside Redis and \
             is not observed",
            session_durations.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let sessions_created = counter(&mut registry, "mcp_sessions_created", "Sessions created");
        let sessions_expired = counter(
            &mut registry,
            "mcp_sessions_expired",
            "Sessions ended by idle TTL or maximum lifetime",
        );
        let sessions_deleted = counter(
            &mut registry,
            "mcp_sessions_deleted",
            "Sessions ended by DELETE",
        );
        let open_streams = Gauge::default();
        registry.register(
            "mcp_open_streams",
            "SSE streams open on this node",
            open_streams.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "abacus_http_connections",
            "HTTP connections open on this node",
            connections.clone(),
        );
        let connections_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "abacus_http_connections_refused",
            "Connections closed at accept by a cap (reason: total or per_client)",
            connections_refused.clone(),
        );
        for reason in ["total", "per_client"] {
            let _ = connections_refused.get_or_create(&RefusalLabels { reason });
        }
        let spans = Family::<SpanLabels, Counter>::default();
        registry.register(
            "abacus_trace_spans",
            "Spans by outcome: exported, failed (the collector refused or did not answer) or \
             dropped (the export queue was full); all 0 while traces are off",
            spans.clone(),
        );
        for outcome in ["exported", "failed", "dropped"] {
            let _ = spans.get_or_create(&SpanLabels { outcome });
        }
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "abacus_config_reloads",
            "Configuration versions evaluated, by result (applied, rejected, restart_required)",
            config_reloads.clone(),
        );
        for result in ["applied", "rejected", "restart_required"] {
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }
        let config_info = Family::<ConfigInfoLabels, Gauge>::default();
        registry.register(
            "abacus_config_info",
            "The configuration this node runs: 1 for its content hash and source resourceVersion",
            config_info.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let store_loads = counter(
            &mut registry,
            "abacus_store_session_loads",
            "Session records read from Redis because this node held no valid copy (cold loads)",
        );
        let signals_sent = counter(
            &mut registry,
            "abacus_store_signals_sent",
            "Signals this node sent to the others through Redis (answers, cancels, invalidations)",
        );
        let signals_received = counter(
            &mut registry,
            "abacus_store_signals_received",
            "Signals received from the Redis bus (cross-node hops)",
        );
        let store_commands = counter(
            &mut registry,
            "abacus_store_commands",
            "Commands sent to Redis",
        );
        let store_command_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "abacus_store_command_seconds",
            "Total time of the commands sent to Redis (divide by abacus_store_commands for the mean)",
            store_command_seconds.clone(),
        );
        let store_command_errors = counter(
            &mut registry,
            "abacus_store_command_errors",
            "Redis commands that failed or timed out",
        );
        let store_up = Gauge::default();
        registry.register(
            "abacus_store_up",
            "1 while the session store answers (always 1 in memory mode)",
            store_up.clone(),
        );
        Self {
            store_loads,
            signals_sent,
            signals_received,
            store_commands,
            store_command_seconds,
            store_command_errors,
            store_up,
            config_reloads,
            config_info,
            registry,
            active_sessions,
            tasks_running,
            calculations,
            requests,
            durations,
            session_durations,
            sessions_created,
            sessions_expired,
            sessions_deleted,
            open_streams,
            connections,
            connections_refused,
            spans,
            span_counters: std::sync::OnceLock::new(),
        }
    }

    /// Reports the trace pipeline's counts on `/metrics` from now on.
    pub fn watch_spans(&self, counters: Arc<super::otel::SpanCounters>) {
        let _ = self.span_counters.set(counters);
    }

    /// Counts an accepted connection (until [`Metrics::connection_closed`]).
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// Counts a connection's end.
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// Counts a connection turned away at accept.
    pub fn connection_refused(&self, why: crate::http::server::Refusal) {
        let reason = match why {
            crate::http::server::Refusal::Total => "total",
            crate::http::server::Refusal::PerClient => "per_client",
        };
        self.connections_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Counts a successful calculation.
    pub fn calculation(&self, operation: &str) {
        self.calculations
            .get_or_create(&OperationLabels {
                operation: intern(operation),
            })
            .inc();
    }

    /// Counts an endpoint request by method label and status.
    pub fn request(&self, method: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { method, status })
            .inc();
    }

    /// Records the handling time of one MCP operation.
    pub fn operation(
        &self,
        method: &str,
        tool: Option<&'static str>,
        error: Option<&'static str>,
        seconds: f64,
    ) {
        self.durations
            .get_or_create(&DurationLabels {
                mcp_method_name: method_label(method),
                gen_ai_tool_name: tool.unwrap_or(""),
                error_type: error.unwrap_or(""),
            })
            .observe(seconds, exemplar(), None);
    }

    /// Counts a configuration version by result.
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Sets the running configuration's identity (one series at a time).
    pub fn config_info(&self, hash: &str, resource_version: Option<&str>) {
        let labels = ConfigInfoLabels {
            hash: hash.to_owned(),
            resource_version: resource_version.unwrap_or("").to_owned(),
        };
        if self.config_info.get(&labels).is_some() {
            return;
        }
        self.config_info.clear();
        self.config_info.get_or_create(&labels).set(1);
    }

    /// A gauge of open SSE streams, incremented for the lifetime of the returned guard.
    pub fn stream_guard(self: &Arc<Self>) -> StreamGuard {
        self.open_streams.inc();
        StreamGuard(self.clone())
    }

    /// Sets the number of tasks running on this node (read at each scrape).
    pub fn set_tasks_running(&self, running: usize) {
        self.tasks_running.set(running as i64);
    }

    /// Renders the exposition, after syncing session figures from the store.
    pub fn render(&self, live_sessions: u64, store_up: bool, counters: &SessionCounters) -> String {
        self.active_sessions.set(live_sessions as i64);
        self.store_up.set(i64::from(store_up));
        sync(&self.sessions_created, &counters.created);
        sync(&self.sessions_expired, &counters.expired);
        sync(&self.sessions_deleted, &counters.deleted);
        sync(&self.store_loads, &counters.store_loads);
        sync(&self.signals_sent, &counters.signals_sent);
        sync(&self.signals_received, &counters.signals_received);
        sync(&self.store_commands, &counters.store_commands);
        sync(&self.store_command_errors, &counters.store_command_errors);
        let seconds = SessionCounters::get(&counters.store_command_micros) as f64 / 1e6;
        let have = self.store_command_seconds.get();
        if seconds > have {
            self.store_command_seconds.inc_by(seconds - have);
        }
        for (seconds, trace) in counters.take_ended() {
            let trace = trace.map(|trace_id| TraceExemplar { trace_id });
            self.session_durations.observe(seconds, trace, None);
        }
        if let Some(c) = self.span_counters.get() {
            for (outcome, source) in [
                ("exported", &c.exported),
                ("failed", &c.failed),
                ("dropped", &c.dropped),
            ] {
                sync(&self.spans.get_or_create(&SpanLabels { outcome }), source);
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn sync(counter: &Counter, source: &AtomicU64) {
    let want = SessionCounters::get(source);
    let have = counter.get();
    if want > have {
        counter.inc_by(want - have);
    }
}

/// Decrements the open-streams gauge when dropped.
pub struct StreamGuard(Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_made_once_per_key() {
        let calc = intern_tool(&String::from("calculate"));
        assert!(
            std::ptr::eq(calc, intern_tool("calculate")),
            "one copy per name"
        );
        let greet = intern_tool("greet");
        let name = tool_span_name(method_label("tools/call"), calc);
        assert_eq!(name, "tools/call calculate");
        assert!(std::ptr::eq(
            name,
            tool_span_name(method_label("tools/call"), calc)
        ));
        assert_eq!(
            tool_span_name(method_label("tools/call"), greet),
            "tools/call greet"
        );
    }

    #[test]
    fn exposition_has_the_reference_names() {
        let m = Metrics::new();
        m.calculation("add");
        m.request(method_label("tools/call"), 200);
        m.request(method_label("evil{label}"), 404);
        m.operation("tools/call", Some("calculate"), None, 0.001);
        let c = SessionCounters::default();
        SessionCounters::add(&c.created, 3);
        let text = m.render(2, true, &c);
        assert!(
            text.contains("mcp_calculations_total{operation=\"add\"} 1"),
            "{text}"
        );
        assert!(text.contains("mcp_active_sessions 2"));
        assert!(text.contains("mcp_sessions_created_total 3"));
        assert!(text.contains("method=\"other\""));
        assert!(text.contains("mcp_server_operation_duration_seconds_bucket"));
        m.config_reload("rejected");
        m.config_info("abc", Some("7"));
        m.config_info("def", Some("8"));
        let text = m.render(2, true, &c);
        assert!(
            text.contains("abacus_config_reloads_total{result=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("abacus_config_reloads_total{result=\"applied\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("abacus_config_info{hash=\"def\",resource_version=\"8\"} 1"),
            "{text}"
        );
        assert!(!text.contains("hash=\"abc\""), "{text}");
    }
}
