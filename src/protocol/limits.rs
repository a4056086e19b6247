//! Bounds on what a client sends that the server keeps or repeats. The 4 MiB body cap bounds
//! one request; these bound what one request can make the server hold or copy: a progress token
//! goes into every progress notification and stored event, a client's `initialize` description
//! lives as long as its session, and every subscription grows the session's record.

use serde_json::{Map, Value};

/// Longest `_meta.progressToken` (a string's bytes; integers always fit).
pub const MAX_PROGRESS_TOKEN_BYTES: usize = 256;
/// Longest resource URI accepted.
pub const MAX_URI_BYTES: usize = 2048;
/// Resource subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Largest `initialize` `capabilities` or `clientInfo`, as JSON text.
pub const MAX_CLIENT_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Deepest nesting of `capabilities` or `clientInfo`.
pub const MAX_CLIENT_DESCRIPTION_DEPTH: usize = 16;
/// Largest message kept in a stream's event log for resumption (a final answer past it is
/// stored as an error naming the bound; a notification past it is not stored).
pub const MAX_STORED_EVENT_BYTES: usize = 256 * 1024;
/// Streams one session keeps for resumption; past it (or past
/// [`MAX_RETAINED_STREAM_BYTES`]) the oldest finished ones are forgotten when a new one opens.
/// Streams still running are always kept.
pub const MAX_RETAINED_STREAMS: usize = 32;
/// Bytes of finished streams one session keeps for resumption.
pub const MAX_RETAINED_STREAM_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of notifications one request's stream keeps; past it further notifications are not
/// stored (the final answer always is, within [`MAX_STORED_EVENT_BYTES`]).
pub const MAX_STREAM_NOTIFICATION_BYTES: usize = 1024 * 1024;

/// `Err` with the reason when `params._meta.progressToken` is longer than allowed.
pub fn check_progress_token(params: &Map<String, Value>) -> Result<(), String> {
    let token = params.get("_meta").and_then(|m| m.get("progressToken"));
    match token {
        Some(Value::String(s)) if s.len() > MAX_PROGRESS_TOKEN_BYTES => Err(format!(
            "_meta.progressToken is {} bytes; at most {MAX_PROGRESS_TOKEN_BYTES} are accepted",
            s.len()
        )),
        _ => Ok(()),
    }
}

/// `Err` with the reason when a resource URI is longer than allowed.
pub fn check_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_BYTES {
        Err(format!(
            "uri is {} bytes; at most {MAX_URI_BYTES} are accepted",
            uri.len()
        ))
    } else {
        Ok(())
    }
}

/// `Err` with the reason when an `initialize` `capabilities` or `clientInfo` (named `what`) is
/// too large or too deeply nested to keep for the session's lifetime.
pub fn check_client_description(what: &str, value: &Value) -> Result<(), String> {
    if depth(value) > MAX_CLIENT_DESCRIPTION_DEPTH {
        return Err(format!(
            "initialize: {what} is nested deeper than {MAX_CLIENT_DESCRIPTION_DEPTH} levels"
        ));
    }
    let size = serde_json::to_string(value).map(|s| s.len()).unwrap_or(0);
    if size > MAX_CLIENT_DESCRIPTION_BYTES {
        return Err(format!(
            "initialize: {what} is {size} bytes; at most {MAX_CLIENT_DESCRIPTION_BYTES} are accepted"
        ));
    }
    Ok(())
}

/// Nesting depth of a JSON value (a scalar is 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_nesting_levels() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
    }

    #[test]
    fn bounds_accept_what_fits_and_name_what_does_not() {
        let ok = json!({"_meta": {"progressToken": "t".repeat(MAX_PROGRESS_TOKEN_BYTES)}});
        assert!(check_progress_token(ok.as_object().unwrap()).is_ok());
        let long = json!({"_meta": {"progressToken": "t".repeat(MAX_PROGRESS_TOKEN_BYTES + 1)}});
        let err = check_progress_token(long.as_object().unwrap()).unwrap_err();
        assert!(err.contains("progressToken"), "{err}");
        assert!(check_uri(&"u".repeat(MAX_URI_BYTES)).is_ok());
        assert!(check_uri(&"u".repeat(MAX_URI_BYTES + 1)).is_err());
        assert!(check_client_description("clientInfo", &json!({"name": "x"})).is_ok());
    }
}
