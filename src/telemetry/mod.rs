//! Logs, metrics and traces. Logs are structured `tracing` events in text or JSON; their filter
//! can be changed live (it follows `LOG_LEVEL` through the live-settings channel) and applies to
//! the log output only, never to the spans exported as traces ([`otel`]). Metrics are in
//! [`metrics`].

pub mod metrics;
pub mod otel;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

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
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
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
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer())
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
