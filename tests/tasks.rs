//! Durable tasks (the MCP Tasks extension) across pods: three Abacus nodes on one private
//! `redis-server`. A task runs on the node that accepted it; every other node reads, answers
//! and cancels it through the store, and a node that stops or dies never leaves one `working`.
//! Plus the bad inputs, on one node, and the 2025-11-25 experimental tasks.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::*;
use serde_json::{json, Value};

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// Nodes that serve the conformance fixtures (the task tools) besides the calculator.
const FIXTURES: (&str, &str) = ("TOOLSETS", "calculator,conformance");

/// `params` with `_meta` declaring the Tasks extension for this request.
fn declaring(mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/clientCapabilities": { "extensions": { TASKS: {} } }
    });
    modern_params(params)
}

/// A modern request that declares tasks; returns the JSON-RPC answer.
async fn call(mcp: &Mcp, method: &str, params: Value) -> Value {
    let body = request(1, method, declaring(params));
    mcp.modern_raw(&body, &[]).await.single_answer()
}

/// Starts `tool` as a task; returns its id.
async fn create(mcp: &Mcp, tool: &str, args: Value) -> String {
    let answer = call(mcp, "tools/call", json!({"name": tool, "arguments": args})).await;
    let result = &answer["result"];
    assert_eq!(result["resultType"], "task", "{answer}");
    assert_eq!(result["status"], "working", "{answer}");
    result["taskId"].as_str().expect("a taskId").to_owned()
}

/// `tasks/get` (the result, or the error answer).
async fn get(mcp: &Mcp, id: &str) -> Value {
    let answer = call(mcp, "tasks/get", json!({ "taskId": id })).await;
    if answer.get("error").is_some() {
        return answer;
    }
    answer["result"].clone()
}

/// Polls `tasks/get` every 50 ms until `wanted` holds or `limit` passes; returns the last read.
async fn wait_for(mcp: &Mcp, id: &str, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let task = get(mcp, id).await;
        if wanted(&task) || Instant::now() >= deadline {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_terminal(task: &Value) -> bool {
    matches!(
        task["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

fn status(wanted: &'static str) -> impl Fn(&Value) -> bool {
    move |task| task["status"] == wanted
}

/// A client of each of the three nodes.
fn clients(cluster: &Cluster) -> [Mcp; 3] {
    [0, 1, 2].map(|i| cluster.node(i).mcp())
}

/// Tasks running on a node, from its `/metrics`.
async fn running(server: &Server) -> f64 {
    metric(&server.metrics().await, "abacus_tasks_running", &[])
}

#[tokio::test]
async fn a_task_created_on_one_node_is_polled_and_read_on_the_others() {
    let cluster = Cluster::start(3, &[FIXTURES]);
    let [a, b, c] = clients(&cluster);
    let id = create(
        &a,
        "slow_compute",
        json!({"seconds": 1.5, "label": "spread"}),
    )
    .await;
    // Readable at once everywhere: the record is in Redis before the answer.
    for mcp in [&b, &c] {
        let task = get(mcp, &id).await;
        assert_eq!(task["taskId"], id, "{task}");
        assert_eq!(task["status"], "working", "{task}");
        assert_eq!(task["resultType"], "complete", "{task}");
        assert!(task["ttlMs"].as_u64().unwrap() > 0, "{task}");
    }
    assert_eq!(running(cluster.node(0)).await, 1.0);
    let done = wait_for(&b, &id, Duration::from_secs(10), is_terminal).await;
    assert_eq!(done["status"], "completed", "{done}");
    let read = get(&c, &id).await;
    assert_eq!(read["status"], "completed", "{read}");
    assert_eq!(
        read["result"]["content"][0]["text"], "slow_compute(spread) done after 1.5s",
        "{read}"
    );
    assert!(read.get("error").is_none(), "{read}");
    assert_eq!(running(cluster.node(0)).await, 0.0);
}

#[tokio::test]
async fn a_cancel_through_another_node_stops_the_task_where_it_runs() {
    let cluster = Cluster::start(3, &[FIXTURES]);
    let [a, b, c] = clients(&cluster);
    let id = create(
        &a,
        "slow_compute",
        json!({"seconds": 60, "label": "cancel"}),
    )
    .await;
    assert_eq!(running(cluster.node(0)).await, 1.0);
    let ack = call(&b, "tasks/cancel", json!({ "taskId": id })).await;
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    assert!(ack["result"].get("status").is_none(), "an empty ack: {ack}");
    // Every node reads the outcome at once: the record changed before the ack.
    let task = get(&c, &id).await;
    assert_eq!(task["status"], "cancelled", "{task}");
    // And node A stopped the work (the signal crossed through Redis).
    assert!(
        eventually(Duration::from_secs(3), || async {
            running(cluster.node(0)).await == 0.0
        })
        .await,
        "node A still runs the cancelled task"
    );
    // The runner's own ending lost to the cancel: still cancelled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&a, &id).await["status"], "cancelled");
}

#[tokio::test]
async fn input_given_through_a_third_node_reaches_the_task_waiting_on_the_first() {
    let cluster = Cluster::start(3, &[FIXTURES]);
    let [a, b, c] = clients(&cluster);
    let id = create(&a, "confirm_delete", json!({"filename": "ledger.csv"})).await;
    let waiting = wait_for(&b, &id, Duration::from_secs(5), status("input_required")).await;
    assert_eq!(waiting["status"], "input_required", "{waiting}");
    let request = &waiting["inputRequests"]["confirm"];
    assert_eq!(request["method"], "elicitation/create", "{waiting}");
    assert_eq!(
        request["params"]["message"], "Delete ledger.csv?",
        "{waiting}"
    );
    let answer = json!({"action": "accept", "content": {"confirm": true}});
    let ack = call(
        &c,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {"confirm": answer}}),
    )
    .await;
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    let done = wait_for(&b, &id, Duration::from_secs(5), is_terminal).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"], "confirm_delete(ledger.csv): confirmed = true",
        "{done}"
    );
    assert!(done.get("inputRequests").is_none(), "{done}");
}

#[tokio::test]
async fn partial_answers_through_different_nodes_keep_the_task_waiting_for_the_rest() {
    let cluster = Cluster::start(3, &[FIXTURES]);
    let [a, b, c] = clients(&cluster);
    let id = create(&a, "multi_input", json!({})).await;
    let waiting = wait_for(&b, &id, Duration::from_secs(5), status("input_required")).await;
    let keys: Vec<String> = waiting["inputRequests"]
        .as_object()
        .expect("inputRequests")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 2, "{waiting}");
    let one = json!({"action": "accept", "content": {"name": "first"}});
    call(
        &b,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {keys[0].clone(): one}}),
    )
    .await;
    let half = get(&c, &id).await;
    assert_eq!(half["status"], "input_required", "{half}");
    assert!(half["inputRequests"].get(&keys[0]).is_none(), "{half}");
    assert!(half["inputRequests"].get(&keys[1]).is_some(), "{half}");
    let two = json!({"action": "accept", "content": {"name": "second"}});
    call(
        &c,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {keys[1].clone(): two}}),
    )
    .await;
    let done = wait_for(&a, &id, Duration::from_secs(5), is_terminal).await;
    assert_eq!(done["status"], "completed", "{done}");
    let text = done["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("first") && text.contains("second"), "{done}");
}

#[tokio::test]
async fn a_killed_node_s_tasks_are_failed_by_the_others_within_five_seconds() {
    let mut cluster = Cluster::start(3, &[FIXTURES]);
    let a = cluster.node(0).mcp();
    let b = cluster.node(1).mcp();
    let ids = [
        create(&a, "slow_compute", json!({"seconds": 60, "label": "k1"})).await,
        create(&a, "confirm_delete", json!({"filename": "k2"})).await,
    ];
    wait_for(
        &b,
        &ids[1],
        Duration::from_secs(5),
        status("input_required"),
    )
    .await;
    let killed = Instant::now();
    cluster.kill9(0);
    for id in &ids {
        let task = wait_for(&b, id, Duration::from_secs(8), is_terminal).await;
        let took = killed.elapsed();
        assert_eq!(task["status"], "failed", "{task}");
        assert!(
            task["statusMessage"]
                .as_str()
                .unwrap()
                .contains("stopped; retry"),
            "{task}"
        );
        assert_eq!(task["error"]["code"], -32603, "{task}");
        assert!(
            took < Duration::from_secs(5),
            "a dead node's task stayed live {took:?}"
        );
    }
}

#[tokio::test]
async fn a_draining_node_finishes_what_it_can_and_fails_the_rest() {
    let mut cluster = Cluster::start(3, &[FIXTURES, ("SHUTDOWN_GRACE", "3000")]);
    let a = cluster.node(0).mcp();
    let b = cluster.node(1).mcp();
    let quick = create(&a, "slow_compute", json!({"seconds": 1, "label": "quick"})).await;
    let slow = create(&a, "slow_compute", json!({"seconds": 60, "label": "slow"})).await;
    let exited = cluster.sigterm_and_wait(0, Duration::from_secs(15)).await;
    assert!(exited.status.success(), "{}", exited.stderr);
    // Right after the exit, nothing of node A's is left working.
    let q = get(&b, &quick).await;
    assert_eq!(q["status"], "completed", "{q}");
    let s = get(&b, &slow).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["statusMessage"]
            .as_str()
            .unwrap()
            .contains("stopped; retry"),
        "{s}"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_tasks_across_three_nodes_end_with_a_hundred_final_statuses() {
    let cluster = Cluster::start(3, &[FIXTURES]);
    let lb = cluster.lb_mcp();
    let creations = (0..100).map(|i| {
        let lb = lb.clone();
        async move {
            let args = json!({"seconds": 1, "label": format!("t{i}")});
            create(&lb, "slow_compute", args).await
        }
    });
    let ids: Vec<String> = futures::future::join_all(creations).await;
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        100
    );
    // Every tenth is cancelled, through whichever node the balancer picks.
    for id in ids.iter().step_by(10) {
        let ack = call(&lb, "tasks/cancel", json!({ "taskId": id })).await;
        assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    }
    let finals = futures::future::join_all(ids.iter().map(|id| {
        let lb = lb.clone();
        async move { wait_for(&lb, id, Duration::from_secs(20), is_terminal).await }
    }))
    .await;
    let count = |s: &str| finals.iter().filter(|t| t["status"] == s).count();
    assert_eq!(
        (count("completed"), count("cancelled")),
        (90, 10),
        "{finals:?}"
    );
    // Each node ran some of them.
    for n in 0..3 {
        assert_eq!(running(cluster.node(n)).await, 0.0, "node {n}");
    }
}

/// One node: every bad input is a clear JSON-RPC error, and the task is unchanged.
#[tokio::test]
async fn bad_task_requests_are_clear_errors_that_change_nothing() {
    let server = Server::start(&[FIXTURES]);
    let mcp = server.mcp();
    // Unknown id.
    let unknown = call(&mcp, "tasks/get", json!({"taskId": "no-such-task"})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    for method in ["tasks/update", "tasks/cancel"] {
        let params = json!({"taskId": "no-such-task", "inputResponses": {}});
        let e = call(&mcp, method, params).await;
        assert_eq!(e["error"]["code"], -32602, "{method}: {e}");
    }
    // Not declaring the extension: -32021 before the lookup.
    let body = modern_request(2, "tasks/get", json!({"taskId": "no-such-task"}));
    let undeclared = mcp.modern_raw(&body, &[]).await.single_answer();
    assert_eq!(undeclared["error"]["code"], -32021, "{undeclared}");
    assert_eq!(
        undeclared["error"]["data"]["requiredCapabilities"]["extensions"][TASKS],
        json!({})
    );
    // A required task tool without the extension: -32021 and no task.
    let body = modern_request(3, "tools/call", json!({"name": "failing_job"}));
    let refused = mcp.modern_raw(&body, &[]).await.single_answer();
    assert_eq!(refused["error"]["code"], -32021, "{refused}");
    // Missing or malformed parameters.
    let e = call(&mcp, "tasks/get", json!({})).await;
    assert_eq!(e["error"]["code"], -32602, "{e}");
    // An update of a task that is not waiting for input.
    let id = create(&mcp, "slow_compute", json!({"seconds": 30})).await;
    let answer = json!({"confirm": {"action": "accept"}});
    let e = call(
        &mcp,
        "tasks/update",
        json!({"taskId": id, "inputResponses": answer}),
    )
    .await;
    assert_rpc_error(&e, -32602, "not waiting");
    assert_eq!(get(&mcp, &id).await["status"], "working");
    // inputResponses that is not an object.
    let e = call(
        &mcp,
        "tasks/update",
        json!({"taskId": id, "inputResponses": [1]}),
    )
    .await;
    assert_eq!(e["error"]["code"], -32602, "{e}");
    // Oversized input: refused, the request still outstanding.
    let waiting = create(&mcp, "confirm_delete", json!({"filename": "x"})).await;
    wait_for(
        &mcp,
        &waiting,
        Duration::from_secs(5),
        status("input_required"),
    )
    .await;
    let huge = "x".repeat(70 * 1024);
    let e = call(
        &mcp,
        "tasks/update",
        json!({"taskId": waiting, "inputResponses": {"confirm": {"action": "accept", "content": {"note": huge}}}}),
    )
    .await;
    assert_rpc_error(&e, -32602, "larger");
    let still = get(&mcp, &waiting).await;
    assert_eq!(still["status"], "input_required", "{still}");
    assert!(still["inputRequests"].get("confirm").is_some(), "{still}");
    // Cancel of a finished task: acknowledged (the extension requires it) and still finished.
    call(&mcp, "tasks/cancel", json!({"taskId": id})).await;
    let again = call(&mcp, "tasks/cancel", json!({"taskId": id})).await;
    assert_eq!(again["result"]["resultType"], "complete", "{again}");
    assert_eq!(get(&mcp, &id).await["status"], "cancelled");
    // A bad tool argument: no task, an argument error.
    let bad = call(
        &mcp,
        "tools/call",
        json!({"name": "slow_compute", "arguments": {"seconds": -1}}),
    )
    .await;
    assert_eq!(bad["result"]["isError"], true, "{bad}");
    assert!(bad["result"].get("taskId").is_none(), "{bad}");
}

/// 2025-11-25's experimental tasks, on the same store: `params.task`, then `tasks/get`,
/// `tasks/list`, `tasks/result` and `tasks/cancel`, each session seeing only its own tasks.
#[tokio::test]
async fn legacy_sessions_get_durable_tasks_of_their_own() {
    let cluster = Cluster::start(2, &[FIXTURES]);
    let a = cluster.node(0).mcp();
    let b = cluster.node(1).mcp();
    let sid = a.initialize().await;
    let params = json!({"name": "slow_compute", "arguments": {"seconds": 1, "label": "old"}, "task": {"ttl": 60000}});
    let created = a.rpc(&sid, 2, "tools/call", params).await;
    let task = &created["result"]["task"];
    assert_eq!(task["status"], "working", "{created}");
    assert_eq!(task["ttl"], 60000, "{created}");
    let id = task["taskId"].as_str().unwrap().to_owned();
    let got = b.rpc(&sid, 3, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(got["result"]["taskId"], id, "{got}");
    assert!(got["result"].get("resultType").is_none(), "{got}");
    let list = b.rpc(&sid, 4, "tasks/list", json!({})).await;
    assert_eq!(list["result"]["tasks"][0]["taskId"], id, "{list}");
    // tasks/result waits for the end, on the other node.
    let result = b.rpc(&sid, 5, "tasks/result", json!({"taskId": id})).await;
    assert_eq!(
        result["result"]["content"][0]["text"], "slow_compute(old) done after 1s",
        "{result}"
    );
    assert_eq!(
        result["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        id
    );
    // Cancelling a finished task is an error in this version.
    let e = a.rpc(&sid, 6, "tasks/cancel", json!({"taskId": id})).await;
    assert_eq!(e["error"]["code"], -32602, "{e}");
    // Another session does not see it.
    let other = b.initialize().await;
    let e = b.rpc(&other, 2, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(e["error"]["code"], -32602, "{e}");
    let list = b.rpc(&other, 3, "tasks/list", json!({})).await;
    assert_eq!(list["result"]["tasks"], json!([]), "{list}");
    // Without params.task a required task tool is refused, clearly.
    let e = a
        .rpc(
            &sid,
            7,
            "tools/call",
            json!({"name": "failing_job", "arguments": {}}),
        )
        .await;
    assert_rpc_error(&e, -32602, "params.task");
}

/// `spec.tasks` sets retention and the per-owner cap; a cancelled task frees its place.
#[tokio::test]
async fn the_configuration_sets_task_retention_and_caps() {
    let path = temp_path("tasks-config.yaml");
    std::fs::write(
        &path,
        "apiVersion: abacus.dev/v1\nkind: AbacusConfig\nspec:\n  toolsets: [calculator, conformance]\n  \
         tasks:\n    ttlMs: 5000\n    pollIntervalMs: 250\n    maxLivePerOwner: 2\n",
    )
    .unwrap();
    let server = Server::start_with_args(&["--config", path.to_str().unwrap()], &[]);
    let mcp = server.mcp();
    let args = json!({"seconds": 30});
    let answer = call(
        &mcp,
        "tools/call",
        json!({"name": "slow_compute", "arguments": args}),
    )
    .await;
    assert_eq!(answer["result"]["ttlMs"], 5000, "{answer}");
    assert_eq!(answer["result"]["pollIntervalMs"], 250, "{answer}");
    let first = answer["result"]["taskId"].as_str().unwrap().to_owned();
    create(&mcp, "slow_compute", args.clone()).await;
    let refused = call(
        &mcp,
        "tools/call",
        json!({"name": "slow_compute", "arguments": args}),
    )
    .await;
    assert_rpc_error(&refused, -32602, "at most 2 tasks");
    call(&mcp, "tasks/cancel", json!({"taskId": first})).await;
    create(&mcp, "slow_compute", args).await;
    // Past its TTL a task is gone.
    let gone = wait_for(&mcp, &first, Duration::from_secs(8), |t| {
        t.get("error").is_some()
    })
    .await;
    assert_eq!(gone["error"]["code"], -32602, "{gone}");
}

/// `subscriptions/listen` with `notifications.taskIds` on node B: the task's state at once,
/// then `notifications/tasks` as the task, running on node A, changes; ids the caller cannot
/// see are left out of the acknowledgement.
#[tokio::test]
async fn a_listen_stream_on_another_node_follows_a_task() {
    let cluster = Cluster::start(2, &[FIXTURES]);
    let (a, b) = (cluster.node(0).mcp(), cluster.node(1).mcp());
    let id = create(&a, "confirm_delete", json!({"filename": "watched"})).await;
    let body = request(
        9,
        "subscriptions/listen",
        declaring(json!({"notifications": {"taskIds": [id, "not-a-task"]}})),
    );
    let (mut stream, ack) = b.listen(&body).await;
    assert_eq!(
        ack["params"]["notifications"]["taskIds"],
        json!([id]),
        "{ack}"
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(note) = stream.next_message(Duration::from_secs(5)).await else {
            break;
        };

        assert_eq!(note["method"], "notifications/tasks", "{note}");
        assert_eq!(note["params"]["taskId"], id, "{note}");
        assert!(note["params"].get("resultType").is_none(), "{note}");
        let status = note["params"]["status"].as_str().unwrap().to_owned();
        if status == "input_required" && !seen.contains(&status) {
            let answer = json!({"action": "accept", "content": {"confirm": false}});
            call(
                &b,
                "tasks/update",
                json!({"taskId": id, "inputResponses": {"confirm": answer}}),
            )
            .await;
        }
        seen.push(status.clone());
        if status == "completed" {
            assert_eq!(
                note["params"]["result"]["content"][0]["text"],
                "confirm_delete(watched): confirmed = false"
            );
            break;
        }
    }
    assert!(seen.contains(&"input_required".to_owned()), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("completed"),
        "{seen:?}"
    );
    // Without declaring the extension, asking for task notifications is -32021.
    let body = modern_request(
        10,
        "subscriptions/listen",
        json!({"notifications": {"taskIds": [id]}}),
    );
    let refused = b.modern_raw(&body, &[]).await.single_answer();
    assert_eq!(refused["error"]["code"], -32021, "{refused}");
}
