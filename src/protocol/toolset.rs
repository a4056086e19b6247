//! The boundary between the protocol layer and a domain (calculator, conformance fixtures).
//!
//! A domain implements [`Toolset`] and sees each request only through [`RequestContext`]. It never
//! learns whether it runs behind HTTP, which era the client speaks on the wire, or where session
//! state lives (memory or Redis): those are the protocol and session layers' business. This keeps
//! the domain unit-testable and lets the distributed session layer change without touching it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rmcp::model::{
    CallToolResult, GetPromptResult, Prompt, ReadResourceResult, Resource, ResourceTemplate, Tool,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The Tasks extension's identifier (capabilities, `-32021` data).
pub const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// Whether client capabilities (per-request `_meta`) declare the Tasks extension.
pub fn declares_tasks(capabilities: &Value) -> bool {
    capabilities
        .get("extensions")
        .and_then(|e| e.get(TASKS_EXTENSION))
        .is_some_and(|v| !v.is_null())
}

/// The capabilities a -32021 names when a request needs the Tasks extension.
pub fn tasks_required() -> Value {
    serde_json::json!({ "extensions": { TASKS_EXTENSION: {} } })
}

/// A JSON object, as tool arguments and `inputRequests` are.
pub type JsonObject = serde_json::Map<String, Value>;

/// Which protocol era a request was made in. Domains use it only where the spec differs per era
/// (state handles instead of sessions in the modern era).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-03-26 … 2025-11-25: `initialize`, `Mcp-Session-Id`, server→client requests on streams.
    Legacy,
    /// 2026-07-28: stateless, per-request `_meta`, MRTR instead of server→client requests.
    Modern,
}

/// Log severities of `notifications/message`, ordered from least to most severe (RFC 5424 names).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    /// Parses the wire spelling; `None` for anything the spec does not define.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Alert => "alert",
            LogLevel::Emergency => "emergency",
        }
    }
}

/// Which list a `notifications/*/list_changed` is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

/// Errors a domain (or the protocol layer on its behalf) reports as JSON-RPC errors rather than
/// as tool results. The single mapping to codes and HTTP statuses lives in `crate::http::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainError {
    /// Bad arguments to a tool. From 2025-11-25 on (and in the modern era) the dispatcher turns
    /// this into a tool result with `isError: true` (SEP-1303); for older versions it is -32602.
    #[error("{0}")]
    /// The message names the problem only (e.g. `argument "b" is required`); the dispatcher
    /// adds the `Invalid arguments for tool <name>:` prefix.
    InvalidArguments(String),
    /// Bad parameters outside tool arguments (unknown prompt argument, bad cursor, bad handle): -32602.
    #[error("{message}")]
    InvalidParams {
        message: String,
        data: Option<Value>,
    },
    /// The resource does not exist: -32002 (legacy) or -32602 with `data.uri` (modern).
    #[error("Resource {uri} not found")]
    ResourceNotFound { uri: String },
    /// The request needs a client capability the client did not declare: -32021 (modern).
    /// The payload is a `ClientCapabilities` object such as `{"sampling":{}}`.
    #[error("Missing required client capability")]
    MissingCapability(Value),
    /// The client answered a server→client request with an error, or not at all.
    #[error("{0}")]
    ClientRequestFailed(String),
    /// The request was cancelled (client `notifications/cancelled`, or stream closed in the modern era).
    #[error("request cancelled")]
    Cancelled,
    /// State storage is unreachable: HTTP 503 with a JSON-RPC error, never "not found".
    #[error("session storage unavailable: {0}")]
    Unavailable(String),
    /// The session ended (deleted or expired) while the request ran.
    #[error("Session could not be found or has expired.")]
    SessionGone,
    /// A bug or an unexpected condition: -32603.
    #[error("{0}")]
    Internal(String),
}

/// What a tool call, prompt get or resource read produces: a final result, (modern era only)
/// a multi round-trip `InputRequiredResult` (SEP-2322), or work that may run as a task.
pub enum Outcome<T> {
    Complete(T),
    /// `inputRequests` maps keys to `elicitation/create`, `sampling/createMessage` or
    /// `roots/list` request objects (`{"method":…,"params":…}`); `requestState` is an opaque,
    /// integrity-protected string made with [`RequestContext::seal_request_state`].
    InputRequired {
        input_requests: Option<JsonObject>,
        request_state: Option<String>,
    },
    /// Work that may outlive the request (the Tasks extension). The protocol layer decides:
    /// for a client that declared tasks it stores a task and runs the work in the background
    /// with the task's own context; otherwise it runs it inline (`Optional`) or refuses
    /// with -32021 (`Required`). The tool does nothing before that decision.
    Task(TaskWork<T>),
}

impl<T> std::fmt::Debug for Outcome<T>
where
    T: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Complete(r) => f.debug_tuple("Complete").field(r).finish(),
            Outcome::InputRequired {
                input_requests,
                request_state,
            } => f
                .debug_struct("InputRequired")
                .field("input_requests", input_requests)
                .field("request_state", request_state)
                .finish(),
            Outcome::Task(w) => f.debug_tuple("Task").field(&w.support).finish(),
        }
    }
}

/// Whether a tool that supports tasks can also answer a client that did not declare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSupport {
    /// Runs inline for such a client.
    Optional,
    /// Needs a task: such a client gets -32021 naming the extension.
    Required,
}

/// The body of work that may run as a task, given the context it runs in.
pub type TaskRun<T> = Box<
    dyn FnOnce(RequestContext) -> futures::future::BoxFuture<'static, Result<T, DomainError>>
        + Send,
>;

/// Work a tool hands to the protocol layer to run as a task or inline.
pub struct TaskWork<T> {
    pub support: TaskSupport,
    pub run: TaskRun<T>,
}

impl<T> Outcome<T> {
    /// Work that runs as a task when the client declared tasks.
    pub fn task<F, Fut>(support: TaskSupport, run: F) -> Self
    where
        F: FnOnce(RequestContext) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, DomainError>> + Send + 'static,
    {
        Outcome::Task(TaskWork {
            support,
            run: Box::new(move |ctx| Box::pin(run(ctx))),
        })
    }
}

/// A tool call's result: an rmcp [`CallToolResult`] whose structured content a domain may
/// hand over as JSON text it already wrote, instead of a `Value` tree.
///
/// Why: the calculator answers every call with structured content, and building it as a tree
/// only for the dispatcher to serialize it again was a measurable part of the hot path. The
/// serialized form is exactly that of the equivalent `CallToolResult` (same keys, same order).
#[derive(Debug, Clone)]
pub struct ToolResult {
    /// Everything but pre-serialized structured content.
    pub result: CallToolResult,
    /// `structuredContent` as JSON text; when set, it replaces `result.structured_content`.
    pub structured_json: Option<String>,
}

impl From<CallToolResult> for ToolResult {
    fn from(result: CallToolResult) -> Self {
        Self {
            result,
            structured_json: None,
        }
    }
}

impl ToolResult {
    /// A result with structured content given as JSON text. The text must be one valid JSON
    /// value: it is sent as it is (checked only in debug builds).
    pub fn with_structured_json(result: CallToolResult, json: String) -> Self {
        debug_assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&json).is_ok(),
            "structured content is not valid JSON: {json}"
        );
        Self {
            result,
            structured_json: Some(json),
        }
    }

    /// The plain `CallToolResult`, with the structured content parsed into a `Value` (for
    /// tests and callers that inspect it; the hot path serializes `self` instead).
    pub fn into_call_tool_result(self) -> CallToolResult {
        let mut result = self.result;
        if let Some(json) = self.structured_json {
            result.structured_content = serde_json::from_str(&json).ok();
        }
        result
    }

    /// The JSON text of this result: what `serde_json` writes for the equivalent
    /// `CallToolResult` (field order and skipping rules included), with the structured
    /// content's text copied in rather than re-parsed.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let Some(structured) = &self.structured_json else {
            return serde_json::to_string(&self.result);
        };
        let r = &self.result;
        let mut out = Vec::with_capacity(structured.len() + 128);
        out.push(b'{');
        if let Some(t) = &r.result_type {
            out.extend_from_slice(b"\"resultType\":");
            serde_json::to_writer(&mut out, t)?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"content\":");
        serde_json::to_writer(&mut out, &r.content)?;
        out.extend_from_slice(b",\"structuredContent\":");
        out.extend_from_slice(structured.as_bytes());
        match r.is_error {
            Some(true) => out.extend_from_slice(b",\"isError\":true"),
            Some(false) => out.extend_from_slice(b",\"isError\":false"),
            None => {}
        }
        if let Some(m) = &r.meta {
            out.extend_from_slice(b",\"_meta\":");
            serde_json::to_writer(&mut out, m)?;
        }
        out.push(b'}');
        String::from_utf8(out).map_err(serde::ser::Error::custom)
    }
}

impl serde::Serialize for ToolResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        // Not the hot path (the dispatcher uses `to_json`): go through a parsed copy.
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str(&self.to_json().map_err(S::Error::custom)?)
                .map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<T: Send + 'static> Outcome<T> {
    /// Converts a complete result (also the one a task's work will produce), keeping an
    /// `InputRequired` outcome as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Outcome<U> {
        match self {
            Outcome::Complete(r) => Outcome::Complete(f(r)),
            Outcome::InputRequired {
                input_requests,
                request_state,
            } => Outcome::InputRequired {
                input_requests,
                request_state,
            },
            Outcome::Task(TaskWork { support, run }) => Outcome::Task(TaskWork {
                support,
                run: Box::new(move |ctx| Box::pin(async move { run(ctx).await.map(f) })),
            }),
        }
    }
}

/// A reference in `completion/complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletionRef {
    Prompt { name: String },
    Resource { uri: String },
}

/// Summary of a history scope (a legacy session or a modern state handle), as the
/// calculator's stats and session-info resources need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeStats {
    /// The session id or state handle.
    pub id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Last time a request used this scope, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// Requests made in this scope (legacy: every POST/GET with the session header).
    pub request_count: u64,
    /// Calculations ever recorded in this scope (not capped like the history).
    pub calculation_total: u64,
    /// Entries currently held in the (capped) history.
    pub history_len: u64,
    /// Calculations per operation name, ever recorded in this scope.
    pub operations: BTreeMap<String, u64>,
}

/// Per-scope history storage, implemented by the session layer (memory or Redis). Entries are
/// opaque JSON to the store; every method is atomic with respect to concurrent requests.
#[async_trait]
pub trait HistoryScope: Send + Sync {
    /// The session id or state handle this scope belongs to.
    fn id(&self) -> &str;
    /// Appends entries (each with its operation name, counted per operation) and trims the
    /// history to its configured cap, atomically. Entries are serialized JSON objects: stores
    /// keep them as text (one allocation in memory, one list element in Redis). `ids` are the
    /// entries' calculation ids. Returns `Some(ids)` when this scope's request already recorded
    /// its entries (a retried request, see [`crate::session::SessionStore::history`]): nothing
    /// is appended and the ids are those stored the first time.
    async fn append(
        &self,
        entries: Vec<(String, String)>,
        ids: &[String],
    ) -> Result<Option<Vec<String>>, DomainError>;
    /// The current history, oldest first.
    async fn history(&self) -> Result<Vec<Value>, DomainError>;
    /// Counters and timestamps of this scope.
    async fn stats(&self) -> Result<ScopeStats, DomainError>;
}

/// The services a [`RequestContext`] delegates to; implemented by the protocol/transport layer.
/// Domains do not implement or call this directly.
#[async_trait]
pub trait ContextServices: Send + Sync {
    /// Sends a notification on this request's stream (progress, log message).
    async fn notify(&self, method: &str, params: Value);
    /// Sends a server→client request on this request's stream and waits for the client's answer
    /// (legacy era only; the modern era uses [`Outcome::InputRequired`]).
    async fn request(&self, method: &str, params: Value) -> Result<Value, DomainError>;
    /// Announces that a list changed, to every open stream that asked for it, on every node.
    async fn list_changed(&self, kind: ListKind);
    /// Announces that a resource changed, to every subscriber, on every node.
    async fn resource_updated(&self, uri: &str);
    /// False when no `resource_updated` from this request can reach anyone (a legacy session
    /// without subscriptions), so domains can skip building the announcement.
    fn may_have_subscribers(&self) -> bool {
        true
    }
    /// Opens a history scope: `Some(handle)` opens an existing state handle (error if unknown),
    /// `None` gives the legacy session's scope or, in the modern era, mints a new handle.
    async fn scope(&self, handle: Option<&str>) -> Result<Arc<dyn HistoryScope>, DomainError>;
    /// Seals an MRTR `requestState` bound to this request's method, name and principal.
    fn seal_state(&self, payload: &Value) -> Result<String, DomainError>;
    /// Verifies and opens an MRTR `requestState`; tampered, expired or foreign state is an error.
    /// Each state opens once: a replayed one is an error.
    async fn open_state(&self, sealed: &str) -> Result<Value, DomainError>;
    /// Counts one successful calculation of `operation` in the process metrics.
    fn count_calculation(&self, operation: &str);
    /// Inside a task: puts the task in `input_required` with these requests (key → request
    /// object) and waits until the client answered every one of them through `tasks/update`
    /// (on any node); returns the answers by key. Outside a task there is no one to ask.
    async fn ask(&self, _requests: JsonObject) -> Result<JsonObject, DomainError> {
        Err(DomainError::Internal(
            "input can be asked this way only inside a task".into(),
        ))
    }
    /// Legacy era: ends this request's HTTP connection now (with a `retry:` hint) without
    /// ending its stream; later messages are kept for the client's resumption (SEP-1699).
    async fn close_stream(&self);
}

/// Everything a domain may know about, and do within, one request.
#[derive(Clone)]
pub struct RequestContext {
    /// The era of this request.
    pub era: Era,
    /// The negotiated (legacy) or requested (modern) protocol version, e.g. `2025-11-25`.
    pub protocol_version: String,
    /// The session id (legacy era only), for resources that name it.
    pub session_id: Option<String>,
    /// The client's declared capabilities (`initialize` or per-request `_meta`), an object.
    pub client_capabilities: Value,
    /// The request's `_meta.progressToken`, if the client asked for progress.
    pub progress_token: Option<Value>,
    /// Minimum level of `notifications/message` the client wants; `None` means send none.
    pub log_level: Option<LogLevel>,
    /// MRTR `inputResponses` sent with a retried request (modern era).
    pub input_responses: Option<JsonObject>,
    /// MRTR `requestState` echoed by a retried request (modern era), not yet verified.
    pub request_state: Option<String>,
    /// Cancelled when the client cancels the request or the server drains.
    pub cancel: CancellationToken,
    /// The session's (or the caller's state handle's) trace context, `traceparent` text: the
    /// operation's span links to it (filled only while traces are on).
    pub trace: Option<String>,
    /// The JSON-RPC id as text, for the `jsonrpc.request.id` span attribute (traces on only).
    pub request_id: Option<std::sync::Arc<str>>,
    /// The authenticated caller (`iss#sub`) when auth is on: tasks it creates are its own.
    pub principal: Option<String>,
    /// The task this context runs (the Tasks extension); `None` for a plain request.
    pub task: Option<String>,
    services: Arc<dyn ContextServices>,
}

impl RequestContext {
    /// Builds a context; called by the protocol layer for every request.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        era: Era,
        protocol_version: String,
        session_id: Option<String>,
        client_capabilities: Value,
        progress_token: Option<Value>,
        log_level: Option<LogLevel>,
        cancel: CancellationToken,
        services: Arc<dyn ContextServices>,
    ) -> Self {
        Self {
            era,
            protocol_version,
            session_id,
            client_capabilities,
            progress_token,
            log_level,
            input_responses: None,
            request_state: None,
            cancel,
            trace: Default::default(),
            request_id: None,
            principal: None,
            task: None,
            services,
        }
    }

    /// This request's services, for a layer that wraps them (a task's).
    pub fn services(&self) -> Arc<dyn ContextServices> {
        self.services.clone()
    }

    /// The context of a task started by this request: the same client, its own services and
    /// cancellation, and no request stream (no progress token, no log level).
    pub fn for_task(
        &self,
        task: String,
        services: Arc<dyn ContextServices>,
        cancel: CancellationToken,
    ) -> Self {
        let mut ctx = self.clone();
        ctx.task = Some(task);
        ctx.services = services;
        ctx.cancel = cancel;
        ctx.progress_token = None;
        ctx.log_level = None;
        ctx
    }

    /// Whether this request declared the Tasks extension (modern era, per request).
    pub fn declares_tasks(&self) -> bool {
        self.era == Era::Modern && declares_tasks(&self.client_capabilities)
    }

    /// Inside a task: asks the client for input (see [`ContextServices::ask`]).
    pub async fn ask(&self, requests: JsonObject) -> Result<JsonObject, DomainError> {
        tokio::select! {
            r = self.services.ask(requests) => r,
            _ = self.cancel.cancelled() => Err(DomainError::Cancelled),
        }
    }

    /// Sends `notifications/progress` if and only if the client sent a `progressToken`.
    /// Callers must pass strictly increasing `progress` values.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let Some(token) = &self.progress_token else {
            return;
        };
        let mut params = serde_json::json!({ "progressToken": token, "progress": progress });
        if let Some(total) = total {
            params["total"] = total.into();
        }
        if let Some(message) = message {
            params["message"] = message.into();
        }
        self.services.notify("notifications/progress", params).await;
    }

    /// Sends `notifications/message` if the client's log level lets `level` through.
    pub async fn log(&self, level: LogLevel, logger: Option<&str>, data: Value) {
        match self.log_level {
            Some(min) if level >= min => {}
            _ => return,
        }
        let mut params = serde_json::json!({ "level": level.as_str(), "data": data });
        if let Some(logger) = logger {
            params["logger"] = logger.into();
        }
        self.services.notify("notifications/message", params).await;
    }

    /// True if the client declared the named top-level capability (`sampling`, `elicitation`, `roots`).
    pub fn client_supports(&self, capability: &str) -> bool {
        self.client_capabilities
            .get(capability)
            .is_some_and(|v| !v.is_null())
    }

    /// Sends a server→client request (`sampling/createMessage`, `elicitation/create`,
    /// `roots/list`) and waits for the answer. Legacy era only.
    pub async fn request_client(&self, method: &str, params: Value) -> Result<Value, DomainError> {
        if self.task.is_some() {
            // A task asks through its record: one key, answered by `tasks/update`.
            let mut requests = JsonObject::new();
            requests.insert(
                "request".into(),
                serde_json::json!({ "method": method, "params": params }),
            );
            let mut answers = self.ask(requests).await?;
            return Ok(answers.remove("request").unwrap_or(Value::Null));
        }
        if self.era == Era::Modern {
            return Err(DomainError::Internal(
                "server-to-client requests are not available in the modern era; use InputRequired"
                    .into(),
            ));
        }
        tokio::select! {
            r = self.services.request(method, params) => r,
            _ = self.cancel.cancelled() => Err(DomainError::Cancelled),
        }
    }

    /// Announces a list change to every interested stream on every node.
    pub async fn list_changed(&self, kind: ListKind) {
        self.services.list_changed(kind).await;
    }

    /// False when no resource update from this request can reach a subscriber; lets a domain
    /// skip building announcements on the hot path.
    pub fn may_have_subscribers(&self) -> bool {
        self.services.may_have_subscribers()
    }

    /// Announces a resource change to its subscribers on every node.
    pub async fn resource_updated(&self, uri: &str) {
        self.services.resource_updated(uri).await;
    }

    /// Opens the history scope for this request; see [`ContextServices::scope`].
    pub async fn scope(&self, handle: Option<&str>) -> Result<Arc<dyn HistoryScope>, DomainError> {
        self.services.scope(handle).await
    }

    /// Seals an MRTR `requestState` payload (integrity-protected, expiring, bound to the request).
    pub fn seal_request_state(&self, payload: &Value) -> Result<String, DomainError> {
        self.services.seal_state(payload)
    }

    /// Opens the `requestState` the client echoed, if any; tampering is an `InvalidParams` error.
    pub async fn open_request_state(&self) -> Result<Option<Value>, DomainError> {
        match &self.request_state {
            None => Ok(None),
            Some(sealed) => self.services.open_state(sealed).await.map(Some),
        }
    }

    /// Counts one successful calculation in the process metrics.
    pub fn count_calculation(&self, operation: &str) {
        self.services.count_calculation(operation);
    }

    /// Legacy era: closes the client's connection to this request's stream early (SEP-1699
    /// polling); the client resumes with `Last-Event-ID`. No-op in the modern era, where
    /// closing the stream would cancel the request.
    pub async fn close_stream(&self) {
        if self.era == Era::Legacy {
            self.services.close_stream().await;
        }
    }
}

/// A domain's tools, resources, prompts and completions. Several toolsets are combined by the
/// protocol layer's registry, which rejects duplicate names at start-up.
#[async_trait]
pub trait Toolset: Send + Sync + 'static {
    /// Tools in a deterministic order.
    fn tools(&self) -> Vec<Tool>;
    /// Calls a tool this toolset listed. Argument problems are `DomainError::InvalidArguments`;
    /// execution failures are `Ok(Complete(result))` with `isError: true`.
    async fn call_tool(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RequestContext,
    ) -> Result<Outcome<ToolResult>, DomainError>;
    /// Direct resources; may depend on the request (e.g. the session's own info URI).
    fn resources(&self, ctx: &RequestContext) -> Vec<Resource>;
    /// Resource templates (RFC 6570 URIs).
    fn resource_templates(&self) -> Vec<ResourceTemplate>;
    /// Reads a resource; `Ok(None)` means "not one of mine" (the registry tries the next toolset
    /// and finally answers resource-not-found).
    async fn read_resource(
        &self,
        uri: &str,
        ctx: &RequestContext,
    ) -> Result<Option<Outcome<ReadResourceResult>>, DomainError>;
    /// True if `resources/subscribe` may be used on this URI.
    fn can_subscribe(&self, uri: &str) -> bool;
    /// Prompts in a deterministic order.
    fn prompts(&self) -> Vec<Prompt>;
    /// Gets a prompt this toolset listed; missing required arguments are `InvalidParams`.
    async fn get_prompt(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RequestContext,
    ) -> Result<Outcome<GetPromptResult>, DomainError>;
    /// Completion values for an argument, or `None` if this toolset does not own the reference.
    /// `context` holds already-resolved arguments (`context.arguments`).
    fn complete(
        &self,
        reference: &CompletionRef,
        argument: &str,
        value: &str,
        context: &JsonObject,
    ) -> Option<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    #[test]
    fn tool_results_serialize_like_call_tool_results() {
        let structured = serde_json::json!({"id": "c-1", "inputs": [6, 7], "result": 42});
        let mut plain = CallToolResult::success(vec![ContentBlock::text("6 multiply 7 = 42")]);
        plain.structured_content = Some(structured.clone());
        let mut text = CallToolResult::success(vec![ContentBlock::text("6 multiply 7 = 42")]);
        text.result_type = None;
        plain.result_type = None;
        let tr = ToolResult::with_structured_json(text, structured.to_string());
        let want = serde_json::to_string(&plain).unwrap();
        assert_eq!(tr.to_json().unwrap(), want);
        assert_eq!(serde_json::to_string(&tr).unwrap(), want);
        assert_eq!(
            serde_json::to_string(&ToolResult::from(plain.clone())).unwrap(),
            want
        );
        assert_eq!(tr.into_call_tool_result(), plain);
        let mut modern = CallToolResult::error(vec![ContentBlock::text("x")]);
        modern.meta = Some(rmcp::model::MetaObject::new());
        assert_eq!(
            serde_json::to_string(&ToolResult::from(modern.clone())).unwrap(),
            serde_json::to_string(&modern).unwrap()
        );
    }
}
