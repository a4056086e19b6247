//! OTLP traces, opt-in: with no endpoint configured (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `spec.telemetry.endpoint`), or with
//! `OTEL_SDK_DISABLED=true`, there is no exporter, no background thread, and the request path
//! creates no span ([`enabled`]).
//!
//! The exporter, sampler and batch queue follow the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc`, the stock tonic exporter, or `http/protobuf`,
//! Abacus's own encoder in [`super::otlp`], which costs the shared core less), and the
//! document's `spec.telemetry` for what the environment leaves unset. The resource names this pod
//! (`service.instance.id` = `POD_NAME`, `k8s.*` from the downward API), with
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` winning. A full export queue drops spans,
//! counted in [`SpanCounters`], and never slows a request. Over HTTP the request path's spans
//! skip the SDK's queue ([`super::direct`]). The design notes are in `docs/design/tracing.md`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{ExporterBuildError, SpanExporter, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanProcessor,
};

use super::TelemetrySettings;
use opentelemetry_sdk::Resource;
use tokio_util::sync::CancellationToken;

/// Whether spans are exported: the request path creates spans only then.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The export queue the request path's spans ([`super::span::LiveSpan`]) go to, the same one
/// the `tracing` spans reach through the SDK.
static QUEUE: std::sync::OnceLock<Arc<CountingProcessor>> = std::sync::OnceLock::new();

/// The OTLP/HTTP queue request spans are encoded into as they end, when exporting over HTTP.
static DIRECT: std::sync::OnceLock<Arc<super::direct::DirectQueue>> = std::sync::OnceLock::new();

/// The queue request spans go to without a `SpanData` (OTLP/HTTP only); `None`: use [`queue`].
pub fn direct() -> Option<&'static super::direct::DirectQueue> {
    DIRECT.get().map(|q| &**q)
}

/// Queues a finished span for export (counted as dropped when the queue is full).
pub fn queue(span: SpanData) {
    if let Some(q) = QUEUE.get() {
        q.on_end(span);
    }
}

/// True once an exporter is running; checked before creating any request span, so that tracing
/// off costs one atomic load per request.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The environment's value, else the document's (`spec.telemetry`), if either is set.
fn setting(var: &str, document: &str) -> Option<String> {
    env_nonempty(var).or_else(|| Some(document.trim().to_owned()).filter(|v| !v.is_empty()))
}

/// Whether an endpoint comes from the environment (the exporter then reads it itself).
fn endpoint_in_env() -> bool {
    env_nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

/// Whether traces are asked for: an OTLP endpoint is set and the SDK is not disabled
/// (`OTEL_SDK_DISABLED`, which the SDK itself does not read, or `disabled`).
pub fn wanted(doc: &TelemetrySettings) -> bool {
    let disabled = match env_nonempty("OTEL_SDK_DISABLED") {
        Some(v) => v.trim().eq_ignore_ascii_case("true"),
        None => doc.disabled,
    };
    !disabled && (endpoint_in_env() || !doc.endpoint.trim().is_empty())
}

/// The OTLP transports Abacus speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The transport `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` (or the
/// document) names: `grpc` or `http/protobuf`, the default.
fn protocol(doc: &TelemetrySettings) -> Protocol {
    let named = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| setting("OTEL_EXPORTER_OTLP_PROTOCOL", &doc.protocol));
    match named.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("grpc") => Protocol::Grpc,
        _ => Protocol::HttpProtobuf,
    }
}

/// The two transports: gRPC through the stock exporter (tonic), HTTP/protobuf through ours
/// ([`super::otlp`], which encodes without the intermediate message types).
#[derive(Debug)]
enum Exporter {
    Grpc(SpanExporter),
    Http(super::otlp::HttpExporter),
}

/// Why no exporter could be built.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The stock (gRPC) exporter refused its configuration.
    #[error(transparent)]
    Grpc(#[from] ExporterBuildError),
    /// The HTTP client could not be built.
    #[error("OTLP/HTTP exporter: {0}")]
    Http(String),
}

/// The first of the variables (or `default`), a duration in ms (`OTEL_EXPORTER_OTLP_TIMEOUT`).
fn timeout() -> Duration {
    env_nonempty("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// Where HTTP exports go: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else the base
/// endpoint (environment, then document) with `/v1/traces`, as the specification says.
fn http_url(doc: &TelemetrySettings) -> String {
    if let Some(url) = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return url.trim().to_owned();
    }
    let base = setting("OTEL_EXPORTER_OTLP_ENDPOINT", &doc.endpoint).unwrap_or_default();
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

/// The OTLP exporter the environment (or the document) describes. The gRPC one reads its
/// headers and timeout itself; both must be built inside the Tokio runtime.
fn build_exporter(doc: &TelemetrySettings) -> Result<Exporter, ExporterError> {
    match protocol(doc) {
        Protocol::Grpc => {
            // An endpoint from the document only when the environment names none.
            let endpoint = (!endpoint_in_env()).then(|| doc.endpoint.trim().trim_end_matches('/'));
            let b = SpanExporter::builder().with_tonic();
            Ok(Exporter::Grpc(match endpoint {
                Some(e) => b.with_endpoint(e).build()?,
                None => b.build()?,
            }))
        }
        Protocol::HttpProtobuf => {
            let list = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_HEADERS"))
                .unwrap_or_default();
            let (headers, skipped) = super::otlp::parse_headers(&list);
            for key in skipped {
                // The key only: a header's value may be a credential.
                eprintln!("abacus: OTLP header {key:?} skipped: not a valid header");
            }
            super::otlp::HttpExporter::new(http_url(doc), headers, timeout())
                .map(Exporter::Http)
                .map_err(ExporterError::Http)
        }
    }
}

/// The head-sampling policy (`OTEL_TRACES_SAMPLER` / `_ARG`, else the document's). Abacus
/// decides *before* creating a request's spans, so that a request that will not be sampled
/// costs no span at all ([`sample_root`], [`sample_with_parent`]); the SDK is then told to
/// keep what was created (`AlwaysOn`, or `ParentBased(AlwaysOn)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Whether a parent's sampled flag decides (the `parentbased_*` samplers).
    pub parent_based: bool,
    /// The share of new (root) traces kept: 1 `always_on`, 0 `always_off`, else the ratio.
    pub ratio: f64,
}

impl Sampling {
    /// The policy the environment, else the document, names (default
    /// `parentbased_always_on`); an unknown name is the default, as the SDK does.
    fn from(doc: &TelemetrySettings) -> Sampling {
        let name = setting("OTEL_TRACES_SAMPLER", &doc.sampler).unwrap_or_default();
        let ratio = || {
            setting("OTEL_TRACES_SAMPLER_ARG", &doc.sampler_arg)
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(1.0)
        };
        let (parent_based, ratio) = match name.trim() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, ratio()),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, ratio()),
            _ => (true, 1.0),
        };
        Sampling {
            parent_based,
            ratio,
        }
    }

    /// What the SDK applies to the spans Abacus chose to create: keep them (following a
    /// parent's flag under a parent-based policy, as the decision already did).
    fn sdk_sampler(self) -> Sampler {
        if self.parent_based {
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
        } else {
            Sampler::AlwaysOn
        }
    }
}

static SAMPLING: std::sync::OnceLock<Sampling> = std::sync::OnceLock::new();

/// Whether a new trace (no parent) is sampled.
pub fn sample_root() -> bool {
    let ratio = SAMPLING.get().map_or(0.0, |s| s.ratio);
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}

/// Whether a request with a parent whose sampled flag is `parent_sampled` is sampled.
pub fn sample_with_parent(parent_sampled: bool) -> bool {
    match SAMPLING.get() {
        Some(s) if s.parent_based => parent_sampled,
        Some(_) => sample_root(),
        None => false,
    }
}

/// An RFC 4122 version 4 UUID, for `service.instance.id` outside Kubernetes.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The resource, weakest first (a later merge wins): SDK attributes, then ours, then the
/// document's attributes, then `OTEL_RESOURCE_ATTRIBUTES`, then the service name
/// (`OTEL_SERVICE_NAME`, else the document's).
fn build_resource(doc: &TelemetrySettings) -> Resource {
    let mut ours = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new(
            "service.instance.id",
            env_nonempty("POD_NAME").unwrap_or_else(uuid_v4),
        ),
    ];
    for (var, key) in [
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
    ] {
        if let Some(v) = env_nonempty(var) {
            ours.push(KeyValue::new(key, v));
        }
    }
    let mut b = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_service_name("abacus")
        .with_attributes(ours)
        .with_attributes(key_values(&doc.resource_attributes))
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = setting("OTEL_SERVICE_NAME", &doc.service_name) {
        b = b.with_service_name(name);
    }
    b.build()
}

/// `k=v,k2=v2` (the `OTEL_RESOURCE_ATTRIBUTES` format) as attributes; malformed pairs are
/// skipped.
fn key_values(list: &str) -> Vec<KeyValue> {
    list.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty()).then(|| KeyValue::new(k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// What left the export queue, and what never got in (for `/metrics`).
#[derive(Debug, Default)]
pub struct SpanCounters {
    in_flight: AtomicUsize,
    /// Spans dropped because the export queue was full (a slow or unreachable collector).
    pub dropped: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans in batches the collector refused or never answered.
    pub failed: AtomicU64,
}

/// The OTLP exporter, counting what it sends.
#[derive(Debug)]
struct CountingExporter {
    inner: Exporter,
    counters: Arc<SpanCounters>,
}

impl opentelemetry_sdk::trace::SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.counters.in_flight.fetch_sub(n, Ordering::AcqRel);
        let result = match &self.inner {
            Exporter::Grpc(e) => e.export(batch).await,
            Exporter::Http(e) => e.export(batch).await,
        };
        let counter = match result {
            Ok(()) => &self.counters.exported,
            Err(_) => &self.counters.failed,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        result
    }
    fn shutdown_with_timeout(&self, t: Duration) -> OTelSdkResult {
        match &self.inner {
            Exporter::Grpc(e) => e.shutdown_with_timeout(t),
            Exporter::Http(e) => e.shutdown_with_timeout(t),
        }
    }
    fn force_flush(&self) -> OTelSdkResult {
        match &self.inner {
            Exporter::Grpc(e) => e.force_flush(),
            Exporter::Http(e) => e.force_flush(),
        }
    }
    fn set_resource(&mut self, r: &Resource) {
        match &mut self.inner {
            Exporter::Grpc(e) => e.set_resource(r),
            Exporter::Http(e) => e.set_resource(r),
        }
    }
}

/// The batch processor behind the same bound as its queue, applied first, so that every span
/// the queue cannot take is counted (the SDK's own count is private).
#[derive(Debug)]
struct CountingProcessor {
    inner: BatchSpanProcessor,
    counters: Arc<SpanCounters>,
    max_queue: usize,
}

/// The provider's handle on the queue [`queue`] also feeds (its resource is set before it is
/// shared).
#[derive(Debug)]
struct SharedProcessor(Arc<CountingProcessor>);

impl SpanProcessor for SharedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx)
    }
    fn on_end(&self, span: SpanData) {
        self.0.on_end(span)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(t)
    }
    fn set_resource(&mut self, _: &Resource) {}
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx)
    }
    fn on_end(&self, span: SpanData) {
        if self.counters.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r)
    }
}

/// A positive number from the variable, else `default`.
fn env_count(var: &str, default: usize) -> usize {
    env_nonempty(var)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(default)
}

fn queue_size() -> usize {
    env_count(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        opentelemetry_sdk::trace::OTEL_BSP_MAX_QUEUE_SIZE_DEFAULT,
    )
}

/// A running trace pipeline: its provider (to flush at shutdown) and counters.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Stops the direct queue's task (it is flushed at shutdown).
    direct_stop: CancellationToken,
    /// What was exported, failed or dropped.
    pub counters: Arc<SpanCounters>,
}

impl Tracing {
    /// Starts the pipeline the environment (or the document's `spec.telemetry`) asks for;
    /// `Ok(None)` when it asks for none. Call inside the Tokio runtime.
    pub fn start(doc: &TelemetrySettings) -> Result<Option<Tracing>, ExporterError> {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
                Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
            ]),
        );
        if !wanted(doc) {
            return Ok(None);
        }
        let counters = Arc::new(SpanCounters::default());
        let max_queue = queue_size();
        let max_batch = env_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).min(max_queue);
        let resource = build_resource(doc);
        let exporter = build_exporter(doc)?;
        let direct_stop = CancellationToken::new();
        if let Exporter::Http(http) = &exporter {
            let mut http = http.clone();
            opentelemetry_sdk::trace::SpanExporter::set_resource(&mut http, &resource);
            let queue = Arc::new(super::direct::DirectQueue::new(
                http,
                counters.clone(),
                max_queue,
                max_batch,
                opentelemetry::InstrumentationScope::builder("abacus").build(),
            ));
            let delay = Duration::from_millis(env_count("OTEL_BSP_SCHEDULE_DELAY", 5000) as u64);
            tokio::spawn(queue.clone().run(delay, direct_stop.clone()));
            let _ = DIRECT.set(queue);
        }
        let processor = BatchSpanProcessor::builder(CountingExporter {
            inner: exporter,
            counters: counters.clone(),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(max_queue)
                .with_max_export_batch_size(max_batch)
                .build(),
        )
        .build();
        let sampling = Sampling::from(doc);
        let _ = SAMPLING.set(sampling);
        let mut counting = CountingProcessor {
            inner: processor,
            counters: counters.clone(),
            max_queue,
        };
        counting.set_resource(&resource);
        let shared = Arc::new(counting);
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampling.sdk_sampler())
            .with_resource(resource)
            .with_span_processor(SharedProcessor(shared.clone()))
            .build();
        let _ = QUEUE.set(shared);
        let tracing = Tracing {
            provider,
            direct_stop,
            counters,
        };
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(tracing))
    }

    /// The tracer the `tracing` layer records into.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer("abacus")
    }

    /// Exports what is queued and stops, within `bound`, off the runtime's worker threads.
    pub async fn shutdown(self, bound: Duration) {
        ENABLED.store(false, Ordering::Relaxed);
        let started = std::time::Instant::now();
        self.direct_stop.cancel();
        if let Some(direct) = direct() {
            if tokio::time::timeout(bound, direct.flush()).await.is_err() {
                tracing::warn!("request spans not all exported at shutdown");
            }
        }
        let bound = bound.saturating_sub(started.elapsed());
        let provider = self.provider;
        let join = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(bound));
        match tokio::time::timeout(bound + Duration::from_millis(500), join).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("traces not all exported at shutdown: {e}"),
            Ok(Err(e)) => tracing::warn!("trace shutdown failed: {e}"),
            Err(_) => tracing::warn!("trace shutdown timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_uuid_v4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(uuid_v4(), id);
    }
}
