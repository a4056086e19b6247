//! JSON-RPC 2.0 envelopes: classifying an incoming message and building outgoing ones.
//! Everything from the network is untrusted, so every shape is checked before use.

use serde_json::{json, Map, Value};

use super::error::ProtocolError;

/// A JSON-RPC request id: a string or an integer, never null (`basic/index.mdx`).
pub type RequestId = Value;

/// One incoming JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A request expecting a response.
    Request {
        id: RequestId,
        method: String,
        params: Map<String, Value>,
    },
    /// A notification (no id).
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// A response to a server→client request: `Ok(result)` or `Err(error object)`.
    Response {
        id: RequestId,
        outcome: Result<Value, Value>,
    },
}

impl Incoming {
    /// The method name for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Incoming::Request { method, .. } | Incoming::Notification { method, .. } => {
                Some(method)
            }
            Incoming::Response { .. } => None,
        }
    }

    /// The request's `params`, or an empty map.
    pub fn params(&self) -> Option<&Map<String, Value>> {
        match self {
            Incoming::Request { params, .. } | Incoming::Notification { params, .. } => {
                Some(params)
            }
            Incoming::Response { .. } => None,
        }
    }

    /// The request id, if any.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Incoming::Request { id, .. } | Incoming::Response { id, .. } => Some(id),
            Incoming::Notification { .. } => None,
        }
    }
}

/// True for ids the spec allows: strings and integers.
pub fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// Classifies one JSON value as a JSON-RPC message. The id of a malformed request is returned
/// with the error when it could be read, so that the error response can carry it.
pub fn classify(value: Value) -> Result<Incoming, (ProtocolError, Option<RequestId>)> {
    let Value::Object(mut obj) = value else {
        return Err((invalid("message must be a JSON object"), None));
    };
    let id = obj.remove("id");
    let readable_id = id.clone().filter(valid_id);
    let bad = |msg: &str| Err((invalid(msg), readable_id.clone()));
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return bad("jsonrpc must be \"2.0\"");
    }
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return bad("params must be an object"),
    };
    match obj.remove("method") {
        Some(Value::String(method)) => match id {
            None => Ok(Incoming::Notification { method, params }),
            Some(id) if valid_id(&id) => Ok(Incoming::Request { id, method, params }),
            Some(_) => bad("id must be a string or an integer"),
        },
        Some(_) => bad("method must be a string"),
        None => {
            let Some(id) = id.filter(valid_id) else {
                return bad("a response needs a string or integer id");
            };
            let outcome = match (obj.remove("result"), obj.remove("error")) {
                (Some(r), None) => Ok(r),
                (None, Some(e)) if e.is_object() => Err(e),
                _ => return bad("a response needs exactly one of result or error"),
            };
            Ok(Incoming::Response { id, outcome })
        }
    }
}

fn invalid(msg: &str) -> ProtocolError {
    ProtocolError::InvalidRequest(msg.to_owned())
}

/// A success response.
pub fn response(id: &RequestId, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// A success response around an already-serialized result (JSON text), as text (no `Value`
/// tree, one allocation).
pub fn response_text(id: &RequestId, result: &str) -> String {
    let mut s = String::with_capacity(result.len() + 64);
    s.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    push_id(&mut s, id);
    s.push_str(",\"result\":");
    s.push_str(result);
    s.push('}');
    s
}

/// Appends a request id's JSON text (as `serde_json` writes it; ids are strings or integers).
fn push_id(out: &mut String, id: &RequestId) {
    match id {
        Value::String(text) => push_json_str(out, text),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.push_str(itoa::Buffer::new().format(i)),
            (None, Some(u)) => out.push_str(itoa::Buffer::new().format(u)),
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&serde_json::to_string(other).unwrap_or_else(|_| "null".into())),
    }
}

/// Appends `text` as a JSON string literal, escaped exactly as `serde_json` escapes it.
///
/// Why: hot-path responses are written by hand; ids, names and numbers need no escaping, so
/// the common case is two quotes and a copy.
pub fn push_json_str(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// An error response; `id` is null when the request's id could not be read.
pub fn error_response(
    id: Option<&RequestId>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error })
}

/// A notification.
pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// A server→client request.
pub fn request(id: &RequestId, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_all_three_kinds() {
        let r = classify(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert!(matches!(r, Incoming::Request { .. }));
        let n = classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert!(matches!(n, Incoming::Notification { .. }));
        let resp = classify(json!({"jsonrpc":"2.0","id":"s1","result":{}})).unwrap();
        assert!(matches!(resp, Incoming::Response { outcome: Ok(_), .. }));
    }

    #[test]
    fn response_text_matches_serde_json() {
        for id in [
            json!(7),
            json!(-3),
            json!(u64::MAX),
            json!("a\"b"),
            json!("s-1"),
        ] {
            let text = response_text(&id, "{\"x\":[1]}");
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap(),
                json!({"jsonrpc": "2.0", "id": id, "result": {"x": [1]}})
            );
            let want_id = serde_json::to_string(&id).unwrap();
            assert!(text.contains(&format!("\"id\":{want_id},")), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_messages_keeping_a_readable_id() {
        for bad in [
            json!([1]),
            json!("x"),
            json!({"id":1,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":null,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":1.5,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":1,"method":3}),
            json!({"jsonrpc":"2.0","id":1,"method":"x","params":[1]}),
            json!({"jsonrpc":"2.0","id":1}),
            json!({"jsonrpc":"2.0","id":1,"result":1,"error":{}}),
        ] {
            assert!(classify(bad.clone()).is_err(), "{bad}");
        }
        let (_, id) = classify(json!({"jsonrpc":"2.0","id":7,"method":3})).unwrap_err();
        assert_eq!(id, Some(json!(7)));
    }
}
