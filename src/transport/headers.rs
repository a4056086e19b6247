//! Request headers of the MCP endpoint: reading them safely, and the modern era's rule that
//! `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` mirror the body (SEP-2243).

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{Map, Value};

use crate::protocol::error::ProtocolError;

/// `Mcp-Session-Id`.
pub const SESSION_ID: &str = "mcp-session-id";
/// `MCP-Protocol-Version`.
pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// `Last-Event-ID`.
pub const LAST_EVENT_ID: &str = "last-event-id";
/// `Mcp-Method`.
pub const MCP_METHOD: &str = "mcp-method";
/// `Mcp-Name`.
pub const MCP_NAME: &str = "mcp-name";

/// A header's value as trimmed text; `Err` if present but not visible ASCII/UTF-8.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| format!("{name} header is not valid text")),
    }
}

/// A header value whose `=?base64?…?=` wrapper does not hold valid Base64 of UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEncoding;

/// Decodes the `=?base64?…?=` wrapper used for non-ASCII values; other values are literal.
pub fn decode_value(raw: &str) -> Result<String, BadEncoding> {
    let raw = raw.trim();
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| BadEncoding)?;
            String::from_utf8(bytes).map_err(|_| BadEncoding)
        }
        None => Ok(raw.to_owned()),
    }
}

fn mismatch(msg: String) -> ProtocolError {
    ProtocolError::HeaderMismatch(msg)
}

/// Reads a mirrored header: it must be present, decodable and equal to `expected`.
fn expect_header(headers: &HeaderMap, name: &str, expected: &str) -> Result<(), ProtocolError> {
    let raw = text(headers, name)
        .map_err(mismatch)?
        .ok_or_else(|| mismatch(format!("{name} header is required")))?;
    let value =
        decode_value(raw).map_err(|_| mismatch(format!("{name} header has invalid Base64")))?;
    if value != expected {
        return Err(mismatch(format!(
            "{name} header {value:?} does not match the request body {expected:?}"
        )));
    }
    Ok(())
}

/// Checks that `MCP-Protocol-Version` equals the `_meta` version.
pub fn check_version(headers: &HeaderMap, version: &str) -> Result<(), ProtocolError> {
    expect_header(headers, PROTOCOL_VERSION, version)
}

/// Checks `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` against the body.
pub fn check_modern(
    headers: &HeaderMap,
    method: &str,
    params: &Map<String, Value>,
    tool_schema: Option<&Value>,
) -> Result<(), ProtocolError> {
    expect_header(headers, MCP_METHOD, method)?;
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    if let Some(key) = name_key {
        if let Some(name) = params.get(key).and_then(Value::as_str) {
            expect_header(headers, MCP_NAME, name)?;
        }
    }
    if let Some(schema) = tool_schema {
        check_params(headers, params, schema)?;
    }
    Ok(())
}

/// `Mcp-Param-{Name}` headers for tool arguments annotated with `x-mcp-header`.
fn check_params(
    headers: &HeaderMap,
    params: &Map<String, Value>,
    schema: &Value,
) -> Result<(), ProtocolError> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    let args = params.get("arguments").and_then(Value::as_object);
    for (prop, def) in props {
        let Some(header) = def.get("x-mcp-header").and_then(Value::as_str) else {
            continue;
        };
        let name = format!("mcp-param-{}", header.to_ascii_lowercase());
        let value = args.and_then(|a| a.get(prop)).filter(|v| !v.is_null());
        let raw = text(headers, &name).map_err(mismatch)?;
        match (value, raw) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(mismatch(format!(
                    "Mcp-Param-{header} header is required when {prop} is set"
                )))
            }
            (Some(v), Some(raw)) => {
                let decoded = decode_value(raw).map_err(|_| {
                    mismatch(format!("Mcp-Param-{header} header has invalid Base64"))
                })?;
                if !param_matches(v, &decoded) {
                    return Err(mismatch(format!(
                        "Mcp-Param-{header} header does not match argument {prop}"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn param_matches(v: &Value, header: &str) -> bool {
    match v {
        Value::String(s) => s == header,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => match (n.as_f64(), header.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn base64_sentinel_is_decoded_and_validated() {
        assert_eq!(decode_value("=?base64?aMOpbGxv?=").unwrap(), "héllo");
        assert_eq!(decode_value("  plain ").unwrap(), "plain");
        assert!(decode_value("=?base64?***?=").is_err());
    }

    #[test]
    fn mirrored_headers_must_match() {
        let params = json!({"name": "calc", "arguments": {"region": "eu", "n": 42}});
        let params = params.as_object().unwrap();
        let schema = json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "n": {"type":"integer","x-mcp-header":"N"}}});
        let ok = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", " tools/call "),
            ("mcp-name", "calc"),
            ("mcp-param-region", "eu"),
            ("mcp-param-n", "42.0"),
        ]);
        assert!(check_modern(&ok, "tools/call", params, Some(&schema)).is_ok());
        let wrong = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        assert!(check_modern(&wrong, "tools/call", params, None).is_err());
        let missing_param = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "calc"),
        ]);
        assert!(check_modern(&missing_param, "tools/call", params, Some(&schema)).is_err());
        let case = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "TOOLS/CALL"),
        ]);
        assert!(check_modern(&case, "tools/call", params, None).is_err());
    }
}
