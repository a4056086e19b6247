//! What one request span costs on each recording path, without HTTP or a collector: the
//! measurement behind the next step of the tracing-cost work (`BENCHMARKS.md`, "The cost of
//! tracing"). Each path records a span with the attributes of Abacus's HTTP server span:
//!
//! - `tracing`: `tracing::info_span!` through `tracing-opentelemetry` (what Abacus does now),
//!   entered once and dropped;
//! - `sdk`: the OpenTelemetry SDK's tracer directly (`span_builder` … `end`);
//! - `encode`: turning finished spans into the OTLP protobuf request, per span (the export
//!   thread's share, without the HTTP post), through the stock conversion (what the
//!   `opentelemetry-otlp` exporter does) and through Abacus's own encoder (`telemetry::otlp`,
//!   what the HTTP/protobuf export does since 2026-12-06).
//!
//! `cargo run --release --example span_cost` prints nanoseconds per span for each.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use prost::Message;
use tracing_subscriber::layer::SubscriberExt;

const N: u32 = 200_000;

/// Keeps the last few finished spans (for the encoder) and drops the rest, so that only the
/// recording is measured.
#[derive(Debug, Default, Clone)]
struct Keep(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Keep {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
    fn on_end(&self, span: SpanData) {
        let mut kept = self.0.lock().unwrap();
        if kept.len() < 512 {
            kept.push(span);
        }
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: std::time::Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn per_span(start: Instant, n: u32) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let keep = Keep::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(keep.clone())
        .build();
    let tracer = provider.tracer("abacus");

    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(tracer.clone())
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false),
    );
    let through_tracing = tracing::subscriber::with_default(subscriber, || {
        let start = Instant::now();
        for _ in 0..N {
            let span = tracing::info_span!(
                "http.request",
                otel.name = "POST /mcp",
                otel.kind = "server",
                http.request.method = "POST",
                url.path = "/mcp",
                http.response.status_code = 200,
                network.protocol.version = "1.1",
                client.address = "127.0.0.1",
            );
            drop(span.enter());
        }
        per_span(start, N)
    });

    let start = Instant::now();
    for _ in 0..N {
        let mut span = tracer
            .span_builder("POST /mcp")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", "/mcp"),
                KeyValue::new("http.response.status_code", 200),
                KeyValue::new("network.protocol.version", "1.1"),
                KeyValue::new("client.address", "127.0.0.1"),
            ])
            .start(&tracer);
        span.end();
    }
    let direct = per_span(start, N);

    let batch: Vec<SpanData> = keep.0.lock().unwrap().drain(..).collect();
    let resource =
        ResourceAttributesWithSchema::from(&opentelemetry_sdk::Resource::builder().build());
    let rounds = 200;
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        let spans = group_spans_by_resource_and_scope(batch.clone(), &resource);
        let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans: spans,
        };
        bytes = request.encode_to_vec().len();
    }
    let encode = per_span(start, rounds * batch.len() as u32);

    let ours = abacus::telemetry::otlp::EncodedResource::new(
        &opentelemetry_sdk::Resource::builder().build(),
    );
    let start = Instant::now();
    let mut our_bytes = 0;
    for _ in 0..rounds {
        our_bytes = abacus::telemetry::otlp::encode_request(&batch, &ours).len();
    }
    let our_encode = per_span(start, rounds * batch.len() as u32);

    println!("tracing-opentelemetry: {through_tracing:.0} ns per span");
    println!("SDK directly:          {direct:.0} ns per span");
    println!(
        "OTLP encode:           {encode:.0} ns per span ({} spans, {bytes} bytes per batch)",
        batch.len()
    );
    println!("our encoder:           {our_encode:.0} ns per span ({our_bytes} bytes per batch)");
}
