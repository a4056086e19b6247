//! Server-Sent Events framing and the body channel. Every stream opens with a priming event
//! (an id and empty data, SEP-1699) carrying a `retry:` hint, sends `:` keep-alive comments when
//! idle, and sends `retry:` again before any server-side close, so that clients reconnect (to
//! any pod) and resume with `Last-Event-ID`.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The writing end of an SSE response body.
pub struct SseWriter {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
}

impl SseWriter {
    /// A writer and the response body it feeds.
    pub fn channel() -> (Self, Body) {
        let (tx, rx) = mpsc::channel(32);
        (Self { tx }, Body::from_stream(ReceiverStream::new(rx)))
    }

    /// Writes a frame; `false` once the client has gone.
    pub async fn send(&self, frame: Bytes) -> bool {
        self.tx.send(Ok(frame)).await.is_ok()
    }

    /// Resolves when the client has gone (the body was dropped).
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A message event: `event: message`, optional `id:`, one `data:` line of compact JSON.
/// While traces are on, each one is also an `sse.message` event on the span running now (the
/// request's, or a resume's), with its event id.
pub fn event(id: Option<&str>, data: &str) -> Bytes {
    crate::telemetry::context::sse_event(id, data.len());
    let mut s = String::with_capacity(data.len() + 48);
    s.push_str("event: message\n");
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// The priming event: an id to resume from, empty data, and the reconnection delay.
pub fn priming(id: &str, retry_ms: u64) -> Bytes {
    Bytes::from(format!("id: {id}\nretry: {retry_ms}\ndata: \n\n"))
}

/// A comment that keeps proxies from closing an idle stream.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

/// The reconnection hint sent before a server-side close.
pub fn retry(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// A 200 `text/event-stream` response with anti-buffering headers and, for legacy streams,
/// the session id.
pub fn response(body: Body, session_id: Option<&str>) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", sid);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_well_formed() {
        assert_eq!(
            &event(Some("s:1"), "{}")[..],
            b"event: message\nid: s:1\ndata: {}\n\n"
        );
        assert_eq!(
            &priming("s:0", 3000)[..],
            b"id: s:0\nretry: 3000\ndata: \n\n"
        );
        assert_eq!(&retry(10)[..], b"retry: 10\n\n");
    }
}
