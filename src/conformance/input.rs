//! Asking the client for input in either era.
//!
//! A fixture describes what it needs as a list of [`Ask`]s. In the legacy era each ask becomes a
//! server→client request on the request's own stream; in the modern era the same asks become the
//! `inputRequests` of an `InputRequiredResult` and the answers come back as `inputResponses` on
//! the retried request (SEP-2322). Keeping one description for both eras means each fixture is
//! written once and cannot drift between them.

use serde_json::{json, Value};

use crate::protocol::toolset::{DomainError, Era, JsonObject, Outcome, RequestContext};

/// One question for the client: its `inputRequests` key and the request behind it.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The key in `inputRequests`/`inputResponses`.
    pub key: &'static str,
    /// The client capability the request needs (`elicitation`, `sampling`, `roots`).
    pub capability: &'static str,
    /// The server→client method.
    pub method: &'static str,
    /// The request's params.
    pub params: Value,
}

impl Ask {
    /// A form `elicitation/create`. `mode` is left out: it defaults to `form` and does not exist
    /// in 2025-06-18, whose clients must get schema-valid requests too.
    pub fn elicit(key: &'static str, message: &str, requested_schema: Value) -> Self {
        Self {
            key,
            capability: "elicitation",
            method: "elicitation/create",
            params: json!({ "message": message, "requestedSchema": requested_schema }),
        }
    }

    /// A `sampling/createMessage` with one user text message.
    pub fn sample(key: &'static str, text: &str, max_tokens: u32) -> Self {
        Self {
            key,
            capability: "sampling",
            method: "sampling/createMessage",
            params: json!({
                "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
                "maxTokens": max_tokens
            }),
        }
    }

    /// A `roots/list`.
    pub fn roots(key: &'static str) -> Self {
        Self {
            key,
            capability: "roots",
            method: "roots/list",
            params: json!({}),
        }
    }

    /// The request object as it appears inside `inputRequests`.
    fn request_object(&self) -> Value {
        json!({ "method": self.method, "params": self.params })
    }
}

/// The result of asking: every answer, or what still has to be asked.
#[derive(Debug, Clone)]
pub enum Gathered {
    /// An answer for every ask, keyed by [`Ask::key`].
    Answers(JsonObject),
    /// Modern era: the requests still unanswered and the sealed state to echo.
    Pending {
        input_requests: JsonObject,
        request_state: Option<String>,
    },
}

impl Gathered {
    /// Converts a pending gathering into the `InputRequiredResult` outcome of any request type.
    pub fn pending<T>(input_requests: JsonObject, request_state: Option<String>) -> Outcome<T> {
        Outcome::InputRequired {
            input_requests: Some(input_requests),
            request_state,
        }
    }
}

/// The capabilities the asks need but the client did not declare, as a `ClientCapabilities`
/// object (`{"sampling":{}}`), or `None` when everything needed was declared.
pub fn missing_capabilities(ctx: &RequestContext, asks: &[Ask]) -> Option<Value> {
    let mut missing = JsonObject::new();
    for ask in asks.iter().filter(|a| !ctx.client_supports(a.capability)) {
        missing.insert(ask.capability.to_owned(), json!({}));
    }
    (!missing.is_empty()).then_some(Value::Object(missing))
}

/// Asks the client for everything in `asks`. `state` is sealed into `requestState` when the
/// modern era needs another round; the legacy era asks on the stream and never needs one.
pub async fn gather(
    ctx: &RequestContext,
    asks: &[Ask],
    state: Option<&Value>,
) -> Result<Gathered, DomainError> {
    if let Some(missing) = missing_capabilities(ctx, asks) {
        return Err(DomainError::MissingCapability(missing));
    }
    match ctx.era {
        Era::Legacy => ask_on_stream(ctx, asks).await.map(Gathered::Answers),
        Era::Modern => collect_responses(ctx, asks, state),
    }
}

/// Legacy era: one server→client request per ask, in order.
async fn ask_on_stream(ctx: &RequestContext, asks: &[Ask]) -> Result<JsonObject, DomainError> {
    let mut answers = JsonObject::new();
    for ask in asks {
        let answer = ctx.request_client(ask.method, ask.params.clone()).await?;
        answers.insert(ask.key.to_owned(), answer);
    }
    Ok(answers)
}

/// Modern era: takes the answers the retry carried and re-asks only what is missing. Keys the
/// fixture did not ask for are ignored (SEP-2322: unknown keys are not an error).
fn collect_responses(
    ctx: &RequestContext,
    asks: &[Ask],
    state: Option<&Value>,
) -> Result<Gathered, DomainError> {
    let responses = ctx.input_responses.as_ref();
    let mut answers = JsonObject::new();
    let mut unanswered = JsonObject::new();
    for ask in asks {
        match responses.and_then(|r| r.get(ask.key)) {
            Some(answer) => answers.insert(ask.key.to_owned(), answer.clone()),
            None => unanswered.insert(ask.key.to_owned(), ask.request_object()),
        };
    }
    if unanswered.is_empty() {
        return Ok(Gathered::Answers(answers));
    }
    let request_state = state.map(|s| ctx.seal_request_state(s)).transpose()?;
    Ok(Gathered::Pending {
        input_requests: unanswered,
        request_state,
    })
}

/// Opens the echoed `requestState` and checks it was minted for `fixture`. The sealing service
/// already binds method and name; the extra check keeps a state from one fixture from being
/// replayed against another even if that binding is ever loosened.
pub async fn open_state(
    ctx: &RequestContext,
    fixture: &str,
) -> Result<Option<JsonObject>, DomainError> {
    let Some(state) = ctx.open_request_state().await? else {
        return Ok(None);
    };
    match state {
        Value::Object(map) if map.get("fixture").and_then(Value::as_str) == Some(fixture) => {
            Ok(Some(map))
        }
        _ => Err(invalid("requestState was not issued for this request")),
    }
}

/// A state payload for `fixture` with extra fields.
pub fn state_for(fixture: &str, extra: Value) -> Value {
    let mut state = JsonObject::new();
    state.insert("fixture".into(), fixture.into());
    if let Value::Object(fields) = extra {
        state.extend(fields);
    }
    Value::Object(state)
}

/// An `InvalidParams` error with a message only.
pub fn invalid(message: &str) -> DomainError {
    DomainError::InvalidParams {
        message: message.to_owned(),
        data: None,
    }
}

/// The error for an `inputResponses` entry that is not the result type its request expects.
fn malformed(key: &str, expected: &str) -> DomainError {
    DomainError::InvalidParams {
        message: format!("inputResponses.{key} is not a valid {expected}"),
        data: Some(json!({ "inputResponse": key })),
    }
}

/// An `ElicitResult`: the user's action and, for `accept`, the form content.
#[derive(Debug, Clone, PartialEq)]
pub struct Elicited {
    /// `accept`, `decline` or `cancel`.
    pub action: String,
    /// The submitted form (empty unless accepted).
    pub content: JsonObject,
}

impl Elicited {
    /// A string field of the submitted form, if the user accepted and filled it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.content.get(name).and_then(Value::as_str)
    }

    /// The form content as compact JSON, for result texts.
    pub fn content_json(&self) -> String {
        Value::Object(self.content.clone()).to_string()
    }
}

/// Parses the answer under `key` as an `ElicitResult`.
pub fn elicited(answers: &JsonObject, key: &str) -> Result<Elicited, DomainError> {
    let answer = answers.get(key).and_then(Value::as_object);
    let action = answer
        .and_then(|a| a.get("action"))
        .and_then(Value::as_str)
        .filter(|a| matches!(*a, "accept" | "decline" | "cancel"))
        .ok_or_else(|| malformed(key, "ElicitResult"))?;
    let content = match answer.and_then(|a| a.get("content")) {
        None | Some(Value::Null) => JsonObject::new(),
        Some(Value::Object(content)) => content.clone(),
        Some(_) => return Err(malformed(key, "ElicitResult")),
    };
    Ok(Elicited {
        action: action.to_owned(),
        content,
    })
}

/// Parses the answer under `key` as a `CreateMessageResult` and returns its first text.
/// `content` may be one block or (SEP-1577) an array of blocks.
pub fn sampled_text(answers: &JsonObject, key: &str) -> Result<String, DomainError> {
    let content = answers
        .get(key)
        .and_then(Value::as_object)
        .and_then(|a| a.get("content"))
        .ok_or_else(|| malformed(key, "CreateMessageResult"))?;
    let text_of = |block: &Value| block.get("text").and_then(Value::as_str).map(str::to_owned);
    let text = match content {
        Value::Array(blocks) => blocks.iter().find_map(text_of),
        block => text_of(block),
    };
    Ok(text.unwrap_or_default())
}

/// Parses the answer under `key` as a `ListRootsResult` and returns the root URIs.
pub fn root_uris(answers: &JsonObject, key: &str) -> Result<Vec<String>, DomainError> {
    let roots = answers
        .get(key)
        .and_then(Value::as_object)
        .and_then(|a| a.get("roots"))
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(key, "ListRootsResult"))?;
    roots
        .iter()
        .map(|root| root.get("uri").and_then(Value::as_str).map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| malformed(key, "ListRootsResult"))
}
