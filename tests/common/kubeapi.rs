//! A mock Kubernetes API server for black-box tests: it speaks the real wire protocol for one
//! ConfigMap and for the `events.k8s.io/v1` Events a controller records about it, so the real
//! `abacus` binary (or the real `kube` client) can be pointed at it with a kubeconfig.
//!
//! What it serves, on `http://127.0.0.1:PORT` (plain HTTP/1.1):
//!
//! - **Authentication**: every request must carry `Authorization: Bearer <token>`, else 401 with
//!   an `Unauthorized` `Status`.
//! - **Authorization**, as for the service account `system:serviceaccount:NS:abacus` bound to a
//!   namespaced Role: `get`/`list`/`watch` on `configmaps` with `resourceNames: [NAME]`, and
//!   `create`/`patch` on `events.k8s.io` `events`, in the namespace NS. Everything else that
//!   names a resource is 403 with Kubernetes' `Forbidden` `Status` and message. As in Kubernetes,
//!   a list or watch is authorized for NAME only when its `fieldSelector` requires
//!   `metadata.name=NAME`.
//! - **ConfigMap** NAME: GET (404 `NotFound` while it does not exist), list
//!   (`ConfigMapList`, items without `kind`/`apiVersion` as a real server sends them), and watch
//!   (`watch=true`/`watch=1`): a chunked `application/json` stream, one
//!   `{"type":..,"object":..}` per line. A watch from resourceVersion N first replays every
//!   recorded change newer than N, then streams live ones; without a resourceVersion (or with
//!   `0`) it starts with a synthetic `ADDED` for the current object. `timeoutSeconds` ends the
//!   stream cleanly. A resourceVersion older than the compaction floor is answered as the
//!   [`ExpireMode`] set by [`MockKube::expire_watches`] says.
//! - **Events** (`/apis/events.k8s.io/v1/namespaces/NS/events`): POST stores the object (201),
//!   PATCH with a merge patch updates a stored one (200, or 404).
//! - `/version`: a v1.33.0 version document. Anything else: 404 `NotFound` `Status`.
//!
//! resourceVersions are one global counter, as in etcd: ConfigMap changes, Events and
//! expiries all move it. The server runs on its own thread and Tokio runtime, so it keeps
//! answering while a test blocks its own thread (e.g. in `Server::start`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::IntoFuture;
use std::io;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

/// The service account every valid token authenticates as (`system:serviceaccount:NS:abacus`).
pub const SERVICE_ACCOUNT: &str = "abacus";
/// The `gitVersion` answered on `/version`.
pub const GIT_VERSION: &str = "v1.33.0";
/// The first resourceVersion the mock hands out (far from 0, which means "any" on the wire).
const FIRST_RESOURCE_VERSION: u64 = 1000;
/// The largest request body the mock reads.
const MAX_BODY: usize = 1 << 20;
/// How long a watch lasts when the request has no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long `start_on` keeps trying to bind a port that is still taken.
const BIND_PATIENCE: Duration = Duration::from_secs(5);

/// How the mock answers a watch that asks for a resourceVersion older than the compaction floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireMode {
    /// HTTP 410 with an `Expired` `Status` body.
    Status410,
    /// HTTP 200 whose only line is an `ERROR` event carrying an `Expired` 410 `Status` (what a
    /// real API server's watch cache sends).
    ErrorEvent,
}

/// One request the mock answered.
#[derive(Clone, Debug)]
pub struct RequestLog {
    /// `GET`, `POST`, `PATCH`, ...
    pub method: String,
    /// The path, e.g. `/api/v1/namespaces/ns/configmaps`.
    pub path: String,
    /// The raw (still percent-encoded) query string, empty if none.
    pub query: String,
    /// The HTTP status of the answer (200 for a watch stream, whatever it later carried).
    pub status: u16,
    params: Vec<(String, String)>,
}

impl RequestLog {
    /// The decoded value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for a watch request (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }
}

/// A running (or stopped) mock API server and its state: one ConfigMap, its change history,
/// open watches, recorded Events and the request log. Stopped on drop.
pub struct MockKube {
    port: u16,
    shared: Arc<Mutex<State>>,
    server: Option<ServerThread>,
}

impl MockKube {
    /// Starts a mock on an ephemeral loopback port, serving the ConfigMap `configmap` (which
    /// does not exist yet) in `namespace` to clients presenting `token`.
    pub async fn start(namespace: &str, configmap: &str, token: &str) -> MockKube {
        Self::start_on(0, namespace, configmap, token).await
    }

    /// Starts a mock on 127.0.0.1:`port` (0 for an ephemeral one), waiting up to 5 s for the
    /// port to become free (e.g. after a previous mock on it was stopped).
    pub async fn start_on(port: u16, namespace: &str, configmap: &str, token: &str) -> MockKube {
        let shared = Arc::new(Mutex::new(State::new(namespace, configmap, token)));
        let listener = bind(port).await;
        let port = listener.local_addr().expect("listener address").port();
        let server = Some(ServerThread::spawn(listener, shared.clone()));
        MockKube {
            port,
            shared,
            server,
        }
    }

    /// Stops the server: the listener closes (connections are refused) and every open
    /// connection, watch streams included, is cut. The state is kept. Idempotent.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        self.state().watches.clear();
    }

    /// Stops the server if it runs, then listens again on the same port with the same state,
    /// like an API server restart in front of the same etcd.
    pub async fn restart(&mut self) {
        self.stop();
        let listener = bind(self.port).await;
        self.server = Some(ServerThread::spawn(listener, self.shared.clone()));
    }

    /// True while the server listens.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// The port it listens (or listened) on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The namespace of the ConfigMap (and of the Role).
    pub fn namespace(&self) -> String {
        self.state().namespace.clone()
    }

    /// The name of the ConfigMap.
    pub fn configmap_name(&self) -> String {
        self.state().name.clone()
    }

    /// The token the mock accepts.
    pub fn token(&self) -> String {
        self.state().token.clone()
    }

    /// Writes a kubeconfig for this mock, its namespace and its token.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) {
        self.write_kubeconfig_with_token(&self.token(), path);
    }

    /// Writes a kubeconfig for this mock and its namespace with another (e.g. wrong) token.
    pub fn write_kubeconfig_with_token(&self, token: &str, path: impl AsRef<Path>) {
        kubeconfig_for(self.port, &self.namespace(), token, path);
    }

    /// Sets one key of the ConfigMap's `data`, creating the ConfigMap if needed.
    pub fn set_data(&self, key: &str, value: &str) {
        self.state().update_configmap(|data| {
            data.insert(key.to_owned(), value.to_owned());
        });
    }

    /// Replaces the ConfigMap's `data`, creating the ConfigMap (`ADDED`) or modifying it
    /// (`MODIFIED`); the resourceVersion moves and open watches are told.
    pub fn set_configmap(&self, data: BTreeMap<String, String>) {
        self.state().update_configmap(|current| *current = data);
    }

    /// Deletes the ConfigMap (a `DELETED` event); false if it did not exist.
    pub fn delete_configmap(&self) -> bool {
        self.state().delete_configmap()
    }

    /// The ConfigMap as a GET would return it, if it exists.
    pub fn configmap(&self) -> Option<Value> {
        self.state().configmap_object(true)
    }

    /// The ConfigMap's `metadata.resourceVersion`, or the global one while it does not exist.
    pub fn resource_version(&self) -> String {
        let state = self.state();
        let rv = state.configmap.as_ref().map_or(state.rv, |cm| cm.rv);
        rv.to_string()
    }

    /// The global resourceVersion (what a list answers in `metadata.resourceVersion`).
    pub fn global_resource_version(&self) -> String {
        self.state().rv.to_string()
    }

    /// Compacts the history: the resourceVersion moves and the floor rises to it, so every
    /// client must re-list. `mode` decides how an expired watch is answered from now on; the
    /// open watches get it too: with `ErrorEvent` each gets an `ERROR` 410 event and is closed,
    /// with `Status410` each is closed cleanly (as if its timeout elapsed), so that its
    /// reconnection asks for an expired version and gets HTTP 410.
    pub fn expire_watches(&self, mode: ExpireMode) {
        self.state().expire(mode);
    }

    /// Cuts every open watch stream abruptly (no final chunk), like an API server crash or a
    /// load balancer dropping connections. The history is kept, so clients can resume.
    pub fn drop_watches(&self) {
        self.state().end_watches(|_| vec![WatchMsg::Cut]);
    }

    /// Ends every open watch stream cleanly, as when `timeoutSeconds` elapses.
    pub fn close_watches(&self) {
        self.state().end_watches(|_| vec![WatchMsg::End]);
    }

    /// Sends a `BOOKMARK` at the global resourceVersion to every open watch that allowed
    /// bookmarks; returns how many got it.
    pub fn bookmark(&self) -> usize {
        self.state().bookmark()
    }

    /// The Events created (and patched) so far, in creation order.
    pub fn events(&self) -> Vec<Value> {
        self.state().events.clone()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.state().requests.clone()
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> usize {
        let mut state = self.state();
        state.watches.retain(|_, slot| !slot.tx.is_closed());
        state.watches.len()
    }

    /// Watch streams opened so far (HTTP 200 answers, including ones that only carried an
    /// expiry `ERROR`).
    pub fn watch_count(&self) -> usize {
        self.state().watch_count
    }

    /// Lists of the ConfigMap answered with 200 so far.
    pub fn list_count(&self) -> usize {
        self.state().list_count
    }

    /// Polls `check` every 10 ms until it holds or `limit` passes; returns the last verdict.
    pub async fn wait_until(
        &self,
        limit: Duration,
        mut check: impl FnMut(&MockKube) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if check(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least one watch is open; panics with the request log after `limit`.
    pub async fn wait_for_watch(&self, limit: Duration) {
        if !self.wait_until(limit, |m| m.open_watches() > 0).await {
            panic!(
                "no watch opened within {limit:?}; requests: {:#?}",
                self.requests()
            );
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }
}

impl Drop for MockKube {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kubeconfig (YAML) for a server on 127.0.0.1:`port`, with `namespace` as the context's
/// namespace and a static bearer `token`.
pub fn kubeconfig_yaml(port: u16, namespace: &str, token: &str) -> String {
    // JSON strings are valid YAML scalars, whatever they hold.
    let q = |s: &str| Value::from(s).to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {server}\n\
         users:\n- name: abacus\n  user:\n    token: {token}\n\
         contexts:\n- name: mock\n  context:\n    cluster: mock\n    user: abacus\n    namespace: {namespace}\n\
         current-context: mock\npreferences: {{}}\n",
        server = q(&format!("http://127.0.0.1:{port}")),
        token = q(token),
        namespace = q(namespace),
    )
}

/// Writes [`kubeconfig_yaml`] to `path` (for a mock that is not started yet, or another token).
pub fn kubeconfig_for(port: u16, namespace: &str, token: &str, path: impl AsRef<Path>) {
    let path = path.as_ref();
    std::fs::write(path, kubeconfig_yaml(port, namespace, token))
        .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
}

/// Binds 127.0.0.1:`port`, retrying for a while if a fixed port is still taken.
async fn bind(port: u16) -> StdListener {
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        match StdListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(_) if port != 0 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("mock API server cannot listen on 127.0.0.1:{port}: {e}"),
        }
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The server thread

/// The thread running the server on its own current-thread Tokio runtime.
struct ServerThread {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl ServerThread {
    fn spawn(listener: StdListener, shared: Arc<Mutex<State>>) -> ServerThread {
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("mock-kube-apiserver".into())
            .spawn(move || serve(listener, shared, stopped))
            .expect("spawn the mock API server thread");
        ServerThread { stop, thread }
    }

    /// Stops serving and waits for the thread: the listener and every connection are closed
    /// when it returns.
    fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Serves until `stopped` fires; dropping the runtime then drops every connection task.
fn serve(listener: StdListener, shared: Arc<Mutex<State>>, stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("mock API server runtime");
    runtime.block_on(async move {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .expect("mock API server listener");
        let app = Router::new().fallback(handle).with_state(shared);
        tokio::select! {
            _ = axum::serve(listener, app).into_future() => {}
            _ = stopped => {}
        }
    });
}

// ---------------------------------------------------------------------------------------------
// State

/// The ConfigMap as stored.
struct StoredConfigMap {
    uid: String,
    created: String,
    rv: u64,
    data: BTreeMap<String, String>,
}

/// One change of the ConfigMap, as the watch line that reports it.
struct Recorded {
    rv: u64,
    line: Bytes,
}

/// What the state tells one open watch stream.
#[derive(Clone)]
enum WatchMsg {
    /// One event line.
    Line(Bytes),
    /// End the stream cleanly.
    End,
    /// End the stream abruptly (the chunked body is never terminated).
    Cut,
}

/// An open watch stream, as the state sees it.
struct WatchSlot {
    tx: mpsc::UnboundedSender<WatchMsg>,
    /// The resourceVersion the watch started after.
    from: u64,
    bookmarks: bool,
}

struct State {
    namespace: String,
    name: String,
    token: String,
    /// The global resourceVersion: the last one handed out.
    rv: u64,
    /// The compaction floor: watches from an older resourceVersion are expired.
    floor: u64,
    expire_mode: ExpireMode,
    configmap: Option<StoredConfigMap>,
    history: Vec<Recorded>,
    watches: HashMap<u64, WatchSlot>,
    next_watch_id: u64,
    events: Vec<Value>,
    requests: Vec<RequestLog>,
    watch_count: usize,
    list_count: usize,
}

impl State {
    fn new(namespace: &str, name: &str, token: &str) -> State {
        State {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            token: token.to_owned(),
            rv: FIRST_RESOURCE_VERSION,
            floor: 0,
            expire_mode: ExpireMode::ErrorEvent,
            configmap: None,
            history: Vec::new(),
            watches: HashMap::new(),
            next_watch_id: 0,
            events: Vec::new(),
            requests: Vec::new(),
            watch_count: 0,
            list_count: 0,
        }
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The ConfigMap's JSON; list items are sent without `kind` and `apiVersion`.
    fn configmap_object(&self, with_type: bool) -> Option<Value> {
        let cm = self.configmap.as_ref()?;
        let mut object = json!({
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": cm.uid,
                "resourceVersion": cm.rv.to_string(),
                "creationTimestamp": cm.created,
            },
            "data": cm.data,
        });
        if with_type {
            object["kind"] = "ConfigMap".into();
            object["apiVersion"] = "v1".into();
        }
        Some(object)
    }

    /// Applies `change` to the data (of a new, empty ConfigMap if there is none) and records
    /// the `ADDED` or `MODIFIED` event.
    fn update_configmap(&mut self, change: impl FnOnce(&mut BTreeMap<String, String>)) {
        let rv = self.bump();
        let kind = match &mut self.configmap {
            Some(cm) => {
                change(&mut cm.data);
                cm.rv = rv;
                "MODIFIED"
            }
            None => {
                let mut data = BTreeMap::new();
                change(&mut data);
                self.configmap = Some(StoredConfigMap {
                    uid: new_uid(),
                    created: now_rfc3339(),
                    rv,
                    data,
                });
                "ADDED"
            }
        };
        if let Some(object) = self.configmap_object(true) {
            self.record(kind, &object);
        }
    }

    fn delete_configmap(&mut self) -> bool {
        if self.configmap.is_none() {
            return false;
        }
        let rv = self.bump();
        if let Some(cm) = self.configmap.as_mut() {
            cm.rv = rv;
        }
        if let Some(object) = self.configmap_object(true) {
            self.record("DELETED", &object);
        }
        self.configmap = None;
        true
    }

    /// Adds a change at the current resourceVersion to the history and tells the live watches.
    fn record(&mut self, kind: &str, object: &Value) {
        let line = event_line(kind, object);
        let rv = self.rv;
        self.history.push(Recorded {
            rv,
            line: line.clone(),
        });
        self.watches.retain(|_, slot| {
            rv <= slot.from || slot.tx.send(WatchMsg::Line(line.clone())).is_ok()
        });
    }

    fn bookmark(&mut self) -> usize {
        let line = event_line("BOOKMARK", &bookmark_object(self.rv, false));
        let mut reached = 0;
        self.watches.retain(|_, slot| {
            if !slot.bookmarks {
                return !slot.tx.is_closed();
            }
            let sent = slot.tx.send(WatchMsg::Line(line.clone())).is_ok();
            reached += usize::from(sent);
            sent
        });
        reached
    }

    /// Removes every open watch, sending each the messages `last` gives for it.
    fn end_watches(&mut self, last: impl Fn(&WatchSlot) -> Vec<WatchMsg>) {
        for slot in std::mem::take(&mut self.watches).into_values() {
            for msg in last(&slot) {
                let _ = slot.tx.send(msg);
            }
        }
    }

    fn expire(&mut self, mode: ExpireMode) {
        self.expire_mode = mode;
        self.floor = self.bump();
        self.history.clear();
        let floor = self.floor;
        self.end_watches(|slot| match mode {
            ExpireMode::Status410 => vec![WatchMsg::End],
            ExpireMode::ErrorEvent => vec![
                WatchMsg::Line(event_line("ERROR", &expired_status(slot.from, floor))),
                WatchMsg::End,
            ],
        });
    }

    /// Opens a watch as `request` asks, or answers that its resourceVersion expired.
    fn open_watch(&mut self, shared: &Arc<Mutex<State>>, request: &WatchRequest) -> WatchOpen {
        let mut backlog = VecDeque::new();
        let from = match request.start {
            Some(rv) if rv < self.floor => return self.expired_watch(rv, request),
            Some(rv) => {
                let newer = self.history.iter().filter(|r| r.rv > rv);
                backlog.extend(newer.map(|r| r.line.clone()));
                rv
            }
            None => {
                backlog.extend(self.configmap_object(true).map(|o| event_line("ADDED", &o)));
                if request.initial_events && request.bookmarks {
                    backlog.push_back(event_line("BOOKMARK", &bookmark_object(self.rv, true)));
                }
                self.rv
            }
        };
        self.watch_count += 1;
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let bookmarks = request.bookmarks;
        self.watches.insert(
            id,
            WatchSlot {
                tx,
                from,
                bookmarks,
            },
        );
        WatchOpen::Stream(WatchFeed {
            backlog,
            rx: Some(rx),
            deadline: tokio::time::Instant::now() + request.timeout,
            registration: Some(Registration {
                shared: shared.clone(),
                id,
            }),
        })
    }

    fn expired_watch(&mut self, rv: u64, request: &WatchRequest) -> WatchOpen {
        let status = expired_status(rv, self.floor);
        match self.expire_mode {
            ExpireMode::Status410 => WatchOpen::Gone(status),
            ExpireMode::ErrorEvent => {
                self.watch_count += 1;
                WatchOpen::Stream(WatchFeed {
                    backlog: VecDeque::from([event_line("ERROR", &status)]),
                    rx: None,
                    deadline: tokio::time::Instant::now() + request.timeout,
                    registration: None,
                })
            }
        }
    }

    /// True if the Role allows the request.
    fn allows(&self, info: &RequestInfo) -> bool {
        let in_namespace = info.namespace.as_deref() == Some(self.namespace.as_str());
        let configmap = info.group.is_empty()
            && info.resource == "configmaps"
            && matches!(info.verb, "get" | "list" | "watch")
            && info.name.as_deref() == Some(self.name.as_str());
        let events = info.group == "events.k8s.io"
            && info.resource == "events"
            && matches!(info.verb, "create" | "patch");
        in_namespace && info.subresource.is_none() && (configmap || events)
    }

    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{SERVICE_ACCOUNT}", self.namespace)
    }
}

/// Removes its watch from the state when the stream is dropped (client gone or stream over).
struct Registration {
    shared: Arc<Mutex<State>>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.shared).watches.remove(&self.id);
    }
}

enum WatchOpen {
    Stream(WatchFeed),
    Gone(Value),
}

/// The body of one watch response: the replayed lines, then what the state sends.
struct WatchFeed {
    backlog: VecDeque<Bytes>,
    rx: Option<mpsc::UnboundedReceiver<WatchMsg>>,
    deadline: tokio::time::Instant,
    registration: Option<Registration>,
}

impl WatchFeed {
    /// The next chunk; `None` ends the body cleanly, an error cuts the connection.
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if let Some(line) = self.backlog.pop_front() {
            return Some(Ok(line));
        }
        let rx = self.rx.as_mut()?;
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            () = tokio::time::sleep_until(self.deadline) => None,
        };
        match msg {
            Some(WatchMsg::Line(line)) => Some(Ok(line)),
            Some(WatchMsg::Cut) => {
                self.finish();
                Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "watch cut by the mock API server",
                )))
            }
            Some(WatchMsg::End) | None => {
                self.finish();
                None
            }
        }
    }

    fn finish(&mut self) {
        self.rx = None;
        self.registration = None;
    }

    fn respond(self) -> Response {
        let body = futures::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next_chunk().await?;
            Some((chunk, feed))
        });
        (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(body),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The query parameters, decoded.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(uri: &Uri) -> Option<Params> {
        Query::<Vec<(String, String)>>::try_from_uri(uri)
            .ok()
            .map(|Query(pairs)| Params(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter as Go's `strconv.ParseBool` reads it; absent is false.
    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(format!("invalid value for {key}: {other:?}")),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("invalid value for {key}: {v:?}"))
            })
            .transpose()
    }
}

/// What a request asks for, as Kubernetes' `RequestInfo` sees it.
struct RequestInfo {
    verb: &'static str,
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl RequestInfo {
    /// Parses a resource request; `None` for any other path.
    fn parse(
        method: &Method,
        path: &str,
        params: &Params,
    ) -> Option<Result<RequestInfo, Response>> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, resource, name, subresource) = match rest {
            ["namespaces"] => (None, "namespaces", None, None),
            ["namespaces", ns] => (None, "namespaces", Some(*ns), None),
            ["namespaces", ns, resource, more @ ..] => split_name(Some(*ns), resource, more)?,
            [resource, more @ ..] => split_name(None, resource, more)?,
            [] => return None,
        };
        let watch = match params.flag("watch") {
            Ok(watch) => watch,
            Err(message) => return Some(Err(bad_request(&message))),
        };
        let Some(verb) = verb(method, name.is_some(), watch) else {
            return Some(Err(status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!(
                    "the server does not allow this method on the requested resource: {method}"
                ),
                None,
            )));
        };
        // A list or watch names one object through its field selector.
        let name = name.or_else(|| {
            matches!(verb, "list" | "watch")
                .then(|| params.get("fieldSelector").and_then(selected_name))
                .flatten()
        });
        Some(Ok(RequestInfo {
            verb,
            group: group.to_owned(),
            version: version.to_owned(),
            namespace: namespace.map(str::to_owned),
            resource: resource.to_owned(),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        }))
    }

    /// `configmaps` or `events.events.k8s.io`, as Kubernetes names a resource in messages.
    fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

type ResourceParts<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>);

/// Splits `[name[, subresource]]` after a resource; `None` for longer paths.
fn split_name<'a>(
    ns: Option<&'a str>,
    resource: &'a str,
    more: &[&'a str],
) -> Option<ResourceParts<'a>> {
    match more {
        [] => Some((ns, resource, None, None)),
        [name] => Some((ns, resource, Some(*name), None)),
        [name, sub] => Some((ns, resource, Some(*name), Some(*sub))),
        _ => None,
    }
}

/// The Kubernetes verb of a request.
fn verb(method: &Method, named: bool, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), named, watch) {
        ("GET" | "HEAD", true, _) => "get",
        ("GET" | "HEAD", false, true) => "watch",
        ("GET" | "HEAD", false, false) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => return None,
    })
}

/// The name a field selector requires exactly (`metadata.name=NAME` or `==`), if any.
fn selected_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|requirement| {
        let (field, value) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))?;
        (field.trim() == "metadata.name").then(|| value.trim())
    })
}

/// The parameters of a watch request.
struct WatchRequest {
    /// Start after this resourceVersion; `None` (absent, empty or "0") starts with the
    /// current state.
    start: Option<u64>,
    timeout: Duration,
    bookmarks: bool,
    initial_events: bool,
}

impl WatchRequest {
    fn from_params(params: &Params) -> Result<WatchRequest, String> {
        let start = params.number("resourceVersion")?.filter(|rv| *rv != 0);
        let timeout = params
            .number("timeoutSeconds")?
            .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        Ok(WatchRequest {
            start,
            timeout,
            bookmarks: params.flag("allowWatchBookmarks")?,
            initial_events: params.flag("sendInitialEvents")?,
        })
    }
}

/// Every request: answered, then logged.
async fn handle(AxumState(shared): AxumState<Arc<Mutex<State>>>, request: Request) -> Response {
    let method = request.method().to_string();
    let uri = request.uri().clone();
    let params = Params::parse(&uri);
    let response = route(&shared, request, params.as_ref()).await;
    lock(&shared).requests.push(RequestLog {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        status: response.status().as_u16(),
        params: params.map(|p| p.0).unwrap_or_default(),
    });
    response
}

async fn route(shared: &Arc<Mutex<State>>, request: Request, params: Option<&Params>) -> Response {
    if !authenticated(request.headers(), &lock(shared).token) {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    let Some(params) = params else {
        return bad_request("invalid query string");
    };
    let path = request.uri().path().to_owned();
    if path == "/version" && request.method() == Method::GET {
        return version();
    }
    let info = match RequestInfo::parse(request.method(), &path, params) {
        None => return not_found_path(),
        Some(Err(response)) => return response,
        Some(Ok(info)) => info,
    };
    if !lock(shared).allows(&info) {
        return forbidden(&info, &lock(shared).user());
    }
    let target = (
        info.group.as_str(),
        info.version.as_str(),
        info.resource.as_str(),
    );
    match (target, info.verb) {
        (("", "v1", "configmaps"), "get") => get_configmap(shared),
        (("", "v1", "configmaps"), "list") => list_configmaps(shared, params),
        (("", "v1", "configmaps"), "watch") => watch_configmaps(shared, params),
        (("events.k8s.io", "v1", "events"), "create") => match read_json(request).await {
            Ok(body) => create_event(shared, body),
            Err(response) => response,
        },
        (("events.k8s.io", "v1", "events"), "patch") => {
            let name = info.name.unwrap_or_default();
            patch_event(shared, &name, request).await
        }
        _ => not_found_path(),
    }
}

/// True if the headers carry `Authorization: Bearer <token>` (scheme case-insensitive).
fn authenticated(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, presented)) => {
            scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && presented.trim() == token
        }
        None => false,
    }
}

fn version() -> Response {
    Json(json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
    .into_response()
}

fn get_configmap(shared: &Arc<Mutex<State>>) -> Response {
    let state = lock(shared);
    match state.configmap_object(true) {
        Some(object) => Json(object).into_response(),
        None => not_found("configmaps", "", &state.name),
    }
}

fn list_configmaps(shared: &Arc<Mutex<State>>, params: &Params) -> Response {
    if let Err(message) = params.number("limit") {
        return bad_request(&message);
    }
    if params.get("continue").is_some_and(|c| !c.is_empty()) {
        return bad_request("continue key is not valid: the mock never issues continue tokens");
    }
    let resource_version = match params.number("resourceVersion") {
        Ok(rv) => rv,
        Err(message) => return bad_request(&message),
    };
    let mut state = lock(shared);
    if params.get("resourceVersionMatch") == Some("Exact") {
        if let Some(rv) = resource_version.filter(|rv| *rv < state.floor) {
            return gone(expired_status(rv, state.floor));
        }
    }
    state.list_count += 1;
    let items: Vec<Value> = state.configmap_object(false).into_iter().collect();
    Json(json!({
        "kind": "ConfigMapList",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": state.rv.to_string() },
        "items": items,
    }))
    .into_response()
}

fn watch_configmaps(shared: &Arc<Mutex<State>>, params: &Params) -> Response {
    let request = match WatchRequest::from_params(params) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let opened = lock(shared).open_watch(shared, &request);
    match opened {
        WatchOpen::Stream(feed) => feed.respond(),
        WatchOpen::Gone(status) => gone(status),
    }
}

/// Reads a JSON object body (400 if it is not one, 413 if too large).
async fn read_json(request: Request) -> Result<Map<String, Value>, Response> {
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "request entity too large",
                None,
            )
        })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad_request("the body must be a JSON object")),
        Err(e) => Err(bad_request(&format!("invalid JSON body: {e}"))),
    }
}

fn create_event(shared: &Arc<Mutex<State>>, mut event: Map<String, Value>) -> Response {
    for (field, expected) in [("kind", "Event"), ("apiVersion", "events.k8s.io/v1")] {
        if event.get(field).is_some_and(|v| v != expected) {
            return bad_request(&format!("{field} must be {expected:?}"));
        }
    }
    let mut state = lock(shared);
    let namespace = state.namespace.clone();
    let Some(meta) = event
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return bad_request("metadata must be an object");
    };
    if meta
        .get("namespace")
        .is_some_and(|ns| ns != namespace.as_str())
    {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let name = match (meta.get("name"), meta.get("generateName")) {
        (Some(Value::String(name)), _) if !name.is_empty() => name.clone(),
        (_, Some(Value::String(prefix))) if !prefix.is_empty() => {
            format!("{prefix}{:05x}", rand::random::<u32>() & 0xf_ffff)
        }
        _ => {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "Event.events.k8s.io is invalid: metadata.name: Required value: name or generateName is required",
                None,
            )
        }
    };
    if state
        .events
        .iter()
        .any(|e| e["metadata"]["name"] == name.as_str())
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("events.events.k8s.io {name:?} already exists"),
            Some(details(&name, "events.k8s.io", "events")),
        );
    }
    let rv = state.bump();
    meta.insert("name".into(), name.into());
    meta.insert("namespace".into(), namespace.into());
    meta.insert("uid".into(), new_uid().into());
    meta.insert("resourceVersion".into(), rv.to_string().into());
    meta.insert("creationTimestamp".into(), now_rfc3339().into());
    event.insert("kind".into(), "Event".into());
    event.insert("apiVersion".into(), "events.k8s.io/v1".into());
    let event = Value::Object(event);
    state.events.push(event.clone());
    (StatusCode::CREATED, Json(event)).into_response()
}

async fn patch_event(shared: &Arc<Mutex<State>>, name: &str, request: Request) -> Response {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        content_type.as_str(),
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the mock API server applies merge patches only, not {content_type:?}"),
            None,
        );
    }
    let patch = match read_json(request).await {
        Ok(patch) => Value::Object(patch),
        Err(response) => return response,
    };
    let mut state = lock(shared);
    let Some(index) = state
        .events
        .iter()
        .position(|e| e["metadata"]["name"] == name)
    else {
        return not_found("events", "events.k8s.io", name);
    };
    let rv = state.bump();
    let event = &mut state.events[index];
    let identity = event["metadata"].clone();
    merge_patch(event, &patch);
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        event["metadata"][field] = identity[field].clone();
    }
    event["metadata"]["resourceVersion"] = rv.to_string().into();
    Json(event.clone()).into_response()
}

/// Applies an RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(fields) = target {
        for (key, value) in changes {
            if value.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers

/// One watch event line: `{"type":..,"object":..}\n`.
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A bookmark's object: only the type and the resourceVersion (plus the end-of-initial-events
/// annotation for a streaming list).
fn bookmark_object(rv: u64, initial_events_end: bool) -> Value {
    let mut object = json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": rv.to_string() },
    });
    if initial_events_end {
        object["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    object
}

/// A `Failure` `Status` object.
fn status_object(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut object = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(details) = details {
        object["details"] = details;
    }
    object
}

/// A `Failure` `Status` answer.
fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    (code, Json(status_object(code, reason, message, details))).into_response()
}

/// A `Status` `details` for one named object.
fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut details = json!({ "kind": kind });
    if !name.is_empty() {
        details["name"] = name.into();
    }
    if !group.is_empty() {
        details["group"] = group.into();
    }
    details
}

fn expired_status(requested: u64, floor: u64) -> Value {
    status_object(
        StatusCode::GONE,
        "Expired",
        &format!("too old resource version: {requested} ({floor})"),
        None,
    )
}

fn gone(status: Value) -> Response {
    (StatusCode::GONE, Json(status)).into_response()
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn not_found(resource: &str, group: &str, name: &str) -> Response {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{qualified} {name:?} not found"),
        Some(details(name, group, resource)),
    )
}

fn not_found_path() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// Kubernetes' Forbidden answer, message and details included.
fn forbidden(info: &RequestInfo, user: &str) -> Response {
    let resource = match &info.subresource {
        Some(sub) => format!("{}/{sub}", info.resource),
        None => info.resource.clone(),
    };
    let scope = match &info.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_owned(),
    };
    let subject = match &info.name {
        Some(name) => format!("{} {name:?}", info.qualified_resource()),
        None => info.qualified_resource(),
    };
    let message = format!(
        "{subject} is forbidden: User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        info.verb, info.group
    );
    let name = info.name.as_deref().unwrap_or_default();
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some(details(name, &info.group, &info.resource)),
    )
}

/// A random UUID-shaped uid.
fn new_uid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(format)
        .unwrap_or_default()
}
