//! HTTP concerns around the MCP endpoint: the router, error mapping, health and metrics
//! endpoints, Host/Origin/CORS guards and rate limiting.

pub mod error;
pub mod guard;
pub mod health;
pub mod probe;
pub mod ratelimit;
pub mod server;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::Router;

use crate::app::AppState;
use crate::transport;
use error::ApiError;

/// The whole HTTP surface.
pub fn router(app: AppState) -> Router {
    let mcp = Router::new()
        .route(
            "/mcp",
            get(transport::get)
                .post(transport::post)
                .delete(transport::delete)
                .on(MethodFilter::OPTIONS, guard::options)
                .fallback(|| async { ApiError::method_not_allowed("GET, POST, DELETE, OPTIONS") }),
        )
        .layer(DefaultBodyLimit::max(app.settings.max_body_bytes));
    Router::new()
        .merge(mcp)
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/ready", on(MethodFilter::GET, health::ready))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(resource_metadata),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, -32000, "Not Found").into_response()
        })
        .with_state(app)
}

/// RFC 9728 protected-resource metadata (404 when auth is off).
async fn resource_metadata(State(app): State<AppState>) -> Response {
    match &*app.auth.load() {
        Some(auth) => axum::Json(auth.metadata()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, -32000, "Not Found").into_response(),
    }
}
