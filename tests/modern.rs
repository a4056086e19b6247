//! The modern era (2026-07-28): stateless requests with `_meta` and mirrored headers
//! (SEP-2243), `server/discover`, caching hints, state handles, cancellation by disconnect and
//! `subscriptions/listen`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

fn assert_modern_error(resp: &Resp, status: u16, code: i64, id: Value) -> Value {
    let body = resp.expect_error(status);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["id"], id, "{body}");
    body
}

// server/discover lists versions, capabilities, caching hints and serverInfo.
#[tokio::test]
async fn server_discover_has_the_required_fields() {
    let server = Server::start(&[]);
    let resp = server
        .mcp()
        .modern("d1", "server/discover", json!({}))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let r = resp.answer(&json!("d1"))["result"].clone();
    assert_eq!(r["resultType"], "complete", "{r}");
    let versions: Vec<&str> = r["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for v in [MODERN, "2025-11-25", "2025-06-18", "2025-03-26"] {
        assert!(versions.contains(&v), "{versions:?}");
    }
    assert!(r["capabilities"]["tools"].is_object(), "{r}");
    assert!(r["capabilities"]["resources"].is_object(), "{r}");
    assert!(r["capabilities"]["prompts"].is_object(), "{r}");
    assert!(r["ttlMs"].as_u64().is_some(), "{r}");
    assert!(
        r["cacheScope"] == "public" || r["cacheScope"] == "private",
        "{r}"
    );
    let info = &r["_meta"]["io.modelcontextprotocol/serverInfo"];
    assert!(
        info["name"].is_string() && info["version"].is_string(),
        "{r}"
    );
    assert!(resp.header("mcp-session-id").is_none());
}

// tools/list carries resultType and caching hints, and no session is minted.
#[tokio::test]
async fn tools_list_has_result_type_and_caching_hints_and_no_session() {
    let server = Server::start(&[]);
    let resp = server.mcp().modern(1, "tools/list", json!({})).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.header("mcp-session-id").is_none(),
        "{:?}",
        resp.headers
    );
    let r = resp.answer(&json!(1))["result"].clone();
    assert_eq!(r["resultType"], "complete");
    assert!(r["ttlMs"].is_u64(), "{r}");
    assert!(r["cacheScope"].is_string(), "{r}");
    let names: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "calculate",
            "batch_calculate",
            "advanced_calculate",
            "demo_progress"
        ]
    );
    assert_eq!(server.session_count().await, 0);
}

// D16: the MCP-Protocol-Version header is required in the modern era.
#[tokio::test]
async fn missing_protocol_version_header_is_400_header_mismatch() {
    let server = Server::start(&[]);
    let body = modern_request(3, "tools/list", json!({}));
    let resp = server
        .mcp()
        .modern_raw(&body, &[("MCP-Protocol-Version", "")])
        .await;
    assert_modern_error(&resp, 400, -32020, json!(3));
}

// D16: the header must equal the `_meta` version.
#[tokio::test]
async fn protocol_version_header_mismatch_is_400_header_mismatch() {
    let server = Server::start(&[]);
    let body = modern_request(4, "tools/list", json!({}));
    let resp = server
        .mcp()
        .modern_raw(&body, &[("MCP-Protocol-Version", "2025-11-25")])
        .await;
    assert_modern_error(&resp, 400, -32020, json!(4));
}

// D16: an unsupported version is -32022 with the supported list and the requested version.
#[tokio::test]
async fn unsupported_version_is_400_with_supported_and_requested() {
    let server = Server::start(&[]);
    let mut body = modern_request(5, "tools/list", json!({}));
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let resp = server.mcp().modern_raw(&body, &[]).await;
    let err = assert_modern_error(&resp, 400, -32022, json!(5));
    assert_eq!(err["error"]["data"]["requested"], "2099-01-01", "{err}");
    let supported = err["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(MODERN)), "{err}");
}

// Required `_meta` fields missing are -32602.
#[tokio::test]
async fn missing_client_capabilities_is_400_invalid_params() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let mut body = modern_request(6, "tools/list", json!({}));
    body["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    assert_modern_error(&mcp.modern_raw(&body, &[]).await, 400, -32602, json!(6));
    // Without any `_meta` but with the modern header, it is still a modern error.
    let bare = request(7, "tools/list", json!({}));
    let resp = mcp
        .post_raw(
            &[
                ("MCP-Protocol-Version", MODERN),
                ("Mcp-Method", "tools/list"),
            ],
            serde_json::to_vec(&bare).unwrap(),
        )
        .await;
    assert_modern_error(&resp, 400, -32602, json!(7));
}

// SEP-2243: Mcp-Method must be present and equal the body's method.
#[tokio::test]
async fn mcp_method_mismatch_is_400_header_mismatch() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let body = modern_request(8, "tools/list", json!({}));
    let resp = mcp
        .modern_raw(&body, &[("Mcp-Method", "prompts/list")])
        .await;
    assert_modern_error(&resp, 400, -32020, json!(8));
    let resp = mcp.modern_raw(&body, &[("Mcp-Method", "")]).await;
    assert_modern_error(&resp, 400, -32020, json!(8));
    // Surrounding whitespace is accepted.
    let resp = mcp
        .modern_raw(&body, &[("Mcp-Method", " tools/list ")])
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

// SEP-2243: Mcp-Name must equal params.name (tools/call) or params.uri (resources/read).
#[tokio::test]
async fn mcp_name_mismatch_is_400_header_mismatch() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let body = modern_request(
        9,
        "tools/call",
        tool_params("calculate", json!({"a": 1, "b": 2, "op": "add"})),
    );
    let resp = mcp
        .modern_raw(&body, &[("Mcp-Name", "demo_progress")])
        .await;
    assert_modern_error(&resp, 400, -32020, json!(9));
    let resp = mcp.modern_raw(&body, &[("Mcp-Name", "")]).await;
    assert_modern_error(&resp, 400, -32020, json!(9));
    let read = modern_request(
        10,
        "resources/read",
        json!({"uri": "calculator://constants"}),
    );
    let resp = mcp
        .modern_raw(&read, &[("Mcp-Name", "formulas://library")])
        .await;
    assert_modern_error(&resp, 400, -32020, json!(10));
    // Base64-wrapped values are decoded before comparing.
    let resp = mcp
        .modern_raw(&body, &[("Mcp-Name", "=?base64?Y2FsY3VsYXRl?=")])
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

// Methods removed in 2026-07-28 are 404 -32601 with the request id kept.
#[tokio::test]
async fn removed_methods_are_404_method_not_found_keeping_the_id() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let cases = [
        ("ping", json!({})),
        (
            "initialize",
            json!({"protocolVersion": MODERN, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}),
        ),
        ("logging/setLevel", json!({"level": "debug"})),
        ("resources/subscribe", json!({"uri": "calculator://stats"})),
        ("no/such/method", json!({})),
    ];
    for (i, (method, params)) in cases.into_iter().enumerate() {
        let id = json!(format!("r{i}"));
        let resp = mcp.modern(id.clone(), method, params).await;
        assert_modern_error(&resp, 404, -32601, id);
        assert!(resp.header("mcp-session-id").is_none(), "{method}");
    }
    assert_eq!(server.session_count().await, 0);
}

// Observed: GET and DELETE carry no `_meta`, so without a session they take the legacy path
// and get its 400 (protocol.md §4.7: in dual-era mode they belong to the legacy path).
#[tokio::test]
async fn get_and_delete_without_session_are_legacy_400s() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let resp = mcp.get(None, None).await;
    resp.expect_error(400);
    let resp = mcp.delete(None).await;
    resp.expect_error(400);
}

// Modern requests ignore Mcp-Session-Id (even an unknown one) and never echo one.
#[tokio::test]
async fn modern_requests_ignore_mcp_session_id() {
    let server = Server::start(&[]);
    let body = modern_request(11, "tools/list", json!({}));
    let resp = server
        .mcp()
        .modern_raw(
            &body,
            &[("Mcp-Session-Id", "ffffffffffffffffffffffffffffffff")],
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("mcp-session-id").is_none());
}

// A modern notification is accepted with 202; a client response is refused.
#[tokio::test]
async fn modern_notification_is_202_and_client_response_is_400() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized", "params": modern_params(json!({}))});
    let resp = mcp.modern_raw(&note, &[]).await;
    assert_eq!(resp.status, 202, "{resp:?}");
    assert!(resp.text.is_empty());
    let response = json!({"jsonrpc": "2.0", "id": 1, "result": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let resp = mcp
        .post_raw(
            &[("MCP-Protocol-Version", MODERN)],
            serde_json::to_vec(&response).unwrap(),
        )
        .await;
    assert_eq!(resp.status, 400, "{resp:?}");
}

// A missing resource is a 200 with -32602 and data.uri (never -32002 in this era).
#[tokio::test]
async fn modern_resource_not_found_is_32602_with_uri() {
    let server = Server::start(&[]);
    let resp = server
        .mcp()
        .modern(12, "resources/read", json!({"uri": "calculator://nope"}))
        .await;
    assert_eq!(resp.status, 200);
    let err = resp.answer(&json!(12));
    assert_eq!(err["error"]["code"], -32602, "{err}");
    assert_eq!(err["error"]["data"]["uri"], "calculator://nope");
}

/// A modern tools/call; returns the result.
async fn modern_call(mcp: &Mcp, id: i64, name: &str, args: Value) -> Value {
    let resp = mcp.modern(id, "tools/call", tool_params(name, args)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("mcp-session-id").is_none());
    let answer = resp.answer(&json!(id));
    answer["result"].clone()
}

// SEP-2567: calculations return a historyHandle; passing it back records into the same
// history, whose entries read back through the history template.
#[tokio::test]
async fn history_handle_accumulates_calculations() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let first = modern_call(
        &mcp,
        1,
        "calculate",
        json!({"a": 6, "b": 7, "op": "multiply"}),
    )
    .await;
    assert_eq!(first["resultType"], "complete");
    assert_eq!(first["content"][0]["text"], "6 multiply 7 = 42");
    let handle = first["structuredContent"]["historyHandle"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let id1 = first["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = modern_call(
        &mcp,
        2,
        "advanced_calculate",
        json!({"operation": "power", "value": 3, "base": 2, "historyHandle": handle}),
    )
    .await;
    assert_eq!(second["content"][0]["text"], "power(3, 2) = 8");
    assert_eq!(
        second["structuredContent"]["historyHandle"],
        handle.as_str()
    );
    let id2 = second["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (id, op) in [(&id1, "multiply"), (&id2, "power")] {
        let uri = format!("calculator://history/{id}");
        let resp = mcp.modern(3, "resources/read", json!({ "uri": uri })).await;
        let answer = resp.answer(&json!(3));
        let text = answer["result"]["contents"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        let entry: Value = serde_json::from_str(text).unwrap();
        assert_eq!(entry["id"], id.as_str());
        assert_eq!(entry["operation"], op);
    }
    // Without the handle a new history starts.
    let third = modern_call(&mcp, 4, "calculate", json!({"a": 1, "b": 1, "op": "add"})).await;
    assert_ne!(third["structuredContent"]["historyHandle"], handle.as_str());
    // An unknown handle is refused.
    let resp = mcp
        .modern(
            5,
            "tools/call",
            tool_params(
                "calculate",
                json!({"a": 1, "b": 1, "op": "add", "historyHandle": "hbogus"}),
            ),
        )
        .await;
    let answer = resp.answer(&json!(5));
    assert!(
        answer["error"].is_object() || answer["result"]["isError"] == true,
        "{answer}"
    );
}

// The modern era requires logLevel in `_meta` before sending notifications/message.
#[tokio::test]
async fn modern_logs_only_with_log_level_in_meta() {
    let server = Server::start(&[("TOOLSETS", "calculator,conformance")]);
    let mcp = server.mcp();
    let params = tool_params("test_tool_with_logging", json!({}));
    let resp = mcp.modern(1, "tools/call", params.clone()).await;
    let logs = resp
        .messages()
        .into_iter()
        .filter(|m| m["method"] == "notifications/message")
        .count();
    assert_eq!(logs, 0, "{:?}", resp.text);
    let mut body = modern_request(2, "tools/call", params);
    body["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!("debug");
    let resp = mcp.modern_raw(&body, &[]).await;
    let messages = resp.messages();
    let logs = messages
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .count();
    assert_eq!(logs, 3, "{messages:?}");
    assert_eq!(messages.last().unwrap()["id"], 2);
}

// D10: progress in the modern era streams on the request's own response.
#[tokio::test]
async fn modern_progress_streams_on_the_response() {
    let server = Server::start(&[]);
    let body = modern_request(
        1,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({"steps": 2}), json!("m")),
    );
    let resp = server.mcp().modern_raw(&body, &[]).await;
    assert_eq!(resp.content_type(), "text/event-stream");
    assert_eq!(resp.header("x-accel-buffering").as_deref(), Some("no"));
    let messages = resp.messages();
    let progress: Vec<f64> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, vec![1.0, 2.0], "{messages:?}");
    assert_eq!(messages.last().unwrap()["result"]["resultType"], "complete");
}

// Closing the SSE response of a modern call cancels the work (no notifications/cancelled in
// this era).
#[tokio::test]
async fn closing_the_response_stream_cancels_the_call() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let body = modern_request(
        1,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({"steps": 10}), json!("x")),
    );
    let mut s = mcp.modern_stream(&body).await;
    assert_eq!(s.status, 200);
    let first = s.next_message(T).await.expect("progress");
    assert_eq!(first["method"], "notifications/progress");
    drop(s);
    let cancelled = cancelled_call_recorded(&server, "demo_progress", T).await;
    assert!(cancelled, "{}", server.metrics().await);
}

fn listen_request(id: &str) -> Value {
    modern_request(
        id,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    )
}

// D9: subscriptions/listen acknowledges first, then forwards tool-list changes with the
// subscription id.
#[tokio::test]
async fn listen_acknowledges_and_forwards_tool_list_changes() {
    let server = Server::start(&[("TOOLSETS", "conformance,calculator")]);
    let mcp = server.mcp();
    let (mut s, ack) = mcp.listen(&listen_request("sub-1")).await;
    assert_eq!(s.status, 200);
    assert!(s.header("mcp-session-id").is_none());
    assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], "sub-1", "{ack}");
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"], true,
        "{ack}"
    );
    let result = modern_call(&mcp, 2, "test_trigger_tool_change", json!({})).await;
    assert!(result["content"].is_array(), "{result}");
    let note = s.next_message(T).await.expect("list_changed");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    assert_eq!(note["params"]["_meta"][SUBSCRIPTION_ID], "sub-1", "{note}");
    // Types not asked for are not sent.
    modern_call(&mcp, 3, "test_trigger_prompt_change", json!({})).await;
    let r = tokio::time::timeout(Duration::from_millis(300), s.next_message(T)).await;
    assert!(r.is_err(), "unexpected: {r:?}");
}

// D3: on SIGTERM a listen stream is answered with a complete result and closed.
#[tokio::test]
async fn listen_stream_gets_a_complete_result_on_sigterm() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "5000")]);
    let mcp = server.mcp();
    let (mut s, _) = mcp.listen(&listen_request("sub-2")).await;
    server.sigterm();
    let last = s.next_message(T).await.expect("final result");
    assert_eq!(last["id"], "sub-2", "{last}");
    assert_eq!(last["result"]["resultType"], "complete", "{last}");
    assert!(s.rest(T).await.iter().all(|e| e.json().is_none()));
    let status = server.wait_exit().await;
    assert!(status.success(), "{status:?}");
}
