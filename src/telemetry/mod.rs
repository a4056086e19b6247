//! Logs, metrics and traces. Logs are structured `tracing` events in text or JSON; their filter
//! can be changed live (it follows `LOG_LEVEL` through the live-settings channel) and applies to
//! the log output only, never to the spans exported as traces ([`otel`]). Metrics are in
//! [`metrics`].

pub mod context;
pub mod direct;
pub mod metrics;
pub mod otel;
pub mod otlp;
pub mod span;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// OTLP trace export as the configuration document sets it (`spec.telemetry`). The standard
/// `OTEL_*` variables win key by key, as everywhere else the environment wins; read once at
/// start-up (a change takes a restart). Secrets such as collector API keys belong in
/// `OTEL_EXPORTER_OTLP_HEADERS` (from a Secret), never in the document.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. `http://otel-collector:4317`; empty:
    /// no traces. For `http/protobuf` this is the base URL (`/v1/traces` is appended).
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub endpoint: String,
    /// `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`); default `http/protobuf`.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub protocol: String,
    /// `service.name` (`OTEL_SERVICE_NAME`); default `abacus`.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub service_name: String,
    /// More resource attributes, `key=value` pairs separated by commas
    /// (`OTEL_RESOURCE_ATTRIBUTES`).
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub resource_attributes: String,
    /// The sampler (`OTEL_TRACES_SAMPLER`): `parentbased_always_on` (default),
    /// `parentbased_traceidratio`, `traceidratio`, `always_on`, `always_off`,
    /// `parentbased_always_off`.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub sampler: String,
    /// The sampler's argument (`OTEL_TRACES_SAMPLER_ARG`), e.g. `0.1` for a ratio.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub sampler_arg: String,
    /// Turns traces off whatever else is set (`OTEL_SDK_DISABLED`).
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub disabled: bool,
}

/// Changes the active log filter at run time.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Applies a new filter directive; invalid ones are rejected and the old filter stays.
    pub fn set(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber: the log output behind the live filter, and, when `traces`
/// runs, the layer that exports spans (its own filter: Abacus's spans at info and above, none
/// from the HTTP and gRPC crates the exporter itself uses). Call once, before anything logs.
pub fn init_logging(
    directive: &str,
    format: LogFormat,
    traces: Option<&otel::Tracing>,
) -> LogControl {
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
                json: true,
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_ansi(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format().with_target(false),
                json: false,
            })
            .with_ansi(colour_wanted())
            .boxed(),
    };
    let exported = traces.map(|t| {
        let spans = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("h2", LevelFilter::OFF)
            .with_target("hyper", LevelFilter::OFF)
            .with_target("tonic", LevelFilter::OFF)
            .with_target("tower", LevelFilter::OFF)
            .with_target("reqwest", LevelFilter::OFF)
            .with_target("opentelemetry", LevelFilter::OFF);
        // Without context activation a span starts only when its context is first needed
        // (a child, a `traceparent` sent out), so a request's HTTP span can still be placed
        // under its session's context once the handler has read the session.
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer())
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(spans)
    });
    let result = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(exported)
        .try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    LogControl { handle }
}

/// A log format that adds `trace_id` and `span_id` to every line written inside an exported
/// span, so a log line leads to its trace (and back). Lines outside spans, and every line
/// while traces are off, are the inner format's, unchanged.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = context::current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json && writer.has_ansi_escapes() {
            // A terminal: the ids first, keeping the inner format's colours.
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        if self.json {
            let Some(open) = body.strip_suffix('}') else {
                return writeln!(writer, "{body}");
            };
            writeln!(
                writer,
                "{open},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            )
        } else {
            writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
        }
    }
}

/// Colour only for a person at a terminal: never into a file, a pipe or a container's log
/// stream, and never when `NO_COLOR` is set (no-color.org).
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Formats epoch milliseconds as ISO 8601 with milliseconds and `Z`, like JavaScript's
/// `Date.prototype.toISOString`.
pub fn iso_time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}
