//! The bad-input matrix: every status code `/mcp` can answer with for a malformed, unauthorised
//! or out-of-order request, each with a JSON-RPC error body and `Content-Type:
//! application/json`, and none of it able to crash the process (D1).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn tools_list(id: i64) -> Value {
    request(id, "tools/list", json!({}))
}

// ---- 400 / 404: session header -------------------------------------------------------------

// D1: a non-initialize POST without Mcp-Session-Id is a 400, not a crash.
#[tokio::test]
async fn post_without_session_id_is_400_with_json_rpc_error() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let resp = mcp.post(None, &tools_list(7)).await;
    let body = resp.expect_error(400);
    assert_eq!(body["error"]["code"], -32000, "{body}");
    // The request id could be read, so it is kept (protocol.md §5); a notification has none.
    assert!(body["id"] == json!(7) || body["id"].is_null(), "{body}");
    let resp = mcp
        .post(None, &notification("notifications/initialized", json!({})))
        .await;
    let body = resp.expect_error(400);
    assert!(body["id"].is_null(), "{body}");
    server.assert_alive().await;
}

// D1: GET without Mcp-Session-Id is a 400 with id null.
#[tokio::test]
async fn get_without_session_id_is_400() {
    let mut server = Server::start(&[]);
    let resp = server.mcp().get(None, None).await;
    let body = resp.expect_error(400);
    assert!(body["id"].is_null(), "{body}");
    server.assert_alive().await;
}

// D1: DELETE without Mcp-Session-Id is a 400 with id null.
#[tokio::test]
async fn delete_without_session_id_is_400() {
    let mut server = Server::start(&[]);
    let resp = server.mcp().delete(None).await;
    let body = resp.expect_error(400);
    assert!(body["id"].is_null(), "{body}");
    server.assert_alive().await;
}

// D1: an unknown session id is a 404 on POST, GET and DELETE.
#[tokio::test]
async fn unknown_session_id_is_404_on_post_get_and_delete() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let unknown = "0123456789abcdef0123456789abcdef";
    let body = mcp
        .post(Some(unknown), &tools_list(1))
        .await
        .expect_error(404);
    assert_eq!(body["error"]["code"], -32001, "{body}");
    let body = mcp.get(Some(unknown), None).await.expect_error(404);
    assert!(body["id"].is_null(), "{body}");
    let body = mcp.delete(Some(unknown)).await.expect_error(404);
    assert!(body["id"].is_null(), "{body}");
    server.assert_alive().await;
}

// D1, D7: a deleted session is 404 everywhere afterwards.
#[tokio::test]
async fn deleted_session_is_404_afterwards() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let del = mcp.delete(Some(&sid)).await;
    assert!(del.status == 204 || del.status == 200, "{del:?}");
    mcp.post(Some(&sid), &tools_list(2)).await.expect_error(404);
    mcp.get(Some(&sid), None).await.expect_error(404);
    mcp.delete(Some(&sid)).await.expect_error(404);
    server.assert_alive().await;
}

// D7: an idle-expired session is 404 and stays 404: a request does not revive it.
#[tokio::test]
async fn expired_session_is_404_and_is_not_revived() {
    let mut server = Server::start(&[("SESSION_TIMEOUT", "1000")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    assert_eq!(mcp.post(Some(&sid), &tools_list(1)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mcp.post(Some(&sid), &tools_list(2)).await.expect_error(404);
    // Even right after a request touched it, it stays gone.
    mcp.post(Some(&sid), &tools_list(3)).await.expect_error(404);
    mcp.get(Some(&sid), None).await.expect_error(404);
    server.assert_alive().await;
}

// ---- 400: protocol version header (D16) ----------------------------------------------------

// D16: MCP-Protocol-Version must equal the negotiated version.
#[tokio::test]
async fn protocol_version_header_other_than_negotiated_is_400() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_version("2025-11-25").await;
    let resp = mcp
        .post_with(
            Some(&sid),
            &[("MCP-Protocol-Version", "2025-06-18")],
            &tools_list(1),
        )
        .await;
    resp.expect_error(400);
    let resp = mcp
        .post_with(
            Some(&sid),
            &[("MCP-Protocol-Version", "2025-11-25")],
            &tools_list(2),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

// D16: an unsupported MCP-Protocol-Version is a 400 (the reference accepted 2024-11-05).
#[tokio::test]
async fn unsupported_protocol_version_header_is_400() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_version("2025-06-18").await;
    for bad in ["2024-11-05", "1999-01-01", "banana"] {
        let resp = mcp
            .post_with(Some(&sid), &[("MCP-Protocol-Version", bad)], &tools_list(1))
            .await;
        resp.expect_error(400);
    }
    // Also on GET.
    let resp = server
        .mcp()
        .http
        .get(&mcp.url)
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", &sid)
        .header("MCP-Protocol-Version", "2024-11-05")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

// D16: an absent MCP-Protocol-Version header means the negotiated version.
#[tokio::test]
async fn absent_protocol_version_header_is_accepted() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_version("2025-06-18").await;
    let resp = mcp.post(Some(&sid), &tools_list(1)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.answer(&json!(1))["result"]["tools"].is_array());
}

// ---- batches (D16) -------------------------------------------------------------------------

// D16: JSON-RPC batches were removed in 2025-06-18; they are rejected for such sessions.
#[tokio::test]
async fn batch_is_rejected_for_2025_06_18_and_2025_11_25_sessions() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    for version in ["2025-06-18", "2025-11-25"] {
        let sid = mcp.initialize_version(version).await;
        let batch = json!([tools_list(1), request(2, "ping", json!({}))]);
        let body = mcp.post(Some(&sid), &batch).await.expect_error(400);
        assert_eq!(body["error"]["code"], -32600, "{version}: {body}");
    }
}

// A batch obeys the lifecycle like single messages: requests before
// `notifications/initialized` (other than ping) are refused, item by item, in order.
#[tokio::test]
async fn batch_items_before_initialized_are_refused() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_only("2025-03-26").await;
    let batch = json!([
        tools_list(1),
        request(2, "ping", json!({})),
        notification("notifications/initialized", json!({})),
        tools_list(3)
    ]);
    let resp = mcp.post(Some(&sid), &batch).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let answers = resp.json();
    let answers = answers.as_array().expect("array answer").clone();
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).cloned().unwrap();
    assert!(by_id(1)["error"]["code"].is_i64(), "{answers:?}");
    assert_eq!(by_id(2)["result"], json!({}), "{answers:?}");
    assert!(by_id(3)["result"]["tools"].is_array(), "{answers:?}");
}

// D16: a 2025-03-26 session may batch; the answer is one JSON array.
#[tokio::test]
async fn batch_is_accepted_for_a_2025_03_26_session() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_version("2025-03-26").await;
    let batch = json!([
        tools_list(1),
        request(2, "ping", json!({})),
        notification(
            "notifications/progress",
            json!({"progressToken": "x", "progress": 1})
        )
    ]);
    let resp = mcp.post(Some(&sid), &batch).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.content_type(), "application/json");
    let answers = resp.json();
    let answers = answers.as_array().expect("array answer");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers
        .iter()
        .any(|a| a["id"] == 1 && a["result"]["tools"].is_array()));
    assert!(answers
        .iter()
        .any(|a| a["id"] == 2 && a["result"] == json!({})));
}

/// Issue 13, item 3: a batch holds at most `limits.maxBatchSize` items (one POST could carry
/// ~60k), and client answers that no server request can be waiting for (server→client request
/// ids are `srv-…` strings) are dropped instead of being broadcast to every node.
#[tokio::test]
async fn batches_are_bounded_and_stray_answers_are_not_broadcast() {
    let redis = common::cluster::Redis::start();
    let server = redis.node(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_version("2025-03-26").await;
    let pings: Vec<Value> = (0..101).map(|i| request(i, "ping", json!({}))).collect();
    let body = mcp.post(Some(&sid), &json!(pings)).await.expect_error(400);
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(body.to_string().contains("100"), "names the bound: {body}");
    let pings: Vec<Value> = (0..100).map(|i| request(i, "ping", json!({}))).collect();
    let resp = mcp.post(Some(&sid), &json!(pings)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json().as_array().map(Vec::len), Some(100));

    let publishes = |r: &common::cluster::Redis| -> u64 {
        r.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|rest| rest.split(',').next())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    };
    let before = publishes(&redis);
    let stray: Vec<Value> = (0..100)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "result": {}}))
        .collect();
    let resp = mcp.post(Some(&sid), &json!(stray)).await;
    assert_eq!(resp.status, 202, "{:?}", resp.text);
    assert_eq!(
        publishes(&redis) - before,
        0,
        "stray answers were broadcast"
    );
}

// ---- 406 / 415 / 413 -----------------------------------------------------------------------

// D1: a POST whose Accept lacks text/event-stream (or application/json) is a 406.
#[tokio::test]
async fn wrong_accept_on_post_is_406() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    for accept in ["application/json", "text/event-stream", "text/html"] {
        let resp = mcp
            .post_raw(
                &[("Accept", accept)],
                serde_json::to_vec(&initialize_request(LEGACY)).unwrap(),
            )
            .await;
        resp.expect_error(406);
    }
    server.assert_alive().await;
}

// D1: a GET whose Accept lacks text/event-stream is a 406.
#[tokio::test]
async fn wrong_accept_on_get_is_406() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let stream = mcp.get_with(Some(&sid), None, "application/json").await;
    assert_eq!(stream.status, 406);
    assert_eq!(
        stream.header("content-type").as_deref(),
        Some("application/json")
    );
}

// D1: `initialize` sent as text/plain crashed the reference; here it is a 415.
#[tokio::test]
async fn initialize_as_text_plain_is_415() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let resp = mcp
        .post_raw(
            &[("Content-Type", "text/plain")],
            serde_json::to_vec(&initialize_request(LEGACY)).unwrap(),
        )
        .await;
    resp.expect_error(415);
    let sid = mcp.initialize().await;
    let resp = mcp
        .post_raw(
            &[("Content-Type", "text/plain"), ("Mcp-Session-Id", &sid)],
            serde_json::to_vec(&tools_list(1)).unwrap(),
        )
        .await;
    resp.expect_error(415);
    let resp = mcp
        .post_raw(
            &[("Content-Type", "")],
            serde_json::to_vec(&tools_list(1)).unwrap(),
        )
        .await;
    resp.expect_error(415);
    server.assert_alive().await;
}

// D1, D14: a body over the 4 MiB default cap is a 413 (the reference answered 500).
#[tokio::test]
async fn body_over_4_mib_is_413() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let filler = "x".repeat(5 * 1024 * 1024);
    let body = serde_json::to_vec(&request(
        1,
        "tools/call",
        json!({"name": "calculate", "arguments": {"a": 1, "b": 2, "op": "add", "pad": filler}}),
    ))
    .unwrap();
    let resp = mcp.post_raw(&[("Mcp-Session-Id", &sid)], body).await;
    let err = resp.expect_error(413);
    assert_eq!(err["error"]["code"], -32000, "{err}");
    server.assert_alive().await;
}

// ---- 400: JSON and JSON-RPC shape ----------------------------------------------------------

// D1: malformed JSON is a 400 with -32700 (the reference answered 500).
#[tokio::test]
async fn malformed_json_is_400_parse_error() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    for body in [
        &b"{"[..],
        b"{\"jsonrpc\":\"2.0\",",
        b"not json",
        b"",
        b"\xff\xfe",
    ] {
        let resp = mcp.post_raw(&[], body.to_vec()).await;
        let err = resp.expect_error(400);
        assert_eq!(err["error"]["code"], -32700, "{body:?}: {err}");
        assert!(err["id"].is_null());
    }
    server.assert_alive().await;
}

// Valid JSON that is not a JSON-RPC message is a 400 with -32600.
#[tokio::test]
async fn valid_json_that_is_not_json_rpc_is_400_invalid_request() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    for body in [
        json!({"foo": 1}),
        json!(42),
        json!("initialize"),
        json!({"jsonrpc": "1.0", "id": 1, "method": "initialize"}),
        json!({"jsonrpc": "2.0", "id": 1}),
    ] {
        let err = mcp.post(None, &body).await.expect_error(400);
        assert_eq!(err["error"]["code"], -32600, "{body}: {err}");
    }
}

// Wrong member types are -32600: a fractional id, array params, a numeric method.
#[tokio::test]
async fn wrong_member_types_are_400_invalid_request() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    for body in [
        json!({"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": null, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": []}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": "x"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": 3}),
    ] {
        for session in [None, Some(sid.as_str())] {
            let err = mcp.post(session, &body).await.expect_error(400);
            assert_eq!(err["error"]["code"], -32600, "{body}: {err}");
        }
    }
}

// ---- 403: Host and Origin (D11, D12) -------------------------------------------------------

// D12: DNS-rebinding protection: a foreign Host is a 403.
#[tokio::test]
async fn bad_host_header_is_403() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    for host in ["evil.example", "evil.example:80", "127.0.0.2:1"] {
        let resp = mcp
            .post_raw(
                &[("Host", host)],
                serde_json::to_vec(&initialize_request(LEGACY)).unwrap(),
            )
            .await;
        resp.expect_error(403);
    }
    assert_eq!(server.session_count().await, 0);
    server.assert_alive().await;
}

// D12: loopback Host names are accepted with any port (the reference wanted exactly PORT).
#[tokio::test]
async fn loopback_host_with_any_port_is_accepted() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    for host in [
        "localhost",
        "localhost:1",
        "127.0.0.1:65535",
        "[::1]:8080",
        "LOCALHOST:99",
    ] {
        let resp = mcp
            .post_raw(
                &[("Host", host)],
                serde_json::to_vec(&initialize_request(LEGACY)).unwrap(),
            )
            .await;
        assert_eq!(resp.status, 200, "{host}: {resp:?}");
    }
}

// D12: ALLOWED_HOSTS admits a public name.
#[tokio::test]
async fn allowed_hosts_admits_configured_names() {
    let server = Server::start(&[("ALLOWED_HOSTS", "abacus.example,svc.ns:8080")]);
    let mcp = server.mcp();
    let init = serde_json::to_vec(&initialize_request(LEGACY)).unwrap();
    for (host, status) in [
        ("abacus.example", 200),
        ("abacus.example:443", 200),
        ("svc.ns:8080", 200),
        ("svc.ns:9090", 403),
        ("other.example", 403),
    ] {
        let resp = mcp.post_raw(&[("Host", host)], init.clone()).await;
        assert_eq!(resp.status, status, "{host}: {resp:?}");
    }
}

// D11: a present, unlisted Origin is a 403; an absent one is fine (non-browser clients).
#[tokio::test]
async fn bad_origin_is_403_and_absent_origin_is_allowed() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let init = serde_json::to_vec(&initialize_request(LEGACY)).unwrap();
    for origin in [
        "http://evil.example",
        "null",
        "https://localhost.evil.example",
    ] {
        let resp = mcp.post_raw(&[("Origin", origin)], init.clone()).await;
        resp.expect_error(403);
    }
    assert_eq!(server.session_count().await, 0);
    let resp = mcp.post_raw(&[], init.clone()).await;
    assert_eq!(resp.status, 200);
    let resp = mcp
        .post_raw(&[("Origin", "http://localhost:3000")], init)
        .await;
    assert_eq!(resp.status, 200, "loopback origin: {resp:?}");
    server.assert_alive().await;
}

// D11: CORS_ORIGIN admits its origin (the reference rejected its own configured origin) and
// echoes it with credentials and Vary: Origin.
#[tokio::test]
async fn cors_origin_is_allowed_and_echoed() {
    let server = Server::start(&[("CORS_ORIGIN", "https://app.example")]);
    let mcp = server.mcp();
    let init = serde_json::to_vec(&initialize_request(LEGACY)).unwrap();
    let resp = mcp
        .post_raw(&[("Origin", "https://app.example")], init.clone())
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        resp.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let vary: Vec<String> = resp
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(vary.iter().any(|v| v.contains("origin")), "{vary:?}");
    let expose = resp
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(expose.contains("mcp-session-id"), "{expose}");
    let resp = mcp
        .post_raw(&[("Origin", "https://other.example")], init.clone())
        .await;
    resp.expect_error(403);
    // Origin-less clients still work with CORS_ORIGIN set.
    assert_eq!(mcp.post_raw(&[], init).await.status, 200);
}

// D11: ALLOWED_ORIGINS passes Origin validation (without CORS headers).
#[tokio::test]
async fn allowed_origins_pass_origin_validation() {
    let server = Server::start(&[("ALLOWED_ORIGINS", "https://tool.example")]);
    let mcp = server.mcp();
    let init = serde_json::to_vec(&initialize_request(LEGACY)).unwrap();
    let resp = mcp
        .post_raw(&[("Origin", "https://tool.example")], init.clone())
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("access-control-allow-origin").is_none());
    let resp = mcp
        .post_raw(&[("Origin", "https://tool.example:8443")], init)
        .await;
    resp.expect_error(403);
}

// D11: CORS_ORIGIN=* never comes with Allow-Credentials.
#[tokio::test]
async fn wildcard_cors_never_allows_credentials() {
    let server = Server::start(&[("CORS_ORIGIN", "*")]);
    let mcp = server.mcp();
    let init = serde_json::to_vec(&initialize_request(LEGACY)).unwrap();
    let resp = mcp
        .post_raw(&[("Origin", "https://any.example")], init)
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(resp.header("access-control-allow-credentials").is_none());
    let pre = http()
        .request(reqwest::Method::OPTIONS, server.url("/mcp"))
        .header("Origin", "https://any.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pre.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("*")
    );
    assert!(pre
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

// D11: a preflight allows the MCP headers of both eras and requested Mcp-Param-* headers.
#[tokio::test]
async fn preflight_allows_mcp_headers() {
    let server = Server::start(&[("CORS_ORIGIN", "https://app.example")]);
    let resp = http()
        .request(reqwest::Method::OPTIONS, server.url("/mcp"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, mcp-protocol-version, mcp-session-id, mcp-param-foo",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    let allowed = h
        .get("access-control-allow-headers")
        .expect("Access-Control-Allow-Headers")
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    let allowed: Vec<&str> = allowed.split(',').map(str::trim).collect();
    for needed in [
        "content-type",
        "mcp-protocol-version",
        "mcp-session-id",
        "last-event-id",
        "mcp-method",
        "mcp-name",
        "mcp-param-foo",
    ] {
        assert!(allowed.contains(&needed), "{needed} not in {allowed:?}");
    }
    let methods = h
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap();
    for m in ["GET", "POST", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "https://app.example"
    );
    assert_ne!(h.get("access-control-allow-origin").unwrap(), "*");
}

// ---- 405 / 404 routes ----------------------------------------------------------------------

// PUT and PATCH on /mcp are 405 with Allow (the reference answered an HTML 404).
#[tokio::test]
async fn put_and_patch_on_mcp_are_405_with_allow() {
    let server = Server::start(&[]);
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let resp = http()
            .request(method.clone(), server.url("/mcp"))
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let resp = Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        };
        resp.expect_error(405);
        let allow = resp.header("allow").expect("Allow header");
        for m in ["GET", "POST", "DELETE"] {
            assert!(allow.contains(m), "{method}: {allow}");
        }
    }
}

// Unknown paths get a JSON 404.
#[tokio::test]
async fn unknown_path_is_json_404() {
    let server = Server::start(&[]);
    for path in ["/", "/nope", "/mcp/extra", "/sse"] {
        let resp = http().get(server.url(path)).send().await.unwrap();
        let resp = Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        };
        resp.expect_error(404);
    }
}

// ---- 429 / 503 -----------------------------------------------------------------------------

// Rate limiting: the 4th request in the window is a 429 with Retry-After and a JSON-RPC body;
// health stays reachable.
#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let mut server = Server::start(&[("RATE_LIMIT_MAX", "3"), ("RATE_LIMIT_WINDOW", "60000")]);
    let mcp = server.mcp();
    for i in 0..3 {
        let resp = mcp.post(None, &tools_list(i)).await;
        assert_eq!(resp.status, 400, "request {i} counted but not limited");
    }
    let resp = mcp.post(None, &tools_list(9)).await;
    let body = resp.expect_error(429);
    assert!(body["id"].is_null(), "{body}");
    let retry: u64 = resp
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(mcp.get(None, None).await.status, 429);
    server.assert_alive().await;
}

/// Issue 13, item 2: behind a trusted proxy the client is the right-most address the trusted
/// hops did not add. A client that rotates the `X-Forwarded-For` value it sends is still one
/// client (the proxy appends the real address), garbage is never a key, and with
/// `TRUSTED_PROXIES` a chain of known proxies is skipped.
#[tokio::test]
async fn rate_limit_keys_are_the_rightmost_untrusted_hop() {
    let limited = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![("RATE_LIMIT_MAX", "3"), ("RATE_LIMIT_WINDOW", "60000")];
        env.extend_from_slice(extra);
        Server::start(&env)
    };
    let post_from = |mcp: &Mcp, xff: String| {
        let mcp = mcp.clone();
        async move {
            mcp.post_with(None, &[("X-Forwarded-For", xff.as_str())], &tools_list(1))
                .await
                .status
        }
    };
    // One trusted hop (the peer): the client's own entries are ignored, the proxy's is used.
    let server = limited(&[("TRUST_PROXY", "true")]);
    let mcp = server.mcp();
    for i in 0..3 {
        assert_eq!(
            post_from(&mcp, format!("10.9.{i}.1, 203.0.113.7")).await,
            400
        );
    }
    assert_eq!(
        post_from(&mcp, "10.9.99.1, 203.0.113.7".into()).await,
        429,
        "rotating the client-controlled part escaped the limit"
    );
    // Another client behind the same proxy has its own budget.
    assert_eq!(post_from(&mcp, "203.0.113.8".into()).await, 400);
    // Not an address: the peer is the key, never the garbage.
    for i in 0..3 {
        assert_eq!(post_from(&mcp, format!("junk-{i}")).await, 400);
    }
    assert_eq!(post_from(&mcp, "junk-9".into()).await, 429);

    // A chain: the loopback proxy and 10.0.0.0/8 are trusted, so the client is 198.51.100.1.
    let server = limited(&[("TRUSTED_PROXIES", "127.0.0.1/32,10.0.0.0/8")]);
    let mcp = server.mcp();
    for i in 0..3 {
        let xff = format!("192.0.2.{i}, 198.51.100.1, 10.1.2.3");
        assert_eq!(post_from(&mcp, xff).await, 400);
    }
    assert_eq!(
        post_from(&mcp, "192.0.2.200, 198.51.100.1, 10.1.2.3".into()).await,
        429
    );
    assert_eq!(post_from(&mcp, "198.51.100.2, 10.1.2.3".into()).await, 400);
}

/// Issue 13, item 2: IPv6 clients are keyed by their /64, the block one subscriber gets, so
/// rotating addresses inside it does not escape the limit; another /64 is another client.
#[tokio::test]
async fn ipv6_clients_are_limited_per_64_block() {
    let server = Server::start(&[
        ("RATE_LIMIT_MAX", "3"),
        ("RATE_LIMIT_WINDOW", "60000"),
        ("TRUST_PROXY", "true"),
    ]);
    let mcp = server.mcp();
    let post_from = |xff: String| {
        let mcp = mcp.clone();
        async move {
            mcp.post_with(None, &[("X-Forwarded-For", xff.as_str())], &tools_list(1))
                .await
                .status
        }
    };
    for i in 1..=3 {
        assert_eq!(post_from(format!("2001:db8:1:2::{i:x}")).await, 400);
    }
    assert_eq!(
        post_from("2001:db8:1:2:ffff:1:2:3".into()).await,
        429,
        "a new address in the same /64 escaped the limit"
    );
    assert_eq!(post_from("2001:db8:1:3::1".into()).await, 400);
    // An IPv4-mapped address is its IPv4 client.
    for _ in 0..3 {
        assert_eq!(post_from("198.51.100.9".into()).await, 400);
    }
    assert_eq!(post_from("::ffff:198.51.100.9".into()).await, 429);
}

/// Issue 13, item 3: every item of a batch counts against the rate limit (all or nothing), so
/// one POST cannot carry thousands of requests past a limit of a few.
#[tokio::test]
async fn batch_items_count_against_the_rate_limit() {
    let server = Server::start(&[("RATE_LIMIT_MAX", "8"), ("RATE_LIMIT_WINDOW", "60000")]);
    let mcp = server.mcp();
    // initialize + initialized: 2 requests.
    let sid = mcp.initialize_version("2025-03-26").await;
    let batch = |n: i64| Value::Array((0..n).map(tools_list).collect());
    let resp = mcp.post(Some(&sid), &batch(4)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json().as_array().map(Vec::len), Some(4));
    // 6 used: a batch of 3 does not fit, and none of its items runs (the POST that carried
    // it counts once, as any request).
    let resp = mcp.post(Some(&sid), &batch(3)).await;
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert!(resp.header("retry-after").is_some());
    // 7 used: one more request fits, then the budget is spent.
    let resp = mcp.post(Some(&sid), &tools_list(8)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(mcp.post(Some(&sid), &batch(2)).await.status, 429);
    assert_eq!(mcp.post(Some(&sid), &tools_list(9)).await.status, 429);
}

// D6: sessions are bounded in total. MAX_SESSIONS: a node that is full answers `initialize` with 503 and Retry-After.
#[tokio::test]
async fn initialize_beyond_max_sessions_is_503() {
    let server = Server::start(&[("MAX_SESSIONS", "1")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let resp = mcp.post(None, &initialize_request(LEGACY)).await;
    resp.expect_error(503);
    assert!(resp.header("retry-after").is_some(), "{:?}", resp.headers);
    assert_eq!(server.session_count().await, 1);
    // Freeing the slot makes room again.
    assert_eq!(mcp.delete(Some(&sid)).await.status, 204);
    mcp.initialize().await;
}

// ---- JSON-RPC level errors -----------------------------------------------------------------

// An unknown method is -32601 (a JSON-RPC error in a 200 answer in the legacy era).
#[tokio::test]
async fn unknown_method_is_method_not_found() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let resp = mcp
        .post(Some(&sid), &request(5, "tools/frobnicate", json!({})))
        .await;
    let answer = resp.answer(&json!(5));
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
}

// tools/call of an unknown tool is -32602.
#[tokio::test]
async fn unknown_tool_is_invalid_params() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let answer = mcp.call_tool(&sid, "nosuchtool", json!({})).await;
    assert_rpc_error(&answer, -32602, "nosuchtool");
}

// Lifecycle: before notifications/initialized only ping is allowed (the reference did not
// enforce the handshake).
#[tokio::test]
async fn requests_before_initialized_notification_are_400_except_ping() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize_only(LEGACY).await;
    let body = mcp.post(Some(&sid), &tools_list(1)).await.expect_error(400);
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert_eq!(body["id"], 1, "{body}");
    let ping = mcp.post(Some(&sid), &request(2, "ping", json!({}))).await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.answer(&json!(2))["result"], json!({}));
    let resp = mcp
        .post(
            Some(&sid),
            &notification("notifications/initialized", json!({})),
        )
        .await;
    assert_eq!(resp.status, 202);
    assert!(resp.text.is_empty());
    assert_eq!(mcp.post(Some(&sid), &tools_list(3)).await.status, 200);
}

// `initialize` again on an initialized session is refused.
#[tokio::test]
async fn second_initialize_on_a_session_is_refused() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let resp = mcp.post(Some(&sid), &initialize_request(LEGACY)).await;
    let answer = resp.answer(&json!(0));
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
}

// Malformed session ids (too long) are a 400, not a lookup.
#[tokio::test]
async fn overlong_session_id_is_400() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let long = "a".repeat(300);
    mcp.post(Some(&long), &tools_list(1))
        .await
        .expect_error(400);
}

// ---- bounded work (D14) --------------------------------------------------------------------

/// True if a tools/call answer is a refusal: a JSON-RPC error or a tool error.
fn refused(answer: &Value) -> bool {
    answer["error"].is_object() || answer["result"]["isError"] == true
}

// D14: unbounded work is refused: demo_progress steps outside 1..=max or fractional, batches
// over the limit, and factorials beyond the bound; factorials that overflow give Infinity.
#[tokio::test]
async fn unbounded_work_is_refused() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    for version in ["2025-06-18", "2025-11-25"] {
        let sid = mcp.initialize_version(version).await;
        for steps in [json!(0), json!(-2), json!(1.5), json!(1_000_000)] {
            let answer = mcp
                .call_tool(&sid, "demo_progress", json!({ "steps": steps }))
                .await;
            assert!(refused(&answer), "{version} steps {steps}: {answer}");
        }
        let calcs: Vec<Value> = (0..101)
            .map(|_| json!({"a": 1, "b": 1, "op": "add"}))
            .collect();
        let answer = mcp
            .call_tool(&sid, "batch_calculate", json!({ "calculations": calcs }))
            .await;
        assert!(refused(&answer), "{version}: {answer}");
        let answer = mcp
            .call_tool(
                &sid,
                "advanced_calculate",
                json!({"operation": "factorial", "value": 5e9}),
            )
            .await;
        assert!(refused(&answer), "{version}: {answer}");
        for value in [171, 999_999] {
            let answer = mcp
                .call_tool(
                    &sid,
                    "advanced_calculate",
                    json!({"operation": "factorial", "value": value}),
                )
                .await;
            assert_eq!(
                answer["result"]["content"][0]["text"],
                format!("factorial({value}) = Infinity"),
                "{answer}"
            );
        }
        // Unknown arguments are refused rather than silently dropped.
        let answer = mcp
            .call_tool(
                &sid,
                "calculate",
                json!({"a": 1, "b": 2, "op": "add", "foo": 1}),
            )
            .await;
        assert!(refused(&answer), "{version}: {answer}");
    }
    server.assert_alive().await;
}

// ---- liveness after abuse (D1) -------------------------------------------------------------

// D1: nothing a client sends crashes or wedges the process.
#[tokio::test]
async fn nasty_requests_do_not_kill_the_server() {
    let mut server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let addr = server.addr.clone();

    // Raw bytes on the wire: garbage, truncated requests, bad framing.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed & 0xff) as u8
            })
            .collect()
    };
    let mut raws: Vec<Vec<u8>> = vec![
        random(64),
        random(4096),
        b"\r\n\r\n\r\n".to_vec(),
        b"GET /mcp HTTP/1.1\r\n\r\n".to_vec(),
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999\r\n\r\n{".to_vec(),
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\r\nZZZ\r\n".to_vec(),
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\r\n{\"a\"".to_vec(),
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: \x01\x02\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        b"GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nMcp-Session-Id: \xff\xfe\xfd\r\nLast-Event-ID: \xc3\x28\r\n\r\n".to_vec(),
        b"DELETE /mcp HTTP/1.1\r\nHost: \xff\r\nMcp-Session-Id: x\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n", "a".repeat(70_000)).into_bytes(),
        format!("GET /mcp HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "b".repeat(100_000)).into_bytes(),
        b"BREW /mcp HTCPCP/1.0\r\n\r\n".to_vec(),
    ];
    raws.push(random(16));
    for raw in &raws {
        let _ = raw_http(&addr, raw).await;
    }

    // Well-framed HTTP with hostile JSON bodies.
    let deep = "[".repeat(10_000);
    let deep_obj = "{\"a\":".repeat(10_000);
    let bodies: Vec<Vec<u8>> = vec![
        deep.clone().into_bytes(),
        format!("{deep}{}", "]".repeat(10_000)).into_bytes(),
        deep_obj.into_bytes(),
        b"1e999999".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1e400,\"method\":\"ping\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":123456789012345678901234567890,\"method\":\"ping\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":-1,\"method\":\"ping\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":\"NaN\",\"method\":\"tools/call\",\"params\":{\"name\":\"calculate\",\"arguments\":{\"a\":\"NaN\",\"b\":\"Infinity\",\"op\":\"add\"}}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"calculate\",\"arguments\":{\"a\":1e308,\"b\":1e308,\"op\":\"multiply\"}}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"advanced_calculate\",\"arguments\":{\"operation\":\"factorial\",\"value\":1e300}}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"demo_progress\",\"arguments\":{\"steps\":1e9}}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"batch_calculate\",\"arguments\":{\"calculations\":[null,1,\"x\",[]]}}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"name\":null,\"arguments\":null}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"resources/read\",\"params\":{\"uri\":\"\\u0000\\ud800\"}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"\\u0000\"}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":{}}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":null}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":{}}".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":11,\"error\":\"nope\"}".to_vec(),
        b"[]".to_vec(),
        b"[[],[],{}]".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"completion/complete\",\"params\":{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"\\ud83d\"},\"argument\":{}}}".to_vec(),
        b"\x00\x00\x00".to_vec(),
    ];
    for body in &bodies {
        for session in [None, Some(sid.as_str())] {
            let mut h = vec![];
            if let Some(s) = session {
                h.push(("Mcp-Session-Id", s));
            }
            let resp = mcp.post_raw(&h, body.clone()).await;
            assert!(
                resp.status < 500,
                "{} for {:?}",
                resp.status,
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }

    // Odd headers reqwest lets through.
    let odd: Vec<(&str, &str)> = vec![
        ("Mcp-Session-Id", " "),
        ("Mcp-Session-Id", "\t"),
        ("MCP-Protocol-Version", "\t2025-11-25\t"),
        ("Last-Event-ID", "::::"),
        ("Accept", ""),
        ("Content-Type", "application/json; charset=\"\u{80}\""),
    ];
    for (k, v) in odd {
        let resp = mcp
            .post_raw(&[(k, v)], serde_json::to_vec(&tools_list(1)).unwrap())
            .await;
        assert!(resp.status < 500, "{k}: {v:?} gave {}", resp.status);
    }
    for lei in [
        "g:18446744073709551616",
        "g:-1",
        ":",
        "p:1:2",
        "nocolon",
        "pffff:1",
    ] {
        let resp = mcp.get(Some(&sid), Some(lei)).await;
        assert_eq!(resp.status, 400, "Last-Event-ID {lei}: {}", resp.status);
    }

    server.assert_alive().await;
    // The session still works, and new ones can be made.
    let answer = mcp
        .call_tool(&sid, "calculate", json!({"a": 2, "b": 3, "op": "add"}))
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "2 add 3 = 5",
        "{answer}"
    );
    mcp.initialize().await;
}

/// What a client sends that the server keeps or repeats is bounded, with a clear JSON-RPC error
/// past the bound (issue 13, item 1): a progress token is copied into every notification and
/// stored event, client descriptions live as long as the session, and subscriptions grow a
/// session's record. Checked in memory mode and in Redis mode.
#[tokio::test]
async fn client_controlled_data_is_bounded() {
    let redis = common::cluster::Redis::start();
    let url = redis.url();
    let memory = Server::start(&[]);
    let shared = Server::start(&[("USE_REDIS", "true"), ("REDIS_URL", url.as_str())]);
    for server in [&memory, &shared] {
        let mcp = server.mcp();
        let sid = mcp.initialize().await;

        let long_token = "t".repeat(100_000);
        let call = request(
            1,
            "tools/call",
            tool_params_with_progress("demo_progress", json!({ "steps": 2 }), json!(long_token)),
        );
        let answer = mcp.post(Some(&sid), &call).await.single_answer();
        assert_eq!(
            answer["error"]["code"], -32602,
            "long progressToken: {answer}"
        );
        assert!(answer.to_string().contains("progressToken"), "{answer}");
        let fine = request(
            2,
            "tools/call",
            tool_params_with_progress("demo_progress", json!({ "steps": 1 }), json!("ok")),
        );
        assert_eq!(mcp.post(Some(&sid), &fine).await.status, 200);

        let long_uri = format!("session://info/{}", "u".repeat(10_000));
        let answer = mcp
            .rpc(&sid, 3, "resources/subscribe", json!({ "uri": long_uri }))
            .await;
        assert_eq!(answer["error"]["code"], -32602, "long URI: {answer}");

        let mut refused = None;
        for i in 0..200 {
            let uri = format!("session://info/{i}");
            let answer = mcp
                .rpc(&sid, 10 + i, "resources/subscribe", json!({ "uri": uri }))
                .await;
            if answer.get("error").is_some() {
                refused = Some((i, answer));
                break;
            }
        }
        let (at, answer) = refused.expect("subscriptions are capped");
        assert_eq!(at, 64, "the cap is 64 subscriptions: {answer}");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        // Re-subscribing to one held, or unsubscribing, still works at the cap.
        let again = mcp
            .rpc(
                &sid,
                300,
                "resources/subscribe",
                json!({ "uri": "session://info/1" }),
            )
            .await;
        assert!(again["result"].is_object(), "{again}");

        let mut init = initialize_request(LEGACY);
        init["params"]["clientInfo"]["padding"] = json!("x".repeat(100_000));
        let resp = mcp.post(None, &init).await;
        assert_eq!(resp.status, 400, "huge clientInfo: {:?}", resp.text);
        assert!(resp.header("mcp-session-id").is_none());
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({ "x": deep });
        }
        let mut init = initialize_request(LEGACY);
        init["params"]["capabilities"]["experimental"] = deep;
        let resp = mcp.post(None, &init).await;
        assert_eq!(resp.status, 400, "deep capabilities: {:?}", resp.text);
    }
}

/// Issue 13, item 5: every handle-less modern calculation mints a history handle that lives
/// for the session timeout; handles count against MAX_SESSIONS with the sessions, so a client
/// cannot fill a node's memory (or Redis) with them.
#[tokio::test]
async fn history_handles_count_against_max_sessions() {
    let redis = common::cluster::Redis::start();
    let url = redis.url();
    let memory = Server::start(&[("MAX_SESSIONS", "3")]);
    let shared = Server::start(&[
        ("MAX_SESSIONS", "3"),
        ("USE_REDIS", "true"),
        ("REDIS_URL", url.as_str()),
    ]);
    for server in [&memory, &shared] {
        let mcp = server.mcp();
        let mut refused = None;
        for i in 0..10 {
            let params = tool_params("calculate", json!({"a": i, "b": 1, "op": "add"}));
            let resp = mcp.modern(i, "tools/call", params).await;
            let answer = resp.answer(&json!(i));
            if answer["result"]["isError"] != false {
                refused = Some((i, resp.status, answer));
                break;
            }
            // The Redis node reads the count at most every 2 s.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let (at, status, answer) = refused.expect("handles are capped");
        assert!(
            (3..=5).contains(&at),
            "refused after {at} handles: {answer}"
        );
        assert!(
            status == 503 || answer["error"].is_object(),
            "{status} {answer}"
        );
    }
}
