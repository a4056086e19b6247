//! Method dispatch for both eras. The transport decides the era and builds the
//! [`RequestContext`]; this module turns one JSON-RPC request into a result or an error, and
//! shapes results per era (`resultType`, `serverInfo`, caching hints only in the modern era).

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, MetaObject, ResultType};
use serde_json::{json, Map, Value};

use super::error::ProtocolError;
use super::registry::Registry;
use super::toolset::{
    CompletionRef, DomainError, Era, LogLevel, Outcome, RequestContext, ToolResult,
};
use super::version::{self, ALL_VERSIONS, META_SERVER_INFO};
use crate::session::{SessionChange, SessionStore};
use crate::telemetry::context::{within, LiveSpan};
use crate::telemetry::metrics::{intern_tool, Metrics};
use opentelemetry::KeyValue;
use std::time::Instant;

/// How long clients may cache list, read and discover results in the modern era.
const CACHE_TTL_MS: u64 = 60_000;
/// Completion values returned at most (spec limit).
const MAX_COMPLETIONS: usize = 100;

/// Dispatches requests to the active toolsets.
pub struct Dispatcher {
    /// The toolsets.
    pub registry: Arc<Registry>,
    /// Session state (for `logging/setLevel` and subscriptions).
    pub store: Arc<dyn SessionStore>,
    /// `serverInfo` / `io.modelcontextprotocol/serverInfo`.
    pub server_info: Value,
    /// Operation durations are recorded here, where the tool lookup already happens.
    pub metrics: Arc<Metrics>,
    /// This node's task runner (the Tasks extension).
    pub tasks: Arc<crate::tasks::Tasks>,
}

/// Methods whose complete modern results carry `ttlMs` and `cacheScope`.
fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

impl Dispatcher {
    /// The capabilities Abacus declares: only what really works (defect D9).
    pub fn capabilities(&self, era: Era) -> Value {
        let mut caps = json!({
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "completions": {},
        });
        match era {
            Era::Legacy => {
                caps["logging"] = json!({});
            }
            Era::Modern => {
                caps["extensions"] = json!({ super::toolset::TASKS_EXTENSION: {} });
            }
        }
        caps
    }

    /// The `initialize` result for a negotiated legacy version.
    pub fn initialize_result(&self, negotiated: &str) -> Value {
        let mut capabilities = self.capabilities(Era::Legacy);
        if version::has_legacy_tasks(negotiated) {
            // 2025-11-25's experimental tasks: task-augmented `tools/call`, listed, cancellable.
            capabilities["tasks"] = json!({
                "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } }
            });
        }
        json!({
            "protocolVersion": negotiated,
            "capabilities": capabilities,
            "serverInfo": self.server_info,
            "instructions": "Abacus is a calculator. Use calculate, batch_calculate and advanced_calculate; \
                             results are kept in a per-session history readable as calculator://history/{calculationId}.",
        })
    }

    /// Handles one request (not `initialize`, not `subscriptions/listen`: the transport owns those).
    /// The result is its JSON text: typed results (the hot `tools/call` path) are shaped as
    /// structs and serialized once, never built as a `Value` tree.
    /// `tools/call` takes its `arguments` out of `params` (the tool owns them; no copy); the
    /// rest of `params` is left as it was.
    pub async fn call(
        &self,
        method: &str,
        params: &mut Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<String, ProtocolError> {
        let start = Instant::now();
        super::limits::check_progress_token(params).map_err(invalid_params)?;
        let span = operation_span(method, params, ctx, |name| {
            let known = self.registry.active().tool_owner(name).is_some();
            known.then(|| intern_tool(name))
        });
        let mut tool = None;
        let mut tool_error = false;
        let result = if method == "tools/call" {
            within(
                span.clone(),
                self.call_tool(params, ctx, &mut tool, &mut tool_error),
            )
            .await
        } else {
            within(span.clone(), self.call_other(method, params, ctx)).await
        };
        // A tool that answered `isError: true` failed, as the OTel MCP conventions count it.
        let error = match &result {
            Err(e) => Some(e.kind()),
            Ok(_) => tool_error.then_some("tool_error"),
        };
        if let (Some(kind), Some(span)) = (error, &span) {
            span.set_error(kind);
        }
        self.metrics
            .operation(method, tool, error, start.elapsed().as_secs_f64());
        result
    }

    /// The metrics label of the tool a `tools/call` names, if that tool exists. Only the cold
    /// paths use it (a cancelled call); finished calls get their label from `call_tool`.
    pub fn tool_label(&self, method: &str, params: &Map<String, Value>) -> Option<&'static str> {
        let name = params.get("name").and_then(Value::as_str);
        (method == "tools/call")
            .then_some(name)
            .flatten()
            .filter(|n| self.registry.active().tool_owner(n).is_some())
            .map(intern_tool)
    }

    async fn call_other(
        &self,
        method: &str,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<String, ProtocolError> {
        let era = ctx.era;
        let result = match (method, era) {
            ("ping", Era::Legacy) => Ok(json!({})),
            ("initialize", Era::Legacy) => Err(ProtocolError::InvalidRequest(
                "Server already initialized".into(),
            )),
            ("server/discover", Era::Modern) => Ok(self.discover()),
            ("logging/setLevel", Era::Legacy) => self.set_level(params, ctx).await,
            ("resources/subscribe", Era::Legacy) => self.subscribe(params, ctx, true).await,
            ("resources/unsubscribe", Era::Legacy) => self.subscribe(params, ctx, false).await,
            ("tools/list", _) => self.list(params, "tools", |a| a.tools_json.clone()),
            ("prompts/list", _) => self.list(params, "prompts", |a| a.prompts_json.clone()),
            ("resources/templates/list", _) => {
                self.list(params, "resourceTemplates", |a| a.templates_json.clone())
            }
            ("resources/list", _) => self.list_resources(params, ctx),
            ("prompts/get", _) => self.get_prompt(params, ctx).await,
            ("resources/read", _) => self.read_resource(params, ctx).await,
            ("completion/complete", _) => self.complete(params),
            ("tasks/get" | "tasks/update" | "tasks/cancel", Era::Modern) => {
                self.task_method(method, params, ctx).await
            }
            ("tasks/get" | "tasks/result" | "tasks/list" | "tasks/cancel", Era::Legacy)
                if version::has_legacy_tasks(&ctx.protocol_version) =>
            {
                self.legacy_task_method(method, params, ctx).await
            }
            _ => Err(ProtocolError::MethodNotFound(method.to_owned())),
        }?;
        raw(&self.shape(method, era, result))
    }

    /// Sets the era-specific fields of a tool result on the struct itself.
    fn shape_tool_result(&self, mut tr: ToolResult, era: Era) -> ToolResult {
        let r = &mut tr.result;
        match era {
            Era::Legacy => r.result_type = None,
            Era::Modern => {
                r.result_type = Some(ResultType::COMPLETE);
                r.meta
                    .get_or_insert_with(MetaObject::new)
                    .insert(META_SERVER_INFO.into(), self.server_info.clone());
            }
        }
        tr
    }

    /// Adds or strips era-specific result fields.
    pub fn shape(&self, method: &str, era: Era, mut result: Value) -> Value {
        let Some(obj) = result.as_object_mut() else {
            return result;
        };
        match era {
            Era::Legacy => {
                obj.remove("resultType");
                obj.remove("ttlMs");
                obj.remove("cacheScope");
            }
            Era::Modern => {
                let complete = obj
                    .entry("resultType")
                    .or_insert_with(|| json!("complete"))
                    .as_str()
                    == Some("complete");
                if complete && cacheable(method) {
                    obj.entry("ttlMs").or_insert(json!(CACHE_TTL_MS));
                    obj.entry("cacheScope").or_insert(json!("public"));
                }
                let meta = obj.entry("_meta").or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert(META_SERVER_INFO.into(), self.server_info.clone());
                }
            }
        }
        result
    }

    fn discover(&self) -> Value {
        json!({
            "supportedVersions": ALL_VERSIONS,
            "capabilities": self.capabilities(Era::Modern),
            "instructions": "Abacus is a calculator. History lives behind the historyHandle that calculation tools return.",
        })
    }

    fn list(
        &self,
        params: &Map<String, Value>,
        key: &str,
        pick: impl Fn(&super::registry::Active) -> Arc<Value>,
    ) -> Result<Value, ProtocolError> {
        reject_cursor(params)?;
        let active = self.registry.active();
        let mut out = Map::new();
        out.insert(key.to_owned(), (*pick(&active)).clone());
        Ok(Value::Object(out))
    }

    fn list_resources(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        reject_cursor(params)?;
        let active = self.registry.active();
        let resources: Vec<_> = active
            .toolsets
            .iter()
            .flat_map(|t| t.resources(ctx))
            .collect();
        Ok(json!({ "resources": resources }))
    }

    /// Calls a tool; `tool` receives its (interned) name for metrics once it is known to exist.
    async fn call_tool(
        &self,
        params: &mut Map<String, Value>,
        ctx: &RequestContext,
        tool: &mut Option<&'static str>,
        tool_error: &mut bool,
    ) -> Result<String, ProtocolError> {
        // `name` is checked before `arguments`, as the errors have always been ordered.
        required_str(params, "name")?;
        let arguments = take_object(params, "arguments")?;
        let name = required_str(params, "name")?;
        let active = self.registry.active();
        let owner = active
            .tool_owner(name)
            .ok_or_else(|| invalid_params(format!("Tool {name} not found")))?;
        *tool = Some(intern_tool(name));
        let outcome = owner.call_tool(name, arguments, ctx).await;
        let outcome = match outcome {
            Ok(Outcome::Task(work)) => match self.task_or_inline(name, params, work, ctx).await? {
                super::tasks::Started::Task(created) => {
                    return raw(&self.shape("tools/call", ctx.era, created))
                }
                super::tasks::Started::Inline(outcome) => outcome,
            },
            other => other,
        };
        let result = match outcome {
            Ok(Outcome::Complete(r)) => r,
            Ok(outcome) => {
                let v = outcome_json(outcome, ctx)?;
                return raw(&self.shape("tools/call", ctx.era, v));
            }
            Err(DomainError::InvalidArguments(problem)) => {
                let msg = format!("Invalid arguments for tool {name}: {problem}");
                if !version::validation_is_tool_error(&ctx.protocol_version) {
                    return Err(invalid_params(msg));
                }
                CallToolResult::error(vec![ContentBlock::text(msg)]).into()
            }
            Err(e) => return Err(e.into()),
        };
        *tool_error = result.result.is_error == Some(true);
        self.shape_tool_result(result, ctx.era)
            .to_json()
            .map_err(|e| ProtocolError::Internal(e.to_string()))
    }

    async fn get_prompt(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        let name = required_str(params, "name")?;
        let arguments = optional_object(params, "arguments")?;
        let active = self.registry.active();
        let owner = active
            .prompt_owner(name)
            .ok_or_else(|| invalid_params(format!("Prompt {name} not found")))?;
        let outcome = owner.get_prompt(name, arguments, ctx).await?;
        outcome_json(outcome, ctx)
    }

    async fn read_resource(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        let uri = required_str(params, "uri")?;
        let active = self.registry.active();
        for ts in &active.toolsets {
            if let Some(outcome) = ts.read_resource(uri, ctx).await? {
                return outcome_json(outcome, ctx);
            }
        }
        Err(ProtocolError::ResourceNotFound(uri.to_owned()))
    }

    fn complete(&self, params: &Map<String, Value>) -> Result<Value, ProtocolError> {
        let reference = params
            .get("ref")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid_params("ref is required".into()))?;
        let reference = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => CompletionRef::Prompt {
                name: required_str(reference, "name")?.to_owned(),
            },
            Some("ref/resource") => CompletionRef::Resource {
                uri: required_str(reference, "uri")?.to_owned(),
            },
            _ => {
                return Err(invalid_params(
                    "ref.type must be ref/prompt or ref/resource".into(),
                ))
            }
        };
        let argument = params
            .get("argument")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid_params("argument is required".into()))?;
        let arg_name = required_str(argument, "name")?;
        let arg_value = argument.get("value").and_then(Value::as_str).unwrap_or("");
        let context = params
            .get("context")
            .and_then(|c| c.get("arguments"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let active = self.registry.active();
        let values = active
            .toolsets
            .iter()
            .find_map(|t| t.complete(&reference, arg_name, arg_value, &context))
            .ok_or_else(|| {
                invalid_params(match &reference {
                    CompletionRef::Prompt { name } => format!("Prompt {name} not found"),
                    CompletionRef::Resource { uri } => {
                        format!("Resource template {uri} not found")
                    }
                })
            })?;
        let total = values.len();
        let values: Vec<_> = values.into_iter().take(MAX_COMPLETIONS).collect();
        Ok(json!({
            "completion": { "values": values, "total": total, "hasMore": total > MAX_COMPLETIONS }
        }))
    }

    async fn set_level(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        let level = required_str(params, "level")?;
        let level = LogLevel::parse(level)
            .ok_or_else(|| invalid_params(format!("Unknown log level {level:?}")))?;
        self.change_session(ctx, SessionChange::SetLogLevel(level))
            .await
    }

    async fn subscribe(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
        on: bool,
    ) -> Result<Value, ProtocolError> {
        let uri = required_str(params, "uri")?.to_owned();
        super::limits::check_uri(&uri).map_err(invalid_params)?;
        if on {
            let active = self.registry.active();
            if !active.toolsets.iter().any(|t| t.can_subscribe(&uri)) {
                return Err(ProtocolError::ResourceNotFound(uri));
            }
            self.change_session(ctx, SessionChange::Subscribe(uri))
                .await
        } else {
            self.change_session(ctx, SessionChange::Unsubscribe(uri))
                .await
        }
    }

    async fn change_session(
        &self,
        ctx: &RequestContext,
        change: SessionChange,
    ) -> Result<Value, ProtocolError> {
        let id = ctx
            .session_id
            .as_deref()
            .ok_or_else(|| ProtocolError::Internal("no session".into()))?;
        if self.store.update(id, change).await? {
            Ok(json!({}))
        } else {
            Err(ProtocolError::SessionGone)
        }
    }
}

fn outcome_json<T: serde::Serialize>(
    outcome: Outcome<T>,
    ctx: &RequestContext,
) -> Result<Value, ProtocolError> {
    match outcome {
        Outcome::Complete(r) => to_json(&r),
        Outcome::Task(_) => Err(ProtocolError::Internal(
            "only tool calls can run as tasks".into(),
        )),
        Outcome::InputRequired { .. } if ctx.era == Era::Legacy => Err(ProtocolError::Internal(
            "input_required results are only valid in the modern era".into(),
        )),
        Outcome::InputRequired {
            input_requests,
            request_state,
        } => {
            let mut r = json!({ "resultType": "input_required" });
            if let Some(i) = input_requests {
                r["inputRequests"] = Value::Object(i);
            }
            if let Some(s) = request_state {
                r["requestState"] = Value::String(s);
            }
            Ok(r)
        }
    }
}

/// The JSON text of a result.
pub(super) fn raw<T: serde::Serialize>(v: &T) -> Result<String, ProtocolError> {
    serde_json::to_string(v).map_err(|e| ProtocolError::Internal(e.to_string()))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ProtocolError> {
    serde_json::to_value(v).map_err(|e| ProtocolError::Internal(e.to_string()))
}

pub(super) fn invalid_params(message: String) -> ProtocolError {
    ProtocolError::InvalidParams {
        message,
        data: None,
    }
}

fn reject_cursor(params: &Map<String, Value>) -> Result<(), ProtocolError> {
    match params.get("cursor") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(invalid_params(
            "Invalid cursor: this server returns complete lists".into(),
        )),
    }
}

/// A required string parameter.
pub fn required_str<'a>(
    params: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, ProtocolError> {
    params
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params(format!("{key} is required and must be a string")))
}

/// Like [`optional_object`], but moves the object out of `params` instead of copying it.
fn take_object(
    params: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, ProtocolError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(_)) => match params.remove(key) {
            Some(Value::Object(m)) => Ok(m),
            _ => Ok(Map::new()),
        },
        Some(_) => Err(invalid_params(format!("{key} must be an object"))),
    }
}

fn optional_object(
    params: &Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, ProtocolError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(invalid_params(format!("{key} must be an object"))),
    }
}

/// The span of one MCP operation, named `{mcp.method.name} {target}` with the attributes of
/// the OTel MCP semantic conventions; `None` (no cost) while traces are off or unsampled.
/// `registered` gives a called tool's interned name if it exists: its span name and
/// `gen_ai.tool.name` are then static text rather than copies made per call.
fn operation_span(
    method: &str,
    params: &Map<String, Value>,
    ctx: &RequestContext,
    registered: impl FnOnce(&str) -> Option<&'static str>,
) -> Option<LiveSpan> {
    let client = crate::telemetry::context::operation_placement(params)?;
    let text = |key: &str| params.get(key).and_then(Value::as_str);
    let (target, tool, uri, prompt) = match method {
        "tools/call" => (text("name"), text("name"), None, None),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            (text("uri"), None, text("uri"), None)
        }
        "prompts/get" => (text("name"), None, None, text("name")),
        _ => (None, None, None, None),
    };
    let method_name = crate::telemetry::metrics::method_label(method);
    let known_tool = tool.and_then(registered).filter(|_| method_name == method);
    let name: std::borrow::Cow<'static, str> = match (known_tool, target) {
        (Some(t), _) => crate::telemetry::metrics::tool_span_name(method_name, t).into(),
        (None, Some(t)) => format!("{method} {t}").into(),
        (None, None) if method_name == method => method_name.into(),
        (None, None) => method.to_owned().into(),
    };
    // Known names and versions as static text: no allocation for them per request.
    let static_or_owned = |text: &str, known: &'static str| -> opentelemetry::Value {
        if known == text {
            known.into()
        } else {
            text.to_owned().into()
        }
    };
    let version = ALL_VERSIONS
        .iter()
        .find(|v| **v == ctx.protocol_version)
        .copied()
        .unwrap_or("");
    let mut attributes = Vec::with_capacity(8);
    attributes.push(KeyValue::new(
        "mcp.method.name",
        static_or_owned(method, method_name),
    ));
    attributes.push(KeyValue::new(
        "mcp.protocol.version",
        static_or_owned(&ctx.protocol_version, version),
    ));
    if let Some(id) = &ctx.request_id {
        attributes.push(KeyValue::new("jsonrpc.request.id", id.clone()));
    }
    if let Some(t) = tool {
        attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        attributes.push(KeyValue::new(
            "gen_ai.tool.name",
            static_or_owned(t, known_tool.unwrap_or("")),
        ));
    }
    let optional = [
        ("mcp.session.id", ctx.session_id.as_deref()),
        ("gen_ai.prompt.name", prompt),
        ("mcp.resource.uri", uri),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            attributes.push(KeyValue::new(key, v.to_owned()));
        }
    }
    Some(crate::telemetry::context::start_operation(
        name,
        attributes,
        client,
        ctx.trace.as_deref(),
    ))
}
