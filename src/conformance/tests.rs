//! Unit tests of the fixtures against the recording test double, in both eras.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::catalog::*;
use super::Conformance;
use crate::protocol::testing::{legacy_context, modern_context, Recorder};
use crate::protocol::toolset::{
    CompletionRef, DomainError, JsonObject, ListKind, Outcome, RequestContext, Toolset,
};

type Ctx = (Arc<Recorder>, RequestContext);

fn legacy() -> Ctx {
    let recorder = Arc::new(Recorder::default());
    (recorder.clone(), legacy_context(recorder))
}

fn modern(capabilities: Value) -> Ctx {
    let recorder = Arc::new(Recorder::default());
    let mut ctx = modern_context(recorder.clone());
    ctx.client_capabilities = capabilities;
    (recorder, ctx)
}

fn all_caps() -> Value {
    json!({ "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } })
}

fn object(value: Value) -> JsonObject {
    value.as_object().cloned().unwrap_or_default()
}

/// Sets up the retry of a modern request.
fn retry(ctx: &mut RequestContext, responses: Value, state: Option<&str>) {
    ctx.input_responses = Some(object(responses));
    ctx.request_state = state.map(str::to_owned);
}

async fn call(name: &str, args: Value, ctx: &RequestContext) -> Result<Value, DomainError> {
    let outcome = Conformance::new()
        .call_tool(name, object(args), ctx)
        .await?;
    Ok(outcome_json(outcome))
}

fn outcome_json<T: serde::Serialize>(outcome: Outcome<T>) -> Value {
    match outcome {
        Outcome::Complete(result) => serde_json::to_value(result).unwrap_or(Value::Null),
        Outcome::Task(work) => {
            json!({ "resultType": "task", "support": format!("{:?}", work.support) })
        }
        Outcome::InputRequired {
            input_requests,
            request_state,
        } => json!({
            "resultType": "input_required",
            "inputRequests": input_requests,
            "requestState": request_state
        }),
    }
}

fn first_text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_input_required(result: &Value) -> bool {
    result["resultType"] == "input_required"
}

fn elicit_accept(content: Value) -> Value {
    json!({ "action": "accept", "content": content })
}

fn sampling_reply(text: &str) -> Value {
    json!({ "role": "assistant", "content": { "type": "text", "text": text }, "model": "m", "stopReason": "endTurn" })
}

fn roots_reply() -> Value {
    json!({ "roots": [{ "uri": "file:///test/root", "name": "Test Root" }] })
}

#[test]
fn catalog_lists_every_fixture_with_description_and_object_schema() {
    let tools = Conformance::new().tools();
    assert_eq!(tools[0].name, SIMPLE_TEXT);
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for required in [
        SIMPLE_TEXT,
        IMAGE_CONTENT,
        AUDIO_CONTENT,
        EMBEDDED_RESOURCE,
        MULTIPLE_CONTENT,
        TOOL_WITH_LOGGING,
        ERROR_HANDLING,
        TOOL_WITH_PROGRESS,
        SAMPLING,
        ELICITATION,
        ELICITATION_DEFAULTS,
        ELICITATION_ENUMS,
        JSON_SCHEMA_2020_12,
        RECONNECTION,
        MISSING_CAPABILITY,
        STREAMING_ELICITATION,
        LOGGING_TOOL,
        TRIGGER_TOOL_CHANGE,
        TRIGGER_PROMPT_CHANGE,
        IRR_ELICITATION,
        IRR_SAMPLING,
        IRR_LIST_ROOTS,
        IRR_REQUEST_STATE,
        IRR_MULTIPLE_INPUTS,
        IRR_MULTI_ROUND,
        IRR_TAMPERED_STATE,
        IRR_CAPABILITIES,
    ] {
        assert!(names.contains(&required), "{required} missing");
    }
    for tool in &tools {
        assert!(tool.description.as_deref().is_some_and(|d| !d.is_empty()));
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            tool.name
        );
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), tools.len(), "duplicate tool names");
    assert_eq!(
        Conformance::new().tools(),
        tools,
        "tools/list must be deterministic"
    );
}

#[test]
fn json_schema_2020_12_keywords_survive() {
    let tool = Conformance::new()
        .tools()
        .into_iter()
        .find(|t| t.name == JSON_SCHEMA_2020_12)
        .expect("fixture present");
    let schema = Value::Object((*tool.input_schema).clone());
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["$defs"]["address"]["$anchor"], "addressDef");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["allOf"][0]["anyOf"].is_array());
    for keyword in ["if", "then", "else"] {
        assert!(schema.get(keyword).is_some(), "{keyword}");
    }
}

#[test]
fn a_string_property_carries_x_mcp_header() {
    let annotated = Conformance::new().tools().into_iter().any(|t| {
        t.input_schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|props| {
                props
                    .values()
                    .any(|p| p.get("x-mcp-header").is_some() && p["type"] == "string")
            })
    });
    assert!(annotated);
}

#[test]
fn media_payloads_are_real_png_and_wav() {
    let engine = base64::engine::general_purpose::STANDARD;
    let png = engine.decode(PNG_BASE64).expect("valid base64");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let wav = engine.decode(WAV_BASE64).expect("valid base64");
    assert!(wav.starts_with(b"RIFF") && &wav[8..12] == b"WAVE");
}

#[tokio::test]
async fn content_tools_return_the_suite_texts() -> Result<(), DomainError> {
    let (_, ctx) = modern(json!({}));
    assert_eq!(
        first_text(&call(SIMPLE_TEXT, json!({}), &ctx).await?),
        SIMPLE_TEXT_REPLY
    );
    let image = call(IMAGE_CONTENT, json!({}), &ctx).await?;
    assert_eq!(image["content"][0]["type"], "image");
    assert_eq!(image["content"][0]["mimeType"], "image/png");
    let audio = call(AUDIO_CONTENT, json!({}), &ctx).await?;
    assert_eq!(audio["content"][0]["mimeType"], "audio/wav");
    let embedded = call(EMBEDDED_RESOURCE, json!({}), &ctx).await?;
    assert_eq!(
        embedded["content"][0]["resource"],
        json!({ "uri": EMBEDDED_RESOURCE_URI, "mimeType": "text/plain", "text": EMBEDDED_RESOURCE_TEXT })
    );
    let mixed = call(MULTIPLE_CONTENT, json!({}), &ctx).await?;
    let types: Vec<&str> = mixed["content"]
        .as_array()
        .map(|c| c.iter().filter_map(|b| b["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["text", "image", "resource"]);
    assert_eq!(mixed["content"][2]["resource"]["text"], MIXED_CONTENT_JSON);
    let error = call(ERROR_HANDLING, json!({}), &ctx).await?;
    assert_eq!(error["isError"], true);
    assert_eq!(first_text(&error), ERROR_TEXT);
    Ok(())
}

#[tokio::test]
async fn logging_tool_sends_three_info_logs_only_when_asked() -> Result<(), DomainError> {
    let (recorder, ctx) = legacy();
    call(TOOL_WITH_LOGGING, json!({}), &ctx).await?;
    let logs = recorder.notifications.lock().clone();
    let data: Vec<&Value> = logs
        .iter()
        .filter(|(m, p)| m == "notifications/message" && p["level"] == "info")
        .map(|(_, p)| &p["data"])
        .collect();
    assert_eq!(
        data,
        LOG_MESSAGES
            .iter()
            .map(|m| json!(m))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );

    let (recorder, ctx) = modern(json!({}));
    call(TOOL_WITH_LOGGING, json!({}), &ctx).await?;
    call(LOGGING_TOOL, json!({}), &ctx).await?;
    assert!(
        recorder.notifications.lock().is_empty(),
        "no logLevel, no logs"
    );
    Ok(())
}

#[tokio::test]
async fn progress_goes_0_50_100_of_100_with_a_token() -> Result<(), DomainError> {
    let (recorder, ctx) = legacy();
    call(TOOL_WITH_PROGRESS, json!({}), &ctx).await?;
    let progress: Vec<(Value, Value, Value)> = recorder
        .notifications
        .lock()
        .iter()
        .filter(|(m, _)| m == "notifications/progress")
        .map(|(_, p)| {
            (
                p["progress"].clone(),
                p["total"].clone(),
                p["progressToken"].clone(),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [0.0, 50.0, 100.0]
            .map(|p| (json!(p), json!(100.0), json!("tok-1")))
            .to_vec()
    );
    let (recorder, ctx) = modern(json!({}));
    call(TOOL_WITH_PROGRESS, json!({}), &ctx).await?;
    assert!(
        recorder.notifications.lock().is_empty(),
        "no token, no progress"
    );
    Ok(())
}

#[tokio::test]
async fn legacy_sampling_asks_on_the_stream() -> Result<(), DomainError> {
    let (recorder, ctx) = legacy();
    recorder.answers.lock().push(Ok(sampling_reply("Paris")));
    let result = call(SAMPLING, json!({ "prompt": "Capital?" }), &ctx).await?;
    assert_eq!(first_text(&result), "LLM response: Paris");
    let requests = recorder.requests.lock().clone();
    assert_eq!(requests[0].0, "sampling/createMessage");
    assert_eq!(requests[0].1["maxTokens"], 100);
    assert_eq!(requests[0].1["messages"][0]["content"]["text"], "Capital?");
    Ok(())
}

#[tokio::test]
async fn legacy_elicitation_formats_action_and_content() -> Result<(), DomainError> {
    let (recorder, ctx) = legacy();
    let content = json!({ "username": "testuser", "email": "test@example.com" });
    recorder
        .answers
        .lock()
        .push(Ok(elicit_accept(content.clone())));
    let result = call(ELICITATION, json!({ "message": "Info please" }), &ctx).await?;
    assert_eq!(
        first_text(&result),
        format!("User response: action=accept, content={content}")
    );
    let params = recorder.requests.lock()[0].1.clone();
    assert_eq!(params["message"], "Info please");
    assert_eq!(
        params["requestedSchema"]["required"],
        json!(["username", "email"])
    );
    Ok(())
}

#[tokio::test]
async fn sep1034_and_sep1330_schemas_match_the_suite() -> Result<(), DomainError> {
    let (recorder, ctx) = legacy();
    recorder
        .answers
        .lock()
        .push(Ok(elicit_accept(json!({ "name": "Jane" }))));
    recorder
        .answers
        .lock()
        .push(Ok(json!({ "action": "decline" })));
    let defaults = call(ELICITATION_DEFAULTS, json!({}), &ctx).await?;
    assert!(first_text(&defaults).starts_with("Elicitation completed: action=accept"));
    let enums = call(ELICITATION_ENUMS, json!({}), &ctx).await?;
    assert_eq!(
        first_text(&enums),
        "Elicitation completed: action=decline, content={}"
    );
    let requests = recorder.requests.lock().clone();
    let props = &requests[0].1["requestedSchema"]["properties"];
    assert_eq!(props["name"]["default"], "John Doe");
    assert_eq!(props["age"]["default"], 30);
    assert_eq!(props["score"]["default"], 95.5);
    assert_eq!(props["status"]["default"], "active");
    assert_eq!(props["verified"]["default"], true);
    let props = &requests[1].1["requestedSchema"]["properties"];
    assert!(props["untitledSingle"]["enum"].is_array());
    assert_eq!(
        props["titledSingle"]["oneOf"][0],
        json!({ "const": "value1", "title": "First Option" })
    );
    assert_eq!(
        props["legacyEnum"]["enumNames"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(props["untitledMulti"]["items"]["type"], "string");
    assert!(props["titledMulti"]["items"]["anyOf"][0]["title"].is_string());
    Ok(())
}

#[tokio::test]
async fn client_request_failures_become_tool_errors() -> Result<(), DomainError> {
    let (_, ctx) = legacy(); // the recorder has no scripted answer
    let result = call(SAMPLING, json!({ "prompt": "x" }), &ctx).await?;
    assert_eq!(result["isError"], true);
    Ok(())
}

#[tokio::test]
async fn missing_capability_is_32021_modern_and_a_tool_error_legacy() -> Result<(), DomainError> {
    let (_, ctx) = modern(json!({}));
    match call(MISSING_CAPABILITY, json!({}), &ctx).await {
        Err(DomainError::MissingCapability(caps)) => assert_eq!(caps, json!({ "sampling": {} })),
        other => panic!("expected MissingCapability, got {other:?}"),
    }
    let (recorder, mut ctx) = legacy();
    ctx.client_capabilities = json!({ "elicitation": {} });
    let result = call(MISSING_CAPABILITY, json!({}), &ctx).await?;
    assert_eq!(result["isError"], true);
    assert!(recorder.requests.lock().is_empty());
    Ok(())
}

#[tokio::test]
async fn streaming_elicitation_uses_mrtr_not_the_stream() -> Result<(), DomainError> {
    let (recorder, mut ctx) = modern(json!({ "elicitation": {} }));
    let first = call(STREAMING_ELICITATION, json!({}), &ctx).await?;
    assert!(is_input_required(&first));
    assert!(recorder.requests.lock().is_empty());
    retry(
        &mut ctx,
        json!({ "confirmation": elicit_accept(json!({ "confirmed": true })) }),
        None,
    );
    let done = call(STREAMING_ELICITATION, json!({}), &ctx).await?;
    assert_eq!(
        first_text(&done),
        "Streaming elicitation completed: action=accept"
    );
    Ok(())
}

#[tokio::test]
async fn triggers_announce_changes() -> Result<(), DomainError> {
    let (recorder, ctx) = modern(json!({}));
    call(TRIGGER_TOOL_CHANGE, json!({}), &ctx).await?;
    call(TRIGGER_PROMPT_CHANGE, json!({}), &ctx).await?;
    call(TRIGGER_RESOURCE_UPDATE, json!({}), &ctx).await?;
    assert_eq!(
        *recorder.list_changes.lock(),
        vec![ListKind::Tools, ListKind::Prompts]
    );
    assert_eq!(*recorder.updated.lock(), vec![WATCHED_URI.to_owned()]);
    Ok(())
}

#[tokio::test]
async fn mrtr_elicitation_round_trip() -> Result<(), DomainError> {
    let (_, mut ctx) = modern(all_caps());
    let first = call(IRR_ELICITATION, json!({}), &ctx).await?;
    assert!(is_input_required(&first));
    assert_eq!(
        first["inputRequests"]["user_name"]["method"],
        "elicitation/create"
    );
    assert_eq!(
        first["inputRequests"]["user_name"]["params"]["requestedSchema"]["required"],
        json!(["name"])
    );
    retry(
        &mut ctx,
        json!({ "user_name": elicit_accept(json!({ "name": "Alice" })), "extra": { "action": "accept" } }),
        None,
    );
    assert_eq!(
        first_text(&call(IRR_ELICITATION, json!({}), &ctx).await?),
        "Hello, Alice!"
    );
    Ok(())
}

#[tokio::test]
async fn mrtr_wrong_keys_re_ask_and_malformed_answers_are_invalid() -> Result<(), DomainError> {
    let (_, mut ctx) = modern(all_caps());
    retry(
        &mut ctx,
        json!({ "wrong_key": elicit_accept(json!({ "data": "x" })) }),
        None,
    );
    let again = call(IRR_ELICITATION, json!({}), &ctx).await?;
    assert!(is_input_required(&again));
    assert!(again["inputRequests"].get("user_name").is_some());
    retry(&mut ctx, json!({ "user_name": 12345 }), None);
    assert!(matches!(
        call(IRR_ELICITATION, json!({}), &ctx).await,
        Err(DomainError::InvalidParams { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn mrtr_sampling_and_roots_round_trips() -> Result<(), DomainError> {
    let (_, mut ctx) = modern(all_caps());
    let first = call(IRR_SAMPLING, json!({}), &ctx).await?;
    let request = &first["inputRequests"]["capital_question"];
    assert_eq!(request["method"], "sampling/createMessage");
    assert_eq!(request["params"]["maxTokens"], 100);
    assert_eq!(
        request["params"]["messages"][0]["content"]["text"],
        "What is the capital of France?"
    );
    retry(
        &mut ctx,
        json!({ "capital_question": sampling_reply("Paris") }),
        None,
    );
    assert_eq!(
        first_text(&call(IRR_SAMPLING, json!({}), &ctx).await?),
        "The model answered: Paris"
    );

    let (_, mut ctx) = modern(all_caps());
    let first = call(IRR_LIST_ROOTS, json!({}), &ctx).await?;
    assert_eq!(
        first["inputRequests"]["client_roots"],
        json!({ "method": "roots/list", "params": {} })
    );
    retry(&mut ctx, json!({ "client_roots": roots_reply() }), None);
    let done = call(IRR_LIST_ROOTS, json!({}), &ctx).await?;
    assert!(first_text(&done).contains("file:///test/root"));
    Ok(())
}

#[tokio::test]
async fn mrtr_request_state_is_required_verified_and_tamper_proof() -> Result<(), DomainError> {
    for fixture in [IRR_REQUEST_STATE, IRR_TAMPERED_STATE] {
        let (_, mut ctx) = modern(all_caps());
        let first = call(fixture, json!({}), &ctx).await?;
        let state = first["requestState"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!state.is_empty() && first["inputRequests"].get("confirm").is_some());

        let answer = json!({ "confirm": elicit_accept(json!({ "ok": true })) });
        retry(&mut ctx, answer.clone(), None);
        assert!(
            is_input_required(&call(fixture, json!({}), &ctx).await?),
            "no state: ask again"
        );

        retry(&mut ctx, answer.clone(), Some(&state));
        assert!(first_text(&call(fixture, json!({}), &ctx).await?).contains("state-ok"));

        retry(&mut ctx, answer, Some(&format!("{state}-TAMPERED")));
        assert!(matches!(
            call(fixture, json!({}), &ctx).await,
            Err(DomainError::InvalidParams { .. })
        ));
    }
    Ok(())
}

#[tokio::test]
async fn mrtr_state_of_another_fixture_is_rejected() -> Result<(), DomainError> {
    let (_, mut ctx) = modern(all_caps());
    let first = call(IRR_REQUEST_STATE, json!({}), &ctx).await?;
    let state = first["requestState"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    retry(&mut ctx, json!({}), Some(&state));
    assert!(matches!(
        call(IRR_MULTI_ROUND, json!({}), &ctx).await,
        Err(DomainError::InvalidParams { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn mrtr_multiple_inputs_in_one_round() -> Result<(), DomainError> {
    let (_, mut ctx) = modern(all_caps());
    let first = call(IRR_MULTIPLE_INPUTS, json!({}), &ctx).await?;
    let requests = first["inputRequests"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let methods: Vec<&str> = ["user_name", "greeting", "client_roots"]
        .iter()
        .filter_map(|k| requests.get(*k).and_then(|r| r["method"].as_str()))
        .collect();
    assert_eq!(
        methods,
        ["elicitation/create", "sampling/createMessage", "roots/list"]
    );
    let state = first["requestState"].as_str().map(str::to_owned);
    assert!(state.is_some());

    retry(
        &mut ctx,
        json!({ "user_name": elicit_accept(json!({ "name": "Alice" })) }),
        state.as_deref(),
    );
    let partial = call(IRR_MULTIPLE_INPUTS, json!({}), &ctx).await?;
    assert!(
        partial["inputRequests"].get("user_name").is_none(),
        "only the missing ones"
    );
    assert!(partial["inputRequests"].get("greeting").is_some());

    let all = json!({
        "user_name": elicit_accept(json!({ "name": "Alice" })),
        "greeting": sampling_reply("Hello there!"),
        "client_roots": roots_reply()
    });
    retry(&mut ctx, all, state.as_deref());
    let done = call(IRR_MULTIPLE_INPUTS, json!({}), &ctx).await?;
    assert_eq!(
        first_text(&done),
        "Hello, Alice! Greeting: Hello there!. Roots: 1"
    );
    Ok(())
}

#[tokio::test]
async fn mrtr_multi_round_evolves_state() -> Result<(), DomainError> {
    let (_, mut ctx) = modern(all_caps());
    let r1 = call(IRR_MULTI_ROUND, json!({}), &ctx).await?;
    assert!(r1["inputRequests"].get("step1").is_some());
    let s1 = r1["requestState"].as_str().unwrap_or_default().to_owned();
    retry(
        &mut ctx,
        json!({ "step1": elicit_accept(json!({ "name": "Alice" })) }),
        Some(&s1),
    );
    let r2 = call(IRR_MULTI_ROUND, json!({}), &ctx).await?;
    assert!(r2["inputRequests"].get("step2").is_some());
    let s2 = r2["requestState"].as_str().unwrap_or_default().to_owned();
    assert!(!s2.is_empty() && s2 != s1);
    retry(
        &mut ctx,
        json!({ "step2": elicit_accept(json!({ "color": "blue" })) }),
        Some(&s2),
    );
    let r3 = call(IRR_MULTI_ROUND, json!({}), &ctx).await?;
    assert_eq!(
        first_text(&r3),
        "Hello, Alice! Your favorite color is blue."
    );
    Ok(())
}

#[tokio::test]
async fn legacy_multi_round_asks_twice_on_the_stream() -> Result<(), DomainError> {
    let (recorder, ctx) = legacy();
    recorder
        .answers
        .lock()
        .push(Ok(elicit_accept(json!({ "name": "Bob" }))));
    recorder
        .answers
        .lock()
        .push(Ok(elicit_accept(json!({ "color": "red" }))));
    let result = call(IRR_MULTI_ROUND, json!({}), &ctx).await?;
    assert_eq!(
        first_text(&result),
        "Hello, Bob! Your favorite color is red."
    );
    assert_eq!(recorder.requests.lock().len(), 2);
    Ok(())
}

#[tokio::test]
async fn mrtr_capabilities_asks_only_what_was_declared() -> Result<(), DomainError> {
    let (_, ctx) = modern(json!({ "sampling": {} }));
    let first = call(IRR_CAPABILITIES, json!({}), &ctx).await?;
    let methods: Vec<Value> = first["inputRequests"]
        .as_object()
        .map(|r| r.values().map(|v| v["method"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(methods, [json!("sampling/createMessage")]);
    let (_, ctx) = modern(json!({}));
    assert!(!is_input_required(
        &call(IRR_CAPABILITIES, json!({}), &ctx).await?
    ));
    Ok(())
}

#[tokio::test]
async fn mrtr_prompt_round_trip() -> Result<(), DomainError> {
    let toolset = Conformance::new();
    let (_, mut ctx) = modern(all_caps());
    let first = outcome_json(
        toolset
            .get_prompt(IRR_PROMPT, JsonObject::new(), &ctx)
            .await?,
    );
    assert_eq!(
        first["inputRequests"]["user_context"]["method"],
        "elicitation/create"
    );
    retry(
        &mut ctx,
        json!({ "user_context": elicit_accept(json!({ "context": "tests" })) }),
        None,
    );
    let done = outcome_json(
        toolset
            .get_prompt(IRR_PROMPT, JsonObject::new(), &ctx)
            .await?,
    );
    assert!(done["messages"][0]["content"]["text"]
        .as_str()
        .is_some_and(|t| t.contains("tests")));
    Ok(())
}

#[tokio::test]
async fn prompts_render_and_check_arguments() -> Result<(), DomainError> {
    let toolset = Conformance::new();
    let (_, ctx) = modern(json!({}));
    let get = |name: &'static str, args: Value| {
        let (toolset, ctx) = (&toolset, &ctx);
        async move {
            toolset
                .get_prompt(name, object(args), ctx)
                .await
                .map(outcome_json)
        }
    };
    let simple = get(SIMPLE_PROMPT, json!({})).await?;
    assert_eq!(simple["messages"][0]["content"]["text"], SIMPLE_PROMPT_TEXT);
    let with_args = get(
        PROMPT_WITH_ARGUMENTS,
        json!({ "arg1": "hello", "arg2": "world" }),
    )
    .await?;
    assert_eq!(
        with_args["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='hello', arg2='world'"
    );
    assert!(matches!(
        get(PROMPT_WITH_ARGUMENTS, json!({ "arg1": "x" })).await,
        Err(DomainError::InvalidParams { .. })
    ));
    assert!(matches!(
        get(SIMPLE_PROMPT, json!({ "bogus": "x" })).await,
        Err(DomainError::InvalidParams { .. })
    ));
    let embedded = get(
        PROMPT_WITH_EMBEDDED_RESOURCE,
        json!({ "resourceUri": "test://x" }),
    )
    .await?;
    assert_eq!(
        embedded["messages"][0]["content"]["resource"]["uri"],
        "test://x"
    );
    assert_eq!(
        embedded["messages"][0]["content"]["resource"]["text"],
        PROMPT_RESOURCE_TEXT
    );
    assert_eq!(
        embedded["messages"][1]["content"]["text"],
        PROMPT_RESOURCE_FOLLOW_UP
    );
    let image = get(PROMPT_WITH_IMAGE, json!({})).await?;
    assert_eq!(image["messages"][0]["content"]["mimeType"], "image/png");
    assert_eq!(
        image["messages"][1]["content"]["text"],
        PROMPT_IMAGE_FOLLOW_UP
    );
    Ok(())
}

#[tokio::test]
async fn resources_read_and_unknown_uris_are_not_mine() -> Result<(), DomainError> {
    let toolset = Conformance::new();
    let (_, ctx) = modern(json!({}));
    assert_eq!(toolset.resources(&ctx)[0].uri, STATIC_TEXT_URI);
    let read = |uri: &'static str| {
        let (toolset, ctx) = (&toolset, &ctx);
        async move {
            toolset
                .read_resource(uri, ctx)
                .await
                .map(|o| o.map(outcome_json))
        }
    };
    let text = read(STATIC_TEXT_URI).await?.unwrap_or_default();
    assert_eq!(
        text["contents"][0],
        json!({ "uri": STATIC_TEXT_URI, "mimeType": "text/plain", "text": STATIC_TEXT })
    );
    let binary = read(STATIC_BINARY_URI).await?.unwrap_or_default();
    assert_eq!(binary["contents"][0]["blob"], PNG_BASE64);
    assert_eq!(binary["contents"][0]["mimeType"], "image/png");
    let templated = read("test://template/123/data").await?.unwrap_or_default();
    assert_eq!(
        templated["contents"][0]["text"],
        r#"{"id":"123","templateTest":true,"data":"Data for ID: 123"}"#
    );
    assert_eq!(templated["contents"][0]["mimeType"], "application/json");
    for unknown in [
        "test://nonexistent-resource-for-conformance-testing",
        "test://template//data",
        "test://template/a/b/data",
    ] {
        assert!(read(unknown).await?.is_none(), "{unknown}");
    }
    assert!(toolset.can_subscribe(WATCHED_URI));
    assert!(!toolset.can_subscribe("calc://elsewhere"));
    Ok(())
}

#[test]
fn completion_owns_fixture_references_only() {
    let toolset = Conformance::new();
    let prompt = |name: &str| CompletionRef::Prompt {
        name: name.to_owned(),
    };
    let none = JsonObject::new();
    assert_eq!(
        toolset.complete(&prompt(PROMPT_WITH_ARGUMENTS), "arg1", "te", &none),
        Some(vec!["test".to_owned(), "testValue1".to_owned()])
    );
    assert_eq!(
        toolset.complete(&prompt(SIMPLE_PROMPT), "x", "", &none),
        Some(vec![])
    );
    assert_eq!(
        toolset.complete(&prompt("explain-calculation"), "x", "", &none),
        None
    );
    let template = CompletionRef::Resource {
        uri: TEMPLATE_URI.to_owned(),
    };
    assert_eq!(
        toolset.complete(&template, "id", "12", &none),
        Some(vec!["123".to_owned()])
    );
}

#[tokio::test]
async fn custom_header_and_schema_tools_echo_arguments() -> Result<(), DomainError> {
    let (_, ctx) = modern(json!({}));
    let echoed = call(CUSTOM_HEADER, json!({ "region": "Hello" }), &ctx).await?;
    assert_eq!(first_text(&echoed), "Region: Hello");
    assert!(matches!(
        call(CUSTOM_HEADER, json!({}), &ctx).await,
        Err(DomainError::InvalidArguments(_))
    ));
    let schema = call(JSON_SCHEMA_2020_12, json!({ "name": "x" }), &ctx).await?;
    assert!(first_text(&schema).contains(r#"{"name":"x"}"#));
    Ok(())
}
