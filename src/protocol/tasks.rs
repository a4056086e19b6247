//! The Tasks extension's methods, for both eras, over [`crate::tasks`]: a task-augmented
//! `tools/call`, and `tasks/get`, `tasks/update`, `tasks/cancel` (2026-07-28), or `tasks/get`,
//! `tasks/result`, `tasks/list`, `tasks/cancel` (2025-11-25's experimental tasks).
//!
//! A task is answered by whichever node gets the request: everything below reads and writes
//! the record in the store; only the work itself runs where the task was created.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::dispatch::{invalid_params, required_str, Dispatcher};
use super::error::ProtocolError;
use super::toolset::{
    DomainError, Era, Outcome, RequestContext, TaskSupport, TaskWork, ToolResult,
};
use crate::session::tasks::{TaskRecord, TaskStatus, Transition};
use crate::tasks::{wire, Tasks, MAX_INPUT_BYTES};

/// What a tool that may run as a task turned into.
pub enum Started {
    /// A task was created: the `CreateTaskResult` (modern) or `{task}` (legacy) result.
    Task(Value),
    /// It ran inline (or was refused) like any tool call.
    Inline(Result<Outcome<ToolResult>, DomainError>),
}

/// How often the legacy `tasks/result` re-reads a task it waits for.
const RESULT_POLL: Duration = Duration::from_millis(200);
/// The shortest TTL a legacy client may ask for.
const MIN_TTL: Duration = Duration::from_secs(1);

/// The -32021 a client gets for tasks it did not declare.
fn tasks_not_declared() -> DomainError {
    DomainError::MissingCapability(super::toolset::tasks_required())
}

/// What a client gets for a task it cannot see: never there, expired, or someone else's.
fn not_found(id: &str) -> ProtocolError {
    invalid_params(format!("Failed to retrieve task: Task not found ({id})"))
}

impl Dispatcher {
    /// Runs a task-capable tool: as a task for a client that asked (modern: declared the
    /// extension on this request; legacy: sent `params.task`), else inline or refused.
    pub(super) async fn task_or_inline(
        &self,
        name: &str,
        params: &Map<String, Value>,
        work: TaskWork<ToolResult>,
        ctx: &RequestContext,
    ) -> Result<Started, ProtocolError> {
        let longest = Duration::from_millis(self.tasks.settings().ttl_ms);
        let ttl = match ctx.era {
            Era::Modern if ctx.declares_tasks() => Some(longest),
            Era::Legacy if super::version::has_legacy_tasks(&ctx.protocol_version) => {
                legacy_ttl(params, longest)?
            }
            Era::Legacy => None,
            Era::Modern => None,
        };
        let Some(ttl) = ttl else {
            return Ok(Started::Inline(match (work.support, ctx.era) {
                (TaskSupport::Optional, _) => (work.run)(ctx.clone()).await.map(Outcome::Complete),
                (TaskSupport::Required, Era::Modern) => Err(tasks_not_declared()),
                (TaskSupport::Required, Era::Legacy) => Err(DomainError::InvalidParams {
                    message: format!(
                        "Tool {name} runs only as a task: call it with params.task (tasks need protocol version 2025-11-25)"
                    ),
                    data: None,
                }),
            }));
        };
        let task = self
            .tasks
            .start(ctx, name, ttl.as_millis() as u64, work.run)
            .await?;
        Ok(Started::Task(match ctx.era {
            Era::Modern => wire::created(&task),
            Era::Legacy => json!({ "task": wire::legacy(&task) }),
        }))
    }

    /// `tasks/get`, `tasks/update`, `tasks/cancel` (2026-07-28).
    pub(super) async fn task_method(
        &self,
        method: &str,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        // Before anything else, even an unknown task id (the extension says MUST).
        if !ctx.declares_tasks() {
            return Err(tasks_not_declared().into());
        }
        let task = self.find_task(params, ctx).await?;
        match method {
            "tasks/get" => Ok(wire::detailed(&task)),
            "tasks/update" => {
                let answers = input_responses(params)?;
                match self.tasks.answer(&task, answers).await? {
                    Transition::Applied(_) => Ok(json!({})),
                    Transition::Missing => Err(not_found(&task.id)),
                    Transition::Refused(status) => Err(not_waiting(&task.id, status)),
                }
            }
            _ => match self.tasks.cancel(&task).await? {
                // Cancelling a finished task is acknowledged too: the next `tasks/get` tells.
                Transition::Applied(_) | Transition::Refused(_) => Ok(json!({})),
                Transition::Missing => Err(not_found(&task.id)),
            },
        }
    }

    /// `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel` (2025-11-25 experimental).
    pub(super) async fn legacy_task_method(
        &self,
        method: &str,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        match method {
            "tasks/list" => self.list_tasks(params, ctx).await,
            "tasks/get" => Ok(wire::legacy(&self.find_task(params, ctx).await?)),
            "tasks/result" => self.task_result(params, ctx).await,
            _ => {
                let task = self.find_task(params, ctx).await?;
                match self.tasks.cancel(&task).await? {
                    Transition::Applied(_) => {}
                    Transition::Missing => return Err(not_found(&task.id)),
                    Transition::Refused(status) => {
                        return Err(invalid_params(format!(
                            "Cannot cancel task {}: it is already {}",
                            task.id,
                            status.as_str()
                        )))
                    }
                }
                let task = self
                    .tasks
                    .store()
                    .get_task(&task.id)
                    .await?
                    .ok_or_else(|| not_found(&task.id))?;
                Ok(wire::legacy(&task))
            }
        }
    }

    /// The caller's task named by `params.taskId`.
    async fn find_task(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<TaskRecord, ProtocolError> {
        let id = required_str(params, "taskId")?;
        match self.tasks.store().get_task(id).await? {
            Some(task) if task.owner == Tasks::owner(ctx) => Ok(task),
            _ => Err(not_found(id)),
        }
    }

    /// Legacy `tasks/result`: waits for the task to end, then answers what the `tools/call`
    /// would have (its result, or its error), marked as the task's.
    async fn task_result(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        let mut task = self.find_task(params, ctx).await?;
        while !task.status.is_terminal() {
            tokio::select! {
                _ = tokio::time::sleep(RESULT_POLL) => {}
                _ = ctx.cancel.cancelled() => return Err(ProtocolError::Cancelled),
            }
            task = self.find_task(params, ctx).await?;
        }
        let related = json!({ "io.modelcontextprotocol/related-task": { "taskId": task.id } });
        match task.status {
            TaskStatus::Completed => {
                let mut result: Value = task
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or_else(|| json!({ "content": [] }));
                result["_meta"] = related;
                Ok(result)
            }
            TaskStatus::Failed => {
                let error: Value = task
                    .error
                    .as_deref()
                    .and_then(|e| serde_json::from_str(e).ok())
                    .unwrap_or(Value::Null);
                Err(ProtocolError::Recorded {
                    code: error.get("code").and_then(Value::as_i64).unwrap_or(-32603),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the task failed")
                        .to_owned(),
                    data: error.get("data").cloned(),
                })
            }
            _ => Err(ProtocolError::Recorded {
                code: -32603,
                message: format!("Task {} was cancelled", task.id),
                data: None,
            }),
        }
    }

    /// Legacy `tasks/list`: the session's tasks that have not expired, in one page.
    async fn list_tasks(
        &self,
        params: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ProtocolError> {
        if params.get("cursor").is_some_and(|c| !c.is_null()) {
            return Err(invalid_params(
                "Invalid cursor: this server returns the whole list".into(),
            ));
        }
        let store = self.tasks.store();
        let mut tasks = Vec::new();
        for id in store.owner_tasks(&Tasks::owner(ctx)).await? {
            if let Some(task) = store.get_task(&id).await? {
                tasks.push(wire::legacy(&task));
            }
        }
        Ok(json!({ "tasks": tasks }))
    }
}

/// The TTL a legacy `tools/call` asks for with `params.task` (at most `longest`), or `None`
/// without it.
fn legacy_ttl(
    params: &Map<String, Value>,
    longest: Duration,
) -> Result<Option<Duration>, ProtocolError> {
    let Some(task) = params.get("task").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let task = task
        .as_object()
        .ok_or_else(|| invalid_params("task must be an object".into()))?;
    let ttl = match task.get("ttl") {
        None | Some(Value::Null) => longest,
        Some(v) => Duration::from_millis(
            v.as_u64()
                .ok_or_else(|| invalid_params("task.ttl must be a whole number of ms".into()))?,
        ),
    };
    Ok(Some(ttl.clamp(MIN_TTL, longest.max(MIN_TTL))))
}

/// `params.inputResponses` as key → JSON text, bounded.
fn input_responses(params: &Map<String, Value>) -> Result<BTreeMap<String, String>, ProtocolError> {
    let responses = match params.get("inputResponses") {
        Some(Value::Object(m)) => m,
        _ => {
            return Err(invalid_params(
                "inputResponses is required and must be an object".into(),
            ))
        }
    };
    let mut out = BTreeMap::new();
    let mut bytes = 0;
    for (k, v) in responses {
        let text = v.to_string();
        bytes += k.len() + text.len();
        if bytes > MAX_INPUT_BYTES {
            return Err(invalid_params(format!(
                "inputResponses is larger than the {MAX_INPUT_BYTES} bytes one tasks/update may carry"
            )));
        }
        out.insert(k.clone(), text);
    }
    Ok(out)
}

fn not_waiting(id: &str, status: TaskStatus) -> ProtocolError {
    invalid_params(format!(
        "Task {id} is not waiting for input (it is {})",
        status.as_str()
    ))
}
