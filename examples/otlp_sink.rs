//! The collector `make bench` exports traces to when it measures what tracing costs: an
//! OTLP/HTTP endpoint on loopback that accepts every `POST /v1/traces` at once and keeps only
//! counts, so the figures are Abacus's cost and not a collector's.
//!
//! `PORT=0 cargo run --release --example otlp_sink` prints `otlp sink listening on ADDR`;
//! `GET /stats` answers `requests bytes`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;

#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// An empty body is an `ExportTraceServiceResponse` with nothing rejected.
async fn export(
    State(r): State<Arc<Received>>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    r.requests.fetch_add(1, Ordering::Relaxed);
    r.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    ([("content-type", "application/x-protobuf")], Vec::new())
}

async fn stats(State(r): State<Arc<Received>>) -> String {
    format!(
        "{} {}\n",
        r.requests.load(Ordering::Relaxed),
        r.bytes.load(Ordering::Relaxed)
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!(
        "otlp sink listening on {}",
        listener.local_addr().expect("addr")
    );
    let app = Router::new()
        .route("/v1/traces", post(export))
        .route("/stats", get(stats))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(Arc::new(Received::default()));
    axum::serve(listener, app).await.expect("serve");
}
