//! Health and metrics endpoints. Liveness never depends on the store; readiness does (with a
//! bounded wait) and fails while draining, so a load balancer stops sending new work first.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppState;

/// Longest a health probe waits for the store.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

async fn store_ok(app: &AppState) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("store did not answer within 1 s".into()),
    }
}

/// `/health`: status, version, storage mode, live sessions (what the store holds) and uptime.
pub async fn health(State(app): State<AppState>) -> Response {
    let store = store_ok(&app).await;
    let sessions = match &store {
        Ok(()) => tokio::time::timeout(PROBE_TIMEOUT, app.store.live_sessions())
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    let status = match (&store, app.drain.is_draining()) {
        (Err(_), _) => "unhealthy",
        (Ok(()), true) => "draining",
        (Ok(()), false) => "healthy",
    };
    let mut body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "storageMode": app.store.mode(),
        "sessions": sessions,
        "sessionsScope": if app.store.mode() == "in-memory" { "node" } else { "cluster" },
        "uptime": app.started.elapsed().as_secs_f64(),
        "timestamp": crate::telemetry::iso_time(crate::session::now_ms()),
    });
    body["config"] = json!(app.live.status());
    if app.store.mode() == "redis" {
        body["redis"] = json!(if store.is_ok() {
            "connected"
        } else {
            "unreachable"
        });
        if store.is_ok() {
            if let Ok(Ok(Some(nodes))) =
                tokio::time::timeout(PROBE_TIMEOUT, app.store.nodes()).await
            {
                body["cluster"] = cluster_view(&nodes);
            }
        }
    }
    if let Err(e) = &store {
        body["error"] = json!(e);
    }
    let code = if store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// The live nodes with the configuration each one runs, and whether they all run the same.
fn cluster_view(nodes: &[crate::session::NodeReport]) -> serde_json::Value {
    let hashes: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.report["configHash"].as_str())
        .collect();
    json!({
        "nodes": nodes.iter().map(|n| json!({
            "node": n.node,
            "configHash": n.report["configHash"],
            "resourceVersion": n.report["resourceVersion"],
        })).collect::<Vec<_>>(),
        "configConverged": hashes.len() <= 1 && nodes.iter().all(|n| n.report["configHash"].is_string()),
    })
}

/// `/health/live`: the process is up and serving HTTP.
pub async fn live() -> Response {
    Json(json!({ "status": "alive" })).into_response()
}

/// `/health/ready`: 503 while draining or while the store is unreachable.
pub async fn ready(State(app): State<AppState>) -> Response {
    if app.drain.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    match store_ok(&app).await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": e })),
        )
            .into_response(),
    }
}

/// `/metrics` in the OpenMetrics text format (which Prometheus scrapes).
pub async fn metrics(State(app): State<AppState>) -> Response {
    let live = tokio::time::timeout(PROBE_TIMEOUT, app.store.live_sessions())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let up = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, app.store.ping()).await,
        Ok(Ok(()))
    );
    app.metrics
        .set_tasks_running(app.dispatcher.tasks.running());
    let text = app.metrics.render(live, up, app.store.counters());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
