//! Graceful shutdown (D3): on SIGTERM/SIGINT readiness fails at once, new work is refused, open
//! streams get `retry:` and close, in-flight calls finish within the grace period, sessions are
//! left alone, and the process exits 0.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

/// Starts a modern demo_progress call with a token and waits for its first progress, so that
/// it is in flight (it lasts `steps` x 200 ms).
async fn in_flight_modern_call(mcp: &Mcp, steps: u64) -> SseStream {
    let body = modern_request(
        "work",
        "tools/call",
        tool_params_with_progress("demo_progress", json!({ "steps": steps }), json!("p")),
    );
    let mut s = mcp.modern_stream(&body).await;
    assert_eq!(s.status, 200);
    let first = s.next_message(T).await.expect("first progress");
    assert_eq!(first["method"], "notifications/progress");
    s
}

/// Opens `n` kept-alive connections, each proven open by one answered request.
async fn held_connections(server: &Server, n: usize) -> Vec<KeepAlive> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut c = KeepAlive::connect(&server.addr).await.unwrap();
        let a = c.send("GET", "/health/live", &[], None).await.unwrap();
        assert_eq!(a.status, 200);
        assert_ne!(a.header("connection"), Some("close"), "{a:?}");
        out.push(c);
    }
    out
}

// D3: on SIGTERM readiness fails and no new connection is accepted, so a load balancer or a
// Service stops sending work; but a connection a client already holds (a Service balances
// connections, not requests) is still answered, every kind of request, each answer with
// `Connection: close` so that the client's next request goes to another pod. No request that
// reached the pod fails.
#[tokio::test]
async fn sigterm_stops_accepting_and_answers_held_connections_once_with_close() {
    let server = Server::start(&[("SHUTDOWN_GRACE", "5000")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut held = held_connections(&server, 6).await;
    // 20 steps (4 s) keep the process up during the checks; dropping the stream at the end
    // cancels the call so the process can exit early.
    let call = in_flight_modern_call(&mcp, 20).await;
    server.sigterm();
    let refused = eventually(Duration::from_millis(1000), || async {
        tokio::net::TcpStream::connect(server.addr.clone())
            .await
            .is_err()
    })
    .await;
    assert!(refused, "new connections are still accepted while draining");

    let ready = held[0]
        .send("GET", "/health/ready", &[], None)
        .await
        .unwrap();
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.json()["status"], "draining");
    let health = held[1].send("GET", "/health", &[], None).await.unwrap();
    assert_eq!(health.json()["status"], "draining", "{health:?}");
    let live = held[2]
        .send("GET", "/health/live", &[], None)
        .await
        .unwrap();
    assert_eq!(live.status, 200, "liveness does not fail while draining");
    let session = [("Mcp-Session-Id", sid.as_str())];
    let call_body = request(
        1,
        "tools/call",
        tool_params("calculate", json!({ "a": 2, "b": 3, "op": "add" })),
    );
    let legacy = held[3]
        .send("POST", "/mcp", &session, Some(&call_body))
        .await
        .unwrap();
    assert_eq!(legacy.status, 200, "{legacy:?}");
    assert_eq!(legacy.json()["result"]["isError"], false, "{legacy:?}");
    let fresh = held[4]
        .send("POST", "/mcp", &[], Some(&initialize_request(LEGACY)))
        .await
        .unwrap();
    assert_eq!(fresh.status, 200, "{fresh:?}");
    assert!(fresh.header("mcp-session-id").is_some(), "{fresh:?}");
    let body = modern_request(2, "tools/list", json!({}));
    let headers = modern_headers(&body);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let modern = held[5]
        .send("POST", "/mcp", &headers, Some(&body))
        .await
        .unwrap();
    assert_eq!(modern.status, 200, "{modern:?}");
    assert!(modern.json()["result"]["tools"].is_array(), "{modern:?}");
    for (conn, answer) in held
        .iter_mut()
        .zip([&ready, &health, &live, &legacy, &fresh, &modern])
    {
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        assert!(
            conn.closed_within(T).await,
            "the connection stays open after Connection: close"
        );
    }
    drop(call);
}

// D3: a kept-alive connection that sends nothing is closed once the in-flight work is done
// (after a short linger), and the process exits 0.
#[tokio::test]
async fn idle_held_connections_are_closed_after_the_drain() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "5000")]);
    let mut held = held_connections(&server, 2).await;
    let signalled = Instant::now();
    server.sigterm();
    for conn in &mut held {
        assert!(
            conn.closed_within(T).await,
            "an idle connection stayed open"
        );
    }
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "idle connections closed {closed_after:?} after SIGTERM, before the linger"
    );
    let status = server.wait_exit().await;
    assert!(status.success(), "{status:?}");
}

// D3: an in-flight call finishes with its result after SIGTERM, and the process then exits 0
// within the grace period (not before the call finished).
#[tokio::test]
async fn in_flight_call_completes_and_process_exits_zero() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "5000")]);
    let mcp = server.mcp();
    let mut call = in_flight_modern_call(&mcp, 5).await;
    let signalled = Instant::now();
    server.sigterm();
    let events = call.rest(T).await;
    let messages: Vec<Value> = events.iter().filter_map(|e| e.json()).collect();
    let result = messages.last().expect("messages after SIGTERM");
    assert_eq!(result["id"], "work", "{messages:?}");
    assert_eq!(
        result["result"]["content"][0]["text"],
        "Progress demonstration completed with 5 steps"
    );
    let status = server
        .wait_exit_within(Duration::from_secs(6))
        .await
        .expect("exit within the grace period");
    assert!(status.success(), "{status:?}\n{}", server.stdout());
    assert!(signalled.elapsed() < Duration::from_secs(6));
}

// D3: an open GET stream gets a `retry:` hint and is closed, so the client reconnects elsewhere.
#[tokio::test]
async fn open_get_stream_gets_retry_and_closes() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "5000")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let mut g = mcp.get_stream(Some(&sid), None).await;
    assert!(g.next_within(T).await.unwrap().is_priming());
    server.sigterm();
    let rest = g.rest(T).await;
    assert!(
        rest.last().and_then(|e| e.retry).is_some(),
        "retry: before close: {rest:?}"
    );
    assert!(server.wait_exit().await.success());
}

// D3: a legacy POST stream is closed with `retry:` too; the call's events stay in the session's
// event log (replayable on another node with a shared store).
#[tokio::test]
async fn legacy_post_stream_gets_retry_and_closes() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "5000")]);
    let mcp = server.mcp();
    let sid = mcp.initialize().await;
    let body = request(
        3,
        "tools/call",
        tool_params_with_progress("demo_progress", json!({"steps": 3}), json!("l")),
    );
    let mut s = mcp.post_stream(Some(&sid), &[], &body).await;
    assert!(s.next_within(T).await.unwrap().is_priming());
    server.sigterm();
    let rest = s.rest(T).await;
    assert!(rest.last().and_then(|e| e.retry).is_some(), "{rest:?}");
    assert!(server.wait_exit().await.success());
}

// D3: sessions are not deleted on shutdown. With the in-memory store nothing outlives the
// process, so this checks what can be seen from outside: no "session deleted" log line, no
// DELETE counted, and a clean exit. (Persistence across restarts needs the Redis store.)
#[tokio::test]
async fn shutdown_does_not_delete_sessions() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "2000")]);
    let mcp = server.mcp();
    let _a = mcp.initialize().await;
    let _b = mcp.initialize().await;
    let m = server.metrics().await;
    assert_eq!(metric(&m, "mcp_active_sessions", &[]), 2.0);
    server.sigterm();
    let status = server.wait_exit().await;
    assert!(status.success(), "{status:?}");
    let out = server.stdout();
    assert!(out.contains("shutdown complete"), "{out}");
    assert!(!out.contains("session deleted"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("deleting session"),
        "{out}"
    );
}

// D3: SIGINT drains like SIGTERM (the reference had no SIGINT handler).
#[tokio::test]
async fn sigint_also_shuts_down_gracefully() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "2000")]);
    server.mcp().initialize().await;
    server.signal("INT");
    let status = server.wait_exit().await;
    assert!(status.success(), "{status:?}");
    assert!(server.stdout().contains("shutdown complete"));
}

// D3: the drain is bounded: work that outlasts SHUTDOWN_GRACE does not keep the process alive
// for its whole duration (100 steps would take 20 s).
#[tokio::test]
async fn shutdown_is_bounded_when_work_outlasts_the_grace_period() {
    let mut server = Server::start(&[("SHUTDOWN_GRACE", "1000")]);
    let mcp = server.mcp();
    let _call = in_flight_modern_call(&mcp, 100).await;
    server.sigterm();
    let status = server
        .wait_exit_within(Duration::from_secs(12))
        .await
        .expect("exit well before the 20 s call would finish");
    assert!(status.code().is_some(), "exited by itself: {status:?}");
    assert!(
        server.stdout().contains("grace period over"),
        "{}",
        server.stdout()
    );
}
