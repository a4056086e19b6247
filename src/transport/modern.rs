//! The modern era (2026-07-28): stateless requests that carry version, capabilities and client
//! info in `_meta`, mirrored in headers (SEP-2243). No session is minted or read. Closing a
//! response stream cancels its request. `subscriptions/listen` streams receive changes made on
//! any node through the store's signal bus.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use super::exec::{self, Prepared};
use super::headers;
use super::sse::{self, SseWriter};
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::protocol::error::ProtocolError;
use crate::protocol::jsonrpc::{self, Incoming};
use crate::protocol::registry::Active;
use crate::protocol::toolset::{Era, ListKind, LogLevel};
use crate::protocol::version::{
    META_CLIENT_CAPABILITIES, META_LOG_LEVEL, META_PROTOCOL_VERSION, META_SUBSCRIPTION_ID,
    MODERN_VERSION,
};
use crate::session::tasks::TaskRecord;
use crate::session::Signal;

/// True if a request selects the modern era: its `_meta` names a protocol version, or (with
/// `_meta` missing) it carries no session and a non-legacy `MCP-Protocol-Version`, so that a
/// malformed modern request gets a modern error rather than a legacy "session required".
pub fn is_modern(value: &Value, headers: &HeaderMap) -> bool {
    let meta_version = value
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .is_some();
    if meta_version {
        return true;
    }
    if headers.contains_key(headers::SESSION_ID) || !value.is_object() {
        return false;
    }
    let is_initialize = value.get("method").and_then(Value::as_str) == Some("initialize");
    let header = headers::text(headers, headers::PROTOCOL_VERSION)
        .ok()
        .flatten();
    !is_initialize && header.is_some_and(|v| !crate::protocol::version::is_legacy(v))
}

fn reject(e: ProtocolError, id: Option<Value>) -> Response {
    let mut err = ApiError::from_protocol(&e, Era::Modern, id);
    if err.status == StatusCode::OK {
        err.status = StatusCode::BAD_REQUEST;
    }
    err.into_response()
}

fn invalid_meta(message: &str) -> ProtocolError {
    ProtocolError::InvalidParams {
        message: message.to_owned(),
        data: None,
    }
}

/// Handles a modern POST; returns the metrics label too.
pub async fn post(
    app: &AppState,
    headers: &HeaderMap,
    value: Value,
    caller: super::Caller,
) -> (&'static str, Response) {
    let msg = match jsonrpc::classify(value) {
        Ok(m) => m,
        Err((e, id)) => return ("other", reject(e, id)),
    };
    let label = crate::telemetry::metrics::method_label(msg.method().unwrap_or("response"));
    let (id, method, params) = match msg {
        Incoming::Request { id, method, params } => (id, method, params),
        Incoming::Notification { .. } => return (label, StatusCode::ACCEPTED.into_response()),
        Incoming::Response { id, .. } => {
            let e = ProtocolError::InvalidRequest(
                "clients do not send responses in protocol version 2026-07-28".into(),
            );
            return (label, reject(e, Some(id)));
        }
    };
    let resp = match validate(app, headers, &method, &params) {
        Err(e) => reject(e, Some(id)),
        Ok(meta) if method == "subscriptions/listen" => {
            listen(
                app,
                id,
                &params,
                meta,
                caller.as_ref().map(|p| p.0.as_str()),
            )
            .await
        }
        Ok(meta) => {
            exec::run(
                app,
                Prepared {
                    era: Era::Modern,
                    id,
                    method,
                    params,
                    protocol_version: MODERN_VERSION.to_owned(),
                    session_id: None,
                    client_capabilities: meta.capabilities,
                    subscriptions: Default::default(),
                    log_level: meta.log_level,
                    principal: caller.map(|p| p.0),
                    trace: None,
                },
            )
            .await
        }
    };
    (label, resp)
}

/// What a valid modern request declares in `_meta`.
struct Meta {
    capabilities: Value,
    log_level: Option<LogLevel>,
}

fn validate(
    app: &AppState,
    headers: &HeaderMap,
    method: &str,
    params: &Map<String, Value>,
) -> Result<Meta, ProtocolError> {
    // Order matters to clients probing the era: header presence, then `_meta` shape, then
    // header/body agreement, then version support, then the other mirrored headers.
    let header = headers::text(headers, headers::PROTOCOL_VERSION)
        .ok()
        .flatten();
    if header.is_none() {
        return Err(ProtocolError::HeaderMismatch(
            "MCP-Protocol-Version header is required".into(),
        ));
    }
    let meta = params
        .get("_meta")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid_meta("params._meta is required and must be an object"))?;
    let version = meta
        .get(META_PROTOCOL_VERSION)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid_meta(
                "_meta io.modelcontextprotocol/protocolVersion is required and must be a string",
            )
        })?;
    let capabilities = match meta.get(META_CLIENT_CAPABILITIES) {
        Some(c @ Value::Object(_)) => c.clone(),
        _ => return Err(invalid_meta(
            "_meta io.modelcontextprotocol/clientCapabilities is required and must be an object",
        )),
    };
    headers::check_version(headers, version)?;
    if version != MODERN_VERSION {
        return Err(ProtocolError::UnsupportedVersion(version.to_owned()));
    }
    let active = app.dispatcher.registry.active();
    let schema = (method == "tools/call")
        .then(|| params.get("name").and_then(Value::as_str))
        .flatten()
        .and_then(|name| tool_schema(&active, name));
    headers::check_modern(headers, method, params, schema)?;
    let log_level = match meta.get(META_LOG_LEVEL) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            LogLevel::parse(s).ok_or_else(|| invalid_meta("_meta logLevel is not a log level"))?,
        ),
        Some(_) => return Err(invalid_meta("_meta logLevel must be a string")),
    };
    Ok(Meta {
        capabilities,
        log_level,
    })
}

/// The input schema of an active tool, for `Mcp-Param-*` checks (borrowed, not copied).
fn tool_schema<'a>(active: &'a Active, name: &str) -> Option<&'a Value> {
    active
        .tools_json
        .as_array()?
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|t| t.get("inputSchema"))
}

/// Task ids one listen stream may watch.
const MAX_WATCHED_TASKS: usize = 64;
/// How long a listen stream's watch on its tasks lasts unless renewed, and how often it is.
const WATCH_TTL: Duration = Duration::from_secs(60);
const WATCH_RENEW: Duration = Duration::from_secs(20);

/// The subset of a listen filter Abacus honours.
#[derive(Debug, Default, Clone, PartialEq)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Option<Vec<String>>,
    /// Tasks whose status changes the client wants (`notifications/tasks`, Tasks extension):
    /// as asked, then only those the caller may see.
    task_ids: Option<Vec<String>>,
}

impl Filter {
    fn parse(v: &Value) -> Self {
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        Self {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris: v
                .get("resourceSubscriptions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
            task_ids: v.get("taskIds").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|id| id.len() <= 128)
                    .take(MAX_WATCHED_TASKS)
                    .map(str::to_owned)
                    .collect()
            }),
        }
    }

    /// Keeps the watched tasks the caller may see (unknown, expired and foreign ids are
    /// dropped, so the acknowledgement lists what will really be sent) and returns them.
    async fn agree_tasks(
        &mut self,
        app: &AppState,
        owner: &str,
    ) -> Result<Vec<TaskRecord>, ProtocolError> {
        let Some(ids) = self.task_ids.take() else {
            return Ok(Vec::new());
        };
        let mut agreed = Vec::new();
        for id in ids {
            if let Some(task) = app.dispatcher.tasks.store().get_task(&id).await? {
                if task.owner == owner {
                    agreed.push(task);
                }
            }
        }
        self.task_ids = Some(agreed.iter().map(|t| t.id.clone()).collect());
        Ok(agreed)
    }

    fn watches_task(&self, id: &str) -> bool {
        self.task_ids
            .as_ref()
            .is_some_and(|ids| ids.iter().any(|t| t == id))
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        if self.tools {
            o.insert("toolsListChanged".into(), json!(true));
        }
        if self.prompts {
            o.insert("promptsListChanged".into(), json!(true));
        }
        if self.resources {
            o.insert("resourcesListChanged".into(), json!(true));
        }
        if let Some(uris) = &self.uris {
            o.insert("resourceSubscriptions".into(), json!(uris));
        }
        if let Some(ids) = self.task_ids.as_ref().filter(|ids| !ids.is_empty()) {
            o.insert("taskIds".into(), json!(ids));
        }
        Value::Object(o)
    }

    /// The notification a signal becomes on this stream, if the filter wants it.
    fn notification(&self, signal: &Signal) -> Option<(&'static str, Map<String, Value>)> {
        match signal {
            Signal::ListChanged { kind } => match ListKind::from(*kind) {
                ListKind::Tools if self.tools => {
                    Some(("notifications/tools/list_changed", Map::new()))
                }
                ListKind::Prompts if self.prompts => {
                    Some(("notifications/prompts/list_changed", Map::new()))
                }
                ListKind::Resources if self.resources => {
                    Some(("notifications/resources/list_changed", Map::new()))
                }
                _ => None,
            },
            Signal::ResourceUpdated { uri, session: None }
                if self.uris.as_ref().is_some_and(|u| u.contains(uri)) =>
            {
                let mut p = Map::new();
                p.insert("uri".into(), json!(uri));
                Some(("notifications/resources/updated", p))
            }
            _ => None,
        }
    }
}

/// `subscriptions/listen`: acknowledge, then forward matching changes from every node until
/// the client leaves or the server drains (then answer with a complete result).
async fn listen(
    app: &AppState,
    id: Value,
    params: &Map<String, Value>,
    meta: Meta,
    principal: Option<&str>,
) -> Response {
    let mut filter = Filter::parse(params.get("notifications").unwrap_or(&Value::Null));
    let sub_meta = json!({ META_SUBSCRIPTION_ID: id });
    // Subscribed before the tasks are read, so that no change falls between the two.
    let mut signals = app.store.signals();
    let watched = if filter.task_ids.is_some() {
        if !crate::protocol::toolset::declares_tasks(&meta.capabilities) {
            let caps = crate::protocol::toolset::tasks_required();
            return reject(ProtocolError::MissingCapability(caps), Some(id));
        }
        let owner = crate::tasks::Tasks::owner_of(principal, None);
        let tasks = match filter.agree_tasks(app, &owner).await {
            Ok(tasks) => tasks,
            Err(e) => return reject(e, Some(id)),
        };
        // Watched before the states are read for the client, so no change falls between.
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let store = app.dispatcher.tasks.store();
        if let Err(e) = store.watch_tasks(&ids, WATCH_TTL).await {
            return reject(e.into(), Some(id));
        }
        let mut fresh = Vec::with_capacity(tasks.len());
        for task in tasks {
            match store.get_task(&task.id).await {
                Ok(Some(t)) => fresh.push(t),
                Ok(None) => {}
                Err(e) => return reject(e.into(), Some(id)),
            }
        }
        fresh
    } else {
        Vec::new()
    };
    let (writer, body) = SseWriter::channel();
    let app = app.clone();
    let spans = crate::telemetry::context::Carried::capture();
    let stream = async move {
        let _gauge = app.metrics.stream_guard();
        let ack = jsonrpc::notification(
            "notifications/subscriptions/acknowledged",
            json!({ "_meta": sub_meta, "notifications": filter.to_json() }),
        );
        if !send(&writer, &ack).await {
            return;
        }
        // Where each watched task stands now; later changes follow as they happen.
        for task in &watched {
            if !send(&writer, &task_note(task, &sub_meta)).await {
                return;
            }
        }
        let keepalive = Duration::from_millis(app.live.current().sse_keepalive_ms);
        let mut renew_watch = tokio::time::interval(WATCH_RENEW);
        renew_watch.tick().await;
        loop {
            tokio::select! {
                _ = renew_watch.tick(), if !watched.is_empty() => {
                    let ids: Vec<String> = watched.iter().map(|t| t.id.clone()).collect();
                    let _ = app.dispatcher.tasks.store().watch_tasks(&ids, WATCH_TTL).await;
                }
                signal = signals.recv() => match signal {
                    Ok(env) => {
                        if let Signal::TaskChanged { task } = &env.payload {
                            if filter.watches_task(task) {
                                let hop = crate::telemetry::context::receive_span(env.payload.name(), env.traceparent());
                                let Ok(Some(task)) = app.dispatcher.tasks.store().get_task(task).await else {
                                    continue;
                                };
                                if !send(&writer, &task_note(&task, &sub_meta)).instrument(hop).await {
                                    return;
                                }
                            }
                            continue;
                        }
                        if let Some((method, mut p)) = filter.notification(&env.payload) {
                            let hop = crate::telemetry::context::receive_span(env.payload.name(), env.traceparent());
                            p.insert("_meta".into(), sub_meta.clone());
                            let note = jsonrpc::notification(method, Value::Object(p));
                            if !send(&writer, &note).instrument(hop).await {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = writer.closed() => return,
                _ = app.drain.streams.cancelled() => {
                    let done = app.dispatcher.shape(
                        "subscriptions/listen",
                        Era::Modern,
                        json!({ "_meta": sub_meta }),
                    );
                    send(&writer, &jsonrpc::response(&id, done)).await;
                    return;
                }
                _ = tokio::time::sleep(keepalive) => {
                    if !writer.send(sse::keepalive()).await { return; }
                }
            }
        }
    };
    tokio::spawn(spans.run(stream));
    sse::response(body, None)
}

/// `notifications/tasks` for one task on a listen stream.
fn task_note(task: &TaskRecord, sub_meta: &Value) -> Value {
    let mut params = crate::tasks::wire::notification(task);
    params["_meta"] = sub_meta.clone();
    jsonrpc::notification("notifications/tasks", params)
}

async fn send(writer: &SseWriter, msg: &Value) -> bool {
    writer
        .send(sse::event(
            None,
            &serde_json::to_string(msg).unwrap_or_default(),
        ))
        .await
}
