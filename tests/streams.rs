//! Legacy SSE behaviour: priming events, progress, resumability, the standalone GET stream,
//! subscriptions, logging and cancellation.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

fn demo(id: i64, steps: u64, token: Option<&str>) -> Value {
    let params = match token {
        Some(t) => tool_params_with_progress("demo_progress", json!({ "steps": steps }), json!(t)),
        None => tool_params("demo_progress", json!({ "steps": steps })),
    };
    request(id, "tools/call", params)
}

fn progress_values(messages: &[Value]) -> Vec<f64> {
    messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_f64().unwrap())
        .collect()
}

// D10: with a progressToken the call streams: a priming event with retry, progress echoing the
// client's token with `total` and `message`, strictly increasing, then the result, then the end.
#[tokio::test]
async fn demo_progress_with_token_streams_priming_progress_then_result() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut s = mcp
        .post_stream(Some(&sid), &[], &demo(42, 3, Some("tok-1")))
        .await;
    assert_eq!(s.status, 200);
    assert_eq!(
        s.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(s.header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(s.header("mcp-session-id").as_deref(), Some(sid.as_str()));
    let first = s.next_within(T).await.expect("priming event");
    assert!(first.is_priming(), "{first:?}");
    assert!(
        first.retry.is_some(),
        "priming event carries retry: {first:?}"
    );
    let events = s.rest(T).await;
    let messages: Vec<Value> = events.iter().filter_map(|e| e.json()).collect();
    let (last, notes) = messages.split_last().expect("messages");
    assert_eq!(last["id"], 42, "the response comes last: {messages:?}");
    assert_eq!(
        last["result"]["content"][0]["text"],
        "Progress demonstration completed with 3 steps"
    );
    assert_eq!(notes.len(), 3, "{notes:?}");
    for n in notes {
        assert_eq!(n["method"], "notifications/progress");
        assert_eq!(n["params"]["progressToken"], "tok-1");
        assert_eq!(n["params"]["total"].as_f64(), Some(3.0));
        assert!(n["params"]["message"].is_string(), "{n}");
        assert!(
            n["params"].get("data").is_none(),
            "no non-standard data field: {n}"
        );
    }
    let p = progress_values(notes);
    assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
    // Every message event has an id, unique within the stream.
    let ids: Vec<_> = events
        .iter()
        .filter(|e| e.json().is_some())
        .map(|e| e.id.clone().unwrap())
        .collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

// D10: without a progressToken no progress notification is sent (the reference always sent them).
#[tokio::test]
async fn demo_progress_without_token_sends_no_progress() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let resp = mcp.post(Some(&sid), &demo(7, 2, None)).await;
    assert_eq!(resp.status, 200);
    let messages = resp.messages();
    assert!(progress_values(&messages).is_empty(), "{messages:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["id"], 7);
}

// D10: `calculate` with stream:true reports progress only when the client gave a token.
#[tokio::test]
async fn calculate_stream_flag_needs_a_progress_token() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let args = json!({"a": 1, "b": 2, "op": "add", "stream": true});
    let resp = mcp
        .post(
            Some(&sid),
            &request(1, "tools/call", tool_params("calculate", args.clone())),
        )
        .await;
    let messages = resp.messages();
    assert!(progress_values(&messages).is_empty(), "{messages:?}");
    let resp = mcp
        .post(
            Some(&sid),
            &request(
                2,
                "tools/call",
                tool_params_with_progress("calculate", args, json!(99)),
            ),
        )
        .await;
    let messages = resp.messages();
    let p = progress_values(&messages);
    assert_eq!(p.len(), 3, "{messages:?}");
    assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
    assert!(messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .all(|m| m["params"]["progressToken"] == 99));
    assert_eq!(
        messages.last().unwrap()["result"]["content"][0]["text"],
        "1 add 2 = 3"
    );
}

// D4: a POST stream closed by the server (SSE_POST_CLOSE_AFTER) is resumed with GET and
// Last-Event-ID: the rest of the events, the result included, each exactly once.
#[tokio::test]
async fn closed_post_stream_resumes_with_last_event_id() {
    let server = Server::start(&[("SSE_POST_CLOSE_AFTER", "300")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut s = mcp
        .post_stream(Some(&sid), &[], &demo(5, 5, Some("resume")))
        .await;
    assert_eq!(s.status, 200);
    let first = s.rest(T).await;
    assert!(first[0].is_priming(), "{first:?}");
    assert!(
        first.last().unwrap().retry.is_some(),
        "retry: before the server-side close: {first:?}"
    );
    let last_id = first
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("an event id");
    let mut messages: Vec<Value> = first.iter().filter_map(|e| e.json()).collect();
    assert!(
        !messages.iter().any(|m| m["id"] == 5),
        "the result cannot have arrived in 300 ms: {messages:?}"
    );
    let mut g = mcp.get_stream(Some(&sid), Some(&last_id)).await;
    assert_eq!(g.status, 200);
    let rest = g.rest(T).await;
    messages.extend(rest.iter().filter_map(|e| e.json()));
    let p = progress_values(&messages);
    assert_eq!(
        p,
        vec![1.0, 2.0, 3.0, 4.0, 5.0],
        "no gaps, no duplicates: {messages:?}"
    );
    let results: Vec<_> = messages.iter().filter(|m| m["id"] == 5).collect();
    assert_eq!(results.len(), 1, "{messages:?}");
    assert_eq!(
        results[0]["result"]["content"][0]["text"],
        "Progress demonstration completed with 5 steps"
    );
    assert_eq!(messages.last().unwrap()["id"], 5, "result last");
}

// D4: a Last-Event-ID naming another session's stream is refused and replays nothing.
#[tokio::test]
async fn last_event_id_of_another_session_is_400() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let a = mcp.initialize().await;
    let b = mcp.initialize().await;
    let resp = mcp.post(Some(&a), &demo(1, 1, Some("a"))).await;
    let events = resp.events();
    let a_id = events.iter().find_map(|e| e.id.clone()).expect("event id");
    let resp = mcp.get(Some(&b), Some(&a_id)).await;
    resp.expect_error(400);
    assert!(
        !resp.text.contains("Progress demonstration"),
        "{:?}",
        resp.text
    );
    // The owner can replay it.
    let mut s = mcp.get_stream(Some(&a), Some(&a_id)).await;
    assert_eq!(s.status, 200);
    let replay: Vec<Value> = s.rest(T).await.iter().filter_map(|e| e.json()).collect();
    assert!(replay.iter().any(|m| m["id"] == 1), "{replay:?}");
}

// The standalone GET stream opens with a priming event (id, empty data, retry).
#[tokio::test]
async fn get_stream_opens_with_a_priming_event() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut g = mcp.get_stream(Some(&sid), None).await;
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(g.header("x-accel-buffering").as_deref(), Some("no"));
    let ev = g.next_within(T).await.expect("priming event");
    assert!(ev.is_priming(), "{ev:?}");
    assert!(ev.retry.is_some(), "{ev:?}");
}

// A second concurrent GET stream on one session is a 409; after the first closes, a new one
// may open.
#[tokio::test]
async fn second_concurrent_get_stream_is_409() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut g = mcp.get_stream(Some(&sid), None).await;
    assert_eq!(g.status, 200);
    g.next_within(T).await;
    let second = mcp.get(Some(&sid), None).await;
    second.expect_error(409);
    drop(g);
    let reopened = eventually(T, || async {
        let s = mcp.get_stream(Some(&sid), None).await;
        s.status == 200
    })
    .await;
    assert!(
        reopened,
        "the GET stream slot is released when the client leaves"
    );
}

// D9: resources/subscribe works: a calculation announces calculator://stats on the GET stream.
#[tokio::test]
async fn subscribed_resource_update_arrives_on_get_stream() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut g = mcp.get_stream(Some(&sid), None).await;
    assert!(g.next_within(T).await.unwrap().is_priming());
    let sub = mcp
        .rpc(
            &sid,
            1,
            "resources/subscribe",
            json!({"uri": "calculator://stats"}),
        )
        .await;
    assert_eq!(sub["result"], json!({}), "{sub}");
    mcp.call_tool(&sid, "calculate", json!({"a": 1, "b": 1, "op": "add"}))
        .await;
    let note = g.next_message(T).await.expect("notification");
    assert_eq!(note["method"], "notifications/resources/updated", "{note}");
    assert_eq!(note["params"]["uri"], "calculator://stats");
    // Another session's calculation does not reach this stream.
    let other = mcp.initialize().await;
    mcp.call_tool(&other, "calculate", json!({"a": 1, "b": 1, "op": "add"}))
        .await;
    mcp.rpc(
        &sid,
        2,
        "resources/unsubscribe",
        json!({"uri": "calculator://stats"}),
    )
    .await;
    let r = tokio::time::timeout(Duration::from_millis(400), g.next_message(T)).await;
    assert!(r.is_err(), "unexpected message: {r:?}");
}

// D9: listChanged is advertised and really sent: a tool-list change reaches the GET stream.
#[tokio::test]
async fn tool_list_change_arrives_on_get_stream() {
    let server = Server::start(&[("TOOLSETS", "calculator,conformance")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut g = mcp.get_stream(Some(&sid), None).await;
    assert!(g.next_within(T).await.unwrap().is_priming());
    let answer = mcp
        .call_tool(&sid, "test_trigger_tool_change", json!({}))
        .await;
    assert!(answer["result"].is_object(), "{answer}");
    let note = g.next_message(T).await.expect("notification");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
}

/// Calls test_tool_with_logging and returns the notifications/message it streamed.
async fn logging_call(mcp: &Mcp, sid: &str, id: i64) -> Vec<Value> {
    let resp = mcp
        .post(
            Some(sid),
            &request(
                id,
                "tools/call",
                tool_params("test_tool_with_logging", json!({})),
            ),
        )
        .await;
    let messages = resp.messages();
    assert_eq!(messages.last().unwrap()["id"], id, "{messages:?}");
    messages
        .into_iter()
        .filter(|m| m["method"] == "notifications/message")
        .collect()
}

// logging/setLevel controls the notifications/message a tool sends on its POST stream.
#[tokio::test]
async fn set_level_controls_log_notifications_on_the_post_stream() {
    let server = Server::start(&[("TOOLSETS", "calculator,conformance")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let set = mcp
        .rpc(&sid, 1, "logging/setLevel", json!({"level": "debug"}))
        .await;
    assert_eq!(set["result"], json!({}), "{set}");
    let logs = logging_call(&mcp, &sid, 2).await;
    assert_eq!(logs.len(), 3, "{logs:?}");
    for l in &logs {
        assert_eq!(l["params"]["level"], "info");
        assert!(l["params"]["data"].is_string(), "{l}");
    }
    mcp.rpc(&sid, 3, "logging/setLevel", json!({"level": "error"}))
        .await;
    assert!(logging_call(&mcp, &sid, 4).await.is_empty());
    let bad = mcp
        .rpc(&sid, 5, "logging/setLevel", json!({"level": "loud"}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
}

// notifications/cancelled stops an in-flight call: its stream ends without a result and the
// operation is recorded as cancelled.
#[tokio::test]
async fn cancelled_notification_stops_an_in_flight_call() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut s = mcp
        .post_stream(Some(&sid), &[], &demo(42, 5, Some("c")))
        .await;
    assert_eq!(s.status, 200);
    let first = s.next_message(T).await.expect("first progress");
    assert_eq!(first["method"], "notifications/progress");
    let cancel = notification(
        "notifications/cancelled",
        json!({"requestId": 42, "reason": "test"}),
    );
    let resp = mcp.post(Some(&sid), &cancel).await;
    assert_eq!(resp.status, 202);
    let rest = s.rest(Duration::from_secs(2)).await;
    let messages: Vec<Value> = rest.iter().filter_map(|e| e.json()).collect();
    assert!(
        !messages.iter().any(|m| m["id"] == 42),
        "no response for a cancelled request: {messages:?}"
    );
    assert!(progress_values(&messages).len() < 4, "{messages:?}");
    let cancelled = cancelled_call_recorded(&server, "demo_progress", T).await;
    assert!(cancelled, "{}", server.metrics().await);
}

// A client disconnect is not a cancel in the legacy era: the call finishes and its result can
// be replayed from the event log.
#[tokio::test]
async fn disconnect_is_not_a_cancel_in_the_legacy_era() {
    let server = Server::start(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut s = mcp
        .post_stream(Some(&sid), &[], &demo(8, 2, Some("d")))
        .await;
    let priming = s.next_within(T).await.unwrap();
    assert!(priming.is_priming());
    let id = priming.id.clone().unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut g = mcp.get_stream(Some(&sid), Some(&id)).await;
    assert_eq!(g.status, 200);
    let messages: Vec<Value> = g.rest(T).await.iter().filter_map(|e| e.json()).collect();
    assert_eq!(progress_values(&messages), vec![1.0, 2.0]);
    assert_eq!(messages.last().unwrap()["id"], 8);
}

/// Issue 13, item 1: a session keeps a bounded number of streams for resumption (Redis mode):
/// 40 finished calls later, the oldest streams are deleted from Redis, the newest kept, and the
/// session's stream set stays at the bound.
#[tokio::test]
async fn a_session_keeps_a_bounded_number_of_streams_in_redis() {
    let redis = common::cluster::Redis::start();
    let url = redis.url();
    let server = redis.node(&[]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let redis_cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .arg("-u")
            .arg(&url)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut streams = Vec::new();
    for i in 0..40 {
        let body = request(
            i,
            "tools/call",
            tool_params_with_progress("demo_progress", json!({ "steps": 1 }), json!("t")),
        );
        let mut s = mcp.post_stream(Some(&sid), &[], &body).await;
        assert_eq!(s.status, 200);
        let events = s.rest(Duration::from_secs(10)).await;
        let id = events
            .iter()
            .find_map(|e| e.id.clone())
            .expect("an event id");
        assert!(
            events.iter().filter_map(|e| e.json()).any(|m| m["id"] == i),
            "call {i} got no answer"
        );
        streams.push(id.split(':').next().unwrap().to_owned());
    }
    let set = format!("abacus:{{{sid}}}:st");
    let count: usize = redis_cli(&["SCARD", &set]).parse().unwrap();
    assert!(count <= 32, "the session keeps {count} streams");
    let meta = |s: &str| format!("abacus:{{{sid}}}:m:{s}");
    assert_eq!(
        redis_cli(&["EXISTS", &meta(&streams[0])]),
        "0",
        "the oldest stream is kept"
    );
    assert_eq!(
        redis_cli(&["EXISTS", &meta(&streams[39])]),
        "1",
        "the newest stream is gone"
    );
    // The session itself is untouched.
    assert_eq!(
        mcp.rpc(&sid, 100, "ping", json!({})).await["result"],
        json!({})
    );
}
