//! The SEP-2322 fixtures (`test_input_required_result_*` and the MRTR prompt).
//!
//! In the modern era they answer with `InputRequiredResult`s and finish on the retry; in the
//! legacy era the same questions go to the client on the request's stream, so every fixture
//! works whichever era the client speaks.

use rmcp::model::{GetPromptResult, PromptMessage, Role};
use serde_json::{json, Value};

use super::catalog::*;
use super::input::{
    elicited, gather, invalid, open_state, root_uris, sampled_text, state_for, Ask, Gathered,
};
use super::tools::{done, ToolOutcome};
use crate::protocol::toolset::{DomainError, Era, JsonObject, Outcome, RequestContext};

/// A one-field string form.
fn string_form(field: &str) -> Value {
    json!({
        "type": "object",
        "properties": { field: { "type": "string" } },
        "required": [field]
    })
}

/// The `ok` confirmation form of the request-state fixtures.
fn confirm_form() -> Value {
    json!({
        "type": "object",
        "properties": { "ok": { "type": "boolean" } },
        "required": ["ok"]
    })
}

/// Runs the MRTR fixture tool `name`.
pub async fn call(name: &str, ctx: &RequestContext) -> ToolOutcome {
    match name {
        IRR_ELICITATION => {
            let asks = [Ask::elicit(
                "user_name",
                "What is your name?",
                string_form("name"),
            )];
            ask(name, ctx, &asks, None, |a| {
                let name = elicited(a, "user_name")?;
                Ok(format!(
                    "Hello, {}!",
                    name.field("name").unwrap_or("stranger")
                ))
            })
            .await
        }
        IRR_SAMPLING => {
            let asks = [Ask::sample(
                "capital_question",
                "What is the capital of France?",
                100,
            )];
            ask(name, ctx, &asks, None, |a| {
                Ok(format!(
                    "The model answered: {}",
                    sampled_text(a, "capital_question")?
                ))
            })
            .await
        }
        IRR_LIST_ROOTS => {
            let asks = [Ask::roots("client_roots")];
            ask(name, ctx, &asks, None, |a| {
                Ok(format!(
                    "Client roots: [{}]",
                    root_uris(a, "client_roots")?.join(", ")
                ))
            })
            .await
        }
        IRR_REQUEST_STATE | IRR_TAMPERED_STATE => with_state(name, ctx).await,
        IRR_MULTIPLE_INPUTS => multiple_inputs(ctx).await,
        IRR_MULTI_ROUND => multi_round(ctx).await,
        IRR_CAPABILITIES => capabilities(ctx).await,
        _ => Err(invalid(&format!("Unknown tool: {name}"))),
    }
}

/// Verifies any echoed state, asks, and finishes with a text built from the answers.
async fn ask(
    fixture: &str,
    ctx: &RequestContext,
    asks: &[Ask],
    state: Option<&Value>,
    finish: impl FnOnce(&JsonObject) -> Result<String, DomainError>,
) -> ToolOutcome {
    open_state(ctx, fixture).await?;
    match gather(ctx, asks, state).await? {
        Gathered::Answers(answers) => done(finish(&answers)?),
        Gathered::Pending {
            input_requests,
            request_state,
        } => Ok(Gathered::pending(input_requests, request_state)),
    }
}

/// A pending outcome asking `asks` afresh (capabilities already checked by the caller).
fn re_ask<T>(ctx: &RequestContext, asks: &[Ask], state: &Value) -> Result<Outcome<T>, DomainError> {
    let requests = asks
        .iter()
        .map(|a| {
            (
                a.key.to_owned(),
                json!({ "method": a.method, "params": a.params }),
            )
        })
        .collect();
    Ok(Gathered::pending(
        requests,
        Some(ctx.seal_request_state(state)?),
    ))
}

/// `_request_state` and `_tampered_state`: the answer counts only together with a verified
/// `requestState`; a retry without one is asked again, a tampered one is an error.
async fn with_state(fixture: &str, ctx: &RequestContext) -> ToolOutcome {
    let state = open_state(ctx, fixture).await?;
    let asks = [Ask::elicit("confirm", "Please confirm", confirm_form())];
    let issued = state_for(fixture, json!({ "round": 1 }));
    if ctx.era == Era::Modern && state.is_none() {
        if let Some(missing) = super::input::missing_capabilities(ctx, &asks) {
            return Err(DomainError::MissingCapability(missing));
        }
        return re_ask(ctx, &asks, &issued);
    }
    match gather(ctx, &asks, Some(&issued)).await? {
        Gathered::Answers(a) => {
            let ok = elicited(&a, "confirm")?.content.get("ok").cloned();
            done(format!(
                "state-ok: confirmation received (ok={})",
                ok.unwrap_or(Value::Null)
            ))
        }
        Gathered::Pending {
            input_requests,
            request_state,
        } => Ok(Gathered::pending(input_requests, request_state)),
    }
}

/// Elicitation, sampling and roots in one round, with a `requestState` alongside.
async fn multiple_inputs(ctx: &RequestContext) -> ToolOutcome {
    let asks = [
        Ask::elicit("user_name", "What is your name?", string_form("name")),
        Ask::sample("greeting", "Generate a greeting", 50),
        Ask::roots("client_roots"),
    ];
    let state = state_for(IRR_MULTIPLE_INPUTS, json!({ "round": 1 }));
    ask(IRR_MULTIPLE_INPUTS, ctx, &asks, Some(&state), |a| {
        let name = elicited(a, "user_name")?;
        Ok(format!(
            "Hello, {}! Greeting: {}. Roots: {}",
            name.field("name").unwrap_or("stranger"),
            sampled_text(a, "greeting")?,
            root_uris(a, "client_roots")?.len()
        ))
    })
    .await
}

/// Round 1 asks `step1`; its answer goes into a new state with round 2's `step2`; round 3
/// completes. Each round's `requestState` differs because it carries the progress so far.
async fn multi_round(ctx: &RequestContext) -> ToolOutcome {
    let step1 = Ask::elicit("step1", "Step 1: What is your name?", string_form("name"));
    let step2 = Ask::elicit(
        "step2",
        "Step 2: What is your favorite color?",
        string_form("color"),
    );
    let state = open_state(ctx, IRR_MULTI_ROUND).await?;
    let known_name = state
        .as_ref()
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = match known_name {
        Some(name) => name,
        None => {
            let first = state_for(IRR_MULTI_ROUND, json!({ "round": 1 }));
            let answers = match gather(ctx, std::slice::from_ref(&step1), Some(&first)).await? {
                Gathered::Answers(a) => a,
                Gathered::Pending {
                    input_requests,
                    request_state,
                } => return Ok(Gathered::pending(input_requests, request_state)),
            };
            let name = elicited(&answers, "step1")?
                .field("name")
                .unwrap_or("stranger")
                .to_owned();
            if ctx.era == Era::Modern {
                let second = state_for(IRR_MULTI_ROUND, json!({ "round": 2, "name": name }));
                return re_ask(ctx, &[step2], &second);
            }
            name
        }
    };
    let second = state_for(IRR_MULTI_ROUND, json!({ "round": 2, "name": name }));
    match gather(ctx, &[step2], Some(&second)).await? {
        Gathered::Answers(a) => {
            let color = elicited(&a, "step2")?;
            done(format!(
                "Hello, {name}! Your favorite color is {}.",
                color.field("color").unwrap_or("unknown")
            ))
        }
        Gathered::Pending {
            input_requests,
            request_state,
        } => Ok(Gathered::pending(input_requests, request_state)),
    }
}

/// Asks only through the capabilities the client declared for this request; with none of them
/// there is nothing to ask and the tool completes at once.
async fn capabilities(ctx: &RequestContext) -> ToolOutcome {
    let asks: Vec<Ask> = [
        Ask::elicit(
            "preferred_name",
            "What should I call you?",
            string_form("name"),
        ),
        Ask::sample("haiku", "Write a haiku about capabilities", 50),
        Ask::roots("client_roots"),
    ]
    .into_iter()
    .filter(|a| ctx.client_supports(a.capability))
    .collect();
    if asks.is_empty() {
        return done(
            "The client declared no elicitation, sampling or roots capability; nothing to ask.",
        );
    }
    let keys: Vec<&str> = asks.iter().map(|a| a.key).collect();
    ask(IRR_CAPABILITIES, ctx, &asks, None, |_| {
        Ok(format!("Received input for: {}", keys.join(", ")))
    })
    .await
}

/// The `test_input_required_result_prompt` prompt: one elicitation (`user_context`), then a
/// prompt built from the answer. A legacy client without elicitation gets a default context.
pub async fn prompt(ctx: &RequestContext) -> Result<Outcome<GetPromptResult>, DomainError> {
    let asks = [Ask::elicit(
        "user_context",
        "What context should the prompt use?",
        string_form("context"),
    )];
    open_state(ctx, IRR_PROMPT).await?;
    if ctx.era == Era::Legacy && !ctx.client_supports("elicitation") {
        return Ok(Outcome::Complete(context_prompt("(none)")));
    }
    match gather(ctx, &asks, None).await? {
        Gathered::Answers(a) => {
            let answer = elicited(&a, "user_context")?;
            let context = answer.field("context").unwrap_or("(none)").to_owned();
            Ok(Outcome::Complete(context_prompt(&context)))
        }
        Gathered::Pending {
            input_requests,
            request_state,
        } => Ok(Gathered::pending(input_requests, request_state)),
    }
}

/// The finished MRTR prompt.
fn context_prompt(context: &str) -> GetPromptResult {
    GetPromptResult::new(vec![PromptMessage::new_text(
        Role::User,
        format!("Answer using this context: {context}"),
    )])
    .with_description("A prompt built from user-provided context")
}
