//! Running one JSON-RPC request and choosing how to answer it. A request that completes
//! quickly without streaming anything is answered as plain JSON (the cheapest path, and the
//! common one); as soon as it sends a notification or a server→client request, or takes longer
//! than `SSE_AFTER`, the answer becomes an SSE stream. Legacy streams are written to the
//! session's event log first and read back from it, so a client can resume them on any node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::services::{CallServices, Out};
use super::sse::{self, SseWriter};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::protocol::toolset::{Era, JsonObject, LogLevel, RequestContext};
use crate::protocol::{jsonrpc, limits};
use crate::session::random_id;

/// Everything needed to run one request, as extracted and validated by the transport.
pub struct Prepared {
    pub era: Era,
    pub id: Value,
    pub method: String,
    pub params: Map<String, Value>,
    pub protocol_version: String,
    pub session_id: Option<String>,
    pub client_capabilities: Value,
    /// Resource URIs the legacy session subscribed to (updates to others need no delivery).
    pub subscriptions: std::collections::BTreeSet<String>,
    pub log_level: Option<LogLevel>,
    /// The authenticated caller (`iss#sub`), when auth is on.
    pub principal: Option<String>,
    /// The session's trace context (see `telemetry::context`).
    pub trace: Option<String>,
}

impl Prepared {
    fn binding(&self) -> String {
        let name = self
            .params
            .get("name")
            .or_else(|| self.params.get("uri"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let principal = self.principal.as_deref().unwrap_or("");
        format!("{}\u{0}{name}\u{0}{principal}", self.method)
    }

    fn progress_token(&self) -> Option<Value> {
        self.params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
            .cloned()
    }

    fn mrtr(&self) -> (Option<JsonObject>, Option<String>) {
        if self.era != Era::Modern {
            return (None, None);
        }
        let responses = self
            .params
            .get("inputResponses")
            .and_then(Value::as_object)
            .cloned();
        let state = self
            .params
            .get("requestState")
            .and_then(Value::as_str)
            .map(str::to_owned);
        (responses, state)
    }
}

/// A request's execution, polled inline by its handler until it either finishes or needs to
/// outlive the handler; then it moves to a tracked task (`detach`). A legacy request also
/// detaches when its handler is dropped, because a disconnect is not a cancellation there.
struct Detachable {
    fut: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    tasks: tokio_util::task::TaskTracker,
    detach_on_drop: bool,
    /// Runs once the execution finishes, wherever it ran.
    on_done: Option<Box<dyn FnOnce() + Send>>,
}

impl Detachable {
    fn detach(&mut self) {
        if let Some(fut) = self.fut.take() {
            let on_done = self.on_done.take();
            self.tasks.spawn(async move {
                fut.await;
                if let Some(f) = on_done {
                    f();
                }
            });
        }
    }
}

impl std::future::Future for Detachable {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let Some(fut) = self.fut.as_mut() else {
            return std::task::Poll::Ready(());
        };
        let r = fut.as_mut().poll(cx);
        if r.is_ready() {
            self.fut = None;
            if let Some(f) = self.on_done.take() {
                f();
            }
        }
        r
    }
}

impl Drop for Detachable {
    fn drop(&mut self) {
        if self.detach_on_drop {
            self.detach();
        }
    }
}

/// The domain's view of a request. `streaming` is false for batch items, whose answer cannot
/// carry progress or log notifications, so none are asked for.
fn context(
    app: &AppState,
    req: &Prepared,
    outbox: &mpsc::Sender<Out>,
    cancel: &CancellationToken,
    streaming: bool,
) -> RequestContext {
    let services = Arc::new(CallServices {
        app: app.clone(),
        era: req.era,
        session_id: req.session_id.clone(),
        binding: if req.era == Era::Modern {
            req.binding()
        } else {
            String::new()
        },
        subscriptions: req.subscriptions.clone(),
        principal: req.principal.clone(),
        request_key: (req.era == Era::Legacy).then(|| request_key(&req.id)),
        outbox: outbox.clone(),
    });
    let mut ctx = RequestContext::new(
        req.era,
        req.protocol_version.clone(),
        req.session_id.clone(),
        req.client_capabilities.clone(),
        if streaming {
            req.progress_token()
        } else {
            None
        },
        if streaming { req.log_level } else { None },
        cancel.clone(),
        services,
    );
    (ctx.input_responses, ctx.request_state) = req.mrtr();
    ctx.principal = req.principal.clone();
    // Only a request with a span (or a client context in `_meta`) needs these for its spans.
    if crate::telemetry::otel::enabled()
        && (crate::telemetry::context::innermost().is_some() || req.params.contains_key("_meta"))
    {
        ctx.trace = req.trace.clone();
        ctx.request_id = Some(crate::telemetry::context::request_id_text(&req.id).into());
    }
    ctx
}

/// A JSON-RPC id as a bounded key: its JSON text, or a SHA-256 of it past 64 bytes (a client
/// chooses ids, and one of megabytes must not be stored).
fn request_key(id: &Value) -> String {
    let text = id.to_string();
    if text.len() <= 64 {
        return text;
    }
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Runs a request and answers it as JSON or SSE.
pub async fn run(app: &AppState, req: Prepared) -> Response {
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let ctx = context(app, &req, &tx, &cancel, true);
    let era = req.era;
    // A legacy request's session and id: for the answer's header, the cancellation route and
    // the resumable stream.
    let legacy = match (era, &req.session_id) {
        (Era::Legacy, Some(sid)) => Some((sid.clone(), req.id.clone())),
        _ => None,
    };
    // A modern request is cancelled when its client goes away; this guard fires if the
    // handler future is dropped before the answer is chosen.
    let guard = (era == Era::Modern).then(|| cancel.clone().drop_guard());
    let mut job = Detachable {
        fut: Some(Box::pin(execute(app.clone(), req, ctx, tx))),
        tasks: app.drain.tasks.clone(),
        detach_on_drop: era == Era::Legacy,
        on_done: None,
    };
    // Most requests finish on their first poll (the in-memory store never waits): no timer,
    // no task, no hand-off. Others run inline for the JSON window, then move to a task.
    if futures::poll!(&mut job).is_pending() {
        // Only a request that outlives its first poll can be cancelled by a later
        // `notifications/cancelled`, so only such requests are entered in the routing table.
        if let Some((sid, id)) = legacy.clone() {
            app.routes.start_request(&sid, &id, cancel.clone());
            let app = app.clone();
            job.on_done = Some(Box::new(move || app.routes.finish_request(&sid, &id)));
        }
        let window = Duration::from_millis(app.live.current().sse_after_ms);
        tokio::select! {
            biased;
            _ = &mut job => {}
            _ = tokio::time::sleep(window) => job.detach(),
        }
    }
    let first = match rx.try_recv() {
        Ok(Out::Final(msg, status)) => {
            if let Some(g) = guard {
                g.disarm();
            }
            return json_response(msg, status, legacy.as_ref().map(|(sid, _)| sid.as_str()));
        }
        Err(mpsc::error::TryRecvError::Disconnected) => {
            return ApiError::new(StatusCode::OK, -32800, "Request cancelled").into_response()
        }
        Ok(other) => Some(other),
        Err(mpsc::error::TryRecvError::Empty) => None,
    };
    job.detach();
    match legacy {
        Some((sid, id)) => legacy_stream(app, sid, &id, first, rx).await,
        None => {
            let guard = guard.map(|g| g.disarm());
            modern_stream(app, first, rx, guard.unwrap_or(cancel))
        }
    }
}

async fn execute(app: AppState, mut req: Prepared, ctx: RequestContext, tx: mpsc::Sender<Out>) {
    let start = Instant::now();
    // Cancellation is checked first: a handler that stops because the token fired returns
    // `Err(Cancelled)` in the same poll, and a cancelled request gets no response.
    let outcome = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => None,
        r = app.dispatcher.call(&req.method, &mut req.params, &ctx) => Some(r),
    };
    // The dispatcher records finished operations; a cancelled one never finishes there.
    let Some(outcome) = outcome else {
        let secs = start.elapsed().as_secs_f64();
        let tool = app.dispatcher.tool_label(&req.method, &req.params);
        app.metrics
            .operation(&req.method, tool, Some("cancelled"), secs);
        return;
    };
    let (msg, status) = match outcome {
        Ok(raw) => (jsonrpc::response_text(&req.id, &raw), StatusCode::OK),
        Err(e) => {
            let a = ApiError::from_protocol(&e, req.era, Some(req.id.clone()));
            (a.body().to_string(), a.status)
        }
    };
    let _ = tx.send(Out::Final(msg, status)).await;
}

/// A JSON answer (with the session id header on legacy answers).
pub fn json_response(
    body: impl Into<axum::body::Body>,
    status: StatusCode,
    session_id: Option<&str>,
) -> Response {
    let body: axum::body::Body = body.into();
    let mut resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(s).ok()) {
        // A static name: a `&str` name is parsed (and allocated) on every insert.
        resp.headers_mut()
            .insert(HeaderName::from_static(super::headers::SESSION_ID), sid);
    }
    // A handler that met an unreachable store answers 503 here (its error's headers do not
    // travel with `Out::Final`); every 503 carries `Retry-After`, as `ApiError::unavailable`.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn serialize(v: &Value) -> Arc<str> {
    Arc::from(serde_json::to_string(v).unwrap_or_default())
}

/// Switches a legacy request to a resumable SSE stream: its messages go to the session's
/// event log (so nothing acknowledged is lost when the connection drops), and the response
/// body tails that log.
async fn legacy_stream(
    app: &AppState,
    sid: String,
    id: &Value,
    first: Option<Out>,
    mut rx: mpsc::Receiver<Out>,
) -> Response {
    let stream = format!("p{}", &random_id()[..16]);
    let close_connection = CancellationToken::new();
    let close = close_connection.clone();
    // What a resuming client receives if this node dies before the request finishes.
    let orphan = jsonrpc::error_response(
        Some(id),
        -32603,
        "The server instance running this request stopped before it finished; send the request again",
        None,
    );
    if let Err(e) = app
        .store
        .open_stream(
            &sid,
            &stream,
            Some(serialize(&orphan)),
            crate::telemetry::context::current_traceparent().as_deref(),
        )
        .await
    {
        return ApiError::unavailable(e.to_string()).into_response();
    }
    let store = app.store.clone();
    let (s2, st2) = (sid.clone(), stream.clone());
    // Tracked like the request itself: a drain waits until the final message is in the log,
    // so a client whose stream was closed by the drain resumes to the result, not to the
    // "instance stopped" error (and does not send the request again).
    let request_id = id.clone();
    let spans = crate::telemetry::context::Carried::capture();
    let pump = async move {
        let mut next = first;
        // Bytes of notifications stored so far: the log is bounded whatever the tool sends.
        let mut stored = 0usize;
        loop {
            let out = match next.take() {
                Some(out) => out,
                None => match rx.recv().await {
                    Some(out) => out,
                    None => break,
                },
            };
            match out {
                Out::Message(m) => {
                    let m = serialize(&m);
                    if !notification_fits(stored, m.len()) {
                        tracing::debug!(
                            bytes = m.len(),
                            "notification past the stream's bound, not stored"
                        );
                        continue;
                    }
                    stored += m.len();
                    persist(|| store.append_event(&s2, &st2, m.clone(), false), 3).await;
                }
                Out::Final(m, _) => {
                    // The answer must reach the log, or resuming clients would wait for it
                    // forever: retried until the store takes it (or the process exits, after
                    // which other nodes end the stream as an orphan).
                    let m: Arc<str> = if !answer_fits(m.len()) {
                        too_large_answer(&request_id, m.len())
                    } else {
                        Arc::from(m)
                    };
                    persist(
                        || store.append_event(&s2, &st2, m.clone(), true),
                        usize::MAX,
                    )
                    .await;
                    return;
                }
                Out::CloseConnection => close_connection.cancel(),
            }
        }
        persist(|| store.close_stream(&s2, &st2), usize::MAX).await;
    };
    app.drain.tasks.spawn(spans.clone().run(pump));
    let (writer, body) = SseWriter::channel();
    let close_after = match app.live.current().sse_post_close_after_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let tail = tail_log(
        app.clone(),
        writer,
        (sid.clone(), stream),
        0,
        true,
        Closing {
            after: close_after,
            now: Some(close),
        },
    );
    tokio::spawn(spans.run(tail));
    sse::response(body, Some(&sid))
}

/// Whether a notification of `len` bytes is stored after `stored` bytes of them.
fn notification_fits(stored: usize, len: usize) -> bool {
    len <= limits::MAX_STORED_EVENT_BYTES && stored + len <= limits::MAX_STREAM_NOTIFICATION_BYTES
}

/// Whether a final answer of `len` bytes is stored as it is.
fn answer_fits(len: usize) -> bool {
    len <= limits::MAX_STORED_EVENT_BYTES
}

/// What a stream stores instead of an answer larger than the event log keeps.
fn too_large_answer(id: &Value, bytes: usize) -> Arc<str> {
    let message = format!(
        "The answer is {bytes} bytes; answers sent on a stream are limited to {} bytes",
        limits::MAX_STORED_EVENT_BYTES
    );
    serialize(&jsonrpc::error_response(Some(id), -32603, &message, None))
}

/// Runs a store write until it succeeds, at most `attempts` times, backing off up to 2 s.
async fn persist<T, F, Fut>(mut write: F, attempts: usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::session::StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=attempts {
        match write().await {
            Ok(_) => return,
            Err(e) if attempt == attempts => {
                tracing::warn!("stream event not stored after {attempts} attempts: {e}");
            }
            Err(e @ crate::session::StoreError::Corrupt(_)) => {
                // Retrying cannot cure it: resuming clients get the node's orphan answer.
                tracing::error!("stream event not stored: {e}");
                return;
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// When the server closes a connection early (SEP-1699 polling).
#[derive(Default)]
pub struct Closing {
    /// Close after this long.
    pub after: Option<Duration>,
    /// Close when this fires (the request asked for it).
    pub now: Option<CancellationToken>,
}

/// Writes a stream's logged events after `cursor` to the client until the stream completes,
/// the session ends, the client leaves, the server drains, or `closing` says so (then with a
/// `retry:` hint so the client resumes).
pub async fn tail_log(
    app: AppState,
    writer: SseWriter,
    (session, stream): (String, String),
    mut cursor: u64,
    prime: bool,
    closing: Closing,
) {
    let _gauge = app.metrics.stream_guard();
    let retry_ms = app.live.current().sse_retry_ms;
    if prime
        && !writer
            .send(sse::priming(&format!("{stream}:{cursor}"), retry_ms))
            .await
    {
        return;
    }
    let keepalive = Duration::from_millis(app.live.current().sse_keepalive_ms);
    let deadline = closing.after.map(|d| tokio::time::Instant::now() + d);
    let close_now = closing.now.unwrap_or_default();
    loop {
        let until_close = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = app.store.next_events(&session, &stream, cursor, keepalive) => {
                let Ok(batch) = batch else {
                    let _ = writer.send(sse::retry(retry_ms)).await;
                    return;
                };
                if batch.events.is_empty() && !batch.closed && !batch.gone {
                    if !send_unless_draining(&app, &writer, sse::keepalive()).await { return; }
                    continue;
                }
                for (seq, msg) in &batch.events {
                    let frame = sse::event(Some(&format!("{stream}:{seq}")), msg);
                    if !send_unless_draining(&app, &writer, frame).await {
                        return;
                    }
                    cursor = *seq;
                }
                if batch.closed || batch.gone {
                    return;
                }
            }
            _ = writer.closed() => return,
            _ = app.drain.streams.cancelled() => {
                let _ = writer.send(sse::retry(retry_ms)).await;
                return;
            }
            _ = until_close => {
                let _ = writer.send(sse::retry(retry_ms)).await;
                return;
            }
            _ = close_now.cancelled() => {
                let _ = writer.send(sse::retry(retry_ms)).await;
                return;
            }
        }
    }
}

/// Sends a frame unless the server starts draining first: a stream stuck behind a reader that
/// does not read must not hold the drain (the events stay in the log for a resumption).
async fn send_unless_draining(app: &AppState, writer: &SseWriter, frame: bytes::Bytes) -> bool {
    tokio::select! {
        sent = writer.send(frame) => sent,
        _ = app.drain.streams.cancelled() => false,
    }
}

/// Streams a modern request's messages directly (no resumability in this era); closing the
/// stream cancels the request.
fn modern_stream(
    app: &AppState,
    first: Option<Out>,
    mut rx: mpsc::Receiver<Out>,
    cancel: CancellationToken,
) -> Response {
    let (writer, body) = SseWriter::channel();
    let metrics = app.metrics.clone();
    let keepalive = Duration::from_millis(app.live.current().sse_keepalive_ms);
    let spans = crate::telemetry::context::Carried::capture();
    let stream = async move {
        let _gauge = metrics.stream_guard();
        let guard = cancel.drop_guard();
        if let Some(Out::Message(m)) = first {
            if !writer.send(sse::event(None, &serialize(&m))).await {
                return;
            }
        }
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Out::Message(m)) => {
                        if !writer.send(sse::event(None, &serialize(&m))).await { return; }
                    }
                    Some(Out::Final(m, _)) => {
                        writer.send(sse::event(None, &m)).await;
                        guard.disarm();
                        return;
                    }
                    Some(Out::CloseConnection) => {}
                    None => { guard.disarm(); return; }
                },
                _ = writer.closed() => return,
                _ = tokio::time::sleep(keepalive) => {
                    if !writer.send(sse::keepalive()).await { return; }
                }
            }
        }
    };
    tokio::spawn(spans.run(stream));
    sse::response(body, None)
}

/// Runs a request to completion without streaming (for batch items) and returns its final
/// message; intermediate notifications are dropped, as a batch answer cannot carry them.
pub async fn run_to_value(app: &AppState, req: Prepared) -> Option<Value> {
    let (tx, mut rx) = mpsc::channel(64);
    let ctx = context(app, &req, &tx, &CancellationToken::new(), false);
    app.drain.tasks.spawn(execute(app.clone(), req, ctx, tx));
    while let Some(out) = rx.recv().await {
        if let Out::Final(m, _) = out {
            return serde_json::from_str(&m).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_log_is_bounded_in_bytes() {
        use limits::{MAX_STORED_EVENT_BYTES as EVENT, MAX_STREAM_NOTIFICATION_BYTES as STREAM};
        assert!(notification_fits(0, EVENT));
        assert!(!notification_fits(0, EVENT + 1));
        assert!(notification_fits(STREAM - 100, 100));
        assert!(!notification_fits(STREAM - 100, 101));
        assert!(answer_fits(EVENT));
        assert!(!answer_fits(EVENT + 1));
        let stored = too_large_answer(&serde_json::json!(7), EVENT + 1);
        let v: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32603);
        assert!(stored.len() < 512);
    }
}
