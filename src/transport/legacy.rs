//! The legacy era (2025-03-26 … 2025-11-25): `initialize` creates a session whose record lives
//! in the store; every later request names it with `Mcp-Session-Id` and is served by whichever
//! node receives it. GET opens the session's standalone stream or resumes any of its streams;
//! DELETE ends the session.

use crate::telemetry::context::{within, Carried, LiveSpan};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use serde_json::{json, Map, Value};
use tracing::{Instrument, Span};

use super::exec::{self, json_response, Prepared};
use super::headers::{self, LAST_EVENT_ID, PROTOCOL_VERSION, SESSION_ID};
use super::sse::SseWriter;
use super::Caller;
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::protocol::error::ProtocolError;
use crate::protocol::jsonrpc::{self, Incoming};
use crate::protocol::toolset::{Era, LogLevel};
use crate::protocol::version::{self, MODERN_VERSION};
use crate::session::{random_id, SessionChange, SessionRecord, Signal};

/// The standalone (GET) stream's id within a session.
pub const STANDALONE: &str = "g";
/// Log level used until the client calls `logging/setLevel`.
const DEFAULT_LOG_LEVEL: LogLevel = LogLevel::Info;

/// Handles a legacy POST (one message or a 2025-03-26 batch); returns the metrics label too.
pub async fn post(
    app: &AppState,
    headers: &HeaderMap,
    body: Value,
    caller: Caller,
) -> (&'static str, Response) {
    match body {
        Value::Array(items) => ("batch", batch(app, headers, items, &caller).await),
        value => single(app, headers, value, caller).await,
    }
}

async fn single(
    app: &AppState,
    headers: &HeaderMap,
    value: Value,
    caller: Caller,
) -> (&'static str, Response) {
    let msg = match jsonrpc::classify(value) {
        Ok(m) => m,
        Err((e, id)) => {
            let mut err = ApiError::from_protocol(&e, Era::Legacy, id);
            err.status = StatusCode::BAD_REQUEST;
            return ("other", err.into_response());
        }
    };
    let label = crate::telemetry::metrics::method_label(msg.method().unwrap_or("response"));
    let sid = match session_header(headers) {
        Err(e) => return (label, e.into_response()),
        Ok(sid) => sid,
    };
    if let (Incoming::Request { id, method, params }, None) = (&msg, &sid) {
        if method == "initialize" {
            return (label, initialize(app, id, params, caller).await);
        }
    }
    let Some(sid) = sid else {
        return (
            label,
            ApiError::bad_request("Bad Request: Mcp-Session-Id header is required")
                .with_id(msg.id().cloned())
                .into_response(),
        );
    };
    let record = match load(app, &sid, headers, &caller).await {
        Ok(r) => r,
        Err(e) => return (label, e.with_id(msg.id().cloned()).into_response()),
    };
    let handled = async {
        let resp = match msg {
            Incoming::Notification { method, params } => {
                notification(app, &sid, &method, &params).await
            }
            Incoming::Response { id, outcome } => {
                deliver_answer(app, &sid, id, outcome).await;
                StatusCode::ACCEPTED.into_response()
            }
            Incoming::Request { id, method, params } => {
                request(app, record, id, method, params).await
            }
        };
        settle(app, &sid, resp).await
    };
    (label, handled.await)
}

/// Finishes a request's session bookkeeping (see [`crate::session::SessionStore::settle`]).
/// A session found gone at this point answers 404 like one found gone up front.
async fn settle(app: &AppState, sid: &str, resp: Response) -> Response {
    if !app.store.defers_bookkeeping() {
        return resp;
    }
    // An answer that already says the store is unreachable does not wait on it a second time
    // (which doubled a 503's latency while Redis hung): the request stays counted on this
    // node and is folded into its next write.
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        return resp;
    }
    match app.store.settle(sid).await {
        Ok(true) => resp,
        Ok(false) => ApiError::session_not_found().into_response(),
        Err(e) => {
            tracing::warn!(session = log_id(sid), "could not record the request: {e}");
            resp
        }
    }
}

/// Hands a client's answer to the waiting server→client request: here, or on the node running it.
async fn deliver_answer(
    app: &AppState,
    sid: &str,
    id: Value,
    outcome: crate::session::routing::ClientAnswer,
) {
    let wire = crate::session::routing::answer_wire(&outcome);
    let producer = crate::telemetry::context::current_traceparent();
    if app.routes.deliver_answer(sid, &id, outcome, producer) {
        return;
    }
    // Server→client requests have `srv-…` ids: nothing anywhere waits for another answer,
    // so it is dropped here rather than broadcast to every node.
    if !crate::transport::services::is_server_request_id(&id) {
        tracing::debug!(session = %sid, "dropped a client answer no request waits for");
        return;
    }
    let signal = Signal::Answer {
        session: sid.to_owned(),
        id,
        outcome: wire,
    };
    let _ = app
        .store
        .publish(crate::session::Envelope::new(signal))
        .await;
}

/// Cancels an in-flight request: here, or on the node running it.
async fn cancel_request(app: &AppState, sid: &str, id: &Value) {
    if app.routes.cancel_request(sid, id) {
        return;
    }
    let signal = Signal::Cancel {
        session: sid.to_owned(),
        id: id.clone(),
    };
    let _ = app
        .store
        .publish(crate::session::Envelope::new(signal))
        .await;
}

/// A session id shortened for logs: enough to correlate lines, too little to use the session
/// (the full id works as a handle to it).
fn log_id(sid: &str) -> &str {
    sid.get(..8).unwrap_or(sid)
}

/// Reads a `Mcp-Session-Id` that must be present (GET, DELETE): 400 if absent or malformed.
fn required_session(headers: &HeaderMap) -> Result<String, ApiError> {
    session_header(headers)?
        .ok_or_else(|| ApiError::bad_request("Bad Request: Mcp-Session-Id header is required"))
}

/// Reads `Mcp-Session-Id`: `Ok(None)` if absent, 400 if malformed.
fn session_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers::text(headers, SESSION_ID) {
        Ok(None) => Ok(None),
        Ok(Some(s)) if !s.is_empty() && s.len() <= 128 => Ok(Some(s.to_owned())),
        _ => Err(ApiError::bad_request(
            "Bad Request: Mcp-Session-Id must be 1-128 visible ASCII characters",
        )),
    }
}

/// Loads and touches the session and checks `MCP-Protocol-Version` against it. A session
/// owned by another principal is unknown to this caller (404), exactly like a missing one.
/// Also places the request's HTTP span under the session's trace.
async fn load(
    app: &AppState,
    sid: &str,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<SessionRecord, ApiError> {
    let (found, lookup) = touch(app, sid, true).await;
    let record = match found {
        Ok(Some(r)) => r,
        Ok(None) => return Err(ApiError::session_not_found()),
        Err(e) => return Err(ApiError::unavailable(e.to_string())),
    };
    if !owned_by(&record, caller) {
        tracing::warn!(
            session = log_id(sid),
            "session id presented by another principal"
        );
        return Err(ApiError::session_not_found());
    }
    check_version(headers, &record.protocol_version)?;
    crate::telemetry::context::place_session_request(record.trace.as_deref());
    crate::telemetry::context::record_deferred(lookup);
    Ok(record)
}

/// `touch`, with the store's own client spans held back until the request's span knows its
/// place (under the session this reads); only Redis records such spans.
async fn touch(
    app: &AppState,
    sid: &str,
    count_request: bool,
) -> (
    Result<Option<SessionRecord>, crate::session::StoreError>,
    Vec<crate::telemetry::context::DeferredCall>,
) {
    let touched = app.store.touch(sid, count_request);
    if app.store.mode() == "redis" {
        crate::telemetry::context::deferring(touched).await
    } else {
        (touched.await, Vec::new())
    }
}

/// Whether the caller is the session's owner (both unauthenticated counts when auth is off).
fn owned_by(record: &SessionRecord, caller: &Caller) -> bool {
    record.principal.as_deref() == caller.as_ref().map(|p| p.0.as_str())
}

/// Legacy `MCP-Protocol-Version`: absent means the negotiated version; anything else must
/// equal it (defect D16).
fn check_version(headers: &HeaderMap, negotiated: &str) -> Result<(), ApiError> {
    let v = headers::text(headers, PROTOCOL_VERSION).map_err(ApiError::bad_request)?;
    match v {
        None => Ok(()),
        Some(v) if !version::is_legacy(v) && v != MODERN_VERSION => Err(ApiError::bad_request(
            format!(
                "Bad Request: Unsupported protocol version {v:?} (supported: {})",
                version::LEGACY_VERSIONS.join(", ")
            ),
        )),
        Some(v) if v != negotiated => Err(ApiError::bad_request(format!(
            "Bad Request: MCP-Protocol-Version {v} does not match the negotiated version {negotiated}"
        ))),
        Some(_) => Ok(()),
    }
}

async fn initialize(
    app: &AppState,
    id: &Value,
    params: &Map<String, Value>,
    caller: Caller,
) -> Response {
    let bad = |msg: &str| {
        let mut e = ApiError::from_protocol(
            &ProtocolError::InvalidParams {
                message: msg.to_owned(),
                data: None,
            },
            Era::Legacy,
            Some(id.clone()),
        );
        e.status = StatusCode::BAD_REQUEST;
        e.into_response()
    };
    let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
        return bad("initialize: protocolVersion is required and must be a string");
    };
    let capabilities = match params.get("capabilities") {
        None => json!({}),
        Some(c @ Value::Object(_)) => c.clone(),
        Some(_) => return bad("initialize: capabilities must be an object"),
    };
    let client_info = match params.get("clientInfo") {
        None => json!({}),
        Some(c @ Value::Object(_)) => c.clone(),
        Some(_) => return bad("initialize: clientInfo must be an object"),
    };
    for (what, value) in [
        ("capabilities", &capabilities),
        ("clientInfo", &client_info),
    ] {
        if let Err(why) = crate::protocol::limits::check_client_description(what, value) {
            return bad(&why);
        }
    }
    let negotiated = version::negotiate(requested);
    let mut record = SessionRecord::new(random_id(), negotiated, capabilities, client_info);
    record.principal = caller.map(|p| p.0);
    let sid = record.id.clone();
    // The session's trace context: its `initialize` span, which every later operation of the
    // session links to (or descends from), on whichever pod serves it.
    let span = initialize_span(&sid, negotiated, id, params);
    record.trace = crate::telemetry::context::traceparent(span.as_ref())
        .or_else(crate::telemetry::context::unsampled_traceparent);
    if let Err(e) = within(span.clone(), app.store.create(record)).await {
        if let Some(span) = &span {
            span.set_error("unavailable");
        }
        return ApiError::unavailable(e.to_string())
            .with_id(Some(id.clone()))
            .into_response();
    }
    tracing::info!(
        session = log_id(&sid),
        version = negotiated,
        "session created"
    );
    let result = app.dispatcher.initialize_result(negotiated);
    json_response(
        jsonrpc::response(id, result).to_string(),
        StatusCode::OK,
        Some(&sid),
    )
}

/// The `initialize` operation span (the MCP operation span of `protocol::dispatch` for the one
/// method the transport owns); `None` while traces are off or unsampled.
fn initialize_span(
    sid: &str,
    version: &'static str,
    id: &Value,
    params: &Map<String, Value>,
) -> Option<LiveSpan> {
    let client = crate::telemetry::context::operation_placement(params)?;
    let attributes = vec![
        KeyValue::new("mcp.method.name", "initialize"),
        KeyValue::new("mcp.protocol.version", version),
        KeyValue::new("mcp.session.id", sid.to_owned()),
        KeyValue::new(
            "jsonrpc.request.id",
            crate::telemetry::context::request_id_text(id),
        ),
    ];
    Some(crate::telemetry::context::start_operation(
        "initialize",
        attributes,
        client,
        None,
    ))
}

async fn notification(
    app: &AppState,
    sid: &str,
    method: &str,
    params: &Map<String, Value>,
) -> Response {
    match method {
        "notifications/initialized" => {
            if let Err(e) = app.store.update(sid, SessionChange::MarkInitialized).await {
                return ApiError::unavailable(e.to_string()).into_response();
            }
        }
        "notifications/cancelled" => {
            if let Some(id) = params.get("requestId").filter(|v| jsonrpc::valid_id(v)) {
                cancel_request(app, sid, id).await;
            }
        }
        _ => {}
    }
    StatusCode::ACCEPTED.into_response()
}

async fn request(
    app: &AppState,
    record: SessionRecord,
    id: Value,
    method: String,
    params: Map<String, Value>,
) -> Response {
    if !record.initialized && method != "ping" && method != "initialize" {
        let mut e = ApiError::from_protocol(&ProtocolError::NotInitialized, Era::Legacy, Some(id));
        e.status = StatusCode::BAD_REQUEST;
        return e.into_response();
    }
    exec::run(app, prepared(record, id, method, params)).await
}

fn prepared(
    record: SessionRecord,
    id: Value,
    method: String,
    params: Map<String, Value>,
) -> Prepared {
    Prepared {
        trace: record.trace,
        era: Era::Legacy,
        id,
        method,
        params,
        protocol_version: record.protocol_version,
        session_id: Some(record.id),
        client_capabilities: (*record.client_capabilities).clone(),
        subscriptions: record.subscriptions,
        log_level: Some(record.log_level.unwrap_or(DEFAULT_LOG_LEVEL)),
        principal: record.principal,
    }
}

/// A JSON-RPC batch: only for sessions that negotiated 2025-03-26 (batching was removed in
/// 2025-06-18). Answered as one JSON array; 202 if it held no requests.
async fn batch(
    app: &AppState,
    headers: &HeaderMap,
    items: Vec<Value>,
    caller: &Caller,
) -> Response {
    let sid = match session_header(headers) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return ApiError::bad_request(
                "Bad Request: batches need an Mcp-Session-Id (initialize cannot be batched)",
            )
            .into_response()
        }
        Err(e) => return e.into_response(),
    };
    let record = match load(app, &sid, headers, caller).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    batch_items(app, sid, record, items).await
}

/// The items of a batch, in order, answered as one array.
async fn batch_items(
    app: &AppState,
    sid: String,
    record: SessionRecord,
    items: Vec<Value>,
) -> Response {
    if !version::allows_batches(&record.protocol_version) || items.is_empty() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            -32600,
            format!(
                "Invalid Request: JSON-RPC batches are not supported in protocol version {} (only 2025-03-26, and never empty)",
                record.protocol_version
            ),
        )
        .into_response();
    }
    let max = app.live.current().limits.max_batch_size;
    if items.len() > max {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            -32600,
            format!(
                "Invalid Request: a batch of {} items; at most {max} (limits.maxBatchSize)",
                items.len()
            ),
        )
        .into_response();
    }
    let mut answers = Vec::new();
    // Items are handled in order, so `notifications/initialized` early in a batch counts.
    let mut initialized = record.initialized;
    for item in items {
        match jsonrpc::classify(item) {
            Err((e, id)) => answers.push(ApiError::from_protocol(&e, Era::Legacy, id).body()),
            Ok(Incoming::Notification { method, params }) => {
                initialized |= method == "notifications/initialized";
                notification(app, &sid, &method, &params).await;
            }
            Ok(Incoming::Response { id, outcome }) => {
                deliver_answer(app, &sid, id, outcome).await;
            }
            Ok(Incoming::Request { id, method, params }) => {
                if method == "initialize" {
                    answers.push(
                        ApiError::new(
                            StatusCode::OK,
                            -32600,
                            "Invalid Request: initialize cannot be batched",
                        )
                        .with_id(Some(id))
                        .body(),
                    );
                    continue;
                }
                if !initialized && method != "ping" {
                    let e = ProtocolError::NotInitialized;
                    answers.push(ApiError::from_protocol(&e, Era::Legacy, Some(id)).body());
                    continue;
                }
                let p = prepared(record.clone(), id, method, params);
                if let Some(answer) = exec::run_to_value(app, p).await {
                    answers.push(answer);
                }
            }
        }
    }
    let resp = if answers.is_empty() {
        StatusCode::ACCEPTED.into_response()
    } else {
        json_response(
            Value::Array(answers).to_string(),
            StatusCode::OK,
            Some(&sid),
        )
    };
    settle(app, &sid, resp).await
}

/// GET: the standalone stream, or the resumption of any stream of the session.
pub async fn get(app: &AppState, headers: &HeaderMap, caller: Caller) -> Response {
    let sid = match required_session(headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = load(app, &sid, headers, &caller).await {
        return e.into_response();
    }
    let streamed = async {
        let resp = get_stream(app, headers, sid.clone()).await;
        settle(app, &sid, resp).await
    };
    streamed.await
}

async fn get_stream(app: &AppState, headers: &HeaderMap, sid: String) -> Response {
    let last = match headers::text(headers, LAST_EVENT_ID) {
        Ok(v) => v.filter(|s| !s.is_empty()),
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let Some(last) = last else {
        let head = match app.store.stream_head(&sid, STANDALONE).await {
            Ok(h) => h.unwrap_or(0),
            Err(e) => return ApiError::unavailable(e.to_string()).into_response(),
        };
        return standalone(app, sid, head).await;
    };
    let Some((stream, seq)) = parse_event_id(last) else {
        return ApiError::bad_request("Bad Request: malformed Last-Event-ID").into_response();
    };
    match app.store.stream_head(&sid, &stream).await {
        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
        Ok(None) => ApiError::bad_request(
            "Bad Request: Last-Event-ID does not name a stream of this session (it may have expired)",
        )
        .into_response(),
        Ok(Some(_)) if stream == STANDALONE => standalone(app, sid, seq).await,
        Ok(Some(_)) => {
            let span = resume_span(app, &sid, &stream, seq).await;
            let (writer, body) = SseWriter::channel();
            let tail = exec::tail_log(app.clone(), writer, (sid.clone(), stream), seq, true, exec::Closing::default());
            tokio::spawn(Carried::capture().run(tail.instrument(span)));
            super::sse::response(body, Some(&sid))
        }
    }
}

/// The span of a resumed stream (`Last-Event-ID`), linked to the request that produced it,
/// which may have run on another pod; it lasts while the stream is replayed and tailed.
async fn resume_span(app: &AppState, sid: &str, stream: &str, after: u64) -> Span {
    if !crate::telemetry::otel::enabled() || !crate::telemetry::context::innermost().is_some() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "abacus.resume",
        otel.name = "resume stream",
        otel.kind = "server",
        mcp.session.id = sid,
        abacus.stream = stream,
        abacus.last_event_id = after,
    );
    let producer = app.store.stream_producer(sid, stream).await.ok().flatten();
    crate::telemetry::context::adopt(&span);
    crate::telemetry::context::link(&span, producer.as_deref(), "producer");
    span
}

/// Parses `<stream>:<seq>`.
pub fn parse_event_id(id: &str) -> Option<(String, u64)> {
    let (stream, seq) = id.rsplit_once(':')?;
    let valid = !stream.is_empty()
        && stream.len() <= 64
        && stream.chars().all(|c| c.is_ascii_alphanumeric());
    valid.then_some(())?;
    Some((stream.to_owned(), seq.parse().ok()?))
}

/// Opens the session's standalone stream from `cursor`: one per session on this node (409
/// otherwise). Cluster-wide signals for this session are appended to its log, so they are
/// ordered and replayable after a reconnect.
async fn standalone(app: &AppState, sid: String, cursor: u64) -> Response {
    match app.store.claim_standalone(&sid).await {
        Ok(true) => {}
        Err(e) => return ApiError::unavailable(e.to_string()).into_response(),
        Ok(false) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                -32000,
                "Conflict: this session already has an open GET stream",
            )
            .into_response()
        }
    }
    if let Err(e) = app.store.open_stream(&sid, STANDALONE, None, None).await {
        app.store.release_standalone(&sid).await;
        return ApiError::unavailable(e.to_string()).into_response();
    }
    let appender = tokio::spawn(append_signals(app.clone(), sid.clone()));
    let (writer, body) = SseWriter::channel();
    let (app2, sid2) = (app.clone(), sid.clone());
    tokio::spawn(async move {
        exec::tail_log(
            app2.clone(),
            writer,
            (sid2.clone(), STANDALONE.into()),
            cursor,
            true,
            exec::Closing::default(),
        )
        .await;
        appender.abort();
        app2.store.release_standalone(&sid2).await;
    });
    super::sse::response(body, Some(&sid))
}

/// Appends list changes and updates of shared resources to the session's standalone log (the
/// session's own resource updates are appended by whichever node makes them).
async fn append_signals(app: AppState, sid: String) {
    let mut signals = app.store.signals();
    while let Some(envelope) = crate::session::next_signal(&mut signals).await {
        let (name, producer) = (
            envelope.payload.name(),
            envelope.traceparent().map(str::to_owned),
        );
        let message = match envelope.payload {
            Signal::ListChanged { kind } => {
                let method = match crate::protocol::toolset::ListKind::from(kind) {
                    crate::protocol::toolset::ListKind::Tools => "notifications/tools/list_changed",
                    crate::protocol::toolset::ListKind::Prompts => {
                        "notifications/prompts/list_changed"
                    }
                    crate::protocol::toolset::ListKind::Resources => {
                        "notifications/resources/list_changed"
                    }
                };
                jsonrpc::notification(method, json!({}))
            }
            Signal::ResourceUpdated { uri, session } => {
                // Updates of one session are written to its log by the node that made them.
                if session.is_some() {
                    continue;
                }
                match app.store.touch(&sid, false).await {
                    Ok(Some(r)) if r.subscriptions.contains(&uri) => {}
                    _ => continue,
                }
                jsonrpc::notification("notifications/resources/updated", json!({ "uri": uri }))
            }
            Signal::SessionEnded { session } if session == sid => return,
            Signal::SessionEnded { .. }
            | Signal::SessionChanged { .. }
            | Signal::TaskCancel { .. }
            | Signal::TaskInput { .. }
            | Signal::TaskChanged { .. }
            | Signal::Answer { .. }
            | Signal::Cancel { .. } => continue,
        };
        let text = serde_json::to_string(&message).unwrap_or_default();
        let hop = crate::telemetry::context::receive_span(name, producer.as_deref());
        let _ = app
            .store
            .append_event(&sid, STANDALONE, std::sync::Arc::from(text), false)
            .instrument(hop)
            .await;
    }
}

/// DELETE: ends the session everywhere.
pub async fn delete(app: &AppState, headers: &HeaderMap, caller: Caller) -> Response {
    let sid = match required_session(headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    // Only the owner may end a session; while traces are on, the end joins the session's trace.
    if app.auth.load().is_some() || crate::telemetry::otel::enabled() {
        let (found, lookup) = touch(app, &sid, false).await;
        match found {
            Ok(Some(r)) if owned_by(&r, &caller) => {
                crate::telemetry::context::place_session_request(r.trace.as_deref());
                crate::telemetry::context::record_deferred(lookup);
            }
            Ok(_) => return ApiError::session_not_found().into_response(),
            Err(e) => return ApiError::unavailable(e.to_string()).into_response(),
        }
    }
    match app.store.delete(&sid).await {
        Ok(true) => {
            tracing::info!(session = log_id(&sid), "session deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError::session_not_found().into_response(),
        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_their_stream() {
        assert_eq!(parse_event_id("pabc:12"), Some(("pabc".into(), 12)));
        assert_eq!(parse_event_id("g:0"), Some(("g".into(), 0)));
        assert_eq!(parse_event_id("nocolon"), None);
        assert_eq!(parse_event_id("p-x:1"), None);
        assert_eq!(parse_event_id(":1"), None);
        assert_eq!(parse_event_id("p:-1"), None);
    }
}
