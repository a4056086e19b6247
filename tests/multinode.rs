//! Any node serves any session: several Abacus nodes on one private `redis-server`, reached
//! through nginx round-robin (no stickiness) or node by node. Each test builds its own cluster
//! on ephemeral ports, so the tests are parallel-safe.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{tool, Cluster};
use common::*;
use serde_json::{json, Value};

/// Reads a stream up to its first JSON message and returns that event's id.
async fn first_message_id(stream: &mut SseStream) -> String {
    loop {
        let ev = stream
            .next_within(Duration::from_secs(5))
            .await
            .expect("a message event");
        if ev.json().is_some() {
            return ev.id.clone().expect("events carry ids");
        }
    }
}

fn calc(a: i64) -> Value {
    json!({ "a": a, "b": 1, "op": "add" })
}

/// A session made through the load balancer spreads its requests over every node, and each
/// node sees the calculations the others recorded.
#[tokio::test]
async fn one_session_is_served_by_every_node() {
    let cluster = Cluster::start(3, &[]);
    let lb = cluster.lb_mcp();
    let sid = lb.initialize().await;
    let before = cluster.requests_per_node().await;
    for i in 0..9 {
        let answer = lb.call_tool(&sid, "calculate", calc(i)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let after = cluster.requests_per_node().await;
    for (n, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "node {n} served none of the session's requests: {before:?} -> {after:?}"
        );
    }
    for n in 0..3 {
        let stats = cluster
            .node(n)
            .mcp()
            .read_json(&sid, "calculator://stats")
            .await;
        assert_eq!(stats["totalCalculations"], 9, "node {n}: {stats}");
    }
    let info = lb.read_json(&sid, &format!("session://info/{sid}")).await;
    assert_eq!(info["calculationCount"], 9, "{info}");
}

/// 100 concurrent calls on one session through the load balancer: every calculation is
/// recorded (history holds the cap of 50) and the request count is exact.
#[tokio::test]
async fn concurrent_calls_across_nodes_are_all_recorded() {
    let cluster = Cluster::start(3, &[]);
    let lb = cluster.lb_mcp();
    let sid = lb.initialize().await;
    let calls = (0..100).map(|i| {
        let (lb, sid) = (lb.clone(), sid.clone());
        tokio::spawn(async move { lb.call_tool(&sid, "calculate", calc(i)).await })
    });
    let mut ids = HashSet::new();
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        ids.insert(answer["result"]["structuredContent"]["id"].to_string());
    }
    assert_eq!(ids.len(), 100, "calculation ids must be unique");
    let stats = cluster
        .node(0)
        .mcp()
        .read_json(&sid, "calculator://stats")
        .await;
    assert_eq!(stats["totalCalculations"], 100, "{stats}");
    let info = cluster
        .node(1)
        .mcp()
        .read_json(&sid, &format!("session://info/{sid}"))
        .await;
    assert_eq!(info["calculationCount"], 50, "capped history: {info}");
    // initialize + initialized + 100 calls + stats read + this read.
    assert_eq!(info["requestCount"], 104, "{info}");
    let raw = cluster
        .redis
        .cli(&["HGET", &format!("abacus:{{{sid}}}:rec"), "rc"]);
    assert_eq!(
        raw.trim(),
        "104",
        "requestCount in Redis after the read settled"
    );
}

/// Deleting on one node ends the session on every node, including nodes that had it cached.
#[tokio::test]
async fn delete_on_one_node_is_404_on_all() {
    let cluster = Cluster::start(3, &[]);
    let sid = cluster.node(0).mcp().initialize().await;
    for n in 0..3 {
        let answer = cluster
            .node(n)
            .mcp()
            .call_tool(&sid, "calculate", calc(1))
            .await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let del = cluster
        .node(1)
        .mcp()
        .http
        .delete(cluster.node_url(1, "/mcp"))
        .header("Mcp-Session-Id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..3 {
        let resp = cluster
            .node(n)
            .mcp()
            .post(Some(&sid), &request(7, "ping", json!({})))
            .await;
        assert_eq!(resp.status, 404, "node {n}: {:?}", resp.text);
    }
}

/// Idle expiry is enforced by Redis: after the idle TTL the session is 404 everywhere.
#[tokio::test]
async fn idle_sessions_expire_on_every_node() {
    let cluster = Cluster::start(2, &[("SESSION_TIMEOUT", "1500")]);
    let sid = cluster.node(0).mcp().initialize().await;
    cluster
        .node(1)
        .mcp()
        .call_tool(&sid, "calculate", calc(1))
        .await;
    assert_eq!(
        cluster
            .redis
            .cli(&["EXISTS", &format!("abacus:{{{sid}}}:rec")])
            .trim(),
        "1"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        cluster
            .redis
            .cli(&["EXISTS", &format!("abacus:{{{sid}}}:rec")])
            .trim(),
        "0"
    );
    for n in 0..2 {
        let resp = cluster
            .node(n)
            .mcp()
            .post(Some(&sid), &request(7, "ping", json!({})))
            .await;
        assert_eq!(resp.status, 404, "node {n}: {:?}", resp.text);
    }
}

/// Top-level commands a client sent, as seen by `MONITOR` (commands run inside scripts are
/// tagged `lua` and are not counted).
struct Monitor {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut child = Command::new(tool("redis-cli"))
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli monitor");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Monitor { child, lines }
    }

    /// Top-level commands since the last call, minus the node heartbeats.
    fn take(&self) -> Vec<String> {
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        lines
            .into_iter()
            .filter(|l| !l.contains(" lua]") && !l.contains("\"abacus:node:") && l != "OK")
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A warm `tools/call calculate` costs one Redis round trip (one script), observed in Redis.
#[tokio::test]
async fn a_warm_call_is_one_redis_round_trip() {
    let cluster = Cluster::start(1, &[]);
    let mcp = cluster.node(0).mcp();
    let sid = mcp.initialize().await;
    mcp.call_tool(&sid, "calculate", calc(0)).await;
    let monitor = Monitor::start(cluster.redis.port());
    monitor.take();
    cluster.redis.cli(&["CONFIG", "RESETSTAT"]);
    for i in 1..=20 {
        mcp.call_tool(&sid, "calculate", calc(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The session's commands; the node's background work (heartbeat, the sweep for a dead
    // node's tasks) is not the calls'.
    let commands: Vec<String> = monitor
        .take()
        .into_iter()
        .filter(|l| l.contains(&sid))
        .collect();
    assert_eq!(commands.len(), 20, "one command per call: {commands:#?}");
    assert!(
        commands.iter().all(|c| c.contains("\"EVALSHA\"")),
        "{commands:#?}"
    );
    let stats = cluster.redis.cli(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_evalsha:calls=20,"),
        "INFO commandstats: {stats}"
    );
}

/// A POST stream that node A closes early (SEP-1699) is resumed on node B with
/// `Last-Event-ID`: B replays exactly the missed events, then the ones A produces later.
#[tokio::test]
async fn a_stream_started_on_one_node_resumes_on_another() {
    let cluster = Cluster::start(2, &[("SSE_POST_CLOSE_AFTER", "300")]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize().await;
    let body = request(
        5,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({ "steps": 5 }), json!("tok")),
    );
    let mut first = a.post_stream(Some(&sid), &[], &body).await;
    let mut seen = Vec::new();
    let mut last_id = None;
    while let Some(ev) = first.next_within(Duration::from_secs(5)).await {
        if let (Some(id), Some(msg)) = (ev.id.clone(), ev.json()) {
            seen.push(msg);
            last_id = Some(id);
        } else if ev.id.is_some() {
            last_id = ev.id.clone();
        }
    }
    assert!(seen.len() < 6, "A closed the stream early: {seen:?}");
    let last_id = last_id.expect("events carry ids");
    let mut resumed = b.get_stream(Some(&sid), Some(&last_id)).await;
    let mut rest = Vec::new();
    while let Some(ev) = resumed.next_within(Duration::from_secs(5)).await {
        if let Some(msg) = ev.json() {
            rest.push(msg);
        }
    }
    let all: Vec<Value> = seen.into_iter().chain(rest).collect();
    let progress: Vec<f64> = all
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(
        progress,
        vec![1.0, 2.0, 3.0, 4.0, 5.0],
        "no loss, no duplicates: {all:#?}"
    );
    let finals: Vec<&Value> = all.iter().filter(|m| m["id"] == 5).collect();
    assert_eq!(finals.len(), 1, "{all:#?}");
    assert!(finals[0]["result"].is_object(), "{all:#?}");
}

/// A server→client request (sampling) issued by a tool on node A is answered by a POST that
/// lands on node B; the answer reaches the waiting call on A.
#[tokio::test]
async fn a_client_answer_posted_to_another_node_reaches_the_call() {
    let cluster = Cluster::start(2, &[("TOOLSETS", "conformance,calculator")]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize_with_sampling().await;
    let body = request(
        9,
        "tools/call",
        tool_params("test_sampling", json!({ "prompt": "Say hi" })),
    );
    let mut stream = a.post_stream(Some(&sid), &[], &body).await;
    let ask = stream.request_for("sampling/createMessage").await;
    let answer = json!({
        "jsonrpc": "2.0", "id": ask["id"],
        "result": {
            "role": "assistant",
            "content": { "type": "text", "text": "hi from B" },
            "model": "test-model"
        }
    });
    let posted = b.post(Some(&sid), &answer).await;
    assert_eq!(posted.status, 202, "{:?}", posted.text);
    let done = stream.answer_to(9).await;
    assert!(done.to_string().contains("hi from B"), "{done}");
}

/// `notifications/cancelled` sent to node B stops the request running on node A.
#[tokio::test]
async fn a_cancel_sent_to_another_node_stops_the_call() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize().await;
    let body = request(
        11,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({ "steps": 20 }), json!("p")),
    );
    let mut stream = a.post_stream(Some(&sid), &[], &body).await;
    let first = stream.next_message(Duration::from_secs(5)).await;
    assert!(first.is_some(), "the call started streaming");
    let cancel = notification(
        "notifications/cancelled",
        json!({ "requestId": 11, "reason": "test" }),
    );
    assert_eq!(b.post(Some(&sid), &cancel).await.status, 202);
    let rest = stream.rest(Duration::from_secs(3)).await;
    let answered = rest
        .iter()
        .filter_map(|e| e.json())
        .any(|m| m["id"] == 11 && m["result"].is_object());
    assert!(!answered, "a cancelled request gets no result: {rest:?}");
}

/// A stream whose node dies is ended for a resuming client with a JSON-RPC error, quickly.
#[tokio::test]
async fn a_stream_of_a_dead_node_ends_with_an_error() {
    let mut cluster = Cluster::start(2, &[]);
    let a = cluster.node(0).mcp();
    let sid = a.initialize().await;
    let body = request(
        21,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({ "steps": 50 }), json!("p")),
    );
    let mut stream = a.post_stream(Some(&sid), &[], &body).await;
    let last_id = Some(first_message_id(&mut stream).await);
    drop(stream);
    cluster.kill9(0);
    let b = cluster.node(1).mcp();
    let started = std::time::Instant::now();
    let mut resumed = b.get_stream(Some(&sid), last_id.as_deref()).await;
    let rest = resumed.rest(Duration::from_secs(10)).await;
    let error = rest
        .iter()
        .filter_map(|e| e.json())
        .find(|m| m["id"] == 21)
        .unwrap_or_else(|| panic!("no final message: {rest:?}"));
    assert!(error["error"]["code"].is_i64(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The session itself lives on.
    let answer = b.call_tool(&sid, "calculate", calc(1)).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
}

/// The standalone GET stream held on node B receives list changes made anywhere, in order.
#[tokio::test]
async fn a_get_stream_on_one_node_hears_resource_updates_from_another() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize().await;
    let sub = a
        .rpc(
            &sid,
            3,
            "resources/subscribe",
            json!({ "uri": "calculator://stats" }),
        )
        .await;
    assert!(sub["result"].is_object(), "{sub}");
    let mut get = b.get_stream(Some(&sid), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.call_tool(&sid, "calculate", calc(1)).await;
    let msg = get
        .next_message(Duration::from_secs(5))
        .await
        .expect("an update");
    assert_eq!(msg["method"], "notifications/resources/updated", "{msg}");
    // Only one GET stream per session across the cluster.
    let second = a.get(Some(&sid), None).await;
    assert_eq!(second.status, 409, "{:?}", second.text);
}

/// A modern-era tools/call on one node.
async fn modern_call(mcp: &Mcp, id: i64, params: Value) -> Value {
    let resp = mcp.modern(id, "tools/call", params).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.answer(&json!(id))
}

/// Modern era: a `requestState` sealed on node A is verified on node B, and only once; a
/// history handle minted on A is written on B and read on A.
#[tokio::test]
async fn modern_state_and_handles_work_on_every_node() {
    let cluster = Cluster::start(2, &[("TOOLSETS", "conformance,calculator")]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let caps =
        json!({ "_meta": { "io.modelcontextprotocol/clientCapabilities": { "elicitation": {} } } });
    let mut params = tool_params("test_input_required_result_request_state", json!({}));
    params["_meta"] = caps["_meta"].clone();
    let first = modern_call(&a, 1, params.clone()).await;
    let state = first["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("input_required with requestState: {first}"))
        .to_owned();
    params["requestState"] = json!(state);
    params["inputResponses"] =
        json!({ "confirm": { "action": "accept", "content": { "ok": true } } });
    let done = modern_call(&b, 2, params.clone()).await;
    assert!(done.to_string().contains("state-ok"), "{done}");
    let replay = modern_call(&a, 3, params).await;
    assert_eq!(replay["error"]["code"], -32602, "single-use: {replay}");

    let made = modern_call(
        &a,
        4,
        tool_params("calculate", json!({ "a": 2, "b": 3, "op": "add" })),
    )
    .await;
    let handle = made["result"]["structuredContent"]["historyHandle"]
        .as_str()
        .unwrap_or_else(|| panic!("a history handle: {made}"))
        .to_owned();
    let more = modern_call(
        &b,
        5,
        tool_params(
            "calculate",
            json!({ "a": 4, "b": 5, "op": "add", "historyHandle": handle }),
        ),
    )
    .await;
    assert_eq!(more["result"]["isError"], false, "{more}");
    let id = more["result"]["structuredContent"]["id"].as_str().unwrap();
    let read = a
        .modern(
            6,
            "resources/read",
            json!({ "uri": format!("calculator://history/{id}") }),
        )
        .await;
    assert_eq!(read.status, 200, "{:?}", read.text);
    let entry: Value = serde_json::from_str(
        read.answer(&json!(6))["result"]["contents"][0]["text"]
            .as_str()
            .expect("a text content"),
    )
    .expect("a JSON history entry");
    assert_eq!(entry["id"], id, "the entry B wrote, read on A: {entry}");
    assert_eq!(entry["result"], 9, "{entry}");
}

/// The rate limit holds for the cluster, not per node: requests spread over 3 nodes are
/// admitted up to about the limit in total (each node learns the others' counts every 100 ms).
#[tokio::test]
async fn the_rate_limit_is_cluster_wide() {
    let cluster = Cluster::start(
        3,
        &[("RATE_LIMIT_MAX", "30"), ("RATE_LIMIT_WINDOW", "60000")],
    );
    let nodes: Vec<Mcp> = (0..3).map(|n| cluster.node(n).mcp()).collect();
    let (mut admitted, mut limited) = (0, 0);
    for i in 0..90 {
        let resp = nodes[i % 3]
            .post(None, &request(i as i64, "ping", json!({})))
            .await;
        match resp.status {
            429 => {
                limited += 1;
                assert!(resp.header("retry-after").is_some());
            }
            _ => admitted += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Node-local limits would admit 90 (30 per node).
    assert!(
        (30..=40).contains(&admitted),
        "admitted {admitted}, limited {limited}"
    );
}

/// A resource update made while the client's GET stream was down is replayed when it
/// reconnects, on another node, with `Last-Event-ID`.
#[tokio::test]
async fn standalone_events_missed_while_disconnected_replay_on_another_node() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize().await;
    a.rpc(
        &sid,
        3,
        "resources/subscribe",
        json!({ "uri": "calculator://stats" }),
    )
    .await;
    let mut get = b.get_stream(Some(&sid), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.call_tool(&sid, "calculate", calc(1)).await;
    let last_id = Some(first_message_id(&mut get).await);
    drop(get);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two updates while no GET stream is open anywhere.
    a.call_tool(&sid, "calculate", calc(2)).await;
    b.call_tool(&sid, "calculate", calc(3)).await;
    let mut again = a.get_stream(Some(&sid), last_id.as_deref()).await;
    let mut missed = Vec::new();
    while missed.len() < 2 {
        let msg = again
            .next_message(Duration::from_secs(5))
            .await
            .expect("the missed updates");
        missed.push(msg);
    }
    assert!(
        missed
            .iter()
            .all(|m| m["method"] == "notifications/resources/updated"),
        "{missed:?}"
    );
}

/// Modern era: a `subscriptions/listen` stream on node B hears a tool-list change made by a
/// request on node A, and only the kinds it asked for.
#[tokio::test]
async fn a_listen_stream_hears_changes_made_on_another_node() {
    let cluster = Cluster::start(2, &[("TOOLSETS", "conformance,calculator")]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let listen = modern_request(
        "sub-x",
        "subscriptions/listen",
        json!({ "notifications": { "toolsListChanged": true } }),
    );
    let (mut stream, _) = b.listen(&listen).await;
    modern_call(&a, 2, tool_params("test_trigger_prompt_change", json!({}))).await;
    modern_call(&a, 3, tool_params("test_trigger_tool_change", json!({}))).await;
    let note = stream
        .next_message(Duration::from_secs(5))
        .await
        .expect("list_changed from node A");
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
}

/// A legacy session id is not a state handle: it cannot be used to write into that session's
/// history from outside the session.
#[tokio::test]
async fn a_session_id_is_not_a_history_handle() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize().await;
    a.call_tool(&sid, "calculate", calc(1)).await;
    let answer = modern_call(
        &b,
        7,
        tool_params(
            "calculate",
            json!({ "a": 1, "b": 1, "op": "add", "historyHandle": sid }),
        ),
    )
    .await;
    let text = answer.to_string();
    assert!(
        answer["error"]["code"] == -32602 || answer["result"]["isError"] == true,
        "refused: {text}"
    );
    let stats = a.read_json(&sid, "calculator://stats").await;
    assert_eq!(stats["totalCalculations"], 1, "untouched: {stats}");
}

/// A history handle is not a session: sent as `Mcp-Session-Id` it gets 404 (as in memory
/// mode), not a 503 that clients would retry forever, and it does not extend the handle.
#[tokio::test]
async fn a_history_handle_is_not_a_session_id() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let first = modern_call(
        &a,
        1,
        tool_params("calculate", json!({ "a": 1, "b": 1, "op": "add" })),
    )
    .await;
    let handle = first["result"]["structuredContent"]["historyHandle"]
        .as_str()
        .unwrap_or_else(|| panic!("a history handle: {first}"))
        .to_owned();
    let key = format!("abacus:{{{handle}}}:rec");
    let ttl_before: i64 = cluster.redis.cli(&["PTTL", &key]).parse().unwrap();
    assert!(
        ttl_before > 0,
        "the handle's record {key} has a TTL: {ttl_before}"
    );
    for node in [&a, &b] {
        for body in [
            request(2, "ping", json!({})),
            request(3, "tools/call", tool_params("calculate", calc(1))),
        ] {
            let resp = node.post(Some(&handle), &body).await;
            assert_eq!(resp.status, 404, "{:?}", resp.text);
            assert!(resp.header("retry-after").is_none());
        }
        assert_eq!(node.get(Some(&handle), None).await.status, 404);
        assert_eq!(node.delete(Some(&handle)).await.status, 404);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ttl_after: i64 = cluster.redis.cli(&["PTTL", &key]).parse().unwrap();
    assert!(
        ttl_after < ttl_before,
        "the handle was extended: {ttl_before} ms -> {ttl_after} ms"
    );
    let still = modern_call(
        &b,
        4,
        tool_params(
            "calculate",
            json!({ "a": 2, "b": 2, "op": "add", "historyHandle": handle }),
        ),
    )
    .await;
    assert_eq!(still["result"]["isError"], false, "{still}");
}

/// Server→client requests issued by two nodes in one session get distinct ids, and each
/// client answer (posted to the other node) reaches the call that asked.
#[tokio::test]
async fn server_requests_from_two_nodes_never_share_an_id() {
    let cluster = Cluster::start(2, &[("TOOLSETS", "conformance,calculator")]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let sid = a.initialize_with_sampling().await;
    let call = |id: i64| {
        request(
            id,
            "tools/call",
            tool_params("test_sampling", json!({ "prompt": "hi" })),
        )
    };
    let mut on_a = a.post_stream(Some(&sid), &[], &call(10)).await;
    let mut on_b = b.post_stream(Some(&sid), &[], &call(20)).await;
    let mut asks = Vec::new();
    for stream in [&mut on_a, &mut on_b] {
        asks.push(stream.request_for("sampling/createMessage").await);
    }
    assert_ne!(asks[0]["id"], asks[1]["id"], "ids are unique across nodes");
    for (ask, via, text) in [(&asks[0], &b, "for A"), (&asks[1], &a, "for B")] {
        let answer = json!({
            "jsonrpc": "2.0", "id": ask["id"],
            "result": { "role": "assistant", "content": { "type": "text", "text": text }, "model": "m" }
        });
        assert_eq!(via.post(Some(&sid), &answer).await.status, 202);
    }
    for (stream, id, text) in [(&mut on_a, 10, "for A"), (&mut on_b, 20, "for B")] {
        let done = stream.answer_to(id).await;
        assert!(done.to_string().contains(text), "{done}");
    }
}

/// The number of calls of a Redis command so far (`INFO commandstats`), 0 if never called.
fn command_calls(cluster: &Cluster, command: &str) -> u64 {
    let stats = cluster.redis.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().expect("a call count"))
        .unwrap_or(0)
}

/// Live sessions are counted without scanning the keyspace: creates, deletes and idle expiry
/// keep a count every node agrees on, and a burst of health probes costs Redis at most a few
/// commands per node, whatever the probe rate.
#[tokio::test]
async fn live_sessions_are_counted_without_scanning_redis() {
    let cluster = Cluster::start(2, &[("SESSION_TIMEOUT", "5000")]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let mut sids = Vec::new();
    for i in 0..6 {
        sids.push(if i % 2 == 0 {
            a.initialize().await
        } else {
            b.initialize().await
        });
    }
    assert_eq!(b.delete(Some(&sids[0])).await.status, 204);
    // Counts are cached for at most 2 s per node, and flushed to Redis every second.
    assert!(
        eventually(Duration::from_secs(4), || async {
            cluster.node(0).session_count().await == 5 && cluster.node(1).session_count().await == 5
        })
        .await,
        "both nodes count 5 live sessions: {} and {}",
        cluster.node(0).session_count().await,
        cluster.node(1).session_count().await
    );
    // Keep one session alive past the idle timeout; the others expire.
    let keep = sids[1].clone();
    assert!(
        eventually(Duration::from_secs(12), || async {
            a.rpc(&keep, 1, "ping", json!({})).await;
            cluster.node(1).session_count().await == 1
        })
        .await,
        "idle sessions leave the count"
    );
    let metrics = cluster.node(0).metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcp_active_sessions") && l.ends_with(" 1")),
        "{metrics}"
    );
    let probes_before = command_calls(&cluster, "ping");
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let url = cluster.node_url(i % 2, "/health");
            tokio::spawn(async move { http().get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for probe in burst {
        assert_eq!(probe.await.unwrap().unwrap(), 200);
    }
    let pings = command_calls(&cluster, "ping") - probes_before;
    assert!(
        pings <= 6,
        "50 concurrent /health probes sent {pings} PINGs to Redis"
    );
    assert_eq!(
        command_calls(&cluster, "scan"),
        0,
        "the keyspace was scanned"
    );
}
