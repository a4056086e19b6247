//! Toolset-level tests against the recording test double: golden texts, error texts, progress,
//! history, resources, prompts and completions.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::protocol::testing::{legacy_context, modern_context, Recorder};
use crate::protocol::toolset::Era;

fn calc() -> Calculator {
    calc_with(Limits::default())
}

fn calc_with(limits: Limits) -> Calculator {
    calc_full(limits, None).0
}

/// A calculator on a settings channel the test keeps (to change limits or the sample tool).
fn calc_full(
    limits: Limits,
    sample_tool: Option<&str>,
) -> (Calculator, watch::Sender<CalculatorSettings>) {
    let (tx, rx) = watch::channel(CalculatorSettings {
        limits,
        sample_tool: sample_tool.map(Arc::from),
    });
    (Calculator::new(rx).expect("valid calculator"), tx)
}

fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().expect("object literal")
}

/// A legacy context without a progress token.
fn legacy_no_token(r: Arc<Recorder>) -> RequestContext {
    let mut ctx = legacy_context(r);
    ctx.progress_token = None;
    ctx
}

fn text_of(r: &CallToolResult) -> String {
    match r.content.as_slice() {
        [ContentBlock::Text(t)] => t.text.clone(),
        other => panic!("expected one text block, got {other:?}"),
    }
}

async fn call(
    c: &Calculator,
    name: &str,
    args: Value,
    ctx: &RequestContext,
) -> Result<CallToolResult, DomainError> {
    match c.call_tool(name, obj(args), ctx).await? {
        Outcome::Complete(r) => Ok(r.into_call_tool_result()),
        Outcome::InputRequired { .. } => panic!("unexpected InputRequired"),
        // As for a client that did not declare tasks: the work runs inline.
        Outcome::Task(work) => (work.run)(ctx.clone())
            .await
            .map(ToolResult::into_call_tool_result),
    }
}

async fn ok_text(
    c: &Calculator,
    name: &str,
    args: Value,
    ctx: &RequestContext,
) -> (String, CallToolResult) {
    let r = call(c, name, args, ctx).await.expect("tool call succeeds");
    assert_eq!(r.is_error, Some(false), "{r:?}");
    (text_of(&r), r)
}

async fn err_text(c: &Calculator, name: &str, args: Value, ctx: &RequestContext) -> String {
    let r = call(c, name, args, ctx)
        .await
        .expect("tool call returns a result");
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(r.structured_content.is_none());
    text_of(&r)
}

async fn invalid_args(c: &Calculator, name: &str, args: Value) -> String {
    let r = Arc::new(Recorder::default());
    match call(c, name, args, &legacy_context(r.clone())).await {
        Err(DomainError::InvalidArguments(m)) => {
            assert!(r.calculations.lock().is_empty());
            m
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
}

async fn read_text(c: &Calculator, uri: &str, ctx: &RequestContext) -> Option<String> {
    match c.read_resource(uri, ctx).await.expect("read succeeds")? {
        Outcome::Task(_) => panic!("resources never run as tasks"),
        Outcome::Complete(r) => match r.contents.as_slice() {
            [ResourceContents::TextResourceContents {
                text,
                mime_type,
                uri: u,
                ..
            }] => {
                assert_eq!(mime_type.as_deref(), Some("application/json"));
                assert_eq!(u, uri);
                Some(text.clone())
            }
            other => panic!("unexpected contents {other:?}"),
        },
        Outcome::InputRequired { .. } => panic!("unexpected InputRequired"),
    }
}

fn progress(r: &Recorder) -> Vec<Value> {
    r.notifications
        .lock()
        .iter()
        .filter(|(m, _)| m == "notifications/progress")
        .map(|(_, p)| p.clone())
        .collect()
}

fn assert_strictly_increasing(notes: &[Value]) {
    let values: Vec<f64> = notes
        .iter()
        .map(|n| n["progress"].as_f64().expect("finite progress"))
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    assert!(notes.iter().all(|n| n["progressToken"] == "tok-1"
        && n["total"].is_number()
        && n["message"].is_string()));
}

#[tokio::test]
async fn golden_tool_texts() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let cases = [
        ("calculate", json!({"a": 100, "b": 50, "op": "add"}), "100 add 50 = 150"),
        ("calculate", json!({"a": 1, "b": 3, "op": "divide"}), "1 divide 3 = 0.3333333333333333"),
        ("calculate", json!({"a": 7.5, "b": 10, "op": "subtract"}), "7.5 subtract 10 = -2.5"),
        ("calculate", json!({"a": 1e308, "b": 10, "op": "multiply"}), "1e+308 multiply 10 = Infinity"),
        ("calculate", json!({"a": 0.1, "b": 0.2, "op": "add"}), "0.1 add 0.2 = 0.30000000000000004"),
        ("advanced_calculate", json!({"operation": "power", "value": 3, "base": 2}), "power(3, 2) = 8"),
        ("advanced_calculate", json!({"operation": "log", "value": 8, "base": 0}), "log(8, 0) = 2.0794415416798357"),
        ("advanced_calculate", json!({"operation": "log", "value": 8, "base": 1}), "log(8, 1) = Infinity"),
        ("advanced_calculate", json!({"operation": "log", "value": std::f64::consts::E}), "log(2.718281828459045) = 1"),
        ("advanced_calculate", json!({"operation": "sin", "value": 1, "base": 2}), "sin(1, 2) = 0.8414709848078965"),
        ("advanced_calculate", json!({"operation": "tan", "value": 1}), "tan(1) = 1.5574077246549023"),
        ("advanced_calculate", json!({"operation": "factorial", "value": 5}), "factorial(5) = 120"),
        ("advanced_calculate", json!({"operation": "factorial", "value": 171}), "factorial(171) = Infinity"),
        ("advanced_calculate", json!({"operation": "sqrt", "value": 16}), "sqrt(16) = 4"),
        (
            "batch_calculate",
            json!({"calculations": [{"a": 1, "b": 2, "op": "add"}, {"a": 5, "b": 0, "op": "divide"}, {"a": 9, "b": 3, "op": "divide"}]}),
            "Batch calculation completed. Results:\n1 add 2 = 3\nError: Division by zero\n9 divide 3 = 3",
        ),
        ("batch_calculate", json!({"calculations": []}), "Batch calculation completed. Results:\n"),
    ];
    for (tool, args, want) in cases {
        assert_eq!(
            ok_text(&c, tool, args.clone(), &ctx).await.0,
            want,
            "{tool} {args}"
        );
    }
}

#[tokio::test]
async fn domain_error_texts_are_the_references() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    let cases = [
        (
            "calculate",
            json!({"a": 1, "b": 0, "op": "divide"}),
            "MCP error -32602: Division by zero is not allowed",
        ),
        (
            "advanced_calculate",
            json!({"operation": "factorial", "value": -1}),
            "MCP error -32602: Factorial requires non-negative integer",
        ),
        (
            "advanced_calculate",
            json!({"operation": "factorial", "value": 2.5}),
            "MCP error -32602: Factorial requires non-negative integer",
        ),
        (
            "advanced_calculate",
            json!({"operation": "factorial", "value": 5e9}),
            "MCP error -32602: Factorial requires an input no greater than 1000000",
        ),
        (
            "advanced_calculate",
            json!({"operation": "power", "value": 3}),
            "MCP error -32602: Power operation requires base parameter",
        ),
        (
            "advanced_calculate",
            json!({"operation": "sqrt", "value": -4}),
            "MCP error -32602: Square root of negative number",
        ),
        (
            "advanced_calculate",
            json!({"operation": "log", "value": 0}),
            "MCP error -32602: Logarithm requires positive number",
        ),
    ];
    for (tool, args, want) in cases {
        assert_eq!(err_text(&c, tool, args, &ctx).await, want);
    }
    assert!(
        r.calculations.lock().is_empty(),
        "failed calculations are not counted"
    );
    assert!(r.updated.lock().is_empty());
    assert!(progress(&r).is_empty());
}

#[tokio::test]
async fn argument_validation_names_the_argument() {
    let c = calc();
    let cases = [
        ("calculate", json!({"a": 1, "op": "add"}), "argument \"b\" is required"),
        ("calculate", json!({"a": "1", "b": 2, "op": "add"}), "argument \"a\" must be a number, got string"),
        ("calculate", json!({"a": 1, "b": 2, "op": "pow"}), "argument \"op\" must be one of \"add\", \"subtract\", \"multiply\", \"divide\", got \"pow\""),
        ("calculate", json!({"a": 1, "b": 2, "op": "add", "foo": 1}), "argument \"foo\" is not a known argument"),
        ("calculate", json!({"a": 1, "b": 2, "op": "add", "stream": "yes"}), "argument \"stream\" must be a boolean, got string"),
        ("calculate", json!({"a": 1, "b": 2, "op": "add", "historyHandle": 7}), "argument \"historyHandle\" must be a string, got number"),
        ("calculate", json!({"a": [1], "b": {"x": null}, "op": "add"}), "argument \"a\" must be a number, got array"),
        ("batch_calculate", json!({}), "argument \"calculations\" is required"),
        ("batch_calculate", json!({"calculations": {}}), "argument \"calculations\" must be an array, got object"),
        ("batch_calculate", json!({"calculations": [1]}), "argument \"calculations[0]\" must be an object, got number"),
        ("batch_calculate", json!({"calculations": [{"a": 1, "b": 2, "op": "add"}, {"a": 1, "b": 2, "op": "pow"}]}), "argument \"calculations[1].op\" must be one of"),
        ("batch_calculate", json!({"calculations": [{"a": 1, "b": 2, "op": "add", "c": 3}]}), "argument \"calculations[0].c\" is not a known argument"),
        ("advanced_calculate", json!({"operation": "cbrt", "value": 1}), "argument \"operation\" must be one of"),
        ("advanced_calculate", json!({"operation": "power", "value": 1, "base": "2"}), "argument \"base\" must be a number, got string"),
        ("demo_progress", json!({"steps": 0}), "argument \"steps\" must be an integer from 1 to 100, got 0"),
        ("demo_progress", json!({"steps": 101}), "argument \"steps\" must be an integer from 1 to 100, got 101"),
        ("demo_progress", json!({"steps": 2.5}), "argument \"steps\" must be an integer from 1 to 100, got 2.5"),
        ("demo_progress", json!({"steps": -2}), "got -2"),
        ("demo_progress", json!({"steps": 1e300}), "got 1e+300"),
    ];
    for (tool, args, want) in cases {
        let m = invalid_args(&c, tool, args.clone()).await;
        assert!(m.starts_with("argument "), "{m}");
        assert!(m.contains(want), "{tool} {args}: {m}");
    }
}

#[tokio::test]
async fn batch_length_is_bounded_by_live_limits() {
    let (c, tx) = calc_full(
        Limits {
            max_batch_size: 2,
            ..Limits::default()
        },
        None,
    );
    let three = json!({"calculations": [{"a": 1, "b": 2, "op": "add"}, {"a": 1, "b": 2, "op": "add"}, {"a": 1, "b": 2, "op": "add"}]});
    let m = invalid_args(&c, "batch_calculate", three.clone()).await;
    assert!(m.contains("must contain at most 2 items, got 3"), "{m}");
    let schema = Value::Object((*c.tools()[1].input_schema).clone());
    assert_eq!(schema["properties"]["calculations"]["maxItems"], 2);
    tx.send(CalculatorSettings {
        limits: Limits {
            max_batch_size: 3,
            ..Limits::default()
        },
        sample_tool: None,
    })
    .expect("receiver alive");
    let ctx = legacy_context(Arc::new(Recorder::default()));
    ok_text(&c, "batch_calculate", three, &ctx).await;
    let schema = Value::Object((*c.tools()[3].input_schema).clone());
    assert_eq!(
        schema["properties"]["steps"],
        json!({"type": "integer", "default": 5, "minimum": 1, "maximum": 100, "description": "Number of progress steps"})
    );
}

#[tokio::test]
async fn calculate_records_history_and_structured_content() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    let (_, res) = ok_text(
        &c,
        "calculate",
        json!({"a": 7.5, "b": 10, "op": "subtract"}),
        &ctx,
    )
    .await;
    let sc = res.structured_content.expect("structured content");
    let id = sc["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("c-") && id.len() == 18, "{id}");
    assert_eq!(sc["result"], json!(-2.5));
    assert_eq!(sc["resultText"], "-2.5");
    assert!(
        sc.get("historyHandle").is_none(),
        "legacy session history has no handle"
    );
    assert_eq!(*r.calculations.lock(), vec!["subtract".to_owned()]);
    assert_eq!(
        *r.updated.lock(),
        vec![
            "calculator://stats".to_owned(),
            "session://info/test-session".to_owned()
        ]
    );
    let text = read_text(&c, &format!("calculator://history/{id}"), &ctx)
        .await
        .expect("own calculation readable");
    let entry: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(entry["operation"], "subtract");
    assert_eq!(entry["inputs"], json!([7.5, 10]));
    assert_eq!(entry["resultText"], "-2.5");
    assert!(
        text.contains("\n  \"inputs\": [\n    7.5,\n    10\n  ],"),
        "{text}"
    );
}

#[tokio::test]
async fn infinity_is_kept_as_text_in_history() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let (_, res) = ok_text(
        &c,
        "advanced_calculate",
        json!({"operation": "factorial", "value": 171}),
        &ctx,
    )
    .await;
    let sc = res.structured_content.expect("structured");
    assert_eq!(sc["result"], Value::Null);
    assert_eq!(sc["resultText"], "Infinity");
    let id = sc["id"].as_str().expect("id");
    let text = read_text(&c, &format!("calculator://history/{id}"), &ctx)
        .await
        .expect("readable");
    assert!(text.contains("\"result\": null") && text.contains("\"resultText\": \"Infinity\""));
}

#[tokio::test]
async fn advanced_inputs_include_base_only_when_given() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let (_, with) = ok_text(
        &c,
        "advanced_calculate",
        json!({"operation": "power", "value": 3, "base": 2}),
        &ctx,
    )
    .await;
    assert_eq!(
        with.structured_content.expect("sc")["inputs"],
        json!([3, 2])
    );
    let (_, without) = ok_text(
        &c,
        "advanced_calculate",
        json!({"operation": "sqrt", "value": 9}),
        &ctx,
    )
    .await;
    assert_eq!(
        without.structured_content.expect("sc")["inputs"],
        json!([9])
    );
}

#[tokio::test]
async fn batch_appends_once_and_counts_each_success() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    let args = json!({"calculations": [{"a": 1, "b": 2, "op": "add"}, {"a": 5, "b": 0, "op": "divide"}, {"a": 9, "b": 3, "op": "divide"}]});
    let (_, res) = ok_text(&c, "batch_calculate", args, &ctx).await;
    assert_eq!(
        *r.calculations.lock(),
        vec!["add".to_owned(), "divide".to_owned()]
    );
    // One append: the resource updates are announced once.
    assert_eq!(r.updated.lock().len(), 2);
    let sc = res.structured_content.expect("sc");
    let results = sc["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["error"], "Division by zero");
    assert!(results[1].get("id").is_none());
    let ids: Vec<&str> = [&results[0], &results[2]]
        .iter()
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_ne!(ids[0], ids[1]);
    let scope = ctx.scope(None).await.expect("scope");
    let history = scope.history().await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["id"], ids[0]);
    assert_eq!(
        history[0]["timestamp"], history[1]["timestamp"],
        "one append, one timestamp"
    );
    let stats = scope.stats().await.expect("stats");
    assert_eq!(stats.calculation_total, 2);
}

#[tokio::test]
async fn history_cap_drops_old_entries() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let mut ids = Vec::new();
    for i in 0..55 {
        let (_, res) = ok_text(&c, "calculate", json!({"a": i, "b": 1, "op": "add"}), &ctx).await;
        ids.push(
            res.structured_content.expect("sc")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    assert!(
        read_text(&c, &format!("calculator://history/{}", ids[0]), &ctx)
            .await
            .is_none()
    );
    assert!(
        read_text(&c, &format!("calculator://history/{}", ids[5]), &ctx)
            .await
            .is_some()
    );
    let info = read_text(&c, "session://info/test-session", &ctx)
        .await
        .expect("info");
    let info: Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["calculationCount"], 50);
    let stats: Value = serde_json::from_str(
        &read_text(&c, "calculator://stats", &ctx)
            .await
            .expect("stats"),
    )
    .expect("json");
    assert_eq!(
        stats,
        json!({"totalCalculations": 55, "operationBreakdown": [{"operation": "add", "count": 55}]})
    );
}

#[tokio::test]
async fn progress_only_with_a_token() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_no_token(r.clone());
    let started = std::time::Instant::now();
    ok_text(
        &c,
        "calculate",
        json!({"a": 1, "b": 2, "op": "add", "stream": true}),
        &ctx,
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(150),
        "no sleeping without a token"
    );
    ok_text(
        &c,
        "batch_calculate",
        json!({"calculations": [{"a": 1, "b": 2, "op": "add"}], "reportProgress": true}),
        &ctx,
    )
    .await;
    ok_text(&c, "demo_progress", json!({"steps": 1}), &ctx).await;
    assert!(r.notifications.lock().is_empty());
}

#[tokio::test]
async fn calculate_streams_three_increasing_steps() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    ok_text(
        &c,
        "calculate",
        json!({"a": 1, "b": 2, "op": "add", "stream": true}),
        &ctx,
    )
    .await;
    let notes = progress(&r);
    assert_strictly_increasing(&notes);
    let messages: Vec<&str> = notes
        .iter()
        .map(|n| n["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        messages,
        [
            "Starting add calculation...",
            "Processing: 1 add 2",
            "Calculation complete: 3"
        ]
    );
    assert_eq!(notes[2]["progress"], json!(1.0));
    assert_eq!(notes[2]["total"], json!(1.0));
    r.notifications.lock().clear();
    ok_text(&c, "calculate", json!({"a": 1, "b": 2, "op": "add"}), &ctx).await;
    assert!(progress(&r).is_empty(), "no stream flag, no progress");
}

#[tokio::test]
async fn batch_progress_per_item() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    let args = json!({"reportProgress": true, "calculations": [{"a": 1, "b": 2, "op": "add"}, {"a": 5, "b": 0, "op": "divide"}]});
    ok_text(&c, "batch_calculate", args, &ctx).await;
    let notes = progress(&r);
    assert_strictly_increasing(&notes);
    assert_eq!(notes[0]["message"], "Processing calculation 1/2: 1 add 2");
    assert_eq!(
        notes[1]["message"],
        "Processing calculation 2/2: 5 divide 0"
    );
    assert_eq!(notes[1]["progress"], json!(2.0));
    assert_eq!(notes[1]["total"], json!(2.0));
}

#[tokio::test]
async fn demo_progress_steps_and_text() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    let (text, res) = ok_text(&c, "demo_progress", json!({"steps": 3}), &ctx).await;
    assert_eq!(text, "Progress demonstration completed with 3 steps");
    assert!(res.structured_content.is_none());
    let notes = progress(&r);
    assert_strictly_increasing(&notes);
    let messages: Vec<&str> = notes
        .iter()
        .map(|n| n["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        messages,
        [
            "Step 1/3 completed",
            "Step 2/3 completed",
            "Step 3/3 completed"
        ]
    );
    assert!(notes.iter().all(|n| n["total"] == json!(3.0)));
    assert!(
        r.calculations.lock().is_empty() && r.updated.lock().is_empty(),
        "demo touches no history"
    );
}

#[tokio::test]
async fn demo_progress_default_is_five_steps() {
    let c = calc();
    let ctx = legacy_no_token(Arc::new(Recorder::default()));
    let (text, _) = ok_text(&c, "demo_progress", json!({}), &ctx).await;
    assert_eq!(text, "Progress demonstration completed with 5 steps");
}

#[tokio::test]
async fn demo_progress_stops_when_cancelled() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r.clone());
    let cancel = ctx.cancel.clone();
    let task = {
        let ctx = ctx.clone();
        tokio::spawn(async move { call(&c, "demo_progress", json!({"steps": 50}), &ctx).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    cancel.cancel();
    let result = task.await.expect("task joins");
    assert!(matches!(result, Err(DomainError::Cancelled)), "{result:?}");
    let sent = progress(&r).len();
    assert!((1..50).contains(&sent), "{sent}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(progress(&r).len(), sent, "nothing after returning");
}

#[tokio::test]
async fn modern_era_uses_state_handles() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = modern_context(r.clone());
    assert_eq!(ctx.era, Era::Modern);
    let (text, res) = ok_text(
        &c,
        "calculate",
        json!({"a": 2, "b": 3, "op": "multiply"}),
        &ctx,
    )
    .await;
    assert_eq!(text, "2 multiply 3 = 6", "text identical to the reference");
    assert_eq!(res.content.len(), 1);
    let sc = res.structured_content.expect("sc");
    let handle = sc["historyHandle"].as_str().expect("handle").to_owned();
    let id = sc["id"].as_str().expect("id").to_owned();
    assert!(id.contains('.'), "{id}");
    assert!(
        r.updated.lock().is_empty(),
        "no session resources in the modern era"
    );
    // Reuse the handle; the id leads back to the same scope.
    let args = json!({"operation": "sqrt", "value": 4, "historyHandle": handle});
    let (_, res2) = ok_text(&c, "advanced_calculate", args, &ctx).await;
    assert_eq!(
        res2.structured_content.expect("sc")["historyHandle"],
        handle.as_str()
    );
    let text = read_text(&c, &format!("calculator://history/{id}"), &ctx)
        .await
        .expect("readable by id");
    assert!(text.contains("\"operation\": \"multiply\""));
    assert_eq!(
        ctx.scope(Some(&handle))
            .await
            .expect("scope")
            .history()
            .await
            .expect("h")
            .len(),
        2
    );
    // No session resources, and a bad handle is the session layer's error.
    assert!(c
        .resources(&ctx)
        .iter()
        .all(|res| res.uri != "calculator://stats"));
    assert!(read_text(&c, "calculator://stats", &ctx).await.is_none());
    let bad = call(
        &c,
        "calculate",
        json!({"a": 1, "b": 1, "op": "add", "historyHandle": "nope"}),
        &ctx,
    )
    .await;
    assert!(
        matches!(bad, Err(DomainError::InvalidParams { .. })),
        "{bad:?}"
    );
}

#[tokio::test]
async fn history_is_scoped() {
    let c = calc();
    let legacy = legacy_context(Arc::new(Recorder::default()));
    let (_, res) = ok_text(
        &c,
        "calculate",
        json!({"a": 1, "b": 1, "op": "add"}),
        &legacy,
    )
    .await;
    let id = res.structured_content.expect("sc")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other_session = legacy_context(Arc::new(Recorder::default()));
    assert!(
        read_text(&c, &format!("calculator://history/{id}"), &other_session)
            .await
            .is_none()
    );
    let modern = modern_context(Arc::new(Recorder::default()));
    assert!(
        read_text(&c, &format!("calculator://history/{id}"), &modern)
            .await
            .is_none()
    );
    let unknown_handle = format!("calculator://history/c-0123456789abcdef.{}", "bm9wZQ");
    assert!(read_text(&c, &unknown_handle, &modern).await.is_none());
    assert!(
        read_text(&c, "calculator://history/{calculationId}", &legacy)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn static_resources_match_reference_texts() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let constants = read_text(&c, "calculator://constants", &ctx)
        .await
        .expect("constants");
    assert_eq!(
        constants,
        "{\n  \"pi\": 3.141592653589793,\n  \"e\": 2.718281828459045,\n  \"sqrt2\": 1.4142135623730951,\n  \"ln2\": 0.6931471805599453,\n  \"ln10\": 2.302585092994046\n}"
    );
    let formulas = read_text(&c, "formulas://library", &ctx)
        .await
        .expect("formulas");
    let reference: Value = serde_json::from_str(r#"{"quadratic":{"formula":"ax² + bx + c = 0","solution":"x = (-b ± √(b²-4ac)) / 2a"},"pythagorean":{"formula":"a² + b² = c²","description":"For right triangles"},"compound_interest":{"formula":"A = P(1 + r/n)^(nt)","variables":{"A":"Final amount","P":"Principal","r":"Annual interest rate","n":"Compounding frequency","t":"Time in years"}}}"#).expect("json");
    assert_eq!(
        serde_json::from_str::<Value>(&formulas).expect("json"),
        reference
    );
    assert!(read_text(&c, "calculator://nothing", &ctx).await.is_none());
    assert!(read_text(&c, "not a uri", &ctx).await.is_none());
}

#[tokio::test]
async fn resource_listing_and_session_info() {
    let c = calc();
    let r = Arc::new(Recorder::default());
    let ctx = legacy_context(r);
    let uris: Vec<String> = c.resources(&ctx).into_iter().map(|res| res.uri).collect();
    assert_eq!(
        uris,
        [
            "calculator://constants",
            "calculator://stats",
            "session://info/test-session",
            "formulas://library"
        ]
    );
    let templates = c.resource_templates();
    assert_eq!(templates.len(), 1);
    assert_eq!(
        templates[0].uri_template,
        "calculator://history/{calculationId}"
    );
    assert_eq!(templates[0].name, "calculation-history");
    let info = read_text(&c, "session://info/test-session", &ctx)
        .await
        .expect("own info");
    let v: Value = serde_json::from_str(&info).expect("json");
    let keys: Vec<&str> = [
        "sessionId",
        "startTime",
        "lastActivity",
        "requestCount",
        "calculationCount",
        "uptime",
    ]
    .to_vec();
    for k in &keys {
        assert!(v.get(*k).is_some(), "{k} in {info}");
    }
    assert_eq!(v["sessionId"], "test-session");
    assert!(
        v["startTime"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && s.len() == 24),
        "{info}"
    );
    assert!(info.starts_with("{\n  \"sessionId\": \"test-session\",\n  \"startTime\""));
    assert!(read_text(&c, "session://info/other-session", &ctx)
        .await
        .is_none());
    assert!(c.can_subscribe("calculator://stats"));
    assert!(c.can_subscribe("session://info/test-session"));
    assert!(c.can_subscribe("calculator://history/c-0123456789abcdef"));
    assert!(!c.can_subscribe("calculator://constants"));
    assert!(!c.can_subscribe("calculator://history/{calculationId}"));
    let modern = modern_context(Arc::new(Recorder::default()));
    let uris: Vec<String> = c
        .resources(&modern)
        .into_iter()
        .map(|res| res.uri)
        .collect();
    assert_eq!(uris, ["calculator://constants", "formulas://library"]);
}

#[tokio::test]
async fn tool_list_and_sample_tool() {
    let (c, tx) = calc_full(Limits::default(), Some("echo_it"));
    let names: Vec<String> = c.tools().into_iter().map(|t| t.name.into_owned()).collect();
    assert_eq!(
        names,
        [
            "echo_it",
            "calculate",
            "batch_calculate",
            "advanced_calculate",
            "demo_progress"
        ]
    );
    let tools = c.tools();
    assert!(tools[0].output_schema.is_none() && tools[4].output_schema.is_none());
    assert!(tools[1..4].iter().all(|t| t
        .output_schema
        .as_ref()
        .is_some_and(|s| s["type"] == "object")));
    assert_eq!(
        tools[1].input_schema["properties"]["op"],
        json!({"type": "string", "enum": ["add", "subtract", "multiply", "divide"], "description": "Operation to perform"})
    );
    assert_eq!(tools[1].input_schema["additionalProperties"], false);
    let ctx = modern_context(Arc::new(Recorder::default()));
    let r = call(&c, "echo_it", json!({"value": "hi"}), &ctx)
        .await
        .expect("ok");
    assert_eq!(text_of(&r), "test string print: hi");
    assert_eq!(r.is_error, None);
    assert!(
        matches!(call(&c, "nosuchtool", json!({}), &ctx).await, Err(DomainError::InvalidParams { message, .. }) if message == "Tool nosuchtool not found")
    );
    let plain = calc();
    assert_eq!(plain.tools().len(), 4);
    assert!(matches!(
        call(&plain, "echo_it", json!({"value": "x"}), &ctx).await,
        Err(DomainError::InvalidParams { .. })
    ));
    // The name is live: renamed, the old name is gone and the new one answers.
    tx.send_modify(|s| s.sample_tool = Some(Arc::from("echo2")));
    assert_eq!(c.tools()[0].name, "echo2");
    assert!(call(&c, "echo_it", json!({"value": "x"}), &ctx)
        .await
        .is_err());
    assert!(call(&c, "echo2", json!({"value": "x"}), &ctx).await.is_ok());
}

#[test]
fn sample_tool_names_are_validated() {
    let new = |name: &str| check_sample_name(name);
    assert!(new("").is_err());
    assert_eq!(new("a.b-c_1"), Ok("a.b-c_1".into()));
    assert_eq!(
        new("calculate"),
        Err(CalculatorError::SampleToolClash("calculate".into()))
    );
    assert!(matches!(
        new("has space"),
        Err(CalculatorError::InvalidSampleToolName(_))
    ));
    assert!(matches!(
        new(&"x".repeat(129)),
        Err(CalculatorError::InvalidSampleToolName(_))
    ));
    assert!(new(&"x".repeat(128)).is_ok());
    assert!(matches!(
        new("é"),
        Err(CalculatorError::InvalidSampleToolName(_))
    ));
    let bad = Limits {
        max_progress_steps: 0,
        ..Limits::default()
    };
    assert!(matches!(
        Calculator::new(
            watch::channel(CalculatorSettings {
                limits: bad,
                sample_tool: None
            })
            .1
        ),
        Err(CalculatorError::InvalidLimits(_))
    ));
}

#[test]
fn limits_deserialize_camel_case_with_defaults() {
    let l: Limits = serde_json::from_value(json!({"maxBatchSize": 10})).expect("valid");
    assert_eq!(
        l,
        Limits {
            max_batch_size: 10,
            ..Limits::default()
        }
    );
    assert!(serde_json::from_value::<Limits>(json!({"max_batch_size": 10})).is_err());
    assert_eq!(
        Limits::default(),
        Limits {
            max_factorial: 1_000_000,
            max_progress_steps: 100,
            max_batch_size: 100,
            history_cap: 50
        }
    );
}

#[tokio::test]
async fn never_panics_on_junk() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let junk = [
        json!({}),
        json!({"a": null, "b": null, "op": null}),
        json!({"a": {"deep": [[[[]]]]}, "b": true, "op": ["add"]}),
        json!({"a": 1.7976931348623157e308, "b": -1.7976931348623157e308, "op": "subtract"}),
        json!({"a": 18446744073709551615u64, "b": -9223372036854775808i64, "op": "multiply"}),
        json!({"calculations": [null, [], "x"]}),
        json!({"operation": "factorial", "value": 1.7976931348623157e308}),
        json!({"operation": "log", "value": 5e-324, "base": -1}),
        json!({"steps": null}),
        json!({"value": ""}),
    ];
    for tool in [
        "calculate",
        "batch_calculate",
        "advanced_calculate",
        "demo_progress",
        "nosuchtool",
    ] {
        for args in &junk {
            let _ = c.call_tool(tool, obj(args.clone()), &ctx).await;
        }
    }
    let (text, _) = ok_text(
        &c,
        "calculate",
        json!({"a": 1.7976931348623157e308, "b": -1.7976931348623157e308, "op": "subtract"}),
        &ctx,
    )
    .await;
    assert_eq!(
        text,
        "1.7976931348623157e+308 subtract -1.7976931348623157e+308 = Infinity"
    );
}

#[tokio::test]
async fn prompts_texts() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let names: Vec<String> = c.prompts().into_iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "explain-calculation",
            "generate-problems",
            "solve_math_problem",
            "explain_formula",
            "calculator_assistant"
        ]
    );
    let listed = serde_json::to_value(c.prompts()).expect("json");
    assert_eq!(
        listed[1],
        json!({"name": "generate-problems", "title": "Generate Practice Problems", "description": "Generate math practice problems", "arguments": [
            {"name": "topic", "description": "Math topic (e.g., \"fractions\", \"algebra\", \"geometry\")", "required": true},
            {"name": "difficulty", "description": "Difficulty level: easy, medium, hard", "required": true},
            {"name": "count", "description": "Number of problems to generate", "required": true}]})
    );
    let cases = [
        ("generate-problems", json!({"topic": "fractions", "difficulty": "easy", "count": "3"}), "Generate 3 easy fractions problems", "Generate 3 easy-level practice problems for fractions. Include solutions and explanations."),
        ("explain-calculation", json!({"operation": "long division"}), "Step-by-step explanation of long division at basic level", "Please explain how to long division step by step at a basic level. Include examples and common mistakes to avoid."),
        ("explain-calculation", json!({"operation": "x", "level": ""}), "Step-by-step explanation of x at basic level", "Please explain how to x step by step at a basic level. Include examples and common mistakes to avoid."),
        ("explain-calculation", json!({"operation": "x", "level": "advanced"}), "Step-by-step explanation of x at advanced level", "Please explain how to x step by step at a advanced level. Include examples and common mistakes to avoid."),
        ("solve_math_problem", json!({"problem": "2+2", "showWork": "true"}), "Solve: 2+2", "Solve this problem: 2+2. Show all work and explain each step."),
        ("solve_math_problem", json!({"problem": "2+2", "showWork": "no"}), "Solve: 2+2", "Solve this problem: 2+2. Provide the solution."),
        ("explain_formula", json!({"formula": "E=mc²", "context": "physics"}), "Explain the formula: E=mc²", "Explain the formula \"E=mc²\" in the context of physics. Include what each variable represents and when to use this formula."),
        ("explain_formula", json!({"formula": "E=mc²"}), "Explain the formula: E=mc²", "Explain the formula \"E=mc²\". Include what each variable represents and when to use this formula."),
        ("calculator_assistant", json!({"query": "15% of 80"}), "Calculator assistance request", "I need help with this calculation: 15% of 80. Please provide step-by-step guidance."),
    ];
    for (name, args, description, text) in cases {
        let Outcome::Complete(r) = c.get_prompt(name, obj(args), &ctx).await.expect("prompt")
        else {
            panic!("unexpected InputRequired");
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["description"], description);
        assert_eq!(
            v["messages"],
            json!([{"role": "user", "content": {"type": "text", "text": text}}])
        );
    }
}

#[tokio::test]
async fn prompt_argument_errors() {
    let c = calc();
    let ctx = legacy_context(Arc::new(Recorder::default()));
    let cases = [
        (
            "generate-problems",
            json!({"topic": "fractions", "difficulty": "easy"}),
            "Missing required argument \"count\" for prompt generate-problems",
        ),
        (
            "generate-problems",
            json!({"topic": "fractions", "difficulty": "easy", "count": 3}),
            "Argument \"count\" of prompt generate-problems must be a string, got number",
        ),
        (
            "calculator_assistant",
            json!({"query": "x", "extra": "y"}),
            "Unknown argument \"extra\" for prompt calculator_assistant",
        ),
        ("nosuchprompt", json!({}), "Prompt nosuchprompt not found"),
    ];
    for (name, args, want) in cases {
        match c.get_prompt(name, obj(args), &ctx).await {
            Err(DomainError::InvalidParams { message, .. }) => assert_eq!(message, want),
            other => panic!("expected InvalidParams, got {other:?}"),
        }
    }
}

#[test]
fn completions() {
    let c = calc();
    let prompt = |name: &str| CompletionRef::Prompt { name: name.into() };
    let none = JsonObject::new();
    assert_eq!(
        c.complete(&prompt("explain-calculation"), "level", "", &none),
        Some(vec![
            "basic".into(),
            "intermediate".into(),
            "advanced".into()
        ])
    );
    assert_eq!(
        c.complete(&prompt("explain-calculation"), "level", "AD", &none),
        Some(vec!["advanced".into()])
    );
    let ops = c
        .complete(&prompt("explain-calculation"), "operation", "", &none)
        .expect("ours");
    assert_eq!(ops.len(), 11);
    assert_eq!(
        c.complete(&prompt("explain-calculation"), "operation", "s", &none),
        Some(vec!["subtract".into(), "sqrt".into(), "sin".into()])
    );
    assert_eq!(
        c.complete(&prompt("generate-problems"), "difficulty", "h", &none),
        Some(vec!["hard".into()])
    );
    assert_eq!(
        c.complete(&prompt("solve_math_problem"), "showWork", "T", &none),
        Some(vec!["true".into()])
    );
    assert_eq!(
        c.complete(&prompt("calculator_assistant"), "query", "x", &none),
        Some(vec![])
    );
    assert_eq!(c.complete(&prompt("other"), "level", "", &none), None);
    let resource = |uri: &str| CompletionRef::Resource { uri: uri.into() };
    assert_eq!(
        c.complete(
            &resource("calculator://history/{calculationId}"),
            "calculationId",
            "",
            &none
        ),
        Some(vec![])
    );
    assert_eq!(c.complete(&resource("file:///x"), "x", "", &none), None);
}
