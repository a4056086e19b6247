//! Failover: nodes killed or restarted under load behind nginx, and the shared Redis stopped,
//! frozen or killed. Each test builds its own cluster (private Redis, nodes, nginx) on
//! ephemeral ports, so the tests are parallel-safe. The load is `common::load`'s client, which
//! resumes cut SSE answers the way a real Streamable HTTP client does.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{retried_failures, Cluster, Nginx, Redis};
use common::load::*;
use common::*;
use serde_json::{json, Value};

/// The calculation ids in a session's history (below the cap: all of them), read from Redis.
fn history_ids(cluster: &Cluster, sid: &str) -> Vec<String> {
    history_entry_ids(
        &cluster
            .redis
            .cli(&["LRANGE", &format!("abacus:{{{sid}}}:hist"), "0", "-1"]),
    )
}

/// Sends a signal by name to a process.
fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// A POST that needs the store, and how long its answer took.
async fn store_bound_post(mcp: &Mcp, sid: Option<&str>, body: &Value) -> (Resp, Duration) {
    let start = Instant::now();
    let resp = mcp.post(sid, body).await;
    (resp, start.elapsed())
}

/// Asserts a 503 whose body is a JSON-RPC error (-32603) with `Retry-After`, within `limit`.
fn assert_unavailable(what: &str, resp: &Resp, took: Duration, limit: Duration) {
    assert_eq!(resp.status, 503, "{what}: {:?}", resp.text);
    let body = resp.json();
    assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
    assert_eq!(body["error"]["code"], -32603, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    assert!(
        resp.header("retry-after").is_some(),
        "{what}: no Retry-After"
    );
    assert!(
        took < limit,
        "{what}: answered after {took:?} (limit {limit:?})"
    );
}

/// kill -9 of one of three nodes while five sessions calculate through nginx: every session
/// keeps working, and no acknowledged calculation is lost.
///
/// What may fail: nothing that nginx can retry. A request whose node dies before it answers is
/// retried by nginx on another node (`proxy_next_upstream error ... non_idempotent`); the only
/// request nginx cannot retry is one whose answer had already started streaming (SSE) from the
/// killed node, and the client then resumes it on another node, which ends it with a JSON-RPC
/// error unless the result was already logged. So: no HTTP error and no transport error at all,
/// and at most one cut stream per session. A request the killed node executed without
/// answering may be recorded without being acknowledged (nginx retries it elsewhere, or it is
/// one of the cut ones); those are bounded by the non-"connection refused" upstream errors
/// nginx logged for the killed node plus the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_loses_no_acknowledged_calculation() {
    const SESSIONS: usize = 5;
    const CALLS: usize = 30; // Below the history cap (50): the whole history can be checked.
    const VICTIM: usize = 1;
    let mut cluster = Cluster::start(3, &[]);
    let lb = cluster.lb_mcp();
    let mut sids = Vec::new();
    for _ in 0..SESSIONS {
        sids.push(lb.initialize().await);
    }
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = sids
        .iter()
        .enumerate()
        .map(|(s, sid)| {
            let (lb, sid, killed, acked) = (lb.clone(), sid.clone(), killed.clone(), acked.clone());
            tokio::spawn(async move {
                let mut log = SessionLog::default();
                for i in 0..CALLS {
                    let after_kill = killed.load(Ordering::SeqCst);
                    let outcome = calculate(&lb, &sid, i as i64 + 1, (s * 1000 + i) as i64).await;
                    if outcome.is_ok() {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    log.record(outcome, after_kill);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                log
            })
        })
        .collect();

    // Kill in the middle: once a third of all calls are acknowledged.
    let third = (SESSIONS * CALLS / 3) as u64;
    assert!(
        eventually(Duration::from_secs(20), || async {
            acked.load(Ordering::SeqCst) >= third
        })
        .await,
        "the load did not start"
    );
    let victim_served = cluster.node_requests(VICTIM).await;
    assert!(
        victim_served >= SESSIONS as u64,
        "the victim served too little before the kill ({victim_served} requests)"
    );
    let victim = format!("127.0.0.1:{}", cluster.ports()[VICTIM]);
    cluster.kill9(VICTIM);
    killed.store(true, Ordering::SeqCst);
    let acked_at_kill = acked.load(Ordering::SeqCst);

    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.expect("load task"));
    }
    assert!(!cluster.is_up(VICTIM));
    assert!(cluster.is_up(0) && cluster.is_up(2), "a survivor died");

    // nginx did meet the dead node and retried elsewhere.
    let errors = cluster.lb.error_log();
    let at_victim: Vec<&str> = errors.lines().filter(|l| l.contains(&victim)).collect();
    let refused = at_victim
        .iter()
        .filter(|l| l.contains("connect() failed"))
        .count();
    let ambiguous = at_victim
        .iter()
        .filter(|l| l.contains("[error]") && !l.contains("connect() failed"))
        .count();
    assert!(
        refused > 0,
        "nginx never tried the dead node after the kill, the retry path was not exercised:\n{errors}"
    );

    let failures: Vec<&Failure> = logs.iter().flat_map(|l| &l.failed).collect();
    let acked_total: usize = logs.iter().map(|l| l.acked.len()).sum();
    let resumed: usize = logs.iter().map(|l| l.resumed).sum();
    eprintln!(
        "[kill -9] acknowledged {acked_total}/{} calls ({acked_at_kill} before the kill, \
         {resumed} through a resumed stream), failed {}, nginx upstream errors at the dead node: \
         {refused} refused connects, {ambiguous} others",
        SESSIONS * CALLS,
        failures.len()
    );
    assert!(
        failures.iter().all(|f| f.cut),
        "only a stream already running on the killed node may fail:{}",
        list(&failures)
    );
    for log in &logs {
        assert!(
            log.failed.len() <= 1,
            "one request in flight per session: {log:#?}"
        );
    }

    let mut unacknowledged_total = 0u64;
    for (sid, log) in sids.iter().zip(&logs) {
        assert!(
            log.acked_after_fault >= 5,
            "session {sid} stopped working after the kill: {log:#?}"
        );
        let recorded = total_calculations(&lb, sid).await;
        let ack = log.acked.len() as u64;
        let history = history_ids(&cluster, sid);
        assert_eq!(
            history.len() as u64,
            recorded,
            "history (below the cap) and totalCalculations disagree"
        );
        let unique: HashSet<&String> = history.iter().collect();
        assert_eq!(unique.len(), history.len(), "duplicate calculation ids");
        let lost: Vec<&String> = log.acked.iter().filter(|id| !unique.contains(id)).collect();
        assert!(lost.is_empty(), "acknowledged but not recorded: {lost:?}");
        assert!(
            ack <= recorded && recorded <= ack + log.failed.len() as u64 + ambiguous as u64,
            "session {sid}: acknowledged {ack}, recorded {recorded}, failed {}, ambiguous {ambiguous}",
            log.failed.len()
        );
        unacknowledged_total += recorded - ack;
    }
    assert!(
        unacknowledged_total <= (failures.len() + ambiguous) as u64,
        "{unacknowledged_total} recorded calculations were never acknowledged, more than the \
         {} failed and {ambiguous} possibly re-sent requests",
        failures.len()
    );

    // A session created after the kill works too, and the survivors agree.
    let sid = lb.initialize().await;
    let answer = lb.call_tool(&sid, "calculate", calc(1)).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    for n in [0, 2] {
        assert_eq!(total_calculations(&cluster.node(n).mcp(), &sid).await, 1);
    }
}

/// Rolling restart under load: 50 sessions calculate continuously through nginx while each of
/// three nodes in turn is drained with SIGTERM (readiness 503, new connections refused, which
/// nginx retries on another node; connections already open answered with `Connection: close`),
/// exits, and is started again. No request fails, no session is lost, and every session's total
/// equals what its client was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_request() {
    const SESSIONS: usize = 50;
    let mut cluster = Cluster::start(3, &[("SHUTDOWN_GRACE", "2000")]);
    let lb = cluster.lb_mcp();
    let load = Load::start(&lb, SESSIONS).await;
    load.wait_running().await;
    let started = Instant::now();
    let mut holders = Vec::new();
    for i in 0..3 {
        let before = load.acked();
        // Work in flight on the node when it is told to stop: a 1 s `demo_progress` stream,
        // which keeps the drain open (within SHUTDOWN_GRACE) while the load goes on.
        let node = cluster.node(i).mcp();
        let holder = node.initialize().await;
        let long = request(
            77,
            "tools/call",
            tool_params_with_progress("demo_progress", json!({ "steps": 5 }), json!("hold")),
        );
        let mut held = node.post_stream(Some(&holder), &[], &long).await;
        assert_eq!(held.status, 200, "demo_progress on node {i}");
        let mut last_id = None;
        loop {
            let ev = held
                .next_within(Duration::from_secs(5))
                .await
                .expect("the long call streams");
            last_id = ev.id.clone().or(last_id);
            if ev
                .json()
                .is_some_and(|m| m["method"] == "notifications/progress")
            {
                break;
            }
        }
        // While the node drains: readiness 503 and new connections refused (nginx retries
        // them elsewhere), but a connection opened before is still served, with
        // `Connection: close` (here one sent to the node directly, as a Service would).
        let addr = format!("127.0.0.1:{}", cluster.ports()[i]);
        let mut held_conn = KeepAlive::connect(&addr).await.expect("connect");
        let first = held_conn.send("GET", "/health/ready", &[], None).await;
        assert_eq!(first.expect("ready before SIGTERM").status, 200);
        let probe = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let refused = tokio::net::TcpStream::connect(&addr).await.is_err();
            let body = request(78, "tools/call", tool_params("calculate", calc(1)));
            let session = [("Mcp-Session-Id", holder.as_str())];
            let served = held_conn.send("POST", "/mcp", &session, Some(&body)).await;
            (refused, served)
        };
        let (exited, (refused, served)) =
            tokio::join!(cluster.sigterm_and_wait(i, Duration::from_secs(10)), probe);
        assert!(
            exited.status.success(),
            "node {i} exited with {:?}: {}",
            exited.status,
            exited.stdout
        );
        assert!(refused, "node {i} accepted a new connection while draining");
        let served = served.unwrap_or_else(|e| panic!("node {i} draining: calculate: {e}"));
        assert_eq!(served.status, 200, "node {i} draining: {served:?}");
        assert_eq!(served.json()["result"]["isError"], false, "{served:?}");
        assert_eq!(served.header("connection"), Some("close"), "{served:?}");
        assert!(
            exited.elapsed >= Duration::from_millis(300),
            "node {i} exited after {:?}, without waiting for its in-flight call",
            exited.elapsed
        );
        // The held stream was closed with a `retry:` hint; the call finished during the drain.
        while let Some(ev) = held.next_within(Duration::from_secs(5)).await {
            last_id = ev.id.clone().or(last_id);
        }
        holders.push((holder, last_id.expect("event ids")));

        cluster.restart(i);
        let ready = wait_ok(
            &cluster.node_url(i, "/health/ready"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|| panic!("node {i} not ready within 10 s of its restart"));
        // The restarted node takes its share of the load again.
        assert!(
            eventually(Duration::from_secs(5), || async {
                cluster.node_requests(i).await >= 20
            })
            .await,
            "restarted node {i} gets no load"
        );
        let during = load.acked() - before;
        eprintln!(
            "[rolling] node {i}: drained and exited in {:?}, ready {ready:?} after restart, \
             {during} calls acknowledged meanwhile",
            exited.elapsed
        );
        assert!(during > 0, "the load stalled while node {i} restarted");
    }
    let rolling = started.elapsed();
    let sids = load.sids.clone();
    let logs = load.finish().await;

    // nginx met every draining node's refused connect and retried elsewhere.
    let access = cluster.lb.access_log();
    let retried = retried_failures(&access);
    let retried_total: usize = retried.values().sum();
    for (i, port) in cluster.ports().iter().enumerate() {
        let n = retried
            .get(&format!("127.0.0.1:{port}"))
            .copied()
            .unwrap_or(0);
        assert!(
            n > 0,
            "no request met draining node {i} refusing and was retried: {retried:?}"
        );
    }
    let failures: Vec<&Failure> = logs.iter().flat_map(|l| &l.failed).collect();
    let acked_total: usize = logs.iter().map(|l| l.acked.len()).sum();
    let resumed: usize = logs.iter().map(|l| l.resumed).sum();
    eprintln!(
        "[rolling] {rolling:?}: {acked_total} calls acknowledged, {} failed, {resumed} through a \
         resumed stream, {retried_total} requests retried by nginx after a refused connect",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests:{}", list(&failures));

    // Every session is alive and counted exactly what was acknowledged.
    for (sid, log) in sids.iter().zip(&logs) {
        assert!(!log.acked.is_empty(), "session {sid} never got an answer");
        let recorded = total_calculations(&lb, sid).await;
        assert_eq!(
            recorded,
            log.acked.len() as u64,
            "session {sid}: totalCalculations vs acknowledged calls"
        );
    }
    for i in 0..3 {
        assert!(cluster.is_up(i), "node {i} is down at the end");
    }
    // The calls in flight at each SIGTERM finished: resumed on another node, they end with
    // their result; and the calculation sent on the held connection while draining counted
    // exactly once.
    for (holder, last_id) in &holders {
        let mut resumed = lb.get_stream(Some(holder), Some(last_id)).await;
        assert_eq!(resumed.status, 200, "resume {last_id}");
        let rest = resumed.rest(Duration::from_secs(5)).await;
        let done = rest
            .iter()
            .filter_map(|e| e.json())
            .find(|m| m["id"] == 77)
            .unwrap_or_else(|| panic!("no final message after {last_id}: {rest:?}"));
        assert!(done["result"].is_object(), "{done}");
        assert_eq!(total_calculations(&lb, holder).await, 1);
    }
}

/// A rolling restart behind a plain Kubernetes Service, which balances connections and retries
/// nothing: nginx at layer 4 in front of 3 nodes, 50 sessions calculating continuously through
/// it with kept-alive connections. Each node in turn leaves the Service (its endpoint removed,
/// as when a pod starts terminating), then after a preStop pause gets SIGTERM while clients
/// still hold connections to it and a 1 s call is in flight on it (which keeps its drain open),
/// exits, restarts and rejoins. Not one request fails: the draining node answers the
/// connections it holds (with `Connection: close`) instead of refusing the work, so each
/// client's next request opens a connection to another node; the held call's result is there
/// for its client to resume through the Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_a_layer4_service_fails_no_request() {
    const SESSIONS: usize = 50;
    const PRE_STOP: Duration = Duration::from_millis(300);
    let mut cluster = Cluster::start(3, &[("SHUTDOWN_GRACE", "2000")]);
    let all: Vec<u16> = cluster.ports().to_vec();
    let mut service = Nginx::start_service(&all);
    let mcp = service.mcp();
    let load = Load::start_separate_clients(&mcp, SESSIONS).await;
    load.wait_running().await;
    let started = Instant::now();
    let mut held_at_sigterm = Vec::new();
    let mut held_calls = Vec::new();
    for i in 0..3 {
        let before = load.acked();
        let others: Vec<u16> = all.iter().copied().filter(|p| *p != all[i]).collect();
        tokio::task::block_in_place(|| service.reload_with(&others));
        tokio::time::sleep(PRE_STOP).await;
        // Connections the clients still hold to the node (the balancer's old worker keeps
        // them, as conntrack keeps a removed endpoint's connections), less the one asking.
        let m = cluster.node(i).metrics().await;
        held_at_sigterm.push(metric(&m, "abacus_http_connections", &[]) - 1.0);
        let held = HeldCall::start(&cluster.node(i).mcp()).await;
        let exited = cluster.sigterm_and_wait(i, Duration::from_secs(10)).await;
        held_calls.push(held.finish().await);
        assert!(
            exited.status.success(),
            "node {i} exited with {:?}: {}",
            exited.status,
            exited.stdout
        );
        cluster.restart(i);
        wait_ok(
            &cluster.node_url(i, "/health/ready"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|| panic!("node {i} not ready within 10 s of its restart"));
        tokio::task::block_in_place(|| service.reload_with(&all));
        let during = load.acked() - before;
        eprintln!(
            "[service] node {i}: left the Service, drained with {} connections held, exited in \
             {:?}; {during} calls acknowledged meanwhile",
            held_at_sigterm[i], exited.elapsed
        );
        assert!(during > 0, "the load stalled while node {i} restarted");
    }
    let rolling = started.elapsed();
    let sids = load.sids.clone();
    let logs = load.finish().await;
    let failures: Vec<&Failure> = logs.iter().flat_map(|l| &l.failed).collect();
    let acked_total: usize = logs.iter().map(|l| l.acked.len()).sum();
    eprintln!(
        "[service] {rolling:?}: {acked_total} calls acknowledged, {} failed",
        failures.len()
    );
    // The test means something only if clients did hold connections to each draining node.
    assert!(
        held_at_sigterm.iter().all(|n| *n >= 5.0),
        "no connection was held to a node at SIGTERM: {held_at_sigterm:?}"
    );
    assert!(failures.is_empty(), "failed requests:{}", list(&failures));
    assert_nothing_lost(&mcp, &sids, &logs).await;
    for held in &held_calls {
        held.assert_finished(&mcp).await;
    }
}

/// Waits (up to 10 s) until every node is ready again after Redis came back; returns how long.
async fn all_ready_again(cluster: &Cluster) -> Duration {
    let back = Instant::now();
    for n in 0..cluster.node_count() {
        wait_ok(
            &cluster.node_url(n, "/health/ready"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|| panic!("node {n} not ready within 10 s of Redis coming back"));
    }
    back.elapsed()
}

/// Redis stopped gracefully (AOF) and started again: during the outage every store-bound
/// request gets a quick 503 with a JSON-RPC error (never 404, never a hang), readiness is 503,
/// `/health` says Redis is unreachable and no node crashes; once Redis is back the nodes recover
/// by themselves, with every session and its history intact.
#[tokio::test]
async fn redis_restart_with_aof_keeps_sessions_and_nodes_recover() {
    const LIMIT: Duration = Duration::from_secs(3);
    let mut cluster =
        Cluster::start_with_redis(Redis::start_aof(), 2, &[("REDIS_COMMAND_TIMEOUT", "500")]);
    let lb = cluster.lb_mcp();
    let mut sessions = Vec::new();
    for k in 0..3u64 {
        let sid = lb.initialize().await;
        for i in 0..=k {
            let answer = lb.call_tool(&sid, "calculate", calc(i as i64)).await;
            assert_eq!(answer["result"]["isError"], false, "{answer}");
        }
        sessions.push((sid, k + 1));
    }
    for (sid, n) in &sessions {
        assert_eq!(total_calculations(&lb, sid).await, *n);
    }
    let (sid, _) = sessions[0].clone();

    cluster.redis.stop();
    assert!(!cluster.redis.ping());
    let mut slowest = Duration::ZERO;
    // Twice: right after the stop (a node may not have noticed yet and still trust its cached
    // record of the session), and once the nodes have noticed and retried for a while.
    for round in 0..2 {
        for n in 0..2 {
            let node = cluster.node(n).mcp();
            let what = |w: &str| format!("round {round}, node {n}: {w}");
            let body = request(31, "tools/call", tool_params("calculate", calc(5)));
            let (resp, took) = store_bound_post(&node, Some(&sid), &body).await;
            assert_unavailable(&what("calculate"), &resp, took, LIMIT);
            slowest = slowest.max(took);
            // A ping needs nothing but the session record: in round 0 the node may still serve
            // it from its cache (200); it must never say "not found".
            let (resp, took) =
                store_bound_post(&node, Some(&sid), &request(32, "ping", json!({}))).await;
            if round == 0 && resp.status == 200 {
                assert!(
                    resp.single_answer()["result"].is_object(),
                    "{:?}",
                    resp.text
                );
                assert!(took < LIMIT, "{}: {took:?}", what("ping"));
            } else {
                assert_unavailable(&what("ping"), &resp, took, LIMIT);
            }
            let (resp, took) = store_bound_post(&node, None, &initialize_request(LEGACY)).await;
            assert_unavailable(&what("initialize"), &resp, took, LIMIT);
            assert!(
                resp.header("mcp-session-id").is_none(),
                "{}",
                what("initialize")
            );
            let resp = node.get(Some(&sid), None).await;
            assert_eq!(resp.status, 503, "{}: {:?}", what("GET"), resp.text);
            let resp = node.delete(Some(&sid)).await;
            assert_eq!(resp.status, 503, "{}: {:?}", what("DELETE"), resp.text);

            let (status, body, took) = get(&cluster.node_url(n, "/health/ready")).await;
            assert_eq!(status, 503, "{}: {body}", what("ready"));
            assert!(took < LIMIT, "{}: {took:?}", what("ready"));
            let (status, body, took) = get(&cluster.node_url(n, "/health")).await;
            assert_eq!(status, 503, "{}: {body}", what("health"));
            assert!(took < LIMIT, "{}: {took:?}", what("health"));
            let health: Value = serde_json::from_str(&body).expect("/health JSON");
            assert_eq!(health["redis"], "unreachable", "{health}");
            assert_eq!(health["status"], "unhealthy", "{health}");
            assert_eq!(health["storageMode"], "redis", "{health}");
            let (status, body, _) = get(&cluster.node_url(n, "/health/live")).await;
            assert_eq!(status, 200, "{}: {body}", what("live"));
        }
        // Through the balancer (which tries the other node too): still a quick 503.
        let body = request(33, "tools/call", tool_params("calculate", calc(6)));
        let (resp, took) = store_bound_post(&lb, Some(&sid), &body).await;
        assert_unavailable(&format!("round {round}, through nginx"), &resp, took, LIMIT);
        slowest = slowest.max(took);
        for n in 0..2 {
            assert!(cluster.is_up(n), "node {n} crashed during the outage");
        }
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }

    cluster.redis.start_again();
    let recovered = all_ready_again(&cluster).await;
    eprintln!(
        "[redis stop] slowest 503 during the outage {slowest:?}; ready again after {recovered:?}"
    );
    for n in 0..2 {
        assert!(cluster.is_up(n), "node {n} crashed");
        let h = cluster.node(n).health().await;
        assert_eq!(h["redis"], "connected", "{h}");
    }
    // The sessions survived with their history; the requests refused during the outage left
    // no trace; and they work again on every node.
    for (sid, n) in &sessions {
        assert_eq!(history_ids(&cluster, sid).len() as u64, *n);
        for node in 0..2 {
            let mcp = cluster.node(node).mcp();
            assert_eq!(total_calculations(&mcp, sid).await, *n, "node {node}");
        }
        for node in 0..2 {
            let mcp = cluster.node(node).mcp();
            let answer = mcp.call_tool(sid, "calculate", calc(7)).await;
            assert_eq!(answer["result"]["isError"], false, "node {node}: {answer}");
        }
        assert_eq!(total_calculations(&lb, sid).await, n + 2);
    }
    let fresh = lb.initialize().await;
    let answer = lb.call_tool(&fresh, "calculate", calc(8)).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
}

/// Redis frozen (SIGSTOP: connections stay open, nothing answers) then killed without a save
/// and started again: while frozen, store-bound requests get 503 after one command timeout
/// (1 s here; not two) instead of hanging, and readiness is 503; after the restart the nodes
/// recover by themselves and the AOF (fsync always) kept every acknowledged calculation, and
/// nothing else.
#[tokio::test]
async fn a_frozen_then_killed_redis_is_a_bounded_outage() {
    // Under twice the command timeout: a request waits on the frozen store once.
    const LIMIT: Duration = Duration::from_millis(1900);
    let mut cluster =
        Cluster::start_with_redis(Redis::start_aof(), 2, &[("REDIS_COMMAND_TIMEOUT", "1000")]);
    let lb = cluster.lb_mcp();
    let sid = lb.initialize().await;
    for i in 0..4 {
        let answer = lb.call_tool(&sid, "calculate", calc(i)).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    // Warm both nodes' caches, so the frozen store is met on the write, not the load.
    for n in 0..2 {
        let mcp = cluster.node(n).mcp();
        assert_eq!(total_calculations(&mcp, &sid).await, 4);
    }

    let pid = cluster.redis.pid().expect("redis runs");
    signal(pid, "STOP");
    let mut slowest = Duration::ZERO;
    for n in 0..2 {
        let node = cluster.node(n).mcp();
        let body = request(41, "tools/call", tool_params("calculate", calc(9)));
        let (resp, took) = store_bound_post(&node, Some(&sid), &body).await;
        eprintln!(
            "[redis freeze+kill] node {n}: calculate answered {} in {took:?}",
            resp.status
        );
        assert_unavailable(&format!("frozen, node {n}: calculate"), &resp, took, LIMIT);
        slowest = slowest.max(took);
        // A ping may be served from the node's cache; it must never say "not found".
        let (resp, took) =
            store_bound_post(&node, Some(&sid), &request(42, "ping", json!({}))).await;
        assert!(
            resp.status == 200 || resp.status == 503,
            "frozen, node {n}: ping: {} {:?}",
            resp.status,
            resp.text
        );
        assert!(took < LIMIT, "frozen, node {n}: ping took {took:?}");
        let (status, body, took) = get(&cluster.node_url(n, "/health/ready")).await;
        assert_eq!(status, 503, "frozen, node {n}: ready: {body}");
        assert!(took < LIMIT, "frozen, node {n}: ready took {took:?}");
        assert!(cluster.is_up(n), "node {n} crashed while Redis was frozen");
    }

    cluster.redis.kill();
    cluster.redis.start_again();
    let recovered = all_ready_again(&cluster).await;
    eprintln!(
        "[redis freeze+kill] slowest 503 while frozen {slowest:?}; ready again after {recovered:?}"
    );
    for n in 0..2 {
        assert!(cluster.is_up(n), "node {n} crashed");
        let mcp = cluster.node(n).mcp();
        assert_eq!(
            total_calculations(&mcp, &sid).await,
            4 + n as u64,
            "node {n}: the 4 acknowledged calculations (and this test's own since), no more"
        );
        let answer = mcp.call_tool(&sid, "calculate", calc(10)).await;
        assert_eq!(answer["result"]["isError"], false, "node {n}: {answer}");
    }
    assert_eq!(history_ids(&cluster, &sid).len(), 6);
}

/// Issue 13, item 9: once a node's store has shut down (the end of its drain), its heartbeat
/// never writes its liveness key again, so the other nodes see it gone at once and end its
/// orphaned streams without waiting for the lease to run out.
#[tokio::test]
async fn a_shut_down_store_never_recreates_its_liveness_key() {
    use abacus::session::redis::{RedisConfig, RedisStore};
    use abacus::session::{SessionPolicy, SessionStore};
    let redis = Redis::start();
    let node_id = "test-node-liveness".to_owned();
    let store = RedisStore::connect(RedisConfig {
        url: redis.url(),
        password: None,
        tls_ca: None,
        command_timeout: Duration::from_secs(2),
        policy: SessionPolicy::new(Duration::from_secs(60), Duration::from_secs(600), 100, 50),
        events_per_stream: 100,
        cache_capacity: 100,
        node_id: node_id.clone(),
    })
    .await
    .expect("connect");
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("abacus:node:{node_id}");
    let exists = |conn: &redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let alive = eventually(Duration::from_secs(3), || async {
        exists(&conn).await == 1
    })
    .await;
    assert!(alive, "the heartbeat never wrote the liveness key");
    store.shutdown().await;
    assert_eq!(exists(&conn).await, 0, "shutdown left the liveness key");
    // Three heartbeat periods later (the store object is still alive), still gone.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        exists(&conn).await,
        0,
        "the heartbeat re-created the liveness key after shutdown"
    );
}

/// Issue 13, item 10: a calculation whose Redis write ran but timed out on the node's side
/// (the client gets a 503, which a balancer or the client retries) is recorded once when the
/// same request comes again, and the retry's answer names the entry that was stored.
#[tokio::test]
async fn a_retried_write_that_already_ran_is_recorded_once() {
    let redis = Redis::start_with_args(false, &["--enable-debug-command", "yes"]);
    let url = redis.url();
    let node = redis.node(&[("REDIS_COMMAND_TIMEOUT", "200")]);
    let mcp = node.mcp();
    let sid = mcp.initialize().await;
    let warm = mcp.call_tool(&sid, "calculate", calc(1)).await;
    assert_eq!(warm["result"]["isError"], false, "{warm}");
    // Redis stalls for 1 s: the node's next write waits in its queue, times out after 200 ms,
    // and runs when Redis wakes up.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut sleeper = client.get_connection().unwrap();
    let stall = tokio::task::spawn_blocking(move || {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1)
            .query::<()>(&mut sleeper)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = request(7, "tools/call", tool_params("calculate", calc(5)));
    let first = mcp.post(Some(&sid), &body).await;
    assert_ne!(
        first.status, 200,
        "the write did not time out: {}",
        first.text
    );
    stall.await.unwrap().expect("DEBUG SLEEP");
    let retry = mcp.post(Some(&sid), &body).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    let answer = retry.answer(&json!(7));
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let id = answer["result"]["structuredContent"]["id"]
        .as_str()
        .expect("calculation id")
        .to_owned();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("abacus:{{{sid}}}:hist"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2, "recorded twice: {entries:?}");
    assert!(
        entries[1].contains(&id),
        "the retry's answer names {id}, not the stored entry {}",
        entries[1]
    );
    assert_eq!(total_calculations(&mcp, &sid).await, 2);
}

/// Issue 13, item 10: a Redis error that retrying cannot cure (here a script meeting a key of
/// the wrong type) is an internal error answered at once, not a 503 with `Retry-After` that
/// clients and balancers would retry forever.
#[tokio::test]
async fn a_permanent_redis_error_is_not_answered_as_retryable() {
    let redis = Redis::start();
    let url = redis.url();
    let node = redis.node(&[]);
    let mcp = node.mcp();
    let sid = mcp.initialize().await;
    let warm = mcp.call_tool(&sid, "calculate", calc(1)).await;
    assert_eq!(warm["result"]["isError"], false, "{warm}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let hist = format!("abacus:{{{sid}}}:hist");
    let _: () = redis::cmd("DEL")
        .arg(&hist)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&hist)
        .arg("not a list")
        .query_async(&mut conn)
        .await
        .unwrap();
    let resp = mcp
        .post(
            Some(&sid),
            &request(9, "tools/call", tool_params("calculate", calc(2))),
        )
        .await;
    assert_ne!(resp.status, 503, "{}", resp.text);
    assert!(resp.header("retry-after").is_none(), "{:?}", resp.headers);
    let answer = resp.answer(&json!(9));
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    // Everything else about the session still works.
    assert_eq!(
        mcp.rpc(&sid, 10, "ping", json!({})).await["result"],
        json!({})
    );
}
