//! Black-box harness for the integration tests: runs the real `abacus` binary on an ephemeral
//! port, talks to it over HTTP, and parses JSON and SSE answers.
//!
//! Every test starts its own server process (`Server::start`), so tests are parallel-safe. The
//! process is killed when the `Server` is dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

pub mod cluster;
pub mod helm;
pub mod kubeapi;
pub mod load;
pub mod podman;
/// The modern protocol version.
pub const MODERN: &str = "2026-07-28";
/// The newest legacy protocol version.
pub const LEGACY: &str = "2025-11-25";
/// `Accept` value that satisfies POST content negotiation.
pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_abacus")
}

/// A fresh file path under the cargo-provided temporary directory.
pub fn temp_path(name: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("abacus-{}-{n}-{name}", std::process::id()))
}

/// Builds the command with a clean environment: only the given variables, plus `HOST` and
/// `PORT` defaults unless the caller set them (an empty value counts as unset for Abacus).
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args).env_clear();
    let has = |k: &str| env.iter().any(|(name, _)| *name == k);
    if !has("HOST") {
        cmd.env("HOST", "127.0.0.1");
    }
    if !has("PORT") {
        cmd.env("PORT", "0");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Lines a child wrote to one of its pipes, collected by a reader thread.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(
    pipe: impl std::io::Read + Send + 'static,
    notify: Option<mpsc::Sender<String>>,
) -> Lines {
    let lines: Lines = Arc::default();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &notify {
                if let Some(addr) = line.strip_prefix("abacus listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
            out.lock().unwrap().push(line);
        }
    });
    lines
}

/// A running server process.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stdout: Lines,
    stderr: Lines,
}

impl Server {
    /// Starts the server with extra environment variables (`HOST=127.0.0.1`, `PORT=0` unless set).
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with_args(&[], env)
    }

    /// Starts the server with command-line arguments and environment variables.
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = command(args, env).spawn().expect("spawn abacus");
        let (tx, rx) = mpsc::channel();
        let stdout = collect(child.stdout.take().unwrap(), Some(tx));
        let stderr = collect(child.stderr.take().unwrap(), None);
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "abacus did not print its listening line\nstdout: {:?}\nstderr: {:?}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An MCP client for this server's `/mcp`.
    pub fn mcp(&self) -> Mcp {
        Mcp::new(&self.url("/mcp"))
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `INT`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (asynchronously) for the process to exit, at most `limit`.
    pub async fn wait_exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit (at most 20 s).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(Duration::from_secs(20))
            .await
            .expect("abacus did not exit within 20 s")
    }

    /// Everything written to stdout so far (logs go there).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> Value {
        let resp = http()
            .get(self.url("/health"))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(resp.status(), 200, "/health status");
        resp.json().await.expect("/health JSON")
    }

    /// The `sessions` field of `/health`.
    pub async fn session_count(&self) -> i64 {
        self.health().await["sessions"]
            .as_i64()
            .expect("/health sessions is an integer")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap()
    }

    /// Asserts the process is alive and `/health` answers 200.
    pub async fn assert_alive(&mut self) {
        assert!(self.is_running(), "abacus exited: {}", self.stderr());
        let h = self.health().await;
        assert!(h["status"] == "healthy" || h["status"] == "draining", "{h}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a process that is expected to exit on its own did.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs the binary expecting it to exit by itself within `limit` (it is killed otherwise and
/// the call panics).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Exited {
    let start = Instant::now();
    let mut child = command(args, env).spawn().expect("spawn abacus");
    let stdout = collect(child.stdout.take().unwrap(), None);
    let stderr = collect(child.stderr.take().unwrap(), None);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "abacus kept running for {limit:?}; stdout: {:?}",
                stdout.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // Let the reader threads drain the pipes.
    std::thread::sleep(Duration::from_millis(50));
    let stdout = stdout.lock().unwrap().join("\n");
    let stderr = stderr.lock().unwrap().join("\n");
    Exited {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

/// A reqwest client without proxies (the environment may set some).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A complete HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Resp {
            status,
            headers,
            text,
        }
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The media type of `Content-Type`, without parameters.
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// The JSON-RPC messages of the body, whether JSON (one message or an array) or SSE
    /// (one message per event with data).
    pub fn messages(&self) -> Vec<Value> {
        match self.content_type().as_str() {
            "application/json" => match self.json() {
                Value::Array(items) => items,
                v => vec![v],
            },
            "text/event-stream" => parse_sse(&self.text)
                .into_iter()
                .filter_map(|e| e.json())
                .collect(),
            "" if self.text.is_empty() => Vec::new(),
            other => panic!("unexpected content type {other:?}: {:?}", self.text),
        }
    }

    /// The SSE events of the body.
    pub fn events(&self) -> Vec<SseEvent> {
        parse_sse(&self.text)
    }

    /// The message answering request `id` (a result or an error).
    pub fn answer(&self, id: &Value) -> Value {
        self.messages()
            .into_iter()
            .find(|m| m.get("id") == Some(id) && m.get("method").is_none())
            .unwrap_or_else(|| panic!("no answer for id {id} in {:?}", self.text))
    }

    /// The only answer (message with an id and no method) in the body.
    pub fn single_answer(&self) -> Value {
        let answers: Vec<Value> = self
            .messages()
            .into_iter()
            .filter(|m| m.get("method").is_none())
            .collect();
        assert_eq!(answers.len(), 1, "expected one answer: {:?}", self.text);
        answers.into_iter().next().unwrap()
    }

    /// The JSON-RPC error code of a JSON error body.
    pub fn error_code(&self) -> i64 {
        self.json()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.text))
    }

    /// Asserts status, a JSON Content-Type and a JSON-RPC error body; returns the body.
    pub fn expect_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "status; body {:?}", self.text);
        assert_eq!(
            self.content_type(),
            "application/json",
            "{:?}",
            self.headers
        );
        let body = self.json();
        assert_eq!(body["jsonrpc"], "2.0", "{body}");
        assert!(body["error"]["code"].is_i64(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        body
    }
}

/// One SSE event (or a bare `retry:` frame).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: Option<String>,
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The data as JSON, if there is non-empty data.
    pub fn json(&self) -> Option<Value> {
        let d = self.data.as_deref()?;
        if d.trim().is_empty() {
            return None;
        }
        Some(serde_json::from_str(d).unwrap_or_else(|e| panic!("SSE data not JSON ({e}): {d:?}")))
    }

    /// True for the priming event: an id and empty data.
    pub fn is_priming(&self) -> bool {
        self.id.is_some() && self.data.as_deref().is_some_and(|d| d.is_empty())
    }
}

/// Parses one SSE frame; `None` for frames holding only comments.
fn parse_frame(frame: &str) -> Option<SseEvent> {
    let mut ev = SseEvent::default();
    let mut any = false;
    for line in frame.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        any = true;
        match field {
            "event" => ev.event = Some(value.to_owned()),
            "id" => ev.id = Some(value.to_owned()),
            "retry" => ev.retry = value.trim().parse().ok(),
            "data" => {
                ev.data = Some(match ev.data.take() {
                    Some(prev) => format!("{prev}\n{value}"),
                    None => value.to_owned(),
                })
            }
            _ => {}
        }
    }
    any.then_some(ev)
}

/// Parses a complete SSE body.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(parse_frame)
        .collect()
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An SSE response read incrementally.
pub struct SseStream {
    pub status: u16,
    pub headers: HeaderMap,
    inner: ByteStream,
    buf: String,
    ended: bool,
}

impl SseStream {
    /// Wraps a response (of any status; check `status` first).
    pub fn new(resp: reqwest::Response) -> SseStream {
        SseStream {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            inner: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            ended: false,
        }
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..pos + 2).collect();
                match parse_frame(&frame) {
                    Some(ev) => return Some(ev),
                    None => continue,
                }
            }
            if self.ended {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => {
                    self.buf
                        .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
                }
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The next event within `limit`; panics on timeout.
    pub async fn next_within(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.next())
            .await
            .expect("timed out waiting for an SSE event")
    }

    /// The next event carrying a JSON message within `limit` (skipping priming and `retry:`
    /// frames); `None` if the stream ends first.
    pub async fn next_message(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.next())
                .await
                .expect("timed out waiting for an SSE message")?;
            if let Some(v) = ev.json() {
                return Some(v);
            }
        }
    }

    /// The next JSON message that is a server→client request for `method` (others skipped).
    pub async fn request_for(&mut self, method: &str) -> Value {
        self.message_where(|m| m["method"] == method, method).await
    }

    /// The next JSON message that answers request `id` (others skipped).
    pub async fn answer_to(&mut self, id: impl Into<Value>) -> Value {
        let id = id.into();
        self.message_where(|m| m["id"] == id && m.get("method").is_none(), "the answer")
            .await
    }

    /// The next JSON message for which `wanted` holds, each within 5 s; panics naming `what`.
    async fn message_where(&mut self, wanted: impl Fn(&Value) -> bool, what: &str) -> Value {
        loop {
            let m = self
                .next_message(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("the stream ended before {what}"));
            if wanted(&m) {
                return m;
            }
        }
    }

    /// Every remaining event until the stream closes; panics if it stays open past `limit`.
    pub async fn rest(&mut self, limit: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(ev)) => out.push(ev),
                Ok(None) => return out,
                Err(_) => panic!("stream still open after {limit:?}; got {out:?}"),
            }
        }
    }
}

/// A JSON-RPC request.
pub fn request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// A JSON-RPC notification.
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// The `initialize` request for a protocol version.
pub fn initialize_request(version: &str) -> Value {
    request(
        0,
        "initialize",
        json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "abacus-tests", "version": "0.0.0"}
        }),
    )
}

/// `tools/call` params.
pub fn tool_params(name: &str, args: Value) -> Value {
    json!({"name": name, "arguments": args})
}

/// `tools/call` params with a progress token.
pub fn tool_params_with_progress(name: &str, args: Value, token: Value) -> Value {
    json!({"name": name, "arguments": args, "_meta": {"progressToken": token}})
}

/// Adds the modern `_meta` fields to `params` (kept if already present).
pub fn modern_params(params: Value) -> Value {
    let mut params = if params.is_null() { json!({}) } else { params };
    let meta = params
        .as_object_mut()
        .expect("params object")
        .entry("_meta")
        .or_insert_with(|| json!({}));
    let meta = meta.as_object_mut().expect("_meta object");
    meta.entry("io.modelcontextprotocol/protocolVersion")
        .or_insert(json!(MODERN));
    meta.entry("io.modelcontextprotocol/clientCapabilities")
        .or_insert(json!({}));
    meta.entry("io.modelcontextprotocol/clientInfo")
        .or_insert(json!({"name": "abacus-tests", "version": "0.0.0"}));
    params
}

/// A modern request body.
pub fn modern_request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    request(id, method, modern_params(params))
}

/// The SEP-2243 headers that mirror a modern request body.
pub fn modern_headers(body: &Value) -> Vec<(String, String)> {
    let method = body["method"].as_str().unwrap_or("").to_owned();
    let version = body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
        .as_str()
        .unwrap_or(MODERN)
        .to_owned();
    let mut h = vec![
        ("MCP-Protocol-Version".to_owned(), version),
        ("Mcp-Method".to_owned(), method.clone()),
    ];
    let key = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    if let Some(name) = key.and_then(|k| body["params"][k].as_str()) {
        h.push(("Mcp-Name".to_owned(), name.to_owned()));
    }
    h
}

/// A client of one server's `/mcp`.
#[derive(Clone)]
pub struct Mcp {
    pub url: String,
    pub http: reqwest::Client,
}

impl Mcp {
    pub fn new(url: &str) -> Mcp {
        Mcp {
            url: url.to_owned(),
            http: http(),
        }
    }

    /// POSTs `body` with the default headers (`Accept` both types, JSON `Content-Type`)
    /// overridden by `headers` (an empty value removes a default).
    pub async fn post_raw(&self, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Resp {
        let mut map: HashMap<String, (String, String)> = HashMap::new();
        map.insert("accept".into(), ("Accept".into(), ACCEPT_BOTH.into()));
        map.insert(
            "content-type".into(),
            ("Content-Type".into(), "application/json".into()),
        );
        for (k, v) in headers {
            map.insert(k.to_ascii_lowercase(), (k.to_string(), v.to_string()));
        }
        let mut req = self
            .http
            .post(&self.url)
            .timeout(Duration::from_secs(20))
            .body(body);
        for (name, value) in map.values() {
            if !value.is_empty() {
                req = req.header(name.as_str(), value.as_str());
            }
        }
        Resp::read(req.send().await.expect("POST /mcp")).await
    }

    /// POSTs a JSON body like [`Mcp::post`], but `None` instead of a panic when the transport
    /// fails: a server that refuses a large body closes the connection while it is sent.
    pub async fn try_post(&self, session: Option<&str>, body: &Value) -> Option<Resp> {
        let mut req = self
            .http
            .post(&self.url)
            .timeout(Duration::from_secs(20))
            .header("Accept", ACCEPT_BOTH)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(sid) = session {
            req = req.header("Mcp-Session-Id", sid);
        }
        Some(Resp::read(req.send().await.ok()?).await)
    }

    /// POSTs a JSON body, with the session header if given.
    pub async fn post(&self, session: Option<&str>, body: &Value) -> Resp {
        self.post_with(session, &[], body).await
    }

    /// POSTs a JSON body with the session header (if given) and extra headers.
    pub async fn post_with(
        &self,
        session: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Resp {
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if let Some(s) = session {
            h.push(("Mcp-Session-Id", s));
        }
        self.post_raw(&h, serde_json::to_vec(body).unwrap()).await
    }

    /// POSTs a JSON body and returns the response unread, for streaming.
    pub async fn post_stream(
        &self,
        session: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> SseStream {
        let mut req = self
            .http
            .post(&self.url)
            .header("Accept", ACCEPT_BOTH)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).unwrap());
        if let Some(s) = session {
            req = req.header("Mcp-Session-Id", s);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        SseStream::new(req.send().await.expect("POST /mcp"))
    }

    /// `initialize` at `version` only (no `notifications/initialized`); returns the session id.
    pub async fn initialize_only(&self, version: &str) -> String {
        let resp = self.post(None, &initialize_request(version)).await;
        assert_eq!(resp.status, 200, "initialize: {:?}", resp.text);
        let answer = resp.single_answer();
        assert_eq!(answer["result"]["protocolVersion"], version, "{answer}");
        resp.header("mcp-session-id")
            .expect("initialize answer carries Mcp-Session-Id")
    }

    /// The full legacy handshake at `version`; returns the session id.
    pub async fn initialize_version(&self, version: &str) -> String {
        let sid = self.initialize_only(version).await;
        let resp = self
            .post(
                Some(&sid),
                &notification("notifications/initialized", json!({})),
            )
            .await;
        assert_eq!(
            resp.status, 202,
            "notifications/initialized: {:?}",
            resp.text
        );
        sid
    }

    /// The full legacy handshake for a client that declares sampling (so that tools may send
    /// it server→client requests); returns the session id.
    pub async fn initialize_with_sampling(&self) -> String {
        let init = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": { "sampling": {} },
                "clientInfo": { "name": "t", "version": "1" }
            }
        });
        let sid = self
            .post(None, &init)
            .await
            .header("mcp-session-id")
            .expect("session");
        let ok = self
            .post(
                Some(&sid),
                &notification("notifications/initialized", json!({})),
            )
            .await;
        assert_eq!(ok.status, 202);
        sid
    }

    /// The full legacy handshake at 2025-11-25; returns the session id.
    pub async fn initialize(&self) -> String {
        self.initialize_version(LEGACY).await
    }

    /// Sends a request on a session and returns its answer message.
    pub async fn rpc(&self, session: &str, id: i64, method: &str, params: Value) -> Value {
        let resp = self.post(Some(session), &request(id, method, params)).await;
        assert_eq!(resp.status, 200, "{method}: {:?}", resp.text);
        resp.answer(&json!(id))
    }

    /// Calls a tool on a session; returns the answer message.
    pub async fn call_tool(&self, session: &str, name: &str, args: Value) -> Value {
        static ID: AtomicU64 = AtomicU64::new(1000);
        let id = ID.fetch_add(1, Ordering::Relaxed) as i64;
        self.rpc(session, id, "tools/call", tool_params(name, args))
            .await
    }

    /// Reads a resource on a session and parses its first content's text as JSON.
    pub async fn read_json(&self, session: &str, uri: &str) -> Value {
        let answer = self
            .rpc(session, 900, "resources/read", json!({ "uri": uri }))
            .await;
        let text = answer["result"]["contents"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text content for {uri}: {answer}"));
        serde_json::from_str(text).unwrap()
    }

    /// Opens a GET stream (optionally resuming after `last_event_id`).
    pub async fn get_stream(
        &self,
        session: Option<&str>,
        last_event_id: Option<&str>,
    ) -> SseStream {
        self.get_with(session, last_event_id, "text/event-stream")
            .await
    }

    /// A GET with a chosen `Accept`.
    pub async fn get_with(
        &self,
        session: Option<&str>,
        last_event_id: Option<&str>,
        accept: &str,
    ) -> SseStream {
        let mut req = self.http.get(&self.url).header("Accept", accept);
        if let Some(s) = session {
            req = req.header("Mcp-Session-Id", s);
        }
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l);
        }
        SseStream::new(req.send().await.expect("GET /mcp"))
    }

    /// The names in a session's `tools/list`, in order.
    pub async fn tool_names(&self, sid: &str) -> Vec<String> {
        let list = self.rpc(sid, 77, "tools/list", json!({})).await;
        list["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{list}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A GET read to the end (for error answers).
    pub async fn get(&self, session: Option<&str>, last_event_id: Option<&str>) -> Resp {
        let mut req = self
            .http
            .get(&self.url)
            .header("Accept", "text/event-stream")
            .timeout(Duration::from_secs(10));
        if let Some(s) = session {
            req = req.header("Mcp-Session-Id", s);
        }
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l);
        }
        Resp::read(req.send().await.expect("GET /mcp")).await
    }

    /// DELETE, with the session header if given.
    pub async fn delete(&self, session: Option<&str>) -> Resp {
        let mut req = self.http.delete(&self.url).timeout(Duration::from_secs(10));
        if let Some(s) = session {
            req = req.header("Mcp-Session-Id", s);
        }
        Resp::read(req.send().await.expect("DELETE /mcp")).await
    }

    /// POSTs a modern body with its mirrored headers, then `extra` headers (which override;
    /// an empty value removes one).
    pub async fn modern_raw(&self, body: &Value, extra: &[(&str, &str)]) -> Resp {
        let mirrored = modern_headers(body);
        let mut h: Vec<(&str, &str)> = mirrored
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        h.extend_from_slice(extra);
        self.post_raw(&h, serde_json::to_vec(body).unwrap()).await
    }

    /// A well-formed modern request; returns the whole response.
    pub async fn modern(&self, id: impl Into<Value>, method: &str, params: Value) -> Resp {
        self.modern_raw(&modern_request(id, method, params), &[])
            .await
    }

    /// A modern request returned unread, for streaming.
    pub async fn modern_stream(&self, body: &Value) -> SseStream {
        let mirrored = modern_headers(body);
        let h: Vec<(&str, &str)> = mirrored
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.post_stream(None, &h, body).await
    }

    /// Opens a `subscriptions/listen` stream (`body`) and reads its acknowledgement, which it
    /// returns after checking that it is one.
    pub async fn listen(&self, body: &Value) -> (SseStream, Value) {
        let mut stream = self.modern_stream(body).await;
        let ack = stream
            .next_message(Duration::from_secs(5))
            .await
            .expect("listen acknowledgement");
        assert_eq!(
            ack["method"], "notifications/subscriptions/acknowledged",
            "{ack}"
        );
        (stream, ack)
    }
}

/// Asserts that `answer` is a JSON-RPC error with `code` whose message says `says`.
pub fn assert_rpc_error(answer: &Value, code: i64, says: &str) {
    assert_eq!(answer["error"]["code"], code, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {answer}");
}

/// Polls `check` every 25 ms until it returns true or `limit` passes; returns the last verdict.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of one Prometheus/OpenMetrics sample whose name matches and whose labels
/// include every `labels` pair; summed over all matching series.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// True if the text has a sample line of metric `name` (any labels).
pub fn has_metric(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        !l.starts_with('#')
            && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
    })
}

/// Sends raw bytes on a fresh TCP connection and returns what comes back within 3 s (possibly
/// nothing, if the server closes the connection).
pub async fn raw_http(addr: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        panic!("cannot connect to {addr}");
    };
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `/metrics` shows exactly one cancelled call of `tool`; returns whether it did.
pub async fn cancelled_call_recorded(server: &Server, tool: &str, limit: Duration) -> bool {
    eventually(limit, || async {
        let m = server.metrics().await;
        metric(
            &m,
            "mcp_server_operation_duration_seconds_count",
            &[("gen_ai_tool_name", tool), ("error_type", "cancelled")],
        ) == 1.0
    })
    .await
}

/// One HTTP/1.1 connection kept alive across requests, for tests that must know which
/// connection a request travels on (a drain answers held connections, refuses new ones).
pub struct KeepAlive {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

/// One answer read off a [`KeepAlive`] connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

impl KeepAlive {
    /// Opens a connection to `addr` (`127.0.0.1:PORT`).
    pub async fn connect(addr: &str) -> std::io::Result<KeepAlive> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        Ok(KeepAlive {
            stream,
            host: addr.to_owned(),
            buf: Vec::new(),
        })
    }

    /// Sends one request (a JSON body when `body` is given) and reads its answer, which must
    /// have a `Content-Length` (JSON answers do).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> std::io::Result<RawAnswer> {
        use tokio::io::AsyncWriteExt;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(&body);
        self.stream.write_all(head.as_bytes()).await?;
        tokio::time::timeout(Duration::from_secs(10), self.read_answer())
            .await
            .map_err(|_| std::io::Error::other("no answer within 10 s"))?
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_answer(&mut self) -> std::io::Result<RawAnswer> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no Content-Length in {head:?}")))?;
        while self.buf.len() < len {
            self.fill().await?;
        }
        let body = String::from_utf8_lossy(&self.buf[..len]).into_owned();
        self.buf.drain(..len);
        Ok(RawAnswer {
            status,
            headers,
            body,
        })
    }

    /// True if the server closes the connection (EOF or reset) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(limit, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One line of `/proc/PID/status`, e.g. `Uid:` → `65532 65532 65532 65532`.
pub fn proc_status(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
