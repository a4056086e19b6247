//! Streamable HTTP on `/mcp` for both eras: content negotiation, body limits and era routing
//! here; the era-specific rules in [`legacy`] and [`modern`]; request execution and the
//! JSON-or-SSE choice in [`exec`]; SSE framing in [`sse`].

pub mod exec;
pub mod headers;
pub mod legacy;
pub mod modern;
pub mod services;
pub mod sse;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::guard;

/// True if an `Accept` header admits `wanted` (`type/subtype`, `type/*` or `*/*`).
pub fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    let ty = wanted.split_once('/').map_or(wanted, |(t, _)| t);
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.split(';').next().unwrap_or("").trim())
        .any(|m| {
            m.eq_ignore_ascii_case(wanted)
                || m == "*/*"
                || m.strip_suffix("/*")
                    .is_some_and(|t| t.eq_ignore_ascii_case(ty))
        })
}

/// True if `Accept` admits both `application/json` and `text/event-stream` (one pass).
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for item in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let m = item.split(';').next().unwrap_or("").trim();
        if m == "*/*" {
            return true;
        }
        json |=
            m.eq_ignore_ascii_case("application/json") || m.eq_ignore_ascii_case("application/*");
        sse |= m.eq_ignore_ascii_case("text/event-stream") || m.eq_ignore_ascii_case("text/*");
    }
    json && sse
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The authenticated caller of a request: `None` when auth is off.
pub type Caller = Option<Principal>;

/// Runs a `/mcp` handler behind the guard: Host/Origin checks first, then the bearer token
/// (when auth is on), then the rate limit charged to the caller (the principal, or the address
/// for a request without a valid token, so token guessing is limited too), then the handler
/// with the caller and its rate key, then metrics (rejections included) and CORS headers.
async fn guarded<F, Fut>(
    app: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    handler: F,
) -> Response
where
    F: FnOnce(Caller, guard::RateKey) -> Fut,
    Fut: std::future::Future<Output = (&'static str, Response)>,
{
    let admitted = match guard::admit(app, headers, peer) {
        Err(resp) => {
            app.metrics.request("other", resp.status().as_u16());
            return *resp;
        }
        Ok(a) => a,
    };
    let caller = authenticate(app, headers).await;
    let key = admitted.rate_key(
        caller
            .as_ref()
            .ok()
            .and_then(|c| c.as_ref().map(|p| p.0.as_str())),
    );
    let refused = match (key.charge(app, 1), caller) {
        (Err(limited), _) => *limited,
        (Ok(()), Err(unauthorized)) => *unauthorized,
        (Ok(()), Ok(caller)) => {
            let (label, resp) = handler(caller, key).await;
            app.metrics.request(label, resp.status().as_u16());
            return admitted.finish(resp, app);
        }
    };
    app.metrics.request("other", refused.status().as_u16());
    admitted.finish(refused, app)
}

/// Verifies the bearer token when auth is on.
async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let Some(auth) = app.auth.load_full() else {
        return Ok(None);
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.verify(value).await {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            tracing::debug!("request refused: {e}");
            Err(Box::new(ApiError::unauthorized(&e, &auth).into_response()))
        }
    }
}

/// POST `/mcp`. The request is taken whole so that its headers are moved out rather than
/// cloned (as the `HeaderMap` extractor does). The body is read only once the guard, the bearer
/// token and the `Accept`/`Content-Type` checks have passed, within `bodyTimeoutMs`: a client
/// that is refused, or that trickles its body, costs no 4 MiB buffer and no open-ended wait.
pub async fn post(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let request = Request::from_parts(parts, body);
    guarded(&app, &headers, peer, |caller, key| {
        post_inner(&app, &headers, request, caller, key)
    })
    .await
}

async fn post_inner(
    app: &AppState,
    headers: &HeaderMap,
    request: Request,
    caller: Caller,
    key: guard::RateKey,
) -> (&'static str, Response) {
    if !accepts_json_and_sse(headers) {
        let e = ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            -32000,
            "Not Acceptable: Client must accept both application/json and text/event-stream",
        );
        return ("other", e.into_response());
    }
    if !is_json(headers) {
        let e = ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            -32000,
            "Unsupported Media Type: Content-Type must be application/json",
        );
        return ("other", e.into_response());
    }
    let bytes = match read_body(app, request).await {
        Ok(b) => b,
        Err(e) => return ("other", e.into_response()),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, -32700, format!("Parse error: {e}"));
            return ("other", e.into_response());
        }
    };
    // A batch's items count against the rate limit one by one (the first was charged).
    if let Value::Array(items) = &value {
        if let Err(limited) = key.charge(app, items.len().saturating_sub(1) as u64) {
            return ("batch", *limited);
        }
    }
    if modern::is_modern(&value, headers) {
        modern::post(app, headers, value, caller).await
    } else {
        legacy::post(app, headers, value, caller).await
    }
}

/// Reads the body as the `Bytes` extractor does (same limit, same rejections), within
/// `bodyTimeoutMs` (408 past it).
async fn read_body(app: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let read = Bytes::from_request(request, &());
    tokio::pin!(read);
    // A small body usually arrived with the headers: read it without arming a timer.
    if let std::task::Poll::Ready(result) = futures::poll!(&mut read) {
        return result.map_err(|rejection| body_error(app, rejection));
    }
    let limit = std::time::Duration::from_millis(app.live.current().body_timeout_ms);
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) => Err(body_error(app, rejection)),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            -32000,
            format!(
                "Request Timeout: the body did not arrive within {} ms",
                limit.as_millis()
            ),
        )),
    }
}

fn body_error(app: &AppState, rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32000,
            format!(
                "Payload Too Large: request bodies are limited to {} bytes",
                app.settings.max_body_bytes
            ),
        )
    } else {
        ApiError::bad_request(format!("Bad Request: cannot read body: {rejection}"))
    }
}

/// GET `/mcp`: legacy standalone stream or resumption.
pub async fn get(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let handler = |caller, _| async {
        if !accepts(&headers, "text/event-stream") {
            let e = ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                -32000,
                "Not Acceptable: Client must accept text/event-stream",
            );
            return ("GET", e.into_response());
        }
        ("GET", legacy::get(&app, &headers, caller).await)
    };
    guarded(&app, &headers, peer, handler).await
}

/// DELETE `/mcp`: ends a legacy session.
pub async fn delete(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let handler = |caller, _| async { ("DELETE", legacy::delete(&app, &headers, caller).await) };
    guarded(&app, &headers, peer, handler).await
}
