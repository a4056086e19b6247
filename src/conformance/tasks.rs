//! The fixtures of the suite's `tasks-*` scenarios (the MCP Tasks extension): tools that run as
//! tasks when the client declared them, with the behaviour each scenario checks (a slow job, a
//! tool error, a protocol error, one and two input requests, MRTR before the task).

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{json, Value};

use super::tools::{done, pause, text, ToolOutcome};
use crate::protocol::toolset::{DomainError, JsonObject, Outcome, RequestContext, TaskSupport};

pub const GREET: &str = "greet";
pub const SLOW_COMPUTE: &str = "slow_compute";
pub const FAILING_JOB: &str = "failing_job";
pub const PROTOCOL_ERROR_JOB: &str = "protocol_error_job";
pub const CONFIRM_DELETE: &str = "confirm_delete";
pub const MULTI_INPUT: &str = "multi_input";
pub const TOOL_WITH_TASK: &str = "test_tool_with_task";

/// The longest `slow_compute` may sleep.
const MAX_SECONDS: f64 = 3600.0;

/// Whether `name` is one of these fixtures.
pub fn owns(name: &str) -> bool {
    [
        GREET,
        SLOW_COMPUTE,
        FAILING_JOB,
        PROTOCOL_ERROR_JOB,
        CONFIRM_DELETE,
        MULTI_INPUT,
        TOOL_WITH_TASK,
    ]
    .contains(&name)
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("schemas are objects")
    };
    Tool::new(name, description, Arc::new(schema))
}

fn empty() -> Value {
    json!({ "type": "object", "properties": {} })
}

/// The tasks fixtures, in a fixed order.
pub fn tools() -> Vec<Tool> {
    vec![
        tool(
            GREET,
            "Greets by name; never a task",
            json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        ),
        tool(
            SLOW_COMPUTE,
            "Sleeps for `seconds` then answers; a task when the client declared tasks, cancellable",
            json!({"type": "object", "properties": {"seconds": {"type": "number"}, "label": {"type": "string"}}}),
        ),
        tool(
            FAILING_JOB,
            "A task (required) that completes with a tool error after about a second",
            empty(),
        ),
        tool(
            PROTOCOL_ERROR_JOB,
            "A task that fails with a JSON-RPC error",
            empty(),
        ),
        tool(
            CONFIRM_DELETE,
            "A task (required) that asks the client to confirm through tasks/update",
            json!({"type": "object", "properties": {"filename": {"type": "string"}}}),
        ),
        tool(
            MULTI_INPUT,
            "A task (required) that asks two questions at once",
            empty(),
        ),
        tool(
            TOOL_WITH_TASK,
            "Asks for a name by MRTR, then runs a task (required) that greets it",
            empty(),
        ),
    ]
}

/// Runs one of these fixtures.
pub fn call(name: &str, args: &JsonObject, ctx: &RequestContext) -> ToolOutcome {
    match name {
        GREET => {
            let who = args
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| DomainError::InvalidArguments("'name' must be a string".into()))?;
            done(format!("Hello, {who}!"))
        }
        SLOW_COMPUTE => slow_compute(args),
        FAILING_JOB => Ok(Outcome::task(TaskSupport::Required, |ctx| async move {
            pause(&ctx, 1000).await?;
            Ok(CallToolResult::error(vec![ContentBlock::text(
                "failing_job: the job failed (an intentional tool error)",
            )]))
        })),
        PROTOCOL_ERROR_JOB => Ok(Outcome::task(TaskSupport::Optional, |ctx| async move {
            pause(&ctx, 300).await?;
            Err(DomainError::Internal(
                "protocol_error_job: intentional protocol-level failure".into(),
            ))
        })),
        CONFIRM_DELETE => {
            let file = args
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_owned();
            Ok(Outcome::task(TaskSupport::Required, move |ctx| {
                confirm_delete(ctx, file)
            }))
        }
        MULTI_INPUT => Ok(Outcome::task(TaskSupport::Required, multi_input)),
        _ => tool_with_task(ctx),
    }
}

fn slow_compute(args: &JsonObject) -> ToolOutcome {
    let seconds = match args.get("seconds") {
        None | Some(Value::Null) => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|s| (0.0..=MAX_SECONDS).contains(s))
            .ok_or_else(|| {
                DomainError::InvalidArguments(format!(
                    "'seconds' must be a number from 0 to {MAX_SECONDS}"
                ))
            })?,
    };
    let label = args
        .get("label")
        .and_then(Value::as_str)
        .unwrap_or("unlabelled")
        .to_owned();
    let reply = format!("slow_compute({label}) done after {seconds}s");
    if seconds == 0.0 {
        // Nothing to wait for: the answer is immediate, task or not.
        return done(reply);
    }
    Ok(Outcome::task(
        TaskSupport::Optional,
        move |ctx| async move {
            pause(&ctx, (seconds * 1000.0) as u64).await?;
            Ok(text(reply))
        },
    ))
}

/// One form elicitation request object.
fn elicit(message: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": { "type": "object", "properties": properties, "required": required },
        }
    })
}

async fn confirm_delete(ctx: RequestContext, file: String) -> Result<CallToolResult, DomainError> {
    let mut ask = JsonObject::new();
    ask.insert(
        "confirm".into(),
        elicit(
            &format!("Delete {file}?"),
            json!({"confirm": {"type": "boolean"}}),
            &["confirm"],
        ),
    );
    let answers = ctx.ask(ask).await?;
    let answer = answers.get("confirm").cloned().unwrap_or(Value::Null);
    let confirmed = answer
        .get("content")
        .and_then(|c| c.get("confirm"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(text(format!(
        "confirm_delete({file}): confirmed = {confirmed}"
    )))
}

async fn multi_input(ctx: RequestContext) -> Result<CallToolResult, DomainError> {
    let mut ask = JsonObject::new();
    for key in ["input-a", "input-b"] {
        ask.insert(
            key.into(),
            elicit(
                &format!("Answer {key}"),
                json!({"name": {"type": "string"}, "confirm": {"type": "boolean"}}),
                &["name"],
            ),
        );
    }
    let answers = ctx.ask(ask).await?;
    Ok(text(format!(
        "multi_input: received {} answers: {}",
        answers.len(),
        Value::Object(answers)
    )))
}

/// Round 1 (no answer yet): an MRTR `input_required` asking for a name; round 2: the task.
fn tool_with_task(ctx: &RequestContext) -> ToolOutcome {
    let name = ctx
        .input_responses
        .as_ref()
        .and_then(|r| r.get("user_name"))
        .and_then(|a| a.get("content"))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(name) = name else {
        let mut requests = JsonObject::new();
        requests.insert(
            "user_name".into(),
            elicit(
                "What is your name?",
                json!({"name": {"type": "string"}}),
                &["name"],
            ),
        );
        return Ok(Outcome::InputRequired {
            input_requests: Some(requests),
            request_state: None,
        });
    };
    Ok(Outcome::task(
        TaskSupport::Required,
        move |ctx| async move {
            pause(&ctx, 200).await?;
            Ok(text(format!("Hello, {name}! (async)")))
        },
    ))
}
