//! The fixture tools that do not revolve around MRTR state: fixed contents, notifications,
//! client requests (sampling, elicitation) and the `server-stateless` diagnostics.

use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{json, Value};

use super::catalog::*;
use super::input::{elicited, gather, open_state, sampled_text, Ask, Gathered};
use super::mrtr;
use crate::protocol::toolset::{
    DomainError, JsonObject, ListKind, LogLevel, Outcome, RequestContext,
};

/// What every fixture tool returns.
pub type ToolOutcome = Result<Outcome<CallToolResult>, DomainError>;

/// A successful result with one text block.
pub fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// A complete outcome with one text block.
pub fn done(reply: impl Into<String>) -> ToolOutcome {
    Ok(Outcome::Complete(text(reply)))
}

/// Waits `ms` milliseconds unless the request is cancelled first, so that a cancelled or
/// disconnected request stops sending notifications.
pub async fn pause(ctx: &RequestContext, ms: u64) -> Result<(), DomainError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(DomainError::Cancelled),
    }
}

/// Runs the fixture tool `name`; unknown names are invalid params (the registry only routes
/// names this toolset listed, so this is a safety net).
pub async fn call(name: &str, args: &JsonObject, ctx: &RequestContext) -> ToolOutcome {
    match name {
        SIMPLE_TEXT => done(SIMPLE_TEXT_REPLY),
        IMAGE_CONTENT => complete(vec![ContentBlock::image(PNG_BASE64, "image/png")]),
        AUDIO_CONTENT => complete(vec![ContentBlock::audio(WAV_BASE64, "audio/wav")]),
        EMBEDDED_RESOURCE => complete(vec![embedded_text(
            EMBEDDED_RESOURCE_URI,
            "text/plain",
            EMBEDDED_RESOURCE_TEXT,
        )]),
        MULTIPLE_CONTENT => complete(mixed_content()),
        ERROR_HANDLING => Ok(Outcome::Complete(CallToolResult::error(vec![
            ContentBlock::text(ERROR_TEXT),
        ]))),
        TOOL_WITH_LOGGING => with_logging(ctx).await,
        TOOL_WITH_PROGRESS => with_progress(ctx).await,
        SAMPLING => sampling(name, string_arg(args, "prompt")?, ctx).await,
        ELICITATION => elicitation(name, string_arg(args, "message")?, ctx).await,
        ELICITATION_DEFAULTS => elicit_form(name, defaults_form(), ctx).await,
        ELICITATION_ENUMS => elicit_form(name, enums_form(), ctx).await,
        JSON_SCHEMA_2020_12 => done(format!(
            "JSON Schema 2020-12 tool called with: {}",
            Value::Object(args.clone())
        )),
        RECONNECTION => reconnection(ctx).await,
        CUSTOM_HEADER => done(format!("Region: {}", string_arg(args, "region")?)),
        _ if super::tasks::owns(name) => super::tasks::call(name, args, ctx),
        _ => diagnostics(name, ctx).await,
    }
}

/// The `server-stateless` diagnostics, then the MRTR fixtures.
async fn diagnostics(name: &str, ctx: &RequestContext) -> ToolOutcome {
    match name {
        MISSING_CAPABILITY => sampling(name, "Reply with one word.", ctx).await,
        STREAMING_ELICITATION => streaming_elicitation(ctx).await,
        LOGGING_TOOL => logging_tool(ctx).await,
        TRIGGER_TOOL_CHANGE => announce(ctx, ListKind::Tools, "Tools list change announced").await,
        TRIGGER_PROMPT_CHANGE => {
            announce(ctx, ListKind::Prompts, "Prompts list change announced").await
        }
        TRIGGER_RESOURCE_UPDATE => {
            ctx.resource_updated(WATCHED_URI).await;
            done(format!("Update of {WATCHED_URI} announced"))
        }
        _ => mrtr::call(name, ctx).await,
    }
}

/// A complete outcome with the given blocks.
fn complete(blocks: Vec<ContentBlock>) -> ToolOutcome {
    Ok(Outcome::Complete(CallToolResult::success(blocks)))
}

/// An embedded text resource block.
pub fn embedded_text(uri: &str, mime_type: &str, body: &str) -> ContentBlock {
    ContentBlock::resource(ResourceContents::text(body, uri).with_mime_type(mime_type))
}

/// The three blocks of `test_multiple_content_types`.
fn mixed_content() -> Vec<ContentBlock> {
    vec![
        ContentBlock::text(MIXED_CONTENT_INTRO),
        ContentBlock::image(PNG_BASE64, "image/png"),
        embedded_text(MIXED_CONTENT_URI, "application/json", MIXED_CONTENT_JSON),
    ]
}

/// A required string argument; anything else is an argument error (a tool error from
/// 2025-11-25 on, SEP-1303).
fn string_arg<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, DomainError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| DomainError::InvalidArguments(format!("'{name}' must be a string")))
}

/// Three info logs ~50 ms apart: the delays show that notifications stream before the result.
async fn with_logging(ctx: &RequestContext) -> ToolOutcome {
    for (i, message) in LOG_MESSAGES.iter().enumerate() {
        if i > 0 {
            pause(ctx, 50).await?;
        }
        ctx.log(LogLevel::Info, Some(LOGGER), json!(message)).await;
    }
    done("Tool with logging executed successfully")
}

/// Progress 0, 50 and 100 of 100, ~50 ms apart (sent only if the client gave a token).
async fn with_progress(ctx: &RequestContext) -> ToolOutcome {
    for (i, step) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            pause(ctx, 50).await?;
        }
        let message = format!("Completed step {step} of 100");
        ctx.progress(step, Some(100.0), Some(message)).await;
    }
    done("Tool with progress executed successfully")
}

/// Closes the POST stream's connection at once, then lasts long enough for the client to
/// resume it with `Last-Event-ID` before the result is produced (SEP-1699).
async fn reconnection(ctx: &RequestContext) -> ToolOutcome {
    ctx.close_stream().await;
    pause(ctx, 500).await?;
    done("Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.")
}

/// Asks for everything in `asks` and, once answered, builds the result with `finish`. Any
/// echoed `requestState` must verify even though these fixtures never issue one.
async fn ask_then(
    fixture: &str,
    ctx: &RequestContext,
    asks: &[Ask],
    finish: impl FnOnce(&JsonObject) -> Result<String, DomainError>,
) -> ToolOutcome {
    open_state(ctx, fixture).await?;
    match gather(ctx, asks, None).await? {
        Gathered::Answers(answers) => Ok(Outcome::Complete(text(finish(&answers)?))),
        Gathered::Pending {
            input_requests,
            request_state,
        } => Ok(Gathered::pending(input_requests, request_state)),
    }
}

/// `test_sampling` and `test_missing_capability`: one sampling request, `maxTokens` 100.
async fn sampling(fixture: &str, prompt: &str, ctx: &RequestContext) -> ToolOutcome {
    let asks = [Ask::sample("llm_reply", prompt, 100)];
    ask_then(fixture, ctx, &asks, |answers| {
        Ok(format!(
            "LLM response: {}",
            sampled_text(answers, "llm_reply")?
        ))
    })
    .await
}

/// `test_elicitation`: a username/email form with the caller's message.
async fn elicitation(fixture: &str, message: &str, ctx: &RequestContext) -> ToolOutcome {
    let schema = json!({
        "type": "object",
        "properties": {
            "username": { "type": "string", "description": "User's response" },
            "email": { "type": "string", "description": "User's email address" }
        },
        "required": ["username", "email"]
    });
    let asks = [Ask::elicit("user_input", message, schema)];
    ask_then(fixture, ctx, &asks, |answers| {
        let answer = elicited(answers, "user_input")?;
        Ok(format!(
            "User response: action={}, content={}",
            answer.action,
            answer.content_json()
        ))
    })
    .await
}

/// A form elicitation whose result is reported as `Elicitation completed: ...`.
async fn elicit_form(fixture: &str, form: (&str, Value), ctx: &RequestContext) -> ToolOutcome {
    let asks = [Ask::elicit("form", form.0, form.1)];
    ask_then(fixture, ctx, &asks, |answers| {
        let answer = elicited(answers, "form")?;
        Ok(format!(
            "Elicitation completed: action={}, content={}",
            answer.action,
            answer.content_json()
        ))
    })
    .await
}

/// SEP-1034: a default for every primitive type.
fn defaults_form() -> (&'static str, Value) {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": { "type": "boolean", "description": "Verification status", "default": true }
        },
        "required": []
    });
    ("Please review the fields; each has a default", schema)
}

/// SEP-1330: untitled, titled (`oneOf`), legacy (`enumNames`), untitled multi and titled multi
/// (`anyOf`) enums.
fn enums_form() -> (&'static str, Value) {
    let titled = |prefix: &str, noun: &str| {
        json!([
            { "const": format!("{prefix}1"), "title": format!("First {noun}") },
            { "const": format!("{prefix}2"), "title": format!("Second {noun}") },
            { "const": format!("{prefix}3"), "title": format!("Third {noun}") }
        ])
    };
    let options = json!(["option1", "option2", "option3"]);
    let schema = json!({
        "type": "object",
        "properties": {
            "untitledSingle": { "type": "string", "description": "Pick one", "enum": options },
            "titledSingle": { "type": "string", "description": "Pick one (titled)", "oneOf": titled("value", "Option") },
            "legacyEnum": {
                "type": "string",
                "description": "Pick one (legacy titles)",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "description": "Pick several",
                "minItems": 1,
                "maxItems": 3,
                "items": { "type": "string", "enum": options }
            },
            "titledMulti": {
                "type": "array",
                "description": "Pick several (titled)",
                "minItems": 1,
                "maxItems": 3,
                "items": { "anyOf": titled("value", "Choice") }
            }
        },
        "required": []
    });
    ("Please select options from the enum fields", schema)
}

/// Elicits a confirmation without ever writing a request on the response stream in the modern
/// era (the ask travels inside an `InputRequiredResult`).
async fn streaming_elicitation(ctx: &RequestContext) -> ToolOutcome {
    let schema = json!({
        "type": "object",
        "properties": { "confirmed": { "type": "boolean", "description": "Continue?" } },
        "required": ["confirmed"]
    });
    let asks = [Ask::elicit(
        "confirmation",
        "Please confirm to continue",
        schema,
    )];
    ask_then(STREAMING_ELICITATION, ctx, &asks, |answers| {
        let answer = elicited(answers, "confirmation")?;
        Ok(format!(
            "Streaming elicitation completed: action={}",
            answer.action
        ))
    })
    .await
}

/// Logs one message; the context drops it unless the request asked for a log level.
async fn logging_tool(ctx: &RequestContext) -> ToolOutcome {
    ctx.log(
        LogLevel::Info,
        Some(LOGGER),
        json!("test_logging_tool executed"),
    )
    .await;
    done("Logging tool executed")
}

/// Announces a list change without changing the list, so `tools/list` stays deterministic.
async fn announce(ctx: &RequestContext, kind: ListKind, reply: &str) -> ToolOutcome {
    ctx.list_changed(kind).await;
    done(reply)
}
