//! A mock Kubernetes API server that speaks the real wire protocol for one namespaced
//! ConfigMap and for Events, so the real binary (kube's client and watcher inside) can be
//! driven over HTTP through an ordinary kubeconfig.
//!
//! What it serves, like kube-apiserver:
//! - bearer-token authentication (401 `Status` otherwise);
//! - RBAC of a Role with `resourceNames: [<name>]` on configmaps (get, list, watch) and
//!   create/patch on `events.k8s.io` events: a list or watch without the matching
//!   `metadata.name` field selector, another name or another namespace is 403 `Forbidden`;
//! - `GET …/configmaps/<name>`, lists (`ConfigMapList` with `metadata.resourceVersion`), and
//!   watches: chunked newline-delimited `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events replayed
//!   from the requested resourceVersion, then live; `410 Gone` for a compacted version, as an
//!   HTTP status or as an `ERROR` event; `timeoutSeconds` honoured;
//! - Events: `POST` creates, merge-`PATCH` updates (kube's `Recorder` patches a repeat).
//!
//! Tests change the object and disturb the watches through [`MockKube`]'s methods.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

/// How an expiry of the watch history shows up on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireMode {
    /// A watch from an old version is answered `410 Gone` (HTTP status).
    Status410,
    /// Open watches get an `ERROR` event with a 410 `Status` and end; watches from an old
    /// version get the same as the first line of a 200 answer.
    ErrorEvent,
}

/// One request the mock answered.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
}

enum WatchMsg {
    /// A change with its resourceVersion and the JSON line to send.
    Event(u64, String),
    /// A bookmark at this resourceVersion.
    Bookmark(u64),
    /// Send a 410 `ERROR` event and end.
    Expire,
    /// End cleanly, as when `timeoutSeconds` runs out.
    End,
    /// End every stream abruptly (no terminating chunk), like a crashed API server.
    Drop,
}

struct State {
    rv: u64,
    uid_seq: u64,
    object: Option<Value>,
    history: Vec<(u64, String)>,
    floor: u64,
    mode: ExpireMode,
    events: Vec<Value>,
    requests: Vec<RequestLog>,
    lists: usize,
    watches: usize,
    open_watches: usize,
}

struct Shared {
    namespace: String,
    name: String,
    token: String,
    state: Mutex<State>,
    feed: broadcast::Sender<Arc<WatchMsg>>,
}

/// The running mock; stopped (and every stream cut) on drop. It serves from a thread of its
/// own, so a test that blocks its runtime (starting a node) never stalls the API server.
pub struct MockKube {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockKube {
    /// Starts on an ephemeral loopback port.
    pub async fn start(namespace: &str, name: &str, token: &str) -> MockKube {
        Self::start_on(0, namespace, name, token).await
    }

    /// Starts on a chosen port (a node may already be pointed at it).
    pub async fn start_on(port: u16, namespace: &str, name: &str, token: &str) -> MockKube {
        let (feed, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            namespace: namespace.into(),
            name: name.into(),
            token: token.into(),
            state: Mutex::new(State {
                rv: 100,
                uid_seq: 0,
                object: None,
                history: Vec::new(),
                floor: 0,
                mode: ExpireMode::Status410,
                events: Vec::new(),
                requests: Vec::new(),
                lists: 0,
                watches: 0,
                open_watches: 0,
            }),
            feed,
        });
        let handler_shared = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = handler_shared.clone();
                async move { handle(shared, method, uri, headers, body).await }
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("mock API server runtime");
            rt.block_on(async move {
                let listener = bind(port).await;
                let _ = bound.send(listener.local_addr().unwrap().port());
                let serve = axum::serve(listener, app);
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("mock API server did not start");
        MockKube {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Writes a kubeconfig for this server and its token.
    pub fn write_kubeconfig(&self, path: &Path) {
        kubeconfig_for(self.port, &self.shared.namespace, &self.shared.token, path);
    }

    /// Creates the ConfigMap (ADDED) or changes one key of its data (MODIFIED).
    pub fn set_data(&self, key: &str, value: &str) {
        let mut st = self.shared.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let kind = if st.object.is_some() {
            "MODIFIED"
        } else {
            st.uid_seq += 1;
            let uid = format!("00000000-0000-4000-8000-{:012}", st.uid_seq);
            st.object = Some(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": self.shared.name,
                    "namespace": self.shared.namespace,
                    "uid": uid,
                    "creationTimestamp": "2026-12-05T00:00:00Z",
                },
                "data": {},
            }));
            "ADDED"
        };
        let obj = st.object.as_mut().unwrap();
        obj["data"][key] = Value::from(value);
        obj["metadata"]["resourceVersion"] = Value::from(rv.to_string());
        let line = event_line(kind, obj);
        self.publish(&mut st, rv, line);
    }

    /// Deletes the ConfigMap (DELETED).
    pub fn delete_configmap(&self) {
        let mut st = self.shared.state.lock().unwrap();
        let Some(mut obj) = st.object.take() else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = Value::from(rv.to_string());
        let line = event_line("DELETED", &obj);
        self.publish(&mut st, rv, line);
    }

    fn publish(&self, st: &mut State, rv: u64, line: String) {
        st.history.push((rv, line.clone()));
        let _ = self.shared.feed.send(Arc::new(WatchMsg::Event(rv, line)));
    }

    /// Compacts the history: every watch from a version before now gets 410 Gone, in `mode`.
    /// With [`ExpireMode::ErrorEvent`] the open watches get the ERROR event at once.
    pub fn expire_watches(&self, mode: ExpireMode) {
        let mut st = self.shared.state.lock().unwrap();
        st.floor = st.rv + 1;
        st.mode = mode;
        st.history.clear();
        // Open watches end: with an ERROR event, or cleanly so that the client's next watch
        // (from its old version) is answered 410.
        let msg = match mode {
            ExpireMode::ErrorEvent => WatchMsg::Expire,
            ExpireMode::Status410 => WatchMsg::End,
        };
        let _ = self.shared.feed.send(Arc::new(msg));
    }

    /// Cuts every open watch stream abruptly.
    pub fn drop_watches(&self) {
        let _ = self.shared.feed.send(Arc::new(WatchMsg::Drop));
    }

    /// Sends a BOOKMARK at the current version to the open watches that asked for bookmarks.
    pub fn bookmark(&self) {
        let rv = self.shared.state.lock().unwrap().rv;
        let _ = self.shared.feed.send(Arc::new(WatchMsg::Bookmark(rv)));
    }

    /// The ConfigMap's current resourceVersion.
    pub fn resource_version(&self) -> String {
        let st = self.shared.state.lock().unwrap();
        st.object
            .as_ref()
            .and_then(|o| o["metadata"]["resourceVersion"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// Events created (and patched), as stored.
    pub fn events(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().events.clone()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Lists answered with 200 so far.
    pub fn list_count(&self) -> usize {
        self.shared.state.lock().unwrap().lists
    }

    /// Watches opened so far.
    pub fn watch_count(&self) -> usize {
        self.shared.state.lock().unwrap().watches
    }

    /// Watches open now.
    pub fn open_watches(&self) -> usize {
        self.shared.state.lock().unwrap().open_watches
    }

    /// Waits until a watch is open (panics after `limit`).
    pub async fn wait_for_watch(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open_watches() == 0 {
            assert!(
                Instant::now() < deadline,
                "no watch opened within {limit:?}; requests: {:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for MockKube {
    fn drop(&mut self) {
        let _ = self.shared.feed.send(Arc::new(WatchMsg::Drop));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn bind(port: u16) -> tokio::net::TcpListener {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("mock API server cannot bind {addr}: {e}"),
        }
    }
}

/// Writes a kubeconfig naming `http://127.0.0.1:<port>` with a bearer token and a namespace.
pub fn kubeconfig_for(port: u16, namespace: &str, token: &str, path: &Path) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\n    namespace: {namespace}\ncurrent-context: mock\nusers:\n- name: mock\n  user:\n    token: {token}\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

fn event_line(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({ "type": kind, "object": object }))
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = route(&shared, &method, &uri, &headers, &body);
    shared.state.lock().unwrap().requests.push(RequestLog {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        status: resp.status().as_u16(),
    });
    resp
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.token.as_str()) {
        return json_response(401, status(401, "Unauthorized", "Unauthorized"));
    }
    let query: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let path: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.as_str(), path.as_slice()) {
        ("GET", ["version"]) => json_response(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        ),
        ("GET", ["api", "v1", "namespaces", ns, "configmaps"]) => {
            let verb = if is_true(query.get("watch")) {
                "watch"
            } else {
                "list"
            };
            let selector = query.get("fieldSelector").map(String::as_str);
            let wanted = format!("metadata.name={}", shared.name);
            if *ns != shared.namespace || selector != Some(wanted.as_str()) {
                return forbidden(shared, verb, "configmaps", "", ns);
            }
            if verb == "watch" {
                watch(shared, &query)
            } else {
                list(shared)
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "configmaps", name]) => {
            if *ns != shared.namespace || *name != shared.name {
                return forbidden(shared, "get", "configmaps", "", ns);
            }
            let st = shared.state.lock().unwrap();
            match &st.object {
                Some(o) => json_response(200, o.clone()),
                None => json_response(
                    404,
                    status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
                ),
            }
        }
        ("POST", ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"])
            if *ns == shared.namespace =>
        {
            create_event(shared, body)
        }
        ("PATCH", ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", name])
            if *ns == shared.namespace =>
        {
            patch_event(shared, name, body)
        }
        (m, ["apis", "events.k8s.io", "v1", "namespaces", ns, ..]) => {
            let verb = if m == "GET" { "list" } else { "delete" };
            forbidden(shared, verb, "events", "events.k8s.io", ns)
        }
        (_, ["api", "v1", "namespaces", ns, resource, ..]) => {
            forbidden(shared, "get", resource, "", ns)
        }
        _ => json_response(
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn forbidden(shared: &Shared, verb: &str, resource: &str, group: &str, ns: &str) -> Response {
    let message = format!(
        "{resource} is forbidden: User \"system:serviceaccount:{}:abacus\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{ns}\"",
        shared.namespace
    );
    json_response(403, status(403, "Forbidden", &message))
}

fn list(shared: &Shared) -> Response {
    let mut st = shared.state.lock().unwrap();
    st.lists += 1;
    let items: Vec<Value> = st.object.iter().cloned().collect();
    json_response(
        200,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMapList",
            "metadata": { "resourceVersion": st.rv.to_string() },
            "items": items,
        }),
    )
}

fn gone_line() -> String {
    format!(
        "{}\n",
        json!({ "type": "ERROR", "object": status(410, "Expired", "too old resource version") })
    )
}

fn watch(shared: &Arc<Shared>, query: &HashMap<String, String>) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut feed = shared.feed.subscribe();
    let (backlog, expired, mode) = {
        let mut st = shared.state.lock().unwrap();
        st.watches += 1;
        let expired = from != 0 && from < st.floor;
        let backlog: Vec<(u64, String)> = st
            .history
            .iter()
            .filter(|(rv, _)| *rv > from)
            .cloned()
            .collect();
        (backlog, expired, st.mode)
    };
    if expired && mode == ExpireMode::Status410 {
        return json_response(410, status(410, "Expired", "too old resource version"));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.state.lock().unwrap().open_watches += 1;
        let deadline = tokio::time::Instant::now() + timeout;
        let send = |line: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(line))).await.is_ok() }
        };
        let mut last = from;
        let mut alive = true;
        if expired {
            let _ = send(gone_line()).await;
            alive = false;
        }
        for (rv, line) in backlog {
            if !alive || !send(line).await {
                alive = false;
                break;
            }
            last = rv;
        }
        while alive {
            let msg = tokio::select! {
                m = feed.recv() => m,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            };
            match &*msg {
                WatchMsg::Event(rv, line) if *rv > last => {
                    last = *rv;
                    alive = send(line.clone()).await;
                }
                WatchMsg::Event(..) => {}
                WatchMsg::Bookmark(rv) if bookmarks => {
                    let line = format!(
                        "{}\n",
                        json!({"type": "BOOKMARK", "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}})
                    );
                    alive = send(line).await;
                }
                WatchMsg::Bookmark(_) => {}
                WatchMsg::Expire => {
                    let _ = send(gone_line()).await;
                    break;
                }
                WatchMsg::End => break,
                WatchMsg::Drop => {
                    let _ = tx
                        .send(Err(std::io::Error::other("API server went away")))
                        .await;
                    break;
                }
            }
        }
        shared.state.lock().unwrap().open_watches -= 1;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn create_event(shared: &Shared, body: &Bytes) -> Response {
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return json_response(400, status(400, "BadRequest", "invalid JSON"));
    };
    let mut st = shared.state.lock().unwrap();
    st.rv += 1;
    let rv = st.rv;
    event["metadata"]["resourceVersion"] = Value::from(rv.to_string());
    event["metadata"]["uid"] = Value::from(format!("event-{rv}"));
    st.events.push(event.clone());
    json_response(201, event)
}

fn patch_event(shared: &Shared, name: &str, body: &Bytes) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return json_response(400, status(400, "BadRequest", "invalid JSON"));
    };
    let mut st = shared.state.lock().unwrap();
    let Some(event) = st.events.iter_mut().find(|e| e["metadata"]["name"] == name) else {
        return json_response(
            404,
            status(404, "NotFound", &format!("events \"{name}\" not found")),
        );
    };
    merge(event, &patch);
    let updated = event.clone();
    json_response(200, updated)
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
