//! A client load that behaves like a real Streamable HTTP client, for the tests that stop,
//! kill or replace nodes under it (tests/failover.rs, tests/image.rs).
//!
//! A call answered as JSON is done; a call answered as an SSE stream that ends without its
//! result (the node drained or died) is resumed with `GET` + `Last-Event-ID` through the
//! balancer, on whichever node it picks. A call is *acknowledged* when the client got its result.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::*;

/// The arguments of `calculate` for `a + 1`.
pub fn calc(a: i64) -> Value {
    json!({ "a": a, "b": 1, "op": "add" })
}

/// A calculation the client got a result for.
#[derive(Debug)]
pub struct Ack {
    /// The calculation id from `structuredContent.id`.
    pub calc_id: String,
    /// The result came through a resumed stream (not the original response).
    pub resumed: bool,
}

/// A call the client got no result for.
#[derive(Debug)]
pub struct Failure {
    /// `transport`, `status`, `no-answer` or `error-answer`.
    pub kind: &'static str,
    /// The original response was an SSE stream that ended early and was resumed: the node
    /// answering it went away while the request was already streaming.
    pub cut: bool,
    pub detail: String,
}

pub fn failure(kind: &'static str, cut: bool, detail: impl std::fmt::Display) -> Failure {
    Failure {
        kind,
        cut,
        detail: detail.to_string(),
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = if self.cut {
            " (cut stream, resumed)"
        } else {
            ""
        };
        write!(f, "{}{cut}: {}", self.kind, self.detail)
    }
}

/// One failure per line.
pub fn list(failures: &[&Failure]) -> String {
    failures.iter().map(|f| format!("\n  {f}")).collect()
}

/// Judges the answer message of a calculate call.
pub fn judge(msg: &Value, resumed: bool) -> Result<Ack, Failure> {
    match msg["result"]["structuredContent"]["id"].as_str() {
        Some(id) if msg["result"]["isError"] == false => Ok(Ack {
            calc_id: id.to_owned(),
            resumed,
        }),
        _ => Err(failure("error-answer", resumed, msg)),
    }
}

/// One `tools/call calculate` on a session, resuming a cut SSE answer (at most 3 times).
/// Never panics: every way it can end is reported.
pub async fn calculate(mcp: &Mcp, sid: &str, id: i64, a: i64) -> Result<Ack, Failure> {
    const LIMIT: Duration = Duration::from_secs(15);
    let body = request(id, "tools/call", tool_params("calculate", calc(a)));
    let resp = mcp
        .http
        .post(&mcp.url)
        .header("Accept", ACCEPT_BOTH)
        .header("Content-Type", "application/json")
        .header("Mcp-Session-Id", sid)
        .timeout(LIMIT)
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .map_err(|e| failure("transport", false, e))?;
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        return Err(failure("status", false, format!("HTTP {status}: {text}")));
    }
    if !sse {
        let text = resp
            .text()
            .await
            .map_err(|e| failure("transport", false, e))?;
        let msg: Value = serde_json::from_str(&text)
            .map_err(|e| failure("error-answer", false, format!("{e}: {text:?}")))?;
        return judge(&msg, false);
    }
    let want = json!(id);
    let mut stream = SseStream::new(resp);
    let mut last_id: Option<String> = None;
    let mut resumed = false;
    for _ in 0..=3 {
        loop {
            let next = tokio::time::timeout(LIMIT, stream.next())
                .await
                .map_err(|_| failure("no-answer", resumed, "stream silent for 15 s"))?;
            let Some(ev) = next else { break };
            if ev.id.is_some() {
                last_id = ev.id.clone();
            }
            if let Some(msg) = ev.json() {
                if msg.get("id") == Some(&want) && msg.get("method").is_none() {
                    return judge(&msg, resumed);
                }
            }
        }
        // The stream ended without the answer: resume where it stopped.
        let Some(last) = last_id.as_deref() else {
            return Err(failure(
                "no-answer",
                resumed,
                "stream ended before any event",
            ));
        };
        resumed = true;
        let resp = mcp
            .http
            .get(&mcp.url)
            .header("Accept", "text/event-stream")
            .header("Mcp-Session-Id", sid)
            .header("Last-Event-ID", last)
            .timeout(LIMIT)
            .send()
            .await
            .map_err(|e| failure("transport", true, e))?;
        if resp.status() != 200 {
            let code = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            return Err(failure(
                "status",
                true,
                format!("resume: HTTP {code}: {text}"),
            ));
        }
        stream = SseStream::new(resp);
    }
    Err(failure("no-answer", true, "no answer after 3 resumptions"))
}

/// What one session's client saw.
#[derive(Default, Debug)]
pub struct SessionLog {
    pub acked: Vec<String>,
    /// Acknowledged calls that started after the fault.
    pub acked_after_fault: usize,
    /// Acknowledged through a resumed stream.
    pub resumed: usize,
    pub failed: Vec<Failure>,
}

impl SessionLog {
    pub fn record(&mut self, outcome: Result<Ack, Failure>, after_fault: bool) {
        match outcome {
            Ok(ack) => {
                self.resumed += usize::from(ack.resumed);
                self.acked_after_fault += usize::from(after_fault);
                self.acked.push(ack.calc_id);
            }
            Err(f) => self.failed.push(f),
        }
    }
}

/// `GET url`: status, body and how long the answer took. Never panics on a transport error
/// (reported as status 0).
pub async fn get(url: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    match http()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, text, start.elapsed())
        }
        Err(e) => (0, e.to_string(), start.elapsed()),
    }
}

/// Polls `url` until it answers 200, at most `limit`; returns how long that took.
pub async fn wait_ok(url: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if get(url).await.0 == 200 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// `calculator://stats` `totalCalculations` of a session (panics unless answered).
pub async fn total_calculations(mcp: &Mcp, sid: &str) -> u64 {
    let stats = mcp.read_json(sid, "calculator://stats").await;
    stats["totalCalculations"]
        .as_u64()
        .unwrap_or_else(|| panic!("totalCalculations: {stats}"))
}

/// Sessions that calculate continuously through one endpoint (a load balancer), each every
/// 100 ms, until `finish`.
pub struct Load {
    /// The session ids, in the order of the logs `finish` returns.
    pub sids: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<SessionLog>>,
}

impl Load {
    /// Initializes `sessions` sessions through `mcp` and starts their calculations, all on
    /// `mcp`'s HTTP client (its connection pool: a few connections carry every session).
    pub async fn start(mcp: &Mcp, sessions: usize) -> Load {
        Load::start_clients(mcp, sessions, false).await
    }

    /// Like [`Load::start`], but each session calculates through its own HTTP client, hence on
    /// its own kept-alive connection, as separate MCP client processes do.
    pub async fn start_separate_clients(mcp: &Mcp, sessions: usize) -> Load {
        Load::start_clients(mcp, sessions, true).await
    }

    async fn start_clients(mcp: &Mcp, sessions: usize, separate: bool) -> Load {
        let mut sids = Vec::new();
        for _ in 0..sessions {
            sids.push(mcp.initialize().await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let tasks = sids
            .iter()
            .enumerate()
            .map(|(s, sid)| {
                let mcp = if separate {
                    Mcp::new(&mcp.url)
                } else {
                    mcp.clone()
                };
                let sid = sid.clone();
                let (stop, acked) = (stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut log = SessionLog::default();
                    // Spread the sessions over the pause so the load is even.
                    tokio::time::sleep(Duration::from_millis(2 * s as u64)).await;
                    let mut i = 0i64;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let outcome = calculate(&mcp, &sid, i, i).await;
                        if outcome.is_ok() {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        log.record(outcome, false);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    log
                })
            })
            .collect();
        Load {
            sids,
            stop,
            acked,
            tasks,
        }
    }

    /// Calls acknowledged so far, over all sessions.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits (up to 20 s) until every session has had about two calls acknowledged.
    pub async fn wait_running(&self) {
        let want = 2 * self.sids.len() as u64;
        assert!(
            eventually(Duration::from_secs(20), || async { self.acked() >= want }).await,
            "the load did not start: {} of {want} calls acknowledged in 20 s",
            self.acked()
        );
    }

    /// Waits until `more` further calls are acknowledged (the load goes on after a fault),
    /// then finishes; returns the session ids with their logs.
    pub async fn finish_after(self, more: u64, limit: Duration) -> (Vec<String>, Vec<SessionLog>) {
        let from = self.acked();
        assert!(
            eventually(limit, || async { self.acked() >= from + more }).await,
            "the load stalled: fewer than {more} calls acknowledged in {limit:?}"
        );
        let sids = self.sids.clone();
        (sids, self.finish().await)
    }

    /// Stops the sessions after their call in flight and returns what each client saw.
    pub async fn finish(self) -> Vec<SessionLog> {
        self.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for t in self.tasks {
            logs.push(t.await.expect("load task"));
        }
        logs
    }
}

/// Asserts that no call failed and that every session answers, with `totalCalculations` equal
/// to what its client was acknowledged (nothing lost, nothing counted twice).
pub async fn assert_nothing_lost(mcp: &Mcp, sids: &[String], logs: &[SessionLog]) {
    let failures: Vec<&Failure> = logs.iter().flat_map(|l| &l.failed).collect();
    assert!(failures.is_empty(), "failed requests:{}", list(&failures));
    for (sid, log) in sids.iter().zip(logs) {
        assert!(!log.acked.is_empty(), "session {sid} never got an answer");
        assert_eq!(
            total_calculations(mcp, sid).await,
            log.acked.len() as u64,
            "session {sid}: totalCalculations vs acknowledged calls"
        );
    }
}

/// The calculation ids of history entries (one JSON entry per line, as `LRANGE` prints them).
pub fn history_entry_ids(lines: &str) -> Vec<String> {
    lines
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let entry: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("history entry is not JSON ({e}): {l:?}"));
            entry["id"].as_str().expect("entry id").to_owned()
        })
        .collect()
}

/// A 1 s `demo_progress` call on one node, started before the node is stopped: work in flight
/// that keeps its drain open.
pub struct HeldCall {
    sid: String,
    stream: SseStream,
    last_event: Option<String>,
}

/// What is left to check of a held call once its node has gone.
pub struct HeldResult {
    sid: String,
    last_event: String,
}

impl HeldCall {
    /// Starts the call and waits for its first progress notification.
    pub async fn start(node: &Mcp) -> HeldCall {
        let sid = node.initialize().await;
        let body = request(
            77,
            "tools/call",
            tool_params_with_progress("demo_progress", json!({ "steps": 5 }), json!("held")),
        );
        let stream = node.post_stream(Some(&sid), &[], &body).await;
        assert_eq!(stream.status, 200, "demo_progress");
        let mut held = HeldCall {
            sid,
            stream,
            last_event: None,
        };
        loop {
            let ev = held
                .stream
                .next_within(Duration::from_secs(5))
                .await
                .expect("demo_progress streams");
            held.last_event = ev.id.clone().or(held.last_event);
            if ev
                .json()
                .is_some_and(|m| m["method"] == "notifications/progress")
            {
                return held;
            }
        }
    }

    /// Reads what the stream still delivered before its node closed it.
    pub async fn finish(mut self) -> HeldResult {
        while let Some(ev) = self.stream.next_within(Duration::from_secs(5)).await {
            self.last_event = ev.id.clone().or(self.last_event);
        }
        HeldResult {
            sid: self.sid,
            last_event: self.last_event.expect("event ids"),
        }
    }
}

impl HeldResult {
    /// Resumes the stream through `lb` and finds the call's result at its end.
    pub async fn assert_finished(&self, lb: &Mcp) {
        let mut resumed = lb.get_stream(Some(&self.sid), Some(&self.last_event)).await;
        assert_eq!(resumed.status, 200, "resume {}", self.last_event);
        let rest = resumed.rest(Duration::from_secs(5)).await;
        let done = rest
            .iter()
            .filter_map(|e| e.json())
            .find(|m| m["id"] == 77)
            .unwrap_or_else(|| panic!("no result after {}: {rest:?}", self.last_event));
        assert!(done["result"].is_object(), "{done}");
    }
}
