//! Legacy session lifecycle and per-session state: ids, deletion, expiry, the health and metrics
//! counters, atomic updates under concurrency and the history resources.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

// Session ids are 32 lowercase hex digits (128 random bits), visible ASCII as the spec asks.
#[tokio::test]
async fn initialize_mints_a_32_hex_session_id() {
    let server = Server::start(&[]);
    let sid = server.mcp().initialize().await;
    assert_eq!(sid.len(), 32, "{sid}");
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{sid}"
    );
}

// Every initialize mints a new id.
#[tokio::test]
async fn session_ids_are_not_reused() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let mut seen = HashSet::new();
    for _ in 0..25 {
        let sid = mcp.initialize_only(LEGACY).await;
        assert!(seen.insert(sid.clone()), "id {sid} minted twice");
        if seen.len() % 5 == 0 {
            assert_eq!(mcp.delete(Some(&sid)).await.status, 204);
        }
    }
    // Ids of deleted sessions are not handed out again either.
    let sid = mcp.initialize_only(LEGACY).await;
    assert!(!seen.contains(&sid));
}

// DELETE answers 204 with an empty body; the session is 404 afterwards.
#[tokio::test]
async fn delete_returns_204_and_later_requests_are_404() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let del = mcp.delete(Some(&sid)).await;
    assert!(del.status == 204 || del.status == 200, "{del:?}");
    assert!(del.text.is_empty(), "{:?}", del.text);
    let resp = mcp.post(Some(&sid), &request(1, "ping", json!({}))).await;
    resp.expect_error(404);
}

// D13: /health `sessions` follows creation and deletion and never goes negative.
#[tokio::test]
async fn health_session_count_goes_up_and_down_and_never_negative() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    assert_eq!(server.session_count().await, 0);
    let a = mcp.initialize().await;
    let b = mcp.initialize().await;
    assert_eq!(server.session_count().await, 2);
    assert_eq!(mcp.delete(Some(&a)).await.status, 204);
    assert_eq!(server.session_count().await, 1);
    // Deleting twice, or an unknown id, changes nothing.
    assert_eq!(mcp.delete(Some(&a)).await.status, 404);
    assert_eq!(
        mcp.delete(Some("ffffffffffffffffffffffffffffffff"))
            .await
            .status,
        404
    );
    assert_eq!(server.session_count().await, 1);
    assert_eq!(mcp.delete(Some(&b)).await.status, 204);
    assert_eq!(mcp.delete(Some(&b)).await.status, 404);
    assert_eq!(server.session_count().await, 0);
    let h = server.health().await;
    assert_eq!(h["storageMode"], "in-memory", "{h}");
    let m = server.metrics().await;
    assert_eq!(metric(&m, "mcp_active_sessions", &[]), 0.0, "{m}");
}

// D13: the metrics endpoint exposes session, request, latency and calculation series.
#[tokio::test]
async fn metrics_expose_sessions_requests_durations_and_calculations() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let a = mcp.initialize().await;
    let b = mcp.initialize().await;
    let answer = mcp
        .call_tool(&a, "calculate", json!({"a": 2, "b": 3, "op": "add"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "2 add 3 = 5");
    assert_eq!(mcp.delete(Some(&b)).await.status, 204);
    let m = server.metrics().await;
    for name in [
        "mcp_active_sessions",
        "mcp_sessions_created_total",
        "mcp_sessions_deleted_total",
        "mcp_sessions_expired_total",
        "mcp_requests_total",
        "mcp_calculations_total",
    ] {
        assert!(has_metric(&m, name), "{name} missing in\n{m}");
    }
    assert!(
        m.contains("mcp_server_operation_duration_seconds"),
        "duration histogram missing in\n{m}"
    );
    assert_eq!(metric(&m, "mcp_active_sessions", &[]), 1.0);
    assert_eq!(metric(&m, "mcp_sessions_created_total", &[]), 2.0);
    assert_eq!(metric(&m, "mcp_sessions_deleted_total", &[]), 1.0);
    assert_eq!(metric(&m, "mcp_sessions_expired_total", &[]), 0.0);
    assert_eq!(
        metric(&m, "mcp_calculations_total", &[("operation", "add")]),
        1.0,
        "{m}"
    );
    assert!(metric(&m, "mcp_requests_total", &[]) >= 5.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "mcp_server_operation_duration_seconds_count",
            &[("mcp_method_name", "tools/call")]
        ),
        1.0,
        "{m}"
    );
}

// A tool call answered with `isError: true` counts as failed in the operation histogram, with
// `error_type="tool_error"` (OTel MCP semantic conventions), not as a success.
#[tokio::test]
async fn tool_errors_are_counted_as_tool_error() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let answer = mcp
        .call_tool(&sid, "calculate", json!({"a": 1, "b": 0, "op": "divide"}))
        .await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let ok = mcp
        .call_tool(&sid, "calculate", json!({"a": 1, "b": 2, "op": "add"}))
        .await;
    assert_eq!(ok["result"]["isError"], false, "{ok}");
    let m = server.metrics().await;
    let count = |error_type: &str| {
        metric(
            &m,
            "mcp_server_operation_duration_seconds_count",
            &[
                ("mcp_method_name", "tools/call"),
                ("gen_ai_tool_name", "calculate"),
                ("error_type", error_type),
            ],
        )
    };
    assert_eq!(count("tool_error"), 1.0, "{m}");
    assert_eq!(count(""), 1.0, "{m}");
}

// D6: a rejected initialize (406, 403, 415) leaves no session behind.
#[tokio::test]
async fn rejected_initialize_creates_no_session() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let init = serde_json::to_vec(&initialize_request(LEGACY)).unwrap();
    let rejected = [
        (vec![("Accept", "application/json")], 406),
        (vec![("Host", "evil.example")], 403),
        (vec![("Origin", "http://evil.example")], 403),
        (vec![("Content-Type", "text/plain")], 415),
    ];
    for (headers, status) in rejected {
        let resp = mcp.post_raw(&headers, init.clone()).await;
        assert_eq!(resp.status, status, "{headers:?}");
        assert!(resp.header("mcp-session-id").is_none(), "{headers:?}");
    }
    // An initialize with bad params is rejected without a session too.
    let bad = request(0, "initialize", json!({"capabilities": {}}));
    let resp = mcp.post(None, &bad).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.header("mcp-session-id").is_none());
    assert_eq!(server.session_count().await, 0);
    let m = server.metrics().await;
    assert_eq!(metric(&m, "mcp_sessions_created_total", &[]), 0.0, "{m}");
}

/// The calculation count of the stats resource.
async fn total_calculations(mcp: &Mcp, sid: &str) -> u64 {
    let stats = mcp.read_json(sid, "calculator://stats").await;
    stats["totalCalculations"]
        .as_u64()
        .unwrap_or_else(|| panic!("totalCalculations missing: {stats}"))
}

// D5: 20 concurrent calculations on one session are all recorded, and every request counted.
#[tokio::test]
async fn concurrent_calculations_are_all_recorded() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await; // requestCount 1 (initialize) + 1 (initialized)
    let calls = (0..20).map(|i| {
        let mcp = mcp.clone();
        let sid = sid.clone();
        tokio::spawn(async move {
            mcp.call_tool(&sid, "calculate", json!({"a": i, "b": 1, "op": "add"}))
                .await
        })
    });
    for answer in futures::future::join_all(calls).await {
        let answer = answer.unwrap();
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    assert_eq!(total_calculations(&mcp, &sid).await, 20); // +1 request
    let info = mcp.read_json(&sid, &format!("session://info/{sid}")).await; // +1 request
    assert_eq!(info["sessionId"], sid.as_str());
    assert_eq!(info["calculationCount"], 20, "{info}");
    assert_eq!(info["requestCount"], 2 + 20 + 2, "{info}");
    let stats = mcp.read_json(&sid, "calculator://stats").await;
    assert_eq!(
        stats["operationBreakdown"],
        json!([{"operation": "add", "count": 20}]),
        "{stats}"
    );
    let m = server.metrics().await;
    assert_eq!(
        metric(&m, "mcp_calculations_total", &[("operation", "add")]),
        20.0
    );
}

// The history keeps the newest 50 calculations; older ids are no longer readable.
#[tokio::test]
async fn history_is_capped_at_50() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let calculations: Vec<Value> = (0..60)
        .map(|i| json!({"a": i, "b": 2, "op": "multiply"}))
        .collect();
    let answer = mcp
        .call_tool(
            &sid,
            "batch_calculate",
            json!({ "calculations": calculations }),
        )
        .await;
    let results = answer["result"]["structuredContent"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .clone();
    assert_eq!(results.len(), 60);
    let info = mcp.read_json(&sid, &format!("session://info/{sid}")).await;
    assert_eq!(info["calculationCount"], 50, "{info}");
    assert_eq!(total_calculations(&mcp, &sid).await, 60);
    let oldest = results[0]["id"].as_str().unwrap();
    let kept = results[10]["id"].as_str().unwrap();
    let newest = results[59]["id"].as_str().unwrap();
    let resp = mcp
        .post(
            Some(&sid),
            &request(
                1,
                "resources/read",
                json!({"uri": format!("calculator://history/{oldest}")}),
            ),
        )
        .await;
    assert!(
        resp.answer(&json!(1))["error"].is_object(),
        "{:?}",
        resp.text
    );
    for id in [kept, newest] {
        let entry = mcp
            .read_json(&sid, &format!("calculator://history/{id}"))
            .await;
        assert_eq!(entry["id"], id);
    }
    // Ten more single calculations keep the cap.
    for i in 0..10 {
        mcp.call_tool(&sid, "calculate", json!({"a": i, "b": 1, "op": "subtract"}))
            .await;
    }
    let info = mcp.read_json(&sid, &format!("session://info/{sid}")).await;
    assert_eq!(info["calculationCount"], 50, "{info}");
}

// D9: calculator://history/{calculationId} is a real template; ids come back in results and only
// the owning session can read them.
#[tokio::test]
async fn history_template_reads_own_calculation_and_not_another_sessions() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let a = mcp.initialize().await;
    let b = mcp.initialize().await;
    let templates = mcp.rpc(&a, 1, "resources/templates/list", json!({})).await;
    let listed = templates["result"]["resourceTemplates"].to_string();
    assert!(
        listed.contains("calculator://history/{calculationId}"),
        "{listed}"
    );
    let answer = mcp
        .call_tool(
            &a,
            "calculate",
            json!({"a": 7.5, "b": 10, "op": "subtract"}),
        )
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "7.5 subtract 10 = -2.5"
    );
    let id = answer["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned();
    let uri = format!("calculator://history/{id}");
    let entry = mcp.read_json(&a, &uri).await;
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["operation"], "subtract");
    assert_eq!(entry["inputs"], json!([7.5, 10]));
    assert_eq!(entry["result"], json!(-2.5));
    let resp = mcp
        .post(
            Some(&b),
            &request(2, "resources/read", json!({ "uri": uri })),
        )
        .await;
    assert_eq!(resp.status, 200);
    let err = resp.answer(&json!(2));
    assert_eq!(err["error"]["code"], -32002, "{err}");
    assert_eq!(err["error"]["data"]["uri"], uri.as_str(), "{err}");
    // Session info of another session is not readable either.
    let resp = mcp
        .post(
            Some(&b),
            &request(
                3,
                "resources/read",
                json!({"uri": format!("session://info/{a}")}),
            ),
        )
        .await;
    assert!(
        resp.answer(&json!(3))["error"].is_object(),
        "{:?}",
        resp.text
    );
}

// D7: an expired session is 404 on GET and DELETE too, and counted as expired.
#[tokio::test]
async fn expired_session_is_404_on_get_and_counted() {
    let server = Server::start(&[("SESSION_TIMEOUT", "1000")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    tokio::time::sleep(Duration::from_millis(1400)).await;
    mcp.get(Some(&sid), None).await.expect_error(404);
    mcp.delete(Some(&sid)).await.expect_error(404);
    let m = server.metrics().await;
    assert_eq!(metric(&m, "mcp_sessions_expired_total", &[]), 1.0, "{m}");
    assert_eq!(metric(&m, "mcp_sessions_deleted_total", &[]), 0.0, "{m}");
    assert_eq!(server.session_count().await, 0);
}

// Activity slides the idle timeout: a session used every 400 ms outlives SESSION_TIMEOUT.
#[tokio::test]
async fn activity_keeps_a_session_alive() {
    let server = Server::start(&[("SESSION_TIMEOUT", "1000")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let resp = mcp.post(Some(&sid), &request(i, "ping", json!({}))).await;
        assert_eq!(resp.status, 200, "ping {i}");
    }
}

// The session's negotiated version is echoed; unknown requested versions fall back to the
// newest legacy version.
#[tokio::test]
async fn version_negotiation_echoes_supported_and_falls_back() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    for v in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        mcp.initialize_version(v).await;
    }
    let resp = mcp.post(None, &initialize_request("1.0.0")).await;
    assert_eq!(resp.single_answer()["result"]["protocolVersion"], LEGACY);
}
