//! The calculator's tools: their definitions (schemas as the reference lists them, plus bounds,
//! `historyHandle` and output schemas) and their handlers.
//!
//! Result texts are the reference's, byte for byte. What the reference got wrong is fixed here:
//! progress only with a client token (D10), bounded work (D14), unknown arguments rejected,
//! calculation ids exposed in `structuredContent` so the history template is usable (D9).

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{json, Value};

use super::args::Args;
use super::history::{Calc, HistoryTarget, Recorded};
use super::numfmt::{js_number, json_number, push_js_number, push_json_number, push_json_str};
use super::ops::{AdvancedOp, BasicOp, OpError};
use super::Limits;
use crate::protocol::toolset::{
    DomainError, JsonObject, Outcome, RequestContext, TaskSupport, ToolResult,
};

/// Name of the basic arithmetic tool.
pub const CALCULATE: &str = "calculate";
/// Name of the batch tool.
pub const BATCH_CALCULATE: &str = "batch_calculate";
/// Name of the advanced-operations tool.
pub const ADVANCED_CALCULATE: &str = "advanced_calculate";
/// Name of the progress demonstration tool.
pub const DEMO_PROGRESS: &str = "demo_progress";
/// Built-in tool names; a configured sample tool must not reuse one.
pub const BUILT_IN: [&str; 4] = [
    CALCULATE,
    BATCH_CALCULATE,
    ADVANCED_CALCULATE,
    DEMO_PROGRESS,
];

/// Pause between the streamed steps of `calculate` (reference: 100 ms).
const STREAM_PAUSE: Duration = Duration::from_millis(100);
/// Pause before each step of `demo_progress` (reference: 200 ms).
const DEMO_PAUSE: Duration = Duration::from_millis(200);
/// Default number of `demo_progress` steps (reference schema default).
const DEFAULT_STEPS: u64 = 5;

/// The tool list in the reference's order: sample tool (if configured), then the built-ins.
pub fn definitions(sample: Option<&str>, limits: &Limits) -> Vec<Tool> {
    let mut tools = Vec::with_capacity(5);
    if let Some(name) = sample {
        tools.push(sample_tool(name));
    }
    tools.push(calculate_tool());
    tools.push(batch_tool(limits));
    tools.push(advanced_tool());
    tools.push(demo_progress_tool(limits));
    tools
}

/// Turns a `json!` object literal into a schema map.
fn schema(v: Value) -> Arc<JsonObject> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

/// The `historyHandle` input property shared by the history-touching tools (SEP-2567).
fn history_handle_property() -> Value {
    json!({
        "type": "string",
        "description": "State handle of the calculation history to record into, as returned in structuredContent.historyHandle. Omit to use the session's history, or (without a session) to start a new one."
    })
}

/// Output schema of a single calculation (`calculate`, `advanced_calculate`).
fn single_output_schema() -> Arc<JsonObject> {
    schema(json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Calculation id; read it back from calculator://history/{calculationId}"},
            "operation": {"type": "string"},
            "inputs": {"type": "array", "items": {"type": "number"}},
            "result": {"anyOf": [{"type": "number"}, {"type": "null"}], "description": "The result, or null when it is not finite (see resultText)"},
            "resultText": {"type": "string", "description": "The result as JavaScript prints it (e.g. Infinity, 1e+21)"},
            "historyHandle": {"type": "string", "description": "State handle of the history the calculation was recorded in"}
        },
        "required": ["id", "operation", "inputs", "result", "resultText"]
    }))
}

/// Output schema of `batch_calculate`.
fn batch_output_schema() -> Arc<JsonObject> {
    schema(json!({
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "operation": {"type": "string"},
                        "inputs": {"type": "array", "items": {"type": "number"}},
                        "id": {"type": "string"},
                        "result": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                        "resultText": {"type": "string"},
                        "error": {"type": "string"}
                    },
                    "required": ["index", "operation", "inputs"]
                }
            },
            "historyHandle": {"type": "string", "description": "State handle of the history the calculations were recorded in"}
        },
        "required": ["results"]
    }))
}

/// The optional sample echo tool.
fn sample_tool(name: &str) -> Tool {
    let input = schema(json!({
        "type": "object",
        "properties": {"value": {"type": "string", "description": "String value to process"}},
        "required": ["value"],
        "additionalProperties": false
    }));
    Tool::new(
        name.to_owned(),
        "Sample educational tool for learning MCP concepts",
        input,
    )
}

/// `calculate`.
fn calculate_tool() -> Tool {
    let input = schema(json!({
        "type": "object",
        "properties": {
            "a": {"type": "number", "description": "First operand"},
            "b": {"type": "number", "description": "Second operand"},
            "op": {"type": "string", "enum": BasicOp::NAMES, "description": "Operation to perform"},
            "stream": {"type": "boolean", "description": "Stream intermediate results"},
            "historyHandle": history_handle_property()
        },
        "required": ["a", "b", "op"],
        "additionalProperties": false
    }));
    Tool::new(CALCULATE, "Performs arithmetic calculations", input)
        .with_raw_output_schema(single_output_schema())
}

/// `batch_calculate`, with the batch length bounded by the live limit.
fn batch_tool(limits: &Limits) -> Tool {
    let input = schema(json!({
        "type": "object",
        "properties": {
            "calculations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "a": {"type": "number"},
                        "b": {"type": "number"},
                        "op": {"type": "string", "enum": BasicOp::NAMES}
                    },
                    "required": ["a", "b", "op"],
                    "additionalProperties": false
                },
                "maxItems": limits.batch_cap(),
                "description": "Array of calculations to perform"
            },
            "reportProgress": {"type": "boolean", "description": "Report progress during batch processing"},
            "historyHandle": history_handle_property()
        },
        "required": ["calculations"],
        "additionalProperties": false
    }));
    Tool::new(
        BATCH_CALCULATE,
        "Perform multiple calculations in batch",
        input,
    )
    .with_raw_output_schema(batch_output_schema())
}

/// `advanced_calculate`.
fn advanced_tool() -> Tool {
    let input = schema(json!({
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": AdvancedOp::NAMES, "description": "Advanced operation"},
            "value": {"type": "number", "description": "Input value"},
            "base": {"type": "number", "description": "Base for power or logarithm operations"},
            "historyHandle": history_handle_property()
        },
        "required": ["operation", "value"],
        "additionalProperties": false
    }));
    Tool::new(
        ADVANCED_CALCULATE,
        "Advanced mathematical operations",
        input,
    )
    .with_raw_output_schema(single_output_schema())
}

/// `demo_progress`, with `steps` an integer bounded by the live limit.
fn demo_progress_tool(limits: &Limits) -> Tool {
    let max = limits.steps_cap();
    let input = schema(json!({
        "type": "object",
        "properties": {
            "steps": {
                "type": "integer",
                "default": DEFAULT_STEPS.min(max),
                "minimum": 1,
                "maximum": max,
                "description": "Number of progress steps"
            }
        },
        "additionalProperties": false
    }));
    Tool::new(DEMO_PROGRESS, "Demonstrate progress notifications", input)
}

/// A successful result: the reference's text plus structured content.
fn success(text: String, structured: Option<Value>) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = structured;
    result
}

/// A tool execution error with the reference's text.
fn failure(error: OpError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.tool_text())])
}

/// A successful single calculation: the reference's text plus structured content written
/// as JSON text (no `Value` tree on the hot path).
fn single_success(text: String, calc: &Calc, recorded: &Recorded) -> ToolResult {
    let result = CallToolResult::success(vec![ContentBlock::text(text)]);
    ToolResult::with_structured_json(result, single_structured(calc, recorded))
}

/// Structured content of one recorded calculation, as JSON text. Keys are in the order a
/// `serde_json` object would print them (sorted), so the bytes match the tree it replaces.
fn single_structured(calc: &Calc, recorded: &Recorded) -> String {
    let mut s = String::with_capacity(128);
    s.push('{');
    if let Some(handle) = &recorded.handle {
        s.push_str("\"historyHandle\":");
        push_json_str(&mut s, handle);
        s.push(',');
    }
    s.push_str("\"id\":");
    match recorded.ids.first() {
        Some(id) => push_json_str(&mut s, id),
        None => s.push_str("null"),
    }
    s.push_str(",\"inputs\":[");
    for (i, x) in calc.inputs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_json_number(&mut s, *x);
    }
    s.push_str("],\"operation\":");
    push_json_str(&mut s, calc.operation);
    s.push_str(",\"result\":");
    push_json_number(&mut s, calc.result);
    // A JavaScript number spelling never needs escaping.
    s.push_str(",\"resultText\":\"");
    push_js_number(&mut s, calc.result);
    s.push_str("\"}");
    s
}

/// Adds `historyHandle` when the history lives behind a state handle.
fn add_handle(v: &mut Value, recorded: &Recorded) {
    if let (Some(handle), Some(obj)) = (&recorded.handle, v.as_object_mut()) {
        obj.insert("historyHandle".into(), Value::from(handle.clone()));
    }
}

/// Sleeps, or stops with `Cancelled` if the request is cancelled meanwhile.
async fn pause(ctx: &RequestContext, duration: Duration) -> Result<(), DomainError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(DomainError::Cancelled),
    }
}

/// The sample tool: echoes its string argument (reference: no `isError` key).
pub fn sample(arguments: &JsonObject) -> Result<CallToolResult, DomainError> {
    let args = Args::new(arguments, &["value"])?;
    let value = args.string("value")?;
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
        "test string print: {value}"
    ))]);
    result.is_error = None;
    Ok(result)
}

/// `calculate`: `a op b`, optionally streaming three progress steps when the client gave a token.
pub async fn calculate(
    arguments: &JsonObject,
    ctx: &RequestContext,
) -> Result<ToolResult, DomainError> {
    let args = Args::new(arguments, &["a", "b", "op", "stream", "historyHandle"])?;
    let a = args.number("a")?;
    let b = args.number("b")?;
    let op = args.choice("op", &BasicOp::NAMES, BasicOp::parse)?;
    let stream = args.opt_bool("stream")?.unwrap_or(false) && ctx.progress_token.is_some();
    let target = HistoryTarget::prepare(ctx, args.opt_string("historyHandle")?).await?;
    let result = match op.apply(a, b) {
        Ok(r) => r,
        Err(e) => return Ok(failure(e).into()),
    };
    if stream {
        ctx.progress(
            0.2,
            Some(1.0),
            Some(format!("Starting {op} calculation...")),
        )
        .await;
        pause(ctx, STREAM_PAUSE).await?;
        let (ja, jb) = (js_number(a), js_number(b));
        ctx.progress(0.5, Some(1.0), Some(format!("Processing: {ja} {op} {jb}")))
            .await;
        pause(ctx, STREAM_PAUSE).await?;
    }
    let calc = Calc {
        operation: op.name(),
        inputs: vec![a, b],
        result,
    };
    let recorded = target.record(ctx, std::slice::from_ref(&calc)).await?;
    if stream {
        let jr = js_number(result);
        ctx.progress(1.0, Some(1.0), Some(format!("Calculation complete: {jr}")))
            .await;
    }
    // `{a} {op} {b} = {result}`, written without the formatting machinery.
    let mut text = String::with_capacity(48);
    push_js_number(&mut text, a);
    text.push(' ');
    text.push_str(op.name());
    text.push(' ');
    push_js_number(&mut text, b);
    text.push_str(" = ");
    push_js_number(&mut text, result);
    Ok(single_success(text, &calc, &recorded))
}

/// One validated item of a batch.
struct BatchItem {
    a: f64,
    b: f64,
    op: BasicOp,
}

/// Validates the whole batch before doing any work, so a bad item fails the call cleanly.
fn parse_batch(args: &Args<'_>, max: usize) -> Result<Vec<BatchItem>, DomainError> {
    let raw = args.array("calculations")?;
    if raw.len() > max {
        let problem = format!("must contain at most {max} items, got {}", raw.len());
        return Err(args.fail("calculations", &problem));
    }
    raw.iter()
        .enumerate()
        .map(|(i, v)| parse_batch_item(i, v))
        .collect()
}

/// Validates `calculations[i]`.
fn parse_batch_item(i: usize, v: &Value) -> Result<BatchItem, DomainError> {
    let path = format!("calculations[{i}]");
    let Some(obj) = v.as_object() else {
        let problem = format!("must be an object, got {}", super::args::json_type(v));
        return Err(super::args::invalid(&path, &problem));
    };
    let item = Args::at(path, obj, &["a", "b", "op"])?;
    Ok(BatchItem {
        a: item.number("a")?,
        b: item.number("b")?,
        op: item.choice("op", &BasicOp::NAMES, BasicOp::parse)?,
    })
}

/// `batch_calculate`: every item computed, failures reported inline, successes recorded in one
/// append.
pub async fn batch(
    arguments: &JsonObject,
    ctx: &RequestContext,
    limits: &Limits,
) -> Result<ToolResult, DomainError> {
    let args = Args::new(
        arguments,
        &["calculations", "reportProgress", "historyHandle"],
    )?;
    let items = parse_batch(&args, limits.batch_cap())?;
    let report = args.opt_bool("reportProgress")?.unwrap_or(false);
    let target = HistoryTarget::prepare(ctx, args.opt_string("historyHandle")?).await?;
    let n = items.len();
    let mut outcomes = Vec::with_capacity(n);
    for (i, item) in items.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(DomainError::Cancelled);
        }
        if report {
            let message = format!(
                "Processing calculation {}/{n}: {} {} {}",
                i + 1,
                js_number(item.a),
                item.op,
                js_number(item.b)
            );
            ctx.progress((i + 1) as f64, Some(n as f64), Some(message))
                .await;
        }
        outcomes.push(item.op.apply(item.a, item.b));
    }
    let calcs: Vec<Calc> = items
        .iter()
        .zip(&outcomes)
        .filter_map(|(item, r)| {
            r.ok().map(|result| Calc {
                operation: item.op.name(),
                inputs: vec![item.a, item.b],
                result,
            })
        })
        .collect();
    let recorded = target.record(ctx, &calcs).await?;
    Ok(success(
        batch_text(&items, &outcomes),
        Some(batch_structured(&items, &outcomes, &recorded)),
    )
    .into())
}

/// `Batch calculation completed. Results:\n` and one line per item.
fn batch_text(items: &[BatchItem], outcomes: &[Result<f64, OpError>]) -> String {
    let lines: Vec<String> = items
        .iter()
        .zip(outcomes)
        .map(|(item, r)| match r {
            Ok(v) => format!(
                "{} {} {} = {}",
                js_number(item.a),
                item.op,
                js_number(item.b),
                js_number(*v)
            ),
            Err(e) => e.batch_line(),
        })
        .collect();
    format!(
        "Batch calculation completed. Results:\n{}",
        lines.join("\n")
    )
}

/// Per-item structured results; recorded ids are handed out in order to the successful items.
fn batch_structured(
    items: &[BatchItem],
    outcomes: &[Result<f64, OpError>],
    recorded: &Recorded,
) -> Value {
    let mut ids = recorded.ids.iter();
    let results: Vec<Value> = items
        .iter()
        .zip(outcomes)
        .enumerate()
        .map(|(index, (item, r))| {
            let id = r.is_ok().then(|| ids.next()).flatten();
            batch_item_structured(index, item, r, id)
        })
        .collect();
    let mut v = json!({ "results": results });
    add_handle(&mut v, recorded);
    v
}

/// Structured result of batch item `index`; `id` is its calculation id when it succeeded.
fn batch_item_structured(
    index: usize,
    item: &BatchItem,
    outcome: &Result<f64, OpError>,
    id: Option<&String>,
) -> Value {
    let inputs = [json_number(item.a), json_number(item.b)];
    let mut v = json!({"index": index, "operation": item.op.name(), "inputs": inputs});
    let fields = match outcome {
        Ok(x) => json!({"id": id, "result": json_number(*x), "resultText": js_number(*x)}),
        Err(e) => json!({"error": e.batch_reason()}),
    };
    merge(&mut v, fields);
    v
}

/// Copies the members of `extra` into `target` (both objects).
fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        t.extend(e);
    }
}

/// `advanced_calculate`: factorial, power, sqrt, log and trigonometry.
pub async fn advanced(
    arguments: &JsonObject,
    ctx: &RequestContext,
    limits: &Limits,
) -> Result<ToolResult, DomainError> {
    let args = Args::new(arguments, &["operation", "value", "base", "historyHandle"])?;
    let op = args.choice("operation", &AdvancedOp::NAMES, AdvancedOp::parse)?;
    let value = args.number("value")?;
    let base = args.opt_number("base")?;
    let target = HistoryTarget::prepare(ctx, args.opt_string("historyHandle")?).await?;
    let result = match op.apply(value, base, limits.max_factorial) {
        Ok(r) => r,
        Err(e) => return Ok(failure(e).into()),
    };
    let mut inputs = vec![value];
    inputs.extend(base);
    let calc = Calc {
        operation: op.name(),
        inputs,
        result,
    };
    let recorded = target.record(ctx, std::slice::from_ref(&calc)).await?;
    let shown_base = base
        .map(|b| format!(", {}", js_number(b)))
        .unwrap_or_default();
    let text = format!(
        "{op}({}{shown_base}) = {}",
        js_number(value),
        js_number(result)
    );
    Ok(single_success(text, &calc, &recorded))
}

/// `demo_progress`: `steps` pauses of 200 ms, each followed by progress `i` of `steps`. A
/// long-running tool, so it runs as a task for a client that declared tasks (its progress is
/// then the task's status message); otherwise inline, with progress notifications.
pub fn demo_progress(
    arguments: &JsonObject,
    limits: &Limits,
) -> Result<Outcome<CallToolResult>, DomainError> {
    let args = Args::new(arguments, &["steps"])?;
    let max = limits.steps_cap();
    let steps = args
        .opt_integer_in("steps", 1, max)?
        .unwrap_or(DEFAULT_STEPS.min(max));
    Ok(Outcome::task(TaskSupport::Optional, move |ctx| {
        progress_steps(steps, ctx)
    }))
}

async fn progress_steps(steps: u64, ctx: RequestContext) -> Result<CallToolResult, DomainError> {
    for i in 1..=steps {
        pause(&ctx, DEMO_PAUSE).await?;
        let message = format!("Step {i}/{steps} completed");
        ctx.progress(i as f64, Some(steps as f64), Some(message))
            .await;
    }
    Ok(success(
        format!("Progress demonstration completed with {steps} steps"),
        None,
    ))
}
